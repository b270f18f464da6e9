//! The single-use ticket replay cache: bounded, forgets entries once they expire.
//!
//! One 16-byte slot per ticket in one open-addressed table (linear probing, at most
//! 4/5 full), no allocation per entry: a 95-bit keyed hash of the `jti`, a used bit and
//! `exp`. The table grows by doubling as tickets arrive, up to `capacity × 5/4` slots,
//! and shrinks again after a burst.
//!
//! The hash is SipHash (std's `RandomState`) under a key made at start, so nobody
//! can aim two `jti`s at one id; two of 320 000 live tickets share one with odds
//! of about 10⁻¹⁸, and that would only refuse a ticket ("already used"), never
//! accept one twice.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Mutex;

/// Default bound on live tickets (issued and not yet expired): 320 000, so that
/// 10 000 tickets a second with the default 30 s `--ticket-ttl` fit (a ticket is
/// remembered through the second of its `exp`: 31 seconds of tickets, 310 000).
/// Each costs one 16-byte slot at most 4/5 full: 20 bytes, 6.1 MiB when full
/// (the table only grows as tickets arrive).
pub const DEFAULT_TICKET_CAPACITY: usize = 320_000;

/// One slot: `exp == 0` is empty. The low bit of `id[0]` is the used flag, the
/// other 95 bits identify the ticket.
#[derive(Clone, Copy, Default)]
struct Slot {
    id: [u32; 3],
    exp: u32,
}

const USED: u32 = 1;

impl Slot {
    fn is_empty(&self) -> bool {
        self.exp == 0
    }
    fn same(&self, id: &[u32; 3]) -> bool {
        self.id[0] | USED == id[0] | USED && self.id[1] == id[1] && self.id[2] == id[2]
    }
}

/// Why the cache refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// The ticket was already used.
    Reused,
    /// The cache holds `capacity` live tickets; nothing is forgotten early.
    Full,
}

/// The smallest table; it never shrinks below this.
const MIN_SLOTS: usize = 16;

/// Seconds between purges while the table has room: expired entries of a burst
/// go (and the table shrinks) within this even when few tickets follow. Without
/// room, a purge runs once a second at most (see `oldest`).
const PURGE_EVERY: u32 = 30;

struct Table {
    slots: Vec<Slot>,
    len: usize,
    /// No entry expires before this: a full cache with nothing expired is refused
    /// in O(1), and the O(slots) purge runs at most once per second.
    oldest: u32,
    /// When the last purge ran.
    purged_at: u32,
}

/// Whether `len` entries may sit in `slots` slots (at most 4/5 full, so a probe
/// always ends at an empty slot).
fn fits(len: usize, slots: usize) -> bool {
    len.saturating_mul(5) <= slots.saturating_mul(4)
}

