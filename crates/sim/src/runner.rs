//! Runs one seed end to end, and many seeds in parallel.
//!
//! A run has three phases: the workload with the nemesis active; the liveness
//! phase, in which every fault is repaired and a leader must commit a final write
//! that every running voter applies; and the history check.

use crate::cluster::{Cluster, ClusterConfig, External, Step};
use crate::history;
use crate::kv::{KvCommand, WriteKind};
use crate::nemesis::{Nemesis, NemesisConfig};
use crate::network::NetworkFaults;
use crate::workload::{Workload, WorkloadConfig};
use understudy_raft::{DeliberateBugs, Role};
use understudy_types::{LogIndex, NodeId, Term};
use understudy_wal::CrashFaults;

/// A deliberate bug to switch on, to prove the simulator finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Count replicas to commit an entry of an earlier term (Figure 8).
    CommitEarlierTerm,
    /// Grant votes without the log up-to-date check.
    VoteWithoutLogCheck,
    /// Acknowledge appends before they are durable.
    AcknowledgeBeforeDurable,
    /// Do not truncate a conflicting suffix.
    KeepConflictingSuffix,
    /// The WAL's fsync does nothing.
    NoOpSync,
    /// Reads skip ReadIndex and may return stale data (only the history check
    /// can see this).
    StaleReads,
}

impl Bug {
    /// Every deliberate bug, with its command-line name.
    pub const ALL: [(Bug, &'static str); 6] = [
        (Bug::CommitEarlierTerm, "commit-earlier-term"),
        (Bug::VoteWithoutLogCheck, "vote-without-log-check"),
        (Bug::AcknowledgeBeforeDurable, "acknowledge-before-durable"),
        (Bug::KeepConflictingSuffix, "keep-conflicting-suffix"),
        (Bug::NoOpSync, "no-op-sync"),
        (Bug::StaleReads, "stale-reads"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Bug::ALL
            .iter()
            .find(|(bug, _)| *bug == self)
            .map(|(_, name)| *name)
            .expect("every bug has a name")
    }
}

/// What one seed runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed.
    pub seed: u64,
    /// Initial voters.
    pub nodes: usize,
    /// Client operations.
    pub operations: u64,
    /// A deliberate bug, if any.
    pub bug: Option<Bug>,
}

/// What one seed did.
#[derive(Clone, Debug, Default)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Every violation found.
    pub violations: Vec<String>,
    /// Client operations issued.
    pub operations: u64,
    /// Of which unknown.
    pub unknown_operations: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Crashes that lost or damaged unsynced writes.
    pub crashes_losing_unsynced_writes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Membership changes committed.
    pub reconfigurations: u64,
    /// The trace hash.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Hints that a crashed peer is gone which made a node stop following its
    /// leader (and campaign early).
    pub unreachable_hints_followed: u64,
    /// Virtual time the run took.
    pub virtual_micros: u64,
}

/// Virtual time allowed for the workload before the run is declared stuck.
const WORKLOAD_VIRTUAL_MICROS_MAX: u64 = 1_200_000_000;
/// Virtual time allowed for the liveness phase.
const LIVENESS_VIRTUAL_MICROS_MAX: u64 = 30_000_000;

/// The cluster configuration of a randomized run.
pub fn cluster_config(run: &RunConfig) -> ClusterConfig {
    let mut config = ClusterConfig::reliable(run.seed, run.nodes);
    config.network = NetworkFaults::unreliable();
    // From one entry per message up to a few: batching and pipelining under stress.
    config.append_entries_max = 1 + (run.seed % 4) as usize;
    // Snapshots of the simulated store are a few KiB: chunks of 256 B to 2 KiB
    // make every install take several chunks, each of which can be lost.
    config.snapshot_chunk_bytes_max = 256 << (run.seed / 4 % 4);
    // Small enough that followers which fall behind need a snapshot.
    config.snapshot_threshold_entries = 20 + run.seed % 80;
    config.crash_faults = CrashFaults::default();
    // Half the peers of a crashed node hear at once that it is gone (a process
    // death, whose sockets the kernel closes); the others must wait for an
    // election timeout (a machine or link failure).
    config.unreachable_hint_probability = 0.5;
    // Slow enough group commits that crashes often strike between a write and
    // its fsync.
    config.sync_delay_min_micros = 200;
    config.sync_delay_max_micros = 5_000;
    let mut raft_bugs = DeliberateBugs::default();
    match run.bug {
        Some(Bug::CommitEarlierTerm) => raft_bugs.commit_earlier_term_by_counting = true,
        Some(Bug::VoteWithoutLogCheck) => raft_bugs.vote_without_log_check = true,
        Some(Bug::AcknowledgeBeforeDurable) => raft_bugs.acknowledge_before_durable = true,
        Some(Bug::KeepConflictingSuffix) => raft_bugs.keep_conflicting_suffix = true,
        Some(Bug::NoOpSync) => config.shell_bugs.no_op_sync = true,
        Some(Bug::StaleReads) => config.shell_bugs.stale_reads = true,
        None => {}
    }
    config.raft_bugs = raft_bugs;
    config
}

