//! One simulated node: the real Raft core over the real Raft log store on a
//! simulated disk, with the key-value state machine on top.
//!
//! The node executes the core's commands and reports what happened as
//! [`NodeEffects`]; the cluster routes messages, completes client operations and
//! feeds the invariant checker. A crash drops everything but the disk, then the
//! disk itself loses, tears or corrupts unsynced sectors.

use crate::kv::{KvCommand, KvStore};
use crate::trace::fingerprint;
use bytes::Bytes;
use std::collections::BTreeMap;
use understudy_raft::{
    Command, Config, Entry, EntryPayload, HardState, Membership, Message, MessageBody, PersistId,
    RaftNode, RestoredState, SnapshotMeta,
};
use understudy_raft_log::{RaftLog, RaftLogOptions};
use understudy_types::{LogIndex, NodeId, Term};
use understudy_wal::SimDisk;

/// Identifies one client operation across the whole run.
pub type OperationKey = u64;

/// The fate of a client operation, as far as one node can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The write committed and was applied.
    WriteCommitted(OperationKey),
    /// The write's log slot was taken by another entry: it can never commit.
    WriteLost(OperationKey),
    /// A linearizable read was served.
    ReadServed(OperationKey, Option<String>),
    /// The node could not serve the read; try the hinted leader.
    ReadRefused(OperationKey, Option<NodeId>),
}

/// An entry a node appended to its log, for the log-matching check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedEntry {
    /// The entry's index.
    pub index: LogIndex,
    /// The entry's term.
    pub term: Term,
    /// The term of the entry before it in this node's log.
    pub previous_term: Term,
    /// A fingerprint of the entry's payload.
    pub fingerprint: u64,
}

/// What a node did while handling one input.
#[derive(Debug, Default)]
pub struct NodeEffects {
    /// Messages to route.
    pub messages: Vec<Message>,
    /// Client operations that finished.
    pub completions: Vec<Completion>,
    /// Entries appended to the log, in order.
    pub appended: Vec<AppendedEntry>,
    /// Entries applied to the state machine, as (index, term, fingerprint).
    pub applied: Vec<(LogIndex, Term, u64)>,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// Snapshots taken locally to compact the log.
    pub snapshots_taken: u64,
    /// Membership changes applied.
    pub memberships_applied: Vec<(LogIndex, Membership)>,
    /// A flush of the log should be scheduled.
    pub sync_wanted: bool,
    /// Safety violations seen inside the node.
    pub violations: Vec<String>,
}

/// Test-only switches for deliberate bugs in the node around the Raft core.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShellBugs {
    /// The WAL's fsync does nothing while reporting success.
    pub no_op_sync: bool,
    /// Reads are served from the local state machine without ReadIndex, so a
    /// deposed leader or a lagging follower answers with stale data.
    pub stale_reads: bool,
}

/// What a node's log holds, as far as the node's answers may rely on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LogView {
    /// The last index of a prefix that matches the core's log.
    last_index: LogIndex,
    /// The term and vote.
    hard_state: HardState,
}

/// A node that is up.
struct Running {
    raft: RaftNode,
    log: RaftLog<SimDisk>,
    kv: KvStore,
    applied_index: LogIndex,
    applied_term: Term,
    applied_membership: Membership,
    snapshot_index: LogIndex,
    /// The highest persistence id written to the log but not yet reported.
    written_unsynced: Option<PersistId>,
    /// What was written, synced or not.
    written: LogView,
    /// What a crash cannot take away: acknowledgements and votes may rely only on
    /// this (the persistence-ordering invariant, checked at every send).
    durable: LogView,
    /// Writes waiting for their slot to be applied: index -> (term, operation).
    pending_writes: BTreeMap<LogIndex, (Term, OperationKey)>,
    /// Reads waiting for ReadIndex: operation -> key.
    pending_reads: BTreeMap<OperationKey, u64>,
    /// Reads whose read point is known, waiting for the state machine to reach it.
    ready_reads: Vec<(LogIndex, OperationKey)>,
}

/// One simulated node.
pub struct SimNode {
    /// The node's id.
    pub id: NodeId,
    /// Increases at every restart.
    pub incarnation: u64,
    /// The node's disk; survives crashes.
    pub disk: SimDisk,
    /// Apply a snapshot once this many entries were applied since the last one.
    pub snapshot_threshold_entries: u64,
    /// The highest index this node ever applied, across restarts.
    pub applied_high_water: LogIndex,
    shell_bugs: ShellBugs,
    running: Option<Running>,
}

