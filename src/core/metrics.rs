//! Counters for `GET /metrics` (Prometheus text format). Atomics only: no lock on
//! any connection path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::auth::{FAILURE_REASONS, Method, Rejection};

/// Histogram bucket upper bounds in microseconds: 50 µs … 1 s.
pub const BUCKETS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// The `result` labels of `wsgate_refreshes_total`, in [`RefreshResult`] order.
const REFRESH_RESULTS: [&str; 5] = ["ok", "invalid", "expired", "revoked", "forbidden"];

/// How an in-band refresh ended, for `wsgate_refreshes_total{result}` and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshResult {
    /// Accepted: the session now ends at the new `exp` + leeway.
    Ok = 0,
    /// Not a valid token, or a ticket.
    Invalid = 1,
    /// Expired.
    Expired = 2,
    /// Revoked.
    Revoked = 3,
    /// Another `sub` than the session's.
    Forbidden = 4,
}

impl RefreshResult {
    /// The result of a refused refresh.
    pub fn of(r: Rejection) -> RefreshResult {
        match r {
            Rejection::Expired => RefreshResult::Expired,
            Rejection::Revoked => RefreshResult::Revoked,
            Rejection::WrongSub => RefreshResult::Forbidden,
            _ => RefreshResult::Invalid,
        }
    }

    /// The label.
    pub fn as_str(self) -> &'static str {
        REFRESH_RESULTS[self as usize]
    }
}

/// Microseconds written as decimal seconds (`0.00005`, `1`, `2.5`) with integer
/// arithmetic: no float formatting code in the binary.
pub struct Seconds(pub u64);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Ticket events counted by `wsgate_tickets_total{event}`.
#[derive(Clone, Copy, Debug)]
pub enum TicketEvent {
    /// Minted by `POST /ticket`.
    Issued = 0,
    /// Opened a session.
    Used = 1,
    /// Presented a second time.
    Replayed = 2,
}

/// All of wsgate's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    connections: AtomicI64,
    sessions: AtomicI64,
    handshakes: [AtomicU64; 5],
    failures: [AtomicU64; FAILURE_REASONS.len()],
    tickets: [AtomicU64; 3],
    refreshes: [AtomicU64; 5],
    revocations: [AtomicU64; 2],
    buckets: [AtomicU64; BUCKETS_US.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    /// `wsgate_redis_up`: 0 or 1 once `--redis` is configured, absent before.
    #[cfg(feature = "redis")]
    redis_up: std::sync::OnceLock<std::sync::atomic::AtomicBool>,
}

