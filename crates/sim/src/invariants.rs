//! Safety invariants, checked after every simulated event.
//!
//! The checker sees what nodes append, apply, vote and claim, and keeps just enough
//! global memory to judge it:
//! - *election safety*: at most one leader per term, and no voter grants two
//!   candidates its vote in one term;
//! - *log matching*: an (index, term) pair names one payload everywhere, and always
//!   follows the same previous term; by induction two logs that share an entry
//!   share the whole prefix before it;
//! - *state machine safety*: every node applies the same entry at each index,
//!   consecutively (a committed entry is never lost or changed);
//! - *leader completeness*: a new leader holds every entry already applied
//!   anywhere;
//! - *monotonic commit*: a node's commit index never decreases while it runs;
//! - *the commit rule* (Figure 2, §5.4.2): a leader advances its commit index
//!   only to an entry of its own term — earlier entries commit with it.

use crate::node::AppendedEntry;
use std::collections::BTreeMap;
use understudy_raft::{RaftNode, Role, Status};
use understudy_types::{LogIndex, NodeId, Term};

/// What the checker remembers about one log slot's (index, term).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotRecord {
    previous_term: Term,
    fingerprint: u64,
    first_seen_on: NodeId,
}

/// The invariant checker of one run.
#[derive(Debug, Default)]
pub struct Checker {
    leaders_by_term: BTreeMap<Term, NodeId>,
    votes: BTreeMap<(Term, NodeId), NodeId>,
    slots: BTreeMap<(LogIndex, Term), SlotRecord>,
    committed: BTreeMap<LogIndex, (Term, u64)>,
    /// Per node: (incarnation, role, term, commit index) at the last observation.
    last_seen: BTreeMap<NodeId, (u64, Role, Term, LogIndex)>,
    violations: Vec<String>,
}

impl Checker {
    /// Every violation found so far, in the order found.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Records a violation found elsewhere (e.g. inside a node).
    pub fn report(&mut self, now_micros: u64, violation: String) {
        self.violations
            .push(format!("at {} ms: {violation}", now_micros / 1000));
    }

    /// The highest index known committed (applied somewhere).
    pub fn committed_index(&self) -> LogIndex {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or_default()
    }

    /// The (term, fingerprint) committed at `index`, if any node applied it.
    pub fn committed_at(&self, index: LogIndex) -> Option<(Term, u64)> {
        self.committed.get(&index).copied()
    }

    /// A node granted its vote to `candidate` in `term`.
    pub fn observe_vote(&mut self, now_micros: u64, voter: NodeId, term: Term, candidate: NodeId) {
        let previous = *self.votes.entry((term, voter)).or_insert(candidate);
        if previous != candidate {
            self.report(
                now_micros,
                format!("{voter} voted for {previous} and {candidate} in {term}"),
            );
        }
    }

    /// A node appended an entry to its log.
    pub fn observe_appended(&mut self, now_micros: u64, node: NodeId, entry: &AppendedEntry) {
        let record = SlotRecord {
            previous_term: entry.previous_term,
            fingerprint: entry.fingerprint,
            first_seen_on: node,
        };
        let existing = *self
            .slots
            .entry((entry.index, entry.term))
            .or_insert(record);
        if existing.fingerprint != record.fingerprint
            || existing.previous_term != record.previous_term
        {
            self.report(
                now_micros,
                format!(
                    "log matching: {node} appended ({}, {}) after term {} with payload {:x}, \
                     but {} holds it after term {} with payload {:x}",
                    entry.index,
                    entry.term,
                    entry.previous_term,
                    entry.fingerprint,
                    existing.first_seen_on,
                    existing.previous_term,
                    existing.fingerprint
                ),
            );
        }
    }

    /// A node applied an entry. Returns true if no node had applied `index` before.
    pub fn observe_applied(
        &mut self,
        now_micros: u64,
        node: NodeId,
        index: LogIndex,
        term: Term,
        fingerprint: u64,
    ) -> bool {
        match self.committed.get(&index) {
            None => {
                self.committed.insert(index, (term, fingerprint));
                true
            }
            Some(&(committed_term, committed_fingerprint)) => {
                if (committed_term, committed_fingerprint) != (term, fingerprint) {
                    self.report(
                        now_micros,
                        format!(
                            "state machine safety: {node} applied ({index}, {term}, {fingerprint:x}) \
                             where ({index}, {committed_term}, {committed_fingerprint:x}) was applied"
                        ),
                    );
                }
                false
            }
        }
    }

