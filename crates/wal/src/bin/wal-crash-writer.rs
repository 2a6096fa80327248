//! Helper process for `tests/process_crash.rs`: appends records to a WAL in a
//! directory with group commit and prints each durable position to stdout as soon
//! as its `sync` returns, until it has written `record_count_max` records or is
//! killed (the test sends SIGKILL mid-append).
//!
//! Usage: `wal-crash-writer DIRECTORY RECORDS_PER_SYNC RECORD_COUNT_MAX`.
//! The payload at each position is `crash_test_payload(position)`; the test
//! computes the same function to check what it reads back.

use std::io::Write;
use understudy_wal::{FileStorage, Wal, WalOptions};

/// The payload written at `position`: its length and bytes depend on the position,
/// so a record in the wrong place or a mix of two records is detected. The test
/// has an identical copy.
fn crash_test_payload(position: u64) -> Vec<u8> {
    let length = (position.wrapping_mul(2_654_435_761) % 2_000) as usize;
    (0..length)
        .map(|index| (position.wrapping_mul(31).wrapping_add(index as u64) % 251) as u8)
        .collect()
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [directory, records_per_sync, record_count_max] = arguments.as_slice() else {
        eprintln!("usage: wal-crash-writer DIRECTORY RECORDS_PER_SYNC RECORD_COUNT_MAX");
        std::process::exit(2);
    };
    let records_per_sync: u64 = records_per_sync
        .parse()
        .expect("RECORDS_PER_SYNC is a number");
    let record_count_max: u64 = record_count_max
        .parse()
        .expect("RECORD_COUNT_MAX is a number");
    let storage = FileStorage::open(directory).expect("open the directory");
    let options = WalOptions {
        // Small segments, so that kills also land inside rotations.
        segment_bytes_target: 256 * 1024,
        ..WalOptions::default()
    };
    let (mut wal, records) = Wal::open(storage, options).expect("open the WAL");
    let mut stdout = std::io::stdout().lock();
    let mut position = records.last().map_or(0, |record| record.position.get());
    while position < record_count_max {
        for _ in 0..records_per_sync {
            position += 1;
            let appended = wal.append(&crash_test_payload(position)).expect("append");
            assert_eq!(appended.get(), position, "positions are consecutive");
        }
        let durable = wal.sync().expect("sync");
        // Printed only after the sync returned: every line is a durability promise.
        writeln!(stdout, "{}", durable.get()).expect("stdout");
        stdout.flush().expect("stdout");
    }
}
