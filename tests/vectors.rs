//! The official PASETO v4 and PASERK k4 test vectors (tests/vectors/, ISC licence,
//! see tests/vectors/README.md), run through the verification path `serve` uses:
//! `Verifier::open` (bounds, purpose, footer `kid`, pasetors) then `ClaimRules::check`.

use data_encoding::{BASE64URL_NOPAD, HEXLOWER_PERMISSIVE};
use serde_json::Value;
use wsgate::{ClaimRules, Key, TokenError, UntrustedToken, Verifier};

fn load(name: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["tests"].as_array().unwrap().clone()
}

fn hex(v: &Value) -> Option<Vec<u8>> {
    HEXLOWER_PERMISSIVE.decode(v.as_str()?.as_bytes()).ok()
}

fn paserk(kind: &str, bytes: &[u8]) -> String {
    format!("k4.{kind}.{}", BASE64URL_NOPAD.encode(bytes))
}

/// The key `serve` would load for this vector, as a PASERK, by the token's purpose
/// or (for the purpose-confusion vectors) by whatever material the vector gives.
fn vector_key(t: &Value) -> Option<Key> {
    if let Some(k) = hex(&t["key"]) {
        return Key::from_paserk(&paserk("local", &k)).ok();
    }
    if let Some(pk) = hex(&t["public-key"]) {
        return Key::from_paserk(&paserk("public", &pk)).ok();
    }
    None
}

// 2021-12-31T00:00:00Z: before the vectors' exp of 2022-01-01.
const BEFORE_EXP: i64 = 1_640_908_800;
// 2022-01-02T00:00:01Z: after it, beyond the 60 s leeway.
const AFTER_EXP: i64 = 1_641_081_601;

#[test]
fn v4_vectors_through_the_serve_path() {
    let tests = load("v4.json");
    assert_eq!(tests.len(), 17);
    let rules = ClaimRules::new(60);
    let (mut ok, mut failed_as_expected) = (0, 0);
    for t in &tests {
        let name = t["name"].as_str().unwrap();
        let token = t["token"].as_str().unwrap();
        let implicit = t["implicit-assertion"].as_str().unwrap_or("").as_bytes();
        let footer = t["footer"].as_str().unwrap_or("");
        let key = vector_key(t).unwrap_or_else(|| panic!("{name}: no key"));
        if t["expect-fail"].as_bool().unwrap() {
            let v = Verifier::new(vec![key], rules.clone());
            assert!(
                v.open(UntrustedToken(token), implicit).is_err(),
                "{name} must fail"
            );
            failed_as_expected += 1;
            continue;
        }
        let payload = t["payload"].as_str().unwrap();
        // The cryptographic step with this key: pasetors, as serve calls it.
        assert_eq!(key.open(token, implicit).as_deref(), Ok(payload), "{name}");
        let v = Verifier::new(vec![key], rules.clone());
        let opened = v.open(UntrustedToken(token), implicit);
        if footer.starts_with('{') {
            // The vectors' kid is not a PASERK id of a loaded key: serve refuses such a
            // token whatever its signature (a `kid` naming no loaded key is invalid,
            // always).
            assert_eq!(opened, Err(TokenError::UnknownKid), "{name}");
            ok += 1;
            continue;
        }
        assert_eq!(opened.as_deref(), Ok(payload), "{name}");
        // Claims: the vectors carry `exp` but no `sub`, which wsgate requires.
        assert_eq!(
            rules.check(payload.to_owned(), BEFORE_EXP),
            Err(TokenError::MissingSub),
            "{name}"
        );
        assert_eq!(
            rules.check(payload.to_owned(), AFTER_EXP),
            Err(TokenError::Expired),
            "{name}"
        );
        ok += 1;
    }
    assert_eq!((ok, failed_as_expected), (12, 5));
}

#[test]
fn wrong_implicit_assertion_fails() {
    for t in load("v4.json") {
        let implicit = t["implicit-assertion"].as_str().unwrap_or("");
        if implicit.is_empty() || t["expect-fail"].as_bool().unwrap() {
            continue;
        }
        let key = vector_key(&t).unwrap();
        assert_eq!(
            key.open(t["token"].as_str().unwrap(), b"{}"),
            Err(TokenError::Forged)
        );
    }
}

#[test]
fn tampered_vectors_fail() {
    for t in load("v4.json") {
        if t["expect-fail"].as_bool().unwrap() {
            continue;
        }
        let token = t["token"].as_str().unwrap();
        let key = vector_key(&t).unwrap();
        let implicit = t["implicit-assertion"].as_str().unwrap_or("").as_bytes();
        let header = if token.starts_with("v4.local.") {
            9
        } else {
            10
        };
        let mut b = token.as_bytes().to_vec();
        b[header + 5] = if b[header + 5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(b).unwrap();
        assert!(key.open(&tampered, implicit).is_err(), "{}", t["name"]);
    }
}

#[test]
fn paserk_keys_round_trip_and_bad_ones_are_refused() {
    for (file, kind) in [
        ("k4.local.json", "local"),
        ("k4.public.json", "public"),
        ("k4.secret.json", "secret"),
    ] {
        for t in load(&format!("PASERK/{file}")) {
            let name = t["name"].as_str().unwrap();
            let given = match (t["paserk"].as_str(), hex(&t["key"])) {
                (Some(p), _) => p.to_owned(),
                (None, Some(k)) => paserk(kind, &k),
                (None, None) => continue,
            };
            let loaded = Key::from_paserk(&given);
            if name == "k4.secret-1" {
                // A valid PASERK whose Ed25519 seed is all zeros: pasetors panics on it,
                // so wsgate refuses it up front with a clear error (`docs/decisions.md`).
                assert_eq!(loaded.unwrap_err(), wsgate::KeyError::WeakKey);
                continue;
            }
            if t["expect-fail"].as_bool().unwrap() {
                assert!(loaded.is_err(), "{name} must be refused");
            } else {
                let key = loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(key.to_paserk().as_str(), given, "{name}");
                if let Some(k) = hex(&t["key"]) {
                    assert_eq!(given, paserk(kind, &k), "{name}");
                }
            }
        }
    }
}

#[test]
fn paserk_ids_match_the_kid_serve_selects_by() {
    for (file, kind) in [("k4.lid.json", "local"), ("k4.pid.json", "public")] {
        for t in load(&format!("PASERK/{file}")) {
            let name = t["name"].as_str().unwrap();
            let Some(k) = hex(&t["key"]) else { continue };
            let key = Key::from_paserk(&paserk(kind, &k));
            if t["expect-fail"].as_bool().unwrap() {
                assert!(key.is_err(), "{name} must be refused");
            } else {
                assert_eq!(key.unwrap().id(), t["paserk"].as_str().unwrap(), "{name}");
            }
        }
    }
}
