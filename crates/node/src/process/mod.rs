//! Process pairs on a node (issue 4, docs/pairs.md): the coordinator's table
//! (`table`, in the replicated state machine), the primaries this node runs
//! (`primary`, a thread each), the backups it keeps (`backup`, a synced file
//! each), what a new primary rebuilds from a log (`inputs`), and the
//! `ProcessService` behind `/v1/processes` (`service`).
//!
//! [`ProcessRuntime`] reconciles the node with the table: whenever an entry
//! changes (and every [`RECONCILE_INTERVAL`]) it starts the primaries the
//! table gives this node, opens the backups, stops what the table no longer
//! gives it (a stale primary stops at once), and suspects silent primaries of
//! the pids it backs up: after [`SUSPICION_TIMEOUT`] without a message, or
//! sooner when the primary's node refuses connections, the backup fences the
//! old epoch and asks the coordinator to promote it (a compare-and-set on the
//! epoch: exactly one backup wins). The winner replays its log and goes live;
//! a new backup is placed at once and receives the log from lsn 1.

pub mod backup;
mod courier;
pub mod inputs;
pub mod primary;
pub mod service;
pub mod table;

use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::watch;
use understudy_api::process_service::ProcessEvent;
use understudy_guest::{Birth, CheckpointImage, GuestConfig, GuestEngine, GuestModule};
use understudy_pair::{Epoch, Oseq, PairMessage};

use crate::service::NodeService;
use crate::shared::Shared;
use backup::Backup;
use primary::{LiveStatus, Outgoing, PrimaryEvent, PrimarySpec};
use table::{Digest, ProcessCommand, ProcessOutcome, ProcessRefusal, ProcessSummary, RunState};

/// The runtime wakes at least this often (suspicion checks, missed changes).
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(50);
/// A primary silent this long is suspected and its backup promoted.
pub const SUSPICION_TIMEOUT: Duration = Duration::from_millis(1000);
/// A primary silent this long whose node refuses connections is suspected
/// without waiting for the full timeout (its process is gone).
pub const SUSPICION_PROBE_AFTER: Duration = Duration::from_millis(250);
/// Fuel per slice of guest execution: the primary's thread handles events
/// between slices (tens of milliseconds at most).
const GUEST_FUEL_SLICE: u64 = 20_000_000;
/// Released outputs committed in one log entry, at most (bytes).
const RELEASE_BATCH_BYTES_MAX: usize = 1024 * 1024;

/// A primary running here.
struct PrimaryHandle {
    epoch: u64,
    backup: Option<u64>,
    events: std::sync::mpsc::Sender<PrimaryEvent>,
    status: Arc<Mutex<LiveStatus>>,
}

/// The process pairs of one node.
pub struct ProcessRuntime {
    service: NodeService,
    directory: PathBuf,
    engine: Arc<GuestEngine>,
    modules: Mutex<HashMap<Digest, GuestModule>>,
    primaries: Mutex<HashMap<u64, PrimaryHandle>>,
    backups: Mutex<HashMap<u64, Arc<Mutex<Backup>>>>,
    /// Pids whose promotion this node is asking for.
    promoting: Mutex<HashSet<u64>>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProcessRuntime")
            .field("directory", &self.directory)
            .finish()
    }
}

/// Whether a process recovers from checkpoints: its module can be
/// checkpointed and it has a backup to ship them to (an unpaired process has
/// no backup to restore anything on); else it recovers by replay.
fn recovers_from_checkpoints(module: &GuestModule, unpaired: bool) -> bool {
    module.recovery_mode() == understudy_guest::RecoveryMode::Checkpoint && !unpaired
}

