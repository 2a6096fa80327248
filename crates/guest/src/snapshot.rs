//! [`GuestInstance::checkpoint`] and [`GuestInstance::restore`]: capturing a guest
//! at a quiescent point and bringing a fresh instance back to it.
//!
//! Quiescent points: a guest not started yet (the module is instantiated,
//! nothing runs); a reactor between two handler calls; a command that exited (its
//! memory is not kept: only its unreleased outputs and exit code matter); a
//! command with Asyncify unwound at a host call (a read with no input, or after
//! [`GuestInstance::request_unwind`]), whose saved frames travel with the
//! checkpoint. A guest out of fuel in the middle of a call, or a command without
//! Asyncify parked in stdin, has frames on its fiber that no checkpoint can
//! carry: [`GuestError::NotQuiescent`]. So has every module that recovers by
//! replay: its checkpoint could miss state (a table changed at run time, a
//! global it does not export).

use std::future::Future;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use understudy_pair::{Oseq, Output};
use understudy_types::limits::{
    GUEST_CHECKPOINT_EXTRA_BYTES_MAX, GUEST_CHECKPOINT_OUTPUTS_MAX,
    GUEST_CHECKPOINT_OUTPUT_BYTES_MAX, GUEST_GLOBAL_NAME_BYTES_MAX,
};
use wasmtime::{Instance, InstancePre, Memory, Store, Val, ValType, V128};

use crate::checkpoint::HostSnapshot;
use crate::checkpoint::{Checkpoint, CheckpointImage, GlobalBits, GlobalValue, GuestPhase};
use crate::engine::{GuestEngine, GuestModule, ModuleKind, FUEL_TOTAL};
use crate::instance::{Birth, GuestInstance, State};
use crate::pages::{PageHashes, CHECKPOINT_PAGE_BYTES, WASM_PAGE_BYTES};
use crate::record::InputLog;
use crate::unwind::{AsyncifyHandles, AsyncifyPhase};
use crate::wasi::{lock, HostState};
use crate::GuestError;

