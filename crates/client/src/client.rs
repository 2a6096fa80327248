//! [`Client`]: endpoint failover, retries within a deadline, idempotency keys.

use crate::error::{error_from_response, ClientError};
use crate::retry::{Attempt, RequestKind, RetryState};
use crate::session::Session;
use crate::types::*;
use bytes::Bytes;
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Endpoints one client accepts, at most.
pub const CLIENT_ENDPOINTS_MAX: usize = 64;
/// Largest response body the client reads (a full range of large values fits).
pub const CLIENT_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Timing knobs of a [`Client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long one call may take in total, retries included.
    pub deadline: Duration,
    /// How long one HTTP attempt may take.
    pub attempt_timeout: Duration,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// First pause between rounds of retries (doubles up to `backoff_max`).
    pub backoff_initial: Duration,
    /// Longest pause between retries.
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            deadline: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) endpoints: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) http: reqwest::Client,
    pub(crate) options: ClientOptions,
    /// Index of the endpoint that answered last; tried first next time.
    pub(crate) preferred_endpoint: AtomicUsize,
    session: Session,
}

/// A client of an understudy cluster. Cheap to clone (clones share the
/// connection pool, the preferred endpoint and the idempotency session). Any
/// number of calls may run at once, from clones or not: the session numbers
/// concurrent writes within the window the cluster retains (see `session.rs`).
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// One HTTP request, ready to be sent to any endpoint.
pub(crate) struct Request {
    pub(crate) method: Method,
    /// Path and query, starting with `/`.
    pub(crate) path: String,
    pub(crate) body: Option<Bytes>,
    /// The body's `Content-Type`, if it has a body.
    pub(crate) content_type: Option<&'static str>,
    pub(crate) kind: RequestKind,
}

/// A successful (2xx) answer: its body and headers (some calls, such as
/// process output reads, carry results in headers).
#[derive(Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) body: Bytes,
    pub(crate) headers: reqwest::header::HeaderMap,
}

/// The `Content-Type` of JSON request bodies.
pub(crate) const JSON: Option<&str> = Some("application/json");

impl Client {
    /// A client of the cluster reachable at `endpoints` (`http://host:port`),
    /// sending `Authorization: Bearer <token>` when a token is given.
    pub fn new(endpoints: Vec<String>, token: Option<String>) -> Result<Client, ClientError> {
        Client::with_options(endpoints, token, ClientOptions::default())
    }

    /// Like [`Client::new`] with explicit timing.
    pub fn with_options(
        endpoints: Vec<String>,
        token: Option<String>,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let endpoints = normalize_endpoints(endpoints)?;
        let http = reqwest::Client::builder()
            .timeout(options.attempt_timeout)
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|error| ClientError::InvalidConfig(error.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                token,
                http,
                options,
                preferred_endpoint: AtomicUsize::new(0),
                session: Session::new(),
            }),
        })
    }

    /// A client of other endpoints with the same token and timing, except a
    /// deadline of at most `deadline` (and a session of its own).
    pub fn with_endpoints(
        &self,
        endpoints: Vec<String>,
        deadline: Duration,
    ) -> Result<Client, ClientError> {
        let options = ClientOptions {
            deadline: deadline.min(self.inner.options.deadline),
            ..self.inner.options
        };
        Client::with_options(endpoints, self.inner.token.clone(), options)
    }

    /// The endpoints, normalized (no trailing slash).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// This client's session id (the part before `:` of its idempotency keys);
    /// it changes only if the cluster forgot the session.
    pub fn client_id(&self) -> String {
        self.inner.session.client_id()
    }

    /// Writes `value` under `key`.
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Bytes>,
    ) -> Result<PutResponse, ClientError> {
        let request = Request {
            method: Method::PUT,
            path: kv_path(key),
            body: Some(value.into()),
            content_type: None,
            kind: RequestKind::KeyedWrite,
        };
        self.call_json(request).await
    }

    /// Reads one key; [`ClientError::NotFound`] if it does not exist.
    pub async fn get(&self, key: &str, consistency: Consistency) -> Result<KeyValue, ClientError> {
        let mut path = kv_path(key);
        if consistency == Consistency::Serializable {
            path.push_str("?consistency=serializable");
        }
        self.call_json(Request::read(path)).await
    }

    /// Deletes one key.
    pub async fn delete(&self, key: &str) -> Result<DeleteResponse, ClientError> {
        let request = Request {
            method: Method::DELETE,
            path: kv_path(key),
            body: None,
            content_type: None,
            kind: RequestKind::KeyedWrite,
        };
        self.call_json(request).await
    }

    /// Reads keys starting with `prefix`, at most `limit` (server default if none).
    pub async fn range(
        &self,
        prefix: &str,
        limit: Option<usize>,
        consistency: Consistency,
    ) -> Result<RangeResponse, ClientError> {
        let mut path = format!("/v1/kv?prefix={}", percent_encode(prefix.as_bytes()));
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        if consistency == Consistency::Serializable {
            path.push_str("&consistency=serializable");
        }
        self.call_json(Request::read(path)).await
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: &TxnRequest) -> Result<TxnResponse, ClientError> {
        let body =
            serde_json::to_vec(txn).map_err(|error| ClientError::BadRequest(error.to_string()))?;
        let request = Request {
            method: Method::POST,
            path: "/v1/txn".to_string(),
            body: Some(Bytes::from(body)),
            content_type: JSON,
            kind: RequestKind::KeyedWrite,
        };
        self.call_json(request).await
    }

    /// Discards history before `revision`.
    pub async fn compact(&self, revision: u64) -> Result<serde_json::Value, ClientError> {
        let body = serde_json::json!({ "revision": revision }).to_string();
        self.call_json(Request::unkeyed_write(
            Method::POST,
            "/v1/compact",
            Some(body),
        ))
        .await
    }

    /// The cluster as the answering node sees it.
    pub async fn cluster(&self) -> Result<ClusterStatus, ClientError> {
        self.call_json(Request::read("/v1/cluster".to_string()))
            .await
    }

    /// Adds a member (as a learner, promoted once caught up).
    pub async fn add_member(&self, member: &AddMember) -> Result<ClusterStatus, ClientError> {
        let body = serde_json::to_string(member)
            .map_err(|error| ClientError::BadRequest(error.to_string()))?;
        self.call_json(Request::unkeyed_write(
            Method::POST,
            "/v1/cluster/members",
            Some(body),
        ))
        .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ClientError> {
        let path = format!("/v1/cluster/members/{id}");
        self.call_json(Request::unkeyed_write(Method::DELETE, &path, None))
            .await
    }

    /// Succeeds if some endpoint answers `GET /healthz` with 200.
    pub async fn healthz(&self) -> Result<(), ClientError> {
        self.call(Request::read("/healthz".to_string()))
            .await
            .map(|_| ())
    }

    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<T, ClientError> {
        let reply = self.call(request).await?;
        serde_json::from_slice(&reply.body).map_err(|error| ClientError::Server {
            status: 200,
            detail: format!("unparseable answer: {error}"),
        })
    }

    /// Sends `request`, rotating through endpoints and retrying what is safe to
    /// retry until the deadline; returns the first 2xx answer. A keyed
    /// write is numbered by the session and retried under the same key.
    pub(crate) async fn call(&self, request: Request) -> Result<Reply, ClientError> {
        if request.kind != RequestKind::KeyedWrite {
            return self.call_with_key(&request, None).await.0;
        }
        // One renewal is enough: a brand-new session cannot have expired.
        let mut renewals_left = 1;
        loop {
            let ticket = self.inner.session.acquire().await;
            let (outcome, maybe_applied) = self.call_with_key(&request, Some(&ticket.key)).await;
            match outcome {
                Err(ClientError::SessionExpired) if !maybe_applied && renewals_left > 0 => {
                    // Every attempt missed the log or was refused by the
                    // session check: never applied, so resending is safe.
                    renewals_left -= 1;
                    self.inner.session.renew(ticket);
                }
                outcome => {
                    self.inner.session.complete(ticket, outcome.is_ok());
                    return outcome;
                }
            }
        }
    }

    /// One call's attempts with `key` as its idempotency key; also says whether
    /// some attempt may have been applied.
    async fn call_with_key(
        &self,
        request: &Request,
        key: Option<&str>,
    ) -> (Result<Reply, ClientError>, bool) {
        let mut state = RetryState::new(&self.inner.options, self.inner.endpoints.len());
        let mut endpoint_index = self.inner.preferred_endpoint.load(Ordering::Relaxed);
        loop {
            let endpoint = &self.inner.endpoints[endpoint_index % self.inner.endpoints.len()];
            let attempt =
                match tokio::time::timeout(state.remaining(), self.attempt(endpoint, request, key))
                    .await
                {
                    Ok(attempt) => attempt,
                    Err(_) => Attempt::Lost("the deadline passed during the attempt".into()),
                };
            match state.judge(attempt, &request.kind) {
                Ok(Some(body)) => {
                    self.inner.preferred_endpoint.store(
                        endpoint_index % self.inner.endpoints.len(),
                        Ordering::Relaxed,
                    );
                    return (Ok(body), true);
                }
                Ok(None) => {}
                Err(error) => return (Err(error), state.maybe_applied()),
            }
            endpoint_index = endpoint_index.wrapping_add(1);
            if let Err(error) = state.pause_before_next().await {
                return (Err(error), state.maybe_applied());
            }
        }
    }

    async fn attempt(&self, endpoint: &str, request: &Request, key: Option<&str>) -> Attempt {
        let mut builder = self.inner.http.request(
            request.method.clone(),
            format!("{endpoint}{}", request.path),
        );
        if let Some(token) = &self.inner.token {
            builder = builder.bearer_auth(token);
        }
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(body) = &request.body {
            if let Some(content_type) = request.content_type {
                builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
            }
            builder = builder.body(body.clone());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => return Attempt::from_send_error(&error),
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response.content_length().unwrap_or(0) > CLIENT_RESPONSE_BYTES_MAX as u64 {
            return Attempt::Answered(Err(ClientError::TooLarge(format!(
                "answer of {} bytes",
                response.content_length().unwrap_or(0)
            ))));
        }
        let body = match response.bytes().await {
            Ok(body) => body,
            // The status line arrived, so the request was received: for a write
            // the outcome is unknown.
            Err(error) => return Attempt::Lost(format!("reading the answer: {error}")),
        };
        // 201 (a process spawned) is as much a success as 200.
        if response_is_success(status) {
            Attempt::Answered(Ok(Reply { body, headers }))
        } else {
            Attempt::Answered(Err(error_from_response(status, &body)))
        }
    }
}

impl Request {
    pub(crate) fn read(path: String) -> Request {
        Request {
            method: Method::GET,
            path,
            body: None,
            content_type: None,
            kind: RequestKind::Read,
        }
    }

    pub(crate) fn unkeyed_write(method: Method, path: &str, json_body: Option<String>) -> Request {
        Request {
            method,
            path: path.to_string(),
            content_type: json_body.as_ref().and(JSON),
            body: json_body.map(Bytes::from),
            kind: RequestKind::UnkeyedWrite,
        }
    }
}

/// Whether `status` is a success: 200 for most calls, 201 for a spawn.
fn response_is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn normalize_endpoints(endpoints: Vec<String>) -> Result<Vec<String>, ClientError> {
    if endpoints.is_empty() {
        return Err(ClientError::InvalidConfig("no endpoints given".into()));
    }
    if endpoints.len() > CLIENT_ENDPOINTS_MAX {
        return Err(ClientError::InvalidConfig(format!(
            "{} endpoints given, at most {CLIENT_ENDPOINTS_MAX} accepted",
            endpoints.len()
        )));
    }
    endpoints
        .into_iter()
        .map(|endpoint| {
            let endpoint = endpoint.trim().trim_end_matches('/').to_string();
            let endpoint = if endpoint.contains("://") {
                endpoint
            } else {
                format!("http://{endpoint}")
            };
            match reqwest::Url::parse(&endpoint) {
                Ok(url) if url.scheme() == "http" && url.host().is_some() => Ok(endpoint),
                Ok(_) => Err(ClientError::InvalidConfig(format!(
                    "endpoint {endpoint:?}: only http://host:port is supported"
                ))),
                Err(error) => Err(ClientError::InvalidConfig(format!(
                    "endpoint {endpoint:?}: {error}"
                ))),
            }
        })
        .collect()
}

/// `/v1/kv/<key>` with every byte outside the unreserved set percent-encoded, so
/// that `/`, `?`, `%` and spaces in keys survive the trip.
fn kv_path(key: &str) -> String {
    format!("/v1/kv/{}", percent_encode(key.as_bytes()))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub(crate) fn percent_encode(bytes: &[u8]) -> String {
    let mut encoded = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_has_its_own_session_id() {
        let client = Client::new(vec!["127.0.0.1:1".into()], None).unwrap();
        let id = client.client_id();
        assert!(id.len() <= 64 && !id.contains(':'));
        let other = Client::new(vec!["127.0.0.1:1".into()], None).unwrap();
        assert_ne!(other.client_id(), id);
    }

    #[test]
    fn endpoints_are_normalized_and_checked() {
        let client =
            Client::new(vec!["127.0.0.1:2379/".into(), "http://h:1".into()], None).unwrap();
        assert_eq!(client.endpoints(), ["http://127.0.0.1:2379", "http://h:1"]);
        assert!(matches!(
            Client::new(vec![], None),
            Err(ClientError::InvalidConfig(_))
        ));
        assert!(matches!(
            Client::new(vec!["https://h:1".into()], None),
            Err(ClientError::InvalidConfig(_))
        ));
    }

    #[test]
    fn keys_are_percent_encoded_in_paths() {
        assert_eq!(kv_path("a/b c%"), "/v1/kv/a%2Fb%20c%25");
        assert_eq!(kv_path("é"), "/v1/kv/%C3%A9");
    }
}
