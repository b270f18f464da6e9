//! Test harness shared by the integration tests: runs the real `wsgate` binary on
//! 127.0.0.1 port 0 and talks to it over loopback sockets.
//!
//! Every wait is bounded: the listen line is awaited for at most [`START_TIMEOUT`],
//! every socket read has a timeout, and every async block runs under [`run`],
//! which fails the test after [`TEST_TIMEOUT`]. Nothing sleeps to synchronise.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_tungstenite::WebSocketStream;
pub use async_tungstenite::tungstenite;
use pasetors::keys::{
    AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate, SymmetricKey,
};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version4::{LocalToken, PublicToken, V4};
use smol::stream::StreamExt;
pub use tungstenite::Message;

/// Bound on waiting for the `event=listen` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on any single network read in the helpers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on a whole async test body.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test: cargo's build of this test profile, or the one named by
/// `WSGATE_TEST_BIN` (`scripts/test` runs the suites again against the router build,
/// `target/small/wsgate`, whose link flags differ).
pub fn bin() -> String {
    std::env::var("WSGATE_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsgate").to_owned())
}

/// A client WebSocket over a smol TCP stream.
pub type Ws = WebSocketStream<smol::net::TcpStream>;

/// What a client WebSocket runs over: a TCP stream, or an in-process pipe
/// (`smol::net::unix::UnixStream::pair`) served by `ServerHandle::serve_connection`.
pub trait Transport: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin {}

impl<T: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin> Transport for T {}

// ---------------------------------------------------------------------------
// Time
//
// Written independently of `wsgate::time` on purpose: the black-box tests must not
// share a formatting or parsing bug with the code under test.

