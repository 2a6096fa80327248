//! The write-ahead log: append, group commit, segment rotation, compaction, and
//! the atomically installed side files that live in the same directory.

use crate::atomic_file;
use crate::error::WalError;
use crate::format::{
    encode_commit, encode_record, record_bytes, CommitMarker, RecordType, COMMIT_RECORD_BYTES,
    SEGMENT_HEADER_BYTES,
};
use crate::recovery::{self, create_segment, is_reserved_name};
use crate::storage::Storage;
use std::fmt;
use understudy_types::limits::{
    WAL_BATCH_BYTES_MAX, WAL_GROUP_COMMIT_RECORDS_MAX, WAL_RECORD_PAYLOAD_BYTES_MAX,
    WAL_SEGMENT_BYTES_TARGET,
};

/// The position of a record: records are numbered 1, 2, 3, ... in append order,
/// across segments. Position 0 means "no record".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl Position {
    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "p{}", self.0)
    }
}

/// A record read back by `Wal::open`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it was appended.
    pub position: Position,
    /// What was appended.
    pub payload: Vec<u8>,
    /// The segment holding it (its file is `segment_name(segment_number)`).
    pub segment_number: u64,
    /// The byte offset of its header in that segment, for error messages.
    pub offset: u64,
}

/// What `Wal::open` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in use after recovery.
    pub segment_count: usize,
    /// Records recovered.
    pub record_count: usize,
    /// Bytes of torn tail cut off the last segment.
    pub truncated_bytes: u64,
    /// Whether a segment whose creation a crash interrupted was removed.
    pub torn_segment_removed: bool,
}

/// Settings of a WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A new segment is started before a batch that would take the current one
    /// past this size. At most `WAL_SEGMENT_BYTES_TARGET`; the simulator uses small
    /// segments to exercise rotation and compaction.
    pub segment_bytes_target: u64,
    /// DELIBERATE BUG for the simulator: skip every `fdatasync` of appended records
    /// while still reporting them durable. A crash then loses acknowledged records,
    /// which the crash tests and the simulator must notice.
    #[cfg(feature = "deliberate-bugs")]
    pub deliberate_bug_no_op_sync: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes_target: WAL_SEGMENT_BYTES_TARGET,
            #[cfg(feature = "deliberate-bugs")]
            deliberate_bug_no_op_sync: false,
        }
    }
}

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Its number, increasing by one per segment.
    pub number: u64,
    /// The position of its first record (of the next record, if it has none).
    pub first_position: u64,
    /// Its file name.
    pub name: String,
}

/// Records appended since the last flush, encoded exactly as they go to disk.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    first_position: u64,
    record_count: u32,
}

/// A segmented, checksummed write-ahead log over a [`Storage`].
pub struct Wal<S: Storage> {
    storage: S,
    options: WalOptions,
    /// Oldest first; the last one receives appends.
    segments: Vec<SegmentInfo>,
    /// Length of the last segment: where the next batch goes.
    last_segment_length_bytes: u64,
    next_position: u64,
    /// The highest position written to a segment file (synced or not).
    written_position: u64,
    /// The highest position whose `fdatasync` completed.
    durable_position: u64,
    batch: Batch,
    /// Set by the first I/O error; every later call fails.
    poisoned: Option<String>,
    recovery_report: RecoveryReport,
}

