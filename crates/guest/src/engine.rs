//! Engine configuration for determinism, and module loading and classification.

use std::sync::Arc;
use std::time::Duration;

use understudy_instrument::{
    instrument, AsyncifyGlobals, InstrumentError, Instrumented, RecoveryMode,
};
use understudy_types::limits::{GUEST_MEMORY_BYTES_DEFAULT, GUEST_MODULE_BYTES_MAX};
use wasmtime::{Config, Engine, ExternType, Module, Mutability};

use crate::wasi::is_supported;
use crate::GuestError;

/// Settings of a [`GuestEngine`] and of the instances it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// Linear memory one guest may grow to, in bytes (its `ResourceLimiter`).
    pub memory_bytes_max: usize,
    /// Fuel a guest runs before [`crate::GuestInstance::run`] returns
    /// [`crate::RunOutcome::OutOfFuel`] (resumable); `None`: no budget.
    pub fuel_slice: Option<u64>,
    /// Epoch ticks a guest may spend running without making progress (no input
    /// logged, no output written) before the host kills it as a runaway, and
    /// logs the kill so a backup reproduces it (docs/pairs.md, "Kills").
    /// `None`: never killed. The epoch is only this kill switch, never a
    /// scheduling point: it is not deterministic.
    pub runaway_ticks: Option<u64>,
    /// How often the engine's own thread advances the epoch
    /// ([`GuestEngine::increment_epoch`]); `None`: only when the caller does.
    pub epoch_tick: Option<Duration>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            memory_bytes_max: GUEST_MEMORY_BYTES_DEFAULT,
            fuel_slice: None,
            runaway_ticks: None,
            epoch_tick: None,
        }
    }
}

impl GuestConfig {
    /// The configuration a node runs its guests with: a fuel slice of
    /// `fuel_slice`, an epoch tick of [`EPOCH_TICK`] and runaway guests killed
    /// after `runaway_after` without progress (`None`: never).
    pub fn with_runaway_limit(fuel_slice: u64, runaway_after: Option<Duration>) -> Self {
        let ticks = runaway_after.map(|limit| {
            let ticks = limit.as_millis().div_ceil(EPOCH_TICK.as_millis());
            u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
        });
        Self {
            fuel_slice: Some(fuel_slice),
            runaway_ticks: ticks,
            epoch_tick: ticks.map(|_| EPOCH_TICK),
            ..Self::default()
        }
    }
}

/// The epoch period of [`GuestConfig::with_runaway_limit`]: the precision of
/// the runaway limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(100);

/// Total fuel given to a store; fuel slices are carved from it. Large enough never
/// to run out in practice, small enough to stay clear of wasmtime's signed counter.
pub(crate) const FUEL_TOTAL: u64 = 1 << 62;

/// Advances `engine`'s epoch every `period` on a thread of its own, which ends
/// once the engine is dropped.
fn start_epoch_ticker(engine: &Engine, period: Duration) -> Result<(), GuestError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("guest-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .map(|_| ())
        .map_err(|error| GuestError::Engine(format!("epoch thread: {error}")))
}

/// A wasmtime engine configured so that the same module and the same inputs give
/// the same execution.
#[derive(Clone)]
pub struct GuestEngine {
    engine: Engine,
    config: GuestConfig,
}

impl std::fmt::Debug for GuestEngine {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GuestEngine")
            .field("config", &self.config)
            .finish()
    }
}

