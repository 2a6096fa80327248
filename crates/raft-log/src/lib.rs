//! Durable Raft state — term, vote, log entries, snapshots — on the understudy WAL.
//!
//! Used by both shells: the simulator (on a `SimDisk`) and the node (on real
//! files). Data flow: the Raft core emits `Command::Persist { hard_state, entries }`;
//! the shell calls [`RaftLog::append`] for each and [`RaftLog::sync`] once per
//! batch (group commit), then reports `handle_persisted`. `Command::InstallSnapshot`
//! maps to [`RaftLog::install_snapshot`]; an application snapshot to
//! [`RaftLog::save_snapshot`], which also removes WAL segments no longer needed,
//! or to its two steps (`snapshot_file.rs`: reserve a file number, write the file
//! on any thread with [`write_snapshot_file`], then [`RaftLog::complete_snapshot`])
//! so that a shell can write a large snapshot off its driver thread.
//! At start-up [`RaftLog::open`] returns the `RestoredState` the core starts from:
//! exactly what was durable.
//!
//! Storage: every change is one WAL record (`record.rs`: a version byte and a
//! `postcard` encoding): a hard state, an entry (which implicitly discards any
//! stored suffix from its index), or a snapshot reference. Snapshot data lives in
//! side files installed atomically, named by an increasing number, and verified
//! against the length and CRC32C in the record that points to them. `replay.rs`
//! rebuilds the state from the records; `raft_log.rs` holds the API and the
//! compaction rule.
//!
//! What it must never do: report anything durable before the WAL's fsync;
//! delete the only copy of the hard state or of a snapshot still referenced;
//! start from a term, vote or log it cannot verify (it refuses with
//! [`RaftLogError::Corrupt`] instead: a node that forgot its vote could vote twice
//! in a term).

mod error;
mod raft_log;
mod record;
mod replay;
mod snapshot_file;

pub use error::RaftLogError;
pub use raft_log::{snapshot_file_name, RaftLog, RaftLogOptions};
pub use record::{RECORD_FORMAT_VERSION, RECORD_FORMAT_VERSIONS_SUPPORTED};
pub use snapshot_file::{write_snapshot_file, SnapshotFileReservation, WrittenSnapshotFile};
