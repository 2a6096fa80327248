//! The backup's side of the logging channel: accepting contiguous records of
//! the current epoch and checkpoints in ordered chunks, acknowledging what is
//! durable, and fencing.

use crate::message::{Command, PairMessage};
use crate::record::{Epoch, Lsn, Pid, Record};
use bytes::Bytes;
use understudy_types::limits::{PAIR_CHECKPOINT_BYTES_MAX, PAIR_CHECKPOINT_CHUNK_BYTES_MAX};

/// The checkpoint a backup is receiving, or the last one it completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IncomingCheckpoint {
    after_lsn: Lsn,
    total_bytes: u64,
    /// Contiguous bytes handed to the shell to persist.
    written_bytes: u64,
    /// Contiguous bytes the shell reported durable.
    durable_bytes: u64,
}

/// One `Checkpoint` chunk, as received.
struct CheckpointChunk {
    epoch: Epoch,
    after_lsn: Lsn,
    offset: u64,
    total_bytes: u64,
    data: Bytes,
}

/// The backup of one pid (sans-IO: the shell persists and sends what
/// [`BackupLog::take_commands`] returns, and reports durability with
/// [`BackupLog::handle_persisted`]).
#[derive(Debug)]
pub struct BackupLog {
    pid: Pid,
    /// The newest epoch known: appends from older epochs are fenced off.
    epoch: Epoch,
    /// The epoch of the primary this backup follows; below `epoch` once this
    /// backup fenced it off (it acknowledges nothing then).
    primary_epoch: Epoch,
    /// Highest contiguous lsn handed to the shell to persist.
    written: Lsn,
    /// Highest contiguous lsn the shell reported durable (records up to a
    /// complete checkpoint count: the checkpoint covers them).
    durable: Lsn,
    /// The checkpoint being received (or the last one received).
    incoming: Option<IncomingCheckpoint>,
    /// The `after_lsn` of the newest complete, durable checkpoint (0: none).
    checkpoint_complete: Lsn,
    /// The primary said this backup caught up (see [`Self::is_promotable`]).
    promotable: bool,
    commands: Vec<Command>,
}

impl BackupLog {
    /// A backup of `pid` for the primary of `epoch`, holding records up to
    /// `durable` already (0 for a new pair; after a restart, its log's end).
    pub fn new(pid: Pid, epoch: Epoch, durable: Lsn) -> BackupLog {
        BackupLog {
            pid,
            epoch,
            primary_epoch: epoch,
            written: durable,
            durable,
            incoming: None,
            checkpoint_complete: Lsn(0),
            promotable: false,
            commands: Vec::new(),
        }
    }

    /// Whether this backup may ask to be promoted: its primary told it (in a
    /// heartbeat) that it caught up, so what it holds is the whole state. A
    /// restarted backup learns it again from the next heartbeat.
    pub fn is_promotable(&self) -> bool {
        self.promotable
    }

    /// A restarted backup whose storage holds a complete checkpoint after
    /// `checkpoint_lsn` and contiguous records after it up to `durable`.
    pub fn with_checkpoint(pid: Pid, epoch: Epoch, checkpoint_lsn: Lsn, durable: Lsn) -> BackupLog {
        assert!(
            checkpoint_lsn <= durable,
            "records up to a checkpoint are covered by it"
        );
        let mut backup = BackupLog::new(pid, epoch, durable);
        backup.checkpoint_complete = checkpoint_lsn;
        backup
    }

    /// The `after_lsn` of the newest complete checkpoint durable here (0 if
    /// none): a promotion restores it and replays only the records after it.
    pub fn checkpoint_lsn(&self) -> Lsn {
        self.checkpoint_complete
    }

    /// The newest epoch this backup knows.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The highest contiguous lsn durable here.
    pub fn durable(&self) -> Lsn {
        self.durable
    }

