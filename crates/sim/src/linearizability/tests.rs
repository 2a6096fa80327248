//! Known-good and known-bad histories.

use super::*;

fn get(
    client: u64,
    key: u64,
    value: Option<&str>,
    call: u64,
    ret: u64,
) -> Operation<KvInput, KvOutput> {
    let output = KvOutput::Value(value.map(str::to_string));
    Operation::completed(client, KvInput::Get { key }, output, call, ret)
}

fn put(client: u64, key: u64, value: &str, call: u64, ret: u64) -> Operation<KvInput, KvOutput> {
    let input = KvInput::Put {
        key,
        value: value.to_string(),
    };
    Operation::completed(client, input, KvOutput::Ok, call, ret)
}

fn append(client: u64, key: u64, value: &str, call: u64, ret: u64) -> Operation<KvInput, KvOutput> {
    let input = KvInput::Append {
        key,
        value: value.to_string(),
    };
    Operation::completed(client, input, KvOutput::Ok, call, ret)
}

fn put_unknown(client: u64, key: u64, value: &str, call: u64) -> Operation<KvInput, KvOutput> {
    Operation::unknown(
        client,
        KvInput::Put {
            key,
            value: value.to_string(),
        },
        call,
    )
}

fn verdict(history: &[Operation<KvInput, KvOutput>]) -> CheckResult {
    check(&KvModel, history, SearchBudget::default()).expect("test histories are well formed")
}

fn assert_linearizable(history: &[Operation<KvInput, KvOutput>]) {
    assert_eq!(
        verdict(history),
        CheckResult::Linearizable,
        "history: {history:#?}"
    );
}

/// Asserts the verdict is `NotLinearizable` and returns (partition, detail).
fn assert_not_linearizable(history: &[Operation<KvInput, KvOutput>]) -> (String, String) {
    match verdict(history) {
        CheckResult::NotLinearizable { partition, detail } => (partition, detail),
        other => panic!("expected NotLinearizable, got {other:?} for {history:#?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, 7, None, 0, 1),
        put(1, 7, "x", 2, 3),
        get(2, 7, Some("x"), 4, 5),
        put(2, 7, "y", 6, 7),
        get(1, 7, Some("y"), 8, 9),
    ]);
}

#[test]
fn concurrent_writes_take_effect_in_either_order() {
    let writes = [put(1, 1, "a", 0, 10), put(2, 1, "b", 1, 9)];
    for seen in ["a", "b"] {
        let mut history = writes.to_vec();
        history.push(get(3, 1, Some(seen), 11, 12));
        history.push(get(3, 1, Some(seen), 13, 14));
        assert_linearizable(&history);
    }
    // Once both writes completed the order is fixed: later reads cannot flip-flop.
    let mut flip_flop = writes.to_vec();
    flip_flop.push(get(3, 1, Some("a"), 11, 12));
    flip_flop.push(get(3, 1, Some("b"), 13, 14));
    assert_not_linearizable(&flip_flop);
}

#[test]
fn stale_read_after_a_completed_write_is_not_linearizable() {
    assert_not_linearizable(&[
        put(1, 1, "x", 0, 1),
        put(1, 1, "y", 2, 3),
        get(2, 1, Some("x"), 4, 5),
    ]);
}

#[test]
fn read_concurrent_with_a_write_may_see_either_value() {
    for seen in [Some("x"), Some("y")] {
        assert_linearizable(&[
            put(1, 1, "x", 0, 1),
            put(1, 1, "y", 2, 10),
            get(2, 1, seen, 4, 5),
        ]);
    }
}

#[test]
fn read_of_a_value_never_written_is_not_linearizable() {
    assert_not_linearizable(&[put(1, 1, "x", 0, 1), get(2, 1, Some("z"), 2, 3)]);
    assert_not_linearizable(&[get(2, 1, Some("z"), 0, 3)]);
}

