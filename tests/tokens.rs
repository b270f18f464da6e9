//! Tokens and keys (`docs/protocol.md#tokens`): v4.local / v4.public keys, key rotation by
//! `kid`, purpose confusion, time claims with leeway, audience / issuer, `WSGATE_KEY`.

mod common;
use common::*;

fn ok(s: &Server, token: &str) {
    run(async {
        let mut ws = ws_bearer(s, token).await;
        assert_echo(&mut ws).await;
    });
}

fn rejected(s: &Server, token: &str) {
    assert_401(&upgrade_status(
        s,
        "/",
        &[("Authorization", &bearer(token))],
    ));
}

#[test]
fn public_key_verifies_public_tokens() {
    let kp = PublicKeyPair::generate();
    let s = Server::start(&kp.arg());
    ok(&s, &kp.token(&Claims::new("alice")));
    ok(&s, &kp.token_no_footer(&Claims::new("alice")));
    let other = PublicKeyPair::generate();
    rejected(&s, &other.token_no_footer(&Claims::new("alice")));
    rejected(&s, &tamper(&kp.token(&Claims::new("alice"))));
}

#[test]
fn several_keys_kid_selects_the_key() {
    let a = LocalKey::generate();
    let b = LocalKey::generate();
    let p = PublicKeyPair::generate();
    let s = Server::start(&[&a.arg()[..], &b.arg(), &p.arg()].concat());
    ok(&s, &a.token(&Claims::new("a")));
    ok(&s, &b.token(&Claims::new("b")));
    ok(&s, &p.token(&Claims::new("p")));
    // A token sealed with A but naming B is invalid (the kid selects B, which fails).
    let wrong = a.token_with_footer(&Claims::new("a").json(), Some(&kid_footer(&b.kid)));
    rejected(&s, &wrong);
}

#[test]
fn unknown_kid_is_invalid_always() {
    let a = LocalKey::generate();
    let c = LocalKey::generate();
    // Single key: a token sealed with it but naming another kid is still invalid.
    let s = Server::start(&a.arg());
    let t = a.token_with_footer(&Claims::new("a").json(), Some(&kid_footer(&c.kid)));
    rejected(&s, &t);
    rejected(&s, &c.token(&Claims::new("c")));
    ok(&s, &a.token(&Claims::new("a")));
}

#[test]
fn no_kid_tries_each_key_in_order() {
    let a = LocalKey::generate();
    let b = LocalKey::generate();
    let c = LocalKey::generate();
    let s = Server::start(&[&a.arg()[..], &b.arg()].concat());
    ok(&s, &a.token_no_footer(&Claims::new("a")));
    ok(&s, &b.token_no_footer(&Claims::new("b")));
    rejected(&s, &c.token_no_footer(&Claims::new("c")));
}

#[test]
fn public_token_never_tried_against_local_key() {
    let a = LocalKey::generate();
    let s = Server::start(&a.arg());
    let p = PublicKeyPair::generate();
    rejected(&s, &p.token(&Claims::new("p")));
    rejected(&s, &p.token_no_footer(&Claims::new("p")));
    ok(&s, &a.token(&Claims::new("a")));
}

#[test]
fn local_token_never_tried_against_public_key() {
    let p = PublicKeyPair::generate();
    let s = Server::start(&p.arg());
    let a = LocalKey::generate();
    rejected(&s, &a.token(&Claims::new("a")));
    rejected(&s, &a.token_no_footer(&Claims::new("a")));
    ok(&s, &p.token(&Claims::new("p")));
}

#[test]
fn kid_of_other_purpose_is_invalid() {
    // A v4.public token whose footer names a loaded *local* key, and the reverse.
    let a = LocalKey::generate();
    let p = PublicKeyPair::generate();
    let s = Server::start(&[&a.arg()[..], &p.arg()].concat());
    rejected(
        &s,
        &p.token_with_footer(&Claims::new("p").json(), Some(&kid_footer(&a.kid))),
    );
    rejected(
        &s,
        &a.token_with_footer(&Claims::new("a").json(), Some(&kid_footer(&p.kid))),
    );
}

#[test]
fn leeway_default_60_s_on_exp_nbf_iat() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    ok(&s, &k.token(&Claims::new("a").exp_in(-20)));
    ok(&s, &k.token(&Claims::new("a").nbf_in(20)));
    ok(&s, &k.token(&Claims::new("a").iat_in(20)));
    rejected(&s, &k.token(&Claims::new("a").exp_in(-600)));
    rejected(&s, &k.token(&Claims::new("a").nbf_in(600).exp_in(1200)));
    rejected(&s, &k.token(&Claims::new("a").iat_in(600).exp_in(1200)));
}

#[test]
fn leeway_zero() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--leeway", "0"]].concat());
    rejected(&s, &k.token(&Claims::new("a").exp_in(-20)));
    rejected(&s, &k.token(&Claims::new("a").nbf_in(20)));
    rejected(&s, &k.token(&Claims::new("a").iat_in(20)));
    ok(&s, &k.token(&Claims::new("a").nbf_in(-5).iat_in(-5)));
}

#[test]
fn leeway_large() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--leeway", "600"]].concat());
    ok(&s, &k.token(&Claims::new("a").exp_in(-300)));
    ok(&s, &k.token(&Claims::new("a").nbf_in(300)));
    ok(&s, &k.token(&Claims::new("a").iat_in(300)));
}

#[test]
fn audience_checked_when_configured() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--audience", "chat"]].concat());
    ok(&s, &k.token(&Claims::new("a").set("aud", "chat")));
    rejected(&s, &k.token(&Claims::new("a").set("aud", "billing")));
    rejected(&s, &k.token(&Claims::new("a")));
    // Not configured: any aud is accepted.
    let open = Server::start(&k.arg());
    ok(&open, &k.token(&Claims::new("a").set("aud", "billing")));
}

