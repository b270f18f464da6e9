//! Process mode (`docs/protocol.md#process-mode`), websocketd style: one process per
//! authenticated session.
//!
//! - The command is split like POSIX shell words and run without a shell. Its
//!   environment is cleared except `PATH`, `HOME`, `LANG` and the variables named
//!   by `--passenv`, then holds `WSGATE_SUB`, `WSGATE_CLAIMS` (JSON),
//!   `REMOTE_ADDR`, `REMOTE_PORT` and `WSGATE_PATH` (the request path, without its
//!   query): nothing from the request's headers, never the token or cookies.
//! - Each text message is written to its stdin followed by `\n`; binary messages as
//!   they are. Each stdout line (without its `\n`) is sent as a text message, or as
//!   binary if it is not UTF-8; a line longer than `--max-message` is sent in pieces.
//! - Each stderr line is logged: `event=exec_stderr peer=… sub=… line=…`.
//! - Backpressure as in [`crate::relay`]: a client message is read only once the
//!   previous one is written to stdin (an [`Outbox`]), a stdout line only once the
//!   previous one was sent; stdout keeps being read while stdin is blocked, so a busy
//!   process cannot deadlock the session.
//! - The process exiting closes the session with 1000 (a non-zero status: 1011);
//!   the session ending (client gone, expiry, shutdown) kills the process (SIGKILL)
//!   and reaps it, so no zombies are left.
//! - The process runs in a process group of its own, and the whole group is killed
//!   when the session ends, however it ends: what the process started in the
//!   background does not outlive the connection (unless it left the group, with
//!   `setsid` or `setpgid`). The process stays unreaped until then, so that its pid,
//!   which is also the group's id, cannot be reused by an unrelated process that
//!   would get the signal. A terminal's Ctrl-C reaches wsgate only, which then ends
//!   every session (`docs/operations.md#signals`), and so every group.
//!
//! The process is a plain [`std::process::Child`]: its pipes are made asynchronous
//! with [`Async`], and its exit is awaited on a pidfd (Linux), or else polled for
//! (see `Process` below). No reaper thread, no `SIGCHLD` handler.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use smol::Async;
use smol::future::FutureExt as _;
use smol::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use crate::config::ConfigError;
use crate::log::Level;
use crate::outbox::Outbox;
use crate::session::{Handler, Race, Session};
use crate::timers::Sleep;

/// Longest stderr line logged; the rest of a longer line comes as further lines.
pub const MAX_STDERR_LINE: usize = 4096;

/// How long to wait for the last stderr lines and for the exit status once the
/// process is done or killed, and how long output is still relayed after it exited
/// (a background child holding stdout does not keep the session open).
pub const EXIT_WAIT: Duration = Duration::from_secs(2);

/// How often the exit of the process is polled for where no pidfd can watch it
/// (kernels before Linux 5.3, other systems), on the connection timers: up to one
/// [`crate::timers::TICK`] later.
const EXIT_POLL: Duration = Duration::from_millis(20);

/// The environment variables passed on from wsgate's own environment.
pub const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// The variables wsgate sets for each session: `--passenv` cannot name them.
pub const SESSION_ENV: [&str; 5] = [
    "WSGATE_SUB",
    "WSGATE_CLAIMS",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "WSGATE_PATH",
];

/// `PATH` for the process when wsgate itself has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A checked `--exec` command: the program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecCommand {
    argv: Vec<String>,
    passenv: Vec<String>,
}

impl ExecCommand {
    /// Splits `cmd` like POSIX shell words (quotes and backslashes; no expansion,
    /// no pipes or redirections: those are refused) and checks that the program
    /// exists. The error names the setting `exec`.
    pub fn parse(cmd: &str) -> Result<ExecCommand, ConfigError> {
        let bad = |why: &dyn fmt::Display| ConfigError::new(format!("exec {cmd}"), why);
        let argv = split_words(cmd).map_err(|e| bad(&e))?;
        let Some(program) = argv.first() else {
            return Err(bad(&"empty command"));
        };
        if !program_exists(program) {
            return Err(bad(&format_args!("program `{program}` not found")));
        }
        Ok(ExecCommand {
            argv,
            passenv: Vec::new(),
        })
    }

