//! Fast failover on the shell's hint that the leader's process is gone
//! (`report_unreachable`): an early campaign that pre-vote (dissertation §9.6)
//! keeps from disrupting a live leader. Election safety never depends on
//! timers (§5.2); the harness checks it after every step.

use super::harness::*;
use crate::{Config, RaftNode, Role};
use understudy_types::NodeId;

/// Every node of a `count`-node cluster but `leader`.
fn followers(leader: NodeId, count: u64) -> Vec<NodeId> {
    ids(count).into_iter().filter(|id| *id != leader).collect()
}

/// How the test's clock advances nodes.
#[derive(Clone, Copy)]
enum Clock {
    /// Every node ticks, then every message is delivered (`Cluster::run`):
    /// nodes whose delays end in the same tick campaign at the same moment.
    LockStep,
    /// Each node's tick is followed by the delivery of everything it caused:
    /// messages are much faster than a tick, as in the node shell (10 ms ticks,
    /// sub-millisecond loopback), so a campaign completes before the next
    /// node's tick.
    Interleaved,
}

/// Advances every running node by one tick under `clock`.
fn advance(cluster: &mut Cluster, clock: Clock) {
    match clock {
        Clock::LockStep => cluster.run(1),
        Clock::Interleaved => {
            for id in ids(3) {
                if cluster.is_up(id) {
                    cluster.node_mut(id).tick();
                    cluster.process(id);
                    cluster.deliver_all();
                }
            }
        }
    }
}

/// Advances until a running node other than `old` leads; returns the ticks it
/// took, or `None` after `ticks_max`.
fn ticks_until_new_leader(
    cluster: &mut Cluster,
    old: NodeId,
    clock: Clock,
    ticks_max: u32,
) -> Option<u32> {
    for ticks in 1..=ticks_max {
        advance(cluster, clock);
        if cluster.leader().is_some_and(|leader| leader != old) {
            return Some(ticks);
        }
    }
    None
}

/// A three-node cluster with harness configs seeded from `seed`, after electing
/// a leader; returns the cluster and the leader.
fn cluster_with_leader(seed: u64) -> (Cluster, NodeId) {
    let configs: Vec<Config> = (1..=3)
        .map(|id| {
            let mut config = config(id);
            config.random_seed = seed * 10 + id;
            config
        })
        .collect();
    let mut cluster = Cluster::with_configs(configs);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    (cluster, leader)
}

/// Kills the leader of a cluster seeded from `seed`, hints both followers and
/// returns the ticks until a new leader (in a higher term) leads.
fn failover_ticks(seed: u64, clock: Clock) -> u32 {
    let (mut cluster, leader) = cluster_with_leader(seed);
    let old_term = cluster.node(leader).status().term;
    cluster.crash(leader);
    for follower in followers(leader, 3) {
        cluster.node_mut(follower).report_unreachable(leader);
        cluster.process(follower);
        assert_eq!(cluster.node(follower).status().leader, None);
    }
    let ticks_max = 3 * config(1).election_timeout_ticks;
    let ticks = ticks_until_new_leader(&mut cluster, leader, clock, ticks_max)
        .unwrap_or_else(|| panic!("seed {seed}: no new leader"));
    let new_leader = cluster.leader().expect("a new leader");
    assert!(cluster.node(new_leader).status().term > old_term);
    ticks
}

/// With the leader dead and both followers hinted, a new leader is elected
/// within the longest hint delay (`heartbeat_interval_ticks`, at least 2) plus
/// a tick, far below the 10-tick minimum election timeout, for every seed.
#[test]
fn a_hinted_cluster_elects_a_new_leader_within_a_few_ticks() {
    let fast_ticks_max = config(1).heartbeat_interval_ticks.max(2) + 1;
    assert!(fast_ticks_max < config(1).election_timeout_ticks);
    for seed in 0..20 {
        let ticks = failover_ticks(seed, Clock::Interleaved);
        assert!(ticks <= fast_ticks_max, "seed {seed}: {ticks} ticks");
    }
}

/// In lock step both followers may end their delays in the same tick, grant
/// each other's pre-votes, vote for themselves and split the vote; then the
/// full election timeout applies. That stays the exception, and every seed
/// still elects a leader.
#[test]
fn in_lock_step_most_hinted_failovers_are_still_fast() {
    let fast_ticks_max = config(1).heartbeat_interval_ticks.max(2) + 3;
    let seeds = 20;
    let fast = (0..seeds)
        .filter(|seed| failover_ticks(*seed, Clock::LockStep) <= fast_ticks_max)
        .count();
    assert!(
        fast * 2 >= seeds as usize,
        "only {fast} of {seeds} seeds elected within {fast_ticks_max} ticks"
    );
}