impl<L: InputLog + 'static> GuestInstance<L> {
    /// Captures the guest at a quiescent point: the pages changed since this
    /// instance's previous checkpoint (the first: every non-zero page), every
    /// exported mutable global, the host state with the outputs not yet taken,
    /// and `extra`. Elsewhere: [`GuestError::NotQuiescent`].
    pub fn checkpoint(&mut self, extra: Bytes) -> Result<Checkpoint, GuestError> {
        self.checkpoint_with(extra, Vec::new(), false)
    }

    /// [`Self::checkpoint`], also keeping `held_outputs`: outputs already taken
    /// with [`Self::take_outputs`] but not released yet (they precede, in oseq
    /// order, those not taken). With `full`, every non-zero page is carried, as
    /// for a new backup that has no image yet.
    pub fn checkpoint_with(
        &mut self,
        extra: Bytes,
        held_outputs: Vec<Output>,
        full: bool,
    ) -> Result<Checkpoint, GuestError> {
        if extra.len() as u64 > GUEST_CHECKPOINT_EXTRA_BYTES_MAX {
            return Err(GuestError::CheckpointInvalid(format!(
                "{} extra bytes exceed the limit",
                extra.len()
            )));
        }
        let phase = self.quiescent_phase()?;
        let exited = matches!(phase, GuestPhase::Exited(_));
        let mut host = self.host_snapshot(phase, held_outputs)?;
        host.fuel_consumed = self.fuel_consumed();
        // An instance's first checkpoint has no predecessor; an exited command
        // keeps no memory, so its checkpoint replaces the image's with none.
        let full = full || self.checkpoint_number == 0 || exited;
        let (memory_pages, page_indexes, page_bytes, globals) = match host.phase {
            GuestPhase::Exited(_) => (0, Vec::new(), Bytes::new(), Vec::new()),
            _ => self.capture_memory_and_globals(full)?,
        };
        self.checkpoint_number += 1;
        Ok(Checkpoint {
            number: self.checkpoint_number,
            full,
            lsn: lock(&self.shared).inputs.last_lsn(),
            memory_pages,
            page_indexes,
            page_bytes,
            globals,
            host,
            extra,
        })
    }

    /// Where the guest stands, if it is quiescent; instantiates a guest not
    /// started yet (running nothing) so that its memory exists.
    fn quiescent_phase(&mut self) -> Result<GuestPhase, GuestError> {
        if let Some(reason) = &self.replay_reason {
            return Err(GuestError::NotQuiescent(format!(
                "the module recovers by replay, never from a checkpoint: {reason}"
            )));
        }
        let (parked_in_stdin, asyncify_phase, sleeping) = {
            let shared = lock(&self.shared);
            let sleeping = shared.pending_poll.is_some();
            (shared.parked_in_stdin, shared.asyncify_phase, sleeping)
        };
        if sleeping {
            // The deadlines of a sleep are host state a checkpoint does not
            // carry: capture before the sleep (a requested unwind stops the
            // guest at the call's entry) or after it.
            return Err(GuestError::NotQuiescent(
                "the guest sleeps in poll_oneoff".into(),
            ));
        }
        match &mut self.state {
            State::Running(_) if parked_in_stdin => Err(GuestError::NotQuiescent(
                "a command parked in stdin needs Asyncify to be checkpointed".into(),
            )),
            State::Running(_) => Err(GuestError::NotQuiescent(
                "a call is under way (out of fuel)".into(),
            )),
            State::Finished => match lock(&self.shared).exit_code {
                Some(code) if self.kind == ModuleKind::Command => Ok(GuestPhase::Exited(code)),
                _ => Err(GuestError::NotQuiescent(
                    "the guest trapped, diverged or was killed".into(),
                )),
            },
            State::Idle(store, instance) => {
                if instance.is_none() {
                    *instance = Some(instantiate_now(store, &self.pre)?);
                }
                if let AsyncifyPhase::Unwound { reason, .. } = asyncify_phase {
                    let stack = match (instance.as_ref(), self.layout.asyncify.as_ref()) {
                        (Some(instance), Some(layout)) => {
                            AsyncifyHandles::of_instance(&mut *store, instance, layout)
                                .and_then(|handles| handles.saved_stack(&mut *store))
                                .map_err(|error| GuestError::WrongState(format!("{error:#}")))?
                        }
                        _ => {
                            return Err(GuestError::WrongState(
                                "an unwound guest without Asyncify".into(),
                            ))
                        }
                    };
                    return Ok(GuestPhase::Unwound {
                        reason,
                        stack: Bytes::from(stack),
                    });
                }
                if self.kind == ModuleKind::Command || self.needs_initialize {
                    Ok(GuestPhase::NotStarted)
                } else {
                    Ok(GuestPhase::BetweenCalls)
                }
            }
        }
    }

    fn host_snapshot(
        &self,
        phase: GuestPhase,
        held_outputs: Vec<Output>,
    ) -> Result<HostSnapshot, GuestError> {
        let shared = lock(&self.shared);
        let mut outputs = held_outputs;
        outputs.extend(shared.outputs.iter().cloned());
        check_outputs(&outputs, shared.next_oseq)?;
        Ok(HostSnapshot {
            phase,
            next_oseq: shared.next_oseq,
            monotonic_offset_nanos: shared.monotonic_offset_nanos,
            closed_fds: shared.closed,
            stdin_bytes_read: shared.stdin_bytes_read,
            stdin_eof_read: shared.stdin_eof_read,
            stdin_backlog: shared.inputs.stdin_backlog(),
            outputs,
            fuel_consumed: 0,
        })
    }

    /// Memory size, changed pages (indexes and bytes; with `full`, every non-zero
    /// page) and globals of an idle, instantiated guest. The page hashes change
    /// only once nothing can fail any more, so a failed capture leaves the next
    /// one relative to the last checkpoint taken.
    fn capture_memory_and_globals(
        &mut self,
        full: bool,
    ) -> Result<(u32, Vec<u32>, Bytes, Vec<GlobalValue>), GuestError> {
        let State::Idle(store, Some(instance)) = &mut self.state else {
            return Err(GuestError::WrongState("no instantiated guest".into()));
        };
        let globals = capture_globals(store, instance, &self.layout.globals)?;
        let memory = match &self.layout.memory {
            Some(name) => instance.get_memory(&mut *store, name),
            None => None,
        };
        let Some(memory) = memory else {
            return Ok((0, Vec::new(), Bytes::new(), globals));
        };
        let memory_pages = memory_pages(&memory, store)?;
        let data = memory.data(&*store);
        if full {
            self.page_hashes = PageHashes::new();
        }
        let changed = self.page_hashes.update(data);
        let mut page_bytes = BytesMut::with_capacity(changed.len() * CHECKPOINT_PAGE_BYTES);
        for &index in &changed {
            let start = index as usize * CHECKPOINT_PAGE_BYTES;
            page_bytes.extend_from_slice(&data[start..start + CHECKPOINT_PAGE_BYTES]);
        }
        Ok((memory_pages, changed, page_bytes.freeze(), globals))
    }

    /// A new instance of `module` at the quiescent point `image` describes: the
    /// module is instantiated without running `_start` or `_initialize`, memory and
    /// globals are written, the host state restored. `inputs` must continue after
    /// the image's lsn (e.g. [`crate::Recorder::continuing`] or
    /// [`crate::ReplayThenRecord::after`]). The next checkpoint is incremental
    /// against the image.
    pub fn restore(
        engine: &GuestEngine,
        module: &GuestModule,
        birth: &Birth,
        image: &CheckpointImage,
        inputs: L,
    ) -> Result<Self, GuestError> {
        if inputs.last_lsn() != image.lsn() {
            return Err(GuestError::RestoreMismatch(format!(
                "the input log continues after lsn {}, the image is at lsn {}",
                inputs.last_lsn().0,
                image.lsn().0
            )));
        }
        let mut guest = Self::new(engine, module, birth, inputs)?;
        if let Some(reason) = &guest.replay_reason {
            return Err(GuestError::RestoreMismatch(format!(
                "the module recovers by replay, never from a checkpoint: {reason}"
            )));
        }
        let host = image.host();
        match (&host.phase, guest.kind) {
            (GuestPhase::Exited(_), ModuleKind::Command) => guest.state = State::Finished,
            (GuestPhase::NotStarted, _) | (GuestPhase::BetweenCalls, ModuleKind::Reactor) => {
                guest.restore_instance(image)?;
                guest.needs_initialize =
                    guest.kind == ModuleKind::Reactor && host.phase == GuestPhase::NotStarted;
            }
            (GuestPhase::Unwound { reason, stack }, ModuleKind::Command) => {
                guest.restore_instance(image)?;
                guest.restore_unwound(stack)?;
                lock(&guest.shared).asyncify_phase = AsyncifyPhase::Unwound {
                    reason: *reason,
                    fuel_consumed: host.fuel_consumed,
                };
            }
            (phase, kind) => {
                return Err(GuestError::RestoreMismatch(format!(
                    "a {kind:?} module cannot be at {phase:?}"
                )))
            }
        }
        guest.restore_host(host)?;
        guest.restore_fuel(host.fuel_consumed)?;
        guest.checkpoint_number = image.number();
        Ok(guest)
    }

    /// Instantiates, then writes the image's memory and globals.
    fn restore_instance(&mut self, image: &CheckpointImage) -> Result<(), GuestError> {
        // On an error the instance stays Finished: restore returns the error and
        // drops it.
        let State::Idle(mut store, None) = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(GuestError::WrongState(
                "a restore needs a new instance".into(),
            ));
        };
        let instance = instantiate_now(&mut store, &self.pre)?;
        restore_globals(&mut store, &instance, &self.layout.globals, image.globals())?;
        let memory = match &self.layout.memory {
            Some(name) => instance.get_memory(&mut store, name),
            None => None,
        };
        match memory {
            Some(memory) => {
                restore_memory(&mut store, &memory, image.memory())?;
                self.page_hashes = PageHashes::of(memory.data(&store));
            }
            None if image.memory().is_empty() => {}
            None => {
                return Err(GuestError::RestoreMismatch(
                    "the image has memory, the module exports none".into(),
                ))
            }
        }
        self.state = State::Idle(store, Some(instance));
        Ok(())
    }

    /// Writes an unwound command's saved frames back into its Asyncify memory, so
    /// its next run rewinds.
    fn restore_unwound(&mut self, stack: &[u8]) -> Result<(), GuestError> {
        let (State::Idle(store, Some(instance)), Some(layout)) =
            (&mut self.state, self.layout.asyncify.as_ref())
        else {
            return Err(GuestError::RestoreMismatch(
                "the image is of a command unwound by Asyncify, the module has none".into(),
            ));
        };
        AsyncifyHandles::of_instance(&mut *store, instance, layout)
            .and_then(|handles| handles.restore_stack(&mut *store, stack))
            .map_err(|error| GuestError::RestoreMismatch(format!("{error:#}")))
    }

    fn restore_host(&mut self, host: &HostSnapshot) -> Result<(), GuestError> {
        check_outputs(&host.outputs, host.next_oseq)?;
        let mut shared = lock(&self.shared);
        shared
            .inputs
            .restore_stdin_backlog(host.stdin_backlog.clone())?;
        shared.next_oseq = host.next_oseq;
        shared.monotonic_offset_nanos = host.monotonic_offset_nanos;
        shared.closed = host.closed_fds;
        shared.stdin_bytes_read = host.stdin_bytes_read;
        shared.stdin_eof_read = host.stdin_eof_read;
        shared.outputs = host.outputs.clone();
        if let GuestPhase::Exited(code) = host.phase {
            shared.exit_code = Some(code);
        }
        Ok(())
    }

    /// Fuel consumed so far by an idle guest (0 once it finished: its store is
    /// gone, and an exited guest runs no more).
    fn fuel_consumed(&self) -> u64 {
        match &self.state {
            // get_fuel fails only without fuel metering, which GuestEngine enables.
            State::Idle(store, _) => FUEL_TOTAL - store.get_fuel().unwrap_or(FUEL_TOTAL),
            _ => 0,
        }
    }

    /// Makes the restored store's fuel count continue from the image's.
    fn restore_fuel(&mut self, fuel_consumed: u64) -> Result<(), GuestError> {
        let State::Idle(store, _) = &mut self.state else {
            return Ok(());
        };
        if fuel_consumed >= FUEL_TOTAL {
            return Err(GuestError::RestoreMismatch(format!(
                "{fuel_consumed} fuel consumed exceeds the total"
            )));
        }
        store
            .set_fuel(FUEL_TOTAL - fuel_consumed)
            .map_err(|error| GuestError::Engine(format!("{error:#}")))
    }

    /// The number of the last checkpoint taken or restored (0: none).
    pub fn checkpoint_number(&self) -> u64 {
        self.checkpoint_number
    }

    /// The exit code of a command that exited (also after a restore).
    pub fn exit_code(&self) -> Option<i32> {
        lock(&self.shared).exit_code
    }
}

