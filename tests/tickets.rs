//! SPEC §5 `POST /ticket` and §9.7: single-use tickets, accepted by any enabled
//! method, once; ticket sessions end at the minting token's `exp`; CORS.

mod common;
use common::*;
use std::time::Duration;

const APP: &str = "https://app.example.com";

fn post_ticket(s: &Server, headers: &[(&str, &str)]) -> Response {
    let mut h = vec![("Content-Length", "0")];
    h.extend_from_slice(headers);
    http(s, "POST", "/ticket", &h)
}

/// Mints a ticket with a Bearer token; checks the SPEC §5 answer.
fn ticket(s: &Server, token: &str) -> String {
    let r = post_ticket(s, &[("Authorization", &bearer(token))]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.head);
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("JSON body: {:?}", r.body));
    let t = v["ticket"].as_str().expect("ticket").to_owned();
    assert!(t.starts_with("v4.local."), "{t}");
    t
}

#[test]
fn post_ticket_with_bearer() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let r = post_ticket(
        &s,
        &[("Authorization", &bearer(&k.token(&Claims::new("alice"))))],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{}",
        r.head
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(v["ticket"].as_str().unwrap().starts_with("v4.local."));
    assert_eq!(v["expires_in"], 30);
}

#[test]
fn ticket_ttl_option() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--ticket-ttl", "7"]].concat());
    let r = post_ticket(
        &s,
        &[("Authorization", &bearer(&k.token(&Claims::new("alice"))))],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["expires_in"], 7);
}

#[test]
fn post_ticket_with_cookie() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let cookie = format!("wsgate_token={}", k.token(&Claims::new("alice")));
    let r = post_ticket(&s, &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200, "{}", r.head);
    // Cookie is subject to the Origin rule.
    let r = post_ticket(
        &s,
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.head);
    let same = format!("http://{}", s.host());
    let r = post_ticket(&s, &[("Cookie", &cookie), ("Origin", &same)]);
    assert_eq!(r.status, 200, "{}", r.head);
}

#[test]
fn post_ticket_needs_a_valid_token() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    assert_eq!(post_ticket(&s, &[]).status, 401);
    assert_eq!(
        post_ticket(&s, &[("Authorization", "Bearer v4.local.nope")]).status,
        401
    );
    let expired = k.token(&Claims::new("a").exp_in(-3600));
    assert_eq!(
        post_ticket(&s, &[("Authorization", &bearer(&expired))]).status,
        401
    );
}

#[test]
fn wrong_method_on_ticket_is_405() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let r = http(
        &s,
        "GET",
        "/ticket",
        &[("Authorization", &bearer(&k.token(&Claims::new("a"))))],
    );
    assert_eq!(r.status, 405, "{}", r.head);
}

#[test]
fn ticket_cannot_mint_a_ticket() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = ticket(&s, &k.token(&Claims::new("alice")));
    assert_eq!(
        post_ticket(&s, &[("Authorization", &bearer(&t))]).status,
        401
    );
}

#[test]
fn ticket_by_every_method_once() {
    let k = LocalKey::generate();
    let s = Server::start(
        &[
            &k.arg()[..],
            &["--auth", "header,protocol,cookie,query,message"],
        ]
        .concat(),
    );
    let claims = Claims::new("alice");
    let token = k.token(&claims);
    run(async {
        // header
        let t = ticket(&s, &token);
        let mut ws = ws_bearer(&s, &t).await;
        assert_echo(&mut ws).await;
        assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t))]));
        // protocol
        let t = ticket(&s, &token);
        let offer = format!("wsgate, {t}");
        let (mut ws, r) = ws_connect(&s, "/", &[("Sec-WebSocket-Protocol", &offer)])
            .await
            .expect("101");
        assert_eq!(r.header("sec-websocket-protocol"), Some("wsgate"));
        assert_echo(&mut ws).await;
        assert_401(&upgrade_status(
            &s,
            "/",
            &[("Sec-WebSocket-Protocol", &offer)],
        ));
        // cookie
        let t = ticket(&s, &token);
        let cookie = format!("wsgate_token={t}");
        ws_ok(&s, &[("Cookie", &cookie)]).await;
        assert_401(&upgrade_status(&s, "/", &[("Cookie", &cookie)]));
        // query
        let t = ticket(&s, &token);
        let path = format!("/?token={t}");
        assert!(ws_connect(&s, &path, &[]).await.is_ok());
        assert_401(&upgrade_status(&s, &path, &[]));
        // first message: the authenticated frame carries the caller's sub and the
        // minting token's exp (§9.6).
        let t = ticket(&s, &token);
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &t).await;
        assert_eq!(v["sub"], "alice");
        assert_eq!(
            parse_rfc3339(v["exp"].as_str().unwrap()),
            parse_rfc3339(claims.exp())
        );
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &t).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (4401, "ticket already used".into())
        );
    });
    assert_still_serves(&s, &token);
}

#[test]
fn reused_ticket_from_browser_gets_101_then_4401() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--allow-origin", APP]].concat());
    let t = ticket(&s, &k.token(&Claims::new("alice")));
    let offer = format!("wsgate, {t}");
    run(async {
        ws_connect(
            &s,
            "/",
            &[("Origin", APP), ("Sec-WebSocket-Protocol", &offer)],
        )
        .await
        .expect("first use");
        let (mut ws, _) = ws_connect(
            &s,
            "/",
            &[("Origin", APP), ("Sec-WebSocket-Protocol", &offer)],
        )
        .await
        .expect("101");
        assert_eq!(
            expect_close(&mut ws).await,
            (4401, "ticket already used".into())
        );
    });
}

