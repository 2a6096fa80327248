//! Committed entries per second through an in-memory three-node cluster: no
//! fsync (persistence completes at once), messages passed in memory, proposals
//! of 128-byte commands in batches. Measures the core's own cost: log
//! bookkeeping, batching, pipelining, commit counting and command emission.
//!
//! Run with `cargo bench -p understudy-raft --bench throughput`.

// `criterion_group!` generates a public function without documentation.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::collections::VecDeque;
use std::time::Duration;
use understudy_raft::{Command, Config, Message, RaftNode, RestoredState, Role};
use understudy_types::{GroupId, NodeId};

const NODES: u64 = 3;
const COMMAND_BYTES: usize = 128;

/// Three nodes and a FIFO network; persistence completes immediately.
struct Cluster {
    nodes: Vec<RaftNode>,
    network: VecDeque<Message>,
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
        let nodes = voters
            .iter()
            .map(|id| {
                let config = Config::new(*id, GroupId(0), id.0);
                let restored = RestoredState::bootstrap(voters.iter().copied());
                RaftNode::new(config, restored).expect("valid bootstrap state")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            network: VecDeque::new(),
            applied: vec![0; NODES as usize],
        };
        while cluster.nodes[0].status().role != Role::Leader {
            cluster.nodes[0].tick();
            cluster.pump();
        }
        cluster
    }

    /// Executes one node's commands; returns whether there were any.
    fn drain(&mut self, position: usize) -> bool {
        let commands = self.nodes[position].take_commands();
        let busy = !commands.is_empty();
        let mut durable = None;
        for command in commands {
            match command {
                Command::Persist { id, .. } | Command::InstallSnapshot { id, .. } => {
                    durable = Some(id)
                }
                Command::Send(message) => self.network.push_back(message),
                Command::Apply(entries) => self.applied[position] += entries.len() as u64,
                Command::ReadReady { .. } | Command::ReadFailed { .. } => {}
            }
        }
        if let Some(id) = durable {
            self.nodes[position].handle_persisted(id);
        }
        busy
    }

    /// Runs the cluster until no node has anything more to do.
    fn pump(&mut self) {
        loop {
            let mut busy = false;
            for position in 0..self.nodes.len() {
                busy |= self.drain(position);
            }
            while let Some(message) = self.network.pop_front() {
                // Node ids are 1..=NODES, stored at id - 1.
                let position = (message.to.0 - 1) as usize;
                self.nodes[position].step(message);
                self.drain(position);
                busy = true;
            }
            if !busy {
                return;
            }
        }
    }

    /// Proposes `batch` commands on the leader and runs until all are applied on
    /// every node; then compacts, as an application would, to bound memory.
    fn commit_batch(&mut self, batch: usize, command: &Bytes) {
        let target = self.applied[0] + batch as u64;
        for _ in 0..batch {
            self.nodes[0]
                .propose(command.clone())
                .expect("the leader accepts");
        }
        self.pump();
        assert!(
            self.applied.iter().all(|applied| *applied >= target),
            "batch applied"
        );
        for node in &mut self.nodes {
            let applied = node.status().applied_index;
            node.compact(applied, Bytes::new());
        }
    }
}

fn throughput(criterion: &mut Criterion) {
    let command = Bytes::from(vec![0x5a; COMMAND_BYTES]);
    let mut group = criterion.benchmark_group("three_node_commit");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for batch in [1usize, 64, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("batch", batch),
            &batch,
            |bencher, &batch| {
                let mut cluster = Cluster::new();
                bencher.iter(|| cluster.commit_batch(batch, &command));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
