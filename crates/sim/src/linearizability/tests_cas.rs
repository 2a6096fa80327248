//! Known-good and known-bad histories of the compare-and-swap model.

use super::*;

type CasOperation = Operation<KvCasInput, KvCasOutput>;

fn get(client: u64, key: u64, value: Option<&str>, call: u64, ret: u64) -> CasOperation {
    let output = KvCasOutput::Value(value.map(str::to_string));
    Operation::completed(client, KvCasInput::Get { key }, output, call, ret)
}

fn put_input(key: u64, value: &str) -> KvCasInput {
    KvCasInput::Put {
        key,
        value: value.to_string(),
    }
}

fn put(client: u64, key: u64, value: &str, call: u64, ret: u64) -> CasOperation {
    Operation::completed(client, put_input(key, value), KvCasOutput::Ok, call, ret)
}

fn cas_input(key: u64, expected: Option<&str>, new: &str) -> KvCasInput {
    KvCasInput::Cas {
        key,
        expected: expected.map(str::to_string),
        new: new.to_string(),
    }
}

/// A completed compare-and-swap on key 1 that answered `succeeded`.
fn cas(
    client: u64,
    expected: Option<&str>,
    new: &str,
    succeeded: bool,
    call: u64,
    ret: u64,
) -> CasOperation {
    let output = KvCasOutput::CasResult(succeeded);
    Operation::completed(client, cas_input(1, expected, new), output, call, ret)
}

fn cas_unknown(client: u64, expected: Option<&str>, new: &str, call: u64) -> CasOperation {
    Operation::unknown(client, cas_input(1, expected, new), call)
}

fn verdict(history: &[CasOperation]) -> CheckResult {
    check(&KvCasModel, history, SearchBudget::default()).expect("a well-formed history")
}

fn assert_not_linearizable(history: &[CasOperation], partition_expected: &str) {
    match verdict(history) {
        CheckResult::NotLinearizable { partition, .. } => assert_eq!(partition, partition_expected),
        other => panic!("expected a violation in {partition_expected}, got {other:?}"),
    }
}

#[test]
fn sequential_compare_and_swaps_follow_the_value() {
    let history = [
        cas(1, None, "a", true, 0, 10),
        cas(2, None, "b", false, 20, 30),
        cas(1, Some("a"), "c", true, 40, 50),
        cas(2, Some("a"), "d", false, 60, 70),
        get(3, 1, Some("c"), 80, 90),
    ];
    assert_eq!(verdict(&history), CheckResult::Linearizable);
}

#[test]
fn a_compare_and_swap_that_lies_about_its_result_is_caught() {
    // The key holds "a", so a swap expecting "a" cannot fail.
    let failed_wrongly = [put(1, 1, "a", 0, 10), cas(2, Some("a"), "b", false, 20, 30)];
    assert_not_linearizable(&failed_wrongly, "key 1");
    // Nor can one expecting something else succeed.
    let succeeded_wrongly = [put(1, 1, "a", 0, 10), cas(2, Some("x"), "b", true, 20, 30)];
    assert_not_linearizable(&succeeded_wrongly, "key 1");
    // A swap expecting absence fails once the key exists.
    let absent_wrongly = [put(1, 1, "a", 0, 10), cas(2, None, "b", true, 20, 30)];
    assert_not_linearizable(&absent_wrongly, "key 1");
}

#[test]
fn two_concurrent_creates_cannot_both_succeed() {
    let both = [
        cas(1, None, "a", true, 0, 100),
        cas(2, None, "b", true, 10, 90),
    ];
    assert_not_linearizable(&both, "key 1");
    let one = [
        cas(1, None, "a", true, 0, 100),
        cas(2, None, "b", false, 10, 90),
        get(3, 1, Some("a"), 110, 120),
    ];
    assert_eq!(verdict(&one), CheckResult::Linearizable);
}

#[test]
fn a_successful_swap_is_seen_by_later_reads() {
    let history = [
        put(1, 1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 30),
        get(3, 1, Some("a"), 40, 50),
    ];
    assert_not_linearizable(&history, "key 1");
}

