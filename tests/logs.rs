//! Logs (`docs/operations.md#logs`): one `key=value` line per event on stderr, never a
//! token, never key material.

mod common;
use common::*;

fn event(line: &str) -> Option<String> {
    log_value(line, "event")
}

#[test]
fn no_token_or_key_bytes_ever_logged() {
    let k = LocalKey::generate();
    let p = PublicKeyPair::generate();
    let mut s = Server::start(
        &[
            &k.arg()[..],
            &p.arg(),
            &[
                "--log-level",
                "debug",
                "--auth",
                "header,protocol,cookie,query,message",
                "--allow-origin",
                "https://app.example.com",
            ],
        ]
        .concat(),
    );
    let mut tokens = Vec::new();
    let mut fresh = |claims: Claims| {
        let t = k.token(&claims);
        tokens.push(t.clone());
        t
    };
    let header = fresh(Claims::new("h"));
    let proto = fresh(Claims::new("p"));
    let cookie = fresh(Claims::new("c"));
    let query = fresh(Claims::new("q"));
    let msg = fresh(Claims::new("m"));
    let expired = fresh(Claims::new("e").exp_in(-3600));
    let tampered = tamper(&fresh(Claims::new("t")));
    tokens.push(tampered.clone());
    let public = p.token(&Claims::new("pub"));
    tokens.push(public.clone());
    let foreign = LocalKey::generate().token(&Claims::new("f"));
    tokens.push(foreign.clone());

    run(async {
        let mut ws = ws_bearer(&s, &header).await;
        assert_echo(&mut ws).await;
        ws_ok(
            &s,
            &[("Sec-WebSocket-Protocol", &format!("wsgate, {proto}"))],
        )
        .await;
        ws_ok(&s, &[("Cookie", &format!("wsgate_token={cookie}"))]).await;
        match ws_connect(&s, &format!("/?token={query}"), &[]).await {
            Ok(_) => {}
            Err(r) => panic!("query: {}", r.head),
        }
        let mut ws = ws_ok(&s, &[]).await;
        first_message_ok(&mut ws, &format!(r#"{{"token":"{msg}"}}"#)).await;
        ws_bearer(&s, &public).await;
        // Failures, of every kind.
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &expired).await;
        expect_close(&mut ws).await;
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &tampered).await;
        expect_close(&mut ws).await;
        let (mut ws, _) = ws_connect(
            &s,
            "/",
            &[
                ("Origin", "https://app.example.com"),
                ("Authorization", &bearer(&foreign)),
            ],
        )
        .await
        .expect("101");
        expect_close(&mut ws).await;
    });
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&expired))],
    ));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Sec-WebSocket-Protocol", &format!("x, {tampered}"))],
    ));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Cookie", &format!("wsgate_token={foreign}"))],
    ));
    assert_eq!(
        upgrade_status(
            &s,
            "/",
            &[
                ("Origin", "https://evil.example"),
                ("Cookie", &format!("wsgate_token={cookie}"))
            ]
        )
        .status,
        403
    );
    // Shut down so that every line is flushed, then read the whole of stderr.
    s.signal("TERM");
    s.wait_exit(std::time::Duration::from_secs(15));
    s.stderr.wait_eof(IO_TIMEOUT);

    let all = format!("{}{}", s.log(), s.stdout.text());
    assert!(!all.is_empty());
    for t in &tokens {
        let body = t.split('.').nth(2).unwrap();
        assert!(!all.contains(t.as_str()), "a token was logged:\n{all}");
        // Not even a recognisable fragment of it.
        assert!(
            !all.contains(&body[..24]),
            "a token fragment was logged:\n{all}"
        );
    }
    for secret in [&k.paserk, &p.public_paserk] {
        assert!(!all.contains(secret.as_str()), "a key was logged:\n{all}");
        assert!(
            !all.contains(paserk_body(secret)),
            "key bytes were logged:\n{all}"
        );
        assert!(
            !all.contains(&paserk_body(secret)[..16]),
            "key bytes were logged:\n{all}"
        );
    }
}

