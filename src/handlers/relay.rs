//! Proxy mode (`docs/protocol.md#proxy-mode`): each authenticated client gets its own
//! connection to an upstream WebSocket, and frames are relayed both ways.
//!
//! - The upstream request is built fresh: `X-Wsgate-Sub: <sub>` and
//!   `X-Wsgate-Claims: <base64url of the claims JSON>`, and nothing of the client's
//!   request (no `Authorization`, cookie, subprotocol or client `X-Wsgate-*` header),
//!   so credentials never travel and a client cannot forge its identity.
//! - The client's path and query are appended to the upstream path (a client on `/`
//!   gets the upstream path itself); a `token` query parameter is never passed on.
//! - Backpressure: a message is read from one side only once the previous one was
//!   written to the other side, so each direction holds at most one message (client →
//!   upstream: an [`Outbox`]). The two directions are independent, so an upstream that
//!   echoes cannot deadlock the relay.
//! - Memory: after a message over 4 KiB either way, the upstream WebSocket is rebuilt
//!   with fresh buffers between messages, as the client's is ([`Session`]); its
//!   stream is [`FrameAligned`] for that.
//! - Close codes travel both ways, a close frame without a code as one without a
//!   code. The upstream ending without a close frame, or being unreachable, closes
//!   the client with 1011. The token's expiry (4401) and server shutdown (1001)
//!   close both sides, through [`Session::recv_or`]. A dial still under way at
//!   shutdown is dropped once the client's close is done.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};
use ct_codecs::{Base64UrlSafeNoPadding, Encoder as _};
use smol::future::FutureExt as _;
use smol::net::TcpStream;
use smol::stream::StreamExt as _;

use crate::aligned::FrameAligned;
use crate::client::{self, Upgrade, WsUrl};
use crate::config::ConfigError;
use crate::deadline::within;
use crate::log::Level;
use crate::outbox::Outbox;
use crate::session::{
    BoxedConnection, Handler, RENEW_BUFFERS_ABOVE, Race, Session, close_frame, within_close_wait,
};

/// Bound on reaching the upstream: TCP connect and WebSocket handshake together
/// (`docs/protocol.md#proxy-mode`).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked `--upstream` URL: `ws://host[:port][/path]` (no query), or `wss://…`
/// with the `tls` feature, verified against the system's roots plus `--upstream-ca`.
#[derive(Clone, Debug)]
pub struct UpstreamUrl {
    url: WsUrl,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsClient>,
}

impl PartialEq for UpstreamUrl {
    /// The same URL (the trusted roots of a `wss://` one are not compared).
    fn eq(&self, other: &UpstreamUrl) -> bool {
        self.url == other.url
    }
}

impl UpstreamUrl {
    /// Parses and checks an upstream URL; the error names the setting `upstream`.
    pub fn parse(url: &str) -> Result<UpstreamUrl, ConfigError> {
        #[cfg(feature = "tls")]
        return UpstreamUrl::parse_with_ca(url, None);
        #[cfg(not(feature = "tls"))]
        UpstreamUrl::parse_url(url)
    }

