//! The interface between the HTTP layer and a node's process pairs (issue 4):
//! the types `/v1/processes...` speaks and the [`ProcessService`] a node
//! implements (forwarding to the leader or to a process's primary as needed).

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use understudy_kv::RequestId;

use crate::service::ServiceError;

/// `POST /v1/processes?name=N`: start a program as a process pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnRequest {
    /// The process's unique name (1..=128 bytes of visible ASCII).
    pub name: String,
    /// The WebAssembly module (the request body).
    pub module: Bytes,
    /// Its arguments (`arg=` query parameters, in order; the program name is
    /// not implied: `args[0]` is what the program sees as `argv[0]`).
    pub args: Vec<String>,
    /// Its environment (`env=K=V` query parameters, in order).
    pub env: Vec<(String, String)>,
    /// Run without a backup: no log shipping, outputs released at once (for the
    /// overhead benchmark; `?unpaired=true`).
    pub unpaired: bool,
    /// `Idempotency-Key`: a retry with the same key and the same request
    /// returns the first result instead of 409.
    pub request_id: Option<RequestId>,
}

/// The answer to a spawn: `201 {"pid":…,"primary":…,"backup":…,"epoch":1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    /// The new process.
    pub pid: u64,
    /// The node running it.
    pub primary: u64,
    /// The node holding its backup (null when unpaired or no other node).
    pub backup: Option<u64>,
    /// Always 1 for a new process.
    pub epoch: u64,
}

/// `GET /v1/processes/{pid}` (and each item of `GET /v1/processes`). Field
/// names and meanings are the contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// The process id.
    pub pid: u64,
    /// Its unique name.
    pub name: String,
    /// `starting`, `running`, `promoting` (its primary is suspected and a backup
    /// is taking over) or `exited`.
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

/// `POST /v1/processes/{pid}/stdin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdinWrite {
    /// The process.
    pub pid: u64,
    /// The bytes (may be empty, e.g. with `eof`).
    pub bytes: Bytes,
    /// `?eof=true`: close stdin after these bytes.
    pub eof: bool,
    /// `Idempotency-Key`: a retry, through any node and across failovers,
    /// applies once and returns the first answer.
    pub request_id: Option<RequestId>,
}

/// The answer to a stdin write: `200 {"offset":N}`, N being the length of the
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

/// Released output from a byte offset (`GET /v1/processes/{pid}/stdout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    /// The bytes from the requested offset (possibly empty).
    pub bytes: Bytes,
    /// The offset after them (`X-Next-Offset`).
    pub next_offset: u64,
    /// Whether the process has exited (no more output will come).
    pub exited: bool,
}

/// One entry of a process's history (`GET /v1/processes/{pid}/events`).
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

/// Why a process request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// No such pid: 404 `not_found`.
    #[error("no process {pid}")]
    NotFound {
        /// The pid asked for.
        pid: u64,
    },
    /// The name is taken: 409 `name_in_use` with the existing pid.
    #[error("name {name:?} is in use by process {pid}")]
    NameInUse {
        /// The name.
        name: String,
        /// The process using it.
        pid: u64,
    },
    /// The module is not a WebAssembly program understudy can run (bad bytes,
    /// missing `_start` and no reactor handler, limits): 400 `invalid_module`.
    #[error("invalid module: {detail}")]
    InvalidModule {
        /// What is wrong.
        detail: String,
    },
    /// Other bad input (name, args, env, stdin after eof): 400 `bad_request`.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// Over a size limit (module, stdin body, args): 413 `too_large`.
    #[error("too large: {detail}")]
    TooLarge {
        /// What was too large.
        detail: String,
    },
    /// The process exists but cannot take the request now (starting, failing
    /// over, backup behind, exited for stdin): 503 `unavailable`.
    #[error("unavailable: {detail}")]
    Unavailable {
        /// Why.
        detail: String,
    },
    /// The cluster could not serve the request (503) or its outcome is unknown
    /// (504), as for the KV API.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// What a node offers for process pairs. Every method may be called on any
/// node.
#[async_trait]
pub trait ProcessService: Send + Sync + 'static {
    /// Starts a process pair.
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, ProcessError>;

    /// Every process, by pid.
    async fn list(&self) -> Result<Vec<ProcessStatus>, ProcessError>;

    /// One process.
    async fn status(&self, pid: u64) -> Result<ProcessStatus, ProcessError>;

    /// Appends to a process's stdin; answers once the bytes are durable at the
    /// backup.
    async fn write_stdin(&self, write: StdinWrite) -> Result<StdinWritten, ProcessError>;

    /// Released output of `stream` from byte `from`; waits up to `wait` for
    /// some if there is none yet and the process is still running.
    async fn read_output(
        &self,
        pid: u64,
        stream: OutputStream,
        from: u64,
        wait: Duration,
    ) -> Result<OutputChunk, ProcessError>;

    /// The process's history, oldest first.
    async fn events(&self, pid: u64) -> Result<Vec<ProcessEvent>, ProcessError>;

    /// Stops the process if it runs and removes it, its output and its module
    /// (when no other process uses it).
    async fn delete(&self, pid: u64) -> Result<(), ProcessError>;
}
