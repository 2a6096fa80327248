//! Shape checks on incoming messages. The wire decoder bounds sizes before it
//! allocates; these checks make sure a decoded message also makes sense before
//! the protocol logic relies on it (a malformed message is dropped, not obeyed).

use crate::entry::EntryPayload;
use crate::message::{Message, MessageBody};
use crate::restore::membership_is_valid;
use understudy_types::{limits, LogIndex, Term};

/// Whether the message is within the limits and internally consistent.
pub(crate) fn message_is_well_formed(message: &Message) -> bool {
    match &message.body {
        MessageBody::AppendRequest {
            previous_log_index,
            previous_log_term,
            entries,
            ..
        } => {
            if entries.len() > limits::RAFT_APPEND_ENTRIES_MAX
                || *previous_log_term > message.term
                || (*previous_log_index == LogIndex(0) && *previous_log_term != Term(0))
            {
                return false;
            }
            let mut expected_index = previous_log_index.next();
            let mut previous_term = *previous_log_term;
            for entry in entries {
                let payload_ok = match &entry.payload {
                    EntryPayload::Empty => true,
                    EntryPayload::Command(bytes) => {
                        bytes.len() as u64 <= limits::RAFT_ENTRY_BYTES_MAX
                    }
                    EntryPayload::Membership(membership) => membership_is_valid(membership),
                };
                if !payload_ok
                    || entry.index != expected_index
                    || entry.term < previous_term
                    || entry.term > message.term
                {
                    return false;
                }
                expected_index = expected_index.next();
                previous_term = entry.term;
            }
            true
        }
        MessageBody::SnapshotChunk {
            meta,
            offset,
            total_bytes,
            data,
        } => {
            let data_bytes = data.len() as u64;
            data_bytes <= limits::RAFT_SNAPSHOT_CHUNK_BYTES_MAX
                && *total_bytes <= limits::SNAPSHOT_BYTES_MAX
                && offset
                    .checked_add(data_bytes)
                    .is_some_and(|end| end <= *total_bytes)
                && meta.last_index > LogIndex(0)
                && meta.last_term <= message.term
                && membership_is_valid(&meta.membership)
        }
        MessageBody::PreVoteRequest { .. }
        | MessageBody::PreVoteResponse { .. }
        | MessageBody::VoteRequest { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::AppendResponse { .. }
        | MessageBody::SnapshotResponse { .. }
        | MessageBody::TimeoutNow => true,
    }
}
