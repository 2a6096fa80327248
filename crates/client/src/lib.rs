//! The Rust client of an understudy cluster's HTTP API.
//!
//! [`Client`] talks to any node: it tries the endpoints in turn (remembering the
//! last one that answered), retries what the API's contract says is safe to
//! retry within an overall deadline (see `retry.rs`), and gives every write an
//! `Idempotency-Key: <client-id>:<seq>` so that a write retried after an
//! ambiguous failure is applied once. [`Watch`] streams changes and resumes
//! from the last delivered revision after a disconnect. The process-pair calls
//! ([`Client::spawn`], [`Client::write_stdin`], [`Client::read_output`], ...)
//! follow the same rules.
//!
//! Layout: `client.rs` (the KV and cluster calls), `processes.rs` (the
//! process-pair calls and their JSON shapes), `retry.rs` (what to retry),
//! `watch.rs`, `types.rs` (the JSON shapes), `error.rs` (HTTP answers to
//! [`ClientError`]).

mod client;
mod error;
mod processes;
mod retry;
mod session;
mod types;
mod watch;

pub use client::{Client, ClientOptions, CLIENT_ENDPOINTS_MAX, CLIENT_RESPONSE_BYTES_MAX};
pub use error::{error_from_response, ClientError};
pub use processes::{
    OutputChunk, OutputStream, ProcessDeleted, ProcessEvent, ProcessEvents, ProcessList,
    ProcessStatus, SpawnOptions, Spawned, StdinWritten, OUTPUT_WAIT_MAX,
};
pub use types::*;
pub use watch::{Watch, WatchTarget, WATCH_LINE_BYTES_MAX};
