//! The server's own timers: every deadline of a connection (the head timeout, the
//! closing handshake, a session's keepalive, expiry and notice) is a [`Sleep`] on
//! one process-wide heap, looked at by one small thread.
//!
//! Why not async-io's timers: each one async-io registers wakes its reactor (an
//! `eventfd` write) and goes through a `BTreeMap` that is split on every reactor
//! turn, so a connection paid for two or three timers that almost never fire, and a
//! handshake cost more the more sessions were held (`docs/decisions.md#timers`).
//! Here setting or dropping a timer takes a lock and a heap operation, and wakes
//! nothing: the thread looks every [`TICK`] while timers are set, so a timer fires
//! at most one tick late. It sleeps once no timer has been set for [`LINGER`], and
//! the next one set wakes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How late a timer may fire: the thread looks this often while a timer is set.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How long the thread keeps looking once the last timer is gone, before it sleeps
/// until one is set: connections coming one after another then never wake it.
const LINGER: Duration = Duration::from_secs(1);

/// Not in the heap (free, or fired).
const NOWHERE: u32 = u32::MAX;

struct Slot {
    /// Where its entry is in `Heap::entries`, or [`NOWHERE`].
    pos: u32,
    waker: Option<Waker>,
}

/// A binary min-heap of `(when, slot)` whose slots know their position, so a timer
/// is moved or removed in O(log n) without a search.
#[derive(Default)]
struct Heap {
    entries: Vec<(Instant, u32)>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The thread sleeps until a timer is set (no timer for [`LINGER`]).
    parked: bool,
}

impl Heap {
    fn insert(&mut self, at: Instant, waker: Waker) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    pos: NOWHERE,
                    waker: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[slot as usize].waker = Some(waker);
        self.place(slot, at);
        slot
    }

    /// Puts `slot` (out of the heap) in at `at`.
    fn place(&mut self, slot: u32, at: Instant) {
        self.entries.push((at, slot));
        let pos = self.entries.len() - 1;
        self.slots[slot as usize].pos = pos as u32;
        self.sift_up(pos);
    }

    /// Moves `slot` to `at`, putting it back in if it fired.
    fn reset(&mut self, slot: u32, at: Instant) {
        self.unlink(slot);
        self.place(slot, at);
    }

    /// Frees `slot` (out of the heap if it is in); its waker, to drop outside the lock.
    fn remove(&mut self, slot: u32) -> Option<Waker> {
        self.unlink(slot);
        self.free.push(slot);
        self.slots[slot as usize].waker.take()
    }

    /// Takes `slot`'s entry out of the heap, if it is in.
    fn unlink(&mut self, slot: u32) {
        let pos = std::mem::replace(&mut self.slots[slot as usize].pos, NOWHERE);
        if pos == NOWHERE {
            return;
        }
        let pos = pos as usize;
        let last = self.entries.len() - 1;
        self.entries.swap(pos, last);
        self.entries.pop();
        if pos < last {
            let moved = self.entries[pos].1;
            self.slots[moved as usize].pos = pos as u32;
            self.sift_down(pos);
            self.sift_up(pos);
        }
    }

    /// The wakers of the timers due at `now`, taken out of the heap (their slots stay
    /// taken until their [`Sleep`] drops).
    fn due(&mut self, now: Instant, wakers: &mut Vec<Waker>) {
        while let Some(&(at, slot)) = self.entries.first() {
            if at > now {
                break;
            }
            self.unlink(slot);
            wakers.extend(self.slots[slot as usize].waker.take());
        }
    }

    // Both sifts carry the entry in hand and write it once where it stops: each level
    // moves one entry and its slot's position, where a swap would move two.
    fn sift_up(&mut self, mut pos: usize) {
        let moving = self.entries[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.entries[parent].0 <= moving.0 {
                break;
            }
            self.put(pos, self.entries[parent]);
            pos = parent;
        }
        self.put(pos, moving);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let moving = self.entries[pos];
        let len = self.entries.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.entries[right].0 < self.entries[left].0 {
                right
            } else {
                left
            };
            if moving.0 <= self.entries[child].0 {
                break;
            }
            self.put(pos, self.entries[child]);
            pos = child;
        }
        self.put(pos, moving);
    }

    /// Writes `entry` at `pos`, and tells its slot.
    fn put(&mut self, pos: usize, entry: (Instant, u32)) {
        self.entries[pos] = entry;
        self.slots[entry.1 as usize].pos = pos as u32;
    }
}

