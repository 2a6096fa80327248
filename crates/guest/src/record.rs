//! Inputs and outputs of a guest: the [`HostInputs`] source, the [`Recorder`] (primary)
//! and [`Replayer`] (backup) that log every input as a pair [`Record`].

use std::collections::VecDeque;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::RngCore;
use understudy_pair::{Epoch, Lsn, Record, RecordKind};

use crate::checkpoint::StdinBacklog;
use crate::GuestError;

/// WASI `CLOCKID_REALTIME`.
pub const CLOCK_REALTIME: u32 = 0;
/// WASI `CLOCKID_MONOTONIC`.
pub const CLOCK_MONOTONIC: u32 = 1;

/// The answer of a stdin read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StdinRead {
    /// Bytes read (never empty, at most the requested count).
    Data(Bytes),
    /// End of input: the guest's read returns 0.
    Eof,
    /// No input yet: the guest parks in `fd_read` until input arrives.
    Pending,
}

/// The real source of everything a guest observes from outside. Only a primary
/// asks it (through a [`Recorder`]); a backup replays what the primary logged.
pub trait HostInputs: Send {
    /// Bytes for a stdin read of at most `max` bytes, end of input, or pending.
    fn read_stdin(&mut self, max: usize) -> StdinRead;
    /// The reading of WASI clock `clock_id`, in nanoseconds.
    fn clock(&mut self, clock_id: u32) -> u64;
    /// `length` random bytes.
    fn random(&mut self, length: usize) -> Bytes;
    /// Stdin that arrived and was not read yet, for a checkpoint. The default is
    /// for a source that keeps no stdin queue of its own.
    fn stdin_backlog(&self) -> StdinBacklog {
        StdinBacklog::default()
    }
    /// Puts back the stdin a checkpoint kept, ahead of anything queued since (a
    /// restored guest). The default refuses a non-empty backlog: a source without
    /// a queue cannot hold it, and dropping it would lose input.
    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        refuse_backlog(backlog)
    }
}

fn refuse_backlog(backlog: StdinBacklog) -> Result<(), GuestError> {
    if backlog == StdinBacklog::default() {
        return Ok(());
    }
    Err(GuestError::RestoreMismatch(format!(
        "the input source cannot hold {} restored stdin bytes (closed: {})",
        backlog.bytes.len(),
        backlog.closed
    )))
}

/// How the host obtains inputs: either recording them from a live source or
/// replaying them from a log. Both check nothing silently differs.
pub trait InputLog: Send {
    /// A stdin read of at most `max` bytes.
    fn read_stdin(&mut self, max: usize, fuel_consumed: u64) -> Result<StdinRead, GuestError>;
    /// A reading of clock `clock_id` in nanoseconds (before the monotonic offset).
    fn clock(&mut self, clock_id: u32, fuel_consumed: u64) -> Result<u64, GuestError>;
    /// `length` random bytes.
    fn random(&mut self, length: usize, fuel_consumed: u64) -> Result<Bytes, GuestError>;
    /// Nanoseconds until clock `clock_id` reaches `deadline_nanos` (before the
    /// monotonic offset), 0 once it has: whether a sleep still waits. Not an
    /// observation (nothing is logged): the primary asks its live clock, a
    /// replay answers 0 (the readings that ended the sleep are in the log).
    fn sleep_remaining(&mut self, clock_id: u32, deadline_nanos: u64) -> u64;
    /// A reactor input record: the primary logs `record`; a backup checks it
    /// against its log.
    fn handler_input(&mut self, record: &[u8], fuel_consumed: u64) -> Result<(), GuestError>;
    /// The host killed a runaway guest at fuel position `fuel_consumed`: the
    /// primary logs the kill with `reason`; a replay checks its log has the kill
    /// next. Returns the reason as logged.
    fn kill(&mut self, reason: &str, fuel_consumed: u64) -> Result<String, GuestError>;
    /// A replay whose next record is a logged kill: the fuel position where
    /// the primary's guest was killed, so the replay stops it there. `None`
    /// for a primary, and while other records come first.
    fn next_kill_fuel(&self) -> Option<u64> {
        None
    }
    /// Whether the guest is replaying logged inputs (then the log, not the
    /// host's clock, decides whether it is killed).
    fn is_replaying(&self) -> bool {
        false
    }
    /// Lsn of the last input logged or replayed (0: none).
    fn last_lsn(&self) -> Lsn;
    /// Stdin arrived and not yet read (a checkpoint keeps it); default: none.
    fn stdin_backlog(&self) -> StdinBacklog {
        StdinBacklog::default()
    }
    /// Puts back a checkpoint's stdin backlog; the default refuses a non-empty
    /// one (see [`HostInputs::restore_stdin_backlog`]).
    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        refuse_backlog(backlog)
    }
}

