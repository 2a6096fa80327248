//! The client's error type and the mapping from HTTP answers to it.

use serde::Deserialize;

/// Why a client call failed.
///
/// The split between [`ClientError::Unavailable`] and [`ClientError::Timeout`]
/// follows the server's contract: `Unavailable` means the request was never
/// appended to any log (it did not happen), `Timeout { outcome_unknown: true }`
/// means it may or may not have taken effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No endpoint could serve the request and none of them appended it.
    #[error("cluster unavailable: {detail}")]
    Unavailable {
        /// The last reason seen.
        detail: String,
    },
    /// The deadline passed. If `outcome_unknown`, a write may have been applied.
    #[error("timed out{}: {detail}", if *.outcome_unknown { " (the write may or may not have been applied)" } else { "" })]
    Timeout {
        /// Whether a write may have taken effect.
        outcome_unknown: bool,
        /// The last reason seen.
        detail: String,
    },
    /// The key (or member) does not exist.
    #[error("not found: {detail}")]
    NotFound {
        /// The server's explanation.
        detail: String,
    },
    /// The request's idempotency key is too old to be retained or its session is
    /// unknown to the cluster: the server refused rather than apply it twice.
    #[error("session expired: the cluster no longer remembers this client's requests")]
    SessionExpired,
    /// The server refused the request as malformed or impossible.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A conflicting request (for example a membership change already pending).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A process name is taken (`409 name_in_use`), by process `pid`.
    #[error("name in use by process {pid}: {detail}")]
    NameInUse {
        /// The process that has the name.
        pid: u64,
        /// The server's explanation.
        detail: String,
    },
    /// The request or a value is larger than the server accepts.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The token is missing or wrong.
    #[error("unauthorized: missing or wrong token")]
    Unauthorized,
    /// The server answered with something outside the contract.
    #[error("unexpected answer (HTTP {status}): {detail}")]
    Server {
        /// The HTTP status code.
        status: u16,
        /// The body or the parse failure.
        detail: String,
    },
    /// The connection failed in a way that is not retried (or building the
    /// request failed).
    #[error("transport: {0}")]
    Transport(String),
    /// The client was built with unusable arguments.
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),
}

/// The JSON error body every endpoint uses: `{"error":"<code>","detail":"…"}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    /// The process holding a name, with `name_in_use`.
    #[serde(default)]
    pid: Option<u64>,
}

/// Longest body excerpt quoted in an error message.
const BODY_EXCERPT_BYTES_MAX: usize = 200;

/// Maps a non-200 answer (status and body) to an error.
pub fn error_from_response(status: u16, body: &[u8]) -> ClientError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let detail = match &parsed {
        // The detail says what went wrong; the code is only its category,
        // which the variant already carries.
        Some(parsed) => match &parsed.detail {
            Some(detail) if !detail.is_empty() => detail.clone(),
            _ => parsed.error.clone(),
        },
        None => excerpt(body),
    };
    let code = parsed.as_ref().map(|p| p.error.as_str()).unwrap_or("");
    match status {
        400 => ClientError::BadRequest(detail),
        401 | 403 => ClientError::Unauthorized,
        404 => ClientError::NotFound { detail },
        409 if code == "session_expired" => ClientError::SessionExpired,
        409 => match parsed.as_ref().and_then(|parsed| parsed.pid) {
            Some(pid) if code == "name_in_use" => ClientError::NameInUse { pid, detail },
            _ => ClientError::Conflict(detail),
        },
        413 => ClientError::TooLarge(detail),
        503 => ClientError::Unavailable { detail },
        504 => ClientError::Timeout {
            // The contract says 504 always means the outcome is unknown; an
            // explicit `"outcome"` other than "unknown" is still treated as
            // unknown because assuming less is never unsafe.
            outcome_unknown: parsed.and_then(|p| p.outcome).is_none_or(|o| !o.is_empty()),
            detail,
        },
        _ => ClientError::Server { status, detail },
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT_BYTES_MAX)]);
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        text.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_bodies_map_to_variants() {
        assert_eq!(
            error_from_response(409, br#"{"error":"session_expired"}"#),
            ClientError::SessionExpired
        );
        assert_eq!(
            error_from_response(409, br#"{"error":"pending","detail":"change pending"}"#),
            ClientError::Conflict("change pending".into())
        );
        assert_eq!(
            error_from_response(409, br#"{"error":"name_in_use","detail":"n","pid":7}"#),
            ClientError::NameInUse {
                pid: 7,
                detail: "n".into()
            }
        );
        assert_eq!(
            error_from_response(404, br#"{"error":"not_found","detail":"no key a"}"#),
            ClientError::NotFound {
                detail: "no key a".into()
            }
        );
        assert_eq!(
            error_from_response(400, br#"{"error":"bad_request","detail":"bad json"}"#),
            ClientError::BadRequest("bad json".into())
        );
        assert_eq!(
            error_from_response(401, br#"{"error":"unauthorized"}"#),
            ClientError::Unauthorized
        );
        assert!(matches!(
            error_from_response(413, br#"{"error":"too_large"}"#),
            ClientError::TooLarge(_)
        ));
        assert_eq!(
            error_from_response(503, br#"{"error":"unavailable","detail":"no leader"}"#),
            ClientError::Unavailable {
                detail: "no leader".into()
            }
        );
        assert_eq!(
            error_from_response(504, br#"{"error":"timeout","outcome":"unknown"}"#),
            ClientError::Timeout {
                outcome_unknown: true,
                detail: "timeout".into()
            }
        );
    }

    #[test]
    fn non_json_bodies_are_quoted_not_lost() {
        assert_eq!(
            error_from_response(500, b"internal oops"),
            ClientError::Server {
                status: 500,
                detail: "internal oops".into()
            }
        );
        assert_eq!(
            error_from_response(502, b""),
            ClientError::Server {
                status: 502,
                detail: "(empty body)".into()
            }
        );
        let long = vec![b'x'; 10_000];
        match error_from_response(500, &long) {
            ClientError::Server { detail, .. } => assert_eq!(detail.len(), BODY_EXCERPT_BYTES_MAX),
            other => panic!("expected Server, got {other:?}"),
        }
    }
}
