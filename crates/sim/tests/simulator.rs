//! Whole-simulator tests: determinism across processes, fault coverage of the
//! default seed range, and proof that the simulator finds deliberate bugs.

use std::process::Command;
use understudy_sim::runner::{Bug, RunConfig};
use understudy_sim::summary::{run_seed_catching_panics, run_seeds, SeedsOptions};

fn template(operations: u64, bug: Option<Bug>) -> RunConfig {
    RunConfig {
        seed: 0,
        nodes: 3,
        operations,
        bug,
    }
}

fn summary_line_of(arguments: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_understudy-sim"))
        .args(arguments)
        .output()
        .expect("the simulator binary runs");
    assert!(
        output.status.success(),
        "the simulator failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stdout = String::from_utf8(output.stdout).expect("the summary is UTF-8");
    stdout.lines().last().expect("a summary line").to_owned()
}

/// The same seed in two separate processes prints the same trace hash, so no
/// per-process hash randomisation leaks into the run; and it matches the hash of
/// the same seed run in this process.
#[test]
fn same_seed_gives_the_same_trace_hash_in_two_processes() {
    let arguments = ["raft", "--seed", "7", "--steps", "300"];
    let first = summary_line_of(&arguments);
    let second = summary_line_of(&arguments);
    assert_eq!(first, second);
    assert!(
        first.starts_with("seeds=1 violations=0 "),
        "unexpected summary: {first}"
    );

    let options = SeedsOptions {
        first_seed: 7,
        seeds: 1,
        threads: 1,
        verbose: false,
        progress: false,
    };
    let in_process = run_seeds(&template(300, None), &options);
    assert_eq!(in_process.line(), first);

    let other_seed = summary_line_of(&["raft", "--seed", "8", "--steps", "300"]);
    assert_ne!(
        other_seed.split("trace_hash=").nth(1),
        first.split("trace_hash=").nth(1),
        "different seeds should run differently"
    );
}

/// Over 100 seeds of the default settings, runs are clean and exercise crashes
/// that lose unsynced writes, partitions, snapshot installs and membership changes.
#[test]
fn default_seed_range_exercises_every_fault_without_violations() {
    let options = SeedsOptions {
        first_seed: 0,
        seeds: 100,
        threads: 2,
        verbose: false,
        progress: false,
    };
    let summary = run_seeds(&template(2_000, None), &options);
    assert_eq!(
        summary.violations, 0,
        "failed seeds: {:?}",
        summary.failed_seeds
    );
    assert!(summary.operations >= 100 * 1_900, "{}", summary.line());
    assert!(
        summary.crashes_losing_unsynced_writes > 0,
        "{}",
        summary.line()
    );
    assert!(summary.partitions > 0, "{}", summary.line());
    assert!(summary.snapshots > 0, "{}", summary.line());
    assert!(summary.reconfigurations > 0, "{}", summary.line());
}

/// A few hundred more seeds, and five-node clusters, stay clean.
#[test]
fn more_seeds_and_larger_clusters_stay_clean() {
    let options = |first_seed, seeds| SeedsOptions {
        first_seed,
        seeds,
        threads: 2,
        verbose: false,
        progress: false,
    };
    let three = run_seeds(&template(2_000, None), &options(100, 300));
    assert_eq!(
        three.violations, 0,
        "failed seeds: {:?}",
        three.failed_seeds
    );
    let five_nodes = RunConfig {
        nodes: 5,
        ..template(2_000, None)
    };
    let five = run_seeds(&five_nodes, &options(0, 100));
    assert_eq!(five.violations, 0, "failed seeds: {:?}", five.failed_seeds);
}

/// Runs seeds 0.. with `bug` on until one finds a violation; returns that seed.
fn first_failing_seed(bug: Bug, seeds_max: u64) -> Option<u64> {
    (0..seeds_max).find(|seed| {
        let run = RunConfig {
            seed: *seed,
            ..template(2_000, Some(bug))
        };
        !run_seed_catching_panics(&run).violations.is_empty()
    })
}

macro_rules! deliberate_bug_test {
    ($name:ident, $bug:expr, $seeds_max:expr) => {
        /// The default simulator settings find this deliberate bug within the
        /// stated number of seeds (see docs/simulator.md).
        #[test]
        fn $name() {
            let found = first_failing_seed($bug, $seeds_max);
            assert!(
                found.is_some(),
                "{} was not found within {} seeds",
                $bug.name(),
                $seeds_max
            );
        }
    };
}

deliberate_bug_test!(
    finds_commit_of_earlier_term_by_counting,
    Bug::CommitEarlierTerm,
    20
);
deliberate_bug_test!(finds_vote_without_log_check, Bug::VoteWithoutLogCheck, 20);
deliberate_bug_test!(
    finds_acknowledge_before_durable,
    Bug::AcknowledgeBeforeDurable,
    20
);
deliberate_bug_test!(
    finds_kept_conflicting_suffix,
    Bug::KeepConflictingSuffix,
    20
);
deliberate_bug_test!(finds_no_op_fsync, Bug::NoOpSync, 20);
deliberate_bug_test!(finds_stale_reads_in_the_history, Bug::StaleReads, 20);
