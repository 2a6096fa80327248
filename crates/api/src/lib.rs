//! The HTTP/JSON client API of an understudy node.
//!
//! [`service::ClusterService`] is what a node offers its clients: replicated
//! writes, reads at a chosen consistency, change history for watches, cluster
//! status and membership. The node crate implements it (forwarding to the leader
//! where needed); this crate turns it into the `/v1/...` HTTP contract of issue 3
//! with [`router`], and the node's [`process_service::ProcessService`] (reached
//! through [`service::ClusterService::processes`]) into the `/v1/processes...`
//! contract of issue 4. It holds no state of its own beyond the watch semaphore and
//! never decides anything about replication: every write goes through
//! [`service::ClusterService::write`], and the split between 503 (never appended)
//! and 504 (outcome unknown) is the service's to make.
//!
//! # Layout
//! - `kv`: `PUT/GET/DELETE /v1/kv/{key}`, `GET /v1/kv?prefix=`, `POST /v1/compact`.
//! - `txn`: `POST /v1/txn` (JSON parsing and results).
//! - `watch`: `GET /v1/watch` (a stream of JSON lines).
//! - `cluster`: `/v1/cluster`, membership, `/healthz`, `/metrics`.
//! - `processes`: `POST/GET /v1/processes`, `GET/DELETE /v1/processes/{pid}`,
//!   `POST /v1/processes/{pid}/stdin`, `GET /v1/processes/{pid}/stdout`,
//!   `…/stderr` (long-poll reads of raw bytes) and `…/events`.
//! - `process_service`: the types those routes speak and the trait a node
//!   implements for them.
//! - `auth`: the optional bearer token.
//! - `encoding`: bytes in paths, queries, bodies and JSON.
//! - `error`: [`ApiError`] and the status-code mapping.
//!
//! # Decisions where the contract leaves room
//! - **Keys in paths** are percent-decoded *bytes*: `%FF` is a valid key byte, so a
//!   key need not be UTF-8; `/` may appear unescaped (`/v1/kv/a/b` is key `a/b`).
//!   A `%` not followed by two hex digits is a 400. Query parameters (`prefix`,
//!   `key`) are decoded the same way, with `+` as a space.
//! - **JSON keys and values** are `"key"`/`"value"` strings when UTF-8, else
//!   `"key_base64"`/`"value_base64"` (standard base64) — on input and output.
//! - **Unknown query parameters and unknown JSON fields are 400**, so a typo never
//!   silently changes the meaning of a request.
//! - **Range items** (`GET /v1/kv?prefix=`) have the single-GET shape without the
//!   top-level `revision`: `key`, `value`, `create_revision`, `mod_revision`,
//!   `version`. Default limit 100, at most `KV_RANGE_LIMIT_MAX`; a missing prefix
//!   lists every key.
//! - **Every write is validated here** (limits, idempotency key) before it reaches
//!   the service, so bad input never costs a log entry and changes nothing.
//! - **Idempotency-Key** is `<client>:<seq>`, split at the *last* `:` (client ids
//!   may contain `:`); the client id is 1..=64 bytes of visible ASCII, the
//!   sequence a positive decimal integer. It is accepted on PUT, DELETE, txn and
//!   compact, and on a process spawn and stdin write.
//! - **Processes.** Where the node offers no process service every
//!   `/v1/processes` route answers 503 `unavailable`, before looking at the
//!   request. A spawn needs `Content-Type: application/wasm` (parameters
//!   ignored, case-insensitive) and a non-empty body of at most
//!   `GUEST_MODULE_BYTES_MAX`; `arg` and `env` may repeat and keep their order;
//!   arguments and environment entries must be UTF-8 without NUL (WASI passes
//!   them as C strings), an `env` item is split at its first `=` and needs a
//!   non-empty name, and their bytes are counted as the guest counts them (each
//!   entry plus its NUL). A pid in a path is a positive decimal integer.
//!   Output reads answer raw bytes (`application/octet-stream`) with
//!   `X-Next-Offset` and `X-Process-Exited: true|false`; `wait` is decimal
//!   seconds (`0.5`; no sign or exponent), at most 60. Flags (`unpaired`,
//!   `eof`) are `true` or `false`.
//!
//! # Error codes (`{"error":"<code>","detail":"…"}`)
//! - 400 `bad_request` (bad query, header, body), `bad_json` (unparsable JSON, a
//!   non-object, unknown or ill-typed fields), `invalid_key` (empty key),
//!   `invalid_module` (an empty or unusable WebAssembly module),
//!   `invalid_limit`, `invalid_idempotency_key`, `invalid_revision` (compaction
//!   above the current revision), `compacted` (with `compact_revision`: the
//!   watched history is gone), `invalid_cluster_request`, `method_not_allowed`
//!   (an API path with the wrong HTTP method: a 400, not a 405, because the KV
//!   endpoints' status codes are a closed list).
//! - 401 `unauthorized`; 404 `not_found` (no such key, process or path).
//! - 409 `session_expired`: the idempotent request was not applied now, and
//!   whether it was before cannot be known. 409 `name_in_use` (with `"pid"`, the
//!   process holding the name): a spawn under a taken name.
//! - 413 `too_large`: a body, key, value, transaction list, whole command,
//!   module, stdin write, or set of arguments and environment over its limit
//!   (`crates/types/src/limits.rs`).
//! - 503 `unavailable`: nothing was appended (retry freely); also too many
//!   watches, a replica-side decoding rejection (which changed nothing), a node
//!   without process pairs, and a process that cannot take the request now
//!   (starting, failing over).
//! - 504 `timeout` with `"outcome":"unknown"`: retry only with the same
//!   Idempotency-Key.
//!
//! Below the API, the HTTP server itself refuses what is not a well-formed HTTP
//! request before any handler runs, with hyper's own status and an empty body: a
//! garbage request line or header (400), a URI over its limit (414), too many or
//! too large headers (431). No request the API could accept gets these (a key is
//! at most 4 KiB, about 12 KiB percent-encoded).

