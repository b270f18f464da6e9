//! wsgate inside another smol program, with a handler of its own.
//!
//! Every authenticated session is greeted by its `sub`, then each text message is
//! answered in upper case. Expiry (4401), pings, `--max-message` (1009) and shutdown
//! (1001) are handled by `Session::recv`; the program stops on Ctrl-C after closing
//! every session with 1001.
//!
//! Run it:
//!
//! ```sh
//! cargo run --example embed                        # prints a token, listens on 127.0.0.1:9000
//! websocat -H="Authorization: Bearer <token>" ws://127.0.0.1:9000/
//! ```

use smol::future::FutureExt as _;
use smol::stream::StreamExt as _;
use wsgate::{Config, Handler, Key, Message, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = Key::generate_local()?;
    let claims = wsgate::claims_json(
        "embedded-demo",
        wsgate::unix_now(),
        3600,
        None,
        None,
        None,
        &[],
    );
    println!("token: {}", key.issue(&claims)?);

    let mut config = Config::default();
    config.listen = "127.0.0.1:9000".parse()?;
    config.keys.push(key);

    let handler = Handler::new(|mut session| async move {
        let hello = format!("hello {}", session.sub());
        if session.send(Message::text(hello)).await.is_err() {
            return;
        }
        while let Some(msg) = session.recv().await {
            if let Message::Text(t) = msg {
                if session.send(Message::text(t.to_uppercase())).await.is_err() {
                    return;
                }
            }
        }
        session.close(1000, "bye").await;
    });

    smol::block_on(async {
        let server = Server::bind(config, handler).await?;
        println!("listening on ws://{}/", server.local_addr()?);
        let stop = server.shutdown_handle();
        let ctrl_c = async move {
            let mut signals = async_signal::Signals::new([async_signal::Signal::Int])?;
            signals.next().await;
            stop.shutdown();
            std::future::pending::<std::io::Result<()>>().await
        };
        server.run().or(ctrl_c).await?;
        Ok(())
    })
}
