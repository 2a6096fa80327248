//! Single-server membership changes (dissertation §4.1-§4.2).

use super::fixtures::*;
use super::harness::*;
use crate::{Entry, EntryPayload, Membership, MembershipChange, MessageBody, RaftError, Role};
use bytes::Bytes;
use understudy_types::{LogIndex, NodeId, Term};

fn success(match_index: LogIndex) -> MessageBody {
    MessageBody::AppendResponse {
        success: true,
        match_index,
        conflict: None,
        heartbeat_round: 0,
    }
}

/// A leader of {1,2,3} whose empty entry has committed.
fn committed_leader() -> crate::RaftNode {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    let last = leader.status().last_index;
    leader.step(message(2, 1, term, success(last)));
    leader.take_commands();
    assert_eq!(leader.status().commit_index, last);
    leader
}

/// §4.1, §4.2.1: a new node joins as a learner, catches up without voting, and
/// is promoted once caught up; the group then counts it.
#[test]
fn a_learner_catches_up_and_is_promoted() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    for _ in 0..10 {
        cluster.propose(leader, b"before");
    }
    cluster.add_blank_node(config(4));
    cluster
        .node_mut(leader)
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .expect("added");
    cluster.process(leader);
    cluster.run(10);
    let status = cluster.node(NodeId(4)).status();
    assert!(status.membership.learners.contains(&NodeId(4)));
    assert_eq!(
        status.commit_index,
        cluster.node(leader).status().commit_index
    );
    assert_eq!(cluster.applied_index(NodeId(4)), status.commit_index);
    cluster
        .node_mut(leader)
        .change_membership(MembershipChange::PromoteLearner(NodeId(4)))
        .expect("promoted");
    cluster.process(leader);
    cluster.run(10);
    for id in ids(4) {
        let membership = cluster.node(id).status().membership;
        assert_eq!(membership.voters.len(), 4, "{id} sees four voters");
    }
    // With four voters a quorum is three: two nodes down stop commits.
    let others: Vec<NodeId> = ids(4).into_iter().filter(|id| *id != leader).collect();
    cluster.crash(others[0]);
    cluster.crash(others[1]);
    let (index, _) = cluster.propose(leader, b"needs three");
    cluster.run(3);
    assert!(cluster.node(leader).status().commit_index < index);
}

/// §4.2.1: a learner far behind the leader is not promoted.
#[test]
fn a_lagging_learner_is_not_promoted() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let leader = cluster.leader().expect("a leader");
    cluster.add_blank_node(config(4));
    cluster
        .node_mut(leader)
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .expect("added");
    cluster.process(leader);
    cluster.isolate(NodeId(4));
    for _ in 0..understudy_types::limits::RAFT_LEARNER_PROMOTION_LAG_ENTRIES_MAX + 5 {
        cluster.propose(leader, b"while the learner is away");
    }
    cluster.run(2);
    let refused = cluster
        .node_mut(leader)
        .change_membership(MembershipChange::PromoteLearner(NodeId(4)));
    assert!(
        matches!(refused, Err(RaftError::InvalidMembershipChange { .. })),
        "{refused:?}"
    );
}

/// §4.1: only one change at a time, and (the dissertation's fix) none before the
/// leader's first entry of its term has committed.
#[test]
fn changes_wait_for_the_terms_first_commit_and_each_other() {
    let mut leader = leader(&[1, 2, 3]);
    let term_start = leader.status().last_index;
    assert_eq!(
        leader.change_membership(MembershipChange::AddLearner(NodeId(4))),
        Err(RaftError::MembershipChangePending {
            pending_until: term_start
        })
    );
    let mut leader = committed_leader();
    let (index, _) = leader
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .expect("first change");
    assert_eq!(
        leader.change_membership(MembershipChange::AddLearner(NodeId(5))),
        Err(RaftError::MembershipChangePending {
            pending_until: index
        })
    );
}

/// §4.1: the configuration takes effect when appended, before it commits.
#[test]
fn a_configuration_takes_effect_when_appended() {
    let mut leader = committed_leader();
    leader
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .expect("added");
    assert!(leader.status().membership.learners.contains(&NodeId(4)));
    let appends = sends(&leader.take_commands());
    assert!(
        appends.iter().any(|message| message.to == NodeId(4)),
        "the learner is probed"
    );
}

/// §4.1: a configuration whose entry is truncated away is rolled back.
#[test]
fn a_truncated_configuration_is_rolled_back() {
    let mut follower = node(2, &[1, 2, 3]);
    let mut joined = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
    joined.learners.insert(NodeId(4));
    let configuration = Entry {
        term: Term(1),
        index: LogIndex(1),
        payload: EntryPayload::Membership(joined.clone()),
    };
    let append = |entries: Vec<Entry>| MessageBody::AppendRequest {
        previous_log_index: LogIndex(0),
        previous_log_term: Term(0),
        entries,
        leader_commit: LogIndex(0),
        heartbeat_round: 0,
    };
    follower.step(message(1, 2, 1, append(vec![configuration])));
    assert_eq!(follower.status().membership, joined);
    let replacement = Entry {
        term: Term(2),
        index: LogIndex(1),
        payload: EntryPayload::Empty,
    };
    follower.step(message(3, 2, 2, append(vec![replacement])));
    assert_eq!(
        follower.status().membership,
        Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)])
    );
}

