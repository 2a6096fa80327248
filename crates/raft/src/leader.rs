//! What a leader does as time passes: heartbeats, check-quorum (dissertation
//! §6.2), abandoning a stalled leadership transfer, and retransmitting appends
//! or snapshot chunks that seem lost.
//!
//! Retransmission: appends are pipelined and the network may drop any of them.
//! A follower that has outstanding appends (or a probe, or snapshot chunks) but
//! makes no progress for `retransmit_ticks` falls back to probing from its match
//! index (or resends chunks from the acknowledged offset). Heartbeats are
//! anchored at the match index and never trigger retransmission by themselves.

use crate::node::RaftNode;
use crate::progress::ReplicationState;
use crate::state::LeaderState;
use understudy_types::NodeId;

impl RaftNode {
    /// A tick on the leader.
    pub(crate) fn tick_leader(&mut self) {
        self.timers.heartbeat_elapsed_ticks += 1;
        if self.timers.heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
            self.timers.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
        self.timers.election_elapsed_ticks += 1;
        if self.timers.election_elapsed_ticks >= self.config.election_timeout_ticks {
            self.timers.election_elapsed_ticks = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                // A leader cut off from a quorum stops serving: it cannot commit,
                // and a newer leader may already exist on the other side.
                self.become_follower(self.term(), None);
                return;
            }
            self.clear_recently_active();
        }
        self.tick_transfer();
        self.tick_retransmissions();
    }

    /// Whether a quorum of voters (this node included, if it is a voter) was
    /// heard from in the current check-quorum period.
    fn quorum_recently_active(&self) -> bool {
        let Some(leader_state) = self.leader_state.as_ref() else {
            return false;
        };
        let membership = self.log.membership();
        let active = membership
            .voters
            .iter()
            .filter(|voter| {
                **voter == self.config.id
                    || leader_state
                        .progress
                        .get(voter)
                        .is_some_and(|progress| progress.recently_active)
            })
            .count();
        active >= membership.quorum()
    }

    fn clear_recently_active(&mut self) {
        if let Some(leader_state) = self.leader_state.as_mut() {
            for progress in leader_state.progress.values_mut() {
                progress.recently_active = false;
            }
        }
    }

    /// Ticks without progress after which outstanding sends count as lost.
    fn retransmit_ticks(&self) -> u32 {
        (self.config.election_timeout_ticks / 2).max(2 * self.config.heartbeat_interval_ticks)
    }

    fn tick_retransmissions(&mut self) {
        let retransmit_ticks = self.retransmit_ticks();
        let mut stalled: Vec<NodeId> = Vec::new();
        if let Some(leader_state) = self.leader_state.as_mut() {
            for (peer, progress) in leader_state.progress.iter_mut() {
                if !progress.has_outstanding() {
                    progress.stalled_ticks = 0;
                    continue;
                }
                progress.stalled_ticks = progress.stalled_ticks.saturating_add(1);
                if progress.stalled_ticks >= retransmit_ticks {
                    stalled.push(*peer);
                }
            }
        }
        for peer in stalled {
            self.retransmit(peer);
        }
    }

    /// Resends to a follower whose outstanding sends made no progress.
    fn retransmit(&mut self, peer: NodeId) {
        let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, peer) else {
            return;
        };
        progress.stalled_ticks = 0;
        match &mut progress.state {
            ReplicationState::Probe { sent } => *sent = false,
            ReplicationState::Replicate => {
                let next_index = progress.match_index.next();
                progress.become_probe(next_index);
            }
            ReplicationState::Snapshot(transfer) => {
                transfer.next_offset = transfer.acknowledged_offset;
                transfer.final_chunk_sent = false;
            }
        }
        self.send_append(peer);
    }
}
