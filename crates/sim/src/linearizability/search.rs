//! The Wing–Gong–Lowe search over one partition: a doubly linked entry list with
//! lift/unlift, an explicit stack of choices, and the memo cache.

use super::history::{Entry, EntryKind, PartitionHistory};
use super::memo::{LinearizedSet, MemoCache};
use super::{Model, SearchBudget};

/// How the search of one partition ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SearchOutcome {
    /// A linearization exists; `order` is one (operation numbers, in linearization
    /// order; unknown-outcome operations appear only where they took effect).
    Linearizable { order: Vec<u32> },
    /// None exists; `longest_prefix` is the longest linearizable prefix the search
    /// found (operation numbers in order), after which it was stuck.
    NotLinearizable { longest_prefix: Vec<u32> },
    /// The budget ran out first.
    BudgetExhausted { states_explored: u64 },
}

/// Marks the end of the list (no next node).
const END: usize = usize::MAX;
/// The sentinel node in front of the first entry; entry `i` is node `i + 1`.
const HEAD: usize = 0;

/// The entries still to be linearized, as a doubly linked list over node indexes.
/// Lifting removes an operation's two nodes; unlifting in reverse order restores
/// them exactly, because each removed node remembers its neighbours ("dancing links").
struct EntryList {
    previous: Vec<usize>,
    next: Vec<usize>,
}

impl EntryList {
    fn new(entry_count: usize) -> Self {
        let node_count = entry_count + 1;
        let previous = (0..node_count).map(|node| node.wrapping_sub(1)).collect();
        let next = (1..=node_count)
            .map(|node| if node == node_count { END } else { node })
            .collect();
        Self { previous, next }
    }

    fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn unlink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = next;
        if next != END {
            self.previous[next] = previous;
        }
    }

    fn relink(&mut self, node: usize) {
        let (previous, next) = (self.previous[node], self.next[node]);
        self.next[previous] = node;
        if next != END {
            self.previous[next] = node;
        }
    }

    fn lift(&mut self, call: usize, return_node: usize) {
        self.unlink(call);
        self.unlink(return_node);
    }

    /// Undoes the matching `lift`; lifts must be undone in reverse order.
    fn unlift(&mut self, call: usize, return_node: usize) {
        self.relink(return_node);
        self.relink(call);
    }
}

/// Where the walk over a configuration's candidates stands: the next node of the
/// list of completed operations' entries, and the next unknown-outcome operation
/// (index among them, in call order).
#[derive(Clone, Copy, Debug)]
struct Cursor {
    node: usize,
    unknown_index: u32,
}

/// One choice on the current path.
struct Frame<S> {
    operation: u32,
    previous_state: S,
    /// Where the walk of the parent configuration resumes if this choice fails.
    resume: Cursor,
    /// A read taken without alternatives (see [`Search::try_forced_read`]): if it
    /// fails, so does the parent configuration.
    forced: bool,
}

/// What the walk from a cursor did.
enum Advance {
    /// Linearized a candidate: the walk starts over in the new configuration.
    Entered,
    /// No candidate fits: the configuration is dead.
    DeadEnd,
}

struct Search<'m, 'p, 'h, M: Model> {
    model: &'m M,
    history: &'p PartitionHistory<'h, M::Input, M::Output>,
    /// The entries of completed operations still to be linearized. Unknown-outcome
    /// operations have no return entry and stay pending forever, so they are kept out
    /// of it and walked alongside, in call order (see [`Search::advance`]); the set of
    /// linearized ones tells which are still pending.
    list: EntryList,
    /// For each completed operation, its call and return nodes.
    nodes_of_operation: Vec<(usize, usize)>,
    linearized: LinearizedSet,
    cache: MemoCache<M::State>,
    completed_key: Vec<u64>,
    unknown_key: Vec<u64>,
    state: M::State,
    stack: Vec<Frame<M::State>>,
    longest_prefix: Vec<u32>,
}

