//! The unwind/rewind protocol of the crate docs, end to end in wasmtime: a command
//! is unwound inside an instrumented import, its state is copied into a fresh
//! instance, rewound there, and finishes exactly as an uninterrupted run does.

use anyhow::{ensure, Context, Result};
use understudy_instrument::{
    instrument, Instrumented, RecoveryMode, ASYNCIFY_DATA_ADDRESS, ASYNCIFY_MEMORY_BYTES,
    ASYNCIFY_STACK_START,
};
use wasmtime::{Caller, Engine, Extern, Instance, Linker, Module, Store, Val};

/// A command whose state lives in non-exported globals, a non-exported memory and
/// locals that are live across the import call, so a restore that missed any of
/// them would change the result.
const COMMAND: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $read (param i32 i32 i32 i32) (result i32)))
  (memory 1)
  (global $total (mut i32) (i32.const 0))
  (global $steps (mut i64) (i64.const 0))
  (global $scale (mut f64) (f64.const 1.5))
  (func $step (param $i i32)
    (local $before i32)
    (local.set $before
      (i32.add (i32.mul (global.get $total) (i32.const 31)) (local.get $i)))
    (global.set $total
      (i32.add (local.get $before)
        (call $read (local.get $i) (i32.const 0) (i32.const 0) (i32.const 0))))
    (i32.store offset=16 (i32.shl (local.get $i) (i32.const 2)) (global.get $total))
    (global.set $scale (f64.mul (global.get $scale) (f64.const 1.25)))
    (global.set $steps (i64.add (global.get $steps) (i64.const 1))))
  (func (export "_start")
    (local $i i32)
    (loop $next
      (call $step (local.get $i))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 6)))))
  (func (export "total") (result i32) (global.get $total)))
"#;

/// What the host's `fd_read` answers, call by call (plus the argument).
const ANSWERS: [i32; 6] = [7, 11, 13, 17, 19, 23];

/// Host state: which answers were given, and where to unwind.
#[derive(Clone, Debug, Default)]
struct Host {
    calls_answered: usize,
    /// Unwind at the import call with this number (0-based), once.
    unwind_at_call: Option<usize>,
    unwound: bool,
    rewinds_seen: usize,
}

fn call_export<Params, Results>(
    caller: &mut Caller<'_, Host>,
    name: &str,
    params: Params,
) -> Result<Results>
where
    Params: wasmtime::WasmParams,
    Results: wasmtime::WasmResults,
{
    let function = caller
        .get_export(name)
        .and_then(Extern::into_func)
        .with_context(|| format!("guest does not export {name}"))?;
    function
        .typed::<Params, Results>(&*caller)?
        .call(&mut *caller, params)
}

/// The instrumented `fd_read`: rewinding, unwinding, or answering.
fn fd_read(mut caller: Caller<'_, Host>, argument: i32) -> Result<i32> {
    let state: i32 = call_export(&mut caller, "asyncify_get_state", ())?;
    if state == 2 {
        call_export::<(), ()>(&mut caller, "asyncify_stop_rewind", ())?;
        caller.data_mut().rewinds_seen += 1;
    } else {
        ensure!(state == 0, "import called while unwinding");
        let host = caller.data();
        if host.unwind_at_call == Some(host.calls_answered) && !host.unwound {
            let memory = caller
                .get_export(understudy_instrument::ASYNCIFY_MEMORY_EXPORT)
                .and_then(Extern::into_memory)
                .context("no Asyncify memory export")?;
            let mut data = ASYNCIFY_STACK_START.to_le_bytes().to_vec();
            data.extend_from_slice(&ASYNCIFY_MEMORY_BYTES.to_le_bytes());
            memory.write(&mut caller, ASYNCIFY_DATA_ADDRESS as usize, &data)?;
            call_export::<i32, ()>(
                &mut caller,
                "asyncify_start_unwind",
                ASYNCIFY_DATA_ADDRESS as i32,
            )?;
            caller.data_mut().unwound = true;
            // Discarded by the unwinding guest.
            return Ok(0);
        }
    }
    let host = caller.data_mut();
    let answer = ANSWERS[host.calls_answered] + argument;
    host.calls_answered += 1;
    Ok(answer)
}

