//! Rebuilding the Raft state from the WAL's records, in order.
//!
//! Compaction removes old segments, so replay may start in the middle of the
//! history: the first records may be entries whose predecessors are gone. Replay
//! therefore keeps a *window*: consecutive entries whose base is not known until a
//! snapshot record says where the log starts. Rules, per record:
//! - hard state: replaces the current one;
//! - entry at index `i`: discards every windowed entry at or after `i` (all of
//!   them if `i` is below the window), then appends; an entry beyond the window's
//!   end + 1 is a gap, hence corruption;
//! - snapshot: becomes the current snapshot; discards the windowed entries at or
//!   below its last index, or all of them unless `keep_entries_after`.
//!
//! At the end there must be a snapshot, and the window must be empty or start
//! right after it. Compaction guarantees that the kept suffix of the WAL holds a
//! copy of the current hard state and snapshot reference after every record of a
//! live entry (see `compaction` in `raft_log.rs`), so the result equals a replay
//! of the whole history.

use crate::error::RaftLogError;
use crate::record::{
    decode, DecodeProblem, LogRecord, SnapshotReference, RECORD_FORMAT_VERSIONS_SUPPORTED,
};
use std::collections::VecDeque;
use understudy_raft::{Entry, HardState};
use understudy_types::{LogIndex, Term};
use understudy_wal::{segment_name, Position, Record};

/// Where a live entry's defining record is, for compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLocation {
    /// The entry's index.
    pub index: LogIndex,
    /// The entry's term.
    pub term: Term,
    /// The WAL position of the record that stored it.
    pub position: Position,
}

/// The state rebuilt by [`replay`].
#[derive(Debug)]
pub struct Replayed {
    /// The latest hard state (default if none was ever stored).
    pub hard_state: HardState,
    /// The latest snapshot record.
    pub snapshot: SnapshotReference,
    /// The entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
    /// Where each of `entries` is stored.
    pub locations: VecDeque<EntryLocation>,
}

/// Replays `records`; `None` if there are none (a fresh directory).
pub fn replay(records: Vec<Record>) -> Result<Option<Replayed>, RaftLogError> {
    let Some(last_record) = records.last() else {
        return Ok(None);
    };
    let last_location = (segment_name(last_record.segment_number), last_record.offset);
    let mut hard_state = HardState::default();
    let mut snapshot: Option<SnapshotReference> = None;
    let mut window: VecDeque<(Entry, Position)> = VecDeque::new();
    for record in records {
        let decoded = decode(&record.payload).map_err(|problem| decode_error(&record, problem))?;
        match decoded {
            LogRecord::HardState(stored) => hard_state = stored,
            LogRecord::Entry(entry) => {
                let index = entry.index.get();
                if let (Some(first), Some(last)) = (window.front(), window.back()) {
                    let (first, last) = (first.0.index.get(), last.0.index.get());
                    if index > last + 1 {
                        let detail =
                            format!("entry {index} follows entry {last}: a gap in the log");
                        return Err(record_error(&record, detail));
                    }
                    window.truncate(index.saturating_sub(first) as usize);
                }
                window.push_back((entry, record.position));
            }
            LogRecord::Snapshot(reference) => {
                if reference.keep_entries_after {
                    let last_index = reference.meta.last_index;
                    while window
                        .front()
                        .is_some_and(|(entry, _)| entry.index <= last_index)
                    {
                        window.pop_front();
                    }
                } else {
                    window.clear();
                }
                snapshot = Some(reference);
            }
        }
    }
    let (file, offset) = last_location;
    let snapshot = snapshot
        .ok_or_else(|| RaftLogError::corrupt(&file, offset, "the log holds no snapshot record"))?;
    let expected_first = snapshot.meta.last_index.next();
    if let Some((entry, _)) = window.front() {
        if entry.index != expected_first {
            let detail = format!(
                "entries start at {} but the snapshot ends at {}",
                entry.index, snapshot.meta.last_index
            );
            return Err(RaftLogError::corrupt(&file, offset, detail));
        }
    }
    let locations = window
        .iter()
        .map(|(entry, position)| EntryLocation {
            index: entry.index,
            term: entry.term,
            position: *position,
        })
        .collect();
    let entries = window.into_iter().map(|(entry, _)| entry).collect();
    Ok(Some(Replayed {
        hard_state,
        snapshot,
        entries,
        locations,
    }))
}

