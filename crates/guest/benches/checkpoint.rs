//! Checkpoint capture time, and the page hash it relies on.
//!
//! `page_hash/*`: hashing 64 MiB as 4 KiB pages with xxh3-64, xxh3-128 and crc32c
//! (the choice of `PageHashes`). `capture/*`: `GuestInstance::checkpoint` of a
//! reactor with 1, 16 and 64 MiB of memory after a call that dirtied 1% or 100%
//! of the pages (the call itself is not timed).
//!
//! Run: `cargo bench -p understudy-guest --bench checkpoint`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use understudy_guest::{
    Birth, Epoch, GuestConfig, GuestEngine, GuestInstance, Recorder, RunOutcome, SystemInputs,
    CHECKPOINT_PAGE_BYTES,
};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

const MIB: usize = 1024 * 1024;

fn page_hash(criterion: &mut Criterion) {
    let memory: Vec<u8> = (0..64 * MIB)
        .map(|index| (index * 31 % 251) as u8)
        .collect();
    let mut group = criterion.benchmark_group("page_hash");
    group.throughput(Throughput::Bytes(memory.len() as u64));
    group.sample_size(10);
    let pages = || memory.chunks_exact(CHECKPOINT_PAGE_BYTES);
    group.bench_function("xxh3_64", |bench| {
        bench.iter(|| pages().map(xxh3_64).fold(0, u64::wrapping_add))
    });
    group.bench_function("xxh3_128", |bench| {
        bench.iter(|| pages().map(xxh3_128).fold(0, u128::wrapping_add))
    });
    group.bench_function("crc32c", |bench| {
        bench.iter(|| pages().map(crc32c::crc32c).fold(0, u32::wrapping_add))
    });
    group.finish();
}

/// A reactor with `pages_64k` pages of memory whose input is a stride: it
/// increments a byte in every stride-th 4 KiB page from page 1 on.
fn dirtier(pages_64k: usize) -> String {
    format!(
        r#"(module
            (memory (export "memory") {pages_64k})
            (func (export "input_buffer") (param i32) (result i32) (i32.const 64))
            (func (export "handle_input") (param i32)
                (local $page i32) (local $stride i32) (local $end i32) (local $address i32)
                (local.set $stride (i32.load (i32.const 64)))
                (local.set $end (i32.mul (memory.size) (i32.const 16)))
                (local.set $page (i32.const 1))
                (block $done (loop $next
                    (br_if $done (i32.ge_u (local.get $page) (local.get $end)))
                    (local.set $address (i32.mul (local.get $page) (i32.const 4096)))
                    (i32.store8 (local.get $address)
                        (i32.add (i32.load8_u (local.get $address)) (i32.const 1)))
                    (local.set $page (i32.add (local.get $page) (local.get $stride)))
                    (br $next)))))"#
    )
}

fn capture(criterion: &mut Criterion) {
    let engine = GuestEngine::new(GuestConfig::default()).expect("engine");
    let mut group = criterion.benchmark_group("capture");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for memory_mib in [1usize, 16, 64] {
        for (label, stride) in [("1%", 100u32), ("100%", 1)] {
            let wat = dirtier(memory_mib * 16);
            let module = engine
                .load(&wat::parse_str(&wat).expect("parses"))
                .expect("loads");
            let inputs = Recorder::new(SystemInputs::new(), Epoch(1));
            let mut guest =
                GuestInstance::new(&engine, &module, &Birth::default(), inputs).expect("guest");
            let stride_bytes = stride.to_le_bytes();
            let dirty = move |guest: &mut GuestInstance<_>| {
                assert_eq!(guest.call_handler(&stride_bytes), Ok(RunOutcome::Returned));
                // Drop the logged records so the log does not grow with iterations.
                guest.with_inputs(|inputs: &mut Recorder<SystemInputs>| inputs.take_records());
            };
            dirty(&mut guest);
            guest.checkpoint(Bytes::new()).expect("first checkpoint");
            group.throughput(Throughput::Bytes((memory_mib * MIB) as u64));
            let id = BenchmarkId::new(format!("{memory_mib}MiB"), label);
            group.bench_function(id, |bench| {
                bench.iter_custom(|iterations| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iterations {
                        dirty(&mut guest);
                        let started = Instant::now();
                        let checkpoint = guest.checkpoint(Bytes::new()).expect("checkpoint");
                        elapsed += started.elapsed();
                        std::hint::black_box(checkpoint);
                    }
                    elapsed
                })
            });
        }
    }
    group.finish();
}

/// Every benchmark of this file: the page hash choice, then capture.
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    page_hash(&mut criterion);
    capture(&mut criterion);
}

criterion_main!(benches);
