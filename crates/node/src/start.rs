//! Starting and stopping a node.

use crate::config::{NodeConfig, NodeError};
use crate::driver::{Driver, Input};
use crate::metadata;
use crate::metrics::Metrics;
use crate::service::NodeService;
use crate::shared::{Identity, Shared, StatusView};
use crate::state::NodeState;
use crate::transport::{accept_loop, Outbound};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use understudy_raft::{Config, RaftNode, RestoredState, Role};
use understudy_raft_log::{RaftLog, RaftLogOptions};
use understudy_types::limits::NODE_INPUT_QUEUE_MAX;
use understudy_types::{GroupId, NodeId};
use understudy_wal::FileStorage;

/// How long a stopping leader waits for its successor to take over.
const LEADERSHIP_HANDOVER_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long in-flight HTTP requests may take to finish at shutdown.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Tuning that the command line does not expose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    /// The Raft core's tick.
    pub tick: Duration,
    /// Take a snapshot (compacting the log) after this many applied entries.
    /// The default, 100,000, is etcd's: a snapshot serializes the whole state
    /// (up to the 32 MiB of kv history plus the keys) on the driver thread, and
    /// measured with 128 writers, every 10,000 entries put the p99 at 74–96 ms
    /// against 11–14 ms every 100,000. The cost is up to that many entries in
    /// memory and replayed at restart.
    pub snapshot_threshold_entries: u64,
    /// How long a guest may run without progress (no input logged, no output
    /// written) before it is killed as a runaway, the kill logged so its
    /// backup agrees (docs/pairs.md, "Kills"); `None`: never.
    pub guest_runaway_limit: Option<Duration>,
}

/// The default of [`NodeOptions::guest_runaway_limit`]: long enough for any
/// computation that reports progress now and then, short enough that a guest
/// stuck in a loop does not hold a core for good.
pub const GUEST_RUNAWAY_LIMIT_DEFAULT: Duration = Duration::from_secs(30);

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            tick: Duration::from_millis(10),
            snapshot_threshold_entries: 100_000,
            guest_runaway_limit: Some(GUEST_RUNAWAY_LIMIT_DEFAULT),
        }
    }
}

/// A started node.
pub struct RunningNode {
    service: Arc<NodeService>,
    /// Owns the process runtime (the service holds it weakly).
    processes: Arc<crate::process::ProcessRuntime>,
    client_address: SocketAddr,
    peer_address: SocketAddr,
    shutdown: watch::Sender<bool>,
    inputs: SyncSender<Input>,
    driver: Option<std::thread::JoinHandle<Result<(), String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RunningNode")
            .field("client_address", &self.client_address)
            .field("peer_address", &self.peer_address)
            .finish()
    }
}

impl RunningNode {
    /// The node's process pairs.
    pub fn processes(&self) -> Arc<crate::process::ProcessRuntime> {
        self.processes.clone()
    }

    /// The node's client service.
    pub fn service(&self) -> Arc<NodeService> {
        self.service.clone()
    }

    /// Where the HTTP API listens.
    pub fn client_address(&self) -> SocketAddr {
        self.client_address
    }

    /// Where the peer transport listens.
    pub fn peer_address(&self) -> SocketAddr {
        self.peer_address
    }

