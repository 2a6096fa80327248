//! `/v1/processes...`: process pairs over HTTP (issue 4, section 4).
//!
//! Every handler parses and bounds its whole request (query, path, headers,
//! body) before it calls the node's [`ProcessService`], so bad input never
//! reaches the cluster. Paths are read from the raw URI rather than through
//! axum's `Path` extractor, which would answer a malformed pid with a plain-text
//! rejection instead of our JSON error (the same choice as `cluster.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use understudy_types::limits::{
    GUEST_ARGS_ENV_BYTES_MAX, GUEST_ARGS_ENV_ENTRIES_MAX, GUEST_IO_BYTES_MAX,
    GUEST_MODULE_BYTES_MAX,
};

use crate::encoding::{
    parse_query, parse_unsigned, percent_decode, query_value, read_body_limited,
};
use crate::error::ApiError;
use crate::kv::{declared_length, parse_request_id};
use crate::process_service::{
    OutputChunk, OutputStream, ProcessService, ProcessStatus, SpawnRequest, Spawned, StdinWrite,
    StdinWritten,
};
use crate::ApiState;

/// Longest process name, in bytes (the contract: 1..=128 bytes of
/// visible ASCII).
pub const PROCESS_NAME_BYTES_MAX: usize = 128;

/// Longest long-poll an output read may ask for: long enough to make polling
/// cheap, short enough that no proxy or client timeout cuts it first.
pub const OUTPUT_WAIT_SECONDS_MAX: u64 = 60;

/// The only content type a module upload is accepted with.
const WASM_CONTENT_TYPE: &str = "application/wasm";

/// The content type of released output: raw bytes, whatever the program wrote.
const OUTPUT_CONTENT_TYPE: &str = "application/octet-stream";

/// The path under which processes are addressed.
const PROCESSES_PATH_PREFIX: &str = "/v1/processes/";

/// The header carrying the offset after the returned output bytes.
const NEXT_OFFSET_HEADER: HeaderName = HeaderName::from_static("x-next-offset");

/// The header saying whether the process has exited (no more output will come).
const PROCESS_EXITED_HEADER: HeaderName = HeaderName::from_static("x-process-exited");

/// The node's process service, or 503 where the node offers only the KV store.
fn process_service(state: &ApiState) -> Result<Arc<dyn ProcessService>, ApiError> {
    state
        .service
        .processes()
        .ok_or_else(|| ApiError::Unavailable {
            detail: "this node does not offer process pairs".into(),
        })
}

/// `POST /v1/processes?name=N[&arg=A]…[&env=K=V]…[&unpaired=true]` with the raw
/// module as body → `201 {"pid","primary","backup","epoch"}`.
pub(crate) async fn spawn(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Spawned>), ApiError> {
    let processes = process_service(&state)?;
    // Everything cheap is checked before the (up to 64 MiB) body is read.
    let query = parse_spawn_query(uri.query())?;
    check_wasm_content_type(&headers)?;
    let request_id = parse_request_id(&headers)?;
    let module = read_body_limited(
        body,
        declared_length(&headers)?,
        GUEST_MODULE_BYTES_MAX as u64,
    )
    .await?;
    if module.is_empty() {
        return Err(ApiError::BadRequest {
            code: "invalid_module",
            detail: "the body is empty; it must be a WebAssembly module".into(),
        });
    }
    let request = SpawnRequest {
        name: query.name,
        module,
        args: query.args,
        env: query.env,
        unpaired: query.unpaired,
        request_id,
    };
    let spawned = processes.spawn(request).await?;
    Ok((StatusCode::CREATED, Json(spawned)))
}

/// `GET /v1/processes` → `200 {"processes":[<status>…]}`.
pub(crate) async fn list(State(state): State<ApiState>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let processes = process_service(&state)?;
    parse_query(uri.query(), &[])?;
    let statuses = processes.list().await?;
    Ok(Json(json!({ "processes": statuses })))
}

