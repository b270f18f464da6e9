//! One line per event on stderr (`docs/operations.md#logs`). By default `key=value` pairs:
//! values holding a space, `"`, `=` or a control character are written as JSON strings, so
//! a line stays one line and parses back unambiguously. With `--log-format json`, one JSON
//! object per line with the same fields (`level`, `event`, then each key), every value a
//! string. Tokens and key bytes are never passed in here.
//!
//! While a server runs ([`Batch`]), the lines of one executor turn are written together:
//! each line is appended to one process-wide buffer, and the server's flusher task
//! writes the buffer in one `write` once the turn's other tasks have run. The buffer
//! is flushed when the last batch ends and, by the binary's panic hook, before a
//! panic is reported, so a session that panics or a server that stops loses no line
//! (`docs/performance.md#system-calls`). With at most one connection open
//! ([`Open`]) there is nothing to share a write with: a line is written at once,
//! which saves waking the flusher (~850 instructions a line).

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use crate::digits::{push_decimal, put_decimal, put_ipv4};

/// How much to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Failures of the server itself.
    Error = 0,
    /// Trouble worth a look (an upstream down, a child's stderr).
    Warn = 1,
    /// `auth_ok`, `auth_fail`, `close`, `listen` (the default).
    Info = 2,
    /// `accept` and detail.
    Debug = 3,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Level::Error),
            "warn" | "warning" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(format!(
                "unknown log level `{s}` (expected error, warn, info, debug)"
            )),
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the process-wide level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether lines at `level` are written. Check it before building a line.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// How lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `level=info event=close peer=… ms=12` (the default).
    Text,
    /// `{"level":"info","event":"close","peer":"…","ms":"12"}`: the same fields, one
    /// object per line, every value a string (for log shippers).
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("unknown log format `{s}` (expected text or json)")),
        }
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Sets the process-wide format.
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

/// A log line being built; written to stderr in one `write` by [`Line::emit`].
pub struct Line {
    buf: String,
    json: bool,
}

impl Line {
    /// Starts a line `level=… event=…` (or its JSON object). Check [`enabled`] first
    /// on hot paths.
    pub fn new(level: Level, event: &str) -> Line {
        Line::with_format(level, event, JSON.load(Ordering::Relaxed))
    }

    fn with_format(level: Level, event: &str, json: bool) -> Line {
        let mut line = Line {
            buf: String::with_capacity(128),
            json,
        };
        if json {
            line.buf.push_str(r#"{"level":""#);
            line.buf.push_str(level.as_str());
            line.buf.push_str(r#"","event":"#);
            push_json_string(&mut line.buf, event);
        } else {
            line.buf.push_str("level=");
            line.buf.push_str(level.as_str());
            line.buf.push_str(" event=");
            line.buf.push_str(event);
        }
        line
    }

    /// Appends ` key=value`, quoting the value when needed.
    #[inline]
    pub fn kv(self, key: &str, value: impl fmt::Display) -> Line {
        self.kv_dyn(key, &value)
    }

    // One copy of the formatting and quoting for every value type.
    fn kv_dyn(mut self, key: &str, value: &dyn fmt::Display) -> Line {
        let start = self.key(key);
        let _ = write!(self.buf, "{value}");
        self.quote_from(start);
        self
    }

    /// Appends ` key=value` for a string, without `core::fmt` (the lines every
    /// connection writes use these: about 150 instructions a value less).
    pub fn kv_str(mut self, key: &str, value: &str) -> Line {
        let start = self.key(key);
        self.buf.push_str(value);
        self.quote_from(start);
        self
    }

    /// Appends ` key=value` for a number.
    pub fn kv_u64(mut self, key: &str, value: u64) -> Line {
        self.key(key);
        self.plain(|buf| push_decimal(buf, value));
        self
    }

    /// Appends ` key=value` for a duration in milliseconds with three decimals
    /// (`12.345`).
    pub fn kv_millis(mut self, key: &str, value: std::time::Duration) -> Line {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.key(key);
        self.plain(|buf| {
            push_decimal(buf, us / 1000);
            let frac = us % 1000;
            buf.push('.');
            for digit in [frac / 100, frac / 10 % 10, frac % 10] {
                buf.push(char::from(b'0' + digit as u8));
            }
        });
        self
    }

    /// Appends ` key=value` for a peer's address, as `SocketAddr` displays it (an
    /// IPv4 one digit by digit, in one buffer).
    pub fn kv_addr(self, key: &str, value: SocketAddr) -> Line {
        let SocketAddr::V4(a) = value else {
            return self.kv_dyn(key, &value);
        };
        // "255.255.255.255:65535": 21 bytes.
        let mut text = [0u8; 21];
        let mut n = put_ipv4(&mut text, *a.ip());
        text[n] = b':';
        n += 1;
        n += put_decimal(&mut text[n..], u64::from(a.port()));
        let mut line = self;
        line.key(key);
        line.plain(|buf| buf.push_str(std::str::from_utf8(&text[..n]).unwrap_or_default()));
        line
    }

    /// Writes ` key=` (or its JSON member name); where the value starts.
    fn key(&mut self, key: &str) -> usize {
        if self.json {
            self.buf.push(',');
            push_json_string(&mut self.buf, key);
            self.buf.push(':');
        } else {
            self.buf.push(' ');
            self.buf.push_str(key);
            self.buf.push('=');
        }
        self.buf.len()
    }

    /// Writes a value that never needs quoting or escaping (digits, dots, colons),
    /// as a JSON string in JSON lines.
    fn plain(&mut self, write: impl FnOnce(&mut String)) {
        if self.json {
            self.buf.push('"');
            write(&mut self.buf);
            self.buf.push('"');
        } else {
            write(&mut self.buf);
        }
    }

    /// Quotes (or escapes) the value written from `start` when it needs it.
    fn quote_from(&mut self, start: usize) {
        let v = &self.buf[start..];
        // Visible ASCII other than `"` and `=` (the usual case, checked byte by byte)
        // is written as it is; anything else is looked at char by char.
        let plain = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'=';
        if self.json
            || v.is_empty()
            || (!v.bytes().all(plain)
                && v.chars()
                    .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control()))
        {
            if v.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                let v = v.to_owned();
                self.buf.truncate(start);
                push_json_string(&mut self.buf, &v);
            } else {
                // Nothing to escape (the usual case): quote it in place, no copy.
                self.buf.insert(start, '"');
                self.buf.push('"');
            }
        }
    }