    fn parse_url(url: &str) -> Result<UpstreamUrl, ConfigError> {
        let bad = |why: &str| ConfigError::new(format!("upstream {url}"), why);
        let parsed = WsUrl::parse(url).map_err(bad)?;
        // The client's query is appended to the upstream path (`target_for`).
        if parsed.path().contains('?') {
            return Err(bad("no query allowed (the client's query is appended)"));
        }
        Ok(UpstreamUrl {
            url: parsed,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// [`UpstreamUrl::parse`], and for a `wss://` URL the trust to verify it with: the
    /// system's roots plus the CAs in `ca` (PEM), as `--upstream-ca` gives. A `ca`
    /// for a `ws://` URL is an error (it would do nothing).
    #[cfg(feature = "tls")]
    pub fn parse_with_ca(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<UpstreamUrl, ConfigError> {
        let mut up = UpstreamUrl::parse_url(url)?;
        if up.url.is_tls() {
            up.tls = Some(crate::tls::TlsClient::new(ca, "upstream_ca")?);
        } else if ca.is_some() {
            return Err(ConfigError::new(
                "upstream_ca",
                "the upstream is ws:// (no TLS); use wss://",
            ));
        }
        Ok(up)
    }

    /// Whether a client's request target stays under the upstream path once appended:
    /// no `.` or `..` segment, plain or percent-encoded (`%2e`), and no encoded slash
    /// or backslash (`%2f`, `%5c`) or backslash, which an upstream may decode into a
    /// separator. Such targets are refused (400) before the upgrade.
    pub fn confines(&self, client_target: &str) -> bool {
        let path = client_target
            .split(['?', '#'])
            .next()
            .unwrap_or(client_target);
        path.split('/').all(|segment| {
            let lower = segment.to_ascii_lowercase();
            if lower.contains("%2f") || lower.contains("%5c") || lower.contains('\\') {
                return false;
            }
            let dots = lower.replace("%2e", ".");
            dots != "." && dots != ".."
        })
    }

    /// The upstream request target for a client's: the client's path appended to the
    /// upstream path (without doubling `/`; a client on `/` gets the upstream path
    /// itself), then the client's query without its `token` parameters. A fragment
    /// (never part of a request target) is dropped, query parameters after it included.
    pub fn target_for(&self, client_target: &str) -> String {
        let client_target = client_target
            .split_once('#')
            .map_or(client_target, |(t, _)| t);
        let (path, query) = client_target.split_once('?').unwrap_or((client_target, ""));
        let mut out = if path.is_empty() || path == "/" {
            self.url.path().to_owned()
        } else {
            let mut p = self.url.path().trim_end_matches('/').to_owned();
            if !path.starts_with('/') {
                p.push('/');
            }
            p.push_str(path);
            p
        };
        let mut first = true;
        for pair in query.split('&') {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if pair.is_empty() || key == "token" {
                continue;
            }
            out.push(if first { '?' } else { '&' });
            out.push_str(pair);
            first = false;
        }
        out
    }
}

impl UpstreamUrl {
    /// The client TLS of a `wss://` URL.
    #[cfg(feature = "tls")]
    fn tls_client(&self) -> Option<&crate::tls::TlsClient> {
        self.tls.as_ref()
    }

    #[cfg(not(feature = "tls"))]
    fn tls_client(&self) -> Option<std::convert::Infallible> {
        None
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.url.fmt(f)
    }
}

impl std::str::FromStr for UpstreamUrl {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<UpstreamUrl, ConfigError> {
        UpstreamUrl::parse(s)
    }
}

impl Handler {
    /// Proxy mode: relays every session to its own connection to `url`
    /// (`ws://host:port/path`), as `wsgate serve --upstream` does.
    ///
    /// ```
    /// let handler = wsgate::Handler::upstream("ws://127.0.0.1:9000/app").unwrap();
    /// # drop(handler);
    /// assert!(wsgate::Handler::upstream("127.0.0.1:9000").is_err());
    /// ```
    pub fn upstream(url: &str) -> Result<Handler, ConfigError> {
        #[cfg(feature = "tls")]
        return Handler::upstream_with_ca(url, None);
        #[cfg(not(feature = "tls"))]
        Ok(Handler::relaying(UpstreamUrl::parse(url)?))
    }

    /// [`Handler::upstream`] for a `wss://` URL whose certificate is verified against
    /// the system's roots plus the CAs in `ca` (PEM), as `--upstream-ca` does.
    #[cfg(feature = "tls")]
    pub fn upstream_with_ca(
        url: &str,
        ca: Option<&std::path::Path>,
    ) -> Result<Handler, ConfigError> {
        Ok(Handler::relaying(UpstreamUrl::parse_with_ca(url, ca)?))
    }

    fn relaying(url: UpstreamUrl) -> Handler {
        let url = Arc::new(url);
        let confining = url.clone();
        Handler::new(move |s| {
            let url = url.clone();
            async move { relay(s, &url).await }
        })
        .accepting(move |target| confining.confines(target))
    }
}

/// Relays `session` to its own connection to `upstream` until either side closes.
pub async fn relay(mut session: Session, upstream: &UpstreamUrl) {
    if !upstream.confines(session.target()) {
        // Refused before the upgrade by `Handler::upstream`; a handler of an embedder's
        // that calls this directly gets the same rule, as a policy close.
        session.close(1008, "path not served").await;
        return;
    }
    let target = upstream.target_for(session.target());
    let (sub, claims) = (session.sub().to_owned(), session.claims().to_owned());
    let dial = dial(upstream, &target, &sub, &claims, session.ws_config());
    let dialled = async {
        within(DIAL_TIMEOUT, dial)
            .await
            .unwrap_or_else(|| Err("timed out".to_owned()))
    };
    // Dial while still watching the client, expiry and shutdown.
    let mut dialled = std::pin::pin!(dialled);
    let ws = match session.hold_or(&mut dialled).await {
        Race::Other(Ok(ws)) => ws,
        Race::Other(Err(reason)) => {
            log_error(&session, upstream, "dial", &reason);
            session.close(1011, "upstream unavailable").await;
            return;
        }
        Race::Closed | Race::Client(_) => {
            // The session ended during the dial (bounded): an upstream that answers
            // still gets the close code rather than a reset. At shutdown the dial is
            // dropped: the exit waits for closing handshakes, not for a slow upstream.
            if let Some(Ok(ws)) = session.unless_shutdown(dialled).await {
                let (tx, mut rx) = ws.split();
                close_upstream(&session, Some(tx), &mut rx).await;
            }
            return;
        }
    };
    session.forward_control_frames(true);
    let config = session.ws_config();
    let (tx, rx) = ws.split();
    pump(&mut session, upstream, config, tx, rx).await;
}

/// Connects and performs the upstream handshake with a fresh request: the two
/// identity headers and nothing of the client's.
async fn dial(
    up: &UpstreamUrl,
    target: &str,
    sub: &str,
    claims: &str,
    config: WebSocketConfig,
) -> Result<WebSocketStream<UpStream>, String> {
    let sub = sub_header(sub);
    let claims = Base64UrlSafeNoPadding::encode_to_string(claims).unwrap_or_default();
    let headers = [
        ("X-Wsgate-Sub", &*sub),
        ("X-Wsgate-Claims", claims.as_str()),
    ];
    let upgrade = Upgrade::new(up.url.authority(), target, &headers).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect((up.url.host(), up.url.port()))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tcp = crate::tcp::Tcp::connected(tcp).map_err(|e| format!("connect: {e}"))?;
    let mut stream: BoxedConnection = match up.tls_client() {
        #[cfg(feature = "tls")]
        Some(tls) => tls
            .connect(up.url.host(), tcp)
            .await
            .map_err(|e| format!("tls: {}", crate::tls::handshake_reason(&e)))?,
        _ => Box::new(tcp),
    };
    let leftover = client::exchange(&mut stream, &upgrade)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let stream = FrameAligned::new(stream, leftover);
    Ok(WebSocketStream::from_raw_socket(stream, Role::Client, Some(config)).await)
}

/// `sub` as the value of `X-Wsgate-Sub`: as it is when it is visible ASCII without
/// `%` (the usual case), else percent-encoded byte by byte (UTF-8): every byte outside
/// visible ASCII, and `%` itself. `X-Wsgate-Claims` carries it exactly.
pub fn sub_header(sub: &str) -> std::borrow::Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_graphic() && b != b'%';
    if sub.bytes().all(plain) {
        return sub.into();
    }
    let mut out = String::with_capacity(sub.len() * 3);
    for b in sub.bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            let _ = fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
        }
    }
    out.into()
}

fn log_error(session: &Session, up: &UpstreamUrl, stage: &str, reason: &str) {
    crate::log_event!(
        Level::Error,
        "upstream_error",
        "peer" = session.peer(),
        "sub" = session.sub(),
        "upstream" = up,
        "stage" = stage,
        "reason" = reason,
    );
}

type UpStream = FrameAligned<BoxedConnection>;
type UpTx = WebSocketSender<UpStream>;
type UpRx = WebSocketReceiver<UpStream>;

enum Up {
    Sent(Result<(), WsError>),
    Msg(Option<Result<Message, WsError>>),
}

enum End {
    /// The session ended (client close, expiry, shutdown, ping timeout).
    Client,
    /// The upstream sent a close frame.
    UpstreamClosed(Option<CloseFrame>),
    /// The upstream went away without a close frame, or failed.
    UpstreamBroken(String),
}

async fn pump(
    session: &mut Session,
    upstream: &UpstreamUrl,
    config: WebSocketConfig,
    tx: UpTx,
    mut rx: UpRx,
) {
    let mut tx = Outbox::new(tx);
    // A large message went through the upstream WebSocket: renew its buffers once
    // nothing is in flight.
    let mut renew = false;
    let end = loop {
        if renew {
            if let Some(t) = tx.take_idle() {
                let (t, r, renewed) = renew_buffers(t, rx, config).await;
                (tx, rx, renew) = (Outbox::new(t), r, !renewed);
            }
        }
        // While a message to the upstream is in flight the client is not read
        // (`hold_or`), but the upstream still is: each direction waits only for itself.
        let holding = tx.is_busy();
        let up = async {
            let sent = async { Up::Sent(tx.finished().await) };
            let read = async { Up::Msg(rx.next().await) };
            sent.or(read).await
        };
        let race = session.wait(!holding, up).await;
        match race {
            Race::Client(m) => {
                renew |= m.len() > RENEW_BUFFERS_ABOVE;
                let started = tx.start(|mut t| async move {
                    let r = t.send(m).await;
                    (t, r)
                });
                if !started {
                    break End::UpstreamBroken("sender lost".into());
                }
            }
            Race::Closed => break End::Client,
            Race::Other(Up::Sent(r)) => {
                if let Err(e) = r {
                    break End::UpstreamBroken(format!("write: {e}"));
                }
            }
            Race::Other(Up::Msg(Some(Ok(m)))) => match m {
                Message::Close(f) => break End::UpstreamClosed(f),
                Message::Frame(_) => {}
                m => {
                    renew |= m.len() > RENEW_BUFFERS_ABOVE;
                    if !session.send_watched(m).await {
                        break End::Client;
                    }
                }
            },
            Race::Other(Up::Msg(Some(Err(e)))) => break End::UpstreamBroken(format!("read: {e}")),
            Race::Other(Up::Msg(None)) => {
                break End::UpstreamBroken("closed without a close frame".into());
            }
        }
    };
    match end {
        End::Client => {
            // Finish the write in flight (bounded), then pass the client's close on.
            let tx = within_close_wait(tx.into_writer()).await.flatten();
            close_upstream(session, tx, &mut rx).await;
        }
        // A protocol error between wsgate and the upstream (the upstream broke the
        // framing, or sent a close code that may not be sent, such as 1015, which
        // tungstenite answers with 1002) is not the client's: 1011.
        End::UpstreamClosed(Some(f)) if f.code == CloseCode::Protocol => {
            log_error(
                session,
                upstream,
                "relay",
                &format!("upstream closed with 1002: {}", f.reason),
            );
            let client = session.close(1011, "upstream error");
            smol::future::zip(client, drain(&mut rx)).await;
        }
        End::UpstreamClosed(f) => {
            // No code: none for the client either (1005, see `Session::close`).
            let (code, reason) = match &f {
                Some(f) => (u16::from(f.code), f.reason.to_string()),
                None => (1005, String::new()),
            };
            // Our reply to the upstream's close is queued; reading flushes it.
            let client = session.close(code, &reason);
            let upstream = drain(&mut rx);
            smol::future::zip(client, upstream).await;
        }
        End::UpstreamBroken(reason) => {
            log_error(session, upstream, "relay", &reason);
            session.close(1011, "upstream error").await;
        }
    }
}

/// The upstream WebSocket rebuilt with fresh buffers, if it holds no unread byte (its
/// [`FrameAligned`] stream is at a frame boundary); else the same halves. Only with
/// no write in flight: a completed `send` has flushed everything. `true` if renewed.
async fn renew_buffers(tx: UpTx, rx: UpRx, config: WebSocketConfig) -> (UpTx, UpRx, bool) {
    match WebSocketStream::reunite(tx, rx) {
        Ok(ws) if ws.get_ref().at_boundary() => {
            let fresh =
                WebSocketStream::from_raw_socket(ws.into_inner(), Role::Client, Some(config)).await;
            let (tx, rx) = fresh.split();
            (tx, rx, true)
        }
        Ok(ws) => {
            let (tx, rx) = ws.split();
            (tx, rx, false)
        }
        Err((tx, rx)) => (tx, rx, false),
    }
}

/// Passes the session's close code on to the upstream and waits (bounded) for its end.
async fn close_upstream(session: &Session, tx: Option<UpTx>, rx: &mut UpRx) {
    let (code, reason) = session.closed_with().unwrap_or((1006, ""));
    let frame = match code {
        1005 => None,
        // An abrupt end or a lost client cannot be sent as such.
        1006 | 1015 => Some(close_frame(1001, "client gone")),
        c => Some(close_frame(c, reason)),
    };
    if let Some(mut tx) = tx {
        if within_close_wait(tx.close(frame))
            .await
            .is_some_and(|r| r.is_ok())
        {
            drain(rx).await;
        }
    }
}

/// Reads the upstream until its end (its close reply, then EOF), bounded.
async fn drain(rx: &mut UpRx) {
    within_close_wait(async { while let Some(Ok(_)) = rx.next().await {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the docs of `parse`, `confines` and `sub_header` say, as examples.
    #[test]
    fn examples() {
        let u = UpstreamUrl::parse("ws://127.0.0.1:9000/app").unwrap();
        assert_eq!(u.target_for("/room?x=1"), "/app/room?x=1");
        assert!(UpstreamUrl::parse("http://example.com/").is_err());
        assert!(u.confines("/room/1?x=../y"));
        assert!(!u.confines("/../admin"));
        assert!(!u.confines("/%2E%2e/admin"));
        assert!(!u.confines("/a%2f..%2fadmin"));
        assert_eq!(sub_header("alice@example.com"), "alice@example.com");
        assert_eq!(sub_header("Zoë Smith"), "Zo%C3%AB%20Smith");
        assert_eq!(sub_header("100%"), "100%25");
    }

    #[test]
    fn parses_and_rejects() {
        let u = UpstreamUrl::parse("ws://127.0.0.1:9000/base").unwrap();
        assert_eq!(
            (u.url.host(), u.url.port(), u.url.path()),
            ("127.0.0.1", 9000, "/base")
        );
        let u = UpstreamUrl::parse("WS://example.com").unwrap();
        assert_eq!(
            (u.url.host(), u.url.port(), u.url.path()),
            ("example.com", 80, "/")
        );
        assert_eq!(u.to_string(), "ws://example.com/");
        let u = UpstreamUrl::parse("ws://[::1]:81/x/").unwrap();
        assert_eq!((u.url.host(), u.url.port()), ("::1", 81));
        assert_eq!(u.to_string(), "ws://[::1]:81/x/");
        for bad in [
            "127.0.0.1:9000",
            "http://h/",
            "ws://",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://h:x/",
            "ws://h/a?b=1",
            "ws://h?b=1",
            "ws://h/a#f",
            "ws://u:p@h/",
            "ws://h/a b",
            "ws://[::1/",
        ] {
            let e = UpstreamUrl::parse(bad).unwrap_err();
            assert!(e.what.starts_with("upstream "), "{bad}: {e}");
        }
    }

    #[test]
    fn appends_client_path_and_query() {
        let base = UpstreamUrl::parse("ws://h:1/base").unwrap();
        let slash = UpstreamUrl::parse("ws://h:1/base/").unwrap();
        let root = UpstreamUrl::parse("ws://h:1").unwrap();
        assert_eq!(base.target_for("/room?x=1"), "/base/room?x=1");
        assert_eq!(slash.target_for("/room?x=1"), "/base/room?x=1");
        assert_eq!(root.target_for("/room"), "/room");
        assert_eq!(base.target_for("/"), "/base");
        assert_eq!(base.target_for("/?x=1"), "/base?x=1");
        assert_eq!(root.target_for("/"), "/");
        assert_eq!(base.target_for("/a/b/"), "/base/a/b/");
    }

    #[test]
    fn dot_segments_and_encoded_separators_do_not_leave_the_prefix() {
        let u = UpstreamUrl::parse("ws://h:1/app").unwrap();
        for bad in [
            "/..",
            "/../../admin",
            "/a/../../admin",
            "/./x",
            "/%2e%2e/admin",
            "/%2E%2E/admin",
            "/.%2e/admin",
            "/%2e./admin",
            "/a%2f..%2f..%2fadmin",
            "/a%2F..",
            "/a%5c..%5cadmin",
            "/a\\..\\admin",
            "/..?x=1",
        ] {
            assert!(!u.confines(bad), "{bad}");
        }
        for good in [
            "/",
            "",
            "/room",
            "/a/b/",
            "/...",
            "/.hidden",
            "/a..b",
            "/r?x=../..",
            "/%2e%2e%2e",
        ] {
            assert!(u.confines(good), "{good}");
        }
    }

    #[test]
    fn never_passes_a_token_parameter() {
        let base = UpstreamUrl::parse("ws://h:1/base").unwrap();
        assert_eq!(base.target_for("/r?token=v4.local.x&x=1"), "/base/r?x=1");
        assert_eq!(base.target_for("/r?x=1&token=v4.local.x"), "/base/r?x=1");
        assert_eq!(base.target_for("/r?token"), "/base/r");
        assert_eq!(base.target_for("/r?tokens=1&&y"), "/base/r?tokens=1&y");
        assert_eq!(base.target_for("/r?x=1#&token=v4.local.x"), "/base/r?x=1");
        assert_eq!(base.target_for("/r#?token=v4.local.x"), "/base/r");
    }
}
