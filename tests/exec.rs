//! Process mode (`docs/protocol.md#process-mode`): `serve --exec CMD` with real processes
//! (`cat`, `env`, and small `#!/bin/sh` scripts written to a temp directory; no `sh -c`).

mod common;
use common::*;

use std::time::Duration;

fn exec_server(k: &LocalKey, cmd: &str, extra: &[&str]) -> Server {
    let mut args = k.arg().to_vec();
    args.extend(["--exec", cmd]);
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Writes an executable `#!/bin/sh` script and returns its path.
fn script(dir: &TempDir, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.file(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `/proc/<pid>/stat`: (state, ppid), or `None` once the process is gone.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Children of `parent`, with their state (`Z`: zombie).
fn children(parent: u32) -> Vec<(u32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match proc_stat(pid) {
            Some((state, ppid)) if ppid == parent => Some((pid, state)),
            _ => None,
        })
        .collect()
}

#[test]
fn cat_echoes_lines() {
    let k = LocalKey::generate();
    let s = exec_server(&k, "cat", &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        for i in 0..20 {
            let line = format!("line {i} ✓");
            send_text(&mut ws, &line).await;
            assert_eq!(recv_text(&mut ws).await, line);
        }
        // Binary goes in as is: one message may hold several lines.
        ws.send(Message::binary(b"a\nb\n".to_vec())).await.unwrap();
        assert_eq!(recv_text(&mut ws).await, "a");
        assert_eq!(recv_text(&mut ws).await, "b");
        send_text(&mut ws, "").await;
        assert_eq!(recv_text(&mut ws).await, "");
    });
}

#[test]
fn a_text_message_ending_in_a_newline_is_one_line_not_two() {
    // Line-oriented clients (websocat) send `one\n`: the process reads `one`, not
    // `one` and an empty line.
    let k = LocalKey::generate();
    let s = exec_server(&k, "cat", &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        for m in ["one\n", "two", "three\n"] {
            send_text(&mut ws, m).await;
        }
        // A message that is only `\n` is one empty line; `\n\n` is two.
        send_text(&mut ws, "\n").await;
        send_text(&mut ws, "four\n\n").await;
        for want in ["one", "two", "three", "", "four", ""] {
            assert_eq!(recv_text(&mut ws).await, want);
        }
        send_text(&mut ws, "end").await;
        assert_eq!(
            recv_text(&mut ws).await,
            "end",
            "no stray empty line before it"
        );
    });
}

#[test]
fn many_lines_both_ways_at_once_do_not_deadlock() {
    let k = LocalKey::generate();
    let s = exec_server(&k, "cat", &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        use smol::stream::StreamExt as _;
        let (mut tx, mut rx) = ws_bearer(&s, &t).await.split();
        const N: usize = 3000;
        let line = "x".repeat(1000);
        let sender = async {
            for i in 0..N {
                tx.send(Message::text(format!("{i} {line}"))).await.unwrap();
            }
        };
        let reader = async {
            for i in 0..N {
                match timeout(IO_TIMEOUT, rx.next()).await {
                    Some(Some(Ok(Message::Text(t)))) => {
                        assert_eq!(t.as_str(), format!("{i} {line}"))
                    }
                    other => panic!("line {i}: {other:?}"),
                }
            }
        };
        smol::future::zip(sender, reader).await;
    });
}

#[test]
fn environment_holds_the_identity_and_nothing_else() {
    let k = LocalKey::generate();
    let s = Server::start_env(
        &[k.arg()[0], k.arg()[1], "--exec", "env"],
        &[("LEAKED_SECRET", "hunter2"), ("LANG", "C.UTF-8")],
    );
    let t = k.token(&Claims::new("alice").set("role", "admin"));
    let cookie = format!("wsgate_token={t}");
    run(async {
        let (mut ws, _) = ws_connect(
            &s,
            "/some/path?q=1",
            &[("Authorization", &bearer(&t)), ("Cookie", &cookie)],
        )
        .await
        .unwrap_or_else(|r| panic!("{}", r.head));
        let mut env = std::collections::BTreeMap::new();
        loop {
            match recv_data(&mut ws).await {
                Message::Text(line) => {
                    let (k, v) = line.split_once('=').expect("NAME=value");
                    env.insert(k.to_owned(), v.to_owned());
                }
                Message::Close(f) => {
                    assert_eq!(f.map(|f| u16::from(f.code)), Some(1000), "env exits 0");
                    break;
                }
                m => panic!("unexpected {m:?}"),
            }
        }
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        let allowed = [
            "HOME",
            "LANG",
            "PATH",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "WSGATE_CLAIMS",
            "WSGATE_PATH",
            "WSGATE_SUB",
        ];
        for n in &names {
            assert!(allowed.contains(n), "unexpected variable {n}: {env:?}");
        }
        for n in [
            "PATH",
            "LANG",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "WSGATE_CLAIMS",
            "WSGATE_PATH",
            "WSGATE_SUB",
        ] {
            assert!(env.contains_key(n), "{n} missing: {env:?}");
        }
        assert_eq!(env["WSGATE_SUB"], "alice");
        assert_eq!(env["WSGATE_PATH"], "/some/path");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert!(env["REMOTE_PORT"].parse::<u16>().is_ok());
        assert_eq!(env["LANG"], "C.UTF-8");
        let claims: serde_json::Value = serde_json::from_str(&env["WSGATE_CLAIMS"]).unwrap();
        assert_eq!(
            (claims["sub"].as_str(), claims["role"].as_str()),
            (Some("alice"), Some("admin"))
        );
        for (n, v) in &env {
            assert!(!v.contains("v4.local."), "a token in {n}");
            assert!(
                !v.contains("hunter2"),
                "wsgate's environment leaked into {n}"
            );
        }
    });
}

