//! Frame-level protocol errors from a hostile client get a close frame with the code
//! RFC 6455 §7.4.1 names (1002, or 1007 for text that is not UTF-8), after
//! authentication and as the first message, never a bare TCP close (1006); and the
//! server keeps serving. Raw bytes over a real socket: no WebSocket library would
//! send these frames.

mod common;
use common::*;

use std::io::{Read, Write};

/// The hostile inputs, each with the close code it must draw.
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    vec![
        (
            "RSV1 without an extension",
            raw_frame(0xC1, b"hi", true),
            1002,
        ),
        (
            "RSV3 without an extension",
            raw_frame(0x91, b"hi", true),
            1002,
        ),
        ("reserved data opcode 3", raw_frame(0x83, b"hi", true), 1002),
        (
            "reserved control opcode 0xB",
            raw_frame(0x8B, b"", true),
            1002,
        ),
        ("unmasked client frame", raw_frame(0x81, b"hi", false), 1002),
        (
            "control frame over 125 bytes",
            raw_frame(0x89, &[0u8; 126], true),
            1002,
        ),
        ("fragmented ping", raw_frame(0x09, b"p", true), 1002),
        ("one-byte close payload", raw_frame(0x88, &[3], true), 1002),
        ("orphan continuation", raw_frame(0x80, b"x", true), 1002),
        (
            "a new data frame inside a fragmented message",
            [raw_frame(0x01, b"a", true), raw_frame(0x81, b"b", true)].concat(),
            1002,
        ),
        (
            "text that is not UTF-8",
            raw_frame(0x81, &[0xff, 0xfe, 0x41], true),
            1007,
        ),
        (
            "a fragmented text that is not UTF-8",
            [
                raw_frame(0x01, &[0xce], true),
                raw_frame(0x80, &[0x41], true),
            ]
            .concat(),
            1007,
        ),
    ]
}

#[test]
fn protocol_errors_after_authentication_get_a_close_code() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    for (what, bytes, want) in cases() {
        let mut sock = raw_upgrade(&s, Some(&t));
        sock.write_all(&bytes).unwrap();
        assert_eq!(raw_close_code(&mut sock), Some(want), "{what}");
    }
    assert_still_serves(&s, &t);
}

#[test]
fn protocol_errors_as_the_first_message_get_a_close_code() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    for (what, bytes, want) in cases() {
        let mut sock = raw_upgrade(&s, None);
        sock.write_all(&bytes).unwrap();
        assert_eq!(raw_close_code(&mut sock), Some(want), "{what}");
    }
    assert_still_serves(&s, &k.token(&Claims::new("alice")));
}

#[test]
fn a_protocol_error_mid_session_is_logged_with_its_close_code() {
    let k = LocalKey::generate();
    let s = Server::start(&k.arg());
    let t = k.token(&Claims::new("alice"));
    let mut sock = raw_upgrade(&s, Some(&t));
    // A good message first: the session is established and echoes.
    sock.write_all(&raw_frame(0x81, b"ok", true)).unwrap();
    let mut echo = [0u8; 4];
    sock.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"\x81\x02ok");
    sock.write_all(&raw_frame(0x83, b"x", true)).unwrap();
    assert_eq!(raw_close_code(&mut sock), Some(1002));
    drop(sock);
    s.wait_log_line(|l| l.contains("event=close") && l.contains("code=1002"));
}
