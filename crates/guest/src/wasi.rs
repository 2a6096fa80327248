//! Our own WASI preview 1 imports. Every value the guest observes from outside goes
//! through the [`InputLog`]; every pointer and length is checked against the guest's
//! memory (a bad one is `EFAULT`, never a host panic).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use understudy_pair::{Oseq, Output, Stream};
use understudy_types::limits::{GUEST_IO_BYTES_MAX, GUEST_TABLE_ELEMENTS_MAX};
use wasmtime::{AsContextMut, Caller, Extern, Linker, Memory, ResourceLimiter, Val, ValType};

use crate::engine::{StateLayout, FUEL_TOTAL};
use crate::record::{InputLog, StdinRead, CLOCK_MONOTONIC};
use crate::unwind::{AsyncifyHandles, AsyncifyPhase, UnwindReason};
use crate::GuestError;

mod poll;

/// The WASI preview 1 import module.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
/// WASI `ENOSYS`: what an unsupported import returns.
pub const ERRNO_NOSYS: i32 = 52;
const ERRNO_SPIPE: i32 = 70;

const SUPPORTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "fd_read",
    "fd_write",
    "fd_close",
    "fd_fdstat_get",
    "fd_seek",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "poll_oneoff",
    "sched_yield",
    "proc_exit",
];

/// Whether the host implements import `module::name`.
pub(crate) fn is_supported(module: &str, name: &str) -> bool {
    module == WASI_MODULE && SUPPORTED.contains(&name)
}

/// Host state shared by the host functions (inside the store, which the running
/// call owns) and the [`crate::GuestInstance`] driver (between polls).
pub(crate) struct Shared<L> {
    pub(crate) inputs: L,
    pub(crate) outputs: Vec<Output>,
    pub(crate) next_oseq: Oseq,
    /// True while the guest's fiber waits in `fd_read(stdin)` for input: the
    /// parked state of a guest without Asyncify (one with Asyncify unwinds).
    pub(crate) parked_in_stdin: bool,
    /// Where an Asyncify-instrumented command stands in the unwind protocol.
    pub(crate) asyncify_phase: AsyncifyPhase,
    /// The host asked the next instrumented import to unwind.
    pub(crate) unwind_requested: bool,
    /// Added to the monotonic clock, so it never goes backwards across a failover.
    pub(crate) monotonic_offset_nanos: u64,
    /// The deadlines of the `poll_oneoff` under way (see `poll`): fixed by its
    /// first attempt, kept while it waits.
    pub(crate) pending_poll: Option<Vec<poll::Deadline>>,
    /// Set while the guest waits in `poll_oneoff`: nanoseconds left until its
    /// earliest deadline, as the last attempt found.
    pub(crate) sleep_nanos: Option<u64>,
    pub(crate) args: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
    pub(crate) closed: [bool; 3],
    /// Stdin bytes the guest has read so far (its cursor, kept in checkpoints).
    pub(crate) stdin_bytes_read: u64,
    /// Whether a read of the guest returned end of input.
    pub(crate) stdin_eof_read: bool,
    /// Set by `proc_exit`, or to 0 when a command returns from `_start`.
    pub(crate) exit_code: Option<i32>,
    /// Set when an input could not be served (divergence, end of the log).
    pub(crate) failure: Option<GuestError>,
    /// Why the runaway watch killed the guest (see `instance::runaway_watch`).
    pub(crate) kill_reason: Option<String>,
    /// A replay has set the guest's fuel to stop where a logged kill happened.
    pub(crate) kill_stop_set: bool,
}

impl<L: InputLog> Shared<L> {
    /// A logged reading of clock `clock_id` as the guest sees it: the
    /// monotonic clock carries the offset that keeps it from going backwards
    /// across a failover. A reading the log cannot serve fails the run.
    pub(crate) fn guest_clock(&mut self, clock_id: u32, fuel: u64) -> wasmtime::Result<u64> {
        match self.inputs.clock(clock_id, fuel) {
            Ok(nanos) if clock_id == CLOCK_MONOTONIC => {
                Ok(nanos.saturating_add(self.monotonic_offset_nanos))
            }
            Ok(nanos) => Ok(nanos),
            Err(error) => Err(fail(self, error)),
        }
    }

