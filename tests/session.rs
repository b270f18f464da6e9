//! Session life (`docs/protocol.md#after-authentication`): echo, expiry during a
//! session (a ticket's at the minting token's `exp`), shutdown.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn echo_text_and_binary_many_messages() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        for i in 0..20 {
            let text = format!("message {i} ✓");
            send_text(&mut ws, &text).await;
            assert_eq!(recv_text(&mut ws).await, text);
        }
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        match recv_data(&mut ws).await {
            Message::Binary(b) => assert_eq!(&b[..], &big[..]),
            m => panic!("expected binary, got {m:?}"),
        }
        ws.send(Message::text(String::new())).await.unwrap();
        assert_eq!(recv_text(&mut ws).await, "");
    });
}

/// A masked client frame (RFC 6455 §5.2) with FIN set.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[test]
fn pipelined_frames_around_a_large_message_arrive_whole_and_in_order() {
    // After a large message the session renews its WebSocket buffers; frames the
    // client sent right behind it (one write, so they arrive together) must survive.
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    run(async {
        use smol::io::AsyncWriteExt as _;
        let mut ws = ws_bearer(&s, &t).await;
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let burst = [
            client_frame(1, b"a"),
            client_frame(2, &big),
            client_frame(1, b"b"),
            client_frame(9, b"p"),
            client_frame(1, &[b'c'; 5000]),
            client_frame(1, b"d"),
        ]
        .concat();
        let tcp = ws.get_mut();
        tcp.write_all(&burst).await.unwrap();
        tcp.flush().await.unwrap();
        assert_eq!(recv_text(&mut ws).await, "a");
        match recv_data(&mut ws).await {
            Message::Binary(b) => assert!(b[..] == big[..], "large message intact"),
            m => panic!("expected binary, got {m:?}"),
        }
        assert_eq!(recv_text(&mut ws).await, "b");
        match recv(&mut ws).await {
            Message::Pong(p) => assert_eq!(&p[..], b"p"),
            m => panic!("expected the ping's pong, got {m:?}"),
        }
        assert_eq!(recv_text(&mut ws).await, "c".repeat(5000));
        assert_eq!(recv_text(&mut ws).await, "d");
        // And the session goes on.
        send_text(&mut ws, "e").await;
        assert_eq!(recv_text(&mut ws).await, "e");
    });
}

#[test]
fn a_large_message_does_not_leave_its_session_large() {
    // Issue 5: buffers grow on demand and shrink back. tungstenite's never shrink;
    // without the renewal, each of these sessions kept ~2 MiB (read and write
    // buffers of the 1 MiB message): 40 MiB. With it, what stays is the
    // allocator's free memory, not per-session buffers.
    const SESSIONS: usize = 20;
    const BIG: usize = 1000 * 1024;
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut open = Vec::new();
        for _ in 0..SESSIONS {
            open.push(ws_bearer(&s, &t).await);
        }
        let before = rss_kib(s.pid());
        for ws in &mut open {
            ws.send(Message::binary(vec![7u8; BIG])).await.unwrap();
            assert_eq!(recv_data(ws).await.len(), BIG);
            // An echo after it: the server has waited for this message, so it has
            // renewed its buffers.
            send_text(ws, "small").await;
            assert_eq!(recv_text(ws).await, "small");
        }
        let after = rss_kib(s.pid());
        let per_session = after.saturating_sub(before) / SESSIONS as u64;
        assert!(
            per_session < 256,
            "each session still holds {per_session} KiB after its large message \
             ({before} -> {after} KiB for {SESSIONS})"
        );
    });
}

#[test]
fn client_ping_gets_pong_in_session() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
        match recv(&mut ws).await {
            Message::Pong(p) => assert_eq!(&p[..], b"p1"),
            m => panic!("expected pong, got {m:?}"),
        }
        assert_echo(&mut ws).await;
    });
}

#[test]
fn client_close_is_answered() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: 1000u16.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        match recv(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1000),
            m => panic!("expected the close reply, got {m:?}"),
        }
    });
    assert_still_serves(&s, &t);
}