#[test]
fn ticket_session_ends_at_minting_token_exp() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--leeway", "0"]].concat());
    let t = ticket(&s, &k.token(&Claims::new("alice").exp_in(4)));
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        first_message_ok(&mut ws, &t).await;
        assert_eq!(
            expect_close_within(&mut ws, Duration::from_secs(20)).await,
            (4401, "token expired".into())
        );
    });
}

#[test]
fn expired_ticket_is_token_expired_without_leeway() {
    let k = LocalKey::generate();
    // Leeway 60 applies to tokens, not to tickets the server minted itself.
    let s = Server::start(&[&k.arg()[..], &["--ticket-ttl", "1"]].concat());
    let minted_at = now();
    let t = ticket(&s, &k.token(&Claims::new("alice")));
    run(async {
        // Wait until the ticket's exp (≤ minted_at + 2 s at second precision) is past.
        smol::Timer::at(
            std::time::Instant::now() + Duration::from_secs((minted_at + 3 - now()).max(0) as u64),
        )
        .await;
        let mut ws = ws_ok(&s, &[]).await;
        send_text(&mut ws, &t).await;
        assert_eq!(expect_close(&mut ws).await, (4401, "token expired".into()));
    });
}

#[test]
fn tickets_work_on_a_public_key_only_server() {
    let p = PublicKeyPair::generate();
    let s = Server::start(&p.arg());
    let t = ticket(&s, &p.token(&Claims::new("pub")));
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &t).await;
        assert_eq!(v["sub"], "pub");
    });
}

#[test]
fn cors_preflight_for_allowed_origin() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--allow-origin", APP]].concat());
    let r = http(
        &s,
        "OPTIONS",
        "/ticket",
        &[
            ("Origin", APP),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    );
    assert_eq!(r.status, 204, "{}", r.head);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(
        r.header("access-control-allow-headers")
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("authorization"),
        "{}",
        r.head
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap_or("")
            .contains("POST"),
        "{}",
        r.head
    );
    assert!(
        r.header("vary")
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("origin"),
        "{}",
        r.head
    );

    // The POST answers (200 and 401) carry the same two headers, never `*`.
    let ok = post_ticket(
        &s,
        &[
            ("Origin", APP),
            ("Authorization", &bearer(&k.token(&Claims::new("a")))),
        ],
    );
    assert_eq!(ok.status, 200, "{}", ok.head);
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let no = post_ticket(&s, &[("Origin", APP)]);
    assert_eq!(no.status, 401, "{}", no.head);
    assert_eq!(no.header("access-control-allow-origin"), Some(APP));
    assert_eq!(no.header("access-control-allow-credentials"), Some("true"));
}

#[test]
fn cors_other_origins_get_no_cors_headers() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--allow-origin", APP]].concat());
    let evil = "https://evil.example";
    let r = http(
        &s,
        "OPTIONS",
        "/ticket",
        &[("Origin", evil), ("Access-Control-Request-Method", "POST")],
    );
    assert!(!r.has_header("access-control-allow-origin"), "{}", r.head);
    assert!(
        !r.has_header("access-control-allow-credentials"),
        "{}",
        r.head
    );
    let r = post_ticket(
        &s,
        &[
            ("Origin", evil),
            ("Authorization", &bearer(&k.token(&Claims::new("a")))),
        ],
    );
    assert!(!r.has_header("access-control-allow-origin"), "{}", r.head);
    // And without --allow-origin nobody gets them.
    let plain = Server::start(&k.arg());
    let r = http(
        &plain,
        "OPTIONS",
        "/ticket",
        &[("Origin", APP), ("Access-Control-Request-Method", "POST")],
    );
    assert!(!r.has_header("access-control-allow-origin"), "{}", r.head);
}

#[test]
fn ticket_from_another_ip_is_forbidden_and_stays_unused() {
    use std::net::Ipv4Addr;
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--allow-origin", APP]].concat());
    let t = ticket(&s, &k.token(&Claims::new("alice"))); // minted from 127.0.0.1
    let other = Ipv4Addr::new(127, 0, 0, 2);
    run(async {
        // Non-browser, handshake method: 403.
        let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&t))]);
        match ws_raw_from(other, s.addr, &req).await {
            Err(r) => assert_eq!(r.status, 403, "{}", r.head),
            Ok((_, r)) => panic!("a ticket from another IP was accepted:\n{}", r.head),
        }
        // Browser (allowed Origin): 101 then 4403 `forbidden`.
        let req = upgrade_bytes(
            &s.host(),
            "/",
            &[("Origin", APP), ("Authorization", &bearer(&t))],
        );
        let (mut ws, _) = ws_raw_from(other, s.addr, &req)
            .await
            .expect("101 for a browser");
        assert_eq!(expect_close(&mut ws).await, (4403, "forbidden".into()));
        // First message: 4403 `forbidden`.
        let req = upgrade_bytes(&s.host(), "/", &[]);
        let (mut ws, _) = ws_raw_from(other, s.addr, &req).await.expect("101");
        send_text(&mut ws, &t).await;
        assert_eq!(expect_close(&mut ws).await, (4403, "forbidden".into()));
        // The refusals did not use it up: the rightful IP still can, once.
        let mut ws = ws_bearer(&s, &t).await;
        assert_echo(&mut ws).await;
    });
}
