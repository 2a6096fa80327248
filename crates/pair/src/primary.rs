//! The primary's side of the logging channel: numbering records and outputs,
//! streaming records and checkpoints to the backup, the output rule, and
//! pairing with a new backup after the old one was lost.

use crate::message::{Command, PairMessage};
use crate::record::{Epoch, Lsn, Oseq, Output, Pid, Record, RecordKind, Stream};
use crate::PairError;
use bytes::Bytes;
use std::collections::VecDeque;
use understudy_types::limits::{PAIR_CHECKPOINT_BYTES_MAX, PAIR_CHECKPOINT_CHUNK_BYTES_MAX};

/// Tuning of a primary's logging channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrimaryConfig {
    /// Records per `Append`, at most.
    pub append_records_max: usize,
    /// Payload bytes per `Append`, at most (a single larger record still goes
    /// alone).
    pub append_bytes_max: usize,
    /// Records logged but not yet acknowledged by a backup, at most: beyond it
    /// `log` refuses with `Backlogged` and the host pauses the guest.
    pub unacknowledged_records_max: usize,
    /// Outputs held for acknowledgement, at most (likewise).
    pub held_outputs_max: usize,
    /// Ticks without an acknowledgement of outstanding records or checkpoint
    /// bytes after which they are sent again.
    pub retransmit_ticks: u32,
    /// Records kept since the newest acknowledged checkpoint (a new backup
    /// needs them), at most: beyond it `log` refuses with `Backlogged` until
    /// the shell takes a checkpoint and a backup acknowledges it.
    pub retained_records_max: usize,
    /// Bytes of checkpoint data per `Checkpoint` message (at most
    /// `PAIR_CHECKPOINT_CHUNK_BYTES_MAX`).
    pub checkpoint_chunk_bytes: usize,
    /// While a new backup catches up: bytes (checkpoint chunks and record
    /// payloads) sent per tick, on average, so that the state transfer does not
    /// starve the node's other traffic. A caught-up backup is not throttled.
    pub catch_up_bytes_per_tick: u64,
    /// Release outputs at once while no backup is caught up (after a
    /// promotion, or once the backup is lost) instead of holding them until
    /// one is: faster, but a crash in that window loses what readers saw.
    pub release_without_backup: bool,
    /// Test-only switches for deliberate bugs; all off by default.
    #[cfg(feature = "deliberate-bugs")]
    pub deliberate_bugs: DeliberateBugs,
}

/// Deliberate protocol bugs, compiled in only with the `deliberate-bugs`
/// feature, so that the simulator can prove it finds each one.
#[cfg(feature = "deliberate-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliberateBugs {
    /// Release every output at once, ignoring the output rule.
    pub release_before_acknowledgement: bool,
}

impl Default for PrimaryConfig {
    fn default() -> PrimaryConfig {
        PrimaryConfig {
            append_records_max: 256,
            append_bytes_max: 1024 * 1024,
            unacknowledged_records_max: 65_536,
            held_outputs_max: 65_536,
            retransmit_ticks: 10,
            retained_records_max: 1 << 20,
            checkpoint_chunk_bytes: PAIR_CHECKPOINT_CHUNK_BYTES_MAX as usize,
            catch_up_bytes_per_tick: 4 * 1024 * 1024,
            release_without_backup: false,
            #[cfg(feature = "deliberate-bugs")]
            deliberate_bugs: DeliberateBugs::default(),
        }
    }
}

/// Where the primary's backup stands (`GET /v1/processes/{pid}`'s
/// `backup_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackupState {
    /// No backup: after a promotion, or after the backup was lost.
    None,
    /// A backup was paired and has not yet acknowledged every record logged
    /// when it was paired (it receives the newest checkpoint first, then the
    /// records after it, throttled).
    CatchingUp,
    /// The backup acknowledged, as durable, every record logged when it was
    /// paired (directly or through a checkpoint that covers it); from then on
    /// it follows the live log. A backup present from birth is caught up.
    CaughtUp,
}

/// A checkpoint the shell took, as the core ships it.
#[derive(Clone, Debug)]
struct OutgoingCheckpoint {
    after_lsn: Lsn,
    data: Bytes,
    /// Bytes handed to the shell in `Checkpoint` chunks to the current backup.
    sent_bytes: u64,
    /// Bytes the current backup acknowledged as durable.
    acknowledged_bytes: u64,
}

