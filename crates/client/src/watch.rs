//! Watches: a stream of changes that survives disconnects.
//!
//! The server streams one JSON object per line (server-sent-event `data:` lines
//! are accepted too). The events of one transaction share a revision, so the
//! client remembers the revision of the last event it delivered *and how many
//! events of that revision* it delivered; after a disconnect it reconnects (to
//! any endpoint) from that same revision and skips the events it already
//! delivered, so the caller sees every change exactly once and in order.
//!
//! The first connection must succeed within the client's deadline
//! ([`crate::ClientOptions::deadline`]); otherwise [`Watch::next`] fails with
//! [`ClientError::Unavailable`]. Once connected, a watch reconnects for as long
//! as it lives. Every round of endpoints that all failed is reported to the
//! handler given to [`Watch::on_warning`], if any.

use crate::client::{percent_encode, Client};
use crate::error::{error_from_response, ClientError};
use crate::types::WatchEvent;
use futures::StreamExt as _;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Longest line of a watch stream the client accepts.
pub const WATCH_LINE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Longest silence on a watch connection before the client reconnects (the
/// connection may be to a paused node; reconnecting is free since it resumes).
/// The server asks its node for news every 10 s, so a healthy idle stream is
/// cut at most this often.
const WATCH_SILENCE_MAX: Duration = Duration::from_secs(15);

/// Which keys a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// Exactly this key.
    Key(String),
    /// Every key with this prefix.
    Prefix(String),
}

/// Receives a warning after each round of endpoints that all failed.
type WarningHandler = Box<dyn FnMut(&ClientError) + Send>;

type BodyStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>;

/// A running watch. Call [`Watch::next`] for each event, or turn it into a
/// [`futures::Stream`] with [`Watch::into_stream`].
pub struct Watch {
    client: Client,
    http: reqwest::Client,
    target: WatchTarget,
    /// The revision the first connection asks for (0: changes from now on).
    from_revision: u64,
    /// The revision of the last delivered event, if any.
    delivered_revision: Option<u64>,
    /// Events of `delivered_revision` delivered so far.
    delivered_at_revision: usize,
    /// Events of `delivered_revision` received on the current connection.
    received_at_revision: usize,
    endpoint_index: usize,
    body: Option<BodyStream>,
    buffer: Vec<u8>,
    ready: VecDeque<WatchEvent>,
    backoff: Duration,
    /// When the first connection must have succeeded by; `None` once it has.
    first_connection_deadline: Option<tokio::time::Instant>,
    /// Failed connection attempts since the last success or warning.
    failures_in_round: usize,
    /// Why the last connection attempt failed.
    last_failure: String,
    warning_handler: Option<WarningHandler>,
}

impl Client {
    /// Watches `target` for changes at or after `from_revision` (0: changes
    /// after the answering node's current revision).
    pub fn watch(&self, target: WatchTarget, from_revision: u64) -> Result<Watch, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(self.inner.options.connect_timeout)
            .read_timeout(WATCH_SILENCE_MAX)
            .build()
            .map_err(|error| ClientError::InvalidConfig(error.to_string()))?;
        Ok(Watch {
            client: self.clone(),
            http,
            target,
            from_revision,
            delivered_revision: None,
            delivered_at_revision: 0,
            received_at_revision: 0,
            endpoint_index: self.inner.preferred_endpoint.load(Ordering::Relaxed),
            body: None,
            buffer: Vec::new(),
            ready: VecDeque::new(),
            backoff: self.inner.options.backoff_initial,
            first_connection_deadline: Some(
                tokio::time::Instant::now() + self.inner.options.deadline,
            ),
            failures_in_round: 0,
            last_failure: String::new(),
            warning_handler: None,
        })
    }
}

impl Watch {
    /// Calls `handler` after each round in which every endpoint failed to
    /// serve the watch (the watch goes on retrying; this is for telling a
    /// person why nothing arrives).
    pub fn on_warning(&mut self, handler: impl FnMut(&ClientError) + Send + 'static) {
        self.warning_handler = Some(Box::new(handler));
    }