#[test]
fn read_going_back_in_time_is_not_linearizable() {
    // Both reads overlap the write, but r2 starts after r1 ended: once r1 saw "y",
    // the write took effect, and r2 cannot see "x" again.
    assert_not_linearizable(&[
        put(1, 1, "x", 0, 1),
        put(1, 1, "y", 2, 20),
        get(2, 1, Some("y"), 3, 4),
        get(3, 1, Some("x"), 5, 6),
    ]);
    // If the reads overlap each other, r2 may be linearized before the write.
    assert_linearizable(&[
        put(1, 1, "x", 0, 1),
        put(1, 1, "y", 2, 20),
        get(2, 1, Some("y"), 3, 6),
        get(3, 1, Some("x"), 5, 7),
    ]);
}

#[test]
fn touching_intervals_count_as_concurrent() {
    // The read is called at the instant the write returns: the timestamps do not
    // prove the write came first, so the read may precede it.
    assert_linearizable(&[put(1, 1, "x", 0, 5), get(2, 1, None, 5, 8)]);
    assert_not_linearizable(&[put(1, 1, "x", 0, 5), get(2, 1, None, 6, 8)]);
}

/// An integer register with initial value 0, as in Porcupine's README examples.
/// It uses the default (single) partition.
struct RegisterModel;

#[derive(Clone, Debug)]
enum RegisterInput {
    Put(u64),
    Get,
}

impl Model for RegisterModel {
    type State = u64;
    type Input = RegisterInput;
    type Output = u64;

    fn initial_state(&self) -> u64 {
        0
    }

    fn step(&self, state: &u64, input: &RegisterInput, output: &u64) -> Option<u64> {
        match input {
            RegisterInput::Put(value) => Some(*value),
            RegisterInput::Get => (output == state).then_some(*state),
        }
    }

    fn step_unknown(&self, state: &u64, input: &RegisterInput) -> u64 {
        match input {
            RegisterInput::Put(value) => *value,
            RegisterInput::Get => *state,
        }
    }
}

#[test]
fn porcupine_register_examples() {
    let register =
        |client, input, output, call, ret| Operation::completed(client, input, output, call, ret);
    // put(100) over [0, 100]; get -> 100 over [25, 75]; get -> 0 over [30, 60]:
    // linearizable as get -> 0, put(100), get -> 100.
    let good = [
        register(0, RegisterInput::Put(100), 0, 0, 100),
        register(1, RegisterInput::Get, 100, 25, 75),
        register(2, RegisterInput::Get, 0, 30, 60),
    ];
    assert_eq!(
        check(&RegisterModel, &good, SearchBudget::default()),
        Ok(CheckResult::Linearizable)
    );
    // put(200) over [0, 100]; get -> 200 over [10, 30]; get -> 0 over [40, 90]:
    // the first read forces the put before 30, so the second cannot see 0.
    let bad = [
        register(0, RegisterInput::Put(200), 0, 0, 100),
        register(1, RegisterInput::Get, 200, 10, 30),
        register(2, RegisterInput::Get, 0, 40, 90),
    ];
    match check(&RegisterModel, &bad, SearchBudget::default()) {
        Ok(CheckResult::NotLinearizable { partition, .. }) => {
            assert_eq!(partition, "whole history")
        }
        other => panic!("expected NotLinearizable, got {other:?}"),
    }
}

#[test]
fn unknown_write_may_be_seen_by_a_later_read() {
    assert_linearizable(&[
        put(1, 1, "x", 0, 1),
        put_unknown(2, 1, "y", 2),
        get(3, 1, Some("y"), 50, 51),
    ]);
}

#[test]
fn unknown_write_may_never_take_effect() {
    assert_linearizable(&[
        put(1, 1, "x", 0, 1),
        put_unknown(2, 1, "y", 2),
        get(3, 1, Some("x"), 50, 51),
        get(3, 1, Some("x"), 52, 53),
    ]);
}

#[test]
fn unknown_write_may_take_effect_long_after_its_call() {
    assert_linearizable(&[
        put_unknown(2, 1, "y", 0),
        get(3, 1, None, 10, 11),
        put(1, 1, "x", 20, 21),
        get(3, 1, Some("x"), 30, 31),
        get(3, 1, Some("y"), 40, 41),
    ]);
}

