//! `understudy-guest`: a deterministic WASI preview 1 host with record and replay,
//! the first layer of understudy's process pairs.
//!
//! # What is recorded
//! Every value a guest observes from outside goes through one [`InputLog`]: stdin
//! bytes and end of input, clock readings, random bytes, and the records delivered to
//! a reactor's handler. On the primary a [`Recorder`] asks the live [`HostInputs`]
//! (e.g. [`SystemInputs`]) and appends a [`Record`] `{ lsn, epoch, kind, payload,
//! fuel_consumed }` (the pair protocol's type); on the backup a [`Replayer`] hands the logged records back in
//! order and reports [`GuestError::Divergence`] when the guest asks for another kind,
//! at another fuel position, or for a different length — and
//! [`GuestError::LogExhausted`] when the log ends — never continuing silently. A
//! promoted backup uses [`ReplayThenRecord`]: it replays the log, then records new
//! inputs from a live source in its new epoch, lsns continuing.
//! A stdin read with no input yet is not an observation and is not logged.
//!
//! # What is an output
//! Each non-empty `fd_write` to stdout or stderr becomes an [`Output`] `{ oseq,
//! stream, bytes, depends_on }` collected by the host ([`GuestInstance::take_outputs`]);
//! the pair protocol will hold it until the backup acknowledged `depends_on`.
//!
//! # Loading
//! [`GuestEngine::load`] rewrites every module once with
//! `understudy_instrument::instrument` and compiles the result: every mutable
//! global (`__stack_pointer` too) and the memory are exported for checkpoints, and
//! a command is instrumented with Binaryen's Asyncify. A module that cannot be
//! instrumented (e.g. it changes a table at run time) runs unchanged with
//! [`RecoveryMode::Replay`] and a [`GuestModule::replay_reason`]; it is never
//! checkpointed. [`GuestModule::digest`] names the bytes that run.
//!
//! # Blocked and unwound commands
//! The engine runs guests with wasmtime's async support on a fiber. A command's
//! `fd_read(stdin)` with no input makes [`GuestInstance::run`] return
//! [`RunOutcome::Blocked`], with [`GuestInstance::is_parked_in_stdin`] true; the
//! next `run` retries the read. With Asyncify the host *unwinds* the guest there
//! (its frames save themselves into the Asyncify memory and `_start` returns), so
//! it is quiescent and can be checkpointed, and the next `run` rewinds it into the
//! same read (`unwind.rs`). Without Asyncify the fiber stays suspended inside the
//! host call. [`GuestInstance::request_unwind`] makes the next instrumented host
//! call unwind too ([`RunOutcome::Unwound`]), so compute-bound commands can be
//! checkpointed. Unwinding and rewinding cost no fuel as far as the records are
//! concerned: the fuel count is set back, so the same guest logs the same fuel
//! positions however often it blocked. Reactors are driven by
//! [`GuestInstance::call_handler`].
//!
//! # Checkpoints
//! At a quiescent point — a guest not started yet, a reactor between handler calls,
//! a command unwound by Asyncify or exited — [`GuestInstance::checkpoint`] captures
//! a [`Checkpoint`]: the 4 KiB memory pages changed since the instance's previous
//! checkpoint (found with per-page xxh3-128 hashes, see [`PageHashes`]), every
//! mutable global, an unwound command's saved frames, the host state ([`HostSnapshot`]: fd table, stdin cursor and backlog,
//! `next_oseq`, unreleased outputs, clock offset, fuel) and the caller's extra
//! bytes, tagged with the lsn of the last input logged before it. A backup folds
//! checkpoints in order into a [`CheckpointImage`]; [`GuestInstance::restore`]
//! brings a fresh instance to the image's point without running `_start` or
//! `_initialize`; an unwound one rewinds on its next `run`. A guest out of fuel,
//! a command without Asyncify parked in stdin and every replay-only module are
//! refused ([`GuestError::NotQuiescent`]). The byte format is in
//! `docs/checkpoints.md`.
//!
//! # Determinism
//! NaN canonicalisation is on, threads are off, SIMD is on with relaxed SIMD in its
//! deterministic mode; fuel metering gives a deterministic position (logged with each
//! record and checked on replay), and an optional fuel slice makes `run` return
//! [`RunOutcome::OutOfFuel`] (resumable) instead of trapping. Epoch interruption only
//! kills runaway guests. Everything else the guest can see (args, environment, file
//! descriptor table, clock resolution) is fixed at birth or constant; the monotonic
//! clock is the source's reading plus a host-state offset, so after a failover it
//! never goes backwards. `poll_oneoff` clock subscriptions are real sleeps whose
//! ends are logged clock readings ([`RunOutcome::Sleeping`]; `wasi/poll.rs`).