static HEAP: Mutex<Heap> = Mutex::new(Heap {
    entries: Vec::new(),
    slots: Vec::new(),
    free: Vec::new(),
    parked: false,
});
static THREAD: OnceLock<Thread> = OnceLock::new();

fn heap() -> MutexGuard<'static, Heap> {
    HEAP.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the timers' thread, once per process (a server calls this when it binds).
pub(crate) fn start() -> std::io::Result<()> {
    if THREAD.get().is_some() {
        return Ok(());
    }
    static STARTING: Mutex<()> = Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
    if THREAD.get().is_none() {
        let handle = std::thread::Builder::new()
            .name("wsgate-timers".into())
            .stack_size(64 * 1024)
            .spawn(run)?;
        let _ = THREAD.set(handle.thread().clone());
    }
    Ok(())
}

/// The thread: wakes the timers that are due, every [`TICK`] (or sooner, for the
/// next one due) while any is set.
fn run() {
    let mut wakers = Vec::new();
    let mut empty_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let sleep = {
            let mut heap = heap();
            heap.due(now, &mut wakers);
            match heap.entries.first() {
                Some(&(next, _)) => {
                    empty_since = None;
                    Some(next.saturating_duration_since(now).min(TICK))
                }
                None if empty_since.is_some_and(|t| now.duration_since(t) >= LINGER) => {
                    heap.parked = true;
                    None
                }
                None => {
                    empty_since.get_or_insert(now);
                    Some(TICK)
                }
            }
        };
        for w in wakers.drain(..) {
            w.wake();
        }
        match sleep {
            Some(d) => std::thread::park_timeout(d),
            None => {
                std::thread::park();
                empty_since = None;
            }
        }
    }
}

/// When a [`Sleep`] ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    Never,
    At(Instant),
    /// A duration from its first poll: no clock read for a bound that is never
    /// waited on (a read that finds its data at once).
    After(Duration),
}

/// A future that resolves at an instant (at most [`TICK`] late), like
/// `smol::Timer`; it wakes no thread when set or dropped.
#[derive(Debug)]
pub(crate) struct Sleep {
    when: When,
    slot: Option<u32>,
}

impl Sleep {
    pub(crate) fn at(at: Instant) -> Sleep {
        Sleep {
            when: When::At(at),
            slot: None,
        }
    }

    pub(crate) fn after(d: Duration) -> Sleep {
        Sleep {
            when: When::After(d),
            slot: None,
        }
    }

    pub(crate) fn never() -> Sleep {
        Sleep {
            when: When::Never,
            slot: None,
        }
    }

    /// Ends at `at` instead (also after it ended).
    pub(crate) fn set_at(&mut self, at: Instant) {
        self.when = When::At(at);
        if let Some(slot) = self.slot {
            let mut heap = heap();
            heap.reset(slot, at);
            if std::mem::take(&mut heap.parked) {
                drop(heap);
                unpark_thread();
            }
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // One clock read per poll.
        let (now, at) = match self.when {
            When::Never => return Poll::Pending,
            When::At(at) => (Instant::now(), at),
            When::After(d) => {
                let now = Instant::now();
                let at = crate::deadline::instant_after(now, d);
                self.when = When::At(at);
                (now, at)
            }
        };
        if now >= at {
            return Poll::Ready(());
        }
        let (old, unpark) = {
            let mut heap = heap();
            let old = match self.slot {
                None => {
                    self.slot = Some(heap.insert(at, cx.waker().clone()));
                    None
                }
                Some(slot) => {
                    if heap.slots[slot as usize].pos == NOWHERE {
                        // Fired, but the clock says not yet (or polled once more).
                        heap.place(slot, at);
                    }
                    let waker = &mut heap.slots[slot as usize].waker;
                    if waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        None
                    } else {
                        waker.replace(cx.waker().clone())
                    }
                }
            };
            (old, std::mem::take(&mut heap.parked))
        };
        if unpark {
            unpark_thread();
        }
        // Outside the lock: dropping a waker may run a task's cleanup.
        drop(old);
        Poll::Pending
    }
}