    /// Stops accepting, lets the driver finish its batch (and its fsync), and
    /// waits for everything to end.
    pub async fn stop(mut self) -> Result<(), NodeError> {
        self.hand_over_leadership().await;
        self.shutdown.send_replace(true);
        let inputs = self.inputs.clone();
        let driver = self.driver.take();
        let result = tokio::task::spawn_blocking(move || {
            // Blocks only while the queue is full; the driver keeps draining it.
            let _ = inputs.send(Input::Stop);
            driver.map(|thread| thread.join())
        })
        .await;
        self.service
            .shared()
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            // In-flight requests (long watch polls, say) get a bounded grace period.
            if tokio::time::timeout(HTTP_DRAIN_TIMEOUT, task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        match result {
            Ok(Some(Ok(Err(error)))) => Err(NodeError::Storage(error)),
            Ok(Some(Err(_))) | Err(_) => Err(NodeError::Storage("the driver panicked".into())),
            _ => Ok(()),
        }
    }
}

impl RunningNode {
    /// A leader that stops cleanly first hands over to its most up-to-date voter,
    /// so clients see a new leader at once instead of after an election timeout.
    async fn hand_over_leadership(&self) {
        let shared = self.service.shared();
        let view = shared.status_view();
        let Some(status) = view.status else { return };
        if status.role != Role::Leader {
            return;
        }
        let target = status
            .membership
            .voters
            .iter()
            .map(|voter| voter.get())
            .filter(|voter| *voter != shared.id)
            .max_by_key(|voter| view.match_indexes.get(voter).copied().unwrap_or(0));
        let Some(target) = target else { return };
        if self
            .inputs
            .try_send(Input::TransferLeadership { target })
            .is_err()
        {
            return;
        }
        let deadline = tokio::time::Instant::now() + LEADERSHIP_HANDOVER_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let still_leading = shared
                .status_view()
                .status
                .is_some_and(|status| status.role == Role::Leader);
            if !still_leading {
                tracing::info!(node = shared.id, target, "handed over leadership");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs a node until `shutdown` completes, then stops cleanly.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    run_with_options(config, NodeOptions::default(), shutdown).await
}

/// [`run`] with explicit tuning.
pub async fn run_with_options(
    config: NodeConfig,
    options: NodeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let node = start(config, options).await?;
    shutdown.await;
    node.stop().await
}

fn validate(config: &NodeConfig, options: &NodeOptions) -> Result<(u32, u32), NodeError> {
    let invalid = |detail: &str| Err(NodeError::InvalidConfig(detail.to_string()));
    if config.id == 0 {
        return invalid("node id 0 is reserved");
    }
    if !config.initial_cluster.is_empty()
        && !config
            .initial_cluster
            .iter()
            .any(|(id, _)| *id == config.id)
    {
        return invalid("--initial-cluster must include this node");
    }
    if options.tick.is_zero() || options.snapshot_threshold_entries == 0 {
        return invalid("tick and snapshot threshold must be positive");
    }
    let ticks =
        |duration: Duration| (duration.as_micros() / options.tick.as_micros().max(1)) as u64;
    let heartbeat_ticks = ticks(config.heartbeat_interval).max(1);
    let election_ticks = ticks(config.election_timeout);
    if election_ticks < 2 * heartbeat_ticks || election_ticks > u64::from(u32::MAX / 8) {
        return invalid("the election timeout must be at least twice the heartbeat interval");
    }
    Ok((heartbeat_ticks as u32, election_ticks as u32))
}

/// Opens storage, binds the listeners and starts every part of the node.
pub async fn start(config: NodeConfig, options: NodeOptions) -> Result<RunningNode, NodeError> {
    let (heartbeat_ticks, election_ticks) = validate(&config, &options)?;
    let data_dir = config.data_dir.clone();
    let node_id = config.id;
    let initial_cluster = config.initial_cluster.clone();
    let (identity, log, restored) =
        tokio::task::spawn_blocking(move || open_storage(&data_dir, node_id, &initial_cluster))
            .await
            .map_err(|error| NodeError::Storage(error.to_string()))??;
    let (peer_listener, peer_address) = bind_listener(config.listen_peer).await?;
    let (client_listener, client_address) = bind_listener(config.listen_client).await?;
    let (meta, data) = restored.snapshot.clone();
    let state = NodeState::restore(&data).map_err(NodeError::Storage)?;
    let shared = build_shared(
        &config,
        identity,
        state,
        meta.last_index.get(),
        (client_address, peer_address),
    );
    let raft = new_raft(&shared, (heartbeat_ticks, election_ticks), restored)?;
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let (inputs, input_receiver) = sync_channel(NODE_INPUT_QUEUE_MAX);
    let outbound = Outbound::new(
        shared.clone(),
        tokio::runtime::Handle::current(),
        shutdown_receiver.clone(),
    );
    let driver = Driver::new(
        raft,
        log,
        shared.clone(),
        outbound,
        &meta,
        options.snapshot_threshold_entries,
    );
    let driver = spawn_driver(driver, input_receiver, options.tick, shared.clone())?;
    let service = Arc::new(NodeService::new(shared.clone(), inputs.clone()));
    let processes = Arc::new(
        crate::process::ProcessRuntime::new(
            (*service).clone(),
            config.data_dir.join("processes"),
            options.guest_runaway_limit,
        )
        .map_err(NodeError::Storage)?,
    );
    service.attach_processes(&processes);
    let mut tasks = vec![tokio::spawn(accept_loop(
        peer_listener,
        service.clone(),
        inputs.clone(),
        shutdown_receiver.clone(),
    ))];
    tasks.push(serve_http(
        client_listener,
        service.clone(),
        config.client_token.clone(),
        shutdown_receiver.clone(),
    ));
    tasks.push(crate::membership::spawn_self_registration(
        (*service).clone(),
        shutdown_receiver.clone(),
    ));
    tasks.push(tokio::spawn(processes.clone().run(shutdown_receiver)));
    tracing::info!(node = config.id, %peer_address, %client_address, "node started");
    Ok(RunningNode {
        service,
        processes,
        client_address,
        peer_address,
        shutdown,
        inputs,
        driver: Some(driver),
        tasks,
    })
}

/// The Raft core over the restored state, its election jitter seeded from the OS.
fn new_raft(
    shared: &Shared,
    (heartbeat_ticks, election_ticks): (u32, u32),
    restored: RestoredState,
) -> Result<RaftNode, NodeError> {
    let mut raft_config = Config::new(NodeId(shared.id), GroupId(1), rand::random());
    raft_config.heartbeat_interval_ticks = heartbeat_ticks;
    raft_config.election_timeout_ticks = election_ticks;
    let raft = RaftNode::new(raft_config, restored)
        .map_err(|error| NodeError::Storage(format!("restored state refused: {error}")))?;
    // Status is available from the start, not only after the driver's first turn.
    *shared
        .status
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = StatusView {
        status: Some(raft.status()),
        match_indexes: BTreeMap::new(),
    };
    Ok(raft)
}

async fn bind_listener(address: SocketAddr) -> Result<(TcpListener, SocketAddr), NodeError> {
    let fail = |error: std::io::Error| NodeError::Listen {
        address,
        detail: error.to_string(),
    };
    let listener = TcpListener::bind(address).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

fn build_shared(
    config: &NodeConfig,
    identity: Identity,
    state: NodeState,
    applied_index: u64,
    (client_address, peer_address): (SocketAddr, SocketAddr),
) -> Arc<Shared> {
    Arc::new(Shared {
        id: config.id,
        state: RwLock::new(state),
        status: Mutex::new(StatusView::default()),
        applied: watch::Sender::new(applied_index),
        metrics: Metrics::default(),
        healthy: AtomicBool::new(true),
        identity,
        initial_peers: config
            .initial_cluster
            .iter()
            .cloned()
            .collect::<BTreeMap<_, _>>(),
        advertise_client: config
            .advertise_client
            .clone()
            .unwrap_or_else(|| format!("http://{client_address}")),
        peer_address: config
            .initial_cluster
            .iter()
            .find(|(id, _)| *id == config.id)
            .map_or_else(|| peer_address.to_string(), |(_, address)| address.clone()),
        peer_incarnations: Mutex::new(BTreeMap::new()),
        learned_peers: Mutex::new(BTreeMap::new()),
        stopping: AtomicBool::new(false),
    })
}

fn spawn_driver(
    driver: Driver,
    inputs: std::sync::mpsc::Receiver<Input>,
    tick: Duration,
    shared: Arc<Shared>,
) -> Result<std::thread::JoinHandle<Result<(), String>>, NodeError> {
    std::thread::Builder::new()
        .name(format!("raft-driver-{}", shared.id))
        .spawn(move || {
            let result = driver.run(inputs, tick);
            if let Err(error) = &result {
                tracing::error!(node = shared.id, %error, "raft driver stopped on an error");
                shared
                    .healthy
                    .store(false, std::sync::atomic::Ordering::SeqCst);
            }
            result
        })
        .map_err(|error| NodeError::Storage(format!("cannot start the driver thread: {error}")))
}

type Opened = (Identity, RaftLog<FileStorage>, RestoredState);

fn open_storage(
    data_dir: &std::path::Path,
    node_id: u64,
    initial_cluster: &[(u64, String)],
) -> Result<Opened, NodeError> {
    let metadata =
        metadata::boot(data_dir, node_id, initial_cluster).map_err(NodeError::Storage)?;
    let storage = FileStorage::open(data_dir.join("raft"))
        .map_err(|error| NodeError::Storage(format!("{}: {error}", data_dir.display())))?;
    let voters: Vec<NodeId> = initial_cluster.iter().map(|(id, _)| NodeId(*id)).collect();
    let (log, restored) = RaftLog::open(storage, RaftLogOptions::default(), move || {
        RestoredState::bootstrap(voters)
    })
    .map_err(|error| NodeError::Storage(format!("cannot open the raft log: {error}")))?;
    let identity = Identity {
        cluster_id: AtomicU64::new(metadata.cluster_id),
        node_id,
        incarnation: metadata.boot_count,
        data_dir: data_dir.to_path_buf(),
    };
    Ok((identity, log, restored))
}

fn serve_http(
    listener: TcpListener,
    service: Arc<NodeService>,
    client_token: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let router = understudy_api::router(service, understudy_api::ApiOptions { client_token });
    tokio::spawn(async move {
        let stopping = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(stopping)
            .await
        {
            tracing::error!(%error, "client listener failed");
        }
    })
}
