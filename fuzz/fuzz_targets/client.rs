//! The client handshake (wsgate::client) on arbitrary input: never panics.
//!
//! The first byte picks what is fuzzed:
//! - 0, 1: `Upgrade::check_answer` on an answer arriving in two reads (split where
//!   bytes 1..3 say), without and with subprotocols offered. `@@` in the input stands
//!   for the expected `Sec-WebSocket-Accept` (the key is random), so that the fuzzer
//!   gets past that check. A complete head is at most `MAX_ANSWER_HEAD` and at most
//!   the input; an incomplete one is under the bound; a prefix of the head is
//!   incomplete, and bytes after the head change nothing (what the read loop of
//!   `client::handshake` relies on).
//! - 2: `WsUrl::parse` (and `UpstreamUrl::parse`, `target_for`) on a string: an
//!   accepted URL is what its doc says, prints as a URL that parses back to it, and
//!   can be sent (`Upgrade::new` accepts its authority and path).
//! - 3: `Upgrade::new` on lines (host, target, `name:value` headers): a request it
//!   builds is one wsgate's own server parses, and the server's `101` to it passes
//!   `check_answer`.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsgate::client::{MAX_ANSWER_HEAD, Upgrade, WsUrl};
use wsgate::head::{self, MAX_HEAD, MAX_HEADERS};
use wsgate::internal::UpstreamUrl;

/// Stands for the expected `Sec-WebSocket-Accept` in an answer.
const ACCEPT_MARK: &[u8] = b"@@";

/// An upgrade and the `Sec-WebSocket-Accept` its answer must carry.
fn upgrades() -> &'static [(Upgrade, String); 2] {
    static UPGRADES: OnceLock<[(Upgrade, String); 2]> = OnceLock::new();
    UPGRADES.get_or_init(|| {
        let make = |headers: &[(&str, &str)]| {
            let u = Upgrade::new("h:1", "/a?b=1", headers).unwrap();
            let mut storage = head::header_storage();
            let req = head::Request::parse_complete(u.request(), &mut storage).unwrap();
            let accept = head::accept_key(req.websocket_key().unwrap());
            (u, accept)
        };
        [
            make(&[]),
            make(&[("Sec-WebSocket-Protocol", "wsgate, chat")]),
        ]
    })
}

fn replace_mark(data: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32);
    let mut rest = data;
    while !rest.is_empty() {
        if rest.starts_with(ACCEPT_MARK) {
            out.extend_from_slice(with);
            rest = &rest[ACCEPT_MARK.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn answer(which: usize, data: &[u8]) {
    let (upgrade, accept) = &upgrades()[which];
    let (cut, data) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let full = replace_mark(data, accept.as_bytes());
    let cut = cut % (full.len() + 1);
    let first = upgrade.check_answer(&full[..cut]);
    let whole = upgrade.check_answer(&full);
    if let Err(e) = &first {
        let _ = e.to_string();
    }
    if let Err(e) = &whole {
        let _ = e.to_string();
    }
    match whole {
        Ok(Some(n)) => {
            assert!(n <= full.len() && n <= MAX_ANSWER_HEAD, "{n}");
            assert!(full[..n].ends_with(b"\n"));
            // The accepted head carries the accept value; what follows is data.
            assert!(
                full[..n]
                    .windows(accept.len())
                    .any(|w| w == accept.as_bytes())
            );
            if cut < n {
                assert!(matches!(first, Ok(None)), "cut {cut} of {n}: {first:?}");
            } else {
                assert!(
                    matches!(first, Ok(Some(m)) if m == n),
                    "cut {cut} of {n}: {first:?}"
                );
            }
        }
        Ok(None) => {
            assert!(full.len() < MAX_ANSWER_HEAD);
            assert!(matches!(first, Ok(None)), "{first:?}");
        }
        Err(_) => {
            // A head the prefix already holds is judged the same with more bytes.
            assert!(!matches!(first, Ok(Some(_))), "{first:?}");
        }
    }
}

fn url(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let (s, client_target) = s.split_once('\n').unwrap_or((&s, "/"));
    let upstream = UpstreamUrl::parse(s);
    match WsUrl::parse(s) {
        Ok(u) => {
            assert!(u.port() != 0);
            assert!(!u.host().is_empty());
            assert!(u.path().starts_with('/'));
            let graphic = |v: &str| v.bytes().all(|b| b.is_ascii_graphic());
            assert!(graphic(u.authority()) && graphic(u.path()));
            assert!(!u.authority().contains(['@', '/', '?', '#']));
            assert!(!u.path().contains('#'));
            assert!(u.authority().contains(u.host()));
            let printed = u.to_string();
            assert_eq!(WsUrl::parse(&printed).as_ref(), Ok(&u), "{printed}");
            assert!(Upgrade::new(u.authority(), u.path(), &[]).is_ok(), "{u}");
            assert_eq!(upstream.is_ok(), !u.path().contains('?'));
        }
        Err(why) => {
            assert!(!why.is_empty());
            assert!(upstream.is_err());
        }
    }
    if let Ok(up) = upstream {
        let target = up.target_for(client_target);
        assert!(target.starts_with('/'), "{target}");
        let _ = up.to_string();
    }
}

fn request(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let mut lines = s.split('\n');
    let host = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = lines
        .take(MAX_HEADERS)
        .map(|l| l.split_once(':').unwrap_or((l, "")))
        .collect();
    let upgrade = match Upgrade::new(host, target, &headers) {
        Ok(u) => u,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let bytes = upgrade.request();
    assert!(bytes.starts_with(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n").as_bytes()));
    assert!(bytes.ends_with(b"\r\n\r\n"));
    if bytes.len() > MAX_HEAD || headers.len() + 5 > MAX_HEADERS {
        return;
    }
    let mut storage = head::header_storage();
    let parsed = head::parse(bytes, &mut storage);
    let Ok(Some((req, n))) = parsed else {
        panic!(
            "server refuses {:?}: {parsed:?}",
            String::from_utf8_lossy(bytes)
        );
    };
    assert_eq!(n, bytes.len());
    assert_eq!((req.method, req.target), ("GET", target));
    assert!(req.is_upgrade());
    let key = req.websocket_key().unwrap();
    // The server chooses the first subprotocol offered (the last header sent counts).
    let offered = headers
        .iter()
        .rev()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"));
    let protocol = offered.map(|(_, v)| v.split(',').next().unwrap_or_default().trim());
    let answer = head::switching_protocols(key, protocol);
    let checked = upgrade.check_answer(&answer);
    assert!(
        matches!(checked, Ok(Some(n)) if n == answer.len()),
        "{checked:?} for {:?}",
        String::from_utf8_lossy(&answer)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => answer(0, rest),
        1 => answer(1, rest),
        2 => url(rest),
        _ => request(rest),
    }
});