/// The reply to the client's close is the server's last frame: it leaves in one
/// segment with the FIN, so the end of the stream is there as soon as the reply is
/// (a FIN sent apart could still be on its way). Read with a plain socket.
#[test]
fn the_close_reply_comes_with_the_end_of_the_stream() {
    use std::io::{Read as _, Write as _};
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    for _ in 0..20 {
        let mut sock = raw_upgrade(&s, Some(&t));
        sock.write_all(&raw_frame(0x88, &1000u16.to_be_bytes(), true))
            .unwrap();
        let mut reply = [0u8; 4];
        sock.read_exact(&mut reply).unwrap();
        assert_eq!(
            reply,
            [0x88, 0x02, 0x03, 0xe8],
            "the close reply, code 1000"
        );
        sock.set_nonblocking(true).unwrap();
        match sock.read(&mut [0u8; 16]) {
            Ok(0) => {}
            other => panic!("expected the end of the stream with the reply, got {other:?}"),
        }
    }
    assert_still_serves(&s, &t);
}

/// A client that sends everything before reading anything: the upgrade request, its
/// token as the first message, 30 messages (more than the server's first read takes)
/// and its close, in one write. After each of its writes the server waits for the
/// socket to be readable before reading it again; bytes that are there already must
/// end that wait at once. Every answer comes, in order, and then the end of the stream.
#[test]
fn a_client_that_sends_everything_at_once_gets_every_answer_in_order() {
    use std::io::{Read as _, Write as _};
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    let mut burst = upgrade_bytes(&s.host(), "/", &[]);
    burst.extend(raw_frame(0x81, t.as_bytes(), true));
    let messages: Vec<String> = (0..30)
        .map(|i| format!("{i:03}{}", "x".repeat(200)))
        .collect();
    for m in &messages {
        burst.extend(raw_frame(0x81, m.as_bytes(), true));
    }
    burst.extend(raw_frame(0x88, &1000u16.to_be_bytes(), true));
    let mut sock = std::net::TcpStream::connect(s.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    sock.write_all(&burst).unwrap();
    let mut all = Vec::new();
    sock.read_to_end(&mut all).unwrap();
    let head_end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    assert!(
        all.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&all[..head_end])
    );
    let mut frames = Vec::new();
    let mut rest = &all[head_end..];
    while !rest.is_empty() {
        assert!(
            rest.len() >= 2 && rest[1] & 0x80 == 0,
            "a whole, unmasked server frame"
        );
        let (len, at) = match rest[1] {
            126 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        frames.push((rest[0], rest[at..at + len].to_vec()));
        rest = &rest[at + len..];
    }
    assert_eq!(
        frames.len(),
        32,
        "authenticated, 30 echoes, the close reply"
    );
    assert!(String::from_utf8_lossy(&frames[0].1).contains("authenticated"));
    for (m, (b0, payload)) in messages.iter().zip(&frames[1..31]) {
        assert_eq!(
            (*b0, payload.as_slice()),
            (0x81, m.as_bytes()),
            "echoes in order"
        );
    }
    assert_eq!(
        frames[31],
        (0x88, 1000u16.to_be_bytes().to_vec()),
        "the close reply"
    );
    assert_still_serves(&s, &t);
}

/// Hostile: clients that send their close frame and vanish at once, before the reply
/// (which then meets a closed socket, or draws a reset). Each session still ends with
/// the client's code in its `close` line, and the server serves on.
#[test]
fn clients_that_close_and_vanish_at_once_are_logged_and_the_server_serves_on() {
    use std::io::Write as _;
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    for i in 0..20 {
        let t = k.token(&Claims::new(&format!("gone-{i}")));
        let mut sock = raw_upgrade(&s, Some(&t));
        sock.write_all(&raw_frame(0x88, &1001u16.to_be_bytes(), true))
            .unwrap();
        drop(sock);
    }
    for i in 0..20 {
        let sub = format!("sub=gone-{i} ");
        let line = s.wait_log_line(|l| l.contains("event=close") && l.contains(&sub));
        assert!(line.contains("code=1001"), "{line}");
    }
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

#[test]
fn concurrent_sessions_are_independent() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    run(async {
        let mut a = ws_bearer(&s, &k.token(&Claims::new("a"))).await;
        let mut b = ws_ok(&s, &[]).await;
        first_message_ok(&mut b, &k.token(&Claims::new("b"))).await;
        send_text(&mut a, "to a").await;
        send_text(&mut b, "to b").await;
        assert_eq!(recv_text(&mut b).await, "to b");
        assert_eq!(recv_text(&mut a).await, "to a");
    });
}

fn expiring_session(method: &str) {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--leeway", "0"]].concat());
    let claims = Claims::new("alice").exp_in(4);
    let t = k.token(&claims);
    run(async {
        let mut ws = match method {
            "header" => ws_bearer(&s, &t).await,
            _ => {
                let mut ws = ws_ok(&s, &[]).await;
                let v = first_message_ok(&mut ws, &t).await;
                assert_eq!(
                    parse_rfc3339(v["exp"].as_str().unwrap()),
                    parse_rfc3339(claims.exp())
                );
                ws
            }
        };
        // The session works until exp, then is closed by the server.
        send_text(&mut ws, "before").await;
        let mut got = Vec::new();
        let (code, reason) = loop {
            match recv(&mut ws).await {
                Message::Text(t) => got.push(t.to_string()),
                Message::Close(Some(f)) => break (u16::from(f.code), f.reason.to_string()),
                Message::Close(None) => break (1005, String::new()),
                _ => {}
            }
        };
        assert!(got.len() <= 1, "{got:?}");
        assert_eq!((code, reason.as_str()), (4401, "token expired"));
    });
    assert_still_serves(&s, &k.token(&Claims::new("bob")));
}

#[test]
fn session_closed_4401_when_token_expires_header() {
    expiring_session("header");
}

#[test]
fn session_closed_4401_when_token_expires_first_message() {
    expiring_session("message");
}

#[test]
fn session_lasts_until_exp_plus_leeway() {
    // exp is already 5 s past but leeway 60: accepted, and not closed at once.
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice").exp_in(-5));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_echo(&mut ws).await;
    });
}

