//! Message intake: the term rules every message obeys before it is dispatched to
//! the module that handles its kind (Figure 2, "Rules for all servers", with the
//! pre-vote and check-quorum refinements of dissertation §9.6 and §6.2).

use crate::message::{Message, MessageBody};
use crate::node::{RaftNode, Role};

impl RaftNode {
    /// Handles a message already known to be for this node and well formed.
    pub(crate) fn step_checked(&mut self, message: Message) {
        let term = self.term();
        if message.term > term {
            if !self.accept_higher_term(&message) {
                return;
            }
        } else if message.term < term {
            self.answer_stale(message);
            return;
        }
        self.dispatch(message);
    }

    /// A message carries a higher term. Returns false if it must be ignored.
    fn accept_higher_term(&mut self, message: &Message) -> bool {
        match &message.body {
            // A pre-vote request names the term its sender would campaign in; it
            // must not change the receiver's term (§9.6), and a granted pre-vote
            // response echoes that future term.
            MessageBody::PreVoteRequest { .. } | MessageBody::PreVoteResponse { granted: true } => {
                true
            }
            MessageBody::VoteRequest {
                leadership_transfer,
                ..
            } => {
                // §4.2.3: a server that heard from a current leader within the
                // minimum election timeout neither updates its term nor votes, so a
                // removed or partitioned server cannot depose a working leader.
                if !leadership_transfer && self.in_leader_lease() {
                    return false;
                }
                self.become_follower(message.term, None);
                true
            }
            MessageBody::AppendRequest { .. }
            | MessageBody::SnapshotChunk { .. }
            | MessageBody::TimeoutNow => {
                self.become_follower(message.term, Some(message.from));
                true
            }
            MessageBody::PreVoteResponse { granted: false }
            | MessageBody::VoteResponse { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::SnapshotResponse { .. } => {
                self.become_follower(message.term, None);
                true
            }
        }
    }

    /// A message from an older term: requests are refused with the current term
    /// so the sender catches up (a stale leader steps down); responses are dropped.
    /// Requests are answered whoever sends them: a stale leader may not be in
    /// this node's latest configuration (an uncommitted change that removes it),
    /// and if it never learned the newer term it would lead on with a quorum of
    /// the old configuration while this node could never catch up.
    fn answer_stale(&mut self, message: Message) {
        let body = match message.body {
            MessageBody::AppendRequest {
                heartbeat_round, ..
            } => MessageBody::AppendResponse {
                success: false,
                match_index: self.log.last_index(),
                conflict: None,
                heartbeat_round,
            },
            MessageBody::SnapshotChunk { meta, .. } => MessageBody::SnapshotResponse {
                last_index: meta.last_index,
                next_offset: 0,
                installed: false,
            },
            MessageBody::PreVoteRequest { .. } => MessageBody::PreVoteResponse { granted: false },
            MessageBody::VoteRequest { .. } => MessageBody::VoteResponse { granted: false },
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::AppendResponse { .. }
            | MessageBody::SnapshotResponse { .. }
            | MessageBody::TimeoutNow => return,
        };
        self.send(message.from, body);
    }

    fn dispatch(&mut self, message: Message) {
        let from = message.from;
        let term = message.term;
        match message.body {
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
            } => self.handle_pre_vote_request(from, term, last_log_term, last_log_index),
            MessageBody::PreVoteResponse { granted } => {
                self.handle_pre_vote_response(from, term, granted)
            }
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(from, last_log_term, last_log_index),
            MessageBody::VoteResponse { granted } => self.handle_vote_response(from, granted),
            MessageBody::AppendRequest {
                previous_log_index,
                previous_log_term,
                entries,
                leader_commit,
                heartbeat_round,
            } => self.handle_append_request(
                from,
                crate::replication::AppendRequest {
                    previous_log_index,
                    previous_log_term,
                    entries,
                    leader_commit,
                    heartbeat_round,
                },
            ),
            MessageBody::AppendResponse {
                success,
                match_index,
                conflict,
                heartbeat_round,
            } => self.handle_append_response(from, success, match_index, conflict, heartbeat_round),
            MessageBody::SnapshotChunk {
                meta,
                offset,
                total_bytes,
                data,
            } => self.handle_snapshot_chunk(
                from,
                crate::snapshot::Chunk {
                    meta,
                    offset,
                    total_bytes,
                    data,
                },
            ),
            MessageBody::SnapshotResponse {
                last_index,
                next_offset,
                installed,
            } => self.handle_snapshot_response(from, last_index, next_offset, installed),
            MessageBody::TimeoutNow => self.handle_timeout_now(from),
        }
    }

    /// Whether this node heard from a current leader within the minimum election
    /// timeout (a leader counts itself), which makes it refuse votes and pre-votes.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && (self.role == Role::Leader
                || (self.leader.is_some()
                    && self.timers.election_elapsed_ticks < self.config.election_timeout_ticks))
    }

    /// Takes note of a message from the leader of the current term: follow it and
    /// restart the election timer.
    pub(crate) fn hear_from_leader(&mut self, leader: understudy_types::NodeId) {
        assert!(
            self.role != Role::Leader,
            "two leaders in term {}: {} and {leader}",
            self.term(),
            self.id()
        );
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(self.term(), Some(leader));
        } else {
            self.timers.election_elapsed_ticks = 0;
        }
    }
}
