//! Black-box tests of `POST /ticket` and ticket use (`docs/protocol.md#tickets`; issue 3
//! items 1–3): minting, single use by every enabled method, IP binding, the session bound
//! by the minting token's `exp`, expiry without leeway, the bounded replay cache and CORS.
//!
//! Everything runs against the real binary on 127.0.0.1 port 0; the "other IP" is
//! 127.0.0.2 (a client socket bound before connect, see `common::connect_from`).
//! Every wait is bounded; the only waits on the wall clock are for `exp` claims,
//! which are wall-clock seconds by nature.

mod common;
use common::*;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const ALL_METHODS: &str = "header,protocol,cookie,query,message";

fn serve(k: &LocalKey, extra: &[&str]) -> Server {
    Server::start(&[&k.arg()[..], extra].concat())
}

fn with_len<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("Content-Length", "0")];
    h.extend_from_slice(headers);
    h
}

/// `POST /ticket` from 127.0.0.1.
fn post_ticket(s: &Server, headers: &[(&str, &str)]) -> Response {
    http(s, "POST", "/ticket", &with_len(headers))
}

/// `POST /ticket` from another loopback source address.
fn post_ticket_from(src: Ipv4Addr, s: &Server, headers: &[(&str, &str)]) -> Response {
    let mut c = connect_from(src, s.addr);
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(&request_bytes(
        &s.host(),
        "POST",
        "/ticket",
        &with_len(headers),
    ))
    .unwrap();
    read_response(&mut c)
}

/// Checks a `POST /ticket` success answer and returns (ticket, expires_in).
fn ticket_of(r: &Response) -> (String, i64) {
    assert_eq!(r.status, 200, "POST /ticket:\n{}", r.head);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.head);
    let ct = r.header("content-type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "Content-Type: {ct:?}\n{}",
        r.head
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("body is not JSON: {:?}", String::from_utf8_lossy(&r.body)));
    let obj = v.as_object().expect("a JSON object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["expires_in", "ticket"], "{v}");
    let t = v["ticket"].as_str().expect("ticket is a string").to_owned();
    assert!(t.starts_with("v4.local."), "ticket {t:?}");
    (
        t,
        v["expires_in"].as_i64().expect("expires_in is an integer"),
    )
}

/// A ticket minted with `Authorization: Bearer token` from 127.0.0.1.
fn ticket(s: &Server, token: &str) -> String {
    ticket_of(&post_ticket(s, &[("Authorization", &bearer(token))])).0
}

/// The claims of a ticket sealed with `k` (tickets are sealed with the first loaded
/// k4.local key).
fn open_ticket(k: &LocalKey, t: &str) -> serde_json::Value {
    use pasetors::token::UntrustedToken;
    use pasetors::version4::LocalToken;
    use pasetors::{Local, version4::V4};
    let u = UntrustedToken::<Local, V4>::try_from(t).expect("ticket parses as v4.local");
    let trusted = LocalToken::decrypt(&k.key, &u, None, None)
        .expect("the ticket is sealed with the first loaded k4.local key");
    serde_json::from_str(trusted.payload()).expect("ticket claims are JSON")
}

