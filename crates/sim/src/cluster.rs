//! The simulated cluster: nodes, network, disks and a virtual clock, driven by one
//! seeded event queue.
//!
//! Everything that happens is an event with a time and a sequence number; the
//! queue pops them in (time, sequence) order, so a run is a pure function of its
//! seed and inputs. Node clocks are skewed by giving each node its own tick
//! interval. Events the cluster does not handle itself (client wake-ups, nemesis
//! actions) are handed back to the caller by [`Cluster::step`].

use crate::invariants::Checker;
use crate::kv::KvCommand;
use crate::network::{Network, NetworkFaults};
use crate::node::{Completion, NodeEffects, OperationKey, ShellBugs, SimNode};
use crate::trace::TraceHasher;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use understudy_raft::{Config, DeliberateBugs, Message, MessageBody, RaftNode, Role};
use understudy_types::{GroupId, NodeId, Term};
use understudy_wal::CrashFaults;

/// Shortest time from a crash to a peer's hint that the process is gone (the
/// EOF on its connection, then a refused connection attempt).
const UNREACHABLE_HINT_DELAY_MIN_MICROS: u64 = 200;
/// Longest such time.
const UNREACHABLE_HINT_DELAY_MAX_MICROS: u64 = 5_000;

/// How a simulated cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Voters the group starts with (node ids 1..=n).
    pub initial_voters: usize,
    /// The nominal tick interval; each node's real interval is skewed around it.
    pub tick_micros: u64,
    /// Raft's minimum election timeout, in ticks.
    pub election_timeout_ticks: u32,
    /// Raft's heartbeat interval, in ticks.
    pub heartbeat_interval_ticks: u32,
    /// Entries per AppendEntries message, at most. Small batches make a new
    /// leader send old entries apart from the entry of its own term.
    pub append_entries_max: usize,
    /// Snapshot bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// The network's initial fault settings.
    pub network: NetworkFaults,
    /// A node snapshots its state after applying this many entries.
    pub snapshot_threshold_entries: u64,
    /// Shortest simulated fdatasync.
    pub sync_delay_min_micros: u64,
    /// Longest simulated fdatasync.
    pub sync_delay_max_micros: u64,
    /// What a crash does to unsynced sectors.
    pub crash_faults: CrashFaults,
    /// When a node crashes, the chance that each running node the network
    /// connects it with gets the shell's hint that it is gone
    /// (`RaftNode::report_unreachable`), as the node shell gives it when the
    /// kernel closes a dead process's sockets. Zero draws no random numbers.
    pub unreachable_hint_probability: f64,
    /// Deliberate bugs in the Raft core (test-only).
    pub raft_bugs: DeliberateBugs,
    /// Deliberate bugs in storage (test-only).
    pub shell_bugs: ShellBugs,
}

impl ClusterConfig {
    /// A reliable cluster of `voters` nodes: 10 ms ticks, heartbeats every 50 ms
    /// (20 a second, within the lab's budget of idle messages), 150–300 ms election
    /// timeouts, no faults, no snapshots.
    pub fn reliable(seed: u64, voters: usize) -> ClusterConfig {
        ClusterConfig {
            seed,
            initial_voters: voters,
            tick_micros: 10_000,
            election_timeout_ticks: 15,
            heartbeat_interval_ticks: 5,
            append_entries_max: understudy_types::limits::RAFT_APPEND_ENTRIES_MAX,
            snapshot_chunk_bytes_max: understudy_types::limits::RAFT_SNAPSHOT_CHUNK_BYTES_MAX,
            network: NetworkFaults::reliable(),
            snapshot_threshold_entries: u64::MAX,
            sync_delay_min_micros: 100,
            sync_delay_max_micros: 1_000,
            crash_faults: CrashFaults::default(),
            unreachable_hint_probability: 0.0,
            raft_bugs: DeliberateBugs::default(),
            shell_bugs: ShellBugs::default(),
        }
    }
}