/// Unix seconds, now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ` (the crate's own formatter).
pub fn rfc3339(t: i64) -> String {
    wsgate::internal::Rfc3339(t).to_string()
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → unix seconds (fraction dropped).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // days_from_civil
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

// ---------------------------------------------------------------------------
// Temporary directories

/// A unique directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "wsgate-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// A path inside the directory, as a `String` for argument lists.
    pub fn file(&self, name: &str) -> String {
        self.path.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Claims and keys

/// Token claims, built as JSON by hand (times in RFC 3339).
#[derive(Clone, Debug)]
pub struct Claims(pub serde_json::Map<String, serde_json::Value>);

impl Claims {
    /// `sub`, `iat` = now, `exp` = now + 600 s.
    pub fn new(sub: &str) -> Claims {
        let mut c = Claims(serde_json::Map::new());
        c.0.insert("sub".into(), sub.into());
        let t = now();
        c.0.insert("iat".into(), rfc3339(t).into());
        c.0.insert("exp".into(), rfc3339(t + 600).into());
        c
    }
    /// Sets `exp` to now + `secs` (negative: in the past).
    pub fn exp_in(self, secs: i64) -> Claims {
        self.time("exp", secs)
    }
    pub fn nbf_in(self, secs: i64) -> Claims {
        self.time("nbf", secs)
    }
    pub fn iat_in(self, secs: i64) -> Claims {
        self.time("iat", secs)
    }
    pub fn time(mut self, key: &str, secs: i64) -> Claims {
        self.0.insert(key.into(), rfc3339(now() + secs).into());
        self
    }
    pub fn set(mut self, key: &str, value: impl Into<serde_json::Value>) -> Claims {
        self.0.insert(key.into(), value.into());
        self
    }
    pub fn without(mut self, key: &str) -> Claims {
        self.0.remove(key);
        self
    }
    pub fn exp(&self) -> &str {
        self.0["exp"].as_str().unwrap()
    }
    pub fn json(&self) -> String {
        serde_json::Value::Object(self.0.clone()).to_string()
    }
}

fn paserk_of(k: &dyn FormatAsPaserk) -> String {
    let mut s = String::new();
    k.fmt(&mut s).unwrap();
    s
}

/// The `{"kid":"…"}` footer JSON for a key id.
pub fn kid_footer(kid: &str) -> String {
    format!(r#"{{"kid":"{kid}"}}"#)
}

/// A `k4.local` key written to its own temp file.
pub struct LocalKey {
    pub key: SymmetricKey<V4>,
    /// The PASERK string `k4.local.…`.
    pub paserk: String,
    /// `k4.lid.…`
    pub kid: String,
    /// The key file.
    pub path: String,
    _dir: TempDir,
}

impl LocalKey {
    pub fn generate() -> LocalKey {
        let key = SymmetricKey::<V4>::generate().unwrap();
        let paserk = paserk_of(&key);
        let dir = TempDir::new();
        let path = dir.file("local.key");
        std::fs::write(&path, format!("{paserk}\n")).unwrap();
        LocalKey::from_parts(key, paserk, path, dir)
    }
    /// Reads a key file (e.g. one written by `wsgate keygen`).
    pub fn from_file(path: &str) -> LocalKey {
        let text = std::fs::read_to_string(path).unwrap();
        let paserk = text.trim().to_owned();
        let key = SymmetricKey::<V4>::try_from(paserk.as_str()).unwrap();
        let dir = TempDir::new();
        let copy = dir.file("local.key");
        std::fs::write(&copy, &text).unwrap();
        LocalKey::from_parts(key, paserk, copy, dir)
    }
    fn from_parts(key: SymmetricKey<V4>, paserk: String, path: String, dir: TempDir) -> LocalKey {
        let kid = paserk_of(&Id::from(&key));
        LocalKey {
            key,
            paserk,
            kid,
            path,
            _dir: dir,
        }
    }
    /// A token with the `kid` footer.
    pub fn token(&self, claims: &Claims) -> String {
        self.token_with_footer(&claims.json(), Some(&kid_footer(&self.kid)))
    }
    /// A token without any footer.
    pub fn token_no_footer(&self, claims: &Claims) -> String {
        self.token_with_footer(&claims.json(), None)
    }
    pub fn token_with_footer(&self, claims_json: &str, footer: Option<&str>) -> String {
        LocalToken::encrypt(
            &self.key,
            claims_json.as_bytes(),
            footer.map(str::as_bytes),
            None,
        )
        .unwrap()
    }
    /// `--key <path>`
    pub fn arg(&self) -> [&str; 2] {
        ["--key", &self.path]
    }
}

/// An Ed25519 key pair: secret `k4.secret` file and public `k4.public` file.
pub struct PublicKeyPair {
    pub secret: AsymmetricSecretKey<V4>,
    pub public: AsymmetricPublicKey<V4>,
    pub secret_paserk: String,
    pub public_paserk: String,
    /// `k4.pid.…` of the public key.
    pub kid: String,
    pub secret_path: String,
    pub public_path: String,
    _dir: TempDir,
}

impl PublicKeyPair {
    pub fn generate() -> PublicKeyPair {
        let kp = AsymmetricKeyPair::<V4>::generate().unwrap();
        let dir = TempDir::new();
        let secret_paserk = paserk_of(&kp.secret);
        let public_paserk = paserk_of(&kp.public);
        let secret_path = dir.file("public.key");
        let public_path = dir.file("public.key.pub");
        std::fs::write(&secret_path, format!("{secret_paserk}\n")).unwrap();
        std::fs::write(&public_path, format!("{public_paserk}\n")).unwrap();
        let kid = paserk_of(&Id::from(&kp.public));
        PublicKeyPair {
            secret: kp.secret,
            public: kp.public,
            secret_paserk,
            public_paserk,
            kid,
            secret_path,
            public_path,
            _dir: dir,
        }
    }
    pub fn token(&self, claims: &Claims) -> String {
        self.token_with_footer(&claims.json(), Some(&kid_footer(&self.kid)))
    }
    pub fn token_no_footer(&self, claims: &Claims) -> String {
        self.token_with_footer(&claims.json(), None)
    }
    pub fn token_with_footer(&self, claims_json: &str, footer: Option<&str>) -> String {
        PublicToken::sign(
            &self.secret,
            claims_json.as_bytes(),
            footer.map(str::as_bytes),
            None,
        )
        .unwrap()
    }
    /// `--key <public file>`
    pub fn arg(&self) -> [&str; 2] {
        ["--key", &self.public_path]
    }
}

/// Flips one character in the middle of the token's payload.
pub fn tamper(token: &str) -> String {
    let mut b = token.as_bytes().to_vec();
    let i = 9 + (token.split('.').nth(2).unwrap().len() / 2);
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// The base64 part of a PASERK (`k4.local.<this>`).
pub fn paserk_body(paserk: &str) -> &str {
    paserk.rsplit('.').next().unwrap()
}

// ---------------------------------------------------------------------------
// Running the binary

/// Output of a shell-less run of the `wsgate` binary.
/// Every `serve` option can come from a `WSGATE_*` variable (and `WSGATE_KEY` holds a
/// key): none of the test runner's own reach the binary, only what a test sets.
fn without_wsgate_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("WSGATE_") {
            cmd.env_remove(k);
        }
    }
}

pub fn wsgate(args: &[&str]) -> Output {
    wsgate_env(args, &[])
}

pub fn wsgate_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdin(Stdio::null());
    without_wsgate_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A config error must exit at once; a hang is a failure, not a stuck test.
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("`wsgate {}` did not exit within 20 s", args.join(" "));
        }
    }
}

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[derive(Default)]
struct LogState {
    text: String,
    eof: bool,
}