/// The primary's input log: asks the real source and appends a [`Record`] of its
/// epoch.
#[derive(Debug)]
pub struct Recorder<I: HostInputs> {
    source: I,
    epoch: Epoch,
    records: Vec<Record>,
    last_lsn: Lsn,
}

impl<I: HostInputs> Recorder<I> {
    /// A recorder over `source` for the primary of `epoch`, with an empty log.
    pub fn new(source: I, epoch: Epoch) -> Self {
        Self::continuing(source, epoch, Lsn(0))
    }

    /// A recorder whose first record follows `last_lsn` (a promoted backup going
    /// live after replaying the log up to `last_lsn`).
    pub fn continuing(source: I, epoch: Epoch, last_lsn: Lsn) -> Self {
        Self {
            source,
            epoch,
            records: Vec::new(),
            last_lsn,
        }
    }

    /// The records logged and not yet taken, in lsn order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Takes the records logged so far (e.g. to hand them to the pair protocol);
    /// numbering continues after them.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// The live source (e.g. to queue stdin).
    pub fn source_mut(&mut self) -> &mut I {
        &mut self.source
    }

    /// Logs something the host observed on the guest's behalf rather than an
    /// answer to a guest call (a `StdinArrived` record: bytes and idempotency
    /// key of a client's stdin write, logged when the write arrives so it can
    /// be acknowledged before the guest reads it). A replay skips such records
    /// (see [`Replayer`]); the shell rebuilds its own state from them.
    pub fn note(&mut self, kind: RecordKind, payload: Bytes) -> Lsn {
        self.append(kind, payload, 0);
        self.last_lsn
    }

    fn append(&mut self, kind: RecordKind, payload: Bytes, fuel_consumed: u64) {
        let lsn = self.last_lsn.next();
        self.last_lsn = lsn;
        self.records.push(Record {
            lsn,
            epoch: self.epoch,
            kind,
            payload,
            fuel_consumed,
        });
    }
}

impl<I: HostInputs> InputLog for Recorder<I> {
    fn read_stdin(&mut self, max: usize, fuel_consumed: u64) -> Result<StdinRead, GuestError> {
        let read = self.source.read_stdin(max);
        match &read {
            StdinRead::Data(bytes) => {
                assert!(
                    !bytes.is_empty() && bytes.len() <= max,
                    "source returned a bad read"
                );
                self.append(RecordKind::StdinData, bytes.clone(), fuel_consumed);
            }
            StdinRead::Eof => self.append(RecordKind::StdinEof, Bytes::new(), fuel_consumed),
            // Not an observation: the guest stays parked and asks again later.
            StdinRead::Pending => {}
        }
        Ok(read)
    }

    fn clock(&mut self, clock_id: u32, fuel_consumed: u64) -> Result<u64, GuestError> {
        let nanos = self.source.clock(clock_id);
        let payload = Bytes::copy_from_slice(&nanos.to_le_bytes());
        self.append(RecordKind::Clock { clock_id }, payload, fuel_consumed);
        Ok(nanos)
    }

    fn random(&mut self, length: usize, fuel_consumed: u64) -> Result<Bytes, GuestError> {
        let bytes = self.source.random(length);
        assert!(
            bytes.len() == length,
            "source returned {} random bytes, not {length}",
            bytes.len()
        );
        self.append(RecordKind::Random, bytes.clone(), fuel_consumed);
        Ok(bytes)
    }

    fn sleep_remaining(&mut self, clock_id: u32, deadline_nanos: u64) -> u64 {
        deadline_nanos.saturating_sub(self.source.clock(clock_id))
    }

    fn handler_input(&mut self, record: &[u8], fuel_consumed: u64) -> Result<(), GuestError> {
        let payload = Bytes::copy_from_slice(record);
        self.append(RecordKind::HandlerCall, payload, fuel_consumed);
        Ok(())
    }

    fn kill(&mut self, reason: &str, fuel_consumed: u64) -> Result<String, GuestError> {
        let payload = Bytes::copy_from_slice(reason.as_bytes());
        self.append(RecordKind::Kill, payload, fuel_consumed);
        Ok(reason.to_string())
    }

    fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    fn stdin_backlog(&self) -> StdinBacklog {
        self.source.stdin_backlog()
    }

    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        self.source.restore_stdin_backlog(backlog)
    }
}

/// The backup's input log: returns the logged records in order and reports a
/// divergence as soon as the guest asks for something else.
#[derive(Debug)]
pub struct Replayer {
    records: VecDeque<Record>,
    last_lsn: Lsn,
}

impl Replayer {
    /// A replayer of `records` (lsns must follow each other, from 1).
    pub fn new(records: Vec<Record>) -> Self {
        Self::after(Lsn(0), records)
    }

    /// A replayer of `records` that follow `last_lsn` (a guest restored from a
    /// checkpoint taken at `last_lsn` replays the records after it).
    pub fn after(last_lsn: Lsn, records: Vec<Record>) -> Self {
        Self {
            records: records.into(),
            last_lsn,
        }
    }

    /// Records not replayed yet (host notes such as `StdinArrived`, which no
    /// guest call consumes, do not count).
    pub fn remaining(&self) -> usize {
        self.records
            .iter()
            .filter(|record| record.kind != RecordKind::StdinArrived)
            .count()
    }

    /// Passes the `StdinArrived` notes at the front of the log.
    fn skip_notes(&mut self) -> Result<(), GuestError> {
        while self
            .records
            .front()
            .is_some_and(|record| record.kind == RecordKind::StdinArrived)
        {
            let note = self.records.pop_front().expect("checked just above");
            if note.lsn != self.last_lsn.next() {
                return Err(GuestError::Divergence {
                    lsn: note.lsn.0,
                    detail: format!("expected lsn {}", self.last_lsn.next().0),
                });
            }
            self.last_lsn = note.lsn;
        }
        Ok(())
    }

    /// The next record, checked against what the guest asks for. `StdinArrived`
    /// records are notes of the host, not answers to guest calls: skipped.
    fn next(&mut self, wanted: RecordKind, fuel_consumed: u64) -> Result<Record, GuestError> {
        self.skip_notes()?;
        let Some(record) = self.records.pop_front() else {
            return Err(GuestError::LogExhausted {
                wanted,
                after_lsn: self.last_lsn.0,
            });
        };
        let diverged = |detail: String| GuestError::Divergence {
            lsn: record.lsn.0,
            detail,
        };
        if record.lsn != self.last_lsn.next() {
            return Err(diverged(format!("expected lsn {}", self.last_lsn.next().0)));
        }
        let kind_matches = match (wanted, record.kind) {
            // A stdin read may have been answered with data or end of input.
            (RecordKind::StdinData, RecordKind::StdinData | RecordKind::StdinEof) => true,
            (wanted, logged) => wanted == logged,
        };
        if !kind_matches {
            return Err(diverged(format!(
                "guest asked for {wanted:?}, log has {:?}",
                record.kind
            )));
        }
        if record.fuel_consumed != fuel_consumed {
            return Err(diverged(format!(
                "guest asked at fuel {fuel_consumed}, log has fuel {}",
                record.fuel_consumed
            )));
        }
        self.last_lsn = record.lsn;
        Ok(record)
    }
}

impl InputLog for Replayer {
    /// A replay never waits: the readings that ended the sleep come next.
    fn sleep_remaining(&mut self, _clock_id: u32, _deadline_nanos: u64) -> u64 {
        0
    }

    fn read_stdin(&mut self, max: usize, fuel_consumed: u64) -> Result<StdinRead, GuestError> {
        let record = self.next(RecordKind::StdinData, fuel_consumed)?;
        if record.kind == RecordKind::StdinEof {
            return Ok(StdinRead::Eof);
        }
        if record.payload.is_empty() || record.payload.len() > max {
            let detail = format!(
                "read of at most {max} bytes, log has {}",
                record.payload.len()
            );
            return Err(GuestError::Divergence {
                lsn: record.lsn.0,
                detail,
            });
        }
        Ok(StdinRead::Data(record.payload))
    }

    fn clock(&mut self, clock_id: u32, fuel_consumed: u64) -> Result<u64, GuestError> {
        let record = self.next(RecordKind::Clock { clock_id }, fuel_consumed)?;
        let nanos: [u8; 8] = record.payload.as_ref().try_into().map_err(|_| {
            let detail = format!("clock payload of {} bytes", record.payload.len());
            GuestError::Divergence {
                lsn: record.lsn.0,
                detail,
            }
        })?;
        Ok(u64::from_le_bytes(nanos))
    }