/// Waits (bounded) until the wall clock is at least `t` (unix seconds).
fn wait_until_unix(t: i64) {
    let limit = std::time::Instant::now() + Duration::from_secs((t - now()).max(0) as u64 + 3);
    while now() < t {
        assert!(std::time::Instant::now() < limit, "clock did not reach {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Presenting a ticket

/// How a ticket (or token) is presented.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Header,
    Protocol,
    Cookie,
    Query,
    Message,
}

const HANDSHAKE_VIAS: [Via; 4] = [Via::Header, Via::Protocol, Via::Cookie, Via::Query];

/// The upgrade request presenting `t` by `via` (no token in it for `Message`).
fn upgrade_request(s: &Server, via: Via, t: &str, origin: Option<&str>) -> Vec<u8> {
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut path = "/".to_owned();
    match via {
        Via::Header => headers.push(("Authorization".into(), bearer(t))),
        Via::Protocol => headers.push(("Sec-WebSocket-Protocol".into(), format!("wsgate, {t}"))),
        Via::Cookie => headers.push(("Cookie".into(), format!("theme=dark; wsgate_token={t}"))),
        Via::Query => path = format!("/?token={t}"),
        Via::Message => {}
    }
    if let Some(o) = origin {
        headers.push(("Origin".into(), o.into()));
    }
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    upgrade_bytes(&s.host(), &path, &h)
}

async fn upgrade_from(
    src: Option<Ipv4Addr>,
    s: &Server,
    req: &[u8],
) -> Result<(Ws, Response), Response> {
    match src {
        Some(ip) => ws_raw_from(ip, s.addr, req).await,
        None => ws_raw(s.addr, req).await,
    }
}

/// Presents `t` and expects an authenticated echo session.
async fn use_ok(s: &Server, src: Option<Ipv4Addr>, via: Via, t: &str, origin: Option<&str>) -> Ws {
    let req = upgrade_request(s, via, t, origin);
    let (mut ws, r) = match upgrade_from(src, s, &req).await {
        Ok(x) => x,
        Err(r) => panic!("{via:?}: expected 101, got:\n{}", r.head),
    };
    match via {
        Via::Message => {
            let v = first_message_ok(&mut ws, t).await;
            assert!(v["sub"].is_string(), "{v}");
        }
        Via::Protocol => assert_eq!(
            r.header("sec-websocket-protocol"),
            Some("wsgate"),
            "the token is never echoed:\n{}",
            r.head
        ),
        _ => {}
    }
    assert_echo(&mut ws).await;
    ws
}

/// What a refused presentation got.
#[derive(Debug)]
enum Refused {
    /// An HTTP answer without upgrade.
    Http(Response),
    /// 101, then only a close frame.
    Close(u16, String),
}

impl Refused {
    fn status(&self) -> u16 {
        match self {
            Refused::Http(r) => r.status,
            Refused::Close(..) => 101,
        }
    }
    fn close(&self) -> (u16, &str) {
        match self {
            Refused::Close(c, r) => (*c, r.as_str()),
            Refused::Http(r) => panic!("expected 101 + close frame, got:\n{}", r.head),
        }
    }
    fn http(&self) -> &Response {
        match self {
            Refused::Http(r) => r,
            Refused::Close(c, r) => panic!("expected an HTTP refusal, got 101 + close {c} {r:?}"),
        }
    }
}

/// Presents `t` and expects a refusal (HTTP status, or 101 then a close frame only).
async fn use_refused(
    s: &Server,
    src: Option<Ipv4Addr>,
    via: Via,
    t: &str,
    origin: Option<&str>,
) -> Refused {
    let req = upgrade_request(s, via, t, origin);
    match upgrade_from(src, s, &req).await {
        Err(r) => Refused::Http(r),
        Ok((mut ws, _)) => {
            if via == Via::Message {
                send_text(&mut ws, t).await;
            }
            let (c, r) = expect_close(&mut ws).await;
            Refused::Close(c, r)
        }
    }
}

// ---------------------------------------------------------------------------
// POST /ticket

#[test]
fn post_ticket_by_bearer_answers_json_no_store() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    let before = now();
    let r = post_ticket(
        &s,
        &[("Authorization", &bearer(&k.token(&Claims::new("alice"))))],
    );
    let after = now();
    let (t1, expires_in) = ticket_of(&r);
    assert_eq!(expires_in, 30, "default --ticket-ttl");

    // A ticket holds the caller's sub, a random jti, exp = now + --ticket-ttl.
    let c = open_ticket(&k, &t1);
    assert_eq!(c["sub"], "alice", "{c}");
    let jti1 = c["jti"].as_str().expect("jti").to_owned();
    assert!(!jti1.is_empty());
    let exp = parse_rfc3339(c["exp"].as_str().expect("exp")).expect("RFC 3339 exp");
    assert!(
        (before + 30..=after + 30).contains(&exp),
        "exp {exp} not now+30 ({before}..{after})"
    );

    let t2 = ticket(&s, &k.token(&Claims::new("alice")));
    assert_ne!(t1, t2);
    assert_ne!(
        open_ticket(&k, &t2)["jti"].as_str(),
        Some(jti1.as_str()),
        "random jti"
    );
}

#[test]
fn ticket_ttl_option_sets_expires_in_and_exp() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--ticket-ttl", "7"]);
    let before = now();
    let (t, expires_in) = ticket_of(&post_ticket(
        &s,
        &[("Authorization", &bearer(&k.token(&Claims::new("alice"))))],
    ));
    let after = now();
    assert_eq!(expires_in, 7);
    let exp = parse_rfc3339(open_ticket(&k, &t)["exp"].as_str().unwrap()).unwrap();
    assert!((before + 7..=after + 7).contains(&exp), "exp {exp}");
}

