//! The interface between the HTTP layer and the node.

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use understudy_kv::{Command, Event, KeySelector, KeyValue, KvError, Response};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (ReadIndex on the
    /// leader). The default.
    #[default]
    Linearizable,
    /// Whatever the answering node has applied; may be stale.
    Serializable,
}

/// The result of reading one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResult {
    /// The key's current version, if it exists.
    pub item: Option<KeyValue>,
    /// The store's revision when the read was served.
    pub revision: u64,
}

/// The result of a prefix range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResult {
    /// Matching keys in key order, at most the requested limit.
    pub items: Vec<KeyValue>,
    /// Whether more keys match beyond the limit.
    pub more: bool,
    /// The store's revision when the read was served.
    pub revision: u64,
}

/// One member as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// The member's node id.
    pub id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `unknown` (unreachable).
    pub role: String,
    /// Where peers reach it.
    pub peer_address: String,
    /// Where clients reach it (`http://host:port`).
    pub client_address: String,
    /// The leader's view of its replicated prefix (on the leader only).
    pub match_index: Option<u64>,
    /// Its commit index, if known.
    pub commit_index: Option<u64>,
    /// Its applied index, if known.
    pub applied_index: Option<u64>,
}

/// The cluster as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// The node answering.
    pub node_id: u64,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// Its current term.
    pub term: u64,
    /// Every member of the configuration.
    pub members: Vec<MemberStatus>,
}

/// A request to add a node to the cluster (as a learner that catches up and is
/// then promoted to voter).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddMember {
    /// The new node's id (never used before).
    pub id: u64,
    /// Where peers will reach it.
    pub peer_address: String,
    /// Where clients will reach it.
    pub client_address: String,
}

/// Why a request failed. The split between `Unavailable` and `Timeout` is a
/// contract: clients retry the first freely and the second only with the same
/// idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request was never appended to any log (no leader, no quorum, the node
    /// is shutting down): `503 {"error":"unavailable"}`.
    #[error("unavailable: {detail}")]
    Unavailable {
        /// What went wrong.
        detail: String,
    },
    /// The request was proposed or forwarded and then failed or timed out: it may
    /// or may not have taken effect. `504 {"error":"timeout","outcome":"unknown"}`.
    #[error("timeout, outcome unknown: {detail}")]
    Timeout {
        /// What went wrong.
        detail: String,
    },
    /// The state machine refused the request (bad input, session expired,
    /// compacted history, limits).
    #[error("rejected: {0}")]
    Rejected(KvError),
    /// A membership or cluster request that makes no sense (unknown member, id in
    /// use, a change already pending): `400` or `409`.
    #[error("invalid cluster request: {detail}")]
    InvalidClusterRequest {
        /// What is wrong.
        detail: String,
    },
}

/// What a node offers its clients. Every method may be called on any node; the
/// implementation forwards to the leader where the operation needs it.
#[async_trait]
pub trait ClusterService: Send + Sync + 'static {
    /// Replicates a write (put, delete, txn or compact), waits until it is applied
    /// and returns its result. A command with a request id is applied at most once
    /// however often it is retried, through any node.
    async fn write(&self, command: Command) -> Result<Response, ServiceError>;

    /// Reads one key.
    async fn get(&self, key: Bytes, consistency: Consistency) -> Result<GetResult, ServiceError>;

    /// Reads up to `limit` keys starting with `prefix`, in key order.
    async fn range(
        &self,
        prefix: Bytes,
        limit: usize,
        consistency: Consistency,
    ) -> Result<RangeResult, ServiceError>;

    /// Changes to the selected keys with revision at or above `from_revision`, in
    /// revision order, at most `limit`. If there are none yet, waits up to `wait`
    /// for one to be applied on this node before returning an empty list.
    async fn changes(
        &self,
        selector: KeySelector,
        from_revision: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, ServiceError>;

    /// The cluster as this node sees it.
    async fn cluster(&self) -> Result<ClusterStatus, ServiceError>;

    /// Adds a node: as a learner first, promoted to voter once it caught up.
    async fn add_member(&self, member: AddMember) -> Result<ClusterStatus, ServiceError>;

    /// Removes a node from the configuration.
    async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ServiceError>;

    /// Metrics in the Prometheus text format.
    fn metrics(&self) -> String;

    /// Whether the node is running normally (for `/healthz`).
    fn is_healthy(&self) -> bool;

    /// The node's process pairs (`/v1/processes...`); `None` where a service
    /// offers only the key-value store (the processes routes then answer 503).
    fn processes(&self) -> Option<std::sync::Arc<dyn crate::process_service::ProcessService>> {
        None
    }
}
