//! Unit and property tests of the store, sessions and snapshots.

mod model;
mod sessions;
mod snapshots;
mod store;

use bytes::Bytes;

use crate::{
    Command, Compare, CompareOperator, CompareTarget, Operation, RequestId, Txn, TxnOperation,
};

pub(crate) fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

pub(crate) fn put(key: &str, value: &str) -> Command {
    Command {
        request_id: None,
        operation: Operation::Put {
            key: bytes(key),
            value: bytes(value),
        },
    }
}

pub(crate) fn delete(key: &str) -> Command {
    Command {
        request_id: None,
        operation: Operation::Delete { key: bytes(key) },
    }
}

pub(crate) fn compact(revision: u64) -> Command {
    Command {
        request_id: None,
        operation: Operation::Compact { revision },
    }
}

pub(crate) fn txn(
    compares: Vec<Compare>,
    success: Vec<TxnOperation>,
    failure: Vec<TxnOperation>,
) -> Command {
    Command {
        request_id: None,
        operation: Operation::Txn(Txn {
            compares,
            success,
            failure,
        }),
    }
}

pub(crate) fn compare(key: &str, target: CompareTarget, operator: CompareOperator) -> Compare {
    Compare {
        key: bytes(key),
        target,
        operator,
    }
}

pub(crate) fn with_session(mut command: Command, client: &str, sequence: u64) -> Command {
    command.request_id = Some(RequestId {
        client_id: bytes(client),
        sequence,
    });
    command
}

pub(crate) fn txn_put(key: &str, value: &str) -> TxnOperation {
    TxnOperation::Put {
        key: bytes(key),
        value: bytes(value),
    }
}

pub(crate) fn txn_get(key: &str) -> TxnOperation {
    TxnOperation::Get { key: bytes(key) }
}

pub(crate) fn txn_delete(key: &str) -> TxnOperation {
    TxnOperation::Delete { key: bytes(key) }
}

/// Applies commands at log indexes 1, 2, 3, … after the store's last index.
pub(crate) struct Applier {
    pub(crate) store: crate::Store,
}

impl Applier {
    pub(crate) fn new() -> Applier {
        Applier {
            store: crate::Store::new(),
        }
    }

    pub(crate) fn apply(&mut self, command: &Command) -> crate::Outcome {
        let index = self.store.last_applied_index() + 1;
        self.store.apply(index, command)
    }
}
