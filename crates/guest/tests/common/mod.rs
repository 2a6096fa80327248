//! Helpers shared by the guest tests.
#![allow(dead_code)]

use std::collections::VecDeque;

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use understudy_guest::{
    Birth, GuestConfig, GuestEngine, GuestError, GuestInstance, GuestModule, HostInputs, InputLog,
    Output, Recorder, RunOutcome, StdinBacklog, StdinRead, Stream,
};

pub const RUNNING_TOTAL: &[u8] = include_bytes!("../../../../guests/running-total.wasm");
pub const REACTOR_TOTAL: &[u8] = include_bytes!("../../../../guests/reactor-total.wasm");
pub const CPU_HEAVY: &[u8] = include_bytes!("../../../../guests/cpu-heavy.wasm");
/// guests/running-total.wasm's program written in Zig.
pub const RUNNING_TOTAL_ZIG: &[u8] = include_bytes!("../../../../guests/running-total-zig.wasm");

/// WAT imports of `clock_time_get` as `$clock` and `fd_write` as `$write`.
pub const CLOCK_AND_WRITE_IMPORTS: &str = r#"
    (import "wasi_snapshot_preview1" "clock_time_get"
        (func $clock (param i32 i64 i32) (result i32)))
    (import "wasi_snapshot_preview1" "fd_write"
        (func $write (param i32 i32 i32 i32) (result i32)))"#;

pub fn engine(config: GuestConfig) -> GuestEngine {
    GuestEngine::new(config).expect("the engine configuration is valid")
}

pub fn load(engine: &GuestEngine, bytes: &[u8]) -> GuestModule {
    engine.load(bytes).expect("the module loads")
}

pub fn birth(args: &[&str]) -> Birth {
    Birth {
        args: args.iter().map(|arg| arg.to_string()).collect(),
        env: Vec::new(),
    }
}

/// A deterministic live source: queued stdin, a fixed clock, seeded random bytes.
pub struct FixedInputs {
    pub stdin: VecDeque<Bytes>,
    pub closed: bool,
    rng: ChaCha8Rng,
}

impl FixedInputs {
    pub fn new(seed: u64) -> Self {
        Self {
            stdin: VecDeque::new(),
            closed: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl HostInputs for FixedInputs {
    fn read_stdin(&mut self, max: usize) -> StdinRead {
        match self.stdin.front_mut() {
            None if self.closed => StdinRead::Eof,
            None => StdinRead::Pending,
            Some(front) if front.len() <= max => {
                StdinRead::Data(self.stdin.pop_front().expect("front exists"))
            }
            Some(front) => StdinRead::Data(front.split_to(max)),
        }
    }

    fn clock(&mut self, clock_id: u32) -> u64 {
        1_700_000_000_123_456_789 + u64::from(clock_id)
    }

    fn random(&mut self, length: usize) -> Bytes {
        let mut bytes = vec![0; length];
        self.rng.fill_bytes(&mut bytes);
        Bytes::from(bytes)
    }

    fn stdin_backlog(&self) -> StdinBacklog {
        StdinBacklog {
            bytes: self.stdin.iter().flatten().copied().collect(),
            closed: self.closed,
        }
    }

    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        if !backlog.bytes.is_empty() {
            self.stdin.push_front(backlog.bytes);
        }
        self.closed |= backlog.closed;
        Ok(())
    }
}

/// Stdin access for the recorders the tests use.
pub trait QueueStdin {
    fn push(&mut self, chunk: &[u8]);
    fn close(&mut self);
}

impl QueueStdin for Recorder<FixedInputs> {
    fn push(&mut self, chunk: &[u8]) {
        self.source_mut()
            .stdin
            .push_back(Bytes::copy_from_slice(chunk));
    }
    fn close(&mut self) {
        self.source_mut().closed = true;
    }
}

impl QueueStdin for understudy_guest::ReplayThenRecord<FixedInputs> {
    fn push(&mut self, chunk: &[u8]) {
        self.recorder_mut().push(chunk);
    }
    fn close(&mut self) {
        self.recorder_mut().close();
    }
}

impl QueueStdin for Recorder<understudy_guest::SystemInputs> {
    fn push(&mut self, chunk: &[u8]) {
        self.source_mut().push_stdin(Bytes::copy_from_slice(chunk));
    }
    fn close(&mut self) {
        self.source_mut().close_stdin();
    }
}

/// Runs a command guest, feeding `chunks` one per blocked round with
/// `pending_rounds` extra runs (each must stay blocked) before each chunk; closes
/// stdin after the last; resumes a guest out of fuel. Returns the exit code and
/// the outputs.
pub fn drive<L: InputLog + QueueStdin + 'static>(
    instance: &mut GuestInstance<L>,
    chunks: &[Vec<u8>],
    pending_rounds: usize,
) -> (i32, Vec<Output>) {
    let mut chunks = chunks.iter();
    let mut outputs = Vec::new();
    loop {
        match instance.run().expect("the run does not fail") {
            RunOutcome::Exited(code) => {
                outputs.extend(instance.take_outputs());
                return (code, outputs);
            }
            RunOutcome::Blocked => {
                assert!(
                    instance.is_parked_in_stdin(),
                    "a blocked guest is parked in stdin"
                );
                for _ in 0..pending_rounds {
                    assert_eq!(instance.run().expect("run"), RunOutcome::Blocked);
                }
                match chunks.next() {
                    Some(chunk) => instance.with_inputs(|inputs| inputs.push(chunk)),
                    None => instance.with_inputs(|inputs| inputs.close()),
                }
            }
            RunOutcome::OutOfFuel => {
                assert!(!instance.is_parked_in_stdin(), "out of fuel is not parked");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

/// The bytes written to `stream`, concatenated.
pub fn text(outputs: &[Output], stream: Stream) -> String {
    let bytes: Vec<u8> = outputs
        .iter()
        .filter(|output| output.stream == stream)
        .flat_map(|output| output.bytes.to_vec())
        .collect();
    String::from_utf8(bytes).expect("the guests write UTF-8")
}

/// A checkpoint encoding with `bytes` written at `offset` and its trailing
/// crc32c fixed, so that only the decoder's other checks can refuse it.
pub fn patched_checkpoint(encoding: &[u8], offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut body = encoding[..encoding.len() - 4].to_vec();
    body[offset..offset + bytes.len()].copy_from_slice(bytes);
    let crc = crc32c(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

/// crc32c (Castagnoli), bit by bit: the test's own, independent of the crate's.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