/// A text buffer filled by a background reader thread.
#[derive(Clone, Default)]
pub struct SharedLog(Arc<(Mutex<LogState>, Condvar)>);

impl SharedLog {
    pub fn spawn_reader(&self, r: impl Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let (m, cv) = &*me.0;
                        m.lock()
                            .unwrap()
                            .text
                            .push_str(&String::from_utf8_lossy(&line));
                        cv.notify_all();
                    }
                }
            }
            let (m, cv) = &*me.0;
            m.lock().unwrap().eof = true;
            cv.notify_all();
        });
    }
    pub fn text(&self) -> String {
        self.0.0.lock().unwrap().text.clone()
    }
    /// Waits (bounded) until `pred` holds for the whole text so far; returns the
    /// text, or `None` on timeout or when the stream ended first.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut st = m.lock().unwrap();
        loop {
            if pred(&st.text) {
                return Some(st.text.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if st.eof {
                return None;
            }
            st = cv.wait_timeout(st, left).unwrap().0;
        }
    }
    /// Waits (bounded) for end of stream.
    pub fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut st = m.lock().unwrap();
        while !st.eof {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            st = cv.wait_timeout(st, left).unwrap().0;
        }
        true
    }
}

/// A running `wsgate serve --listen 127.0.0.1:0 …`; killed on drop.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    pub addr: SocketAddr,
    pub stderr: SharedLog,
    pub stdout: SharedLog,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::try_start_env(args, env)
            .unwrap_or_else(|log| panic!("wsgate serve {} did not start:\n{log}", args.join(" ")))
    }

    /// Starts the server; `Err(stderr)` if it exits or does not listen within
    /// [`START_TIMEOUT`].
    pub fn try_start_env(args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let mut cmd = Command::new(bin());
        cmd.arg("serve");
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args);
        without_wsgate_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn wsgate");
        let stderr = SharedLog::default();
        let stdout = SharedLog::default();
        stderr.spawn_reader(child.stderr.take().unwrap());
        stdout.spawn_reader(child.stdout.take().unwrap());
        let pid = child.id();
        let mut server = Server {
            child: Some(child),
            pid,
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr,
            stdout,
        };
        let found = server.stderr.wait_for(START_TIMEOUT, |t| {
            t.lines()
                .any(|l| l.contains("event=listen") && l.contains("addr="))
        });
        let Some(text) = found else {
            return Err(server.stderr.text());
        };
        let line = text
            .lines()
            .find(|l| l.contains("event=listen") && l.contains("addr="))
            .unwrap();
        let addr = log_value(line, "addr").expect("addr= on the listen line");
        server.addr = addr
            .parse()
            .unwrap_or_else(|_| panic!("bad addr in {line:?}"));
        // A test that binds every interface (`--listen :0`) still talks over loopback.
        match server.addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                server.addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into())
            }
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                server.addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into())
            }
            _ => {}
        }
        assert!(server.addr.ip().is_loopback(), "{line}");
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `127.0.0.1:<port>`: the value of a same-origin `Host` header.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> String {
        self.stderr.text()
    }

    /// Waits (bounded) until a stderr line satisfies `pred`; returns that line.
    pub fn wait_log_line(&self, pred: impl Fn(&str) -> bool) -> String {
        match self.stderr.wait_for(IO_TIMEOUT, |t| t.lines().any(&pred)) {
            Some(t) => t.lines().find(|l| pred(l)).unwrap().to_owned(),
            None => panic!(
                "no matching log line within {IO_TIMEOUT:?}; log:\n{}",
                self.log()
            ),
        }
    }

    /// Sends a signal with `kill -<sig> <pid>`.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit; `None` on timeout (it is then killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(timeout) {
            Ok(st) => Some(st.unwrap()),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
                None
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of `key=` in a log line (JSON-string values are unquoted).
pub fn log_value(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(i) = line[from..].find(&pat) {
        let start = from + i;
        if start == 0 || line.as_bytes()[start - 1] == b' ' {
            let rest = &line[start + pat.len()..];
            if rest.starts_with('"') {
                let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
                return de.next().and_then(Result::ok);
            }
            return Some(rest.split(' ').next().unwrap_or("").to_owned());
        }
        from = start + pat.len();
    }
    None
}

