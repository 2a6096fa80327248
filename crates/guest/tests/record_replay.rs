//! Record and replay of the example guests.

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use understudy_guest::{
    Epoch, GuestConfig, GuestError, GuestInstance, Lsn, ModuleKind, Oseq, Record, RecordKind,
    Recorder, Replayer, RunOutcome, Stream, SystemInputs,
};

fn chunks(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|part| part.as_bytes().to_vec()).collect()
}

/// Records running-total with the real source, stdin in chunks split mid-line.
fn record_running_total() -> (Vec<understudy_guest::Output>, Vec<Record>) {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    assert_eq!(module.kind(), ModuleKind::Command);
    assert!(
        module.unsupported_imports().is_empty(),
        "{:?}",
        module.unsupported_imports()
    );
    let recorder = Recorder::new(SystemInputs::new(), Epoch(1));
    let mut instance = GuestInstance::new(&engine, &module, &birth(&["running-total"]), recorder)
        .expect("instance");
    let (code, outputs) = drive(
        &mut instance,
        &chunks(&["5\n7", "\n-2\n", "abc\n1", "0\n"]),
        2,
    );
    assert_eq!(code, 0);
    let records = instance.with_inputs(|recorder| recorder.records().to_vec());
    (outputs, records)
}

fn replay(
    records: Vec<Record>,
) -> (
    Result<RunOutcome, GuestError>,
    Vec<understudy_guest::Output>,
) {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let mut instance = GuestInstance::new(
        &engine,
        &module,
        &birth(&["running-total"]),
        Replayer::new(records),
    )
    .expect("instance");
    let outcome = instance.run();
    (outcome, instance.take_outputs())
}

#[test]
fn running_total_records_and_replays_identically() {
    let (outputs, records) = record_running_total();
    let stdout = text(&outputs, Stream::Stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    let token: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(token[0], "token");
    assert_eq!(token[1].len(), 16);
    assert!(token[1].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(token[2], "started");
    let (seconds, nanos) = token[3].split_once('.').expect("secs.nanos");
    assert!(seconds.parse::<u64>().expect("seconds") > 1_600_000_000);
    assert_eq!(nanos.len(), 9);
    assert_eq!(
        &lines[1..],
        [
            "1 total 5",
            "2 total 12",
            "3 total 10",
            "skipped a line that is not a number",
            "4 total 20",
            "done: 4 numbers, total 20"
        ]
    );
    assert_eq!(text(&outputs, Stream::Stderr), "");
    let kinds: Vec<RecordKind> = records.iter().map(|record| record.kind).collect();
    assert_eq!(kinds[0], RecordKind::Random);
    assert_eq!(kinds[1], RecordKind::Clock { clock_id: 0 });
    assert_eq!(kinds.last(), Some(&RecordKind::StdinEof));
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.lsn, Lsn(index as u64 + 1));
        assert_eq!(record.epoch, Epoch(1));
    }
    assert!(records
        .windows(2)
        .all(|pair| pair[0].fuel_consumed <= pair[1].fuel_consumed));
    for (index, output) in outputs.iter().enumerate() {
        assert_eq!(output.oseq, Oseq(index as u64 + 1));
    }
    // The token line depends on the clock record (lsn 2); the last line on EOF.
    assert_eq!(outputs[0].depends_on, Lsn(2));
    assert_eq!(
        outputs.last().map(|output| output.depends_on),
        Some(Lsn(records.len() as u64))
    );

    let (outcome, replayed) = replay(records);
    assert_eq!(outcome, Ok(RunOutcome::Exited(0)));
    assert_eq!(
        replayed, outputs,
        "replay gives the same oseqs, bytes and lsns"
    );
}

#[test]
fn tampered_or_truncated_log_is_reported() {
    let (_, records) = record_running_total();
    let mut tampered = records.clone();
    let clock = tampered
        .iter()
        .position(|record| matches!(record.kind, RecordKind::Clock { .. }))
        .expect("a clock record");
    tampered[clock].kind = RecordKind::Random;
    let (outcome, _) = replay(tampered);
    match outcome {
        Err(GuestError::Divergence { lsn, .. }) => assert_eq!(lsn, clock as u64 + 1),
        other => panic!("expected a divergence, got {other:?}"),
    }

    let mut shifted = records.clone();
    shifted[2].fuel_consumed += 1;
    assert!(matches!(
        replay(shifted).0,
        Err(GuestError::Divergence { lsn: 3, .. })
    ));

    let mut truncated = records.clone();
    truncated.truncate(records.len() - 1);
    let (outcome, outputs) = replay(truncated);
    assert_eq!(
        outcome,
        Err(GuestError::LogExhausted {
            wanted: RecordKind::StdinData,
            after_lsn: records.len() as u64 - 1
        })
    );
    assert!(
        !outputs.is_empty(),
        "outputs before the end of the log were regenerated"
    );
}

