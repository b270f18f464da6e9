//! The `wsgate` binary: argh → library; errors → one `error:` line and exit 2.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use argh::FromArgs;
use cli::options::{
    as_flag, bind_error, load_key_file, load_keys, parse_addr, parse_listen, parse_origin,
};
use wsgate::internal::{Rfc3339, parse_duration};
use wsgate::{
    ClaimRules, Config, ConfigError, Handler, Key, LogLevel as Level, Methods, Server,
    UntrustedToken, Verifier, unix_now,
};

/// The binary's own modules (the library does not have them).
mod cli {
    /// `wsgate bench`, the load generator.
    #[cfg(feature = "bench")]
    pub mod bench;
    pub mod options;
}

#[derive(FromArgs)]
/// Authenticate WebSocket connections with PASETO v4 tokens.
#[argh(help_triggers("-h", "--help", "help"))]
struct Cli {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
// `serve` has many options; the value is built once, at start-up.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    Serve(Serve),
    Keygen(Keygen),
    Issue(Issue),
    Verify(Verify),
    Revoke(Revoke),
    #[cfg(feature = "bench")]
    Bench(Bench),
}

#[derive(FromArgs)]
/// Run the server. Without --key (or WSGATE_KEY) it makes an ephemeral key and prints a demo token.
#[argh(
    subcommand,
    name = "serve",
    help_triggers("-h", "--help", "help"),
    note = "Any option can come from the environment: WSGATE_ + its name in capitals,\n\
            - as _ (WSGATE_MAX_CONNECTIONS=500); lists separated by commas or newlines;\n\
            switches 1/true or 0/false. A flag wins over its variable. WSGATE_KEY\n\
            holds the key text itself (read only without --key)."
)]
struct Serve {
    /// address to bind; :8080 for every IPv4 interface [127.0.0.1:8080]
    #[argh(option, default = "\"127.0.0.1:8080\".into()")]
    listen: String,
    /// PASERK key file (k4.local or k4.public); repeat for rotation
    #[argh(option)]
    key: Vec<PathBuf>,
    /// enabled methods [header,protocol,cookie,message]; `query` is also available
    #[argh(option, default = "\"header,protocol,cookie,message\".into()")]
    auth: String,
    /// cookie that carries the token [wsgate_token]
    #[argh(option, default = "\"wsgate_token\".into()")]
    cookie: String,
    /// exact browser origin allowed to connect (https://app.example.com); repeatable
    #[argh(option)]
    allow_origin: Vec<String>,
    /// first-message deadline: 5 (seconds), 5s, 1m [5s]
    #[argh(option, default = "\"5\".into()")]
    auth_timeout: String,
    /// required `aud` claim
    #[argh(option)]
    audience: Option<String>,
    /// required `iss` claim
    #[argh(option)]
    issuer: Option<String>,
    /// clock skew allowed on exp, nbf, iat: 60 (seconds), 2m [60s]
    #[argh(option, default = "\"60\".into()")]
    leeway: String,
    /// open connections beyond which requests get 503 [10000]
    #[argh(option, default = "10000")]
    max_connections: usize,
    /// executor threads sharing the listener and all state; 0 = one per core [1]
    #[argh(option, default = "1")]
    threads: usize,
    /// largest message in bytes; larger closes with 1009 [1048576]
    #[argh(option, default = "1048576")]
    max_message: usize,
    /// accept upgrades on this path only (404 elsewhere) [any]
    #[argh(option)]
    path: Option<String>,
    /// proxy each session to this WebSocket (ws://host:port/path)
    #[argh(option)]
    upstream: Option<String>,
    /// run this command per session, websocketd style (split like shell words, no shell)
    #[argh(option)]
    exec: Option<String>,
    /// with --exec: pass these variables of wsgate's environment to the process
    /// (TZ,LC_ALL); repeatable
    #[argh(option)]
    passenv: Vec<String>,
    /// lifetime of tickets minted by POST /ticket: 30 (seconds), 1m [30s]
    #[argh(option, default = "\"30\".into()")]
    ticket_ttl: String,
    /// most live tickets remembered (20 bytes each); POST /ticket answers 503 beyond
    /// [320000: 10000 a second for 30 s]
    #[argh(option, default = "wsgate::internal::DEFAULT_TICKET_CAPACITY")]
    ticket_capacity: usize,
    /// serve files from this directory for plain GETs
    #[argh(option, long = "static")]
    static_dir: Option<PathBuf>,
    /// time between pings to idle clients (30, 30s, 1m); a client that misses one is
    /// dropped [30s]
    #[argh(option, default = "\"30\".into()")]
    ping_interval: String,
    /// error, warn, info or debug [info]
    #[argh(option, default = "\"info\".into()")]
    log_level: String,
    /// text (key=value) or json (one object per line, same fields) [text]
    #[argh(option, default = "\"text\".into()")]
    log_format: String,
    /// in-band refresh: sessions take {"type":"refresh","token":…} messages and get an
    /// `expiring` notice before exp [off]
    #[argh(switch)]
    refresh: bool,
    /// with --refresh, the `expiring` notice comes this long before exp [30s]
    #[argh(option, default = "\"30\".into()")]
    refresh_notice: String,
    /// operators' listener (POST /revoke, GET /sessions, /healthz, /metrics): plain HTTP
    /// without authentication, bind it to loopback or a private network [off]
    #[argh(option)]
    admin_listen: Option<String>,
    /// how long a revocation is kept [86400s]
    #[argh(option, default = "\"86400\".into()")]
    revoke_ttl: String,
    /// most live revocations; POST /revoke answers 503 beyond [100000]
    #[argh(option, default = "100000")]
    revoke_capacity: usize,
    /// speak TLS with this PEM certificate chain (leaf first); needs --tls-key
    #[argh(option)]
    tls_cert: Option<PathBuf>,
    /// the PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert
    #[argh(option)]
    tls_key: Option<PathBuf>,
    /// PEM file of CAs trusted for a wss:// --upstream, besides the system's roots
    #[argh(option)]
    upstream_ca: Option<PathBuf>,
    /// peers (a load balancer) whose X-Forwarded-For names the client: an address or
    /// range (10.0.0.0/8); repeatable [none]
    #[cfg(feature = "load-balancer")]
    #[argh(option)]
    trusted_proxy: Vec<String>,
    /// every connection begins with a PROXY protocol header (v1 or v2) naming the
    /// client; from --trusted-proxy peers only, when given [off]
    #[cfg(feature = "load-balancer")]
    #[argh(switch)]
    proxy_protocol: bool,
    /// share tickets and revocations with the other nodes on this Redis:
    /// redis://[user:password@]host[:port][/db] [off]
    #[cfg(feature = "redis")]
    #[argh(option)]
    redis: Option<String>,
    /// prefix of every Redis key and channel, so deployments can share one Redis
    /// [wsgate:]
    #[cfg(feature = "redis")]
    #[argh(option, default = "\"wsgate:\".into()")]
    redis_prefix: String,
}

