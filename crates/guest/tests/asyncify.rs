//! Command guests checkpointed through Asyncify: unwound in a read with no input or
//! at a requested host call, checkpointed, restored elsewhere and rewound, with the
//! same outputs, exit code and logged fuel positions as a run never interrupted.

mod common;

use bytes::Bytes;
use common::*;
use understudy_guest::{
    Checkpoint, CheckpointImage, Epoch, GuestConfig, GuestEngine, GuestError, GuestInstance,
    GuestModule, GuestPhase, InputLog, Output, Record, Recorder, RecoveryMode, ReplayThenRecord,
    Replayer, RunOutcome, Stream, UnwindReason,
};

type Primary = GuestInstance<Recorder<FixedInputs>>;
type Restored = GuestInstance<ReplayThenRecord<FixedInputs>>;

const SEED: u64 = 11;

fn new_primary(engine: &GuestEngine, module: &GuestModule, args: &[&str]) -> Primary {
    let inputs = Recorder::new(FixedInputs::new(SEED), Epoch(1));
    GuestInstance::new(engine, module, &birth(args), inputs).expect("instance")
}

fn lines(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| format!("{}\n", index * 37 % 101).into_bytes())
        .collect()
}

fn records<L: understudy_guest::HostInputs + 'static>(
    guest: &GuestInstance<Recorder<L>>,
) -> Vec<Record> {
    guest.with_inputs(|inputs| inputs.records().to_vec())
}

/// Encodes and decodes, as shipping to a backup does.
fn shipped(checkpoint: &Checkpoint) -> Checkpoint {
    let decoded = Checkpoint::decode(&checkpoint.encode()).expect("a fresh encoding decodes");
    assert_eq!(&decoded, checkpoint);
    decoded
}

/// Runs until the guest blocks in stdin (resuming it when out of fuel).
fn run_until_blocked<L: InputLog + 'static>(guest: &mut GuestInstance<L>) {
    loop {
        match guest.run().expect("the run does not fail") {
            RunOutcome::Blocked => return,
            RunOutcome::OutOfFuel => continue,
            other => panic!("expected the guest to block, got {other:?}"),
        }
    }
}

/// Feeds `chunks` one per block point, running until blocked after each.
fn feed<L: InputLog + QueueStdin + 'static>(guest: &mut GuestInstance<L>, chunks: &[Vec<u8>]) {
    for chunk in chunks {
        guest.with_inputs(|inputs| inputs.push(chunk));
        run_until_blocked(guest);
    }
}

/// The running-total guest fed `chunks` without any checkpoint: exit code,
/// outputs and records.
fn uninterrupted(
    engine: &GuestEngine,
    module: &GuestModule,
    chunks: &[Vec<u8>],
) -> (i32, Vec<Output>, Vec<Record>) {
    let mut guest = new_primary(engine, module, &["running-total"]);
    let (code, outputs) = drive(&mut guest, chunks, 0);
    (code, outputs, records(&guest))
}

/// Record fields that must match on every path.
fn fingerprints(records: &[Record]) -> Vec<(u64, Bytes, u64)> {
    records
        .iter()
        .map(|record| (record.lsn.0, record.payload.clone(), record.fuel_consumed))
        .collect()
}

#[test]
fn modules_are_instrumented_at_load_and_report_their_recovery_mode() {
    let engine = engine(GuestConfig::default());
    for bytes in [RUNNING_TOTAL, CPU_HEAVY, RUNNING_TOTAL_ZIG] {
        let module = load(&engine, bytes);
        assert_eq!(module.recovery_mode(), RecoveryMode::Checkpoint);
        assert_eq!(module.replay_reason(), None);
        assert!(module.is_asyncified());
        // The C stack pointer is not exported by the program: the rewrite adds it.
        assert!(module
            .mutable_globals()
            .iter()
            .any(|name| name.starts_with("__understudy_global_")));
        assert_ne!(module.digest(), load(&engine, REACTOR_TOTAL).digest());
    }
    let reactor = load(&engine, REACTOR_TOTAL);
    assert_eq!(reactor.recovery_mode(), RecoveryMode::Checkpoint);
    assert!(!reactor.is_asyncified());
    // Loading twice gives the same bytes: primary and backup agree on the digest.
    assert_eq!(
        load(&engine, RUNNING_TOTAL).digest(),
        load(&engine, RUNNING_TOTAL).digest()
    );
    let unchanged = engine.load_unchanged(RUNNING_TOTAL).expect("loads");
    assert_eq!(unchanged.recovery_mode(), RecoveryMode::Replay);
    assert_ne!(unchanged.digest(), load(&engine, RUNNING_TOTAL).digest());
}

