//! Proxy mode (`docs/protocol.md#proxy-mode`): `serve --upstream ws://…` against a real
//! upstream WebSocket server run in this process (async-tungstenite's `accept_hdr_async`
//! over a smol listener on 127.0.0.1:0, capturing each request head), and the same relay as
//! a library handler (`Handler::upstream`).

mod common;
use common::*;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use smol::stream::StreamExt as _;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::CloseFrame;

/// One connection the upstream accepted: its request head and its WebSocket.
struct UpConn {
    target: String,
    headers: Vec<(String, String)>,
    ws: Ws,
}

impl UpConn {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An upstream WebSocket server on its own thread; the test drives each accepted
/// connection itself.
struct Upstream {
    addr: SocketAddr,
    conns: smol::channel::Receiver<UpConn>,
    /// Handshakes still to refuse with 503.
    refuse: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = smol::channel::unbounded();
        let refuse = Arc::new(AtomicUsize::new(0));
        let to_refuse = refuse.clone();
        std::thread::spawn(move || {
            smol::block_on(async move {
                let listener = smol::net::TcpListener::try_from(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let refuse_this = to_refuse
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    let mut head = None;
                    // The error type is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &Request, resp: Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.as_str().to_owned(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect::<Vec<_>>();
                        head = Some((req.uri().to_string(), headers));
                        if refuse_this {
                            let mut r = ErrorResponse::new(Some("busy".into()));
                            *r.status_mut() = tungstenite::http::StatusCode::SERVICE_UNAVAILABLE;
                            Err(r)
                        } else {
                            Ok(resp)
                        }
                    };
                    let accepted = async_tungstenite::accept_hdr_async(stream, callback).await;
                    if let (Ok(ws), Some((target, headers))) = (accepted, head) {
                        if tx
                            .send(UpConn {
                                target,
                                headers,
                                ws,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            })
        });
        Upstream {
            addr,
            conns,
            refuse,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    async fn next(&self) -> UpConn {
        timeout(IO_TIMEOUT, self.conns.recv())
            .await
            .expect("no upstream connection in time")
            .unwrap()
    }
}

fn gateway(k: &LocalKey, url: &str, extra: &[&str]) -> Server {
    let mut args = k.arg().to_vec();
    args.extend(["--upstream", url]);
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn close(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    })
}

/// Next data or close message on the upstream side, skipping pings and pongs.
async fn up_recv(ws: &mut Ws) -> Message {
    recv_data(ws).await
}

#[test]
fn upstream_gets_identity_headers_and_no_credentials() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/base"), &[]);
    let t = k.token(&Claims::new("alice").set("role", "admin"));
    let cookie = format!("wsgate_token={t}; theme=dark");
    run(async {
        let (mut ws, _) = ws_connect(
            &s,
            "/room/7?x=1&token=v4.local.in-the-query",
            &[
                ("Authorization", &bearer(&t)),
                ("Cookie", &cookie),
                ("Sec-WebSocket-Protocol", &format!("wsgate, {t}")),
                ("X-Wsgate-Sub", "mallory"),
                ("X-Wsgate-Claims", "eyJzdWIiOiJtYWxsb3J5In0"),
                ("X-Wsgate-Extra", "forged"),
                ("Origin", &format!("http://{}", s.host())),
            ],
        )
        .await
        .unwrap_or_else(|r| panic!("expected 101, got:\n{}", r.head));
        let mut conn = up.next().await;
        assert_eq!(conn.target, "/base/room/7?x=1");
        assert_eq!(conn.header("x-wsgate-sub"), ["alice"]);
        let claims = conn.header("x-wsgate-claims");
        assert_eq!(claims.len(), 1);
        let json = data_encoding::BASE64URL_NOPAD
            .decode(claims[0].as_bytes())
            .expect("X-Wsgate-Claims is base64url without padding");
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["sub"], "alice");
        assert_eq!(v["role"], "admin");
        for name in [
            "authorization",
            "cookie",
            "sec-websocket-protocol",
            "origin",
            "x-wsgate-extra",
        ] {
            assert!(
                conn.header(name).is_empty(),
                "{name} reached the upstream: {:?}",
                conn.headers
            );
        }
        for (n, v) in &conn.headers {
            assert!(
                !v.contains("v4.local."),
                "a token reached the upstream in {n}: {v}"
            );
            assert!(
                !v.contains("mallory"),
                "a forged header reached the upstream: {n}: {v}"
            );
        }
        // And the relay works.
        send_text(&mut ws, "hi").await;
        assert_eq!(up_recv(&mut conn.ws).await, Message::text("hi"));
        conn.ws.send(Message::text("hello alice")).await.unwrap();
        assert_eq!(recv_text(&mut ws).await, "hello alice");
    });
}

#[test]
fn client_path_is_appended_without_double_slash() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/base/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        for (client, upstream) in [
            ("/room?x=1", "/base/room?x=1"),
            ("/", "/base/"),
            ("/a/b", "/base/a/b"),
        ] {
            let (_ws, _) = ws_connect(&s, client, &[("Authorization", &bearer(&t))])
                .await
                .unwrap_or_else(|r| panic!("expected 101, got:\n{}", r.head));
            assert_eq!(up.next().await.target, upstream, "client {client}");
        }
    });
}

