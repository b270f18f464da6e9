//! Sans-IO HTTP/1.1 request-head parsing with hard bounds, and the few responses
//! wsgate writes. Owning the head lets the server answer 401/403/404/426/431/503
//! and serve endpoints before any WebSocket machinery runs.

use std::borrow::Cow;

use sha1::{Digest as _, Sha1};

/// Largest request head accepted, request line through the blank line
/// (`docs/protocol.md#order-of-checks`).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted; more is answered like an oversized head (431).
pub const MAX_HEADERS: usize = 100;

/// Why a head could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines: 431.
    TooLarge,
    /// Not HTTP/1.x: 400.
    Malformed,
    /// A header that must be single appears twice (RFC 9110 §5.3; for `Host`, RFC
    /// 9112 §3.2): 400. Which one wins would be a guess, and the Origin rule compares
    /// `Origin` with `Host`.
    Duplicate(&'static str),
}

/// Headers that may appear once only; any of them twice is a 400.
pub const SINGLE_HEADERS: [&str; 6] = [
    "host",
    "origin",
    "authorization",
    "sec-websocket-key",
    "sec-websocket-version",
    "content-length",
];

/// The first of [`SINGLE_HEADERS`] that `headers` holds more than once.
fn duplicated(headers: &[httparse::Header<'_>]) -> Option<&'static str> {
    SINGLE_HEADERS.into_iter().find(|name| {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .nth(1)
            .is_some()
    })
}

/// A parsed request head, borrowing the bytes it was read from.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The request target as sent: path and query.
    pub target: &'a str,
    /// The minor HTTP version: `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    headers: &'a [httparse::Header<'a>],
}

/// Storage for the headers of one [`Request`].
pub type HeaderStorage<'a> = [httparse::Header<'a>; MAX_HEADERS];

/// Empty storage for [`parse`].
pub fn header_storage<'a>() -> HeaderStorage<'a> {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

/// Parses a request head from the start of `buf`: `Ok(None)` until it is complete,
/// then the request and the number of bytes the head took.
pub fn parse<'a>(
    buf: &'a [u8],
    storage: &'a mut HeaderStorage<'a>,
) -> Result<Option<(Request<'a>, usize)>, HeadError> {
    let mut req = httparse::Request::new(storage);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => {
            let (Some(method), Some(target), Some(minor_version)) =
                (req.method, req.path, req.version)
            else {
                return Err(HeadError::Malformed);
            };
            // Origin form only (`/path?query`): an absolute URI (`http://host/x`, which
            // only proxies are sent) or `*` would reach paths, `--path` and an upstream's
            // target as something else than a path.
            if !target.starts_with('/') {
                return Err(HeadError::Malformed);
            }
            if let Some(name) = duplicated(req.headers) {
                return Err(HeadError::Duplicate(name));
            }
            Ok(Some((
                Request {
                    method,
                    target,
                    minor_version,
                    headers: req.headers,
                },
                n,
            )))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) if buf.len() > MAX_HEAD => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Whether `buf` holds the blank line that ends a request head, looking at the bytes
/// from `from` on (a reader passes where its previous look ended, less 3 bytes, and so
/// scans each byte about once). Empty lines before the request line do not count:
/// [`parse`] skips them (RFC 9112 §2.2). Once this is true, [`parse`] of `buf` answers
/// the request or an error, never `Ok(None)`: a reader parses the head once.
pub fn has_end(buf: &[u8], from: usize) -> bool {
    let start = buf
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(buf.len());
    let tail = buf.get(from.max(start)..).unwrap_or_default();
    tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n")
}

/// A port as an authority writes it (RFC 3986 §3.2.3): ASCII digits only, so no sign
/// or space (`+80` is not a port, though Rust's integer parsing takes it), at most
/// 65535. The one port parser: `Host`/`Origin` comparison, upstream URLs, `--listen`,
/// `--redis`.
pub fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Splits an authority (RFC 3986 §3.2.2–3.2.3, user info already taken off) into its
/// host as written and the text after the `:` that ends it, if any (`""` for
/// `host:`), for [`parse_port`]. A host that starts with `[` (an IPv6 literal) ends
/// at its first `]`, brackets kept, and only `:port` may follow it; any other host
/// ends at the last `:`. The one splitter: the Origin rule (`Host`, `Origin`),
/// `ws://` URLs and `--redis`; what a host may hold, and the default port, are each
/// caller's.
pub fn split_authority(a: &str) -> Result<(&str, Option<&str>), AuthorityError<'_>> {
    if a.starts_with('[') {
        let end = a.find(']').ok_or(AuthorityError::Unclosed)?;
        let (host, rest) = a.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(AuthorityError::AfterLiteral(rest)),
        };
    }
    Ok(match a.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (a, None),
    })
}

