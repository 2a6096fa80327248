//! Checkpoints (chunked shipping, truncation of both logs) and pairing with a
//! new backup (throttled catch-up, the backup states, holding outputs).

use crate::tests::{record_payload, Pair, PID};
use crate::*;
use bytes::Bytes;

fn log_clocks(pair: &mut Pair, count: u64) {
    for number in 0..count {
        pair.primary
            .log(
                RecordKind::Clock { clock_id: 1 },
                record_payload(number),
                number,
            )
            .unwrap();
    }
}

fn sent_checkpoint_chunks(pair: &Pair) -> Vec<(u64, usize)> {
    pair.to_backup
        .iter()
        .filter_map(|message| match message {
            PairMessage::Checkpoint { offset, data, .. } => Some((*offset, data.len())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_acknowledged_checkpoint_truncates_both_logs() {
    let config = PrimaryConfig {
        checkpoint_chunk_bytes: 4,
        ..PrimaryConfig::default()
    };
    let mut pair = Pair::new(config);
    log_clocks(&mut pair, 5);
    pair.primary.flush();
    pair.settle();
    assert_eq!(pair.primary.retained_records(), 5, "kept for a new backup");
    pair.primary
        .checkpoint(Lsn(3), Bytes::from_static(b"state-after-3"))
        .unwrap();
    pair.primary.flush();
    pair.run_commands();
    assert_eq!(
        sent_checkpoint_chunks(&pair),
        vec![(0, 4), (4, 4), (8, 4), (12, 1)],
        "thirteen bytes in chunks of four"
    );
    assert_eq!(pair.primary.checkpoint_in_flight(), Some(Lsn(3)));
    pair.settle();
    assert_eq!(pair.primary.checkpoint_in_flight(), None);
    assert_eq!(pair.primary.checkpoint_lsn(), Lsn(3));
    assert_eq!(pair.primary.retained_records(), 2, "records 4 and 5 remain");
    assert_eq!(pair.backup.checkpoint_lsn(), Lsn(3));
    assert_eq!(
        pair.checkpoint,
        Some((Lsn(3), Bytes::from_static(b"state-after-3")))
    );
    let kept: Vec<Lsn> = pair
        .durable_records
        .iter()
        .map(|record| record.lsn)
        .collect();
    assert_eq!(kept, vec![Lsn(4), Lsn(5)]);
}

#[test]
fn a_lost_checkpoint_chunk_is_sent_again() {
    let config = PrimaryConfig {
        checkpoint_chunk_bytes: 2,
        retransmit_ticks: 2,
        ..PrimaryConfig::default()
    };
    let mut pair = Pair::new(config);
    log_clocks(&mut pair, 1);
    pair.primary
        .checkpoint(Lsn(1), Bytes::from_static(b"abcdef"))
        .unwrap();
    pair.primary.flush();
    pair.run_commands();
    pair.deliver(true, false, false); // the append
    pair.deliver(true, true, false); // chunk "ab" lost
    pair.deliver(true, false, false); // "cd" shows the gap
    pair.deliver(true, false, false); // "ef"
    pair.settle();
    assert_eq!(
        pair.checkpoint,
        Some((Lsn(1), Bytes::from_static(b"abcdef")))
    );
    assert_eq!(pair.primary.checkpoint_lsn(), Lsn(1));
}

#[test]
fn refused_checkpoints_say_why() {
    let mut pair = Pair::new(PrimaryConfig::default());
    log_clocks(&mut pair, 2);
    let refused = |after_lsn: u64, bytes: u64| {
        Err(PairError::InvalidCheckpoint {
            after_lsn: Lsn(after_lsn),
            bytes,
        })
    };
    assert_eq!(
        pair.primary.checkpoint(Lsn(3), Bytes::from_static(b"x")),
        refused(3, 1)
    );
    assert_eq!(pair.primary.checkpoint(Lsn(1), Bytes::new()), refused(1, 0));
    pair.primary
        .checkpoint(Lsn(2), Bytes::from_static(b"x"))
        .unwrap();
    assert_eq!(
        pair.primary.checkpoint(Lsn(2), Bytes::from_static(b"y")),
        refused(2, 1)
    );
    assert_eq!(
        pair.primary.checkpoint(Lsn(1), Bytes::from_static(b"y")),
        refused(1, 1)
    );
}

#[test]
fn a_new_backup_gets_the_checkpoint_then_the_records_throttled_and_catches_up() {
    let config = PrimaryConfig {
        checkpoint_chunk_bytes: 8,
        catch_up_bytes_per_tick: 16,
        append_records_max: 1,
        ..PrimaryConfig::default()
    };
    let mut pair = Pair::new(config);
    log_clocks(&mut pair, 4);
    pair.primary
        .checkpoint(Lsn(2), Bytes::from(vec![7u8; 40]))
        .unwrap();
    pair.primary.flush();
    pair.settle();
    assert_eq!(pair.primary.backup_state(), BackupState::CaughtUp);
    pair.primary.backup_lost();
    assert_eq!(pair.primary.backup_state(), BackupState::None);
    log_clocks(&mut pair, 1); // lsn 5, logged with no backup
    pair.primary
        .output(Stream::Stdout, Bytes::from_static(b"after 5"))
        .unwrap();
    pair.run_commands();
    assert!(pair.released.is_empty(), "held while no backup has lsn 5");

    pair.replace_backup();
    assert_eq!(pair.primary.backup_state(), BackupState::CatchingUp);
    pair.primary.flush();
    pair.run_commands();
    // 16 bytes of credit: two chunks of 8; nothing more until the next tick.
    assert_eq!(sent_checkpoint_chunks(&pair), vec![(0, 8), (8, 8)]);
    assert!(
        pair.to_backup
            .iter()
            .all(|message| matches!(message, PairMessage::Checkpoint { .. })),
        "records wait for the checkpoint"
    );
    pair.primary.tick();
    pair.run_commands();
    assert_eq!(
        sent_checkpoint_chunks(&pair).len(),
        4,
        "one tick's credit later"
    );
    pair.settle();
    assert_eq!(pair.primary.backup_state(), BackupState::CaughtUp);
    assert_eq!(pair.checkpoint, Some((Lsn(2), Bytes::from(vec![7u8; 40]))));
    let kept: Vec<Lsn> = pair
        .durable_records
        .iter()
        .map(|record| record.lsn)
        .collect();
    assert_eq!(
        kept,
        vec![Lsn(3), Lsn(4), Lsn(5)],
        "the records after the checkpoint"
    );
    assert_eq!(
        pair.released.len(),
        1,
        "released once the new backup has lsn 5"
    );
}

#[test]
fn without_a_backup_outputs_are_held_unless_asked_otherwise() {
    for release_without_backup in [false, true] {
        let config = PrimaryConfig {
            release_without_backup,
            ..PrimaryConfig::default()
        };
        let checkpoint = Some((Lsn(3), Bytes::from_static(b"restored")));
        let record = Record {
            lsn: Lsn(4),
            epoch: Epoch(1),
            kind: RecordKind::Random,
            payload: record_payload(4),
            fuel_consumed: 4,
        };
        let mut primary =
            PrimaryLog::promoted(PID, Epoch(2), checkpoint, vec![record], Oseq(9), config);
        assert_eq!(primary.backup_state(), BackupState::None);
        assert_eq!(primary.checkpoint_lsn(), Lsn(3));
        assert_eq!(primary.retained_records(), 1);
        // Depends only on what this node held as the backup: may leave.
        assert_eq!(
            primary.output(Stream::Stdout, Bytes::from_static(b"a")),
            Ok(Oseq(10))
        );
        primary
            .log(RecordKind::Random, record_payload(5), 5)
            .unwrap();
        primary
            .output(Stream::Stdout, Bytes::from_static(b"b"))
            .unwrap();
        let released: Vec<Oseq> = primary
            .take_commands()
            .into_iter()
            .flat_map(|command| match command {
                Command::Release(outputs) => outputs,
                _ => Vec::new(),
            })
            .map(|output| output.oseq)
            .collect();
        let expected = if release_without_backup {
            vec![Oseq(10), Oseq(11)]
        } else {
            vec![Oseq(10)]
        };
        assert_eq!(
            released, expected,
            "release_without_backup={release_without_backup}"
        );
    }
}

#[test]
fn a_log_without_a_covering_checkpoint_cannot_catch_a_backup_up() {
    let mut primary = PrimaryLog::new(PID, Epoch(2), Lsn(7), Oseq(0), PrimaryConfig::default());
    primary.backup_lost();
    assert_eq!(
        primary.pair_with_new_backup(),
        Err(PairError::NoCheckpoint {
            missing_through: Lsn(7)
        })
    );
    primary
        .log(RecordKind::Random, record_payload(8), 8)
        .unwrap();
    primary
        .checkpoint(Lsn(8), Bytes::from_static(b"now"))
        .unwrap();
    assert_eq!(primary.pair_with_new_backup(), Ok(()));
    assert_eq!(primary.backup_state(), BackupState::CatchingUp);
}

#[cfg(feature = "deliberate-bugs")]
#[test]
fn the_deliberate_bug_releases_before_the_acknowledgement() {
    let config = PrimaryConfig {
        deliberate_bugs: DeliberateBugs {
            release_before_acknowledgement: true,
        },
        ..PrimaryConfig::default()
    };
    let mut primary = PrimaryLog::new(PID, Epoch(1), Lsn(0), Oseq(0), config);
    primary
        .log(RecordKind::Random, record_payload(1), 1)
        .unwrap();
    primary
        .output(Stream::Stdout, Bytes::from_static(b"x"))
        .unwrap();
    assert!(primary
        .take_commands()
        .iter()
        .any(|command| matches!(command, Command::Release(_))));
}

#[test]
fn a_restarted_backup_with_a_checkpoint_acknowledges_what_its_storage_holds() {
    let mut backup = BackupLog::with_checkpoint(PID, Epoch(1), Lsn(3), Lsn(5));
    assert_eq!(backup.checkpoint_lsn(), Lsn(3));
    assert_eq!(backup.durable(), Lsn(5));
    assert!(!backup.is_promotable(), "until its primary says so again");
    backup.handle(PairMessage::Heartbeat {
        pid: PID,
        epoch: Epoch(1),
        logged: Lsn(5),
        caught_up: true,
    });
    assert!(backup.is_promotable());
    assert_eq!(
        backup.take_commands(),
        vec![Command::Send(PairMessage::Ack {
            pid: PID,
            epoch: Epoch(1),
            durable: Lsn(5)
        })]
    );
}

#[test]
fn a_backup_ignores_malformed_and_superseded_checkpoint_chunks() {
    let mut backup = BackupLog::new(PID, Epoch(1), Lsn(0));
    let chunk = |after_lsn: u64, offset: u64, total_bytes: u64, data: &'static [u8]| {
        PairMessage::Checkpoint {
            pid: PID,
            epoch: Epoch(1),
            after_lsn: Lsn(after_lsn),
            offset,
            total_bytes,
            data: Bytes::from_static(data),
        }
    };
    // Longer than it claims the whole checkpoint is, and empty.
    backup.handle(chunk(4, 0, 2, b"abc"));
    backup.handle(chunk(4, 0, 0, b""));
    assert_eq!(backup.take_commands(), Vec::new());
    backup.handle(chunk(4, 0, 2, b"ab"));
    assert!(matches!(
        backup.take_commands().as_slice(),
        [Command::PersistCheckpoint {
            after_lsn: Lsn(4),
            offset: 0,
            total_bytes: 2,
            ..
        }]
    ));
    backup.handle_checkpoint_persisted(Lsn(4), 2);
    assert_eq!(backup.checkpoint_lsn(), Lsn(4));
    assert_eq!(
        backup.durable(),
        Lsn(4),
        "the checkpoint covers lsns 1 to 4"
    );
    // An older checkpoint's late chunk changes nothing.
    let _ = backup.take_commands();
    backup.handle(chunk(2, 0, 1, b"x"));
    assert_eq!(backup.take_commands(), Vec::new());
    assert_eq!(backup.checkpoint_lsn(), Lsn(4));
}

/// Replaces the backup with an empty one paired from a checkpoint the shell
/// captured for it.
fn replace_backup_from(pair: &mut Pair, after_lsn: Lsn, data: Bytes) {
    pair.primary
        .pair_with_new_backup_from(after_lsn, data)
        .unwrap();
    pair.empty_backup();
}

#[test]
fn a_new_backup_paired_from_a_given_checkpoint_gets_it_instead_of_the_newest() {
    let mut pair = Pair::new(PrimaryConfig::default());
    log_clocks(&mut pair, 4);
    pair.primary
        .checkpoint(Lsn(4), Bytes::from_static(b"increment-after-4"))
        .unwrap();
    pair.primary.flush();
    pair.settle();
    assert_eq!(pair.primary.checkpoint_lsn(), Lsn(4));
    // No record since the newest checkpoint: the same lsn is accepted.
    replace_backup_from(&mut pair, Lsn(4), Bytes::from_static(b"full-after-4"));
    pair.primary.flush();
    pair.settle();
    assert_eq!(pair.primary.backup_state(), BackupState::CaughtUp);
    assert_eq!(
        pair.checkpoint,
        Some((Lsn(4), Bytes::from_static(b"full-after-4")))
    );
    assert_eq!(
        pair.primary
            .pair_with_new_backup_from(Lsn(3), Bytes::from_static(b"old")),
        Err(PairError::InvalidCheckpoint {
            after_lsn: Lsn(3),
            bytes: 3
        }),
        "older than the newest checkpoint"
    );
    assert!(pair
        .primary
        .pair_with_new_backup_from(Lsn(5), Bytes::from_static(b"future"))
        .is_err());
    assert!(pair
        .primary
        .pair_with_new_backup_from(Lsn(4), Bytes::new())
        .is_err());
}

#[test]
fn a_resumed_log_needs_a_given_checkpoint_to_catch_a_backup_up() {
    let records: Vec<Record> = (8..=9)
        .map(|lsn| Record {
            lsn: Lsn(lsn),
            epoch: Epoch(1),
            kind: RecordKind::Clock { clock_id: 1 },
            payload: record_payload(lsn),
            fuel_consumed: lsn,
        })
        .collect();
    let mut primary = PrimaryLog::resumed(
        PID,
        Epoch(2),
        Lsn(7),
        records,
        Oseq(3),
        PrimaryConfig::default(),
    );
    assert_eq!(primary.logged(), Lsn(9));
    assert_eq!(primary.retained_records(), 2);
    assert_eq!(
        primary.pair_with_new_backup(),
        Err(PairError::NoCheckpoint {
            missing_through: Lsn(7)
        })
    );
    let oseq = primary
        .output(Stream::Stdout, Bytes::from_static(b"x"))
        .unwrap();
    assert_eq!(oseq, Oseq(4), "outputs continue after the regenerated ones");
    assert!(
        matches!(&primary.take_commands()[..], [Command::Release(outputs)] if outputs.len() == 1),
        "the replayed records were durable here (the former backup): released at once"
    );
    primary
        .pair_with_new_backup_from(Lsn(9), Bytes::from_static(b"full-after-9"))
        .unwrap();
    primary.flush();
    let first = primary.take_commands().into_iter().next();
    assert!(
        matches!(
            first,
            Some(Command::Send(PairMessage::Checkpoint {
                after_lsn: Lsn(9),
                ..
            }))
        ),
        "the given checkpoint goes first: {first:?}"
    );
}

#[test]
fn a_backup_is_promotable_only_once_its_primary_saw_it_caught_up() {
    let config = PrimaryConfig {
        catch_up_bytes_per_tick: 1,
        append_records_max: 1,
        ..PrimaryConfig::default()
    };
    let mut pair = Pair::new(config);
    log_clocks(&mut pair, 3);
    pair.primary.flush();
    pair.settle();
    pair.replace_backup();
    pair.primary.flush();
    pair.primary.heartbeat();
    pair.run_commands();
    // Deliver and persist what was sent, with no tick (no credit for more).
    while !pair.to_backup.is_empty() || !pair.disk_queue.is_empty() {
        pair.deliver(true, false, false);
        pair.finish_one_write();
        pair.run_commands();
    }
    while !pair.to_primary.is_empty() {
        pair.deliver(false, false, false);
    }
    assert_eq!(pair.primary.backup_state(), BackupState::CatchingUp);
    assert!(!pair.backup.is_promotable(), "still catching up");
    pair.settle();
    assert_eq!(pair.primary.backup_state(), BackupState::CaughtUp);
    pair.primary.heartbeat();
    pair.settle();
    assert!(pair.backup.is_promotable());
}