#[derive(FromArgs)]
/// Revoke tokens on a running server through its --admin-listen address: every token
/// with this jti, or every token of this sub issued up to now. Prints the answer's JSON.
#[argh(subcommand, name = "revoke", help_triggers("-h", "--help", "help"))]
struct Revoke {
    /// the server's --admin-listen address (HOST:PORT)
    #[argh(option)]
    admin: String,
    /// revoke every token of this sub issued up to now
    #[argh(option)]
    sub: Option<String>,
    /// revoke the token with this jti
    #[argh(option)]
    jti: Option<String>,
}

#[derive(FromArgs)]
/// Make a key (PASERK) in a file of mode 0600, or on stdout.
#[argh(subcommand, name = "keygen", help_triggers("-h", "--help", "help"))]
struct Keygen {
    /// make an Ed25519 pair: the secret key to --out F, the public key to F.pub
    #[argh(switch)]
    public: bool,
    /// file to write (not overwritten if it exists); stdout without it
    #[argh(option)]
    out: Option<PathBuf>,
}

#[derive(FromArgs)]
/// Print a token on stdout (its footer names the key: `kid`).
#[argh(subcommand, name = "issue", help_triggers("-h", "--help", "help"))]
struct Issue {
    /// key file: k4.local (v4.local token) or k4.secret (v4.public token)
    #[argh(option)]
    key: PathBuf,
    /// the subject (identity)
    #[argh(option)]
    sub: String,
    /// lifetime: 30s, 15m, 2h, 1d [15m]
    #[argh(option, default = "\"15m\".into()")]
    ttl: String,
    /// the aud claim
    #[argh(option)]
    aud: Option<String>,
    /// the iss claim
    #[argh(option)]
    iss: Option<String>,
    /// extra string claim k=v; repeatable
    #[argh(option)]
    claim: Vec<String>,
    /// extra claim k=<JSON value> (n=5, admin=true, tags='["a"]'); repeatable
    #[argh(option)]
    claim_json: Vec<String>,
    /// the jti claim
    #[argh(option)]
    jti: Option<String>,
}

#[derive(FromArgs)]
/// Print a token's claims as JSON (exit 0), or `invalid: <reason>` (exit 1).
#[argh(subcommand, name = "verify", help_triggers("-h", "--help", "help"))]
struct Verify {
    /// key file: k4.local, k4.public or k4.secret
    #[argh(option)]
    key: PathBuf,
    /// clock skew allowed: 60 (seconds), 2m [60s]
    #[argh(option, default = "\"60\".into()")]
    leeway: String,
    /// the token (`-` reads it from stdin)
    #[argh(positional)]
    token: String,
}

