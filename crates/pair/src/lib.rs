//! The process-pair protocol's core, sans-IO: the logging channel between a
//! pid's primary and its backup, and the output rule (docs/pairs.md).
//!
//! [`PrimaryLog`] numbers the records of everything the guest observes and the
//! outputs it writes, streams records to the backup in bounded appends, sends
//! them again when acknowledgements stall, and releases an output only once the
//! backup acknowledged every record logged before it. [`BackupLog`] accepts
//! contiguous records of the newest epoch it knows, asks for what is missing,
//! acknowledges only what its shell reported durable, and — once fenced for a
//! promotion — acknowledges nothing of the old epoch again.
//!
//! Like the Raft core, neither reads a clock, draws a random number or does
//! I/O: the shell feeds messages, ticks and durability reports in, and carries
//! out the [`Command`]s that come back, in order. That keeps the protocol
//! deterministic and runnable in the simulator.
//!
//! [`OutputStore`] is the rule the replicated output store applies per pid:
//! each oseq once, repeats identical, nothing new from a stale epoch.
//!
//! Checkpoints travel from the primary to the backup in ordered chunks (their
//! bytes are opaque here: the guest crate encodes them); once the backup
//! acknowledged a whole checkpoint, both sides drop the records it covers. A
//! primary without a backup (after a promotion) pairs with a new one by
//! shipping its newest checkpoint and the records since, throttled, and
//! reports [`BackupState`] (`none`, `catching_up`, `caught_up`).
//!
//! Not here: the guest's restore and replay at a promotion (the shell does it
//! with the guest crate, then builds [`PrimaryLog::promoted`]), and the
//! coordinator's compare-and-set.

mod backup;
#[cfg(test)]
mod checkpoint_tests;
mod message;
mod output_store;
mod primary;
mod record;
#[cfg(test)]
mod tests;

pub use backup::BackupLog;
pub use message::{Command, PairMessage};
pub use output_store::{Accepted, OutputRefusal, OutputStore};
#[cfg(feature = "deliberate-bugs")]
pub use primary::DeliberateBugs;
pub use primary::{BackupState, PrimaryConfig, PrimaryLog};
pub use record::{Epoch, Lsn, Oseq, Output, Pid, Record, RecordKind, Stream};

/// Why a primary refused to log or output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// A newer epoch exists: this primary is finished.
    #[error("fenced by epoch {}", epoch.0)]
    Fenced {
        /// The newer epoch.
        epoch: Epoch,
    },
    /// Too many records or outputs wait for the backup: pause the guest.
    #[error("the backup is behind: too many unacknowledged records or held outputs")]
    Backlogged,
    /// A checkpoint that is empty, larger than `PAIR_CHECKPOINT_BYTES_MAX`,
    /// not after the newest checkpoint, or after a record not yet logged.
    #[error("checkpoint after lsn {} ({bytes} bytes) refused", after_lsn.0)]
    InvalidCheckpoint {
        /// The lsn it claimed to follow.
        after_lsn: Lsn,
        /// Its length.
        bytes: u64,
    },
    /// A new backup cannot be caught up: the records up to `missing_through`
    /// are not kept here and no checkpoint covers them (take one first).
    #[error("no checkpoint covers the records up to lsn {}", missing_through.0)]
    NoCheckpoint {
        /// The last record not kept.
        missing_through: Lsn,
    },
}
