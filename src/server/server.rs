//! The smol server: accept loop, connection limits, head deadline, the refusals in order
//! (`docs/protocol.md#order-of-checks`), endpoints, the upgrade, first-message
//! authentication, and graceful shutdown. The decisions themselves are made by
//! [`crate::auth::Gate`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use event_listener::Event;
use smol::stream::StreamExt as _;

use crate::auth::{Decision, Gate, GateConfig, Identity, MAX_FIRST_MESSAGE, Method, Rejection};
use crate::config::{Config, ConfigError};
use crate::conn::{
    ConnGuard, ConnectionTask, SessionRun, Spawner, log_http, read_head, respond, run_connection,
    spawn_connection, status_of, write_all,
};
use crate::deadline::{instant_after, until};
use crate::endpoints;
use crate::head::{self, HeadError, UpgradeError};
use crate::listener::Listener;
use crate::log::Level;
use crate::metrics::Metrics;
use crate::registry::{Registry, SessionInfo};
use crate::revocation::{Full as RevocationsFull, Revocation};
use crate::session::{
    BoxedConnection, Handler, Session, WsStream, close_and_drain, close_unreadable, drain,
    peer_fault, within_close_wait,
};
use crate::state::{Answer, RevokeError, Shared, Shutdown};
use crate::time::unix_now;
use crate::token::TokenError;
use crate::token::{ClaimRules, Verifier};

/// Initial read buffer of a session; grows for a large message, as tungstenite does.
pub const READ_BUFFER: usize = 1024;

