//! Running the current primary's guest as a node's thread does: in fuel
//! slices, turning to other work between two of them. So the guest is at
//! times in the middle of a stdin line when a checkpoint (or a new backup's
//! pairing) is due; the primary then asks it to unwind at its next host call
//! (`GuestInstance::request_unwind`, the node's path for compute-bound
//! commands) and captures it there, with the stdin it has not read yet.

use super::guest::push_stdin;
use super::World;
use bytes::Bytes;
use rand::Rng;
use understudy_guest::RunOutcome;

/// The chance that the primary stops after a fuel slice until the next step,
/// leaving the guest in the middle of a line.
const STOP_AFTER_SLICE_PROBABILITY: f64 = 0.3;

impl World {
    /// Queues a stdin line for the primary's guest and runs it, unless it is
    /// in the middle of a line already (it reads this one when it gets there).
    pub(super) fn feed_primary(&mut self, line: Bytes) {
        if self.primary.guest.is_finished() {
            return;
        }
        push_stdin(&mut self.primary.guest, line);
        if !self.primary.running {
            self.run_primary();
        }
    }

    /// Runs the primary's guest slice by slice until it waits for stdin, or
    /// until it stops after a slice (by chance) in the middle of a line. What
    /// it logged and wrote is handed to the core after every slice. An unwind
    /// requested for a checkpoint ends at a host call: the capture happens
    /// there, and the guest goes on.
    pub(super) fn run_primary(&mut self) {
        loop {
            let outcome = self.primary.guest.run();
            self.primary.pump(&mut self.report.violations);
            match outcome {
                Ok(RunOutcome::Blocked) => {
                    self.primary.running = false;
                    return;
                }
                Ok(RunOutcome::OutOfFuel) => {
                    self.primary.running = true;
                    if self.random.gen_bool(STOP_AFTER_SLICE_PROBABILITY) {
                        return;
                    }
                }
                Ok(RunOutcome::Unwound) => {
                    self.primary.running = true;
                    self.capture_at_unwind();
                }
                other => {
                    self.primary.running = false;
                    let violation = format!("step {}: the guest ended: {other:?}", self.now);
                    self.report.violations.push(violation);
                    return;
                }
            }
        }
    }

    /// The guest unwound on request: what asked for it is done now — the
    /// pairing of a new backup if one waits, else the checkpoint.
    fn capture_at_unwind(&mut self) {
        if self.backup.is_none() && self.now >= self.repair_at {
            self.pair_new_backup();
        } else {
            self.take_checkpoint();
        }
    }
}