    /// The next change. Reconnects as long as failures are transient; returns an
    /// error for a refusal (bad request, compacted revision, unauthorized), or
    /// [`ClientError::Unavailable`] if the first connection did not succeed
    /// within the client's deadline.
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            let Some(body) = self.body.as_mut() else {
                self.connect().await?;
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) => self.absorb(&chunk)?,
                // End of stream or a broken connection: resume elsewhere.
                Some(Err(_)) | None => self.disconnect(),
            }
        }
    }

    /// The watch as a stream that ends after the first non-transient error.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<WatchEvent, ClientError>> {
        futures::stream::unfold(Some(self), |state| async move {
            let mut watch = state?;
            match watch.next().await {
                Ok(event) => Some((Ok(event), Some(watch))),
                Err(error) => Some((Err(error), None)),
            }
        })
    }

    fn disconnect(&mut self) {
        self.body = None;
        self.buffer.clear();
        self.endpoint_index = self.endpoint_index.wrapping_add(1);
    }

    fn url(&self) -> String {
        let endpoints = self.client.endpoints();
        let endpoint = &endpoints[self.endpoint_index % endpoints.len()];
        let selector = match &self.target {
            WatchTarget::Key(key) => format!("key={}", percent_encode(key.as_bytes())),
            WatchTarget::Prefix(prefix) => format!("prefix={}", percent_encode(prefix.as_bytes())),
        };
        let mut url = format!("{endpoint}/v1/watch?{selector}");
        // Resume at the last delivered revision itself: a transaction's events
        // share it and the connection may have been cut between them.
        match self.delivered_revision {
            Some(revision) => url.push_str(&format!("&from_revision={revision}")),
            None if self.from_revision > 0 => {
                url.push_str(&format!("&from_revision={}", self.from_revision))
            }
            None => {}
        }
        url
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        if let Some(deadline) = self.first_connection_deadline {
            if tokio::time::Instant::now() >= deadline {
                return Err(self.never_connected());
            }
        }
        let mut builder = self.http.get(self.url());
        if let Some(token) = &self.client.inner.token {
            builder = builder.bearer_auth(token);
        }
        // Before the first connection a paused node must not hold us past
        // the deadline; afterwards the connect and read timeouts bound it.
        let sent = match self.first_connection_deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, builder.send()).await {
                Ok(result) => result.map_err(Some),
                Err(_) => Err(None),
            },
            None => builder.send().await.map_err(Some),
        };
        match sent {
            Ok(response) if response.status().as_u16() == 200 => {
                self.backoff = self.client.inner.options.backoff_initial;
                self.received_at_revision = 0;
                self.failures_in_round = 0;
                self.first_connection_deadline = None;
                self.body = Some(response.bytes_stream().boxed());
                return Ok(());
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap_or_default();
                match error_from_response(status, &body) {
                    transient @ (ClientError::Unavailable { .. } | ClientError::Timeout { .. }) => {
                        self.last_failure = transient.to_string();
                    }
                    refusal => return Err(refusal),
                }
            }
            Err(Some(error)) => self.last_failure = describe(&error),
            Err(None) => self.last_failure = "no answer before the deadline".into(),
        }
        self.failed_attempt();
        // Transient: try the next endpoint after a pause that grows per failure
        // (cut short by the first connection's deadline).
        self.endpoint_index = self.endpoint_index.wrapping_add(1);
        let mut pause = self.backoff;
        if let Some(deadline) = self.first_connection_deadline {
            pause = pause.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        }
        tokio::time::sleep(pause).await;
        self.backoff = (self.backoff * 2).min(self.client.inner.options.backoff_max);
        Ok(())
    }

    /// Counts a failed attempt; after a whole round of endpoints, warns.
    fn failed_attempt(&mut self) {
        self.failures_in_round += 1;
        if self.failures_in_round < self.client.endpoints().len() {
            return;
        }
        self.failures_in_round = 0;
        let warning = ClientError::Unavailable {
            detail: format!(
                "no endpoint of {} served the watch; retrying (last error: {})",
                self.client.endpoints().len(),
                self.last_failure
            ),
        };
        if let Some(handler) = self.warning_handler.as_mut() {
            handler(&warning);
        }
    }

    fn never_connected(&self) -> ClientError {
        ClientError::Unavailable {
            detail: format!(
                "the watch could not connect to any of {} within {} ms (last error: {})",
                self.client.endpoints().join(", "),
                self.client.inner.options.deadline.as_millis(),
                self.last_failure
            ),
        }
    }

    /// Splits received bytes into lines and queues the events they carry.
    fn absorb(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        self.buffer.extend_from_slice(chunk);
        while let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            match parse_line(&line)? {
                Line::Nothing => {}
                Line::Event(event) => self.accept(event),
                Line::Failed(error) => return Err(error),
                // The node hit a transient problem: resume elsewhere.
                Line::Interrupted => {
                    self.disconnect();
                    return Ok(());
                }
            }
        }
        if self.buffer.len() > WATCH_LINE_BYTES_MAX {
            return Err(ClientError::TooLarge(format!(
                "watch line over {WATCH_LINE_BYTES_MAX} bytes"
            )));
        }
        Ok(())
    }

    /// Delivers `event` unless this connection is replaying events of the last
    /// delivered revision that were already delivered.
    fn accept(&mut self, event: WatchEvent) {
        match self.delivered_revision {
            Some(delivered) if event.revision < delivered => {}
            Some(delivered) if event.revision == delivered => {
                self.received_at_revision += 1;
                if self.received_at_revision > self.delivered_at_revision {
                    self.delivered_at_revision += 1;
                    self.ready.push_back(event);
                }
            }
            _ => {
                self.delivered_revision = Some(event.revision);
                self.delivered_at_revision = 1;
                self.received_at_revision = 1;
                self.ready.push_back(event);
            }
        }
    }
}

