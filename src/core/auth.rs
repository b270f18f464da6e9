//! The sans-IO decision core: request parts + configuration + `now` → [`Decision`].
//!
//! No sockets, no async, no clock. The server calls [`Gate::check_upgrade`] with the
//! parsed request head and, when the client chose first-message authentication,
//! [`Gate::check_first_message`] with the first data frame. Tests and fuzzers call
//! the same functions.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ct_codecs::{Base64UrlSafeNoPadding, Encoder as _};

use std::sync::{Arc, Mutex, RwLock};

use crate::head::{Request, percent_decode};
use crate::revocation::{
    DEFAULT_REVOKE_CAPACITY, DEFAULT_REVOKE_TTL, Full as RevocationsFull, Revocation, Revocations,
    TokenFacts,
};
use crate::tickets::{ReplayCache, ReplayError};
use crate::time::Rfc3339;
use crate::token::{
    Claims, Key, KeyError, TICKET_CLAIM, TokenError, UntrustedToken, Verifier, is_token_shaped,
};

/// Where a token came from. Ordered as the handshake checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// `Authorization: Bearer <token>`.
    Header,
    /// A `Sec-WebSocket-Protocol` entry starting `v4.local.` / `v4.public.`.
    Protocol,
    /// `Cookie: <name>=<token>`.
    Cookie,
    /// `?token=<token>` (off by default: URLs leak into logs).
    Query,
    /// The first WebSocket text frame.
    Message,
}

impl Method {
    /// All methods, in the order the handshake checks them (message last).
    pub const ALL: [Method; 5] = [
        Method::Header,
        Method::Protocol,
        Method::Cookie,
        Method::Query,
        Method::Message,
    ];

    /// The name used by `--auth`, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Header => "header",
            Method::Protocol => "protocol",
            Method::Cookie => "cookie",
            Method::Query => "query",
            Method::Message => "message",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of enabled methods, as `--auth header,protocol,cookie,message` gives it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Methods(u8);

impl Methods {
    /// Nothing enabled.
    pub const NONE: Methods = Methods(0);

    /// Whether `m` is enabled.
    pub fn contains(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }

    /// This set with `m` added.
    pub fn with(self, m: Method) -> Methods {
        Methods(self.0 | m.bit())
    }
}

impl Default for Methods {
    /// `header,protocol,cookie,message` (query is off: tokens in URLs leak into logs).
    fn default() -> Methods {
        Methods::NONE
            .with(Method::Header)
            .with(Method::Protocol)
            .with(Method::Cookie)
            .with(Method::Message)
    }
}

impl fmt::Debug for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Method::ALL.iter().filter(|m| self.contains(**m)))
            .finish()
    }
}

impl FromStr for Methods {
    type Err = String;

    fn from_str(s: &str) -> Result<Methods, String> {
        let mut set = Methods::NONE;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let m = Method::ALL
                .into_iter()
                .find(|m| m.as_str().eq_ignore_ascii_case(name))
                .ok_or_else(|| format!("unknown method `{name}` (expected header, protocol, cookie, query, message)"))?;
            set = set.with(m);
        }
        if set == Methods::NONE {
            return Err("no method enabled".into());
        }
        Ok(set)
    }
}

/// Why a request or a first message was refused. Each maps to its HTTP status and
/// close code in one `match`, straight from the tables of `docs/protocol.md#refusals`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No token, and first-message authentication is disabled.
    MissingToken,
    /// The same, but with a `?token=` while the `query` method is off: the answer
    /// says so (`docs/protocol.md#methods`).
    QueryDisabled,
    /// Present but bad: malformed, tampered, wrong key, wrong claims.
    BadToken(TokenError),
    /// `exp` (+ leeway) passed, or the ticket expired.
    Expired,
    /// A single-use ticket presented a second time.
    TicketReused,
    /// A ticket presented from another IP than the one that fetched it.
    TicketWrongIp,
    /// A browser request whose Origin the rule refuses (always HTTP 403).
    OriginNotAllowed,
    /// No first frame within `--auth-timeout`.
    Timeout,
    /// The ticket cache is full (a ticket minted elsewhere could not be recorded).
    Busy,
    /// The token (or the one that minted the ticket) was revoked.
    Revoked,
    /// A refresh token of another `sub` than the session's.
    WrongSub,
    /// The shared state (Redis) cannot be reached: a ticket cannot be redeemed, or a
    /// node has not loaded the revocations yet. Nothing was spent.
    Unavailable,
}

/// The header of every `401` (the handshake's and `POST /ticket`'s): RFC 6750 §3.
pub(crate) const INVALID_TOKEN_CHALLENGE: (&str, &str) =
    ("WWW-Authenticate", "Bearer error=\"invalid_token\"");

impl Rejection {
    /// The HTTP status answered before an upgrade.
    pub fn status(self) -> u16 {
        match self {
            Rejection::MissingToken
            | Rejection::QueryDisabled
            | Rejection::BadToken(_)
            | Rejection::Expired
            | Rejection::TicketReused
            | Rejection::Revoked => 401,
            Rejection::TicketWrongIp | Rejection::OriginNotAllowed | Rejection::WrongSub => 403,
            Rejection::Timeout => 408,
            Rejection::Busy | Rejection::Unavailable => 503,
        }
    }