#[test]
fn key_from_env_never_logged() {
    let k = LocalKey::generate();
    let s = Server::start_env(&["--log-level", "debug"], &[("WSGATE_KEY", &k.paserk)]);
    assert_still_serves(&s, &k.token(&Claims::new("a")));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", "Bearer v4.local.xyz")],
    ));
    s.wait_log_line(|l| event(l).as_deref() == Some("auth_fail"));
    let all = format!("{}{}", s.log(), s.stdout.text());
    assert!(
        !all.contains(paserk_body(&k.paserk)),
        "key bytes logged:\n{all}"
    );
}

#[test]
fn auth_ok_line_has_peer_method_sub() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    let port = run(async {
        let ws = ws_bearer(&s, &t).await;
        ws.get_ref().local_addr().unwrap().port()
    });
    let peer = format!("127.0.0.1:{port}");
    let line = s.wait_log_line(|l| {
        event(l).as_deref() == Some("auth_ok")
            && log_value(l, "peer").as_deref() == Some(peer.as_str())
    });
    assert_eq!(
        log_value(&line, "method").as_deref(),
        Some("header"),
        "{line}"
    );
    assert_eq!(log_value(&line, "sub").as_deref(), Some("alice"), "{line}");

    let port = run(async {
        let mut ws = ws_ok(&s, &[]).await;
        first_message_ok(&mut ws, &k.token(&Claims::new("bob"))).await;
        ws.get_ref().local_addr().unwrap().port()
    });
    let peer = format!("127.0.0.1:{port}");
    let line = s.wait_log_line(|l| {
        event(l).as_deref() == Some("auth_ok")
            && log_value(l, "peer").as_deref() == Some(peer.as_str())
    });
    assert_eq!(
        log_value(&line, "method").as_deref(),
        Some("message"),
        "{line}"
    );
    assert_eq!(log_value(&line, "sub").as_deref(), Some("bob"), "{line}");
}

#[test]
fn auth_fail_line_has_peer_method_reason() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    let port = c.local_addr().unwrap().port();
    std::io::Write::write_all(
        &mut c,
        &upgrade_bytes(
            &s.host(),
            "/",
            &[("Authorization", "Bearer v4.local.bm9wZQ")],
        ),
    )
    .unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_401(&read_response(&mut c));
    let peer = format!("127.0.0.1:{port}");
    let line = s.wait_log_line(|l| {
        event(l).as_deref() == Some("auth_fail")
            && log_value(l, "peer").as_deref() == Some(peer.as_str())
    });
    assert_eq!(
        log_value(&line, "method").as_deref(),
        Some("header"),
        "{line}"
    );
    let reason = log_value(&line, "reason").unwrap_or_default();
    assert!(!reason.is_empty(), "auth_fail has a reason: {line}");

    let t = k.token(&Claims::new("a").exp_in(-3600));
    let port = run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let port = ws.get_ref().local_addr().unwrap().port();
        send_text(&mut ws, &t).await;
        assert_eq!(expect_close(&mut ws).await.0, 4401);
        port
    });
    let peer = format!("127.0.0.1:{port}");
    let line = s.wait_log_line(|l| {
        event(l).as_deref() == Some("auth_fail")
            && log_value(l, "peer").as_deref() == Some(peer.as_str())
    });
    assert_eq!(
        log_value(&line, "method").as_deref(),
        Some("message"),
        "{line}"
    );
    assert!(
        !log_value(&line, "reason").unwrap_or_default().is_empty(),
        "{line}"
    );
}

#[test]
fn close_line_logged_at_info() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    let port = run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let port = ws.get_ref().local_addr().unwrap().port();
        ws.close(None).await.unwrap();
        let _ = timeout(IO_TIMEOUT, smol::stream::StreamExt::next(&mut ws)).await;
        port
    });
    let peer = format!("127.0.0.1:{port}");
    s.wait_log_line(|l| {
        event(l).as_deref() == Some("close")
            && log_value(l, "peer").as_deref() == Some(peer.as_str())
    });
}

