//! Randomised tests: histories correct by construction, mutated reads, agreement
//! with a brute-force oracle on small histories, and a scaling run.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::PartitionHistory;
use super::search::{search, SearchOutcome};
use super::*;

type KvOperation = Operation<KvInput, KvOutput>;

/// The shape of a generated history.
struct Shape {
    operations: usize,
    keys: u64,
    clients: usize,
    /// How far a call may precede, and a return follow, the linearization point.
    spread_ticks: u64,
    /// Percentage of operations whose outcome is made unknown.
    unknown_percent: u32,
}

/// A history from a real sequential execution: each operation takes effect on a
/// plain map at its own multiple of ten ticks, and its client's call and return are
/// drawn around that instant. Each client has one operation in flight at a time.
/// Unknown-outcome operations take effect or not at random; both are correct.
fn generate(seed: u64, shape: &Shape) -> Vec<KvOperation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut truth: BTreeMap<u64, String> = BTreeMap::new();
    let mut client_idle_from = vec![0_u64; shape.clients];
    let mut history = Vec::with_capacity(shape.operations);
    let mut linearization_time = shape.spread_ticks;
    while history.len() < shape.operations {
        linearization_time += 10;
        let idle: Vec<usize> = (0..shape.clients)
            .filter(|&client| client_idle_from[client] <= linearization_time)
            .collect();
        if idle.is_empty() {
            continue;
        }
        let client = idle[rng.gen_range(0..idle.len())];
        let earliest_call = client_idle_from[client].max(linearization_time - shape.spread_ticks);
        let call_time = rng.gen_range(earliest_call..=linearization_time);
        let return_time = linearization_time + rng.gen_range(1..=shape.spread_ticks);
        client_idle_from[client] = return_time + 1;

        let key = rng.gen_range(0..shape.keys);
        // Unique tags ("v<n>;", delimited) make every written value distinct, and a
        // tag can occur in a concatenation only where it was appended.
        let value = format!("v{};", history.len());
        let input = match rng.gen_range(0..10) {
            0..=3 => KvInput::Get { key },
            4..=6 => KvInput::Put { key, value },
            _ => KvInput::Append { key, value },
        };
        let unknown = rng.gen_range(0..100) < shape.unknown_percent;
        if unknown {
            if rng.gen_bool(0.5) {
                apply_to_map(&mut truth, &input);
            }
            history.push(Operation::unknown(client as u64, input, call_time));
        } else {
            let output = apply_to_map(&mut truth, &input);
            history.push(Operation::completed(
                client as u64,
                input,
                output,
                call_time,
                return_time,
            ));
        }
    }
    history
}

fn apply_to_map(truth: &mut BTreeMap<u64, String>, input: &KvInput) -> KvOutput {
    match input {
        KvInput::Get { key } => return KvOutput::Value(truth.get(key).cloned()),
        KvInput::Put { key, value } => truth.insert(*key, value.clone()),
        KvInput::Append { key, value } => {
            truth.entry(*key).or_default().push_str(value);
            None
        }
    };
    KvOutput::Ok
}

/// The key-value specification written out again, independently of `KvModel`, for
/// the oracle and the witness check. `None` output means the outcome is unknown.
fn specification(
    state: &Option<String>,
    input: &KvInput,
    output: Option<&KvOutput>,
) -> Option<Option<String>> {
    match (input, output) {
        (KvInput::Get { .. }, None) => Some(state.clone()),
        (KvInput::Get { .. }, Some(KvOutput::Value(value))) if value == state => {
            Some(state.clone())
        }
        (KvInput::Put { value, .. }, None | Some(KvOutput::Ok)) => Some(Some(value.clone())),
        (KvInput::Append { value, .. }, None | Some(KvOutput::Ok)) => {
            Some(Some(format!("{}{value}", state.as_deref().unwrap_or(""))))
        }
        _ => None,
    }
}

/// Checks that `order` (a witness from the search) is a legal linearization of the
/// partition: every completed operation once, unknown ones at most once, the
/// specification accepts the sequence, and no operation is placed before one that
/// returned before it was called.
fn assert_valid_witness(history: &PartitionHistory<'_, KvInput, KvOutput>, order: &[u32]) {
    let mut placed = vec![false; history.operation_count() as usize];
    let mut state = None;
    for (position, &operation) in order.iter().enumerate() {
        assert!(
            !placed[operation as usize],
            "operation {operation} placed twice"
        );
        placed[operation as usize] = true;
        let recorded = history.operation(operation);
        state = specification(&state, &recorded.input, recorded.output.as_ref())
            .unwrap_or_else(|| panic!("witness step {position} violates the specification"));
        for &earlier in &order[..position] {
            let returned = history.operation(operation).return_time;
            assert!(
                returned.is_none_or(|returned| returned >= history.operation(earlier).call_time),
                "witness places {operation} after {earlier}, which was called after {operation} returned"
            );
        }
    }
    for operation in 0..history.completed_count() {
        assert!(
            placed[operation as usize],
            "completed operation {operation} missing from witness"
        );
    }
}

