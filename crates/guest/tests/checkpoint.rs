//! Checkpoints: a restored guest continues exactly as an uninterrupted one;
//! incremental checkpoints carry only changed pages; bad encodings are refused.

mod common;

use bytes::Bytes;
use common::*;
use understudy_guest::{
    Checkpoint, CheckpointImage, Epoch, GlobalBits, GuestConfig, GuestEngine, GuestError,
    GuestInstance, GuestModule, GuestPhase, InputLog, Lsn, Output, Record, Recorder,
    ReplayThenRecord, RunOutcome,
};

type Primary = GuestInstance<Recorder<FixedInputs>>;

fn new_primary(engine: &GuestEngine, module: &GuestModule, seed: u64) -> Primary {
    let inputs = Recorder::new(FixedInputs::new(seed), Epoch(1));
    GuestInstance::new(engine, module, &birth(&["guest"]), inputs).expect("instance")
}

/// Calls the handler once per record; every call must return.
fn call_all<L: InputLog + 'static>(guest: &mut GuestInstance<L>, records: &[Vec<u8>]) {
    for record in records {
        assert_eq!(guest.call_handler(record), Ok(RunOutcome::Returned));
    }
}

fn reactor_inputs(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| format!("{}\n{}\n", index * 7, 1000 - index as i64 * 13).into_bytes())
        .collect()
}

/// Encodes and decodes, as shipping to a backup does.
fn shipped(checkpoint: &Checkpoint) -> Checkpoint {
    let decoded = Checkpoint::decode(&checkpoint.encode()).expect("a fresh encoding decodes");
    assert_eq!(&decoded, checkpoint);
    decoded
}

fn records<L>(guest: &GuestInstance<Recorder<L>>) -> Vec<Record>
where
    L: understudy_guest::HostInputs + 'static,
{
    guest.with_inputs(|inputs| inputs.records().to_vec())
}

#[test]
fn restored_reactor_continues_like_an_uninterrupted_one() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, REACTOR_TOTAL);
    let inputs = reactor_inputs(30);

    let mut uninterrupted = new_primary(&engine, &module, 7);
    call_all(&mut uninterrupted, &inputs);
    let expected_outputs = uninterrupted.take_outputs();
    let expected_records = records(&uninterrupted);

    let mut primary = new_primary(&engine, &module, 7);
    call_all(&mut primary, &inputs[..10]);
    let mut released = primary.take_outputs();
    let first = primary
        .checkpoint(Bytes::from_static(b"keys-1"))
        .expect("first");
    call_all(&mut primary, &inputs[10..20]);
    // The outputs of these calls stay in the instance: the checkpoint keeps them.
    let second = primary
        .checkpoint(Bytes::from_static(b"keys-2"))
        .expect("second");
    assert!(first.full && !second.full);
    assert_eq!(second.number, 2);
    assert_eq!(second.lsn, records(&primary).last().expect("logged").lsn);
    assert!(!second.host.outputs.is_empty());

    let mut image = CheckpointImage::from_full(&shipped(&first)).expect("image");
    image.apply(&shipped(&second)).expect("in order");
    assert_eq!(image.extra().as_ref(), b"keys-2");
    let continuing = Recorder::continuing(FixedInputs::new(99), Epoch(2), image.lsn());
    let mut restored =
        GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, continuing)
            .expect("restore");
    call_all(&mut restored, &inputs[20..]);
    released.extend(restored.take_outputs());
    assert_eq!(released, expected_outputs);

    // Inputs logged after the restore continue the lsns, at the same fuel.
    let after: Vec<(Lsn, Bytes, u64)> = records(&restored)
        .into_iter()
        .map(|record| (record.lsn, record.payload, record.fuel_consumed))
        .collect();
    let expected_after: Vec<(Lsn, Bytes, u64)> = expected_records
        .into_iter()
        .filter(|record| record.lsn > image.lsn())
        .map(|record| (record.lsn, record.payload, record.fuel_consumed))
        .collect();
    assert_eq!(after, expected_after);
}

