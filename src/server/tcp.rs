//! [`Tcp`]: an accepted TCP connection, as the listeners hand it on.
//!
//! It reads as a client talks: after a write it waits for the socket to become
//! readable before it reads, since the answer to what it just sent cannot be there
//! yet, and a read that finds the socket empty costs a system call for nothing. And
//! it takes the readiness event that woke it before reading again: one left behind
//! would let a later wait end at once on an empty socket
//! (`docs/performance.md#system-calls`).

use std::io::{self, Read as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

/// A TCP connection registered with the reactor.
pub struct Tcp {
    io: Async<std::net::TcpStream>,
    /// Wait for readability before the next read: written to since the last read, or
    /// a wait for readability is under way.
    wait: bool,
}

impl Tcp {
    pub(crate) fn new(io: Async<std::net::TcpStream>) -> Tcp {
        Tcp { io, wait: false }
    }

    /// Reads into `buf` without taking the bytes from the socket (a PROXY header).
    #[cfg(feature = "load-balancer")]
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read_with(|s| s.peek(buf)).await
    }
}

impl AsFd for Tcp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.as_fd()
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.wait {
                ready!(this.io.poll_readable(cx))?;
                this.wait = false;
            }
            match this.io.get_ref().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.wait = true,
                read => return Poll::Ready(read),
            }
        }
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.io).poll_write(cx, buf));
        this.wait = true;
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs));
        this.wait = true;
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}
