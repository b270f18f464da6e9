//! A device client: header authentication, reconnect with backoff, and the close
//! codes that mean "stop" (4401 bad/expired token, 4403 forbidden) versus "retry".
//!
//! It connects with `Authorization: Bearer <token>`, sends a line every few seconds,
//! prints what comes back, and on a close it either reconnects (1001 server restart,
//! 1011, network errors: exponential backoff from 0.5 s up to 30 s) or exits (4401,
//! 4403, HTTP 401/403 at the handshake: the token must be renewed first).
//!
//! Run it against a server:
//!
//! ```sh
//! cargo run --release -- keygen --out demo.key
//! cargo run --release -- serve --key demo.key &
//! cargo run --example client -- ws://127.0.0.1:8080/ "$(cargo run -q --release -- issue --key demo.key --sub device-1)"
//! ```

use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::{Error as WsError, Message};
use smol::Timer;
use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;

/// What ended a connection, and whether to try again.
enum End {
    Retry(String),
    Stop(String),
}

async fn session(url: &str, token: &str) -> End {
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
            Some(Some(Ok(Message::Text(t)))) => println!("< {t}"),
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
    let (Some(url), Some(token)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: client WS_URL TOKEN");
        std::process::exit(2);
    };
    smol::block_on(async {
        let mut backoff = Duration::from_millis(500);
        loop {
            match session(url, token).await {
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
