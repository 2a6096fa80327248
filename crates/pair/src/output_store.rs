//! The output store's rule for one pid (docs/pairs.md, rule 6): each oseq is
//! accepted once, a repeat must carry identical bytes, and a stale epoch adds
//! nothing beyond what the current epoch regenerates.
//!
//! It is deterministic state, meant to live in a replicated state machine (the
//! coordinator's group) next to the process table, which tells it the current
//! epoch. Readers see each stream as bytes from offset 0.

use crate::record::{Epoch, Oseq, Output, Stream};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Where one accepted output sits in its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Placed {
    stream: Stream,
    offset: u64,
    length: u64,
}

/// How an output was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// New bytes, appended to their stream.
    New,
    /// An oseq already stored, with the same bytes: nothing changed.
    Repeat,
}

/// Why an output was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputRefusal {
    /// The same oseq arrived with different bytes: the guest is not
    /// deterministic (or the host recorded an input wrongly). Reported loudly;
    /// the first bytes stay.
    #[error("oseq {} repeated with different bytes: a determinism bug", oseq.0)]
    Mismatch {
        /// The oseq.
        oseq: Oseq,
    },
    /// An older epoch's primary offered an output the current epoch has not
    /// produced: a stale primary adds nothing.
    #[error("oseq {} from stale epoch {} (current {})", oseq.0, epoch.0, current.0)]
    Stale {
        /// The oseq.
        oseq: Oseq,
        /// The sender's epoch.
        epoch: Epoch,
        /// The store's epoch.
        current: Epoch,
    },
    /// The output is not the next one: earlier ones must arrive first.
    #[error("oseq {} arrived before oseq {}", oseq.0, expected.0)]
    OutOfOrder {
        /// The oseq offered.
        oseq: Oseq,
        /// The next oseq the store takes.
        expected: Oseq,
    },
    /// From an epoch the store has not heard of yet.
    #[error("epoch {} is newer than the store's {}", epoch.0, current.0)]
    FutureEpoch {
        /// The sender's epoch.
        epoch: Epoch,
        /// The store's epoch.
        current: Epoch,
    },
}

/// The released output of one pid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStore {
    epoch: Epoch,
    /// By oseq - 1.
    placed: Vec<Placed>,
    stdout: BytesMut,
    stderr: BytesMut,
}

impl Default for OutputStore {
    fn default() -> OutputStore {
        OutputStore::new()
    }
}

impl OutputStore {
    /// An empty store for a pid born in epoch 1.
    pub fn new() -> OutputStore {
        OutputStore {
            epoch: Epoch(1),
            placed: Vec::new(),
            stdout: BytesMut::new(),
            stderr: BytesMut::new(),
        }
    }

    /// The epoch whose primary may add outputs.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The next oseq the store takes.
    pub fn next_oseq(&self) -> Oseq {
        Oseq(self.placed.len() as u64 + 1)
    }

    /// A promotion committed: from now on only `epoch`'s primary adds outputs.
    pub fn advance_epoch(&mut self, epoch: Epoch) {
        assert!(epoch > self.epoch, "epochs only move forward");
        self.epoch = epoch;
    }

    /// The bytes released on `stream` so far (its next offset), without a copy.
    pub fn len(&self, stream: Stream) -> u64 {
        self.stream(stream).len() as u64
    }

    /// A copy of the bytes of `stream` from `offset` on (empty past the end).
    pub fn read(&self, stream: Stream, offset: u64) -> Bytes {
        let bytes = self.stream(stream);
        let start = usize::try_from(offset).map_or(bytes.len(), |offset| offset.min(bytes.len()));
        Bytes::copy_from_slice(&bytes[start..])
    }

