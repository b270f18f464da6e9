//! The command line (`docs/operations.md#command-line`): `keygen`, `issue`, `verify`,
//! configuration errors, `--help`.

mod common;
use common::*;
use pasetors::keys::{AsymmetricPublicKey, AsymmetricSecretKey, SymmetricKey};
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, PublicToken, V4};
use pasetors::{Local, Public};
use std::os::unix::fs::PermissionsExt;

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_b64url(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn ok_stdout(args: &[&str]) -> String {
    let o = wsgate(args);
    assert!(
        o.status.success(),
        "wsgate {args:?} failed: {:?}\n{}",
        o.status,
        stderr_of(&o)
    );
    stdout_of(&o)
}

/// Asserts the config-error contract: exit 2, exactly one line `error: …` mentioning `needle`.
fn assert_config_error(o: &std::process::Output, needle: &str) {
    let err = stderr_of(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "exit status {:?}, stderr:\n{err}",
        o.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{err}");
    assert!(
        lines[0].starts_with("error: "),
        "line must start with `error: `: {err}"
    );
    assert!(
        lines[0].contains(needle),
        "the error must name {needle:?}: {err}"
    );
}

fn decrypt_local(key: &SymmetricKey<V4>, token: &str) -> serde_json::Value {
    let u = UntrustedToken::<Local, V4>::try_from(token).unwrap();
    let t = LocalToken::decrypt(key, &u, None, None).expect("token decrypts with the key");
    serde_json::from_str(t.payload()).unwrap()
}

fn footer_of(token: &str) -> serde_json::Value {
    let f = token.split('.').nth(3).expect("a footer");
    let bytes = data_encoding::BASE64URL_NOPAD.decode(f.as_bytes()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn keygen_local_writes_paserk_mode_0600() {
    let dir = TempDir::new();
    let f = dir.file("k");
    ok_stdout(&["keygen", "--out", &f]);
    assert_eq!(mode(&f), 0o600);
    let text = std::fs::read_to_string(&f).unwrap();
    let line = text.strip_suffix('\n').unwrap_or(&text);
    assert!(!line.contains('\n'));
    let b64 = line
        .strip_prefix("k4.local.")
        .unwrap_or_else(|| panic!("not k4.local: {text}"));
    assert!(is_b64url(b64) && b64.len() == 43, "{b64}");
    SymmetricKey::<V4>::try_from(line).expect("a valid PASERK");
    // Two runs make two different keys.
    let g = dir.file("k2");
    ok_stdout(&["keygen", "--out", &g]);
    assert_ne!(std::fs::read_to_string(&g).unwrap(), text);
}

#[test]
fn keygen_public_writes_secret_and_pub_mode_0600() {
    let dir = TempDir::new();
    let f = dir.file("ed");
    let pubf = format!("{f}.pub");
    ok_stdout(&["keygen", "--public", "--out", &f]);
    assert_eq!(mode(&f), 0o600);
    assert_eq!(mode(&pubf), 0o600);
    let secret = std::fs::read_to_string(&f).unwrap();
    let public = std::fs::read_to_string(&pubf).unwrap();
    assert!(secret.starts_with("k4.secret."), "{secret}");
    assert!(public.starts_with("k4.public."), "{public}");
    let sk = AsymmetricSecretKey::<V4>::try_from(secret.trim()).expect("valid k4.secret");
    let pk = AsymmetricPublicKey::<V4>::try_from(public.trim()).expect("valid k4.public");
    let derived = AsymmetricPublicKey::<V4>::try_from(&sk).unwrap();
    assert_eq!(
        derived, pk,
        "the .pub file holds the secret key's public half"
    );
}

#[test]
fn issue_local_token_claims_and_kid() {
    let dir = TempDir::new();
    let f = dir.file("k");
    ok_stdout(&["keygen", "--out", &f]);
    let key = LocalKey::from_file(&f);
    let out = ok_stdout(&[
        "issue",
        "--key",
        &f,
        "--sub",
        "alice",
        "--ttl",
        "15m",
        "--aud",
        "chat",
        "--iss",
        "me",
        "--claim",
        "role=admin",
        "--claim",
        "team=blue",
        "--jti",
        "id-1",
    ]);
    assert_eq!(out.lines().count(), 1, "one token line: {out}");
    let token = out.trim();
    assert!(token.starts_with("v4.local."), "{token}");
    assert_eq!(footer_of(token), serde_json::json!({ "kid": key.kid }));
    let c = decrypt_local(&key.key, token);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "chat");
    assert_eq!(c["iss"], "me");
    assert_eq!(c["role"], "admin");
    assert_eq!(c["team"], "blue");
    assert_eq!(c["jti"], "id-1");
    let exp = parse_rfc3339(c["exp"].as_str().expect("exp is RFC 3339")).unwrap();
    // 15 minutes from (about) now; a wide window, this is not a timing test.
    assert!(
        (exp - now() - 900).abs() < 120,
        "exp {exp} vs now {}",
        now()
    );
}

#[test]
fn issue_ttl_units() {
    let k = LocalKey::generate();
    for (ttl, secs) in [("30s", 30), ("15m", 900), ("2h", 7200)] {
        let out = ok_stdout(&["issue", "--key", &k.path, "--sub", "s", "--ttl", ttl]);
        let c = decrypt_local(&k.key, out.trim());
        let exp = parse_rfc3339(c["exp"].as_str().unwrap()).unwrap();
        assert!((exp - now() - secs).abs() < 120, "--ttl {ttl}: exp {exp}");
    }
}

#[test]
fn issue_public_token_with_pid() {
    let dir = TempDir::new();
    let f = dir.file("ed");
    ok_stdout(&["keygen", "--public", "--out", &f]);
    let pk = AsymmetricPublicKey::<V4>::try_from(
        std::fs::read_to_string(format!("{f}.pub")).unwrap().trim(),
    )
    .unwrap();
    let out = ok_stdout(&["issue", "--key", &f, "--sub", "bob"]);
    let token = out.trim();
    assert!(token.starts_with("v4.public."), "{token}");
    let kid = footer_of(token)["kid"].as_str().unwrap().to_owned();
    assert!(kid.starts_with("k4.pid."), "{kid}");
    let mut expect = String::new();
    pasetors::paserk::FormatAsPaserk::fmt(&pasetors::paserk::Id::from(&pk), &mut expect).unwrap();
    assert_eq!(kid, expect);
    let u = UntrustedToken::<Public, V4>::try_from(token).unwrap();
    let t = PublicToken::verify(&pk, &u, None, None).expect("signature verifies");
    let c: serde_json::Value = serde_json::from_str(t.payload()).unwrap();
    assert_eq!(c["sub"], "bob");
}

#[test]
fn issued_token_is_accepted_by_serve() {
    let dir = TempDir::new();
    let f = dir.file("k");
    ok_stdout(&["keygen", "--out", &f]);
    let token = ok_stdout(&["issue", "--key", &f, "--sub", "alice"])
        .trim()
        .to_owned();
    let s = Server::start(&["--key", &f]);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let v = first_message_ok(&mut ws, &token).await;
        assert_eq!(v["sub"], "alice");
    });
    // And a public pair: serve gets the .pub, issue the secret.
    let g = dir.file("ed");
    ok_stdout(&["keygen", "--public", "--out", &g]);
    let token = ok_stdout(&["issue", "--key", &g, "--sub", "bob"])
        .trim()
        .to_owned();
    let s = Server::start(&["--key", &format!("{g}.pub")]);
    assert_still_serves(&s, &token);
}

#[test]
fn verify_round_trip_local_and_public() {
    let dir = TempDir::new();
    let f = dir.file("k");
    ok_stdout(&["keygen", "--out", &f]);
    let token = ok_stdout(&[
        "issue",
        "--key",
        &f,
        "--sub",
        "alice",
        "--claim",
        "role=admin",
    ])
    .trim()
    .to_owned();
    let out = ok_stdout(&["verify", "--key", &f, &token]);
    let c: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("claims JSON: {out}"));
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["role"], "admin");

    let g = dir.file("ed");
    ok_stdout(&["keygen", "--public", "--out", &g]);
    let token = ok_stdout(&["issue", "--key", &g, "--sub", "bob"])
        .trim()
        .to_owned();
    let out = ok_stdout(&["verify", "--key", &format!("{g}.pub"), &token]);
    let c: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["sub"], "bob");
}