    fn random(&mut self, length: usize, fuel_consumed: u64) -> Result<Bytes, GuestError> {
        let record = self.next(RecordKind::Random, fuel_consumed)?;
        if record.payload.len() != length {
            let detail = format!(
                "{length} random bytes wanted, log has {}",
                record.payload.len()
            );
            return Err(GuestError::Divergence {
                lsn: record.lsn.0,
                detail,
            });
        }
        Ok(record.payload)
    }

    fn handler_input(&mut self, record: &[u8], fuel_consumed: u64) -> Result<(), GuestError> {
        let logged = self.next(RecordKind::HandlerCall, fuel_consumed)?;
        if logged.payload.as_ref() != record {
            let detail = "reactor input differs from the log".to_string();
            return Err(GuestError::Divergence {
                lsn: logged.lsn.0,
                detail,
            });
        }
        Ok(())
    }

    fn kill(&mut self, _reason: &str, fuel_consumed: u64) -> Result<String, GuestError> {
        let logged = self.next(RecordKind::Kill, fuel_consumed)?;
        Ok(String::from_utf8_lossy(&logged.payload).into_owned())
    }

    fn next_kill_fuel(&self) -> Option<u64> {
        let record = self
            .records
            .iter()
            .find(|record| record.kind != RecordKind::StdinArrived)?;
        (record.kind == RecordKind::Kill).then_some(record.fuel_consumed)
    }

    fn is_replaying(&self) -> bool {
        true
    }

    fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }
}

/// A promoted backup's input log: replays the logged records, then — once they
/// are exhausted — records new inputs from a live source in the new epoch, with
/// lsns continuing after the last replayed one (instead of
/// [`GuestError::LogExhausted`]).
#[derive(Debug)]
pub struct ReplayThenRecord<I: HostInputs> {
    replayer: Replayer,
    recorder: Recorder<I>,
}

impl<I: HostInputs> ReplayThenRecord<I> {
    /// Replays `records` (lsns from 1, without gaps), then records from `source`
    /// as the primary of `epoch`.
    pub fn new(records: Vec<Record>, source: I, epoch: Epoch) -> Self {
        Self::after(Lsn(0), records, source, epoch)
    }

    /// Replays `records`, which follow `checkpoint_lsn` (a guest restored from a
    /// checkpoint taken there), then records from `source` as the primary of
    /// `epoch`.
    pub fn after(checkpoint_lsn: Lsn, records: Vec<Record>, source: I, epoch: Epoch) -> Self {
        let last_lsn = records.last().map_or(checkpoint_lsn, |record| record.lsn);
        Self {
            replayer: Replayer::after(checkpoint_lsn, records),
            recorder: Recorder::continuing(source, epoch, last_lsn),
        }
    }

    /// Whether every logged record was replayed (inputs now come from the source).
    pub fn is_live(&self) -> bool {
        self.replayer.remaining() == 0
    }

    /// The recorder of live inputs (its records, its source).
    pub fn recorder_mut(&mut self) -> &mut Recorder<I> {
        &mut self.recorder
    }

    /// The log to use for the next input: the replayer until it is exhausted.
    fn current(&mut self) -> &mut dyn InputLog {
        if self.is_live() {
            &mut self.recorder
        } else {
            &mut self.replayer
        }
    }
}

impl<I: HostInputs> InputLog for ReplayThenRecord<I> {
    fn read_stdin(&mut self, max: usize, fuel_consumed: u64) -> Result<StdinRead, GuestError> {
        self.current().read_stdin(max, fuel_consumed)
    }

    fn clock(&mut self, clock_id: u32, fuel_consumed: u64) -> Result<u64, GuestError> {
        self.current().clock(clock_id, fuel_consumed)
    }

    fn sleep_remaining(&mut self, clock_id: u32, deadline_nanos: u64) -> u64 {
        self.current().sleep_remaining(clock_id, deadline_nanos)
    }

    fn random(&mut self, length: usize, fuel_consumed: u64) -> Result<Bytes, GuestError> {
        self.current().random(length, fuel_consumed)
    }

    fn handler_input(&mut self, record: &[u8], fuel_consumed: u64) -> Result<(), GuestError> {
        self.current().handler_input(record, fuel_consumed)
    }

