//! The refusals of `docs/protocol.md#refusals` (HTTP answers, in-band close codes, the
//! order of checks) and the presence rule of `docs/protocol.md#methods`: every way a
//! request or token can be wrong gets its exact answer, and the server keeps
//! serving others afterwards.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";

fn start(key: &LocalKey, extra: &[&str]) -> Server {
    Server::start(&[&key.arg()[..], extra].concat())
}

fn good(key: &LocalKey) -> String {
    key.token(&Claims::new("alice"))
}

// --- 401 for non-browser clients ---

#[test]
fn invalid_header_token_401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", "Bearer v4.local.bm90IGEgdG9rZW4")],
    ));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn tampered_token_401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let bad = tamper(&good(&key));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&bad))],
    ));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn wrong_key_token_401() {
    let key = LocalKey::generate();
    let other = LocalKey::generate();
    let s = start(&key, &[]);
    let t = other.token_no_footer(&Claims::new("alice"));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn expired_token_401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = key.token(&Claims::new("alice").exp_in(-3600));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn not_yet_valid_token_401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = key.token(&Claims::new("alice").nbf_in(3600).exp_in(7200));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn wrong_audience_and_issuer_401() {
    let key = LocalKey::generate();
    let s = start(
        &key,
        &[
            "--audience",
            "wsgate",
            "--issuer",
            "https://auth.example.com",
        ],
    );
    let wrong_aud = key.token(
        &Claims::new("a")
            .set("aud", "other")
            .set("iss", "https://auth.example.com"),
    );
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&wrong_aud))],
    ));
    let wrong_iss = key.token(
        &Claims::new("a")
            .set("aud", "wsgate")
            .set("iss", "https://evil.example"),
    );
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&wrong_iss))],
    ));
    let ok = key.token(
        &Claims::new("a")
            .set("aud", "wsgate")
            .set("iss", "https://auth.example.com"),
    );
    assert_still_serves(&s, &ok);
}

#[test]
fn empty_bearer_is_present_and_invalid_401() {
    // `Authorization: Bearer` is present even when empty, and it decides
    // (no fallback to the valid cookie, no first-message auth).
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let cookie = format!("wsgate_token={}", good(&key));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", "Bearer ")]));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", "Bearer "), ("Cookie", &cookie)],
    ));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", "Bearer")]));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn empty_cookie_and_empty_protocol_token_are_invalid_401() {
    let key = LocalKey::generate();
    let s = start(&key, &["--auth", "header,protocol,cookie,query,message"]);
    assert_401(&upgrade_status(&s, "/", &[("Cookie", "wsgate_token=")]));
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Sec-WebSocket-Protocol", "wsgate, v4.local.")],
    ));
    assert_401(&upgrade_status(&s, "/?token=", &[]));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn malformed_and_non_visible_ascii_tokens_401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    for bad in [
        "garbage",
        "v4.local.",
        "v4.local.!!!!",
        "v4.public.abc.def.ghi",
        "v3.local.AAAA",
    ] {
        let r = upgrade_status(&s, "/", &[("Authorization", &bearer(bad))]);
        assert_401(&r);
    }
    // Obs-text (non-ASCII) bytes in the value.
    let mut req = upgrade_bytes(&s.host(), "/", &[]);
    let tail = req.split_off(req.len() - 2);
    req.extend_from_slice(b"Authorization: Bearer v4.local.\xc3\xa9\xc3\xa9\r\n");
    req.extend_from_slice(&tail);
    assert_401(&http_raw(s.addr, &req));
    assert_still_serves(&s, &good(&key));
}

#[test]
fn missing_exp_401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = key.token(&Claims::new("alice").without("exp"));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
    let t = key.token(&Claims::new("alice").set("exp", "tomorrow"));
    assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
    assert_still_serves(&s, &good(&key));
}

/// A valid token whose total length is exactly `len` bytes (no footer), if one exists.
fn token_of_len(key: &LocalKey, len: usize) -> Option<String> {
    let base = Claims::new("alice").set("pad", "");
    let l0 = base.json().len();
    // v4.local: "v4.local." + base64url(nonce 32 + ciphertext + tag 32), no padding.
    let pad = (0..len).find(|p| 9 + (4 * (64 + l0 + p)).div_ceil(3) == len)?;
    let t = key.token_no_footer(&base.set("pad", "x".repeat(pad)));
    assert_eq!(t.len(), len);
    Some(t)
}

