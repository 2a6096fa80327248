//! The MVCC store: current keys, per-revision history, and `apply`.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use understudy_types::limits::{KV_HISTORY_BYTES_RETAINED_MAX, KV_RANGE_LIMIT_MAX};

use crate::command::{
    validate_key, Command, Compare, CompareOperator, CompareTarget, Operation, Txn, TxnOperation,
};
use crate::session::{SessionCheck, Sessions};
use crate::KvError;

/// A key with its value and MVCC metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// Revision at which the key was (re-)created.
    pub create_revision: u64,
    /// Revision of the key's last modification.
    pub mod_revision: u64,
    /// Puts since creation (1 after the creating put).
    pub version: u64,
}

/// What an [`Event`] did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was written; the event carries the new value.
    Put,
    /// The key was deleted; the event's value is empty and its version 0.
    Delete,
}

/// One change in the store's history, for the watch API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (for a delete: empty value, `create_revision` 0,
    /// `version` 0, `mod_revision` the deleting revision).
    pub key_value: KeyValue,
}

/// Which keys a history query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    /// Exactly this key.
    Exact(Bytes),
    /// Every key starting with these bytes (empty: every key).
    Prefix(Bytes),
}

impl KeySelector {
    fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeySelector::Exact(exact) => key == exact.as_ref(),
            KeySelector::Prefix(prefix) => key.starts_with(prefix),
        }
    }
}

/// The result of a successfully applied command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A put; `revision` is the new revision.
    Put {
        /// The store revision after the put.
        revision: u64,
    },
    /// A delete; `revision` is unchanged when nothing was deleted.
    Delete {
        /// Keys deleted: 0 or 1.
        deleted: u64,
        /// The store revision after the delete.
        revision: u64,
    },
    /// A transaction.
    Txn {
        /// Whether every compare held (so `success` ran).
        succeeded: bool,
        /// One result per operation of the branch that ran.
        results: Vec<TxnResult>,
        /// The store revision after the transaction.
        revision: u64,
    },
    /// A compaction.
    Compact {
        /// The store's compaction revision afterwards.
        compact_revision: u64,
    },
}

/// The result of one operation inside a transaction. Writes share the
/// transaction's revision, reported in [`Response::Txn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    /// A put was applied.
    Put,
    /// A get, seeing the transaction's earlier writes.
    Get {
        /// The item, or `None` when the key does not exist.
        item: Option<KeyValue>,
    },
    /// A delete.
    Delete {
        /// Keys deleted: 0 or 1.
        deleted: u64,
    },
}

/// What `apply` returns; errors are deterministic and change nothing.
pub type Outcome = Result<Response, KvError>;

/// The replicated key-value state machine. See the crate documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// Increases by one with every command that changed at least one key.
    pub(crate) revision: u64,
    /// History before this revision has been discarded.
    pub(crate) compact_revision: u64,
    /// Log index of the last applied command (0 before any).
    pub(crate) last_applied_index: u64,
    /// The current (live) keys.
    pub(crate) keys: BTreeMap<Bytes, KeyValue>,
    /// Every change at or after `compact_revision`, by revision, in key order
    /// within a revision.
    pub(crate) history: BTreeMap<u64, Vec<Event>>,
    /// Client sessions for exactly-once application.
    pub(crate) sessions: Sessions,
    /// The sum of [`event_bytes`] over `history`; derived, so not serialized
    /// (rebuilt on restore).
    #[serde(skip)]
    pub(crate) history_bytes: u64,
}

/// What one history event counts against `KV_HISTORY_BYTES_RETAINED_MAX`: its
/// key and value plus a fixed allowance for the revisions and bookkeeping.
pub(crate) fn event_bytes(event: &Event) -> u64 {
    (event.key_value.key.len() + event.key_value.value.len()) as u64 + 64
}

