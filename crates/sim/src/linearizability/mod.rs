//! A Wing–Gong–Lowe linearizability checker with memoisation and per-key
//! partitioning, in the manner of Porcupine (Athalye, 2017).
//!
//! # What it decides
//!
//! A *history* is a list of [`Operation`]s, each with the time its client called it
//! and, when the client saw an answer, the time it returned and its output. The
//! history is *linearizable* with respect to a sequential specification (a
//! [`Model`]) if every operation can be given a single instant between its call and
//! its return such that executing the operations one after another in the order of
//! those instants, against the model, produces exactly the outputs observed.
//!
//! # The search (Wing & Gong, improved by Lowe)
//!
//! The history becomes a list of *entries*: one call entry and one return entry per
//! operation, sorted by time. At equal times calls sort before returns, so an
//! operation returning at `t` and one called at `t` count as concurrent: the checker
//! never claims an order the timestamps do not prove.
//!
//! The search walks the list from the front. A call entry is a candidate to be
//! linearized next; if the model accepts it in the current state, the operation's
//! call and return entries are *lifted* out of the (doubly linked) list, the new
//! state and the choice are pushed on a stack, and the walk restarts from the front.
//! Reaching a return entry means that operation returned and yet was not linearized
//! on this path, and no earlier candidate fits: the search pops the last choice,
//! *unlifts* its entries (in reverse order, so relinking is exact) and tries the next
//! candidate after it. The history is linearizable as soon as every completed
//! operation has been lifted; it is not when the stack empties at a dead end.
//!
//! # Memoisation (Lowe)
//!
//! Two paths that have linearized the same *set* of operations and reached the same
//! model state have the same future. Every configuration (set of linearized
//! operations, state) is recorded when the search first enters it; a candidate whose
//! resulting configuration was already recorded is skipped, because it was explored
//! before and failed (a success ends the search). This turns the factorial blow-up
//! of the plain search into a bound on distinct configurations, which for real
//! histories is small. The set is a bitset, stored compactly in the cache: operations
//! are numbered in call order, so the linearized set is "all operations up to some
//! frontier, plus a few beyond"; only the words from the first incomplete one to the
//! last non-empty one are stored (see `memo.rs`).
//!
//! # Reads without alternatives
//!
//! A completed read-only operation ([`Model::is_read_only`]) that is a candidate and
//! whose output matches the current state is linearized at once, and if that fails
//! the configuration fails, without trying the other candidates: any linearization
//! that places the read later can move it to the front (nothing pending must precede
//! it, and moving a read changes no state). Without this, `n` concurrent reads of one
//! value would make `2^n` configurations (`n!` orders without memoisation).
//!
//! # Partitioning (P-compositionality)
//!
//! Linearizability is compositional: a history is linearizable if and only if the
//! sub-history of every independent object is. [`Model::partition`] splits a history
//! (for the key-value model: one partition per key) and each part is searched alone,
//! which keeps every search small. Partitions are checked in the order the model
//! returns them; the first one that is not linearizable is reported by name.
//!
//! # Unknown outcomes
//!
//! An operation whose answer was never observed (a timed-out write) has
//! `output: None`: it may have taken effect at any moment after its call, or never.
//! Its return time is +∞, so it gets no return entry; it stays a candidate from its
//! call on and is walked, in call order, alongside the call entries of the list. Its
//! effect is [`Model::step_unknown`]. The search succeeds once every *completed*
//! operation is linearized; unknown ones still pending then simply did not take
//! effect (or took effect after everything observed, which is indistinguishable).
//!
//! Pending unknown operations are expensive: each one doubles, for as long as it is
//! pending, the configurations a failing search must rule out (in or out of the
//! linearized set). So unknown operations that cannot influence any output are
//! dropped first: the read-only ones ([`Model::is_read_only`]) and those whose effect
//! no completed output shows ([`Model::unknown_may_be_observed`]; for the key-value
//! model, a timed-out write whose value no read returned). A linearization that
//! places such an operation stays one without it, since no output depended on it.
//!
//! # Determinism and bounds
//!
//! The search order depends only on the history (entry order, then operation
//! number): no hash-map iteration order influences the verdict or its explanation.
//! The memo cache is only ever asked "have we been here?". A [`SearchBudget`] bounds
//! the configurations explored per partition; when it is exhausted the answer is
//! [`CheckResult::Unknown`] rather than an unbounded wait.

