//! `understudy-bench`: closed-loop HTTP load against understudy or etcd
//! (`load`), and leader-failover timing on a cluster it starts itself
//! (`failover`), and process-pair throughput and failover (`pairs`).
//! `scripts/bench` runs both systems side by side.

mod failover;
mod histogram;
mod load;
mod pair_metrics;
mod pairs;

use clap::{Parser, Subcommand};
use histogram::format_millis;
use std::path::PathBuf;
use std::time::Duration;

/// Longest load run accepted, in seconds.
const DURATION_S_MAX: u64 = 3600;
/// Most leader kills one failover run performs.
const KILLS_MAX: usize = 1000;
/// Most concurrent stdin writers of a process-pair throughput phase.
const WRITERS_MAX: usize = 1024;
/// Largest guest memory the pairs failover accepts (`cpu-heavy` takes 1..=1024).
const MEMORY_MIB_MAX: u32 = 1024;

/// HTTP benchmarks for understudy (and etcd, for comparison).
#[derive(Parser, Debug)]
#[command(name = "understudy-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// N closed-loop clients for a duration; prints one tab-separated line:
    /// target, mode, clients, ops, ops/s, p50 ms, p99 ms, errors.
    Load {
        /// Which API the endpoints speak.
        #[arg(long, value_enum)]
        target: load::Target,
        /// `put` (256-byte values, 16-byte keys) or `get` (linearizable).
        #[arg(long, value_enum)]
        mode: load::Mode,
        /// Client URLs, comma-separated; client i uses endpoint i mod len.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        /// Concurrent clients.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// Print a header line before the result.
        #[arg(long)]
        header: bool,
    },
    /// Start a 3-node understudy cluster, SIGKILL its leader `--kills` times and
    /// time each kill to the first successful write.
    Failover {
        /// The `understudy` executable.
        #[arg(long, default_value = "target/release/understudy")]
        binary: PathBuf,
        /// Leaders to kill.
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Node i serves clients on P+i-1 and peers on P+100+i-1.
        #[arg(long, default_value_t = 24379)]
        base_port: u16,
        /// Data and log directory (default: a fresh temp dir, removed after a
        /// successful run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Leader heartbeat interval in milliseconds.
        #[arg(long, default_value_t = 100)]
        heartbeat_interval: u64,
        /// Shortest election timeout in milliseconds.
        #[arg(long, default_value_t = 1000)]
        election_timeout: u64,
    },
    /// Start a 3-node understudy cluster; measure `running-total` throughput
    /// paired vs unpaired on the same node, then time `--failovers` SIGKILLs
    /// of the primary's node to the first new output.
    Pairs {
        /// The `understudy` executable.
        #[arg(long, default_value = "target/release/understudy")]
        binary: PathBuf,
        /// Directory with `running-total.wasm` and `cpu-heavy.wasm`.
        #[arg(long, default_value = "guests")]
        guests_dir: PathBuf,
        /// Seconds of each throughput phase (four phases: paired, unpaired,
        /// unpaired, paired).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Concurrent stdin writers per phase, each with its own client id;
        /// a comma-separated list runs the throughput phases once per count.
        /// The summary's `peak_ratio` compares each kind's best count: keep
        /// a count high enough to saturate the node in the list (on 2 cores
        /// a paired guest needs 256; 512 overloads both kinds).
        #[arg(long, value_delimiter = ',', default_value = "1,8,32,128,256")]
        writers: Vec<usize>,
        /// Primary kills (0 skips the failover part).
        #[arg(long, default_value_t = 20)]
        failovers: usize,
        /// Fail over `cpu-heavy.wasm` touching this many MiB instead of
        /// `running-total.wasm`.
        #[arg(long)]
        memory_mib: Option<u32>,
        /// Node i serves clients on P+i-1 and peers on P+100+i-1.
        #[arg(long, default_value_t = 24479)]
        base_port: u16,
        /// Data and log directory (default: a fresh temp dir, removed after a
        /// successful run).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("understudy-bench: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            BenchCommand::Load {
                target,
                mode,
                endpoints,
                clients,
                duration_s,
                header,
            } => run_load(target, mode, endpoints, clients, duration_s, header).await,
            BenchCommand::Failover {
                binary,
                kills,
                base_port,
                data_dir,
                heartbeat_interval,
                election_timeout,
            } => {
                let options = failover::FailoverOptions {
                    binary,
                    data_dir: data_dir.clone().unwrap_or_else(failover::default_data_dir),
                    base_port,
                    kills,
                    heartbeat_interval_ms: heartbeat_interval,
                    election_timeout_ms: election_timeout,
                };
                run_failover(options, data_dir.is_none()).await
            }
            BenchCommand::Pairs {
                binary,
                guests_dir,
                seconds,
                writers,
                failovers,
                memory_mib,
                base_port,
                data_dir,
            } => {
                let options = pairs::PairsOptions {
                    cluster: failover::FailoverOptions {
                        binary,
                        data_dir: data_dir.clone().unwrap_or_else(failover::default_data_dir),
                        base_port,
                        kills: failovers,
                        heartbeat_interval_ms: 100,
                        election_timeout_ms: 1000,
                    },
                    guests_dir,
                    phase: Duration::from_secs(seconds),
                    writers,
                    failovers,
                    memory_mib,
                };
                run_pairs(options, data_dir.is_none()).await
            }
        }
    });
    if let Err(error) = result {
        eprintln!("understudy-bench: {error}");
        std::process::exit(1);
    }
}