impl Store {
    /// An empty store at revision 0.
    pub fn new() -> Store {
        Store::default()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The compaction revision: history before it is gone.
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    /// Log index of the last applied command.
    pub fn last_applied_index(&self) -> u64 {
        self.last_applied_index
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Applies the committed command at log `index`. Indexes must increase
    /// strictly: the shell applies each committed entry exactly once, in order.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        assert!(
            index > self.last_applied_index,
            "log index {index} applied after {}: entries must be applied once, in order",
            self.last_applied_index
        );
        self.last_applied_index = index;
        // Validation first, so a rejected command changes nothing (not even a
        // session). It is deterministic, so every replica rejects alike.
        command.validate()?;
        let Some(request_id) = &command.request_id else {
            return self.apply_operation(&command.operation);
        };
        match self.sessions.check(index, request_id)? {
            SessionCheck::Retry(outcome) => outcome,
            SessionCheck::Fresh => {
                let outcome = self.apply_operation(&command.operation);
                self.sessions.record(request_id, outcome.clone());
                outcome
            }
        }
    }

    /// Decodes and applies the committed entry at log `index`. An entry that does
    /// not decode is rejected identically on every replica (its index is still
    /// consumed), so the shell need not special-case it.
    pub fn apply_encoded(&mut self, index: u64, encoded: &[u8]) -> Outcome {
        match Command::decode(encoded) {
            Ok(command) => self.apply(index, &command),
            Err(error) => {
                assert!(
                    index > self.last_applied_index,
                    "log index {index} applied after {}: entries must be applied once, in order",
                    self.last_applied_index
                );
                self.last_applied_index = index;
                Err(error)
            }
        }
    }

    fn apply_operation(&mut self, operation: &Operation) -> Outcome {
        match operation {
            Operation::Put { key, value } => {
                let revision = self.revision + 1;
                let event = self.put_at(key, value, revision);
                self.commit_revision(vec![event]);
                Ok(Response::Put { revision })
            }
            Operation::Delete { key } => {
                let events: Vec<Event> =
                    self.delete_at(key, self.revision + 1).into_iter().collect();
                let deleted = events.len() as u64;
                self.commit_revision(events);
                Ok(Response::Delete {
                    deleted,
                    revision: self.revision,
                })
            }
            Operation::Txn(txn) => Ok(self.apply_txn(txn)),
            Operation::Compact { revision } => self.compact(*revision),
        }
    }

    /// Records the events of one command; bumps the revision only if any.
    fn commit_revision(&mut self, mut events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.revision += 1;
        // Stable sort: several writes to one key inside a txn keep their order.
        events.sort_by(|left, right| left.key_value.key.cmp(&right.key_value.key));
        self.history_bytes += events.iter().map(event_bytes).sum::<u64>();
        let previous = self.history.insert(self.revision, events);
        assert!(
            previous.is_none(),
            "revision {} recorded twice",
            self.revision
        );
        self.retain_history();
    }

    /// Compacts the oldest revisions while the history holds more than
    /// `KV_HISTORY_BYTES_RETAINED_MAX` bytes (always keeping the newest
    /// revision). Deterministic: sizes depend only on the applied commands.
    fn retain_history(&mut self) {
        while self.history_bytes > KV_HISTORY_BYTES_RETAINED_MAX && self.history.len() > 1 {
            // `pop_first` cannot fail: the history holds more than one revision.
            let (_, events) = self.history.pop_first().expect("history exists");
            self.history_bytes -= events.iter().map(event_bytes).sum::<u64>();
            // The history now starts at its first remaining revision (which exists).
            self.compact_revision = *self.history.keys().next().expect("history remains");
        }
    }

