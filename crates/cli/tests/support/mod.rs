//! A process harness for real-cluster tests: N `understudy node` processes on
//! free loopback ports with temporary data directories, signals to kill,
//! pause, resume and restart them, and clients to talk to them.
//!
//! Indices are 0-based; node `i` has Raft id `i + 1`. Everything the harness
//! started is killed (SIGKILL) and reaped when the [`Cluster`] is dropped, so a
//! failing assertion leaves no orphans.

// Each test file compiles this module on its own and uses a different part.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use understudy_client::{Client, ClientOptions};

/// How long [`Cluster::terminate`] waits for a node to exit after SIGTERM.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between polls of an observable condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Lowest port tests take.
const TEST_PORT_FIRST: u32 = 10_000;
/// Next candidate port of this test process, as an offset into the test range.
static NEXT_TEST_PORT: AtomicU32 = AtomicU32::new(0);

/// A free loopback port (free a moment ago; the node binds it shortly after),
/// never the same one twice in one test process.
///
/// Ports come from below the kernel's ephemeral range, not from binding port 0:
/// a killed node's ports must still be free when it restarts, and an ephemeral
/// port can meanwhile become the local end of an outgoing connection (followers
/// open one per forwarded request), which made a restarted node fail to bind.
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// The first of `length` consecutive free loopback ports, reserved for this
/// caller within this test process (`understudy dev` needs a block).
pub fn free_port_block(length: u32) -> u16 {
    let ephemeral_first = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let range = ephemeral_first.saturating_sub(TEST_PORT_FIRST);
    assert!(
        range >= 1_000 + length,
        "the ephemeral range starts at {ephemeral_first}, leaving tests too few ports below it"
    );
    // Concurrent test processes start at different offsets.
    let process_offset = std::process::id().wrapping_mul(97) % range;
    for _ in 0..range {
        let offset = NEXT_TEST_PORT.fetch_add(length, Ordering::Relaxed);
        let first = TEST_PORT_FIRST + (process_offset + offset) % (range - length);
        // first + length <= ephemeral_first <= 65_535, so every port fits in a u16.
        let all_free = (first..first + length)
            .all(|port| std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok());
        if all_free {
            return first as u16;
        }
    }
    panic!("no {length} consecutive free ports below {ephemeral_first}");
}

/// How a [`Cluster`]'s nodes are started.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `--heartbeat-interval` in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout` in milliseconds.
    pub election_timeout_ms: u64,
    /// `--snapshot-threshold-entries`, if not the default.
    pub snapshot_threshold_entries: Option<u64>,
    /// `--guest-runaway-seconds`, if not the default.
    pub guest_runaway_seconds: Option<u64>,
    /// `UNDERSTUDY_LOG` of the nodes.
    pub log_filter: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            heartbeat_interval_ms: 50,
            election_timeout_ms: 500,
            snapshot_threshold_entries: None,
            guest_runaway_seconds: None,
            log_filter: "warn".to_string(),
        }
    }
}

/// Whether a node's process is running, paused or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Running,
    /// SIGSTOPped.
    Stopped,
    /// Killed or exited.
    Down,
}

/// One node process and how to start it again.
pub struct NodeProcess {
    /// The Raft id.
    pub id: u64,
    /// `http://127.0.0.1:PORT`.
    pub client_url: String,
    /// `127.0.0.1:PORT`.
    pub peer_address: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    arguments: Vec<OsString>,
    child: Option<Child>,
    state: NodeState,
}

/// N `understudy node` processes.
pub struct Cluster {
    /// The parent of every node's data directory.
    pub dir: tempfile::TempDir,
    /// The nodes, by index.
    pub nodes: Vec<NodeProcess>,
    options: ClusterOptions,
}

impl Cluster {
    /// Starts `count` nodes with the default options.
    pub fn start(count: usize) -> Cluster {
        Cluster::start_with(count, ClusterOptions::default())
    }

