//! Keepalive (`docs/protocol.md#after-authentication`): the server pings idle clients and
//! drops those that stop answering, while clients that answer stay. `--ping-interval 1`
//! makes it quick.

mod common;

use std::time::Duration;

use common::*;
use smol::stream::StreamExt as _;

#[test]
fn silent_peer_is_pinged_then_dropped_while_live_peer_stays() {
    let key = LocalKey::generate();
    let server = Server::start(&["--key", &key.path, "--ping-interval", "1"]);
    let token = key.token(&Claims::new("alice").exp_in(600));

    // A raw TCP peer that completes the handshake, then never answers anything.
    let mut dead = std::net::TcpStream::connect(server.addr).unwrap();
    dead.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut dead,
        &upgrade_bytes(&server.host(), "/", &[("Authorization", &bearer(&token))]),
    )
    .unwrap();

    run(async {
        // A live peer whose reads answer the server's pings (as every client library does).
        let mut live = ws_bearer(&server, &token).await;
        let reader = async {
            let mut pings = 0;
            while let Some(Ok(m)) = live.next().await {
                if let tungstenite::Message::Ping(_) = m {
                    pings += 1;
                }
            }
            pings
        };
        let dead_peer = smol::unblock(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match read_uninterrupted(&mut dead, &mut buf) {
                    Ok(0) => return Ok(seen),
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        });
        // The dead peer's stream must end (server dropped it); the reader never ends by itself.
        let outcome =
            smol::future::or(async { Err(reader.await) }, async { Ok(dead_peer.await) }).await;
        let bytes = match outcome {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => panic!("silent peer was not dropped within the read timeout: {e}"),
            Err(pings) => panic!("live peer ended first after {pings} pings"),
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        let head_end = text.find("\r\n\r\n").unwrap() + 4;
        // At least one ping frame (FIN + opcode 0x9) reached the silent peer.
        assert!(
            bytes[head_end..].windows(1).any(|w| w[0] == 0x89),
            "no ping frame sent: {:?}",
            &bytes[head_end..]
        );
    });
    server.wait_log_line(|l| l.contains("event=ping_timeout"));

    // The server keeps serving: a fresh client (and the live one's slot) work.
    run(async {
        let mut ws = ws_bearer(&server, &token).await;
        assert_echo(&mut ws).await;
    });
}

/// A client that sends but never reads leaves the server an echo it cannot deliver:
/// the session waits on the socket, not on the client's frames, and the keepalive's
/// ping cannot go out either. It is dropped as a silent one all the same (after two
/// ping intervals without taking the message), not held with its buffers until its
/// token expires.
#[test]
fn a_client_that_never_reads_what_it_is_sent_is_dropped_as_silent() {
    let key = LocalKey::generate();
    let server = Server::start(&["--key", &key.path, "--ping-interval", "1"]);
    let token = key.token(&Claims::new("alice").exp_in(3600));
    let mut sock = raw_upgrade(&server, Some(&token));
    let mut writer = sock.try_clone().unwrap();
    // 16 MB of echoes to come back: more than the two sockets' buffers hold. The
    // writes stop when the server stops reading, and fail once it drops the client.
    let sending = std::thread::spawn(move || {
        let frame = raw_frame(0x82, &vec![7u8; 1_000_000], true);
        for _ in 0..16 {
            if std::io::Write::write_all(&mut writer, &frame).is_err() {
                return;
            }
        }
    });
    server.wait_log_line(|l| l.contains("event=ping_timeout") && l.contains("sub=alice"));
    // The connection is gone: reading drains what was sent, then ends (or resets).
    let mut buf = vec![0u8; 1 << 16];
    while matches!(read_uninterrupted(&mut sock, &mut buf), Ok(n) if n > 0) {}
    sending.join().unwrap();
    let line = server.wait_log_line(|l| l.contains("event=close") && l.contains("sub=alice"));
    assert!(line.contains("code=1006"), "{line}");
    run(async {
        let mut ws = ws_bearer(&server, &token).await;
        assert_echo(&mut ws).await;
    });
}

/// A peer that vanished without a word still takes writes: the kernel buffers them.
/// A process that streams a line now and then to such a client must not keep it
/// alive: it answers no ping, and is dropped at the second check.
#[test]
fn a_client_that_answers_no_ping_is_dropped_though_writes_to_it_complete() {
    use std::os::unix::fs::PermissionsExt as _;
    let key = LocalKey::generate();
    let dir = TempDir::new();
    let path = dir.file("stream.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\nfor i in $(seq 100); do echo line $i; sleep 0.1; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&["--key", &key.path, "--ping-interval", "1", "--exec", &path]);
    let token = key.token(&Claims::new("alice").exp_in(600));
    // Reads everything (so every write completes at once), answers nothing.
    let mut sock = raw_upgrade(&server, Some(&token));
    assert_eq!(raw_close_code(&mut sock), None, "{}", server.log());
    server.wait_log_line(|l| l.contains("event=ping_timeout") && l.contains("sub=alice"));
}
