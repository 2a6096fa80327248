//! Replicated commands, their validation and their encoding.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use understudy_types::limits::{
    KV_COMMAND_BYTES_MAX, KV_KEY_BYTES_MAX, KV_SESSION_CLIENT_ID_BYTES_MAX, KV_TXN_OPERATIONS_MAX,
    KV_VALUE_BYTES_MAX,
};

use crate::KvError;

/// Format version of [`Command::encode`]; the first byte of every encoding.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// Identifies one client request for exactly-once application (client sessions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// The client's id: 1 to `KV_SESSION_CLIENT_ID_BYTES_MAX` bytes.
    pub client_id: Bytes,
    /// The client's request number, starting at 1 and increasing.
    pub sequence: u64,
}

/// One replicated write command, as carried by a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Session information for exactly-once application; `None` applies the
    /// operation unconditionally (a retry would apply it again).
    pub request_id: Option<RequestId>,
    /// What to do.
    pub operation: Operation,
}

/// The operation of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Store `value` under `key`.
    Put {
        /// The key (non-empty).
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Remove `key` if present.
    Delete {
        /// The key (non-empty).
        key: Bytes,
    },
    /// A conditional transaction.
    Txn(Txn),
    /// Discard history before `revision`.
    Compact {
        /// The new compaction revision (at most the current revision).
        revision: u64,
    },
}

/// A transaction: if every compare holds, run `success`, otherwise `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Conditions, all of which must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Operations run when every compare holds.
    pub success: Vec<TxnOperation>,
    /// Operations run otherwise.
    pub failure: Vec<TxnOperation>,
}

/// One operation inside a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOperation {
    /// Store `value` under `key`.
    Put {
        /// The key (non-empty).
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Read `key`, seeing the transaction's earlier writes.
    Get {
        /// The key (non-empty).
        key: Bytes,
    },
    /// Remove `key` if present.
    Delete {
        /// The key (non-empty).
        key: Bytes,
    },
}

/// One transaction condition: `key`'s `target` compared by `operator`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key whose state is compared (non-empty).
    pub key: Bytes,
    /// Which attribute, with the operand it is compared against.
    pub target: CompareTarget,
    /// How the stored attribute relates to the operand for the compare to hold.
    pub operator: CompareOperator,
}

/// The attribute a [`Compare`] reads, carrying the operand.
///
/// A missing key has version 0 and mod revision 0; no value compare matches a
/// missing key, not even `NotEqual`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The value, compared bytewise (lexicographically for `Less`/`Greater`).
    Value(Bytes),
    /// The number of puts since the key was (re-)created.
    Version(u64),
    /// The revision of the key's last modification.
    ModRevision(u64),
}

/// The relation a [`Compare`] requires: `stored <operator> operand`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOperator {
    /// stored == operand
    Equal,
    /// stored != operand
    NotEqual,
    /// stored < operand
    Less,
    /// stored > operand
    Greater,
}

impl Command {
    /// Encodes the command: one version byte, then postcard.
    pub fn encode(&self) -> Bytes {
        // Serialising into a growable Vec cannot fail: every type here is plain
        // data (no maps with non-string keys, no custom serialisers that error).
        let encoded = postcard::to_extend(self, vec![COMMAND_FORMAT_VERSION])
            .expect("serialising plain data into a Vec cannot fail");
        Bytes::from(encoded)
    }

    /// Decodes a command produced by [`Command::encode`], rejecting oversized
    /// input, unknown versions, malformed structure and trailing bytes. The
    /// decoded command is also validated against every limit.
    pub fn decode(encoded: &[u8]) -> Result<Command, KvError> {
        let length_bytes = encoded.len() as u64;
        if length_bytes > KV_COMMAND_BYTES_MAX {
            return Err(KvError::CommandTooLarge { length_bytes });
        }
        let Some((&version, payload)) = encoded.split_first() else {
            return Err(KvError::CommandMalformed);
        };
        if version != COMMAND_FORMAT_VERSION {
            return Err(KvError::CommandVersionUnsupported { version });
        }
        // Allocation is bounded by the input: postcard checks every byte-string
        // length against the remaining input, and serde's sequence preallocation
        // is capped ("cautious" size hints), so a forged length cannot make us
        // allocate more than a small multiple of `KV_COMMAND_BYTES_MAX`.
        let (command, rest): (Command, &[u8]) =
            postcard::take_from_bytes(payload).map_err(|_| KvError::CommandMalformed)?;
        if !rest.is_empty() {
            return Err(KvError::CommandMalformed);
        }
        command.validate()?;
        Ok(command)
    }

    /// Checks every length against its limit. The state machine calls this before
    /// applying anything, so a rejected command changes nothing.
    pub fn validate(&self) -> Result<(), KvError> {
        if let Some(request_id) = &self.request_id {
            validate_request_id(request_id)?;
        }
        match &self.operation {
            Operation::Put { key, value } => {
                validate_key(key)?;
                validate_value(value)
            }
            Operation::Delete { key } => validate_key(key),
            Operation::Txn(txn) => validate_txn(txn),
            Operation::Compact { .. } => Ok(()),
        }
    }
}

/// Checks a session request id: client id length and sequence ≥ 1.
pub(crate) fn validate_request_id(request_id: &RequestId) -> Result<(), KvError> {
    let length_bytes = request_id.client_id.len();
    if length_bytes == 0 || length_bytes > KV_SESSION_CLIENT_ID_BYTES_MAX {
        return Err(KvError::ClientIdInvalid {
            length_bytes: length_bytes as u64,
        });
    }
    if request_id.sequence == 0 {
        return Err(KvError::SequenceZero);
    }
    Ok(())
}

