//! The MIT 6.5840 Raft lab's election and agreement scenarios (tests 3A and 3B),
//! re-expressed over the deterministic simulator. Each test names the lab test it
//! follows; every test also fails on any invariant violation the checker saw.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use understudy_sim::harness::{Harness, MILLIS, SECONDS};
use understudy_types::{LogIndex, NodeId};

fn others(harness: &Harness, id: NodeId) -> Vec<NodeId> {
    harness
        .ids()
        .into_iter()
        .filter(|other| *other != id)
        .collect()
}

/// Lab 3A "TestInitialElection3A": a leader is elected, all nodes agree on a term
/// of at least 1, and the term stays put through 2 s of quiet.
#[test]
fn initial_election() {
    let mut harness = Harness::new(3, 1);
    harness.check_one_leader();
    let term = harness.check_terms();
    assert!(
        term.get() >= 1,
        "the first election happens in term 1 or later"
    );
    harness.run_for(2 * SECONDS);
    assert_eq!(
        harness.check_terms(),
        term,
        "no term change without failures"
    );
    harness.check_one_leader();
    harness.assert_safe();
}

/// Lab 3A "TestReElection3A": a new leader after the leader is disconnected; the
/// old leader rejoining does not disturb it; no leader without a quorum; a leader
/// again once a quorum returns.
#[test]
fn re_election_after_leader_loss_and_rejoin() {
    let mut harness = Harness::new(3, 2);
    let leader1 = harness.check_one_leader();
    harness.disconnect(leader1);
    let leader2 = harness.check_one_leader();
    assert_ne!(leader1, leader2);
    harness.connect(leader1);
    let leader3 = harness.check_one_leader();
    assert_eq!(
        leader3, leader2,
        "a rejoining old leader must not disturb the new one"
    );

    let other = others(&harness, leader3)[0];
    harness.disconnect(leader3);
    harness.disconnect(other);
    harness.run_for(2 * SECONDS);
    harness.check_no_leader();
    harness.connect(other);
    harness.check_one_leader();
    harness.connect(leader3);
    harness.check_one_leader();
    harness.assert_safe();
}

/// Lab 3A "TestManyElections3A": 7 nodes, rounds of disconnecting 3 at random:
/// exactly one leader each round.
#[test]
fn many_elections_with_seven_nodes() {
    let mut harness = Harness::new(7, 3);
    let mut random = ChaCha8Rng::seed_from_u64(3);
    harness.check_one_leader();
    for _ in 0..10 {
        let mut ids = harness.ids();
        ids.shuffle(&mut random);
        let victims = &ids[..3];
        for id in victims {
            harness.disconnect(*id);
        }
        harness.check_one_leader();
        for id in victims {
            harness.connect(*id);
        }
    }
    harness.check_one_leader();
    harness.assert_safe();
}

/// Lab 3B "TestBasicAgree3B": nothing is committed before the first proposal;
/// proposals commit at consecutive indexes. Our leader's first entry of its term
/// is a no-op, so commands start one index later than in the lab.
#[test]
fn basic_agreement() {
    let mut harness = Harness::new(3, 4);
    let leader = harness.check_one_leader();
    let first_command_index = harness
        .cluster
        .raft(leader)
        .expect("up")
        .status()
        .last_index
        .next();
    let (count, _) = harness.n_committed(first_command_index);
    assert_eq!(count, 0, "committed before any proposal");
    for offset in 0..3 {
        let index = harness.one(100 + offset, 3, false);
        assert_eq!(index, LogIndex(first_command_index.get() + offset));
    }
    harness.assert_safe();
}

/// Lab 3B "TestFollowerFailure3B": commits with 2 of 3 up; nothing commits with
/// 1 of 3.
#[test]
fn follower_failure() {
    let mut harness = Harness::new(3, 5);
    harness.one(101, 3, false);
    let leader1 = harness.check_one_leader();
    harness.disconnect(others(&harness, leader1)[0]);
    harness.one(102, 2, false);
    harness.run_for(300 * MILLIS);
    harness.one(103, 2, false);

    let leader2 = harness.check_one_leader();
    for other in others(&harness, leader2) {
        harness.disconnect(other);
    }
    let (index, _, _) = harness.start(leader2, 104).expect("leader2 still leads");
    harness.run_for(2 * SECONDS);
    let (count, _) = harness.n_committed(index);
    assert_eq!(count, 0, "committed {index} without a majority");
    harness.assert_safe();
}

