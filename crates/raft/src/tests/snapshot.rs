//! Log compaction and InstallSnapshot (§7, Figure 13), sent in chunks.

use super::fixtures::*;
use super::harness::*;
use crate::{Command, Entry, EntryPayload, Membership, MessageBody, SnapshotMeta};
use bytes::Bytes;
use understudy_types::{LogIndex, NodeId, Term};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from_static(b"e")),
    }
}

fn chunk(
    last_index: u64,
    last_term: u64,
    offset: u64,
    total: u64,
    data: &'static [u8],
) -> MessageBody {
    MessageBody::SnapshotChunk {
        meta: SnapshotMeta {
            last_index: LogIndex(last_index),
            last_term: Term(last_term),
            membership: Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]),
        },
        offset,
        total_bytes: total,
        data: Bytes::from_static(data),
    }
}

fn snapshot_response(last_index: u64, next_offset: u64, installed: bool) -> MessageBody {
    MessageBody::SnapshotResponse {
        last_index: LogIndex(last_index),
        next_offset,
        installed,
    }
}

/// A follower holding entries 1..=6 of term 1, all durable.
fn follower_with_six_entries() -> crate::RaftNode {
    let mut follower = node(2, &[1, 2, 3]);
    let entries = (1..=6).map(|index| entry(index, 1)).collect();
    follower.step(message(
        1,
        2,
        1,
        MessageBody::AppendRequest {
            previous_log_index: LogIndex(0),
            previous_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0),
            heartbeat_round: 1,
        },
    ));
    let commands = follower.take_commands();
    persist_all(&mut follower, &commands);
    follower
}

/// §7: a follower that fell behind the leader's snapshot receives it in chunks
/// no larger than `snapshot_chunk_bytes_max`, installs it, and applies the
/// entries after it.
#[test]
fn a_lagging_follower_receives_the_snapshot_in_chunks() {
    let configs = (1..=3)
        .map(|id| {
            let mut config = config(id);
            config.snapshot_chunk_bytes_max = 5;
            config
        })
        .collect();
    let mut cluster = Cluster::with_configs(configs);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    let lagging = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.isolate(lagging);
    for _ in 0..20 {
        cluster.propose(leader, b"before the snapshot");
    }
    cluster.run(2);
    cluster.compact(leader);
    let snapshot_index = cluster.node(leader).snapshot_meta().last_index;
    assert!(snapshot_index >= LogIndex(20));
    cluster.heal();
    cluster.propose(leader, b"after the snapshot");
    cluster.run(10);
    let chunks: Vec<_> = cluster
        .sent
        .iter()
        .filter_map(|message| match &message.body {
            MessageBody::SnapshotChunk { data, .. } if message.to == lagging => Some(data.len()),
            _ => None,
        })
        .collect();
    assert!(chunks.len() >= 4, "16 bytes in chunks of 5: {chunks:?}");
    assert!(chunks.iter().all(|bytes| *bytes <= 5));
    assert_eq!(cluster.snapshots_installed, 1);
    let status = cluster.node(lagging).status();
    assert_eq!(
        status.commit_index,
        cluster.node(leader).status().commit_index
    );
    assert_eq!(cluster.applied_index(lagging), status.commit_index);
    assert_eq!(
        cluster.node(lagging).snapshot_meta().last_index,
        snapshot_index
    );
}

/// Figure 13 step 6: a follower whose log holds the snapshot's last entry with
/// the same term keeps the entries after it.
#[test]
fn an_install_keeps_a_matching_suffix() {
    let mut follower = follower_with_six_entries();
    follower.step(message(1, 2, 1, chunk(3, 1, 0, 4, b"data")));
    let commands = follower.take_commands();
    let install = commands
        .iter()
        .find(|command| matches!(command, Command::InstallSnapshot { .. }))
        .expect("an install");
    let Command::InstallSnapshot {
        meta,
        keep_entries_after,
        ..
    } = install
    else {
        unreachable!("matched above");
    };
    assert!(keep_entries_after);
    assert_eq!(meta.last_index, LogIndex(3));
    assert_eq!(follower.first_index(), LogIndex(4));
    assert_eq!(follower.status().last_index, LogIndex(6));
    assert_eq!(follower.status().applied_index, LogIndex(3));
}

/// Figure 13 step 7: otherwise the whole log is discarded.
#[test]
fn an_install_discards_a_conflicting_log() {
    let mut follower = follower_with_six_entries();
    follower.step(message(3, 2, 2, chunk(3, 2, 0, 4, b"data")));
    let commands = follower.take_commands();
    assert!(commands.iter().any(|command| matches!(
        command,
        Command::InstallSnapshot {
            keep_entries_after: false,
            ..
        }
    )));
    assert_eq!(follower.status().last_index, LogIndex(3));
    assert_eq!(follower.entry(LogIndex(4)), None);
}

