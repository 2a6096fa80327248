//! The crate's one error enum.

use serde::{Deserialize, Serialize};

/// Everything that can go wrong in the key-value state machine.
///
/// Request errors (a rejected command, an expired session, a compacted history
/// query) are deterministic: every replica computes the same one, so they are also
/// stored in client sessions and snapshots, hence `Serialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    /// A key was empty; every stored key has at least one byte.
    #[error("key is empty")]
    KeyEmpty,
    /// A key was longer than `KV_KEY_BYTES_MAX`.
    #[error("key of {length_bytes} bytes exceeds the limit")]
    KeyTooLong {
        /// Length of the rejected key.
        length_bytes: u64,
    },
    /// A value (or a value compare operand) was larger than `KV_VALUE_BYTES_MAX`.
    #[error("value of {length_bytes} bytes exceeds the limit")]
    ValueTooLarge {
        /// Length of the rejected value.
        length_bytes: u64,
    },
    /// A transaction list (compares, success or failure) was longer than
    /// `KV_TXN_OPERATIONS_MAX`.
    #[error("transaction list of {count} entries exceeds the limit")]
    TooManyTxnOperations {
        /// Length of the rejected list.
        count: u64,
    },
    /// A range or history limit was zero or above `KV_RANGE_LIMIT_MAX`.
    #[error("limit {limit} is outside 1..=KV_RANGE_LIMIT_MAX")]
    RangeLimitInvalid {
        /// The rejected limit.
        limit: u64,
    },
    /// A client id was empty or longer than `KV_SESSION_CLIENT_ID_BYTES_MAX`.
    #[error("client id of {length_bytes} bytes is empty or exceeds the limit")]
    ClientIdInvalid {
        /// Length of the rejected client id.
        length_bytes: u64,
    },
    /// A request sequence number was 0; sequences start at 1.
    #[error("sequence numbers start at 1")]
    SequenceZero,
    /// The request is too old to judge (or its session is gone): it was not
    /// applied now, and whether it was applied before cannot be known.
    #[error("session expired")]
    SessionExpired,
    /// A compaction asked for a revision above the current one.
    #[error("compaction revision {requested} is above the current revision {current}")]
    CompactRevisionAboveCurrent {
        /// The requested compaction revision.
        requested: u64,
        /// The store's current revision.
        current: u64,
    },
    /// The requested history lies before the compaction revision.
    #[error("history before revision {compact_revision} has been compacted")]
    Compacted {
        /// The store's compaction revision.
        compact_revision: u64,
    },
    /// An encoded command was longer than `KV_COMMAND_BYTES_MAX`.
    #[error("encoded command of {length_bytes} bytes exceeds the limit")]
    CommandTooLarge {
        /// Length of the rejected encoding.
        length_bytes: u64,
    },
    /// An encoded command had an unknown format version.
    #[error("command format version {version} is not supported")]
    CommandVersionUnsupported {
        /// The version byte found.
        version: u8,
    },
    /// An encoded command could not be decoded (bad structure or trailing bytes).
    #[error("command encoding is malformed")]
    CommandMalformed,
    /// A snapshot was larger than `SNAPSHOT_BYTES_MAX` or shorter than its header.
    #[error("snapshot of {length_bytes} bytes has an impossible length")]
    SnapshotLengthInvalid {
        /// Length of the rejected snapshot.
        length_bytes: u64,
    },
    /// A snapshot did not start with the expected magic bytes.
    #[error("snapshot magic mismatch")]
    SnapshotMagicMismatch,
    /// A snapshot had an unknown format version.
    #[error("snapshot format version {version} is not supported")]
    SnapshotVersionUnsupported {
        /// The version byte found.
        version: u8,
    },
    /// A snapshot's CRC32C did not match its contents.
    #[error("snapshot checksum mismatch")]
    SnapshotChecksumMismatch,
    /// A snapshot's payload was malformed, had trailing bytes, broke a limit or
    /// an invariant of the store.
    #[error("snapshot is malformed")]
    SnapshotMalformed,
}