mod explain;
mod history;
mod kv_cas_model;
mod kv_model;
mod memo;
mod search;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cas;
#[cfg(test)]
mod tests_random;

pub use kv_cas_model::{KvCasInput, KvCasModel, KvCasOutput};
pub use kv_model::{KvInput, KvModel, KvOutput};

use search::SearchOutcome;
use understudy_types::limits::LINEARIZABILITY_HISTORY_OPERATIONS_MAX;

/// A sequential specification: the behaviour each operation must have when the
/// operations run one at a time.
pub trait Model {
    /// The state of the specified object. Compared and hashed by the memo cache.
    type State: Clone + Eq + std::hash::Hash + std::fmt::Debug;
    /// What a client asked for.
    type Input: Clone + std::fmt::Debug;
    /// What a client was told.
    type Output: Clone + std::fmt::Debug + PartialEq;

    /// The state before any operation (of one partition).
    fn initial_state(&self) -> Self::State;

    /// Applies `input` in `state`. Returns the new state if `output` is what the
    /// sequential specification returns in `state`, and `None` otherwise.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// The state after `input` took effect in `state` when its output was never
    /// observed. It cannot fail: whatever the operation would have returned, nobody saw.
    fn step_unknown(&self, state: &Self::State, input: &Self::Input) -> Self::State;

    /// Whether `input` never changes the state: whenever [`Model::step`] accepts it,
    /// it returns the state unchanged (the checker asserts this). Read-only operations
    /// whose outcome is unknown are dropped, and a completed one that matches the
    /// current state is linearized without trying alternatives (see the module
    /// documentation). The default, `false`, is always correct, only slower.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Whether the effect of the unknown-outcome operation `unknown` could show in
    /// any output of `completed` (the completed operations of its partition), either
    /// directly or through the effect of another of `unknown_writes` (the partition's
    /// unknown-outcome operations that are not read-only, `unknown` among them; for
    /// example a compare-and-swap that applies only if `unknown` took effect). Return
    /// `false` only if removing it from any linearization that places it leaves a
    /// linearization (no output can depend on whether it took effect); the checker
    /// then drops it. Each pending unknown operation doubles the configurations a
    /// failing search must rule out, so a model that can tell (for example, no read
    /// ever returned the value a timed-out write would have written) makes failing
    /// checks far cheaper. The default, `true`, is always correct.
    fn unknown_may_be_observed(
        &self,
        _unknown: &Operation<Self::Input, Self::Output>,
        _completed: &[&Operation<Self::Input, Self::Output>],
        _unknown_writes: &[&Operation<Self::Input, Self::Output>],
    ) -> bool {
        true
    }

    /// Splits a history into independent sub-histories (for example one per key).
    /// Every operation index must appear in exactly one partition. The default keeps
    /// the whole history as one partition.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Partition> {
        vec![Partition {
            name: "whole history".to_string(),
            operation_indexes: (0..history.len()).collect(),
        }]
    }
}

/// One independent part of a history, as returned by [`Model::partition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Names the part in results, for example `key 7`.
    pub name: String,
    /// Indexes into the history of the operations of this part.
    pub operation_indexes: Vec<usize>,
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it. Informational only: it appears in explanations.
    pub client: u64,
    /// What was asked.
    pub input: I,
    /// What was answered; `None` when the outcome is unknown (for example a
    /// timed-out write): the operation may or may not have taken effect, at any
    /// moment after its call. Its return time is then treated as +∞.
    pub output: Option<O>,
    /// When the client issued the call.
    pub call_time: u64,
    /// When the client saw the answer. `Some` exactly when `output` is `Some`, and
    /// then strictly greater than `call_time`.
    pub return_time: Option<u64>,
}

impl<I, O> Operation<I, O> {
    /// An operation whose answer the client saw.
    pub fn completed(client: u64, input: I, output: O, call_time: u64, return_time: u64) -> Self {
        Self {
            client,
            input,
            output: Some(output),
            call_time,
            return_time: Some(return_time),
        }
    }

    /// An operation whose outcome is unknown: issued at `call_time`, never answered.
    pub fn unknown(client: u64, input: I, call_time: u64) -> Self {
        Self {
            client,
            input,
            output: None,
            call_time,
            return_time: None,
        }
    }
}

/// Bounds the work of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchBudget {
    /// Distinct (linearized set, state) configurations a single partition may explore
    /// before the check gives up with [`CheckResult::Unknown`]. Each one also costs a
    /// memo-cache entry (about 60 bytes, a few words of key and a clone of the model
    /// state), so this bounds memory as well as time, as long as states are small.
    pub states_per_partition_max: u64,
}

