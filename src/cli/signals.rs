//! `serve`'s signals (SIGINT, SIGTERM: shut down; SIGHUP: reload), watched at no
//! cost to the connections.
//!
//! async-signal's stream reads its pipe on every poll before it looks at readiness.
//! Raced with the server in one `block_on`, it was polled at every wake of the main
//! thread, so each turn of the event loop paid a `recvfrom` that found nothing
//! (4–5 per round trip with one client at a time, measured with perf). [`OwnWakes`]
//! polls it only when a signal woke it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use smol::stream::Stream;

/// Runs `on_hup` for each SIGHUP, and ends at the first SIGINT or SIGTERM. The
/// signals are taken over here, when this is called, not when the future is first
/// polled: from then on a SIGTERM is a graceful shutdown, whatever runs first.
/// Never ends if the signals cannot be watched.
pub fn watch<R, Fut>(mut on_hup: R) -> impl Future<Output = ()>
where
    R: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    use async_signal::Signal;
    use smol::stream::StreamExt as _;
    let signals = async_signal::Signals::new([Signal::Int, Signal::Term, Signal::Hup]);
    async move {
        let Ok(signals) = signals else {
            return std::future::pending().await;
        };
        let mut signals = OwnWakes::new(signals);
        while let Some(signal) = signals.next().await {
            match signal {
                Ok(Signal::Hup) => on_hup().await,
                _ => return,
            }
        }
        std::future::pending().await
    }
}

/// A stream that is polled only after its own waker was woken (and on its first
/// poll): whoever polls it for another reason gets `Pending` without it being
/// touched.
pub struct OwnWakes<S> {
    inner: S,
    wake: Arc<Flag>,
}

/// Set by the inner stream's waker; holds the waker of whoever polls [`OwnWakes`].
struct Flag {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let outer = self.outer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = outer.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl<S> OwnWakes<S> {
    pub fn new(inner: S) -> OwnWakes<S> {
        OwnWakes {
            inner,
            wake: Arc::new(Flag {
                woken: AtomicBool::new(true),
                outer: Mutex::new(None),
            }),
        }
    }
}

impl<S: Stream + Unpin> Stream for OwnWakes<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        {
            // Stored before the flag is read: a wake in between still reaches `cx`.
            let mut outer = self
                .wake
                .outer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *outer = Some(cx.waker().clone());
            }
        }
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.wake.clone());
        let polled = Pin::new(&mut self.inner).poll_next(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // The stream may have more at once: look again at the next poll.
            self.wake.woken.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; its items come from a queue, and it keeps the last waker.
    #[derive(Default)]
    struct Probe {
        polls: usize,
        items: Vec<u32>,
        waker: Option<Waker>,
    }

    impl Stream for Probe {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls += 1;
            match self.items.pop() {
                Some(i) => Poll::Ready(Some(i)),
                None => {
                    self.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_stream_is_polled_only_when_its_own_waker_fired() {
        let outer = Arc::new(Count(AtomicUsize::new(0)));
        let outer_waker = Waker::from(outer.clone());
        let mut cx = Context::from_waker(&outer_waker);
        let mut s = OwnWakes::new(Probe::default());
        let mut poll = |s: &mut OwnWakes<Probe>| Pin::new(s).poll_next(&mut cx);

        // The first poll reaches the stream, so that it registers its waker.
        assert!(poll(&mut s).is_pending());
        assert_eq!(s.inner.polls, 1);
        // Polls for other reasons (the server's wakes) do not.
        for _ in 0..10 {
            assert!(poll(&mut s).is_pending());
        }
        assert_eq!(s.inner.polls, 1);
        assert_eq!(outer.0.load(Ordering::SeqCst), 0);

        // Two items come and the stream's waker fires: the outer waker is woken,
        // the next poll reaches the stream, and so does the one after an item.
        s.inner.items = vec![2, 1];
        s.inner.waker.take().unwrap().wake();
        assert_eq!(outer.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut s), Poll::Ready(Some(1)));
        assert_eq!(poll(&mut s), Poll::Ready(Some(2)));
        assert!(poll(&mut s).is_pending());
        assert_eq!(s.inner.polls, 4);
        assert!(poll(&mut s).is_pending());
        assert_eq!(s.inner.polls, 4);
    }
}
