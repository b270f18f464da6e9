//! Where the token comes from (`docs/protocol.md#methods`): each handshake method, the
//! subprotocol answer, first-message authentication and precedence without fallback.

mod common;
use common::*;

#[test]
fn header_bearer_token_upgrades_and_echoes() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &token).await;
        assert_echo(&mut ws).await;
    });
}

#[test]
fn header_token_via_library_client() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let (mut ws, resp) = ws_client(&s, "/", &[("Authorization", &bearer(&token))])
            .await
            .expect("handshake");
        assert_eq!(resp.status().as_u16(), 101);
        assert_echo(&mut ws).await;
    });
}

#[test]
fn protocol_token_answers_first_non_token_entry() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let offer = format!("wsgate, {token}");
        let (mut ws, r) = ws_connect(&s, "/", &[("Sec-WebSocket-Protocol", &offer)])
            .await
            .expect("101");
        assert_eq!(
            r.header("sec-websocket-protocol"),
            Some("wsgate"),
            "{}",
            r.head
        );
        assert!(
            !r.head.contains(&token),
            "the token must never be echoed:\n{}",
            r.head
        );
        assert_echo(&mut ws).await;

        // Token first, then two others: the first non-token entry is answered.
        let offer = format!("{token}, chat, wsgate");
        let (_ws, r) = ws_connect(&s, "/", &[("Sec-WebSocket-Protocol", &offer)])
            .await
            .expect("101");
        assert_eq!(
            r.header("sec-websocket-protocol"),
            Some("chat"),
            "{}",
            r.head
        );
        assert!(!r.head.contains(&token), "{}", r.head);
    });
}

#[test]
fn protocol_token_via_library_client() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let offer = format!("wsgate, {token}");
        let (mut ws, resp) = ws_client(&s, "/", &[("Sec-WebSocket-Protocol", &offer)])
            .await
            .expect("handshake");
        assert_eq!(
            resp.headers().get("sec-websocket-protocol").unwrap(),
            "wsgate"
        );
        assert_echo(&mut ws).await;
    });
}

#[test]
fn protocol_token_only_entry_gets_no_protocol_header() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let (mut ws, r) = ws_connect(&s, "/", &[("Sec-WebSocket-Protocol", &token)])
            .await
            .expect("101");
        assert!(
            !r.has_header("sec-websocket-protocol"),
            "token as the only entry: no Sec-WebSocket-Protocol:\n{}",
            r.head
        );
        assert_echo(&mut ws).await;
    });
}

#[test]
fn protocol_public_token_is_recognised() {
    let kp = PublicKeyPair::generate();
    let s = Server::start(&kp.arg());
    let token = kp.token(&Claims::new("alice"));
    run(async {
        let offer = format!("wsgate, {token}");
        let (mut ws, r) = ws_connect(&s, "/", &[("Sec-WebSocket-Protocol", &offer)])
            .await
            .expect("101");
        assert_eq!(r.header("sec-websocket-protocol"), Some("wsgate"));
        assert_echo(&mut ws).await;
    });
}

#[test]
fn cookie_default_name() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let cookie = format!("theme=dark; wsgate_token={token}; lang=en");
        let mut ws = ws_ok(&s, &[("Cookie", &cookie)]).await;
        assert_echo(&mut ws).await;
    });
}

#[test]
fn cookie_custom_name() {
    let key = LocalKey::generate();
    let s = Server::start(&[&key.arg()[..], &["--cookie", "sess", "--auth", "cookie"]].concat());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let cookie = format!("sess={token}");
        let mut ws = ws_ok(&s, &[("Cookie", &cookie)]).await;
        assert_echo(&mut ws).await;
    });
    // The default name no longer carries the token: no token, message disabled → 401.
    let cookie = format!("wsgate_token={token}");
    assert_401_no_token(&upgrade_status(&s, "/", &[("Cookie", &cookie)]));
}

#[test]
fn query_token_only_when_enabled() {
    let key = LocalKey::generate();
    let token = key.token(&Claims::new("alice"));
    let path = format!("/?token={token}");

    let on = Server::start(&[&key.arg()[..], &["--auth", "header,query"]].concat());
    run(async {
        let mut ws = ws_ok_path(&on, &path).await;
        assert_echo(&mut ws).await;
    });

    // Off by default (here: header only, so no token and no message auth → 401).
    let off = Server::start(&[&key.arg()[..], &["--auth", "header"]].concat());
    assert_401_no_token(&upgrade_status(&off, &path, &[]));
}

#[test]
fn query_ignored_with_default_methods_falls_to_first_message() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        // Query is off by default: the request has no token, so the session waits
        // for the first message, and authenticates with it.
        let mut ws = ws_ok_path(&s, &format!("/?token={token}")).await;
        let v = first_message_ok(&mut ws, &token).await;
        assert_eq!(v["sub"], "alice");
    });
}

async fn ws_ok_path(s: &Server, path: &str) -> Ws {
    match ws_connect(s, path, &[]).await {
        Ok((ws, _)) => ws,
        Err(r) => panic!("expected 101 on {path}, got:\n{}", r.head),
    }
}

#[test]
fn first_message_raw_token() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let claims = Claims::new("alice");
    let token = key.token(&claims);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &token).await;
        assert_eq!(v["type"], "authenticated");
        assert_eq!(v["sub"], "alice");
        let exp = v["exp"].as_str().expect("exp is an RFC 3339 string");
        assert_eq!(
            parse_rfc3339(exp),
            parse_rfc3339(claims.exp()),
            "exp {exp} vs {}",
            claims.exp()
        );
        assert_echo(&mut ws).await;
    });
}

