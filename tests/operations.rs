//! Operations basics, over the real binary: every `serve` option from the
//! environment (`WSGATE_` + its name), `--log-format json`, `--passenv` for `--exec`,
//! the debug access lines of plain HTTP requests, and the files in `contrib/`.

mod common;
use common::*;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

/// A `wsgate serve` started with exactly these arguments (no `--listen` added, so
/// that `WSGATE_LISTEN` can be tested) and these variables; its stderr lines arrive
/// on a channel. Killed on drop.
struct Raw {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Raw {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Raw {
        let mut cmd = Command::new(bin());
        cmd.arg("serve").args(args).env_remove("WSGATE_KEY");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsgate");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Raw {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line satisfying `pred`.
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no matching line; stderr so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn text(&mut self) -> String {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upgrade(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    http_raw(addr, &upgrade_bytes(&addr.to_string(), path, headers))
}

// ---------------------------------------------------------------------------
// Every option from the environment

#[test]
fn every_serve_option_comes_from_the_environment() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    let t2 = k.token(&Claims::new("alice").exp_in(900));
    let mut s = Raw::start(
        &[],
        &[
            // WSGATE_KEY keeps its meaning: the key text, not a file.
            ("WSGATE_KEY", &k.paserk),
            ("WSGATE_LISTEN", "127.0.0.1:0"),
            ("WSGATE_AUTH", "header,query"),
            ("WSGATE_PATH", "/ws"),
            // A repeatable option: a list, commas or newlines.
            (
                "WSGATE_ALLOW_ORIGIN",
                "https://a.example, https://b.example\nhttps://c.example",
            ),
            ("WSGATE_MAX_CONNECTIONS", "100"),
            ("WSGATE_LOG_LEVEL", "debug"),
            // A switch.
            ("WSGATE_REFRESH", "true"),
            // Empty: unset.
            ("WSGATE_AUDIENCE", ""),
        ],
    );
    let listen = s.wait_line(|l| l.contains("event=listen"));
    let addr: SocketAddr = log_value(&listen, "addr").unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback(), "{listen}");

    // --path /ws: an upgrade elsewhere is 404.
    assert_eq!(
        upgrade(addr, "/", &[("Authorization", &bearer(&t))]).status,
        404
    );
    // --allow-origin: each of the three; another origin is 403.
    for origin in [
        "https://a.example",
        "https://b.example",
        "https://c.example",
    ] {
        let r = upgrade(
            addr,
            "/ws",
            &[("Authorization", &bearer(&t)), ("Origin", origin)],
        );
        assert_eq!(r.status, 101, "{origin}: {}", r.head);
    }
    let r = upgrade(
        addr,
        "/ws",
        &[
            ("Authorization", &bearer(&t)),
            ("Origin", "https://d.example"),
        ],
    );
    assert_eq!(r.status, 403);
    // --log-level debug: the accept lines.
    s.wait_line(|l| l.contains("event=accept"));
    run(async {
        // --auth header,query: the query method is on.
        let req = upgrade_bytes(&addr.to_string(), &format!("/ws?token={t}"), &[]);
        let (mut ws, _) = ws_raw(addr, &req)
            .await
            .unwrap_or_else(|r| panic!("{}", r.head));
        // --refresh: a refresh message is answered, not echoed.
        let refresh = serde_json::json!({ "type": "refresh", "token": t2 }).to_string();
        send_text(&mut ws, &refresh).await;
        let answer: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
        assert_eq!(answer["type"], "refreshed");
    });
    assert!(!s.text().contains(&t), "a token was logged");
}

#[test]
fn an_option_on_the_command_line_wins_over_its_variable() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    // Server::start adds --listen 127.0.0.1:0: the variable's bad value is not read.
    let s = Server::start_env(
        &[
            k.arg()[0],
            k.arg()[1],
            "--auth",
            "header",
            "--allow-origin",
            "https://flag.example",
        ],
        &[
            ("WSGATE_LISTEN", "not an address"),
            ("WSGATE_AUTH", "query"),
            ("WSGATE_ALLOW_ORIGIN", "https://env.example"),
            ("WSGATE_MAX_MESSAGE", "12"),
        ],
    );
    let auth = [("Authorization", bearer(&t))];
    let auth = [(auth[0].0, auth[0].1.as_str())];
    assert_eq!(upgrade_status(&s, "/", &auth).status, 101);
    assert_eq!(
        upgrade_status(&s, &format!("/?token={t}"), &[]).status,
        401,
        "query is off: --auth header wins"
    );
    let origin = |o| upgrade_status(&s, "/", &[auth[0], ("Origin", o)]).status;
    assert_eq!(origin("https://flag.example"), 101);
    assert_eq!(
        origin("https://env.example"),
        403,
        "the flag's list replaces the variable's"
    );
    // A variable without its flag still counts: --max-message 12.
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        send_text(&mut ws, "this is longer than twelve bytes").await;
        assert_eq!(expect_close(&mut ws).await.0, 1009);
    });
}

