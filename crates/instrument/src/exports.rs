//! Adds the exports a checkpoint needs: every mutable global, memory 0 and the
//! Asyncify memory.
//!
//! Every section is copied byte for byte except the export section, which is
//! rebuilt as the original exports followed by the added ones (or inserted where
//! the section order puts it, when the module had none). Function bodies, names
//! and custom sections are untouched, so the rewrite cannot change behaviour, and
//! the output depends only on the input.

use wasm_encoder::{ExportKind, ExportSection, RawSection};
use wasmparser::{ExternalKind, Imports, Parser, Payload, TypeRef, ValType};

use crate::{
    GlobalExport, GlobalValueType, InstrumentError, ASYNCIFY_MEMORY_EXPORT, ASYNCIFY_MEMORY_PAGES,
    GLOBAL_EXPORT_PREFIX, MEMORY_EXPORT,
};

/// Section id of custom sections, which may appear anywhere.
const CUSTOM_SECTION_ID: u8 = 0;
/// Section id of the export section.
const EXPORT_SECTION_ID: u8 = 7;

/// One export this crate adds.
struct AddedExport {
    name: String,
    kind: ExportKind,
    index: u32,
}

/// The module with its state exported, and the names it is exported under.
#[derive(Debug)]
pub(crate) struct ExportedState {
    pub bytes: Vec<u8>,
    pub globals: Vec<GlobalExport>,
    pub memory_export: Option<String>,
    pub asyncify_memory_export: Option<String>,
}

/// What one pass over the module found.
#[derive(Default)]
struct Inventory<'a> {
    /// Every section, in order: id and contents.
    sections: Vec<(u8, &'a [u8])>,
    /// Every global, imported first, as the index space numbers them.
    globals: Vec<wasmparser::GlobalType>,
    /// Every memory, imported first: (imported, minimum pages, maximum pages).
    memories: Vec<(bool, u64, Option<u64>)>,
    /// Existing exports, in order.
    exports: Vec<wasmparser::Export<'a>>,
}

/// Exports the state of `module` (a valid core module). `asyncify_memory` is the
/// index of the memory Asyncify added, if it ran; memory 0 is exported only when
/// it is the guest's own memory.
pub(crate) fn export_state(
    module: &[u8],
    asyncify_memory: Option<u32>,
) -> Result<ExportedState, InstrumentError> {
    let inventory = take_inventory(module)?;
    let mut added = Vec::new();
    let memory_export = match asyncify_memory {
        Some(0) => None,
        _ if inventory.memories.is_empty() => None,
        _ => Some(export_name_or_add(
            &inventory,
            ExternalKind::Memory,
            0,
            MEMORY_EXPORT,
            &mut added,
        )),
    };
    let asyncify_memory_export = match asyncify_memory {
        Some(index) => {
            check_asyncify_memory(&inventory, index)?;
            added.push(AddedExport {
                name: ASYNCIFY_MEMORY_EXPORT.to_string(),
                kind: ExportKind::Memory,
                index,
            });
            Some(ASYNCIFY_MEMORY_EXPORT.to_string())
        }
        None => None,
    };
    let globals = export_globals(&inventory, &mut added)?;
    let bytes = assemble(&inventory, &added);
    Ok(ExportedState {
        bytes,
        globals,
        memory_export,
        asyncify_memory_export,
    })
}

fn take_inventory(module: &[u8]) -> Result<Inventory<'_>, InstrumentError> {
    let parse_error = |error: wasmparser::BinaryReaderError| {
        InstrumentError::Internal(format!("re-reading a validated module: {error}"))
    };
    let mut inventory = Inventory::default();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(parse_error)?;
        if let Some((id, range)) = payload.as_section() {
            let range = usize::try_from(range.start).map_err(|_| internal("range"))?
                ..usize::try_from(range.end).map_err(|_| internal("range"))?;
            let contents = module.get(range).ok_or_else(|| internal("section range"))?;
            inventory.sections.push((id, contents));
        }
        match payload {
            Payload::ImportSection(reader) => {
                for group in reader {
                    let Imports::Single(_, import) = group.map_err(parse_error)? else {
                        return Err(internal("compact imports after validation"));
                    };
                    match import.ty {
                        TypeRef::Global(global) => inventory.globals.push(global),
                        TypeRef::Memory(memory) => {
                            inventory
                                .memories
                                .push((true, memory.initial, memory.maximum))
                        }
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(parse_error)?;
                    inventory
                        .memories
                        .push((false, memory.initial, memory.maximum));
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    inventory.globals.push(global.map_err(parse_error)?.ty);
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    inventory.exports.push(export.map_err(parse_error)?);
                }
            }
            _ => {}
        }
    }
    Ok(inventory)
}

fn internal(what: &str) -> InstrumentError {
    InstrumentError::Internal(what.to_string())
}

/// The first name `index` of `kind` is already exported under, or `new_name`,
/// added to `added`.
fn export_name_or_add(
    inventory: &Inventory<'_>,
    kind: ExternalKind,
    index: u32,
    new_name: &str,
    added: &mut Vec<AddedExport>,
) -> String {
    let existing = inventory
        .exports
        .iter()
        .find(|export| export.kind == kind && export.index == index);
    match existing {
        Some(export) => export.name.to_string(),
        None => {
            added.push(AddedExport {
                name: new_name.to_string(),
                kind: encoder_kind(kind),
                index,
            });
            new_name.to_string()
        }
    }
}

fn encoder_kind(kind: ExternalKind) -> ExportKind {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => ExportKind::Func,
        ExternalKind::Table => ExportKind::Table,
        ExternalKind::Memory => ExportKind::Memory,
        ExternalKind::Global => ExportKind::Global,
        ExternalKind::Tag => ExportKind::Tag,
    }
}

