//! What a leader knows about each follower's log, and how it replicates to it.
//!
//! A follower is in one of three states (as in etcd/raft-rs):
//! - `Probe`: the leader does not know where the follower's log matches its own.
//!   It sends one AppendEntries at a time and waits for the answer (or for the
//!   retransmission timeout) before sending another.
//! - `Replicate`: the follower's log matches up to `match_index`. The leader
//!   pipelines up to `inflight_appends_max` AppendEntries, advancing `next_index`
//!   optimistically as it sends. A rejection drops the follower back to `Probe`.
//! - `Snapshot`: the entries the follower needs were compacted away; the leader
//!   streams its snapshot in chunks, a bounded number in flight.

use std::collections::VecDeque;
use understudy_types::LogIndex;

/// How the leader is sending to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// One append at a time until the match point is known.
    Probe {
        /// An append is outstanding; wait for its answer or the retransmit timeout.
        sent: bool,
    },
    /// Pipelined appends; `inflight` holds the last index of each in flight.
    Replicate,
    /// Streaming the snapshot.
    Snapshot(SnapshotTransfer),
}

/// The state of one snapshot stream to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotTransfer {
    /// The index of the snapshot being sent; if the leader's snapshot changes
    /// the stream restarts from offset 0.
    pub(crate) last_index: LogIndex,
    /// The offset of the next chunk to send.
    pub(crate) next_offset: u64,
    /// The offset the follower has acknowledged receiving up to.
    pub(crate) acknowledged_offset: u64,
    /// Whether the final chunk has been sent since the last (re)start.
    pub(crate) final_chunk_sent: bool,
}

impl SnapshotTransfer {
    /// A stream of the snapshot at `last_index`, from the beginning.
    pub(crate) fn new(last_index: LogIndex) -> Self {
        SnapshotTransfer {
            last_index,
            next_offset: 0,
            acknowledged_offset: 0,
            final_chunk_sent: false,
        }
    }
}

/// The leader's view of one follower (voter or learner).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// The highest index known to match the leader's log and be durable there.
    pub(crate) match_index: LogIndex,
    /// The next index to send.
    pub(crate) next_index: LogIndex,
    /// How the leader is sending.
    pub(crate) state: ReplicationState,
    /// The last index of each pipelined append not yet acknowledged.
    pub(crate) inflight: VecDeque<LogIndex>,
    /// Ticks since the follower last made progress (or since the last probe was
    /// sent); drives retransmission of lost appends and chunks.
    pub(crate) stalled_ticks: u32,
    /// The follower answered in the current check-quorum period.
    pub(crate) recently_active: bool,
    /// The highest heartbeat round the follower has echoed in this term.
    pub(crate) acknowledged_round: u64,
    /// The highest commit index a request sent to the follower lets it learn
    /// (`min(leader_commit, last index the request verifies)`).
    pub(crate) commit_told: LogIndex,
}

impl Progress {
    /// A follower whose log position is unknown: probe from `next_index`.
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ReplicationState::Probe { sent: false },
            inflight: VecDeque::new(),
            stalled_ticks: 0,
            recently_active: false,
            acknowledged_round: 0,
            commit_told: LogIndex(0),
        }
    }

    /// Switches to probing from `next_index` (at least one past the match).
    pub(crate) fn become_probe(&mut self, next_index: LogIndex) {
        self.next_index = next_index.max(self.match_index.next());
        self.state = ReplicationState::Probe { sent: false };
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// Switches to pipelined replication right after the match point.
    pub(crate) fn become_replicate(&mut self) {
        self.next_index = self.match_index.next();
        self.state = ReplicationState::Replicate;
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// Switches to streaming the snapshot at `last_index`.
    pub(crate) fn become_snapshot(&mut self, last_index: LogIndex) {
        self.state = ReplicationState::Snapshot(SnapshotTransfer::new(last_index));
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// Records an acknowledgement that the follower's log matches up to `index`.
    /// Returns whether the match index advanced.
    pub(crate) fn acknowledge(&mut self, index: LogIndex) -> bool {
        while self.inflight.front().is_some_and(|last| *last <= index) {
            self.inflight.pop_front();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index.next());
        self.stalled_ticks = 0;
        true
    }

    /// Whether something sent is still unanswered (so a stall means a loss).
    pub(crate) fn has_outstanding(&self) -> bool {
        match &self.state {
            ReplicationState::Probe { sent } => *sent,
            ReplicationState::Replicate => !self.inflight.is_empty(),
            ReplicationState::Snapshot(transfer) => {
                transfer.final_chunk_sent || transfer.next_offset > transfer.acknowledged_offset
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acknowledgements free the pipelined appends they cover and never move the
    /// match index backwards (a reordered old acknowledgement is harmless).
    #[test]
    fn acknowledgements_free_inflight_and_never_regress() {
        let mut progress = Progress::new(LogIndex(1));
        progress.become_replicate();
        progress
            .inflight
            .extend([LogIndex(3), LogIndex(6), LogIndex(9)]);
        progress.next_index = LogIndex(10);
        assert!(progress.acknowledge(LogIndex(6)));
        assert_eq!(progress.inflight, VecDeque::from([LogIndex(9)]));
        assert!(!progress.acknowledge(LogIndex(3)));
        assert_eq!(progress.match_index, LogIndex(6));
        assert_eq!(progress.next_index, LogIndex(10));
    }

    /// Probing never goes at or below the known match point.
    #[test]
    fn probe_stays_above_the_match_index() {
        let mut progress = Progress::new(LogIndex(1));
        progress.acknowledge(LogIndex(5));
        progress.become_probe(LogIndex(2));
        assert_eq!(progress.next_index, LogIndex(6));
    }
}
