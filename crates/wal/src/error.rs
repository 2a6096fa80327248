//! The crate's one error type.

use std::io;

/// Everything that can go wrong in the WAL.
///
/// `RecordTooLarge` and `FileTooLarge` reject a request before any I/O and leave
/// the WAL usable. `Io` means the WAL is now poisoned: every later call fails with
/// `Poisoned` (a failed `fdatasync` cannot be retried safely: the kernel may have
/// dropped the dirty pages it failed to write). `Corrupt` and `UnsupportedVersion`
/// come from `open`: the node must not start on data it cannot vouch for.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A storage operation failed.
    #[error("I/O error during {operation} of {file}: {source}")]
    Io {
        /// What was being done, e.g. `"sync_file"`.
        operation: &'static str,
        /// The file concerned (the directory for directory operations).
        file: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Durable data failed verification: acknowledged data may be damaged, so the
    /// WAL refuses to guess.
    #[error("corrupt data in {file} at offset {offset}: {detail}")]
    Corrupt {
        /// The file holding the damaged data.
        file: String,
        /// The byte offset of the damage within `file`.
        offset: u64,
        /// What failed to verify.
        detail: String,
    },
    /// A file was written by a format version this build does not understand.
    #[error("{file} has format version {found}; this build supports versions {supported:?}")]
    UnsupportedVersion {
        /// The file carrying the version.
        file: String,
        /// The version found in it.
        found: u32,
        /// The versions this build reads.
        supported: &'static [u32],
    },
    /// An earlier I/O error stopped the WAL; reopen it to recover.
    #[error("the WAL stopped after an earlier I/O error ({first_error}); reopen it")]
    Poisoned {
        /// The error that stopped it.
        first_error: String,
    },
    /// A record larger than `WAL_RECORD_PAYLOAD_BYTES_MAX` was refused.
    #[error("record of {length_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        /// The size requested.
        length_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// A file larger than `SNAPSHOT_BYTES_MAX` was refused.
    #[error("file {file} of {length_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    FileTooLarge {
        /// The file.
        file: String,
        /// Its size.
        length_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// A file name is reserved for the WAL's own files or not a valid flat name.
    #[error("file name {name:?} is reserved or invalid")]
    InvalidFileName {
        /// The refused name.
        name: String,
    },
}

impl WalError {
    /// Whether this is an I/O error saying a file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    pub(crate) fn io(operation: &'static str, file: &str, source: io::Error) -> WalError {
        WalError::Io {
            operation,
            file: file.to_owned(),
            source,
        }
    }

    pub(crate) fn corrupt(file: &str, offset: u64, detail: impl Into<String>) -> WalError {
        WalError::Corrupt {
            file: file.to_owned(),
            offset,
            detail: detail.into(),
        }
    }
}
