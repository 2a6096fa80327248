//! Log replication (§5.3), the commit rule (§5.4.2), persistence ordering
//! (Figure 2, dissertation §10.2.1), pipelining and fast back-up.

use super::fixtures::*;
use super::harness::*;
use crate::{Command, ConflictHint, Entry, EntryPayload, HardState, MessageBody, RaftError, Role};
use bytes::Bytes;
use understudy_types::{limits, LogIndex, NodeId, Term};

fn entry(index: u64, term: u64, payload: &'static [u8]) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::from_static(payload)),
    }
}

fn append(previous: (u64, u64), entries: Vec<Entry>, leader_commit: u64) -> MessageBody {
    MessageBody::AppendRequest {
        previous_log_index: LogIndex(previous.0),
        previous_log_term: Term(previous.1),
        entries,
        leader_commit: LogIndex(leader_commit),
        heartbeat_round: 1,
    }
}

fn success(match_index: u64) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        match_index: LogIndex(match_index),
        conflict: None,
        heartbeat_round: 1,
    }
}

/// §5.3: every follower applies exactly what the leader committed, in order.
#[test]
fn followers_apply_what_the_leader_commits() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    for _ in 0..20 {
        cluster.propose(leader, b"command");
    }
    cluster.run(4);
    let commit = cluster.node(leader).status().commit_index;
    assert!(commit >= LogIndex(21), "20 commands and the empty entry");
    for id in ids(3) {
        assert_eq!(cluster.applied_index(id), commit);
    }
}

/// §5.4.2 and §8: a new leader appends an empty entry of its term at once.
#[test]
fn a_new_leader_appends_an_empty_entry() {
    let leader = leader(&[1, 2, 3]);
    let status = leader.status();
    let empty = leader.entry(status.last_index).expect("the entry");
    assert_eq!(empty.payload, EntryPayload::Empty);
    assert_eq!(empty.term, status.term);
}

/// Figure 2 with asynchronous persistence: a follower acknowledges entries
/// only once they are durable.
#[test]
fn an_append_is_acknowledged_only_once_durable() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(
        1,
        2,
        1,
        append((0, 0), vec![entry(1, 1, b"a"), entry(2, 1, b"b")], 0),
    ));
    let commands = follower.take_commands();
    assert!(
        sends(&commands).is_empty(),
        "no acknowledgement yet: {commands:?}"
    );
    let id = last_persist_id(&commands).expect("entries persisted");
    assert_eq!(follower.status().persisted_index, LogIndex(0));
    follower.handle_persisted(id);
    assert_eq!(follower.status().persisted_index, LogIndex(2));
    assert_eq!(
        sends(&follower.take_commands()),
        vec![message(2, 1, 1, success(2))]
    );
}

/// Dissertation §10.2.1: the leader sends entries to followers in parallel with
/// its own write, but counts itself toward the commit quorum only up to its
/// persisted index.
#[test]
fn the_leader_counts_itself_only_up_to_its_persisted_index() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    // Both followers confirm the empty entry, so they are replicating.
    let last = leader.status().last_index.0;
    leader.step(message(2, 1, term, success(last)));
    leader.step(message(3, 1, term, success(last)));
    leader.take_commands();
    let (index, _) = leader.propose(Bytes::from_static(b"x")).expect("accepted");
    let commands = leader.take_commands();
    let id = last_persist_id(&commands).expect("the entry is persisted");
    assert_eq!(sends(&commands).len(), 2, "sent before the write completes");
    leader.step(message(2, 1, term, success(index.0)));
    assert!(
        leader.status().commit_index < index,
        "own copy not durable yet"
    );
    leader.handle_persisted(id);
    assert_eq!(leader.status().commit_index, index);
    let applied = leader.take_commands();
    assert!(applied
        .iter()
        .any(|command| matches!(command, Command::Apply(entries)
        if entries.last().map(|entry| entry.index) == Some(index))));
}

