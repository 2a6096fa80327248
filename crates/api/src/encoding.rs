//! Bytes on the wire: percent-decoding of paths and queries, bounded body
//! reading, and the JSON shapes of keys, values and items.
//!
//! Keys and values are bytes. In JSON they appear as `"key"`/`"value"` when they
//! are valid UTF-8 and as `"key_base64"`/`"value_base64"` (standard alphabet,
//! padded) otherwise. In paths and query strings they are percent-encoded bytes,
//! decoded here without any UTF-8 requirement.

use axum::body::Body;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Map, Value};
use understudy_kv::KeyValue;

use crate::error::ApiError;

/// Decodes `%XX` escapes (and, in query strings, `+` as a space) into bytes.
/// A `%` not followed by two hex digits is a 400.
pub fn percent_decode(raw: &str, plus_is_space: bool) -> Result<Vec<u8>, ApiError> {
    let input = raw.as_bytes();
    let mut decoded = Vec::with_capacity(input.len());
    let mut position = 0;
    while position < input.len() {
        match input[position] {
            b'%' => {
                let high = input.get(position + 1).and_then(|byte| hex_value(*byte));
                let low = input.get(position + 2).and_then(|byte| hex_value(*byte));
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(ApiError::bad_request(
                        "a '%' must be followed by two hex digits",
                    ));
                };
                decoded.push(high << 4 | low);
                position += 3;
            }
            b'+' if plus_is_space => {
                decoded.push(b' ');
                position += 1;
            }
            byte => {
                decoded.push(byte);
                position += 1;
            }
        }
    }
    Ok(decoded)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Parses a query string into `(name, value-bytes)` pairs, accepting only the
/// `allowed` names, each at most once: a typo such as `consitency=` is a 400
/// rather than silently ignored.
pub fn parse_query(
    query: Option<&str>,
    allowed: &[&'static str],
) -> Result<Vec<(&'static str, Vec<u8>)>, ApiError> {
    let mut parameters: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name_bytes = percent_decode(raw_name, true)?;
        let Some(name) = allowed
            .iter()
            .find(|allowed_name| allowed_name.as_bytes() == name_bytes.as_slice())
        else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {:?}; allowed: {}",
                String::from_utf8_lossy(&name_bytes),
                allowed.join(", ")
            )));
        };
        if parameters.iter().any(|(seen, _)| seen == name) {
            return Err(ApiError::bad_request(format!(
                "query parameter {name} given twice"
            )));
        }
        parameters.push((name, percent_decode(raw_value, true)?));
    }
    Ok(parameters)
}

/// The value of query parameter `name`, if present.
pub fn query_value<'a>(parameters: &'a [(&'static str, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    parameters
        .iter()
        .find(|(parameter, _)| *parameter == name)
        .map(|(_, value)| value.as_slice())
}

/// Parses a decimal unsigned integer query parameter (digits only).
pub fn parse_unsigned(name: &str, value: &[u8]) -> Result<u64, ApiError> {
    let invalid = || ApiError::bad_request(format!("{name} must be a non-negative integer"));
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    // All ASCII digits, so valid UTF-8; parse fails only on overflow.
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(invalid)
}

/// Reads a request body of at most `limit_bytes`, answering 413 beyond it.
/// Checks the declared length first so an honest oversized request is refused
/// before any of it is buffered, then counts the bytes actually received.
pub async fn read_body_limited(
    body: Body,
    declared_length: Option<u64>,
    limit_bytes: u64,
) -> Result<Bytes, ApiError> {
    let too_large = |length: u64| ApiError::TooLarge {
        detail: format!("body of at least {length} bytes exceeds the limit of {limit_bytes}"),
    };
    if let Some(length) = declared_length {
        if length > limit_bytes {
            return Err(too_large(length));
        }
    }
    let mut collected = BytesMut::new();
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame =
            frame.map_err(|error| ApiError::bad_request(format!("reading body: {error}")))?;
        let length = (collected.len() + frame.len()) as u64;
        if length > limit_bytes {
            return Err(too_large(length));
        }
        collected.extend_from_slice(&frame);
    }
    Ok(collected.freeze())
}

/// Inserts `bytes` under `name` when it is UTF-8, else under `name_base64`.
pub fn insert_bytes(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_owned(), Value::String(text.to_owned())),
        Err(_) => object.insert(
            format!("{name}_base64"),
            Value::String(BASE64.encode(bytes)),
        ),
    };
}

/// The JSON shape of one item: `key`, `value` (or their `_base64` forms),
/// `create_revision`, `mod_revision`, `version`.
pub fn item_json(item: &KeyValue) -> Map<String, Value> {
    let mut object = Map::new();
    insert_bytes(&mut object, "key", &item.key);
    insert_bytes(&mut object, "value", &item.value);
    object.insert("create_revision".into(), item.create_revision.into());
    object.insert("mod_revision".into(), item.mod_revision.into());
    object.insert("version".into(), item.version.into());
    object
}

/// Decodes a JSON pair of optional fields `name` (a string) and `name_base64`:
/// exactly one must be present.
pub fn json_bytes(
    name: &str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Bytes, ApiError> {
    match (text, base64) {
        (Some(text), None) => Ok(Bytes::from(text)),
        (None, Some(encoded)) => BASE64
            .decode(encoded.as_bytes())
            .map(Bytes::from)
            .map_err(|_| {
                ApiError::bad_request(format!("{name}_base64 is not valid standard base64"))
            }),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "give either {name} or {name}_base64, not both"
        ))),
        (None, None) => Err(ApiError::bad_request(format!(
            "{name} (or {name}_base64) is required"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_handles_escapes_plus_and_errors() {
        assert_eq!(percent_decode("a%2Fb%ff", false).unwrap(), b"a/b\xff");
        assert_eq!(percent_decode("a+b", true).unwrap(), b"a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), b"a+b");
        assert!(percent_decode("a%2", false).is_err());
        assert!(percent_decode("a%zz", false).is_err());
    }

    #[test]
    fn parse_query_rejects_unknown_and_repeated_names() {
        let parsed = parse_query(Some("prefix=a%00&limit=5"), &["prefix", "limit"]).unwrap();
        assert_eq!(query_value(&parsed, "prefix"), Some(&b"a\0"[..]));
        assert_eq!(query_value(&parsed, "limit"), Some(&b"5"[..]));
        assert!(parse_query(Some("prefx=a"), &["prefix"]).is_err());
        assert!(parse_query(Some("limit=1&limit=2"), &["limit"]).is_err());
        assert!(parse_query(None, &["limit"]).unwrap().is_empty());
    }

    #[test]
    fn parse_unsigned_accepts_digits_only() {
        assert_eq!(parse_unsigned("n", b"42").unwrap(), 42);
        for bad in [&b""[..], b"-1", b"+1", b"1.0", b"99999999999999999999999"] {
            assert!(parse_unsigned("n", bad).is_err(), "{bad:?}");
        }
    }
}