#[test]
fn blocking_costs_no_fuel_positions_whatever_the_arrival_of_input() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let chunks = lines(12);
    // Every chunk arrives after the guest blocked, with extra runs that each
    // rewind and unwind again.
    let mut blocking = new_primary(&engine, &module, &["running-total"]);
    let (code, outputs) = drive(&mut blocking, &chunks, 3);
    let blocked_records = records(&blocking);
    // All input queued before the start: the guest never blocks.
    let mut eager = new_primary(&engine, &module, &["running-total"]);
    for chunk in &chunks {
        eager.with_inputs(|inputs| inputs.push(chunk));
    }
    let (eager_code, eager_outputs) = drive(&mut eager, &[], 0);
    assert_eq!((eager_code, &eager_outputs), (code, &outputs));
    assert_eq!(
        fingerprints(&records(&eager)),
        fingerprints(&blocked_records)
    );
    // A backup replaying the log from its start checks every fuel position.
    let mut backup = GuestInstance::new(
        &engine,
        &module,
        &birth(&["running-total"]),
        Replayer::new(blocked_records),
    )
    .expect("instance");
    assert_eq!(backup.run(), Ok(RunOutcome::Exited(code)));
    assert_eq!(backup.take_outputs(), outputs);
}

#[test]
fn a_command_blocked_in_stdin_is_checkpointed_and_continues_elsewhere() {
    // The same program in C and in Zig.
    blocked_in_stdin_checkpointed_and_continued(RUNNING_TOTAL);
    blocked_in_stdin_checkpointed_and_continued(RUNNING_TOTAL_ZIG);
}

fn blocked_in_stdin_checkpointed_and_continued(bytes: &[u8]) {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, bytes);
    let chunks = lines(10);
    let (code, expected_outputs, expected_records) = uninterrupted(&engine, &module, &chunks);

    let mut primary = new_primary(&engine, &module, &["running-total"]);
    run_until_blocked(&mut primary);
    feed(&mut primary, &chunks[..4]);
    assert!(primary.is_parked_in_stdin() && primary.is_unwound());
    let released = primary.take_outputs();
    let checkpoint = shipped(
        &primary
            .checkpoint(Bytes::from_static(b"keys"))
            .expect("an unwound command is quiescent"),
    );
    let GuestPhase::Unwound { reason, stack } = &checkpoint.host.phase else {
        panic!("phase {:?}", checkpoint.host.phase);
    };
    assert_eq!(*reason, UnwindReason::Stdin);
    assert!(
        stack.len() > 8,
        "frames were saved after the data structure"
    );
    // The original keeps going as if nothing happened.
    let (primary_code, after) = drive(&mut primary, &chunks[4..], 1);
    let mut all = released.clone();
    all.extend(after.clone());
    assert_eq!((primary_code, &all), (code, &expected_outputs));
    assert_eq!(
        fingerprints(&records(&primary)),
        fingerprints(&expected_records)
    );

    // A backup restores it, replays the three records after it, then goes live
    // on the same further input.
    let image = CheckpointImage::from_full(&checkpoint).expect("image");
    let logged_after: Vec<Record> = records(&primary)
        .into_iter()
        .filter(|record| record.lsn > image.lsn())
        .take(3)
        .collect();
    let inputs = ReplayThenRecord::after(image.lsn(), logged_after, FixedInputs::new(99), Epoch(2));
    let mut restored: Restored =
        GuestInstance::restore(&engine, &module, &birth(&["running-total"]), &image, inputs)
            .expect("restore");
    assert!(restored.is_parked_in_stdin());
    let (restored_code, regenerated) = drive(&mut restored, &chunks[7..], 0);
    assert_eq!((restored_code, &regenerated), (code, &after));
    let stdout = text(&regenerated, Stream::Stdout);
    assert!(
        !stdout.contains("token"),
        "the token line is not printed again"
    );
    assert!(text(&released, Stream::Stdout).starts_with("token "));
    // The live records continue the lsns at the primary's fuel positions.
    let live = restored.with_inputs(|inputs| inputs.recorder_mut().records().to_vec());
    let expected_live: Vec<Record> = expected_records
        .into_iter()
        .filter(|record| record.lsn > image.lsn())
        .skip(3)
        .collect();
    assert_eq!(fingerprints(&live), fingerprints(&expected_live));
}

