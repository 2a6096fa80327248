//! A key-value model with compare-and-swap, for histories recorded against a real
//! cluster: reads, blind writes and conditional writes (a transaction that puts a
//! new value if the key's current value is the expected one, or if the key is
//! absent).

use std::collections::BTreeMap;

use super::{Model, Operation, Partition};

/// A key-value operation as issued by a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvCasInput {
    /// Reads the value of `key`.
    Get {
        /// The key read.
        key: u64,
    },
    /// Replaces the value of `key`.
    Put {
        /// The key written.
        key: u64,
        /// Its new value.
        value: String,
    },
    /// Sets `key` to `new` if its value is `expected` (`None`: if it is absent).
    Cas {
        /// The key compared and written.
        key: u64,
        /// The value the key must have for the write to happen; `None` for absent.
        expected: Option<String>,
        /// The value written when the comparison holds.
        new: String,
    },
}

impl KvCasInput {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match self {
            KvCasInput::Get { key } | KvCasInput::Put { key, .. } | KvCasInput::Cas { key, .. } => {
                *key
            }
        }
    }

    /// The value the operation writes if it takes effect (and, for a `Cas`, its
    /// comparison holds); `None` for a `Get`.
    fn written_value(&self) -> Option<&str> {
        match self {
            KvCasInput::Get { .. } => None,
            KvCasInput::Put { value, .. } => Some(value),
            KvCasInput::Cas { new, .. } => Some(new),
        }
    }
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvCasOutput {
    /// The answer to a `Get`: the value, or `None` if the key is missing.
    Value(Option<String>),
    /// The answer to a `Put`.
    Ok,
    /// The answer to a `Cas`: whether the comparison held and the write happened.
    CasResult(bool),
}

/// Linearizable single-copy key-value semantics with compare-and-swap.
///
/// Histories are partitioned by key, so the state is the value of the one key of
/// a partition (`None` while it is missing); [`Model::step`] ignores the key. That
/// is sound only because [`Model::partition`] never puts two keys together.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvCasModel;

impl Model for KvCasModel {
    type State = Option<String>;
    type Input = KvCasInput;
    type Output = KvCasOutput;

    fn initial_state(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &KvCasInput,
        output: &KvCasOutput,
    ) -> Option<Self::State> {
        match (input, output) {
            (KvCasInput::Get { .. }, KvCasOutput::Value(value)) => {
                (value == state).then(|| state.clone())
            }
            (KvCasInput::Put { value, .. }, KvCasOutput::Ok) => Some(Some(value.clone())),
            (KvCasInput::Cas { expected, .. }, KvCasOutput::CasResult(succeeded)) => {
                (*succeeded == (expected == state)).then(|| self.step_unknown(state, input))
            }
            // An answer of the wrong kind is no answer the store could give.
            _ => None,
        }
    }

    fn step_unknown(&self, state: &Self::State, input: &KvCasInput) -> Self::State {
        match input {
            KvCasInput::Get { .. } => state.clone(),
            KvCasInput::Put { value, .. } => Some(value.clone()),
            KvCasInput::Cas { expected, new, .. } => {
                if expected == state {
                    Some(new.clone())
                } else {
                    state.clone()
                }
            }
        }
    }

    fn is_read_only(&self, input: &KvCasInput) -> bool {
        // A failed `Cas` changes nothing either, but whether it fails depends on the
        // state, and `is_read_only` must hold for every accepted step.
        matches!(input, KvCasInput::Get { .. })
    }

    /// A write of `v` that took effect leaves the key at `v` until the next write
    /// that takes effect. Removing it from a linearization changes only what the
    /// operations in between see. Those that can tell are: a read returning `v`; a
    /// `Cas` expecting `v` (it succeeded, or failed for another reason it would not
    /// have after removal); a failed `Cas` (it may have failed only because the key
    /// held `v` rather than the earlier value it expected); and an unknown `Cas`
    /// expecting `v`, whose own effect could be observed in turn. Unknown `Cas`es
    /// expecting something else are simply removed along with it (they had no
    /// effect in the original linearization). Only completed operations that
    /// returned after the write was called can be linearized after it.
    fn unknown_may_be_observed(
        &self,
        unknown: &Operation<KvCasInput, KvCasOutput>,
        completed: &[&Operation<KvCasInput, KvCasOutput>],
        unknown_writes: &[&Operation<KvCasInput, KvCasOutput>],
    ) -> bool {
        let Some(written) = unknown.input.written_value() else {
            return false;
        };
        let expects_written = |input: &KvCasInput| matches!(input, KvCasInput::Cas { expected: Some(expected), .. } if expected == written);
        let completed_observes = completed.iter().any(|operation| {
            let returned_after_call = operation
                .return_time
                .is_some_and(|returned| returned >= unknown.call_time);
            let observes = match &operation.output {
                Some(KvCasOutput::Value(Some(value))) => value == written,
                Some(KvCasOutput::CasResult(false)) => true,
                Some(KvCasOutput::CasResult(true)) => expects_written(&operation.input),
                _ => false,
            };
            returned_after_call && observes
        });
        completed_observes
            || unknown_writes
                .iter()
                .any(|operation| expects_written(&operation.input))
    }

    /// One partition per key, in increasing key order, named `key <k>`.
    fn partition(&self, history: &[Operation<KvCasInput, KvCasOutput>]) -> Vec<Partition> {
        let mut by_key: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (index, operation) in history.iter().enumerate() {
            by_key.entry(operation.input.key()).or_default().push(index);
        }
        by_key
            .into_iter()
            .map(|(key, operation_indexes)| Partition {
                name: format!("key {key}"),
                operation_indexes,
            })
            .collect()
    }
}
