//! Linearizable reads with ReadIndex (dissertation §6.4).

use super::fixtures::*;
use super::harness::*;
use crate::{Command, MessageBody};
use bytes::Bytes;
use understudy_types::{LogIndex, NodeId};

fn answer(round: u64, match_index: LogIndex) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        match_index,
        conflict: None,
        heartbeat_round: round,
    }
}

/// The latest heartbeat round among the appends in `commands`.
fn heartbeat_round_of(commands: &[Command]) -> u64 {
    sends(commands)
        .iter()
        .filter_map(|message| match message.body {
            MessageBody::AppendRequest {
                heartbeat_round, ..
            } => Some(heartbeat_round),
            _ => None,
        })
        .max()
        .expect("a heartbeat")
}

/// §6.4: a read waits until the leader's first entry of its term commits, then
/// for a quorum to echo a heartbeat round started after the read.
#[test]
fn a_read_waits_for_the_terms_first_commit_and_a_quorum() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    let empty_entry = leader.status().last_index;
    leader.read_index(7);
    assert!(
        leader.take_commands().is_empty(),
        "queued until the term commits"
    );
    leader.step(message(2, 1, term, answer(0, empty_entry)));
    let commands = leader.take_commands();
    assert_eq!(leader.status().commit_index, empty_entry);
    let round = heartbeat_round_of(&commands);
    assert!(!commands
        .iter()
        .any(|command| matches!(command, Command::ReadReady { .. })));
    // An echo of an older round does not confirm the read.
    leader.step(message(3, 1, term, answer(round - 1, empty_entry)));
    assert!(!leader
        .take_commands()
        .iter()
        .any(|command| matches!(command, Command::ReadReady { .. })));
    leader.step(message(3, 1, term, answer(round, empty_entry)));
    let commands = leader.take_commands();
    assert!(commands.contains(&Command::ReadReady {
        context: 7,
        index: empty_entry
    }));
}

/// §6.4: a single-voter group serves a read at once (after its first commit).
#[test]
fn a_single_voter_answers_at_once() {
    let mut leader = leader(&[1]);
    let commit = leader.status().commit_index;
    assert_eq!(
        commit,
        leader.status().last_index,
        "the empty entry committed alone"
    );
    leader.read_index(3);
    assert_eq!(
        leader.take_commands(),
        vec![Command::ReadReady {
            context: 3,
            index: commit
        }]
    );
}

/// §6.4: a follower cannot serve a linearizable read; it names the leader.
#[test]
fn a_follower_fails_a_read_with_a_hint() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    let follower = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.node_mut(follower).read_index(11);
    assert_eq!(
        cluster.node_mut(follower).take_commands(),
        vec![Command::ReadFailed {
            context: 11,
            leader_hint: Some(leader)
        }]
    );
}

/// §6.4: reads pending on a leader that steps down fail.
#[test]
fn pending_reads_fail_when_the_leader_steps_down() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    leader.read_index(5);
    leader.step(message(2, 1, term + 1, MessageBody::TimeoutNow));
    let commands = leader.take_commands();
    assert!(commands.contains(&Command::ReadFailed {
        context: 5,
        leader_hint: Some(NodeId(2))
    }));
}

/// §6.4 in a running cluster: a read asked after a write commits returns an
/// index covering it.
#[test]
fn a_read_covers_every_earlier_write() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    let (index, _) = cluster.propose(leader, b"write");
    cluster.run(2);
    assert!(cluster.node(leader).status().commit_index >= index);
    cluster.node_mut(leader).read_index(1);
    cluster.process(leader);
    cluster.deliver_all();
    let ready = cluster.reads.iter().find_map(|(_, command)| match command {
        Command::ReadReady { context: 1, index } => Some(*index),
        _ => None,
    });
    assert!(
        ready.is_some_and(|read_index| read_index >= index),
        "{:?}",
        cluster.reads
    );
    let _ = Bytes::new();
}
