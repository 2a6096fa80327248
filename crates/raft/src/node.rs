//! The Raft node: the public surface of the core. Each public method is one
//! input; the behaviour lives in the private modules by concern (`election`,
//! `replication`, `snapshot`, `membership`, `read_index`, `transfer`) and this
//! file holds the state they share and the plumbing for emitting commands.

use crate::command::{Command, PersistId};
use crate::config::Config;
use crate::entry::{Entry, HardState, Membership, MembershipChange, SnapshotMeta};
use crate::error::RaftError;
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::persistence::Persistence;
use crate::snapshot::SnapshotAssembly;
use crate::state::{ActiveBugs, Campaign, LeaderState, Timers};
use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
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
    pub(crate) config: Config,
    pub(crate) bugs: ActiveBugs,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) role: Role,
    /// The latest term and vote in memory; durable once `persistence` says so.
    pub(crate) hard_state: HardState,
    pub(crate) leader: Option<NodeId>,
    pub(crate) log: RaftLog,
    pub(crate) persistence: Persistence,
    pub(crate) timers: Timers,
    pub(crate) campaign: Campaign,
    pub(crate) leader_state: Option<LeaderState>,
    pub(crate) snapshot_assembly: Option<SnapshotAssembly>,
    /// Incremented for every heartbeat broadcast; never reset, so an echoed round
    /// in the current term always refers to a request sent in this term.
    pub(crate) heartbeat_round: u64,
    pub(crate) commands: Vec<Command>,
}

impl RaftNode {
    /// Starts a node from the state it persisted (or a bootstrap state).
    ///
    /// The node starts as a follower with commit and applied index at the
    /// snapshot's last index: the shell restores the state machine from the
    /// snapshot data itself, and `Apply` resumes after it. If the snapshot's term
    /// is newer than the restored hard state, the node adopts it and emits a
    /// `Persist` for it, to be drained with `take_commands` like any other.
    pub fn new(config: Config, restored: RestoredState) -> Result<RaftNode, RaftError> {
        crate::restore::validate_config(&config)?;
        crate::restore::validate_restored_state(&restored)?;
        let RestoredState {
            hard_state,
            snapshot: (snapshot_meta, snapshot_data),
            entries,
        } = restored;
        let mut node = RaftNode {
            bugs: ActiveBugs::from_config(&config),
            rng: ChaCha8Rng::seed_from_u64(config.random_seed),
            config,
            role: Role::Follower,
            hard_state,
            leader: None,
            log: RaftLog::restore(snapshot_meta, snapshot_data, entries),
            persistence: Persistence::default(),
            timers: Timers::default(),
            campaign: Campaign::default(),
            leader_state: None,
            snapshot_assembly: None,
            heartbeat_round: 0,
            commands: Vec::new(),
        };
        // The application may have snapshotted committed entries of a term this
        // node had not yet made durable. Adopt that term (with no vote: no vote in
        // it was ever durable, so none was ever sent) and persist it; the
        // `Persist` command is waiting in `take_commands`.
        let snapshot_term = node.log.snapshot().last_term;
        if snapshot_term > node.hard_state.term {
            node.set_hard_state(snapshot_term, None);
            node.flush_persist();
        }
        node.reset_election_timer();
        Ok(node)
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
        self.finish_input();
    }

    /// Handles a message from a peer. Messages for another group or another
    /// node, or malformed, are dropped. A request with a stale term is refused
    /// with the current term (even from a node outside the membership: it may be
    /// a stale leader that must learn the newer term); a stale response is
    /// dropped.
    pub fn step(&mut self, message: Message) {
        if message.group != self.config.group
            || message.to != self.config.id
            || message.from == self.config.id
            || !crate::validate::message_is_well_formed(&message)
        {
            return;
        }
        self.step_checked(message);
        self.finish_input();
    }

    /// Proposes an application command. On success returns the index and term the
    /// entry was appended at; the command is committed if and when an `Apply`
    /// command delivers an entry with that index *and* that term.
    pub fn propose(&mut self, command: Bytes) -> Result<(LogIndex, Term), RaftError> {
        let result = self.propose_command(command);
        self.finish_input();
        result
    }

    /// Proposes a single-server membership change; same return as `propose`.
    pub fn change_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<(LogIndex, Term), RaftError> {
        let result = self.propose_membership_change(change);
        self.finish_input();
        result
    }

    /// Asks for a linearizable read point; answered later by `ReadReady` or
    /// `ReadFailed` with the same context.
    pub fn read_index(&mut self, context: u64) {
        self.request_read(context);
        self.finish_input();
    }

