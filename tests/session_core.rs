//! Session life in process: each connection is one end of a Unix socket pair handed to
//! `ServerHandle::serve_connection` (the path the listener's connections take), the
//! client is the library's own handshake (`wsgate::client`) on the other end. Keepalive,
//! expiry and its notice, buffer renewal, shutdown, `max_connections` and hostile
//! clients, with the shortest durations `Config` allows (1 s ping interval, no leeway,
//! tokens a second or two from `exp`). Every wait is bounded; the tests wait for
//! events (a frame, the end of the connection's future), never for a time.

mod common;
use common::*;

use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::unix::UnixStream;
use smol::stream::StreamExt as _;
use std::net::SocketAddr;
use std::time::Duration;
use wsgate::client::{HandshakeError, Upgrade};

/// The client's address as the server is told it.
const PEER: &str = "192.0.2.7:50000";

/// A client WebSocket over the client end of a pipe.
type PipeWs = async_tungstenite::WebSocketStream<UnixStream>;

/// A bound library server that is never run: its connections are handed to it.
struct InProcess {
    server: wsgate::Server,
    /// A copy of the server's key, to mint tokens.
    key: wsgate::Key,
    /// A token for "alice", valid for ten minutes.
    alice: String,
    handler: wsgate::Handler,
}

impl InProcess {
    /// An echo server with one local key; `tweak` adjusts the configuration.
    fn start(tweak: impl FnOnce(&mut wsgate::Config)) -> InProcess {
        InProcess::with_handler(wsgate::Handler::echo(), tweak)
    }

    fn with_handler(
        handler: wsgate::Handler,
        tweak: impl FnOnce(&mut wsgate::Config),
    ) -> InProcess {
        let key = wsgate::Key::generate_local().unwrap();
        let copy = wsgate::Key::from_paserk(&key.to_paserk()).unwrap();
        let mut config = wsgate::Config::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.keys.push(key);
        tweak(&mut config);
        let server = smol::block_on(wsgate::Server::bind(config, handler.clone())).unwrap();
        let alice = wsgate::claims_json("alice", now(), 600, None, None, None, &[]);
        InProcess {
            server,
            alice: copy.issue(&alice).unwrap(),
            key: copy,
            handler,
        }
    }

    /// A token for `sub` whose `exp` is `ttl` seconds from now, and that `exp`.
    fn token(&self, sub: &str, ttl: i64) -> (String, i64) {
        let now = now();
        let claims = wsgate::claims_json(sub, now, ttl, None, None, None, &[]);
        (self.key.issue(&claims).unwrap(), now + ttl)
    }

    /// Open connections, as `max_connections` counts them.
    fn connections(&self) -> i64 {
        self.server.metrics().connections()
    }

    /// Serves the server end of a fresh pipe on a task of its own; the client end,
    /// and the task (it ends with the connection).
    fn pipe(&self) -> (UnixStream, smol::Task<()>) {
        let (client, server_end) = UnixStream::pair().unwrap();
        let peer: SocketAddr = PEER.parse().unwrap();
        let serving = self
            .server
            .handle()
            .serve_connection(&self.handler, server_end, peer);
        (client, smol::spawn(serving))
    }

    /// The library client's upgrade with `headers` over a fresh pipe.
    async fn upgrade(
        &self,
        headers: &[(&str, &str)],
    ) -> (Result<PipeWs, HandshakeError>, smol::Task<()>) {
        let (client, task) = self.pipe();
        let upgrade = Upgrade::new("wsgate.test", "/", headers).unwrap();
        let config = tungstenite::protocol::WebSocketConfig::default();
        let ws = timeout(
            IO_TIMEOUT,
            wsgate::client::handshake(client, &upgrade, config),
        )
        .await
        .expect("handshake within the bound");
        (ws, task)
    }

    /// A session authenticated by `Authorization: Bearer`.
    async fn session(&self, token: &str) -> (PipeWs, smol::Task<()>) {
        let (ws, task) = self.upgrade(&[("Authorization", &bearer(token))]).await;
        (ws.unwrap_or_else(|e| panic!("upgrade refused: {e}")), task)
    }
}

