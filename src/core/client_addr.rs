//! The client's address behind a load balancer, sans IO
//! (`docs/operations.md#behind-a-load-balancer`): which TCP peers are trusted proxies, the `X-Forwarded-For` rule, and the
//! PROXY protocol header (v1 text, v2 binary) that L4 balancers put before the
//! first byte of the connection.
//!
//! The address found here is the one tickets are bound to, `REMOTE_ADDR` of
//! `--exec` and `peer=` in the logs. A peer that is not a trusted proxy cannot
//! claim another address: its `X-Forwarded-For` is ignored, and with the PROXY
//! protocol on, its connection is closed without an answer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::auth::canonical;

/// An address range, `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = usize::from(bits / 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let net = canonical(net);
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.parse::<u8>() {
                Ok(n) if n <= max && b.bytes().all(|c| c.is_ascii_digit()) => n,
                _ => return Err(format!("`/{b}`: the prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr { net, bits };
        // Host bits set (`10.0.0.1/8`) is almost always a typo for another range.
        if cidr.masked() != net {
            return Err(format!(
                "`{s}` has host bits set (did you mean {}?)",
                Cidr {
                    net: cidr.masked(),
                    bits
                }
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn masked(&self) -> IpAddr {
        fn mask(octets: &mut [u8], bits: u8) {
            for (i, o) in octets.iter_mut().enumerate() {
                let keep = u32::from(bits).saturating_sub(8 * i as u32).min(8);
                *o &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            }
        }
        match self.net {
            IpAddr::V4(v4) => {
                let mut o = v4.octets();
                mask(&mut o, self.bits);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                mask(&mut o, self.bits);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

/// The `--trusted-proxy` ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// These ranges.
    pub fn new(ranges: Vec<Cidr>) -> TrustedProxies {
        TrustedProxies(ranges)
    }

    /// Whether no range is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` carrying these
    /// `X-Forwarded-For` header values, in order: from a trusted peer, the right-most
    /// entry that is not itself trusted (all trusted: the left-most); no header, a
    /// peer that is not trusted, or an entry that is not an address: the peer.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut entries: Vec<&str> = Vec::new();
        for value in forwarded_for {
            entries.extend(value.split(',').map(str::trim));
        }
        let mut client = None;
        for entry in entries.iter().rev() {
            // An entry that is not an address (`unknown`, garbage) ends the chain of
            // trust: what is left of it cannot be vouched for.
            let Some(ip) = parse_forwarded_ip(entry) else {
                break;
            };
            client = Some(ip);
            if !self.contains(ip) {
                break;
            }
        }
        client.map_or(peer, canonical)
    }
}

/// An `X-Forwarded-For` entry: `192.0.2.7`, `2001:db8::1`, and the forms some
/// proxies write with a port, `192.0.2.7:41000` and `[2001:db8::1]:41000`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse().ok()
}

/// Longest PROXY header taken: a v1 line is at most 107 bytes; a v2 header is 16
/// bytes and its addresses (36 for IPv6, 216 for UNIX), plus the TLVs that cloud
/// balancers add (a few hundred bytes at most).
pub const MAX_PROXY_HEADER: usize = 2048;

/// What the start of a connection says, under `--proxy-protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    /// More bytes are needed.
    Incomplete,
    /// A header of this many bytes, naming the client (`None`: a v2 `LOCAL`
    /// connection or v1 `UNKNOWN`, such as the balancer's own health check: the TCP
    /// peer is the client).
    Complete(usize, Option<SocketAddr>),
    /// Not a PROXY header, or a malformed or oversized one.
    Invalid,
}

/// Longest v1 header line, `\r\n` included (the protocol's own bound).
const MAX_V1: usize = 107;

/// Parses a PROXY protocol header (v1 or v2) at the start of `buf`. The header is
/// handed to the parser only once it is whole (a v1 line with its end, a v2 header
/// of its announced length), so a partial one is never misread.
pub fn parse_proxy_header(buf: &[u8]) -> ProxyHeader {
    const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    const V1_PREFIX: &[u8] = b"PROXY ";
    let starts = |p: &[u8]| buf[..buf.len().min(p.len())] == p[..buf.len().min(p.len())];
    if starts(V2_SIGNATURE) {
        if buf.len() < 16 {
            return ProxyHeader::Incomplete;
        }
        let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > MAX_PROXY_HEADER {
            return ProxyHeader::Invalid;
        }
        let Some(whole) = buf.get(..len) else {
            return ProxyHeader::Incomplete;
        };
        let Ok(h) = ppp::v2::Header::try_from(whole) else {
            return ProxyHeader::Invalid;
        };
        let addr = match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, ppp::v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            // UNIX sockets or an unspecified family: the balancer's own business.
            _ => None,
        };
        return ProxyHeader::Complete(len, addr);
    }
    if !starts(V1_PREFIX) {
        return ProxyHeader::Invalid;
    }
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= MAX_V1 {
            ProxyHeader::Invalid
        } else {
            ProxyHeader::Incomplete
        };
    };
    let len = end + 2;
    let Ok(h) = ppp::v1::Header::try_from(&buf[..len]) else {
        return ProxyHeader::Invalid;
    };
    let addr = match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    };
    ProxyHeader::Complete(len, addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()).collect())
    }

    #[test]
    fn ranges_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.1.2.3")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let odd: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains(ip("172.31.255.255")) && !odd.contains(ip("172.32.0.0")));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/x",
            "nope",
            "10.0.0.1/8",
            "::/129",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(
            "10.0.0.1/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_peers() {
        let t = trusted(&["10.0.0.0/8"]);
        // Untrusted peer: its header is ignored.
        assert_eq!(
            t.client_ip(ip("203.0.113.1"), ["198.51.100.7"]),
            ip("203.0.113.1")
        );
        // Trusted peer, no header: the peer.
        assert_eq!(t.client_ip(ip("10.0.0.2"), []), ip("10.0.0.2"));
        // Right-most untrusted entry; a forged left part is skipped.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["1.2.3.4, 198.51.100.7, 10.0.0.9"]),
            ip("198.51.100.7")
        );
        // Several header lines read as one list.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["1.2.3.4", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        // All trusted: the left-most.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["10.0.0.5, 10.0.0.6"]),
            ip("10.0.0.5")
        );
        // With ports, brackets, spaces.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), [" [2001:db8::1]:4100 "]),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["192.0.2.1:80"]),
            ip("192.0.2.1")
        );
        // Garbage at the right end: the peer; garbage further left stops the walk.
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["1.2.3.4, unknown"]),
            ip("10.0.0.2")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), ["unknown, 10.0.0.7"]),
            ip("10.0.0.7")
        );
        // Nothing trusted: always the peer.
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.2"), ["1.2.3.4"]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn proxy_v1_headers() {
        let h = b"PROXY TCP4 198.51.100.7 10.0.0.1 41000 8080\r\nGET / HTTP/1.1\r\n";
        let n = b"PROXY TCP4 198.51.100.7 10.0.0.1 41000 8080\r\n".len();
        assert_eq!(
            parse_proxy_header(h),
            ProxyHeader::Complete(n, Some("198.51.100.7:41000".parse().unwrap()))
        );
        let h6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 41000 443\r\n";
        assert_eq!(
            parse_proxy_header(h6),
            ProxyHeader::Complete(h6.len(), Some("[2001:db8::7]:41000".parse().unwrap()))
        );
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n"),
            ProxyHeader::Complete(15, None)
        );
        for i in 0..n {
            assert_eq!(parse_proxy_header(&h[..i]), ProxyHeader::Incomplete, "{i}");
        }
        assert_eq!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n"),
            ProxyHeader::Invalid
        );
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 x 1\r\n"),
            ProxyHeader::Invalid
        );
        assert_eq!(
            parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"),
            ProxyHeader::Invalid
        );
        // A line that never ends is refused at the v1 bound, not waited for.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse_proxy_header(&long), ProxyHeader::Invalid);
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[test]
    fn proxy_v2_headers() {
        let mut a = vec![198, 51, 100, 7, 10, 0, 0, 1];
        a.extend_from_slice(&41000u16.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &a);
        assert_eq!(
            parse_proxy_header(&[h.as_slice(), b"\x16\x03\x01"].concat()),
            ProxyHeader::Complete(h.len(), Some("198.51.100.7:41000".parse().unwrap()))
        );
        for i in 0..h.len() {
            assert_eq!(parse_proxy_header(&h[..i]), ProxyHeader::Incomplete, "{i}");
        }
        // LOCAL (a health check): the TCP peer.
        let local = v2(0, 0x00, &[]);
        assert_eq!(parse_proxy_header(&local), ProxyHeader::Complete(16, None));
        // IPv6 with a TLV after the addresses.
        let mut a6 = [[0x20, 0x01, 0x0d, 0xb8].as_slice(), &[0; 11], &[7]].concat();
        a6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a6.extend_from_slice(&[0; 11]);
        a6.push(1);
        a6.extend_from_slice(&[0xa0, 0x28, 0x01, 0xbb]);
        a6.extend_from_slice(&[0x04, 0x00, 0x02, b'o', b'k']);
        let h6 = v2(1, 0x21, &a6);
        assert_eq!(
            parse_proxy_header(&h6),
            ProxyHeader::Complete(h6.len(), Some("[2001:db8::7]:41000".parse().unwrap()))
        );
        // An announced length over the bound is refused at once.
        let mut huge = v2(1, 0x11, &a);
        huge[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(parse_proxy_header(&huge[..16]), ProxyHeader::Invalid);
        // Wrong version nibble.
        let mut bad = h.clone();
        bad[12] = 0x31;
        assert_eq!(parse_proxy_header(&bad), ProxyHeader::Invalid);
    }
}