#[test]
fn reactor_total_handles_three_records_and_replays() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, REACTOR_TOTAL);
    assert_eq!(module.kind(), ModuleKind::Reactor);
    let inputs: [&[u8]; 3] = [b"1\n2\n", b"3\n", b"x\n4\n"];
    let mut primary = GuestInstance::new(
        &engine,
        &module,
        &birth(&["reactor"]),
        Recorder::new(SystemInputs::new(), Epoch(1)),
    )
    .expect("instance");
    assert!(matches!(primary.run(), Err(GuestError::WrongState(_))));
    for input in inputs {
        assert_eq!(primary.call_handler(input), Ok(RunOutcome::Returned));
    }
    let outputs = primary.take_outputs();
    let stdout = text(&outputs, Stream::Stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("token "), "{stdout}");
    assert_eq!(
        &lines[1..],
        [
            "1 total 1",
            "2 total 3",
            "3 total 6",
            "skipped a line that is not a number",
            "4 total 10"
        ]
    );
    let records = primary.with_inputs(|recorder| recorder.records().to_vec());
    assert_eq!(records[0].kind, RecordKind::HandlerCall);

    let mut backup = GuestInstance::new(
        &engine,
        &module,
        &birth(&["reactor"]),
        Replayer::new(records),
    )
    .expect("instance");
    for input in inputs {
        assert_eq!(backup.call_handler(input), Ok(RunOutcome::Returned));
    }
    assert_eq!(backup.take_outputs(), outputs);
    assert!(matches!(
        backup.call_handler(b"5\n"),
        Err(GuestError::LogExhausted { .. })
    ));
}

#[test]
fn cpu_heavy_runs_and_fails_cleanly_below_its_memory() {
    let run = |memory_bytes_max: usize| {
        let engine = engine(GuestConfig {
            memory_bytes_max,
            ..GuestConfig::default()
        });
        let module = load(&engine, CPU_HEAVY);
        let recorder = Recorder::new(SystemInputs::new(), Epoch(1));
        let mut instance =
            GuestInstance::new(&engine, &module, &birth(&["cpu-heavy", "4"]), recorder)
                .expect("instance");
        drive(&mut instance, &chunks(&["1000\n", "20\n"]), 0)
    };
    let (code, outputs) = run(64 * 1024 * 1024);
    assert_eq!(code, 0);
    let stdout = text(&outputs, Stream::Stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "ready with 4 MiB");
    assert!(
        lines[1].starts_with("1 checksum ") && lines[2].starts_with("2 checksum "),
        "{stdout}"
    );
    // Deterministic: a second run computes the same checksums.
    assert_eq!(text(&run(64 * 1024 * 1024).1, Stream::Stdout), stdout);

    // 2 MiB: memory.grow fails, so malloc returns NULL and the guest exits 2.
    let (code, outputs) = run(2 * 1024 * 1024);
    assert_eq!(code, 2);
    assert_eq!(text(&outputs, Stream::Stderr), "cannot allocate 4 MiB\n");
    assert_eq!(text(&outputs, Stream::Stdout), "");
}

fn record_with_fixed_inputs(parts: Vec<Vec<u8>>) -> (String, Vec<Record>) {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let recorder = Recorder::new(FixedInputs::new(7), Epoch(1));
    let mut instance = GuestInstance::new(&engine, &module, &birth(&["running-total"]), recorder)
        .expect("instance");
    let (code, outputs) = drive(&mut instance, &parts, 1);
    assert_eq!(code, 0);
    let records = instance.with_inputs(|recorder| recorder.records().to_vec());
    (text(&outputs, Stream::Stdout), records)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn any_chunking_gives_the_same_output(cuts in proptest::collection::vec(0usize..40, 0..8)) {
        let input = b"12\n-3\nseven\n40\n5\n\n100\n".to_vec();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|cut| cut % input.len()).collect();
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            if cut > start {
                parts.push(input[start..cut].to_vec());
                start = cut;
            }
        }
        let (stdout, records) = record_with_fixed_inputs(parts);
        let (whole, _) = record_with_fixed_inputs(vec![input.clone()]);
        prop_assert_eq!(&stdout, &whole);
        prop_assert!(stdout.ends_with("done: 5 numbers, total 154\n"), "{}", stdout);
        let stdin: Vec<u8> = records
            .iter()
            .filter(|record| record.kind == RecordKind::StdinData)
            .flat_map(|record| record.payload.to_vec())
            .collect();
        prop_assert_eq!(Bytes::from(stdin), Bytes::from(input));
    }
}