/// Why [`split_authority`] refused an authority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorityError<'a> {
    /// A `[` without its `]`.
    Unclosed,
    /// What follows an IPv6 literal's `]` when it is not `:port`.
    AfterLiteral(&'a str),
}

#[inline]
fn value_str(v: &[u8]) -> &str {
    // A value that is not UTF-8 becomes U+FFFD: never a valid token, origin or cookie.
    std::str::from_utf8(v).unwrap_or("\u{fffd}")
}

impl<'a> Request<'a> {
    /// Parses a complete head (for tests and fuzzing); `None` if incomplete or bad.
    pub fn parse_complete(
        buf: &'a [u8],
        storage: &'a mut HeaderStorage<'a>,
    ) -> Option<Request<'a>> {
        parse(buf, storage).ok().flatten().map(|(r, _)| r)
    }

    /// The first header named `name` (ASCII case-insensitive).
    #[inline]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers_named(name).next()
    }

    /// Every header named `name`, in order.
    #[inline]
    pub fn headers_named<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let headers: &'a [httparse::Header<'a>] = self.headers;
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| value_str(h.value))
    }

    /// Every value of the headers named `name` that is not UTF-8, as bytes (the
    /// accessors above show such a value as U+FFFD).
    pub fn non_utf8_values<'n>(
        &self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let headers: &'a [httparse::Header<'a>] = self.headers;
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .filter(|v| std::str::from_utf8(v).is_err())
    }

    /// Every header as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let headers: &'a [httparse::Header<'a>] = self.headers;
        headers.iter().map(|h| (h.name, value_str(h.value)))
    }

    /// The path: the target before `?`.
    #[inline]
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The query, without `?`.
    #[inline]
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// Whether this asks for a WebSocket: `Upgrade: websocket` and `Connection: upgrade`.
    #[inline]
    pub fn is_upgrade(&self) -> bool {
        self.lists("upgrade", b"websocket") && self.lists("connection", b"upgrade")
    }

    /// Whether a header named `name` lists `token` (comma-separated, any case), read as
    /// bytes: no UTF-8 check for an ASCII token.
    fn lists(&self, name: &str, token: &[u8]) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    }

    /// The `Sec-WebSocket-Key`, when the upgrade is well-formed (an HTTP/1.1 `GET`,
    /// WebSocket version 13: RFC 6455 §4.2.1).
    pub fn websocket_key(&self) -> Result<&'a str, UpgradeError> {
        if self.method != "GET" {
            return Err(UpgradeError::Method);
        }
        if self.minor_version < 1 {
            return Err(UpgradeError::HttpVersion);
        }
        if self.header("sec-websocket-version").map(str::trim) != Some("13") {
            return Err(UpgradeError::Version);
        }
        match self.header("sec-websocket-key").map(str::trim) {
            Some(k) if is_key(k) => Ok(k),
            _ => Err(UpgradeError::Key),
        }
    }
}

/// Whether `k` is the base64 of 16 bytes, as RFC 6455 §4.1 wants the key: 22
/// characters of the standard alphabet, the last of which carries no bit past the
/// 128th (`A`, `Q`, `g` or `w`), then `==`. Checked, not decoded (the key is public;
/// the decoder is constant-time and costs ~1 800 instructions a handshake); the
/// unit test `key_check_agrees_with_the_decoder` holds the two together.
fn is_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

/// An upgrade request that is not a valid WebSocket handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Not `GET`: 400.
    Method,
    /// HTTP/1.0 (a WebSocket handshake is HTTP/1.1): 400.
    HttpVersion,
    /// `Sec-WebSocket-Version` is not 13: 426 with `Sec-WebSocket-Version: 13`.
    Version,
    /// Missing or malformed `Sec-WebSocket-Key`: 400.
    Key,
}