    /// `nanos` of clock `clock_id` in the guest's terms, as the input source
    /// reads that clock (the inverse of [`Self::guest_clock`]'s offset).
    pub(crate) fn source_nanos(&self, clock_id: u32, nanos: u64) -> u64 {
        if clock_id == CLOCK_MONOTONIC {
            nanos.saturating_sub(self.monotonic_offset_nanos)
        } else {
            nanos
        }
    }
}

/// The store's data.
pub(crate) struct HostState<L> {
    pub(crate) shared: Arc<Mutex<Shared<L>>>,
    pub(crate) limiter: MemoryLimiter,
    /// Export names of the module's state, among them Asyncify's.
    pub(crate) layout: Arc<StateLayout>,
}

/// Locks the shared state. A poisoned lock only means a host function panicked
/// mid-call, which already failed the run; the data stays consistent enough to read.
pub(crate) fn lock<L>(shared: &Mutex<Shared<L>>) -> MutexGuard<'_, Shared<L>> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Memory and table limits of one guest.
pub(crate) struct MemoryLimiter {
    pub(crate) memory_bytes_max: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.memory_bytes_max)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= GUEST_TABLE_ELEMENTS_MAX)
    }
}

/// A future that is pending once: parks the guest's fiber so the driver returns.
/// It does not wake the waker on purpose: the driver polls again when it wants the
/// guest to retry (new input arrived), never on its own.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        Poll::Pending
    }
}

type Errno = i32;
type HostCaller<'a, L> = Caller<'a, HostState<L>>;

fn memory<L>(caller: &mut HostCaller<'_, L>) -> Result<Memory, Errno> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(ERRNO_FAULT),
    }
}

fn range(data: &[u8], pointer: i32, length: usize) -> Result<std::ops::Range<usize>, Errno> {
    // Pointers are unsigned 32-bit offsets; the i32 is just how wasm passes them.
    let start = pointer as u32 as usize;
    let end = start.checked_add(length).ok_or(ERRNO_FAULT)?;
    if end > data.len() {
        return Err(ERRNO_FAULT);
    }
    Ok(start..end)
}

fn read_u32(data: &[u8], pointer: i32) -> Result<u32, Errno> {
    let bytes = &data[range(data, pointer, 4)?];
    // range() returned exactly 4 bytes.
    Ok(u32::from_le_bytes(bytes.try_into().unwrap_or_default()))
}

fn write_bytes(data: &mut [u8], pointer: i32, bytes: &[u8]) -> Result<(), Errno> {
    let range = range(data, pointer, bytes.len())?;
    data[range].copy_from_slice(bytes);
    Ok(())
}

/// The (pointer, length) pairs of an iovec array, capped at `GUEST_IO_BYTES_MAX`
/// bytes in total (a shorter read or write is allowed by WASI).
fn iovecs(data: &[u8], iovs: i32, count: i32) -> Result<Vec<(i32, usize)>, Errno> {
    let count = count as u32 as usize;
    range(data, iovs, count.checked_mul(8).ok_or(ERRNO_FAULT)?)?;
    let mut result = Vec::new();
    let mut total = 0usize;
    for index in 0..count {
        let entry = iovs.wrapping_add((index * 8) as i32);
        let pointer = read_u32(data, entry)? as i32;
        let length = read_u32(data, entry.wrapping_add(4))? as usize;
        let length = length.min(GUEST_IO_BYTES_MAX - total);
        range(data, pointer, length)?;
        result.push((pointer, length));
        total += length;
    }
    Ok(result)
}

fn fuel_consumed<L>(caller: &HostCaller<'_, L>) -> u64 {
    // get_fuel fails only when fuel metering is off; GuestEngine always turns it on.
    FUEL_TOTAL - caller.get_fuel().unwrap_or(FUEL_TOTAL)
}

