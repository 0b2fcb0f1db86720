//! Results in memory: held weakly (a long chain's intermediate results are freed once the next link is
//! computed; they stay on disk), the most recent ones kept alive, and the small results that are never
//! written to disk (secrets, cache volumes, the host) kept for the session.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::model::ids::Digest;

/// How many recent results stay in memory while nothing else holds them.
pub(crate) const RECENT: usize = 64;

/// The in-memory side of the results cache.
pub(crate) struct Results<V> {
    /// Persistent results, held weakly; [`Results::recent`] holds strong references.
    weak: Mutex<HashMap<Digest, Weak<V>>>,
    /// The most recent results, kept alive so repeated reads of one object do not go to disk.
    recent: Mutex<VecDeque<Arc<V>>>,
    /// Results that are not kept on disk: small, kept for the session.
    kept: Mutex<HashMap<Digest, Arc<V>>>,
}

impl<V> Default for Results<V> {
    fn default() -> Self {
        Self {
            weak: Mutex::default(),
            recent: Mutex::default(),
            kept: Mutex::default(),
        }
    }
}

impl<V> Results<V> {
    /// Remembers a result: for the session when it is not `persistent`, else weakly and among the recent.
    pub(crate) fn remember(&self, d: &Digest, v: &Arc<V>, persistent: bool) {
        if !persistent {
            self.kept.lock().insert(d.clone(), v.clone());
            return;
        }
        {
            let mut r = self.weak.lock();
            // Forget entries whose results are gone, now and then, so the map stays the size of what is live.
            if r.len() >= 4096 && r.len().is_power_of_two() {
                r.retain(|_, w| w.strong_count() > 0);
            }
            r.insert(d.clone(), Arc::downgrade(v));
        }
        self.keep_recent(std::iter::once(v.clone()));
    }

    /// Keeps `values` alive as the most recent results.
    pub(crate) fn keep_recent(&self, values: impl IntoIterator<Item = Arc<V>>) {
        let mut recent = self.recent.lock();
        for v in values {
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(v);
        }
    }

    /// A result held in memory.
    pub(crate) fn get(&self, d: &Digest) -> Option<Arc<V>> {
        if let Some(v) = self.kept.lock().get(d).cloned() {
            return Some(v);
        }
        self.weak.lock().get(d).and_then(Weak::upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistent_results_are_held_weakly_beyond_the_recent_ones() {
        let r: Results<usize> = Results::default();
        let digests: Vec<Digest> = (0..RECENT + 10).map(|n| Digest::of(n.to_string().as_bytes())).collect();
        for (n, d) in digests.iter().enumerate() {
            r.remember(d, &Arc::new(n), true);
        }
        assert!(r.get(&digests[0]).is_none(), "the oldest was freed");
        assert_eq!(r.get(&digests[RECENT + 9]).as_deref(), Some(&(RECENT + 9)));
        let held = Arc::new(7);
        r.remember(&digests[0], &held, true);
        r.keep_recent((0..RECENT).map(Arc::new));
        assert_eq!(r.get(&digests[0]).as_deref(), Some(&7), "alive while someone holds it");
        drop(held);
        assert!(r.get(&digests[0]).is_none());
    }

    #[test]
    fn session_results_are_kept_for_the_session() {
        let r: Results<&str> = Results::default();
        let d = Digest::of(b"secret");
        r.remember(&d, &Arc::new("s"), false);
        r.keep_recent((0..RECENT * 2).map(|_| Arc::new("x")));
        assert_eq!(r.get(&d).as_deref(), Some(&"s"));
    }
}
