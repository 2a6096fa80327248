//! The primary's side of the logging channel: numbering records and outputs,
//! streaming records to the backup, and the output rule.

use crate::message::{Command, PairMessage};
use crate::record::{Epoch, Lsn, Oseq, Output, Pid, Record, RecordKind, Stream};
use crate::PairError;
use bytes::Bytes;
use std::collections::VecDeque;

/// Tuning of a primary's logging channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// Records per `Append`, at most.
    pub append_records_max: usize,
    /// Payload bytes per `Append`, at most (a single larger record still goes
    /// alone).
    pub append_bytes_max: usize,
    /// Records logged but not yet acknowledged, at most: beyond it `log`
    /// refuses with `Backlogged` and the host pauses the guest.
    pub unacknowledged_records_max: usize,
    /// Outputs held for acknowledgement, at most (likewise).
    pub held_outputs_max: usize,
    /// Ticks without an acknowledgement of outstanding records after which
    /// they are sent again.
    pub retransmit_ticks: u32,
}

impl Default for PrimaryConfig {
    fn default() -> PrimaryConfig {
        PrimaryConfig {
            append_records_max: 256,
            append_bytes_max: 1024 * 1024,
            unacknowledged_records_max: 65_536,
            held_outputs_max: 65_536,
            retransmit_ticks: 10,
        }
    }
}

/// The primary of one pid in one epoch (sans-IO: the shell sends and releases
/// what [`PrimaryLog::take_commands`] returns).
#[derive(Debug)]
pub struct PrimaryLog {
    pid: Pid,
    epoch: Epoch,
    config: PrimaryConfig,
    next_lsn: Lsn,
    next_oseq: Oseq,
    /// Highest lsn the backup acknowledged as durable.
    acknowledged: Lsn,
    /// Highest lsn handed to the shell in an `Append`.
    sent: Lsn,
    /// Records after `acknowledged`, oldest first (kept to send again).
    unacknowledged: VecDeque<Record>,
    /// Outputs not yet released, by oseq.
    held: VecDeque<Output>,
    ticks_without_progress: u32,
    /// Set once a newer epoch is known: the primary is finished.
    fenced_by: Option<Epoch>,
    commands: Vec<Command>,
}

impl PrimaryLog {
    /// A primary that continues a log whose records up to `last_lsn` and
    /// outputs up to `last_oseq` exist already (0 and 0 at birth; after a
    /// promotion, what the replay reached). Those records are durable at the
    /// (former) backup, which is where they came from, so they count as
    /// acknowledged.
    pub fn new(
        pid: Pid,
        epoch: Epoch,
        last_lsn: Lsn,
        last_oseq: Oseq,
        config: PrimaryConfig,
    ) -> PrimaryLog {
        assert!(config.append_records_max > 0, "appends must carry records");
        assert!(config.retransmit_ticks > 0, "retransmission needs a period");
        PrimaryLog {
            pid,
            epoch,
            config,
            next_lsn: last_lsn.next(),
            next_oseq: Oseq(last_oseq.0 + 1),
            acknowledged: last_lsn,
            sent: last_lsn,
            unacknowledged: VecDeque::new(),
            held: VecDeque::new(),
            ticks_without_progress: 0,
            fenced_by: None,
            commands: Vec::new(),
        }
    }

    /// The epoch this primary serves.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The last lsn logged (0 if none).
    pub fn logged(&self) -> Lsn {
        Lsn(self.next_lsn.0 - 1)
    }

    /// The highest lsn the backup acknowledged.
    pub fn acknowledged(&self) -> Lsn {
        self.acknowledged
    }

    /// The newer epoch that ended this primary, if any.
    pub fn fenced_by(&self) -> Option<Epoch> {
        self.fenced_by
    }

    /// Outputs waiting for an acknowledgement.
    pub fn held_outputs(&self) -> usize {
        self.held.len()
    }

    /// Logs an observation; the guest may use the value at once (the primary
    /// does not wait for the backup), but outputs that follow are held until
    /// the backup has it.
    pub fn log(
        &mut self,
        kind: RecordKind,
        payload: Bytes,
        fuel_consumed: u64,
    ) -> Result<Lsn, PairError> {
        self.check_live()?;
        if self.unacknowledged.len() >= self.config.unacknowledged_records_max {
            return Err(PairError::Backlogged);
        }
        let lsn = self.next_lsn;
        self.next_lsn = lsn.next();
        self.unacknowledged.push_back(Record {
            lsn,
            epoch: self.epoch,
            kind,
            payload,
            fuel_consumed,
        });
        Ok(lsn)
    }

