//! Persistence ordering: which state changes are waiting to become durable, and
//! which outgoing messages wait for them.
//!
//! Changes to the term, the vote and the log are *staged* while the core handles
//! one input and emitted as a single `Command::Persist` at the end of it (or
//! earlier, when a message must be gated on them). Each emitted request gets the
//! next `PersistId` and a *record* of the highest log index it writes. When the
//! shell reports `handle_persisted(id)`, every record up to `id` is complete and
//! the persisted index advances to what those records cover.
//!
//! A later truncation caps every earlier record at the index before the
//! truncation point: the shell executes requests in order, so once the old
//! request is durable the entries below the truncation point are durable, but the
//! entries at and above it are being replaced and only the newer request can make
//! them durable. Without the cap an old id could mark newer entries at the same
//! index as durable.
//!
//! Messages that promise durability (a granted vote, an append acknowledgement,
//! a completed snapshot install) are held in `gated` with the id they wait for
//! and released, in order, by `handle_persisted`.

use crate::command::PersistId;
use crate::entry::{Entry, HardState};
use crate::message::{Message, MessageBody};
use std::collections::VecDeque;
use understudy_types::{limits, LogIndex};

/// A persistence request that has been emitted but not yet reported durable.
#[derive(Debug)]
struct PersistRecord {
    id: PersistId,
    /// The highest log index this request makes durable, capped by any later
    /// truncation; `None` for a request that writes only the hard state.
    covers: Option<LogIndex>,
}

/// The staging area and the bookkeeping for outstanding persistence requests.
#[derive(Debug, Default)]
pub(crate) struct Persistence {
    /// The id of the latest emitted request (0: none yet).
    last_issued: PersistId,
    /// The highest id reported durable.
    persisted: PersistId,
    /// The id of the latest request that carried a hard state.
    last_hard_state: PersistId,
    staged_hard_state: Option<HardState>,
    staged_entries: Vec<Entry>,
    records: VecDeque<PersistRecord>,
    gated: VecDeque<(PersistId, Message)>,
}

/// What to emit as one `Command::Persist`.
pub(crate) struct PersistRequest {
    pub(crate) id: PersistId,
    pub(crate) hard_state: Option<HardState>,
    pub(crate) entries: Vec<Entry>,
}

impl Persistence {
    /// Stages a new term or vote; the latest staged value wins.
    pub(crate) fn stage_hard_state(&mut self, hard_state: HardState) {
        self.staged_hard_state = Some(hard_state);
    }

    /// Stages entries to write. If they start at or before the end of what is
    /// already staged, the staged entries from that index on are replaced (the
    /// same rule the shell applies to stored entries).
    pub(crate) fn stage_entries(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        if let Some(staged_first) = self.staged_entries.first() {
            if first.index <= staged_first.index {
                self.staged_entries.clear();
            } else {
                let keep = first.index.0 - staged_first.index.0;
                let keep = usize::try_from(keep).unwrap_or(usize::MAX);
                assert!(
                    keep <= self.staged_entries.len(),
                    "staged entries would leave a gap before {}",
                    first.index
                );
                self.staged_entries.truncate(keep);
            }
        }
        self.staged_entries.extend_from_slice(entries);
    }

    /// Records that the log was truncated from `index`: no earlier request may
    /// mark an entry at or above `index` durable.
    pub(crate) fn cap_records_below(&mut self, index: LogIndex) {
        let cap = index.previous();
        for record in &mut self.records {
            if let Some(covers) = record.covers.as_mut() {
                *covers = (*covers).min(cap);
            }
        }
        // An acknowledgement waiting for durability vouches for entries that are
        // being replaced: sent later, it would tell an old leader that this node
        // holds entries it no longer has, and that leader could count it toward
        // committing them. Drop it; the leader retransmits what it still needs.
        self.gated.retain(|(_, message)| {
            !matches!(
                message.body,
                MessageBody::AppendResponse {
                    success: true,
                    match_index,
                    ..
                } if match_index >= index
            )
        });
    }

    /// Takes the staged changes as a request with a fresh id, if anything is staged.
    pub(crate) fn take_staged(&mut self) -> Option<PersistRequest> {
        if self.staged_hard_state.is_none() && self.staged_entries.is_empty() {
            return None;
        }
        let id = self.next_id();
        let hard_state = self.staged_hard_state.take();
        if hard_state.is_some() {
            self.last_hard_state = id;
        }
        let entries = std::mem::take(&mut self.staged_entries);
        self.records.push_back(PersistRecord {
            id,
            covers: entries.last().map(|entry| entry.index),
        });
        Some(PersistRequest {
            id,
            hard_state,
            entries,
        })
    }

