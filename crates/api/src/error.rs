//! The crate's one error enum and its mapping onto HTTP status codes.
//!
//! Every response error is JSON `{"error":"<code>","detail":"…"}`. The mapping is
//! a contract (issue 3, section 3): KV endpoints answer only 200, 400, 401, 404,
//! 409, 413, 503 and 504. The rule used for [`KvError`]: a broken *size* limit is
//! 413 `too_large`, a malformed or meaningless input is 400, an expired session
//! is 409. The process endpoints (issue 4) use the same codes plus 201 for a
//! spawn; [`ProcessError`] maps onto them variant by variant, and its
//! `Service` variant exactly as the KV API maps a [`ServiceError`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use understudy_kv::KvError;

use crate::process_service::ProcessError;
use crate::service::ServiceError;

/// Why an API request failed, already classified for its HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (bad JSON, bad query, bad header, unknown op): 400 with
    /// the given code.
    #[error("{code}: {detail}")]
    BadRequest {
        /// The machine-readable error code.
        code: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A body, key, value or list over its limit: 413 `too_large`.
    #[error("too large: {detail}")]
    TooLarge {
        /// What was too large.
        detail: String,
    },
    /// Missing or wrong bearer token: 401 `unauthorized`.
    #[error("unauthorized")]
    Unauthorized,
    /// No such key or route: 404 `not_found`.
    #[error("not found: {detail}")]
    NotFound {
        /// What was not found.
        detail: String,
    },
    /// The process name is taken: 409 `name_in_use` with the pid holding it, so
    /// a client can find the process it may have started itself.
    #[error("name in use: {detail}")]
    NameInUse {
        /// What is in use, by whom.
        detail: String,
        /// The process using the name.
        pid: u64,
    },
    /// The request's session expired: 409 `session_expired`.
    #[error("session expired")]
    SessionExpired,
    /// The requested history was compacted: 400 `compacted` with the store's
    /// compaction revision, so a watcher knows where it may restart.
    #[error("history before revision {compact_revision} has been compacted")]
    Compacted {
        /// The store's compaction revision.
        compact_revision: u64,
    },
    /// Nothing was appended to any log (or the request changed nothing and may be
    /// retried freely): 503 `unavailable`.
    #[error("unavailable: {detail}")]
    Unavailable {
        /// What went wrong.
        detail: String,
    },
    /// The request may or may not have taken effect: 504 `timeout` with
    /// `"outcome":"unknown"`.
    #[error("timeout, outcome unknown: {detail}")]
    Timeout {
        /// What went wrong.
        detail: String,
    },
    /// The wrong HTTP method for an existing path: 400 `method_not_allowed`
    /// (not 405: the KV endpoints' status codes are a closed list, and a wrong
    /// method is bad input like any other).
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// A 400 with the generic `bad_request` code.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code: "bad_request",
            detail: detail.into(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::Compacted { .. }
            | ApiError::MethodNotAllowed => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::SessionExpired | ApiError::NameInUse { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The JSON body of this error (also used for in-stream watch errors).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ApiError::BadRequest { code, detail } => json!({"error": code, "detail": detail}),
            ApiError::TooLarge { detail } => json!({"error": "too_large", "detail": detail}),
            ApiError::Unauthorized => {
                json!({"error": "unauthorized", "detail": "missing or wrong bearer token"})
            }
            ApiError::NotFound { detail } => json!({"error": "not_found", "detail": detail}),
            ApiError::NameInUse { detail, pid } => {
                json!({"error": "name_in_use", "detail": detail, "pid": pid})
            }
            ApiError::SessionExpired => json!({
                "error": "session_expired",
                "detail": "the request is too old to judge or its session is gone; it was not applied now",
            }),
            ApiError::Compacted { compact_revision } => json!({
                "error": "compacted",
                "detail": self.to_string(),
                "compact_revision": compact_revision,
            }),
            ApiError::Unavailable { detail } => json!({"error": "unavailable", "detail": detail}),
            ApiError::Timeout { detail } => {
                json!({"error": "timeout", "outcome": "unknown", "detail": detail})
            }
            ApiError::MethodNotAllowed => {
                json!({"error": "method_not_allowed", "detail": "wrong HTTP method for this path"})
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.to_json())).into_response()
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        match error {
            ServiceError::Unavailable { detail } => ApiError::Unavailable { detail },
            ServiceError::Timeout { detail } => ApiError::Timeout { detail },
            ServiceError::Rejected(kv_error) => ApiError::from(kv_error),
            ServiceError::InvalidClusterRequest { detail } => ApiError::BadRequest {
                code: "invalid_cluster_request",
                detail,
            },
        }
    }
}

impl From<ProcessError> for ApiError {
    /// Every variant is mapped deliberately; see the module documentation.
    fn from(error: ProcessError) -> ApiError {
        let detail = error.to_string();
        match error {
            ProcessError::NotFound { .. } => ApiError::NotFound { detail },
            ProcessError::NameInUse { pid, .. } => ApiError::NameInUse { detail, pid },
            ProcessError::InvalidModule { .. } => ApiError::BadRequest {
                code: "invalid_module",
                detail,
            },
            ProcessError::BadRequest { .. } => ApiError::bad_request(detail),
            ProcessError::TooLarge { .. } => ApiError::TooLarge { detail },
            ProcessError::Unavailable { .. } => ApiError::Unavailable { detail },
            ProcessError::Service(service_error) => ApiError::from(service_error),
        }
    }
}

impl From<KvError> for ApiError {
    /// Every variant is mapped deliberately; see the module documentation.
    fn from(error: KvError) -> ApiError {
        let detail = error.to_string();
        match error {
            KvError::KeyEmpty => ApiError::BadRequest {
                code: "invalid_key",
                detail,
            },
            KvError::KeyTooLong { .. }
            | KvError::ValueTooLarge { .. }
            | KvError::TooManyTxnOperations { .. }
            | KvError::CommandTooLarge { .. } => ApiError::TooLarge { detail },
            KvError::RangeLimitInvalid { .. } => ApiError::BadRequest {
                code: "invalid_limit",
                detail,
            },
            KvError::ClientIdInvalid { .. } | KvError::SequenceZero => ApiError::BadRequest {
                code: "invalid_idempotency_key",
                detail,
            },
            KvError::SessionExpired => ApiError::SessionExpired,
            KvError::CompactRevisionAboveCurrent { .. } => ApiError::BadRequest {
                code: "invalid_revision",
                detail,
            },
            KvError::Compacted { compact_revision } => ApiError::Compacted { compact_revision },
            // These cannot come from a request this API built and validated: they
            // mean a replica received a command it cannot decode (a version skew
            // during an upgrade, a bug) or a snapshot problem. The state machine
            // rejected it deterministically, so it changed nothing and a free
            // retry is safe, which is exactly what 503 promises a client.
            KvError::CommandVersionUnsupported { .. }
            | KvError::CommandMalformed
            | KvError::SnapshotLengthInvalid { .. }
            | KvError::SnapshotMagicMismatch
            | KvError::SnapshotVersionUnsupported { .. }
            | KvError::SnapshotChecksumMismatch
            | KvError::SnapshotMalformed => ApiError::Unavailable {
                detail: format!("internal error, nothing changed: {detail}"),
            },
        }
    }
}