/// Instantiates without running any export. Completes at once unless the module
/// has a start function that yields (out of fuel): such a module cannot be
/// checkpointed before it runs.
fn instantiate_now<L: InputLog + 'static>(
    store: &mut Store<HostState<L>>,
    pre: &InstancePre<HostState<L>>,
) -> Result<Instance, GuestError> {
    let mut future = Box::pin(pre.instantiate_async(&mut *store));
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(Ok(instance)) => Ok(instance),
        Poll::Ready(Err(error)) => Err(GuestError::InvalidModule(format!(
            "instantiation: {error:#}"
        ))),
        Poll::Pending => Err(GuestError::NotQuiescent(
            "the module's start function did not complete at once".into(),
        )),
    }
}

/// The size of `memory` in 64 KiB pages.
fn memory_pages<T>(memory: &Memory, store: &Store<T>) -> Result<u32, GuestError> {
    u32::try_from(memory.size(store))
        .map_err(|_| GuestError::WrongState("a 64-bit memory cannot be checkpointed".into()))
}

fn capture_globals<T>(
    store: &mut Store<T>,
    instance: &Instance,
    names: &[String],
) -> Result<Vec<GlobalValue>, GuestError> {
    let mut globals = Vec::with_capacity(names.len());
    for name in names {
        if name.len() > GUEST_GLOBAL_NAME_BYTES_MAX {
            return Err(GuestError::WrongState(format!(
                "global export name of {} bytes exceeds the limit",
                name.len()
            )));
        }
        let global = instance
            .get_global(&mut *store, name)
            .ok_or_else(|| GuestError::WrongState(format!("exported global {name} not found")))?;
        let bits = match global.get(&mut *store) {
            Val::I32(value) => GlobalBits::I32(value as u32),
            Val::I64(value) => GlobalBits::I64(value as u64),
            Val::F32(bits) => GlobalBits::F32(bits),
            Val::F64(bits) => GlobalBits::F64(bits),
            Val::V128(value) => GlobalBits::V128(value.as_u128()),
            other => {
                return Err(GuestError::WrongState(format!(
                    "mutable global {name} holds a reference ({other:?}): not checkpointable"
                )))
            }
        };
        globals.push(GlobalValue {
            name: name.clone(),
            bits,
        });
    }
    Ok(globals)
}

