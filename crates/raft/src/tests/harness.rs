//! An in-memory multi-node harness: messages go through a queue the test can
//! reorder, drop or duplicate; persistence completes immediately or on demand;
//! nodes crash (losing everything not yet durable) and restart from their
//! durable storage. Every step checks election safety (one leader per term) and
//! state machine safety (every node applies the same entry at each index).

use crate::{
    Command, Config, Entry, EntryPayload, HardState, Message, RaftNode, RestoredState, Role,
    SnapshotMeta,
};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use understudy_types::{GroupId, LogIndex, NodeId, Term};

/// The group every harness node belongs to.
pub(crate) const GROUP: GroupId = GroupId(7);

/// What a node has made durable.
#[derive(Clone, Debug, Default)]
pub(crate) struct Storage {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: (SnapshotMeta, Bytes),
    pub(crate) entries: Vec<Entry>,
}

impl Storage {
    fn bootstrap(voters: &[NodeId]) -> Self {
        let restored = RestoredState::bootstrap(voters.iter().copied());
        Storage {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot,
            entries: restored.entries,
        }
    }

    fn persist(&mut self, hard_state: Option<HardState>, entries: &[Entry]) {
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state;
        }
        if let Some(first) = entries.first() {
            self.entries.retain(|entry| entry.index < first.index);
            self.entries.extend_from_slice(entries);
        }
        // The harness applies a write when it becomes durable, which may be after
        // the application stored a newer snapshot; a real shell wrote these
        // entries before that snapshot, which then superseded them.
        let snapshot_index = self.snapshot.0.last_index;
        self.entries.retain(|entry| entry.index > snapshot_index);
    }

    fn install(&mut self, meta: SnapshotMeta, data: Bytes, keep_entries_after: bool) {
        if keep_entries_after {
            self.entries.retain(|entry| entry.index > meta.last_index);
        } else {
            self.entries.clear();
        }
        self.snapshot = (meta, data);
    }

    fn restored(&self) -> RestoredState {
        RestoredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.entries.clone(),
        }
    }
}

/// A toy state machine: the applied index and a digest of the applied commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StateMachine {
    pub(crate) applied: LogIndex,
    pub(crate) digest: u64,
}

impl StateMachine {
    fn apply(&mut self, entry: &Entry) {
        assert_eq!(
            entry.index,
            self.applied.next(),
            "Apply must be consecutive"
        );
        self.applied = entry.index;
        let mut digest = self.digest ^ entry.index.0;
        if let EntryPayload::Command(bytes) = &entry.payload {
            for byte in bytes.iter() {
                digest = (digest ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3);
            }
        }
        self.digest = digest.rotate_left(7);
    }

    pub(crate) fn encode(&self) -> Bytes {
        let mut data = Vec::with_capacity(16);
        data.extend_from_slice(&self.applied.0.to_le_bytes());
        data.extend_from_slice(&self.digest.to_le_bytes());
        Bytes::from(data)
    }

    fn decode(data: &[u8]) -> Self {
        if data.is_empty() {
            return StateMachine::default();
        }
        assert_eq!(data.len(), 16, "harness snapshots are 16 bytes");
        let (applied, digest) = data.split_at(8);
        StateMachine {
            applied: LogIndex(u64::from_le_bytes(applied.try_into().expect("8 bytes"))),
            digest: u64::from_le_bytes(digest.try_into().expect("8 bytes")),
        }
    }
}

/// A cluster of nodes with a message queue.
pub(crate) struct Cluster {
    pub(crate) configs: BTreeMap<NodeId, Config>,
    pub(crate) nodes: BTreeMap<NodeId, RaftNode>,
    pub(crate) storage: BTreeMap<NodeId, Storage>,
    /// Persistence commands emitted but not yet durable, per node.
    pub(crate) unpersisted: BTreeMap<NodeId, VecDeque<Command>>,
    pub(crate) state_machines: BTreeMap<NodeId, StateMachine>,
    /// Complete every persistence command as soon as it is emitted.
    pub(crate) auto_persist: bool,
    pub(crate) network: VecDeque<Message>,
    /// Directed links that drop everything.
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    /// Every entry applied anywhere, by index: all nodes must agree.
    pub(crate) applied_entries: BTreeMap<LogIndex, Entry>,
    /// The state machine digest after each index, as first observed.
    pub(crate) digests: BTreeMap<LogIndex, u64>,
    /// The leader of each term ever observed.
    pub(crate) leaders: BTreeMap<Term, NodeId>,
    /// ReadReady / ReadFailed commands, with the node that emitted them.
    pub(crate) reads: Vec<(NodeId, Command)>,
    /// Every message sent, for tests that look at traffic.
    pub(crate) sent: Vec<Message>,
    /// How many snapshots followers installed (to check coverage).
    pub(crate) snapshots_installed: usize,
}

/// A configuration for harness node `id`.
pub(crate) fn config(id: u64) -> Config {
    let mut config = Config::new(NodeId(id), GROUP, 1000 + id);
    config.election_timeout_ticks = 10;
    config.heartbeat_interval_ticks = 2;
    config
}