    fn stream(&self, stream: Stream) -> &BytesMut {
        match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// Takes `output` from the primary of `epoch`, or says why not.
    pub fn accept(&mut self, epoch: Epoch, output: &Output) -> Result<Accepted, OutputRefusal> {
        if epoch > self.epoch {
            return Err(OutputRefusal::FutureEpoch {
                epoch,
                current: self.epoch,
            });
        }
        let oseq = output.oseq;
        let expected = self.next_oseq();
        if oseq < expected {
            return self.check_repeat(output);
        }
        if epoch < self.epoch {
            return Err(OutputRefusal::Stale {
                oseq,
                epoch,
                current: self.epoch,
            });
        }
        if oseq > expected {
            return Err(OutputRefusal::OutOfOrder { oseq, expected });
        }
        let target = match output.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        self.placed.push(Placed {
            stream: output.stream,
            offset: target.len() as u64,
            length: output.bytes.len() as u64,
        });
        target.extend_from_slice(&output.bytes);
        Ok(Accepted::New)
    }

    fn check_repeat(&self, output: &Output) -> Result<Accepted, OutputRefusal> {
        let mismatch = OutputRefusal::Mismatch { oseq: output.oseq };
        // oseq >= 1 and below next_oseq, so the index is in range.
        let placed = &self.placed[(output.oseq.0 - 1) as usize];
        if placed.stream != output.stream || placed.length != output.bytes.len() as u64 {
            return Err(mismatch);
        }
        let start = placed.offset as usize;
        let stored = &self.stream(placed.stream)[start..start + output.bytes.len()];
        if stored == output.bytes.as_ref() {
            Ok(Accepted::Repeat)
        } else {
            Err(mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Lsn;

    fn output(oseq: u64, text: &str) -> Output {
        Output {
            oseq: Oseq(oseq),
            stream: Stream::Stdout,
            bytes: Bytes::copy_from_slice(text.as_bytes()),
            depends_on: Lsn(0),
        }
    }

    #[test]
    fn each_oseq_is_taken_once_in_order_and_repeats_must_match() {
        let mut store = OutputStore::new();
        assert_eq!(store.accept(Epoch(1), &output(1, "a")), Ok(Accepted::New));
        assert_eq!(
            store.accept(Epoch(1), &output(3, "c")),
            Err(OutputRefusal::OutOfOrder {
                oseq: Oseq(3),
                expected: Oseq(2)
            })
        );
        assert_eq!(store.accept(Epoch(1), &output(2, "bb")), Ok(Accepted::New));
        assert_eq!(
            store.accept(Epoch(1), &output(2, "bb")),
            Ok(Accepted::Repeat)
        );
        assert_eq!(
            store.accept(Epoch(1), &output(2, "bX")),
            Err(OutputRefusal::Mismatch { oseq: Oseq(2) })
        );
        assert_eq!(
            store.accept(Epoch(1), &output(1, "ab")),
            Err(OutputRefusal::Mismatch { oseq: Oseq(1) })
        );
        assert_eq!(store.read(Stream::Stdout, 0), Bytes::from_static(b"abb"));
        assert_eq!(store.read(Stream::Stdout, 2), Bytes::from_static(b"b"));
        assert_eq!(store.read(Stream::Stdout, 99), Bytes::new());
        assert_eq!(store.read(Stream::Stderr, 0), Bytes::new());
        assert_eq!(store.len(Stream::Stdout), 3);
        assert_eq!(store.len(Stream::Stderr), 0);
    }

    #[test]
    fn a_stale_epoch_may_only_repeat_what_is_stored() {
        let mut store = OutputStore::new();
        store.accept(Epoch(1), &output(1, "a")).unwrap();
        store.advance_epoch(Epoch(2));
        // The old primary's late release of oseq 1: a harmless repeat.
        assert_eq!(
            store.accept(Epoch(1), &output(1, "a")),
            Ok(Accepted::Repeat)
        );
        // Its oseq 2 is not taken: the new epoch regenerates it.
        assert!(matches!(
            store.accept(Epoch(1), &output(2, "b")),
            Err(OutputRefusal::Stale { .. })
        ));
        assert_eq!(store.accept(Epoch(2), &output(2, "b")), Ok(Accepted::New));
        assert!(matches!(
            store.accept(Epoch(3), &output(3, "c")),
            Err(OutputRefusal::FutureEpoch { .. })
        ));
        assert_eq!(store.next_oseq(), Oseq(3));
    }

    #[test]
    fn streams_keep_their_own_offsets() {
        let mut store = OutputStore::new();
        store.accept(Epoch(1), &output(1, "out")).unwrap();
        let mut error = output(2, "err");
        error.stream = Stream::Stderr;
        store.accept(Epoch(1), &error).unwrap();
        store.accept(Epoch(1), &output(3, "put")).unwrap();
        assert_eq!(store.read(Stream::Stdout, 0), Bytes::from_static(b"output"));
        assert_eq!(store.read(Stream::Stderr, 0), Bytes::from_static(b"err"));
        // The repeat check finds stderr bytes at their own offset.
        assert_eq!(store.accept(Epoch(1), &error), Ok(Accepted::Repeat));
    }
}