fn instantiate(engine: &Engine, module: &Module, host: Host) -> Result<(Store<Host>, Instance)> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_read",
        |caller: Caller<'_, Host>, argument: i32, _: i32, _: i32, _: i32| fd_read(caller, argument),
    )?;
    let mut store = Store::new(engine, host);
    let instance = linker.instantiate(&mut store, module)?;
    Ok((store, instance))
}

fn call_start(store: &mut Store<Host>, instance: &Instance) -> Result<()> {
    instance
        .get_typed_func::<(), ()>(&mut *store, "_start")?
        .call(&mut *store, ())
}

fn asyncify_state(store: &mut Store<Host>, instance: &Instance) -> Result<i32> {
    instance
        .get_typed_func::<(), i32>(&mut *store, "asyncify_get_state")?
        .call(&mut *store, ())
}

/// Everything a checkpoint holds: both memories, every mutable global, host state.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    memory: Vec<u8>,
    asyncify_memory: Vec<u8>,
    globals: Vec<(String, u128)>,
    host: HostCounters,
}

#[derive(Clone, Debug, PartialEq)]
struct HostCounters {
    calls_answered: usize,
}

fn value_bits(value: &Val) -> Result<u128> {
    Ok(match value {
        Val::I32(value) => *value as u32 as u128,
        Val::I64(value) => *value as u64 as u128,
        Val::F32(bits) => u128::from(*bits),
        Val::F64(bits) => u128::from(*bits),
        Val::V128(bits) => bits.as_u128(),
        other => anyhow::bail!("unexpected global value {other:?}"),
    })
}

fn snapshot(
    store: &mut Store<Host>,
    instance: &Instance,
    instrumented: &Instrumented,
) -> Result<Snapshot> {
    let memory_name = instrumented
        .memory_export
        .as_deref()
        .context("no memory export")?;
    let asyncify_name = instrumented
        .asyncify_memory_export
        .as_deref()
        .context("no asyncify memory")?;
    let memory = instance
        .get_memory(&mut *store, memory_name)
        .context("memory")?;
    let asyncify_memory = instance
        .get_memory(&mut *store, asyncify_name)
        .context("asyncify memory")?;
    let mut globals = Vec::new();
    for global in &instrumented.globals {
        let exported = instance
            .get_global(&mut *store, &global.name)
            .context("global")?;
        let value = exported.get(&mut *store);
        globals.push((global.name.clone(), value_bits(&value)?));
    }
    Ok(Snapshot {
        memory: memory.data(&*store).to_vec(),
        asyncify_memory: asyncify_memory.data(&*store).to_vec(),
        globals,
        host: HostCounters {
            calls_answered: store.data().calls_answered,
        },
    })
}

fn restore(
    store: &mut Store<Host>,
    instance: &Instance,
    instrumented: &Instrumented,
    snapshot: &Snapshot,
) -> Result<()> {
    let pairs = [
        (instrumented.memory_export.as_deref(), &snapshot.memory),
        (
            instrumented.asyncify_memory_export.as_deref(),
            &snapshot.asyncify_memory,
        ),
    ];
    for (name, bytes) in pairs {
        let memory = instance
            .get_memory(&mut *store, name.context("memory name")?)
            .context("memory")?;
        let missing_pages = (bytes.len() - memory.data_size(&*store)) as u64 / 65536;
        if missing_pages > 0 {
            memory.grow(&mut *store, missing_pages)?;
        }
        memory.write(&mut *store, 0, bytes)?;
    }
    for (name, bits) in &snapshot.globals {
        let global = instance.get_global(&mut *store, name).context("global")?;
        let value = match global.ty(&*store).content() {
            wasmtime::ValType::I32 => Val::I32(*bits as u32 as i32),
            wasmtime::ValType::I64 => Val::I64(*bits as u64 as i64),
            wasmtime::ValType::F32 => Val::F32(*bits as u32),
            wasmtime::ValType::F64 => Val::F64(*bits as u64),
            wasmtime::ValType::V128 => Val::V128((*bits).into()),
            other => anyhow::bail!("unexpected global type {other:?}"),
        };
        global.set(&mut *store, value)?;
    }
    store.data_mut().calls_answered = snapshot.host.calls_answered;
    Ok(())
}

