//! One write in flight: the backpressure of both relays, proxy mode's client →
//! upstream and process mode's client → stdin (`docs/protocol.md#proxy-mode`,
//! "Backpressure"). The next client message is read only once the previous one is
//! written; meanwhile the other direction keeps going.
//!
//! An [`Outbox`] owns the writer while it is idle, and while a write is in flight the
//! boxed write itself, which owns the writer and gives it back with its result. The
//! caller races [`Outbox::finished`] with its other events and, while
//! [`Outbox::is_busy`], does not read the client (`Session::hold_or`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// A write in flight: it owns the writer and gives it back with its result.
type Write<W, E> = Pin<Box<dyn Future<Output = (W, Result<(), E>)> + Send>>;

/// A writer `W` with at most one write in flight, failing with `E`.
pub(crate) struct Outbox<W, E> {
    /// The writer when no write is in flight; `None` while one is, and for good once
    /// one failed.
    idle: Option<W>,
    /// The write in flight.
    busy: Option<Write<W, E>>,
}

impl<W, E> Outbox<W, E> {
    /// An idle outbox around `writer`.
    pub(crate) fn new(writer: W) -> Outbox<W, E> {
        Outbox {
            idle: Some(writer),
            busy: None,
        }
    }

    /// Whether a write is in flight: the client is held back then.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// Starts a write: `write` gets the writer and returns the write, which gives the
    /// writer back with its result. Refused (`false`, and `write` is not called) while
    /// a write is in flight or once the writer is gone (a write failed).
    pub(crate) fn start<F>(&mut self, write: impl FnOnce(W) -> F) -> bool
    where
        F: Future<Output = (W, Result<(), E>)> + Send + 'static,
    {
        if self.busy.is_some() {
            return false;
        }
        match self.idle.take() {
            Some(w) => {
                self.busy = Some(Box::pin(write(w)));
                true
            }
            None => false,
        }
    }

    /// The result of the write in flight, once it is done; pending for ever when there
    /// is none, so that it can be raced with `.or(…)`. On success the writer is idle
    /// again; on failure it is dropped, and later writes are refused: what that means
    /// is the caller's (the relay ends, the process gets no more input). Cancel-safe:
    /// dropped before the end, the write stays in flight.
    pub(crate) fn finished(&mut self) -> impl Future<Output = Result<(), E>> + '_ {
        std::future::poll_fn(|cx| self.poll_finished(cx))
    }

    // Not inlined into each race that awaits it (the router build is measured in
    // bytes, docs/performance.md#binary-size).
    #[inline(never)]
    fn poll_finished(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        let Some(write) = self.busy.as_mut() else {
            return Poll::Pending;
        };
        let (w, r) = ready!(write.as_mut().poll(cx));
        self.busy = None;
        if r.is_ok() {
            self.idle = Some(w);
        }
        Poll::Ready(r)
    }

    /// The idle writer, taken out (to rebuild it, say; [`Outbox::new`] puts it
    /// back); `None` while a write is in flight or once the writer is gone.
    pub(crate) fn take_idle(&mut self) -> Option<W> {
        if self.busy.is_some() {
            return None;
        }
        self.idle.take()
    }

    /// The writer once the write in flight (if any) is done, whatever its result: for
    /// a last write, such as a close frame. `None` once the writer is gone. Unbounded:
    /// the caller bounds it (`within_close_wait`).
    pub(crate) async fn into_writer(self) -> Option<W> {
        match self.busy {
            Some(write) => Some(write.await.0),
            None => self.idle,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::future::{block_on, poll_once};

    type Bytes = Outbox<Vec<u8>, &'static str>;
    /// A write that is done at once.
    type Done = smol::future::Ready<(Vec<u8>, Result<(), &'static str>)>;

    /// A write of `data` to the vector, failing with `fail` if given.
    fn write(data: &'static [u8], fail: Option<&'static str>) -> impl FnOnce(Vec<u8>) -> Done {
        move |mut w| {
            w.extend_from_slice(data);
            smol::future::ready((w, fail.map_or(Ok(()), Err)))
        }
    }

    #[test]
    fn idle_start_busy_finished_gives_the_writer_back() {
        block_on(async {
            let mut out = Bytes::new(Vec::new());
            assert!(!out.is_busy());
            assert!(out.start(write(b"ab", None)));
            assert!(out.is_busy());
            assert_eq!(out.take_idle(), None);
            // One write at a time: a second is refused, its closure never called.
            assert!(!out.start(|_| -> Done { unreachable!() }));
            assert_eq!(out.finished().await, Ok(()));
            assert!(!out.is_busy());
            assert!(out.start(write(b"cd", None)));
            assert_eq!(out.finished().await, Ok(()));
            assert_eq!(out.take_idle().as_deref(), Some(&b"abcd"[..]));
            // Taken out: nothing to write with until it is put back.
            assert!(!out.start(write(b"x", None)));
        });
    }

    #[test]
    fn a_failed_write_drops_the_writer() {
        block_on(async {
            let mut out = Bytes::new(Vec::new());
            assert!(out.start(write(b"ab", Some("broken"))));
            assert_eq!(out.finished().await, Err("broken"));
            assert!(!out.is_busy());
            assert!(!out.start(write(b"cd", None)));
            assert_eq!(out.take_idle(), None);
            assert_eq!(out.into_writer().await, None);
        });
    }

    #[test]
    fn finished_is_pending_when_idle_and_until_the_write_is_done() {
        block_on(async {
            let mut out = Bytes::new(Vec::new());
            assert_eq!(poll_once(out.finished()).await, None);
            let (done, wait) = smol::channel::bounded::<()>(1);
            assert!(out.start(|w| async move {
                let _ = wait.recv().await;
                (w, Ok(()))
            }));
            // Dropped unfinished, the write stays in flight.
            assert_eq!(poll_once(out.finished()).await, None);
            assert!(out.is_busy());
            done.send(()).await.unwrap();
            assert_eq!(poll_once(out.finished()).await, Some(Ok(())));
            assert!(!out.is_busy());
            assert_eq!(poll_once(out.finished()).await, None);
        });
    }

    #[test]
    fn into_writer_finishes_the_write_in_flight_whatever_its_result() {
        block_on(async {
            let out = Bytes::new(b"a".to_vec());
            assert_eq!(out.into_writer().await.as_deref(), Some(&b"a"[..]));
            let mut out = Bytes::new(Vec::new());
            assert!(out.start(write(b"ab", Some("broken"))));
            assert_eq!(out.into_writer().await.as_deref(), Some(&b"ab"[..]));
        });
    }
}
