//! `serve --threads N` (issue 17, goal 2): N executor threads share the listener and
//! the state, and what must be exact stays exact across them: `--max-connections`
//! under a burst of parallel connects, a ticket's single use under parallel
//! redemptions, the metrics' counts, and the shutdown (1001 to all, exit 0 within
//! 10 s). Clients are OS threads, so requests really arrive together.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;

fn serve(k: &LocalKey, extra: &[&str]) -> Server {
    let base = ["--threads", "2", "--admin-listen", "127.0.0.1:0"];
    Server::start(&[&k.arg()[..], &base, extra].concat())
}

/// The executor threads the server runs besides its main one (`wsgate-worker`).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim_end() == "wsgate-worker")
        })
        .count()
}

/// `n` client threads; each connects, waits for all the others, sends `request(i)`
/// and reads the answer's head. Returns the answers with their still open sockets.
fn burst(s: &Server, n: usize, request: impl Fn(usize) -> Vec<u8>) -> Vec<(Response, TcpStream)> {
    let go = Arc::new(Barrier::new(n));
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let (go, addr, req) = (go.clone(), s.addr, request(i));
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                go.wait();
                c.write_all(&req).unwrap();
                (read_response(&mut c), c)
            })
        })
        .collect();
    clients.into_iter().map(|c| c.join().unwrap()).collect()
}

fn statuses(answers: &[(Response, TcpStream)], status: u16) -> usize {
    answers.iter().filter(|(r, _)| r.status == status).count()
}

/// The value of one sample of `/metrics` (`name{labels}` as printed), read on the
/// operators' listener, whose connections the gauges do not count.
fn metric(s: &Server, sample: &str) -> u64 {
    let admin = admin_addr(s);
    let r = http_raw(
        admin,
        &request_bytes(&admin.to_string(), "GET", "/metrics", &[]),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let text = String::from_utf8(r.body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
}

#[test]
fn threads_option_and_variable_start_that_many_executor_threads() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    assert_eq!(worker_threads(s.pid()), 0, "default: the main thread only");
    // A thread names itself once it runs: wait for the names.
    let workers = |s: &Server, n: usize| {
        eventually(&format!("{n} workers"), IO_TIMEOUT, || {
            worker_threads(s.pid()) == n
        })
    };
    let s = serve(&k, &[]);
    workers(&s, 1);
    let s = Server::start_env(&k.arg(), &[("WSGATE_THREADS", "3")]);
    workers(&s, 2);
    // The cores this process may run on, as the server counts them (its affinity
    // mask; std's available_parallelism also applies cgroup quotas).
    let cores = {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes
        // at most its size.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
        unsafe { libc::CPU_COUNT(&set) as usize }
    };
    let s = Server::start(&[&k.arg()[..], &["--threads", "0"]].concat());
    workers(&s, cores - 1);
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

#[test]
fn max_connections_is_exact_under_a_parallel_burst() {
    let k = LocalKey::generate();
    // Sessions waiting for their first message hold their slot.
    let s = serve(&k, &["--max-connections", "20", "--auth-timeout", "30"]);
    let answers = burst(&s, 60, |_| upgrade_bytes(&s.host(), "/", &[]));
    assert_eq!(statuses(&answers, 101), 20);
    assert_eq!(statuses(&answers, 503), 40);
    drop(answers);
    // Every slot comes back: the count is exact after the burst too.
    eventually("connections back to 0", IO_TIMEOUT, || {
        metric(&s, "wsgate_connections_active") == 0
    });
    let answers = burst(&s, 30, |_| upgrade_bytes(&s.host(), "/", &[]));
    assert_eq!(statuses(&answers, 101), 20);
    assert_eq!(statuses(&answers, 503), 10);
}

#[test]
fn a_ticket_opens_one_session_under_fifty_parallel_redemptions() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    let t = k.token(&Claims::new("alice"));
    const ROUNDS: usize = 5;
    const CLIENTS: usize = 50;
    for round in 0..ROUNDS {
        let r = http(
            &s,
            "POST",
            "/ticket",
            &[("Authorization", &bearer(&t)), ("Content-Length", "0")],
        );
        assert_eq!(r.status, 200, "{}", r.head);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let ticket = v["ticket"].as_str().unwrap().to_owned();
        let answers = burst(&s, CLIENTS, |_| {
            upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&ticket))])
        });
        assert_eq!(statuses(&answers, 101), 1, "round {round}");
        for (r, _) in answers.iter().filter(|(r, _)| r.status != 101) {
            assert_401(r);
        }
    }
    let n = ROUNDS as u64;
    assert_eq!(metric(&s, "wsgate_tickets_total{event=\"issued\"}"), n);
    assert_eq!(metric(&s, "wsgate_tickets_total{event=\"used\"}"), n);
    assert_eq!(
        metric(&s, "wsgate_tickets_total{event=\"replayed\"}"),
        n * (CLIENTS as u64 - 1)
    );
}