/// On a replay whose next record is a logged kill, leaves the guest only the
/// fuel up to the kill's position, so it runs out exactly where the primary's
/// guest was killed (docs/pairs.md, "Kills"); the fuel count is then no longer
/// the guest's position, which nothing needs once the kill is the only record
/// left to replay. Called wherever a record may have been replayed: after each
/// import that takes one, at a call's start and after a rewind.
pub(crate) fn stop_at_logged_kill<L: InputLog + 'static>(
    mut context: impl AsContextMut<Data = HostState<L>>,
) -> wasmtime::Result<()> {
    let mut context = context.as_context_mut();
    let shared = context.data().shared.clone();
    let mut guard = lock(&shared);
    // An unwinding guest sets its fuel back when the unwind ends; the stop is
    // set when it rewinds.
    if guard.kill_stop_set || guard.asyncify_phase != AsyncifyPhase::Normal {
        return Ok(());
    }
    let Some(kill_fuel) = guard.inputs.next_kill_fuel() else {
        return Ok(());
    };
    guard.kill_stop_set = true;
    let consumed = FUEL_TOTAL - context.get_fuel()?;
    if consumed > kill_fuel {
        let detail = format!("guest at fuel {consumed}, past the logged kill at fuel {kill_fuel}");
        let lsn = guard.inputs.last_lsn().next().0;
        return Err(fail(&mut guard, GuestError::Divergence { lsn, detail }));
    }
    context.set_fuel(kill_fuel - consumed)
}

/// Turns a failed input into a trap, remembering the reason for the driver.
fn fail<L>(shared: &mut Shared<L>, error: GuestError) -> wasmtime::Error {
    let message = error.to_string();
    shared.failure = Some(error);
    wasmtime::Error::msg(message)
}

fn errno(result: Result<(), Errno>) -> i32 {
    result.err().unwrap_or(ERRNO_SUCCESS)
}

fn write_sizes<L>(
    caller: &mut HostCaller<'_, L>,
    entries: &[Vec<u8>],
    count_ptr: i32,
    size_ptr: i32,
) -> i32 {
    let count = entries.len() as u32;
    let size: usize = entries.iter().map(|entry| entry.len() + 1).sum();
    errno((|| {
        let memory = memory(caller)?;
        let data = memory.data_mut(caller);
        write_bytes(data, count_ptr, &count.to_le_bytes())?;
        write_bytes(data, size_ptr, &(size as u32).to_le_bytes())
    })())
}

fn write_strings<L>(
    caller: &mut HostCaller<'_, L>,
    entries: &[Vec<u8>],
    pointers: i32,
    buffer: i32,
) -> i32 {
    errno((|| {
        let memory = memory(caller)?;
        let data = memory.data_mut(caller);
        let mut cursor = buffer;
        for (index, entry) in entries.iter().enumerate() {
            write_bytes(
                data,
                pointers.wrapping_add(index as i32 * 4),
                &cursor.to_le_bytes(),
            )?;
            write_bytes(data, cursor, entry)?;
            write_bytes(data, cursor.wrapping_add(entry.len() as i32), &[0])?;
            cursor = cursor.wrapping_add(entry.len() as i32 + 1);
        }
        Ok(())
    })())
}

/// What an import Asyncify instruments does first: finish a rewind that reached
/// it (taking back the fuel the rewind burned, see `unwind.rs`), or start the
/// unwind the host asked for. `true`: an unwind started, so the import returns at
/// once with no effect (Asyncify discards its result).
fn asyncify_entry<L: InputLog + 'static>(caller: &mut HostCaller<'_, L>) -> wasmtime::Result<bool> {
    let shared = caller.data().shared.clone();
    let (phase, requested) = {
        let guard = lock(&shared);
        (guard.asyncify_phase, guard.unwind_requested)
    };
    match phase {
        AsyncifyPhase::Normal if !requested => Ok(false),
        AsyncifyPhase::Normal => {
            start_unwind(caller, UnwindReason::Requested)?;
            Ok(true)
        }
        AsyncifyPhase::Rewinding { fuel_consumed } => {
            let layout = caller.data().layout.clone();
            let asyncify = layout.asyncify.as_ref().ok_or_else(not_asyncified)?;
            AsyncifyHandles::of_caller(caller, asyncify)?.stop_rewind(&mut *caller)?;
            caller.set_fuel(FUEL_TOTAL - fuel_consumed)?;
            lock(&shared).asyncify_phase = AsyncifyPhase::Normal;
            stop_at_logged_kill(&mut *caller)?;
            Ok(false)
        }
        other => Err(wasmtime::Error::msg(format!(
            "an instrumented import was called while Asyncify is {other:?}"
        ))),
    }
}

