//! Load-time rewriting of guest modules so that a process pair can checkpoint them.
//!
//! A checkpoint of a WebAssembly guest is its linear memory, every mutable global
//! and the host's own state, captured at a *quiescent point* and restored into a
//! fresh instance of the same module on another node. [`instrument`] rewrites a
//! module once, when it is loaded, so that this is possible from the host:
//!
//! 1. It validates the module (at most `GUEST_MODULE_BYTES_MAX` bytes) and decides
//!    its [`RecoveryMode`]. Modules that change their tables at run time, export or
//!    import a table, have more than one memory, a 64-bit memory, or a mutable
//!    reference-typed global recover by [`RecoveryMode::Replay`] from their start:
//!    they run unchanged, and the reason goes to the process's log.
//! 2. A *command* (exports `_start`) is rewritten by Binaryen's Asyncify pass (see
//!    "The unwind protocol" below), so the host can stop it at a host call. A
//!    command Asyncify cannot instrument also falls back to replay, with the reason.
//!    A *reactor* (no `_start`) is checkpointed between calls and needs no Asyncify.
//! 3. Every mutable global that is not exported yet is exported as
//!    `__understudy_global_<index>` ([`GLOBAL_EXPORT_PREFIX`]; the index in the
//!    output module's global index space, imports first), memory 0 as
//!    `__understudy_memory` ([`MEMORY_EXPORT`]) unless it is exported already, and
//!    Asyncify's memory as `__understudy_asyncify_memory`
//!    ([`ASYNCIFY_MEMORY_EXPORT`]). [`Instrumented`] lists the names to use.
//!
//! The output is a pure function of the input (same bytes in, same bytes out), and
//! [`Instrumented::digest`] is its SHA-256: primary and backup run identical bytes,
//! fetched from the module store by that digest.
//!
//! # Capturing and restoring state
//!
//! A checkpoint holds the bytes of [`Instrumented::memory_export`], of
//! [`Instrumented::asyncify_memory_export`] when present, and the value of every
//! global in [`Instrumented::globals`] (Asyncify's own two globals are among them).
//! To restore: instantiate the same bytes, grow each memory to its captured size,
//! copy the bytes in, and set every listed global. Tables need no capture: in
//! checkpointed modules they never change after instantiation.
//!
//! # The unwind protocol (command guests, `asyncify == true`)
//!
//! Asyncify instruments the imports named in [`ASYNCIFY_IMPORTS`] (module
//! `wasi_snapshot_preview1`) and every indirect call. The instrumented module
//! exports `asyncify_start_unwind(data: i32)`, `asyncify_stop_unwind()`,
//! `asyncify_start_rewind(data: i32)`, `asyncify_stop_rewind()` and
//! `asyncify_get_state() -> i32` (0 normal, 1 unwinding, 2 rewinding).
//!
//! The *data* structure lives in the Asyncify memory, which only Asyncify's code
//! addresses, so the guest cannot clobber it. It is two little-endian `i32`s at the
//! data address: `[current, end]`. `current` is where the next saved byte goes,
//! `end` the limit; the saved frames fill `[current, end)` upward from the
//! structure. Use [`ASYNCIFY_DATA_ADDRESS`] for the structure, with `current =`
//! [`ASYNCIFY_STACK_START`] and `end =` [`ASYNCIFY_MEMORY_BYTES`].
//!
//! To checkpoint at an instrumented import call, the host, inside the import:
//!
//! 1. if `asyncify_get_state()` is 0 and it wants to stop here: writes
//!    `[ASYNCIFY_STACK_START, ASYNCIFY_MEMORY_BYTES]` at [`ASYNCIFY_DATA_ADDRESS`]
//!    of the Asyncify memory, calls `asyncify_start_unwind(ASYNCIFY_DATA_ADDRESS)`
//!    through the caller's exports, performs *none* of the import's effects and
//!    returns any value (it is discarded);
//! 2. the guest's frames save themselves and return: the call to `_start` returns
//!    normally. The host calls `asyncify_stop_unwind()`. The guest is now
//!    quiescent: memory, the Asyncify memory and the globals make up the checkpoint.
//!
//! To resume (on the same instance, or on a fresh instance restored from the
//! checkpoint): call `asyncify_start_rewind(ASYNCIFY_DATA_ADDRESS)` (the structure
//! is left as unwinding wrote it; rewinding consumes it back down to
//! [`ASYNCIFY_STACK_START`]), then call `_start` again. The frames restore
//! themselves and the same import is called again with the same arguments; it sees
//! `asyncify_get_state() == 2`, calls `asyncify_stop_rewind()`, then performs the
//! call for real (or returns the logged result) and returns it. Execution goes on
//! as if nothing had happened.
//!
//! If the saved frames do not fit in the Asyncify memory, unwinding traps (an
//! out-of-bounds store, or `asyncify_stop_unwind` finding `current > end`); the
//! instance is then lost and the pair must recover from its previous checkpoint.
//!
//! # What this crate must never do
//!
//! Depend on wasmtime (only its tests do), change what a module computes, or let
//! bad input abort the process: Binaryen aborts on some inputs instead of returning
//! an error, so `analysis` refuses those before Binaryen sees them.

