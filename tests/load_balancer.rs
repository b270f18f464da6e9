//! Behind a load balancer (`docs/operations.md#behind-a-load-balancer`): `--trusted-proxy` with
//! `X-Forwarded-For`, and `--proxy-protocol` (v1 and v2). The client's address so
//! found is the one tickets are bound to, `REMOTE_ADDR` of `--exec` and `peer=` in
//! the logs; a peer that is not trusted cannot claim another address.
//!
//! The real binary on 127.0.0.1; the "balancer" is this test, writing the header a
//! balancer writes. Needs the `load-balancer` feature (the default build has it).

mod common;
use common::*;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

const CLIENT: &str = "198.51.100.7";

fn supported() -> bool {
    let out = wsgate(&["serve", "--help"]);
    let yes = stdout_of(&out).contains("--trusted-proxy");
    if !yes {
        eprintln!("skipped: this wsgate has no `load-balancer` feature");
    }
    yes
}

fn serve(k: &LocalKey, extra: &[&str]) -> Server {
    Server::start(&[&k.arg()[..], extra].concat())
}

/// Sends `prefix` then `request` on one connection; the answer.
fn exchange(s: &Server, prefix: &[u8], request: &[u8]) -> Response {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(&[prefix, request].concat()).unwrap();
    read_response(&mut c)
}

fn post_ticket(s: &Server, prefix: &[u8], token: &str, xff: Option<&str>) -> Response {
    let auth = bearer(token);
    let mut h = vec![("Content-Length", "0"), ("Authorization", auth.as_str())];
    if let Some(x) = xff {
        h.push(("X-Forwarded-For", x));
    }
    exchange(s, prefix, &request_bytes(&s.host(), "POST", "/ticket", &h))
}

fn ticket_of(r: &Response) -> String {
    assert_eq!(r.status, 200, "POST /ticket:\n{}", r.head);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["ticket"].as_str().unwrap().to_owned()
}

fn upgrade(s: &Server, prefix: &[u8], token: &str, xff: Option<&str>) -> Response {
    let auth = bearer(token);
    let mut h = vec![("Authorization", auth.as_str())];
    if let Some(x) = xff {
        h.push(("X-Forwarded-For", x));
    }
    exchange(s, prefix, &upgrade_bytes(&s.host(), "/", &h))
}

fn token(k: &LocalKey) -> String {
    k.token(&Claims::new("alice").exp_in(600))
}

#[test]
fn behind_a_trusted_proxy_a_ticket_is_bound_to_the_forwarded_client() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    let s = serve(&k, &["--trusted-proxy", "127.0.0.0/8"]);
    let t = token(&k);
    // The balancer appends the client it saw; what the client wrote is on the left.
    let xff = format!("203.0.113.66, {CLIENT}");
    let ticket = ticket_of(&post_ticket(&s, b"", &t, Some(&xff)));
    // Presented through the balancer for another client: refused, and not spent.
    let r = upgrade(&s, b"", &ticket, Some("192.0.2.1"));
    assert_eq!(r.status, 403, "{}", r.head);
    // Straight from the balancer's own address (no header): also another IP.
    assert_eq!(upgrade(&s, b"", &ticket, None).status, 403);
    let r = upgrade(&s, b"", &ticket, Some(CLIENT));
    assert_eq!(r.status, 101, "{}", r.head);
    let line = s.wait_log_line(|l| l.contains("event=auth_ok") && l.contains("ticket=true"));
    assert_eq!(
        log_value(&line, "peer").as_deref(),
        Some("198.51.100.7:0"),
        "{line}"
    );
    let refused = s.wait_log_line(|l| l.contains("event=auth_fail"));
    assert!(refused.contains("peer=192.0.2.1:0"), "{refused}");
}

#[test]
fn a_forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    // Loopback is not in the trusted range: this test is a direct client.
    let s = serve(&k, &["--trusted-proxy", "10.0.0.0/8"]);
    let t = token(&k);
    let ticket = ticket_of(&post_ticket(&s, b"", &t, Some(CLIENT)));
    // The ticket is bound to the real peer, whatever the header claims.
    assert_eq!(upgrade(&s, b"", &ticket, Some(CLIENT)).status, 101);
    let line = s.wait_log_line(|l| l.contains("event=auth_ok"));
    assert!(
        log_value(&line, "peer").unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(!s.log().contains(CLIENT), "{}", s.log());
}

fn v2_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_client() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    let s = serve(&k, &["--proxy-protocol", "--trusted-proxy", "127.0.0.1"]);
    let t = token(&k);
    let v1 = format!("PROXY TCP4 {CLIENT} 127.0.0.1 41000 8080\r\n");
    let ticket = ticket_of(&post_ticket(&s, v1.as_bytes(), &t, None));
    // The same client through a v2 balancer: its ticket works once.
    let v2 = v2_header([198, 51, 100, 7], 41001);
    let other = v2_header([192, 0, 2, 1], 41002);
    assert_eq!(upgrade(&s, &other, &ticket, None).status, 403);
    let r = upgrade(&s, &v2, &ticket, None);
    assert_eq!(r.status, 101, "{}", r.head);
    let line = s.wait_log_line(|l| l.contains("event=auth_ok") && l.contains("ticket=true"));
    assert_eq!(
        log_value(&line, "peer").as_deref(),
        Some("198.51.100.7:41001"),
        "{line}"
    );
    // A LOCAL header (the balancer's own health check) leaves the TCP peer.
    let local = [b"\r\n\r\n\0\r\nQUIT\n".as_slice(), &[0x20, 0x00, 0, 0]].concat();
    let r = exchange(
        &s,
        &local,
        &request_bytes(&s.host(), "GET", "/healthz", &[]),
    );
    assert_eq!(r.status, 200, "{}", r.head);
    // X-Forwarded-For from a client behind the PROXY header is not trusted.
    let ticket = ticket_of(&post_ticket(&s, v1.as_bytes(), &t, Some("192.0.2.9")));
    assert_eq!(upgrade(&s, v1.as_bytes(), &ticket, None).status, 101);
}

