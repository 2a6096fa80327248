//! The pair courier: carries a primary's pair messages to its backup's node
//! and hands the answers back to the primary's thread. Appends queued while an
//! exchange is in flight travel together (group commit).
//!
//! Why one exchange at a time: the backup's node serves one message at a time
//! and syncs each append on its own, so a second message in flight only
//! splits what would have travelled as one append into two fsyncs. Measured
//! (docs/benchmark.md, "Process pairs"): an ordered stream per backup with
//! two or four appends in flight gave fewer acknowledged stdin writes per
//! second than with one (8 writers, same runs: 2280–2360 and 1690–1820
//! against 2810–3160/s), and with one in flight it matched this courier. A
//! later try with the backup overlapping receiving and syncing (one sync
//! covering every append written while the previous one ran) and two appends
//! in flight gained nothing either on 2 cores (docs/benchmark.md, 11:45 UTC).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use understudy_pair::PairMessage;

use super::primary::{Outgoing, PrimaryEvent};
use super::ProcessRuntime;
use crate::wire::{ForwardRequest, ForwardResponse};

/// Deadline of one pair message's exchange.
const PAIR_EXCHANGE_DEADLINE: Duration = Duration::from_secs(1);

impl ProcessRuntime {
    /// Sends a primary's pair messages to its backup's node, one exchange at
    /// a time, and hands the answers back to the primary's thread.
    pub(super) async fn pair_courier(
        self: Arc<Self>,
        mut outgoing: UnboundedReceiver<Outgoing>,
        events: std::sync::mpsc::Sender<PrimaryEvent>,
    ) {
        while let Some(first) = outgoing.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = outgoing.try_recv() {
                batch.push(more);
            }
            let batch = coalesce_appends(batch);
            // Only the latest heartbeat matters.
            let last_heartbeat = batch.iter().rposition(|item| {
                matches!(
                    item,
                    Outgoing::Send {
                        message: PairMessage::Heartbeat { .. },
                        ..
                    }
                )
            });
            for (index, item) in batch.into_iter().enumerate() {
                let Outgoing::Send { to, message } = item else {
                    continue;
                };
                let is_heartbeat = matches!(message, PairMessage::Heartbeat { .. });
                if is_heartbeat && Some(index) != last_heartbeat {
                    continue;
                }
                let records = match &message {
                    PairMessage::Append { records, .. } => records.len() as u64,
                    _ => 0,
                };
                let started = tokio::time::Instant::now();
                let deadline = started + PAIR_EXCHANGE_DEADLINE;
                let answer = self
                    .service
                    .forward_to_node(to, ForwardRequest::Pair(message), deadline)
                    .await;
                let metrics = &self.shared().metrics;
                metrics.pair_exchanges.fetch_add(1, Ordering::Relaxed);
                metrics
                    .pair_exchange_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                metrics
                    .pair_records_sent
                    .fetch_add(records, Ordering::Relaxed);
                if let Ok(ForwardResponse::Pair(answers)) = answer {
                    let event = PrimaryEvent::Pair {
                        from: to,
                        messages: answers,
                    };
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Records per coalesced append, at most.
const COALESCED_APPEND_RECORDS_MAX: usize = 4096;
/// Payload bytes per coalesced append, at most (well inside a peer frame).
const COALESCED_APPEND_BYTES_MAX: usize = 1024 * 1024;

/// Group commit for the logging channel: appends queued while the previous
/// exchange was in flight, to the same backup, in the same epoch and
/// contiguous, travel as one append (so the backup syncs once for all of them).
fn coalesce_appends(batch: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut merged: Vec<Outgoing> = Vec::with_capacity(batch.len());
    for item in batch {
        if let (
            Some(Outgoing::Send {
                to: last_to,
                message:
                    PairMessage::Append {
                        epoch: last_epoch,
                        records: last_records,
                        ..
                    },
            }),
            Outgoing::Send {
                to,
                message: PairMessage::Append { epoch, records, .. },
            },
        ) = (merged.last_mut(), &item)
        {
            let contiguous = last_records.last().map(|record| record.lsn.next())
                == records.first().map(|record| record.lsn);
            let bytes: usize = last_records
                .iter()
                .chain(records.iter())
                .map(|record| record.payload.len())
                .sum();
            let fits = last_records.len() + records.len() <= COALESCED_APPEND_RECORDS_MAX
                && bytes <= COALESCED_APPEND_BYTES_MAX;
            if *last_to == *to && *last_epoch == *epoch && contiguous && fits {
                last_records.extend(records.iter().cloned());
                continue;
            }
        }
        merged.push(item);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use understudy_pair::{Epoch, Lsn, Pid, Record, RecordKind};

    fn append(to: u64, epoch: u64, lsns: std::ops::RangeInclusive<u64>) -> Outgoing {
        let records = lsns
            .map(|lsn| Record {
                lsn: Lsn(lsn),
                epoch: Epoch(epoch),
                kind: RecordKind::Random,
                payload: Bytes::from_static(b"x"),
                fuel_consumed: 0,
            })
            .collect();
        Outgoing::Send {
            to,
            message: PairMessage::Append {
                pid: Pid(1),
                epoch: Epoch(epoch),
                records,
            },
        }
    }

    fn shape(batch: &[Outgoing]) -> Vec<(u64, u64, u64)> {
        batch
            .iter()
            .map(|item| match item {
                Outgoing::Send {
                    to,
                    message: PairMessage::Append { records, .. },
                } => (*to, records[0].lsn.0, records.len() as u64),
                _ => (0, 0, 0),
            })
            .collect()
    }

    #[test]
    fn contiguous_appends_to_one_backup_travel_together() {
        let batch = vec![
            append(2, 1, 1..=2),
            append(2, 1, 3..=3),
            append(2, 1, 4..=6),
        ];
        assert_eq!(shape(&coalesce_appends(batch)), vec![(2, 1, 6)]);
    }

    #[test]
    fn a_gap_another_backup_or_another_epoch_keeps_appends_apart() {
        let batch = vec![
            append(2, 1, 1..=2),
            append(2, 1, 4..=4),
            append(3, 1, 5..=5),
            append(3, 2, 6..=6),
        ];
        assert_eq!(
            shape(&coalesce_appends(batch)),
            vec![(2, 1, 2), (2, 4, 1), (3, 5, 1), (3, 6, 1)]
        );
    }
}