// ---------------------------------------------------------------------------
// Raw HTTP

/// A response head (and whatever body bytes were read with it).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse_head(head: &[u8]) -> Response {
    let text = String::from_utf8_lossy(head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    assert!(
        status_line.starts_with("HTTP/1.1 "),
        "bad status line {status_line:?}"
    );
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?}"));
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Response {
        status,
        headers,
        head: text,
        body: Vec::new(),
    }
}

/// Sends `bytes` and reads the response head (plus a `Content-Length` body).
pub fn http_raw(addr: SocketAddr, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(bytes).unwrap();
    read_response(&mut s)
}

/// One `read`, again if a signal to this process cut it short: a blocking read with a
/// timeout (`SO_RCVTIMEO`) fails with `Interrupted` then, even under `SA_RESTART`.
pub fn read_uninterrupted(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Reads a response head from a blocking stream (bounded by its read timeout).
pub fn read_response(s: &mut TcpStream) -> Response {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        match read_uninterrupted(s, &mut chunk) {
            Ok(0) => panic!(
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "reading response head: {e}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let mut r = parse_head(&buf[..end]);
    r.body = buf[end..].to_vec();
    if let Some(len) = r
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while r.body.len() < len {
            match read_uninterrupted(s, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => r.body.extend_from_slice(&chunk[..n]),
            }
        }
    }
    r
}

/// `METHOD path HTTP/1.1` with `Host` (unless given) and the headers.
pub fn request_bytes(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        let _ = write!(s, "Host: {host}\r\n");
    }
    for (n, v) in headers {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A plain HTTP request.
pub fn http(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    http_raw(
        server.addr,
        &request_bytes(&server.host(), method, path, headers),
    )
}

/// A WebSocket upgrade request head with the given extra headers.
pub fn upgrade_bytes(host: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut all: Vec<(&str, &str)> = vec![
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    all.extend_from_slice(headers);
    request_bytes(host, "GET", path, &all)
}

/// Sends an upgrade request and returns the response head (the socket is dropped).
pub fn upgrade_status(server: &Server, path: &str, headers: &[(&str, &str)]) -> Response {
    http_raw(server.addr, &upgrade_bytes(&server.host(), path, headers))
}

/// `Authorization: Bearer <token>` as a header pair value.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Asserts the 401 of a refused token for non-browser clients
/// (`docs/protocol.md#http-answers`).
pub fn assert_401(r: &Response) {
    assert_eq!(r.status, 401, "expected 401, got:\n{}", r.head);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#),
        "401 must carry WWW-Authenticate: Bearer error=\"invalid_token\":\n{}",
        r.head
    );
    assert!(
        !r.has_header("sec-websocket-accept"),
        "no upgrade on 401:\n{}",
        r.head
    );
}

/// The 401 for a request that carries no token at all and may not use first-message
/// auth ("no token, `message` disabled" in `docs/protocol.md#http-answers`): the
/// challenge is a Bearer one (RFC 6750 §3.1 puts no `error` on a request without token).
pub fn assert_401_no_token(r: &Response) {
    assert_eq!(r.status, 401, "expected 401, got:\n{}", r.head);
    let challenge = r.header("www-authenticate").unwrap_or("");
    assert!(
        challenge.starts_with("Bearer"),
        "401 with a Bearer challenge:\n{}",
        r.head
    );
    assert!(
        !r.has_header("sec-websocket-accept"),
        "no upgrade on 401:\n{}",
        r.head
    );
}

// ---------------------------------------------------------------------------
// Async WebSocket client

/// Runs an async test body under [`TEST_TIMEOUT`].
pub fn run<T>(f: impl Future<Output = T>) -> T {
    smol::block_on(async {
        match timeout(TEST_TIMEOUT, f).await {
            Some(v) => v,
            None => panic!("test body did not finish within {TEST_TIMEOUT:?}"),
        }
    })
}

/// `Some(output)`, or `None` if `f` did not finish within `d`.
pub async fn timeout<T>(d: Duration, f: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(f.await) }, async {
        smol::Timer::after(d).await;
        None
    })
    .await
}

/// Opens a TCP connection, sends a raw upgrade head, reads the response head.
/// `Ok` (with the WebSocket) on 101, `Err(response)` otherwise.
pub async fn ws_raw(addr: SocketAddr, request: &[u8]) -> Result<(Ws, Response), Response> {
    let s = timeout(IO_TIMEOUT, smol::net::TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    ws_on(s, request).await
}

/// [`ws_raw`] from another loopback source address (e.g. 127.0.0.2).
pub async fn ws_raw_from(
    src: std::net::Ipv4Addr,
    addr: SocketAddr,
    request: &[u8],
) -> Result<(Ws, Response), Response> {
    let s = smol::net::TcpStream::try_from(connect_from(src, addr)).unwrap();
    ws_on(s, request).await
}

/// A blocking TCP connection to `dst` whose source address is `src` (bind, then
/// connect: std has no way to do this, hence libc).
pub fn connect_from(src: std::net::Ipv4Addr, dst: SocketAddr) -> TcpStream {
    connect_with(dst, Some(src), None)
}

/// A blocking TCP connection to `dst` whose receive buffer is `bytes`, set before
/// connecting so that the window stays small: a large message then stalls on it.
pub fn connect_with_rcvbuf(dst: SocketAddr, bytes: i32) -> TcpStream {
    connect_with(dst, None, Some(bytes))
}

fn connect_with(
    dst: SocketAddr,
    src: Option<std::net::Ipv4Addr>,
    rcvbuf: Option<i32>,
) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket syscalls on a fresh descriptor that we own; the descriptor is
    // handed to TcpStream (which closes it) only after a successful connect, else closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let set_rcvbuf = |size: libc::c_int| {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        };
        let bind = |ip| {
            let local = sin(ip, 0);
            libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) == 0
        };
        let remote = sin(*dst.ip(), dst.port());
        if !rcvbuf.is_none_or(set_rcvbuf)
            || !src.is_none_or(bind)
            || libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect {src:?} → {dst}: {e}");
        }
        TcpStream::from_raw_fd(fd)
    }
}

