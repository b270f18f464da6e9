//! One `key=value` line per event on stderr (SPEC §7). Values holding a space, `"`,
//! `=` or a control character are written as JSON strings, so a line stays one line
//! and parses back unambiguously. Tokens and key bytes are never passed in here.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

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

/// A log line being built; written to stderr in one `write` by [`Line::emit`].
pub struct Line {
    buf: String,
}

impl Line {
    /// Starts a line `level=… event=…`. Check [`enabled`] first on hot paths.
    pub fn new(level: Level, event: &str) -> Line {
        let mut buf = String::with_capacity(128);
        buf.push_str("level=");
        buf.push_str(level.as_str());
        buf.push_str(" event=");
        buf.push_str(event);
        Line { buf }
    }

    /// Appends ` key=value`, quoting the value when needed.
    #[inline]
    pub fn kv(self, key: &str, value: impl fmt::Display) -> Line {
        self.kv_dyn(key, &value)
    }

    // One copy of the formatting and quoting for every value type.
    fn kv_dyn(mut self, key: &str, value: &dyn fmt::Display) -> Line {
        self.buf.push(' ');
        self.buf.push_str(key);
        self.buf.push('=');
        let start = self.buf.len();
        let _ = write!(self.buf, "{value}");
        let v = &self.buf[start..];
        if v.is_empty()
            || v.chars()
                .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control())
        {
            let quoted = serde_json::Value::String(v.to_owned()).to_string();
            self.buf.truncate(start);
            self.buf.push_str(&quoted);
        }
        self
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
        self.buf.push('\n');
        let _ = std::io::stderr().lock().write_all(self.buf.as_bytes());
    }
}

/// Logs `event` at `level` with key-value pairs, building nothing when disabled.
#[macro_export]
#[doc(hidden)]
macro_rules! log_event {
    ($level:expr, $event:expr $(, $k:literal = $v:expr)* $(,)?) => {
        if $crate::log::enabled($level) {
            $crate::log::Line::new($level, $event)$(.kv($k, $v))*.emit();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn levels_order() {
        assert!(Level::Error < Level::Debug);
        assert_eq!("WARN".parse::<Level>(), Ok(Level::Warn));
        assert!("loud".parse::<Level>().is_err());
    }
}
