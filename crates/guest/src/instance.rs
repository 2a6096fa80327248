//! [`GuestInstance`]: one running guest and its driver.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use understudy_types::limits::{
    GUEST_ARGS_ENV_BYTES_MAX, GUEST_ARGS_ENV_ENTRIES_MAX, GUEST_IO_BYTES_MAX,
};
use wasmtime::{Instance, InstancePre, Linker, Store, UpdateDeadline};

use crate::engine::{GuestEngine, GuestModule, ImportName, ModuleKind, StateLayout, FUEL_TOTAL};
use crate::pages::PageHashes;
use crate::record::InputLog;
use crate::unwind::{AsyncifyHandles, AsyncifyPhase, UnwindReason};
use crate::wasi::{self, lock, HostState, MemoryLimiter, Shared};
use crate::GuestError;
use understudy_pair::{Oseq, Output};

/// What a guest is given at birth and keeps for its whole life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Birth {
    /// `argv`, including the program name first.
    pub args: Vec<String>,
    /// Environment entries, `NAME=value`.
    pub env: Vec<String>,
}

/// How a step of the driver ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command called `proc_exit(code)` or returned from `_start` (code 0).
    Exited(i32),
    /// The reactor's handler returned; the instance takes the next record.
    Returned,
    /// The guest waits in `fd_read(stdin)` for input; `run` again later. A command
    /// with Asyncify is unwound there (quiescent: it can be checkpointed); one
    /// without is parked on its fiber (not quiescent).
    Blocked,
    /// The command unwound at a host call after [`GuestInstance::request_unwind`]:
    /// quiescent, it can be checkpointed; `run` again to rewind and resume it.
    Unwound,
    /// The guest waits in `poll_oneoff` for a deadline (it sleeps); `run` again
    /// after about `nanos` nanoseconds (earlier is harmless: it waits again).
    /// With Asyncify it is unwound there, but not checkpointable until the
    /// sleep ends.
    Sleeping {
        /// Nanoseconds until the earliest deadline, by the live clock.
        nanos: u64,
    },
    /// The guest used up its fuel slice; `run` again to resume it.
    OutOfFuel,
    /// The guest trapped: the instance is over.
    Trapped(String),
    /// The host killed the guest as a runaway (it ran `runaway_ticks` epoch
    /// ticks without progress), or a replay reached such a logged kill: the
    /// instance is over. The kill is in the log, so a backup reproduces it.
    Killed(String),
}

/// Which guest call a running future executes.
enum Call {
    Start,
    /// `_start` again, rewinding an unwound command.
    Rewind,
    Handler(Bytes),
}

type CallResult<L> = (Store<HostState<L>>, wasmtime::Result<Instance>);
type CallFuture<L> = Pin<Box<dyn Future<Output = CallResult<L>> + Send>>;

pub(crate) enum State<L: 'static> {
    /// Not running: the store, and the instance once instantiated.
    Idle(Store<HostState<L>>, Option<Instance>),
    /// A call is under way (parked, out of fuel, or not polled yet).
    Running(CallFuture<L>),
    /// Exited, trapped or diverged.
    Finished,
}

/// One guest: its store, its host state and the call under way.
pub struct GuestInstance<L: InputLog + 'static> {
    pub(crate) shared: Arc<Mutex<Shared<L>>>,
    pub(crate) pre: InstancePre<HostState<L>>,
    pub(crate) kind: ModuleKind,
    unsupported_imports: Vec<ImportName>,
    pub(crate) state: State<L>,
    /// A reactor whose `_initialize` has not run yet (it runs before the first
    /// handler call, even when a checkpoint instantiated the module earlier).
    pub(crate) needs_initialize: bool,
    /// Export names of the module's state (globals, memories, Asyncify's).
    pub(crate) layout: Arc<StateLayout>,
    /// Why the module recovers by replay (then it is never checkpointed).
    pub(crate) replay_reason: Option<String>,
    /// Page hashes as of the last checkpoint (or restore).
    pub(crate) page_hashes: PageHashes,
    /// The number of the last checkpoint taken (or restored): 0 for none.
    pub(crate) checkpoint_number: u64,
}

