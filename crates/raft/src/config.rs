//! How a Raft node is configured. Time is counted in ticks: the shell calls
//! `tick()` at a fixed interval and the core never reads a clock.

use understudy_types::{limits, GroupId, NodeId};

/// The configuration of one Raft node in one group.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// The group this node belongs to; messages for other groups are refused.
    pub group: GroupId,
    /// The shortest election timeout. Each timeout is drawn uniformly from
    /// `[election_timeout_ticks, 2 * election_timeout_ticks)`.
    pub election_timeout_ticks: u32,
    /// How often a leader sends heartbeats. Must be well below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Entries per AppendEntries message, at most.
    pub append_entries_max: usize,
    /// Entry payload bytes per AppendEntries message, at most.
    pub append_bytes_max: u64,
    /// AppendEntries in flight to one follower, at most (pipelining depth).
    pub inflight_appends_max: usize,
    /// Snapshot bytes per InstallSnapshot chunk.
    pub snapshot_chunk_bytes_max: u64,
    /// Uncommitted proposals a leader accepts before refusing more.
    pub uncommitted_entries_max: usize,
    /// Run a pre-vote round before every election (dissertation §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps
    /// down; followers that heard from a leader within the minimum election
    /// timeout refuse votes (dissertation §6.2, §9.6).
    pub check_quorum: bool,
    /// Seeds the election-timeout jitter. The core draws no other randomness, so
    /// the same seed and the same inputs give the same outputs.
    pub random_seed: u64,
    /// Test-only switches for deliberate bugs; all off by default.
    #[cfg(feature = "deliberate-bugs")]
    pub deliberate_bugs: DeliberateBugs,
}

impl Config {
    /// A configuration with the defaults used by the node: 10 ticks minimum
    /// election timeout, a heartbeat every tick, pre-vote and check-quorum on.
    pub fn new(id: NodeId, group: GroupId, random_seed: u64) -> Config {
        Config {
            id,
            group,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            append_entries_max: limits::RAFT_APPEND_ENTRIES_MAX,
            append_bytes_max: limits::RAFT_APPEND_BYTES_MAX,
            inflight_appends_max: limits::RAFT_INFLIGHT_APPENDS_MAX,
            snapshot_chunk_bytes_max: limits::RAFT_SNAPSHOT_CHUNK_BYTES_MAX,
            uncommitted_entries_max: limits::RAFT_UNCOMMITTED_ENTRIES_MAX,
            pre_vote: true,
            check_quorum: true,
            random_seed,
            #[cfg(feature = "deliberate-bugs")]
            deliberate_bugs: DeliberateBugs::default(),
        }
    }
}

/// Deliberate protocol bugs, compiled in only with the `deliberate-bugs` feature,
/// so that tests can prove the simulator finds each one.
#[cfg(feature = "deliberate-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliberateBugs {
    /// Commit an entry of an earlier term by counting replicas (the Figure 8 bug).
    pub commit_earlier_term_by_counting: bool,
    /// Grant votes without the "candidate's log is at least as up-to-date" check.
    pub vote_without_log_check: bool,
    /// Acknowledge AppendEntries before the entries are durable.
    pub acknowledge_before_durable: bool,
    /// Append new entries after a conflict without truncating the conflicting suffix.
    pub keep_conflicting_suffix: bool,
}
