//! The nemesis: random faults injected while the clients run.
//!
//! At random intervals it crashes and later restarts nodes (their disks lose,
//! tear or corrupt unsynced sectors), cuts the network symmetrically or in one
//! direction, isolates the leader, skews node clocks, changes the network's loss
//! and delay, transfers leadership, and replaces voters through single-server
//! membership changes (add a learner, promote it, remove an old voter). It never
//! takes down a majority of voters by crashing alone, so the run can progress,
//! but partitions may leave no majority anywhere for a while.

use crate::cluster::{Cluster, External};
use crate::network::NetworkFaults;
use rand::seq::SliceRandom;
use rand::Rng;
use understudy_raft::MembershipChange;
use understudy_types::NodeId;

/// Timer tags the nemesis schedules for itself.
const RESTART_TAG: u64 = 1 << 40;
const HEAL_TAG: u64 = 2 << 40;

/// How aggressive the nemesis is.
#[derive(Clone, Debug)]
pub struct NemesisConfig {
    /// Shortest pause between two actions.
    pub interval_min_micros: u64,
    /// Longest pause between two actions.
    pub interval_max_micros: u64,
    /// Longest time a crashed node stays down.
    pub downtime_max_micros: u64,
    /// Longest partition.
    pub partition_max_micros: u64,
    /// Whether to change membership.
    pub membership_changes: bool,
}

impl Default for NemesisConfig {
    fn default() -> Self {
        NemesisConfig {
            interval_min_micros: 20_000,
            interval_max_micros: 400_000,
            downtime_max_micros: 1_500_000,
            partition_max_micros: 1_500_000,
            membership_changes: true,
        }
    }
}

/// Counters of what the nemesis did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NemesisStats {
    /// Partitions started (including leader isolations).
    pub partitions: u64,
    /// Whole-cluster power outages.
    pub power_outages: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Membership changes proposed and accepted by a leader.
    pub membership_proposals: u64,
}

/// The fault injector of one run.
pub struct Nemesis {
    config: NemesisConfig,
    initial_voters: usize,
    next_node_id: u64,
    /// A node added to the simulation whose AddLearner has not yet been accepted.
    joining: Option<NodeId>,
    /// Nodes whose removal a leader accepted. Only these are ever taken out of
    /// the simulation, once no configuration names them: a node whose addition
    /// merely looks lost from one leader's view may still join through another's.
    removed: std::collections::BTreeSet<NodeId>,
    active: bool,
    /// What it did.
    pub stats: NemesisStats,
}

impl Nemesis {
    /// A nemesis that starts acting after its first interval.
    pub fn new(config: NemesisConfig, cluster: &mut Cluster) -> Nemesis {
        let nemesis = Nemesis {
            initial_voters: cluster.config.initial_voters,
            next_node_id: cluster.config.initial_voters as u64 + 1,
            joining: None,
            removed: std::collections::BTreeSet::new(),
            active: true,
            stats: NemesisStats::default(),
            config,
        };
        nemesis.schedule_next(cluster);
        nemesis
    }

    fn schedule_next(&self, cluster: &mut Cluster) {
        let delay = cluster
            .random()
            .gen_range(self.config.interval_min_micros..=self.config.interval_max_micros);
        cluster.schedule(delay, External::Nemesis);
    }

    /// Stops injecting faults and repairs everything: heals the network, makes it
    /// reliable, restarts crashed nodes and removes clock skew.
    pub fn calm_down(&mut self, cluster: &mut Cluster) {
        self.active = false;
        cluster.network.heal();
        cluster.network.faults = NetworkFaults::reliable();
        for id in cluster.node_ids() {
            cluster.set_clock_skew(id, 1.0);
            cluster.restart(id);
        }
    }

    /// The nemesis' own timer fired.
    pub fn handle_nemesis(&mut self, cluster: &mut Cluster) {
        if !self.active {
            return;
        }
        let choice = cluster.random().gen_range(0..100);
        match choice {
            0..=1 => self.power_outage(cluster),
            2..=29 => self.crash_someone(cluster),
            30..=49 => self.partition(cluster),
            50..=59 => self.skew_a_clock(cluster),
            60..=69 => self.change_network(cluster),
            70..=89 => self.change_membership(cluster),
            _ => self.transfer_leadership(cluster),
        }
        self.schedule_next(cluster);
    }

    /// A timer tagged by the nemesis fired; returns false if the tag is not its own.
    pub fn handle_timer(&mut self, cluster: &mut Cluster, tag: u64) -> bool {
        if tag & RESTART_TAG != 0 {
            cluster.restart(NodeId(tag & !RESTART_TAG));
        } else if tag == HEAL_TAG {
            cluster.network.heal();
        } else {
            return false;
        }
        true
    }

    fn crash_someone(&mut self, cluster: &mut Cluster) {
        let ids = cluster.node_ids();
        let down = ids.iter().filter(|id| cluster.raft(**id).is_none()).count();
        let voters = self.voter_count(cluster);
        if down + 1 > voters.saturating_sub(1) / 2 {
            return;
        }
        let running: Vec<NodeId> = ids
            .into_iter()
            .filter(|id| cluster.raft(*id).is_some())
            .collect();
        // Prefer nodes with writes in flight: a crash then loses unsynced data.
        let writing: Vec<NodeId> = running
            .iter()
            .copied()
            .filter(|id| {
                cluster
                    .node(*id)
                    .is_some_and(|node| node.disk.has_unsynced_changes())
            })
            .collect();
        let victim = match cluster.random().gen_range(0..3) {
            0 if !writing.is_empty() => *writing.choose(cluster.random()).expect("not empty"),
            1 if cluster.leader().is_some() => cluster.leader().expect("checked"),
            _ => match running.choose(cluster.random()) {
                Some(id) => *id,
                None => return,
            },
        };
        cluster.crash(victim);
        let downtime = cluster
            .random()
            .gen_range(1_000..=self.config.downtime_max_micros);
        cluster.schedule(downtime, External::Timer(RESTART_TAG | victim.get()));
    }

