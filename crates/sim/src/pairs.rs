//! Seeded simulation of one process pair: the real `pair` core (logging
//! channel, output rule, checkpoints and truncation, fencing, re-pairing with
//! a throttled catch-up, output store) under message loss, duplication and
//! delay, a slow backup disk, crashes of the primary followed by promotion of
//! the backup, crashes of the backup, and partitions that leave a *live*
//! former primary cut off from its backup and the store until they heal.
//!
//! The guest is the real WebAssembly host (`understudy-guest`) running
//! `guests/running-total.wasm`. On the primary its inputs (a seeded random
//! token and clock, then stdin numbers drawn from the simulation's RNG) are
//! recorded and every record is handed to the pair core, which numbers it
//! again (the two numberings are checked to agree), as is every output.
//! Checkpoints are the guest crate's real ones, taken and folded as a node
//! does (`checkpoint.rs`): the primary captures the guest (incremental, every
//! few a full one) with its unconfirmed outputs, the core ships the encoded
//! bytes, the backup folds complete ones into a `CheckpointImage`. A promoted
//! backup restores a fresh instance from that image
//! (`GuestInstance::restore`), replays its durable records after it, offers
//! the checkpoint's held outputs and the regenerated ones to the store, then
//! goes live in the new epoch with lsns continuing; a new backup is paired
//! later from a full checkpoint (`PrimaryLog::pair_with_new_backup_from`).
//! The primary runs its guest in fuel slices and may stop between two
//! (`run.rs`), so a checkpoint is sometimes captured in the middle of a line,
//! after an unwind the primary requested.
//!
//! Checked: every output is released only after the record it depends on is
//! durable at the backup (at each release); a former primary's release
//! depends only on records the current epoch's log holds; after a promotion
//! the store holds every oseq the promoted backup regenerated (no output
//! lost); the output store never sees the same oseq with different bytes, nor
//! a stale epoch's output the current epoch did not produce; at the end the
//! backup's records are exactly the primary's log after its image, the
//! reader's stream equals a fault-free run (a fresh guest replaying the whole
//! log from lsn 1), the guest's memory and globals — on the primary, and
//! restored from the backup's image plus its records — equal that fault-free
//! guest's, and every stdin input acknowledged to its client is in the log.
//!
//! Simplifications: one pid; the coordinator's compare-and-set always lets
//! the backup win, and a primary is crashed only while its backup is caught
//! up (the coordinator never promotes a backup that is still catching up: it
//! may lack what was released before it was paired); the output store
//! confirms an output the moment it arrives. The log from lsn 1 that each
//! primary's state stands for is kept by the simulation as its oracle (a node
//! keeps only what follows its checkpoint); no node reads it to recover.

mod backup;
mod checkpoint;
mod finish;
mod guest;
mod network;
mod run;
mod stale;

use backup::BackupNode;
use bytes::Bytes;
use checkpoint::{is_mid_run, CheckpointSchedule};
use guest::{new_guest, push_stdin, restore_guest, run_guest, run_until_waiting, Guest, SimInputs};
use network::{InFlight, Link};
use rand::RngCore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use understudy_pair::{
    BackupState, Command, DeliberateBugs, Epoch, Lsn, Oseq, Output, OutputRefusal, OutputStore,
    PairMessage, Pid, PrimaryConfig, PrimaryLog, Record, RecordKind,
};

const PID: Pid = Pid(1);

/// A deliberate bug to switch on, to prove the simulation finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairsBug {
    /// The primary's core releases outputs without waiting for the backup.
    ReleaseBeforeAck,
    /// The backup is promoted without fencing the old primary first.
    PromoteWithoutFencing,
    /// Checkpoints leave out the outputs not yet released.
    CheckpointWithoutUnreleased,
}