    /// Looks at a running node's status after it handled an event.
    pub fn observe_status(
        &mut self,
        now_micros: u64,
        incarnation: u64,
        status: &Status,
        raft: &RaftNode,
    ) {
        let node = status.id;
        let previous = self.last_seen.insert(
            node,
            (incarnation, status.role, status.term, status.commit_index),
        );
        if let Some((known_incarnation, known_role, known_term, known_commit)) = previous {
            if known_incarnation == incarnation {
                if status.commit_index < known_commit {
                    self.report(
                        now_micros,
                        format!(
                            "{node}'s commit index went back from {known_commit} to {}",
                            status.commit_index
                        ),
                    );
                }
                let leading_on = known_role == Role::Leader
                    && status.role == Role::Leader
                    && known_term == status.term;
                if leading_on && status.commit_index > known_commit {
                    self.check_commit_rule(now_micros, status, raft);
                }
            }
        }
        if status.role != Role::Leader {
            return;
        }
        match self.leaders_by_term.get(&status.term).copied() {
            Some(leader) if leader == node => {}
            Some(leader) => self.report(
                now_micros,
                format!(
                    "election safety: {leader} and {node} both lead {}",
                    status.term
                ),
            ),
            None => {
                self.leaders_by_term.insert(status.term, node);
                self.check_leader_completeness(now_micros, status, raft);
            }
        }
    }

    /// A leader that advanced its commit index must have done so by counting
    /// replicas of an entry of its own term.
    fn check_commit_rule(&mut self, now_micros: u64, status: &Status, raft: &RaftNode) {
        let index = status.commit_index;
        let term = match raft.entry(index) {
            Some(entry) => entry.term,
            None => raft.snapshot_meta().last_term,
        };
        if term != status.term {
            self.report(
                now_micros,
                format!(
                    "commit rule: {} leading {} advanced its commit index to {index}, \
                     an entry of {term}",
                    status.id, status.term
                ),
            );
        }
    }

    /// A new leader must hold every entry that any node has applied.
    fn check_leader_completeness(&mut self, now_micros: u64, status: &Status, raft: &RaftNode) {
        let snapshot = raft.snapshot_meta();
        let mut problems = Vec::new();
        if let Some(&(term, _)) = self.committed.get(&snapshot.last_index) {
            if term != snapshot.last_term {
                problems.push(format!(
                    "its snapshot ends at ({}, {}) but ({}, {term}) was applied",
                    snapshot.last_index, snapshot.last_term, snapshot.last_index
                ));
            }
        }
        for (&index, &(term, fingerprint)) in self.committed.range(snapshot.last_index.next()..) {
            match raft.entry(index) {
                Some(entry) if entry.term == term => {
                    let held = crate::node::payload_fingerprint(&entry.payload);
                    if held != fingerprint {
                        problems.push(format!("it holds another payload at {index}"));
                    }
                }
                Some(entry) => problems.push(format!(
                    "it holds ({index}, {}) where ({index}, {term}) was applied",
                    entry.term
                )),
                None => problems.push(format!("it lacks applied entry ({index}, {term})")),
            }
            if problems.len() >= 3 {
                break;
            }
        }
        if !problems.is_empty() {
            self.report(
                now_micros,
                format!(
                    "leader completeness: {} leads {} but {}",
                    status.id,
                    status.term,
                    problems.join("; ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(index: u64, term: u64, previous_term: u64, fingerprint: u64) -> AppendedEntry {
        AppendedEntry {
            index: LogIndex(index),
            term: Term(term),
            previous_term: Term(previous_term),
            fingerprint,
        }
    }

    #[test]
    fn two_votes_in_one_term_are_a_violation() {
        let mut checker = Checker::default();
        checker.observe_vote(0, NodeId(1), Term(2), NodeId(2));
        checker.observe_vote(0, NodeId(1), Term(2), NodeId(2));
        assert!(checker.violations().is_empty());
        checker.observe_vote(0, NodeId(1), Term(2), NodeId(3));
        assert_eq!(checker.violations().len(), 1);
    }

    #[test]
    fn log_matching_catches_a_different_payload_or_history() {
        let mut checker = Checker::default();
        checker.observe_appended(0, NodeId(1), &appended(5, 2, 1, 7));
        checker.observe_appended(0, NodeId(2), &appended(5, 2, 1, 7));
        assert!(checker.violations().is_empty());
        checker.observe_appended(0, NodeId(3), &appended(5, 2, 1, 8));
        checker.observe_appended(0, NodeId(3), &appended(5, 2, 2, 7));
        assert_eq!(checker.violations().len(), 2);
    }

    #[test]
    fn applying_a_different_entry_at_a_committed_index_is_a_violation() {
        let mut checker = Checker::default();
        assert!(checker.observe_applied(0, NodeId(1), LogIndex(1), Term(1), 5));
        assert!(!checker.observe_applied(0, NodeId(2), LogIndex(1), Term(1), 5));
        assert!(checker.violations().is_empty());
        checker.observe_applied(0, NodeId(3), LogIndex(1), Term(2), 5);
        assert_eq!(checker.violations().len(), 1);
        assert_eq!(checker.committed_index(), LogIndex(1));
    }
}