#[test]
fn metrics_count_every_handshake_across_threads() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    let good = k.token(&Claims::new("alice"));
    let bad = tamper(&good);
    const CLIENTS: usize = 8;
    const EACH: usize = 40;
    let go = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (go, addr, host) = (go.clone(), s.addr, s.host());
            let (good, bad) = (good.clone(), bad.clone());
            std::thread::spawn(move || {
                go.wait();
                for j in 0..EACH {
                    // One in four is refused.
                    let t = if (i + j) % 4 == 0 { &bad } else { &good };
                    let req = upgrade_bytes(&host, "/", &[("Authorization", &bearer(t))]);
                    let r = http_raw(addr, &req);
                    assert_eq!(r.status, if t == &bad { 401 } else { 101 }, "{}", r.head);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let total = (CLIENTS * EACH) as u64;
    let refused = total / 4;
    eventually("every session ended", IO_TIMEOUT, || {
        metric(&s, "wsgate_sessions_active") == 0 && metric(&s, "wsgate_connections_active") == 0
    });
    assert_eq!(
        metric(&s, "wsgate_handshakes_total{method=\"header\"}"),
        total - refused
    );
    assert_eq!(
        metric(&s, "wsgate_handshake_duration_seconds_count"),
        total - refused
    );
    assert_eq!(
        metric(&s, "wsgate_auth_failures_total{reason=\"invalid_token\"}"),
        refused
    );
}

#[test]
fn shutdown_closes_every_session_with_1001_and_exits_0_within_10_s() {
    let k = LocalKey::generate();
    let mut s = serve(&k, &["--auth-timeout", "30"]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut sessions = Vec::new();
        for _ in 0..20 {
            sessions.push(ws_bearer(&s, &t).await);
        }
        // And some still waiting for their first message.
        for _ in 0..5 {
            sessions.push(ws_ok(&s, &[]).await);
        }
        for ws in &mut sessions[..20] {
            assert_echo(ws).await;
        }
        s.signal("TERM");
        for ws in &mut sessions {
            let (code, _) = expect_close(ws).await;
            assert_eq!(code, 1001);
        }
    });
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("wsgate exits within 10 s");
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
}

/// The accept loops of all threads wait on the one listener together; waiting must
/// not make them wake each other. An idle server that has served 20 connections and
/// holds one session burns (next to) no CPU: a wake-up loop between the threads
/// would spend both cores, up to 200 ticks in this second (90 measured when there
/// was one).
#[test]
fn an_idle_server_with_two_threads_spends_no_cpu() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        for _ in 0..20 {
            assert_echo(&mut ws_bearer(&s, &t).await).await;
        }
        let mut held = ws_bearer(&s, &t).await;
        let before = cpu_ticks(s.pid());
        // The interval measured, not a wait for an event.
        smol::Timer::after(Duration::from_secs(1)).await;
        let spent = cpu_ticks(s.pid()) - before;
        assert!(spent <= 20, "{spent} ticks of CPU in one idle second");
        assert_echo(&mut held).await;
    });
}
