//! What is safe to retry, and for how long.
//!
//! The server's contract decides: a `503` or a refused connection means the
//! request was never appended, so anything may be retried; a `504` or a
//! connection lost after sending means it may have been applied, so only a
//! write carrying an idempotency key is retried (with the *same* key, which the
//! cluster applies at most once), and reads are retried freely.

use crate::client::{ClientOptions, Reply};
use crate::error::ClientError;
use std::time::Duration;
use tokio::time::Instant;

/// How a request may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Changes nothing: retried on any transient failure.
    Read,
    /// A write carrying an idempotency key: retried with the same key.
    KeyedWrite,
    /// A write without a key (compaction, membership): retried only when it
    /// certainly did not reach a log.
    UnkeyedWrite,
}

/// What one HTTP attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The connection could not be made: the request was not sent.
    NotSent(String),
    /// The request may have been sent and no answer came.
    Lost(String),
    /// The server answered: 2xx with its body and headers, or an error.
    Answered(Result<Reply, ClientError>),
}

impl Attempt {
    pub(crate) fn from_send_error(error: &reqwest::Error) -> Attempt {
        // `is_connect` covers refused connections and connect timeouts: nothing
        // was written to the socket, so even an unkeyed write did not happen.
        if error.is_connect() {
            Attempt::NotSent(format!("cannot connect: {}", source_chain(error)))
        } else {
            Attempt::Lost(source_chain(error))
        }
    }
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The bookkeeping of one call's retries.
pub(crate) struct RetryState {
    deadline: Instant,
    endpoint_count: usize,
    attempts_in_round: usize,
    backoff: Duration,
    backoff_max: Duration,
    /// Whether some attempt of this write may have been applied.
    maybe_applied: bool,
    /// Whether the last failure left a read without an answer.
    last_was_lost: bool,
    last_failure: String,
}

impl RetryState {
    pub(crate) fn new(options: &ClientOptions, endpoint_count: usize) -> RetryState {
        assert!(endpoint_count > 0, "a client always has an endpoint");
        RetryState {
            deadline: Instant::now() + options.deadline,
            endpoint_count,
            attempts_in_round: 0,
            backoff: options.backoff_initial,
            backoff_max: options.backoff_max,
            maybe_applied: false,
            last_was_lost: false,
            last_failure: String::new(),
        }
    }

    /// Whether some attempt of this write may have been applied.
    pub(crate) fn maybe_applied(&self) -> bool {
        self.maybe_applied
    }

    /// Time left before the deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `Ok(Some(reply))`: done. `Ok(None)`: retry. `Err`: give up with this error.
    pub(crate) fn judge(
        &mut self,
        attempt: Attempt,
        kind: &RequestKind,
    ) -> Result<Option<Reply>, ClientError> {
        self.attempts_in_round += 1;
        self.last_was_lost = false;
        match attempt {
            Attempt::Answered(Ok(reply)) => Ok(Some(reply)),
            Attempt::NotSent(detail) => {
                self.last_failure = detail;
                Ok(None)
            }
            Attempt::Answered(Err(ClientError::Unavailable { detail })) => {
                self.last_failure = detail;
                Ok(None)
            }
            Attempt::Lost(detail) | Attempt::Answered(Err(ClientError::Timeout { detail, .. })) => {
                self.last_failure = detail.clone();
                match kind {
                    RequestKind::Read => {
                        self.last_was_lost = true;
                        Ok(None)
                    }
                    RequestKind::KeyedWrite => {
                        self.maybe_applied = true;
                        Ok(None)
                    }
                    RequestKind::UnkeyedWrite => Err(ClientError::Timeout {
                        outcome_unknown: true,
                        detail,
                    }),
                }
            }
            Attempt::Answered(Err(error)) => Err(error),
        }
    }

    /// Waits before the next attempt: not at all between endpoints of one round,
    /// with exponential backoff between rounds. Fails once the deadline passed.
    pub(crate) async fn pause_before_next(&mut self) -> Result<(), ClientError> {
        let mut pause = Duration::ZERO;
        if self.attempts_in_round >= self.endpoint_count {
            self.attempts_in_round = 0;
            pause = self.backoff;
            self.backoff = (self.backoff * 2).min(self.backoff_max);
        }
        if Instant::now() + pause >= self.deadline {
            return Err(self.final_error());
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok(())
    }

    fn final_error(&self) -> ClientError {
        let detail = format!("deadline passed; last failure: {}", self.last_failure);
        if self.maybe_applied {
            ClientError::Timeout {
                outcome_unknown: true,
                detail,
            }
        } else if self.last_was_lost {
            ClientError::Timeout {
                outcome_unknown: false,
                detail,
            }
        } else {
            ClientError::Unavailable { detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(deadline: Duration) -> ClientOptions {
        ClientOptions {
            deadline,
            ..ClientOptions::default()
        }
    }

    #[test]
    fn unavailable_and_refused_are_retried_for_every_kind() {
        for kind in [
            RequestKind::Read,
            RequestKind::KeyedWrite,
            RequestKind::UnkeyedWrite,
        ] {
            let mut state = RetryState::new(&options(Duration::from_secs(1)), 2);
            let unavailable =
                Attempt::Answered(Err(ClientError::Unavailable { detail: "x".into() }));
            assert_eq!(state.judge(unavailable, &kind), Ok(None));
            assert_eq!(
                state.judge(Attempt::NotSent("refused".into()), &kind),
                Ok(None)
            );
            assert!(!state.maybe_applied);
        }
    }

    #[test]
    fn ambiguous_failures_retry_only_keyed_writes_and_reads() {
        let mut state = RetryState::new(&options(Duration::from_secs(1)), 1);
        let keyed = RequestKind::KeyedWrite;
        assert_eq!(state.judge(Attempt::Lost("reset".into()), &keyed), Ok(None));
        assert!(state.maybe_applied);
        let timeout = || {
            Attempt::Answered(Err(ClientError::Timeout {
                outcome_unknown: true,
                detail: "t".into(),
            }))
        };
        assert_eq!(state.judge(timeout(), &RequestKind::Read), Ok(None));
        assert!(matches!(
            state.judge(timeout(), &RequestKind::UnkeyedWrite),
            Err(ClientError::Timeout {
                outcome_unknown: true,
                ..
            })
        ));
        assert_eq!(
            state.judge(Attempt::Answered(Err(ClientError::Unauthorized)), &keyed),
            Err(ClientError::Unauthorized)
        );
    }

    #[tokio::test]
    async fn the_final_error_says_whether_a_write_may_have_happened() {
        let mut state = RetryState::new(&options(Duration::ZERO), 1);
        let keyed = RequestKind::KeyedWrite;
        state
            .judge(Attempt::NotSent("refused".into()), &keyed)
            .unwrap();
        assert!(matches!(
            state.pause_before_next().await,
            Err(ClientError::Unavailable { .. })
        ));
        state.judge(Attempt::Lost("reset".into()), &keyed).unwrap();
        state
            .judge(Attempt::NotSent("refused".into()), &keyed)
            .unwrap();
        assert!(matches!(
            state.pause_before_next().await,
            Err(ClientError::Timeout {
                outcome_unknown: true,
                ..
            })
        ));
    }
}
