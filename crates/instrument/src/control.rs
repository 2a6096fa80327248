//! Finds the two globals behind Asyncify's control exports, so a host can drive
//! the unwind protocol from inside a synchronous import.
//!
//! Why: a host whose engine runs guests asynchronously (wasmtime's async support)
//! cannot call a guest export from inside a synchronous import, yet it must start
//! an unwind and stop a rewind exactly there. Binaryen's control functions only
//! set Asyncify's state and data globals (and check the data structure), so the
//! host may set those globals itself. This module reads which globals they are
//! from the bodies of `asyncify_get_state` (`global.get state`) and
//! `asyncify_start_unwind` (`global.set state`, `global.set data`), and refuses
//! anything else, so a different Binaryen cannot silently break the assumption.

use wasmparser::{ExternalKind, Imports, Operator, Parser, Payload, TypeRef};

/// Indexes (in the module's global index space) of Asyncify's globals.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ControlGlobals {
    /// 0 normal, 1 unwinding, 2 rewinding.
    pub state: u32,
    /// Address of the `[current, end]` data structure in the Asyncify memory.
    pub data: u32,
}

/// Function indexes of the two exports read, once found.
#[derive(Default)]
struct ControlFunctions {
    get_state: Option<u32>,
    start_unwind: Option<u32>,
}

/// The state and data globals of an Asyncify-instrumented `module`. The error is
/// a reason for the process's log (the caller falls back to replay).
pub(crate) fn control_globals(module: &[u8]) -> Result<ControlGlobals, String> {
    let parse_error =
        |error: wasmparser::BinaryReaderError| format!("re-reading Asyncify output: {error}");
    let mut imported_functions = 0u32;
    let mut functions = ControlFunctions::default();
    let mut next_function = 0u32;
    let mut state_global = None;
    let mut set_globals = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload.map_err(parse_error)? {
            Payload::ImportSection(reader) => {
                for group in reader {
                    // Compact imports are refused by validation before Asyncify.
                    let Imports::Single(_, import) = group.map_err(parse_error)? else {
                        return Err("compact imports in Asyncify output".into());
                    };
                    if matches!(import.ty, TypeRef::Func(_) | TypeRef::FuncExact(_)) {
                        imported_functions += 1;
                    }
                }
                next_function = imported_functions;
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(parse_error)?;
                    if export.kind != ExternalKind::Func {
                        continue;
                    }
                    match export.name {
                        "asyncify_get_state" => functions.get_state = Some(export.index),
                        "asyncify_start_unwind" => functions.start_unwind = Some(export.index),
                        _ => {}
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let index = next_function;
                next_function += 1;
                let mut operators = Vec::new();
                if Some(index) == functions.get_state || Some(index) == functions.start_unwind {
                    let mut reader = body.get_operators_reader().map_err(parse_error)?;
                    while !reader.eof() {
                        operators.push(reader.read().map_err(parse_error)?);
                    }
                }
                if Some(index) == functions.get_state {
                    state_global = Some(read_state_global(&operators)?);
                }
                if Some(index) == functions.start_unwind {
                    set_globals = operators
                        .iter()
                        .filter_map(|operator| match operator {
                            Operator::GlobalSet { global_index } => Some(*global_index),
                            _ => None,
                        })
                        .collect();
                }
            }
            _ => {}
        }
    }
    let state = state_global.ok_or("Asyncify output has no asyncify_get_state")?;
    match set_globals.as_slice() {
        [first, data] if *first == state && *data != state => Ok(ControlGlobals {
            state,
            data: *data,
        }),
        other => Err(format!(
            "asyncify_start_unwind sets globals {other:?}, expected the state global {state} then the data global"
        )),
    }
}

/// `asyncify_get_state` must be exactly `global.get state; end`.
fn read_state_global(operators: &[Operator<'_>]) -> Result<u32, String> {
    match operators {
        [Operator::GlobalGet { global_index }, Operator::End] => Ok(*global_index),
        other => Err(format!(
            "asyncify_get_state is {} instructions, expected global.get and end",
            other.len()
        )),
    }
}
