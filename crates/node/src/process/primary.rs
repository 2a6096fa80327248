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
//! A new primary (at birth, or promoted) replays the log it was given, then
//! goes live. Without checkpoints yet, it keeps the whole log in memory so it
//! can ship it to a new backup (re-pairing); outputs are held while no backup
//! has caught up.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use understudy_api::process_service::ProcessError;
use understudy_guest::{
    Birth, GuestEngine, GuestInstance, GuestModule, ModuleKind, ReplayThenRecord, RunOutcome,
    SystemInputs,
};
use understudy_kv::RequestId;
use understudy_pair::{
    Command, Epoch, Lsn, Oseq, Output, PairMessage, Pid, PrimaryConfig, PrimaryLog, Record,
    RecordKind,
};

use super::inputs::{summarize, StdinArrival, WindowEntry};

/// How often the thread wakes without events (retransmission clock).
pub const PRIMARY_TICK: Duration = Duration::from_millis(10);
/// A heartbeat goes to the backup after this long without a message.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// A backup silent this long (no answer to appends or heartbeats) is replaced.
pub const BACKUP_SILENCE_TIMEOUT: Duration = Duration::from_millis(1500);

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
    /// The backup's answers to a message.
    Pair(Vec<PairMessage>),
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
    Exit(i32),
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
    /// The log to replay (empty at birth).
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

/// The thread's state.
struct Primary {
    pid: u64,
    epoch: u64,
    kind: ModuleKind,
    guest: Guest,
    log: PrimaryLog,
    unpaired: bool,
    /// The whole log (for re-pairing, until checkpoints truncate it).
    history: Vec<Record>,
    /// Highest oseq handed to the coordinator.
    released_oseq: Oseq,
    backup: Option<u64>,
    /// Lsn logged when the current backup was placed: caught up once acked.
    pairing_lsn: Lsn,
    caught_up: bool,
    waiting: Vec<Waiting>,
    window: HashMap<Bytes, WindowEntry>,
    stdin_offset: u64,
    stdin_closed: bool,
    needs_run: bool,
    exit_code: Option<i32>,
    exit_sent: bool,
    last_sent: Instant,
    last_heard: Instant,
    replayed: u64,
    status: Arc<Mutex<LiveStatus>>,
    pair_out: UnboundedSender<Outgoing>,
    coordinator_out: UnboundedSender<Outgoing>,
}

