//! Round trips and reopen after every kind of operation, truncation semantics,
//! compaction, and refusal of damaged durable state.

use bytes::Bytes;
use understudy_raft::{Entry, EntryPayload, HardState, Membership, RestoredState, SnapshotMeta};
use understudy_raft_log::{snapshot_file_name, RaftLog, RaftLogError, RaftLogOptions};
use understudy_types::{LogIndex, NodeId, Term};
use understudy_wal::{FileStorage, SimDisk, Storage, WalOptions};

fn entry(index: u64, term: u64, command: &str) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Command(Bytes::copy_from_slice(command.as_bytes())),
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|index| entry(index, term, &format!("command {index}")))
        .collect()
}

fn bootstrap() -> RestoredState {
    RestoredState::bootstrap([NodeId(1), NodeId(2), NodeId(3)])
}

fn small_segments() -> RaftLogOptions {
    RaftLogOptions {
        wal: WalOptions {
            segment_bytes_target: 1024,
            ..WalOptions::default()
        },
    }
}

fn open<S: Storage>(storage: S) -> (RaftLog<S>, RestoredState) {
    RaftLog::open(storage, small_segments(), || {
        panic!("not a fresh directory")
    })
    .expect("open")
}

fn assert_same(actual: &RestoredState, expected: &RestoredState) {
    assert_eq!(actual.hard_state, expected.hard_state, "hard state");
    assert_eq!(actual.snapshot, expected.snapshot, "snapshot");
    assert_eq!(actual.entries, expected.entries, "entries");
}

fn vote(term: u64, node: u64) -> HardState {
    HardState {
        term: Term(term),
        voted_for: Some(NodeId(node)),
    }
}

#[test]
fn a_fresh_directory_is_bootstrapped_durably() {
    let disk = SimDisk::new();
    let (_, restored) = RaftLog::open(disk.clone(), small_segments(), bootstrap).expect("open");
    assert_same(&restored, &bootstrap());
    let (_, reopened) = open(disk.clone());
    assert_same(&reopened, &bootstrap());
}

#[test]
fn a_joining_node_starts_with_no_members() {
    let disk = SimDisk::new();
    let empty = || RestoredState::default();
    let (_, restored) = RaftLog::open(disk.clone(), small_segments(), empty).expect("open");
    assert!(restored.snapshot.0.membership.voters.is_empty());
    let (_, reopened) = open(disk);
    assert_same(&reopened, &RestoredState::default());
}

#[test]
fn hard_state_and_entries_survive_reopen_and_unsynced_ones_do_not() {
    let disk = SimDisk::new();
    let (mut log, _) = RaftLog::open(disk.clone(), small_segments(), bootstrap).expect("open");
    log.append(Some(vote(1, 1)), &entries(1..=3, 1))
        .expect("append");
    log.append(None, &entries(4..=5, 1)).expect("append");
    log.sync().expect("sync");
    log.append(Some(vote(2, 2)), &entries(6..=6, 2))
        .expect("append, never synced");
    drop(log);
    let (log, restored) = open(disk);
    assert_eq!(restored.hard_state, vote(1, 1));
    assert_eq!(restored.entries, entries(1..=5, 1));
    assert_eq!(log.last_index(), LogIndex(5));
}

#[test]
fn an_overlapping_append_replaces_the_stored_suffix() {
    let disk = SimDisk::new();
    let (mut log, _) = RaftLog::open(disk.clone(), small_segments(), bootstrap).expect("open");
    log.append(Some(vote(1, 1)), &entries(1..=5, 1))
        .expect("append");
    log.sync().expect("sync");
    log.append(Some(vote(2, 3)), &entries(3..=4, 2))
        .expect("conflicting suffix");
    log.sync().expect("sync");
    drop(log);
    let (mut log, restored) = open(disk.clone());
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=4, 2));
    assert_eq!(restored.entries, expected);
    assert_eq!(restored.hard_state, vote(2, 3));
    // Truncating everything after the snapshot works too.
    log.append(None, &entries(1..=1, 3))
        .expect("replace from 1");
    log.sync().expect("sync");
    drop(log);
    assert_eq!(open(disk).1.entries, entries(1..=1, 3));
}

fn meta(last_index: u64, last_term: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_index: LogIndex(last_index),
        last_term: Term(last_term),
        membership: Membership::with_voters([NodeId(1), NodeId(2)]),
    }
}

