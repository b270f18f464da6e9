//! No input may panic: mutated request heads and first messages through the sans-IO
//! core (a deterministic, stable-toolchain stand-in for the fuzz targets in `fuzz/`),
//! and garbage over real sockets, after which the server still serves.

use std::net::IpAddr;

use wsgate::head::{self, Request};
use wsgate::{ClaimRules, Decision, Gate, GateConfig, Key, Methods, Verifier};

const NOW: i64 = 2_000_000_000;

/// xorshift64*: small, deterministic, good enough to mutate bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn gate() -> (Gate, String) {
    let key = Key::generate_local().unwrap();
    let token = key
        .issue(&wsgate::claims_json(
            "alice",
            NOW,
            600,
            None,
            None,
            None,
            &[],
        ))
        .unwrap();
    let mut config = GateConfig::new(Verifier::new(vec![key], ClaimRules::new(60)));
    config.methods = "header,protocol,cookie,query,message"
        .parse::<Methods>()
        .unwrap();
    config.allowed_origins = vec!["https://app.example.com".into()];
    config.ticket_capacity = 64;
    let gate = Gate::new(config).unwrap();
    (gate, token)
}

fn seed_requests(token: &str) -> Vec<Vec<u8>> {
    let base = "GET /ws?token=TOKEN HTTP/1.1\r\nHost: gw.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    [
        format!("{base}Authorization: Bearer TOKEN\r\n\r\n"),
        format!("{base}Sec-WebSocket-Protocol: wsgate, TOKEN\r\nOrigin: https://app.example.com\r\n\r\n"),
        format!("{base}Cookie: a=b; wsgate_token=\"TOKEN\"\r\nOrigin: http://gw.example:8080\r\n\r\n"),
        format!("{base}Origin: https://evil.example\r\n\r\n"),
        "POST /ticket HTTP/1.1\r\nAuthorization: Bearer TOKEN\r\nOrigin: https://app.example.com\r\n\r\n".to_owned(),
    ]
    .iter()
    .map(|s| s.replace("TOKEN", token).into_bytes())
    .collect()
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b":",
    b",",
    b";",
    b"=",
    b"%",
    b"%2e",
    b"\"",
    b" ",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
    b"v4.local.",
    b"v4.public.",
    b"Bearer ",
    b"[::1]",
    b"://",
    b"{",
    b"}",
    b"k4.lid.",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            1 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, piece.iter().copied());
            }
            2 if at < v.len() => v[at] = rng.next() as u8,
            3 if at < v.len() => v[at] ^= 1 << rng.below(8),
            _ => {
                let n = rng.below(40);
                let b = rng.next() as u8;
                v.splice(at..at, std::iter::repeat_n(b, n));
            }
        }
    }
    v
}

#[test]
fn mutated_heads_never_panic_and_decisions_stay_consistent() {
    let (gate, token) = gate();
    let seeds = seed_requests(&token);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let mut parsed = 0;
    for i in 0..20_000 {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let mut storage = head::header_storage();
        let Ok(Some((req, n))) = head::parse(&input, &mut storage) else {
            continue;
        };
        parsed += 1;
        assert!(n <= input.len());
        let _ = req.websocket_key();
        let _ = req.is_upgrade();
        match gate.check_upgrade(&req, peer, NOW) {
            Decision::Reject {
                in_band: true,
                rejection,
                ..
            } => {
                assert!(
                    req.header("origin").is_some(),
                    "in-band refusal only for browsers"
                );
                assert!(rejection.in_band_for_browsers());
            }
            Decision::Accept { identity, protocol } => {
                assert_eq!(identity.sub, "alice");
                // Token-shaped entries are never answered; `v4.` alone is not a token.
                assert!(
                    !protocol
                        .is_some_and(|p| p.starts_with("v4.local.") || p.starts_with("v4.public.")),
                    "a token is never echoed"
                );
            }
            _ => {}
        }
        let _ = gate.mint_ticket(&req, peer, NOW);
    }
    assert!(
        parsed > 1000,
        "mutations should still parse often ({parsed})"
    );
}

#[test]
fn mutated_first_messages_never_panic() {
    let (gate, token) = gate();
    let seeds = [
        token.clone(),
        format!(r#"{{"token":"{token}"}}"#),
        format!("  {token}\n"),
    ];
    let mut rng = Rng(42);
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    for i in 0..20_000 {
        let m = mutate(&mut rng, seeds[i % seeds.len()].as_bytes());
        if let Ok(text) = std::str::from_utf8(&m) {
            if let Ok(id) = gate.check_first_message(Some(text), peer, NOW) {
                assert_eq!(id.sub, "alice");
            }
        }
    }
}

#[test]
fn request_parts_survive_any_header_bytes() {
    let mut rng = Rng(7);
    for _ in 0..5_000 {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        for _ in 0..rng.below(64) {
            raw.push(rng.next() as u8);
        }
        raw.extend_from_slice(b"\r\n\r\n");
        let mut storage = head::header_storage();
        if let Some(req) = Request::parse_complete(&raw, &mut storage) {
            let _ = req.header("x");
            let _ = req.path();
        }
    }
}
