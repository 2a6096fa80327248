//! `POST /v1/txn`: JSON transactions.
//!
//! Request: `{"compare":[…],"success":[ops],"failure":[ops]}` (each list optional,
//! empty by default). A compare is `{"key","target","op","value"}` with `target`
//! one of `value`, `version`, `mod_revision` and `op` one of `==`, `!=`, `<`,
//! `>`; a `value` target takes a string `value` (or `value_base64`), the others
//! an integer `value`. An op is `{"op":"put","key","value"}`, `{"op":"get","key"}`
//! or `{"op":"delete","key"}`; every key and value may be given as `key_base64`
//! / `value_base64` instead. Unknown fields and unknown ops are 400.
//!
//! Response: `{"succeeded":bool,"results":[…],"revision":N}` with one result per
//! op of the branch that ran: `{"op":"put"}`, `{"op":"delete","deleted":0|1}`,
//! `{"op":"get","item":{key,value,create_revision,mod_revision,version}}` or
//! `{"op":"get","item":null}` for a missing key.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use understudy_kv::{
    Command, Compare, CompareOperator, CompareTarget, Operation, Response, Txn, TxnOperation,
    TxnResult,
};
use understudy_types::limits::KV_TXN_OPERATIONS_MAX;

use crate::encoding::{item_json, json_bytes, parse_query};
use crate::error::ApiError;
use crate::kv::{parse_request_id, read_json_body, submit, unexpected_response};
use crate::ApiState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnRequest {
    #[serde(default)]
    compare: Vec<CompareRequest>,
    #[serde(default)]
    success: Vec<OperationRequest>,
    #[serde(default)]
    failure: Vec<OperationRequest>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareRequest {
    key: Option<String>,
    key_base64: Option<String>,
    target: String,
    op: String,
    value: Option<Value>,
    value_base64: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperationRequest {
    op: String,
    key: Option<String>,
    key_base64: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
}

/// `POST /v1/txn`.
pub(crate) async fn txn(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    parse_query(uri.query(), &[])?;
    let request_id = parse_request_id(&headers)?;
    let request: TxnRequest = read_json_body(&headers, body).await?;
    let command = Command {
        request_id,
        operation: Operation::Txn(build_txn(request)?),
    };
    match submit(&state, command).await? {
        Response::Txn {
            succeeded,
            results,
            revision,
        } => {
            let results: Vec<Value> = results.iter().map(result_json).collect();
            Ok(Json(json!({
                "succeeded": succeeded,
                "results": results,
                "revision": revision,
            })))
        }
        other => Err(unexpected_response("txn", &other)),
    }
}

fn build_txn(request: TxnRequest) -> Result<Txn, ApiError> {
    // Checked before converting so an oversized list is refused before its
    // (possibly large) keys and values are decoded and copied.
    for count in [
        request.compare.len(),
        request.success.len(),
        request.failure.len(),
    ] {
        if count > KV_TXN_OPERATIONS_MAX {
            return Err(ApiError::TooLarge {
                detail: format!(
                    "transaction list of {count} entries exceeds the limit of {KV_TXN_OPERATIONS_MAX}"
                ),
            });
        }
    }
    Ok(Txn {
        compares: request
            .compare
            .into_iter()
            .map(build_compare)
            .collect::<Result<_, _>>()?,
        success: build_operations(request.success)?,
        failure: build_operations(request.failure)?,
    })
}

fn build_compare(request: CompareRequest) -> Result<Compare, ApiError> {
    let key = json_bytes("key", request.key, request.key_base64)?;
    let operator = match request.op.as_str() {
        "==" => CompareOperator::Equal,
        "!=" => CompareOperator::NotEqual,
        "<" => CompareOperator::Less,
        ">" => CompareOperator::Greater,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown compare op {other:?}; expected ==, !=, < or >"
            )))
        }
    };
    let integer_operand = |value: Option<Value>, base64: Option<String>| match (value, base64) {
        (Some(Value::Number(number)), None) => number.as_u64().ok_or_else(|| {
            ApiError::bad_request("a version or mod_revision compare takes a non-negative integer")
        }),
        _ => Err(ApiError::bad_request(
            "a version or mod_revision compare takes an integer \"value\"",
        )),
    };
    let target = match request.target.as_str() {
        "value" => {
            let text = match request.value {
                None => None,
                Some(Value::String(text)) => Some(text),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "a value compare takes a string \"value\" (or \"value_base64\")",
                    ))
                }
            };
            CompareTarget::Value(json_bytes("value", text, request.value_base64)?)
        }
        "version" => CompareTarget::Version(integer_operand(request.value, request.value_base64)?),
        "mod_revision" => {
            CompareTarget::ModRevision(integer_operand(request.value, request.value_base64)?)
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown compare target {other:?}; expected value, version or mod_revision"
            )))
        }
    };
    Ok(Compare {
        key,
        target,
        operator,
    })
}

fn build_operations(requests: Vec<OperationRequest>) -> Result<Vec<TxnOperation>, ApiError> {
    requests.into_iter().map(build_operation).collect()
}

fn build_operation(request: OperationRequest) -> Result<TxnOperation, ApiError> {
    let key = json_bytes("key", request.key, request.key_base64)?;
    let has_value = request.value.is_some() || request.value_base64.is_some();
    match request.op.as_str() {
        "put" => Ok(TxnOperation::Put {
            key,
            value: json_bytes("value", request.value, request.value_base64)?,
        }),
        "get" | "delete" if has_value => Err(ApiError::bad_request(format!(
            "a {} op takes no value",
            request.op
        ))),
        "get" => Ok(TxnOperation::Get { key }),
        "delete" => Ok(TxnOperation::Delete { key }),
        other => Err(ApiError::bad_request(format!(
            "unknown op {other:?}; expected put, get or delete"
        ))),
    }
}

fn result_json(result: &TxnResult) -> Value {
    match result {
        TxnResult::Put => json!({"op": "put"}),
        TxnResult::Delete { deleted } => json!({"op": "delete", "deleted": deleted}),
        TxnResult::Get { item } => json!({
            "op": "get",
            "item": item.as_ref().map(|item| Value::Object(item_json(item))),
        }),
    }
}