/// The table's name for how a process recovers.
fn recovery_mode(module: &GuestModule, unpaired: bool) -> &'static str {
    if recovers_from_checkpoints(module, unpaired) {
        "checkpoint"
    } else {
        "replay"
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Milliseconds since the Unix epoch (for events).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn marker_path(directory: &Path, pid: u64) -> PathBuf {
    directory.join(format!("{pid}.primary"))
}

impl ProcessRuntime {
    /// The runtime of the node behind `service`, keeping its files in
    /// `directory`; a guest running `runaway_limit` without progress is killed.
    pub fn new(
        service: NodeService,
        directory: PathBuf,
        runaway_limit: Option<Duration>,
    ) -> Result<ProcessRuntime, String> {
        std::fs::create_dir_all(&directory).map_err(|error| error.to_string())?;
        let config = GuestConfig::with_runaway_limit(GUEST_FUEL_SLICE, runaway_limit);
        let engine = GuestEngine::new(config).map_err(|error| error.to_string())?;
        Ok(ProcessRuntime {
            service,
            directory,
            engine: Arc::new(engine),
            modules: Mutex::new(HashMap::new()),
            primaries: Mutex::new(HashMap::new()),
            backups: Mutex::new(HashMap::new()),
            promoting: Mutex::new(HashSet::new()),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        self.service.shared()
    }

    /// The guest engine (to validate modules before they are stored).
    pub fn engine(&self) -> &GuestEngine {
        &self.engine
    }

    /// Runs the reconcile loop until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut applied = self.shared().applied.subscribe();
        loop {
            self.reconcile().await;
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = applied.changed() => {}
                _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for (_, handle) in lock(&self.primaries).drain() {
            let _ = handle.events.send(PrimaryEvent::Stop);
        }
    }

    /// Every process's summary (never the output: see [`ProcessSummary`]).
    fn entries(&self) -> Vec<ProcessSummary> {
        let state = self
            .shared()
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state
            .processes
            .processes()
            .map(|entry| entry.summary())
            .collect()
    }

    /// One process's summary.
    fn entry(&self, pid: u64) -> Option<ProcessSummary> {
        let state = self
            .shared()
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.processes.process(pid).map(|entry| entry.summary())
    }

    async fn reconcile(self: &Arc<Self>) {
        let me = self.shared().id;
        let entries = self.entries();
        let known: HashSet<u64> = entries.iter().map(|entry| entry.pid).collect();
        for entry in &entries {
            self.reconcile_primary(me, entry);
            self.reconcile_backup(me, entry).await;
        }
        // Deleted pids: stop and forget.
        lock(&self.primaries).retain(|pid, handle| {
            let keep = known.contains(pid);
            if !keep {
                let _ = handle.events.send(PrimaryEvent::Stop);
            }
            keep
        });
        let gone: Vec<u64> = lock(&self.backups)
            .keys()
            .copied()
            .filter(|pid| !known.contains(pid))
            .collect();
        for pid in gone {
            self.drop_backup(pid);
            let _ = std::fs::remove_file(marker_path(&self.directory, pid));
        }
    }

    fn reconcile_primary(self: &Arc<Self>, me: u64, entry: &ProcessSummary) {
        let mut primaries = lock(&self.primaries);
        let mine = entry.primary == me && entry.state == RunState::Running;
        if let Some(handle) = primaries.get_mut(&entry.pid) {
            if !mine || handle.epoch < entry.epoch {
                // Stale (a newer epoch elsewhere), exited or moved: stop at once.
                let _ = handle.events.send(PrimaryEvent::Stop);
                primaries.remove(&entry.pid);
            } else if handle.backup != entry.backup {
                handle.backup = entry.backup;
                let _ = handle.events.send(PrimaryEvent::Placement {
                    backup: entry.backup,
                });
            }
            return;
        }
        if !mine {
            return;
        }
        drop(primaries);
        let promoted_from = lock(&self.backups).get(&entry.pid).cloned();
        let (image, history) = match promoted_from {
            // This node won the promotion: its newest checkpoint and the
            // durable records after it are where the process continues.
            Some(backup) if entry.epoch > 1 => {
                let backup = lock(&backup);
                (backup.image.clone(), backup.records.clone())
            }
            // Born here, and never started before (a restarted node does not
            // start a process again: its backup takes over).
            None if entry.epoch == 1 && !marker_path(&self.directory, entry.pid).exists() => {
                (None, Vec::new())
            }
            _ => return,
        };
        if let Err(error) = self.start_primary(entry, image, history) {
            tracing::error!(pid = entry.pid, %error, "cannot start the primary");
        }
    }

    fn start_primary(
        self: &Arc<Self>,
        entry: &ProcessSummary,
        image: Option<CheckpointImage>,
        history: Vec<understudy_pair::Record>,
    ) -> Result<(), String> {
        let module = self.module(&entry.digest)?;
        std::fs::write(
            marker_path(&self.directory, entry.pid),
            entry.epoch.to_le_bytes(),
        )
        .map_err(|error| error.to_string())?;
        let replayed = history.len();
        let restored = image.as_ref().map(|image| image.lsn().0);
        let spec = PrimarySpec {
            pid: entry.pid,
            epoch: entry.epoch,
            engine: self.engine.clone(),
            module,
            birth: Birth {
                args: entry.args.clone(),
                env: entry
                    .env
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect(),
            },
            image,
            history,
            released_oseq: Oseq(entry.released_oseq),
            unpaired: entry.unpaired,
            backup: entry.backup,
        };
        let (events, receiver) = std::sync::mpsc::channel();
        let (pair_out, pair_in) = unbounded_channel();
        let (coordinator_out, coordinator_in) = unbounded_channel();
        let status = primary::spawn(spec, receiver, pair_out, coordinator_out.clone())
            .map_err(|error| error.to_string())?;
        tokio::spawn(self.clone().pair_courier(pair_in, events.clone()));
        tokio::spawn(
            self.clone()
                .coordinator_courier(entry.pid, entry.epoch, coordinator_in),
        );
        if entry.epoch > 1 {
            let from = match restored {
                Some(lsn) => format!("restored the checkpoint at lsn {lsn}, "),
                None => "from the start, ".to_string(),
            };
            let detail = format!(
                "{from}replayed={replayed} records; now live in epoch {}",
                entry.epoch
            );
            let _ = coordinator_out.send(Outgoing::Note {
                kind: "replayed",
                detail,
            });
            if entry.backup.is_none() && !entry.unpaired {
                let exclude = entry.former_primary.into_iter().collect();
                let _ = coordinator_out.send(Outgoing::ReplaceBackup { exclude });
            }
        }
        let handle = PrimaryHandle {
            epoch: entry.epoch,
            backup: entry.backup,
            events,
            status,
        };
        lock(&self.primaries).insert(entry.pid, handle);
        Ok(())
    }

    fn module(&self, digest: &Digest) -> Result<GuestModule, String> {
        if let Some(module) = lock(&self.modules).get(digest) {
            return Ok(module.clone());
        }
        let bytes = {
            let state = self
                .shared()
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.processes.module(digest)
        }
        .ok_or("the module is not stored")?;
        let module = self
            .engine
            .load(&bytes)
            .map_err(|error| error.to_string())?;
        lock(&self.modules).insert(*digest, module.clone());
        Ok(module)
    }

    async fn reconcile_backup(self: &Arc<Self>, me: u64, entry: &ProcessSummary) {
        let running = entry.state == RunState::Running;
        if entry.backup == Some(me) && running {
            let backup = match self.backup_for(entry.pid, entry.epoch) {
                Ok(backup) => backup,
                Err(error) => {
                    tracing::error!(pid = entry.pid, %error, "cannot open the backup");
                    return;
                }
            };
            self.suspect(entry, &backup).await;
            return;
        }
        // Keep the log of a promotion this node is asking for or just won.
        let promoting = lock(&self.promoting).contains(&entry.pid);
        let won = entry.primary == me && lock(&self.primaries).contains_key(&entry.pid);
        if !promoting && (won || entry.primary != me || !running) {
            self.drop_backup(entry.pid);
        }
    }

    /// This node's backup of `pid` as assigned in `epoch`, opened if needed.
    /// Checked and opened under the map's lock: two openers (the reconcile
    /// loop and an arriving append) must not both create the file.
    fn backup_for(&self, pid: u64, epoch: u64) -> std::io::Result<Arc<Mutex<Backup>>> {
        let mut backups = lock(&self.backups);
        if let Some(backup) = backups.get(&pid) {
            if lock(backup).assigned_epoch == epoch {
                return Ok(backup.clone());
            }
        }
        let backup = Arc::new(Mutex::new(Backup::open(&self.directory, pid, epoch)?));
        backups.insert(pid, backup.clone());
        Ok(backup)
    }

    fn drop_backup(&self, pid: u64) {
        if lock(&self.backups).remove(&pid).is_some() {
            backup::remove_files(&self.directory, pid);
        }
    }

    /// Suspects a silent primary and asks for this backup's promotion.
    async fn suspect(self: &Arc<Self>, entry: &ProcessSummary, backup: &Arc<Mutex<Backup>>) {
        let (silent_for, promotable) = {
            let backup = lock(backup);
            (backup.last_heard.elapsed(), backup.log.is_promotable())
        };
        // A backup still catching up may lack what released outputs depend
        // on: the pid waits (unavailable) rather than continue wrongly.
        if silent_for < SUSPICION_PROBE_AFTER || !promotable {
            return;
        }
        let gone = if silent_for >= SUSPICION_TIMEOUT {
            true
        } else {
            match self.shared().peer_address_of(entry.primary) {
                Some(address) => crate::transport::peer_process_gone(&address).await,
                None => false,
            }
        };
        if !gone || !lock(&self.promoting).insert(entry.pid) {
            return;
        }
        {
            let mut backup = lock(backup);
            if backup.log.epoch().0 <= entry.epoch {
                // Fencing first: the old primary can release nothing more.
                backup.log.fence(Epoch(entry.epoch + 1));
            }
        }
        let detail = format!("silent for {} ms", silent_for.as_millis());
        let command = ProcessCommand::Promote {
            pid: entry.pid,
            from_epoch: entry.epoch,
            node: self.shared().id,
            detail,
            at_unix_ms: now_unix_ms(),
        };
        let outcome = self.service.coordinate(command).await;
        tracing::info!(pid = entry.pid, ?outcome, "asked to be promoted");
        lock(&self.promoting).remove(&entry.pid);
        if let Ok(Ok(ProcessOutcome::Promoted { .. })) = outcome {
            // Start at once rather than at the next reconcile.
            if let Some(entry) = self.entry(entry.pid) {
                self.reconcile_primary(self.shared().id, &entry);
            }
        }
    }

    /// Commits a primary's releases, events, backup placements and exit.
    async fn coordinator_courier(
        self: Arc<Self>,
        pid: u64,
        epoch: u64,
        mut outgoing: UnboundedReceiver<Outgoing>,
    ) {
        let mut pending: Option<Outgoing> = None;
        loop {
            let item = match pending.take() {
                Some(item) => item,
                None => match outgoing.recv().await {
                    Some(item) => item,
                    None => return,
                },
            };
            let command = match item {
                Outgoing::Release(mut outputs) => {
                    // Batch what is queued behind it, up to a bound.
                    let mut bytes: usize = outputs.iter().map(|output| output.bytes.len()).sum();
                    while bytes < RELEASE_BATCH_BYTES_MAX {
                        match outgoing.try_recv() {
                            Ok(Outgoing::Release(more)) => {
                                bytes +=
                                    more.iter().map(|output| output.bytes.len()).sum::<usize>();
                                outputs.extend(more);
                            }
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    ProcessCommand::Release {
                        pid,
                        epoch,
                        outputs,
                    }
                }
                Outgoing::Note { kind, detail } => ProcessCommand::Note {
                    pid,
                    event: ProcessEvent {
                        at_unix_ms: now_unix_ms(),
                        kind: kind.to_string(),
                        epoch,
                        detail,
                    },
                },
                Outgoing::Exit {
                    code,
                    stdin_answers,
                } => ProcessCommand::Exit {
                    pid,
                    epoch,
                    code,
                    at_unix_ms: now_unix_ms(),
                    stdin_answers,
                },
                Outgoing::ReplaceBackup { exclude } => {
                    let backup = self.choose_backup(pid, &exclude).await;
                    ProcessCommand::SetBackup {
                        pid,
                        epoch,
                        backup,
                        at_unix_ms: now_unix_ms(),
                    }
                }
                Outgoing::Send { .. } => continue,
            };
            if !self.commit_until_settled(pid, command).await {
                return;
            }
        }
    }

    /// Commits `command`, retrying while the cluster cannot answer; false
    /// once the table says this primary is finished.
    async fn commit_until_settled(&self, pid: u64, command: ProcessCommand) -> bool {
        let mut pause = Duration::from_millis(10);
        loop {
            match self.service.coordinate(command.clone()).await {
                Ok(Ok(_)) => return true,
                Ok(Err(ProcessRefusal::Output {
                    detail,
                    mismatch: true,
                })) => {
                    tracing::error!(pid, %detail, "DETERMINISM BUG: an oseq was repeated with other bytes");
                    return true;
                }
                Ok(Err(
                    refusal @ (ProcessRefusal::EpochChanged { .. }
                    | ProcessRefusal::NotFound { .. }),
                )) => {
                    tracing::info!(pid, %refusal, "the primary's epoch is over");
                    return false;
                }
                Ok(Err(ProcessRefusal::OutputLimit { .. })) => {
                    // Nothing more can be kept: the process ends, and says why.
                    tracing::warn!(pid, "the process exceeded its output limit and is stopped");
                    let (epoch, at_unix_ms) = match &command {
                        ProcessCommand::Release { epoch, .. } => (*epoch, now_unix_ms()),
                        _ => return false,
                    };
                    let note = ProcessCommand::Note {
                        pid,
                        event: ProcessEvent {
                            at_unix_ms,
                            kind: "output_limit".into(),
                            epoch,
                            detail: "the process exceeded its 64 MiB output limit".into(),
                        },
                    };
                    let _ = self.service.coordinate(note).await;
                    // Stopped here, on the courier's path, not by its primary
                    // thread: the primary's stdin window is not at hand, so a
                    // retry after this exit answers 400.
                    let exit = ProcessCommand::Exit {
                        pid,
                        epoch,
                        code: -1,
                        at_unix_ms,
                        stdin_answers: Vec::new(),
                    };
                    let _ = self.service.coordinate(exit).await;
                    return false;
                }
                Ok(Err(refusal)) => {
                    tracing::warn!(pid, %refusal, "the coordinator refused a primary's command");
                    return true;
                }
                Err(error) => {
                    tracing::debug!(pid, %error, "retrying a coordinator command");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// A live node for a new backup: not this one, not `exclude`, the one
    /// holding fewest backups (then the lowest id).
    async fn choose_backup(&self, pid: u64, exclude: &[u64]) -> Option<u64> {
        let me = self.shared().id;
        let (members, load) = {
            let state = self
                .shared()
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut load: HashMap<u64, usize> = HashMap::new();
            for entry in state.processes.processes() {
                if let Some(backup) = entry.backup.filter(|_| entry.pid != pid) {
                    *load.entry(backup).or_default() += 1;
                }
            }
            let members: Vec<u64> = self.shared().known_members();
            (members, load)
        };
        let mut candidates: Vec<u64> = members
            .into_iter()
            .filter(|id| *id != me && !exclude.contains(id))
            .collect();
        candidates.sort_by_key(|id| (load.get(id).copied().unwrap_or(0), *id));
        for candidate in candidates {
            let alive = match self.shared().peer_address_of(candidate) {
                Some(address) => !crate::transport::peer_process_gone(&address).await,
                None => false,
            };
            if alive {
                return Some(candidate);
            }
        }
        None
    }

    /// A pair message from a primary to this node's backup of its pid.
    pub fn handle_pair(&self, message: PairMessage) -> Vec<PairMessage> {
        let pid = message.pid().0;
        let backup = lock(&self.backups).get(&pid).cloned();
        let backup = match backup {
            Some(backup) => backup,
            None => {
                let entry = self.entry(pid);
                match entry {
                    Some(entry) if entry.backup == Some(self.shared().id) => {
                        match self.backup_for(pid, entry.epoch) {
                            Ok(backup) => backup,
                            Err(error) => {
                                tracing::error!(pid, %error, "cannot open the backup");
                                return Vec::new();
                            }
                        }
                    }
                    // This node is not (or not yet) the backup: a primary of
                    // an older epoch learns that it is over.
                    Some(entry)
                        if backup::message_epoch(&message)
                            .is_some_and(|epoch| epoch.0 < entry.epoch) =>
                    {
                        return vec![PairMessage::Fenced {
                            pid: message.pid(),
                            epoch: Epoch(entry.epoch),
                        }];
                    }
                    _ => return Vec::new(),
                }
            }
        };
        let is_append = matches!(message, PairMessage::Append { .. });
        let mut backup = lock(&backup);
        let started = std::time::Instant::now();
        let handled = backup.handle(message);
        if is_append {
            let metrics = &self.shared().metrics;
            metrics.pair_backup_appends.fetch_add(1, Ordering::Relaxed);
            metrics
                .pair_backup_append_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        match handled {
            Ok(answers) => answers,
            Err(error) => {
                tracing::error!(pid, %error, "the backup cannot persist records");
                Vec::new()
            }
        }
    }

    /// A stdin write for a primary running here.
    pub async fn local_stdin(
        &self,
        pid: u64,
        bytes: Bytes,
        eof: bool,
        request: Option<understudy_kv::RequestId>,
    ) -> Result<u64, understudy_api::process_service::ProcessError> {
        use understudy_api::process_service::ProcessError;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = lock(&self.primaries).get(&pid).map(|handle| {
            handle.events.send(PrimaryEvent::Stdin {
                bytes,
                eof,
                request,
                reply,
            })
        });
        let unavailable = |detail: &str| ProcessError::Unavailable {
            detail: detail.to_string(),
        };
        match sent {
            Some(Ok(())) => {}
            _ => {
                return Err(unavailable(
                    "the process's primary is not running on this node",
                ))
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable("the primary stopped")),
            Err(_) => Err(unavailable(
                "the backup did not acknowledge the input in time",
            )),
        }
    }

    /// Per-process metrics in the Prometheus text format: from the table for
    /// every process, and the live numbers of the primaries running here.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        let entries = self.entries();
        let _ = writeln!(text, "# TYPE understudy_process_epoch gauge");
        for entry in &entries {
            let _ = writeln!(
                text,
                "understudy_process_epoch{{pid=\"{}\"}} {}",
                entry.pid, entry.epoch
            );
        }
        let _ = writeln!(text, "# TYPE understudy_process_stdout_bytes gauge");
        for entry in &entries {
            let bytes = entry.stdout_bytes;
            let _ = writeln!(
                text,
                "understudy_process_stdout_bytes{{pid=\"{}\"}} {bytes}",
                entry.pid
            );
        }
        let _ = writeln!(text, "# TYPE understudy_process_running gauge");
        for entry in &entries {
            let running = u8::from(entry.state == RunState::Running);
            let _ = writeln!(
                text,
                "understudy_process_running{{pid=\"{}\"}} {running}",
                entry.pid
            );
        }
        let live: Vec<(u64, LiveStatus)> = lock(&self.primaries)
            .iter()
            .map(|(pid, handle)| (*pid, lock(&handle.status).clone()))
            .collect();
        let _ = writeln!(text, "# TYPE understudy_process_logged_lsn gauge");
        for (pid, status) in &live {
            let _ = writeln!(
                text,
                "understudy_process_logged_lsn{{pid=\"{pid}\"}} {}",
                status.logged_lsn
            );
        }
        let _ = writeln!(text, "# TYPE understudy_process_acked_lsn gauge");
        for (pid, status) in &live {
            let _ = writeln!(
                text,
                "understudy_process_acked_lsn{{pid=\"{pid}\"}} {}",
                status.acked_lsn
            );
        }
        text
    }

    /// The live status of a primary running here.
    pub fn live_status(&self, pid: u64) -> Option<LiveStatus> {
        lock(&self.primaries)
            .get(&pid)
            .map(|handle| lock(&handle.status).clone())
    }
}
