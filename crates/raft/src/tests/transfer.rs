//! Leadership transfer (dissertation §3.10).

use super::fixtures::*;
use super::harness::*;
use crate::{MessageBody, RaftError, Role};
use bytes::Bytes;
use understudy_types::{LogIndex, NodeId};

/// §3.10: leadership moves to the chosen node without waiting for a timeout.
#[test]
fn leadership_moves_to_the_target() {
    let mut cluster = Cluster::new(3);
    cluster.run(60);
    let old = cluster.leader().expect("a leader");
    let old_term = cluster.node(old).status().term;
    let target = ids(3)
        .into_iter()
        .find(|id| *id != old)
        .expect("a follower");
    cluster
        .node_mut(old)
        .transfer_leadership(target)
        .expect("started");
    cluster.process(old);
    cluster.deliver_all();
    assert_eq!(cluster.node(target).status().role, Role::Leader);
    assert!(cluster.node(target).status().term > old_term);
    assert_eq!(cluster.node(old).status().role, Role::Follower);
}

/// §3.10: during a transfer the leader refuses proposals; TimeoutNow goes out
/// only once the target has caught up.
#[test]
fn the_target_is_caught_up_before_timeout_now() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    let last = leader.status().last_index;
    leader.transfer_leadership(NodeId(2)).expect("started");
    assert_eq!(
        leader.propose(Bytes::from_static(b"x")),
        Err(RaftError::TransferInProgress)
    );
    let commands = leader.take_commands();
    assert!(!sends(&commands)
        .iter()
        .any(|message| message.body == MessageBody::TimeoutNow));
    leader.step(message(
        2,
        1,
        term,
        MessageBody::AppendResponse {
            success: true,
            match_index: last,
            conflict: None,
            heartbeat_round: 0,
        },
    ));
    let timeout_now = sends(&leader.take_commands())
        .into_iter()
        .filter(|message| message.body == MessageBody::TimeoutNow)
        .count();
    assert_eq!(timeout_now, 1);
    assert_eq!(
        leader.transfer_leadership(NodeId(3)),
        Err(RaftError::TransferInProgress)
    );
}

/// §3.10: a transfer that does not complete within an election timeout is
/// abandoned and the leader accepts proposals again.
#[test]
fn a_stalled_transfer_is_abandoned() {
    let mut leader = leader(&[1, 2, 3]);
    let term = leader.status().term.0;
    // Keep the leader within its check-quorum period: node 3 answers.
    leader.transfer_leadership(NodeId(2)).expect("started");
    for _ in 0..leader.config().election_timeout_ticks {
        leader.tick();
        leader.step(message(
            3,
            1,
            term,
            MessageBody::AppendResponse {
                success: true,
                match_index: LogIndex(0),
                conflict: None,
                heartbeat_round: 0,
            },
        ));
    }
    assert_eq!(leader.status().role, Role::Leader);
    assert!(leader.propose(Bytes::from_static(b"x")).is_ok());
}

/// Transfers are only to voters, and only from the leader.
#[test]
fn invalid_transfers_are_refused() {
    let mut leader = leader(&[1, 2, 3]);
    assert_eq!(
        leader.transfer_leadership(NodeId(9)),
        Err(RaftError::InvalidTransferTarget { target: NodeId(9) })
    );
    assert_eq!(leader.transfer_leadership(NodeId(1)), Ok(()));
    let mut follower = node(2, &[1, 2, 3]);
    assert!(matches!(
        follower.transfer_leadership(NodeId(3)),
        Err(RaftError::NotLeader { .. })
    ));
}
