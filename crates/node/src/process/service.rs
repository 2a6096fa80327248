//! `ProcessService` for a node: what `/v1/processes...` does.
//!
//! Spawns validate the module (it must load in the guest engine), store it by
//! digest in chunks through the coordinator and commit the process with its
//! placement: the primary on the node that took the request, the backup on the
//! live node holding fewest backups. Stdin writes go to the node running the
//! primary; status merges the table with the primary's live numbers; output
//! and events are read from this node's copy of the table.

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;
use understudy_api::process_service::{
    OutputChunk, OutputStream, ProcessError, ProcessEvent, ProcessService, ProcessStatus,
    SpawnRequest, Spawned, StdinWrite, StdinWritten,
};
use understudy_api::service::ServiceError;
use understudy_pair::Stream;
use understudy_types::limits::{
    GUEST_ARGS_ENV_BYTES_MAX, GUEST_ARGS_ENV_ENTRIES_MAX, GUEST_MODULE_BYTES_MAX,
};

use super::primary::LiveStatus;
use super::table::{
    ProcessCommand, ProcessEntry, ProcessOutcome, ProcessRefusal, ProcessSummary, RunState,
    SpawnKey, MODULE_CHUNK_BYTES,
};
use super::{now_unix_ms, ProcessRuntime};
use crate::service::NodeService;
use crate::wire::{ForwardRequest, ForwardResponse, StdinFailure};

/// Longest name of a process.
const PROCESS_NAME_BYTES_MAX: usize = 128;
/// How long a stdin write waits for the primary's answer.
const STDIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long a status read waits for the primary's live numbers.
const LIVE_STATUS_DEADLINE: Duration = Duration::from_millis(500);

/// The node's process service.
#[derive(Clone, Debug)]
pub struct NodeProcesses {
    service: NodeService,
    runtime: Weak<ProcessRuntime>,
}

impl NodeProcesses {
    /// The service over `runtime` (held weakly: the node owns the runtime).
    pub fn new(service: NodeService, runtime: &Arc<ProcessRuntime>) -> NodeProcesses {
        NodeProcesses {
            service,
            runtime: Arc::downgrade(runtime),
        }
    }

    fn runtime(&self) -> Result<Arc<ProcessRuntime>, ProcessError> {
        self.runtime.upgrade().ok_or(ProcessError::Unavailable {
            detail: "the node is stopping".into(),
        })
    }

    /// `read` applied to the table entry of `pid`: this node's (under the
    /// state lock, so only what `read` takes is copied, never the whole
    /// output), else the leader's (a node that restarted or joined may not
    /// have applied the spawn yet, and a pid that exists must never answer 404).
    async fn view<T>(
        &self,
        pid: u64,
        read: impl Fn(&ProcessEntry) -> T,
    ) -> Result<T, ProcessError> {
        if let Some(value) = self.local_view(pid, &read) {
            return Ok(value);
        }
        let leader = self.service.leader_id();
        match leader {
            Some(leader) if leader == self.service.shared().id => {
                Err(ProcessError::NotFound { pid })
            }
            Some(leader) => {
                let deadline = Instant::now() + LIVE_STATUS_DEADLINE;
                let request = ForwardRequest::ProcessEntry { pid };
                match self
                    .service
                    .forward_to_node(leader, request, deadline)
                    .await
                {
                    Ok(ForwardResponse::ProcessEntry(Some(entry))) => Ok(read(&entry)),
                    Ok(ForwardResponse::ProcessEntry(None)) => Err(ProcessError::NotFound { pid }),
                    _ => Err(ProcessError::Unavailable {
                        detail: "this node is catching up and the leader did not answer".into(),
                    }),
                }
            }
            None => Err(ProcessError::Unavailable {
                detail: "no leader known to confirm the process table".into(),
            }),
        }
    }

    fn local_view<T>(&self, pid: u64, read: impl Fn(&ProcessEntry) -> T) -> Option<T> {
        let state = self
            .service
            .shared()
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.processes.process(pid).map(read)
    }

