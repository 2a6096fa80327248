//! Seeded simulation of one process pair: the real `pair` core (logging
//! channel, output rule, fencing, output store) under message loss,
//! duplication and delay, a slow backup disk, and crashes of the primary
//! followed by promotion of the backup.
//!
//! The guest is the real WebAssembly host (`understudy-guest`) running
//! `guests/running-total.wasm`. On the primary its inputs (a seeded random
//! token and clock, then stdin numbers drawn from the simulation's RNG) are
//! recorded and every record is handed to the pair core, which numbers it
//! again (the two numberings are checked to agree), as is every output. A
//! promoted backup replays its durable records on a fresh instance, then goes
//! live in the new epoch with lsns continuing.
//!
//! Checked: every output is released only after the record it depends on is
//! durable at the backup (at each release); the output store never sees the
//! same oseq with different bytes; the reader's stream has no gap and no
//! duplicate and equals a fault-free run (a fresh guest replaying the final
//! log); every stdin input
//! acknowledged to its client is in the final log.
//!
//! Simplifications (each a later step): no checkpoints (a promotion replays
//! the whole log); re-pairing hands the new backup a copy of the log at once;
//! one pid; the coordinator's compare-and-set always lets the backup win.

use bytes::Bytes;
use rand::RngCore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;
use std::sync::OnceLock;
use understudy_guest::{
    Birth, GuestConfig, GuestEngine, GuestInstance, GuestModule, HostInputs, ReplayThenRecord,
    RunOutcome, StdinRead,
};
use understudy_pair::{
    BackupLog, Command, Epoch, Lsn, Oseq, Output, OutputRefusal, OutputStore, PairMessage, Pid,
    PrimaryConfig, PrimaryLog, Record, RecordKind, Stream,
};

/// The example guest every simulated pid runs.
const RUNNING_TOTAL: &[u8] = include_bytes!("../../../guests/running-total.wasm");

const PID: Pid = Pid(1);

/// What one seed does.
#[derive(Clone, Debug)]
pub struct PairsConfig {
    /// The seed.
    pub seed: u64,
    /// Simulation steps.
    pub steps: u64,
}

/// What one seed found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairsReport {
    /// Invariant violations, described.
    pub violations: Vec<String>,
    /// Stdin inputs acknowledged to clients.
    pub inputs_acknowledged: u64,
    /// Primary crashes (each followed by a promotion).
    pub failovers: u64,
    /// Outputs a former primary's releases offered after its epoch ended
    /// (repeats of regenerated ones, or refused as stale).
    pub late_releases: u64,
    /// Of those, refused as stale (never when the output rule holds).
    pub stale_refused: u64,
    /// Output lines the reader saw.
    pub lines: u64,
}

/// The engine and the compiled module, once per process: compiling is the
/// expensive part, instantiating is cheap.
fn compiled_guest() -> &'static (GuestEngine, GuestModule) {
    static GUEST: OnceLock<(GuestEngine, GuestModule)> = OnceLock::new();
    GUEST.get_or_init(|| {
        // The default configuration is valid and the module is checked in and
        // tested by the guest crate: failing here is a broken build.
        let engine = GuestEngine::new(GuestConfig::default()).expect("the guest engine");
        let module = engine
            .load(RUNNING_TOTAL)
            .expect("running-total.wasm loads");
        (engine, module)
    })
}

/// The live source of a simulated primary: stdin the simulation queues, a
/// clock advancing by a fixed step per reading and seeded random bytes, so a
/// seed replays identically.
#[derive(Debug)]
struct SimInputs {
    stdin: VecDeque<Bytes>,
    clock_nanos: u64,
    random: ChaCha8Rng,
}