    /// Asks the leader to hand leadership to `target`. Succeeds at once (nothing
    /// to do) if `target` is this node; fails with `TransferInProgress` if a
    /// transfer to another node is under way.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), RaftError> {
        let result = self.start_transfer(target);
        self.finish_input();
        result
    }

    /// Reports that the shell has strong evidence that `peer`'s process is gone
    /// (its connection closed and a new one was refused: the kernel closed its
    /// sockets). If `peer` is the leader this follower follows (and this node may
    /// campaign), the node stops following it, which ends its leader lease so it
    /// grants other voters' pre-votes, and campaigns (with pre-vote) after a
    /// random delay of `1..=max(heartbeat_interval_ticks, 2)` ticks instead of
    /// a full election timeout. Ignored in every other case: `peer` not the
    /// leader, leader unknown, this node a pre-candidate, candidate or leader,
    /// or pre-vote off (a wrong hint could then depose a live leader).
    ///
    /// A wrong hint is harmless: the other voters still in their lease refuse
    /// the pre-vote, so no term changes, and the live leader's next
    /// AppendEntries makes this node follow it again.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        self.handle_unreachable(peer);
        self.finish_input();
    }

    /// Reports that persistence request `id` (and every earlier one) is durable.
    /// Ids at or below one already reported are ignored.
    pub fn handle_persisted(&mut self, id: PersistId) {
        let (covered, released) = self.persistence.complete(id);
        if let Some(index) = covered {
            self.log.persisted_to(index);
        }
        for message in released {
            self.commands.push(Command::Send(message));
        }
        match self.role {
            Role::Candidate => self.poll_election(),
            Role::Leader => self.maybe_commit(),
            Role::Follower | Role::PreCandidate => {}
        }
        self.finish_input();
    }

    /// Reports that the application durably stored a snapshot of its state at
    /// `last_index` (which it has applied); the core drops the log up to there and
    /// sends `data` to followers that fall behind it. A `last_index` at or below
    /// the current snapshot is ignored.
    pub fn compact(&mut self, last_index: LogIndex, data: Bytes) {
        self.log.compact(last_index, data);
        self.finish_input();
    }

    /// Drains the commands produced since the last call, in execution order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// A read-only view of the node.
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.hard_state.term,
            leader: self.leader,
            commit_index: self.log.commit_index(),
            applied_index: self.log.applied_index(),
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted_index(),
            membership: self.log.membership().clone(),
        }
    }

    /// The entry at `index`, if the in-memory log holds it (not compacted away).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The first index held in the in-memory log (snapshot's last index + 1).
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The snapshot the node currently holds.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        self.log.snapshot()
    }

    /// This node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The durable-or-pending term and vote (the latest values in memory).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The leader's view of a follower's match index; `None` on a non-leader or
    /// for a node that is not a member.
    pub fn match_index_of(&self, node: NodeId) -> Option<LogIndex> {
        let leader_state = self.leader_state.as_ref()?;
        if node == self.config.id {
            return Some(self.log.persisted_index());
        }
        leader_state
            .progress
            .get(&node)
            .map(|progress| progress.match_index)
    }

    // ----- plumbing shared by the modules -------------------------------------

    /// This node's id.
    pub(crate) fn id(&self) -> NodeId {
        self.config.id
    }

    /// The current term.
    pub(crate) fn term(&self) -> Term {
        self.hard_state.term
    }

    /// A message from this node in its current term.
    pub(crate) fn message(&self, to: NodeId, body: MessageBody) -> Message {
        Message {
            group: self.config.group,
            from: self.config.id,
            to,
            term: self.hard_state.term,
            body,
        }
    }

    /// Sends a message that depends on nothing unpersisted.
    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.commands.push(Command::Send(message));
    }

    /// Sends a message once every change made so far is durable: a granted vote
    /// or a snapshot acknowledgement promises state that must survive a crash.
    pub(crate) fn send_when_durable(&mut self, to: NodeId, body: MessageBody) {
        let message = self.message(to, body);
        self.flush_persist();
        if self.persistence.all_durable() {
            self.commands.push(Command::Send(message));
        } else {
            let id = self.persistence.last_issued();
            self.persistence.gate(id, message);
        }
    }

    /// Ends the handling of one input: emits what is staged for persistence and
    /// checks the invariants that must hold between inputs.
    fn finish_input(&mut self) {
        self.flush_persist();
        self.log.assert_invariants();
        let leads = self.role == Role::Leader;
        assert!(
            leads == self.leader_state.is_some() && (!leads || self.leader == Some(self.config.id)),
            "role {:?} inconsistent with leader {:?}",
            self.role,
            self.leader
        );
        if leads {
            assert!(
                self.persistence.hard_state_durable(),
                "a leader's term and vote must be durable"
            );
        }
    }

    /// Emits the staged term, vote and entries as one `Persist` command.
    pub(crate) fn flush_persist(&mut self) {
        if let Some(request) = self.persistence.take_staged() {
            self.commands.push(Command::Persist {
                id: request.id,
                hard_state: request.hard_state,
                entries: request.entries,
            });
        }
    }

    /// Changes the term and/or vote, staging it for persistence.
    pub(crate) fn set_hard_state(&mut self, term: Term, voted_for: Option<NodeId>) {
        assert!(
            term >= self.hard_state.term,
            "the term must never decrease: {term} after {}",
            self.hard_state.term
        );
        let hard_state = HardState { term, voted_for };
        if hard_state != self.hard_state {
            self.hard_state = hard_state;
            self.persistence.stage_hard_state(hard_state);
        }
    }

    /// Draws a new randomized election timeout and restarts the election timer.
    pub(crate) fn reset_election_timer(&mut self) {
        use rand::Rng;
        let minimum = self.config.election_timeout_ticks;
        self.timers.election_elapsed_ticks = 0;
        self.timers.randomized_election_timeout_ticks = self.rng.gen_range(minimum..2 * minimum);
    }

    /// Emits `Apply` commands for every committed entry not yet applied.
    pub(crate) fn apply_committed(&mut self) {
        while self.log.applied_index() < self.log.commit_index() {
            let batch = self.log.take_apply_batch(self.config.append_entries_max);
            assert!(!batch.is_empty(), "committed entries missing from the log");
            self.commands.push(Command::Apply(batch));
        }
    }

    /// Whether this node is a voter in the membership in force.
    pub(crate) fn is_voter(&self) -> bool {
        self.log.membership().voters.contains(&self.config.id)
    }
}
