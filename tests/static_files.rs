//! Black-box tests of `--static DIR` (`docs/operations.md#static-files`; issue 3 item 5) on
//! the real binary: index.html for directory paths, content types, Content-Length, HEAD,
//! 404, no listing, `--path` limiting only upgrades, 400 for an unparsable target, and
//! every way out of DIR the issue lists → 404 without a byte of the secret beside it.
//!
//! Requests are written as raw bytes on a std `TcpStream`, so nothing normalises the
//! paths; each response is read to end of stream (the server closes after it), so a
//! body sent where none is due would be seen.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;

/// The content of the file placed beside DIR; must never be served.
const SECRET: &str = "SECRET-BESIDE-DIR-7f3a9c";

const INDEX: &str = "<!doctype html><title>device</title><h1>index</h1>\n";
const SUB_INDEX: &str = "<p>sub index</p>\n";
const APP_JS: &str = "console.log('wsgate');\n";

/// ROOT/secret.txt, ROOT/secretdir/passwd, and DIR = ROOT/site with files, a
/// subdirectory with an index, one without, an empty one, and symlinks pointing
/// outside.
struct Site {
    root: TempDir,
}

impl Site {
    fn new() -> Site {
        let root = TempDir::new();
        let r = root.path();
        let site = r.join("site");
        for d in ["sub", "docs", "nested/deep", "empty"] {
            std::fs::create_dir_all(site.join(d)).unwrap();
        }
        let files: &[(&str, &[u8])] = &[
            ("index.html", INDEX.as_bytes()),
            ("sub/index.html", SUB_INDEX.as_bytes()),
            ("app.js", APP_JS.as_bytes()),
            ("style.css", b"body{margin:0}\n"),
            ("data.json", b"{\"a\":1}\n"),
            ("logo.svg", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n"),
            ("pixel.png", b"\x89PNG\r\n\x1a\n\0\0\0\0"),
            ("notes.txt", b"plain notes\n"),
            ("docs/readme.txt", b"docs readme\n"),
            ("nested/deep/file.txt", b"deep\n"),
            ("a b.txt", b"spaced\n"),
        ];
        for (name, body) in files {
            std::fs::write(site.join(name), body).unwrap();
        }
        std::fs::write(r.join("secret.txt"), SECRET).unwrap();
        std::fs::create_dir_all(r.join("secretdir")).unwrap();
        std::fs::write(r.join("secretdir/passwd"), SECRET).unwrap();
        // Symlinks inside DIR that point outside it.
        std::os::unix::fs::symlink(r.join("secret.txt"), site.join("link.txt")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", site.join("rel-link.txt")).unwrap();
        std::os::unix::fs::symlink(r.join("secretdir"), site.join("outdir")).unwrap();
        std::os::unix::fs::symlink(r, site.join("up")).unwrap();
        Site { root }
    }
    fn dir(&self) -> String {
        self.root.file("site")
    }
    fn secret_path(&self) -> String {
        self.root.file("secret.txt")
    }
}

/// A response plus every byte after its head until the server closed.
struct Exchange {
    r: Response,
    /// All bytes after the head (the body and anything else sent).
    after_head: Vec<u8>,
}

/// Writes `raw` on a fresh connection; reads the response and then to end of stream.
fn exchange(s: &Server, raw: &[u8]) -> Exchange {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(raw).unwrap();
    let r = read_response(&mut c);
    let mut rest = Vec::new();
    // Bounded by the read timeout; a timeout just ends the read.
    let _ = c.read_to_end(&mut rest);
    let mut after_head = r.body.clone();
    after_head.extend_from_slice(&rest);
    Exchange { r, after_head }
}

/// `METHOD target HTTP/1.1` with a same-origin Host, sent verbatim.
fn raw(s: &Server, method: &str, target: &str) -> Exchange {
    exchange(
        s,
        format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n\r\n", s.host()).as_bytes(),
    )
}

fn get(s: &Server, target: &str) -> Exchange {
    raw(s, "GET", target)
}

fn serve_static(site: &Site, extra: &[&str]) -> (LocalKey, Server) {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--static", &site.dir()], extra].concat());
    (k, s)
}

/// A 200 with exactly `body`, a matching Content-Length, and a content type starting
/// with one of `types`.
fn assert_file(s: &Server, target: &str, body: &[u8], types: &[&str]) {
    let x = get(s, target);
    assert_eq!(x.r.status, 200, "GET {target}:\n{}", x.r.head);
    assert_eq!(x.after_head, body, "GET {target} body");
    assert_eq!(
        x.r.header("content-length"),
        Some(body.len().to_string().as_str()),
        "GET {target}:\n{}",
        x.r.head
    );
    let ct =
        x.r.header("content-type")
            .unwrap_or("")
            .to_ascii_lowercase();
    assert!(
        types.iter().any(|t| ct.starts_with(t)),
        "GET {target}: Content-Type {ct:?}, want one of {types:?}"
    );
}

fn assert_still_serves_static(s: &Server) {
    let x = get(s, "/");
    assert_eq!(x.r.status, 200, "GET / after a refusal:\n{}", x.r.head);
    assert_eq!(x.after_head, INDEX.as_bytes());
}

#[test]
fn index_html_for_directory_paths() {
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    assert_file(&s, "/", INDEX.as_bytes(), &["text/html"]);
    assert_file(&s, "/index.html", INDEX.as_bytes(), &["text/html"]);
    assert_file(&s, "/sub/", SUB_INDEX.as_bytes(), &["text/html"]);
    // A query string does not change the file.
    assert_file(&s, "/?v=2", INDEX.as_bytes(), &["text/html"]);
}

#[test]
fn content_type_by_extension_and_content_length() {
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    assert_file(
        &s,
        "/app.js",
        APP_JS.as_bytes(),
        &["text/javascript", "application/javascript"],
    );
    assert_file(&s, "/style.css", b"body{margin:0}\n", &["text/css"]);
    assert_file(&s, "/data.json", b"{\"a\":1}\n", &["application/json"]);
    assert_file(
        &s,
        "/logo.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n",
        &["image/svg+xml"],
    );
    assert_file(
        &s,
        "/pixel.png",
        b"\x89PNG\r\n\x1a\n\0\0\0\0",
        &["image/png"],
    );
    assert_file(&s, "/notes.txt", b"plain notes\n", &["text/plain"]);
    assert_file(&s, "/nested/deep/file.txt", b"deep\n", &["text/plain"]);
    // Percent-encoded names are decoded.
    assert_file(&s, "/a%20b.txt", b"spaced\n", &["text/plain"]);
}

#[test]
fn head_has_the_headers_and_no_body() {
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    for (target, body, ct) in [
        ("/", INDEX, "text/html"),
        ("/app.js", APP_JS, "javascript"),
        ("/sub/", SUB_INDEX, "text/html"),
    ] {
        let x = raw(&s, "HEAD", target);
        assert_eq!(x.r.status, 200, "HEAD {target}:\n{}", x.r.head);
        assert_eq!(
            x.r.header("content-length"),
            Some(body.len().to_string().as_str()),
            "HEAD {target}:\n{}",
            x.r.head
        );
        assert!(
            x.r.header("content-type").unwrap_or("").contains(ct),
            "HEAD {target}:\n{}",
            x.r.head
        );
        assert!(
            x.after_head.is_empty(),
            "HEAD {target} sent a body: {:?}",
            x.after_head
        );
    }
    // Refusals answer HEAD with their head alone too: 404, 405, 400.
    for (target, status) in [("/missing.txt", 404), ("/ticket", 405), ("/100%.txt", 400)] {
        let x = raw(&s, "HEAD", target);
        assert_eq!(x.r.status, status, "{}", x.r.head);
        assert!(x.r.header("content-length").is_some(), "{}", x.r.head);
        assert!(
            x.after_head.is_empty(),
            "HEAD {target} sent a body: {:?}",
            x.after_head
        );
    }
    // Without --static, the 426 of a plain request.
    let k = LocalKey::generate();
    let plain = Server::start(&k.arg());
    let x = raw(&plain, "HEAD", "/");
    assert_eq!(x.r.status, 426, "{}", x.r.head);
    assert!(
        x.after_head.is_empty(),
        "HEAD / sent a body: {:?}",
        x.after_head
    );
}

#[test]
fn missing_files_and_directories_are_404_without_listing() {
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    for target in [
        "/missing.html",
        "/sub/missing.js",
        "/docs/",  // a directory without index.html: no listing
        "/docs",   // a directory path without trailing slash: no redirect, 404
        "/empty/", // an empty directory
        "/sub",    // even one that has an index.html
        "/nested/",
        "/app.js/",
    ] {
        let x = get(&s, target);
        assert_eq!(x.r.status, 404, "GET {target}:\n{}", x.r.head);
        assert!(
            !String::from_utf8_lossy(&x.after_head).contains("readme.txt"),
            "GET {target} listed the directory"
        );
        assert!(!x.r.has_header("location"), "no redirects");
        assert_still_serves_static(&s);
    }
}

/// Every way out of DIR of issue 3 item 5.
fn escape_attempts(site: &Site) -> Vec<String> {
    let secret_abs = site.secret_path(); // /tmp/…/secret.txt
    let mut v: Vec<String> = [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/.%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/..%5Csecret.txt",
        "/..\\secret.txt",
        "/sub\\..\\..\\secret.txt",
        "/%2e%2e%5csecret.txt",
        "/../secretdir/passwd",
        "/%252e%252e/secret.txt",
        "//secret.txt",
        "//etc/passwd",
        "/etc/passwd",
        "/%2fetc%2fpasswd",
        "/link.txt",
        "/rel-link.txt",
        "/outdir/passwd",
        "/up/secret.txt",
        "/up/site/../secret.txt",
        "/index.html%00",
        "/%00/../secret.txt",
        "/secret.txt%00.html",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Absolute paths: `//tmp/…/secret.txt` and the same percent-encoded.
    v.push(format!("/{secret_abs}"));
    v.push(format!("/{}", secret_abs.replace('/', "%2f")));
    v
}

fn assert_no_leak(target: &str, x: &Exchange) {
    let all = String::from_utf8_lossy(&x.after_head);
    assert!(!all.contains(SECRET), "{target} leaked the secret file");
    assert!(!all.contains("root:"), "{target} leaked /etc/passwd");
    assert!(!x.r.head.contains(SECRET), "{target} leaked in the head");
}

#[test]
fn no_request_leaves_dir() {
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    for target in escape_attempts(&site) {
        for method in ["GET", "HEAD"] {
            let x = raw(&s, method, &target);
            assert_no_leak(&target, &x);
            assert_eq!(
                x.r.status, 404,
                "{method} {target} must be 404:\n{}",
                x.r.head
            );
        }
        assert_still_serves_static(&s);
    }
}

#[test]
fn absolute_form_target_does_not_leave_dir() {
    // RFC 9112 §3.2.2 absolute-form: whatever the status (400 today, docs/decisions.md),
    // no byte from outside DIR.
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/link.txt"] {
        let target = format!("http://{}{path}", s.host());
        let x = get(&s, &target);
        assert_no_leak(&target, &x);
        assert!(
            [400, 404].contains(&x.r.status),
            "GET {target}:\n{}",
            x.r.head
        );
    }
    assert_still_serves_static(&s);
}

#[test]
fn unparsable_target_is_400() {
    let site = Site::new();
    let (_k, s) = serve_static(&site, &[]);
    // Not origin-form (no leading `/`) is unparsable as a file path too.
    for target in [
        "/%zz",
        "/%",
        "/%4",
        "/sub/%g0.txt",
        "index.html",
        "http://x/index.html",
    ] {
        let x = get(&s, target);
        assert_eq!(x.r.status, 400, "GET {target}:\n{}", x.r.head);
        assert_no_leak(target, &x);
        assert_still_serves_static(&s);
    }
}

#[test]
fn path_option_limits_only_upgrades() {
    let site = Site::new();
    let (k, s) = serve_static(&site, &["--path", "/ws"]);
    let token = k.token(&Claims::new("alice"));
    // Static files and endpoints are unaffected by --path.
    assert_file(&s, "/", INDEX.as_bytes(), &["text/html"]);
    assert_file(
        &s,
        "/app.js",
        APP_JS.as_bytes(),
        &["text/javascript", "application/javascript"],
    );
    let x = get(&s, "/healthz");
    assert_eq!(x.r.status, 200, "{}", x.r.head);
    assert_eq!(x.after_head, b"ok\n");
    assert_eq!(get(&s, "/metrics").r.status, 200);
    // An upgrade elsewhere than --path is 404, even on a path that is a file.
    for path in ["/other", "/", "/app.js"] {
        let r = upgrade_status(&s, path, &[("Authorization", &bearer(&token))]);
        assert_eq!(r.status, 404, "upgrade on {path}:\n{}", r.head);
        assert!(!r.has_header("sec-websocket-accept"));
    }
    run(async {
        let (mut ws, _) = ws_connect(&s, "/ws", &[("Authorization", &bearer(&token))])
            .await
            .expect("101 on --path");
        assert_echo(&mut ws).await;
    });
    assert_still_serves_static(&s);
}

#[test]
fn upgrades_still_work_beside_static() {
    let site = Site::new();
    let (k, s) = serve_static(&site, &[]);
    let token = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &token).await;
        assert_echo(&mut ws).await;
        let mut ws = ws_ok(&s, &[]).await;
        first_message_ok(&mut ws, &token).await;
        assert_echo(&mut ws).await;
    });
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", "Bearer v4.local.bad")],
    ));
    assert_still_serves_static(&s);
    assert_still_serves(&s, &token);
}

#[test]
fn control_the_secret_is_seen_when_it_is_inside_dir() {
    // Makes the no-leak assertions meaningful: served from ROOT, the same requests
    // machinery does see the marker.
    let site = Site::new();
    let k = LocalKey::generate();
    let root = site.root.path().to_str().unwrap().to_owned();
    let s = Server::start(&[&k.arg()[..], &["--static", &root]].concat());
    let x = get(&s, "/secret.txt");
    assert_eq!(x.r.status, 200, "{}", x.r.head);
    assert_eq!(x.after_head, SECRET.as_bytes());
    // A symlink whose target stays inside DIR is an ordinary file.
    let x = get(&s, "/site/link.txt");
    assert_eq!(x.r.status, 200, "{}", x.r.head);
    assert_eq!(x.after_head, SECRET.as_bytes());
}
