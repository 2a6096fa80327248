//! One conformance suite, run against both `Storage` implementations: the real
//! `FileStorage` in a temporary directory and the in-memory `SimDisk`. Anything the
//! WAL relies on is checked here, so the simulator's disk cannot drift from the
//! real one. Each check runs on a fresh, empty directory.

use std::io::ErrorKind;
use understudy_wal::{
    install_atomic_file, FileStorage, Position, SimDisk, Storage, Wal, WalError, WalOptions,
    VERSION_FILE_NAME,
};

/// Opens storage handles on one directory. `storage()` again gives a new handle on
/// the same directory, as a restarted process would get.
trait Harness {
    type S: Storage;
    fn storage(&mut self) -> Self::S;
}

struct FileHarness {
    directory: tempfile::TempDir,
}

impl FileHarness {
    fn new() -> FileHarness {
        FileHarness {
            directory: tempfile::tempdir().expect("temporary directory"),
        }
    }
}

impl Harness for FileHarness {
    type S = FileStorage;
    fn storage(&mut self) -> FileStorage {
        FileStorage::open(self.directory.path()).expect("open directory")
    }
}

struct SimHarness {
    disk: SimDisk,
}

impl SimHarness {
    fn new() -> SimHarness {
        SimHarness {
            disk: SimDisk::new(),
        }
    }
}

impl Harness for SimHarness {
    type S = SimDisk;
    fn storage(&mut self) -> SimDisk {
        self.disk.clone()
    }
}

fn read_all(storage: &impl Storage, name: &str) -> Vec<u8> {
    storage.read_all(name, 1 << 20).expect("read_all")
}

fn reads_back_writes(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    storage.create("data").expect("create");
    assert_eq!(storage.file_length("data").expect("length"), 0);
    storage.write_at("data", 0, b"hello").expect("write");
    storage.write_at("data", 5, b" world").expect("append");
    storage.write_at("data", 0, b"J").expect("overwrite");
    let mut buffer = [0; 5];
    storage.read_at("data", 6, &mut buffer).expect("read_at");
    assert_eq!(&buffer, b"world");
    assert_eq!(read_all(&storage, "data"), b"Jello world");
    // Writing past the end fills the gap with zeros.
    storage.write_at("data", 13, b"!").expect("write past end");
    assert_eq!(read_all(&storage, "data"), b"Jello world\0\0!");
    assert_eq!(storage.file_length("data").expect("length"), 14);
    storage.sync_file("data").expect("sync");
}

fn reading_past_the_end_fails(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    storage.create("data").expect("create");
    storage.write_at("data", 0, b"abc").expect("write");
    let mut buffer = [0; 2];
    let error = storage
        .read_at("data", 2, &mut buffer)
        .expect_err("past the end");
    assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
    let error = storage.read_all("data", 2).expect_err("over the limit");
    assert_eq!(error.kind(), ErrorKind::InvalidData);
    assert_eq!(storage.read_all("data", 3).expect("at the limit"), b"abc");
}

fn truncation_cuts_and_extends(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    storage.create("data").expect("create");
    storage.write_at("data", 0, b"abcdef").expect("write");
    storage.truncate("data", 2).expect("cut");
    assert_eq!(read_all(&storage, "data"), b"ab");
    storage.truncate("data", 4).expect("extend");
    assert_eq!(read_all(&storage, "data"), b"ab\0\0");
    storage.sync_file("data").expect("sync");
    assert_eq!(read_all(&harness.storage(), "data"), b"ab\0\0");
}

fn rename_replaces_atomically(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    storage.create("old").expect("create old");
    storage
        .write_at("old", 0, b"old contents")
        .expect("write old");
    storage.create("new").expect("create new");
    storage.write_at("new", 0, b"new").expect("write new");
    storage.rename("new", "old").expect("rename over");
    assert_eq!(storage.list().expect("list"), vec!["old".to_owned()]);
    assert_eq!(read_all(&storage, "old"), b"new");
    // The renamed file is still writable under its new name.
    storage.write_at("old", 3, b"er").expect("write renamed");
    assert_eq!(read_all(&storage, "old"), b"newer");
    let error = storage.rename("new", "other").expect_err("source gone");
    assert_eq!(error.kind(), ErrorKind::NotFound);
}

