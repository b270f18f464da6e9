//! Revocation and the operators' listener (`--admin-listen`), over real sockets:
//! `POST /revoke` by `jti` and by `sub` (the `iat` rule), live sessions closed with
//! 4401 `token revoked` in every mode, new handshakes, first messages and
//! `POST /ticket` refused, tickets matched through the token that minted them,
//! bounds (capacity, 400s, 404/405), `GET /sessions`, the `wsgate revoke` command,
//! and a hostile admin client.

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A server with an admin listener; its admin address.
fn admin_server(k: &LocalKey, extra: &[&str]) -> (Server, SocketAddr) {
    let s = Server::start(&[&k.arg()[..], &["--admin-listen", "127.0.0.1:0"], extra].concat());
    let addr = admin_addr(&s);
    (s, addr)
}

fn revoke_ok(admin: SocketAddr, body: &str) -> serde_json::Value {
    let r = post_revoke(admin, body);
    assert_eq!(r.status, 200, "{}", r.head);
    serde_json::from_slice(&r.body).unwrap()
}

fn get(addr: SocketAddr, target: &str) -> Response {
    http_raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

async fn expect_revoked(ws: &mut Ws) {
    assert_eq!(
        expect_close_within(ws, Duration::from_millis(1500)).await,
        (4401, "token revoked".to_owned())
    );
}

#[test]
fn revoking_a_jti_closes_its_session_and_refuses_it_everywhere() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &[]);
    let t = k.token(&Claims::new("alice").set("jti", "j-1"));
    let other = k.token(&Claims::new("alice").set("jti", "j-2"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut untouched = ws_bearer(&s, &other).await;
        assert_echo(&mut ws).await;
        let started = Instant::now();
        let v = revoke_ok(admin, r#"{"jti":"j-1"}"#);
        assert_eq!(v, serde_json::json!({"revoked": "jti", "closed": 1}));
        expect_revoked(&mut ws).await;
        eprintln!("closed {:?} after the revocation", started.elapsed());
        assert_echo(&mut untouched).await;
    });
    // New handshakes: 401; a browser: 101 then 4401 `token revoked`.
    assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
    let origin = format!("http://{}", s.host());
    run(async {
        let (mut ws, r) = ws_connect(
            &s,
            "/",
            &[
                ("Origin", &origin),
                ("Sec-WebSocket-Protocol", &format!("wsgate, {t}")),
            ],
        )
        .await
        .unwrap_or_else(|r| panic!("{}", r.head));
        assert_eq!(r.status, 101);
        assert_eq!(
            expect_close(&mut ws).await,
            (4401, "token revoked".to_owned())
        );
        // First message.
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &t).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (4401, "token revoked".to_owned())
        );
    });
    // POST /ticket.
    let r = http(
        &s,
        "POST",
        "/ticket",
        &[("Content-Length", "0"), ("Authorization", &bearer(&t))],
    );
    assert_eq!(r.status, 401, "{}", r.head);
    assert_eq!(String::from_utf8_lossy(&r.body), "token revoked\n");
    s.wait_log_line(|l| {
        l.contains("event=revoke") && l.contains("kind=jti") && l.contains("closed=1")
    });
    s.wait_log_line(|l| l.contains("event=auth_fail") && l.contains("reason=revoked"));
    let m = get(admin, "/metrics");
    let text = String::from_utf8_lossy(&m.body).into_owned();
    assert!(
        text.contains("wsgate_revocations_total{kind=\"jti\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("wsgate_auth_failures_total{reason=\"revoked\"} 4"),
        "{text}"
    );
    assert!(!s.log().contains("j-1"), "the jti reached the log");
    // The other token still works.
    assert_still_serves(&s, &other);
}

#[test]
fn revoking_a_sub_refuses_tokens_issued_up_to_then_and_not_later() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &[]);
    let old = k.token(&Claims::new("alice").iat_in(-5));
    let no_iat = k.token(&Claims::new("alice").without("iat"));
    let bob = k.token(&Claims::new("bob").iat_in(-5));
    let (mut before, mut after) = (0, 0);
    run(async {
        let mut a1 = ws_bearer(&s, &old).await;
        let mut a2 = ws_bearer(&s, &no_iat).await;
        let mut b = ws_bearer(&s, &bob).await;
        before = now();
        let v = revoke_ok(admin, r#"{"sub":"alice"}"#);
        after = now();
        assert_eq!(v, serde_json::json!({"revoked": "sub", "closed": 2}));
        expect_revoked(&mut a1).await;
        expect_revoked(&mut a2).await;
        assert_echo(&mut b).await;
    });
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&old))],
    ));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&no_iat))],
    ));
    // Logged in again: a token issued after the revocation works (the moment is in
    // whole seconds, so "after" is the next second).
    let fresh = k.token(&Claims::new("alice").iat_in(2));
    assert_still_serves(&s, &fresh);
    // The moment is a whole second between `before` and `after`: an `iat` half a
    // second past `after` is later than it; `before` itself, with a zero fraction, is
    // at or before it.
    let later = rfc3339(after).replace('Z', ".5Z");
    assert_still_serves(&s, &k.token(&Claims::new("alice").set("iat", later)));
    let then = rfc3339(before).replace('Z', ".000Z");
    assert_401(&upgrade_status(
        &s,
        "/",
        &[(
            "Authorization",
            &bearer(&k.token(&Claims::new("alice").set("iat", then))),
        )],
    ));
}

