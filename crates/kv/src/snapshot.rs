//! The snapshot format: the whole state, checksummed.
//!
//! Layout (little-endian):
//! `magic: [u8; 8] = "USKVSNAP"`, `format_version: u8 = 1`,
//! `payload_length_bytes: u64`, `payload_crc32c: u32`, then `payload`: the
//! postcard encoding of the store (revisions, last applied index, live keys,
//! history by revision, sessions). Nothing may follow the payload.

use bytes::Bytes;
use understudy_types::limits::{KV_TXN_OPERATIONS_MAX, SNAPSHOT_BYTES_MAX};

use crate::command::{validate_key, validate_value};
use crate::store::{event_bytes, EventKind, KeyValue};
use crate::{KvError, Store};

/// First eight bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"USKVSNAP";
/// Format version of [`Store::snapshot`].
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: usize = 8 + 1 + 8 + 4;

impl Store {
    /// Encodes the whole state (see the module layout above).
    pub fn snapshot(&self) -> Bytes {
        // Serialising plain data into a Vec cannot fail (see `Command::encode`).
        let payload = postcard::to_allocvec(self).expect("serialising plain data cannot fail");
        let mut encoded = Vec::with_capacity(HEADER_BYTES + payload.len());
        encoded.extend_from_slice(&SNAPSHOT_MAGIC);
        encoded.push(SNAPSHOT_FORMAT_VERSION);
        encoded.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        encoded.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        encoded.extend_from_slice(&payload);
        assert!(
            encoded.len() as u64 <= SNAPSHOT_BYTES_MAX,
            "store grew past SNAPSHOT_BYTES_MAX; compaction must keep it smaller"
        );
        Bytes::from(encoded)
    }

    /// Decodes and validates a snapshot made by [`Store::snapshot`].
    pub fn restore(encoded: &[u8]) -> Result<Store, KvError> {
        let length_bytes = encoded.len() as u64;
        if encoded.len() < HEADER_BYTES || length_bytes > SNAPSHOT_BYTES_MAX {
            return Err(KvError::SnapshotLengthInvalid { length_bytes });
        }
        let (header, payload) = encoded.split_at(HEADER_BYTES);
        if header[..8] != SNAPSHOT_MAGIC {
            return Err(KvError::SnapshotMagicMismatch);
        }
        if header[8] != SNAPSHOT_FORMAT_VERSION {
            return Err(KvError::SnapshotVersionUnsupported { version: header[8] });
        }
        let mut length_field = [0u8; 8];
        length_field.copy_from_slice(&header[9..17]);
        // The declared length must match exactly: no truncation, no trailing bytes.
        if u64::from_le_bytes(length_field) != payload.len() as u64 {
            return Err(KvError::SnapshotLengthInvalid { length_bytes });
        }
        let mut crc_field = [0u8; 4];
        crc_field.copy_from_slice(&header[17..21]);
        if u32::from_le_bytes(crc_field) != crc32c::crc32c(payload) {
            return Err(KvError::SnapshotChecksumMismatch);
        }
        // Allocation is bounded by the payload, itself bounded by
        // SNAPSHOT_BYTES_MAX: postcard checks byte lengths against the remaining
        // input and serde caps sequence preallocation. Limits are checked below.
        let (mut store, rest): (Store, &[u8]) =
            postcard::take_from_bytes(payload).map_err(|_| KvError::SnapshotMalformed)?;
        if !rest.is_empty() {
            return Err(KvError::SnapshotMalformed);
        }
        store.validate_restored()?;
        Ok(store)
    }

    /// Checks every limit and invariant `apply` maintains, so a restored store is
    /// one `apply` could have produced.
    fn validate_restored(&mut self) -> Result<(), KvError> {
        let malformed = |_| KvError::SnapshotMalformed;
        if self.compact_revision > self.revision {
            return Err(KvError::SnapshotMalformed);
        }
        for (key, item) in &self.keys {
            validate_item(item, self.revision).map_err(malformed)?;
            let consistent = *key == item.key && item.version >= 1 && item.create_revision >= 1;
            if !consistent {
                return Err(KvError::SnapshotMalformed);
            }
        }
        for (&revision, events) in &self.history {
            let in_range = revision >= self.compact_revision.max(1) && revision <= self.revision;
            let sized = !events.is_empty() && events.len() <= KV_TXN_OPERATIONS_MAX;
            let sorted = events
                .windows(2)
                .all(|pair| pair[0].key_value.key <= pair[1].key_value.key);
            if !in_range || !sized || !sorted {
                return Err(KvError::SnapshotMalformed);
            }
            for event in events {
                validate_item(&event.key_value, revision).map_err(malformed)?;
                let is_delete = event.kind == EventKind::Delete;
                if event.key_value.mod_revision != revision
                    || (is_delete && event.key_value.version != 0)
                {
                    return Err(KvError::SnapshotMalformed);
                }
            }
        }
        self.history_bytes = self.history.values().flatten().map(event_bytes).sum();
        self.sessions.rebuild_after_restore(self.last_applied_index)
    }
}

fn validate_item(item: &KeyValue, revision_max: u64) -> Result<(), KvError> {
    validate_key(&item.key)?;
    validate_value(&item.value)?;
    if item.create_revision > item.mod_revision || item.mod_revision > revision_max {
        return Err(KvError::SnapshotMalformed);
    }
    Ok(())
}