impl GuestEngine {
    /// An engine: NaN canonicalisation on, threads off, SIMD on with relaxed SIMD
    /// deterministic, fuel metering on, epoch interruption on (only to kill),
    /// async support on (a parked or out-of-fuel guest returns to the driver).
    pub fn new(config: GuestConfig) -> Result<Self, GuestError> {
        // Threads are off by construction: wasmtime is built without its `threads`
        // feature, so shared memories and atomics-wait modules fail validation.
        let mut wasm_config = Config::new();
        wasm_config
            .async_support(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .cranelift_nan_canonicalization(true)
            .relaxed_simd_deterministic(true);
        let engine =
            Engine::new(&wasm_config).map_err(|error| GuestError::Engine(error.to_string()))?;
        if let Some(period) = config.epoch_tick {
            start_epoch_ticker(&engine, period)?;
        }
        Ok(Self { engine, config })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The configuration given at creation.
    pub fn config(&self) -> &GuestConfig {
        &self.config
    }

    /// Advances the epoch of every instance of this engine by one tick: an
    /// instance that has run `runaway_ticks` ticks without progress is killed.
    pub fn increment_epoch(&self) {
        self.engine.increment_epoch();
    }

    /// Rewrites `bytes` for checkpointing once (`understudy_instrument::instrument`:
    /// every mutable global and the memory exported, a command made
    /// Asyncify-able), then validates and compiles the result, classifies the
    /// module and lists its imports. A module that cannot be instrumented runs
    /// unchanged and recovers by replay ([`GuestModule::replay_reason`] says why).
    pub fn load(&self, bytes: &[u8]) -> Result<GuestModule, GuestError> {
        if bytes.len() > GUEST_MODULE_BYTES_MAX {
            return Err(GuestError::ModuleTooLarge { bytes: bytes.len() });
        }
        let instrumented = match instrument(bytes) {
            Ok(instrumented) => instrumented,
            Err(InstrumentError::ModuleTooLarge { bytes, .. }) => {
                return Err(GuestError::ModuleTooLarge { bytes })
            }
            // Anything else the engine's own validation decides below: a module
            // wasmtime accepts still runs, unchanged and replay-only.
            Err(error) => Instrumented::unchanged(bytes, format!("not instrumented: {error}")),
        };
        self.compile(instrumented)
    }

    /// Validates and compiles `bytes` exactly as given, without instrumentation:
    /// the module recovers by replay only. For measuring what instrumentation
    /// costs, and for callers that never checkpoint.
    pub fn load_unchanged(&self, bytes: &[u8]) -> Result<GuestModule, GuestError> {
        if bytes.len() > GUEST_MODULE_BYTES_MAX {
            return Err(GuestError::ModuleTooLarge { bytes: bytes.len() });
        }
        let reason = "loaded without instrumentation".to_string();
        self.compile(Instrumented::unchanged(bytes, reason))
    }

    fn compile(&self, instrumented: Instrumented) -> Result<GuestModule, GuestError> {
        let module = Module::from_binary(&self.engine, &instrumented.bytes)
            .map_err(|error| GuestError::InvalidModule(format!("{error:#}")))?;
        let kind = if module.get_export("_start").is_some() {
            ModuleKind::Command
        } else {
            ModuleKind::Reactor
        };
        let (imports, unsupported_imports) = list_imports(&module)?;
        let layout = StateLayout::of(&instrumented, &module);
        Ok(GuestModule {
            module,
            kind,
            imports,
            unsupported_imports,
            digest: instrumented.digest,
            recovery_mode: instrumented.recovery_mode,
            replay_reason: instrumented.replay_reason.clone(),
            layout: Arc::new(layout),
        })
    }
}

/// Every function import of `module`, and those the host does not implement.
fn list_imports(module: &Module) -> Result<(Vec<ImportName>, Vec<ImportName>), GuestError> {
    let mut imports = Vec::new();
    let mut unsupported_imports = Vec::new();
    for import in module.imports() {
        let name = ImportName {
            module: import.module().into(),
            name: import.name().into(),
        };
        match import.ty() {
            ExternType::Func(_) if is_supported(&name.module, &name.name) => {}
            ExternType::Func(_) => unsupported_imports.push(name.clone()),
            other => {
                let detail = format!("{}::{} is a {other:?}", name.module, name.name);
                return Err(GuestError::InvalidModule(format!(
                    "non-function import: {detail}"
                )));
            }
        }
        imports.push(name);
    }
    Ok((imports, unsupported_imports))
}

/// Where a checkpointable module keeps its state, by export name: what a
/// checkpoint captures and what the host drives Asyncify through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateLayout {
    /// Every mutable global, in index order (for a replay-only module: those it
    /// exports itself, in export order, which no checkpoint uses).
    pub(crate) globals: Vec<String>,
    /// Memory 0 (`None`: memoryless, or replay-only).
    pub(crate) memory: Option<String>,
    /// Asyncify's memory and globals, for an instrumented command.
    pub(crate) asyncify: Option<AsyncifyLayout>,
}

/// The Asyncify part of a [`StateLayout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AsyncifyLayout {
    /// The memory unwound frames are saved in.
    pub(crate) memory: String,
    /// Asyncify's state and data globals.
    pub(crate) globals: AsyncifyGlobals,
}

