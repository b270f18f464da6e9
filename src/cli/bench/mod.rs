//! The load generator behind `wsgate bench URL`, a module of the binary (not of the
//! library: it is a client of it, written against `wsgate::…` paths only, so that
//! `benches/handshake.rs` can include it as it is): opens authenticated WebSocket
//! connections against any wsgate deployment (or any server taking the same
//! credentials) and measures each phase of each connection.
//!
//! Per connection it records, in time since the connection began: the TCP connect,
//! the ticket (method `ticket` only: `POST /ticket` answered), the `101`, the moment
//! it is authenticated (the `101`, or the `authenticated` frame for method `message`)
//! and the first echo; then it closes with 1000. At most `concurrency` connections
//! are open at once; the run stops after `connections` or `duration`, whichever
//! comes first. Every failure is counted by kind (`http 401`, `close 4401 invalid
//! token`, `connect: connection refused`, `timeout (upgrade)`, …).
//!
//! In hold mode it opens `hold` authenticated sessions, keeps them idle for
//! `hold_for`, then closes them: the way to measure memory per idle session.
//! Given the server's pid (a process on this machine), it also reads the server's
//! CPU time and RSS from `/proc`: CPU per round trip, KiB per held session.
//!
//! Split by concern: this file holds the options and the run (round trips or hold),
//! [`connection`] what one connection does, [`report`] what is measured and printed,
//! [`plot`] the latency curves drawn from reports.
//!
//! ```ignore
//! let key = wsgate::Key::from_paserk(&std::fs::read_to_string("wsgate.key")?)?;
//! let mut opts = Options::new(parse_url("ws://127.0.0.1:8080/")?, Credentials::Mint(key));
//! opts.method = BenchMethod::Cookie;
//! opts.connections = 1000;
//! opts.concurrency = 64;
//! let report = run(&opts)?;
//! print!("{}", report.to_text());
//! ```

mod connection;
pub mod plot;
mod report;

use std::cell::Cell;
use std::fmt;
use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use serde::Serialize;
use smol::Timer;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;
use wsgate::Key;
use wsgate::client::WsUrl;

use connection::{Plan, Times, close, timed};
pub use report::Report;
use report::{ServerUsage, Tally, proc_cpu_ticks, proc_rss_kib};

/// Read buffer of each client connection: small, so that holding thousands of
/// sessions costs the load generator little memory.
const CLIENT_READ_BUFFER: usize = 4096;

/// How the token is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMethod {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `Sec-WebSocket-Protocol: wsgate, <token>`.
    Protocol,
    /// `Cookie: <cookie>=<token>`.
    Cookie,
    /// Upgrade without a token, then the token as the first text frame.
    Message,
    /// `POST /ticket` with the token as Bearer, then upgrade with the ticket as Bearer.
    Ticket,
}

impl BenchMethod {
    /// The name `--method` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            BenchMethod::Header => "header",
            BenchMethod::Protocol => "protocol",
            BenchMethod::Cookie => "cookie",
            BenchMethod::Message => "message",
            BenchMethod::Ticket => "ticket",
        }
    }
}

impl fmt::Display for BenchMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BenchMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<BenchMethod, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "header" => BenchMethod::Header,
            "protocol" => BenchMethod::Protocol,
            "cookie" => BenchMethod::Cookie,
            "message" => BenchMethod::Message,
            "ticket" => BenchMethod::Ticket,
            _ => {
                return Err(format!(
                    "unknown method `{s}` (expected header, protocol, cookie, message, ticket)"
                ));
            }
        })
    }
}

/// The bench's URL, `ws://host:port/path?query` (or `wss://…`): the error names it.
pub fn parse_url(s: &str) -> Result<WsUrl, BenchError> {
    WsUrl::parse(s).map_err(|why| BenchError::Url(format!("`{s}`: {why}")))
}

/// The address to connect to (the first the name resolves to).
fn resolve(url: &WsUrl) -> Result<SocketAddr, BenchError> {
    (url.host(), url.port())
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| BenchError::Url(format!("cannot resolve `{}`", url.host())))
}

/// Where tokens come from.
pub enum Credentials {
    /// The same token on every connection.
    Token(String),
    /// A fresh token per connection, minted with this key (`k4.local` or `k4.secret`).
    Mint(Key),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(…)"),
            Credentials::Mint(k) => write!(f, "Mint({k:?})"),
        }
    }
}