fn listing_is_sorted_and_follows_removal(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    assert!(storage.list().expect("list").is_empty());
    for name in ["b", "c", "a"] {
        storage.create(name).expect("create");
    }
    assert_eq!(storage.list().expect("list"), vec!["a", "b", "c"]);
    storage.remove("b").expect("remove");
    storage.sync_directory().expect("sync directory");
    assert_eq!(storage.list().expect("list"), vec!["a", "c"]);
    assert_eq!(
        harness.storage().list().expect("list again"),
        vec!["a", "c"]
    );
}

fn creating_an_existing_file_fails(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    storage.create("data").expect("create");
    storage.write_at("data", 0, b"keep").expect("write");
    let error = storage.create("data").expect_err("exists");
    assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    assert_eq!(read_all(&storage, "data"), b"keep");
}

fn missing_files_are_not_found(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    let mut buffer = [0; 1];
    let kinds = [
        storage.read_at("missing", 0, &mut buffer).map(drop),
        storage.read_all("missing", 10).map(drop),
        storage.write_at("missing", 0, b"x"),
        storage.sync_file("missing"),
        storage.truncate("missing", 0),
        storage.rename("missing", "other"),
        storage.remove("missing"),
        storage.file_length("missing").map(drop),
    ]
    .map(|result| result.expect_err("missing file").kind());
    assert!(
        kinds.iter().all(|&kind| kind == ErrorKind::NotFound),
        "{kinds:?}"
    );
    assert!(
        storage.list().expect("list").is_empty(),
        "nothing was created"
    );
}

fn invalid_names_are_refused(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    for name in ["", "..", "a/b", ".hidden"] {
        let error = storage.create(name).expect_err("invalid name");
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{name:?}");
    }
}

fn synced_data_survives_reopen(harness: &mut impl Harness) {
    let mut storage = harness.storage();
    storage.create("data").expect("create");
    storage.write_at("data", 0, b"durable").expect("write");
    storage.sync_file("data").expect("sync");
    storage.sync_directory().expect("sync directory");
    drop(storage);
    let reopened = harness.storage();
    assert_eq!(reopened.list().expect("list"), vec!["data"]);
    assert_eq!(read_all(&reopened, "data"), b"durable");
}

fn payload(position: u64) -> Vec<u8> {
    let length = (position * 37 % 300) as usize;
    (0..length)
        .map(|index| (position as usize + index) as u8)
        .collect()
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_bytes_target: 2048,
        ..WalOptions::default()
    }
}

fn wal_round_trips_across_reopen(harness: &mut impl Harness) {
    let (mut wal, records) = Wal::open(harness.storage(), small_segments()).expect("fresh open");
    assert!(records.is_empty());
    for position in 1..=100 {
        assert_eq!(
            wal.append(&payload(position)).expect("append"),
            Position(position)
        );
        if position % 7 == 0 {
            assert_eq!(wal.sync().expect("sync"), Position(position));
        }
    }
    assert_eq!(wal.sync().expect("sync"), Position(100));
    assert!(wal.segments().len() > 3, "small segments rotate");
    wal.append(b"never synced").expect("append");
    drop(wal);
    let (mut wal, records) = Wal::open(harness.storage(), small_segments()).expect("reopen");
    let positions: Vec<u64> = records.iter().map(|record| record.position.0).collect();
    assert_eq!(positions, (1..=100).collect::<Vec<_>>());
    assert!(records
        .iter()
        .all(|record| record.payload == payload(record.position.0)));
    assert_eq!(wal.next_position(), Position(101));
    assert_eq!(
        wal.append(&payload(101)).expect("append after reopen"),
        Position(101)
    );
    wal.sync().expect("sync");
    drop(wal);
    let (_, records) = Wal::open(harness.storage(), small_segments()).expect("third open");
    assert_eq!(records.len(), 101);
    assert_eq!(records[100].payload, payload(101));
}

