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
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncWrite};
use smol::stream::StreamExt as _;

use crate::aligned::FrameAligned;
use crate::auth::Identity;
use crate::log::Level;
use crate::metrics::RefreshResult;
use crate::registry::Control;
use crate::state::Shared;
use crate::timers::Sleep;

/// The byte stream of a client connection: TCP, TLS over TCP, or anything else that
/// reads and writes (a test's in-memory pipe, through
/// [`ServerHandle::serve_connection`](crate::ServerHandle::serve_connection)). Every
/// connection goes through the same code whatever its transport, behind one box.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// The TCP socket this connection is, when it is a plain one (not TLS, not a
    /// pipe): the session tunes how its last bytes are sent. Looks through a box. (A
    /// TCP stream handed to `serve_connection` while a clone of it stays open gets
    /// the reply to its client's close some 200 ms late: the socket closes only with
    /// the clone, and the kernel sends held-back bytes after that long.)
    fn tcp(&self) -> Option<std::os::fd::BorrowedFd<'_>>;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> Connection for T {
    fn tcp(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        let any: &dyn std::any::Any = self;
        if let Some(tcp) = any.downcast_ref::<crate::tcp::Tcp>() {
            return Some(tcp.as_fd());
        }
        match any.downcast_ref::<smol::net::TcpStream>() {
            Some(tcp) => Some(tcp.as_fd()),
            None => any
                .downcast_ref::<BoxedConnection>()
                .and_then(|b| (**b).tcp()),
        }
    }
}

/// A boxed [`Connection`].
pub type BoxedConnection = Box<dyn Connection>;

/// The WebSocket stream of a session: over a [`FrameAligned`] connection, so that
/// its buffers can be renewed after a large message.
pub type WsStream = WebSocketStream<FrameAligned<BoxedConnection>>;

/// A data message of more than this many bytes, received or sent, makes the session
/// renew its WebSocket buffers before it next waits for the client: tungstenite's
/// read and write buffers grow to the largest frame and never shrink.
pub const RENEW_BUFFERS_ABOVE: usize = 4096;

/// How long to wait for the peer's answer to our close frame.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// While a session holds its client back (backpressure: the upstream or process has
/// not taken the last message), it probes the client this often with a ping. The
/// client's bytes are not read then, so a client that left is not seen by reading: its
/// FIN waits behind what it sent, or cannot even arrive through a full receive window.
/// A ping written to a socket its peer has closed draws a reset, and the next probe's
/// write fails: the session then ends (and its process or upstream with it) within two
/// probes of the client leaving. A client that is there but slow answers later, and
/// the ping costs two bytes.
pub const HOLD_PROBE: Duration = Duration::from_secs(1);

/// An authenticated client. Dropping it ends the connection (and logs `close`).
pub struct Session {
    identity: Identity,
    peer: SocketAddr,
    target: String,
    ws: WsStream,
    shared: Arc<Shared>,
    timer: Sleep,
    deadline: Option<Instant>,
    ping_interval: Duration,
    /// When the keepalive next looks at the session (set only at ticks, so a
    /// busy session re-arms no timer per message).
    next_check: Instant,
    /// What the timer is armed for, to skip re-arming it for the same instant.
    armed: Option<Instant>,
    /// A frame arrived since the last keepalive check (no clock read per frame).
    active: bool,
    /// While holding the client back ([`Session::hold_or`]): when to probe it next
    /// ([`HOLD_PROBE`]). `None` while reading.
    next_probe: Option<Instant>,
    awaiting_pong: bool,
    /// With in-band refresh on: when to send the `expiring` notice (`None`: sent, or
    /// refresh off).
    notice_at: Option<Instant>,
    /// How the server reaches this session (revoked, shutting down), and its entry
    /// in the registry of live sessions.
    control: Arc<Control>,
    registry_id: u64,
    /// Wakes the session when `control` is notified.
    wake: event_listener::EventListener,
    started: Instant,
    close_code: Option<u16>,
    close_reason: String,
    forward_control: bool,
    /// A message read ahead by `hold_or`, returned by the next `recv_or`.
    stashed: Option<Message>,
    /// A large message went through: renew the WebSocket buffers at the next wait.
    renew: bool,
    /// The handler took the raw stream ([`Session::stream`]): it may hold unsent
    /// frames, so the buffers are never renewed.
    raw: bool,
    /// A send began and has not finished (it was cancelled): its frame may still be
    /// in the write buffer, so no renewal until a later send flushes it.
    unflushed: bool,
    open: bool,
}