impl SimInputs {
    fn new(seed: u64) -> SimInputs {
        SimInputs {
            stdin: VecDeque::new(),
            clock_nanos: seed % 1_000_000_000_000,
            random: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl HostInputs for SimInputs {
    fn read_stdin(&mut self, max: usize) -> StdinRead {
        match self.stdin.front_mut() {
            // Stdin is never closed in the simulation.
            None => StdinRead::Pending,
            Some(front) if front.len() <= max => {
                StdinRead::Data(self.stdin.pop_front().unwrap_or_default())
            }
            Some(front) => StdinRead::Data(front.split_to(max)),
        }
    }

    fn clock(&mut self, _clock_id: u32) -> u64 {
        self.clock_nanos += 1_000_000;
        self.clock_nanos
    }

    fn random(&mut self, length: usize) -> Bytes {
        let mut bytes = vec![0; length];
        self.random.fill_bytes(&mut bytes);
        Bytes::from(bytes)
    }
}

/// A running-total guest that replays `log` and then records live inputs from
/// `source` in `epoch`.
type Guest = GuestInstance<ReplayThenRecord<SimInputs>>;

fn new_guest(log: Vec<Record>, source: SimInputs, epoch: Epoch) -> Guest {
    let (engine, module) = compiled_guest();
    let birth = Birth {
        args: vec!["running-total".to_string()],
        env: Vec::new(),
    };
    let inputs = ReplayThenRecord::new(log, source, epoch);
    // The birth arguments are far within the limits.
    GuestInstance::new(engine, module, &birth, inputs).expect("a guest instance")
}

/// Runs `guest` until it parks in stdin; returns the live records it logged
/// and every output it wrote, or what went wrong.
fn run_guest(guest: &mut Guest) -> Result<(Vec<Record>, Vec<Output>), String> {
    loop {
        match guest.run() {
            Ok(RunOutcome::Blocked) => break,
            Ok(RunOutcome::OutOfFuel) => continue,
            Ok(other) => return Err(format!("guest ended: {other:?}")),
            Err(error) => return Err(format!("guest failed: {error}")),
        }
    }
    let records = guest.with_inputs(|inputs| inputs.recorder_mut().take_records());
    Ok((records, guest.take_outputs()))
}

/// A message on the wire, with the step at which it arrives.
struct InFlight<T> {
    arrives_at: u64,
    message: T,
}

/// One direction of the network: delay, loss and duplication, no reordering
/// beyond what delays cause.
struct Link<T> {
    queue: VecDeque<InFlight<T>>,
}

impl<T: Clone> Link<T> {
    fn new() -> Link<T> {
        Link {
            queue: VecDeque::new(),
        }
    }

    fn send(&mut self, random: &mut ChaCha8Rng, now: u64, message: T) {
        if random.gen_bool(0.05) {
            return; // lost
        }
        let copies = if random.gen_bool(0.03) { 2 } else { 1 };
        for _ in 0..copies {
            let arrives_at = now + random.gen_range(1..6);
            self.queue.push_back(InFlight {
                arrives_at,
                message: message.clone(),
            });
        }
    }

    fn arrived(&mut self, now: u64) -> Vec<T> {
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .queue
            .drain(..)
            .partition(|flight| flight.arrives_at <= now);
        self.queue = waiting.into();
        ready.into_iter().map(|flight| flight.message).collect()
    }
}

/// The primary's node: the core plus the guest it runs.
struct PrimaryNode {
    log: PrimaryLog,
    guest: Guest,
    /// Stdin records whose clients wait for them to be acknowledged.
    waiting_inputs: Vec<(Lsn, Bytes)>,
}

/// The backup's node: the core and its disk.
struct BackupNode {
    log: BackupLog,
    disk_queue: VecDeque<Vec<Record>>,
    durable: Vec<Record>,
}

struct World {
    random: ChaCha8Rng,
    now: u64,
    epoch: Epoch,
    primary: PrimaryNode,
    backup: BackupNode,
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

fn primary_config() -> PrimaryConfig {
    PrimaryConfig {
        append_records_max: 8,
        retransmit_ticks: 4,
        ..PrimaryConfig::default()
    }
}

impl World {
    fn new(seed: u64) -> World {
        let mut random = ChaCha8Rng::seed_from_u64(seed);
        let source = SimInputs::new(random.next_u64());
        let mut world = World {
            random,
            now: 0,
            epoch: Epoch(1),
            primary: PrimaryNode {
                log: PrimaryLog::new(PID, Epoch(1), Lsn(0), Oseq(0), primary_config()),
                guest: new_guest(Vec::new(), source, Epoch(1)),
                waiting_inputs: Vec::new(),
            },
            backup: BackupNode {
                log: BackupLog::new(PID, Epoch(1), Lsn(0)),
                disk_queue: VecDeque::new(),
                durable: Vec::new(),
            },
            to_backup: Link::new(),
            to_primary: Link::new(),
            to_store: Link::new(),
            store: OutputStore::new(),
            report: PairsReport::default(),
            acknowledged_inputs: Vec::new(),
        };
        // The guest starts: it logs its random token and clock and parks in stdin.
        world.run_primary_guest();
        world
    }

    /// Runs the primary's guest until it parks, handing its records and
    /// outputs to the pair core; returns the live records.
    fn run_primary_guest(&mut self) -> Vec<Record> {
        if self.primary.guest.is_finished() {
            return Vec::new();
        }
        match run_guest(&mut self.primary.guest) {
            Ok((records, outputs)) => {
                self.hand_over(&records, outputs);
                records
            }
            Err(error) => {
                self.report
                    .violations
                    .push(format!("step {}: {error}", self.now));
                Vec::new()
            }
        }
    }

    /// Logs `records` and outputs `outputs` on the primary's core in the order
    /// the guest produced them (an output follows the records up to its
    /// `depends_on`), checking the core numbers them as the guest did.
    fn hand_over(&mut self, records: &[Record], outputs: Vec<Output>) {
        let mut records = records.iter().peekable();
        for output in outputs {
            while let Some(record) = records.next_if(|record| record.lsn <= output.depends_on) {
                self.log_record(record);
            }
            if self.primary.log.logged() != output.depends_on {
                self.report.violations.push(format!(
                    "oseq {} depends on lsn {} but the core logged up to {}",
                    output.oseq.0,
                    output.depends_on.0,
                    self.primary.log.logged().0
                ));
            }
            // Backlogged outputs would pause a real guest; the limits are far
            // above what a seed writes, so a refusal is reported.
            match self.primary.log.output(output.stream, output.bytes.clone()) {
                Ok(oseq) if oseq == output.oseq => {}
                other => self.report.violations.push(format!(
                    "guest oseq {} became {other:?} in the core",
                    output.oseq.0
                )),
            }
        }
        for record in records {
            self.log_record(record);
        }
    }

    fn log_record(&mut self, record: &Record) {
        let logged =
            self.primary
                .log
                .log(record.kind, record.payload.clone(), record.fuel_consumed);
        let agrees = logged == Ok(record.lsn) && record.epoch == self.primary.log.epoch();
        if !agrees {
            self.report.violations.push(format!(
                "guest record {} of epoch {} became {logged:?} in the core of epoch {}",
                record.lsn.0,
                record.epoch.0,
                self.primary.log.epoch().0
            ));
        }
    }

    fn step(&mut self) {
        self.now += 1;
        let action = self.random.gen_range(0..100);
        if action < 25 {
            let value = self.random.gen_range(0..1000u64);
            let line = Bytes::from(format!("{value}\n"));
            self.primary.guest.with_inputs(|inputs| {
                inputs.recorder_mut().source_mut().stdin.push_back(line);
            });
            let records = self.run_primary_guest();
            for record in records {
                if record.kind == RecordKind::StdinData {
                    self.primary
                        .waiting_inputs
                        .push((record.lsn, record.payload));
                }
            }
        } else if action < 27 {
            self.fail_over();
            return;
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
        self.deliver();
        self.run_commands(false);
    }

    fn finish_one_write(&mut self) {
        if let Some(records) = self.backup.disk_queue.pop_front() {
            let last = records.last().expect("persists are never empty").lsn;
            self.backup.durable.extend(records);
            self.backup.log.handle_persisted(last);
        }
    }

    fn deliver(&mut self) {
        for message in self.to_backup.arrived(self.now) {
            self.backup.log.handle(message);
        }
        for message in self.to_primary.arrived(self.now) {
            self.primary.log.handle(message);
        }
        for (epoch, output) in self.to_store.arrived(self.now) {
            self.offer_to_store(epoch, &output);
        }
    }

    fn offer_to_store(&mut self, epoch: Epoch, output: &Output) {
        if epoch < self.store.epoch() {
            self.report.late_releases += 1;
        }
        match self.store.accept(epoch, output) {
            Ok(_) => {}
            Err(OutputRefusal::Stale { .. }) => self.report.stale_refused += 1,
            Err(OutputRefusal::OutOfOrder { .. }) => {
                // A lost or delayed earlier release; the sender's retry path is
                // the regenerated stream. Counted, not a violation.
            }
            Err(refusal) => self
                .report
                .violations
                .push(format!("output store: {refusal}")),
        }
    }

    /// Carries out both sides' commands: over the lossy links, or (`reliable`,
    /// once the network healed) by handing messages and releases over at once.
    /// Every release is checked against the output rule either way. Returns
    /// whether there were any commands.
    fn run_commands(&mut self, reliable: bool) -> bool {
        let primary_commands = self.primary.log.take_commands();
        let backup_commands = self.backup.log.take_commands();
        let any = !primary_commands.is_empty() || !backup_commands.is_empty();
        for command in primary_commands {
            match command {
                Command::Send(message) if reliable => self.backup.log.handle(message),
                Command::Send(message) => self.to_backup.send(&mut self.random, self.now, message),
                Command::Release(outputs) => self.release(outputs, reliable),
                Command::Stop { .. } | Command::Persist(_) => {}
            }
        }
        self.answer_acknowledged_inputs();
        for command in backup_commands {
            match command {
                Command::Send(message) if reliable => self.primary.log.handle(message),
                Command::Send(message) => self.to_primary.send(&mut self.random, self.now, message),
                Command::Persist(records) => self.backup.disk_queue.push_back(records),
                Command::Release(_) | Command::Stop { .. } => {}
            }
        }
        any
    }

    /// Checks the output rule for `outputs` and sends them to the store.
    fn release(&mut self, outputs: Vec<Output>, reliable: bool) {
        let durable = self.backup.durable.last().map_or(Lsn(0), |r| r.lsn);
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

    /// A client's stdin write is answered once its record is durable at the
    /// backup (docs/pairs.md, rule 3).
    fn answer_acknowledged_inputs(&mut self) {
        let acknowledged = self.primary.log.acknowledged();
        let (answered, waiting): (Vec<_>, Vec<_>) = self
            .primary
            .waiting_inputs
            .drain(..)
            .partition(|(lsn, _)| *lsn <= acknowledged);
        self.primary.waiting_inputs = waiting;
        self.report.inputs_acknowledged += answered.len() as u64;
        self.acknowledged_inputs.extend(answered);
    }

    /// The primary's node crashes: the backup fences, wins the promotion,
    /// replays its durable log (regenerating outputs) and goes live; a new
    /// backup receives a copy of the log. Messages of the dead primary already
    /// on the wire may still arrive.
    fn fail_over(&mut self) {
        self.report.failovers += 1;
        let new_epoch = Epoch(self.epoch.0 + 1);
        self.backup.log.fence(new_epoch);
        // Writes the disk already accepted finish; nothing new is acknowledged.
        while !self.backup.disk_queue.is_empty() {
            self.finish_one_write();
        }
        let _ = self.backup.log.take_commands();
        self.store.advance_epoch(new_epoch);
        let log = self.backup.durable.clone();
        let last_lsn = log.last().map_or(Lsn(0), |record| record.lsn);
        let source = SimInputs::new(self.random.next_u64());
        let mut guest = new_guest(log.clone(), source, new_epoch);
        let (records, outputs) = match run_guest(&mut guest) {
            Ok(run) => run,
            Err(error) => {
                let violation = format!("step {}: promoted guest: {error}", self.now);
                self.report.violations.push(violation);
                (Vec::new(), Vec::new())
            }
        };
        // Outputs that depend only on durable records are regenerated: offered
        // to the store at once, with the oseqs and bytes of the first time.
        let (regenerated, live): (Vec<Output>, Vec<Output>) = outputs
            .into_iter()
            .partition(|output| output.depends_on <= last_lsn);
        for output in &regenerated {
            self.offer_to_store(new_epoch, output);
        }
        let last_oseq = regenerated.last().map_or(Oseq(0), |output| output.oseq);
        self.epoch = new_epoch;
        self.primary = PrimaryNode {
            log: PrimaryLog::new(PID, new_epoch, last_lsn, last_oseq, primary_config()),
            guest,
            waiting_inputs: Vec::new(),
        };
        // What the guest observed live after the replay goes through the core.
        self.hand_over(&records, live);
        self.backup = BackupNode {
            log: BackupLog::new(PID, new_epoch, last_lsn),
            disk_queue: VecDeque::new(),
            durable: log,
        };
        // The old primary's appends now meet a backup of a newer epoch.
        self.to_primary = Link::new();
    }

    /// Heals the network and lets everything settle, then checks the end state.
    fn finish(mut self) -> PairsReport {
        for _ in 0..10_000 {
            self.now += 1;
            self.primary.log.flush();
            self.primary.log.tick();
            self.finish_one_write();
            for message in self.to_backup.arrived(u64::MAX) {
                self.backup.log.handle(message);
            }
            for message in self.to_primary.arrived(u64::MAX) {
                self.primary.log.handle(message);
            }
            for (epoch, output) in self.to_store.arrived(u64::MAX) {
                self.offer_to_store(epoch, &output);
            }
            // Commands beget commands (an acknowledgement releases outputs):
            // carry them out until none are left.
            while self.run_commands(true) {}
            let settled = self.primary.log.acknowledged() == self.primary.log.logged()
                && self.primary.log.held_outputs() == 0
                && self.to_store.queue.is_empty()
                && self.backup.disk_queue.is_empty();
            if settled {
                break;
            }
        }
        self.check_final();
        self.report
    }

    fn check_final(&mut self) {
        // The fault-free run: a fresh guest replaying the final log.
        let source = SimInputs::new(0);
        let mut guest = new_guest(self.backup.durable.clone(), source, Epoch(self.epoch.0 + 1));
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
        for (lsn, bytes) in &self.acknowledged_inputs {
            let kept = self
                .backup
                .durable
                .get((lsn.0 - 1) as usize)
                .is_some_and(|record| {
                    record.kind == RecordKind::StdinData && record.payload == *bytes
                });
            if !kept {
                self.report.violations.push(format!(
                    "acknowledged stdin record {} is not in the final log",
                    lsn.0
                ));
            }
        }
        let durable_lsns: Vec<u64> = self
            .backup
            .durable
            .iter()
            .map(|record| record.lsn.0)
            .collect();
        let contiguous = durable_lsns
            .iter()
            .enumerate()
            .all(|(index, lsn)| *lsn == index as u64 + 1);
        if !contiguous {
            self.report
                .violations
                .push("the final log has a gap".to_string());
        }
    }
}

/// Runs one seed.
pub fn run_pairs_seed(config: &PairsConfig) -> PairsReport {
    let mut world = World::new(config.seed);
    for _ in 0..config.steps {
        world.step();
    }
    world.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hundred_seeds_find_no_violation_and_exercise_failover() {
        let mut failovers = 0;
        let mut late = 0;
        for seed in 0..100 {
            let report = run_pairs_seed(&PairsConfig { seed, steps: 400 });
            assert!(
                report.violations.is_empty(),
                "seed {seed}: {:?}",
                report.violations
            );
            assert!(report.lines > 0, "seed {seed} produced output");
            failovers += report.failovers;
            late += report.late_releases;
        }
        assert!(failovers > 100, "failovers happened ({failovers})");
        assert!(
            late > 0,
            "former primaries' releases reached the store late"
        );
    }

    #[test]
    fn a_seed_replays_identically() {
        let config = PairsConfig {
            seed: 42,
            steps: 500,
        };
        assert_eq!(run_pairs_seed(&config), run_pairs_seed(&config));
    }
}