#[test]
fn backup_restores_then_replays_the_records_after_the_checkpoint() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, REACTOR_TOTAL);
    let inputs = reactor_inputs(12);
    let mut primary = new_primary(&engine, &module, 3);
    call_all(&mut primary, &inputs[..5]);
    let checkpoint = primary.checkpoint(Bytes::new()).expect("checkpoint");
    let before: Vec<Output> = checkpoint.host.outputs.clone();
    call_all(&mut primary, &inputs[5..]);
    let primary_outputs = primary.take_outputs();
    let logged_after: Vec<Record> = records(&primary)
        .into_iter()
        .filter(|record| record.lsn > checkpoint.lsn)
        .collect();

    let image = CheckpointImage::from_full(&shipped(&checkpoint)).expect("image");
    let replay = ReplayThenRecord::after(image.lsn(), logged_after, FixedInputs::new(0), Epoch(2));
    let mut backup = GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, replay)
        .expect("restore");
    call_all(&mut backup, &inputs[5..]);
    assert!(backup.with_inputs(|inputs| inputs.is_live()));
    // The backup regenerates every output with the same oseq and bytes, the
    // unreleased ones of the checkpoint first.
    assert_eq!(backup.take_outputs(), primary_outputs);
    assert!(before.iter().all(|output| primary_outputs.contains(output)));
}

/// A reactor whose input is a list of u32 4 KiB page indexes: it increments a
/// byte in each page (growing memory as needed) and every global.
const PAGE_TOUCHER: &str = r#"(module
    (memory (export "memory") 4)
    (global $calls (export "calls") (mut i32) (i32.const 0))
    (global $wide (export "wide") (mut i64) (i64.const -1))
    (global $single (export "single") (mut f32) (f32.const 1.5))
    (global $double (export "double") (mut f64) (f64.const nan:0x4000000000001))
    (global $vector (export "vector") (mut v128) (v128.const i64x2 1 2))
    (global $fixed (export "fixed") i32 (i32.const 5))
    (func (export "input_buffer") (param i32) (result i32) (i32.const 256))
    (func (export "handle_input") (param $length i32)
        (local $cursor i32) (local $page i32) (local $address i32)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (global.set $wide (i64.add (global.get $wide) (i64.const 1)))
        (global.set $single (f32.add (global.get $single) (f32.const 1)))
        (global.set $vector (i64x2.add (global.get $vector) (v128.const i64x2 1 1)))
        (block $done (loop $next
            (br_if $done (i32.ge_u (local.get $cursor) (local.get $length)))
            (local.set $page (i32.load (i32.add (i32.const 256) (local.get $cursor))))
            (if (i32.ge_u (local.get $page) (i32.mul (memory.size) (i32.const 16)))
                (then (drop (memory.grow (i32.sub
                    (i32.add (i32.div_u (local.get $page) (i32.const 16)) (i32.const 1))
                    (memory.size))))))
            (local.set $address (i32.add (i32.mul (local.get $page) (i32.const 4096))
                (i32.const 16)))
            (i32.store8 (local.get $address)
                (i32.add (i32.load8_u (local.get $address)) (i32.const 1)))
            (local.set $cursor (i32.add (local.get $cursor) (i32.const 4)))
            (br $next)))))"#;

fn pages(indexes: &[u32]) -> Vec<u8> {
    indexes
        .iter()
        .flat_map(|index| index.to_le_bytes())
        .collect()
}

