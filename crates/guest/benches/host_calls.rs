//! The amortised cost of a logged host call.
//!
//! `record/*`: a reactor whose handler makes K calls of `clock_time_get` or
//! `random_get` in a loop, run with a [`Recorder`] (every call is a record);
//! reported per call (criterion's time per iteration divided by K, printed as
//! `ns per call` at the end). A host call cannot be run without recording, so
//! this is the whole cost of the call, recording included.
//! `primary_log/*`: handing those K records to a `PrimaryLog::log` (the pair
//! protocol's logging channel, as the node does for every record), per record.
//!
//! Run: `cargo bench -p understudy-guest --bench host_calls`.

use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use understudy_guest::{
    Birth, Epoch, GuestConfig, GuestEngine, GuestInstance, Lsn, Oseq, Record, Recorder, RunOutcome,
    SystemInputs,
};
use understudy_pair::{Pid, PrimaryConfig, PrimaryLog};

/// Host calls per handler call.
const CALLS_PER_ITERATION: u32 = 1000;

/// A reactor whose handler reads K (a little-endian u32 at 64) and makes K
/// `call` host calls, each writing its result at 128.
fn caller(import: &str, call: &str) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "{import}" {signature})
            (memory (export "memory") 1)
            (func (export "input_buffer") (param i32) (result i32) (i32.const 64))
            (func (export "handle_input") (param i32)
                (local $left i32)
                (local.set $left (i32.load (i32.const 64)))
                (block $done (loop $next
                    (br_if $done (i32.eqz (local.get $left)))
                    (drop {call})
                    (local.set $left (i32.sub (local.get $left) (i32.const 1)))
                    (br $next)))))"#,
        signature = match import {
            "clock_time_get" => "(func $host (param i32 i64 i32) (result i32))",
            _ => "(func $host (param i32 i32) (result i32))",
        },
    )
}

/// The two host calls measured: (name, WASI import, call expression).
const CALLS: [(&str, &str, &str); 2] = [
    (
        "clock_time_get",
        "clock_time_get",
        "(call $host (i32.const 1) (i64.const 0) (i32.const 128))",
    ),
    (
        "random_get",
        "random_get",
        "(call $host (i32.const 128) (i32.const 8))",
    ),
];

fn guest_for(
    engine: &GuestEngine,
    import: &str,
    call: &str,
) -> GuestInstance<Recorder<SystemInputs>> {
    let wat = caller(import, call);
    let module = engine
        .load(&wat::parse_str(&wat).expect("the benchmark's WAT parses"))
        .expect("the benchmark's module loads");
    let inputs = Recorder::new(SystemInputs::new(), Epoch(1));
    GuestInstance::new(engine, &module, &Birth::default(), inputs).expect("guest")
}

/// Runs the handler once; returns the records it logged.
fn make_calls(guest: &mut GuestInstance<Recorder<SystemInputs>>) -> Vec<Record> {
    let count = CALLS_PER_ITERATION.to_le_bytes();
    assert_eq!(guest.call_handler(&count), Ok(RunOutcome::Returned));
    guest.with_inputs(|inputs: &mut Recorder<SystemInputs>| inputs.take_records())
}

fn record(criterion: &mut Criterion) -> Vec<Record> {
    let engine = GuestEngine::new(GuestConfig::default()).expect("engine");
    let mut group = criterion.benchmark_group("record");
    group.throughput(Throughput::Elements(u64::from(CALLS_PER_ITERATION)));
    let mut sample_records = Vec::new();
    for (name, import, call) in CALLS {
        let mut guest = guest_for(&engine, import, call);
        // The first call instantiates the module; its records show that
        // every host call is logged (one record each, at least).
        let records = make_calls(&mut guest);
        assert!(
            records.len() >= CALLS_PER_ITERATION as usize,
            "{name}: {} records for {CALLS_PER_ITERATION} calls",
            records.len()
        );
        sample_records = records;
        group.bench_function(BenchmarkId::new(name, CALLS_PER_ITERATION), |bench| {
            bench.iter(|| std::hint::black_box(make_calls(&mut guest)))
        });
    }
    group.finish();
    sample_records
}

fn primary_log(criterion: &mut Criterion, records: &[Record]) {
    let mut group = criterion.benchmark_group("primary_log");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function(BenchmarkId::new("log", records.len()), |bench| {
        bench.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                // A fresh log per batch, so the unacknowledged window never
                // fills (nothing acknowledges here); its creation is not timed.
                let mut log =
                    PrimaryLog::new(Pid(1), Epoch(1), Lsn(0), Oseq(0), PrimaryConfig::default());
                let started = Instant::now();
                for record in records {
                    let lsn = log
                        .log(record.kind, record.payload.clone(), record.fuel_consumed)
                        .expect("the window holds one batch");
                    std::hint::black_box(lsn);
                }
                elapsed += started.elapsed();
                std::hint::black_box(log);
            }
            elapsed
        })
    });
    group.finish();
}

/// Every benchmark of this file: the record path, then the primary log.
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    let records = record(&mut criterion);
    primary_log(&mut criterion, &records);
}

criterion_main!(benches);