/// `GET /v1/processes/{pid}` → `200 <status>`.
pub(crate) async fn status(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<ProcessStatus>, ApiError> {
    let processes = process_service(&state)?;
    let pid = path_pid(&uri)?;
    parse_query(uri.query(), &[])?;
    Ok(Json(processes.status(pid).await?))
}

/// `POST /v1/processes/{pid}/stdin[?eof=true]` with the bytes as body (any
/// content type) → `200 {"offset":N}`.
pub(crate) async fn write_stdin(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<StdinWritten>, ApiError> {
    let processes = process_service(&state)?;
    let pid = path_pid(&uri)?;
    let parameters = parse_query(uri.query(), &["eof"])?;
    let eof = parse_flag("eof", query_value(&parameters, "eof"))?;
    let request_id = parse_request_id(&headers)?;
    let bytes =
        read_body_limited(body, declared_length(&headers)?, GUEST_IO_BYTES_MAX as u64).await?;
    let write = StdinWrite {
        pid,
        bytes,
        eof,
        request_id,
    };
    Ok(Json(processes.write_stdin(write).await?))
}

/// `GET /v1/processes/{pid}/stdout?from=OFFSET&wait=SECONDS`.
pub(crate) async fn read_stdout(state: State<ApiState>, uri: Uri) -> Result<Response, ApiError> {
    read_output(state, uri, OutputStream::Stdout).await
}

/// `GET /v1/processes/{pid}/stderr?from=OFFSET&wait=SECONDS`.
pub(crate) async fn read_stderr(state: State<ApiState>, uri: Uri) -> Result<Response, ApiError> {
    read_output(state, uri, OutputStream::Stderr).await
}

/// Released output as raw bytes, with `X-Next-Offset` and `X-Process-Exited`.
async fn read_output(
    State(state): State<ApiState>,
    uri: Uri,
    stream: OutputStream,
) -> Result<Response, ApiError> {
    let processes = process_service(&state)?;
    let pid = path_pid(&uri)?;
    let parameters = parse_query(uri.query(), &["from", "wait"])?;
    let from = match query_value(&parameters, "from") {
        None => 0,
        Some(raw) => parse_unsigned("from", raw)?,
    };
    let wait = match query_value(&parameters, "wait") {
        None => Duration::ZERO,
        Some(raw) => parse_wait(raw)?,
    };
    let chunk = processes.read_output(pid, stream, from, wait).await?;
    Ok(output_response(chunk))
}

fn output_response(chunk: OutputChunk) -> Response {
    let headers = [
        (CONTENT_TYPE, OUTPUT_CONTENT_TYPE.to_owned()),
        (NEXT_OFFSET_HEADER, chunk.next_offset.to_string()),
        (PROCESS_EXITED_HEADER, chunk.exited.to_string()),
    ];
    (headers, chunk.bytes).into_response()
}

/// `GET /v1/processes/{pid}/events` → `200 {"events":[<event>…]}`.
pub(crate) async fn events(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let processes = process_service(&state)?;
    let pid = path_pid(&uri)?;
    parse_query(uri.query(), &[])?;
    let events = processes.events(pid).await?;
    Ok(Json(json!({ "events": events })))
}

/// `DELETE /v1/processes/{pid}` → `200 {"pid":N,"deleted":true}`.
pub(crate) async fn delete(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<Value>, ApiError> {
    let processes = process_service(&state)?;
    let pid = path_pid(&uri)?;
    parse_query(uri.query(), &[])?;
    processes.delete(pid).await?;
    Ok(Json(json!({ "pid": pid, "deleted": true })))
}

/// The pid named by the path's first segment after `/v1/processes/`: a positive
/// decimal integer that fits in a u64 (pid 0 is never assigned).
fn path_pid(uri: &Uri) -> Result<u64, ApiError> {
    let rest = uri.path().strip_prefix(PROCESSES_PATH_PREFIX).unwrap_or("");
    let raw = rest.split('/').next().unwrap_or("");
    let invalid = || ApiError::bad_request(format!("pid {raw:?} is not a positive integer"));
    match parse_unsigned("pid", raw.as_bytes()) {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(invalid()),
    }
}

/// `true` or `false`; absent means `false`.
fn parse_flag(name: &str, raw: Option<&[u8]>) -> Result<bool, ApiError> {
    match raw {
        None | Some(b"false") => Ok(false),
        Some(b"true") => Ok(true),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be true or false"
        ))),
    }
}

