//! Black-box tests of `/healthz` and `/metrics` (`docs/operations.md#endpoints`; issue 3
//! item 4), and of how endpoints sit beside upgrades (`--path`, 426), on the real binary.
//!
//! `/metrics` is parsed as Prometheus text exposition (every line checked), and the
//! counters are compared between snapshots; values that the server updates after
//! answering are polled for (bounded), never slept for.

mod common;
use common::*;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.net";

fn serve(k: &LocalKey, extra: &[&str]) -> Server {
    Server::start(&[&k.arg()[..], extra].concat())
}

// ---------------------------------------------------------------------------
// Prometheus text exposition

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    help: HashMap<String, String>,
    kind: HashMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// `k="v",k2="v2"` → pairs (handles `\"`, `\\`, `\n` escapes).
fn parse_labels(s: &str, line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, r) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels in {line:?}"));
        assert!(valid_name(k.trim()), "bad label name {k:?} in {line:?}");
        let mut v = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                None => panic!("unterminated label value in {line:?}"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => v.push('\n'),
                    Some((_, c)) => v.push(c),
                    None => panic!("bad escape in {line:?}"),
                },
                Some((_, c)) => v.push(c),
            }
        };
        out.push((k.trim().to_owned(), v));
        rest = r[end + 1..].trim_start_matches(',').trim_start();
    }
    out
}

/// The family a sample belongs to (`_bucket`/`_sum`/`_count` of a histogram).
fn family_of<'a>(e: &Exposition, name: &'a str) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if e.kind
                .get(base)
                .is_some_and(|k| k == "histogram" || k == "summary")
            {
                return base;
            }
        }
    }
    name
}

/// Parses and validates the text format: every line is a `# HELP`, `# TYPE`, comment,
/// blank, or `name{labels} value [timestamp]` of a family whose TYPE came first.
fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition {
        text: text.to_owned(),
        ..Default::default()
    };
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(valid_name(name), "{line:?}");
            assert!(
                e.help.insert(name.into(), help.into()).is_none(),
                "HELP twice: {line:?}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
            assert!(valid_name(name), "{line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line:?}"
            );
            assert!(
                !e.samples.iter().any(|s| family_of(&e, &s.name) == name),
                "TYPE after samples: {line:?}"
            );
            assert!(
                e.kind.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {line:?}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.find('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => line
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad sample {line:?}")),
        };
        let value = value.split(' ').next().unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').unwrap(), line)),
            None => (series, Vec::new()),
        };
        assert!(valid_name(name), "bad metric name in {line:?}");
        let value = parse_value(value).unwrap_or_else(|| panic!("bad value in {line:?}"));
        let fam = family_of(&e, name).to_owned();
        assert!(
            e.kind.contains_key(&fam),
            "sample before its # TYPE: {line:?}"
        );
        e.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    e
}

impl Exposition {
    /// The value of the series `name` with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }
    /// A counter series, 0 when not exposed yet.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.text))
    }
    /// Histogram buckets `(le, cumulative count)` in order of appearance.
    fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        self.samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .map(|s| {
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .unwrap_or_else(|| panic!("bucket without le: {s:?}"));
                (parse_value(&le.1).expect("le value"), s.value)
            })
            .collect()
    }
}

fn metrics(s: &Server) -> Exposition {
    let r = http(s, "GET", "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.head);
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "Content-Type {ct:?}");
    parse_exposition(std::str::from_utf8(&r.body).expect("UTF-8 exposition"))
}