impl<L: InputLog + 'static> std::fmt::Debug for GuestInstance<L> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GuestInstance")
            .field("kind", &self.kind)
            .field("parked_in_stdin", &self.is_parked_in_stdin())
            .finish()
    }
}

/// Arguments or environment entries as the guest sees them (without the NUL).
type Entries = Vec<Vec<u8>>;

fn check_birth(birth: &Birth) -> Result<(Entries, Entries), GuestError> {
    let entries = birth.args.iter().chain(&birth.env);
    let count = birth.args.len() + birth.env.len();
    let bytes: usize = entries.clone().map(|entry| entry.len() + 1).sum();
    if count > GUEST_ARGS_ENV_ENTRIES_MAX || bytes > GUEST_ARGS_ENV_BYTES_MAX {
        return Err(GuestError::InvalidBirth(format!(
            "{count} entries, {bytes} bytes"
        )));
    }
    if entries.clone().any(|entry| entry.contains('\0')) {
        return Err(GuestError::InvalidBirth(
            "an entry contains a NUL byte".into(),
        ));
    }
    let to_bytes = |list: &[String]| list.iter().map(|entry| entry.as_bytes().to_vec()).collect();
    Ok((to_bytes(&birth.args), to_bytes(&birth.env)))
}

impl<L: InputLog + 'static> GuestInstance<L> {
    /// Links `module` (unsupported imports to `ENOSYS` stubs) and prepares a store;
    /// the module is instantiated by the first [`Self::run`] or [`Self::call_handler`].
    pub fn new(
        engine: &GuestEngine,
        module: &GuestModule,
        birth: &Birth,
        inputs: L,
    ) -> Result<Self, GuestError> {
        let (args, env) = check_birth(birth)?;
        let shared = Arc::new(Mutex::new(Shared {
            inputs,
            outputs: Vec::new(),
            next_oseq: Oseq(1),
            parked_in_stdin: false,
            asyncify_phase: AsyncifyPhase::Normal,
            unwind_requested: false,
            monotonic_offset_nanos: 0,
            pending_poll: None,
            sleep_nanos: None,
            args,
            env,
            closed: [false; 3],
            stdin_bytes_read: 0,
            stdin_eof_read: false,
            exit_code: None,
            failure: None,
            kill_reason: None,
            kill_stop_set: false,
        }));
        let link_error =
            |error: wasmtime::Error| GuestError::InvalidModule(format!("link: {error:#}"));
        let mut linker = Linker::new(engine.engine());
        wasi::define(&mut linker).map_err(link_error)?;
        wasi::define_stubs(&mut linker, &module.module).map_err(link_error)?;
        let pre = linker.instantiate_pre(&module.module).map_err(link_error)?;
        let config = engine.config();
        let limiter = MemoryLimiter {
            memory_bytes_max: config.memory_bytes_max,
        };
        let mut store = Store::new(
            engine.engine(),
            HostState {
                shared: shared.clone(),
                limiter,
                layout: module.layout.clone(),
            },
        );
        store.limiter(|state| &mut state.limiter);
        let store_error = |error: wasmtime::Error| GuestError::Engine(format!("{error:#}"));
        store.set_fuel(FUEL_TOTAL).map_err(store_error)?;
        if let Some(slice) = config.fuel_slice {
            store
                .fuel_async_yield_interval(Some(slice))
                .map_err(store_error)?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(runaway_watch(config.runaway_ticks, config.epoch_tick));
        Ok(Self {
            shared,
            pre,
            kind: module.kind(),
            unsupported_imports: module.unsupported_imports().to_vec(),
            state: State::Idle(store, None),
            needs_initialize: module.kind() == ModuleKind::Reactor,
            layout: module.layout.clone(),
            replay_reason: module.replay_reason(),
            page_hashes: PageHashes::new(),
            checkpoint_number: 0,
        })
    }

    /// Runs a command guest from `_start`, or resumes it (parked in stdin, out of
    /// fuel, or unwound: then it rewinds), until it exits, traps, blocks, unwinds
    /// or runs out of fuel.
    pub fn run(&mut self) -> Result<RunOutcome, GuestError> {
        match &self.state {
            State::Running(_) => {}
            State::Idle(..) if self.kind == ModuleKind::Command => {
                let call = {
                    let mut shared = lock(&self.shared);
                    match shared.asyncify_phase {
                        AsyncifyPhase::Unwound { fuel_consumed, .. } => {
                            shared.asyncify_phase = AsyncifyPhase::Rewinding { fuel_consumed };
                            Call::Rewind
                        }
                        _ => Call::Start,
                    }
                };
                if matches!(call, Call::Start) {
                    // A rewind sets its own fuel; it stops after rewinding.
                    self.stop_idle_at_logged_kill()?;
                }
                self.start(call)?
            }
            State::Idle(..) => {
                return Err(GuestError::WrongState("a reactor has no _start".into()))
            }
            State::Finished => return Err(GuestError::WrongState("the guest has finished".into())),
        }
        self.poll()
    }

    /// Delivers one input record to a reactor: `input_buffer(len)`, copy, then
    /// `handle_input(len)`. The record is logged (or checked against the log) first.
    pub fn call_handler(&mut self, record: &[u8]) -> Result<RunOutcome, GuestError> {
        if self.kind != ModuleKind::Reactor {
            return Err(GuestError::WrongState(
                "call_handler needs a reactor".into(),
            ));
        }
        if record.len() > GUEST_IO_BYTES_MAX {
            return Err(GuestError::RecordTooLarge {
                bytes: record.len(),
            });
        }
        let State::Idle(store, _) = &self.state else {
            return Err(GuestError::WrongState(
                "a call is under way or the guest finished".into(),
            ));
        };
        // get_fuel fails only without fuel metering, which GuestEngine always enables.
        let fuel = FUEL_TOTAL - store.get_fuel().unwrap_or(FUEL_TOTAL);
        let logged = lock(&self.shared).inputs.handler_input(record, fuel);
        if let Err(error) = logged {
            self.state = State::Finished;
            return Err(error);
        }
        self.stop_idle_at_logged_kill()?;
        self.start(Call::Handler(Bytes::copy_from_slice(record)))?;
        self.poll()
    }

    /// Whether the guest waits in `fd_read(stdin)` for input: parked on its fiber,
    /// or (with Asyncify) unwound there.
    pub fn is_parked_in_stdin(&self) -> bool {
        let shared = lock(&self.shared);
        let unwound_in_stdin = matches!(
            shared.asyncify_phase,
            AsyncifyPhase::Unwound {
                reason: UnwindReason::Stdin,
                ..
            }
        );
        let parked = matches!(self.state, State::Running(_)) && shared.parked_in_stdin;
        parked || (matches!(self.state, State::Idle(..)) && unwound_in_stdin)
    }

    /// Whether the guest is unwound (at a blocked read or a requested host call)
    /// and so can be checkpointed although `_start` has not finished.
    pub fn is_unwound(&self) -> bool {
        matches!(self.state, State::Idle(..))
            && matches!(
                lock(&self.shared).asyncify_phase,
                AsyncifyPhase::Unwound { .. }
            )
    }

    /// Asks a command with Asyncify to unwind at its next instrumented host call
    /// (`fd_read`, `fd_write`, `clock_time_get`, `random_get`, `poll_oneoff`,
    /// `sched_yield`), before that call has any effect (a read too, whether or
    /// not input is there): a later [`Self::run`] returns [`RunOutcome::Unwound`]
    /// and the guest can be checkpointed. If
    /// the fuel slice ends first, `run` returns [`RunOutcome::OutOfFuel`] and the
    /// request stays. A guest already unwound needs nothing more. Refused for a
    /// module without Asyncify (a reactor, or one that recovers by replay) and for
    /// a finished guest.
    pub fn request_unwind(&mut self) -> Result<(), GuestError> {
        if self.layout.asyncify.is_none() {
            let reason = self.replay_reason.as_deref().unwrap_or("a reactor");
            return Err(GuestError::WrongState(format!(
                "only a command instrumented with Asyncify unwinds ({reason})"
            )));
        }
        if self.is_finished() {
            return Err(GuestError::WrongState("the guest has finished".into()));
        }
        let mut shared = lock(&self.shared);
        if !matches!(shared.asyncify_phase, AsyncifyPhase::Unwound { .. }) {
            shared.unwind_requested = true;
        }
        Ok(())
    }

    /// Stops the guest for good, wherever it is (parked in stdin, out of fuel, idle):
    /// its fiber and store are dropped. A guest running inside `run` without a fuel
    /// slice can only be stopped by [`crate::GuestEngine::increment_epoch`].
    pub fn kill(&mut self) {
        self.state = State::Finished;
        let mut shared = lock(&self.shared);
        shared.parked_in_stdin = false;
        shared.asyncify_phase = AsyncifyPhase::Normal;
        shared.unwind_requested = false;
        shared.pending_poll = None;
        shared.sleep_nanos = None;
    }

    /// Whether the guest exited, trapped, diverged or was killed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Outputs written since the last call, in oseq order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut lock(&self.shared).outputs)
    }

    /// Runs `action` on the input log (e.g. to queue stdin on a recorder's source,
    /// or read the records logged so far).
    pub fn with_inputs<R>(&self, action: impl FnOnce(&mut L) -> R) -> R {
        action(&mut lock(&self.shared).inputs)
    }

    /// The offset added to the monotonic clock source.
    pub fn monotonic_offset_nanos(&self) -> u64 {
        lock(&self.shared).monotonic_offset_nanos
    }

    /// Sets the monotonic clock offset (a new primary after failover sets it so the
    /// guest's monotonic clock continues from the last value it observed).
    pub fn set_monotonic_offset_nanos(&mut self, offset_nanos: u64) {
        lock(&self.shared).monotonic_offset_nanos = offset_nanos;
    }

    /// Imports linked to `ENOSYS` stubs.
    pub fn unsupported_imports(&self) -> &[ImportName] {
        &self.unsupported_imports
    }

    /// Sets the fuel of the idle store to stop at a logged kill that comes next.
    fn stop_idle_at_logged_kill(&mut self) -> Result<(), GuestError> {
        let State::Idle(store, _) = &mut self.state else {
            return Ok(());
        };
        if let Err(error) = wasi::stop_at_logged_kill(store) {
            self.state = State::Finished;
            let failure = lock(&self.shared).failure.take();
            return Err(failure.unwrap_or_else(|| GuestError::Engine(format!("{error:#}"))));
        }
        Ok(())
    }

    fn start(&mut self, call: Call) -> Result<(), GuestError> {
        let State::Idle(mut store, instance) = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(GuestError::WrongState("no idle store".into()));
        };
        let pre = self.pre.clone();
        let initialize = std::mem::replace(&mut self.needs_initialize, false);
        self.state = State::Running(Box::pin(async move {
            let call = Execution {
                pre: &pre,
                initialize,
                instance,
                call,
            };
            let result = execute(&mut store, call).await;
            (store, result)
        }));
        Ok(())
    }

    fn poll(&mut self) -> Result<RunOutcome, GuestError> {
        let State::Running(future) = &mut self.state else {
            return Err(GuestError::WrongState("nothing is running".into()));
        };
        // Nothing ever wakes this waker: the driver decides when to poll again.
        let mut context = Context::from_waker(Waker::noop());
        let (store, result) = match future.as_mut().poll(&mut context) {
            Poll::Pending if lock(&self.shared).parked_in_stdin => return Ok(RunOutcome::Blocked),
            Poll::Pending => {
                if let Some(nanos) = lock(&self.shared).sleep_nanos {
                    return Ok(RunOutcome::Sleeping { nanos });
                }
                return Ok(RunOutcome::OutOfFuel);
            }
            Poll::Ready(ready) => ready,
        };
        self.state = State::Finished;
        let mut shared = lock(&self.shared);
        shared.parked_in_stdin = false;
        if let Some(failure) = shared.failure.take() {
            return Err(failure);
        }
        if let Some(code) = shared.exit_code {
            return Ok(RunOutcome::Exited(code));
        }
        if let Err(error) = &result {
            if let Some(killed) = kill_of(&mut shared, &store, error) {
                return killed.map(RunOutcome::Killed);
            }
        }
        match result {
            Ok(instance) if self.kind == ModuleKind::Command => {
                if let AsyncifyPhase::Unwound { reason, .. } = shared.asyncify_phase {
                    self.state = State::Idle(store, Some(instance));
                    return Ok(match reason {
                        UnwindReason::Stdin => RunOutcome::Blocked,
                        UnwindReason::Requested => RunOutcome::Unwound,
                        UnwindReason::Sleep => RunOutcome::Sleeping {
                            nanos: shared.sleep_nanos.unwrap_or(0),
                        },
                    });
                }
                // Returning from _start is exit code 0; kept for a checkpoint.
                shared.exit_code = Some(0);
                Ok(RunOutcome::Exited(0))
            }
            Ok(instance) => {
                self.state = State::Idle(store, Some(instance));
                Ok(RunOutcome::Returned)
            }
            Err(error) => Ok(RunOutcome::Trapped(format!("{error:#}"))),
        }
    }
}

