//! The two-step snapshot protocol (reserve a file, write it on another storage
//! handle, complete on the owning log): normal completion, refusal of a stale
//! snapshot, and crashes at every storage call between the steps.

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use understudy_raft::{Entry, EntryPayload, Membership, RestoredState, SnapshotMeta};
use understudy_raft_log::{
    snapshot_file_name, write_snapshot_file, RaftLog, RaftLogError, RaftLogOptions,
};
use understudy_types::{LogIndex, NodeId, Term};
use understudy_wal::{CrashFaults, SimDisk, Storage, WalOptions, TEMPORARY_SUFFIX};

fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range
        .map(|index| Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(Bytes::from(format!("command {index}"))),
        })
        .collect()
}

fn options() -> RaftLogOptions {
    RaftLogOptions {
        wal: WalOptions {
            segment_bytes_target: 1024,
            ..WalOptions::default()
        },
    }
}

fn meta(last_index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index: LogIndex(last_index),
        last_term: Term(1),
        membership: Membership::with_voters([NodeId(1), NodeId(2)]),
    }
}

/// A log on `disk` holding entries 1..=20, all durable.
fn log_with_entries(disk: &SimDisk) -> RaftLog<SimDisk> {
    let bootstrap = || RestoredState::bootstrap([NodeId(1), NodeId(2)]);
    let (mut log, _) = RaftLog::open(disk.clone(), options(), bootstrap).expect("open");
    log.append(None, &entries(1..=20)).expect("append");
    log.sync().expect("sync");
    log
}

fn reopen(disk: &SimDisk) -> RestoredState {
    let (_, restored) =
        RaftLog::open(disk.clone(), options(), || panic!("not a fresh directory")).expect("reopen");
    restored
}

/// The snapshot files and temporary files in the directory.
fn snapshot_and_temporary_files(disk: &SimDisk) -> Vec<String> {
    disk.list()
        .expect("list")
        .into_iter()
        .filter(|name| name.starts_with("snapshot-") || name.ends_with(TEMPORARY_SUFFIX))
        .collect()
}

#[test]
fn a_file_written_on_another_handle_completes_while_the_log_moves_on() {
    let disk = SimDisk::new();
    let mut log = log_with_entries(&disk);
    let reservation = log.reserve_snapshot_file();
    // The background writer uses its own handle on the same directory.
    let written =
        write_snapshot_file(&mut disk.clone(), &reservation, b"state at 15").expect("write");
    assert_eq!(written.data_length_bytes(), 11);
    // Meanwhile the owning thread keeps appending and committing.
    log.append(None, &entries(21..=25)).expect("append");
    log.sync().expect("sync");
    log.complete_snapshot(&meta(15), written).expect("complete");
    assert_eq!(log.snapshot_meta(), &meta(15));
    drop(log);
    let restored = reopen(&disk);
    assert_eq!(
        restored.snapshot,
        (meta(15), Bytes::from_static(b"state at 15"))
    );
    assert_eq!(restored.entries, entries(16..=25));
    assert_eq!(
        snapshot_and_temporary_files(&disk),
        vec![snapshot_file_name(reservation.file_number())],
        "the superseded bootstrap snapshot file is gone"
    );
}

#[test]
fn a_snapshot_installed_meanwhile_wins_and_the_late_file_is_removed() {
    let disk = SimDisk::new();
    let mut log = log_with_entries(&disk);
    let reservation = log.reserve_snapshot_file();
    let written =
        write_snapshot_file(&mut disk.clone(), &reservation, b"local at 10").expect("write");
    // The leader's newer snapshot arrives while the local file is being written.
    log.install_snapshot(&meta(30), b"leader at 30", false)
        .expect("install");
    let refused = log.complete_snapshot(&meta(10), written);
    assert!(
        matches!(refused, Err(RaftLogError::StaleSnapshot { .. })),
        "{refused:?}"
    );
    assert!(!refused.expect_err("refused").must_stop());
    assert!(
        !snapshot_and_temporary_files(&disk).contains(&reservation.file_name()),
        "the orphaned local file is removed at once"
    );
    // The log is still usable.
    log.append(None, &entries(31..=31))
        .expect("append after refusal");
    log.sync().expect("sync");
    drop(log);
    let restored = reopen(&disk);
    assert_eq!(
        restored.snapshot,
        (meta(30), Bytes::from_static(b"leader at 30"))
    );
    assert_eq!(restored.entries.len(), 1);
}