#[test]
fn verify_token_from_another_library() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("interop").set("x", 1));
    let out = ok_stdout(&["verify", "--key", &k.path, &t]);
    let c: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["sub"], "interop");
}

fn assert_invalid(o: &std::process::Output) {
    let err = stderr_of(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify must exit 1: {:?} {err}",
        o.status
    );
    assert!(
        err.starts_with("invalid: "),
        "stderr must be `invalid: <reason>`: {err}"
    );
    assert!(
        stdout_of(o).trim().is_empty(),
        "no claims on stdout for an invalid token"
    );
}

#[test]
fn verify_rejects_tampered_expired_and_foreign_tokens() {
    let k = LocalKey::generate();
    let good = k.token(&Claims::new("alice"));
    assert_invalid(&wsgate(&["verify", "--key", &k.path, &tamper(&good)]));
    assert_invalid(&wsgate(&[
        "verify",
        "--key",
        &k.path,
        &k.token(&Claims::new("a").exp_in(-3600)),
    ]));
    assert_invalid(&wsgate(&[
        "verify",
        "--key",
        &k.path,
        &LocalKey::generate().token_no_footer(&Claims::new("a")),
    ]));
    assert_invalid(&wsgate(&["verify", "--key", &k.path, "not-a-token"]));
    assert_invalid(&wsgate(&[
        "verify",
        "--key",
        &k.path,
        &k.token(&Claims::new("a").without("exp")),
    ]));
    let p = PublicKeyPair::generate();
    assert_invalid(&wsgate(&[
        "verify",
        "--key",
        &k.path,
        &p.token(&Claims::new("a")),
    ]));
}

