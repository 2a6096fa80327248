//! [`RaftLog`]: the durable term, vote, entries and snapshot of one Raft node.

use crate::error::RaftLogError;
use crate::record::{
    check_entry, check_membership, encode_entry, encode_hard_state, encode_snapshot,
    SnapshotReference,
};
use crate::replay::{replay, EntryLocation};
use crate::snapshot_file::{SnapshotFileReservation, WrittenSnapshotFile};
use bytes::Bytes;
use std::collections::VecDeque;
use understudy_raft::{Entry, HardState, RestoredState, SnapshotMeta};
use understudy_types::LogIndex;
use understudy_wal::{Storage, Wal, WalOptions};

/// Side files holding snapshot data are named `snapshot-` and a 20-digit number.
const SNAPSHOT_FILE_PREFIX: &str = "snapshot-";

/// The name of the side file holding snapshot data number `file_number`.
pub fn snapshot_file_name(file_number: u64) -> String {
    format!("{SNAPSHOT_FILE_PREFIX}{file_number:020}")
}

fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SNAPSHOT_FILE_PREFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

/// Settings of a [`RaftLog`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftLogOptions {
    /// Settings of the WAL underneath.
    pub wal: WalOptions,
}

/// The durable state of one Raft node on a [`Wal`]; see the crate documentation.
pub struct RaftLog<S: Storage> {
    wal: Wal<S>,
    hard_state: HardState,
    snapshot: SnapshotReference,
    /// The entries after the snapshot: index, term and WAL position (the entries
    /// themselves live in the Raft core's memory).
    locations: VecDeque<EntryLocation>,
    next_snapshot_file_number: u64,
}

impl<S: Storage> std::fmt::Debug for RaftLog<S> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RaftLog")
            .field("hard_state", &self.hard_state)
            .field("snapshot", &self.snapshot.meta)
            .field("last_index", &self.last_index())
            .field("wal", &self.wal)
            .finish()
    }
}

impl<S: Storage> RaftLog<S> {
    /// Opens the store and returns what was durable. A directory with no Raft
    /// state is initialised with `bootstrap()` (e.g. `RestoredState::bootstrap(voters)`,
    /// or a state with no members for a node that will join a running group),
    /// durably, before this returns. Damaged durable state is refused with
    /// `RaftLogError::Corrupt` naming the file and offset.
    pub fn open(
        storage: S,
        options: RaftLogOptions,
        bootstrap: impl FnOnce() -> RestoredState,
    ) -> Result<(RaftLog<S>, RestoredState), RaftLogError> {
        let (wal, records) = Wal::open(storage, options.wal)?;
        let existing_files = snapshot_files(&wal)?;
        let highest_file_number = existing_files.iter().map(|(number, _)| *number).max();
        let mut raft_log = RaftLog {
            wal,
            hard_state: HardState::default(),
            snapshot: SnapshotReference {
                meta: SnapshotMeta::default(),
                file_number: 0,
                data_length_bytes: 0,
                data_checksum: 0,
                keep_entries_after: false,
            },
            locations: VecDeque::new(),
            next_snapshot_file_number: highest_file_number.unwrap_or(0) + 1,
        };
        let restored = match replay(records)? {
            Some(replayed) => {
                let data = raft_log.read_snapshot_data(&replayed.snapshot)?;
                raft_log.next_snapshot_file_number = raft_log
                    .next_snapshot_file_number
                    .max(replayed.snapshot.file_number + 1);
                raft_log.hard_state = replayed.hard_state;
                raft_log.snapshot = replayed.snapshot;
                raft_log.locations = replayed.locations;
                RestoredState {
                    hard_state: replayed.hard_state,
                    snapshot: (raft_log.snapshot.meta.clone(), data),
                    entries: replayed.entries,
                }
            }
            None => raft_log.initialise(bootstrap())?,
        };
        // Snapshot files no durable record needs: superseded ones, and those of
        // installs a crash interrupted before their record became durable.
        for (number, name) in existing_files {
            if number != raft_log.snapshot.file_number {
                raft_log.wal.remove_file(&name)?;
            }
        }
        Ok((raft_log, restored))
    }