/// Cuts power after each possible number of storage operations of the
/// background write, crashes, and reopens: the old snapshot and every entry
/// survive, and neither the temporary file nor the unreferenced snapshot file
/// is left behind. Covers a crash during the write (a `.tmp` file) and one
/// after it but before `complete_snapshot` (an unreferenced `snapshot-N`).
#[test]
fn a_crash_between_the_steps_leaves_the_old_snapshot_and_no_garbage() {
    let mut saw_temporary = false;
    let mut saw_unreferenced = false;
    for operations_before_cut in 0..12 {
        for seed in 0..8 {
            let disk = SimDisk::new();
            let mut log = log_with_entries(&disk);
            let before: Vec<String> = snapshot_and_temporary_files(&disk);
            let reservation = log.reserve_snapshot_file();
            disk.cut_power_after(operations_before_cut);
            let result = write_snapshot_file(&mut disk.clone(), &reservation, &[7; 3000]);
            let names = disk.list().expect("list works without power");
            saw_temporary |= names.iter().any(|name| name.ends_with(TEMPORARY_SUFFIX));
            saw_unreferenced |= result.is_ok();
            drop(log);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let faults = if seed % 2 == 0 {
                CrashFaults::power_loss()
            } else {
                CrashFaults::process_crash()
            };
            disk.crash(&mut rng, &faults);
            let restored = reopen(&disk);
            assert_eq!(
                restored.snapshot.0.last_index,
                LogIndex(0),
                "cut {operations_before_cut}"
            );
            assert_eq!(
                restored.entries,
                entries(1..=20),
                "cut {operations_before_cut}"
            );
            assert_eq!(
                snapshot_and_temporary_files(&disk),
                before,
                "cut {operations_before_cut}, seed {seed}: garbage left behind"
            );
        }
    }
    assert!(saw_temporary, "no cut left a temporary file");
    assert!(saw_unreferenced, "no cut came after a complete write");
}

/// A crash during `complete_snapshot` (at every storage call) restores either
/// the old snapshot or the new one, each with its entries, and no garbage.
#[test]
fn a_crash_during_completion_restores_the_old_or_the_new_snapshot() {
    let mut saw_new = false;
    let mut saw_old = false;
    for operations_before_cut in 0..10 {
        for seed in 0..8 {
            let disk = SimDisk::new();
            let mut log = log_with_entries(&disk);
            let reservation = log.reserve_snapshot_file();
            let written =
                write_snapshot_file(&mut disk.clone(), &reservation, b"at 12").expect("write");
            disk.cut_power_after(operations_before_cut);
            let completed = log.complete_snapshot(&meta(12), written).is_ok();
            drop(log);
            disk.crash(
                &mut ChaCha8Rng::seed_from_u64(seed),
                &CrashFaults::power_loss(),
            );
            let restored = reopen(&disk);
            if restored.snapshot.0.last_index == LogIndex(12) {
                saw_new = true;
                assert_eq!(restored.snapshot.1, Bytes::from_static(b"at 12"));
                assert_eq!(restored.entries, entries(13..=20));
            } else {
                assert!(
                    !completed,
                    "cut {operations_before_cut}: a completed snapshot was lost"
                );
                saw_old = true;
                assert_eq!(restored.snapshot.0.last_index, LogIndex(0));
                assert_eq!(restored.entries, entries(1..=20));
            }
            let files = snapshot_and_temporary_files(&disk);
            assert_eq!(files.len(), 1, "cut {operations_before_cut}: {files:?}");
        }
    }
    assert!(saw_new && saw_old, "both outcomes exercised");
}