impl SimNode {
    /// A node with a fresh disk. `initial_voters` bootstraps a new group; an empty
    /// list makes a node that waits to be added to a running group.
    pub fn new(id: NodeId, snapshot_threshold_entries: u64, shell_bugs: ShellBugs) -> SimNode {
        SimNode {
            id,
            incarnation: 0,
            disk: SimDisk::new(),
            snapshot_threshold_entries,
            applied_high_water: LogIndex(0),
            shell_bugs,
            running: None,
        }
    }

    /// Whether the node is up.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The Raft core, if the node is up.
    pub fn raft(&self) -> Option<&RaftNode> {
        self.running.as_ref().map(|running| &running.raft)
    }

    /// The key-value state, if the node is up.
    pub fn kv(&self) -> Option<&KvStore> {
        self.running.as_ref().map(|running| &running.kv)
    }

    /// The index the state machine has applied, if the node is up.
    pub fn applied_index(&self) -> Option<LogIndex> {
        self.running.as_ref().map(|running| running.applied_index)
    }

    /// The membership of the last applied configuration (a committed one), if the
    /// node is up.
    pub fn applied_membership(&self) -> Option<&Membership> {
        self.running
            .as_ref()
            .map(|running| &running.applied_membership)
    }

    /// Starts (or restarts) the node from its disk.
    pub fn start(
        &mut self,
        config: Config,
        initial_voters: &[NodeId],
        effects: &mut NodeEffects,
    ) -> Result<(), String> {
        assert!(self.running.is_none(), "{} started twice", self.id);
        self.incarnation += 1;
        let options = self.log_options();
        let voters = initial_voters.to_vec();
        let (log, restored) = RaftLog::open(self.disk.clone(), options, move || {
            RestoredState::bootstrap(voters)
        })
        .map_err(|error| format!("{} cannot reopen its log: {error}", self.id))?;
        let (meta, data) = restored.snapshot.clone();
        let restored_view = LogView {
            last_index: restored
                .entries
                .last()
                .map_or(meta.last_index, |entry| entry.index),
            hard_state: restored.hard_state,
        };
        let kv = KvStore::restore(&data)
            .ok_or_else(|| format!("{} holds an undecodable snapshot", self.id))?;
        let raft = RaftNode::new(config, restored)
            .map_err(|error| format!("{} refused its restored state: {error}", self.id))?;
        self.running = Some(Running {
            raft,
            log,
            kv,
            applied_index: meta.last_index,
            applied_term: meta.last_term,
            applied_membership: meta.membership.clone(),
            snapshot_index: meta.last_index,
            written_unsynced: None,
            written: restored_view,
            durable: restored_view,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            ready_reads: Vec::new(),
        });
        self.drain(effects);
        Ok(())
    }

    fn log_options(&self) -> RaftLogOptions {
        let mut options = RaftLogOptions::default();
        // Small segments, so that runs exercise segment rotation and compaction.
        options.wal.segment_bytes_target = 64 * 1024;
        options.wal.deliberate_bug_no_op_sync = self.shell_bugs.no_op_sync;
        options
    }

    /// Stops the node without warning. Unsynced writes are at the disk's mercy;
    /// the cluster calls `disk.crash` afterwards.
    pub fn crash(&mut self) {
        self.running = None;
    }

    /// Runs `input` against the core if the node is up, then executes the commands
    /// it produced.
    pub fn with_raft(&mut self, effects: &mut NodeEffects, input: impl FnOnce(&mut RaftNode)) {
        if let Some(running) = self.running.as_mut() {
            input(&mut running.raft);
            self.drain(effects);
        }
    }

    /// Submits a client write; `Err` carries the leader hint when this node cannot
    /// take it (nothing was appended).
    pub fn propose_write(
        &mut self,
        operation: OperationKey,
        command: &KvCommand,
        effects: &mut NodeEffects,
    ) -> Result<(), Option<NodeId>> {
        let running = self.running.as_mut().ok_or(None)?;
        match running.raft.propose(command.encode()) {
            Ok((index, term)) => {
                running.pending_writes.insert(index, (term, operation));
                self.drain(effects);
                Ok(())
            }
            Err(understudy_raft::RaftError::NotLeader { leader_hint }) => Err(leader_hint),
            Err(_) => Err(None),
        }
    }