impl PairsBug {
    /// Every deliberate bug, with its command-line name.
    pub const ALL: [(PairsBug, &'static str); 3] = [
        (PairsBug::ReleaseBeforeAck, "release-before-ack"),
        (PairsBug::PromoteWithoutFencing, "promote-without-fencing"),
        (
            PairsBug::CheckpointWithoutUnreleased,
            "checkpoint-without-unreleased",
        ),
    ];
}

/// What one seed does.
#[derive(Clone, Debug)]
pub struct PairsConfig {
    /// The seed.
    pub seed: u64,
    /// Simulation steps.
    pub steps: u64,
    /// A deliberate bug to switch on (`None`: the real protocol).
    pub bug: Option<PairsBug>,
}

/// What one seed found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairsReport {
    /// Invariant violations, described.
    pub violations: Vec<String>,
    /// Stdin inputs acknowledged to clients.
    pub inputs_acknowledged: u64,
    /// Promotions (after a crash or a partition of the primary).
    pub failovers: u64,
    /// Of those, partitions: the former primary stayed alive.
    pub partitions: u64,
    /// Crashes of the backup (the primary continued).
    pub backup_crashes: u64,
    /// New backups paired (after promotions and backup crashes).
    pub repairings: u64,
    /// Checkpoints taken by primaries.
    pub checkpoints: u64,
    /// Of those, full ones (the rest are incremental).
    pub full_checkpoints: u64,
    /// Of those, captured in the middle of a stdin line (after an unwind the
    /// primary requested).
    pub mid_run_checkpoints: u64,
    /// Promotions that restored a checkpoint rather than replaying from lsn 1.
    pub restored_from_checkpoint: u64,
    /// Of those, restores of an image with incremental checkpoints applied on
    /// top of its full one.
    pub restored_after_incremental: u64,
    /// Of those, restores of a guest captured in the middle of a line.
    pub restored_mid_run: u64,
    /// Outputs a former primary's releases offered after its epoch ended
    /// (repeats of regenerated ones, or refused as stale).
    pub late_releases: u64,
    /// Output lines the reader saw.
    pub lines: u64,
}

/// A primary's node: the core, the guest it runs, and what the shell keeps.
struct PrimaryNode {
    log: PrimaryLog,
    guest: Guest,
    /// The simulation's oracle: the log from lsn 1 that the guest's state
    /// stands for (what a restored checkpoint covers, then what the guest
    /// replayed and logged live). The node itself never reads it.
    history: Vec<Record>,
    /// When the guest is checkpointed next, and what was taken.
    checkpoints: CheckpointSchedule,
    /// The guest is in the middle of a stdin line (it stopped after a fuel
    /// slice, or unwound on request): it runs on at the next step.
    running: bool,
    /// The last oseq the guest wrote.
    last_oseq: Oseq,
    /// Outputs written and not yet confirmed by the output store: what a
    /// checkpoint must carry.
    unconfirmed: VecDeque<Output>,
    /// Stdin records whose clients wait for them to be acknowledged.
    waiting_inputs: Vec<(Lsn, Bytes)>,
    /// Lsns up to this were durable on this node when it was promoted (0 for
    /// the first primary): outputs depending on them may leave without a
    /// backup.
    restored_through: Lsn,
}

/// A former primary cut off by a partition, still running, and the node it
/// still takes for its backup (the promoted one, whose backup core fenced it
/// — unless the bug is on).
struct StalePrimary {
    node: PrimaryNode,
    endpoint: BackupNode,
    to_endpoint: Link<PairMessage>,
    to_stale: Link<PairMessage>,
    heal_at: u64,
}

struct World {
    random: ChaCha8Rng,
    bug: Option<PairsBug>,
    now: u64,
    epoch: Epoch,
    primary: PrimaryNode,
    backup: Option<BackupNode>,
    /// When the coordinator pairs a new backup, while there is none.
    repair_at: u64,
    stale: Option<StalePrimary>,
    to_backup: Link<PairMessage>,
    to_primary: Link<PairMessage>,
    /// Releases on their way to the output store, with the sender's epoch.
    to_store: Link<(Epoch, Output)>,
    /// The released output (the reader's view).
    store: OutputStore,
    report: PairsReport,
    /// Stdin records whose clients got their acknowledgement.
    acknowledged_inputs: Vec<(Lsn, Bytes)>,
}

fn primary_config(bug: Option<PairsBug>) -> PrimaryConfig {
    PrimaryConfig {
        append_records_max: 8,
        retransmit_ticks: 4,
        // A full checkpoint of running-total is about 13 KiB (three non-zero
        // 4 KiB pages, globals, host state, held outputs), an incremental one
        // a page or two: a few chunks each, every chunk one disk write on the
        // backup. A new backup's catch-up gets about a chunk per tick, so it
        // takes several ticks and the throttle is exercised.
        checkpoint_chunk_bytes: 4096,
        catch_up_bytes_per_tick: 4096,
        deliberate_bugs: DeliberateBugs {
            release_before_acknowledgement: bug == Some(PairsBug::ReleaseBeforeAck),
        },
        ..PrimaryConfig::default()
    }
}