/// Persistence ordering: `installed: true` is sent only once the install is
/// durable, and later applies continue after the snapshot.
#[test]
fn installed_is_answered_only_once_durable() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(1, 2, 1, chunk(5, 1, 0, 4, b"data")));
    let commands = follower.take_commands();
    assert!(sends(&commands).is_empty(), "{commands:?}");
    let id = last_persist_id(&commands).expect("an install");
    follower.handle_persisted(id);
    assert_eq!(
        sends(&follower.take_commands()),
        vec![message(2, 1, 1, snapshot_response(5, 4, true))]
    );
    follower.step(message(
        1,
        2,
        1,
        MessageBody::AppendRequest {
            previous_log_index: LogIndex(5),
            previous_log_term: Term(1),
            entries: vec![entry(6, 1)],
            leader_commit: LogIndex(6),
            heartbeat_round: 2,
        },
    ));
    let commands = follower.take_commands();
    assert!(commands
        .iter()
        .any(|command| matches!(command, Command::Apply(entries)
        if entries.first().map(|entry| entry.index) == Some(LogIndex(6)))));
}

/// Chunks are accepted only at the expected offset; anything else is answered
/// with the offset the follower wants, and a duplicate is not appended twice.
#[test]
fn chunks_are_accepted_only_in_order() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(1, 2, 1, chunk(5, 1, 4, 8, b"tail")));
    assert_eq!(
        sends(&follower.take_commands()),
        vec![message(2, 1, 1, snapshot_response(5, 0, false))]
    );
    follower.step(message(1, 2, 1, chunk(5, 1, 0, 8, b"head")));
    assert_eq!(
        sends(&follower.take_commands()),
        vec![message(2, 1, 1, snapshot_response(5, 4, false))]
    );
    follower.step(message(1, 2, 1, chunk(5, 1, 0, 8, b"head")));
    assert_eq!(
        sends(&follower.take_commands()),
        vec![message(2, 1, 1, snapshot_response(5, 4, false))]
    );
    follower.step(message(1, 2, 1, chunk(5, 1, 4, 8, b"tail")));
    let commands = follower.take_commands();
    let data = commands.iter().find_map(|command| match command {
        Command::InstallSnapshot { data, .. } => Some(data.clone()),
        _ => None,
    });
    assert_eq!(data, Some(Bytes::from_static(b"headtail")));
}

/// A chunk whose claimed size exceeds the limits is dropped as malformed.
#[test]
fn an_oversized_chunk_is_dropped() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(
        1,
        2,
        1,
        chunk(
            5,
            1,
            0,
            understudy_types::limits::SNAPSHOT_BYTES_MAX + 1,
            b"x",
        ),
    ));
    assert!(follower.take_commands().is_empty());
    assert_eq!(follower.status().term, Term(0));
}

/// The leader restarts a stream from offset 0 when its snapshot changes.
#[test]
fn the_stream_restarts_when_the_leaders_snapshot_changes() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    let commit_all = |leader: &mut crate::RaftNode| {
        let last = leader.status().last_index.0;
        leader.step(message(
            2,
            1,
            term,
            MessageBody::AppendResponse {
                success: true,
                match_index: LogIndex(last),
                conflict: None,
                heartbeat_round: 0,
            },
        ));
        leader.take_commands();
    };
    leader.propose(Bytes::from_static(b"a")).expect("accepted");
    let commands = leader.take_commands();
    persist_all(&mut leader, &commands);
    commit_all(&mut leader);
    let first = leader.status().commit_index;
    leader.compact(first, Bytes::from_static(b"first snapshot"));
    // Node 3 turns out to have nothing: it must get the snapshot.
    leader.step(message(
        3,
        1,
        term,
        MessageBody::AppendResponse {
            success: false,
            match_index: LogIndex(0),
            conflict: None,
            heartbeat_round: 0,
        },
    ));
    let chunks = sends(&leader.take_commands());
    assert!(
        matches!(&chunks[0].body, MessageBody::SnapshotChunk { meta, offset: 0, .. }
        if meta.last_index == first)
    );
    leader.propose(Bytes::from_static(b"b")).expect("accepted");
    let commands = leader.take_commands();
    persist_all(&mut leader, &commands);
    commit_all(&mut leader);
    let second = leader.status().commit_index;
    leader.compact(second, Bytes::from_static(b"second snapshot"));
    leader.step(message(3, 1, term, snapshot_response(first.0, 3, false)));
    let chunks = sends(&leader.take_commands());
    assert!(
        matches!(&chunks[0].body, MessageBody::SnapshotChunk { meta, offset: 0, .. }
        if meta.last_index == second),
        "{chunks:?}"
    );
}

/// §7: the application may only compact what it has applied.
#[test]
#[should_panic(expected = "beyond the applied index")]
fn compaction_beyond_the_applied_index_is_a_programming_error() {
    let mut follower = follower_with_six_entries();
    follower.compact(LogIndex(2), Bytes::new());
}
