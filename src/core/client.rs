//! The client side of the WebSocket opening handshake (RFC 6455 §4.1), for the
//! relay's upstream connections and `wsgate bench`: a checked `ws://` URL, the
//! upgrade request as bytes, a bounded sans-IO check of the answer head, and one
//! async function that drives them over a connected stream. After the `101`,
//! async-tungstenite takes the stream over (`WebSocketStream::from_partially_read`),
//! as the server does after its own `101` ([`crate::head`]).
//!
//! The request carries `Host`, `Connection: Upgrade`, `Upgrade: websocket`,
//! `Sec-WebSocket-Version: 13`, a fresh `Sec-WebSocket-Key` and the caller's headers,
//! nothing else. The answer must be a `101` with `Upgrade: websocket`,
//! `Connection: upgrade`, the matching `Sec-WebSocket-Accept` and, when subprotocols
//! were offered, one of them; any other status is returned as such (`HTTP 401`).
//!
//! # Examples
//!
//! The handshake without IO, against wsgate's own server side ([`crate::head`]):
//!
//! ```
//! use wsgate::client::{Upgrade, WsUrl};
//! use wsgate::head;
//!
//! let url = WsUrl::parse("ws://127.0.0.1:9000/app").unwrap();
//! let upgrade = Upgrade::new(url.authority(), url.path(), &[("X-Wsgate-Sub", "alice")]).unwrap();
//!
//! // What the server reads, and its answer, followed by a first WebSocket frame.
//! let mut storage = head::header_storage();
//! let req = head::Request::parse_complete(upgrade.request(), &mut storage).unwrap();
//! assert_eq!((req.target, req.header("x-wsgate-sub")), ("/app", Some("alice")));
//! let mut answer = head::switching_protocols(req.websocket_key().unwrap(), None);
//! let head_len = answer.len();
//! answer.extend_from_slice(b"\x81\x02hi");
//!
//! // Arriving in two reads: incomplete, then complete, the frame left over.
//! assert_eq!(upgrade.check_answer(&answer[..20]).unwrap(), None);
//! assert_eq!(upgrade.check_answer(&answer).unwrap(), Some(head_len));
//! ```

use std::fmt;

use ct_codecs::{Base64, Encoder as _};

use crate::head::{self, AuthorityError, HeaderStorage, MAX_HEAD, accept_key, header_storage};

// The IO half (the server layer, `src/server/client_stream.rs`): the handshake over a
// stream.
pub use crate::client_stream::{exchange, handshake};

/// Largest answer head read, status line through the blank line: the bound the
/// server puts on request heads (`docs/protocol.md#order-of-checks`). A `101` takes
/// under 200 bytes.
pub const MAX_ANSWER_HEAD: usize = MAX_HEAD;

/// A checked `ws://host[:port][/path][?query]` URL, or `wss://…` with the `tls`
/// feature (refused without it).
///
/// Only RFC 3986 characters (`%`-escapes passed on as they are), a host name or IPv4
/// address or a bracketed IPv6 address, a port from 1 to 65535 (80 when absent, 443
/// for `wss://`),
/// no user info, no fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsUrl {
    /// Host and port as written: what `Host` carries (brackets kept for IPv6).
    authority: String,
    /// The host to connect to (brackets removed for IPv6).
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
    /// `wss://`: TLS to the server (feature `tls`).
    tls: bool,
}