/// Checks that a key is non-empty and within `KV_KEY_BYTES_MAX`.
pub(crate) fn validate_key(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::KeyEmpty);
    }
    if key.len() > KV_KEY_BYTES_MAX {
        return Err(KvError::KeyTooLong {
            length_bytes: key.len() as u64,
        });
    }
    Ok(())
}

/// Checks that a value is within `KV_VALUE_BYTES_MAX`.
pub(crate) fn validate_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > KV_VALUE_BYTES_MAX {
        return Err(KvError::ValueTooLarge {
            length_bytes: value.len() as u64,
        });
    }
    Ok(())
}

fn validate_txn(txn: &Txn) -> Result<(), KvError> {
    for count in [txn.compares.len(), txn.success.len(), txn.failure.len()] {
        if count > KV_TXN_OPERATIONS_MAX {
            return Err(KvError::TooManyTxnOperations {
                count: count as u64,
            });
        }
    }
    for compare in &txn.compares {
        validate_key(&compare.key)?;
        if let CompareTarget::Value(operand) = &compare.target {
            validate_value(operand)?;
        }
    }
    for operation in txn.success.iter().chain(&txn.failure) {
        match operation {
            TxnOperation::Put { key, value } => {
                validate_key(key)?;
                validate_value(value)?;
            }
            TxnOperation::Get { key } | TxnOperation::Delete { key } => validate_key(key)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn put(key: &'static [u8], value: &'static [u8]) -> Command {
        Command {
            request_id: Some(RequestId {
                client_id: Bytes::from_static(b"client"),
                sequence: 7,
            }),
            operation: Operation::Put {
                key: Bytes::from_static(key),
                value: Bytes::from_static(value),
            },
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let txn = Command {
            request_id: None,
            operation: Operation::Txn(Txn {
                compares: vec![Compare {
                    key: Bytes::from_static(b"a"),
                    target: CompareTarget::Value(Bytes::from_static(b"x")),
                    operator: CompareOperator::Greater,
                }],
                success: vec![TxnOperation::Get {
                    key: Bytes::from_static(b"a"),
                }],
                failure: vec![TxnOperation::Delete {
                    key: Bytes::from_static(b"b"),
                }],
            }),
        };
        for command in [put(b"k", b"v"), txn] {
            assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
    }

    #[test]
    fn decode_rejects_version_trailing_bytes_and_empty_input() {
        let encoded = put(b"k", b"v").encode();
        let mut wrong_version = encoded.to_vec();
        wrong_version[0] = 9;
        assert_eq!(
            Command::decode(&wrong_version),
            Err(KvError::CommandVersionUnsupported { version: 9 })
        );
        let mut trailing = encoded.to_vec();
        trailing.push(0);
        assert_eq!(Command::decode(&trailing), Err(KvError::CommandMalformed));
        assert_eq!(Command::decode(&[]), Err(KvError::CommandMalformed));
        assert_eq!(
            Command::decode(&encoded[..encoded.len() - 1]),
            Err(KvError::CommandMalformed)
        );
    }

    #[test]
    fn decode_validates_limits() {
        assert_eq!(
            Command::decode(&put(b"", b"v").encode()),
            Err(KvError::KeyEmpty)
        );
        let oversized = vec![COMMAND_FORMAT_VERSION; KV_COMMAND_BYTES_MAX as usize + 1];
        assert_eq!(
            Command::decode(&oversized),
            Err(KvError::CommandTooLarge {
                length_bytes: KV_COMMAND_BYTES_MAX + 1
            })
        );
    }

    #[test]
    fn validate_checks_every_limit() {
        let long_key = Bytes::from(vec![b'k'; KV_KEY_BYTES_MAX + 1]);
        let big_value = Bytes::from(vec![b'v'; KV_VALUE_BYTES_MAX + 1]);
        let mut command = put(b"k", b"v");
        command.operation = Operation::Delete { key: long_key };
        assert!(matches!(
            command.validate(),
            Err(KvError::KeyTooLong { .. })
        ));
        command.operation = Operation::Put {
            key: Bytes::from_static(b"k"),
            value: big_value,
        };
        assert!(matches!(
            command.validate(),
            Err(KvError::ValueTooLarge { .. })
        ));
        command.operation = Operation::Txn(Txn {
            success: vec![
                TxnOperation::Get {
                    key: Bytes::from_static(b"k")
                };
                KV_TXN_OPERATIONS_MAX + 1
            ],
            ..Txn::default()
        });
        assert!(matches!(
            command.validate(),
            Err(KvError::TooManyTxnOperations { .. })
        ));
        command.operation = Operation::Compact { revision: 0 };
        command.request_id = Some(RequestId {
            client_id: Bytes::from(vec![b'c'; KV_SESSION_CLIENT_ID_BYTES_MAX + 1]),
            sequence: 1,
        });
        assert!(matches!(
            command.validate(),
            Err(KvError::ClientIdInvalid { .. })
        ));
        command.request_id = Some(RequestId {
            client_id: Bytes::from_static(b"c"),
            sequence: 0,
        });
        assert_eq!(command.validate(), Err(KvError::SequenceZero));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Command::decode(&bytes);
        }

        #[test]
        fn corrupted_encodings_never_panic(index in 0usize..64, byte in any::<u8>()) {
            let mut encoded = put(b"some-key", b"some-value").encode().to_vec();
            let index = index % encoded.len();
            encoded[index] = byte;
            if let Ok(command) = Command::decode(&encoded) {
                prop_assert!(command.validate().is_ok());
            }
        }
    }
}
