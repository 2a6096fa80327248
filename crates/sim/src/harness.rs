//! A test harness in the manner of the MIT 6.5840 Raft lab's `config.go`, over
//! the simulated cluster: connect and disconnect nodes, crash and restart them,
//! check that exactly one leader exists, and agree on commands.
//!
//! Times are virtual; bounds follow the lab's (5 s to elect, 10 s to agree, 2 s
//! per try) because our election timeouts are of the same order as theirs.

use crate::cluster::{Cluster, ClusterConfig};
use crate::kv::{KvCommand, WriteKind};
use crate::network::NetworkFaults;
use crate::node::{payload_fingerprint, Completion};
use understudy_raft::EntryPayload;
use understudy_types::{LogIndex, NodeId, Term};

/// One millisecond of virtual time.
pub const MILLIS: u64 = 1_000;
/// One second of virtual time.
pub const SECONDS: u64 = 1_000_000;

/// A cluster under test, with lab-style helpers.
pub struct Harness {
    /// The cluster.
    pub cluster: Cluster,
    operation: u64,
}

impl Harness {
    /// A cluster of `nodes` voters on a reliable network, without snapshots.
    pub fn new(nodes: usize, seed: u64) -> Harness {
        Harness::with_config(ClusterConfig::reliable(seed, nodes))
    }

    /// A cluster built from `config`.
    pub fn with_config(config: ClusterConfig) -> Harness {
        Harness {
            cluster: Cluster::new(config),
            operation: 0,
        }
    }

    /// Makes the network unreliable (loss, delay, duplication, reordering) or not.
    pub fn set_unreliable(&mut self, unreliable: bool) {
        self.cluster.network.faults = if unreliable {
            NetworkFaults::unreliable()
        } else {
            NetworkFaults::reliable()
        };
    }

    /// Advances virtual time.
    pub fn run_for(&mut self, micros: u64) {
        self.cluster.run_for(micros);
    }

    /// Every node id.
    pub fn ids(&self) -> Vec<NodeId> {
        self.cluster.node_ids()
    }

    /// Cuts a node off the network.
    pub fn disconnect(&mut self, id: NodeId) {
        self.cluster.network.isolate(id);
    }

    /// Reconnects a node.
    pub fn connect(&mut self, id: NodeId) {
        self.cluster.network.reconnect(id);
    }

    /// Crashes a node (its disk loses unsynced writes as configured).
    pub fn crash(&mut self, id: NodeId) {
        self.cluster.crash(id);
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        self.cluster.restart(id);
    }