/// Polls `/metrics` (bounded) until `pred` holds; returns the last snapshot.
fn metrics_until(s: &Server, what: &str, pred: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let m = metrics(s);
        if pred(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never held; last:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const HIST: &str = "wsgate_handshake_duration_seconds";

fn check_histogram(m: &Exposition) {
    let b = m.buckets(HIST);
    assert!(b.len() >= 4, "histogram buckets: {b:?}");
    for w in b.windows(2) {
        assert!(w[0].0 < w[1].0, "le strictly increasing: {b:?}");
        assert!(w[0].1 <= w[1].1, "buckets are cumulative: {b:?}");
    }
    let (last_le, last) = *b.last().unwrap();
    assert!(last_le.is_infinite(), "last bucket is +Inf: {b:?}");
    assert_eq!(
        last,
        m.must(&format!("{HIST}_count"), &[]),
        "+Inf bucket == _count"
    );
    assert!(m.must(&format!("{HIST}_sum"), &[]) >= 0.0);
    // Buckets suitable for 50 µs … 1 s (issue 3).
    let finite: Vec<f64> = b.iter().map(|x| x.0).filter(|x| x.is_finite()).collect();
    assert!(
        finite[0] <= 0.0001,
        "a bucket at or below 100 µs: {finite:?}"
    );
    assert!(
        *finite.last().unwrap() >= 1.0,
        "a bucket at or above 1 s: {finite:?}"
    );
}

/// The metric families of `docs/operations.md#metrics`, each with its `# HELP` and
/// `# TYPE`.
fn check_families(m: &Exposition) {
    for (name, kind) in [
        ("wsgate_connections_active", "gauge"),
        ("wsgate_handshakes_total", "counter"),
        ("wsgate_auth_failures_total", "counter"),
        ("wsgate_tickets_total", "counter"),
        (HIST, "histogram"),
    ] {
        assert!(m.help.contains_key(name), "# HELP {name}:\n{}", m.text);
        assert_eq!(
            m.kind.get(name).map(String::as_str),
            Some(kind),
            "# TYPE {name}:\n{}",
            m.text
        );
    }
}

// ---------------------------------------------------------------------------
// /healthz

#[test]
fn healthz_is_200_text_plain_ok() {
    let k = LocalKey::generate();
    for extra in [&[][..], &["--path", "/ws"][..]] {
        let s = serve(&k, extra);
        let r = http(&s, "GET", "/healthz", &[]);
        assert_eq!(r.status, 200, "{}", r.head);
        let ct = r.header("content-type").unwrap_or("");
        assert!(ct.starts_with("text/plain"), "Content-Type {ct:?}");
        assert_eq!(
            r.body,
            b"ok\n",
            "body {:?}",
            String::from_utf8_lossy(&r.body)
        );
        if let Some(len) = r.header("content-length") {
            assert_eq!(len, "3");
        }
    }
}

// ---------------------------------------------------------------------------
// /metrics

#[test]
fn metrics_is_prometheus_text_with_the_spec_families() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    // Before any traffic every family already has its HELP and TYPE, and the
    // histogram its buckets, `+Inf`, `_sum` and `_count`.
    let fresh = metrics(&s);
    check_families(&fresh);
    check_histogram(&fresh);
    // Something in every family, so series exist.
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
    let m = metrics(&s);
    check_families(&m);
    m.must("wsgate_connections_active", &[]);
    // Counter names end in _total and every sample is a non-negative number.
    for s in &m.samples {
        assert!(s.value >= 0.0 && !s.value.is_nan(), "{s:?}");
        if m.kind.get(&s.name).is_some_and(|k| k == "counter") {
            assert!(s.name.ends_with("_total"), "{s:?}");
        }
    }
    // Labels are the documented ones.
    for s in m
        .samples
        .iter()
        .filter(|s| s.name == "wsgate_handshakes_total")
    {
        assert_eq!(s.labels.len(), 1, "{s:?}");
        assert_eq!(s.labels[0].0, "method");
    }
    for s in m
        .samples
        .iter()
        .filter(|s| s.name == "wsgate_auth_failures_total")
    {
        assert_eq!(s.labels[0].0, "reason", "{s:?}");
        assert!(
            [
                "invalid_token",
                "expired",
                "forbidden_origin",
                "forbidden_ip",
                "ticket_reused",
                "timeout",
                "revoked"
            ]
            .contains(&s.labels[0].1.as_str()),
            "undocumented reason: {s:?}"
        );
    }
    for s in m
        .samples
        .iter()
        .filter(|s| s.name == "wsgate_tickets_total")
    {
        assert_eq!(s.labels[0].0, "event", "{s:?}");
        assert!(
            ["issued", "used", "replayed"].contains(&s.labels[0].1.as_str()),
            "{s:?}"
        );
    }
    check_histogram(&m);
    assert!(
        m.must(&format!("{HIST}_count"), &[]) >= 1.0,
        "the echo session was timed"
    );
}

#[test]
fn handshake_counters_move_by_method() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--auth", "header,protocol,cookie,query,message"]);
    let token = k.token(&Claims::new("alice"));
    let before = metrics(&s);
    let count0 = before.must(&format!("{HIST}_count"), &[]);
    run(async {
        let mut held = Vec::new();
        held.push(ws_bearer(&s, &token).await);
        let offer = format!("wsgate, {token}");
        held.push(ws_ok(&s, &[("Sec-WebSocket-Protocol", &offer)]).await);
        held.push(ws_ok(&s, &[("Cookie", &format!("wsgate_token={token}"))]).await);
        let (ws, _) = ws_connect(&s, &format!("/?token={token}"), &[])
            .await
            .expect("101");
        held.push(ws);
        let mut ws = ws_ok(&s, &[]).await;
        first_message_ok(&mut ws, &token).await;
        held.push(ws);
        for ws in &mut held {
            assert_echo(ws).await;
        }
    });
    let want = |m: &Exposition| {
        ["header", "protocol", "cookie", "query", "message"]
            .iter()
            .all(|method| {
                m.counter("wsgate_handshakes_total", &[("method", method)])
                    - before.counter("wsgate_handshakes_total", &[("method", method)])
                    == 1.0
            })
    };
    let m = metrics_until(&s, "each handshake method +1", want);
    check_histogram(&m);
    assert!(
        m.must(&format!("{HIST}_count"), &[]) >= count0 + 5.0,
        "five handshakes timed:\n{}",
        m.text
    );
}

