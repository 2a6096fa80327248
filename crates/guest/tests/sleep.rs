//! `poll_oneoff` sleeps: the primary really waits, the readings that end a
//! sleep are logged, and a replay fires the same subscriptions without waiting.

mod common;

use common::*;
use std::time::{Duration, Instant};
use understudy_guest::{
    Epoch, GuestConfig, GuestEngine, GuestError, GuestInstance, GuestModule, Record, RecordKind,
    Recorder, Replayer, RunOutcome, SystemInputs,
};

/// Subscription `index` at `index * 48`: a clock subscription on clock 1
/// (monotonic) with this userdata, timeout and flags.
fn subscription(index: u32, userdata: u64, timeout_nanos: u64, flags: u32) -> String {
    let at = index * 48;
    format!(
        "(i64.store (i32.const {at}) (i64.const {userdata})) \
         (i32.store (i32.const {}) (i32.const 1)) \
         (i64.store (i32.const {}) (i64.const {timeout_nanos})) \
         (i32.store16 (i32.const {}) (i32.const {flags}))",
        at + 16,
        at + 24,
        at + 40
    )
}

/// A command that polls `count` subscriptions (set up by `setup`), events at
/// 512, count at 1024, and exits with `nevents * 1000 + first event's userdata`.
fn poller(setup: &str, count: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff"
                (func $poll (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                {setup}
                (if (call $poll (i32.const 0) (i32.const 512) (i32.const {count}) (i32.const 1024))
                    (then (call $exit (i32.const 9))))
                (call $exit (i32.add
                    (i32.mul (i32.load (i32.const 1024)) (i32.const 1000))
                    (i32.wrap_i64 (i64.load (i32.const 512)))))))"#
    ))
    .expect("the test module parses")
}

fn primary(engine: &GuestEngine, module: &GuestModule) -> GuestInstance<Recorder<SystemInputs>> {
    let inputs = Recorder::new(SystemInputs::new(), Epoch(1));
    GuestInstance::new(engine, module, &birth(&["sleep"]), inputs).expect("instance")
}

/// Runs `guest` to its end, waiting out each sleep as a shell would; returns
/// the outcome and how many times it slept.
fn run_to_end(guest: &mut GuestInstance<Recorder<SystemInputs>>) -> (RunOutcome, usize) {
    let mut sleeps = 0;
    loop {
        match guest.run().expect("runs") {
            RunOutcome::Sleeping { nanos } => {
                assert!(nanos > 0, "a sleep with nothing left to wait");
                sleeps += 1;
                // The contract under test: run again after `nanos`.
                std::thread::sleep(Duration::from_nanos(nanos));
            }
            RunOutcome::OutOfFuel => {}
            other => return (other, sleeps),
        }
    }
}

fn clock_readings(records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .map(|record| {
            assert_eq!(record.kind, RecordKind::Clock { clock_id: 1 });
            u64::from_le_bytes(record.payload.as_ref().try_into().expect("8 bytes"))
        })
        .collect()
}

fn replay(engine: &GuestEngine, module: &GuestModule, records: Vec<Record>) -> RunOutcome {
    let mut guest = GuestInstance::new(engine, module, &birth(&["sleep"]), Replayer::new(records))
        .expect("instance");
    guest.run().expect("replays")
}

fn sleeps_then_replays(engine: &GuestEngine, module: &GuestModule) {
    let sleep = Duration::from_millis(30);
    let started = Instant::now();
    let mut guest = primary(engine, module);
    let (outcome, sleeps) = run_to_end(&mut guest);
    assert_eq!(outcome, RunOutcome::Exited(1005));
    assert!(sleeps >= 1, "the guest slept");
    assert!(started.elapsed() >= sleep, "the primary waited");
    let records = guest.with_inputs(|inputs| inputs.take_records());
    let readings = clock_readings(&records);
    assert_eq!(readings.len(), 2, "the start and the end are logged");
    assert!(readings[1] - readings[0] >= sleep.as_nanos() as u64);
    // A replay fires the same subscription at once, from the log.
    assert_eq!(replay(engine, module, records), RunOutcome::Exited(1005));
}