#[test]
fn post_ticket_by_cookie() {
    let k = LocalKey::generate();
    let token = k.token(&Claims::new("carol"));
    let s = serve(&k, &[]);
    let (t, n) = ticket_of(&post_ticket(
        &s,
        &[("Cookie", &format!("a=1; wsgate_token={token}; b=2"))],
    ));
    assert_eq!(n, 30);
    assert_eq!(open_ticket(&k, &t)["sub"], "carol");

    // `--cookie NAME` names the cookie.
    let s = serve(&k, &["--cookie", "sid"]);
    ticket_of(&post_ticket(&s, &[("Cookie", &format!("sid={token}"))]));
    assert_401_no_token_or_invalid(&post_ticket(
        &s,
        &[("Cookie", &format!("wsgate_token={token}"))],
    ));
}

/// 401 for `POST /ticket` without a valid token.
fn assert_401_no_token_or_invalid(r: &Response) {
    assert_eq!(r.status, 401, "expected 401, got:\n{}", r.head);
    assert!(!r.body.starts_with(b"{\"ticket\""), "no ticket on 401");
}

#[test]
fn post_ticket_without_a_valid_token_is_401() {
    let k = LocalKey::generate();
    let other = LocalKey::generate();
    let s = serve(&k, &[]);
    let good = k.token(&Claims::new("alice"));
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no token", vec![]),
        ("empty bearer", vec![("Authorization", "Bearer ".into())]),
        (
            "garbage",
            vec![("Authorization", "Bearer v4.local.nope".into())],
        ),
        ("tampered", vec![("Authorization", bearer(&tamper(&good)))]),
        (
            "wrong key",
            vec![("Authorization", bearer(&other.token(&Claims::new("a"))))],
        ),
        (
            "expired",
            vec![(
                "Authorization",
                bearer(&k.token(&Claims::new("a").exp_in(-3600))),
            )],
        ),
        (
            "not yet valid",
            vec![(
                "Authorization",
                bearer(&k.token(&Claims::new("a").nbf_in(3600))),
            )],
        ),
        (
            "bad cookie",
            vec![("Cookie", "wsgate_token=v4.local.nope".into())],
        ),
    ];
    for (what, headers) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = post_ticket(&s, &h);
        assert_eq!(r.status, 401, "{what}: expected 401, got:\n{}", r.head);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("v4.local."),
            "{what}"
        );
        // Still serving after each refusal.
        ticket(&s, &good);
    }
    assert_still_serves(&s, &good);
}

#[test]
fn a_ticket_cannot_mint_a_ticket() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    let t = ticket(&s, &k.token(&Claims::new("alice")));
    let r = post_ticket(&s, &[("Authorization", &bearer(&t))]);
    assert_eq!(r.status, 401, "ticket by Bearer:\n{}", r.head);
    let t2 = ticket(&s, &k.token(&Claims::new("alice")));
    let r = post_ticket(&s, &[("Cookie", &format!("wsgate_token={t2}"))]);
    assert_eq!(r.status, 401, "ticket by cookie:\n{}", r.head);
    // Neither refusal used the tickets up.
    run(async {
        use_ok(&s, None, Via::Header, &t, None).await;
        use_ok(&s, None, Via::Message, &t2, None).await;
    });
}

