//! `understudy dev`: a local cluster of separate `understudy node` processes.
//!
//! The children are tied to this process three ways, so none outlives it:
//! SIGTERM on Ctrl-C / SIGTERM (clean stop), `kill_on_drop` if
//! this process unwinds, and the kernel's parent-death signal (set by the child,
//! see `node.rs`) if this process is killed outright.

use crate::common::{shutdown_signal, CliError};
use crate::node::PARENT_PID_VARIABLE;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use understudy_client::{Client, ClientOptions};

/// Nodes one dev cluster may have.
const DEV_NODES_MAX: u16 = 9;
/// Offset between a node's client port and its peer port.
const PEER_PORT_OFFSET: u16 = 100;
/// How long a child gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `understudy dev`.
#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// How many nodes to start.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=DEV_NODES_MAX as i64))]
    pub nodes: u16,
    /// Directory for the nodes' data, logs and `cluster.json` (default: a new
    /// directory under the system temp dir). Reusing one restarts the cluster
    /// with its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Node i (from 1) serves clients on P+i-1 and peers on P+100+i-1.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
    /// Seconds to wait for a leader before giving up.
    #[arg(long, default_value_t = 30)]
    pub leader_timeout_s: u64,
    /// Leader heartbeat interval in milliseconds, passed to every node.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Shortest election timeout in milliseconds, passed to every node.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
}

/// One started node, as printed and written to `cluster.json`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DevNode {
    pub(crate) id: u64,
    pid: u32,
    pub(crate) client_url: String,
    peer_address: String,
    data_dir: PathBuf,
    pub(crate) log_file: PathBuf,
    /// The command line that started it, to restart it by hand.
    restart_command: Vec<String>,
}

/// Runs `understudy dev`.
pub fn run(args: DevArgs) -> Result<(), CliError> {
    let last_port = u32::from(args.base_port) + u32::from(PEER_PORT_OFFSET) + u32::from(args.nodes);
    if args.base_port == 0 || last_port > u32::from(u16::MAX) {
        return Err(CliError::Usage(format!(
            "--base-port {}: ports {}..{last_port} do not fit",
            args.base_port, args.base_port
        )));
    }
    check_ports_free(&args)?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => fresh_temp_dir()?,
    };
    std::fs::create_dir_all(&data_dir).map_err(|error| {
        CliError::Usage(format!("cannot create {}: {error}", data_dir.display()))
    })?;
    crate::common::block_on(supervise(args, data_dir))
}

fn ports(args: &DevArgs, id: u16) -> (u16, u16) {
    let client = args.base_port + id - 1;
    (client, client + PEER_PORT_OFFSET)
}