    /// The summary of `pid` (see [`ProcessSummary`]).
    async fn summary(&self, pid: u64) -> Result<ProcessSummary, ProcessError> {
        self.view(pid, ProcessEntry::summary).await
    }

    /// A stdin write to an exited process: a retry of a client's latest write
    /// gets the answer of its first try; anything else is refused.
    async fn stdin_after_exit(
        &self,
        write: &StdinWrite,
        code: i32,
    ) -> Result<StdinWritten, ProcessError> {
        if let Some(request) = &write.request_id {
            let client = request.client_id.clone();
            let answer = self
                .view(write.pid, move |entry| entry.stdin_answer(&client))
                .await?;
            if let Some(answer) = answer.filter(|answer| answer.sequence == request.sequence) {
                return Ok(StdinWritten {
                    offset: answer.offset,
                });
            }
        }
        Err(ProcessError::BadRequest {
            detail: format!("process {} exited with code {code}", write.pid),
        })
    }

    async fn coordinate(&self, command: ProcessCommand) -> Result<ProcessOutcome, ProcessError> {
        match self.service.coordinate(command).await? {
            Ok(outcome) => Ok(outcome),
            Err(refusal) => Err(refusal_error(refusal)),
        }
    }

    async fn upload(&self, digest: [u8; 32], module: &Bytes) -> Result<(), ProcessError> {
        let stored = {
            let state = self
                .service
                .shared()
                .state
                .read()
                .unwrap_or_else(|p| p.into_inner());
            state.processes.has_module(&digest)
        };
        if stored {
            return Ok(());
        }
        let chunks: Vec<Bytes> = (0..module.len())
            .step_by(MODULE_CHUNK_BYTES)
            .map(|start| module.slice(start..(start + MODULE_CHUNK_BYTES).min(module.len())))
            .collect();
        let count = chunks.len() as u32;
        for (index, bytes) in chunks.into_iter().enumerate() {
            let command = ProcessCommand::PutModuleChunk {
                digest,
                index: index as u32,
                count,
                bytes,
            };
            self.coordinate(command).await?;
        }
        Ok(())
    }

    async fn live(&self, entry: &ProcessSummary) -> Option<LiveStatus> {
        if entry.state != RunState::Running {
            return None;
        }
        let runtime = self.runtime.upgrade()?;
        if entry.primary == self.service.shared().id {
            return runtime.live_status(entry.pid);
        }
        let deadline = Instant::now() + LIVE_STATUS_DEADLINE;
        let request = ForwardRequest::ProcessLive { pid: entry.pid };
        match self
            .service
            .forward_to_node(entry.primary, request, deadline)
            .await
        {
            Ok(ForwardResponse::ProcessLive(live)) => live,
            _ => None,
        }
    }

    async fn status_of(&self, entry: ProcessSummary) -> ProcessStatus {
        let live = self
            .live(&entry)
            .await
            // A primary that has not published yet is still restoring and
            // replaying: not running yet.
            .filter(|live| live.epoch == entry.epoch && !live.recovery_mode.is_empty());
        let state = match (&entry.state, &live) {
            (RunState::Exited(_), _) => "exited",
            (RunState::Running, Some(_)) => "running",
            // The primary does not answer: starting, or failing over.
            (RunState::Running, None) if entry.released_oseq == 0 && entry.epoch == 1 => "starting",
            (RunState::Running, None) => "promoting",
        };
        let live = live.unwrap_or_default();
        ProcessStatus {
            pid: entry.pid,
            name: entry.name.clone(),
            state: state.to_string(),
            primary: entry.primary,
            backup: entry.backup,
            backup_state: if entry.backup.is_none() {
                "none".to_string()
            } else if live.backup_state.is_empty() {
                "catching_up".to_string()
            } else {
                live.backup_state
            },
            epoch: entry.epoch,
            logged_lsn: live.logged_lsn,
            acked_lsn: live.acked_lsn,
            checkpoint_lsn: live.checkpoint_lsn,
            stdout_offset: entry.stdout_bytes,
            exit_code: match entry.state {
                RunState::Exited(code) => Some(code),
                RunState::Running => None,
            },
            recovery_mode: if live.recovery_mode.is_empty() {
                entry.recovery_mode.clone()
            } else {
                live.recovery_mode
            },
        }
    }
}

