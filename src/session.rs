//! An authenticated WebSocket session, what handlers receive.
//!
//! [`Session::recv`] yields the client's text and binary messages and hides the
//! rest of a session's life: it answers pings, pings an idle client every
//! `ping_interval` and drops it when it stops answering, closes with 4401
//! `token expired` when the token's `exp` + leeway passes, with 1009 when a message
//! is too big, and with 1001 when the server shuts down. It returns `None` once
//! the session is over.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use smol::Timer;
use smol::future::FutureExt as _;
use smol::net::TcpStream;
use smol::stream::StreamExt as _;

use crate::auth::Identity;
use crate::log::Level;
use crate::server::Shared;

/// The WebSocket stream of a session.
pub type WsStream = WebSocketStream<TcpStream>;

/// How long to wait for the peer's answer to our close frame.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// An authenticated client. Dropping it ends the connection (and logs `close`).
pub struct Session {
    identity: Identity,
    peer: SocketAddr,
    target: String,
    ws: WsStream,
    shared: Arc<Shared>,
    timer: Timer,
    deadline: Option<Instant>,
    ping_interval: Duration,
    next_ping: Instant,
    awaiting_pong: bool,
    shutdown: event_listener::EventListener,
    started: Instant,
    close_code: Option<u16>,
    open: bool,
}

enum Event {
    Frame(Option<Result<Message, WsError>>),
    Tick,
    Shutdown,
}

/// Converts a Unix-seconds deadline into an `Instant`, or `None` if it is too far
/// away to matter (no overflow, no panic).
fn instant_at(unix: i64, now_unix: i64) -> Option<Instant> {
    let secs = unix.saturating_sub(now_unix).max(0) as u64;
    // Sessions past a century need no timer.
    if secs > 100 * 365 * 86_400 {
        return None;
    }
    Instant::now().checked_add(Duration::from_secs(secs))
}

impl Session {
    pub(crate) fn new(
        identity: Identity,
        peer: SocketAddr,
        target: String,
        ws: WsStream,
        shared: Arc<Shared>,
    ) -> Session {
        let deadline = instant_at(identity.deadline, crate::time::unix_now());
        let ping_interval = shared.config.ping_interval;
        let shutdown = shared.shutdown.listen();
        let now = Instant::now();
        shared.metrics.sessions_add(1);
        Session {
            identity,
            peer,
            target,
            ws,
            shared,
            timer: Timer::never(),
            deadline,
            ping_interval,
            next_ping: now + ping_interval,
            awaiting_pong: false,
            shutdown,
            started: now,
            close_code: None,
            open: true,
        }
    }

    /// The `sub` claim: who the client is.
    pub fn sub(&self) -> &str {
        &self.identity.sub
    }

    /// The whole claims JSON object, as signed.
    pub fn claims(&self) -> &str {
        &self.identity.claims
    }

    /// The verified identity (sub, exp, claims, method).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The request target of the upgrade (path and query).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The request path of the upgrade.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// Whether the session is still open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The raw WebSocket stream, for handlers that need more than `recv`/`send`
    /// (expiry and shutdown are then theirs to watch).
    pub fn stream(&mut self) -> &mut WsStream {
        &mut self.ws
    }

    fn arm_timer(&mut self) {
        let at = match self.deadline {
            Some(d) if d < self.next_ping => d,
            _ => self.next_ping,
        };
        self.timer.set_at(at);
    }