    /// The close code and reason sent after an upgrade (the reason is also the body
    /// of an HTTP refusal: the only one of these never sent in-band says why).
    pub fn close(self) -> (u16, &'static str) {
        match self {
            Rejection::MissingToken | Rejection::BadToken(_) => (4401, "invalid token"),
            Rejection::QueryDisabled => (4401, "query method is off"),
            Rejection::Expired => (4401, "token expired"),
            Rejection::TicketReused => (4401, "ticket already used"),
            Rejection::Revoked => (4401, "token revoked"),
            Rejection::TicketWrongIp | Rejection::OriginNotAllowed | Rejection::WrongSub => {
                (4403, "forbidden")
            }
            Rejection::Timeout => (4408, "authentication timeout"),
            Rejection::Busy | Rejection::Unavailable => (1013, "try again later"),
        }
    }

    /// Whether a browser gets this as `101` + close frame instead of an HTTP status.
    /// Origin refusals are always HTTP 403; a missing token is always 401.
    pub fn in_band_for_browsers(self) -> bool {
        !matches!(
            self,
            Rejection::OriginNotAllowed
                | Rejection::MissingToken
                | Rejection::QueryDisabled
                | Rejection::Busy
                | Rejection::Unavailable
        )
    }

    /// Its `reason` label of `wsgate_auth_failures_total`; `None` for a refresh for
    /// another `sub`, which only `wsgate_refreshes_total` counts.
    pub(crate) fn failure_reason(self) -> Option<FailureReason> {
        Some(match self {
            Rejection::MissingToken | Rejection::QueryDisabled | Rejection::BadToken(_) => {
                FailureReason::InvalidToken
            }
            Rejection::Expired => FailureReason::Expired,
            Rejection::TicketReused => FailureReason::TicketReused,
            Rejection::TicketWrongIp => FailureReason::ForbiddenIp,
            Rejection::OriginNotAllowed => FailureReason::ForbiddenOrigin,
            Rejection::Timeout => FailureReason::Timeout,
            Rejection::Revoked => FailureReason::Revoked,
            // The server's own limits are no authentication failure
            // (`docs/operations.md#logs`).
            Rejection::WrongSub | Rejection::Unavailable | Rejection::Busy => return None,
        })
    }

    /// The `reason` label of `wsgate_auth_failures_total` (`docs/operations.md#metrics`)
    /// for the log line; for those it does not count, `forbidden_sub` (a refresh for
    /// another `sub`), `redis_unavailable` and `ticket_cache_full`.
    pub fn metric_reason(self) -> &'static str {
        match (self.failure_reason(), self) {
            (Some(r), _) => r.as_str(),
            (None, Rejection::Unavailable) => "redis_unavailable",
            (None, Rejection::Busy) => "ticket_cache_full",
            (None, _) => "forbidden_sub",
        }
    }

    /// A 503 of the server's own (Redis out of reach, the ticket cache full): the
    /// client did nothing wrong, and it may try again.
    pub(crate) fn is_server_limit(self) -> bool {
        matches!(self, Rejection::Unavailable | Rejection::Busy)
    }

    /// The precise reason for the log line.
    pub fn log_reason(self) -> &'static str {
        match self {
            Rejection::MissingToken => "missing_token",
            Rejection::QueryDisabled => "query_disabled",
            Rejection::BadToken(e) => e.as_str(),
            Rejection::Expired => "expired",
            Rejection::TicketReused => "ticket_reused",
            Rejection::TicketWrongIp => "ticket_wrong_ip",
            Rejection::OriginNotAllowed => "origin_not_allowed",
            Rejection::Timeout => "auth_timeout",
            Rejection::Busy => "ticket_cache_full",
            Rejection::Unavailable => "redis_unavailable",
            Rejection::Revoked => "revoked",
            Rejection::WrongSub => "wrong_sub",
        }
    }
}

/// The `reason` label of `wsgate_auth_failures_total` (`docs/operations.md#metrics`):
/// the metrics count by it and print [`FAILURE_REASONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureReason {
    InvalidToken = 0,
    Expired = 1,
    ForbiddenOrigin = 2,
    ForbiddenIp = 3,
    TicketReused = 4,
    Timeout = 5,
    Revoked = 6,
}

/// The labels, in [`FailureReason`] order: the one list of them.
pub(crate) const FAILURE_REASONS: [&str; 7] = [
    "invalid_token",
    "expired",
    "forbidden_origin",
    "forbidden_ip",
    "ticket_reused",
    "timeout",
    "revoked",
];

impl FailureReason {
    /// The label.
    pub(crate) fn as_str(self) -> &'static str {
        FAILURE_REASONS[self as usize]
    }
}

impl From<TokenError> for Rejection {
    fn from(e: TokenError) -> Rejection {
        match e {
            TokenError::Expired => Rejection::Expired,
            e => Rejection::BadToken(e),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::BadToken(e) => write!(f, "invalid token: {e}"),
            Rejection::MissingToken => f.write_str("no token"),
            Rejection::QueryDisabled => {
                f.write_str("a token in the query, but the query method is off")
            }
            Rejection::Expired => f.write_str("token expired"),
            Rejection::TicketReused => f.write_str("ticket already used"),
            Rejection::TicketWrongIp => f.write_str("ticket presented from another IP"),
            Rejection::OriginNotAllowed => f.write_str("origin not allowed"),
            Rejection::Timeout => f.write_str("no first message in time"),
            Rejection::Busy => f.write_str("ticket cache full"),
            Rejection::Unavailable => f.write_str("shared state unreachable"),
            Rejection::Revoked => f.write_str("token revoked"),
            Rejection::WrongSub => f.write_str("token of another sub"),
        }
    }
}