/// Decodes `%XX` escapes. `None` for a bad escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The reason phrase for the statuses wsgate sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete HTTP response that closes the connection: status line, `headers`,
/// `Content-Length`, `Connection: close`, then `body` (omitted for `HEAD` by the caller).
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8], send_body: bool) -> Vec<u8> {
    // Pushed piece by piece: `write!` cost ~1 900 instructions a response.
    let mut s = String::with_capacity(128 + headers.len() * 40);
    s.push_str("HTTP/1.1 ");
    crate::digits::push_decimal(&mut s, u64::from(status));
    s.push(' ');
    s.push_str(reason_phrase(status));
    s.push_str("\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: ");
    crate::digits::push_decimal(&mut s, body.len() as u64);
    s.push_str("\r\nConnection: close\r\n\r\n");
    let mut out = s.into_bytes();
    if send_body {
        out.extend_from_slice(body);
    }
    out
}

/// `answer` as the answer to a request made with `method`: for `HEAD`, the head alone,
/// as a `GET` would get it (its `Content-Length` included), whatever the status.
pub fn for_method(method: &str, mut answer: Vec<u8>) -> Vec<u8> {
    if method == "HEAD" {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            answer.truncate(end + 4);
        }
    }
    answer
}

/// A plain-text response (`text/plain; charset=utf-8`).
pub fn text_response(status: u16, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut headers = Vec::with_capacity(extra.len() + 1);
    headers.push(("Content-Type", "text/plain; charset=utf-8"));
    headers.extend_from_slice(extra);
    response(status, &headers, body.as_bytes(), true)
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2):
/// base64 of the SHA-1 of the key followed by the protocol's GUID. The server's `101`
/// carries it; the upstream client checks the upstream's `101` against it.
///
/// ```
/// assert_eq!(
///     wsgate::head::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
///     "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
/// );
/// ```
pub fn accept_key(key: &str) -> String {
    let mut s = String::with_capacity(28);
    push_accept_key(&mut s, key);
    s
}

/// Appends [`accept_key`] of `key` to `out`. The digest of a public key is public: a
/// plain table lookup (RFC 4648 §4) takes ~500 instructions where the constant-time
/// encoder the keys need took ~1 800 per handshake.
fn push_accept_key(out: &mut String, key: &str) {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    let digest: [u8; 20] = sha1.finalize().into();
    // Six groups of three bytes, then two bytes and one `=`.
    let mut chunks = digest.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        for shift in [18, 12, 6, 0] {
            out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
        }
    }
    if let [a, b] = *chunks.remainder() {
        let n = u32::from(a) << 16 | u32::from(b) << 8;
        for shift in [18, 12, 6] {
            out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
        }
        out.push('=');
    }
}

