//! The primary of one pid on this node: a thread that owns the guest and the
//! pair core's `PrimaryLog` (docs/pairs.md, rules 1–3 and 7).
//!
//! The thread runs the guest in fuel slices, hands every record it logs and
//! every output it writes to the core, and carries out the core's commands
//! through two channels to async tasks of the runtime: one sends pair messages
//! to the backup's node (their answers come back as events), one commits
//! released outputs, exits and events to the coordinator. A client's stdin
//! write is logged as a `StdinArrived` record at once and answered when the
//! backup has acknowledged it.
//!
//! A new primary (at birth, or promoted) restores the checkpoint it was
//! given, if any, replays the records after it, then goes live. It takes a
//! checkpoint at a quiescent point every [`CHECKPOINT_RECORDS`] records or
//! [`CHECKPOINT_INTERVAL`] (incremental: the pages changed since the previous
//! one; every [`FULL_CHECKPOINT_EVERY`]th and the first to each new backup are
//! full) and ships it when the previous one is complete at the backup; the
//! core then drops the records it covers. Outputs are held while no backup
//! has caught up.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use understudy_api::process_service::ProcessError;
use understudy_guest::{
    Birth, CheckpointImage, GuestEngine, GuestInstance, GuestModule, InputLog, ModuleKind,
    ReplayThenRecord, RunOutcome, SystemInputs,
};
use understudy_kv::RequestId;
use understudy_pair::{
    BackupState, Command, Epoch, Lsn, Oseq, Output, PairMessage, Pid, PrimaryConfig, PrimaryLog,
    Record, RecordKind,
};

use super::inputs::{
    continue_summary, monotonic_reading, LogSummary, ShellSnapshot, StdinArrival, WindowEntry,
};
use super::table::{StdinAnswer, STDIN_ANSWERS_KEPT_MAX};

/// How often the thread wakes without events (retransmission clock).
pub const PRIMARY_TICK: Duration = Duration::from_millis(10);
/// A heartbeat goes to the backup this often.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// A backup silent this long (no answer to appends or heartbeats) is replaced.
pub const BACKUP_SILENCE_TIMEOUT: Duration = Duration::from_millis(1500);
/// A checkpoint is taken once this many records were logged since the last.
pub const CHECKPOINT_RECORDS: u64 = 4096;
/// ... or once this long passed with at least one record logged since.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Every this many checkpoints one is full, so that the chain a backup keeps
/// (and folds again after a restart) stays short.
pub const FULL_CHECKPOINT_EVERY: u64 = 16;

/// Something for the primary's thread.
#[derive(Debug)]
pub enum PrimaryEvent {
    /// A client's stdin write.
    Stdin {
        /// The bytes.
        bytes: Bytes,
        /// Close stdin after them.
        eof: bool,
        /// Its idempotency key.
        request: Option<RequestId>,
        /// Answered with the stdin offset once durable at the backup.
        reply: tokio::sync::oneshot::Sender<Result<u64, ProcessError>>,
    },
    /// A backup's answers to a message sent to node `from`. Only the current
    /// backup's answers count: after a re-pairing, a late answer from the
    /// replaced backup must not acknowledge records for the new one.
    Pair {
        /// The node the message went to.
        from: u64,
        /// Its answers.
        messages: Vec<PairMessage>,
    },
    /// The coordinator placed a new backup (or none).
    Placement {
        /// The new backup.
        backup: Option<u64>,
    },
    /// Stop now (deleted, or a newer epoch exists).
    Stop,
}

/// What the thread asks the runtime to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Send to the backup's node.
    Send {
        /// The backup's node.
        to: u64,
        /// The message.
        message: PairMessage,
    },
    /// Commit released outputs (in order).
    Release(Vec<Output>),
    /// Keep an event in the process's history.
    Note {
        /// Event kind.
        kind: &'static str,
        /// Description.
        detail: String,
    },
    /// Place a new backup on another node than these.
    ReplaceBackup {
        /// Nodes not to choose (this one, the silent backup).
        exclude: Vec<u64>,
    },
    /// The guest finished and every output is released.
    Exit {
        /// Its exit code.
        code: i32,
        /// Each client's latest stdin write, for retries after the exit.
        stdin_answers: Vec<StdinAnswer>,
    },
}