/// Why the server could not start or stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    Config(ConfigError),
    /// Binding the listen address failed.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Binding the operators' listener failed.
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AdminBind { addr, source } => {
                write!(f, "admin_listen {addr}: cannot bind: {source}")
            }
            Error::Config(e) => e.fmt(f),
            Error::Bind { addr, source } => write!(f, "listen {addr}: cannot bind: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

/// Reaches a running [`Server`] from outside: stops it, revokes tokens and closes
/// the sessions they opened, lists the live sessions, replaces the keys, serves a
/// connection accepted elsewhere.
#[derive(Clone)]
pub struct ServerHandle(pub(crate) Arc<Shared>);

/// The name [`ServerHandle`] had when it could only stop the server.
pub type ShutdownHandle = ServerHandle;

impl ServerHandle {
    /// Begins the shutdown: the listener closes at once, every session gets 1001
    /// `going away`, and `run` returns when they are closed or after the grace
    /// period. Idempotent.
    pub fn shutdown(&self) {
        self.0.shutdown.begin();
        self.0.registry.wake_all();
    }

    /// Revokes tokens from now on (`docs/operations.md#revocation`) and closes the
    /// live sessions on this server that the entry matches with 4401 `token
    /// revoked`. Returns how many it closed; `Err` when the list is full (nothing
    /// stored, nothing closed).
    pub fn revoke(&self, entry: &Revocation) -> Result<usize, RevocationsFull> {
        self.0.revoke(entry)
    }

    /// Revokes as [`ServerHandle::revoke`] does, on every node when the server shares
    /// its state (`--redis`): the entry is stored and published first, and while that
    /// cannot be done nothing is stored anywhere (`Unavailable`). Returns how many
    /// sessions it closed on this node.
    pub async fn revoke_everywhere(&self, entry: &Revocation) -> Result<usize, RevokeError> {
        self.0.revoke_everywhere(entry).await
    }

    /// The live authenticated sessions on this server (of `sub` only, when given).
    pub fn sessions(&self, sub: Option<&str>) -> Vec<SessionInfo> {
        self.0.registry.list(sub)
    }

    /// Replaces the verification keys at once (a reload): new handshakes use them;
    /// live sessions keep running. Nothing changes on error.
    pub fn set_keys(&self, keys: Vec<crate::token::Key>) -> Result<(), crate::token::KeyError> {
        self.0.gate.set_keys(keys)
    }

    /// Serves one connection accepted elsewhere as the listener serves its own: for
    /// a transport of your own (a Unix socket, a TLS stream you terminated) or an
    /// in-process test's pipe. The same path from the request head on: the head
    /// deadline, the refusals, the `101`, authentication, then `handler`'s session
    /// (the handle does not hold the server's handler: pass it, or another). It
    /// counts against `max_connections` (503 over it), ends at shutdown like any
    /// connection (which `Server::run` waits for), and a panic in it ends this
    /// connection only. The future ends with the connection; it needs no
    /// `Server::run`. `peer` is the client's address as the gate and the logs see it.
    pub fn serve_connection<S: crate::session::Connection>(
        &self,
        handler: &Handler,
        stream: S,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Boxed at once: what follows is compiled once, whatever the transport.
        self.serve_boxed(handler, Box::new(stream), peer)
    }

    fn serve_boxed(
        &self,
        handler: &Handler,
        stream: BoxedConnection,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let admitted = ConnGuard::admit(&self.0);
        let (shared, handler) = (self.0.clone(), handler.clone());
        async move {
            let Some((guard, over_limit)) = admitted else {
                return;
            };
            let accepted = Instant::now();
            let task = connection(shared, handler, stream, peer, over_limit, accepted);
            run_connection(Box::pin(task), Some(guard), peer).await;
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerHandle")
    }
}

/// A bound wsgate server.
pub struct Server {
    listener: Listener,
    /// The operators' listener, when configured.
    admin: Option<Listener>,
    shared: Arc<Shared>,
    /// What runs for each session.
    handler: Handler,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

impl Server {
    /// Checks `config` ([`Config::validate`]), binds `config.listen` and prepares to
    /// serve `handler` for each session.
    pub async fn bind(mut config: Config, handler: Handler) -> Result<Server, Error> {
        config.validate()?;
        crate::timers::start().map_err(|e| ConfigError::new("timers' thread", e))?;
        let rules = ClaimRules {
            leeway: config.leeway.min(i64::MAX as u64) as i64,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
        };
        let mut gate = Gate::new(GateConfig {
            methods: config.methods,
            cookie_name: config.cookie_name.clone(),
            allowed_origins: config.allowed_origins.clone(),
            verifier: Verifier::new(std::mem::take(&mut config.keys), rules),
            ticket_ttl: config.ticket_ttl.min(i64::MAX as u64) as i64,
            ticket_capacity: config.ticket_capacity,
            tls: config.is_tls(),
        })
        .map_err(|e| ConfigError::new("keys", format_args!("no ticket key: {e}")))?;
        gate.set_revocation_limits(config.revoke_ttl, config.revoke_capacity);
        #[cfg(feature = "redis")]
        let cluster = config.redis.clone().map(|url| {
            gate.set_shared_tickets(true);
            crate::cluster::Cluster::new(url, config.redis_prefix.clone())
        });
        let listener = Listener::bind(config.listen).map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let admin = match config.admin_listen {
            Some(addr) => {
                Some(Listener::bind(addr).map_err(|source| Error::AdminBind { addr, source })?)
            }
            None => None,
        };
        let max = config.max_message.max(1);
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(max.saturating_mul(2).max(64 * 1024))
            .max_message_size(Some(max))
            // Control frames (up to 125 bytes) must pass whatever --max-message is.
            .max_frame_size(Some(max.max(125)));
        let shared = Arc::new(Shared {
            config,
            gate,
            metrics: Metrics::default(),
            shutdown: Shutdown::default(),
            registry: Registry::default(),
            connections: AtomicUsize::new(0),
            idle: Event::new(),
            ws_config,
            #[cfg(feature = "redis")]
            cluster,
        });
        Ok(Server {
            listener,
            admin,
            shared,
            handler,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The operators' listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle to the running server (stop, revoke, list sessions, reload keys).
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared.clone())
    }

    /// A handle that stops the server (the same as [`Server::handle`]).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Serves until shut down: one executor (no thread per connection), run by the
    /// calling thread and `config.threads - 1` more, which share the listener and
    /// all state. Returns once every connection closed or the grace period passed,
    /// and those threads ended.
    pub async fn run(self) -> io::Result<()> {
        self.serve_with(None).await
    }

    /// [`run`](Self::run), with `task` run beside the server as a task of the calling
    /// thread's executor, and dropped with it when the server returns. For work that
    /// waits for events of its own, such as `wsgate serve`'s signal watch: a future
    /// raced with [`run`](Self::run) instead is polled at every wake of the thread,
    /// for every connection's events.
    ///
    /// ```no_run
    /// # async fn f(server: wsgate::Server) -> std::io::Result<()> {
    /// let handle = server.handle();
    /// server
    ///     .run_beside(async move {
    ///         // … until some event of the application's own:
    ///         handle.shutdown();
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn run_beside(
        self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        self.serve_with(Some(Box::pin(task))).await
    }

    async fn serve_with(self, beside: Option<Until<'static>>) -> io::Result<()> {
        let Server {
            listener,
            admin,
            shared,
            handler,
        } = self;
        // Declared before the executor, dropped after it: the lines its tasks write as
        // they are dropped are flushed too.
        let _batch = crate::log::Batch::begin();
        let ex = Arc::new(smol::Executor::new());
        // The lines of one turn in one write: woken by the turn's first line, the
        // flusher is queued behind the tasks already ready, which run (and log) first.
        // One for all threads: one per executor measured no faster.
        let flusher: Until<'static> = Box::pin(async {
            loop {
                crate::log::flush_wanted().await;
                crate::log::flush();
            }
        });
        spawn_detached(&ex, flusher);
        let threads = match shared.config.threads {
            // The cores this process may run on (its affinity mask).
            0 => rustix::thread::sched_getaffinity(None).map_or(1, |s| s.count().max(1) as usize),
            n => n,
        };
        let listener = Arc::new(listener);
        let _workers = Workers::start(threads - 1, &listener, &shared, &handler)?;
        if let Some(admin) = &admin {
            let addr = admin.local_addr()?;
            crate::log_event!(Level::Info, "admin_listen", "addr" = addr);
        }
        let addr = listener.local_addr()?;
        #[cfg(feature = "redis")]
        if shared.cluster.is_some() {
            shared.metrics.set_redis_up(false);
            let shared = shared.clone();
            ex.spawn(async move {
                if let Some(cluster) = &shared.cluster {
                    cluster.supervise(&shared).await;
                }
            })
            .detach();
        }
        crate::log_event!(Level::Info, "listen", "addr" = addr);
        // The accept loops run as a task of the executor (see `Spawner`), detached:
        // dropping this future drops the executor, and the task with it. They end,
        // and close their listeners, when shutdown begins.
        let accepting = accepting(
            listener,
            admin,
            shared.clone(),
            handler,
            Arc::downgrade(&ex),
        );
        spawn_detached(&ex, accepting);
        if let Some(task) = beside {
            spawn_detached(&ex, task);
        }
        let drain: Until<'_> = Box::pin(async {
            shared.shutdown.begun().await;
            crate::log_event!(
                Level::Info,
                "shutdown",
                "connections" = shared.connections.load(Ordering::Acquire)
            );
            let grace = instant_after(Instant::now(), shared.config.shutdown_grace);
            while shared.connections.load(Ordering::Acquire) > 0 {
                let idle = shared.idle.listen();
                if shared.connections.load(Ordering::Acquire) == 0 {
                    break;
                }
                if until(grace, idle).await.is_none() {
                    break;
                }
            }
        });
        ex.run(drain).await;
        Ok(())
    }
}

