//! Single-server membership changes (dissertation §4.1, §4.2.2).
//!
//! A configuration takes effect on every node as soon as it is appended to that
//! node's log (not when it commits), and is rolled back if that entry is truncated
//! away (the log recomputes it from the remaining entries and the snapshot). Only
//! one change may be uncommitted at a time, and a leader changes nothing until an
//! entry of its own term has committed: the dissertation's fix for the bug in the
//! original single-server algorithm, where a change from a previous term could
//! still be uncommitted and two disjoint majorities could form.

use crate::entry::{EntryPayload, MembershipChange};
use crate::error::RaftError;
use crate::message::MessageBody;
use crate::node::RaftNode;
use crate::progress::Progress;
use understudy_types::{limits, LogIndex, NodeId, Term};

impl RaftNode {
    /// Validates a change against the membership in force and appends it.
    pub(crate) fn propose_membership_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<(LogIndex, Term), RaftError> {
        self.check_can_propose()?;
        // check_can_propose succeeded, so this node is the leader.
        let leader_state = self.leader_state.as_ref().expect("leader state");
        let commit_index = self.log.commit_index();
        if commit_index < leader_state.term_start_index {
            return Err(RaftError::MembershipChangePending {
                pending_until: leader_state.term_start_index,
            });
        }
        if self.log.membership_index() > commit_index {
            return Err(RaftError::MembershipChangePending {
                pending_until: self.log.membership_index(),
            });
        }
        let invalid = |reason: String| Err(RaftError::InvalidMembershipChange { reason });
        let mut membership = self.log.membership().clone();
        match change {
            MembershipChange::AddLearner(node) => {
                if membership.contains(node) {
                    return invalid(format!("{node} is already a member"));
                }
                if membership.voters.len() + membership.learners.len() >= limits::RAFT_MEMBERS_MAX {
                    return invalid(format!(
                        "a group has at most {} members",
                        limits::RAFT_MEMBERS_MAX
                    ));
                }
                membership.learners.insert(node);
            }
            MembershipChange::PromoteLearner(node) => {
                if !membership.learners.contains(&node) {
                    return invalid(format!("{node} is not a learner"));
                }
                let matched = leader_state
                    .progress
                    .get(&node)
                    .map_or(LogIndex(0), |progress| progress.match_index);
                let lag_entries = self.log.last_index().0.saturating_sub(matched.0);
                if lag_entries > limits::RAFT_LEARNER_PROMOTION_LAG_ENTRIES_MAX {
                    return invalid(format!(
                        "learner {node} is {lag_entries} entries behind (at most {} allowed)",
                        limits::RAFT_LEARNER_PROMOTION_LAG_ENTRIES_MAX
                    ));
                }
                membership.learners.remove(&node);
                membership.voters.insert(node);
            }
            MembershipChange::Remove(node) => {
                if membership.voters.contains(&node) {
                    if membership.voters.len() == 1 {
                        return invalid("removing the last voter".to_string());
                    }
                    membership.voters.remove(&node);
                } else if !membership.learners.remove(&node) {
                    return invalid(format!("{node} is not a member"));
                }
            }
        }
        Ok(self.append_leader_entry(EntryPayload::Membership(membership)))
    }

    /// Whether this node may start an election: it is a voter in the latest
    /// configuration, or that configuration (which removes it) is not yet known
    /// to be committed and it was a voter in the one before. Dissertation §4.2.2:
    /// until the new configuration commits, "it may be the case that only a
    /// server from C_old can be elected leader" — e.g. a leader that removed
    /// itself and lost leadership before the change committed holds the only
    /// up-to-date log. It counts votes by its latest configuration (not itself)
    /// and steps down once the removal commits.
    pub(crate) fn can_campaign(&self) -> bool {
        if self.is_voter() {
            return true;
        }
        self.log.membership_index() > self.log.commit_index()
            && self.log.previous_membership().voters.contains(&self.id())
    }

    /// Makes the leader's progress map match the membership in force: new
    /// members start probing, removed ones are forgotten (they stop receiving
    /// entries at once; the change takes effect on append).
    pub(crate) fn sync_progress_with_membership(&mut self) {
        let id = self.id();
        let next_index = self.log.last_index();
        let membership = self.log.membership().clone();
        let Some(leader_state) = self.leader_state.as_mut() else {
            return;
        };
        leader_state
            .progress
            .retain(|node, _| membership.contains(*node));
        for member in membership.members().filter(|member| *member != id) {
            leader_state
                .progress
                .entry(member)
                .or_insert_with(|| Progress::new(next_index));
        }
        if leader_state
            .transfer
            .is_some_and(|transfer| !membership.voters.contains(&transfer.target))
        {
            leader_state.transfer = None;
        }
    }

    /// A leader whose removal has committed steps down (§4.2.2). To shorten the
    /// gap before the next leader, it asks a fully caught-up voter to campaign at
    /// once, as in a leadership transfer.
    pub(crate) fn step_down_after_removal(&mut self) {
        let last_index = self.log.last_index();
        let successor: Option<NodeId> = self.leader_state.as_ref().and_then(|leader_state| {
            self.log.membership().voters.iter().copied().find(|voter| {
                leader_state
                    .progress
                    .get(voter)
                    .is_some_and(|progress| progress.match_index == last_index)
            })
        });
        self.become_follower(self.term(), None);
        if let Some(successor) = successor {
            self.send(successor, MessageBody::TimeoutNow);
        }
    }
}