    /// The next text or binary message, or `None` when the session is over (the
    /// client left, its token expired, it stopped answering pings, a message was
    /// too big, or the server is shutting down; the close frame is already sent).
    pub async fn recv(&mut self) -> Option<Message> {
        while self.open {
            self.arm_timer();
            let ev = {
                let ws = &mut self.ws;
                let timer = &mut self.timer;
                let shutdown = &mut self.shutdown;
                let frame = async { Event::Frame(ws.next().await) };
                let tick = async {
                    timer.await;
                    Event::Tick
                };
                let stop = async {
                    shutdown.await;
                    Event::Shutdown
                };
                frame.or(tick).or(stop).await
            };
            match ev {
                Event::Frame(Some(Ok(m))) => {
                    self.awaiting_pong = false;
                    self.next_ping = Instant::now() + self.ping_interval;
                    match m {
                        Message::Text(_) | Message::Binary(_) => return Some(m),
                        Message::Close(frame) => {
                            self.close_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                            self.drain().await;
                        }
                        _ => {}
                    }
                }
                Event::Frame(Some(Err(WsError::Capacity(_)))) => {
                    self.close(1009, "message too big").await
                }
                Event::Frame(_) => {
                    self.close_code.get_or_insert(1006);
                    self.open = false;
                }
                Event::Tick => {
                    let now = Instant::now();
                    if self.deadline.is_some_and(|d| now >= d) {
                        self.close(4401, "token expired").await;
                    } else if now >= self.next_ping {
                        if self.awaiting_pong {
                            crate::log_event!(
                                Level::Info,
                                "ping_timeout",
                                "peer" = self.peer,
                                "sub" = &self.identity.sub
                            );
                            self.close_code = Some(1006);
                            self.open = false;
                        } else {
                            self.awaiting_pong = true;
                            self.next_ping = now + self.ping_interval;
                            if self
                                .ws
                                .send(Message::Ping(Default::default()))
                                .await
                                .is_err()
                            {
                                self.open = false;
                            }
                        }
                    }
                }
                Event::Shutdown => {
                    self.shutdown = self.shared.shutdown.listen();
                    self.close(1001, "going away").await;
                }
            }
        }
        None
    }

    /// Sends a message to the client.
    pub async fn send(&mut self, msg: Message) -> Result<(), WsError> {
        self.ws.send(msg).await
    }

    /// Closes the session with `code` and `reason`, waiting (bounded) for the client's
    /// close frame. Idempotent.
    pub async fn close(&mut self, code: u16, reason: &str) {
        if !self.open {
            return;
        }
        self.close_code = Some(code);
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        if self.ws.close(Some(frame)).await.is_ok() {
            self.drain().await;
        }
        self.open = false;
    }

    /// Reads until the peer's close (or EOF), bounded by [`CLOSE_WAIT`].
    async fn drain(&mut self) {
        let ws = &mut self.ws;
        let _ = async { while let Some(Ok(_)) = ws.next().await {} }
            .or(async {
                Timer::after(CLOSE_WAIT).await;
            })
            .await;
        self.open = false;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.metrics.sessions_add(-1);
        crate::log_event!(
            Level::Info,
            "close",
            "peer" = self.peer,
            "sub" = &self.identity.sub,
            "code" = self.close_code.unwrap_or(1006),
            "ms" = self.started.elapsed().as_millis(),
        );
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What runs for each authenticated session. Cheap to clone.
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(Session) -> BoxFuture + Send + Sync>);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// A handler from an async function of the session.
    ///
    /// ```
    /// use wsgate::{Handler, Message};
    /// let shout = Handler::new(|mut s| async move {
    ///     while let Some(m) = s.recv().await {
    ///         if let Message::Text(t) = m {
    ///             if s.send(Message::text(t.to_uppercase())).await.is_err() { break; }
    ///         }
    ///     }
    ///     s.close(1000, "").await;
    /// });
    /// # drop(shout);
    /// ```
    pub fn new<F, Fut>(f: F) -> Handler
    where
        F: Fn(Session) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Handler(Arc::new(move |s| Box::pin(f(s))))
    }

    /// Sends every text and binary message back (the default mode).
    pub fn echo() -> Handler {
        Handler::new(echo)
    }

    pub(crate) fn run(&self, s: Session) -> BoxFuture {
        (self.0)(s)
    }
}

/// The echo session: every text and binary message is sent back.
pub async fn echo(mut s: Session) {
    while let Some(m) = s.recv().await {
        if s.send(m).await.is_err() {
            return;
        }
    }
    s.close(1000, "").await;
}
