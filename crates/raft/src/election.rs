//! Leader election (§5.2) with pre-vote (dissertation §9.6) and the role
//! transitions every other module uses.
//!
//! Persistence ordering: a candidate sends its VoteRequests at once, in parallel
//! with persisting its new term and self-vote, but counts its own vote only once
//! that request is durable. So it can never become leader of a term it could
//! forget in a crash (after which it might vote for someone else in that term).
//! Even when the other voters' grants alone make a quorum, the candidate becomes
//! leader only once its term and vote are durable. A granted vote is sent only
//! once the vote is durable.

use crate::command::Command;
use crate::entry::EntryPayload;
use crate::message::MessageBody;
use crate::node::{RaftNode, Role};
use crate::progress::Progress;
use crate::state::{Campaign, LeaderState};
use understudy_types::{LogIndex, NodeId, Term};

impl RaftNode {
    /// A tick on a follower, pre-candidate or candidate.
    pub(crate) fn tick_election(&mut self) {
        let timers = &mut self.timers;
        timers.election_elapsed_ticks = timers.election_elapsed_ticks.saturating_add(1);
        if timers.election_elapsed_ticks >= timers.randomized_election_timeout_ticks {
            // A node that is not a voter never campaigns (but see `can_campaign`
            // for a removal not yet committed); its timer keeps running, so it
            // stops counting as "heard from a leader recently" too.
            if self.can_campaign() {
                self.start_campaign();
            }
        }
    }

    /// Starts a pre-vote round, or an election if pre-vote is off.
    fn start_campaign(&mut self) {
        if self.config.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Asks the voters whether they would vote for this node in the next term,
    /// without changing its term (§9.6).
    fn become_pre_candidate(&mut self) {
        assert!(self.role != Role::Leader, "a leader does not pre-campaign");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_election_timer();
        self.campaign = Campaign::default();
        self.campaign.granted.insert(self.id());
        let membership = self.log.membership();
        // The node's own pre-vote counts only if it is a voter (see `can_campaign`).
        if self
            .campaign
            .granted
            .intersection(&membership.voters)
            .count()
            >= membership.quorum()
        {
            self.become_candidate(false);
            return;
        }
        let campaign_term = Term(self.term().0 + 1);
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for voter in self.other_voters() {
            let mut message = self.message(
                voter,
                MessageBody::PreVoteRequest {
                    last_log_index,
                    last_log_term,
                },
            );
            message.term = campaign_term;
            self.commands.push(Command::Send(message));
        }
    }

    /// Starts an election in the next term (§5.2). `leadership_transfer` is set
    /// when a TimeoutNow asked for it (§3.10): the election skips pre-vote and
    /// voters ignore their leader lease.
    pub(crate) fn become_candidate(&mut self, leadership_transfer: bool) {
        assert!(self.role != Role::Leader, "a leader does not campaign");
        assert!(self.can_campaign(), "only a voter campaigns");
        self.set_hard_state(Term(self.term().0 + 1), Some(self.id()));
        // The term and self-vote are emitted now; the vote counts once durable.
        self.flush_persist();
        let self_vote = self.persistence.last_issued();
        self.role = Role::Candidate;
        self.leader = None;
        self.reset_election_timer();
        self.campaign = Campaign {
            self_vote: Some(self_vote),
            ..Campaign::default()
        };
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for voter in self.other_voters() {
            self.send(
                voter,
                MessageBody::VoteRequest {
                    last_log_index,
                    last_log_term,
                    leadership_transfer,
                },
            );
        }
        self.poll_election();
    }

    /// Counts the votes of the current election and acts on the outcome.
    pub(crate) fn poll_election(&mut self) {
        if self.role != Role::Candidate {
            return;
        }
        let voters = &self.log.membership().voters;
        let mut granted = self.campaign.granted.intersection(voters).count();
        let self_vote_durable = self
            .campaign
            .self_vote
            .is_some_and(|id| self.persistence.is_durable(id));
        if self_vote_durable && voters.contains(&self.id()) {
            granted += 1;
        }
        let rejected = self.campaign.rejected.intersection(voters).count();
        let quorum = self.log.membership().quorum();
        // Even if the other voters alone make a quorum, the candidate waits for
        // its own term and vote to be durable: a leader must never act in a term
        // it could forget in a crash.
        if granted >= quorum && self_vote_durable {
            self.become_leader();
        } else if rejected >= quorum {
            self.become_follower(self.term(), None);
        }
    }

    /// Every voter except this node.
    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        let id = self.id();
        let voters = &self.log.membership().voters;
        voters
            .iter()
            .copied()
            .filter(|voter| *voter != id)
            .collect()
    }