/// Counters of what happened in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Node crashes.
    pub crashes: u64,
    /// Crashes after which the disk lost or damaged unsynced sectors.
    pub crashes_losing_unsynced_writes: u64,
    /// Snapshots installed on followers from a leader.
    pub snapshots_installed: u64,
    /// Snapshots taken to compact logs.
    pub snapshots_taken: u64,
    /// Membership changes committed.
    pub reconfigurations: u64,
    /// Events processed.
    pub events: u64,
    /// Hints that a crashed peer is gone delivered to running nodes.
    pub unreachable_hints: u64,
    /// Of those, hints that made the node stop following its leader (it then
    /// campaigns early).
    pub unreachable_hints_followed: u64,
}

/// An event the cluster hands back to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum External {
    /// A client's timer fired: the client's index and the timer's generation.
    Client(usize, u64),
    /// The nemesis' timer fired.
    Nemesis,
    /// A timer of the driver's own, with its tag.
    Timer(u64),
}

#[derive(Debug)]
enum Event {
    Tick {
        node: NodeId,
        incarnation: u64,
    },
    Deliver {
        message: Message,
    },
    Sync {
        node: NodeId,
        incarnation: u64,
    },
    /// `node` (in `incarnation`) learns that `peer`'s process is gone.
    UnreachableHint {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
    },
    External(External),
}

struct Scheduled {
    time_micros: u64,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: `BinaryHeap` is a max-heap and the earliest event must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time_micros, other.sequence).cmp(&(self.time_micros, self.sequence))
    }
}

/// What `step` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is scheduled.
    Idle,
    /// An internal event was handled.
    Handled,
    /// An event for the driver.
    External(External),
}

/// A simulated cluster.
pub struct Cluster {
    /// How the cluster was built.
    pub config: ClusterConfig,
    /// Virtual time.
    pub now_micros: u64,
    queue: BinaryHeap<Scheduled>,
    sequence: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    bootstrap_voters: BTreeMap<NodeId, Vec<NodeId>>,
    tick_interval_micros: BTreeMap<NodeId, u64>,
    syncs_scheduled: BTreeSet<NodeId>,
    /// Reachability and message faults.
    pub network: Network,
    random: ChaCha8Rng,
    /// The invariant checker.
    pub checker: Checker,
    /// The trace hash.
    pub trace: TraceHasher,
    /// Counters.
    pub stats: ClusterStats,
    completions: Vec<(NodeId, Completion)>,
    messages_by_kind: BTreeMap<&'static str, u64>,
}

impl Cluster {
    /// Builds and starts a cluster of `config.initial_voters` nodes.
    pub fn new(config: ClusterConfig) -> Cluster {
        let random = ChaCha8Rng::seed_from_u64(config.seed);
        let mut cluster = Cluster {
            network: Network::new(config.network.clone()),
            config,
            now_micros: 0,
            queue: BinaryHeap::new(),
            sequence: 0,
            nodes: BTreeMap::new(),
            bootstrap_voters: BTreeMap::new(),
            tick_interval_micros: BTreeMap::new(),
            syncs_scheduled: BTreeSet::new(),
            random,
            checker: Checker::default(),
            trace: TraceHasher::default(),
            stats: ClusterStats::default(),
            completions: Vec::new(),
            messages_by_kind: BTreeMap::new(),
        };
        let voters: Vec<NodeId> = (1..=cluster.config.initial_voters as u64)
            .map(NodeId)
            .collect();
        for id in &voters {
            cluster.add_node(*id, voters.clone());
        }
        cluster
    }

    /// Creates and starts a node. An empty `bootstrap_voters` makes a node that
    /// waits to be added to the running group.
    pub fn add_node(&mut self, id: NodeId, bootstrap_voters: Vec<NodeId>) {
        assert!(!self.nodes.contains_key(&id), "{id} exists already");
        let node = SimNode::new(
            id,
            self.config.snapshot_threshold_entries,
            self.config.shell_bugs,
        );
        self.nodes.insert(id, node);
        self.bootstrap_voters.insert(id, bootstrap_voters);
        self.tick_interval_micros
            .insert(id, self.config.tick_micros);
        self.start_node(id);
    }

