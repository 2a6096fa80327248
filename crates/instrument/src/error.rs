//! The crate's one error enum.

use thiserror::Error;

/// Why a module could not be instrumented at all.
///
/// A module that is valid but cannot be checkpointed is not an error: it comes out
/// with [`crate::RecoveryMode::Replay`]. These errors mean the module must not run
/// (bad input), or that this crate broke its own invariant (a bug, reported as
/// [`InstrumentError::Internal`] instead of a panic so a node survives it).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InstrumentError {
    /// The module is larger than `GUEST_MODULE_BYTES_MAX`.
    #[error("module is {bytes} bytes, more than the limit of {limit} bytes")]
    ModuleTooLarge {
        /// Size of the module given.
        bytes: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The bytes are not a valid core WebAssembly module for this host.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module already exports a name in the namespace this crate adds exports
    /// under (`__understudy_`), so the added exports could collide with it.
    #[error("module exports {0:?}, a name reserved for the host (prefix `__understudy_`)")]
    ReservedExportName(String),
    /// This crate produced something it should not have (a bug, not bad input).
    #[error("instrumentation failed unexpectedly: {0}")]
    Internal(String),
}
