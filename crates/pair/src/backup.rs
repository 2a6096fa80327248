//! The backup's side of the logging channel: accepting contiguous records of
//! the current epoch, acknowledging what is durable, and fencing.

use crate::message::{Command, PairMessage};
use crate::record::{Epoch, Lsn, Pid, Record};

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
    /// Highest contiguous lsn the shell reported durable.
    durable: Lsn,
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
            commands: Vec::new(),
        }
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
            PairMessage::Heartbeat { pid, epoch, logged } => (pid, epoch, Vec::new(), Some(logged)),
            // Only a primary handles the other kinds.
            _ => return,
        };
        if pid != self.pid {
            return;
        }
        if epoch < self.epoch {
            self.commands.push(Command::Send(PairMessage::Fenced {
                pid,
                epoch: self.epoch,
            }));
            return;
        }
        // The current primary, or a newer one this node was paired with.
        self.epoch = epoch;
        self.primary_epoch = epoch;
        match heartbeat_logged {
            Some(logged) => self.answer_heartbeat(epoch, logged),
            None => self.accept(epoch, records),
        }
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
