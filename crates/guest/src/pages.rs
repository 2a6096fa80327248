//! Finding the 4 KiB pages of a linear memory that changed since the previous
//! checkpoint, by comparing per-page hashes.
//!
//! Why hashes and not a shadow copy or write protection: a shadow copy doubles the
//! guest's memory on the primary; write protection (`mprotect` and a fault
//! handler) needs `unsafe` and reaches into wasmtime's memory management. Hashing
//! reads each page once per checkpoint and keeps 16 bytes per 4 KiB page.
//!
//! Why xxh3-128: the bench `crates/guest/benches/checkpoint.rs` hashes 64 MiB as
//! 4 KiB pages with xxh3-64, xxh3-128 and crc32c. xxh3-128 costs the same as
//! xxh3-64 (37.8 ms against 37.6 ms on a loaded 2-core machine), so its extra bits
//! are free: a changed page that keeps its hash — and so would be silently left out
//! of a checkpoint — is a 2^-128 event per changed page instead of 2^-64.
//! Hardware crc32c was faster (22.7 ms) but its 32 bits make that event 2^-32 per
//! changed page, which millions of checkpointed pages would eventually hit.

use xxhash_rust::xxh3::xxh3_128;

/// Bytes of one checkpoint page.
pub const CHECKPOINT_PAGE_BYTES: usize = 4096;
/// Bytes of one WebAssembly page (the unit of `memory.grow`).
pub const WASM_PAGE_BYTES: usize = 65_536;

/// The per-page hashes of one linear memory as of the last checkpoint.
#[derive(Clone, Debug)]
pub struct PageHashes {
    hashes: Vec<u128>,
    zero_page_hash: u128,
}

impl Default for PageHashes {
    fn default() -> Self {
        Self::new()
    }
}

impl PageHashes {
    /// Hashes of an empty memory: every page compares as the zero page, so the
    /// next [`Self::update`] reports every non-zero page (a full checkpoint).
    pub fn new() -> Self {
        Self {
            hashes: Vec::new(),
            zero_page_hash: xxh3_128(&[0; CHECKPOINT_PAGE_BYTES]),
        }
    }

    /// The hashes of every page of `memory` (after a restore, so the next
    /// checkpoint carries only pages changed since the image).
    pub fn of(memory: &[u8]) -> Self {
        let mut hashes = Self::new();
        hashes.update(memory);
        hashes
    }

    /// Pages of `memory` tracked (its size when last updated, in 4 KiB pages).
    pub fn page_count(&self) -> usize {
        self.hashes.len()
    }

    /// The indexes (in increasing order) of the pages of `memory` whose hash
    /// differs from the one recorded — pages the memory grew by are compared with
    /// the zero page — and records the new hashes.
    pub fn update(&mut self, memory: &[u8]) -> Vec<u32> {
        assert!(
            memory.len() % CHECKPOINT_PAGE_BYTES == 0,
            "linear memory is a whole number of 64 KiB pages"
        );
        assert!(
            memory.len() / CHECKPOINT_PAGE_BYTES >= self.hashes.len(),
            "linear memory never shrinks"
        );
        let mut changed = Vec::new();
        for (index, page) in memory.chunks_exact(CHECKPOINT_PAGE_BYTES).enumerate() {
            let hash = xxh3_128(page);
            let previous = self
                .hashes
                .get(index)
                .copied()
                .unwrap_or(self.zero_page_hash);
            if hash != previous {
                // Memory is at most 4 GiB: a 4 KiB page index fits in a u32.
                changed.push(u32::try_from(index).unwrap_or(u32::MAX));
            }
            match self.hashes.get_mut(index) {
                Some(slot) => *slot = hash,
                None => self.hashes.push(hash),
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_update_reports_non_zero_pages_then_only_changes() {
        let mut memory = vec![0u8; WASM_PAGE_BYTES];
        memory[5] = 1;
        memory[3 * CHECKPOINT_PAGE_BYTES + 7] = 9;
        let mut hashes = PageHashes::new();
        assert_eq!(hashes.update(&memory), vec![0, 3]);
        assert_eq!(hashes.update(&memory), Vec::<u32>::new());
        memory[15 * CHECKPOINT_PAGE_BYTES] = 2;
        memory[3 * CHECKPOINT_PAGE_BYTES + 7] = 0;
        assert_eq!(hashes.update(&memory), vec![3, 15]);
    }

    #[test]
    fn grown_pages_compare_with_the_zero_page() {
        let mut memory = vec![0u8; WASM_PAGE_BYTES];
        let mut hashes = PageHashes::of(&memory);
        memory.resize(2 * WASM_PAGE_BYTES, 0);
        memory[WASM_PAGE_BYTES + 1] = 4;
        assert_eq!(hashes.update(&memory), vec![16]);
        assert_eq!(hashes.page_count(), 32);
    }
}
