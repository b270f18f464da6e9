//! What every connection of one server shares: the configuration, the gate, the
//! metrics, the registry of live sessions, the WebSocket limits and the shutdown
//! signal, and what acts on several of them at once (revoking). The server builds
//! it; the endpoints, sessions, operators' listener and cluster read it. It knows
//! nothing of them in turn: the handler that runs sessions is the server's, not part
//! of this state.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use event_listener::{Event, EventListener};
use smol::future::FutureExt as _;

use crate::auth::{Gate, Identity, Method, Rejection};
use crate::config::Config;
use crate::log::Level;
use crate::metrics::{Metrics, TicketEvent};
use crate::registry::Registry;
use crate::revocation::{Full as RevocationsFull, Revocation};
use crate::time::unix_now;

/// State shared by every connection task.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) gate: Gate,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: Shutdown,
    pub(crate) registry: Registry,
    /// Open connections of the main listener (`--max-connections`).
    pub(crate) connections: AtomicUsize,
    /// Notified when the last connection closes (shutdown waits for it).
    pub(crate) idle: Event,
    pub(crate) ws_config: WebSocketConfig,
    /// The state shared with other nodes, with `--redis`.
    #[cfg(feature = "redis")]
    pub(crate) cluster: Option<crate::cluster::Cluster>,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.has_begun()
    }

    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        self.ws_config
    }

    /// With `--redis`, whether Redis is connected and the revocations loaded (tickets
    /// can be redeemed); always `true` on a single node.
    pub(crate) fn redis_up(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(c) = &self.cluster {
            return c.is_up();
        }
        true
    }

    /// With `--redis`, whether the revocations were loaded at least once (a node that
    /// never saw them lets no one in); always `true` on a single node.
    pub(crate) fn redis_ready(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(c) = &self.cluster {
            return c.is_ready();
        }
        true
    }

    /// [`ServerHandle::revoke`](crate::ServerHandle::revoke): stores `entry` on this
    /// node and closes the live sessions it matches; how many.
    pub(crate) fn revoke(&self, entry: &Revocation) -> Result<usize, RevocationsFull> {
        let now = unix_now();
        self.gate.revoke(entry, now)?;
        let closed = self.registry.revoke(entry, now);
        self.revoked(entry, closed);
        Ok(closed)
    }

    /// Counts and logs a revocation made here that closed `closed` sessions.
    fn revoked(&self, entry: &Revocation, closed: usize) {
        self.metrics.revocation(entry.kind());
        crate::log_event!(
            Level::Info,
            "revoke",
            "kind" = entry.kind(),
            "closed" = closed,
        );
    }

    /// [`ServerHandle::revoke_everywhere`](crate::ServerHandle::revoke_everywhere):
    /// with `--redis`, stored and published first, and nothing stored anywhere while
    /// that cannot be done; else as [`Shared::revoke`]. With Redis too it counts the
    /// sessions this node closed because of it, whichever of the request and the
    /// node's own subscription got there first.
    pub(crate) async fn revoke_everywhere(&self, entry: &Revocation) -> Result<usize, RevokeError> {
        #[cfg(feature = "redis")]
        if let Some(cluster) = &self.cluster {
            let now = unix_now();
            let forget_at = {
                let mut list = self.gate.revocations();
                if !list.has_room(entry, now) {
                    return Err(RevokeError::Full);
                }
                now.saturating_add(list.ttl())
            };
            let pending = cluster.begin_revoke(entry, now);
            cluster
                .revoke(entry, now, forget_at)
                .await
                .map_err(|_| RevokeError::Unavailable)?;
            self.gate
                .apply_revocation(entry, now, forget_at, now)
                .map_err(|_| RevokeError::Full)?;
            let here = self.registry.revoke(entry, now);
            let closed = here + pending.finish();
            self.revoked(entry, closed);
            return Ok(closed);
        }
        self.revoke(entry).map_err(|_| RevokeError::Full)
    }

    /// Counts and logs an authenticated client.
    pub(crate) fn auth_ok(&self, peer: SocketAddr, identity: &Identity, accepted: Instant) {
        let took = accepted.elapsed();
        self.metrics.handshake(identity.method, took);
        if identity.via_ticket {
            self.metrics.ticket(TicketEvent::Used);
        }
        // Written value by value, without `core::fmt`: one of the two lines of every
        // connection (`docs/performance.md`).
        if crate::log::enabled(Level::Info) {
            crate::log::Line::new(Level::Info, "auth_ok")
                .kv_addr("peer", peer)
                .kv_str("method", identity.method.as_str())
                .kv_str("sub", &identity.sub)
                .kv_str("ticket", if identity.via_ticket { "true" } else { "false" })
                .kv_millis("ms", took)
                .emit();
        }
    }

    /// Counts and logs a refusal: `reason=` is the metric label
    /// (`docs/operations.md#metrics`), `detail=` the precise cause, then the status or
    /// close code that was sent. A ticket refused for the server's own limits (Redis out
    /// of reach, the ticket cache full) is no authentication failure: like the other
    /// 503s (`--max-connections`, `POST /ticket` in an outage) it is an `event=refuse
    /// reason=redis_unavailable|ticket_cache_full` line, counted nowhere.
    pub(crate) fn auth_fail(
        &self,
        peer: SocketAddr,
        method: Option<Method>,
        r: Rejection,
        answer: Answer,
    ) {
        let limit = r.is_server_limit();
        if !limit {
            self.metrics.failure(r);
        }
        if crate::log::enabled(Level::Info) {
            let event = if limit { "refuse" } else { "auth_fail" };
            let line = crate::log::Line::new(Level::Info, event)
                .kv("peer", peer)
                .opt("method", method)
                .kv("reason", r.metric_reason());
            let line = if limit {
                line
            } else {
                line.kv("detail", r.log_reason())
            };
            match answer {
                Answer::Http => line.kv("status", r.status()),
                Answer::Close => line.kv("close", r.close().0),
                Answer::CloseWith(code) => line.kv("close", code),
            }
            .emit();
        }
    }
}

