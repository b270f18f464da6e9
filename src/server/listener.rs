//! wsgate's TCP listeners (the main one and the operators'): accepted connections come
//! non-blocking and without Nagle's delay, in one system call each.
//!
//! `smol::net::TcpListener::accept` makes three per connection: `accept4`, an
//! `ioctl(FIONBIO)` to make the socket non-blocking, and our `setsockopt(TCP_NODELAY)`.
//! Here `accept4` is asked for a non-blocking socket (`SOCK_NONBLOCK`), and on Linux
//! the accepted socket inherits `TCP_NODELAY` from the listener, where it is set once
//! (`docs/performance.md#system-calls`). Elsewhere it is set per connection, as before.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use rustix::net::{SocketFlags, acceptfrom_with};
use smol::Async;

use crate::log::Level;
use crate::state::Shutdown;
use crate::tcp::{Hunch, Tcp};

/// A bound TCP listener, registered with the reactor, and whether an accept right
/// after another finds a connection waiting, lately.
pub(crate) struct Listener(Async<std::net::TcpListener>, Hunch);

/// Set on the listener (and inherited) where the kernel passes it on to accepted
/// sockets; set on each accepted socket elsewhere.
const NODELAY_INHERITED: bool = cfg!(any(target_os = "linux", target_os = "android"));

impl Listener {
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let listener = std::net::TcpListener::bind(addr)?;
        if NODELAY_INHERITED {
            rustix::net::sockopt::set_tcp_nodelay(&listener, true)?;
        }
        Ok(Listener(Async::new(listener)?, Hunch::new()))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// The next connection and its peer's address. Called again right after a
    /// connection: under load another is waiting, and it is taken at once; while
    /// mostly none is, a try would fail, and the accept waits for readiness first.
    pub(crate) async fn accept(&self) -> io::Result<(Tcp, SocketAddr)> {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let mut tried = !self.1.wait_first();
        if !tried {
            self.0.readable().await?;
        }
        let (fd, peer) = loop {
            let accepted = acceptfrom_with(self.0.get_ref(), flags);
            let none = matches!(accepted, Err(rustix::io::Errno::WOULDBLOCK));
            if std::mem::take(&mut tried) {
                self.1.record(none);
            }
            if !none {
                break accepted.map_err(io::Error::from)?;
            }
            // Only a readiness event lets the accept be tried again: the loop that
            // awaits this is polled whenever its executor wakes, and a retry each time
            // would cost an `accept4` and a re-arm for nothing. (A `Readable` future,
            // not `poll_readable`: the accept loops of `--threads` wait on this one
            // listener together, and `poll_readable` keeps a single waiter.)
            self.0.readable().await?;
        };
        let stream = std::net::TcpStream::from(fd);
        if !NODELAY_INHERITED {
            stream.set_nodelay(true)?;
        }
        let peer = peer
            .and_then(|a| SocketAddr::try_from(a).ok())
            .ok_or_else(|| io::Error::other("accepted a connection without an IP address"))?;
        Ok((Tcp::new(Async::new_nonblocking(stream)?), peer))
    }

    /// The next connection, or `None` once `shutdown` has begun. A failed accept (out
    /// of file descriptors, say) is logged (`admin=true` on the operators' listener)
    /// and retried after a short pause, so the listener neither ends nor spins.
    pub(crate) async fn next(&self, shutdown: &Shutdown, admin: bool) -> Option<(Tcp, SocketAddr)> {
        loop {
            match shutdown.unless_begun(self.accept()).await? {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    if crate::log::enabled(Level::Error) {
                        let line = crate::log::Line::new(Level::Error, "accept_error");
                        let line = if admin { line.kv("admin", true) } else { line };
                        line.kv("error", e).emit();
                    }
                    crate::timers::Sleep::after(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