/// What to run. Build with [`Options::new`] and set fields.
#[derive(Debug)]
#[non_exhaustive]
pub struct Options {
    /// The server.
    pub url: WsUrl,
    /// How the token is presented. Default `header`.
    pub method: BenchMethod,
    /// Tokens.
    pub credentials: Credentials,
    /// `sub` of minted tokens. Default `bench`.
    pub sub: String,
    /// Lifetime of minted tokens, seconds. Default 900.
    pub ttl: i64,
    /// Cookie name for method `cookie`. Default `wsgate_token`.
    pub cookie: String,
    /// Connections to make in all (round-trip mode; `u64::MAX`: until `duration`).
    /// Default 1000.
    pub connections: u64,
    /// Connections open at once. Default 64.
    pub concurrency: usize,
    /// Stop after this long even if `connections` is not reached.
    pub duration: Option<Duration>,
    /// Hold mode: open this many sessions and keep them idle.
    pub hold: Option<u64>,
    /// Hold mode: how long to keep them. Default 10 s.
    pub hold_for: Duration,
    /// Bound on each connection's round trip (or each session's opening). Default 10 s.
    pub timeout: Duration,
    /// A server process on this machine whose CPU time and RSS to read from `/proc`.
    pub server_pid: Option<u32>,
    /// Print a progress line on stderr (only when stderr is a terminal). Default true.
    pub progress: bool,
    /// For a `wss://` URL: a PEM file of CAs to trust besides the system's roots.
    #[cfg(feature = "tls")]
    pub ca: Option<std::path::PathBuf>,
}

impl Options {
    /// Defaults: method `header`, 1000 connections, 64 at once.
    pub fn new(url: WsUrl, credentials: Credentials) -> Options {
        Options {
            url,
            method: BenchMethod::Header,
            credentials,
            sub: "bench".into(),
            ttl: 900,
            cookie: "wsgate_token".into(),
            connections: 1000,
            concurrency: 64,
            duration: None,
            hold: None,
            hold_for: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            server_pid: None,
            progress: true,
            #[cfg(feature = "tls")]
            ca: None,
        }
    }
}

/// Why the bench could not run at all (per-connection failures are counted in the
/// [`Report`] instead).
#[derive(Debug)]
pub enum BenchError {
    /// The URL is not `ws://host:port/path` or does not resolve.
    Url(String),
    /// A minting key that cannot issue (a `k4.public` key), or minting failed.
    Key(String),
    /// Bad option values.
    Options(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Url(e) => write!(f, "url: {e}"),
            BenchError::Key(e) => write!(f, "--key: {e}"),
            BenchError::Options(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for BenchError {}

// ---------------------------------------------------------------------------
// The run.

/// Runs the bench described by `opts` on the calling thread (one smol executor,
/// one task per open connection) and reports.
pub fn run(opts: &Options) -> Result<Report, BenchError> {
    if opts.concurrency == 0 {
        return Err(BenchError::Options("-c: must be at least 1".into()));
    }
    if let Credentials::Mint(k) = &opts.credentials {
        if !k.can_issue() {
            return Err(BenchError::Key(
                "a k4.public key cannot mint tokens (use the k4.local or k4.secret key)".into(),
            ));
        }
    }
    let addr = resolve(&opts.url)?;
    #[cfg(feature = "tls")]
    let tls = if opts.url.is_tls() {
        let client = wsgate::internal::TlsClient::new(opts.ca.as_deref(), "--ca")
            .map_err(|e| BenchError::Options(e.to_string()))?;
        Some(client)
    } else if opts.ca.is_some() {
        return Err(BenchError::Options(
            "--ca: the URL is ws:// (no TLS); use wss://".into(),
        ));
    } else {
        None
    };
    let plan = Rc::new(Plan {
        url: opts.url.clone(),
        addr,
        method: opts.method,
        credentials: match &opts.credentials {
            Credentials::Token(t) => Credentials::Token(t.clone()),
            Credentials::Mint(k) => Credentials::Mint(
                Key::from_paserk(&k.to_paserk()).map_err(|e| BenchError::Key(e.to_string()))?,
            ),
        },
        sub: opts.sub.clone(),
        ttl: opts.ttl,
        cookie: opts.cookie.clone(),
        timeout: opts.timeout,
        ws_config: WebSocketConfig::default()
            .read_buffer_size(CLIENT_READ_BUFFER)
            .write_buffer_size(0),
        #[cfg(feature = "tls")]
        tls,
    });
    let show_progress = opts.progress && std::io::stderr().is_terminal();
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        match opts.hold {
            None => round_trips(&ex, plan, opts, show_progress).await,
            Some(k) => hold(&ex, plan, opts, k, show_progress).await,
        }
    }))
}

