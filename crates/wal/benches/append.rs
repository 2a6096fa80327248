//! Appends per second of 256-byte records on a real file, side by side:
//! group commit of 64 and of 256 records per `fdatasync`, against one `fdatasync`
//! per append. One iteration appends `records_per_sync` records and syncs once;
//! criterion reports records per second (throughput in elements).
//!
//! The temporary directory is created under `UNDERSTUDY_BENCH_DIR` if set, else
//! under the system temporary directory: make sure that is a real disk, not tmpfs,
//! or every fsync is free.

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use understudy_wal::{FileStorage, Wal, WalOptions};

const RECORD_BYTES: usize = 256;

fn append(criterion: &mut Criterion) {
    let parent = std::env::var_os("UNDERSTUDY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let mut group = criterion.benchmark_group("wal_append_256_byte_records");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let record = [0x5a_u8; RECORD_BYTES];
    for records_per_sync in [1_u64, 64, 256] {
        let directory = tempfile::tempdir_in(&parent).expect("temporary directory");
        let storage = FileStorage::open(directory.path()).expect("storage");
        let (mut wal, _) = Wal::open(storage, WalOptions::default()).expect("open");
        group.throughput(Throughput::Elements(records_per_sync));
        group.bench_with_input(
            BenchmarkId::new("records_per_fdatasync", records_per_sync),
            &records_per_sync,
            |bencher, &count| {
                bencher.iter(|| {
                    for _ in 0..count {
                        wal.append(&record).expect("append");
                    }
                    wal.sync().expect("sync")
                });
            },
        );
    }
    group.finish();
}

// The macro generates an undocumented public function; nothing to document.
#[allow(missing_docs)]
mod generated {
    criterion::criterion_group!(benches, super::append);
}
use generated::benches;
criterion_main!(benches);
