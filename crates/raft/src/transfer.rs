//! Leadership transfer (dissertation §3.10).
//!
//! The leader stops accepting proposals, brings the target's log up to date,
//! then sends it TimeoutNow; the target campaigns at once (no pre-vote, and its
//! VoteRequests carry `leadership_transfer` so voters ignore their leader lease).
//! The transfer is abandoned after an election timeout, and ends whenever the
//! leader steps down.

use crate::error::RaftError;
use crate::message::MessageBody;
use crate::node::RaftNode;
use crate::state::Transfer;
use understudy_types::NodeId;

impl RaftNode {
    /// Handles `transfer_leadership(target)`.
    pub(crate) fn start_transfer(&mut self, target: NodeId) -> Result<(), RaftError> {
        let leader_hint = self.leader;
        let id = self.id();
        let is_voter = self.log.membership().voters.contains(&target);
        let Some(leader_state) = self.leader_state.as_mut() else {
            return Err(RaftError::NotLeader { leader_hint });
        };
        if target == id {
            return Ok(());
        }
        if let Some(transfer) = leader_state.transfer {
            return if transfer.target == target {
                Ok(())
            } else {
                Err(RaftError::TransferInProgress)
            };
        }
        if !is_voter {
            return Err(RaftError::InvalidTransferTarget { target });
        }
        leader_state.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
            timeout_now_sent: false,
        });
        self.maybe_send_timeout_now(target);
        self.send_append(target);
        Ok(())
    }

    /// Sends TimeoutNow to the transfer target once its log matches ours.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        let Some(leader_state) = self.leader_state.as_mut() else {
            return;
        };
        let Some(transfer) = leader_state.transfer.as_mut() else {
            return;
        };
        let caught_up = leader_state
            .progress
            .get(&peer)
            .is_some_and(|progress| progress.match_index == last_index);
        if transfer.target != peer || transfer.timeout_now_sent || !caught_up {
            return;
        }
        transfer.timeout_now_sent = true;
        self.send(peer, MessageBody::TimeoutNow);
    }

    /// Abandons a transfer that has not completed within an election timeout,
    /// so the leader accepts proposals again.
    pub(crate) fn tick_transfer(&mut self) {
        let timeout_ticks = self.config.election_timeout_ticks;
        let Some(leader_state) = self.leader_state.as_mut() else {
            return;
        };
        if let Some(transfer) = leader_state.transfer.as_mut() {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= timeout_ticks {
                leader_state.transfer = None;
            }
        }
    }
}
