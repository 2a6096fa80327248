//! The messages Raft nodes exchange. Every message names its group, its sender and
//! its receiver, and the sender's current term; the body says what it is.

use crate::entry::{Entry, SnapshotMeta};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use understudy_types::{GroupId, LogIndex, NodeId, Term};

/// One message between two members of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The group the message belongs to; a node hosting many groups routes by it.
    pub group: GroupId,
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term, or for a pre-vote request the term the sender would
    /// campaign in.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" Sent before a real election (§9.6 of the
    /// dissertation) so that a node that was cut off cannot disrupt a working
    /// leader by inflating terms. Does not change the receiver's term.
    PreVoteRequest {
        /// The index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// The term of the candidate's last log entry.
        last_log_term: Term,
    },
    /// The answer to a pre-vote request.
    PreVoteResponse {
        /// Whether the receiver would grant its vote.
        granted: bool,
    },
    /// RequestVote (Figure 2).
    VoteRequest {
        /// The index of the candidate's last log entry.
        last_log_index: LogIndex,
        /// The term of the candidate's last log entry.
        last_log_term: Term,
        /// Set when the election follows a leadership transfer (TimeoutNow); the
        /// receiver then votes even if it heard from a leader recently.
        leadership_transfer: bool,
    },
    /// The answer to RequestVote, sent only after the vote is durable.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (Figure 2); with no entries it is a heartbeat.
    AppendRequest {
        /// The index of the entry just before `entries`.
        previous_log_index: LogIndex,
        /// The term of that entry.
        previous_log_term: Term,
        /// The entries to store, possibly none.
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
        /// The leader's heartbeat round, echoed in the response; ReadIndex uses it
        /// to learn that a quorum still follows this leader.
        heartbeat_round: u64,
    },
    /// The answer to AppendEntries, sent only after the entries are durable.
    AppendResponse {
        /// Whether the follower's log matched at `previous_log_index`.
        success: bool,
        /// On success, the last index the follower now holds that matches the
        /// leader's log. On failure, the follower's last log index.
        match_index: LogIndex,
        /// On failure, a hint for fast back-up of a divergent log: the term of the
        /// follower's conflicting entry and the first index the follower holds in
        /// that term, or `None` if the follower's log is too short.
        conflict: Option<ConflictHint>,
        /// The echoed heartbeat round of the request.
        heartbeat_round: u64,
    },
    /// One chunk of InstallSnapshot (Figure 13), sent in bounded pieces.
    SnapshotChunk {
        /// What the snapshot covers.
        meta: SnapshotMeta,
        /// The byte offset of `data` in the snapshot.
        offset: u64,
        /// The snapshot's total size in bytes.
        total_bytes: u64,
        /// At most `RAFT_SNAPSHOT_CHUNK_BYTES_MAX` bytes.
        data: Bytes,
    },
    /// The answer to a snapshot chunk.
    SnapshotResponse {
        /// The index of the snapshot the response is about.
        last_index: LogIndex,
        /// The offset the follower expects next; equals the total once complete.
        next_offset: u64,
        /// True once the follower has installed the whole snapshot durably.
        installed: bool,
    },
    /// Leadership transfer: "start an election now" (dissertation §3.10).
    TimeoutNow,
}

/// Where a follower's log diverges from the leader's (the accelerated log
/// back-up optimisation, §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictHint {
    /// The term of the follower's entry at the leader's `previous_log_index`.
    pub term: Term,
    /// The first index the follower holds with that term.
    pub first_index: LogIndex,
}