impl std::error::Error for Rejection {}

/// Who a verified token says the client is: what a session handler sees.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The `sub` claim.
    pub sub: String,
    /// The `exp` that bounds the session (the minting token's, for a ticket), Unix seconds.
    pub exp: i64,
    /// That `exp` as issued, when its text is not the form `Rfc3339` writes (a
    /// fraction, an offset): the frames and `GET /sessions` show it so.
    pub exp_text: Option<Box<str>>,
    /// When the session must end: `exp` + leeway, Unix seconds.
    pub deadline: i64,
    /// The claims JSON object as signed.
    pub claims: String,
    /// How the token arrived.
    pub method: Method,
    /// Whether a single-use ticket opened the session.
    pub via_ticket: bool,
    /// The `jti` revocation looks at: the token's (the minting token's, for a ticket).
    pub jti: Option<String>,
    /// The `iat` revocation looks at (Unix seconds), likewise.
    pub iat: Option<i64>,
    /// With shared tickets ([`Gate::set_shared_tickets`]): the ticket still to redeem,
    /// by whoever holds the shared state, before the session may start.
    pub(crate) unredeemed: Option<UnredeemedTicket>,
}

/// A ticket that verified but is not spent yet: its `jti` and `exp` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnredeemedTicket {
    /// The ticket's own `jti`.
    pub jti: String,
    /// The ticket's `exp`: the redemption must be remembered until then.
    pub exp: i64,
}

impl Identity {
    /// Takes the ticket that must be redeemed before this session starts (only with
    /// shared tickets; `None` otherwise, and after the first call).
    #[cfg(feature = "redis")]
    pub(crate) fn take_unredeemed(&mut self) -> Option<UnredeemedTicket> {
        self.unredeemed.take()
    }

    /// What revocation looks at.
    pub(crate) fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            sub: &self.sub,
            jti: self.jti.as_deref(),
            iat: self.iat,
        }
    }

    /// The first-message success frame: `{"type":"authenticated","sub":…,"exp":…}`.
    pub fn authenticated_frame(&self) -> String {
        let mut frame = String::with_capacity(64 + self.sub.len());
        frame.push_str(r#"{"type":"authenticated","sub":"#);
        if self
            .sub
            .bytes()
            .all(|b| b >= 0x20 && b != b'"' && b != b'\\')
        {
            // Nothing to escape (the usual case): pushed as it is.
            frame.push('"');
            frame.push_str(&self.sub);
            frame.push('"');
        } else {
            // A JSON string; serializing a `str` cannot fail.
            frame.push_str(&serde_json::to_string(&self.sub).unwrap_or_default());
        }
        frame.push_str(r#","exp":""#);
        crate::time::push_as_issued(&mut frame, self.exp, self.exp_text.as_deref());
        frame.push_str(r#""}"#);
        frame
    }
}

/// What to do with an upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Answer `101` and start the session.
    Accept {
        /// The verified client.
        identity: Identity,
        /// The `Sec-WebSocket-Protocol` to answer, if any.
        protocol: Option<&'a str>,
    },
    /// Answer `101`, then wait for the token as the first message.
    AwaitMessage {
        /// The `Sec-WebSocket-Protocol` to answer, if any.
        protocol: Option<&'a str>,
        /// Whether the request came from a browser (has an `Origin`).
        browser: bool,
        /// The request has a `?token=` but the `query` method is off: worth a hint
        /// in the log (`detail=query_disabled`), as the client may expect it to count.
        query_disabled: bool,
    },
    /// Refuse. For a browser and an in-band rejection: `101`, then the close frame.
    Reject {
        /// Why.
        rejection: Rejection,
        /// The method whose token was refused (`None` before a token was found).
        method: Option<Method>,
        /// Answer with `101` + close frame (a browser that passed the Origin rule).
        in_band: bool,
        /// The `Sec-WebSocket-Protocol` to answer with an in-band refusal.
        protocol: Option<&'a str>,
    },
}

/// The authentication configuration: what [`Gate`] decides with. Build it with
/// [`GateConfig::new`] and set fields.
#[derive(Debug)]
#[non_exhaustive]
pub struct GateConfig {
    /// Enabled methods. Default `header,protocol,cookie,message`.
    pub methods: Methods,
    /// Cookie that carries the token. Default `wsgate_token`.
    pub cookie_name: String,
    /// Exact origins allowed from browsers (lower-case, no trailing `/`). Default none.
    pub allowed_origins: Vec<String>,
    /// Keys and claim rules. The gate takes the keys ([`Gate::verifier`]; replaced
    /// by [`Gate::set_keys`]) and leaves the rules here.
    pub verifier: Verifier,
    /// Lifetime of minted tickets, seconds. Default 30.
    pub ticket_ttl: i64,
    /// Bound on live tickets. Default 100 000.
    pub ticket_capacity: usize,
    /// The listener speaks TLS: for the same-origin rule, a `Host` without a port
    /// means port 443, whatever the Origin's scheme (`docs/protocol.md#the-origin-rule`).
    /// Default off.
    pub tls: bool,
}

impl GateConfig {
    /// A configuration verifying with `verifier` and every other field at its
    /// default, the same as [`Config`](crate::Config)'s.
    pub fn new(verifier: Verifier) -> GateConfig {
        GateConfig {
            methods: Methods::default(),
            cookie_name: "wsgate_token".into(),
            allowed_origins: Vec::new(),
            verifier,
            ticket_ttl: 30,
            ticket_capacity: crate::tickets::DEFAULT_TICKET_CAPACITY,
            tls: false,
        }
    }
}

/// The decision core. Owns the keys, the ticket replay cache and the revocations.
#[derive(Debug)]
pub struct Gate {
    cfg: GateConfig,
    /// The keys now: replaced whole by a reload, never changed in place.
    keys: RwLock<Arc<KeyRing>>,
    /// The ticket key of a server without a `k4.local` key, made at start: kept
    /// across reloads so that tickets minted before one still open.
    fallback_ticket_key: Option<Key>,
    replay: ReplayCache,
    /// Tickets are spent in shared state (several nodes), not in `replay`.
    shared_tickets: bool,
    revocations: Mutex<Revocations>,
}

/// A set of keys and the one tickets are sealed with.
#[derive(Debug)]
struct KeyRing {
    verifier: Verifier,
    /// Index in the verifier of the key tickets are sealed with.
    ticket_key: usize,
}

impl KeyRing {
    /// Tickets are sealed with the first `k4.local` key, else with `fallback`.
    fn new(mut verifier: Verifier, fallback: Option<&Key>) -> Result<KeyRing, KeyError> {
        let local = |k: &Key| k.purpose() == crate::token::Purpose::Local;
        let ticket_key = match verifier.keys().iter().position(local) {
            Some(i) => i,
            None => {
                let fallback = fallback.ok_or(KeyError::Malformed("k4.local"))?;
                verifier.push_key(Key::from_paserk(&fallback.to_paserk())?);
                verifier.keys().len() - 1
            }
        };
        Ok(KeyRing {
            verifier,
            ticket_key,
        })
    }
}

/// Longest message a client may send before it is authenticated: four times the
/// 8 KiB token, room for other JSON fields beside it. Unauthenticated clients must
/// not make the server hold `--max-message` bytes each: a longer first message is
/// refused as an invalid token (or with 1009 when it is over `--max-message` too)
/// as soon as its frame header announces it.
pub const MAX_FIRST_MESSAGE: usize = 32 * 1024;

/// A minted ticket, ready to send as `{"ticket":…,"expires_in":…}`. Its `Debug`
/// shows no ticket bytes.
#[non_exhaustive]
pub struct Ticket {
    /// The `v4.local` ticket token.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// Its subject.
    pub sub: String,
}

/// Why `POST /ticket` refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketRefusal {
    /// No valid token (or a ticket, which cannot mint a ticket): 401.
    Unauthorized(Rejection),
    /// Origin rule refused the cookie: 403.
    Forbidden,
    /// The replay cache is full: 503.
    Full,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("token", &UntrustedToken(&self.token))
            .field("expires_in", &self.expires_in)
            .field("sub", &self.sub)
            .finish()
    }
}

