//! An in-memory `ProcessService` and a node that offers it next to the KV test
//! double, served over a real loopback socket.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{watch, Notify};
use understudy_api::process_service::{
    OutputChunk, OutputStream, ProcessError, ProcessEvent, ProcessService, ProcessStatus,
    SpawnRequest, Spawned, StdinWrite, StdinWritten,
};
use understudy_api::service::{
    AddMember, ClusterService, ClusterStatus, Consistency, GetResult, RangeResult, ServiceError,
};
use understudy_api::{router, ApiOptions};
use understudy_kv::{Command, Event, KeySelector, RequestId, Response};

use crate::common::LocalService;

/// One process of the fake.
pub struct FakeProcess {
    status: ProcessStatus,
    stdin_closed: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    events: Vec<ProcessEvent>,
    /// The spawn's idempotency key and the request, for a repeated spawn.
    spawned_by: Option<(RequestId, SpawnRequest)>,
    /// Answers to stdin writes by idempotency key.
    stdin_answers: Vec<(RequestId, StdinWritten)>,
    stdin_bytes: u64,
}

#[derive(Default)]
pub struct FakeState {
    next_pid: u64,
    processes: BTreeMap<u64, FakeProcess>,
    /// Every spawn request that reached the service.
    pub spawns: Vec<SpawnRequest>,
    /// Every stdin write that reached the service.
    pub stdin_writes: Vec<StdinWrite>,
    /// The `wait` of every output read.
    pub waits: Vec<Duration>,
    /// Returned by the next call, whatever it is.
    fail_next: Option<ProcessError>,
}

/// An in-memory process service: a process echoes its stdin to stdout, writes
/// `<n> bytes\n` to stderr per write, and exits with code 0 at stdin's end.
#[derive(Default)]
pub struct FakeProcesses {
    state: Mutex<FakeState>,
    /// Woken whenever output appears or a process exits.
    output_changed: Notify,
    /// How many output reads are waiting for output right now.
    pub readers_waiting: watch::Sender<u64>,
}

impl FakeProcesses {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("no test panics holding it")
    }

    pub fn fail_next(&self, error: ProcessError) {
        self.lock().fail_next = Some(error);
    }

    fn take_failure(&self) -> Result<(), ProcessError> {
        self.lock().fail_next.take().map_or(Ok(()), Err)
    }
}

fn event(kind: &str, detail: &str) -> ProcessEvent {
    ProcessEvent {
        at_unix_ms: 1_700_000_000_000,
        kind: kind.into(),
        epoch: 1,
        detail: detail.into(),
    }
}

fn new_process(pid: u64, request: &SpawnRequest) -> FakeProcess {
    let backup = (!request.unpaired).then_some(2);
    FakeProcess {
        status: ProcessStatus {
            pid,
            name: request.name.clone(),
            state: "running".into(),
            primary: 1,
            backup,
            backup_state: if backup.is_some() {
                "caught_up"
            } else {
                "none"
            }
            .into(),
            epoch: 1,
            logged_lsn: 0,
            acked_lsn: 0,
            checkpoint_lsn: 0,
            stdout_offset: 0,
            exit_code: None,
            recovery_mode: "checkpoint".into(),
        },
        stdin_closed: false,
        stdout: Vec::new(),
        stderr: Vec::new(),
        events: vec![event("birth", "born on node 1")],
        spawned_by: request.request_id.clone().map(|id| (id, request.clone())),
        stdin_answers: Vec::new(),
        stdin_bytes: 0,
    }
}

fn spawned_of(process: &FakeProcess) -> Spawned {
    Spawned {
        pid: process.status.pid,
        primary: process.status.primary,
        backup: process.status.backup,
        epoch: process.status.epoch,
    }
}

impl FakeState {
    fn process(&mut self, pid: u64) -> Result<&mut FakeProcess, ProcessError> {
        self.processes
            .get_mut(&pid)
            .ok_or(ProcessError::NotFound { pid })
    }

    /// The first answer of a spawn repeated with the same key and request.
    fn repeated_spawn(&self, request: &SpawnRequest) -> Option<Spawned> {
        let request_id = request.request_id.as_ref()?;
        self.processes
            .values()
            .find(|process| {
                process.spawned_by.as_ref().is_some_and(|(id, first)| {
                    id == request_id && first.name == request.name && first.module == request.module
                })
            })
            .map(spawned_of)
    }

    fn apply_stdin(&mut self, write: &StdinWrite) -> Result<StdinWritten, ProcessError> {
        let process = self.process(write.pid)?;
        if let Some((_, answer)) = process
            .stdin_answers
            .iter()
            .find(|(id, _)| Some(id) == write.request_id.as_ref())
        {
            return Ok(answer.clone());
        }
        if process.stdin_closed {
            return Err(ProcessError::BadRequest {
                detail: "stdin is closed".into(),
            });
        }
        process.stdin_bytes += write.bytes.len() as u64;
        process.stdout.extend_from_slice(&write.bytes);
        process.status.stdout_offset = process.stdout.len() as u64;
        let note = format!("{} bytes\n", write.bytes.len());
        process.stderr.extend_from_slice(note.as_bytes());
        if write.eof {
            process.stdin_closed = true;
            process.status.state = "exited".into();
            process.status.exit_code = Some(0);
            process.events.push(event("exit", "exit code 0"));
        }
        let answer = StdinWritten {
            offset: process.stdin_bytes,
        };
        if let Some(id) = &write.request_id {
            process.stdin_answers.push((id.clone(), answer.clone()));
        }
        Ok(answer)
    }

