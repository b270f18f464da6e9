//! One connection of the load generator: connect (TCP, then TLS for `wss://`), fetch a
//! ticket for method `ticket`, upgrade with the token where the method puts it, send
//! the first message for method `message`, echo once, close; each phase timed, each
//! failure named by its kind.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use smol::Timer;
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;
use smol::stream::StreamExt as _;
use wsgate::BoxedConnection;
use wsgate::client::{self, HandshakeError, Upgrade, WsUrl};

use super::{BenchMethod, Credentials};

/// Largest `POST /ticket` answer read (the ticket JSON is a few hundred bytes).
const MAX_TICKET_ANSWER: usize = 16 * 1024;

/// The message echoed once per connection.
const ECHO_PAYLOAD: &str = "wsgate bench: echo this back, please";

/// When each phase of [`super::report::PHASES`] was reached, since the connection began.
#[derive(Default)]
pub(super) struct Times(pub(super) [Option<Duration>; 5]);

impl Times {
    pub(super) fn mark(&mut self, phase: usize, start: Instant) {
        self.0[phase] = Some(start.elapsed());
    }
}

pub(super) type Ws = WebSocketStream<BoxedConnection>;

/// Why one connection failed: the kind it is counted under in the report.
pub(super) struct Failure {
    pub(super) kind: String,
}

impl Failure {
    pub(super) fn new(kind: impl Into<String>) -> Failure {
        Failure { kind: kind.into() }
    }
}

fn ws_failure(stage: &str, e: WsError) -> Failure {
    match e {
        WsError::Io(e) => Failure::new(format!("{stage}: {}", io_kind(&e))),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            Failure::new(format!("{stage}: connection closed"))
        }
        WsError::Protocol(p) => Failure::new(format!("{stage}: protocol: {p}")),
        other => Failure::new(format!("{stage}: {other}")),
    }
}

fn io_kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        std::io::ErrorKind::AddrNotAvailable => "address not available (ports exhausted?)".into(),
        _ if e.raw_os_error() == Some(24) => "too many open files (raise ulimit -n)".into(),
        k => format!("{k}"),
    }
}

/// What every connection does: where, how it presents its token, with what bounds.
pub(super) struct Plan {
    pub(super) url: WsUrl,
    pub(super) addr: SocketAddr,
    pub(super) method: BenchMethod,
    pub(super) credentials: Credentials,
    pub(super) sub: String,
    pub(super) ttl: i64,
    pub(super) cookie: String,
    pub(super) timeout: Duration,
    pub(super) ws_config: WebSocketConfig,
    #[cfg(feature = "tls")]
    pub(super) tls: Option<wsgate::internal::TlsClient>,
}

impl Plan {
    fn token(&self) -> Result<String, Failure> {
        match &self.credentials {
            Credentials::Token(t) => Ok(t.clone()),
            Credentials::Mint(key) => {
                let claims = wsgate::claims_json(
                    &self.sub,
                    wsgate::unix_now(),
                    self.ttl,
                    None,
                    None,
                    None,
                    &[],
                );
                key.issue(&claims).map_err(|_| Failure::new("mint token"))
            }
        }
    }