#[test]
fn token_over_8_kib_is_invalid_but_8_kib_is_accepted() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let big = (8193..8200).find_map(|n| token_of_len(&key, n)).unwrap();
    assert!(big.len() > 8192);
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&big))],
    ));
    let limit = (8185..=8192)
        .rev()
        .find_map(|n| token_of_len(&key, n))
        .unwrap();
    assert!(limit.len() <= 8192);
    assert_still_serves(&s, &limit);
}

#[test]
fn no_token_message_disabled_401() {
    let key = LocalKey::generate();
    let s = start(&key, &["--auth", "header"]);
    assert_401_no_token(&upgrade_status(&s, "/", &[]));
    assert_still_serves(&s, &good(&key));
}

// --- browsers (Origin passed the rule): 101, then only the close frame ---

#[test]
fn browser_invalid_token_gets_101_then_4401_invalid_token() {
    let key = LocalKey::generate();
    let s = start(&key, &["--allow-origin", APP]);
    run(async {
        let (mut ws, r) = ws_connect(
            &s,
            "/",
            &[("Origin", APP), ("Authorization", "Bearer v4.local.bm9wZQ")],
        )
        .await
        .expect("a browser request gets 101");
        assert_eq!(r.status, 101);
        assert_eq!(expect_close(&mut ws).await, (4401, "invalid token".into()));
    });
    assert_still_serves(&s, &good(&key));
}

#[test]
fn browser_expired_token_gets_4401_token_expired() {
    let key = LocalKey::generate();
    let s = start(&key, &["--allow-origin", APP]);
    let t = key.token(&Claims::new("alice").exp_in(-3600));
    let offer = format!("wsgate, {t}");
    run(async {
        let (mut ws, _) = ws_connect(
            &s,
            "/",
            &[("Origin", APP), ("Sec-WebSocket-Protocol", &offer)],
        )
        .await
        .expect("101");
        assert_eq!(expect_close(&mut ws).await, (4401, "token expired".into()));
    });
    assert_still_serves(&s, &good(&key));
}

#[test]
fn same_origin_cookie_invalid_token_gets_4401() {
    // No --allow-origin: a same-origin cookie request passes the Origin rule.
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let origin = format!("http://{}", s.host());
    let cookie = format!("wsgate_token={}", tamper(&good(&key)));
    run(async {
        let (mut ws, _) = ws_connect(&s, "/", &[("Origin", &origin), ("Cookie", &cookie)])
            .await
            .expect("101");
        assert_eq!(expect_close(&mut ws).await, (4401, "invalid token".into()));
    });
}

#[test]
fn browser_header_token_unchecked_origin_invalid_gets_4401() {
    // No --allow-origin and a header token: the Origin is not checked, so the request
    // passed the rule and is a browser's: 101 then 4401.
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    run(async {
        let (mut ws, _) = ws_connect(
            &s,
            "/",
            &[
                ("Origin", EVIL),
                ("Authorization", "Bearer v4.local.bm9wZQ"),
            ],
        )
        .await
        .expect("101");
        assert_eq!(expect_close(&mut ws).await, (4401, "invalid token".into()));
    });
}

// --- 403: the Origin rule ---

#[test]
fn cookie_cross_origin_without_allow_origin_403() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let cookie = format!("wsgate_token={}", good(&key));
    let r = upgrade_status(&s, "/", &[("Origin", EVIL), ("Cookie", &cookie)]);
    assert_eq!(r.status, 403, "{}", r.head);
    // Other methods are not origin-checked without --allow-origin.
    run(async {
        let mut ws = ws_ok(
            &s,
            &[("Origin", EVIL), ("Authorization", &bearer(&good(&key)))],
        )
        .await;
        assert_echo(&mut ws).await;
        let mut ws = ws_ok(&s, &[("Origin", EVIL)]).await;
        first_message_ok(&mut ws, &good(&key)).await;
    });
    assert_still_serves(&s, &good(&key));
}

