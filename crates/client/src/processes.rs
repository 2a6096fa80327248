//! Process pairs: the `/v1/processes...` calls of [`Client`] and their JSON
//! shapes (mirroring `understudy-api`'s `process_service.rs`, which this crate
//! does not depend on so that clients do not pull in the server's stack).
//!
//! Retries follow the KV calls (see `retry.rs`): reads are retried on any
//! transient failure, through every endpoint, until the deadline; a spawn and a
//! stdin write carry an `Idempotency-Key` from the client's session and are
//! retried under the same key after a `503`, a `504` or a lost connection, so
//! a retry that reaches another node after a failover applies once.

use crate::client::{percent_encode, Client, Reply, Request};
use crate::error::ClientError;
use crate::retry::RequestKind;
use bytes::Bytes;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest long-poll a [`Client::read_output`] asks the server for. The
/// attempt timeout must outlast the wait, so callers also bound the wait by it.
pub const OUTPUT_WAIT_MAX: Duration = Duration::from_secs(60);

/// The `Content-Type` of a module upload.
const WASM: Option<&str> = Some("application/wasm");

/// How to start a process (`POST /v1/processes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// The process's unique name.
    pub name: String,
    /// Its arguments, in order (`args[0]` is what the program sees as `argv[0]`).
    pub args: Vec<String>,
    /// Its environment, `(name, value)` in order.
    pub env: Vec<(String, String)>,
    /// Run without a backup (no log shipping; outputs released at once).
    pub unpaired: bool,
}

/// The answer to a spawn: `201 {"pid","primary","backup","epoch"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// The new process.
    pub pid: u64,
    /// The node running it.
    pub primary: u64,
    /// The node holding its backup (none when unpaired or no other node).
    pub backup: Option<u64>,
    /// Always 1 for a new process.
    pub epoch: u64,
}

/// `GET /v1/processes/{pid}`, and each item of `GET /v1/processes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// The process id.
    pub pid: u64,
    /// Its unique name.
    pub name: String,
    /// `starting`, `running`, `promoting` or `exited`.
    pub state: String,
    /// The node running the primary.
    pub primary: u64,
    /// The node holding the backup, if any.
    pub backup: Option<u64>,
    /// `none`, `catching_up` or `caught_up`.
    pub backup_state: String,
    /// The primary's term of office (1, raised by one per promotion).
    pub epoch: u64,
    /// The last lsn the primary logged.
    pub logged_lsn: u64,
    /// The last lsn the backup acknowledged as durable.
    pub acked_lsn: u64,
    /// The lsn the latest checkpoint follows (0: none).
    pub checkpoint_lsn: u64,
    /// Bytes of stdout released so far.
    pub stdout_offset: u64,
    /// The exit code, once exited.
    pub exit_code: Option<i32>,
    /// `checkpoint` or `replay`: how a promoted backup recovers.
    pub recovery_mode: String,
}

/// `GET /v1/processes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    /// Every process, by pid.
    pub processes: Vec<ProcessStatus>,
}

/// The answer to a stdin write: `{"offset":N}`, N being the length of the
/// process's stdin once these bytes are in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinWritten {
    /// Bytes of stdin accepted so far, this write included.
    pub offset: u64,
}

/// Which output stream to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

impl OutputStream {
    /// The path segment: `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Released output from a byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// The bytes from the requested offset (possibly empty).
    pub bytes: Bytes,
    /// The offset after them (`X-Next-Offset`).
    pub next_offset: u64,
    /// Whether the process has exited (`X-Process-Exited`): once it has and
    /// `bytes` is empty, no more output will come.
    pub exited: bool,
}

/// One entry of a process's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// Wall-clock time of the event, milliseconds since the Unix epoch, as the
    /// node that recorded it saw it.
    pub at_unix_ms: u64,
    /// `birth`, `checkpoint`, `suspicion`, `promotion`, `repairing`,
    /// `caught_up`, `exit` or `deleted`.
    pub kind: String,
    /// The epoch the event belongs to.
    pub epoch: u64,
    /// A human-readable description.
    pub detail: String,
}

/// `GET /v1/processes/{pid}/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvents {
    /// Oldest first.
    pub events: Vec<ProcessEvent>,
}

/// The answer to `DELETE /v1/processes/{pid}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDeleted {
    /// The process removed.
    pub pid: u64,
    /// Always true in a 200 answer.
    pub deleted: bool,
}

impl Client {
    /// Starts `module` as a process pair (or alone with `options.unpaired`).
    /// [`ClientError::NameInUse`] if another process has the name; a retry of
    /// this same call (same idempotency key) returns the first result instead.
    pub async fn spawn(
        &self,
        module: impl Into<Bytes>,
        options: &SpawnOptions,
    ) -> Result<Spawned, ClientError> {
        let request = Request {
            method: Method::POST,
            path: spawn_path(options),
            body: Some(module.into()),
            content_type: WASM,
            kind: RequestKind::KeyedWrite,
        };
        self.call_json(request).await
    }

    /// Every process the cluster knows, by pid.
    pub async fn list_processes(&self) -> Result<Vec<ProcessStatus>, ClientError> {
        let list: ProcessList = self
            .call_json(Request::read("/v1/processes".to_string()))
            .await?;
        Ok(list.processes)
    }

    /// One process's status; [`ClientError::NotFound`] if there is no such pid.
    pub async fn process_status(&self, pid: u64) -> Result<ProcessStatus, ClientError> {
        self.call_json(Request::read(format!("/v1/processes/{pid}")))
            .await
    }

