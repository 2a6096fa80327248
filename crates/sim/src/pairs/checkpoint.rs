//! What a simulated checkpoint holds, and its encoding.
//!
//! Simplification (documented in docs/simulator.md): the guest crate's real
//! capture and restore of memory are not used here. A checkpoint is encoded as
//! `(epoch, after_lsn, last_oseq, unreleased outputs)`; the guest's memory at
//! that point is stood in for by the log prefix up to `after_lsn`, which the
//! simulation keeps in an *archive* keyed by `(epoch, after_lsn)`. A promoted
//! backup rebuilds the guest by replaying that prefix (discarding the outputs
//! the prefix regenerates: they are inside the checkpoint's memory), takes the
//! unreleased outputs from the decoded checkpoint alone, and replays only the
//! records after `after_lsn` from its own log. So an output missing from the
//! checkpoint is lost for good, as it would be with a real restore.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;
use understudy_pair::{Epoch, Lsn, Oseq, Output, Record, Stream};

/// The content of a simulated checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SimCheckpoint {
    /// The epoch of the primary that took it (with `after_lsn`, the archive's
    /// key).
    pub(super) epoch: Epoch,
    /// The last record it includes.
    pub(super) after_lsn: Lsn,
    /// The last oseq the guest had written.
    pub(super) last_oseq: Oseq,
    /// Outputs the output store had not confirmed, oldest first.
    pub(super) unreleased: Vec<Output>,
}

/// The log prefixes standing in for checkpointed memory.
pub(super) type Archive = BTreeMap<(Epoch, Lsn), Vec<Record>>;

impl SimCheckpoint {
    /// `epoch, after_lsn, last_oseq, count` (u64 LE each), then per output
    /// `oseq, depends_on` (u64 LE), `stream` (u8: 1 stdout, 2 stderr),
    /// `length` (u32 LE) and the bytes.
    pub(super) fn encode(&self) -> Bytes {
        let mut bytes = BytesMut::new();
        bytes.put_u64_le(self.epoch.0);
        bytes.put_u64_le(self.after_lsn.0);
        bytes.put_u64_le(self.last_oseq.0);
        bytes.put_u64_le(self.unreleased.len() as u64);
        for output in &self.unreleased {
            bytes.put_u64_le(output.oseq.0);
            bytes.put_u64_le(output.depends_on.0);
            bytes.put_u8(match output.stream {
                Stream::Stdout => 1,
                Stream::Stderr => 2,
            });
            bytes.put_u32_le(output.bytes.len() as u32);
            bytes.put_slice(&output.bytes);
        }
        bytes.freeze()
    }

    /// Decodes [`SimCheckpoint::encode`]'s bytes, checking every length first.
    pub(super) fn decode(mut bytes: Bytes) -> Result<SimCheckpoint, String> {
        let truncated = || "a truncated checkpoint".to_string();
        if bytes.remaining() < 32 {
            return Err(truncated());
        }
        let epoch = Epoch(bytes.get_u64_le());
        let after_lsn = Lsn(bytes.get_u64_le());
        let last_oseq = Oseq(bytes.get_u64_le());
        let count = bytes.get_u64_le();
        let mut unreleased = Vec::new();
        for _ in 0..count {
            if bytes.remaining() < 21 {
                return Err(truncated());
            }
            let oseq = Oseq(bytes.get_u64_le());
            let depends_on = Lsn(bytes.get_u64_le());
            let stream = match bytes.get_u8() {
                1 => Stream::Stdout,
                2 => Stream::Stderr,
                other => return Err(format!("checkpoint output stream {other}")),
            };
            let length = bytes.get_u32_le() as usize;
            if bytes.remaining() < length {
                return Err(truncated());
            }
            unreleased.push(Output {
                oseq,
                stream,
                bytes: bytes.split_to(length),
                depends_on,
            });
        }
        if bytes.has_remaining() {
            return Err("bytes after the checkpoint".to_string());
        }
        Ok(SimCheckpoint {
            epoch,
            after_lsn,
            last_oseq,
            unreleased,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_decodes_to_what_was_encoded_and_truncation_is_refused() {
        let checkpoint = SimCheckpoint {
            epoch: Epoch(3),
            after_lsn: Lsn(9),
            last_oseq: Oseq(4),
            unreleased: vec![Output {
                oseq: Oseq(4),
                stream: Stream::Stderr,
                bytes: Bytes::from_static(b"late\n"),
                depends_on: Lsn(8),
            }],
        };
        let encoded = checkpoint.encode();
        assert_eq!(SimCheckpoint::decode(encoded.clone()), Ok(checkpoint));
        for length in 0..encoded.len() {
            assert!(SimCheckpoint::decode(encoded.slice(..length)).is_err());
        }
    }
}