#[test]
fn a_client_path_cannot_leave_the_upstream_prefix() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/app"), &[]);
    let t = k.token(&Claims::new("alice"));
    let auth = bearer(&t);
    for path in [
        "/../../admin",
        "/%2e%2e/admin",
        "/%2E%2e/%2e%2E/admin",
        "/x/..%2f..%2fadmin",
        "/room/../../admin?y=1",
    ] {
        let r = upgrade_status(&s, path, &[("Authorization", &auth)]);
        assert_eq!(r.status, 400, "{path}:\n{}", r.head);
        assert!(!r.has_header("sec-websocket-accept"), "{path}");
    }
    s.wait_log_line(|l| l.contains("event=refuse") && l.contains("reason=path_not_served"));
    // A target that is not a path (an absolute URI, `*`) is no path to append: 400.
    for target in ["http://evil.example/x", "*"] {
        let r = http_raw(
            s.addr,
            &upgrade_bytes(&s.host(), target, &[("Authorization", &auth)]),
        );
        assert_eq!(r.status, 400, "{target}:\n{}", r.head);
    }
    // No dial happened for any of them; a good path still reaches the upstream.
    run(async {
        let (_ws, _) = ws_connect(&s, "/room/..x", &[("Authorization", &auth)])
            .await
            .unwrap_or_else(|r| panic!("expected 101, got:\n{}", r.head));
        assert_eq!(up.next().await.target, "/app/room/..x");
    });
}

#[test]
fn text_binary_and_pings_are_relayed_both_ways() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        for i in 0..50 {
            let text = format!("to upstream {i} ✓");
            send_text(&mut ws, &text).await;
            assert_eq!(up_recv(&mut conn.ws).await, Message::text(text));
            let bin: Vec<u8> = (0..=255u8).chain([i as u8]).collect();
            conn.ws.send(Message::binary(bin.clone())).await.unwrap();
            assert_eq!(recv_data(&mut ws).await, Message::binary(bin));
        }
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(up_recv(&mut conn.ws).await, Message::binary(big.clone()));
        conn.ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(recv_data(&mut ws).await, Message::binary(big));

        // A client ping reaches the upstream; an upstream ping reaches the client.
        ws.send(Message::Ping(b"from client".to_vec().into()))
            .await
            .unwrap();
        loop {
            match recv(&mut conn.ws).await {
                Message::Ping(p) => {
                    assert_eq!(&p[..], b"from client");
                    break;
                }
                Message::Pong(_) => continue,
                m => panic!("expected the client's ping, got {m:?}"),
            }
        }
        conn.ws
            .send(Message::Ping(b"from upstream".to_vec().into()))
            .await
            .unwrap();
        loop {
            match recv(&mut ws).await {
                Message::Ping(p) => {
                    assert_eq!(&p[..], b"from upstream");
                    break;
                }
                Message::Pong(_) => continue,
                m => panic!("expected the upstream's ping, got {m:?}"),
            }
        }
        // The client's automatic pong travels back to the upstream.
        loop {
            match recv(&mut conn.ws).await {
                Message::Pong(p) if &p[..] == b"from upstream" => break,
                Message::Pong(_) | Message::Ping(_) => continue,
                m => panic!("expected the client's pong, got {m:?}"),
            }
        }
    });
}

