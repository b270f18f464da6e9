//! Full loopback round trips (connect → 101 → authenticated → one echo → close) for
//! each method against a real `wsgate::Server`, and the BASELINE floor in the same
//! run: a minimal async-tungstenite echo server (`accept_hdr_async` with a pasetors
//! cookie check and nothing else). Each server runs in a child process pinned to
//! CPU 0; the load (`wsgate bench`'s load generator, src/cli/bench/) runs here, pinned
//! to CPU 1. The figure is the server's CPU time (getrusage, µs) per round trip at 64 concurrent clients, and
//! every figure is printed as a ratio to the floor measured in the same round.
//!
//! `cargo bench --bench handshake`; `WSGATE_BENCH_N` round trips per measure
//! [4000], `WSGATE_BENCH_ROUNDS` interleaved rounds [5], `WSGATE_BENCH_C` [64].
//!
//! CPU time on a shared machine is noisy (the floor itself varies by ±30 % between
//! rounds here). `WSGATE_BENCH_COUNT=instructions` measures the same cases in a way
//! that does not depend on the machine's load: each server runs under
//! `valgrind --tool=callgrind`, which counts the instructions it executes in user
//! space (not the kernel's TCP work, which both servers share), once for
//! `WSGATE_BENCH_N` round trips [1000] and once for 100; the difference divided by
//! the difference in round trips is the cost of one round trip, without start-up,
//! warm-up and shutdown. Clients come one at a time (`WSGATE_BENCH_C` [1]), so that
//! no batching depends on timing. `WSGATE_BENCH_COUNT=syscalls` counts system calls
//! per round trip with `perf stat -e raw_syscalls:sys_enter` (every thread of the
//! server, at full speed) over one run of `WSGATE_BENCH_N` [20 000] (start-up
//! included), a proxy for the kernel's share; it varies from run to run, since the
//! calls that find a socket not ready and the event loop's turns depend on timing.
//! (Not `strace -c`: it slows the server until every read finds data and every turn
//! of its event loop serves many connections, which hides half the calls.)
//! `WSGATE_BENCH_ONLY=cookie` counts the floor and the cases whose label holds `cookie`
//! (and their own floor).
//!
//! With the `tls` feature (default), the same for TLS (issue 14): a CA and a leaf for
//! 127.0.0.1 are made with rcgen at the start, in the bench's temporary directory;
//! wsgate serves them through `Config::tls` (`wsgate::Tls::load`, as
//! `--tls-cert`/`--tls-key`) and the TLS floor, a futures-rustls `TlsAcceptor` (ring,
//! rustls's defaults: TLS 1.3, its session cache) in front of the floor above, serves
//! the same two files. The load connects to `wss://` trusting the CA, one rustls
//! client configuration per run (it resumes sessions as a browser would, against both
//! servers alike). Those rows are ratios to the TLS floor of the same round (or run),
//! the others to the plain floor as before. `WSGATE_BENCH_ONLY=TLS` counts the floors
//! and the TLS rows.

mod harness;
// The load generator of `wsgate bench`, a module of the binary (not of the library),
// included as it is: it is written against `wsgate::…` paths only. What the binary uses
// of it and this bench does not (text and JSON reports, URL parsing, its unit tests) is
// dead code here.
#[allow(dead_code, unused_imports)]
#[path = "../src/cli/bench/mod.rs"]
mod bench;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use bench::{BenchMethod, Credentials, Options};
use smol::stream::StreamExt as _;
use wsgate::{Config, Handler, Key, Server};

const SERVER_CPU: usize = 0;
const LOAD_CPU: usize = 1;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "__child") {
        child(&args[i + 1], &args[i + 2], &args[i + 3]);
        return;
    }
    if !harness::enabled() {
        return;
    }
    if std::env::var("WSGATE_BENCH_COUNT").is_ok() {
        instructions();
    } else {
        parent();
    }
}

// ---------------------------------------------------------------------------
// The child: a server on 127.0.0.1:0 that prints `addr=…` and then answers each
// line on stdin with its own CPU time in µs.

