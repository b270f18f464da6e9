//! The HTTP endpoints on the WebSocket listener (`docs/operations.md#endpoints`):
//! `/healthz`, `/metrics`, `POST /ticket` with CORS, and `--static` files.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use crate::auth::TicketRefusal;
use crate::config::Config;
use crate::head::{Request, percent_decode, response, text_response};
use crate::log::Level;
use crate::metrics::TicketEvent;
use crate::state::{Answer, Shared};
use crate::time::unix_now;

/// Largest file `--static` serves (device pages are small; this bounds memory).
pub const MAX_STATIC_FILE: u64 = 8 << 20;

/// Whether a non-upgrade request is ours to answer (else 426).
pub fn is_endpoint(req: &Request<'_>, config: &Config) -> bool {
    matches!(req.path(), "/healthz" | "/metrics" | "/ticket")
        || (config.static_dir.is_some() && matches!(req.method, "GET" | "HEAD"))
}

/// Answers `/healthz` and `/metrics` (on the main and the operators' listener);
/// `None` for any other path.
pub(crate) fn health_or_metrics(shared: &Shared, req: &Request<'_>) -> Option<Vec<u8>> {
    let head_only = req.method == "HEAD";
    if req.path() == "/healthz" && matches!(req.method, "GET" | "HEAD") && !shared.redis_up() {
        return Some(response(
            503,
            &[
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Retry-After", "1"),
            ],
            b"redis unavailable\n",
            !head_only,
        ));
    }
    let (content_type, body) = match req.path() {
        "/healthz" => ("text/plain; charset=utf-8", "ok\n".to_owned()),
        "/metrics" => (
            "text/plain; version=0.0.4; charset=utf-8",
            shared.metrics.render(),
        ),
        _ => return None,
    };
    Some(match req.method {
        "GET" | "HEAD" => response(
            200,
            &[("Content-Type", content_type)],
            body.as_bytes(),
            !head_only,
        ),
        _ => method_not_allowed("GET, HEAD"),
    })
}

/// Answers an endpoint request with a complete response.
pub(crate) async fn serve(shared: &Shared, req: &Request<'_>, peer: SocketAddr) -> Vec<u8> {
    let head_only = req.method == "HEAD";
    if let Some(answer) = health_or_metrics(shared, req) {
        return answer;
    }
    match req.path() {
        "/ticket" => ticket(shared, req, peer),
        _ => match &shared.config.static_dir {
            Some(dir) => static_file(dir, req, head_only).await,
            None => text_response(404, &[], "not found\n"),
        },
    }
}

fn method_not_allowed(allow: &str) -> Vec<u8> {
    text_response(405, &[("Allow", allow)], "method not allowed\n")
}