#[test]
fn installed_snapshots_replace_or_keep_the_log() {
    let disk = SimDisk::new();
    let (mut log, _) = RaftLog::open(disk.clone(), small_segments(), bootstrap).expect("open");
    log.append(Some(vote(1, 1)), &entries(1..=6, 1))
        .expect("append");
    log.sync().expect("sync");
    log.install_snapshot(&meta(4, 1), b"state at 4", true)
        .expect("install, keep");
    drop(log);
    let (mut log, restored) = open(disk.clone());
    assert_eq!(
        restored.snapshot,
        (meta(4, 1), Bytes::from_static(b"state at 4"))
    );
    assert_eq!(restored.entries, entries(5..=6, 1));
    log.install_snapshot(&meta(9, 2), b"state at 9", false)
        .expect("install, discard");
    drop(log);
    let (mut log, restored) = open(disk.clone());
    assert_eq!(restored.snapshot.0, meta(9, 2));
    assert!(restored.entries.is_empty());
    assert_eq!(restored.hard_state, vote(1, 1));
    log.append(None, &entries(10..=11, 2))
        .expect("append after the snapshot");
    log.sync().expect("sync");
    drop(log);
    assert_eq!(open(disk.clone()).1.entries, entries(10..=11, 2));
    let snapshot_files: Vec<String> = disk
        .list()
        .expect("list")
        .into_iter()
        .filter(|name| name.starts_with("snapshot-"))
        .collect();
    assert_eq!(
        snapshot_files.len(),
        1,
        "superseded snapshot files are removed"
    );
}

#[test]
fn saving_snapshots_compacts_without_losing_the_hard_state() {
    let disk = SimDisk::new();
    let (mut log, _) = RaftLog::open(disk.clone(), small_segments(), bootstrap).expect("open");
    // The vote is written once, at the very start, in the first segment.
    log.append(Some(vote(7, 2)), &[]).expect("vote");
    for index in 1..=200 {
        log.append(None, &entries(index..=index, 7))
            .expect("append");
        log.sync().expect("sync");
    }
    let segments_before = log.wal().segments().len();
    assert!(segments_before > 10, "{segments_before} segments");
    log.save_snapshot(&meta(150, 7), b"applied through 150")
        .expect("save");
    let segments_after = log.wal().segments().len();
    assert!(
        segments_after < segments_before / 2,
        "{segments_before} -> {segments_after}"
    );
    drop(log);
    let (mut log, restored) = open(disk.clone());
    assert_eq!(
        restored.hard_state,
        vote(7, 2),
        "the only vote record was compacted away"
    );
    assert_eq!(restored.snapshot.0, meta(150, 7));
    assert_eq!(restored.entries, entries(151..=200, 7));
    // Compacting everything keeps working, and reopening after it too.
    log.save_snapshot(&meta(200, 7), b"applied through 200")
        .expect("save all");
    assert_eq!(log.wal().segments().len(), 1);
    drop(log);
    let (_, restored) = open(disk);
    assert_eq!(restored.hard_state, vote(7, 2));
    assert!(restored.entries.is_empty());
}

#[test]
fn refused_requests_store_nothing_and_leave_the_log_usable() {
    let disk = SimDisk::new();
    let (mut log, _) = RaftLog::open(disk.clone(), small_segments(), bootstrap).expect("open");
    log.append(None, &entries(1..=4, 1)).expect("append");
    log.save_snapshot(&meta(3, 1), b"at 3").expect("save");
    let stale = log
        .install_snapshot(&meta(2, 1), b"at 2", false)
        .expect_err("stale");
    assert!(matches!(stale, RaftLogError::StaleSnapshot { .. }) && !stale.must_stop());
    let huge = Entry {
        term: Term(1),
        index: LogIndex(6),
        payload: EntryPayload::Command(Bytes::from(vec![0; 4 * 1024 * 1024 + 1])),
    };
    let too_large = log
        .append(Some(vote(9, 9)), &[entry(5, 1, "fine"), huge])
        .expect_err("big");
    assert!(matches!(too_large, RaftLogError::EntryTooLarge { .. }) && !too_large.must_stop());
    log.sync().expect("still usable");
    drop(log);
    let (_, restored) = open(disk);
    assert_eq!(
        restored.entries,
        entries(4..=4, 1),
        "nothing of the refused append"
    );
    assert_eq!(restored.hard_state, HardState::default());
}

