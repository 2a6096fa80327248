//! A promoted backup replays the log, then goes on recording live inputs in the
//! new epoch: its outputs equal a single run fed the same inputs.

mod common;

use common::*;
use understudy_guest::{
    Epoch, GuestConfig, GuestInstance, Lsn, Output, Record, RecordKind, Recorder, ReplayThenRecord,
    RunOutcome,
};

const A: [&str; 4] = ["5\n", "7\n", "-2\n", "abc\n"];
const B: [&str; 3] = ["10\n", "x\n", "3\n"];

fn chunks(parts: &[&str]) -> Vec<Vec<u8>> {
    parts.iter().map(|part| part.as_bytes().to_vec()).collect()
}

/// Records running-total fed `A` without closing stdin: the primary's log at the
/// moment it crashed.
fn record_a() -> Vec<Record> {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let recorder = Recorder::new(FixedInputs::new(7), Epoch(1));
    let mut instance = GuestInstance::new(&engine, &module, &birth(&["running-total"]), recorder)
        .expect("instance");
    for chunk in chunks(&A) {
        assert_eq!(instance.run().expect("run"), RunOutcome::Blocked);
        instance.with_inputs(|recorder| recorder.push(&chunk));
    }
    assert_eq!(instance.run().expect("run"), RunOutcome::Blocked);
    instance.with_inputs(|recorder| recorder.records().to_vec())
}

/// A single recorded run fed `stdin` then end of input.
fn single_run(stdin: &[Vec<u8>]) -> (Vec<Output>, Vec<Record>) {
    let engine = engine(GuestConfig::default());
    let module = load(&engine, RUNNING_TOTAL);
    let recorder = Recorder::new(FixedInputs::new(7), Epoch(1));
    let mut instance = GuestInstance::new(&engine, &module, &birth(&["running-total"]), recorder)
        .expect("instance");
    let (code, outputs) = drive(&mut instance, stdin, 0);
    assert_eq!(code, 0);
    let records = instance.with_inputs(|recorder| recorder.records().to_vec());
    (outputs, records)
}

#[test]
fn replay_then_live_equals_a_single_run_for_every_prefix() {
    let log = record_a();
    assert!(
        log.len() >= A.len() + 2,
        "random, clock and A's stdin logged"
    );
    for k in 0..=log.len() {
        let engine = engine(GuestConfig::default());
        let module = load(&engine, RUNNING_TOTAL);
        let inputs = ReplayThenRecord::new(log[..k].to_vec(), FixedInputs::new(7), Epoch(2));
        assert_eq!(inputs.is_live(), k == 0);
        let mut instance = GuestInstance::new(&engine, &module, &birth(&["running-total"]), inputs)
            .expect("instance");
        let (code, outputs) = drive(&mut instance, &chunks(&B), 0);
        assert_eq!(code, 0, "k = {k}");
        let live = instance.with_inputs(|inputs| {
            assert!(inputs.is_live(), "every logged record was replayed");
            inputs.recorder_mut().records().to_vec()
        });

        // The single run is fed the stdin the first k records held, then B.
        let mut stdin: Vec<Vec<u8>> = log[..k]
            .iter()
            .filter(|record| record.kind == RecordKind::StdinData)
            .map(|record| record.payload.to_vec())
            .collect();
        stdin.extend(chunks(&B));
        let (expected_outputs, expected_records) = single_run(&stdin);
        assert_eq!(outputs, expected_outputs, "k = {k}: same oseqs and bytes");

        // Live records continue the lsns after the replayed ones, in epoch 2.
        assert_eq!(
            live.first().map(|record| record.lsn),
            Some(Lsn(k as u64 + 1))
        );
        assert!(live.iter().all(|record| record.epoch == Epoch(2)));
        let combined: Vec<Record> = log[..k].iter().cloned().chain(live).collect();
        let strip = |records: &[Record]| -> Vec<(Lsn, RecordKind, Vec<u8>, u64)> {
            records
                .iter()
                .map(|r| (r.lsn, r.kind, r.payload.to_vec(), r.fuel_consumed))
                .collect()
        };
        assert_eq!(strip(&combined), strip(&expected_records), "k = {k}");
    }
}
