//! Validation of a history and its partitions, and the per-partition view the
//! search works on: operations numbered for the bitset, and the sorted entry list.

use super::{HistoryError, Model, Operation, Partition};

/// Checks each operation's own consistency (output and return time together, return
/// after call).
pub(super) fn validate_operations<I, O>(history: &[Operation<I, O>]) -> Result<(), HistoryError> {
    for (index, operation) in history.iter().enumerate() {
        match (&operation.output, operation.return_time) {
            (Some(_), Some(return_time)) => {
                if return_time <= operation.call_time {
                    return Err(HistoryError::ReturnNotAfterCall {
                        index,
                        call_time: operation.call_time,
                        return_time,
                    });
                }
            }
            (None, None) => {}
            _ => return Err(HistoryError::OutputWithoutReturn { index }),
        }
    }
    Ok(())
}

/// Checks that the partitions cover every operation index exactly once.
pub(super) fn validate_partitions(
    partitions: &[Partition],
    operations: usize,
) -> Result<(), HistoryError> {
    let mut seen = vec![false; operations];
    for partition in partitions {
        for &index in &partition.operation_indexes {
            let Some(slot) = seen.get_mut(index) else {
                return Err(HistoryError::PartitionIndexOutOfRange {
                    partition: partition.name.clone(),
                    index,
                    operations,
                });
            };
            if *slot {
                return Err(HistoryError::PartitionDuplicate {
                    partition: partition.name.clone(),
                    index,
                });
            }
            *slot = true;
        }
    }
    match seen.iter().position(|&covered| !covered) {
        Some(index) => Err(HistoryError::PartitionMissing { index }),
        None => Ok(()),
    }
}

/// Whether an entry marks the call or the return of its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum EntryKind {
    /// Sorts first at equal times, so that touching intervals count as concurrent.
    Call,
    /// The operation's return.
    Return,
}

/// One point of the history's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    /// When it happened. The field order makes the derived `Ord` the list order:
    /// time, then calls before returns, then operation number.
    pub(super) time: u64,
    /// Call or return.
    pub(super) kind: EntryKind,
    /// The operation's number within the partition.
    pub(super) operation: u32,
}

/// One partition, ready for the search.
///
/// Operations are numbered with the completed ones first, in call order, then the
/// unknown-outcome ones, in call order. Numbering in call order makes the set of
/// linearized operations a dense prefix plus a sparse tail, which the memo cache
/// stores compactly; keeping unknown ones (which may stay unlinearized forever)
/// apart stops them from pinning that prefix.
pub(super) struct PartitionHistory<'h, I, O> {
    history: &'h [Operation<I, O>],
    /// The history index of each operation number.
    history_indexes: Vec<usize>,
    /// Operations numbered below this have an observed output.
    completed_count: u32,
    /// The call and return entries of the completed operations, sorted.
    completed_entries: Vec<Entry>,
}

impl<'h, I, O> PartitionHistory<'h, I, O> {
    /// Builds the view of `partition`, dropping unknown-outcome operations that are
    /// read-only or whose effect the model says no output could show.
    /// The history and partition must have been validated.
    pub(super) fn new<M: Model<Input = I, Output = O>>(
        model: &M,
        history: &'h [Operation<I, O>],
        partition: &Partition,
    ) -> Self {
        let by_call =
            |&a: &usize, &b: &usize| (history[a].call_time, a).cmp(&(history[b].call_time, b));
        let (mut completed, unknown_candidates): (Vec<usize>, Vec<usize>) = partition
            .operation_indexes
            .iter()
            .partition(|&&index| history[index].output.is_some());
        let completed_operations: Vec<&Operation<I, O>> =
            completed.iter().map(|&index| &history[index]).collect();
        // The other unknown-outcome operations, for models whose operations can
        // depend on each other's effects (a compare-and-swap expecting a value an
        // unknown write wrote). Read-only ones can have no effect to depend on.
        let unknown_operations: Vec<&Operation<I, O>> = unknown_candidates
            .iter()
            .map(|&index| &history[index])
            .filter(|operation| !model.is_read_only(&operation.input))
            .collect();
        let mut unknown: Vec<usize> = unknown_candidates
            .into_iter()
            .filter(|&index| {
                let unknown = &history[index];
                !model.is_read_only(&unknown.input)
                    && model.unknown_may_be_observed(
                        unknown,
                        &completed_operations,
                        &unknown_operations,
                    )
            })
            .collect();
        completed.sort_by(by_call);
        unknown.sort_by(by_call);
        let completed_count = u32::try_from(completed.len())
            .expect("history length is bounded by LINEARIZABILITY_HISTORY_OPERATIONS_MAX");
        let mut history_indexes = completed;
        history_indexes.extend(unknown);

        // Only completed operations get entries: an unknown-outcome operation's return
        // is at +infinity, and the search walks the unknown ones in call order apart.
        let mut completed_entries = Vec::with_capacity(completed_count as usize * 2);
        for (number, &index) in history_indexes
            .iter()
            .enumerate()
            .take(completed_count as usize)
        {
            let operation = u32::try_from(number)
                .expect("history length is bounded by LINEARIZABILITY_HISTORY_OPERATIONS_MAX");
            let return_time = history[index]
                .return_time
                .expect("completed operations have a return time");
            completed_entries.push(Entry {
                time: history[index].call_time,
                kind: EntryKind::Call,
                operation,
            });
            completed_entries.push(Entry {
                time: return_time,
                kind: EntryKind::Return,
                operation,
            });
        }
        completed_entries.sort_unstable();
        Self {
            history,
            history_indexes,
            completed_count,
            completed_entries,
        }
    }

    /// Operations in this partition (after dropping unknown ones that cannot matter).
    pub(super) fn operation_count(&self) -> u32 {
        // Cannot truncate: `check` bounds the history by
        // LINEARIZABILITY_HISTORY_OPERATIONS_MAX, far below u32::MAX.
        self.history_indexes.len() as u32
    }

    /// Operations with an observed output; they are numbered `0..completed_count()`.
    pub(super) fn completed_count(&self) -> u32 {
        self.completed_count
    }

    /// The operation numbered `number`.
    pub(super) fn operation(&self, number: u32) -> &'h Operation<I, O> {
        &self.history[self.history_indexes[number as usize]]
    }

    /// The index in the whole history of operation `number`.
    pub(super) fn history_index(&self, number: u32) -> usize {
        self.history_indexes[number as usize]
    }

    /// The entries of the completed operations, in list order.
    pub(super) fn completed_entries(&self) -> &[Entry] {
        &self.completed_entries
    }
}
