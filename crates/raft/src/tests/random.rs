//! Seeded random schedules: messages dropped, duplicated and reordered,
//! persistence completing late, nodes crashing (losing everything not durable)
//! and restarting, partitions, compaction, reads. The harness checks election
//! safety (§5.2: at most one leader per term) and state machine safety (§5.4.3:
//! every node applies the same entry at each index) after every step; these
//! tests also check that every ReadReady covers all writes committed before the
//! read was asked for (§6.4), and that the cluster heals once faults stop.

use super::harness::*;
use crate::{Command, Config, MembershipChange, Role};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use understudy_types::{LogIndex, NodeId};

/// Knobs for one random run.
#[derive(Clone, Copy)]
pub(crate) struct Schedule {
    pub(crate) nodes: u64,
    pub(crate) steps: u32,
    pub(crate) crashes: bool,
    pub(crate) compaction: bool,
    /// Extra weight (per mille of steps) for crashes and restarts.
    pub(crate) churn: u32,
    /// Nodes that start outside the group, for membership changes.
    pub(crate) spare_nodes: u64,
    /// Make membership changes and leadership transfers.
    pub(crate) reconfigure: bool,
}

/// What one run exercised, so tests can check their own coverage.
#[derive(Default, Debug)]
pub(crate) struct Coverage {
    pub(crate) committed: usize,
    pub(crate) leaders: usize,
    pub(crate) snapshots_installed: usize,
    pub(crate) reads_ready: usize,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, other: Coverage) {
        self.committed += other.committed;
        self.leaders += other.leaders;
        self.snapshots_installed += other.snapshots_installed;
        self.reads_ready += other.reads_ready;
    }
}

/// Runs one seeded schedule, then a fault-free phase that must heal.
pub(crate) fn run_schedule(
    seed: u64,
    schedule: Schedule,
    adjust: impl Fn(&mut Config),
) -> Coverage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let configs = (1..=schedule.nodes)
        .map(|id| {
            let mut config = config(id);
            config.random_seed = seed.wrapping_mul(31).wrapping_add(id);
            config.inflight_appends_max = 4;
            config.append_entries_max = 8;
            config.snapshot_chunk_bytes_max = 5;
            adjust(&mut config);
            config
        })
        .collect();
    let mut cluster = Cluster::with_configs(configs);
    let all = ids(schedule.nodes + schedule.spare_nodes);
    for &spare in &all[schedule.nodes as usize..] {
        let mut config = config(spare.0);
        config.random_seed = seed.wrapping_mul(31).wrapping_add(spare.0);
        adjust(&mut config);
        cluster.add_blank_node(config);
    }
    cluster.auto_persist = false;
    let mut reads = ReadChecker::default();
    for _ in 0..schedule.steps {
        let node = all[rng.gen_range(0..all.len())];
        if schedule.reconfigure && rng.gen_range(0..1000) < 15 {
            reconfigure(&mut cluster, &mut rng, &all);
            continue;
        }
        if schedule.churn > 0 && rng.gen_range(0..1000) < schedule.churn {
            if cluster.is_up(node) {
                cluster.crash(node);
            } else {
                cluster.restart(node);
            }
            continue;
        }
        match rng.gen_range(0..1000) {
            0..=199 => {
                if cluster.is_up(node) {
                    cluster.node_mut(node).tick();
                    cluster.process(node);
                }
            }
            200..=599 => {
                if !cluster.network.is_empty() {
                    // Mostly near the front, sometimes anywhere: reordering.
                    let window = cluster
                        .network
                        .len()
                        .min(if rng.gen_bool(0.2) { 64 } else { 3 });
                    let position = rng.gen_range(0..window);
                    cluster.deliver_at(position);
                }
            }
            600..=629 => {
                if !cluster.network.is_empty() {
                    let position = rng.gen_range(0..cluster.network.len());
                    cluster.network.remove(position);
                }
            }
            630..=659 => {
                if !cluster.network.is_empty() {
                    let position = rng.gen_range(0..cluster.network.len());
                    let copy = cluster.network[position].clone();
                    cluster.network.push_back(copy);
                }
            }
            660..=759 => {
                // Mostly at the leader, so that something commits.
                let target = match cluster.leader() {
                    Some(leader) if rng.gen_bool(0.8) => leader,
                    _ => node,
                };
                if cluster.is_up(target) {
                    let payload = Bytes::from(format!("{seed}:{}", rng.gen::<u32>()));
                    let _ = cluster.node_mut(target).propose(payload);
                    cluster.process(target);
                }
            }
            760..=889 => {
                if cluster.is_up(node) {
                    cluster.complete_persistence(node);
                    cluster.process(node);
                }
            }
            890..=892 => {
                if schedule.crashes && cluster.is_up(node) {
                    cluster.crash(node);
                }
            }
            893..=919 => {
                if !cluster.is_up(node) {
                    cluster.restart(node);
                }
            }
            920..=939 => {
                if schedule.compaction && cluster.is_up(node) {
                    cluster.compact(node);
                }
            }
            940..=969 => {
                let target = match cluster.leader() {
                    Some(leader) if rng.gen_bool(0.7) => leader,
                    _ => node,
                };
                reads.ask(&mut cluster, target);
            }
            970..=989 => {
                let other = all[rng.gen_range(0..all.len())];
                if other != node {
                    cluster.cut.insert((node, other));
                }
            }
            _ => cluster.heal(),
        }
        reads.check(&mut cluster);
    }
    let coverage = Coverage {
        committed: cluster.applied_entries.len(),
        leaders: cluster.leaders.len(),
        snapshots_installed: cluster.snapshots_installed,
        reads_ready: cluster
            .reads
            .iter()
            .filter(|(_, command)| matches!(command, Command::ReadReady { .. }))
            .count(),
    };
    heal_and_check_liveness(&mut cluster, &all);
    reads.check(&mut cluster);
    coverage
}