#[cfg(feature = "bench")]
#[derive(FromArgs)]
/// Load-test a WebSocket server: per-connection connect, 101, authenticated and first-echo
/// latency (p50/p90/p99/max), rate and errors by kind; or hold K idle sessions.
#[argh(subcommand, name = "bench", help_triggers("-h", "--help", "help"))]
struct Bench {
    /// the server: ws://host:port/path
    #[argh(positional)]
    url: String,
    /// header, protocol, cookie, message or ticket; several (header,cookie) run one
    /// after another [header]
    #[argh(option, default = "\"header\".into()")]
    method: String,
    /// the token to present on every connection
    #[argh(option)]
    token: Option<String>,
    /// key file (k4.local or k4.secret): mint a fresh token per connection
    #[argh(option)]
    key: Option<PathBuf>,
    /// sub of minted tokens [bench]
    #[argh(option, default = "\"bench\".into()")]
    sub: String,
    /// cookie name for --method cookie [wsgate_token]
    #[argh(option, default = "\"wsgate_token\".into()")]
    cookie: String,
    /// connections to make [1000; no limit with --duration]
    #[argh(option, short = 'n', long = "connections")]
    connections: Option<u64>,
    /// connections open at once [64]
    #[argh(option, short = 'c', long = "concurrency", default = "64")]
    concurrency: usize,
    /// run this long (30s, 2m), or until -n connections if given first
    #[argh(option)]
    duration: Option<String>,
    /// hold mode: open this many authenticated sessions and keep them idle
    #[argh(option)]
    hold: Option<u64>,
    /// hold mode: how long to keep them (10s, 2m) [10s]
    #[argh(option, default = "\"10s\".into()")]
    hold_for: String,
    /// bound on each connection: 10 (seconds), 10s [10s]
    #[argh(option, default = "\"10\".into()")]
    timeout: String,
    /// pid of a server on this machine: report its CPU per round trip and RSS per session
    #[argh(option)]
    server_pid: Option<u32>,
    /// print the report as JSON on stdout
    #[argh(switch)]
    json: bool,
    /// for a wss:// URL: PEM file of CAs to trust besides the system's roots
    #[argh(option)]
    ca: Option<PathBuf>,
    /// draw the latency distribution (a percentile curve per method) to this SVG file
    /// (or .html)
    #[argh(option)]
    plot: Option<PathBuf>,
}