#[test]
fn failure_and_ticket_counters_move_by_reason() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--allow-origin", APP, "--auth-timeout", "1"]);
    let token = k.token(&Claims::new("alice"));
    let f = |m: &Exposition, reason: &str| {
        m.counter("wsgate_auth_failures_total", &[("reason", reason)])
    };
    let t = |m: &Exposition, event: &str| m.counter("wsgate_tickets_total", &[("event", event)]);
    let h =
        |m: &Exposition, method: &str| m.counter("wsgate_handshakes_total", &[("method", method)]);

    let m0 = metrics(&s);
    // expired
    assert_401(&upgrade_status(
        &s,
        "/",
        &[(
            "Authorization",
            &bearer(&k.token(&Claims::new("a").exp_in(-3600))),
        )],
    ));
    let m1 = metrics_until(&s, "expired +1", |m| {
        f(m, "expired") - f(&m0, "expired") == 1.0
    });
    // invalid_token
    assert_401(&upgrade_status(
        &s,
        "/",
        &[("Authorization", "Bearer v4.local.bad")],
    ));
    let m2 = metrics_until(&s, "invalid_token +1", |m| {
        f(m, "invalid_token") - f(&m1, "invalid_token") == 1.0
    });
    // forbidden_origin
    let r = upgrade_status(
        &s,
        "/",
        &[("Origin", EVIL), ("Authorization", &bearer(&token))],
    );
    assert_eq!(r.status, 403, "{}", r.head);
    let m3 = metrics_until(&s, "forbidden_origin +1", |m| {
        f(m, "forbidden_origin") - f(&m2, "forbidden_origin") == 1.0
    });
    // timeout
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (4408, "authentication timeout".into())
        );
    });
    let m4 = metrics_until(&s, "timeout +1", |m| {
        f(m, "timeout") - f(&m3, "timeout") == 1.0
    });
    assert_eq!(
        f(&m4, "expired"),
        f(&m1, "expired"),
        "no unrelated movement"
    );

    // tickets: issued ×2, used ×1, replayed ×1, forbidden_ip ×1, ticket_reused ×1
    let mint = || {
        let r = http(
            &s,
            "POST",
            "/ticket",
            &[("Content-Length", "0"), ("Authorization", &bearer(&token))],
        );
        assert_eq!(r.status, 200, "{}", r.head);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["ticket"].as_str().unwrap().to_owned()
    };
    let t1 = mint();
    let t2 = mint();
    let m5 = metrics_until(&s, "issued +2", |m| {
        t(m, "issued") - t(&m4, "issued") == 2.0
    });
    run(async {
        let mut ws = ws_bearer(&s, &t1).await;
        assert_echo(&mut ws).await;
        assert_401(&upgrade_status(&s, "/", &[("Authorization", &bearer(&t1))]));
        let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&t2))]);
        match ws_raw_from(Ipv4Addr::new(127, 0, 0, 2), s.addr, &req).await {
            Err(r) => assert_eq!(r.status, 403, "{}", r.head),
            Ok((_, r)) => panic!("ticket from another IP accepted:\n{}", r.head),
        }
    });
    let m6 = metrics_until(&s, "ticket counters", |m| {
        t(m, "used") - t(&m5, "used") == 1.0
            && t(m, "replayed") - t(&m5, "replayed") == 1.0
            && f(m, "ticket_reused") - f(&m5, "ticket_reused") == 1.0
            && f(m, "forbidden_ip") - f(&m5, "forbidden_ip") == 1.0
            // A ticket presented by header is a `header` handshake.
            && h(m, "header") - h(&m5, "header") == 1.0
    });
    assert_eq!(t(&m6, "issued"), t(&m5, "issued"), "using mints nothing");
    // Over the whole run: each refusal counted once, under its own reason only, and
    // none as a handshake; the one handshake is the ticket's.
    for reason in [
        "invalid_token",
        "expired",
        "forbidden_origin",
        "forbidden_ip",
        "ticket_reused",
        "timeout",
    ] {
        assert_eq!(
            f(&m6, reason) - f(&m0, reason),
            1.0,
            "auth failures {reason}:\n{}",
            m6.text
        );
    }
    for (method, n) in [
        ("header", 1.0),
        ("protocol", 0.0),
        ("cookie", 0.0),
        ("query", 0.0),
        ("message", 0.0),
    ] {
        assert_eq!(
            h(&m6, method) - h(&m0, method),
            n,
            "handshakes {method}:\n{}",
            m6.text
        );
    }
    for (event, n) in [("issued", 2.0), ("used", 1.0), ("replayed", 1.0)] {
        assert_eq!(
            t(&m6, event) - t(&m0, event),
            n,
            "tickets {event}:\n{}",
            m6.text
        );
    }
    check_histogram(&m6);
    assert_still_serves(&s, &token);
}

