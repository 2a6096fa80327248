//! Single-key reads and writes, prefix ranges and compaction.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, Uri};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use understudy_kv::{Command, Operation, RequestId, Response};
use understudy_types::limits::{
    API_JSON_BODY_BYTES_MAX, KV_COMMAND_BYTES_MAX, KV_KEY_BYTES_MAX, KV_RANGE_LIMIT_MAX,
    KV_SESSION_CLIENT_ID_BYTES_MAX, KV_VALUE_BYTES_MAX,
};

use crate::encoding::{
    item_json, parse_query, parse_unsigned, percent_decode, query_value, read_body_limited,
};
use crate::error::ApiError;
use crate::service::Consistency;
use crate::ApiState;

/// Items a range returns when the request names no limit.
pub const RANGE_LIMIT_DEFAULT: usize = 100;

/// The path under which keys are addressed.
const KEY_PATH_PREFIX: &str = "/v1/kv/";

/// The header carrying `<client>:<seq>` for exactly-once writes.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `GET /v1/kv/{key}[?consistency=serializable|linearizable]`.
pub(crate) async fn get_key(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let key = path_key(&uri)?;
    let parameters = parse_query(uri.query(), &["consistency"])?;
    let consistency = parse_consistency(query_value(&parameters, "consistency"))?;
    let result = state.service.get(key.clone(), consistency).await?;
    let Some(item) = result.item else {
        return Err(ApiError::NotFound {
            detail: format!("no key {}", String::from_utf8_lossy(&key)),
        });
    };
    let mut object = item_json(&item);
    object.insert("revision".into(), result.revision.into());
    Ok(Json(Value::Object(object)))
}

/// `PUT /v1/kv/{key}` with the raw value as body.
pub(crate) async fn put_key(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let key = path_key(&uri)?;
    parse_query(uri.query(), &[])?;
    let request_id = parse_request_id(&headers)?;
    let value =
        read_body_limited(body, declared_length(&headers)?, KV_VALUE_BYTES_MAX as u64).await?;
    let command = Command {
        request_id,
        operation: Operation::Put { key, value },
    };
    match submit(&state, command).await? {
        Response::Put { revision } => Ok(Json(json!({ "revision": revision }))),
        other => Err(unexpected_response("put", &other)),
    }
}

/// `DELETE /v1/kv/{key}`.
pub(crate) async fn delete_key(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = path_key(&uri)?;
    parse_query(uri.query(), &[])?;
    let command = Command {
        request_id: parse_request_id(&headers)?,
        operation: Operation::Delete { key },
    };
    match submit(&state, command).await? {
        Response::Delete { deleted, revision } => {
            Ok(Json(json!({ "deleted": deleted, "revision": revision })))
        }
        other => Err(unexpected_response("delete", &other)),
    }
}

/// `/v1/kv/` names the empty key, which no store holds.
pub(crate) async fn empty_key() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_key",
        detail: "key is empty".into(),
    }
}

/// `GET /v1/kv?prefix=P&limit=N[&consistency=…]`.
pub(crate) async fn range(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let parameters = parse_query(uri.query(), &["prefix", "limit", "consistency"])?;
    let prefix = Bytes::copy_from_slice(query_value(&parameters, "prefix").unwrap_or(b""));
    check_key_length(&prefix)?;
    let limit = match query_value(&parameters, "limit") {
        None => RANGE_LIMIT_DEFAULT,
        Some(raw) => {
            let limit = parse_unsigned("limit", raw)?;
            if limit == 0 || limit > KV_RANGE_LIMIT_MAX as u64 {
                return Err(ApiError::BadRequest {
                    code: "invalid_limit",
                    detail: format!("limit must be in 1..={KV_RANGE_LIMIT_MAX}"),
                });
            }
            limit as usize
        }
    };
    let consistency = parse_consistency(query_value(&parameters, "consistency"))?;
    let result = state.service.range(prefix, limit, consistency).await?;
    let items: Vec<Value> = result
        .items
        .iter()
        .map(|item| Value::Object(item_json(item)))
        .collect();
    Ok(Json(json!({
        "items": items,
        "revision": result.revision,
        "more": result.more,
    })))
}

/// The body of `POST /v1/compact`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactRequest {
    revision: u64,
}

/// `POST /v1/compact {"revision":N}` → `200 {"compact_revision":N}`.
pub(crate) async fn compact(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    parse_query(uri.query(), &[])?;
    let request_id = parse_request_id(&headers)?;
    let request: CompactRequest = read_json_body(&headers, body).await?;
    let command = Command {
        request_id,
        operation: Operation::Compact {
            revision: request.revision,
        },
    };
    match submit(&state, command).await? {
        Response::Compact { compact_revision } => {
            Ok(Json(json!({ "compact_revision": compact_revision })))
        }
        other => Err(unexpected_response("compact", &other)),
    }
}

/// Validates a write and hands it to the service. Validation happens here, before
/// anything is proposed, so bad input costs no log entry and changes nothing.
pub(crate) async fn submit(state: &ApiState, command: Command) -> Result<Response, ApiError> {
    command.validate()?;
    let encoded_length = command.encode().len() as u64;
    if encoded_length > KV_COMMAND_BYTES_MAX {
        return Err(ApiError::TooLarge {
            detail: format!(
                "command of {encoded_length} bytes exceeds the limit of {KV_COMMAND_BYTES_MAX}"
            ),
        });
    }
    Ok(state.service.write(command).await?)
}