/// What `GET /v1/processes/{pid}` shows of a running primary.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LiveStatus {
    /// The primary's epoch.
    pub epoch: u64,
    /// Last lsn logged.
    pub logged_lsn: u64,
    /// Last lsn the backup acknowledged.
    pub acked_lsn: u64,
    /// `none`, `catching_up` or `caught_up`.
    pub backup_state: String,
    /// Stdin bytes accepted.
    pub stdin_offset: u64,
    /// Records replayed when this primary started.
    pub replayed: u64,
    /// The newest checkpoint complete at the backup (or restored).
    pub checkpoint_lsn: u64,
    /// `checkpoint` or `replay`.
    pub recovery_mode: String,
}

/// Everything a primary starts from.
pub struct PrimarySpec {
    /// The process.
    pub pid: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The engine.
    pub engine: Arc<GuestEngine>,
    /// The compiled module.
    pub module: GuestModule,
    /// Arguments and environment.
    pub birth: Birth,
    /// The checkpoint to restore (a promoted backup's newest), if any.
    pub image: Option<CheckpointImage>,
    /// The records to replay: those after the image (from lsn 1 without
    /// one; none at birth).
    pub history: Vec<Record>,
    /// Outputs already released (promoted: the store's count).
    pub released_oseq: Oseq,
    /// No backup, outputs at once.
    pub unpaired: bool,
    /// The backup's node.
    pub backup: Option<u64>,
}

type Guest = GuestInstance<ReplayThenRecord<SystemInputs>>;

struct Waiting {
    lsn: Lsn,
    offset: u64,
    reply: tokio::sync::oneshot::Sender<Result<u64, ProcessError>>,
}

/// When the primary checkpoints, and what it took.
struct Checkpoints {
    /// The module can be checkpointed at all (else it recovers by replay).
    enabled: bool,
    /// The lsn of the newest checkpoint taken (or restored).
    last_lsn: Lsn,
    last_at: Instant,
    /// Checkpoints taken since the last full one.
    since_full: u64,
    /// The newest checkpoint restored at start (shown until a newer one is
    /// complete at a backup).
    restored_lsn: Lsn,
    /// A new backup waits for a full checkpoint (the guest was not at a
    /// quiescent point when it was placed).
    pairing_pending: bool,
    /// When a checkpoint was last noted in the process's events.
    last_noted: Option<Instant>,
}

impl Checkpoints {
    /// A checkpoint after `lsn` was handed to the core.
    fn taken(&mut self, lsn: Lsn, full: bool) {
        self.last_lsn = lsn;
        self.last_at = Instant::now();
        self.since_full = if full { 0 } else { self.since_full + 1 };
    }
}

/// Checkpoints are noted in the process's events at most this often.
const CHECKPOINT_NOTE_INTERVAL: Duration = Duration::from_secs(30);

/// The thread's state.
struct Primary {
    pid: u64,
    epoch: u64,
    kind: ModuleKind,
    guest: Guest,
    log: PrimaryLog,
    unpaired: bool,
    /// Highest oseq handed to the coordinator.
    released_oseq: Oseq,
    backup: Option<u64>,
    /// Whether the current backup's catch-up was noted.
    caught_up_noted: bool,
    checkpoints: Checkpoints,
    /// The last monotonic clock reading logged (for checkpoints' shell state).
    monotonic_nanos: u64,
    waiting: Vec<Waiting>,
    window: HashMap<Bytes, WindowEntry>,
    stdin_offset: u64,
    stdin_closed: bool,
    needs_run: bool,
    /// When a command sleeping in `poll_oneoff` is due to run again.
    wake_at: Option<Instant>,
    exit_code: Option<i32>,
    exit_sent: bool,
    /// When the last heartbeat went out (one every HEARTBEAT_INTERVAL, also
    /// under load: it tells the backup whether it is caught up).
    last_heartbeat: Instant,
    last_heard: Instant,
    replayed: u64,
    status: Arc<Mutex<LiveStatus>>,
    pair_out: UnboundedSender<Outgoing>,
    coordinator_out: UnboundedSender<Outgoing>,
}

