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
//! Not here yet: checkpoints and log truncation, promotion's restore and
//! replay, re-pairing (see docs/pairs.md for the design).

mod backup;
mod message;
mod output_store;
mod primary;
mod record;
#[cfg(test)]
mod tests;

pub use backup::BackupLog;
pub use message::{Command, PairMessage};
pub use output_store::{Accepted, OutputRefusal, OutputStore};
pub use primary::{PrimaryConfig, PrimaryLog};
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
}