#[test]
fn incremental_checkpoints_at_several_block_points_restore_exactly() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let chunks = lines(9);
    let (code, expected_outputs, _) = uninterrupted(&engine, &module, &chunks);

    let mut primary = new_primary(&engine, &module, &["running-total"]);
    run_until_blocked(&mut primary);
    let mut released = Vec::new();
    let mut image: Option<CheckpointImage> = None;
    for round in chunks[..6].chunks(2) {
        feed(&mut primary, round);
        released.extend(primary.take_outputs());
        let checkpoint = shipped(&primary.checkpoint(Bytes::new()).expect("checkpoint"));
        match &mut image {
            None => {
                assert!(checkpoint.full);
                image = Some(CheckpointImage::from_full(&checkpoint).expect("image"));
            }
            Some(image) => {
                assert!(!checkpoint.full);
                let total_pages = checkpoint.memory_bytes() / 4096;
                assert!(
                    (checkpoint.page_indexes.len() as u64) * 4 < total_pages,
                    "an incremental checkpoint carries few of the {total_pages} pages: {:?}",
                    checkpoint.page_indexes
                );
                image.apply(&checkpoint).expect("next in order");
            }
        }
    }
    let image = image.expect("three checkpoints");
    assert_eq!(image.number(), 3);
    let inputs = ReplayThenRecord::after(image.lsn(), Vec::new(), FixedInputs::new(5), Epoch(2));
    let mut restored: Restored =
        GuestInstance::restore(&engine, &module, &birth(&["running-total"]), &image, inputs)
            .expect("restore");
    let (restored_code, rest) = drive(&mut restored, &chunks[6..], 0);
    released.extend(rest);
    assert_eq!((restored_code, released), (code, expected_outputs));
}