/// The accept loops of a thread, as a task of its executor `ex`: every thread of the
/// server runs one, on its own executor (docs/decisions.md#threads), and the first
/// thread also the operators' listener's. They end when shutdown begins, and drop
/// their listeners. One function for all threads, so that its code is in the binary
/// once.
fn accepting(
    listener: Arc<Listener>,
    admin: Option<Listener>,
    shared: Arc<Shared>,
    handler: Handler,
    ex: Spawner,
) -> Until<'static> {
    Box::pin(async move {
        let admin_loop = async {
            if let Some(admin) = admin {
                crate::admin::accept_loop(admin, shared.clone(), &ex).await;
            }
        };
        smol::future::zip(accept_loop(&listener, &shared, &handler, &ex), admin_loop).await;
    })
}

/// Accepts connections until shutdown begins, each one run on `ex`.
async fn accept_loop(listener: &Listener, shared: &Arc<Shared>, handler: &Handler, ex: &Spawner) {
    while let Some((stream, peer)) = listener.next(&shared.shutdown, false).await {
        let Some((guard, over_limit)) = ConnGuard::admit(shared) else {
            continue;
        };
        // Boxed before the spawn: the task's own allocation then holds two
        // pointers, and the connection future is freed before the session
        // runs (only the handler's boxed future stays for the session).
        let accepted = Instant::now();
        #[cfg(feature = "load-balancer")]
        let task: ConnectionTask = if shared.config.proxy_protocol {
            Box::pin(proxied_connection(
                shared.clone(),
                handler.clone(),
                stream,
                peer,
                over_limit,
                accepted,
            ))
        } else {
            dispatch(shared, handler, stream, peer, over_limit, accepted)
        };
        #[cfg(not(feature = "load-balancer"))]
        let task = dispatch(shared, handler, stream, peer, over_limit, accepted);
        spawn_connection(ex, task, Some(guard), peer);
    }
}

