//! The simulated pid's program: the real guest host running
//! `guests/running-total.wasm` (instrumented with Asyncify at load, so that it
//! unwinds when it waits for stdin and can be checkpointed there), with a
//! seeded live input source.

use bytes::Bytes;
use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::OnceLock;
use understudy_guest::{
    Birth, CheckpointImage, GuestConfig, GuestEngine, GuestError, GuestInstance, GuestModule,
    HostInputs, ReplayThenRecord, RunOutcome, StdinBacklog, StdinRead,
};
use understudy_pair::{Epoch, Output, Record, RecordKind};

/// The example guest every simulated pid runs.
const RUNNING_TOTAL: &[u8] = include_bytes!("../../../../guests/running-total.wasm");

/// Fuel per `run` slice: small enough that a stdin line can take more than
/// one, so a primary can stop between two slices in the middle of a line (as
/// a node's thread turns to other work) and be checkpointed there, after an
/// unwind it requested.
pub(super) const FUEL_SLICE: u64 = 2_000;

/// The engine and the compiled module, once per process: compiling is the
/// expensive part, instantiating is cheap.
fn compiled_guest() -> &'static (GuestEngine, GuestModule) {
    static GUEST: OnceLock<(GuestEngine, GuestModule)> = OnceLock::new();
    GUEST.get_or_init(|| {
        // The default configuration is valid and the module is checked in and
        // tested by the guest crate: failing here is a broken build.
        let config = GuestConfig {
            fuel_slice: Some(FUEL_SLICE),
            ..GuestConfig::default()
        };
        let engine = GuestEngine::new(config).expect("the guest engine");
        let module = engine
            .load(RUNNING_TOTAL)
            .expect("running-total.wasm loads");
        // Checkpoints need the Asyncify rewrite; without it every capture is
        // refused and the simulation would test nothing of them.
        assert!(
            module.is_asyncified(),
            "running-total.wasm must be instrumented for checkpoints: {:?}",
            module.replay_reason()
        );
        (engine, module)
    })
}

/// The live source of a simulated primary: stdin the simulation queues, a
/// clock advancing by a fixed step per reading and seeded random bytes, so a
/// seed replays identically. Stdin queued and not read yet is the backlog a
/// checkpoint keeps.
#[derive(Debug)]
pub(super) struct SimInputs {
    pub(super) stdin: VecDeque<Bytes>,
    clock_nanos: u64,
    random: ChaCha8Rng,
}

impl SimInputs {
    pub(super) fn new(seed: u64) -> SimInputs {
        SimInputs {
            stdin: VecDeque::new(),
            clock_nanos: seed % 1_000_000_000_000,
            random: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Drops the first `bytes` bytes of queued stdin (or all there is).
    fn discard_stdin(&mut self, mut bytes: usize) {
        while bytes > 0 {
            let Some(front) = self.stdin.front_mut() else {
                return;
            };
            if front.len() <= bytes {
                bytes -= front.len();
                self.stdin.pop_front();
            } else {
                let _ = front.split_to(bytes);
                bytes = 0;
            }
        }
    }
}

impl HostInputs for SimInputs {
    fn read_stdin(&mut self, max: usize) -> StdinRead {
        match self.stdin.front_mut() {
            // Stdin is never closed in the simulation.
            None => StdinRead::Pending,
            Some(front) if front.len() <= max => {
                StdinRead::Data(self.stdin.pop_front().unwrap_or_default())
            }
            Some(front) => StdinRead::Data(front.split_to(max)),
        }
    }

    fn clock(&mut self, _clock_id: u32) -> u64 {
        self.clock_nanos += 1_000_000;
        self.clock_nanos
    }

    fn random(&mut self, length: usize) -> Bytes {
        let mut bytes = vec![0; length];
        self.random.fill_bytes(&mut bytes);
        Bytes::from(bytes)
    }

    fn stdin_backlog(&self) -> StdinBacklog {
        let bytes: Vec<u8> = self.stdin.iter().flatten().copied().collect();
        StdinBacklog {
            bytes: Bytes::from(bytes),
            // Stdin is never closed in the simulation.
            closed: false,
        }
    }

    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        if backlog.closed {
            return Err(GuestError::RestoreMismatch(
                "a checkpoint says stdin was closed; the simulation never closes it".into(),
            ));
        }
        if !backlog.bytes.is_empty() {
            self.stdin.push_front(backlog.bytes);
        }
        Ok(())
    }
}

/// A running-total guest that replays a log and then records live inputs.
pub(super) type Guest = GuestInstance<ReplayThenRecord<SimInputs>>;

/// A guest that replays `log`, then records live inputs from `source` in
/// `epoch`.
pub(super) fn new_guest(log: Vec<Record>, source: SimInputs, epoch: Epoch) -> Guest {
    let (engine, module) = compiled_guest();
    let inputs = ReplayThenRecord::new(log, source, epoch);
    // The birth arguments are far within the limits.
    GuestInstance::new(engine, module, &birth(), inputs).expect("a guest instance")
}

/// A guest restored from `image` that replays `records` (the records after
/// the image's lsn), then records live inputs from `source` in `epoch`: what a
/// promoted backup runs. The restore puts the checkpoint's stdin backlog back
/// in the live source; the part of it the replayed records read (the backlog
/// came first in the primary's queue) is dropped again, as a node does with
/// its log summary. A refused restore is returned (a violation).
pub(super) fn restore_guest(
    image: &CheckpointImage,
    records: Vec<Record>,
    source: SimInputs,
    epoch: Epoch,
) -> Result<Guest, String> {
    let (engine, module) = compiled_guest();
    let read_after_image: usize = records
        .iter()
        .filter(|record| record.kind == RecordKind::StdinData)
        .map(|record| record.payload.len())
        .sum();
    let inputs = ReplayThenRecord::after(image.lsn(), records, source, epoch);
    let guest = GuestInstance::restore(engine, module, &birth(), image, inputs)
        .map_err(|error| format!("restoring checkpoint {}: {error}", image.number()))?;
    guest.with_inputs(|inputs| {
        inputs
            .recorder_mut()
            .source_mut()
            .discard_stdin(read_after_image)
    });
    Ok(guest)
}

fn birth() -> Birth {
    Birth {
        args: vec!["running-total".to_string()],
        env: Vec::new(),
    }
}

/// Runs `guest` until it parks in stdin; returns the live records it logged
/// and every output it wrote, or what went wrong.
pub(super) fn run_guest(guest: &mut Guest) -> Result<(Vec<Record>, Vec<Output>), String> {
    run_until_waiting(guest)?;
    let records = guest.with_inputs(|inputs| inputs.recorder_mut().take_records());
    Ok((records, guest.take_outputs()))
}

/// Runs `guest` until it parks in stdin, leaving what it logged and wrote in
/// it.
pub(super) fn run_until_waiting(guest: &mut Guest) -> Result<(), String> {
    loop {
        match guest.run() {
            Ok(RunOutcome::Blocked) => return Ok(()),
            // Resumable: the end of a fuel slice, or an unwind requested for
            // a checkpoint (the next run rewinds).
            Ok(RunOutcome::OutOfFuel | RunOutcome::Unwound) => continue,
            Ok(other) => return Err(format!("guest ended: {other:?}")),
            Err(error) => return Err(format!("guest failed: {error}")),
        }
    }
}

/// Queues a stdin line for `guest`'s live source.
pub(super) fn push_stdin(guest: &mut Guest, line: Bytes) {
    guest.with_inputs(|inputs| inputs.recorder_mut().source_mut().stdin.push_back(line));
}