fn child(kind: &str, key_file: &str, log_level: &str) {
    harness::pin_to(SERVER_CPU);
    let paserk = std::fs::read_to_string(key_file).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    std::thread::spawn(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
            println!("{}", harness::process_cpu_us());
        }
        std::process::exit(0);
    });
    match kind {
        "wsgate" | "wsgate-long" => {
            let long = kind == "wsgate-long";
            wsgate::set_log_level(log_level.parse().unwrap());
            let mut config = Config::default();
            config.listen = addr;
            config.keys.push(Key::from_paserk(&paserk).unwrap());
            if long {
                // Long sessions on: in-band refresh, the operators' listener, and a
                // full revocation list that matches none of the load's tokens.
                config.refresh = true;
                config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            }
            smol::block_on(async {
                let server = Server::bind(config, Handler::echo()).await.unwrap();
                if long {
                    preload_revocations(&server.handle(), log_level);
                }
                println!("addr={}", server.local_addr().unwrap());
                server.run().await.unwrap();
            });
        }
        #[cfg(feature = "tls")]
        "wsgate-tls" => {
            wsgate::set_log_level(log_level.parse().unwrap());
            let (cert, key) = tls_files(key_file);
            let mut config = Config::default();
            config.listen = addr;
            config.keys.push(Key::from_paserk(&paserk).unwrap());
            config.tls = Some(std::sync::Arc::new(wsgate::Tls::load(&cert, &key).unwrap()));
            smol::block_on(async {
                let server = Server::bind(config, Handler::echo()).await.unwrap();
                println!("addr={}", server.local_addr().unwrap());
                server.run().await.unwrap();
            });
        }
        #[cfg(feature = "tls")]
        "baseline-tls" => baseline(addr, &paserk, Some(tls_floor_acceptor(key_file))),
        _ => baseline(addr, &paserk, None),
    }
}

/// Entries in the revocation list of the `wsgate-long` server.
const REVOCATIONS: usize = 100_000;

/// Fills the revocation list (half by `jti`, half by `sub`; the load's tokens match
/// none) and prints what it cost in resident memory, as a `note:` line.
fn preload_revocations(handle: &wsgate::ServerHandle, log_level: &str) {
    use wsgate::Revocation;
    wsgate::set_log_level(wsgate::LogLevel::Error);
    let before = harness::rss_kib();
    for i in 0..REVOCATIONS / 2 {
        handle
            .revoke(&Revocation::Jti(format!("revoked-jti-{i:08}")))
            .unwrap();
        handle
            .revoke(&Revocation::Sub(format!("revoked-user-{i:08}")))
            .unwrap();
    }
    let grown = harness::rss_kib().saturating_sub(before);
    println!(
        "note: {REVOCATIONS} revocation entries: +{grown} KiB RSS, {} bytes per entry",
        grown * 1024 / REVOCATIONS as u64
    );
    wsgate::set_log_level(log_level.parse().unwrap());
}

/// Without the `tls` feature the TLS floor is never started; a stand-in type keeps
/// [`baseline`]'s signature.
#[cfg(not(feature = "tls"))]
type TlsAcceptor = std::convert::Infallible;
#[cfg(feature = "tls")]
use futures_rustls::TlsAcceptor;

