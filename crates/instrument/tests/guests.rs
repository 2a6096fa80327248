//! The example guests (C, built by `guests/build.sh`): each comes out
//! checkpointable and instantiates, and the running-total command, unwound at any
//! of its instrumented host calls and restored into a fresh instance, prints
//! exactly what an uninterrupted run prints.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use understudy_instrument::{
    instrument, GlobalValueType, Instrumented, RecoveryMode, ASYNCIFY_DATA_ADDRESS,
    ASYNCIFY_MEMORY_BYTES, ASYNCIFY_STACK_START,
};
use wasmtime::{Caller, Engine, Extern, Instance, Linker, Memory, Module, Store, Val};

fn guest_bytes(name: &str) -> Result<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

const ASYNCIFY_FUNCTIONS: [&str; 5] = [
    "asyncify_start_unwind",
    "asyncify_stop_unwind",
    "asyncify_start_rewind",
    "asyncify_stop_rewind",
    "asyncify_get_state",
];

#[test]
fn each_example_guest_is_checkpointed_and_instantiates() -> Result<()> {
    let engine = Engine::default();
    for (name, command) in [
        ("running-total", true),
        ("cpu-heavy", true),
        ("reactor-total", false),
    ] {
        let instrumented = instrument(&guest_bytes(name)?)?;
        ensure!(
            instrumented.recovery_mode == RecoveryMode::Checkpoint,
            "{name}: {:?}",
            instrumented.replay_reason
        );
        ensure!(instrumented.asyncify == command, "{name}");
        let module = Module::new(&engine, &instrumented.bytes)?;
        let mut linker = Linker::new(&engine);
        linker.define_unknown_imports_as_traps(&module)?;
        let mut store = Store::new(&engine, ());
        let instance = linker.instantiate(&mut store, &module)?;
        let memory_name = instrumented.memory_export.as_deref().context("memory")?;
        ensure!(
            instance.get_memory(&mut store, memory_name).is_some(),
            "{name}"
        );
        // C guests keep their stack pointer in a mutable global.
        ensure!(!instrumented.globals.is_empty(), "{name}");
        for global in &instrumented.globals {
            let exported = instance
                .get_global(&mut store, &global.name)
                .with_context(|| format!("{name}: global {}", global.name))?;
            let type_matches = matches!(
                (exported.ty(&store).content(), global.value_type),
                (wasmtime::ValType::I32, GlobalValueType::I32)
                    | (wasmtime::ValType::I64, GlobalValueType::I64)
                    | (wasmtime::ValType::F32, GlobalValueType::F32)
                    | (wasmtime::ValType::F64, GlobalValueType::F64)
                    | (wasmtime::ValType::V128, GlobalValueType::V128)
            );
            ensure!(type_matches, "{name}: {global:?}");
        }
        for function in ASYNCIFY_FUNCTIONS {
            let present = instance.get_func(&mut store, function).is_some();
            ensure!(present == command, "{name}: {function} present={present}");
        }
        if command {
            let asyncify_name = instrumented
                .asyncify_memory_export
                .as_deref()
                .context("asyncify")?;
            let asyncify_memory = instance
                .get_memory(&mut store, asyncify_name)
                .context("asyncify memory")?;
            ensure!(asyncify_memory.data_size(&store) == ASYNCIFY_MEMORY_BYTES as usize);
        }
    }
    Ok(())
}

#[test]
fn instrumenting_the_same_module_twice_gives_the_same_bytes() -> Result<()> {
    for name in ["running-total", "reactor-total"] {
        let input = guest_bytes(name)?;
        let first = instrument(&input)?;
        let second = instrument(&input)?;
        ensure!(first == second, "{name} differs between runs");
    }
    Ok(())
}

/// Standard input the running-total guest reads.
const STDIN: &[u8] = b"5\n12\nnot a number\n-3\n40\n";

/// A minimal WASI preview 1 host for running-total, deterministic, that can
/// unwind the guest at its n-th instrumented host call.
#[derive(Clone, Debug, Default)]
struct Wasi {
    memory_export: String,
    stdin_cursor: usize,
    stdout: Vec<u8>,
    instrumented_calls: usize,
    unwind_at_call: Option<usize>,
    unwound: bool,
    rewinds_seen: usize,
}

/// `proc_exit`, carried out of the guest as an error.
#[derive(Debug)]
struct Exit(i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

fn guest_call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
    caller: &mut Caller<'_, Wasi>,
    name: &str,
    params: P,
) -> Result<R> {
    let function = caller
        .get_export(name)
        .and_then(Extern::into_func)
        .with_context(|| format!("no export {name}"))?;
    function.typed::<P, R>(&*caller)?.call(&mut *caller, params)
}