/// Lab 3B "TestLeaderFailure3B": a new leader commits after the leader fails; once
/// a majority is gone nothing commits.
#[test]
fn leader_failure() {
    let mut harness = Harness::new(3, 6);
    harness.one(101, 3, false);
    let leader1 = harness.check_one_leader();
    harness.disconnect(leader1);
    harness.one(102, 2, false);
    harness.run_for(300 * MILLIS);
    harness.one(103, 2, false);

    let leader2 = harness.check_one_leader();
    harness.disconnect(leader2);
    let committed_before = harness.cluster.checker.committed_index();
    let mut proposed = Vec::new();
    for id in harness.ids() {
        if let Some((index, _, fingerprint)) = harness.start(id, 104) {
            proposed.push((index, fingerprint));
        }
    }
    harness.run_for(2 * SECONDS);
    for (index, fingerprint) in proposed {
        let (_, committed) = harness.n_committed(index);
        assert_ne!(committed, Some(fingerprint), "a minority committed {index}");
    }
    assert_eq!(
        harness.cluster.checker.committed_index(),
        committed_before,
        "nothing commits without a majority"
    );
    harness.assert_safe();
}

/// Lab 3B "TestFailAgree3B": a follower that was disconnected catches up when it
/// reconnects.
#[test]
fn agreement_after_follower_reconnects() {
    let mut harness = Harness::new(3, 7);
    harness.one(101, 3, false);
    let leader = harness.check_one_leader();
    let follower = others(&harness, leader)[0];
    harness.disconnect(follower);
    for value in 102..=105 {
        harness.one(value, 2, false);
    }
    harness.run_for(300 * MILLIS);
    harness.connect(follower);
    harness.one(106, 3, true);
    harness.run_for(300 * MILLIS);
    harness.one(107, 3, true);
    harness.assert_safe();
}

/// Lab 3B "TestFailNoAgree3B": with 3 of 5 down nothing commits; after repair the
/// group goes on and the uncommitted proposal's slot is reused or kept.
#[test]
fn no_agreement_without_quorum() {
    let mut harness = Harness::new(5, 8);
    harness.one(10, 5, false);
    let leader = harness.check_one_leader();
    let followers = others(&harness, leader);
    for follower in &followers[..3] {
        harness.disconnect(*follower);
    }
    let (index, _, _) = harness.start(leader, 20).expect("the leader still leads");
    harness.run_for(2 * 300 * MILLIS);
    let (count, _) = harness.n_committed(index);
    assert_eq!(count, 0, "{index} committed with 2 of 5");
    for follower in &followers[..3] {
        harness.connect(*follower);
    }
    let leader2 = harness.check_one_leader();
    let (index2, _, _) = match harness.start(leader2, 30) {
        Some(proposal) => proposal,
        None => {
            let leader3 = harness.check_one_leader();
            harness.start(leader3, 30).expect("a fresh leader accepts")
        }
    };
    assert!(
        index2.get() >= index.get() - 1 && index2.get() <= index.get() + 2,
        "unexpected index {index2} after {index}"
    );
    harness.one(1000, 5, true);
    harness.assert_safe();
}

/// Lab 3B "TestConcurrentStarts3B": proposals made together all commit.
#[test]
fn concurrent_proposals() {
    let mut harness = Harness::new(3, 9);
    let leader = harness.check_one_leader();
    let mut proposals = Vec::new();
    for value in 0..5 {
        proposals.push(
            harness
                .start(leader, 100 + value)
                .expect("the leader accepts"),
        );
    }
    let term = proposals[0].1;
    assert!(proposals
        .iter()
        .all(|(_, proposal_term, _)| *proposal_term == term));
    for (index, _, fingerprint) in proposals {
        let committed = harness.wait(index, 3, Some(term));
        assert_eq!(committed, Some(fingerprint), "proposal at {index} lost");
    }
    harness.assert_safe();
}

