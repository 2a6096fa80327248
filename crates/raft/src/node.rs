//! The Raft node: the public surface of the core. PLACEHOLDER SIGNATURES — the
//! bodies are being written; see the crate documentation for the contract.

use crate::command::{Command, PersistId};
use crate::config::Config;
use crate::entry::{Entry, HardState, Membership, MembershipChange, SnapshotMeta};
use crate::error::RaftError;
use crate::message::Message;
use bytes::Bytes;
use understudy_types::{LogIndex, NodeId, Term};

/// A node's role in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running a pre-vote round; has not changed its term.
    PreCandidate,
    /// Campaigning in its current term.
    Candidate,
    /// Leads its current term.
    Leader,
}

/// What the shell read back from durable storage at start-up.
#[derive(Clone, Debug, Default)]
pub struct RestoredState {
    /// The durable term and vote.
    pub hard_state: HardState,
    /// The latest durable snapshot: its metadata and data. A freshly bootstrapped
    /// node has a snapshot at index 0 whose metadata holds the initial membership;
    /// a node that will be added to a running group has index 0 and no members.
    pub snapshot: (SnapshotMeta, Bytes),
    /// Every durable entry after the snapshot, consecutive.
    pub entries: Vec<Entry>,
}

impl RestoredState {
    /// The state of a brand-new node in a group whose first members are `voters`.
    pub fn bootstrap(voters: impl IntoIterator<Item = NodeId>) -> RestoredState {
        RestoredState {
            hard_state: HardState::default(),
            snapshot: (
                SnapshotMeta {
                    last_index: LogIndex(0),
                    last_term: Term(0),
                    membership: Membership::with_voters(voters),
                },
                Bytes::new(),
            ),
            entries: Vec::new(),
        }
    }
}

/// A read-only view of a node, for shells, status pages and invariant checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// The leader it follows or is, if known.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit_index: LogIndex,
    /// The highest index handed out in an `Apply` command or covered by a snapshot.
    pub applied_index: LogIndex,
    /// The index of its last log entry (or of its snapshot if the log is empty).
    pub last_index: LogIndex,
    /// The highest index known durable locally.
    pub persisted_index: LogIndex,
    /// The membership in force (the latest appended configuration).
    pub membership: Membership,
}

/// A Raft node in one group.
pub struct RaftNode {
    _config: Config,
}

impl RaftNode {
    /// Starts a node from the state it persisted (or a bootstrap state).
    pub fn new(_config: Config, _restored: RestoredState) -> Result<RaftNode, RaftError> {
        todo!()
    }
    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        todo!()
    }
    /// Handles a message from a peer. Messages for another group, from a node
    /// outside the membership with a stale term, or malformed, are dropped.
    pub fn step(&mut self, _message: Message) {
        todo!()
    }
    /// Proposes an application command. On success returns the index and term the
    /// entry was appended at; the command is committed if and when an `Apply`
    /// command delivers an entry with that index *and* that term.
    pub fn propose(&mut self, _command: Bytes) -> Result<(LogIndex, Term), RaftError> {
        todo!()
    }
    /// Proposes a single-server membership change; same return as `propose`.
    pub fn change_membership(
        &mut self,
        _change: MembershipChange,
    ) -> Result<(LogIndex, Term), RaftError> {
        todo!()
    }
    /// Asks for a linearizable read point; answered later by `ReadReady` or
    /// `ReadFailed` with the same context.
    pub fn read_index(&mut self, _context: u64) {
        todo!()
    }
    /// Asks the leader to hand leadership to `target`.
    pub fn transfer_leadership(&mut self, _target: NodeId) -> Result<(), RaftError> {
        todo!()
    }
    /// Reports that persistence request `id` (and every earlier one) is durable.
    pub fn handle_persisted(&mut self, _id: PersistId) {
        todo!()
    }
    /// Reports that the application durably stored a snapshot of its state at
    /// `last_index` (which it has applied); the core drops the log up to there and
    /// sends `data` to followers that fall behind it.
    pub fn compact(&mut self, _last_index: LogIndex, _data: Bytes) {
        todo!()
    }
    /// Drains the commands produced since the last call, in execution order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        todo!()
    }
    /// A read-only view of the node.
    pub fn status(&self) -> Status {
        todo!()
    }
    /// The entry at `index`, if the in-memory log holds it (not compacted away).
    pub fn entry(&self, _index: LogIndex) -> Option<&Entry> {
        todo!()
    }
    /// The first index held in the in-memory log (snapshot's last index + 1).
    pub fn first_index(&self) -> LogIndex {
        todo!()
    }
    /// The snapshot the node currently holds.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        todo!()
    }
}