/// On the leader (if any): a random membership change or leadership transfer.
/// Refusals are expected and ignored; the harness checks safety throughout.
fn reconfigure(cluster: &mut Cluster, rng: &mut ChaCha8Rng, all: &[NodeId]) {
    let Some(leader) = cluster.leader() else {
        return;
    };
    let target = all[rng.gen_range(0..all.len())];
    let membership = cluster.node(leader).status().membership;
    let node = cluster.node_mut(leader);
    if rng.gen_bool(0.3) {
        let _ = node.transfer_leadership(target);
    } else {
        let change = if membership.learners.contains(&target) {
            if rng.gen_bool(0.7) {
                MembershipChange::PromoteLearner(target)
            } else {
                MembershipChange::Remove(target)
            }
        } else if membership.voters.contains(&target) {
            MembershipChange::Remove(target)
        } else {
            MembershipChange::AddLearner(target)
        };
        let _ = node.change_membership(change);
    }
    cluster.process(leader);
}

/// Stops every fault and requires a leader that commits a new entry on every
/// member of the final configuration.
fn heal_and_check_liveness(cluster: &mut Cluster, all: &[NodeId]) {
    cluster.heal();
    cluster.auto_persist = true;
    for &id in all {
        if cluster.is_up(id) {
            cluster.complete_persistence(id);
            cluster.process(id);
        } else {
            cluster.restart(id);
        }
    }
    let mut leader = None;
    for _ in 0..300 {
        cluster.run(1);
        if let Some(id) = cluster.leader() {
            if cluster
                .node(id)
                .propose(Bytes::from_static(b"final"))
                .is_ok()
            {
                leader = Some(id);
                break;
            }
        }
    }
    let Some(leader) = leader else {
        for node in cluster.nodes.values() {
            eprintln!("{:?} {:?}", node.status(), node.hard_state());
        }
        panic!("a leader accepts proposals once faults stop");
    };
    cluster.process(leader);
    cluster.run(60);
    let status = cluster.node(leader).status();
    let commit = status.commit_index;
    assert_eq!(status.role, Role::Leader);
    for id in status.membership.members() {
        assert_eq!(
            cluster.node(id).status().commit_index,
            commit,
            "{id} caught up"
        );
        assert_eq!(cluster.applied_index(id), commit, "{id} applied everything");
    }
}

/// Checks that a read's index covers every write committed before it was asked.
#[derive(Default)]
struct ReadChecker {
    next_context: u64,
    required: BTreeMap<u64, LogIndex>,
    seen: usize,
}

impl ReadChecker {
    fn ask(&mut self, cluster: &mut Cluster, node: NodeId) {
        if !cluster.is_up(node) {
            return;
        }
        let committed = cluster
            .applied_entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or_default();
        let committed = cluster
            .nodes
            .values()
            .map(|node| node.status().commit_index)
            .max()
            .unwrap_or_default()
            .max(committed);
        self.next_context += 1;
        self.required.insert(self.next_context, committed);
        cluster.node_mut(node).read_index(self.next_context);
        cluster.process(node);
    }

