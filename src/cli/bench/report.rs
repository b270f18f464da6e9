//! What a run measured: per-phase percentiles, failures by kind, and the server's CPU
//! and memory read from `/proc`; printed as text or JSON.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use serde::Serialize;

use super::BenchMethod;
use super::connection::{Failure, Times};

/// The phases of a connection, in order, as [`Times`] indexes them.
const PHASES: [&str; 5] = ["connect", "ticket", "upgraded", "authenticated", "echo"];

/// Percentiles of one phase, in milliseconds since the connection began.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseStats {
    /// Phase name: `connect`, `ticket`, `upgraded`, `authenticated`, `echo`.
    pub phase: &'static str,
    /// Connections that reached it.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// The server process as seen from `/proc` (when a pid was given).
#[derive(Clone, Debug, Serialize)]
pub struct ServerUsage {
    /// Server CPU time (user + system) spent during the run, ms (10 ms resolution).
    pub cpu_ms: f64,
    /// Server CPU per completed round trip, µs (round-trip mode).
    pub cpu_us_per_round_trip: Option<f64>,
    /// Server RSS before the run, KiB.
    pub rss_before_kib: u64,
    /// Server RSS at the peak of the run (in hold mode: with every session held), KiB.
    pub rss_peak_kib: u64,
    /// `(rss_peak - rss_before) / sessions held`, KiB (hold mode).
    pub kib_per_session: Option<f64>,
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The server URL.
    pub url: String,
    /// The method.
    pub method: BenchMethod,
    /// `round_trip` or `hold`.
    pub mode: &'static str,
    /// Concurrency used.
    pub concurrency: usize,
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that completed every phase (hold mode: sessions opened).
    pub ok: u64,
    /// Connections that failed, in all.
    pub failed: u64,
    /// Wall time of the run (hold mode: of the opening), seconds.
    pub elapsed_s: f64,
    /// Completed connections per second.
    pub rate_per_s: f64,
    /// Hold mode: sessions still open when the hold ended.
    pub held_to_end: Option<u64>,
    /// Per phase percentiles.
    pub phases: Vec<PhaseStats>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// The server's CPU and memory, when `server_pid` was given.
    pub server: Option<ServerUsage>,
    /// Every connection's time to each phase it reached, µs, sorted; in phase order.
    /// For [`plot`](super::plot); not in the JSON.
    #[serde(skip)]
    pub samples_us: Vec<(&'static str, Vec<u32>)>,
}

impl Report {
    /// The report as JSON (one object).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "wsgate bench {} method={} mode={} concurrency={}",
            self.url, self.method, self.mode, self.concurrency
        );
        let what = if self.mode == "hold" { "opened" } else { "ok" };
        let _ = writeln!(
            s,
            "{} {what}, {} failed of {} in {:.2} s: {:.0} conn/s",
            self.ok, self.failed, self.attempted, self.elapsed_s, self.rate_per_s
        );
        if let Some(h) = self.held_to_end {
            let _ = writeln!(s, "{h} sessions still open at the end of the hold");
        }
        let _ = writeln!(
            s,
            "{:<24}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "ms since start", "count", "p50", "p90", "p99", "max"
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "{:<24}{:>9}{:>9.3}{:>9.3}{:>9.3}{:>9.3}",
                p.phase, p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            );
        }
        if let Some(u) = &self.server {
            let _ = write!(s, "server: cpu {:.0} ms", u.cpu_ms);
            if let Some(c) = u.cpu_us_per_round_trip {
                let _ = write!(s, ", {c:.1} µs per round trip");
            }
            let _ = write!(s, "; rss {} → {} KiB", u.rss_before_kib, u.rss_peak_kib);
            if let Some(k) = u.kib_per_session {
                let _ = write!(s, ", {k:.2} KiB per held session");
            }
            s.push('\n');
        }
        if self.errors.is_empty() {
            s.push_str("errors: none\n");
        } else {
            s.push_str("errors:\n");
            for (kind, n) in &self.errors {
                let _ = writeln!(s, "  {n:>8}  {kind}");
            }
        }
        s
    }
}

/// CPU time (user + system) of process `pid`, in clock ticks of 10 ms.
pub(super) fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of process `pid`, KiB.
pub(super) fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The measurements of a run so far, shared by its connections (one thread).
pub(super) struct Tally {
    pub(super) started: Cell<u64>,
    pub(super) ok: Cell<u64>,
    pub(super) failed: Cell<u64>,
    pub(super) times: RefCell<[Vec<u32>; 5]>,
    pub(super) errors: RefCell<BTreeMap<String, u64>>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            started: Cell::new(0),
            ok: Cell::new(0),
            failed: Cell::new(0),
            times: RefCell::new(Default::default()),
            errors: RefCell::new(BTreeMap::new()),
        }
    }

    pub(super) fn record(&self, times: &Times, result: Result<(), Failure>) {
        let mut all = self.times.borrow_mut();
        for (i, t) in times.0.iter().enumerate() {
            if let Some(t) = t {
                all[i].push(t.as_micros().min(u32::MAX as u128) as u32);
            }
        }
        match result {
            Ok(()) => self.ok.set(self.ok.get() + 1),
            Err(f) => {
                self.failed.set(self.failed.get() + 1);
                *self.errors.borrow_mut().entry(f.kind).or_default() += 1;
            }
        }
    }

    pub(super) fn phases(&self) -> Vec<PhaseStats> {
        let mut all = self.times.borrow_mut();
        let mut out = Vec::new();
        for (i, v) in all.iter_mut().enumerate() {
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            let pick = |q: f64| {
                let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                v[rank - 1] as f64 / 1e3
            };
            out.push(PhaseStats {
                phase: PHASES[i],
                count: v.len(),
                p50_ms: pick(0.50),
                p90_ms: pick(0.90),
                p99_ms: pick(0.99),
                max_ms: v[v.len() - 1] as f64 / 1e3,
            });
        }
        out
    }

    /// The samples of every phase reached, sorted (after [`Tally::phases`]).
    pub(super) fn samples(&self) -> Vec<(&'static str, Vec<u32>)> {
        let mut all = self.times.take();
        let mut out = Vec::new();
        for (i, v) in all.iter_mut().enumerate() {
            if !v.is_empty() {
                v.sort_unstable();
                out.push((PHASES[i], std::mem::take(v)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let t = Tally::new();
        for us in 1..=100u32 {
            t.times.borrow_mut()[0].push(us * 1000);
        }
        let p = &t.phases()[0];
        assert_eq!(
            (p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
    }
}
