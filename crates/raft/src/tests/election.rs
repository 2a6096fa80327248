//! Leader election (§5.2), pre-vote (dissertation §9.6), check-quorum (§6.2),
//! vote persistence (Figure 2) and group filtering.

use super::fixtures::*;
use super::harness::*;
use crate::{Command, HardState, MessageBody, Role};
use understudy_types::{GroupId, LogIndex, NodeId, Term};

/// §5.2: a cluster elects exactly one leader and everyone follows it.
#[test]
fn three_nodes_elect_one_leader() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    let term = cluster.node(leader).status().term;
    for id in ids(3) {
        let status = cluster.node(id).status();
        assert_eq!(status.term, term);
        assert_eq!(status.leader, Some(leader));
        assert_eq!(status.role == Role::Leader, id == leader);
    }
}

/// §5.2: when the leader fails, the others elect a new one in a higher term.
#[test]
fn a_new_leader_is_elected_after_the_leader_crashes() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let first = cluster.leader().expect("a leader");
    let first_term = cluster.node(first).status().term;
    cluster.crash(first);
    cluster.run(60);
    let second = cluster.leader().expect("a new leader");
    assert_ne!(second, first);
    assert!(cluster.node(second).status().term > first_term);
}

/// §9.6: a pre-vote request does not change the receiver's term or vote, and
/// is granted with the campaign term echoed.
#[test]
fn pre_vote_request_does_not_change_the_receiver() {
    let mut follower = node(2, &[1, 2, 3]);
    let before = follower.hard_state();
    follower.step(message(
        1,
        2,
        5,
        MessageBody::PreVoteRequest {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
        },
    ));
    let commands = follower.take_commands();
    assert_eq!(
        commands,
        vec![Command::Send(message(
            2,
            1,
            5,
            MessageBody::PreVoteResponse { granted: true }
        ))]
    );
    assert_eq!(follower.hard_state(), before);
}

/// §9.6: a pre-candidate keeps its term; only a quorum of pre-votes starts the
/// election that bumps it.
#[test]
fn pre_candidate_keeps_its_term_until_a_quorum_grants() {
    let mut node = node(1, &[1, 2, 3]);
    let commands = tick_until(&mut node, Role::PreCandidate);
    assert_eq!(node.status().term, Term(0));
    assert!(
        last_persist_id(&commands).is_none(),
        "pre-vote persists nothing"
    );
    let requests = sends(&commands);
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|request| request.term == Term(1)
        && matches!(request.body, MessageBody::PreVoteRequest { .. })));
    node.step(message(
        2,
        1,
        1,
        MessageBody::PreVoteResponse { granted: true },
    ));
    assert_eq!(node.status().role, Role::Candidate);
    assert_eq!(node.status().term, Term(1));
}

/// §9.6: a node cut off from the others does not inflate its term, so it
/// cannot disrupt the leader when it comes back.
#[test]
fn a_partitioned_node_does_not_inflate_its_term() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    let term = cluster.node(leader).status().term;
    let outsider = ids(3)
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.isolate(outsider);
    cluster.run(200);
    assert_eq!(
        cluster.node(outsider).status().term,
        term,
        "pre-vote kept the term"
    );
    cluster.heal();
    cluster.run(60);
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "the leader was not disrupted"
    );
    assert_eq!(cluster.node(leader).status().term, term);
}

/// §6.2: a leader that does not hear from a quorum within an election timeout
/// steps down.
#[test]
fn check_quorum_makes_an_isolated_leader_step_down() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    cluster.isolate(leader);
    let mut ticks = 0;
    while cluster.node(leader).status().role == Role::Leader {
        cluster.node_mut(leader).tick();
        cluster.process(leader);
        cluster.deliver_all();
        ticks += 1;
        assert!(ticks <= 20, "still leading after two election timeouts");
    }
    assert_eq!(cluster.node(leader).status().role, Role::Follower);
}

/// Figure 2 (persistent state): a vote is sent only after the vote is durable.
#[test]
fn a_vote_is_sent_only_after_it_is_durable() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(
        1,
        2,
        1,
        MessageBody::VoteRequest {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            leadership_transfer: false,
        },
    ));
    let commands = follower.take_commands();
    assert_eq!(commands.len(), 1, "only the persist: {commands:?}");
    let Command::Persist {
        id,
        hard_state,
        entries,
    } = &commands[0]
    else {
        panic!("expected a persist, got {commands:?}");
    };
    assert_eq!(
        *hard_state,
        Some(HardState {
            term: Term(1),
            voted_for: Some(NodeId(1))
        })
    );
    assert!(entries.is_empty());
    follower.handle_persisted(*id);
    assert_eq!(
        follower.take_commands(),
        vec![Command::Send(message(
            2,
            1,
            1,
            MessageBody::VoteResponse { granted: true }
        ))]
    );
}

