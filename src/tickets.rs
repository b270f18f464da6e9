//! The single-use ticket replay cache: bounded, forgets entries once they expire.

use std::collections::HashMap;
use std::sync::Mutex;

/// Default bound on live tickets (issued and not yet expired). Each entry costs
/// about 80 bytes, so the default holds 100 000 tickets in about 8 MiB.
pub const DEFAULT_TICKET_CAPACITY: usize = 100_000;

#[derive(Clone, Copy, Debug)]
struct Entry {
    exp: i64,
    used: bool,
}

/// Why the cache refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The ticket was already used.
    Reused,
    /// The cache holds `capacity` live tickets; nothing is forgotten early.
    Full,
}

#[derive(Debug)]
struct Entries {
    map: HashMap<String, Entry>,
    /// No entry expires before this: a full cache with nothing expired is refused
    /// in O(1), and the O(n) purge runs at most once per second.
    oldest: i64,
}

impl Entries {
    fn insert(&mut self, jti: &str, e: Entry) {
        self.oldest = self.oldest.min(e.exp);
        self.map.insert(jti.to_owned(), e);
    }
}

/// Remembers every ticket minted here until its `exp`, and whether it was used.
#[derive(Debug)]
pub struct ReplayCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache holding at most `capacity` live tickets.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                oldest: i64::MAX,
            }),
            capacity,
        }
    }

    /// Live entries (expired ones may linger until the next purge).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert/update), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn make_room(entries: &mut Entries, capacity: usize, now: i64) -> bool {
        if entries.map.len() >= capacity && entries.oldest < now {
            entries.map.retain(|_, e| e.exp >= now);
            entries.oldest = entries
                .map
                .values()
                .map(|e| e.exp)
                .min()
                .unwrap_or(i64::MAX);
            if entries.map.len() < capacity / 4 {
                entries.map.shrink_to(capacity / 2);
            }
        }
        entries.map.len() < capacity
    }

    /// Records a newly minted ticket. `Full` when `capacity` live tickets exist.
    pub fn issue(&self, jti: &str, exp: i64, now: i64) -> Result<(), ReplayError> {
        let mut map = self.lock();
        if !Self::make_room(&mut map, self.capacity, now) {
            return Err(ReplayError::Full);
        }
        map.insert(jti, Entry { exp, used: false });
        Ok(())
    }

    /// Marks a ticket used. A ticket this process did not mint (another instance
    /// sharing the key, or before a restart) is recorded as used if there is room.
    pub fn consume(&self, jti: &str, exp: i64, now: i64) -> Result<(), ReplayError> {
        let mut map = self.lock();
        if let Some(e) = map.map.get_mut(jti) {
            if e.used {
                return Err(ReplayError::Reused);
            }
            e.used = true;
            return Ok(());
        }
        if !Self::make_room(&mut map, self.capacity, now) {
            return Err(ReplayError::Full);
        }
        map.insert(jti, Entry { exp, used: true });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use() {
        let c = ReplayCache::new(10);
        c.issue("a", 100, 0).unwrap();
        assert_eq!(c.consume("a", 100, 1), Ok(()));
        assert_eq!(c.consume("a", 100, 2), Err(ReplayError::Reused));
        // Unknown (minted elsewhere) is taken once too.
        assert_eq!(c.consume("b", 100, 2), Ok(()));
        assert_eq!(c.consume("b", 100, 2), Err(ReplayError::Reused));
    }

    #[test]
    fn full_refuses_rather_than_forgets_then_evicts_expired() {
        let c = ReplayCache::new(3);
        for j in ["a", "b", "c"] {
            c.issue(j, 100, 0).unwrap();
        }
        assert_eq!(c.issue("d", 100, 50), Err(ReplayError::Full));
        assert_eq!(c.consume("a", 100, 50), Ok(()));
        assert_eq!(c.consume("a", 100, 50), Err(ReplayError::Reused));
        // Once expired, entries go and room returns.
        assert_eq!(c.issue("d", 300, 101), Ok(()));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn memory_stays_bounded_under_many_tickets() {
        let c = ReplayCache::new(1000);
        for i in 0..100_000i64 {
            let now = i / 10; // ten tickets a second, each living 30 s
            let _ = c.issue(&format!("t{i}"), now + 30, now);
            assert!(c.len() <= 1000);
        }
    }
}