mod analysis;
mod asyncify;
mod control;
mod error;
mod exports;

use sha2::{Digest, Sha256};
use understudy_types::limits::GUEST_MODULE_BYTES_MAX;
use wasmparser::Validator;

pub use error::InstrumentError;

/// Prefix of the export name of a mutable global that was not exported: the
/// global with index 3 is exported as `__understudy_global_3`.
pub const GLOBAL_EXPORT_PREFIX: &str = "__understudy_global_";
/// Export name of memory 0 when the module did not export it.
pub const MEMORY_EXPORT: &str = "__understudy_memory";
/// Export name of the memory Asyncify keeps unwound stacks in.
pub const ASYNCIFY_MEMORY_EXPORT: &str = "__understudy_asyncify_memory";
/// Imports of `wasi_snapshot_preview1` at which the host may unwind a command.
pub const ASYNCIFY_IMPORTS: [&str; 6] = [
    "fd_read",
    "poll_oneoff",
    "sched_yield",
    "fd_write",
    "clock_time_get",
    "random_get",
];
/// Size of the Asyncify memory, in 64 KiB pages (fixed: it cannot grow). 1 MiB of
/// saved frames is far more than the call chains of C or Zig programs need; the
/// pages never touched cost a checkpoint nothing once it compares pages.
pub const ASYNCIFY_MEMORY_PAGES: u32 = 16;
/// Size of the Asyncify memory, in bytes.
pub const ASYNCIFY_MEMORY_BYTES: u32 = ASYNCIFY_MEMORY_PAGES * WASM_PAGE_BYTES;
/// Address, in the Asyncify memory, of Asyncify's data structure `[current, end]`.
pub const ASYNCIFY_DATA_ADDRESS: u32 = 0;
/// First address of the saved frames: right after the data structure.
pub const ASYNCIFY_STACK_START: u32 = ASYNCIFY_DATA_ADDRESS + 8;
/// Bytes in one WebAssembly page.
const WASM_PAGE_BYTES: u32 = 64 * 1024;

/// How a process recovers when its primary is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecoveryMode {
    /// From its latest checkpoint, then replaying the records logged since.
    Checkpoint,
    /// From its start, replaying every record logged since birth.
    Replay,
}

/// Type of a mutable global's value (reference-typed mutable globals force
/// [`RecoveryMode::Replay`], so they never appear here).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GlobalValueType {
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `f32` (copy its bits, not a float, so NaN payloads survive).
    F32,
    /// `f64` (copy its bits, not a float, so NaN payloads survive).
    F64,
    /// `v128`.
    V128,
}

/// A mutable global and the name it is exported under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GlobalExport {
    /// Export name: the module's own if it exported the global, else
    /// [`GLOBAL_EXPORT_PREFIX`] followed by `index`.
    pub name: String,
    /// Index of the global in the output module (imports first).
    pub index: u32,
    /// Type of its value.
    pub value_type: GlobalValueType,
}

/// A module ready to run as a process pair, on primary and backup alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instrumented {
    /// The module to run.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`: the module store's key.
    pub digest: [u8; 32],
    /// How the process recovers after losing its primary.
    pub recovery_mode: RecoveryMode,
    /// Why the mode is [`RecoveryMode::Replay`], for the process's log.
    pub replay_reason: Option<String>,
    /// A command guest instrumented with Asyncify (see the crate docs).
    pub asyncify: bool,
    /// Every mutable global, in index order (empty when replay-only).
    pub globals: Vec<GlobalExport>,
    /// Name memory 0 is exported under (`None` when replay-only or memoryless).
    pub memory_export: Option<String>,
    /// Name the Asyncify memory is exported under (`Some` exactly when `asyncify`).
    pub asyncify_memory_export: Option<String>,
    /// Asyncify's own globals (`Some` exactly when `asyncify`), for a host that
    /// drives the protocol without calling the control exports.
    pub asyncify_globals: Option<AsyncifyGlobals>,
}