    /// Also passes these variables of wsgate's own environment to the process
    /// (`--passenv`; one that is unset is left out). The variables wsgate sets for
    /// each session ([`SESSION_ENV`]) cannot be named. The error names the setting
    /// `passenv`.
    pub fn passing(mut self, names: &[&str]) -> Result<ExecCommand, ConfigError> {
        for &name in names {
            let bad = |why: &str| ConfigError::new(format!("passenv {name}"), why);
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(bad("not a variable name"));
            }
            if SESSION_ENV.contains(&name) {
                return Err(bad("set by wsgate for each session, cannot be passed"));
            }
            if !self.passenv.iter().any(|n| n == name) {
                self.passenv.push(name.to_owned());
            }
        }
        Ok(self)
    }
}

/// Splits a command line like POSIX shell words: blanks separate words; `'…'`
/// keeps everything; `"…"` keeps everything but `\"`, `\\`, `\$`, `` \` ``; `\`
/// escapes the next character. Unquoted shell syntax (`| & ; < > ( ) $` and
/// backquote) is refused, since no shell runs the command.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("trailing backslash".into()),
            },
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' => {
                return Err(format!(
                    "`{c}` is shell syntax, and no shell runs the command: quote it, or run `sh -c '…'`"
                ));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return is_executable(Path::new(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

impl Handler {
    /// Process mode: runs `cmd` for every session, as `wsgate serve --exec` does.
    ///
    /// ```
    /// let handler = wsgate::Handler::exec("cat").unwrap();
    /// # drop(handler);
    /// assert!(wsgate::Handler::exec("no-such-program-here").is_err());
    /// ```
    pub fn exec(cmd: &str) -> Result<Handler, ConfigError> {
        Handler::exec_passing(cmd, &[])
    }

    /// Process mode that also passes the named variables of wsgate's own environment
    /// to each process, as `wsgate serve --exec CMD --passenv TZ,LANG` does. A variable
    /// that is unset is left out; those wsgate sets for each session (`WSGATE_SUB`,
    /// `REMOTE_ADDR`, …) cannot be named.
    ///
    /// ```
    /// let handler = wsgate::Handler::exec_passing("cat", &["TZ"]).unwrap();
    /// # drop(handler);
    /// assert!(wsgate::Handler::exec_passing("cat", &["REMOTE_ADDR"]).is_err());
    /// ```
    pub fn exec_passing(cmd: &str, passenv: &[&str]) -> Result<Handler, ConfigError> {
        let cmd = ExecCommand::parse(cmd)?.passing(passenv)?;
        let cmd = Arc::new(cmd);
        Ok(Handler::new(move |s| {
            let cmd = cmd.clone();
            async move { run(s, &cmd).await }
        }))
    }
}

/// Runs `cmd` for `session` until the process exits or the session ends.
pub async fn run(mut session: Session, cmd: &ExecCommand) {
    let peer = session.peer();
    let sub = session.sub().to_owned();
    let mut command = Command::new(&cmd.argv[0]);
    command.args(&cmd.argv[1..]).env_clear();
    for k in INHERITED_ENV
        .iter()
        .copied()
        .chain(cmd.passenv.iter().map(|s| s.as_str()))
    {
        if let Some(v) = std::env::var_os(k) {
            command.env(k, v);
        }
    }
    if std::env::var_os("PATH").is_none() {
        command.env("PATH", DEFAULT_PATH);
    }
    command
        .env("WSGATE_SUB", &sub)
        .env("WSGATE_CLAIMS", session.claims())
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_PORT", peer.port().to_string())
        .env("WSGATE_PATH", session.path());
    let (mut process, (stdin, stdout, stderr)) = match Process::spawn(&mut command) {
        Ok(p) => p,
        Err(e) => {
            crate::log_event!(
                Level::Warn,
                "exec_error",
                "peer" = peer,
                "sub" = &sub,
                "program" = &cmd.argv[0],
                "reason" = e,
            );
            session.close(1011, "exec failed").await;
            return;
        }
    };
    let pid = process.child.id();
    let max_line = session
        .ws_config()
        .max_message_size
        .unwrap_or(1 << 20)
        .max(1);

    let mut errors = std::pin::pin!(log_stderr(BufReader::new(stderr), peer, &sub));
    let mut errors_done = false;
    let outcome = {
        let status = process.status();
        let mut bridge = std::pin::pin!(bridge(
            &mut session,
            stdin,
            BufReader::new(stdout),
            status,
            max_line
        ));
        // stderr is logged all along; once it ends the bridge runs alone.
        match async { Some((&mut bridge).await) }
            .or(async {
                (&mut errors).await;
                None
            })
            .await
        {
            Some(o) => o,
            None => {
                errors_done = true;
                bridge.await
            }
        }
    };
    let status = match outcome {
        Outcome::Exited(status) => status,
        Outcome::SessionOver => {
            // The client left (or expired, or the server stops): kill and reap.
            process.kill();
            bounded(process.status()).await.and_then(Result::ok)
        }
    };
    // The last stderr lines (bounded: a process that left the group may hold the
    // pipe). At shutdown only those already written: the exit waits for closing
    // handshakes, not for a pipe (docs/operations.md#signals).
    if !errors_done {
        if session.is_shutting_down() {
            smol::future::poll_once(&mut errors).await;
        } else {
            bounded(&mut errors).await;
        }
    }
    crate::log_event!(
        Level::Debug,
        "exec_exit",
        "peer" = peer,
        "sub" = &sub,
        "pid" = pid,
        "status" = status.map_or("unknown".into(), describe),
    );
    if session.is_open() {
        match status {
            Some(s) if s.success() => session.close(1000, "").await,
            Some(s) => session.close(1011, &describe(s)).await,
            None => session.close(1011, "process failed").await,
        }
    }
}

fn describe(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "exited".into(),
    }
}

enum Outcome {
    /// The process exited (`None`: its status could not be read).
    Exited(Option<ExitStatus>),
    /// The session ended first.
    SessionOver,
}

/// A running process in its own process group: the group is killed (SIGKILL) and the
/// process reaped when dropped, so neither a session that ends nor a session future
/// that is dropped leaves it or its background children running, or a zombie.
struct Process {
    child: Child,
    /// Readable once the process has exited: its pidfd (Linux 5.3 and later).
    /// `None` where there is none: the exit is then polled for, every [`EXIT_POLL`].
    exit_fd: Option<Async<std::os::fd::OwnedFd>>,
    /// Its exit status once it exited. It is reaped only on drop, after its group
    /// is killed: until then its pid (the group's id) cannot be reused.
    exited: Option<ExitStatus>,
}

/// The stdin, stdout and stderr of a [`Process`].
type Pipes = (Async<ChildStdin>, Async<ChildStdout>, Async<ChildStderr>);

impl Process {
    /// Spawns `command` with its stdin, stdout and stderr piped, and returns it
    /// with these pipes, non-blocking.
    fn spawn(command: &mut Command) -> io::Result<(Process, Pipes)> {
        use std::os::unix::process::CommandExt as _;
        let mut child = command
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // From here on, an error drops `process`, which kills and reaps the child.
        let process = Process {
            exit_fd: exit_fd(&child),
            child,
            exited: None,
        };
        let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
            return Err(io::Error::other("missing pipe"));
        };
        let pipes = (Async::new(stdin)?, Async::new(stdout)?, Async::new(stderr)?);
        Ok((process, pipes))
    }

    /// Waits for the process to exit (without reaping it). Cancel-safe.
    async fn status(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            match &self.exit_fd {
                Some(fd) => {
                    if fd.readable().await.is_err() {
                        // Not expected; polling still works.
                        self.exit_fd = None;
                    }
                }
                None => {
                    Sleep::after(EXIT_POLL).await;
                }
            }
        }
    }

    /// The exit status if the process has exited, leaving it unreaped (`WNOWAIT`).
    fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
        use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
        use std::os::unix::process::ExitStatusExt as _;
        if self.exited.is_none() {
            let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
            if let Some(s) = waitid(WaitId::Pid(Pid::from_child(&self.child)), options)? {
                // As a wait(2) status: the exit code in the second byte, or the signal.
                let raw = match (s.exit_status(), s.terminating_signal()) {
                    (Some(code), _) => (code & 0xff) << 8,
                    (None, Some(sig)) => sig | if s.dumped() { 0x80 } else { 0 },
                    (None, None) => 0,
                };
                self.exited = Some(ExitStatus::from_raw(raw));
            }
        }
        Ok(self.exited)
    }

    /// Sends SIGKILL to the process group, and to the process itself in case it left
    /// the group. Safe at any time before the drop: the process is not reaped yet, so
    /// its pid and group id are still ours.
    fn kill(&mut self) {
        use rustix::process::{Pid, Signal, kill_process, kill_process_group};
        let pid = Pid::from_child(&self.child);
        // A child's pid is never 1; `kill(-1)` would signal every process.
        if pid != Pid::INIT {
            let _ = kill_process_group(pid, Signal::KILL);
        }
        let _ = kill_process(pid, Signal::KILL);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        // Then reap it. It may still be dying of SIGKILL, which takes a moment,
        // longer if it is stuck in the kernel (uninterruptible I/O): reap it on a
        // blocking thread then, not on the executor. Nothing else reaps our
        // children, so the pid stays ours until then.
        if let Ok(None) = self.child.try_wait() {
            use rustix::process::{Pid, WaitOptions, waitpid};
            let pid = Pid::from_child(&self.child);
            smol::unblock(move || {
                // Again if a signal interrupted it.
                while matches!(
                    waitpid(Some(pid), WaitOptions::empty()),
                    Err(rustix::io::Errno::INTR)
                ) {}
            })
            .detach();
        }
    }
}

