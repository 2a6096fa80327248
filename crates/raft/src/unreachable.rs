//! Fast failover on a hint from the shell that the leader is gone.
//!
//! When a leader's *process* dies, its host's kernel closes its sockets: the
//! shell sees its inbound connection from the leader end and a new connection
//! to the leader's port refused, long before an election timeout would notice.
//! `report_unreachable` turns that hint into an early campaign.
//!
//! Safety never depends on timers (§5.2: timing only affects liveness), so
//! shortening this node's timer cannot break election safety. Disruption is
//! what must be avoided, and pre-vote does that (dissertation §9.6): if the
//! leader is in fact alive, the other voters still heard from it within the
//! minimum election timeout and refuse the pre-vote, so this node's term does
//! not move, and the leader's next AppendEntries makes it follow again. The hint
//! is therefore ignored without pre-vote, where it could depose a live leader.

use crate::node::{RaftNode, Role};
use understudy_types::NodeId;

impl RaftNode {
    /// Acts on the shell's report that `peer` is unreachable (see the public
    /// `RaftNode::report_unreachable`).
    pub(crate) fn handle_unreachable(&mut self, peer: NodeId) {
        if !self.config.pre_vote
            || self.role != Role::Follower
            || self.leader != Some(peer)
            || peer == self.id()
            || !self.can_campaign()
        {
            return;
        }
        // No longer following anyone: this node leaves the leader lease (see
        // `in_leader_lease`), so it grants other voters' pre-votes, and a
        // message from the leader of this term makes it follow again.
        self.leader = None;
        // Campaign after a short random delay rather than at once: when every
        // follower gets the hint at about the same moment, the spread lets one
        // win the pre-vote and the election before the others campaign, instead
        // of splitting the vote and falling back to a full election timeout.
        let delay_ticks = self.draw_unreachable_delay_ticks();
        let remaining_ticks = self
            .timers
            .randomized_election_timeout_ticks
            .saturating_sub(self.timers.election_elapsed_ticks);
        if delay_ticks < remaining_ticks {
            self.timers.election_elapsed_ticks = 0;
            self.timers.randomized_election_timeout_ticks = delay_ticks;
        }
    }

    /// A delay drawn uniformly from `1..=heartbeat_interval_ticks` (at least two
    /// values, so two followers hinted at once can still be told apart).
    fn draw_unreachable_delay_ticks(&mut self) -> u32 {
        use rand::Rng;
        let most = self.config.heartbeat_interval_ticks.max(2);
        self.rng.gen_range(1..=most)
    }
}
