//! `understudy-sim`: runs seeded whole-cluster simulations and prints a summary.
//!
//! `cargo run --release -p understudy-sim -- raft --seeds 2000` runs seeds 0..2000
//! on every core; the last line is the summary other tools parse:
//! `seeds=N violations=V ops=O crashes=C partitions=P snapshots=S reconfigs=R trace_hash=H`.
//! It exits with status 1 when any seed found a violation.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use understudy_sim::pairs::{PairsBug, PairsReport};
use understudy_sim::runner::{Bug, RunConfig};
use understudy_sim::summary::{run_seeds, SeedsOptions};

/// Deterministic simulation of understudy clusters.
#[derive(Parser, Debug)]
#[command(name = "understudy-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: SimCommand,
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Simulates a Raft key-value cluster under crashes, partitions, message
    /// loss, duplication and reordering, clock skew and membership changes, then
    /// checks safety invariants, liveness and linearizability.
    Raft(RaftArguments),
    /// Simulates process pairs: the pair protocol's logging channel, output
    /// rule, checkpoints, fencing, re-pairing and output store, with the real
    /// guest host running running-total.wasm, under message loss, duplication
    /// and delay, a slow backup disk, primary crashes and partitions with
    /// promotion (restore, replay, then live) and backup crashes. The last line
    /// is `seeds=N violations=V failovers=F partitions=P repairings=R
    /// checkpoints=C inputs=I lines=L`.
    Pairs(PairsArguments),
}

#[derive(clap::Args, Debug)]
struct PairsArguments {
    /// How many seeds to run, starting at --seed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    seeds: u64,
    /// The first seed (alone: replay exactly this seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Simulation steps per seed.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    steps: u64,
    /// Switch on a deliberate bug (test-only), to see the simulator find it:
    /// release-before-ack, promote-without-fencing,
    /// checkpoint-without-unreleased.
    #[arg(long, value_parser = parse_pairs_bug)]
    bug: Option<PairsBug>,
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
}

/// ` --bug NAME` to repeat in a replay line, or nothing.
fn bug_argument(bug: Option<PairsBug>) -> String {
    PairsBug::ALL
        .iter()
        .find(|(known, _)| Some(*known) == bug)
        .map_or(String::new(), |(_, name)| format!(" --bug {name}"))
}

fn parse_pairs_bug(name: &str) -> Result<PairsBug, String> {
    PairsBug::ALL
        .iter()
        .find(|(_, known)| *known == name)
        .map(|(bug, _)| *bug)
        .ok_or_else(|| {
            let names: Vec<&str> = PairsBug::ALL.iter().map(|(_, name)| *name).collect();
            format!("unknown bug '{name}'; known bugs: {}", names.join(", "))
        })
}

/// Runs `pairs`: every seed in turn; prints violations with their seed.
fn run_pairs(arguments: &PairsArguments) -> ExitCode {
    let mut total = PairsReport::default();
    let mut violations = 0u64;
    for seed in arguments.seed..arguments.seed.saturating_add(arguments.seeds) {
        let config = understudy_sim::pairs::PairsConfig {
            seed,
            steps: arguments.steps,
            bug: arguments.bug,
        };
        let report = understudy_sim::pairs::run_pairs_seed(&config);
        for violation in &report.violations {
            println!("seed {seed}: VIOLATION {violation}");
        }
        if !report.violations.is_empty() {
            println!(
                "replay: cargo run --release -p understudy-sim -- pairs --seed {seed} --steps {}{} --verbose",
                arguments.steps,
                bug_argument(arguments.bug)
            );
        }
        if arguments.verbose {
            println!(
                "seed {seed}: violations={} failovers={} partitions={} backup_crashes={} repairings={} checkpoints={} restored_from_checkpoint={} inputs={} lines={} late_releases={}",
                report.violations.len(),
                report.failovers,
                report.partitions,
                report.backup_crashes,
                report.repairings,
                report.checkpoints,
                report.restored_from_checkpoint,
                report.inputs_acknowledged,
                report.lines,
                report.late_releases
            );
        }
        violations += report.violations.len() as u64;
        total.failovers += report.failovers;
        total.partitions += report.partitions;
        total.repairings += report.repairings;
        total.checkpoints += report.checkpoints;
        total.inputs_acknowledged += report.inputs_acknowledged;
        total.lines += report.lines;
    }
    println!(
        "seeds={} violations={violations} failovers={} partitions={} repairings={} checkpoints={} inputs={} lines={}",
        arguments.seeds,
        total.failovers,
        total.partitions,
        total.repairings,
        total.checkpoints,
        total.inputs_acknowledged,
        total.lines
    );
    if violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(clap::Args, Debug)]
struct RaftArguments {
    /// How many seeds to run, starting at --seed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    seeds: u64,
    /// The first seed (alone: replay exactly this seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Voters the cluster starts with.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Client operations per seed.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    steps: u64,
    /// Switch on a deliberate bug (test-only), to see the simulator find it.
    #[arg(long, value_parser = parse_bug)]
    bug: Option<Bug>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
}

fn parse_bug(name: &str) -> Result<Bug, String> {
    Bug::ALL
        .iter()
        .find(|(_, known)| *known == name)
        .map(|(bug, _)| *bug)
        .ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|(_, name)| *name).collect();
            format!("unknown bug '{name}'; known bugs: {}", names.join(", "))
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let arguments = match cli.command {
        SimCommand::Raft(arguments) => arguments,
        SimCommand::Pairs(arguments) => return run_pairs(&arguments),
    };
    if arguments.seed.checked_add(arguments.seeds - 1).is_none() {
        eprintln!(
            "error: --seed {} plus --seeds {} runs past the largest seed",
            arguments.seed, arguments.seeds
        );
        return ExitCode::from(2);
    }
    let options = SeedsOptions {
        first_seed: arguments.seed,
        seeds: arguments.seeds,
        threads: arguments.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        verbose: arguments.verbose,
        progress: true,
    };
    let template = RunConfig {
        seed: arguments.seed,
        nodes: arguments.nodes as usize,
        operations: arguments.steps,
        bug: arguments.bug,
    };
    let summary = run_seeds(&template, &options);
    println!("{}", summary.line());
    if summary.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