/// A service that answers a write with the wrong kind of response has a bug. The
/// write may have been applied, so the only honest answer is "outcome unknown".
pub(crate) fn unexpected_response(operation: &str, response: &Response) -> ApiError {
    tracing::error!(
        ?response,
        operation,
        "service answered with the wrong response kind"
    );
    ApiError::Timeout {
        detail: format!("internal error: unexpected response to {operation}"),
    }
}

/// Reads a JSON request body within `API_JSON_BODY_BYTES_MAX` and parses it.
pub(crate) async fn read_json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let body = read_body_limited(body, declared_length(headers)?, API_JSON_BODY_BYTES_MAX).await?;
    parse_json(&body)
}

/// Parses a JSON object body, answering 400 with serde's explanation. Anything
/// but an object is refused first: serde would otherwise accept a JSON array as
/// a struct with all-default fields.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bad_json = |error: serde_json::Error| ApiError::BadRequest {
        code: "bad_json",
        detail: error.to_string(),
    };
    let value: Value = serde_json::from_slice(body).map_err(bad_json)?;
    if !value.is_object() {
        return Err(ApiError::BadRequest {
            code: "bad_json",
            detail: "the body must be a JSON object".into(),
        });
    }
    serde_json::from_value(value).map_err(bad_json)
}

/// The request's `Content-Length`, if declared (a malformed one is a 400).
pub(crate) fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(CONTENT_LENGTH) else {
        return Ok(None);
    };
    parse_unsigned("Content-Length", value.as_bytes()).map(Some)
}

/// The percent-decoded bytes of the key: everything after `/v1/kv/`. Taken from
/// the raw path rather than axum's path parameters, which insist on UTF-8, so
/// that any byte string can be addressed.
/// The key named by the path, within the key length limit (so a read of an
/// impossible key is a 413 like the write of one, not a 404).
fn path_key(uri: &Uri) -> Result<Bytes, ApiError> {
    let raw = uri.path().strip_prefix(KEY_PATH_PREFIX).unwrap_or("");
    let key = Bytes::from(percent_decode(raw, false)?);
    check_key_length(&key)?;
    Ok(key)
}

/// A key (or key prefix) longer than any stored key can be is a 413.
pub(crate) fn check_key_length(key: &[u8]) -> Result<(), ApiError> {
    if key.len() > KV_KEY_BYTES_MAX {
        return Err(ApiError::TooLarge {
            detail: format!(
                "key of {} bytes is over the {KV_KEY_BYTES_MAX}-byte limit",
                key.len()
            ),
        });
    }
    Ok(())
}

fn parse_consistency(raw: Option<&[u8]>) -> Result<Consistency, ApiError> {
    match raw {
        None | Some(b"linearizable") => Ok(Consistency::Linearizable),
        Some(b"serializable") => Ok(Consistency::Serializable),
        Some(_) => Err(ApiError::bad_request(
            "consistency must be linearizable or serializable",
        )),
    }
}

/// Parses the optional `Idempotency-Key: <client>:<seq>` header. Any shape other
/// than a 1..=64-byte visible-ASCII client id, `:`, and a positive decimal
/// sequence (or the header given twice) is a 400.
pub(crate) fn parse_request_id(headers: &HeaderMap) -> Result<Option<RequestId>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let invalid = |detail: &str| ApiError::BadRequest {
        code: "invalid_idempotency_key",
        detail: format!("Idempotency-Key must be <client>:<seq>: {detail}"),
    };
    if values.next().is_some() {
        return Err(invalid("given more than once"));
    }
    let raw = value.as_bytes();
    let Some(colon) = raw.iter().rposition(|byte| *byte == b':') else {
        return Err(invalid("no ':'"));
    };
    let (client_id, sequence) = (&raw[..colon], &raw[colon + 1..]);
    if client_id.is_empty() || client_id.len() > KV_SESSION_CLIENT_ID_BYTES_MAX {
        return Err(invalid("client id must be 1 to 64 bytes"));
    }
    if !client_id.iter().all(|byte| byte.is_ascii_graphic()) {
        return Err(invalid("client id must be visible ASCII"));
    }
    let sequence = parse_unsigned("sequence", sequence)
        .map_err(|_| invalid("sequence must be a positive integer"))?;
    if sequence == 0 {
        return Err(invalid("sequence must be a positive integer"));
    }
    Ok(Some(RequestId {
        client_id: Bytes::copy_from_slice(client_id),
        sequence,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn request_id_of(value: &'static str) -> Result<Option<RequestId>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static(value));
        parse_request_id(&headers)
    }

    #[test]
    fn idempotency_key_shapes() {
        let parsed = request_id_of("client-a:7").unwrap().unwrap();
        assert_eq!(parsed.client_id, Bytes::from_static(b"client-a"));
        assert_eq!(parsed.sequence, 7);
        let with_colon = request_id_of("a:b:3").unwrap().unwrap();
        assert_eq!(with_colon.client_id, Bytes::from_static(b"a:b"));
        for bad in [
            "", "client", ":1", "c:", "c:0", "c:-1", "c:1x", "c d:1", "c:+1",
        ] {
            assert!(request_id_of(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}:1", "c".repeat(KV_SESSION_CLIENT_ID_BYTES_MAX + 1));
        let mut headers = HeaderMap::new();
        headers.insert(
            IDEMPOTENCY_KEY_HEADER,
            HeaderValue::from_str(&long).unwrap(),
        );
        assert!(parse_request_id(&headers).is_err());
        assert_eq!(parse_request_id(&HeaderMap::new()).unwrap(), None);
    }
}
