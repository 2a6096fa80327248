//! The replicated key-value state machine (sans-IO, deterministic).
//!
//! The node shell feeds [`Store::apply`] every committed Raft entry's [`Command`]
//! with its log index, in log order, and serves reads ([`Store::get`],
//! [`Store::range`], [`Store::changes_since`]) from the same store. Snapshots
//! ([`Store::snapshot`], [`Store::restore`]) capture the whole state.
//!
//! It must never read a clock, draw a random number, or touch files or sockets:
//! every replica applying the same commands must reach byte-identical state.
//!
//! # Semantics (etcd's model)
//! - The store `revision` starts at 0 and increases by exactly 1 per command that
//!   changed a key: a put, a delete that deleted a key, a transaction whose branch
//!   made at least one effective write (all its writes share that revision).
//!   Compaction does not change the revision.
//! - Each key has `create_revision`, `mod_revision` and `version` (puts since
//!   creation); a deleted and re-created key starts again at version 1.
//! - Transaction compares: a missing key has version 0 and mod revision 0, and no
//!   value compare matches it (not even `NotEqual`). Gets in a branch see the
//!   branch's earlier writes.
//! - A rejected command (a limit broken) changes nothing and returns an error,
//!   identically on every replica.
//!
//! # Client sessions (Raft dissertation §6.3)
//! A command may carry a [`RequestId`] `(client_id, sequence ≥ 1)`:
//! - sequence 1 from an unknown client opens a session;
//! - a retry of a retained `(client, sequence)` returns the first outcome without
//!   applying again (the last `KV_SESSION_RESULTS_RETAINED_MAX` per client);
//! - a sequence older than the retained window, or a sequence > 1 from a client
//!   without a session, returns [`KvError::SessionExpired`] and changes nothing;
//! - a new sequence within the window is applied (it cannot have been before);
//! - beyond `KV_SESSIONS_MAX` clients, the session least recently used *by log
//!   index* is evicted. Caveat: a client evicted after its sequence-1 request
//!   that retries that very request opens a new session and applies it again.
//!
//! # History
//! Every change is kept by revision until [`Operation::Compact`] discards the
//! history before its revision, or until the history exceeds
//! `KV_HISTORY_BYTES_RETAINED_MAX` bytes, when the oldest revisions are compacted
//! automatically (deterministically, as part of applying the write that crossed
//! the limit). [`Store::changes_since`] below the compaction revision fails with
//! [`KvError::Compacted`].
//!
//! Layout: `command` (commands, validation, encoding), `store` (MVCC and apply),
//! `session` (client sessions), `snapshot` (snapshot format), `error`.

mod command;
mod error;
mod session;
mod snapshot;
mod store;

#[cfg(test)]
mod tests;

pub use command::{
    Command, Compare, CompareOperator, CompareTarget, Operation, RequestId, Txn, TxnOperation,
    COMMAND_FORMAT_VERSION,
};
pub use error::KvError;
pub use snapshot::{SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC};
pub use store::{Event, EventKind, KeySelector, KeyValue, Outcome, Response, Store, TxnResult};