/// Runs one seed.
pub fn run_seed(run: &RunConfig) -> SeedReport {
    let mut cluster = Cluster::new(cluster_config(run));
    let workload_config = WorkloadConfig {
        operations: run.operations,
        ..WorkloadConfig::default()
    };
    let mut workload = Workload::new(workload_config, &mut cluster);
    let mut nemesis = Nemesis::new(NemesisConfig::default(), &mut cluster);
    let mut violations = Vec::new();

    drive(
        &mut cluster,
        &mut workload,
        &mut nemesis,
        WORKLOAD_VIRTUAL_MICROS_MAX,
        |_, workload| workload.is_finished(),
    );
    if !workload.is_finished() {
        violations.push(format!(
            "the workload did not finish within {} s of virtual time",
            WORKLOAD_VIRTUAL_MICROS_MAX / 1_000_000
        ));
        workload.stop_issuing();
    }
    nemesis.calm_down(&mut cluster);
    if let Err(problem) = liveness_phase(&mut cluster, &mut workload, &mut nemesis) {
        violations.push(problem);
    }
    violations.splice(0..0, cluster.checker.violations().iter().cloned());
    if let Err(problem) = history::check(&workload.history()) {
        violations.push(problem);
    }
    SeedReport {
        seed: run.seed,
        violations,
        operations: workload.issued(),
        unknown_operations: workload.unknown,
        crashes: cluster.stats.crashes,
        crashes_losing_unsynced_writes: cluster.stats.crashes_losing_unsynced_writes,
        partitions: nemesis.stats.partitions,
        snapshots_installed: cluster.stats.snapshots_installed,
        reconfigurations: cluster.stats.reconfigurations,
        trace_hash: cluster.trace.finish(),
        events: cluster.stats.events,
        unreachable_hints_followed: cluster.stats.unreachable_hints_followed,
        virtual_micros: cluster.now_micros,
    }
}

/// Processes events until `done` holds or virtual time passes `deadline_micros`.
fn drive(
    cluster: &mut Cluster,
    workload: &mut Workload,
    nemesis: &mut Nemesis,
    deadline_micros: u64,
    mut done: impl FnMut(&Cluster, &Workload) -> bool,
) {
    while cluster.now_micros <= deadline_micros && !done(cluster, workload) {
        match cluster.step() {
            Step::Idle => break,
            Step::Handled => {}
            Step::External(External::Client(client, generation)) => {
                workload.handle_timer(cluster, client, generation)
            }
            Step::External(External::Nemesis) => nemesis.handle_nemesis(cluster),
            Step::External(External::Timer(tag)) => {
                nemesis.handle_timer(cluster, tag);
            }
        }
        workload.handle_completions(cluster);
    }
}

/// With every fault repaired, a leader must be elected, a final write must
/// commit, and every running member must apply it.
fn liveness_phase(
    cluster: &mut Cluster,
    workload: &mut Workload,
    nemesis: &mut Nemesis,
) -> Result<(), String> {
    let deadline = cluster.now_micros + LIVENESS_VIRTUAL_MICROS_MAX;
    let barrier_operation = u64::MAX;
    let command = KvCommand {
        client: u64::MAX,
        operation: barrier_operation,
        key: u64::MAX,
        kind: WriteKind::Put,
        value: "barrier".into(),
    };
    let barrier_fingerprint = crate::trace::fingerprint(&command.encode());
    // Where the barrier was last proposed: (leader, its term, the index).
    let mut barrier: Option<(NodeId, Term, LogIndex)> = None;
    while cluster.now_micros <= deadline {
        if let Some((proposer, term, index)) = barrier {
            match cluster.checker.committed_at(index) {
                Some((_, fingerprint)) if fingerprint == barrier_fingerprint => {
                    if all_members_applied(cluster, index) {
                        return Ok(());
                    }
                }
                // Its slot went to another entry: propose again.
                Some(_) => barrier = None,
                // Not committed yet: propose again if its leader lost its term,
                // since the entry may have been discarded with it.
                None => {
                    let still_leading = cluster.raft(proposer).is_some_and(|raft| {
                        let status = raft.status();
                        status.role == Role::Leader && status.term == term
                    });
                    if !still_leading {
                        barrier = None;
                    }
                }
            }
        }
        if barrier.is_none() {
            if let Some(leader) = cluster.leader() {
                if cluster
                    .propose_write(leader, barrier_operation, &command)
                    .is_ok()
                {
                    let status = cluster.raft(leader).expect("the leader runs").status();
                    barrier = Some((leader, status.term, status.last_index));
                }
            }
        }
        let step_deadline = cluster.now_micros + 10_000;
        drive(cluster, workload, nemesis, step_deadline, |_, _| false);
    }
    let nodes: Vec<String> = cluster
        .node_ids()
        .into_iter()
        .map(|id| match cluster.raft(id) {
            Some(raft) => {
                let status = raft.status();
                format!(
                    "{id}: {:?} {} leader {:?} commit {} applied {} last {} members {:?}/{:?}",
                    status.role,
                    status.term,
                    status.leader,
                    status.commit_index,
                    status.applied_index,
                    status.last_index,
                    status.membership.voters,
                    status.membership.learners
                )
            }
            None => format!("{id}: down"),
        })
        .collect();
    Err(format!(
        "liveness: no stable commit within {} s after faults stopped (barrier: \
         {barrier:?}; {})",
        LIVENESS_VIRTUAL_MICROS_MAX / 1_000_000,
        nodes.join("; ")
    ))
}

/// Whether every member named by the leader's configuration runs and has applied
/// `index`.
fn all_members_applied(cluster: &Cluster, index: LogIndex) -> bool {
    let Some(leader) = cluster.leader().and_then(|leader| cluster.raft(leader)) else {
        return false;
    };
    let membership = leader.status().membership;
    let all_applied = membership.members().all(|id| {
        cluster
            .node(id)
            .and_then(|node| node.applied_index())
            .is_some_and(|applied| applied >= index)
    });
    all_applied
}