fn instrumented_command() -> Result<(Engine, Module, Instrumented)> {
    let original = wat::parse_str(COMMAND)?;
    let instrumented = instrument(&original)?;
    ensure!(instrumented.recovery_mode == RecoveryMode::Checkpoint);
    ensure!(instrumented.asyncify);
    let engine = Engine::default();
    let module = Module::new(&engine, &instrumented.bytes)?;
    Ok((engine, module, instrumented))
}

/// The state an uninterrupted run ends in.
fn uninterrupted(
    engine: &Engine,
    module: &Module,
    instrumented: &Instrumented,
) -> Result<Snapshot> {
    let (mut store, instance) = instantiate(engine, module, Host::default())?;
    call_start(&mut store, &instance)?;
    ensure!(store.data().calls_answered == ANSWERS.len());
    ensure!(store.data().rewinds_seen == 0);
    snapshot(&mut store, &instance, instrumented)
}

/// Runs until the import call `unwind_at_call` unwinds, and returns the checkpoint.
fn run_until_unwound(
    engine: &Engine,
    module: &Module,
    instrumented: &Instrumented,
    unwind_at_call: usize,
) -> Result<Snapshot> {
    let host = Host {
        unwind_at_call: Some(unwind_at_call),
        ..Host::default()
    };
    let (mut store, instance) = instantiate(engine, module, host)?;
    call_start(&mut store, &instance)?;
    ensure!(store.data().unwound, "the import never unwound");
    ensure!(
        asyncify_state(&mut store, &instance)? == 1,
        "not unwinding after _start returned"
    );
    instance
        .get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")?
        .call(&mut store, ())?;
    ensure!(store.data().calls_answered == unwind_at_call);
    snapshot(&mut store, &instance, instrumented)
}

fn data_current(snapshot: &Snapshot) -> u32 {
    let start = ASYNCIFY_DATA_ADDRESS as usize;
    let bytes: [u8; 4] = snapshot.asyncify_memory[start..start + 4]
        .try_into()
        .unwrap_or_default();
    u32::from_le_bytes(bytes)
}

#[test]
fn a_command_unwound_at_any_import_call_finishes_identically_in_a_fresh_instance() -> Result<()> {
    let (engine, module, instrumented) = instrumented_command()?;
    let expected = uninterrupted(&engine, &module, &instrumented)?;
    for unwind_at_call in 0..ANSWERS.len() {
        let checkpoint = run_until_unwound(&engine, &module, &instrumented, unwind_at_call)?;
        // Frames were saved past the data structure.
        ensure!(data_current(&checkpoint) > ASYNCIFY_STACK_START);

        let (mut store, instance) = instantiate(&engine, &module, Host::default())?;
        restore(&mut store, &instance, &instrumented, &checkpoint)?;
        instance
            .get_typed_func::<i32, ()>(&mut store, "asyncify_start_rewind")?
            .call(&mut store, ASYNCIFY_DATA_ADDRESS as i32)?;
        call_start(&mut store, &instance)?;

        ensure!(
            store.data().rewinds_seen == 1,
            "the import did not see the rewind"
        );
        ensure!(asyncify_state(&mut store, &instance)? == 0);
        let finished = snapshot(&mut store, &instance, &instrumented)?;
        // Rewinding consumed every saved frame.
        ensure!(data_current(&finished) == ASYNCIFY_STACK_START);
        ensure!(
            finished.memory == expected.memory
                && finished.globals == expected.globals
                && finished.host == expected.host,
            "unwound at call {unwind_at_call}: {:?} != {:?}",
            finished.globals,
            expected.globals
        );
    }
    Ok(())
}

#[test]
fn a_command_rewound_on_the_same_instance_finishes_identically() -> Result<()> {
    let (engine, module, instrumented) = instrumented_command()?;
    let expected = uninterrupted(&engine, &module, &instrumented)?;
    let host = Host {
        unwind_at_call: Some(3),
        ..Host::default()
    };
    let (mut store, instance) = instantiate(&engine, &module, host)?;
    call_start(&mut store, &instance)?;
    instance
        .get_typed_func::<(), ()>(&mut store, "asyncify_stop_unwind")?
        .call(&mut store, ())?;
    instance
        .get_typed_func::<i32, ()>(&mut store, "asyncify_start_rewind")?
        .call(&mut store, ASYNCIFY_DATA_ADDRESS as i32)?;
    call_start(&mut store, &instance)?;
    ensure!(store.data().rewinds_seen == 1);
    let finished = snapshot(&mut store, &instance, &instrumented)?;
    ensure!(finished.memory == expected.memory && finished.globals == expected.globals);
    Ok(())
}