/// Checks each key of `history` with the search directly, asserting it is
/// linearizable and that the witness it returns is valid.
fn assert_linearizable_with_valid_witnesses(history: &[KvOperation]) {
    for partition in KvModel.partition(history) {
        let partition_history = PartitionHistory::new(&KvModel, history, &partition);
        match search(&KvModel, &partition_history, SearchBudget::default()) {
            SearchOutcome::Linearizable { order } => {
                assert_valid_witness(&partition_history, &order)
            }
            other => panic!("{}: expected linearizable, got {other:?}", partition.name),
        }
    }
}

#[test]
fn histories_correct_by_construction_are_linearizable() {
    let shape = Shape {
        operations: 300,
        keys: 3,
        clients: 6,
        spread_ticks: 40,
        unknown_percent: 5,
    };
    for seed in 0..100 {
        let history = generate(seed, &shape);
        assert_eq!(
            check(&KvModel, &history, SearchBudget::default()),
            Ok(CheckResult::Linearizable),
            "seed {seed}"
        );
        assert_linearizable_with_valid_witnesses(&history);
    }
}

/// Sets the output of the read at `index` to `Value(value)`.
fn with_read_output(
    history: &[KvOperation],
    index: usize,
    value: Option<String>,
) -> Vec<KvOperation> {
    let mut mutated = history.to_vec();
    mutated[index].output = Some(KvOutput::Value(value));
    mutated
}

fn assert_not_linearizable_at(history: &[KvOperation], key: u64, what: &str) {
    match check(&KvModel, history, SearchBudget::default()) {
        Ok(CheckResult::NotLinearizable { partition, .. }) => {
            assert_eq!(partition, format!("key {key}"), "{what}")
        }
        other => panic!("{what}: expected NotLinearizable, got {other:?}"),
    }
}

/// The value of some write on the key of `read` that was called after `read`
/// returned, if there is one: the read cannot have seen it.
fn value_from_the_future(history: &[KvOperation], read: usize) -> Option<String> {
    let read_returned = history[read].return_time?;
    history.iter().find_map(|operation| match &operation.input {
        KvInput::Put { key, value } | KvInput::Append { key, value }
            if *key == history[read].input.key() && operation.call_time > read_returned =>
        {
            Some(value.clone())
        }
        _ => None,
    })
}

