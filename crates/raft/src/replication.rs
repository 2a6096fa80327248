//! Log replication (§5.3): proposals, AppendEntries on both sides, fast back-up
//! of divergent logs, and the commit rule of §5.4.2.
//!
//! Persistence ordering: the leader emits `Persist` for its new entries and sends
//! them to followers in the same breath (the shell writes and sends in parallel,
//! §10.2.1 of the dissertation); it counts itself in the commit quorum only up to
//! its own persisted index. A follower acknowledges entries only once they (and
//! its current term) are durable.

use crate::entry::{Entry, EntryPayload};
use crate::error::RaftError;
use crate::message::{ConflictHint, MessageBody};
use crate::node::{RaftNode, Role};
use crate::progress::ReplicationState;
use crate::state::LeaderState;
use bytes::Bytes;
use understudy_types::{limits, LogIndex, NodeId, Term};

/// The fields of an AppendEntries request, as received.
pub(crate) struct AppendRequest {
    pub(crate) previous_log_index: LogIndex,
    pub(crate) previous_log_term: Term,
    pub(crate) entries: Vec<Entry>,
    pub(crate) leader_commit: LogIndex,
    pub(crate) heartbeat_round: u64,
}

impl RaftNode {
    /// Checks that this node may append a proposal now.
    pub(crate) fn check_can_propose(&self) -> Result<(), RaftError> {
        let Some(leader_state) = self.leader_state.as_ref() else {
            return Err(RaftError::NotLeader {
                leader_hint: self.leader,
            });
        };
        if leader_state.transfer.is_some() {
            return Err(RaftError::TransferInProgress);
        }
        Ok(())
    }

    /// Appends an application command on the leader.
    pub(crate) fn propose_command(
        &mut self,
        command: Bytes,
    ) -> Result<(LogIndex, Term), RaftError> {
        self.check_can_propose()?;
        let bytes = command.len() as u64;
        if bytes > limits::RAFT_ENTRY_BYTES_MAX {
            return Err(RaftError::EntryTooLarge {
                bytes,
                limit: limits::RAFT_ENTRY_BYTES_MAX,
            });
        }
        let uncommitted = self.log.last_index().0 - self.log.commit_index().0;
        let uncommitted = usize::try_from(uncommitted).unwrap_or(usize::MAX);
        if uncommitted >= self.config.uncommitted_entries_max {
            return Err(RaftError::TooManyUncommitted { uncommitted });
        }
        Ok(self.append_leader_entry(EntryPayload::Command(command)))
    }

    /// Appends one entry of the current term to the leader's log, emits its
    /// persistence and sends it to the followers.
    pub(crate) fn append_leader_entry(&mut self, payload: EntryPayload) -> (LogIndex, Term) {
        assert!(
            self.role == Role::Leader,
            "only a leader appends its own entries"
        );
        let is_membership = matches!(payload, EntryPayload::Membership(_));
        let entry = Entry {
            term: self.term(),
            index: self.log.last_index().next(),
            payload,
        };
        let appended = (entry.index, entry.term);
        self.log.append(std::slice::from_ref(&entry), true);
        self.persistence.stage_entries(std::slice::from_ref(&entry));
        // Persist first in command order, but do not wait for it: the followers
        // get the entry at once and the leader counts itself once durable.
        self.flush_persist();
        if is_membership {
            self.sync_progress_with_membership();
        }
        self.broadcast_append();
        self.maybe_commit();
        appended
    }