fn restore_globals<T>(
    store: &mut Store<T>,
    instance: &Instance,
    names: &[String],
    values: &[GlobalValue],
) -> Result<(), GuestError> {
    let mismatch = |detail: String| GuestError::RestoreMismatch(detail);
    if values.len() != names.len()
        || values
            .iter()
            .zip(names)
            .any(|(value, name)| &value.name != name)
    {
        return Err(mismatch(format!(
            "the image has {} globals, the module exports {} mutable ones (or other names)",
            values.len(),
            names.len()
        )));
    }
    for value in values {
        let global = instance
            .get_global(&mut *store, &value.name)
            .ok_or_else(|| mismatch(format!("global {} not found", value.name)))?;
        let content = global.ty(&*store).content().clone();
        let val = match (value.bits, content) {
            (GlobalBits::I32(bits), ValType::I32) => Val::I32(bits as i32),
            (GlobalBits::I64(bits), ValType::I64) => Val::I64(bits as i64),
            (GlobalBits::F32(bits), ValType::F32) => Val::F32(bits),
            (GlobalBits::F64(bits), ValType::F64) => Val::F64(bits),
            (GlobalBits::V128(bits), ValType::V128) => Val::V128(V128::from(bits)),
            (bits, content) => {
                return Err(mismatch(format!(
                    "global {}: image has {bits:?}, module has {content}",
                    value.name
                )))
            }
        };
        global
            .set(&mut *store, val)
            .map_err(|error| mismatch(format!("global {}: {error:#}", value.name)))?;
    }
    Ok(())
}

