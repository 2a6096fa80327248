//! The MIT 6.5840 Raft lab's snapshot scenarios (test 3D), re-expressed over the
//! deterministic simulator: nodes snapshot every 10 entries, and followers that
//! fall behind catch up through InstallSnapshot.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use understudy_sim::cluster::ClusterConfig;
use understudy_sim::harness::{Harness, SECONDS};
use understudy_sim::network::NetworkFaults;
use understudy_types::NodeId;

const SNAPSHOT_THRESHOLD_ENTRIES: u64 = 10;

fn snapshotting_harness(seed: u64, nodes: usize, unreliable: bool) -> Harness {
    let mut config = ClusterConfig::reliable(seed, nodes);
    config.snapshot_threshold_entries = SNAPSHOT_THRESHOLD_ENTRIES;
    if unreliable {
        config.network = NetworkFaults::unreliable();
    }
    Harness::with_config(config)
}

/// The in-memory Raft log of every running node stays short: snapshots compact it.
fn assert_logs_compacted(harness: &Harness) {
    for id in harness.ids() {
        if let Some(raft) = harness.cluster.raft(id) {
            let held = raft.status().last_index.get() + 1 - raft.first_index().get();
            assert!(
                held <= 4 * SNAPSHOT_THRESHOLD_ENTRIES,
                "{id} holds {held} entries despite snapshots every {SNAPSHOT_THRESHOLD_ENTRIES}"
            );
        }
    }
}

/// Lab 3D "TestSnapshotBasic3D" and the install tests: a follower that is
/// disconnected or crashed while the others move on by many snapshots catches up
/// through InstallSnapshot; logs stay short throughout.
fn snapshot_install(seed: u64, disconnect: bool, unreliable: bool, crash: bool) {
    let mut harness = snapshotting_harness(seed, 3, unreliable);
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    harness.one(random.gen(), 3, true);
    let mut leader = harness.check_one_leader();
    for iteration in 0..12 {
        // Every third round the leader itself falls behind.
        let victim = if iteration % 3 == 0 {
            leader
        } else {
            NodeId(leader.get() % 3 + 1)
        };
        if disconnect {
            harness.disconnect(victim);
            harness.one(random.gen(), 2, true);
        }
        if crash {
            harness.crash(victim);
            harness.one(random.gen(), 2, true);
        }
        // Enough entries that the others snapshot past the victim's log.
        for _ in 0..=SNAPSHOT_THRESHOLD_ENTRIES {
            let ids = harness.ids();
            for id in ids {
                if harness.is_up(id) && harness.start(id, random.gen()).is_some() {
                    break;
                }
            }
        }
        harness.one(random.gen(), 2, true);
        if disconnect {
            harness.connect(victim);
        }
        if crash {
            harness.restart(victim);
        }
        harness.one(random.gen(), 3, true);
        assert_logs_compacted(&harness);
        leader = harness.check_one_leader();
    }
    assert!(
        harness.cluster.stats.snapshots_installed > 0,
        "no follower ever needed a snapshot"
    );
    harness.assert_safe();
}

/// Lab 3D "TestSnapshotBasic3D": snapshots every 10 entries keep logs short.
#[test]
fn snapshot_basic() {
    let mut harness = snapshotting_harness(51, 3, false);
    let mut random = ChaCha8Rng::seed_from_u64(51);
    for _ in 0..60 {
        harness.one(random.gen(), 3, true);
        assert_logs_compacted(&harness);
    }
    assert!(harness.cluster.stats.snapshots_taken > 0);
    harness.assert_safe();
}

/// Lab 3D "TestSnapshotInstall3D": a disconnected follower catches up by snapshot.
#[test]
fn snapshot_install_to_lagging_follower() {
    snapshot_install(52, true, false, false);
}

/// Lab 3D "TestSnapshotInstallUnreliable3D": the same over an unreliable network.
#[test]
fn snapshot_install_unreliable() {
    snapshot_install(53, true, true, false);
}

/// Lab 3D "TestSnapshotInstallCrash3D": the follower crashes instead.
#[test]
fn snapshot_install_across_crashes() {
    snapshot_install(54, false, false, true);
}

/// Lab 3D "TestSnapshotInstallUnCrash3D": crashes over an unreliable network.
#[test]
fn snapshot_install_unreliable_across_crashes() {
    snapshot_install(55, false, true, true);
}

/// Lab 3D "TestSnapshotAllCrash3D": every node crashes and restarts from its
/// snapshot; the applied index never goes backwards past a snapshot.
#[test]
fn restart_of_all_nodes_from_snapshots() {
    let mut harness = snapshotting_harness(56, 3, false);
    let mut random = ChaCha8Rng::seed_from_u64(56);
    harness.one(random.gen(), 3, true);
    for _ in 0..5 {
        for _ in 0..=SNAPSHOT_THRESHOLD_ENTRIES + 1 {
            harness.one(random.gen(), 3, true);
        }
        let index_before = harness.one(random.gen(), 3, true);
        for id in harness.ids() {
            harness.crash(id);
        }
        for id in harness.ids() {
            harness.restart(id);
            let node = harness.cluster.node(id).expect("exists");
            let applied = node.applied_index().expect("restarted");
            let snapshot = harness
                .cluster
                .raft(id)
                .expect("up")
                .snapshot_meta()
                .last_index;
            assert_eq!(
                applied, snapshot,
                "{id} restarts applied up to its snapshot"
            );
            assert!(snapshot.get() > 0, "{id} restarted without its snapshot");
        }
        let index_after = harness.one(random.gen(), 3, true);
        assert!(index_after > index_before, "the log went backwards");
    }
    assert!(harness.cluster.stats.snapshots_taken > 0);
    harness.assert_safe();
}

/// Lab 3D "TestSnapshotInit3D": a snapshot survives two crash-all cycles.
#[test]
fn snapshot_survives_repeated_restarts() {
    let mut harness = snapshotting_harness(57, 3, false);
    let mut random = ChaCha8Rng::seed_from_u64(57);
    for _ in 0..=SNAPSHOT_THRESHOLD_ENTRIES + 1 {
        harness.one(random.gen(), 3, true);
    }
    for _ in 0..2 {
        for id in harness.ids() {
            harness.crash(id);
        }
        for id in harness.ids() {
            harness.restart(id);
        }
        harness.run_for(SECONDS);
        harness.one(random.gen(), 3, true);
    }
    harness.assert_safe();
}
