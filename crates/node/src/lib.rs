//! The understudy node: the I/O shell around the sans-IO cores.
//!
//! [`run`] (or [`start`] for a handle, as tests use) opens the data directory,
//! starts the Raft driver thread (`driver`: core + durable log + state machine,
//! group commit; `snapshot_writer` writes its snapshot files on a thread of
//! their own), the peer transport (`transport`, `wire`: framed, checksummed,
//! versioned TCP with handshakes, reconnect and bounded queues) and the client
//! service (`service`, `membership`: `ClusterService`, forwarding to the leader),
//! served over HTTP by `understudy_api::router`.

mod config;
mod driver;
mod membership;
mod metadata;
mod metrics;
pub mod process;
mod service;
mod shared;
mod snapshot_writer;
mod start;
mod state;
mod transport;
pub mod wire;

pub use config::{
    run, run_with_options, start, NodeConfig, NodeError, NodeOptions, RunningNode,
    GUEST_RUNAWAY_LIMIT_DEFAULT,
};
pub use metadata::{cluster_id_of, METADATA_FILE_NAME};
pub use service::NodeService;
pub use state::{MemberAddress, NodeCommand, NodeState};