    /// Sends what each follower is missing, as far as its state allows.
    pub(crate) fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer);
        }
    }

    /// Every member the leader replicates to.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        self.leader_state
            .as_ref()
            .map(|state| state.progress.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Sends AppendEntries to `peer`: one probe in `Probe`, as many batches as
    /// the pipeline allows in `Replicate`, snapshot chunks if the entries it
    /// needs were compacted away.
    pub(crate) fn send_append(&mut self, peer: NodeId) {
        loop {
            let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, peer) else {
                return;
            };
            match progress.state {
                ReplicationState::Snapshot(_) => return self.send_snapshot_chunks(peer),
                ReplicationState::Probe { sent: true } => return,
                ReplicationState::Replicate
                    if progress.inflight.len() >= self.config.inflight_appends_max
                        || progress.next_index > self.log.last_index() =>
                {
                    return
                }
                ReplicationState::Probe { sent: false } | ReplicationState::Replicate => {}
            }
            let snapshot_index = self.log.snapshot().last_index;
            if progress.next_index <= snapshot_index {
                progress.become_snapshot(snapshot_index);
                return self.send_snapshot_chunks(peer);
            }
            let previous_log_index = progress.next_index.previous();
            let previous_log_term = self.log.term_at(previous_log_index);
            // next_index > snapshot index, so the previous entry is held or is the
            // snapshot point, and its term is known.
            let previous_log_term = previous_log_term.expect("term of the previous entry is known");
            let entries = self.log.entries_from(
                progress.next_index,
                self.config.append_entries_max,
                self.config.append_bytes_max,
            );
            let last_sent = entries.last().map(|entry| entry.index);
            let verified = last_sent.unwrap_or(previous_log_index);
            progress.commit_told = progress
                .commit_told
                .max(self.log.commit_index().min(verified));
            let probing = matches!(progress.state, ReplicationState::Probe { .. });
            if probing {
                progress.state = ReplicationState::Probe { sent: true };
                progress.stalled_ticks = 0;
            } else if let Some(last_sent) = last_sent {
                progress.inflight.push_back(last_sent);
                progress.next_index = last_sent.next();
            }
            let body = MessageBody::AppendRequest {
                previous_log_index,
                previous_log_term,
                entries,
                leader_commit: self.log.commit_index(),
                heartbeat_round: self.heartbeat_round,
            };
            self.send(peer, body);
            if probing || last_sent.is_none() {
                return;
            }
        }
    }

    /// Starts a new heartbeat round and sends an empty AppendEntries to every
    /// member. It proves leadership (for followers' timers, check-quorum and
    /// ReadIndex) and carries the commit index.
    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.heartbeat_round += 1;
        for peer in self.peers() {
            self.send_heartbeat(peer);
        }
    }

    /// Tells `peer` about a commit index it cannot learn yet from what was sent
    /// to it, with an empty append anchored at its match index. The leader does
    /// this whenever its commit index advances (and after each answer), so
    /// followers apply within a round trip instead of at the next heartbeat.
    pub(crate) fn send_commit_update(&mut self, peer: NodeId) {
        let commit_index = self.log.commit_index();
        let Some(progress) = LeaderState::progress(&self.leader_state, peer) else {
            return;
        };
        let (anchor, _) = self.heartbeat_anchor(progress.match_index);
        // Only if the heartbeat would tell the follower something new; otherwise
        // every answer would trigger another heartbeat.
        let stale = progress.commit_told < commit_index.min(anchor)
            && !matches!(progress.state, ReplicationState::Snapshot(_));
        if stale {
            self.send_heartbeat(peer);
        }
    }

    /// Where a heartbeat to a follower with `match_index` anchors: at the match
    /// index, which the follower is known to hold; or, if that entry was
    /// compacted away (its term is unknown), at index 0, which every log holds —
    /// the follower will get the snapshot.
    fn heartbeat_anchor(&self, match_index: LogIndex) -> (LogIndex, Term) {
        match self.log.term_at(match_index) {
            Some(term) => (match_index, term),
            None => (LogIndex(0), Term(0)),
        }
    }

    /// A heartbeat anchors at the follower's match index (see
    /// `heartbeat_anchor`), so it succeeds without disturbing pipelined appends.
    fn send_heartbeat(&mut self, peer: NodeId) {
        let commit_index = self.log.commit_index();
        let Some(match_index) =
            LeaderState::progress(&self.leader_state, peer).map(|progress| progress.match_index)
        else {
            return;
        };
        let (previous_log_index, previous_log_term) = self.heartbeat_anchor(match_index);
        if let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, peer) {
            progress.commit_told = progress
                .commit_told
                .max(commit_index.min(previous_log_index));
        }
        let body = MessageBody::AppendRequest {
            previous_log_index,
            previous_log_term,
            entries: Vec::new(),
            leader_commit: commit_index,
            heartbeat_round: self.heartbeat_round,
        };
        self.send(peer, body);
    }

    /// A follower handles AppendEntries of the current term (Figure 2, receiver
    /// implementation steps 2-5).
    pub(crate) fn handle_append_request(&mut self, from: NodeId, request: AppendRequest) {
        self.hear_from_leader(from);
        let round = request.heartbeat_round;
        // Entries at or below our snapshot are committed, so they match the
        // leader's; start the comparison at the snapshot point.
        let snapshot = self.log.snapshot();
        let (previous_index, previous_term, entries) =
            if request.previous_log_index < snapshot.last_index {
                let (index, term) = (snapshot.last_index, snapshot.last_term);
                let mut entries = request.entries;
                entries.retain(|entry| entry.index > index);
                (index, term, entries)
            } else {
                (
                    request.previous_log_index,
                    request.previous_log_term,
                    request.entries,
                )
            };
        match self.log.term_at(previous_index) {
            None => {
                let match_index = self.log.last_index();
                self.reject_append(from, match_index, None, round);
            }
            Some(term) if term != previous_term => {
                let hint = ConflictHint {
                    term,
                    first_index: self.log.first_index_of_term_run(previous_index),
                };
                let match_index = self.log.last_index();
                self.reject_append(from, match_index, Some(hint), round);
            }
            Some(_) => {
                let verified = LogIndex(previous_index.0 + entries.len() as u64);
                self.append_from_leader(&entries);
                let commit = request.leader_commit.min(verified);
                if commit > self.log.commit_index() {
                    self.log.commit_to(commit);
                    self.apply_committed();
                }
                self.acknowledge_append(from, verified, round);
            }
        }
    }

    fn reject_append(
        &mut self,
        to: NodeId,
        match_index: LogIndex,
        conflict: Option<ConflictHint>,
        heartbeat_round: u64,
    ) {
        let body = MessageBody::AppendResponse {
            success: false,
            match_index,
            conflict,
            heartbeat_round,
        };
        self.send(to, body);
    }

    /// Appends the entries the log does not already hold, replacing a conflicting
    /// suffix (Figure 2 steps 3-4). Entries already present are left alone: a
    /// duplicated or reordered request must not truncate newer entries.
    fn append_from_leader(&mut self, entries: &[Entry]) {
        let first_new = entries
            .iter()
            .position(|entry| self.log.term_at(entry.index) != Some(entry.term));
        let Some(first_new) = first_new else {
            return;
        };
        let new_entries = &entries[first_new..];
        let start = new_entries[0].index;
        if start <= self.log.last_index() {
            if self.bugs.keep_conflicting_suffix {
                self.log.overwrite_in_place(new_entries);
                let suffix = self.log.entries_from(start, usize::MAX, u64::MAX);
                self.persistence.cap_records_below(start);
                self.persistence.stage_entries(&suffix);
                return;
            }
            self.truncate_log_from(start);
        }
        self.log.append(new_entries, true);
        self.persistence.stage_entries(new_entries);
    }

    /// Removes the log suffix from `index` (a follower's conflicting entries).
    pub(crate) fn truncate_log_from(&mut self, index: LogIndex) {
        assert!(
            self.role != Role::Leader,
            "a leader never truncates its own log"
        );
        self.log.truncate_from(index);
        self.persistence.cap_records_below(index);
    }

    /// Acknowledges that the log matches the leader's up to `match_index`, once
    /// that prefix and the current term are durable.
    fn acknowledge_append(&mut self, to: NodeId, match_index: LogIndex, heartbeat_round: u64) {
        let body = MessageBody::AppendResponse {
            success: true,
            match_index,
            conflict: None,
            heartbeat_round,
        };
        let durable =
            match_index <= self.log.persisted_index() && self.persistence.hard_state_durable();
        if durable || self.bugs.acknowledge_before_durable {
            self.send(to, body);
        } else {
            self.send_when_durable(to, body);
        }
    }

    /// The leader handles an AppendEntries answer of its term.
    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict: Option<ConflictHint>,
        heartbeat_round: u64,
    ) {
        let last_index = self.log.last_index();
        let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, from) else {
            return;
        };
        progress.recently_active = true;
        progress.acknowledged_round = progress.acknowledged_round.max(heartbeat_round);
        if success {
            assert!(
                match_index <= last_index,
                "{from} acknowledged {match_index} beyond the leader's last index {last_index}"
            );
            let advanced = progress.acknowledge(match_index);
            match &progress.state {
                ReplicationState::Probe { .. }
                    if progress.match_index.next() >= progress.next_index =>
                {
                    progress.become_replicate()
                }
                ReplicationState::Snapshot(transfer)
                    if progress.match_index >= transfer.last_index =>
                {
                    progress.become_replicate()
                }
                _ => {}
            }
            if advanced {
                self.maybe_commit();
            }
            self.maybe_send_timeout_now(from);
        } else {
            self.handle_append_rejection(from, match_index, conflict);
        }
        self.check_pending_reads();
        self.send_append(from);
        self.send_commit_update(from);
    }

    /// Backs up `next_index` after a rejection using the conflict hint (the
    /// accelerated back-up of §5.3, in the 6.5840 XTerm/XIndex/XLen form): one
    /// round trip per conflicting *term*, not per entry.
    fn handle_append_rejection(
        &mut self,
        from: NodeId,
        follower_last_index: LogIndex,
        conflict: Option<ConflictHint>,
    ) {
        let next_index = match conflict {
            // The follower's log is too short: continue right after its end.
            None => follower_last_index.next(),
            Some(hint) => match self.log.last_index_of_term(hint.term) {
                // We have the term: our entries of it match the follower's up to
                // our last one, so resume after it.
                Some(last_of_term) => last_of_term.next(),
                // We lack the term: skip the follower's whole run of it.
                None => hint.first_index,
            },
        };
        let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, from) else {
            return;
        };
        // A fresh rejection always points above the match index; one that does
        // not is a stale duplicate. Rejections of appends sent before a snapshot
        // stream started are stale too.
        if next_index <= progress.match_index
            || matches!(progress.state, ReplicationState::Snapshot(_))
        {
            return;
        }
        let next_index = next_index.min(progress.next_index);
        progress.become_probe(next_index);
    }

    /// Advances the leader's commit index to the highest index stored on a
    /// quorum of voters, if that entry is of the current term (§5.4.2: earlier
    /// terms' entries commit only indirectly — the Figure 8 rule).
    pub(crate) fn maybe_commit(&mut self) {
        let Some(leader_state) = self.leader_state.as_ref() else {
            return;
        };
        let own_match = if self.bugs.acknowledge_before_durable {
            self.log.last_index()
        } else {
            self.log.persisted_index()
        };
        let membership = self.log.membership();
        let mut matches: Vec<LogIndex> = membership
            .voters
            .iter()
            .map(|voter| {
                if *voter == self.config.id {
                    own_match
                } else {
                    leader_state
                        .progress
                        .get(voter)
                        .map_or(LogIndex(0), |progress| progress.match_index)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[membership.quorum() - 1];
        if candidate <= self.log.commit_index() {
            return;
        }
        let of_current_term = self.log.term_at(candidate) == Some(self.term());
        if of_current_term || self.bugs.commit_earlier_term_by_counting {
            self.log.commit_to(candidate);
            self.apply_committed();
            for peer in self.peers() {
                self.send_commit_update(peer);
            }
            self.after_leader_commit();
        }
    }

    /// What a new commit index unblocks on the leader: reads waiting for the
    /// term's first commit, and a removed leader's step-down.
    fn after_leader_commit(&mut self) {
        self.release_reads_awaiting_term_commit();
        if !self.is_voter() && self.log.commit_index() >= self.log.membership_index() {
            self.step_down_after_removal();
        }
    }
}
