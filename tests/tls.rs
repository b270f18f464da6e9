//! Black-box tests of TLS on the listener (`docs/operations.md#tls`): every auth method
//! over `wss://`, the endpoints over `https://`, the Origin rule's port 443, plain text on
//! the TLS port, a handshake that stalls (head deadline, `--max-connections`), bad PEM
//! files, both-or-neither, SIGHUP reload (the served certificate changes, a session opened
//! before keeps running; a failed reload changes nothing), a `wss://` upstream verified
//! with `--upstream-ca`, and `wsgate bench wss://`.
//!
//! A CA and leaf certificates are made per test with rcgen, in a temporary
//! directory; the clients are futures-rustls trusting that CA. Against a binary built
//! without the `tls` feature (the router build, `WSGATE_TEST_BIN`), each test checks
//! the one-line refusal instead. Every wait is bounded; nothing sleeps to synchronise.

mod common;
use common::*;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use futures_rustls::rustls::pki_types::{CertificateDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::stream::StreamExt as _;

type Tls = futures_rustls::client::TlsStream<smol::net::TcpStream>;
type Wss = WebSocketStream<Tls>;

// ---------------------------------------------------------------------------
// Certificates

/// A test CA and the files of a leaf it signed (`localhost`, `127.0.0.1`).
struct Pki {
    dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_path: String,
}

/// A leaf certificate: its DER (compared as the fingerprint) and PEM files.
struct Leaf {
    der: Vec<u8>,
    chain_pem: String,
    key_pem: String,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "wsgate test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = TempDir::new();
        let ca_path = dir.file("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Pki { dir, ca, ca_path }
    }

    fn leaf(&self) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            der: cert.der().to_vec(),
            // The chain as certbot's fullchain.pem: leaf first, then the CA.
            chain_pem: format!("{}{}", cert.pem(), self.ca.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `leaf` as `name.crt` / `name.key` (replacing by rename, as certbot does);
    /// returns the two paths.
    fn write(&self, name: &str, leaf: &Leaf) -> (String, String) {
        let (cert, key) = (
            self.dir.file(&format!("{name}.crt")),
            self.dir.file(&format!("{name}.key")),
        );
        for (path, text) in [(&cert, &leaf.chain_pem), (&key, &leaf.key_pem)] {
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (cert, key)
    }

    #[allow(deprecated)] // rustls's `ring` provider: the one wsgate uses.
    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Whether the binary under test has TLS. Without it, checks the refusal (one line,
/// exit 2) so that the router build's run of this suite still tests something.
fn tls_build() -> bool {
    let out = wsgate(&["serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
    let err = stderr_of(&out);
    if err.contains("this build has no TLS") {
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            err.trim_end(),
            r#"error: --tls-cert: this build has no TLS (feature "tls")"#
        );
        eprintln!("tls: the binary under test has no TLS; checked its refusal only");
        return false;
    }
    true
}

/// A TLS server with a fresh PKI and leaf, and a key for tokens.
struct TlsServer {
    pki: Pki,
    leaf: Leaf,
    key: LocalKey,
    server: Server,
    client: Arc<ClientConfig>,
}

impl TlsServer {
    fn start(extra: &[&str]) -> TlsServer {
        let pki = Pki::new();
        let leaf = pki.leaf();
        let (cert, keyfile) = pki.write("server", &leaf);
        let key = LocalKey::generate();
        let args = [
            &key.arg()[..],
            &["--tls-cert", &cert, "--tls-key", &keyfile],
            extra,
        ]
        .concat();
        let server = Server::start(&args);
        let client = pki.client();
        TlsServer {
            pki,
            leaf,
            key,
            server,
            client,
        }
    }

    fn token(&self) -> String {
        self.key.token(&Claims::new("alice"))
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `localhost:<port>`, the `Host` of a same-origin request.
    fn host(&self) -> String {
        format!("localhost:{}", self.addr().port())
    }
}

// ---------------------------------------------------------------------------
// TLS clients

async fn tls_connect(addr: SocketAddr, client: &Arc<ClientConfig>) -> std::io::Result<Tls> {
    let tcp = timeout(IO_TIMEOUT, smol::net::TcpStream::connect(addr))
        .await
        .expect("connect timeout")?;
    let name = ServerName::try_from("localhost").unwrap();
    timeout(
        IO_TIMEOUT,
        futures_rustls::TlsConnector::from(client.clone()).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timeout")
}

/// The leaf certificate the server presents, as DER.
fn served_leaf(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Status, head and body of an answer read until the server ends the stream.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn parse_answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// One HTTPS request; the answer read to the end (every non-upgrade answer closes).
async fn https(s: &TlsServer, request: &[u8]) -> Answer {
    let mut tls = tls_connect(s.addr(), &s.client).await.unwrap();
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let _ = timeout(IO_TIMEOUT, tls.read_to_end(&mut buf))
        .await
        .expect("answer not ended in time");
    parse_answer(&buf)
}

/// A WebSocket upgrade over TLS: `Ok` with the WebSocket on 101, else the answer.
async fn wss(s: &TlsServer, headers: &[(&str, &str)]) -> Result<(Wss, Answer), Answer> {
    wss_on(s, tls_connect(s.addr(), &s.client).await.unwrap(), headers).await
}

async fn wss_on(
    s: &TlsServer,
    mut tls: Tls,
    headers: &[(&str, &str)],
) -> Result<(Wss, Answer), Answer> {
    tls.write_all(&upgrade_bytes(&s.host(), "/", headers))
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match timeout(IO_TIMEOUT, tls.read(&mut chunk)).await {
            Some(Ok(0)) | None | Some(Err(_)) => return Err(parse_answer(&buf)),
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let answer = parse_answer(&buf[..end]);
    if answer.status != 101 {
        return Err(answer);
    }
    let rest = buf[end..].to_vec();
    let ws =
        WebSocketStream::from_partially_read(tls, rest, tungstenite::protocol::Role::Client, None)
            .await;
    Ok((ws, answer))
}

async fn wss_ok(s: &TlsServer, headers: &[(&str, &str)]) -> (Wss, Answer) {
    match wss(s, headers).await {
        Ok(v) => v,
        Err(a) => panic!("expected 101, got {}", a.head),
    }
}

async fn next_text<S>(ws: &mut WebSocketStream<S>) -> String
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    loop {
        match timeout(IO_TIMEOUT, ws.next()).await {
            Some(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Some(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn echoes<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text.to_owned())).await.unwrap();
    assert_eq!(next_text(ws).await, text);
}

// ---------------------------------------------------------------------------
// Every route over TLS

#[test]
fn every_method_over_wss() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    let token = s.token();
    run(async {
        let (mut ws, _) = wss_ok(&s, &[("Authorization", &bearer(&token))]).await;
        echoes(&mut ws, "header").await;

        let offered = format!("wsgate, {token}");
        let (mut ws, answer) = wss_ok(&s, &[("Sec-WebSocket-Protocol", &offered)]).await;
        assert!(
            answer.head.contains("Sec-WebSocket-Protocol: wsgate"),
            "{}",
            answer.head
        );
        echoes(&mut ws, "protocol").await;

        // A browser's cookie request on the same origin: https, Host with the port.
        let cookie = format!("wsgate_token={token}");
        let origin = format!("https://{}", s.host());
        let (mut ws, _) = wss_ok(&s, &[("Cookie", &cookie), ("Origin", &origin)]).await;
        echoes(&mut ws, "cookie").await;

        let (mut ws, _) = wss_ok(&s, &[]).await;
        ws.send(Message::text(token.clone())).await.unwrap();
        assert!(
            next_text(&mut ws)
                .await
                .contains(r#""type":"authenticated""#)
        );
        echoes(&mut ws, "message").await;

        // A ticket minted over https, used over wss.
        let answer = https(
            &s,
            &request_bytes(
                &s.host(),
                "POST",
                "/ticket",
                &[("Authorization", &bearer(&token)), ("Content-Length", "0")],
            ),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert!(answer.head.contains("Cache-Control: no-store"));
        let v: serde_json::Value = serde_json::from_str(answer.body.trim()).unwrap();
        let ticket = v["ticket"].as_str().unwrap().to_owned();
        let offered = format!("wsgate, {ticket}");
        let (mut ws, _) = wss_ok(&s, &[("Sec-WebSocket-Protocol", &offered)]).await;
        echoes(&mut ws, "ticket").await;
        // Once only.
        match wss(&s, &[("Sec-WebSocket-Protocol", &offered)]).await {
            Err(a) => assert_eq!(a.status, 401, "{}", a.head),
            Ok(_) => panic!("a ticket used twice"),
        }
    });
    let log = s.server.log();
    for method in ["header", "protocol", "cookie", "message"] {
        assert!(
            log.lines()
                .any(|l| l.contains("event=auth_ok") && l.contains(&format!("method={method}"))),
            "{method}: {log}"
        );
    }
}

#[test]
fn endpoints_over_https() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    run(async {
        let a = https(&s, &request_bytes(&s.host(), "GET", "/healthz", &[])).await;
        assert_eq!((a.status, a.body.as_str()), (200, "ok\n"), "{}", a.head);
        let a = https(&s, &request_bytes(&s.host(), "GET", "/metrics", &[])).await;
        assert_eq!(a.status, 200);
        assert!(a.body.contains("wsgate_connections_active"));
        let a = https(
            &s,
            &request_bytes(&s.host(), "POST", "/ticket", &[("Content-Length", "0")]),
        )
        .await;
        assert_eq!(a.status, 401, "{}", a.head);
        // Not an upgrade, not an endpoint: 426, over TLS too.
        let a = https(&s, &request_bytes(&s.host(), "GET", "/", &[])).await;
        assert_eq!(a.status, 426, "{}", a.head);
        // ALPN: http/1.1 is what the server picks.
        let tls = tls_connect(s.addr(), &s.client).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    });
}

/// On a TLS listener a `Host` without a port means 443, whatever the Origin's scheme,
/// and an `http://` Origin is the same origin only through an explicit port.
#[test]
fn origin_rule_takes_port_443_on_tls() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    let cookie = format!("wsgate_token={}", s.token());
    run(async {
        let try_origin = |host: &'static str, origin: &'static str| {
            let cookie = cookie.clone();
            let s = &s;
            async move {
                let headers = [("Host", host), ("Origin", origin), ("Cookie", &cookie)];
                let mut tls = tls_connect(s.addr(), &s.client).await.unwrap();
                let req = upgrade_bytes(host, "/", &headers);
                tls.write_all(&req).await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match timeout(IO_TIMEOUT, tls.read(&mut chunk)).await {
                        Some(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break,
                    }
                }
                parse_answer(&buf).status
            }
        };
        assert_eq!(try_origin("gw.example", "https://gw.example").await, 101);
        assert_eq!(try_origin("gw.example", "http://gw.example").await, 403);
        // An http:// Origin's implied 80 is not an explicit port: still cross-origin.
        assert_eq!(try_origin("gw.example:80", "http://gw.example").await, 403);
        assert_eq!(
            try_origin("gw.example:80", "http://gw.example:80").await,
            101
        );
    });
}

// ---------------------------------------------------------------------------
// Clients that do not speak TLS

#[test]
fn plain_http_on_the_tls_port_gets_no_answer() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    let token = s.token();
    run(async {
        let mut tcp = smol::net::TcpStream::connect(s.addr()).await.unwrap();
        let req = upgrade_bytes(&s.host(), "/", &[("Authorization", &bearer(&token))]);
        tcp.write_all(&req).await.unwrap();
        let mut got = Vec::new();
        let ended = timeout(IO_TIMEOUT, async {
            let mut chunk = [0u8; 1024];
            loop {
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert!(
            ended.is_some(),
            "the server did not close a plain-text client"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("HTTP/1.1"), "{text}");
        assert!(!text.contains("101"), "{text}");
    });
    let line = s.server.wait_log_line(|l| l.contains("event=tls_fail"));
    assert!(line.contains("reason="), "{line}");
    // One line for that client, and the server still serves.
    run(async {
        let (mut ws, _) = wss_ok(&s, &[("Authorization", &bearer(&token))]).await;
        echoes(&mut ws, "still here").await;
    });
    let log = s.server.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("event=tls_fail")).count(),
        1,
        "{log}"
    );
}

/// A client that starts a TLS handshake and stalls holds a `--max-connections` slot
/// (others get 503) until the 10 s head deadline drops it.
#[test]
fn stalled_handshake_holds_a_slot_until_the_head_deadline() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&["--max-connections", "1"]);
    run(async {
        let mut staller = smol::net::TcpStream::connect(s.addr()).await.unwrap();
        // A TLS record header announcing a handshake message that never comes.
        staller
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
            .await
            .unwrap();
        let started = Instant::now();
        // The staller holds the one slot: the next client is answered 503 (over TLS).
        // Accepts are in order, so once the staller is counted, this one is over.
        let a = https(&s, &request_bytes(&s.host(), "GET", "/healthz", &[])).await;
        assert_eq!(a.status, 503, "{}", a.head);
        assert!(a.head.contains("Retry-After: 1"), "{}", a.head);
        // Dropped at the deadline (10 s after accept), with a bounded wait.
        let mut chunk = [0u8; 64];
        let read = timeout(Duration::from_secs(20), staller.read(&mut chunk)).await;
        assert!(
            matches!(read, Some(Ok(0)) | Some(Err(_))),
            "the staller was not dropped: {read:?}"
        );
        assert!(started.elapsed() >= Duration::from_secs(5));
        // Its slot is free again, and one line says why it went.
        let a = https(&s, &request_bytes(&s.host(), "GET", "/healthz", &[])).await;
        assert_eq!(a.status, 200, "{}", a.head);
    });
    s.server
        .wait_log_line(|l| l.contains("event=tls_fail") && l.contains("reason=timeout"));
}

// ---------------------------------------------------------------------------
// Configuration errors

fn serve_err(args: &[&str]) -> String {
    let out = wsgate(&[&["serve", "--listen", "127.0.0.1:0"][..], args].concat());
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
    let err = stderr_of(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn tls_options_go_together() {
    if !tls_build() {
        return;
    }
    let pki = Pki::new();
    let (cert, key) = pki.write("s", &pki.leaf());
    assert!(serve_err(&["--tls-cert", &cert]).starts_with("error: --tls-cert: "));
    assert!(serve_err(&["--tls-key", &key]).starts_with("error: --tls-cert: "));
}

#[test]
fn bad_pem_files_name_the_file() {
    if !tls_build() {
        return;
    }
    let pki = Pki::new();
    let leaf = pki.leaf();
    let (cert, key) = pki.write("s", &leaf);
    let (_, other_key) = pki.write("other", &pki.leaf());
    let garbage = pki.dir.file("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = pki.dir.file("missing.pem");
    let key_body: Vec<&str> = leaf
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let cases: [(&[&str], String); 6] = [
        (
            &["--tls-cert", &missing, "--tls-key", &key],
            format!("error: --tls-cert {missing}: no such file"),
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &missing],
            format!("error: --tls-key {missing}: no such file"),
        ),
        (
            &["--tls-cert", &garbage, "--tls-key", &key],
            format!("error: --tls-cert {garbage}: no certificate"),
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &garbage],
            format!("error: --tls-key {garbage}: no private key"),
        ),
        // The files swapped: a key where the chain goes, and the reverse.
        (
            &["--tls-cert", &key, "--tls-key", &cert],
            format!("error: --tls-cert {key}: no certificate"),
        ),
        (
            &["--tls-cert", &cert, "--tls-key", &other_key],
            format!("error: --tls-key {other_key}: does not match the certificate in {cert}"),
        ),
    ];
    for (args, want) in cases {
        let err = serve_err(args);
        assert!(err.starts_with(&want), "{args:?}:\n{err}\nwanted {want}");
        for line in &key_body {
            assert!(!err.contains(line), "key bytes printed: {err}");
        }
    }
}

/// PKCS#1 (RSA) and SEC1 (EC) keys, converted with the openssl CLI when it is there.
#[test]
fn pkcs1_and_sec1_keys() {
    if !tls_build() {
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("pkcs1_and_sec1_keys: no openssl CLI; skipped");
        return;
    }
    let pki = Pki::new();
    let leaf = pki.leaf();
    let (cert, pkcs8) = pki.write("s", &leaf);
    let sec1 = pki.dir.file("sec1.key");
    let st = Command::new("openssl")
        .args(["ec", "-in", &pkcs8, "-out", &sec1])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    // An RSA leaf signed by the test CA, its key written as PKCS#1.
    let rsa8 = pki.dir.file("rsa8.key");
    let rsa1 = pki.dir.file("rsa1.key");
    let ok = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    ok(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &rsa8,
    ]);
    ok(&["rsa", "-in", &rsa8, "-traditional", "-out", &rsa1]);
    assert!(
        std::fs::read_to_string(&rsa1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let rsa_pair = KeyPair::from_pem_and_sign_algo(
        &std::fs::read_to_string(&rsa8).unwrap(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let rsa_cert = params.signed_by(&rsa_pair, &pki.ca).unwrap();
    let rsa_chain = pki.dir.file("rsa.crt");
    std::fs::write(&rsa_chain, rsa_cert.pem()).unwrap();
    let key = LocalKey::generate();
    for (cert, keyfile, der) in [
        (cert.as_str(), sec1.as_str(), leaf.der.clone()),
        (rsa_chain.as_str(), rsa1.as_str(), rsa_cert.der().to_vec()),
    ] {
        let server =
            Server::start(&[&key.arg()[..], &["--tls-cert", cert, "--tls-key", keyfile]].concat());
        let client = pki.client();
        run(async {
            let tls = tls_connect(server.addr, &client).await.unwrap();
            assert_eq!(served_leaf(&tls), der);
        });
    }
}

// ---------------------------------------------------------------------------
// Reload

#[test]
fn sighup_switches_the_certificate_and_sessions_go_on() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    let token = s.token();
    let renewed = s.pki.leaf();
    run(async {
        let (mut before, _) = wss_ok(&s, &[("Authorization", &bearer(&token))]).await;
        echoes(&mut before, "before").await;
        assert_eq!(
            served_leaf(&tls_connect(s.addr(), &s.client).await.unwrap()),
            s.leaf.der
        );

        s.pki.write("server", &renewed);
        s.server.signal("HUP");
        let line = s.server.wait_log_line(|l| l.contains("event=reload"));
        assert!(
            line.contains("tls=ok") && line.contains("level=info"),
            "{line}"
        );

        let fresh = tls_connect(s.addr(), &s.client).await.unwrap();
        assert_eq!(served_leaf(&fresh), renewed.der);
        assert_ne!(renewed.der, s.leaf.der);
        let (mut after, _) = wss_on(&s, fresh, &[("Authorization", &bearer(&token))])
            .await
            .unwrap_or_else(|a| panic!("{}", a.head));
        echoes(&mut after, "after").await;
        // The session opened before the reload keeps running.
        echoes(&mut before, "still before").await;
    });
}

#[test]
fn failed_reload_changes_nothing() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    let key = s.pki.dir.file("server.key");
    std::fs::remove_file(&key).unwrap();
    s.server.signal("HUP");
    let line = s.server.wait_log_line(|l| l.contains("event=reload"));
    assert!(line.starts_with("level=error"), "{line}");
    assert!(
        line.contains(&key) && line.contains("no such file"),
        "{line}"
    );
    // A key that does not match the certificate: refused too.
    std::fs::write(&key, s.pki.leaf().key_pem).unwrap();
    s.server.signal("HUP");
    s.server.stderr.wait_for(IO_TIMEOUT, |t| {
        t.lines().filter(|l| l.contains("event=reload")).count() == 2
    });
    let log = s.server.log();
    let second = log
        .lines()
        .filter(|l| l.contains("event=reload"))
        .nth(1)
        .unwrap();
    assert!(second.contains("does not match"), "{second}");
    let token = s.token();
    run(async {
        let fresh = tls_connect(s.addr(), &s.client).await.unwrap();
        assert_eq!(served_leaf(&fresh), s.leaf.der);
        let (mut ws, _) = wss_on(&s, fresh, &[("Authorization", &bearer(&token))])
            .await
            .unwrap_or_else(|a| panic!("{}", a.head));
        echoes(&mut ws, "unchanged").await;
    });
}

// ---------------------------------------------------------------------------
// Client side: a wss:// upstream, and the bench

/// A TLS WebSocket upstream: answers each message with `<X-Wsgate-Sub>: <text>`.
// The header callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
fn wss_upstream(pki: &Pki) -> SocketAddr {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let leaf = pki.leaf();
    let (cert, key) = pki.write("upstream", &leaf);
    let certs: Vec<CertificateDer<'static>> = {
        use rustls::pki_types::pem::PemObject as _;
        CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let key = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap()
    };
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        smol::block_on(async {
            let listener = smol::net::TcpListener::try_from(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                smol::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut sub = String::new();
                    let callback =
                        |req: &tungstenite::handshake::server::Request,
                         resp: tungstenite::handshake::server::Response| {
                            sub = req
                                .headers()
                                .get("x-wsgate-sub")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            Ok(resp)
                        };
                    let Ok(mut ws) = async_tungstenite::accept_hdr_async(tls, callback).await
                    else {
                        return;
                    };
                    while let Some(Ok(msg)) = ws.next().await {
                        if let Message::Text(t) = msg {
                            let _ = ws.send(Message::text(format!("{sub}: {t}"))).await;
                        } else if msg.is_close() {
                            break;
                        }
                    }
                })
                .detach();
            }
        })
    });
    addr
}

#[test]
fn proxy_to_a_wss_upstream_with_upstream_ca() {
    if !tls_build() {
        return;
    }
    let pki = Pki::new();
    let up = wss_upstream(&pki);
    let url = format!("wss://localhost:{}/app", up.port());
    let key = LocalKey::generate();
    let trusted = Server::start(
        &[
            &key.arg()[..],
            &["--upstream", &url, "--upstream-ca", &pki.ca_path],
        ]
        .concat(),
    );
    let token = key.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&trusted, &token).await;
        send_text(&mut ws, "hi").await;
        assert_eq!(recv_text(&mut ws).await, "alice: hi");
        let _ = ws.close(None).await;
    });
    // Without --upstream-ca the test CA is not trusted: 1011, one error line.
    let untrusted = Server::start(&[&key.arg()[..], &["--upstream", &url]].concat());
    run(async {
        let mut ws = ws_bearer(&untrusted, &token).await;
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!((code, reason.as_str()), (1011, "upstream unavailable"));
    });
    let line = untrusted.wait_log_line(|l| l.contains("event=upstream_error"));
    assert!(
        line.contains("stage=dial") && line.contains("tls"),
        "{line}"
    );
    // --upstream-ca with a ws:// upstream, or a file that is not PEM: exit 2.
    let ws_url = format!("ws://127.0.0.1:{}/", up.port());
    assert!(
        serve_err(
            &[
                &key.arg()[..],
                &["--upstream", &ws_url, "--upstream-ca", &pki.ca_path]
            ]
            .concat()
        )
        .starts_with("error: --upstream-ca: ")
    );
    let missing = pki.dir.file("nope.pem");
    assert!(
        serve_err(
            &[
                &key.arg()[..],
                &["--upstream", &url, "--upstream-ca", &missing]
            ]
            .concat()
        )
        .starts_with(&format!("error: --upstream-ca {missing}: no such file"))
    );
}

#[cfg(feature = "bench")]
#[test]
fn bench_over_wss_with_ca() {
    if !tls_build() {
        return;
    }
    let s = TlsServer::start(&[]);
    let url = format!("wss://127.0.0.1:{}/", s.addr().port());
    let out = Command::new(bin())
        .args([
            "bench",
            &url,
            "--key",
            &s.key.path,
            "--ca",
            &s.pki.ca_path,
            "-n",
            "20",
            "-c",
            "4",
            "--method",
            "cookie",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], 20, "{report}");
    // Without --ca the server's certificate is not trusted: every connection fails.
    let out = Command::new(bin())
        .args([
            "bench",
            &url,
            "--key",
            &s.key.path,
            "-n",
            "2",
            "-c",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
}

/// Under `--proxy-protocol` the balancer's header comes before the TLS handshake (as
/// HAProxy's `send-proxy-v2` in TCP mode sends it): it names the client, and the TLS
/// session that follows is untouched by it.
#[test]
fn a_proxy_protocol_header_comes_before_tls() {
    if !tls_build() || !stdout_of(&wsgate(&["serve", "--help"])).contains("--proxy-protocol") {
        return;
    }
    let s = TlsServer::start(&["--proxy-protocol"]);
    run(async {
        let mut tcp = smol::net::TcpStream::connect(s.addr()).await.unwrap();
        tcp.write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 41000 443\r\n")
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = timeout(
            IO_TIMEOUT,
            futures_rustls::TlsConnector::from(s.client.clone()).connect(name, tcp),
        )
        .await
        .expect("TLS handshake timeout")
        .expect("TLS handshake after the PROXY header");
        let (mut ws, _) = match wss_on(&s, tls, &[("Authorization", &bearer(&s.token()))]).await {
            Ok(x) => x,
            Err(a) => panic!("expected 101, got:\n{}", a.head),
        };
        echoes(&mut ws, "hello").await;
        // Without the header, the TLS client's own hello is refused silently.
        assert!(tls_connect(s.addr(), &s.client).await.is_err());
    });
    let line = s.server.wait_log_line(|l| l.contains("event=auth_ok"));
    assert_eq!(
        log_value(&line, "peer").as_deref(),
        Some("198.51.100.7:41000"),
        "{line}"
    );
}