    /// Appends `bytes` to the process's stdin (then closes it if `eof`);
    /// answers once the bytes are durable at the backup. Retried through any
    /// endpoint under one idempotency key, so it applies once.
    pub async fn write_stdin(
        &self,
        pid: u64,
        bytes: impl Into<Bytes>,
        eof: bool,
    ) -> Result<StdinWritten, ClientError> {
        let mut path = format!("/v1/processes/{pid}/stdin");
        if eof {
            path.push_str("?eof=true");
        }
        let request = Request {
            method: Method::POST,
            path,
            body: Some(bytes.into()),
            content_type: Some("application/octet-stream"),
            kind: RequestKind::KeyedWrite,
        };
        self.call_json(request).await
    }

    /// Released output of `stream` from byte `from`. If there is none yet and
    /// the process still runs, the server waits up to `wait` for some (capped
    /// at [`OUTPUT_WAIT_MAX`] and below the client's attempt timeout).
    pub async fn read_output(
        &self,
        pid: u64,
        stream: OutputStream,
        from: u64,
        wait: Duration,
    ) -> Result<OutputChunk, ClientError> {
        let wait_seconds = self.output_wait_seconds(wait);
        let path = format!(
            "/v1/processes/{pid}/{}?from={from}&wait={wait_seconds}",
            stream.as_str()
        );
        let reply = self.call(Request::read(path)).await?;
        output_chunk(reply, from)
    }

    /// The process's history, oldest first.
    pub async fn process_events(&self, pid: u64) -> Result<Vec<ProcessEvent>, ClientError> {
        let events: ProcessEvents = self
            .call_json(Request::read(format!("/v1/processes/{pid}/events")))
            .await?;
        Ok(events.events)
    }

    /// Stops the process if it runs and removes it and its output.
    pub async fn delete_process(&self, pid: u64) -> Result<ProcessDeleted, ClientError> {
        let path = format!("/v1/processes/{pid}");
        // Unkeyed: deleting twice is harmless, but a retry after an ambiguous
        // failure could answer 404 for a delete that did happen, so the caller
        // decides what to make of a timeout.
        self.call_json(Request::unkeyed_write(Method::DELETE, &path, None))
            .await
    }

    /// `wait` in whole seconds, at most [`OUTPUT_WAIT_MAX`] and one second
    /// less than an attempt may take (so a long poll is never cut off and
    /// retried as if it had failed).
    fn output_wait_seconds(&self, wait: Duration) -> u64 {
        let attempt_seconds = self.inner.options.attempt_timeout.as_secs();
        wait.min(OUTPUT_WAIT_MAX)
            .as_secs()
            .min(attempt_seconds.saturating_sub(1))
    }
}

/// `/v1/processes?name=N&arg=…&env=K=V[&unpaired=true]`, every value
/// percent-encoded.
fn spawn_path(options: &SpawnOptions) -> String {
    let mut path = format!(
        "/v1/processes?name={}",
        percent_encode(options.name.as_bytes())
    );
    for argument in &options.args {
        path.push_str("&arg=");
        path.push_str(&percent_encode(argument.as_bytes()));
    }
    for (name, value) in &options.env {
        path.push_str("&env=");
        path.push_str(&percent_encode(format!("{name}={value}").as_bytes()));
    }
    if options.unpaired {
        path.push_str("&unpaired=true");
    }
    path
}

/// An output read's answer: the bytes and the two headers. The next offset
/// must equal `from` plus the bytes returned, or the stream has a gap or an
/// overlap, which is reported rather than passed on.
fn output_chunk(reply: Reply, from: u64) -> Result<OutputChunk, ClientError> {
    let header = |name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    let unexpected = |detail: String| ClientError::Server {
        status: 200,
        detail,
    };
    let next_offset: u64 = header("X-Next-Offset")
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| unexpected("no valid X-Next-Offset header".into()))?;
    let exited = match header("X-Process-Exited") {
        Some("true") => true,
        Some("false") | None => false,
        Some(other) => return Err(unexpected(format!("X-Process-Exited: {other:?}"))),
    };
    let expected_next = from + reply.body.len() as u64;
    if next_offset != expected_next {
        return Err(unexpected(format!(
            "read from {from} returned {} bytes but X-Next-Offset {next_offset}",
            reply.body.len()
        )));
    }
    Ok(OutputChunk {
        bytes: reply.body,
        next_offset,
        exited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_paths_encode_names_arguments_and_environment() {
        let options = SpawnOptions {
            name: "a b".into(),
            args: vec!["prog".into(), "x&y".into()],
            env: vec![("K".into(), "v=1".into())],
            unpaired: true,
        };
        assert_eq!(
            spawn_path(&options),
            "/v1/processes?name=a%20b&arg=prog&arg=x%26y&env=K%3Dv%3D1&unpaired=true"
        );
        let plain = SpawnOptions {
            name: "p".into(),
            ..SpawnOptions::default()
        };
        assert_eq!(spawn_path(&plain), "/v1/processes?name=p");
    }

    fn reply(body: &'static [u8], headers: &[(&'static str, &'static str)]) -> Reply {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, reqwest::header::HeaderValue::from_static(value));
        }
        Reply {
            body: Bytes::from_static(body),
            headers: map,
        }
    }

    #[test]
    fn output_chunks_check_the_next_offset_against_the_bytes() {
        let chunk = output_chunk(
            reply(
                b"abc",
                &[("x-next-offset", "13"), ("x-process-exited", "true")],
            ),
            10,
        )
        .unwrap();
        assert_eq!((chunk.next_offset, chunk.exited), (13, true));
        assert!(output_chunk(reply(b"abc", &[("x-next-offset", "12")]), 10).is_err());
        assert!(output_chunk(reply(b"", &[]), 0).is_err());
        assert!(output_chunk(
            reply(
                b"",
                &[("x-next-offset", "0"), ("x-process-exited", "maybe")]
            ),
            0
        )
        .is_err());
    }
}