/// What the server sends back on a connection: nothing at all, then the close.
fn silent_close(s: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(bytes).unwrap();
    let mut got = Vec::new();
    // A reset instead of a FIN is also a close without an answer.
    let _ = c.read_to_end(&mut got);
    got
}

#[test]
fn proxy_protocol_connections_without_a_valid_header_are_closed_without_an_answer() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    let s = serve(&k, &["--proxy-protocol"]);
    let t = token(&k);
    let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&t))]);
    // No header at all.
    assert_eq!(silent_close(&s, &req), b"");
    // A malformed v1 line, a v2 header with a wrong version, a v2 header that
    // announces more than a header may hold.
    let bad_v1 = [b"PROXY TCP4 1.2.3.4 nope 1 2\r\n".as_slice(), &req].concat();
    assert_eq!(silent_close(&s, &bad_v1), b"");
    let mut bad_v2 = v2_header([198, 51, 100, 7], 1);
    bad_v2[12] = 0x11;
    assert_eq!(silent_close(&s, &bad_v2), b"");
    let mut huge = v2_header([198, 51, 100, 7], 1);
    huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    assert_eq!(silent_close(&s, &huge), b"");
    s.wait_log_line(|l| l.contains("event=refuse") && l.contains("reason=bad_proxy_header"));
    // The server still serves a good one.
    let v1 = format!("PROXY TCP4 {CLIENT} 127.0.0.1 41000 8080\r\n");
    assert_eq!(upgrade(&s, v1.as_bytes(), &t, None).status, 101);
}

#[test]
fn proxy_protocol_from_an_untrusted_peer_is_closed_without_an_answer() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    let s = serve(&k, &["--proxy-protocol", "--trusted-proxy", "10.0.0.0/8"]);
    let t = token(&k);
    let v1 = format!("PROXY TCP4 {CLIENT} 127.0.0.1 41000 8080\r\n");
    let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&t))]);
    assert_eq!(silent_close(&s, &[v1.as_bytes(), &req].concat()), b"");
    s.wait_log_line(|l| l.contains("reason=untrusted_proxy"));
}

#[test]
fn a_header_that_trickles_in_byte_by_byte_is_read_to_its_end_and_no_further() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    let s = serve(&k, &["--proxy-protocol", "--exec", "printenv REMOTE_ADDR"]);
    let t = token(&k);
    let v1 = format!("PROXY TCP4 {CLIENT} 127.0.0.1 41000 8080\r\n");
    let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&t))]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for b in v1.as_bytes() {
        c.write_all(&[*b]).unwrap();
        std::thread::yield_now();
    }
    c.write_all(&req).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 101, "{}", r.head);
    // The process's first line, as a text frame: REMOTE_ADDR is the PROXY client. It
    // may have come with the 101, in the same read.
    let mut frame = r.body.clone();
    let mut rest = vec![0u8; (2 + CLIENT.len()).saturating_sub(frame.len())];
    c.read_exact(&mut rest).unwrap();
    frame.extend_from_slice(&rest);
    frame.truncate(2 + CLIENT.len());
    assert_eq!(frame[..2], [0x81, CLIENT.len() as u8], "{frame:?}");
    assert_eq!(&frame[2..], CLIENT.as_bytes(), "{frame:?}");
}

#[test]
fn bad_ranges_are_configuration_errors() {
    if !supported() {
        return;
    }
    for (range, why) in [
        ("10.0.0.0/33", "prefix length"),
        ("nope", "not an IP address"),
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
    ] {
        let out = wsgate(&["serve", "--trusted-proxy", range]);
        assert_eq!(out.status.code(), Some(2), "{range}");
        let err = stderr_of(&out);
        assert!(
            err.contains(&format!("--trusted-proxy {range}")) && err.contains(why),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn a_header_that_stalls_half_way_holds_its_slot_only_until_the_head_deadline() {
    if !supported() {
        return;
    }
    let k = LocalKey::generate();
    let s = serve(&k, &["--proxy-protocol", "--max-connections", "1"]);
    let v1 = format!("PROXY TCP4 {CLIENT} 127.0.0.1 41000 8080\r\n");
    let healthz = request_bytes(&s.host(), "GET", "/healthz", &[]);
    // A client that leaves half-way through its header frees its slot at once.
    let mut leaver = TcpStream::connect(s.addr).unwrap();
    leaver.write_all(&v1.as_bytes()[..10]).unwrap();
    drop(leaver);
    eventually("the leaver's slot is free", IO_TIMEOUT, || {
        exchange(&s, v1.as_bytes(), &healthz).status == 200
    });
    // One that stalls half-way holds the one slot: the next client gets 503.
    let mut staller = TcpStream::connect(s.addr).unwrap();
    staller.write_all(&v1.as_bytes()[..20]).unwrap();
    eventually("the staller holds the slot", IO_TIMEOUT, || {
        exchange(&s, v1.as_bytes(), &healthz).status == 503
    });
    // Dropped without an answer at the deadline (10 s after accept), bounded wait.
    staller
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    match staller.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the staller was not dropped: {e}"),
    }
    assert_eq!(got, b"", "the staller got an answer");
    eventually("its slot is free again", IO_TIMEOUT, || {
        exchange(&s, v1.as_bytes(), &healthz).status == 200
    });
}
