//! The payload of one WAL record: a format version byte, then a `postcard`-encoded
//! [`LogRecord`]. Sizes are checked against `understudy_types::limits` before
//! encoding; decoding is bounded by the WAL's record limit (postcard never
//! allocates more than the input it was given) and re-checks the limits after.

use crate::error::RaftLogError;
use serde::{Deserialize, Serialize};
use understudy_raft::{Entry, EntryPayload, HardState, Membership, SnapshotMeta};
use understudy_types::limits::{
    RAFT_ENTRY_BYTES_MAX, RAFT_MEMBERS_MAX, WAL_RECORD_PAYLOAD_BYTES_MAX,
};

/// The record format this build writes (the first byte of every payload).
pub const RECORD_FORMAT_VERSION: u8 = 1;
/// The record formats this build reads.
pub const RECORD_FORMAT_VERSIONS_SUPPORTED: &[u8] = &[1];

/// Encoded overhead of an entry beyond its command: version byte, enum tags, term,
/// index, lengths, and a membership of at most `RAFT_MEMBERS_MAX` node ids
/// (a varint `u64` takes at most 10 bytes).
const ENTRY_OVERHEAD_BYTES_MAX: u64 = 64 + 10 * RAFT_MEMBERS_MAX as u64;
const _: () =
    assert!(RAFT_ENTRY_BYTES_MAX + ENTRY_OVERHEAD_BYTES_MAX <= WAL_RECORD_PAYLOAD_BYTES_MAX);

/// Where the latest snapshot's data lives and how to verify it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReference {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The data is in the side file `snapshot_file_name(file_number)`.
    pub file_number: u64,
    /// Length of the data.
    pub data_length_bytes: u64,
    /// CRC32C of the data.
    pub data_checksum: u32,
    /// False: every entry stored before this record is discarded. True: only the
    /// entries at or below `meta.last_index` are.
    pub keep_entries_after: bool,
}

/// One durable change to the Raft state, in WAL order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum LogRecord {
    /// The term and vote are now this.
    HardState(HardState),
    /// Store this entry, first discarding every stored entry at or after its index.
    Entry(Entry),
    /// A snapshot replaces the log up to its last index (see `keep_entries_after`).
    Snapshot(SnapshotReference),
}

