//! Reading the values of options: key files and `WSGATE_KEY`, addresses, origins; and
//! naming the library's settings in errors by the flags users give.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wsgate::internal::io_reason;
use wsgate::{ConfigError, Key, Purpose};

/// A library error names the setting at fault as the library does (`max_connections
/// 0: …`, `upstream ws://…: …`, see [`ConfigError::what`]); users gave a flag, so it
/// is shown as that flag (`--max-connections`, `--upstream ws://…`). `what` is the
/// setting, then a space and its value when it has one.
pub fn as_flag(mut e: ConfigError) -> ConfigError {
    let end = e.what.find(' ').unwrap_or(e.what.len());
    let (setting, value) = e.what.split_at(end);
    let mut flag = String::from("--");
    // The settings whose flag is not the field's name.
    match setting {
        "keys" => flag.push_str("key"),
        "cookie_name" => flag.push_str("cookie"),
        "static_dir" => flag.push_str("static"),
        s => flag.push_str(&s.replace('_', "-")),
    }
    flag.push_str(value);
    e.what = flag;
    e
}

/// An error of [`wsgate::Server::bind`] (`listen 127.0.0.1:80: cannot bind: …`) as
/// `serve: --listen 127.0.0.1:80: cannot bind: …`.
pub fn bind_error(e: wsgate::Error) -> ConfigError {
    let e = match e {
        wsgate::Error::Config(e) => e,
        // Each is `setting value: why`, as a `ConfigError` is.
        e => {
            let text = e.to_string();
            let (what, why) = text.split_once(": ").unwrap_or(("serve", &text));
            ConfigError::new(what, why)
        }
    };
    ConfigError::new("serve", as_flag(e))
}

/// Reads a PASERK key file (trailing whitespace allowed). The error names the file
/// and never shows its content.
pub fn load_key_file(path: &Path) -> Result<Key, ConfigError> {
    let what = format!("--key {}", path.display());
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(&what, io_reason(&e)))?,
    );
    Key::from_paserk(&text).map_err(|e| ConfigError::new(what, e))
}

/// Reads the keys of `serve`: every `--key` file, or else `WSGATE_KEY`. A gate only
/// verifies: a `k4.secret` (Ed25519 signing) key is refused, since a gate holding it
/// could mint tokens, which is what `v4.public` keeps it from doing.
pub fn load_keys(paths: &[PathBuf], env: Option<&str>) -> Result<Vec<Key>, ConfigError> {
    const SIGNING: &str =
        "a k4.secret (signing) key: the server only verifies, give it the public key";
    if !paths.is_empty() {
        return paths
            .iter()
            .map(|p| {
                let key = load_key_file(p)?;
                if key.purpose() == Purpose::Public && key.can_issue() {
                    return Err(ConfigError::new(
                        format!("--key {}", p.display()),
                        format_args!(
                            "{SIGNING} ({}.pub, from `wsgate keygen --public`)",
                            p.display()
                        ),
                    ));
                }
                Ok(key)
            })
            .collect();
    }
    match env {
        // It holds the key text; a path there is a common slip (the value is not shown:
        // it may be a key).
        Some(v) if !v.trim_start().starts_with("k4.") && v.contains('/') => Err(ConfigError::new(
            "WSGATE_KEY",
            "wants the key text, not a path: use --key FILE",
        )),
        Some(v) => {
            let key = Key::from_paserk(v).map_err(|e| ConfigError::new("WSGATE_KEY", e))?;
            if key.purpose() == Purpose::Public && key.can_issue() {
                return Err(ConfigError::new(
                    "WSGATE_KEY",
                    format_args!("{SIGNING} (k4.public.…)"),
                ));
            }
            Ok(vec![key])
        }
        None => Ok(Vec::new()),
    }
}

/// Reads a `--listen` value: `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080` (the
/// name is resolved now; an IPv4 address is preferred), or `:8080` (every IPv4
/// interface, `0.0.0.0`).
pub fn parse_listen(v: &str) -> Result<SocketAddr, ConfigError> {
    parse_addr("--listen", v)
}

/// A socket address given to `option`, with the forms of [`parse_listen`].
pub fn parse_addr(option: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    let err = |why: &str| ConfigError::new(format!("{option} {v}"), why);
    if let Ok(a) = v.parse() {
        return Ok(a);
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(err("expected HOST:PORT, :PORT or [IPv6]:PORT"));
    };
    let port = match wsgate::head::parse_port(port) {
        Some(p) => p,
        None if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(err("port out of range (0-65535)"));
        }
        None => return Err(err("expected a port number after the last `:`")),
    };
    if host.is_empty() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if host.starts_with('[') || host.contains(':') {
        return Err(err("not an IPv6 address ([::1]:8080)"));
    }
    // The (host, port) form: the one the upstream dialler links in already.
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|_| err("cannot resolve the host name"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| err("cannot resolve the host name"))
}

/// Normalises an `--allow-origin` value: `scheme://host[:port]`, lower-case, no `/`.
pub fn parse_origin(o: &str) -> Result<String, ConfigError> {
    let t = o.trim().trim_end_matches('/');
    let ok = t.split_once("://").is_some_and(|(s, rest)| {
        matches!(s.to_ascii_lowercase().as_str(), "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', ' '])
    }) && wsgate::internal::origin_parts(t).is_some();
    if !ok {
        return Err(ConfigError::new(
            format!("--allow-origin {o}"),
            "expected an origin like https://app.example.com",
        ));
    }
    Ok(t.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_ports_are_digits_only() {
        assert_eq!(
            parse_listen(":8080").unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 8080))
        );
        assert!(parse_listen(":+8080").is_err());
        assert!(parse_listen("localhost:+8080").is_err());
        let e = parse_listen(":65536").unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn library_settings_become_flags() {
        let flag = |what: &str| as_flag(ConfigError::new(what, "why")).to_string();
        assert_eq!(flag("max_connections"), "--max-connections: why");
        assert_eq!(flag("path ws"), "--path ws: why");
        assert_eq!(flag("cookie_name a b"), "--cookie a b: why");
        assert_eq!(flag("static_dir /x_y"), "--static /x_y: why");
        assert_eq!(flag("keys"), "--key: why");
        assert_eq!(flag("upstream ws://h/a_b"), "--upstream ws://h/a_b: why");
        assert_eq!(flag("tls_cert /etc/c.pem"), "--tls-cert /etc/c.pem: why");
    }
}
