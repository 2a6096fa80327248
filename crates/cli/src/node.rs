//! `understudy node`: validates the command line into a [`NodeConfig`] and runs
//! the node until SIGTERM or Ctrl-C.

use crate::common::{read_token_file, shutdown_signal, CliError};
use clap::Args;
use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use understudy_node::NodeConfig;

/// Environment variable `understudy dev` sets to its own pid: a node that sees
/// it asks the kernel to stop it when that parent dies, so a crashed `dev`
/// never leaves orphan nodes behind.
pub const PARENT_PID_VARIABLE: &str = "UNDERSTUDY_DEV_PARENT_PID";

/// Members of an initial cluster, at most (the Raft group limit).
const INITIAL_CLUSTER_MEMBERS_MAX: usize = 64;

/// Help text after the options of `understudy node`.
const NODE_AFTER_HELP: &str = "\
Every option can also be set with an environment variable (shown as [env: ...])
or in the TOML file given by --config, whose keys are the option names:
    id = 1
    data-dir = \"/var/lib/understudy\"
    listen-peer = \"10.0.0.1:2380\"
    initial-cluster = \"1=10.0.0.1:2380,2=10.0.0.2:2380,3=10.0.0.3:2380\"
A flag beats its environment variable, which beats the file.

Logging: UNDERSTUDY_LOG sets the log filter (tracing's EnvFilter syntax, e.g.
`info`, `debug`, `understudy_node=debug,warn`); the default is `info`.
Logs go to stderr.";

/// Arguments of `understudy node`.
#[derive(Args, Debug, Clone)]
#[command(after_help = NODE_AFTER_HELP)]
pub struct NodeArgs {
    /// Read settings from this TOML file (keys are the option names); flags
    /// and environment variables take precedence over it.
    #[arg(long, env = "UNDERSTUDY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the settings, print them as a configuration file and exit
    /// without starting the node.
    #[arg(long)]
    pub print_config: bool,
    /// This node's id: a positive integer, never reused for another node (required).
    #[arg(long, env = "UNDERSTUDY_ID")]
    pub id: Option<u64>,
    /// Directory of this node's durable state, created if missing (required).
    #[arg(long, env = "UNDERSTUDY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the client HTTP API: HOST:PORT, or just PORT for 127.0.0.1.
    #[arg(
        long,
        env = "UNDERSTUDY_LISTEN_CLIENT",
        default_value = "127.0.0.1:2379"
    )]
    pub listen_client: String,
    /// Address peers connect to: HOST:PORT (required).
    #[arg(long, env = "UNDERSTUDY_LISTEN_PEER")]
    pub listen_peer: Option<String>,
    /// Initial members and their peer addresses: `1=HOST:PORT,2=HOST:PORT,...`.
    /// Used only to bootstrap an empty data dir; omit it for a node added with
    /// `understudy members add`, which starts empty and catches up.
    #[arg(long, env = "UNDERSTUDY_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, env = "UNDERSTUDY_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Shortest election timeout in milliseconds (must exceed the heartbeat).
    #[arg(long, env = "UNDERSTUDY_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// File with a token; clients must then send `Authorization: Bearer <token>`.
    #[arg(long, env = "UNDERSTUDY_CLIENT_TOKEN_FILE")]
    pub client_token_file: Option<PathBuf>,
    /// URL clients are told to use for this node (default `http://<listen-client>`).
    #[arg(long, env = "UNDERSTUDY_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,
    /// Take a snapshot (compacting the log) after this many applied entries.
    /// An advanced knob, hidden from `--help`: tests use a small value to make
    /// a lagging follower catch up by snapshot.
    #[arg(long, hide = true, env = "UNDERSTUDY_SNAPSHOT_THRESHOLD_ENTRIES",
        default_value_t = understudy_node::NodeOptions::default().snapshot_threshold_entries)]
    pub snapshot_threshold_entries: u64,
    /// Kill a guest that runs this many seconds without progress (no input
    /// read, no clock or random value taken, no output written): a program
    /// stuck in a loop. The kill is logged, so the backup agrees; the process
    /// exits with code 137. 0: never.
    #[arg(long, env = "UNDERSTUDY_GUEST_RUNAWAY_SECONDS",
        default_value_t = understudy_node::GUEST_RUNAWAY_LIMIT_DEFAULT.as_secs())]
    pub guest_runaway_seconds: u64,
}