impl Table {
    /// The first slot to probe for `id` (its own bits are uniform: a keyed hash).
    fn home(&self, id: &[u32; 3]) -> usize {
        let h = (u64::from(id[1]) << 32) | u64::from(id[2]);
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot holding `id`, else the empty slot where it would go.
    fn find(&self, id: &[u32; 3]) -> usize {
        let n = self.slots.len();
        let mut i = self.home(id);
        loop {
            let s = &self.slots[i];
            if s.is_empty() || s.same(id) {
                return i;
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Puts `slot` in place (its id is not in the table); room is there.
    fn put(&mut self, slot: Slot) {
        let i = self.find(&slot.id);
        self.slots[i] = slot;
        self.len += 1;
        self.oldest = self.oldest.min(slot.exp);
    }

    /// A table of `n` slots holding the entries not expired at `now`.
    fn rebuild(&mut self, n: usize, now: u32) {
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n]);
        self.len = 0;
        self.oldest = u32::MAX;
        for s in old.into_iter().filter(|s| !s.is_empty() && s.exp >= now) {
            self.put(s);
        }
    }

    /// Empties the slots expired at `now`, in place: each with a backward shift, so
    /// that every entry stays reachable from its home without tombstones.
    fn purge(&mut self, now: u32) {
        let n = self.slots.len();
        let mut oldest = u32::MAX;
        let mut i = 0;
        while i < n {
            let s = self.slots[i];
            if s.is_empty() {
                i += 1;
            } else if s.exp >= now {
                oldest = oldest.min(s.exp);
                i += 1;
            } else {
                // Remove it: pull back later entries of the run that may sit
                // here. What lands at `i` is looked at again.
                self.len -= 1;
                let mut hole = i;
                let mut j = i;
                loop {
                    j = if j + 1 == n { 0 } else { j + 1 };
                    let t = self.slots[j];
                    if t.is_empty() {
                        break;
                    }
                    let h = self.home(&t.id);
                    // `t` may move to `hole` unless its home lies in (hole, j].
                    let stays = if hole <= j {
                        hole < h && h <= j
                    } else {
                        hole < h || h <= j
                    };
                    if !stays {
                        self.slots[hole] = t;
                        hole = j;
                    }
                }
                self.slots[hole] = Slot::default();
            }
        }
        self.oldest = oldest;
    }

    /// Makes room for one more entry. False when `capacity` live entries are held.
    fn make_room(&mut self, capacity: usize, now: u32) -> bool {
        let room = self.len < capacity && fits(self.len + 1, self.slots.len());
        if self.oldest < now && (!room || now >= self.purged_at.saturating_add(PURGE_EVERY)) {
            self.purge(now);
            self.purged_at = now;
            // After a burst, give the memory back (2/5 full).
            let n = (self.len.saturating_mul(5) / 2).max(MIN_SLOTS);
            if n < self.slots.len() && fits(self.len.saturating_mul(4), self.slots.len()) {
                self.rebuild(n, now);
            }
        }
        if self.len >= capacity {
            return false;
        }
        if fits(self.len + 1, self.slots.len()) {
            return true;
        }
        // Room for `capacity` at 4/5, plus the one empty slot probes end at.
        let most = capacity.saturating_add(capacity / 4).saturating_add(2);
        let n = self.slots.len().saturating_mul(2).max(MIN_SLOTS).min(most);
        self.rebuild(n, now);
        true
    }
}

/// Remembers every ticket minted here until its `exp`, and whether it was used.
pub struct ReplayCache {
    table: Mutex<Table>,
    capacity: usize,
    keys: RandomState,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ReplayCache {
    /// A cache holding at most `capacity` live tickets.
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            table: Mutex::new(Table {
                slots: Vec::new(),
                len: 0,
                oldest: u32::MAX,
                purged_at: 0,
            }),
            capacity,
            keys: RandomState::new(),
        }
    }

    /// Live entries (expired ones may linger until the next purge).
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the table (its slots; the rest of the cache is fixed).
    pub fn heap_bytes(&self) -> usize {
        self.lock().slots.capacity() * size_of::<Slot>()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock cannot leave the table inconsistent
        // (no operation calls out while slots are moved), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The 95-bit id of `jti` (the used bit clear): two keyed hashes.
    fn id(&self, jti: &str) -> [u32; 3] {
        let mut h = self.keys.build_hasher();
        h.write(jti.as_bytes());
        let a = h.finish();
        h.write_u8(0xff);
        let b = h.finish();
        [(a as u32) & !USED, (a >> 32) as u32, (b >> 32) as u32]
    }

    /// Records a newly minted ticket. `Full` when `capacity` live tickets exist.
    /// (`Reused` if its id is already held: a `jti` minted twice.)
    pub fn issue(&self, jti: &str, exp: i64, now: i64) -> Result<(), ReplayError> {
        self.record(jti, exp, now, false)
    }

    /// Marks a ticket used. A ticket this process did not mint (another instance
    /// sharing the key, or before a restart) is recorded as used if there is room.
    pub fn consume(&self, jti: &str, exp: i64, now: i64) -> Result<(), ReplayError> {
        self.record(jti, exp, now, true)
    }

    fn record(&self, jti: &str, exp: i64, now: i64, used: bool) -> Result<(), ReplayError> {
        let id = self.id(jti);
        // Unix seconds as u32 (until 2106); 0 marks an empty slot.
        let exp = exp.clamp(1, i64::from(u32::MAX)) as u32;
        let now = now.clamp(0, i64::from(u32::MAX)) as u32;
        let mut t = self.lock();
        if !t.slots.is_empty() {
            let i = t.find(&id);
            let s = &mut t.slots[i];
            if !s.is_empty() {
                // A fresh ticket never matches an entry (odds above); if one did,
                // it is refused rather than allowed to clear the used bit.
                if !used || s.id[0] & USED != 0 {
                    return Err(ReplayError::Reused);
                }
                s.id[0] |= USED;
                return Ok(());
            }
        }
        if !t.make_room(self.capacity, now) {
            return Err(ReplayError::Full);
        }
        let mut slot = Slot { id, exp };
        if used {
            slot.id[0] |= USED;
        }
        t.put(slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReplayCache {
        /// Whether `jti` is held, and used.
        fn held(&self, jti: &str) -> Option<bool> {
            let id = self.id(jti);
            let t = self.lock();
            let s = t.slots[t.find(&id)];
            (!s.is_empty()).then_some(s.id[0] & USED != 0)
        }
    }

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
        assert_eq!(c.consume("d", 100, 50), Err(ReplayError::Full));
        assert_eq!(c.consume("a", 100, 50), Ok(()));
        assert_eq!(c.consume("a", 100, 50), Err(ReplayError::Reused));
        // Still there through the second of its `exp`.
        assert_eq!(c.issue("d", 300, 100), Err(ReplayError::Full));
        assert_eq!(c.consume("a", 100, 100), Err(ReplayError::Reused));
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
        // 310 live (31 seconds' worth) in at most 1000 × 5/4 slots of 16 bytes.
        assert!(c.heap_bytes() <= 1252 * 16, "{}", c.heap_bytes());
    }

    /// The default holds 10 000 tickets a second for 30 s without refusing one,
    /// every ticket staying single-use to its end; a burst's memory goes back.
    #[test]
    fn default_capacity_holds_ten_thousand_a_second() {
        let c = ReplayCache::new(DEFAULT_TICKET_CAPACITY);
        let rate = 10_000;
        for now in 0..100i64 {
            for k in 0..rate {
                let jti = format!("{now}.{k}");
                assert_eq!(c.issue(&jti, now + 30, now), Ok(()), "at {now}");
            }
            // Every ticket of 30 s ago is still known, and single-use.
            if now >= 30 {
                let old = format!("{}.{}", now - 30, now % rate);
                assert_eq!(c.consume(&old, now, now), Ok(()));
                assert_eq!(c.consume(&old, now, now), Err(ReplayError::Reused));
            }
        }
        assert!(c.len() <= 320_000);
        assert!(c.heap_bytes() <= 6_400_032, "{}", c.heap_bytes());
        // A quiet spell later, the table shrinks as tickets trickle in.
        for now in 200..260i64 {
            c.issue(&format!("q{now}"), now + 30, now).unwrap();
        }
        assert!(c.heap_bytes() <= 64 * 16, "{}", c.heap_bytes());
    }

    /// Purging in place keeps every live entry reachable, whatever the order of
    /// expiry along the table's runs (checked against a plain set).
    #[test]
    fn purge_keeps_live_entries_findable() {
        let c = ReplayCache::new(2_000);
        let mut live = std::collections::BTreeMap::new();
        let mut x: u64 = 1;
        for now in 0..400i64 {
            for k in 0..40 {
                // A scattered lifetime of 1..=50 s.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let exp = now + 1 + (x % 50) as i64;
                let jti = format!("{now}/{k}");
                match c.issue(&jti, exp, now) {
                    Ok(()) => {
                        live.insert(jti, exp);
                    }
                    Err(ReplayError::Full) => {}
                    Err(e) => panic!("{e:?}"),
                }
            }
            live.retain(|_, exp| *exp >= now);
            for jti in live.keys() {
                assert_eq!(c.held(jti), Some(false), "{jti} at {now}");
            }
            if now % 37 == 0 {
                for jti in live.keys() {
                    assert_eq!(c.consume(jti, 0, now), Ok(()), "{jti} at {now}");
                    assert_eq!(c.held(jti), Some(true), "{jti} at {now}");
                }
                // Used ones stay used; fresh ones from now on.
                live.clear();
            }
        }
    }
}
