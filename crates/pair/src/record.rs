//! What a pair's log holds (records) and what a guest produces (outputs).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A process id, unique in the cluster for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid(pub u64);

/// A primary's term of office for one pid; raised by one at every promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch(pub u64);

/// A record's position in a pid's log: 1, 2, 3, … for the life of the pid
/// (not restarted in a new epoch); 0 means "no record".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The lsn after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

/// An output's position in a pid's output stream: 1, 2, 3, … for the life of
/// the pid. Receivers deduplicate by `(pid, oseq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Oseq(pub u64);

/// What a record says the guest observed (see docs/pairs.md, "The log").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecordKind {
    /// Bytes sent to the process's stdin (payload: the bytes; the idempotency
    /// key travels in the payload's framing, decided by the guest host).
    StdinArrived,
    /// Bytes a guest's stdin read returned (payload: the bytes).
    StdinData,
    /// Stdin was closed: a guest's stdin read returned end of input (empty
    /// payload).
    StdinEof,
    /// The guest consumed buffered stdin (payload: the byte count).
    StdinRead,
    /// A reading of WASI clock `clock_id` (payload: nanoseconds, u64 LE).
    Clock {
        /// The WASI clock id the guest asked for.
        clock_id: u32,
    },
    /// Random bytes (payload: the bytes).
    Random,
    /// Reserved, never produced: a `poll_oneoff` sleep is logged as the clock
    /// readings that fix and end it (docs/pairs.md, "Sleeps"). Kept so that
    /// the encoding of the kinds after it does not change.
    SleepDone,
    /// A reactor handler was called (payload: the record handed to it).
    HandlerCall,
    /// The host killed a runaway guest (payload: the reason).
    Kill,
}

/// One logged observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its position in the pid's log.
    pub lsn: Lsn,
    /// The epoch of the primary that logged it.
    pub epoch: Epoch,
    /// What was observed.
    pub kind: RecordKind,
    /// The observed value.
    pub payload: Bytes,
    /// Fuel the guest had consumed when it made the host call: a replay must
    /// reach the call at the same position.
    pub fuel_consumed: u64,
}

/// Which stream an output goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// File descriptor 1.
    Stdout,
    /// File descriptor 2.
    Stderr,
}

/// Bytes the guest wrote, held until the record they depend on is durable at
/// the backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// Its position in the pid's output stream.
    pub oseq: Oseq,
    /// Where it goes.
    pub stream: Stream,
    /// The bytes.
    pub bytes: Bytes,
    /// The last record logged before the guest wrote it: everything the output
    /// can depend on. Released only once the backup acknowledged this lsn.
    pub depends_on: Lsn,
}