#[cfg(feature = "bench")]
/// `wsgate bench`: exit 0 when every connection succeeded, 1 when some failed,
/// 2 for bad arguments.
fn bench(b: Bench) -> ExitCode {
    use cli::bench::{BenchMethod, Credentials, Options};
    let prepared = (|| -> Result<(Options, Vec<BenchMethod>), String> {
        let url = cli::bench::parse_url(&b.url).map_err(|e| e.to_string())?;
        let methods = b
            .method
            .split(',')
            .map(|m| m.trim().parse::<BenchMethod>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--method: {e}"))?;
        let credentials = match (b.token, &b.key) {
            (Some(t), None) => Credentials::Token(t.trim().to_owned()),
            (None, Some(path)) => {
                Credentials::Mint(load_key_file(path).map_err(|e| e.to_string())?)
            }
            _ => return Err("--token T or --key F: give exactly one".into()),
        };
        let secs = |flag: &str, v: &str| {
            seconds(flag, v, 1)
                .map(std::time::Duration::from_secs)
                .map_err(|e| e.to_string())
        };
        let mut o = Options::new(url, credentials);
        o.sub = b.sub;
        o.cookie = b.cookie;
        // With --duration alone, the duration decides when to stop.
        o.connections = b.connections.unwrap_or(match b.duration {
            Some(_) => u64::MAX,
            None => 1000,
        });
        o.concurrency = b.concurrency;
        o.duration = b
            .duration
            .as_deref()
            .map(|d| secs("--duration", d))
            .transpose()?;
        o.hold = b.hold;
        o.hold_for = secs("--hold-for", &b.hold_for)?;
        o.timeout = secs("--timeout", &b.timeout)?;
        o.server_pid = b.server_pid;
        #[cfg(feature = "tls")]
        {
            o.ca = b.ca;
        }
        #[cfg(not(feature = "tls"))]
        if b.ca.is_some() {
            return Err("--ca: this build has no TLS (feature \"tls\")".into());
        }
        Ok((o, methods))
    })();
    let (mut opts, methods) = match prepared {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut reports = Vec::new();
    for method in methods {
        opts.method = method;
        match cli::bench::run(&opts) {
            Ok(report) => {
                if !b.json {
                    if !reports.is_empty() {
                        println!();
                    }
                    print!("{}", report.to_text());
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if b.json {
        // One method: its report, as always; several: an array of them.
        match reports.as_slice() {
            [one] => println!("{}", one.to_json()),
            all => println!(
                "[{}]",
                all.iter()
                    .map(|r| r.to_json())
                    .collect::<Vec<_>>()
                    .join(",\n")
            ),
        }
    }
    if let Some(path) = &b.plot {
        let html = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
        let doc = if html {
            cli::bench::plot::html(&reports)
        } else {
            cli::bench::plot::svg(&reports)
        };
        if let Err(e) = std::fs::write(path, doc) {
            eprintln!("error: --plot {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if reports.iter().all(|r| r.failed == 0 && r.ok > 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn main() -> ExitCode {
    // Log lines wait for the end of an executor turn (`docs/performance.md#system-calls`):
    // write those before a panic is reported (the router build aborts on panic).
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        wsgate::internal::flush_log_for_panic();
        report(info);
    }));
    let args: Vec<String> = std::env::args().collect();
    let name = Path::new(args.first().map(String::as_str).unwrap_or("wsgate"))
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("wsgate")
        .to_owned();
    let mut rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    if matches!(rest.as_slice(), ["-V" | "--version"]) {
        println!("wsgate {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // argh takes every argument starting with `-` for an option, so the `-` of
    // `verify --key F -` (token on stdin) is passed on after `--`.
    if rest.first() == Some(&"verify") && !rest.contains(&"--") {
        if let Some(i) = (1..rest.len()).find(|&i| rest[i] == "-" && !rest[i - 1].starts_with("--"))
        {
            rest.remove(i);
            rest.extend(["--", "-"]);
        }
    }
    let cli = match Cli::from_args(&[&name], &rest) {
        Ok(c) => c,
        Err(early) => {
            if early.status.is_ok() {
                print!("{}", early.output);
                return ExitCode::SUCCESS;
            }
            let sub = rest
                .iter()
                .find(|a| SUBCOMMANDS.contains(a))
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            eprintln!(
                "error: {} (see `{name}{sub} --help`)",
                usage_error(&early.output)
            );
            return ExitCode::from(2);
        }
    };
    let mut from_env = Vec::new();
    let cli = match cli.cmd {
        Cmd::Serve(_) => match serve_env(&name, &rest, |v| std::env::var(v).ok()) {
            Ok((cli, vars)) => {
                from_env = vars;
                cli
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => cli,
    };
    let result = match cli.cmd {
        Cmd::Serve(s) => serve(s).map_err(|e| name_variable(e, &from_env)),
        Cmd::Keygen(k) => keygen(k),
        Cmd::Issue(i) => issue(i),
        Cmd::Verify(v) => return verify(v),
        Cmd::Revoke(r) => return revoke(r),
        #[cfg(feature = "bench")]
        Cmd::Bench(b) => return bench(b),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `serve` with its options from the environment
/// (`docs/operations.md#from-the-environment`): for each option of `serve --help`'s usage
/// line, `WSGATE_` + its name in capitals (`-` as `_`), unless the option is on the command
/// line. A repeatable option takes a list (commas or newlines), a switch `1`/`true` or
/// `0`/`false`; an empty variable is unset. `--key` is left out: `WSGATE_KEY` holds the key
/// text, read by `serve` itself. The values are passed to argh as arguments, so each is
/// checked as the same flag would be. Returns the parsed command line and, for errors found
/// later, the options taken from the environment with their variables.
fn serve_env(
    name: &str,
    args: &[&str],
    var: impl Fn(&str) -> Option<String>,
) -> Result<(Cli, Vec<(String, String)>), String> {
    let usage = match Cli::from_args(&[name], &["serve", "--help"]) {
        Err(e) => e.output,
        Ok(_) => String::new(),
    };
    let usage = usage.lines().next().unwrap_or_default();
    let at = args.iter().position(|a| *a == "serve").unwrap_or(0) + 1;
    let mut injected = Vec::new();
    let mut vars = Vec::new();
    // `[--listen <listen>]`, `[--key <key...>]`, `[--refresh]`
    for spec in usage.split('[').skip(1) {
        let spec = spec.split(']').next().unwrap_or_default();
        let mut words = spec.split(' ');
        let flag = words.next().unwrap_or_default();
        let Some(option) = flag.strip_prefix("--") else {
            continue;
        };
        let value_kind = words.next();
        if option == "key" || args[at..].contains(&flag) {
            continue;
        }
        let variable = format!("WSGATE_{}", option.to_ascii_uppercase().replace('-', "_"));
        let Some(value) = var(&variable).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let mut these: Vec<String> = Vec::new();
        match value_kind {
            None => match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => these.push(flag.into()),
                "0" | "false" | "no" | "off" => {}
                _ => return Err(format!("{variable}: expected 1/true or 0/false")),
            },
            Some(kind) if kind.ends_with("...>") => {
                for item in value.replace('\n', ",").split(',').map(str::trim) {
                    if !item.is_empty() {
                        these.extend([flag.into(), item.into()]);
                    }
                }
            }
            Some(_) => these.extend([flag.into(), value]),
        }
        // Checked alone, so that an error names the variable.
        let alone: Vec<&str> = std::iter::once("serve")
            .chain(these.iter().map(String::as_str))
            .collect();
        if let Err(e) = Cli::from_args(&[name], &alone) {
            let line = usage_error(&e.output);
            let why = line.split_once(": ").map_or(line.as_str(), |(_, w)| w);
            return Err(format!("{variable}: {why}"));
        }
        injected.extend(these);
        vars.push((flag.to_owned(), variable));
    }
    let all: Vec<&str> = args[..at]
        .iter()
        .copied()
        .chain(injected.iter().map(String::as_str))
        .chain(args[at..].iter().copied())
        .collect();
    Cli::from_args(&[name], &all)
        .map(|cli| (cli, vars))
        .map_err(|e| usage_error(&e.output))
}

/// A `serve` error about an option that came from the environment names its
/// variable: `WSGATE_LISTEN: …`, not `--listen …: …`.
fn name_variable(mut e: ConfigError, from_env: &[(String, String)]) -> ConfigError {
    for (flag, variable) in from_env {
        let rest = e.what.strip_prefix(flag.as_str());
        if rest.is_some_and(|r| r.is_empty() || r.starts_with(' ')) {
            e.what = variable.clone();
        }
    }
    e
}

const SUBCOMMANDS: [&str; 6] = ["serve", "keygen", "issue", "verify", "revoke", "bench"];

/// argh's usage error as one line that keeps its list: `missing option: --sub`,
/// `missing subcommand, one of: serve, keygen, …`, `--max-message big: not a number`.
fn usage_error(output: &str) -> String {
    let mut line = String::new();
    for l in output.lines().filter(|l| !l.trim().is_empty()) {
        let t = l.trim();
        if l.starts_with(' ') {
            // An indented name listed under the heading before it.
            if t != "help" {
                line.push_str(if line.ends_with(':') { " " } else { ", " });
                line.push_str(t);
            }
            continue;
        }
        if !line.is_empty() {
            line.push_str("; ");
        }
        if let Some(rest) = t.strip_prefix("Error parsing option '") {
            // `Error parsing option '--x' with value 'v': why`
            let (opt, rest) = rest.split_once("' with value '").unwrap_or((rest, ""));
            let (value, why) = rest.rsplit_once("': ").unwrap_or((rest, ""));
            let why = if why.contains("digit") || why.contains("empty") {
                "not a whole number"
            } else {
                why
            };
            for part in [opt, " ", value, ": ", why] {
                line.push_str(part);
            }
        } else if let Some(opt) = t.strip_prefix("No value provided for option '") {
            line.push_str(opt.trim_end_matches(['\'', '.']));
            line.push_str(": needs a value");
        } else if let Some(arg) = t.strip_prefix("Unrecognized argument: ") {
            line.push_str("unknown argument ");
            line.push_str(arg);
            // Options of features this build was made without.
            let feature = match arg {
                "--redis" | "--redis-prefix" => "redis",
                "--trusted-proxy" | "--proxy-protocol" => "load-balancer",
                _ => "",
            };
            if !feature.is_empty() {
                for part in [
                    " (this wsgate is built without the `",
                    feature,
                    "` feature)",
                ] {
                    line.push_str(part);
                }
            }
        } else {
            line.push_str(match t {
                "Required options not provided:" => "missing option:",
                "Required positional arguments not provided:" => "missing argument:",
                "One of the following subcommands must be present:" => {
                    "missing subcommand, one of:"
                }
                other => other,
            });
        }
    }
    line
}

/// A duration option: `5` (seconds) or `5s`, `15m`, `2h`, `1d`; at least `min`
/// seconds, at most ten years.
fn seconds(option: &str, value: &str, min: u64) -> Result<u64, ConfigError> {
    let secs = parse_duration(value).ok_or_else(|| {
        ConfigError::new(
            option,
            format!("`{value}` is not a duration (5, 5s, 15m, 2h or 1d)"),
        )
    })?;
    if secs > MAX_SECONDS {
        return Err(ConfigError::new(
            option,
            format!("`{value}` is more than ten years"),
        ));
    }
    if secs < min {
        return Err(ConfigError::new(option, format!("must be at least {min}s")));
    }
    Ok(secs)
}

fn serve(s: Serve) -> Result<(), ConfigError> {
    let level: Level = s
        .log_level
        .parse()
        .map_err(|e| ConfigError::new("--log-level", e))?;
    wsgate::set_log_level(level);
    let format: wsgate::LogFormat = s
        .log_format
        .parse()
        .map_err(|e| ConfigError::new("--log-format", e))?;
    wsgate::set_log_format(format);
    let mut config = Config::default();
    config.listen = parse_listen(&s.listen)?;
    let env_key = if s.key.is_empty() {
        std::env::var("WSGATE_KEY").ok()
    } else {
        None
    };
    config.keys = load_keys(&s.key, env_key.as_deref())?;
    config.methods = s
        .auth
        .parse::<Methods>()
        .map_err(|e| ConfigError::new(format!("--auth {}", s.auth), e))?;
    config.cookie_name = s.cookie.clone();
    config.allowed_origins = s
        .allow_origin
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<_, _>>()?;
    // Zero, where it makes no sense, is refused by `Config::validate`.
    config.auth_timeout =
        std::time::Duration::from_secs(seconds("--auth-timeout", &s.auth_timeout, 0)?);
    let ticket_ttl = seconds("--ticket-ttl", &s.ticket_ttl, 0)?;
    let ping_interval = seconds("--ping-interval", &s.ping_interval, 0)?;
    config.audience = s.audience.clone();
    config.issuer = s.issuer.clone();
    config.leeway = seconds("--leeway", &s.leeway, 0)?;
    config.max_connections = s.max_connections;
    config.threads = s.threads;
    config.max_message = s.max_message;
    config.path = s.path.clone();
    if s.upstream.is_some() && s.exec.is_some() {
        return Err(ConfigError::new("--upstream/--exec", "choose one"));
    }
    config.ticket_ttl = ticket_ttl;
    config.ticket_capacity = s.ticket_capacity.max(1);
    config.static_dir = s.static_dir.clone();
    config.ping_interval = std::time::Duration::from_secs(ping_interval);
    config.refresh = s.refresh;
    config.refresh_notice =
        std::time::Duration::from_secs(seconds("--refresh-notice", &s.refresh_notice, 0)?);
    config.admin_listen = s
        .admin_listen
        .as_deref()
        .map(|a| parse_addr("--admin-listen", a))
        .transpose()?;
    config.revoke_ttl = seconds("--revoke-ttl", &s.revoke_ttl, 0)?;
    config.revoke_capacity = s.revoke_capacity;
    cluster_options(&s, &mut config)?;
    let mut demo_token = None;
    if config.keys.is_empty() {
        let key = Key::generate_local().map_err(|e| ConfigError::new("ephemeral key", e))?;
        let claims = wsgate::claims_json("demo", unix_now(), 3600, None, None, None, &[]);
        demo_token = Some(
            key.issue(&claims)
                .map_err(|e| ConfigError::new("demo token", e))?,
        );
        config.keys.push(key);
    }
    // The checks of values (zero, cookie name, path, …) are the library's.
    config.validate().map_err(as_flag)?;
    let key_files = s.key.clone();
    let tls = tls_files(s.tls_cert.as_deref(), s.tls_key.as_deref())?;
    #[cfg(feature = "tls")]
    {
        config.tls = tls.clone();
    }
    let handler = handler_of(&s)?;

    run(config, handler, demo_token, key_files, tls)
}

/// The options for several nodes: behind a load balancer (`--trusted-proxy`,
/// `--proxy-protocol`) and sharing state through Redis (`--redis`, `--redis-prefix`).
#[cfg_attr(
    not(any(feature = "load-balancer", feature = "redis")),
    allow(unused_variables, clippy::unnecessary_wraps)
)]
fn cluster_options(s: &Serve, config: &mut Config) -> Result<(), ConfigError> {
    #[cfg(feature = "load-balancer")]
    {
        let ranges = s
            .trusted_proxy
            .iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|r| {
                r.parse()
                    .map_err(|e| ConfigError::new(format!("--trusted-proxy {r}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        config.trusted_proxies = wsgate::TrustedProxies::new(ranges);
        config.proxy_protocol = s.proxy_protocol;
        if s.proxy_protocol && config.trusted_proxies.is_empty() {
            wsgate::log_event!(
                Level::Warn,
                "config",
                "detail" = "proxy_protocol_from_any_peer"
            );
        }
    }
    #[cfg(feature = "redis")]
    {
        config.redis = s
            .redis
            .as_deref()
            .map(|u| u.parse().map_err(|e| ConfigError::new("--redis", e)))
            .transpose()?;
        config.redis_prefix = s.redis_prefix.clone();
        if config.redis.is_some()
            && !config.keys.is_empty()
            && !config
                .keys
                .iter()
                .any(|k| k.purpose() == wsgate::Purpose::Local)
        {
            wsgate::log_event!(
                Level::Warn,
                "config",
                "detail" = "no_local_key_tickets_work_on_this_node_only"
            );
        }
    }
    Ok(())
}

/// What each session runs: `--upstream`, `--exec` (with `--passenv`) or echo. The
/// constructors check their argument; their errors name the setting, shown as the flag.
fn handler_of(s: &Serve) -> Result<Handler, ConfigError> {
    let passenv: Vec<&str> = s
        .passenv
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    // What sessions do is the handler's alone (`Config` has no say).
    let handler = match (&s.upstream, &s.exec) {
        (Some(url), _) => upstream_handler(url, s.upstream_ca.as_deref())?,
        (None, Some(cmd)) => Handler::exec_passing(cmd, &passenv).map_err(as_flag)?,
        (None, None) => Handler::echo(),
    };
    if !passenv.is_empty() && s.exec.is_none() {
        return Err(ConfigError::new("--passenv", "needs --exec"));
    }
    if s.upstream_ca.is_some() && s.upstream.is_none() {
        return Err(ConfigError::new(
            "--upstream-ca",
            "needs --upstream wss://…",
        ));
    }

    Ok(handler)
}

/// Binds and serves until SIGINT or SIGTERM (SIGHUP reloads); prints the demo token
/// of an ephemeral key once listening.
fn run(
    config: Config,
    handler: Handler,
    demo_token: Option<String>,
    key_files: Vec<PathBuf>,
    tls: Reloadable,
) -> Result<(), ConfigError> {
    let is_tls = config.is_tls();
    smol::block_on(async {
        let server = Server::bind(config, handler).await.map_err(bind_error)?;
        if let Some(token) = demo_token {
            let addr = server
                .local_addr()
                .map_err(|e| ConfigError::new("serve", e))?;
            print_demo(&token, addr, is_tls);
        }
        let handle = server.handle();
        // Taken over now, before the server listens: from then on a SIGTERM is a
        // graceful shutdown. Watched by a task of the server's executor: raced with
        // `run`, the stream was polled at every wake of the thread, and async-signal
        // reads its pipe at every poll (a `recvfrom` for nothing per turn of the event
        // loop, 4–5 a round trip with one client at a time).
        use async_signal::Signal;
        let signals = async_signal::Signals::new([Signal::Int, Signal::Term, Signal::Hup]);
        let watch = async move {
            let Ok(mut signals) = signals else {
                return;
            };
            use smol::stream::StreamExt as _;
            while let Some(signal) = signals.next().await {
                match signal {
                    Ok(Signal::Hup) => reload(&handle, &key_files, &tls).await,
                    _ => {
                        handle.shutdown();
                        return;
                    }
                }
            }
        };
        server
            .run_beside(watch)
            .await
            .map_err(|e| ConfigError::new("serve", e))
    })
}

/// What SIGHUP reloads: the TLS certificate and key. Without the `tls` feature there
/// is nothing (yet), and `--tls-cert` is refused.
#[cfg(feature = "tls")]
type Reloadable = Option<std::sync::Arc<wsgate::Tls>>;
#[cfg(not(feature = "tls"))]
type Reloadable = Option<std::convert::Infallible>;

#[cfg(not(feature = "tls"))]
const NO_TLS: &str = "this build has no TLS (feature \"tls\")";

/// `--tls-cert` and `--tls-key`: both or neither.
fn tls_files(cert: Option<&Path>, key: Option<&Path>) -> Result<Reloadable, ConfigError> {
    #[cfg(feature = "tls")]
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(std::sync::Arc::new(
            wsgate::Tls::load(c, k).map_err(as_flag)?,
        ))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new("--tls-cert", "needs --tls-key too")),
        (None, Some(_)) => Err(ConfigError::new(
            "--tls-cert",
            "missing (--tls-key needs it)",
        )),
    }
    #[cfg(not(feature = "tls"))]
    match (cert, key) {
        (None, None) => Ok(None),
        _ => Err(ConfigError::new("--tls-cert", NO_TLS)),
    }
}

/// The proxy handler: a `wss://` upstream verified against the system's roots plus
/// `--upstream-ca`.
fn upstream_handler(url: &str, ca: Option<&Path>) -> Result<Handler, ConfigError> {
    #[cfg(feature = "tls")]
    {
        Handler::upstream_with_ca(url, ca).map_err(as_flag)
    }
    #[cfg(not(feature = "tls"))]
    {
        if ca.is_some() {
            return Err(ConfigError::new("--upstream-ca", NO_TLS));
        }
        Handler::upstream(url).map_err(as_flag)
    }
}

/// SIGHUP: re-reads every `--key` file and the TLS files, all or nothing: each is
/// read and checked first, then all take effect for new handshakes at once; a
/// failure changes nothing and is logged. Live sessions go on.
async fn reload(handle: &wsgate::ServerHandle, key_files: &[PathBuf], tls: &Reloadable) {
    let keys = if key_files.is_empty() {
        None
    } else {
        match load_keys(key_files, None) {
            Ok(k) => Some(k),
            Err(e) => {
                wsgate::log_event!(Level::Error, "reload", "reason" = e);
                return;
            }
        }
    };
    #[cfg(feature = "tls")]
    let prepared = match tls.clone() {
        Some(tls) => match smol::unblock(move || tls.prepare()).await {
            Ok(p) => Some(p),
            Err(e) => {
                wsgate::log_event!(Level::Error, "reload", "reason" = as_flag(e));
                return;
            }
        },
        None => None,
    };
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    let n = keys.as_ref().map_or(0, Vec::len);
    if let Some(keys) = keys {
        if let Err(e) = handle.set_keys(keys) {
            wsgate::log_event!(
                Level::Error,
                "reload",
                "reason" = ConfigError::new("--key", e)
            );
            return;
        }
    }
    #[cfg(feature = "tls")]
    let tls_state = match (tls, prepared) {
        (Some(t), Some(p)) => {
            t.install(p);
            "ok"
        }
        _ => "off",
    };
    #[cfg(not(feature = "tls"))]
    let tls_state = "off";
    if key_files.is_empty() {
        wsgate::log_event!(
            Level::Info,
            "reload",
            "keys" = "unchanged",
            "tls" = tls_state
        );
    } else {
        wsgate::log_event!(Level::Info, "reload", "keys" = n, "tls" = tls_state);
    }
}

/// `wsgate revoke`: exit 0 with the answer's JSON on stdout, or `error: …` and 1.
fn revoke(r: Revoke) -> ExitCode {
    let body = match (&r.sub, &r.jti) {
        (Some(s), None) => format!(r#"{{"sub":{}}}"#, json_string(s)),
        (None, Some(j)) => format!(r#"{{"jti":{}}}"#, json_string(j)),
        _ => {
            eprintln!("error: --sub S or --jti ID: give exactly one (see `wsgate revoke --help`)");
            return ExitCode::from(2);
        }
    };
    match post_revoke(&r.admin, &body) {
        Ok((200, answer)) => {
            println!("{}", answer.trim_end());
            ExitCode::SUCCESS
        }
        Ok((status, answer)) => {
            eprintln!("error: --admin {}: {status} {}", r.admin, answer.trim_end());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: --admin {}: {e}", r.admin);
            ExitCode::from(1)
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `POST /revoke` with `body` to `addr`: the status and the answer's body.
fn post_revoke(addr: &str, body: &str) -> Result<(u16, String), String> {
    use std::io::Read as _;
    use std::net::ToSocketAddrs as _;
    let timeout = std::time::Duration::from_secs(10);
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("not an address: {e}"))?
        .next()
        .ok_or("not an address")?;
    let mut s = std::net::TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let request = format!(
        "POST /revoke HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut answer = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut answer)
        .map_err(|e| format!("no answer: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP answer")?;
    Ok((status, body.to_owned()))
}

/// The key-less `serve` banner: the demo token is the one token wsgate ever prints
/// (`docs/operations.md#logs`), with connect examples for the address actually bound.
fn print_demo(token: &str, addr: std::net::SocketAddr, tls: bool) {
    let url = format!("{}://{addr}/", if tls { "wss" } else { "ws" });
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "wsgate: no --key and no WSGATE_KEY: using an ephemeral key (tokens die with this process)\n\
         demo token (sub=demo, valid 1 h):\n{token}\n\
         connect:  websocat -H='Authorization: Bearer {token}' {url}\n\
         browser:  new WebSocket('{url}', ['wsgate', '{token}'])"
    );
}

fn write_secret_file(path: &Path, content: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let what = format!("--out {}", path.display());
    // An existing key is never overwritten; an existing empty file (made by mktemp,
    // say) is filled, and its mode set to 0600 before the key is written.
    let empty = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if empty {
        options.truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            ConfigError::new(&what, "already exists and is not empty (not overwritten)")
        }
        _ => ConfigError::new(&what, wsgate::internal::io_reason(&e)),
    })?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| f.write_all(content.as_bytes()))
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|e| ConfigError::new(&what, e))
}

fn keygen(k: Keygen) -> Result<(), ConfigError> {
    let key = if k.public {
        Key::generate_secret()
    } else {
        Key::generate_local()
    }
    .map_err(|e| ConfigError::new("keygen", e))?;
    let secret = key.to_paserk();
    let public = key.public_key().map(|p| p.to_paserk());
    match k.out {
        Some(path) => {
            if let Some(public) = &public {
                let pub_path = PathBuf::from(format!("{}.pub", path.display()));
                if std::fs::metadata(&pub_path).is_ok_and(|m| m.len() > 0) {
                    return Err(ConfigError::new(
                        format!("--out {}", pub_path.display()),
                        "already exists and is not empty (not overwritten)",
                    ));
                }
                write_secret_file(&path, &secret)?;
                write_secret_file(&pub_path, public)?;
                eprintln!(
                    "wrote {} (secret) and {} (public), key id {}",
                    path.display(),
                    pub_path.display(),
                    key.id()
                );
            } else {
                write_secret_file(&path, &secret)?;
                eprintln!("wrote {}, key id {}", path.display(), key.id());
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", secret.as_str());
            if let Some(public) = &public {
                let _ = writeln!(out, "{}", public.as_str());
            }
        }
    }
    Ok(())
}

/// Bound on durations given in seconds: ten years (a larger value is a typo, and
/// timestamps must stay within RFC 3339's four-digit years).
const MAX_SECONDS: u64 = 10 * 365 * 86_400;

const RESERVED: [&str; 7] = ["sub", "exp", "iat", "nbf", "aud", "iss", "jti"];

fn issue(i: Issue) -> Result<(), ConfigError> {
    let key = load_key_file(&i.key)?;
    if !key.can_issue() {
        return Err(ConfigError::new(
            format!("--key {}", i.key.display()),
            "a k4.public key cannot issue tokens (use the k4.secret key)",
        ));
    }
    let ttl = seconds("--ttl", &i.ttl, 1)?;
    // A token the gate would refuse is not printed: the sub is an identity (never
    // empty, no control character), and an empty aud, iss or jti names nothing.
    for (option, value) in [
        ("--sub", Some(&i.sub)),
        ("--aud", i.aud.as_ref()),
        ("--iss", i.iss.as_ref()),
        ("--jti", i.jti.as_ref()),
    ] {
        if value.is_some_and(|v| v.is_empty() || v.chars().any(char::is_control)) {
            return Err(ConfigError::new(
                option,
                "must not be empty nor hold control characters",
            ));
        }
    }
    let mut extra = Vec::with_capacity(i.claim.len());
    for c in &i.claim {
        let (k, v) = c
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ConfigError::new(format!("--claim {c}"), "expected k=v"))?;
        if RESERVED.contains(&k) || k == wsgate::internal::TICKET_CLAIM {
            return Err(ConfigError::new(
                format!("--claim {c}"),
                format!("`{k}` is set by its own option"),
            ));
        }
        extra.push((k.to_owned(), v.to_owned()));
    }
    let mut claims = wsgate::claims_json(
        &i.sub,
        unix_now(),
        ttl.min(i64::MAX as u64) as i64,
        i.aud.as_deref(),
        i.iss.as_deref(),
        i.jti.as_deref(),
        &extra,
    );
    // Typed claims are spliced into the object as given, once checked to be one JSON
    // value (`IgnoredAny`: no `serde_json::Value` parser in the binary, which is
    // size-bound).
    let mut seen: Vec<&str> = extra.iter().map(|(k, _)| k.as_str()).collect();
    for c in &i.claim_json {
        let what = || format!("--claim-json {c}");
        let (k, v) = c
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ConfigError::new(what(), "expected k=<JSON value>"))?;
        if RESERVED.contains(&k) || k == wsgate::internal::TICKET_CLAIM {
            return Err(ConfigError::new(
                what(),
                format!("`{k}` is set by its own option"),
            ));
        }
        if seen.contains(&k) {
            return Err(ConfigError::new(what(), format!("`{k}` is given twice")));
        }
        seen.push(k);
        serde_json::from_str::<serde::de::IgnoredAny>(v)
            .map_err(|_| ConfigError::new(what(), "not a JSON value (strings need quotes)"))?;
        claims.pop(); // the object's closing `}`
        claims.push(',');
        claims.push_str(&serde_json::to_string(k).unwrap_or_default());
        claims.push(':');
        claims.push_str(v.trim());
        claims.push('}');
    }
    let token = key
        .issue(&claims)
        .map_err(|e| ConfigError::new("issue", e))?;
    println!("{token}");
    Ok(())
}

fn verify(v: Verify) -> ExitCode {
    let key = match load_key_file(&v.key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let token = if v.token == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            eprintln!("error: stdin: {e}");
            return ExitCode::from(2);
        }
        s.trim().to_owned()
    } else {
        v.token.trim().to_owned()
    };
    let leeway = match seconds("--leeway", &v.leeway, 0) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let verifier = Verifier::new(vec![key], ClaimRules::new(leeway as i64));
    match verifier.verify(UntrustedToken(&token), unix_now()) {
        Ok(claims) => {
            println!("{}", claims.json);
            if claims.exp < unix_now() {
                eprintln!(
                    "note: exp {} has passed (within the leeway)",
                    Rfc3339(claims.exp)
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid: {e}");
            ExitCode::from(1)
        }
    }
}