impl PrimaryNode {
    /// Logs `records` and outputs `outputs` on the core in the order the guest
    /// produced them (an output follows the records up to its `depends_on`),
    /// checking the core numbers them as the guest did.
    fn hand_over(
        &mut self,
        records: &[Record],
        outputs: Vec<Output>,
        violations: &mut Vec<String>,
    ) {
        let mut records = records.iter().peekable();
        for output in outputs {
            while let Some(record) = records.next_if(|record| record.lsn <= output.depends_on) {
                self.log_record(record, violations);
            }
            if self.log.logged() != output.depends_on {
                violations.push(format!(
                    "oseq {} depends on lsn {} but the core logged up to {}",
                    output.oseq.0,
                    output.depends_on.0,
                    self.log.logged().0
                ));
            }
            // Backlogged outputs would pause a real guest; the limits are far
            // above what a seed writes, so a refusal is reported.
            match self.log.output(output.stream, output.bytes.clone()) {
                Ok(oseq) if oseq == output.oseq => {}
                other => violations.push(format!(
                    "guest oseq {} became {other:?} in the core",
                    output.oseq.0
                )),
            }
            self.last_oseq = output.oseq;
            self.unconfirmed.push_back(output);
        }
        for record in records {
            self.log_record(record, violations);
        }
    }

    fn log_record(&mut self, record: &Record, violations: &mut Vec<String>) {
        let logged = self
            .log
            .log(record.kind, record.payload.clone(), record.fuel_consumed);
        let agrees = logged == Ok(record.lsn) && record.epoch == self.log.epoch();
        if !agrees {
            violations.push(format!(
                "guest record {} of epoch {} became {logged:?} in the core of epoch {}",
                record.lsn.0,
                record.epoch.0,
                self.log.epoch().0
            ));
        }
        self.history.push(record.clone());
    }

    /// Feeds a stdin line to the guest and runs it until it parks (a former
    /// primary cut off by a partition).
    fn feed_stdin(&mut self, line: Bytes, now: u64, violations: &mut Vec<String>) {
        if self.guest.is_finished() {
            return;
        }
        push_stdin(&mut self.guest, line);
        self.run_until_parked(now, violations);
    }

    /// Runs the guest until it waits for stdin, through any fuel slices and
    /// requested unwinds.
    fn run_until_parked(&mut self, now: u64, violations: &mut Vec<String>) {
        self.running = false;
        if let Err(error) = run_until_waiting(&mut self.guest) {
            violations.push(format!("step {now}: {error}"));
        }
        self.pump(violations);
    }

    /// Hands what the guest logged and wrote since the last time to the core.
    fn pump(&mut self, violations: &mut Vec<String>) {
        let records = self
            .guest
            .with_inputs(|inputs| inputs.recorder_mut().take_records());
        let outputs = self.guest.take_outputs();
        self.hand_over(&records, outputs, violations);
        for record in records {
            if record.kind == RecordKind::StdinData {
                self.waiting_inputs.push((record.lsn, record.payload));
            }
        }
    }

    /// Stdin records now acknowledged by the backup: their clients are
    /// answered (docs/pairs.md, rule 3).
    fn take_acknowledged_inputs(&mut self) -> Vec<(Lsn, Bytes)> {
        let acknowledged = self.log.acknowledged();
        let (answered, waiting): (Vec<_>, Vec<_>) = self
            .waiting_inputs
            .drain(..)
            .partition(|(lsn, _)| *lsn <= acknowledged);
        self.waiting_inputs = waiting;
        answered
    }

    /// The output store took (or already had) `oseq`.
    fn confirm(&mut self, oseq: Oseq) {
        while self
            .unconfirmed
            .front()
            .is_some_and(|output| output.oseq <= oseq)
        {
            self.unconfirmed.pop_front();
        }
    }
}

