//! The load generator behind `wsgate bench URL`: opens authenticated WebSocket
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
//! # Examples
//!
//! ```no_run
//! use wsgate::bench::{BenchMethod, Credentials, Options};
//!
//! let key = wsgate::Key::from_paserk(&std::fs::read_to_string("wsgate.key")?)?;
//! let mut opts = Options::new("ws://127.0.0.1:8080/".parse()?, Credentials::Mint(key));
//! opts.method = BenchMethod::Cookie;
//! opts.connections = 1000;
//! opts.concurrency = 64;
//! let report = wsgate::bench::run(&opts)?;
//! print!("{}", report.to_text());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use serde::Serialize;
use smol::Timer;
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use smol::stream::StreamExt as _;

pub mod plot;

use crate::client::{self, HandshakeError, Upgrade};
use crate::session::BoxedConnection;
use crate::token::Key;

pub use crate::client::WsUrl;

/// Read buffer of each client connection: small, so that holding thousands of
/// sessions costs the load generator little memory.
const CLIENT_READ_BUFFER: usize = 4096;

/// Largest `POST /ticket` answer read (the ticket JSON is a few hundred bytes).
const MAX_TICKET_ANSWER: usize = 16 * 1024;

/// The message echoed once per connection.
const ECHO_PAYLOAD: &str = "wsgate bench: echo this back, please";

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

/// `"ws://host:port/path?query".parse::<WsUrl>()`, the bench's URL: the error names it.
impl FromStr for WsUrl {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<WsUrl, BenchError> {
        WsUrl::parse(s).map_err(|why| BenchError::Url(format!("`{s}`: {why}")))
    }
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

/// Percentiles of one phase, in milliseconds since the connection began.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseStats {
    /// Phase name: `connect`, `ticket`, `upgraded`, `authenticated`, `echo`.
    pub phase: &'static str,
    /// Connections that reached it.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// The server process as seen from `/proc` (when a pid was given).
#[derive(Clone, Debug, Serialize)]
pub struct ServerUsage {
    /// Server CPU time (user + system) spent during the run, ms (10 ms resolution).
    pub cpu_ms: f64,
    /// Server CPU per completed round trip, µs (round-trip mode).
    pub cpu_us_per_round_trip: Option<f64>,
    /// Server RSS before the run, KiB.
    pub rss_before_kib: u64,
    /// Server RSS at the peak of the run (in hold mode: with every session held), KiB.
    pub rss_peak_kib: u64,
    /// `(rss_peak - rss_before) / sessions held`, KiB (hold mode).
    pub kib_per_session: Option<f64>,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The server URL.
    pub url: String,
    /// The method.
    pub method: BenchMethod,
    /// `round_trip` or `hold`.
    pub mode: &'static str,
    /// Concurrency used.
    pub concurrency: usize,
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that completed every phase (hold mode: sessions opened).
    pub ok: u64,
    /// Connections that failed, in all.
    pub failed: u64,
    /// Wall time of the run (hold mode: of the opening), seconds.
    pub elapsed_s: f64,
    /// Completed connections per second.
    pub rate_per_s: f64,
    /// Hold mode: sessions still open when the hold ended.
    pub held_to_end: Option<u64>,
    /// Per phase percentiles.
    pub phases: Vec<PhaseStats>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The server's CPU and memory, when `server_pid` was given.
    pub server: Option<ServerUsage>,
    /// Every connection's time to each phase it reached, µs, sorted; in phase order.
    /// For [`plot`]; not in the JSON.
    #[serde(skip)]
    pub samples_us: Vec<(&'static str, Vec<u32>)>,
}

impl Report {
    /// The report as JSON (one object).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "wsgate bench {} method={} mode={} concurrency={}",
            self.url, self.method, self.mode, self.concurrency
        );
        let what = if self.mode == "hold" { "opened" } else { "ok" };
        let _ = writeln!(
            s,
            "{} {what}, {} failed of {} in {:.2} s: {:.0} conn/s",
            self.ok, self.failed, self.attempted, self.elapsed_s, self.rate_per_s
        );
        if let Some(h) = self.held_to_end {
            let _ = writeln!(s, "{h} sessions still open at the end of the hold");
        }
        let _ = writeln!(
            s,
            "{:<24}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "ms since start", "count", "p50", "p90", "p99", "max"
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "{:<24}{:>9}{:>9.3}{:>9.3}{:>9.3}{:>9.3}",
                p.phase, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            );
        }
        if let Some(u) = &self.server {
            let _ = write!(s, "server: cpu {:.0} ms", u.cpu_ms);
            if let Some(c) = u.cpu_us_per_round_trip {
                let _ = write!(s, ", {c:.1} µs per round trip");
            }
            let _ = write!(s, "; rss {} → {} KiB", u.rss_before_kib, u.rss_peak_kib);
            if let Some(k) = u.kib_per_session {
                let _ = write!(s, ", {k:.2} KiB per held session");
            }
            s.push('\n');
        }
        if self.errors.is_empty() {
            s.push_str("errors: none\n");
        } else {
            s.push_str("errors:\n");
            for (kind, n) in &self.errors {
                let _ = writeln!(s, "  {n:>8}  {kind}");
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------
// /proc readings of the server (Linux).

/// CPU time (user + system) of process `pid`, in clock ticks of 10 ms.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of process `pid`, KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------
// One connection.

const PHASES: [&str; 5] = ["connect", "ticket", "upgraded", "authenticated", "echo"];

#[derive(Default)]
struct Times([Option<Duration>; 5]);

impl Times {
    fn mark(&mut self, phase: usize, start: Instant) {
        self.0[phase] = Some(start.elapsed());
    }
}

type Ws = WebSocketStream<BoxedConnection>;

struct Failure {
    kind: String,
}

impl Failure {
    fn new(kind: impl Into<String>) -> Failure {
        Failure { kind: kind.into() }
    }
}

fn ws_failure(stage: &str, e: WsError) -> Failure {
    match e {
        WsError::Io(e) => Failure::new(format!("{stage}: {}", io_kind(&e))),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            Failure::new(format!("{stage}: connection closed"))
        }
        WsError::Protocol(p) => Failure::new(format!("{stage}: protocol: {p}")),
        other => Failure::new(format!("{stage}: {other}")),
    }
}

fn io_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available (ports exhausted?)".into(),
        _ if e.raw_os_error() == Some(24) => "too many open files (raise ulimit -n)".into(),
        k => format!("{k}"),
    }
}