/// Returns a disk with a vote and entries in several synced batches of one segment.
fn disk_with_history() -> SimDisk {
    let disk = SimDisk::new();
    let (mut log, _) =
        RaftLog::open(disk.clone(), RaftLogOptions::default(), bootstrap).expect("open");
    log.append(Some(vote(3, 1)), &entries(1..=2, 3))
        .expect("append");
    log.sync().expect("sync");
    log.append(None, &entries(3..=4, 3)).expect("append");
    log.sync().expect("sync");
    disk
}

#[test]
fn a_damaged_vote_is_refused() {
    let disk = disk_with_history();
    // Damage each byte of the synced batches except the newest (whose damage is
    // indistinguishable from a torn write, see docs/wal-format.md): open must
    // refuse, naming the segment, unless the byte is record padding.
    let segment = "wal-00000000000000000001";
    let length = disk.file_length(segment).expect("length");
    let mut refused = 0;
    for offset in 40..length - 120 {
        disk.flip_durable_bit(segment, offset, 2).expect("flip");
        match RaftLog::open(disk.clone(), RaftLogOptions::default(), bootstrap) {
            Err(RaftLogError::Corrupt { file, .. }) => {
                assert_eq!(file, segment);
                refused += 1;
            }
            Err(other) => panic!("offset {offset}: unexpected error {other}"),
            Ok(_) => {}
        }
        disk.flip_durable_bit(segment, offset, 2)
            .expect("flip back");
    }
    // Padding bytes are not covered by a checksum; everything else is.
    assert!(
        refused > (length - 160) * 3 / 4,
        "{refused} of {length} damaged bytes refused"
    );
    assert!(RaftLog::open(disk, RaftLogOptions::default(), bootstrap).is_ok());
}

#[test]
fn a_damaged_or_missing_snapshot_file_is_refused() {
    let mut disk = disk_with_history();
    let name = snapshot_file_name(1);
    let length = disk.file_length(&name).expect("bootstrap snapshot file");
    disk.flip_durable_bit(&name, length - 1, 0).expect("flip");
    let damaged =
        RaftLog::open(disk.clone(), RaftLogOptions::default(), bootstrap).expect_err("bad");
    assert!(
        matches!(&damaged, RaftLogError::Corrupt { file, .. } if *file == name),
        "{damaged}"
    );
    disk.remove(&name).expect("remove");
    let missing = RaftLog::open(disk, RaftLogOptions::default(), bootstrap).expect_err("missing");
    assert!(missing.to_string().contains("missing"), "{missing}");
}

#[test]
fn orphaned_snapshot_files_are_removed_at_open() {
    let disk = disk_with_history();
    let (mut log, _) = open(disk.clone());
    log.install_snapshot(&meta(4, 3), b"four", true)
        .expect("install");
    drop(log);
    // An install interrupted after its file but before its record was durable.
    let mut storage = disk.clone();
    understudy_wal::install_atomic_file(&mut storage, &snapshot_file_name(99), b"orphan")
        .expect("orphan");
    let (mut log, restored) = open(disk.clone());
    assert_eq!(restored.snapshot.1, Bytes::from_static(b"four"));
    let names = disk.list().expect("list");
    assert!(!names.contains(&snapshot_file_name(99)), "{names:?}");
    // Numbers keep increasing past the orphan's, so no live file is ever replaced.
    log.save_snapshot(&meta(4, 3), b"four again").expect("save");
    assert!(disk
        .list()
        .expect("list")
        .contains(&snapshot_file_name(100)));
}

#[test]
fn real_files_round_trip() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let storage = || FileStorage::open(directory.path()).expect("storage");
    let (mut log, _) = RaftLog::open(storage(), small_segments(), bootstrap).expect("open");
    log.append(Some(vote(2, 1)), &entries(1..=50, 2))
        .expect("append");
    log.sync().expect("sync");
    log.save_snapshot(&meta(20, 2), b"twenty").expect("save");
    drop(log);
    let (_, restored) = open(storage());
    assert_eq!(restored.hard_state, vote(2, 1));
    assert_eq!(
        restored.snapshot,
        (meta(20, 2), Bytes::from_static(b"twenty"))
    );
    assert_eq!(restored.entries, entries(21..=50, 2));
}
