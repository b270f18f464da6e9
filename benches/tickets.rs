//! Memory of the ticket replay cache per live ticket: fills a cache with N tickets
//! (random 16-byte `jti`s, as `POST /ticket` mints them) and reports the heap bytes
//! it holds (a counting global allocator: what the cache asked for, before malloc's
//! own overhead), the peak while it grew, the allocations made, and the RSS growth;
//! then the time per `issue` and per `consume` on the full cache.
//!
//! `cargo bench --bench tickets` (`WSGATE_BENCH_TICKETS=100000,300000` sets the fills).

mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use wsgate::internal::{ReplayCache, random_id};

/// The system allocator, counting live bytes, their peak and the calls.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same arguments; the counters
// are atomics and never affect what is returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        grew(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        // Old and new blocks may both be live during the move: count the new first.
        grew(new);
        LIVE.fetch_sub(l.size(), Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NOW: i64 = 2_000_000_000;

fn main() {
    if !harness::enabled() {
        return;
    }
    let fills: Vec<usize> = std::env::var("WSGATE_BENCH_TICKETS")
        .unwrap_or_else(|_| "100000,300000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("WSGATE_BENCH_TICKETS: numbers"))
        .collect();
    println!(
        "| live tickets | heap B/entry | peak heap B/entry | allocations/entry | RSS growth B/entry | issue ns (full) | consume ns (full) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for n in fills {
        // The ids exist before the count starts, as they do in the server (the
        // ticket's claims own them); only the cache's own memory is counted.
        let ids: Vec<String> = (0..n).map(|_| random_id().unwrap()).collect();
        let rss0 = harness::rss_kib();
        let live0 = LIVE.load(Relaxed);
        PEAK.store(live0, Relaxed);
        let calls0 = CALLS.load(Relaxed);
        let cache = ReplayCache::new(n);
        for id in &ids {
            cache.issue(id, NOW + 30, NOW).unwrap();
        }
        let heap = LIVE.load(Relaxed) - live0;
        let peak = PEAK.load(Relaxed) - live0;
        let calls = CALLS.load(Relaxed) - calls0;
        let rss = (harness::rss_kib().saturating_sub(rss0)) * 1024;
        assert_eq!(cache.len(), n);
        let per = |b: usize| b as f64 / n as f64;
        // Full: issuing is refused in O(1) (nothing expired); consuming the
        // tickets it holds marks them used, then finds them used.
        let issue = harness::time(|| cache.issue("another", NOW + 30, NOW).is_err());
        let mut i = 0;
        let consume = harness::time(|| {
            i = (i + 1) % n;
            cache.consume(&ids[i], NOW + 30, NOW).is_ok()
        });
        println!(
            "| {n} | {:.1} | {:.1} | {:.3} | {:.1} | {:.0} | {:.0} |",
            per(heap),
            per(peak),
            per(calls),
            per(rss as usize),
            issue.median_ns,
            consume.median_ns,
        );
        drop(cache);
    }
}