fn not_asyncified() -> wasmtime::Error {
    wasmtime::Error::msg("the module is not instrumented with Asyncify")
}

/// Starts unwinding the guest from inside an instrumented import, noting the
/// fuel consumed so far: the rewound import will continue from it.
fn start_unwind<L>(caller: &mut HostCaller<'_, L>, reason: UnwindReason) -> wasmtime::Result<()> {
    let layout = caller.data().layout.clone();
    let asyncify = layout.asyncify.as_ref().ok_or_else(not_asyncified)?;
    let fuel_consumed = fuel_consumed(caller);
    AsyncifyHandles::of_caller(caller, asyncify)?.start_unwind(&mut *caller)?;
    let shared = caller.data().shared.clone();
    let mut guard = lock(&shared);
    guard.asyncify_phase = AsyncifyPhase::Unwinding {
        reason,
        fuel_consumed,
    };
    guard.unwind_requested = false;
    guard.parked_in_stdin = false;
    Ok(())
}

/// `fd_read`: a read with no input yet unwinds a guest with Asyncify, and parks
/// the fiber of one without (the next `run` retries the read either way).
async fn fd_read<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    params: (i32, i32, i32, i32),
) -> wasmtime::Result<i32> {
    if asyncify_entry(caller)? {
        return Ok(0);
    }
    loop {
        if let Some(code) = fd_read_once(caller, params)? {
            return Ok(code);
        }
        if park(caller, UnwindReason::Stdin).await? {
            return Ok(0);
        }
    }
}

/// Parks a guest whose import must wait: unwinds one with Asyncify (`true`:
/// the import returns at once, Asyncify discards its result) or suspends the
/// fiber of one without until the next `run` (`false`: the import tries again).
async fn park<L>(caller: &mut HostCaller<'_, L>, reason: UnwindReason) -> wasmtime::Result<bool> {
    if caller.data().layout.asyncify.is_some() {
        start_unwind(caller, reason)?;
        return Ok(true);
    }
    YieldOnce(false).await;
    Ok(false)
}

/// One attempt of `fd_read`: `Ok(None)` when no input is available yet.
fn fd_read_once<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    (fd, iovs, iovs_len, nread_ptr): (i32, i32, i32, i32),
) -> wasmtime::Result<Option<i32>> {
    let shared = caller.data().shared.clone();
    if fd != 0 || lock(&shared).closed[0] {
        return Ok(Some(ERRNO_BADF));
    }
    let memory = match memory(caller) {
        Ok(memory) => memory,
        Err(code) => return Ok(Some(code)),
    };
    let targets = match iovecs(memory.data(&*caller), iovs, iovs_len)
        .and_then(|targets| range(memory.data(&*caller), nread_ptr, 4).map(|_| targets))
    {
        Ok(targets) => targets,
        Err(code) => return Ok(Some(code)),
    };
    let max: usize = targets.iter().map(|(_, length)| length).sum();
    if max == 0 {
        // A zero-length read observes nothing: answer without asking for input.
        return Ok(Some(errno(write_bytes(
            memory.data_mut(&mut *caller),
            nread_ptr,
            &[0; 4],
        ))));
    }
    let fuel = fuel_consumed(caller);
    let read = {
        let mut guard = lock(&shared);
        guard.parked_in_stdin = false;
        let read = match guard.inputs.read_stdin(max, fuel) {
            Ok(StdinRead::Pending) => {
                guard.parked_in_stdin = true;
                return Ok(None);
            }
            Ok(read) => read,
            Err(error) => return Err(fail(&mut guard, error)),
        };
        match &read {
            StdinRead::Data(bytes) => guard.stdin_bytes_read += bytes.len() as u64,
            _ => guard.stdin_eof_read = true,
        }
        read
    };
    let bytes = match read {
        StdinRead::Data(bytes) => bytes,
        _ => Bytes::new(),
    };
    let data = memory.data_mut(&mut *caller);
    let mut rest: &[u8] = &bytes;
    for (pointer, length) in targets {
        let take = length.min(rest.len());
        // Checked by iovecs() above; memory cannot shrink in between.
        write_bytes(data, pointer, &rest[..take])
            .map_err(|_| wasmtime::Error::msg("iovec moved"))?;
        rest = &rest[take..];
    }
    let nread = bytes.len() as u32;
    Ok(Some(errno(write_bytes(
        data,
        nread_ptr,
        &nread.to_le_bytes(),
    ))))
}

