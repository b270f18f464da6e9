//! One test per rule of `docs/protocol.md` (methods, the Origin rule, refusals, tickets,
//! first message), against the sans-IO core.

use super::*;
use crate::head::{Request, header_storage};
use crate::token::{ClaimRules, Verifier};
use ct_codecs::Decoder as _;

const NOW: i64 = 2_000_000_000;
const IP: &str = "10.0.0.7";

struct Fixture {
    key: Key,
    gate: Gate,
}

fn fixture_with(methods: &str, origins: &[&str], keys: Vec<Key>) -> Gate {
    Gate::new(GateConfig {
        methods: methods.parse().unwrap(),
        cookie_name: "wsgate_token".into(),
        allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
        verifier: Verifier::new(
            keys,
            ClaimRules {
                leeway: 60,
                ..ClaimRules::default()
            },
        ),
        ticket_ttl: 30,
        ticket_capacity: 100,
        tls: false,
    })
    .unwrap()
}

fn fixture(methods: &str, origins: &[&str]) -> Fixture {
    let key = Key::generate_local().unwrap();
    let again = Key::from_paserk(&key.to_paserk()).unwrap();
    Fixture {
        key,
        gate: fixture_with(methods, origins, vec![again]),
    }
}

impl Fixture {
    fn token(&self, sub: &str, exp: i64) -> String {
        self.key
            .issue(&format!(r#"{{"sub":"{sub}","exp":"{}"}}"#, Rfc3339(exp)))
            .unwrap()
    }

    fn valid(&self) -> String {
        self.token("alice", NOW + 600)
    }

    fn decide(&self, headers: &[(&str, &str)]) -> Decision<'static> {
        self.decide_target("/ws", headers)
    }

    fn decide_target(&self, target: &str, headers: &[(&str, &str)]) -> Decision<'static> {
        let raw = request(target, headers);
        let raw: &'static [u8] = Box::leak(raw.into_boxed_slice());
        let storage: &'static mut _ = Box::leak(Box::new(header_storage()));
        let req = Request::parse_complete(raw, storage).unwrap();
        self.gate.check_upgrade(&req, IP.parse().unwrap(), NOW)
    }
}

fn request(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!(
        "GET {target} HTTP/1.1\r\nHost: wsgate.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn accepted(d: Decision<'_>) -> (Identity, Option<&str>) {
    match d {
        Decision::Accept { identity, protocol } => (identity, protocol),
        other => panic!("expected Accept, got {other:?}"),
    }
}

fn rejected(d: Decision<'_>) -> (Rejection, bool) {
    match d {
        Decision::Reject {
            rejection, in_band, ..
        } => (rejection, in_band),
        other => panic!("expected Reject, got {other:?}"),
    }
}

const DEFAULT: &str = "header,protocol,cookie,message";

#[test]
fn valid_token_by_each_method() {
    let f = fixture("header,protocol,cookie,query,message", &[]);
    let t = f.valid();
    let (id, _) = accepted(f.decide(&[("Authorization", &format!("Bearer {t}"))]));
    assert_eq!((id.sub.as_str(), id.method), ("alice", Method::Header));
    let (id, proto) = accepted(f.decide(&[("Sec-WebSocket-Protocol", &format!("wsgate, {t}"))]));
    assert_eq!((id.method, proto), (Method::Protocol, Some("wsgate")));
    let (id, _) = accepted(f.decide(&[("Cookie", &format!("a=b; wsgate_token={t}; c=d"))]));
    assert_eq!(id.method, Method::Cookie);
    let (id, _) = accepted(f.decide_target(&format!("/ws?x=1&token={t}"), &[]));
    assert_eq!(id.method, Method::Query);
    assert_eq!(id.exp, NOW + 600);
    assert_eq!(id.deadline, NOW + 660);
}

#[test]
fn protocol_answer_is_first_non_token_entry_and_never_the_token() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let (_, proto) =
        accepted(f.decide(&[("Sec-WebSocket-Protocol", &format!("{t}, chat, wsgate"))]));
    assert_eq!(proto, Some("chat"));
    // Only the token offered: no protocol answered (`docs/protocol.md#methods`).
    let (_, proto) = accepted(f.decide(&[("Sec-WebSocket-Protocol", &t)]));
    assert_eq!(proto, None);
    // Split over two headers.
    let (_, proto) = accepted(f.decide(&[
        ("Sec-WebSocket-Protocol", &t),
        ("Sec-WebSocket-Protocol", "wsgate"),
    ]));
    assert_eq!(proto, Some("wsgate"));
}

#[test]
fn query_is_off_by_default() {
    let f = fixture("header,protocol,cookie", &[]);
    let t = f.valid();
    // Refused as no token, with a reason that names the method that is off.
    let (r, in_band) = rejected(f.decide_target(&format!("/ws?token={t}"), &[]));
    assert_eq!(
        (r, r.status(), in_band),
        (Rejection::QueryDisabled, 401, false)
    );
    assert_eq!(r.close().1, "query method is off");
    assert_eq!(r.log_reason(), "query_disabled");
    assert_eq!(r.metric_reason(), "invalid_token");
    // With `message` on: first-message auth, flagged for the log.
    let f = fixture(DEFAULT, &[]);
    assert_eq!(
        f.decide_target(&format!("/ws?token={t}"), &[]),
        Decision::AwaitMessage {
            protocol: None,
            browser: false,
            query_disabled: true
        }
    );
    // Another parameter is not a hint.
    assert!(matches!(
        f.decide_target("/ws?tokens=x", &[]),
        Decision::AwaitMessage {
            query_disabled: false,
            ..
        }
    ));
}