struct Found<'a> {
    method: Method,
    token: std::borrow::Cow<'a, str>,
}

impl Gate {
    /// Builds the gate. Tickets are sealed with the first `k4.local` key; without one,
    /// with a random key made now (tickets then work only on this process).
    /// Revocations are kept a day, 100 000 at most (see
    /// [`Gate::set_revocation_limits`]).
    pub fn new(mut cfg: GateConfig) -> Result<Gate, KeyError> {
        let rules = cfg.verifier.rules().clone();
        let verifier = std::mem::replace(&mut cfg.verifier, Verifier::new(Vec::new(), rules));
        let has_local = verifier
            .keys()
            .iter()
            .any(|k| k.purpose() == crate::token::Purpose::Local);
        let fallback_ticket_key = if has_local {
            None
        } else {
            Some(Key::generate_local()?)
        };
        let ring = KeyRing::new(verifier, fallback_ticket_key.as_ref())?;
        let replay = ReplayCache::new(cfg.ticket_capacity);
        Ok(Gate {
            cfg,
            keys: RwLock::new(Arc::new(ring)),
            fallback_ticket_key,
            replay,
            shared_tickets: false,
            revocations: Mutex::new(Revocations::new(
                DEFAULT_REVOKE_TTL,
                DEFAULT_REVOKE_CAPACITY,
            )),
        })
    }

    /// Sets how long revocation entries are kept and how many may be live; entries
    /// already made keep their lifetime.
    pub fn set_revocation_limits(&mut self, ttl: u64, capacity: usize) {
        let list = self
            .revocations
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        let mut fresh = Revocations::new(ttl, capacity);
        std::mem::swap(list, &mut fresh);
    }