impl StateLayout {
    fn of(instrumented: &Instrumented, module: &Module) -> Self {
        if instrumented.recovery_mode == RecoveryMode::Replay {
            return Self {
                globals: exported_mutable_globals(module),
                memory: None,
                asyncify: None,
            };
        }
        let asyncify = match (
            &instrumented.asyncify_memory_export,
            &instrumented.asyncify_globals,
        ) {
            (Some(memory), Some(globals)) => Some(AsyncifyLayout {
                memory: memory.clone(),
                globals: globals.clone(),
            }),
            _ => None,
        };
        Self {
            globals: instrumented
                .globals
                .iter()
                .map(|global| global.name.clone())
                .collect(),
            memory: instrumented.memory_export.clone(),
            asyncify,
        }
    }
}

fn exported_mutable_globals(module: &Module) -> Vec<String> {
    module
        .exports()
        .filter_map(|export| match export.ty() {
            ExternType::Global(global) if global.mutability() == Mutability::Var => {
                Some(export.name().to_string())
            }
            _ => None,
        })
        .collect()
}

/// How a module is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleKind {
    /// Exports `_start`: runs once from start to exit, reading stdin.
    Command,
    /// No `_start` (maybe `_initialize`): the host calls its exported handlers.
    Reactor,
}

/// The module and name of one import.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImportName {
    /// Import module, e.g. `wasi_snapshot_preview1`.
    pub module: String,
    /// Import name, e.g. `fd_write`.
    pub name: String,
}

/// A validated, compiled module: the instrumented bytes (or the original ones,
/// for a replay-only module).
#[derive(Clone)]
pub struct GuestModule {
    pub(crate) module: Module,
    kind: ModuleKind,
    imports: Vec<ImportName>,
    unsupported_imports: Vec<ImportName>,
    digest: [u8; 32],
    recovery_mode: RecoveryMode,
    replay_reason: Option<String>,
    pub(crate) layout: Arc<StateLayout>,
}

impl std::fmt::Debug for GuestModule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GuestModule")
            .field("kind", &self.kind)
            .field("imports", &self.imports)
            .field("unsupported_imports", &self.unsupported_imports)
            .field("recovery_mode", &self.recovery_mode)
            .field("replay_reason", &self.replay_reason)
            .finish()
    }
}

impl GuestModule {
    /// Command or reactor.
    pub fn kind(&self) -> ModuleKind {
        self.kind
    }

    /// Every function import, in module order.
    pub fn imports(&self) -> &[ImportName] {
        &self.imports
    }

    /// Imports the host does not implement: they are linked to a stub returning
    /// WASI `ENOSYS` (52), and the process's log should name them.
    pub fn unsupported_imports(&self) -> &[ImportName] {
        &self.unsupported_imports
    }

    /// Names of every mutable global a checkpoint captures, in index order,
    /// including those the module did not export itself (the rewrite exports
    /// them, e.g. `__stack_pointer` as `__understudy_global_0`). For a replay-only
    /// module: the mutable globals it exports, which no checkpoint captures.
    pub fn mutable_globals(&self) -> Vec<String> {
        self.layout.globals.clone()
    }

    /// How a process running this module recovers after losing its primary.
    pub fn recovery_mode(&self) -> RecoveryMode {
        self.recovery_mode
    }

    /// Why the module recovers by replay (`None` when it is checkpointed).
    pub fn replay_reason(&self) -> Option<String> {
        self.replay_reason.clone()
    }

    /// SHA-256 of the bytes this module runs (after instrumentation): primary
    /// and backup must run modules of equal digests.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether the module is a command instrumented with Asyncify: it can be
    /// checkpointed while blocked in a read or at another host call.
    pub fn is_asyncified(&self) -> bool {
        self.layout.asyncify.is_some()
    }
}