/// The task of an accepted TCP connection: TLS first on a TLS listener, then the
/// request head.
fn dispatch(
    shared: &Arc<Shared>,
    handler: &Handler,
    stream: crate::tcp::Tcp,
    peer: SocketAddr,
    over_limit: bool,
    accepted: Instant,
) -> ConnectionTask {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.config.tls {
        return Box::pin(tls_connection(
            shared.clone(),
            handler.clone(),
            tls.acceptor(),
            stream,
            peer,
            over_limit,
            accepted,
        ));
    }
    Box::pin(connection(
        shared.clone(),
        handler.clone(),
        Box::new(stream),
        peer,
        over_limit,
        accepted,
    ))
}

/// A connection under `--proxy-protocol`: its PROXY header (within the head
/// deadline) names the client, then the connection goes on as any other. A peer that
/// is not a trusted proxy, or a connection without a valid header, is closed without
/// an answer (one log line).
#[cfg(feature = "load-balancer")]
async fn proxied_connection(
    shared: Arc<Shared>,
    handler: Handler,
    mut stream: crate::tcp::Tcp,
    peer: SocketAddr,
    over_limit: bool,
    accepted: Instant,
) -> Option<SessionRun> {
    use crate::client_addr::ProxyHeader;
    use smol::io::AsyncReadExt as _;
    let trusted = &shared.config.trusted_proxies;
    if !trusted.is_empty() && !trusted.contains(peer.ip()) {
        log_refusal_silent(peer, "untrusted_proxy");
        return None;
    }
    let deadline = instant_after(accepted, shared.config.head_timeout);
    let read = until(deadline, async {
        // Peek, so that no byte after the header is taken; the bytes of an incomplete
        // header are all header, so they are consumed before peeking again.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            let room = crate::client_addr::MAX_PROXY_HEADER - buf.len();
            let n = stream.peek(&mut chunk[..room.min(512)]).await.ok()?;
            if n == 0 {
                return None;
            }
            let consumed = buf.len();
            buf.extend_from_slice(&chunk[..n]);
            let (take, done) = match crate::client_addr::parse_proxy_header(&buf) {
                ProxyHeader::Incomplete => (n, None),
                ProxyHeader::Complete(len, addr) => (len - consumed, Some(addr)),
                ProxyHeader::Invalid => return Some(Err(())),
            };
            stream.read_exact(&mut chunk[..take]).await.ok()?;
            if let Some(addr) = done {
                return Some(Ok(addr));
            }
        }
    });
    let client = match shared
        .shutdown
        .unless_begun(read)
        .await
        .flatten()
        .flatten()?
    {
        Ok(addr) => addr.unwrap_or(peer),
        Err(()) => {
            log_refusal_silent(peer, "bad_proxy_header");
            return None;
        }
    };
    dispatch(&shared, &handler, stream, client, over_limit, accepted).await
}

/// A connection closed without an answer (PROXY protocol refusals).
#[cfg(feature = "load-balancer")]
fn log_refusal_silent(peer: SocketAddr, reason: &str) {
    crate::log_event!(Level::Info, "refuse", "peer" = peer, "reason" = reason);
}

/// What a thread runs the executor until: one type for all, so that the executor's
/// `run` is in the binary once. The server's own tasks (accept loops, log flusher)
/// are of this type too, for the same reason.
type Until<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Spawns one of the server's own tasks, detached: one call of the executor's
/// `spawn` for all of them.
fn spawn_detached(ex: &smol::Executor<'static>, task: Until<'static>) {
    ex.spawn(task).detach();
}