fn ticket(shared: &Shared, req: &Request<'_>, peer: SocketAddr) -> Vec<u8> {
    let gate = &shared.gate;
    let origin = req.header("origin").filter(|o| gate.cors_allowed(o));
    let mut cors: Vec<(&str, &str)> = Vec::with_capacity(6);
    if let Some(o) = origin {
        cors.push(("Access-Control-Allow-Origin", o));
        cors.push(("Access-Control-Allow-Credentials", "true"));
    }
    cors.push(("Vary", "Origin"));
    match req.method {
        "OPTIONS" => {
            if origin.is_some() {
                cors.push(("Access-Control-Allow-Methods", "POST, OPTIONS"));
                cors.push((
                    "Access-Control-Allow-Headers",
                    "Authorization, Content-Type",
                ));
                cors.push(("Access-Control-Max-Age", "600"));
            }
            response(204, &cors, b"", false)
        }
        "POST" if !shared.redis_up() => {
            // A ticket could not be redeemed now (and before the first load, no one
            // may be let in).
            crate::log_event!(
                Level::Info,
                "refuse",
                "peer" = peer,
                "status" = 503u16,
                "reason" = "redis_unavailable"
            );
            cors.push(("Retry-After", "1"));
            text_response(503, &cors, "redis unavailable\n")
        }
        "POST" => match gate.mint_ticket(req, peer.ip(), unix_now()) {
            Ok(t) => {
                shared.metrics.ticket(TicketEvent::Issued);
                if crate::log::enabled(Level::Info) {
                    crate::log::Line::new(Level::Info, "ticket")
                        .kv_addr("peer", peer)
                        .kv_str("sub", &t.sub)
                        .emit();
                }
                // Pushed, not `format!`ed: this path is counted (`docs/performance.md`).
                let mut body = String::with_capacity(t.token.len() + 40);
                body.push_str(r#"{"ticket":""#);
                body.push_str(&t.token);
                body.push_str(r#"","expires_in":"#);
                crate::digits::push_decimal(&mut body, t.expires_in.max(0) as u64);
                body.push('}');
                cors.push(("Content-Type", "application/json"));
                cors.push(("Cache-Control", "no-store"));
                response(200, &cors, body.as_bytes(), true)
            }
            Err(TicketRefusal::Unauthorized(r)) => {
                shared.auth_fail(peer, None, r, Answer::Http);
                cors.push(crate::auth::INVALID_TOKEN_CHALLENGE);
                cors.push(("Cache-Control", "no-store"));
                // The handshake's body for the same refusal: `token revoked`,
                // `token expired`, or `invalid token`.
                text_response(401, &cors, &format!("{}\n", r.close().1))
            }
            Err(TicketRefusal::Forbidden) => {
                shared.auth_fail(
                    peer,
                    None,
                    crate::auth::Rejection::OriginNotAllowed,
                    Answer::Http,
                );
                text_response(403, &cors, "forbidden\n")
            }
            Err(TicketRefusal::Full) => {
                crate::log_event!(Level::Warn, "ticket_cache_full", "peer" = peer);
                cors.push(("Retry-After", "1"));
                text_response(503, &cors, "too many live tickets\n")
            }
        },
        _ => {
            let mut h = cors;
            h.push(("Allow", "POST, OPTIONS"));
            text_response(405, &h, "method not allowed\n")
        }
    }
}

/// Maps a request path to a file path under `root`, or `None` when it would leave
/// it: `..` (raw or percent-encoded), encoded `/` or `\`, backslashes, NUL, absolute
/// paths. Directories ending in `/` map to their `index.html`. Pure (no IO).
pub fn resolve(root: &Path, req_path: &str) -> Option<PathBuf> {
    if !req_path.starts_with('/') {
        return None;
    }
    let raw_lower = req_path.to_ascii_lowercase();
    if raw_lower.contains("%2f") || raw_lower.contains("%5c") || req_path.contains('\\') {
        return None;
    }
    let decoded = percent_decode(req_path)?;
    if decoded.contains(['\\', '\0']) {
        return None;
    }
    let mut out = root.to_path_buf();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return None,
            s => {
                let mut comps = Path::new(s).components();
                match (comps.next(), comps.next()) {
                    (Some(Component::Normal(c)), None) => out.push(c),
                    _ => return None,
                }
            }
        }
    }
    if decoded.ends_with('/') {
        out.push("index.html");
    }
    Some(out)
}

/// The content type for a file name.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "map" => "application/json",
        _ => "application/octet-stream",
    }
}

async fn static_file(dir: &Path, req: &Request<'_>, head_only: bool) -> Vec<u8> {
    let not_found = || text_response(404, &[], "not found\n");
    // Only origin-form targets (`/path`) name a file; `index.html` or
    // `http://host/x` are not ours to guess.
    if !req.path().starts_with('/') {
        return text_response(400, &[], "bad request: the request target must be a path\n");
    }
    let Some(path) = resolve(dir, req.path()) else {
        return if percent_decode(req.path()).is_none() {
            text_response(400, &[], "bad request\n")
        } else {
            not_found()
        };
    };
    let dir = dir.to_path_buf();
    // Canonicalise both, so a symlink that points outside DIR is refused.
    let read = smol::unblock(move || -> std::io::Result<Option<(PathBuf, Vec<u8>)>> {
        let root = dir.canonicalize()?;
        let real = path.canonicalize()?;
        if !real.starts_with(&root) {
            return Ok(None);
        }
        let meta = std::fs::metadata(&real)?;
        if !meta.is_file() || meta.len() > MAX_STATIC_FILE {
            return Ok(None);
        }
        Ok(Some((real.clone(), std::fs::read(&real)?)))
    })
    .await;
    match read {
        Ok(Some((path, body))) => {
            let ct = content_type(&path);
            response(
                200,
                &[("Content-Type", ct), ("X-Content-Type-Options", "nosniff")],
                &body,
                !head_only,
            )
        }
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_stays_inside() {
        let root = Path::new("/srv/www");
        assert_eq!(
            resolve(root, "/"),
            Some(PathBuf::from("/srv/www/index.html"))
        );
        assert_eq!(
            resolve(root, "/a/b.js"),
            Some(PathBuf::from("/srv/www/a/b.js"))
        );
        assert_eq!(
            resolve(root, "/a/"),
            Some(PathBuf::from("/srv/www/a/index.html"))
        );
        assert_eq!(
            resolve(root, "/a%20b.txt"),
            Some(PathBuf::from("/srv/www/a b.txt"))
        );
        for bad in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/a%2f..%2f..%2fetc",
            "/..%5cetc",
            "/a\\..\\b",
            "//etc/passwd/..",
            "/%00",
            "etc/passwd",
            "/bad%zz",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type(Path::new("index.HTML")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type(Path::new("app.js")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }
}