    /// Writes the bootstrap state as the first records; durable on return.
    fn initialise(&mut self, state: RestoredState) -> Result<RestoredState, RaftLogError> {
        let (meta, data) = &state.snapshot;
        let mut expected_index = meta.last_index;
        for entry in &state.entries {
            assert!(
                entry.index == expected_index.next(),
                "bootstrap entries must follow the bootstrap snapshot consecutively"
            );
            expected_index = entry.index;
        }
        check_membership(&meta.membership)?;
        let reservation = self.reserve_snapshot_file();
        let written = self.write_reserved_snapshot_file(&reservation, data)?;
        self.append_snapshot_record(meta, &written, false)?;
        self.append(Some(state.hard_state), &state.entries)?;
        self.sync()?;
        Ok(state)
    }

    fn read_snapshot_data(&self, reference: &SnapshotReference) -> Result<Bytes, RaftLogError> {
        let name = snapshot_file_name(reference.file_number);
        let data = self.wal.read_file(&name).map_err(|error| {
            if error.is_not_found() {
                RaftLogError::corrupt(&name, 0, "snapshot file referenced by the log is missing")
            } else {
                RaftLogError::from(error)
            }
        })?;
        if data.len() as u64 != reference.data_length_bytes
            || crc32c::crc32c(&data) != reference.data_checksum
        {
            return Err(RaftLogError::corrupt(
                &name,
                0,
                "snapshot data differs from the length and checksum the log recorded",
            ));
        }
        Ok(Bytes::from(data))
    }

    /// Buffers a new hard state and/or entries. If `entries[0].index` is at or
    /// below the last stored index, every stored entry from that index on is
    /// discarded first. Nothing is durable until [`RaftLog::sync`].
    ///
    /// Refuses (storing nothing) an entry or membership over its size limit.
    pub fn append(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), RaftLogError> {
        if let Some(first) = entries.first() {
            assert!(
                first.index > self.snapshot.meta.last_index,
                "entry {} is inside the snapshot ending at {}",
                first.index,
                self.snapshot.meta.last_index
            );
            assert!(
                first.index <= self.last_index().next(),
                "entry {} would leave a gap after {}",
                first.index,
                self.last_index()
            );
            for pair in entries.windows(2) {
                assert!(
                    pair[1].index == pair[0].index.next(),
                    "entries must be consecutive"
                );
            }
        }
        // Check everything before buffering anything: a refused request must not
        // leave half of itself to be flushed by the next sync.
        entries.iter().try_for_each(check_entry)?;
        if let Some(hard_state) = hard_state {
            self.wal.append(&encode_hard_state(&hard_state))?;
            self.hard_state = hard_state;
        }
        if let Some(first) = entries.first() {
            let kept = first.index.get() - self.snapshot.meta.last_index.get() - 1;
            self.locations.truncate(kept as usize);
        }
        for entry in entries {
            let position = self.wal.append(&encode_entry(entry))?;
            self.locations.push_back(EntryLocation {
                index: entry.index,
                term: entry.term,
                position,
            });
        }
        Ok(())
    }

    /// Writes everything appended so far to storage without syncing it (see
    /// [`Wal::flush`]); not durable until [`RaftLog::sync`].
    pub fn flush(&mut self) -> Result<(), RaftLogError> {
        self.wal.flush()?;
        Ok(())
    }

    /// Group commit: everything appended so far becomes durable with one fsync.
    pub fn sync(&mut self) -> Result<(), RaftLogError> {
        self.wal.sync()?;
        Ok(())
    }

