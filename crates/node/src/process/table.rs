//! The coordinator's replicated process table (docs/pairs.md, "Parties and
//! state"): every process's placement and epoch, the modules by digest, the
//! released output of each pid and its history. It lives in the node's state
//! machine (the Raft group every node runs), so each change is one committed
//! command applied identically on every replica — in particular the
//! compare-and-set that promotes exactly one backup per epoch.
//!
//! Retention (documented in docs/pairs.md): a process, its output and events
//! stay until `DELETE`; at most [`EXITED_PROCESSES_RETAINED_MAX`] exited
//! processes are kept, the oldest exited going first. A module is removed with
//! the last process that uses it; an upload that never led to a spawn is
//! removed when another upload starts.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use understudy_api::process_service::{ProcessEvent, Spawned};
use understudy_pair::{Epoch, Output, OutputRefusal, OutputStore};

/// Exited processes kept (with their output) before the oldest is removed.
pub const EXITED_PROCESSES_RETAINED_MAX: usize = 1000;
/// Events kept per process (the oldest after birth are dropped beyond it).
pub const PROCESS_EVENTS_RETAINED_MAX: usize = 1000;
/// Released output kept per process (stdout and stderr together).
pub const PROCESS_OUTPUT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of module per log entry.
pub const MODULE_CHUNK_BYTES: usize = 1024 * 1024;
/// Spawn idempotency entries kept (one per client id, the oldest evicted).
const SPAWN_REQUESTS_RETAINED_MAX: usize = 10_000;

/// A module digest (sha256 of the bytes that run).
pub type Digest = [u8; 32];

/// Where a process stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunState {
    /// Running (or starting) on its primary.
    Running,
    /// Finished with this exit code.
    Exited(i32),
}

/// One process as the coordinator knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// Its id.
    pub pid: u64,
    /// Its unique name.
    pub name: String,
    /// The module it runs.
    pub digest: Digest,
    /// Arguments fixed at birth.
    pub args: Vec<String>,
    /// Environment fixed at birth.
    pub env: Vec<(String, String)>,
    /// No backup, outputs released at once.
    pub unpaired: bool,
    /// The node running the primary.
    pub primary: u64,
    /// The node holding the backup.
    pub backup: Option<u64>,
    /// The primary's epoch.
    pub epoch: u64,
    /// Running or exited.
    pub state: RunState,
    /// `checkpoint` or `replay`.
    pub recovery_mode: String,
    /// Released output.
    pub output: OutputStore,
    /// History, oldest first.
    pub events: Vec<ProcessEvent>,
    /// Commit order of the exit, for retention.
    pub exited_at_index: Option<u64>,
    /// The primary of the previous epoch (set by a promotion): a new backup
    /// is not placed on the node that was just suspected.
    pub former_primary: Option<u64>,
    /// Once exited: each client's latest stdin write and its answer, so a
    /// retry that arrives after the exit gets the answer of the first try.
    pub stdin_answers: Vec<StdinAnswer>,
}

/// The answer a client's latest stdin write got (its idempotency window, kept
/// past the exit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinAnswer {
    /// The client id of the write's idempotency key.
    pub client: Bytes,
    /// Its sequence number.
    pub sequence: u64,
    /// The offset it was answered with.
    pub offset: u64,
}

/// Stdin answers an exit keeps: the clients that wrote last (a primary's
/// window is bounded by its clients; the table keeps at most this many).
pub const STDIN_ANSWERS_KEPT_MAX: usize = 1024;

/// A process's identity and placement without its output and history: what
/// the reconcile loop, stdin routing, status and metrics need. Copying a whole
/// [`ProcessEntry`] copies every byte the process ever released, and those
/// paths run on every applied entry or request — with megabytes of output that
/// held the state lock long enough to stall the Raft driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSummary {
    /// Its id.
    pub pid: u64,
    /// Its unique name.
    pub name: String,
    /// The module it runs.
    pub digest: Digest,
    /// Arguments fixed at birth.
    pub args: Vec<String>,
    /// Environment fixed at birth.
    pub env: Vec<(String, String)>,
    /// No backup, outputs released at once.
    pub unpaired: bool,
    /// The node running the primary.
    pub primary: u64,
    /// The node holding the backup.
    pub backup: Option<u64>,
    /// The primary's epoch.
    pub epoch: u64,
    /// Running or exited.
    pub state: RunState,
    /// `checkpoint` or `replay`.
    pub recovery_mode: String,
    /// The primary of the previous epoch.
    pub former_primary: Option<u64>,
    /// The highest oseq released (0: none yet).
    pub released_oseq: u64,
    /// Bytes released on stdout.
    pub stdout_bytes: u64,
}

