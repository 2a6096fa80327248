//! Binaryen's Asyncify pass, run through the `wasm-opt` crate.
//!
//! The binding reads and writes modules as files, so each run goes through a
//! private temporary directory. Binaryen keeps process-wide state (its thread pool),
//! so runs are serialised by a lock rather than trusted to be reentrant.

use std::sync::Mutex;

use wasm_opt::{Feature, OptimizationOptions, Pass};

use crate::{ASYNCIFY_IMPORTS, ASYNCIFY_MEMORY_PAGES};

/// Serialises calls into Binaryen (see the module docs).
static BINARYEN_LOCK: Mutex<()> = Mutex::new(());

/// The Binaryen options of every run. Fixed, so the same input always gives the
/// same output: only the Asyncify pass runs (no whole-module optimisation that
/// could drop or reorder globals), at optimisation level 2, which Asyncify uses to
/// clean up the functions it instruments (level 0 would leave them several times
/// larger and slower).
fn asyncify_options() -> OptimizationOptions {
    let imports = ASYNCIFY_IMPORTS
        .iter()
        .map(|name| format!("wasi_snapshot_preview1.{name}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut options = OptimizationOptions::new_opt_level_2();
    options
        .add_default_passes(false)
        .add_pass(Pass::Asyncify)
        .set_pass_arg("asyncify-imports", &imports)
        // The unwound stack lives in a memory of its own, which the guest's code
        // cannot address, so a stray guest store cannot corrupt it.
        .set_pass_arg("asyncify-in-secondary-memory", "")
        .set_pass_arg(
            "asyncify-secondary-memory-size",
            &ASYNCIFY_MEMORY_PAGES.to_string(),
        )
        .debug_info(false)
        .validate(true)
        .mvp_features_only();
    // Exactly the features `analysis::asyncify_features` lets through, plus
    // multi-memory for the secondary memory.
    for feature in [
        Feature::MutableGlobals,
        Feature::TruncSat,
        Feature::SignExt,
        Feature::BulkMemory,
        Feature::ReferenceTypes,
        Feature::Multivalue,
        Feature::Simd,
        Feature::RelaxedSimd,
        Feature::ExtendedConst,
        Feature::MultiMemory,
    ] {
        options.enable_feature(feature);
    }
    options
}

/// Runs Asyncify on `module`. The error is a reason for the process's log: the
/// caller falls back to replay-only recovery.
pub(crate) fn asyncify(module: &[u8]) -> Result<Vec<u8>, String> {
    let directory = tempfile::tempdir()
        .map_err(|error| format!("Asyncify: cannot create a temporary directory: {error}"))?;
    let input_path = directory.path().join("input.wasm");
    let output_path = directory.path().join("output.wasm");
    std::fs::write(&input_path, module)
        .map_err(|error| format!("Asyncify: cannot write the input module: {error}"))?;
    {
        // A poisoned lock only means another run panicked; Binaryen holds no
        // state of ours across runs, so the next run may proceed.
        let _guard = BINARYEN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        asyncify_options()
            .run(&input_path, &output_path)
            .map_err(|error| format!("Asyncify failed: {}", error_chain(&error)))?;
    }
    std::fs::read(&output_path)
        .map_err(|error| format!("Asyncify: cannot read the output module: {error}"))
}

/// `error` and its sources, for one log line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