    /// The random source of the run, for drivers that need one.
    pub fn random(&mut self) -> &mut ChaCha8Rng {
        &mut self.random
    }

    /// Every node id, running or not.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// A node, if it exists.
    pub fn node(&self, id: NodeId) -> Option<&SimNode> {
        self.nodes.get(&id)
    }

    /// The Raft core of a running node.
    pub fn raft(&self, id: NodeId) -> Option<&RaftNode> {
        self.nodes.get(&id).and_then(SimNode::raft)
    }

    /// Running nodes that believe they lead, with their terms.
    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.nodes
            .values()
            .filter_map(|node| node.raft().map(|raft| (node.id, raft.status())))
            .filter(|(_, status)| status.role == Role::Leader)
            .map(|(id, status)| (id, status.term))
            .collect()
    }

    /// The running node that leads the highest term. A deposed leader in a
    /// minority may still believe it leads an older term; it loses to the newer.
    pub fn leader(&self) -> Option<NodeId> {
        self.leaders()
            .into_iter()
            .max_by_key(|(_, term)| *term)
            .map(|(id, _)| id)
    }

    /// Messages sent so far, by kind.
    pub fn messages_by_kind(&self) -> &BTreeMap<&'static str, u64> {
        &self.messages_by_kind
    }

    /// Sets a node's clock rate: its ticks come every `tick_micros * skew`.
    pub fn set_clock_skew(&mut self, id: NodeId, skew: f64) {
        assert!(
            (0.1..=10.0).contains(&skew),
            "clock skew {skew} is implausible"
        );
        let interval = (self.config.tick_micros as f64 * skew).round() as u64;
        self.tick_interval_micros.insert(id, interval.max(1));
    }

    /// Schedules an event for the driver after `delay_micros`.
    pub fn schedule(&mut self, delay_micros: u64, external: External) {
        self.push(delay_micros, Event::External(external));
    }

    fn push(&mut self, delay_micros: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Scheduled {
            time_micros: self.now_micros + delay_micros,
            sequence: self.sequence,
            event,
        });
    }

    /// Takes the client completions produced so far.
    pub fn take_completions(&mut self) -> Vec<(NodeId, Completion)> {
        std::mem::take(&mut self.completions)
    }

    /// Processes the next event.
    pub fn step(&mut self) -> Step {
        let Some(scheduled) = self.queue.pop() else {
            return Step::Idle;
        };
        assert!(
            scheduled.time_micros >= self.now_micros,
            "virtual time never goes backwards"
        );
        self.now_micros = scheduled.time_micros;
        self.stats.events += 1;
        match scheduled.event {
            Event::Tick { node, incarnation } => self.handle_tick(node, incarnation),
            Event::Deliver { message } => self.handle_delivery(message),
            Event::Sync { node, incarnation } => self.handle_sync(node, incarnation),
            Event::UnreachableHint {
                node,
                incarnation,
                peer,
            } => self.handle_unreachable_hint(node, incarnation, peer),
            Event::External(external) => {
                self.trace
                    .event(1, &[self.now_micros, external_tag(external)]);
                return Step::External(external);
            }
        }
        Step::Handled
    }

    /// Runs internal events until virtual time reaches `deadline_micros`;
    /// external events that come due are dropped. For scenario tests.
    pub fn run_until(&mut self, deadline_micros: u64) {
        while self
            .queue
            .peek()
            .is_some_and(|next| next.time_micros <= deadline_micros)
        {
            self.step();
        }
        self.now_micros = self.now_micros.max(deadline_micros);
    }

    /// Runs for `duration_micros` of virtual time.
    pub fn run_for(&mut self, duration_micros: u64) {
        self.run_until(self.now_micros + duration_micros);
    }

    fn handle_tick(&mut self, id: NodeId, incarnation: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation || !node.is_running() {
            return;
        }
        self.trace.event(2, &[self.now_micros, id.get()]);
        let mut effects = NodeEffects::default();
        node.with_raft(&mut effects, RaftNode::tick);
        let interval = self.tick_interval_micros[&id];
        self.push(
            interval,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.absorb(id, effects);
    }

    fn handle_delivery(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        if !self.network.can_reach(from, to) {
            return;
        }
        let Some(node) = self.nodes.get_mut(&to) else {
            return;
        };
        if !node.is_running() {
            return;
        }
        self.trace.event(
            3,
            &[
                self.now_micros,
                from.get(),
                to.get(),
                message.term.get(),
                body_tag(&message.body),
            ],
        );
        let mut effects = NodeEffects::default();
        node.with_raft(&mut effects, |raft| raft.step(message));
        self.absorb(to, effects);
    }

    fn handle_sync(&mut self, id: NodeId, incarnation: u64) {
        self.syncs_scheduled.remove(&id);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation {
            return;
        }
        self.trace.event(4, &[self.now_micros, id.get()]);
        let mut effects = NodeEffects::default();
        node.sync(&mut effects);
        self.absorb(id, effects);
    }

    fn handle_unreachable_hint(&mut self, id: NodeId, incarnation: u64, peer: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.incarnation != incarnation || !node.is_running() {
            return;
        }
        self.trace
            .event(9, &[self.now_micros, id.get(), peer.get()]);
        let mut effects = NodeEffects::default();
        let mut followed = false;
        node.with_raft(&mut effects, |raft| {
            let leader_before = raft.status().leader;
            raft.report_unreachable(peer);
            followed = leader_before == Some(peer) && raft.status().leader.is_none();
        });
        self.stats.unreachable_hints += 1;
        self.stats.unreachable_hints_followed += u64::from(followed);
        self.absorb(id, effects);
    }

    /// After `crashed` crashed: each running node that the network connects
    /// with it in both directions (its connection from `crashed` ends, and its
    /// connection attempt is refused) gets the hint with the configured
    /// probability, after a short delay for the EOF and the refused connect.
    fn schedule_unreachable_hints(&mut self, crashed: NodeId) {
        let probability = self.config.unreachable_hint_probability;
        if probability <= 0.0 {
            return;
        }
        let running: Vec<(NodeId, u64)> = self
            .nodes
            .iter()
            .filter(|(id, node)| **id != crashed && node.is_running())
            .map(|(id, node)| (*id, node.incarnation))
            .collect();
        for (id, incarnation) in running {
            if !self.network.can_reach(crashed, id) || !self.network.can_reach(id, crashed) {
                continue;
            }
            if !self.random.gen_bool(probability.min(1.0)) {
                continue;
            }
            let delay = self
                .random
                .gen_range(UNREACHABLE_HINT_DELAY_MIN_MICROS..=UNREACHABLE_HINT_DELAY_MAX_MICROS);
            self.push(
                delay,
                Event::UnreachableHint {
                    node: id,
                    incarnation,
                    peer: crashed,
                },
            );
        }
    }

    /// Routes a node's effects: messages to the network, observations to the
    /// checker, completions to the driver.
    fn absorb(&mut self, id: NodeId, effects: NodeEffects) {
        let now = self.now_micros;
        for violation in effects.violations {
            self.checker.report(now, format!("{id}: {violation}"));
        }
        for entry in &effects.appended {
            self.checker.observe_appended(now, id, entry);
        }
        let mut newly_committed = Vec::new();
        for &(index, term, fingerprint) in &effects.applied {
            if self
                .checker
                .observe_applied(now, id, index, term, fingerprint)
            {
                newly_committed.push(index);
            }
        }
        self.stats.reconfigurations += effects
            .memberships_applied
            .iter()
            .filter(|(index, _)| newly_committed.contains(index))
            .count() as u64;
        self.stats.snapshots_installed += effects.snapshots_installed;
        self.stats.snapshots_taken += effects.snapshots_taken;
        for message in effects.messages {
            self.send(message);
        }
        self.completions.extend(
            effects
                .completions
                .into_iter()
                .map(|completion| (id, completion)),
        );
        if effects.sync_wanted {
            self.schedule_sync(id);
        }
        self.observe_node(id);
    }

    fn observe_node(&mut self, id: NodeId) {
        let node = &self.nodes[&id];
        if let Some(raft) = node.raft() {
            let status = raft.status();
            self.checker
                .observe_status(self.now_micros, node.incarnation, &status, raft);
        }
    }

    fn send(&mut self, message: Message) {
        let kind = match message.body {
            MessageBody::AppendResponse { success: false, .. } => "append_rejection",
            ref body => body_name(body),
        };
        *self.messages_by_kind.entry(kind).or_default() += 1;
        if let MessageBody::VoteResponse { granted: true } = message.body {
            self.checker
                .observe_vote(self.now_micros, message.from, message.term, message.to);
        }
        let delays = self
            .network
            .route(&mut self.random, message.from, message.to);
        match delays.as_slice() {
            [] => {}
            [delay] => self.push(*delay, Event::Deliver { message }),
            [first, rest @ ..] => {
                for delay in rest {
                    self.push(
                        *delay,
                        Event::Deliver {
                            message: message.clone(),
                        },
                    );
                }
                self.push(*first, Event::Deliver { message });
            }
        }
    }

    fn schedule_sync(&mut self, id: NodeId) {
        if !self.syncs_scheduled.insert(id) {
            return;
        }
        let delay = self
            .random
            .gen_range(self.config.sync_delay_min_micros..=self.config.sync_delay_max_micros);
        let incarnation = self.nodes[&id].incarnation;
        self.push(
            delay,
            Event::Sync {
                node: id,
                incarnation,
            },
        );
    }

    fn raft_config(&mut self, id: NodeId, incarnation: u64) -> Config {
        let seed = self.config.seed
            ^ id.get().wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ incarnation.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let mut config = Config::new(id, GroupId(0), seed);
        config.election_timeout_ticks = self.config.election_timeout_ticks;
        config.heartbeat_interval_ticks = self.config.heartbeat_interval_ticks;
        config.append_entries_max = self.config.append_entries_max;
        config.snapshot_chunk_bytes_max = self.config.snapshot_chunk_bytes_max;
        config.deliberate_bugs = self.config.raft_bugs;
        config
    }

    fn start_node(&mut self, id: NodeId) {
        let incarnation = self.nodes[&id].incarnation + 1;
        let config = self.raft_config(id, incarnation);
        let voters = self.bootstrap_voters[&id].clone();
        let mut effects = NodeEffects::default();
        let node = self.nodes.get_mut(&id).expect("the node exists");
        if let Err(problem) = node.start(config, &voters, &mut effects) {
            self.checker.report(self.now_micros, problem);
            return;
        }
        self.trace
            .event(5, &[self.now_micros, id.get(), incarnation]);
        let phase = self.random.gen_range(0..self.config.tick_micros);
        self.push(
            phase,
            Event::Tick {
                node: id,
                incarnation,
            },
        );
        self.absorb(id, effects);
    }

    /// Crashes a node: it stops at once and its disk loses, tears or corrupts
    /// unsynced sectors as `config.crash_faults` says.
    pub fn crash(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if !node.is_running() {
            return;
        }
        node.crash();
        let report = node.disk.crash(&mut self.random, &self.config.crash_faults);
        self.stats.crashes += 1;
        if report.sectors_lost
            + report.sectors_torn
            + report.bits_flipped
            + report.length_changes_lost
            + report.directory_operations_lost
            > 0
        {
            self.stats.crashes_losing_unsynced_writes += 1;
        }
        self.syncs_scheduled.remove(&id);
        self.trace.event(6, &[self.now_micros, id.get()]);
        self.schedule_unreachable_hints(id);
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if self.nodes.get(&id).is_some_and(|node| !node.is_running()) {
            self.start_node(id);
        }
    }

    /// Removes a node from the simulation for good (after it left the group).
    pub fn decommission(&mut self, id: NodeId) {
        self.crash(id);
        self.nodes.remove(&id);
    }

    /// Runs `input` against a running node's core and routes what it produces.
    /// Returns `None` if the node is down.
    pub fn with_raft<T>(
        &mut self,
        id: NodeId,
        input: impl FnOnce(&mut RaftNode) -> T,
    ) -> Option<T> {
        let node = self.nodes.get_mut(&id)?;
        let mut result = None;
        let mut effects = NodeEffects::default();
        node.with_raft(&mut effects, |raft| result = Some(input(raft)));
        self.absorb(id, effects);
        result
    }

    /// Submits a client write at a node; `Err` carries a leader hint.
    pub fn propose_write(
        &mut self,
        id: NodeId,
        operation: OperationKey,
        command: &KvCommand,
    ) -> Result<(), Option<NodeId>> {
        let node = self.nodes.get_mut(&id).ok_or(None)?;
        let mut effects = NodeEffects::default();
        let result = node.propose_write(operation, command, &mut effects);
        self.trace.event(
            7,
            &[
                self.now_micros,
                id.get(),
                operation,
                u64::from(result.is_ok()),
            ],
        );
        self.absorb(id, effects);
        result
    }

    /// Submits a linearizable read at a node.
    pub fn request_read(&mut self, id: NodeId, operation: OperationKey, key: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            self.completions
                .push((id, Completion::ReadRefused(operation, None)));
            return;
        };
        let mut effects = NodeEffects::default();
        node.request_read(operation, key, &mut effects);
        self.trace.event(8, &[self.now_micros, id.get(), operation]);
        self.absorb(id, effects);
    }
}

