//! Several nodes as one (`docs/operations.md#several-nodes-redis`): single-use tickets and
//! revocations shared through Redis (or anything speaking its protocol: Valkey).
//!
//! - A ticket is redeemed with one atomic command, [`TICKET`] (`SET <prefix>ticket:<jti>
//!   1 NX PX <ms>` in a script): the first node to set the key wins, every later use
//!   on any node finds it.
//! - A revocation is stored in one sorted set, `<prefix>revocations` (member: the
//!   entry, score: when it is forgotten), and published on the channel of the same
//!   name, in one atomic command, [`REVOKE`]. Every node subscribes, then loads the
//!   live entries, and keeps a copy in memory: a token handshake costs no Redis round
//!   trip.
//! - Both writes are scripts (`EVALSHA`, loaded when the connection opens) that first
//!   compare Redis's clock with a deadline the node passes, [`WRITE_DEADLINE`] after
//!   it began waiting, and do nothing past it: a write that reaches a Redis which
//!   hung, after the node answered 503, stores nothing (`docs/decisions.md`).
//! - The node that stores a revocation often hears its own publication before the
//!   reply: the sessions it closes then are counted for the request ([`Pending`]),
//!   whose answer says how many this node closed (`docs/operations.md#several-nodes-redis`).
//! - Until the first load a node is not ready (upgrades, `POST /ticket` and
//!   `/healthz` answer 503). When Redis goes away the node keeps serving tokens
//!   against its copy, tickets get 503, and a supervisor reconnects with backoff (at
//!   most [`MAX_BACKOFF`] between tries) and reloads.
//!
//! Every command has a deadline ([`COMMAND_TIMEOUT`]): a Redis that hangs costs a
//! ticket at most that long, marks the node down, and never holds up shutdown. The
//! wire format is `redis-protocol`'s RESP2 codec; the connection around it is ours.

use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use event_listener::Event;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};
use smol::Timer;
use smol::future::FutureExt as _;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use smol::net::TcpStream;

use crate::head::AuthorityError;
use crate::log::Level;
use crate::revocation::Revocation;
use crate::state::Shared;
use crate::time::unix_now;

/// Longest wait for one command's answer (connecting included).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long after the node began waiting a write may still take effect in Redis:
/// half of [`COMMAND_TIMEOUT`]. Later, the script does nothing; the other half is
/// for the reply, so that one merely slow is not taken for a failure after all.
const WRITE_DEADLINE: Duration = Duration::from_millis(500);
/// Longest wait for the revocation entries to load.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Largest reply accepted (the revocation list at its default bound is a few MiB).
const MAX_REPLY: usize = 64 << 20;

/// `redis://[user:password@]host[:port][/db]`. Its `Display` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: u32,
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<RedisUrl, String> {
        let rest = s.strip_prefix("redis://").ok_or_else(|| {
            if s.starts_with("rediss://") {
                "rediss:// (TLS to Redis) is not supported: use redis:// on a private network"
                    .to_owned()
            } else {
                "expected redis://[user:password@]host[:port][/db]".to_owned()
            }
        })?;
        // The credentials first, up to the last `@`: a password may hold `/`, `?`,
        // `#` or `:` unencoded, and no error below may quote a piece of it.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        if rest.contains(['?', '#']) {
            return Err("a query or fragment is not supported".into());
        }
        let (hostport, path) = rest.split_once('/').unwrap_or((rest, ""));
        let decode = |part: &str, what: &str| {
            crate::head::percent_decode(part)
                .map(|c| c.into_owned())
                .ok_or_else(|| format!("the {what} is not valid percent-encoded UTF-8"))
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((name, pass)) => (
                    Some(decode(name, "user name")?).filter(|n| !n.is_empty()),
                    Some(decode(pass, "password")?),
                ),
                None => (
                    Some(decode(u, "user name")?).filter(|n| !n.is_empty()),
                    None,
                ),
            },
        };
        let (host, port) = crate::head::split_authority(hostport).map_err(|e| match e {
            AuthorityError::AfterLiteral(p) => format!("`{p}` after the IPv6 address"),
            AuthorityError::Unclosed => "an IPv6 host needs its closing ]".to_owned(),
        })?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(h) => {
                h.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("`{h}` is not an IPv6 address"))?;
                h
            }
            None => host,
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b))
        {
            return Err(format!("`{host}` is not a host name or address"));
        }
        let port = match port {
            None => 6379,
            Some(p) => match crate::head::parse_port(p) {
                Some(n) if n > 0 => n,
                _ => return Err(format!("`{p}` is not a port (1-65535)")),
            },
        };
        let db = match path {
            "" => 0,
            p => match p.parse::<u32>() {
                Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("`/{p}`: the database must be a number")),
            },
        };
        Ok(RedisUrl {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }
}

