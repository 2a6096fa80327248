//! Validation of the input module and the facts that decide how it is instrumented.
//!
//! One pass over the module finds everything that forces replay-only recovery
//! (tables changed at run time, memories the checkpoint cannot capture, state that
//! cannot be copied between instances) and everything that would make Binaryen's
//! Asyncify pass refuse the module. Binaryen reports some of its refusals by
//! aborting the whole process (a C++ exception thrown where the binding cannot
//! catch it), so every such case must be caught here, before Binaryen runs.

use wasmparser::{
    Encoding, ExternalKind, FunctionBody, Imports, Operator, Parser, Payload, TypeRef, ValType,
    Validator, WasmFeatures,
};

use crate::InstrumentError;

/// Prefix of every export name this crate adds; an input may not use it.
pub(crate) const RESERVED_EXPORT_PREFIX: &str = "__understudy_";

/// Import module whose functions drive Asyncify from inside the guest. A guest
/// that imports from it could unwind itself, and Binaryen aborts on unknown names.
const ASYNCIFY_IMPORT_MODULE: &str = "asyncify";

/// Features a module may use at all: WebAssembly 2.0 plus the proposals our
/// wasmtime configuration runs. Anything else (GC, exceptions, threads, compact
/// imports, ...) is refused as invalid here rather than later by the engine.
pub(crate) fn host_features() -> WasmFeatures {
    WasmFeatures::WASM2
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::RELAXED_SIMD
        | WasmFeatures::MEMORY64
}

/// Features Binaryen's Asyncify (version 116) instruments: the host's set without
/// tail calls (Asyncify aborts on them) and memory64 (such modules are replay-only
/// before Asyncify is considered).
fn asyncify_features() -> WasmFeatures {
    WasmFeatures::WASM2
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::RELAXED_SIMD
}

/// What the analysis learned about a valid module.
#[derive(Debug, Default)]
pub(crate) struct ModuleFacts {
    /// Exports a function `_start`: a command guest, checkpointed at host calls.
    pub command: bool,
    /// Memories, imported and defined.
    pub memory_count: u32,
    /// Why the module can only recover by replay, whatever its kind (first found).
    pub replay_reason: Option<String>,
    /// Why Asyncify cannot instrument the module (first found); only matters for
    /// commands, since reactors are not Asyncify-instrumented.
    pub asyncify_blocker: Option<String>,
}

impl ModuleFacts {
    fn note_replay(&mut self, reason: String) {
        self.replay_reason.get_or_insert(reason);
    }

    fn note_asyncify_blocker(&mut self, reason: String) {
        self.asyncify_blocker.get_or_insert(reason);
    }
}

/// Validates `module` with [`host_features`] and gathers its [`ModuleFacts`].
pub(crate) fn analyse(module: &[u8]) -> Result<ModuleFacts, InstrumentError> {
    Validator::new_with_features(host_features())
        .validate_all(module)
        .map_err(|error| InstrumentError::InvalidModule(error.to_string()))?;
    let mut facts = ModuleFacts::default();
    for payload in Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|error| InstrumentError::InvalidModule(error.to_string()))?;
        note_payload(&mut facts, payload).map_err(|error| match error {
            AnalysisError::Parse(error) => InstrumentError::InvalidModule(error.to_string()),
            AnalysisError::Instrument(error) => error,
        })?;
    }
    if let Err(error) = Validator::new_with_features(asyncify_features()).validate_all(module) {
        facts.note_asyncify_blocker(format!(
            "uses a feature Asyncify cannot instrument: {error}"
        ));
    }
    if facts.memory_count > 1 {
        facts.note_replay(format!(
            "has {} memories; checkpoints capture exactly one",
            facts.memory_count
        ));
    }
    Ok(facts)
}

/// Either a parse failure or a refusal, while looking at one payload.
enum AnalysisError {
    Parse(wasmparser::BinaryReaderError),
    Instrument(InstrumentError),
}

impl From<wasmparser::BinaryReaderError> for AnalysisError {
    fn from(error: wasmparser::BinaryReaderError) -> Self {
        Self::Parse(error)
    }
}

fn note_payload(facts: &mut ModuleFacts, payload: Payload<'_>) -> Result<(), AnalysisError> {
    match payload {
        Payload::Version { encoding, .. } if encoding != Encoding::Module => {
            return Err(AnalysisError::Instrument(InstrumentError::InvalidModule(
                "a component, not a core module".into(),
            )));
        }
        Payload::TypeSection(reader) => {
            for group in reader {
                for sub_type in group?.into_types() {
                    if let wasmparser::CompositeInnerType::Func(function) =
                        &sub_type.composite_type.inner
                    {
                        let types = function.params().iter().chain(function.results());
                        note_value_types(facts, types, "a function type");
                    }
                }
            }
        }
        Payload::ImportSection(reader) => {
            for group in reader {
                match group? {
                    Imports::Single(_, import) => note_import(facts, import),
                    // Compact imports are outside `host_features`, so validation
                    // has refused them already.
                    _ => {
                        return Err(AnalysisError::Instrument(InstrumentError::InvalidModule(
                            "compact import encoding is not supported".into(),
                        )));
                    }
                }
            }
        }
        Payload::MemorySection(reader) => {
            for memory in reader {
                note_memory(facts, memory?);
            }
        }
        Payload::GlobalSection(reader) => {
            for global in reader {
                note_global(facts, global?.ty);
            }
        }
        Payload::ExportSection(reader) => {
            for export in reader {
                note_export(facts, export?).map_err(AnalysisError::Instrument)?;
            }
        }
        Payload::CodeSectionEntry(body) => note_code(facts, &body)?,
        _ => {}
    }
    Ok(())
}