struct Plan {
    url: WsUrl,
    addr: SocketAddr,
    method: BenchMethod,
    credentials: Credentials,
    sub: String,
    ttl: i64,
    cookie: String,
    timeout: Duration,
    ws_config: WebSocketConfig,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsClient>,
}

impl Plan {
    fn token(&self) -> Result<String, Failure> {
        match &self.credentials {
            Credentials::Token(t) => Ok(t.clone()),
            Credentials::Mint(key) => {
                let claims = crate::token::claims_json(
                    &self.sub,
                    crate::time::unix_now(),
                    self.ttl,
                    None,
                    None,
                    None,
                    &[],
                );
                key.issue(&claims).map_err(|_| Failure::new("mint token"))
            }
        }
    }

    /// TCP, then TLS for a `wss://` URL (the `connect` phase covers both).
    async fn connect(&self) -> Result<BoxedConnection, Failure> {
        let s = TcpStream::connect(self.addr)
            .await
            .map_err(|e| Failure::new(format!("connect: {}", io_kind(&e))))?;
        let _ = s.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls
                .connect(self.url.host(), s)
                .await
                .map_err(|e| Failure::new(format!("tls: {}", crate::tls::handshake_reason(&e))));
        }
        Ok(Box::new(s))
    }

    /// `POST /ticket` with the token as Bearer; the ticket from the JSON answer.
    async fn fetch_ticket(&self, token: &str) -> Result<String, Failure> {
        let mut s = self.connect().await?;
        let req = format!(
            "POST /ticket HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.url.authority()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| Failure::new(format!("ticket: {}", io_kind(&e))))?;
        let mut answer = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| Failure::new(format!("ticket: {}", io_kind(&e))))?;
            if n == 0 || answer.len() + n > MAX_TICKET_ANSWER {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
            // Stop as soon as the whole body is there (the server half-closes anyway).
            if let Some(body) = http_body(&answer) {
                if body.ends_with(b"}") || body.ends_with(b"}\n") {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| Failure::new("ticket: no HTTP answer"))?;
        if status != 200 {
            return Err(Failure::new(format!("ticket: http {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            ticket: String,
        }
        let body = http_body(&answer).ok_or_else(|| Failure::new("ticket: no body"))?;
        serde_json::from_slice::<Answer>(body)
            .map(|a| a.ticket)
            .map_err(|_| Failure::new("ticket: answer is not {\"ticket\":…}"))
    }

    async fn upgrade(&self, stream: BoxedConnection, token: Option<&str>) -> Result<Ws, Failure> {
        let header = token.and_then(|token| match self.method {
            BenchMethod::Header | BenchMethod::Ticket => {
                Some(("Authorization", format!("Bearer {token}")))
            }
            BenchMethod::Protocol => Some(("Sec-WebSocket-Protocol", format!("wsgate, {token}"))),
            BenchMethod::Cookie => Some(("Cookie", format!("{}={token}", self.cookie))),
            BenchMethod::Message => None,
        });
        let header = header.as_ref().map(|(name, value)| (*name, value.as_str()));
        let upgrade = Upgrade::new(self.url.authority(), self.url.path(), header.as_slice())
            .map_err(|e| match e {
                HandshakeError::Header(_) => Failure::new("token is not a header value"),
                e => Failure::new(e.to_string()),
            })?;
        client::handshake(stream, &upgrade, self.ws_config)
            .await
            .map_err(|e| match e {
                HandshakeError::Status(code) => Failure::new(format!("http {code}")),
                HandshakeError::Io(e) => Failure::new(format!("upgrade: {}", io_kind(&e))),
                e => Failure::new(format!("upgrade: {e}")),
            })
    }

    /// Opens an authenticated session, marking the phases up to `authenticated`.
    async fn open(&self, start: Instant, times: &mut Times) -> Result<Ws, Failure> {
        let token = self.token()?;
        let ticket;
        let presented = match self.method {
            BenchMethod::Ticket => {
                ticket = self.fetch_ticket(&token).await?;
                times.mark(1, start);
                Some(ticket.as_str())
            }
            BenchMethod::Message => None,
            _ => Some(token.as_str()),
        };
        let stream = self.connect().await?;
        if times.0[0].is_none() {
            times.mark(0, start);
        }
        let mut ws = self.upgrade(stream, presented).await?;
        times.mark(2, start);
        if self.method == BenchMethod::Message {
            ws.send(Message::text(token))
                .await
                .map_err(|e| ws_failure("first message", e))?;
            match next_data(&mut ws, "authenticated").await? {
                Message::Text(t) if t.as_str().starts_with(r#"{"type":"authenticated""#) => {}
                _ => return Err(Failure::new("authenticated: unexpected frame")),
            }
        }
        times.mark(3, start);
        Ok(ws)
    }

    /// One round trip: open, echo once, close.
    async fn round_trip(&self, times: &mut Times) -> Result<(), Failure> {
        let start = Instant::now();
        let mut ws = self.open(start, times).await?;
        ws.send(Message::text(ECHO_PAYLOAD))
            .await
            .map_err(|e| ws_failure("echo", e))?;
        match next_data(&mut ws, "echo").await? {
            Message::Text(t) if t.as_str() == ECHO_PAYLOAD => {}
            _ => return Err(Failure::new("echo: wrong answer")),
        }
        times.mark(4, start);
        close(&mut ws).await;
        Ok(())
    }
}

/// Where the body of an HTTP answer starts, once the head is complete.
fn http_body(answer: &[u8]) -> Option<&[u8]> {
    answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| &answer[i + 4..])
}

/// The next text or binary frame; a close frame is a failure named by its code.
async fn next_data(ws: &mut Ws, stage: &str) -> Result<Message, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Close(Some(f)))) => {
                let code: u16 = f.code.into();
                return Err(Failure::new(format!("close {code} {}", f.reason)));
            }
            Some(Ok(Message::Close(None))) => return Err(Failure::new("close (no code)")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_failure(stage, e)),
            None => return Err(Failure::new(format!("{stage}: connection closed"))),
        }
    }
}

