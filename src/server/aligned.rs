//! [`FrameAligned`]: the stream that ends every read at a frame boundary, as
//! [`FrameCursor`] finds them (why: the module docs of `frames`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use smol::io::{AsyncRead, AsyncWrite};

use crate::frames::FrameCursor;
use crate::session::Connection;

/// A stream whose reads end at frame boundaries (see the `frames` module docs).
/// Writes pass through. A detached one (no inner stream) reads as closed and fails
/// writes.
pub struct FrameAligned<S> {
    inner: Option<S>,
    cursor: FrameCursor,
    /// Bytes read past a frame's end (or left over from the handshake), handed out
    /// first; freed once drained, so an idle session holds none.
    spill: Vec<u8>,
    spill_at: usize,
    /// The next write is the connection's last ([`FrameAligned::end_with_next_write`]).
    last_write: bool,
    /// Bytes were sent held back: they go when the connection closes
    /// ([`FrameAligned::finish`]).
    held: bool,
    /// The longest data message let through (0: no bound): see [`FrameAligned::limit`].
    limit: u64,
}

impl<S> FrameAligned<S> {
    /// Wraps `inner`; `already_read` is what came after the upgrade request.
    pub fn new(inner: S, already_read: Vec<u8>) -> FrameAligned<S> {
        FrameAligned {
            inner: Some(inner),
            cursor: FrameCursor::default(),
            spill: already_read,
            spill_at: 0,
            last_write: false,
            held: false,
            limit: 0,
        }
    }

    /// A stand-in with no stream.
    pub(crate) fn detached() -> FrameAligned<S> {
        FrameAligned {
            inner: None,
            cursor: FrameCursor::default(),
            spill: Vec::new(),
            spill_at: 0,
            last_write: false,
            held: false,
            limit: 0,
        }
    }

    /// Bounds the data messages let through at `bytes` (0: no bound): a read that
    /// reaches the header of a frame that takes a message past it fails
    /// (`InvalidData`), before any of that frame goes to the WebSocket layer, which so
    /// never buffers it. The first message before authentication is bounded so
    /// (`docs/protocol.md#first-message-authentication`), then the bound is lifted.
    pub fn limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    /// The length of the message that went past the bound, once one did.
    pub fn over_limit(&self) -> Option<u64> {
        let len = self.cursor.message_len();
        (self.limit != 0 && len > self.limit).then_some(len)
    }

    /// Whether everything handed out so far ends at a frame boundary: the WebSocket
    /// layer then holds no byte of a frame it has not returned.
    pub fn at_boundary(&self) -> bool {
        self.cursor.at_boundary()
    }

    /// The wrapped stream (`None` when detached).
    pub fn get_ref(&self) -> Option<&S> {
        self.inner.as_ref()
    }

    /// The wrapped stream, to read or write it raw (`None` when detached).
    pub fn get_mut(&mut self) -> Option<&mut S> {
        self.inner.as_mut()
    }

    /// Marks the next write as the connection's last (the reply to the peer's close
    /// frame). On a plain TCP socket it is then sent held back (`MSG_MORE`), and
    /// [`FrameAligned::finish`] closes the socket: the kernel sends the bytes and the
    /// FIN in one segment, one packet fewer for both ends to process. Elsewhere, or
    /// if the socket would block, the write goes as usual and the FIN follows.
    pub fn end_with_next_write(&mut self) {
        self.last_write = true;
    }

    /// Closes the connection now if its last bytes were sent held back (see
    /// [`FrameAligned::end_with_next_write`]), which sends them with the FIN; it then
    /// reads as closed and fails writes. Otherwise does nothing.
    pub fn finish(&mut self) {
        if std::mem::take(&mut self.held) {
            self.inner = None;
        }
    }

    fn detached_error() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "stream detached")
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FrameAligned<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.spill_at < this.spill.len() {
            let avail = &this.spill[this.spill_at..];
            let n = avail.len().min(out.len());
            let n = this.cursor.take(&avail[..n]);
            if this.over_limit().is_some() {
                return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
            }
            out[..n].copy_from_slice(&avail[..n]);
            this.spill_at += n;
            if this.spill_at == this.spill.len() {
                this.spill = Vec::new();
                this.spill_at = 0;
            }
            return Poll::Ready(Ok(n));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let read = std::task::ready!(Pin::new(inner).poll_read(cx, out))?;
        let n = this.cursor.take(&out[..read]);
        if this.over_limit().is_some() {
            return Poll::Ready(Err(io::ErrorKind::InvalidData.into()));
        }
        if n < read {
            this.spill = out[n..read].to_vec();
            this.spill_at = 0;
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: Connection> AsyncWrite for FrameAligned<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(Self::detached_error()));
        };
        if std::mem::take(&mut this.last_write) {
            if let Some(n) = S::tcp(inner).and_then(|tcp| send_held(tcp, buf)) {
                this.held = true;
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut().inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(Self::detached_error())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_close(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Sends `buf` held back (`MSG_MORE`): it leaves when more is sent or the socket
/// closes, with the FIN. `None` if nothing was sent (the socket would block, or
/// failed): the caller writes as usual, and meets the same error if any.
fn send_held(tcp: std::os::fd::BorrowedFd<'_>, buf: &[u8]) -> Option<usize> {
    use rustix::net::SendFlags;
    rustix::net::send(tcp, buf, SendFlags::MORE | SendFlags::NOSIGNAL).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::tests::frame;

    #[test]
    fn reads_stop_at_frame_ends_and_keep_the_rest() {
        let a = frame(1, 10, true);
        let b = frame(2, 300, true);
        let leftover = [a.clone(), b[..5].to_vec()].concat();
        let rest = b[5..].to_vec();
        let mut s = FrameAligned::new(smol::io::Cursor::new(rest), leftover);
        smol::block_on(async {
            use smol::io::AsyncReadExt as _;
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(
                &buf[..n],
                &a[..],
                "the handshake's leftover, up to the frame end"
            );
            assert!(s.at_boundary());
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b, "then the next frame, whole, nothing lost");
            assert!(s.at_boundary());
            assert!(s.spill.capacity() == 0, "spill freed once drained");
        });
    }

    #[test]
    fn detached_reads_end_and_writes_fail() {
        let mut s = FrameAligned::<smol::io::Cursor<Vec<u8>>>::detached();
        smol::block_on(async {
            use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
            assert_eq!(s.read(&mut [0u8; 8]).await.unwrap(), 0);
            assert!(s.write(b"x").await.is_err());
        });
    }
}