fn shutdown_on(sig: &str) {
    let k = LocalKey::generate();
    let mut s = Server::start(&[&k.arg()[..], &["--auth-timeout", "30"]].concat());
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut a = ws_bearer(&s, &t).await;
        let mut b = ws_ok(&s, &[]).await;
        first_message_ok(&mut b, &t).await;
        let mut waiting = ws_ok(&s, &[]).await; // still waiting for its first message
        assert_echo(&mut a).await;
        s.signal(sig);
        assert_eq!(expect_close(&mut a).await, (1001, "going away".into()));
        assert_eq!(expect_close(&mut b).await, (1001, "going away".into()));
        let (code, _) = expect_close(&mut waiting).await;
        assert_eq!(code, 1001);
    });
    let st = s
        .wait_exit(Duration::from_secs(15))
        .expect("wsgate exits after the closing handshakes");
    assert_eq!(st.code(), Some(0), "exit status {st:?}");
    // The listener is gone.
    assert!(
        std::net::TcpStream::connect(s.addr).is_err(),
        "listener still open after shutdown"
    );
}

#[test]
fn sigterm_sends_1001_and_exits_0() {
    shutdown_on("TERM");
}

#[test]
fn sigint_sends_1001_and_exits_0() {
    shutdown_on("INT");
}

#[test]
fn sigterm_exits_within_10_s_even_if_a_client_never_answers_close() {
    let k = LocalKey::generate();
    let mut s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    // A raw TCP client that completes the upgrade and then never reads or writes.
    let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&t))]);
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    std::io::Write::write_all(&mut c, &req).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 101);
    s.signal("TERM");
    let st = s
        .wait_exit(Duration::from_secs(20))
        .expect("exit within the 10 s bound (+ slack)");
    assert_eq!(st.code(), Some(0));
    drop(c);
}

