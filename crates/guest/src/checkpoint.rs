//! Checkpoints of a guest at a quiescent point, and the image a backup builds from
//! them.
//!
//! A [`Checkpoint`] carries the 4 KiB pages of linear memory that changed since the
//! previous checkpoint of the same lineage (a *full* one: every non-zero page), the
//! value of every exported mutable global, the host state and the caller's opaque
//! bytes, tagged with the lsn of the last input logged before it. Globals and host
//! state are small and always complete; only memory is incremental. A backup keeps a
//! [`CheckpointImage`]: it starts from a full checkpoint and applies the following
//! ones strictly in order, so it always holds exactly the primary's state as of the
//! latest checkpoint. The byte format is in `checkpoint_codec.rs` and
//! `docs/checkpoints.md`.

use bytes::Bytes;
use understudy_pair::{Lsn, Oseq, Output};
use understudy_types::limits::GUEST_MEMORY_BYTES_MAX;

use crate::pages::{CHECKPOINT_PAGE_BYTES, WASM_PAGE_BYTES};
use crate::unwind::UnwindReason;
use crate::GuestError;

/// The value of one mutable global, as its bit pattern (floats are not
/// interpreted: a NaN keeps its payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalBits {
    /// An `i32`.
    I32(u32),
    /// An `i64`.
    I64(u64),
    /// An `f32`, its bits.
    F32(u32),
    /// An `f64`, its bits.
    F64(u64),
    /// A `v128`.
    V128(u128),
}

/// One exported mutable global and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalValue {
    /// Its export name.
    pub name: String,
    /// Its value.
    pub bits: GlobalBits,
}

/// Where the guest stood when it was checkpointed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestPhase {
    /// Instantiated but nothing run yet: a command before `_start`, a reactor before
    /// `_initialize` and its first call.
    NotStarted,
    /// A reactor between two handler calls.
    BetweenCalls,
    /// A command that exited with this code (its memory is not kept).
    Exited(i32),
    /// A command with Asyncify unwound at a host call: its next run rewinds and
    /// makes that call again.
    Unwound {
        /// A read that found no input, or a requested unwind.
        reason: UnwindReason,
        /// The used part of its Asyncify memory: the `[current, end]` data
        /// structure and the saved frames (`current` bytes in all).
        stack: Bytes,
    },
}

/// Stdin that arrived and the guest has not read yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdinBacklog {
    /// The bytes, in arrival order.
    pub bytes: Bytes,
    /// Whether stdin was closed after them (end of input follows).
    pub closed: bool,
}

/// The host's side of a guest, everything outside linear memory and globals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSnapshot {
    /// Where the guest stood.
    pub phase: GuestPhase,
    /// The oseq the next output gets.
    pub next_oseq: Oseq,
    /// Added to the monotonic clock source.
    pub monotonic_offset_nanos: u64,
    /// The file descriptor table: whether stdin, stdout, stderr were closed.
    pub closed_fds: [bool; 3],
    /// Stdin bytes the guest has read so far (its cursor).
    pub stdin_bytes_read: u64,
    /// Whether a guest read returned end of input.
    pub stdin_eof_read: bool,
    /// Stdin arrived and not yet read.
    pub stdin_backlog: StdinBacklog,
    /// Outputs generated and not yet released, in oseq order.
    pub outputs: Vec<Output>,
    /// Fuel the guest consumed so far: a restored guest continues counting from
    /// it, so the records logged after the checkpoint replay at the same fuel.
    pub fuel_consumed: u64,
}

/// A guest's state at a quiescent point, relative to the previous checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Position in its lineage: 1 for an instance's first, then one more each time
    /// (a restored instance continues after its image's number).
    pub number: u64,
    /// Whether `pages` holds every non-zero page (the memory before it is all
    /// zeros) rather than the pages changed since checkpoint `number - 1`.
    pub full: bool,
    /// The lsn of the last input logged before it: the log can be truncated up to
    /// and including it once the checkpoint is durable.
    pub lsn: Lsn,
    /// Linear memory size in WebAssembly pages of 64 KiB.
    pub memory_pages: u32,
    /// Indexes of the 4 KiB pages carried, strictly increasing.
    pub page_indexes: Vec<u32>,
    /// Their contents, 4 KiB each, in the same order.
    pub page_bytes: Bytes,
    /// Every exported mutable global.
    pub globals: Vec<GlobalValue>,
    /// The host state.
    pub host: HostSnapshot,
    /// The caller's opaque bytes (the node keeps the pending idempotency keys here).
    pub extra: Bytes,
}