    fn kill(&mut self, reason: &str, fuel_consumed: u64) -> Result<String, GuestError> {
        self.current().kill(reason, fuel_consumed)
    }

    fn next_kill_fuel(&self) -> Option<u64> {
        self.replayer.next_kill_fuel()
    }

    fn is_replaying(&self) -> bool {
        !self.is_live()
    }

    fn last_lsn(&self) -> Lsn {
        // The recorder starts at the replay log's end, so it is never behind.
        if self.replayer.remaining() == 0 {
            self.recorder.last_lsn()
        } else {
            self.replayer.last_lsn()
        }
    }

    /// The live source's backlog: stdin read during the replay came from the log.
    fn stdin_backlog(&self) -> StdinBacklog {
        self.recorder.stdin_backlog()
    }

    /// Hands the backlog to the live source. The caller must not also queue
    /// bytes that records replayed after the checkpoint already read.
    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        self.recorder.restore_stdin_backlog(backlog)
    }
}

/// The live source of a primary: queued stdin, the system clocks and the
/// operating system's random generator.
#[derive(Debug)]
pub struct SystemInputs {
    stdin: VecDeque<Bytes>,
    stdin_closed: bool,
    started: Instant,
    /// Added to the monotonic clock: a new primary starts it at the last
    /// reading its log holds, so it never goes backwards across a failover.
    monotonic_floor_nanos: u64,
}

impl Default for SystemInputs {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemInputs {
    /// A source with no stdin queued yet.
    pub fn new() -> Self {
        Self::with_monotonic_floor(0)
    }

    /// A source whose monotonic clock starts at `monotonic_floor_nanos` (the
    /// last monotonic reading of the log a new primary continues).
    pub fn with_monotonic_floor(monotonic_floor_nanos: u64) -> Self {
        Self {
            stdin: VecDeque::new(),
            stdin_closed: false,
            started: Instant::now(),
            monotonic_floor_nanos,
        }
    }

    /// Queues bytes for stdin (ignored once closed; empty chunks are dropped).
    pub fn push_stdin(&mut self, bytes: Bytes) {
        if !self.stdin_closed && !bytes.is_empty() {
            self.stdin.push_back(bytes);
        }
    }

    /// Ends stdin: once the queue is drained, reads return end of input.
    pub fn close_stdin(&mut self) {
        self.stdin_closed = true;
    }

    /// Sets the whole stdin queue and whether stdin is closed. For a shell that
    /// keeps its own account of unread stdin: a restore puts the checkpoint's
    /// backlog back (see [`HostInputs::restore_stdin_backlog`]), but records
    /// replayed after the checkpoint may have read part of it, so the shell
    /// replaces the queue with what its log says is still unread.
    pub fn replace_stdin(&mut self, unread: impl IntoIterator<Item = Bytes>, closed: bool) {
        self.stdin = unread
            .into_iter()
            .filter(|bytes| !bytes.is_empty())
            .collect();
        self.stdin_closed = closed;
    }
}

impl HostInputs for SystemInputs {
    fn read_stdin(&mut self, max: usize) -> StdinRead {
        let Some(front) = self.stdin.front_mut() else {
            return if self.stdin_closed {
                StdinRead::Eof
            } else {
                StdinRead::Pending
            };
        };
        if front.len() <= max {
            // front_mut returned Some just above, so pop_front does too.
            return StdinRead::Data(self.stdin.pop_front().unwrap_or_default());
        }
        StdinRead::Data(front.split_to(max))
    }

    fn clock(&mut self, clock_id: u32) -> u64 {
        if clock_id == CLOCK_REALTIME {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            return u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
        }
        // Monotonic and CPU-time clocks: time since this source started,
        // above the floor.
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.monotonic_floor_nanos.saturating_add(elapsed)
    }

    fn random(&mut self, length: usize) -> Bytes {
        let mut bytes = vec![0; length];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Bytes::from(bytes)
    }

    fn stdin_backlog(&self) -> StdinBacklog {
        StdinBacklog {
            bytes: self
                .stdin
                .iter()
                .flat_map(|chunk| chunk.iter().copied())
                .collect(),
            closed: self.stdin_closed,
        }
    }

    fn restore_stdin_backlog(&mut self, backlog: StdinBacklog) -> Result<(), GuestError> {
        if !backlog.bytes.is_empty() {
            self.stdin.push_front(backlog.bytes);
        }
        self.stdin_closed |= backlog.closed;
        Ok(())
    }
}