/// The operators' listener of a server started with `--admin-listen 127.0.0.1:0`.
pub fn admin_addr(s: &Server) -> SocketAddr {
    let line = s.wait_log_line(|l| l.contains("event=admin_listen"));
    log_value(&line, "addr").unwrap().parse().unwrap()
}

/// `POST /revoke` with a JSON body to an operators' listener.
pub fn post_revoke(admin: SocketAddr, body: &str) -> Response {
    let head = format!(
        "POST /revoke HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_raw(admin, head.as_bytes())
}

/// How many file descriptors the process holds, from `/proc`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Polls (bounded) until `done` holds, for states with no event to wait on (the
/// process table, a server's descriptors).
pub fn eventually(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `msg` from `ws` until a send does not finish within `quiet` (the other end
/// stopped reading). Returns how many were accepted.
pub async fn flood_until_stalled(ws: &mut Ws, msg: &Message, max: usize, quiet: Duration) -> usize {
    for n in 0..max {
        if timeout(quiet, ws.send(msg.clone())).await.is_none() {
            return n;
        }
    }
    panic!("{max} messages were accepted without the reader reading: no backpressure");
}

pub const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// One raw client frame, masked unless `masked` is false: first byte (FIN, RSV, opcode)
/// as given, then the length and the payload.
pub fn raw_frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![b0];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n @ 126..=65535 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Upgrades over a raw socket (with a token when given) and returns the socket
/// positioned after the 101 head.
pub fn raw_upgrade(server: &Server, token: Option<&str>) -> TcpStream {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&upgrade_bytes(&server.host(), "/", &headers))
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in the 101 head");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads server frames until a close frame; its code, or `None` if the connection
/// ended without one.
pub fn raw_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).is_err() {
            return None;
        }
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).ok()?;
        if h[0] & 0x0f == 0x8 {
            return Some(if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                1005
            });
        }
    }
}