    /// Submits a linearizable read of `key`.
    pub fn request_read(&mut self, operation: OperationKey, key: u64, effects: &mut NodeEffects) {
        if let Some(running) = self
            .running
            .as_mut()
            .filter(|_| self.shell_bugs.stale_reads)
        {
            let value = running.kv.get(key).map(str::to_owned);
            effects
                .completions
                .push(Completion::ReadServed(operation, value));
            return;
        }
        if let Some(running) = self.running.as_mut() {
            running.pending_reads.insert(operation, key);
            running.raft.read_index(operation);
            self.drain(effects);
        } else {
            effects
                .completions
                .push(Completion::ReadRefused(operation, None));
        }
    }

    /// Makes everything written so far durable and tells the core.
    pub fn sync(&mut self, effects: &mut NodeEffects) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let Some(id) = running.written_unsynced.take() else {
            return;
        };
        running
            .log
            .sync()
            .expect("the simulated disk injects no I/O errors");
        running.durable = running.written;
        running.raft.handle_persisted(id);
        self.drain(effects);
    }

    /// Executes commands until the core has nothing more to say.
    fn drain(&mut self, effects: &mut NodeEffects) {
        let threshold = self.snapshot_threshold_entries;
        let Some(running) = self.running.as_mut() else {
            return;
        };
        loop {
            let commands = running.raft.take_commands();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                running.execute(command, effects);
            }
            running.serve_ready_reads(effects);
            running.maybe_snapshot(threshold, effects);
        }
        self.applied_high_water = self.applied_high_water.max(running.applied_index);
    }
}

impl Running {
    fn execute(&mut self, command: Command, effects: &mut NodeEffects) {
        match command {
            Command::Persist {
                id,
                hard_state,
                entries,
            } => {
                self.record_appended(&entries, effects);
                self.note_written(hard_state, &entries);
                // Written now, synced by the group commit the cluster schedules:
                // a crash in between loses or tears what was written.
                self.log
                    .append(hard_state, &entries)
                    .and_then(|()| self.log.flush())
                    .expect("the simulated disk injects no I/O errors");
                self.written_unsynced = Some(id);
                effects.sync_wanted = true;
            }
            Command::Send(message) => {
                self.check_durable_before_answer(&message, effects);
                effects.messages.push(message);
            }
            Command::Apply(entries) => {
                for entry in entries {
                    self.apply(entry, effects);
                }
            }
            Command::InstallSnapshot {
                id,
                meta,
                data,
                keep_entries_after,
            } => self.install_snapshot(id, meta, data, keep_entries_after, effects),
            Command::ReadReady { context, index } => self.ready_reads.push((index, context)),
            Command::ReadFailed {
                context,
                leader_hint,
            } => {
                self.pending_reads.remove(&context);
                effects
                    .completions
                    .push(Completion::ReadRefused(context, leader_hint));
            }
        }
    }

    fn note_written(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(hard_state) = hard_state {
            self.written.hard_state = hard_state;
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // Entries from `first` on replace what was stored there; until the
            // replacement is synced, only the prefix before it is durable.
            self.durable.last_index = self.durable.last_index.min(first.index.previous());
            self.written.last_index = last.index;
        }
    }

    /// Persistence ordering: a vote or an append acknowledgement may only leave
    /// the node once the state it vouches for is durable.
    fn check_durable_before_answer(&self, message: &Message, effects: &mut NodeEffects) {
        match message.body {
            MessageBody::AppendResponse {
                success: true,
                match_index,
                ..
            } if match_index > self.durable.last_index => effects.violations.push(format!(
                "acknowledged entries up to {match_index} with only {} durable",
                self.durable.last_index
            )),
            // A durable later term also makes the vote safe: the node can never vote
            // in the vote's term again.
            MessageBody::VoteResponse { granted: true }
                if self.durable.hard_state.term < message.term
                    || (self.durable.hard_state.term == message.term
                        && self.durable.hard_state.voted_for != Some(message.to)) =>
            {
                effects.violations.push(format!(
                    "granted its vote to {} in {} before the vote was durable",
                    message.to, message.term
                ))
            }
            _ => {}
        }
    }

    fn record_appended(&self, entries: &[Entry], effects: &mut NodeEffects) {
        let Some(first) = entries.first() else {
            return;
        };
        let mut previous_term = self.term_at(first.index.previous());
        for entry in entries {
            effects.appended.push(AppendedEntry {
                index: entry.index,
                term: entry.term,
                previous_term,
                fingerprint: payload_fingerprint(&entry.payload),
            });
            previous_term = entry.term;
        }
    }

    /// The term of the entry at `index` in the core's log (or its snapshot).
    fn term_at(&self, index: LogIndex) -> Term {
        if let Some(entry) = self.raft.entry(index) {
            return entry.term;
        }
        let meta = self.raft.snapshot_meta();
        assert_eq!(
            meta.last_index, index,
            "the entry before an appended batch is in the log or is the snapshot's last"
        );
        meta.last_term
    }