/// Searches for a linearization of `history` within `budget`.
pub(super) fn search<M: Model>(
    model: &M,
    history: &PartitionHistory<'_, M::Input, M::Output>,
    budget: SearchBudget,
) -> SearchOutcome {
    let mut search = Search::new(model, history);
    // `None`: a configuration just entered, not yet walked.
    let mut cursor: Option<Cursor> = None;
    loop {
        let advance = match cursor {
            Some(cursor) => search.advance(cursor),
            None if search.list.first() == END => {
                let order = search.stack.iter().map(|frame| frame.operation).collect();
                return SearchOutcome::Linearizable { order };
            }
            None => match search.try_forced_read() {
                Some(advance) => advance,
                None => search.advance(Cursor {
                    node: search.list.first(),
                    unknown_index: 0,
                }),
            },
        };
        match advance {
            Advance::Entered => {
                if search.cache.len() as u64 > budget.states_per_partition_max {
                    return SearchOutcome::BudgetExhausted {
                        states_explored: budget.states_per_partition_max,
                    };
                }
                cursor = None;
            }
            Advance::DeadEnd => match search.backtrack() {
                Some(resume) => cursor = Some(resume),
                None => {
                    return SearchOutcome::NotLinearizable {
                        longest_prefix: search.longest_prefix,
                    };
                }
            },
        }
    }
}

impl<'m, 'p, 'h, M: Model> Search<'m, 'p, 'h, M> {
    fn new(model: &'m M, history: &'p PartitionHistory<'h, M::Input, M::Output>) -> Self {
        let entries = history.completed_entries();
        let mut nodes_of_operation = vec![(END, END); history.completed_count() as usize];
        for (index, entry) in entries.iter().enumerate() {
            let node = index + 1;
            let slot = &mut nodes_of_operation[entry.operation as usize];
            match entry.kind {
                EntryKind::Call => slot.0 = node,
                EntryKind::Return => slot.1 = node,
            }
        }
        Self {
            model,
            history,
            list: EntryList::new(entries.len()),
            nodes_of_operation,
            linearized: LinearizedSet::new(history.completed_count(), history.operation_count()),
            cache: MemoCache::new(),
            completed_key: Vec::new(),
            unknown_key: Vec::new(),
            state: model.initial_state(),
            stack: Vec::new(),
            longest_prefix: Vec::new(),
        }
    }

    /// The entry at list node `node`.
    fn entry(&self, node: usize) -> Entry {
        self.history.completed_entries()[node - 1]
    }

    /// Walks the candidates of the current configuration from `cursor`, in call
    /// order: completed operations called before the first pending return (list
    /// order) and unknown-outcome operations called by then. Enters the first that
    /// fits.
    fn advance(&mut self, mut cursor: Cursor) -> Advance {
        loop {
            // The list is not empty, so a return entry ends the walk first.
            assert!(
                cursor.node != END,
                "walk passed the last entry of a non-empty list"
            );
            let entry = self.entry(cursor.node);
            let unknown = self.next_pending_unknown(cursor.unknown_index);
            let unknown_first = unknown.is_some_and(|(_, operation)| {
                let call_time = self.history.operation(operation).call_time;
                match entry.kind {
                    EntryKind::Call => call_time < entry.time,
                    EntryKind::Return => call_time <= entry.time,
                }
            });
            if let (true, Some((index, operation))) = (unknown_first, unknown) {
                let resume = Cursor {
                    node: cursor.node,
                    unknown_index: index + 1,
                };
                if self.try_enter(operation, resume, false) {
                    return Advance::Entered;
                }
                cursor = resume;
                continue;
            }
            if entry.kind == EntryKind::Return {
                return Advance::DeadEnd;
            }
            // Computed before the lift; unlifting restores the same neighbour.
            let resume = Cursor {
                node: self.list.next[cursor.node],
                unknown_index: cursor.unknown_index,
            };
            if self.try_enter(entry.operation, resume, false) {
                return Advance::Entered;
            }
            cursor = resume;
        }
    }

    /// The first unknown-outcome operation at or after `unknown_index` that is not
    /// linearized, with its index.
    fn next_pending_unknown(&self, mut unknown_index: u32) -> Option<(u32, u32)> {
        loop {
            let operation = self.history.completed_count() + unknown_index;
            if operation >= self.history.operation_count() {
                return None;
            }
            if !self.linearized.contains(operation) {
                return Some((unknown_index, operation));
            }
            unknown_index += 1;
        }
    }