/// Lab 3B "TestRejoin3B": a partitioned leader's uncommitted entries are replaced
/// by the majority's when it rejoins.
#[test]
fn rejoin_of_partitioned_leader() {
    let mut harness = Harness::new(3, 10);
    harness.one(101, 3, true);
    let leader1 = harness.check_one_leader();
    harness.disconnect(leader1);
    let stale: Vec<_> = (102..=104)
        .map(|value| {
            harness
                .start(leader1, value)
                .expect("it still thinks it leads")
        })
        .collect();
    harness.one(103, 2, true);
    let leader2 = harness.check_one_leader();
    harness.disconnect(leader2);
    harness.connect(leader1);
    harness.one(104, 2, true);
    harness.connect(leader2);
    harness.one(105, 3, true);
    for (index, _, fingerprint) in stale {
        let (_, committed) = harness.n_committed(index);
        assert_ne!(
            committed,
            Some(fingerprint),
            "a stale leader's entry at {index} survived"
        );
    }
    harness.assert_safe();
}

/// Lab 3B "TestBackup3B": 5 nodes, 50+ conflicting entries on several nodes;
/// divergent logs are repaired quickly, not one entry per round trip.
#[test]
fn fast_backup_over_fifty_conflicting_entries() {
    let mut harness = Harness::new(5, 11);
    let mut random = ChaCha8Rng::seed_from_u64(11);
    harness.one(random.gen(), 5, true);

    // Leader and one follower in a minority; 50 entries that cannot commit.
    let leader1 = harness.check_one_leader();
    let rest = others(&harness, leader1);
    for id in &rest[1..] {
        harness.disconnect(*id);
    }
    for _ in 0..50 {
        harness.start(leader1, random.gen());
    }
    harness.run_for(300 * MILLIS);
    harness.disconnect(leader1);
    harness.disconnect(rest[0]);

    // The other three commit 50 entries of their own.
    for id in &rest[1..] {
        harness.connect(*id);
    }
    for _ in 0..50 {
        harness.one(random.gen(), 3, true);
    }

    // Their leader and one follower go on with 50 more that cannot commit.
    let leader2 = harness.check_one_leader();
    let other = *rest[1..]
        .iter()
        .find(|id| **id != leader2)
        .expect("two others");
    harness.disconnect(other);
    for _ in 0..50 {
        harness.start(leader2, random.gen());
    }
    harness.run_for(300 * MILLIS);

    // The first minority plus `other` must win and overwrite.
    for id in harness.ids() {
        harness.disconnect(id);
    }
    for id in [leader1, rest[0], other] {
        harness.connect(id);
    }
    let rejections_before = rejected_appends(&harness);
    for _ in 0..50 {
        harness.one(random.gen(), 3, true);
    }
    for id in harness.ids() {
        harness.connect(id);
    }
    harness.one(random.gen(), 5, true);
    let rejections = rejected_appends(&harness) - rejections_before;
    assert!(
        rejections < 40,
        "{rejections} rejected appends to repair ~100 divergent entries: back-up is not fast"
    );
    harness.assert_safe();
}

fn rejected_appends(harness: &Harness) -> u64 {
    harness
        .cluster
        .messages_by_kind()
        .get("append_rejection")
        .copied()
        .unwrap_or(0)
}

/// Lab 3B "TestCount3B": few messages for an election and for idle heartbeats.
/// The lab counts RPCs; we count request messages, which is the same thing.
#[test]
fn bounded_message_counts() {
    let mut harness = Harness::new(3, 12);
    harness.check_one_leader();
    let election_requests = request_count(&harness);
    assert!(
        election_requests <= 30,
        "{election_requests} requests to elect a leader and settle"
    );

    let before = request_count(&harness);
    harness.run_for(SECONDS);
    let idle = request_count(&harness) - before;
    assert!(idle <= 60, "{idle} requests in 1 s of idle heartbeats");
    harness.assert_safe();
}

fn request_count(harness: &Harness) -> u64 {
    harness
        .cluster
        .messages_by_kind()
        .iter()
        .filter(|(kind, _)| {
            kind.ends_with("request") || **kind == "snapshot_chunk" || **kind == "timeout_now"
        })
        .map(|(_, count)| *count)
        .sum()
}
