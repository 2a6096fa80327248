//! The in-memory Raft log: the latest snapshot's metadata and data, the entries
//! after it, and the indexes that move through it (commit, applied, persisted).
//!
//! The log also knows the membership in force, because a configuration takes
//! effect when it is appended (dissertation §4.1): truncating the log can roll a
//! configuration back, so it is recomputed from the remaining entries and the
//! snapshot whenever entries are removed from the end.

use crate::entry::{Entry, EntryPayload, Membership, SnapshotMeta};
use bytes::Bytes;
use std::collections::VecDeque;
use understudy_types::{LogIndex, Term};

/// The in-memory log of one node.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// What the latest snapshot covers.
    snapshot: SnapshotMeta,
    /// The latest snapshot's serialized state machine, kept to send to followers.
    snapshot_data: Bytes,
    /// Entries after the snapshot: `entries[i].index == snapshot.last_index + 1 + i`.
    entries: VecDeque<Entry>,
    /// The highest index known to be committed. Not persisted (§5.3: it is
    /// volatile state); after a restart it starts at the snapshot index.
    commit_index: LogIndex,
    /// The highest index handed to the shell in an `Apply` or snapshot.
    applied_index: LogIndex,
    /// The highest index known to be durable locally (entries or snapshot).
    persisted_index: LogIndex,
    /// The membership in force: the latest configuration in the log.
    membership: Membership,
    /// The index of the entry that holds `membership`, or the snapshot index.
    membership_index: LogIndex,
}

/// The payload size of an entry, as counted against `append_bytes_max`.
pub(crate) fn payload_bytes(entry: &Entry) -> u64 {
    match &entry.payload {
        EntryPayload::Empty => 0,
        EntryPayload::Command(bytes) => bytes.len() as u64,
        // A node id is eight bytes; the configuration is bounded by RAFT_MEMBERS_MAX.
        EntryPayload::Membership(membership) => {
            8 * (membership.voters.len() + membership.learners.len()) as u64
        }
    }
}

impl RaftLog {
    /// A log restored from durable state. The caller has validated that the
    /// entries are consecutive after the snapshot; everything restored is durable.
    pub(crate) fn restore(
        snapshot: SnapshotMeta,
        snapshot_data: Bytes,
        entries: Vec<Entry>,
    ) -> Self {
        let last_index = entries
            .last()
            .map_or(snapshot.last_index, |entry| entry.index);
        let mut log = RaftLog {
            commit_index: snapshot.last_index,
            applied_index: snapshot.last_index,
            persisted_index: last_index,
            membership: snapshot.membership.clone(),
            membership_index: snapshot.last_index,
            snapshot,
            snapshot_data,
            entries: entries.into(),
        };
        log.recompute_membership();
        log
    }

    /// The snapshot's metadata.
    pub(crate) fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The snapshot's data.
    pub(crate) fn snapshot_data(&self) -> &Bytes {
        &self.snapshot_data
    }