#[test]
fn wrong_method_on_ticket_is_405() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    let auth = bearer(&k.token(&Claims::new("alice")));
    for m in ["GET", "PUT", "DELETE", "PATCH"] {
        let r = http(&s, m, "/ticket", &with_len(&[("Authorization", &auth)]));
        assert_eq!(r.status, 405, "{m} /ticket:\n{}", r.head);
        assert!(!String::from_utf8_lossy(&r.body).contains("v4.local."));
    }
    ticket(&s, &k.token(&Claims::new("alice")));
}

#[test]
fn cookie_post_from_a_foreign_origin_is_403() {
    let k = LocalKey::generate();
    let token = k.token(&Claims::new("alice"));
    let cookie = format!("wsgate_token={token}");

    // Without --allow-origin: only cookie requests are checked (the Origin rule).
    let s = serve(&k, &[]);
    let r = post_ticket(&s, &[("Cookie", &cookie), ("Origin", EVIL)]);
    assert_eq!(r.status, 403, "cookie + foreign Origin:\n{}", r.head);
    assert!(!String::from_utf8_lossy(&r.body).contains("v4.local."));
    let same = format!("http://{}", s.host());
    ticket_of(&post_ticket(&s, &[("Cookie", &cookie), ("Origin", &same)]));
    ticket_of(&post_ticket(&s, &[("Cookie", &cookie)]));
    // A Bearer request is not a cookie request: not subject to the rule without a list.
    ticket_of(&post_ticket(
        &s,
        &[("Authorization", &bearer(&token)), ("Origin", EVIL)],
    ));

    // With --allow-origin: the listed origin passes, others do not.
    let s = serve(&k, &["--allow-origin", APP]);
    let r = post_ticket(&s, &[("Cookie", &cookie), ("Origin", EVIL)]);
    assert_eq!(r.status, 403, "cookie + unlisted Origin:\n{}", r.head);
    ticket_of(&post_ticket(&s, &[("Cookie", &cookie), ("Origin", APP)]));
    assert_still_serves(&s, &token);
}

// ---------------------------------------------------------------------------
// Using a ticket

#[test]
fn a_ticket_works_once_by_every_enabled_method() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--auth", ALL_METHODS, "--allow-origin", APP]);
    let token = k.token(&Claims::new("alice"));
    run(async {
        for via in HANDSHAKE_VIAS.into_iter().chain([Via::Message]) {
            let t = ticket(&s, &token);
            let mut ws = use_ok(&s, None, via, &t, None).await;

            // Second use, no Origin (not a browser).
            let r = use_refused(&s, None, via, &t, None).await;
            if via == Via::Message {
                assert_eq!(r.close(), (4401, "ticket already used"), "{via:?}");
            } else {
                assert_401(r.http());
            }
            // Third use, from a browser on an allowed origin: 101 then 4401.
            let r = use_refused(&s, None, via, &t, Some(APP)).await;
            assert_eq!(r.close(), (4401, "ticket already used"), "{via:?} + Origin");

            // The first session is unaffected by the replays.
            assert_echo(&mut ws).await;
        }
        // First message as JSON `{"token": …}`.
        let t = ticket(&s, &token);
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &format!(r#"{{"token":"{t}"}}"#)).await;
        assert_eq!(v["sub"], "alice");
        let r = use_refused(&s, None, Via::Message, &t, None).await;
        assert_eq!(r.close(), (4401, "ticket already used"));
    });
    assert_still_serves(&s, &token);
}

#[test]
fn a_ticket_used_by_one_method_is_used_for_all() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--auth", ALL_METHODS]);
    let token = k.token(&Claims::new("alice"));
    let t = ticket(&s, &token);
    run(async {
        let _ws = use_ok(&s, None, Via::Cookie, &t, None).await;
        for via in [Via::Header, Via::Protocol, Via::Query] {
            assert_401(use_refused(&s, None, via, &t, None).await.http());
        }
        let r = use_refused(&s, None, Via::Message, &t, None).await;
        assert_eq!(r.close(), (4401, "ticket already used"));
    });
}