#[test]
fn allow_origin_checks_every_method() {
    let key = LocalKey::generate();
    let s = start(
        &key,
        &[
            "--allow-origin",
            APP,
            "--auth",
            "header,protocol,cookie,query,message",
        ],
    );
    let t = good(&key);
    let cookie = format!("wsgate_token={t}");
    let offer = format!("wsgate, {t}");
    let bearer_t = bearer(&t);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("header", vec![("Authorization", &bearer_t)]),
        ("protocol", vec![("Sec-WebSocket-Protocol", &offer)]),
        ("cookie", vec![("Cookie", &cookie)]),
        ("message", vec![]),
    ];
    for (what, mut h) in cases {
        h.push(("Origin", EVIL));
        let r = upgrade_status(&s, "/", &h);
        assert_eq!(r.status, 403, "{what} from a foreign origin:\n{}", r.head);
    }
    let r = upgrade_status(&s, &format!("/?token={t}"), &[("Origin", EVIL)]);
    assert_eq!(r.status, 403, "query from a foreign origin:\n{}", r.head);
    // The allowed origin works, for any method.
    run(async {
        let mut ws = ws_ok(&s, &[("Origin", APP), ("Cookie", &cookie)]).await;
        assert_echo(&mut ws).await;
        let mut ws = ws_ok(&s, &[("Origin", APP)]).await;
        first_message_ok(&mut ws, &t).await;
    });
    // Non-browser requests (no Origin) are not affected.
    assert_still_serves(&s, &t);
}

#[test]
fn allow_origin_is_exact() {
    let key = LocalKey::generate();
    let s = start(&key, &["--allow-origin", APP]);
    let h = bearer(&good(&key));
    for o in [
        "https://app.example.com.evil.net",
        "http://app.example.com",
        "https://app.example.com:8443",
        "null",
    ] {
        let r = upgrade_status(&s, "/", &[("Origin", o), ("Authorization", &h)]);
        assert_eq!(r.status, 403, "origin {o}:\n{}", r.head);
    }
}

#[test]
fn allow_origin_repeatable() {
    let key = LocalKey::generate();
    let s = start(
        &key,
        &[
            "--allow-origin",
            APP,
            "--allow-origin",
            "https://admin.example.com",
        ],
    );
    let h = bearer(&good(&key));
    run(async {
        ws_ok(&s, &[("Origin", APP), ("Authorization", &h)]).await;
        ws_ok(
            &s,
            &[
                ("Origin", "https://admin.example.com"),
                ("Authorization", &h),
            ],
        )
        .await;
    });
    assert_eq!(
        upgrade_status(&s, "/", &[("Origin", EVIL), ("Authorization", &h)]).status,
        403
    );
}

#[test]
fn same_origin_always_allowed() {
    let key = LocalKey::generate();
    // With --allow-origin listing something else, same-origin requests still pass.
    let s = start(&key, &["--allow-origin", APP]);
    let t = good(&key);
    let cookie = format!("wsgate_token={t}");
    let host = s.host();
    let origin = format!("http://{host}");
    run(async {
        let mut ws = ws_ok(&s, &[("Origin", &origin), ("Cookie", &cookie)]).await;
        assert_echo(&mut ws).await;
    });
    // Default ports implied by the scheme, and case-insensitive host comparison.
    let cases = [
        ("example.com", "http://example.com:80"),
        ("example.com:80", "http://example.com"),
        ("example.com", "https://example.com:443"),
        ("example.com:443", "https://example.com"),
        ("Example.COM:8080", "http://example.com:8080"),
        ("example.com", "http://EXAMPLE.com"),
    ];
    run(async {
        for (host, origin) in cases {
            let r = ws_connect(
                &s,
                "/",
                &[("Host", host), ("Origin", origin), ("Cookie", &cookie)],
            )
            .await;
            assert!(
                r.is_ok(),
                "Host {host} / Origin {origin} is same-origin: {:?}",
                r.err().map(|r| r.head)
            );
        }
    });
}

#[test]
fn different_port_or_host_is_cross_origin() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let cookie = format!("wsgate_token={}", good(&key));
    let cases = [
        ("example.com:8080", "http://example.com"),
        ("example.com:443", "http://example.com"),
        ("example.com", "http://example.com:8080"),
        ("example.com", "http://other.com"),
        ("example.com", "http://sub.example.com"),
    ];
    for (host, origin) in cases {
        let r = upgrade_status(
            &s,
            "/",
            &[("Host", host), ("Origin", origin), ("Cookie", &cookie)],
        );
        assert_eq!(r.status, 403, "Host {host} / Origin {origin}:\n{}", r.head);
    }
    assert_still_serves(&s, &good(&key));
}

// --- 503 at --max-connections ---

