//! The replicated key-value state machine the simulator runs on top of Raft.
//!
//! Commands are encoded by hand in a small fixed layout; the decoder checks every
//! length before it allocates. Values are strings so that histories read well when a
//! linearizability violation is printed. Reads do not go through the log: they use
//! ReadIndex and are served from this state once it has applied the read point.

use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;
use understudy_types::limits;

/// A write a client submits through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvCommand {
    /// The client that issued the write.
    pub client: u64,
    /// The client's operation number, unique per client.
    pub operation: u64,
    /// The key written.
    pub key: u64,
    /// What the write does.
    pub kind: WriteKind,
    /// The value written or appended.
    pub value: String,
}

/// How a write changes its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Replace the value.
    Put,
    /// Append to the value (a missing key counts as empty).
    Append,
}

/// Bytes before the value: kind, client, operation, key, value length.
const COMMAND_HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 4;

impl KvCommand {
    /// Encodes the command for a log entry.
    pub fn encode(&self) -> Bytes {
        let mut buffer = BytesMut::with_capacity(COMMAND_HEADER_BYTES + self.value.len());
        buffer.put_u8(match self.kind {
            WriteKind::Put => 1,
            WriteKind::Append => 2,
        });
        buffer.put_u64_le(self.client);
        buffer.put_u64_le(self.operation);
        buffer.put_u64_le(self.key);
        let value_bytes = u32::try_from(self.value.len()).expect("values are far below 4 GiB");
        buffer.put_u32_le(value_bytes);
        buffer.put_slice(self.value.as_bytes());
        buffer.freeze()
    }

    /// Decodes a command, or `None` if the bytes are not a well-formed command.
    pub fn decode(bytes: &[u8]) -> Option<KvCommand> {
        if bytes.len() < COMMAND_HEADER_BYTES || bytes.len() as u64 > limits::RAFT_ENTRY_BYTES_MAX {
            return None;
        }
        let mut cursor = Cursor { bytes, at: 0 };
        let kind = match cursor.take(1)?[0] {
            1 => WriteKind::Put,
            2 => WriteKind::Append,
            _ => return None,
        };
        let client = cursor.u64()?;
        let operation = cursor.u64()?;
        let key = cursor.u64()?;
        let value_bytes = u32::from_le_bytes(cursor.take(4)?.try_into().ok()?) as usize;
        if COMMAND_HEADER_BYTES + value_bytes != bytes.len() {
            return None;
        }
        let value = String::from_utf8(cursor.take(value_bytes)?.to_vec()).ok()?;
        Some(KvCommand {
            client,
            operation,
            key,
            kind,
            value,
        })
    }
}

/// The key-value state: a map from key to value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    values: BTreeMap<u64, String>,
}

impl KvStore {
    /// Applies a write.
    pub fn apply(&mut self, command: &KvCommand) {
        match command.kind {
            WriteKind::Put => {
                self.values.insert(command.key, command.value.clone());
            }
            WriteKind::Append => {
                self.values
                    .entry(command.key)
                    .or_default()
                    .push_str(&command.value);
            }
        }
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: u64) -> Option<&str> {
        self.values.get(&key).map(String::as_str)
    }

    /// Serialises the whole state for a snapshot.
    pub fn snapshot(&self) -> Bytes {
        let mut buffer = BytesMut::new();
        buffer.put_u64_le(self.values.len() as u64);
        for (key, value) in &self.values {
            buffer.put_u64_le(*key);
            buffer.put_u64_le(value.len() as u64);
            buffer.put_slice(value.as_bytes());
        }
        buffer.freeze()
    }

    /// Rebuilds the state from a snapshot; an empty snapshot is the empty store.
    pub fn restore(bytes: &[u8]) -> Option<KvStore> {
        let mut store = KvStore::default();
        if bytes.is_empty() {
            return Some(store);
        }
        let mut cursor = Cursor { bytes, at: 0 };
        let count = cursor.u64()?;
        for _ in 0..count {
            let key = cursor.u64()?;
            let length = usize::try_from(cursor.u64()?).ok()?;
            let value = String::from_utf8(cursor.take(length)?.to_vec()).ok()?;
            store.values.insert(key, value);
        }
        (cursor.at == bytes.len()).then_some(store)
    }
}

/// Reads fixed-size fields from a byte slice, refusing to run past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(length)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_reject_malformed_bytes() {
        let command = KvCommand {
            client: 3,
            operation: 9,
            key: 4,
            kind: WriteKind::Append,
            value: "x3.9".into(),
        };
        let encoded = command.encode();
        assert_eq!(KvCommand::decode(&encoded), Some(command));
        assert_eq!(KvCommand::decode(&encoded[..encoded.len() - 1]), None);
        let mut wrong_kind = encoded.to_vec();
        wrong_kind[0] = 7;
        assert_eq!(KvCommand::decode(&wrong_kind), None);
    }

    #[test]
    fn snapshots_round_trip() {
        let mut store = KvStore::default();
        for (key, value) in [(1, "a"), (2, "bb"), (1, "c")] {
            store.apply(&KvCommand {
                client: 0,
                operation: 0,
                key,
                kind: WriteKind::Append,
                value: value.into(),
            });
        }
        assert_eq!(store.get(1), Some("ac"));
        let restored = KvStore::restore(&store.snapshot()).expect("a snapshot we made decodes");
        assert_eq!(restored, store);
        assert_eq!(KvStore::restore(&store.snapshot()[..5]), None);
    }
}