/// Redis could not be reached or answered an error; `Display` says which, without
/// any secret.
#[derive(Debug)]
pub struct RedisError(String);

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisError {}

impl From<io::Error> for RedisError {
    fn from(e: io::Error) -> RedisError {
        RedisError(e.to_string())
    }
}

fn err(what: impl Into<String>) -> RedisError {
    RedisError(what.into())
}

/// `f`, or a timeout error after `d`.
async fn within<T>(
    d: Duration,
    f: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    crate::deadline::within(d, f)
        .await
        .unwrap_or_else(|| Err(err(format!("no answer within {} ms", d.as_millis()))))
}

/// The first lines of both scripts: nothing happens once Redis's clock (µs) is past
/// `ARGV[1]`, the deadline. `TIME` before a write is allowed since Redis 5 (scripts
/// replicate their effects, not themselves; the only way since Redis 7 and Valkey).
macro_rules! unless_late {
    () => {
        "local t = redis.call('TIME')\n\
         if tonumber(t[1]) * 1000000 + tonumber(t[2]) > tonumber(ARGV[1]) then\n\
           return redis.status_reply('LATE')\n\
         end\n"
    };
}

/// Redeems a ticket: `KEYS[1]` the ticket's key, `ARGV[2]` how long it is kept (ms).
/// `OK` the first time, nil after.
const TICKET: &str = concat!(
    unless_late!(),
    "return redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2])\n"
);

/// Stores and publishes a revocation: `KEYS[1]` the sorted set (and channel),
/// `ARGV[2..5]` its score, member, publication, and the score up to which entries are
/// forgotten now. `OK`.
const REVOKE: &str = concat!(
    unless_late!(),
    "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])\n\
     redis.call('PUBLISH', KEYS[1], ARGV[4])\n\
     redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])\n\
     return redis.status_reply('OK')\n"
);

/// The script's reply when it ran past its deadline and did nothing.
const LATE: &[u8] = b"LATE";

/// How our error for Redis's answer to an `EVALSHA` of a script it does not hold
/// begins ([`answered`]).
const NOSCRIPT: &str = "Redis answered: NOSCRIPT";

/// An error reply, without the arguments an unknown command's error quotes: a
/// ticket's key or a revoked jti must not reach the log.
fn answered(e: &str) -> RedisError {
    let e = e.split(", with args").next().unwrap_or_default();
    err(format!("Redis answered: {e}"))
}

/// One connection speaking RESP2.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet decoded.
    buf: Vec<u8>,
    /// Encoding space, reused.
    out: Vec<u8>,
}