    /// Appends ` key=value` when `value` is `Some`.
    pub fn opt(self, key: &str, value: Option<impl fmt::Display>) -> Line {
        match value {
            Some(v) => self.kv(key, v),
            None => self,
        }
    }

    /// The line so far (for tests).
    pub fn as_str(&self) -> &str {
        &self.buf
    }

    /// Writes the line to stderr.
    pub fn emit(mut self) {
        if self.json {
            self.buf.push('}');
        }
        self.buf.push('\n');
        if BATCHES.load(Ordering::Acquire) == 0 {
            let _ = std::io::stderr().lock().write_all(self.buf.as_bytes());
            return;
        }
        let mut pending = pending();
        if OPEN.load(Ordering::Relaxed) <= 1 {
            // Behind any lines still waiting, so the order holds.
            if pending.is_empty() {
                let _ = std::io::stderr().lock().write_all(self.buf.as_bytes());
            } else {
                pending.extend_from_slice(self.buf.as_bytes());
                write_out(&mut pending);
            }
            return;
        }
        let first = pending.is_empty();
        pending.extend_from_slice(self.buf.as_bytes());
        if pending.len() >= FLUSH_AT {
            write_out(&mut pending);
        }
        drop(pending);
        if first {
            for flusher in flushers().drain(..) {
                flusher.wake();
            }
        }
    }
}

/// Lines waiting for the flusher while a [`Batch`] is on.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// Batches on (running servers); with none, each line is written at once.
static BATCHES: AtomicUsize = AtomicUsize::new(0);
/// The flushers waiting for a line (one per running server), woken by the line that
/// finds the buffer empty. A waker costs no allocation, unlike an event listener:
/// this runs twice per connection.
static FLUSHERS: Mutex<Vec<Waker>> = Mutex::new(Vec::new());
/// Connections open in this process's servers ([`Open`]).
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// A buffer this large is written at once, without waiting for the flusher.
const FLUSH_AT: usize = 64 * 1024;

fn pending() -> MutexGuard<'static, Vec<u8>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn flushers() -> MutexGuard<'static, Vec<Waker>> {
    FLUSHERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the buffer (under its lock, so lines keep their order) and empties it.
fn write_out(pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        let _ = std::io::stderr().lock().write_all(pending);
        pending.clear();
    }
}

/// Lines are batched while one of these lives (a running server holds one and runs a
/// flusher task: [`flush_wanted`], then [`flush`]). Woken by the turn's first line, the
/// flusher is queued behind the tasks already ready, so it runs after them.
/// Dropping the last one flushes.
pub struct Batch(());

