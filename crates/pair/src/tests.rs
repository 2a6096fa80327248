//! The logging channel under loss, duplication and slow disks, and fencing.

use crate::*;
use bytes::Bytes;
use proptest::prelude::*;
use std::collections::VecDeque;

pub(crate) const PID: Pid = Pid(7);

/// A write the backup's disk has not finished.
#[derive(Debug)]
pub(crate) enum DiskWrite {
    Records(Vec<Record>),
    Checkpoint {
        after_lsn: Lsn,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
    },
}

/// A primary and a backup joined by two lossy queues and a slow disk.
pub(crate) struct Pair {
    pub(crate) primary: PrimaryLog,
    pub(crate) backup: BackupLog,
    pub(crate) to_backup: VecDeque<PairMessage>,
    pub(crate) to_primary: VecDeque<PairMessage>,
    /// Writes the backup's disk has not finished, oldest first.
    pub(crate) disk_queue: VecDeque<DiskWrite>,
    /// The records the backup's disk holds after its checkpoint.
    pub(crate) durable_records: Vec<Record>,
    /// Every lsn up to this is durable at the backup (as a record or inside
    /// its checkpoint).
    pub(crate) durable_through: Lsn,
    /// The backup's complete checkpoint, and the one it is writing.
    pub(crate) checkpoint: Option<(Lsn, Bytes)>,
    pub(crate) assembling: Option<(Lsn, Vec<u8>)>,
    pub(crate) released: Vec<Output>,
    pub(crate) stopped: Option<Epoch>,
}

impl Pair {
    pub(crate) fn new(config: PrimaryConfig) -> Pair {
        Pair {
            primary: PrimaryLog::new(PID, Epoch(1), Lsn(0), Oseq(0), config),
            backup: BackupLog::new(PID, Epoch(1), Lsn(0)),
            to_backup: VecDeque::new(),
            to_primary: VecDeque::new(),
            disk_queue: VecDeque::new(),
            durable_records: Vec::new(),
            durable_through: Lsn(0),
            checkpoint: None,
            assembling: None,
            released: Vec::new(),
            stopped: None,
        }
    }

    /// The backup's node is replaced by an empty one; the primary pairs with
    /// it (messages of the old backup are dropped, as the shell must).
    pub(crate) fn replace_backup(&mut self) {
        self.primary.pair_with_new_backup().unwrap();
        self.empty_backup();
    }

    /// The backup's node and the messages in flight are replaced by an
    /// empty backup of the primary's epoch.
    pub(crate) fn empty_backup(&mut self) {
        self.backup = BackupLog::new(PID, self.primary.epoch(), Lsn(0));
        self.to_backup.clear();
        self.to_primary.clear();
        self.disk_queue.clear();
        self.durable_records.clear();
        self.durable_through = Lsn(0);
        self.checkpoint = None;
        self.assembling = None;
    }

    /// Carries out both sides' commands, checking the output rule.
    pub(crate) fn run_commands(&mut self) {
        for command in self.primary.take_commands() {
            match command {
                Command::Send(message) => self.to_backup.push_back(message),
                Command::Release(outputs) => {
                    for output in outputs {
                        let durable = self.durable_through;
                        assert!(
                            output.depends_on <= durable,
                            "output {:?} released before lsn {:?} was durable (durable {durable:?})",
                            output.oseq,
                            output.depends_on
                        );
                        let expected = Oseq(self.released.len() as u64 + 1);
                        assert_eq!(
                            output.oseq, expected,
                            "released in order, no gap, no repeat"
                        );
                        self.released.push(output);
                    }
                }
                Command::Stop { epoch } => self.stopped = Some(epoch),
                Command::Persist(_) | Command::PersistCheckpoint { .. } => {
                    panic!("a primary never persists")
                }
            }
        }
        for command in self.backup.take_commands() {
            match command {
                Command::Send(message) => self.to_primary.push_back(message),
                Command::Persist(records) => self.disk_queue.push_back(DiskWrite::Records(records)),
                Command::PersistCheckpoint {
                    after_lsn,
                    offset,
                    total_bytes,
                    data,
                } => self.disk_queue.push_back(DiskWrite::Checkpoint {
                    after_lsn,
                    offset,
                    total_bytes,
                    data,
                }),
                other => panic!("a backup never asks for {other:?}"),
            }
        }
    }