#[test]
fn disabled_methods_are_ignored() {
    let f = fixture("cookie", &[]);
    let t = f.valid();
    // A header token is not looked at when `header` is off: no token found.
    assert_eq!(
        rejected(f.decide(&[("Authorization", &format!("Bearer {t}"))])).0,
        Rejection::MissingToken
    );
}

#[test]
fn first_present_method_decides_without_fallback() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let d = f.decide(&[
        ("Authorization", "Bearer v4.local.garbage"),
        ("Cookie", &format!("wsgate_token={t}")),
    ]);
    assert!(matches!(rejected(d).0, Rejection::BadToken(_)));
    let d = f.decide(&[
        ("Sec-WebSocket-Protocol", "wsgate, v4.local.garbage"),
        ("Cookie", &format!("wsgate_token={t}")),
    ]);
    assert!(matches!(rejected(d).0, Rejection::BadToken(_)));
}

#[test]
fn present_but_empty_is_invalid_not_absent() {
    let f = fixture(DEFAULT, &[]);
    for h in [
        ("Authorization", "Bearer"),
        ("Authorization", "Bearer "),
        ("Cookie", "wsgate_token="),
    ] {
        assert_eq!(
            rejected(f.decide(&[h])).0,
            Rejection::BadToken(TokenError::Empty),
            "{h:?}"
        );
    }
    // Another scheme is not a header token: falls to message auth.
    assert!(matches!(
        f.decide(&[("Authorization", "Basic YTpi")]),
        Decision::AwaitMessage { .. }
    ));
    // Non-visible ASCII.
    assert_eq!(
        rejected(f.decide(&[("Authorization", "Bearer v4.local.\u{e9}x")])).0,
        Rejection::BadToken(TokenError::NotVisibleAscii)
    );
}

/// Decides a request whose one extra header line is raw bytes (not UTF-8).
fn decide_raw_header(f: &Fixture, line: &[u8], also: &[(&str, &str)]) -> Decision<'static> {
    let mut raw = request("/ws", also);
    raw.truncate(raw.len() - 2);
    raw.extend_from_slice(line);
    raw.extend_from_slice(b"\r\n\r\n");
    let raw: &'static [u8] = Box::leak(raw.into_boxed_slice());
    let storage: &'static mut _ = Box::leak(Box::new(header_storage()));
    let req = Request::parse_complete(raw, storage).unwrap();
    f.gate.check_upgrade(&req, IP.parse().unwrap(), NOW)
}

#[test]
fn present_but_not_utf8_is_invalid_not_absent() {
    let f = fixture(DEFAULT, &[]);
    for (line, method) in [
        (&b"Authorization: Bearer \xff\xfe"[..], Method::Header),
        (&b"Authorization: bearer v4.local.\xc3"[..], Method::Header),
        (
            &b"Sec-WebSocket-Protocol: wsgate, v4.local.\xff"[..],
            Method::Protocol,
        ),
        (
            &b"Cookie: a=\xff; wsgate_token=v4.public.\xfe"[..],
            Method::Cookie,
        ),
    ] {
        match decide_raw_header(&f, line, &[]) {
            Decision::Reject {
                rejection: Rejection::BadToken(TokenError::NotVisibleAscii),
                method: Some(m),
                ..
            } => assert_eq!(m, method, "{line:?}"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(line)),
        }
    }
    // Not a carrier (another scheme, another cookie): still absent.
    for line in [&b"Authorization: Basic \xff"[..], b"Cookie: other=\xff"] {
        assert!(
            matches!(
                decide_raw_header(&f, line, &[]),
                Decision::AwaitMessage { .. }
            ),
            "{line:?}"
        );
    }
    // The first present method decides: a bad header before a good cookie.
    let t = f.valid();
    let cookie = format!("wsgate_token={t}");
    let (r, _) = rejected(decide_raw_header(
        &f,
        b"Authorization: Bearer \xff",
        &[("Cookie", &cookie)],
    ));
    assert_eq!(r, Rejection::BadToken(TokenError::NotVisibleAscii));
    // A good header token before a bad cookie: the header decides.
    let bearer = format!("Bearer {t}");
    accepted(decide_raw_header(
        &f,
        b"Cookie: wsgate_token=\xff",
        &[("Authorization", &bearer)],
    ));
}

#[test]
fn invalid_token_is_401_without_origin() {
    let f = fixture(DEFAULT, &[]);
    let (r, in_band) = rejected(f.decide(&[("Authorization", "Bearer v4.local.AAAA")]));
    assert_eq!((r.status(), in_band), (401, false));
    assert_eq!(r.close(), (4401, "invalid token"));
}

#[test]
fn expired_token() {
    let f = fixture(DEFAULT, &[]);
    let t = f.token("alice", NOW - 61);
    let (r, in_band) = rejected(f.decide(&[("Authorization", &format!("Bearer {t}"))]));
    assert_eq!((r, r.status(), in_band), (Rejection::Expired, 401, false));
    assert_eq!(r.close(), (4401, "token expired"));
}