#[test]
fn a_send_given_up_midway_is_finished_not_lost() {
    // A handler that drops a `send` future before the client took the message
    // leaves the rest of the frame in the write buffer. The renewal of buffers
    // after a large message must not throw that rest away.
    const BIG: usize = 12 << 20;
    let (stalled_tx, stalled_rx) = smol::channel::bounded::<bool>(1);
    let handler = wsgate::Handler::new(move |mut s| {
        let stalled_tx = stalled_tx.clone();
        async move {
            // One poll: the socket takes a few MiB, the rest waits in the buffer.
            let big = Message::binary(vec![5u8; BIG]);
            let stalled = match smol::future::poll_once(s.send(big)).await {
                None => true,
                Some(sent) => {
                    sent.unwrap();
                    false
                }
            };
            let _ = stalled_tx.send(stalled).await;
            while let Some(m) = s.recv().await {
                if s.send(m).await.is_err() {
                    break;
                }
            }
        }
    });
    // Room in the write buffer for the whole message (twice --max-message).
    let server = LibServer::start(handler, |c| c.max_message = 16 << 20);
    run(async {
        let head = upgrade_bytes(
            &server.addr.to_string(),
            "/",
            &[("Authorization", &bearer(&server.token))],
        );
        let tcp = connect_with_rcvbuf(server.addr, 64 << 10);
        let tcp = smol::net::TcpStream::try_from(tcp).unwrap();
        let (mut ws, _) = ws_on(tcp, &head)
            .await
            .unwrap_or_else(|r| panic!("{}", r.head));
        let stalled = timeout(IO_TIMEOUT, stalled_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            stalled,
            "the socket took {BIG} bytes at once: nothing to test"
        );
        send_text(&mut ws, "hello").await;
        match recv_data(&mut ws).await {
            Message::Binary(b) => {
                assert!(
                    b.len() == BIG && b.iter().all(|&x| x == 5),
                    "the large message, whole"
                )
            }
            m => panic!("expected the large message, got {m:?}"),
        }
        assert_eq!(recv_text(&mut ws).await, "hello");
    });
    server.stop();
}

#[test]
fn sigterm_right_after_the_listen_line_is_a_graceful_shutdown() {
    // The signals are taken over before the server listens: a SIGTERM sent the
    // moment the listen line is out (sent directly, not through `kill(1)`, to hit
    // that moment) still shuts down gracefully, exit status 0, never death by signal.
    for _ in 0..20 {
        let k = LocalKey::generate();
        let mut s = Server::start(&k.arg());
        let pid = rustix::process::Pid::from_raw(s.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let st = s
            .wait_exit(Duration::from_secs(15))
            .expect("wsgate exits after SIGTERM");
        assert_eq!(st.code(), Some(0), "exit status {st:?}");
    }
}

#[test]
fn a_dropped_run_future_closes_the_listener_and_ends_its_threads() {
    // `Server::run` dropped before any shutdown (a library user racing it with
    // something else): its accept loops, which run as tasks of its executors, go
    // with it, so the listener closes and the call returns, with one thread or two.
    use smol::future::FutureExt as _;
    use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
    for threads in [1, 2] {
        let mut config = wsgate::Config::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.keys.push(wsgate::Key::generate_local().unwrap());
        config.threads = threads;
        let server = smol::block_on(wsgate::Server::bind(config, wsgate::Handler::echo())).unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let answered = smol::block_on(async {
                // One request answered first: the server was running.
                let asked = async {
                    let mut c = smol::net::TcpStream::connect(addr).await?;
                    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
                    let mut status = [0u8; 12];
                    c.read_exact(&mut status).await?;
                    Ok(status)
                };
                async { server.run().await.map(|()| [0; 12]) }
                    .or(asked)
                    .await
            });
            let _ = tx.send(answered);
        });
        let answered = rx
            .recv_timeout(IO_TIMEOUT)
            .expect("the dropped run future returned")
            .unwrap();
        assert_eq!(&answered, b"HTTP/1.1 426", "threads={threads}");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "threads={threads}: the listener is still open"
        );
    }
}

#[test]
fn a_task_run_beside_the_server_runs_and_can_end_it() {
    // `Server::run_beside`: the task runs on the server's executor (`wsgate serve`'s
    // signal watch is one) and can shut the server down, which then returns.
    let mut config = wsgate::Config::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.keys.push(wsgate::Key::generate_local().unwrap());
    let server = smol::block_on(wsgate::Server::bind(config, wsgate::Handler::echo())).unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ran = smol::block_on(server.run_beside(async move {
            // Served first: the task runs while the server does.
            let mut c = smol::net::TcpStream::connect(addr).await.unwrap();
            use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut status = [0u8; 12];
            c.read_exact(&mut status).await.unwrap();
            assert_eq!(&status, b"HTTP/1.1 426");
            handle.shutdown();
        }));
        let _ = tx.send(ran);
    });
    rx.recv_timeout(IO_TIMEOUT)
        .expect("the server returned after the task shut it down")
        .unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is still open"
    );
}
