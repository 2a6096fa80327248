//! The MIT 6.5840 Raft lab's persistence scenarios (test 3C), re-expressed over
//! the deterministic simulator. Crashes here are power failures: each node's
//! simulated disk loses, tears or corrupts what it had not synced.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use understudy_sim::cluster::ClusterConfig;
use understudy_sim::harness::{Harness, MILLIS, SECONDS};
use understudy_sim::network::NetworkFaults;
use understudy_types::NodeId;

fn crash_and_restart_all(harness: &mut Harness) {
    for id in harness.ids() {
        harness.crash(id);
    }
    for id in harness.ids() {
        harness.restart(id);
    }
}

/// Lab 3C "TestPersist13C": state survives crash and restart of all nodes, of the
/// leader, and of a follower.
#[test]
fn persistence_across_restart_of_all_leader_and_follower() {
    let mut harness = Harness::new(3, 21);
    harness.one(11, 3, true);
    crash_and_restart_all(&mut harness);
    harness.one(12, 3, true);

    let leader1 = harness.check_one_leader();
    harness.crash(leader1);
    harness.restart(leader1);
    harness.one(13, 3, true);

    let leader2 = harness.check_one_leader();
    harness.crash(leader2);
    harness.one(14, 2, true);
    harness.restart(leader2);
    let index = harness.one(15, 3, true);
    harness.wait(index, 3, None);

    let leader3 = harness.check_one_leader();
    let follower = harness
        .ids()
        .into_iter()
        .find(|id| *id != leader3)
        .expect("followers");
    harness.crash(follower);
    harness.one(16, 2, true);
    harness.restart(follower);
    harness.one(17, 3, true);
    harness.assert_safe();
}

/// Lab 3C "TestPersist23C": rounds of crashing a minority of 5 nodes, in several
/// combinations, with agreement in between.
#[test]
fn persistence_across_minority_crashes() {
    let mut harness = Harness::new(5, 22);
    let mut value = 10;
    for _ in 0..5 {
        value += 1;
        harness.one(value, 5, true);
        let leader1 = harness.check_one_leader();
        let second = NodeId(leader1.get() % 5 + 1);
        harness.crash(second);
        harness.crash(leader1);
        value += 1;
        harness.one(value, 3, true);

        let third = NodeId((leader1.get() + 1) % 5 + 1);
        let fourth = NodeId((leader1.get() + 2) % 5 + 1);
        harness.crash(third);
        harness.crash(fourth);
        harness.restart(second);
        harness.restart(leader1);
        value += 1;
        harness.one(value, 3, true);
        harness.restart(third);
        harness.restart(fourth);
    }
    harness.one(1000, 5, true);
    harness.assert_safe();
}

/// Lab 3C "TestPersist33C": a partitioned leader and a crashed follower; the
/// leader restarts after the others moved on.
#[test]
fn persistence_with_partitioned_leader_and_crashed_follower() {
    let mut harness = Harness::new(3, 23);
    harness.one(101, 3, false);
    let a = harness.check_one_leader();
    let b = NodeId(a.get() % 3 + 1);
    let c = NodeId(b.get() % 3 + 1);
    harness.disconnect(c);
    harness.one(102, 2, false);
    harness.crash(a);
    harness.crash(b);
    harness.connect(c);
    harness.restart(a);
    harness.one(103, 2, true);
    harness.restart(b);
    harness.one(104, 3, true);
    harness.assert_safe();
}

/// Lab 3C "TestFigure83C": leaders crash at random moments, with random pauses,
/// for many iterations; at the end all 5 nodes agree (Figure 8 of the paper: an
/// entry of an earlier term must not be committed by counting replicas).
#[test]
fn figure_eight_reliable() {
    figure_eight(31, false, 1000);
}

/// Lab 3C "TestFigure8Unreliable3C": Figure 8 with disconnects instead of crashes
/// over an unreliable network; after a while most messages take long detours.
#[test]
fn figure_eight_unreliable() {
    figure_eight(32, true, 1000);
}

