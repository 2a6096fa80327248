//! The key-value model the simulator's histories are checked against.

use std::collections::BTreeMap;

use super::{Model, Operation, Partition};

/// A key-value operation as issued by a client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
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
    /// Appends to the value of `key` (a missing key counts as empty).
    Append {
        /// The key written.
        key: u64,
        /// What is appended.
        value: String,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> u64 {
        match self {
            KvInput::Get { key } | KvInput::Put { key, .. } | KvInput::Append { key, .. } => *key,
        }
    }
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// The answer to a `Get`: the value, or `None` if the key is missing.
    Value(Option<String>),
    /// The answer to a `Put` or `Append`.
    Ok,
}

/// Linearizable single-copy key-value store semantics.
///
/// Histories are partitioned by key, so the model's state is the value of the one
/// key of a partition (`None` while it is missing); [`Model::step`] ignores the key.
/// That is sound only because [`Model::partition`] never puts two keys together.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = Option<String>;
    type Input = KvInput;
    type Output = KvOutput;

    fn initial_state(&self) -> Self::State {
        None
    }

    fn step(&self, state: &Self::State, input: &KvInput, output: &KvOutput) -> Option<Self::State> {
        match (input, output) {
            (KvInput::Get { .. }, KvOutput::Value(value)) => {
                (value == state).then(|| state.clone())
            }
            (KvInput::Put { .. } | KvInput::Append { .. }, KvOutput::Ok) => {
                Some(self.step_unknown(state, input))
            }
            // An answer of the wrong kind is no answer the store could give.
            _ => None,
        }
    }

    fn step_unknown(&self, state: &Self::State, input: &KvInput) -> Self::State {
        match input {
            KvInput::Get { .. } => state.clone(),
            KvInput::Put { value, .. } => Some(value.clone()),
            KvInput::Append { value, .. } => {
                let mut appended = state.clone().unwrap_or_default();
                appended.push_str(value);
                Some(appended)
            }
        }
    }

    fn is_read_only(&self, input: &KvInput) -> bool {
        matches!(input, KvInput::Get { .. })
    }

    /// A write's effect shows in every value read until the next `Put` replaces it:
    /// a `Put` of `v` leaves values starting with `v` (later appends add suffixes), an
    /// `Append` of `a` leaves values containing `a`. If no read that returned after
    /// the write was called returned such a value, nothing observed the write.
    fn unknown_may_be_observed(
        &self,
        unknown: &Operation<KvInput, KvOutput>,
        completed: &[&Operation<KvInput, KvOutput>],
        // No operation of this model depends on the state except through a read,
        // so only completed outputs can show a write's effect.
        _unknown_writes: &[&Operation<KvInput, KvOutput>],
    ) -> bool {
        let shows_effect = |value: &str| match &unknown.input {
            KvInput::Get { .. } => false,
            KvInput::Put { value: written, .. } => value.starts_with(written.as_str()),
            KvInput::Append {
                value: appended, ..
            } => value.contains(appended.as_str()),
        };
        completed.iter().any(|operation| {
            let returned_after_call = operation
                .return_time
                .is_some_and(|returned| returned >= unknown.call_time);
            returned_after_call
                && matches!(&operation.output, Some(KvOutput::Value(Some(value))) if shows_effect(value))
        })
    }

    /// One partition per key, in increasing key order, named `key <k>`.
    fn partition(&self, history: &[Operation<KvInput, KvOutput>]) -> Vec<Partition> {
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
