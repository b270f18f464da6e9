//! The PROXY protocol header (v1/v2) and X-Forwarded-For rule on arbitrary bytes:
//! never panics; a complete header is never longer than the input or the bound, and
//! a prefix of the input that parsed keeps parsing the same with more bytes after it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wsgate::TrustedProxies;
use wsgate::internal::{MAX_PROXY_HEADER, ProxyHeader, parse_proxy_header};

fuzz_target!(|data: &[u8]| {
    match parse_proxy_header(data) {
        ProxyHeader::Complete(n, _) => {
            assert!(n <= data.len() && n <= MAX_PROXY_HEADER);
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(parse_proxy_header(&longer), parse_proxy_header(data));
        }
        ProxyHeader::Incomplete => assert!(data.len() < MAX_PROXY_HEADER),
        ProxyHeader::Invalid => {}
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let trusted = TrustedProxies::new(
            ["10.0.0.0/8", "fd00::/8"].iter().map(|r| r.parse().unwrap()).collect(),
        );
        let _ = trusted.client_ip("10.1.1.1".parse().unwrap(), text.split('\n'));
        let _ = text.parse::<wsgate::Cidr>();
    }
});
