//! [`Tcp`]: a TCP connection of the server's own, accepted by a listener or dialled
//! to an `--upstream`.
//!
//! It reads as its peers talk. A peer answers what it was sent, so a read right
//! after a write finds the socket empty when the server is quicker than its peers,
//! and costs a system call for nothing: then the read after a write waits for the
//! socket to become readable first. When the peers are ahead (a saturated server),
//! the data is there already, and waiting would cost a turn of the event loop
//! instead: then it is read at once. Which of the two, each thread learns from how
//! its reads after writes have gone lately. And the readiness event that ends a wait
//! is taken before the next read: one left behind would end a later wait at once, on
//! an empty socket (`docs/decisions.md#reads-after-writes`).

use std::io::{self, Read as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI8, AtomicU8};
use std::task::{Context, Poll, ready};

use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

/// A TCP connection registered with the reactor.
pub(crate) struct Tcp {
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
            this.wait = LATELY.with(Hunch::wait_first);
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
                LATELY.with(|l| l.record(empty));
            }
            if !empty {
                return Poll::Ready(read);
            }
            this.wait = true;
        }
    }
}

/// A guess whether an operation tried right after another of its kind (a read after
/// a write, an accept after an accept) will find nothing to do, from how such tries
/// went lately: a score that each one moves up by one when it found nothing, and down
/// by four when it found something. They wait for readiness first only while the
/// score is above zero, so while over four in five find nothing: a wait that was not
/// needed costs a turn of the event loop, more than a try that fails (callgrind, 64
/// clients, message round trips: 0.980–1.030 of the floor's instructions with steps of
/// one and two, 0.988–0.999 with four, 0.993–0.996 never waiting first). While they
/// wait first, one in [`Hunch::SAMPLE`] is tried at once all the same, so the score
/// notices when there is something to find again. Relaxed atomics: the listener's is
/// shared by the threads of `--threads`, whose racing updates only blur the guess.
pub(crate) struct Hunch {
    score: AtomicI8,
    tries: AtomicU8,
}

thread_local! {
    /// This thread's reads after writes.
    static LATELY: Hunch = const { Hunch::new() };
}

impl Hunch {
    /// The score's bound: this many tries the other way turn the decision.
    const BOUND: i8 = 8;
    const SAMPLE: u8 = 8;

    pub(crate) const fn new() -> Hunch {
        Hunch {
            score: AtomicI8::new(0),
            tries: AtomicU8::new(0),
        }
    }

    /// Whether the next such operation is to wait for readiness first (else it is
    /// tried at once, and its outcome goes to [`Hunch::record`]).
    pub(crate) fn wait_first(&self) -> bool {
        if self.score.load(Relaxed) <= 0 {
            return false;
        }
        let n = self.tries.load(Relaxed).wrapping_add(1);
        self.tries.store(n, Relaxed);
        n % Self::SAMPLE != 0
    }

    /// What an operation tried at once found: nothing (`empty`), or something.
    pub(crate) fn record(&self, empty: bool) {
        let s = self.score.load(Relaxed);
        let s = if empty { s + 1 } else { s - 4 };
        self.score
            .store(s.clamp(-Self::BOUND, Self::BOUND), Relaxed);
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

    /// Half-closes: the peer reads the end of the stream, and our reads go on (an
    /// HTTP answer's gentle close). async-io's own `poll_close` only flushes.
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.io.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::{Hunch, Tcp};

    #[test]
    fn close_half_closes_and_reads_go_on() {
        use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let mut tcp = Tcp::new(smol::Async::new(accepted).unwrap());
        smol::block_on(async {
            tcp.write_all(b"answer").await.unwrap();
            tcp.close().await.unwrap();
            // The stream is still ours: only a shutdown ends the peer's read.
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"answer");
            peer.write_all(b"late").unwrap();
            drop(peer);
            let mut rest = Vec::new();
            tcp.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"late", "reads go on after the half-close");
        });
    }

    /// How the next `n` reads after writes are made (true: wait first), each one
    /// tried at once finding the socket empty or not as `empty` says.
    fn next(h: &Hunch, n: usize, empty: bool) -> Vec<bool> {
        (0..n)
            .map(|_| {
                let wait = h.wait_first();
                if !wait {
                    h.record(empty);
                }
                wait
            })
            .collect()
    }

    #[test]
    fn tries_wait_first_once_they_mostly_find_nothing_and_turn_back() {
        let h = Hunch::new();
        assert!(!h.wait_first(), "at first, an operation is tried at once");
        assert_eq!(next(&h, 1, true), [false]);
        // Found nothing: the next ones wait, but for one in eight, still tried.
        let waits = next(&h, 64, true);
        assert_eq!(waits.iter().filter(|w| !**w).count(), 8, "{waits:?}");
        // Something to find again: the samples find it, and soon every one is tried
        // at once again.
        let waits = next(&h, 200, false);
        assert!(waits[150..].iter().all(|w| !w), "{waits:?}");
        // Half and half: tried at once (one that finds something counts four).
        let mixed: Vec<bool> = (0..100)
            .flat_map(|_| next(&h, 1, true).into_iter().chain(next(&h, 1, false)))
            .collect();
        assert!(mixed.iter().all(|w| !w), "{mixed:?}");
        // And back, within the bound.
        let waits = next(&h, Hunch::BOUND as usize + 10, true);
        assert!(
            waits[Hunch::BOUND as usize + 1..].iter().any(|w| *w),
            "{waits:?}"
        );
    }
}
