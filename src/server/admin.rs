//! The operators' listener (`--admin-listen ADDR`): plain HTTP, no authentication of
//! its own (bind it to loopback or a private network, like a Prometheus port).
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /revoke` `{"jti":"…"}` or `{"sub":"…"}` | `200 {"revoked":"jti"\|"sub","closed":N}`; `400` for any other body; `503` when the revocation list is full |
//! | `GET /sessions[?sub=S]` | `200`, a JSON array of `{"sub","method","peer","since","exp"}` |
//! | `GET /healthz`, `GET /metrics` | as on the main listener |
//! | anything else | `404`; a known path with another method: `405` |
//!
//! The same head limits and deadline as the main listener apply, and at most
//! [`MAX_ADMIN_CONNECTIONS`] are served at once, so a hostile admin client cannot
//! hurt the main listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use smol::io::AsyncReadExt as _;

use crate::conn::{Spawner, log_http, read_head, respond, spawn_connection, status_of};
use crate::deadline::{instant_after, until};
use crate::endpoints;
use crate::head::{self, HeadError, Request, percent_decode, response, text_response};
use crate::listener::Listener;
use crate::log::Level;
use crate::revocation::Revocation;
use crate::session::BoxedConnection;
use crate::state::{RevokeError, Shared};
use crate::time::Rfc3339;

/// Admin connections served at once; more are closed at accept.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Largest `POST /revoke` body.
pub const MAX_REVOKE_BODY: usize = 8 * 1024;

/// Accepts admin connections until the server shuts down.
pub(crate) async fn accept_loop(listener: Listener, shared: Arc<Shared>, ex: &Spawner) {
    let open = Arc::new(AtomicUsize::new(0));
    while let Some((stream, peer)) = listener.next(&shared.shutdown, true).await {
        if open.fetch_add(1, Ordering::AcqRel) >= MAX_ADMIN_CONNECTIONS {
            open.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let slot = Slot(open.clone());
        let stream: BoxedConnection = Box::new(stream);
        let shared = shared.clone();
        let task = Box::pin(async move {
            let _slot = slot;
            connection(shared, stream, peer).await;
            None
        });
        spawn_connection(ex, task, None, peer);
    }
}

/// One of the [`MAX_ADMIN_CONNECTIONS`] slots, freed on drop (a panic included).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connection(shared: Arc<Shared>, mut stream: BoxedConnection, peer: SocketAddr) {
    let deadline = instant_after(Instant::now(), shared.config.head_timeout);
    let mut buf = Vec::with_capacity(512);
    let mut storage = head::header_storage();
    let answer = match read_head(&mut stream, &mut buf, &mut storage, deadline, &shared).await {
        Ok(Some((req, rest))) => {
            let body_start = rest.to_vec();
            let answer = route(&shared, &req, &mut stream, body_start, deadline, peer).await;
            log_http(peer, &req, status_of(&answer));
            head::for_method(req.method, answer)
        }
        Ok(None) => return,
        Err(HeadError::TooLarge) => text_response(431, &[], "request head too large\n"),
        Err(HeadError::Malformed | HeadError::Duplicate(_)) => {
            text_response(400, &[], "bad request\n")
        }
    };
    respond(&mut stream, &answer).await;
}

async fn route(
    shared: &Arc<Shared>,
    req: &Request<'_>,
    stream: &mut BoxedConnection,
    body_start: Vec<u8>,
    deadline: Instant,
    peer: SocketAddr,
) -> Vec<u8> {
    let allow = |methods: &str| text_response(405, &[("Allow", methods)], "method not allowed\n");
    match (req.path(), req.method) {
        ("/revoke", "POST") => {
            let body = match read_body(req, stream, body_start, deadline).await {
                Ok(b) => b,
                Err(why) => return text_response(400, &[], &format!("{why}\n")),
            };
            revoke(shared, &body, peer).await
        }
        ("/revoke", _) => allow("POST"),
        ("/sessions", "GET" | "HEAD") => sessions(shared, req),
        ("/sessions", _) => allow("GET, HEAD"),
        _ => endpoints::health_or_metrics(shared, req)
            .unwrap_or_else(|| text_response(404, &[], "not found\n")),
    }
}

/// The request body, by `Content-Length`, at most [`MAX_REVOKE_BODY`] bytes, within
/// the head's deadline. `Err`: why it is refused (400).
async fn read_body(
    req: &Request<'_>,
    stream: &mut BoxedConnection,
    mut body: Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, &'static str> {
    if req.header("transfer-encoding").is_some() {
        return Err("bad request: send the body with Content-Length");
    }
    let len: usize = req
        .header("content-length")
        .ok_or("bad request: Content-Length required")?
        .trim()
        .parse()
        .map_err(|_| "bad request: bad Content-Length")?;
    if len > MAX_REVOKE_BODY {
        return Err("bad request: body over 8 KiB");
    }
    let mut chunk = [0u8; 1024];
    while body.len() < len {
        match until(deadline, stream.read(&mut chunk)).await {
            Some(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => return Err("bad request: body incomplete"),
        }
    }
    body.truncate(len);
    Ok(body)
}

/// What a `POST /revoke` body asks for: exactly one of `jti` and `sub`, a non-empty
/// string. `Err`: the one-line reason for the 400.
pub fn parse_revoke_body(body: &[u8]) -> Result<Revocation, &'static str> {
    #[derive(serde::Deserialize)]
    struct Body {
        jti: Option<serde_json::Value>,
        sub: Option<serde_json::Value>,
    }
    if body.len() > MAX_REVOKE_BODY {
        return Err("body over 8 KiB");
    }
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8")?;
    if !text.trim_start().starts_with('{') {
        return Err("body must be a JSON object: {\"jti\":\"…\"} or {\"sub\":\"…\"}");
    }
    let b: Body = serde_json::from_str(text).map_err(|_| "body is not a JSON object")?;
    let string = |v: serde_json::Value| match v {
        serde_json::Value::String(s) if !s.is_empty() => Ok(s),
        _ => Err("jti and sub must be non-empty strings"),
    };
    match (b.jti, b.sub) {
        (Some(j), None) => Ok(Revocation::Jti(string(j)?)),
        (None, Some(s)) => Ok(Revocation::Sub(string(s)?)),
        (Some(_), Some(_)) => Err("give one of jti and sub, not both"),
        (None, None) => Err("give one of jti and sub"),
    }
}

async fn revoke(shared: &Arc<Shared>, body: &[u8], peer: SocketAddr) -> Vec<u8> {
    let entry = match parse_revoke_body(body) {
        Ok(e) => e,
        Err(why) => {
            crate::log_event!(Level::Info, "revoke_refused", "peer" = peer, "reason" = why);
            return text_response(400, &[], &format!("bad request: {why}\n"));
        }
    };
    match shared.revoke_everywhere(&entry).await {
        Ok(closed) => {
            let body = format!(r#"{{"revoked":"{}","closed":{closed}}}"#, entry.kind());
            json_response(200, &body)
        }
        Err(RevokeError::Unavailable) => {
            crate::log_event!(
                Level::Error,
                "revoke_refused",
                "reason" = "redis unavailable"
            );
            text_response(
                503,
                &[("Retry-After", "1")],
                "redis unavailable: nothing stored\n",
            )
        }
        Err(_) => {
            crate::log_event!(
                Level::Error,
                "revoke_refused",
                "reason" = "revocation list full"
            );
            text_response(
                503,
                &[("Retry-After", "1")],
                "revocation list full: nothing stored\n",
            )
        }
    }
}

fn sessions(shared: &Shared, req: &Request<'_>) -> Vec<u8> {
    let sub = req.query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "sub").then(|| percent_decode(&v.replace('+', " ")).map(|v| v.into_owned()))?
        })
    });
    let list = shared.registry.list(sub.as_deref());
    let mut body = String::with_capacity(2 + list.len() * 128);
    body.push('[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let sub = serde_json::to_string(&s.sub).unwrap_or_default();
        body.push_str(&format!(
            r#"{{"sub":{sub},"method":"{}","peer":"{}","since":"{}","exp":""#,
            s.method,
            s.peer,
            Rfc3339(s.since),
        ));
        crate::time::push_as_issued(&mut body, s.exp, s.exp_text.as_deref());
        body.push_str(r#""}"#);
    }
    body.push(']');
    json_response(200, &body)
}

fn json_response(status: u16, body: &str) -> Vec<u8> {
    response(
        status,
        &[
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
        ],
        body.as_bytes(),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_bodies() {
        assert_eq!(
            parse_revoke_body(br#"{"jti":"abc"}"#),
            Ok(Revocation::Jti("abc".into()))
        );
        assert_eq!(
            parse_revoke_body(br#" {"sub":"alice","note":1}"#),
            Ok(Revocation::Sub("alice".into()))
        );
        for bad in [
            &br#"{"jti":"a","sub":"b"}"#[..],
            br#"{}"#,
            br#"{"jti":""}"#,
            br#"{"sub":5}"#,
            br#"{"sub":null}"#,
            br#"["jti","a"]"#,
            b"jti=a",
            b"",
            b"{\"jti\":\"\xff\"}",
        ] {
            assert!(
                parse_revoke_body(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = format!(r#"{{"jti":"{}"}}"#, "x".repeat(MAX_REVOKE_BODY));
        assert!(parse_revoke_body(big.as_bytes()).is_err());
    }
}