impl Metrics {
    /// Sets the `wsgate_redis_up` gauge (shown from the first call on).
    #[cfg(feature = "redis")]
    pub(crate) fn set_redis_up(&self, up: bool) {
        self.redis_up
            .get_or_init(Default::default)
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds `d` (±1) to the open TCP connections gauge.
    pub(crate) fn connections_add(&self, d: i64) {
        self.connections.fetch_add(d, Relaxed);
    }

    /// Adds `d` (±1) to the authenticated sessions gauge.
    pub(crate) fn sessions_add(&self, d: i64) {
        self.sessions.fetch_add(d, Relaxed);
    }

    /// Open TCP connections now.
    pub fn connections(&self) -> i64 {
        self.connections.load(Relaxed)
    }

    /// Authenticated sessions now.
    pub fn sessions(&self) -> i64 {
        self.sessions.load(Relaxed)
    }

    /// Counts a successful authentication and its latency.
    pub(crate) fn handshake(&self, method: Method, took: Duration) {
        self.handshakes[method as usize].fetch_add(1, Relaxed);
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(i) = BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    /// Counts a refusal.
    pub(crate) fn failure(&self, r: Rejection) {
        if let Some(reason) = r.failure_reason() {
            self.failures[reason as usize].fetch_add(1, Relaxed);
        }
        if r == Rejection::TicketReused {
            self.ticket(TicketEvent::Replayed);
        }
    }

    /// Counts an in-band refresh.
    pub(crate) fn refresh(&self, r: RefreshResult) {
        self.refreshes[r as usize].fetch_add(1, Relaxed);
    }

    /// Counts a revocation (`kind`: `jti` or `sub`).
    pub(crate) fn revocation(&self, kind: &str) {
        self.revocations[usize::from(kind == "sub")].fetch_add(1, Relaxed);
    }

    /// Counts a ticket event.
    pub(crate) fn ticket(&self, e: TicketEvent) {
        self.tickets[e as usize].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let _ = writeln!(
            s,
            "# HELP wsgate_connections_active Open TCP connections, sessions waiting for their first message included."
        );
        let _ = writeln!(
            s,
            "# TYPE wsgate_connections_active gauge\nwsgate_connections_active {}",
            self.connections()
        );
        let _ = writeln!(
            s,
            "# HELP wsgate_sessions_active Authenticated WebSocket sessions."
        );
        let _ = writeln!(
            s,
            "# TYPE wsgate_sessions_active gauge\nwsgate_sessions_active {}",
            self.sessions()
        );
        let _ = writeln!(
            s,
            "# HELP wsgate_handshakes_total Successful authentications by method."
        );
        let _ = writeln!(s, "# TYPE wsgate_handshakes_total counter");
        for m in Method::ALL {
            let _ = writeln!(
                s,
                "wsgate_handshakes_total{{method=\"{m}\"}} {}",
                self.handshakes[m as usize].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP wsgate_auth_failures_total Refused authentications by reason."
        );
        let _ = writeln!(s, "# TYPE wsgate_auth_failures_total counter");
        for (i, r) in FAILURE_REASONS.iter().enumerate() {
            let _ = writeln!(
                s,
                "wsgate_auth_failures_total{{reason=\"{r}\"}} {}",
                self.failures[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP wsgate_tickets_total Single-use tickets by event."
        );
        let _ = writeln!(s, "# TYPE wsgate_tickets_total counter");
        for (i, e) in ["issued", "used", "replayed"].iter().enumerate() {
            let _ = writeln!(
                s,
                "wsgate_tickets_total{{event=\"{e}\"}} {}",
                self.tickets[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP wsgate_refreshes_total In-band token refreshes by result."
        );
        let _ = writeln!(s, "# TYPE wsgate_refreshes_total counter");
        for (i, r) in REFRESH_RESULTS.iter().enumerate() {
            let _ = writeln!(
                s,
                "wsgate_refreshes_total{{result=\"{r}\"}} {}",
                self.refreshes[i].load(Relaxed)
            );
        }
        #[cfg(feature = "redis")]
        if let Some(up) = self.redis_up.get() {
            let _ = writeln!(
                s,
                "# HELP wsgate_redis_up Whether the shared state (Redis) is connected and loaded.\n\
                 # TYPE wsgate_redis_up gauge\nwsgate_redis_up {}",
                u8::from(up.load(std::sync::atomic::Ordering::Relaxed))
            );
        }
        let _ = writeln!(s, "# HELP wsgate_revocations_total Revocations by kind.");
        let _ = writeln!(s, "# TYPE wsgate_revocations_total counter");
        for (i, k) in ["jti", "sub"].iter().enumerate() {
            let _ = writeln!(
                s,
                "wsgate_revocations_total{{kind=\"{k}\"}} {}",
                self.revocations[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP wsgate_handshake_duration_seconds From accept to authenticated session."
        );
        let _ = writeln!(s, "# TYPE wsgate_handshake_duration_seconds histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                s,
                "wsgate_handshake_duration_seconds_bucket{{le=\"{}\"}} {cum}",
                Seconds(*b)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(
            s,
            "wsgate_handshake_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            s,
            "wsgate_handshake_duration_seconds_sum {}",
            Seconds(self.latency_sum_us.load(Relaxed))
        );
        let _ = writeln!(s, "wsgate_handshake_duration_seconds_count {count}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_without_floats() {
        let s = |us| Seconds(us).to_string();
        assert_eq!(
            (s(50), s(100), s(2_500), s(1_000_000), s(2_500_000), s(0)),
            (
                "0.00005".into(),
                "0.0001".into(),
                "0.0025".into(),
                "1".into(),
                "2.5".into(),
                "0".into()
            )
        );
    }

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.handshake(Method::Cookie, Duration::from_micros(70));
        m.handshake(Method::Cookie, Duration::from_secs(5));
        m.failure(Rejection::TicketReused);
        let r = m.render();
        assert!(r.contains("wsgate_handshakes_total{method=\"cookie\"} 2\n"));
        assert!(r.contains("wsgate_auth_failures_total{reason=\"ticket_reused\"} 1\n"));
        assert!(r.contains("wsgate_tickets_total{event=\"replayed\"} 1\n"));
        assert!(r.contains("wsgate_handshake_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(r.contains("wsgate_handshake_duration_seconds_bucket{le=\"1\"} 1\n"));
        assert!(r.contains("wsgate_handshake_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
    }
    #[test]
    fn each_refusal_counts_under_the_label_it_logs() {
        use crate::token::TokenError;
        let counted = [
            Rejection::MissingToken,
            Rejection::QueryDisabled,
            Rejection::BadToken(TokenError::TooLong),
            Rejection::Expired,
            Rejection::TicketReused,
            Rejection::TicketWrongIp,
            Rejection::OriginNotAllowed,
            Rejection::Timeout,
            Rejection::Revoked,
        ];
        for r in counted {
            let m = Metrics::default();
            m.failure(r);
            let line = format!(
                "wsgate_auth_failures_total{{reason=\"{}\"}} 1\n",
                r.metric_reason()
            );
            assert!(m.render().contains(&line), "{r:?}");
        }
        // Not counted: the server's own limit, Redis out of reach, and a refresh for
        // another `sub` (`wsgate_refreshes_total`).
        for r in [Rejection::Busy, Rejection::Unavailable, Rejection::WrongSub] {
            let m = Metrics::default();
            m.failure(r);
            let render = m.render();
            let mut failures = render
                .lines()
                .filter(|l| l.starts_with("wsgate_auth_failures_total{"));
            assert!(failures.all(|l| l.ends_with(" 0")), "{r:?}");
        }
        assert_eq!(Rejection::WrongSub.metric_reason(), "forbidden_sub");
        assert_eq!(Rejection::Unavailable.metric_reason(), "redis_unavailable");
        assert_eq!(Rejection::Busy.metric_reason(), "ticket_cache_full");
        assert!(Rejection::Busy.is_server_limit() && Rejection::Unavailable.is_server_limit());
    }
}
