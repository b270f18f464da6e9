//! SPEC §5 and §9.10 / §9.12: `/healthz`, `/metrics`, `--static DIR` on the same
//! listener as the upgrades.

mod common;
use common::*;

/// The value of one sample line `name{labels} value` (or `name value`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn metrics(s: &Server) -> String {
    let r = http(s, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{}",
        r.head
    );
    String::from_utf8(r.body).unwrap()
}

#[test]
fn healthz_ok() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--path", "/ws"]].concat());
    let r = http(&s, "GET", "/healthz", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "{}",
        r.head
    );
    assert_eq!(r.body, b"ok\n");
}

#[test]
fn metrics_exposition_has_every_family() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let m = metrics(&s);
    for (name, kind) in [
        ("wsgate_connections_active", "gauge"),
        ("wsgate_handshakes_total", "counter"),
        ("wsgate_auth_failures_total", "counter"),
        ("wsgate_tickets_total", "counter"),
        ("wsgate_handshake_duration_seconds", "histogram"),
    ] {
        assert!(
            m.contains(&format!("# HELP {name} ")),
            "HELP for {name}:\n{m}"
        );
        assert!(
            m.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "TYPE {name} {kind}:\n{m}"
        );
    }
    // Histogram buckets suitable for 50 µs … 1 s, plus +Inf, _sum and _count.
    let les: Vec<f64> = m
        .lines()
        .filter_map(|l| l.strip_prefix("wsgate_handshake_duration_seconds_bucket{le=\""))
        .filter_map(|l| l.split('"').next())
        .filter(|v| *v != "+Inf")
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        les.iter().any(|&v| v <= 0.0001),
        "a bucket at or below 100 µs: {les:?}"
    );
    assert!(
        les.iter().any(|&v| v >= 1.0),
        "a bucket at or above 1 s: {les:?}"
    );
    assert!(
        m.contains("wsgate_handshake_duration_seconds_bucket{le=\"+Inf\"}"),
        "{m}"
    );
    sample(&m, "wsgate_handshake_duration_seconds_sum");
    sample(&m, "wsgate_handshake_duration_seconds_count");
}

#[test]
fn metrics_counters_move() {
    let k = LocalKey::generate();
    let s = Server::start(
        &[
            &k.arg()[..],
            &[
                "--allow-origin",
                "https://app.example.com",
                "--auth-timeout",
                "1",
            ],
        ]
        .concat(),
    );
    let t = k.token(&Claims::new("alice"));
    let before = metrics(&s);
    let count = sample(&before, "wsgate_handshake_duration_seconds_count");
    run(async {
        let mut held = ws_bearer(&s, &t).await;
        let mut m2 = ws_ok(&s, &[]).await;
        first_message_ok(&mut m2, &t).await;
        assert_401(&upgrade_status(
            &s,
            "/",
            &[("Authorization", "Bearer v4.local.bad")],
        ));
        assert_401(&upgrade_status(
            &s,
            "/",
            &[(
                "Authorization",
                &bearer(&k.token(&Claims::new("a").exp_in(-3600))),
            )],
        ));
        let r = upgrade_status(
            &s,
            "/",
            &[
                ("Origin", "https://evil.example"),
                ("Authorization", &bearer(&t)),
            ],
        );
        assert_eq!(r.status, 403);
        let mut slow = ws_ok(&s, &[]).await;
        assert_eq!(expect_close(&mut slow).await.0, 4408);
        let tk = {
            let r = http(
                &s,
                "POST",
                "/ticket",
                &[("Content-Length", "0"), ("Authorization", &bearer(&t))],
            );
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["ticket"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        ws_bearer(&s, &tk).await;
        assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&tk))]));

        let m = metrics(&s);
        let d = |series: &str| sample(&m, series) - sample(&before, series);
        assert_eq!(
            d("wsgate_handshakes_total{method=\"header\"}"),
            2.0,
            "header + ticket by header\n{m}"
        );
        assert_eq!(d("wsgate_handshakes_total{method=\"message\"}"), 1.0, "{m}");
        assert_eq!(
            d("wsgate_auth_failures_total{reason=\"invalid_token\"}"),
            1.0,
            "{m}"
        );
        assert_eq!(
            d("wsgate_auth_failures_total{reason=\"expired\"}"),
            1.0,
            "{m}"
        );
        assert_eq!(
            d("wsgate_auth_failures_total{reason=\"forbidden_origin\"}"),
            1.0,
            "{m}"
        );
        assert_eq!(
            d("wsgate_auth_failures_total{reason=\"timeout\"}"),
            1.0,
            "{m}"
        );
        assert_eq!(
            d("wsgate_auth_failures_total{reason=\"ticket_reused\"}"),
            1.0,
            "{m}"
        );
        assert_eq!(d("wsgate_tickets_total{event=\"issued\"}"), 1.0, "{m}");
        assert_eq!(d("wsgate_tickets_total{event=\"used\"}"), 1.0, "{m}");
        assert_eq!(d("wsgate_tickets_total{event=\"replayed\"}"), 1.0, "{m}");
        assert!(
            sample(&m, "wsgate_handshake_duration_seconds_count") >= count + 3.0,
            "{m}"
        );
        // `held` and `m2` are open; the /metrics connection itself may count too.
        assert!(sample(&m, "wsgate_connections_active") >= 2.0, "{m}");
        assert_echo(&mut held).await;
    });
}

