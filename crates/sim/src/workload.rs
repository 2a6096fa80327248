//! Simulated clients and the history they record.
//!
//! Each client runs one operation at a time: a linearizable read (ReadIndex), a
//! put or an append, on a small set of keys so that operations contend. A client
//! sends to the node it believes leads and follows leader hints. A write that a
//! node refused was never appended, and a write whose log slot was taken by
//! another entry can never commit, so both are retried as the same operation. A
//! write that times out after it was appended has an *unknown* outcome: the client
//! records it so and moves on; the linearizability checker may place it anywhere
//! after its call, or nowhere.

use crate::cluster::{Cluster, External};
use crate::kv::{KvCommand, WriteKind};
use crate::node::{Completion, OperationKey};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;
use understudy_types::NodeId;

/// How the clients behave.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub clients: usize,
    /// Operations to run in total (completed or given up).
    pub operations: u64,
    /// Keys operations are spread over.
    pub keys: u64,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Fraction of writes that are appends (the rest are puts).
    pub append_fraction: f64,
    /// A client gives up on an operation after this long.
    pub timeout_micros: u64,
    /// Pause before retrying at another node.
    pub retry_backoff_micros: u64,
    /// Longest pause between two operations of a client.
    pub think_time_max_micros: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            clients: 5,
            operations: 2_000,
            keys: 5,
            read_fraction: 0.4,
            append_fraction: 0.5,
            timeout_micros: 2_000_000,
            retry_backoff_micros: 10_000,
            think_time_max_micros: 5_000,
        }
    }
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Read a key.
    Get {
        /// The key.
        key: u64,
    },
    /// Write a key.
    Write(KvCommand),
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The client that ran it.
    pub client: u64,
    /// What it asked for.
    pub request: Request,
    /// When it was first sent.
    pub call_micros: u64,
    /// When and with what it returned; `None` if its outcome is unknown.
    pub response: Option<(u64, Option<String>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Retrying(OperationKey),
    Waiting(OperationKey, u64),
    Finished,
}

#[derive(Clone, Debug)]
struct Client {
    leader_guess: Option<NodeId>,
    phase: Phase,
    /// Only the most recently set timer counts; older ones fire and are ignored.
    timer_generation: u64,
}

/// The clients of one run.
pub struct Workload {
    config: WorkloadConfig,
    clients: Vec<Client>,
    operations: BTreeMap<OperationKey, (usize, HistoryEntry)>,
    issued: u64,
    /// Operations that finished with a known result.
    pub completed: u64,
    /// Operations given up with an unknown outcome.
    pub unknown: u64,
}

impl Workload {
    /// Clients that start one by one over the first milliseconds.
    pub fn new(config: WorkloadConfig, cluster: &mut Cluster) -> Workload {
        let clients = vec![
            Client {
                leader_guess: None,
                phase: Phase::Idle,
                timer_generation: 0,
            };
            config.clients
        ];
        let mut workload = Workload {
            config,
            clients,
            operations: BTreeMap::new(),
            issued: 0,
            completed: 0,
            unknown: 0,
        };
        for client in 0..workload.config.clients {
            let delay = cluster
                .random()
                .gen_range(0..=workload.config.think_time_max_micros);
            workload.set_timer(cluster, client, delay);
        }
        workload
    }

    /// Replaces the client's timer.
    fn set_timer(&mut self, cluster: &mut Cluster, client: usize, delay_micros: u64) {
        let generation = &mut self.clients[client].timer_generation;
        *generation += 1;
        cluster.schedule(delay_micros, External::Client(client, *generation));
    }

    /// Whether every client has finished its share of operations.
    pub fn is_finished(&self) -> bool {
        self.clients
            .iter()
            .all(|client| client.phase == Phase::Finished)
    }

    /// Operations issued so far (each ends completed, unknown, or — if no node
    /// ever accepted it before its deadline — failed without effect).
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Stops issuing new operations; operations in flight still complete.
    pub fn stop_issuing(&mut self) {
        self.config.operations = self.issued;
    }

    /// A client's timer fired.
    pub fn handle_timer(&mut self, cluster: &mut Cluster, client: usize, generation: u64) {
        if generation != self.clients[client].timer_generation {
            return;
        }
        match self.clients[client].phase {
            Phase::Idle => self.start_operation(cluster, client),
            Phase::Retrying(operation) => self.submit(cluster, client, operation),
            Phase::Waiting(operation, deadline) if cluster.now_micros >= deadline => {
                // Appended somewhere but never confirmed: the outcome is unknown.
                self.unknown += 1;
                self.operations
                    .get_mut(&operation)
                    .expect("in flight")
                    .1
                    .response = None;
                self.finish_operation(cluster, client);
            }
            Phase::Waiting(..) | Phase::Finished => {}
        }
    }

