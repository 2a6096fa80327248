//! The peer protocol's frames.
//!
//! A frame is `[magic u32][version u8][kind u8][length u32][crc32c u32][payload]`
//! (big-endian). The length is checked against `PEER_FRAME_BYTES_MAX` before
//! anything is allocated, and the checksum before the payload is decoded
//! (postcard). Every payload is an [`Envelope`] naming the cluster, the sender and
//! its boot incarnation, so a frame from another cluster or an older process of
//! the same node is recognised and refused.

use crate::process::primary::LiveStatus;
use crate::process::table::{ProcessCommand, ProcessEntry, ProcessOutcome, ProcessRefusal};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use understudy_api::service::{AddMember, ClusterStatus};
use understudy_kv::{Command, KeyValue, KvError, RequestId, Response};
use understudy_pair::PairMessage;
use understudy_raft::Message;
use understudy_types::limits::PEER_FRAME_BYTES_MAX;

/// First four bytes of every frame ("USTD").
pub const FRAME_MAGIC: u32 = 0x5553_5444;
/// The only frame format version this build speaks.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before a frame's payload.
pub const FRAME_HEADER_BYTES: usize = 14;

/// The first frame on every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handshake {
    /// The node the connection is meant for.
    pub to: u64,
    /// Where the sender's peer listener is, so that a node that joined a running
    /// cluster (and knows no addresses yet) can answer its leader.
    pub peer_address: String,
}

/// A request forwarded from a node that is not the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// A key-value write.
    Write(Command),
    /// A linearizable read of one key.
    Get(Bytes),
    /// A linearizable prefix range.
    Range {
        /// The prefix.
        prefix: Bytes,
        /// At most this many items.
        limit: u64,
    },
    /// Add a member.
    AddMember(AddMember),
    /// Remove a member.
    RemoveMember(u64),
    /// Record where a member can be reached (members register themselves).
    RegisterAddress {
        /// The member.
        id: u64,
        /// Its peer address.
        peer: String,
        /// Its client URL.
        client: String,
    },
    /// This node's own view of the cluster (for `GET /v1/cluster` on another
    /// node, which gathers each member's own indexes). Answered by any node.
    LocalStatus,
    /// A process-table change, for the leader to commit.
    Process(ProcessCommand),
    /// A pair message from a pid's primary to its backup's node.
    Pair(PairMessage),
    /// A stdin write for the primary running on the receiving node.
    ProcessStdin {
        /// The process.
        pid: u64,
        /// The bytes.
        bytes: Bytes,
        /// Close stdin after them.
        eof: bool,
        /// Its idempotency key.
        request: Option<RequestId>,
    },
    /// The live numbers of a primary running on the receiving node.
    ProcessLive {
        /// The process.
        pid: u64,
    },
    /// The receiving node's table entry of a pid (asked of the leader by a
    /// node whose own table does not have it yet, e.g. after a restart).
    ProcessEntry {
        /// The process.
        pid: u64,
    },
}

/// Why a forwarded stdin write failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdinFailure {
    /// Bad input (stdin closed, sequence superseded).
    BadRequest(String),
    /// Not applied; retry.
    Unavailable(String),
}

/// Why a forwarded request failed, mirroring the service errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireError {
    /// Never appended anywhere.
    Unavailable(String),
    /// Outcome unknown.
    Timeout(String),
    /// Refused by the state machine.
    Rejected(KvError),
    /// A nonsensical membership request.
    InvalidCluster(String),
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// A write's result.
    Write(Result<Response, WireError>),
    /// A read's item and revision.
    Get(Result<(Option<KeyValue>, u64), WireError>),
    /// A range's items, whether more match, and the revision.
    Range(Result<(Vec<KeyValue>, bool, u64), WireError>),
    /// The cluster after a membership change.
    Cluster(Result<ClusterStatus, WireError>),
    /// A process-table change's outcome.
    Process(Result<Result<ProcessOutcome, ProcessRefusal>, WireError>),
    /// The backup's answers to a pair message.
    Pair(Vec<PairMessage>),
    /// A stdin write's offset.
    ProcessStdin(Result<u64, StdinFailure>),
    /// A primary's live numbers, if it runs there.
    ProcessLive(Option<LiveStatus>),
    /// A table entry, if the pid exists there.
    ProcessEntry(Option<Box<ProcessEntry>>),
}

