//! Runaway guests: a guest that runs `runaway_ticks` epoch ticks without
//! progress is killed, the kill is logged, and a replay of the log reaches the
//! same kill (same outputs, same reason) without consulting any clock.

mod common;

use bytes::Bytes;
use common::*;
use std::sync::mpsc;
use std::time::Duration;
use understudy_guest::{
    Checkpoint, CheckpointImage, Epoch, GuestConfig, GuestEngine, GuestError, GuestInstance,
    GuestModule, InputLog, Output, Record, RecordKind, Recorder, ReplayThenRecord, Replayer,
    RunOutcome,
};

/// A command that writes "start\n", optionally reads the monotonic clock
/// first, then spins for ever counting in a global no export names.
fn spinner(read_clock_first: bool) -> Vec<u8> {
    let clock = if read_clock_first {
        "(drop (call $clock (i32.const 1) (i64.const 1) (i32.const 0)))"
    } else {
        ""
    };
    wat::parse_str(format!(
        r#"(module
            {CLOCK_AND_WRITE_IMPORTS}
            (memory (export "memory") 1)
            (data (i32.const 64) "start\n")
            (global $spins (mut i64) (i64.const 0))
            (func $spin
                (loop $forever
                    (global.set $spins (i64.add (global.get $spins) (i64.const 1)))
                    (br $forever)))
            (func (export "_start")
                {clock}
                (i32.store (i32.const 16) (i32.const 64))
                (i32.store (i32.const 20) (i32.const 6))
                (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
                (call $spin)))"#
    ))
    .expect("the test module parses")
}

/// A reactor whose handler spins for ever on any input.
const SPINNING_REACTOR: &str = r#"(module
    (memory (export "memory") 1)
    (global $spins (mut i64) (i64.const 0))
    (func (export "input_buffer") (param i32) (result i32) (i32.const 256))
    (func (export "handle_input") (param i32)
        (loop $forever
            (global.set $spins (i64.add (global.get $spins) (i64.const 1)))
            (br $forever))))"#;

/// Killed after 3 ticks without progress; the test advances the epoch itself.
fn runaway_config(runaway_ticks: u64) -> GuestConfig {
    GuestConfig {
        fuel_slice: Some(20_000),
        runaway_ticks: Some(runaway_ticks),
        ..GuestConfig::default()
    }
}

fn primary(engine: &GuestEngine, module: &GuestModule) -> GuestInstance<Recorder<FixedInputs>> {
    let inputs = Recorder::new(FixedInputs::new(7), Epoch(1));
    GuestInstance::new(engine, module, &birth(&["spin"]), inputs).expect("instance")
}

/// Runs `guest` slice by slice, advancing the epoch after each, until it
/// stops for a reason other than its fuel slice (at most `slices` slices).
fn run_ticking<L: InputLog + 'static>(
    engine: &GuestEngine,
    guest: &mut GuestInstance<L>,
    slices: usize,
) -> Result<RunOutcome, GuestError> {
    for _ in 0..slices {
        match guest.run()? {
            RunOutcome::OutOfFuel => engine.increment_epoch(),
            other => return Ok(other),
        }
    }
    Ok(RunOutcome::OutOfFuel)
}

fn logged(guest: &GuestInstance<Recorder<FixedInputs>>) -> Vec<Record> {
    guest.with_inputs(|inputs| inputs.records().to_vec())
}

fn start_line(outputs: &[Output]) -> Vec<u8> {
    outputs
        .iter()
        .flat_map(|output| output.bytes.to_vec())
        .collect()
}

#[test]
fn a_runaway_command_is_killed_and_a_replay_reaches_the_same_kill() {
    let engine = engine(runaway_config(3));
    for (name, module) in modules(&engine, &spinner(true)) {
        let mut guest = primary(&engine, &module);
        let Ok(RunOutcome::Killed(reason)) = run_ticking(&engine, &mut guest, 100) else {
            panic!("{name}: the spinning guest was not killed");
        };
        assert!(reason.contains("runaway"), "{name}: {reason}");
        assert!(guest.is_finished());
        let records = logged(&guest);
        let kinds: Vec<RecordKind> = records.iter().map(|record| record.kind).collect();
        assert_eq!(
            kinds,
            [RecordKind::Clock { clock_id: 1 }, RecordKind::Kill],
            "{name}"
        );
        assert_eq!(records[1].payload, Bytes::from(reason.clone()), "{name}");
        assert!(records[1].fuel_consumed >= records[0].fuel_consumed);
        let outputs = guest.take_outputs();
        assert_eq!(start_line(&outputs), b"start\n", "{name}");

        // The replay runs with a clock that would kill at once: only the log decides.
        let eager = self::engine(runaway_config(1));
        let [instrumented, unchanged] = modules(&eager, &spinner(true));
        let (_, module) = if name == "instrumented" {
            instrumented
        } else {
            unchanged
        };
        let replay = Replayer::new(records);
        let mut backup =
            GuestInstance::new(&eager, &module, &birth(&["spin"]), replay).expect("instance");
        assert_eq!(
            run_ticking(&eager, &mut backup, 100),
            Ok(RunOutcome::Killed(reason)),
            "{name}"
        );
        assert_eq!(backup.take_outputs(), outputs, "{name}");
        assert_eq!(backup.with_inputs(|inputs| inputs.remaining()), 0);
    }
}