/// Start of every instrumented import. `true`: the guest is unwinding, return
/// at once without any effect.
fn unwind_or_resume(caller: &mut Caller<'_, Wasi>) -> Result<bool> {
    let state: i32 = guest_call(caller, "asyncify_get_state", ())?;
    if state == 2 {
        guest_call::<(), ()>(caller, "asyncify_stop_rewind", ())?;
        caller.data_mut().rewinds_seen += 1;
        return Ok(false);
    }
    let wasi = caller.data();
    if wasi.unwind_at_call == Some(wasi.instrumented_calls) && !wasi.unwound {
        let memory = caller
            .get_export(understudy_instrument::ASYNCIFY_MEMORY_EXPORT)
            .and_then(Extern::into_memory)
            .context("asyncify memory")?;
        let mut data = ASYNCIFY_STACK_START.to_le_bytes().to_vec();
        data.extend_from_slice(&ASYNCIFY_MEMORY_BYTES.to_le_bytes());
        memory.write(&mut *caller, ASYNCIFY_DATA_ADDRESS as usize, &data)?;
        guest_call::<i32, ()>(
            caller,
            "asyncify_start_unwind",
            ASYNCIFY_DATA_ADDRESS as i32,
        )?;
        caller.data_mut().unwound = true;
        return Ok(true);
    }
    caller.data_mut().instrumented_calls += 1;
    Ok(false)
}

fn memory(caller: &mut Caller<'_, Wasi>) -> Result<Memory> {
    let name = caller.data().memory_export.clone();
    caller
        .get_export(&name)
        .and_then(Extern::into_memory)
        .context("guest memory")
}

