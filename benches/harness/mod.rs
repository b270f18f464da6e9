//! A small timing harness shared by the benches (no criterion: it would add ~40
//! crates to the dev build for what a median of a few timed batches gives us).
//!
//! `cargo bench` passes `--bench`; `cargo test --all-targets` runs each bench's
//! `main` without it, and then [`enabled`] is false and the bench returns at once.
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Whether this process was started by `cargo bench` (which passes `--bench`).
/// When not, prints why nothing runs.
pub fn enabled() -> bool {
    let on = std::env::args().any(|a| a == "--bench");
    if !on {
        println!("bench skipped: run it with `cargo bench`");
    }
    on
}

/// An environment variable as a number, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Time per call of `f`: the median (and the spread) of `samples` batches of about
/// `batch_time` each, after a warm-up.
pub struct Timing {
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
}

impl Timing {
    /// `(max - min) / median`, as a percentage: how noisy the samples were.
    pub fn spread_pct(&self) -> f64 {
        (self.max_ns - self.min_ns) / self.median_ns * 100.0
    }
}

pub fn time<R>(mut f: impl FnMut() -> R) -> Timing {
    let batch_time = Duration::from_millis(env_or("WSGATE_BENCH_BATCH_MS", 100));
    let samples: usize = env_or("WSGATE_BENCH_SAMPLES", 7);
    // Calibrate: how many calls fill a batch.
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        let e = t.elapsed();
        if e >= batch_time / 4 {
            iters = ((iters as f64) * batch_time.as_secs_f64() / e.as_secs_f64()).max(1.0) as u64;
            break;
        }
        iters *= 2;
    }
    let mut per: Vec<f64> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per.sort_by(|a, b| a.total_cmp(b));
    Timing {
        median_ns: per[per.len() / 2],
        min_ns: per[0],
        max_ns: per[per.len() - 1],
    }
}

/// The median of some numbers.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Pins the calling thread (and what it spawns later) to `cpu`, where the machine
/// has it. Returns whether it did.
pub fn pin_to(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    unsafe {
        let n = libc::sysconf(libc::_SC_NPROCESSORS_ONLN);
        if n < 2 || cpu >= n as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

/// CPU time (user + system) of this process so far, µs (getrusage: µs resolution).
pub fn process_cpu_us() -> u64 {
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

/// This process's resident memory in KiB (`/proc/self/status`), 0 where unknown.
#[allow(dead_code)] // not every bench reads it
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
