//! What a new user copies, run as they would run it: the `connect:` line a key-less
//! `serve` prints, and the README's ```sh blocks in order, through a shell with a real
//! websocat (installed by scripts/test-deps.sh): the Quickstart's set-up and connect
//! blocks, then, each after the set-up in a clean temp dir of its own, the proxy
//! block (a websocat upstream), the exec block (greet.sh), the revocation block (the
//! operators' listener, curl, `wsgate revoke`) and the TLS block (an openssl
//! self-signed certificate, curl and websocat over TLS).
//!
//! Without websocat these tests say so and pass, except under `CI=true`, where a
//! missing websocat fails them. The TLS block is skipped against a binary without TLS
//! (the router build) and without openssl.

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

/// The README's text.
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The ```sh blocks of the README section whose heading starts with `heading`, up to
/// the next `## ` heading.
fn sh_blocks(readme: &str, heading: &str) -> Vec<String> {
    let at = readme
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("README has no section `{heading}`"));
    let section = &readme[at + 1..];
    let section = match section[heading.len()..].find("\n## ") {
        Some(end) => &section[..heading.len() + end],
        None => section,
    };
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap().to_owned())
        .collect()
}

/// How the test feeds a websocat client run in the foreground.
#[derive(Clone, Copy)]
enum Input {
    /// One line, `hello`, then end of input: enough for an echo, which answers before
    /// it reads the close that follows.
    Hello,
    /// `hello`, then stdin stays open until the client's output holds this line (a
    /// bounded wait): a proxied or exec session would drop what is still on its way
    /// back once the client closes.
    HelloUntil(&'static str),
}

/// README blocks turned into one unattended bash script, run in order. The changes,
/// and only these:
///
/// - `cargo install` is skipped: the binary under test is first on `PATH`;
/// - each `127.0.0.1:PORT` the README uses is replaced by a free port (`ports`), and
///   the Quickstart's server (no `--listen`) gets one through `WSGATE_LISTEN`, so that
///   tests run side by side;
/// - after a line that starts a server in the background, a bounded wait until its
///   addresses take connections; after a background client, a bounded wait until the
///   operators' listener lists its session;
/// - a websocat client in the foreground gets one line of input ([`Input`]).
///
/// Comments after code (`  #`) are dropped, except inside a here-document, which is
/// copied as it is.
fn script(blocks: &[String], ports: &[(u16, u16)], input: Input) -> String {
    let listen = ports
        .iter()
        .find(|(readme, _)| *readme == 8080)
        .map(|(_, free)| *free)
        .expect("the Quickstart's port");
    let mut script = format!("set -e\nexport WSGATE_LISTEN=127.0.0.1:{listen}\n");
    let wait_port = |port: &str| {
        format!(
            "for i in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.05; done\n"
        )
    };
    let mut heredoc: Option<String> = None;
    let mut admin: Option<String> = None;
    let mut clients = 0;
    for line in blocks.concat().lines() {
        if let Some(end) = &heredoc {
            script.push_str(line);
            script.push('\n');
            if line == end {
                heredoc = None;
            }
            continue;
        }
        let mut code = line.split("  #").next().unwrap().trim_end().to_owned();
        if code.starts_with("cargo install") {
            continue;
        }
        for (readme, free) in ports {
            code = code.replace(&format!("127.0.0.1:{readme}"), &format!("127.0.0.1:{free}"));
        }
        if let Some((_, tag)) = code.split_once("<<'") {
            heredoc = Some(tag.trim_end_matches('\'').to_owned());
        }
        let background = code.ends_with('&');
        // The addresses a server line listens on: `--listen`, `--admin-listen`, `ws-l:`.
        let words: Vec<&str> = code.split(' ').collect();
        let flag_value = |flag: &str| {
            let i = words.iter().position(|w| *w == flag)?;
            words.get(i + 1).map(|a| a.to_string())
        };
        let admin_here = flag_value("--admin-listen");
        let mut listens: Vec<String> = [flag_value("--listen"), admin_here.clone()]
            .into_iter()
            .flatten()
            .chain(
                words
                    .iter()
                    .filter_map(|w| w.strip_prefix("ws-l:"))
                    .map(str::to_owned),
            )
            .collect();
        let is_client = code.contains("websocat") && !code.contains("ws-l:");
        if is_client && !background {
            code = match (code.strip_prefix("(echo \"$TOKEN\"; cat) |"), input) {
                (Some(rest), _) => format!("(echo \"$TOKEN\"; echo hello) |{rest}"),
                (None, Input::Hello) => format!("{code} <<< hello"),
                (None, Input::HelloUntil(until)) => {
                    clients += 1;
                    let out = format!(".websocat-{clients}.out");
                    format!(
                        "{{ echo hello; for i in $(seq 200); do grep -qxF '{until}' {out} && break; sleep 0.05; done; }} | {code} > {out}; cat {out}"
                    )
                }
            };
        }
        script.push_str(&code);
        script.push('\n');
        if !background {
            continue;
        }
        if code.contains("wsgate serve") && !code.contains("--listen") {
            listens.push(format!("127.0.0.1:{listen}"));
        }
        if admin_here.is_some() {
            admin = admin_here;
        }
        if !listens.is_empty() {
            for a in &listens {
                script.push_str(&wait_port(a.rsplit(':').next().unwrap()));
            }
        } else if is_client {
            let admin = admin
                .as_deref()
                .expect("a client in the background needs an --admin-listen to wait on");
            script.push_str(&format!(
                "for i in $(seq 200); do curl -s http://{admin}/sessions | grep -q '\"sub\"' && break; sleep 0.05; done\n"
            ));
        }
    }
    script
}

/// Runs the Quickstart's set-up block, then the ```sh blocks of `section`, in a
/// clean temp dir with a real websocat; `ports` are the README ports the section uses
/// besides the Quickstart's 8080. `None` when websocat is missing (the test passes).
fn run_section(section: Option<&str>, extra_ports: &[u16], input: Input) -> Option<Ran> {
    let ws = websocat()?;
    let readme = readme();
    let quickstart = sh_blocks(&readme, "## Quickstart");
    assert!(
        quickstart.len() >= 2,
        "the Quickstart's set-up and connect blocks"
    );
    assert!(quickstart[0].contains("wsgate serve"), "{}", quickstart[0]);
    assert!(quickstart[1].contains("websocat"), "{}", quickstart[1]);
    let blocks: Vec<String> = match section {
        None => quickstart[..2].to_vec(),
        Some(heading) => {
            let mut b = vec![quickstart[0].clone()];
            let own = sh_blocks(&readme, heading);
            assert!(
                !own.is_empty(),
                "README section `{heading}` has no ```sh block"
            );
            b.extend(own);
            b
        }
    };
    let ports: Vec<(u16, u16)> = std::iter::once(8080)
        .chain(extra_ports.iter().copied())
        .map(|p| (p, free_port()))
        .collect();
    let text = blocks.concat();
    for (readme_port, _) in &ports {
        assert!(
            text.contains(&format!("127.0.0.1:{readme_port}")) || *readme_port == 8080,
            "the README no longer uses port {readme_port}:\n{text}"
        );
    }
    let script = script(&blocks, &ports, input);
    let dir = TempDir::new();
    let path = bin_dir(&dir, &ws);
    let cwd = dir.path().join("work");
    std::fs::create_dir_all(&cwd).unwrap();
    let r = bash(&cwd, &path, &script, "");
    assert!(
        r.ok,
        "script failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    // Nothing was written into the repository: the key went to the temp dir.
    assert!(
        !Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("wsgate.key")
            .exists()
    );
    Some(r)
}

/// The README Quickstart's two ```sh blocks (set-up and connect), run in order in a
/// clean temp dir as a new user would, with a real websocat (see [`script`] for the
/// only changes made to them).
#[test]
fn the_quickstart_and_connect_blocks_run_in_order() {
    let Some(r) = run_section(None, &[], Input::Hello) else {
        return;
    };
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
}

/// "Proxy mode": a websocat upstream, wsgate in front of it, a client through it. The
/// upstream sees the client's path under its own, and echoes.
#[test]
fn the_proxy_block_relays_to_a_websocat_upstream() {
    let Some(r) = run_section(
        Some("## Proxy mode"),
        &[8081, 9000],
        Input::HelloUntil("hello"),
    ) else {
        return;
    };
    let out = &r.stdout;
    assert!(
        out.contains("upstream sees /app/room/1\n"),
        "the upstream's greeting:\n{out}\n{}",
        r.stderr
    );
    assert!(
        out.contains("\nhello\n"),
        "the echo through the upstream:\n{out}"
    );
    assert!(
        r.stderr.contains("event=auth_ok") && r.stderr.contains("sub=alice"),
        "{}",
        r.stderr
    );
}

/// "Process mode": greet.sh written by the block, run per session by `--exec`.
#[test]
fn the_exec_block_runs_greet_sh_per_session() {
    let Some(r) = run_section(
        Some("## Process mode"),
        &[8082],
        Input::HelloUntil("you said: hello"),
    ) else {
        return;
    };
    let out = &r.stdout;
    assert!(
        out.contains("hello alice (from 127.0.0.1, path /)\n"),
        "greet.sh's greeting:\n{out}\n{}",
        r.stderr
    );
    assert!(out.contains("you said: hello\n"), "{out}");
}

/// "Refreshing and revoking": the operators' listener lists alice's idle session,
/// revokes her by `sub` (closing it) and a token by `jti` through `wsgate revoke`.
#[test]
fn the_revocation_block_closes_a_live_session() {
    let Some(r) = run_section(
        Some("## Refreshing and revoking"),
        &[8083, 9090],
        Input::Hello,
    ) else {
        return;
    };
    let out = &r.stdout;
    assert!(
        out.contains(r#"[{"sub":"alice","method":"header","#),
        "GET /sessions lists alice:\n{out}\n{}",
        r.stderr
    );
    assert!(
        out.contains(r#"{"revoked":"sub","closed":1}"#),
        "her session was closed:\n{out}\n{}",
        r.stderr
    );
    assert!(out.contains(r#"{"revoked":"jti","closed":0}"#), "{out}");
}

/// Whether the binary under test has TLS (the router build has not).
fn tls_build() -> bool {
    let out = wsgate(&["serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
    !stderr_of(&out).contains("this build has no TLS")
}

/// "TLS": a self-signed certificate made with openssl, `https://` and `wss://` with a
/// client that trusts it.
#[test]
fn the_tls_block_serves_wss_with_a_self_signed_certificate() {
    if !tls_build() {
        eprintln!("skipped: the binary under test has no TLS");
        return;
    }
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl not found under CI=true"
        );
        eprintln!("skipped: openssl not found");
        return;
    }
    let Some(r) = run_section(Some("## TLS"), &[8443], Input::Hello) else {
        return;
    };
    let out = &r.stdout;
    assert!(
        out.lines().any(|l| l == "ok"),
        "GET /healthz over https:\n{out}\n{}",
        r.stderr
    );
    assert!(
        out.contains("\nhello\n"),
        "the echo over wss:\n{out}\n{}",
        r.stderr
    );
}
