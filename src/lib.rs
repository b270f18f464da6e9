//! wsgate authenticates WebSocket connections with PASETO v4 tokens before any
//! application byte flows: by `Authorization: Bearer`, by a `Sec-WebSocket-Protocol`
//! entry, by cookie, by first message, or by a single-use ticket, against static keys
//! with no database. Then it echoes, proxies to an upstream, or runs a process.
//!
//! The crate has three layers:
//!
//! - a **sans-IO core** ([`Gate`], [`Verifier`], [`head`]): request parts,
//!   configuration and `now` in, a [`Decision`] out; no sockets, no clock;
//!   [`client`], the client side of the handshake (the relay's upstreams, `wsgate bench`);
//!   and [`frames::FrameCursor`], WebSocket frame boundaries in a byte stream;
//! - a **smol server** ([`Server`]) around it, which hands each authenticated
//!   [`Session`] to a [`Handler`];
//! - the `wsgate` binary, a thin argh layer over both.
//!
//! # Examples
//!
//! Deciding a request without any IO:
//!
//! ```
//! use wsgate::{ClaimRules, Decision, Gate, GateConfig, Key, Method, Methods, Verifier, head};
//!
//! let key = Key::generate_local().unwrap();
//! let now = 2_000_000_000;
//! let claims = wsgate::token::claims_json("alice", now, 900, None, None, None, &[]);
//! let token = key.issue(&claims).unwrap();
//!
//! let gate = Gate::new(GateConfig {
//!     methods: Methods::default(),
//!     cookie_name: "wsgate_token".into(),
//!     allowed_origins: vec![],
//!     verifier: Verifier::new(vec![key], ClaimRules { leeway: 60, ..Default::default() }),
//!     ticket_ttl: 30,
//!     ticket_capacity: 1000,
//!     tls: false,
//! })
//! .unwrap();
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

pub mod admin;
pub mod auth;
pub mod client;
#[cfg(feature = "load-balancer")]
pub mod client_addr;
#[cfg(feature = "redis")]
pub mod cluster;
pub mod config;
mod deadline;
pub mod endpoints;
pub mod frames;
pub mod head;
pub mod log;
pub mod metrics;
pub mod process;
pub mod registry;
pub mod relay;
pub mod revocation;
pub mod server;
pub mod session;
mod state;
pub mod tickets;
pub mod time;
#[cfg(feature = "tls")]
pub mod tls;
pub mod token;

pub use async_tungstenite::tungstenite::Message;
pub use auth::{Decision, Gate, GateConfig, Identity, Method, Methods, Rejection, Ticket};
pub use config::{Config, ConfigError, Mode};
pub use registry::SessionInfo;
pub use revocation::Revocation;
pub use server::{Error, RevokeError, Server, ServerHandle, ShutdownHandle};
pub use session::{BoxedConnection, Connection, Handler, Race, Session};
pub use token::{ClaimRules, Claims, Key, KeyError, TokenError, UntrustedToken, Verifier};