#[test]
fn client_close_code_reaches_the_upstream() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        ws.close(close(4000, "bye now")).await.unwrap();
        match up_recv(&mut conn.ws).await {
            Message::Close(Some(f)) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "bye now"))
            }
            m => panic!("expected the client's close, got {m:?}"),
        }
        // The client's close handshake completes.
        match recv(&mut ws).await {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4000),
            m => panic!("expected the close reply, got {m:?}"),
        }
    });
    let line = s.wait_log_line(|l| l.contains("event=close"));
    assert_eq!(log_value(&line, "code").as_deref(), Some("4000"), "{line}");
}

#[test]
fn upstream_close_code_reaches_the_client() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        conn.ws.close(close(4123, "game over")).await.unwrap();
        assert_eq!(expect_close(&mut ws).await, (4123, "game over".to_owned()));
        // The upstream's close handshake completes too: it sees the reply, then the end.
        match timeout(IO_TIMEOUT, conn.ws.next())
            .await
            .expect("close reply in time")
        {
            Some(Ok(Message::Close(_))) | None => {}
            other => panic!("expected the close reply, got {other:?}"),
        }
    });
}

#[test]
fn an_upstream_close_without_a_code_reaches_the_client_without_one() {
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let k = LocalKey::generate();
    let s = gateway(&k, &format!("ws://{}/", up.local_addr().unwrap()), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let (mut conn, key) = accept_dial(&up);
        answer_101(&mut conn, &key).unwrap();
        // A close frame with no payload: no code, no reason.
        conn.write_all(&[0x88, 0x00]).unwrap();
        assert_eq!(recv_data(&mut ws).await, Message::Close(None));
        // The upstream's closing handshake completes: wsgate's reply has no code
        // either (masked, as from a client); the upstream, the server, then ends
        // the connection.
        let mut reply = [0u8; 6];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(reply[..2], [0x88, 0x80], "{reply:?}");
        drop(conn);
        // And the client's: its reply goes, and wsgate ends the connection.
        let end = timeout(IO_TIMEOUT, ws.next()).await;
        assert!(matches!(end, Some(None | Some(Err(_)))), "{end:?}");
    });
    let line = s.wait_log_line(|l| l.contains("event=close"));
    assert_eq!(log_value(&line, "code").as_deref(), Some("1005"), "{line}");
}

#[test]
fn a_client_close_without_a_code_reaches_the_upstream_without_one() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        ws.close(None).await.unwrap();
        assert_eq!(up_recv(&mut conn.ws).await, Message::Close(None));
        assert_eq!(recv_data(&mut ws).await, Message::Close(None));
    });
    let line = s.wait_log_line(|l| l.contains("event=close"));
    assert_eq!(log_value(&line, "code").as_deref(), Some("1005"), "{line}");
}

#[test]
fn an_upstream_protocol_error_is_1011_for_the_client() {
    // 1015 may not be sent in a close frame (RFC 6455 §7.4.1); tungstenite answers
    // it with 1002. Neither is the client's fault: the client gets 1011.
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        conn.ws.close(close(1015, "tls")).await.unwrap();
        assert_eq!(
            expect_close(&mut ws).await,
            (1011, "upstream error".to_owned())
        );
    });
    s.wait_log_line(|l| l.contains("event=upstream_error") && l.contains("1002"));
}