impl World {
    fn new(seed: u64, bug: Option<PairsBug>) -> World {
        let mut random = ChaCha8Rng::seed_from_u64(seed);
        let source = SimInputs::new(random.next_u64());
        let mut world = World {
            random,
            bug,
            now: 0,
            epoch: Epoch(1),
            primary: PrimaryNode {
                log: PrimaryLog::new(PID, Epoch(1), Lsn(0), Oseq(0), primary_config(bug)),
                guest: new_guest(Vec::new(), source, Epoch(1)),
                history: Vec::new(),
                checkpoints: CheckpointSchedule::none(),
                running: false,
                last_oseq: Oseq(0),
                unconfirmed: VecDeque::new(),
                waiting_inputs: Vec::new(),
                restored_through: Lsn(0),
            },
            backup: Some(BackupNode::new(Epoch(1))),
            repair_at: 0,
            stale: None,
            to_backup: Link::new(),
            to_primary: Link::new(),
            to_store: Link::new(),
            store: OutputStore::new(),
            report: PairsReport::default(),
            acknowledged_inputs: Vec::new(),
        };
        // The guest starts: it logs its random token and clock and parks in stdin.
        match run_guest(&mut world.primary.guest) {
            Ok((records, outputs)) => {
                world
                    .primary
                    .hand_over(&records, outputs, &mut world.report.violations)
            }
            Err(error) => world.report.violations.push(format!("birth: {error}")),
        }
        world
    }

    fn step(&mut self) {
        self.now += 1;
        if self.primary.running {
            self.run_primary();
        }
        let action = self.random.gen_range(0..200);
        if action < 50 {
            let line = Bytes::from(format!("{}\n", self.random.gen_range(0..1000u64)));
            self.feed_primary(line);
        } else if action < 54 {
            self.fail_over(false);
            return;
        } else if action < 56 {
            self.fail_over(true);
            return;
        } else if action < 57 {
            self.crash_backup();
        } else if action < 67 {
            self.take_checkpoint();
        }
        if self.random.gen_bool(0.5) {
            self.primary.log.flush();
        }
        if self.random.gen_bool(0.6) {
            self.finish_one_write();
        }
        if self.now % 2 == 0 {
            self.primary.log.tick();
        }
        if self.now % 5 == 0 {
            self.primary.log.heartbeat();
        }
        if self.backup.is_none() && self.now >= self.repair_at {
            self.pair_new_backup();
        }
        self.deliver(self.now);
        self.run_commands(false);
        self.step_stale(false);
    }

    fn finish_one_write(&mut self) {
        if let Some(violation) = self.backup.as_mut().and_then(BackupNode::finish_one_write) {
            self.report.violations.push(violation);
        }
    }

    fn deliver(&mut self, now: u64) {
        for message in self.to_backup.arrived(now) {
            if let Some(backup) = &mut self.backup {
                backup.log.handle(message);
            }
        }
        for message in self.to_primary.arrived(now) {
            self.primary.log.handle(message);
        }
        for (epoch, output) in self.to_store.arrived(now) {
            self.offer_to_store(epoch, &output);
        }
    }

    fn offer_to_store(&mut self, epoch: Epoch, output: &Output) {
        if epoch < self.store.epoch() {
            self.report.late_releases += 1;
        }
        match self.store.accept(epoch, output) {
            Ok(_) => {
                if epoch == self.epoch {
                    self.primary.confirm(output.oseq);
                }
            }
            Err(OutputRefusal::OutOfOrder { .. }) => {
                // A gap: the promotion check and the final comparison report
                // a lost output; a late arrival alone is not one.
            }
            Err(refusal) => self
                .report
                .violations
                .push(format!("step {}: output store: {refusal}", self.now)),
        }
    }

    /// Carries out both sides' commands: over the lossy links, or (`reliable`,
    /// once the network healed) by handing messages and releases over at once.
    /// Every release is checked against the output rule either way. Returns
    /// whether there were any commands.
    fn run_commands(&mut self, reliable: bool) -> bool {
        let primary_commands = self.primary.log.take_commands();
        let backup_commands = match &mut self.backup {
            Some(backup) => backup.log.take_commands(),
            None => Vec::new(),
        };
        let any = !primary_commands.is_empty() || !backup_commands.is_empty();
        for command in primary_commands {
            match command {
                Command::Send(message) if reliable => {
                    if let Some(backup) = &mut self.backup {
                        backup.log.handle(message);
                    }
                }
                Command::Send(message) => self.to_backup.send(&mut self.random, self.now, message),
                Command::Release(outputs) => self.release(outputs, reliable),
                Command::Stop { .. } | Command::Persist(_) | Command::PersistCheckpoint { .. } => {}
            }
        }
        let answered = self.primary.take_acknowledged_inputs();
        self.report.inputs_acknowledged += answered.len() as u64;
        self.acknowledged_inputs.extend(answered);
        for command in backup_commands {
            let Some(backup) = &mut self.backup else {
                break;
            };
            match backup.queue_write(command) {
                Some(Command::Send(message)) if reliable => self.primary.log.handle(message),
                Some(Command::Send(message)) => {
                    self.to_primary.send(&mut self.random, self.now, message)
                }
                _ => {}
            }
        }
        any
    }