#[test]
fn fuel_slices_resume_and_keep_fuel_positions() {
    let record = |fuel_slice: Option<u64>| {
        let engine = engine(GuestConfig {
            fuel_slice,
            ..GuestConfig::default()
        });
        let module = load(&engine, CPU_HEAVY);
        let recorder = Recorder::new(FixedInputs::new(1), Epoch(1));
        let mut instance =
            GuestInstance::new(&engine, &module, &birth(&["cpu-heavy", "1"]), recorder)
                .expect("instance");
        let mut out_of_fuel = 0;
        let mut chunks = chunks(&["3000\n", "7\n"]).into_iter();
        loop {
            match instance.run().expect("run") {
                RunOutcome::OutOfFuel => out_of_fuel += 1,
                RunOutcome::Blocked => match chunks.next() {
                    Some(chunk) => instance.with_inputs(|inputs| inputs.push(&chunk)),
                    None => instance.with_inputs(|inputs| inputs.close()),
                },
                RunOutcome::Exited(code) => {
                    assert_eq!(code, 0);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let records = instance.with_inputs(|recorder| recorder.records().to_vec());
        (out_of_fuel, instance.take_outputs(), records)
    };
    let (yields, outputs, records) = record(Some(50_000));
    assert!(
        yields > 10,
        "1 MiB of mixing takes many 50k-fuel slices, got {yields}"
    );
    let (no_yields, whole_outputs, whole_records) = record(None);
    assert_eq!(no_yields, 0);
    assert_eq!(outputs, whole_outputs);
    assert_eq!(
        records, whole_records,
        "fuel positions do not depend on slicing"
    );
    assert!(records
        .iter()
        .any(|record| record.fuel_consumed > 1_000_000));
}

#[test]
fn monotonic_clock_adds_the_host_offset() {
    let engine = engine(GuestConfig::default());
    let bytes = wat::parse_str(format!(
        r#"(module
            {CLOCK_AND_WRITE_IMPORTS}
            (memory (export "memory") 1)
            (func (export "_start")
                (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 64)))
                (i32.store (i32.const 0) (i32.const 64))
                (i32.store (i32.const 4) (i32.const 8))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
    .expect("parses");
    let module = load(&engine, &bytes);
    let mut instance = GuestInstance::new(
        &engine,
        &module,
        &birth(&["clock"]),
        Recorder::new(FixedInputs::new(1), Epoch(1)),
    )
    .expect("instance");
    assert_eq!(instance.monotonic_offset_nanos(), 0);
    instance.set_monotonic_offset_nanos(1_000);
    assert_eq!(instance.run(), Ok(RunOutcome::Exited(0)));
    let outputs = instance.take_outputs();
    let source = 1_700_000_000_123_456_789u64 + 1;
    assert_eq!(outputs[0].bytes.as_ref(), (source + 1_000).to_le_bytes());
    let records = instance.with_inputs(|recorder| recorder.records().to_vec());
    assert_eq!(
        records[0].payload.as_ref(),
        source.to_le_bytes(),
        "the log holds the source"
    );
}

#[test]
fn instances_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<GuestInstance<Recorder<SystemInputs>>>();
    assert_send::<GuestInstance<Replayer>>();
}

#[test]
fn a_parked_guest_can_be_killed() {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let recorder = Recorder::new(FixedInputs::new(3), Epoch(1));
    let mut instance = GuestInstance::new(&engine, &module, &birth(&["running-total"]), recorder)
        .expect("instance");
    assert_eq!(instance.run(), Ok(RunOutcome::Blocked));
    assert!(instance.is_parked_in_stdin());
    // Parked before any stdin: the token line is out, its inputs logged, no stdin record.
    assert_eq!(instance.take_outputs().len(), 1);
    assert_eq!(instance.with_inputs(|recorder| recorder.records().len()), 2);
    instance.kill();
    assert!(instance.is_finished() && !instance.is_parked_in_stdin());
    assert!(matches!(instance.run(), Err(GuestError::WrongState(_))));
}