    fn check(&mut self, cluster: &mut Cluster) {
        for (node, command) in cluster.reads.iter().skip(self.seen) {
            match command {
                Command::ReadReady { context, index } => {
                    let required = self.required.remove(context).expect("one answer per read");
                    assert!(
                        *index >= required,
                        "read {context} on {node} at {index} misses committed {required}"
                    );
                }
                Command::ReadFailed { context, .. } => {
                    assert!(
                        self.required.remove(context).is_some(),
                        "one answer per read"
                    );
                }
                _ => unreachable!("only read answers are recorded"),
            }
        }
        self.seen = cluster.reads.len();
    }
}

trait ProposeCheck {
    fn propose(&self, payload: Bytes) -> Result<(), crate::RaftError>;
}

impl ProposeCheck for crate::RaftNode {
    /// Whether a proposal would be accepted, without making one.
    fn propose(&self, _payload: Bytes) -> Result<(), crate::RaftError> {
        self.check_can_propose()
    }
}

const DEFAULT: Schedule = Schedule {
    nodes: 3,
    steps: 6000,
    crashes: true,
    compaction: true,
    churn: 0,
    spare_nodes: 0,
    reconfigure: false,
};

/// Runs `seeds`, and checks the runs exercised what they are meant to.
fn run_seeds(seeds: std::ops::Range<u64>, schedule: Schedule, adjust: impl Fn(&mut Config)) {
    let count = seeds.end - seeds.start;
    let mut total = Coverage::default();
    for seed in seeds {
        eprintln!("seed {seed}");
        total += run_schedule(seed, schedule, &adjust);
    }
    eprintln!("{total:?}");
    let count = usize::try_from(count).expect("small");
    assert!(
        total.committed > 50 * count,
        "too little committed: {total:?}"
    );
    assert!(total.leaders > 2 * count, "too few elections: {total:?}");
    assert!(
        total.reads_ready > 10 * count,
        "too few reads served: {total:?}"
    );
    if schedule.compaction {
        assert!(
            total.snapshots_installed > count / 4,
            "too few snapshot installs: {total:?}"
        );
    }
}

/// Three nodes, every fault, many seeds.
#[test]
fn random_schedules_three_nodes() {
    run_seeds(0..150, DEFAULT, |_| {});
}

/// Five nodes, every fault.
#[test]
fn random_schedules_five_nodes() {
    run_seeds(
        1000..1080,
        Schedule {
            nodes: 5,
            ..DEFAULT
        },
        |_| {},
    );
}

/// Membership changes and leadership transfers under every fault, with two
/// nodes that start outside the group.
#[test]
fn random_schedules_with_reconfiguration() {
    let schedule = Schedule {
        spare_nodes: 2,
        reconfigure: true,
        ..DEFAULT
    };
    run_seeds(3000..3150, schedule, |_| {});
}

/// Frequent crashes and restarts.
#[test]
fn random_schedules_with_heavy_churn() {
    run_seeds(4000..4080, Schedule { churn: 15, ..DEFAULT }, |_| {});
}

/// Without pre-vote and check-quorum the basic algorithm must be just as safe.
#[test]
fn random_schedules_without_pre_vote_or_check_quorum() {
    run_seeds(2000..2080, DEFAULT, |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
}

/// With a deliberate bug switched on, some seed must break a safety check: the
/// random schedules are strong enough to find these bugs. (The Figure 8 bug
/// needs a precise schedule; `figure8.rs` scripts it.)
#[cfg(feature = "deliberate-bugs")]
mod deliberate_bugs {
    use super::*;
    use crate::DeliberateBugs;

    fn first_failing_seed(bugs: DeliberateBugs, schedule: Schedule) -> Option<u64> {
        (0..400).find(|&seed| {
            std::panic::catch_unwind(|| {
                run_schedule(seed, schedule, |config| config.deliberate_bugs = bugs);
            })
            .is_err()
        })
    }

    /// §5.4.1: voting without the up-to-date check.
    #[test]
    fn finds_vote_without_log_check() {
        let bugs = DeliberateBugs {
            vote_without_log_check: true,
            ..DeliberateBugs::default()
        };
        assert!(first_failing_seed(bugs, DEFAULT).is_some());
    }

    /// Figure 2 persistence: acknowledging entries before they are durable.
    #[test]
    fn finds_acknowledge_before_durable() {
        let bugs = DeliberateBugs {
            acknowledge_before_durable: true,
            ..DeliberateBugs::default()
        };
        assert!(first_failing_seed(bugs, DEFAULT).is_some());
    }

    /// Figure 2 step 3: keeping the conflicting suffix.
    #[test]
    fn finds_keep_conflicting_suffix() {
        let bugs = DeliberateBugs {
            keep_conflicting_suffix: true,
            ..DeliberateBugs::default()
        };
        assert!(first_failing_seed(bugs, DEFAULT).is_some());
    }
}
