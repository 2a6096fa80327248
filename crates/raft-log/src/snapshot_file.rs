//! Snapshot data files written away from the thread that owns the [`RaftLog`]:
//! the two-step protocol that lets a node shell write a large snapshot on a
//! background thread while its driver keeps committing.
//!
//! 1. [`RaftLog::reserve_snapshot_file`] (owning thread) hands out a fresh file
//!    number, so no two writers, and no later install, ever use the same name.
//! 2. [`write_snapshot_file`] (any thread, on its own [`Storage`] handle on the
//!    same directory) installs the data atomically: `snapshot-N.tmp`, fsync,
//!    rename to `snapshot-N`, directory fsync. Durable on return; referenced by
//!    nothing yet.
//! 3. [`RaftLog::complete_snapshot`] (owning thread) appends the record that
//!    references the file, syncs, removes the superseded file and compacts, or
//!    refuses a snapshot older than the stored one and removes the file.
//!
//! Crash argument: before step 3's sync the durable records still reference the
//! previous snapshot, whose file is untouched (a new number each time). What a
//! crash leaves of step 2 is garbage `RaftLog::open` removes: a `.tmp` file (the
//! WAL's recovery removes every one) or a complete `snapshot-N` no record
//! references (`open` removes every snapshot file but the referenced one). Step
//! 3 can only be given a [`WrittenSnapshotFile`], which only step 2 creates, so
//! a record never references a file that is not yet durable.
//!
//! [`RaftLog`]: crate::RaftLog
//! [`RaftLog::reserve_snapshot_file`]: crate::RaftLog::reserve_snapshot_file
//! [`RaftLog::complete_snapshot`]: crate::RaftLog::complete_snapshot

use crate::error::RaftLogError;
use crate::raft_log::snapshot_file_name;
use understudy_wal::{install_atomic_file, Storage};

/// A snapshot file number reserved by [`crate::RaftLog::reserve_snapshot_file`]
/// and not yet written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFileReservation {
    pub(crate) file_number: u64,
}

impl SnapshotFileReservation {
    /// The reserved number.
    pub fn file_number(&self) -> u64 {
        self.file_number
    }

    /// The name of the file to write (in the log's directory).
    pub fn file_name(&self) -> String {
        snapshot_file_name(self.file_number)
    }
}

/// A snapshot data file that is durable in the log's directory but referenced
/// by no record yet; hand it to [`crate::RaftLog::complete_snapshot`].
///
/// Only the functions that made the file durable create one, so holding one is
/// proof that the record about to reference it cannot outlive the file; not
/// `Clone`, and consumed by `complete_snapshot`, so a file removed as stale
/// cannot be recorded later.
#[derive(Debug, PartialEq, Eq)]
pub struct WrittenSnapshotFile {
    pub(crate) file_number: u64,
    pub(crate) data_length_bytes: u64,
    pub(crate) data_checksum: u32,
}

impl WrittenSnapshotFile {
    /// The file's number.
    pub fn file_number(&self) -> u64 {
        self.file_number
    }

    /// The data's length (without the atomic file's header).
    pub fn data_length_bytes(&self) -> u64 {
        self.data_length_bytes
    }

    /// The CRC32C of the data.
    pub fn data_checksum(&self) -> u32 {
        self.data_checksum
    }

    pub(crate) fn describing(file_number: u64, data: &[u8]) -> WrittenSnapshotFile {
        WrittenSnapshotFile {
            file_number,
            data_length_bytes: data.len() as u64,
            data_checksum: crc32c::crc32c(data),
        }
    }
}

/// Step 2 of the protocol: installs `data` as the reserved file through
/// `storage`, a handle on the log's directory other than the log's own (for
/// real files, a second `FileStorage::open` of the same directory). Durable on
/// return. Any thread may call it; it touches no file the log uses.
///
/// An error leaves at most a `.tmp` file or an unreferenced snapshot file, both
/// removed by the next `RaftLog::open`; the log itself is unaffected.
pub fn write_snapshot_file<S: Storage>(
    storage: &mut S,
    reservation: &SnapshotFileReservation,
    data: &[u8],
) -> Result<WrittenSnapshotFile, RaftLogError> {
    install_atomic_file(storage, &reservation.file_name(), data)?;
    Ok(WrittenSnapshotFile::describing(
        reservation.file_number,
        data,
    ))
}