fn primary_config() -> PrimaryConfig {
    PrimaryConfig {
        // A module that recovers by replay keeps its whole log (a new backup
        // needs it): bounded only by the process's life.
        unacknowledged_records_max: 4 * 1024 * 1024,
        retained_records_max: 4 * 1024 * 1024,
        held_outputs_max: 4 * 1024 * 1024,
        retransmit_ticks: 50,
        ..PrimaryConfig::default()
    }
}

/// Starts the primary's thread; returns its status cell.
pub fn spawn(
    spec: PrimarySpec,
    events: Receiver<PrimaryEvent>,
    pair_out: UnboundedSender<Outgoing>,
    coordinator_out: UnboundedSender<Outgoing>,
) -> std::io::Result<Arc<Mutex<LiveStatus>>> {
    let status = Arc::new(Mutex::new(LiveStatus {
        epoch: spec.epoch,
        backup_state: "none".into(),
        ..LiveStatus::default()
    }));
    let cell = status.clone();
    std::thread::Builder::new()
        .name(format!("pid-{}", spec.pid))
        .spawn(
            move || match Primary::start(spec, status, pair_out, coordinator_out) {
                Ok(mut primary) => primary.run(events),
                Err(error) => tracing::error!(%error, "a primary could not start"),
            },
        )?;
    Ok(cell)
}

impl Primary {
    fn start(
        spec: PrimarySpec,
        status: Arc<Mutex<LiveStatus>>,
        pair_out: UnboundedSender<Outgoing>,
        coordinator_out: UnboundedSender<Outgoing>,
    ) -> Result<Primary, String> {
        let restored_lsn = spec.image.as_ref().map_or(Lsn(0), |image| image.lsn());
        let start = match &spec.image {
            Some(image) => {
                let mut start = ShellSnapshot::decode(image.extra())?.into_summary();
                // Stdin that had arrived and was not read at the checkpoint:
                // reads replayed after it consume it first.
                let backlog = image.host().stdin_backlog.bytes.clone();
                if !backlog.is_empty() {
                    start.unread.push(backlog);
                }
                start
            }
            None => LogSummary::default(),
        };
        let summary = continue_summary(start, &spec.history);
        let source = SystemInputs::with_monotonic_floor(summary.monotonic_nanos);
        let epoch = Epoch(spec.epoch);
        let inputs = ReplayThenRecord::after(restored_lsn, spec.history.clone(), source, epoch);
        let guest = match &spec.image {
            Some(image) => {
                GuestInstance::restore(&spec.engine, &spec.module, &spec.birth, image, inputs)
            }
            None => GuestInstance::new(&spec.engine, &spec.module, &spec.birth, inputs),
        }
        .map_err(|error| error.to_string())?;
        // The live stdin queue is what the log says is unread (a restore put
        // the checkpoint's whole backlog back, part of which replayed reads took).
        guest.with_inputs(|inputs| {
            inputs
                .recorder_mut()
                .source_mut()
                .replace_stdin(summary.unread.iter().cloned(), summary.stdin_closed)
        });
        // The records after the restored point (from lsn 1 without one).
        let log = PrimaryLog::resumed(
            Pid(spec.pid),
            epoch,
            restored_lsn,
            spec.history.clone(),
            spec.released_oseq,
            primary_config(),
        );
        let mut primary = Primary {
            pid: spec.pid,
            epoch: spec.epoch,
            kind: spec.module.kind(),
            guest,
            log,
            unpaired: spec.unpaired,
            released_oseq: spec.released_oseq,
            backup: None,
            caught_up_noted: false,
            checkpoints: Checkpoints {
                enabled: super::recovers_from_checkpoints(&spec.module, spec.unpaired),
                last_lsn: restored_lsn,
                last_at: Instant::now(),
                since_full: 0,
                restored_lsn,
                pairing_pending: false,
                last_noted: None,
            },
            monotonic_nanos: summary.monotonic_nanos,
            waiting: Vec::new(),
            window: summary.window,
            stdin_offset: summary.stdin_offset,
            stdin_closed: summary.stdin_closed,
            needs_run: true,
            wake_at: None,
            exit_code: None,
            exit_sent: false,
            last_heartbeat: Instant::now(),
            last_heard: Instant::now(),
            replayed: spec.history.len() as u64,
            status,
            pair_out,
            coordinator_out,
        };
        primary.replay(&spec.history, &summary.unread)?;
        if spec.backup.is_some() || spec.epoch > 1 {
            primary.set_backup(spec.backup);
        } else {
            // Born without a backup: none was placed yet.
            primary.log.backup_lost();
        }
        Ok(primary)
    }