    /// Stops acknowledging the current primary: called before asking the
    /// coordinator to promote this backup to `new_epoch`. From here on no
    /// record of an older epoch is accepted or acknowledged, so the old primary
    /// can release nothing the promoted backup might not regenerate.
    pub fn fence(&mut self, new_epoch: Epoch) {
        assert!(new_epoch > self.epoch, "fencing must move to a newer epoch");
        self.epoch = new_epoch;
    }

    /// Handles a message from the primary.
    pub fn handle(&mut self, message: PairMessage) {
        let (pid, epoch, records, heartbeat_logged) = match message {
            PairMessage::Append {
                pid,
                epoch,
                records,
            } => (pid, epoch, records, None),
            PairMessage::Heartbeat {
                pid,
                epoch,
                logged,
                caught_up,
            } => {
                if caught_up
                    && pid == self.pid
                    && epoch == self.primary_epoch
                    && epoch == self.epoch
                {
                    self.promotable = true;
                }
                (pid, epoch, Vec::new(), Some(logged))
            }
            PairMessage::Checkpoint {
                pid,
                epoch,
                after_lsn,
                offset,
                total_bytes,
                data,
            } => {
                if pid == self.pid && self.admit(epoch) {
                    self.accept_checkpoint(CheckpointChunk {
                        epoch,
                        after_lsn,
                        offset,
                        total_bytes,
                        data,
                    });
                }
                return;
            }
            // Only a primary handles the other kinds.
            _ => return,
        };
        if pid != self.pid || !self.admit(epoch) {
            return;
        }
        match heartbeat_logged {
            Some(logged) => self.answer_heartbeat(epoch, logged),
            None => self.accept(epoch, records),
        }
    }

    /// Fences off a sender of an older epoch (answering `Fenced`), or follows
    /// the sender: the current primary, or a newer one this node was paired
    /// with. Returns whether the message is to be handled.
    fn admit(&mut self, epoch: Epoch) -> bool {
        if epoch < self.epoch {
            self.commands.push(Command::Send(PairMessage::Fenced {
                pid: self.pid,
                epoch: self.epoch,
            }));
            return false;
        }
        self.epoch = epoch;
        self.primary_epoch = epoch;
        true
    }

    /// A heartbeat: ask for what is missing, else say how far we are.
    fn answer_heartbeat(&mut self, epoch: Epoch, logged: Lsn) {
        if logged > self.written {
            self.commands.push(Command::Send(PairMessage::Resend {
                pid: self.pid,
                epoch,
                from: self.written.next(),
            }));
        } else {
            self.acknowledge(epoch);
        }
    }

    fn accept(&mut self, epoch: Epoch, records: Vec<Record>) {
        let Some(first) = records.first() else {
            return;
        };
        let contiguous = records
            .windows(2)
            .all(|pair| pair[1].lsn == pair[0].lsn.next())
            && records.iter().all(|record| record.epoch <= epoch);
        if !contiguous {
            return; // malformed: ignored; the primary's retransmission repairs
        }
        if first.lsn > self.written.next() {
            self.commands.push(Command::Send(PairMessage::Resend {
                pid: self.pid,
                epoch,
                from: self.written.next(),
            }));
            return;
        }
        let fresh: Vec<Record> = records
            .into_iter()
            .filter(|record| record.lsn > self.written)
            .collect();
        let Some(last) = fresh.last() else {
            // Everything was here already (a retransmission): say how far.
            self.acknowledge(epoch);
            return;
        };
        self.written = last.lsn;
        self.commands.push(Command::Persist(fresh));
    }

    /// The shell made every record up to `lsn` durable (in the order it was
    /// asked to persist them).
    pub fn handle_persisted(&mut self, lsn: Lsn) {
        assert!(
            lsn <= self.written,
            "{lsn:?} persisted but only {:?} was written",
            self.written
        );
        if lsn <= self.durable {
            return;
        }
        self.durable = lsn;
        self.acknowledge(self.primary_epoch);
    }