impl<S: Storage> fmt::Debug for Wal<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Wal")
            .field("segments", &self.segments)
            .field("next_position", &self.next_position)
            .field("durable_position", &self.durable_position)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<S: Storage> Wal<S> {
    /// Opens the WAL in `storage`, initialising an empty directory, and returns it
    /// with every record that was durable (in position order). A torn tail left by
    /// a crash is cut off; damage to records that had been synced, an unknown
    /// format version or a missing segment is an error naming the file and offset.
    /// Everything returned is durable when this returns.
    pub fn open(mut storage: S, options: WalOptions) -> Result<(Wal<S>, Vec<Record>), WalError> {
        assert!(
            options.segment_bytes_target > SEGMENT_HEADER_BYTES
                && options.segment_bytes_target <= WAL_SEGMENT_BYTES_TARGET,
            "segment_bytes_target {} outside ({SEGMENT_HEADER_BYTES}, {WAL_SEGMENT_BYTES_TARGET}]",
            options.segment_bytes_target
        );
        let recovered = recovery::recover(&mut storage)?;
        let last_position = recovered.next_position - 1;
        let wal = Wal {
            storage,
            options,
            segments: recovered.segments,
            last_segment_length_bytes: recovered.last_segment_length_bytes,
            next_position: recovered.next_position,
            written_position: last_position,
            durable_position: last_position,
            batch: Batch::default(),
            poisoned: None,
            recovery_report: recovered.report,
        };
        Ok((wal, recovered.records))
    }

    /// Buffers a record and returns its position. It is not durable (and may not
    /// even be written) until a later [`Wal::sync`] returns a position at or past it.
    pub fn append(&mut self, payload: &[u8]) -> Result<Position, WalError> {
        self.check_usable()?;
        let length_bytes = payload.len() as u64;
        if length_bytes > WAL_RECORD_PAYLOAD_BYTES_MAX {
            return Err(WalError::RecordTooLarge {
                length_bytes,
                limit_bytes: WAL_RECORD_PAYLOAD_BYTES_MAX,
            });
        }
        let batch_full = self.batch.record_count as usize >= WAL_GROUP_COMMIT_RECORDS_MAX
            || self.batch.bytes.len() as u64 + record_bytes(length_bytes) + COMMIT_RECORD_BYTES
                > WAL_BATCH_BYTES_MAX;
        if self.batch.record_count > 0 && batch_full {
            // Bound the memory a batch holds: write it out now, closed by its own
            // marker; the next sync still covers it.
            self.flush_batch()?;
        }
        if self.batch.record_count == 0 {
            self.batch.first_position = self.next_position;
        }
        encode_record(&mut self.batch.bytes, RecordType::Data, payload);
        self.batch.record_count += 1;
        let position = Position(self.next_position);
        self.next_position += 1;
        Ok(position)
    }

    /// Writes the records appended so far to storage, closed by a commit marker,
    /// without syncing: like `write(2)` without `fdatasync`, they sit in the page
    /// cache where a crash may lose or tear them. The next [`Wal::sync`] makes them
    /// durable. The simulator uses this to put unsynced bytes on its disk between
    /// a write and the group commit that follows.
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if self.batch.record_count > 0 {
            self.flush_batch()?;
        }
        Ok(())
    }

    /// Group commit: writes every buffered record, closed by a commit marker, and
    /// makes it durable with one `fdatasync`. Returns the highest durable position.
    pub fn sync(&mut self) -> Result<Position, WalError> {
        self.check_usable()?;
        if self.batch.record_count > 0 {
            self.flush_batch()?;
        }
        if self.written_position > self.durable_position {
            self.sync_last_segment()?;
        }
        Ok(Position(self.durable_position))
    }

    /// The highest position known durable.
    pub fn durable_position(&self) -> Position {
        Position(self.durable_position)
    }

    /// The position the next appended record will get.
    pub fn next_position(&self) -> Position {
        Position(self.next_position)
    }

    /// The position of the oldest record still stored (compaction removes older
    /// ones).
    pub fn first_position(&self) -> Position {
        Position(self.segments[0].first_position)
    }

    /// The segments in use, oldest first.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// What `open` found and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery_report
    }

    /// The number of segments `remove_segments_before(position)` would remove.
    pub fn removable_segment_count(&self, position: Position) -> usize {
        self.segments
            .windows(2)
            .take_while(|pair| pair[1].first_position <= position.0)
            .count()
    }

    /// Compaction: removes, oldest first, every segment all of whose records lie
    /// before `position`. The segment receiving appends is never removed. Returns
    /// how many were removed. `position` must not exceed the durable position + 1:
    /// whatever replaces the removed records must already be durable.
    pub fn remove_segments_before(&mut self, position: Position) -> Result<usize, WalError> {
        self.check_usable()?;
        assert!(
            position.0 <= self.durable_position + 1,
            "compaction up to {position} would remove records past the durable position {}",
            self.durable_position
        );
        let count = self.removable_segment_count(position);
        for _ in 0..count {
            let name = self.segments[0].name.clone();
            let result = self.storage.remove(&name);
            self.check_io("remove", &name, result)?;
            // One directory sync per removal, oldest first: directory operations
            // are not ordered before a sync, and a crash that kept the removal of a
            // newer segment but lost that of an older one would leave a gap, which
            // `open` must (and does) treat as lost data.
            let result = self.storage.sync_directory();
            self.check_io("sync_directory", &name, result)?;
            self.segments.remove(0);
        }
        Ok(count)
    }

    /// Atomically installs a side file (a snapshot, metadata) in the WAL's
    /// directory: temporary file, fsync, rename, directory fsync. Durable on return.
    pub fn install_file(&mut self, name: &str, contents: &[u8]) -> Result<(), WalError> {
        self.check_usable()?;
        check_side_file_name(name)?;
        let result = atomic_file::install(&mut self.storage, name, contents);
        self.poison_on_io_error(result)
    }

    /// Reads and verifies a side file installed with `install_file`. A failed read
    /// does not stop the WAL (nothing was changed).
    pub fn read_file(&self, name: &str) -> Result<Vec<u8>, WalError> {
        self.check_usable()?;
        check_side_file_name(name)?;
        atomic_file::read(&self.storage, name)
    }

    /// Removes a side file; durable on return.
    pub fn remove_file(&mut self, name: &str) -> Result<(), WalError> {
        self.check_usable()?;
        check_side_file_name(name)?;
        let result = self.storage.remove(name);
        self.check_io("remove", name, result)?;
        let result = self.storage.sync_directory();
        self.check_io("sync_directory", name, result)
    }

    /// The names of the side files in the directory (everything but the WAL's own
    /// files), sorted.
    pub fn side_file_names(&self) -> Result<Vec<String>, WalError> {
        self.check_usable()?;
        let names = self
            .storage
            .list()
            .map_err(|error| WalError::io("list", "data directory", error))?;
        Ok(names
            .into_iter()
            .filter(|name| !is_reserved_name(name))
            .collect())
    }

    /// The storage underneath, for inspection.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Closes the WAL and returns its storage (buffered, unsynced records are
    /// dropped, as a crash would).
    pub fn into_storage(self) -> S {
        self.storage
    }

    fn check_usable(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(first_error) => Err(WalError::Poisoned {
                first_error: first_error.clone(),
            }),
            None => Ok(()),
        }
    }

    fn check_io(
        &mut self,
        operation: &'static str,
        file: &str,
        result: std::io::Result<()>,
    ) -> Result<(), WalError> {
        self.poison_on_io_error(result.map_err(|error| WalError::io(operation, file, error)))
    }

    fn poison_on_io_error<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if let Err(error @ WalError::Io { .. }) = &result {
            self.poisoned = Some(error.to_string());
        }
        result
    }

    /// Writes the buffered batch, closed by its commit marker, to the last
    /// segment (rotating first if it would grow past the target). No fsync.
    fn flush_batch(&mut self) -> Result<(), WalError> {
        assert!(self.batch.record_count > 0, "flush of an empty batch");
        let batch_bytes = self.batch.bytes.len() as u64 + COMMIT_RECORD_BYTES;
        let has_records = self.last_segment_length_bytes > SEGMENT_HEADER_BYTES;
        if has_records
            && self.last_segment_length_bytes + batch_bytes > self.options.segment_bytes_target
        {
            self.rotate()?;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let marker = CommitMarker {
            batch_first_position: batch.first_position,
            batch_record_count: batch.record_count,
            batch_checksum: crc32c::crc32c(&batch.bytes),
            batch_start_offset: self.last_segment_length_bytes,
            // Everything up to here was synced before this batch is written; if
            // this marker survives a crash, recovery may rely on that.
            durable_position_before: self.durable_position,
        };
        encode_commit(&mut batch.bytes, &marker);
        let name = &self.segments[self.segments.len() - 1].name;
        let result = self
            .storage
            .write_at(name, self.last_segment_length_bytes, &batch.bytes);
        let name = name.clone();
        self.check_io("write_at", &name, result)?;
        self.last_segment_length_bytes += batch.bytes.len() as u64;
        self.written_position = batch.first_position + u64::from(batch.record_count) - 1;
        // Reuse the allocation for the next batch.
        batch.bytes.clear();
        self.batch.bytes = batch.bytes;
        Ok(())
    }

    /// Syncs the last segment and starts a new, empty one.
    fn rotate(&mut self) -> Result<(), WalError> {
        // A segment is complete and durable before its successor exists; recovery
        // relies on this to treat damage in any but the last segment as corruption.
        if self.written_position > self.durable_position {
            self.sync_last_segment()?;
        }
        let number = self.segments[self.segments.len() - 1].number + 1;
        let first_position = self.next_unwritten_position();
        let result = create_segment(&mut self.storage, number, first_position);
        let segment = self.poison_on_io_error(result)?;
        self.segments.push(segment);
        self.last_segment_length_bytes = SEGMENT_HEADER_BYTES;
        Ok(())
    }

    /// The first position not yet written to any segment.
    fn next_unwritten_position(&self) -> u64 {
        self.written_position + 1
    }

    fn sync_last_segment(&mut self) -> Result<(), WalError> {
        let name = self.segments[self.segments.len() - 1].name.clone();
        #[cfg(feature = "deliberate-bugs")]
        if self.options.deliberate_bug_no_op_sync {
            self.durable_position = self.written_position;
            return Ok(());
        }
        // One fdatasync covers every batch written since the last one: group commit.
        let result = self.storage.sync_file(&name);
        self.check_io("sync_file", &name, result)?;
        self.durable_position = self.written_position;
        Ok(())
    }
}

fn check_side_file_name(name: &str) -> Result<(), WalError> {
    if is_reserved_name(name) || crate::storage::check_file_name(name).is_err() {
        return Err(WalError::InvalidFileName {
            name: name.to_owned(),
        });
    }
    Ok(())
}