fn primary_config() -> PrimaryConfig {
    PrimaryConfig {
        // The whole log is re-logged when a new backup is placed; without
        // checkpoints it is bounded only by the process's life.
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
        let summary = summarize(&spec.history);
        let mut source = SystemInputs::with_monotonic_floor(summary.monotonic_nanos);
        for bytes in &summary.unread {
            source.push_stdin(bytes.clone());
        }
        if summary.stdin_closed {
            source.close_stdin();
        }
        let inputs = ReplayThenRecord::new(spec.history.clone(), source, Epoch(spec.epoch));
        let guest = GuestInstance::new(&spec.engine, &spec.module, &spec.birth, inputs)
            .map_err(|error| error.to_string())?;
        let last_lsn = spec.history.last().map_or(Lsn(0), |record| record.lsn);
        let mut primary = Primary {
            pid: spec.pid,
            epoch: spec.epoch,
            kind: spec.module.kind(),
            guest,
            log: PrimaryLog::new(
                Pid(spec.pid),
                Epoch(spec.epoch),
                Lsn(0),
                spec.released_oseq,
                primary_config(),
            ),
            unpaired: spec.unpaired,
            history: Vec::new(),
            released_oseq: spec.released_oseq,
            backup: None,
            pairing_lsn: Lsn(0),
            caught_up: false,
            waiting: Vec::new(),
            window: summary.window,
            stdin_offset: summary.stdin_offset,
            stdin_closed: summary.stdin_closed,
            needs_run: true,
            exit_code: None,
            exit_sent: false,
            last_sent: Instant::now(),
            last_heard: Instant::now(),
            replayed: last_lsn.0,
            status,
            pair_out,
            coordinator_out,
        };
        primary.replay(spec.history, &summary.unread)?;
        primary.set_backup(spec.backup);
        Ok(primary)
    }

    /// Replays the log: a command runs until it needs live input; a reactor
    /// gets its logged handler calls again, then the calls still owed for
    /// stdin that arrived but was not handled.
    fn replay(&mut self, history: Vec<Record>, unread: &[Bytes]) -> Result<(), String> {
        // The replayed log is this primary's log too: logged again so that a
        // new backup receives it from lsn 1.
        let handler_calls: Vec<Bytes> = history
            .iter()
            .filter(|record| record.kind == RecordKind::HandlerCall)
            .map(|record| record.payload.clone())
            .collect();
        for record in history {
            self.log_record(record)?;
        }
        if self.kind == ModuleKind::Reactor {
            for payload in handler_calls {
                let outcome = self.guest.call_handler(&payload);
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
                PRIMARY_TICK
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
            PrimaryEvent::Pair(messages) => {
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
            Ok(RunOutcome::OutOfFuel) => self.needs_run = true,
            Ok(RunOutcome::Exited(code)) => self.finish(code, format!("exited with code {code}")),
            Ok(RunOutcome::Trapped(trap)) => self.finish(134, format!("trapped: {trap}")),
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
        self.history.push(record);
        Ok(())
    }

    /// A new backup: a fresh core that ships the whole log from lsn 1 to it;
    /// held outputs are handed over again, released outputs stay released.
    fn set_backup(&mut self, backup: Option<u64>) {
        self.backup = backup;
        if self.unpaired {
            return;
        }
        let held: Vec<Output> = self.log.held().cloned().collect();
        let mut log = PrimaryLog::new(
            Pid(self.pid),
            Epoch(self.epoch),
            Lsn(0),
            self.released_oseq,
            primary_config(),
        );
        for record in &self.history {
            // Limits are far above a process's log here (see primary_config).
            if let Err(error) = log.log(record.kind, record.payload.clone(), record.fuel_consumed) {
                tracing::error!(pid = self.pid, %error, "cannot re-log for a new backup");
            }
        }
        for output in held {
            if let Err(error) = log.output(output.stream, output.bytes) {
                tracing::error!(pid = self.pid, %error, "cannot re-hold an output");
            }
        }
        self.log = log;
        self.pairing_lsn = self.log.logged();
        self.caught_up = false;
        self.last_heard = Instant::now();
        self.log.flush();
    }

    fn periodic(&mut self) {
        if self.unpaired {
            return;
        }
        self.log.flush();
        self.log.tick();
        if self.last_sent.elapsed() >= HEARTBEAT_INTERVAL {
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
        for command in self.log.take_commands() {
            match command {
                Command::Send(message) => {
                    if let Some(to) = self.backup {
                        self.last_sent = Instant::now();
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
        let caught_up = self.backup.is_some() && self.log.acknowledged() >= self.pairing_lsn;
        if caught_up && !self.caught_up {
            self.caught_up = true;
            let detail = format!(
                "backup on node {} caught up at lsn {}",
                self.backup.unwrap_or_default(),
                self.pairing_lsn.0
            );
            let _ = self.coordinator_out.send(Outgoing::Note {
                kind: "caught_up",
                detail,
            });
        }
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
        let backup_state = match (self.backup, self.caught_up) {
            (None, _) => "none",
            (Some(_), false) => "catching_up",
            (Some(_), true) => "caught_up",
        };
        let logged = self.history.last().map_or(0, |record| record.lsn.0);
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
        };
        *self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = status;
    }

    fn maybe_exit(&mut self) {
        let Some(code) = self.exit_code else { return };
        let all_released = self.unpaired || self.log.held_outputs() == 0;
        if all_released && !self.exit_sent {
            self.exit_sent = true;
            let _ = self.coordinator_out.send(Outgoing::Exit(code));
        }
    }
}