#[test]
fn a_bad_variable_is_named_and_exits_2() {
    for (var, value, why) in [
        ("WSGATE_MAX_CONNECTIONS", "lots", "not a whole number"),
        ("WSGATE_MAX_CONNECTIONS", "0", "at least 1"),
        ("WSGATE_REFRESH", "maybe", "1/true or 0/false"),
        ("WSGATE_LISTEN", "nowhere", ""),
        ("WSGATE_AUTH_TIMEOUT", "5x", "not a duration"),
        ("WSGATE_AUTH", "header,carrier-pigeon", ""),
        ("WSGATE_LOG_FORMAT", "xml", "text or json"),
        ("WSGATE_PASSENV", "TZ", "needs --exec"),
    ] {
        // Should one start after all, it listens on a free port, not 8080.
        let listen: &[&str] = if var == "WSGATE_LISTEN" {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let o = wsgate_env(&[&["serve"], listen].concat(), &[(var, value)]);
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(2), "{var}={value}: {err}");
        assert_eq!(err.lines().count(), 1, "{var}={value}: {err}");
        assert!(
            err.starts_with(&format!("error: {var}: ")) && err.contains(why),
            "{var}={value}: {err}"
        );
    }
    // WSGATE_KEY keeps its meaning and its own error.
    let o = wsgate_env(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("WSGATE_KEY", "/etc/wsgate.key")],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("error: WSGATE_KEY"),
        "{}",
        stderr_of(&o)
    );
}

#[test]
fn serve_help_states_the_environment_rule() {
    let o = wsgate(&["serve", "--help"]);
    assert!(o.status.success());
    let help = stdout_of(&o);
    for part in [
        "WSGATE_",
        "capitals",
        "commas or newlines",
        "1/true",
        "wins",
        "WSGATE_KEY",
    ] {
        assert!(help.contains(part), "{part} not in:\n{help}");
    }
    assert!(help.contains("--log-format") && help.contains("--passenv"));
}

// ---------------------------------------------------------------------------
// --log-format json