#[test]
fn incremental_checkpoints_carry_only_changed_pages() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, &wat::parse_str(PAGE_TOUCHER).expect("parses"));
    let mut guest = new_primary(&engine, &module, 1);
    let mut taken = Vec::new();
    let mut checkpoint = |guest: &mut Primary, touch: Option<&[u32]>| {
        if let Some(touch) = touch {
            assert_eq!(guest.call_handler(&pages(touch)), Ok(RunOutcome::Returned));
        }
        let checkpoint = shipped(&guest.checkpoint(Bytes::new()).expect("checkpoint"));
        taken.push(checkpoint.clone());
        checkpoint
    };
    let start = checkpoint(&mut guest, None);
    assert_eq!(start.host.phase, GuestPhase::NotStarted);
    assert_eq!((start.memory_pages, start.page_indexes.len()), (4, 0));
    // The input buffer lives in page 0.
    assert_eq!(
        checkpoint(&mut guest, Some(&[5, 9])).page_indexes,
        [0, 5, 9]
    );
    assert_eq!(checkpoint(&mut guest, Some(&[9])).page_indexes, [0, 9]);
    // Same input bytes again: page 0 did not change this time.
    assert_eq!(checkpoint(&mut guest, Some(&[9])).page_indexes, [9]);
    assert!(checkpoint(&mut guest, None).page_indexes.is_empty());
    let grown = checkpoint(&mut guest, Some(&[100]));
    assert_eq!(
        (grown.memory_pages, grown.page_indexes.clone()),
        (7, vec![0, 100])
    );
    assert_eq!(grown.host.phase, GuestPhase::BetweenCalls);
    let global = |name: &str| {
        let global = grown.globals.iter().find(|global| global.name == name);
        global.expect("exported mutable global").bits
    };
    assert_eq!(
        grown.globals.len(),
        5,
        "the immutable global is not captured"
    );
    assert_eq!(global("calls"), GlobalBits::I32(4));
    assert_eq!(global("wide"), GlobalBits::I64(3));
    assert_eq!(global("single"), GlobalBits::F32(5.5f32.to_bits()));
    assert_eq!(global("double"), GlobalBits::F64(0x7ff4_0000_0000_0001));
    assert_eq!(global("vector"), GlobalBits::V128(6 << 64 | 5));

    let mut image = CheckpointImage::from_full(&taken[0]).expect("image");
    for next in &taken[1..] {
        image.apply(next).expect("in order");
    }
    let continuing = Recorder::continuing(FixedInputs::new(1), Epoch(2), image.lsn());
    let mut restored =
        GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, continuing)
            .expect("restore");
    // The restored hashes equal the image's: nothing changed since.
    let next = restored.checkpoint(Bytes::new()).expect("checkpoint");
    assert_eq!(
        (next.number, next.full, next.page_indexes.len()),
        (7, false, 0)
    );
    assert_eq!(next.globals, grown.globals);
    // Both continue identically: same pages change, same contents.
    let original = guest_touch_then_full(&mut guest, &[100, 3]);
    let copy = guest_touch_then_full(&mut restored, &[100, 3]);
    assert_eq!(original.page_indexes, copy.page_indexes);
    assert_eq!(original.page_bytes, copy.page_bytes);
    assert_eq!(original.globals, copy.globals);
    assert_eq!(original.host.fuel_consumed, copy.host.fuel_consumed);
    // A full checkpoint applied to an image replaces its memory.
    image.apply(&original).expect("next of the lineage");
    let from_copy = CheckpointImage::from_full(&copy).expect("image");
    assert_eq!(image.memory(), from_copy.memory());
    assert_eq!(image.memory().len(), 7 * 65_536);
}

fn guest_touch_then_full(guest: &mut Primary, touch: &[u32]) -> Checkpoint {
    assert_eq!(guest.call_handler(&pages(touch)), Ok(RunOutcome::Returned));
    guest
        .checkpoint_with(Bytes::new(), Vec::new(), true)
        .expect("full checkpoint")
}

#[test]
fn image_refuses_checkpoints_out_of_order() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, &wat::parse_str(PAGE_TOUCHER).expect("parses"));
    let mut guest = new_primary(&engine, &module, 1);
    let mut taken = Vec::new();
    for touch in [[1u32], [2], [3]] {
        assert_eq!(guest.call_handler(&pages(&touch)), Ok(RunOutcome::Returned));
        taken.push(guest.checkpoint(Bytes::new()).expect("checkpoint"));
    }
    assert!(matches!(
        CheckpointImage::from_full(&taken[1]),
        Err(GuestError::CheckpointOutOfOrder(_))
    ));
    let mut image = CheckpointImage::from_full(&taken[0]).expect("image");
    let untouched = image.clone();
    for wrong in [&taken[0], &taken[2]] {
        assert!(matches!(
            image.apply(wrong),
            Err(GuestError::CheckpointOutOfOrder(_))
        ));
        assert_eq!(image, untouched, "a refused checkpoint changes nothing");
    }
    let mut earlier_lsn = taken[1].clone();
    earlier_lsn.lsn = Lsn(0);
    assert!(matches!(
        image.apply(&earlier_lsn),
        Err(GuestError::CheckpointOutOfOrder(_))
    ));
    image.apply(&taken[1]).expect("next in order");
    image.apply(&taken[2]).expect("next in order");
    assert_eq!(image.number(), 3);
}

