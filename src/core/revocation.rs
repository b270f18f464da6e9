//! Revocation, sans IO: which tokens are refused from now on, and whether a token (or
//! a live session) is one of them. A plain value; time is passed in.
//!
//! Two kinds of entry (`docs/operations.md#revocation`):
//! - by `jti`: the token with that `jti`;
//! - by `sub`: every token of that `sub` whose `iat` is at or before the moment of
//!   revocation (in whole seconds), or that has no `iat`. Tokens issued later work:
//!   the user logs in again.
//!
//! An entry is kept for the configured TTL, then forgotten (tokens should live less
//! than that). At most `capacity` live entries: when full, a new entry is refused and
//! nothing is forgotten early. A check costs nothing while there are no entries, and
//! at most one hash lookup per kind while there are.

use std::collections::HashMap;
use std::fmt;

/// Default lifetime of an entry, seconds (one day).
pub const DEFAULT_REVOKE_TTL: u64 = 86_400;
/// Default bound on live entries.
pub const DEFAULT_REVOKE_CAPACITY: usize = 100_000;

/// Expired entries are purged at most this often (seconds), so a full list refuses in O(1).
const PURGE_EVERY: i64 = 1;

/// What to revoke.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Revocation {
    /// The token with this `jti`.
    Jti(String),
    /// Every token of this `sub` issued at or before the revocation (or without `iat`).
    Sub(String),
}

impl Revocation {
    /// `jti` or `sub`: the label of logs, metrics and the admin answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Revocation::Jti(_) => "jti",
            Revocation::Sub(_) => "sub",
        }
    }

    /// Whether this entry, made at `at` (Unix seconds, whole), refuses a token with
    /// these claims.
    pub(crate) fn matches(&self, at: i64, token: &TokenFacts<'_>) -> bool {
        match self {
            Revocation::Jti(j) => token.jti == Some(j.as_str()),
            Revocation::Sub(s) => token.sub == s && issued_by(at, token),
        }
    }
}

/// What revocation looks at in a token: for a ticket, the minting token's `jti` and
/// `iat` (its own `sub` is the minting token's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    /// `sub`.
    pub sub: &'a str,
    /// `jti`, if any.
    pub jti: Option<&'a str>,
    /// `iat`, Unix seconds, if any.
    pub iat: Option<i64>,
}

/// The list is full: nothing was added, nothing forgotten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("revocation list full")
    }
}

impl std::error::Error for Full {}

/// The live revocation entries.
#[derive(Debug)]
pub struct Revocations {
    /// `jti` → when the entry is forgotten.
    jti: HashMap<String, i64>,
    /// `sub` → (moment of revocation, when the entry is forgotten).
    sub: HashMap<String, (i64, i64)>,
    ttl: i64,
    capacity: usize,
    next_purge: i64,
}

impl Revocations {
    /// An empty list keeping entries `ttl` seconds, at most `capacity` at once.
    pub fn new(ttl: u64, capacity: usize) -> Revocations {
        Revocations {
            jti: HashMap::new(),
            sub: HashMap::new(),
            ttl: ttl.min(i64::MAX as u64) as i64,
            capacity,
            next_purge: i64::MIN,
        }
    }