fn record_error(record: &Record, detail: String) -> RaftLogError {
    RaftLogError::corrupt(segment_name(record.segment_number), record.offset, detail)
}

fn decode_error(record: &Record, problem: DecodeProblem) -> RaftLogError {
    match problem {
        DecodeProblem::UnsupportedVersion(found) => RaftLogError::UnsupportedVersion {
            file: segment_name(record.segment_number),
            offset: record.offset,
            found,
            supported: RECORD_FORMAT_VERSIONS_SUPPORTED,
        },
        DecodeProblem::Empty => record_error(record, "empty Raft log record".to_owned()),
        DecodeProblem::Malformed(why) => record_error(record, why.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_entry, encode_hard_state, encode_snapshot};
    use understudy_raft::{EntryPayload, SnapshotMeta};
    use understudy_types::NodeId;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Empty,
        }
    }

    fn snapshot(last_index: u64, keep_entries_after: bool) -> SnapshotReference {
        SnapshotReference {
            meta: SnapshotMeta {
                last_index: LogIndex(last_index),
                ..SnapshotMeta::default()
            },
            file_number: 1,
            data_length_bytes: 0,
            data_checksum: 0,
            keep_entries_after,
        }
    }

    fn records(payloads: Vec<Vec<u8>>) -> Vec<Record> {
        payloads
            .into_iter()
            .enumerate()
            .map(|(index, payload)| Record {
                position: Position(index as u64 + 1),
                payload,
                segment_number: 1,
                offset: 40 + 64 * index as u64,
            })
            .collect()
    }

    fn indexes_and_terms(replayed: &Replayed) -> Vec<(u64, u64)> {
        let entries = replayed.entries.iter();
        entries
            .map(|entry| (entry.index.get(), entry.term.get()))
            .collect()
    }

    #[test]
    fn truncation_snapshots_and_hard_state_apply_in_order() {
        let voted = HardState {
            term: Term(2),
            voted_for: Some(NodeId(1)),
        };
        let replayed = replay(records(vec![
            encode_snapshot(&snapshot(0, false)),
            encode_entry(&entry(1, 1)),
            encode_entry(&entry(2, 1)),
            encode_entry(&entry(3, 1)),
            encode_hard_state(&voted),
            encode_entry(&entry(2, 2)),
            encode_entry(&entry(3, 2)),
            encode_snapshot(&snapshot(1, true)),
        ]))
        .expect("valid")
        .expect("not fresh");
        assert_eq!(replayed.hard_state, voted);
        assert_eq!(indexes_and_terms(&replayed), vec![(2, 2), (3, 2)]);
        let positions: Vec<u64> = replayed
            .locations
            .iter()
            .map(|l| l.position.get())
            .collect();
        assert_eq!(positions, vec![6, 7]);
    }

    #[test]
    fn a_compacted_suffix_replays_from_a_floating_window() {
        // Segments before entry 40's record were removed; a truncation below the
        // window's start and an old snapshot record come before the checkpoint.
        let replayed = replay(records(vec![
            encode_entry(&entry(40, 1)),
            encode_entry(&entry(41, 1)),
            encode_entry(&entry(38, 2)),
            encode_entry(&entry(39, 2)),
            encode_snapshot(&snapshot(20, true)),
            encode_entry(&entry(40, 2)),
            encode_snapshot(&snapshot(38, true)),
        ]))
        .expect("valid")
        .expect("not fresh");
        assert_eq!(indexes_and_terms(&replayed), vec![(39, 2), (40, 2)]);
    }

    #[test]
    fn gaps_and_missing_snapshots_are_corruption() {
        let gap = replay(records(vec![
            encode_snapshot(&snapshot(0, false)),
            encode_entry(&entry(1, 1)),
            encode_entry(&entry(3, 1)),
        ]));
        assert!(
            matches!(gap, Err(RaftLogError::Corrupt { offset: 168, .. })),
            "{gap:?}"
        );
        let no_snapshot = replay(records(vec![encode_entry(&entry(1, 1))]));
        assert!(matches!(no_snapshot, Err(RaftLogError::Corrupt { .. })));
        let detached = replay(records(vec![
            encode_entry(&entry(5, 1)),
            encode_snapshot(&snapshot(2, true)),
        ]));
        assert!(
            matches!(detached, Err(RaftLogError::Corrupt { .. })),
            "{detached:?}"
        );
        assert!(replay(Vec::new()).expect("fresh").is_none());
    }
}