/// Node ids 1..=count.
pub(crate) fn ids(count: u64) -> Vec<NodeId> {
    (1..=count).map(NodeId).collect()
}

impl Cluster {
    /// A bootstrapped cluster of `count` voters with the default harness config.
    pub(crate) fn new(count: u64) -> Self {
        Cluster::with_configs((1..=count).map(config).collect())
    }

    /// A bootstrapped cluster whose voters are the given configurations' nodes.
    pub(crate) fn with_configs(configs: Vec<Config>) -> Self {
        let voters: Vec<NodeId> = configs.iter().map(|config| config.id).collect();
        let mut cluster = Cluster {
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            storage: BTreeMap::new(),
            unpersisted: BTreeMap::new(),
            state_machines: BTreeMap::new(),
            auto_persist: true,
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            applied_entries: BTreeMap::new(),
            digests: BTreeMap::new(),
            leaders: BTreeMap::new(),
            reads: Vec::new(),
            sent: Vec::new(),
            snapshots_installed: 0,
        };
        for config in configs {
            let id = config.id;
            cluster.storage.insert(id, Storage::bootstrap(&voters));
            cluster.configs.insert(id, config);
            cluster.restart(id);
        }
        cluster
    }

    /// Adds a node with an empty membership (to be added as a learner).
    pub(crate) fn add_blank_node(&mut self, config: Config) {
        let id = config.id;
        self.storage.insert(id, Storage::bootstrap(&[]));
        self.configs.insert(id, config);
        self.restart(id);
    }

    /// The node `id` (which must be running).
    pub(crate) fn node(&self, id: NodeId) -> &RaftNode {
        self.nodes.get(&id).expect("node is running")
    }

