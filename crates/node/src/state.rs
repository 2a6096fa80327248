//! The replicated state machine a node's log carries: key-value commands plus the
//! members' addresses (so `GET /v1/cluster` and peers can find new members).
//!
//! Encoding of a log entry's command: one tag byte, then the body. Snapshot: one
//! version byte, then a postcard body holding the addresses and the kv snapshot.

use crate::process::table::{ProcessCommand, ProcessOutcome, ProcessRefusal, ProcessTable};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use understudy_kv::{Command, KvError, Outcome, Store};
use understudy_types::limits::{NODE_ADDRESS_BYTES_MAX, RAFT_ENTRY_BYTES_MAX, SNAPSHOT_BYTES_MAX};

/// Tag byte of [`NodeCommand::Kv`].
const TAG_KV: u8 = 1;
/// Tag byte of [`NodeCommand::SetMemberAddresses`].
const TAG_ADDRESSES: u8 = 2;
/// Tag byte of [`NodeCommand::Process`].
const TAG_PROCESS: u8 = 3;
/// Format version of [`NodeState::snapshot`]; its first byte. Version 1 (no
/// process table) is still read.
pub const NODE_SNAPSHOT_FORMAT_VERSION: u8 = 2;

/// Where a member can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// `host:port` of its peer listener.
    pub peer: String,
    /// `http://host:port` of its client listener.
    pub client: String,
}

/// One command of the node's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeCommand {
    /// A key-value write.
    Kv(Command),
    /// Records where member `id` can be reached.
    SetMemberAddresses {
        /// The member.
        id: u64,
        /// Its addresses.
        address: MemberAddress,
    },
    /// A change to the process table (the coordinator of process pairs).
    Process(ProcessCommand),
}

#[derive(Serialize, Deserialize)]
struct AddressesBody {
    id: u64,
    address: MemberAddress,
}

impl NodeCommand {
    /// The bytes a log entry carries.
    pub fn encode(&self) -> Bytes {
        match self {
            NodeCommand::Kv(command) => {
                let body = command.encode();
                let mut bytes = Vec::with_capacity(body.len() + 1);
                bytes.push(TAG_KV);
                bytes.extend_from_slice(&body);
                Bytes::from(bytes)
            }
            NodeCommand::SetMemberAddresses { id, address } => {
                let body = AddressesBody {
                    id: *id,
                    address: address.clone(),
                };
                let mut bytes = vec![TAG_ADDRESSES];
                // Serializing a struct of integers and strings into a Vec cannot fail.
                bytes.extend(postcard::to_allocvec(&body).expect("postcard encodes plain data"));
                Bytes::from(bytes)
            }
            NodeCommand::Process(command) => {
                let mut bytes = vec![TAG_PROCESS];
                // Plain data into a Vec: cannot fail.
                bytes.extend(postcard::to_allocvec(command).expect("postcard encodes plain data"));
                Bytes::from(bytes)
            }
        }
    }
}

/// Whether an address is acceptable to record.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() || address.len() > NODE_ADDRESS_BYTES_MAX {
        return Err(format!(
            "address of {} bytes is empty or exceeds {NODE_ADDRESS_BYTES_MAX}",
            address.len()
        ));
    }
    Ok(())
}

/// What applying one command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A key-value command's outcome.
    Kv(Outcome),
    /// Member addresses were recorded (or the entry was malformed and ignored).
    Addresses,
    /// A process-table command's outcome.
    Process(Result<ProcessOutcome, ProcessRefusal>),
}

/// The state machine: the key-value store and the members' addresses.
#[derive(Clone, Debug, Default)]
pub struct NodeState {
    /// The key-value store.
    pub store: Store,
    /// Where each member can be reached, as replicated.
    pub addresses: BTreeMap<u64, MemberAddress>,
    /// The process pairs' coordinator state.
    pub processes: ProcessTable,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBodyV1 {
    addresses: Vec<(u64, MemberAddress)>,
    kv: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    addresses: Vec<(u64, MemberAddress)>,
    kv: Vec<u8>,
    processes: ProcessTable,
}

impl NodeState {
    /// Applies the committed entry at `index`. Malformed entries are handled the
    /// same way on every replica, so they change nothing but are not fatal.
    pub fn apply(&mut self, index: u64, encoded: &[u8]) -> Applied {
        match encoded.split_first() {
            Some((&TAG_KV, body)) => Applied::Kv(self.store.apply_encoded(index, body)),
            Some((&TAG_ADDRESSES, body)) => {
                if let Ok(parsed) = postcard::from_bytes::<AddressesBody>(body) {
                    if check_address(&parsed.address.peer).is_ok()
                        && check_address(&parsed.address.client).is_ok()
                    {
                        self.addresses.insert(parsed.id, parsed.address);
                    }
                }
                Applied::Addresses
            }
            Some((&TAG_PROCESS, body)) => match postcard::from_bytes::<ProcessCommand>(body) {
                Ok(command) => Applied::Process(self.processes.apply(index, command)),
                Err(error) => Applied::Process(Err(ProcessRefusal::Invalid(error.to_string()))),
            },
            _ => Applied::Kv(Err(KvError::CommandMalformed)),
        }
    }