/// Runs the original, uninstrumented module: its import only answers.
fn original_total(engine: &Engine) -> Result<i32> {
    let module = Module::new(engine, wat::parse_str(COMMAND)?)?;
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        "wasi_snapshot_preview1",
        "fd_read",
        |mut caller: Caller<'_, Host>, argument: i32, _: i32, _: i32, _: i32| {
            let host = caller.data_mut();
            let answer = ANSWERS[host.calls_answered] + argument;
            host.calls_answered += 1;
            answer
        },
    )?;
    let mut store = Store::new(engine, Host::default());
    let instance = linker.instantiate(&mut store, &module)?;
    call_start(&mut store, &instance)?;
    instance
        .get_typed_func::<(), i32>(&mut store, "total")?
        .call(&mut store, ())
}

#[test]
fn instrumentation_keeps_the_result_of_the_original_module() -> Result<()> {
    let (engine, module, instrumented) = instrumented_command()?;
    let (mut store, instance) = instantiate(&engine, &module, Host::default())?;
    call_start(&mut store, &instance)?;
    let instrumented_total = instance
        .get_typed_func::<(), i32>(&mut store, "total")?
        .call(&mut store, ())?;
    ensure!(instrumented_total == original_total(&engine)?);
    // $total, $steps, $scale, and Asyncify's state and data pointer.
    ensure!(
        instrumented.globals.len() == 5,
        "{:?}",
        instrumented.globals
    );
    Ok(())
}

/// The globals `Instrumented::asyncify_globals` names are the ones Asyncify's
/// control exports set, so a host may set them instead of calling the exports.
#[test]
fn the_named_control_globals_are_those_the_control_exports_set() -> Result<()> {
    let (engine, module, instrumented) = instrumented_command()?;
    let control = instrumented
        .asyncify_globals
        .clone()
        .context("an Asyncify command names its control globals")?;
    for name in [&control.state, &control.data] {
        ensure!(
            instrumented
                .globals
                .iter()
                .any(|global| &global.name == name),
            "{name} is not among the captured globals"
        );
    }
    let (mut store, instance) = instantiate(&engine, &module, Host::default())?;
    let global = |store: &mut Store<Host>, name: &str| -> Result<i32> {
        let value = instance
            .get_global(&mut *store, name)
            .context("control global")?
            .get(&mut *store);
        value.i32().context("an i32 global")
    };
    let memory = instance
        .get_memory(&mut store, understudy_instrument::ASYNCIFY_MEMORY_EXPORT)
        .context("asyncify memory")?;
    // A data structure at 64, so the data global visibly changes.
    let mut structure = ASYNCIFY_STACK_START.to_le_bytes().to_vec();
    structure.extend_from_slice(&ASYNCIFY_MEMORY_BYTES.to_le_bytes());
    memory.write(&mut store, 64, &structure)?;
    let call = |store: &mut Store<Host>, name: &str, argument: Option<i32>| -> Result<()> {
        match argument {
            Some(argument) => instance
                .get_typed_func::<i32, ()>(&mut *store, name)?
                .call(&mut *store, argument),
            None => instance
                .get_typed_func::<(), ()>(&mut *store, name)?
                .call(&mut *store, ()),
        }
    };
    call(&mut store, "asyncify_start_unwind", Some(64))?;
    ensure!(
        (
            global(&mut store, &control.state)?,
            global(&mut store, &control.data)?
        ) == (1, 64)
    );
    call(&mut store, "asyncify_stop_unwind", None)?;
    ensure!(global(&mut store, &control.state)? == 0);
    call(&mut store, "asyncify_start_rewind", Some(64))?;
    ensure!(global(&mut store, &control.state)? == 2);
    call(&mut store, "asyncify_stop_rewind", None)?;
    ensure!(global(&mut store, &control.state)? == 0);
    ensure!(asyncify_state(&mut store, &instance)? == 0);
    Ok(())
}
