//! Runs many seeds on several threads and sums up what they found.
//!
//! Seeds are handed out by an atomic counter, but reports are gathered by seed
//! and combined in seed order, so the summary (including the combined trace hash)
//! does not depend on thread scheduling.

use crate::runner::{run_seed, RunConfig, SeedReport};
use crate::trace::TraceHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// How to run a range of seeds.
#[derive(Clone, Debug)]
pub struct SeedsOptions {
    /// The first seed.
    pub first_seed: u64,
    /// How many seeds.
    pub seeds: u64,
    /// Worker threads.
    pub threads: usize,
    /// Print a line per seed.
    pub verbose: bool,
    /// Print progress to standard error.
    pub progress: bool,
}

/// The sum over many seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that found at least one violation.
    pub violations: u64,
    /// Client operations.
    pub operations: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Crashes that lost or damaged unsynced writes.
    pub crashes_losing_unsynced_writes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Snapshots installed from a leader.
    pub snapshots: u64,
    /// Membership changes committed.
    pub reconfigurations: u64,
    /// The trace hashes of all seeds, combined in seed order.
    pub trace_hash: u64,
    /// The seeds that failed, in order.
    pub failed_seeds: Vec<u64>,
}

impl Summary {
    /// The one-line summary the command prints last.
    pub fn line(&self) -> String {
        format!(
            "seeds={} violations={} ops={} crashes={} partitions={} snapshots={} reconfigs={} trace_hash={:016x}",
            self.seeds,
            self.violations,
            self.operations,
            self.crashes,
            self.partitions,
            self.snapshots,
            self.reconfigurations,
            self.trace_hash
        )
    }
}

/// The command that replays one seed of `template`.
pub fn replay_command(template: &RunConfig, seed: u64) -> String {
    let bug = template
        .bug
        .map(|bug| format!(" --bug {}", bug.name()))
        .unwrap_or_default();
    format!(
        "cargo run --release -p understudy-sim -- raft --seed {seed} --nodes {} --steps {}{bug}",
        template.nodes, template.operations
    )
}

/// Runs `options.seeds` seeds starting at `options.first_seed`.
pub fn run_seeds(template: &RunConfig, options: &SeedsOptions) -> Summary {
    let next = AtomicU64::new(0);
    let reports: Mutex<Vec<Option<SeedReport>>> = Mutex::new(vec![
        None;
        usize::try_from(options.seeds)
            .expect("seed count fits")
    ]);
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..options.threads.max(1) {
            scope.spawn(|| loop {
                let offset = next.fetch_add(1, Ordering::Relaxed);
                if offset >= options.seeds {
                    break;
                }
                let run = RunConfig {
                    seed: options.first_seed + offset,
                    ..template.clone()
                };
                let report = run_seed_catching_panics(&run);
                report_seed(template, options, &report, &done);
                // The lock is only poisoned if another worker panicked, and then
                // the whole run is lost anyway.
                reports.lock().expect("no worker panicked")[offset as usize] = Some(report);
            });
        }
    });
    let reports = reports.into_inner().expect("no worker panicked");
    let mut summary = Summary::default();
    let mut hasher = TraceHasher::default();
    for report in reports.into_iter().flatten() {
        summary.seeds += 1;
        summary.operations += report.operations;
        summary.crashes += report.crashes;
        summary.crashes_losing_unsynced_writes += report.crashes_losing_unsynced_writes;
        summary.partitions += report.partitions;
        summary.snapshots += report.snapshots_installed;
        summary.reconfigurations += report.reconfigurations;
        hasher.word(report.trace_hash);
        if !report.violations.is_empty() {
            summary.violations += 1;
            summary.failed_seeds.push(report.seed);
        }
    }
    summary.trace_hash = hasher.finish();
    summary
}

/// Runs one seed; an assertion that fails inside a node (or anywhere in the run)
/// is a violation of that seed, not the end of the whole run.
pub fn run_seed_catching_panics(run: &RunConfig) -> SeedReport {
    std::panic::catch_unwind(|| run_seed(run)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
            })
            .unwrap_or_else(|| "a panic without a message".to_owned());
        SeedReport {
            seed: run.seed,
            violations: vec![format!("panic (an assertion failed): {message}")],
            ..SeedReport::default()
        }
    })
}

fn report_seed(
    template: &RunConfig,
    options: &SeedsOptions,
    report: &SeedReport,
    done: &AtomicU64,
) {
    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
    if !report.violations.is_empty() {
        let mut text = format!("seed {} FAILED:\n", report.seed);
        for violation in report.violations.iter().take(10) {
            text.push_str(&format!("  {violation}\n"));
        }
        if report.violations.len() > 10 {
            text.push_str(&format!(
                "  ... and {} more\n",
                report.violations.len() - 10
            ));
        }
        text.push_str(&format!(
            "  replay: {}\n",
            replay_command(template, report.seed)
        ));
        print!("{text}");
    } else if options.verbose {
        println!(
            "seed {} ok: ops={} unknown={} crashes={} (lossy {}) partitions={} snapshots={} \
             reconfigs={} events={} virtual={}ms trace_hash={:016x}",
            report.seed,
            report.operations,
            report.unknown_operations,
            report.crashes,
            report.crashes_losing_unsynced_writes,
            report.partitions,
            report.snapshots_installed,
            report.reconfigurations,
            report.events,
            report.virtual_micros / 1000,
            report.trace_hash
        );
    }
    let step = (options.seeds / 10).max(1);
    if options.progress && options.seeds > 1 && (finished % step == 0 || finished == options.seeds)
    {
        eprintln!("progress: {finished}/{} seeds", options.seeds);
    }
}