#[test]
fn unknown_write_seen_then_unseen_is_not_linearizable() {
    assert_not_linearizable(&[
        put(1, 1, "x", 0, 1),
        put_unknown(2, 1, "y", 2),
        get(3, 1, Some("y"), 50, 51),
        get(3, 1, Some("x"), 52, 53),
    ]);
}

#[test]
fn unknown_write_cannot_be_seen_before_its_call() {
    assert_not_linearizable(&[
        put(1, 1, "x", 0, 1),
        get(3, 1, Some("y"), 2, 3),
        put_unknown(2, 1, "y", 4),
    ]);
}

#[test]
fn unknown_reads_are_ignored() {
    let unknown_read = Operation::unknown(4, KvInput::Get { key: 1 }, 0);
    assert_linearizable(&[unknown_read.clone(), put(1, 1, "x", 1, 2)]);
    assert_not_linearizable(&[unknown_read, put(1, 1, "x", 1, 2), get(2, 1, None, 3, 4)]);
}

#[test]
fn appends_apply_in_order_starting_from_empty() {
    let sequential = [append(1, 1, "a", 0, 1), append(2, 1, "b", 2, 3)];
    let with_read = |seen: &str| {
        let mut history = sequential.to_vec();
        history.push(get(3, 1, Some(seen), 4, 5));
        history
    };
    assert_linearizable(&with_read("ab"));
    assert_not_linearizable(&with_read("ba"));
    assert_not_linearizable(&with_read("b"));

    // Concurrent appends: either order, but every later read agrees on one.
    let concurrent = [append(1, 1, "a", 0, 10), append(2, 1, "b", 1, 9)];
    for seen in ["ab", "ba"] {
        let mut history = concurrent.to_vec();
        history.push(get(3, 1, Some(seen), 11, 12));
        assert_linearizable(&history);
    }
    let mut disagreeing = concurrent.to_vec();
    disagreeing.push(get(3, 1, Some("ab"), 11, 12));
    disagreeing.push(get(4, 1, Some("ba"), 11, 12));
    assert_not_linearizable(&disagreeing);
    // A read concurrent with both appends may see the one that went first alone.
    assert_linearizable(&[
        append(1, 1, "a", 0, 10),
        append(2, 1, "b", 1, 9),
        get(3, 1, Some("b"), 2, 3),
    ]);
}

#[test]
fn output_of_the_wrong_kind_is_not_linearizable() {
    let put_answered_with_value = Operation::completed(
        1,
        KvInput::Put {
            key: 1,
            value: "x".into(),
        },
        KvOutput::Value(None),
        0,
        1,
    );
    assert_not_linearizable(&[put_answered_with_value]);
    let get_answered_ok = Operation::completed(1, KvInput::Get { key: 1 }, KvOutput::Ok, 0, 1);
    assert_not_linearizable(&[get_answered_ok]);
}

#[test]
fn a_bad_key_makes_the_history_bad_and_is_named() {
    let history = [
        put(1, 1, "a", 0, 1),
        put(1, 2, "b", 0, 1),
        put(1, 3, "c", 0, 1),
        get(2, 1, Some("a"), 2, 3),
        get(2, 2, Some("a"), 2, 3),
        get(2, 3, Some("c"), 2, 3),
    ];
    let (partition, detail) = assert_not_linearizable(&history);
    assert_eq!(partition, "key 2");
    // The explanation names the read (history index 4) and why it fails.
    assert!(detail.contains("operation #4"), "{detail}");
    assert!(detail.contains("impossible"), "{detail}");

    // Each key alone is judged on its own: key 2's ops do not see key 1's writes.
    let good: Vec<_> = history
        .iter()
        .filter(|operation| operation.input.key() != 2)
        .cloned()
        .collect();
    assert_linearizable(&good);
}

#[test]
fn detail_shows_the_longest_prefix_and_is_deterministic() {
    let history = [
        put(1, 1, "x", 0, 1),
        put(1, 1, "y", 2, 3),
        get(2, 1, Some("y"), 4, 5),
        get(2, 1, Some("x"), 6, 7),
    ];
    let (_, detail) = assert_not_linearizable(&history);
    assert!(
        detail.contains("longest linearizable prefix found has 3 operation(s)"),
        "{detail}"
    );
    assert!(detail.contains("leaving the state Some(\"y\")"), "{detail}");
    assert!(detail.contains("then operation #3"), "{detail}");
    let (_, again) = assert_not_linearizable(&history);
    assert_eq!(detail, again);
}

