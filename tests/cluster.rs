//! Several nodes as one (`docs/operations.md#several-nodes-redis`), against a real
//! `redis-server` started by each test on a free loopback port and two or three real
//! `wsgate serve` processes sharing one `k4.local` key: tickets single-use across
//! nodes, revocations reaching every node, readiness, Redis killed, restarted and
//! hung, prefixes that isolate deployments, and no Redis round trip for tokens.
//!
//! Needs the `redis` feature (the default build) and Debian's `redis-server`
//! (scripts/test-deps.sh); skipped without them, except under CI=true.

mod common;
use common::*;

use std::time::{Duration, Instant};

fn supported() -> bool {
    let out = wsgate(&["serve", "--help"]);
    if !stdout_of(&out).contains("--redis") {
        eprintln!("skipped: this wsgate has no `redis` feature");
        return false;
    }
    Redis::available()
}

/// A node on `redis`, with an admin listener; waits until it has loaded the shared
/// state when `ready`.
fn node(k: &LocalKey, url: &str, extra: &[&str], ready: bool) -> Server {
    let s = Server::start(
        &[
            &k.arg()[..],
            &["--redis", url, "--admin-listen", "127.0.0.1:0"],
            extra,
        ]
        .concat(),
    );
    if ready {
        s.wait_log_line(|l| l.contains("event=redis_up"));
    }
    s
}

/// A Redis and two ready nodes sharing a key.
fn two_nodes() -> (Redis, LocalKey, Server, Server) {
    let redis = Redis::start();
    let k = LocalKey::generate();
    let a = node(&k, &redis.url(), &[], true);
    let b = node(&k, &redis.url(), &[], true);
    (redis, k, a, b)
}

fn token(k: &LocalKey, sub: &str) -> String {
    k.token(&Claims::new(sub).exp_in(600))
}

fn post_ticket(s: &Server, token: &str) -> Response {
    http(
        s,
        "POST",
        "/ticket",
        &[("Content-Length", "0"), ("Authorization", &bearer(token))],
    )
}

fn ticket(s: &Server, token: &str) -> String {
    let r = post_ticket(s, token);
    assert_eq!(r.status, 200, "POST /ticket:\n{}", r.head);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["ticket"].as_str().unwrap().to_owned()
}

fn present(s: &Server, t: &str) -> Response {
    upgrade_status(s, "/", &[("Authorization", &bearer(t))])
}

fn healthz(s: &Server) -> Response {
    http(s, "GET", "/healthz", &[])
}

fn metric(s: &Server, name: &str) -> Option<String> {
    let r = http(s, "GET", "/metrics", &[]);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

#[test]
fn a_ticket_minted_on_one_node_is_used_once_on_any() {
    if !supported() {
        return;
    }
    let (_redis, k, a, b) = two_nodes();
    let t = token(&k, "alice");
    let tk = ticket(&a, &t);
    assert_eq!(present(&b, &tk).status, 101);
    for n in [&a, &b] {
        let r = present(n, &tk);
        assert_eq!(r.status, 401, "{}", r.head);
        assert!(String::from_utf8_lossy(&r.body).contains("ticket already used"));
    }
    let line = a.wait_log_line(|l| l.contains("event=auth_fail"));
    assert!(line.contains("detail=ticket_reused"), "{line}");
    // As a first message, on the other node: also spent.
    let tk = ticket(&b, &t);
    run(async {
        let (mut ws, _) = ws_raw(a.addr, &upgrade_bytes(&a.host(), "/", &[]))
            .await
            .expect("101");
        first_message_ok(&mut ws, &tk).await;
        let (mut ws, _) = ws_raw(b.addr, &upgrade_bytes(&b.host(), "/", &[]))
            .await
            .expect("101");
        send_text(&mut ws, &tk).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (4401, "ticket already used".into())
        );
    });
    assert_eq!(metric(&a, "wsgate_redis_up").as_deref(), Some("1"));
}

#[test]
fn fifty_parallel_redemptions_across_two_nodes_open_exactly_one_session() {
    if !supported() {
        return;
    }
    let (_redis, k, a, b) = two_nodes();
    let tk = ticket(&a, &token(&k, "alice"));
    let nodes = [a.addr, b.addr];
    let hosts = [a.host(), b.host()];
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let (addr, host, tk) = (nodes[i % 2], &hosts[i % 2], &tk);
                scope.spawn(move || {
                    let req = upgrade_bytes(host, "/", &[("Authorization", &bearer(tk))]);
                    http_raw(addr, &req).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 101).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 401).count(),
        49,
        "{statuses:?}"
    );
}