impl ProcessEntry {
    /// The answer kept for `client`'s latest stdin write (an exited process).
    pub fn stdin_answer(&self, client: &[u8]) -> Option<StdinAnswer> {
        let mut answers = self.stdin_answers.iter();
        answers.find(|answer| answer.client == client).cloned()
    }

    /// This entry without its output and history.
    pub fn summary(&self) -> ProcessSummary {
        ProcessSummary {
            pid: self.pid,
            name: self.name.clone(),
            digest: self.digest,
            args: self.args.clone(),
            env: self.env.clone(),
            unpaired: self.unpaired,
            primary: self.primary,
            backup: self.backup,
            epoch: self.epoch,
            state: self.state,
            recovery_mode: self.recovery_mode.clone(),
            former_primary: self.former_primary,
            released_oseq: self.output.next_oseq().0 - 1,
            stdout_bytes: self.output.len(understudy_pair::Stream::Stdout),
        }
    }
}

/// A module being uploaded or in use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// Chunks expected.
    pub count: u32,
    /// Chunks received, by index.
    pub chunks: BTreeMap<u32, Bytes>,
}

impl ModuleEntry {
    /// Whether every chunk is here.
    pub fn is_complete(&self) -> bool {
        self.chunks.len() as u32 == self.count
    }

    /// The module's bytes (complete modules only).
    pub fn bytes(&self) -> Vec<u8> {
        self.chunks
            .values()
            .flat_map(|chunk| chunk.iter().copied())
            .collect()
    }
}

/// A change to the table, as one log entry carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessCommand {
    /// One chunk of a module.
    PutModuleChunk {
        /// The module.
        digest: Digest,
        /// This chunk's index.
        index: u32,
        /// Chunks in all.
        count: u32,
        /// The bytes.
        bytes: Bytes,
    },
    /// A new process.
    Spawn {
        /// Its unique name.
        name: String,
        /// Its module (uploaded completely before).
        digest: Digest,
        /// Arguments.
        args: Vec<String>,
        /// Environment.
        env: Vec<(String, String)>,
        /// No backup.
        unpaired: bool,
        /// Where the primary runs.
        primary: u64,
        /// Where the backup is kept.
        backup: Option<u64>,
        /// `checkpoint` or `replay`.
        recovery_mode: String,
        /// The client's idempotency key and a digest of the request.
        request: Option<SpawnKey>,
        /// When the request arrived.
        at_unix_ms: u64,
    },
    /// The compare-and-set of a promotion: succeeds only if `pid` is still in
    /// `from_epoch` with `node` as its backup.
    Promote {
        /// The process.
        pid: u64,
        /// The epoch being ended.
        from_epoch: u64,
        /// The backup taking over.
        node: u64,
        /// Why (the suspicion).
        detail: String,
        /// When.
        at_unix_ms: u64,
    },
    /// Places a new backup (or none) for `pid` in `epoch`.
    SetBackup {
        /// The process.
        pid: u64,
        /// The epoch it must still be in.
        epoch: u64,
        /// The new backup.
        backup: Option<u64>,
        /// When.
        at_unix_ms: u64,
    },
    /// Released outputs of the primary of `epoch`.
    Release {
        /// The process.
        pid: u64,
        /// The sender's epoch.
        epoch: u64,
        /// Outputs in oseq order.
        outputs: Vec<Output>,
    },
    /// An event worth keeping in the history (checkpoint, caught up, …).
    Note {
        /// The process.
        pid: u64,
        /// The event.
        event: ProcessEvent,
    },
    /// The guest finished.
    Exit {
        /// The process.
        pid: u64,
        /// The epoch of the primary reporting it.
        epoch: u64,
        /// Its exit code.
        code: i32,
        /// When.
        at_unix_ms: u64,
        /// Each client's latest stdin write (at most
        /// [`STDIN_ANSWERS_KEPT_MAX`]), for retries after the exit.
        stdin_answers: Vec<StdinAnswer>,
    },
    /// Removes the process, its output and (if unused) its module.
    Delete {
        /// The process.
        pid: u64,
    },
}

/// A spawn's idempotency key, with a digest of the request it came with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnKey {
    /// The client id.
    pub client: Bytes,
    /// The client's sequence number.
    pub sequence: u64,
    /// sha256 over name, digest, args and env: the same key with another
    /// request is a conflict, not a retry.
    pub request_digest: Digest,
}

