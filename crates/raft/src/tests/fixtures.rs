//! Helpers for driving a single node by hand and looking at what it emits.

use super::harness::{config, GROUP};
use crate::{Command, Message, MessageBody, PersistId, RaftNode, RestoredState, Role};
use understudy_types::{NodeId, Term};

/// A bootstrapped node `id` in a group of `voters`.
pub(crate) fn node(id: u64, voters: &[u64]) -> RaftNode {
    let restored = RestoredState::bootstrap(voters.iter().copied().map(NodeId));
    RaftNode::new(config(id), restored).expect("valid bootstrap state")
}

/// A message in the harness group.
pub(crate) fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        group: GROUP,
        from: NodeId(from),
        to: NodeId(to),
        term: Term(term),
        body,
    }
}

/// The messages among `commands`.
pub(crate) fn sends(commands: &[Command]) -> Vec<Message> {
    commands
        .iter()
        .filter_map(|command| match command {
            Command::Send(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The id of the last `Persist` or `InstallSnapshot` among `commands`.
pub(crate) fn last_persist_id(commands: &[Command]) -> Option<PersistId> {
    commands.iter().rev().find_map(|command| match command {
        Command::Persist { id, .. } | Command::InstallSnapshot { id, .. } => Some(*id),
        _ => None,
    })
}

/// Completes every persistence request among `commands`; returns the commands
/// that produced.
pub(crate) fn persist_all(node: &mut RaftNode, commands: &[Command]) -> Vec<Command> {
    if let Some(id) = last_persist_id(commands) {
        node.handle_persisted(id);
    }
    node.take_commands()
}

/// Ticks `node` until its role is `role` (at most 100 ticks); returns the
/// commands emitted on the way.
pub(crate) fn tick_until(node: &mut RaftNode, role: Role) -> Vec<Command> {
    let mut commands = Vec::new();
    for _ in 0..100 {
        if node.status().role == role {
            return commands;
        }
        node.tick();
        commands.extend(node.take_commands());
    }
    panic!("{} never became {role:?}", node.status().id);
}

/// Makes node 1 of a fresh group of `voters` the leader by feeding it votes,
/// with everything durable. Returns it with its command queue drained.
pub(crate) fn leader(voters: &[u64]) -> RaftNode {
    let mut node = node(1, voters);
    let mut commands = Vec::new();
    while node.status().role == Role::Follower {
        node.tick();
        commands.extend(node.take_commands());
    }
    let campaign_term = node.status().term.0 + 1;
    if node.status().role == Role::PreCandidate {
        for &voter in voters.iter().filter(|voter| **voter != 1) {
            let granted = MessageBody::PreVoteResponse { granted: true };
            node.step(message(voter, 1, campaign_term, granted));
        }
        commands.extend(node.take_commands());
    }
    let mut commands = persist_all(&mut node, &commands);
    for &voter in voters.iter().filter(|voter| **voter != 1) {
        node.step(message(
            voter,
            1,
            campaign_term,
            MessageBody::VoteResponse { granted: true },
        ));
    }
    commands.extend(node.take_commands());
    while last_persist_id(&commands).is_some() {
        commands = persist_all(&mut node, &commands);
    }
    assert_eq!(node.status().role, Role::Leader);
    node
}