impl WsUrl {
    /// Parses and checks `url`; the error says what is wrong, for the caller to
    /// prefix with the option it came from.
    pub fn parse(url: &str) -> Result<WsUrl, &'static str> {
        let (rest, tls) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ws") => (rest, false),
            #[cfg(feature = "tls")]
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("wss") => (rest, true),
            #[cfg(not(feature = "tls"))]
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("wss") => {
                return Err("wss://: this build has no TLS (feature \"tls\"); use ws://");
            }
            _ => return Err("expected a URL like ws://127.0.0.1:9000/path"),
        };
        if !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("spaces and non-ASCII characters are not allowed");
        }
        if rest.contains('#') {
            return Err("no fragment allowed");
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        // RFC 3986: unreserved and sub-delims, plus `:@/?%` in the path and query.
        let name_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
        if !path.bytes().all(|b| name_char(b) || b":@/?%".contains(&b)) {
            return Err("bad character in the path (percent-encode it)");
        }
        if authority.contains('@') {
            return Err("no user info allowed");
        }
        let (host, port) = head::split_authority(authority).map_err(|e| match e {
            AuthorityError::Unclosed => "unclosed `[`",
            AuthorityError::AfterLiteral(_) => "bad port",
        })?;
        let ipv6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = ipv6.unwrap_or(host);
        if host.is_empty() {
            return Err("no host");
        }
        if ipv6.is_some() {
            if !host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err("bad IPv6 address");
            }
        } else if !host.bytes().all(name_char) {
            // An RFC 3986 reg-name or IPv4 address.
            return Err("bad host");
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => head::parse_port(p).filter(|n| *n != 0).ok_or("bad port")?,
        };
        Ok(WsUrl {
            authority: authority.to_owned(),
            host: host.to_owned(),
            port,
            path,
            tls,
        })
    }

    /// Whether the URL is `wss://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host and port as written (`[::1]:9000`, `example.com`): the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The host to connect to, without IPv6 brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (80 when the URL has none, 443 for `wss://`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path and query, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// Why a client handshake failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request target or `Host` holds a space or a control (or `Host` non-ASCII).
    Target,
    /// A header's name or value cannot be sent as such (CR, LF, other controls,
    /// non-ASCII): the header's name.
    Header(String),
    /// No randomness for `Sec-WebSocket-Key`.
    Random,
    /// Writing the request or reading the answer failed.
    Io(std::io::Error),
    /// The stream ended before the answer head was complete.
    Closed,
    /// The answer head is over [`MAX_ANSWER_HEAD`] bytes or [`MAX_HEADERS`](crate::head::MAX_HEADERS) lines.
    TooLarge,
    /// The answer is not HTTP/1.x.
    Malformed,
    /// A complete answer other than `101`: its status code.
    Status(u16),
    /// A `101` that breaks RFC 6455 §4.1: which rule.
    Invalid(&'static str),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Target => f.write_str("request: target cannot be sent"),
            HandshakeError::Header(name) => write!(f, "request: {name} cannot be sent"),
            HandshakeError::Random => f.write_str("request: no randomness for the key"),
            HandshakeError::Io(e) => write!(f, "io: {e}"),
            HandshakeError::Closed => f.write_str("connection closed before the answer"),
            HandshakeError::TooLarge => write!(f, "answer head over {MAX_ANSWER_HEAD} bytes"),
            HandshakeError::Malformed => f.write_str("answer is not HTTP/1.x"),
            HandshakeError::Status(code) => write!(f, "HTTP {code}"),
            HandshakeError::Invalid(why) => write!(f, "bad 101: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Whether `v` can be sent as a header value as it is: visible ASCII, space and tab.
pub fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// One client handshake, sans IO: the request to send and what its answer must hold.
pub struct Upgrade {
    request: Vec<u8>,
    /// The `Sec-WebSocket-Accept` the answer must carry.
    accept: String,
    /// The `Sec-WebSocket-Protocol` offered, if any.
    protocols: Option<String>,
}

impl Upgrade {
    /// The `GET` upgrade of `target` (path and query) on `host` (the `Host` header),
    /// with `headers` after the required ones and a random `Sec-WebSocket-Key`.
    pub fn new(
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Upgrade, HandshakeError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| HandshakeError::Random)?;
        Upgrade::with_nonce(host, target, headers, &nonce)
    }

    fn with_nonce(
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
        nonce: &[u8; 16],
    ) -> Result<Upgrade, HandshakeError> {
        // No space or control in the request line; `Host` also ASCII. (A target may hold
        // UTF-8: the server's head parser lets it in, and the relay passes it on.)
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic());
        let target_ok = target.starts_with('/') && target.bytes().all(|b| b > b' ' && b != 0x7f);
        if !host_ok || !target_ok {
            return Err(HandshakeError::Target);
        }
        let key = Base64::encode_to_string(nonce).map_err(|_| HandshakeError::Random)?;
        let mut request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
        );
        let mut protocols = None;
        for (name, value) in headers {
            let token = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
            if name.is_empty() || !name.bytes().all(token) || !is_header_value(value) {
                return Err(HandshakeError::Header((*name).to_owned()));
            }
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                protocols = Some((*value).to_owned());
            }
            request.push_str(name);
            request.push_str(": ");
            request.push_str(value);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        Ok(Upgrade {
            request: request.into_bytes(),
            accept: accept_key(&key),
            protocols,
        })
    }

    /// The request head to send.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Checks the answer head at the start of `buf`: `Ok(None)` until it is complete,
    /// then the number of bytes it took (what follows is WebSocket data).
    ///
    /// Stateless: pass everything read so far each time. The length returned is at
    /// most `buf.len()` and [`MAX_ANSWER_HEAD`]; `Ok(None)` only while `buf` is
    /// shorter than that bound, so a caller that reads until an answer buffers at
    /// most [`MAX_ANSWER_HEAD`] bytes plus its last read.
    pub fn check_answer(&self, buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
        let mut storage = header_storage();
        let Some((answer, len)) = parse_answer(buf, &mut storage)? else {
            return Ok(None);
        };
        if answer.status != 101 {
            return Err(HandshakeError::Status(answer.status));
        }
        if answer.minor_version != 1 {
            return Err(HandshakeError::Invalid("not HTTP/1.1"));
        }
        let header = |name: &str| answer.header(name);
        if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            return Err(HandshakeError::Invalid("no `Upgrade: websocket`"));
        }
        let connection = header("connection").unwrap_or_default();
        if !connection
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        {
            return Err(HandshakeError::Invalid("no `Connection: upgrade`"));
        }
        if header("sec-websocket-accept") != Some(self.accept.as_str()) {
            return Err(HandshakeError::Invalid("wrong Sec-WebSocket-Accept"));
        }
        // A subprotocol must be one offered; one offered must be answered (as
        // browsers require, and wsgate's own server always does).
        match (header("sec-websocket-protocol"), &self.protocols) {
            (None, None) => {}
            (Some(p), Some(offered)) if offered.split(',').any(|o| o.trim() == p) => {}
            (None, Some(_)) => return Err(HandshakeError::Invalid("no subprotocol chosen")),
            (Some(_), _) => return Err(HandshakeError::Invalid("subprotocol not offered")),
        }
        Ok(Some(len))
    }
}