#[test]
fn a_sub_beyond_ascii_travels_percent_encoded() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    for (sub, header) in [
        ("Zoë Smith", "Zo%C3%AB%20Smith"),
        ("100%", "100%25"),
        ("plain@example.com", "plain@example.com"),
    ] {
        let t = k.token(&Claims::new(sub));
        run(async {
            let mut ws = ws_bearer(&s, &t).await;
            let mut conn = up.next().await;
            assert_eq!(conn.header("x-wsgate-sub"), [header], "{sub}");
            // The claims header carries it exactly.
            let claims = conn.header("x-wsgate-claims")[0].to_owned();
            let json = data_encoding::BASE64URL_NOPAD
                .decode(claims.as_bytes())
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["sub"], sub);
            // And the session relays.
            send_text(&mut ws, "hi").await;
            assert_eq!(up_recv(&mut conn.ws).await, Message::text("hi"));
        });
    }
}

#[test]
fn upstream_ending_abruptly_gives_1011() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let conn = up.next().await;
        drop(conn); // TCP closed, no close frame.
        let (code, _) = expect_close(&mut ws).await;
        assert_eq!(code, 1011);
    });
    let line = s.wait_log_line(|l| l.contains("event=upstream_error"));
    assert_eq!(log_value(&line, "sub").as_deref(), Some("alice"), "{line}");
}

#[test]
fn upstream_refusing_gives_1011_and_the_next_client_is_served() {
    let up = Upstream::start();
    up.refuse.store(1, Ordering::Release);
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (1011, "upstream unavailable".to_owned())
        );
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        send_text(&mut ws, "second").await;
        assert_eq!(up_recv(&mut conn.ws).await, Message::text("second"));
    });
    let dial_error = |l: &str| l.contains("event=upstream_error") && l.contains("stage=dial");
    let line = s.wait_log_line(dial_error);
    assert!(line.contains("503"), "the log says why: {line}");
    // One line for the one failure (the test's end may add a `stage=relay` line).
    assert_eq!(
        s.log().lines().filter(|l| dial_error(l)).count(),
        1,
        "{}",
        s.log()
    );
    assert!(
        !s.log().contains("v4.local."),
        "no token in the log:\n{}",
        s.log()
    );
}

#[test]
fn upstream_down_gives_1011_and_the_server_keeps_serving() {
    // A port with nothing listening: bind, note the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let k = LocalKey::generate();
    let s = gateway(&k, &format!("ws://{dead}/app"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        for _ in 0..3 {
            let mut ws = ws_bearer(&s, &t).await;
            assert_eq!(
                expect_close(&mut ws).await,
                (1011, "upstream unavailable".to_owned())
            );
        }
    });
    s.wait_log_line(|l| l.contains("event=upstream_error") && l.contains("stage=dial"));
    assert_eq!(http(&s, "GET", "/healthz", &[]).status, 200);
}

/// What the kernel may buffer between the flooding side and the paused reader:
/// four loopback sockets' buffers, plus one message in flight in the relay.
/// Generous, yet far below what an unbounded relay would take (the flood is
/// 64 KiB × 4096 = 256 MiB).
const BUFFERED_BOUND: usize = 96 << 20;
const MSG: usize = 64 << 10;

#[test]
fn flood_towards_a_paused_client_stalls_the_upstream() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        let rss_before = rss_kib(s.pid());
        let msg = Message::binary(vec![7u8; MSG]);
        let sent = flood_until_stalled(&mut conn.ws, &msg, 4096, Duration::from_secs(1)).await;
        eprintln!("stalled after {sent} messages of {MSG} bytes");
        assert!(sent * MSG < BUFFERED_BOUND, "{sent} messages buffered");
        let grown = rss_kib(s.pid()).saturating_sub(rss_before);
        assert!(
            grown < 32 * 1024,
            "wsgate grew by {grown} KiB while the client paused"
        );
        // The client resumes: everything arrives, in order, nothing lost.
        let upstream = async {
            conn.ws.send(Message::text("end")).await.unwrap();
            conn
        };
        let client = async {
            let mut got = 0;
            loop {
                match recv_data(&mut ws).await {
                    Message::Binary(b) => {
                        assert_eq!(b.len(), MSG);
                        got += 1;
                    }
                    Message::Text(t) if t.as_str() == "end" => return got,
                    m => panic!("unexpected {m:?}"),
                }
            }
        };
        let (_, got) = smol::future::zip(upstream, client).await;
        // The stalled send completes once the client reads, so it arrives too.
        assert!(got == sent || got == sent + 1, "sent {sent}, got {got}");
    });
}

