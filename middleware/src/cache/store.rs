//! Stored responses, under a bound in bytes: the least recently used go
//! first when a new one needs the room. Their fields are in memory, their
//! bodies too or in files ([`Disk`]).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use super::directives::{self, Directives};
use super::disk::{Disk, Found};
use super::freshness::{self, Timing};
use super::keys::Variant;
use super::payload::Payload;

/// A stored response, with what its freshness is computed from.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Payload,
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
        payload: Payload,
        variant: Variant,
        timing: Timing,
    ) -> Self {
        let (cc, targeted) = directives::of_response(&headers);
        let lifetime = freshness::lifetime(&headers, &cc, targeted, status, timing);
        let initial_age = freshness::initial_age(&headers, timing);
        Self {
            status,
            headers,
            payload,
            variant,
            timing,
            cc,
            lifetime,
            initial_age,
        }
    }

    /// The same response, its body elsewhere.
    pub(crate) fn with_payload(&self, payload: Payload) -> Self {
        let headers = self.headers.clone();
        Self::new(
            self.status,
            headers,
            payload,
            self.variant.clone(),
            self.timing,
        )
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
        self.payload.len() as usize + headers + 256
    }
}

/// The stored responses, by primary key, each key's variants side by side.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    capacity: usize,
    disk: Option<Disk>,
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
    /// A store in memory.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::default(),
            capacity,
            disk: None,
        }
    }

    /// A store whose bodies are files in `dir`, holding what was stored
    /// there before (as much as `capacity` allows).
    pub(crate) fn on_disk(capacity: usize, dir: &Path) -> io::Result<Self> {
        let disk = Disk::open(dir)?;
        let found = disk.load();
        let store = Self {
            disk: Some(disk),
            ..Self::new(capacity)
        };
        for found in found {
            store.insert(&found.key.clone(), Stored::from(found));
        }
        Ok(store)
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn disk(&self) -> Option<&Disk> {
        self.disk.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether anything is stored under `key`.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// The response stored under `key` that a request with `headers`
    /// selects, the most recent first; marked as used. On disk, a key
    /// not seen here is looked for among the files another process wrote.
    pub(crate) fn find(&self, key: &str, headers: &HeaderMap) -> Option<Arc<Stored>> {
        if let Some(disk) = &self.disk {
            if !self.has(key) {
                for found in disk.probe(key) {
                    self.insert(key, Stored::from(found));
                }
            }
        }
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
            delete(vec![stored], None);
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
        let mut gone: Vec<Arc<Stored>> = (replaced.into_iter())
            .filter_map(|id| inner.remove_slot(key, id))
            .collect();
        while inner.used + size > self.capacity {
            let Some((_, (old_key, id))) = inner.lru.pop_first() else {
                break;
            };
            gone.extend(inner.remove_slot(&old_key, id));
        }
        inner.clock += 1;
        let id = inner.clock;
        inner.lru.insert(id, (key.to_owned(), id));
        inner.used += size;
        inner.entries.entry(key.to_owned()).or_default().push(Slot {
            id,
            used_at: id,
            size,
            stored: stored.clone(),
        });
        drop(inner);
        delete(gone, stored.payload.path());
    }

    /// Puts `updated` in the place of `old` (a validated response, or one
    /// whose file is now in place: the same variant, which `insert`
    /// replaces), if `old` is still stored; else forgets `updated`.
    pub(crate) fn update(&self, key: &str, old: &Arc<Stored>, updated: Arc<Stored>) {
        let still = self
            .lock()
            .entries
            .get(key)
            .is_some_and(|slots| slots.iter().any(|slot| Arc::ptr_eq(&slot.stored, old)));
        match still {
            true => self.insert(key, updated),
            false => delete(vec![updated], old.payload.path()),
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
        let gone: Vec<Arc<Stored>> = (found.iter())
            .filter_map(|(key, id)| inner.remove_slot(key, *id))
            .collect();
        drop(inner);
        let count = gone.len();
        delete(gone, None);
        count
    }

    /// Forgets every response stored under `key`, on disk those another
    /// process stored too.
    pub(crate) fn remove(&self, key: &str) {
        self.remove_from(key, |_| true);
        if let Some(disk) = &self.disk {
            for found in disk.probe(key) {
                delete_file(&found.payload, None);
            }
        }
    }

    /// Forgets `stored`, found but no longer there to serve (its file removed).
    pub(crate) fn forget(&self, key: &str, stored: &Arc<Stored>) {
        self.remove_from(key, |other| Arc::ptr_eq(other, stored));
    }

    fn remove_from(&self, key: &str, doomed: impl Fn(&Arc<Stored>) -> bool) {
        let mut inner = self.lock();
        let ids: Vec<u64> = (inner.entries.get(key).into_iter().flatten())
            .filter(|slot| doomed(&slot.stored))
            .map(|slot| slot.id)
            .collect();
        let gone = (ids.into_iter())
            .filter_map(|id| inner.remove_slot(key, id))
            .collect();
        drop(inner);
        delete(gone, None);
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
    fn remove_slot(&mut self, key: &str, id: u64) -> Option<Arc<Stored>> {
        let slots = self.entries.get_mut(key)?;
        let at = slots.iter().position(|slot| slot.id == id);
        let slot = at.map(|at| slots.remove(at));
        if slots.is_empty() {
            self.entries.remove(key);
        }
        let slot = slot?;
        self.lru.remove(&slot.used_at);
        self.used -= slot.size;
        Some(slot.stored)
    }
}

/// Removes the files of responses no longer stored, but `kept`'s.
fn delete(gone: Vec<Arc<Stored>>, kept: Option<&Path>) {
    for stored in gone {
        delete_file(&stored.payload, kept);
    }
}

/// Removes `payload`'s file, unless it is `kept`.
fn delete_file(payload: &Payload, kept: Option<&Path>) {
    match payload.path() {
        Some(path) if Some(path) != kept => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
}

impl From<Found> for Stored {
    fn from(found: Found) -> Self {
        Self::new(
            found.status,
            found.headers,
            found.payload,
            found.variant,
            found.timing,
        )
    }
}