#[test]
fn restore_needs_an_input_log_continuing_after_the_image() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, REACTOR_TOTAL);
    let mut primary = new_primary(&engine, &module, 1);
    call_all(&mut primary, &reactor_inputs(2));
    let image = CheckpointImage::from_full(&primary.checkpoint(Bytes::new()).expect("checkpoint"))
        .expect("image");
    let from_the_start = Recorder::new(FixedInputs::new(1), Epoch(2));
    let restored =
        GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, from_the_start);
    assert!(matches!(restored, Err(GuestError::RestoreMismatch(_))));
    // An image of another module (other globals, other memory) is refused too.
    let other = load(&engine, &wat::parse_str(PAGE_TOUCHER).expect("parses"));
    let continuing = Recorder::continuing(FixedInputs::new(1), Epoch(2), image.lsn());
    let restored = GuestInstance::restore(&engine, &other, &birth(&["guest"]), &image, continuing);
    assert!(matches!(restored, Err(GuestError::RestoreMismatch(_))));
}

#[test]
fn only_quiescent_guests_are_checkpointed() {
    let engine = engine(GuestConfig::default());
    // Without Asyncify a command parks on its fiber, inside the host call.
    let command = engine.load_unchanged(RUNNING_TOTAL).expect("loads");
    let mut parked = new_primary(&engine, &command, 1);
    assert_eq!(parked.run(), Ok(RunOutcome::Blocked));
    assert!(matches!(
        parked.checkpoint(Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));
    // Refused without side effects: the guest goes on.
    parked.with_inputs(|inputs| inputs.close());
    assert_eq!(parked.run(), Ok(RunOutcome::Exited(0)));

    let sliced = engine_with_fuel_slice(2_000);
    let reactor = load(&sliced, REACTOR_TOTAL);
    let mut busy = new_primary(&sliced, &reactor, 1);
    assert_eq!(busy.call_handler(b"1\n2\n3\n"), Ok(RunOutcome::OutOfFuel));
    assert!(matches!(
        busy.checkpoint(Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));

    let trapping = load(
        &engine,
        &wat::parse_str(
            r#"(module (memory (export "memory") 1)
                (func (export "input_buffer") (param i32) (result i32) (i32.const 16))
                (func (export "handle_input") (param i32) unreachable))"#,
        )
        .expect("parses"),
    );
    let mut trapped = new_primary(&engine, &trapping, 1);
    assert!(matches!(
        trapped.call_handler(b"x"),
        Ok(RunOutcome::Trapped(_))
    ));
    assert!(matches!(
        trapped.checkpoint(Bytes::new()),
        Err(GuestError::NotQuiescent(_))
    ));
}

fn engine_with_fuel_slice(slice: u64) -> GuestEngine {
    engine(GuestConfig {
        fuel_slice: Some(slice),
        ..GuestConfig::default()
    })
}

#[test]
fn command_checkpoints_before_start_and_after_exit() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let chunks: Vec<Vec<u8>> = vec![b"5\n".to_vec(), b"7\n".to_vec()];
    let mut fresh = new_primary(&engine, &module, 4);
    let (code, expected) = drive(&mut fresh, &chunks, 0);

    let mut primary = new_primary(&engine, &module, 4);
    // Stdin that arrived before the checkpoint and was not read travels with it.
    primary.with_inputs(|inputs| inputs.push(&chunks[0]));
    let start = shipped(&primary.checkpoint(Bytes::new()).expect("checkpoint"));
    assert_eq!(start.host.phase, GuestPhase::NotStarted);
    assert_eq!(start.host.stdin_backlog.bytes.as_ref(), b"5\n");
    let chunks = &chunks[1..];
    let image = CheckpointImage::from_full(&start).expect("image");
    let inputs = Recorder::continuing(FixedInputs::new(4), Epoch(1), image.lsn());
    let mut restored = GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, inputs)
        .expect("restore");
    assert_eq!(drive(&mut restored, chunks, 0), (code, expected.clone()));
    // The instance that was checkpointed before its start runs the same too.
    assert_eq!(drive(&mut primary, chunks, 0), (code, expected));

    let exited = shipped(&primary.checkpoint(Bytes::new()).expect("after exit"));
    assert_eq!(exited.host.phase, GuestPhase::Exited(code));
    assert!(exited.full && exited.memory_pages == 0);
    let mut image = image;
    image.apply(&exited).expect("next");
    let inputs = Recorder::continuing(FixedInputs::new(4), Epoch(1), image.lsn());
    let over = GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, inputs)
        .expect("restore");
    assert!(over.is_finished());
    assert_eq!(over.exit_code(), Some(code));
}