    /// Checks the output rule for `outputs` and sends them to the store.
    fn release(&mut self, outputs: Vec<Output>, reliable: bool) {
        let durable = match &self.backup {
            Some(backup) => backup.durable_through(),
            None => self.primary.restored_through,
        }
        .max(self.primary.restored_through);
        for output in outputs {
            if output.depends_on > durable {
                self.report.violations.push(format!(
                    "oseq {} released at step {} before lsn {} was durable (durable {})",
                    output.oseq.0, self.now, output.depends_on.0, durable.0
                ));
            }
            if reliable {
                self.offer_to_store(self.epoch, &output);
            } else {
                // Releases travel to the store in order (one stream).
                self.to_store.queue.push_back(InFlight {
                    arrives_at: self.now + 1,
                    message: (self.epoch, output),
                });
            }
        }
    }

    /// The backup's node dies; the coordinator places a new one later.
    fn crash_backup(&mut self) {
        if self.backup.take().is_none() {
            return;
        }
        self.report.backup_crashes += 1;
        self.primary.log.backup_lost();
        self.repair_at = self.now + self.random.gen_range(3..30);
    }

    /// The coordinator placed a new backup: the primary catches it up.
    fn pair_new_backup(&mut self) {
        match self.pair_from_checkpoint() {
            Ok(true) => {}
            // The guest unwinds first; the pairing happens there.
            Ok(false) => return,
            Err(error) => {
                let violation = format!("step {}: pairing refused: {error}", self.now);
                self.report.violations.push(violation);
                return;
            }
        }
        self.report.repairings += 1;
        self.backup = Some(BackupNode::new(self.epoch));
        // A new node: nothing in flight reaches it or comes from it.
        self.to_backup = Link::new();
        self.to_primary = Link::new();
        self.primary.log.flush();
    }

    /// The primary's node crashes (or, with `partition`, is cut off and keeps
    /// running): the backup fences, wins the promotion, restores and replays,
    /// and goes live without a backup until one is paired. Only a caught-up
    /// backup is promoted (the coordinator's rule).
    fn fail_over(&mut self, partition: bool) {
        if self.primary.log.backup_state() != BackupState::CaughtUp {
            return;
        }
        let Some(mut backup) = self.backup.take() else {
            return;
        };
        self.report.failovers += 1;
        let new_epoch = Epoch(self.epoch.0 + 1);
        if self.bug != Some(PairsBug::PromoteWithoutFencing) {
            backup.log.fence(new_epoch);
        }
        // Writes the disk already accepted finish; nothing new is acknowledged
        // to the old primary (its link is cut or it is dead).
        while !backup.disk_idle() {
            self.report.violations.extend(backup.finish_one_write());
        }
        let _ = backup.log.take_commands();
        self.store.advance_epoch(new_epoch);
        let promoted = self.promote(&backup, new_epoch);
        let old_primary = std::mem::replace(&mut self.primary, promoted);
        self.epoch = new_epoch;
        self.repair_at = self.now + self.random.gen_range(3..30);
        self.to_backup = Link::new();
        self.to_primary = Link::new();
        if partition && self.stale.is_none() {
            self.report.partitions += 1;
            let heal_at = self.now + self.random.gen_range(10..80);
            self.stale = Some(StalePrimary {
                node: old_primary,
                endpoint: backup,
                to_endpoint: Link::cut_until(heal_at),
                to_stale: Link::cut_until(heal_at),
                heal_at,
            });
        }
    }