fn fd_write<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    fd: i32,
    iovs: i32,
    count: i32,
    written_ptr: i32,
) -> i32 {
    let shared = caller.data().shared.clone();
    let stream = match fd {
        1 => Stream::Stdout,
        2 => Stream::Stderr,
        _ => return ERRNO_BADF,
    };
    if lock(&shared).closed[fd as usize] {
        return ERRNO_BADF;
    }
    errno((|| {
        let memory = memory(caller)?;
        let data = memory.data_mut(caller);
        let mut bytes = Vec::new();
        for (pointer, length) in iovecs(data, iovs, count)? {
            bytes.extend_from_slice(&data[range(data, pointer, length)?]);
        }
        write_bytes(data, written_ptr, &(bytes.len() as u32).to_le_bytes())?;
        if !bytes.is_empty() {
            let mut guard = lock(&shared);
            let oseq = guard.next_oseq;
            guard.next_oseq = Oseq(oseq.0 + 1);
            let depends_on = guard.inputs.last_lsn();
            let output = Output {
                oseq,
                stream,
                bytes: Bytes::from(bytes),
                depends_on,
            };
            guard.outputs.push(output);
        }
        Ok(())
    })())
}

fn fd_fdstat_get<L>(caller: &mut HostCaller<'_, L>, fd: i32, pointer: i32) -> i32 {
    const FILETYPE_CHARACTER_DEVICE: u8 = 2;
    const RIGHT_FD_READ: u64 = 1 << 1;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    let rights = match fd {
        0 => RIGHT_FD_READ,
        1 | 2 => RIGHT_FD_WRITE,
        _ => return ERRNO_BADF,
    };
    if lock(&caller.data().shared.clone()).closed[fd as usize] {
        return ERRNO_BADF;
    }
    let mut stat = [0u8; 24];
    stat[0] = FILETYPE_CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    errno(memory(caller).and_then(|memory| write_bytes(memory.data_mut(caller), pointer, &stat)))
}

fn clock_time_get<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    clock_id: i32,
    time_ptr: i32,
) -> wasmtime::Result<i32> {
    if !(0..=3).contains(&clock_id) {
        return Ok(ERRNO_INVAL);
    }
    let memory = match memory(caller) {
        Ok(memory) => memory,
        Err(code) => return Ok(code),
    };
    if let Err(code) = range(memory.data(&*caller), time_ptr, 8) {
        return Ok(code);
    }
    let fuel = fuel_consumed(caller);
    let shared = caller.data().shared.clone();
    let nanos = lock(&shared).guest_clock(clock_id as u32, fuel)?;
    Ok(errno(write_bytes(
        memory.data_mut(caller),
        time_ptr,
        &nanos.to_le_bytes(),
    )))
}