    /// Allocates an id for a snapshot install that makes `last_index` durable.
    pub(crate) fn issue_snapshot_id(&mut self, last_index: LogIndex) -> PersistId {
        assert!(
            self.staged_hard_state.is_none() && self.staged_entries.is_empty(),
            "staged changes must be emitted before a snapshot install"
        );
        let id = self.next_id();
        self.records.push_back(PersistRecord {
            id,
            covers: Some(last_index),
        });
        id
    }

    fn next_id(&mut self) -> PersistId {
        self.last_issued = PersistId(self.last_issued.0 + 1);
        self.last_issued
    }

    /// The latest emitted id.
    pub(crate) fn last_issued(&self) -> PersistId {
        self.last_issued
    }

    /// Whether every emitted request is durable.
    pub(crate) fn all_durable(&self) -> bool {
        self.persisted >= self.last_issued
    }

    /// Whether the latest term and vote are durable.
    pub(crate) fn hard_state_durable(&self) -> bool {
        self.persisted >= self.last_hard_state && self.staged_hard_state.is_none()
    }

    /// Whether request `id` is durable.
    pub(crate) fn is_durable(&self, id: PersistId) -> bool {
        self.persisted >= id
    }

    /// Holds `message` until request `id` is durable. If too many are held (the
    /// disk is far behind), the message is dropped instead: every gated message
    /// is an answer its sender can do without (appends are retransmitted, a
    /// candidate campaigns again).
    pub(crate) fn gate(&mut self, id: PersistId, message: Message) {
        assert!(
            !self.is_durable(id),
            "gating a message on a durable request"
        );
        if self.gated.len() < limits::RAFT_GATED_MESSAGES_MAX {
            self.gated.push_back((id, message));
        }
    }

    /// Marks every request up to `id` durable. Returns the highest log index the
    /// completed requests cover (if any) and the messages released, in order.
    /// Ids at or below the already persisted one are ignored.
    pub(crate) fn complete(&mut self, id: PersistId) -> (Option<LogIndex>, Vec<Message>) {
        assert!(
            id <= self.last_issued,
            "handle_persisted({}) for an id never issued (latest {})",
            id.0,
            self.last_issued.0
        );
        if id <= self.persisted {
            return (None, Vec::new());
        }
        self.persisted = id;
        let mut covered: Option<LogIndex> = None;
        while self.records.front().is_some_and(|record| record.id <= id) {
            // The loop condition checked that a front record exists.
            let record = self.records.pop_front().expect("front record exists");
            if let Some(covers) = record.covers {
                covered = Some(covered.map_or(covers, |previous| previous.max(covers)));
            }
        }
        let mut released = Vec::new();
        while self.gated.front().is_some_and(|(gate, _)| *gate <= id) {
            // The loop condition checked that a front message exists.
            let (_, message) = self.gated.pop_front().expect("front message exists");
            released.push(message);
        }
        (covered, released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryPayload;
    use understudy_types::Term;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Empty,
        }
    }