    /// The first index held in memory (the snapshot's last index + 1).
    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot.last_index.next()
    }

    /// The index of the last entry, or of the snapshot if no entries follow it.
    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries
            .back()
            .map_or(self.snapshot.last_index, |entry| entry.index)
    }

    /// The term of the last entry, or of the snapshot.
    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .back()
            .map_or(self.snapshot.last_term, |entry| entry.term)
    }

    /// The commit index.
    pub(crate) fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// The applied index.
    pub(crate) fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// The highest index known durable.
    pub(crate) fn persisted_index(&self) -> LogIndex {
        self.persisted_index
    }

    /// The membership in force and the index that set it.
    pub(crate) fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The index of the entry (or snapshot) that set the membership in force.
    pub(crate) fn membership_index(&self) -> LogIndex {
        self.membership_index
    }

    /// The entry at `index`, if held in memory.
    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let offset = self.offset_of(index)?;
        self.entries.get(offset)
    }

    fn offset_of(&self, index: LogIndex) -> Option<usize> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        // The subtraction cannot underflow: index >= first_index was checked.
        usize::try_from(index.0 - self.first_index().0).ok()
    }

    /// The term of the entry at `index`: known for index 0, the snapshot's last
    /// index and every entry held in memory; `None` when compacted away or beyond the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex(0) {
            return Some(Term(0));
        }
        if index == self.snapshot.last_index {
            return Some(self.snapshot.last_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    /// Whether a log ending at (`last_term`, `last_index`) is at least as
    /// up-to-date as this one (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_term: Term, last_index: LogIndex) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The first index of the run of entries sharing the term of the entry at
    /// `index` (which must be held), for the conflict hint. The run is searched in
    /// memory only; if it reaches into the snapshot the first in-memory index is
    /// returned, which is still at or below the conflict.
    pub(crate) fn first_index_of_term_run(&self, index: LogIndex) -> LogIndex {
        let term = self.term_at(index);
        assert!(
            term.is_some(),
            "conflict hint asked for an index not held: {index}"
        );
        let mut first = index;
        while first > self.first_index() && self.term_at(first.previous()) == term {
            first = first.previous();
        }
        first
    }

    /// The last index holding an entry of `term`, if this log (in memory or at the
    /// snapshot point) has one. Scans backwards and stops once terms drop below.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        for entry in self.entries.iter().rev() {
            if entry.term == term {
                return Some(entry.index);
            }
            if entry.term < term {
                return None;
            }
        }
        (self.snapshot.last_term == term && self.snapshot.last_index > LogIndex(0))
            .then_some(self.snapshot.last_index)
    }

    /// Up to `count_max` entries (and about `bytes_max` payload bytes, but always
    /// at least one entry if any exists) starting at `start`.
    pub(crate) fn entries_from(
        &self,
        start: LogIndex,
        count_max: usize,
        bytes_max: u64,
    ) -> Vec<Entry> {
        let Some(offset) = self.offset_of(start) else {
            return Vec::new();
        };
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        for entry in self.entries.iter().skip(offset) {
            let size = payload_bytes(entry);
            if batch.len() >= count_max || (!batch.is_empty() && bytes + size > bytes_max) {
                break;
            }
            bytes += size;
            batch.push(entry.clone());
        }
        batch
    }

    /// Appends entries that continue the log exactly at `last_index + 1`.
    pub(crate) fn append(&mut self, entries: &[Entry], check_term_order: bool) {
        for entry in entries {
            assert!(
                entry.index == self.last_index().next(),
                "appended entry {} does not follow the last index {}",
                entry.index,
                self.last_index()
            );
            assert!(
                !check_term_order || entry.term >= self.last_term(),
                "log terms must not decrease: {} after {}",
                entry.term,
                self.last_term()
            );
            if let EntryPayload::Membership(membership) = &entry.payload {
                self.membership = membership.clone();
                self.membership_index = entry.index;
            }
            self.entries.push_back(entry.clone());
        }
    }

    /// Overwrites the entries at the indexes of `entries` in place, keeping every
    /// entry after them. This is the `keep_conflicting_suffix` deliberate bug.
    pub(crate) fn overwrite_in_place(&mut self, entries: &[Entry]) {
        for entry in entries {
            match self.offset_of(entry.index) {
                Some(offset) => self.entries[offset] = entry.clone(),
                None => self.append(std::slice::from_ref(entry), false),
            }
        }
        self.recompute_membership();
    }

    /// Removes every entry at or after `index`. Committed entries are never
    /// removed (Log Matching + Leader Completeness guarantee they match).
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.commit_index,
            "truncating committed entries: from {index} with commit index {}",
            self.commit_index
        );
        assert!(
            index >= self.first_index(),
            "truncating into the snapshot at {index}"
        );
        let Some(offset) = self.offset_of(index) else {
            return;
        };
        self.entries.truncate(offset);
        if self.persisted_index >= index {
            // The durable copy of these entries is being replaced; nothing at or
            // above `index` counts as durable until a newer write covers it.
            self.persisted_index = index.previous();
        }
        if self.membership_index >= index {
            self.recompute_membership();
        }
    }

    /// Sets `membership` from the latest configuration entry, else the snapshot.
    fn recompute_membership(&mut self) {
        let latest = self
            .entries
            .iter()
            .rev()
            .find_map(|entry| match &entry.payload {
                EntryPayload::Membership(membership) => Some((membership.clone(), entry.index)),
                _ => None,
            });
        let (membership, index) =
            latest.unwrap_or_else(|| (self.snapshot.membership.clone(), self.snapshot.last_index));
        self.membership = membership;
        self.membership_index = index;
    }

    /// The configuration the latest one replaced: the membership in force just
    /// before `membership_index` (the snapshot's if no entry holds one).
    pub(crate) fn previous_membership(&self) -> Membership {
        self.membership_at(self.membership_index.previous())
    }

    /// The membership in force at `index` (at or after the snapshot index).
    fn membership_at(&self, index: LogIndex) -> Membership {
        self.entries
            .iter()
            .rev()
            .filter(|entry| entry.index <= index)
            .find_map(|entry| match &entry.payload {
                EntryPayload::Membership(membership) => Some(membership.clone()),
                _ => None,
            })
            .unwrap_or_else(|| self.snapshot.membership.clone())
    }

    /// Raises the commit index. Never lowers it, never beyond the last index.
    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        if index <= self.commit_index {
            return;
        }
        assert!(
            index <= self.last_index(),
            "commit index {index} beyond the last index {}",
            self.last_index()
        );
        self.commit_index = index;
    }

    /// The next batch of committed entries to apply (at most `count_max`), and
    /// marks them applied.
    pub(crate) fn take_apply_batch(&mut self, count_max: usize) -> Vec<Entry> {
        assert!(
            self.applied_index <= self.commit_index,
            "applied index beyond commit"
        );
        let start = self.applied_index.next();
        let available = self.commit_index.0 - self.applied_index.0;
        let count = count_max.min(usize::try_from(available).unwrap_or(usize::MAX));
        let batch = self.entries_from(start, count, u64::MAX);
        if let Some(last) = batch.last() {
            assert!(
                last.index <= self.commit_index,
                "applying beyond the commit index"
            );
            self.applied_index = last.index;
        }
        batch
    }

    /// Marks `index` durable (a persistence request covering it completed).
    pub(crate) fn persisted_to(&mut self, index: LogIndex) {
        // Requests are capped at every later truncation, so none covers more
        // than the log now holds.
        assert!(
            index <= self.last_index(),
            "persisted index {index} beyond the last index {}",
            self.last_index()
        );
        if index > self.persisted_index {
            self.persisted_index = index;
        }
    }

    /// Checks the relationships between the log's indexes (cheap; run after
    /// every input).
    pub(crate) fn assert_invariants(&self) {
        let last_index = self.last_index();
        assert!(
            self.snapshot.last_index <= self.applied_index
                && self.applied_index <= self.commit_index
                && self.commit_index <= last_index,
            "index order broken: snapshot {} <= applied {} <= commit {} <= last {}",
            self.snapshot.last_index,
            self.applied_index,
            self.commit_index,
            last_index
        );
        assert!(
            self.persisted_index <= last_index,
            "persisted index {} beyond the last index {last_index}",
            self.persisted_index
        );
        if let Some(first) = self.entries.front() {
            assert!(
                first.index == self.first_index() && first.term >= self.snapshot.last_term,
                "the first entry {} (term {}) does not follow the snapshot {} (term {})",
                first.index,
                first.term,
                self.snapshot.last_index,
                self.snapshot.last_term
            );
        }
    }

    /// Drops the entries up to `last_index` (which the application has applied and
    /// durably snapshotted) and keeps `data` as the snapshot to send.
    pub(crate) fn compact(&mut self, last_index: LogIndex, data: Bytes) {
        assert!(
            last_index <= self.applied_index,
            "compacting to {last_index} beyond the applied index {}",
            self.applied_index
        );
        if last_index <= self.snapshot.last_index {
            return;
        }
        let term = self.term_at(last_index);
        // term_at is Some: snapshot.last_index < last_index <= applied <= last_index().
        let last_term = term.expect("a compacted index is held in memory");
        let membership = self.membership_at(last_index);
        while self
            .entries
            .front()
            .is_some_and(|entry| entry.index <= last_index)
        {
            self.entries.pop_front();
        }
        self.snapshot = SnapshotMeta {
            last_index,
            last_term,
            membership,
        };
        self.snapshot_data = data;
        // The snapshot is durable, so everything it covers is durable locally.
        self.persisted_index = self.persisted_index.max(last_index);
    }

    /// Replaces the log's prefix with a snapshot received from the leader. With
    /// `keep_entries_after` the entries after the snapshot stay (Figure 13 step 6);
    /// otherwise the whole log is discarded (step 7).
    pub(crate) fn install_snapshot(
        &mut self,
        meta: SnapshotMeta,
        data: Bytes,
        keep_entries_after: bool,
    ) {
        assert!(
            meta.last_index > self.commit_index,
            "installing a snapshot at {} not beyond the commit index {}",
            meta.last_index,
            self.commit_index
        );
        if keep_entries_after {
            while self
                .entries
                .front()
                .is_some_and(|entry| entry.index <= meta.last_index)
            {
                self.entries.pop_front();
            }
        } else {
            self.entries.clear();
            // Entries at or below the old commit index match the snapshot's history
            // (they are committed); anything above may not, so it no longer counts
            // as durable until the snapshot itself is.
            self.persisted_index = self.persisted_index.min(self.commit_index);
        }
        self.commit_index = meta.last_index;
        self.applied_index = meta.last_index;
        self.snapshot = meta;
        self.snapshot_data = data;
        self.recompute_membership();
    }
}
