//! Turns the workload's history into the checker's and judges it.

use crate::kv::WriteKind;
use crate::linearizability::{
    check as check_linearizability, CheckResult, KvInput, KvModel, KvOutput, Operation,
    SearchBudget,
};
use crate::workload::{HistoryEntry, Request};

/// Checks that the client history is linearizable; `Err` says why it is not (or
/// why it could not be decided).
pub fn check(history: &[HistoryEntry]) -> Result<(), String> {
    let operations: Vec<Operation<KvInput, KvOutput>> = history.iter().map(convert).collect();
    match check_linearizability(&KvModel, &operations, SearchBudget::default()) {
        Ok(CheckResult::Linearizable) => Ok(()),
        Ok(CheckResult::NotLinearizable { partition, detail }) => Err(format!(
            "linearizability: the history of {partition} is not linearizable: {detail}"
        )),
        Ok(CheckResult::Unknown {
            partition,
            states_explored,
        }) => Err(format!(
            "linearizability: undecided for {partition} after {states_explored} states"
        )),
        Err(error) => Err(format!("linearizability: malformed history: {error}")),
    }
}

fn convert(entry: &HistoryEntry) -> Operation<KvInput, KvOutput> {
    let input = match &entry.request {
        Request::Get { key } => KvInput::Get { key: *key },
        Request::Write(command) => match command.kind {
            WriteKind::Put => KvInput::Put {
                key: command.key,
                value: command.value.clone(),
            },
            WriteKind::Append => KvInput::Append {
                key: command.key,
                value: command.value.clone(),
            },
        },
    };
    match &entry.response {
        None => Operation::unknown(entry.client, input, entry.call_micros),
        Some((return_micros, value)) => {
            let output = match entry.request {
                Request::Get { .. } => KvOutput::Value(value.clone()),
                Request::Write(_) => KvOutput::Ok,
            };
            // Virtual time can answer within the same microsecond it was asked;
            // the checker wants a return strictly after the call.
            let return_time = (*return_micros).max(entry.call_micros + 1);
            Operation::completed(entry.client, input, output, entry.call_micros, return_time)
        }
    }
}