fn random_get<L: InputLog>(
    caller: &mut HostCaller<'_, L>,
    buffer: i32,
    length: i32,
) -> wasmtime::Result<i32> {
    let memory = match memory(caller) {
        Ok(memory) => memory,
        Err(code) => return Ok(code),
    };
    let length = length as u32 as usize;
    if let Err(code) = range(memory.data(&*caller), buffer, length) {
        return Ok(code);
    }
    let shared = caller.data().shared.clone();
    let mut offset = 0;
    // Served in slices of at most GUEST_IO_BYTES_MAX so no record grows past it.
    while offset < length {
        let slice = (length - offset).min(GUEST_IO_BYTES_MAX);
        let fuel = fuel_consumed(caller);
        let bytes = {
            let mut guard = lock(&shared);
            match guard.inputs.random(slice, fuel) {
                Ok(bytes) => bytes,
                Err(error) => return Err(fail(&mut guard, error)),
            }
        };
        let pointer = buffer.wrapping_add(offset as i32);
        if let Err(code) = write_bytes(memory.data_mut(&mut *caller), pointer, &bytes) {
            return Ok(code);
        }
        offset += slice;
    }
    Ok(ERRNO_SUCCESS)
}

fn proc_exit<L>(caller: &mut HostCaller<'_, L>, code: i32) -> wasmtime::Error {
    lock(&caller.data().shared.clone()).exit_code = Some(code);
    wasmtime::Error::msg(format!("proc_exit({code})"))
}

/// Defines every supported import in `linker`.
pub(crate) fn define<L: InputLog + 'static>(
    linker: &mut Linker<HostState<L>>,
) -> wasmtime::Result<()> {
    define_birth(linker)?;
    define_fds(linker)?;
    define_process(linker)
}

/// Arguments and environment: fixed at birth.
fn define_birth<L: InputLog + 'static>(linker: &mut Linker<HostState<L>>) -> wasmtime::Result<()> {
    let m = WASI_MODULE;
    linker.func_wrap(
        m,
        "args_get",
        |mut caller: HostCaller<'_, L>, pointers: i32, buffer: i32| {
            let args = lock(&caller.data().shared.clone()).args.clone();
            write_strings(&mut caller, &args, pointers, buffer)
        },
    )?;
    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut caller: HostCaller<'_, L>, count: i32, size: i32| {
            let args = lock(&caller.data().shared.clone()).args.clone();
            write_sizes(&mut caller, &args, count, size)
        },
    )?;
    linker.func_wrap(
        m,
        "environ_get",
        |mut caller: HostCaller<'_, L>, pointers: i32, buffer: i32| {
            let env = lock(&caller.data().shared.clone()).env.clone();
            write_strings(&mut caller, &env, pointers, buffer)
        },
    )?;
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut caller: HostCaller<'_, L>, count: i32, size: i32| {
            let env = lock(&caller.data().shared.clone()).env.clone();
            write_sizes(&mut caller, &env, count, size)
        },
    )?;
    Ok(())
}

/// The standard streams; no other descriptor exists (no preopens).
fn define_fds<L: InputLog + 'static>(linker: &mut Linker<HostState<L>>) -> wasmtime::Result<()> {
    let m = WASI_MODULE;
    linker.func_wrap_async(
        m,
        "fd_read",
        |mut caller: HostCaller<'_, L>, params: (i32, i32, i32, i32)| {
            Box::new(async move {
                let code = fd_read(&mut caller, params).await?;
                stop_at_logged_kill(&mut caller)?;
                Ok(code)
            })
        },
    )?;
    linker.func_wrap(
        m,
        "fd_write",
        |mut caller: HostCaller<'_, L>,
         fd: i32,
         iovs: i32,
         count: i32,
         written: i32|
         -> wasmtime::Result<i32> {
            if asyncify_entry(&mut caller)? {
                return Ok(0);
            }
            Ok(fd_write(&mut caller, fd, iovs, count, written))
        },
    )?;
    linker.func_wrap(m, "fd_close", |caller: HostCaller<'_, L>, fd: i32| {
        if !(0..=2).contains(&fd) {
            return ERRNO_BADF;
        }
        let shared = caller.data().shared.clone();
        let mut guard = lock(&shared);
        if guard.closed[fd as usize] {
            return ERRNO_BADF;
        }
        guard.closed[fd as usize] = true;
        ERRNO_SUCCESS
    })?;
    linker.func_wrap(
        m,
        "fd_fdstat_get",
        |mut caller: HostCaller<'_, L>, fd: i32, pointer: i32| {
            fd_fdstat_get(&mut caller, fd, pointer)
        },
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_: HostCaller<'_, L>, fd: i32, _offset: i64, _whence: i32, _new: i32| {
            if (0..=2).contains(&fd) {
                ERRNO_SPIPE
            } else {
                ERRNO_BADF
            }
        },
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_get",
        |_: HostCaller<'_, L>, _fd: i32, _pointer: i32| ERRNO_BADF,
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: HostCaller<'_, L>, _fd: i32, _pointer: i32, _length: i32| ERRNO_BADF,
    )?;
    Ok(())
}

