//! Real checkpoints of the simulated guest, taken and kept as a node does
//! (`crates/node/src/process/primary.rs` and `backup.rs`).
//!
//! The primary captures the guest with `GuestInstance::checkpoint_with` at a
//! quiescent point — running-total unwound by Asyncify in its stdin read, or
//! in the middle of a line at a host call after an unwind it requested (see
//! `run.rs`) — with the outputs the output store has not confirmed as held
//! outputs (the `checkpoint-without-unreleased` bug passes none). A
//! checkpoint is incremental (the 4 KiB pages changed since the previous
//! one); every [`FULL_CHECKPOINT_EVERY`]th one and the one each new backup
//! starts from are full. It is taken only while the backup is caught up and has completed the
//! previous one, so the chain a backup folds never has a hole. The core ships
//! the `encode()`d bytes in chunks; the backup decodes a complete checkpoint
//! and folds it into its `CheckpointImage` ([`fold`]); a promotion restores
//! that image with `GuestInstance::restore` and replays the records after it.
//! Nothing about the guest's state is modelled: the promoted guest has only
//! what the checkpoint bytes carried.

use super::{PairsBug, PrimaryNode, World};
use bytes::Bytes;
use understudy_guest::{Checkpoint, CheckpointImage, GuestPhase, UnwindReason};
use understudy_pair::{BackupState, Lsn};

/// Every this many checkpoints one is full (the node's rule, with a shorter
/// period than the node's 16 so that a seed of a few hundred steps folds
/// chains that both start anew and grow).
pub(super) const FULL_CHECKPOINT_EVERY: u64 = 4;

/// When a primary checkpoints, and what it took (the node's `Checkpoints`).
#[derive(Clone, Copy, Debug)]
pub(super) struct CheckpointSchedule {
    /// The lsn of the newest checkpoint taken (or restored); 0: none, and the
    /// core keeps every record from lsn 1.
    pub(super) last_lsn: Lsn,
    /// Checkpoints taken since the last full one.
    pub(super) since_full: u64,
}

impl CheckpointSchedule {
    /// A guest that was not checkpointed or restored yet.
    pub(super) fn none() -> CheckpointSchedule {
        CheckpointSchedule {
            last_lsn: Lsn(0),
            since_full: 0,
        }
    }

    /// A checkpoint after `lsn` was handed to the core.
    fn taken(&mut self, lsn: Lsn, full: bool) {
        self.last_lsn = lsn;
        self.since_full = if full { 0 } else { self.since_full + 1 };
    }
}

/// [`CheckpointImage::fold`] (the node's rule: a refused checkpoint is not
/// kept and not acknowledged, and the image stays) with the error as text.
pub(super) fn fold(
    image: &mut Option<CheckpointImage>,
    checkpoint: &Checkpoint,
) -> Result<(), String> {
    CheckpointImage::fold(image, checkpoint).map_err(|error| error.to_string())
}

/// Whether a checkpoint with this phase caught the guest in the middle of a
/// line (unwound on request, not waiting for stdin).
pub(super) fn is_mid_run(phase: &GuestPhase) -> bool {
    matches!(
        phase,
        GuestPhase::Unwound {
            reason: UnwindReason::Requested,
            ..
        }
    )
}

impl PrimaryNode {
    /// Whether the guest is in the middle of a line and not unwound: no
    /// checkpoint can be captured now. If so it is asked to unwind at its
    /// next host call (the node's rule), where the capture happens.
    fn stop_for_capture(&mut self, violations: &mut Vec<String>) -> bool {
        if !self.running || self.guest.is_unwound() {
            return false;
        }
        if let Err(error) = self.guest.request_unwind() {
            violations.push(format!("unwind refused: {error}"));
        }
        true
    }

    /// Captures the guest now, holding the outputs the store has not
    /// confirmed (none with the `checkpoint-without-unreleased` bug); with
    /// `full`, every non-zero page. The checkpoint must be at the lsn the core
    /// logged last (the guest's numbering and the core's agree).
    fn capture(&mut self, full: bool, bug: Option<PairsBug>) -> Result<Checkpoint, String> {
        let held = if bug == Some(PairsBug::CheckpointWithoutUnreleased) {
            Vec::new()
        } else {
            self.unconfirmed.iter().cloned().collect()
        };
        let checkpoint = self
            .guest
            .checkpoint_with(Bytes::new(), held, full)
            .map_err(|error| format!("capture refused: {error}"))?;
        if checkpoint.lsn != self.log.logged() {
            return Err(format!(
                "the checkpoint is at lsn {}, the core logged up to {}",
                checkpoint.lsn.0,
                self.log.logged().0
            ));
        }
        Ok(checkpoint)
    }
}

impl World {
    /// The primary captures a checkpoint and hands it to the core, if one is
    /// due: records were logged since the last, the backup is caught up and
    /// has completed the previous one (an incremental checkpoint only makes
    /// sense on top of it). The guest must be quiescent — unwound in stdin or
    /// at a host call; in the middle of a line it is asked to unwind first.
    pub(super) fn take_checkpoint(&mut self) {
        let primary = &mut self.primary;
        let logged = primary.log.logged();
        let ready = primary.log.backup_state() == BackupState::CaughtUp
            && primary.log.checkpoint_in_flight().is_none();
        if logged <= primary.checkpoints.last_lsn || !ready || primary.guest.is_finished() {
            return;
        }
        if primary.stop_for_capture(&mut self.report.violations) {
            return;
        }
        let full = primary.checkpoints.since_full + 1 >= FULL_CHECKPOINT_EVERY;
        let shipped = primary.capture(full, self.bug).and_then(|checkpoint| {
            let kind = (checkpoint.full, is_mid_run(&checkpoint.host.phase));
            primary
                .log
                .checkpoint(logged, checkpoint.encode())
                .map(|()| kind)
                .map_err(|error| format!("the core refused a checkpoint: {error}"))
        });
        match shipped {
            Ok((full, mid_run)) => {
                primary.checkpoints.taken(logged, full);
                self.count_checkpoint(full, mid_run);
            }
            // The guest is quiescent here: a refusal is a bug.
            Err(error) => self
                .report
                .violations
                .push(format!("step {}: {error}", self.now)),
        }
    }