    /// The state's serialized form, for Raft snapshots.
    pub fn snapshot(&self) -> Bytes {
        let body = SnapshotBody {
            addresses: self
                .addresses
                .iter()
                .map(|(id, address)| (*id, address.clone()))
                .collect(),
            kv: self.store.snapshot().to_vec(),
            processes: self.processes.clone(),
        };
        let mut bytes = vec![NODE_SNAPSHOT_FORMAT_VERSION];
        // Serializing plain data into a Vec cannot fail.
        bytes.extend(postcard::to_allocvec(&body).expect("postcard encodes plain data"));
        Bytes::from(bytes)
    }

    /// Rebuilds the state from [`NodeState::snapshot`]'s output; empty data is the
    /// bootstrap snapshot of a new group (an empty state).
    pub fn restore(data: &[u8]) -> Result<NodeState, String> {
        if data.is_empty() {
            return Ok(NodeState::default());
        }
        if data.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(format!("snapshot of {} bytes is too large", data.len()));
        }
        let (version, body) = data.split_first().expect("checked non-empty above");
        let malformed = |error: postcard::Error| format!("snapshot malformed: {error}");
        let body: SnapshotBody = match *version {
            1 => {
                let old: SnapshotBodyV1 = postcard::from_bytes(body).map_err(malformed)?;
                SnapshotBody {
                    addresses: old.addresses,
                    kv: old.kv,
                    processes: ProcessTable::default(),
                }
            }
            NODE_SNAPSHOT_FORMAT_VERSION => postcard::from_bytes(body).map_err(malformed)?,
            other => return Err(format!("snapshot format version {other} is not supported")),
        };
        let store = Store::restore(&body.kv).map_err(|error| error.to_string())?;
        Ok(NodeState {
            store,
            addresses: body.addresses.into_iter().collect(),
            processes: body.processes,
        })
    }
}

/// Whether an encoded command fits in one log entry.
pub fn check_command_size(encoded: &[u8]) -> Result<(), KvError> {
    if encoded.len() as u64 > RAFT_ENTRY_BYTES_MAX {
        return Err(KvError::CommandTooLarge {
            length_bytes: encoded.len() as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_kv::{Operation, Response};

    fn put(key: &str, value: &str) -> NodeCommand {
        NodeCommand::Kv(Command {
            request_id: None,
            operation: Operation::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            },
        })
    }

    #[test]
    fn commands_apply_and_snapshots_round_trip() {
        let mut state = NodeState::default();
        let outcome = state.apply(1, &put("a", "1").encode());
        assert_eq!(outcome, Applied::Kv(Ok(Response::Put { revision: 1 })));
        let address = MemberAddress {
            peer: "127.0.0.1:1".into(),
            client: "http://127.0.0.1:2".into(),
        };
        let command = NodeCommand::SetMemberAddresses {
            id: 7,
            address: address.clone(),
        };
        assert_eq!(state.apply(2, &command.encode()), Applied::Addresses);
        let restored = NodeState::restore(&state.snapshot()).expect("own snapshot restores");
        assert_eq!(restored.addresses.get(&7), Some(&address));
        assert_eq!(restored.store, state.store);
    }

    #[test]
    fn malformed_entries_and_snapshots_are_refused() {
        let mut state = NodeState::default();
        assert_eq!(
            state.apply(1, &[9, 9, 9]),
            Applied::Kv(Err(KvError::CommandMalformed))
        );
        assert!(NodeState::restore(&[2, 0]).is_err());
        assert!(NodeState::restore(&[NODE_SNAPSHOT_FORMAT_VERSION, 0xff]).is_err());
    }
}