/// §5.4.2 (Figure 8): an entry of an earlier term is not committed by counting
/// replicas, only together with an entry of the current term.
#[test]
fn an_earlier_terms_entry_is_not_committed_by_counting() {
    let mut cluster = Cluster::new(3);
    // Node 1 holds an entry of term 1 that nobody else has; it then leads term 2.
    let storage = cluster.storage.get_mut(&NodeId(1)).expect("storage");
    storage.hard_state = HardState {
        term: Term(1),
        voted_for: None,
    };
    storage.entries = vec![entry(1, 1, b"old")];
    cluster.crash(NodeId(1));
    cluster.restart(NodeId(1));
    let mut leader = cluster.nodes.remove(&NodeId(1)).expect("node 1");
    let commands = tick_until(&mut leader, Role::PreCandidate);
    let _ = commands;
    leader.step(message(
        2,
        1,
        2,
        MessageBody::PreVoteResponse { granted: true },
    ));
    let commands = leader.take_commands();
    persist_all(&mut leader, &commands);
    leader.step(message(
        2,
        1,
        2,
        MessageBody::VoteResponse { granted: true },
    ));
    let commands = leader.take_commands();
    persist_all(&mut leader, &commands);
    assert_eq!(leader.status().role, Role::Leader);
    assert_eq!(
        leader.status().last_index,
        LogIndex(2),
        "old entry + empty entry"
    );
    // Node 2 acknowledges only the old entry: it is on a majority but of term 1.
    leader.step(message(2, 1, 2, success(1)));
    assert_eq!(leader.status().commit_index, LogIndex(0));
    // Once the term-2 entry is on a majority, both commit.
    leader.step(message(2, 1, 2, success(2)));
    assert_eq!(leader.status().commit_index, LogIndex(2));
}

/// §5.3 (accelerated back-up): a follower with 60 conflicting entries is
/// repaired in a few round trips, one per conflicting term, not one per entry.
#[test]
fn a_divergent_follower_is_repaired_in_a_few_round_trips() {
    let mut cluster = Cluster::new(3);
    let shared: Vec<Entry> = (1..=10).map(|index| entry(index, 1, b"shared")).collect();
    let mut leader_log = shared.clone();
    leader_log.extend((11..=80).map(|index| entry(index, 3, b"leader")));
    let mut follower_log = shared;
    follower_log.extend((11..=70).map(|index| entry(index, 2, b"stale")));
    for (id, term, log) in [
        (1, 3, &leader_log),
        (2, 2, &follower_log),
        (3, 3, &leader_log),
    ] {
        let storage = cluster.storage.get_mut(&NodeId(id)).expect("storage");
        storage.hard_state = HardState {
            term: Term(term),
            voted_for: None,
        };
        storage.entries = log.clone();
        cluster.crash(NodeId(id));
        cluster.restart(NodeId(id));
    }
    cluster.elect(NodeId(1));
    cluster.run(4);
    let rejections = cluster
        .sent
        .iter()
        .filter(|message| {
            message.from == NodeId(2)
                && matches!(
                    message.body,
                    MessageBody::AppendResponse { success: false, .. }
                )
        })
        .count();
    assert!(rejections <= 3, "{rejections} rejections");
    let leader_status = cluster.node(NodeId(1)).status();
    assert_eq!(
        cluster.node(NodeId(2)).status().last_index,
        leader_status.last_index
    );
    for index in 11..=leader_status.last_index.0 {
        assert_eq!(
            cluster.node(NodeId(2)).entry(LogIndex(index)),
            cluster.node(NodeId(1)).entry(LogIndex(index))
        );
    }
}

/// §5.3: the conflict hint names the follower's conflicting term and the first
/// index it holds in that term.
#[test]
fn a_rejection_carries_the_conflicting_term_and_its_first_index() {
    let mut follower = node(2, &[1, 2, 3]);
    let entries = vec![
        entry(1, 1, b"a"),
        entry(2, 2, b"b"),
        entry(3, 2, b"c"),
        entry(4, 2, b"d"),
    ];
    follower.step(message(1, 2, 2, append((0, 0), entries, 0)));
    follower.take_commands();
    follower.step(message(3, 2, 3, append((4, 3), Vec::new(), 0)));
    let rejection = sends(&follower.take_commands());
    assert_eq!(
        rejection[0].body,
        MessageBody::AppendResponse {
            success: false,
            match_index: LogIndex(4),
            conflict: Some(ConflictHint {
                term: Term(2),
                first_index: LogIndex(2)
            }),
            heartbeat_round: 1,
        }
    );
}

/// §5.3: a duplicated or reordered old append never truncates newer entries.
#[test]
fn a_stale_append_does_not_truncate() {
    let mut follower = node(2, &[1, 2, 3]);
    let all = vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")];
    follower.step(message(1, 2, 1, append((0, 0), all, 0)));
    let commands = follower.take_commands();
    persist_all(&mut follower, &commands);
    follower.step(message(1, 2, 1, append((0, 0), vec![entry(1, 1, b"a")], 0)));
    let commands = follower.take_commands();
    assert!(
        last_persist_id(&commands).is_none(),
        "nothing new to persist"
    );
    assert_eq!(follower.status().last_index, LogIndex(3));
    assert_eq!(sends(&commands), vec![message(2, 1, 1, success(1))]);
}