#[test]
fn flood_towards_a_paused_upstream_stalls_the_client() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        let rss_before = rss_kib(s.pid());
        let msg = Message::binary(vec![9u8; MSG]);
        let sent = flood_until_stalled(&mut ws, &msg, 4096, Duration::from_secs(1)).await;
        eprintln!("stalled after {sent} messages of {MSG} bytes");
        assert!(sent * MSG < BUFFERED_BOUND, "{sent} messages buffered");
        let grown = rss_kib(s.pid()).saturating_sub(rss_before);
        assert!(
            grown < 32 * 1024,
            "wsgate grew by {grown} KiB while the upstream paused"
        );
        let client = async {
            ws.send(Message::text("end")).await.unwrap();
            ws
        };
        let upstream = async {
            let mut got = 0;
            loop {
                match up_recv(&mut conn.ws).await {
                    Message::Binary(b) => {
                        assert_eq!(b.len(), MSG);
                        got += 1;
                    }
                    Message::Text(t) if t.as_str() == "end" => return got,
                    m => panic!("unexpected {m:?}"),
                }
            }
        };
        let (_, got) = smol::future::zip(client, upstream).await;
        assert!(got == sent || got == sent + 1, "sent {sent}, got {got}");
    });
}

#[test]
fn a_client_that_floods_a_paused_upstream_then_leaves_is_torn_down() {
    // The upstream never reads; the client fills every buffer on the way and closes
    // its socket without reading. wsgate, holding the client back, must still notice
    // it left: the session ends, the upstream connection is let go, the slot is free.
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &["--max-connections", "1"]);
    let t = k.token(&Claims::new("alice"));
    let baseline = fd_count(s.pid());
    let mut conn = run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let conn = up.next().await;
        let msg = Message::binary(vec![9u8; MSG]);
        let sent = flood_until_stalled(&mut ws, &msg, 4096, Duration::from_secs(1)).await;
        assert!(sent > 4, "only {sent} messages before the stall");
        drop(ws);
        conn
    });
    s.wait_log_line(|l| l.contains("event=close") && l.contains("sub=alice"));
    eventually(
        "wsgate's descriptors are back to their baseline",
        IO_TIMEOUT,
        || fd_count(s.pid()) <= baseline,
    );
    // The upstream, reading again, finds the end of its connection.
    run(async {
        let ended = timeout(IO_TIMEOUT, async {
            while let Some(Ok(_)) = conn.ws.next().await {}
        })
        .await;
        assert!(ended.is_some(), "the upstream connection was not let go");
    });
    let t2 = k.token(&Claims::new("bob"));
    run(async {
        let _ws = ws_bearer(&s, &t2).await;
        up.next().await;
    });
}

#[test]
fn an_echoing_upstream_under_load_does_not_deadlock() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let (mut tx, mut rx) = ws_bearer(&s, &t).await.split();
        let mut conn = up.next().await;
        const N: usize = 400;
        // A sequential echo: it stops reading while its own write is blocked.
        let upstream = async move {
            for _ in 0..N {
                let m = up_recv(&mut conn.ws).await;
                conn.ws.send(m).await.unwrap();
            }
            conn
        };
        let sender = async move {
            for i in 0..N {
                tx.send(Message::binary(vec![(i % 256) as u8; MSG]))
                    .await
                    .unwrap();
            }
            tx
        };
        let reader = async move {
            for i in 0..N {
                match timeout(IO_TIMEOUT, rx.next()).await {
                    Some(Some(Ok(Message::Binary(b)))) => {
                        assert_eq!((b.len(), b[0]), (MSG, (i % 256) as u8))
                    }
                    other => panic!("message {i}: {other:?}"),
                }
            }
        };
        smol::future::zip(smol::future::zip(upstream, sender), reader).await;
    });
}