/// The kill a trap stands for, logged (primary) or checked against the log
/// (replay): the runaway watch's trap, or running out of the fuel a replay
/// left up to a logged kill. `None`: an ordinary trap.
fn kill_of<L: InputLog>(
    shared: &mut Shared<L>,
    store: &Store<HostState<L>>,
    error: &wasmtime::Error,
) -> Option<Result<String, GuestError>> {
    if let Some(reason) = shared.kill_reason.take() {
        // The fuel of the last call the guest made: the epoch check that
        // killed it does not store the running count (docs/pairs.md, "Kills").
        let fuel = FUEL_TOTAL - store.get_fuel().unwrap_or(FUEL_TOTAL);
        return Some(shared.inputs.kill(&reason, fuel));
    }
    let out_of_fuel = error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel);
    if !(shared.kill_stop_set && out_of_fuel) {
        return None;
    }
    let kill_fuel = shared.inputs.next_kill_fuel()?;
    Some(shared.inputs.kill("", kill_fuel))
}

/// The store's epoch callback: each tick that finds the guest running counts
/// one tick without progress unless it logged an input or wrote an output
/// since the last one; at `runaway_ticks` the guest is killed (a trap whose
/// reason the driver logs). A replay is never killed by the clock: its log
/// decides. Never a scheduling point: the guest goes on unless killed.
fn runaway_watch<L: InputLog + 'static>(
    runaway_ticks: Option<u64>,
    epoch_tick: Option<std::time::Duration>,
) -> impl FnMut(wasmtime::StoreContextMut<'_, HostState<L>>) -> wasmtime::Result<UpdateDeadline>
       + Send
       + Sync
       + 'static {
    let mut last_progress = (understudy_pair::Lsn(0), Oseq(0));
    let mut ticks_without_progress = 0u64;
    move |context| {
        let shared = context.data().shared.clone();
        let mut guard = lock(&shared);
        let progress = (guard.inputs.last_lsn(), guard.next_oseq);
        // A rewind re-enters the guest's frames and has its fuel count set
        // back at its end: no kill position can be taken in the middle of it.
        let rewinding = guard.asyncify_phase != AsyncifyPhase::Normal;
        if progress != last_progress || guard.inputs.is_replaying() || rewinding {
            last_progress = progress;
            ticks_without_progress = 0;
        } else {
            ticks_without_progress += 1;
        }
        match runaway_ticks {
            Some(limit) if ticks_without_progress >= limit => {
                let limit_time = epoch_tick
                    .zip(u32::try_from(limit).ok())
                    .and_then(|(tick, limit)| tick.checked_mul(limit));
                let ran = match limit_time {
                    Some(time) => format!("{time:?}"),
                    None => format!("{limit} epoch ticks"),
                };
                let reason = format!("runaway: ran {ran} without input or output");
                guard.kill_reason = Some(reason.clone());
                Err(wasmtime::Error::msg(reason))
            }
            _ => Ok(UpdateDeadline::Continue(1)),
        }
    }
}