#[test]
fn max_connections_503_with_retry_after() {
    let key = LocalKey::generate();
    let s = start(&key, &["--max-connections", "1", "--auth-timeout", "30"]);
    run(async {
        // Hold one connection: a session waiting for its first message.
        let mut held = ws_ok(&s, &[]).await;
        let r = upgrade_status(&s, "/", &[("Authorization", &bearer(&good(&key)))]);
        assert_eq!(r.status, 503, "{}", r.head);
        assert_eq!(r.header("retry-after"), Some("1"), "{}", r.head);
        // The held session is undisturbed.
        first_message_ok(&mut held, &good(&key)).await;
        assert_echo(&mut held).await;
    });
}

#[test]
fn max_connections_503_also_for_endpoints() {
    let key = LocalKey::generate();
    let s = start(&key, &["--max-connections", "1", "--auth-timeout", "30"]);
    run(async {
        let _held = ws_ok(&s, &[]).await;
        let r = http(&s, "GET", "/healthz", &[]);
        assert_eq!(r.status, 503, "{}", r.head);
        assert_eq!(r.header("retry-after"), Some("1"));
    });
}

#[test]
fn max_connections_counts_first_message_sessions() {
    // Two slots, both taken by sessions waiting for their first message.
    let key = LocalKey::generate();
    let s = start(&key, &["--max-connections", "2", "--auth-timeout", "30"]);
    run(async {
        let _a = ws_ok(&s, &[]).await;
        let _b = ws_ok(&s, &[]).await;
        let r = upgrade_status(&s, "/", &[]);
        assert_eq!(r.status, 503, "{}", r.head);
    });
}

// --- 431 / head deadline ---

/// A plain `GET /` whose head is exactly `len` bytes (request line through blank line).
fn get_head_of_len(s: &Server, len: usize) -> Vec<u8> {
    let base = request_bytes(&s.host(), "GET", "/", &[("X-Pad", "")]);
    // "X-Pad: \r\n" already present; grow its value.
    let pad = len.checked_sub(base.len()).expect("len too small");
    let req = request_bytes(&s.host(), "GET", "/", &[("X-Pad", &"a".repeat(pad))]);
    assert_eq!(req.len(), len);
    req
}

#[test]
fn head_over_16_kib_is_431_and_exactly_16_kib_is_not() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let r = http_raw(s.addr, &get_head_of_len(&s, 16_385));
    assert_eq!(r.status, 431, "{}", r.head);
    let r = http_raw(s.addr, &get_head_of_len(&s, 16_384));
    assert_eq!(
        r.status, 426,
        "a 16384-byte plain GET is within the limit:\n{}",
        r.head
    );
    assert_still_serves(&s, &good(&key));
}

#[test]
fn upgrade_head_of_exactly_16_kib_with_8_kib_token_upgrades() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = (8185..=8192)
        .rev()
        .find_map(|n| token_of_len(&key, n))
        .unwrap();
    let auth = bearer(&t);
    let base = upgrade_bytes(&s.host(), "/", &[("Authorization", &auth), ("Cookie", "")]);
    let pad = 16_384 - base.len();
    let cookie = format!("c={}", "x".repeat(pad - 2));
    let req = upgrade_bytes(
        &s.host(),
        "/",
        &[("Authorization", &auth), ("Cookie", &cookie)],
    );
    assert_eq!(req.len(), 16_384);
    run(async {
        let (mut ws, _) = ws_raw(s.addr, &req)
            .await
            .unwrap_or_else(|r| panic!("expected 101:\n{}", r.head));
        assert_echo(&mut ws).await;
    });
}

#[test]
fn incomplete_head_is_dropped_after_10_s_without_response() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
    let mut buf = [0u8; 1024];
    match read_uninterrupted(&mut c, &mut buf) {
        Ok(0) => {}
        Ok(n) => panic!(
            "expected the connection dropped without a response, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not dropped within 25 s: {e}"),
    }
    assert_still_serves(&s, &good(&key));
}

#[test]
fn a_crowd_of_stalled_heads_is_cut_at_the_deadline_while_others_are_served() {
    stalled_crowd(&[]);
}

#[test]
fn a_crowd_of_stalled_heads_is_cut_on_every_thread() {
    // With two threads the crowd is spread over two executors (each accepts for
    // itself); the timers' thread wakes the tasks of both.
    stalled_crowd(&["--threads", "2"]);
}

