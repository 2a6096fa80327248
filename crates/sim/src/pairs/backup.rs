//! The simulated backup node: the real `BackupLog` core and a disk that
//! finishes writes (records and checkpoint chunks) in order, late. A
//! checkpoint whose chunks are all written is decoded and folded into the
//! node's `CheckpointImage` (what a promotion restores); one that does not
//! decode or does not follow the image is not kept and not acknowledged, as
//! on a node — and reported, since the simulated primary keeps chains whole.

use bytes::Bytes;
use std::collections::VecDeque;
use understudy_guest::{Checkpoint, CheckpointImage};
use understudy_pair::{BackupLog, Command, Epoch, Lsn, Record};

use super::checkpoint::fold;
use super::PID;

/// A write the disk has not finished.
enum DiskWrite {
    Records(Vec<Record>),
    CheckpointChunk {
        after_lsn: Lsn,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
    },
}

/// The backup's node: the core and its disk.
pub(super) struct BackupNode {
    pub(super) log: BackupLog,
    disk_queue: VecDeque<DiskWrite>,
    /// Durable records after the image (older ones are dropped once a
    /// checkpoint covers them, as the protocol allows).
    pub(super) durable: Vec<Record>,
    /// The complete, durable checkpoints folded in order: the guest's state
    /// as of the newest one.
    pub(super) image: Option<CheckpointImage>,
    /// Whether an incremental checkpoint was applied to the image since its
    /// full one.
    pub(super) incremental_in_image: bool,
    /// The checkpoint being written.
    assembling: Option<(Lsn, Vec<u8>)>,
}

impl BackupNode {
    /// An empty backup following the primary of `epoch`.
    pub(super) fn new(epoch: Epoch) -> BackupNode {
        BackupNode {
            log: BackupLog::new(PID, epoch, Lsn(0)),
            disk_queue: VecDeque::new(),
            durable: Vec::new(),
            image: None,
            incremental_in_image: false,
            assembling: None,
        }
    }

    /// Every lsn up to this one is durable here, as a record or inside the
    /// checkpoint.
    pub(super) fn durable_through(&self) -> Lsn {
        let image_lsn = self.image_lsn();
        self.durable
            .last()
            .map_or(image_lsn, |record| record.lsn.max(image_lsn))
    }

    /// The lsn the image is at (0 without one).
    pub(super) fn image_lsn(&self) -> Lsn {
        self.image.as_ref().map_or(Lsn(0), CheckpointImage::lsn)
    }

    pub(super) fn disk_idle(&self) -> bool {
        self.disk_queue.is_empty()
    }

    /// Queues a persist command; other commands are returned to the caller.
    pub(super) fn queue_write(&mut self, command: Command) -> Option<Command> {
        match command {
            Command::Persist(records) => self.disk_queue.push_back(DiskWrite::Records(records)),
            Command::PersistCheckpoint {
                after_lsn,
                offset,
                total_bytes,
                data,
            } => self.disk_queue.push_back(DiskWrite::CheckpointChunk {
                after_lsn,
                offset,
                total_bytes,
                data,
            }),
            other => return Some(other),
        }
        None
    }

    /// The disk finishes its oldest write and tells the core; returns a
    /// violation of the disk's contract with the core, if any.
    pub(super) fn finish_one_write(&mut self) -> Option<String> {
        match self.disk_queue.pop_front()? {
            DiskWrite::Records(records) => {
                let last = records.last().expect("persists are never empty").lsn;
                for record in records {
                    if record.lsn != self.durable_through().next() {
                        return Some(format!(
                            "the backup was asked to write lsn {} after {}",
                            record.lsn.0,
                            self.durable_through().0
                        ));
                    }
                    self.durable.push(record);
                }
                self.log.handle_persisted(last);
                None
            }
            DiskWrite::CheckpointChunk {
                after_lsn,
                offset,
                total_bytes,
                data,
            } => self.write_chunk(after_lsn, offset, total_bytes, &data),
        }
    }

    fn write_chunk(
        &mut self,
        after_lsn: Lsn,
        offset: u64,
        total_bytes: u64,
        data: &[u8],
    ) -> Option<String> {
        let assembling = match &mut self.assembling {
            Some(assembling) if assembling.0 == after_lsn => assembling,
            other => other.insert((after_lsn, Vec::new())),
        };
        if offset != assembling.1.len() as u64 {
            return Some(format!(
                "checkpoint {} chunk at {offset} written after {} bytes",
                after_lsn.0,
                assembling.1.len()
            ));
        }
        assembling.1.extend_from_slice(data);
        let end = assembling.1.len() as u64;
        if end == total_bytes {
            let bytes = std::mem::take(&mut assembling.1);
            self.assembling = None;
            if let Err(error) = self.complete_checkpoint(after_lsn, &bytes) {
                // Not acknowledged: the core never counts it durable.
                return Some(format!(
                    "the backup cannot keep the checkpoint after lsn {}: {error}",
                    after_lsn.0
                ));
            }
        }
        self.log.handle_checkpoint_persisted(after_lsn, end);
        None
    }

    /// A whole checkpoint is on disk: decode it, fold it into the image, drop
    /// the records it covers. A refusal leaves image and records unchanged.
    fn complete_checkpoint(&mut self, after_lsn: Lsn, bytes: &[u8]) -> Result<(), String> {
        let checkpoint = Checkpoint::decode(bytes).map_err(|error| error.to_string())?;
        if checkpoint.lsn != after_lsn {
            return Err(format!("it says lsn {}", checkpoint.lsn.0));
        }
        fold(&mut self.image, &checkpoint)?;
        self.incremental_in_image = !checkpoint.full;
        // The checkpoint covers these: the disk drops them.
        self.durable.retain(|record| record.lsn > after_lsn);
        Ok(())
    }
}