#[test]
fn connections_active_gauge_follows_open_connections() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--auth-timeout", "30"]);
    let token = k.token(&Claims::new("alice"));
    let g = |m: &Exposition| m.must("wsgate_connections_active", &[]);
    // Baseline: the /metrics request's own connection may be counted; it is in every
    // snapshot alike.
    let base = g(&metrics_until(&s, "idle", |_| true));
    run(async {
        let mut a = ws_bearer(&s, &token).await;
        let mut b = ws_bearer(&s, &token).await;
        // A connection waiting for its first message counts too.
        let pending = ws_ok(&s, &[]).await;
        let m = metrics_until(&s, "3 more", |m| g(m) == base + 3.0);
        assert_eq!(g(&m), base + 3.0);
        let _ = a.close(None).await;
        let _ = expect_close_or_end(&mut a).await;
        let m = metrics_until(&s, "2 more", |m| g(m) == base + 2.0);
        assert_eq!(g(&m), base + 2.0);
        drop(pending);
        let _ = b.close(None).await;
        let _ = expect_close_or_end(&mut b).await;
    });
    metrics_until(&s, "back to baseline", |m| g(m) == base);
}

/// Drains a client after it sent its close (bounded).
async fn expect_close_or_end(ws: &mut Ws) {
    use smol::stream::StreamExt;
    let _ = timeout(IO_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

// ---------------------------------------------------------------------------
// Endpoints beside upgrades

#[test]
fn path_option_limits_only_upgrades() {
    let k = LocalKey::generate();
    let s = serve(&k, &["--path", "/ws"]);
    let token = k.token(&Claims::new("alice"));
    assert_eq!(http(&s, "GET", "/healthz", &[]).status, 200);
    assert_eq!(http(&s, "GET", "/metrics", &[]).status, 200);
    let r = http(
        &s,
        "POST",
        "/ticket",
        &[("Content-Length", "0"), ("Authorization", &bearer(&token))],
    );
    assert_eq!(r.status, 200, "{}", r.head);
    // An upgrade whose path is outside --path is 404, first of all checks
    // after the head size (so also on an endpoint's path).
    for path in ["/other", "/", "/ws/x", "/healthz", "/ticket"] {
        let r = upgrade_status(&s, path, &[("Authorization", &bearer(&token))]);
        assert_eq!(r.status, 404, "upgrade on {path}:\n{}", r.head);
        assert!(!r.has_header("sec-websocket-accept"), "{}", r.head);
    }
    run(async {
        let (mut ws, _) = ws_connect(&s, "/ws", &[("Authorization", &bearer(&token))])
            .await
            .expect("101 on --path");
        assert_echo(&mut ws).await;
    });
}

#[test]
fn not_an_upgrade_nor_an_endpoint_is_426() {
    let k = LocalKey::generate();
    let s = serve(&k, &[]);
    for path in ["/", "/index.html", "/healthz/x", "/metricsx"] {
        let r = http(&s, "GET", path, &[]);
        assert_eq!(r.status, 426, "GET {path}:\n{}", r.head);
    }
    assert_eq!(http(&s, "GET", "/healthz", &[]).body, b"ok\n");
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}