/// Why [`ServerHandle::revoke_everywhere`](crate::ServerHandle::revoke_everywhere) stored
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeError {
    /// The revocation list is full.
    Full,
    /// The shared state (Redis) cannot be reached.
    Unavailable,
}

impl fmt::Display for RevokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RevokeError::Full => "revocation list full",
            RevokeError::Unavailable => "redis unavailable",
        })
    }
}

impl std::error::Error for RevokeError {}

/// How a refusal reached the client, for the log line.
#[derive(Clone, Copy)]
pub(crate) enum Answer {
    /// An HTTP status before any upgrade.
    Http,
    /// A close frame after the upgrade.
    Close,
    /// A close frame with another code than the refusal's own: a first frame too big
    /// for `--max-message` (1009) or broken (1002, 1007).
    CloseWith(u16),
}

/// The server's stop signal: a flag for whoever looks, and an event for whoever
/// waits. Once begun it stays begun.
#[derive(Default)]
pub(crate) struct Shutdown {
    begun: AtomicBool,
    event: Event,
}

impl Shutdown {
    /// Begins the shutdown and wakes every waiter. Idempotent.
    pub(crate) fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    pub(crate) fn has_begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }

    /// Resolves once the shutdown has begun (at once if it already has). Each call
    /// listens afresh, so it can be awaited again after it fired.
    pub(crate) async fn begun(&self) {
        // The flag is read after listening: a `begin` between the two is not missed.
        let listener: EventListener = self.event.listen();
        if self.has_begun() {
            return;
        }
        listener.await;
    }

    /// `f`, unless the shutdown begins first (or has begun): `None` then.
    pub(crate) fn unless_begun<T>(
        &self,
        f: impl Future<Output = T>,
    ) -> impl Future<Output = Option<T>> {
        async {
            if self.has_begun() {
                return None;
            }
            Some(f.await)
        }
        .or(async {
            self.begun().await;
            None
        })
    }
}