#[test]
fn first_message_json_token_with_extra_fields() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let claims = Claims::new("bob");
    let token = key.token(&claims);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let msg = serde_json::json!({"type": "auth", "token": token, "extra": [1, 2]}).to_string();
        let v = first_message_ok(&mut ws, &msg).await;
        assert_eq!(v["sub"], "bob");
        assert_eq!(
            parse_rfc3339(v["exp"].as_str().unwrap()),
            parse_rfc3339(claims.exp())
        );
        assert_echo(&mut ws).await;
    });
}

#[test]
fn first_message_whitespace_around_raw_token_ignored() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("carol"));
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &format!("  \n{token}\r\n ")).await;
        assert_eq!(v["sub"], "carol");
    });
}

#[test]
fn first_message_public_token() {
    let kp = PublicKeyPair::generate();
    let s = Server::start(&kp.arg());
    let token = kp.token(&Claims::new("dave"));
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &token).await;
        assert_eq!(v["sub"], "dave");
        assert_echo(&mut ws).await;
    });
}

#[test]
fn first_message_via_library_client() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("erin"));
    run(async {
        let (mut ws, _) = ws_client(&s, "/", &[]).await.expect("handshake");
        let v = first_message_ok(&mut ws, &token).await;
        assert_eq!(v["sub"], "erin");
    });
}

#[test]
fn ping_before_first_message_is_answered() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let token = key.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        match recv(&mut ws).await {
            Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
            m => panic!("expected a pong, got {m:?}"),
        }
        first_message_ok(&mut ws, &token).await;
    });
}

#[test]
fn first_message_disabled_means_401_without_token() {
    let key = LocalKey::generate();
    let s = Server::start(&[&key.arg()[..], &["--auth", "header,protocol,cookie"]].concat());
    assert_401_no_token(&upgrade_status(&s, "/", &[]));
    assert_still_serves(&s, &key.token(&Claims::new("alice")));
}

#[test]
fn disabled_method_carrier_is_not_a_token() {
    // --auth cookie: an Authorization header is not looked at; the cookie decides.
    let key = LocalKey::generate();
    let s = Server::start(&[&key.arg()[..], &["--auth", "cookie"]].concat());
    let good = key.token(&Claims::new("alice"));
    let cookie = format!("wsgate_token={good}");
    run(async {
        let mut ws = ws_ok(
            &s,
            &[
                ("Authorization", "Bearer v4.local.garbage"),
                ("Cookie", &cookie),
            ],
        )
        .await;
        assert_echo(&mut ws).await;
    });
    // And a header token alone does not authenticate.
    assert_401_no_token(&upgrade_status(
        &s,
        "/",
        &[("Authorization", &bearer(&good))],
    ));
}

// --- precedence without fallback (the first method present decides) ---

#[test]
fn precedence_invalid_header_beats_valid_cookie() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let good = key.token(&Claims::new("alice"));
    let cookie = format!("wsgate_token={good}");
    let r = upgrade_status(
        &s,
        "/",
        &[
            ("Authorization", "Bearer v4.local.invalid"),
            ("Cookie", &cookie),
        ],
    );
    assert_401(&r);
    assert_still_serves(&s, &good);
}

#[test]
fn precedence_invalid_header_beats_valid_protocol() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let good = key.token(&Claims::new("alice"));
    let offer = format!("wsgate, {good}");
    let r = upgrade_status(
        &s,
        "/",
        &[
            ("Authorization", "Bearer v4.local.invalid"),
            ("Sec-WebSocket-Protocol", &offer),
        ],
    );
    assert_401(&r);
}

#[test]
fn precedence_invalid_protocol_beats_valid_cookie() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let good = key.token(&Claims::new("alice"));
    let cookie = format!("wsgate_token={good}");
    let bad = tamper(&good);
    let offer = format!("wsgate, {bad}");
    let r = upgrade_status(
        &s,
        "/",
        &[("Sec-WebSocket-Protocol", &offer), ("Cookie", &cookie)],
    );
    assert_401(&r);
}

#[test]
fn precedence_invalid_cookie_beats_valid_query() {
    let key = LocalKey::generate();
    let s = Server::start(
        &[
            &key.arg()[..],
            &["--auth", "header,protocol,cookie,query,message"],
        ]
        .concat(),
    );
    let good = key.token(&Claims::new("alice"));
    let r = upgrade_status(
        &s,
        &format!("/?token={good}"),
        &[("Cookie", "wsgate_token=v4.local.nope")],
    );
    assert_401(&r);
}

#[test]
fn precedence_valid_header_wins_over_invalid_cookie() {
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let good = key.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_ok(
            &s,
            &[
                ("Authorization", &bearer(&good)),
                ("Cookie", "wsgate_token=v4.local.nope"),
            ],
        )
        .await;
        assert_echo(&mut ws).await;
    });
}

#[test]
fn non_bearer_authorization_is_not_a_header_token() {
    // Another scheme is not a header token, so the cookie decides.
    let key = LocalKey::generate();
    let s = Server::start(&key.arg());
    let good = key.token(&Claims::new("alice"));
    let cookie = format!("wsgate_token={good}");
    run(async {
        let mut ws = ws_ok(
            &s,
            &[("Authorization", "Basic dXNlcjpwYXNz"), ("Cookie", &cookie)],
        )
        .await;
        assert_echo(&mut ws).await;
        // Alone, it is "no token": first-message auth follows.
        let mut ws = ws_ok(&s, &[("Authorization", "Basic dXNlcjpwYXNz")]).await;
        first_message_ok(&mut ws, &good).await;
    });
}
