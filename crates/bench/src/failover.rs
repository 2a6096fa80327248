//! Leader failover: start a three-node understudy cluster of `understudy node`
//! processes, then repeatedly SIGKILL the leader and time how long it takes
//! until a write succeeds again; restart the killed node and let it catch up
//! before the next kill (so every kill leaves a majority).

use crate::histogram::{format_millis, Samples};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// Nodes of the failover cluster.
const NODES: u16 = 3;
/// Offset between a node's client port and its peer port (as `understudy dev`).
const PEER_PORT_OFFSET: u16 = 100;
/// The variable `understudy node` reads to die with its parent (see the CLI's
/// `node.rs`): a killed benchmark then leaves no nodes behind.
const PARENT_PID_VARIABLE: &str = "UNDERSTUDY_DEV_PARENT_PID";
/// Longest wait for a leader, a write or a catch-up before the run fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Budget of one write attempt while the cluster elects a new leader.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after every running node refused a write.
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Pause between polls of the cluster (status, catch-up).
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Options of a failover run.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// The `understudy` executable.
    pub binary: PathBuf,
    /// Where the nodes keep their data and logs.
    pub data_dir: PathBuf,
    /// Node i serves clients on `base_port + i - 1`, peers on that plus 100.
    pub base_port: u16,
    /// How many leaders to kill.
    pub kills: usize,
    /// Leader heartbeat interval passed to the nodes, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Shortest election timeout passed to the nodes, in milliseconds.
    pub election_timeout_ms: u64,
}

/// A three-node cluster of `understudy node` child processes (shared with the
/// process-pair benchmark in `pairs.rs`).
pub(crate) struct Cluster {
    options: FailoverOptions,
    children: Vec<Option<Child>>,
    http: reqwest::Client,
}

impl Cluster {
    /// A cluster of [`NODES`] nodes, none started yet.
    pub(crate) fn new(options: FailoverOptions, http: reqwest::Client) -> Cluster {
        Cluster {
            options,
            children: (0..NODES).map(|_| None).collect(),
            http,
        }
    }

    /// The ids of the nodes, 1 to [`NODES`].
    pub(crate) fn node_ids() -> std::ops::RangeInclusive<u16> {
        1..=NODES
    }

    /// Whether node `id` was started and not killed since.
    pub(crate) fn is_running(&self, id: u16) -> bool {
        self.children[usize::from(id - 1)].is_some()
    }

    pub(crate) fn client_url(&self, id: u16) -> String {
        format!("http://127.0.0.1:{}", self.options.base_port + id - 1)
    }