/// What applying a command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcessOutcome {
    /// A chunk was stored.
    ChunkStored,
    /// A process was created (or a retry returned the first result).
    Spawned(Spawned),
    /// The promotion won; the new epoch.
    Promoted {
        /// The epoch now in force.
        epoch: u64,
    },
    /// Done (backup placed, outputs taken, note kept, exit or delete recorded).
    Done,
}

/// Why a command changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProcessRefusal {
    /// No such pid.
    #[error("no process {pid}")]
    NotFound {
        /// The pid.
        pid: u64,
    },
    /// The name is taken.
    #[error("name {name:?} is in use by process {pid}")]
    NameInUse {
        /// The name.
        name: String,
        /// Who has it.
        pid: u64,
    },
    /// The module was not (completely) uploaded.
    #[error("module not uploaded completely")]
    ModuleMissing,
    /// The process is no longer in the epoch (or placement) the command
    /// assumed: the compare-and-set failed.
    #[error("process {pid} is in epoch {epoch} with primary {primary}")]
    EpochChanged {
        /// The pid.
        pid: u64,
        /// Its epoch now.
        epoch: u64,
        /// Its primary now.
        primary: u64,
    },
    /// The output store refused an output.
    #[error("output refused: {detail}")]
    Output {
        /// Why.
        detail: String,
        /// Whether it is a determinism bug (same oseq, other bytes).
        mismatch: bool,
    },
    /// The process has released its output limit.
    #[error("process {pid} exceeded its output limit")]
    OutputLimit {
        /// The pid.
        pid: u64,
    },
    /// The command is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The process table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTable {
    next_pid: u64,
    processes: BTreeMap<u64, ProcessEntry>,
    names: BTreeMap<String, u64>,
    modules: BTreeMap<Digest, ModuleEntry>,
    spawn_requests: BTreeMap<Bytes, (u64, Digest, Spawned, u64)>,
}

impl ProcessTable {
    /// Every process, by pid.
    pub fn processes(&self) -> impl Iterator<Item = &ProcessEntry> {
        self.processes.values()
    }

    /// One process.
    pub fn process(&self, pid: u64) -> Option<&ProcessEntry> {
        self.processes.get(&pid)
    }

    /// A complete module's bytes.
    pub fn module(&self, digest: &Digest) -> Option<Vec<u8>> {
        self.modules
            .get(digest)
            .filter(|module| module.is_complete())
            .map(ModuleEntry::bytes)
    }

    /// Whether a complete module is stored.
    pub fn has_module(&self, digest: &Digest) -> bool {
        self.modules
            .get(digest)
            .is_some_and(ModuleEntry::is_complete)
    }

    /// Applies a committed command at log `index`.
    pub fn apply(
        &mut self,
        index: u64,
        command: ProcessCommand,
    ) -> Result<ProcessOutcome, ProcessRefusal> {
        match command {
            ProcessCommand::PutModuleChunk {
                digest,
                index: chunk,
                count,
                bytes,
            } => self.put_chunk(digest, chunk, count, bytes),
            ProcessCommand::Spawn {
                name,
                digest,
                args,
                env,
                unpaired,
                primary,
                backup,
                recovery_mode,
                request,
                at_unix_ms,
            } => {
                let entry = ProcessEntry {
                    pid: 0,
                    name,
                    digest,
                    args,
                    env,
                    unpaired,
                    primary,
                    backup,
                    epoch: 1,
                    state: RunState::Running,
                    recovery_mode,
                    output: OutputStore::new(),
                    events: Vec::new(),
                    exited_at_index: None,
                    former_primary: None,
                    stdin_answers: Vec::new(),
                };
                self.spawn(index, entry, request, at_unix_ms)
            }
            ProcessCommand::Promote {
                pid,
                from_epoch,
                node,
                detail,
                at_unix_ms,
            } => self.promote(pid, from_epoch, node, detail, at_unix_ms),
            ProcessCommand::SetBackup {
                pid,
                epoch,
                backup,
                at_unix_ms,
            } => {
                let entry = self.current(pid, epoch)?;
                if backup == Some(entry.primary) {
                    return Err(ProcessRefusal::Invalid(
                        "backup on the primary's node".into(),
                    ));
                }
                entry.backup = backup;
                let detail = match backup {
                    Some(node) => format!("new backup on node {node}, catching up"),
                    None => "no backup".to_string(),
                };
                push_event(entry, at_unix_ms, "repairing", detail);
                Ok(ProcessOutcome::Done)
            }
            ProcessCommand::Release {
                pid,
                epoch,
                outputs,
            } => self.release(pid, epoch, &outputs),
            ProcessCommand::Note { pid, event } => {
                let entry = self
                    .processes
                    .get_mut(&pid)
                    .ok_or(ProcessRefusal::NotFound { pid })?;
                push_event(entry, event.at_unix_ms, &event.kind, event.detail);
                Ok(ProcessOutcome::Done)
            }
            ProcessCommand::Exit {
                pid,
                epoch,
                code,
                at_unix_ms,
                mut stdin_answers,
            } => {
                let entry = self.current(pid, epoch)?;
                if entry.state == RunState::Running {
                    stdin_answers.truncate(STDIN_ANSWERS_KEPT_MAX);
                    entry.stdin_answers = stdin_answers;
                    entry.state = RunState::Exited(code);
                    entry.exited_at_index = Some(index);
                    push_event(entry, at_unix_ms, "exit", format!("exit code {code}"));
                }
                self.retain_exited();
                Ok(ProcessOutcome::Done)
            }
            ProcessCommand::Delete { pid } => {
                self.remove(pid).ok_or(ProcessRefusal::NotFound { pid })?;
                Ok(ProcessOutcome::Done)
            }
        }
    }

