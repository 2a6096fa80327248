//! Messages of the logging channel between a pid's primary and its backup,
//! and the commands the cores hand to their shells.

use crate::record::{Epoch, Lsn, Output, Pid, Record};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One message of the logging channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairMessage {
    /// Primary → backup: contiguous records, oldest first (never empty).
    Append {
        /// The process.
        pid: Pid,
        /// The sender's epoch.
        epoch: Epoch,
        /// The records.
        records: Vec<Record>,
    },
    /// Primary → backup: the primary is alive and has logged up to `logged`
    /// (sent when there is nothing to append, so the backup's suspicion timer
    /// measures the primary, not the guest's activity). Answered like an
    /// append: an `Ack`, a `Resend` when records are missing, or `Fenced`.
    Heartbeat {
        /// The process.
        pid: Pid,
        /// The sender's epoch.
        epoch: Epoch,
        /// The last lsn the primary logged.
        logged: Lsn,
        /// The primary counts this backup as caught up: it acknowledged
        /// everything logged when it was paired, so it holds the whole state
        /// (a checkpoint and the records after it, or the log from lsn 1) and
        /// may be promoted. A backup still catching up must not be: it may lack
        /// what outputs released before it was paired depend on.
        caught_up: bool,
    },
    /// Backup → primary: every record up to `durable` is durable here.
    Ack {
        /// The process.
        pid: Pid,
        /// The epoch acknowledged (the primary's).
        epoch: Epoch,
        /// The highest contiguous lsn durable at the backup.
        durable: Lsn,
    },
    /// Backup → primary: records were missing; send again from `from`.
    Resend {
        /// The process.
        pid: Pid,
        /// The epoch of the append that showed the gap.
        epoch: Epoch,
        /// The first lsn the backup lacks.
        from: Lsn,
    },
    /// Primary → backup: one chunk of a checkpoint, the guest's state after
    /// record `after_lsn` (its encoding is opaque to the pair core; it
    /// includes the outputs not yet released). Chunks go in order, each at
    /// most `PAIR_CHECKPOINT_CHUNK_BYTES_MAX` bytes; a checkpoint is complete
    /// once `offset + data.len() == total_bytes`.
    Checkpoint {
        /// The process.
        pid: Pid,
        /// The sender's epoch.
        epoch: Epoch,
        /// The last record the checkpoint includes.
        after_lsn: Lsn,
        /// Where `data` starts in the checkpoint's encoding.
        offset: u64,
        /// The length of the whole encoding.
        total_bytes: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Backup → primary: the first `durable_bytes` bytes of the checkpoint
    /// after `after_lsn` are durable here (all of it once `durable_bytes`
    /// equals its length: both sides may then drop records up to `after_lsn`).
    CheckpointAck {
        /// The process.
        pid: Pid,
        /// The epoch acknowledged (the primary's).
        epoch: Epoch,
        /// The checkpoint's `after_lsn`.
        after_lsn: Lsn,
        /// Contiguous bytes durable from the start.
        durable_bytes: u64,
    },
    /// Backup → primary: a newer epoch exists; the primary must stop.
    Fenced {
        /// The process.
        pid: Pid,
        /// The newest epoch the backup knows.
        epoch: Epoch,
    },
}

impl PairMessage {
    /// The process the message is about.
    pub fn pid(&self) -> Pid {
        match self {
            PairMessage::Append { pid, .. }
            | PairMessage::Heartbeat { pid, .. }
            | PairMessage::Ack { pid, .. }
            | PairMessage::Resend { pid, .. }
            | PairMessage::Checkpoint { pid, .. }
            | PairMessage::CheckpointAck { pid, .. }
            | PairMessage::Fenced { pid, .. } => *pid,
        }
    }
}

/// What a core asks its shell to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send this message to the other side of the pair.
    Send(PairMessage),
    /// Backup: write these records to the pid's log, then call
    /// `BackupLog::handle_persisted` with the last lsn once they are durable.
    Persist(Vec<Record>),
    /// Backup: write this chunk of the checkpoint after `after_lsn` at
    /// `offset`, after every earlier command's writes, then call
    /// `BackupLog::handle_checkpoint_persisted(after_lsn, offset +
    /// data.len())` once it is durable. When that end reaches `total_bytes`
    /// the checkpoint is complete: the shell may then drop its records up to
    /// `after_lsn` and any older checkpoint (an incomplete newer checkpoint
    /// never replaces a complete older one).
    PersistCheckpoint {
        /// The last record the checkpoint includes.
        after_lsn: Lsn,
        /// Where `data` starts in the checkpoint's encoding.
        offset: u64,
        /// The length of the whole encoding.
        total_bytes: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Primary: these outputs may now leave (to the output store), in order.
    Release(Vec<Output>),
    /// Primary: a newer epoch exists; stop the guest and drop this pid's state.
    Stop {
        /// The newer epoch.
        epoch: Epoch,
    },
}