#[test]
fn malformed_histories_are_rejected() {
    let mut returns_before_call = put(1, 1, "x", 5, 6);
    returns_before_call.return_time = Some(4);
    assert_eq!(
        check(
            &KvModel,
            &[get(1, 1, None, 0, 1), returns_before_call],
            SearchBudget::default()
        ),
        Err(HistoryError::ReturnNotAfterCall {
            index: 1,
            call_time: 5,
            return_time: 4
        })
    );
    let mut returns_at_call = put(1, 1, "x", 5, 6);
    returns_at_call.return_time = Some(5);
    assert!(matches!(
        check(&KvModel, &[returns_at_call], SearchBudget::default()),
        Err(HistoryError::ReturnNotAfterCall { index: 0, .. })
    ));
    let mut output_without_return = put(1, 1, "x", 5, 6);
    output_without_return.return_time = None;
    assert_eq!(
        check(&KvModel, &[output_without_return], SearchBudget::default()),
        Err(HistoryError::OutputWithoutReturn { index: 0 })
    );
    let mut return_without_output = put(1, 1, "x", 5, 6);
    return_without_output.output = None;
    assert_eq!(
        check(&KvModel, &[return_without_output], SearchBudget::default()),
        Err(HistoryError::OutputWithoutReturn { index: 0 })
    );
}

/// A register model with a deliberately broken partition function.
struct BadPartitions(Vec<Partition>);

impl Model for BadPartitions {
    type State = u64;
    type Input = RegisterInput;
    type Output = u64;

    fn initial_state(&self) -> u64 {
        0
    }

    fn step(&self, state: &u64, input: &RegisterInput, output: &u64) -> Option<u64> {
        RegisterModel.step(state, input, output)
    }

    fn step_unknown(&self, state: &u64, input: &RegisterInput) -> u64 {
        RegisterModel.step_unknown(state, input)
    }

    fn partition(&self, _history: &[Operation<RegisterInput, u64>]) -> Vec<Partition> {
        self.0.clone()
    }
}

#[test]
fn partitions_must_cover_each_operation_once() {
    let history = [
        Operation::completed(0, RegisterInput::Put(1), 0, 0, 1),
        Operation::completed(0, RegisterInput::Get, 1, 2, 3),
    ];
    let part = |name: &str, operation_indexes: Vec<usize>| Partition {
        name: name.into(),
        operation_indexes,
    };
    let cases = [
        (
            vec![part("p", vec![0, 2])],
            HistoryError::PartitionIndexOutOfRange {
                partition: "p".into(),
                index: 2,
                operations: 2,
            },
        ),
        (
            vec![part("p", vec![0, 1]), part("q", vec![1])],
            HistoryError::PartitionDuplicate {
                partition: "q".into(),
                index: 1,
            },
        ),
        (
            vec![part("p", vec![1])],
            HistoryError::PartitionMissing { index: 0 },
        ),
    ];
    for (partitions, error) in cases {
        assert_eq!(
            check(
                &BadPartitions(partitions),
                &history,
                SearchBudget::default()
            ),
            Err(error)
        );
    }
    let fine = BadPartitions(vec![part("p", vec![1, 0])]);
    assert_eq!(
        check(&fine, &history, SearchBudget::default()),
        Ok(CheckResult::Linearizable)
    );
}

#[test]
fn budget_counts_configurations_and_yields_unknown() {
    // A sequential history of ten operations needs exactly ten configurations.
    let history: Vec<_> = (0..10)
        .map(|step| put(1, 1, "x", step * 2, step * 2 + 1))
        .collect();
    assert_eq!(
        check(&KvModel, &history, SearchBudget::states(10)),
        Ok(CheckResult::Linearizable)
    );
    assert_eq!(
        check(&KvModel, &history, SearchBudget::states(9)),
        Ok(CheckResult::Unknown {
            partition: "key 1".into(),
            states_explored: 9
        })
    );
}