/// Closes with 1000 and waits for the server's close (bounded by the caller's timeout).
async fn close(ws: &mut Ws) {
    if ws.close(None).await.is_ok() {
        while let Some(Ok(_)) = ws.next().await {}
    }
}

async fn timed<T>(
    limit: Duration,
    stage: &str,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    f.or(async {
        Timer::after(limit).await;
        Err(Failure::new(format!("timeout ({stage})")))
    })
    .await
}

// ---------------------------------------------------------------------------
// The run.

struct Tally {
    started: Cell<u64>,
    ok: Cell<u64>,
    failed: Cell<u64>,
    times: RefCell<[Vec<u32>; 5]>,
    errors: RefCell<BTreeMap<String, u64>>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            started: Cell::new(0),
            ok: Cell::new(0),
            failed: Cell::new(0),
            times: RefCell::new(Default::default()),
            errors: RefCell::new(BTreeMap::new()),
        }
    }

    fn record(&self, times: &Times, result: Result<(), Failure>) {
        let mut all = self.times.borrow_mut();
        for (i, t) in times.0.iter().enumerate() {
            if let Some(t) = t {
                all[i].push(t.as_micros().min(u32::MAX as u128) as u32);
            }
        }
        match result {
            Ok(()) => self.ok.set(self.ok.get() + 1),
            Err(f) => {
                self.failed.set(self.failed.get() + 1);
                *self.errors.borrow_mut().entry(f.kind).or_default() += 1;
            }
        }
    }

    fn phases(&self) -> Vec<PhaseStats> {
        let mut all = self.times.borrow_mut();
        let mut out = Vec::new();
        for (i, v) in all.iter_mut().enumerate() {
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            let pick = |q: f64| {
                let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                v[rank - 1] as f64 / 1e3
            };
            out.push(PhaseStats {
                phase: PHASES[i],
                count: v.len(),
                p50_ms: pick(0.50),
                p90_ms: pick(0.90),
                p99_ms: pick(0.99),
                max_ms: v[v.len() - 1] as f64 / 1e3,
            });
        }
        out
    }

    /// The samples of every phase reached, sorted (after [`Tally::phases`]).
    fn samples(&self) -> Vec<(&'static str, Vec<u32>)> {
        let mut all = self.times.take();
        let mut out = Vec::new();
        for (i, v) in all.iter_mut().enumerate() {
            if !v.is_empty() {
                v.sort_unstable();
                out.push((PHASES[i], std::mem::take(v)));
            }
        }
        out
    }
}

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
        let client = crate::tls::TlsClient::new(opts.ca.as_deref(), "--ca")
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
        let u: WsUrl = "ws://127.0.0.1:8080/ws?x=1".parse().unwrap();
        assert_eq!(
            (u.host(), u.port(), u.path()),
            ("127.0.0.1", 8080, "/ws?x=1")
        );
        let u: WsUrl = "ws://localhost".parse().unwrap();
        assert_eq!((u.port(), u.path()), (80, "/"));
        let u: WsUrl = "ws://[::1]:9/".parse().unwrap();
        assert_eq!((u.authority(), u.port()), ("[::1]:9", 9));
        assert_eq!(u.to_string(), "ws://[::1]:9/");
        let u: WsUrl = "WS://h:1?q".parse().unwrap();
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
            let e = bad.parse::<WsUrl>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("url: `{bad}`: ")), "{bad}: {e}");
        }
        #[cfg(not(feature = "tls"))]
        assert!(
            "wss://h/"
                .parse::<WsUrl>()
                .unwrap_err()
                .to_string()
                .contains("use ws://")
        );
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let t = Tally::new();
        for us in 1..=100u32 {
            t.times.borrow_mut()[0].push(us * 1000);
        }
        let p = &t.phases()[0];
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
    }
}