    /// The configuration (its verifier holds the rules, not the keys: see
    /// [`Gate::verifier`]).
    pub fn config(&self) -> &GateConfig {
        &self.cfg
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The keys and claim rules now in force.
    pub fn verifier(&self) -> impl std::ops::Deref<Target = Verifier> + use<> {
        struct Current(Arc<KeyRing>);
        impl std::ops::Deref for Current {
            type Target = Verifier;
            fn deref(&self) -> &Verifier {
                &self.0.verifier
            }
        }
        Current(self.ring())
    }

    /// Replaces the keys at once (a reload): new handshakes use `keys`, sessions
    /// already open are not touched. Nothing changes on error. The claim rules stay.
    pub fn set_keys(&self, keys: Vec<Key>) -> Result<(), KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Malformed("key"));
        }
        let rules = self.cfg.verifier.rules().clone();
        let has_local = keys
            .iter()
            .any(|k| k.purpose() == crate::token::Purpose::Local);
        // A server that started with only public keys keeps its process ticket key.
        let fresh_fallback;
        let fallback = match (&self.fallback_ticket_key, has_local) {
            (Some(k), _) => Some(k),
            (None, true) => None,
            (None, false) => {
                fresh_fallback = Key::generate_local()?;
                Some(&fresh_fallback)
            }
        };
        let ring = KeyRing::new(Verifier::new(keys, rules), fallback)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ring);
        Ok(())
    }

    /// Adds a revocation entry at `now`; `Err` when the list is full (nothing is
    /// forgotten early).
    pub fn revoke(&self, entry: &Revocation, now: i64) -> Result<(), RevocationsFull> {
        self.revocations().revoke(entry, now)
    }

    /// Tickets are redeemed elsewhere (in state shared by several nodes): a verified
    /// ticket is not spent here but comes back with [`Identity::take_unredeemed`],
    /// and minting records nothing here.
    #[cfg(feature = "redis")]
    pub(crate) fn set_shared_tickets(&mut self, shared: bool) {
        self.shared_tickets = shared;
    }

    /// Adds an entry made on another node (revoked at `at`, forgotten at
    /// `forget_at`); see [`crate::revocation::Revocations::apply`].
    #[cfg(feature = "redis")]
    pub(crate) fn apply_revocation(
        &self,
        entry: &Revocation,
        at: i64,
        forget_at: i64,
        now: i64,
    ) -> Result<(), RevocationsFull> {
        self.revocations().apply(entry, at, forget_at, now)
    }

    /// The revocation list, locked.
    pub(crate) fn revocations(&self) -> std::sync::MutexGuard<'_, Revocations> {
        self.revocations.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_revoked(&self, facts: &TokenFacts<'_>, now: i64) -> bool {
        self.revocations().is_revoked(facts, now)
    }

    /// Decides an upgrade request (the checks after 431/404/426/503, which belong to
    /// the server): Origin rule, then the token of the first present method.
    pub fn check_upgrade<'a>(&self, req: &Request<'a>, peer: IpAddr, now: i64) -> Decision<'a> {
        let protocol = answered_protocol(req);
        let found = self.find_token(req);
        let origin = req.header("origin");
        if let Some(origin) = origin {
            if !self.origin_allowed(origin, req.header("host"), found.as_ref().map(|f| f.method)) {
                return Decision::Reject {
                    rejection: Rejection::OriginNotAllowed,
                    method: found.map(|f| f.method),
                    in_band: false,
                    protocol,
                };
            }
        }
        let browser = origin.is_some();
        let Some(found) = found else {
            let query_disabled = !self.cfg.methods.contains(Method::Query)
                && query_param(req.target, "token").is_some();
            if self.cfg.methods.contains(Method::Message) {
                return Decision::AwaitMessage {
                    protocol,
                    browser,
                    query_disabled,
                };
            }
            return Decision::Reject {
                rejection: if query_disabled {
                    Rejection::QueryDisabled
                } else {
                    Rejection::MissingToken
                },
                method: None,
                in_band: false,
                protocol,
            };
        };
        match self.verify(&found.token, found.method, peer, now) {
            Ok(identity) => Decision::Accept { identity, protocol },
            Err(rejection) => Decision::Reject {
                rejection,
                method: Some(found.method),
                in_band: browser && rejection.in_band_for_browsers(),
                protocol,
            },
        }
    }

    /// Decides the first data frame of a first-message session: `Some(text)` for a
    /// text frame (raw token or `{"token":"…"}`), `None` for a binary frame.
    pub fn check_first_message(
        &self,
        text: Option<&str>,
        peer: IpAddr,
        now: i64,
    ) -> Result<Identity, Rejection> {
        let text = text
            .ok_or(Rejection::BadToken(TokenError::Malformed))?
            .trim();
        // Extra JSON fields are ignored (`docs/protocol.md#first-message-authentication`),
        // within a bound that keeps the parse cheap; the token itself is held to 8 KiB by
        // the verifier.
        if text.len() > MAX_FIRST_MESSAGE {
            return Err(Rejection::BadToken(TokenError::TooLong));
        }
        let token: std::borrow::Cow<'_, str> = if text.starts_with('{') {
            #[derive(serde::Deserialize)]
            struct Msg<'a> {
                #[serde(borrow)]
                token: std::borrow::Cow<'a, str>,
            }
            let m: Msg<'_> = serde_json::from_str(text)
                .map_err(|_| Rejection::BadToken(TokenError::Malformed))?;
            m.token
        } else {
            text.into()
        };
        self.verify(token.trim(), Method::Message, peer, now)
    }

    /// Verifies a token presented by `method` from `peer`, applying the ticket rules.
    pub fn verify(
        &self,
        token: &str,
        method: Method,
        peer: IpAddr,
        now: i64,
    ) -> Result<Identity, Rejection> {
        let claims = self.ring().verifier.verify(UntrustedToken(token), now)?;
        let leeway = self.cfg.verifier.rules().leeway;
        let Claims {
            sub,
            exp,
            exp_text,
            jti,
            iat,
            ticket,
            json,
        } = claims;
        match ticket {
            None => {
                let identity = Identity {
                    sub,
                    exp,
                    exp_text,
                    deadline: exp.saturating_add(leeway),
                    claims: json,
                    method,
                    via_ticket: false,
                    jti,
                    iat,
                    unredeemed: None,
                };
                if self.is_revoked(&identity.facts(), now) {
                    return Err(Rejection::Revoked);
                }
                Ok(identity)
            }
            Some(t) => {
                if t.ip.parse::<IpAddr>().map(canonical) != Ok(canonical(peer)) {
                    return Err(Rejection::TicketWrongIp);
                }
                let ticket_jti = jti.ok_or(Rejection::BadToken(TokenError::BadClaims))?;
                // Checked before use: a refused ticket stays unused.
                if now > t.session_exp.saturating_add(leeway) {
                    return Err(Rejection::Expired);
                }
                // The session is the minting token's: revocation looks at it.
                let identity = Identity {
                    sub,
                    exp: t.session_exp,
                    exp_text: t.session_exp_text,
                    deadline: t.session_exp.saturating_add(leeway),
                    claims: json,
                    method,
                    via_ticket: true,
                    jti: t.minted_by_jti,
                    iat: t.minted_by_iat,
                    unredeemed: None,
                };
                if self.is_revoked(&identity.facts(), now) {
                    return Err(Rejection::Revoked);
                }
                if self.shared_tickets {
                    let mut identity = identity;
                    identity.unredeemed = Some(UnredeemedTicket {
                        jti: ticket_jti,
                        exp,
                    });
                    return Ok(identity);
                }
                match self.replay.consume(&ticket_jti, exp, now) {
                    Ok(()) => {}
                    Err(ReplayError::Reused) => return Err(Rejection::TicketReused),
                    Err(ReplayError::Full) => return Err(Rejection::Busy),
                }
                Ok(identity)
            }
        }
    }

    /// An in-band refresh (`docs/protocol.md#expiry-notice-and-in-band-refresh`): `token`
    /// must be valid like a handshake token, not a ticket, not revoked, and of the
    /// session's `sub`. The identity it gives keeps the session's `method`.
    pub fn check_refresh(
        &self,
        token: &str,
        session: &Identity,
        now: i64,
    ) -> Result<Identity, Rejection> {
        let claims = self
            .ring()
            .verifier
            .verify(UntrustedToken(token.trim()), now)?;
        if claims.ticket.is_some() {
            return Err(Rejection::BadToken(TokenError::BadClaims));
        }
        let leeway = self.cfg.verifier.rules().leeway;
        let identity = Identity {
            deadline: claims.exp.saturating_add(leeway),
            sub: claims.sub,
            exp: claims.exp,
            exp_text: claims.exp_text,
            claims: claims.json,
            method: session.method,
            via_ticket: false,
            jti: claims.jti,
            iat: claims.iat,
            unredeemed: None,
        };
        if self.is_revoked(&identity.facts(), now) {
            return Err(Rejection::Revoked);
        }
        if identity.sub != session.sub {
            return Err(Rejection::WrongSub);
        }
        Ok(identity)
    }

    /// `POST /ticket`: authenticates the caller by Bearer header or cookie (cookie under
    /// the Origin rule) and mints a single-use ticket bound to `peer`.
    pub fn mint_ticket(
        &self,
        req: &Request<'_>,
        peer: IpAddr,
        now: i64,
    ) -> Result<Ticket, TicketRefusal> {
        let found = self
            .bearer(req)
            .map(|t| (Method::Header, t.into()))
            .or_else(|| self.cookie(req).map(|t| (Method::Cookie, t)));
        let Some((method, token)) = found else {
            return Err(TicketRefusal::Unauthorized(Rejection::MissingToken));
        };
        if let Some(origin) = req.header("origin") {
            if !self.origin_allowed(origin, req.header("host"), Some(method)) {
                return Err(TicketRefusal::Forbidden);
            }
        }
        let ring = self.ring();
        let claims = ring
            .verifier
            .verify(UntrustedToken(&token), now)
            .map_err(|e| TicketRefusal::Unauthorized(e.into()))?;
        if claims.ticket.is_some() {
            return Err(TicketRefusal::Unauthorized(Rejection::BadToken(
                TokenError::BadClaims,
            )));
        }
        let facts = TokenFacts {
            sub: &claims.sub,
            jti: claims.jti.as_deref(),
            iat: claims.iat,
        };
        if self.is_revoked(&facts, now) {
            return Err(TicketRefusal::Unauthorized(Rejection::Revoked));
        }
        let jti = random_id().map_err(|_| TicketRefusal::Full)?;
        let exp = now.saturating_add(self.cfg.ticket_ttl);
        let bad = || TicketRefusal::Unauthorized(Rejection::BadToken(TokenError::BadClaims));
        // The minting token's claims but those the ticket sets (and `iat`: none of its
        // own, nothing reads a ticket's `iat`; revocation looks at the minting token's,
        // in the ticket claim), then the ticket's `jti`, `exp` and ticket claim. Every
        // byte minted is base64 encoded here and decoded at the handshake.
        let mut json = Vec::with_capacity(claims.json.len() + 160);
        json.push(b'{');
        crate::token::copy_claims_except(
            &claims.json,
            &["exp", "nbf", "iat", "jti", TICKET_CLAIM],
            &mut json,
        )
        .map_err(|_| bad())?;
        // `jti` is base64url, an IP and RFC 3339 times need no JSON escapes. Written
        // piece by piece: `write!` cost ~3 000 instructions a ticket here.
        json.extend_from_slice(br#""jti":""#);
        json.extend_from_slice(jti.as_bytes());
        json.extend_from_slice(br#"","exp":""#);
        Rfc3339(exp).push_to(&mut json);
        json.extend_from_slice(br#"",""#);
        json.extend_from_slice(TICKET_CLAIM.as_bytes());
        json.extend_from_slice(br#"":{"ip":""#);
        crate::digits::extend_ip(&mut json, canonical(peer));
        json.extend_from_slice(br#"","session_exp":"#);
        match &claims.exp_text {
            // As issued, for the frames of the session it opens (no JSON escape: it
            // parsed as RFC 3339).
            Some(text) => {
                json.push(b'"');
                json.extend_from_slice(text.as_bytes());
                json.push(b'"');
            }
            None => crate::digits::extend_i64(&mut json, claims.exp),
        }
        // The session a ticket opens is the minting token's, for revocation too.
        if let Some(jti) = &claims.jti {
            json.extend_from_slice(br#","jti":"#);
            serde_json::to_writer(&mut json, jti).map_err(|_| bad())?;
        }
        if let Some(iat) = claims.iat {
            json.extend_from_slice(br#","iat":"#);
            crate::digits::extend_i64(&mut json, iat);
        }
        json.extend_from_slice(b"}}");
        let json = String::from_utf8(json).map_err(|_| bad())?;
        if !self.shared_tickets {
            self.replay
                .issue(&jti, exp, now)
                .map_err(|_| TicketRefusal::Full)?;
        }
        // No footer, so no `kid`: a token without one is tried against the local keys in
        // order (`Verifier::open`), and the ticket key is the first local key (or, on a
        // server with only public keys, the only one: `KeyRing::new`), so one decryption
        // opens it. A ticket minted by a node whose first local key is another loaded key
        // still opens, one failed tag check later. The `{"kid":…}` footer was 84 of a
        // ticket's 451 characters.
        let token = ring.verifier.keys()[ring.ticket_key]
            .issue_with_footer(&json, None)
            .map_err(|e| TicketRefusal::Unauthorized(Rejection::BadToken(e)))?;
        Ok(Ticket {
            token,
            expires_in: self.cfg.ticket_ttl,
            sub: claims.sub,
        })
    }

    /// Whether `origin` may connect. Same origin always may; with `--allow-origin`
    /// every request is checked; without, only cookie-authenticated ones (CSWSH).
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>, method: Option<Method>) -> bool {
        if host.is_some_and(|h| same_origin_on(origin, h, self.cfg.tls)) {
            return true;
        }
        if !self.cfg.allowed_origins.is_empty() {
            return self.cors_allowed(origin);
        }
        method != Some(Method::Cookie)
    }

    /// Whether `origin` is one of `--allow-origin` (for CORS answers): the same scheme,
    /// host and port, case aside and with the scheme's port implied, so that
    /// `https://app.example.com:443` and `https://app.example.com` are one origin.
    pub fn cors_allowed(&self, origin: &str) -> bool {
        let port = |(_, _, port, default): (_, _, Option<u16>, u16)| port.unwrap_or(default);
        let Some(o) = origin_parts(origin) else {
            return false;
        };
        self.cfg
            .allowed_origins
            .iter()
            .filter_map(|a| origin_parts(a))
            .any(|a| a.0 == o.0 && port(a) == port(o) && a.1.eq_ignore_ascii_case(o.1))
    }

    fn bearer<'a>(&self, req: &Request<'a>) -> Option<&'a str> {
        bearer_in(req.header("authorization")?)
    }

    fn cookie<'a>(&self, req: &Request<'a>) -> Option<std::borrow::Cow<'a, str>> {
        let name = self.cfg.cookie_name.as_str();
        let v = req
            .headers_named("cookie")
            .find_map(|v| cookie_in(v, name))?;
        // Browsers store cookie values as given; some clients percent-encode them.
        Some(match percent_decode(v) {
            Some(d) => d,
            None => v.into(),
        })
    }

    /// Whether `method`'s carrier is present in a header value that is not UTF-8: a
    /// present value that is not visible ASCII is an invalid token, never "absent"
    /// (which would fall through to a later method or to first-message auth).
    fn present_but_not_utf8(&self, req: &Request<'_>, method: Method) -> bool {
        let name = match method {
            Method::Header => "authorization",
            Method::Protocol => "sec-websocket-protocol",
            Method::Cookie => "cookie",
            Method::Query | Method::Message => return false,
        };
        req.non_utf8_values(name).any(|raw| {
            let v = String::from_utf8_lossy(raw);
            match method {
                Method::Header => bearer_in(&v).is_some(),
                Method::Protocol => v.split(',').any(|e| is_token_shaped(e.trim())),
                _ => cookie_in(&v, &self.cfg.cookie_name).is_some(),
            }
        })
    }

    fn find_token<'a>(&self, req: &Request<'a>) -> Option<Found<'a>> {
        let found = self.find_utf8_token(req);
        // A carrier whose value is not UTF-8 is invisible to the UTF-8 view above; it
        // decides if its method comes before the one found (none, for a header token).
        let before = found.as_ref().map_or(Method::Message, |f| f.method);
        for method in [Method::Header, Method::Protocol, Method::Cookie] {
            if method >= before {
                break;
            }
            if self.cfg.methods.contains(method) && self.present_but_not_utf8(req, method) {
                return Some(Found {
                    method,
                    token: NOT_UTF8.into(),
                });
            }
        }
        found
    }

    fn find_utf8_token<'a>(&self, req: &Request<'a>) -> Option<Found<'a>> {
        let m = self.cfg.methods;
        if m.contains(Method::Header) {
            if let Some(t) = self.bearer(req) {
                return Some(Found {
                    method: Method::Header,
                    token: t.into(),
                });
            }
        }
        if m.contains(Method::Protocol) {
            if let Some(t) = protocol_entries(req).find(|e| is_token_shaped(e)) {
                return Some(Found {
                    method: Method::Protocol,
                    token: t.into(),
                });
            }
        }
        if m.contains(Method::Cookie) {
            if let Some(t) = self.cookie(req) {
                return Some(Found {
                    method: Method::Cookie,
                    token: t,
                });
            }
        }
        if m.contains(Method::Query) {
            if let Some(t) = query_param(req.target, "token") {
                return Some(Found {
                    method: Method::Query,
                    token: t,
                });
            }
        }
        None
    }
}

