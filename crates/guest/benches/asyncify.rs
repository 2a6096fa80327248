//! What Asyncify costs a command guest, and what a checkpoint at a blocked read
//! costs.
//!
//! `running_total/*`: `guests/running-total.wasm` fed 10,000 lines, all queued
//! before the start (no blocking), to its exit; `instrumented` is the module as
//! `GuestEngine::load` rewrites it, `unchanged` as `load_unchanged` runs it.
//! `blocked_rounds/*`: the same 1,000 lines fed one at a time, so the guest blocks
//! before each (instrumented: an unwind and a rewind per line; unchanged: a fiber
//! park and resume per line). `checkpoint_at_read/*`: `checkpoint` of the
//! instrumented guest unwound in its read, after one more line (incremental) or
//! as a full checkpoint; the encoded size is printed once.
//!
//! Run: `cargo bench -p understudy-guest --bench asyncify`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use understudy_guest::{
    Birth, Epoch, GuestConfig, GuestEngine, GuestInstance, GuestModule, Recorder, RunOutcome,
    SystemInputs,
};

const RUNNING_TOTAL: &[u8] = include_bytes!("../../../guests/running-total.wasm");

type Guest = GuestInstance<Recorder<SystemInputs>>;

fn birth() -> Birth {
    Birth {
        args: vec!["running-total".into()],
        env: Vec::new(),
    }
}

fn new_guest(engine: &GuestEngine, module: &GuestModule) -> Guest {
    let inputs = Recorder::new(SystemInputs::new(), Epoch(1));
    GuestInstance::new(engine, module, &birth(), inputs).expect("guest")
}

fn line(index: usize) -> Bytes {
    Bytes::from(format!("{}\n", index % 1000))
}

/// Runs until the guest blocks or exits.
fn run_to_rest(guest: &mut Guest) -> RunOutcome {
    loop {
        match guest.run().expect("runs") {
            RunOutcome::OutOfFuel => continue,
            outcome => return outcome,
        }
    }
}

/// The whole program with `lines` lines queued before the start.
fn run_queued(engine: &GuestEngine, module: &GuestModule, lines: usize) {
    let mut guest = new_guest(engine, module);
    guest.with_inputs(|inputs| {
        for index in 0..lines {
            inputs.source_mut().push_stdin(line(index));
        }
        inputs.source_mut().close_stdin();
    });
    assert!(matches!(run_to_rest(&mut guest), RunOutcome::Exited(0)));
}

/// The whole program with `lines` lines fed one per blocked read.
fn run_blocking(engine: &GuestEngine, module: &GuestModule, lines: usize) {
    let mut guest = new_guest(engine, module);
    for index in 0..lines {
        assert_eq!(run_to_rest(&mut guest), RunOutcome::Blocked);
        guest.with_inputs(|inputs| inputs.source_mut().push_stdin(line(index)));
        guest.take_outputs();
    }
    guest.with_inputs(|inputs| inputs.source_mut().close_stdin());
    assert!(matches!(run_to_rest(&mut guest), RunOutcome::Exited(0)));
}

fn modules(engine: &GuestEngine) -> [(&'static str, GuestModule); 2] {
    [
        ("instrumented", engine.load(RUNNING_TOTAL).expect("loads")),
        (
            "unchanged",
            engine.load_unchanged(RUNNING_TOTAL).expect("loads"),
        ),
    ]
}

fn run_time(criterion: &mut Criterion) {
    let engine = GuestEngine::new(GuestConfig::default()).expect("engine");
    let mut group = criterion.benchmark_group("running_total");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(10_000));
    for (label, module) in modules(&engine) {
        group.bench_function(BenchmarkId::new("10k_lines_queued", label), |bench| {
            bench.iter(|| run_queued(&engine, &module, 10_000))
        });
    }
    group.finish();
    let mut group = criterion.benchmark_group("blocked_rounds");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(1_000));
    for (label, module) in modules(&engine) {
        group.bench_function(BenchmarkId::new("1k_lines_one_by_one", label), |bench| {
            bench.iter(|| run_blocking(&engine, &module, 1_000))
        });
    }
    group.finish();
}

fn checkpoint_at_read(criterion: &mut Criterion) {
    let engine = GuestEngine::new(GuestConfig::default()).expect("engine");
    let module = engine.load(RUNNING_TOTAL).expect("loads");
    let mut guest = new_guest(&engine, &module);
    assert_eq!(run_to_rest(&mut guest), RunOutcome::Blocked);
    let full = guest.checkpoint(Bytes::new()).expect("checkpoint");
    let mut next_line = 0;
    let mut feed_one = |guest: &mut Guest| {
        guest.with_inputs(|inputs| inputs.source_mut().push_stdin(line(next_line)));
        next_line += 1;
        assert_eq!(run_to_rest(guest), RunOutcome::Blocked);
        guest.take_outputs();
        guest.with_inputs(|inputs| inputs.take_records());
    };
    feed_one(&mut guest);
    let incremental = guest.checkpoint(Bytes::new()).expect("checkpoint");
    println!(
        "checkpoint at a blocked read: full {} bytes ({} pages of {} KiB memory), \
         incremental after one line {} bytes ({} pages), unwound stack {} bytes",
        full.encode().len(),
        full.page_indexes.len(),
        full.memory_bytes() / 1024,
        incremental.encode().len(),
        incremental.page_indexes.len(),
        match &incremental.host.phase {
            understudy_guest::GuestPhase::Unwound { stack, .. } => stack.len(),
            _ => 0,
        }
    );
    let mut group = criterion.benchmark_group("checkpoint_at_read");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    for (label, full) in [("incremental_after_one_line", false), ("full", true)] {
        group.bench_function(label, |bench| {
            bench.iter_custom(|iterations| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iterations {
                    feed_one(&mut guest);
                    let started = Instant::now();
                    let checkpoint = guest
                        .checkpoint_with(Bytes::new(), Vec::new(), full)
                        .expect("checkpoint");
                    let encoded = checkpoint.encode();
                    elapsed += started.elapsed();
                    std::hint::black_box(encoded);
                }
                elapsed
            })
        });
    }
    group.finish();
}

/// Every benchmark of this file.
fn benches() {
    let mut criterion = Criterion::default().configure_from_args();
    run_time(&mut criterion);
    checkpoint_at_read(&mut criterion);
}

criterion_main!(benches);