fn note_import(facts: &mut ModuleFacts, import: wasmparser::Import<'_>) {
    if import.module == ASYNCIFY_IMPORT_MODULE {
        facts.note_asyncify_blocker(format!(
            "imports {}.{}: the guest may not drive Asyncify itself",
            import.module, import.name
        ));
    }
    match import.ty {
        TypeRef::Memory(memory) => note_memory(facts, memory),
        TypeRef::Global(global) => note_global(facts, global),
        TypeRef::Table(_) => facts.note_replay(format!(
            "imports table {}.{}, which the host could change under a checkpoint",
            import.module, import.name
        )),
        _ => {}
    }
}

fn note_memory(facts: &mut ModuleFacts, memory: wasmparser::MemoryType) {
    if memory.memory64 {
        facts.note_replay(format!(
            "memory {} is 64-bit; checkpoints capture 32-bit memories",
            facts.memory_count
        ));
    }
    facts.memory_count += 1;
}

fn note_global(facts: &mut ModuleFacts, global: wasmparser::GlobalType) {
    if global.content_type.is_reference_type() {
        if global.mutable {
            // A reference names an object of one instance: it cannot be copied
            // into the fresh instance a checkpoint is restored in.
            facts.note_replay("has a mutable reference-typed global".into());
        }
        facts.note_asyncify_blocker("has a reference-typed global".into());
    }
}

fn note_export(
    facts: &mut ModuleFacts,
    export: wasmparser::Export<'_>,
) -> Result<(), InstrumentError> {
    if export.name.starts_with(RESERVED_EXPORT_PREFIX) {
        return Err(InstrumentError::ReservedExportName(export.name.into()));
    }
    match export.kind {
        ExternalKind::Func if export.name == "_start" => facts.command = true,
        ExternalKind::Table => facts.note_replay(format!(
            "exports table {:?}, which the host could change under a checkpoint",
            export.name
        )),
        _ => {}
    }
    Ok(())
}

fn note_value_types<'a>(
    facts: &mut ModuleFacts,
    types: impl IntoIterator<Item = &'a ValType>,
    context: &str,
) {
    if types.into_iter().any(ValType::is_reference_type) {
        // Asyncify saves every live value of an instrumented frame to linear
        // memory; Binaryen 116 aborts on references, which have no byte size.
        facts.note_asyncify_blocker(format!("{context} uses a reference type"));
    }
}

fn note_code(facts: &mut ModuleFacts, body: &FunctionBody<'_>) -> Result<(), AnalysisError> {
    let mut locals_reader = body.get_locals_reader()?;
    for _ in 0..locals_reader.get_count() {
        let (_, local_type) = locals_reader.read()?;
        note_value_types(facts, [&local_type], "a local");
    }
    let mut operators = body.get_operators_reader()?;
    while !operators.eof() {
        note_operator(facts, &operators.read()?);
    }
    Ok(())
}

fn note_operator(facts: &mut ModuleFacts, operator: &Operator<'_>) {
    let table_change = match operator {
        Operator::TableSet { .. } => Some("table.set"),
        Operator::TableGrow { .. } => Some("table.grow"),
        Operator::TableFill { .. } => Some("table.fill"),
        Operator::TableCopy { .. } => Some("table.copy"),
        Operator::TableInit { .. } => Some("table.init"),
        Operator::ElemDrop { .. } => Some("elem.drop"),
        _ => None,
    };
    if let Some(instruction) = table_change {
        // Checkpoints hold memory and globals, not tables: a table changed at run
        // time would come back as it was at instantiation.
        facts.note_replay(format!("changes a table at run time ({instruction})"));
    }
    // The remaining ways to produce a reference value (locals, parameters,
    // results and globals are checked by type).
    let reference_producer = match operator {
        Operator::RefNull { .. } => Some("ref.null"),
        Operator::RefFunc { .. } => Some("ref.func"),
        Operator::TableGet { .. } => Some("table.get"),
        Operator::TypedSelect { ty } if ty.is_reference_type() => Some("select of references"),
        Operator::TypedSelectMulti { tys } if tys.iter().any(ValType::is_reference_type) => {
            Some("select of references")
        }
        _ => None,
    };
    if let Some(instruction) = reference_producer {
        facts.note_asyncify_blocker(format!("uses reference values ({instruction})"));
    }
}