/// A pidfd for `child`, registered with the reactor: it becomes readable once the
/// child has exited. `None` where pidfds are missing (`ENOSYS` before Linux 5.3,
/// or refused, e.g. by a seccomp filter, or no file descriptor left).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn exit_fd(child: &Child) -> Option<Async<std::os::fd::OwnedFd>> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let fd = pidfd_open(Pid::from_child(child), PidfdFlags::empty()).ok()?;
    Async::new(fd).ok()
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn exit_fd(_: &Child) -> Option<Async<std::os::fd::OwnedFd>> {
    None
}

enum Ev {
    /// A write to stdin is over; if it failed, stdin is gone (the outbox dropped it).
    Written,
    Line(io::Result<Option<Vec<u8>>>),
    Exit(io::Result<ExitStatus>),
    /// The process exited [`EXIT_WAIT`] ago and its stdout is still open.
    OutputGrace,
}

async fn bridge<R: AsyncBufRead + Unpin>(
    session: &mut Session,
    stdin: Async<ChildStdin>,
    mut stdout: R,
    status: impl Future<Output = io::Result<ExitStatus>>,
    max_line: usize,
) -> Outcome {
    let mut status = std::pin::pin!(status);
    let mut stdin = Outbox::new(stdin);
    let mut line = Vec::new();
    let mut stdout_open = true;
    // Set once the process exited: its status, and until when the rest of its output
    // is still relayed (a background child may hold stdout open for ever).
    let mut exited: Option<(Option<ExitStatus>, Instant)> = None;
    loop {
        let holding = stdin.is_busy();
        let process = async {
            let written = async {
                let _ = stdin.finished().await;
                Ev::Written
            };
            let output = async {
                if stdout_open {
                    Ev::Line(next_line(&mut stdout, &mut line, max_line).await)
                } else {
                    std::future::pending().await
                }
            };
            let exit = async {
                match exited {
                    None => Ev::Exit((&mut status).await),
                    Some((_, until)) => {
                        Sleep::at(until).await;
                        Ev::OutputGrace
                    }
                }
            };
            written.or(output).or(exit).await
        };
        let race = session.wait(!holding, process).await;
        match race {
            Race::Client(m) => {
                let bytes = match m {
                    // One line per message: line-oriented clients (websocat) already end
                    // theirs in `\n`, which is not doubled
                    // (`docs/protocol.md#process-mode`).
                    Message::Text(t) => {
                        let mut b = Vec::with_capacity(t.len() + 1);
                        b.extend_from_slice(t.as_bytes());
                        if !t.ends_with('\n') {
                            b.push(b'\n');
                        }
                        b
                    }
                    Message::Binary(b) => b.to_vec(),
                    _ => continue,
                };
                // A process that closed its stdin gets no more input: once a write
                // failed the outbox refuses, and the message is dropped.
                stdin.start(|mut w| async move {
                    let r = match w.write_all(&bytes).await {
                        Ok(()) => w.flush().await,
                        Err(e) => Err(e),
                    };
                    (w, r)
                });
            }
            Race::Closed => return Outcome::SessionOver,
            Race::Other(Ev::Written) => {}
            Race::Other(Ev::Line(Ok(Some(bytes)))) => {
                let msg = match String::from_utf8(bytes) {
                    Ok(t) => Message::text(t),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                if !session.send_watched(msg).await {
                    return Outcome::SessionOver;
                }
            }
            Race::Other(Ev::Line(_)) => {
                stdout_open = false;
                if let Some((st, _)) = exited {
                    return Outcome::Exited(st);
                }
            }
            Race::Other(Ev::Exit(r)) if !stdout_open => return Outcome::Exited(r.ok()),
            Race::Other(Ev::Exit(r)) => {
                exited = Some((r.ok(), Instant::now() + EXIT_WAIT));
            }
            Race::Other(Ev::OutputGrace) => return Outcome::Exited(exited.and_then(|(st, _)| st)),
        }
    }
}

/// The next line without its `\n` (at most `max` bytes: longer lines come in
/// pieces; a last line without `\n` counts), or `None` at the end. Cancel-safe: a
/// partial line stays in `line` for the next call.
async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then(|| std::mem::take(line)));
        }
        let room = max.saturating_sub(line.len());
        let window = &buf[..buf.len().min(room)];
        if let Some(i) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..i]);
            r.consume(i + 1);
            return Ok(Some(std::mem::take(line)));
        }
        let n = window.len();
        line.extend_from_slice(window);
        r.consume(n);
        if line.len() >= max {
            return Ok(Some(std::mem::take(line)));
        }
    }
}

