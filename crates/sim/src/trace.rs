//! The trace hash: a fingerprint of everything that happened in a run.
//!
//! Two runs of the same seed must produce the same hash, in the same process or in
//! two processes. That rules out `std`'s `RandomState` (seeded per process), so the
//! hash is FNV-1a over fields the simulator feeds it explicitly.

/// An FNV-1a 64-bit hasher over explicitly fed words.
#[derive(Clone, Debug)]
pub struct TraceHasher {
    state: u64,
    events: u64,
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher {
            state: FNV_OFFSET_BASIS,
            events: 0,
        }
    }
}

impl TraceHasher {
    /// Feeds raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state ^= u64::from(*byte);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }

    /// Feeds one word.
    pub fn word(&mut self, word: u64) {
        self.bytes(&word.to_le_bytes());
    }

    /// Records one event made of a tag and some words.
    pub fn event(&mut self, tag: u8, words: &[u64]) {
        self.events += 1;
        self.bytes(&[tag]);
        for word in words {
            self.word(*word);
        }
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.state
    }

    /// How many events were recorded.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// FNV-1a of a byte string, used to fingerprint log entries.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hasher = TraceHasher::default();
    hasher.bytes(bytes);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        // Reference values of FNV-1a 64 for "" and "a".
        assert_eq!(fingerprint(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fingerprint(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