/// Asyncify's memory must be the fixed-size memory it was asked for, defined (not
/// imported), or the host's layout assumptions would not hold.
fn check_asyncify_memory(inventory: &Inventory<'_>, index: u32) -> Result<(), InstrumentError> {
    let pages = u64::from(ASYNCIFY_MEMORY_PAGES);
    let expected = (false, pages, Some(pages));
    match inventory.memories.get(index as usize) {
        Some(memory) if *memory == expected && inventory.memories.len() == index as usize + 1 => {
            Ok(())
        }
        other => Err(InstrumentError::Internal(format!(
            "Asyncify memory {index} is {other:?}, expected {expected:?} as the last memory"
        ))),
    }
}

fn export_globals(
    inventory: &Inventory<'_>,
    added: &mut Vec<AddedExport>,
) -> Result<Vec<GlobalExport>, InstrumentError> {
    let mut globals = Vec::new();
    for (index, global) in inventory.globals.iter().enumerate() {
        if !global.mutable {
            continue;
        }
        let index = u32::try_from(index).map_err(|_| internal("global index"))?;
        let value_type = value_type(global.content_type)?;
        let new_name = format!("{GLOBAL_EXPORT_PREFIX}{index}");
        let name = export_name_or_add(inventory, ExternalKind::Global, index, &new_name, added);
        globals.push(GlobalExport {
            name,
            index,
            value_type,
        });
    }
    Ok(globals)
}

fn value_type(value_type: ValType) -> Result<GlobalValueType, InstrumentError> {
    match value_type {
        ValType::I32 => Ok(GlobalValueType::I32),
        ValType::I64 => Ok(GlobalValueType::I64),
        ValType::F32 => Ok(GlobalValueType::F32),
        ValType::F64 => Ok(GlobalValueType::F64),
        ValType::V128 => Ok(GlobalValueType::V128),
        // The analysis sends modules with mutable reference globals to replay.
        ValType::Ref(_) => Err(internal(
            "mutable reference global in a checkpointed module",
        )),
    }
}

/// The module again, with the export section rebuilt from the original exports
/// followed by `added`, placed where the section order requires.
fn assemble(inventory: &Inventory<'_>, added: &[AddedExport]) -> Vec<u8> {
    let mut exports = ExportSection::new();
    for export in &inventory.exports {
        exports.export(export.name, encoder_kind(export.kind), export.index);
    }
    for export in added {
        exports.export(&export.name, export.kind, export.index);
    }
    let mut module = wasm_encoder::Module::new();
    let mut export_written = false;
    for &(id, contents) in &inventory.sections {
        let is_custom = id == CUSTOM_SECTION_ID;
        if !is_custom && !export_written && section_rank(id) >= section_rank(EXPORT_SECTION_ID) {
            module.section(&exports);
            export_written = true;
            if id == EXPORT_SECTION_ID {
                continue;
            }
        }
        module.section(&RawSection { id, data: contents });
    }
    if !export_written {
        module.section(&exports);
    }
    module.finish()
}

/// Position of a known section in the order the binary format requires (the tag
/// section sits between memory and global, data count between element and code).
fn section_rank(id: u8) -> u8 {
    match id {
        13 => 6,           // tag
        6..=9 => id + 1,   // global, export, start, element
        12 => 11,          // data count
        10 | 11 => id + 2, // code, data
        _ => id,           // type 1, import 2, function 3, table 4, memory 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export_names(module: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(module) {
            if let Ok(Payload::ExportSection(reader)) = payload {
                names.extend(
                    reader
                        .into_iter()
                        .flatten()
                        .map(|export| export.name.to_string()),
                );
            }
        }
        names
    }

    fn assert_valid(module: &[u8]) {
        let validation = wasmparser::Validator::new_with_features(crate::analysis::host_features())
            .validate_all(module);
        assert!(validation.is_ok(), "{:?}", validation.err());
    }

    #[test]
    fn an_export_section_is_inserted_in_order_when_the_module_had_none() {
        // Start, element, code and data sections all follow the export section.
        let module = wat::parse_str(
            r#"(module
                 (memory 1)
                 (global (mut i32) (i32.const 0))
                 (table 1 funcref)
                 (elem (i32.const 0) $main)
                 (start $main)
                 (func $main)
                 (data (i32.const 0) "x"))"#,
        )
        .expect("test module parses");
        let exported = export_state(&module, None).expect("exports are added");
        assert_valid(&exported.bytes);
        assert_eq!(
            export_names(&exported.bytes),
            [MEMORY_EXPORT, "__understudy_global_0"]
        );
    }

    #[test]
    fn a_module_with_everything_exported_comes_back_byte_for_byte() {
        let module = wat::parse_str(
            r#"(module
                 (memory (export "memory") 1)
                 (global (export "counter") (mut i64) (i64.const 0))
                 (func (export "handle"))
                 (@custom "note" "kept"))"#,
        )
        .expect("test module parses");
        let exported = export_state(&module, None).expect("nothing to add");
        assert_eq!(exported.bytes, module);
        assert_eq!(exported.memory_export.as_deref(), Some("memory"));
        assert_eq!(exported.globals[0].name, "counter");
    }

    #[test]
    fn section_ranks_follow_the_binary_format_order() {
        // type, import, function, table, memory, tag, global, export, start,
        // element, data count, code, data.
        let order = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];
        let ranks = order.map(section_rank);
        assert!(ranks.windows(2).all(|pair| pair[0] < pair[1]), "{ranks:?}");
    }
}