#[test]
fn a_ticket_from_another_ip_is_forbidden_and_stays_usable() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--auth", ALL_METHODS, "--allow-origin", APP]);
    let token = k.token(&Claims::new("alice"));
    run(async {
        for via in HANDSHAKE_VIAS.into_iter().chain([Via::Message]) {
            let t = ticket(&s, &token); // fetched from 127.0.0.1
            // Not a browser: 403 at the handshake (4403 after upgrade for first message).
            let r = use_refused(&s, Some(OTHER_IP), via, &t, None).await;
            if via == Via::Message {
                assert_eq!(r.close(), (4403, "forbidden"), "{via:?}");
            } else {
                assert_eq!(r.status(), 403, "{via:?}: {r:?}");
                assert!(!r.http().has_header("sec-websocket-accept"));
            }
            // A browser on an allowed origin: 101 then 4403 `forbidden`.
            let r = use_refused(&s, Some(OTHER_IP), via, &t, Some(APP)).await;
            assert_eq!(r.close(), (4403, "forbidden"), "{via:?} + Origin");

            // The refusals did not use it: the rightful IP can, once.
            let mut ws = use_ok(&s, None, via, &t, None).await;
            let r = use_refused(&s, None, via, &t, Some(APP)).await;
            assert_eq!(r.close(), (4401, "ticket already used"), "{via:?}");
            assert_echo(&mut ws).await;
        }

        // The other way round: fetched from 127.0.0.2, refused from 127.0.0.1.
        let (t, _) = ticket_of(&post_ticket_from(
            OTHER_IP,
            &s,
            &[("Authorization", &bearer(&token))],
        ));
        assert_eq!(
            use_refused(&s, None, Via::Header, &t, None).await.status(),
            403
        );
        use_ok(&s, Some(OTHER_IP), Via::Header, &t, None).await;
        assert_401(
            use_refused(&s, Some(OTHER_IP), Via::Header, &t, None)
                .await
                .http(),
        );
    });
    assert_still_serves(&s, &token);
}

#[test]
fn a_ticket_session_ends_at_the_minting_tokens_exp() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--leeway", "0", "--ticket-ttl", "30"]);
    let claims = Claims::new("alice").exp_in(3);
    let token_exp = parse_rfc3339(claims.exp()).unwrap();
    let token = k.token(&claims);
    let t_msg = ticket(&s, &token);
    let t_hdr = ticket(&s, &token);
    run(async {
        let mut by_msg = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut by_msg, &t_msg).await;
        assert_eq!(v["sub"], "alice", "{v}");
        // The frame's exp is the minting token's, not the ticket's (now+30).
        assert_eq!(
            parse_rfc3339(v["exp"].as_str().expect("exp")),
            Some(token_exp),
            "authenticated frame {v} vs token exp {}",
            claims.exp()
        );
        let mut by_hdr = use_ok(&s, None, Via::Header, &t_hdr, None).await;

        let limit = Duration::from_secs((token_exp - now()).max(0) as u64 + 10);
        for ws in [&mut by_msg, &mut by_hdr] {
            assert_eq!(
                expect_close_within(ws, limit).await,
                (4401, "token expired".into())
            );
            let at = now();
            assert!(
                at >= token_exp,
                "closed at {at}, before the token's exp {token_exp}"
            );
            assert!(
                at < token_exp + 15,
                "closed at {at}, long after exp {token_exp}"
            );
        }
    });
    let fresh = k.token(&Claims::new("bob"));
    assert_still_serves(&s, &fresh);
}

#[test]
fn expired_ticket_is_token_expired_without_leeway_and_sessions_outlive_it() {
    let k = LocalKey::generate();
    // Default --leeway 60 applies to tokens, never to a ticket's own exp.
    let s = serve(&k, &["--ticket-ttl", "1", "--allow-origin", APP]);
    let token = k.token(&Claims::new("alice"));
    // Start just after a second boundary so the 1 s ticket used at once is still valid.
    wait_until_unix(now() + 1);
    let t_open = ticket(&s, &token);
    let tickets: Vec<String> = (0..3).map(|_| ticket(&s, &token)).collect();
    let minted_by = now();
    run(async {
        // A session opened by a ticket lasts until the token's exp, not the ticket's.
        let mut open = use_ok(&s, None, Via::Header, &t_open, None).await;

        // exp ≤ minted_by + 1 (whole seconds): wait until it is strictly past.
        smol::unblock(move || wait_until_unix(minted_by + 2)).await;

        assert_401(
            use_refused(&s, None, Via::Header, &tickets[0], None)
                .await
                .http(),
        );
        let r = use_refused(&s, None, Via::Header, &tickets[1], Some(APP)).await;
        assert_eq!(r.close(), (4401, "token expired"));
        let r = use_refused(&s, None, Via::Message, &tickets[2], None).await;
        assert_eq!(r.close(), (4401, "token expired"));

        assert_echo(&mut open).await;
    });
    assert_still_serves(&s, &token);
}