/// Clocks, randomness, polling and exit.
fn define_process<L: InputLog + 'static>(
    linker: &mut Linker<HostState<L>>,
) -> wasmtime::Result<()> {
    let m = WASI_MODULE;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut caller: HostCaller<'_, L>, id: i32, _precision: i64, time: i32| {
            if asyncify_entry(&mut caller)? {
                return Ok(0);
            }
            let code = clock_time_get(&mut caller, id, time)?;
            stop_at_logged_kill(&mut caller)?;
            Ok(code)
        },
    )?;
    linker.func_wrap(
        m,
        "clock_res_get",
        |mut caller: HostCaller<'_, L>, id: i32, resolution: i32| {
            if !(0..=3).contains(&id) {
                return ERRNO_INVAL;
            }
            // A constant: the resolution is not an observation of the outside.
            errno(memory(&mut caller).and_then(|memory| {
                write_bytes(
                    memory.data_mut(&mut caller),
                    resolution,
                    &1u64.to_le_bytes(),
                )
            }))
        },
    )?;
    linker.func_wrap(
        m,
        "random_get",
        |mut caller: HostCaller<'_, L>, buffer: i32, length: i32| {
            if asyncify_entry(&mut caller)? {
                return Ok(0);
            }
            let code = random_get(&mut caller, buffer, length)?;
            stop_at_logged_kill(&mut caller)?;
            Ok(code)
        },
    )?;
    linker.func_wrap_async(
        m,
        "poll_oneoff",
        |mut caller: HostCaller<'_, L>, params: (i32, i32, i32, i32)| {
            Box::new(async move {
                let code = poll::poll_oneoff(&mut caller, params).await?;
                stop_at_logged_kill(&mut caller)?;
                Ok(code)
            })
        },
    )?;
    linker.func_wrap(m, "sched_yield", |mut caller: HostCaller<'_, L>| {
        // Unwinding or not, the answer is success (an unwinding guest discards it).
        asyncify_entry(&mut caller).map(|_| ERRNO_SUCCESS)
    })?;
    linker.func_wrap(
        m,
        "proc_exit",
        |mut caller: HostCaller<'_, L>, code: i32| -> wasmtime::Result<()> {
            Err(proc_exit(&mut caller, code))
        },
    )?;
    Ok(())
}

/// Links every import of `module` the host does not implement to a stub that
/// returns `ENOSYS` (its other results zero).
pub(crate) fn define_stubs<L: 'static>(
    linker: &mut Linker<HostState<L>>,
    module: &wasmtime::Module,
) -> wasmtime::Result<()> {
    for import in module.imports() {
        let wasmtime::ExternType::Func(ty) = import.ty() else {
            continue;
        };
        if is_supported(import.module(), import.name()) {
            continue;
        }
        let result_types: Vec<ValType> = ty.results().collect();
        linker.func_new(
            import.module(),
            import.name(),
            ty.clone(),
            move |_caller, _params, results| {
                for (index, (result, result_type)) in
                    results.iter_mut().zip(&result_types).enumerate()
                {
                    *result = match (index, result_type) {
                        (0, ValType::I32) => Val::I32(ERRNO_NOSYS),
                        (_, result_type) => Val::default_for_ty(result_type).unwrap_or(Val::I32(0)),
                    };
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}