    pub(crate) fn finish_one_write(&mut self) {
        match self.disk_queue.pop_front() {
            None => {}
            Some(DiskWrite::Records(records)) => {
                let last = records.last().expect("persists are never empty").lsn;
                for record in records {
                    assert_eq!(
                        record.lsn,
                        self.durable_through.next(),
                        "the backup writes contiguously"
                    );
                    self.durable_through = record.lsn;
                    self.durable_records.push(record);
                }
                self.backup.handle_persisted(last);
            }
            Some(DiskWrite::Checkpoint {
                after_lsn,
                offset,
                total_bytes,
                data,
            }) => self.write_checkpoint_chunk(after_lsn, offset, total_bytes, &data),
        }
    }

    fn write_checkpoint_chunk(
        &mut self,
        after_lsn: Lsn,
        offset: u64,
        total_bytes: u64,
        data: &[u8],
    ) {
        let assembling = self
            .assembling
            .get_or_insert_with(|| (after_lsn, Vec::new()));
        if assembling.0 != after_lsn {
            *assembling = (after_lsn, Vec::new());
        }
        assert_eq!(
            offset,
            assembling.1.len() as u64,
            "chunks are written in order"
        );
        assembling.1.extend_from_slice(data);
        let end = assembling.1.len() as u64;
        if end == total_bytes {
            let bytes = Bytes::from(std::mem::take(&mut assembling.1));
            self.assembling = None;
            self.checkpoint = Some((after_lsn, bytes));
            self.durable_records.retain(|record| record.lsn > after_lsn);
            self.durable_through = self.durable_through.max(after_lsn);
        }
        self.backup.handle_checkpoint_persisted(after_lsn, end);
    }

    pub(crate) fn deliver(&mut self, to_backup: bool, lose: bool, duplicate: bool) {
        let queue = if to_backup {
            &mut self.to_backup
        } else {
            &mut self.to_primary
        };
        let Some(message) = queue.pop_front() else {
            return;
        };
        if lose {
            return;
        }
        let copies = if duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if to_backup {
                self.backup.handle(message.clone());
            } else {
                self.primary.handle(message.clone());
            }
        }
    }

    /// Runs with a reliable network and disk until nothing moves.
    pub(crate) fn settle(&mut self) {
        for _ in 0..10_000 {
            self.run_commands();
            let quiet = self.to_backup.is_empty()
                && self.to_primary.is_empty()
                && self.disk_queue.is_empty();
            if quiet {
                let settled = self.primary.acknowledged() == self.primary.logged()
                    && self.primary.checkpoint_in_flight().is_none();
                if settled {
                    return;
                }
                // Something was lost (or throttled): only the timer helps.
                self.primary.tick();
            }
            self.deliver(true, false, false);
            self.deliver(false, false, false);
            self.finish_one_write();
        }
        panic!("the pair never settled");
    }
}

pub(crate) fn record_payload(number: u64) -> Bytes {
    Bytes::from(number.to_le_bytes().to_vec())
}

#[test]
fn outputs_wait_for_the_backup_and_are_released_in_order() {
    let mut pair = Pair::new(PrimaryConfig::default());
    pair.primary
        .output(Stream::Stdout, Bytes::from_static(b"hello\n"))
        .unwrap();
    pair.run_commands();
    assert_eq!(
        pair.released.len(),
        1,
        "an output that depends on nothing leaves at once"
    );
    pair.primary
        .log(RecordKind::Random, record_payload(1), 10)
        .unwrap();
    pair.primary
        .output(Stream::Stdout, Bytes::from_static(b"token\n"))
        .unwrap();
    pair.primary.flush();
    pair.run_commands();
    assert_eq!(
        pair.released.len(),
        1,
        "held until the random value is durable"
    );
    pair.deliver(true, false, false);
    pair.run_commands();
    assert_eq!(pair.released.len(), 1, "written but not yet durable");
    pair.finish_one_write();
    pair.run_commands();
    pair.deliver(false, false, false);
    pair.run_commands();
    assert_eq!(pair.released.len(), 2);
    assert_eq!(pair.primary.held_outputs(), 0);
}