    /// Replays the records after the restored point (the core has them
    /// already): a command runs until it needs live input; a reactor gets its
    /// logged handler calls again, then the calls still owed for stdin that
    /// arrived but was not handled.
    fn replay(&mut self, history: &[Record], unread: &[Bytes]) -> Result<(), String> {
        if self.kind == ModuleKind::Reactor {
            let handler_calls = history
                .iter()
                .filter(|record| record.kind == RecordKind::HandlerCall);
            for record in handler_calls {
                let outcome = self.guest.call_handler(&record.payload);
                self.after_run(outcome);
            }
            for bytes in unread {
                self.deliver_to_reactor(bytes.clone());
            }
        } else {
            self.run_guest();
        }
        // Regenerated outputs below `released_oseq` are skipped by `hand_over`
        // (the store has them); the rest keep their oseqs.
        self.pump()
    }

    fn run(&mut self, events: Receiver<PrimaryEvent>) {
        let mut last_tick = Instant::now();
        loop {
            let wait = if self.needs_run && self.exit_code.is_none() {
                Duration::ZERO
            } else {
                self.wake_at.map_or(PRIMARY_TICK, |wake_at| {
                    wake_at
                        .saturating_duration_since(Instant::now())
                        .min(PRIMARY_TICK)
                })
            };
            match events.recv_timeout(wait) {
                Ok(PrimaryEvent::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
            }
            while let Ok(event) = events.try_recv() {
                if matches!(event, PrimaryEvent::Stop) {
                    return;
                }
                self.handle(event);
            }
            if self
                .wake_at
                .is_some_and(|wake_at| wake_at <= Instant::now())
            {
                self.wake_at = None;
                self.needs_run = true;
            }
            if self.needs_run && self.exit_code.is_none() && self.kind == ModuleKind::Command {
                self.run_guest();
            }
            if let Err(error) = self.pump() {
                tracing::error!(pid = self.pid, %error, "the primary stops");
                return;
            }
            if last_tick.elapsed() >= PRIMARY_TICK {
                last_tick = Instant::now();
                self.periodic();
            }
            self.carry_out();
            self.answer_waiting();
            self.publish();
            self.maybe_checkpoint();
            if self.log.fenced_by().is_some() {
                tracing::warn!(
                    pid = self.pid,
                    epoch = self.epoch,
                    "fenced by a newer epoch"
                );
                return;
            }
            self.maybe_exit();
        }
    }

    fn handle(&mut self, event: PrimaryEvent) {
        match event {
            PrimaryEvent::Stdin {
                bytes,
                eof,
                request,
                reply,
            } => self.accept_stdin(bytes, eof, request, reply),
            PrimaryEvent::Pair { from, messages } => {
                if self.backup != Some(from) {
                    return;
                }
                if !messages.is_empty() {
                    self.last_heard = Instant::now();
                }
                for message in messages {
                    self.log.handle(message);
                }
            }
            PrimaryEvent::Placement { backup } => {
                if backup != self.backup {
                    self.set_backup(backup);
                }
            }
            PrimaryEvent::Stop => {}
        }
    }

    fn accept_stdin(
        &mut self,
        bytes: Bytes,
        eof: bool,
        request: Option<RequestId>,
        reply: tokio::sync::oneshot::Sender<Result<u64, ProcessError>>,
    ) {
        if let Some(request) = &request {
            if let Some(entry) = self.window.get(&request.client_id).copied() {
                if request.sequence == entry.sequence {
                    // A retry: answered with the first offset once durable.
                    self.waiting.push(Waiting {
                        lsn: entry.lsn,
                        offset: entry.offset,
                        reply,
                    });
                    return;
                }
                if request.sequence < entry.sequence {
                    let detail = format!(
                        "sequence {} is older than the client's latest stdin write {}",
                        request.sequence, entry.sequence
                    );
                    let _ = reply.send(Err(ProcessError::BadRequest { detail }));
                    return;
                }
            }
        }
        if self.stdin_closed {
            let detail = "stdin is closed".to_string();
            let _ = reply.send(Err(ProcessError::BadRequest { detail }));
            return;
        }
        if self.exit_code.is_some() {
            let detail = "the process has exited".to_string();
            let _ = reply.send(Err(ProcessError::BadRequest { detail }));
            return;
        }
        self.stdin_offset += bytes.len() as u64;
        self.stdin_closed = eof;
        let arrival = StdinArrival {
            client: request.as_ref().map(|request| request.client_id.clone()),
            sequence: request.as_ref().map_or(0, |request| request.sequence),
            bytes: bytes.clone(),
            eof,
            offset: self.stdin_offset,
        };
        let lsn = self.guest.with_inputs(|inputs| {
            let recorder = inputs.recorder_mut();
            let lsn = recorder.note(RecordKind::StdinArrived, arrival.encode());
            if self.kind == ModuleKind::Command {
                recorder.source_mut().push_stdin(bytes.clone());
                if eof {
                    recorder.source_mut().close_stdin();
                }
            }
            lsn
        });
        if let Some(request) = request {
            let entry = WindowEntry {
                sequence: request.sequence,
                offset: self.stdin_offset,
                lsn,
            };
            self.window.insert(request.client_id, entry);
        }
        self.waiting.push(Waiting {
            lsn,
            offset: self.stdin_offset,
            reply,
        });
        match self.kind {
            ModuleKind::Command => self.needs_run = true,
            ModuleKind::Reactor => self.deliver_to_reactor(bytes),
        }
    }

    fn deliver_to_reactor(&mut self, bytes: Bytes) {
        if bytes.is_empty() || self.exit_code.is_some() {
            return;
        }
        let outcome = self.guest.call_handler(&bytes);
        self.after_run(outcome);
    }

    fn run_guest(&mut self) {
        let outcome = self.guest.run();
        self.after_run(outcome);
    }

    fn after_run(&mut self, outcome: Result<RunOutcome, understudy_guest::GuestError>) {
        match outcome {
            Ok(RunOutcome::Blocked) | Ok(RunOutcome::Returned) => self.needs_run = false,
            // Unwound: stopped at a host call on request (a checkpoint may
            // be taken now); the next run resumes it.
            Ok(RunOutcome::OutOfFuel) | Ok(RunOutcome::Unwound) => self.needs_run = true,
            // Sleeping in poll_oneoff: run again when the deadline is due
            // (stdin arriving meanwhile runs it earlier; it sleeps again).
            Ok(RunOutcome::Sleeping { nanos }) => {
                self.needs_run = false;
                self.wake_at = Some(Instant::now() + Duration::from_nanos(nanos));
            }
            Ok(RunOutcome::Exited(code)) => self.finish(code, format!("exited with code {code}")),
            Ok(RunOutcome::Trapped(trap)) => self.finish(134, format!("trapped: {trap}")),
            // 128 + SIGKILL, as a shell reports a killed program.
            Ok(RunOutcome::Killed(reason)) => self.finish(137, format!("killed: {reason}")),
            Err(error) => {
                tracing::error!(pid = self.pid, %error, "the guest failed");
                self.finish(-1, format!("failed: {error}"));
            }
        }
    }

    fn finish(&mut self, code: i32, detail: String) {
        self.needs_run = false;
        if self.exit_code.is_none() {
            self.exit_code = Some(code);
            if code != 0 {
                let _ = self.coordinator_out.send(Outgoing::Note {
                    kind: "guest",
                    detail,
                });
            }
        }
    }

    /// Hands the guest's new records and outputs to the core, in the order the
    /// guest produced them.
    fn pump(&mut self) -> Result<(), String> {
        let records = self
            .guest
            .with_inputs(|inputs| inputs.recorder_mut().take_records());
        let outputs = self.guest.take_outputs();
        self.hand_over(records, outputs)
    }

    fn hand_over(&mut self, records: Vec<Record>, outputs: Vec<Output>) -> Result<(), String> {
        let mut records = records.into_iter().peekable();
        for output in outputs {
            while let Some(record) = records.next_if(|record| record.lsn <= output.depends_on) {
                self.log_record(record)?;
            }
            if output.oseq <= self.released_oseq {
                continue; // regenerated by a replay: the store has it
            }
            if self.unpaired {
                self.released_oseq = output.oseq;
                let _ = self.coordinator_out.send(Outgoing::Release(vec![output]));
                continue;
            }
            let oseq = self
                .log
                .output(output.stream, output.bytes)
                .map_err(|error| error.to_string())?;
            if oseq != output.oseq {
                return Err(format!(
                    "the guest's oseq {} became {} in the core",
                    output.oseq.0, oseq.0
                ));
            }
        }
        for record in records {
            self.log_record(record)?;
        }
        Ok(())
    }

    fn log_record(&mut self, record: Record) -> Result<(), String> {
        if let Some(nanos) = monotonic_reading(&record) {
            self.monotonic_nanos = nanos;
        }
        if !self.unpaired {
            let lsn = self
                .log
                .log(record.kind, record.payload.clone(), record.fuel_consumed)
                .map_err(|error| error.to_string())?;
            if lsn != record.lsn {
                return Err(format!(
                    "the guest's lsn {} became {} in the core",
                    record.lsn.0, lsn.0
                ));
            }
        }
        Ok(())
    }

    /// A new backup (or none). A module that checkpoints pairs it from a
    /// full checkpoint taken now (its newest may be incremental), then the
    /// records after it; one that recovers by replay ships its whole log from
    /// lsn 1. Held outputs stay held until the new backup caught up.
    fn set_backup(&mut self, backup: Option<u64>) {
        self.backup = backup;
        self.caught_up_noted = false;
        self.last_heard = Instant::now();
        self.checkpoints.pairing_pending = false;
        if self.unpaired {
            return;
        }
        if backup.is_none() {
            self.log.backup_lost();
            return;
        }
        if let Err(error) = self.pair() {
            tracing::warn!(pid = self.pid, %error, "the new backup waits for a checkpoint");
            self.log.backup_lost();
            self.checkpoints.pairing_pending = true;
        }
        self.log.flush();
    }

    fn pair(&mut self) -> Result<(), String> {
        let logged = self.log.logged();
        // No checkpoint taken or restored yet: the core keeps every record
        // from lsn 1, which is all a new backup needs.
        let from_start = self.checkpoints.last_lsn == Lsn(0);
        let capture = if !self.checkpoints.enabled || (logged == Lsn(0) && from_start) {
            None
        } else {
            match self.capture(true) {
                Ok(data) => Some(data),
                Err(_) if from_start => None,
                Err(error) => return Err(error),
            }
        };
        let Some(data) = capture else {
            return self
                .log
                .pair_with_new_backup()
                .map_err(|error| error.to_string());
        };
        self.log
            .pair_with_new_backup_from(logged, data)
            .map_err(|error| error.to_string())?;
        self.checkpoints.taken(logged, true);
        Ok(())
    }

    /// Captures the guest now (after handing its pending records and outputs
    /// to the core): the encoded checkpoint, with the outputs the core still
    /// holds and the shell's state. Refused while the guest is not at a
    /// quiescent point; a command in the middle of a run is then asked to
    /// unwind at its next host call.
    fn capture(&mut self, full: bool) -> Result<Bytes, String> {
        self.pump()?;
        // Stdin not read yet is in the guest's host state (its backlog).
        let snapshot = ShellSnapshot {
            stdin_offset: self.stdin_offset,
            stdin_closed: self.stdin_closed,
            window: self
                .window
                .iter()
                .map(|(client, entry)| (client.clone(), entry.sequence, entry.offset, entry.lsn.0))
                .collect(),
            monotonic_nanos: self.monotonic_nanos,
        };
        let held: Vec<Output> = self.log.held().cloned().collect();
        let checkpoint = match self.guest.checkpoint_with(snapshot.encode(), held, full) {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                // A command in the middle of a run (its fuel slice ended while
                // it computed): stop it at its next host call; the next
                // attempt captures it there.
                if self.needs_run && self.kind == ModuleKind::Command {
                    let _ = self.guest.request_unwind();
                }
                return Err(error.to_string());
            }
        };
        if checkpoint.lsn != self.log.logged() {
            return Err(format!(
                "the checkpoint is at lsn {}, the log at {}",
                checkpoint.lsn.0,
                self.log.logged().0
            ));
        }
        Ok(checkpoint.encode())
    }

