//! A device client: header authentication, in-band token refresh, reconnect with
//! backoff, and the close codes that mean "stop" (4401 bad, expired or revoked token,
//! 4403 forbidden) versus "retry".
//!
//! The device mints its own short-lived tokens (5 minutes) from a key file, with the
//! library (`mint` below; in production a token service would hand them out). It connects
//! with `Authorization: Bearer <token>`, sends a line every few seconds and prints what
//! comes back. Against `serve --refresh`, when the server sends
//! `{"type":"expiring","exp":…}` it mints a new token and sends
//! `{"type":"refresh","token":…}` on the same connection; the server answers
//! `{"type":"refreshed","exp":…}` and the session goes on until the new `exp`. On a
//! close it either reconnects with a fresh token (1001 server restart, 1011, network
//! errors: exponential backoff from 0.5 s up to 30 s) or exits (4401, 4403, HTTP 401/403
//! at the handshake: the key or the user must be fixed first; 4401 `token revoked`
//! means an operator logged this device out).
//!
//! Run it against a server (`--refresh-notice 290` makes the first `expiring` come
//! after about 10 s; `wsgate revoke --admin 127.0.0.1:9090 --sub device-1` ends it):
//!
//! ```sh
//! cargo run --release -- keygen --out demo.key
//! cargo run --release -- serve --key demo.key --refresh --refresh-notice 290 --admin-listen 127.0.0.1:9090 &
//! cargo run --example client -- ws://127.0.0.1:8080/ demo.key device-1
//! ```

use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use smol::Timer;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;
use wsgate::Key;

/// Lifetime of the tokens this client mints.
const TOKEN_TTL_SECS: i64 = 300;

/// A fresh token for `sub`, valid for [`TOKEN_TTL_SECS`]. Stands in for a token service.
fn mint(key: &Key, sub: &str) -> Result<String, wsgate::TokenError> {
    let now = wsgate::unix_now();
    let claims = wsgate::claims_json(sub, now, TOKEN_TTL_SECS, None, None, None, &[]);
    key.issue(&claims)
}

/// `{"type":"expiring"|"refreshed","exp":…}` from wsgate (`--refresh`), or `None` for
/// application data.
fn control_frame(text: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = v.get("type")?.as_str()?;
    let exp = v.get("exp").and_then(|e| e.as_str()).unwrap_or("?");
    matches!(kind, "expiring" | "refreshed").then(|| (kind.to_owned(), exp.to_owned()))
}

/// What ended a connection, and whether to try again.
enum End {
    Retry(String),
    Stop(String),
}

async fn session(url: &str, key: &Key, sub: &str) -> End {
    let token = match mint(key, sub) {
        Ok(t) => t,
        Err(e) => return End::Stop(format!("cannot mint a token: {e}")),
    };
    let mut req = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return End::Stop(format!("bad url: {e}")),
    };
    let Ok(auth) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return End::Stop("token is not a valid header value".into());
    };
    req.headers_mut().insert("authorization", auth);
    let host = format!(
        "{}:{}",
        req.uri().host().unwrap_or("127.0.0.1"),
        req.uri().port_u16().unwrap_or(80)
    );
    let tcp = match smol::net::TcpStream::connect(host).await {
        Ok(t) => t,
        Err(e) => return End::Retry(format!("connect: {e}")),
    };
    let mut ws = match async_tungstenite::client_async(req, tcp).await {
        Ok((ws, _)) => ws,
        Err(WsError::Http(r)) if matches!(r.status().as_u16(), 401 | 403) => {
            return End::Stop(format!("refused with HTTP {}: renew the token", r.status()));
        }
        Err(e) => return End::Retry(format!("handshake: {e}")),
    };
    println!("connected");
    let mut n = 0u64;
    loop {
        let tick = async {
            Timer::after(Duration::from_secs(3)).await;
            None
        };
        match async { Some(ws.next().await) }.or(tick).await {
            None => {
                n += 1;
                if ws
                    .send(Message::text(format!("reading {n}")))
                    .await
                    .is_err()
                {
                    return End::Retry("send failed".into());
                }
            }
            Some(Some(Ok(Message::Text(t)))) => match control_frame(&t) {
                Some((kind, exp)) if kind == "expiring" => {
                    println!("expiring at {exp}: refreshing");
                    let fresh = match mint(key, sub) {
                        Ok(t) => t,
                        Err(e) => return End::Stop(format!("cannot mint a token: {e}")),
                    };
                    // Token characters (base64url and dots) need no JSON escaping.
                    let refresh = format!(r#"{{"type":"refresh","token":"{fresh}"}}"#);
                    if ws.send(Message::text(refresh)).await.is_err() {
                        return End::Retry("send failed".into());
                    }
                }
                Some((_, exp)) => {
                    println!("refreshed: exp is now {exp} (the session ends at exp + leeway)")
                }
                None => println!("< {t}"),
            },
            Some(Some(Ok(Message::Close(Some(f))))) => {
                let code = u16::from(f.code);
                let why = format!("closed {code} {}", f.reason);
                return if matches!(code, 4401 | 4403) {
                    End::Stop(why)
                } else {
                    End::Retry(why)
                };
            }
            Some(Some(Ok(_))) => {}
            Some(Some(Err(e))) => return End::Retry(format!("read: {e}")),
            Some(None) => return End::Retry("connection closed".into()),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(key_file)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: client WS_URL KEY_FILE [SUB]");
        std::process::exit(2);
    };
    let sub = args.get(3).map_or("device-1", String::as_str);
    let key = std::fs::read_to_string(key_file)
        .map_err(|e| e.to_string())
        .and_then(|text| Key::from_paserk(&text).map_err(|e| e.to_string()));
    let key = match key {
        Ok(k) if k.can_issue() => k,
        Ok(_) => {
            eprintln!("error: {key_file}: a k4.public key cannot mint tokens");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("error: {key_file}: {e}");
            std::process::exit(2);
        }
    };
    smol::block_on(async {
        let mut backoff = Duration::from_millis(500);
        loop {
            match session(url, &key, sub).await {
                End::Stop(why) => {
                    eprintln!("stopping: {why}");
                    std::process::exit(1);
                }
                End::Retry(why) => {
                    eprintln!("{why}; retrying in {backoff:?}");
                    Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    });
}