    /// Pairs the core with a new, empty backup as a node does: from a full
    /// checkpoint captured now (the newest one may be incremental, which the
    /// new backup could not apply), or from lsn 1 while no checkpoint was
    /// taken or restored and the core still keeps every record. Returns
    /// false if the guest is in the middle of a line: it was asked to unwind,
    /// and the pairing happens there.
    pub(super) fn pair_from_checkpoint(&mut self) -> Result<bool, String> {
        let primary = &mut self.primary;
        let logged = primary.log.logged();
        let from_start = primary.checkpoints.last_lsn == Lsn(0);
        if logged == Lsn(0) && from_start {
            primary
                .log
                .pair_with_new_backup()
                .map_err(|error| error.to_string())?;
            return Ok(true);
        }
        if primary.stop_for_capture(&mut self.report.violations) {
            return Ok(false);
        }
        let checkpoint = primary.capture(true, self.bug)?;
        let mid_run = is_mid_run(&checkpoint.host.phase);
        primary
            .log
            .pair_with_new_backup_from(logged, checkpoint.encode())
            .map_err(|error| error.to_string())?;
        primary.checkpoints.taken(logged, true);
        self.count_checkpoint(true, mid_run);
        Ok(true)
    }

    fn count_checkpoint(&mut self, full: bool, mid_run: bool) {
        self.report.checkpoints += 1;
        if full {
            self.report.full_checkpoints += 1;
        }
        if mid_run {
            self.report.mid_run_checkpoints += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::guest::{new_guest, push_stdin, restore_guest, run_guest, SimInputs};
    use super::*;
    use understudy_pair::Epoch;

    /// A chain of a full and two incremental checkpoints, encoded and decoded
    /// as they travel, folds into an image that restores the guest exactly:
    /// the restored guest's memory equals the original's, and fed the same
    /// next line it prints the same running total.
    #[test]
    fn a_folded_chain_restores_the_guest_it_was_taken_from() {
        let mut guest = new_guest(Vec::new(), SimInputs::new(7), Epoch(1));
        run_guest(&mut guest).expect("birth");
        let mut image = None;
        let mut kinds = Vec::new();
        for (index, line) in ["5\n", "11\n", "13\n"].into_iter().enumerate() {
            push_stdin(&mut guest, Bytes::from(line));
            run_guest(&mut guest).expect("a line");
            let taken = guest
                .checkpoint_with(Bytes::new(), Vec::new(), false)
                .expect("quiescent");
            kinds.push(taken.full);
            let decoded = Checkpoint::decode(&taken.encode()).expect("decodes");
            fold(&mut image, &decoded).expect("folds");
            assert_eq!(
                image.as_ref().map(|image| image.number()),
                Some(index as u64 + 1)
            );
        }
        assert_eq!(
            kinds,
            vec![true, false, false],
            "first full, then incremental"
        );
        let image = image.expect("an image");
        let mut restored =
            restore_guest(&image, Vec::new(), SimInputs::new(8), Epoch(2)).expect("restores");
        let original = guest.checkpoint_with(Bytes::new(), Vec::new(), true);
        let copy = restored.checkpoint_with(Bytes::new(), Vec::new(), true);
        let (original, copy) = (original.expect("original"), copy.expect("copy"));
        assert_eq!(original.page_bytes, copy.page_bytes, "same memory");
        assert_eq!(original.globals, copy.globals, "same globals");
        for instance in [&mut guest, &mut restored] {
            push_stdin(instance, Bytes::from_static(b"100\n"));
        }
        let (_, original_outputs) = run_guest(&mut guest).expect("original runs");
        let (_, restored_outputs) = run_guest(&mut restored).expect("restored runs");
        assert_eq!(original_outputs, restored_outputs);
        assert_eq!(
            original_outputs[0].bytes,
            Bytes::from_static(b"4 total 129\n")
        );
    }

    #[test]
    fn an_incremental_checkpoint_that_does_not_follow_the_image_is_refused() {
        let mut guest = new_guest(Vec::new(), SimInputs::new(3), Epoch(1));
        run_guest(&mut guest).expect("birth");
        let mut chain = Vec::new();
        for line in ["1\n", "2\n", "3\n"] {
            push_stdin(&mut guest, Bytes::from(line));
            run_guest(&mut guest).expect("a line");
            let taken = guest.checkpoint_with(Bytes::new(), Vec::new(), false);
            chain.push(taken.expect("quiescent"));
        }
        let mut image = None;
        assert!(
            fold(&mut image, &chain[1]).is_err(),
            "no image to apply it to"
        );
        fold(&mut image, &chain[0]).expect("a full one starts an image");
        let before = image.clone();
        let skipped = fold(&mut image, &chain[2]);
        assert!(
            skipped.is_err(),
            "checkpoint 3 does not follow checkpoint 1"
        );
        assert_eq!(
            image, before,
            "a refused checkpoint leaves the image as it was"
        );
        fold(&mut image, &chain[1]).expect("checkpoint 2 follows 1");
        assert_eq!(image.map(|image| image.number()), Some(2));
    }
}