    /// Numbers bytes the guest wrote; they are released once the backup
    /// acknowledged every record logged before them.
    pub fn output(&mut self, stream: Stream, bytes: Bytes) -> Result<Oseq, PairError> {
        self.check_live()?;
        if self.held.len() >= self.config.held_outputs_max {
            return Err(PairError::Backlogged);
        }
        let oseq = self.next_oseq;
        self.next_oseq = Oseq(oseq.0 + 1);
        self.held.push_back(Output {
            oseq,
            stream,
            bytes,
            depends_on: self.logged(),
        });
        self.release_ready();
        Ok(oseq)
    }

    /// Hands every record not yet sent to the shell, in bounded appends.
    pub fn flush(&mut self) {
        if self.fenced_by.is_some() {
            return;
        }
        let unsent = self
            .unacknowledged
            .iter()
            .filter(|record| record.lsn > self.sent);
        let mut batch: Vec<Record> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut batches = Vec::new();
        for record in unsent {
            let full = batch.len() >= self.config.append_records_max
                || (!batch.is_empty()
                    && batch_bytes + record.payload.len() > self.config.append_bytes_max);
            if full {
                batches.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += record.payload.len();
            batch.push(record.clone());
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        for records in batches {
            // Batches are non-empty by construction.
            self.sent = records.last().expect("a non-empty batch").lsn;
            self.commands.push(Command::Send(PairMessage::Append {
                pid: self.pid,
                epoch: self.epoch,
                records,
            }));
        }
    }

    /// Handles a message from the backup.
    pub fn handle(&mut self, message: PairMessage) {
        if message.pid() != self.pid || self.fenced_by.is_some() {
            return;
        }
        match message {
            PairMessage::Ack { epoch, durable, .. } if epoch == self.epoch => {
                self.handle_ack(durable)
            }
            PairMessage::Resend { epoch, from, .. } if epoch == self.epoch => {
                // Send again from `from` (never from before what is acknowledged).
                let from = from.max(self.acknowledged.next());
                self.sent = Lsn(from.0 - 1).min(self.sent);
                self.flush();
            }
            PairMessage::Fenced { epoch, .. } if epoch > self.epoch => {
                self.fenced_by = Some(epoch);
                self.held.clear();
                self.unacknowledged.clear();
                self.commands.push(Command::Stop { epoch });
            }
            // Answers to another epoch, or a message only a backup handles.
            _ => {}
        }
    }

    fn handle_ack(&mut self, durable: Lsn) {
        if durable <= self.acknowledged {
            return; // late or duplicated
        }
        // A backup cannot hold records this primary never logged.
        let durable = durable.min(self.logged());
        self.acknowledged = durable;
        self.sent = self.sent.max(durable);
        while self
            .unacknowledged
            .front()
            .is_some_and(|record| record.lsn <= durable)
        {
            self.unacknowledged.pop_front();
        }
        self.ticks_without_progress = 0;
        self.release_ready();
    }

    /// Releases held outputs, in oseq order, up to the first that still waits.
    fn release_ready(&mut self) {
        let mut ready = Vec::new();
        while self
            .held
            .front()
            .is_some_and(|output| output.depends_on <= self.acknowledged)
        {
            // Checked just above.
            ready.push(self.held.pop_front().expect("a held output"));
        }
        if !ready.is_empty() {
            self.commands.push(Command::Release(ready));
        }
    }

    /// A clock tick: records outstanding for too long are sent again.
    pub fn tick(&mut self) {
        if self.fenced_by.is_some() || self.unacknowledged.is_empty() {
            self.ticks_without_progress = 0;
            return;
        }
        self.ticks_without_progress += 1;
        if self.ticks_without_progress >= self.config.retransmit_ticks {
            self.ticks_without_progress = 0;
            self.sent = self.acknowledged;
            self.flush();
        }
    }

    /// Tells the backup this primary is alive (the shell calls it when it has
    /// sent nothing for a while); the answer acknowledges or asks for records.
    pub fn heartbeat(&mut self) {
        if self.fenced_by.is_some() {
            return;
        }
        self.commands.push(Command::Send(PairMessage::Heartbeat {
            pid: self.pid,
            epoch: self.epoch,
            logged: self.logged(),
        }));
    }

    /// Outputs held for the backup's acknowledgement, oldest first.
    pub fn held(&self) -> impl Iterator<Item = &Output> {
        self.held.iter()
    }

    /// The commands produced so far, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    fn check_live(&self) -> Result<(), PairError> {
        match self.fenced_by {
            Some(epoch) => Err(PairError::Fenced { epoch }),
            None => Ok(()),
        }
    }
}