    /// Whether a node runs and is connected.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.cluster.raft(id).is_some() && !self.cluster.network.is_isolated(id)
    }

    /// Panics if any invariant was violated so far.
    pub fn assert_safe(&self) {
        let violations = self.cluster.checker.violations();
        assert!(
            violations.is_empty(),
            "invariant violations: {violations:#?}"
        );
    }

    /// Waits (up to 10 polls of about 500 ms) for exactly one leader among the
    /// running, connected nodes, and returns it. Panics if some term has two
    /// leaders or no leader appears.
    pub fn check_one_leader(&mut self) -> NodeId {
        for _ in 0..10 {
            self.run_for(500 * MILLIS);
            let mut by_term: std::collections::BTreeMap<Term, Vec<NodeId>> = Default::default();
            for (id, term) in self.cluster.leaders() {
                if self.is_up(id) {
                    by_term.entry(term).or_default().push(id);
                }
            }
            for (term, leaders) in &by_term {
                assert!(leaders.len() <= 1, "{term} has leaders {leaders:?}");
            }
            if let Some((_, leaders)) = by_term.iter().next_back() {
                self.assert_safe();
                return leaders[0];
            }
        }
        panic!("no leader elected within 5 s");
    }

    /// Asserts that no running, connected node is leader.
    pub fn check_no_leader(&self) {
        for (id, term) in self.cluster.leaders() {
            assert!(
                !self.is_up(id),
                "{id} leads {term} but no quorum should exist"
            );
        }
    }

    /// Every running, connected node's term; panics unless they agree.
    pub fn check_terms(&self) -> Term {
        let mut agreed = None;
        for id in self.ids() {
            if !self.is_up(id) {
                continue;
            }
            let term = self.cluster.raft(id).expect("up").status().term;
            match agreed {
                None => agreed = Some(term),
                Some(existing) => assert_eq!(existing, term, "nodes disagree on the term"),
            }
        }
        agreed.expect("some node is up")
    }

    /// The command that `value` stands for: an append of `value` to key 0.
    pub fn command(&mut self, value: u64) -> KvCommand {
        self.operation += 1;
        KvCommand {
            client: 0,
            operation: self.operation,
            key: 0,
            kind: WriteKind::Append,
            value: format!("{value};"),
        }
    }

    /// The operation number the next command will carry.
    pub fn peek_next_operation(&self) -> u64 {
        self.operation + 1
    }

    /// Proposes `value` at `id`; returns (index, term) if `id` leads.
    pub fn start(&mut self, id: NodeId, value: u64) -> Option<(LogIndex, Term, u64)> {
        let command = self.command(value);
        let fingerprint = payload_fingerprint(&EntryPayload::Command(command.encode()));
        let operation = self.operation;
        self.cluster
            .propose_write(id, operation, &command)
            .ok()
            .and_then(|()| self.cluster.raft(id))
            .map(|raft| {
                let status = raft.status();
                (status.last_index, status.term, fingerprint)
            })
    }

    /// How many nodes have applied `index`, and the fingerprint committed there.
    pub fn n_committed(&self, index: LogIndex) -> (usize, Option<u64>) {
        let count = self
            .ids()
            .into_iter()
            .filter_map(|id| self.cluster.node(id))
            .filter(|node| node.applied_high_water >= index)
            .count();
        let fingerprint = self
            .cluster
            .checker
            .committed_at(index)
            .map(|(_, fingerprint)| fingerprint);
        (count, fingerprint)
    }

    /// The lab's `one()`: submits `value` at whichever node leads until it is
    /// committed on at least `expected` nodes; returns its index. With `retry`
    /// false, a single leader's failure to commit within 2 s fails the test.
    pub fn one(&mut self, value: u64, expected: usize, retry: bool) -> LogIndex {
        let started = self.cluster.now_micros;
        let mut next = 0;
        while self.cluster.now_micros < started + 10 * SECONDS {
            let ids = self.ids();
            let mut submitted = None;
            for _ in 0..ids.len() {
                let id = ids[next % ids.len()];
                next += 1;
                if !self.is_up(id) {
                    continue;
                }
                if let Some(proposal) = self.start(id, value) {
                    submitted = Some(proposal);
                    break;
                }
            }
            match submitted {
                Some((index, _, fingerprint)) => {
                    let deadline = self.cluster.now_micros + 2 * SECONDS;
                    while self.cluster.now_micros < deadline {
                        self.run_for(20 * MILLIS);
                        let (count, committed) = self.n_committed(index);
                        if count >= expected && committed == Some(fingerprint) {
                            self.assert_safe();
                            return index;
                        }
                    }
                    assert!(retry, "one({value}) failed to reach agreement at {index}");
                }
                None => self.run_for(50 * MILLIS),
            }
        }
        panic!("one({value}) failed to reach agreement within 10 s");
    }

    /// Waits until at least `expected` nodes applied `index`, or until a node's
    /// term passes `start_term` (the lab's `wait`). Returns the fingerprint.
    pub fn wait(
        &mut self,
        index: LogIndex,
        expected: usize,
        start_term: Option<Term>,
    ) -> Option<u64> {
        let mut pause = 10 * MILLIS;
        for _ in 0..30 {
            let (count, fingerprint) = self.n_committed(index);
            if count >= expected {
                return fingerprint;
            }
            self.run_for(pause);
            pause = (pause * 2).min(SECONDS);
            if let Some(term) = start_term {
                let moved_on = self
                    .ids()
                    .into_iter()
                    .filter_map(|id| self.cluster.raft(id))
                    .any(|raft| raft.status().term > term);
                if moved_on {
                    return None;
                }
            }
        }
        let (count, _) = self.n_committed(index);
        panic!("only {count} nodes applied {index}, {expected} expected");
    }

    /// Writes confirmed committed to a client since the last call.
    pub fn take_committed_operations(&mut self) -> Vec<u64> {
        self.cluster
            .take_completions()
            .into_iter()
            .filter_map(|(_, completion)| match completion {
                Completion::WriteCommitted(operation) => Some(operation),
                _ => None,
            })
            .collect()
    }

    /// The value of key 0 on a running node.
    pub fn value_at(&self, id: NodeId) -> Option<String> {
        self.cluster
            .node(id)
            .and_then(|node| node.kv())
            .map(|kv| kv.get(0).unwrap_or_default().to_owned())
    }
}