impl OutgoingCheckpoint {
    fn new(after_lsn: Lsn, data: Bytes) -> OutgoingCheckpoint {
        OutgoingCheckpoint {
            after_lsn,
            data,
            sent_bytes: 0,
            acknowledged_bytes: 0,
        }
    }

    fn total_bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

/// The current backup, as the primary sees it.
#[derive(Clone, Debug)]
struct BackupLink {
    /// Records after this lsn may be sent; `None` while the backup first needs
    /// the checkpoint (it has nothing to append records to).
    records_after: Option<Lsn>,
    /// `logged()` when the backup was paired.
    catch_up_target: Lsn,
    caught_up: bool,
    /// Throttle while catching up: bytes that may still be sent (a message is
    /// sent while this is positive, so it can go below zero by one message).
    credit_bytes: i64,
}

/// The primary of one pid in one epoch (sans-IO: the shell sends and releases
/// what [`PrimaryLog::take_commands`] returns).
///
/// The shell must hand it only messages from the pid's current backup (a
/// lost backup's late acknowledgements must not count for its successor).
#[derive(Debug)]
pub struct PrimaryLog {
    pid: Pid,
    epoch: Epoch,
    config: PrimaryConfig,
    next_lsn: Lsn,
    next_oseq: Oseq,
    /// Highest lsn the current backup acknowledged as durable (after a
    /// promotion, until a new backup is paired: what this node held as the
    /// former backup).
    acknowledged: Lsn,
    /// Highest lsn handed to the shell in an `Append` to the current backup.
    sent: Lsn,
    /// Every record after `retained_after`, oldest first: a backup may still
    /// need them (to retransmit, or to catch a new backup up).
    retained: VecDeque<Record>,
    /// The newest acknowledged checkpoint's lsn, or the lsn the log started
    /// from when this primary was created.
    retained_after: Lsn,
    /// The newest checkpoint a backup acknowledged completely.
    checkpoint_acknowledged: Option<(Lsn, Bytes)>,
    /// A newer checkpoint being shipped (or waiting for a backup).
    checkpoint_outgoing: Option<OutgoingCheckpoint>,
    /// The newest checkpoint taken while `checkpoint_outgoing` was on its
    /// way: shipped next. A transfer under way is never restarted for a newer
    /// checkpoint, or a backup catching up while checkpoints keep coming
    /// would never finish one.
    checkpoint_next: Option<(Lsn, Bytes)>,
    backup: Option<BackupLink>,
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
    /// promotion, what the replay reached), with a caught-up backup. Those
    /// records are durable at the backup, so they count as acknowledged.
    pub fn new(
        pid: Pid,
        epoch: Epoch,
        last_lsn: Lsn,
        last_oseq: Oseq,
        config: PrimaryConfig,
    ) -> PrimaryLog {
        let mut primary = PrimaryLog::without_backup(pid, epoch, last_lsn, last_oseq, config);
        primary.backup = Some(BackupLink {
            records_after: Some(last_lsn),
            catch_up_target: last_lsn,
            caught_up: true,
            credit_bytes: 0,
        });
        primary
    }

    /// A promoted backup's primary, without a backup yet: it restored
    /// `checkpoint` (after its lsn; `None` if it had none) and replayed
    /// `records`, the contiguous records after it, from its own storage, and
    /// keeps both to catch a new backup up. Outputs numbered up to
    /// `last_oseq` were regenerated by the replay.
    pub fn promoted(
        pid: Pid,
        epoch: Epoch,
        checkpoint: Option<(Lsn, Bytes)>,
        records: Vec<Record>,
        last_oseq: Oseq,
        config: PrimaryConfig,
    ) -> PrimaryLog {
        let start = checkpoint.as_ref().map_or(Lsn(0), |(lsn, _)| *lsn);
        let mut primary = PrimaryLog::resumed(pid, epoch, start, records, last_oseq, config);
        primary.checkpoint_acknowledged = checkpoint;
        primary
    }