#[test]
fn exit_status_closes_the_client() {
    let dir = TempDir::new();
    let ok = script(&dir, "ok.sh", "echo done");
    let fail = script(&dir, "fail.sh", "echo failing\nexit 3");
    let killed = script(&dir, "killed.sh", "echo failing\nkill -TERM $$");
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    for (cmd, code, why) in [
        (ok, 1000, ""),
        (fail, 1011, "exit status 3"),
        (killed, 1011, "killed by signal 15"),
    ] {
        let s = exec_server(&k, &cmd, &[]);
        run(async {
            let mut ws = ws_bearer(&s, &t).await;
            // All output arrives before the close.
            let first = recv_text(&mut ws).await;
            assert!(first == "done" || first == "failing", "{first}");
            assert_eq!(expect_close(&mut ws).await, (code, why.to_owned()), "{cmd}");
        });
    }
}

/// Gone, or a zombie: a killed orphan is reaped by whatever init the machine (or
/// container) has, which may be slow to, or never, reap it.
fn dead(pid: u32) -> bool {
    proc_stat(pid).is_none_or(|(state, _)| state == 'Z')
}

fn read_pid(path: &str) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn exit_closes_the_client_even_if_a_background_child_holds_stdout() {
    let dir = TempDir::new();
    // The background `sleep` inherits stdout, so stdout stays open after the script exits.
    let cmd = script(&dir, "bg.sh", "sleep 60 &\necho $! > \"$1\"\necho done");
    let cmd = format!("{cmd} {}", dir.file("bg"));
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    let s = exec_server(&k, &cmd, &[]);
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "done");
        let (code, reason) = expect_close(&mut ws).await;
        assert_eq!(code, 1000, "{reason}");
    });
    // The session is over: what the process left running in its group is killed too.
    let bg = read_pid(&dir.file("bg"));
    eventually("the background child is killed", IO_TIMEOUT, || dead(bg));
}

#[test]
fn shutdown_does_not_wait_for_a_pipe_held_outside_the_process_group() {
    let dir = TempDir::new();
    // `setsid` takes the background `sleep` out of the process group: it survives
    // the session's kill and holds stderr (and stdout) open.
    let cmd = script(
        &dir,
        "holder.sh",
        "setsid sleep 60 &\necho $! > \"$1\"\necho ready\nexec cat",
    );
    let cmd = format!("{cmd} {}", dir.file("holder"));
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    let mut s = exec_server(&k, &cmd, &[]);
    let signalled = run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
        let signalled = std::time::Instant::now();
        s.signal("TERM");
        assert_eq!(expect_close(&mut ws).await.0, 1001);
        signalled
    });
    let exit = s.wait_exit(IO_TIMEOUT);
    let took = signalled.elapsed();
    let holder = read_pid(&dir.file("holder"));
    let held = !dead(holder);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &holder.to_string()])
        .status();
    assert!(exit.is_some_and(|st| st.success()), "{}", s.log());
    assert!(held, "the holder was gone before wsgate exited");
    // Waiting for the pipe's last lines, as at the end of a session, would take
    // EXIT_WAIT (2 s): wsgate exits once its client's closing handshake is done.
    assert!(took < Duration::from_secs(2), "exit {took:?} after SIGTERM");
}