#[test]
fn taken_outputs_not_yet_released_are_kept_when_given() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, REACTOR_TOTAL);
    let mut primary = new_primary(&engine, &module, 1);
    call_all(&mut primary, &reactor_inputs(3));
    let held = primary.take_outputs();
    assert!(held.len() >= 2);
    // These stay in the instance, not taken.
    call_all(&mut primary, &reactor_inputs(1));
    let mut shuffled = held.clone();
    shuffled.reverse();
    // Held outputs out of oseq order are refused, not kept.
    assert!(matches!(
        primary.checkpoint_with(Bytes::new(), shuffled, false),
        Err(GuestError::CheckpointInvalid(_))
    ));
    let checkpoint = primary
        .checkpoint_with(Bytes::new(), held.clone(), false)
        .expect("checkpoint");
    let kept = &checkpoint.host.outputs;
    assert_eq!(kept[..held.len()], held[..]);
    assert!(kept.len() > held.len(), "the untaken outputs follow");
    let image = CheckpointImage::from_full(&shipped(&checkpoint)).expect("image");
    let inputs = Recorder::continuing(FixedInputs::new(1), Epoch(2), image.lsn());
    let mut restored = GuestInstance::restore(&engine, &module, &birth(&["guest"]), &image, inputs)
        .expect("restore");
    assert_eq!(&restored.take_outputs(), kept);
    assert_eq!(primary.take_outputs(), kept[held.len()..]);
}

/// An encoding with plenty of fields set, to damage.
fn sample_encoding() -> Bytes {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, &wat::parse_str(PAGE_TOUCHER).expect("parses"));
    let mut guest = new_primary(&engine, &module, 1);
    assert_eq!(guest.call_handler(&pages(&[2])), Ok(RunOutcome::Returned));
    let checkpoint = guest
        .checkpoint(Bytes::from_static(b"extra"))
        .expect("checkpoint");
    checkpoint.encode()
}

#[test]
fn decode_rejects_every_truncation_and_corruption() {
    let encoding = sample_encoding();
    for length in 0..encoding.len() {
        assert!(
            matches!(
                Checkpoint::decode(&encoding[..length]),
                Err(GuestError::CheckpointInvalid(_))
            ),
            "a prefix of {length} bytes must be refused"
        );
    }
    for position in (0..encoding.len()).step_by(61) {
        let mut damaged = encoding.to_vec();
        damaged[position] ^= 0x20;
        assert!(
            matches!(
                Checkpoint::decode(&damaged),
                Err(GuestError::CheckpointInvalid(_))
            ),
            "a flipped bit at {position} must be refused"
        );
    }
}

/// Replaces the u32 at `offset` and fixes the crc: damage only the limits catch.
fn forged(encoding: &[u8], offset: usize, value: u32) -> Vec<u8> {
    patched_checkpoint(encoding, offset, &value.to_le_bytes())
}

#[test]
fn decode_checks_counts_against_limits_and_input_before_allocating() {
    let encoding = sample_encoding();
    assert!(Checkpoint::decode(&forged(&encoding, 0, u32::from_le_bytes(*b"USCK"))).is_ok());
    // Header: magic 4, version 2, flags 1, number 8, lsn 8, memory pages 4, then
    // the page count.
    let page_count_offset = 4 + 2 + 1 + 8 + 8 + 4;
    let memory_pages_offset = page_count_offset - 4;
    for (offset, value) in [
        (page_count_offset, u32::MAX),
        (page_count_offset, 3),
        (memory_pages_offset, 0),
        (memory_pages_offset, u32::MAX),
    ] {
        assert!(
            matches!(
                Checkpoint::decode(&forged(&encoding, offset, value)),
                Err(GuestError::CheckpointInvalid(_))
            ),
            "u32 {value} at {offset} must be refused"
        );
    }
}

proptest::proptest! {
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(0u8..=255, 0..512)) {
        let mut bytes = b"USCK\x01\x00".to_vec();
        bytes.extend_from_slice(&body);
        let crc = crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let _ = Checkpoint::decode(&bytes);
    }
}
