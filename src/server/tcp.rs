//! [`Tcp`]: an accepted TCP connection, as the listeners hand it on.
//!
//! It reads as its clients talk. A client answers what it was sent, so a read right
//! after a write finds the socket empty when the server is quicker than its clients,
//! and costs a system call for nothing: then the read after a write waits for the
//! socket to become readable first. When the clients are ahead (a saturated server),
//! the data is there already, and waiting would cost a turn of the event loop
//! instead: then it is read at once. Which of the two, each thread learns from how
//! its reads after writes have gone lately. And the readiness event that ends a wait
//! is taken before the next read: one left behind would end a later wait at once, on
//! an empty socket (`docs/decisions.md#reads-after-writes`).

use std::cell::Cell;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

/// A TCP connection registered with the reactor.
pub struct Tcp {
    io: Async<std::net::TcpStream>,
    /// Wait for readability before the next read: the last read found the socket
    /// empty (the wait may be under way), or a read after a write waits first.
    wait: bool,
    /// Written to since the last read.
    wrote: bool,
}

impl Tcp {
    pub(crate) fn new(io: Async<std::net::TcpStream>) -> Tcp {
        Tcp {
            io,
            wait: false,
            wrote: false,
        }
    }

    /// A connection smol made (an upstream's), to be read and written as ours.
    pub(crate) fn connected(tcp: smol::net::TcpStream) -> io::Result<Tcp> {
        let io: std::sync::Arc<Async<std::net::TcpStream>> = tcp.into();
        std::sync::Arc::try_unwrap(io)
            .map(Tcp::new)
            .map_err(|_| io::Error::other("the connection is shared"))
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
        // A read after a write, tried at once: its outcome is recorded.
        let mut tried = false;
        if std::mem::take(&mut this.wrote) && !this.wait {
            this.wait = Lately::wait_first();
            tried = !this.wait;
        }
        loop {
            if this.wait {
                ready!(this.io.poll_readable(cx))?;
                this.wait = false;
            }
            let read = this.io.get_ref().read(buf);
            let empty = matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
            if std::mem::take(&mut tried) {
                Lately::record(empty);
            }
            if !empty {
                return Poll::Ready(read);
            }
            this.wait = true;
        }
    }
}

/// How this thread's reads after writes have gone lately: a score that each one
/// tried at once moves up by one when it found the socket empty, and down by two when
/// it found data. Reads after writes wait first only while the score is above zero,
/// so while most of them (over two in three) find the socket empty: waiting first
/// costs more user-space work than a read that fails, and saves only its system call.
struct Lately {
    score: Cell<i8>,
    reads: Cell<u8>,
}

thread_local! {
    static LATELY: Lately = const {
        Lately {
            score: Cell::new(0),
            reads: Cell::new(0),
        }
    };
}

impl Lately {
    /// The score's bound: this many reads the other way turn the decision.
    const BOUND: i8 = 8;
    /// While reads after writes wait first, one in this many is tried at once all the
    /// same, to notice the clients getting ahead.
    const SAMPLE: u8 = 8;

    /// Whether the next read after a write is to wait for readability first.
    fn wait_first() -> bool {
        LATELY.with(|l| {
            if l.score.get() <= 0 {
                return false;
            }
            let n = l.reads.get().wrapping_add(1);
            l.reads.set(n);
            n % Self::SAMPLE != 0
        })
    }

    fn record(empty: bool) {
        LATELY.with(|l| {
            let s = l.score.get();
            l.score.set(if empty {
                (s + 1).min(Self::BOUND)
            } else {
                (s - 2).max(-Self::BOUND)
            });
        });
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
        this.wrote = true;
        Poll::Ready(written)
    }

    // rustls writes its records in one `writev`; elsewhere the one-slice default is
    // enough (and smaller).
    #[cfg(feature = "tls")]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs));
        this.wrote = true;
        Poll::Ready(written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Lately;

    /// How the next `n` reads after writes are made (true: wait first), each one
    /// tried at once finding the socket empty or not as `empty` says.
    fn next(n: usize, empty: bool) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let wait = Lately::wait_first();
                if !wait {
                    Lately::record(empty);
                }
                wait
            })
            .collect()
    }

    #[test]
    fn reads_after_writes_wait_first_once_they_find_sockets_empty_and_turn_back() {
        // Each test runs on a thread of its own: a fresh score.
        assert!(
            !Lately::wait_first(),
            "at first, a read after a write is tried"
        );
        assert_eq!(next(1, true), [false]);
        // Found empty: the next ones wait, but for one in eight, still tried.
        let waits = next(64, true);
        assert_eq!(waits.iter().filter(|w| !**w).count(), 8, "{waits:?}");
        // The clients get ahead: the samples find data, and soon every read after a
        // write is tried at once again.
        let waits = next(200, false);
        assert!(waits[150..].iter().all(|w| !w), "{waits:?}");
        // And back, within the bound.
        let waits = next(Lately::BOUND as usize + 10, true);
        assert!(
            waits[Lately::BOUND as usize + 1..].iter().any(|w| *w),
            "{waits:?}"
        );
    }
}