    /// A promoted backup's primary that restored a checkpoint after
    /// `checkpoint_lsn` whose bytes it does not keep (the shell holds the
    /// guest itself and can capture a self-contained checkpoint when one is
    /// needed), then replayed `records`, the contiguous records after it.
    /// Without checkpoint bytes, a new backup must be paired with
    /// [`Self::pair_with_new_backup_from`].
    pub fn resumed(
        pid: Pid,
        epoch: Epoch,
        checkpoint_lsn: Lsn,
        records: Vec<Record>,
        last_oseq: Oseq,
        config: PrimaryConfig,
    ) -> PrimaryLog {
        let contiguous = records
            .iter()
            .enumerate()
            .all(|(index, record)| record.lsn.0 == checkpoint_lsn.0 + 1 + index as u64);
        assert!(
            contiguous,
            "a promoted log continues its checkpoint without a gap"
        );
        let last_lsn = records.last().map_or(checkpoint_lsn, |record| record.lsn);
        let mut primary = PrimaryLog::without_backup(pid, epoch, last_lsn, last_oseq, config);
        primary.retained_after = checkpoint_lsn;
        primary.retained = records.into();
        primary
    }

    fn without_backup(
        pid: Pid,
        epoch: Epoch,
        last_lsn: Lsn,
        last_oseq: Oseq,
        config: PrimaryConfig,
    ) -> PrimaryLog {
        assert!(config.append_records_max > 0, "appends must carry records");
        assert!(config.retransmit_ticks > 0, "retransmission needs a period");
        assert!(
            config.checkpoint_chunk_bytes > 0
                && config.checkpoint_chunk_bytes as u64 <= PAIR_CHECKPOINT_CHUNK_BYTES_MAX,
            "checkpoint chunks must carry bytes, within the limit"
        );
        assert!(
            config.catch_up_bytes_per_tick > 0,
            "catching up needs bandwidth"
        );
        PrimaryLog {
            pid,
            epoch,
            config,
            next_lsn: last_lsn.next(),
            next_oseq: Oseq(last_oseq.0 + 1),
            acknowledged: last_lsn,
            sent: last_lsn,
            retained: VecDeque::new(),
            retained_after: last_lsn,
            checkpoint_acknowledged: None,
            checkpoint_outgoing: None,
            checkpoint_next: None,
            backup: None,
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

    /// The highest lsn the current backup acknowledged (0 right after pairing
    /// a new backup; see the field's note for a promoted primary).
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

    /// Where the backup stands.
    pub fn backup_state(&self) -> BackupState {
        match &self.backup {
            None => BackupState::None,
            Some(link) if link.caught_up => BackupState::CaughtUp,
            Some(_) => BackupState::CatchingUp,
        }
    }

    /// The lsn of the newest checkpoint a backup acknowledged (0 if none).
    pub fn checkpoint_lsn(&self) -> Lsn {
        self.checkpoint_acknowledged
            .as_ref()
            .map_or(Lsn(0), |(lsn, _)| *lsn)
    }

    /// The newest checkpoint taken but not yet acknowledged whole by the
    /// current backup (or waiting for one), by its lsn.
    pub fn checkpoint_in_flight(&self) -> Option<Lsn> {
        let next = self.checkpoint_next.as_ref().map(|(lsn, _)| *lsn);
        next.or(self
            .checkpoint_outgoing
            .as_ref()
            .map(|checkpoint| checkpoint.after_lsn))
    }

    /// Records kept for a backup (since the newest acknowledged checkpoint).
    pub fn retained_records(&self) -> usize {
        self.retained.len()
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
        let unacknowledged = self.logged().0 - self.acknowledged.max(self.retained_after).0;
        let backlogged = self.retained.len() >= self.config.retained_records_max
            || (self.backup.is_some()
                && unacknowledged >= self.config.unacknowledged_records_max as u64);
        if backlogged {
            return Err(PairError::Backlogged);
        }
        let lsn = self.next_lsn;
        self.next_lsn = lsn.next();
        self.retained.push_back(Record {
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

    /// The shell captured the guest's state after record `after_lsn` at a
    /// quiescent point (`data`, opaque here, must include the outputs not yet
    /// released). It is shipped to the backup on the next `flush`; once the
    /// backup acknowledges all of it, records up to `after_lsn` are dropped
    /// and it is what a new backup receives first.
    pub fn checkpoint(&mut self, after_lsn: Lsn, data: Bytes) -> Result<(), PairError> {
        self.check_checkpoint(after_lsn, &data, false)?;
        let transfer_started = self
            .checkpoint_outgoing
            .as_ref()
            .is_some_and(|checkpoint| checkpoint.sent_bytes > 0);
        if transfer_started {
            self.checkpoint_next = Some((after_lsn, data));
        } else {
            self.checkpoint_outgoing = Some(OutgoingCheckpoint::new(after_lsn, data));
            self.checkpoint_next = None;
        }
        Ok(())
    }

    /// Refuses a checkpoint that is empty, too large, or not after a record
    /// still kept and logged; it must follow the newest checkpoint (or, with
    /// `same_lsn_allowed`, be at its lsn: a self-contained replacement).
    fn check_checkpoint(
        &self,
        after_lsn: Lsn,
        data: &Bytes,
        same_lsn_allowed: bool,
    ) -> Result<(), PairError> {
        self.check_live()?;
        let newest = self
            .checkpoint_in_flight()
            .max(self.checkpoint_acknowledged.as_ref().map(|(lsn, _)| *lsn));
        let follows = |newest: Lsn| after_lsn > newest || (same_lsn_allowed && after_lsn == newest);
        let valid = !data.is_empty()
            && data.len() as u64 <= PAIR_CHECKPOINT_BYTES_MAX
            && after_lsn <= self.logged()
            && after_lsn >= self.retained_after
            && after_lsn.0 > 0
            && newest.is_none_or(follows);
        if valid {
            return Ok(());
        }
        Err(PairError::InvalidCheckpoint {
            after_lsn,
            bytes: data.len() as u64,
        })
    }

    /// The backup is gone (its node died or was removed): outputs are held
    /// until a new one catches up, unless `release_without_backup`.
    pub fn backup_lost(&mut self) {
        self.backup = None;
        self.ticks_without_progress = 0;
        if let Some(checkpoint) = &mut self.checkpoint_outgoing {
            checkpoint.sent_bytes = 0;
            checkpoint.acknowledged_bytes = 0;
        }
        self.release_ready();
    }

    /// Pairs with a new, empty backup (replacing any current one): it is sent
    /// the newest checkpoint, then the records after it, throttled to
    /// `catch_up_bytes_per_tick`, and is caught up once it acknowledged every
    /// record logged now. The shell must from now on hand over only that
    /// backup's messages.
    pub fn pair_with_new_backup(&mut self) -> Result<(), PairError> {
        self.check_live()?;
        // The newest checkpoint goes first: the fewest records follow it.
        if let Some((after_lsn, data)) = self.checkpoint_next.take() {
            self.checkpoint_outgoing = Some(OutgoingCheckpoint::new(after_lsn, data));
        }
        if self.checkpoint_outgoing.is_none() {
            if let Some((after_lsn, data)) = &self.checkpoint_acknowledged {
                self.checkpoint_outgoing = Some(OutgoingCheckpoint::new(*after_lsn, data.clone()));
            }
        }
        let records_after = match &mut self.checkpoint_outgoing {
            Some(checkpoint) => {
                checkpoint.sent_bytes = 0;
                checkpoint.acknowledged_bytes = 0;
                None
            }
            None if self.retained_after == Lsn(0) => Some(Lsn(0)),
            None => {
                return Err(PairError::NoCheckpoint {
                    missing_through: self.retained_after,
                })
            }
        };
        self.acknowledged = Lsn(0);
        self.sent = self.retained_after;
        self.ticks_without_progress = 0;
        self.backup = Some(BackupLink {
            records_after,
            catch_up_target: self.logged(),
            caught_up: false,
            credit_bytes: self.config.catch_up_bytes_per_tick as i64,
        });
        self.update_caught_up();
        Ok(())
    }

    /// Pairs with a new, empty backup starting from `data`, a self-contained
    /// checkpoint of the guest after `after_lsn` (the newest record, or any
    /// record not older than the newest checkpoint) that the shell captured
    /// for it: shells whose checkpoints are incremental use this, because
    /// the newest checkpoint they gave the core may only make sense on top
    /// of its predecessors. It replaces any checkpoint waiting or under way.
    pub fn pair_with_new_backup_from(
        &mut self,
        after_lsn: Lsn,
        data: Bytes,
    ) -> Result<(), PairError> {
        self.check_checkpoint(after_lsn, &data, true)?;
        self.checkpoint_next = None;
        self.checkpoint_outgoing = Some(OutgoingCheckpoint::new(after_lsn, data));
        self.pair_with_new_backup()
    }

    /// Hands to the shell every checkpoint chunk and record the backup has not
    /// been sent (records in bounded appends), within the throttle while it
    /// catches up.
    pub fn flush(&mut self) {
        if self.fenced_by.is_some() || self.backup.is_none() {
            return;
        }
        self.flush_checkpoint();
        self.flush_records();
    }

    fn flush_checkpoint(&mut self) {
        let chunk_bytes = self.config.checkpoint_chunk_bytes as u64;
        loop {
            let Some((after_lsn, data, start)) = self
                .checkpoint_outgoing
                .as_ref()
                .filter(|checkpoint| checkpoint.sent_bytes < checkpoint.total_bytes())
                .map(|checkpoint| {
                    (
                        checkpoint.after_lsn,
                        checkpoint.data.clone(),
                        checkpoint.sent_bytes,
                    )
                })
            else {
                return;
            };
            let total_bytes = data.len() as u64;
            let end = (start + chunk_bytes).min(total_bytes);
            if !self.take_credit(end - start) {
                return;
            }
            // Both ends are within the data (checked just above).
            self.commands.push(Command::Send(PairMessage::Checkpoint {
                pid: self.pid,
                epoch: self.epoch,
                after_lsn,
                offset: start,
                total_bytes,
                data: data.slice(start as usize..end as usize),
            }));
            if let Some(checkpoint) = &mut self.checkpoint_outgoing {
                checkpoint.sent_bytes = end;
            }
        }
    }

    fn flush_records(&mut self) {
        let Some(records_after) = self.backup.as_ref().and_then(|link| link.records_after) else {
            return;
        };
        let mut start = self.sent.max(records_after).max(self.retained_after);
        while let Some(records) = self.next_append(start) {
            let bytes: usize = records.iter().map(|record| record.payload.len()).sum();
            if !self.take_credit(bytes as u64) {
                return;
            }
            // Appends are non-empty by construction.
            start = records.last().expect("a non-empty append").lsn;
            self.sent = start;
            self.commands.push(Command::Send(PairMessage::Append {
                pid: self.pid,
                epoch: self.epoch,
                records,
            }));
        }
    }

    /// The records of one bounded append after `start`, if there are any.
    fn next_append(&self, start: Lsn) -> Option<Vec<Record>> {
        let first_index = start.0.checked_sub(self.retained_after.0)? as usize;
        let mut batch: Vec<Record> = Vec::new();
        let mut batch_bytes = 0usize;
        for record in self.retained.iter().skip(first_index) {
            let full = batch.len() >= self.config.append_records_max
                || (!batch.is_empty()
                    && batch_bytes + record.payload.len() > self.config.append_bytes_max);
            if full {
                break;
            }
            batch_bytes += record.payload.len();
            batch.push(record.clone());
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Spends throttle credit for `bytes` while the backup catches up; says
    /// whether they may be sent now.
    fn take_credit(&mut self, bytes: u64) -> bool {
        match &mut self.backup {
            Some(link) if !link.caught_up => {
                if link.credit_bytes <= 0 {
                    return false;
                }
                link.credit_bytes -= bytes.min(i64::MAX as u64) as i64;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Handles a message from the (current) backup.
    pub fn handle(&mut self, message: PairMessage) {
        if message.pid() != self.pid || self.fenced_by.is_some() || self.backup.is_none() {
            return;
        }
        match message {
            PairMessage::Ack { epoch, durable, .. } if epoch == self.epoch => {
                self.handle_ack(durable)
            }
            PairMessage::Resend { epoch, from, .. } if epoch == self.epoch => {
                // Send again from `from` (never from before what is
                // acknowledged or no longer kept).
                let from = from
                    .max(self.acknowledged.next())
                    .max(self.retained_after.next());
                self.sent = Lsn(from.0 - 1).min(self.sent);
                self.flush();
            }
            PairMessage::CheckpointAck {
                epoch,
                after_lsn,
                durable_bytes,
                ..
            } if epoch == self.epoch => self.handle_checkpoint_ack(after_lsn, durable_bytes),
            PairMessage::Fenced { epoch, .. } if epoch > self.epoch => {
                self.fenced_by = Some(epoch);
                self.held.clear();
                self.retained.clear();
                self.checkpoint_outgoing = None;
                self.checkpoint_next = None;
                self.checkpoint_acknowledged = None;
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
        self.ticks_without_progress = 0;
        self.update_caught_up();
        self.release_ready();
    }

    fn handle_checkpoint_ack(&mut self, after_lsn: Lsn, durable_bytes: u64) {
        let Some(checkpoint) = &mut self.checkpoint_outgoing else {
            return;
        };
        if checkpoint.after_lsn != after_lsn || durable_bytes <= checkpoint.acknowledged_bytes {
            return; // another checkpoint's, late, or no progress
        }
        // A backup cannot hold bytes this primary never had.
        checkpoint.acknowledged_bytes = durable_bytes.min(checkpoint.total_bytes());
        checkpoint.sent_bytes = checkpoint.sent_bytes.max(checkpoint.acknowledged_bytes);
        self.ticks_without_progress = 0;
        if checkpoint.acknowledged_bytes < checkpoint.total_bytes() {
            return;
        }
        // Complete and durable at the backup: it covers every record up to
        // `after_lsn`, which neither side needs any more.
        let data = checkpoint.data.clone();
        self.checkpoint_outgoing = self
            .checkpoint_next
            .take()
            .map(|(lsn, data)| OutgoingCheckpoint::new(lsn, data));
        self.checkpoint_acknowledged = Some((after_lsn, data));
        while self
            .retained
            .front()
            .is_some_and(|record| record.lsn <= after_lsn)
        {
            self.retained.pop_front();
        }
        self.retained_after = after_lsn;
        if let Some(link) = &mut self.backup {
            link.records_after = Some(
                link.records_after
                    .map_or(after_lsn, |lsn| lsn.max(after_lsn)),
            );
        }
        self.sent = self.sent.max(after_lsn);
        if after_lsn > self.acknowledged {
            self.acknowledged = after_lsn;
            self.update_caught_up();
            self.release_ready();
        }
    }

    #[cfg(feature = "deliberate-bugs")]
    fn release_before_acknowledgement_bug(&self) -> bool {
        self.config.deliberate_bugs.release_before_acknowledgement
    }

    #[cfg(not(feature = "deliberate-bugs"))]
    fn release_before_acknowledgement_bug(&self) -> bool {
        false
    }

    fn update_caught_up(&mut self) {
        if let Some(link) = &mut self.backup {
            if !link.caught_up && self.acknowledged >= link.catch_up_target {
                link.caught_up = true;
            }
        }
    }

    /// Releases held outputs, in oseq order, up to the first that still waits.
    fn release_ready(&mut self) {
        let unprotected = self.release_before_acknowledgement_bug()
            || (self.config.release_without_backup && self.backup_state() != BackupState::CaughtUp);
        let mut ready = Vec::new();
        // Without a backup `acknowledged` is what this node held as the
        // former backup (or what the lost backup had): durable either way.
        while self
            .held
            .front()
            .is_some_and(|output| unprotected || output.depends_on <= self.acknowledged)
        {
            // Checked just above.
            ready.push(self.held.pop_front().expect("a held output"));
        }
        if !ready.is_empty() {
            self.commands.push(Command::Release(ready));
        }
    }

    /// A clock tick: the throttle earns credit, and records or checkpoint
    /// bytes outstanding for too long are sent again.
    pub fn tick(&mut self) {
        if self.fenced_by.is_some() {
            return;
        }
        let Some(link) = &mut self.backup else {
            self.ticks_without_progress = 0;
            return;
        };
        let catching_up = !link.caught_up;
        if catching_up {
            let per_tick = self.config.catch_up_bytes_per_tick.min(i64::MAX as u64) as i64;
            link.credit_bytes = link.credit_bytes.saturating_add(per_tick).min(per_tick);
        }
        let records_outstanding = link.records_after.is_some() && self.acknowledged < self.logged();
        let checkpoint_outstanding = self
            .checkpoint_outgoing
            .as_ref()
            .is_some_and(|checkpoint| checkpoint.acknowledged_bytes < checkpoint.total_bytes());
        if !records_outstanding && !checkpoint_outstanding {
            self.ticks_without_progress = 0;
            return;
        }
        self.ticks_without_progress += 1;
        if self.ticks_without_progress >= self.config.retransmit_ticks {
            self.ticks_without_progress = 0;
            self.sent = self.acknowledged.max(self.retained_after);
            if let Some(checkpoint) = &mut self.checkpoint_outgoing {
                checkpoint.sent_bytes = checkpoint.acknowledged_bytes;
            }
            self.flush();
        } else if catching_up {
            // Credit earned: continue the transfer.
            self.flush();
        }
    }

    /// Tells the backup this primary is alive (the shell calls it when it has
    /// sent nothing for a while); the answer acknowledges or asks for records.
    pub fn heartbeat(&mut self) {
        if self.fenced_by.is_some() || self.backup.is_none() {
            return;
        }
        let caught_up = self.backup_state() == BackupState::CaughtUp;
        self.commands.push(Command::Send(PairMessage::Heartbeat {
            pid: self.pid,
            epoch: self.epoch,
            logged: self.logged(),
            caught_up,
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