fn read_u32(caller: &mut Caller<'_, Wasi>, memory: Memory, address: i32) -> Result<u32> {
    let mut bytes = [0u8; 4];
    memory.read(&*caller, address as u32 as usize, &mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn write_bytes(caller: &mut Caller<'_, Wasi>, address: i32, bytes: &[u8]) -> Result<()> {
    let memory = memory(caller)?;
    memory.write(&mut *caller, address as u32 as usize, bytes)?;
    Ok(())
}

fn fd_read(mut caller: Caller<'_, Wasi>, iovecs: i32, count: i32, read_out: i32) -> Result<i32> {
    if unwind_or_resume(&mut caller)? {
        return Ok(0);
    }
    let memory = memory(&mut caller)?;
    let mut total = 0u32;
    for index in 0..count {
        let buffer = read_u32(&mut caller, memory, iovecs + index * 8)?;
        let length = read_u32(&mut caller, memory, iovecs + index * 8 + 4)? as usize;
        let cursor = caller.data().stdin_cursor;
        let chunk = STDIN[cursor..]
            .iter()
            .take(length)
            .copied()
            .collect::<Vec<_>>();
        memory.write(&mut caller, buffer as usize, &chunk)?;
        caller.data_mut().stdin_cursor += chunk.len();
        total += chunk.len() as u32;
    }
    write_bytes(&mut caller, read_out, &total.to_le_bytes())?;
    Ok(0)
}

fn fd_write(
    mut caller: Caller<'_, Wasi>,
    iovecs: i32,
    count: i32,
    written_out: i32,
) -> Result<i32> {
    if unwind_or_resume(&mut caller)? {
        return Ok(0);
    }
    let memory = memory(&mut caller)?;
    let mut total = 0u32;
    for index in 0..count {
        let buffer = read_u32(&mut caller, memory, iovecs + index * 8)?;
        let length = read_u32(&mut caller, memory, iovecs + index * 8 + 4)?;
        let mut bytes = vec![0u8; length as usize];
        memory.read(&caller, buffer as usize, &mut bytes)?;
        caller.data_mut().stdout.extend_from_slice(&bytes);
        total += length;
    }
    write_bytes(&mut caller, written_out, &total.to_le_bytes())?;
    Ok(0)
}

fn wasi_linker(engine: &Engine) -> Result<Linker<Wasi>> {
    const WASI: &str = "wasi_snapshot_preview1";
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        WASI,
        "fd_read",
        |caller: Caller<'_, Wasi>, _fd: i32, iovecs: i32, count: i32, out: i32| {
            fd_read(caller, iovecs, count, out)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |caller: Caller<'_, Wasi>, _fd: i32, iovecs: i32, count: i32, out: i32| {
            fd_write(caller, iovecs, count, out)
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, Wasi>, _id: i32, _precision: i64, out: i32| -> Result<i32> {
            if unwind_or_resume(&mut caller)? {
                return Ok(0);
            }
            write_bytes(
                &mut caller,
                out,
                &1_700_000_000_123_456_789u64.to_le_bytes(),
            )?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, Wasi>, buffer: i32, length: i32| -> Result<i32> {
            if unwind_or_resume(&mut caller)? {
                return Ok(0);
            }
            let bytes = (0..length)
                .map(|index| (index * 37 + 11) as u8)
                .collect::<Vec<_>>();
            write_bytes(&mut caller, buffer, &bytes)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut caller: Caller<'_, Wasi>, _fd: i32, out: i32| -> Result<i32> {
            // A character device with every right: stdio then line-buffers.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..24].fill(0xff);
            write_bytes(&mut caller, out, &stat)?;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, Wasi>, _: i32, _: i64, _: i32, _: i32| -> i32 {
            70 // ESPIPE
        },
    )?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, Wasi>, _: i32| -> i32 { 0 })?;
    linker.func_wrap(
        WASI,
        "proc_exit",
        |_: Caller<'_, Wasi>, code: i32| -> Result<()> { Err(Exit(code).into()) },
    )?;
    Ok(linker)
}

/// Calls `_start`: `Some(code)` when the guest exited, `None` when it returned
/// (which an instrumented guest also does when it unwinds).
fn start(store: &mut Store<Wasi>, instance: &Instance) -> Result<Option<i32>> {
    let result = instance
        .get_typed_func::<(), ()>(&mut *store, "_start")?
        .call(&mut *store, ());
    match result {
        Ok(()) => Ok(None),
        Err(error) => match error.downcast_ref::<Exit>() {
            Some(Exit(code)) => Ok(Some(*code)),
            None => Err(error),
        },
    }
}

/// wasi-libc's `_start` returns when `main` returns 0, and exits otherwise.
fn exited_cleanly(outcome: Option<i32>) -> bool {
    matches!(outcome, None | Some(0))
}

/// Memories, globals and host state of a quiescent guest.
struct Checkpoint {
    memories: Vec<(String, Vec<u8>)>,
    globals: Vec<(String, Val)>,
    wasi: Wasi,
}

fn capture(
    store: &mut Store<Wasi>,
    instance: &Instance,
    instrumented: &Instrumented,
) -> Result<Checkpoint> {
    let mut memories = Vec::new();
    for name in [
        &instrumented.memory_export,
        &instrumented.asyncify_memory_export,
    ] {
        let name = name.clone().context("memory export")?;
        let memory = instance.get_memory(&mut *store, &name).context("memory")?;
        memories.push((name, memory.data(&*store).to_vec()));
    }
    let mut globals = Vec::new();
    for global in &instrumented.globals {
        let exported = instance
            .get_global(&mut *store, &global.name)
            .context("global")?;
        globals.push((global.name.clone(), exported.get(&mut *store)));
    }
    Ok(Checkpoint {
        memories,
        globals,
        wasi: store.data().clone(),
    })
}

fn restore(store: &mut Store<Wasi>, instance: &Instance, checkpoint: &Checkpoint) -> Result<()> {
    for (name, bytes) in &checkpoint.memories {
        let memory = instance.get_memory(&mut *store, name).context("memory")?;
        let missing_bytes = bytes.len() - memory.data_size(&*store);
        if missing_bytes > 0 {
            memory.grow(&mut *store, (missing_bytes / 65536) as u64)?;
        }
        memory.write(&mut *store, 0, bytes)?;
    }
    for (name, value) in &checkpoint.globals {
        let global = instance.get_global(&mut *store, name).context("global")?;
        global.set(&mut *store, *value)?;
    }
    let wasi = store.data_mut();
    *wasi = checkpoint.wasi.clone();
    // The fresh instance does not unwind again.
    wasi.unwind_at_call = None;
    Ok(())
}

#[test]
fn running_total_unwound_at_every_host_call_resumes_identically_elsewhere() -> Result<()> {
    let instrumented = instrument(&guest_bytes("running-total")?)?;
    let engine = Engine::default();
    let module = Module::new(&engine, &instrumented.bytes)?;
    let linker = wasi_linker(&engine)?;
    let fresh_wasi = Wasi {
        memory_export: instrumented.memory_export.clone().context("memory")?,
        ..Wasi::default()
    };

    let mut store = Store::new(&engine, fresh_wasi.clone());
    let instance = linker.instantiate(&mut store, &module)?;
    ensure!(exited_cleanly(start(&mut store, &instance)?));
    let expected_stdout = store.data().stdout.clone();
    let total_calls = store.data().instrumented_calls;
    let text = String::from_utf8_lossy(&expected_stdout);
    ensure!(text.contains("done: 4 numbers, total 54"), "{text}");
    ensure!(total_calls >= 8, "only {total_calls} instrumented calls");

    for unwind_at_call in 0..total_calls {
        let wasi = Wasi {
            unwind_at_call: Some(unwind_at_call),
            ..fresh_wasi.clone()
        };
        let mut store = Store::new(&engine, wasi);
        let instance = linker.instantiate(&mut store, &module)?;
        if start(&mut store, &instance)?.is_some() || !store.data().unwound {
            bail!("finished instead of unwinding at call {unwind_at_call}");
        }
        instance
            .get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")?
            .call(&mut store, ())?;
        let checkpoint = capture(&mut store, &instance, &instrumented)?;
        drop(store);

        let mut store = Store::new(&engine, fresh_wasi.clone());
        let instance = linker.instantiate(&mut store, &module)?;
        restore(&mut store, &instance, &checkpoint)?;
        instance
            .get_typed_func::<i32, ()>(&mut store, "asyncify_start_rewind")?
            .call(&mut store, ASYNCIFY_DATA_ADDRESS as i32)?;
        let outcome = start(&mut store, &instance)?;
        ensure!(
            exited_cleanly(outcome),
            "call {unwind_at_call}: {outcome:?}"
        );
        ensure!(store.data().rewinds_seen == 1, "call {unwind_at_call}");
        ensure!(
            store.data().stdout == expected_stdout,
            "unwound at call {unwind_at_call}: {:?}",
            String::from_utf8_lossy(&store.data().stdout)
        );
    }
    Ok(())
}