/// 300 connections that never finish their head: each holds a deadline on the
/// connection timers (src/server/timers.rs). An honest client is served meanwhile,
/// and every stalled one is dropped, without a response, at its deadline.
fn stalled_crowd(extra: &[&str]) {
    let key = LocalKey::generate();
    let s = start(&key, extra);
    let mut crowd: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut c = TcpStream::connect(s.addr).unwrap();
            c.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n").as_bytes())
                .unwrap();
            c
        })
        .collect();
    assert_still_serves(&s, &good(&key));
    let started = std::time::Instant::now();
    for (i, c) in crowd.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
        let mut buf = [0u8; 256];
        match read_uninterrupted(c, &mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "stalled connection {i} got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("stalled connection {i} not dropped: {e}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the crowd was not dropped together"
    );
    assert_still_serves(&s, &good(&key));
}

#[test]
fn slow_head_trickle_is_a_total_deadline() {
    // Bytes keep arriving, but the head is never complete: still dropped (total deadline).
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        // Each 1 s read timeout is the pacing of the trickle, not a synchronisation.
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => panic!(
                "unexpected response {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "trickling connection was never dropped"
        );
        if c.write_all(b"X-A: b\r\n").is_err() {
            break;
        }
    }
}

// --- 404 / 426 ---

#[test]
fn upgrade_outside_path_404() {
    let key = LocalKey::generate();
    let s = start(&key, &["--path", "/ws"]);
    let h = bearer(&good(&key));
    let r = upgrade_status(&s, "/other", &[("Authorization", &h)]);
    assert_eq!(r.status, 404, "{}", r.head);
    let r = upgrade_status(&s, "/", &[("Authorization", &h)]);
    assert_eq!(r.status, 404, "{}", r.head);
    run(async {
        let (mut ws, _) = ws_connect(&s, "/ws", &[("Authorization", &h)])
            .await
            .expect("101 on --path");
        assert_echo(&mut ws).await;
    });
}

#[test]
fn plain_get_is_426() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let r = http(&s, "GET", "/", &[]);
    assert_eq!(r.status, 426, "{}", r.head);
    let r = http(
        &s,
        "GET",
        "/some/page",
        &[("Authorization", &bearer(&good(&key)))],
    );
    assert_eq!(r.status, 426, "{}", r.head);
    assert_still_serves(&s, &good(&key));
}

#[test]
fn malformed_upgrades_are_400_and_other_versions_426() {
    // RFC 6455 §4.2.1-2: an HTTP/1.1 GET with version 13 and a 16-byte base64 key,
    // else 400 (426 naming the version we speak); docs/decisions.md.
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let auth = bearer(&good(&key));
    let host = s.host();
    let with = |method: &str, version: &str, ws_version: &str, ws_key: &str| {
        format!(
            "{method} / HTTP/{version}\r\nHost: {host}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: {ws_version}\r\n\
             Sec-WebSocket-Key: {ws_key}\r\nAuthorization: {auth}\r\n\r\n"
        )
    };
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    for (what, request, status) in [
        ("POST", with("POST", "1.1", "13", KEY), 400),
        ("HTTP/1.0", with("GET", "1.0", "13", KEY), 400),
        ("no key", with("GET", "1.1", "13", ""), 400),
        ("short key", with("GET", "1.1", "13", "c2hvcnQ="), 400),
        (
            "key not base64",
            with("GET", "1.1", "13", "!!!!!!!!!!!!!!!!!!!!!!=="),
            400,
        ),
        ("version 8", with("GET", "1.1", "8", KEY), 426),
    ] {
        let r = http_raw(s.addr, request.as_bytes());
        assert_eq!(r.status, status, "{what}: {}", r.head);
        if status == 426 {
            assert_eq!(r.header("sec-websocket-version"), Some("13"), "{what}");
        }
        assert!(!r.has_header("sec-websocket-accept"), "{what}: no upgrade");
        let line = s.wait_log_line(|l| {
            l.contains("event=refuse") && l.contains(&format!("status={status}"))
        });
        assert_eq!(
            log_value(&line, "reason").as_deref(),
            Some("bad_upgrade"),
            "{line}"
        );
    }
    // The same request, well-formed, upgrades.
    let r = http_raw(s.addr, with("GET", "1.1", "13", KEY).as_bytes());
    assert_eq!(r.status, 101, "{}", r.head);
    assert_still_serves(&s, &good(&key));
}

// --- order of refusals (docs/protocol.md#order-of-checks) ---

#[test]
fn order_431_before_404() {
    let key = LocalKey::generate();
    let s = start(&key, &["--path", "/ws"]);
    let pad = "a".repeat(17_000);
    let r = http_raw(
        s.addr,
        &upgrade_bytes(&s.host(), "/elsewhere", &[("X-Pad", &pad)]),
    );
    assert_eq!(r.status, 431, "{}", r.head);
}