/// What a frame says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Opens a connection.
    Handshake(Handshake),
    /// A Raft message.
    Raft(Message),
    /// A forwarded client request.
    ForwardRequest(ForwardRequest),
    /// The answer to a forwarded request.
    ForwardResponse(ForwardResponse),
}

impl Payload {
    /// The frame kind byte of this payload.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Handshake(_) => 1,
            Payload::Raft(_) => 2,
            Payload::ForwardRequest(_) => 3,
            Payload::ForwardResponse(_) => 4,
        }
    }
}

/// The sender's identity plus one payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The sender's node id.
    pub from: u64,
    /// The sender's boot incarnation.
    pub incarnation: u64,
    /// What it says.
    pub payload: Payload,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a frame of this protocol.
    #[error("bad frame: {0}")]
    Bad(String),
}

/// Serializes an envelope into one frame.
pub fn encode_frame(envelope: &Envelope) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_allocvec(envelope)
        .map_err(|error| FrameError::Bad(format!("cannot encode: {error}")))?;
    if payload.len() as u64 > PEER_FRAME_BYTES_MAX {
        return Err(FrameError::Bad(format!(
            "payload of {} bytes exceeds the frame limit",
            payload.len()
        )));
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    frame.extend_from_slice(&FRAME_MAGIC.to_be_bytes());
    frame.push(FRAME_VERSION);
    frame.push(envelope.payload.kind());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    envelope: &Envelope,
) -> Result<(), FrameError> {
    let frame = encode_frame(envelope)?;
    writer.write_all(&frame).await?;
    Ok(())
}

/// Reads one frame, checking magic, version, length and checksum before decoding.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Envelope, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    reader.read_exact(&mut header).await?;
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    if magic != FRAME_MAGIC {
        return Err(FrameError::Bad(format!("magic {magic:#x}")));
    }
    if header[4] != FRAME_VERSION {
        return Err(FrameError::Bad(format!("version {}", header[4])));
    }
    let kind = header[5];
    let length = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    let checksum = u32::from_be_bytes([header[10], header[11], header[12], header[13]]);
    if u64::from(length) > PEER_FRAME_BYTES_MAX {
        return Err(FrameError::Bad(format!(
            "length {length} exceeds the limit"
        )));
    }
    let mut payload = vec![0u8; length as usize];
    reader.read_exact(&mut payload).await?;
    if crc32c::crc32c(&payload) != checksum {
        return Err(FrameError::Bad("checksum mismatch".into()));
    }
    let envelope: Envelope = postcard::from_bytes(&payload)
        .map_err(|error| FrameError::Bad(format!("undecodable payload: {error}")))?;
    if envelope.payload.kind() != kind {
        return Err(FrameError::Bad(format!(
            "kind {kind} does not match payload"
        )));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            cluster_id: 5,
            from: 1,
            incarnation: 3,
            payload: Payload::Handshake(Handshake {
                to: 2,
                peer_address: "127.0.0.1:1".into(),
            }),
        }
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let frame = encode_frame(&envelope()).expect("encodes");
        let decoded = read_frame(&mut frame.as_slice()).await.expect("decodes");
        assert_eq!(decoded, envelope());
    }

    #[tokio::test]
    async fn damaged_frames_are_refused() {
        let frame = encode_frame(&envelope()).expect("encodes");
        for position in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[position] ^= 0x40;
            assert!(
                read_frame(&mut damaged.as_slice()).await.is_err(),
                "flipping byte {position} went unnoticed"
            );
        }
        let mut oversized = frame.clone();
        oversized[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            read_frame(&mut oversized.as_slice()).await,
            Err(FrameError::Bad(_))
        ));
    }
}