fn progress_line(t: &Tally, total: u64, began: Instant) {
    let done = t.ok.get() + t.failed.get();
    let rate = done as f64 / began.elapsed().as_secs_f64().max(1e-9);
    // `total` is u64::MAX when only a duration bounds the run.
    let of = if total == u64::MAX {
        String::new()
    } else {
        format!("/{total}")
    };
    eprint!(
        "\r{done}{of} done, {} ok, {} failed, {rate:.0}/s   ",
        t.ok.get(),
        t.failed.get()
    );
}

async fn round_trips(
    ex: &smol::LocalExecutor<'_>,
    plan: Rc<Plan>,
    opts: &Options,
    show_progress: bool,
) -> Result<Report, BenchError> {
    let tally = Rc::new(Tally::new());
    let total = opts.connections;
    let began = Instant::now();
    let stop_at = opts.duration.map(|d| began + d);
    let cpu_before = opts.server_pid.and_then(proc_cpu_ticks);
    let rss_before = opts.server_pid.and_then(proc_rss_kib);
    let rss_peak = Rc::new(Cell::new(rss_before.unwrap_or(0)));
    let workers: Vec<_> = (0..opts.concurrency.min(total.max(1) as usize))
        .map(|_| {
            let plan = plan.clone();
            let tally = tally.clone();
            ex.spawn(async move {
                loop {
                    let n = tally.started.get();
                    if n >= total || stop_at.is_some_and(|s| Instant::now() >= s) {
                        break;
                    }
                    tally.started.set(n + 1);
                    let mut times = Times::default();
                    let result =
                        timed(plan.timeout, "round trip", plan.round_trip(&mut times)).await;
                    tally.record(&times, result);
                }
            })
        })
        .collect();
    let watcher = {
        let tally = tally.clone();
        let rss_peak = rss_peak.clone();
        let pid = opts.server_pid;
        ex.spawn(async move {
            loop {
                Timer::after(Duration::from_millis(250)).await;
                if show_progress {
                    progress_line(&tally, total, began);
                }
                if let Some(rss) = pid.and_then(proc_rss_kib) {
                    rss_peak.set(rss_peak.get().max(rss));
                }
            }
        })
    };
    for w in workers {
        w.await;
    }
    drop(watcher);
    if show_progress {
        progress_line(&tally, total, began);
        eprintln!();
    }
    let elapsed = began.elapsed().as_secs_f64();
    let server = opts.server_pid.map(|pid| {
        let cpu_ticks = proc_cpu_ticks(pid)
            .zip(cpu_before)
            .map_or(0, |(a, b)| a.saturating_sub(b));
        let cpu_ms = cpu_ticks as f64 * 10.0;
        let rss_before = rss_before.unwrap_or(0);
        let peak = rss_peak.get().max(proc_rss_kib(pid).unwrap_or(0));
        ServerUsage {
            cpu_ms,
            cpu_us_per_round_trip: (tally.ok.get() > 0)
                .then(|| cpu_ms * 1e3 / tally.ok.get() as f64),
            rss_before_kib: rss_before,
            rss_peak_kib: peak,
            kib_per_session: None,
        }
    });
    Ok(Report {
        url: plan.url.to_string(),
        method: plan.method,
        mode: "round_trip",
        concurrency: opts.concurrency,
        attempted: tally.started.get(),
        ok: tally.ok.get(),
        failed: tally.failed.get(),
        elapsed_s: elapsed,
        rate_per_s: tally.ok.get() as f64 / elapsed.max(1e-9),
        held_to_end: None,
        phases: tally.phases(),
        samples_us: tally.samples(),
        errors: tally.errors.take(),
        server,
    })
}