/// The encoding side of [`LogRecord`], by reference (no copy of a large entry).
/// Variant order must match `LogRecord`: postcard encodes the variant index.
#[derive(Serialize)]
enum LogRecordRef<'a> {
    HardState(&'a HardState),
    Entry(&'a Entry),
    Snapshot(&'a SnapshotReference),
}

/// Refuses a membership larger than the limit.
pub fn check_membership(membership: &Membership) -> Result<(), RaftLogError> {
    let member_count = membership.voters.len() + membership.learners.len();
    if member_count > RAFT_MEMBERS_MAX {
        return Err(RaftLogError::MembershipTooLarge {
            member_count,
            limit: RAFT_MEMBERS_MAX,
        });
    }
    Ok(())
}

/// Refuses an entry whose encoding could exceed the WAL's record limit.
pub fn check_entry(entry: &Entry) -> Result<(), RaftLogError> {
    match &entry.payload {
        EntryPayload::Empty => Ok(()),
        EntryPayload::Command(command) => {
            let length_bytes = command.len() as u64;
            if length_bytes > RAFT_ENTRY_BYTES_MAX {
                return Err(RaftLogError::EntryTooLarge {
                    index: entry.index,
                    length_bytes,
                    limit_bytes: RAFT_ENTRY_BYTES_MAX,
                });
            }
            Ok(())
        }
        EntryPayload::Membership(membership) => check_membership(membership),
    }
}

fn encode(record: &LogRecordRef<'_>) -> Vec<u8> {
    let mut payload = vec![RECORD_FORMAT_VERSION];
    // Serializing plain data into a Vec cannot fail: postcard only fails on
    // unsupported types or a full fixed-size buffer, neither of which applies.
    let encoded = postcard::to_extend(record, payload).expect("postcard encodes into a Vec");
    payload = encoded;
    assert!(
        payload.len() as u64 <= WAL_RECORD_PAYLOAD_BYTES_MAX,
        "checked record encoded to {} bytes",
        payload.len()
    );
    payload
}

/// Encodes a hard state record.
pub fn encode_hard_state(hard_state: &HardState) -> Vec<u8> {
    encode(&LogRecordRef::HardState(hard_state))
}

/// Encodes an entry record; call [`check_entry`] first.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    encode(&LogRecordRef::Entry(entry))
}

/// Encodes a snapshot record; call [`check_membership`] on its meta first.
pub fn encode_snapshot(reference: &SnapshotReference) -> Vec<u8> {
    encode(&LogRecordRef::Snapshot(reference))
}

/// Why a record failed to decode.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeProblem {
    /// An empty payload.
    Empty,
    /// A version byte this build does not read.
    UnsupportedVersion(u8),
    /// Postcard refused it, bytes were left over, or a limit was exceeded.
    Malformed(&'static str),
}

/// Decodes a record payload written by `encode_*`.
pub fn decode(payload: &[u8]) -> Result<LogRecord, DecodeProblem> {
    let (&version, body) = payload.split_first().ok_or(DecodeProblem::Empty)?;
    if !RECORD_FORMAT_VERSIONS_SUPPORTED.contains(&version) {
        return Err(DecodeProblem::UnsupportedVersion(version));
    }
    let (record, rest): (LogRecord, &[u8]) = postcard::take_from_bytes(body)
        .map_err(|_| DecodeProblem::Malformed("not a valid Raft log record"))?;
    if !rest.is_empty() {
        return Err(DecodeProblem::Malformed("trailing bytes after the record"));
    }
    let within_limits = match &record {
        LogRecord::HardState(_) => true,
        LogRecord::Entry(entry) => check_entry(entry).is_ok(),
        LogRecord::Snapshot(reference) => check_membership(&reference.meta.membership).is_ok(),
    };
    if !within_limits {
        return Err(DecodeProblem::Malformed("record exceeds a size limit"));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use understudy_types::{LogIndex, NodeId, Term};

    fn entry(index: u64, payload: EntryPayload) -> Entry {
        Entry {
            term: Term(3),
            index: LogIndex(index),
            payload,
        }
    }

    #[test]
    fn every_record_kind_round_trips() {
        let records = [
            LogRecord::HardState(HardState {
                term: Term(4),
                voted_for: Some(NodeId(2)),
            }),
            LogRecord::Entry(entry(1, EntryPayload::Empty)),
            LogRecord::Entry(entry(
                2,
                EntryPayload::Command(Bytes::from_static(b"put x")),
            )),
            LogRecord::Entry(entry(
                3,
                EntryPayload::Membership(Membership::with_voters([NodeId(1)])),
            )),
            LogRecord::Snapshot(SnapshotReference {
                meta: SnapshotMeta::default(),
                file_number: 9,
                data_length_bytes: 5,
                data_checksum: 77,
                keep_entries_after: true,
            }),
        ];
        for record in records {
            let encoded = match &record {
                LogRecord::HardState(hard_state) => encode_hard_state(hard_state),
                LogRecord::Entry(entry) => encode_entry(entry),
                LogRecord::Snapshot(reference) => encode_snapshot(reference),
            };
            assert_eq!(decode(&encoded), Ok(record));
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        let mut encoded = encode_hard_state(&HardState::default());
        encoded[0] = 2;
        assert_eq!(decode(&encoded), Err(DecodeProblem::UnsupportedVersion(2)));
        assert_eq!(decode(&[]), Err(DecodeProblem::Empty));
        assert!(matches!(
            decode(&[1, 200, 200]),
            Err(DecodeProblem::Malformed(_))
        ));
        let mut trailing = encode_hard_state(&HardState::default());
        trailing.push(0);
        assert!(matches!(
            decode(&trailing),
            Err(DecodeProblem::Malformed(_))
        ));
    }

    #[test]
    fn oversized_entries_and_memberships_are_refused() {
        let command = Bytes::from(vec![0; RAFT_ENTRY_BYTES_MAX as usize + 1]);
        let too_large = entry(1, EntryPayload::Command(command));
        assert!(matches!(
            check_entry(&too_large),
            Err(RaftLogError::EntryTooLarge { .. })
        ));
        let crowd = Membership::with_voters((0..=RAFT_MEMBERS_MAX as u64).map(NodeId));
        assert!(matches!(
            check_membership(&crowd),
            Err(RaftLogError::MembershipTooLarge { .. })
        ));
        let largest = entry(
            1,
            EntryPayload::Command(Bytes::from(vec![0; RAFT_ENTRY_BYTES_MAX as usize])),
        );
        assert!(encode_entry(&largest).len() as u64 <= WAL_RECORD_PAYLOAD_BYTES_MAX);
    }
}
