//! Deadlines: the instants the server's bounds end at, and the one way a future is
//! bounded by one (on the server's own timers: [`crate::timers`]).

use std::time::{Duration, Instant};

use smol::future::FutureExt as _;

/// `from + d`, saturating far in the future instead of overflowing (a huge
/// configured timeout must not panic).
pub(crate) fn instant_after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d)
        .or_else(|| from.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(from)
}

// Plain functions returning the race, not `async fn`s: no extra state machine around
// it at each of their uses (the router build is measured in bytes).

/// `f`, unless `deadline` passes first: `None` then.
pub(crate) fn until<T>(
    deadline: Instant,
    f: impl Future<Output = T>,
) -> impl Future<Output = Option<T>> {
    async { Some(f.await) }.or(async move {
        crate::timers::Sleep::at(deadline).await;
        None
    })
}

/// `f`, for at most `d`: `None` if it did not finish by then.
pub(crate) fn within<T>(
    d: Duration,
    f: impl Future<Output = T>,
) -> impl Future<Output = Option<T>> {
    async { Some(f.await) }.or(async move {
        crate::timers::Sleep::after(d).await;
        None
    })
}
