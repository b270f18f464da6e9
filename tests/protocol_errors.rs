//! Frame-level protocol errors from a hostile client get a close frame with the code
//! RFC 6455 §7.4.1 names (1002, or 1007 for text that is not UTF-8), after
//! authentication and as the first message, never a bare TCP close (1006); and the
//! server keeps serving. Raw bytes over a real socket: no WebSocket library would
//! send these frames.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;

const MASK: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// One client frame, masked unless `masked` is false: first byte (FIN, RSV, opcode)
/// as given, then the length and the payload.
fn frame(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![b0];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => f.push(m | n as u8),
        n => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&MASK);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// The hostile inputs, each with the close code it must draw.
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    vec![
        ("RSV1 without an extension", frame(0xC1, b"hi", true), 1002),
        ("RSV3 without an extension", frame(0x91, b"hi", true), 1002),
        ("reserved data opcode 3", frame(0x83, b"hi", true), 1002),
        ("reserved control opcode 0xB", frame(0x8B, b"", true), 1002),
        ("unmasked client frame", frame(0x81, b"hi", false), 1002),
        (
            "control frame over 125 bytes",
            frame(0x89, &[0u8; 126], true),
            1002,
        ),
        ("fragmented ping", frame(0x09, b"p", true), 1002),
        ("one-byte close payload", frame(0x88, &[3], true), 1002),
        ("orphan continuation", frame(0x80, b"x", true), 1002),
        (
            "a new data frame inside a fragmented message",
            [frame(0x01, b"a", true), frame(0x81, b"b", true)].concat(),
            1002,
        ),
        (
            "text that is not UTF-8",
            frame(0x81, &[0xff, 0xfe, 0x41], true),
            1007,
        ),
        (
            "a fragmented text that is not UTF-8",
            [frame(0x01, &[0xce], true), frame(0x80, &[0x41], true)].concat(),
            1007,
        ),
    ]
}

/// Upgrades over a raw socket (with a token when given) and returns the socket
/// positioned after the 101 head.
fn upgrade(server: &Server, token: Option<&str>) -> TcpStream {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&upgrade_bytes(&server.host(), "/", &headers))
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in the 101 head");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads server frames until a close frame; its code, or `None` if the connection
/// ended without one.
fn close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let mut h = [0u8; 2];
        if s.read_exact(&mut h).is_err() {
            return None;
        }
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).ok()?;
        if h[0] & 0x0f == 0x8 {
            return Some(if payload.len() >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                1005
            });
        }
    }
}

#[test]
fn protocol_errors_after_authentication_get_a_close_code() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    for (what, bytes, want) in cases() {
        let mut sock = upgrade(&s, Some(&t));
        sock.write_all(&bytes).unwrap();
        assert_eq!(close_code(&mut sock), Some(want), "{what}");
    }
    assert_still_serves(&s, &t);
}

#[test]
fn protocol_errors_as_the_first_message_get_a_close_code() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    for (what, bytes, want) in cases() {
        let mut sock = upgrade(&s, None);
        sock.write_all(&bytes).unwrap();
        assert_eq!(close_code(&mut sock), Some(want), "{what}");
    }
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

#[test]
fn a_protocol_error_mid_session_is_logged_with_its_close_code() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    let mut sock = upgrade(&s, Some(&t));
    // A good message first: the session is established and echoes.
    sock.write_all(&frame(0x81, b"ok", true)).unwrap();
    let mut echo = [0u8; 4];
    sock.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"\x81\x02ok");
    sock.write_all(&frame(0x83, b"x", true)).unwrap();
    assert_eq!(close_code(&mut sock), Some(1002));
    drop(sock);
    s.wait_log_line(|l| l.contains("event=close") && l.contains("code=1002"));
}