/// The values written to `key`, in history order.
fn values_written(history: &[KvOperation], key: u64) -> Vec<String> {
    history
        .iter()
        .filter_map(|operation| match &operation.input {
            KvInput::Put {
                key: written,
                value,
            }
            | KvInput::Append {
                key: written,
                value,
            } if *written == key => Some(value.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn mutated_reads_are_caught() {
    let shape = Shape {
        operations: 80,
        keys: 2,
        clients: 5,
        spread_ticks: 30,
        unknown_percent: 10,
    };
    let (mut arbitrary_mutations, mut arbitrary_caught) = (0, 0);
    for seed in 0..100 {
        let history = generate(seed, &shape);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xfeed);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&index| {
                matches!(history[index].input, KvInput::Get { .. })
                    && history[index].output.is_some()
            })
            .collect();
        for _ in 0..3 {
            let read = reads[rng.gen_range(0..reads.len())];
            let key = history[read].input.key();
            let what = format!("seed {seed}, read #{read}");

            // Must fail: a value nobody wrote.
            let never_written = with_read_output(&history, read, Some("never written".into()));
            assert_not_linearizable_at(&never_written, key, &what);

            // Must fail: the value of a write called after the read returned.
            if let Some(value) = value_from_the_future(&history, read) {
                let from_the_future = with_read_output(&history, read, Some(value));
                assert_not_linearizable_at(&from_the_future, key, &what);
            }

            // Usually fails: the value of another write on the key, or missing.
            let written = values_written(&history, key);
            let replacement = (!written.is_empty() && rng.gen_bool(0.8))
                .then(|| written[rng.gen_range(0..written.len())].clone());
            if Some(&KvOutput::Value(replacement.clone())) == history[read].output.as_ref() {
                continue;
            }
            arbitrary_mutations += 1;
            let mutated = with_read_output(&history, read, replacement);
            match check(&KvModel, &mutated, SearchBudget::default()) {
                Ok(CheckResult::NotLinearizable { .. }) => arbitrary_caught += 1,
                Ok(CheckResult::Linearizable) => {}
                other => panic!("{what}: unexpected {other:?}"),
            }
        }
    }
    // Deterministic (fixed seeds); a mutation can be legal (a concurrent write's
    // value), but most are not.
    eprintln!("arbitrary read mutations caught: {arbitrary_caught} of {arbitrary_mutations}");
    assert!(
        arbitrary_caught * 10 >= arbitrary_mutations * 7,
        "{arbitrary_caught} of {arbitrary_mutations} caught"
    );
}

/// A history of up to seven operations on keys 0 and 1, with outputs drawn at
/// random from plausible values, so that it is often, but not always, linearizable.
fn random_small_history(rng: &mut ChaCha8Rng) -> Vec<KvOperation> {
    let operations = rng.gen_range(1..=7);
    (0..operations)
        .map(|client| {
            let key = rng.gen_range(0..2);
            let value = ["a", "b"][rng.gen_range(0..2)].to_string();
            let call_time = rng.gen_range(0..20);
            let return_time = call_time + rng.gen_range(1..10);
            let (input, output) = match rng.gen_range(0..3) {
                0 => {
                    let seen =
                        [None, Some("a"), Some("b"), Some("ab"), Some("ba")][rng.gen_range(0..5)];
                    (
                        KvInput::Get { key },
                        KvOutput::Value(seen.map(str::to_string)),
                    )
                }
                1 => (KvInput::Put { key, value }, KvOutput::Ok),
                _ => (KvInput::Append { key, value }, KvOutput::Ok),
            };
            if rng.gen_range(0..5) == 0 {
                Operation::unknown(client, input, call_time)
            } else {
                Operation::completed(client, input, output, call_time, return_time)
            }
        })
        .collect()
}

/// Tries every order: an operation may come next unless some other pending,
/// completed operation returned strictly before it was called; unknown ones may
/// also never come. Exponential, fine for seven operations.
fn brute_force_linearizable(
    operations: &[&KvOperation],
    placed: &mut [bool],
    state: &Option<String>,
) -> bool {
    let all_completed_placed = operations
        .iter()
        .zip(placed.iter())
        .all(|(operation, &is_placed)| is_placed || operation.output.is_none());
    if all_completed_placed {
        return true;
    }
    for candidate in 0..operations.len() {
        if placed[candidate] {
            continue;
        }
        let must_wait = (0..operations.len()).any(|other| {
            !placed[other]
                && other != candidate
                && operations[other]
                    .return_time
                    .is_some_and(|returned| returned < operations[candidate].call_time)
        });
        if must_wait {
            continue;
        }
        let recorded = operations[candidate];
        if let Some(next_state) = specification(state, &recorded.input, recorded.output.as_ref()) {
            placed[candidate] = true;
            if brute_force_linearizable(operations, placed, &next_state) {
                return true;
            }
            placed[candidate] = false;
        }
    }
    false
}

#[test]
fn agrees_with_a_brute_force_oracle_on_small_histories() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let (mut good, mut bad) = (0, 0);
    for case in 0..3000 {
        let history = random_small_history(&mut rng);
        let oracle = (0..2).all(|key| {
            let operations: Vec<&KvOperation> = history
                .iter()
                .filter(|operation| operation.input.key() == key)
                .collect();
            brute_force_linearizable(&operations, &mut vec![false; operations.len()], &None)
        });
        let verdict = check(&KvModel, &history, SearchBudget::default());
        match verdict {
            Ok(CheckResult::Linearizable) if oracle => good += 1,
            Ok(CheckResult::NotLinearizable { .. }) if !oracle => bad += 1,
            other => {
                panic!("case {case}: checker says {other:?}, oracle says {oracle}: {history:#?}")
            }
        }
    }
    // Both verdicts must be well represented, or the agreement proves little.
    assert!(good >= 300 && bad >= 300, "{good} linearizable, {bad} not");
}

/// About 2,500 operations per key, up to eight in flight at once, 2% of them with
/// unknown outcomes. No timing assertion (the machine may be busy); the point is
/// that both verdicts arrive within the default budget. (Measured, release build:
/// a few milliseconds each.)
#[test]
fn thousands_of_operations_per_key_check_quickly() {
    let shape = Shape {
        operations: 10_000,
        keys: 4,
        clients: 8,
        spread_ticks: 40,
        unknown_percent: 2,
    };
    let history = generate(7, &shape);
    assert_eq!(
        check(&KvModel, &history, SearchBudget::default()),
        Ok(CheckResult::Linearizable)
    );
    // A bad read halfway makes the search rule out every configuration before it.
    let middle_read = (history.len() / 2..history.len())
        .find(|&index| {
            matches!(history[index].input, KvInput::Get { .. }) && history[index].output.is_some()
        })
        .expect("a generated history of this size has reads in its second half");
    let key = history[middle_read].input.key();
    let mutated = with_read_output(&history, middle_read, Some("never written".into()));
    assert_not_linearizable_at(&mutated, key, "middle read");
}
