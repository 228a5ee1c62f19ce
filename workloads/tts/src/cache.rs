//! The phrase cache: final encoded audio keyed by everything that shapes it,
//! least recently used evicted first under a byte budget.
//!
//! Only complete, successful syntheses go in. An entry costs its audio bytes
//! plus its key's text and voice (so a budget bounds memory, not just audio).
//! Lookups and inserts are `O(log n)`: a hash map for the entries and an
//! ordered map from "last used" ticks to keys for the eviction order.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use voice_agent_proto::AudioFormat;

/// Fixed bookkeeping charged per entry on top of its bytes.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// What identifies a synthesized phrase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Provider name.
    pub provider: &'static str,
    /// Voice, as resolved (the default filled in).
    pub voice: String,
    /// Output encoding.
    pub format: AudioFormat,
    /// Output rate in Hz.
    pub sample_rate: u32,
    /// The text exactly as requested.
    pub text: String,
}

impl CacheKey {
    /// Bytes this key is charged for.
    fn cost(&self) -> usize {
        self.voice.len() + self.text.len() + ENTRY_OVERHEAD_BYTES
    }
}

#[derive(Debug)]
struct Entry {
    audio: Bytes,
    tick: u64,
}

/// Counts of one cache operation, for the exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Whether the entry is now cached (false when larger than the budget).
    pub stored: bool,
    /// Entries evicted to make room.
    pub evicted: usize,
}

/// An LRU map from [`CacheKey`] to encoded audio under a byte budget.
#[derive(Debug)]
pub struct PhraseCache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: HashMap<CacheKey, Entry>,
    order: BTreeMap<u64, CacheKey>,
}

impl PhraseCache {
    /// An empty cache holding at most `budget` bytes; 0 disables it.
    pub fn new(budget: usize) -> Self {
        PhraseCache {
            budget,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes charged now (audio plus keys), never above the budget.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is cached, without touching its recency.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.entries.contains_key(key)
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The audio for `key`, marking it most recently used.
    pub fn get(&mut self, key: &CacheKey) -> Option<Bytes> {
        let tick = self.next_tick();
        let entry = self.entries.get_mut(key)?;
        if let Some(k) = self.order.remove(&entry.tick) {
            self.order.insert(tick, k);
        }
        entry.tick = tick;
        Some(entry.audio.clone())
    }

    /// Stores `audio` under `key` as most recently used, evicting least
    /// recently used entries until everything fits. An entry larger than
    /// the whole budget is not stored (and evicts nothing).
    pub fn insert(&mut self, key: CacheKey, audio: Bytes) -> InsertOutcome {
        let cost = key.cost() + audio.len();
        if cost > self.budget {
            return InsertOutcome::default();
        }
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&old.tick);
            self.used -= key.cost() + old.audio.len();
        }
        let mut evicted = 0;
        while self.used + cost > self.budget {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&victim) {
                self.used -= victim.cost() + entry.audio.len();
                evicted += 1;
            }
        }
        let tick = self.next_tick();
        self.order.insert(tick, key.clone());
        self.entries.insert(key, Entry { audio, tick });
        self.used += cost;
        InsertOutcome {
            stored: true,
            evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> CacheKey {
        CacheKey {
            provider: "local",
            voice: "en-us".into(),
            format: AudioFormat::Pcm16,
            sample_rate: 16_000,
            text: text.into(),
        }
    }

    fn audio(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    /// Budget for `n` entries of `bytes` audio with one-letter texts.
    fn budget_for(n: usize, bytes: usize) -> usize {
        n * (bytes + key("a").cost())
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let mut cache = PhraseCache::new(budget_for(3, 100));
        for t in ["a", "b", "c"] {
            assert_eq!(
                cache.insert(key(t), audio(100)),
                InsertOutcome {
                    stored: true,
                    evicted: 0
                }
            );
        }
        assert_eq!(cache.used_bytes(), cache.budget());
        // Touch "a": "b" is now the least recently used.
        assert!(cache.get(&key("a")).is_some());
        let out = cache.insert(key("d"), audio(100));
        assert_eq!(out.evicted, 1);
        assert!(!cache.contains(&key("b")));
        for t in ["a", "c", "d"] {
            assert!(cache.contains(&key(t)), "{t}");
        }
        // A bigger entry evicts as many as needed, oldest first.
        let out = cache.insert(key("e"), audio(250));
        assert_eq!(out.evicted, 2);
        assert!(cache.contains(&key("d")) && cache.contains(&key("e")));
        assert!(cache.used_bytes() <= cache.budget());
    }

    #[test]
    fn keys_differ_by_every_field() {
        let mut cache = PhraseCache::new(1 << 20);
        cache.insert(key("hi"), audio(10));
        let mut other = key("hi");
        other.format = AudioFormat::Mulaw;
        assert!(cache.get(&other).is_none());
        other = key("hi");
        other.sample_rate = 8_000;
        assert!(cache.get(&other).is_none());
        other = key("hi");
        other.voice = "en-gb".into();
        assert!(cache.get(&other).is_none());
        other = key("hi");
        other.provider = "elevenlabs";
        assert!(cache.get(&other).is_none());
        assert!(cache.get(&key("hi ")).is_none());
        assert_eq!(cache.get(&key("hi")).expect("hit").len(), 10);
    }

    #[test]
    fn oversized_and_disabled() {
        let mut cache = PhraseCache::new(budget_for(1, 100));
        cache.insert(key("a"), audio(100));
        let out = cache.insert(key("big"), audio(1_000));
        assert_eq!(out, InsertOutcome::default());
        assert!(
            cache.contains(&key("a")),
            "an oversized entry evicts nothing"
        );

        let mut off = PhraseCache::new(0);
        assert!(!off.insert(key("a"), audio(1)).stored);
        assert!(off.is_empty());
        assert!(off.get(&key("a")).is_none());
    }

    #[test]
    fn replacing_an_entry_keeps_the_accounting_right() {
        let mut cache = PhraseCache::new(budget_for(2, 100));
        cache.insert(key("a"), audio(100));
        cache.insert(key("a"), audio(50));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used_bytes(), 50 + key("a").cost());
        assert_eq!(cache.get(&key("a")).expect("hit").len(), 50);
    }
}