    /// The promoted backup's new primary: restore the checkpoint image, replay
    /// the records after it (outputs regenerated and offered to the store
    /// with the checkpoint's held ones), then hand what the guest did live to
    /// a core without a backup.
    fn promote(&mut self, backup: &BackupNode, new_epoch: Epoch) -> PrimaryNode {
        let image_lsn = backup.image_lsn();
        let replayed = backup.durable.clone();
        let last_lsn = replayed.last().map_or(image_lsn, |record| record.lsn);
        let history = self.promoted_history(image_lsn, &replayed);
        let mut guest = self.restore(backup, new_epoch, &history);
        let (records, outputs) = run_guest(&mut guest).unwrap_or_else(|error| {
            let violation = format!("step {}: promoted guest: {error}", self.now);
            self.report.violations.push(violation);
            (Vec::new(), Vec::new())
        });
        // Outputs up to the checkpoint's oseq are inside its memory: only the
        // held ones it carries come back (first among the outputs). Later ones
        // that depend only on durable records are regenerated with the oseqs
        // and bytes of the first time; the rest the guest wrote live.
        let checkpoint_oseq = backup.image.as_ref().map_or(Oseq(0), |image| {
            Oseq(image.host().next_oseq.0.saturating_sub(1))
        });
        let (offered, live): (Vec<Output>, Vec<Output>) = outputs
            .into_iter()
            .partition(|output| output.depends_on <= last_lsn);
        for output in &offered {
            self.offer_to_store(new_epoch, output);
        }
        let last_oseq = offered
            .last()
            .map_or(checkpoint_oseq, |output| output.oseq.max(checkpoint_oseq));
        if self.store.next_oseq() <= last_oseq {
            self.report.violations.push(format!(
                "step {}: after promotion to epoch {} the store lacks oseq {}: an output was lost",
                self.now,
                new_epoch.0,
                self.store.next_oseq().0
            ));
        }
        let mut primary = PrimaryNode {
            // The node's promoted primary keeps no checkpoint bytes: a new
            // backup starts from a full checkpoint captured then.
            log: PrimaryLog::resumed(
                PID,
                new_epoch,
                image_lsn,
                replayed,
                last_oseq,
                primary_config(self.bug),
            ),
            guest,
            history,
            checkpoints: CheckpointSchedule {
                last_lsn: image_lsn,
                since_full: 0,
            },
            // run_guest ran it until it waits for stdin.
            running: false,
            last_oseq,
            unconfirmed: VecDeque::new(),
            waiting_inputs: Vec::new(),
            restored_through: last_lsn,
        };
        primary.hand_over(&records, live, &mut self.report.violations);
        primary
    }

    /// The oracle's log of a promoted primary: the current primary's log up
    /// to the backup's image (whose checkpoints it took), then the backup's
    /// records.
    fn promoted_history(&mut self, image_lsn: Lsn, replayed: &[Record]) -> Vec<Record> {
        let covered = self.primary.history.get(..image_lsn.0 as usize);
        let mut history = covered.map(<[Record]>::to_vec).unwrap_or_else(|| {
            let violation = format!(
                "step {}: the backup's image is at lsn {}, beyond the primary's log ({} records)",
                self.now,
                image_lsn.0,
                self.primary.history.len()
            );
            self.report.violations.push(violation);
            Vec::new()
        });
        history.extend(replayed.iter().cloned());
        history
    }

    /// A guest restored from the backup's image that replays its durable
    /// records after it (from lsn 1 without an image). A restore the guest
    /// crate refuses is a violation; the simulation then goes on with a guest
    /// replaying the oracle's whole log, so that one fault is reported once.
    fn restore(&mut self, backup: &BackupNode, new_epoch: Epoch, history: &[Record]) -> Guest {
        let source = SimInputs::new(self.random.next_u64());
        let Some(image) = &backup.image else {
            return new_guest(backup.durable.clone(), source, new_epoch);
        };
        match restore_guest(image, backup.durable.clone(), source, new_epoch) {
            Ok(guest) => {
                self.report.restored_from_checkpoint += 1;
                if backup.incremental_in_image {
                    self.report.restored_after_incremental += 1;
                }
                if is_mid_run(&image.host().phase) {
                    self.report.restored_mid_run += 1;
                }
                guest
            }
            Err(error) => {
                let violation = format!("step {}: restore: {error}", self.now);
                self.report.violations.push(violation);
                let source = SimInputs::new(self.random.next_u64());
                new_guest(history.to_vec(), source, new_epoch)
            }
        }
    }
}

/// Runs one seed.
pub fn run_pairs_seed(config: &PairsConfig) -> PairsReport {
    let mut world = World::new(config.seed, config.bug);
    for _ in 0..config.steps {
        world.step();
    }
    world.finish()
}

#[cfg(test)]
mod tests;
