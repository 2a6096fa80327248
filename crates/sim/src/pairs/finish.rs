//! The end of a seed: heal everything, let the pair settle, and check the end
//! state against a fault-free run: the reader's stream, and the guest's state
//! itself (memory, globals, host counters), on the primary and as the backup
//! would restore it.

use super::guest::{new_guest, restore_guest, run_guest, Guest, SimInputs};
use super::{PairsReport, World};
use bytes::Bytes;
use understudy_guest::{GlobalValue, GuestPhase};
use understudy_pair::{BackupState, Epoch, Lsn, Oseq, Output, Record, RecordKind, Stream};

/// Settling steps at most; a healthy pair needs a few dozen.
const SETTLE_STEPS_MAX: u32 = 10_000;

impl World {
    /// Heals the network, pairs a backup if there is none, lets everything
    /// settle, then checks the end state.
    pub(super) fn finish(mut self) -> PairsReport {
        // A guest in the middle of a line finishes it (and any unwind it was
        // asked for) before the end state is compared.
        if self.primary.running {
            self.primary
                .run_until_parked(self.now, &mut self.report.violations);
        }
        if self.backup.is_none() {
            self.pair_new_backup();
        }
        let mut settled = false;
        for _ in 0..SETTLE_STEPS_MAX {
            self.now += 1;
            self.primary.log.flush();
            self.primary.log.tick();
            self.primary.log.heartbeat();
            self.finish_one_write();
            self.deliver(u64::MAX);
            // Commands beget commands (an acknowledgement releases outputs):
            // carry them out until none are left.
            while self.run_commands(true) {}
            self.step_stale(true);
            settled = self.settled();
            if settled {
                break;
            }
        }
        if !settled {
            self.report
                .violations
                .push("the pair never settled after the network healed".to_string());
        }
        self.check_final();
        self.report
    }

    fn settled(&self) -> bool {
        let log = &self.primary.log;
        log.acknowledged() == log.logged()
            && log.held_outputs() == 0
            && log.checkpoint_in_flight().is_none()
            && log.backup_state() == BackupState::CaughtUp
            && self.to_store.queue.is_empty()
            && self
                .backup
                .as_ref()
                .is_some_and(|backup| backup.disk_idle())
    }

    fn check_final(&mut self) {
        let final_log = self.primary.history.clone();
        let contiguous = final_log
            .iter()
            .enumerate()
            .all(|(index, record)| record.lsn == Lsn(index as u64 + 1));
        if !contiguous {
            self.report
                .violations
                .push("the final log has a gap".to_string());
        }
        self.check_backup_records(&final_log);
        // The fault-free run: a fresh guest replaying the final log from lsn 1.
        let mut fault_free = new_guest(
            final_log.clone(),
            SimInputs::new(0),
            Epoch(self.epoch.0 + 1),
        );
        let expected = self.replay_to_the_end(&mut fault_free, "the final log's replay");
        let expected: Vec<u8> = expected
            .iter()
            .filter(|output| output.stream == Stream::Stdout)
            .flat_map(|output| output.bytes.iter().copied())
            .collect();
        let seen = self.store.read(Stream::Stdout, 0);
        self.report.lines = seen.iter().filter(|&&byte| byte == b'\n').count() as u64;
        if seen.as_ref() != expected.as_slice() {
            self.report.violations.push(format!(
                "the reader's stream ({} bytes) differs from a fault-free run over the final log ({} bytes)",
                seen.len(),
                expected.len()
            ));
        }
        self.check_guest_states(&mut fault_free);
        self.check_acknowledged_inputs(&final_log);
    }

    /// The backup's records are the primary's log after the backup's image.
    fn check_backup_records(&mut self, final_log: &[Record]) {
        let Some(backup) = &self.backup else {
            return;
        };
        let image_lsn = backup.image_lsn();
        let expected = final_log.get(image_lsn.0 as usize..).unwrap_or_default();
        if backup.durable != expected {
            self.report.violations.push(format!(
                "the backup's records after its image at lsn {} ({} records) differ from the primary's log ({} records)",
                image_lsn.0,
                backup.durable.len(),
                final_log.len()
            ));
        }
    }

    /// Runs `guest` until it parks; it must only replay (observe nothing
    /// live). Returns its outputs.
    fn replay_to_the_end(&mut self, guest: &mut Guest, what: &str) -> Vec<Output> {
        match run_guest(guest) {
            Ok((records, outputs)) => {
                if !records.is_empty() {
                    self.report.violations.push(format!(
                        "{what} observed {} inputs beyond the log",
                        records.len()
                    ));
                }
                outputs
            }
            Err(error) => {
                self.report.violations.push(format!("{what}: {error}"));
                Vec::new()
            }
        }
    }