#[test]
fn background_children_are_killed_when_the_client_leaves() {
    let dir = TempDir::new();
    let cmd = script(
        &dir,
        "group.sh",
        "sleep 600 &\necho $! > \"$1\"\necho ready\nwhile read -r line; do echo \"$line\"; done",
    );
    let cmd = format!("{cmd} {}", dir.file("bg"));
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &[]);
    let t = k.token(&Claims::new("alice"));
    let bg = run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
        let bg = read_pid(&dir.file("bg"));
        assert!(
            !dead(bg),
            "the background child runs while the session does"
        );
        drop(ws); // TCP gone, no close frame.
        bg
    });
    eventually("the background child is killed", IO_TIMEOUT, || dead(bg));
    // The server runs on.
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
    });
}

#[test]
fn output_that_is_not_utf8_is_binary_and_a_last_line_without_newline_counts() {
    let dir = TempDir::new();
    let cmd = script(&dir, "bytes.sh", r"printf '\377\376\nplain\nno newline'");
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_data(&mut ws).await, Message::binary(vec![0xff, 0xfe]));
        assert_eq!(recv_text(&mut ws).await, "plain");
        assert_eq!(recv_text(&mut ws).await, "no newline");
        assert_eq!(expect_close(&mut ws).await.0, 1000);
    });
}

#[test]
fn stderr_lines_reach_the_log() {
    let dir = TempDir::new();
    let cmd = script(
        &dir,
        "err.sh",
        "echo 'something odd: x=1' >&2\nread line\necho \"got $line\"",
    );
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &[]);
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        send_text(&mut ws, "hi").await;
        assert_eq!(recv_text(&mut ws).await, "got hi");
        assert_eq!(expect_close(&mut ws).await.0, 1000);
    });
    let line = s.wait_log_line(|l| l.contains("event=exec_stderr"));
    assert_eq!(
        log_value(&line, "line").as_deref(),
        Some("something odd: x=1"),
        "{line}"
    );
    assert_eq!(log_value(&line, "sub").as_deref(), Some("alice"), "{line}");
    assert!(
        log_value(&line, "peer").is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{line}"
    );
}

/// A script that writes its pid to `$1`, says `ready`, then echoes lines.
fn pid_script(dir: &TempDir) -> String {
    script(
        dir,
        "pid.sh",
        "echo $$ > \"$1\"\necho ready\nwhile read -r line; do echo \"$line\"; done",
    )
}

#[test]
fn the_process_is_killed_when_the_client_leaves() {
    let dir = TempDir::new();
    let cmd = format!("{} {}", pid_script(&dir), dir.file("pid"));
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &[]);
    let t = k.token(&Claims::new("alice"));
    for abrupt in [false, true] {
        let pid = run(async {
            let mut ws = ws_bearer(&s, &t).await;
            assert_eq!(recv_text(&mut ws).await, "ready");
            let pid = read_pid(&dir.file("pid"));
            assert_eq!(
                proc_stat(pid).map(|(_, ppid)| ppid),
                Some(s.pid()),
                "a child of wsgate"
            );
            if abrupt {
                drop(ws); // TCP gone, no close frame.
            } else {
                ws.close(None).await.unwrap();
                let _ = timeout(IO_TIMEOUT, async {
                    while recv_close_or_end(&mut ws).await {}
                })
                .await;
            }
            pid
        });
        eventually("the process is killed and reaped", IO_TIMEOUT, || {
            proc_stat(pid).is_none()
        });
    }
}

#[test]
fn a_process_that_does_not_read_is_still_killed_when_the_client_leaves() {
    let dir = TempDir::new();
    // Never reads stdin: a large message blocks in the pipe.
    let cmd = script(
        &dir,
        "deaf.sh",
        "echo $$ > \"$1\"\necho ready\nexec sleep 600",
    );
    let cmd = format!("{cmd} {}", dir.file("pid"));
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &[]);
    let t = k.token(&Claims::new("alice"));
    let pid = run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
        let pid = read_pid(&dir.file("pid"));
        // More than a pipe holds (the write to stdin stays blocked), then the client
        // goes: the relay reads ahead one message slot, so it sees the close.
        ws.send(Message::binary(vec![b'x'; 512 << 10]))
            .await
            .unwrap();
        ws.close(None).await.unwrap();
        pid
    });
    eventually("the process is killed and reaped", IO_TIMEOUT, || {
        proc_stat(pid).is_none()
    });
}