/// An error with its causes (reqwest's own message omits them).
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// What one line of a watch stream carries.
#[derive(Debug, PartialEq)]
enum Line {
    /// A blank line, an SSE comment or field, or a keep-alive.
    Nothing,
    /// A change.
    Event(WatchEvent),
    /// A final error line for a transient failure (reconnect).
    Interrupted,
    /// A final error line for a refusal (give up).
    Failed(ClientError),
}

/// Parses one line of a watch stream: JSON, or an SSE `data:` line.
fn parse_line(line: &[u8]) -> Result<Line, ClientError> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let json = match text.strip_prefix("data:") {
        Some(data) => data.trim(),
        None if text.starts_with('{') => text,
        None => return Ok(Line::Nothing),
    };
    if json.is_empty() {
        return Ok(Line::Nothing);
    }
    let unexpected = |detail: String| ClientError::Server {
        status: 200,
        detail,
    };
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|error| unexpected(format!("unparseable watch line: {error}")))?;
    if value.get("type").and_then(|kind| kind.as_str()) == Some("error") {
        let code = value.get("error").and_then(|code| code.as_str());
        let status = match code.unwrap_or("") {
            "unavailable" => 503,
            "timeout" => 504,
            "not_found" => 404,
            "unauthorized" => 401,
            "session_expired" | "compacted" => 409,
            _ => 400,
        };
        return Ok(match error_from_response(status, json.as_bytes()) {
            ClientError::Unavailable { .. } | ClientError::Timeout { .. } => Line::Interrupted,
            refusal => Line::Failed(refusal),
        });
    }
    if value.get("revision").is_none() {
        // Progress notes carry no change.
        return Ok(Line::Nothing);
    }
    serde_json::from_value(value)
        .map(Line::Event)
        .map_err(|error| unexpected(format!("unexpected watch event: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_json_and_sse_form_parse() {
        let plain = br#"{"type":"put","key":"a","value":"1","revision":5,"mod_revision":5}"#;
        let Line::Event(event) = parse_line(plain).unwrap() else {
            panic!("expected an event")
        };
        assert_eq!((event.kind.as_str(), event.revision), ("put", 5));
        let sse = br#"data: {"type":"delete","key":"a","revision":6}"#;
        assert!(matches!(parse_line(sse).unwrap(), Line::Event(event) if event.kind == "delete"));
        assert_eq!(parse_line(b": keep-alive").unwrap(), Line::Nothing);
        assert_eq!(parse_line(b"").unwrap(), Line::Nothing);
        assert!(parse_line(b"{not json").is_err());
        let interrupted = br#"{"type":"error","error":"unavailable","detail":"x"}"#;
        assert_eq!(parse_line(interrupted).unwrap(), Line::Interrupted);
        let refused = br#"{"type":"error","error":"compacted","detail":"x"}"#;
        assert!(matches!(parse_line(refused).unwrap(), Line::Failed(_)));
    }

    fn event(revision: u64, key: &str) -> WatchEvent {
        WatchEvent {
            kind: "put".into(),
            key: key.into(),
            key_base64: None,
            value: Default::default(),
            revision,
            mod_revision: Some(revision),
            create_revision: Some(revision),
            version: Some(1),
        }
    }

    #[test]
    fn a_resumed_stream_skips_exactly_what_was_delivered() {
        let client = Client::new(vec!["127.0.0.1:1".into()], None).unwrap();
        let mut watch = client.watch(WatchTarget::Prefix(String::new()), 1).unwrap();
        // First connection: revision 4, then two of a transaction's three
        // events at revision 5, then the connection is cut.
        for (revision, key) in [(4, "a"), (5, "b"), (5, "c")] {
            watch.accept(event(revision, key));
        }
        assert!(watch.url().ends_with("from_revision=5"), "{}", watch.url());
        // The reconnection replays revision 5 in full and goes on.
        watch.received_at_revision = 0;
        for (revision, key) in [(5, "b"), (5, "c"), (5, "d"), (6, "e")] {
            watch.accept(event(revision, key));
        }
        let keys: Vec<String> = watch.ready.iter().map(|event| event.key.clone()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e"]);
    }

    #[tokio::test]
    async fn a_watch_that_never_connects_warns_each_round_then_gives_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let options = crate::ClientOptions {
            deadline: Duration::from_millis(400),
            ..crate::ClientOptions::default()
        };
        let client = Client::with_options(vec![dead.clone(), dead], None, options).unwrap();
        let mut watch = client.watch(WatchTarget::Key("k".into()), 0).unwrap();
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = warnings.clone();
        watch.on_warning(move |warning| sink.lock().unwrap().push(warning.to_string()));
        let error = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch gives up within its deadline")
            .expect_err("nothing listens");
        assert!(
            matches!(&error, ClientError::Unavailable { detail } if detail.contains("within 400 ms")),
            "{error}"
        );
        let warnings = warnings.lock().unwrap();
        assert!(!warnings.is_empty(), "a failed round was reported");
        assert!(warnings[0].contains("no endpoint of 2"), "{warnings:?}");
    }
}