/// Grows `memory` to the image's size (the limiter still applies) and writes it.
fn restore_memory<T>(
    store: &mut Store<T>,
    memory: &Memory,
    image: &[u8],
) -> Result<(), GuestError> {
    let image_pages = (image.len() / WASM_PAGE_BYTES) as u64;
    let current_pages = memory.size(&*store);
    if image_pages < current_pages {
        return Err(GuestError::RestoreMismatch(format!(
            "the image has {image_pages} memory pages, the module starts with {current_pages}"
        )));
    }
    memory
        .grow(&mut *store, image_pages - current_pages)
        .map_err(|error| {
            GuestError::RestoreMismatch(format!("growing memory to {image_pages} pages: {error:#}"))
        })?;
    memory.data_mut(&mut *store).copy_from_slice(image);
    Ok(())
}

/// Outputs kept by a checkpoint must be in increasing oseq order before
/// `next_oseq`, and within the checkpoint limits.
fn check_outputs(outputs: &[Output], next_oseq: Oseq) -> Result<(), GuestError> {
    let total_bytes: u64 = outputs.iter().map(|output| output.bytes.len() as u64).sum();
    if outputs.len() > GUEST_CHECKPOINT_OUTPUTS_MAX
        || total_bytes > GUEST_CHECKPOINT_OUTPUT_BYTES_MAX
    {
        return Err(GuestError::CheckpointInvalid(format!(
            "{} unreleased outputs of {total_bytes} bytes exceed the limits",
            outputs.len()
        )));
    }
    let in_order = outputs.windows(2).all(|pair| pair[0].oseq < pair[1].oseq);
    if !in_order || outputs.last().is_some_and(|last| last.oseq >= next_oseq) {
        return Err(GuestError::CheckpointInvalid(
            "unreleased outputs are not in oseq order before the next oseq".into(),
        ));
    }
    Ok(())
}