    /// A completed read-only candidate whose output matches the current state can be
    /// linearized right now without losing anything: in any way to finish, it can be
    /// moved to the front (no pending operation must precede it, since it is a
    /// candidate, and moving it changes no state). So it is taken with no
    /// alternatives, which removes the factorial (and, memoised, exponential) cost of
    /// ordering concurrent reads. Returns `None` if there is no such read.
    fn try_forced_read(&mut self) -> Option<Advance> {
        let mut node = self.list.first();
        while node != END {
            let entry = self.entry(node);
            if entry.kind == EntryKind::Return {
                return None;
            }
            let recorded = self.history.operation(entry.operation);
            let output = recorded
                .output
                .as_ref()
                .expect("the list holds completed operations");
            if self.model.is_read_only(&recorded.input)
                && self
                    .model
                    .step(&self.state, &recorded.input, output)
                    .is_some()
            {
                // The resume cursor is never used: a forced frame's failure fails its parent.
                let resume = Cursor {
                    node: END,
                    unknown_index: 0,
                };
                let entered = self.try_enter(entry.operation, resume, true);
                return Some(if entered {
                    Advance::Entered
                } else {
                    Advance::DeadEnd
                });
            }
            node = self.list.next[node];
        }
        None
    }

    /// Tries to linearize `operation` next. Succeeds if the model accepts it and the
    /// resulting configuration was not entered before (if it was, it failed:
    /// a success ends the search); then the choice is pushed and, for a completed
    /// operation, its entries are lifted out of the list.
    fn try_enter(&mut self, operation: u32, resume: Cursor, forced: bool) -> bool {
        let recorded = self.history.operation(operation);
        let next_state = match &recorded.output {
            Some(output) => self.model.step(&self.state, &recorded.input, output),
            None => Some(self.model.step_unknown(&self.state, &recorded.input)),
        };
        let Some(next_state) = next_state else {
            return false;
        };
        assert!(
            !self.model.is_read_only(&recorded.input) || next_state == self.state,
            "the model calls {:?} read-only, but it changed the state",
            recorded.input
        );
        self.linearized.insert(operation);
        self.linearized
            .write_keys(&mut self.completed_key, &mut self.unknown_key);
        if !self
            .cache
            .insert_if_absent(&self.completed_key, &self.unknown_key, &next_state)
        {
            self.linearized.remove(operation);
            return false;
        }
        let previous_state = std::mem::replace(&mut self.state, next_state);
        self.stack.push(Frame {
            operation,
            previous_state,
            resume,
            forced,
        });
        if let Some(&(call, return_node)) = self.nodes_of_operation.get(operation as usize) {
            self.list.lift(call, return_node);
        }
        true
    }

    /// Records the current path if it is the longest yet, then undoes choices up to
    /// and including the last one that was not forced. Returns where the walk of its
    /// configuration resumes, or `None` if no choice is left to undo.
    fn backtrack(&mut self) -> Option<Cursor> {
        if self.stack.len() > self.longest_prefix.len() {
            self.longest_prefix.clear();
            self.longest_prefix
                .extend(self.stack.iter().map(|frame| frame.operation));
        }
        loop {
            let frame = self.stack.pop()?;
            self.state = frame.previous_state;
            self.linearized.remove(frame.operation);
            if let Some(&(call, return_node)) =
                self.nodes_of_operation.get(frame.operation as usize)
            {
                self.list.unlift(call, return_node);
            }
            if !frame.forced {
                return Some(frame.resume);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(list: &EntryList) -> Vec<usize> {
        let mut nodes = Vec::new();
        let mut node = list.first();
        while node != END {
            nodes.push(node);
            node = list.next[node];
        }
        nodes
    }

    #[test]
    fn lift_and_unlift_in_reverse_order_restore_the_list() {
        let mut list = EntryList::new(6);
        assert_eq!(walk(&list), vec![1, 2, 3, 4, 5, 6]);
        list.lift(2, 3);
        assert_eq!(walk(&list), vec![1, 4, 5, 6]);
        list.lift(1, 6);
        assert_eq!(walk(&list), vec![4, 5]);
        list.lift(4, 5);
        assert_eq!(walk(&list), Vec::<usize>::new());
        list.unlift(4, 5);
        list.unlift(1, 6);
        assert_eq!(walk(&list), vec![1, 4, 5, 6]);
        list.unlift(2, 3);
        assert_eq!(walk(&list), vec![1, 2, 3, 4, 5, 6]);
    }
}