async fn hold(
    ex: &smol::LocalExecutor<'_>,
    plan: Rc<Plan>,
    opts: &Options,
    count: u64,
    show_progress: bool,
) -> Result<Report, BenchError> {
    let tally = Rc::new(Tally::new());
    let began = Instant::now();
    let rss_before = opts.server_pid.and_then(proc_rss_kib);
    let cpu_before = opts.server_pid.and_then(proc_cpu_ticks);
    // Closing the sender releases every held session at once.
    let (release, released) = smol::channel::bounded::<()>(1);
    let still_open = Rc::new(Cell::new(0u64));
    // At most `concurrency` sessions are being opened at once.
    let (slots_tx, slots_rx) = smol::channel::bounded::<()>(opts.concurrency);
    let (done_tx, done_rx) = smol::channel::unbounded::<()>();
    let mut holders = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let _ = slots_tx.send(()).await;
        tally.started.set(tally.started.get() + 1);
        let plan = plan.clone();
        let mine = tally.clone();
        let released = released.clone();
        let still_open = still_open.clone();
        let slots_rx = slots_rx.clone();
        let done_tx = done_tx.clone();
        holders.push(ex.spawn(async move {
            let start = Instant::now();
            let mut times = Times::default();
            let opened = timed(plan.timeout, "open", plan.open(start, &mut times)).await;
            let _ = slots_rx.try_recv();
            let mut ws = match opened {
                Ok(ws) => {
                    mine.record(&times, Ok(()));
                    ws
                }
                Err(f) => {
                    mine.record(&times, Err(f));
                    let _ = done_tx.send(()).await;
                    return;
                }
            };
            let _ = done_tx.send(()).await;
            // Idle: keep reading (answers the server's pings) until released.
            let dropped = async {
                while let Some(Ok(_)) = ws.next().await {}
                true
            }
            .or(async {
                let _ = released.recv().await;
                false
            })
            .await;
            if dropped {
                *mine
                    .errors
                    .borrow_mut()
                    .entry("dropped during hold".into())
                    .or_default() += 1;
            } else {
                still_open.set(still_open.get() + 1);
                let _ = async {
                    close(&mut ws).await;
                }
                .or(async {
                    Timer::after(Duration::from_secs(5)).await;
                })
                .await;
            }
        }));
        if show_progress && tally.started.get() % 256 == 0 {
            progress_line(&tally, count, began);
        }
    }
    for _ in 0..count {
        let _ = done_rx.recv().await;
    }
    let opening = began.elapsed().as_secs_f64();
    if show_progress {
        progress_line(&tally, count, began);
        eprintln!();
    }
    // Let the server settle (its handshake buffers freed) before reading its RSS.
    Timer::after(Duration::from_millis(200)).await;
    let rss_held = opts.server_pid.and_then(proc_rss_kib);
    eprintln!(
        "bench: holding {} sessions for {} s",
        tally.ok.get(),
        opts.hold_for.as_secs_f64()
    );
    Timer::after(opts.hold_for).await;
    let rss_end = opts.server_pid.and_then(proc_rss_kib);
    drop(release);
    for h in holders {
        h.await;
    }
    let server = opts.server_pid.map(|pid| {
        let cpu_ticks = proc_cpu_ticks(pid)
            .zip(cpu_before)
            .map_or(0, |(a, b)| a.saturating_sub(b));
        let before = rss_before.unwrap_or(0);
        let peak = rss_held.unwrap_or(0).max(rss_end.unwrap_or(0));
        let held = tally.ok.get();
        ServerUsage {
            cpu_ms: cpu_ticks as f64 * 10.0,
            cpu_us_per_round_trip: None,
            rss_before_kib: before,
            rss_peak_kib: peak,
            kib_per_session: (held > 0).then(|| peak.saturating_sub(before) as f64 / held as f64),
        }
    });
    Ok(Report {
        url: plan.url.to_string(),
        method: plan.method,
        mode: "hold",
        concurrency: opts.concurrency,
        attempted: tally.started.get(),
        ok: tally.ok.get(),
        failed: tally.failed.get(),
        elapsed_s: opening,
        rate_per_s: tally.ok.get() as f64 / opening.max(1e-9),
        held_to_end: Some(still_open.get()),
        phases: tally.phases(),
        samples_us: tally.samples(),
        errors: tally.errors.take(),
        server,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let u = parse_url("ws://127.0.0.1:8080/ws?x=1").unwrap();
        assert_eq!(
            (u.host(), u.port(), u.path()),
            ("127.0.0.1", 8080, "/ws?x=1")
        );
        let u = parse_url("ws://localhost").unwrap();
        assert_eq!((u.port(), u.path()), (80, "/"));
        let u = parse_url("ws://[::1]:9/").unwrap();
        assert_eq!((u.authority(), u.port()), ("[::1]:9", 9));
        assert_eq!(u.to_string(), "ws://[::1]:9/");
        let u = parse_url("WS://h:1?q").unwrap();
        assert_eq!(u.path(), "/?q");
    }

    #[test]
    fn refuses_other_urls_clearly() {
        for bad in [
            "http://h/",
            "h:80",
            "ws://",
            "ws://h:x/",
            "ws://u@h/",
            "ws://[::1/",
            "ws://h/#f",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("url: `{bad}`: ")), "{bad}: {e}");
        }
        #[cfg(not(feature = "tls"))]
        assert!(
            parse_url("wss://h/")
                .unwrap_err()
                .to_string()
                .contains("use ws://")
        );
    }
}