#[test]
fn tickets_work_on_a_server_with_only_public_keys() {
    let p = PublicKeyPair::generate();
    let s = Server::start(&p.arg());
    let token = p.token(&Claims::new("pub"));
    let t = ticket(&s, &token);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &t).await;
        assert_eq!(v["sub"], "pub");
        assert_echo(&mut ws).await;
        let r = use_refused(&s, None, Via::Header, &t, None).await;
        assert_401(r.http());
    });
}

// ---------------------------------------------------------------------------
// Replay cache bound

#[test]
fn full_replay_cache_refuses_new_tickets_with_503_and_forgets_nothing_early() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--ticket-capacity", "3", "--ticket-ttl", "3"]);
    let token = k.token(&Claims::new("alice"));
    let auth = bearer(&token);
    for round in 0..2 {
        let tickets: Vec<String> = (0..3).map(|_| ticket(&s, &token)).collect();
        let minted_by = now();
        let r = post_ticket(&s, &[("Authorization", &auth)]);
        assert_eq!(r.status, 503, "round {round}: 4th live ticket:\n{}", r.head);
        let ra = r
            .header("retry-after")
            .unwrap_or_else(|| panic!("Retry-After:\n{}", r.head));
        assert!(ra.trim().parse::<u64>().is_ok(), "Retry-After {ra:?}");
        assert!(!String::from_utf8_lossy(&r.body).contains("v4.local."));

        run(async {
            // Using a ticket does not free its slot (it must stay known as used) ...
            use_ok(&s, None, Via::Header, &tickets[0], None).await;
            assert_eq!(post_ticket(&s, &[("Authorization", &auth)]).status, 503);
            // ... and the live tickets were not forgotten: still single-use, still valid.
            assert_401(
                use_refused(&s, None, Via::Header, &tickets[0], None)
                    .await
                    .http(),
            );
            use_ok(&s, None, Via::Message, &tickets[1], None).await;
            use_ok(&s, None, Via::Cookie, &tickets[2], None).await;
        });

        // Once they expire the entries are evicted and room returns.
        wait_until_unix(minted_by + 4);
    }
    ticket(&s, &token);
    assert_still_serves(&s, &token);
}

// ---------------------------------------------------------------------------
// CORS

fn cors_headers(r: &Response) -> Vec<&(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-"))
        .collect()
}

fn assert_list_contains(r: &Response, header: &str, item: &str) {
    let v = r
        .header(header)
        .unwrap_or_else(|| panic!("missing {header}:\n{}", r.head));
    assert!(
        v.split(',').any(|x| x.trim().eq_ignore_ascii_case(item)),
        "{header}: {v:?} lacks {item}"
    );
}

fn preflight(s: &Server, origin: &str) -> Response {
    http(
        s,
        "OPTIONS",
        "/ticket",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    )
}

/// `--allow-origin https://app.example.com:443` names the origin browsers send as
/// `https://app.example.com`: the preflight and the upgrade both see it as allowed.
#[test]
fn an_allowed_origin_written_with_its_default_port_matches_the_browsers_origin() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--allow-origin", "https://app.example.com:443"]);
    let r = preflight(&s, APP);
    assert_eq!(r.status, 204, "{}", r.head);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(APP),
        "{}",
        r.head
    );
    let token = k.token(&Claims::new("alice"));
    let r = upgrade_status(
        &s,
        "/",
        &[("Origin", APP), ("Authorization", &bearer(&token))],
    );
    assert_eq!(r.status, 101, "{}", r.head);
    let r = upgrade_status(
        &s,
        "/",
        &[
            ("Origin", "https://app.example.com:8443"),
            ("Authorization", &bearer(&token)),
        ],
    );
    assert_eq!(r.status, 403, "{}", r.head);
}