#[test]
fn issuer_checked_when_configured() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--issuer", "https://auth.example.com"]].concat());
    ok(
        &s,
        &k.token(&Claims::new("a").set("iss", "https://auth.example.com")),
    );
    rejected(
        &s,
        &k.token(&Claims::new("a").set("iss", "https://auth.example.org")),
    );
    rejected(&s, &k.token(&Claims::new("a")));
    let open = Server::start(&k.arg());
    ok(&open, &k.token(&Claims::new("a").set("iss", "anyone")));
}

#[test]
fn wsgate_key_env_holds_a_paserk() {
    let k = LocalKey::generate();
    let s = Server::start_env(&[], &[("WSGATE_KEY", &k.paserk)]);
    ok(&s, &k.token(&Claims::new("a")));
    rejected(&s, &LocalKey::generate().token(&Claims::new("a")));
    let p = PublicKeyPair::generate();
    let s = Server::start_env(&[], &[("WSGATE_KEY", &p.public_paserk)]);
    ok(&s, &p.token(&Claims::new("p")));
}

#[test]
fn wsgate_key_env_ignored_when_key_given() {
    let env_key = LocalKey::generate();
    let file_key = LocalKey::generate();
    let s = Server::start_env(&file_key.arg(), &[("WSGATE_KEY", &env_key.paserk)]);
    ok(&s, &file_key.token(&Claims::new("a")));
    rejected(&s, &env_key.token_no_footer(&Claims::new("a")));
}

#[test]
fn key_file_may_end_in_whitespace() {
    let k = LocalKey::generate();
    std::fs::write(&k.path, format!("{}\n\n \t\r\n", k.paserk)).unwrap();
    let s = Server::start(&k.arg());
    ok(&s, &k.token(&Claims::new("a")));
}

#[test]
fn custom_claims_and_footer_accepted_interop() {
    // Tokens from another conforming library (pasetors here) with extra claims.
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let claims = Claims::new("a")
        .set("jti", "123")
        .set("role", "admin")
        .set("n", 5)
        .set("iat", "2020-01-01T00:00:00+00:00");
    ok(&s, &k.token(&claims));
    // Fractional seconds and an offset in exp.
    let exp = rfc3339(now() + 3600).replace('Z', ".250+00:00");
    ok(&s, &k.token(&Claims::new("a").set("exp", exp)));
}

#[test]
fn a_json_footer_without_kid_tries_every_key_of_the_purpose() {
    // Other libraries write footers of their own (PASETO's `wpk`, an application's
    // claims): no `kid` there, so each loaded key is tried, as for no footer at all.
    let (first, k) = (LocalKey::generate(), LocalKey::generate());
    let p = PublicKeyPair::generate();
    let s = Server::start(&[&first.arg()[..], &k.arg()[..], &p.arg()[..]].concat());
    let json = Claims::new("alice").json();
    for footer in [
        "{}",
        r#"{"wpk":"k4.local-wrap.pie.x"}"#,
        r#"{"app":{"v":2},"n":[1]}"#,
    ] {
        ok(&s, &k.token_with_footer(&json, Some(footer)));
        ok(&s, &p.token_with_footer(&json, Some(footer)));
    }
    // With a kid beside them, the kid still decides: `first` cannot open k's token.
    let footer = format!(r#"{{"wpk":"x","kid":"{}"}}"#, first.kid);
    rejected(&s, &k.token_with_footer(&json, Some(&footer)));
    ok(&s, &first.token_with_footer(&json, Some(&footer)));
}

#[test]
fn a_token_has_one_spelling_a_usable_sub_and_an_object_footer() {
    let k = LocalKey::generate();
    let p = PublicKeyPair::generate();
    let s = Server::start(&[&k.arg()[..], &p.arg()[..]].concat());
    // An empty footer written with its `.`: the same token spelled twice.
    let t = p.token_no_footer(&Claims::new("alice"));
    ok(&s, &t);
    rejected(&s, &format!("{t}."));
    let t = k.token_no_footer(&Claims::new("alice"));
    rejected(&s, &format!("{t}."));
    // A JSON footer that is not an object.
    let json = Claims::new("alice").json();
    rejected(&s, &p.token_with_footer(&json, Some("[1,2]")));
    rejected(&s, &k.token_with_footer(&json, Some("\"x\"")));
    // An object whose kid is not a string.
    rejected(&s, &k.token_with_footer(&json, Some(r#"{"kid":7}"#)));
    // An empty sub, or one with a control character: no identity to hand on.
    rejected(&s, &k.token(&Claims::new("")));
    rejected(&s, &k.token(&Claims::new("a\u{0}b")));
    rejected(&s, &p.token(&Claims::new("tab\there")));
    s.wait_log_line(|l| l.contains("event=auth_fail") && l.contains("detail=bad_sub"));
    s.wait_log_line(|l| l.contains("event=auth_fail") && l.contains("detail=bad_footer"));
    // A sub beyond ASCII is an identity like any other.
    ok(&s, &k.token(&Claims::new("Zoë")));
}

#[test]
fn keyless_serve_prints_a_working_demo_token() {
    let s = Server::start(&[]);
    let log = s
        .stderr
        .wait_for(IO_TIMEOUT, |t| t.contains("v4.local."))
        .unwrap_or_else(|| s.log());
    let start = log
        .find("v4.local.")
        .unwrap_or_else(|| panic!("no demo token on stderr:\n{log}"));
    let token: String = log[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .collect();
    let token = token.trim_end_matches('.').to_owned();
    ok(&s, &token);
}