#[test]
fn a_definite_violation_outranks_an_exhausted_budget() {
    let mut history: Vec<_> = (0..10)
        .map(|step| put(1, 1, "x", step * 2, step * 2 + 1))
        .collect();
    history.push(get(1, 2, Some("never written"), 0, 1));
    let result = check(&KvModel, &history, SearchBudget::states(5));
    assert!(
        matches!(&result, Ok(CheckResult::NotLinearizable { partition, .. }) if partition == "key 2"),
        "{result:?}"
    );
}

#[test]
fn memoisation_collapses_equivalent_orders() {
    // Fourteen concurrent writes of one value can be ordered in 14! (8.7e10) ways,
    // but they form only 2^14 distinct (set, state) configurations. The impossible
    // read at the end forces the search to rule them all out; without the memo
    // cache it would not finish.
    let mut history: Vec<_> = (0..14)
        .map(|client| put(client, 1, "x", client, 100))
        .collect();
    history.push(get(99, 1, Some("impossible"), 200, 201));
    let result = check(&KvModel, &history, SearchBudget::states(1 << 14));
    assert!(
        matches!(result, Ok(CheckResult::NotLinearizable { .. })),
        "{result:?}"
    );
}

#[test]
fn concurrent_reads_are_linearized_without_alternatives() {
    // Forty concurrent reads of a missing key would make 2^40 configurations if
    // the search tried their orders; taken as they come, they cost forty.
    let mut history: Vec<_> = (0..40)
        .map(|client| get(client, 1, None, client, 100))
        .collect();
    history.push(get(99, 1, Some("impossible"), 200, 201));
    let result = check(&KvModel, &history, SearchBudget::states(40));
    assert!(
        matches!(result, Ok(CheckResult::NotLinearizable { .. })),
        "{result:?}"
    );
    // The same reads around a write: some before it, some after, still cheap.
    let mut history: Vec<_> = (0..40)
        .map(|client| get(client, 1, (client % 2 == 0).then_some("x"), client, 100))
        .collect();
    history.push(put(99, 1, "x", 0, 100));
    let result = check(&KvModel, &history, SearchBudget::states(200));
    assert_eq!(result, Ok(CheckResult::Linearizable));
}

#[test]
fn unobserved_unknown_writes_are_dropped() {
    let observed = |write: KvInput, read_value: Option<&str>, read_return: u64| {
        let unknown = Operation::unknown(1, write, 10);
        KvModel.unknown_may_be_observed(
            &unknown,
            &[&get(2, 1, read_value, 0, read_return)],
            &[&unknown],
        )
    };
    let put_y = || KvInput::Put {
        key: 1,
        value: "y".into(),
    };
    let append_y = || KvInput::Append {
        key: 1,
        value: "y".into(),
    };
    assert!(!observed(put_y(), Some("x"), 20));
    assert!(!observed(put_y(), None, 20));
    // A Put shows as a prefix (later appends extend it), an Append anywhere.
    assert!(observed(put_y(), Some("yz"), 20));
    assert!(!observed(put_y(), Some("zy"), 20));
    assert!(observed(append_y(), Some("zyz"), 20));
    // A read that returned before the write was called cannot have seen it; one
    // returning at the very instant of the call might have.
    assert!(!observed(put_y(), Some("y"), 9));
    assert!(observed(put_y(), Some("y"), 10));

    // Sixty timed-out writes nobody read from, and a stale read: ruling out every
    // subset of them would take 2^60 configurations; dropped, they cost nothing.
    let mut history = vec![put(1, 1, "x", 0, 1), put(1, 1, "y", 2, 3)];
    history.extend((0..60).map(|client| put_unknown(client, 1, &format!("lost {client}"), 4)));
    history.extend((0..20).map(|read| get(70, 1, Some("y"), 10 + 2 * read, 11 + 2 * read)));
    history.push(get(71, 1, Some("x"), 60, 61));
    let result = check(&KvModel, &history, SearchBudget::states(100));
    assert!(
        matches!(result, Ok(CheckResult::NotLinearizable { .. })),
        "{result:?}"
    );
}