/// Runs `understudy node`; `matches` (the parsed `node` subcommand) tells
/// which settings came from flags or the environment, for `--config`.
pub fn run(args: NodeArgs, matches: Option<&clap::ArgMatches>) -> Result<(), CliError> {
    let args = match (&args.config, matches) {
        (Some(path), Some(matches)) => crate::node_config::apply_config_file(path, matches)?,
        _ => args,
    };
    let config = build_config(&args)?;
    if args.snapshot_threshold_entries == 0 {
        return Err(CliError::Usage(
            "--snapshot-threshold-entries must be positive".into(),
        ));
    }
    if args.print_config {
        println!("{}", crate::node_config::render_settings(&args));
        return Ok(());
    }
    let options = understudy_node::NodeOptions {
        snapshot_threshold_entries: args.snapshot_threshold_entries,
        guest_runaway_limit: (args.guest_runaway_seconds > 0)
            .then(|| Duration::from_secs(args.guest_runaway_seconds)),
        ..understudy_node::NodeOptions::default()
    };
    init_logging();
    exit_with_dev_parent()?;
    tracing::info!(id = config.id, data_dir = %config.data_dir.display(),
        client = %config.listen_client, peer = %config.listen_peer, "starting node");
    crate::common::block_on(async move {
        understudy_node::run_with_options(config, options, shutdown_signal())
            .await
            .map_err(|error| CliError::Failed(error.to_string()))
    })
}

/// A setting that has no default: from its flag, variable or the file.
fn required<'a, T>(value: &'a Option<T>, flag: &str, variable: &str) -> Result<&'a T, CliError> {
    value.as_ref().ok_or_else(|| {
        CliError::Usage(format!(
            "--{flag} is required (or {variable}, or `{flag}` in the --config file)"
        ))
    })
}

/// Validates every argument; nothing is started before all are good.
pub fn build_config(args: &NodeArgs) -> Result<NodeConfig, CliError> {
    let id = *required(&args.id, "id", "UNDERSTUDY_ID")?;
    let data_dir = required(&args.data_dir, "data-dir", "UNDERSTUDY_DATA_DIR")?;
    let listen_peer = required(&args.listen_peer, "listen-peer", "UNDERSTUDY_LISTEN_PEER")?;
    if id == 0 {
        return Err(CliError::Usage("--id must be a positive integer".into()));
    }
    if args.heartbeat_interval == 0 || args.election_timeout <= args.heartbeat_interval {
        return Err(CliError::Usage(format!(
            "--election-timeout ({} ms) must exceed --heartbeat-interval ({} ms), which must be positive",
            args.election_timeout, args.heartbeat_interval
        )));
    }
    let listen_client = parse_listen_address("--listen-client", &args.listen_client, true)?;
    let listen_peer = parse_listen_address("--listen-peer", listen_peer, false)?;
    let initial_cluster = match &args.initial_cluster {
        Some(text) => parse_initial_cluster(text, id)?,
        None => Vec::new(),
    };
    let client_token = match &args.client_token_file {
        Some(path) => Some(read_token_file(path)?),
        None => None,
    };
    if let Some(url) = &args.advertise_client {
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return Err(CliError::Usage(format!(
                "--advertise-client {url:?}: expected http://HOST:PORT"
            )));
        }
    }
    Ok(NodeConfig {
        id,
        data_dir: data_dir.clone(),
        listen_client,
        listen_peer,
        advertise_client: args.advertise_client.clone(),
        initial_cluster,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval),
        election_timeout: Duration::from_millis(args.election_timeout),
        client_token,
    })
}