#[test]
fn browser_gets_in_band_close_codes() {
    let f = fixture(DEFAULT, &["https://app.example.com"]);
    let origin = ("Origin", "https://app.example.com");
    let bad = f.decide(&[origin, ("Sec-WebSocket-Protocol", "wsgate, v4.local.AAAA")]);
    match bad {
        Decision::Reject {
            rejection,
            in_band,
            protocol,
            ..
        } => {
            assert!(in_band);
            assert_eq!(rejection.close(), (4401, "invalid token"));
            assert_eq!(
                protocol,
                Some("wsgate"),
                "browsers need their protocol answered even on refusal"
            );
        }
        other => panic!("{other:?}"),
    }
    let expired = f.token("a", NOW - 3600);
    let (r, in_band) =
        rejected(f.decide(&[origin, ("Authorization", &format!("Bearer {expired}"))]));
    assert_eq!((r, in_band), (Rejection::Expired, true));
}

#[test]
fn no_token_with_message_enabled_awaits_message() {
    let f = fixture(DEFAULT, &[]);
    assert_eq!(
        f.decide(&[("Sec-WebSocket-Protocol", "wsgate")]),
        Decision::AwaitMessage {
            protocol: Some("wsgate"),
            browser: false,
            query_disabled: false
        }
    );
}

#[test]
fn no_token_with_message_disabled_is_401() {
    let f = fixture("header,cookie", &[]);
    let (r, in_band) = rejected(f.decide(&[]));
    assert_eq!(
        (r, r.status(), in_band),
        (Rejection::MissingToken, 401, false)
    );
    // Also for a browser: a missing token is HTTP 401.
    let (_, in_band) = rejected(f.decide(&[("Origin", "http://wsgate.example:8080")]));
    assert!(!in_band);
}

#[test]
fn cookie_from_foreign_origin_is_403_without_allow_list() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let (r, in_band) = rejected(f.decide(&[
        ("Origin", "https://evil.example"),
        ("Cookie", &format!("wsgate_token={t}")),
    ]));
    assert_eq!(
        (r, r.status(), in_band),
        (Rejection::OriginNotAllowed, 403, false)
    );
    // Other methods from a foreign origin pass without --allow-origin.
    accepted(f.decide(&[
        ("Origin", "https://evil.example"),
        ("Authorization", &format!("Bearer {t}")),
    ]));
    assert!(matches!(
        f.decide(&[("Origin", "https://evil.example")]),
        Decision::AwaitMessage { browser: true, .. }
    ));
}

#[test]
fn allow_list_checks_every_method() {
    let f = fixture(DEFAULT, &["https://app.example.com"]);
    let t = f.valid();
    let evil = ("Origin", "https://evil.example");
    for h in [
        ("Authorization", format!("Bearer {t}")),
        ("Sec-WebSocket-Protocol", format!("wsgate, {t}")),
    ] {
        assert_eq!(
            rejected(f.decide(&[evil, (h.0, &h.1)])).0,
            Rejection::OriginNotAllowed
        );
    }
    assert_eq!(
        rejected(f.decide(&[evil])).0,
        Rejection::OriginNotAllowed,
        "first-message included"
    );
    // Origin refusal comes before the token check: even a bad token gets 403.
    assert_eq!(
        rejected(f.decide(&[evil, ("Authorization", "Bearer junk")])).0,
        Rejection::OriginNotAllowed
    );
    accepted(f.decide(&[
        ("Origin", "https://APP.example.com"),
        ("Cookie", &format!("wsgate_token={t}")),
    ]));
}

/// An allowed origin is a scheme, a host and a port: the port its scheme implies may be
/// written or not, on either side; another port or scheme is another origin.
#[test]
fn allowed_origins_compare_with_the_port_implied() {
    let g = fixture_with(
        DEFAULT,
        &[
            "https://app.example.com:443",
            "http://dev.example:80",
            "https://x.example:8443",
        ],
        vec![Key::generate_local().unwrap()],
    );
    for o in [
        "https://app.example.com",
        "https://app.example.com:443",
        "wss://APP.example.com",
        "http://dev.example",
        "http://dev.example:80",
        "https://x.example:8443",
    ] {
        assert!(g.cors_allowed(o), "{o}");
    }
    for o in [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://dev.example",
        "https://x.example",
        "https://app.example.com.evil",
        "https://app.example.com:+443",
        "null",
        "",
    ] {
        assert!(!g.cors_allowed(o), "{o}");
    }
}

#[test]
fn same_origin_is_always_allowed() {
    let f = fixture(DEFAULT, &["https://app.example.com"]);
    let t = f.valid();
    accepted(f.decide(&[
        ("Origin", "http://WSGATE.example:8080"),
        ("Cookie", &format!("wsgate_token={t}")),
    ]));
    let same_origin = |o, h| same_origin_on(o, h, false);
    assert!(same_origin("https://a.example", "a.example"));
    assert!(same_origin("https://a.example", "a.example:443"));
    assert!(same_origin("http://a.example:80", "a.example"));
    assert!(!same_origin("https://a.example", "a.example:80"));
    assert!(!same_origin("http://a.example:8080", "a.example"));
    assert!(same_origin("http://[::1]:8080", "[::1]:8080"));
    // A port is digits only (`head::parse_port`): `+80` is no port on either side.
    assert!(!same_origin("http://a.example:+80", "a.example"));
    assert!(!same_origin("http://a.example", "a.example:+80"));
    assert!(!same_origin("null", "a.example"));
    assert!(!same_origin("http://a.example.evil.com", "a.example"));
    // On a TLS listener.
    assert!(same_origin_on("https://a.example", "a.example", true));
    assert!(!same_origin_on("http://a.example", "a.example", true));
    // The 80 an http:// Origin implies is no match for a Host that says 80 either.
    assert!(!same_origin_on("http://a.example", "a.example:80", true));
    assert!(!same_origin_on("ws://a.example", "a.example:80", true));
    assert!(same_origin_on("http://a.example:80", "a.example:80", true));
    assert!(same_origin_on("https://a.example", "a.example:443", true));
    assert!(same_origin_on(
        "http://a.example:8443",
        "a.example:8443",
        true
    ));
}