impl Conn {
    /// Connects, authenticates and selects the database, within [`COMMAND_TIMEOUT`]
    /// per step.
    async fn open(url: &RedisUrl) -> Result<Conn, RedisError> {
        let stream = within(COMMAND_TIMEOUT, async {
            Ok(TcpStream::connect((url.host.as_str(), url.port)).await?)
        })
        .await?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(256),
            out: Vec::with_capacity(256),
        };
        if let Some(pass) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            args.extend(url.user.as_ref().map(|u| u.as_bytes()));
            args.push(pass.as_bytes());
            within(COMMAND_TIMEOUT, conn.call(&args))
                .await
                .map_err(|e| err(format!("AUTH: {e}")))?;
        }
        if url.db != 0 {
            let db = url.db.to_string();
            within(COMMAND_TIMEOUT, conn.call(&[b"SELECT", db.as_bytes()]))
                .await
                .map_err(|e| err(format!("SELECT {db}: {e}")))?;
        }
        Ok(conn)
    }

    /// Appends one command to the output buffer.
    fn push(&mut self, args: &[&[u8]]) -> Result<(), RedisError> {
        let frames: Vec<BorrowedFrame<'_>> =
            args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
        let frame = BorrowedFrame::Array(&frames);
        let at = self.out.len();
        self.out.resize(at + frame.encode_len(false), 0);
        encode_borrowed(&mut self.out[at..], &frame, false)
            .map_err(|e| err(format!("encoding a command: {e}")))?;
        Ok(())
    }

    /// Writes the buffered commands.
    async fn flush(&mut self) -> Result<(), RedisError> {
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// The next reply (an error reply is `Err`).
    async fn read(&mut self) -> Result<OwnedFrame, RedisError> {
        loop {
            match decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return match frame {
                        OwnedFrame::Error(e) => Err(answered(&e)),
                        f => Ok(f),
                    };
                }
                Ok(None) => {}
                Err(e) => return Err(err(format!("unreadable reply: {e}"))),
            }
            if self.buf.len() > MAX_REPLY {
                return Err(err("reply too large"));
            }
            let at = self.buf.len();
            self.buf.resize(at + 4096, 0);
            let n = self.stream.read(&mut self.buf[at..]).await;
            self.buf.truncate(at + *n.as_ref().unwrap_or(&0));
            match n {
                Ok(0) => return Err(err("connection closed by Redis")),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One command, one reply.
    async fn call(&mut self, args: &[&[u8]]) -> Result<OwnedFrame, RedisError> {
        self.push(args)?;
        self.flush().await?;
        self.read().await
    }
}

/// The command connection: the scripts' digests, and Redis's clock.
struct Commands {
    conn: Conn,
    /// `SCRIPT LOAD`'s answers for [`TICKET`] and [`REVOKE`].
    ticket: String,
    revoke: String,
    /// Redis's clock (`TIME`, µs since the epoch) at one of our instants, read when
    /// the connection opened. The reading is taken as of when its reply arrived, so
    /// it is never ahead of Redis's clock then: the deadlines derived from it are, if
    /// anything, early.
    clock: (Instant, i64),
}

impl Commands {
    /// Opens a connection, loads the scripts and reads Redis's clock, within
    /// [`COMMAND_TIMEOUT`] per step.
    async fn open(url: &RedisUrl) -> Result<Commands, RedisError> {
        let mut conn = Conn::open(url).await?;
        within(COMMAND_TIMEOUT, async move {
            conn.push(&[b"SCRIPT", b"LOAD", TICKET.as_bytes()])?;
            conn.push(&[b"SCRIPT", b"LOAD", REVOKE.as_bytes()])?;
            conn.push(&[b"TIME"])?;
            conn.flush().await?;
            let mut digest = async || {
                let reply = conn
                    .read()
                    .await
                    .map_err(|e| err(format!("SCRIPT LOAD: {e}")))?;
                bulk_str(&reply)
                    .map(str::to_owned)
                    .ok_or_else(|| err(format!("SCRIPT LOAD answered {reply:?}")))
            };
            let (ticket, revoke) = (digest().await?, digest().await?);
            let time = conn.read().await.map_err(|e| err(format!("TIME: {e}")))?;
            let clock = (
                Instant::now(),
                parse_time(&time).ok_or_else(|| err(format!("TIME answered {time:?}")))?,
            );
            Ok(Commands {
                conn,
                ticket,
                revoke,
                clock,
            })
        })
        .await
    }
}

/// `at` on Redis's clock (µs), from a `clock` reading as in [`Commands::clock`].
fn redis_time(clock: (Instant, i64), at: Instant) -> i64 {
    let (ours, theirs) = clock;
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    match at.checked_duration_since(ours) {
        Some(d) => theirs.saturating_add(micros(d)),
        None => theirs.saturating_sub(micros(ours - at)),
    }
}

/// `TIME`'s answer, in µs since the epoch.
fn parse_time(reply: &OwnedFrame) -> Option<i64> {
    let OwnedFrame::Array(parts) = reply else {
        return None;
    };
    let [secs, micros] = parts.as_slice() else {
        return None;
    };
    let secs: i64 = bulk_str(secs)?.parse().ok()?;
    let micros: i64 = bulk_str(micros)?.parse().ok()?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// Which of the scripts.
#[derive(Clone, Copy)]
enum Script {
    Ticket,
    Revoke,
}

/// How a revocation travels: `j:<jti>` or `s:<moment>:<sub>` (the member of the
/// sorted set), and `<forget_at> <member>` (the publication).
fn member(entry: &Revocation, at: i64) -> String {
    match entry {
        Revocation::Jti(j) => format!("j:{j}"),
        Revocation::Sub(s) => format!("s:{at}:{s}"),
    }
}

/// The entry and its moment, from a member; `None` for anything else.
fn parse_member(m: &str) -> Option<(Revocation, i64)> {
    if let Some(j) = m.strip_prefix("j:") {
        return (!j.is_empty()).then(|| (Revocation::Jti(j.to_owned()), 0));
    }
    let (at, sub) = m.strip_prefix("s:")?.split_once(':')?;
    let at = at.parse().ok()?;
    (!sub.is_empty()).then(|| (Revocation::Sub(sub.to_owned()), at))
}

/// `<forget_at> <member>`.
fn parse_publication(p: &str) -> Option<(Revocation, i64, i64)> {
    let (forget_at, m) = p.split_once(' ')?;
    let (entry, at) = parse_member(m)?;
    Some((entry, at, forget_at.parse().ok()?))
}

fn bulk_str(f: &OwnedFrame) -> Option<&str> {
    match f {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// The shared state of a node: its connection for commands, whether it is up, and
/// whether it has loaded the revocations once.
pub(crate) struct Cluster {
    url: RedisUrl,
    prefix: String,
    up: AtomicBool,
    loaded: AtomicBool,
    /// The command connection while up. One command at a time on it; each waits for
    /// its turn within its own deadline.
    conn: smol::lock::Mutex<Option<Commands>>,
    /// Notified when a command fails: the supervisor reconnects.
    failed: Event,
    /// The revocations this node is storing, and the sessions their publications
    /// closed here meanwhile (rarely more than one at a time).
    pending: Mutex<Vec<InFlight>>,
    next_pending: AtomicU64,
}

struct InFlight {
    id: u64,
    /// As in the sorted set: what the publication carries.
    member: String,
    closed: usize,
}

/// A revocation this node is storing, from before its command is sent until the
/// request has closed the matching sessions itself: the sessions that its
/// publication closes here meanwhile are counted for it, not as another node's.
pub(crate) struct Pending<'a> {
    cluster: &'a Cluster,
    id: u64,
}

impl Pending<'_> {
    /// Ends it: how many sessions the publication closed here while it was pending.
    /// Called after the request closed the sessions, so none is missed by both.
    pub(crate) fn finish(self) -> usize {
        self.take()
    }

    fn take(&self) -> usize {
        let mut pending = self.cluster.pending();
        let Some(i) = pending.iter().position(|p| p.id == self.id) else {
            return 0;
        };
        pending.swap_remove(i).closed
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.take();
    }
}

/// Why a shared operation did not happen: Redis is down or did not answer in time.
#[derive(Debug)]
pub(crate) struct Unavailable;

impl Cluster {
    pub(crate) fn new(url: RedisUrl, prefix: String) -> Cluster {
        Cluster {
            url,
            prefix,
            up: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            conn: smol::lock::Mutex::new(None),
            failed: Event::new(),
            pending: Mutex::new(Vec::new()),
            next_pending: AtomicU64::new(0),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<InFlight>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `entry`, made here at `at`, as being stored by this node, until the
    /// [`Pending`] is finished or dropped.
    pub(crate) fn begin_revoke(&self, entry: &Revocation, at: i64) -> Pending<'_> {
        let id = self.next_pending.fetch_add(1, Ordering::Relaxed);
        self.pending().push(InFlight {
            id,
            member: member(entry, at),
            closed: 0,
        });
        Pending { cluster: self, id }
    }

    /// Connected, subscribed and loaded.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Has loaded the revocations at least once: may let clients in.
    pub(crate) fn is_ready(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs `script` on `key` (`ARGV[1]`: its deadline on Redis's clock, then `args`)
    /// within [`COMMAND_TIMEOUT`] (the wait for the connection included): its reply. Any
    /// failure marks the node down; so does a script that reached Redis too late
    /// (Redis hung, or its clock jumped: the reconnection reads it again).
    async fn eval(
        &self,
        what: &str,
        script: Script,
        key: &str,
        args: &[&[u8]],
    ) -> Result<OwnedFrame, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        let began = Instant::now();
        let result = within(COMMAND_TIMEOUT, async {
            let mut slot = self.conn.lock().await;
            // Out of its slot during the command: if this future is dropped (the
            // deadline), the connection goes with it instead of leaving a reply
            // behind for the next command to read as its own.
            let mut c = slot.take().ok_or_else(|| err("not connected"))?;
            let deadline = redis_time(
                c.clock,
                crate::deadline::instant_after(began, WRITE_DEADLINE),
            )
            .to_string();
            let (sha, text) = match script {
                Script::Ticket => (&c.ticket, TICKET),
                Script::Revoke => (&c.revoke, REVOKE),
            };
            let mut argv: Vec<&[u8]> = vec![
                b"EVALSHA",
                sha.as_bytes(),
                b"1",
                key.as_bytes(),
                deadline.as_bytes(),
            ];
            argv.extend_from_slice(args);
            let mut r = c.conn.call(&argv).await;
            if r.as_ref().is_err_and(|e| e.0.starts_with(NOSCRIPT)) {
                // Redis forgot the scripts (`SCRIPT FLUSH`, a restart behind a proxy):
                // nothing ran, so the script goes whole, with the same deadline, and
                // Redis keeps it again.
                argv[0] = b"EVAL";
                argv[1] = text.as_bytes();
                r = c.conn.call(&argv).await;
            }
            let r = match r {
                Ok(OwnedFrame::SimpleString(s)) if s == LATE => Err(err(format!(
                    "ran in Redis more than {} ms after the node began waiting: not applied",
                    WRITE_DEADLINE.as_millis()
                ))),
                r => r,
            };
            if r.is_ok() {
                *slot = Some(c);
            }
            r
        })
        .await;
        result.map_err(|e| {
            self.mark_down(what, &e);
            Unavailable
        })
    }

    fn mark_down(&self, what: &str, e: &RedisError) {
        if self.up.swap(false, Ordering::AcqRel) {
            crate::log_event!(Level::Error, "redis_error", "during" = what, "error" = e);
            self.failed.notify(usize::MAX);
        }
    }

    /// Spends a ticket once across all nodes: `Ok(true)` the first time, `Ok(false)`
    /// after. Remembered until the ticket's `exp` (plus a second of clock skew).
    pub(crate) async fn redeem(&self, jti: &str, exp: i64) -> Result<bool, Unavailable> {
        let key = self.key(&format!("ticket:{jti}"));
        let ms = (exp.saturating_sub(unix_now()).clamp(0, 86_400 * 365) + 1) * 1000;
        let ms = ms.to_string();
        let reply = self
            .eval("ticket", Script::Ticket, &key, &[ms.as_bytes()])
            .await?;
        Ok(matches!(reply, OwnedFrame::SimpleString(ref s) if s == b"OK"))
    }

    /// Stores and publishes a revocation made here at `at`, forgotten at `forget_at`.
    pub(crate) async fn revoke(
        &self,
        entry: &Revocation,
        at: i64,
        forget_at: i64,
    ) -> Result<(), Unavailable> {
        let key = self.key("revocations");
        let m = member(entry, at);
        let publication = format!("{forget_at} {m}");
        let score = forget_at.to_string();
        let now = unix_now().to_string();
        let args: [&[u8]; 4] = [
            score.as_bytes(),
            m.as_bytes(),
            publication.as_bytes(),
            now.as_bytes(),
        ];
        self.eval("revoke", Script::Revoke, &key, &args).await?;
        Ok(())
    }

    /// Keeps the node connected for as long as the server runs: connect, subscribe,
    /// load, follow the publications; on any failure, back off and start again.
    pub(crate) async fn supervise(&self, shared: &Shared) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failed = self.failed.listen();
            match self.connect(shared).await {
                Ok(sub) => {
                    backoff = FIRST_BACKOFF;
                    self.loaded.store(true, Ordering::Release);
                    self.up.store(true, Ordering::Release);
                    shared.metrics.set_redis_up(true);
                    crate::log_event!(
                        Level::Info,
                        "redis_up",
                        "url" = &self.url,
                        "revocations" = shared.gate.revocations().len()
                    );
                    let e = self.follow(sub, shared, failed).await;
                    shared.metrics.set_redis_up(false);
                    // Commands fail fast from here on; a late one finds no connection.
                    self.mark_down("subscription", &e);
                    self.up.store(false, Ordering::Release);
                    *self.conn.lock().await = None;
                }
                Err(e) => {
                    crate::log_event!(
                        Level::Error,
                        "redis_error",
                        "during" = "connect",
                        "url" = &self.url,
                        "error" = e,
                        "retry_ms" = backoff.as_millis()
                    );
                }
            }
            Timer::after(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes, then loads the live entries (in that order: an entry published
    /// meanwhile arrives by the subscription), and installs the command connection.
    async fn connect(&self, shared: &Shared) -> Result<Conn, RedisError> {
        let channel = self.key("revocations");
        let mut sub = Conn::open(&self.url).await?;
        within(COMMAND_TIMEOUT, async {
            let reply = sub.call(&[b"SUBSCRIBE", channel.as_bytes()]).await?;
            match reply {
                OwnedFrame::Array(ref a) if a.first().and_then(bulk_str) == Some("subscribe") => {
                    Ok(())
                }
                other => Err(err(format!("SUBSCRIBE answered {other:?}"))),
            }
        })
        .await?;
        let mut conn = Commands::open(&self.url).await?;
        let now = unix_now();
        let entries = within(LOAD_TIMEOUT, async {
            let min = format!("({now}");
            conn.conn
                .call(&[
                    b"ZRANGEBYSCORE",
                    channel.as_bytes(),
                    min.as_bytes(),
                    b"+inf",
                    b"WITHSCORES",
                ])
                .await
        })
        .await?;
        let OwnedFrame::Array(items) = entries else {
            return Err(err("ZRANGEBYSCORE did not answer a list"));
        };
        for pair in items.chunks(2) {
            let (Some(m), Some(score)) = (
                pair.first().and_then(bulk_str),
                pair.get(1).and_then(bulk_str),
            ) else {
                continue;
            };
            let (Some((entry, at)), Ok(forget_at)) = (parse_member(m), score.parse::<f64>()) else {
                continue;
            };
            self.apply(shared, &entry, at, forget_at as i64, false);
        }
        *self.conn.lock().await = Some(conn);
        Ok(sub)
    }

    /// Applies the publications until the subscription fails or a command failed.
    async fn follow(
        &self,
        mut sub: Conn,
        shared: &Shared,
        mut failed: event_listener::EventListener,
    ) -> RedisError {
        loop {
            let next = async { Some(sub.read().await) }
                .or(async {
                    (&mut failed).await;
                    None
                })
                .await;
            let frame = match next {
                None => return err("a command failed"),
                Some(Err(e)) => return e,
                Some(Ok(f)) => f,
            };
            let OwnedFrame::Array(parts) = frame else {
                continue;
            };
            if parts.first().and_then(bulk_str) != Some("message") {
                continue;
            }
            let Some((entry, at, forget_at)) =
                parts.get(2).and_then(bulk_str).and_then(parse_publication)
            else {
                continue;
            };
            self.apply(shared, &entry, at, forget_at, true);
        }
    }

    /// Puts an entry in this node's copy and closes the live sessions it matches; if
    /// this node is storing it ([`Pending`]), they are counted for that request.
    fn apply(&self, shared: &Shared, entry: &Revocation, at: i64, forget_at: i64, log: bool) {
        let now = unix_now();
        if shared
            .gate
            .apply_revocation(entry, at, forget_at, now)
            .is_err()
        {
            crate::log_event!(
                Level::Error,
                "revoke_refused",
                "kind" = entry.kind(),
                "reason" = "list_full",
                "source" = "redis"
            );
            return;
        }
        let closed = {
            // Held while closing: the request finishes after its own closing, so
            // each session is counted by it or logged here, never lost between.
            let mut pending = self.pending();
            let closed = shared
                .registry
                .revoke(entry, if at == 0 { now } else { at });
            let m = member(entry, at);
            if let Some(p) = pending.iter_mut().find(|p| p.member == m) {
                p.closed += closed;
                return;
            }
            closed
        };
        if log && closed > 0 {
            crate::log_event!(
                Level::Info,
                "revoke",
                "kind" = entry.kind(),
                "closed" = closed,
                "source" = "redis"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: RedisUrl = "redis://127.0.0.1:6380/2".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 6380, 2));
        assert_eq!(u.to_string(), "redis://127.0.0.1:6380/2");
        let u: RedisUrl = "redis://app:s%40cret@redis.internal".parse().unwrap();
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.port, 6379);
        assert_eq!(u.to_string(), "redis://app:***@redis.internal:6379/0");
        // A password with `/`, `?`, `#`, `:` or `@` unencoded is taken whole, and no
        // error quotes it.
        let u: RedisUrl = "redis://app:p/a?s#s:w@rd@h:7/1".parse().unwrap();
        assert_eq!(u.password.as_deref(), Some("p/a?s#s:w@rd"));
        assert_eq!((u.host.as_str(), u.port, u.db), ("h", 7, 1));
        for bad in [
            "redis://u:pa/ss@h:x",
            "redis://u:se:cret@h/db",
            "redis://u:sec?ret@",
        ] {
            let e = bad.parse::<RedisUrl>().unwrap_err();
            assert!(
                !e.contains("pa/ss") && !e.contains("se:cret") && !e.contains("sec?ret"),
                "{e}"
            );
        }
        let u: RedisUrl = "redis://:pw@[::1]:7000".parse().unwrap();
        assert_eq!(
            (u.user.as_deref(), u.host.as_str(), u.port),
            (None, "::1", 7000)
        );
        assert!(!format!("{u:?}").contains("pw"));
        for (bad, why) in [
            ("redis://[::1", "an IPv6 host needs its closing ]"),
            ("redis://[::1]x", "`x` after the IPv6 address"),
            ("redis://[::1]]:1", "`]:1` after the IPv6 address"),
            ("redis://[nope]:1", "`nope` is not an IPv6 address"),
            ("redis://h:", "`` is not a port (1-65535)"),
            ("redis://h:+1", "`+1` is not a port (1-65535)"),
            ("redis://h:0", "`0` is not a port (1-65535)"),
            ("redis://:1", "no host"),
            ("redis://[]:1", "`` is not an IPv6 address"),
        ] {
            assert_eq!(bad.parse::<RedisUrl>().unwrap_err(), why, "{bad}");
        }
        let u: RedisUrl = "redis://H.example:065535".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("H.example", 65535));
        for bad in [
            "http://x",
            "rediss://x",
            "redis://",
            "redis://:6379",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:+1",
            "redis://h/x",
            "redis://h/1?x=1",
            "redis://h o",
            "redis://[::1",
            "redis://[nope]:1",
            "redis://[::1]x",
        ] {
            assert!(bad.parse::<RedisUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_travel_as_members_and_publications() {
        for (e, at) in [
            (Revocation::Jti("a b:c".into()), 0),
            (Revocation::Sub("alice:x y".into()), 1_700_000_000),
        ] {
            let m = member(&e, at);
            assert_eq!(parse_member(&m), Some((e.clone(), at)));
            let p = format!("1700086400 {m}");
            assert_eq!(parse_publication(&p), Some((e, at, 1_700_086_400)));
        }
        for bad in ["", "x:1", "j:", "s:1:", "s:x:alice", "s:1"] {
            assert_eq!(parse_member(bad), None, "{bad}");
        }
        assert_eq!(parse_publication("nope j:a"), None);
    }

    #[test]
    fn error_replies_quote_no_argument() {
        let e = "ERR unknown command 'EVALSHA', with args beginning with: 'ab' '1' \
                 'wsgate:ticket:secret-jti' ";
        assert_eq!(
            answered(e).to_string(),
            "Redis answered: ERR unknown command 'EVALSHA'"
        );
        assert_eq!(
            answered("NOSCRIPT No matching script.").to_string(),
            "Redis answered: NOSCRIPT No matching script."
        );
    }

    #[test]
    fn deadlines_on_redis_clock() {
        let bulk = |s: &str| OwnedFrame::BulkString(s.as_bytes().to_vec());
        let time = OwnedFrame::Array(vec![bulk("1700000000"), bulk("250")]);
        assert_eq!(parse_time(&time), Some(1_700_000_000_000_250));
        for bad in [
            OwnedFrame::Array(vec![bulk("1700000000")]),
            OwnedFrame::Array(vec![bulk("x"), bulk("1")]),
            OwnedFrame::Array(vec![bulk("99999999999999999"), bulk("1")]),
            bulk("1700000000"),
        ] {
            assert_eq!(parse_time(&bad), None, "{bad:?}");
        }
        let ours = Instant::now() + Duration::from_secs(10);
        let clock = (ours, 1_700_000_000_000_000);
        assert_eq!(
            redis_time(clock, ours + WRITE_DEADLINE),
            1_700_000_000_500_000
        );
        assert_eq!(
            redis_time(clock, ours - Duration::from_secs(2)),
            1_699_999_998_000_000
        );
        for script in [TICKET, REVOKE] {
            assert!(script.starts_with("local t = redis.call('TIME')\n"));
            assert!(script.contains("return redis.status_reply('LATE')"));
        }
    }
}