    /// The guest's memory, globals and host counters after the end of the
    /// log are the fault-free guest's: on the primary (which may have been
    /// restored from checkpoints, perhaps more than once), and on a guest
    /// restored from the backup's image that replays the backup's records —
    /// what a promotion now would run.
    fn check_guest_states(&mut self, fault_free: &mut Guest) {
        let expected = match GuestState::of(fault_free) {
            Ok(state) => state,
            Err(error) => {
                let violation = format!("the fault-free guest: {error}");
                self.report.violations.push(violation);
                return;
            }
        };
        let primary = GuestState::of(&mut self.primary.guest);
        self.compare_state(&expected, primary, "the primary's guest");
        let Some(backup) = &self.backup else {
            return;
        };
        let epoch = Epoch(self.epoch.0 + 1);
        let restored = match &backup.image {
            Some(image) => restore_guest(image, backup.durable.clone(), SimInputs::new(0), epoch),
            None => Ok(new_guest(backup.durable.clone(), SimInputs::new(0), epoch)),
        };
        match restored {
            Ok(mut guest) => {
                let what = "the guest restored from the backup";
                self.replay_to_the_end(&mut guest, what);
                let state = GuestState::of(&mut guest);
                self.compare_state(&expected, state, what);
            }
            Err(error) => {
                let violation = format!("the backup's final image: {error}");
                self.report.violations.push(violation);
            }
        }
    }

    fn compare_state(
        &mut self,
        expected: &GuestState,
        state: Result<GuestState, String>,
        what: &str,
    ) {
        match state {
            Ok(state) if state == *expected => {}
            Ok(state) => self.report.violations.push(format!(
                "{what} differs from the fault-free guest: {}",
                expected.difference(&state)
            )),
            Err(error) => self.report.violations.push(format!("{what}: {error}")),
        }
    }

    /// Every stdin input acknowledged to its client is in the final log.
    fn check_acknowledged_inputs(&mut self, final_log: &[Record]) {
        for (lsn, bytes) in &self.acknowledged_inputs {
            let kept = final_log.get((lsn.0 - 1) as usize).is_some_and(|record| {
                record.kind == RecordKind::StdinData && record.payload == *bytes
            });
            if !kept {
                self.report.violations.push(format!(
                    "acknowledged stdin record {} is not in the final log",
                    lsn.0
                ));
            }
        }
    }
}

/// What a guest's state is, as a full checkpoint captures it, without the
/// outputs held for release (which depend on what the store confirmed).
#[derive(Debug, PartialEq, Eq)]
struct GuestState {
    memory_pages: u32,
    page_indexes: Vec<u32>,
    page_bytes: Bytes,
    globals: Vec<GlobalValue>,
    phase: GuestPhase,
    next_oseq: Oseq,
    stdin_bytes_read: u64,
    fuel_consumed: u64,
}

impl GuestState {
    /// Captures `guest` (a full checkpoint; it must be quiescent).
    fn of(guest: &mut Guest) -> Result<GuestState, String> {
        let checkpoint = guest
            .checkpoint_with(Bytes::new(), Vec::new(), true)
            .map_err(|error| format!("capture refused: {error}"))?;
        Ok(GuestState {
            memory_pages: checkpoint.memory_pages,
            page_indexes: checkpoint.page_indexes,
            page_bytes: checkpoint.page_bytes,
            globals: checkpoint.globals,
            phase: checkpoint.host.phase,
            next_oseq: checkpoint.host.next_oseq,
            stdin_bytes_read: checkpoint.host.stdin_bytes_read,
            fuel_consumed: checkpoint.host.fuel_consumed,
        })
    }

    /// Names what differs from `other`.
    fn difference(&self, other: &GuestState) -> String {
        let mut parts = Vec::new();
        if self.memory_pages != other.memory_pages || self.page_indexes != other.page_indexes {
            parts.push("memory size or pages in use".to_string());
        } else if self.page_bytes != other.page_bytes {
            let pages = self
                .page_bytes
                .chunks(understudy_guest::CHECKPOINT_PAGE_BYTES);
            let other_pages = other
                .page_bytes
                .chunks(understudy_guest::CHECKPOINT_PAGE_BYTES);
            let differing: Vec<u32> = self
                .page_indexes
                .iter()
                .zip(pages.zip(other_pages))
                .filter(|(_, (page, other_page))| page != other_page)
                .map(|(index, _)| *index)
                .collect();
            parts.push(format!("memory pages {differing:?}"));
        }
        if self.globals != other.globals {
            parts.push("globals".to_string());
        }
        if self.phase != other.phase {
            parts.push("phase".to_string());
        }
        if (self.next_oseq, self.stdin_bytes_read) != (other.next_oseq, other.stdin_bytes_read) {
            parts.push("oseq or stdin counters".to_string());
        }
        if self.fuel_consumed != other.fuel_consumed {
            parts.push(format!(
                "fuel {} against {}",
                self.fuel_consumed, other.fuel_consumed
            ));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::guest::push_stdin;
    use super::*;

    /// A guest that ran `lines` after its birth, parked in stdin.
    fn guest_after(lines: &[&'static str]) -> Guest {
        let mut guest = new_guest(Vec::new(), SimInputs::new(1), Epoch(1));
        run_guest(&mut guest).expect("birth");
        for line in lines {
            push_stdin(&mut guest, Bytes::from_static(line.as_bytes()));
            run_guest(&mut guest).expect("a line");
        }
        guest
    }

    #[test]
    fn the_state_comparison_tells_guests_with_other_inputs_apart() {
        let state = |lines| GuestState::of(&mut guest_after(lines)).expect("quiescent");
        let five = state(&["5\n"]);
        assert_eq!(five, state(&["5\n"]), "the same inputs give the same state");
        let six = state(&["6\n"]);
        assert_ne!(five, six, "another total is another state");
        assert!(!five.difference(&six).is_empty());
        let two_lines = state(&["5\n", "1\n"]);
        assert!(five.difference(&two_lines).contains("oseq"));
    }
}