    /// The node `id`, mutably.
    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).expect("node is running")
    }

    /// Crashes `id`: everything not yet durable is lost.
    pub(crate) fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.unpersisted.remove(&id);
        self.state_machines.remove(&id);
    }

    /// Starts (or restarts) `id` from its durable storage.
    pub(crate) fn restart(&mut self, id: NodeId) {
        let storage = &self.storage[&id];
        let node = RaftNode::new(self.configs[&id].clone(), storage.restored())
            .expect("durable state is consistent");
        let machine = StateMachine::decode(&storage.snapshot.1);
        self.state_machines.insert(id, machine);
        self.nodes.insert(id, node);
        self.unpersisted.insert(id, VecDeque::new());
        self.process(id);
    }

    /// Whether `id` is running.
    pub(crate) fn is_up(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Cuts both directions between `a` and every other node (or heals them).
    pub(crate) fn isolate(&mut self, a: NodeId) {
        for b in self.configs.keys().copied().collect::<Vec<_>>() {
            if a != b {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Heals every cut link.
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Drains and executes the commands of `id` (and, with auto-persist, the
    /// commands its persistence completions produce).
    pub(crate) fn process(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            let commands = node.take_commands();
            if commands.is_empty() {
                break;
            }
            for command in commands {
                self.execute(id, command);
            }
            if self.auto_persist {
                self.complete_persistence(id);
            }
        }
        self.check_election_safety(id);
    }

    fn execute(&mut self, id: NodeId, command: Command) {
        match command {
            Command::Persist { .. } => self.queue_persistence(id, command),
            Command::InstallSnapshot { ref data, .. } => {
                self.snapshots_installed += 1;
                let machine = StateMachine::decode(data);
                self.check_digest(machine.applied, machine.digest);
                self.state_machines.insert(id, machine);
                self.queue_persistence(id, command);
            }
            Command::Send(message) => {
                self.sent.push(message.clone());
                self.network.push_back(message);
            }
            Command::Apply(entries) => {
                for entry in entries {
                    self.apply(id, entry);
                }
            }
            Command::ReadReady { .. } | Command::ReadFailed { .. } => {
                self.reads.push((id, command))
            }
        }
    }

    fn queue_persistence(&mut self, id: NodeId, command: Command) {
        self.unpersisted.entry(id).or_default().push_back(command);
    }

    fn apply(&mut self, id: NodeId, entry: Entry) {
        let known = self
            .applied_entries
            .entry(entry.index)
            .or_insert_with(|| entry.clone());
        assert_eq!(
            *known, entry,
            "state machine safety: {id} applied a different entry"
        );
        let machine = self.state_machines.get_mut(&id).expect("running node");
        machine.apply(&entry);
        let (applied, digest) = (machine.applied, machine.digest);
        self.check_digest(applied, digest);
    }

    fn check_digest(&mut self, index: LogIndex, digest: u64) {
        if index == LogIndex(0) {
            return;
        }
        let known = *self.digests.entry(index).or_insert(digest);
        assert_eq!(known, digest, "state machines diverged at {index}");
    }

    /// Makes every queued persistence command of `id` durable and reports it.
    pub(crate) fn complete_persistence(&mut self, id: NodeId) {
        let queued: Vec<Command> = self.unpersisted.entry(id).or_default().drain(..).collect();
        let Some(last_id) = queued.iter().rev().find_map(|command| match command {
            Command::Persist { id, .. } | Command::InstallSnapshot { id, .. } => Some(*id),
            _ => None,
        }) else {
            return;
        };
        let storage = self.storage.get_mut(&id).expect("storage exists");
        for command in queued {
            match command {
                Command::Persist {
                    hard_state,
                    entries,
                    ..
                } => storage.persist(hard_state, &entries),
                Command::InstallSnapshot {
                    meta,
                    data,
                    keep_entries_after,
                    ..
                } => storage.install(meta, data, keep_entries_after),
                _ => unreachable!("only persistence commands are queued"),
            }
        }
        self.node_mut(id).handle_persisted(last_id);
    }

    fn check_election_safety(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let status = node.status();
        if status.role == Role::Leader {
            let known = *self.leaders.entry(status.term).or_insert(id);
            assert_eq!(known, id, "election safety: two leaders in {}", status.term);
        }
    }

    /// Delivers the message at `position` in the queue (or drops it if its
    /// link is cut or its receiver is down).
    pub(crate) fn deliver_at(&mut self, position: usize) {
        let Some(message) = self.network.remove(position) else {
            return;
        };
        if self.cut.contains(&(message.from, message.to)) || !self.is_up(message.to) {
            return;
        }
        let to = message.to;
        self.node_mut(to).step(message);
        self.process(to);
    }

    /// Delivers messages in order until the queue is empty (or `steps_max`).
    pub(crate) fn deliver_all(&mut self) {
        let mut steps = 0;
        while !self.network.is_empty() {
            self.deliver_at(0);
            steps += 1;
            assert!(steps < 1_000_000, "message storm");
        }
    }

    /// Delivers messages in order until the queue is empty, dropping those
    /// `drop` selects.
    pub(crate) fn deliver_all_except(&mut self, drop: impl Fn(&Message) -> bool) {
        let mut steps = 0;
        while let Some(message) = self.network.front() {
            if drop(message) {
                self.network.pop_front();
            } else {
                self.deliver_at(0);
            }
            steps += 1;
            assert!(steps < 1_000_000, "message storm");
        }
    }

    /// Ticks only `id` (delivering messages, minus those `drop` selects) until
    /// it leads; at most `ticks_max` ticks.
    pub(crate) fn campaign_until_leader(
        &mut self,
        id: NodeId,
        ticks_max: u32,
        drop: impl Fn(&Message) -> bool,
    ) {
        for _ in 0..ticks_max {
            self.node_mut(id).tick();
            self.process(id);
            self.deliver_all_except(&drop);
            if self.node(id).status().role == Role::Leader {
                return;
            }
        }
        panic!("{id} did not become leader within {ticks_max} ticks");
    }

    /// Ticks every running node once.
    pub(crate) fn tick_all(&mut self) {
        for id in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.node_mut(id).tick();
            self.process(id);
        }
    }

    /// Ticks and delivers for `ticks` rounds.
    pub(crate) fn run(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.tick_all();
            self.deliver_all();
        }
    }

    /// Ticks only `id` until it starts campaigning, then delivers everything:
    /// a deterministic way to make `id` the leader.
    pub(crate) fn elect(&mut self, id: NodeId) {
        for _ in 0..100 {
            if self.node(id).status().role != Role::Follower {
                break;
            }
            self.node_mut(id).tick();
            self.process(id);
        }
        self.deliver_all();
        assert_eq!(
            self.node(id).status().role,
            Role::Leader,
            "{id} should lead"
        );
    }

    /// The current leader with the highest term, if any running node leads.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .map(RaftNode::status)
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id)
    }

    /// Proposes `command` on `id` and delivers everything.
    pub(crate) fn propose(&mut self, id: NodeId, command: &'static [u8]) -> (LogIndex, Term) {
        let appended = self
            .node_mut(id)
            .propose(Bytes::from_static(command))
            .expect("proposal accepted");
        self.process(id);
        self.deliver_all();
        appended
    }

    /// The application at `id` snapshots its state and compacts the log. Like an
    /// in-order log store, storing the snapshot makes every earlier write durable
    /// first: otherwise a crash could keep the snapshot but lose a truncation
    /// that came before it, leaving stale entries after the snapshot.
    pub(crate) fn compact(&mut self, id: NodeId) {
        self.complete_persistence(id);
        self.process(id);
        let machine = self.state_machines[&id];
        let data = machine.encode();
        self.node_mut(id).compact(machine.applied, data.clone());
        let meta = self.node(id).snapshot_meta().clone();
        let storage = self.storage.get_mut(&id).expect("storage exists");
        storage
            .entries
            .retain(|entry| entry.index > meta.last_index);
        storage.snapshot = (meta, data);
    }

    /// The index the state machine of `id` has applied.
    pub(crate) fn applied_index(&self, id: NodeId) -> LogIndex {
        self.state_machines[&id].applied
    }
}