/// One guest call the driver's future makes.
struct Execution<'a, L: 'static> {
    pre: &'a InstancePre<HostState<L>>,
    /// Run a reactor's `_initialize` first.
    initialize: bool,
    /// The instance, or `None` to instantiate first.
    instance: Option<Instance>,
    call: Call,
}

/// Instantiates on first use, runs a reactor's `_initialize` if asked, then makes
/// the call.
async fn execute<L: InputLog + 'static>(
    store: &mut Store<HostState<L>>,
    execution: Execution<'_, L>,
) -> wasmtime::Result<Instance> {
    let instance = match execution.instance {
        Some(instance) => instance,
        None => execution.pre.instantiate_async(&mut *store).await?,
    };
    if execution.initialize {
        if let Ok(function) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
            function.call_async(&mut *store, ()).await?;
        }
    }
    match execution.call {
        Call::Start | Call::Rewind => {
            if matches!(execution.call, Call::Rewind) {
                asyncify_handles(store, &instance)?.start_rewind(&mut *store)?;
            }
            let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
            start.call_async(&mut *store, ()).await?;
            finish_unwind(store, &instance)?;
        }
        Call::Handler(record) => {
            let length = u32::try_from(record.len())?;
            let buffer = instance.get_typed_func::<u32, u32>(&mut *store, "input_buffer")?;
            let pointer = buffer.call_async(&mut *store, length).await?;
            if pointer == 0 {
                return Err(wasmtime::Error::msg(format!(
                    "input_buffer({length}) returned no buffer"
                )));
            }
            let memory = instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| wasmtime::Error::msg("the reactor exports no memory"))?;
            memory.write(&mut *store, pointer as usize, &record)?;
            let handle = instance.get_typed_func::<u32, ()>(&mut *store, "handle_input")?;
            handle.call_async(&mut *store, length).await?;
        }
    }
    Ok(instance)
}