#[test]
fn values_with_spaces_are_json_strings() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let sub = r#"Alice "A" Smith=1"#;
    assert_still_serves(&s, &k.token(&Claims::new(sub)));
    let line = s.wait_log_line(|l| event(l).as_deref() == Some("auth_ok"));
    let quoted = serde_json::to_string(sub).unwrap();
    assert!(
        line.contains(&format!("sub={quoted}")),
        "sub must be a JSON string: {line}"
    );
    assert_eq!(log_value(&line, "sub").as_deref(), Some(sub));
}

#[test]
fn accept_only_at_debug() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    let info = Server::start(&k.arg());
    assert_still_serves(&info, &t);
    info.wait_log_line(|l| event(l).as_deref() == Some("auth_ok"));
    assert!(
        !info
            .log()
            .lines()
            .any(|l| event(l).as_deref() == Some("accept")),
        "accept is a debug event:\n{}",
        info.log()
    );
    let debug = Server::start(&[&k.arg()[..], &["--log-level", "debug"]].concat());
    assert_still_serves(&debug, &t);
    debug.wait_log_line(|l| event(l).as_deref() == Some("accept"));
}

#[test]
fn every_line_is_key_value_pairs() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--log-level", "debug"]].concat());
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", "Bearer x")]));
    s.wait_log_line(|l| event(l).as_deref() == Some("auth_fail"));
    for line in s.log().lines().filter(|l| !l.trim().is_empty()) {
        assert!(event(line).is_some(), "every line has event=: {line:?}");
        // Each space-separated field outside JSON strings is key=value.
        let mut rest = line;
        while !rest.is_empty() {
            let (k, after) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {line:?}"));
            assert!(
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "bad key {k:?} in {line:?}"
            );
            let after = if after.starts_with('"') {
                let mut de = serde_json::Deserializer::from_str(after).into_iter::<String>();
                de.next()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("bad JSON value in {line:?}: {e}"));
                &after[de.byte_offset()..]
            } else {
                after.find(' ').map_or("", |i| &after[i..])
            };
            rest = after.trim_start();
        }
    }
}

#[test]
fn a_query_token_while_query_is_off_is_named_in_the_answer_and_the_log() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    let target = format!("/?token={t}");
    // `message` off too: 401, and the body says which method is off.
    let s = Server::start(&[&k.arg()[..], &["--auth", "header,cookie"]].concat());
    let r = upgrade_status(&s, &target, &[]);
    assert_401_no_token(&r);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("query method is off"), "body: {body:?}");
    let line = s.wait_log_line(|l| event(l).as_deref() == Some("auth_fail"));
    assert_eq!(
        log_value(&line, "detail").as_deref(),
        Some("query_disabled"),
        "{line}"
    );
    assert!(!s.log().contains(&t), "no token in the log");
    // The default methods: first-message auth as before, with a hint in the log.
    let s = Server::start(&k.arg());
    run(async {
        let (mut ws, _) = ws_connect(&s, &target, &[]).await.expect("upgrade");
        let v = first_message_ok(&mut ws, &t).await;
        assert_eq!(v["sub"], "alice");
    });
    let line = s.wait_log_line(|l| event(l).as_deref() == Some("auth_hint"));
    assert_eq!(
        log_value(&line, "detail").as_deref(),
        Some("query_disabled"),
        "{line}"
    );
    // No hint without a `token` parameter.
    run(async {
        let (mut ws, _) = ws_connect(&s, "/?room=1", &[]).await.expect("upgrade");
        first_message_ok(&mut ws, &t).await;
    });
    s.wait_log_line(|l| event(l).as_deref() == Some("auth_ok") && l.contains("sub=alice"));
    assert_eq!(s.log().matches("event=auth_hint").count(), 1, "{}", s.log());
}

#[test]
fn a_bearer_value_with_a_space_is_not_visible_ascii() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", "Bearer hello world")],
    ));
    let line = s.wait_log_line(|l| event(l).as_deref() == Some("auth_fail"));
    assert_eq!(
        log_value(&line, "detail").as_deref(),
        Some("not_visible_ascii"),
        "{line}"
    );
}