    /// Live entries (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.jti.len() + self.sub.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.jti.is_empty() && self.sub.is_empty()
    }

    /// Adds `entry` at `now` (Unix seconds). A `sub` entry that exists already moves
    /// its moment to `now`; either kind's lifetime starts again.
    pub fn revoke(&mut self, entry: &Revocation, now: i64) -> Result<(), Full> {
        self.apply(entry, now, now.saturating_add(self.ttl), now)
    }

    /// Whether `entry` could be added at `now` (it exists, or there is room).
    pub fn has_room(&mut self, entry: &Revocation, now: i64) -> bool {
        let exists = match entry {
            Revocation::Jti(j) => self.jti.contains_key(j),
            Revocation::Sub(s) => self.sub.contains_key(s),
        };
        if !exists && self.len() >= self.capacity {
            self.purge(now);
        }
        exists || self.len() < self.capacity
    }

    /// The lifetime of an entry made now, seconds.
    #[cfg(feature = "redis")]
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Adds an entry made elsewhere (another node, through shared state): revoked at
    /// `at`, forgotten at `forget_at`. Applying the same entry twice changes nothing;
    /// of two moments for one `sub`, the later wins, as it would on one node.
    pub fn apply(
        &mut self,
        entry: &Revocation,
        at: i64,
        forget_at: i64,
        now: i64,
    ) -> Result<(), Full> {
        if forget_at <= now {
            return Ok(());
        }
        if !self.has_room(entry, now) {
            return Err(Full);
        }
        match entry {
            Revocation::Jti(j) => {
                let e = self.jti.entry(j.clone()).or_insert(forget_at);
                *e = (*e).max(forget_at);
            }
            Revocation::Sub(s) => {
                let e = self.sub.entry(s.clone()).or_insert((at, forget_at));
                *e = (e.0.max(at), e.1.max(forget_at));
            }
        }
        Ok(())
    }

    /// Whether a token with these facts is refused at `now`.
    #[inline]
    pub fn is_revoked(&self, token: &TokenFacts<'_>, now: i64) -> bool {
        if self.is_empty() {
            return false;
        }
        if let Some(j) = token.jti {
            if self.jti.get(j).is_some_and(|&forget_at| now < forget_at) {
                return true;
            }
        }
        self.sub
            .get(token.sub)
            .is_some_and(|&(at, forget_at)| now < forget_at && issued_by(at, token))
    }

    /// Forgets expired entries (at most once a second).
    fn purge(&mut self, now: i64) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now.saturating_add(PURGE_EVERY);
        self.jti.retain(|_, &mut forget_at| now < forget_at);
        self.sub.retain(|_, &mut (_, forget_at)| now < forget_at);
    }
}