impl Checkpoint {
    /// Linear memory size in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_pages) * WASM_PAGE_BYTES as u64
    }

    /// Checks the memory part is self-consistent: a size within the limit, page
    /// indexes increasing and inside the memory, 4 KiB of bytes for each.
    pub(crate) fn validate_pages(&self) -> Result<(), GuestError> {
        let invalid = |detail: String| Err(GuestError::CheckpointInvalid(detail));
        if self.memory_bytes() > GUEST_MEMORY_BYTES_MAX {
            return invalid(format!("{} memory pages", self.memory_pages));
        }
        let page_total = self.memory_bytes() / CHECKPOINT_PAGE_BYTES as u64;
        let expected_bytes = self.page_indexes.len() as u64 * CHECKPOINT_PAGE_BYTES as u64;
        if self.page_bytes.len() as u64 != expected_bytes {
            return invalid(format!(
                "{} page bytes for {} pages",
                self.page_bytes.len(),
                self.page_indexes.len()
            ));
        }
        let mut previous: Option<u32> = None;
        for &index in &self.page_indexes {
            if u64::from(index) >= page_total || previous.is_some_and(|last| index <= last) {
                return invalid(format!("page index {index} out of order or range"));
            }
            previous = Some(index);
        }
        Ok(())
    }

    /// The pages carried, as (index, 4 KiB of bytes).
    pub fn pages(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.page_indexes
            .iter()
            .copied()
            .zip(self.page_bytes.chunks_exact(CHECKPOINT_PAGE_BYTES))
    }
}

/// What a backup keeps: the full state as of the latest checkpoint applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointImage {
    number: u64,
    lsn: Lsn,
    memory: Vec<u8>,
    globals: Vec<GlobalValue>,
    host: HostSnapshot,
    extra: Bytes,
}

impl CheckpointImage {
    /// Applies `checkpoint` to the image a backup keeps: a full checkpoint
    /// starts a new image, an incremental one must follow `image` (see
    /// [`Self::apply`]). A refused checkpoint leaves `image` as it was, so the
    /// backup keeps restoring from what it had.
    pub fn fold(image: &mut Option<Self>, checkpoint: &Checkpoint) -> Result<(), GuestError> {
        if checkpoint.full {
            *image = Some(Self::from_full(checkpoint)?);
            return Ok(());
        }
        match image {
            Some(image) => image.apply(checkpoint),
            None => Err(GuestError::CheckpointOutOfOrder(format!(
                "incremental checkpoint {} without an image to apply it to",
                checkpoint.number
            ))),
        }
    }

    /// An image from a full checkpoint.
    pub fn from_full(checkpoint: &Checkpoint) -> Result<Self, GuestError> {
        if !checkpoint.full {
            return Err(GuestError::CheckpointOutOfOrder(format!(
                "checkpoint {} is incremental: an image starts from a full one",
                checkpoint.number
            )));
        }
        checkpoint.validate_pages()?;
        let mut image = Self {
            number: checkpoint.number,
            lsn: checkpoint.lsn,
            memory: Vec::new(),
            globals: Vec::new(),
            host: checkpoint.host.clone(),
            extra: Bytes::new(),
        };
        image.take_state(checkpoint);
        Ok(image)
    }

    /// Applies the next checkpoint of the lineage: it must be number
    /// `self.number() + 1`, not precede the image's lsn, and not shrink memory. A
    /// refused checkpoint leaves the image unchanged.
    pub fn apply(&mut self, checkpoint: &Checkpoint) -> Result<(), GuestError> {
        if checkpoint.number != self.number + 1 || checkpoint.lsn < self.lsn {
            return Err(GuestError::CheckpointOutOfOrder(format!(
                "image is checkpoint {} at lsn {}, got checkpoint {} at lsn {}",
                self.number, self.lsn.0, checkpoint.number, checkpoint.lsn.0
            )));
        }
        checkpoint.validate_pages()?;
        if !checkpoint.full && checkpoint.memory_bytes() < self.memory.len() as u64 {
            return Err(GuestError::CheckpointInvalid(format!(
                "memory shrank from {} to {} bytes",
                self.memory.len(),
                checkpoint.memory_bytes()
            )));
        }
        self.number = checkpoint.number;
        self.lsn = checkpoint.lsn;
        self.take_state(checkpoint);
        Ok(())
    }

    /// Writes a validated checkpoint's memory pages, globals and host state.
    fn take_state(&mut self, checkpoint: &Checkpoint) {
        if checkpoint.full {
            self.memory.clear();
        }
        // validate_pages checked the size against GUEST_MEMORY_BYTES_MAX.
        self.memory.resize(checkpoint.memory_bytes() as usize, 0);
        for (index, bytes) in checkpoint.pages() {
            let start = index as usize * CHECKPOINT_PAGE_BYTES;
            self.memory[start..start + CHECKPOINT_PAGE_BYTES].copy_from_slice(bytes);
        }
        self.globals = checkpoint.globals.clone();
        self.host = checkpoint.host.clone();
        self.extra = checkpoint.extra.clone();
    }

    /// The number of the latest checkpoint applied.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The lsn the latest checkpoint follows.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The full linear memory.
    pub fn memory(&self) -> &[u8] {
        &self.memory
    }

    /// Every exported mutable global.
    pub fn globals(&self) -> &[GlobalValue] {
        &self.globals
    }

    /// The host state.
    pub fn host(&self) -> &HostSnapshot {
        &self.host
    }

    /// The caller's opaque bytes of the latest checkpoint.
    pub fn extra(&self) -> &Bytes {
        &self.extra
    }
}