    /// Takes and ships a checkpoint when one is due: the backup caught up and
    /// completed the previous one, enough records or time since it, and the
    /// guest quiescent (else it is tried again on the next turn).
    fn maybe_checkpoint(&mut self) {
        if !self.checkpoints.enabled || self.exit_code.is_some() {
            return;
        }
        if self.checkpoints.pairing_pending {
            if self.backup.is_some() && self.pair().is_ok() {
                self.checkpoints.pairing_pending = false;
                self.log.flush();
            }
            return;
        }
        let logged = self.log.logged();
        let since = logged.0.saturating_sub(self.checkpoints.last_lsn.0);
        let due = since >= CHECKPOINT_RECORDS
            || (since > 0 && self.checkpoints.last_at.elapsed() >= CHECKPOINT_INTERVAL);
        let ready = self.log.backup_state() == BackupState::CaughtUp
            && self.log.checkpoint_in_flight().is_none();
        if !due || !ready {
            return;
        }
        let full = self.checkpoints.since_full + 1 >= FULL_CHECKPOINT_EVERY;
        let started = Instant::now();
        let data = match self.capture(full) {
            Ok(data) => data,
            Err(error) => {
                tracing::debug!(pid = self.pid, %error, "no checkpoint now");
                return;
            }
        };
        let bytes = data.len();
        let lsn = self.log.logged();
        if let Err(error) = self.log.checkpoint(lsn, data) {
            tracing::error!(pid = self.pid, %error, "the core refused a checkpoint");
            return;
        }
        self.checkpoints.taken(lsn, full);
        self.log.flush();
        let note_due = self
            .checkpoints
            .last_noted
            .is_none_or(|noted| noted.elapsed() >= CHECKPOINT_NOTE_INTERVAL);
        if note_due {
            self.checkpoints.last_noted = Some(Instant::now());
            let kind = if full { "full" } else { "incremental" };
            let detail = format!(
                "{kind} checkpoint at lsn {}: {bytes} bytes, captured in {} µs (noted at most every {} s)",
                lsn.0,
                started.elapsed().as_micros(),
                CHECKPOINT_NOTE_INTERVAL.as_secs()
            );
            let _ = self.coordinator_out.send(Outgoing::Note {
                kind: "checkpoint",
                detail,
            });
        }
    }

