//! The `understudy` command: run a node (`node`), a local cluster (`dev`), and
//! talk to a cluster (`kv`, `status`, `members`).
//!
//! One module per command group; `common.rs` holds what they share (client
//! options, output format, signals, errors).

mod cluster;
mod common;
mod dev;
mod kv;
mod node;

use clap::{Parser, Subcommand};
use common::ClientArgs;

/// understudy: a fault-tolerant cluster runtime (a Raft-replicated key-value store).
///
/// Start a local three-node cluster with `understudy dev --nodes 3`, then use
/// `understudy kv put greeting hello` and `understudy status`.
#[derive(Parser, Debug)]
#[command(name = "understudy", version, about, long_about)]
struct Cli {
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
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Show the cluster's members: role, term, indexes, lag and client URL.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change the cluster's membership.
    Members {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cluster::MembersCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node(args) => node::run(args),
        Command::Dev(args) => dev::run(args),
        Command::Kv { client, command } => common::block_on(kv::run(client, command)),
        Command::Status { client } => common::block_on(cluster::status(client)),
        Command::Members { client, command } => common::block_on(cluster::members(client, command)),
    };
    if let Err(error) = result {
        eprintln!("understudy: {error}");
        std::process::exit(error.exit_code());
    }
}
