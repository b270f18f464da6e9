//! `wsgate bench` against a real `wsgate serve` over loopback: it completes the
//! connections it was asked for, by each method, and reports them (JSON and text).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_wsgate");

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn key_file(dir: &std::path::Path) -> String {
    let key = dir.join("key");
    let out = Command::new(BIN)
        .args(["keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    key.to_str().unwrap().to_owned()
}

/// Starts `wsgate serve --key F --listen 127.0.0.1:0` and returns it with its address.
fn serve(key: &str) -> (Serve, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--key", key, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(addr) = line.split(' ').find_map(|kv| kv.strip_prefix("addr=")) {
                if line.contains("event=listen") {
                    let _ = tx.send(addr.to_owned());
                }
            }
            // Keep draining so the server never blocks on a full pipe.
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no listen line");
    (Serve(child), addr)
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("wsgate-bench-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bench_completes_n_connections_by_every_method() {
    let dir = tempdir("methods");
    let key = key_file(&dir);
    let (_server, addr) = serve(&key);
    let url = format!("ws://{addr}/");
    for method in ["header", "protocol", "cookie", "message", "ticket"] {
        let t = Instant::now();
        let out = Command::new(BIN)
            .args([
                "bench", &url, "--key", &key, "--method", method, "-n", "40", "-c", "8",
            ])
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{method}: {out:?}");
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["ok"], 40, "{method}: {r}");
        assert_eq!(r["failed"], 0, "{method}: {r}");
        assert_eq!(r["method"], method);
        let phases: Vec<&str> = r["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phase"].as_str().unwrap())
            .collect();
        for p in ["connect", "upgraded", "authenticated", "echo"] {
            assert!(phases.contains(&p), "{method}: no {p} in {phases:?}");
        }
        assert_eq!(phases.contains(&"ticket"), method == "ticket");
        assert!(t.elapsed() < Duration::from_secs(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_counts_each_error_kind_and_holds_sessions() {
    let dir = tempdir("errors");
    let key = key_file(&dir);
    let (server, addr) = serve(&key);
    let url = format!("ws://{addr}/");
    // A token from another key: every connection is refused with 401, and counted.
    let other_dir = tempdir("errors-other");
    let other = key_file(&other_dir);
    let out = Command::new(BIN)
        .args(["bench", &url, "--key", &other, "-n", "10", "-c", "4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("0 ok, 10 failed of 10"), "{text}");
    assert!(text.contains("10  http 401"), "{text}");
    // Hold mode, reading the server's RSS through its pid.
    let pid = server.0.id().to_string();
    let out = Command::new(BIN)
        .args([
            "bench",
            &url,
            "--key",
            &key,
            "--hold",
            "20",
            "--hold-for",
            "1s",
        ])
        .args(["--server-pid", &pid, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["mode"].as_str(), r["ok"].as_u64()),
        (Some("hold"), Some(20)),
        "{r}"
    );
    assert_eq!(r["held_to_end"], 20);
    assert!(r["server"]["rss_peak_kib"].as_u64().unwrap() > 0, "{r}");
    // Bad arguments: one `error:` line, exit 2.
    let out = Command::new(BIN)
        .args(["bench", "http://x/", "--token", "t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a URL like ws://"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

#[test]
fn bench_with_a_duration_and_no_n_runs_for_the_duration() {
    let dir = tempdir("duration");
    let key = key_file(&dir);
    let (_server, addr) = serve(&key);
    let url = format!("ws://{addr}/");
    // Without -n, --duration alone decides: the run lasts (at least) 1 s, however
    // many round trips fit (it used to stop at the default 1000).
    let out = Command::new(BIN)
        .args(["bench", &url, "--key", &key, "--duration", "1s", "-c", "2"])
        .args(["--timeout", "5s", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["elapsed_s"].as_f64().unwrap() >= 1.0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    // With -n as well, whichever comes first: here the 5 connections.
    let out = Command::new(BIN)
        .args(["bench", &url, "--key", &key, "--duration", "10m", "-n", "5"])
        .args(["--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (r["attempted"].as_u64(), r["ok"].as_u64()),
        (Some(5), Some(5)),
        "{r}"
    );
    // Duration errors name the option.
    let out = Command::new(BIN)
        .args(["bench", &url, "--key", &key, "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --duration: "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A minimal well-formedness check of an XML document (no XML crate in the tree):
/// every tag closed in order, attribute quotes paired, `&` only in entities. Returns
/// the element names in document order.
fn xml_elements(doc: &str) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                "stray & in {text:?}"
            );
        }
        let gt = rest[lt..].find('>').expect("unclosed <") + lt;
        let tag = &rest[lt + 1..gt];
        rest = &rest[gt + 1..];
        assert_eq!(tag.matches('"').count() % 2, 0, "unpaired quote in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.trim()),
                "</{name}> closes nothing"
            );
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        assert!(!name.is_empty(), "empty tag <{tag}>");
        seen.push(name.clone());
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    seen
}

#[test]
fn bench_plot_draws_one_labelled_curve_per_method() {
    let dir = tempdir("plot");
    let key = key_file(&dir);
    let (_server, addr) = serve(&key);
    let url = format!("ws://{addr}/");
    let methods = ["header", "cookie", "message", "ticket"];
    let svg = dir.join("latency.svg");
    let out = Command::new(BIN)
        .args(["bench", &url, "--key", &key, "-n", "40", "-c", "4"])
        .args(["--method", &methods.join(","), "--plot"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let doc = std::fs::read_to_string(&svg).unwrap();
    assert!(doc.starts_with("<svg"), "{doc}");
    let elements = xml_elements(&doc);
    assert_eq!(elements[0], "svg");
    assert_eq!(elements.iter().filter(|e| *e == "svg").count(), 1);
    // One curve per method, each labelled (its title, and the legend).
    let curves: Vec<&str> = doc.split("<polyline").skip(1).collect();
    assert_eq!(curves.len(), methods.len(), "{doc}");
    for (curve, method) in curves.iter().zip(methods) {
        assert!(
            curve.contains(&format!("data-method=\"{method}\"")),
            "{curve}"
        );
        let body = &curve[..curve.find("</polyline>").unwrap()];
        assert!(body.contains(&format!("<title>{method}</title>")), "{body}");
        let points = body.split("points=\"").nth(1).unwrap();
        let points = &points[..points.find('"').unwrap()];
        assert!(points.split_whitespace().count() >= 2, "{points}");
        assert!(doc.contains(&format!("font-weight=\"bold\">{method}</text>")));
    }
    for label in ["percentile", "ms to authenticated", "99.9"] {
        assert!(doc.contains(label), "no {label:?} in the plot");
    }

    // The JSON of a run is the same with --plot (one method: one object), and
    // .html gets the same SVG in a page.
    let page = dir.join("latency.html");
    let run = |plot: Option<&std::path::Path>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["bench", &url, "--key", &key, "-n", "10", "--json"]);
        if let Some(p) = plot {
            cmd.arg("--plot").arg(p);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&run(Some(&page))), keys(&run(None)));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert_eq!(html.matches("<polyline").count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
