//! `understudy-sim`: runs seeded whole-cluster simulations and prints a summary.
//!
//! `cargo run --release -p understudy-sim -- raft --seeds 2000` runs seeds 0..2000
//! on every core; the last line is the summary other tools parse:
//! `seeds=N violations=V ops=O crashes=C partitions=P snapshots=S reconfigs=R trace_hash=H`.
//! It exits with status 1 when any seed found a violation.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
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
    /// rule, fencing and output store, with the real guest host running
    /// running-total.wasm, under message loss, duplication and delay, a slow
    /// backup disk and primary crashes with promotion (replay, then live). The last
    /// line is `seeds=N violations=V failovers=F inputs=I lines=L`.
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
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
}

/// Runs `pairs`: every seed in turn; prints violations with their seed.
fn run_pairs(arguments: &PairsArguments) -> ExitCode {
    let (mut violations, mut failovers, mut inputs, mut lines) = (0u64, 0u64, 0u64, 0u64);
    for seed in arguments.seed..arguments.seed.saturating_add(arguments.seeds) {
        let config = understudy_sim::pairs::PairsConfig {
            seed,
            steps: arguments.steps,
        };
        let report = understudy_sim::pairs::run_pairs_seed(&config);
        for violation in &report.violations {
            println!("seed {seed}: VIOLATION {violation}");
        }
        if !report.violations.is_empty() {
            println!(
                "replay: cargo run --release -p understudy-sim -- pairs --seed {seed} --steps {} --verbose",
                arguments.steps
            );
        }
        if arguments.verbose {
            println!(
                "seed {seed}: violations={} failovers={} inputs={} lines={} late_releases={} stale_refused={}",
                report.violations.len(),
                report.failovers,
                report.inputs_acknowledged,
                report.lines,
                report.late_releases,
                report.stale_refused
            );
        }
        violations += report.violations.len() as u64;
        failovers += report.failovers;
        inputs += report.inputs_acknowledged;
        lines += report.lines;
    }
    println!(
        "seeds={} violations={violations} failovers={failovers} inputs={inputs} lines={lines}",
        arguments.seeds
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