    fn put_chunk(
        &mut self,
        digest: Digest,
        index: u32,
        count: u32,
        bytes: Bytes,
    ) -> Result<ProcessOutcome, ProcessRefusal> {
        let too_many = count as u64 * MODULE_CHUNK_BYTES as u64
            > understudy_types::limits::GUEST_MODULE_BYTES_MAX as u64 + MODULE_CHUNK_BYTES as u64;
        if count == 0 || index >= count || too_many || bytes.len() > MODULE_CHUNK_BYTES {
            return Err(ProcessRefusal::Invalid("module chunk out of bounds".into()));
        }
        if index == 0 {
            // An upload that never led to a spawn goes when another starts.
            let in_use: Vec<Digest> = self.processes.values().map(|entry| entry.digest).collect();
            self.modules.retain(|stored, module| {
                *stored == digest || module.is_complete() || in_use.contains(stored)
            });
        }
        let module = self.modules.entry(digest).or_default();
        if module.count != count {
            module.count = count;
            module.chunks.clear();
        }
        module.chunks.insert(index, bytes);
        Ok(ProcessOutcome::ChunkStored)
    }

    fn spawn(
        &mut self,
        index: u64,
        mut entry: ProcessEntry,
        request: Option<SpawnKey>,
        at_unix_ms: u64,
    ) -> Result<ProcessOutcome, ProcessRefusal> {
        if let Some(key) = &request {
            if let Some((sequence, digest, spawned, _)) = self.spawn_requests.get(&key.client) {
                if *sequence == key.sequence && *digest == key.request_digest {
                    return Ok(ProcessOutcome::Spawned(spawned.clone()));
                }
            }
        }
        if let Some(&pid) = self.names.get(&entry.name) {
            return Err(ProcessRefusal::NameInUse {
                name: entry.name,
                pid,
            });
        }
        if !self.has_module(&entry.digest) {
            return Err(ProcessRefusal::ModuleMissing);
        }
        self.next_pid = self.next_pid.max(1);
        let pid = self.next_pid;
        self.next_pid += 1;
        entry.pid = pid;
        let spawned = Spawned {
            pid,
            primary: entry.primary,
            backup: entry.backup,
            epoch: 1,
        };
        let detail = match entry.backup {
            Some(backup) => format!("primary on node {}, backup on node {backup}", entry.primary),
            None => format!("primary on node {}, no backup", entry.primary),
        };
        push_event(&mut entry, at_unix_ms, "birth", detail);
        self.names.insert(entry.name.clone(), pid);
        self.processes.insert(pid, entry);
        if let Some(key) = request {
            if self.spawn_requests.len() >= SPAWN_REQUESTS_RETAINED_MAX {
                let oldest = self
                    .spawn_requests
                    .iter()
                    .min_by_key(|(_, (_, _, _, at))| *at)
                    .map(|(client, _)| client.clone());
                if let Some(oldest) = oldest {
                    self.spawn_requests.remove(&oldest);
                }
            }
            self.spawn_requests.insert(
                key.client,
                (key.sequence, key.request_digest, spawned.clone(), index),
            );
        }
        Ok(ProcessOutcome::Spawned(spawned))
    }