    /// Takes a checkpoint chunk if it is the next one of the newest
    /// checkpoint; otherwise says how far that checkpoint is durable, which
    /// tells the primary where to send from.
    fn accept_checkpoint(&mut self, chunk: CheckpointChunk) {
        let length = chunk.data.len() as u64;
        let well_formed = chunk.total_bytes > 0
            && chunk.total_bytes <= PAIR_CHECKPOINT_BYTES_MAX
            && length <= PAIR_CHECKPOINT_CHUNK_BYTES_MAX
            && chunk
                .offset
                .checked_add(length)
                .is_some_and(|end| end <= chunk.total_bytes);
        if !well_formed || chunk.after_lsn < self.checkpoint_complete {
            return; // malformed or superseded: ignored
        }
        let mut incoming = match self.incoming {
            Some(incoming) if incoming.after_lsn == chunk.after_lsn => incoming,
            // An older checkpoint's late chunk.
            Some(incoming) if incoming.after_lsn > chunk.after_lsn => return,
            // A newer checkpoint replaces an unfinished older one (a complete
            // one stays in storage until the newer one is complete).
            _ => IncomingCheckpoint {
                after_lsn: chunk.after_lsn,
                total_bytes: chunk.total_bytes,
                written_bytes: 0,
                durable_bytes: 0,
            },
        };
        let fits = incoming.total_bytes == chunk.total_bytes
            && chunk.offset <= incoming.written_bytes
            && chunk.offset + length > incoming.written_bytes;
        if !fits {
            // A gap, a repeat or a checkpoint already here: say how far.
            self.incoming = Some(incoming);
            self.acknowledge_checkpoint(chunk.epoch, incoming);
            return;
        }
        let skip = (incoming.written_bytes - chunk.offset) as usize;
        let data = chunk.data.slice(skip..);
        let offset = incoming.written_bytes;
        incoming.written_bytes += data.len() as u64;
        if incoming.written_bytes == incoming.total_bytes {
            // Records up to `after_lsn` are covered once this is durable:
            // appends continue after it.
            self.written = self.written.max(incoming.after_lsn);
        }
        self.incoming = Some(incoming);
        self.commands.push(Command::PersistCheckpoint {
            after_lsn: incoming.after_lsn,
            offset,
            total_bytes: incoming.total_bytes,
            data,
        });
    }

    /// The shell made the checkpoint after `after_lsn` durable up to byte
    /// `end` (in the order it was asked to persist).
    pub fn handle_checkpoint_persisted(&mut self, after_lsn: Lsn, end: u64) {
        let Some(mut incoming) = self
            .incoming
            .filter(|incoming| incoming.after_lsn == after_lsn)
        else {
            return; // superseded by a newer checkpoint meanwhile
        };
        assert!(
            end <= incoming.written_bytes,
            "checkpoint bytes up to {end} persisted but only {} were written",
            incoming.written_bytes
        );
        if end <= incoming.durable_bytes {
            return;
        }
        incoming.durable_bytes = end;
        self.incoming = Some(incoming);
        if end == incoming.total_bytes {
            self.checkpoint_complete = after_lsn;
            // Every earlier write is durable too (the shell keeps order).
            self.durable = self.durable.max(after_lsn);
        }
        self.acknowledge_checkpoint(self.primary_epoch, incoming);
        if end == incoming.total_bytes {
            self.acknowledge(self.primary_epoch);
        }
    }

    fn acknowledge_checkpoint(&mut self, epoch: Epoch, incoming: IncomingCheckpoint) {
        if epoch < self.epoch || epoch != self.primary_epoch {
            return;
        }
        self.commands
            .push(Command::Send(PairMessage::CheckpointAck {
                pid: self.pid,
                epoch,
                after_lsn: incoming.after_lsn,
                durable_bytes: incoming.durable_bytes,
            }));
    }

    /// Acknowledges `durable` to the primary of `epoch`, unless fenced off.
    fn acknowledge(&mut self, epoch: Epoch) {
        if epoch < self.epoch || epoch != self.primary_epoch {
            return;
        }
        self.commands.push(Command::Send(PairMessage::Ack {
            pid: self.pid,
            epoch,
            durable: self.durable,
        }));
    }

    /// The commands produced so far, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }
}