fn refusal_error(refusal: ProcessRefusal) -> ProcessError {
    match refusal {
        ProcessRefusal::NotFound { pid } => ProcessError::NotFound { pid },
        ProcessRefusal::NameInUse { name, pid } => ProcessError::NameInUse { name, pid },
        ProcessRefusal::Invalid(detail) => ProcessError::BadRequest { detail },
        other => ProcessError::Unavailable {
            detail: other.to_string(),
        },
    }
}

fn check_spawn(request: &SpawnRequest) -> Result<(), ProcessError> {
    let name_ok = !request.name.is_empty()
        && request.name.len() <= PROCESS_NAME_BYTES_MAX
        && request.name.bytes().all(|byte| byte.is_ascii_graphic());
    if !name_ok {
        return Err(ProcessError::BadRequest {
            detail: format!("a name is 1 to {PROCESS_NAME_BYTES_MAX} bytes of visible ASCII"),
        });
    }
    if request.module.len() > GUEST_MODULE_BYTES_MAX {
        return Err(ProcessError::TooLarge {
            detail: format!("a module is at most {GUEST_MODULE_BYTES_MAX} bytes"),
        });
    }
    let entries = request.args.len() + request.env.len();
    let bytes: usize = request.args.iter().map(String::len).sum::<usize>()
        + request
            .env
            .iter()
            .map(|(key, value)| key.len() + value.len() + 1)
            .sum::<usize>();
    if entries > GUEST_ARGS_ENV_ENTRIES_MAX || bytes > GUEST_ARGS_ENV_BYTES_MAX {
        return Err(ProcessError::TooLarge {
            detail: "too many or too large arguments and environment".into(),
        });
    }
    Ok(())
}