/// The floor: accept, check the cookie with pasetors, echo. Same read buffer and
/// write policy as wsgate, same single-threaded smol executor. With `tls`, the TLS
/// floor: the same after a futures-rustls handshake ([`tls_floor_acceptor`]).
fn baseline(addr: SocketAddr, paserk: &str, tls: Option<TlsAcceptor>) {
    use pasetors::keys::SymmetricKey;
    use pasetors::version4::V4;
    let key: &'static SymmetricKey<V4> = Box::leak(Box::new(
        SymmetricKey::<V4>::try_from(paserk.trim()).unwrap(),
    ));
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let listener = smol::net::TcpListener::bind(addr).await.unwrap();
        println!("addr={addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // One task type per server kind: the plain floor's tasks stay as small as
            // they were before the TLS floor was added.
            match &tls {
                None => ex.spawn(async move {
                    let _ = stream.set_nodelay(true);
                    floor_session(stream, key).await;
                }),
                #[cfg(feature = "tls")]
                Some(acceptor) => {
                    let _ = stream.set_nodelay(true);
                    let accept = acceptor.accept(stream);
                    ex.spawn(async move {
                        if let Ok(stream) = accept.await {
                            floor_session(stream, key).await;
                        }
                    })
                }
                #[cfg(not(feature = "tls"))]
                Some(never) => match *never {},
            }
            .detach();
        }
    }));
}

/// One floor connection: the WebSocket handshake with the cookie check, then echo.
// The callback's error type is tungstenite's, fixed by its `Callback` trait.
#[allow(clippy::result_large_err)]
async fn floor_session<S>(
    stream: S,
    key: &'static pasetors::keys::SymmetricKey<pasetors::version4::V4>,
) where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    use pasetors::token::UntrustedToken;
    use pasetors::version4::{LocalToken, V4};
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        #[derive(serde::Deserialize)]
        struct Claims<'a> {
            #[serde(borrow)]
            exp: std::borrow::Cow<'a, str>,
        }
        let deny = || {
            let mut r = ErrorResponse::new(None);
            *r.status_mut() = async_tungstenite::tungstenite::http::StatusCode::UNAUTHORIZED;
            r
        };
        let token = req
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|p| p.trim().strip_prefix("wsgate_token="))
            .ok_or_else(deny)?;
        let t =
            UntrustedToken::<pasetors::token::Local, V4>::try_from(token).map_err(|_| deny())?;
        let opened = LocalToken::decrypt(key, &t, None, None).map_err(|_| deny())?;
        let c: Claims<'_> = serde_json::from_str(opened.payload()).map_err(|_| deny())?;
        match wsgate::internal::parse_rfc3339(&c.exp) {
            Some(exp) if exp >= wsgate::unix_now() => Ok(resp),
            _ => Err(deny()),
        }
    };
    let Ok(mut ws) =
        async_tungstenite::accept_hdr_async_with_config(stream, check, Some(config)).await
    else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        if matches!(m, Message::Text(_) | Message::Binary(_)) && ws.send(m).await.is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// TLS (feature `tls`): one CA and a leaf for 127.0.0.1, made with rcgen at the
// bench's start in its temporary directory (`ca.pem`, `tls.crt`, `tls.key`, next to
// the token key's file); both TLS servers load the same two files, the load trusts
// the CA.

/// The leaf's chain and key files in the directory of `key_file`.
#[cfg(feature = "tls")]
fn tls_files(key_file: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::path::Path::new(key_file).parent().unwrap();
    (dir.join("tls.crt"), dir.join("tls.key"))
}

/// The CA file the load trusts, in the directory of `key_file`.
#[cfg(feature = "tls")]
fn tls_ca(key_file: &str) -> std::path::PathBuf {
    std::path::Path::new(key_file)
        .parent()
        .unwrap()
        .join("ca.pem")
}

/// Writes a fresh CA (`ca.pem`) and a leaf it signed for `127.0.0.1` (`tls.crt`, leaf
/// then CA; `tls.key`, ECDSA P-256 as rcgen makes by default) next to `key_file`.
#[cfg(feature = "tls")]
fn write_certificates(key_file: &str) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "wsgate bench CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let (cert, key) = tls_files(key_file);
    std::fs::write(tls_ca(key_file), ca.pem()).unwrap();
    std::fs::write(cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(key, leaf_key.serialize_pem()).unwrap();
}

