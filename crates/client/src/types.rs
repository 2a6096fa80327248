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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyValue {
    /// The key (empty when it is not UTF-8; see `key_base64`).
    #[serde(default)]
    pub key: String,
    /// The key in base64, when it is not UTF-8.
    #[serde(default)]
    pub key_base64: Option<String>,
    /// The value (`value` or `value_base64` in JSON).
    #[serde(flatten)]
    pub value: JsonBytes,
    /// The revision of the store when read (present on single-key reads).
    #[serde(default)]
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

/// The serialised form of a [`KeyValue`]: the key in exactly one of its forms.
#[derive(Serialize)]
struct KeyValueJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<&'a str>,
    #[serde(flatten)]
    value: &'a JsonBytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

impl Serialize for KeyValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        KeyValueJson {
            key: self.key_base64.is_none().then_some(self.key.as_str()),
            key_base64: self.key_base64.as_deref(),
            value: &self.value,
            revision: self.revision,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
        .serialize(serializer)
    }
}

impl KeyValue {
    /// The key's bytes (decoded from `key_base64` when it is not UTF-8).
    pub fn key_bytes(&self) -> Result<Bytes, String> {
        key_bytes(&self.key, self.key_base64.as_deref())
    }
}

/// A key's bytes from its two JSON forms: `key_base64` when the key is not
/// UTF-8, else `key`.
fn key_bytes(key: &str, key_base64: Option<&str>) -> Result<Bytes, String> {
    match key_base64 {
        Some(encoded) => decode_pair("key", None, Some(encoded)),
        None => Ok(Bytes::copy_from_slice(key.as_bytes())),
    }
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

/// A transaction compare, exactly as `POST /v1/txn` accepts it:
/// `{"key"|"key_base64","target","op","value"|"value_base64"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The key compared, when given as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key compared in standard base64, for a key that is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
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

impl Compare {
    /// A compare of `key`'s `target` with `operand` (a string for a value
    /// compare, an integer otherwise), the key in its text or base64 form.
    pub fn new(key: &[u8], target: CompareTarget, op: &str, operand: serde_json::Value) -> Compare {
        let key = JsonBytes::from_bytes(key);
        Compare {
            key: key.value,
            key_base64: key.value_base64,
            target,
            op: op.to_string(),
            value: Some(operand),
            value_base64: None,
        }
    }
}

/// What a transaction operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpKind {
    /// Writes a key (takes a value).
    Put,
    /// Reads a key.
    Get,
    /// Deletes a key.
    Delete,
}

/// One operation of a transaction branch, exactly as `POST /v1/txn` accepts
/// it: `{"op","key"|"key_base64"}` plus `"value"|"value_base64"` for a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxnOp {
    /// `put`, `get` or `delete`.
    pub op: TxnOpKind,
    /// The key, when given as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in standard base64, for a key that is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value of a put, when given as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value of a put in standard base64, for bytes that are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl TxnOp {
    fn with_key(op: TxnOpKind, key: &[u8]) -> TxnOp {
        let key = JsonBytes::from_bytes(key);
        TxnOp {
            op,
            key: key.value,
            key_base64: key.value_base64,
            value: None,
            value_base64: None,
        }
    }

    /// Writes `value` to `key`.
    pub fn put(key: &[u8], value: &[u8]) -> TxnOp {
        let value = JsonBytes::from_bytes(value);
        TxnOp {
            value: value.value,
            value_base64: value.value_base64,
            ..TxnOp::with_key(TxnOpKind::Put, key)
        }
    }

    /// Reads `key`.
    pub fn get(key: &[u8]) -> TxnOp {
        TxnOp::with_key(TxnOpKind::Get, key)
    }

    /// Deletes `key`.
    pub fn delete(key: &[u8]) -> TxnOp {
        TxnOp::with_key(TxnOpKind::Delete, key)
    }

    /// Checks the rules the server applies (one key form, valid base64, a
    /// value for a put and none otherwise), so a bad request is refused
    /// before it is sent.
    pub fn validate(&self) -> Result<(), String> {
        decode_pair("key", self.key.as_deref(), self.key_base64.as_deref())?;
        let has_value = self.value.is_some() || self.value_base64.is_some();
        match self.op {
            TxnOpKind::Put => {
                decode_pair("value", self.value.as_deref(), self.value_base64.as_deref())?;
                Ok(())
            }
            TxnOpKind::Get | TxnOpKind::Delete if has_value => {
                Err(format!("a {:?} op takes no value", self.op).to_lowercase())
            }
            TxnOpKind::Get | TxnOpKind::Delete => Ok(()),
        }
    }
}