    fn apply(&mut self, entry: Entry, effects: &mut NodeEffects) {
        if entry.index != self.applied_index.next() {
            effects.violations.push(format!(
                "applied index {} after {}: applies must be consecutive",
                entry.index, self.applied_index
            ));
        }
        effects
            .applied
            .push((entry.index, entry.term, payload_fingerprint(&entry.payload)));
        match &entry.payload {
            EntryPayload::Empty => {}
            EntryPayload::Command(bytes) => match KvCommand::decode(bytes) {
                Some(command) => self.kv.apply(&command),
                None => effects
                    .violations
                    .push(format!("undecodable command at {}", entry.index)),
            },
            EntryPayload::Membership(membership) => {
                self.applied_membership = membership.clone();
                effects
                    .memberships_applied
                    .push((entry.index, membership.clone()));
            }
        }
        if let Some((term, operation)) = self.pending_writes.remove(&entry.index) {
            effects.completions.push(if term == entry.term {
                Completion::WriteCommitted(operation)
            } else {
                Completion::WriteLost(operation)
            });
        }
        self.applied_index = entry.index;
        self.applied_term = entry.term;
    }

    fn install_snapshot(
        &mut self,
        id: PersistId,
        meta: SnapshotMeta,
        data: Bytes,
        keep_entries_after: bool,
        effects: &mut NodeEffects,
    ) {
        if meta.last_index <= self.applied_index {
            effects.violations.push(format!(
                "installed a snapshot at {} over applied index {}",
                meta.last_index, self.applied_index
            ));
        }
        // The store syncs the snapshot, and with it every record written before it,
        // so the install also covers the persistence ids written earlier.
        self.log
            .install_snapshot(&meta, &data, keep_entries_after)
            .expect("the simulated disk injects no I/O errors");
        match KvStore::restore(&data) {
            Some(kv) => self.kv = kv,
            None => effects
                .violations
                .push(format!("undecodable snapshot at {}", meta.last_index)),
        }
        // Writes waiting for slots the snapshot covers can no longer be matched to
        // their entries: their outcome stays unknown to this node.
        self.pending_writes = self.pending_writes.split_off(&meta.last_index.next());
        self.applied_index = meta.last_index;
        self.applied_term = meta.last_term;
        self.applied_membership = meta.membership.clone();
        self.snapshot_index = meta.last_index;
        self.written_unsynced = None;
        if !keep_entries_after {
            self.written.last_index = meta.last_index;
        }
        self.durable = self.written;
        effects.snapshots_installed += 1;
        self.raft.handle_persisted(id);
    }

    fn serve_ready_reads(&mut self, effects: &mut NodeEffects) {
        let applied = self.applied_index;
        let pending_reads = &mut self.pending_reads;
        let kv = &self.kv;
        self.ready_reads.retain(|(index, operation)| {
            if *index > applied {
                return true;
            }
            if let Some(key) = pending_reads.remove(operation) {
                let value = kv.get(key).map(str::to_owned);
                effects
                    .completions
                    .push(Completion::ReadServed(*operation, value));
            }
            false
        });
    }

    fn maybe_snapshot(&mut self, threshold: u64, effects: &mut NodeEffects) {
        if self.applied_index.get() < self.snapshot_index.get() + threshold {
            return;
        }
        let meta = SnapshotMeta {
            last_index: self.applied_index,
            last_term: self.applied_term,
            membership: self.applied_membership.clone(),
        };
        let data = self.kv.snapshot();
        self.log
            .save_snapshot(&meta, &data)
            .expect("the simulated disk injects no I/O errors");
        // Storing the snapshot syncs the log too: everything written is durable.
        self.durable = self.written;
        self.raft.compact(meta.last_index, data);
        self.snapshot_index = meta.last_index;
        effects.snapshots_taken += 1;
    }
}

/// A fingerprint of an entry's payload, for comparing entries across nodes.
pub fn payload_fingerprint(payload: &EntryPayload) -> u64 {
    match payload {
        EntryPayload::Empty => 0,
        EntryPayload::Command(bytes) => fingerprint(bytes),
        EntryPayload::Membership(membership) => {
            let mut words = Vec::new();
            for voter in &membership.voters {
                words.extend_from_slice(&voter.get().to_le_bytes());
            }
            words.push(0xff);
            for learner in &membership.learners {
                words.extend_from_slice(&learner.get().to_le_bytes());
            }
            fingerprint(&words) ^ 1
        }
    }
}
