//! The crate's one error type.

use understudy_types::LogIndex;
use understudy_wal::WalError;

/// Everything that can go wrong in the durable Raft log.
///
/// [`RaftLogError::must_stop`] separates the two families: a refused request
/// (`EntryTooLarge`, `MembershipTooLarge`, `StaleSnapshot`) leaves the log usable;
/// anything else means the node must stop (an I/O error poisoned the WAL) or must
/// not start (`Corrupt`, `UnsupportedVersion`): it cannot vouch for its term, vote
/// or log, and starting anyway could make it vote twice in a term.
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// Durable data failed verification, in the WAL or in a snapshot file.
    #[error("corrupt Raft state in {file} at offset {offset}: {detail}")]
    Corrupt {
        /// The file holding the damaged data.
        file: String,
        /// The byte offset of the damage (of the record holding it) in `file`.
        offset: u64,
        /// What failed to verify.
        detail: String,
    },
    /// A record was written by a format version this build does not understand.
    #[error("{file} at offset {offset} holds a Raft log record of format version {found}; this build supports {supported:?}")]
    UnsupportedVersion {
        /// The segment holding the record.
        file: String,
        /// The record's offset.
        offset: u64,
        /// The version found.
        found: u8,
        /// The versions this build reads.
        supported: &'static [u8],
    },
    /// An entry's command is larger than `RAFT_ENTRY_BYTES_MAX`.
    #[error("entry {index} carries {length_bytes} bytes, more than the {limit_bytes} allowed")]
    EntryTooLarge {
        /// The entry's index.
        index: LogIndex,
        /// Its command's size.
        length_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// A membership has more members than `RAFT_MEMBERS_MAX`.
    #[error("membership of {member_count} nodes exceeds the limit of {limit}")]
    MembershipTooLarge {
        /// Voters plus learners.
        member_count: usize,
        /// The limit.
        limit: usize,
    },
    /// A snapshot older than the one stored was offered.
    #[error("snapshot at {offered} is older than the stored snapshot at {stored}")]
    StaleSnapshot {
        /// The offered snapshot's last index.
        offered: LogIndex,
        /// The stored snapshot's last index.
        stored: LogIndex,
    },
    /// The WAL failed (I/O error, poisoned, unsupported WAL format).
    #[error(transparent)]
    Wal(WalError),
}

impl RaftLogError {
    /// Whether the node must stop (or must not start) rather than refuse one
    /// request and carry on.
    pub fn must_stop(&self) -> bool {
        !matches!(
            self,
            RaftLogError::EntryTooLarge { .. }
                | RaftLogError::MembershipTooLarge { .. }
                | RaftLogError::StaleSnapshot { .. }
        )
    }

    pub(crate) fn corrupt(file: impl Into<String>, offset: u64, detail: impl Into<String>) -> Self {
        RaftLogError::Corrupt {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }
}

impl From<WalError> for RaftLogError {
    fn from(error: WalError) -> RaftLogError {
        match error {
            // One corruption variant for callers, wherever the damage was found.
            WalError::Corrupt {
                file,
                offset,
                detail,
            } => RaftLogError::Corrupt {
                file,
                offset,
                detail,
            },
            other => RaftLogError::Wal(other),
        }
    }
}
