//! InstallSnapshot (Figure 13, dissertation §5), sent in bounded chunks.
//!
//! The leader streams its latest snapshot to a follower whose next index was
//! compacted away: at most `inflight_appends_max` chunks of at most
//! `snapshot_chunk_bytes_max` bytes in flight, resumable from the offset the
//! follower acknowledges, restarted from 0 if the leader's snapshot changes.
//!
//! The follower assembles chunks of one snapshot from one leader in one term
//! (two leaders may serialize the same state differently, so chunks are never
//! mixed), accepting only the chunk at the offset it expects. When the last chunk
//! arrives it emits `Command::InstallSnapshot` and answers `installed: true` only
//! once that install is durable.

use crate::command::Command;
use crate::entry::SnapshotMeta;
use crate::message::MessageBody;
use crate::node::RaftNode;
use crate::progress::{ReplicationState, SnapshotTransfer};
use crate::state::LeaderState;
use bytes::{Bytes, BytesMut};
use understudy_types::{LogIndex, NodeId, Term};

/// A snapshot being received.
#[derive(Debug)]
pub(crate) struct SnapshotAssembly {
    leader: NodeId,
    term: Term,
    meta: SnapshotMeta,
    total_bytes: u64,
    received: BytesMut,
}

/// The fields of a snapshot chunk, as received.
pub(crate) struct Chunk {
    pub(crate) meta: SnapshotMeta,
    pub(crate) offset: u64,
    pub(crate) total_bytes: u64,
    pub(crate) data: Bytes,
}