enum Event<T> {
    Frame(Option<Result<Message, WsError>>),
    Tick,
    /// Woken from outside: revoked, or the server shuts down.
    Wake,
    Other(T),
}

/// What [`Session::recv_or`] and [`Session::hold_or`] saw first.
#[derive(Debug)]
pub enum Race<T> {
    /// A message from the client: text or binary (and ping or pong when
    /// [`Session::forward_control_frames`] is on).
    Client(Message),
    /// The session is over, as when [`Session::recv`] returns `None`; see
    /// [`Session::closed_with`].
    Closed,
    /// The other future finished first.
    Other(T),
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
        let unix = crate::time::unix_now();
        let deadline = instant_at(identity.deadline, unix);
        let ping_interval = shared.config.ping_interval;
        let (registry_id, control) = shared.registry.add(&identity, peer, unix);
        let wake = control.listen();
        // A revocation made while this session's handshake was finishing found it
        // not registered yet: look again now that it is.
        if shared
            .gate
            .revocations()
            .is_revoked(&identity.facts(), unix)
        {
            control.revoke();
        }
        let notice_at = notice_at(&shared, identity.exp, unix);
        let now = Instant::now();
        shared.metrics.sessions_add(1);
        Session {
            identity,
            peer,
            target,
            ws,
            shared,
            timer: Sleep::never(),
            deadline,
            ping_interval,
            next_check: crate::deadline::instant_after(now, ping_interval),
            armed: None,
            active: false,
            next_probe: None,
            awaiting_pong: false,
            notice_at,
            control,
            registry_id,
            wake,
            started: now,
            close_code: None,
            close_reason: String::new(),
            forward_control: false,
            stashed: None,
            renew: false,
            raw: false,
            unflushed: false,
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

    /// The verified identity (sub, exp, claims, method). After an in-band refresh,
    /// the refresh token's.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The `exp` claim that bounds the session now (Unix seconds): it moves with each
    /// in-band refresh. The session ends at `exp` + leeway.
    pub fn exp(&self) -> i64 {
        self.identity.exp
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

    /// How the session ended: the close code and reason sent or received (1005 for
    /// a close frame without a code, 1006 for an abrupt end). `None` while open.
    pub fn closed_with(&self) -> Option<(u16, &str)> {
        match (self.open, self.close_code) {
            (false, code) => Some((code.unwrap_or(1006), &self.close_reason)),
            (true, _) => None,
        }
    }

    /// When on, [`Session::recv_or`] also returns the client's pings and pongs (pings
    /// are still answered), so a relay can pass them on. Off by default.
    pub fn forward_control_frames(&mut self, on: bool) {
        self.forward_control = on;
    }

    /// Whether the server is shutting down.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }

    /// `f`, unless the server begins shutting down first (or has): `None` then.
    pub(crate) fn unless_shutdown<T>(
        &self,
        f: impl Future<Output = T>,
    ) -> impl Future<Output = Option<T>> {
        self.shared.shutdown.unless_begun(f)
    }

    /// The WebSocket limits of the server (message size, buffers), for a handler
    /// that opens a WebSocket of its own.
    pub(crate) fn ws_config(&self) -> WebSocketConfig {
        self.shared.ws_config()
    }

    /// The raw WebSocket stream, for handlers that need more than `recv`/`send`
    /// (expiry and shutdown are then theirs to watch).
    pub fn stream(&mut self) -> &mut WsStream {
        self.raw = true;
        &mut self.ws
    }

    /// Marks the WebSocket buffers for renewal at the next wait (the session's first
    /// message may have been large).
    pub(crate) fn renew_buffers_later(&mut self) {
        self.renew = true;
    }

    /// Replaces the WebSocket state with a fresh one: small buffers again, after a
    /// large message grew them (tungstenite never shrinks them). Only between
    /// messages: the [`FrameAligned`] stream has handed out no byte of a frame not yet
    /// returned, and every send has been flushed (`send` and `send_watched` flush; a
    /// send whose future was dropped, or a handler that took the raw stream, holds
    /// renewal off). The one thing a renewal
    /// could drop is the answer to a ping that arrived with the last message while
    /// the socket could not take it; the client then pings again or times out.
    async fn renew_buffers(&mut self) {
        self.renew = false;
        let config = Some(self.shared.ws_config());
        // A stand-in while the stream moves: if this future were dropped midway the
        // session would read a closed stream, never a panic. (Neither constructor
        // waits on anything.)
        let stand_in =
            WebSocketStream::from_raw_socket(FrameAligned::detached(), Role::Server, config).await;
        let old = std::mem::replace(&mut self.ws, stand_in);
        self.ws = WebSocketStream::from_raw_socket(old.into_inner(), Role::Server, config).await;
    }

    /// Arms the timer for the deadline, the expiry notice and, when reading, the
    /// keepalive check, or, when holding, the next probe.
    fn arm_timer(&mut self, read: bool) {
        let check = if read {
            Some(self.next_check)
        } else {
            self.next_probe
        };
        let at = earliest(earliest(self.deadline, check), self.notice_at);
        if at != self.armed {
            self.armed = at;
            match at {
                Some(at) => self.timer.set_at(at),
                None => self.timer = Sleep::never(),
            }
        }
    }

    /// The next text or binary message, or `None` when the session is over (the
    /// client left, its token expired, it stopped answering pings, a message was
    /// too big, or the server is shutting down; the close frame is already sent).
    pub async fn recv(&mut self) -> Option<Message> {
        match self.recv_or(std::future::pending::<()>()).await {
            Race::Client(m) => Some(m),
            Race::Closed | Race::Other(()) => None,
        }
    }

    /// Like [`Session::recv`], racing `other`: returns [`Race::Other`] if `other`
    /// finishes first. Nothing is lost when it does (a message being read stays
    /// buffered), so a handler can wait on its client and on something else at once,
    /// e.g. `session.recv_or(upstream.next())`.
    pub async fn recv_or<T>(&mut self, other: impl Future<Output = T>) -> Race<T> {
        self.wait(true, other).await
    }

    /// Waits for `other` without taking messages from the client (backpressure: its
    /// previous message is still being delivered). At most one message is read
    /// ahead and kept for the next [`Session::recv_or`], so a client that leaves
    /// meanwhile is noticed, and memory stays bounded. The session still closes when
    /// the token expires or the server shuts down ([`Race::Closed`]). Never returns
    /// [`Race::Client`].
    pub async fn hold_or<T>(&mut self, other: impl Future<Output = T>) -> Race<T> {
        self.wait(false, other).await
    }

    /// [`Session::recv_or`] when `read`, else [`Session::hold_or`]: for a handler whose
    /// backpressure decides it turn by turn.
    pub(crate) async fn wait<T>(&mut self, read: bool, other: impl Future<Output = T>) -> Race<T> {
        let mut other = std::pin::pin!(other);
        while self.open {
            if self.control.is_revoked() || self.shared.is_shutting_down() {
                // A session that began after the signal missed its wake-up.
                let (code, reason) = self.woken_for();
                self.close(code, reason).await;
                break;
            }
            if self.renew && !self.raw && !self.unflushed && self.ws.get_ref().at_boundary() {
                Box::pin(self.renew_buffers()).await;
            }
            if read {
                if let Some(m) = self.stashed.take() {
                    return Race::Client(m);
                }
            }
            let read_frames = self.stashed.is_none();
            // Holding: no keepalive (the pongs could not be read), only expiry and the
            // probe that notices a client that left.
            if read {
                self.next_probe = None;
            } else if self.next_probe.is_none() {
                self.next_probe = Some(crate::deadline::instant_after(Instant::now(), HOLD_PROBE));
            }
            self.arm_timer(read);
            let ev = {
                let ws = &mut self.ws;
                let timer = &mut self.timer;
                let wake = &mut self.wake;
                let other = &mut other;
                let frame = async {
                    if read_frames {
                        Event::Frame(ws.next().await)
                    } else {
                        std::future::pending::<Event<T>>().await
                    }
                };
                let tick = async {
                    timer.await;
                    Event::Tick
                };
                let stop = async {
                    wake.await;
                    Event::Wake
                };
                let other = async { Event::Other(other.await) };
                frame.or(tick).or(stop).or(other).await
            };
            let ev = match ev {
                Event::Other(t) => return Race::Other(t),
                Event::Frame(f) => Event::Frame(f),
                Event::Tick => Event::Tick,
                Event::Wake => Event::Wake,
            };
            if let Some(m) = self.on_event(ev, read).await {
                return Race::Client(m);
            }
        }
        Race::Closed
    }

    /// What the session does with one event of [`Session::wait`] (not generic: one
    /// copy in the binary whatever the handler waits on). `Some`: a message for the
    /// handler.
    async fn on_event(
        &mut self,
        ev: Event<std::convert::Infallible>,
        read: bool,
    ) -> Option<Message> {
        match ev {
            Event::Other(never) => match never {},
            Event::Frame(Some(Ok(m))) => {
                self.active = true;
                self.renew |= m.len() > RENEW_BUFFERS_ABOVE;
                if let Message::Text(t) = &m {
                    if self.shared.config.refresh {
                        if let Some(token) = crate::auth::refresh_request(t) {
                            // Consumed: never handed on, whatever the result.
                            let token = token.into_owned();
                            Box::pin(self.refresh(&token)).await;
                            return None;
                        }
                    }
                }
                match m {
                    Message::Text(_) | Message::Binary(_) if read => return Some(m),
                    Message::Ping(_) | Message::Pong(_) if read && self.forward_control => {
                        return Some(m);
                    }
                    Message::Text(_) | Message::Binary(_) => self.stashed = Some(m),
                    Message::Ping(_) | Message::Pong(_) if self.forward_control => {
                        self.stashed = Some(m);
                    }
                    Message::Close(frame) => {
                        let (code, reason) =
                            frame.map_or((1005, Default::default()), |f| (f.code.into(), f.reason));
                        self.close_code = Some(code);
                        self.close_reason = reason.to_string();
                        // The reply is the last frame: it leaves with the FIN, in one
                        // segment (docs/decisions.md#close-reply-and-fin).
                        self.ws.get_mut().end_with_next_write();
                        // Boxed: rare paths stay out of every session's future.
                        Box::pin(self.drain()).await;
                        // The reply was held back: closing now sends it.
                        self.ws.get_mut().finish();
                    }
                    _ => {}
                }
            }
            Event::Frame(end) => {
                match end.and_then(|r| r.err()).as_ref().and_then(peer_fault) {
                    Some((code, reason)) => {
                        self.close_code = Some(code);
                        self.close_reason = reason.into();
                        Box::pin(close_unreadable(&mut self.ws, code, reason)).await;
                    }
                    None => {
                        self.close_code.get_or_insert(1006);
                    }
                }
                self.open = false;
            }
            Event::Tick => {
                // A fired timer must be re-armed, even for the same instant.
                self.armed = None;
                let now = Instant::now();
                if self.notice_at.is_some_and(|n| now >= n) {
                    // Before the expiry check: a notice due at the deadline still goes.
                    self.notice_at = None;
                    let frame = exp_frame("expiring", &self.identity);
                    Box::pin(self.send_watched(Message::text(frame))).await;
                }
                if !self.open {
                    // Sending the notice found the session over.
                } else if self.deadline.is_some_and(|d| now >= d) {
                    self.close(4401, "token expired").await;
                } else if !read && self.next_probe.is_some_and(|p| now >= p) {
                    self.next_probe = Some(crate::deadline::instant_after(now, HOLD_PROBE));
                    Box::pin(self.probe()).await;
                } else if read && now >= self.next_check {
                    self.next_check = crate::deadline::instant_after(now, self.ping_interval);
                    if std::mem::take(&mut self.active) {
                        // The client spoke since the last check: it is alive.
                        self.awaiting_pong = false;
                    } else if self.awaiting_pong {
                        self.drop_silent();
                    } else {
                        // Not waiting for a socket the client does not empty: its
                        // silence until the next check drops it all the same.
                        self.awaiting_pong = true;
                        Box::pin(self.probe()).await;
                    }
                }
            }
            Event::Wake => {
                self.wake = self.control.listen();
                if self.control.is_revoked() || self.shared.is_shutting_down() {
                    let (code, reason) = self.woken_for();
                    self.close(code, reason).await;
                }
            }
        }
        None
    }

    /// Why the session was woken from outside: its close code and reason.
    fn woken_for(&self) -> (u16, &'static str) {
        if self.control.is_revoked() {
            crate::auth::Rejection::Revoked.close()
        } else if self.shared.is_shutting_down() {
            (1001, "going away")
        } else {
            (4401, "token expired")
        }
    }

    /// An in-band refresh (the message was consumed): the session becomes the new
    /// token's, or closes with the refusal's code.
    async fn refresh(&mut self, token: &str) {
        let now = crate::time::unix_now();
        let outcome = self.shared.gate.check_refresh(token, &self.identity, now);
        let result = match &outcome {
            Ok(_) => RefreshResult::Ok,
            Err(r) => RefreshResult::of(*r),
        };
        self.shared.metrics.refresh(result);
        crate::log_event!(
            Level::Info,
            "refresh",
            "peer" = self.peer,
            "sub" = &self.identity.sub,
            "result" = result.as_str(),
        );
        match outcome {
            Ok(identity) => {
                self.deadline = instant_at(identity.deadline, now);
                self.notice_at = notice_at(&self.shared, identity.exp, now);
                self.armed = None;
                self.shared.registry.update(self.registry_id, &identity);
                self.identity = identity;
                let frame = exp_frame("refreshed", &self.identity);
                self.send_watched(Message::text(frame)).await;
            }
            Err(rejection) => {
                if rejection == crate::auth::Rejection::Revoked {
                    self.shared.metrics.failure(rejection);
                }
                let (code, reason) = rejection.close();
                self.close(code, reason).await;
            }
        }
    }

    /// Probes a client held back ([`HOLD_PROBE`]): a ping, without waiting for the
    /// socket to take it. A write that fails means the client is gone.
    async fn probe(&mut self) {
        self.unflushed = true;
        let ping = self.ws.send(Message::Ping(Default::default()));
        match smol::future::poll_once(ping).await {
            // Written: the reset of a closed peer fails the next probe.
            Some(Ok(())) => self.unflushed = false,
            Some(Err(_)) => {
                self.close_code.get_or_insert(1006);
                self.open = false;
            }
            // The socket is full: the client is there but not reading. The ping is
            // queued (or dropped, if an earlier one still is); `unflushed` stays set.
            None => {}
        }
    }

    /// Sends a message to the client.
    pub async fn send(&mut self, msg: Message) -> Result<(), WsError> {
        self.renew |= msg.len() > RENEW_BUFFERS_ABOVE;
        self.unflushed = true;
        let sent = self.ws.send(msg).await;
        // Not reached if the caller drops this future: the flag then stays set.
        self.unflushed = false;
        sent
    }

    /// Sends a message to the client, unless the token expires or the server shuts
    /// down before the client takes it: the session is then closed (4401 `token
    /// expired`, 1001 `going away`) and `false` returned. A client that has not taken
    /// the message after two ping intervals, the silence the keepalive allows a client
    /// that is read, is dropped as one that stopped answering pings (`ping_timeout`):
    /// a client that stops reading holds neither its buffers nor its slot for longer.
    /// `false` also when sending fails.
    pub async fn send_watched(&mut self, msg: Message) -> bool {
        if !self.open {
            return false;
        }
        self.renew |= msg.len() > RENEW_BUFFERS_ABOVE;
        let stalled_at = crate::deadline::instant_after(Instant::now(), self.ping_interval * 2);
        let until = earliest(self.deadline, Some(stalled_at));
        let sent = {
            self.unflushed = true;
            let ws = &mut self.ws;
            let wake = &mut self.wake;
            let send = async { Some(ws.send(msg).await.is_ok()) };
            let expire = async {
                match until {
                    Some(d) => Sleep::at(d).await,
                    None => Sleep::never().await,
                };
                None
            };
            let stop = async {
                wake.await;
                None
            };
            send.or(expire).or(stop).await
        };
        match sent {
            Some(true) => {
                self.unflushed = false;
                true
            }
            Some(false) => {
                self.close_code.get_or_insert(1006);
                self.open = false;
                false
            }
            None => {
                self.wake = self.control.listen();
                let woken = self.control.is_revoked() || self.shared.is_shutting_down();
                if !woken && self.deadline.is_none_or(|d| Instant::now() < d) {
                    self.drop_silent();
                } else {
                    let (code, reason) = self.woken_for();
                    self.close(code, reason).await;
                }
                false
            }
        }
    }

    /// Drops a client that stopped answering: logged once, no close handshake (it
    /// would not be read either).
    fn drop_silent(&mut self) {
        crate::log_event!(
            Level::Info,
            "ping_timeout",
            "peer" = self.peer,
            "sub" = &self.identity.sub
        );
        self.close_code = Some(1006);
        self.open = false;
    }

    /// Closes the session with `code` and `reason`, waiting (bounded) for the client's
    /// close frame; 1005 (no status code) sends a close frame without a payload.
    /// Idempotent.
    pub async fn close(&mut self, code: u16, reason: &str) {
        if self.open {
            // Boxed: the closing handshake's state is not kept in every session's future.
            Box::pin(self.close_now(code, reason)).await;
        }
    }

    async fn close_now(&mut self, code: u16, reason: &str) {
        self.close_code = Some(code);
        self.close_reason = reason.to_owned();
        close_and_drain(&mut self.ws, code, reason).await;
        self.open = false;
    }

    /// Reads until the peer's close (or EOF), bounded by [`CLOSE_WAIT`].
    async fn drain(&mut self) {
        drain(&mut self.ws).await;
        self.open = false;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.metrics.sessions_add(-1);
        self.shared.registry.remove(self.registry_id);
        // Written value by value, without `core::fmt`: one of the two lines of every
        // connection.
        if crate::log::enabled(Level::Info) {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            crate::log::Line::new(Level::Info, "close")
                .kv_addr("peer", self.peer)
                .kv_str("sub", &self.identity.sub)
                .kv_u64("code", self.close_code.unwrap_or(1006).into())
                .kv_u64("ms", ms)
                .emit();
        }
    }
}

/// The earlier of two optional instants (`None`: never).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the `expiring` notice for `exp` is due: `--refresh-notice` before it, at once
/// if that moment has passed; `None` without `--refresh`.
fn notice_at(shared: &Shared, exp: i64, now_unix: i64) -> Option<Instant> {
    if !shared.config.refresh {
        return None;
    }
    let notice = shared.config.refresh_notice.as_secs().min(i64::MAX as u64) as i64;
    // At once if that moment has passed; never for a token that outlives a century.
    instant_at(exp.saturating_sub(notice), now_unix)
}

/// `{"type":"<kind>","exp":"<RFC 3339>"}`: the `expiring` and `refreshed` frames, with
/// the `exp` as issued.
fn exp_frame(kind: &str, identity: &Identity) -> String {
    let mut frame = String::with_capacity(48);
    for part in [r#"{"type":""#, kind, r#"","exp":""#] {
        frame.push_str(part);
    }
    crate::time::push_as_issued(&mut frame, identity.exp, identity.exp_text.as_deref());
    frame.push_str(r#""}"#);
    frame
}

/// Runs `f` for at most [`CLOSE_WAIT`]: `None` if it did not finish. Every closing
/// step is bounded by it, so a peer that stops reading cannot hold a connection.
pub(crate) fn within_close_wait<T>(f: impl Future<Output = T>) -> impl Future<Output = Option<T>> {
    crate::deadline::within(CLOSE_WAIT, f)
}

/// Reads until the peer's close reply (or EOF), within [`CLOSE_WAIT`].
pub(crate) async fn drain(ws: &mut WsStream) {
    within_close_wait(async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// The close frame with `code` and `reason`.
pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }
}

/// Sends a close frame (without a payload for 1005) and waits for the peer's, all
/// within [`CLOSE_WAIT`].
pub(crate) async fn close_and_drain(ws: &mut WsStream, code: u16, reason: &str) {
    let frame = (code != 1005).then(|| close_frame(code, reason));
    within_close_wait(async {
        if ws.close(frame).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The close code and reason for a read error the peer caused (RFC 6455 §7.4.1):
/// 1009 for a message over the limit, 1007 for a text message (or close reason) that
/// is not UTF-8, 1002 for any other violation of the framing (reserved bits or
/// opcodes, an unmasked client frame, a fragmented or oversized control frame, a
/// one-byte close payload, a continuation with nothing to continue, a data frame
/// inside a fragmented message). `None` for an error that is not the peer's fault
/// (the connection broke): there is no one to tell.
pub(crate) fn peer_fault(e: &WsError) -> Option<(u16, &'static str)> {
    use async_tungstenite::tungstenite::error::ProtocolError as P;
    match e {
        WsError::Capacity(_) => Some((1009, "message too big")),
        WsError::Utf8(_) => Some((1007, "invalid utf-8")),
        WsError::Protocol(
            P::ResetWithoutClosingHandshake | P::SendAfterClosing | P::ReceivedAfterClosing,
        ) => None,
        WsError::Protocol(_) => Some((1002, "protocol error")),
        _ => None,
    }
}

/// Closes a stream that can no longer be parsed (a message too big, whose payload
/// may still be arriving): sends the close frame, half-closes, then discards raw
/// bytes until the peer closes, bounded by [`CLOSE_WAIT`]. Dropping a socket with
/// unread bytes would make the kernel answer with a reset, and a browser would then
/// report 1006 instead of the close code.
pub(crate) async fn close_unreadable(ws: &mut WsStream, code: u16, reason: &str) {
    use smol::io::AsyncReadExt as _;
    let frame = close_frame(code, reason);
    within_close_wait(async {
        let _ = ws.close(Some(frame)).await;
        // The raw connection: what follows is discarded, not parsed.
        let Some(conn) = ws.get_mut().get_mut() else {
            return;
        };
        // Half-close (TCP: shutdown of the write side; TLS: close_notify first).
        let _ = smol::io::AsyncWriteExt::close(conn).await;
        let mut sink = [0u8; 512];
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Which request targets a handler serves ([`Handler::accepting`]).
type TargetCheck = dyn Fn(&str) -> bool + Send + Sync;

/// What runs for each authenticated session. Cheap to clone.
#[derive(Clone)]
pub struct Handler {
    run: Arc<dyn Fn(Session) -> BoxFuture + Send + Sync>,
    /// Which request targets this handler can serve; others are refused with 400
    /// before the upgrade. `None`: every target.
    accepts: Option<Arc<TargetCheck>>,
}

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
        Handler {
            run: Arc::new(move |s| Box::pin(f(s))),
            accepts: None,
        }
    }

    /// This handler, serving only the request targets (path and query) that
    /// `accepts` allows; the server answers any other upgrade with 400 before the
    /// `101`. Proxy mode uses it to keep clients under the upstream's path.
    pub fn accepting(mut self, accepts: impl Fn(&str) -> bool + Send + Sync + 'static) -> Handler {
        self.accepts = Some(Arc::new(accepts));
        self
    }

    /// Whether this handler serves `target` (see [`Handler::accepting`]).
    pub fn accepts(&self, target: &str) -> bool {
        self.accepts.as_ref().is_none_or(|f| f(target))
    }

    /// Sends every text and binary message back (the default mode).
    pub fn echo() -> Handler {
        Handler::new(echo)
    }

    pub(crate) fn run(&self, s: Session) -> BoxFuture {
        (self.run)(s)
    }
}

/// The echo session: every text and binary message is sent back.
///
/// A plain `fn` returning the future: an `async fn` would keep its argument twice in
/// the future (rustc #62958), and this future lives as long as the session.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub fn echo(mut s: Session) -> impl Future<Output = ()> + Send {
    async move {
        while let Some(m) = s.recv().await {
            // Watched: a client that sends but never reads still ends at its token's
            // expiry or at shutdown.
            if !s.send_watched(m).await {
                return;
            }
        }
        s.close(1000, "").await;
    }
}