fn wal_compaction_removes_whole_segments(harness: &mut impl Harness) {
    let (mut wal, _) = Wal::open(harness.storage(), small_segments()).expect("open");
    for position in 1..=60 {
        wal.append(&payload(position)).expect("append");
        wal.sync().expect("sync");
    }
    let segment_count = wal.segments().len();
    let keep_from = Position(40);
    let removable = wal.removable_segment_count(keep_from);
    assert!(removable > 0 && removable < segment_count);
    assert_eq!(
        wal.remove_segments_before(keep_from).expect("compact"),
        removable
    );
    let first = wal.first_position();
    assert!(first <= keep_from, "{first} kept what was asked");
    let all_but_last = wal.segments().len() - 1;
    let removed = wal
        .remove_segments_before(Position(61))
        .expect("all but last");
    assert_eq!(removed, all_but_last);
    drop(wal);
    let (wal, records) = Wal::open(harness.storage(), small_segments()).expect("reopen");
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(
        records.first().map(|r| r.position),
        Some(wal.first_position())
    );
    assert_eq!(records.last().map(|r| r.position), Some(Position(60)));
}

fn wal_side_files_are_atomic_and_verified(harness: &mut impl Harness) {
    let (mut wal, _) = Wal::open(harness.storage(), WalOptions::default()).expect("open");
    wal.install_file("snapshot-1", b"state one")
        .expect("install");
    wal.install_file("snapshot-1", b"state two")
        .expect("replace");
    assert_eq!(wal.read_file("snapshot-1").expect("read"), b"state two");
    assert_eq!(wal.side_file_names().expect("names"), vec!["snapshot-1"]);
    for reserved in ["wal-00000000000000000001", VERSION_FILE_NAME, "x.tmp"] {
        assert!(matches!(
            wal.install_file(reserved, b"x"),
            Err(WalError::InvalidFileName { .. })
        ));
    }
    wal.remove_file("snapshot-1").expect("remove");
    assert!(wal
        .read_file("snapshot-1")
        .expect_err("removed")
        .is_not_found());
    assert!(wal.side_file_names().expect("names").is_empty());
}

fn unknown_directory_version_is_refused(harness: &mut impl Harness) {
    drop(Wal::open(harness.storage(), WalOptions::default()).expect("initialise"));
    let mut storage = harness.storage();
    install_atomic_file(&mut storage, VERSION_FILE_NAME, &7u32.to_le_bytes()).expect("tamper");
    let error = Wal::open(harness.storage(), WalOptions::default()).expect_err("version 7");
    let message = error.to_string();
    assert!(
        matches!(error, WalError::UnsupportedVersion { found: 7, .. }),
        "{message}"
    );
    assert!(
        message.contains("version 7") && message.contains("[1]"),
        "{message}"
    );
}

macro_rules! conformance {
    ($module:ident, $harness:expr) => {
        mod $module {
            use super::*;
            conformance!(@tests $harness;
                reads_back_writes, reading_past_the_end_fails, truncation_cuts_and_extends,
                rename_replaces_atomically, listing_is_sorted_and_follows_removal,
                creating_an_existing_file_fails, missing_files_are_not_found,
                invalid_names_are_refused, synced_data_survives_reopen,
                wal_round_trips_across_reopen, wal_compaction_removes_whole_segments,
                wal_side_files_are_atomic_and_verified, unknown_directory_version_is_refused);
        }
    };
    (@tests $harness:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                super::$check(&mut $harness);
            }
        )*
    };
}

conformance!(file_storage, FileHarness::new());
conformance!(sim_disk, SimHarness::new());