#[test]
fn a_client_that_floods_a_process_that_never_reads_then_leaves_is_torn_down() {
    // A hostile client: fills the process's stdin pipe and every socket buffer on the
    // way, then closes its socket without reading. wsgate holds its messages back
    // (backpressure), so it does not read the client and cannot see the FIN: the
    // hold probe must notice the client left, kill the process, free the slot.
    let dir = TempDir::new();
    let cmd = script(
        &dir,
        "deaf.sh",
        "echo $$ > \"$1\"\necho ready\nexec sleep 3600",
    );
    let cmd = format!("{cmd} {}", dir.file("pid"));
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &["--max-connections", "1"]);
    let t = k.token(&Claims::new("alice"));
    let baseline = fd_count(s.pid());
    let pid = run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
        let pid = read_pid(&dir.file("pid"));
        let msg = Message::binary(vec![b'x'; 64 << 10]);
        let sent = flood_until_stalled(&mut ws, &msg, 4096, Duration::from_secs(1)).await;
        assert!(sent > 4, "only {sent} messages before the stall");
        drop(ws); // close(2), nothing read: no close frame, the FIN behind the data.
        pid
    });
    eventually("the process is killed and reaped", IO_TIMEOUT, || {
        proc_stat(pid).is_none()
    });
    eventually(
        "wsgate's descriptors are back to their baseline",
        IO_TIMEOUT,
        || fd_count(s.pid()) <= baseline,
    );
    // The connection slot is free again.
    let t2 = k.token(&Claims::new("bob"));
    run(async {
        let mut ws = ws_bearer(&s, &t2).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
    });
}

/// Reads one message; `false` at the end of the stream.
async fn recv_close_or_end(ws: &mut Ws) -> bool {
    use smol::stream::StreamExt as _;
    matches!(ws.next().await, Some(Ok(_)))
}

#[test]
fn token_expiry_kills_the_process() {
    let dir = TempDir::new();
    let cmd = format!("{} {}", pid_script(&dir), dir.file("pid"));
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &["--leeway", "0"]);
    let t = k.token(&Claims::new("alice").exp_in(2));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(recv_text(&mut ws).await, "ready");
        let pid = read_pid(&dir.file("pid"));
        assert_eq!(
            expect_close_within(&mut ws, Duration::from_secs(8)).await,
            (4401, "token expired".to_owned())
        );
        eventually("the process is killed and reaped", IO_TIMEOUT, || {
            proc_stat(pid).is_none()
        });
    });
}

#[test]
fn many_short_sessions_leave_no_zombies() {
    let dir = TempDir::new();
    let short = script(&dir, "short.sh", "echo hi");
    let k = LocalKey::generate();
    let t = k.token(&Claims::new("alice"));
    // Processes that exit by themselves.
    let s = exec_server(&k, &short, &[]);
    run(async {
        for _ in 0..40 {
            let mut ws = ws_bearer(&s, &t).await;
            assert_eq!(recv_text(&mut ws).await, "hi");
            assert_eq!(expect_close(&mut ws).await.0, 1000);
        }
    });
    // Processes killed because their client left.
    let c = exec_server(&k, "cat", &[]);
    run(async {
        let mut open = Vec::new();
        for i in 0..40 {
            let mut ws = ws_bearer(&c, &t).await;
            send_text(&mut ws, "x").await;
            assert_eq!(recv_text(&mut ws).await, "x");
            if i % 2 == 0 {
                drop(ws);
            } else {
                open.push(ws);
            }
        }
        for mut ws in open {
            ws.close(None).await.unwrap();
        }
    });
    // Every process is gone: reaped, not a zombie (state Z) of a server that runs on.
    for server in [&s, &c] {
        eventually("no children left", IO_TIMEOUT, || {
            let left = children(server.pid());
            left.is_empty()
        });
    }
}

#[test]
fn a_process_that_cannot_start_gives_1011() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    let cmd = script(&dir, "later.sh", "echo hi");
    let k = LocalKey::generate();
    let s = exec_server(&k, &cmd, &[]);
    // Checked at startup; made unrunnable afterwards.
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = k.token(&Claims::new("alice"));
    run(async {
        let mut ws = ws_bearer(&s, &t).await;
        assert_eq!(
            expect_close(&mut ws).await,
            (1011, "exec failed".to_owned())
        );
    });
    let line = s.wait_log_line(|l| l.contains("event=exec_error"));
    assert_eq!(log_value(&line, "sub").as_deref(), Some("alice"), "{line}");
    assert_eq!(http(&s, "GET", "/healthz", &[]).status, 200);
}

#[test]
fn bad_commands_are_configuration_errors() {
    for cmd in [
        "",
        "cat | grep x",
        "echo $HOME",
        "'unterminated",
        "/no/such/program",
    ] {
        let out = wsgate(&["serve", "--listen", "127.0.0.1:0", "--exec", cmd]);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}");
        let err = stderr_of(&out);
        assert!(
            err.starts_with(&format!("error: --exec {cmd}: ")),
            "{cmd:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
