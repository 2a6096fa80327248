//! The JSON shapes of the HTTP API (issue 3, section 3), as the client sees them.
//!
//! Keys and values travel as JSON strings; bytes that are not UTF-8 travel as
//! base64 in a `*_base64` field instead. [`JsonBytes`] hides that split.

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Bytes as the API carries them in JSON: `"value"` when UTF-8, otherwise
/// `"value_base64"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonBytes {
    /// The bytes, when they are UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The bytes in standard base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl JsonBytes {
    /// Encodes bytes, choosing the plain form when they are UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> JsonBytes {
        match std::str::from_utf8(bytes) {
            Ok(text) => JsonBytes {
                value: Some(text.to_string()),
                value_base64: None,
            },
            Err(_) => JsonBytes {
                value: None,
                value_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    /// Decodes the bytes (empty if neither field is present).
    pub fn to_bytes(&self) -> Result<Bytes, String> {
        if let Some(text) = &self.value {
            return Ok(Bytes::copy_from_slice(text.as_bytes()));
        }
        match &self.value_base64 {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|error| format!("bad value_base64: {error}")),
            None => Ok(Bytes::new()),
        }
    }
}

/// The answer to a put: `{"revision":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The store revision of the write.
    pub revision: u64,
}

/// The answer to a delete: `{"deleted":0|1,"revision":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// How many keys were deleted (0 or 1).
    pub deleted: u64,
    /// The store revision after the delete.
    pub revision: u64,
}

/// One key with its metadata, as `GET /v1/kv/{key}` and ranges return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key (empty when it is not UTF-8; see `key_base64`).
    #[serde(default)]
    pub key: String,
    /// The key in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value (`value` or `value_base64` in JSON).
    #[serde(flatten)]
    pub value: JsonBytes,
    /// The revision of the store when read (present on single-key reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Revision at which the key was (re-)created.
    #[serde(default)]
    pub create_revision: u64,
    /// Revision of the key's last modification.
    #[serde(default)]
    pub mod_revision: u64,
    /// Puts since creation.
    #[serde(default)]
    pub version: u64,
}

/// The answer to a prefix range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// Matching keys in key order.
    pub items: Vec<KeyValue>,
    /// The store revision when read.
    pub revision: u64,
    /// Whether more keys match beyond the limit.
    #[serde(default)]
    pub more: bool,
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// Whatever the answering node has applied; may be stale.
    Serializable,
}

/// What a transaction compare looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    /// The value (compared as bytes).
    Value,
    /// The version (an integer).
    Version,
    /// The mod revision (an integer).
    ModRevision,
}

/// A transaction compare: `{"key","target","op","value"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The key compared.
    pub key: String,
    /// What is compared.
    pub target: CompareTarget,
    /// One of `==`, `!=`, `<`, `>`.
    pub op: String,
    /// An integer for version and mod_revision, a string for value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// The compared value as base64, for a value compare on bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TxnOp {
    /// Writes a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        #[serde(flatten)]
        value: JsonBytes,
    },
    /// Reads a key.
    Get {
        /// The key.
        key: String,
    },
    /// Deletes a key.
    Delete {
        /// The key.
        key: String,
    },
}

/// A transaction: if every compare holds, `success` runs, otherwise `failure`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnRequest {
    /// The conditions.
    #[serde(default)]
    pub compare: Vec<Compare>,
    /// Operations when every compare holds.
    #[serde(default)]
    pub success: Vec<TxnOp>,
    /// Operations otherwise.
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

/// The answer to a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether the success branch ran.
    pub succeeded: bool,
    /// One result per operation of the branch that ran (shapes as the server
    /// sends them).
    #[serde(default)]
    pub results: Vec<serde_json::Value>,
    /// The store revision after the transaction.
    pub revision: u64,
}

/// One change streamed by a watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `put` or `delete` (`"type"` in the JSON).
    #[serde(rename = "type", alias = "kind", default)]
    pub kind: String,
    /// The key changed (empty when it is not UTF-8; see `key_base64`).
    #[serde(default)]
    pub key: String,
    /// The key in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value after the change (empty for a delete).
    #[serde(flatten)]
    pub value: JsonBytes,
    /// The revision of the change (the events of one transaction share it).
    pub revision: u64,
    /// The key's mod revision after the change (equals `revision`).
    #[serde(default)]
    pub mod_revision: u64,
    /// Revision at which the key was created (0 for a delete).
    #[serde(default)]
    pub create_revision: u64,
    /// The key's version after the change (0 for a delete).
    #[serde(default)]
    pub version: u64,
}

/// One member as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The node id.
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown`.
    #[serde(default)]
    pub role: String,
    /// Where peers reach it.
    #[serde(default)]
    pub peer_address: String,
    /// Where clients reach it.
    #[serde(default)]
    pub client_address: String,
    /// The leader's view of its replicated prefix.
    #[serde(default)]
    pub match_index: Option<u64>,
    /// Its commit index, if known.
    #[serde(default)]
    pub commit_index: Option<u64>,
    /// Its applied index, if known.
    #[serde(default)]
    pub applied_index: Option<u64>,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    #[serde(default)]
    pub node_id: u64,
    /// The leader it knows of.
    #[serde(default)]
    pub leader_id: Option<u64>,
    /// Its current term.
    #[serde(default)]
    pub term: u64,
    /// Every member of the configuration.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
}

/// A request to add a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMember {
    /// The new node's id (never used before).
    pub id: u64,
    /// Where peers will reach it.
    pub peer_address: String,
    /// Where clients will reach it.
    pub client_address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_choose_plain_or_base64() {
        let plain = JsonBytes::from_bytes(b"hello");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"value":"hello"}"#
        );
        let binary = JsonBytes::from_bytes(&[0xff, 0x00]);
        assert_eq!(
            serde_json::to_string(&binary).unwrap(),
            r#"{"value_base64":"/wA="}"#
        );
        assert_eq!(binary.to_bytes().unwrap().as_ref(), &[0xff, 0x00]);
    }

    #[test]
    fn key_value_parses_both_value_forms() {
        let text = r#"{"key":"k","value_base64":"/wA=","revision":7,"create_revision":3,"mod_revision":7,"version":2}"#;
        let parsed: KeyValue = serde_json::from_str(text).unwrap();
        assert_eq!(parsed.value.to_bytes().unwrap().as_ref(), &[0xff, 0x00]);
        assert_eq!((parsed.create_revision, parsed.version), (3, 2));
    }

    #[test]
    fn txn_request_serializes_to_the_contract_shape() {
        let request = TxnRequest {
            compare: vec![Compare {
                key: "k".into(),
                target: CompareTarget::ModRevision,
                op: "==".into(),
                value: Some(serde_json::json!(4)),
                value_base64: None,
            }],
            success: vec![TxnOp::Put {
                key: "k".into(),
                value: JsonBytes::from_bytes(b"v"),
            }],
            failure: vec![TxnOp::Get { key: "k".into() }],
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "compare":[{"key":"k","target":"mod_revision","op":"==","value":4}],
                "success":[{"op":"put","key":"k","value":"v"}],
                "failure":[{"op":"get","key":"k"}]
            })
        );
        let back: TxnRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
    }
}
