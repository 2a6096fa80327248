//! Which modules are checkpointed, which recover by replay, which are refused.

use anyhow::{ensure, Result};
use sha2::{Digest, Sha256};
use understudy_instrument::{
    instrument, GlobalExport, GlobalValueType, InstrumentError, RecoveryMode, MEMORY_EXPORT,
};
use understudy_types::limits::GUEST_MODULE_BYTES_MAX;

fn instrument_wat(text: &str) -> Result<understudy_instrument::Instrumented> {
    Ok(instrument(&wat::parse_str(text)?)?)
}

/// Asserts `text` comes out replay-only, unchanged, with a reason mentioning `why`.
fn assert_replay(text: &str, why: &str) -> Result<()> {
    let input = wat::parse_str(text)?;
    let instrumented = instrument(&input)?;
    ensure!(instrumented.recovery_mode == RecoveryMode::Replay, "{text}");
    ensure!(
        instrumented.bytes == input,
        "a replay-only module runs unchanged"
    );
    ensure!(!instrumented.asyncify);
    let reason = instrumented.replay_reason.unwrap_or_default();
    ensure!(
        reason.contains(why),
        "reason {reason:?} does not mention {why:?}"
    );
    Ok(())
}

#[test]
fn a_module_that_sets_a_table_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module
             (table 2 funcref)
             (func $f)
             (elem declare func $f)
             (func (export "_start") (table.set (i32.const 0) (ref.func $f))))"#,
        "table.set",
    )
}

#[test]
fn a_module_that_grows_a_table_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module
             (table 1 funcref)
             (func (export "handle") (result i32)
               (table.grow (ref.null func) (i32.const 1))))"#,
        "table.grow",
    )
}

#[test]
fn a_module_that_exports_its_table_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module (table (export "table") 1 funcref) (func (export "_start")))"#,
        "exports table",
    )
}

#[test]
fn a_module_with_two_memories_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module (memory 1) (memory 1) (func (export "_start")))"#,
        "2 memories",
    )
}

#[test]
fn a_module_with_a_64_bit_memory_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module (memory i64 1) (func (export "_start")))"#,
        "64-bit",
    )
}

#[test]
fn a_command_with_a_tail_call_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module (memory 1)
             (func $g)
             (func (export "_start") (return_call $g)))"#,
        "Asyncify cannot instrument",
    )
}

#[test]
fn a_command_that_drives_asyncify_itself_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module
             (import "asyncify" "start_unwind" (func (param i32)))
             (memory 1)
             (func (export "_start")))"#,
        "asyncify.start_unwind",
    )
}

#[test]
fn a_command_with_reference_locals_recovers_by_replay() -> Result<()> {
    assert_replay(
        r#"(module
             (memory 1)
             (func (export "_start") (local funcref)))"#,
        "reference",
    )
}

#[test]
fn a_reactor_with_reference_locals_is_checkpointed() -> Result<()> {
    // Reactors are not Asyncify-instrumented, so references in code are fine.
    let instrumented =
        instrument_wat(r#"(module (memory 1) (func (export "handle") (local funcref)))"#)?;
    ensure!(instrumented.recovery_mode == RecoveryMode::Checkpoint);
    ensure!(!instrumented.asyncify);
    Ok(())
}

#[test]
fn bad_bytes_are_an_invalid_module_error() {
    let result = instrument(b"\0asm\x01\0\0\0\x01\xff");
    assert!(
        matches!(result, Err(InstrumentError::InvalidModule(_))),
        "{result:?}"
    );
    let result = instrument(b"not wasm at all");
    assert!(
        matches!(result, Err(InstrumentError::InvalidModule(_))),
        "{result:?}"
    );
}

#[test]
fn a_module_over_the_size_limit_is_refused_before_parsing() {
    let bytes = vec![0u8; GUEST_MODULE_BYTES_MAX + 1];
    let result = instrument(&bytes);
    assert!(
        matches!(result, Err(InstrumentError::ModuleTooLarge { bytes, .. }) if bytes == GUEST_MODULE_BYTES_MAX + 1),
        "{result:?}"
    );
}

#[test]
fn an_export_in_the_reserved_namespace_is_refused() -> Result<()> {
    let input = wat::parse_str(
        r#"(module (global (export "__understudy_global_0") (mut i32) (i32.const 0)))"#,
    )?;
    let result = instrument(&input);
    ensure!(
        matches!(result, Err(InstrumentError::ReservedExportName(ref name)) if name == "__understudy_global_0"),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn a_reactor_gets_every_mutable_global_and_its_memory_exported() -> Result<()> {
    let instrumented = instrument_wat(
        r#"(module
             (import "env" "counter" (global (mut i64)))
             (memory 1)
             (global $constant i32 (i32.const 5))
             (global $hidden (mut f32) (f32.const 0.5))
             (global $shown (export "shown") (mut i32) (i32.const 0))
             (func (export "handle")))"#,
    )?;
    ensure!(instrumented.recovery_mode == RecoveryMode::Checkpoint);
    ensure!(!instrumented.asyncify && instrumented.asyncify_memory_export.is_none());
    ensure!(instrumented.memory_export.as_deref() == Some(MEMORY_EXPORT));
    let expected = vec![
        global("__understudy_global_0", 0, GlobalValueType::I64),
        global("__understudy_global_2", 2, GlobalValueType::F32),
        global("shown", 3, GlobalValueType::I32),
    ];
    ensure!(
        instrumented.globals == expected,
        "{:?}",
        instrumented.globals
    );
    Ok(())
}

fn global(name: &str, index: u32, value_type: GlobalValueType) -> GlobalExport {
    GlobalExport {
        name: name.into(),
        index,
        value_type,
    }
}

#[test]
fn an_exported_memory_keeps_its_name() -> Result<()> {
    let instrumented = instrument_wat(r#"(module (memory (export "memory") 1))"#)?;
    ensure!(instrumented.memory_export.as_deref() == Some("memory"));
    Ok(())
}

#[test]
fn a_module_without_memory_has_no_memory_export() -> Result<()> {
    let instrumented = instrument_wat(r#"(module (func (export "handle")))"#)?;
    ensure!(instrumented.recovery_mode == RecoveryMode::Checkpoint);
    ensure!(instrumented.memory_export.is_none());
    Ok(())
}

#[test]
fn the_digest_is_the_sha256_of_the_output() -> Result<()> {
    let instrumented = instrument_wat(r#"(module (memory 1) (func (export "_start")))"#)?;
    let expected: [u8; 32] = Sha256::digest(&instrumented.bytes).into();
    ensure!(instrumented.digest == expected);
    Ok(())
}

#[test]
fn custom_sections_survive_and_a_second_pass_refuses_our_own_names() -> Result<()> {
    let once = instrument_wat(
        r#"(module (memory 1) (global (mut i32) (i32.const 1))
             (func (export "handle"))
             (@custom "note" "kept"))"#,
    )?;
    let twice = instrument(&once.bytes);
    // The second pass sees our own reserved names and refuses them.
    ensure!(
        matches!(twice, Err(InstrumentError::ReservedExportName(_))),
        "{twice:?}"
    );
    ensure!(
        String::from_utf8_lossy(&once.bytes).contains("kept"),
        "custom sections survive"
    );
    Ok(())
}