    /// Starts `count` nodes forming one cluster.
    pub fn start_with(count: usize, options: ClusterOptions) -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let peer_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let initial_cluster = peer_ports
            .iter()
            .enumerate()
            .map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
            options,
        };
        for (index, peer_port) in peer_ports.into_iter().enumerate() {
            cluster.spawn_new(index as u64 + 1, peer_port, Some(&initial_cluster));
        }
        cluster
    }

    /// Starts a node with id `id` and no initial cluster (to be added with
    /// `POST /v1/cluster/members`); returns its index.
    pub fn spawn_joining(&mut self, id: u64) -> usize {
        self.spawn_new(id, free_port(), None)
    }

    fn spawn_new(&mut self, id: u64, peer_port: u16, initial_cluster: Option<&str>) -> usize {
        let client_port = free_port();
        let data_dir = self.dir.path().join(format!("node-{id}"));
        let peer_address = format!("127.0.0.1:{peer_port}");
        let mut arguments: Vec<OsString> =
            vec!["node".into(), "--id".into(), id.to_string().into()];
        arguments.push("--data-dir".into());
        arguments.push(data_dir.clone().into());
        arguments.push("--listen-client".into());
        arguments.push(format!("127.0.0.1:{client_port}").into());
        arguments.push("--listen-peer".into());
        arguments.push(peer_address.clone().into());
        if let Some(initial_cluster) = initial_cluster {
            arguments.push("--initial-cluster".into());
            arguments.push(initial_cluster.into());
        }
        arguments.push("--heartbeat-interval".into());
        arguments.push(self.options.heartbeat_interval_ms.to_string().into());
        arguments.push("--election-timeout".into());
        arguments.push(self.options.election_timeout_ms.to_string().into());
        if let Some(threshold) = self.options.snapshot_threshold_entries {
            arguments.push("--snapshot-threshold-entries".into());
            arguments.push(threshold.to_string().into());
        }
        if let Some(seconds) = self.options.guest_runaway_seconds {
            arguments.push("--guest-runaway-seconds".into());
            arguments.push(seconds.to_string().into());
        }
        self.nodes.push(NodeProcess {
            id,
            client_url: format!("http://127.0.0.1:{client_port}"),
            peer_address,
            data_dir,
            arguments,
            child: None,
            state: NodeState::Down,
        });
        let index = self.nodes.len() - 1;
        self.restart(index);
        index
    }

    /// How many nodes the harness knows (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `index`'s Raft id.
    pub fn id(&self, index: usize) -> u64 {
        self.nodes[index].id
    }

    /// The index of the node with Raft id `id`.
    pub fn index_of(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|node| node.id == id)
            .unwrap_or_else(|| panic!("no node with id {id}"))
    }

    /// Node `index`'s client URL.
    pub fn client_url(&self, index: usize) -> String {
        self.nodes[index].client_url.clone()
    }

    /// Node `index`'s peer address.
    pub fn peer_address(&self, index: usize) -> String {
        self.nodes[index].peer_address.clone()
    }

    /// Node `index`'s pid, if its process is alive.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// Node `index`'s state.
    pub fn state(&self, index: usize) -> NodeState {
        self.nodes[index].state
    }

    /// Indices of the nodes that are running (not paused, not down).
    pub fn running(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&index| self.nodes[index].state == NodeState::Running)
            .collect()
    }

    fn signal(&self, index: usize, signal: rustix::process::Signal) {
        let pid = self.pid(index).expect("the node has a process");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive");
        rustix::process::kill_process(pid, signal).expect("send a signal to a child");
    }

    /// SIGKILL node `index` and reap it.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            // Already exited is fine: nothing left to kill.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[index].state = NodeState::Down;
    }

    /// SIGSTOP node `index`.
    pub fn stop(&mut self, index: usize) {
        self.signal(index, rustix::process::Signal::STOP);
        self.nodes[index].state = NodeState::Stopped;
    }

    /// SIGCONT node `index`.
    pub fn cont(&mut self, index: usize) {
        self.signal(index, rustix::process::Signal::CONT);
        self.nodes[index].state = NodeState::Running;
    }

    /// SIGTERM node `index` and wait (bounded) for it to exit; returns whether
    /// it exited successfully.
    pub fn terminate(&mut self, index: usize) -> bool {
        if self.nodes[index].state == NodeState::Stopped {
            self.cont(index);
        }
        self.signal(index, rustix::process::Signal::TERM);
        let started = Instant::now();
        let mut child = self.nodes[index].child.take().expect("a running child");
        self.nodes[index].state = NodeState::Down;
        loop {
            if let Some(status) = child.try_wait().expect("poll a child") {
                return status.success();
            }
            if started.elapsed() > TERMINATE_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {index} did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// (Re)starts node `index` with its original command line (after killing
    /// it if it still runs).
    pub fn restart(&mut self, index: usize) {
        if self.nodes[index].child.is_some() {
            if self.nodes[index].state == NodeState::Stopped {
                self.cont(index);
            }
            self.kill(index);
        }
        let node = &mut self.nodes[index];
        let child = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .args(&node.arguments)
            .env("UNDERSTUDY_LOG", &self.options.log_filter)
            .env_remove("UNDERSTUDY_DEV_PARENT_PID")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a node");
        node.child = Some(child);
        node.state = NodeState::Running;
    }

    /// A client of node `index` alone, with the default client options.
    pub fn client(&self, index: usize) -> Client {
        self.client_with(index, ClientOptions::default())
    }

    /// A client of node `index` alone.
    pub fn client_with(&self, index: usize, options: ClientOptions) -> Client {
        Client::with_options(vec![self.client_url(index)], None, options).expect("a client")
    }

    /// A client of every node, with the default client options.
    pub fn client_all(&self) -> Client {
        let endpoints = self.nodes.iter().map(|n| n.client_url.clone()).collect();
        Client::new(endpoints, None).expect("a client")
    }

    /// A client of every node with a one-call deadline of `deadline`.
    pub fn client_all_with_deadline(&self, deadline: Duration) -> Client {
        let endpoints = self.nodes.iter().map(|n| n.client_url.clone()).collect();
        let options = ClientOptions {
            deadline,
            ..ClientOptions::default()
        };
        Client::with_options(endpoints, None, options).expect("a client")
    }

    /// Polls the running nodes' `GET /v1/cluster` until a running node says it
    /// is the leader and a majority of the running nodes agree; returns its
    /// index. Panics after `deadline`.
    pub async fn leader_within(&self, deadline: Duration) -> usize {
        let started = Instant::now();
        let quick = ClientOptions {
            deadline: Duration::from_millis(500),
            attempt_timeout: Duration::from_millis(400),
            connect_timeout: Duration::from_millis(200),
            ..ClientOptions::default()
        };
        // One client per node for the whole wait: its connection is reused
        // instead of leaving a TIME_WAIT socket behind every poll.
        let clients: Vec<Client> = (0..self.len())
            .map(|index| self.client_with(index, quick))
            .collect();
        loop {
            let running = self.running();
            let mut votes: Vec<(usize, u64)> = Vec::new();
            for &index in &running {
                if let Ok(status) = clients[index].cluster().await {
                    if let Some(leader_id) = status.leader_id {
                        votes.push((index, leader_id));
                    }
                }
            }
            for &(index, leader_id) in &votes {
                let agreeing = votes.iter().filter(|(_, id)| *id == leader_id).count();
                if self.nodes[index].id == leader_id && agreeing * 2 > running.len() {
                    return index;
                }
            }
            assert!(
                started.elapsed() < deadline,
                "no leader within {deadline:?} (views: {votes:?})"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// [`Cluster::leader_within`] with a 20-second deadline.
    pub async fn leader(&self) -> usize {
        self.leader_within(Duration::from_secs(20)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL works on a stopped process too; already exited is fine.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `condition` until it holds; panics with `what` after `deadline`.
pub async fn eventually<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A PUT with an explicit `Idempotency-Key`, sent once with no retries, so a
/// test controls exactly which node sees which attempt. Returns the status and
/// the body.
pub async fn raw_put(url: &str, key: &str, value: &str, idempotency_key: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .put(format!("{url}/v1/kv/{key}"))
        .header("Idempotency-Key", idempotency_key)
        .body(value.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}