#[test]
fn a_large_message_does_not_leave_the_relay_large() {
    // Issue 5: buffers shrink back. Each relayed 1000 KiB message grows four
    // WebSocket buffers in wsgate (client read, upstream write, upstream read, client
    // write), which tungstenite never shrinks: ~4 MiB per session before renewal.
    const SESSIONS: usize = 10;
    const BIG: usize = 1000 * 1024;
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut pairs = Vec::new();
        for _ in 0..SESSIONS {
            let ws = ws_bearer(&s, &t).await;
            pairs.push((ws, up.next().await));
        }
        let before = rss_kib(s.pid());
        for (ws, conn) in &mut pairs {
            ws.send(Message::binary(vec![7u8; BIG])).await.unwrap();
            let m = up_recv(&mut conn.ws).await;
            assert_eq!(m.len(), BIG);
            conn.ws.send(m).await.unwrap();
            assert_eq!(recv_data(ws).await.len(), BIG);
            // Small messages both ways after it: the relay has gone round its loop
            // with nothing in flight, so it has renewed both WebSockets.
            send_text(ws, "small").await;
            let m = up_recv(&mut conn.ws).await;
            conn.ws.send(m).await.unwrap();
            assert_eq!(recv_text(ws).await, "small");
        }
        let after = rss_kib(s.pid());
        let per_session = after.saturating_sub(before) / SESSIONS as u64;
        assert!(
            per_session < 256,
            "each relayed session still holds {per_session} KiB after its large message \
             ({before} -> {after} KiB for {SESSIONS})"
        );
    });
}

#[test]
fn token_expiry_closes_both_sides_with_4401() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &["--leeway", "0"]);
    let t = k.token(&Claims::new("alice").exp_in(2));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        let limit = Duration::from_secs(8);
        let upstream = async {
            loop {
                match timeout(limit, conn.ws.next())
                    .await
                    .expect("upstream close in time")
                {
                    Some(Ok(Message::Close(Some(f)))) => {
                        return (u16::from(f.code), f.reason.to_string());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a close frame, got {other:?}"),
                }
            }
        };
        let (client, upstream) =
            smol::future::zip(expect_close_within(&mut ws, limit), upstream).await;
        assert_eq!(client, (4401, "token expired".to_owned()));
        assert_eq!(upstream, (4401, "token expired".to_owned()));
    });
}