#[test]
fn a_compute_bound_command_unwinds_on_request_and_is_checkpointed() {
    let sliced = engine(GuestConfig {
        fuel_slice: Some(200_000),
        ..GuestConfig::default()
    });
    let module = load(&sliced, CPU_HEAVY);
    let work = vec![b"400000\n".to_vec(), b"3\n".to_vec()];
    let mut reference = new_primary(&sliced, &module, &["cpu-heavy"]);
    let (code, expected_outputs) = drive(&mut reference, &work, 0);

    let mut primary = new_primary(&sliced, &module, &["cpu-heavy"]);
    run_until_blocked(&mut primary);
    primary.with_inputs(|inputs| inputs.push(&work[0]));
    // Mid-computation the guest is not quiescent...
    assert_eq!(primary.run(), Ok(RunOutcome::OutOfFuel));
    assert!(matches!(
        primary.checkpoint(Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));
    // ...until it reaches a host call after the request.
    primary.request_unwind().expect("an Asyncify command");
    let mut slices = 0;
    loop {
        match primary.run().expect("runs") {
            RunOutcome::OutOfFuel => slices += 1,
            RunOutcome::Unwound => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(slices > 0, "the request waited for the computation to end");
    assert!(primary.is_unwound() && !primary.is_parked_in_stdin());
    let released = primary.take_outputs();
    // The checksum line was not written yet: the unwind came before the write.
    assert!(!text(&released, Stream::Stdout).contains("checksum"));
    let checkpoint = shipped(&primary.checkpoint(Bytes::new()).expect("quiescent"));
    assert!(matches!(
        checkpoint.host.phase,
        GuestPhase::Unwound {
            reason: UnwindReason::Requested,
            ..
        }
    ));

    let (primary_code, primary_outputs) = drive(&mut primary, &work[1..], 0);
    let mut all = released.clone();
    all.extend(primary_outputs.clone());
    assert_eq!((primary_code, all), (code, expected_outputs));
    let image = CheckpointImage::from_full(&checkpoint).expect("image");
    let logged_after: Vec<Record> = records(&primary)
        .into_iter()
        .filter(|record| record.lsn > image.lsn())
        .collect();
    assert!(!logged_after.is_empty());
    let inputs = ReplayThenRecord::after(image.lsn(), logged_after, FixedInputs::new(1), Epoch(2));
    let mut restored: Restored =
        GuestInstance::restore(&sliced, &module, &birth(&["cpu-heavy"]), &image, inputs)
            .expect("restore");
    // The replayed records end with end of input: it exits without live input.
    let (restored_code, restored_outputs) = drive(&mut restored, &[], 0);
    assert_eq!((restored_code, restored_outputs), (code, primary_outputs));
    assert!(restored.with_inputs(|inputs| inputs.recorder_mut().records().is_empty()));
}

/// A command that changes its table at run time (Asyncify-able code, but its
/// checkpoint could not capture the table): it echoes one read of stdin.
const TABLE_CHANGING_COMMAND: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_read"
        (func $read (param i32 i32 i32 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write"
        (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (table 2 funcref)
    (func $noop)
    (elem declare func $noop)
    (func (export "_start")
        (table.set (i32.const 1) (ref.func $noop))
        ;; iovec at 0: buffer 64, length 32; nread at 16.
        (i32.store (i32.const 0) (i32.const 64))
        (i32.store (i32.const 4) (i32.const 32))
        (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))
        (i32.store (i32.const 4) (i32.load (i32.const 16)))
        (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 20)))))"#;

#[test]
fn a_module_asyncify_refuses_runs_unchanged_and_recovers_by_replay() {
    let engine = engine(GuestConfig::default());
    let bytes = wat::parse_str(TABLE_CHANGING_COMMAND).expect("parses");
    let module = load(&engine, &bytes);
    assert_eq!(module.recovery_mode(), RecoveryMode::Replay);
    let reason = module.replay_reason().expect("a reason");
    assert!(reason.contains("table.set"), "{reason}");
    assert!(!module.is_asyncified());

    let mut guest = new_primary(&engine, &module, &["echo"]);
    assert!(matches!(
        guest.checkpoint(Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));
    assert!(matches!(
        guest.request_unwind(),
        Err(GuestError::WrongState(_))
    ));
    assert_eq!(guest.run(), Ok(RunOutcome::Blocked));
    assert!(guest.is_parked_in_stdin() && !guest.is_unwound());
    assert!(matches!(
        guest.checkpoint(Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));
    guest.with_inputs(|inputs| inputs.push(b"echoed"));
    assert_eq!(guest.run(), Ok(RunOutcome::Exited(0)));
    assert_eq!(text(&guest.take_outputs(), Stream::Stdout), "echoed");
    // It recovers by replay from its start instead.
    let mut backup = GuestInstance::new(
        &engine,
        &module,
        &birth(&["echo"]),
        Replayer::new(records(&guest)),
    )
    .expect("instance");
    assert_eq!(backup.run(), Ok(RunOutcome::Exited(0)));
}

#[test]
fn a_reactor_refuses_an_unwind_request() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, REACTOR_TOTAL);
    let mut reactor = new_primary(&engine, &module, &["reactor"]);
    assert!(matches!(
        reactor.request_unwind(),
        Err(GuestError::WrongState(_))
    ));
}

/// Replaces the version and fixes the crc, as an older writer would have made it.
fn with_version(encoding: &[u8], version: u16) -> Vec<u8> {
    patched_checkpoint(encoding, 4, &version.to_le_bytes())
}

#[test]
fn format_version_1_still_decodes_and_cannot_hold_an_unwound_guest() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let mut guest = new_primary(&engine, &module, &["running-total"]);
    let not_started = guest.checkpoint(Bytes::new()).expect("checkpoint");
    let encoding = not_started.encode();
    assert_eq!(&encoding[4..6], &2u16.to_le_bytes());
    let version_1 = with_version(&encoding, 1);
    assert_eq!(Checkpoint::decode(&version_1), Ok(not_started));

    run_until_blocked(&mut guest);
    let unwound = guest.checkpoint(Bytes::new()).expect("checkpoint").encode();
    assert!(Checkpoint::decode(&unwound).is_ok());
    assert!(matches!(
        Checkpoint::decode(&with_version(&unwound, 1)),
        Err(GuestError::CheckpointInvalid(_))
    ));
    assert!(matches!(
        Checkpoint::decode(&with_version(&unwound, 3)),
        Err(GuestError::CheckpointInvalid(_))
    ));
}