#[test]
fn config_error_missing_key_file() {
    let dir = TempDir::new();
    let missing = dir.file("does-not-exist.key");
    assert_config_error(
        &wsgate(&["serve", "--listen", "127.0.0.1:0", "--key", &missing]),
        &missing,
    );
    assert_config_error(
        &wsgate(&["issue", "--key", &missing, "--sub", "a"]),
        &missing,
    );
    assert_config_error(
        &wsgate(&["verify", "--key", &missing, "v4.local.x"]),
        &missing,
    );
}

#[test]
fn config_error_malformed_paserk() {
    let dir = TempDir::new();
    let bad = dir.file("bad.key");
    std::fs::write(&bad, "k4.local.not-base64!!\n").unwrap();
    assert_config_error(
        &wsgate(&["serve", "--listen", "127.0.0.1:0", "--key", &bad]),
        &bad,
    );
    assert_config_error(&wsgate(&["issue", "--key", &bad, "--sub", "a"]), &bad);
    std::fs::write(&bad, "").unwrap();
    assert_config_error(
        &wsgate(&["serve", "--listen", "127.0.0.1:0", "--key", &bad]),
        &bad,
    );
}

#[test]
fn config_error_wrong_key_type() {
    let dir = TempDir::new();
    let f = dir.file("id.key");
    // A key id is not a key.
    std::fs::write(&f, format!("{}\n", LocalKey::generate().kid)).unwrap();
    assert_config_error(
        &wsgate(&["serve", "--listen", "127.0.0.1:0", "--key", &f]),
        &f,
    );
    // A public key cannot issue tokens.
    let p = PublicKeyPair::generate();
    assert_config_error(
        &wsgate(&["issue", "--key", &p.public_path, "--sub", "a"]),
        &p.public_path,
    );
}

#[test]
fn config_error_malformed_wsgate_key_env() {
    let o = wsgate_env(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("WSGATE_KEY", "k4.local.garbage")],
    );
    assert_config_error(&o, "WSGATE_KEY");
}