pub(crate) fn check_ports_free(args: &DevArgs) -> Result<(), CliError> {
    for id in 1..=args.nodes {
        let (client, peer) = ports(args, id);
        for port in [client, peer] {
            if let Err(error) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return Err(CliError::Usage(format!(
                    "port {port} on 127.0.0.1 is not free ({error}); choose another --base-port"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn fresh_temp_dir() -> Result<PathBuf, CliError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("understudy-dev-{}-{nanos}", std::process::id()));
    Ok(dir)
}

async fn supervise(args: DevArgs, data_dir: PathBuf) -> Result<(), CliError> {
    let mut children = Vec::new();
    let mut nodes = Vec::new();
    for id in 1..=args.nodes {
        let (child, node) = spawn_node(&args, &data_dir, id)?;
        eprintln!("started node {id} (pid {})", node.pid);
        children.push(child);
        nodes.push(node);
    }
    let mut running = vec![true; children.len()];
    // A node that exits before a leader is known failed to start (a port taken
    // meanwhile, a data dir it cannot use): stop the others and say which.
    let outcome = tokio::select! {
        result = wait_for_leader(&args, &nodes) => result,
        (index, status) = next_exit(&mut children, &running) => {
            Err(CliError::Failed(format!(
                "node {} exited while starting ({status}); stopping the others; see {}",
                nodes[index].id,
                nodes[index].log_file.display()
            )))
        }
        _ = shutdown_signal() => Err(CliError::Failed("interrupted before a leader was elected".into())),
    };
    let outcome = match outcome {
        Ok(leader) => {
            report(&nodes, leader, &data_dir)?;
            wait_until_stopped(&mut children, &mut running, &nodes).await
        }
        Err(error) => Err(error),
    };
    stop_all(&mut children, &nodes).await;
    outcome
}

pub(crate) fn spawn_node(
    args: &DevArgs,
    data_dir: &Path,
    id: u16,
) -> Result<(Child, DevNode), CliError> {
    let executable = std::env::current_exe()
        .map_err(|error| CliError::Failed(format!("cannot find my own executable: {error}")))?;
    let initial_cluster: Vec<String> = (1..=args.nodes)
        .map(|member| format!("{member}=127.0.0.1:{}", ports(args, member).1))
        .collect();
    let (client_port, peer_port) = ports(args, id);
    let node_dir = data_dir.join(format!("node-{id}"));
    let log_file = data_dir.join(format!("node-{id}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(|error| {
            CliError::Failed(format!("cannot open {}: {error}", log_file.display()))
        })?;
    let log_for_stderr = log
        .try_clone()
        .map_err(|error| CliError::Failed(format!("cannot share the log file: {error}")))?;
    let node_arguments: Vec<String> = vec![
        "node".into(),
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
        node_dir.display().to_string(),
        "--listen-client".into(),
        format!("127.0.0.1:{client_port}"),
        "--listen-peer".into(),
        format!("127.0.0.1:{peer_port}"),
        "--initial-cluster".into(),
        initial_cluster.join(","),
        "--heartbeat-interval".into(),
        args.heartbeat_interval.to_string(),
        "--election-timeout".into(),
        args.election_timeout.to_string(),
    ];
    let mut command = Command::new(&executable);
    // The nodes get every setting as a flag; an `UNDERSTUDY_*` node variable
    // or config file in dev's environment (a token file, say) would otherwise
    // fill in what dev left unset. The log filter is meant to pass through.
    for (name, _) in std::env::vars_os() {
        let inherited = name
            .to_str()
            .is_some_and(|name| name.starts_with("UNDERSTUDY_") && name != "UNDERSTUDY_LOG");
        if inherited {
            command.env_remove(&name);
        }
    }
    let child = command
        .args(&node_arguments)
        .env(PARENT_PID_VARIABLE, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| CliError::Failed(format!("cannot start node {id}: {error}")))?;
    let mut restart_command = vec![executable.display().to_string()];
    restart_command.extend(node_arguments);
    let node = DevNode {
        id: u64::from(id),
        pid: child.id().unwrap_or(0),
        client_url: format!("http://127.0.0.1:{client_port}"),
        peer_address: format!("127.0.0.1:{peer_port}"),
        data_dir: node_dir,
        log_file,
        restart_command,
    };
    Ok((child, node))
}

/// Polls `GET /v1/cluster` on every node until one reports a leader.
pub(crate) async fn wait_for_leader(args: &DevArgs, nodes: &[DevNode]) -> Result<u64, CliError> {
    let endpoints = nodes.iter().map(|node| node.client_url.clone()).collect();
    let options = ClientOptions {
        deadline: Duration::from_millis(500),
        attempt_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    };
    let client = Client::with_options(endpoints, None, options)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.leader_timeout_s);
    eprint!("waiting for a leader");
    loop {
        if let Ok(status) = client.cluster().await {
            if let Some(leader) = status.leader_id {
                eprintln!(" elected: node {leader} (term {})", status.term);
                return Ok(leader);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!();
            return Err(CliError::Failed(format!(
                "no leader after {} s; see the node logs ({})",
                args.leader_timeout_s,
                nodes[0].log_file.display()
            )));
        }
        eprint!(".");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn report(nodes: &[DevNode], leader: u64, data_dir: &Path) -> Result<(), CliError> {
    println!("{:>4}  {:>8}  {:<24}  DATA DIR", "ID", "PID", "CLIENT URL");
    for node in nodes {
        let mark = if node.id == leader { " (leader)" } else { "" };
        println!(
            "{:>4}  {:>8}  {:<24}  {}{mark}",
            node.id,
            node.pid,
            node.client_url,
            node.data_dir.display()
        );
    }
    let endpoints: Vec<&str> = nodes.iter().map(|node| node.client_url.as_str()).collect();
    let description = serde_json::json!({
        "leader_id": leader,
        "endpoints": endpoints.join(","),
        "nodes": nodes,
    });
    let path = data_dir.join("cluster.json");
    let text = serde_json::to_string_pretty(&description)
        .map_err(|error| CliError::Failed(format!("cannot encode cluster.json: {error}")))?;
    std::fs::write(&path, text)
        .map_err(|error| CliError::Failed(format!("cannot write {}: {error}", path.display())))?;
    println!("wrote {}", path.display());
    println!("export UNDERSTUDY_ENDPOINTS={}", endpoints.join(","));
    println!("press Ctrl-C to stop the cluster");
    Ok(())
}

/// Waits for Ctrl-C / SIGTERM (a clean stop). A node that exits meanwhile is
/// reported and the others keep running: killing a node is how one tries
/// failover by hand. Only when every node has exited does `dev` give up.
async fn wait_until_stopped(
    children: &mut [Child],
    running: &mut [bool],
    nodes: &[DevNode],
) -> Result<(), CliError> {
    loop {
        tokio::select! {
            _ = shutdown_signal() => {
                eprintln!("stopping the cluster");
                return Ok(());
            }
            (index, status) = next_exit(children, running) => {
                running[index] = false;
                let node = &nodes[index];
                eprintln!(
                    "node {} (pid {}) exited ({status}); the others keep running; see {}",
                    node.id,
                    node.pid,
                    node.log_file.display()
                );
                if !running.contains(&true) {
                    return Err(CliError::Failed("every node has exited".into()));
                }
                eprintln!(
                    "to bring it back with its data, run in another terminal (dev will not stop it on Ctrl-C):\n  {}",
                    shell_words(&node.restart_command)
                );
            }
        }
    }
}

/// The index and exit status of the next child among the `running` ones to exit;
/// never resolves if none is running.
async fn next_exit(children: &mut [Child], running: &[bool]) -> (usize, String) {
    let waits: Vec<_> = children
        .iter_mut()
        .enumerate()
        .filter(|(index, _)| running[*index])
        .map(|(index, child)| {
            Box::pin(async move {
                let status = child.wait().await;
                let status =
                    status.map_or_else(|error| error.to_string(), |status| status.to_string());
                (index, status)
            })
        })
        .collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// SIGTERM to every running child, then waits; a child still running after the
/// grace period is killed.
pub(crate) async fn stop_all(children: &mut [Child], nodes: &[DevNode]) {
    for child in children.iter_mut() {
        let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
            continue; // already reaped
        };
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            // An error means the process is already gone: nothing to stop.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for (child, node) in children.iter_mut().zip(nodes) {
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "node {} did not stop within {STOP_GRACE:?}; killing it",
                    node.id
                );
                // An error means it exited meanwhile, which is what we want.
                let _ = child.kill().await;
            }
        }
    }
}

/// `words` as one shell command line, quoting the words that need it.
fn shell_words(words: &[String]) -> String {
    let plain =
        |character: char| character.is_ascii_alphanumeric() || "_./:=,-".contains(character);
    let quoted: Vec<String> = words
        .iter()
        .map(|word| {
            if !word.is_empty() && word.chars().all(plain) {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect();
    quoted.join(" ")
}