    fn promote(
        &mut self,
        pid: u64,
        from_epoch: u64,
        node: u64,
        detail: String,
        at_unix_ms: u64,
    ) -> Result<ProcessOutcome, ProcessRefusal> {
        let entry = self.current(pid, from_epoch)?;
        if entry.backup != Some(node) || entry.state != RunState::Running {
            return Err(ProcessRefusal::EpochChanged {
                pid,
                epoch: entry.epoch,
                primary: entry.primary,
            });
        }
        let old_primary = entry.primary;
        push_event(
            entry,
            at_unix_ms,
            "suspicion",
            format!("node {node} suspects primary node {old_primary}: {detail}"),
        );
        entry.former_primary = Some(old_primary);
        entry.epoch += 1;
        entry.primary = node;
        entry.backup = None;
        let epoch = Epoch(entry.epoch);
        entry.output.advance_epoch(epoch);
        push_event(
            entry,
            at_unix_ms,
            "promotion",
            format!("node {node} is the primary of epoch {}", epoch.0),
        );
        Ok(ProcessOutcome::Promoted { epoch: epoch.0 })
    }

    fn release(
        &mut self,
        pid: u64,
        epoch: u64,
        outputs: &[Output],
    ) -> Result<ProcessOutcome, ProcessRefusal> {
        let entry = self
            .processes
            .get_mut(&pid)
            .ok_or(ProcessRefusal::NotFound { pid })?;
        for output in outputs {
            // Lengths, not copies: this runs for every released output.
            let stored = entry.output.len(understudy_pair::Stream::Stdout)
                + entry.output.len(understudy_pair::Stream::Stderr);
            if stored + output.bytes.len() as u64 > PROCESS_OUTPUT_BYTES_MAX {
                return Err(ProcessRefusal::OutputLimit { pid });
            }
            match entry.output.accept(Epoch(epoch), output) {
                Ok(_) => {}
                Err(refusal) => {
                    let mismatch = matches!(refusal, OutputRefusal::Mismatch { .. });
                    return Err(ProcessRefusal::Output {
                        detail: refusal.to_string(),
                        mismatch,
                    });
                }
            }
        }
        Ok(ProcessOutcome::Done)
    }

    /// The entry of `pid` if it is still in `epoch`.
    fn current(&mut self, pid: u64, epoch: u64) -> Result<&mut ProcessEntry, ProcessRefusal> {
        let entry = self
            .processes
            .get_mut(&pid)
            .ok_or(ProcessRefusal::NotFound { pid })?;
        if entry.epoch != epoch {
            return Err(ProcessRefusal::EpochChanged {
                pid,
                epoch: entry.epoch,
                primary: entry.primary,
            });
        }
        Ok(entry)
    }

    fn remove(&mut self, pid: u64) -> Option<ProcessEntry> {
        let entry = self.processes.remove(&pid)?;
        self.names.remove(&entry.name);
        let still_used = self
            .processes
            .values()
            .any(|other| other.digest == entry.digest);
        if !still_used {
            self.modules.remove(&entry.digest);
        }
        Some(entry)
    }

    fn retain_exited(&mut self) {
        let mut exited: Vec<(u64, u64)> = self
            .processes
            .values()
            .filter_map(|entry| entry.exited_at_index.map(|at| (at, entry.pid)))
            .collect();
        if exited.len() <= EXITED_PROCESSES_RETAINED_MAX {
            return;
        }
        exited.sort_unstable();
        let excess = exited.len() - EXITED_PROCESSES_RETAINED_MAX;
        for (_, pid) in exited.into_iter().take(excess) {
            self.remove(pid);
        }
    }
}

