//! The small pieces of volatile state a node keeps besides its log: timers, the
//! votes of a campaign, and what only a leader tracks.

use crate::config::Config;
use crate::progress::Progress;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use understudy_types::{LogIndex, NodeId};

/// Logical time, counted in ticks.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Ticks since the election timer was last reset. On a leader it counts the
    /// current check-quorum period instead.
    pub(crate) election_elapsed_ticks: u32,
    /// The current randomized election timeout, drawn from
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    pub(crate) randomized_election_timeout_ticks: u32,
    /// Ticks since the leader last broadcast heartbeats.
    pub(crate) heartbeat_elapsed_ticks: u32,
}

/// The votes gathered by a pre-candidate or candidate in its current round.
#[derive(Debug, Default)]
pub(crate) struct Campaign {
    /// Voters that granted (for a pre-candidate: including itself).
    pub(crate) granted: BTreeSet<NodeId>,
    /// Voters that refused.
    pub(crate) rejected: BTreeSet<NodeId>,
    /// For a candidate: the persistence request holding its term and self-vote.
    /// Its own vote counts only once that request is durable.
    pub(crate) self_vote: Option<crate::command::PersistId>,
}

/// A linearizable read waiting for its leadership confirmation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingRead {
    /// The caller's identifier.
    pub(crate) context: u64,
    /// The commit index when the read was registered: its read point.
    pub(crate) index: LogIndex,
    /// A quorum must echo this heartbeat round (or a later one).
    pub(crate) round: u64,
}

/// A leadership transfer under way (dissertation §3.10).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    /// The node that should take over.
    pub(crate) target: NodeId,
    /// Ticks since the transfer started; it is abandoned after an election timeout.
    pub(crate) elapsed_ticks: u32,
    /// TimeoutNow has been sent.
    pub(crate) timeout_now_sent: bool,
}

/// What only a leader tracks. Dropped when it steps down.
#[derive(Debug, Default)]
pub(crate) struct LeaderState {
    /// Every other member (voters and learners).
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// The index of the empty entry that opened this term. Until it commits the
    /// leader does not know the commit index of earlier terms (§5.4.2, §6.4):
    /// membership changes and reads wait for it.
    pub(crate) term_start_index: LogIndex,
    /// Reads waiting for `term_start_index` to commit.
    pub(crate) reads_awaiting_term_commit: VecDeque<u64>,
    /// Reads waiting for a quorum to confirm leadership, in round order.
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// A leadership transfer under way.
    pub(crate) transfer: Option<Transfer>,
}

impl LeaderState {
    /// The progress of `peer`, if this node leads and `peer` is a member. Takes
    /// the field rather than `self` so callers can use the log at the same time.
    pub(crate) fn progress(leader_state: &Option<LeaderState>, peer: NodeId) -> Option<&Progress> {
        leader_state.as_ref()?.progress.get(&peer)
    }

    /// The mutable progress of `peer`; see [`LeaderState::progress`].
    pub(crate) fn progress_mut(
        leader_state: &mut Option<LeaderState>,
        peer: NodeId,
    ) -> Option<&mut Progress> {
        leader_state.as_mut()?.progress.get_mut(&peer)
    }
}

impl LeaderState {
    /// The number of reads this leader is holding.
    pub(crate) fn reads_held(&self) -> usize {
        self.reads_awaiting_term_commit.len() + self.pending_reads.len()
    }
}

/// The deliberate bugs switched on for this node; all false without the
/// `deliberate-bugs` feature, so the checks compile away to constants.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ActiveBugs {
    pub(crate) commit_earlier_term_by_counting: bool,
    pub(crate) vote_without_log_check: bool,
    pub(crate) acknowledge_before_durable: bool,
    pub(crate) keep_conflicting_suffix: bool,
}

impl ActiveBugs {
    /// Reads the switches from the configuration.
    #[cfg(feature = "deliberate-bugs")]
    pub(crate) fn from_config(config: &Config) -> Self {
        let bugs = config.deliberate_bugs;
        ActiveBugs {
            commit_earlier_term_by_counting: bugs.commit_earlier_term_by_counting,
            vote_without_log_check: bugs.vote_without_log_check,
            acknowledge_before_durable: bugs.acknowledge_before_durable,
            keep_conflicting_suffix: bugs.keep_conflicting_suffix,
        }
    }

    /// Without the feature every switch is off.
    #[cfg(not(feature = "deliberate-bugs"))]
    pub(crate) fn from_config(_config: &Config) -> Self {
        ActiveBugs::default()
    }
}
