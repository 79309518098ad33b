//! Stored responses in memory, under a bound in bytes: the least recently
//! used go first when a new one needs the room.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::directives::{self, Directives};
use super::freshness::{self, Timing};
use super::keys::Variant;

/// A stored response, with what its freshness is computed from.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) variant: Variant,
    pub(crate) timing: Timing,
    pub(crate) cc: Directives,
    pub(crate) lifetime: Duration,
    initial_age: Duration,
}

impl Stored {
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        variant: Variant,
        timing: Timing,
    ) -> Self {
        let (cc, targeted) = directives::of_response(&headers);
        let lifetime = freshness::lifetime(&headers, &cc, targeted, status, timing);
        let initial_age = freshness::initial_age(&headers, timing);
        Self {
            status,
            headers,
            body,
            variant,
            timing,
            cc,
            lifetime,
            initial_age,
        }
    }

    /// Its current age (§4.2.3).
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        self.initial_age + now.duration_since(self.timing.received).unwrap_or_default()
    }

    /// Whether it may be served stale at all (§4.2.4): not when it says
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`.
    pub(crate) fn may_be_served_stale(&self) -> bool {
        !(self.cc.must_revalidate || self.cc.proxy_revalidate || self.cc.s_maxage.is_some())
    }

    fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() + headers + 256
    }
}

/// The stored responses, by primary key, each key's variants side by side.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Vec<Slot>>,
    /// By last use, oldest first: the key and the slot's id.
    lru: BTreeMap<u64, (String, u64)>,
    clock: u64,
    used: usize,
}

struct Slot {
    id: u64,
    used_at: u64,
    size: usize,
    stored: Arc<Stored>,
}

/// What the store holds, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Held {
    pub(crate) responses: usize,
    pub(crate) bytes: usize,
}

impl Store {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether anything is stored under `key`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// The response stored under `key` that a request with `headers`
    /// selects, the most recent first; marked as used.
    pub(crate) fn find(&self, key: &str, headers: &HeaderMap) -> Option<Arc<Stored>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let slots = inner.entries.get_mut(key)?;
        let slot = slots
            .iter_mut()
            .rev()
            .find(|slot| slot.stored.variant.matches(headers))?;
        inner.clock += 1;
        inner.lru.remove(&slot.used_at);
        slot.used_at = inner.clock;
        inner.lru.insert(inner.clock, (key.to_owned(), slot.id));
        Some(slot.stored.clone())
    }

    /// Stores `stored` under `key`, in place of a response for the same
    /// requests; evicts the least recently used until it fits. One larger
    /// than the whole store is not kept.
    pub(crate) fn insert(&self, key: &str, stored: impl Into<Arc<Stored>>) {
        let stored = stored.into();
        let size = stored.size();
        if size > self.capacity {
            return;
        }
        let mut inner = self.lock();
        let replaced: Vec<u64> = inner.entries.get(key).map_or_else(Vec::new, |slots| {
            slots
                .iter()
                .filter(|slot| slot.stored.variant.same_as(&stored.variant))
                .map(|slot| slot.id)
                .collect()
        });
        for id in replaced {
            inner.remove_slot(key, id);
        }
        while inner.used + size > self.capacity {
            let Some((_, (old_key, id))) = inner.lru.pop_first() else {
                break;
            };
            inner.remove_slot(&old_key, id);
        }
        inner.clock += 1;
        let id = inner.clock;
        inner.lru.insert(id, (key.to_owned(), id));
        inner.used += size;
        inner.entries.entry(key.to_owned()).or_default().push(Slot {
            id,
            used_at: id,
            size,
            stored,
        });
    }

    /// Puts `updated` in the place of `old` (a validated response, the
    /// same variant, which `insert` replaces), if `old` is still stored.
    pub(crate) fn update(&self, key: &str, old: &Arc<Stored>, updated: Arc<Stored>) {
        let still = self
            .lock()
            .entries
            .get(key)
            .is_some_and(|slots| slots.iter().any(|slot| Arc::ptr_eq(&slot.stored, old)));
        if still {
            self.insert(key, updated);
        }
    }

    /// Forgets every response for which `doomed(key, response)` holds; how many.
    pub(crate) fn remove_where(&self, doomed: impl Fn(&str, &Stored) -> bool) -> usize {
        let mut inner = self.lock();
        let found: Vec<(String, u64)> = (inner.entries.iter())
            .flat_map(|(key, slots)| {
                (slots.iter())
                    .filter(|slot| doomed(key, &slot.stored))
                    .map(move |slot| (key.clone(), slot.id))
            })
            .collect();
        for (key, id) in &found {
            inner.remove_slot(key, *id);
        }
        found.len()
    }

    /// Forgets every response stored under `key`.
    pub(crate) fn remove(&self, key: &str) {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner
            .entries
            .get(key)
            .map_or_else(Vec::new, |slots| slots.iter().map(|s| s.id).collect());
        for id in ids {
            inner.remove_slot(key, id);
        }
    }

    pub(crate) fn held(&self) -> Held {
        let inner = self.lock();
        Held {
            responses: inner.lru.len(),
            bytes: inner.used,
        }
    }
}

impl Inner {
    fn remove_slot(&mut self, key: &str, id: u64) {
        let Some(slots) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(at) = slots.iter().position(|slot| slot.id == id) {
            let slot = slots.remove(at);
            self.lru.remove(&slot.used_at);
            self.used -= slot.size;
        }
        if slots.is_empty() {
            self.entries.remove(key);
        }
    }
}
