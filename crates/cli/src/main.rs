//! The `understudy` command: run a node (`node`), a local cluster (`dev`), talk
//! to a cluster (`kv`, `status`, `members`), run process pairs on it (`run`,
//! `ps`, `send`, `logs`, `kill`), and show a failover end to end (`demo`).
//!
//! One module per command group; `common.rs` holds what they share (client
//! options, output format, signals, errors).

mod cluster;
mod common;
mod demo;
mod dev;
mod kv;
mod node;
mod node_config;
mod processes;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use common::{CliError, ClientArgs, Output};
use std::ffi::OsString;

/// The allocator of every node and command: mimalloc. A node allocates on one
/// thread (the HTTP tasks, the guest's thread, the pair courier) and frees on
/// another all the time; glibc's malloc spent about a tenth of a node's CPU
/// on that under load (docs/benchmark.md, "2026-12-06 19:00–20:10").
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit codes, shown under `--help` (see [`CliError::exit_code`]).
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the operation failed (cluster unavailable, timeout, refused by the server, ...)
  2  usage error (bad command line, unreadable or invalid file)
  3  not found (`kv get` of a missing key, an unknown member)

With --output json, errors are one JSON line on stderr: {\"error\":\"<code>\",\"detail\":\"...\"}.";

/// understudy: a fault-tolerant cluster runtime (a Raft-replicated key-value
/// store, and WebAssembly programs that survive the loss of their machine).
///
/// See it work: `understudy demo`. Or start a local three-node cluster with
/// `understudy dev --nodes 3`, then use `understudy kv put greeting hello`,
/// `understudy status`, `understudy run guests/running-total.wasm`,
/// `understudy send 1 42`, `understudy logs 1` and `understudy ps`.
#[derive(Parser, Debug)]
#[command(name = "understudy", version, about, long_about, after_help = EXIT_CODES_HELP)]
struct Cli {
    /// Options of the commands that talk to a cluster; accepted before or
    /// after the subcommand.
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one cluster node in the foreground (stops cleanly on SIGTERM / Ctrl-C).
    Node(node::NodeArgs),
    /// Start a local cluster of separate node processes; Ctrl-C stops them all.
    Dev(dev::DevArgs),
    /// Read and write keys: put, get, del, ls, txn, watch.
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Show the cluster's members: role, term, indexes, lag and client URL.
    Status,
    /// Change the cluster's membership.
    Members {
        #[command(subcommand)]
        command: cluster::MembersCommand,
    },
    /// Start a WebAssembly program as a process pair.
    ///
    /// The program runs as a primary on one node with a passive backup on
    /// another, which takes over if the primary's node dies. Prints the pid,
    /// the primary's and the backup's node ids and the epoch.
    ///
    /// Example: `understudy run guests/running-total.wasm --env MODE=x -- --flag`.
    Run(processes::RunArgs),
    /// List the processes and the state of their pairs.
    ///
    /// Columns: state, the primary's and the backup's node, the backup's
    /// state (none, catching_up, caught_up), epoch, the last lsn logged,
    /// acknowledged by the backup and covered by a checkpoint, stdout bytes
    /// released, exit code, and how a backup recovers (checkpoint or replay).
    Ps,
    /// Write to a process's stdin.
    ///
    /// Prints the stdin offset after the write. Acknowledged once the bytes are durable at the backup; retried through
    /// other nodes under one idempotency key, so they are applied once even
    /// across a failover.
    Send(processes::SendArgs),
    /// Print a process's output.
    ///
    /// Writes the raw bytes released so far (only output the backup can
    /// regenerate is released); with --follow, keeps waiting for more until
    /// the process has exited.
    Logs(processes::LogsArgs),
    /// Stop a process and remove it and its output.
    Kill {
        /// The process id.
        pid: u64,
    },
    /// Show a program surviving the SIGKILL of its node, end to end.
    ///
    /// Starts a local 3-node cluster, runs an example program
    /// (running-total.wasm), feeds it numbers, SIGKILLs the primary's node
    /// halfway, and checks that the output has no gap, no duplicate and equals
    /// a fault-free run. Prints progress, the failover time (from the kill to the first new
    /// output line) and the records the backup replayed; the last line is
    /// `demo: ok: ...` or `demo: FAILED: <why>` (exit code 1). The nodes run
    /// as children of this process with data in a temporary directory; they
    /// are stopped when the demo ends or on Ctrl-C.
    Demo(demo::DemoArgs),
}

fn main() {
    let arguments: Vec<OsString> = std::env::args_os().collect();
    let (cli, matches) = match parse(&arguments) {
        Ok(parsed) => parsed,
        Err(error) => fail(error, json_requested(&arguments)),
    };
    let output = cli.client.output;
    let result = match cli.command {
        Command::Node(args) => node::run(args, matches.subcommand_matches("node")),
        Command::Dev(args) => dev::run(args),
        Command::Kv { command } => common::block_on(kv::run(cli.client, command)),
        Command::Status => common::block_on(cluster::status(cli.client)),
        Command::Members { command } => common::block_on(cluster::members(cli.client, command)),
        Command::Run(args) => common::block_on(processes::run(cli.client, args)),
        Command::Ps => common::block_on(processes::ps(cli.client)),
        Command::Send(args) => common::block_on(processes::send(cli.client, args)),
        Command::Logs(args) => common::block_on(processes::logs(cli.client, args)),
        Command::Kill { pid } => common::block_on(processes::kill(cli.client, pid)),
        Command::Demo(args) => demo::run(args),
    };
    if let Err(error) = result {
        fail(error, output == Output::Json);
    }
}

/// Parses the command line; help and version requests print and exit here.
fn parse(arguments: &[OsString]) -> Result<(Cli, clap::ArgMatches), CliError> {
    let clap_error = |error: clap::Error| {
        use clap::error::ErrorKind;
        if matches!(
            error.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            error.exit();
        }
        CliError::Clap(error)
    };
    let matches = Cli::command()
        .try_get_matches_from(arguments)
        .map_err(clap_error)?;
    let cli = Cli::from_arg_matches(&matches).map_err(clap_error)?;
    Ok((cli, matches))
}

/// Whether the raw command line asks for JSON output (used when it does not
/// parse, to still print the error as JSON).
fn json_requested(arguments: &[OsString]) -> bool {
    arguments.iter().enumerate().any(|(index, argument)| {
        argument == "--output=json"
            || (argument == "--output"
                && arguments.get(index + 1).is_some_and(|next| next == "json"))
    })
}

/// Prints `error` on stderr (one JSON line with `json`) and exits with its code.
fn fail(error: CliError, json: bool) -> ! {
    if json {
        eprintln!("{}", error.to_json());
    } else {
        match &error {
            // clap formats its own errors (with usage and a hint).
            CliError::Clap(clap_error) => {
                let _ = clap_error.print();
            }
            other => eprintln!("understudy: {other}"),
        }
    }
    std::process::exit(error.exit_code());
}