#[test]
fn a_gap_makes_the_backup_ask_again_and_lost_appends_are_resent_after_a_while() {
    let config = PrimaryConfig {
        append_records_max: 1,
        retransmit_ticks: 3,
        ..PrimaryConfig::default()
    };
    let mut pair = Pair::new(config);
    for number in 1..=3 {
        pair.primary
            .log(
                RecordKind::Clock { clock_id: 1 },
                record_payload(number),
                number,
            )
            .unwrap();
    }
    pair.primary.flush();
    pair.run_commands();
    assert_eq!(pair.to_backup.len(), 3, "one record per append");
    pair.deliver(true, true, false); // lsn 1 lost
    pair.deliver(true, false, false); // lsn 2 shows the gap
    pair.run_commands();
    assert!(matches!(
        pair.to_primary.back(),
        Some(PairMessage::Resend { from: Lsn(1), .. })
    ));
    pair.to_primary.clear(); // the request is lost too
    pair.to_backup.clear();
    for _ in 0..3 {
        pair.primary.tick();
    }
    pair.run_commands();
    assert_eq!(
        pair.to_backup.len(),
        3,
        "everything unacknowledged goes again"
    );
    pair.settle();
    assert_eq!(pair.durable_records.len(), 3);
    assert_eq!(pair.primary.acknowledged(), Lsn(3));
}

#[test]
fn a_fenced_backup_acknowledges_nothing_more_and_stops_the_old_primary() {
    let mut pair = Pair::new(PrimaryConfig::default());
    pair.primary
        .log(RecordKind::StdinArrived, record_payload(1), 1)
        .unwrap();
    pair.primary.flush();
    pair.run_commands();
    pair.deliver(true, false, false);
    pair.run_commands();
    // The backup decides to take over before its disk finished lsn 1.
    pair.backup.fence(Epoch(2));
    pair.finish_one_write();
    pair.run_commands();
    assert!(
        pair.to_primary.is_empty(),
        "no acknowledgement after fencing"
    );
    // The old primary keeps going; its next append is refused.
    pair.primary
        .log(RecordKind::Clock { clock_id: 1 }, record_payload(2), 2)
        .unwrap();
    pair.primary
        .output(Stream::Stdout, Bytes::from_static(b"late\n"))
        .unwrap();
    pair.primary.flush();
    pair.run_commands();
    pair.deliver(true, false, false);
    pair.run_commands();
    pair.deliver(false, false, false);
    pair.run_commands();
    assert_eq!(pair.stopped, Some(Epoch(2)));
    assert!(
        pair.released.is_empty(),
        "nothing released without the backup"
    );
    assert_eq!(
        pair.primary
            .log(RecordKind::Clock { clock_id: 1 }, record_payload(3), 3),
        Err(PairError::Fenced { epoch: Epoch(2) })
    );
}

#[test]
fn a_backlogged_primary_refuses_until_the_backup_catches_up() {
    let config = PrimaryConfig {
        unacknowledged_records_max: 2,
        ..PrimaryConfig::default()
    };
    let mut pair = Pair::new(config);
    pair.primary
        .log(RecordKind::Clock { clock_id: 1 }, record_payload(1), 1)
        .unwrap();
    pair.primary
        .log(RecordKind::Clock { clock_id: 1 }, record_payload(2), 2)
        .unwrap();
    assert_eq!(
        pair.primary
            .log(RecordKind::Clock { clock_id: 1 }, record_payload(3), 3),
        Err(PairError::Backlogged)
    );
    pair.primary.flush();
    pair.settle();
    assert!(pair
        .primary
        .log(RecordKind::Clock { clock_id: 1 }, record_payload(3), 3)
        .is_ok());
}

/// One step of the randomized test.
#[derive(Clone, Debug)]
enum Step {
    Log(u8),
    Output(u8),
    Flush,
    Deliver {
        to_backup: bool,
        lose: bool,
        duplicate: bool,
    },
    FinishWrite,
    Tick,
    Checkpoint,
    NewBackup,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any::<u8>().prop_map(Step::Log),
        3 => any::<u8>().prop_map(Step::Output),
        2 => Just(Step::Flush),
        5 => (any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.1))
            .prop_map(|(to_backup, lose, duplicate)| Step::Deliver { to_backup, lose, duplicate }),
        3 => Just(Step::FinishWrite),
        1 => Just(Step::Tick),
        1 => Just(Step::Checkpoint),
        1 => Just(Step::NewBackup),
    ]
}