impl SearchBudget {
    /// A budget of `states_per_partition_max` configurations per partition.
    pub fn states(states_per_partition_max: u64) -> Self {
        Self {
            states_per_partition_max,
        }
    }
}

impl Default for SearchBudget {
    /// One million configurations per partition: far more than a linearizable
    /// history of thousands of operations needs (tens of thousands, typically), and
    /// about 100 MB of memo cache with states of a few dozen bytes, explored in about
    /// a second.
    fn default() -> Self {
        Self::states(1_000_000)
    }
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every partition has a linearization.
    Linearizable,
    /// Some partition has none; the first such partition (in partition order) is named.
    NotLinearizable {
        /// The name of the offending partition (for the key-value model, `key <k>`).
        partition: String,
        /// The longest linearizable prefix found and the operations that could not
        /// be placed after it.
        detail: String,
    },
    /// No partition is known to be non-linearizable, but the search of this one ran
    /// out of budget before reaching a verdict.
    Unknown {
        /// The name of the first partition whose search was cut short.
        partition: String,
        /// Configurations explored in that partition before giving up.
        states_explored: u64,
    },
}

/// A history the checker refuses to judge because it is malformed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The history has more operations than the checker accepts.
    #[error("history has {operations} operations, more than the limit of {limit}")]
    TooManyOperations {
        /// Operations in the history.
        operations: usize,
        /// `LINEARIZABILITY_HISTORY_OPERATIONS_MAX`.
        limit: usize,
    },
    /// An operation has an output but no return time, or a return time but no output.
    #[error("operation {index}: output and return time must be both present or both absent")]
    OutputWithoutReturn {
        /// Index of the operation in the history.
        index: usize,
    },
    /// An operation returned at or before its call.
    #[error("operation {index}: return time {return_time} is not after call time {call_time}")]
    ReturnNotAfterCall {
        /// Index of the operation in the history.
        index: usize,
        /// Its call time.
        call_time: u64,
        /// Its return time.
        return_time: u64,
    },
    /// [`Model::partition`] named an operation that does not exist.
    #[error("partition {partition:?} names operation {index}, but the history has {operations}")]
    PartitionIndexOutOfRange {
        /// The partition's name.
        partition: String,
        /// The offending index.
        index: usize,
        /// Operations in the history.
        operations: usize,
    },
    /// [`Model::partition`] put an operation in two partitions, or twice in one.
    #[error("operation {index} appears in more than one partition (again in {partition:?})")]
    PartitionDuplicate {
        /// The partition where it appeared again.
        partition: String,
        /// The operation's index.
        index: usize,
    },
    /// [`Model::partition`] left an operation out of every partition.
    #[error("operation {index} is in no partition")]
    PartitionMissing {
        /// The operation's index.
        index: usize,
    },
}

/// Checks whether `history` is linearizable with respect to `model`, one partition
/// at a time, each within `budget`.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: SearchBudget,
) -> Result<CheckResult, HistoryError> {
    if history.len() > LINEARIZABILITY_HISTORY_OPERATIONS_MAX {
        return Err(HistoryError::TooManyOperations {
            operations: history.len(),
            limit: LINEARIZABILITY_HISTORY_OPERATIONS_MAX,
        });
    }
    history::validate_operations(history)?;
    let partitions = model.partition(history);
    history::validate_partitions(&partitions, history.len())?;

    let mut first_unknown = None;
    for partition in &partitions {
        let partition_history = history::PartitionHistory::new(model, history, partition);
        match search::search(model, &partition_history, budget) {
            SearchOutcome::Linearizable { .. } => {}
            SearchOutcome::NotLinearizable { longest_prefix } => {
                let detail = explain::explain(model, &partition_history, &longest_prefix);
                return Ok(CheckResult::NotLinearizable {
                    partition: partition.name.clone(),
                    detail,
                });
            }
            SearchOutcome::BudgetExhausted { states_explored } => {
                // Keep looking: a later partition may still prove a definite violation,
                // which is more useful to report than "unknown".
                first_unknown.get_or_insert(CheckResult::Unknown {
                    partition: partition.name.clone(),
                    states_explored,
                });
            }
        }
    }
    Ok(first_unknown.unwrap_or(CheckResult::Linearizable))
}