fn request_digest(request: &SpawnRequest, digest: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(request.name.as_bytes());
    hasher.update(digest);
    for arg in &request.args {
        hasher.update((arg.len() as u64).to_le_bytes());
        hasher.update(arg.as_bytes());
    }
    for (key, value) in &request.env {
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    hasher.update([u8::from(request.unpaired)]);
    hasher.finalize().into()
}

#[async_trait]
impl ProcessService for NodeProcesses {
    async fn spawn(&self, request: SpawnRequest) -> Result<Spawned, ProcessError> {
        check_spawn(&request)?;
        let runtime = self.runtime()?;
        let module_bytes = request.module.clone();
        let engine_check = {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || runtime.engine().load(&module_bytes))
                .await
                .map_err(|_| ProcessError::Unavailable {
                    detail: "module validation failed to run".into(),
                })?
        };
        let module = engine_check.map_err(|error| ProcessError::InvalidModule {
            detail: error.to_string(),
        })?;
        let recovery_mode = super::recovery_mode(&module, request.unpaired);
        let digest: [u8; 32] = Sha256::digest(&request.module).into();
        self.upload(digest, &request.module).await?;
        let me = self.service.shared().id;
        let backup = if request.unpaired {
            None
        } else {
            runtime.choose_backup(0, &[]).await
        };
        let key = request.request_id.as_ref().map(|id| SpawnKey {
            client: id.client_id.clone(),
            sequence: id.sequence,
            request_digest: request_digest(&request, &digest),
        });
        let command = ProcessCommand::Spawn {
            name: request.name.clone(),
            digest,
            args: request.args.clone(),
            env: request.env.clone(),
            unpaired: request.unpaired,
            primary: me,
            backup,
            recovery_mode: recovery_mode.to_string(),
            request: key,
            at_unix_ms: now_unix_ms(),
        };
        match self.coordinate(command).await? {
            ProcessOutcome::Spawned(spawned) => Ok(spawned),
            other => Err(ProcessError::Service(ServiceError::Timeout {
                detail: format!("unexpected outcome {other:?}"),
            })),
        }
    }

    async fn list(&self) -> Result<Vec<ProcessStatus>, ProcessError> {
        let entries = self.runtime()?.entries();
        let mut statuses = Vec::with_capacity(entries.len());
        for entry in entries {
            statuses.push(self.status_of(entry).await);
        }
        Ok(statuses)
    }

    async fn status(&self, pid: u64) -> Result<ProcessStatus, ProcessError> {
        let entry = self.summary(pid).await?;
        Ok(self.status_of(entry).await)
    }

    async fn write_stdin(&self, write: StdinWrite) -> Result<StdinWritten, ProcessError> {
        let entry = self.summary(write.pid).await?;
        if let RunState::Exited(code) = entry.state {
            return self.stdin_after_exit(&write, code).await;
        }
        let runtime = self.runtime()?;
        let offset = if entry.primary == self.service.shared().id {
            runtime
                .local_stdin(write.pid, write.bytes, write.eof, write.request_id)
                .await?
        } else {
            let request = ForwardRequest::ProcessStdin {
                pid: write.pid,
                bytes: write.bytes,
                eof: write.eof,
                request: write.request_id,
            };
            let deadline = Instant::now() + STDIN_DEADLINE;
            match self
                .service
                .forward_to_node(entry.primary, request, deadline)
                .await
            {
                Ok(ForwardResponse::ProcessStdin(Ok(offset))) => offset,
                Ok(ForwardResponse::ProcessStdin(Err(StdinFailure::BadRequest(detail)))) => {
                    return Err(ProcessError::BadRequest { detail })
                }
                Ok(ForwardResponse::ProcessStdin(Err(StdinFailure::Unavailable(detail)))) => {
                    return Err(ProcessError::Unavailable { detail })
                }
                Ok(_) => {
                    return Err(ProcessError::Unavailable {
                        detail: "the primary's node gave an unexpected answer".into(),
                    })
                }
                Err(failure) => {
                    return Err(ProcessError::Unavailable {
                        detail: format!("the primary's node did not answer: {}", failure.detail),
                    })
                }
            }
        };
        Ok(StdinWritten { offset })
    }

    async fn read_output(
        &self,
        pid: u64,
        stream: OutputStream,
        from: u64,
        wait: Duration,
    ) -> Result<OutputChunk, ProcessError> {
        let stream = match stream {
            OutputStream::Stdout => Stream::Stdout,
            OutputStream::Stderr => Stream::Stderr,
        };
        let deadline = Instant::now() + wait;
        let mut applied = self.service.shared().applied.subscribe();
        loop {
            // Only the bytes from `from` on are copied: a long-poll wakes on
            // every applied entry.
            let (bytes, next_offset, exited) = self
                .view(pid, |entry| {
                    (
                        entry.output.read(stream, from),
                        entry.output.len(stream),
                        matches!(entry.state, RunState::Exited(_)),
                    )
                })
                .await?;
            if !bytes.is_empty() || exited || Instant::now() >= deadline {
                return Ok(OutputChunk {
                    bytes,
                    next_offset,
                    exited,
                });
            }
            let _ = tokio::time::timeout_at(deadline, applied.changed()).await;
        }
    }

    async fn events(&self, pid: u64) -> Result<Vec<ProcessEvent>, ProcessError> {
        self.view(pid, |entry| entry.events.clone()).await
    }

    async fn delete(&self, pid: u64) -> Result<(), ProcessError> {
        self.view(pid, |_| ()).await?;
        self.coordinate(ProcessCommand::Delete { pid }).await?;
        Ok(())
    }
}