    fn periodic(&mut self) {
        if self.unpaired {
            return;
        }
        self.log.flush();
        self.log.tick();
        if self.last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
            self.last_heartbeat = Instant::now();
            self.log.heartbeat();
        }
        match self.backup {
            Some(backup) if self.last_heard.elapsed() >= BACKUP_SILENCE_TIMEOUT => {
                let _ = self.coordinator_out.send(Outgoing::ReplaceBackup {
                    exclude: vec![backup],
                });
                // Asked once per silence period.
                self.last_heard = Instant::now();
            }
            None if self.last_heard.elapsed() >= BACKUP_SILENCE_TIMEOUT => {
                let _ = self
                    .coordinator_out
                    .send(Outgoing::ReplaceBackup { exclude: vec![] });
                self.last_heard = Instant::now();
            }
            _ => {}
        }
    }

    fn carry_out(&mut self) {
        self.log.flush();
        self.note_caught_up();
        for command in self.log.take_commands() {
            match command {
                Command::Send(message) => {
                    if let Some(to) = self.backup {
                        let _ = self.pair_out.send(Outgoing::Send { to, message });
                    }
                }
                Command::Release(outputs) => {
                    if let Some(last) = outputs.last() {
                        self.released_oseq = self.released_oseq.max(last.oseq);
                    }
                    let _ = self.coordinator_out.send(Outgoing::Release(outputs));
                }
                _ => {}
            }
        }
    }

    /// Once per backup, when it caught up: a heartbeat tells it at once that
    /// it may be promoted from now on, and the event is kept.
    fn note_caught_up(&mut self) {
        let caught_up = self.backup.is_some() && self.log.backup_state() == BackupState::CaughtUp;
        if !caught_up || self.caught_up_noted {
            return;
        }
        self.caught_up_noted = true;
        self.log.heartbeat();
        self.last_heartbeat = Instant::now();
        let detail = format!(
            "backup on node {} caught up at lsn {}",
            self.backup.unwrap_or_default(),
            self.log.acknowledged().0
        );
        let _ = self.coordinator_out.send(Outgoing::Note {
            kind: "caught_up",
            detail,
        });
    }

    fn answer_waiting(&mut self) {
        let acknowledged = if self.unpaired {
            Lsn(u64::MAX)
        } else {
            self.log.acknowledged()
        };
        let (ready, waiting): (Vec<Waiting>, Vec<Waiting>) = self
            .waiting
            .drain(..)
            .partition(|waiting| waiting.lsn <= acknowledged);
        self.waiting = waiting;
        for waiting in ready {
            let _ = waiting.reply.send(Ok(waiting.offset));
        }
    }

    fn publish(&self) {
        let backup_state = match (self.backup, self.log.backup_state()) {
            (None, _) | (Some(_), BackupState::None) => "none",
            (Some(_), BackupState::CatchingUp) => "catching_up",
            (Some(_), BackupState::CaughtUp) => "caught_up",
        };
        let logged = self.guest.with_inputs(|inputs| inputs.last_lsn()).0;
        let status = LiveStatus {
            epoch: self.epoch,
            logged_lsn: logged,
            acked_lsn: if self.unpaired {
                0
            } else {
                self.log.acknowledged().0
            },
            backup_state: backup_state.to_string(),
            stdin_offset: self.stdin_offset,
            replayed: self.replayed,
            checkpoint_lsn: self
                .log
                .checkpoint_lsn()
                .max(self.checkpoints.restored_lsn)
                .0,
            recovery_mode: if self.checkpoints.enabled {
                "checkpoint"
            } else {
                "replay"
            }
            .to_string(),
        };
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = status;
    }

    fn maybe_exit(&mut self) {
        let Some(code) = self.exit_code else { return };
        // The exit is an output too: it depends on every input the guest
        // observed (typically the end of stdin), so it waits for the backup
        // to acknowledge them all, like the released outputs before it. This
        // also answers the stdin write that closed stdin before the exit
        // stops this primary (its client would otherwise retry into a 400).
        let all_released = self.unpaired
            || (self.log.held_outputs() == 0 && self.log.acknowledged() >= self.log.logged());
        if all_released && !self.exit_sent {
            self.exit_sent = true;
            let stdin_answers = self.stdin_answers();
            let _ = self.coordinator_out.send(Outgoing::Exit {
                code,
                stdin_answers,
            });
        }
    }

    /// The window of stdin writes as the table keeps it past the exit: the
    /// clients that wrote last first, at most [`STDIN_ANSWERS_KEPT_MAX`].
    fn stdin_answers(&self) -> Vec<StdinAnswer> {
        let mut latest: Vec<(&Bytes, &WindowEntry)> = self.window.iter().collect();
        latest.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.lsn));
        latest
            .into_iter()
            .take(STDIN_ANSWERS_KEPT_MAX)
            .map(|(client, entry)| StdinAnswer {
                client: client.clone(),
                sequence: entry.sequence,
                offset: entry.offset,
            })
            .collect()
    }
}
