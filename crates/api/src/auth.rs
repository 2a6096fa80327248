//! The optional bearer token (`--client-token-file`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Middleware: with a token configured, refuses requests without a matching
/// `Authorization: Bearer <token>` header with 401 before any handler runs.
pub(crate) async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.as_deref() else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| bearer_credentials(value.as_bytes()));
    match presented {
        Some(presented) if constant_time_equal(presented, expected.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// The credentials of a `Bearer` authorization header; the scheme name is
/// case-insensitive (RFC 7235 §2.1).
fn bearer_credentials(header: &[u8]) -> Option<&[u8]> {
    let scheme = header.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| &header[7..])
}

/// Compares two byte strings in time that depends only on their lengths, so a
/// remote client cannot find the token byte by byte from response timings.
/// (The token's length may leak; its content does not.)
fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
    // `black_box` keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_credentials, constant_time_equal};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_credentials(b"Bearer t0k"), Some(&b"t0k"[..]));
        assert_eq!(bearer_credentials(b"bearer t0k"), Some(&b"t0k"[..]));
        assert_eq!(bearer_credentials(b"BEARER t0k"), Some(&b"t0k"[..]));
        assert_eq!(bearer_credentials(b"Basic t0k"), None);
        assert_eq!(bearer_credentials(b"Bearer"), None);
    }

    #[test]
    fn constant_time_equal_compares_content_and_length() {
        assert!(constant_time_equal(b"secret", b"secret"));
        assert!(!constant_time_equal(b"secret", b"secreT"));
        assert!(!constant_time_equal(b"secret", b"secret!"));
        assert!(!constant_time_equal(b"", b"x"));
    }
}