/// The connection's future ends (bounded).
async fn finished(task: smol::Task<()>) {
    timeout(IO_TIMEOUT, task)
        .await
        .expect("the connection's future ended");
}

/// The last connection's future ends (bounded), and with it the count of connections.
async fn ends(task: smol::Task<()>, server: &InProcess) {
    finished(task).await;
    assert_eq!(
        server.connections(),
        0,
        "the connection is no longer counted"
    );
}

/// Closes from the client side, lets the closing handshake finish, and checks that
/// the connection's future ends.
async fn close(mut ws: PipeWs, task: smol::Task<()>, server: &InProcess) {
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = timeout(IO_TIMEOUT, ws.next()).await.flatten() {}
    ends(task, server).await;
}

// ---------------------------------------------------------------------------
// Keepalive (docs/protocol.md#after-authentication)

#[test]
fn an_idle_client_is_pinged_and_one_that_answers_stays_open() {
    let s = InProcess::start(|c| c.ping_interval = Duration::from_secs(1));
    run(async {
        let (mut ws, task) = s.session(&s.alice).await;
        // Reading answers each ping (the pong goes out with the next read or write).
        // A pong counts as activity: the check after it sends no ping, the next one
        // does, so two pings span three intervals.
        let mut pings = 0;
        while pings < 2 {
            match recv(&mut ws).await {
                Message::Ping(_) => pings += 1,
                m => panic!("expected only pings from an idle session, got {m:?}"),
            }
        }
        assert_echo(&mut ws).await;
        close(ws, task, &s).await;
    });
}

#[test]
fn a_client_that_never_answers_is_dropped_without_a_close_frame() {
    let s = InProcess::start(|c| c.ping_interval = Duration::from_secs(1));
    run(async {
        let (mut ws, task) = s.session(&s.alice).await;
        // Nothing read, so nothing answered: the server drops the connection when
        // the interval after its ping ends.
        ends(task, &s).await;
        let mut pings = 0;
        loop {
            match timeout(IO_TIMEOUT, ws.next()).await {
                None => panic!("the dropped connection did not end"),
                Some(Some(Ok(Message::Ping(_)))) => pings += 1,
                Some(Some(Ok(m))) => panic!("expected pings then the end, got {m:?}"),
                // The end, or the pong that could not be written to a closed socket.
                Some(None) | Some(Some(Err(_))) => break,
            }
        }
        assert!(pings >= 1, "no ping before the drop");
    });
}

// ---------------------------------------------------------------------------
// Expiry and its notice (docs/protocol.md#after-authentication,
// docs/protocol.md#expiry-notice-and-in-band-refresh)

/// Reads until the close frame: the text messages before it, and its code and reason.
/// Then lets the closing handshake finish (the reply goes out with the next read).
async fn texts_then_close(ws: &mut PipeWs) -> (Vec<String>, (u16, String)) {
    let mut texts = Vec::new();
    let closed = loop {
        match recv_data(ws).await {
            Message::Text(t) => texts.push(t.to_string()),
            Message::Close(Some(f)) => break (f.code.into(), f.reason.to_string()),
            m => panic!("expected text or a close frame, got {m:?}"),
        }
    };
    while let Some(Ok(_)) = timeout(IO_TIMEOUT, ws.next()).await.flatten() {}
    (texts, closed)
}

#[test]
fn at_exp_the_session_is_closed_4401_token_expired() {
    let s = InProcess::start(|c| c.leeway = 0);
    // Two seconds: a token minted just before a second turns is still valid then.
    let (t, _) = s.token("alice", 2);
    run(async {
        let (mut ws, task) = s.session(&t).await;
        send_text(&mut ws, "before").await;
        let (texts, closed) = texts_then_close(&mut ws).await;
        assert!(
            texts.len() <= 1 && texts.iter().all(|t| t == "before"),
            "{texts:?}"
        );
        assert_eq!(closed, (4401, "token expired".into()));
        ends(task, &s).await;
    });
}