#[test]
fn config_error_bad_option_values() {
    let k = LocalKey::generate();
    let serve = |opt: &'static str, val: &'static str| {
        let o = wsgate(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--key",
            &k.path,
            opt,
            val,
        ]);
        assert_config_error(&o, opt);
    };
    serve("--max-connections", "many");
    serve("--auth-timeout", "never");
    serve("--leeway", "soon");
    serve("--max-message", "big");
    serve("--auth", "header,telepathy");
    assert_config_error(
        &wsgate(&["serve", "--listen", "not-an-address", "--key", &k.path]),
        "--listen",
    );
    assert_config_error(
        &wsgate(&["issue", "--key", &k.path, "--sub", "a", "--ttl", "10 years"]),
        "--ttl",
    );
    assert_config_error(
        &wsgate(&[
            "issue", "--key", &k.path, "--sub", "a", "--claim", "novalue",
        ]),
        "--claim",
    );
    // An origin whose port is not a port.
    for origin in [
        "https://app.example.com:https",
        "https://app.example.com:99999",
    ] {
        assert_config_error(
            &wsgate(&["serve", "--key", &k.path, "--allow-origin", origin]),
            "--allow-origin",
        );
    }
    // A token the gate would refuse is not printed: no usable sub, an empty claim.
    for (option, value) in [
        ("--sub", ""),
        ("--sub", "a\u{1}b"),
        ("--aud", ""),
        ("--iss", ""),
        ("--jti", ""),
    ] {
        let mut args = vec!["issue", "--key", &k.path];
        if option != "--sub" {
            args.extend(["--sub", "a"]);
        }
        args.extend([option, value]);
        let o = wsgate(&args);
        assert_config_error(&o, option);
        assert!(
            stdout_of(&o).is_empty(),
            "{option} {value:?}: a token was printed"
        );
    }
}

#[test]
fn config_error_does_not_print_key_material() {
    let dir = TempDir::new();
    let f = dir.file("wrong.key");
    let p = PublicKeyPair::generate();
    // A secret key is the wrong type for serve; whatever the verdict, no key bytes are printed.
    std::fs::write(&f, format!("{}\n", p.secret_paserk)).unwrap();
    let o = wsgate(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--key",
        &f,
        "--max-connections",
        "x",
    ]);
    let all = format!("{}{}", stdout_of(&o), stderr_of(&o));
    assert!(
        !all.contains(paserk_body(&p.secret_paserk)),
        "key bytes printed: {all}"
    );
}

#[test]
fn serve_refuses_a_signing_key_and_points_to_its_public_half() {
    let dir = TempDir::new();
    let f = dir.file("gate.key");
    let p = PublicKeyPair::generate();
    std::fs::write(&f, format!("{}\n", p.secret_paserk)).unwrap();
    let o = wsgate(&["serve", "--listen", "127.0.0.1:0", "--key", &f]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_of(&o));
    let err = stderr_of(&o);
    assert!(err.starts_with(&format!("error: --key {f}: ")), "{err}");
    assert!(
        err.contains("k4.secret") && err.contains(&format!("{f}.pub")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains(paserk_body(&p.secret_paserk)), "{err}");
    // The same from the environment.
    let o = wsgate_env(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("WSGATE_KEY", p.secret_paserk.as_str())],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("error: WSGATE_KEY: "),
        "{}",
        stderr_of(&o)
    );
    // Its public half serves.
    let pubf = dir.file("gate.key.pub");
    std::fs::write(&pubf, &p.public_paserk).unwrap();
    let s = Server::start(&["--key", &pubf]);
    assert_still_serves(&s, &p.token(&Claims::new("alice")));
}

#[test]
fn help_for_each_subcommand() {
    for (sub, expect) in [
        (
            "serve",
            &[
                "--listen",
                "--key",
                "--auth",
                "--cookie",
                "--allow-origin",
                "--max-connections",
            ][..],
        ),
        ("keygen", &["--public", "--out"][..]),
        (
            "issue",
            &[
                "--key", "--sub", "--ttl", "--aud", "--iss", "--claim", "--jti",
            ][..],
        ),
        ("verify", &["--key"][..]),
    ] {
        let o = wsgate(&[sub, "--help"]);
        assert_eq!(o.status.code(), Some(0), "{sub} --help: {:?}", o.status);
        let text = stdout_of(&o);
        for opt in expect {
            assert!(
                text.contains(opt),
                "`wsgate {sub} --help` mentions {opt}:\n{text}"
            );
        }
    }
    let o = wsgate(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout_of(&o);
    for sub in ["serve", "keygen", "issue", "verify"] {
        assert!(text.contains(sub), "top-level help lists {sub}:\n{text}");
    }
    // argh's command list escapes braces for `format!` and prints them doubled.
    assert!(!text.contains("{{"), "doubled braces in the help:\n{text}");
}

#[test]
fn harness_rfc3339_round_trips() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    for t in [0, 951_782_400, 1_798_761_599, now()] {
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
    }
    assert_eq!(
        parse_rfc3339("2000-02-29T01:30:00.5+01:30"),
        Some(951_782_400)
    );
}

