//! What a new primary rebuilds from the log it replays (after the checkpoint
//! it restored, if any): the stdin still to be read, the idempotency window of
//! stdin writes, and the floor of the monotonic clock (its live source is the
//! guest crate's `SystemInputs`). A checkpoint carries the same summary of the
//! records it covers as its extra bytes ([`ShellSnapshot`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use understudy_guest::{Record, RecordKind, CLOCK_MONOTONIC};
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

/// The shell's state a checkpoint carries (its extra bytes): what
/// [`summarize`] would say of the records the checkpoint covers, except the
/// unread stdin, which the guest's host state carries (its stdin backlog).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellSnapshot {
    /// Stdin bytes accepted in all.
    pub stdin_offset: u64,
    /// Whether stdin was closed.
    pub stdin_closed: bool,
    /// Each client's latest write: client id, sequence, offset, lsn.
    pub window: Vec<(Bytes, u64, u64, u64)>,
    /// The last monotonic clock reading logged.
    pub monotonic_nanos: u64,
}

impl ShellSnapshot {
    /// The extra bytes of a checkpoint.
    pub fn encode(&self) -> Bytes {
        // Plain data into a Vec: cannot fail.
        Bytes::from(postcard::to_allocvec(self).expect("postcard encodes plain data"))
    }

    /// Parses a checkpoint's extra bytes.
    pub fn decode(bytes: &[u8]) -> Result<ShellSnapshot, String> {
        postcard::from_bytes(bytes)
            .map_err(|error| format!("the checkpoint's shell state does not decode: {error}"))
    }

    /// The summary it stands for.
    pub fn into_summary(self) -> LogSummary {
        let window = self
            .window
            .into_iter()
            .map(|(client, sequence, offset, lsn)| {
                let entry = WindowEntry {
                    sequence,
                    offset,
                    lsn: Lsn(lsn),
                };
                (client, entry)
            })
            .collect();
        LogSummary {
            stdin_offset: self.stdin_offset,
            stdin_closed: self.stdin_closed,
            unread: Vec::new(),
            window,
            monotonic_nanos: self.monotonic_nanos,
        }
    }
}

/// The reading a monotonic clock record holds.
pub fn monotonic_reading(record: &Record) -> Option<u64> {
    match record.kind {
        RecordKind::Clock { clock_id } if clock_id == CLOCK_MONOTONIC => {
            <[u8; 8]>::try_from(record.payload.as_ref())
                .ok()
                .map(u64::from_le_bytes)
        }
        _ => None,
    }
}

/// Reads `records`: accepted stdin (arrivals) against consumed stdin (a
/// command's reads, a reactor's handler calls).
pub fn summarize(records: &[Record]) -> LogSummary {
    continue_summary(LogSummary::default(), records)
}

/// [`summarize`] for records that follow those `summary` describes (a
/// checkpoint's): its unread bytes come first, reads consume them first.
pub fn continue_summary(mut summary: LogSummary, records: &[Record]) -> LogSummary {
    let mut arrived: Vec<Bytes> = std::mem::take(&mut summary.unread);
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
            _ => {
                if let Some(nanos) = monotonic_reading(record) {
                    summary.monotonic_nanos = nanos;
                }
            }
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
    fn a_summary_continues_a_checkpoint_shell_state() {
        let snapshot = ShellSnapshot {
            stdin_offset: 6,
            stdin_closed: false,
            window: vec![(Bytes::from_static(b"c"), 1, 6, 1)],
            monotonic_nanos: 50,
        };
        let decoded = ShellSnapshot::decode(&snapshot.encode()).expect("round trip");
        assert_eq!(decoded, snapshot);
        assert!(ShellSnapshot::decode(b"\xff\xff\xff").is_err());
        let records = vec![
            record(4, RecordKind::StdinArrived, arrival(b"7\n8\n", 2, 10)),
            record(5, RecordKind::StdinData, Bytes::from_static(b"7\n")),
        ];
        let summary = continue_summary(decoded.into_summary(), &records);
        assert_eq!(summary.stdin_offset, 10);
        assert_eq!(summary.unread, vec![Bytes::from_static(b"8\n")]);
        assert_eq!(summary.monotonic_nanos, 50, "no newer reading logged");
        let entry = summary.window[&Bytes::from_static(b"c")];
        assert_eq!((entry.sequence, entry.offset, entry.lsn), (2, 10, Lsn(4)));
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
        let mut source = understudy_guest::SystemInputs::with_monotonic_floor(77);
        assert!(understudy_guest::HostInputs::clock(&mut source, CLOCK_MONOTONIC) >= 77);
    }
}