#[test]
fn cors_preflight_for_an_allowed_origin() {
    let k = LocalKey::generate();
    let second = "http://localhost:3000";
    let s = serve(&k, &["--allow-origin", APP, "--allow-origin", second]);
    for origin in [APP, second] {
        // No token needed for the preflight.
        let r = preflight(&s, origin);
        assert_eq!(r.status, 204, "{}", r.head);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{}",
            r.head
        );
        assert_eq!(
            r.header("access-control-allow-credentials"),
            Some("true"),
            "{}",
            r.head
        );
        assert_list_contains(&r, "access-control-allow-headers", "Authorization");
        assert_list_contains(&r, "access-control-allow-methods", "POST");
        // Methods are case-sensitive (RFC 9110 §9.1): `POST` itself, not `post`.
        let methods = r.header("access-control-allow-methods").unwrap_or("");
        assert!(
            methods.split(',').any(|m| m.trim() == "POST"),
            "Access-Control-Allow-Methods: {methods:?} lacks POST"
        );
        assert_list_contains(&r, "vary", "Origin");
        assert!(r.body.is_empty(), "204 has no body");
    }
}

#[test]
fn cors_post_answers_carry_the_origin_never_a_star() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--allow-origin", APP]);
    let token = k.token(&Claims::new("alice"));
    let ok = post_ticket(&s, &[("Origin", APP), ("Authorization", &bearer(&token))]);
    ticket_of(&ok);
    let cookie_ok = post_ticket(
        &s,
        &[
            ("Origin", APP),
            ("Cookie", &format!("wsgate_token={token}")),
        ],
    );
    ticket_of(&cookie_ok);
    let no = post_ticket(&s, &[("Origin", APP)]);
    assert_eq!(no.status, 401, "{}", no.head);
    let bad = post_ticket(
        &s,
        &[("Origin", APP), ("Authorization", "Bearer v4.local.x")],
    );
    assert_eq!(bad.status, 401, "{}", bad.head);
    for r in [&ok, &cookie_ok, &no, &bad] {
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(APP),
            "{}",
            r.head
        );
        assert_eq!(
            r.header("access-control-allow-credentials"),
            Some("true"),
            "{}",
            r.head
        );
        assert!(
            r.headers.iter().all(|(_, v)| v != "*"),
            "never `*`:\n{}",
            r.head
        );
    }
}

#[test]
fn cors_other_origins_get_no_cors_headers() {
    let k = LocalKey::generate();
    let token = k.token(&Claims::new("alice"));
    let s = serve(&k, &["--allow-origin", APP]);
    let r = preflight(&s, EVIL);
    assert!(
        cors_headers(&r).is_empty(),
        "preflight from {EVIL}:\n{}",
        r.head
    );
    let r = post_ticket(&s, &[("Origin", EVIL), ("Authorization", &bearer(&token))]);
    assert!(cors_headers(&r).is_empty(), "POST from {EVIL}:\n{}", r.head);
    let r = post_ticket(&s, &[("Origin", EVIL)]);
    assert!(
        cors_headers(&r).is_empty(),
        "401 POST from {EVIL}:\n{}",
        r.head
    );
    // A near miss of the listed origin is another origin.
    let r = preflight(&s, "https://app.example.com.evil.net");
    assert!(cors_headers(&r).is_empty(), "{}", r.head);

    // Without --allow-origin nobody gets CORS headers.
    let plain = serve(&k, &[]);
    let r = preflight(&plain, APP);
    assert!(cors_headers(&r).is_empty(), "{}", r.head);
    let r = post_ticket(
        &plain,
        &[("Origin", APP), ("Authorization", &bearer(&token))],
    );
    assert!(cors_headers(&r).is_empty(), "{}", r.head);
    assert_still_serves(&s, &token);
}
