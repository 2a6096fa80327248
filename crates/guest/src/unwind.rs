//! Driving Binaryen's Asyncify from the host, so a command guest can be stopped at
//! an instrumented import, checkpointed, and resumed (the protocol is in
//! `understudy_instrument`'s crate docs).
//!
//! The host never calls Asyncify's control exports: the engine runs guests
//! asynchronously, and a synchronous import cannot call back into the guest. It
//! sets Asyncify's state and data globals instead, exactly as those exports do
//! (`understudy_instrument::AsyncifyGlobals` says why that is equivalent), and
//! checks the data structure as they would.
//!
//! # Fuel
//! Unwinding and rewinding run guest code and so burn fuel, and how often a guest
//! unwinds depends on when its input arrives, which differs between a primary and
//! a backup replaying its log. So the host takes that fuel back: it notes the
//! fuel consumed when the import that unwinds is entered, sets the count back to
//! it once the unwind finished, and again when the rewound guest re-enters the
//! import. The import then runs at the fuel position it would have had without
//! the round trip, and every record logged keeps the same `fuel_consumed` on
//! every path.

use understudy_instrument::{ASYNCIFY_DATA_ADDRESS, ASYNCIFY_MEMORY_BYTES, ASYNCIFY_STACK_START};
use wasmtime::{AsContext, AsContextMut, Caller, Extern, Global, Instance, Memory, Val};

use crate::engine::AsyncifyLayout;

/// Asyncify's state global: running normally.
const STATE_NORMAL: i32 = 0;
/// Asyncify's state global: frames are saving themselves and returning.
const STATE_UNWINDING: i32 = 1;
/// Asyncify's state global: frames are restoring themselves.
const STATE_REWINDING: i32 = 2;

/// Why a command guest was unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnwindReason {
    /// Its `fd_read(stdin)` found no input: it is parked in stdin.
    Stdin,
    /// The host asked for it ([`crate::GuestInstance::request_unwind`]).
    Requested,
    /// Its `poll_oneoff` waits for a deadline: it sleeps (never checkpointed
    /// there, see `wasi/poll.rs`).
    Sleep,
}

/// Where a command guest stands in the unwind protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum AsyncifyPhase {
    /// Running (or not started) with no unwind under way.
    #[default]
    Normal,
    /// An import started an unwind at `fuel_consumed`; `_start` has not returned.
    Unwinding {
        reason: UnwindReason,
        fuel_consumed: u64,
    },
    /// `_start` returned with every frame saved: quiescent, checkpointable.
    Unwound {
        reason: UnwindReason,
        fuel_consumed: u64,
    },
    /// `_start` was called again to rewind; the import has not been re-entered.
    Rewinding { fuel_consumed: u64 },
}

/// The handles of one instance's Asyncify state.
pub(crate) struct AsyncifyHandles {
    state: Global,
    data: Global,
    memory: Memory,
}

fn missing(name: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("the instrumented guest lacks the export {name}"))
}