/// The token of an in-band refresh request: a text message that is a JSON object
/// with `"type":"refresh"` and a string `"token"` (other fields ignored). `None` for
/// any other message, which passes untouched. Cheap for ordinary messages: only a
/// text that starts with `{` and mentions `refresh` is parsed.
pub fn refresh_request(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    let t = text.trim_start();
    if !t.starts_with('{') || !t.contains("refresh") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Refresh<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        token: std::borrow::Cow<'a, str>,
    }
    let r: Refresh<'_> = serde_json::from_str(t).ok()?;
    (r.kind == "refresh").then_some(r.token)
}

/// What a token carrier that is not UTF-8 stands as: never a valid token (not ASCII).
const NOT_UTF8: &str = "\u{fffd}";

/// The token of an `Authorization` value with the Bearer scheme (any case).
fn bearer_in(v: &str) -> Option<&str> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The value of cookie `name` in one `Cookie` header, without quotes or decoding.
fn cookie_in<'v>(header: &'v str, name: &str) -> Option<&'v str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

fn protocol_entries<'a>(req: &Request<'a>) -> impl Iterator<Item = &'a str> + use<'a> {
    req.headers_named("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
}

/// The subprotocol to answer: the first offered entry that is not a token; none when
/// the token is the only entry (`docs/protocol.md#methods`).
pub fn answered_protocol<'a>(req: &Request<'a>) -> Option<&'a str> {
    protocol_entries(req).find(|e| !is_token_shaped(e))
}