/// `HOST:PORT` (resolved; the first address wins), or a bare port on 127.0.0.1
/// when `port_alone_means_loopback`.
fn parse_listen_address(
    flag: &str,
    text: &str,
    port_alone_means_loopback: bool,
) -> Result<SocketAddr, CliError> {
    let bad = |detail: &str| CliError::Usage(format!("{flag} {text:?}: {detail}"));
    if port_alone_means_loopback && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = text.parse().map_err(|_| bad("not a port number"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    check_host_port(text).map_err(|detail| bad(&detail))?;
    let mut addresses = text
        .to_socket_addrs()
        .map_err(|error| bad(&format!("cannot resolve: {error}")))?;
    addresses
        .next()
        .ok_or_else(|| bad("resolves to no address"))
}

/// Checks the shape `HOST:PORT` with a port in 1..=65535.
fn check_host_port(text: &str) -> Result<(), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_string())?;
    if host.is_empty() {
        return Err("expected HOST:PORT (the host is missing)".into());
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("bad port {port:?} (expected 1-65535)")),
    }
}

/// Parses `1=HOST:PORT,2=HOST:PORT`: positive unique ids, well-formed unique
/// addresses, and this node among them.
pub fn parse_initial_cluster(text: &str, own_id: u64) -> Result<Vec<(u64, String)>, CliError> {
    let bad = |detail: String| CliError::Usage(format!("--initial-cluster {text:?}: {detail}"));
    let mut members = Vec::new();
    let mut ids = HashSet::new();
    let mut addresses = HashSet::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, address) = entry
            .split_once('=')
            .ok_or_else(|| bad(format!("{entry:?} is not ID=HOST:PORT")))?;
        let id: u64 = match id.trim().parse() {
            Ok(id) if id > 0 => id,
            _ => return Err(bad(format!("{id:?} is not a positive node id"))),
        };
        let address = address.trim();
        check_host_port(address).map_err(|detail| bad(format!("member {id}: {detail}")))?;
        if !ids.insert(id) {
            return Err(bad(format!("node id {id} appears twice")));
        }
        if !addresses.insert(address.to_string()) {
            return Err(bad(format!("address {address} appears twice")));
        }
        members.push((id, address.to_string()));
    }
    if members.is_empty() {
        return Err(bad("no members".into()));
    }
    if members.len() > INITIAL_CLUSTER_MEMBERS_MAX {
        return Err(bad(format!(
            "more than {INITIAL_CLUSTER_MEMBERS_MAX} members"
        )));
    }
    if !ids.contains(&own_id) {
        return Err(bad(format!(
            "this node's id {own_id} is not among the members"
        )));
    }
    Ok(members)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("UNDERSTUDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: `dev` sends node logs to files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Under `understudy dev`, dies with the parent (see [`PARENT_PID_VARIABLE`]).
fn exit_with_dev_parent() -> Result<(), CliError> {
    let Ok(parent) = std::env::var(PARENT_PID_VARIABLE) else {
        return Ok(());
    };
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .map_err(|error| CliError::Failed(format!("cannot tie the node to its parent: {error}")))?;
    // The parent may have died before the request above took effect; then no
    // signal will come, so check by hand.
    let current_parent = rustix::process::getppid().map(rustix::process::Pid::as_raw_pid);
    if current_parent.map(|pid| pid.to_string()) != Some(parent) {
        return Err(CliError::Failed("the dev parent process is gone".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parses_and_rejects_nonsense() {
        let members = parse_initial_cluster("1=127.0.0.1:2480, 2=localhost:2481", 2).unwrap();
        assert_eq!(
            members,
            vec![(1, "127.0.0.1:2480".into()), (2, "localhost:2481".into())]
        );
        for bad in [
            "",
            "1=127.0.0.1:1,1=127.0.0.1:2",
            "1=127.0.0.1:1,2=127.0.0.1:1",
            "0=127.0.0.1:1",
            "x=127.0.0.1:1",
            "1=127.0.0.1",
            "1=127.0.0.1:0",
            "1=:80",
            "1",
            "2=127.0.0.1:1",
        ] {
            assert!(parse_initial_cluster(bad, 1).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn listen_addresses_accept_a_bare_port_for_clients_only() {
        assert_eq!(
            parse_listen_address("--listen-client", "2379", true).unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert!(parse_listen_address("--listen-peer", "2380", false).is_err());
        assert!(parse_listen_address("--listen-peer", "127.0.0.1:99999", false).is_err());
    }
}
