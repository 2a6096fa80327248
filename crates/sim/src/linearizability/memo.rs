//! The set of linearized operations and the memo cache of configurations
//! (linearized set, model state) that the search has already entered.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

const WORD_BITS: u32 = u64::BITS;

/// The operations linearized on the current search path, as two bitsets: completed
/// operations (numbered in call order) and unknown-outcome ones.
pub(super) struct LinearizedSet {
    completed_count: u32,
    completed_words: Vec<u64>,
    unknown_words: Vec<u64>,
}

impl LinearizedSet {
    /// An empty set over `operation_count` operations, the first `completed_count`
    /// of them completed.
    pub(super) fn new(completed_count: u32, operation_count: u32) -> Self {
        assert!(
            completed_count <= operation_count,
            "more completed operations than operations"
        );
        let unknown_count = operation_count - completed_count;
        Self {
            completed_count,
            completed_words: vec![0; completed_count.div_ceil(WORD_BITS) as usize],
            unknown_words: vec![0; unknown_count.div_ceil(WORD_BITS) as usize],
        }
    }

    fn word_and_mask(&self, operation: u32) -> (usize, bool, u64) {
        let (is_completed, bit) = if operation < self.completed_count {
            (true, operation)
        } else {
            (false, operation - self.completed_count)
        };
        (
            (bit / WORD_BITS) as usize,
            is_completed,
            1 << (bit % WORD_BITS),
        )
    }

    fn word_mut(&mut self, operation: u32) -> (&mut u64, u64) {
        let (index, is_completed, mask) = self.word_and_mask(operation);
        let words = if is_completed {
            &mut self.completed_words
        } else {
            &mut self.unknown_words
        };
        let word = words
            .get_mut(index)
            .expect("operation number beyond the partition's operation count");
        (word, mask)
    }

    /// Whether `operation` is in the set.
    pub(super) fn contains(&self, operation: u32) -> bool {
        let (index, is_completed, mask) = self.word_and_mask(operation);
        let words = if is_completed {
            &self.completed_words
        } else {
            &self.unknown_words
        };
        words[index] & mask != 0
    }

    /// Adds `operation`, which must not be in the set.
    pub(super) fn insert(&mut self, operation: u32) {
        let (word, mask) = self.word_mut(operation);
        assert!(
            *word & mask == 0,
            "operation {operation} linearized twice on one path"
        );
        *word |= mask;
    }

    /// Removes `operation`, which must be in the set.
    pub(super) fn remove(&mut self, operation: u32) {
        let (word, mask) = self.word_mut(operation);
        assert!(
            *word & mask != 0,
            "removing operation {operation}, which is not linearized"
        );
        *word &= !mask;
    }

    /// Writes a compact encoding of the set of completed operations into
    /// `completed_key` and the unknown-outcome ones into `unknown_key` (both cleared
    /// first).
    ///
    /// `completed_key` is `[f, n, completed_words[f..f + n]...]` where `f` is the
    /// first word that is not all ones (every word before it is) and the `n` words
    /// run to the last non-zero one. The encoding is injective (it can be decoded), so
    /// comparing encodings compares sets; and since operations are numbered in call
    /// order, `n` stays about the width of the window of concurrent operations instead
    /// of growing with the history. `unknown_key` is the unknown bitset without its
    /// trailing zero words (unknown operations may stay pending forever, so they would
    /// pin `f` if they shared the completed bitset).
    pub(super) fn write_keys(&self, completed_key: &mut Vec<u64>, unknown_key: &mut Vec<u64>) {
        completed_key.clear();
        let words = &self.completed_words;
        let first_incomplete = words
            .iter()
            .position(|&word| word != u64::MAX)
            .unwrap_or(words.len());
        let completed_end = words
            .iter()
            .rposition(|&word| word != 0)
            .map_or(0, |last| last + 1);
        let tail = &words[first_incomplete..completed_end.max(first_incomplete)];
        completed_key.push(first_incomplete as u64);
        completed_key.push(tail.len() as u64);
        completed_key.extend_from_slice(tail);

        unknown_key.clear();
        let unknown_end = self
            .unknown_words
            .iter()
            .rposition(|&word| word != 0)
            .map_or(0, |last| last + 1);
        unknown_key.extend_from_slice(&self.unknown_words[..unknown_end]);
    }
}

/// Configurations already entered: (completed operations linearized,
/// unknown-outcome operations linearized, state).
///
/// Entries are found through a hash of the two keys and the state; the words of all
/// keys live in one vector, so an entry costs its state plus a few words. Only
/// membership is ever asked, so hash values cannot influence the search order.
pub(super) struct MemoCache<S> {
    chain_heads: HashMap<u64, usize, BuildHasherDefault<PremixedHasher>>,
    entries: Vec<CacheEntry<S>>,
    key_words: Vec<u64>,
}

struct CacheEntry<S> {
    key_start: usize,
    completed_key_len: usize,
    unknown_key_len: usize,
    state: S,
    next_in_chain: Option<usize>,
}