/// Wakes the thread out of its long sleep (a timer was set after [`LINGER`] without).
fn unpark_thread() {
    if let Some(t) = THREAD.get() {
        t.unpark();
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let waker = heap().remove(slot);
            drop(waker);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> Waker {
        Waker::from(Arc::new(Count(AtomicUsize::new(0))))
    }

    /// The heap's invariants: each slot knows its position, each parent is due no
    /// later than its children.
    fn check(h: &Heap) {
        for (pos, &(at, slot)) in h.entries.iter().enumerate() {
            assert_eq!(h.slots[slot as usize].pos as usize, pos);
            if pos > 0 {
                assert!(h.entries[(pos - 1) / 2].0 <= at);
            }
        }
    }

    #[test]
    fn the_heap_gives_timers_back_in_order_whatever_is_moved_or_removed() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut h = Heap::default();
        // A fixed pseudo-random order (an LCG): inserts, moves and removals mixed.
        let mut x: u64 = 12345;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut live: Vec<(u32, u64)> = Vec::new();
        for _ in 0..2000 {
            match next() % 4 {
                0 | 1 => {
                    let at = next() % 10_000;
                    live.push((h.insert(ms(at), waker()), at));
                }
                2 if !live.is_empty() => {
                    let i = (next() as usize) % live.len();
                    let at = next() % 10_000;
                    h.reset(live[i].0, ms(at));
                    live[i].1 = at;
                }
                _ if !live.is_empty() => {
                    let i = (next() as usize) % live.len();
                    let (slot, _) = live.swap_remove(i);
                    assert!(h.remove(slot).is_some());
                }
                _ => {}
            }
            check(&h);
        }
        assert_eq!(h.entries.len(), live.len());
        // Due in order: at each instant exactly the timers at or before it.
        live.sort_by_key(|&(_, at)| at);
        let mut wakers = Vec::new();
        for cut in [0, 2_500, 5_000, 9_999] {
            h.due(ms(cut), &mut wakers);
            check(&h);
            let want = live.iter().filter(|&&(_, at)| at <= cut).count();
            assert_eq!(wakers.len(), want, "due by {cut}");
        }
        assert!(h.entries.is_empty());
        // A fired slot stays taken until removed, then is reused.
        let slot = live[0].0;
        assert!(h.remove(slot).is_none());
        assert_eq!(h.insert(ms(1), waker()), slot);
    }

    #[test]
    fn a_sleep_wakes_its_task_and_a_dropped_one_leaves_nothing() {
        start().unwrap();
        smol::block_on(async {
            let t = Instant::now();
            Sleep::after(Duration::from_millis(30)).await;
            assert!(t.elapsed() >= Duration::from_millis(30));
            // Moved earlier while waiting: ends at the new instant, not the old one.
            let mut far = Sleep::at(Instant::now() + Duration::from_secs(3600));
            let waited = smol::future::poll_once(&mut far).await;
            assert!(waited.is_none());
            far.set_at(Instant::now() + Duration::from_millis(20));
            far.await;
            // Never: pending, and registered nowhere.
            let mut never = Sleep::never();
            assert!(smol::future::poll_once(&mut never).await.is_none());
            assert!(never.slot.is_none());
        });
        // Dropped before it ends: its slot is free again.
        let slot = smol::block_on(async {
            let mut s = Sleep::after(Duration::from_secs(3600));
            let _ = smol::future::poll_once(&mut s).await;
            s.slot.unwrap()
        });
        let heap = heap();
        assert_eq!(heap.slots[slot as usize].pos, NOWHERE);
        assert!(heap.slots[slot as usize].waker.is_none());
    }
}
