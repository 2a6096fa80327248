//! The partitioned former primary: it keeps running, taking stdin from
//! clients that still reach it and trying to append and release, cut off from
//! the node it takes for its backup and from the output store until the
//! partition heals. Fencing must make it stop then, having released nothing
//! the current epoch does not regenerate.

use super::network::InFlight;
use super::{StalePrimary, World};
use bytes::Bytes;
use rand::Rng;
use understudy_pair::{Command, Output};

impl World {
    /// One step of the partitioned former primary, if there is one; `healed`
    /// ends the partition and delivers everything at once.
    pub(super) fn step_stale(&mut self, healed: bool) {
        let Some(mut stale) = self.stale.take() else {
            return;
        };
        if healed {
            stale.to_endpoint.heal();
            stale.to_stale.heal();
            stale.heal_at = 0;
        } else if self.random.gen_bool(0.2) {
            let line = Bytes::from(format!("{}\n", self.random.gen_range(0..1000u64)));
            stale
                .node
                .feed_stdin(line, self.now, &mut self.report.violations);
        }
        stale.node.log.flush();
        if self.now % 2 == 0 {
            stale.node.log.tick();
        }
        if self.now % 5 == 0 || healed {
            stale.node.log.heartbeat();
        }
        if healed || self.random.gen_bool(0.6) {
            self.report
                .violations
                .extend(stale.endpoint.finish_one_write());
        }
        let now = if healed { u64::MAX } else { self.now };
        for message in stale.to_endpoint.arrived(now) {
            stale.endpoint.log.handle(message);
        }
        for message in stale.to_stale.arrived(now) {
            stale.node.log.handle(message);
        }
        if self.run_stale_commands(&mut stale) {
            self.stale = Some(stale);
        }
    }

    /// Carries out the former primary's and its endpoint's commands; returns
    /// whether the former primary is still running.
    fn run_stale_commands(&mut self, stale: &mut StalePrimary) -> bool {
        let mut running = true;
        for command in stale.node.log.take_commands() {
            match command {
                Command::Send(message) => {
                    stale.to_endpoint.send(&mut self.random, self.now, message)
                }
                Command::Release(outputs) => self.release_stale(stale, outputs),
                Command::Stop { .. } => running = false,
                Command::Persist(_) | Command::PersistCheckpoint { .. } => {}
            }
        }
        let answered = stale.node.take_acknowledged_inputs();
        self.report.inputs_acknowledged += answered.len() as u64;
        self.acknowledged_inputs.extend(answered);
        for command in stale.endpoint.log.take_commands() {
            if let Some(Command::Send(message)) = stale.endpoint.queue_write(command) {
                stale.to_stale.send(&mut self.random, self.now, message);
            }
        }
        running
    }

    /// A former primary's release must depend only on records the current
    /// epoch's log holds, unchanged: otherwise the current epoch cannot
    /// regenerate it, and readers may see an output of a history that no
    /// longer exists.
    fn release_stale(&mut self, stale: &StalePrimary, outputs: Vec<Output>) {
        let epoch = stale.node.log.epoch();
        for output in outputs {
            let index = output.depends_on.0 as usize;
            let held_now = index == 0
                || (self.primary.history.get(index - 1) == stale.node.history.get(index - 1));
            if !held_now {
                self.report.violations.push(format!(
                    "step {}: former primary of epoch {} released oseq {} depending on lsn {}, which epoch {}'s log does not hold",
                    self.now, epoch.0, output.oseq.0, output.depends_on.0, self.epoch.0
                ));
            }
            // Cut off from the store until the partition heals.
            self.to_store.queue.push_back(InFlight {
                arrives_at: (self.now + 1).max(stale.heal_at),
                message: (epoch, output),
            });
        }
    }
}