/// Figure 2 step 5: a follower's commit index is bounded by the last entry the
/// request verified, not by its own (possibly stale) last index.
#[test]
fn a_followers_commit_is_bounded_by_the_verified_prefix() {
    let mut follower = node(2, &[1, 2, 3]);
    let stale = vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")];
    follower.step(message(1, 2, 1, append((0, 0), stale, 0)));
    let commands = follower.take_commands();
    persist_all(&mut follower, &commands);
    follower.step(message(3, 2, 2, append((1, 1), Vec::new(), 9)));
    assert_eq!(follower.status().commit_index, LogIndex(1));
}

/// A persistence id completed after a truncation does not mark the replacing
/// entries durable, and the acknowledgement waits for the replacing write.
#[test]
fn a_truncation_is_not_covered_by_an_older_persist_id() {
    let mut follower = node(2, &[1, 2, 3]);
    let first = vec![entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")];
    follower.step(message(1, 2, 1, append((0, 0), first, 0)));
    let old_id = last_persist_id(&follower.take_commands()).expect("persist");
    follower.step(message(
        3,
        2,
        2,
        append((1, 1), vec![entry(2, 2, b"new")], 0),
    ));
    let commands = follower.take_commands();
    let new_id = last_persist_id(&commands).expect("persist");
    assert!(sends(&commands).is_empty());
    follower.handle_persisted(old_id);
    assert_eq!(
        follower.status().persisted_index,
        LogIndex(1),
        "index 2 was replaced"
    );
    let commands = follower.take_commands();
    assert!(sends(&commands)
        .iter()
        .all(|message| message.to != NodeId(3)));
    follower.handle_persisted(new_id);
    assert_eq!(follower.status().persisted_index, LogIndex(2));
    assert_eq!(
        sends(&follower.take_commands()),
        vec![message(2, 3, 2, success(2))]
    );
}

/// Pipelining: a replicating follower gets up to `inflight_appends_max`
/// appends without waiting for answers, then the leader waits.
#[test]
fn appends_are_pipelined_up_to_the_inflight_limit() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    let last = leader.status().last_index.0;
    // Follower 2 confirms the match point: it switches to replicating.
    leader.step(message(2, 1, term, success(last)));
    leader.take_commands();
    let inflight_max = leader.config().inflight_appends_max;
    let mut to_follower = 0;
    for _ in 0..inflight_max + 3 {
        leader.propose(Bytes::from_static(b"p")).expect("accepted");
        to_follower += sends(&leader.take_commands())
            .iter()
            .filter(|message| message.to == NodeId(2))
            .count();
    }
    assert_eq!(to_follower, inflight_max);
    // One acknowledgement frees the pipeline; the rest goes in one batch.
    leader.step(message(2, 1, term, success(last + 1)));
    let batch = sends(&leader.take_commands());
    let MessageBody::AppendRequest { entries, .. } = &batch[0].body else {
        panic!("expected an append, got {batch:?}");
    };
    assert_eq!(entries.len(), 3);
}

/// Lost appends are retransmitted: a follower cut off during proposals catches
/// up once the link heals.
#[test]
fn a_follower_catches_up_after_lost_appends() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    let follower = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.cut.insert((leader, follower));
    for _ in 0..30 {
        cluster.propose(leader, b"while cut");
    }
    cluster.heal();
    cluster.run(20);
    let commit = cluster.node(leader).status().commit_index;
    assert_eq!(cluster.applied_index(follower), commit);
}

/// Proposals are refused off the leader (with a hint), when too large, and
/// beyond the uncommitted limit.
#[test]
fn proposals_are_refused_with_a_reason() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(1, 2, 1, append((0, 0), Vec::new(), 0)));
    assert_eq!(
        follower.propose(Bytes::from_static(b"x")),
        Err(RaftError::NotLeader {
            leader_hint: Some(NodeId(1))
        })
    );
    let mut leader = leader(&[1, 2, 3]);
    let too_large = Bytes::from(vec![0u8; limits::RAFT_ENTRY_BYTES_MAX as usize + 1]);
    assert!(matches!(
        leader.propose(too_large),
        Err(RaftError::EntryTooLarge { .. })
    ));
    let uncommitted_max = leader.config().uncommitted_entries_max;
    let mut refused = None;
    for attempt in 0..uncommitted_max + 1 {
        if let Err(error) = leader.propose(Bytes::from_static(b"x")) {
            refused = Some((attempt, error));
            break;
        }
    }
    let (attempt, error) = refused.expect("the limit applies");
    assert!(matches!(error, RaftError::TooManyUncommitted { .. }));
    assert!(attempt < uncommitted_max, "the empty entry counts too");
}