#[test]
fn a_sleep_waits_on_the_primary_and_replays_without_waiting() {
    let engine = engine(GuestConfig::default());
    let bytes = poller(&subscription(0, 5, 30_000_000, 0), 1);
    // With Asyncify (unwound while it sleeps) and without (parked on its fiber).
    sleeps_then_replays(&engine, &load(&engine, &bytes));
    let unchanged = engine.load_unchanged(&bytes).expect("loads");
    sleeps_then_replays(&engine, &unchanged);
}

#[test]
fn only_the_subscriptions_whose_deadline_passed_fire() {
    let engine = engine(GuestConfig::default());
    let setup = format!(
        "{} {}",
        subscription(0, 7, 3_600_000_000_000, 0),
        subscription(1, 3, 10_000_000, 0)
    );
    let module = load(&engine, &poller(&setup, 2));
    let mut guest = primary(&engine, &module);
    let (outcome, _) = run_to_end(&mut guest);
    assert_eq!(
        outcome,
        RunOutcome::Exited(1003),
        "one event: the short one"
    );
    let records = guest.with_inputs(|inputs| inputs.take_records());
    assert_eq!(
        clock_readings(&records).len(),
        2,
        "one clock, read once each time"
    );
    assert_eq!(replay(&engine, &module, records), RunOutcome::Exited(1003));
}

#[test]
fn an_absolute_deadline_already_passed_fires_at_once() {
    let engine = engine(GuestConfig::default());
    // Deadline 1 ns on the monotonic clock: long past.
    let module = load(&engine, &poller(&subscription(0, 4, 1, 1), 1));
    let mut guest = primary(&engine, &module);
    assert_eq!(guest.run().expect("runs"), RunOutcome::Exited(1004));
    let records = guest.with_inputs(|inputs| inputs.take_records());
    assert_eq!(clock_readings(&records).len(), 1, "no start reading needed");
}

#[test]
fn a_sleeping_guest_is_not_checkpointed_until_the_sleep_ends() {
    let engine = engine(GuestConfig::default());
    let module = load(
        &engine,
        &poller(&subscription(0, 5, 3_600_000_000_000, 0), 1),
    );
    let mut guest = primary(&engine, &module);
    assert!(matches!(
        guest.run().expect("runs"),
        RunOutcome::Sleeping { .. }
    ));
    assert!(matches!(
        guest.checkpoint(bytes::Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));
    // Asked again, it still sleeps: the deadline did not move.
    match guest.run().expect("runs") {
        RunOutcome::Sleeping { nanos } => assert!(nanos > 3_000_000_000_000),
        other => panic!("expected a sleep, got {other:?}"),
    }
    let records = guest.with_inputs(|inputs| inputs.take_records());
    assert_eq!(
        clock_readings(&records).len(),
        1,
        "only the start is logged"
    );
}

/// guests/sleeper-c.wasm: C's `nanosleep` of 200 ms per line, then the line.
const SLEEPER_C: &[u8] = include_bytes!("../../../guests/sleeper-c.wasm");

#[test]
fn a_c_program_sleeps_with_nanosleep_and_replays_the_same_lines() {
    let engine = engine(GuestConfig::default());
    // With Asyncify (unwound while it sleeps) and without (parked on its fiber).
    let instrumented = load(&engine, SLEEPER_C);
    let unchanged = engine.load_unchanged(SLEEPER_C).expect("loads");
    for module in [instrumented, unchanged] {
        let started = Instant::now();
        let mut guest = primary(&engine, &module);
        guest.with_inputs(|inputs| {
            inputs.push(b"first\nsecond\n");
            inputs.close();
        });
        let (outcome, sleeps) = run_to_end(&mut guest);
        assert_eq!(outcome, RunOutcome::Exited(0));
        assert!(sleeps >= 2, "one sleep per line at least, got {sleeps}");
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "two naps of 200 ms took {:?}",
            started.elapsed()
        );
        let outputs = guest.take_outputs();
        let echoed: Vec<u8> = outputs.iter().flat_map(|o| o.bytes.to_vec()).collect();
        assert_eq!(echoed, b"first\nsecond\n");

        // The replay takes the logged readings: same lines, no waiting.
        let records = guest.with_inputs(|inputs| inputs.take_records());
        let mut backup =
            GuestInstance::new(&engine, &module, &birth(&["sleep"]), Replayer::new(records))
                .expect("instance");
        // One run to the end: a replay never returns Sleeping.
        assert_eq!(backup.run().expect("replays"), RunOutcome::Exited(0));
        assert_eq!(backup.take_outputs(), outputs);
    }
}
