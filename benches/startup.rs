//! Start-up to listening: spawns `wsgate serve --key F --listen 127.0.0.1:0` and
//! times until its `event=listen` line on stderr, many times. Budget: 10 ms.
//!
//! `cargo bench --bench startup` times the bench-profile binary; `WSGATE_BIN=path`
//! times another (e.g. `target/small/wsgate`); `WSGATE_BENCH_RUNS` [50].

mod harness;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    if !harness::enabled() {
        return;
    }
    let bin = std::env::var("WSGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wsgate").into());
    let runs: usize = harness::env_or("WSGATE_BENCH_RUNS", 50);
    let dir = std::env::temp_dir().join(format!("wsgate-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key");
    std::fs::write(
        &key,
        wsgate::Key::generate_local().unwrap().to_paserk().as_str(),
    )
    .unwrap();
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let mut child = Command::new(&bin)
            .args([
                "serve",
                "--key",
                key.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("wsgate exited before listening");
            }
            if line.contains("event=listen") {
                break;
            }
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = child.kill();
        let _ = child.wait();
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| ms[((q * runs as f64).ceil() as usize).clamp(1, runs) - 1];
    println!(
        "start-up to listening ({bin}, {runs} runs): min {:.2} ms, p50 {:.2} ms, p90 {:.2} ms, \
         max {:.2} ms (budget 10 ms)",
        ms[0],
        pick(0.5),
        pick(0.9),
        ms[runs - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