    pub(crate) fn start(&mut self, id: u16) -> Result<(), String> {
        let options = &self.options;
        let peer = |member: u16| options.base_port + PEER_PORT_OFFSET + member - 1;
        let initial_cluster: Vec<String> = (1..=NODES)
            .map(|member| format!("{member}=127.0.0.1:{}", peer(member)))
            .collect();
        let log_path = options.data_dir.join(format!("node-{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| format!("cannot open {}: {error}", log_path.display()))?;
        let log_for_stderr = log.try_clone().map_err(|error| error.to_string())?;
        let child = Command::new(&options.binary)
            .arg("node")
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(options.data_dir.join(format!("node-{id}")))
            .args([
                "--listen-client",
                &format!("127.0.0.1:{}", options.base_port + id - 1),
            ])
            .args(["--listen-peer", &format!("127.0.0.1:{}", peer(id))])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args([
                "--heartbeat-interval",
                &options.heartbeat_interval_ms.to_string(),
            ])
            .args([
                "--election-timeout",
                &options.election_timeout_ms.to_string(),
            ])
            .env(PARENT_PID_VARIABLE, std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", options.binary.display()))?;
        self.children[usize::from(id - 1)] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `id` and reaps it.
    pub(crate) async fn kill(&mut self, id: u16) -> Result<(), String> {
        let Some(mut child) = self.children[usize::from(id - 1)].take() else {
            return Err(format!("node {id} is not running"));
        };
        // tokio's `kill` is SIGKILL on Unix, then waits for the exit.
        child
            .kill()
            .await
            .map_err(|error| format!("cannot kill node {id}: {error}"))
    }

    /// The leader id node `id` reports, if it answers and knows one.
    async fn leader_seen_by(&self, id: u16) -> Option<u16> {
        let url = format!("{}/v1/cluster", self.client_url(id));
        let response = self
            .http
            .get(url)
            .timeout(ATTEMPT_TIMEOUT)
            .send()
            .await
            .ok()?;
        let status: serde_json::Value = response.json().await.ok()?;
        u16::try_from(status.get("leader_id")?.as_u64()?).ok()
    }

    /// Waits until a running node reports a leader that is itself running.
    pub(crate) async fn wait_for_leader(&self) -> Result<u16, String> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while Instant::now() < deadline {
            for id in 1..=NODES {
                if self.children[usize::from(id - 1)].is_none() {
                    continue;
                }
                if let Some(leader) = self.leader_seen_by(id).await {
                    if (1..=NODES).contains(&leader)
                        && self.children[usize::from(leader - 1)].is_some()
                    {
                        return Ok(leader);
                    }
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(format!("no leader within {PHASE_TIMEOUT:?}"))
    }

    /// One write attempt of `key` through node `id`.
    async fn try_write(&self, id: u16, key: &str) -> bool {
        let url = format!("{}/v1/kv/{key}", self.client_url(id));
        let sent = self
            .http
            .put(url)
            .body(vec![b'f'; crate::load::VALUE_BYTES])
            .timeout(ATTEMPT_TIMEOUT)
            .send()
            .await;
        matches!(sent, Ok(response) if response.status().is_success())
    }

    /// Whether node `id` serves `key` from its own state (it caught up).
    async fn has_key(&self, id: u16, key: &str) -> bool {
        let url = format!(
            "{}/v1/kv/{key}?consistency=serializable",
            self.client_url(id)
        );
        let sent = self.http.get(url).timeout(ATTEMPT_TIMEOUT).send().await;
        matches!(sent, Ok(response) if response.status().is_success())
    }
}

/// Runs the failover measurement; prints one line per kill and returns the
/// kill-to-first-write times.
pub async fn run(options: FailoverOptions) -> Result<Samples, String> {
    std::fs::create_dir_all(&options.data_dir)
        .map_err(|error| format!("cannot create {}: {error}", options.data_dir.display()))?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let kills = options.kills;
    let mut cluster = Cluster::new(options, http);
    for id in 1..=NODES {
        cluster.start(id)?;
    }
    let mut samples = Samples::new();
    for round in 1..=kills {
        let elapsed = one_kill(&mut cluster, round).await?;
        samples.record(elapsed);
    }
    for id in 1..=NODES {
        if cluster.children[usize::from(id - 1)].is_some() {
            cluster.kill(id).await?;
        }
    }
    Ok(samples)
}

/// Kills the current leader, times the first successful write after it, then
/// restarts the node and waits until it has that write.
async fn one_kill(cluster: &mut Cluster, round: usize) -> Result<Duration, String> {
    let leader = cluster.wait_for_leader().await?;
    // A write before the kill proves the cluster healthy, so the clock below
    // measures failover and nothing else.
    let warm_key = format!("failover-warm-{round}");
    wait_for_write(cluster, &warm_key, None).await?;
    cluster.kill(leader).await?;
    let killed_at = Instant::now();
    let key = format!("failover-{round:09}");
    let elapsed = wait_for_write(cluster, &key, Some(killed_at)).await?;
    println!(
        "kill {round}: node {leader} killed; first write after {} ms",
        format_millis(Some(elapsed))
    );
    cluster.start(leader)?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while !cluster.has_key(leader, &key).await {
        if Instant::now() >= deadline {
            return Err(format!(
                "node {leader} did not catch up within {PHASE_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(elapsed)
}

/// Tries to write `key` through the running nodes in turn until one succeeds;
/// returns the time since `since` (or since the call).
async fn wait_for_write(
    cluster: &Cluster,
    key: &str,
    since: Option<Instant>,
) -> Result<Duration, String> {
    let start = since.unwrap_or_else(Instant::now);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        for id in 1..=NODES {
            if cluster.children[usize::from(id - 1)].is_some() && cluster.try_write(id, key).await {
                return Ok(start.elapsed());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no write of {key} succeeded within {PHASE_TIMEOUT:?}"
            ));
        }
        // A node without a leader refuses at once; a short pause keeps this
        // loop from taking the CPU the election needs, at 5 ms of resolution.
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// The data dir a run uses when none is given: a fresh one under the temp dir.
pub fn default_data_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    std::env::temp_dir().join(format!(
        "understudy-failover-{}-{nanos}",
        std::process::id()
    ))
}

/// Removes a data dir this run created (best effort: a leftover temp dir is
/// harmless).
pub fn remove_data_dir(path: &Path) {
    if let Err(error) = std::fs::remove_dir_all(path) {
        eprintln!(
            "understudy-bench: cannot remove {}: {error}",
            path.display()
        );
    }
}