async fn log_stderr<R: AsyncBufRead + Unpin>(mut r: R, peer: std::net::SocketAddr, sub: &str) {
    let mut line = Vec::new();
    while let Ok(Some(l)) = next_line(&mut r, &mut line, MAX_STDERR_LINE).await {
        crate::log_event!(
            Level::Warn,
            "exec_stderr",
            "peer" = peer,
            "sub" = sub,
            "line" = String::from_utf8_lossy(&l),
        );
    }
}

/// `f`, for at most [`EXIT_WAIT`].
fn bounded<T>(f: impl Future<Output = T>) -> impl Future<Output = Option<T>> {
    crate::deadline::within(EXIT_WAIT, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the docs of `ExecCommand::parse` and `passing` say, as examples.
    #[test]
    fn exec_command_examples() {
        let c = ExecCommand::parse("cat -u 'a b'").unwrap();
        assert_eq!(c.argv, ["cat", "-u", "a b"]);
        assert!(ExecCommand::parse("cat | grep x").is_err());
        let c = ExecCommand::parse("cat")
            .unwrap()
            .passing(&["TZ", "LC_ALL"])
            .unwrap();
        assert_eq!(c.passenv, ["TZ", "LC_ALL"]);
        assert!(
            ExecCommand::parse("cat")
                .unwrap()
                .passing(&["WSGATE_SUB"])
                .is_err()
        );
    }

    fn words(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(words("  cat   -u "), ["cat", "-u"]);
        assert_eq!(
            words(r#"a 'b c' "d \"e\" \$f \x" g\ h ''"#),
            ["a", "b c", r#"d "e" $f \x"#, "g h", ""]
        );
        assert_eq!(words(r#"x'y'"z""#), ["xyz"]);
        assert_eq!(words("a\\\nb"), ["ab"]);
        assert!(words("").is_empty());
        assert_eq!(words("'|' \"a;b\" \\$"), ["|", "a;b", "$"]);
    }

    #[test]
    fn refuses_what_needs_a_shell() {
        for bad in [
            "a | b",
            "a;b",
            "a > f",
            "echo $HOME",
            "a &",
            "`x`",
            "'open",
            "\"open",
            "a\\",
        ] {
            assert!(split_words(bad).is_err(), "{bad}");
        }
        assert!(ExecCommand::parse("   ").is_err());
        assert!(ExecCommand::parse("/no/such/program").is_err());
    }

    #[test]
    fn lines_are_bounded_and_cancel_safe() {
        smol::block_on(async {
            let data: &[u8] = b"ab\ncdefgh\n\nlast";
            let mut r = BufReader::with_capacity(2, data);
            let mut line = Vec::new();
            let mut got = Vec::new();
            while let Some(l) = next_line(&mut r, &mut line, 4).await.unwrap() {
                got.push(String::from_utf8(l).unwrap());
            }
            assert_eq!(got, ["ab", "cdef", "gh", "", "last"]);
        });
    }
}
