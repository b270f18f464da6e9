//! Numbers and IPv4 addresses written as their `Display` writes them, but without
//! `core::fmt`, whose padding machinery cost about 150 instructions a value on the
//! paths every connection takes (its log lines, response heads, tickets).

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};

/// Writes `v` in decimal at the start of `out` (room for its digits is the caller's:
/// 20 bytes hold any `u64`); how many bytes.
pub(crate) fn put_decimal(out: &mut [u8], mut v: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = digits.len() - i;
    out[..len].copy_from_slice(&digits[i..]);
    len
}

/// Appends `v` in decimal.
pub(crate) fn push_decimal(buf: &mut String, v: u64) {
    let mut text = [0u8; 20];
    let n = put_decimal(&mut text, v);
    buf.push_str(std::str::from_utf8(&text[..n]).unwrap_or_default());
}

/// Writes `ip` dotted at the start of `out` (15 bytes of room); how many bytes.
pub(crate) fn put_ipv4(out: &mut [u8], ip: Ipv4Addr) -> usize {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        n += put_decimal(&mut out[n..], u64::from(octet));
    }
    n
}

/// Appends `v` in decimal, signed (the ticket claim's times, Unix seconds).
pub(crate) fn extend_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 20];
    let n = put_decimal(&mut digits, v.unsigned_abs());
    out.extend_from_slice(&digits[..n]);
}

/// Appends `ip` as its `Display` writes it (an IPv4 address digit by digit, an IPv6
/// one through `Display`).
pub(crate) fn extend_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let n = put_ipv4(&mut text, v4);
            out.extend_from_slice(&text[..n]);
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_display_writes() {
        for v in [0, 7, 10, 99, 1006, u64::from(u32::MAX), u64::MAX] {
            let mut s = String::new();
            push_decimal(&mut s, v);
            assert_eq!(s, v.to_string());
        }
        for ip in ["0.0.0.0", "1.2.3.4", "10.0.100.9", "255.255.255.255"] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            let mut out = [0u8; 15];
            let n = put_ipv4(&mut out, ip);
            assert_eq!(&out[..n], ip.to_string().as_bytes());
        }
        for v in [0, 1, -1, 1_765_000_000, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            extend_i64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        for ip in [
            "0.0.0.0",
            "99.100.199.255",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            extend_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }
}