#[test]
fn a_ticket_session_is_revoked_through_the_token_that_minted_it() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &[]);
    let t = k.token(&Claims::new("alice").set("jti", "minting"));
    let r = http(
        &s,
        "POST",
        "/ticket",
        &[("Content-Length", "0"), ("Authorization", &bearer(&t))],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let ticket = v["ticket"].as_str().unwrap().to_owned();
    // A second ticket, not used yet: refused once the minting token is revoked.
    let r = http(
        &s,
        "POST",
        "/ticket",
        &[("Content-Length", "0"), ("Authorization", &bearer(&t))],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let unused = v["ticket"].as_str().unwrap().to_owned();
    run(async {
        let mut ws = ws_bearer(&s, &ticket).await;
        assert_echo(&mut ws).await;
        let v = revoke_ok(admin, r#"{"jti":"minting"}"#);
        assert_eq!(v["closed"], 1);
        expect_revoked(&mut ws).await;
    });
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&unused))],
    ));
}

#[test]
fn revocation_closes_an_exec_session_mid_message_and_reaps_its_process() {
    let dir = TempDir::new();
    // A process that never reads: the session holds a message for it.
    let script = dir.file("deaf.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho $$ > \"$1\"\necho ready\nexec sleep 600\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pidfile = dir.file("pid");
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &["--exec", &format!("{script} {pidfile}")]);
    let t = k.token(&Claims::new("carol"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
        let msg = Message::binary(vec![b'x'; 256 << 10]);
        flood_until_stalled(&mut ws, &msg, 4096, Duration::from_millis(500)).await;
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        revoke_ok(admin, r#"{"sub":"carol"}"#);
        // The client may be behind on reading: drain to the close frame.
        let got = expect_close_within(&mut ws, IO_TIMEOUT).await;
        assert_eq!(got, (4401, "token revoked".to_owned()));
        eventually("the process is killed and reaped", IO_TIMEOUT, || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    });
}

#[test]
fn ten_thousand_sessions_of_which_three_match_exactly_three_close() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &["--max-connections", "20000"]);
    let crowd = k.token(&Claims::new("crowd"));
    let target = k.token(&Claims::new("target"));
    let n = 10_000;
    run(async {
        let mut crowd_ws = Vec::with_capacity(n);
        for _ in 0..n - 3 {
            crowd_ws.push(ws_bearer(&s, &crowd).await);
        }
        let mut targets = Vec::new();
        for _ in 0..3 {
            targets.push(ws_bearer(&s, &target).await);
        }
        let v = revoke_ok(admin, r#"{"sub":"target"}"#);
        assert_eq!(v["closed"], 3);
        for ws in &mut targets {
            expect_revoked(ws).await;
        }
        // The crowd is untouched: every one still echoes.
        for ws in crowd_ws.iter_mut().step_by(997) {
            assert_echo(ws).await;
        }
        let sessions = get(admin, "/sessions");
        let list: serde_json::Value = serde_json::from_slice(&sessions.body).unwrap();
        assert_eq!(list.as_array().unwrap().len(), n - 3);
    });
}

#[test]
fn bad_revocations_are_400_and_a_full_list_is_503_forgetting_nothing() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &["--revoke-capacity", "1"]);
    for body in [
        r#"{"jti":"a","sub":"b"}"#,
        "{}",
        r#"{"jti":""}"#,
        r#"{"sub":7}"#,
        "not json",
        "",
        &format!(r#"{{"jti":"{}"}}"#, "x".repeat(9000)),
    ] {
        let r = post_revoke(admin, body);
        assert_eq!(r.status, 400, "{body:.40}: {}", r.head);
    }
    revoke_ok(admin, r#"{"jti":"first"}"#);
    let r = post_revoke(admin, r#"{"jti":"second"}"#);
    assert_eq!(r.status, 503, "{}", r.head);
    let first = k.token(&Claims::new("a").set("jti", "first"));
    let second = k.token(&Claims::new("a").set("jti", "second"));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&first))],
    ));
    assert_still_serves(&s, &second);
    // Routes.
    assert_eq!(get(admin, "/revoke").status, 405);
    assert_eq!(get(admin, "/nope").status, 404);
    assert_eq!(get(admin, "/ticket").status, 404);
    assert_eq!(get(admin, "/healthz").status, 200);
    let r = http_raw(
        admin,
        format!("DELETE /sessions HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 405);
    // HEAD gets the head alone, a refusal's too.
    for (target, status) in [("/revoke", 405), ("/nope", 404), ("/sessions", 200)] {
        let r = http_raw(
            admin,
            format!("HEAD {target} HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, status, "{}", r.head);
        assert!(r.body.is_empty(), "HEAD {target} sent a body: {:?}", r.body);
    }
}

#[test]
fn sessions_are_listed_with_their_identity() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &[]);
    let a = k.token(&Claims::new("alice"));
    let b = k.token(&Claims::new("bob bob"));
    run(async {
        let _a = ws_bearer(&s, &a).await;
        let mut bws = ws_ok(&s, &[]).await;
        first_message_ok(&mut bws, &b).await;
        let all: serde_json::Value = serde_json::from_slice(&get(admin, "/sessions").body).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
        let r = get(admin, "/sessions?sub=bob%20bob");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let only: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let only = only.as_array().unwrap();
        assert_eq!(only.len(), 1, "{only:?}");
        let o = only[0].as_object().unwrap();
        let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["exp", "method", "peer", "since", "sub"]);
        assert_eq!(o["sub"], "bob bob");
        assert_eq!(o["method"], "message");
        assert!(o["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(parse_rfc3339(o["since"].as_str().unwrap()).is_some());
        assert!(parse_rfc3339(o["exp"].as_str().unwrap()).is_some());
    });
}

#[test]
fn the_revoke_command_prints_the_answer_or_fails_with_1() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &[]);
    let t = k.token(&Claims::new("dave"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let o = wsgate(&["revoke", "--admin", &admin.to_string(), "--sub", "dave"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
        let v: serde_json::Value = serde_json::from_str(stdout_of(&o).trim()).unwrap();
        assert_eq!(v, serde_json::json!({"revoked": "sub", "closed": 1}));
        expect_revoked(&mut ws).await;
    });
    // Nothing listening: exit 1 with one `error:` line.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap().to_string();
    drop(closed);
    let o = wsgate(&["revoke", "--admin", &gone, "--jti", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr_of(&o).starts_with("error: --admin"),
        "{}",
        stderr_of(&o)
    );
    // Neither or both: a usage error.
    let o = wsgate(&["revoke", "--admin", &admin.to_string()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_hostile_admin_client_does_not_hurt_the_main_listener() {
    let k = LocalKey::generate();
    let (s, admin) = admin_server(&k, &[]);
    // Slow, never-finishing heads and oversized bodies on the admin port.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        if let Ok(mut c) = std::net::TcpStream::connect(admin) {
            use std::io::Write as _;
            let _ = c.write_all(b"POST /revoke HTTP/1.1\r\nContent-Length: 100000\r\n");
            stalled.push(c);
        }
    }
    let t = k.token(&Claims::new("alice"));
    assert_still_serves(&s, &t);
    // The admin listener itself still answers, within its bound of connections.
    assert_eq!(post_revoke(admin, &"x".repeat(100)).status, 400);
    drop(stalled);
}

#[test]
fn embedders_revoke_and_list_through_the_server_handle_and_see_refreshed_expiry() {
    use std::sync::{Arc, Mutex};
    // A handler that reports the session's expiry after each message.
    let seen: Arc<Mutex<Vec<i64>>> = Arc::default();
    let record = seen.clone();
    let handler = wsgate::Handler::new(move |mut session| {
        let record = record.clone();
        async move {
            while let Some(m) = session.recv().await {
                record.lock().unwrap().push(session.exp());
                if session.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    let s = LibServer::start(handler, |c| c.refresh = true);
    run(async {
        let (mut ws, _) = ws_raw(
            s.addr,
            &upgrade_bytes(
                &s.addr.to_string(),
                "/",
                &[("Authorization", &bearer(&s.token))],
            ),
        )
        .await
        .unwrap_or_else(|r| panic!("{}", r.head));
        assert_echo(&mut ws).await;
        // A refresh: the handler sees the new expiry on the next message.
        let later = now() + 7200;
        let fresh = s
            .key
            .issue(&wsgate::claims_json(
                "bob",
                now(),
                7200,
                None,
                None,
                None,
                &[],
            ))
            .unwrap();
        let refresh = serde_json::json!({"type": "refresh", "token": fresh}).to_string();
        send_text(&mut ws, &refresh).await;
        let answer: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
        assert_eq!(answer["type"], "refreshed");
        assert_echo(&mut ws).await;
        let exps = seen.lock().unwrap().clone();
        assert!(exps.first().is_some_and(|&e| e < later - 3600), "{exps:?}");
        assert!(exps.last().is_some_and(|&e| e >= later - 1), "{exps:?}");
        let listed = s.handle().sessions(Some("bob"));
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].sub, "bob");
        let closed = s
            .handle()
            .revoke(&wsgate::Revocation::Sub("bob".into()))
            .unwrap();
        assert_eq!(closed, 1);
        expect_revoked(&mut ws).await;
    });
    assert_eq!(s.handle().sessions(None).len(), 0);
    s.stop();
}
