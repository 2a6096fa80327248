//! A sans-IO Raft core.
//!
//! [`RaftNode`] is a deterministic state machine. Its inputs are method calls:
//! `tick()` (time passes), `step(message)` (a message arrived), `propose(...)`,
//! `change_membership(...)`, `read_index(...)`, `transfer_leadership(...)`,
//! `handle_persisted(...)` (a persistence request became durable), `compact(...)`
//! (the application took a snapshot) and `report_unreachable(...)` (the shell's
//! hint that a peer's process is gone). Its outputs are [`Command`]s, drained with
//! `take_commands()`, which the shell executes in order: persist, send, apply,
//! install a snapshot, answer a read.
//!
//! The core never reads a clock, never touches a file or socket and never draws an
//! unseeded random number: the election jitter comes from an RNG seeded by
//! [`Config::random_seed`]. The node shell (tokio, TCP, real files) and the
//! simulator (one thread, simulated network and disk) drive the same code.
//!
//! Persistence is asynchronous: `Persist` commands carry increasing ids, and a
//! message that promises durable state (a granted vote, an append or snapshot
//! acknowledgement) is held back until `handle_persisted` covers it.
//!
//! Layout (private modules, one concern each): `node` (the public API and shared
//! state), `step` (term rules for every message), `election` (elections and
//! pre-vote), `leader` (heartbeats, check-quorum, retransmission), `replication`
//! (AppendEntries on both sides, commit), `progress` (per-follower replication
//! state), `log` (the in-memory log and its indexes), `persistence` (persist ids,
//! staging, gated messages), `snapshot` (chunked InstallSnapshot), `membership`,
//! `read_index`, `transfer`, `unreachable` (early campaigns on
//! the shell's hint that the leader is gone), `restore` (start-up validation), `validate`
//! (message shape checks), `state` (timers and leader-only state).
//!
//! See `docs/raft.md` for what is implemented, how it deviates from the paper,
//! the shell's obligations and which invariants the code asserts.

mod command;
mod config;
mod election;
mod entry;
mod error;
mod leader;
mod log;
mod membership;
mod message;
mod node;
mod persistence;
mod progress;
mod read_index;
mod replication;
mod restore;
mod snapshot;
mod state;
mod step;
mod transfer;
mod unreachable;
mod validate;

#[cfg(test)]
mod tests;

pub use command::{Command, PersistId};
pub use config::Config;
#[cfg(feature = "deliberate-bugs")]
pub use config::DeliberateBugs;
pub use entry::{Entry, EntryPayload, HardState, Membership, MembershipChange, SnapshotMeta};
pub use error::RaftError;
pub use message::{ConflictHint, Message, MessageBody};
pub use node::{RaftNode, RestoredState, Role, Status};
