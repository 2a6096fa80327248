//! Errors of the Raft core. A refused request is an ordinary result for the
//! caller to handle; an impossible state is an assertion failure, not an error.

use understudy_types::{LogIndex, NodeId};

/// Why a request to the core was refused. Nothing was appended to any log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// Only the leader accepts proposals, membership changes and transfers.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<NodeId>,
    },
    /// A leadership transfer is under way; proposals wait until it ends.
    #[error("leadership transfer in progress")]
    TransferInProgress,
    /// Too many proposals are waiting to commit.
    #[error("too many uncommitted entries ({uncommitted})")]
    TooManyUncommitted {
        /// How many entries are uncommitted.
        uncommitted: usize,
    },
    /// The command is larger than `RAFT_ENTRY_BYTES_MAX`.
    #[error("entry of {bytes} bytes exceeds the limit of {limit} bytes")]
    EntryTooLarge {
        /// The command's size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A membership change is not yet committed, or the leader has not yet
    /// committed an entry of its own term.
    #[error("a membership change is pending until index {pending_until}")]
    MembershipChangePending {
        /// The index that must commit first.
        pending_until: LogIndex,
    },
    /// The membership change does not make sense for the current configuration.
    #[error("invalid membership change: {reason}")]
    InvalidMembershipChange {
        /// What is wrong.
        reason: String,
    },
    /// The state handed to the core on restart is inconsistent.
    #[error("inconsistent restored state: {reason}")]
    InconsistentRestoredState {
        /// What is wrong.
        reason: String,
    },
    /// The configuration's numbers do not fit together or exceed the limits.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A leadership transfer was asked for a node that is not a voter.
    #[error("cannot transfer leadership to {target}: not a voter")]
    InvalidTransferTarget {
        /// The node asked for.
        target: NodeId,
    },
}
