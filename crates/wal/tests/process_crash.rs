//! Real-process crash test: a writer process (`src/bin/wal-crash-writer.rs`)
//! appends with group commit on real files and prints each durable position after
//! its sync returns. The test reads N acknowledgements, SIGKILLs the writer in the
//! middle of whatever it is doing, reopens the WAL and checks that every
//! acknowledged record is intact and that what comes back is exactly a prefix of
//! what was appended (nothing after a torn record). Several rounds on one
//! directory, with different kill points and batch sizes, so later rounds also
//! recover from the tails earlier kills left.
//!
//! No sleeps: the kill point is "after the N-th acknowledgement line", and the
//! writer keeps appending while the test reads, so the kill lands mid-append.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use understudy_wal::{FileStorage, Wal, WalOptions};

/// Identical to the writer's copy (a separate binary cannot share test code).
fn crash_test_payload(position: u64) -> Vec<u8> {
    let length = (position.wrapping_mul(2_654_435_761) % 2_000) as usize;
    (0..length)
        .map(|index| (position.wrapping_mul(31).wrapping_add(index as u64) % 251) as u8)
        .collect()
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_target: 256 * 1024,
        ..WalOptions::default()
    }
}

/// Reopens the WAL and checks the prefix property; returns the last position.
fn check_directory(directory: &std::path::Path, acknowledged: u64) -> u64 {
    let storage = FileStorage::open(directory).expect("storage");
    let (wal, records) = Wal::open(storage, options()).expect("reopen after SIGKILL");
    let first = wal.first_position().get();
    for (index, record) in records.iter().enumerate() {
        let position = first + index as u64;
        assert_eq!(record.position.get(), position, "positions are consecutive");
        assert_eq!(
            record.payload,
            crash_test_payload(position),
            "record {position} intact"
        );
    }
    let last = records.last().map_or(0, |record| record.position.get());
    assert!(
        last >= acknowledged,
        "acknowledged {acknowledged} but recovered only up to {last}"
    );
    last
}

#[test]
fn sigkill_mid_append_loses_nothing_acknowledged() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut last_recovered = 0;
    // (records per sync, acknowledgements to read before the kill)
    for (round, (records_per_sync, kill_after)) in
        [(1, 3), (16, 40), (64, 25), (7, 200), (256, 10), (3, 1)]
            .into_iter()
            .enumerate()
    {
        let mut writer = Command::new(env!("CARGO_BIN_EXE_wal-crash-writer"))
            .arg(directory.path())
            .arg(records_per_sync.to_string())
            .arg("100000000")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the writer");
        let stdout = writer.stdout.take().expect("piped stdout");
        let mut acknowledged = last_recovered;
        for line in BufReader::new(stdout).lines().take(kill_after) {
            let durable: u64 = line
                .expect("read a line")
                .trim()
                .parse()
                .expect("a position");
            assert!(durable > acknowledged, "durable positions increase");
            acknowledged = durable;
        }
        // Child::kill sends SIGKILL on Unix: no destructors, no flush, no goodbye.
        writer.kill().expect("SIGKILL the writer");
        writer.wait().expect("reap the writer");
        assert!(
            acknowledged > last_recovered,
            "round {round}: the writer made progress"
        );
        last_recovered = check_directory(directory.path(), acknowledged);
    }
}
