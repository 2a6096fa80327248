//! The end of a seed: heal everything, let the pair settle, and check the end
//! state against a fault-free run.

use super::checkpoint::SimCheckpoint;
use super::guest::{new_guest, run_guest, SimInputs};
use super::{PairsReport, World};
use understudy_pair::{BackupState, Epoch, Lsn, Record, RecordKind, Stream};

/// Settling steps at most; a healthy pair needs a few dozen.
const SETTLE_STEPS_MAX: u32 = 10_000;

impl World {
    /// Heals the network, pairs a backup if there is none, lets everything
    /// settle, then checks the end state.
    pub(super) fn finish(mut self) -> PairsReport {
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

    /// The backup's log as a promotion would rebuild it: the checkpoint's
    /// memory (from the archive), then the records after it.
    fn backup_log(&mut self) -> Vec<Record> {
        let Some(backup) = &self.backup else {
            return Vec::new();
        };
        let mut log = match &backup.checkpoint {
            None => Vec::new(),
            Some((after_lsn, data)) => match SimCheckpoint::decode(data.clone()) {
                Ok(checkpoint) => self
                    .archive
                    .get(&(checkpoint.epoch, *after_lsn))
                    .cloned()
                    .unwrap_or_default(),
                Err(error) => {
                    self.report
                        .violations
                        .push(format!("final checkpoint: {error}"));
                    Vec::new()
                }
            },
        };
        log.extend(backup.durable.iter().cloned());
        log
    }

    fn check_final(&mut self) {
        let final_log = self.backup_log();
        if final_log != self.primary.history {
            self.report.violations.push(format!(
                "the backup's checkpoint and records ({} records) differ from the primary's log ({} records)",
                final_log.len(),
                self.primary.history.len()
            ));
        }
        // The fault-free run: a fresh guest replaying the final log.
        let mut guest = new_guest(
            final_log.clone(),
            SimInputs::new(0),
            Epoch(self.epoch.0 + 1),
        );
        let expected: Vec<u8> = match run_guest(&mut guest) {
            Ok((records, outputs)) => {
                if !records.is_empty() {
                    self.report.violations.push(format!(
                        "the final log's replay observed {} inputs beyond it",
                        records.len()
                    ));
                }
                outputs
                    .iter()
                    .filter(|output| output.stream == Stream::Stdout)
                    .flat_map(|output| output.bytes.iter().copied())
                    .collect()
            }
            Err(error) => {
                let violation = format!("replaying the final log: {error}");
                self.report.violations.push(violation);
                Vec::new()
            }
        };
        let seen = self.store.read(Stream::Stdout, 0);
        self.report.lines = seen.iter().filter(|&&byte| byte == b'\n').count() as u64;
        if seen.as_ref() != expected.as_slice() {
            self.report.violations.push(format!(
                "the reader's stream ({} bytes) differs from a fault-free run over the final log ({} bytes)",
                seen.len(),
                expected.len()
            ));
        }
        self.check_acknowledged_inputs(&final_log);
        let contiguous = final_log
            .iter()
            .enumerate()
            .all(|(index, record)| record.lsn == Lsn(index as u64 + 1));
        if !contiguous {
            self.report
                .violations
                .push("the final log has a gap".to_string());
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
