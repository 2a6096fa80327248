//! Checks on what a node starts from: its configuration and the state the shell
//! read back from disk. A node must not start from a state it could not have
//! written itself; the shell reports the reason and refuses to run.

use crate::config::Config;
use crate::entry::{EntryPayload, Membership};
use crate::error::RaftError;
use crate::node::RestoredState;
use understudy_types::{limits, LogIndex, Term};

/// Checks the configuration's numbers against each other and the limits.
pub(crate) fn validate_config(config: &Config) -> Result<(), RaftError> {
    let fail = |reason: &str| {
        Err(RaftError::InvalidConfig {
            reason: reason.to_string(),
        })
    };
    if config.election_timeout_ticks == 0 || config.election_timeout_ticks > u32::MAX / 4 {
        return fail("election_timeout_ticks must be positive and below u32::MAX / 4");
    }
    if config.heartbeat_interval_ticks == 0
        || config.heartbeat_interval_ticks >= config.election_timeout_ticks
    {
        return fail("heartbeat_interval_ticks must be positive and below election_timeout_ticks");
    }
    if config.append_entries_max == 0 || config.append_entries_max > limits::RAFT_APPEND_ENTRIES_MAX
    {
        return fail("append_entries_max must be in 1..=RAFT_APPEND_ENTRIES_MAX");
    }
    if config.append_bytes_max == 0 || config.append_bytes_max > limits::RAFT_APPEND_BYTES_MAX {
        return fail("append_bytes_max must be in 1..=RAFT_APPEND_BYTES_MAX");
    }
    if config.inflight_appends_max == 0
        || config.inflight_appends_max > limits::RAFT_INFLIGHT_APPENDS_MAX
    {
        return fail("inflight_appends_max must be in 1..=RAFT_INFLIGHT_APPENDS_MAX");
    }
    if config.snapshot_chunk_bytes_max == 0
        || config.snapshot_chunk_bytes_max > limits::RAFT_SNAPSHOT_CHUNK_BYTES_MAX
    {
        return fail("snapshot_chunk_bytes_max must be in 1..=RAFT_SNAPSHOT_CHUNK_BYTES_MAX");
    }
    if config.uncommitted_entries_max == 0
        || config.uncommitted_entries_max > limits::RAFT_UNCOMMITTED_ENTRIES_MAX
    {
        return fail("uncommitted_entries_max must be in 1..=RAFT_UNCOMMITTED_ENTRIES_MAX");
    }
    Ok(())
}

/// Whether a membership fits the limits and names each node in one role only.
pub(crate) fn membership_is_valid(membership: &Membership) -> bool {
    membership.voters.len() + membership.learners.len() <= limits::RAFT_MEMBERS_MAX
        && membership.voters.is_disjoint(&membership.learners)
}

/// Checks that the restored snapshot, entries and hard state fit together.
pub(crate) fn validate_restored_state(restored: &RestoredState) -> Result<(), RaftError> {
    let fail = |reason: String| Err(RaftError::InconsistentRestoredState { reason });
    let (meta, data) = &restored.snapshot;
    if meta.last_index == LogIndex(0) && meta.last_term != Term(0) {
        return fail(format!("snapshot at index 0 has term {}", meta.last_term));
    }
    if data.len() as u64 > limits::SNAPSHOT_BYTES_MAX {
        return fail(format!(
            "snapshot of {} bytes exceeds the limit",
            data.len()
        ));
    }
    if !membership_is_valid(&meta.membership) {
        return fail("snapshot membership is too large or overlapping".to_string());
    }
    let mut previous_index = meta.last_index;
    let mut previous_term = meta.last_term;
    let mut last_entry_term = None;
    for entry in &restored.entries {
        if entry.index != previous_index.next() {
            return fail(format!(
                "entry {} does not follow {previous_index} (entries must be consecutive after the snapshot)",
                entry.index
            ));
        }
        if entry.term < previous_term {
            return fail(format!(
                "entry {} has term {} below the previous term {previous_term}",
                entry.index, entry.term
            ));
        }
        match &entry.payload {
            EntryPayload::Command(bytes) if bytes.len() as u64 > limits::RAFT_ENTRY_BYTES_MAX => {
                return fail(format!(
                    "entry {} exceeds RAFT_ENTRY_BYTES_MAX",
                    entry.index
                ));
            }
            EntryPayload::Membership(membership) if !membership_is_valid(membership) => {
                return fail(format!("entry {} holds an invalid membership", entry.index));
            }
            _ => {}
        }
        previous_index = entry.index;
        previous_term = entry.term;
        last_entry_term = Some(entry.term);
    }
    // Entries are written after (or with) the term that created them, so a
    // durable entry never has a newer term than the durable hard state. The
    // snapshot is different: the application may snapshot committed entries
    // before this node's own term change was durable (see `RaftNode::new`).
    if let Some(last_entry_term) = last_entry_term {
        if restored.hard_state.term < last_entry_term {
            return fail(format!(
                "hard state term {} is below the last entry's term {last_entry_term}",
                restored.hard_state.term
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Entry, HardState};
    use understudy_types::NodeId;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Empty,
        }
    }

    fn restored(term: u64, entries: Vec<Entry>) -> RestoredState {
        let mut state = RestoredState::bootstrap([NodeId(1)]);
        state.hard_state = HardState {
            term: Term(term),
            voted_for: None,
        };
        state.entries = entries;
        state
    }

    #[test]
    fn accepts_a_consistent_state() {
        assert!(validate_restored_state(&restored(3, vec![entry(1, 1), entry(2, 3)])).is_ok());
    }

    #[test]
    fn refuses_gaps_decreasing_terms_and_a_stale_hard_state() {
        for state in [
            restored(3, vec![entry(2, 1)]),
            restored(3, vec![entry(1, 1), entry(3, 1)]),
            restored(3, vec![entry(1, 2), entry(2, 1)]),
            restored(1, vec![entry(1, 2)]),
        ] {
            assert!(matches!(
                validate_restored_state(&state),
                Err(RaftError::InconsistentRestoredState { .. })
            ));
        }
    }

    #[test]
    fn refuses_a_heartbeat_interval_not_below_the_election_timeout() {
        let mut config = Config::new(NodeId(1), understudy_types::GroupId(0), 1);
        config.heartbeat_interval_ticks = config.election_timeout_ticks;
        assert!(matches!(
            validate_config(&config),
            Err(RaftError::InvalidConfig { .. })
        ));
    }
}
