//! How a node is configured and started.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::start::{
    run, run_with_options, start, NodeOptions, RunningNode, GUEST_RUNAWAY_LIMIT_DEFAULT,
};

/// Everything `understudy node` passes to a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node's id (never reused).
    pub id: u64,
    /// Where its durable state lives.
    pub data_dir: PathBuf,
    /// Where clients connect (HTTP). Defaults to a loopback address in the CLI.
    pub listen_client: SocketAddr,
    /// Where peers connect.
    pub listen_peer: SocketAddr,
    /// The address clients should be told to use for this node (defaults to
    /// `http://<listen_client>`).
    pub advertise_client: Option<String>,
    /// The initial members and their peer addresses. Used only to bootstrap an
    /// empty data directory; empty for a node that joins a running cluster.
    pub initial_cluster: Vec<(u64, String)>,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The shortest election timeout.
    pub election_timeout: Duration,
    /// If set, every client request must carry `Authorization: Bearer <token>`.
    pub client_token: Option<String>,
}

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration makes no sense.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The data directory could not be used.
    #[error("storage: {0}")]
    Storage(String),
    /// A port could not be bound.
    #[error("cannot listen on {address}: {detail}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The operating system's reason.
        detail: String,
    },
}