#[test]
fn a_revocation_on_one_node_closes_sessions_on_the_others_and_refuses_everywhere() {
    if !supported() {
        return;
    }
    let (redis, k, a, b) = two_nodes();
    let t = k.token(&Claims::new("alice").exp_in(600).set("jti", "j-1"));
    let bob = token(&k, "bob");
    run(async {
        let mut on_b = ws_bearer(&b, &t).await;
        let mut untouched = ws_bearer(&b, &bob).await;
        assert_echo(&mut on_b).await;
        let started = Instant::now();
        let r = post_revoke(admin_addr(&a), r#"{"jti":"j-1"}"#);
        assert_eq!(r.status, 200, "{}", r.head);
        // `closed` counts this node's sessions: none on A.
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, serde_json::json!({"revoked": "jti", "closed": 0}));
        assert_eq!(
            expect_close_within(&mut on_b, Duration::from_millis(1500)).await,
            (4401, "token revoked".to_owned())
        );
        eprintln!(
            "closed on B {:?} after the revocation on A",
            started.elapsed()
        );
        assert_echo(&mut untouched).await;
    });
    for n in [&a, &b] {
        assert_eq!(present(n, &t).status, 401);
    }
    // A node started later loads the entry before it lets anyone in.
    let c = node(&k, &redis.url(), &[], true);
    assert_eq!(present(&c, &t).status, 401);
    assert_eq!(present(&c, &bob).status, 101);
    // A `sub` revocation: tokens issued up to then, on every node.
    let r = post_revoke(admin_addr(&c), r#"{"sub":"bob"}"#);
    assert_eq!(r.status, 200, "{}", r.head);
    eventually("bob refused on A", IO_TIMEOUT, || {
        present(&a, &bob).status == 401
    });
    let later = k.token(&Claims::new("bob").exp_in(600).iat_in(2));
    std::thread::sleep(Duration::from_millis(2100)); // `iat` is in whole seconds
    assert_eq!(present(&b, &later).status, 101);
}

/// The node that answers `POST /revoke` hears its own publication too, often before
/// the reply to its command: whichever closes the sessions, `closed` counts them all
/// (and no line says another node's entry closed them).
#[test]
fn closed_counts_every_session_the_answering_node_closed_whichever_path_did() {
    if !supported() {
        return;
    }
    let redis = Redis::start();
    let k = LocalKey::generate();
    let a = node(&k, &redis.url(), &[], true);
    let admin = admin_addr(&a);
    run(async {
        for round in 0..20 {
            let (claims, body, kind) = if round % 2 == 0 {
                let jti = format!("j-{round}");
                let body = format!(r#"{{"jti":"{jti}"}}"#);
                (Claims::new("alice").set("jti", jti), body, "jti")
            } else {
                let sub = format!("user-{round}");
                let body = format!(r#"{{"sub":"{sub}"}}"#);
                (Claims::new(&sub), body, "sub")
            };
            let t = k.token(&claims.exp_in(600));
            let mut sessions = Vec::new();
            for _ in 0..3 {
                sessions.push(ws_bearer(&a, &t).await);
            }
            let r = post_revoke(admin, &body);
            assert_eq!(r.status, 200, "{}", r.head);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"revoked": kind, "closed": 3}),
                "round {round}"
            );
            for ws in &mut sessions {
                assert_eq!(
                    expect_close_within(ws, Duration::from_millis(1500)).await,
                    (4401, "token revoked".to_owned())
                );
            }
        }
    });
    let log = a.log();
    assert!(!log.contains("source=redis"), "{log}");
}