#[test]
fn with_refresh_on_the_expiring_notice_comes_before_the_close() {
    let s = InProcess::start(|c| {
        c.leeway = 0;
        c.refresh = true;
        c.refresh_notice = Duration::from_secs(1);
    });
    let (t, exp) = s.token("alice", 2);
    run(async {
        let (mut ws, task) = s.session(&t).await;
        let (texts, closed) = texts_then_close(&mut ws).await;
        let [notice] = &texts[..] else {
            panic!("expected one notice, got {texts:?}");
        };
        let notice: serde_json::Value = serde_json::from_str(notice).unwrap();
        assert_eq!(notice["type"], "expiring", "{notice}");
        assert_eq!(notice["exp"].as_str().and_then(parse_rfc3339), Some(exp));
        assert_eq!(closed, (4401, "token expired".into()));
        ends(task, &s).await;
    });
}

#[test]
fn a_refresh_after_the_notice_moves_the_session_to_the_new_token() {
    let s = InProcess::start(|c| {
        c.refresh = true;
        c.refresh_notice = Duration::from_secs(3600);
    });
    let (first, _) = s.token("alice", 600);
    let (next, next_exp) = s.token("alice", 1800);
    run(async {
        let (mut ws, task) = s.session(&first).await;
        // The notice is due at once: exp is closer than refresh_notice.
        let notice: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
        assert_eq!(notice["type"], "expiring", "{notice}");
        let refresh = serde_json::json!({ "type": "refresh", "token": next });
        send_text(&mut ws, &refresh.to_string()).await;
        let answer: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
        assert_eq!(answer["type"], "refreshed", "{answer}");
        assert_eq!(
            answer["exp"].as_str().and_then(parse_rfc3339),
            Some(next_exp)
        );
        let listed = s.server.handle().sessions(None);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].exp, next_exp);
        assert_eq!(listed[0].peer, PEER.parse::<SocketAddr>().unwrap());
        // A notice for the new token is due at once too, then the echo goes on.
        let notice: serde_json::Value = serde_json::from_str(&recv_text(&mut ws).await).unwrap();
        assert_eq!(
            notice["exp"].as_str().and_then(parse_rfc3339),
            Some(next_exp)
        );
        assert_echo(&mut ws).await;
        close(ws, task, &s).await;
    });
}

// ---------------------------------------------------------------------------
// Buffer renewal (session.rs, RENEW_BUFFERS_ABOVE)

#[test]
fn after_large_messages_later_messages_echo_exact() {
    let s = InProcess::start(|_| {});
    run(async {
        let (mut ws, task) = s.session(&s.alice).await;
        let big: Vec<u8> = (0..(1 << 20) - 16).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match recv_data(&mut ws).await {
            Message::Binary(b) => assert!(b[..] == big[..], "the large message, exact"),
            m => panic!("expected binary, got {m:?}"),
        }
        // Renewed before the next wait: small messages, then one just over the bound.
        // (5000 bytes: over RENEW_BUFFERS_ABOVE, 4096, so renewed again after it.)
        for text in ["a", "bc", &"d".repeat(5000), "e"] {
            send_text(&mut ws, text).await;
            assert_eq!(recv_text(&mut ws).await, text);
        }
        // Frames sent in one write right behind a large one reach the renewal together.
        let burst = [
            raw_frame(0x82, &big[..70_000], true),
            raw_frame(0x81, b"f", true),
            raw_frame(0x89, b"p", true),
            raw_frame(0x81, b"g", true),
        ]
        .concat();
        ws.get_mut().write_all(&burst).await.unwrap();
        assert_eq!(recv_data(&mut ws).await.len(), 70_000);
        assert_eq!(recv_text(&mut ws).await, "f");
        match recv(&mut ws).await {
            Message::Pong(p) => assert_eq!(&p[..], b"p"),
            m => panic!("expected the pong, got {m:?}"),
        }
        assert_eq!(recv_text(&mut ws).await, "g");
        assert_echo(&mut ws).await;
        close(ws, task, &s).await;
    });
}

// ---------------------------------------------------------------------------
// Shutdown and the connection count

