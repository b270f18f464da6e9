//! Before a client is authenticated it may send little: the first message is bounded
//! by `wsgate::internal::MAX_FIRST_MESSAGE` (32 KiB, four times the 8 KiB token), not by
//! `--max-message`, so token-less connections cannot make the server hold a megabyte
//! each. Real sockets, raw frames.

mod common;
use common::*;

use std::io::Write;
use std::net::TcpStream;

use wsgate::internal::MAX_FIRST_MESSAGE;

/// A frame announced over the bound (but within `--max-message`) is refused as soon
/// as its header arrives: 4401 `invalid token`, with a log line; over
/// `--max-message` too: 1009.
#[test]
fn a_first_message_over_the_bound_is_refused_at_its_header() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    for (announced, want) in [
        (MAX_FIRST_MESSAGE as u64 + 1, 4401),
        ((1 << 20) - 5, 4401),
        ((1 << 20) + 1, 1009),
    ] {
        let mut sock = raw_upgrade(&s, None);
        sock.write_all(&raw_frame_header(0x81, announced)).unwrap();
        // Not one payload byte: the header alone decides.
        assert_eq!(raw_close_code(&mut sock), Some(want), "{announced} bytes");
    }
    s.wait_log_line(|l| {
        l.contains("event=auth_fail") && l.contains("detail=too_long") && l.contains("close=4401")
    });
    s.wait_log_line(|l| {
        l.contains("event=auth_fail") && l.contains("detail=too_long") && l.contains("close=1009")
    });
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

/// With `--max-message` below the bound (a device's setting), a first message over it
/// is closed with 1009, and that refusal is logged and counted like any other; so is a
/// first frame that breaks the framing (1002).
#[test]
fn a_first_message_over_a_small_max_message_is_logged_and_counted() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--max-message", "1000"]].concat());
    let mut sock = raw_upgrade(&s, None);
    sock.write_all(&raw_frame_header(0x81, 2000)).unwrap();
    assert_eq!(raw_close_code(&mut sock), Some(1009));
    s.wait_log_line(|l| {
        l.contains("event=auth_fail")
            && l.contains("method=message")
            && l.contains("reason=invalid_token")
            && l.contains("detail=too_long")
            && l.contains("close=1009")
    });
    // An unmasked client frame: a protocol error.
    let mut sock = raw_upgrade(&s, None);
    sock.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(raw_close_code(&mut sock), Some(1002));
    s.wait_log_line(|l| {
        l.contains("event=auth_fail") && l.contains("detail=malformed") && l.contains("close=1002")
    });
    let metrics = http(&s, "GET", "/metrics", &[]);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("wsgate_auth_failures_total{reason=\"invalid_token\"} 2"),
        "{text}"
    );
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

/// Token-less connections cost the server little, however much they send: 100 that
/// each announce a first frame of 1 MiB − 5 (within `--max-message`) and send nearly
/// all of it, and 100 that each hold a frame just under the bound, almost whole.
/// The stated bound: 8 MiB of RSS growth for the 200 (each held frame is at most
/// 32 KiB in tungstenite's read buffer). With `--max-message` as the bound, the first
/// kind alone held ~1 MiB per connection (measured before the fix: 150 connections,
/// 3 → 162 MiB).
#[test]
fn unauthenticated_connections_hold_little_memory() {
    let k = LocalKey::generate();
    let s = Server::start(&[&k.arg()[..], &["--auth-timeout", "60"]].concat());
    // Warm up the allocator and the executor with one connection.
    drop(raw_upgrade(&s, None));
    let before = rss_kib(s.pid());
    let mut held: Vec<TcpStream> = Vec::new();
    let big = vec![b'x'; (1 << 20) - 5 - 16];
    let small = vec![b'x'; MAX_FIRST_MESSAGE - 16];
    for (announced, payload) in [((1u64 << 20) - 5, &big), (MAX_FIRST_MESSAGE as u64, &small)] {
        for _ in 0..100 {
            let mut sock = raw_upgrade(&s, None);
            sock.write_all(&raw_frame_header(0x81, announced)).unwrap();
            // The server may close a refused connection before it took every byte.
            let _ = sock.write_all(payload);
            held.push(sock);
        }
    }
    // Every byte sent has been taken: what the server holds, it holds now.
    eventually("the server took every byte sent", IO_TIMEOUT, || {
        held.iter().all(|s| unacknowledged(s) == 0)
    });
    let grown = rss_kib(s.pid()).saturating_sub(before);
    eprintln!("200 unauthenticated connections: +{grown} KiB");
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB for 200 connections"
    );
    drop(held);
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

