//! Deadlines: the instants the server's bounds end at, and the one way a future is
//! bounded by one.

use std::time::{Duration, Instant};

/// `from + d`, saturating far in the future instead of overflowing (a huge
/// configured timeout must not panic).
pub(crate) fn instant_after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(from)
}
