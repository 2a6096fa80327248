//! A `ClusterService` test double with real KV semantics and no Raft, and helpers
//! that drive the router without a network.

#![allow(dead_code)] // Each test binary uses a different subset of the helpers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{Mutex, Notify};
use tower::ServiceExt;
use understudy_api::service::{
    AddMember, ClusterService, ClusterStatus, Consistency, GetResult, MemberStatus, RangeResult,
    ServiceError,
};
use understudy_api::{router, ApiOptions};
use understudy_kv::{Command, Event, KeySelector, Response, Store};

/// The store and the log index of the last command written.
struct Replica {
    store: Store,
    last_index: u64,
}

/// One `Store` behind a mutex: every write is "committed" at the next index.
pub struct LocalService {
    replica: Mutex<Replica>,
    /// Woken after every applied write, for `changes` waits.
    applied: Notify,
    /// When set, `write` fails with this error without applying anything.
    pub write_failure: std::sync::Mutex<Option<ServiceError>>,
    /// Commands that reached `write` and were applied (rejected ones included).
    pub writes_applied: AtomicU64,
    /// What `is_healthy` answers.
    pub healthy: AtomicBool,
    /// Cluster members (for the membership endpoints).
    members: std::sync::Mutex<Vec<MemberStatus>>,
    /// `changes` calls in progress (a cancelled call counts down too).
    pub changes_in_progress: Arc<AtomicU64>,
}

/// Counts one `changes` call while alive, however the call ends.
struct InProgress(Arc<AtomicU64>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LocalService {
    /// An empty store with one member, node 1.
    pub fn new() -> Arc<LocalService> {
        Arc::new(LocalService {
            replica: Mutex::new(Replica {
                store: Store::new(),
                last_index: 0,
            }),
            applied: Notify::new(),
            write_failure: std::sync::Mutex::new(None),
            writes_applied: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            members: std::sync::Mutex::new(vec![member(1, "leader")]),
            changes_in_progress: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Makes every later write fail with `error` (or succeed again with `None`).
    pub fn fail_writes(&self, error: Option<ServiceError>) {
        *self
            .write_failure
            .lock()
            .expect("no test panics holding it") = error;
    }

    /// Commands applied so far.
    pub fn writes(&self) -> u64 {
        self.writes_applied.load(Ordering::SeqCst)
    }

    /// The store's current revision.
    pub async fn revision(&self) -> u64 {
        self.replica.lock().await.store.revision()
    }

    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            members: self
                .members
                .lock()
                .expect("no test panics holding it")
                .clone(),
        }
    }
}

fn member(id: u64, role: &str) -> MemberStatus {
    MemberStatus {
        id,
        role: role.into(),
        peer_address: format!("127.0.0.1:{}", 7000 + id),
        client_address: format!("http://127.0.0.1:{}", 8000 + id),
        match_index: Some(5),
        commit_index: Some(5),
        applied_index: Some(5),
    }
}

#[async_trait]
impl ClusterService for LocalService {
    async fn write(&self, command: Command) -> Result<Response, ServiceError> {
        if let Some(error) = self.write_failure.lock().expect("no panics").clone() {
            return Err(error);
        }
        let mut replica = self.replica.lock().await;
        replica.last_index += 1;
        let index = replica.last_index;
        let outcome = replica.store.apply(index, &command);
        self.writes_applied.fetch_add(1, Ordering::SeqCst);
        self.applied.notify_waiters();
        outcome.map_err(ServiceError::Rejected)
    }

    async fn get(&self, key: Bytes, _consistency: Consistency) -> Result<GetResult, ServiceError> {
        let replica = self.replica.lock().await;
        Ok(GetResult {
            item: replica.store.get(&key).cloned(),
            revision: replica.store.revision(),
        })
    }

    async fn range(
        &self,
        prefix: Bytes,
        limit: usize,
        _consistency: Consistency,
    ) -> Result<RangeResult, ServiceError> {
        let replica = self.replica.lock().await;
        let (items, more) = replica
            .store
            .range(&prefix, limit)
            .map_err(ServiceError::Rejected)?;
        Ok(RangeResult {
            items,
            more,
            revision: replica.store.revision(),
        })
    }

    async fn changes(
        &self,
        selector: KeySelector,
        from_revision: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, ServiceError> {
        self.changes_in_progress.fetch_add(1, Ordering::SeqCst);
        let _in_progress = InProgress(self.changes_in_progress.clone());
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a write between the look and the
            // wait still wakes us.
            let notified = self.applied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let events = self
                .replica
                .lock()
                .await
                .store
                .changes_since(from_revision, &selector, limit)
                .map_err(ServiceError::Rejected)?;
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn cluster(&self) -> Result<ClusterStatus, ServiceError> {
        Ok(self.status())
    }

    async fn add_member(&self, new_member: AddMember) -> Result<ClusterStatus, ServiceError> {
        let mut members = self.members.lock().expect("no panics");
        if members.iter().any(|existing| existing.id == new_member.id) {
            return Err(ServiceError::InvalidClusterRequest {
                detail: format!("id {} in use", new_member.id),
            });
        }
        let mut added = member(new_member.id, "learner");
        added.peer_address = new_member.peer_address;
        added.client_address = new_member.client_address;
        members.push(added);
        drop(members);
        Ok(self.status())
    }

    async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ServiceError> {
        let mut members = self.members.lock().expect("no panics");
        let before = members.len();
        members.retain(|existing| existing.id != id);
        if members.len() == before {
            return Err(ServiceError::InvalidClusterRequest {
                detail: format!("no member {id}"),
            });
        }
        drop(members);
        Ok(self.status())
    }

    fn metrics(&self) -> String {
        format!(
            "# TYPE understudy_writes_total counter\nunderstudy_writes_total {}\n",
            self.writes()
        )
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// A router over a fresh `LocalService` without a token.
pub fn setup() -> (Arc<LocalService>, Router) {
    let service = LocalService::new();
    let app = router(service.clone(), ApiOptions::default());
    (service, app)
}

/// Builds a request.
pub fn request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .expect("test requests are well-formed")
}

/// Sends a request and returns the status and the body parsed as JSON
/// (`Value::Null` for an empty body).
pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("in-memory bodies cannot fail");
    if body.is_empty() {
        return (status, Value::Null);
    }
    let json = serde_json::from_slice(&body).unwrap_or_else(|error| {
        panic!(
            "body is not JSON ({error}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, json)
}

/// Shorthand for a request without headers.
pub async fn call(app: &Router, method: Method, uri: &str, body: &str) -> (StatusCode, Value) {
    send(app, request(method, uri, body.to_owned())).await
}

/// Reads JSON lines from a streaming body until `count` lines arrived (bounded
/// by a deadline so a missing event fails the test instead of hanging it).
pub async fn read_lines(
    stream: &mut (impl futures::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    buffer: &mut Vec<u8>,
    count: usize,
) -> Vec<Value> {
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lines.len() < count {
        if let Some(end) = buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            lines.push(serde_json::from_slice(&line).expect("each line is JSON"));
            continue;
        }
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} lines arrived", lines.len()))
            .expect("the stream stays open")
            .expect("in-memory bodies cannot fail");
        buffer.extend_from_slice(&chunk);
    }
    lines
}
