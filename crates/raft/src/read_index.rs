//! Linearizable reads with ReadIndex (dissertation §6.4).
//!
//! 1. The leader waits until an entry of its own term has committed (the empty
//!    entry it appends on election); before that its commit index may lag the
//!    true one. Reads asked for earlier are queued.
//! 2. It records its commit index as the read's index.
//! 3. It starts a new heartbeat round; once a quorum of voters has echoed that
//!    round (or a later one) in this term, no newer leader existed when the read
//!    was registered, and the read is ready: `ReadReady { context, index }`. The
//!    shell serves it after applying `index`.
//!
//! A single-voter group skips step 3. A node that is not leader, or a leader that
//! steps down with reads pending, answers `ReadFailed` with its leader hint.

use crate::command::Command;
use crate::node::RaftNode;
use crate::state::PendingRead;
use understudy_types::limits;

impl RaftNode {
    /// Handles `read_index(context)`.
    pub(crate) fn request_read(&mut self, context: u64) {
        let leader_hint = self.leader;
        let id = self.id();
        let commit_index = self.log.commit_index();
        let Some(leader_state) = self.leader_state.as_mut() else {
            self.commands.push(Command::ReadFailed {
                context,
                leader_hint,
            });
            return;
        };
        if leader_state.reads_held() >= limits::RAFT_PENDING_READS_MAX {
            // Overloaded, not deposed: the hint says to retry here.
            self.commands.push(Command::ReadFailed {
                context,
                leader_hint: Some(id),
            });
            return;
        }
        if commit_index < leader_state.term_start_index {
            leader_state.reads_awaiting_term_commit.push_back(context);
            return;
        }
        self.register_reads(&[context]);
    }

    /// Records reads at the current commit index and starts their confirmation.
    fn register_reads(&mut self, contexts: &[u64]) {
        let index = self.log.commit_index();
        let membership = self.log.membership();
        let sole_voter = membership.voters.len() == 1 && membership.voters.contains(&self.id());
        if sole_voter {
            for &context in contexts {
                self.commands.push(Command::ReadReady { context, index });
            }
            return;
        }
        self.broadcast_heartbeat();
        let round = self.heartbeat_round;
        if let Some(leader_state) = self.leader_state.as_mut() {
            for &context in contexts {
                leader_state.pending_reads.push_back(PendingRead {
                    context,
                    index,
                    round,
                });
            }
        }
    }

    /// Called when the commit index advances: reads queued until the term's
    /// first commit can now be registered.
    pub(crate) fn release_reads_awaiting_term_commit(&mut self) {
        let commit_index = self.log.commit_index();
        let Some(leader_state) = self.leader_state.as_mut() else {
            return;
        };
        if commit_index < leader_state.term_start_index
            || leader_state.reads_awaiting_term_commit.is_empty()
        {
            return;
        }
        let waiting: Vec<u64> = leader_state.reads_awaiting_term_commit.drain(..).collect();
        self.register_reads(&waiting);
    }

    /// Answers the pending reads whose heartbeat round a quorum has echoed.
    pub(crate) fn check_pending_reads(&mut self) {
        let id = self.id();
        let Some(leader_state) = self.leader_state.as_mut() else {
            return;
        };
        let membership = self.log.membership();
        while let Some(read) = leader_state.pending_reads.front().copied() {
            let confirmed = membership
                .voters
                .iter()
                .filter(|voter| {
                    **voter == id
                        || leader_state
                            .progress
                            .get(voter)
                            .is_some_and(|progress| progress.acknowledged_round >= read.round)
                })
                .count();
            if confirmed < membership.quorum() {
                break;
            }
            leader_state.pending_reads.pop_front();
            self.commands.push(Command::ReadReady {
                context: read.context,
                index: read.index,
            });
        }
    }
}
