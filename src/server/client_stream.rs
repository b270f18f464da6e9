//! [`handshake`] and [`exchange`]: the client handshake driven over a connected stream
//! (the IO half of `client`; the rest of it is sans IO).

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use smol::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::client::{HandshakeError, Upgrade};

/// Bytes asked of the stream per read while the answer head is incomplete.
const READ_CHUNK: usize = 1024;

/// Sends `upgrade`'s request on `stream`, checks the answer, and hands the stream
/// (with any bytes read past the answer head) to async-tungstenite as a client.
/// Unbounded in time: the caller puts its deadline around it.
pub async fn handshake<S>(
    mut stream: S,
    upgrade: &Upgrade,
    config: WebSocketConfig,
) -> Result<WebSocketStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let leftover = exchange(&mut stream, upgrade).await?;
    Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await)
}

/// The HTTP part of [`handshake`]: sends the request, reads and checks the answer,
/// and returns the bytes read past its head (the first WebSocket frames), for a
/// caller that builds the WebSocket itself.
pub async fn exchange<S>(stream: &mut S, upgrade: &Upgrade) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(upgrade.request())
        .await
        .map_err(HandshakeError::Io)?;
    stream.flush().await.map_err(HandshakeError::Io)?;
    // On the heap, so that the caller's future stays small.
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let head_len = loop {
        let filled = buf.len();
        buf.resize(filled + READ_CHUNK, 0);
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(HandshakeError::Io)?;
        buf.truncate(filled + n);
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        if let Some(len) = upgrade.check_answer(&buf)? {
            break len;
        }
    };
    Ok(buf.split_off(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::{answer, upgrade};

    use async_tungstenite::tungstenite::Message;
    use smol::net::unix::UnixStream;
    use smol::stream::StreamExt as _;

    /// A peer on the other end of a socket pair: reads the request head, then writes
    /// `answer` in one go.
    async fn peer(mut s: UnixStream, answer: Vec<u8>) -> Vec<u8> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        s.write_all(&answer).await.unwrap();
        head
    }

    #[test]
    fn bytes_after_the_head_reach_the_websocket() {
        smol::block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let u = upgrade(&[]);
            // The 101 and a first text frame ("hi", unmasked from a server) together.
            let mut bytes = answer("").into_bytes();
            bytes.extend_from_slice(b"\x81\x02hi");
            let server = smol::spawn(peer(b, bytes));
            let mut ws = handshake(a, &u, WebSocketConfig::default()).await.unwrap();
            assert_eq!(server.await, u.request());
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
        });
    }

    #[test]
    fn handshake_reports_status_and_early_close() {
        smol::block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let server = smol::spawn(peer(b, b"HTTP/1.1 401 Unauthorized\r\n\r\n".to_vec()));
            let e = handshake(a, &upgrade(&[]), WebSocketConfig::default()).await;
            assert!(matches!(e, Err(HandshakeError::Status(401))), "{e:?}");
            server.await;
            let (a, b) = UnixStream::pair().unwrap();
            let server = smol::spawn(peer(b, b"HTTP/1.1 101 Swi".to_vec()));
            let e = handshake(a, &upgrade(&[]), WebSocketConfig::default()).await;
            assert!(matches!(e, Err(HandshakeError::Closed)), "{e:?}");
            server.await;
        });
    }
}