mod auth;
mod cluster;
mod encoding;
mod error;
mod kv;
pub mod process_service;
mod processes;
pub mod service;
mod txn;
mod watch;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::sync::Semaphore;
use understudy_types::limits::{API_WATCHES_MAX, GUEST_MODULE_BYTES_MAX};

pub use error::ApiError;

/// Options of the HTTP API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiOptions {
    /// When set, every request except `GET /healthz` must carry
    /// `Authorization: Bearer <token>`.
    pub client_token: Option<String>,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// The node behind the API.
    pub(crate) service: Arc<dyn service::ClusterService>,
    /// Bounds concurrent watch streams to `API_WATCHES_MAX`.
    pub(crate) watch_permits: Arc<Semaphore>,
}

/// Builds the `/v1/...` router (plus `/healthz` and `/metrics`) over `service`.
pub fn router(service: Arc<dyn service::ClusterService>, options: ApiOptions) -> Router {
    let state = ApiState {
        service,
        watch_permits: Arc::new(Semaphore::new(API_WATCHES_MAX)),
    };
    let protected = Router::new()
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        )
        .route(
            "/v1/kv/",
            get(kv::empty_key).put(kv::empty_key).delete(kv::empty_key),
        )
        .route("/v1/kv", get(kv::range))
        .route("/v1/txn", post(txn::txn))
        .route("/v1/compact", post(kv::compact))
        .route("/v1/watch", get(watch::watch))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/metrics", get(cluster::metrics))
        .route(
            "/v1/processes",
            // The spawn handler bounds the body itself (413 past the limit), but
            // axum's 2 MB default must not apply to a module upload should it
            // ever be read through a limited extractor.
            get(processes::list)
                .post(processes::spawn.layer(DefaultBodyLimit::max(GUEST_MODULE_BYTES_MAX))),
        )
        .route(
            "/v1/processes/{pid}",
            get(processes::status).delete(processes::delete),
        )
        .route("/v1/processes/{pid}/stdin", post(processes::write_stdin))
        .route("/v1/processes/{pid}/stdout", get(processes::read_stdout))
        .route("/v1/processes/{pid}/stderr", get(processes::read_stderr))
        .route("/v1/processes/{pid}/events", get(processes::events))
        .fallback(cluster::no_route)
        .method_not_allowed_fallback(cluster::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(options.client_token),
            auth::require_token,
        ));
    // `/healthz` stays outside the token check: load balancers and process
    // supervisors probe it without credentials, and it reveals nothing.
    Router::new()
        .route("/healthz", get(cluster::healthz))
        .merge(protected)
        .with_state(state)
}
