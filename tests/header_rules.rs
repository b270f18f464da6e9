//! Hostile request heads over real sockets: headers that must be single appear
//! twice (400: which one wins would be a guess, and the Origin rule compares
//! `Origin` with `Host`), and token carriers whose value is not UTF-8 (present, so an
//! invalid token: 401, or 101 + 4401 for a browser; never "absent", which would fall
//! through to first-message authentication).

mod common;
use common::*;

/// An upgrade head with one raw header line (any bytes) after the given headers.
fn upgrade_with_line(host: &str, headers: &[(&str, &str)], line: &[u8]) -> Vec<u8> {
    let mut raw = upgrade_bytes(host, "/", headers);
    raw.truncate(raw.len() - 2);
    raw.extend_from_slice(line);
    raw.extend_from_slice(b"\r\n\r\n");
    raw
}

#[test]
fn duplicated_single_headers_are_400() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    let b = bearer(&t);
    let host = s.host();
    let same = format!("http://{host}");
    for (what, headers) in [
        (
            "Host",
            vec![
                ("Host", host.as_str()),
                ("Host", "evil.example"),
                ("Authorization", b.as_str()),
            ],
        ),
        (
            "Origin",
            vec![
                ("Origin", same.as_str()),
                ("Origin", "https://evil.example"),
            ],
        ),
        (
            "Authorization",
            vec![("Authorization", b.as_str()), ("Authorization", "Bearer x")],
        ),
        (
            "Sec-WebSocket-Key",
            vec![
                ("Authorization", b.as_str()),
                ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ],
        ),
    ] {
        let r = upgrade_status(&s, "/", &headers);
        assert_eq!(r.status, 400, "two {what} headers:\n{}", r.head);
        assert!(!r.has_header("sec-websocket-accept"));
        // The body names the header (the refusal table's one row built at run time).
        let body = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
        let want = format!(
            "bad request: more than one {} header\n",
            what.to_ascii_lowercase()
        );
        assert_eq!(body, want, "two {what} headers");
    }
    // On the endpoints too.
    let r = http(&s, "GET", "/healthz", &[("Host", "a"), ("Host", "b")]);
    assert_eq!(r.status, 400, "{}", r.head);
    s.wait_log_line(|l| l.contains("event=refuse") && l.contains("reason=duplicate_header"));
    // Repeatable headers are fine.
    let r = upgrade_status(
        &s,
        "/",
        &[
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("Authorization", b.as_str()),
        ],
    );
    assert_eq!(r.status, 101, "{}", r.head);
    assert_still_serves(&s, &t);
}

#[test]
fn token_carriers_that_are_not_utf8_are_invalid_tokens() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let host = s.host();
    for line in [
        &b"Authorization: Bearer v4.local.\xff\xfe"[..],
        b"Sec-WebSocket-Protocol: wsgate, v4.local.\xc3",
        b"Cookie: wsgate_token=\xff",
    ] {
        let what = String::from_utf8_lossy(line).into_owned();
        // No Origin: 401, not 101 into first-message auth.
        let r = http_raw(s.addr, &upgrade_with_line(&host, &[], line));
        assert_401(&r);
        // A browser (same origin): 101, then 4401 `invalid token`.
        let origin = format!("http://{host}");
        let raw = upgrade_with_line(&host, &[("Origin", &origin)], line);
        run(async {
            let (mut ws, r) = ws_raw(s.addr, &raw)
                .await
                .unwrap_or_else(|r| panic!("{what}: {}", r.head));
            assert_eq!(r.status, 101);
            assert_eq!(
                expect_close(&mut ws).await,
                (4401, "invalid token".to_owned()),
                "{what}"
            );
        });
    }
    s.wait_log_line(|l| l.contains("event=auth_fail") && l.contains("method=cookie"));
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}