#[test]
fn a_node_started_before_redis_is_not_ready_until_it_has_loaded() {
    if !supported() {
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let k = LocalKey::generate();
    let a = node(&k, &url, &[], false);
    let t = token(&k, "alice");
    a.wait_log_line(|l| l.contains("event=redis_error"));
    let h = healthz(&a);
    assert_eq!(h.status, 503, "{}", h.head);
    assert_eq!(String::from_utf8_lossy(&h.body), "redis unavailable\n");
    let r = present(&a, &t);
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = post_ticket(&a, &t);
    assert_eq!(r.status, 503, "{}", r.head);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(metric(&a, "wsgate_redis_up").as_deref(), Some("0"));
    let _redis = Redis::start_on(port, &[]);
    // Backoff is at most 5 s between tries.
    a.wait_log_line(|l| l.contains("event=redis_up"));
    assert_eq!(healthz(&a).status, 200);
    assert_eq!(present(&a, &t).status, 101);
    let tk = ticket(&a, &t);
    assert_eq!(present(&a, &tk).status, 101);
}

#[test]
fn redis_killed_and_restarted_tokens_keep_working_tickets_wait_sessions_stay() {
    if !supported() {
        return;
    }
    let mut redis = Redis::start();
    let port = redis.port;
    let k = LocalKey::generate();
    let a = node(&k, &redis.url(), &[], true);
    let b = node(&k, &redis.url(), &[], true);
    let t = k.token(&Claims::new("alice").exp_in(600).set("jti", "j-1"));
    run(async {
        let mut ws = ws_bearer(&a, &t).await;
        let spare = ticket(&a, &t);
        redis.kill();
        a.wait_log_line(|l| l.contains("event=redis_error"));
        // Tokens: against the last copy. Tickets: 503, not spent.
        assert_eq!(present(&a, &t).status, 101);
        let r = present(&a, &spare);
        assert_eq!(
            (r.status, r.header("retry-after")),
            (503, Some("1")),
            "{}",
            r.head
        );
        assert_eq!(healthz(&a).status, 503);
        assert_eq!(post_ticket(&a, &t).status, 503);
        // A revocation that only one node would know is refused.
        let r = post_revoke(admin_addr(&a), r#"{"jti":"j-1"}"#);
        assert_eq!(r.status, 503, "{}", r.head);
        assert_echo(&mut ws).await;
        let redis = Redis::start_on(port, &[]);
        eventually("A ready again", Duration::from_secs(15), || {
            healthz(&a).status == 200
        });
        eventually("B ready again", Duration::from_secs(15), || {
            healthz(&b).status == 200
        });
        // The session authenticated before the outage was never dropped.
        assert_echo(&mut ws).await;
        // The ticket refused during the outage was not spent: it works once now.
        assert_eq!(present(&b, &spare).status, 101);
        assert_eq!(present(&a, &spare).status, 401);
        // The revocation refused during the outage was not stored anywhere.
        assert_eq!(present(&b, &t).status, 101);
        drop(redis);
    });
}

/// A good ticket refused because Redis is gone is no authentication failure: it is
/// not counted in `wsgate_auth_failures_total`, and its line is a `refuse`.
#[test]
fn a_ticket_refused_in_an_outage_is_not_counted_as_an_auth_failure() {
    if !supported() {
        return;
    }
    let mut redis = Redis::start();
    let k = LocalKey::generate();
    let a = node(&k, &redis.url(), &[], true);
    let t = token(&k, "alice");
    let (at_handshake, as_message) = (ticket(&a, &t), ticket(&a, &t));
    let failures = |s: &Server| {
        let r = http(s, "GET", "/metrics", &[]);
        String::from_utf8_lossy(&r.body)
            .lines()
            .filter(|l| l.starts_with("wsgate_auth_failures_total{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let before = failures(&a);
    assert!(before.iter().all(|l| l.ends_with(" 0")), "{before:?}");
    redis.kill();
    a.wait_log_line(|l| l.contains("event=redis_error"));
    assert_eq!(present(&a, &at_handshake).status, 503);
    run(async {
        let (mut ws, _) = ws_raw(a.addr, &upgrade_bytes(&a.host(), "/", &[]))
            .await
            .expect("101");
        send_text(&mut ws, &as_message).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (1013, "try again later".into())
        );
    });
    let line = a.wait_log_line(|l| l.contains("close=1013"));
    assert!(
        line.contains("event=refuse") && line.contains("reason=redis_unavailable"),
        "{line}"
    );
    let line = a.wait_log_line(|l| l.contains("status=503") && l.contains("method="));
    assert!(
        line.contains("event=refuse") && line.contains("reason=redis_unavailable"),
        "{line}"
    );
    assert!(!a.log().contains("event=auth_fail"), "{}", a.log());
    assert_eq!(failures(&a), before);
}

#[test]
fn a_hung_redis_costs_a_ticket_a_second_not_a_handshake_nor_shutdown() {
    if !supported() {
        return;
    }
    let redis = Redis::start();
    let k = LocalKey::generate();
    let mut a = node(&k, &redis.url(), &[], true);
    let t = token(&k, "alice");
    let tk = ticket(&a, &t);
    redis.signal("STOP");
    let started = Instant::now();
    let r = present(&a, &tk);
    assert_eq!(
        (r.status, r.header("retry-after")),
        (503, Some("1")),
        "{}",
        r.head
    );
    eprintln!(
        "ticket refused after {:?} with Redis hung",
        started.elapsed()
    );
    // The ticket presented as a first message: close 1013.
    let tk2 = ticket_or_503(&a, &t);
    run(async {
        let (mut ws, _) = ws_raw(a.addr, &upgrade_bytes(&a.host(), "/", &[]))
            .await
            .expect("101");
        send_text(&mut ws, tk2.as_deref().unwrap_or(&tk)).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (1013, "try again later".into())
        );
    });
    // Tokens are unaffected.
    assert_eq!(present(&a, &t).status, 101);
    let started = Instant::now();
    a.signal("TERM");
    let status = a
        .wait_exit(Duration::from_secs(10))
        .expect("exit within 10 s");
    assert!(status.success(), "{status:?}");
    eprintln!("shut down in {:?} with Redis hung", started.elapsed());
    redis.signal("CONT");
}

/// A revocation answered `503` because Redis hung is not applied when Redis resumes
/// and finds the command waiting in its socket buffer: nothing stored, nothing
/// published, no session closed on any node, the token still good.
#[test]
fn a_revocation_refused_while_redis_hung_is_not_applied_when_it_resumes() {
    if !supported() {
        return;
    }
    let (redis, k, a, b) = two_nodes();
    let t = k.token(&Claims::new("alice").exp_in(600).set("jti", "j-1"));
    run(async {
        let mut on_a = ws_bearer(&a, &t).await;
        let mut on_b = ws_bearer(&b, &t).await;
        redis.signal("STOP");
        let r = post_revoke(admin_addr(&a), r#"{"jti":"j-1"}"#);
        assert_eq!(r.status, 503, "{}", r.head);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "redis unavailable: nothing stored\n"
        );
        redis.signal("CONT");
        eventually("A ready again", Duration::from_secs(15), || {
            healthz(&a).status == 200
        });
        // Redis ran the waiting command before it served A's new connection.
        assert_eq!(redis.cli(&["ZCARD", "wsgate:revocations"]).trim(), "0");
        let line =
            a.wait_log_line(|l| l.contains("event=redis_error") && l.contains("during=revoke"));
        assert!(line.contains("no answer within"), "{line}");
        assert_echo(&mut on_a).await;
        assert_echo(&mut on_b).await;
    });
    for n in [&a, &b] {
        assert_eq!(present(n, &t).status, 101);
    }
    assert!(!b.log().contains("event=revoke"), "{}", b.log());
}

/// A ticket answered `503` because Redis hung is not spent when Redis resumes and
/// finds the redemption waiting: it opens once afterwards, then is refused.
#[test]
fn a_ticket_refused_while_redis_hung_is_not_spent_when_it_resumes() {
    if !supported() {
        return;
    }
    let (redis, k, a, b) = two_nodes();
    let tk = ticket(&a, &token(&k, "alice"));
    redis.signal("STOP");
    let r = present(&a, &tk);
    assert_eq!(
        (r.status, r.header("retry-after")),
        (503, Some("1")),
        "{}",
        r.head
    );
    redis.signal("CONT");
    eventually("A ready again", Duration::from_secs(15), || {
        healthz(&a).status == 200
    });
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "0");
    assert_eq!(present(&b, &tk).status, 101);
    for n in [&a, &b] {
        let r = present(n, &tk);
        assert_eq!(r.status, 401, "{}", r.head);
    }
}

/// Redis forgets the scripts (`SCRIPT FLUSH`): the next ticket and revocation are
/// sent whole instead, not refused, and no node goes down for it.
#[test]
fn scripts_flushed_from_redis_are_sent_again_without_a_503() {
    if !supported() {
        return;
    }
    let (redis, k, a, b) = two_nodes();
    let tk = ticket(&a, &token(&k, "alice"));
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    assert_eq!(present(&b, &tk).status, 101);
    assert_eq!(present(&a, &tk).status, 401);
    redis.cli(&["SCRIPT", "FLUSH"]);
    let r = post_revoke(admin_addr(&a), r#"{"jti":"nobody"}"#);
    assert_eq!(r.status, 200, "{}", r.head);
    for n in [&a, &b] {
        assert!(!n.log().contains("event=redis_error"), "{}", n.log());
        assert_eq!(healthz(n).status, 200);
    }
}

/// A ticket, or `None` if the node already answers 503 (it noticed the hang).
fn ticket_or_503(s: &Server, token: &str) -> Option<String> {
    let r = post_ticket(s, token);
    if r.status == 503 {
        return None;
    }
    assert_eq!(r.status, 200, "{}", r.head);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    Some(v["ticket"].as_str()?.to_owned())
}

#[test]
fn prefixes_isolate_two_deployments_on_one_redis() {
    if !supported() {
        return;
    }
    let redis = Redis::start();
    let k = LocalKey::generate();
    let blue = node(&k, &redis.url(), &["--redis-prefix", "blue:"], true);
    let green = node(&k, &redis.url(), &["--redis-prefix", "green:"], true);
    let t = token(&k, "alice");
    let r = post_revoke(admin_addr(&blue), r#"{"sub":"alice"}"#);
    assert_eq!(r.status, 200, "{}", r.head);
    eventually("blue refuses alice", IO_TIMEOUT, || {
        present(&blue, &t).status == 401
    });
    assert_eq!(present(&green, &t).status, 101);
    // A ticket spent in one deployment is another deployment's business.
    let bob = token(&k, "bob");
    let tk = ticket(&blue, &bob);
    assert_eq!(present(&blue, &tk).status, 101);
    assert_eq!(present(&green, &tk).status, 101);
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(
        keys.lines()
            .all(|l| l.starts_with("blue:") || l.starts_with("green:")),
        "{keys}"
    );
    assert!(keys.contains("blue:revocations"), "{keys}");
}

#[test]
fn a_password_in_the_url_authenticates_and_is_never_logged() {
    if !supported() {
        return;
    }
    let port = free_port();
    let _redis = Redis::start_on(port, &["--requirepass", "s3cret-pw"]);
    let k = LocalKey::generate();
    let good = node(
        &k,
        &format!("redis://:s3cret-pw@127.0.0.1:{port}/1"),
        &[],
        true,
    );
    let tk = ticket(&good, &token(&k, "alice"));
    assert_eq!(present(&good, &tk).status, 101);
    let bad = node(
        &k,
        &format!("redis://:wrong-pw@127.0.0.1:{port}"),
        &[],
        false,
    );
    let line = bad.wait_log_line(|l| l.contains("event=redis_error"));
    assert!(line.contains("AUTH"), "{line}");
    for log in [good.log(), bad.log()] {
        assert!(
            !log.contains("s3cret-pw") && !log.contains("wrong-pw"),
            "{log}"
        );
    }
}

#[test]
fn bad_redis_options_are_configuration_errors() {
    if !supported() {
        return;
    }
    for (args, what) in [
        (&["--redis", "http://127.0.0.1:6379"][..], "--redis"),
        (&["--redis", "redis://h:99999"][..], "--redis"),
        (&["--redis", "redis://h/x"][..], "--redis"),
        (
            &["--redis", "redis://127.0.0.1", "--redis-prefix", ""][..],
            "--redis-prefix",
        ),
    ] {
        let out = wsgate(&[&["serve"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr_of(&out);
        assert!(err.starts_with(&format!("error: {what}")), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // An unreachable Redis is not a configuration error: the node waits for it.
    let k = LocalKey::generate();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let s = node(&k, &url, &[], false);
    assert_eq!(healthz(&s).status, 503);
}

#[test]
fn a_build_without_the_feature_says_so_in_one_line() {
    let out = wsgate(&["serve", "--help"]);
    if stdout_of(&out).contains("--redis") {
        return; // the feature is there: the tests above cover it
    }
    for flag in ["--redis", "--trusted-proxy"] {
        let out = wsgate(&["serve", flag, "x"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(flag) && err.contains("built without"), "{err}");
    }
}

#[cfg(feature = "bench")]
#[test]
fn token_handshakes_cost_no_redis_command() {
    if !supported() {
        return;
    }
    let redis = Redis::start();
    let dir = TempDir::new();
    let key = dir.file("k");
    let out = wsgate(&["keygen", "--out", &key]);
    assert!(out.status.success());
    let s = Server::start(&["--key", &key, "--redis", &redis.url()]);
    s.wait_log_line(|l| l.contains("event=redis_up"));
    let before = redis.all_calls();
    let url = format!("ws://{}/", s.addr);
    for method in ["header", "protocol", "cookie", "message"] {
        let out = wsgate(&[
            "bench", &url, "--key", &key, "--method", method, "-n", "200", "-c", "8",
        ]);
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    assert_eq!(
        redis.all_calls(),
        before,
        "{}",
        redis.cli(&["INFO", "commandstats"])
    );
    // A ticket costs exactly one command: the script, which runs one `SET`.
    let out = wsgate(&[
        "bench", &url, "--key", &key, "--method", "ticket", "-n", "20", "-c", "4",
    ]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(redis.calls("evalsha"), 20);
    assert_eq!(redis.calls("set"), 20);
}
