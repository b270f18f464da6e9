//! The live sessions of a server, indexed so that a revocation reaches exactly the
//! sessions it matches (by `sub` and by `jti`: O(matching sessions), never a walk
//! over all of them), and listed for the operators' `GET /sessions`.
//!
//! Each session holds a [`Control`]: one event that wakes it for what the server
//! decides about it from outside (revoked, or the server shutting down). The session
//! waits on that one event, whatever woke it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::{Event, EventListener};

use crate::auth::{Identity, Method};
use crate::revocation::{Revocation, TokenFacts};

/// How the server reaches one session from outside.
#[derive(Debug, Default)]
pub(crate) struct Control {
    event: Event,
    revoked: AtomicBool,
}

impl Control {
    /// A listener for the next wake-up.
    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }

    /// Whether the session's token was revoked.
    pub(crate) fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Marks the session revoked and wakes it.
    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    fn wake(&self) {
        self.event.notify(usize::MAX);
    }
}

/// One live session, as listed by `GET /sessions`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// Who.
    pub sub: String,
    /// How it authenticated.
    pub method: Method,
    /// The client's address.
    pub peer: SocketAddr,
    /// When it authenticated, Unix seconds.
    pub since: i64,
    /// The `exp` claim that bounds it now (after refreshes), Unix seconds.
    pub exp: i64,
    /// That `exp` as issued, when not the form `Rfc3339` writes ([`Identity::exp_text`]).
    pub exp_text: Option<Box<str>>,
}

struct Entry {
    info: SessionInfo,
    jti: Option<String>,
    iat: Option<i64>,
    control: Arc<Control>,
    /// Where its id sits in `by_sub[sub]` and `by_jti[jti]`: removal is O(1), however
    /// many sessions one `sub` has (a service account may hold thousands).
    sub_pos: usize,
    jti_pos: usize,
}

#[derive(Default)]
struct Inner {
    next: u64,
    /// Boxed: the table doubles as sessions come, and its buckets then hold 16 bytes
    /// each, not the entry's ~150 (15 000 sessions sat in 32 768 buckets of 161 bytes,
    /// 0.35 KiB a session, against 0.18 at 1 000: memory per session was not flat).
    sessions: HashMap<u64, Box<Entry>>,
    by_sub: HashMap<String, Vec<u64>>,
    by_jti: HashMap<String, Vec<u64>>,
}

/// Adds `id` to `key`'s list; its position there.
fn index(index: &mut HashMap<String, Vec<u64>>, key: &str, id: u64) -> usize {
    let ids = match index.get_mut(key) {
        Some(ids) => ids,
        None => index.entry(key.to_owned()).or_default(),
    };
    ids.push(id);
    ids.len() - 1
}

/// Takes the id at `pos` out of `key`'s list (the last one moves into its place);
/// the id that moved, if any, whose position is now `pos`.
fn unindex(index: &mut HashMap<String, Vec<u64>>, key: &str, pos: usize) -> Option<u64> {
    let ids = index.get_mut(key)?;
    if pos >= ids.len() {
        return None;
    }
    ids.swap_remove(pos);
    let moved = ids.get(pos).copied();
    if ids.is_empty() {
        index.remove(key);
    }
    moved
}

