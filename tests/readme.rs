//! What a new user copies, run as they would run it: the `connect:` line a key-less
//! `serve` prints, and the README's ```sh blocks in order, through a shell with a real
//! websocat (installed by scripts/test-deps.sh).
//!
//! Without websocat these tests say so and pass, except under `CI=true`, where a
//! missing websocat fails them.

mod common;
use common::*;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Bound on one shell run (a whole README sequence included).
const SHELL_TIMEOUT: Duration = Duration::from_secs(60);

/// websocat: `WSGATE_WEBSOCAT`, else scripts/test-deps.sh's install
/// (`$WSGATE_TOOLS/bin`, default `~/.cache/wsgate-tools/bin`), else `PATH`.
fn websocat() -> Option<PathBuf> {
    let tools = std::env::var_os("WSGATE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/wsgate-tools")));
    let sys_path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("WSGATE_WEBSOCAT")
        .map(PathBuf::from)
        .into_iter()
        .chain(tools.map(|t| t.join("bin/websocat")))
        .chain(std::env::split_paths(&sys_path).map(|d| d.join("websocat")));
    for c in candidates {
        if c.is_file() {
            return Some(c);
        }
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "websocat not found under CI=true: scripts/test-deps.sh installs it"
    );
    eprintln!("skipped: websocat not found (scripts/test-deps.sh installs it)");
    None
}

/// A directory holding `wsgate` (the binary under test) and `websocat`, to put first
/// on `PATH`, as the README's `export PATH=…` does.
fn bin_dir(dir: &TempDir, websocat: &Path) -> PathBuf {
    let d = dir.path().join("bin");
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(std::fs::canonicalize(bin()).unwrap(), d.join("wsgate")).unwrap();
    std::os::unix::fs::symlink(websocat, d.join("websocat")).unwrap();
    d
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `script` with bash in `dir`, `path` first on `PATH`, `input` on stdin, in a
/// process group of its own. Output goes to files (a background server may keep them
/// open); the whole group is killed at the end, so nothing it started outlives it.
fn bash(dir: &Path, path: &Path, script: &str, input: &str) -> Ran {
    let input_file = dir.join(".stdin");
    std::fs::write(&input_file, input).unwrap();
    let (out_file, err_file) = (dir.join(".stdout"), dir.join(".stderr"));
    let sys_path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![path.to_path_buf()];
    paths.extend(std::env::split_paths(&sys_path));
    let mut child = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env("TMPDIR", dir)
        .env_remove("WSGATE_KEY")
        .stdin(std::fs::File::open(&input_file).unwrap())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(SHELL_TIMEOUT);
    // SAFETY: kill(2) on the group this test started; no memory is touched.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = waiter.join();
    let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    let Ok(status) = status else {
        panic!(
            "shell did not finish within {SHELL_TIMEOUT:?}\nscript:\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    };
    Ran {
        ok: status.unwrap().success(),
        stdout,
        stderr,
    }
}

#[test]
fn the_printed_connect_line_gets_an_echo_through_websocat() {
    let Some(ws) = websocat() else { return };
    let s = Server::start(&[]);
    let line = s.wait_log_line(|l| l.starts_with("connect:"));
    let cmd = line.strip_prefix("connect:").unwrap().trim();
    let dir = TempDir::new();
    let path = bin_dir(&dir, &ws);
    let r = bash(dir.path(), &path, cmd, "hello\n");
    assert!(r.ok, "`{cmd}` failed:\n{}", r.stderr);
    assert_eq!(r.stdout, "hello\n", "stderr:\n{}", r.stderr);
}

/// The README Quickstart's two ```sh blocks (set-up and connect), run in order in a
/// clean temp dir as a new user would, with a real websocat. Three changes only: the
/// binary is put on `PATH` instead of `cargo install`ed; the server listens on a free
/// port (`WSGATE_LISTEN`, and the client lines' `8080` replaced) so that tests can run
/// side by side; and each client line gets one line of input (`hello`), with a bounded
/// wait for the server to listen after `serve &`.
#[test]
fn the_quickstart_and_connect_blocks_run_in_order() {
    let Some(ws) = websocat() else { return };
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let quickstart = readme
        .split_once("## Quickstart")
        .expect("a Quickstart section")
        .1;
    let blocks: Vec<&str> = quickstart
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .take(2)
        .collect();
    assert!(blocks[0].contains("wsgate serve"), "{}", blocks[0]);
    assert!(blocks[1].contains("websocat"), "{}", blocks[1]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut script = String::from("set -e\n");
    for line in blocks.concat().lines() {
        let code = line.split("  #").next().unwrap().trim_end();
        if code.starts_with("cargo install") {
            continue;
        }
        let code = code.replace("8080", &port.to_string());
        if code.contains("websocat") {
            let code = match code.strip_prefix("(echo \"$TOKEN\"; cat) |") {
                Some(rest) => format!("(echo \"$TOKEN\"; echo hello) |{rest}"),
                None => format!("{code} <<< hello"),
            };
            script.push_str(&code);
        } else {
            script.push_str(&code);
        }
        script.push('\n');
        if code.contains("wsgate serve") {
            script.push_str(&format!(
                "for i in $(seq 200); do curl -sf http://127.0.0.1:{port}/healthz >/dev/null && break; sleep 0.05; done\n"
            ));
        }
    }
    let dir = TempDir::new();
    let path = bin_dir(&dir, &ws);
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let script = format!("export WSGATE_LISTEN={listen}\n{script}");
    let r = bash(&cwd, &path, &script, "");
    assert!(
        r.ok,
        "script failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    let out = &r.stdout;
    assert!(
        out.contains(r#""sub":"alice""#),
        "verify printed the claims:\n{out}"
    );
    assert_eq!(
        out.matches("hello\n").count(),
        4,
        "four echoes:\n{out}\n{}",
        r.stderr
    );
    assert!(
        out.contains(r#"{"type":"authenticated","sub":"alice""#),
        "{out}"
    );
    assert!(
        out.contains("HTTP/1.1 200") && out.contains(r#""ticket":"v4.local."#),
        "{out}"
    );
    // Nothing was written into the repository: the key went to the temp dir.
    assert!(
        !Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("wsgate.key")
            .exists()
    );
}
