//! Engine configuration for determinism, and module loading and classification.

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
    /// Epoch ticks ([`GuestEngine::increment_epoch`]) after which a running guest is
    /// killed with a trap: only for runaway guests, never a scheduling point.
    pub epoch_deadline_ticks: u64,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            memory_bytes_max: GUEST_MEMORY_BYTES_DEFAULT,
            fuel_slice: None,
            epoch_deadline_ticks: 1,
        }
    }
}

/// Total fuel given to a store; fuel slices are carved from it. Large enough never
/// to run out in practice, small enough to stay clear of wasmtime's signed counter.
pub(crate) const FUEL_TOTAL: u64 = 1 << 62;

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

    /// Advances the epoch of every instance of this engine: an instance running
    /// past its `epoch_deadline_ticks` traps (the runaway-guest kill switch).
    pub fn increment_epoch(&self) {
        self.engine.increment_epoch();
    }

    /// Validates and compiles `bytes`, classifies the module and lists its imports.
    pub fn load(&self, bytes: &[u8]) -> Result<GuestModule, GuestError> {
        if bytes.len() > GUEST_MODULE_BYTES_MAX {
            return Err(GuestError::ModuleTooLarge { bytes: bytes.len() });
        }
        let module = Module::from_binary(&self.engine, bytes)
            .map_err(|error| GuestError::InvalidModule(format!("{error:#}")))?;
        let kind = if module.get_export("_start").is_some() {
            ModuleKind::Command
        } else {
            ModuleKind::Reactor
        };
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
        Ok(GuestModule {
            module,
            kind,
            imports,
            unsupported_imports,
        })
    }
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

/// A validated, compiled module.
#[derive(Clone)]
pub struct GuestModule {
    pub(crate) module: Module,
    kind: ModuleKind,
    imports: Vec<ImportName>,
    unsupported_imports: Vec<ImportName>,
}

impl std::fmt::Debug for GuestModule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GuestModule")
            .field("kind", &self.kind)
            .field("imports", &self.imports)
            .field("unsupported_imports", &self.unsupported_imports)
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

    /// Export names of every exported mutable global, in module order: what a
    /// checkpoint captures. A module rewritten at load time to export every
    /// mutable global (`crates/instrument`) lists all of them here unchanged.
    pub fn mutable_globals(&self) -> Vec<String> {
        self.module
            .exports()
            .filter_map(|export| match export.ty() {
                ExternType::Global(global) if global.mutability() == Mutability::Var => {
                    Some(export.name().to_string())
                }
                _ => None,
            })
            .collect()
    }
}