/// The same scenario without the hint takes at least the minimum election
/// timeout: the hint is what makes the difference above.
#[test]
fn without_the_hint_the_cluster_waits_for_an_election_timeout() {
    let (mut cluster, leader) = cluster_with_leader(0);
    cluster.crash(leader);
    let ticks = ticks_until_new_leader(&mut cluster, leader, Clock::Interleaved, 100)
        .expect("a new leader");
    assert!(
        ticks >= config(1).election_timeout_ticks,
        "took {ticks} ticks"
    );
}

/// A hint at one follower while the leader is alive and reaches the other: the
/// hinted follower pre-campaigns, both others refuse (the leader leads, the
/// other follower is in its lease), no term changes, and the leader's next
/// heartbeat makes the hinted follower follow it again.
#[test]
fn a_wrong_hint_does_not_disrupt_a_live_leader() {
    let (mut cluster, leader) = cluster_with_leader(0);
    let term = cluster.node(leader).status().term;
    let hinted = followers(leader, 3)[0];
    cluster.node_mut(hinted).report_unreachable(leader);
    cluster.process(hinted);
    assert_eq!(cluster.node(hinted).status().leader, None);
    // Only the hinted node's clock runs until it pre-campaigns, so no heartbeat
    // reaches it first: the pre-vote really is sent and refused.
    let heartbeat_ticks = config(1).heartbeat_interval_ticks.max(2);
    for _ in 0..heartbeat_ticks {
        if cluster.node(hinted).status().role == Role::PreCandidate {
            break;
        }
        cluster.node_mut(hinted).tick();
        cluster.process(hinted);
    }
    assert_eq!(
        cluster.node(hinted).status().role,
        Role::PreCandidate,
        "the hinted follower campaigns within a heartbeat interval"
    );
    cluster.deliver_all();
    assert_eq!(cluster.node(hinted).status().role, Role::Follower);
    cluster.run(config(1).heartbeat_interval_ticks);
    assert_eq!(cluster.leader(), Some(leader));
    for id in ids(3) {
        let status = cluster.node(id).status();
        assert_eq!(status.term, term, "node {id} kept the term");
        assert_eq!(status.leader, Some(leader), "node {id} follows the leader");
    }
    cluster.run(50);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(cluster.node(leader).status().term, term);
}

/// Runs the same deterministic cluster twice, the second time with `hint`
/// applied after the election; returns the traffic of both runs afterwards.
fn twin_runs(hint: impl Fn(&mut RaftNode, NodeId, &[NodeId])) -> (Cluster, Cluster) {
    let mut runs = Vec::new();
    for hinted in [false, true] {
        let (mut cluster, leader) = cluster_with_leader(0);
        let others = followers(leader, 3);
        if hinted {
            for id in ids(3) {
                hint(cluster.node_mut(id), leader, &others);
                cluster.process(id);
            }
        }
        cluster.sent.clear();
        cluster.run(50);
        runs.push(cluster);
    }
    let second = runs.pop().expect("two runs");
    let first = runs.pop().expect("two runs");
    (first, second)
}

/// A hint naming a non-leader peer, this node itself, or given to the leader
/// changes nothing: the hinted run's traffic and states equal the unhinted one.
#[test]
fn a_hint_that_does_not_name_the_leader_changes_nothing() {
    let (plain, hinted) = twin_runs(|node, leader, others| {
        let id = node.status().id;
        for peer in others.iter().copied().chain([id]) {
            node.report_unreachable(peer);
        }
        if id == leader {
            node.report_unreachable(others[0]);
        }
        assert!(
            node.take_commands().is_empty(),
            "a no-op hint emits nothing"
        );
    });
    assert_eq!(plain.sent, hinted.sent);
    for id in ids(3) {
        assert_eq!(plain.node(id).status(), hinted.node(id).status());
    }
}

/// The twin comparison is sensitive: a hint naming the leader does change the
/// traffic (the hinted followers pre-campaign).
#[test]
fn a_hint_naming_the_leader_changes_the_traffic() {
    let (plain, hinted) = twin_runs(|node, leader, _| node.report_unreachable(leader));
    assert_ne!(plain.sent, hinted.sent);
}

/// A node that does not know a leader, or is a pre-candidate or candidate,
/// ignores the hint.
#[test]
fn a_hint_without_a_followed_leader_is_ignored() {
    let mut node = super::fixtures::node(1, &[1, 2, 3]);
    node.report_unreachable(NodeId(2));
    assert!(node.take_commands().is_empty());
    let commands = super::fixtures::tick_until(&mut node, Role::PreCandidate);
    assert!(!commands.is_empty());
    let before = node.status();
    node.report_unreachable(NodeId(2));
    assert!(node.take_commands().is_empty());
    assert_eq!(node.status(), before);
}