#[test]
fn keygen_fills_an_empty_file_but_never_overwrites_a_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    let path = dir.file("made-by-mktemp");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = wsgate(&["keygen", "--out", &path]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(key.starts_with("k4.local."), "{key}");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = wsgate(&["keygen", "--out", &path]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr_of(&again).starts_with("error: --out "),
        "{}",
        stderr_of(&again)
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        key,
        "the key is untouched"
    );
}

/// `wsgate ARGS` with `input` on stdin.
fn wsgate_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("WSGATE_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    // The stdin handle is dropped above: wsgate sees end of file and exits.
    child.wait_with_output().unwrap()
}

#[test]
fn verify_reads_the_token_from_stdin_given_dash() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    for args in [
        &["verify", "--key", &k.path, "-"][..],
        &["verify", "-", "--key", &k.path],
        &["verify", "--leeway", "5", "--key", &k.path, "-"],
    ] {
        let o = wsgate_stdin(args, &format!("{t}\n"));
        assert!(o.status.success(), "{args:?}: {}", stderr_of(&o));
        let c: serde_json::Value = serde_json::from_str(stdout_of(&o).trim()).unwrap();
        assert_eq!(c["sub"], "alice");
    }
    assert_invalid(&wsgate_stdin(
        &["verify", "--key", &k.path, "-"],
        "v4.local.nope\n",
    ));
}

/// A usage error: exit 2, one `error:` line holding every needle.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let o = wsgate(args);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: the error names {n:?}: {err}");
    }
}

#[test]
fn usage_errors_name_what_is_missing_and_the_subcommand_help() {
    assert_usage_error(
        &[],
        &["serve", "keygen", "issue", "verify", "`wsgate --help`"],
    );
    let k = LocalKey::generate();
    assert_usage_error(
        &["issue", "--key", &k.path],
        &["--sub", "`wsgate issue --help`"],
    );
    assert_usage_error(
        &["verify", "--key", &k.path],
        &["token", "`wsgate verify --help`"],
    );
    assert_usage_error(&["serve", "--bogus"], &["--bogus", "`wsgate serve --help`"]);
    assert_usage_error(
        &["serve", "--max-message", "big"],
        &["--max-message", "big"],
    );
    assert_usage_error(&["serve", "--cookie"], &["--cookie"]);
    assert_usage_error(&["nonsense"], &["nonsense"]);
}

#[test]
fn version_and_short_help() {
    for flag in ["-V", "--version"] {
        let o = wsgate(&[flag]);
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", stderr_of(&o));
        assert_eq!(
            stdout_of(&o).trim(),
            format!("wsgate {}", env!("CARGO_PKG_VERSION"))
        );
    }
    let o = wsgate(&["-h"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout_of(&o).contains("serve"), "{}", stdout_of(&o));
    let o = wsgate(&["issue", "-h"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout_of(&o).contains("--claim-json"), "{}", stdout_of(&o));
    let o = wsgate(&["serve", "-h"]);
    assert!(
        stdout_of(&o).contains(":8080 for every"),
        "`:PORT` is explained: {}",
        stdout_of(&o)
    );
}

#[test]
fn every_duration_option_takes_seconds_or_units() {
    let k = LocalKey::generate();
    // Units everywhere; a server that starts took them all.
    let s = Server::start(&[
        "--key",
        &k.path,
        "--auth-timeout",
        "1s",
        "--leeway",
        "2m",
        "--ticket-ttl",
        "1m",
        "--ping-interval",
        "1h",
    ]);
    run(async {
        // --auth-timeout 1s: no first message → 4408.
        let mut ws = ws_ok(&s, &[]).await;
        assert_eq!(expect_close(&mut ws).await.0, 4408);
    });
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
    // And plain numbers.
    Server::start(&[
        "--key",
        &k.path,
        "--auth-timeout",
        "5",
        "--ping-interval",
        "30",
    ]);
    let t = ok_stdout(&["issue", "--key", &k.path, "--sub", "a", "--ttl", "90"]);
    ok_stdout(&["verify", "--key", &k.path, "--leeway", "1m", t.trim()]);
    for opt in [
        "--auth-timeout",
        "--leeway",
        "--ticket-ttl",
        "--ping-interval",
    ] {
        for bad in ["5x", "1.5m", "-1", "999999d"] {
            let o = wsgate(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--key",
                &k.path,
                opt,
                bad,
            ]);
            assert_config_error(&o, &format!("{opt}: "));
        }
    }
    assert_config_error(
        &wsgate(&["issue", "--key", &k.path, "--sub", "a", "--ttl", "soon"]),
        "--ttl: ",
    );
    assert_config_error(
        &wsgate(&["verify", "--key", &k.path, "--leeway", "x", "v4.local.x"]),
        "--leeway: ",
    );
}

#[test]
fn zero_where_zero_makes_no_sense_is_refused() {
    let k = LocalKey::generate();
    for opt in ["--ping-interval", "--auth-timeout", "--ticket-ttl"] {
        for zero in ["0", "0s"] {
            let o = wsgate(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--key",
                &k.path,
                opt,
                zero,
            ]);
            assert_config_error(&o, &format!("{opt}: must be at least 1s"));
        }
    }
    // --leeway 0 is a strict clock, not a mistake.
    Server::start(&["--key", &k.path, "--leeway", "0"]);
}