    fn output(
        &mut self,
        pid: u64,
        stream: OutputStream,
        from: u64,
    ) -> Result<OutputChunk, ProcessError> {
        let process = self.process(pid)?;
        let bytes = match stream {
            OutputStream::Stdout => &process.stdout,
            OutputStream::Stderr => &process.stderr,
        };
        let start = (from as usize).min(bytes.len());
        Ok(OutputChunk {
            bytes: Bytes::copy_from_slice(&bytes[start..]),
            next_offset: bytes.len().max(start) as u64,
            exited: process.status.exit_code.is_some(),
        })
    }
}

/// Counts one waiting output read while alive.
struct Waiting<'a>(&'a watch::Sender<u64>);

impl<'a> Waiting<'a> {
    fn new(counter: &'a watch::Sender<u64>) -> Waiting<'a> {
        counter.send_modify(|count| *count += 1);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

#[async_trait]
impl ProcessService for FakeProcesses {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, ProcessError> {
        self.take_failure()?;
        let mut state = self.lock();
        state.spawns.push(request.clone());
        if let Some(first) = state.repeated_spawn(&request) {
            return Ok(first);
        }
        if let Some(holder) = state
            .processes
            .values()
            .find(|process| process.status.name == request.name)
        {
            return Err(ProcessError::NameInUse {
                name: request.name,
                pid: holder.status.pid,
            });
        }
        state.next_pid += 1;
        let pid = state.next_pid;
        let process = new_process(pid, &request);
        let spawned = spawned_of(&process);
        state.processes.insert(pid, process);
        Ok(spawned)
    }

    async fn list(&self) -> Result<Vec<ProcessStatus>, ProcessError> {
        self.take_failure()?;
        let state = self.lock();
        Ok(state
            .processes
            .values()
            .map(|process| process.status.clone())
            .collect())
    }

    async fn status(&self, pid: u64) -> Result<ProcessStatus, ProcessError> {
        self.take_failure()?;
        Ok(self.lock().process(pid)?.status.clone())
    }

    async fn write_stdin(&self, write: StdinWrite) -> Result<StdinWritten, ProcessError> {
        self.take_failure()?;
        let answer = {
            let mut state = self.lock();
            state.stdin_writes.push(write.clone());
            state.apply_stdin(&write)?
        };
        self.output_changed.notify_waiters();
        Ok(answer)
    }

    async fn read_output(
        &self,
        pid: u64,
        stream: OutputStream,
        from: u64,
        wait: Duration,
    ) -> Result<OutputChunk, ProcessError> {
        self.take_failure()?;
        self.lock().waits.push(wait);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so output appended between the look
            // and the wait still wakes this read.
            let notified = self.output_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let chunk = self.lock().output(pid, stream, from)?;
            if !chunk.bytes.is_empty() || chunk.exited || tokio::time::Instant::now() >= deadline {
                return Ok(chunk);
            }
            let _waiting = Waiting::new(&self.readers_waiting);
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.lock().output(pid, stream, from);
            }
        }
    }

    async fn events(&self, pid: u64) -> Result<Vec<ProcessEvent>, ProcessError> {
        self.take_failure()?;
        Ok(self.lock().process(pid)?.events.clone())
    }

    async fn delete(&self, pid: u64) -> Result<(), ProcessError> {
        self.take_failure()?;
        let mut state = self.lock();
        state.process(pid)?;
        state.processes.remove(&pid);
        Ok(())
    }
}

/// A node: the KV test double, plus the fake processes when given.
pub struct Node {
    pub kv: Arc<LocalService>,
    pub processes: Option<Arc<FakeProcesses>>,
}

#[async_trait]
impl ClusterService for Node {
    async fn write(&self, command: Command) -> Result<Response, ServiceError> {
        self.kv.write(command).await
    }
    async fn get(&self, key: Bytes, consistency: Consistency) -> Result<GetResult, ServiceError> {
        self.kv.get(key, consistency).await
    }
    async fn range(
        &self,
        prefix: Bytes,
        limit: usize,
        consistency: Consistency,
    ) -> Result<RangeResult, ServiceError> {
        self.kv.range(prefix, limit, consistency).await
    }
    async fn changes(
        &self,
        selector: KeySelector,
        from_revision: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, ServiceError> {
        self.kv.changes(selector, from_revision, limit, wait).await
    }
    async fn cluster(&self) -> Result<ClusterStatus, ServiceError> {
        self.kv.cluster().await
    }
    async fn add_member(&self, member: AddMember) -> Result<ClusterStatus, ServiceError> {
        self.kv.add_member(member).await
    }
    async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ServiceError> {
        self.kv.remove_member(id).await
    }
    fn metrics(&self) -> String {
        self.kv.metrics()
    }
    fn is_healthy(&self) -> bool {
        self.kv.is_healthy()
    }
    fn processes(&self) -> Option<Arc<dyn ProcessService>> {
        self.processes
            .clone()
            .map(|processes| processes as Arc<dyn ProcessService>)
    }
}

/// The router over `node`, served on an ephemeral loopback port.
pub struct Server {
    base: String,
    pub client: reqwest::Client,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(node: Node, options: ApiOptions) -> Server {
    let app = router(Arc::new(node), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding an ephemeral loopback port");
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
        task,
    }
}

/// A server whose node has the fake process service.
pub async fn serve_processes() -> (Arc<FakeProcesses>, Server) {
    let processes = Arc::new(FakeProcesses::default());
    let node = Node {
        kv: LocalService::new(),
        processes: Some(processes.clone()),
    };
    (processes, serve(node, ApiOptions::default()).await)
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST` a module with `Content-Type: application/wasm`.
    pub fn spawn(&self, query: &str, module: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(&format!("/v1/processes?{query}")))
            .header("Content-Type", "application/wasm")
            .body(module)
    }
}