impl Batch {
    pub fn begin() -> Batch {
        BATCHES.fetch_add(1, Ordering::AcqRel);
        Batch(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        BATCHES.fetch_sub(1, Ordering::AcqRel);
        flush();
    }
}

/// One open connection, for the batching: while at most one is open, its lines are
/// written at once (no other connection's lines would join them in a write).
pub struct Open(());

impl Open {
    pub fn new() -> Open {
        OPEN.fetch_add(1, Ordering::Relaxed);
        Open(())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves once a line waits in the buffer (at once if one already does).
pub fn flush_wanted() -> impl std::future::Future<Output = ()> {
    std::future::poll_fn(|cx| {
        if !pending().is_empty() {
            return Poll::Ready(());
        }
        {
            let mut flushers = flushers();
            if !flushers.iter().any(|w| w.will_wake(cx.waker())) {
                flushers.push(cx.waker().clone());
            }
        }
        // A line that came before the waker was in place did not wake it.
        if pending().is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
}

/// Writes the lines waiting, if any.
pub fn flush() {
    write_out(&mut pending());
}

/// Writes the lines waiting, for a panic hook: skipped if this thread panicked while
/// holding the buffer.
pub fn flush_for_panic() {
    if let Ok(mut pending) = PENDING.try_lock() {
        write_out(&mut pending);
    }
}

/// Appends `s` as a JSON string: `"` and `\\` escaped, control characters as
/// `\n`, `\r`, `\t` or `\u00XX`. Written by hand: the size-bound router build
/// needs no serializer for it.
fn push_json_string(buf: &mut String, s: &str) {
    buf.push('"');
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// Logs `event` at `level` with key-value pairs, building nothing when disabled.
#[macro_export]
#[doc(hidden)]
macro_rules! log_event {
    ($level:expr, $event:expr $(, $k:literal = $v:expr)* $(,)?) => {
        if $crate::internal::log_enabled($level) {
            $crate::internal::LogLine::new($level, $event)$(.kv($k, $v))*.emit();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_writers_write_what_display_writes() {
        use std::time::Duration;
        for json in [false, true] {
            let line = |f: &dyn Fn(Line) -> Line| f(Line::with_format(Level::Info, "e", json)).buf;
            for a in [
                "0.0.0.0:0",
                "127.0.0.1:80",
                "255.255.255.255:65535",
                "10.9.200.1:443",
                "192.168.1.10:5",
                "[::1]:8080",
                "[2001:db8::1%3]:1",
            ] {
                let a: SocketAddr = a.parse().unwrap();
                assert_eq!(line(&|l| l.kv_addr("peer", a)), line(&|l| l.kv("peer", a)));
            }
            for n in [0, 7, 10, 1006, 4401, u64::from(u32::MAX), u64::MAX] {
                assert_eq!(line(&|l| l.kv_u64("n", n)), line(&|l| l.kv("n", n)));
            }
            for us in [0, 1, 999, 1_000, 1_234_567, 60_000_001] {
                let d = Duration::from_micros(us);
                let want = line(&|l| l.kv("ms", format_args!("{}.{:03}", us / 1000, us % 1000)));
                assert_eq!(line(&|l| l.kv_millis("ms", d)), want);
            }
            for v in ["alice", "", "a b", "x=y", "say \"hi\"", "tab\there", "é"] {
                assert_eq!(line(&|l| l.kv_str("sub", v)), line(&|l| l.kv("sub", v)));
            }
        }
    }

    #[test]
    fn quotes_what_would_break_the_line() {
        let l = Line::new(Level::Info, "auth_fail")
            .kv("peer", "1.2.3.4:5")
            .kv("sub", "a b")
            .kv("x", "k=v")
            .kv("y", "say \"hi\"\n")
            .kv("z", "");
        assert_eq!(
            l.as_str(),
            r#"level=info event=auth_fail peer=1.2.3.4:5 sub="a b" x="k=v" y="say \"hi\"\n" z="""#
        );
    }

    #[test]
    fn json_has_the_same_fields() {
        let mut l = Line::with_format(Level::Info, "close", true)
            .kv("peer", "1.2.3.4:5")
            .kv("sub", "a \"b\"\n\u{1}")
            .kv("ms", 12);
        l.buf.push('}');
        assert_eq!(
            l.as_str(),
            r#"{"level":"info","event":"close","peer":"1.2.3.4:5","sub":"a \"b\"\n\u0001","ms":"12"}"#
        );
        let v: serde_json::Value = serde_json::from_str(l.as_str()).unwrap();
        assert_eq!(v["sub"], "a \"b\"\n\u{1}");
    }

    #[test]
    fn levels_order() {
        assert!(Level::Error < Level::Debug);
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warn));
        assert!("loud".parse::<Level>().is_err());
    }
}