fn asyncify_handles<L: 'static>(
    store: &mut Store<HostState<L>>,
    instance: &Instance,
) -> wasmtime::Result<AsyncifyHandles> {
    let layout = store.data().layout.clone();
    let asyncify = layout
        .asyncify
        .as_ref()
        .ok_or_else(|| wasmtime::Error::msg("the module is not instrumented with Asyncify"))?;
    AsyncifyHandles::of_instance(&mut *store, instance, asyncify)
}

/// After `_start` returned: if an import started an unwind, stops it and sets
/// the fuel count back to where the import was entered (see `unwind.rs`), so
/// the guest is unwound; if a rewind never reached an import, that is an error.
fn finish_unwind<L: 'static>(
    store: &mut Store<HostState<L>>,
    instance: &Instance,
) -> wasmtime::Result<()> {
    let shared = store.data().shared.clone();
    let phase = lock(&shared).asyncify_phase;
    match phase {
        AsyncifyPhase::Normal => Ok(()),
        AsyncifyPhase::Unwinding {
            reason,
            fuel_consumed,
        } => {
            asyncify_handles(store, instance)?.stop_unwind(&mut *store)?;
            store.set_fuel(FUEL_TOTAL - fuel_consumed)?;
            lock(&shared).asyncify_phase = AsyncifyPhase::Unwound {
                reason,
                fuel_consumed,
            };
            Ok(())
        }
        other => Err(wasmtime::Error::msg(format!(
            "_start returned while Asyncify is {other:?}"
        ))),
    }
}