/// The header of a masked client frame announcing `len` payload bytes (the payload,
/// masked or not, is the caller's to send, or not).
pub fn raw_frame_header(b0: u8, len: u64) -> Vec<u8> {
    let mut f = vec![b0, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&MASK);
    f
}

/// The server's resident memory, from `/proc`.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The server's CPU time so far (user + system, every thread), in clock ticks, from
/// `/proc`.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (in parentheses, may hold spaces): utime and
    // stime are the 12th and 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A `wsgate::Server` from the library (not the binary), with one local key, running
/// a custom handler on its own thread; `token` is valid for it (`sub` "bob").
pub struct LibServer {
    pub addr: SocketAddr,
    pub token: String,
    /// The server's key, to mint more tokens.
    pub key: wsgate::Key,
    stop: wsgate::ShutdownHandle,
    serving: std::thread::JoinHandle<std::io::Result<()>>,
}

impl LibServer {
    /// Starts it; `tweak` adjusts the configuration (listen and key are set).
    pub fn start(handler: wsgate::Handler, tweak: impl FnOnce(&mut wsgate::Config)) -> LibServer {
        let key = wsgate::Key::generate_local().unwrap();
        let claims = wsgate::claims_json("bob", now(), 600, None, None, None, &[]);
        let token = key.issue(&claims).unwrap();
        let copy = wsgate::Key::from_paserk(&key.to_paserk()).unwrap();
        let mut config = wsgate::Config::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.keys.push(key);
        tweak(&mut config);
        let server = smol::block_on(wsgate::Server::bind(config, handler)).unwrap();
        let addr = server.local_addr().unwrap();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || smol::block_on(server.run()));
        LibServer {
            addr,
            token,
            key: copy,
            stop,
            serving,
        }
    }

    /// The running server's handle (revoke, sessions, keys).
    pub fn handle(&self) -> &wsgate::ServerHandle {
        &self.stop
    }

    /// Shuts it down and checks that `run` returned `Ok`.
    pub fn stop(self) {
        self.stop.shutdown();
        self.serving.join().unwrap().unwrap();
    }
}

