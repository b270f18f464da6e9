//! Server configuration as a plain value, its checks, and the errors that name the bad
//! setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Methods;
use crate::tickets::DEFAULT_TICKET_CAPACITY;
use crate::token::Key;

/// Everything `serve` needs but what sessions do: that is the
/// [`Handler`](crate::Handler) given to [`Server::bind`](crate::Server::bind) beside
/// it (echo, upstream, exec or a function of your own). Build with
/// `Config::default()` and set fields; `Server::bind` checks them with
/// [`Config::validate`].
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
    /// Share tickets and revocations with the other nodes on this Redis
    /// (`docs/operations.md#several-nodes-redis`). Default none.
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

/// Whether `name` can be a cookie's name: an RFC 6265 token (visible ASCII without
/// separators).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

impl Config {
    /// Checks the values a server cannot run with: no key, a cookie name that is not
    /// one, a `path` that does not start with `/`, a `static_dir` that is not a
    /// directory, zero where zero would refuse or drop everything (connections,
    /// message size, capacities, lifetimes, and under a second for `auth_timeout`,
    /// `ping_interval`, `head_timeout`). The error's `what` is the field, then its
    /// value where it has one (`path ws`); [`Server::bind`](crate::Server::bind)
    /// calls this first.
    ///
    /// ```
    /// let mut config = wsgate::Config::default();
    /// config.keys.push(wsgate::Key::generate_local().unwrap());
    /// assert!(config.validate().is_ok());
    /// config.max_connections = 0;
    /// assert_eq!(
    ///     config.validate().unwrap_err().to_string(),
    ///     "max_connections: must be at least 1"
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.keys.is_empty() {
            return Err(ConfigError::new("keys", "no key given"));
        }
        if !is_cookie_name(&self.cookie_name) {
            return Err(ConfigError::new(
                format!("cookie_name {}", self.cookie_name),
                "not a valid cookie name",
            ));
        }
        // Zero would time every client out, ping (and drop) every session at once, let
        // no ticket or revocation live; answer 503 to everything, close every message,
        // or refuse every ticket or revocation.
        const SECOND: &str = "must be at least 1s";
        const ONE: &str = "must be at least 1";
        let zero = |field: &str, why: &str| Err(ConfigError::new(field, why));
        if self.auth_timeout.as_secs() == 0 {
            return zero("auth_timeout", SECOND);
        }
        if self.ticket_ttl == 0 {
            return zero("ticket_ttl", SECOND);
        }
        if self.ping_interval.as_secs() == 0 {
            return zero("ping_interval", SECOND);
        }
        if self.head_timeout.as_secs() == 0 {
            return zero("head_timeout", SECOND);
        }
        if self.revoke_ttl == 0 {
            return zero("revoke_ttl", SECOND);
        }
        if self.max_connections == 0 {
            return zero("max_connections", ONE);
        }
        if self.max_message == 0 {
            return zero("max_message", ONE);
        }
        if self.ticket_capacity == 0 {
            return zero("ticket_capacity", ONE);
        }
        if self.revoke_capacity == 0 {
            return zero("revoke_capacity", ONE);
        }
        if let Some(p) = self.path.as_ref().filter(|p| !p.starts_with('/')) {
            return Err(ConfigError::new(format!("path {p}"), "must start with /"));
        }
        if let Some(d) = self.static_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(ConfigError::new(
                format!("static_dir {}", d.display()),
                "not a directory",
            ));
        }
        #[cfg(feature = "redis")]
        if self.redis_prefix.is_empty() || self.redis_prefix.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "redis_prefix",
                "must be non-empty, without control characters",
            ));
        }
        Ok(())
    }

    /// Whether the listener speaks TLS (always `false` without the `tls` feature).
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

/// A configuration mistake, naming the setting, option or file. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    /// What is at fault. From the library: the setting, as the library names it (a
    /// [`Config`] field like `max_connections`, or a constructor's argument like
    /// `upstream`, `exec`, `tls_cert`), then its value when it has one
    /// (`path ws`, `tls_cert /etc/wsgate/cert.pem`). The `wsgate` binary turns those
    /// into its flags (`--max-connections`); its own errors name the option, file or
    /// variable (`--key /etc/wsgate.key`, `WSGATE_KEY`).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        let mut c = Config::default();
        c.keys.push(Key::generate_local().unwrap());
        c
    }

    /// Each rule of `validate`, with the error it gives: the field (and its value).
    #[test]
    fn validate_names_the_field() {
        assert_eq!(valid().validate(), Ok(()));
        let refused = |change: fn(&mut Config)| {
            let mut c = valid();
            change(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert_eq!(refused(|c| c.keys.clear()), "keys: no key given");
        assert_eq!(
            refused(|c| c.cookie_name = "a;b".into()),
            "cookie_name a;b: not a valid cookie name"
        );
        assert_eq!(
            refused(|c| c.cookie_name.clear()),
            "cookie_name : not a valid cookie name"
        );
        assert_eq!(
            refused(|c| c.ping_interval = Duration::from_millis(500)),
            "ping_interval: must be at least 1s"
        );
        assert_eq!(
            refused(|c| c.auth_timeout = Duration::ZERO),
            "auth_timeout: must be at least 1s"
        );
        assert_eq!(
            refused(|c| c.head_timeout = Duration::ZERO),
            "head_timeout: must be at least 1s"
        );
        assert_eq!(
            refused(|c| c.ticket_ttl = 0),
            "ticket_ttl: must be at least 1s"
        );
        assert_eq!(
            refused(|c| c.revoke_ttl = 0),
            "revoke_ttl: must be at least 1s"
        );
        assert_eq!(
            refused(|c| c.max_connections = 0),
            "max_connections: must be at least 1"
        );
        assert_eq!(
            refused(|c| c.max_message = 0),
            "max_message: must be at least 1"
        );
        assert_eq!(
            refused(|c| c.ticket_capacity = 0),
            "ticket_capacity: must be at least 1"
        );
        assert_eq!(
            refused(|c| c.revoke_capacity = 0),
            "revoke_capacity: must be at least 1"
        );
        assert_eq!(
            refused(|c| c.path = Some("ws".into())),
            "path ws: must start with /"
        );
        assert_eq!(
            refused(|c| c.static_dir = Some("/no/such/dir".into())),
            "static_dir /no/such/dir: not a directory"
        );
        #[cfg(feature = "redis")]
        assert_eq!(
            refused(|c| c.redis_prefix.clear()),
            "redis_prefix: must be non-empty, without control characters"
        );
        // What is allowed: a strict clock, no refresh notice, no grace.
        let mut c = valid();
        c.leeway = 0;
        c.refresh_notice = Duration::ZERO;
        c.shutdown_grace = Duration::ZERO;
        c.path = Some("/ws".into());
        assert_eq!(c.validate(), Ok(()));
    }
}