/// A long-poll duration: decimal seconds with an optional fraction (`2`,
/// `0.5`), at most [`OUTPUT_WAIT_SECONDS_MAX`]. Digits beyond nanoseconds are
/// dropped. Signs, exponents, `inf` and `NaN` are refused, which is why this
/// does not go through `f64` parsing.
fn parse_wait(raw: &[u8]) -> Result<Duration, ApiError> {
    let invalid = || {
        ApiError::bad_request(format!(
            "wait must be a decimal number of seconds from 0 to {OUTPUT_WAIT_SECONDS_MAX}, \
             such as 5 or 0.5"
        ))
    };
    let (whole, fraction) = match raw.iter().position(|byte| *byte == b'.') {
        None => (raw, None),
        Some(dot) => (&raw[..dot], Some(&raw[dot + 1..])),
    };
    let seconds = parse_unsigned("wait", whole).map_err(|_| invalid())?;
    let nanoseconds = match fraction {
        None => 0,
        Some(digits) => fraction_nanoseconds(digits).ok_or_else(invalid)?,
    };
    let wait = Duration::new(seconds.min(OUTPUT_WAIT_SECONDS_MAX + 1), nanoseconds);
    if wait > Duration::from_secs(OUTPUT_WAIT_SECONDS_MAX) {
        return Err(invalid());
    }
    Ok(wait)
}

/// The digits after a decimal point as nanoseconds (at least one digit, all of
/// them decimal; only the first nine count).
fn fraction_nanoseconds(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let nanoseconds = (0..9).fold(0u32, |accumulated, position| {
        let digit = digits
            .get(position)
            .map_or(0, |byte| u32::from(byte - b'0'));
        accumulated * 10 + digit
    });
    Some(nanoseconds)
}

/// Accepts `application/wasm`, case-insensitively and with or without
/// parameters; anything else (or nothing) is a 400 that says what is needed.
fn check_wasm_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or("").trim());
    match media_type {
        Some(media_type) if media_type.eq_ignore_ascii_case(WASM_CONTENT_TYPE) => Ok(()),
        _ => Err(ApiError::bad_request(format!(
            "a module upload needs Content-Type: {WASM_CONTENT_TYPE}"
        ))),
    }
}

/// The query of a spawn, decoded and validated.
#[derive(Debug, Default, PartialEq, Eq)]
struct SpawnQuery {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    unpaired: bool,
}

/// Parses the spawn query. Unlike `parse_query`, `arg` and `env` may repeat
/// (their order is kept); `name` and `unpaired` may appear once; anything else
/// is a 400.
fn parse_spawn_query(query: Option<&str>) -> Result<SpawnQuery, ApiError> {
    let mut name: Option<Vec<u8>> = None;
    let mut unpaired: Option<Vec<u8>> = None;
    let mut parsed = SpawnQuery::default();
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw_value, true)?;
        match percent_decode(raw_name, true)?.as_slice() {
            b"name" => set_once("name", &mut name, value)?,
            b"unpaired" => set_once("unpaired", &mut unpaired, value)?,
            b"arg" => {
                check_entry_count(&parsed)?;
                parsed.args.push(birth_string("arg", value)?);
            }
            b"env" => {
                check_entry_count(&parsed)?;
                parsed.env.push(parse_env_entry(value)?);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; allowed: name, arg, env, unpaired",
                    String::from_utf8_lossy(other)
                )))
            }
        }
    }
    parsed.name = check_name(name)?;
    parsed.unpaired = parse_flag("unpaired", unpaired.as_deref())?;
    check_birth_bytes(&parsed)?;
    Ok(parsed)
}

fn set_once(name: &str, slot: &mut Option<Vec<u8>>, value: Vec<u8>) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(ApiError::bad_request(format!(
            "query parameter {name} given twice"
        )));
    }
    Ok(())
}