/// A parsed answer head, borrowing the bytes it was read from: what
/// [`parse_answer`] returns.
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    /// The status code: `101`, `200`, `401`, …
    pub status: u16,
    /// The minor HTTP version: `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    headers: &'a [httparse::Header<'a>],
}

impl<'a> Answer<'a> {
    /// The first header named `name` (any case), trimmed; `None` if absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    }
}

/// Parses an HTTP/1.x answer head from the start of `buf`: `Ok(None)` until it is
/// complete, then the answer and the number of bytes the head took (what follows is
/// the body, or WebSocket data after a `101`). Bounded as [`Upgrade::check_answer`] is:
/// [`MAX_ANSWER_HEAD`] bytes and [`MAX_HEADERS`](crate::head::MAX_HEADERS) lines.
#[inline]
pub fn parse_answer<'a>(
    buf: &'a [u8],
    storage: &'a mut HeaderStorage<'a>,
) -> Result<Option<(Answer<'a>, usize)>, HandshakeError> {
    let mut answer = httparse::Response::new(storage);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_ANSWER_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_ANSWER_HEAD => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooLarge),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let (Some(status), Some(minor_version)) = (answer.code, answer.version) else {
        return Err(HandshakeError::Malformed);
    };
    Ok(Some((
        Answer {
            status,
            minor_version,
            headers: answer.headers,
        },
        len,
    )))
}