/// Lines wait for the end of an executor turn, and none is lost when the server
/// stops: every session's `auth_ok` and `close` line is there after SIGTERM, with
/// two executor threads as with one.
#[test]
fn shutdown_loses_no_line() {
    for threads in ["1", "2"] {
        let k = LocalKey::generate();
        let mut s = Server::start(&[&k.arg()[..], &["--threads", threads]].concat());
        const SESSIONS: usize = 24;
        run(async {
            let mut open = Vec::new();
            for i in 0..SESSIONS {
                let mut ws = ws_bearer(&s, &k.token(&Claims::new(&format!("user{i}")))).await;
                assert_echo(&mut ws).await;
                open.push(ws);
            }
            s.signal("TERM");
            for ws in &mut open {
                assert_eq!(expect_close(ws).await.0, 1001);
            }
        });
        let st = s
            .wait_exit(std::time::Duration::from_secs(15))
            .expect("exits");
        assert_eq!(st.code(), Some(0));
        assert!(s.stderr.wait_eof(IO_TIMEOUT), "stderr ends");
        let log = s.log();
        let count = |e: &str| {
            log.lines()
                .filter(|l| event(l).as_deref() == Some(e))
                .count()
        };
        assert_eq!(count("auth_ok"), SESSIONS, "threads {threads}:\n{log}");
        assert_eq!(count("close"), SESSIONS, "threads {threads}:\n{log}");
        assert_eq!(count("shutdown"), 1, "threads {threads}:\n{log}");
        for i in 0..SESSIONS {
            let sub = format!("sub=user{i} ");
            assert!(
                log.lines()
                    .any(|l| l.contains("event=close") && l.contains(&sub)),
                "no close line for user{i}:\n{log}"
            );
        }
    }
}

/// The other half of [`a_panicking_session_loses_no_line`]: run only as its child
/// process (`WSGATE_PANIC_CHILD` set), a library server whose handler panics. It
/// prints its address and a token, then serves until its stdin closes.
#[test]
#[ignore = "run by a_panicking_session_loses_no_line in a child process"]
fn panicking_server_child() {
    if std::env::var_os("WSGATE_PANIC_CHILD").is_none() {
        return;
    }
    let handler = wsgate::Handler::new(|_session| async move {
        panic!("this handler fails on purpose");
    });
    let server = LibServer::start(handler, |_| {});
    println!("addr={} token={}", server.addr, server.token);
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    server.stop();
}

/// A session that panics ends alone, and its lines (`auth_ok`, `panic`) are written
/// while the server keeps running, not held back until it exits: a server killed
/// later has already written them.
#[test]
fn a_panicking_session_loses_no_line() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "panicking_server_child",
            "--ignored",
            "--nocapture",
        ])
        .env("WSGATE_PANIC_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = SharedLog::default();
    stderr.spawn_reader(child.stderr.take().unwrap());
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let (addr, token) = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child: {}",
            stderr.text()
        );
        if let Some(rest) = line.trim().strip_prefix("addr=") {
            let (addr, token) = rest.split_once(" token=").unwrap();
            break (
                addr.parse::<std::net::SocketAddr>().unwrap(),
                token.to_owned(),
            );
        }
    };
    for _ in 0..2 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let req = upgrade_bytes(
            &addr.to_string(),
            "/",
            &[("Authorization", &bearer(&token))],
        );
        std::io::Write::write_all(&mut c, &req).unwrap();
        assert_eq!(read_response(&mut c).status, 101);
        // The session's task is gone: the connection ends.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut rest);
    }
    let lines = |t: &str, e: &str| t.lines().filter(|l| event(l).as_deref() == Some(e)).count();
    let seen = stderr.wait_for(IO_TIMEOUT, |t| {
        lines(t, "panic") == 2 && lines(t, "auth_ok") == 2
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.is_some(),
        "lines of the panicking sessions:\n{}",
        stderr.text()
    );
}