/// Decodes the JSON pair `name` / `name_base64`, exactly one of which must be
/// present (the server's rule).
pub fn decode_pair(name: &str, text: Option<&str>, base64: Option<&str>) -> Result<Bytes, String> {
    match (text, base64) {
        (Some(text), None) => Ok(Bytes::copy_from_slice(text.as_bytes())),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|_| format!("{name}_base64 is not valid standard base64")),
        (Some(_), Some(_)) => Err(format!("give either {name} or {name}_base64, not both")),
        (None, None) => Err(format!("{name} (or {name}_base64) is required")),
    }
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

impl TxnRequest {
    /// Checks every compare and op against the server's rules (see
    /// [`TxnOp::validate`]); the error names the offending entry.
    pub fn validate(&self) -> Result<(), String> {
        for (index, compare) in self.compare.iter().enumerate() {
            let at = |detail: String| format!("compare[{index}]: {detail}");
            decode_pair("key", compare.key.as_deref(), compare.key_base64.as_deref())
                .map_err(at)?;
            let operand_ok = match compare.target {
                CompareTarget::Value => match &compare.value {
                    None | Some(serde_json::Value::String(_)) => decode_pair(
                        "value",
                        compare.value.as_ref().and_then(serde_json::Value::as_str),
                        compare.value_base64.as_deref(),
                    )
                    .map(|_| ()),
                    Some(_) => Err("a value compare takes a string \"value\"".into()),
                },
                CompareTarget::Version | CompareTarget::ModRevision => {
                    match (&compare.value, &compare.value_base64) {
                        (Some(serde_json::Value::Number(number)), None) if number.is_u64() => {
                            Ok(())
                        }
                        _ => Err("a version or mod_revision compare takes a non-negative integer \"value\"".into()),
                    }
                }
            };
            operand_ok.map_err(at)?;
        }
        for (branch, operations) in [("success", &self.success), ("failure", &self.failure)] {
            for (index, operation) in operations.iter().enumerate() {
                operation
                    .validate()
                    .map_err(|detail| format!("{branch}[{index}]: {detail}"))?;
            }
        }
        Ok(())
    }
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

/// One change streamed by a watch. Serialises exactly as the server's line:
/// `{"type":"put","key"|"key_base64","value"|"value_base64","revision",
/// "create_revision","mod_revision","version"}` for a put and
/// `{"type":"delete","key"|"key_base64","revision"}` for a delete.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WatchEvent {
    /// `put` or `delete` (`"type"` in the JSON).
    #[serde(rename = "type", alias = "kind", default)]
    pub kind: String,
    /// The key changed (empty when it is not UTF-8; see `key_base64`).
    #[serde(default)]
    pub key: String,
    /// The key in base64, when it is not UTF-8.
    #[serde(default)]
    pub key_base64: Option<String>,
    /// The value after the change (neither field for a delete).
    #[serde(flatten)]
    pub value: JsonBytes,
    /// The revision of the change (the events of one transaction share it).
    pub revision: u64,
    /// The key's mod revision after a put (equals `revision`); none for a delete.
    #[serde(default)]
    pub mod_revision: Option<u64>,
    /// Revision at which a put's key was created; none for a delete.
    #[serde(default)]
    pub create_revision: Option<u64>,
    /// The key's version after a put; none for a delete.
    #[serde(default)]
    pub version: Option<u64>,
}

/// The serialised form of a [`WatchEvent`]: only the fields the server sends.
#[derive(Serialize)]
struct WatchEventLine<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<&'a str>,
    #[serde(flatten)]
    value: &'a JsonBytes,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mod_revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

impl Serialize for WatchEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WatchEventLine {
            kind: &self.kind,
            // A key travels in exactly one of its two forms.
            key: self.key_base64.is_none().then_some(self.key.as_str()),
            key_base64: self.key_base64.as_deref(),
            value: &self.value,
            revision: self.revision,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
        .serialize(serializer)
    }
}