/// How the Origin rule splits authorities is in `head::tests::authorities`; what it
/// compares: hosts without regard to case, brackets included.
#[test]
fn authorities_compare() {
    assert!(same_origin_on(
        "https://HOST.example",
        "host.EXAMPLE:443",
        false
    ));
    assert!(same_origin_on("http://[::1]", "[::1]:80", false));
    assert!(!same_origin_on("http://[a]", "a", false));
}

/// On a TLS listener a `Host` without a port means 443 whatever the Origin's scheme
/// (`docs/protocol.md#the-origin-rule`): an `http://` Origin is cross-origin there unless
/// its explicit port is the `Host`'s. A cookie request is what the Origin rule checks
/// without `--allow-origin`.
#[test]
fn same_origin_on_a_tls_listener_uses_port_443() {
    let key = Key::generate_local().unwrap();
    let token = key
        .issue(&format!(
            r#"{{"sub":"alice","exp":"{}"}}"#,
            Rfc3339(NOW + 600)
        ))
        .unwrap();
    let gate = |tls: bool| {
        Gate::new(GateConfig {
            methods: DEFAULT.parse().unwrap(),
            cookie_name: "wsgate_token".into(),
            allowed_origins: vec![],
            verifier: Verifier::new(
                vec![Key::from_paserk(&key.to_paserk()).unwrap()],
                ClaimRules::default(),
            ),
            ticket_ttl: 30,
            ticket_capacity: 10,
            tls,
        })
        .unwrap()
    };
    let (plain, tls) = (gate(false), gate(true));
    let decide = |gate: &Gate, host: &str, origin: &str| -> Result<(), Rejection> {
        let raw = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Origin: {origin}\r\nCookie: wsgate_token={token}\r\n\r\n"
        );
        let mut storage = header_storage();
        let req = Request::parse_complete(raw.as_bytes(), &mut storage).unwrap();
        match gate.check_upgrade(&req, IP.parse().unwrap(), NOW) {
            Decision::Accept { .. } => Ok(()),
            Decision::Reject { rejection, .. } => Err(rejection),
            other => panic!("{other:?}"),
        }
    };
    let refused = Err(Rejection::OriginNotAllowed);
    // https / wss origins: 443 both ways.
    assert_eq!(decide(&tls, "gw.example", "https://gw.example"), Ok(()));
    assert_eq!(decide(&tls, "gw.example:443", "https://gw.example"), Ok(()));
    assert_eq!(decide(&tls, "gw.example", "https://gw.example:443"), Ok(()));
    assert_eq!(
        decide(&tls, "gw.example:8443", "https://gw.example:8443"),
        Ok(())
    );
    assert_eq!(
        decide(&tls, "gw.example", "https://gw.example:8443"),
        refused
    );
    // http origins: the Host means 443, and only a port the Origin names can match it
    // (the 80 its scheme implies is not one).
    assert_eq!(decide(&tls, "gw.example", "http://gw.example"), refused);
    assert_eq!(decide(&tls, "gw.example:80", "http://gw.example"), refused);
    assert_eq!(
        decide(&tls, "gw.example:80", "http://gw.example:80"),
        Ok(())
    );
    assert_eq!(decide(&tls, "gw.example", "http://gw.example:443"), Ok(()));
    assert_eq!(
        decide(&tls, "gw.example:8443", "http://gw.example:8443"),
        Ok(())
    );
    // A plain listener keeps the Origin's scheme's port for a port-less Host.
    assert_eq!(decide(&plain, "gw.example", "http://gw.example"), Ok(()));
    assert_eq!(decide(&plain, "gw.example", "https://gw.example"), Ok(()));
    assert!(same_origin_on("http://a.example:443", "a.example", true));
    assert!(!same_origin_on("http://a.example", "a.example", true));
    // The 80 an http:// Origin implies is no match for a Host that says 80 either.
    assert!(!same_origin_on("http://a.example", "a.example:80", true));
    assert!(!same_origin_on("ws://a.example", "a.example:80", true));
    assert!(same_origin_on("http://a.example:80", "a.example:80", true));
    assert!(same_origin_on("https://a.example", "a.example:443", true));
    assert!(same_origin_on("https://a.example", "a.example", true));
}

