//! What the replicated log holds: entries, membership, hard state, snapshot
//! metadata. These types are persisted by the shell and sent on the wire, so they
//! derive `serde`; decoders must check sizes against `understudy_types::limits`
//! before decoding.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use understudy_types::{LogIndex, NodeId, Term};

/// One slot of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position; the first entry has index 1.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

/// The content of a log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// The entry a new leader appends at the start of its term (§5.4.2, §8): once it
    /// commits, everything before it is committed too, and ReadIndex may serve reads.
    Empty,
    /// An application command, opaque to Raft.
    Command(Bytes),
    /// A new membership configuration. It takes effect on every node as soon as it
    /// is appended to that node's log, not when it commits.
    Membership(Membership),
}

/// Who belongs to a Raft group: voters decide elections and commitment; learners
/// receive the log but do not count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Members whose votes and acknowledgements count toward a quorum.
    pub voters: BTreeSet<NodeId>,
    /// Members that replicate the log without voting, e.g. a new node catching up.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A configuration of the given voters and no learners.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `node` is a voter or a learner.
    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The number of voters that makes a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// A single-server membership change (Raft dissertation §4.1): at most one voter is
/// added or removed per change, so any two consecutive configurations share a
/// majority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node as a learner; it receives the log but does not vote.
    AddLearner(NodeId),
    /// Promote a learner to voter. Refused until the learner has caught up.
    PromoteLearner(NodeId),
    /// Remove a voter or learner. Removing the leader makes it step down once the
    /// change commits.
    Remove(NodeId),
}

/// The state that must be durable before the node answers any message that
/// depends on it (Figure 2, "persistent state on all servers").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub voted_for: Option<NodeId>,
}

/// What a snapshot replaces: the log up to and including `last_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The index of the last entry the snapshot covers.
    pub last_index: LogIndex,
    /// The term of that entry.
    pub last_term: Term,
    /// The membership in force at `last_index`.
    pub membership: Membership,
}
