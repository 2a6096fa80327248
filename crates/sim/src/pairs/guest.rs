//! The simulated pid's program: the real guest host running
//! `guests/running-total.wasm`, with a seeded live input source.

use bytes::Bytes;
use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::OnceLock;
use understudy_guest::{
    Birth, GuestConfig, GuestEngine, GuestInstance, GuestModule, HostInputs, ReplayThenRecord,
    RunOutcome, StdinRead,
};
use understudy_pair::{Epoch, Output, Record};

/// The example guest every simulated pid runs.
const RUNNING_TOTAL: &[u8] = include_bytes!("../../../../guests/running-total.wasm");

/// The engine and the compiled module, once per process: compiling is the
/// expensive part, instantiating is cheap.
fn compiled_guest() -> &'static (GuestEngine, GuestModule) {
    static GUEST: OnceLock<(GuestEngine, GuestModule)> = OnceLock::new();
    GUEST.get_or_init(|| {
        // The default configuration is valid and the module is checked in and
        // tested by the guest crate: failing here is a broken build.
        let engine = GuestEngine::new(GuestConfig::default()).expect("the guest engine");
        let module = engine
            .load(RUNNING_TOTAL)
            .expect("running-total.wasm loads");
        (engine, module)
    })
}

/// The live source of a simulated primary: stdin the simulation queues, a
/// clock advancing by a fixed step per reading and seeded random bytes, so a
/// seed replays identically.
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
}

/// A running-total guest that replays a log and then records live inputs.
pub(super) type Guest = GuestInstance<ReplayThenRecord<SimInputs>>;

/// A guest that replays `log`, then records live inputs from `source` in
/// `epoch`.
pub(super) fn new_guest(log: Vec<Record>, source: SimInputs, epoch: Epoch) -> Guest {
    let (engine, module) = compiled_guest();
    let birth = Birth {
        args: vec!["running-total".to_string()],
        env: Vec::new(),
    };
    let inputs = ReplayThenRecord::new(log, source, epoch);
    // The birth arguments are far within the limits.
    GuestInstance::new(engine, module, &birth, inputs).expect("a guest instance")
}

/// Runs `guest` until it parks in stdin; returns the live records it logged
/// and every output it wrote, or what went wrong.
pub(super) fn run_guest(guest: &mut Guest) -> Result<(Vec<Record>, Vec<Output>), String> {
    loop {
        match guest.run() {
            Ok(RunOutcome::Blocked) => break,
            Ok(RunOutcome::OutOfFuel) => continue,
            Ok(other) => return Err(format!("guest ended: {other:?}")),
            Err(error) => return Err(format!("guest failed: {error}")),
        }
    }
    let records = guest.with_inputs(|inputs| inputs.recorder_mut().take_records());
    Ok((records, guest.take_outputs()))
}

/// Queues a stdin line for `guest`'s live source.
pub(super) fn push_stdin(guest: &mut Guest, line: Bytes) {
    guest.with_inputs(|inputs| inputs.recorder_mut().source_mut().stdin.push_back(line));
}