/// The upgrade `request` on a connected stream; the WebSocket, or the refusal.
pub async fn ws_on(
    mut s: smol::net::TcpStream,
    request: &[u8],
) -> Result<(Ws, Response), Response> {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        match timeout(IO_TIMEOUT, s.read(&mut chunk)).await {
            None => panic!(
                "no response head within {IO_TIMEOUT:?}; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Some(Ok(0)) => panic!(
                "connection closed before a response head; got {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => panic!("reading response head: {e}"),
        }
    };
    let mut r = parse_head(&buf[..end]);
    let rest = buf[end..].to_vec();
    if r.status != 101 {
        r.body = rest;
        return Err(r);
    }
    let ws =
        WebSocketStream::from_partially_read(s, rest, tungstenite::protocol::Role::Client, None)
            .await;
    Ok((ws, r))
}

/// Upgrade on `path` with extra headers (raw client: full control of headers).
pub async fn ws_connect(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Response), Response> {
    ws_raw(server.addr, &upgrade_bytes(&server.host(), path, headers)).await
}

/// Like [`ws_connect`] but panics unless the answer is 101.
pub async fn ws_ok(server: &Server, headers: &[(&str, &str)]) -> Ws {
    match ws_connect(server, "/", headers).await {
        Ok((ws, _)) => ws,
        Err(r) => panic!("expected 101, got:\n{}", r.head),
    }
}

/// A connection authenticated with `Authorization: Bearer`.
pub async fn ws_bearer(server: &Server, token: &str) -> Ws {
    ws_ok(server, &[("Authorization", &bearer(token))]).await
}