/// Export names of the two globals Binaryen's control exports set, both also
/// listed in [`Instrumented::globals`].
///
/// `asyncify_start_unwind(d)` is `state = 1; data = d`, `asyncify_start_rewind(d)`
/// is `state = 2; data = d`, and both stop functions are `state = 0` (each also
/// traps when the data structure's `current` exceeds its `end`). A host that
/// cannot call guest exports from inside an import (an asynchronous engine) sets
/// these globals itself, with the same effect; [`instrument`] checks the bodies of
/// `asyncify_get_state` and `asyncify_start_unwind` to find them, and falls back
/// to replay if they are not of this form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AsyncifyGlobals {
    /// The `i32` state: 0 normal, 1 unwinding, 2 rewinding.
    pub state: String,
    /// The `i32` address of the `[current, end]` data structure.
    pub data: String,
}

impl Instrumented {
    /// `module` unchanged, replay-only, with `reason` for the process's log: for a
    /// host that runs a module [`instrument`] refused, or chooses not to
    /// instrument one.
    pub fn unchanged(module: &[u8], reason: String) -> Self {
        Self::replay(module, reason)
    }

    /// The input unchanged, replay-only.
    fn replay(module: &[u8], reason: String) -> Self {
        Self {
            bytes: module.to_vec(),
            digest: sha256(module),
            recovery_mode: RecoveryMode::Replay,
            replay_reason: Some(reason),
            asyncify: false,
            globals: Vec::new(),
            memory_export: None,
            asyncify_memory_export: None,
            asyncify_globals: None,
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Validates `module` and rewrites it for checkpointing (see the crate docs).
///
/// Errors only for a module that must not run at all (too large, invalid, using a
/// reserved export name); a module that cannot be checkpointed comes back
/// unchanged with [`RecoveryMode::Replay`] and a reason.
pub fn instrument(module: &[u8]) -> Result<Instrumented, InstrumentError> {
    if module.len() > GUEST_MODULE_BYTES_MAX {
        return Err(InstrumentError::ModuleTooLarge {
            bytes: module.len(),
            limit: GUEST_MODULE_BYTES_MAX,
        });
    }
    let facts = analysis::analyse(module)?;
    if let Some(reason) = facts.replay_reason {
        return Ok(Instrumented::replay(module, reason));
    }
    let mut asyncify_memory = None;
    let mut rewritten = None;
    if facts.command {
        if let Some(blocker) = facts.asyncify_blocker {
            let reason = format!("Asyncify cannot instrument this command: {blocker}");
            return Ok(Instrumented::replay(module, reason));
        }
        match asyncify::asyncify(module) {
            Ok(bytes) => rewritten = Some(bytes),
            Err(reason) => return Ok(Instrumented::replay(module, reason)),
        }
        // Binaryen appends its memory after the module's own (at most one).
        asyncify_memory = Some(facts.memory_count);
    }
    let asyncified = rewritten.as_deref().unwrap_or(module);
    let control = match rewritten.as_deref().map(control::control_globals) {
        Some(Ok(control)) => Some(control),
        Some(Err(reason)) => return Ok(Instrumented::replay(module, reason)),
        None => None,
    };
    let exported = exports::export_state(asyncified, asyncify_memory)?;
    let asyncify_globals = match control {
        Some(control) => Some(AsyncifyGlobals {
            state: global_name(&exported.globals, control.state)?,
            data: global_name(&exported.globals, control.data)?,
        }),
        None => None,
    };
    if exported.bytes.len() > GUEST_MODULE_BYTES_MAX {
        let reason = format!(
            "the instrumented module is {} bytes, more than the limit of {GUEST_MODULE_BYTES_MAX}",
            exported.bytes.len()
        );
        return Ok(Instrumented::replay(module, reason));
    }
    // Our own output must be valid; if not, that is our bug, not the guest's.
    Validator::new_with_features(analysis::host_features())
        .validate_all(&exported.bytes)
        .map_err(|error| InstrumentError::Internal(format!("output does not validate: {error}")))?;
    Ok(Instrumented {
        digest: sha256(&exported.bytes),
        bytes: exported.bytes,
        recovery_mode: RecoveryMode::Checkpoint,
        replay_reason: None,
        asyncify: facts.command,
        globals: exported.globals,
        memory_export: exported.memory_export,
        asyncify_memory_export: exported.asyncify_memory_export,
        asyncify_globals,
    })
}

/// The export name of mutable global `index` (Asyncify's globals are mutable
/// `i32`s, so [`exports::export_state`] listed them).
fn global_name(globals: &[GlobalExport], index: u32) -> Result<String, InstrumentError> {
    globals
        .iter()
        .find(|global| global.index == index && global.value_type == GlobalValueType::I32)
        .map(|global| global.name.clone())
        .ok_or_else(|| {
            InstrumentError::Internal(format!("Asyncify global {index} is not an exported i32"))
        })
}