/// The `iat` half of the `sub` rule: issued at or before `at`, or no `iat` at all.
fn issued_by(at: i64, token: &TokenFacts<'_>) -> bool {
    token.iat.is_none_or(|iat| iat <= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 2_000_000_000;

    fn facts<'a>(sub: &'a str, jti: Option<&'a str>, iat: Option<i64>) -> TokenFacts<'a> {
        TokenFacts { sub, jti, iat }
    }

    #[test]
    fn jti_entries_refuse_that_token_only() {
        let mut r = Revocations::new(100, 10);
        assert!(!r.is_revoked(&facts("a", Some("j1"), None), NOW));
        r.revoke(&Revocation::Jti("j1".into()), NOW).unwrap();
        assert!(r.is_revoked(&facts("a", Some("j1"), None), NOW));
        assert!(r.is_revoked(&facts("b", Some("j1"), Some(NOW + 5)), NOW));
        assert!(!r.is_revoked(&facts("a", Some("j2"), None), NOW));
        assert!(!r.is_revoked(&facts("a", None, None), NOW));
    }

    #[test]
    fn sub_entries_refuse_tokens_issued_up_to_the_moment_or_without_iat() {
        let mut r = Revocations::new(100, 10);
        r.revoke(&Revocation::Sub("alice".into()), NOW).unwrap();
        assert!(r.is_revoked(&facts("alice", None, None), NOW));
        assert!(r.is_revoked(&facts("alice", None, Some(NOW - 3600)), NOW));
        // At the same second: refused (whole seconds, "at or before").
        assert!(r.is_revoked(&facts("alice", None, Some(NOW)), NOW + 1));
        // Issued later: the user logged in again.
        assert!(!r.is_revoked(&facts("alice", None, Some(NOW + 1)), NOW + 1));
        assert!(!r.is_revoked(&facts("bob", None, None), NOW));
        // Revoking again moves the moment.
        r.revoke(&Revocation::Sub("alice".into()), NOW + 10)
            .unwrap();
        assert!(r.is_revoked(&facts("alice", None, Some(NOW + 1)), NOW + 10));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn entries_are_forgotten_after_the_ttl() {
        let mut r = Revocations::new(100, 10);
        r.revoke(&Revocation::Jti("j".into()), NOW).unwrap();
        r.revoke(&Revocation::Sub("s".into()), NOW).unwrap();
        assert!(r.is_revoked(&facts("x", Some("j"), None), NOW + 99));
        assert!(r.is_revoked(&facts("s", None, None), NOW + 99));
        assert!(!r.is_revoked(&facts("x", Some("j"), None), NOW + 100));
        assert!(!r.is_revoked(&facts("s", None, None), NOW + 100));
    }

    #[test]
    fn a_full_list_refuses_and_forgets_nothing_early() {
        let mut r = Revocations::new(100, 2);
        r.revoke(&Revocation::Jti("1".into()), NOW).unwrap();
        r.revoke(&Revocation::Sub("a".into()), NOW + 1).unwrap();
        assert_eq!(r.revoke(&Revocation::Jti("2".into()), NOW + 50), Err(Full));
        assert!(r.is_revoked(&facts("x", Some("1"), None), NOW + 50));
        // The same entry again is not a new one (its lifetime starts again).
        r.revoke(&Revocation::Jti("1".into()), NOW + 50).unwrap();
        assert_eq!(r.revoke(&Revocation::Jti("2".into()), NOW + 100), Err(Full));
        // Once "a" (made at NOW + 1) expired, there is room.
        r.revoke(&Revocation::Jti("2".into()), NOW + 101).unwrap();
        assert!(r.is_revoked(&facts("x", Some("1"), None), NOW + 101));
        assert!(!r.is_revoked(&facts("a", None, None), NOW + 101));
    }

    #[test]
    fn live_sessions_match_like_tokens() {
        let j = Revocation::Jti("j".into());
        let s = Revocation::Sub("alice".into());
        assert!(j.matches(NOW, &facts("bob", Some("j"), None)));
        assert!(!j.matches(NOW, &facts("bob", None, None)));
        assert!(s.matches(NOW, &facts("alice", Some("k"), Some(NOW))));
        assert!(!s.matches(NOW, &facts("alice", Some("k"), Some(NOW + 1))));
        assert!(!s.matches(NOW, &facts("carol", None, None)));
    }

    #[test]
    fn entries_from_other_nodes_keep_their_moment_and_apply_once() {
        let mut r = Revocations::new(100, 2);
        let s = Revocation::Sub("alice".into());
        // Made elsewhere at NOW - 10, seen here at NOW: the moment is the maker's.
        r.apply(&s, NOW - 10, NOW + 90, NOW).unwrap();
        assert!(r.is_revoked(&facts("alice", None, Some(NOW - 10)), NOW));
        assert!(!r.is_revoked(&facts("alice", None, Some(NOW - 9)), NOW));
        // The same publication twice, or an older one late, changes nothing.
        r.apply(&s, NOW - 10, NOW + 90, NOW).unwrap();
        r.apply(&s, NOW - 50, NOW + 50, NOW).unwrap();
        assert_eq!(r.len(), 1);
        assert!(!r.is_revoked(&facts("alice", None, Some(NOW - 9)), NOW));
        assert!(r.is_revoked(&facts("alice", None, None), NOW + 89));
        // A later one moves the moment on.
        r.apply(&s, NOW + 5, NOW + 105, NOW + 5).unwrap();
        assert!(r.is_revoked(&facts("alice", None, Some(NOW + 5)), NOW + 5));
        // Already expired: ignored, even when full.
        r.apply(&Revocation::Jti("j".into()), 0, NOW, NOW).unwrap();
        assert_eq!(r.len(), 1);
        r.apply(&Revocation::Jti("j".into()), 0, NOW + 10, NOW)
            .unwrap();
        assert_eq!(
            r.apply(&Revocation::Jti("k".into()), 0, NOW + 10, NOW),
            Err(Full)
        );
        assert!(!r.has_room(&Revocation::Jti("k".into()), NOW));
        assert!(r.has_room(&Revocation::Jti("j".into()), NOW));
        assert!(r.has_room(&Revocation::Jti("k".into()), NOW + 10));
    }
}