    /// A truncation after a request was emitted caps what that request covers, so
    /// that its completion cannot mark the replacing entries durable.
    #[test]
    fn truncation_caps_earlier_requests() {
        let mut persistence = Persistence::default();
        persistence.stage_entries(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let first = persistence.take_staged().expect("staged");
        persistence.cap_records_below(LogIndex(2));
        persistence.stage_entries(&[entry(2, 2)]);
        let second = persistence.take_staged().expect("staged");
        assert_eq!(persistence.complete(first.id).0, Some(LogIndex(1)));
        assert_eq!(persistence.complete(second.id).0, Some(LogIndex(2)));
    }

    /// A truncation drops gated acknowledgements of entries it replaces, so that
    /// a durable replacement does not release a promise about the old entries.
    #[test]
    fn truncation_drops_gated_acknowledgements_of_replaced_entries() {
        let mut persistence = Persistence::default();
        persistence.stage_entries(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        let first = persistence.take_staged().expect("staged");
        let acknowledgement = |match_index: u64| Message {
            group: understudy_types::GroupId(0),
            from: understudy_types::NodeId(2),
            to: understudy_types::NodeId(1),
            term: Term(1),
            body: MessageBody::AppendResponse {
                success: true,
                match_index: LogIndex(match_index),
                conflict: None,
                heartbeat_round: 0,
            },
        };
        persistence.gate(first.id, acknowledgement(1));
        persistence.gate(first.id, acknowledgement(3));
        persistence.cap_records_below(LogIndex(2));
        persistence.stage_entries(&[entry(2, 2)]);
        let second = persistence.take_staged().expect("staged");
        let (_, released) = persistence.complete(second.id);
        assert_eq!(released, vec![acknowledgement(1)]);
    }

    /// Staging entries that start inside the staged range replaces the staged
    /// suffix, matching the shell's rule for stored entries.
    #[test]
    fn staging_replaces_a_staged_suffix() {
        let mut persistence = Persistence::default();
        persistence.stage_entries(&[entry(4, 1), entry(5, 1), entry(6, 1)]);
        persistence.stage_entries(&[entry(5, 2)]);
        let request = persistence.take_staged().expect("staged");
        assert_eq!(request.entries, vec![entry(4, 1), entry(5, 2)]);
    }

    /// Completing an old id again is harmless; messages are released in order.
    #[test]
    fn stale_completion_is_ignored_and_gates_release_in_order() {
        let mut persistence = Persistence::default();
        persistence.stage_entries(&[entry(1, 1)]);
        let first = persistence.take_staged().expect("staged");
        let message = |to: u64| Message {
            group: understudy_types::GroupId(0),
            from: understudy_types::NodeId(1),
            to: understudy_types::NodeId(to),
            term: Term(1),
            body: crate::message::MessageBody::TimeoutNow,
        };
        persistence.gate(first.id, message(2));
        persistence.gate(first.id, message(3));
        let (covered, released) = persistence.complete(first.id);
        assert_eq!(covered, Some(LogIndex(1)));
        assert_eq!(released, vec![message(2), message(3)]);
        assert_eq!(persistence.complete(first.id), (None, Vec::new()));
    }

    /// What a test does to a follower's log and its persistence.
    #[derive(Clone, Debug)]
    enum Operation {
        /// Append this many entries of the current term.
        Append(usize),
        /// Truncate at a position (modulo the log length) and append one entry
        /// of a newer term there, as a follower does on a conflict.
        Conflict(u64),
        /// Emit the staged changes as a request.
        Flush,
        /// The shell makes this many of the oldest requests durable, in order.
        Complete(usize),
    }

    fn operation() -> impl proptest::strategy::Strategy<Value = Operation> {
        use proptest::prelude::*;
        prop_oneof![
            (1usize..4).prop_map(Operation::Append),
            any::<u64>().prop_map(Operation::Conflict),
            Just(Operation::Flush),
            (1usize..3).prop_map(Operation::Complete),
        ]
    }

    proptest::proptest! {
        /// Whatever the interleaving of appends, truncations, emitted requests and
        /// completions, every index up to the persisted index is on the (in-order)
        /// disk with exactly the entry the log holds in memory.
        #[test]
        fn the_persisted_index_never_overstates_the_disk(
            operations in proptest::collection::vec(operation(), 1..80)
        ) {
            use crate::log::RaftLog;
            let mut log = RaftLog::restore(Default::default(), bytes::Bytes::new(), Vec::new());
            let mut persistence = Persistence::default();
            let mut term = 1;
            let mut issued: VecDeque<PersistRequest> = VecDeque::new();
            let mut disk: Vec<Entry> = Vec::new();
            for operation in operations {
                match operation {
                    Operation::Append(count) => {
                        let start = log.last_index().0 + 1;
                        let entries: Vec<Entry> =
                            (start..start + count as u64).map(|index| entry(index, term)).collect();
                        log.append(&entries, true);
                        persistence.stage_entries(&entries);
                    }
                    Operation::Conflict(position) => {
                        let last = log.last_index().0;
                        if last == 0 {
                            continue;
                        }
                        let index = LogIndex(1 + position % last);
                        term += 1;
                        log.truncate_from(index);
                        persistence.cap_records_below(index);
                        let replacement = [entry(index.0, term)];
                        log.append(&replacement, true);
                        persistence.stage_entries(&replacement);
                    }
                    Operation::Flush => issued.extend(persistence.take_staged()),
                    Operation::Complete(count) => {
                        let mut last_id = None;
                        for request in issued.drain(..count.min(issued.len())) {
                            if let Some(first) = request.entries.first() {
                                disk.retain(|stored| stored.index < first.index);
                                disk.extend(request.entries.iter().cloned());
                            }
                            last_id = Some(request.id);
                        }
                        if let Some(id) = last_id {
                            if let (Some(covered), _) = persistence.complete(id) {
                                log.persisted_to(covered);
                            }
                        }
                    }
                }
                for index in 1..=log.persisted_index().0 {
                    let on_disk = disk.get(index as usize - 1);
                    proptest::prop_assert_eq!(on_disk, log.entry(LogIndex(index)));
                }
            }
        }
    }
}