async fn run_load(
    target: load::Target,
    mode: load::Mode,
    endpoints: Vec<String>,
    clients: usize,
    duration_s: u64,
    header: bool,
) -> Result<(), String> {
    if endpoints.iter().any(|endpoint| endpoint.is_empty()) {
        return Err("--endpoints: empty endpoint".into());
    }
    if duration_s == 0 || duration_s > DURATION_S_MAX {
        return Err(format!("--duration-s must be within 1..={DURATION_S_MAX}"));
    }
    let endpoints: Vec<String> = endpoints
        .into_iter()
        .map(|endpoint| endpoint.trim_end_matches('/').to_string())
        .collect();
    if mode == load::Mode::Get {
        load::prewrite(target, &endpoints).await?;
    }
    let mut outcome = load::run(
        target,
        mode,
        &endpoints,
        clients,
        Duration::from_secs(duration_s),
    )
    .await?;
    if header {
        println!("target\tmode\tclients\tops\tops_per_s\tp50_ms\tp99_ms\terrors");
    }
    let target_name = match target {
        load::Target::Understudy => "understudy",
        load::Target::Etcd => "etcd",
    };
    let mode_name = match mode {
        load::Mode::Put => "put",
        load::Mode::Get => "get",
    };
    println!(
        "{target_name}\t{mode_name}\t{clients}\t{}",
        outcome.tsv_fields()
    );
    Ok(())
}

async fn run_failover(
    options: failover::FailoverOptions,
    remove_after: bool,
) -> Result<(), String> {
    if options.kills == 0 || options.kills > KILLS_MAX {
        return Err(format!("--kills must be within 1..={KILLS_MAX}"));
    }
    let data_dir = options.data_dir.clone();
    let mut samples = failover::run(options).await?;
    println!(
        "failover: kills={} median_ms={} p90_ms={} max_ms={}",
        samples.operations(),
        format_millis(samples.percentile(50.0)),
        format_millis(samples.percentile(90.0)),
        format_millis(samples.percentile(100.0)),
    );
    if remove_after {
        failover::remove_data_dir(&data_dir);
    }
    Ok(())
}

async fn run_pairs(options: pairs::PairsOptions, remove_after: bool) -> Result<(), String> {
    if options.phase.is_zero() || options.phase > Duration::from_secs(DURATION_S_MAX) {
        return Err(format!("--seconds must be within 1..={DURATION_S_MAX}"));
    }
    let writers_valid = |writers: &usize| (1..=WRITERS_MAX).contains(writers);
    if options.writers.is_empty() || !options.writers.iter().all(writers_valid) {
        return Err(format!(
            "--writers must list counts within 1..={WRITERS_MAX}"
        ));
    }
    if options.failovers > KILLS_MAX {
        return Err(format!("--failovers must be within 0..={KILLS_MAX}"));
    }
    if options
        .memory_mib
        .is_some_and(|memory_mib| memory_mib == 0 || memory_mib > MEMORY_MIB_MAX)
    {
        return Err(format!("--memory-mib must be within 1..={MEMORY_MIB_MAX}"));
    }
    let data_dir = options.cluster.data_dir.clone();
    let mut report = pairs::run(options).await?;
    print_pairs_summary(&mut report);
    if remove_after {
        failover::remove_data_dir(&data_dir);
    }
    Ok(())
}

fn print_pairs_summary(report: &mut pairs::PairsReport) {
    println!();
    println!("| writers | kind | acked writes/s | output lines/s | failed writes |");
    println!("|---:|---|---:|---:|---:|");
    for result in &report.throughput {
        for (kind, phase) in [("paired", &result.paired), ("unpaired", &result.unpaired)] {
            println!(
                "| {} | {kind} | {:.0} | {:.0} | {} |",
                result.writers,
                phase.writes_per_second(),
                phase.lines_per_second(),
                phase.failed_writes
            );
        }
        println!(
            "| {} | ratio | {:.2} | {:.2} | |",
            result.writers,
            result.ratio(),
            result.lines_ratio()
        );
    }
    let failovers = &mut report.failovers;
    println!();
    println!(
        "failovers: {} median_ms={} p90_ms={} worst_ms={}",
        failovers.operations(),
        format_millis(failovers.percentile(50.0)),
        format_millis(failovers.percentile(90.0)),
        format_millis(failovers.percentile(100.0)),
    );
    let counts = report
        .throughput
        .iter()
        .map(|result| result.writers.to_string());
    let ratios = report
        .throughput
        .iter()
        .map(|result| format!("{:.2}", result.ratio()));
    println!(
        "pairs: writers={} ratios={} peak_ratio={:.2} failover_median_ms={} failover_worst_ms={}",
        counts.collect::<Vec<_>>().join(","),
        ratios.collect::<Vec<_>>().join(","),
        report.peak_ratio(),
        format_millis(report.failovers.percentile(50.0)),
        format_millis(report.failovers.percentile(100.0)),
    );
}
