//! What the core asks its shell to do. The shell executes commands in the order
//! they are returned.
//!
//! Persistence is asynchronous: `Persist` and `InstallSnapshot` carry a
//! [`PersistId`]; the shell makes the data durable and then reports
//! `handle_persisted(id)`. Ids increase, and completing an id means every earlier
//! id is complete too, so a shell with group commit reports only the highest id of
//! each fsync. The core never emits a message that depends on state which is not
//! yet durable: a vote or an append acknowledgement is held back until the
//! `handle_persisted` call that covers it.

use crate::entry::{Entry, HardState, SnapshotMeta};
use crate::message::Message;
use bytes::Bytes;
use understudy_types::{LogIndex, NodeId};

/// Identifies one persistence request; see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistId(pub u64);

/// One command for the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Make this state durable, then call `handle_persisted(id)`.
    Persist {
        /// Reported back once durable.
        id: PersistId,
        /// A new term or vote to store, if it changed.
        hard_state: Option<HardState>,
        /// Entries to store. If the first entry's index is at or below the last
        /// stored index, every stored entry from that index on is discarded first
        /// (a conflicting suffix is replaced).
        entries: Vec<Entry>,
    },
    /// Send this message. Delivery is not guaranteed; the core retries what matters.
    Send(Message),
    /// Apply these committed entries to the state machine, in order. Indexes are
    /// consecutive and continue from the previous `Apply` or snapshot.
    Apply(Vec<Entry>),
    /// A snapshot from the leader replaces the local state: store it durably
    /// together with `meta` (discarding every stored entry at or below
    /// `meta.last_index`, and every stored entry above it unless the core keeps a
    /// matching suffix — `keep_entries_after` says whether it does), restore the
    /// state machine from `data`, then call `handle_persisted(id)`.
    InstallSnapshot {
        /// Reported back once durable.
        id: PersistId,
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The state machine's serialized state at `meta.last_index`.
        data: Bytes,
        /// True when the local log holds the snapshot's last entry with the same
        /// term; the entries after it stay. False: the whole log is discarded.
        keep_entries_after: bool,
    },
    /// A linearizable read requested with `read_index(context)` may proceed once
    /// the state machine has applied `index`.
    ReadReady {
        /// The caller's identifier for the read.
        context: u64,
        /// Serve the read after applying at least this index.
        index: LogIndex,
    },
    /// A read requested with `read_index(context)` cannot be served by this node.
    ReadFailed {
        /// The caller's identifier for the read.
        context: u64,
        /// The leader this node knows of, if any, to retry there.
        leader_hint: Option<NodeId>,
    },
}