fn push_event(entry: &mut ProcessEntry, at_unix_ms: u64, kind: &str, detail: String) {
    if entry.events.len() >= PROCESS_EVENTS_RETAINED_MAX {
        // Keep the birth; drop the oldest after it.
        entry.events.remove(1);
    }
    entry.events.push(ProcessEvent {
        at_unix_ms,
        kind: kind.to_string(),
        epoch: entry.epoch,
        detail,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_pair::{Lsn, Oseq, Stream};

    fn upload(table: &mut ProcessTable, digest: Digest) {
        let chunk = ProcessCommand::PutModuleChunk {
            digest,
            index: 0,
            count: 1,
            bytes: Bytes::from_static(b"\0asm"),
        };
        assert_eq!(table.apply(1, chunk), Ok(ProcessOutcome::ChunkStored));
    }

    fn spawn(name: &str, request: Option<SpawnKey>) -> ProcessCommand {
        ProcessCommand::Spawn {
            name: name.into(),
            digest: [7; 32],
            args: vec![],
            env: vec![],
            unpaired: false,
            primary: 1,
            backup: Some(2),
            recovery_mode: "replay".into(),
            request,
            at_unix_ms: 5,
        }
    }

    fn spawned(outcome: Result<ProcessOutcome, ProcessRefusal>) -> Spawned {
        match outcome {
            Ok(ProcessOutcome::Spawned(spawned)) => spawned,
            other => panic!("not spawned: {other:?}"),
        }
    }

    #[test]
    fn names_are_unique_and_a_keyed_retry_returns_the_first_result() {
        let mut table = ProcessTable::default();
        upload(&mut table, [7; 32]);
        let key = SpawnKey {
            client: Bytes::from_static(b"c"),
            sequence: 1,
            request_digest: [1; 32],
        };
        let first = spawned(table.apply(2, spawn("a", Some(key.clone()))));
        assert_eq!(first.pid, 1);
        assert_eq!(spawned(table.apply(3, spawn("a", Some(key)))), first);
        assert_eq!(
            table.apply(4, spawn("a", None)),
            Err(ProcessRefusal::NameInUse {
                name: "a".into(),
                pid: 1
            })
        );
        assert_eq!(spawned(table.apply(5, spawn("b", None))).pid, 2);
    }

    #[test]
    fn exactly_one_promotion_wins_per_epoch() {
        let mut table = ProcessTable::default();
        upload(&mut table, [7; 32]);
        spawned(table.apply(2, spawn("a", None)));
        let promote = |node| ProcessCommand::Promote {
            pid: 1,
            from_epoch: 1,
            node,
            detail: "silent".into(),
            at_unix_ms: 9,
        };
        assert!(table.apply(3, promote(3)).is_err(), "not the backup");
        assert_eq!(
            table.apply(4, promote(2)),
            Ok(ProcessOutcome::Promoted { epoch: 2 })
        );
        assert!(table.apply(5, promote(2)).is_err(), "the epoch moved on");
        let entry = table.process(1).expect("pid 1");
        assert_eq!((entry.primary, entry.backup, entry.epoch), (2, None, 2));
        assert_eq!(entry.former_primary, Some(1));
    }

    #[test]
    fn a_stale_epoch_adds_no_output() {
        let mut table = ProcessTable::default();
        upload(&mut table, [7; 32]);
        spawned(table.apply(2, spawn("a", None)));
        let output = |oseq| Output {
            oseq: Oseq(oseq),
            stream: Stream::Stdout,
            bytes: Bytes::from(format!("{oseq}\n")),
            depends_on: Lsn(oseq),
        };
        let release = |epoch, oseq| ProcessCommand::Release {
            pid: 1,
            epoch,
            outputs: vec![output(oseq)],
        };
        assert_eq!(table.apply(3, release(1, 1)), Ok(ProcessOutcome::Done));
        let promote = ProcessCommand::Promote {
            pid: 1,
            from_epoch: 1,
            node: 2,
            detail: String::new(),
            at_unix_ms: 1,
        };
        table.apply(4, promote).expect("promoted");
        assert_eq!(
            table.apply(5, release(1, 1)),
            Ok(ProcessOutcome::Done),
            "a repeat"
        );
        assert!(
            table.apply(6, release(1, 2)).is_err(),
            "new output from epoch 1"
        );
        assert_eq!(table.apply(7, release(2, 2)), Ok(ProcessOutcome::Done));
        let stdout = table
            .process(1)
            .expect("pid")
            .output
            .read(Stream::Stdout, 0);
        assert_eq!(stdout.as_ref(), b"1\n2\n");
    }

    #[test]
    fn delete_removes_the_process_and_its_unused_module() {
        let mut table = ProcessTable::default();
        upload(&mut table, [7; 32]);
        spawned(table.apply(2, spawn("a", None)));
        assert_eq!(
            table.apply(3, ProcessCommand::Delete { pid: 1 }),
            Ok(ProcessOutcome::Done)
        );
        assert!(table.process(1).is_none());
        assert!(!table.has_module(&[7; 32]));
        assert_eq!(
            table.apply(4, ProcessCommand::Delete { pid: 1 }),
            Err(ProcessRefusal::NotFound { pid: 1 })
        );
    }
}
