//! The pairs simulation finds nothing in the real protocol and finds each
//! deliberate bug.

use super::*;

fn run(seed: u64, steps: u64, bug: Option<PairsBug>) -> PairsReport {
    run_pairs_seed(&PairsConfig { seed, steps, bug })
}

#[test]
fn a_hundred_seeds_find_no_violation_and_exercise_every_fault() {
    let mut total = PairsReport::default();
    for seed in 0..100 {
        let report = run(seed, 400, None);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        assert!(report.lines > 0, "seed {seed} produced output");
        total.failovers += report.failovers;
        total.partitions += report.partitions;
        total.backup_crashes += report.backup_crashes;
        total.repairings += report.repairings;
        total.checkpoints += report.checkpoints;
        total.full_checkpoints += report.full_checkpoints;
        total.restored_from_checkpoint += report.restored_from_checkpoint;
        total.restored_after_incremental += report.restored_after_incremental;
        total.mid_run_checkpoints += report.mid_run_checkpoints;
        total.restored_mid_run += report.restored_mid_run;
        total.late_releases += report.late_releases;
    }
    assert!(total.failovers > 100, "failovers happened ({total:?})");
    assert!(total.partitions > 10, "partitions happened ({total:?})");
    assert!(total.backup_crashes > 50, "backups crashed ({total:?})");
    assert!(
        total.repairings > 100,
        "new backups were paired ({total:?})"
    );
    assert!(
        total.checkpoints > 500,
        "checkpoints were taken ({total:?})"
    );
    assert!(
        total.full_checkpoints > 100 && total.checkpoints - total.full_checkpoints > 100,
        "full and incremental checkpoints were taken ({total:?})"
    );
    assert!(
        total.restored_from_checkpoint > 50,
        "promotions restored checkpoints ({total:?})"
    );
    assert!(
        total.mid_run_checkpoints > 50,
        "checkpoints were captured in the middle of a line ({total:?})"
    );
    assert!(
        total.restored_mid_run > 5,
        "promotions restored guests captured in the middle of a line ({total:?})"
    );
    assert!(
        total.restored_after_incremental > 10,
        "promotions restored images with incremental checkpoints applied ({total:?})"
    );
    assert!(
        total.late_releases > 0,
        "former primaries' releases reached the store late"
    );
}

#[test]
fn a_seed_replays_identically() {
    assert_eq!(run(42, 500, None), run(42, 500, None));
}

/// Seeds until the first violation, at most `seeds_max`.
fn seeds_until_caught(bug: PairsBug, seeds_max: u64) -> Option<u64> {
    (0..seeds_max).find(|&seed| !run(seed, 2_000, Some(bug)).violations.is_empty())
}

#[test]
fn releasing_before_the_acknowledgement_is_caught() {
    let caught = seeds_until_caught(PairsBug::ReleaseBeforeAck, 20);
    assert!(caught.is_some(), "release-before-ack went unnoticed");
}

#[test]
fn promoting_without_fencing_is_caught() {
    let caught = seeds_until_caught(PairsBug::PromoteWithoutFencing, 50);
    assert!(caught.is_some(), "promote-without-fencing went unnoticed");
}

#[test]
fn checkpointing_without_the_unreleased_outputs_is_caught() {
    let caught = seeds_until_caught(PairsBug::CheckpointWithoutUnreleased, 50);
    assert!(
        caught.is_some(),
        "checkpoint-without-unreleased went unnoticed"
    );
}
