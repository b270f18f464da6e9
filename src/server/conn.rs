//! What both listeners (the main one, `server`, and the operators', `admin`) do with a
//! connection: spawn and run its task, read its request head within a deadline, write
//! an answer, and log the access line; and the main listener's count of connections.
//! It knows neither listener: they import it, it imports the shared state.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::deadline::{until, within};
use crate::head::{self, HeadError, HeaderStorage, MAX_HEAD, Request};
use crate::log::Level;
use crate::session::BoxedConnection;
use crate::state::Shared;

/// Connections accepted beyond `--max-connections` still get their 503; past this
/// many more they are closed at once, so a flood cannot grow memory.
pub const OVERFLOW_SLACK: usize = 256;

/// A connection of the main listener, counted against `--max-connections`: frees its
/// place on drop (a panic included) and wakes a shutdown waiting for the last one.
pub(crate) struct ConnGuard(Arc<Shared>, crate::log::Open);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.metrics.connections_add(-1);
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

impl ConnGuard {
    /// Counts one more connection of the main listener (`--max-connections`) until
    /// the guard drops; with whether it is over the limit (answered 503). `None` past
    /// [`OVERFLOW_SLACK`] more: the connection is to be closed at once, uncounted.
    pub(crate) fn admit(shared: &Arc<Shared>) -> Option<(ConnGuard, bool)> {
        let n = shared.connections.fetch_add(1, Ordering::AcqRel) + 1;
        shared.metrics.connections_add(1);
        let guard = ConnGuard(shared.clone(), crate::log::Open::new());
        let max = shared.config.max_connections;
        if n > max.saturating_add(OVERFLOW_SLACK) {
            return None;
        }
        Some((guard, n > max))
    }
}

/// A session, once the handshake let one in.
pub(crate) type SessionRun = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What a spawned connection task runs: the handshake, then maybe a session.
pub(crate) type ConnectionTask =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<SessionRun>> + Send>>;

/// Spawns a connection of either listener: one task type for all (its code is in the
/// binary once). A panic ends this connection only, logged with its peer.
pub(crate) fn spawn_connection(
    ex: &Spawner,
    task: ConnectionTask,
    guard: Option<ConnGuard>,
    peer: SocketAddr,
) {
    // Always there: the accept loops run as tasks of this executor.
    if let Some(ex) = ex.upgrade() {
        ex.spawn(run_connection(task, guard, peer)).detach();
    }
}

/// The executor that connection tasks are spawned on, as the accept loops hold it.
/// They run as tasks of that executor, not as the future its thread runs it until: a
/// spawn from that future, found the executor asleep, woke the thread in the middle
/// of its poll, which then made one more turn of the event loop, without waiting (5
/// system calls an accept: docs/decisions.md#accept-loops-as-tasks). Weak, because a
/// task that held its own executor would keep it (and the listener) alive for ever
/// once dropped.
pub(crate) type Spawner = std::sync::Weak<smol::Executor<'static>>;

/// Runs a connection task and its session to their end, holding `guard` until then;
/// a panic ends this connection only, logged with its peer.
pub(crate) async fn run_connection(
    task: ConnectionTask,
    guard: Option<ConnGuard>,
    peer: SocketAddr,
) {
    let _guard = guard;
    let run = match AssertUnwindSafe(task).catch_unwind().await {
        Ok(Some(run)) => AssertUnwindSafe(run).catch_unwind().await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if run.is_err() {
        crate::log_event!(Level::Error, "panic", "peer" = peer);
    }
}

/// Reads a request head within the deadline and parses it, once. `Ok(Some((req,
/// rest)))`: the request, and the bytes read after its head. `Ok(None)`: the client
/// left or stalled, or the server is shutting down.
pub(crate) async fn read_head<'b>(
    stream: &mut BoxedConnection,
    buf: &'b mut Vec<u8>,
    storage: &'b mut HeaderStorage<'b>,
    deadline: Instant,
    shared: &Shared,
) -> Result<Option<(Request<'b>, &'b [u8])>, HeadError> {
    let mut chunk = [0u8; 2048];
    loop {
        let read = until(deadline, stream.read(&mut chunk));
        // Shutdown drops connections that have not sent their request yet.
        let n = match shared.shutdown.unless_begun(read).await.flatten() {
            Some(Ok(0)) | Some(Err(_)) | None => return Ok(None),
            Some(Ok(n)) => n,
        };
        let scan_from = buf.len().saturating_sub(3);
        let room = (MAX_HEAD + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        if head::has_end(buf, scan_from) {
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
    let bytes: &'b [u8] = buf;
    // Never `Ok(None)` once the end is seen (`head::has_end`).
    match head::parse(bytes, storage)? {
        Some((req, n)) => Ok(Some((req, &bytes[n..]))),
        None => Err(HeadError::Malformed),
    }
}

/// Writes and flushes `bytes`; `false` when the client is gone.
pub(crate) async fn write_all(stream: &mut BoxedConnection, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok()
}

/// Longest time an HTTP answer (a static file included) may take to write: a client
/// that stops reading cannot hold its connection.
pub const RESPONSE_DEADLINE: Duration = Duration::from_secs(30);

/// Writes an HTTP answer within [`RESPONSE_DEADLINE`], then closes the connection
/// gently.
pub(crate) async fn respond(stream: &mut BoxedConnection, bytes: &[u8]) {
    if within(RESPONSE_DEADLINE, write_all(stream, bytes)).await == Some(true) {
        // Let the client read the answer before the FIN: half-close, then drain briefly.
        let _ = stream.close().await;
        let mut sink = [0u8; 512];
        let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
        within(Duration::from_secs(1), drained).await;
    }
}

/// The status of one of our answers (every one starts `HTTP/1.1 NNN `).
pub(crate) fn status_of(answer: &[u8]) -> u16 {
    answer
        .get(9..12)
        .unwrap_or_default()
        .iter()
        .fold(0, |n, d| n * 10 + u16::from(d.wrapping_sub(b'0')))
}

/// The access line of a plain HTTP request, at debug (`docs/operations.md#logs`). The path
/// is logged without its query: a token could be in it.
pub(crate) fn log_http(peer: SocketAddr, req: &head::Request<'_>, status: u16) {
    crate::log_event!(
        Level::Debug,
        "http",
        "peer" = peer,
        "method" = req.method,
        "path" = req.path(),
        "status" = status
    );
}
