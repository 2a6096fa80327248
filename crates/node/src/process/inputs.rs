//! What a primary's guest observes live, and what a new primary rebuilds from
//! the log it replays: the stdin still to be read, the idempotency window of
//! stdin writes, and the floor of the monotonic clock.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use understudy_guest::{
    HostInputs, Record, RecordKind, StdinRead, CLOCK_MONOTONIC, CLOCK_REALTIME,
};
use understudy_pair::Lsn;

/// A client's stdin write as its `StdinArrived` record carries it. Logged when
/// the write arrives (before the guest reads it), so the write can be
/// acknowledged once the backup has it and its key survives a failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdinArrival {
    /// The client id of its idempotency key, if any.
    pub client: Option<Bytes>,
    /// The client's sequence number.
    pub sequence: u64,
    /// The bytes.
    pub bytes: Bytes,
    /// Whether it closed stdin.
    pub eof: bool,
    /// Bytes of stdin accepted once these were added.
    pub offset: u64,
}

impl StdinArrival {
    /// The record payload.
    pub fn encode(&self) -> Bytes {
        // Plain data into a Vec: cannot fail.
        Bytes::from(postcard::to_allocvec(self).expect("postcard encodes plain data"))
    }

    /// Parses a record payload.
    pub fn decode(payload: &[u8]) -> Option<StdinArrival> {
        postcard::from_bytes(payload).ok()
    }
}

/// The live source of a primary running on a node: stdin queued by clients,
/// the system clocks (the monotonic one never below the last value the log
/// holds, so it does not go backwards across a failover) and OS randomness.
#[derive(Debug)]
pub struct NodeSource {
    stdin: VecDeque<Bytes>,
    stdin_closed: bool,
    started: Instant,
    monotonic_floor_nanos: u64,
}

impl NodeSource {
    /// A source whose monotonic clock starts above `monotonic_floor_nanos`.
    pub fn new(monotonic_floor_nanos: u64) -> NodeSource {
        NodeSource {
            stdin: VecDeque::new(),
            stdin_closed: false,
            started: Instant::now(),
            monotonic_floor_nanos,
        }
    }

    /// Queues stdin bytes.
    pub fn push_stdin(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.stdin.push_back(bytes);
        }
    }

    /// Closes stdin (reads return end of input once the queue is drained).
    pub fn close_stdin(&mut self) {
        self.stdin_closed = true;
    }
}

impl HostInputs for NodeSource {
    fn read_stdin(&mut self, max: usize) -> StdinRead {
        let Some(front) = self.stdin.front_mut() else {
            return if self.stdin_closed {
                StdinRead::Eof
            } else {
                StdinRead::Pending
            };
        };
        if front.len() <= max {
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
        let elapsed = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.monotonic_floor_nanos.saturating_add(elapsed)
    }

    fn random(&mut self, length: usize) -> Bytes {
        let mut bytes = vec![0; length];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Bytes::from(bytes)
    }
}

/// One client's latest stdin write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowEntry {
    /// Its sequence number.
    pub sequence: u64,
    /// The offset it was answered with.
    pub offset: u64,
    /// Its record.
    pub lsn: Lsn,
}

/// What a log says about stdin and clocks, for a primary continuing it.
#[derive(Debug, Default)]
pub struct LogSummary {
    /// Stdin bytes accepted in all.
    pub stdin_offset: u64,
    /// Whether stdin was closed.
    pub stdin_closed: bool,
    /// Accepted bytes the guest has not consumed yet, in order.
    pub unread: Vec<Bytes>,
    /// Each client's latest write.
    pub window: HashMap<Bytes, WindowEntry>,
    /// The last monotonic clock reading logged.
    pub monotonic_nanos: u64,
}

/// Reads `records`: accepted stdin (arrivals) against consumed stdin (a
/// command's reads, a reactor's handler calls).
pub fn summarize(records: &[Record]) -> LogSummary {
    let mut summary = LogSummary::default();
    let mut arrived: Vec<Bytes> = Vec::new();
    let mut consumed: u64 = 0;
    for record in records {
        match record.kind {
            RecordKind::StdinArrived => {
                let Some(arrival) = StdinArrival::decode(&record.payload) else {
                    continue;
                };
                summary.stdin_offset = arrival.offset;
                summary.stdin_closed |= arrival.eof;
                if let Some(client) = arrival.client.clone() {
                    let entry = WindowEntry {
                        sequence: arrival.sequence,
                        offset: arrival.offset,
                        lsn: record.lsn,
                    };
                    summary.window.insert(client, entry);
                }
                arrived.push(arrival.bytes);
            }
            RecordKind::StdinData | RecordKind::HandlerCall => {
                consumed += record.payload.len() as u64;
            }
            RecordKind::Clock { clock_id } if clock_id == CLOCK_MONOTONIC => {
                if let Ok(nanos) = <[u8; 8]>::try_from(record.payload.as_ref()) {
                    summary.monotonic_nanos = u64::from_le_bytes(nanos);
                }
            }
            _ => {}
        }
    }
    let mut skip = consumed;
    for bytes in arrived {
        let length = bytes.len() as u64;
        if skip >= length {
            skip -= length;
            continue;
        }
        summary.unread.push(bytes.slice(skip as usize..));
        skip = 0;
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_guest::Epoch;

    fn record(lsn: u64, kind: RecordKind, payload: Bytes) -> Record {
        Record {
            lsn: Lsn(lsn),
            epoch: Epoch(1),
            kind,
            payload,
            fuel_consumed: 0,
        }
    }

    fn arrival(bytes: &'static [u8], sequence: u64, offset: u64) -> Bytes {
        StdinArrival {
            client: Some(Bytes::from_static(b"c")),
            sequence,
            bytes: Bytes::from_static(bytes),
            eof: false,
            offset,
        }
        .encode()
    }

    #[test]
    fn unread_stdin_is_what_arrived_minus_what_was_read() {
        let records = vec![
            record(1, RecordKind::StdinArrived, arrival(b"12\n34\n", 1, 6)),
            record(2, RecordKind::StdinData, Bytes::from_static(b"12\n3")),
            record(3, RecordKind::StdinArrived, arrival(b"5\n", 2, 8)),
        ];
        let summary = summarize(&records);
        let unread: Vec<u8> = summary
            .unread
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect();
        assert_eq!(unread, b"4\n5\n");
        assert_eq!(summary.stdin_offset, 8);
        let entry = summary.window[&Bytes::from_static(b"c")];
        assert_eq!((entry.sequence, entry.offset, entry.lsn), (2, 8, Lsn(3)));
    }

    #[test]
    fn the_monotonic_floor_is_the_last_logged_reading() {
        let reading = Bytes::copy_from_slice(&77u64.to_le_bytes());
        let records = vec![record(
            1,
            RecordKind::Clock {
                clock_id: CLOCK_MONOTONIC,
            },
            reading,
        )];
        assert_eq!(summarize(&records).monotonic_nanos, 77);
        let mut source = NodeSource::new(77);
        assert!(source.clock(CLOCK_MONOTONIC) >= 77);
    }
}