    /// The follower side of InstallSnapshot: durably stores the snapshot and drops
    /// the entries at or below `meta.last_index` (and all others too unless
    /// `keep_entries_after`). Everything appended before is made durable as well.
    pub fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
        keep_entries_after: bool,
    ) -> Result<(), RaftLogError> {
        self.replace_snapshot(meta, data, keep_entries_after)
    }

    /// Application-side compaction: durably stores a snapshot the state machine
    /// took at `meta.last_index` (an entry it has applied, so one this log holds or
    /// the current snapshot's), drops the entries up to it, and removes the WAL
    /// segments no longer needed. The one-call form of the two-step protocol
    /// ([`RaftLog::reserve_snapshot_file`], write, [`RaftLog::complete_snapshot`]),
    /// writing the file on this thread.
    pub fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), RaftLogError> {
        self.check_stale(meta)?;
        check_membership(&meta.membership)?;
        let reservation = self.reserve_snapshot_file();
        let written = self.write_reserved_snapshot_file(&reservation, data)?;
        self.complete_snapshot(meta, written)
    }

    /// Step 1 of the two-step snapshot protocol (see `snapshot_file.rs`): reserves
    /// a snapshot file number no other file, write or install will use.
    pub fn reserve_snapshot_file(&mut self) -> SnapshotFileReservation {
        let file_number = self.next_snapshot_file_number;
        self.next_snapshot_file_number += 1;
        SnapshotFileReservation { file_number }
    }

    /// Step 2 of the protocol on this thread, through the log's own storage:
    /// installs `data` as the reserved file, durably. An I/O error stops the log
    /// (like every WAL I/O error); [`crate::write_snapshot_file`] on a separate
    /// storage handle does not.
    pub fn write_reserved_snapshot_file(
        &mut self,
        reservation: &SnapshotFileReservation,
        data: &[u8],
    ) -> Result<WrittenSnapshotFile, RaftLogError> {
        self.check_reservation(reservation.file_number);
        self.wal.install_file(&reservation.file_name(), data)?;
        Ok(WrittenSnapshotFile::describing(
            reservation.file_number,
            data,
        ))
    }

    /// Step 3 of the protocol: durably records the application snapshot at
    /// `meta.last_index` whose data `written` holds, drops the entries up to it,
    /// removes the superseded file and compacts (see [`RaftLog::save_snapshot`]).
    ///
    /// Refuses with `StaleSnapshot` a snapshot older than the stored one (one
    /// installed from the leader while the file was written) and with
    /// `MembershipTooLarge` an oversized membership; either way `written`'s file
    /// is removed and the log is unchanged.
    pub fn complete_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        written: WrittenSnapshotFile,
    ) -> Result<(), RaftLogError> {
        self.check_reservation(written.file_number);
        if let Err(refused) = self
            .check_stale(meta)
            .and_then(|()| check_membership(&meta.membership))
        {
            // Nothing will ever reference the file: remove it now rather than at
            // the next open.
            self.wal
                .remove_file(&snapshot_file_name(written.file_number))?;
            return Err(refused);
        }
        let index = meta.last_index;
        assert!(
            index <= self.last_index(),
            "snapshot at {index} covers entries the log does not hold (last {})",
            self.last_index()
        );
        if let Some(location) = self.location(index) {
            assert!(
                location.term == meta.last_term,
                "snapshot at {index} says term {} but the log holds term {}",
                meta.last_term,
                location.term
            );
        }
        self.record_snapshot(meta, &written, true)
    }

    fn check_stale(&self, meta: &SnapshotMeta) -> Result<(), RaftLogError> {
        if meta.last_index < self.snapshot.meta.last_index {
            return Err(RaftLogError::StaleSnapshot {
                offered: meta.last_index,
                stored: self.snapshot.meta.last_index,
            });
        }
        Ok(())
    }

    fn check_reservation(&self, file_number: u64) {
        assert!(
            file_number < self.next_snapshot_file_number
                && file_number != self.snapshot.file_number,
            "snapshot file {file_number} was not reserved, or is the current one"
        );
    }

    fn replace_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        data: &[u8],
        keep_entries_after: bool,
    ) -> Result<(), RaftLogError> {
        self.check_stale(meta)?;
        check_membership(&meta.membership)?;
        let reservation = self.reserve_snapshot_file();
        let written = self.write_reserved_snapshot_file(&reservation, data)?;
        self.record_snapshot(meta, &written, keep_entries_after)
    }

    /// Appends and syncs the record referencing the durable file `written`, then
    /// removes the superseded file and compacts.
    fn record_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        written: &WrittenSnapshotFile,
        keep_entries_after: bool,
    ) -> Result<(), RaftLogError> {
        let superseded = snapshot_file_name(self.snapshot.file_number);
        self.append_snapshot_record(meta, written, keep_entries_after)?;
        self.sync()?;
        // The new snapshot record is durable: no replay will look for the old file.
        // (Were this removal lost in a crash, `open` removes the file again.)
        self.wal.remove_file(&superseded)?;
        self.compact()
    }

    /// Buffers the record that points to the (already durable) data file.
    fn append_snapshot_record(
        &mut self,
        meta: &SnapshotMeta,
        written: &WrittenSnapshotFile,
        keep_entries_after: bool,
    ) -> Result<(), RaftLogError> {
        // The data file is durable (written, fsynced, renamed, directory fsynced)
        // before the record referring to it is even written: a durable record must
        // never point to a file a crash could lose. A new number each time, so the
        // file the current record points to is never replaced.
        let reference = SnapshotReference {
            meta: meta.clone(),
            file_number: written.file_number,
            data_length_bytes: written.data_length_bytes,
            data_checksum: written.data_checksum,
            keep_entries_after,
        };
        self.wal.append(&encode_snapshot(&reference))?;
        if keep_entries_after {
            while self
                .locations
                .front()
                .is_some_and(|l| l.index <= meta.last_index)
            {
                self.locations.pop_front();
            }
        } else {
            self.locations.clear();
        }
        self.snapshot = reference;
        Ok(())
    }

    /// Removes the WAL segments that hold nothing still needed.
    ///
    /// Needed are: the record of every live entry (the first of which is at
    /// `keep_from`), the latest hard state and the latest snapshot record. The
    /// last two may sit in old segments, so copies are appended first (into the
    /// last segment, which is never removed) and synced; only then are segments
    /// before `keep_from` removed. Never the only copy of anything.
    fn compact(&mut self) -> Result<(), RaftLogError> {
        let keep_from = self
            .locations
            .front()
            .map_or(self.wal.next_position(), |location| location.position);
        if self.wal.removable_segment_count(keep_from) == 0 {
            return Ok(());
        }
        let checkpoint = SnapshotReference {
            keep_entries_after: true,
            ..self.snapshot.clone()
        };
        self.wal.append(&encode_hard_state(&self.hard_state))?;
        self.wal.append(&encode_snapshot(&checkpoint))?;
        self.wal.sync()?;
        self.wal.remove_segments_before(keep_from)?;
        Ok(())
    }

    fn location(&self, index: LogIndex) -> Option<&EntryLocation> {
        let offset = index
            .get()
            .checked_sub(self.snapshot.meta.last_index.get() + 1)?;
        self.locations.get(offset as usize)
    }

    /// The latest hard state appended (durable after the next sync).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The latest snapshot stored.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot.meta
    }

    /// The index of the last entry appended, or the snapshot's if there is none.
    pub fn last_index(&self) -> LogIndex {
        self.locations
            .back()
            .map_or(self.snapshot.meta.last_index, |location| location.index)
    }

    /// The WAL underneath, for statistics.
    pub fn wal(&self) -> &Wal<S> {
        &self.wal
    }

    /// Closes the log and returns its storage; unsynced appends are dropped.
    pub fn into_storage(self) -> S {
        self.wal.into_storage()
    }
}

fn snapshot_files<S: Storage>(wal: &Wal<S>) -> Result<Vec<(u64, String)>, RaftLogError> {
    let names = wal.side_file_names()?;
    Ok(names
        .into_iter()
        .filter_map(|name| parse_snapshot_file_name(&name).map(|number| (number, name)))
        .collect())
}