    /// TCP, then TLS for a `wss://` URL (the `connect` phase covers both).
    async fn connect(&self) -> Result<BoxedConnection, Failure> {
        let s = TcpStream::connect(self.addr)
            .await
            .map_err(|e| Failure::new(format!("connect: {}", io_kind(&e))))?;
        let _ = s.set_nodelay(true);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return tls.connect(self.url.host(), s).await.map_err(|e| {
                Failure::new(format!("tls: {}", wsgate::internal::handshake_reason(&e)))
            });
        }
        Ok(Box::new(s))
    }

    /// `POST /ticket` with the token as Bearer; the ticket from the JSON answer.
    async fn fetch_ticket(&self, token: &str) -> Result<String, Failure> {
        let mut s = self.connect().await?;
        let req = format!(
            "POST /ticket HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.url.authority()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| Failure::new(format!("ticket: {}", io_kind(&e))))?;
        #[derive(serde::Deserialize)]
        struct Answer {
            ticket: String,
        }
        let mut answer = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| Failure::new(format!("ticket: {}", io_kind(&e))))?;
            let ended = n == 0 || answer.len() + n > MAX_TICKET_ANSWER;
            if !ended {
                answer.extend_from_slice(&chunk[..n]);
            }
            let mut storage = wsgate::head::header_storage();
            let (status, head_len, length) = match client::parse_answer(&answer, &mut storage) {
                Ok(Some((a, len))) => (a.status, len, a.header("content-length")),
                Ok(None) if !ended => continue,
                _ => return Err(Failure::new("ticket: no HTTP answer")),
            };
            if status != 200 {
                return Err(Failure::new(format!("ticket: http {status}")));
            }
            let body = &answer[head_len..];
            // Stop as soon as the whole body is there (the server half-closes anyway).
            let length = length.and_then(|l| l.parse::<usize>().ok());
            if !ended && length.is_none_or(|l| body.len() < l) {
                continue;
            }
            let body = &body[..length.map_or(body.len(), |l| l.min(body.len()))];
            return serde_json::from_slice::<Answer>(body)
                .map(|a| a.ticket)
                .map_err(|_| Failure::new("ticket: answer is not {\"ticket\":…}"));
        }
    }

    async fn upgrade(&self, stream: BoxedConnection, token: Option<&str>) -> Result<Ws, Failure> {
        let header = token.and_then(|token| match self.method {
            BenchMethod::Header | BenchMethod::Ticket => {
                Some(("Authorization", format!("Bearer {token}")))
            }
            BenchMethod::Protocol => Some(("Sec-WebSocket-Protocol", format!("wsgate, {token}"))),
            BenchMethod::Cookie => Some(("Cookie", format!("{}={token}", self.cookie))),
            BenchMethod::Message => None,
        });
        let header = header.as_ref().map(|(name, value)| (*name, value.as_str()));
        let upgrade = Upgrade::new(self.url.authority(), self.url.path(), header.as_slice())
            .map_err(|e| match e {
                HandshakeError::Header(_) => Failure::new("token is not a header value"),
                e => Failure::new(e.to_string()),
            })?;
        client::handshake(stream, &upgrade, self.ws_config)
            .await
            .map_err(|e| match e {
                HandshakeError::Status(code) => Failure::new(format!("http {code}")),
                HandshakeError::Io(e) => Failure::new(format!("upgrade: {}", io_kind(&e))),
                e => Failure::new(format!("upgrade: {e}")),
            })
    }

    /// Opens an authenticated session, marking the phases up to `authenticated`.
    pub(super) async fn open(&self, start: Instant, times: &mut Times) -> Result<Ws, Failure> {
        let token = self.token()?;
        let ticket;
        let presented = match self.method {
            BenchMethod::Ticket => {
                ticket = self.fetch_ticket(&token).await?;
                times.mark(1, start);
                Some(ticket.as_str())
            }
            BenchMethod::Message => None,
            _ => Some(token.as_str()),
        };
        let stream = self.connect().await?;
        if times.0[0].is_none() {
            times.mark(0, start);
        }
        let mut ws = self.upgrade(stream, presented).await?;
        times.mark(2, start);
        if self.method == BenchMethod::Message {
            ws.send(Message::text(token))
                .await
                .map_err(|e| ws_failure("first message", e))?;
            match next_data(&mut ws, "authenticated").await? {
                Message::Text(t) if t.as_str().starts_with(r#"{"type":"authenticated""#) => {}
                _ => return Err(Failure::new("authenticated: unexpected frame")),
            }
        }
        times.mark(3, start);
        Ok(ws)
    }

    /// One round trip: open, echo once, close.
    pub(super) async fn round_trip(&self, times: &mut Times) -> Result<(), Failure> {
        let start = Instant::now();
        let mut ws = self.open(start, times).await?;
        ws.send(Message::text(ECHO_PAYLOAD))
            .await
            .map_err(|e| ws_failure("echo", e))?;
        match next_data(&mut ws, "echo").await? {
            Message::Text(t) if t.as_str() == ECHO_PAYLOAD => {}
            _ => return Err(Failure::new("echo: wrong answer")),
        }
        times.mark(4, start);
        close(&mut ws).await;
        Ok(())
    }
}

/// The next text or binary frame; a close frame is a failure named by its code.
async fn next_data(ws: &mut Ws, stage: &str) -> Result<Message, Failure> {
    loop {
        match ws.next().await {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Close(Some(f)))) => {
                let code: u16 = f.code.into();
                return Err(Failure::new(format!("close {code} {}", f.reason)));
            }
            Some(Ok(Message::Close(None))) => return Err(Failure::new("close (no code)")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_failure(stage, e)),
            None => return Err(Failure::new(format!("{stage}: connection closed"))),
        }
    }
}

/// Closes with 1000 and waits for the server's close (bounded by the caller's timeout).
pub(super) async fn close(ws: &mut Ws) {
    if ws.close(None).await.is_ok() {
        while let Some(Ok(_)) = ws.next().await {}
    }
}

pub(super) async fn timed<T>(
    limit: Duration,
    stage: &str,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    f.or(async {
        Timer::after(limit).await;
        Err(Failure::new(format!("timeout ({stage})")))
    })
    .await
}