    fn put_at(&mut self, key: &Bytes, value: &Bytes, revision: u64) -> Event {
        let key_value = match self.keys.get(key) {
            Some(existing) => KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: existing.create_revision,
                mod_revision: revision,
                version: existing.version + 1,
            },
            None => KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        };
        self.keys.insert(key.clone(), key_value.clone());
        Event {
            kind: EventKind::Put,
            key_value,
        }
    }

    fn delete_at(&mut self, key: &Bytes, revision: u64) -> Option<Event> {
        self.keys.remove(key)?;
        Some(Event {
            kind: EventKind::Delete,
            key_value: KeyValue {
                key: key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
            },
        })
    }

    fn apply_txn(&mut self, txn: &Txn) -> Response {
        let succeeded = txn
            .compares
            .iter()
            .all(|compare| self.compare_holds(compare));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Every write of the transaction shares one revision, the next one; it is
        // only committed if at least one write took effect.
        let revision = self.revision + 1;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(branch.len());
        for operation in branch {
            let result = match operation {
                TxnOperation::Put { key, value } => {
                    events.push(self.put_at(key, value, revision));
                    TxnResult::Put
                }
                TxnOperation::Get { key } => TxnResult::Get {
                    item: self.keys.get(key).cloned(),
                },
                TxnOperation::Delete { key } => {
                    let event = self.delete_at(key, revision);
                    let deleted = u64::from(event.is_some());
                    events.extend(event);
                    TxnResult::Delete { deleted }
                }
            };
            results.push(result);
        }
        self.commit_revision(events);
        Response::Txn {
            succeeded,
            results,
            revision: self.revision,
        }
    }

    fn compare_holds(&self, compare: &Compare) -> bool {
        let item = self.keys.get(&compare.key);
        let ordering = match (&compare.target, item) {
            // No value compare matches a missing key, not even NotEqual (etcd).
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(operand), Some(item)) => {
                item.value.as_ref().cmp(operand.as_ref())
            }
            (CompareTarget::Version(operand), item) => {
                item.map_or(0, |item| item.version).cmp(operand)
            }
            (CompareTarget::ModRevision(operand), item) => {
                item.map_or(0, |item| item.mod_revision).cmp(operand)
            }
        };
        match compare.operator {
            CompareOperator::Equal => ordering.is_eq(),
            CompareOperator::NotEqual => ordering.is_ne(),
            CompareOperator::Less => ordering.is_lt(),
            CompareOperator::Greater => ordering.is_gt(),
        }
    }

    fn compact(&mut self, revision: u64) -> Outcome {
        if revision > self.revision {
            return Err(KvError::CompactRevisionAboveCurrent {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        self.compact_revision = revision;
        // Keep history at and after `revision`; `split_off` returns exactly that.
        self.history = self.history.split_off(&revision);
        self.history_bytes = self.history.values().flatten().map(event_bytes).sum();
        Ok(Response::Compact {
            compact_revision: revision,
        })
    }

    /// The current item under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys.get(key)
    }

    /// Up to `limit` current items whose key starts with `prefix`, in key order,
    /// and whether more remained. `limit` must be in `1..=KV_RANGE_LIMIT_MAX`.
    pub fn range(&self, prefix: &[u8], limit: usize) -> Result<(Vec<KeyValue>, bool), KvError> {
        validate_limit(limit)?;
        let mut matching = self
            .keys
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, item)| item);
        let items: Vec<KeyValue> = matching.by_ref().take(limit).cloned().collect();
        let more = matching.next().is_some();
        Ok((items, more))
    }

    /// Up to `limit` changes with revision ≥ `from_revision` to the selected keys,
    /// in revision order, then key order within a revision. Fails with
    /// `Compacted` when `from_revision` is below the compaction revision.
    pub fn changes_since(
        &self,
        from_revision: u64,
        selector: &KeySelector,
        limit: usize,
    ) -> Result<Vec<Event>, KvError> {
        validate_limit(limit)?;
        if let KeySelector::Exact(key) = selector {
            validate_key(key)?;
        }
        if from_revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        Ok(self
            .history
            .range(from_revision..)
            .flat_map(|(_, events)| events)
            .filter(|event| selector.matches(&event.key_value.key))
            .take(limit)
            .cloned()
            .collect())
    }
}

fn validate_limit(limit: usize) -> Result<(), KvError> {
    if limit == 0 || limit > KV_RANGE_LIMIT_MAX {
        return Err(KvError::RangeLimitInvalid {
            limit: limit as u64,
        });
    }
    Ok(())
}