/// The live sessions.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.lock().sessions.len())
            .finish()
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a session; its id and control.
    pub(crate) fn add(
        &self,
        identity: &Identity,
        peer: SocketAddr,
        since: i64,
    ) -> (u64, Arc<Control>) {
        let control = Arc::new(Control::default());
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        let sub_pos = index(&mut inner.by_sub, &identity.sub, id);
        let jti_pos = match &identity.jti {
            Some(j) => index(&mut inner.by_jti, j, id),
            None => 0,
        };
        inner.sessions.insert(
            id,
            Box::new(Entry {
                info: SessionInfo {
                    sub: identity.sub.clone(),
                    method: identity.method,
                    peer,
                    since,
                    exp: identity.exp,
                    exp_text: identity.exp_text.clone(),
                },
                jti: identity.jti.clone(),
                iat: identity.iat,
                control: control.clone(),
                sub_pos,
                jti_pos,
            }),
        );
        (id, control)
    }

    /// A refresh: the session is now the new token's (`jti`, `iat`, `exp`).
    pub(crate) fn update(&self, id: u64, identity: &Identity) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some((old_jti, old_pos)) = inner.sessions.get(&id).map(|e| (e.jti.clone(), e.jti_pos))
        else {
            return;
        };
        let mut jti_pos = old_pos;
        if old_jti != identity.jti {
            if let Some(j) = &old_jti {
                if let Some(m) = unindex(&mut inner.by_jti, j, old_pos) {
                    if let Some(moved) = inner.sessions.get_mut(&m) {
                        moved.jti_pos = old_pos;
                    }
                }
            }
            jti_pos = match &identity.jti {
                Some(j) => index(&mut inner.by_jti, j, id),
                None => 0,
            };
        }
        if let Some(e) = inner.sessions.get_mut(&id) {
            e.jti = identity.jti.clone();
            e.jti_pos = jti_pos;
            e.iat = identity.iat;
            e.info.exp = identity.exp;
            e.info.exp_text = identity.exp_text.clone();
        }
    }

    /// Forgets a session that ended.
    pub(crate) fn remove(&self, id: u64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if let Some(e) = inner.sessions.remove(&id) {
            if let Some(m) = unindex(&mut inner.by_sub, &e.info.sub, e.sub_pos) {
                if let Some(moved) = inner.sessions.get_mut(&m) {
                    moved.sub_pos = e.sub_pos;
                }
            }
            if let Some(j) = &e.jti {
                if let Some(m) = unindex(&mut inner.by_jti, j, e.jti_pos) {
                    if let Some(moved) = inner.sessions.get_mut(&m) {
                        moved.jti_pos = e.jti_pos;
                    }
                }
            }
        }
    }

    /// Marks every session that `entry` (made at `at`) matches as revoked and wakes
    /// it; how many.
    pub(crate) fn revoke(&self, entry: &Revocation, at: i64) -> usize {
        let inner = self.lock();
        let ids = match entry {
            Revocation::Jti(j) => inner.by_jti.get(j),
            Revocation::Sub(s) => inner.by_sub.get(s),
        };
        let mut n = 0;
        for id in ids.into_iter().flatten() {
            let Some(e) = inner.sessions.get(id) else {
                continue;
            };
            let facts = TokenFacts {
                sub: &e.info.sub,
                jti: e.jti.as_deref(),
                iat: e.iat,
            };
            if entry.matches(at, &facts) && !e.control.is_revoked() {
                e.control.revoke();
                n += 1;
            }
        }
        n
    }

    /// Wakes every session (the server is shutting down).
    pub(crate) fn wake_all(&self) {
        for e in self.lock().sessions.values() {
            e.control.wake();
        }
    }

    /// The live sessions, of `sub` only when given.
    pub(crate) fn list(&self, sub: Option<&str>) -> Vec<SessionInfo> {
        let inner = self.lock();
        match sub {
            Some(s) => inner
                .by_sub
                .get(s)
                .into_iter()
                .flatten()
                .filter_map(|id| inner.sessions.get(id))
                .map(|e| e.info.clone())
                .collect(),
            None => inner.sessions.values().map(|e| e.info.clone()).collect(),
        }
    }

    /// How many live sessions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str, jti: Option<&str>, iat: Option<i64>) -> Identity {
        Identity {
            sub: sub.into(),
            exp: 100,
            exp_text: None,
            deadline: 160,
            claims: "{}".into(),
            method: Method::Header,
            via_ticket: false,
            jti: jti.map(Into::into),
            iat,
            unredeemed: None,
        }
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn revocations_reach_exactly_the_matching_sessions() {
        let r = Registry::default();
        let (_, a_old) = r.add(&identity("alice", Some("j1"), Some(10)), peer(), 0);
        let (_, a_new) = r.add(&identity("alice", Some("j2"), Some(50)), peer(), 0);
        let (_, b) = r.add(&identity("bob", Some("j3"), None), peer(), 0);
        assert_eq!(r.revoke(&Revocation::Sub("alice".into()), 20), 1);
        assert!(a_old.is_revoked() && !a_new.is_revoked() && !b.is_revoked());
        // Again: already revoked sessions are not counted twice.
        assert_eq!(r.revoke(&Revocation::Sub("alice".into()), 20), 0);
        assert_eq!(r.revoke(&Revocation::Jti("j3".into()), 20), 1);
        assert!(b.is_revoked());
        assert_eq!(r.revoke(&Revocation::Jti("nope".into()), 20), 0);
    }

    #[test]
    fn a_refresh_moves_the_session_to_its_new_token() {
        let r = Registry::default();
        let (id, c) = r.add(&identity("alice", Some("old"), Some(10)), peer(), 0);
        r.update(id, &identity("alice", Some("new"), Some(30)));
        assert_eq!(r.revoke(&Revocation::Jti("old".into()), 40), 0);
        assert_eq!(r.revoke(&Revocation::Sub("alice".into()), 20), 0);
        assert!(!c.is_revoked());
        assert_eq!(r.revoke(&Revocation::Jti("new".into()), 40), 1);
    }

    #[test]
    fn removed_sessions_are_gone_from_every_index() {
        let r = Registry::default();
        let (id, _) = r.add(&identity("alice", Some("j"), None), peer(), 0);
        r.add(&identity("bob", None, None), peer(), 0);
        assert_eq!(r.list(Some("alice")).len(), 1);
        r.remove(id);
        assert_eq!(r.list(Some("alice")).len(), 0);
        assert_eq!(r.list(None).len(), 1);
        assert_eq!(r.revoke(&Revocation::Jti("j".into()), 0), 0);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn thousands_of_sessions_of_one_sub_leave_in_any_order_and_the_indexes_stay_exact() {
        let r = Registry::default();
        let mut live: Vec<(u64, Arc<Control>, usize)> = (0..2000)
            .map(|i| {
                let jti = format!("j{}", i % 7);
                let (id, c) = r.add(&identity("svc", Some(&jti), Some(10)), peer(), 0);
                (id, c, i % 7)
            })
            .collect();
        // A refresh moves some sessions to another token meanwhile.
        for (id, _, j) in live.iter_mut().step_by(5) {
            r.update(*id, &identity("svc", Some("fresh"), Some(10)));
            *j = 7;
        }
        // Leave in a scrambled order (a fixed permutation: i * 7919 mod 2000).
        let mut order: Vec<usize> = (0..2000).map(|i| (i * 7919) % 2000).collect();
        order.truncate(1500);
        for &i in &order {
            r.remove(live[i].0);
        }
        let gone: std::collections::HashSet<usize> = order.into_iter().collect();
        live = live
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, e)| e)
            .collect();
        assert_eq!(r.len(), 500);
        assert_eq!(r.list(Some("svc")).len(), 500);
        let fresh = live.iter().filter(|e| e.2 == 7).count();
        assert_eq!(r.revoke(&Revocation::Jti("fresh".into()), 20), fresh);
        let j3 = live.iter().filter(|e| e.2 == 3).count();
        assert_eq!(r.revoke(&Revocation::Jti("j3".into()), 20), j3);
        assert_eq!(
            r.revoke(&Revocation::Sub("svc".into()), 20),
            500 - fresh - j3
        );
        assert!(live.iter().all(|e| e.1.is_revoked()));
        for e in &live {
            r.remove(e.0);
        }
        let inner = r.lock();
        assert!(inner.sessions.is_empty() && inner.by_sub.is_empty() && inner.by_jti.is_empty());
    }
}
