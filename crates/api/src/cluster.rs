//! Cluster status and membership, health, metrics, and the JSON fallbacks.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::encoding::{parse_query, parse_unsigned};
use crate::error::ApiError;
use crate::kv::read_json_body;
use crate::service::{AddMember, ClusterStatus};
use crate::ApiState;

/// The Prometheus text exposition format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// `GET /v1/cluster`: the [`ClusterStatus`] as JSON.
pub(crate) async fn status(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<ClusterStatus>, ApiError> {
    parse_query(uri.query(), &[])?;
    Ok(Json(state.service.cluster().await?))
}

/// The body of `POST /v1/cluster/members` (strict, unlike [`AddMember`]'s own
/// serde derive, so a misspelt field is a 400).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberRequest {
    id: u64,
    peer_address: String,
    client_address: String,
}

/// `POST /v1/cluster/members {"id","peer_address","client_address"}`.
pub(crate) async fn add_member(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ClusterStatus>, ApiError> {
    parse_query(uri.query(), &[])?;
    let request: AddMemberRequest = read_json_body(&headers, body).await?;
    if request.id == 0 {
        return Err(ApiError::BadRequest {
            code: "invalid_cluster_request",
            detail: "member id 0 is reserved".into(),
        });
    }
    check_host_port(&request.peer_address).map_err(|detail| ApiError::BadRequest {
        code: "invalid_cluster_request",
        detail: format!("peer_address {:?}: {detail}", request.peer_address),
    })?;
    let client_host_port = request
        .client_address
        .strip_prefix("http://")
        .ok_or("must start with http://")
        .and_then(check_host_port);
    client_host_port.map_err(|detail| ApiError::BadRequest {
        code: "invalid_cluster_request",
        detail: format!(
            "client_address {:?}: {detail} (the form is http://HOST:PORT)",
            request.client_address
        ),
    })?;
    let member = AddMember {
        id: request.id,
        peer_address: request.peer_address,
        client_address: request.client_address,
    };
    Ok(Json(state.service.add_member(member).await?))
}

/// Accepts `HOST:PORT` with a non-empty host of visible ASCII (an IPv6 host in
/// brackets) and a port in 1..=65535: anything else could never be dialled.
fn check_host_port(address: &str) -> Result<(), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("has no :PORT")?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && !b"/?#@".contains(&byte));
    if !host_ok {
        return Err("the host is empty or has characters a host cannot have");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err("the port is not a number in 1..=65535"),
    }
}

/// `DELETE /v1/cluster/members/{id}`.
pub(crate) async fn remove_member(
    State(state): State<ApiState>,
    uri: Uri,
) -> Result<Json<ClusterStatus>, ApiError> {
    // From the raw path (as for keys): axum's path extractor would answer a
    // non-UTF-8 segment with a plain-text rejection instead of our JSON error.
    parse_query(uri.query(), &[])?;
    let raw = uri.path().rsplit('/').next().unwrap_or("");
    let id = parse_unsigned("member id", raw.as_bytes())?;
    Ok(Json(state.service.remove_member(id).await?))
}

/// `GET /healthz`: 200 `{"status":"ok"}` or 503.
pub(crate) async fn healthz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    if state.service.is_healthy() {
        Ok(Json(json!({"status": "ok"})))
    } else {
        Err(ApiError::Unavailable {
            detail: "the node is not running normally".into(),
        })
    }
}

/// `GET /metrics` in the Prometheus text format.
pub(crate) async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.service.metrics(),
    )
}

/// Any path that is not part of the API.
pub(crate) async fn no_route() -> ApiError {
    ApiError::NotFound {
        detail: "no such API path".into(),
    }
}

/// An API path with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