impl AsyncifyHandles {
    /// The handles, from inside an import.
    pub(crate) fn of_caller<T>(
        caller: &mut Caller<'_, T>,
        layout: &AsyncifyLayout,
    ) -> wasmtime::Result<Self> {
        let global = |caller: &mut Caller<'_, T>, name: &str| match caller.get_export(name) {
            Some(Extern::Global(global)) => Ok(global),
            _ => Err(missing(name)),
        };
        let state = global(caller, &layout.globals.state)?;
        let data = global(caller, &layout.globals.data)?;
        let memory = match caller.get_export(&layout.memory) {
            Some(Extern::Memory(memory)) => memory,
            _ => return Err(missing(&layout.memory)),
        };
        Ok(Self {
            state,
            data,
            memory,
        })
    }

    /// The handles, from the driver.
    pub(crate) fn of_instance(
        mut store: impl AsContextMut,
        instance: &Instance,
        layout: &AsyncifyLayout,
    ) -> wasmtime::Result<Self> {
        let mut global = |name: &str| {
            instance
                .get_global(&mut store, name)
                .ok_or_else(|| missing(name))
        };
        let state = global(&layout.globals.state)?;
        let data = global(&layout.globals.data)?;
        let memory = instance
            .get_memory(&mut store, &layout.memory)
            .ok_or_else(|| missing(&layout.memory))?;
        Ok(Self {
            state,
            data,
            memory,
        })
    }

    fn state(&self, store: impl AsContextMut) -> i32 {
        self.state.get(store).i32().unwrap_or(-1)
    }

    fn set_state(&self, store: impl AsContextMut, state: i32) -> wasmtime::Result<()> {
        self.state.set(store, Val::I32(state))
    }

    /// `current` of the data structure: where the next saved byte would go.
    fn current(&self, store: impl AsContext) -> wasmtime::Result<u32> {
        let mut bytes = [0u8; 4];
        self.memory
            .read(store, ASYNCIFY_DATA_ADDRESS as usize, &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// `asyncify_start_unwind(ASYNCIFY_DATA_ADDRESS)` with a fresh data structure
    /// `[ASYNCIFY_STACK_START, ASYNCIFY_MEMORY_BYTES]`.
    pub(crate) fn start_unwind(&self, mut store: impl AsContextMut) -> wasmtime::Result<()> {
        self.expect_state(&mut store, STATE_NORMAL, "start an unwind")?;
        let mut structure = [0u8; 8];
        structure[..4].copy_from_slice(&ASYNCIFY_STACK_START.to_le_bytes());
        structure[4..].copy_from_slice(&ASYNCIFY_MEMORY_BYTES.to_le_bytes());
        self.memory
            .write(&mut store, ASYNCIFY_DATA_ADDRESS as usize, &structure)?;
        self.data
            .set(&mut store, Val::I32(ASYNCIFY_DATA_ADDRESS as i32))?;
        self.set_state(&mut store, STATE_UNWINDING)
    }

    /// `asyncify_stop_unwind()`, once `_start` returned from an unwind.
    pub(crate) fn stop_unwind(&self, mut store: impl AsContextMut) -> wasmtime::Result<()> {
        self.expect_state(&mut store, STATE_UNWINDING, "stop an unwind")?;
        let current = self.current(&mut store)?;
        if !(ASYNCIFY_STACK_START..=ASYNCIFY_MEMORY_BYTES).contains(&current) {
            return Err(wasmtime::Error::msg(format!(
                "the unwound stack ends at {current}, outside the Asyncify memory"
            )));
        }
        self.set_state(&mut store, STATE_NORMAL)
    }

    /// `asyncify_start_rewind(ASYNCIFY_DATA_ADDRESS)`: the structure is as the
    /// unwind (or a restored checkpoint) left it.
    pub(crate) fn start_rewind(&self, mut store: impl AsContextMut) -> wasmtime::Result<()> {
        self.expect_state(&mut store, STATE_NORMAL, "start a rewind")?;
        self.data
            .set(&mut store, Val::I32(ASYNCIFY_DATA_ADDRESS as i32))?;
        self.set_state(&mut store, STATE_REWINDING)
    }

    /// `asyncify_stop_rewind()`, in the import the rewind reached: every saved
    /// frame must have been consumed.
    pub(crate) fn stop_rewind(&self, mut store: impl AsContextMut) -> wasmtime::Result<()> {
        self.expect_state(&mut store, STATE_REWINDING, "stop a rewind")?;
        let current = self.current(&mut store)?;
        if current != ASYNCIFY_STACK_START {
            return Err(wasmtime::Error::msg(format!(
                "the rewind stopped with saved frames left (stack at {current})"
            )));
        }
        self.set_state(&mut store, STATE_NORMAL)
    }

    /// The used part of the Asyncify memory, `[0, current)`: the data structure
    /// and the saved frames (what a checkpoint of an unwound guest carries).
    pub(crate) fn saved_stack(&self, mut store: impl AsContextMut) -> wasmtime::Result<Vec<u8>> {
        let current = self.current(&mut store)? as usize;
        let data = self.memory.data(&store);
        data.get(..current)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| wasmtime::Error::msg("the unwound stack ends past its memory"))
    }

    /// Writes a checkpoint's saved stack back at the start of the Asyncify memory.
    pub(crate) fn restore_stack(
        &self,
        mut store: impl AsContextMut,
        stack: &[u8],
    ) -> wasmtime::Result<()> {
        let structure_end = ASYNCIFY_STACK_START as usize;
        let current = stack
            .get(..4)
            .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
            .map(u32::from_le_bytes);
        if stack.len() < structure_end || current != Some(stack.len() as u32) {
            return Err(wasmtime::Error::msg(format!(
                "a saved stack of {} bytes does not end where its data structure says",
                stack.len()
            )));
        }
        self.memory.write(&mut store, 0, stack)?;
        Ok(())
    }

    fn expect_state(
        &self,
        store: impl AsContextMut,
        expected: i32,
        action: &str,
    ) -> wasmtime::Result<()> {
        let state = self.state(store);
        if state != expected {
            return Err(wasmtime::Error::msg(format!(
                "cannot {action}: Asyncify is in state {state}, not {expected}"
            )));
        }
        Ok(())
    }
}
