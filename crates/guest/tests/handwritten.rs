//! Hand-written modules: unsupported imports, bad pointers, runaway guests.

mod common;

use common::*;
use understudy_guest::{
    Epoch, GuestConfig, GuestEngine, GuestError, GuestInstance, ImportName, Recorder, RunOutcome,
    SystemInputs, ERRNO_NOSYS,
};

fn instance(engine: &GuestEngine, wat: &str) -> GuestInstance<Recorder<SystemInputs>> {
    let bytes = wat::parse_str(wat).expect("the test module parses");
    let module = load(engine, &bytes);
    GuestInstance::new(
        engine,
        &module,
        &birth(&["test"]),
        Recorder::new(SystemInputs::new(), Epoch(1)),
    )
    .expect("instance")
}

#[test]
fn unsupported_import_returns_enosys_and_is_listed() {
    let engine = engine(GuestConfig::default());
    let mut guest = instance(
        &engine,
        r#"(module
            (import "wasi_snapshot_preview1" "path_open"
                (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (call $exit (call $path_open (i32.const 3) (i32.const 0) (i32.const 0)
                    (i32.const 0) (i32.const 0) (i64.const 0) (i64.const 0)
                    (i32.const 0) (i32.const 0)))))"#,
    );
    let expected = ImportName {
        module: "wasi_snapshot_preview1".into(),
        name: "path_open".into(),
    };
    assert_eq!(guest.unsupported_imports(), [expected]);
    assert_eq!(guest.run(), Ok(RunOutcome::Exited(ERRNO_NOSYS)));
    assert!(guest.is_finished());
}

#[test]
fn non_function_import_is_a_clean_error() {
    let engine = engine(GuestConfig::default());
    let bytes = wat::parse_str(r#"(module (import "env" "memory" (memory 1)))"#).expect("parses");
    assert!(matches!(
        engine.load(&bytes),
        Err(GuestError::InvalidModule(_))
    ));
    assert!(matches!(
        engine.load(b"not wasm"),
        Err(GuestError::InvalidModule(_))
    ));
}

/// A module that writes one iovec `{ pointer, length }` to stdout and exits with
/// the errno.
fn write_from(pointer: u32, length: u32, iovs: u32) -> String {
    format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "hello")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const {pointer}))
                (i32.store (i32.const 4) (i32.const {length}))
                (call $exit (call $write (i32.const 1) (i32.const {iovs}) (i32.const 1)
                    (i32.const 8)))))"#
    )
}

#[test]
fn out_of_bounds_pointers_get_efault() {
    let engine = engine(GuestConfig::default());
    let mut good = instance(&engine, &write_from(16, 5, 0));
    assert_eq!(good.run(), Ok(RunOutcome::Exited(0)));
    let outputs = good.take_outputs();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].bytes.as_ref(), b"hello");

    for (pointer, length, iovs) in [(0xFFFF_FFF0, 100, 0), (65_530, 10, 0), (16, 5, 65_534)] {
        let mut bad = instance(&engine, &write_from(pointer, length, iovs));
        assert_eq!(
            bad.run(),
            Ok(RunOutcome::Exited(21)),
            "{pointer:#x} {length} {iovs}"
        );
        assert!(bad.take_outputs().is_empty());
    }
}

const LOOP_FOREVER: &str = r#"(module
    (memory (export "memory") 1)
    (func (export "_start") (loop $forever (br $forever))))"#;

#[test]
fn runaway_guest_yields_on_fuel_and_dies_on_epoch() {
    let config = GuestConfig {
        fuel_slice: Some(100_000),
        runaway_ticks: Some(1),
        ..GuestConfig::default()
    };
    let engine = engine(config);
    let mut guest = instance(&engine, LOOP_FOREVER);
    for _ in 0..3 {
        assert_eq!(guest.run(), Ok(RunOutcome::OutOfFuel));
        assert!(!guest.is_parked_in_stdin());
    }
    // The kill switch: the first tick it sees notes where the guest stands,
    // the second finds it has made no progress since. (tests/kill.rs has more.)
    engine.increment_epoch();
    assert_eq!(guest.run(), Ok(RunOutcome::OutOfFuel));
    engine.increment_epoch();
    match guest.run() {
        Ok(RunOutcome::Killed(reason)) => assert!(reason.contains("runaway"), "{reason}"),
        other => panic!("expected a kill, got {other:?}"),
    }
    assert!(guest.is_finished());
    assert!(matches!(guest.run(), Err(GuestError::WrongState(_))));
}

#[test]
fn module_size_is_limited() {
    let engine = engine(GuestConfig::default());
    let huge = vec![0u8; understudy_types::limits::GUEST_MODULE_BYTES_MAX + 1];
    assert!(matches!(
        engine.load(&huge),
        Err(GuestError::ModuleTooLarge { .. })
    ));
}

/// Runs `_start` that exits with the i32 value of `body` (which may call the
/// `$f` import declared by `import`).
fn exit_code_of(import: &str, body: &str) -> Result<RunOutcome, GuestError> {
    let engine = engine(GuestConfig::default());
    let wat = format!(
        r#"(module
            (import "wasi_snapshot_preview1" {import})
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start") (call $exit {body})))"#
    );
    let mut guest = instance(&engine, &wat);
    assert!(guest.unsupported_imports().is_empty());
    guest.run()
}