/// Refuses one more argument or environment entry once the limit is reached,
/// before it is decoded and stored.
fn check_entry_count(parsed: &SpawnQuery) -> Result<(), ApiError> {
    if parsed.args.len() + parsed.env.len() >= GUEST_ARGS_ENV_ENTRIES_MAX {
        return Err(ApiError::TooLarge {
            detail: format!(
                "more than {GUEST_ARGS_ENV_ENTRIES_MAX} arguments and environment entries"
            ),
        });
    }
    Ok(())
}

/// Bytes of arguments and environment as the guest counts them: each entry
/// (`K=V` for the environment) plus its NUL terminator, which is how WASI hands
/// them over. Counting the same way as the guest host means nothing accepted
/// here can be refused at birth.
fn check_birth_bytes(parsed: &SpawnQuery) -> Result<(), ApiError> {
    let argument_bytes: usize = parsed.args.iter().map(|arg| arg.len() + 1).sum();
    let environment_bytes: usize = parsed
        .env
        .iter()
        .map(|(key, value)| key.len() + 1 + value.len() + 1)
        .sum();
    let bytes = argument_bytes + environment_bytes;
    if bytes > GUEST_ARGS_ENV_BYTES_MAX {
        return Err(ApiError::TooLarge {
            detail: format!(
                "arguments and environment take {bytes} bytes (with their NUL terminators), \
                 over the limit of {GUEST_ARGS_ENV_BYTES_MAX}"
            ),
        });
    }
    Ok(())
}

/// An argument or environment entry: UTF-8 without NUL, because WASI passes
/// them as NUL-terminated strings and a NUL would cut them short.
fn birth_string(what: &str, value: Vec<u8>) -> Result<String, ApiError> {
    let text = String::from_utf8(value)
        .map_err(|_| ApiError::bad_request(format!("{what} is not valid UTF-8")))?;
    if text.contains('\0') {
        return Err(ApiError::bad_request(format!("{what} contains a NUL byte")));
    }
    Ok(text)
}

/// `K=V`, split at the first `=`; the name must not be empty.
fn parse_env_entry(value: Vec<u8>) -> Result<(String, String), ApiError> {
    let text = birth_string("env", value)?;
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        Some(_) => Err(ApiError::bad_request(format!(
            "env {text:?} has an empty variable name"
        ))),
        None => Err(ApiError::bad_request(format!(
            "env {text:?} must have the form NAME=VALUE"
        ))),
    }
}