fn figure_eight(seed: u64, unreliable: bool, iterations: usize) {
    let mut harness = Harness::new(5, seed);
    harness.set_unreliable(unreliable);
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    harness.one(random.gen_range(0..10_000), 1, true);
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    for iteration in 0..iterations {
        if unreliable && iteration == iterations / 5 {
            harness.cluster.network.faults = NetworkFaults {
                long_delay_probability: 0.66,
                long_delay_max_micros: 2_200 * MILLIS,
                ..NetworkFaults::unreliable()
            };
        }
        let mut leader = None;
        for id in harness.ids() {
            if harness.is_up(id) && harness.start(id, random.gen_range(0..10_000)).is_some() {
                leader = Some(id);
            }
        }
        let pause = if random.gen_range(0..1000) < 100 {
            random.gen_range(0..500) * MILLIS
        } else {
            random.gen_range(0..13) * MILLIS
        };
        harness.run_for(pause);
        if let Some(leader) = leader {
            if random.gen_bool(0.5) || !unreliable {
                take_down(&mut harness, leader, unreliable);
                down.insert(leader);
            }
        }
        if harness.ids().len() - down.len() < 3 {
            let candidates: Vec<NodeId> = down.iter().copied().collect();
            let revived = candidates[random.gen_range(0..candidates.len())];
            bring_up(&mut harness, revived, unreliable);
            down.remove(&revived);
        }
    }
    harness.set_unreliable(false);
    for id in std::mem::take(&mut down) {
        bring_up(&mut harness, id, unreliable);
    }
    harness.one(random.gen_range(0..10_000), 5, true);
    if !unreliable {
        let crashes = harness.cluster.stats.crashes;
        assert!(
            crashes as usize >= iterations / 20,
            "only {crashes} leader crashes"
        );
    }
    eprintln!(
        "figure 8: {} events, {} ms virtual, {} crashes, committed up to {}",
        harness.cluster.stats.events,
        harness.cluster.now_micros / 1000,
        harness.cluster.stats.crashes,
        harness.cluster.checker.committed_index()
    );
    harness.assert_safe();
}

fn take_down(harness: &mut Harness, id: NodeId, disconnect: bool) {
    if disconnect {
        harness.disconnect(id);
    } else {
        harness.crash(id);
    }
}

fn bring_up(harness: &mut Harness, id: NodeId, reconnect: bool) {
    if reconnect {
        harness.connect(id);
    } else {
        harness.restart(id);
    }
}

/// Lab 3C "TestUnreliableAgree3C": concurrent proposals commit over an
/// unreliable network.
#[test]
fn unreliable_agreement() {
    let mut harness = Harness::new(5, 33);
    harness.set_unreliable(true);
    for iteration in 1..30 {
        for offset in 0..4 {
            let ids = harness.ids();
            for id in ids {
                if harness.start(id, 100 * iteration + offset).is_some() {
                    break;
                }
            }
        }
        harness.one(iteration, 1, true);
    }
    harness.set_unreliable(false);
    harness.one(100, 5, true);
    harness.assert_safe();
}

/// Lab 3C "TestReliableChurn3C": clients propose while nodes are disconnected,
/// crashed and restarted at random; every value a client saw committed is in the
/// final state of every node, exactly once.
#[test]
fn reliable_churn() {
    churn(41, false);
}

/// Lab 3C "TestUnreliableChurn3C": churn over an unreliable network.
#[test]
fn unreliable_churn() {
    churn(42, true);
}

fn churn(seed: u64, unreliable: bool) {
    let mut config = ClusterConfig::reliable(seed, 5);
    if unreliable {
        config.network = NetworkFaults::unreliable();
    }
    let mut harness = Harness::with_config(config);
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let mut committed_values = Vec::new();
    let mut proposed: std::collections::BTreeMap<u64, u64> = Default::default();
    for _round in 0..20 {
        for _ in 0..10 {
            // Three clients each try a random node.
            for _client in 0..3 {
                let ids = harness.ids();
                let id = ids[random.gen_range(0..ids.len())];
                let value = random.gen_range(0..1_000_000_000);
                let operation_before = next_operation(&mut harness);
                if harness.start(id, value).is_some() {
                    proposed.insert(operation_before, value);
                }
            }
            harness.run_for(10 * MILLIS);
            for operation in harness.take_committed_operations() {
                if let Some(value) = proposed.get(&operation) {
                    committed_values.push(*value);
                }
            }
        }
        let ids = harness.ids();
        let id = ids[random.gen_range(0..ids.len())];
        match random.gen_range(0..4) {
            0 => harness.disconnect(id),
            1 => harness.connect(id),
            2 => harness.crash(id),
            _ => harness.restart(id),
        }
        let down = ids.iter().filter(|id| !harness.is_up(**id)).count();
        if down > 2 {
            for id in ids {
                harness.connect(id);
                harness.restart(id);
            }
        }
    }
    harness.set_unreliable(false);
    for id in harness.ids() {
        harness.connect(id);
        harness.restart(id);
    }
    harness.run_for(SECONDS);
    let last = harness.one(7, 5, true);
    harness.wait(last, 5, None);
    let finals: Vec<String> = harness
        .ids()
        .into_iter()
        .map(|id| harness.value_at(id).expect("every node runs"))
        .collect();
    assert!(
        finals.windows(2).all(|pair| pair[0] == pair[1]),
        "nodes disagree"
    );
    let final_values: Vec<&str> = finals[0].split(';').collect();
    assert!(!committed_values.is_empty(), "the churn committed nothing");
    for value in committed_values {
        let occurrences = final_values
            .iter()
            .filter(|v| **v == value.to_string())
            .count();
        assert_eq!(
            occurrences, 1,
            "committed value {value} appears {occurrences} times"
        );
    }
    harness.assert_safe();
}

/// The operation number the harness will give its next command.
fn next_operation(harness: &mut Harness) -> u64 {
    harness.peek_next_operation()
}