#[test]
fn revocation_closes_both_sides_with_4401_token_revoked() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let s = gateway(&k, &up.url("/"), &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        // Mid-message: the upstream is not reading what the client sends.
        let msg = Message::binary(vec![3u8; MSG]);
        flood_until_stalled(&mut ws, &msg, 4096, Duration::from_millis(500)).await;
        let r = post_revoke(admin, r#"{"sub":"alice"}"#);
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(
            expect_close_within(&mut ws, IO_TIMEOUT).await,
            (4401, "token revoked".to_owned())
        );
        // The upstream, reading again, gets the same code after what was in flight.
        let got = timeout(IO_TIMEOUT, async {
            loop {
                match conn.ws.next().await {
                    Some(Ok(Message::Close(f))) => {
                        return f.map(|f| (u16::from(f.code), f.reason.to_string()));
                    }
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .expect("the upstream's close in time");
        assert_eq!(got, Some((4401, "token revoked".to_owned())));
    });
}

#[test]
fn shutdown_closes_both_sides_with_1001() {
    let up = Upstream::start();
    let k = LocalKey::generate();
    let mut s = gateway(&k, &up.url("/"), &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        let mut conn = up.next().await;
        s.signal("TERM");
        let upstream = async {
            match up_recv(&mut conn.ws).await {
                Message::Close(Some(f)) => u16::from(f.code),
                m => panic!("expected a close frame, got {m:?}"),
            }
        };
        let (client, upstream) = smol::future::zip(expect_close(&mut ws), upstream).await;
        assert_eq!(client.0, 1001);
        assert_eq!(upstream, 1001);
    });
    assert!(s.wait_exit(IO_TIMEOUT).is_some_and(|st| st.success()));
}

/// A raw upstream's side of wsgate's dial: accepts the connection and reads the
/// upgrade request head; returns the stream and its `Sec-WebSocket-Key`. wsgate
/// then waits for the answer ([`answer_101`]), or for ever.
fn accept_dial(up: &TcpListener) -> (TcpStream, String) {
    let (mut conn, _) = up.accept().unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            read_uninterrupted(&mut conn, &mut b).unwrap(),
            1,
            "EOF in the head"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Sec-WebSocket-Key in {head}"));
    (conn, key)
}

/// The `101` that completes the dial of [`accept_dial`]; a write error is returned,
/// not a panic (wsgate may have closed the connection).
fn answer_101(conn: &mut TcpStream, key: &str) -> std::io::Result<()> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    conn.write_all(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .as_bytes(),
    )
}

#[test]
fn shutdown_drops_a_dial_still_under_way() {
    // An upstream that accepts and does not answer (yet): the dial waits in the
    // upgrade, for up to 5 s. At shutdown the session ends with its client's close
    // and the dial is dropped, however far it got; the exit does not wait for it.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let k = LocalKey::generate();
    let mut s = gateway(&k, &format!("ws://{}/", up.local_addr().unwrap()), &[]);
    let t = k.token(&Claims::new("alice"));
    let mut client = raw_upgrade(&s, Some(&t));
    let (mut conn, key) = accept_dial(&up);
    s.signal("TERM");
    assert_eq!(raw_close_code(&mut client), Some(1001));
    client
        .write_all(&raw_frame(0x88, &1001u16.to_be_bytes(), true))
        .unwrap();
    // The client's closing handshake is done; only now does the upstream answer.
    // Had wsgate kept dialling, that answer would complete the dial and wsgate would
    // pass the 1001 on: the upstream gets nothing, only the end of the connection.
    let _ = answer_101(&mut conn, &key);
    let mut buf = [0u8; 64];
    match read_uninterrupted(&mut conn, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("wsgate finished the dial and sent {:?}", &buf[..n]),
        Err(e) => panic!("wsgate kept the upstream connection open: {e}"),
    }
    assert!(s.wait_exit(IO_TIMEOUT).is_some_and(|st| st.success()));
    let log = s.log();
    assert!(!log.contains("event=upstream_error"), "{log}");
    let line = s.wait_log_line(|l| l.contains("event=close"));
    assert_eq!(log_value(&line, "code").as_deref(), Some("1001"), "{line}");
}

#[test]
fn bad_upstream_urls_are_configuration_errors() {
    for url in [
        "127.0.0.1:9000",
        "http://127.0.0.1:9000/",
        "ws://h:0/",
        "ws://h/a?b=1",
    ] {
        let out = wsgate(&["serve", "--listen", "127.0.0.1:0", "--upstream", url]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = stderr_of(&out);
        assert!(
            err.starts_with(&format!("error: --upstream {url}: ")),
            "{url}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn library_handler_relays() {
    let up = Upstream::start();
    let handler = wsgate::Handler::upstream(&up.url("/lib")).unwrap();
    let server = LibServer::start(handler, |_| {});
    run(async {
        let head = upgrade_bytes(
            &server.addr.to_string(),
            "/x",
            &[("Authorization", &bearer(&server.token))],
        );
        let (mut ws, _) = ws_raw(server.addr, &head)
            .await
            .unwrap_or_else(|r| panic!("{}", r.head));
        let mut conn = up.next().await;
        assert_eq!(conn.target, "/lib/x");
        assert_eq!(conn.header("x-wsgate-sub"), ["bob"]);
        send_text(&mut ws, "ping?").await;
        assert_eq!(up_recv(&mut conn.ws).await, Message::text("ping?"));
        conn.ws.send(Message::text("pong!")).await.unwrap();
        assert_eq!(recv_text(&mut ws).await, "pong!");
    });
    server.stop();
}