#[test]
fn json_logs_are_one_object_per_line_with_the_same_fields() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("bob \"the\" builder"));
    let mut s = Raw::start(
        &[
            k.arg()[0],
            k.arg()[1],
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            "--log-format",
            "json",
        ],
        &[],
    );
    let listen = s.wait_line(|l| l.contains(r#""event":"listen""#));
    let listen: serde_json::Value = serde_json::from_str(&listen).unwrap();
    assert_eq!(listen["level"], "info");
    let addr: SocketAddr = listen["addr"].as_str().unwrap().parse().unwrap();
    run(async {
        let req = upgrade_bytes(&addr.to_string(), "/", &[("Authorization", &bearer(&t))]);
        let (mut ws, _) = ws_raw(addr, &req)
            .await
            .unwrap_or_else(|r| panic!("{}", r.head));
        assert_echo(&mut ws).await;
        ws.close(None).await.unwrap();
        let _ = expect_close(&mut ws).await;
    });
    let bad = http_raw(
        addr,
        &upgrade_bytes(&addr.to_string(), "/", &[("Authorization", "Bearer nope")]),
    );
    assert_eq!(bad.status, 401);
    s.wait_line(|l| l.contains(r#""event":"auth_fail""#));
    s.wait_line(|l| l.contains(r#""event":"close""#));
    let text = s.text();
    assert!(!text.contains(&t), "a token was logged");
    let mut events = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        assert!(o.values().all(|v| v.is_string()), "{line}");
        assert!(o["level"].is_string() && o["event"].is_string(), "{line}");
        events.push(o["event"].as_str().unwrap().to_owned());
        if o["event"] == "auth_ok" {
            assert_eq!(o["sub"], "bob \"the\" builder");
            assert!(o.contains_key("peer") && o.contains_key("method"), "{line}");
        }
        if o["event"] == "auth_fail" {
            assert!(o.contains_key("reason"), "{line}");
        }
    }
    for e in ["listen", "accept", "auth_ok", "auth_fail", "close"] {
        assert!(events.iter().any(|x| x == e), "no {e} in {events:?}");
    }
}

// ---------------------------------------------------------------------------
// --passenv

/// The environment `env` sees in process mode.
async fn env_of_session(
    addr: SocketAddr,
    token: &str,
) -> std::collections::BTreeMap<String, String> {
    let req = upgrade_bytes(&addr.to_string(), "/", &[("Authorization", &bearer(token))]);
    let (mut ws, _) = ws_raw(addr, &req)
        .await
        .unwrap_or_else(|r| panic!("{}", r.head));
    let mut env = std::collections::BTreeMap::new();
    loop {
        match recv_data(&mut ws).await {
            Message::Text(line) => {
                let (k, v) = line.split_once('=').expect("NAME=value");
                env.insert(k.to_owned(), v.to_owned());
            }
            Message::Close(_) => break,
            m => panic!("unexpected {m:?}"),
        }
    }
    env
}

#[test]
fn passenv_passes_the_named_variables_only() {
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    let env = [
        ("PASSED_ONE", "1"),
        ("PASSED_TWO", "two words"),
        ("PASSED_THREE", "3"),
        ("NOT_PASSED", "hunter2"),
    ];
    // From the flag (repeatable, each a comma list) ...
    let s = Server::start_env(
        &[
            k.arg()[0],
            k.arg()[1],
            "--exec",
            "env",
            "--passenv",
            "PASSED_ONE,PASSED_TWO",
            "--passenv",
            "UNSET_HERE",
        ],
        &env,
    );
    let seen = run(env_of_session(s.addr, &t));
    assert_eq!(seen.get("PASSED_ONE").map(String::as_str), Some("1"));
    assert_eq!(
        seen.get("PASSED_TWO").map(String::as_str),
        Some("two words")
    );
    assert!(!seen.contains_key("PASSED_THREE") && !seen.contains_key("NOT_PASSED"));
    assert!(!seen.contains_key("UNSET_HERE"));
    assert_eq!(seen.get("WSGATE_SUB").map(String::as_str), Some("alice"));
    // ... and from the environment (a newline-separated list).
    let mut all = env.to_vec();
    all.extend([
        ("WSGATE_EXEC", "env"),
        ("WSGATE_PASSENV", "PASSED_THREE\nPASSED_ONE"),
    ]);
    let s = Server::start_env(&[k.arg()[0], k.arg()[1]], &all);
    let seen = run(env_of_session(s.addr, &t));
    assert_eq!(seen.get("PASSED_THREE").map(String::as_str), Some("3"));
    assert_eq!(seen.get("PASSED_ONE").map(String::as_str), Some("1"));
    assert!(!seen.contains_key("PASSED_TWO") && !seen.contains_key("NOT_PASSED"));
}

#[test]
fn passenv_cannot_override_what_wsgate_sets() {
    for name in [
        "WSGATE_SUB",
        "WSGATE_CLAIMS",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "WSGATE_PATH",
    ] {
        let o = wsgate_env(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--exec",
                "env",
                "--passenv",
                &format!("TZ,{name}"),
            ],
            &[],
        );
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.starts_with(&format!("error: --passenv {name}: ")),
            "{err}"
        );
    }
    let o = wsgate_env(
        &["serve", "--listen", "127.0.0.1:0", "--passenv", "TZ"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr_of(&o).starts_with("error: --passenv: needs --exec"),
        "{}",
        stderr_of(&o)
    );
}

// ---------------------------------------------------------------------------
// Access lines

#[test]
fn plain_http_requests_get_an_access_line_at_debug_without_the_query() {
    let k = LocalKey::generate();
    let dir = TempDir::new();
    std::fs::write(dir.path().join("index.html"), "<p>hi</p>").unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let s = Server::start(&[
        k.arg()[0],
        k.arg()[1],
        "--log-level",
        "debug",
        "--static",
        dir_arg,
    ]);
    let secret = "v4.local.not-a-real-token-but-looks-like-one";
    for (method, path, status) in [
        ("GET", format!("/healthz?token={secret}"), 200),
        ("GET", "/metrics".to_owned(), 200),
        ("GET", "/".to_owned(), 200),
        ("GET", "/missing.html".to_owned(), 404),
        ("POST", "/elsewhere".to_owned(), 426),
    ] {
        assert_eq!(
            http(&s, method, &path, &[]).status,
            status,
            "{method} {path}"
        );
        let bare = path.split('?').next().unwrap().to_owned();
        let line = s.wait_log_line(|l| {
            l.contains("event=http")
                && log_value(l, "path").as_deref() == Some(bare.as_str())
                && log_value(l, "method").as_deref() == Some(method)
        });
        assert_eq!(
            log_value(&line, "status"),
            Some(status.to_string()),
            "{line}"
        );
        assert!(log_value(&line, "peer").is_some(), "{line}");
    }
    assert!(
        !s.log().contains(secret),
        "the query was logged:\n{}",
        s.log()
    );
    // Upgrades get no access line (they have auth_ok / auth_fail / refuse).
    let t = k.token(&Claims::new("alice"));
    let auth = bearer(&t);
    assert_eq!(
        upgrade_status(&s, "/up", &[("Authorization", &auth)]).status,
        101
    );
    s.wait_log_line(|l| l.contains("event=auth_ok"));
    assert!(!s.log().contains("path=/up"), "{}", s.log());
}

#[test]
fn the_admin_listener_writes_access_lines_too() {
    let k = LocalKey::generate();
    let s = Server::start(&[
        k.arg()[0],
        k.arg()[1],
        "--log-level",
        "debug",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = admin_addr(&s);
    for (target, status) in [
        ("/sessions?sub=alice", 200),
        ("/healthz", 200),
        ("/nope", 404),
    ] {
        let r = http_raw(
            admin,
            format!("GET {target} HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, status, "{target}");
        let path = target.split('?').next().unwrap();
        let line = s.wait_log_line(|l| {
            l.contains("event=http") && log_value(l, "path").as_deref() == Some(path)
        });
        assert_eq!(
            log_value(&line, "status"),
            Some(status.to_string()),
            "{line}"
        );
    }
    assert_eq!(post_revoke(admin, r#"{"sub":"bob"}"#).status, 200);
    let line = s.wait_log_line(|l| l.contains("event=http") && l.contains("path=/revoke"));
    assert_eq!(
        log_value(&line, "method").as_deref(),
        Some("POST"),
        "{line}"
    );
    assert!(
        !s.log().contains("sub=alice"),
        "the query was logged:\n{}",
        s.log()
    );
}

#[test]
fn access_lines_are_debug_only() {
    let k = LocalKey::generate();
    let s = Server::start(&[k.arg()[0], k.arg()[1]]);
    assert_eq!(http(&s, "GET", "/healthz", &[]).status, 200);
    // A line that is logged at info after it shows the request was handled.
    assert_eq!(http(&s, "GET", "/nothing-here", &[]).status, 426);
    s.wait_log_line(|l| l.contains("event=refuse") && l.contains("status=426"));
    assert!(!s.log().contains("event=http"), "{}", s.log());
}

// ---------------------------------------------------------------------------
// contrib/

fn contrib(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_systemd_unit_is_hardened_and_valid() {
    let unit = contrib("wsgate.service");
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=",
        "#AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "{line} missing");
    }
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.contains(" serve ") && exec.contains("--key"), "{exec}");
    // systemd-analyze verify, where it exists, on a copy that runs the binary under test.
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not found: unit not verified");
        return;
    };
    if !out.status.success() {
        return;
    }
    let dir = TempDir::new();
    let copy = dir.file("wsgate.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/wsgate", &bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", &copy])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("wsgate.service:"),
        "systemd-analyze found problems:\n{said}"
    );
}

#[test]
fn the_openwrt_init_script_runs_serve_under_procd() {
    let init = contrib("openwrt/wsgate.init");
    assert!(init.starts_with("#!/bin/sh /etc/rc.common"));
    for part in [
        "USE_PROCD=1",
        "procd_set_param command",
        " serve ",
        "procd_set_param respawn",
        "reload_service()",
        "HUP",
    ] {
        assert!(init.contains(part), "{part} missing");
    }
    // It parses as shell.
    let st = Command::new("sh")
        .args([
            "-n",
            &format!("{}/contrib/openwrt/wsgate.init", env!("CARGO_MANIFEST_DIR")),
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Out of file descriptors (a flood of idle connections against a low limit): a
/// failed accept is logged (`event=accept_error`) and does not end the listener; once
/// the flood's descriptors are free the server serves again.
#[test]
fn out_of_descriptors_the_server_logs_and_recovers() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    // The server's limit: what it holds now, plus room for three connections.
    let limit = fd_count(s.pid()) + 3;
    let st = Command::new("prlimit")
        .args([
            format!("--pid={}", s.pid()),
            format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(st.success(), "prlimit failed");
    let held: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(s.addr).unwrap())
        .collect();
    s.wait_log_line(|l| l.contains("event=accept_error") && l.contains("error="));
    drop(held);
    assert_still_serves(&s, &t);
}