/// The `101 Switching Protocols` answer to `key`, with an optional subprotocol.
pub fn switching_protocols(key: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut s = String::with_capacity(160);
    s.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    push_accept_key(&mut s, key);
    if let Some(p) = protocol {
        s.push_str("\r\nSec-WebSocket-Protocol: ");
        s.push_str(p);
    }
    s.push_str("\r\n\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_then_complete() {
        let full = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\nrest";
        for cut in 0..full.len() - 5 {
            let mut st = header_storage();
            assert_eq!(
                parse(&full[..cut], &mut st).map(|o| o.is_some()),
                Ok(false),
                "cut {cut}"
            );
        }
        let mut st = header_storage();
        let (req, n) = parse(full, &mut st).unwrap().unwrap();
        assert_eq!(&full[n..], b"rest");
        assert_eq!(req.path(), "/ws");
        assert_eq!(req.query(), Some("x=1"));
        assert_eq!(req.header("HOST"), Some("a"));
        assert!(req.is_upgrade());
    }

    /// `Upgrade` and `Connection` are comma-separated lists in any case, possibly over
    /// several lines; a token must match whole.
    #[test]
    fn upgrade_tokens_are_list_members() {
        let cases: &[(&[u8], bool)] = &[
            (b"Upgrade: websocket\r\nConnection: Upgrade", true),
            (
                b"Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade",
                true,
            ),
            (
                b"Upgrade: h2c , websocket \r\nConnection: upgrade,close",
                true,
            ),
            (
                b"Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: Upgrade",
                true,
            ),
            (b"Upgrade: websocket\r\nConnection: \xff, Upgrade", true),
            (b"Upgrade: websocket\r\nConnection: keep-alive", false),
            (b"Upgrade: websockets\r\nConnection: Upgrade", false),
            (b"Upgrade: web socket\r\nConnection: Upgrade", false),
            (b"Upgrade: websocket\r\nConnection: upgradex", false),
            (b"Connection: Upgrade", false),
            (b"Upgrade: websocket", false),
        ];
        for (headers, want) in cases {
            let mut head = b"GET / HTTP/1.1\r\n".to_vec();
            head.extend_from_slice(headers);
            head.extend_from_slice(b"\r\n\r\n");
            let mut st = header_storage();
            let (req, _) = parse(&head, &mut st).unwrap().unwrap();
            assert_eq!(
                req.is_upgrade(),
                *want,
                "{}",
                String::from_utf8_lossy(headers)
            );
        }
    }

    #[test]
    fn responses_are_written_whole() {
        let r = response(
            431,
            &[("Vary", "Origin"), ("Retry-After", "1")],
            b"too big\n",
            true,
        );
        assert_eq!(
            r,
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nVary: Origin\r\nRetry-After: 1\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n"
        );
        let head_only = response(200, &[], b"xy", false);
        assert_eq!(
            head_only,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        // Any answer to HEAD is its head, an error's too.
        let r = text_response(426, &[], "this is a WebSocket endpoint\n");
        let head = for_method("HEAD", r.clone());
        assert!(head.ends_with(b"Content-Length: 29\r\nConnection: close\r\n\r\n"));
        assert_eq!(&r[..head.len()], &head[..]);
        assert_eq!(for_method("GET", r.clone()), r);
    }

    #[test]
    fn end_seen_means_parsed() {
        let full = b"\r\nGET /ws HTTP/1.1\r\nHost: a\r\n\r\nrest";
        for cut in 0..full.len() {
            let seen = has_end(&full[..cut], cut.saturating_sub(7));
            let mut st = header_storage();
            let parsed = parse(&full[..cut], &mut st).map(|o| o.is_some());
            assert_eq!(seen, parsed == Ok(true), "cut {cut}");
        }
        // Every sequence of these pieces, up to five long: wherever the end is seen,
        // `parse` decides (a request or an error), as a reader that parses once needs.
        let pieces: [&[u8]; 9] = [
            b"\r\n",
            b"\n",
            b"\r",
            b"GET / HTTP/1.1",
            b"Host: a",
            b" x",
            b":",
            b"G",
            b"\r\n\r\n",
        ];
        let mut buf = Vec::new();
        for mut i in 0..pieces.len().pow(5) {
            buf.clear();
            for _ in 0..5 {
                buf.extend_from_slice(pieces[i % pieces.len()]);
                i /= pieces.len();
            }
            let mut st = header_storage();
            if has_end(&buf, 0) {
                assert!(
                    !matches!(parse(&buf, &mut st), Ok(None)),
                    "{:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
        }
        assert!(!has_end(b"\r\n\r\n\n\n", 0));
        assert!(has_end(b"GET / HTTP/1.1\n\n", 0));
    }

    #[test]
    fn ports_are_digits_only() {
        assert_eq!(parse_port("80"), Some(80));
        assert_eq!(parse_port("065535"), Some(65535));
        assert_eq!(parse_port("0"), Some(0));
        for bad in ["", "+80", "-1", " 80", "80 ", "65536", "8O", "0x50"] {
            assert_eq!(parse_port(bad), None, "{bad:?}");
        }
    }

    /// One table for the splitter and its callers, each row: an authority; what the
    /// splitter returns (`host :port`, the port's text as written); the host and port of
    /// a `ws://` URL (`client::WsUrl`: brackets off, 80 by default, a port from 1, a
    /// host of RFC 3986 characters) or its error; those the Origin rule compares for a
    /// `Host` on a TLS listener (brackets kept, 443 by default, a port from 0, any
    /// host).
    #[test]
    fn authorities() {
        let split = |a| match split_authority(a) {
            Ok((host, Some(port))) => format!("{host} :{port}"),
            Ok((host, None)) => host.to_owned(),
            Err(e) => format!("{e:?}"),
        };
        let url = |a| match crate::client::WsUrl::parse(&format!("ws://{a}/")) {
            Ok(u) => format!("{} {}", u.host(), u.port()),
            Err(e) => e.to_owned(),
        };
        let origin = |a| match crate::auth::split_authority(a) {
            Some((host, port)) => format!("{host} {}", port.unwrap_or(443)),
            None => "refused".to_owned(),
        };
        for (a, by_split, by_url, by_origin) in [
            ("[::1]:80", "[::1] :80", "::1 80", "[::1] 80"),
            ("[::1]", "[::1]", "::1 80", "[::1] 443"),
            (
                "[::FFFF:1.2.3.4]:08080",
                "[::FFFF:1.2.3.4] :08080",
                "::FFFF:1.2.3.4 8080",
                "[::FFFF:1.2.3.4] 8080",
            ),
            (
                "Host.EXAMPLE:8080",
                "Host.EXAMPLE :8080",
                "Host.EXAMPLE 8080",
                "Host.EXAMPLE 8080",
            ),
            ("host", "host", "host 80", "host 443"),
            ("host:065535", "host :065535", "host 65535", "host 65535"),
            ("host:+80", "host :+80", "bad port", "refused"),
            ("host:", "host :", "bad port", "refused"),
            ("host:0", "host :0", "bad port", "host 0"),
            (
                "host: 80",
                "host : 80",
                "spaces and non-ASCII characters are not allowed",
                "refused",
            ),
            ("[::1]:", "[::1] :", "bad port", "refused"),
            ("[::1]x", r#"AfterLiteral("x")"#, "bad port", "refused"),
            (
                "[::1]]:80",
                r#"AfterLiteral("]:80")"#,
                "bad port",
                "refused",
            ),
            ("[::1", "Unclosed", "unclosed `[`", "refused"),
            ("[]", "[]", "no host", "[] 443"),
            (":80", " :80", "no host", " 80"),
            ("a:b:80", "a:b :80", "bad host", "a:b 80"),
            ("a]:80", "a] :80", "bad host", "a] 80"),
            ("", "", "no host", "refused"),
            ("u@host", "u@host", "no user info allowed", "refused"),
        ] {
            assert_eq!(
                (split(a), url(a), origin(a)),
                (by_split.into(), by_url.into(), by_origin.into()),
                "{a}"
            );
        }
    }

    #[test]
    fn bounds() {
        let mut head = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
        let fill = MAX_HEAD - head.len() - 4;
        head.extend(std::iter::repeat_n(b'a', fill));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_HEAD);
        let mut st = header_storage();
        assert!(
            parse(&head, &mut st).unwrap().is_some(),
            "exactly the limit is fine"
        );
        let mut over = head.clone();
        over.insert(20, b'a');
        let mut st = header_storage();
        assert_eq!(parse(&over, &mut st).unwrap_err(), HeadError::TooLarge);
        let mut partial = b"GET / HTTP/1.1\r\nX: ".to_vec();
        partial.resize(MAX_HEAD, b'a');
        let mut st = header_storage();
        assert_eq!(parse(&partial, &mut st).unwrap_err(), HeadError::TooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut st = header_storage();
        assert_eq!(parse(&many, &mut st).unwrap_err(), HeadError::TooLarge);
        let mut st = header_storage();
        assert_eq!(
            parse(b"\x00\x01 garbage\r\n\r\n", &mut st).unwrap_err(),
            HeadError::Malformed
        );
        // Origin form only: no absolute URI, no `*`.
        for target in ["http://evil.example/x", "ws://a/", "*", "x/y"] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            let mut st = header_storage();
            assert_eq!(
                parse(head.as_bytes(), &mut st).unwrap_err(),
                HeadError::Malformed,
                "{target}"
            );
        }
    }

    #[test]
    fn single_headers_twice_are_refused() {
        let base = "GET / HTTP/1.1\r\nHost: a\r\n";
        for (extra, dup) in [
            ("Host: b\r\n", Some("host")),
            ("Origin: http://a\r\nORIGIN: http://b\r\n", Some("origin")),
            (
                "Authorization: Bearer x\r\nauthorization: Bearer y\r\n",
                Some("authorization"),
            ),
            (
                "Sec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\n",
                Some("sec-websocket-key"),
            ),
            (
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
                Some("sec-websocket-version"),
            ),
            (
                "Content-Length: 0\r\nContent-Length: 5\r\n",
                Some("content-length"),
            ),
            // Lists may repeat.
            ("Cookie: a=1\r\nCookie: b=2\r\n", None),
            (
                "Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: b\r\n",
                None,
            ),
        ] {
            let raw = format!("{base}{extra}\r\n");
            let mut storage = header_storage();
            let got = parse(raw.as_bytes(), &mut storage).map(|_| ());
            match dup {
                Some(name) => assert_eq!(got, Err(HeadError::Duplicate(name)), "{extra:?}"),
                None => assert_eq!(got, Ok(()), "{extra:?}"),
            }
        }
    }

    /// [`is_key`] accepts exactly what decoding to 16 bytes accepts: every
    /// character in every position of a valid key, and the lengths and paddings
    /// around it.
    #[test]
    fn key_check_agrees_with_the_decoder() {
        use ct_codecs::{Base64, Decoder as _};
        let decodes = |k: &str| {
            k.len() == 24 && Base64::decode(&mut [0u8; 16], k, None).is_ok_and(|b| b.len() == 16)
        };
        let valid = *b"dGhlIHNhbXBsZSBub25jZQ==";
        let mut cases = vec![
            String::new(),
            "dGhlIHNhbXBsZSBub25jZQ=".into(),
            "dGhlIHNhbXBsZSBub25jZQ===".into(),
            "dGhlIHNhbXBsZSBub25jZQ".into(),
            "dGhlIHNhbXBsZSBub25jZQAA".into(),
            "dGhlIHNhbXBsZSBub25jZQ=A".into(),
            "dGhlIHNhbXBsZSBub25jZ===".into(),
        ];
        for pos in 0..24 {
            for c in 0u8..=255 {
                let mut k = valid;
                k[pos] = c;
                if let Ok(k) = std::str::from_utf8(&k) {
                    cases.push(k.to_owned());
                }
            }
        }
        for k in &cases {
            assert_eq!(is_key(k), decodes(k), "{k:?}");
        }
        assert!(cases.iter().filter(|k| is_key(k)).count() > 24 * 3);
    }

    #[test]
    fn websocket_key_rules() {
        const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        for (head, want) in [
            (
                format!("GET / HTTP/1.1\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"),
                Ok("dGhlIHNhbXBsZSBub25jZQ=="),
            ),
            (
                format!("GET / HTTP/1.1\r\nSec-WebSocket-Version: 8\r\n{KEY}\r\n"),
                Err(UpgradeError::Version),
            ),
            (
                format!("GET / HTTP/1.0\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"),
                Err(UpgradeError::HttpVersion),
            ),
            (
                "GET / HTTP/1.1\r\nSec-WebSocket-Version: 13\r\n\r\n".to_owned(),
                Err(UpgradeError::Key),
            ),
        ] {
            let mut st = header_storage();
            let r = Request::parse_complete(head.as_bytes(), &mut st).unwrap();
            assert_eq!(r.websocket_key(), want, "{head:?}");
        }
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        let r = String::from_utf8(switching_protocols(
            "dGhlIHNhbXBsZSBub25jZQ==",
            Some("wsgate"),
        ))
        .unwrap();
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(r.ends_with("Sec-WebSocket-Protocol: wsgate\r\n\r\n"));
    }

    /// The plain encoder of the accept key against the constant-time one, over
    /// digests of 2 000 keys (every byte value lands in every position of a group).
    #[test]
    fn accept_key_encoder_agrees_with_ct_codecs() {
        use ct_codecs::{Base64, Encoder as _};
        const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        for i in 0..2000u32 {
            let key = format!("key-{i}");
            let mut sha1 = Sha1::new();
            sha1.update(key.as_bytes());
            sha1.update(GUID);
            let want = Base64::encode_to_string(sha1.finalize()).unwrap();
            assert_eq!(accept_key(&key), want, "{key}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2e%2E%2fb").as_deref(), Some("a../b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