/// §4.2.2: a leader that removes itself keeps leading without counting itself
/// until the change commits, then steps down; another node takes over.
#[test]
fn a_removed_leader_steps_down_once_the_change_commits() {
    let mut leader = committed_leader();
    let term = leader.status().term.0;
    let (index, _) = leader
        .change_membership(MembershipChange::Remove(NodeId(1)))
        .expect("removal accepted");
    let commands = leader.take_commands();
    persist_all(&mut leader, &commands);
    leader.step(message(2, 1, term, success(index)));
    assert_eq!(
        leader.status().role,
        Role::Leader,
        "it does not count itself"
    );
    assert!(leader.status().commit_index < index);
    leader.step(message(3, 1, term, success(index)));
    assert_eq!(leader.status().commit_index, index);
    assert_eq!(leader.status().role, Role::Follower);

    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let old = cluster.leader().expect("a leader");
    cluster
        .node_mut(old)
        .change_membership(MembershipChange::Remove(old))
        .expect("removal accepted");
    cluster.process(old);
    cluster.run(30);
    let new = cluster.leader().expect("a new leader");
    assert_ne!(new, old);
    cluster.propose(new, b"without the old leader");
    cluster.run(2);
    let others: Vec<NodeId> = ids(3).into_iter().filter(|id| *id != old).collect();
    for id in others {
        assert_eq!(
            cluster.applied_index(id),
            cluster.node(new).status().commit_index
        );
    }
    assert_eq!(cluster.node(old).status().role, Role::Follower);
}

/// §4.1: learners do not count toward commitment.
#[test]
fn a_learner_does_not_count_toward_commitment() {
    let mut leader = committed_leader();
    let term = leader.status().term.0;
    leader
        .change_membership(MembershipChange::AddLearner(NodeId(4)))
        .expect("added");
    leader.step(message(2, 1, term, success(leader.status().last_index)));
    leader.take_commands();
    let (index, _) = leader.propose(Bytes::from_static(b"x")).expect("accepted");
    let commands = leader.take_commands();
    persist_all(&mut leader, &commands);
    leader.step(message(4, 1, term, success(index)));
    assert!(
        leader.status().commit_index < index,
        "a learner's copy does not count"
    );
    leader.step(message(3, 1, term, success(index)));
    assert_eq!(leader.status().commit_index, index);
}

/// The voters may never become empty, and nonsense changes are refused.
#[test]
fn invalid_changes_are_refused() {
    let mut single = leader(&[1]);
    assert!(matches!(
        single.change_membership(MembershipChange::Remove(NodeId(1))),
        Err(RaftError::InvalidMembershipChange { .. })
    ));
    let mut leader = committed_leader();
    for change in [
        MembershipChange::AddLearner(NodeId(2)),
        MembershipChange::PromoteLearner(NodeId(9)),
        MembershipChange::Remove(NodeId(9)),
    ] {
        assert!(matches!(
            leader.change_membership(change),
            Err(RaftError::InvalidMembershipChange { .. })
        ));
    }
}

/// §4.2.2: "until C_new commits, it may be the case that only a server from
/// C_old can be elected". A leader that removed itself and lost leadership
/// before the removal committed may campaign again (counting only the new
/// configuration's votes, not its own), finish the change, and step down.
#[test]
fn a_removed_node_with_an_uncommitted_removal_may_campaign() {
    let mut node = leader(&[1, 2]);
    let term = node.status().term.0;
    let last = node.status().last_index;
    node.step(message(2, 1, term, success(last)));
    let (removal, _) = node
        .change_membership(MembershipChange::Remove(NodeId(1)))
        .expect("accepted");
    let commands = node.take_commands();
    persist_all(&mut node, &commands);
    // Leadership is lost before node 2 has the removal.
    let rejection = MessageBody::AppendResponse {
        success: false,
        match_index: last,
        conflict: None,
        heartbeat_round: 0,
    };
    node.step(message(2, 1, term + 1, rejection));
    assert_eq!(node.status().role, Role::Follower);
    let commands = tick_until(&mut node, Role::PreCandidate);
    let requests = sends(&commands);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].to, NodeId(2));
    node.step(message(
        2,
        1,
        term + 2,
        MessageBody::PreVoteResponse { granted: true },
    ));
    let commands = node.take_commands();
    persist_all(&mut node, &commands);
    node.step(message(
        2,
        1,
        term + 2,
        MessageBody::VoteResponse { granted: true },
    ));
    let commands = node.take_commands();
    persist_all(&mut node, &commands);
    assert_eq!(node.status().role, Role::Leader);
    let last = node.status().last_index;
    assert!(last > removal);
    node.step(message(2, 1, term + 2, success(last)));
    assert!(node.status().commit_index >= removal);
    assert_eq!(
        node.status().role,
        Role::Follower,
        "steps down once committed"
    );
    for _ in 0..100 {
        node.tick();
    }
    assert_eq!(node.status().role, Role::Follower, "never campaigns again");
}