fn external_tag(external: External) -> u64 {
    match external {
        External::Client(client, generation) => 1 << 32 | (client as u64) << 40 ^ generation,
        External::Nemesis => 2 << 32,
        External::Timer(tag) => 3 << 32 ^ tag,
    }
}

fn body_tag(body: &MessageBody) -> u64 {
    match body {
        MessageBody::PreVoteRequest { .. } => 1,
        MessageBody::PreVoteResponse { granted } => 2 | u64::from(*granted) << 8,
        MessageBody::VoteRequest { .. } => 3,
        MessageBody::VoteResponse { granted } => 4 | u64::from(*granted) << 8,
        MessageBody::AppendRequest { entries, .. } => 5 | (entries.len() as u64) << 8,
        MessageBody::AppendResponse {
            success,
            match_index,
            ..
        } => 6 | u64::from(*success) << 8 | match_index.get() << 9,
        MessageBody::SnapshotChunk { offset, .. } => 7 | offset << 8,
        MessageBody::SnapshotResponse { next_offset, .. } => 8 | next_offset << 8,
        MessageBody::TimeoutNow => 9,
    }
}

/// A short name for a message kind, for counting.
pub fn body_name(body: &MessageBody) -> &'static str {
    match body {
        MessageBody::PreVoteRequest { .. } => "pre_vote_request",
        MessageBody::PreVoteResponse { .. } => "pre_vote_response",
        MessageBody::VoteRequest { .. } => "vote_request",
        MessageBody::VoteResponse { .. } => "vote_response",
        MessageBody::AppendRequest { .. } => "append_request",
        MessageBody::AppendResponse { .. } => "append_response",
        MessageBody::SnapshotChunk { .. } => "snapshot_chunk",
        MessageBody::SnapshotResponse { .. } => "snapshot_response",
        MessageBody::TimeoutNow => "timeout_now",
    }
}