/// The library client (`async_tungstenite::client_async`) with extra headers.
pub async fn ws_client(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::http::{HeaderName, HeaderValue};
    let mut req = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    for (n, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let tcp = timeout(IO_TIMEOUT, smol::net::TcpStream::connect(server.addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    timeout(IO_TIMEOUT, async_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake timeout")
}

/// Next message (pings/pongs included), bounded by [`IO_TIMEOUT`].
pub async fn recv(ws: &mut WebSocketStream<impl Transport>) -> Message {
    match timeout(IO_TIMEOUT, ws.next()).await {
        None => panic!("no message within {IO_TIMEOUT:?}"),
        Some(None) => panic!("stream ended"),
        Some(Some(Err(e))) => panic!("websocket error: {e}"),
        Some(Some(Ok(m))) => m,
    }
}

/// Next data or close message, skipping pings and pongs.
pub async fn recv_data(ws: &mut WebSocketStream<impl Transport>) -> Message {
    loop {
        match recv(ws).await {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

pub async fn recv_text(ws: &mut WebSocketStream<impl Transport>) -> String {
    match recv_data(ws).await {
        Message::Text(t) => t.to_string(),
        m => panic!("expected a text message, got {m:?}"),
    }
}

pub async fn send_text(ws: &mut WebSocketStream<impl Transport>, text: &str) {
    ws.send(Message::text(text.to_owned()))
        .await
        .expect("send text");
}

/// Waits (bounded by `limit`) for the close frame; panics if a data message
/// comes first. Returns (code, reason) and lets the close handshake finish.
pub async fn expect_close_within(
    ws: &mut WebSocketStream<impl Transport>,
    limit: Duration,
) -> (u16, String) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, ws.next()).await {
            None => panic!("no close frame within {limit:?}"),
            Some(None) => panic!("stream ended without a close frame"),
            Some(Some(Err(e))) => panic!("websocket error before a close frame: {e}"),
            Some(Some(Ok(Message::Close(f)))) => {
                let (code, reason) = match f {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (1005, String::new()),
                };
                // Flush our close reply; bounded, the server should then end the TCP stream.
                let _ = timeout(Duration::from_secs(2), ws.next()).await;
                return (code, reason);
            }
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Some(Some(Ok(m))) => panic!("expected only a close frame, got {m:?}"),
        }
    }
}

pub async fn expect_close(ws: &mut WebSocketStream<impl Transport>) -> (u16, String) {
    expect_close_within(ws, IO_TIMEOUT).await
}

/// Sends `first` as the first message and expects the `authenticated` frame.
pub async fn first_message_ok(
    ws: &mut WebSocketStream<impl Transport>,
    first: &str,
) -> serde_json::Value {
    send_text(ws, first).await;
    let t = recv_text(ws).await;
    let v: serde_json::Value =
        serde_json::from_str(&t).unwrap_or_else(|_| panic!("authenticated frame is not JSON: {t}"));
    assert_eq!(v["type"], "authenticated", "{t}");
    v
}

/// Text and binary echo round trip.
pub async fn assert_echo(ws: &mut WebSocketStream<impl Transport>) {
    send_text(ws, "hello wsgate").await;
    assert_eq!(recv_text(ws).await, "hello wsgate");
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    match recv_data(ws).await {
        Message::Binary(b) => assert_eq!(&b[..], &[0u8, 1, 2, 255]),
        m => panic!("expected binary echo, got {m:?}"),
    }
}

/// A fresh client with a valid header token gets 101 and echo: the server is
/// still serving after whatever the test did.
pub fn assert_still_serves(server: &Server, token: &str) {
    run(async {
        let mut ws = ws_bearer(server, token).await;
        assert_echo(&mut ws).await;
        let _ = ws.close(None).await;
    });
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `redis-server` (Debian's package; scripts/test-deps.sh installs it) on a
/// free loopback port, without persistence, stopped (and reaped) on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    /// Whether `redis-server` is installed; without it a cluster test is skipped,
    /// except under CI=true, where it fails.
    pub fn available() -> bool {
        let ok = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is missing (scripts/test-deps.sh installs it)"
            );
            eprintln!("skipped: redis-server is not installed (scripts/test-deps.sh)");
        }
        ok
    }

    pub fn start() -> Redis {
        Redis::start_on(free_port(), &[])
    }

    /// Starts on `port` with extra arguments (`--requirepass`, …); waits until it
    /// answers PING.
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let port_s = port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn redis-server");
        let redis = Redis {
            child: Some(child),
            port,
        };
        let auth: Vec<&str> = extra
            .windows(2)
            .find(|w| w[0] == "--requirepass")
            .map(|w| vec!["-a", w[1], "--no-auth-warning"])
            .unwrap_or_default();
        eventually("redis-server answers PING", START_TIMEOUT, || {
            redis.cli_with(&auth, &["PING"]).trim() == "PONG"
        });
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `redis-cli -p PORT args…`'s output ("" if it failed).
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_with(&[], args)
    }

    fn cli_with(&self, pre: &[&str], args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string()])
            .args(pre)
            .args(args);
        match cmd.stdin(Stdio::null()).stderr(Stdio::null()).output() {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(_) => String::new(),
        }
    }

    /// Calls of `command` so far, from `INFO commandstats` (0 if never called).
    pub fn calls(&self, command: &str) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{}:calls=", command.to_ascii_lowercase());
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Every command's calls so far, `INFO`'s own excluded.
    pub fn all_calls(&self) -> u64 {
        let info = self.cli(&["INFO", "commandstats"]);
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Sends a signal (`STOP`, `CONT`) to the server.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A test may leave it stopped (SIGSTOP): continue it, then kill it.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}