/// Shows no header: the request may carry credentials (the bench's `Authorization`,
/// `Cookie`, token subprotocol).
impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upgrade { .. }")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The RFC 6455 §1.3 example: this nonce gives this key and this accept value.
    const NONCE: [u8; 16] = *b"the sample nonce";
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    pub(crate) fn upgrade(headers: &[(&str, &str)]) -> Upgrade {
        Upgrade::with_nonce("h:1", "/a?b=1", headers, &NONCE).unwrap()
    }

    pub(crate) fn answer(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn request_bytes() {
        let u = upgrade(&[("X-Wsgate-Sub", "alice"), ("Cookie", "c=v4.local.x")]);
        assert_eq!(
            std::str::from_utf8(u.request()).unwrap(),
            format!(
                "GET /a?b=1 HTTP/1.1\r\nHost: h:1\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\
                 X-Wsgate-Sub: alice\r\nCookie: c=v4.local.x\r\n\r\n"
            )
        );
        assert_eq!(u.accept, ACCEPT);
        // A fresh key each time, 16 random bytes in base64.
        let keys: Vec<String> = (0..2)
            .map(|_| {
                let u = Upgrade::new("h", "/", &[]).unwrap();
                let text = String::from_utf8(u.request().to_vec()).unwrap();
                let key = text.split("Sec-WebSocket-Key: ").nth(1).unwrap();
                key[..24].to_owned()
            })
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert!(keys[0].ends_with("=="), "{}", keys[0]);
    }

    #[test]
    fn request_refuses_what_cannot_be_sent() {
        let bad = |target: &str, headers: &[(&str, &str)]| {
            Upgrade::with_nonce("h", target, headers, &NONCE).unwrap_err()
        };
        assert!(matches!(bad("/a b", &[]), HandshakeError::Target));
        assert!(matches!(bad("/a\r\nX: y", &[]), HandshakeError::Target));
        assert!(matches!(bad("a", &[]), HandshakeError::Target));
        assert!(matches!(bad("/\x7f", &[]), HandshakeError::Target));
        assert!(Upgrade::with_nonce("h", "/café", &[], &NONCE).is_ok());
        let bad_host = Upgrade::with_nonce("h\r\nX: y", "/", &[], &NONCE);
        assert!(matches!(bad_host, Err(HandshakeError::Target)));
        for (name, value) in [
            ("X-Wsgate-Sub", "a\r\nX-Wsgate-Sub: root"),
            ("X-Wsgate-Sub", "é"),
            ("X-Wsgate-Sub", "nul\0"),
            ("Bad Name", "v"),
            ("", "v"),
        ] {
            match bad("/", &[(name, value)]) {
                HandshakeError::Header(n) => assert_eq!(n, name),
                e => panic!("{name}: {value:?}: {e}"),
            }
        }
        assert!(is_header_value("Bearer v4.local.x\t ~"));
        assert!(!is_header_value("a\nb"));
    }

    #[test]
    fn accepts_a_proper_101_incrementally() {
        let u = upgrade(&[]);
        let full = answer("");
        for cut in 0..full.len() {
            assert!(
                matches!(u.check_answer(&full.as_bytes()[..cut]), Ok(None)),
                "cut {cut}"
            );
        }
        let mut with_data = full.clone().into_bytes();
        with_data.extend_from_slice(b"\x81\x02hi");
        assert_eq!(u.check_answer(&with_data).unwrap(), Some(full.len()));
        // Header names and `Upgrade`/`Connection` values in any case, `Connection` a list.
        let loose = format!(
            "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
             sec-websocket-accept: {ACCEPT}\r\n\r\n"
        );
        assert!(u.check_answer(loose.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn refuses_a_bad_101() {
        let u = upgrade(&[]);
        let check = |a: &str| u.check_answer(a.as_bytes()).unwrap_err().to_string();
        let wrong = answer("").replace(ACCEPT, "s3pPLMBiTxaQ9kYGzzhZRbK+xOA=");
        assert_eq!(check(&wrong), "bad 101: wrong Sec-WebSocket-Accept");
        let no_accept = answer("").replace("Sec-WebSocket-Accept", "X-Accept");
        assert_eq!(check(&no_accept), "bad 101: wrong Sec-WebSocket-Accept");
        let no_upgrade = answer("").replace("Upgrade: websocket", "Upgrade: h2c");
        assert_eq!(check(&no_upgrade), "bad 101: no `Upgrade: websocket`");
        let no_conn = answer("").replace("Connection: Upgrade", "Connection: close");
        assert_eq!(check(&no_conn), "bad 101: no `Connection: upgrade`");
        let http10 = answer("").replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(check(&http10), "bad 101: not HTTP/1.1");
        assert_eq!(
            check(&answer("Sec-WebSocket-Protocol: wsgate\r\n")),
            "bad 101: subprotocol not offered"
        );
        assert_eq!(check("garbage\r\n\r\n"), "answer is not HTTP/1.x");
    }

    #[test]
    fn subprotocol_must_be_one_offered() {
        let u = upgrade(&[("Sec-WebSocket-Protocol", "wsgate, v4.local.x")]);
        let ok = answer("Sec-WebSocket-Protocol: wsgate\r\n");
        assert!(u.check_answer(ok.as_bytes()).unwrap().is_some());
        let other = answer("Sec-WebSocket-Protocol: chat\r\n");
        assert!(matches!(
            u.check_answer(other.as_bytes()),
            Err(HandshakeError::Invalid(_))
        ));
        assert!(matches!(
            u.check_answer(answer("").as_bytes()),
            Err(HandshakeError::Invalid(_))
        ));
    }

    #[test]
    fn other_statuses_are_returned() {
        let u = upgrade(&[]);
        for (head, code) in [
            (
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                401,
            ),
            (
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n",
                503,
            ),
            ("HTTP/1.0 200 OK\r\n\r\n", 200),
        ] {
            assert!(
                matches!(u.check_answer(head.as_bytes()), Err(HandshakeError::Status(c)) if c == code),
                "{head}"
            );
        }
    }

    #[test]
    fn answer_head_is_bounded() {
        let u = upgrade(&[]);
        // Exactly the bound: fine.
        let mut head = answer("X-Pad: ").into_bytes();
        head.truncate(head.len() - 2);
        let fill = MAX_ANSWER_HEAD - head.len() - 4;
        head.extend(std::iter::repeat_n(b'a', fill));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_ANSWER_HEAD);
        assert_eq!(u.check_answer(&head).unwrap(), Some(MAX_ANSWER_HEAD));
        // One byte over, complete or not: too large.
        let mut over = head.clone();
        over.insert(MAX_ANSWER_HEAD - 10, b'a');
        assert!(matches!(
            u.check_answer(&over),
            Err(HandshakeError::TooLarge)
        ));
        let endless = vec![b'a'; MAX_ANSWER_HEAD];
        let mut partial = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        partial.extend_from_slice(&endless[partial.len()..]);
        assert!(matches!(
            u.check_answer(&partial),
            Err(HandshakeError::TooLarge)
        ));
        let mut many = b"HTTP/1.1 101 OK\r\n".to_vec();
        for i in 0..=crate::head::MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            u.check_answer(&many),
            Err(HandshakeError::TooLarge)
        ));
    }

    #[test]
    fn parses_ws_urls() {
        let u = WsUrl::parse("ws://127.0.0.1:8080/ws?x=1").unwrap();
        assert_eq!(
            (u.authority(), u.host(), u.port(), u.path()),
            ("127.0.0.1:8080", "127.0.0.1", 8080, "/ws?x=1")
        );
        let u = WsUrl::parse("WS://example.com").unwrap();
        assert_eq!(
            (u.authority(), u.port(), u.path()),
            ("example.com", 80, "/")
        );
        assert_eq!(u.to_string(), "ws://example.com/");
        let u = WsUrl::parse("ws://[::1]:9/x/").unwrap();
        assert_eq!((u.authority(), u.host(), u.port()), ("[::1]:9", "::1", 9));
        assert_eq!(u.to_string(), "ws://[::1]:9/x/");
        let u = WsUrl::parse("ws://[::1]").unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 80));
        let u = WsUrl::parse("ws://h:1?q").unwrap();
        assert_eq!(u.path(), "/?q");
        let u = WsUrl::parse("ws://h/a%20b/@x:y;z=1?k=v&l=%2F").unwrap();
        assert_eq!(u.path(), "/a%20b/@x:y;z=1?k=v&l=%2F");
    }

    #[test]
    fn wss_needs_the_tls_feature() {
        let parsed = WsUrl::parse("wss://h/x");
        #[cfg(feature = "tls")]
        {
            let u = parsed.unwrap();
            assert_eq!((u.host(), u.port(), u.is_tls()), ("h", 443, true));
            assert_eq!(u.to_string(), "wss://h/x");
            let u = WsUrl::parse("WSS://h:8443").unwrap();
            assert_eq!((u.port(), u.path()), (8443, "/"));
        }
        #[cfg(not(feature = "tls"))]
        assert_eq!(
            parsed.unwrap_err(),
            "wss://: this build has no TLS (feature \"tls\"); use ws://"
        );
        assert!(!WsUrl::parse("ws://h/").unwrap().is_tls());
    }

    #[test]
    fn refuses_other_urls() {
        for (bad, why) in [
            ("h:80", "expected a URL like ws://127.0.0.1:9000/path"),
            ("http://h/", "expected a URL like ws://127.0.0.1:9000/path"),
            ("ws://", "no host"),
            ("ws://:80/", "no host"),
            ("ws://[]:80/", "no host"),
            ("ws://h:0/", "bad port"),
            ("ws://h:65536/", "bad port"),
            ("ws://h:+80/", "bad port"),
            ("ws://h:/", "bad port"),
            ("ws://h:x/", "bad port"),
            ("ws://[::1]x/", "bad port"),
            ("ws://[::1/", "unclosed `[`"),
            ("ws://[::g]/", "bad IPv6 address"),
            ("ws://a:b:1/", "bad host"),
            ("ws://a%20b/", "bad host"),
            ("ws://u@h/", "no user info allowed"),
            ("ws://h/a#f", "no fragment allowed"),
            (
                "ws://h/a b",
                "spaces and non-ASCII characters are not allowed",
            ),
            (
                "ws://h/a<b",
                "bad character in the path (percent-encode it)",
            ),
            (
                "ws://h/?q={}",
                "bad character in the path (percent-encode it)",
            ),
            (
                "ws://h/é",
                "spaces and non-ASCII characters are not allowed",
            ),
        ] {
            assert_eq!(WsUrl::parse(bad), Err(why), "{bad}");
        }
    }
}