impl<S: Clone + Eq + Hash> MemoCache<S> {
    /// An empty cache.
    pub(super) fn new() -> Self {
        Self {
            chain_heads: HashMap::default(),
            entries: Vec::new(),
            key_words: Vec::new(),
        }
    }

    /// Configurations recorded.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Records the configuration and returns `true` if it was not recorded yet;
    /// returns `false` (recording nothing) if it was.
    pub(super) fn insert_if_absent(
        &mut self,
        completed_key: &[u64],
        unknown_key: &[u64],
        state: &S,
    ) -> bool {
        let mut hasher = FxHasher::default();
        completed_key.hash(&mut hasher);
        unknown_key.hash(&mut hasher);
        state.hash(&mut hasher);
        let hash = hasher.finish();

        let head = self.chain_heads.get(&hash).copied();
        let mut cursor = head;
        while let Some(index) = cursor {
            let entry = &self.entries[index];
            let completed_end = entry.key_start + entry.completed_key_len;
            let unknown_end = completed_end + entry.unknown_key_len;
            if self.key_words[entry.key_start..completed_end] == *completed_key
                && self.key_words[completed_end..unknown_end] == *unknown_key
                && entry.state == *state
            {
                return false;
            }
            cursor = entry.next_in_chain;
        }
        let key_start = self.key_words.len();
        self.key_words.extend_from_slice(completed_key);
        self.key_words.extend_from_slice(unknown_key);
        self.entries.push(CacheEntry {
            key_start,
            completed_key_len: completed_key.len(),
            unknown_key_len: unknown_key.len(),
            state: state.clone(),
            next_in_chain: head,
        });
        self.chain_heads.insert(hash, self.entries.len() - 1);
        true
    }
}

/// The Fx hash (as in rustc): fast, deterministic, good enough for cache lookups
/// whose collisions are resolved by full comparison.
#[derive(Default)]
struct FxHasher {
    hash: u64,
}

impl FxHasher {
    const MULTIPLIER: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add_word(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::MULTIPLIER);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add_word(u64::from_le_bytes(word));
        }
        let remainder = chunks.remainder();
        if !remainder.is_empty() {
            let mut word = [0; 8];
            word[..remainder.len()].copy_from_slice(remainder);
            self.add_word(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.add_word(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.add_word(word as u64);
    }

    fn finish(&self) -> u64 {
        // Fx leaves the low bits weak (a product's low bits depend only on the
        // factors' low bits), and the hash map picks buckets by low bits: mix with
        // MurmurHash3's finaliser so every output bit depends on every input bit.
        let mut hash = self.hash;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }
}

/// Passes through a `u64` that is already a well-mixed hash.
#[derive(Default)]
struct PremixedHasher {
    hash: u64,
}

impl Hasher for PremixedHasher {
    fn write(&mut self, _bytes: &[u8]) {
        unreachable!("PremixedHasher only hashes u64 keys");
    }

    fn write_u64(&mut self, hash: u64) {
        self.hash = hash;
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_of(set: &LinearizedSet) -> (Vec<u64>, Vec<u64>) {
        let (mut completed, mut unknown) = (Vec::new(), Vec::new());
        set.write_keys(&mut completed, &mut unknown);
        (completed, unknown)
    }

    #[test]
    fn compact_key_distinguishes_sets_and_stays_small_behind_the_frontier() {
        let mut set = LinearizedSet::new(200, 203);
        assert_eq!(keys_of(&set), (vec![0, 0], vec![]));
        for operation in 0..130 {
            set.insert(operation);
        }
        // Words 0 and 1 are full; word 2 holds operations 128 and 129.
        assert_eq!(keys_of(&set), (vec![2, 1, 0b11], vec![]));
        set.insert(201);
        assert!(set.contains(201) && set.contains(129) && !set.contains(130));
        assert_eq!(keys_of(&set), (vec![2, 1, 0b11], vec![0b10]));
        set.remove(201);
        // Operation 195 is bit 3 of word 3.
        set.insert(195);
        assert_eq!(keys_of(&set), (vec![2, 2, 0b11, 1 << 3], vec![]));
        set.remove(5);
        assert_eq!(keys_of(&set).0[..2], [0, 4]);
    }

    #[test]
    fn cache_reports_each_configuration_once() {
        let mut cache = MemoCache::new();
        let state = |text: &str| text.to_string();
        assert!(cache.insert_if_absent(&[0, 1, 5], &[0b01], &state("a")));
        assert!(!cache.insert_if_absent(&[0, 1, 5], &[0b01], &state("a")));
        // Any difference in either key or the state makes another configuration,
        // including where the two keys meet.
        assert!(cache.insert_if_absent(&[0, 1, 5], &[0b11], &state("a")));
        assert!(cache.insert_if_absent(&[0, 1, 5], &[], &state("a")));
        assert!(cache.insert_if_absent(&[0, 1, 5, 1], &[], &state("a")));
        assert!(cache.insert_if_absent(&[0, 1, 5], &[0b01], &state("b")));
        assert!(cache.insert_if_absent(&[0, 1, 6], &[0b01], &state("a")));
        assert!(!cache.insert_if_absent(&[0, 1, 6], &[0b01], &state("a")));
        assert_eq!(cache.len(), 6);
    }
}
