//! Cost of the sans-IO decision core per method, of its rejection paths, and of
//! token verification, each as a ratio to the floor: pasetors' own v4.local decrypt
//! plus a serde parse of the claims (what any server with a PASETO check must do).
//!
//! `cargo bench --bench gate` (WSGATE_BENCH_SAMPLES, WSGATE_BENCH_BATCH_MS tune it).

mod harness;

use std::net::IpAddr;

use pasetors::token::UntrustedToken as PasetoToken;
use pasetors::version4::LocalToken;
use wsgate::{ClaimRules, Decision, Gate, GateConfig, Key, UntrustedToken, Verifier, head};

const NOW: i64 = 2_000_000_000;

fn gate(keys: Vec<Key>, origins: Vec<String>, capacity: usize) -> Gate {
    let mut config = GateConfig::new(Verifier::new(keys, ClaimRules::new(60)));
    config.allowed_origins = origins;
    config.ticket_capacity = capacity;
    Gate::new(config).unwrap()
}

fn upgrade_head(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         User-Agent: bench/1\r\n{extra}\r\n"
    )
}

/// Parses `raw` and decides it, as the server does once the head is complete.
fn decide(g: &Gate, raw: &str, peer: IpAddr) -> bool {
    let mut storage = head::header_storage();
    let req = head::Request::parse_complete(raw.as_bytes(), &mut storage).unwrap();
    matches!(g.check_upgrade(&req, peer, NOW), Decision::Accept { .. })
}