/// The bytes this socket sent that its peer has not acknowledged (`SIOCOUTQ`).
fn unacknowledged(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd as _;
    let mut n: libc::c_int = 0;
    // SAFETY: a valid socket fd and a c_int out-parameter, as SIOCOUTQ takes.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(r, 0);
    n
}

/// A legitimate first message at the top of the range still works: an 8 KiB token
/// inside JSON with other fields beside it, 20 KiB in all.
#[test]
fn an_8_kib_token_inside_a_large_json_first_message_works() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    // The largest token under 8 KiB that a padding claim makes.
    let mut pad = 5_500;
    let token = loop {
        let t = k.token(&Claims::new("alice").set("pad", "p".repeat(pad)));
        if t.len() <= 8 * 1024 {
            break t;
        }
        pad -= 50;
    };
    assert!(token.len() > 7 * 1024, "{}", token.len());
    let first = serde_json::json!({ "token": token, "other": "o".repeat(14 * 1024) }).to_string();
    assert!(first.len() > 20 * 1024);
    run(async {
        let mut ws = ws_ok(&s, &[]).await;
        let ok = first_message_ok(&mut ws, &first).await;
        assert_eq!(ok["sub"], "alice");
        assert_echo(&mut ws).await;
        // Authenticated, the session's own limit applies: a message far over the
        // pre-auth bound echoes.
        let big = "b".repeat(4 * MAX_FIRST_MESSAGE);
        send_text(&mut ws, &big).await;
        assert_eq!(recv_text(&mut ws).await, big);
    });
}

/// The bound is on the message, not the frame: fragments that are each small but add
/// up past it are refused at the header of the one that crosses it (4401, its payload
/// not read); a token sent in fragments within it works.
#[test]
fn a_fragmented_first_message_is_bounded_as_a_whole() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let half = MAX_FIRST_MESSAGE as u64 / 2 + 1;
    let mut sock = raw_upgrade(&s, None);
    // A text frame without FIN, then a continuation: together over the bound.
    sock.write_all(&raw_frame_header(0x01, half)).unwrap();
    sock.write_all(&vec![b' '; half as usize]).unwrap();
    sock.write_all(&raw_frame_header(0x00, half)).unwrap();
    assert_eq!(raw_close_code(&mut sock), Some(4401));
    s.wait_log_line(|l| {
        l.contains("event=auth_fail") && l.contains("detail=too_long") && l.contains("close=4401")
    });
    // A token in three fragments, with a ping between them.
    let token = k.token(&Claims::new("alice"));
    let (a, rest) = token.as_bytes().split_at(10);
    let (b, c) = rest.split_at(10);
    let mut sock = raw_upgrade(&s, None);
    for f in [
        raw_frame(0x01, a, true),
        raw_frame(0x89, b"p", true),
        raw_frame(0x00, b, true),
        raw_frame(0x80, c, true),
    ] {
        sock.write_all(&f).unwrap();
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains("\"type\":\"authenticated\"") {
        match read_uninterrupted(&mut sock, &mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!("no authenticated frame: {other:?}, {seen:?}"),
        }
    }
    assert_still_serves(&s, &token);
}