fn static_site() -> TempDir {
    let root = TempDir::new();
    let site = root.path().join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::create_dir_all(site.join("empty")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>index</h1>").unwrap();
    std::fs::write(site.join("app.js"), "console.log(1)").unwrap();
    std::fs::write(site.join("style.css"), "body{}").unwrap();
    std::fs::write(site.join("sub/index.html"), "<p>sub</p>").unwrap();
    std::fs::write(root.path().join("secret.txt"), "TOP-SECRET-OUTSIDE").unwrap();
    std::os::unix::fs::symlink(root.path().join("secret.txt"), site.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(root.path(), site.join("up")).unwrap();
    root
}

#[test]
fn static_files_served() {
    let k = LocalKey::generate();
    let root = static_site();
    let site = root.file("site");
    let s = Server::start(&[&k.arg()[..], &["--static", &site, "--path", "/ws"]].concat());
    let r = http(&s, "GET", "/", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, b"<h1>index</h1>");
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{}",
        r.head
    );
    assert_eq!(r.header("content-length"), Some("14"));
    let r = http(&s, "GET", "/app.js", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .contains("javascript"),
        "{}",
        r.head
    );
    let r = http(&s, "GET", "/style.css", &[]);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/css"),
        "{}",
        r.head
    );
    let r = http(&s, "GET", "/sub/", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, b"<p>sub</p>");
    let r = http(&s, "HEAD", "/app.js", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.header("content-length"), Some("14"));
    assert!(r.body.is_empty(), "HEAD has no body");
    assert_eq!(http(&s, "GET", "/missing.html", &[]).status, 404);
    // No directory listing.
    let r = http(&s, "GET", "/empty/", &[]);
    assert_eq!(r.status, 404, "{}", r.head);
    // Upgrades still work beside it.
    assert_eq!(
        upgrade_status(
            &s,
            "/",
            &[("Authorization", &bearer(&k.token(&Claims::new("a"))))]
        )
        .status,
        404
    );
    run(async {
        let (mut ws, _) = ws_connect(
            &s,
            "/ws",
            &[("Authorization", &bearer(&k.token(&Claims::new("a"))))],
        )
        .await
        .expect("101");
        assert_echo(&mut ws).await;
    });
}

#[test]
fn static_never_leaves_dir() {
    let k = LocalKey::generate();
    let root = static_site();
    let site = root.file("site");
    let s = Server::start(&[&k.arg()[..], &["--static", &site]].concat());
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "//secret.txt",
        "/link.txt",
        "/up/secret.txt",
        "/%2fetc%2fpasswd",
        "/etc/passwd",
    ] {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", s.host());
        std::io::Write::write_all(&mut c, req.as_bytes()).unwrap();
        let r = read_response(&mut c);
        assert!(r.status == 404 || r.status == 400, "{path} → {}", r.head);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("TOP-SECRET"),
            "{path} leaked"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{path} leaked"
        );
    }
    // Absolute-form target outside the directory.
    let r = http_raw(
        s.addr,
        format!(
            "GET http://{}/../secret.txt HTTP/1.1\r\nHost: {}\r\n\r\n",
            s.host(),
            s.host()
        )
        .as_bytes(),
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("TOP-SECRET"),
        "{}",
        r.head
    );
}

#[test]
fn static_unparsable_target_is_400() {
    let k = LocalKey::generate();
    let root = static_site();
    let s = Server::start(&[&k.arg()[..], &["--static", &root.file("site")]].concat());
    let r = http_raw(
        s.addr,
        format!("GET /%zz HTTP/1.1\r\nHost: {}\r\n\r\n", s.host()).as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.head);
}