#[test]
fn first_message_raw_and_json() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let ip = IP.parse().unwrap();
    let id = f
        .gate
        .check_first_message(Some(&format!("  {t}\n")), ip, NOW)
        .unwrap();
    assert_eq!((id.sub.as_str(), id.method), ("alice", Method::Message));
    let id = f
        .gate
        .check_first_message(
            Some(&format!(r#"{{"type":"auth","token":"{t}","x":1}}"#)),
            ip,
            NOW,
        )
        .unwrap();
    assert_eq!(id.sub, "alice");
    assert_eq!(
        id.authenticated_frame(),
        format!(
            r#"{{"type":"authenticated","sub":"alice","exp":"{}"}}"#,
            Rfc3339(NOW + 600)
        )
    );
    // `sub` is escaped as a JSON string: the frame stays one valid JSON object.
    let t = f.token(r#"a\"b\\c\u2028é"#, NOW + 600);
    let id = f.gate.check_first_message(Some(&t), ip, NOW).unwrap();
    assert_eq!(id.sub, "a\"b\\c\u{2028}é");
    let frame: serde_json::Value = serde_json::from_str(&id.authenticated_frame()).unwrap();
    assert_eq!(frame["sub"], "a\"b\\c\u{2028}é");
    assert_eq!(frame["type"], "authenticated");
}

#[test]
fn first_message_rejections() {
    let f = fixture(DEFAULT, &[]);
    let ip = IP.parse().unwrap();
    let g = &f.gate;
    assert_eq!(
        g.check_first_message(None, ip, NOW).unwrap_err().close(),
        (4401, "invalid token")
    );
    assert_eq!(
        g.check_first_message(Some("hello"), ip, NOW)
            .unwrap_err()
            .close(),
        (4401, "invalid token")
    );
    assert_eq!(
        g.check_first_message(Some("{\"tok\":1}"), ip, NOW)
            .unwrap_err()
            .close(),
        (4401, "invalid token")
    );
    let expired = f.token("a", NOW - 3600);
    assert_eq!(
        g.check_first_message(Some(&expired), ip, NOW)
            .unwrap_err()
            .close(),
        (4401, "token expired")
    );
    let long = format!("v4.local.{}", "A".repeat(9000));
    assert_eq!(
        g.check_first_message(Some(&long), ip, NOW).unwrap_err(),
        Rejection::BadToken(TokenError::TooLong)
    );
    assert_eq!(Rejection::Timeout.close(), (4408, "authentication timeout"));
}

fn ticket_request(auth: &str, origin: Option<&str>) -> Vec<u8> {
    let mut s = format!("POST /ticket HTTP/1.1\r\nHost: wsgate.example:8080\r\n{auth}\r\n");
    if let Some(o) = origin {
        s.push_str(&format!("Origin: {o}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn mint(
    f: &Fixture,
    auth: &str,
    origin: Option<&str>,
    ip: &str,
    now: i64,
) -> Result<Ticket, TicketRefusal> {
    let raw = ticket_request(auth, origin);
    let mut st = header_storage();
    let req = Request::parse_complete(&raw, &mut st).unwrap();
    f.gate.mint_ticket(&req, ip.parse().unwrap(), now)
}

#[test]
fn tickets_are_single_use_same_ip_and_end_with_the_minting_token() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let ticket = mint(&f, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    assert_eq!(ticket.expires_in, 30);
    let ip = IP.parse().unwrap();
    // Another IP: forbidden, and the ticket stays unused.
    let other = f
        .gate
        .verify(
            &ticket.token,
            Method::Header,
            "10.9.9.9".parse().unwrap(),
            NOW,
        )
        .unwrap_err();
    assert_eq!(
        (other, other.status(), other.close()),
        (Rejection::TicketWrongIp, 403, (4403, "forbidden"))
    );
    let id = f
        .gate
        .verify(&ticket.token, Method::Cookie, ip, NOW + 1)
        .unwrap();
    assert!(id.via_ticket);
    assert_eq!((id.sub.as_str(), id.exp), ("alice", NOW + 600));
    let again = f
        .gate
        .verify(&ticket.token, Method::Cookie, ip, NOW + 2)
        .unwrap_err();
    assert_eq!(
        (again, again.status(), again.close()),
        (Rejection::TicketReused, 401, (4401, "ticket already used"))
    );
}

#[test]
fn ticket_expiry_has_no_leeway() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let ticket = mint(&f, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    let late = f
        .gate
        .verify(
            &ticket.token,
            Method::Message,
            IP.parse().unwrap(),
            NOW + 31,
        )
        .unwrap_err();
    assert_eq!(late, Rejection::Expired);
}

#[test]
fn ticket_cannot_mint_ticket_and_needs_a_token() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let ticket = mint(&f, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    assert!(matches!(
        mint(
            &f,
            &format!("Authorization: Bearer {}", ticket.token),
            None,
            IP,
            NOW
        ),
        Err(TicketRefusal::Unauthorized(_))
    ));
    assert!(matches!(
        mint(&f, "X-Nothing: 1", None, IP, NOW),
        Err(TicketRefusal::Unauthorized(Rejection::MissingToken))
    ));
    assert!(matches!(
        mint(&f, "Authorization: Bearer junk", None, IP, NOW),
        Err(TicketRefusal::Unauthorized(_))
    ));
}

#[test]
fn ticket_by_cookie_obeys_origin_rule() {
    let f = fixture(DEFAULT, &["https://app.example.com"]);
    let t = f.valid();
    let cookie = format!("Cookie: wsgate_token={t}");
    assert_eq!(
        mint(&f, &cookie, Some("https://evil.example"), IP, NOW).unwrap_err(),
        TicketRefusal::Forbidden
    );
    assert!(mint(&f, &cookie, Some("https://app.example.com"), IP, NOW).is_ok());
}

#[test]
fn full_ticket_cache_refuses_new_tickets() {
    let key = Key::generate_local().unwrap();
    let t = key
        .issue(&format!(r#"{{"sub":"a","exp":"{}"}}"#, Rfc3339(NOW + 600)))
        .unwrap();
    let gate = Gate::new(GateConfig {
        methods: Methods::default(),
        cookie_name: "wsgate_token".into(),
        allowed_origins: vec![],
        verifier: Verifier::new(vec![key], ClaimRules::default()),
        ticket_ttl: 30,
        ticket_capacity: 2,
        tls: false,
    })
    .unwrap();
    let raw = ticket_request(&format!("Authorization: Bearer {t}"), None);
    let mut st = header_storage();
    let req = Request::parse_complete(&raw, &mut st).unwrap();
    let ip = IP.parse().unwrap();
    assert!(gate.mint_ticket(&req, ip, NOW).is_ok());
    assert!(gate.mint_ticket(&req, ip, NOW).is_ok());
    assert_eq!(
        gate.mint_ticket(&req, ip, NOW).unwrap_err(),
        TicketRefusal::Full
    );
    // Once they expire, there is room again.
    assert!(gate.mint_ticket(&req, ip, NOW + 31).is_ok());
}

#[test]
fn tickets_work_on_public_key_only_servers() {
    let secret = Key::generate_secret().unwrap();
    let gate = fixture_with(DEFAULT, &[], vec![secret.public_key().unwrap()]);
    let t = secret
        .issue(&format!(
            r#"{{"sub":"bob","exp":"{}"}}"#,
            Rfc3339(NOW + 600)
        ))
        .unwrap();
    let raw = ticket_request(&format!("Authorization: Bearer {t}"), None);
    let mut st = header_storage();
    let req = Request::parse_complete(&raw, &mut st).unwrap();
    let ticket = gate.mint_ticket(&req, IP.parse().unwrap(), NOW).unwrap();
    assert!(ticket.token.starts_with("v4.local."));
    let id = gate
        .verify(&ticket.token, Method::Protocol, IP.parse().unwrap(), NOW)
        .unwrap();
    assert_eq!(id.sub, "bob");
}

/// The claims a ticket holds, opened with the fixture's key.
fn ticket_claims(f: &Fixture, ticket: &Ticket) -> serde_json::Value {
    serde_json::from_str(&f.key.open(&ticket.token, b"").unwrap()).unwrap()
}

#[test]
fn a_ticket_has_no_footer_no_iat_of_its_own_and_a_128_bit_jti() {
    let f = fixture(DEFAULT, &[]);
    let t = f
        .key
        .issue(&format!(
            r#"{{"sub":"alice","exp":"{}","iat":"{}","nbf":"{}","jti":"minting\"jti"}}"#,
            Rfc3339(NOW + 600),
            Rfc3339(NOW - 5),
            Rfc3339(NOW - 5),
        ))
        .unwrap();
    let ticket = mint(&f, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    // `v4.local.<payload>`: no footer, so no `kid`.
    assert_eq!(ticket.token.split('.').count(), 3, "{}", ticket.token);
    let c = ticket_claims(&f, &ticket);
    assert_eq!(c.get("iat"), None, "{c}");
    assert_eq!(c.get("nbf"), None, "{c}");
    assert_eq!(c["exp"], Rfc3339(NOW + 30).to_string());
    let jti = c["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 22, "{jti}");
    let raw = Base64UrlSafeNoPadding::decode_to_vec(jti, None).unwrap();
    assert_eq!(raw.len(), 16);
    // The minting token's `jti` and `iat` stay in the ticket claim, for revocation.
    assert_eq!(
        c[TICKET_CLAIM],
        serde_json::json!({
            "ip": IP,
            "session_exp": NOW + 600,
            "jti": "minting\"jti",
            "iat": NOW - 5,
        })
    );
    let id = f
        .gate
        .verify(&ticket.token, Method::Header, IP.parse().unwrap(), NOW)
        .unwrap();
    assert_eq!(
        (id.jti.as_deref(), id.iat),
        (Some("minting\"jti"), Some(NOW - 5))
    );
    // Every id is 128 random bits in base64url.
    for _ in 0..20 {
        let id = random_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}

#[test]
fn a_ticket_keeps_every_other_claim_of_the_minting_token() {
    let f = fixture(DEFAULT, &[]);
    let t = f
        .key
        .issue(&format!(
            r#"{{"sub":"al\u0069ce","exp":"{}","aud":["a","b"],"n":-1.5,"big":12345678901,
                "obj":{{"k":[true,null,{{"x":"y"}}]}},"e\"sc":"v\\w\u00e9","wsgate_ticket":null,"empty":{{}}}}"#,
            Rfc3339(NOW + 600),
        ))
        .unwrap();
    let ticket = mint(&f, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    let c = ticket_claims(&f, &ticket);
    let mut want = serde_json::json!({
        "sub": "alice",
        "aud": ["a", "b"],
        "n": -1.5,
        "big": 12345678901_u64,
        "obj": {"k": [true, null, {"x": "y"}]},
        "e\"sc": "v\\wé",
        "empty": {},
        "wsgate_ticket": {"ip": IP, "session_exp": NOW + 600},
    });
    want["exp"] = c["exp"].clone();
    want["jti"] = c["jti"].clone();
    assert_eq!(c, want);
    let id = f
        .gate
        .verify(&ticket.token, Method::Header, IP.parse().unwrap(), NOW)
        .unwrap();
    assert_eq!(id.sub, "alice");
    assert!(id.via_ticket);
}

#[test]
fn a_ticket_opens_on_a_node_whose_first_local_key_is_another() {
    // Node 1 seals with B; node 2 holds [A, B] and seals with A: B's tickets carry no
    // `kid`, and open there after A's tag check fails.
    let (a, b) = (
        Key::generate_local().unwrap(),
        Key::generate_local().unwrap(),
    );
    let copy = |k: &Key| Key::from_paserk(&k.to_paserk()).unwrap();
    let node1 = Fixture {
        gate: fixture_with(DEFAULT, &[], vec![copy(&b)]),
        key: copy(&b),
    };
    let node2 = fixture_with(DEFAULT, &[], vec![copy(&a), copy(&b)]);
    let t = node1.valid();
    let ticket = mint(&node1, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    let ip = IP.parse().unwrap();
    let id = node2
        .verify(&ticket.token, Method::Protocol, ip, NOW)
        .unwrap();
    assert!(id.via_ticket);
    assert_eq!((id.sub.as_str(), id.exp), ("alice", NOW + 600));
    assert_eq!(
        node2
            .verify(&ticket.token, Method::Protocol, ip, NOW)
            .map(|_| ()),
        Err(Rejection::TicketReused)
    );
    // A ticket under a key node 2 does not hold is invalid there.
    let node3 = Fixture {
        gate: fixture_with(DEFAULT, &[], vec![Key::generate_local().unwrap(), copy(&b)]),
        key: copy(&b),
    };
    let foreign = mint(&node3, &format!("Authorization: Bearer {t}"), None, IP, NOW).unwrap();
    assert_eq!(
        node2
            .verify(&foreign.token, Method::Protocol, ip, NOW)
            .map(|_| ()),
        Err(Rejection::BadToken(TokenError::Forged))
    );
}

#[test]
fn ipv4_mapped_peer_matches_ticket_ip() {
    let f = fixture(DEFAULT, &[]);
    let t = f.valid();
    let ticket = mint(
        &f,
        &format!("Authorization: Bearer {t}"),
        None,
        "::ffff:10.0.0.7",
        NOW,
    )
    .unwrap();
    assert!(
        f.gate
            .verify(&ticket.token, Method::Header, IP.parse().unwrap(), NOW)
            .is_ok()
    );
}

#[test]
fn methods_parse() {
    assert_eq!(
        "header, query".parse::<Methods>().unwrap(),
        Methods::NONE.with(Method::Header).with(Method::Query)
    );
    assert!("header,magic".parse::<Methods>().is_err());
    assert!("".parse::<Methods>().is_err());
}

#[test]
fn rejection_table() {
    // `docs/protocol.md#refusals`, one line per refusal: status, close code and reason,
    // metric label.
    let rows = [
        (
            Rejection::BadToken(TokenError::Forged),
            401,
            4401,
            "invalid token",
            "invalid_token",
        ),
        (Rejection::Expired, 401, 4401, "token expired", "expired"),
        (
            Rejection::TicketReused,
            401,
            4401,
            "ticket already used",
            "ticket_reused",
        ),
        (
            Rejection::TicketWrongIp,
            403,
            4403,
            "forbidden",
            "forbidden_ip",
        ),
        (
            Rejection::OriginNotAllowed,
            403,
            4403,
            "forbidden",
            "forbidden_origin",
        ),
        (
            Rejection::Timeout,
            408,
            4408,
            "authentication timeout",
            "timeout",
        ),
    ];
    for (r, status, code, reason, metric) in rows {
        assert_eq!(
            (r.status(), r.close(), r.metric_reason()),
            (status, (code, reason), metric),
            "{r:?}"
        );
    }
    assert!(!Rejection::OriginNotAllowed.in_band_for_browsers());
}

#[test]
fn refresh_requests_are_recognised_and_nothing_else() {
    assert_eq!(
        refresh_request(r#" {"type":"refresh","token":"v4.local.x","id":1}"#).as_deref(),
        Some("v4.local.x")
    );
    for other in [
        r#"{"type":"refreshx","token":"t"}"#,
        r#"{"type":"refresh"}"#,
        r#"{"type":"refresh","token":7}"#,
        r#"{"token":"t"}"#,
        r#"["refresh"]"#,
        "refresh",
        "",
    ] {
        assert_eq!(refresh_request(other), None, "{other}");
    }
}

#[test]
fn refresh_rules() {
    let f = fixture(DEFAULT, &[]);
    let ip: IpAddr = IP.parse().unwrap();
    let session = f.gate.verify(&f.valid(), Method::Cookie, ip, NOW).unwrap();
    let later = f.token("alice", NOW + 3600);
    let id = f.gate.check_refresh(&later, &session, NOW).unwrap();
    assert_eq!(
        (id.exp, id.method, id.sub.as_str()),
        (NOW + 3600, Method::Cookie, "alice")
    );
    assert_eq!(id.deadline, NOW + 3660);
    // Earlier exp: accepted (it shortens the session).
    assert_eq!(
        f.gate
            .check_refresh(&f.token("alice", NOW + 10), &session, NOW)
            .unwrap()
            .exp,
        NOW + 10
    );
    assert_eq!(
        f.gate
            .check_refresh(&f.token("alice", NOW - 61), &session, NOW),
        Err(Rejection::Expired)
    );
    assert_eq!(
        f.gate
            .check_refresh(&f.token("bob", NOW + 600), &session, NOW),
        Err(Rejection::WrongSub)
    );
    assert!(matches!(
        f.gate.check_refresh("v4.local.nope", &session, NOW),
        Err(Rejection::BadToken(_))
    ));
    // A ticket is not a refresh token.
    let raw = ticket_request(&format!("Authorization: Bearer {}", f.valid()), None);
    let mut storage = header_storage();
    let req = Request::parse_complete(&raw, &mut storage).unwrap();
    let ticket = f.gate.mint_ticket(&req, ip, NOW).unwrap();
    assert_eq!(
        f.gate.check_refresh(&ticket.token, &session, NOW),
        Err(Rejection::BadToken(TokenError::BadClaims))
    );
    // Revoked: refused, and the close code says so.
    f.gate
        .revoke(&Revocation::Sub("alice".into()), NOW)
        .unwrap();
    assert_eq!(
        f.gate.check_refresh(&later, &session, NOW),
        Err(Rejection::Revoked)
    );
    assert_eq!(Rejection::Revoked.close(), (4401, "token revoked"));
    assert_eq!(Rejection::WrongSub.close(), (4403, "forbidden"));
}

#[test]
fn revoked_tokens_are_refused_at_every_door_and_tickets_by_their_minting_token() {
    let f = fixture(DEFAULT, &[]);
    let ip: IpAddr = IP.parse().unwrap();
    let t = f
        .key
        .issue(&format!(
            r#"{{"sub":"alice","jti":"J","iat":"{}","exp":"{}"}}"#,
            Rfc3339(NOW - 10),
            Rfc3339(NOW + 600)
        ))
        .unwrap();
    let raw = ticket_request(&format!("Authorization: Bearer {t}"), None);
    let mut storage = header_storage();
    let req = Request::parse_complete(&raw, &mut storage).unwrap();
    let ticket = f.gate.mint_ticket(&req, ip, NOW).unwrap();
    f.gate.revoke(&Revocation::Jti("J".into()), NOW).unwrap();
    assert_eq!(
        f.gate.verify(&t, Method::Header, ip, NOW),
        Err(Rejection::Revoked)
    );
    assert_eq!(
        f.gate.verify(&ticket.token, Method::Header, ip, NOW),
        Err(Rejection::Revoked)
    );
    // The refused ticket stays unused: the refusal did not spend it.
    assert!(matches!(
        f.gate.mint_ticket(&req, ip, NOW),
        Err(TicketRefusal::Unauthorized(Rejection::Revoked))
    ));
    // A browser gets it in-band.
    let (r, in_band) = rejected(f.decide(&[
        ("Authorization", &format!("Bearer {t}")),
        ("Origin", "http://wsgate.example:8080"),
    ]));
    assert_eq!((r, in_band), (Rejection::Revoked, true));
}

#[test]
fn keys_are_replaced_whole() {
    let f = fixture(DEFAULT, &[]);
    let ip: IpAddr = IP.parse().unwrap();
    let old = f.valid();
    let other = Key::generate_local().unwrap();
    let new = other
        .issue(&format!(
            r#"{{"sub":"alice","exp":"{}"}}"#,
            Rfc3339(NOW + 600)
        ))
        .unwrap();
    assert!(f.gate.verify(&new, Method::Header, ip, NOW).is_err());
    f.gate
        .set_keys(vec![Key::from_paserk(&other.to_paserk()).unwrap()])
        .unwrap();
    assert!(f.gate.verify(&new, Method::Header, ip, NOW).is_ok());
    assert!(f.gate.verify(&old, Method::Header, ip, NOW).is_err());
    assert!(f.gate.set_keys(Vec::new()).is_err());
    assert!(f.gate.verify(&new, Method::Header, ip, NOW).is_ok());
}

/// A ticket from an earlier version (the times in its ticket claim as RFC 3339 text)
/// still opens its session, with the same end and revocation facts; a time of any
/// other JSON type is refused.
#[test]
fn a_ticket_with_text_times_still_opens_and_other_types_do_not() {
    let f = fixture(DEFAULT, &[]);
    let ticket = |times: (&str, &str)| {
        f.key
            .issue_with_footer(
                &format!(
                    r#"{{"sub":"alice","jti":"t-{}","exp":"{}","{TICKET_CLAIM}":{{"ip":"{IP}","session_exp":{},"jti":"m","iat":{}}}}}"#,
                    times.0.len() + times.1.len(),
                    Rfc3339(NOW + 30),
                    times.0,
                    times.1,
                ),
                None,
            )
            .unwrap()
    };
    let peer: IpAddr = IP.parse().unwrap();
    let text = format!("\"{}\"", Rfc3339(NOW + 600));
    let iat_text = format!("\"{}\"", Rfc3339(NOW - 5));
    let old = ticket((&text, &iat_text));
    let id = f.gate.verify(&old, Method::Header, peer, NOW).unwrap();
    assert_eq!(
        (id.exp, id.jti.as_deref(), id.iat),
        (NOW + 600, Some("m"), Some(NOW - 5))
    );
    let new = ticket((&(NOW + 600).to_string(), &(NOW - 5).to_string()));
    let id = f.gate.verify(&new, Method::Header, peer, NOW).unwrap();
    assert_eq!(
        (id.exp, id.jti.as_deref(), id.iat),
        (NOW + 600, Some("m"), Some(NOW - 5))
    );
    let (exp, iat) = ((NOW + 600).to_string(), (NOW - 5).to_string());
    for bad in [
        ("true", iat.as_str()),
        ("1.5", &iat),
        ("\"soon\"", &iat),
        ("18446744073709551615", &iat),
        ("[1]", &iat),
        (&exp, "false"),
        (&exp, "\"then\""),
    ] {
        assert_eq!(
            f.gate.verify(&ticket(bad), Method::Header, peer, NOW).err(),
            Some(Rejection::BadToken(TokenError::BadClaims)),
            "{bad:?}"
        );
    }
}