mod checkpoint;
mod checkpoint_codec;
mod engine;
mod instance;
mod pages;
mod record;
mod snapshot;
mod unwind;
mod wasi;

pub use checkpoint::{
    Checkpoint, CheckpointImage, GlobalBits, GlobalValue, GuestPhase, HostSnapshot, StdinBacklog,
};
pub use engine::{GuestConfig, GuestEngine, GuestModule, ImportName, ModuleKind, EPOCH_TICK};
pub use instance::{Birth, GuestInstance, RunOutcome};
pub use pages::{PageHashes, CHECKPOINT_PAGE_BYTES, WASM_PAGE_BYTES};
pub use record::{
    HostInputs, InputLog, Recorder, ReplayThenRecord, Replayer, StdinRead, SystemInputs,
    CLOCK_MONOTONIC, CLOCK_REALTIME,
};
pub use understudy_instrument::RecoveryMode;
/// The record and output types are the pair protocol's: one set for the host and
/// the protocol.
pub use understudy_pair::{Epoch, Lsn, Oseq, Output, Record, RecordKind, Stream};
pub use unwind::UnwindReason;
pub use wasi::{ERRNO_NOSYS, WASI_MODULE};

/// Everything that can go wrong hosting a guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The wasmtime engine could not be configured.
    #[error("engine configuration: {0}")]
    Engine(String),
    /// The module is larger than `GUEST_MODULE_BYTES_MAX`.
    #[error("module of {bytes} bytes exceeds the limit")]
    ModuleTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The module did not validate or compile, or imports something not a function.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// Arguments or environment exceed their limits or contain a NUL byte.
    #[error("invalid birth arguments: {0}")]
    InvalidBirth(String),
    /// An input record exceeds `GUEST_IO_BYTES_MAX`.
    #[error("input record of {bytes} bytes exceeds the limit")]
    RecordTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The replayed guest asked for something other than what was logged.
    #[error("replay diverged at lsn {lsn}: {detail}")]
    Divergence {
        /// The logged record that did not match.
        lsn: u64,
        /// What differed.
        detail: String,
    },
    /// The replayed guest asked for an input past the end of the log.
    #[error("replay log exhausted after lsn {after_lsn}: guest asked for {wanted:?}")]
    LogExhausted {
        /// What the guest asked for.
        wanted: RecordKind,
        /// The last replayed lsn.
        after_lsn: u64,
    },
    /// The call does not fit the module kind or the instance's state.
    #[error("not possible now: {0}")]
    WrongState(String),
    /// A checkpoint was asked for where the guest is not at a quiescent point
    /// (a call under way, parked in stdin or out of fuel; trapped or killed).
    #[error("not at a quiescent point: {0}")]
    NotQuiescent(String),
    /// An encoded checkpoint is truncated, corrupt or beyond a limit, or a
    /// checkpoint's contents are inconsistent.
    #[error("invalid checkpoint: {0}")]
    CheckpointInvalid(String),
    /// A checkpoint does not follow the image it is applied to.
    #[error("checkpoint out of order: {0}")]
    CheckpointOutOfOrder(String),
    /// An image does not fit the module or input log it is restored with.
    #[error("cannot restore: {0}")]
    RestoreMismatch(String),
}