/// §5.2 with Figure 2 persistence: a candidate sends its vote requests at once
/// but counts its own vote, and so becomes leader, only once it is durable.
#[test]
fn a_candidate_counts_its_own_vote_only_once_durable() {
    let mut node = node(1, &[1]);
    let commands = tick_until(&mut node, Role::Candidate);
    let id = last_persist_id(&commands).expect("term and vote persisted");
    assert_eq!(node.status().role, Role::Candidate);
    node.handle_persisted(id);
    assert_eq!(node.status().role, Role::Leader);

    let mut node = super::fixtures::node(1, &[1, 2, 3]);
    tick_until(&mut node, Role::PreCandidate);
    node.step(message(
        2,
        1,
        1,
        MessageBody::PreVoteResponse { granted: true },
    ));
    let commands = node.take_commands();
    let id = last_persist_id(&commands).expect("term and vote persisted");
    assert_eq!(
        sends(&commands).len(),
        2,
        "vote requests go out in parallel"
    );
    node.step(message(
        2,
        1,
        1,
        MessageBody::VoteResponse { granted: true },
    ));
    node.step(message(
        3,
        1,
        1,
        MessageBody::VoteResponse { granted: true },
    ));
    assert_eq!(
        node.status().role,
        Role::Candidate,
        "own vote not yet durable"
    );
    node.handle_persisted(id);
    assert_eq!(node.status().role, Role::Leader);
}

/// §5.4.1: a vote is refused to a candidate whose log is less up to date.
#[test]
fn a_vote_is_refused_to_a_stale_log() {
    let mut voter = leader(&[1, 2, 3]);
    let term = voter.status().term.0;
    // The voter's log has the leader's empty entry at index 1 of `term`.
    voter.step(message(
        2,
        1,
        term + 1,
        MessageBody::VoteRequest {
            last_log_index: LogIndex(5),
            last_log_term: Term(term - 1),
            leadership_transfer: true,
        },
    ));
    let commands = voter.take_commands();
    let responses = sends(&commands);
    assert_eq!(responses.len(), 1);
    assert_eq!(
        responses[0].body,
        MessageBody::VoteResponse { granted: false }
    );
    assert_eq!(
        voter.status().term,
        Term(term + 1),
        "the higher term is adopted"
    );
    assert_eq!(voter.hard_state().voted_for, None);
}

/// §4.2.3: a node that heard from its leader within the minimum election
/// timeout ignores a vote request (no term change), unless it is part of a
/// leadership transfer.
#[test]
fn votes_are_refused_while_the_leader_is_fresh() {
    let mut follower = node(2, &[1, 2, 3]);
    follower.step(message(
        1,
        2,
        1,
        MessageBody::AppendRequest {
            previous_log_index: LogIndex(0),
            previous_log_term: Term(0),
            entries: Vec::new(),
            leader_commit: LogIndex(0),
            heartbeat_round: 1,
        },
    ));
    follower.take_commands();
    let request = |transfer| MessageBody::VoteRequest {
        last_log_index: LogIndex(9),
        last_log_term: Term(1),
        leadership_transfer: transfer,
    };
    follower.step(message(3, 2, 2, request(false)));
    assert!(follower.take_commands().is_empty());
    assert_eq!(follower.status().term, Term(1));
    follower.step(message(3, 2, 2, request(true)));
    assert_eq!(follower.status().term, Term(2));
    assert_eq!(follower.hard_state().voted_for, Some(NodeId(3)));
}

/// §9.6: a pre-candidate that learns of a higher term from a refusal adopts it,
/// so a node that fell behind catches up instead of pre-campaigning forever.
#[test]
fn a_refused_pre_vote_with_a_higher_term_is_adopted() {
    let mut node = node(1, &[1, 2, 3]);
    tick_until(&mut node, Role::PreCandidate);
    node.step(message(
        2,
        1,
        7,
        MessageBody::PreVoteResponse { granted: false },
    ));
    assert_eq!(node.status().role, Role::Follower);
    assert_eq!(node.status().term, Term(7));
}

/// Messages for another group or another node are dropped without effect.
#[test]
fn messages_for_another_group_or_node_are_dropped() {
    let mut follower = node(2, &[1, 2, 3]);
    let vote = MessageBody::VoteRequest {
        last_log_index: LogIndex(0),
        last_log_term: Term(0),
        leadership_transfer: false,
    };
    let mut other_group = message(1, 2, 4, vote.clone());
    other_group.group = GroupId(GROUP.0 + 1);
    follower.step(other_group);
    follower.step(message(1, 3, 4, vote));
    assert!(follower.take_commands().is_empty());
    assert_eq!(follower.status().term, Term(0));
}

/// §5.1: a stale leader's request is answered with the current term, which
/// makes it step down.
#[test]
fn a_stale_leader_steps_down_when_answered() {
    let mut old_leader = leader(&[1, 2, 3]);
    let term = old_leader.status().term.0;
    let mut follower = node(2, &[1, 2, 3]);
    let heartbeat = MessageBody::AppendRequest {
        previous_log_index: LogIndex(0),
        previous_log_term: Term(0),
        entries: Vec::new(),
        leader_commit: LogIndex(0),
        heartbeat_round: 3,
    };
    follower.step(message(3, 2, term + 1, heartbeat.clone()));
    follower.take_commands();
    follower.step(message(1, 2, term, heartbeat));
    let answers = sends(&follower.take_commands());
    assert_eq!(answers.len(), 1);
    old_leader.step(answers[0].clone());
    assert_eq!(old_leader.status().role, Role::Follower);
    assert_eq!(old_leader.status().term, Term(term + 1));
}

/// A node that is not a voter never campaigns.
#[test]
fn a_non_voter_never_campaigns() {
    let mut outsider = node(4, &[1, 2, 3]);
    for _ in 0..200 {
        outsider.tick();
    }
    assert_eq!(outsider.status().role, Role::Follower);
    assert!(outsider.take_commands().is_empty());
}