    /// Every node loses power at once, losing what it had not synced, and comes
    /// back after its own downtime. Raft survives this only if every
    /// acknowledgement it counted was durable.
    fn power_outage(&mut self, cluster: &mut Cluster) {
        for id in cluster.node_ids() {
            if cluster.raft(id).is_none() {
                continue;
            }
            cluster.crash(id);
            let downtime = cluster
                .random()
                .gen_range(1_000..=self.config.downtime_max_micros);
            cluster.schedule(downtime, External::Timer(RESTART_TAG | id.get()));
        }
        self.stats.power_outages += 1;
    }

    fn partition(&mut self, cluster: &mut Cluster) {
        if cluster.network.is_partitioned() {
            return;
        }
        let mut ids = cluster.node_ids();
        ids.shuffle(cluster.random());
        let cut = cluster.random().gen_range(1..ids.len().max(2));
        let (side_a, side_b) = ids.split_at(cut.min(ids.len()));
        match cluster.random().gen_range(0..3) {
            0 => cluster.network.partition_symmetric(side_a, side_b),
            1 => cluster.network.partition_one_way(side_a, side_b),
            _ => match cluster.leader() {
                Some(leader) => cluster.network.isolate(leader),
                None => cluster.network.partition_symmetric(side_a, side_b),
            },
        }
        self.stats.partitions += 1;
        let duration = cluster
            .random()
            .gen_range(10_000..=self.config.partition_max_micros);
        cluster.schedule(duration, External::Timer(HEAL_TAG));
    }

    fn skew_a_clock(&mut self, cluster: &mut Cluster) {
        let ids = cluster.node_ids();
        let Some(&id) = ids.choose(cluster.random()) else {
            return;
        };
        let skew = cluster.random().gen_range(0.7..1.4);
        cluster.set_clock_skew(id, skew);
    }

    fn change_network(&mut self, cluster: &mut Cluster) {
        cluster.network.faults = match cluster.random().gen_range(0..3) {
            0 => NetworkFaults::reliable(),
            1 => NetworkFaults::unreliable(),
            _ => NetworkFaults {
                drop_probability: 0.3,
                ..NetworkFaults::unreliable()
            },
        };
    }

    fn transfer_leadership(&mut self, cluster: &mut Cluster) {
        let Some(leader) = cluster.leader() else {
            return;
        };
        let voters: Vec<NodeId> = cluster
            .raft(leader)
            .map(|raft| raft.status().membership.voters.into_iter().collect())
            .unwrap_or_default();
        let Some(&target) = voters.choose(cluster.random()) else {
            return;
        };
        if target != leader
            && cluster
                .with_raft(leader, |raft| raft.transfer_leadership(target))
                .is_some_and(|result| result.is_ok())
        {
            self.stats.transfers += 1;
        }
    }

    fn voter_count(&self, cluster: &Cluster) -> usize {
        cluster
            .leader()
            .and_then(|leader| cluster.raft(leader))
            .map(|raft| raft.status().membership.voters.len())
            .unwrap_or(self.initial_voters)
    }

    /// One step of replacing a voter: add a learner, promote it once caught up,
    /// then remove a voter so the group returns to its initial size.
    fn change_membership(&mut self, cluster: &mut Cluster) {
        if !self.config.membership_changes {
            return;
        }
        let Some(leader) = cluster.leader() else {
            return;
        };
        let membership = cluster
            .raft(leader)
            .expect("the leader runs")
            .status()
            .membership;
        let committed = cluster
            .node(leader)
            .and_then(|node| node.applied_membership())
            .cloned()
            .unwrap_or_default();
        self.decommission_departed(cluster, &committed, &membership);
        let change = if let Some(&learner) = membership.learners.iter().next() {
            MembershipChange::PromoteLearner(learner)
        } else if membership.voters.len() > self.initial_voters {
            let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
            MembershipChange::Remove(*voters.choose(cluster.random()).expect("voters"))
        } else {
            let joining = match self.joining {
                Some(joining) => joining,
                None => {
                    let id = NodeId(self.next_node_id);
                    self.next_node_id += 1;
                    cluster.add_node(id, Vec::new());
                    self.joining = Some(id);
                    id
                }
            };
            MembershipChange::AddLearner(joining)
        };
        let accepted = cluster
            .with_raft(leader, |raft| raft.change_membership(change))
            .is_some_and(|result| result.is_ok());
        if accepted {
            self.stats.membership_proposals += 1;
            match change {
                MembershipChange::AddLearner(_) => self.joining = None,
                MembershipChange::Remove(id) => {
                    self.removed.insert(id);
                }
                MembershipChange::PromoteLearner(_) => {}
            }
        }
    }

    /// Removes from the simulation nodes whose removal was accepted and that
    /// neither the leader's committed configuration nor its latest one names.
    fn decommission_departed(
        &mut self,
        cluster: &mut Cluster,
        committed: &understudy_raft::Membership,
        latest: &understudy_raft::Membership,
    ) {
        for id in cluster.node_ids() {
            if self.removed.contains(&id) && !committed.contains(id) && !latest.contains(id) {
                cluster.decommission(id);
            }
        }
    }
}