    /// Routes completions reported by nodes to their clients.
    pub fn handle_completions(&mut self, cluster: &mut Cluster) {
        for (node, completion) in cluster.take_completions() {
            let (operation, outcome) = match completion {
                Completion::WriteCommitted(operation) => (operation, Ok(None)),
                Completion::ReadServed(operation, value) => (operation, Ok(value)),
                Completion::WriteLost(operation) => (operation, Err(None)),
                Completion::ReadRefused(operation, hint) => (operation, Err(hint)),
            };
            let Some((client, _)) = self.operations.get(&operation) else {
                continue;
            };
            let client = *client;
            if !matches!(self.clients[client].phase, Phase::Waiting(current, _) if current == operation)
            {
                continue; // A late answer to an operation already given up.
            }
            match outcome {
                Ok(value) => {
                    self.clients[client].leader_guess = Some(node);
                    let entry = &mut self.operations.get_mut(&operation).expect("known").1;
                    entry.response = Some((cluster.now_micros, value));
                    self.completed += 1;
                    self.finish_operation(cluster, client);
                }
                Err(hint) => self.retry_later(cluster, client, operation, hint),
            }
        }
    }

    /// The recorded history, in order of operation keys.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.operations
            .values()
            .map(|(_, entry)| entry.clone())
            .collect()
    }

    fn start_operation(&mut self, cluster: &mut Cluster, client: usize) {
        if self.issued >= self.config.operations {
            self.clients[client].phase = Phase::Finished;
            return;
        }
        self.issued += 1;
        let operation = self.issued;
        let random = cluster.random();
        let key = random.gen_range(0..self.config.keys);
        let request = if random.gen_bool(self.config.read_fraction) {
            Request::Get { key }
        } else {
            let kind = if random.gen_bool(self.config.append_fraction) {
                WriteKind::Append
            } else {
                WriteKind::Put
            };
            Request::Write(KvCommand {
                client: client as u64,
                operation,
                key,
                kind,
                value: format!("{client}.{operation};"),
            })
        };
        let entry = HistoryEntry {
            client: client as u64,
            request,
            call_micros: cluster.now_micros,
            response: None,
        };
        self.operations.insert(operation, (client, entry));
        self.submit(cluster, client, operation);
    }

    fn submit(&mut self, cluster: &mut Cluster, client: usize, operation: OperationKey) {
        let node = self.pick_node(cluster, client);
        let deadline = self.operations[&operation].1.call_micros + self.config.timeout_micros;
        if cluster.now_micros >= deadline {
            // Retried until the deadline without ever being appended: it never
            // happened, so it leaves no trace in the history.
            self.operations.remove(&operation);
            self.finish_operation(cluster, client);
            return;
        }
        self.clients[client].phase = Phase::Waiting(operation, deadline);
        let request = self.operations[&operation].1.request.clone();
        match request {
            Request::Get { key } => cluster.request_read(node, operation, key),
            Request::Write(command) => {
                if let Err(hint) = cluster.propose_write(node, operation, &command) {
                    self.retry_later(cluster, client, operation, hint);
                    return;
                }
            }
        }
        if let Phase::Waiting(current, deadline) = self.clients[client].phase {
            if current == operation {
                self.set_timer(cluster, client, deadline - cluster.now_micros);
            }
        }
        self.handle_completions(cluster);
    }

    fn retry_later(
        &mut self,
        cluster: &mut Cluster,
        client: usize,
        operation: OperationKey,
        hint: Option<NodeId>,
    ) {
        self.clients[client].leader_guess = hint;
        self.clients[client].phase = Phase::Retrying(operation);
        self.set_timer(cluster, client, self.config.retry_backoff_micros);
    }

    fn finish_operation(&mut self, cluster: &mut Cluster, client: usize) {
        self.clients[client].phase = Phase::Idle;
        let pause = cluster
            .random()
            .gen_range(0..=self.config.think_time_max_micros);
        self.set_timer(cluster, client, pause);
    }

    fn pick_node(&mut self, cluster: &mut Cluster, client: usize) -> NodeId {
        let ids = cluster.node_ids();
        match self.clients[client].leader_guess {
            Some(guess) if ids.contains(&guess) => guess,
            _ => *ids
                .choose(cluster.random())
                .expect("a cluster always has nodes"),
        }
    }
}