fn query_param<'a>(target: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let query = target.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v).unwrap_or_else(|| v.into()))
    })
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A random 128-bit id, base64url (22 characters).
pub fn random_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    // 16 bytes always encode: the only error ct-codecs reports here is an overflow.
    Ok(Base64UrlSafeNoPadding::encode_to_string(b).unwrap_or_default())
}

/// An origin's scheme (`"http"` or `"https"`; `ws` and `wss` count as those), host
/// (as written), port as written (`None` when absent), and the scheme's port; `None`
/// when it is not an origin.
pub fn origin_parts(origin: &str) -> Option<(&'static str, &str, Option<u16>, u16)> {
    let (scheme, authority) = origin.split_once("://")?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ("http", 80),
        "https" | "wss" => ("https", 443),
        _ => return None,
    };
    let (host, port) = split_authority(authority.trim_end_matches('/'))?;
    Some((scheme, host, port, default_port))
}

/// Same origin (`docs/protocol.md#the-origin-rule`): Origin's authority (host and port,
/// port implied by its scheme, case-insensitive) equals the `Host` header's (a `Host`
/// without a port takes the default port of the Origin's scheme). On a listener that
/// speaks TLS (`tls`), a `Host` without a port means 443 whatever the Origin's scheme,
/// so an `http://` Origin is never the same origin unless it names a port, and that
/// port equals the `Host`'s.
pub fn same_origin_on(origin: &str, host: &str, tls: bool) -> bool {
    let Some((scheme, oh, op, default_port)) = origin_parts(origin) else {
        return false;
    };
    // The port an `http://` Origin implies (80) is never the TLS listener's.
    if tls && scheme == "http" && op.is_none() {
        return false;
    }
    let host_default = if tls { 443 } else { default_port };
    match split_authority(host.trim()) {
        Some((hh, hp)) => {
            op.unwrap_or(default_port) == hp.unwrap_or(host_default) && oh.eq_ignore_ascii_case(hh)
        }
        None => false,
    }
}

/// Host (as written: any case, an IPv6 literal in brackets) and port, when written, of
/// `Host` or an Origin's authority; the Origin rule compares these pairs, the port
/// implied where absent. Any host, an empty one included, and any port, 0 included: a
/// pair only has to equal another.
pub(crate) fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    if a.is_empty() || a.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (host, port) = crate::head::split_authority(a).ok()?;
    let port = match port {
        None => None,
        Some(p) => Some(crate::head::parse_port(p)?),
    };
    Some((host, port))
}

#[cfg(test)]
#[path = "auth/tests.rs"]
mod tests;
