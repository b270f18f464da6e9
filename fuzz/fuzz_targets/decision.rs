//! The upgrade decision and the first-message check on arbitrary request heads and
//! text: never panics; a token (`v4.local.…`, `v4.public.…`) is never echoed as the
//! subprotocol, which is always one offered; in-band refusals only for requests with
//! an Origin. (Other entries are answered as offered, `v4.` or `v4.loca` included:
//! they are not tokens.)
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsgate::{ClaimRules, Decision, Gate, GateConfig, Key, Verifier};

fn gate() -> &'static Gate {
    static GATE: OnceLock<Gate> = OnceLock::new();
    GATE.get_or_init(|| {
        let key = Key::generate_local().unwrap();
        let mut config = GateConfig::new(Verifier::new(vec![key], ClaimRules::default()));
        config.methods = "header,protocol,cookie,query,message".parse().unwrap();
        config.allowed_origins = vec!["https://app.example.com".into()];
        config.ticket_capacity = 1024;
        Gate::new(config).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let peer = "10.0.0.1".parse().unwrap();
    let mut storage = wsgate::head::header_storage();
    if let Ok(Some((req, _))) = wsgate::head::parse(data, &mut storage) {
        match gate().check_upgrade(&req, peer, 2_000_000_000) {
            Decision::Reject { in_band: true, .. } => assert!(req.header("origin").is_some()),
            Decision::Accept { protocol, .. } | Decision::AwaitMessage { protocol, .. } => {
                if let Some(p) = protocol {
                    assert!(!p.starts_with("v4.local.") && !p.starts_with("v4.public."));
                    let mut offered = req
                        .headers_named("sec-websocket-protocol")
                        .flat_map(|v| v.split(','));
                    assert!(offered.any(|o| o.trim() == p), "{p:?} not offered");
                }
            }
            _ => {}
        }
        let _ = gate().mint_ticket(&req, peer, 2_000_000_000);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gate().check_first_message(Some(text), peer, 2_000_000_000);
    }
});