/// The server's extra threads. Each runs an executor of its own with its own accept
/// loop on the shared listener, until this is dropped, which stops and joins them
/// (the tasks left are dropped with their executor).
struct Workers {
    stop: Arc<Shutdown>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn start(
        n: usize,
        listener: &Arc<Listener>,
        shared: &Arc<Shared>,
        handler: &Handler,
    ) -> io::Result<Workers> {
        let mut workers = Workers {
            stop: Arc::default(),
            threads: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let stop = workers.stop.clone();
            let (listener, shared, handler) = (listener.clone(), shared.clone(), handler.clone());
            let thread = std::thread::Builder::new()
                .name("wsgate-worker".into())
                .spawn(move || {
                    let ex = Arc::new(smol::Executor::new());
                    // A task, as on the first thread (`Spawner`). The last loop to end
                    // closes the listener.
                    let accepting = accepting(listener, None, shared, handler, Arc::downgrade(&ex));
                    spawn_detached(&ex, accepting);
                    // The accept loop ends when shutdown begins; the sessions then go
                    // on until the first thread is done with them (`stop`). The
                    // executor drops what is left, a loop still accepting included (its
                    // `Server::run` was dropped).
                    let run: Until<'_> = Box::pin(stop.begun());
                    smol::block_on(ex.run(run));
                })?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.begin();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What the handshake led to, owning everything it needs (the head buffer is freed).
enum Next {
    Done,
    Session {
        identity: Identity,
        target: String,
        leftover: Vec<u8>,
    },
    FirstMessage {
        target: String,
        leftover: Vec<u8>,
    },
    InBand {
        rejection: Rejection,
        leftover: Vec<u8>,
    },
}

fn log_refusal(peer: SocketAddr, status: u16, reason: &str) {
    crate::log_event!(
        Level::Info,
        "refuse",
        "peer" = peer,
        "status" = status,
        "reason" = reason
    );
}

/// A request refused before any token is looked at (`docs/protocol.md#order-of-checks`):
/// one row each of status, extra headers, body and the `reason` of its log line.
enum Refusal {
    HeadTooLarge,
    MalformedHead,
    DuplicateHeader(&'static str),
    Path,
    PathNotServed,
    NotAnUpgrade,
    MaxConnections,
    BadUpgrade(UpgradeError),
    RedisNotReady,
}

/// A refusal's row: status, extra headers, log reason, body.
type RefusalRow = (
    u16,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

impl Refusal {
    fn answer(&self) -> RefusalRow {
        use Refusal::*;
        const RETRY: &[(&str, &str)] = &[("Retry-After", "1")];
        match self {
            HeadTooLarge => (431, &[], "head_too_large", "request head too large\n"),
            MalformedHead => (400, &[], "malformed_head", "bad request\n"),
            DuplicateHeader(_) => (400, &[], "duplicate_header", "bad request: more than one"),
            Path => (404, &[], "path", "not found\n"),
            PathNotServed => (
                400,
                &[],
                "path_not_served",
                "bad request: this path cannot be served (dot segments or encoded slashes)\n",
            ),
            NotAnUpgrade => (
                426,
                &[("Upgrade", "websocket")],
                "not_an_upgrade",
                "this is a WebSocket endpoint\n",
            ),
            MaxConnections => (503, RETRY, "max_connections", "too many connections\n"),
            BadUpgrade(UpgradeError::Version) => (
                426,
                &[("Sec-WebSocket-Version", "13")],
                "bad_upgrade",
                "bad WebSocket handshake\n",
            ),
            BadUpgrade(_) => (400, &[], "bad_upgrade", "bad WebSocket handshake\n"),
            RedisNotReady => (503, RETRY, "redis_not_ready", "redis unavailable\n"),
        }
    }
}

/// Answers `refusal` and logs it; `req`: a plain HTTP request, which also gets its
/// access line.
async fn refuse(
    stream: &mut BoxedConnection,
    peer: SocketAddr,
    req: Option<&head::Request<'_>>,
    refusal: Refusal,
) -> Next {
    let (status, extra, reason, body) = refusal.answer();
    log_refusal(peer, status, reason);
    if let Some(req) = req {
        log_http(peer, req, status);
    }
    let answer = match refusal {
        Refusal::DuplicateHeader(name) => {
            let body = format!("{body} {name} header\n");
            head::text_response(status, extra, &body)
        }
        _ => head::text_response(status, extra, body),
    };
    let answer = match req {
        Some(req) => head::for_method(req.method, answer),
        None => answer,
    };
    respond(stream, &answer).await;
    Next::Done
}

/// The refusals that come before the token, in their order, once the head is read:
/// the path, what a handler serves, a plain request that is no endpoint, and
/// `--max-connections`.
fn check_request(
    shared: &Shared,
    handler: &Handler,
    req: &head::Request<'_>,
    upgrade: bool,
    over_limit: bool,
) -> Result<(), Refusal> {
    if upgrade {
        if shared
            .config
            .path
            .as_deref()
            .is_some_and(|p| req.path() != p)
        {
            return Err(Refusal::Path);
        }
        if !handler.accepts(req.target) {
            return Err(Refusal::PathNotServed);
        }
    } else if !endpoints::is_endpoint(req, &shared.config) {
        return Err(Refusal::NotAnUpgrade);
    }
    if over_limit {
        return Err(Refusal::MaxConnections);
    }
    Ok(())
}

/// `peer_slot`: the TCP peer (or the PROXY header's client); behind a trusted
/// proxy it becomes the client that `X-Forwarded-For` names.
async fn handshake(
    shared: &Arc<Shared>,
    handler: &Handler,
    stream: &mut BoxedConnection,
    peer_slot: &mut SocketAddr,
    over_limit: bool,
    accepted: Instant,
) -> Next {
    #[cfg_attr(not(feature = "load-balancer"), allow(unused_mut))]
    let mut peer = *peer_slot;
    let mut buf = Vec::with_capacity(1024);
    let mut storage = head::header_storage();
    let deadline = instant_after(accepted, shared.config.head_timeout);
    let (req, rest) = match read_head(stream, &mut buf, &mut storage, deadline, shared).await {
        Ok(Some(head)) => head,
        Ok(None) => return Next::Done,
        Err(e) => {
            let refusal = match e {
                HeadError::TooLarge => Refusal::HeadTooLarge,
                HeadError::Malformed => Refusal::MalformedHead,
                HeadError::Duplicate(name) => Refusal::DuplicateHeader(name),
            };
            return refuse(stream, peer, None, refusal).await;
        }
    };
    #[cfg(feature = "load-balancer")]
    {
        // The peer itself unless it is a trusted proxy (checked first, in there).
        let trusted = &shared.config.trusted_proxies;
        let client = trusted.client_ip(peer.ip(), req.headers_named("x-forwarded-for"));
        if client != peer.ip() {
            // The port the client used is not known: 0.
            peer = SocketAddr::new(client, 0);
            *peer_slot = peer;
        }
    }
    let upgrade = req.is_upgrade();
    if let Err(refusal) = check_request(shared, handler, &req, upgrade, over_limit) {
        return refuse(stream, peer, (!upgrade).then_some(&req), refusal).await;
    }
    if !upgrade {
        let answer = head::for_method(req.method, endpoints::serve(shared, &req, peer).await);
        log_http(peer, &req, status_of(&answer));
        respond(stream, &answer).await;
        return Next::Done;
    }
    let key = match req.websocket_key() {
        Ok(k) => k,
        Err(e) => return refuse(stream, peer, None, Refusal::BadUpgrade(e)).await,
    };
    if !shared.redis_ready() {
        // A node that has never seen the revocations lets no one in.
        return refuse(stream, peer, None, Refusal::RedisNotReady).await;
    }
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut decision = shared.gate.check_upgrade(&req, peer.ip(), unix_now());
    #[cfg(feature = "redis")]
    if let Decision::Accept { identity, protocol } = &mut decision {
        if let Err(rejection) = redeem(shared, identity).await {
            decision = Decision::Reject {
                rejection,
                method: Some(identity.method),
                in_band: req.header("origin").is_some() && rejection.in_band_for_browsers(),
                protocol: *protocol,
            };
        }
    }
    let next = Upgraded {
        target: req.target,
        leftover: rest,
        key,
    };
    answer_decision(shared, stream, peer, accepted, decision, next).await
}

/// What the `101` and the session need of a valid upgrade request.
struct Upgraded<'r> {
    target: &'r str,
    leftover: &'r [u8],
    key: &'r str,
}

/// Answers the gate's decision: the `101` and a session, the `101` and the wait for a
/// first message, or the refusal (in band after a `101`, or as HTTP).
async fn answer_decision(
    shared: &Shared,
    stream: &mut BoxedConnection,
    peer: SocketAddr,
    accepted: Instant,
    decision: Decision<'_>,
    up: Upgraded<'_>,
) -> Next {
    let leftover = up.leftover.to_vec();
    match decision {
        Decision::Accept { identity, protocol } => {
            if !write_all(stream, &head::switching_protocols(up.key, protocol)).await {
                return Next::Done;
            }
            shared.auth_ok(peer, &identity, accepted);
            Next::Session {
                identity,
                target: up.target.to_owned(),
                leftover,
            }
        }
        Decision::AwaitMessage {
            protocol,
            query_disabled,
            ..
        } => {
            if query_disabled && crate::log::enabled(Level::Info) {
                // The client may think its `?token=` counts; only the first message will.
                crate::log::Line::new(Level::Info, "auth_hint")
                    .kv("peer", peer)
                    .kv("detail", "query_disabled")
                    .emit();
            }
            if !write_all(stream, &head::switching_protocols(up.key, protocol)).await {
                return Next::Done;
            }
            Next::FirstMessage {
                target: up.target.to_owned(),
                leftover,
            }
        }
        Decision::Reject {
            rejection,
            method,
            in_band,
            protocol,
        } => {
            shared.auth_fail(
                peer,
                method,
                rejection,
                if in_band { Answer::Close } else { Answer::Http },
            );
            if in_band {
                if !write_all(stream, &head::switching_protocols(up.key, protocol)).await {
                    return Next::Done;
                }
                return Next::InBand {
                    rejection,
                    leftover,
                };
            }
            let status = rejection.status();
            let extra: &[(&str, &str)] = match status {
                401 => &[crate::auth::INVALID_TOKEN_CHALLENGE],
                503 => &[("Retry-After", "1")],
                _ => &[],
            };
            let (_, body) = rejection.close();
            respond(
                stream,
                &head::text_response(status, extra, &format!("{body}\n")),
            )
            .await;
            Next::Done
        }
    }
}

/// Spends the ticket that opened `identity` in the shared state, if it has one
/// still to spend: a second use anywhere is refused, and so is any use while Redis
/// cannot be reached (nothing is spent then).
#[cfg(feature = "redis")]
async fn redeem(shared: &Shared, identity: &mut Identity) -> Result<(), Rejection> {
    let (Some(cluster), Some(ticket)) = (&shared.cluster, identity.take_unredeemed()) else {
        return Ok(());
    };
    match cluster.redeem(&ticket.jti, ticket.exp).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Rejection::TicketReused),
        Err(_) => Err(Rejection::Unavailable),
    }
}

/// The WebSocket over `stream`, with the session's limits; `leftover` (bytes after
/// the request head) is read first.
async fn ws_from(shared: &Shared, stream: BoxedConnection, leftover: Vec<u8>) -> WsStream {
    let stream = crate::aligned::FrameAligned::new(stream, leftover);
    WebSocketStream::from_raw_socket(stream, Role::Server, Some(shared.ws_config)).await
}

/// One client connection, whatever its transport: the request head, then an answer
/// or a session. `over_limit`: past `--max-connections`, answered with 503.
async fn connection(
    shared: Arc<Shared>,
    handler: Handler,
    mut stream: BoxedConnection,
    peer: SocketAddr,
    over_limit: bool,
    accepted: Instant,
) -> Option<SessionRun> {
    crate::log_event!(Level::Debug, "accept", "peer" = peer);
    // Boxed: the head buffer and header storage live only as long as the handshake,
    // not in every session's task.
    let mut peer = peer;
    let next = Box::pin(handshake(
        &shared,
        &handler,
        &mut stream,
        &mut peer,
        over_limit,
        accepted,
    ))
    .await;
    match next {
        Next::Done => None,
        Next::Session {
            identity,
            target,
            leftover,
        } => {
            let ws = Box::pin(ws_from(&shared, stream, leftover)).await;
            Some(handler.run(Session::new(identity, peer, target, ws, shared.clone())))
        }
        Next::InBand {
            rejection,
            leftover,
        } => {
            let mut ws = Box::pin(ws_from(&shared, stream, leftover)).await;
            let (code, reason) = rejection.close();
            Box::pin(close_and_drain(&mut ws, code, reason)).await;
            None
        }
        Next::FirstMessage { target, leftover } => {
            let mut ws = Box::pin(ws_from(&shared, stream, leftover)).await;
            // Before authentication, a first message of a token's size at most: a
            // token-less connection cannot make the server hold `--max-message`.
            let bound = shared.config.max_message.min(MAX_FIRST_MESSAGE);
            ws.get_mut().limit(bound as u64);
            let session =
                Box::pin(first_message(shared.clone(), ws, peer, target, accepted)).await?;
            Some(handler.run(session))
        }
    }
}

/// A connection on a TLS listener: the TLS handshake within the head deadline (it
/// counts against `--max-connections` like the head it precedes), then the same path
/// as a plain connection. A client that stalls is dropped at the deadline, without a
/// log line, as one that stalls in its head; a failed handshake logs one line.
#[cfg(feature = "tls")]
async fn tls_connection(
    shared: Arc<Shared>,
    handler: Handler,
    acceptor: futures_rustls::TlsAcceptor,
    tcp: crate::tcp::Tcp,
    peer: SocketAddr,
    over_limit: bool,
    accepted: Instant,
) -> Option<SessionRun> {
    let deadline = instant_after(accepted, shared.config.head_timeout);
    let handshake = until(deadline, acceptor.accept(tcp));
    let stream = match shared.shutdown.unless_begun(handshake).await? {
        Some(Ok(stream)) => stream,
        None => {
            // Not done by the head deadline: dropped, one line to see a slow attack.
            crate::log_event!(Level::Info, "tls_fail", "peer" = peer, "reason" = "timeout");
            return None;
        }
        Some(Err(e)) => {
            // A TCP probe that connects and leaves (load balancers' health checks)
            // is no event.
            if e.kind() != io::ErrorKind::UnexpectedEof {
                crate::log_event!(
                    Level::Info,
                    "tls_fail",
                    "peer" = peer,
                    "reason" = crate::tls::handshake_reason(&e)
                );
            }
            return None;
        }
    };
    connection(
        shared,
        handler,
        Box::new(stream),
        peer,
        over_limit,
        accepted,
    )
    .await
}

enum First {
    Frame(Option<Result<Message, async_tungstenite::tungstenite::Error>>),
    Timeout,
    Shutdown,
}

async fn first_message(
    shared: Arc<Shared>,
    mut ws: WsStream,
    peer: SocketAddr,
    target: String,
    accepted: Instant,
) -> Option<Session> {
    let deadline = instant_after(Instant::now(), shared.config.auth_timeout);
    // The refused first frame is still arriving: close without parsing what follows.
    let mut unreadable = false;
    let mut first_len = 0;
    let verdict = loop {
        if shared.is_shutting_down() {
            close_and_drain(&mut ws, 1001, "going away").await;
            return None;
        }
        let ev = match until(deadline, shared.shutdown.unless_begun(ws.next())).await {
            Some(Some(frame)) => First::Frame(frame),
            Some(None) => First::Shutdown,
            None => First::Timeout,
        };
        match ev {
            First::Frame(Some(Ok(Message::Text(t)))) => {
                first_len = t.len();
                let verdict =
                    shared
                        .gate
                        .check_first_message(Some(t.as_str()), peer.ip(), unix_now());
                #[cfg(feature = "redis")]
                let verdict = match verdict {
                    Ok(mut identity) => redeem(&shared, &mut identity).await.map(|()| identity),
                    refused => refused,
                };
                break verdict;
            }
            First::Frame(Some(Ok(Message::Binary(_)))) => {
                break shared.gate.check_first_message(None, peer.ip(), unix_now());
            }
            First::Frame(Some(Ok(Message::Close(_)))) => {
                drain(&mut ws).await;
                return None;
            }
            First::Frame(Some(Ok(_))) => continue,
            First::Frame(end) => {
                // Refused at its header, over the bound (the rest of it is not read):
                // within --max-message, too long to be a token; over it, 1009.
                let over = ws.get_ref().over_limit();
                if over.is_some_and(|len| len <= shared.config.max_message as u64) {
                    unreadable = true;
                    break Err(Rejection::BadToken(TokenError::TooLong));
                }
                let fault = match over {
                    Some(_) => Some((1009, "message too big")),
                    None => end.and_then(|r| r.err()).as_ref().and_then(peer_fault),
                };
                if let Some((code, reason)) = fault {
                    // A first frame that cannot be read is a failed authentication all
                    // the same: counted and logged, with the code it got.
                    let token = if code == 1009 {
                        TokenError::TooLong
                    } else {
                        TokenError::Malformed
                    };
                    let answer = Answer::CloseWith(code);
                    let r = Rejection::BadToken(token);
                    shared.auth_fail(peer, Some(Method::Message), r, answer);
                    close_unreadable(&mut ws, code, reason).await;
                }
                return None;
            }
            First::Timeout => break Err(Rejection::Timeout),
            // Closed with 1001 at the top of the loop.
            First::Shutdown => {}
        }
    };
    match verdict {
        Ok(identity) => {
            let frame = Message::text(identity.authenticated_frame());
            if within_close_wait(ws.send(frame))
                .await
                .is_none_or(|r| r.is_err())
            {
                return None;
            }
            shared.auth_ok(peer, &identity, accepted);
            // From here on the session's limits apply (the WebSocket has them: only
            // the bound of the first message is lifted), and a large token message's
            // buffers are renewed as a large message's are.
            ws.get_mut().limit(0);
            let mut session = Session::new(identity, peer, target, ws, shared.clone());
            if first_len > crate::session::RENEW_BUFFERS_ABOVE {
                session.renew_buffers_later();
            }
            Some(session)
        }
        Err(rejection) => {
            shared.auth_fail(peer, Some(Method::Message), rejection, Answer::Close);
            let (code, reason) = rejection.close();
            if unreadable {
                close_unreadable(&mut ws, code, reason).await;
            } else {
                close_and_drain(&mut ws, code, reason).await;
            }
            None
        }
    }
}
