//! A custom handler: a tiny authenticated chat room. Each line a client sends goes
//! to everyone as `<sub>: <text>`. The name comes from the verified token, so nobody
//! can speak as someone else; a second connection of the same `sub` takes the
//! first one's place. Shows `Handler::new`, `Session::recv_or` (wait on the client
//! and on a channel at once) and `Session::send_watched` (a client that stops
//! reading still ends when its token expires).
//!
//! Run it, then paste two of the printed commands into two terminals:
//!
//! ```sh
//! cargo run --example chat
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use smol::channel::{Sender, bounded};
use wsgate::{Config, Handler, Key, Message, Race, Server};

type Room = Arc<Mutex<HashMap<String, Sender<String>>>>;

fn broadcast(room: &Room, line: &str) {
    for member in room.lock().unwrap().values() {
        // A member too slow to keep up misses lines: memory stays bounded.
        let _ = member.try_send(line.to_owned());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = Key::generate_local()?;
    let now = wsgate::unix_now();
    for sub in ["alice", "bob"] {
        let claims = wsgate::claims_json(sub, now, 3600, None, None, None, &[]);
        let token = key.issue(&claims)?;
        println!("websocat -H='Authorization: Bearer {token}' ws://127.0.0.1:8080/");
    }
    let room: Room = Arc::default();
    let handler = Handler::new(move |mut session| {
        let room = room.clone();
        async move {
            let sub = session.sub().to_owned();
            let (tx, rx) = bounded(64);
            if let Some(old) = room.lock().unwrap().insert(sub.clone(), tx.clone()) {
                old.close(); // That connection ends below, with 4000.
            }
            broadcast(&room, &format!("* {sub} joined"));
            loop {
                match session.recv_or(rx.recv()).await {
                    Race::Client(Message::Text(t)) => broadcast(&room, &format!("{sub}: {t}")),
                    Race::Client(_) => {}
                    Race::Other(Ok(line)) => {
                        if !session.send_watched(Message::text(line)).await {
                            break;
                        }
                    }
                    Race::Other(Err(_)) => return session.close(4000, "replaced").await,
                    Race::Closed => break,
                }
            }
            let left = {
                let mut members = room.lock().unwrap();
                let mine = members.get(&sub).is_some_and(|m| m.same_channel(&tx));
                mine && members.remove(&sub).is_some()
            };
            if left {
                broadcast(&room, &format!("* {sub} left"));
            }
        }
    });
    let mut config = Config::default();
    config.keys.push(key);
    smol::block_on(async {
        Server::bind(config, handler).await?.run().await?;
        Ok(())
    })
}