/// The module as instrumented (Asyncify: it unwinds) and unchanged (replay only).
fn modules(engine: &GuestEngine, bytes: &[u8]) -> [(&'static str, GuestModule); 2] {
    [
        ("instrumented", engine.load(bytes).expect("loads")),
        ("unchanged", engine.load_unchanged(bytes).expect("loads")),
    ]
}

#[test]
fn a_kill_right_after_a_checkpoint_is_reproduced_after_the_rewind() {
    let engine = engine(runaway_config(3));
    let bytes = spinner(false);
    let module = engine.load(&bytes).expect("loads");
    let mut guest = primary(&engine, &module);
    // Unwound at fd_write, before it has any effect: nothing logged yet.
    guest.request_unwind().expect("instrumented");
    assert_eq!(guest.run(), Ok(RunOutcome::Unwound));
    let checkpoint = guest.checkpoint(Bytes::new()).expect("checkpoint");
    let Ok(RunOutcome::Killed(reason)) = run_ticking(&engine, &mut guest, 100) else {
        panic!("the spinning guest was not killed");
    };
    let records = logged(&guest);
    assert_eq!(records.len(), 1, "only the kill: {records:?}");
    let outputs = guest.take_outputs();
    assert_eq!(start_line(&outputs), b"start\n");

    // From the checkpoint: the kill is the next record as soon as it rewinds.
    let shipped = Checkpoint::decode(&checkpoint.encode()).expect("decodes");
    let image = CheckpointImage::from_full(&shipped).expect("image");
    let replay =
        ReplayThenRecord::after(image.lsn(), records.clone(), FixedInputs::new(0), Epoch(2));
    let mut restored = GuestInstance::restore(&engine, &module, &birth(&["spin"]), &image, replay)
        .expect("restore");
    assert_eq!(
        run_ticking(&engine, &mut restored, 100),
        Ok(RunOutcome::Killed(reason.clone()))
    );
    assert_eq!(restored.take_outputs(), outputs);

    // From the start: the kill is the first record.
    let mut replayed =
        GuestInstance::new(&engine, &module, &birth(&["spin"]), Replayer::new(records))
            .expect("instance");
    assert_eq!(
        run_ticking(&engine, &mut replayed, 100),
        Ok(RunOutcome::Killed(reason))
    );
    assert_eq!(replayed.take_outputs(), outputs);
}

#[test]
fn a_runaway_reactor_handler_is_killed_and_replayed() {
    let engine = engine(runaway_config(2));
    let module = engine
        .load(&wat::parse_str(SPINNING_REACTOR).expect("parses"))
        .expect("loads");
    let mut guest = primary(&engine, &module);
    let mut outcome = guest.call_handler(b"spin");
    for _ in 0..100 {
        if outcome != Ok(RunOutcome::OutOfFuel) {
            break;
        }
        engine.increment_epoch();
        outcome = guest.run();
    }
    let Ok(RunOutcome::Killed(reason)) = outcome else {
        panic!("the handler was not killed: {outcome:?}");
    };
    let records = logged(&guest);
    let kinds: Vec<RecordKind> = records.iter().map(|record| record.kind).collect();
    assert_eq!(kinds, [RecordKind::HandlerCall, RecordKind::Kill]);

    let mut backup =
        GuestInstance::new(&engine, &module, &birth(&["spin"]), Replayer::new(records))
            .expect("instance");
    let mut outcome = backup.call_handler(b"spin");
    for _ in 0..100 {
        if outcome != Ok(RunOutcome::OutOfFuel) {
            break;
        }
        outcome = backup.run();
    }
    assert_eq!(outcome, Ok(RunOutcome::Killed(reason)));
}

#[test]
fn a_guest_that_makes_progress_or_has_no_limit_is_never_killed() {
    // Reads the clock on every turn: progress, however long it runs.
    let busy = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "clock_time_get"
                (func $clock (param i32 i64 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (loop $forever
                    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 0)))
                    (br $forever))))"#,
    )
    .expect("parses");
    let engine = engine(runaway_config(1));
    let mut guest = primary(&engine, &load(&engine, &busy));
    assert_eq!(
        run_ticking(&engine, &mut guest, 20),
        Ok(RunOutcome::OutOfFuel)
    );

    let unlimited = self::engine(GuestConfig {
        fuel_slice: Some(20_000),
        ..GuestConfig::default()
    });
    let module = load(&unlimited, &spinner(true));
    let mut guest = primary(&unlimited, &module);
    assert_eq!(
        run_ticking(&unlimited, &mut guest, 20),
        Ok(RunOutcome::OutOfFuel)
    );
}

#[test]
fn a_logged_kill_behind_the_replay_is_a_divergence() {
    let engine = engine(runaway_config(2));
    let module = load(&engine, &spinner(true));
    let mut guest = primary(&engine, &module);
    assert!(matches!(
        run_ticking(&engine, &mut guest, 100),
        Ok(RunOutcome::Killed(_))
    ));
    let mut records = logged(&guest);
    // A kill logged before the position of the clock reading that precedes it.
    records[1].fuel_consumed = records[0].fuel_consumed - 1;
    let mut backup =
        GuestInstance::new(&engine, &module, &birth(&["spin"]), Replayer::new(records))
            .expect("instance");
    assert!(matches!(
        run_ticking(&engine, &mut backup, 100),
        Err(GuestError::Divergence { .. })
    ));
}

/// Without a fuel slice `run` does not return until the guest stops: the
/// engine's own epoch thread is what ends a runaway then.
#[test]
fn the_epoch_thread_kills_a_guest_running_without_fuel_slices() {
    let engine = engine(GuestConfig {
        runaway_ticks: Some(2),
        epoch_tick: Some(Duration::from_millis(10)),
        ..GuestConfig::default()
    });
    let module = load(&engine, &spinner(true));
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut guest = primary(&engine, &module);
        let _ = sender.send(guest.run());
    });
    // Bounded: a guest that is never killed fails the test instead of hanging it
    // (its thread spins on until the test binary exits).
    let outcome = receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("the runaway guest was killed within 30 s");
    assert!(matches!(outcome, Ok(RunOutcome::Killed(_))), "{outcome:?}");
}
