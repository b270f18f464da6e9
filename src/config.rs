//! Server configuration as a plain value, and the errors that name the bad option.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Methods;
use crate::tickets::DEFAULT_TICKET_CAPACITY;
use crate::token::Key;

/// What happens after authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Send every text and binary message back.
    #[default]
    Echo,
    /// Relay to `ws://host:port/path`, or `wss://…` with the `tls` feature
    /// (`docs/protocol.md#proxy-mode`).
    Upstream(String),
    /// Run a process per connection, websocketd style (`docs/protocol.md#process-mode`).
    Exec(String),
}

/// Everything `serve` needs. Build with `Config::default()` and set fields.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// Socket address to bind. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Verification keys, in try order. Must not be empty.
    pub keys: Vec<Key>,
    /// Enabled methods. Default `header,protocol,cookie,message`.
    pub methods: Methods,
    /// Cookie carrying the token. Default `wsgate_token`.
    pub cookie_name: String,
    /// Exact browser origins allowed (`https://app.example.com`). Default none.
    pub allowed_origins: Vec<String>,
    /// First-message deadline. Default 5 s.
    pub auth_timeout: Duration,
    /// Required `aud`, if any.
    pub audience: Option<String>,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`, seconds. Default 60.
    pub leeway: u64,
    /// Open TCP connections beyond which every request gets 503. Default 10 000.
    pub max_connections: usize,
    /// Executor threads sharing the listener and all state; 0 = one per available
    /// core. Default 1: one core serves thousands of sessions, and an embedder's
    /// process keeps its threads.
    pub threads: usize,
    /// Largest message, bytes; larger closes with 1009. Default 1 MiB.
    pub max_message: usize,
    /// When set, upgrades are accepted on this path only (404 elsewhere).
    pub path: Option<String>,
    /// What sessions do. Default echo.
    pub mode: Mode,
    /// Lifetime of minted tickets. Default 30 s.
    pub ticket_ttl: u64,
    /// Bound on live tickets; `POST /ticket` answers 503 beyond it. Default 320 000
    /// (10 000 tickets a second for the default 30 s TTL; 20 bytes each, 6.1 MiB full).
    pub ticket_capacity: usize,
    /// Serve plain `GET`/`HEAD` from this directory.
    pub static_dir: Option<PathBuf>,
    /// Idle clients are pinged this often and dropped when the next ping is due
    /// without an answer. Default 30 s (`docs/protocol.md#after-authentication`).
    pub ping_interval: Duration,
    /// Whole request head must arrive within this. Default 10 s
    /// (`docs/protocol.md#order-of-checks`).
    pub head_timeout: Duration,
    /// On shutdown, wait this long for closing handshakes. Default 10 s
    /// (`docs/operations.md#signals`).
    pub shutdown_grace: Duration,
    /// In-band refresh: sessions read `{"type":"refresh","token":…}` messages
    /// themselves and send the `expiring` notice. Default off
    /// (`docs/protocol.md#expiry-notice-and-in-band-refresh`).
    pub refresh: bool,
    /// With `refresh`: the `expiring` notice goes out this long before `exp`.
    /// Default 30 s.
    pub refresh_notice: Duration,
    /// How long a revocation entry is kept, seconds. Default 86 400 (a day).
    pub revoke_ttl: u64,
    /// Bound on live revocation entries; beyond it a revocation is refused (503).
    /// Default 100 000.
    pub revoke_capacity: usize,
    /// The operators' listener (`POST /revoke`, `GET /sessions`, `/healthz`,
    /// `/metrics`), plain HTTP, no authentication of its own. Default off.
    pub admin_listen: Option<SocketAddr>,
    /// Speak TLS on the listener with this certificate and key (`docs/operations.md#tls`).
    /// The handshake counts against `head_timeout` and `max_connections`. Default none.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<crate::tls::Tls>>,
    /// Peers whose `X-Forwarded-For` names the client
    /// (`docs/operations.md#behind-a-load-balancer`). Default none.
    #[cfg(feature = "load-balancer")]
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Every connection begins with a PROXY protocol header (v1 or v2) from a trusted
    /// peer (any peer when `trusted_proxies` is empty), which names the client; a
    /// connection without a valid one is closed without an answer. Default off.
    #[cfg(feature = "load-balancer")]
    pub proxy_protocol: bool,
    /// Share tickets and revocations with the other nodes on this Redis (README
    /// "Running several nodes"). Default none.
    #[cfg(feature = "redis")]
    pub redis: Option<crate::cluster::RedisUrl>,
    /// Prefix of every Redis key and channel. Default `wsgate:`.
    #[cfg(feature = "redis")]
    pub redis_prefix: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            keys: Vec::new(),
            methods: Methods::default(),
            cookie_name: "wsgate_token".into(),
            allowed_origins: Vec::new(),
            auth_timeout: Duration::from_secs(5),
            audience: None,
            issuer: None,
            leeway: 60,
            max_connections: 10_000,
            threads: 1,
            max_message: 1 << 20,
            path: None,
            mode: Mode::Echo,
            ticket_ttl: 30,
            ticket_capacity: DEFAULT_TICKET_CAPACITY,
            static_dir: None,
            ping_interval: Duration::from_secs(30),
            head_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            refresh: false,
            refresh_notice: Duration::from_secs(30),
            revoke_ttl: crate::revocation::DEFAULT_REVOKE_TTL,
            revoke_capacity: crate::revocation::DEFAULT_REVOKE_CAPACITY,
            admin_listen: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "load-balancer")]
            trusted_proxies: Default::default(),
            #[cfg(feature = "load-balancer")]
            proxy_protocol: false,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            redis_prefix: "wsgate:".into(),
        }
    }
}

impl Config {
    /// Whether the listener speaks TLS (always `false` without the `tls` feature).
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// A configuration mistake, naming the option or file. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// The option, file or variable at fault: `--key /etc/wsgate.key`, `WSGATE_KEY`.
    pub what: String,
    /// What is wrong with it.
    pub why: String,
}

impl ConfigError {
    /// An error about `what`.
    pub fn new(what: impl Into<String>, why: impl fmt::Display) -> ConfigError {
        ConfigError {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

impl std::error::Error for ConfigError {}

/// An IO error as a short phrase (`no such file`), without the OS error number.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::InvalidData => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}