fn main() {
    if !harness::enabled() {
        return;
    }
    let peer: IpAddr = "127.0.0.1".parse().unwrap();
    let local = Key::generate_local().unwrap();
    let local_paserk = local.to_paserk();
    let secret = Key::generate_secret().unwrap();
    let claims = wsgate::claims_json("alice", NOW, 900, None, None, None, &[]);
    let tok = local.issue(&claims).unwrap();
    let ptok = secret.issue(&claims).unwrap();
    let expired = local
        .issue(&wsgate::claims_json(
            "alice",
            NOW - 7200,
            900,
            None,
            None,
            None,
            &[],
        ))
        .unwrap();
    let mut tampered = tok.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    let g = gate(
        vec![Key::from_paserk(&local_paserk).unwrap()],
        vec![],
        1 << 22,
    );
    let gp = gate(vec![secret.public_key().unwrap()], vec![], 16);

    // The floor: pasetors decrypt + serde claims, nothing else.
    let pk =
        pasetors::keys::SymmetricKey::<pasetors::version4::V4>::try_from(local_paserk.as_str())
            .unwrap();
    #[derive(serde::Deserialize)]
    struct Min<'a> {
        #[serde(borrow)]
        sub: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        exp: std::borrow::Cow<'a, str>,
    }
    let floor = harness::time(|| {
        let t =
            PasetoToken::<pasetors::token::Local, pasetors::version4::V4>::try_from(&tok).unwrap();
        let opened = LocalToken::decrypt(&pk, &t, None, None).unwrap();
        let m: Min<'_> = serde_json::from_str(opened.payload()).unwrap();
        wsgate::internal::parse_rfc3339(&m.exp).unwrap() > NOW && !m.sub.is_empty()
    });

    // The same gate with a full revocation list that matches none of the tokens.
    let g_revoked = gate(vec![Key::from_paserk(&local_paserk).unwrap()], vec![], 16);
    for i in 0..50_000 {
        let j = wsgate::Revocation::Jti(format!("revoked-jti-{i:08}"));
        let s = wsgate::Revocation::Sub(format!("revoked-user-{i:08}"));
        g_revoked.revoke(&j, NOW).unwrap();
        g_revoked.revoke(&s, NOW).unwrap();
    }
    let h_header = upgrade_head(&format!("Authorization: Bearer {tok}\r\n"));
    let h_protocol = upgrade_head(&format!("Sec-WebSocket-Protocol: wsgate, {tok}\r\n"));
    let h_cookie = upgrade_head(&format!("Cookie: theme=dark; wsgate_token={tok}\r\n"));
    let h_none = upgrade_head("");
    let h_bad = upgrade_head(&format!("Authorization: Bearer {tampered}\r\n"));
    let h_expired = upgrade_head(&format!("Authorization: Bearer {expired}\r\n"));
    let h_origin = upgrade_head(&format!(
        "Origin: https://evil.example\r\nCookie: wsgate_token={tok}\r\n"
    ));
    let h_public = upgrade_head(&format!("Authorization: Bearer {ptok}\r\n"));
    let json_msg = format!(r#"{{"token":"{tok}"}}"#);

    // Tickets are single use: mint a batch, then time their checks.
    let mint_head = format!(
        "POST /ticket HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer {tok}\r\n\r\n"
    );
    let mint = |g: &Gate| {
        let mut storage = head::header_storage();
        let req = head::Request::parse_complete(mint_head.as_bytes(), &mut storage).unwrap();
        g.mint_ticket(&req, peer, NOW).unwrap().token
    };
    let t_mint = harness::time(|| mint(&g));
    let batch: usize = harness::env_or("WSGATE_BENCH_TICKETS", 20_000);
    let gt = gate(
        vec![Key::from_paserk(&local_paserk).unwrap()],
        vec![],
        batch * 6,
    );
    let mut ticket_ns = Vec::new();
    for _ in 0..5 {
        let heads: Vec<String> = (0..batch)
            .map(|_| upgrade_head(&format!("Authorization: Bearer {}\r\n", mint(&gt))))
            .collect();
        let t = std::time::Instant::now();
        for h in &heads {
            assert!(decide(&gt, h, peer));
        }
        ticket_ns.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    let t_ticket_min = ticket_ns.iter().copied().fold(f64::INFINITY, f64::min);
    let t_ticket = (harness::median(&mut ticket_ns), t_ticket_min);

    let rows: Vec<(&str, harness::Timing)> = vec![
        (
            "head parse only (no decision)",
            harness::time(|| {
                let mut storage = head::header_storage();
                head::Request::parse_complete(h_header.as_bytes(), &mut storage).is_some()
            }),
        ),
        (
            "header: parse + check_upgrade",
            harness::time(|| decide(&g, &h_header, peer)),
        ),
        (
            "header, 100 000 revocations loaded",
            harness::time(|| decide(&g_revoked, &h_header, peer)),
        ),
        (
            "cookie, 100 000 revocations loaded",
            harness::time(|| decide(&g_revoked, &h_cookie, peer)),
        ),
        (
            "protocol: parse + check_upgrade",
            harness::time(|| decide(&g, &h_protocol, peer)),
        ),
        (
            "cookie: parse + check_upgrade",
            harness::time(|| decide(&g, &h_cookie, peer)),
        ),
        (
            "message: no token -> AwaitMessage",
            harness::time(|| !decide(&g, &h_none, peer)),
        ),
        (
            "message: check_first_message raw",
            harness::time(|| g.check_first_message(Some(&tok), peer, NOW).is_ok()),
        ),
        (
            "message: check_first_message JSON",
            harness::time(|| g.check_first_message(Some(&json_msg), peer, NOW).is_ok()),
        ),
        ("ticket: mint_ticket (POST /ticket)", t_mint),
        (
            "reject: tampered token",
            harness::time(|| !decide(&g, &h_bad, peer)),
        ),
        (
            "reject: expired token",
            harness::time(|| !decide(&g, &h_expired, peer)),
        ),
        (
            "reject: origin refused (cookie)",
            harness::time(|| !decide(&g, &h_origin, peer)),
        ),
        (
            "verify v4.local (Verifier::verify)",
            harness::time(|| g.verifier().verify(UntrustedToken(&tok), NOW).is_ok()),
        ),
        (
            "verify v4.public (Verifier::verify)",
            harness::time(|| gp.verifier().verify(UntrustedToken(&ptok), NOW).is_ok()),
        ),
        (
            "header v4.public: parse + check",
            harness::time(|| decide(&gp, &h_public, peer)),
        ),
    ];

    let samples: usize = harness::env_or("WSGATE_BENCH_SAMPLES", 7);
    println!(
        "decision core, ns per call over {samples} batches; the ratio uses the fastest batch \
         (the least disturbed by other work on the machine); spread = (max-min)/median"
    );
    println!(
        "{:<44}{:>9}{:>9}{:>9}{:>9}",
        "case", "median", "min", "x floor", "spread"
    );
    let line = |name: &str, median: f64, min: f64, spread: Option<f64>| {
        let spread = spread.map_or("-".to_owned(), |s| format!("{s:.0}%"));
        println!(
            "{name:<44}{median:>9.0}{min:>9.0}{:>9.2}{spread:>9}",
            min / floor.min_ns
        );
    };
    line(
        "FLOOR pasetors decrypt + serde claims",
        floor.median_ns,
        floor.min_ns,
        Some(floor.spread_pct()),
    );
    for (name, t) in &rows {
        line(name, t.median_ns, t.min_ns, Some(t.spread_pct()));
    }
    line(
        "ticket: parse + check_upgrade (single use)",
        t_ticket.0,
        t_ticket.1,
        None,
    );
}