/// The TLS floor's acceptor: rustls with the `ring` provider and its defaults (TLS
/// 1.3 and 1.2, the default session cache), the same files as wsgate, and ALPN
/// `http/1.1` as wsgate offers (the load asks for it; without it the two servers'
/// handshakes would differ by that extension).
#[cfg(feature = "tls")]
#[allow(deprecated)] // rustls's `ring` provider: the one wsgate uses.
fn tls_floor_acceptor(key_file: &str) -> TlsAcceptor {
    use futures_rustls::rustls;
    use futures_rustls::rustls::pki_types::pem::PemObject as _;
    use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = tls_files(key_file);
    let certs = CertificateDer::pem_file_iter(&cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(std::sync::Arc::new(config))
}

// ---------------------------------------------------------------------------
// The parent: starts the servers, drives the load, prints the table.

struct ServerProc {
    child: Child,
    /// `None` once closed ([`ServerProc::finish`]).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    addr: String,
    /// For a TLS server (`*-tls`): the CA file the load trusts (and a `wss://` URL).
    ca: Option<std::path::PathBuf>,
}

impl ServerProc {
    fn start(kind: &str, key_file: &str, log_level: &str) -> ServerProc {
        ServerProc::start_under(&[], kind, key_file, log_level)
    }

    /// Starts the child under `wrapper` (a command and its arguments, e.g. valgrind).
    fn start_under(wrapper: &[&str], kind: &str, key_file: &str, log_level: &str) -> ServerProc {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let (program, args) = match wrapper {
            [program, args @ ..] => (*program, args),
            [] => (exe, &[][..]),
        };
        let mut command = Command::new(program);
        command.args(args);
        if !wrapper.is_empty() {
            command.arg(exe);
        }
        let mut child = command
            .args(["__child", kind, key_file, log_level])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // The server's log lines are written (their cost is counted) and dropped.
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        while let Some(note) = line.trim().strip_prefix("note: ") {
            println!("({kind}: {note})");
            line.clear();
            stdout.read_line(&mut line).unwrap();
        }
        let Some(addr) = line.trim().strip_prefix("addr=") else {
            panic!("{kind} server did not start (is `{program}` installed?)");
        };
        let addr = addr.to_owned();
        #[cfg(feature = "tls")]
        let ca = kind.ends_with("-tls").then(|| tls_ca(key_file));
        #[cfg(not(feature = "tls"))]
        let ca = None;
        ServerProc {
            child,
            stdin: Some(stdin),
            stdout,
            addr,
            ca,
        }
    }

    fn cpu_us(&mut self) -> u64 {
        writeln!(self.stdin.as_mut().unwrap(), "cpu").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    /// Ends the child the way the bench ends it (stdin closed: it exits 0) and
    /// waits for it.
    fn finish(mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

struct Measure {
    cpu_us_per_rt: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

/// The load: `n` round trips by `method` against `server`, `c` at once, a token
/// minted per connection with the key `paserk`; over TLS (`wss://`, trusting its CA)
/// when `server` is a TLS server.
fn load(
    server: &ServerProc,
    paserk: &str,
    method: BenchMethod,
    n: u64,
    c: usize,
    timeout: Duration,
) -> Options {
    let scheme = if server.ca.is_some() { "wss" } else { "ws" };
    let mut opts = Options::new(
        wsgate::client::WsUrl::parse(&format!("{scheme}://{}/", server.addr)).unwrap(),
        Credentials::Mint(Key::from_paserk(paserk).unwrap()),
    );
    #[cfg(feature = "tls")]
    {
        opts.ca = server.ca.clone();
    }
    opts.method = method;
    opts.connections = n;
    opts.concurrency = c;
    opts.progress = false;
    opts.timeout = timeout;
    opts
}

/// A fresh local key, written to a file in a new temporary directory:
/// (the directory, the key file's path, the key as PASERK). With `tls`, the
/// certificates next to it ([`write_certificates`]).
fn key_in_temp_dir() -> (std::path::PathBuf, String, String) {
    let dir = std::env::temp_dir().join(format!("wsgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    let key = Key::generate_local().unwrap();
    std::fs::write(&key_file, key.to_paserk().as_str()).unwrap();
    let key_file = key_file.to_str().unwrap().to_owned();
    #[cfg(feature = "tls")]
    write_certificates(&key_file);
    (dir, key_file, key.to_paserk().to_string())
}

fn measure(server: &mut ServerProc, key: &str, method: BenchMethod, n: u64, c: usize) -> Measure {
    let opts = load(server, key, method, n, c, Duration::from_secs(20));
    let before = server.cpu_us();
    let report = bench::run(&opts).unwrap();
    let after = server.cpu_us();
    let echo = report.phases.iter().find(|p| p.phase == "echo");
    Measure {
        cpu_us_per_rt: (after - before) as f64 / report.ok.max(1) as f64,
        p50_ms: echo.map_or(f64::NAN, |p| p.p50_ms),
        p99_ms: echo.map_or(f64::NAN, |p| p.p99_ms),
        failed: report.failed,
    }
}

fn parent() {
    let pinned = harness::pin_to(LOAD_CPU);
    let n: u64 = harness::env_or("WSGATE_BENCH_N", 4000);
    let rounds: usize = harness::env_or("WSGATE_BENCH_ROUNDS", 5);
    let c: usize = harness::env_or("WSGATE_BENCH_C", 64);
    let (dir, key_file, paserk) = key_in_temp_dir();

    let mut servers = vec![
        ServerProc::start("baseline", &key_file, "info"),
        ServerProc::start("wsgate", &key_file, "info"),
        ServerProc::start("wsgate", &key_file, "warn"),
    ];

    // (label, which server, method, which case is its floor)
    #[allow(unused_mut)]
    let mut cases: Vec<(&str, usize, BenchMethod, usize)> = vec![
        ("BASELINE cookie (floor)", 0, BenchMethod::Cookie, 0),
        ("wsgate header", 1, BenchMethod::Header, 0),
        ("wsgate protocol", 1, BenchMethod::Protocol, 0),
        ("wsgate cookie", 1, BenchMethod::Cookie, 0),
        ("wsgate message", 1, BenchMethod::Message, 0),
        ("wsgate ticket (2 connections)", 1, BenchMethod::Ticket, 0),
        ("wsgate cookie --log-level warn", 2, BenchMethod::Cookie, 0),
    ];
    // TLS rows: ratios to the TLS floor (the same certificate and key, rustls, ring).
    #[cfg(feature = "tls")]
    {
        servers.push(ServerProc::start("baseline-tls", &key_file, "info"));
        servers.push(ServerProc::start("wsgate-tls", &key_file, "info"));
        let (floor_case, floor_server, wsgate_tls) =
            (cases.len(), servers.len() - 2, servers.len() - 1);
        cases.extend([
            (
                "BASELINE TLS cookie (floor)",
                floor_server,
                BenchMethod::Cookie,
                floor_case,
            ),
            (
                "wsgate cookie over TLS",
                wsgate_tls,
                BenchMethod::Cookie,
                floor_case,
            ),
            (
                "wsgate header over TLS",
                wsgate_tls,
                BenchMethod::Header,
                floor_case,
            ),
        ]);
    }
    // Warm up every server and path once.
    for &(_, s, m, _) in &cases {
        let server = &mut servers[s];
        measure(server, &paserk, m, 500, c);
    }
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut failed = 0;
    for _ in 0..rounds {
        // Each floor's figure in this round (a floor comes before its cases).
        let mut now = vec![0.0; cases.len()];
        for (i, &(_, s, m, floor)) in cases.iter().enumerate() {
            let server = &mut servers[s];
            let r = measure(server, &paserk, m, n, c);
            failed += r.failed;
            now[i] = r.cpu_us_per_rt;
            cpu[i].push(r.cpu_us_per_rt);
            ratio[i].push(r.cpu_us_per_rt / now[floor]);
            p50[i].push(r.p50_ms);
            p99[i].push(r.p99_ms);
        }
    }
    println!(
        "server CPU per round trip (connect, 101, authenticated, 1 echo, close), {n} round trips \
         x {rounds} rounds at {c} concurrent clients; server pinned to CPU {SERVER_CPU}, load to \
         CPU {LOAD_CPU}: {}",
        if pinned { "yes" } else { "no (one CPU)" }
    );
    println!(
        "{:<34}{:>10}{:>16}{:>10}{:>16}{:>9}{:>9}",
        "server / method", "µs/RT", "(min..max)", "x floor", "(min..max)", "p50 ms", "p99 ms"
    );
    for (i, (label, _, _, _)) in cases.iter().enumerate() {
        let lo = |v: &Vec<f64>| v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = |v: &Vec<f64>| v.iter().copied().fold(0.0, f64::max);
        let (clo, chi, rlo, rhi) = (lo(&cpu[i]), hi(&cpu[i]), lo(&ratio[i]), hi(&ratio[i]));
        println!(
            "{label:<34}{:>10.1}{:>16}{:>10.3}{:>16}{:>9.2}{:>9.2}",
            harness::median(&mut cpu[i]),
            format!("({clo:.1}..{chi:.1})"),
            harness::median(&mut ratio[i]),
            format!("({rlo:.2}..{rhi:.2})"),
            harness::median(&mut p50[i]),
            harness::median(&mut p99[i]),
        );
    }
    if failed > 0 {
        println!("WARNING: {failed} round trips failed");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// WSGATE_BENCH_COUNT=instructions: user-space instructions per round trip.

/// What a counted server run counts.
#[derive(Clone, Copy)]
enum Count {
    /// User-space instructions, `valgrind --tool=callgrind` (`totals:` line).
    Instructions,
    /// System calls, `perf stat -e raw_syscalls:sys_enter` (all threads).
    Syscalls,
}

/// The count of one server run of `n` round trips.
#[allow(clippy::too_many_arguments)]
fn count_of(
    count: Count,
    out: &std::path::Path,
    kind: &str,
    key_file: &str,
    paserk: &str,
    method: BenchMethod,
    n: u64,
    c: usize,
) -> u64 {
    let out_arg = match count {
        Count::Instructions => format!("--callgrind-out-file={}", out.display()),
        Count::Syscalls => format!("--output={}", out.display()),
    };
    let wrapper: Vec<&str> = match count {
        Count::Instructions => vec!["valgrind", "--tool=callgrind", "--quiet", &out_arg],
        // A tracepoint counter, not `strace`: strace slows the server so much that
        // its reads always find data and its event loop batches everything, which
        // hides the calls a server at full speed makes.
        Count::Syscalls => vec![
            "perf",
            "stat",
            "--no-big-num",
            "-x,",
            "-e",
            "raw_syscalls:sys_enter",
            &out_arg,
            "--",
        ],
    };
    let server = ServerProc::start_under(&wrapper, kind, key_file, "info");
    let opts = load(&server, paserk, method, n, c, Duration::from_secs(60));
    let report = bench::run(&opts).unwrap();
    assert_eq!(
        report.failed, 0,
        "{kind} {method:?}: round trips failed when counted"
    );
    server.finish();
    let text = std::fs::read_to_string(out).unwrap();
    let total = match count {
        // `totals: 123456`
        Count::Instructions => text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok()),
        // `1234,,raw_syscalls:sys_enter,…`: the count is the first field.
        Count::Syscalls => text
            .lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))
            .and_then(|l| l.split(',').next()?.parse().ok()),
    };
    total.unwrap_or_else(|| panic!("no total in {}", out.display()))
}

fn instructions() {
    let count = match std::env::var("WSGATE_BENCH_COUNT").as_deref() {
        Ok("syscalls") => Count::Syscalls,
        _ => Count::Instructions,
    };
    // Counting system calls costs the server nothing: more round trips, less noise.
    let default_n = match count {
        Count::Instructions => 1000,
        Count::Syscalls => 20_000,
    };
    let n: u64 = harness::env_or("WSGATE_BENCH_N", default_n);
    let c: usize = harness::env_or("WSGATE_BENCH_C", 1);
    let base_n = 100;
    assert!(n > base_n, "WSGATE_BENCH_N must be over {base_n}");
    let (dir, key_file, paserk) = key_in_temp_dir();
    // (label, server kind, method, which case is its floor)
    #[allow(unused_mut)]
    let mut cases: Vec<(&str, &str, BenchMethod, usize)> = vec![
        (
            "BASELINE cookie (floor)",
            "baseline",
            BenchMethod::Cookie,
            0,
        ),
        ("wsgate header", "wsgate", BenchMethod::Header, 0),
        ("wsgate protocol", "wsgate", BenchMethod::Protocol, 0),
        ("wsgate cookie", "wsgate", BenchMethod::Cookie, 0),
        ("wsgate message", "wsgate", BenchMethod::Message, 0),
        (
            "wsgate ticket (2 connections)",
            "wsgate",
            BenchMethod::Ticket,
            0,
        ),
        // --refresh, --admin-listen and 100 000 revocation entries loaded.
        (
            "wsgate header, long sessions",
            "wsgate-long",
            BenchMethod::Header,
            0,
        ),
        (
            "wsgate cookie, long sessions",
            "wsgate-long",
            BenchMethod::Cookie,
            0,
        ),
    ];
    // TLS rows: ratios to the TLS floor (the same certificate and key, rustls, ring).
    #[cfg(feature = "tls")]
    {
        let floor = cases.len();
        cases.extend([
            (
                "BASELINE TLS cookie (floor)",
                "baseline-tls",
                BenchMethod::Cookie,
                floor,
            ),
            (
                "wsgate cookie over TLS",
                "wsgate-tls",
                BenchMethod::Cookie,
                floor,
            ),
            (
                "wsgate header over TLS",
                "wsgate-tls",
                BenchMethod::Header,
                floor,
            ),
        ]);
    }
    let (what, unit, runs) = match count {
        Count::Instructions => (
            "user-space instructions (callgrind)",
            "instr/RT",
            format!("({n} - {base_n} round trips)"),
        ),
        Count::Syscalls => (
            "system calls (perf stat -e raw_syscalls:sys_enter)",
            "calls/RT",
            format!("{n} round trips"),
        ),
    };
    println!(
        "{what} per round trip (connect, 101, authenticated, 1 echo, close), \
         {runs} at {c} concurrent client(s)"
    );
    println!("{:<34}{:>14}{:>10}", "server / method", unit, "x floor");
    // `WSGATE_BENCH_ONLY=cookie`: the cases whose label holds it, and their floors.
    let only = std::env::var("WSGATE_BENCH_ONLY").unwrap_or_default();
    let mut counted = vec![false; cases.len()];
    for (i, &(label, _, _, floor)) in cases.iter().enumerate() {
        if label.contains(only.as_str()) {
            counted[i] = true;
            counted[floor] = true;
        }
    }
    counted[0] = true;
    let mut per_case = vec![0.0; cases.len()];
    for (i, &(label, kind, method, floor)) in cases.iter().enumerate() {
        if !counted[i] {
            continue;
        }
        let out = dir.join(format!("count.{i}"));
        let large = count_of(count, &out, kind, &key_file, &paserk, method, n, c);
        let per_rt = match count {
            Count::Instructions => {
                let small = count_of(count, &out, kind, &key_file, &paserk, method, base_n, c);
                large.saturating_sub(small) as f64 / (n - base_n) as f64
            }
            // How many calls find a socket not ready (EAGAIN) depends on timing, so
            // a difference of two runs is noisier than the whole run: start-up and
            // shutdown (~100 calls) are counted in.
            Count::Syscalls => large as f64 / n as f64,
        };
        per_case[i] = per_rt;
        // A floor comes before its cases.
        println!(
            "{label:<34}{per_rt:>14.1}{:>10.3}",
            per_rt / per_case[floor]
        );
    }
    if std::env::var_os("WSGATE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