proptest! {
    /// Under loss, duplication, reordering of disk completions against
    /// messages, slow disks, checkpoints (truncating both logs) and
    /// replacements of the backup by an empty one: no output leaves before
    /// what it depends on is durable at the current backup (checked at every
    /// release), outputs leave in order without gaps, and once the network
    /// heals everything is durable and released, and the backup's checkpoint
    /// plus its records are exactly what was logged.
    #[test]
    fn the_output_rule_holds_and_the_channel_catches_up(steps in prop::collection::vec(step(), 1..300)) {
        let config = PrimaryConfig {
            append_records_max: 4,
            retransmit_ticks: 2,
            checkpoint_chunk_bytes: 3,
            catch_up_bytes_per_tick: 5,
            ..PrimaryConfig::default()
        };
        let mut pair = Pair::new(config);
        let mut logged = Vec::new();
        let mut fuel = 0;
        for step in steps {
            match step {
                Step::Log(byte) => {
                    fuel += 1;
                    let lsn = pair.primary.log(RecordKind::Random, Bytes::from(vec![byte]), fuel).unwrap();
                    logged.push((lsn, byte));
                }
                Step::Output(byte) => {
                    pair.primary.output(Stream::Stdout, Bytes::from(vec![byte])).unwrap();
                }
                Step::Flush => pair.primary.flush(),
                Step::Deliver { to_backup, lose, duplicate } => pair.deliver(to_backup, lose, duplicate),
                Step::FinishWrite => pair.finish_one_write(),
                Step::Tick => pair.primary.tick(),
                Step::Checkpoint => {
                    // The "state" after the last record: every byte logged.
                    let data: Vec<u8> = logged.iter().map(|(_, byte)| *byte).collect();
                    let after_lsn = pair.primary.logged();
                    let fresh = after_lsn > pair.primary.checkpoint_lsn()
                        && pair.primary.checkpoint_in_flight().is_none_or(|lsn| after_lsn > lsn);
                    if !data.is_empty() && fresh {
                        pair.primary.checkpoint(after_lsn, Bytes::from(data)).unwrap();
                    }
                }
                Step::NewBackup => pair.replace_backup(),
            }
            pair.run_commands();
        }
        pair.primary.flush();
        pair.settle();
        prop_assert_eq!(pair.primary.held_outputs(), 0);
        prop_assert_eq!(pair.primary.acknowledged(), pair.primary.logged());
        prop_assert_eq!(pair.primary.backup_state(), BackupState::CaughtUp);
        let (checkpoint_lsn, mut restored) = match &pair.checkpoint {
            Some((lsn, data)) => (*lsn, data.to_vec()),
            None => (Lsn(0), Vec::new()),
        };
        prop_assert_eq!(checkpoint_lsn, pair.primary.checkpoint_lsn());
        prop_assert_eq!(pair.primary.retained_records() as u64, pair.primary.logged().0 - checkpoint_lsn.0);
        for (index, record) in pair.durable_records.iter().enumerate() {
            prop_assert_eq!(record.lsn.0, checkpoint_lsn.0 + 1 + index as u64);
            restored.push(record.payload[0]);
        }
        let expected: Vec<u8> = logged.iter().map(|(_, byte)| *byte).collect();
        prop_assert_eq!(restored, expected);
    }
}

/// A heartbeat after a lost append makes the backup ask for the missing
/// records, so the outputs waiting on them are released without waiting for the
/// retransmission timer.
#[test]
fn a_heartbeat_recovers_a_lost_append() {
    let mut pair = Pair::new(PrimaryConfig::default());
    pair.primary
        .log(RecordKind::Random, record_payload(1), 1)
        .unwrap();
    pair.primary
        .output(Stream::Stdout, Bytes::from_static(b"x"))
        .unwrap();
    pair.primary.flush();
    pair.run_commands();
    pair.deliver(true, true, false); // the append is lost
    pair.primary.heartbeat();
    pair.run_commands();
    pair.deliver(true, false, false); // heartbeat → Resend
    pair.run_commands();
    pair.deliver(false, false, false); // Resend → Append again
    pair.run_commands();
    pair.deliver(true, false, false);
    pair.run_commands();
    pair.finish_one_write();
    pair.run_commands();
    pair.deliver(false, false, false); // Ack
    pair.run_commands();
    assert_eq!(pair.primary.acknowledged(), Lsn(1));
    assert_eq!(pair.released.len(), 1);
}

/// A heartbeat from a fenced-off epoch is answered with `Fenced`.
#[test]
fn a_heartbeat_from_an_old_epoch_is_fenced() {
    let mut pair = Pair::new(PrimaryConfig::default());
    pair.backup.fence(Epoch(2));
    pair.primary.heartbeat();
    pair.run_commands();
    pair.deliver(true, false, false);
    pair.run_commands();
    pair.deliver(false, false, false);
    pair.run_commands();
    assert_eq!(pair.stopped, Some(Epoch(2)));
}