#[test]
fn listen_takes_names_ports_alone_and_ipv6() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    // A host name, resolved at start.
    let s = Server::start(&["--key", &k.path, "--listen", "localhost:0"]);
    assert_still_serves(&s, &t);
    // `:PORT`: every IPv4 interface.
    let s = Server::start(&["--key", &k.path, "--listen", ":0"]);
    assert!(
        s.log().contains("addr=0.0.0.0:"),
        "`:0` binds 0.0.0.0: {}",
        s.log()
    );
    assert_still_serves(&s, &t);
    // IPv6, where this machine has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let s = Server::start(&["--key", &k.path, "--listen", "[::1]:0"]);
        assert_still_serves(&s, &t);
        let s = Server::start(&["--key", &k.path, "--listen", "[::]:0"]);
        assert_still_serves(&s, &t);
    } else {
        eprintln!("skipped the IPv6 part: no ::1 on this machine");
    }
    for (bad, why) in [
        ("127.0.0.1:99999", "port out of range"),
        ("localhost", "expected HOST:PORT"),
        ("127.0.0.1:http", "expected a port number"),
        ("no-such-host.invalid:80", "cannot resolve"),
        ("[::1:80", "not an IPv6 address"),
    ] {
        let o = wsgate(&["serve", "--key", &k.path, "--listen", bad]);
        assert_config_error(&o, &format!("--listen {bad}: {why}"));
    }
}

#[test]
fn wsgate_key_holding_a_path_says_it_wants_the_key_text() {
    let k = LocalKey::generate();
    let o = wsgate_env(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("WSGATE_KEY", &k.path)],
    );
    assert_config_error(&o, "WSGATE_KEY: ");
    assert!(stderr_of(&o).contains("--key"), "{}", stderr_of(&o));
    let text = std::fs::read_to_string(&k.path).unwrap();
    assert!(
        !stderr_of(&o).contains(paserk_body(text.trim())),
        "no key bytes"
    );
    // The key text itself works.
    let s = Server::start_env(&[], &[("WSGATE_KEY", text.trim())]);
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

#[test]
fn issue_claim_json_makes_typed_claims() {
    let k = LocalKey::generate();
    let out = ok_stdout(&[
        "issue",
        "--key",
        &k.path,
        "--sub",
        "alice",
        "--claim",
        "n=5",
        "--claim-json",
        "m=5",
        "--claim-json",
        "admin=true",
        "--claim-json",
        r#"tags=["a","b"]"#,
        "--claim-json",
        r#"o={"x":null}"#,
        "--claim-json",
        r#"s="text""#,
    ]);
    let c = decrypt_local(&k.key, out.trim());
    assert_eq!(c["n"], "5", "--claim stays a string");
    assert_eq!(c["m"], 5);
    assert_eq!(c["admin"], true);
    assert_eq!(c["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(c["o"], serde_json::json!({ "x": null }));
    assert_eq!(c["s"], "text");
    assert_eq!(c["sub"], "alice");
    for bad in ["m", "=5", "m=", "m=abc", "m=1 2", "sub=5", "exp=1", "n=1"] {
        // (`n` is also given by --claim.)
        let o = wsgate(&[
            "issue",
            "--key",
            &k.path,
            "--sub",
            "a",
            "--claim",
            "n=1",
            "--claim-json",
            bad,
        ]);
        assert_config_error(&o, "--claim-json");
    }
}
