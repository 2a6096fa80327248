//! State shared between the Raft driver thread, the transport tasks and the
//! client service.

use crate::metadata::{self, Metadata};
use crate::metrics::Metrics;
use crate::state::NodeState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use tokio::sync::watch;
use understudy_raft::Status;

/// The leader's and this node's view of the group, refreshed by the driver.
#[derive(Clone, Debug, Default)]
pub struct StatusView {
    /// The core's status (None until the driver started).
    pub status: Option<Status>,
    /// On the leader: each member's match index.
    pub match_indexes: BTreeMap<u64, u64>,
}

/// Who this process is on the peer network.
#[derive(Debug)]
pub struct Identity {
    /// The cluster (0 while a joining node has not yet heard from it).
    pub cluster_id: AtomicU64,
    /// This node.
    pub node_id: u64,
    /// This process's boot incarnation (the persisted boot count).
    pub incarnation: u64,
    /// Where the identity file lives, to record an adopted cluster id.
    pub data_dir: PathBuf,
}

impl Identity {
    /// Accepts `cluster_id` if it is ours, or adopts it if we have none yet.
    pub fn accept_cluster(&self, cluster_id: u64) -> bool {
        if cluster_id == 0 {
            return false;
        }
        match self
            .cluster_id
            .compare_exchange(0, cluster_id, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => {
                let metadata = Metadata {
                    cluster_id,
                    node_id: self.node_id,
                    boot_count: self.incarnation,
                };
                if let Err(error) = metadata::store(&self.data_dir, &metadata) {
                    tracing::warn!(%error, "cannot record the adopted cluster id");
                }
                tracing::info!(cluster_id, "joined cluster");
                true
            }
            Err(current) => current == cluster_id,
        }
    }
}

/// Everything the node's parts share.
#[derive(Debug)]
pub struct Shared {
    /// This node's id.
    pub id: u64,
    /// The state machine (written only by the driver).
    pub state: RwLock<NodeState>,
    /// The latest status.
    pub status: Mutex<StatusView>,
    /// The applied index, for waiters.
    pub applied: watch::Sender<u64>,
    /// Counters.
    pub metrics: Metrics,
    /// False once the driver stopped on an error.
    pub healthy: AtomicBool,
    /// Peer identity.
    pub identity: Identity,
    /// Peer addresses from `--initial-cluster`, overridden by replicated ones.
    pub initial_peers: BTreeMap<u64, String>,
    /// This node's advertised client URL.
    pub advertise_client: String,
    /// This node's peer address.
    pub peer_address: String,
    /// Highest incarnation seen from each peer, to refuse stale processes.
    pub peer_incarnations: Mutex<BTreeMap<u64, u64>>,
    /// Set when the node is stopping; background tasks end.
    pub stopping: AtomicBool,
    /// Peer addresses learned from handshakes (used when nothing else is known).
    pub learned_peers: Mutex<BTreeMap<u64, String>>,
}

impl Shared {
    /// Where node `id`'s peer listener is, if known.
    pub fn peer_address_of(&self, id: u64) -> Option<String> {
        let replicated = self
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .addresses
            .get(&id)
            .map(|address| address.peer.clone());
        replicated
            .or_else(|| self.initial_peers.get(&id).cloned())
            .or_else(|| {
                self.learned_peers
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .get(&id)
                    .cloned()
            })
    }

    /// The members of the configuration this node last applied (voters and
    /// learners), or the initial cluster before any.
    pub fn known_members(&self) -> Vec<u64> {
        let view = self.status_view();
        match view.status {
            Some(status) => {
                let membership = status.membership;
                let mut members: Vec<u64> = membership
                    .voters
                    .iter()
                    .chain(membership.learners.iter())
                    .map(|id| id.get())
                    .collect();
                members.sort_unstable();
                members.dedup();
                members
            }
            None => self.initial_peers.keys().copied().collect(),
        }
    }

    /// Remembers where a peer that connected to us listens.
    pub fn learn_peer_address(&self, id: u64, address: String) {
        self.learned_peers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, address);
    }

    /// A copy of the latest status.
    pub fn status_view(&self) -> StatusView {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records a peer's incarnation; false if an newer process of it was seen.
    pub fn accept_incarnation(&self, peer: u64, incarnation: u64) -> bool {
        let mut seen = self
            .peer_incarnations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let highest = seen.entry(peer).or_insert(incarnation);
        if incarnation < *highest {
            return false;
        }
        *highest = incarnation;
        true
    }
}