#[test]
fn order_404_before_503() {
    let key = LocalKey::generate();
    let s = start(
        &key,
        &[
            "--path",
            "/ws",
            "--max-connections",
            "1",
            "--auth-timeout",
            "30",
        ],
    );
    run(async {
        let (_held, _) = ws_connect(&s, "/ws", &[]).await.expect("101");
        let r = upgrade_status(&s, "/elsewhere", &[]);
        assert_eq!(r.status, 404, "{}", r.head);
    });
}

#[test]
fn order_426_before_503() {
    let key = LocalKey::generate();
    let s = start(&key, &["--max-connections", "1", "--auth-timeout", "30"]);
    run(async {
        let _held = ws_ok(&s, &[]).await;
        let r = http(&s, "GET", "/page", &[]);
        assert_eq!(
            r.status, 426,
            "not an upgrade → 426 comes before 503:\n{}",
            r.head
        );
    });
}

#[test]
fn order_503_before_403() {
    let key = LocalKey::generate();
    let s = start(
        &key,
        &[
            "--max-connections",
            "1",
            "--auth-timeout",
            "30",
            "--allow-origin",
            APP,
        ],
    );
    run(async {
        let _held = ws_ok(&s, &[]).await;
        let r = upgrade_status(&s, "/", &[("Origin", EVIL)]);
        assert_eq!(r.status, 503, "{}", r.head);
    });
}

#[test]
fn order_403_before_401() {
    let key = LocalKey::generate();
    let s = start(&key, &["--allow-origin", APP]);
    let r = upgrade_status(
        &s,
        "/",
        &[("Origin", EVIL), ("Authorization", "Bearer v4.local.bad")],
    );
    assert_eq!(r.status, 403, "{}", r.head);
    let r = upgrade_status(
        &s,
        "/",
        &[("Origin", EVIL), ("Cookie", "wsgate_token=v4.local.bad")],
    );
    assert_eq!(r.status, 403, "{}", r.head);
}

// --- first-message close codes ---

#[test]
fn first_message_timeout_4408() {
    let key = LocalKey::generate();
    let s = start(&key, &["--auth-timeout", "1"]);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (4408, "authentication timeout".into())
        );
    });
    assert_still_serves(&s, &good(&key));
}

#[test]
fn first_message_binary_frame_4401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = good(&key);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        ws.send(Message::binary(t.as_bytes().to_vec()))
            .await
            .unwrap();
        assert_eq!(expect_close(&mut ws).await, (4401, "invalid token".into()));
    });
    assert_still_serves(&s, &t);
}

#[test]
fn first_message_invalid_token_4401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = good(&key);
    let bad_msgs = [
        tamper(&t),
        "hello".into(),
        r#"{"token":"v4.local.nope"}"#.into(),
        r#"{"tok":1}"#.into(),
        String::new(),
    ];
    run(async {
        for m in &bad_msgs {
            let mut ws = ws_ok(&s, &[]).await;
            send_text(&mut ws, m).await;
            assert_eq!(
                expect_close(&mut ws).await,
                (4401, "invalid token".into()),
                "first message {m:?}"
            );
        }
    });
    assert_still_serves(&s, &t);
}

#[test]
fn first_message_expired_token_4401_token_expired() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let t = key.token(&Claims::new("alice").exp_in(-3600));
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &t).await;
        assert_eq!(expect_close(&mut ws).await, (4401, "token expired".into()));
    });
    assert_still_serves(&s, &good(&key));
}

#[test]
fn first_message_token_over_8_kib_4401() {
    let key = LocalKey::generate();
    let s = start(&key, &[]);
    let big = (8193..8200).find_map(|n| token_of_len(&key, n)).unwrap();
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &big).await;
        assert_eq!(expect_close(&mut ws).await, (4401, "invalid token".into()));
    });
    assert_still_serves(&s, &good(&key));
}

// --- 1009 ---

#[test]
fn message_over_max_message_1009() {
    let key = LocalKey::generate();
    let s = start(&key, &["--max-message", "1024"]);
    let t = good(&key);
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let at_limit = "a".repeat(1024);
        send_text(&mut ws, &at_limit).await;
        assert_eq!(recv_text(&mut ws).await, at_limit);
        ws.send(Message::binary(vec![7u8; 1025])).await.unwrap();
        assert_eq!(
            expect_close(&mut ws).await,
            (1009, "message too big".into())
        );
    });
    assert_still_serves(&s, &t);
}
