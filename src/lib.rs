//! wsgate authenticates WebSocket connections with PASETO v4 tokens before any
//! application byte flows: by `Authorization: Bearer`, by a `Sec-WebSocket-Protocol`
//! entry, by cookie, by first message, or by a single-use ticket, against static keys
//! with no database. Then it echoes, proxies to an upstream, or runs a process.
//!
//! The crate has three layers:
//!
//! - a **sans-IO core** ([`Gate`], [`Verifier`], [`head`]): request parts,
//!   configuration and `now` in, a [`Decision`] out; no sockets, no clock;
//!   and [`client`], the client side of the handshake (the relay's upstreams,
//!   `wsgate bench`);
//! - a **smol server** ([`Server`], reached from outside through a [`ServerHandle`])
//!   around it, which hands each authenticated [`Session`] to a [`Handler`]: echo,
//!   [`Handler::upstream`], [`Handler::exec`] or a function of your own;
//! - the `wsgate` binary, a thin argh layer over both.
//!
//! The modules are private: the items at the crate root, [`head`] and [`client`] are
//! the whole public API.
//!
//! # Examples
//!
//! Deciding a request without any IO:
//!
//! ```
//! use wsgate::{ClaimRules, Decision, Gate, GateConfig, Key, Method, Verifier, head};
//!
//! let key = Key::generate_local().unwrap();
//! let now = 2_000_000_000;
//! let claims = wsgate::claims_json("alice", now, 900, None, None, None, &[]);
//! let token = key.issue(&claims).unwrap();
//!
//! let mut config = GateConfig::new(Verifier::new(vec![key], ClaimRules::new(60)));
//! config.allowed_origins = vec!["https://app.example.com".into()];
//! let gate = Gate::new(config).unwrap();
//!
//! let raw = format!(
//!     "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
//!      Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!      Authorization: Bearer {token}\r\n\r\n"
//! );
//! let mut storage = head::header_storage();
//! let req = head::Request::parse_complete(raw.as_bytes(), &mut storage).unwrap();
//! match gate.check_upgrade(&req, "127.0.0.1".parse().unwrap(), now) {
//!     Decision::Accept { identity, .. } => {
//!         assert_eq!(identity.sub, "alice");
//!         assert_eq!(identity.method, Method::Header);
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! Serving sessions with a handler of your own (see `examples/embed.rs`):
//!
//! ```no_run
//! use wsgate::{Config, Handler, Key, Server};
//!
//! smol::block_on(async {
//!     let mut config = Config::default();
//!     config.keys.push(Key::from_paserk(&std::fs::read_to_string("wsgate.key")?)?);
//!     let handler = Handler::new(|mut session| async move {
//!         let hello = format!("hello {}", session.sub());
//!         let _ = session.send(wsgate::Message::text(hello)).await;
//!         session.close(1000, "bye").await;
//!     });
//!     Server::bind(config, handler).await?.run().await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

// Every module is private; what an embedder uses is re-exported below, in one block,
// and `head` and `client` are public as the sans-IO request and client-handshake APIs.
// The folders are the layers (CONTRIBUTING.md, "Architecture"); the modules keep flat
// paths (`crate::head`, `crate::server`) whichever folder holds them.

// The sans-IO core, src/core/: parts, configuration and `now` in, a decision out; no
// IO crate (scripts/check-layers.sh).
#[path = "core/auth.rs"]
mod auth;
#[path = "core/client.rs"]
pub mod client;
#[cfg(feature = "load-balancer")]
#[path = "core/client_addr.rs"]
mod client_addr;
#[path = "core/config.rs"]
mod config;
#[path = "core/digits.rs"]
mod digits;
#[path = "core/frames.rs"]
mod frames;
#[path = "core/head.rs"]
pub mod head;
#[path = "core/log.rs"]
mod log;
#[path = "core/metrics.rs"]
mod metrics;
#[path = "core/registry.rs"]
mod registry;
#[path = "core/revocation.rs"]
mod revocation;
#[path = "core/tickets.rs"]
mod tickets;
#[path = "core/time.rs"]
mod time;
#[path = "core/token.rs"]
mod token;

// The server layer, src/server/: smol, sockets, TLS, sessions.
#[path = "server/admin.rs"]
mod admin;
#[path = "server/aligned.rs"]
mod aligned;
#[path = "server/client_stream.rs"]
mod client_stream;
#[cfg(feature = "redis")]
#[path = "server/cluster.rs"]
mod cluster;
#[path = "server/conn.rs"]
mod conn;
#[path = "server/deadline.rs"]
mod deadline;
#[path = "server/endpoints.rs"]
mod endpoints;
#[path = "server/listener.rs"]
mod listener;
#[path = "server/outbox.rs"]
mod outbox;
#[path = "server/server.rs"]
mod server;
#[path = "server/session.rs"]
mod session;
#[path = "server/state.rs"]
mod state;
#[path = "server/tcp.rs"]
mod tcp;
#[path = "server/timers.rs"]
mod timers;
#[cfg(feature = "tls")]
#[path = "server/tls.rs"]
mod tls;

// The built-in handlers, src/handlers/: what a session runs besides echo.
#[path = "handlers/process.rs"]
mod process;
#[path = "handlers/relay.rs"]
mod relay;

pub use aligned::FrameAligned;
pub use async_tungstenite::tungstenite::Message;
pub use auth::{
    Decision, Gate, GateConfig, Identity, Method, Methods, Rejection, Ticket, TicketRefusal,
};
#[cfg(feature = "load-balancer")]
pub use client_addr::{Cidr, TrustedProxies};
#[cfg(feature = "redis")]
pub use cluster::RedisUrl;
pub use config::{Config, ConfigError};
pub use log::{
    Format as LogFormat, Level as LogLevel, set_format as set_log_format,
    set_level as set_log_level,
};
pub use metrics::Metrics;
pub use registry::SessionInfo;
pub use revocation::{Full as RevocationsFull, Revocation};
pub use server::{Error, Server, ServerHandle, ShutdownHandle};
pub use session::{BoxedConnection, Connection, Handler, Race, Session, WsStream};
pub use state::RevokeError;
pub use time::unix_now;
#[cfg(feature = "tls")]
pub use tls::{Prepared as PreparedTls, Tls};
pub use token::{
    ClaimRules, Claims, Key, KeyError, Purpose, TokenError, UntrustedToken, Verifier, claims_json,
};

/// Not public API: what the `wsgate` binary, the fuzz targets, the benches and the
/// tests need beyond the items above (rustls keeps such things the same way). It
/// follows the code, not semver.
#[doc(hidden)]
pub mod internal {
    pub use crate::auth::{MAX_FIRST_MESSAGE, origin_parts, random_id};
    #[cfg(feature = "load-balancer")]
    pub use crate::client_addr::{MAX_PROXY_HEADER, ProxyHeader, parse_proxy_header};
    pub use crate::config::io_reason;
    pub use crate::frames::FrameCursor;
    pub use crate::log::{
        Line as LogLine, enabled as log_enabled, flush_for_panic as flush_log_for_panic,
    };
    pub use crate::relay::UpstreamUrl;
    pub use crate::tickets::{DEFAULT_TICKET_CAPACITY, ReplayCache};
    pub use crate::time::{Rfc3339, parse_duration, parse_rfc3339};
    #[cfg(feature = "tls")]
    pub use crate::tls::{TlsClient, handshake_reason};
    pub use crate::token::TICKET_CLAIM;
}