    /// Answers a pre-vote: granted if the sender's campaign term is ahead of ours,
    /// we have not heard from a leader recently, and its log is up to date.
    pub(crate) fn handle_pre_vote_request(
        &mut self,
        from: NodeId,
        campaign_term: Term,
        last_log_term: Term,
        last_log_index: LogIndex,
    ) {
        let log_ok = self.bugs.vote_without_log_check
            || self.log.is_up_to_date(last_log_term, last_log_index);
        let granted = campaign_term > self.term() && !self.in_leader_lease() && log_ok;
        let mut message = self.message(from, MessageBody::PreVoteResponse { granted });
        if granted {
            // Echo the campaign term so the pre-candidate can match the answer;
            // a refusal carries our own term so a lagging sender catches up.
            message.term = campaign_term;
        }
        self.commands.push(Command::Send(message));
    }

    /// Counts a pre-vote answer; a quorum of grants starts the real election.
    pub(crate) fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate {
            return;
        }
        if granted && term == Term(self.term().0 + 1) {
            self.campaign.granted.insert(from);
        } else if !granted && term == self.term() {
            self.campaign.rejected.insert(from);
        } else {
            return;
        }
        let voters = &self.log.membership().voters;
        let quorum = self.log.membership().quorum();
        if self.campaign.granted.intersection(voters).count() >= quorum {
            self.become_candidate(false);
        } else if self.campaign.rejected.intersection(voters).count() >= quorum {
            self.become_follower(self.term(), None);
        }
    }

    /// Answers a vote request of the current term (§5.2, §5.4.1). A granted vote
    /// is sent only once it is durable.
    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        last_log_term: Term,
        last_log_index: LogIndex,
    ) {
        let voted_for = self.hard_state.voted_for;
        let can_vote = voted_for == Some(from) || (voted_for.is_none() && self.leader.is_none());
        let log_ok = self.bugs.vote_without_log_check
            || self.log.is_up_to_date(last_log_term, last_log_index);
        if can_vote && log_ok {
            self.set_hard_state(self.term(), Some(from));
            if self.role == Role::PreCandidate {
                self.role = Role::Follower;
            }
            self.reset_election_timer();
            self.send_when_durable(from, MessageBody::VoteResponse { granted: true });
        } else {
            self.send(from, MessageBody::VoteResponse { granted: false });
        }
    }

    /// Counts a vote of the current term.
    pub(crate) fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        if granted {
            self.campaign.granted.insert(from);
        } else {
            self.campaign.rejected.insert(from);
        }
        self.poll_election();
    }

    /// TimeoutNow from the leader: campaign at once, skipping pre-vote (§3.10).
    pub(crate) fn handle_timeout_now(&mut self, from: NodeId) {
        if self.role != Role::Follower || !self.is_voter() {
            return;
        }
        if self.leader.is_some() && self.leader != Some(from) {
            return;
        }
        self.become_candidate(true);
    }

    /// Becomes a follower in `term` (which may be the current one), following
    /// `leader` if known. A leader stepping down fails its pending reads.
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term() {
            self.set_hard_state(term, None);
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_election_timer();
        self.campaign = Campaign::default();
        if let Some(leader_state) = self.leader_state.take() {
            let failed = leader_state
                .reads_awaiting_term_commit
                .iter()
                .copied()
                .chain(leader_state.pending_reads.iter().map(|read| read.context));
            for context in failed {
                self.commands.push(Command::ReadFailed {
                    context,
                    leader_hint: leader,
                });
            }
        }
    }

    /// Becomes leader: starts probing every member and appends the empty entry
    /// that opens the term (§5.4.2, §8).
    fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "only a candidate becomes leader"
        );
        assert!(
            self.persistence.hard_state_durable(),
            "a leader's term and vote must be durable"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id());
        self.campaign = Campaign::default();
        self.snapshot_assembly = None;
        self.timers.election_elapsed_ticks = 0;
        self.timers.heartbeat_elapsed_ticks = 0;
        let next_index = self.log.last_index().next();
        let id = self.id();
        let progress = self
            .log
            .membership()
            .members()
            .filter(|member| *member != id)
            .map(|member| (member, Progress::new(next_index)))
            .collect();
        self.leader_state = Some(LeaderState {
            progress,
            term_start_index: next_index,
            ..LeaderState::default()
        });
        self.append_leader_entry(EntryPayload::Empty);
    }
}