#[test]
fn an_unknown_swap_may_have_taken_effect_or_not() {
    let took_effect = [
        put(1, 1, "a", 0, 10),
        cas_unknown(2, Some("a"), "b", 20),
        get(3, 1, Some("b"), 40, 50),
    ];
    assert_eq!(verdict(&took_effect), CheckResult::Linearizable);
    let did_not = [
        put(1, 1, "a", 0, 10),
        cas_unknown(2, Some("a"), "b", 20),
        get(3, 1, Some("a"), 40, 50),
        get(3, 1, Some("a"), 60, 70),
    ];
    assert_eq!(verdict(&did_not), CheckResult::Linearizable);
    // Its comparison could not hold, so it cannot have written "b".
    let impossible = [
        put(1, 1, "a", 0, 10),
        cas_unknown(2, Some("x"), "b", 20),
        get(3, 1, Some("b"), 40, 50),
    ];
    assert_not_linearizable(&impossible, "key 1");
    // Once seen, an unknown write cannot be undone by a later read.
    let flickers = [
        put(1, 1, "a", 0, 10),
        cas_unknown(2, Some("a"), "b", 20),
        get(3, 1, Some("b"), 40, 50),
        get(3, 1, Some("a"), 60, 70),
    ];
    assert_not_linearizable(&flickers, "key 1");
}

#[test]
fn an_unknown_write_enabling_an_unknown_swap_is_kept() {
    // Only "a" (unknown) then the swap a -> b (unknown) explains the read of "b":
    // dropping the unobserved-looking put of "a" would report a false violation.
    let history = [
        Operation::unknown(1, put_input(1, "a"), 0),
        cas_unknown(2, Some("a"), "b", 10),
        get(3, 1, Some("b"), 40, 50),
    ];
    assert_eq!(verdict(&history), CheckResult::Linearizable);
}

#[test]
fn an_unknown_write_explaining_a_failed_swap_is_kept() {
    // The swap expecting "a" failed, which only the unknown put of "b" explains.
    let history = [
        put(1, 1, "a", 0, 10),
        Operation::unknown(2, put_input(1, "b"), 20),
        cas(3, Some("a"), "c", false, 30, 40),
    ];
    assert_eq!(verdict(&history), CheckResult::Linearizable);
    let without_it = [put(1, 1, "a", 0, 10), cas(3, Some("a"), "c", false, 30, 40)];
    assert_not_linearizable(&without_it, "key 1");
}

#[test]
fn which_unknown_writes_may_be_observed() {
    let unknown = Operation::unknown(1, put_input(1, "y"), 10);
    let observed = |completed: &[&CasOperation], unknown_writes: &[&CasOperation]| {
        KvCasModel.unknown_may_be_observed(&unknown, completed, unknown_writes)
    };
    let reads_x = get(2, 1, Some("x"), 0, 20);
    let reads_y = get(2, 1, Some("y"), 0, 20);
    let reads_y_before = get(2, 1, Some("y"), 0, 5);
    let swaps_from_y = cas(2, Some("y"), "z", true, 0, 20);
    let swaps_from_x = cas(2, Some("x"), "z", true, 0, 20);
    let fails = cas(2, Some("x"), "z", false, 0, 20);
    let unknown_from_y = cas_unknown(3, Some("y"), "z", 0);
    let unknown_from_x = cas_unknown(3, Some("x"), "z", 0);
    assert!(!observed(&[&reads_x], &[&unknown]));
    assert!(observed(&[&reads_y], &[&unknown]));
    // Returned before the write was called: cannot have seen it.
    assert!(!observed(&[&reads_y_before], &[&unknown]));
    assert!(observed(&[&swaps_from_y], &[&unknown]));
    assert!(!observed(&[&swaps_from_x], &[&unknown]));
    assert!(observed(&[&fails], &[&unknown]));
    assert!(observed(&[&reads_x], &[&unknown, &unknown_from_y]));
    assert!(!observed(&[&reads_x], &[&unknown, &unknown_from_x]));
    // A read has no effect to observe.
    let unknown_read = Operation::unknown(1, KvCasInput::Get { key: 1 }, 10);
    assert!(!KvCasModel.unknown_may_be_observed(&unknown_read, &[&reads_y], &[]));
}

#[test]
fn keys_are_checked_apart_and_the_bad_one_is_named() {
    let swap_on = |key: u64, expected: Option<&str>, new: &str, ok: bool, call, ret| {
        let output = KvCasOutput::CasResult(ok);
        Operation::completed(1, cas_input(key, expected, new), output, call, ret)
    };
    let history = [
        put(1, 1, "a", 0, 10),
        swap_on(2, None, "b", true, 5, 15),
        swap_on(1, Some("a"), "c", true, 20, 30),
        // Key 2 holds "b": this swap cannot succeed.
        swap_on(2, Some("a"), "d", true, 20, 30),
        get(2, 1, Some("c"), 40, 50),
    ];
    assert_not_linearizable(&history, "key 2");
    assert_eq!(verdict(&history[..3]), CheckResult::Linearizable);
}

#[test]
fn an_answer_of_the_wrong_kind_is_a_violation() {
    let history = [Operation::completed(
        1,
        put_input(1, "a"),
        KvCasOutput::CasResult(true),
        0,
        10,
    )];
    assert_not_linearizable(&history, "key 1");
}