#[test]
fn shutdown_closes_sessions_with_1001_and_ends_their_futures() {
    let s = InProcess::start(|_| {});
    run(async {
        let (mut a, a_task) = s.session(&s.alice).await;
        assert_echo(&mut a).await;
        // Upgraded, its first message not sent yet.
        let (waiting, waiting_task) = s.upgrade(&[]).await;
        let mut waiting = waiting.unwrap();
        assert_eq!(s.connections(), 2);
        s.server.handle().shutdown();
        assert_eq!(expect_close(&mut a).await, (1001, "going away".into()));
        assert_eq!(expect_close(&mut waiting).await.0, 1001);
        finished(a_task).await;
        ends(waiting_task, &s).await;
        // A connection handed over after the shutdown is dropped unanswered.
        let (refused, task) = s.upgrade(&[]).await;
        assert!(
            matches!(refused, Err(HandshakeError::Closed | HandshakeError::Io(_))),
            "{refused:?}"
        );
        ends(task, &s).await;
    });
}

#[test]
fn served_connections_count_against_max_connections() {
    let s = InProcess::start(|c| c.max_connections = 1);
    run(async {
        let (ws, task) = s.session(&s.alice).await;
        assert_eq!(s.connections(), 1);
        let (over, over_task) = s.upgrade(&[("Authorization", &bearer(&s.alice))]).await;
        assert!(matches!(over, Err(HandshakeError::Status(503))), "{over:?}");
        finished(over_task).await;
        close(ws, task, &s).await;
        // The slot is free again.
        let (ws, task) = s.session(&s.alice).await;
        close(ws, task, &s).await;
    });
}

// ---------------------------------------------------------------------------
// Hostile clients

/// Sends `bytes`, then reads the answer until the server half-closes.
async fn answer_to(client: &mut UnixStream, bytes: &[u8]) -> String {
    client.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    timeout(IO_TIMEOUT, client.read_to_end(&mut answer))
        .await
        .expect("the server closed its side")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn garbage_instead_of_a_request_head_gets_400_and_the_connection_ends() {
    let s = InProcess::start(|_| {});
    run(async {
        let (mut client, task) = s.pipe();
        let answer = answer_to(&mut client, b"\x16\x03\x01\x00\xa5\x01garbage\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        drop(client);
        ends(task, &s).await;
    });
}

#[test]
fn a_head_without_an_end_gets_431_and_the_connection_ends() {
    let s = InProcess::start(|_| {});
    run(async {
        let (mut client, task) = s.pipe();
        let head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(20 * 1024));
        let answer = answer_to(&mut client, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        drop(client);
        ends(task, &s).await;
    });
}

#[test]
fn a_client_that_vanishes_mid_head_ends_its_connection() {
    let s = InProcess::start(|_| {});
    run(async {
        let (mut client, task) = s.pipe();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: wsgate.test\r\nUpgr")
            .await
            .unwrap();
        drop(client);
        ends(task, &s).await;
    });
}

#[test]
fn a_client_that_vanishes_mid_frame_ends_its_session() {
    let s = InProcess::start(|_| {});
    run(async {
        let (mut ws, task) = s.session(&s.alice).await;
        // After an echo the session is surely registered (the 101 comes before).
        assert_echo(&mut ws).await;
        assert_eq!(s.server.handle().sessions(None).len(), 1);
        // A frame header announcing 1000 bytes, 10 of them, then gone.
        let mut partial = raw_frame(0x82, &[7; 1000], true);
        partial.truncate(18);
        ws.get_mut().write_all(&partial).await.unwrap();
        drop(ws);
        ends(task, &s).await;
        assert!(s.server.handle().sessions(None).is_empty());
    });
}

#[test]
fn a_panicking_handler_ends_its_connection_only() {
    let handler = wsgate::Handler::new(|mut s| async move {
        if s.sub() == "panics" {
            panic!("handler panics on purpose");
        }
        while let Some(m) = s.recv().await {
            if !s.send_watched(m).await {
                return;
            }
        }
    });
    let s = InProcess::with_handler(handler, |_| {});
    let (bad, _) = s.token("panics", 600);
    run(async {
        let (_ws, task) = s.session(&bad).await;
        ends(task, &s).await;
        let (mut ws, task) = s.session(&s.alice).await;
        assert_echo(&mut ws).await;
        close(ws, task, &s).await;
    });
}
