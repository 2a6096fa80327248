//! Turns a failed search into an explanation a person can act on: the longest
//! linearizable prefix found, and why no pending operation can follow it.

use std::fmt::Write;

use super::history::PartitionHistory;
use super::Model;

/// Prefix operations listed in full; earlier ones are summarised by a count.
const PREFIX_SHOWN_MAX: usize = 12;
/// Pending operations listed in full; further ones are summarised by a count.
const CANDIDATES_SHOWN_MAX: usize = 12;

/// Explains why `history` has no linearization, given the longest linearizable
/// `prefix` (operation numbers in order) that the search found.
pub(super) fn explain<M: Model>(
    model: &M,
    history: &PartitionHistory<'_, M::Input, M::Output>,
    prefix: &[u32],
) -> String {
    let mut state = model.initial_state();
    let mut in_prefix = vec![false; history.operation_count() as usize];
    for &operation in prefix {
        state = apply(model, history, &state, operation)
            .expect("the search only records prefixes the model accepted");
        in_prefix[operation as usize] = true;
    }
    // The first return entry still in the list after the prefix: the operation that
    // must be linearized before anything that was called after it returned.
    let blocking = (0..history.completed_count())
        .filter(|&operation| !in_prefix[operation as usize])
        .min_by_key(|&operation| (history.operation(operation).return_time, operation))
        .expect("a failed search leaves a completed operation unlinearized");
    let deadline = history
        .operation(blocking)
        .return_time
        .expect("completed operations have a return time");

    let mut text = String::new();
    // Writing to a String cannot fail; the results of `writeln!` are ignored.
    let _ = writeln!(
        text,
        "no linearization of these {} operations exists; the longest linearizable prefix \
         found has {} operation(s), leaving the state {:?}:",
        history.operation_count(),
        prefix.len(),
        state
    );
    let hidden = prefix.len().saturating_sub(PREFIX_SHOWN_MAX);
    if hidden > 0 {
        let _ = writeln!(text, "  ... {hidden} earlier operation(s)");
    }
    for (position, &operation) in prefix.iter().enumerate().skip(hidden) {
        let _ = writeln!(text, "  {}. {}", position + 1, describe(history, operation));
    }
    let _ = writeln!(
        text,
        "then {} must come before anything called after {deadline}, yet none of the \
         operations called by then can come next:",
        describe(history, blocking)
    );
    write_candidates(&mut text, model, history, &state, &in_prefix, deadline);
    text
}

/// Lists the operations not in the prefix whose call precedes `deadline`, in list
/// order, each with the reason it cannot be next.
fn write_candidates<M: Model>(
    text: &mut String,
    model: &M,
    history: &PartitionHistory<'_, M::Input, M::Output>,
    state: &M::State,
    in_prefix: &[bool],
    deadline: u64,
) {
    let mut candidates: Vec<u32> = (0..history.operation_count())
        .filter(|&operation| !in_prefix[operation as usize])
        .filter(|&operation| history.operation(operation).call_time <= deadline)
        .collect();
    candidates.sort_by_key(|&operation| (history.operation(operation).call_time, operation));
    for &operation in candidates.iter().take(CANDIDATES_SHOWN_MAX) {
        let reason = match apply(model, history, state, operation) {
            None => "its output is impossible in that state",
            Some(_) => "it fits, but nothing linearizes the rest after it",
        };
        let _ = writeln!(text, "  - {}: {reason}", describe(history, operation));
    }
    if candidates.len() > CANDIDATES_SHOWN_MAX {
        let _ = writeln!(
            text,
            "  ... {} more",
            candidates.len() - CANDIDATES_SHOWN_MAX
        );
    }
}

/// The state after `operation` in `state`, or `None` if the model rejects its output.
fn apply<M: Model>(
    model: &M,
    history: &PartitionHistory<'_, M::Input, M::Output>,
    state: &M::State,
    operation: u32,
) -> Option<M::State> {
    let recorded = history.operation(operation);
    match &recorded.output {
        Some(output) => model.step(state, &recorded.input, output),
        None => Some(model.step_unknown(state, &recorded.input)),
    }
}

/// One line naming an operation by its index in the whole history.
fn describe<I: std::fmt::Debug, O: std::fmt::Debug>(
    history: &PartitionHistory<'_, I, O>,
    operation: u32,
) -> String {
    let recorded = history.operation(operation);
    let index = history.history_index(operation);
    match (&recorded.output, recorded.return_time) {
        (Some(output), Some(return_time)) => format!(
            "operation #{index} (client {}: {:?} -> {:?}, called {}, returned {return_time})",
            recorded.client, recorded.input, output, recorded.call_time
        ),
        _ => format!(
            "operation #{index} (client {}: {:?} -> outcome unknown, called {})",
            recorded.client, recorded.input, recorded.call_time
        ),
    }
}