impl RaftNode {
    /// Sends as many chunks of the current snapshot to `peer` as the window allows.
    pub(crate) fn send_snapshot_chunks(&mut self, peer: NodeId) {
        let chunk_bytes_max = self.config.snapshot_chunk_bytes_max;
        let window_bytes = chunk_bytes_max.saturating_mul(self.config.inflight_appends_max as u64);
        let snapshot_index = self.log.snapshot().last_index;
        let data = self.log.snapshot_data().clone();
        let total_bytes = data.len() as u64;
        loop {
            let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, peer) else {
                return;
            };
            let ReplicationState::Snapshot(transfer) = &mut progress.state else {
                return;
            };
            if transfer.last_index != snapshot_index {
                // The leader compacted again: the old stream is useless.
                *transfer = SnapshotTransfer::new(snapshot_index);
                progress.stalled_ticks = 0;
            }
            if transfer.final_chunk_sent
                || transfer.next_offset - transfer.acknowledged_offset >= window_bytes
            {
                return;
            }
            let start = transfer.next_offset;
            let end = start.saturating_add(chunk_bytes_max).min(total_bytes);
            transfer.next_offset = end;
            transfer.final_chunk_sent = end == total_bytes;
            // start <= end <= total_bytes = data.len(), so the casts and slice are in range.
            let chunk = data.slice(start as usize..end as usize);
            let body = MessageBody::SnapshotChunk {
                meta: self.log.snapshot().clone(),
                offset: start,
                total_bytes,
                data: chunk,
            };
            self.send(peer, body);
        }
    }

    /// The leader handles a snapshot answer of its term.
    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        last_index: LogIndex,
        next_offset: u64,
        installed: bool,
    ) {
        let last_log_index = self.log.last_index();
        let Some(progress) = LeaderState::progress_mut(&mut self.leader_state, from) else {
            return;
        };
        progress.recently_active = true;
        if installed {
            assert!(
                last_index <= last_log_index,
                "{from} installed a snapshot at {last_index} beyond the leader's log"
            );
            let advanced = progress.acknowledge(last_index);
            if matches!(progress.state, ReplicationState::Snapshot(_)) {
                let next_index = progress.match_index.next();
                progress.become_probe(next_index);
            }
            if advanced {
                self.maybe_commit();
            }
            self.send_append(from);
            return;
        }
        if let ReplicationState::Snapshot(transfer) = &mut progress.state {
            if transfer.last_index == last_index {
                if next_offset > transfer.acknowledged_offset {
                    transfer.acknowledged_offset = next_offset;
                    progress.stalled_ticks = 0;
                } else if next_offset < transfer.acknowledged_offset {
                    // The follower lost its partial copy (it restarted, or took
                    // chunks from another leader): resume from what it holds.
                    transfer.acknowledged_offset = next_offset;
                    transfer.next_offset = next_offset;
                    transfer.final_chunk_sent = false;
                }
                transfer.next_offset = transfer.next_offset.max(transfer.acknowledged_offset);
            }
        }
        self.send_append(from);
    }

    /// A follower handles a snapshot chunk of the current term.
    pub(crate) fn handle_snapshot_chunk(&mut self, from: NodeId, chunk: Chunk) {
        self.hear_from_leader(from);
        let last_index = chunk.meta.last_index;
        if last_index <= self.log.commit_index() {
            // Everything the snapshot covers is already committed here, and
            // committed entries match it; once they are durable, say so.
            let body = MessageBody::SnapshotResponse {
                last_index,
                next_offset: chunk.total_bytes,
                installed: true,
            };
            self.send_when_durable(from, body);
            return;
        }
        let term = self.term();
        let same_stream = self.snapshot_assembly.as_ref().is_some_and(|assembly| {
            assembly.leader == from
                && assembly.term == term
                && assembly.meta == chunk.meta
                && assembly.total_bytes == chunk.total_bytes
        });
        if !same_stream {
            self.snapshot_assembly = None;
            if chunk.offset != 0 {
                self.answer_chunk(from, last_index, 0);
                return;
            }
            self.snapshot_assembly = Some(SnapshotAssembly {
                leader: from,
                term,
                meta: chunk.meta.clone(),
                total_bytes: chunk.total_bytes,
                received: BytesMut::new(),
            });
        }
        // Set just above when absent.
        let assembly = self.snapshot_assembly.as_mut().expect("assembly exists");
        let received = assembly.received.len() as u64;
        if chunk.offset != received {
            self.answer_chunk(from, last_index, received);
            return;
        }
        // The validator checked offset + len <= total_bytes <= SNAPSHOT_BYTES_MAX,
        // so the buffer never grows beyond the limit.
        assembly.received.extend_from_slice(&chunk.data);
        let received = assembly.received.len() as u64;
        if received < assembly.total_bytes {
            self.answer_chunk(from, last_index, received);
            return;
        }
        self.install_assembled_snapshot(from);
    }

    fn answer_chunk(&mut self, to: NodeId, last_index: LogIndex, next_offset: u64) {
        let body = MessageBody::SnapshotResponse {
            last_index,
            next_offset,
            installed: false,
        };
        self.send(to, body);
    }

    /// The last chunk arrived: hand the snapshot to the shell and adopt it.
    fn install_assembled_snapshot(&mut self, from: NodeId) {
        // Called only right after the assembly completed.
        let assembly = self.snapshot_assembly.take().expect("a completed assembly");
        let meta = assembly.meta;
        let data = assembly.received.freeze();
        let total_bytes = assembly.total_bytes;
        // Figure 13 step 6: if our log holds the snapshot's last entry with the same
        // term, the entries after it are the leader's too and stay.
        let keep_entries_after = self.log.term_at(meta.last_index) == Some(meta.last_term);
        // Staged writes go first: the install must land after them on disk.
        self.flush_persist();
        let id = self.persistence.issue_snapshot_id(meta.last_index);
        if !keep_entries_after {
            self.persistence.cap_records_below(meta.last_index.next());
        }
        let last_index = meta.last_index;
        self.commands.push(Command::InstallSnapshot {
            id,
            meta: meta.clone(),
            data: data.clone(),
            keep_entries_after,
        });
        self.log.install_snapshot(meta, data, keep_entries_after);
        let body = MessageBody::SnapshotResponse {
            last_index,
            next_offset: total_bytes,
            installed: true,
        };
        self.send_when_durable(from, body);
    }
}