/// The required process name: 1..=`PROCESS_NAME_BYTES_MAX` bytes of visible
/// ASCII, so it can be shown, typed and used in a URL without escaping rules.
fn check_name(name: Option<Vec<u8>>) -> Result<String, ApiError> {
    let Some(name) = name else {
        return Err(ApiError::bad_request(
            "the query parameter name is required",
        ));
    };
    let valid = !name.is_empty()
        && name.len() <= PROCESS_NAME_BYTES_MAX
        && name.iter().all(u8::is_ascii_graphic);
    if !valid {
        return Err(ApiError::bad_request(format!(
            "name must be 1 to {PROCESS_NAME_BYTES_MAX} bytes of visible ASCII"
        )));
    }
    // Visible ASCII is valid UTF-8; the error arm cannot be taken.
    String::from_utf8(name).map_err(|_| ApiError::bad_request("name is not ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_accepts_decimal_seconds_up_to_the_maximum() {
        assert_eq!(parse_wait(b"0").unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(b"0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_wait(b"2.25").unwrap(), Duration::from_millis(2250));
        assert_eq!(parse_wait(b"60").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_wait(b"60.000").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_wait(b"0.1234567899").unwrap(),
            Duration::from_nanos(123_456_789)
        );
        for bad in [
            &b""[..],
            b"60.000000001",
            b"61",
            b"99999999999999999999999",
            b"-1",
            b"+1",
            b".5",
            b"1.",
            b"1e3",
            b"inf",
            b"NaN",
            b"1.2.3",
            b"0x10",
        ] {
            assert!(
                parse_wait(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn spawn_query_keeps_repeated_args_and_env_in_order() {
        let parsed = parse_spawn_query(Some(
            "arg=prog&name=n1&env=A=1%3D2&arg=x+y&env=B=&unpaired=true",
        ))
        .unwrap();
        assert_eq!(
            parsed,
            SpawnQuery {
                name: "n1".into(),
                args: vec!["prog".into(), "x y".into()],
                env: vec![("A".into(), "1=2".into()), ("B".into(), String::new())],
                unpaired: true,
            }
        );
    }

    #[test]
    fn spawn_query_refuses_bad_names_env_and_parameters() {
        let long_name = format!("name={}", "n".repeat(PROCESS_NAME_BYTES_MAX + 1));
        let longest_name = format!("name={}", "n".repeat(PROCESS_NAME_BYTES_MAX));
        assert!(parse_spawn_query(Some(&longest_name)).is_ok());
        for bad in [
            "",
            "name=",
            "name=a+b",
            "name=%C3%A9",
            long_name.as_str(),
            "name=a&name=b",
            "name=a&env=NOEQUALS",
            "name=a&env==value",
            "name=a&arg=%00",
            "name=a&arg=%FF",
            "name=a&unpaired=yes",
            "name=a&unpaired=true&unpaired=true",
            "name=a&args=x",
        ] {
            let error = parse_spawn_query(Some(bad)).expect_err(bad);
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn spawn_query_limits_entries_and_bytes_as_the_guest_counts_them() {
        let at_limit = format!("name=a{}", "&arg=".repeat(GUEST_ARGS_ENV_ENTRIES_MAX));
        assert_eq!(
            parse_spawn_query(Some(&at_limit)).unwrap().args.len(),
            GUEST_ARGS_ENV_ENTRIES_MAX
        );
        let over = format!("{at_limit}&env=A=1");
        assert_eq!(
            parse_spawn_query(Some(&over)).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // One argument plus its NUL exactly fills the byte budget; one more
        // byte is over.
        let fits = format!("name=a&arg={}", "x".repeat(GUEST_ARGS_ENV_BYTES_MAX - 1));
        assert!(parse_spawn_query(Some(&fits)).is_ok());
        let too_big = format!("name=a&arg={}", "x".repeat(GUEST_ARGS_ENV_BYTES_MAX));
        assert_eq!(
            parse_spawn_query(Some(&too_big)).unwrap_err().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        // `K=V` and its NUL: 1 + 1 + value + 1 bytes.
        let env_fits = format!("name=a&env=K={}", "v".repeat(GUEST_ARGS_ENV_BYTES_MAX - 3));
        assert!(parse_spawn_query(Some(&env_fits)).is_ok());
        let env_over = format!("name=a&env=K={}", "v".repeat(GUEST_ARGS_ENV_BYTES_MAX - 2));
        assert!(parse_spawn_query(Some(&env_over)).is_err());
    }

    #[test]
    fn pids_are_positive_decimal_integers() {
        let pid_of = |path: &str| path_pid(&path.parse::<Uri>().unwrap());
        assert_eq!(pid_of("/v1/processes/7").unwrap(), 7);
        assert_eq!(pid_of("/v1/processes/7/stdout").unwrap(), 7);
        assert_eq!(
            pid_of("/v1/processes/18446744073709551615").unwrap(),
            u64::MAX
        );
        for bad in [
            "/v1/processes/0",
            "/v1/processes/-1",
            "/v1/processes/+1",
            "/v1/processes/1.0",
            "/v1/processes/abc",
            "/v1/processes/%31",
            "/v1/processes/18446744073709551616",
        ] {
            assert!(pid_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_type_must_be_wasm() {
        let check = |value: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = value {
                headers.insert(CONTENT_TYPE, value.parse().unwrap());
            }
            check_wasm_content_type(&headers)
        };
        assert!(check(Some("application/wasm")).is_ok());
        assert!(check(Some("Application/WASM; charset=binary")).is_ok());
        for bad in [
            None,
            Some("application/octet-stream"),
            Some("application/wasmx"),
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