#[test]
fn standard_streams_errnos() {
    let seek = r#""fd_seek" (func $f (param i32 i64 i32 i32) (result i32))"#;
    let prestat = r#""fd_prestat_get" (func $f (param i32 i32) (result i32))"#;
    let write = r#""fd_write" (func $f (param i32 i32 i32 i32) (result i32))"#;
    let read = r#""fd_read" (func $f (param i32 i32 i32 i32) (result i32))"#;
    let clock = r#""clock_time_get" (func $f (param i32 i64 i32) (result i32))"#;
    let random = r#""random_get" (func $f (param i32 i32) (result i32))"#;
    let yield_ = r#""sched_yield" (func $f (result i32))"#;
    let fdstat = r#""fd_fdstat_get" (func $f (param i32 i32) (result i32))"#;
    let cases = [
        (
            seek,
            "(call $f (i32.const 0) (i64.const 0) (i32.const 0) (i32.const 0))",
            70,
        ),
        (
            seek,
            "(call $f (i32.const 5) (i64.const 0) (i32.const 0) (i32.const 0))",
            8,
        ),
        (prestat, "(call $f (i32.const 3) (i32.const 0))", 8),
        (
            write,
            "(call $f (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))",
            8,
        ),
        (
            write,
            "(drop (call $close (i32.const 1))) \
             (call $f (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0))",
            8,
        ),
        (
            read,
            "(call $f (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))",
            8,
        ),
        (
            read,
            "(call $f (i32.const 0) (i32.const 65532) (i32.const 1) (i32.const 8))",
            21,
        ),
        (
            clock,
            "(call $f (i32.const 9) (i64.const 0) (i32.const 0))",
            28,
        ),
        (
            clock,
            "(call $f (i32.const 0) (i64.const 0) (i32.const 65530))",
            21,
        ),
        (random, "(call $f (i32.const 65000) (i32.const 1000))", 21),
        (random, "(call $f (i32.const 0) (i32.const 16))", 0),
        (yield_, "(call $f)", 0),
        (fdstat, "(call $f (i32.const 1) (i32.const 0))", 0),
        (fdstat, "(call $f (i32.const 7) (i32.const 0))", 8),
        (fdstat, "(call $f (i32.const 2) (i32.const 65530))", 21),
    ];
    for (import, body, expected) in cases {
        assert_eq!(
            exit_code_of(import, body),
            Ok(RunOutcome::Exited(expected)),
            "{import} {body}"
        );
    }
}

#[test]
fn poll_oneoff_fires_clock_subscriptions_and_refuses_fd_ones() {
    let poll = r#""poll_oneoff" (func $f (param i32 i32 i32 i32) (result i32))"#;
    // One clock subscription (tag 0) with userdata 77 at 0; events at 64, count at 128.
    let clock =
        "(i64.store (i32.const 0) (i64.const 77)) (i32.store8 (i32.const 8) (i32.const 0)) \
                 (drop (call $f (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))) \
                 (i32.add (i32.load (i32.const 128)) \
                     (i32.mul (i32.const 1000) (i32.wrap_i64 (i64.load (i32.const 64)))))";
    assert_eq!(exit_code_of(poll, clock), Ok(RunOutcome::Exited(77_001)));
    let fd = "(i32.store8 (i32.const 8) (i32.const 1)) \
              (call $f (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))";
    assert_eq!(exit_code_of(poll, fd), Ok(RunOutcome::Exited(52)));
    let none = "(call $f (i32.const 0) (i32.const 64) (i32.const 0) (i32.const 128))";
    assert_eq!(exit_code_of(poll, none), Ok(RunOutcome::Exited(28)));
}

#[test]
fn environment_is_fixed_at_birth() {
    let engine = engine(GuestConfig::default());
    let bytes = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "environ_sizes_get"
                (func $sizes (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "environ_get"
                (func $get (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write"
                (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (drop (call $sizes (i32.const 0) (i32.const 4)))
                (drop (call $get (i32.const 100) (i32.const 200)))
                (i32.store (i32.const 8) (i32.const 200))
                (i32.store (i32.const 12) (i32.load (i32.const 4)))
                (drop (call $write (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 16)))))"#,
    )
    .expect("parses");
    let module = load(&engine, &bytes);
    let birth = understudy_guest::Birth {
        args: vec!["env".into()],
        env: vec!["A=1".into(), "B=22".into()],
    };
    let mut guest = GuestInstance::new(
        &engine,
        &module,
        &birth,
        Recorder::new(SystemInputs::new(), Epoch(1)),
    )
    .expect("instance");
    assert_eq!(guest.run(), Ok(RunOutcome::Exited(0)));
    assert_eq!(guest.take_outputs()[0].bytes.as_ref(), b"A=1\0B=22\0");

    let nul = understudy_guest::Birth {
        args: vec!["a\0b".into()],
        env: Vec::new(),
    };
    let result = GuestInstance::new(
        &engine,
        &module,
        &nul,
        Recorder::new(SystemInputs::new(), Epoch(1)),
    );
    assert!(matches!(result, Err(GuestError::InvalidBirth(_))));
}
