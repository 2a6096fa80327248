//! A segmented, checksummed write-ahead log and atomically installed side files,
//! over a narrow [`Storage`] trait.
//!
//! Data flow: [`Wal::append`] encodes a record into the current batch in memory;
//! [`Wal::sync`] writes the batch to the last segment file, closed by a *commit
//! marker*, and makes it durable with one `fdatasync` (group commit), returning
//! the highest durable [`Position`]. [`Wal::open`] reads every segment back,
//! keeps the batches whose markers vouch for them, cuts off a torn tail, and
//! refuses (naming file and offset) to start on damaged data that had been synced.
//! [`Wal::remove_segments_before`] drops whole old segments (compaction);
//! [`Wal::install_file`] writes snapshots and metadata with "write a temporary
//! file, fsync, rename, fsync the directory".
//!
//! Layout:
//! - `storage.rs`: the [`Storage`] trait (eleven methods, one flat directory);
//! - `file_storage.rs`: [`FileStorage`], real files (the only `std::fs` user);
//! - `sim_disk/`: [`SimDisk`], an in-memory disk that keeps written and durable
//!   bytes apart and crashes on demand, for the deterministic simulator;
//! - `format.rs`: the byte layout (specified in `docs/wal-format.md`);
//! - `wal.rs`: appends, group commit, rotation, compaction;
//! - `recovery.rs`: what `open` does, and why a torn tail is not corruption;
//! - `atomic_file.rs`: atomic install and verified read of whole files.
//!
//! What it must never do: read a clock, draw an unseeded random number, or touch
//! the file system outside `FileStorage`; report a position durable before its
//! `fdatasync` returned; overwrite bytes that were synced; continue after an I/O
//! error (a failed `fdatasync` cannot be retried safely, so the WAL stops and must
//! be reopened).

mod atomic_file;
mod error;
// The one module allowed to touch the file system: it *is* the real-file Storage.
#[allow(clippy::disallowed_methods)]
mod file_storage;
mod format;
mod recovery;
mod sim_disk;
mod storage;
mod wal;

pub use atomic_file::{
    install as install_atomic_file, read as read_atomic_file, ATOMIC_FILE_FORMAT_VERSION,
    ATOMIC_FILE_HEADER_BYTES, TEMPORARY_SUFFIX,
};
pub use error::WalError;
pub use file_storage::FileStorage;
pub use format::{
    COMMIT_RECORD_BYTES, RECORD_ALIGNMENT_BYTES, RECORD_HEADER_BYTES, SEGMENT_FORMAT_VERSION,
    SEGMENT_HEADER_BYTES,
};
pub use recovery::{
    segment_name, DATA_DIRECTORY_FORMAT_VERSION, DATA_DIRECTORY_FORMAT_VERSIONS_SUPPORTED,
    VERSION_FILE_NAME,
};
pub use sim_disk::{
    CrashFaults, CrashReport, DiskStatistics, FaultOperation, SimDisk, SECTOR_BYTES,
};
pub use storage::{check_file_name, Storage};
pub use wal::{Position, Record, RecoveryReport, SegmentInfo, Wal, WalOptions};