impl WatchEvent {
    /// The key's bytes (decoded from `key_base64` when it is not UTF-8).
    pub fn key_bytes(&self) -> Result<Bytes, String> {
        key_bytes(&self.key, self.key_base64.as_deref())
    }
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
        let expected: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), expected);
        let binary_key =
            r#"{"key_base64":"/wA=","value":"v","create_revision":3,"mod_revision":7,"version":2}"#;
        let parsed: KeyValue = serde_json::from_str(binary_key).unwrap();
        assert_eq!(parsed.key_bytes().unwrap().as_ref(), &[0xff, 0x00]);
        let expected: serde_json::Value = serde_json::from_str(binary_key).unwrap();
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            expected,
            "no empty \"key\""
        );
    }

    #[test]
    fn txn_request_serializes_to_the_contract_shape() {
        let request = TxnRequest {
            compare: vec![Compare::new(
                b"k",
                CompareTarget::ModRevision,
                "==",
                serde_json::json!(4),
            )],
            success: vec![TxnOp::put(b"k", b"v")],
            failure: vec![TxnOp::get(b"k")],
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
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn txn_request_round_trips_base64_keys_and_values() {
        let json = serde_json::json!({
            "compare":[
                {"key_base64":"/wA=","target":"value","op":"==","value_base64":"AQI="},
                {"key":"t","target":"version","op":">","value":0}
            ],
            "success":[
                {"op":"put","key_base64":"/wA=","value_base64":"/w=="},
                {"op":"delete","key_base64":"/wA="}
            ],
            "failure":[{"op":"get","key_base64":"/wA="}]
        });
        let request: TxnRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(request.validate(), Ok(()));
        assert_eq!(request.success[0], TxnOp::put(&[0xff, 0x00], &[0xff]));
        assert_eq!(request.failure[0], TxnOp::get(&[0xff, 0x00]));
        assert_eq!(serde_json::to_value(&request).unwrap(), json);
    }

    #[test]
    fn txn_request_refuses_what_the_server_refuses() {
        let invalid = |json: serde_json::Value| {
            serde_json::from_value::<TxnRequest>(json)
                .map_err(|error| error.to_string())
                .and_then(|request| request.validate())
                .unwrap_err()
        };
        let both =
            invalid(serde_json::json!({"success":[{"op":"get","key":"k","key_base64":"aw=="}]}));
        assert!(both.contains("not both"), "{both}");
        let no_key = invalid(serde_json::json!({"success":[{"op":"delete"}]}));
        assert!(
            no_key.contains("key (or key_base64) is required"),
            "{no_key}"
        );
        let bad_base64 =
            invalid(serde_json::json!({"success":[{"op":"put","key":"k","value_base64":"!"}]}));
        assert!(bad_base64.contains("value_base64"), "{bad_base64}");
        let value_on_get =
            invalid(serde_json::json!({"failure":[{"op":"get","key":"k","value":"v"}]}));
        assert!(value_on_get.contains("takes no value"), "{value_on_get}");
        let string_version = invalid(
            serde_json::json!({"compare":[{"key":"k","target":"version","op":"==","value":"1"}]}),
        );
        assert!(string_version.contains("integer"), "{string_version}");
        let unknown =
            invalid(serde_json::json!({"success":[{"op":"put","key":"k","value":"v","lease":1}]}));
        assert!(unknown.contains("lease"), "{unknown}");
        let unknown_op = invalid(serde_json::json!({"success":[{"op":"range","key":"k"}]}));
        assert!(unknown_op.contains("range"), "{unknown_op}");
    }

    #[test]
    fn watch_events_serialise_as_the_server_sends_them() {
        for line in [
            r#"{"type":"delete","key":"a","revision":6}"#,
            r#"{"type":"delete","key_base64":"/wA=","revision":7}"#,
            r#"{"type":"put","key":"a","value":"1","revision":8,"create_revision":3,"mod_revision":8,"version":2}"#,
            r#"{"type":"put","key_base64":"/wA=","value_base64":"/w==","revision":9,"create_revision":9,"mod_revision":9,"version":1}"#,
        ] {
            let event: WatchEvent = serde_json::from_str(line).unwrap();
            let expected: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_value(&event).unwrap(), expected, "{line}");
        }
        let binary: WatchEvent =
            serde_json::from_str(r#"{"type":"delete","key_base64":"/wA=","revision":7}"#).unwrap();
        assert_eq!(binary.key_bytes().unwrap().as_ref(), &[0xff, 0x00]);
    }
}
