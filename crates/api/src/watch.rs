//! `GET /v1/watch?key=K|prefix=P[&from_revision=R]`: a stream of JSON lines.
//!
//! The response is `application/x-ndjson`, one line per change in revision order
//! (key order within a revision):
//! `{"type":"put","key":…,"value":…,"revision":N,"create_revision":…,
//! "mod_revision":N,"version":…}` or `{"type":"delete","key":…,"revision":N}`
//! (`key_base64`/`value_base64` for bytes). Without `from_revision` the stream
//! starts after the revision current when the watch is opened. To resume after a
//! disconnect, reconnect with `from_revision` = last seen revision + 1 (a
//! transaction's events share one revision and are written together, but a
//! connection cut in the middle of them loses the rest on such a resume; resume
//! from the last revision itself and skip duplicates to be exact).
//!
//! Errors found before the stream starts (bad input, compacted history, an
//! unavailable node) are ordinary JSON error responses. An error after it started
//! ends the stream with one last line `{"type":"error","error":…,"detail":…}`.
//! Concurrent watches are bounded by `API_WATCHES_MAX`; beyond it, 503.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::OwnedSemaphorePermit;
use understudy_kv::{Event, EventKind, KeySelector};
use understudy_types::limits::API_WATCH_BATCH_EVENTS_MAX;

use crate::encoding::{insert_bytes, parse_query, parse_unsigned, query_value};
use crate::error::ApiError;
use crate::service::{ClusterService, Consistency};
use crate::ApiState;

/// How long one `changes` call waits for a new event before the stream asks
/// again. Only bounds how long an idle watch holds one service call open.
const WATCH_WAIT: Duration = Duration::from_secs(10);

/// Where a watch stream stands.
struct WatchCursor {
    service: Arc<dyn ClusterService>,
    selector: KeySelector,
    /// The revision the next `changes` call starts from.
    next_revision: u64,
    /// Events at `next_revision` already sent (a batch that filled up may have
    /// cut a revision's events in two).
    sent_at_next_revision: usize,
    /// Set after an error line: the stream then ends.
    finished: bool,
    /// Held for the stream's lifetime; dropping the stream frees the slot.
    _permit: OwnedSemaphorePermit,
}

/// `GET /v1/watch`.
pub(crate) async fn watch(State(state): State<ApiState>, uri: Uri) -> Result<Response, ApiError> {
    let parameters = parse_query(uri.query(), &["key", "prefix", "from_revision"])?;
    let selector = match (
        query_value(&parameters, "key"),
        query_value(&parameters, "prefix"),
    ) {
        (Some(key), None) => KeySelector::Exact(Bytes::copy_from_slice(key)),
        (None, Some(prefix)) => KeySelector::Prefix(Bytes::copy_from_slice(prefix)),
        _ => return Err(ApiError::bad_request("give exactly one of key or prefix")),
    };
    match &selector {
        KeySelector::Exact(key) | KeySelector::Prefix(key) => crate::kv::check_key_length(key)?,
    }
    let permit = state
        .watch_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Unavailable {
            detail: "too many concurrent watches on this node".into(),
        })?;
    let next_revision = match query_value(&parameters, "from_revision") {
        Some(raw) => parse_unsigned("from_revision", raw)?,
        None => current_revision(state.service.as_ref(), &selector).await? + 1,
    };
    let mut cursor = WatchCursor {
        service: state.service,
        selector,
        next_revision,
        sent_at_next_revision: 0,
        finished: false,
        _permit: permit,
    };
    // The first batch is fetched before answering, without waiting, so that a
    // compacted or invalid start is an ordinary error status, not a stream line.
    let first_chunk = cursor.next_chunk(Duration::ZERO).await?;
    let first = futures::stream::iter(first_chunk.map(Ok::<Bytes, std::convert::Infallible>));
    let rest = futures::stream::unfold(cursor, |mut cursor| async move {
        if cursor.finished {
            return None;
        }
        loop {
            match cursor.next_chunk(WATCH_WAIT).await {
                Ok(Some(chunk)) => return Some((Ok(chunk), cursor)),
                // Nothing happened during the wait: ask again.
                Ok(None) => continue,
                Err(error) => {
                    cursor.finished = true;
                    return Some((Ok(error_line(&error)), cursor));
                }
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(first, rest));
    Ok(([(CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

impl WatchCursor {
    /// Fetches the next batch and renders it as JSON lines; `None` when there
    /// was nothing new within `wait`.
    async fn next_chunk(&mut self, wait: Duration) -> Result<Option<Bytes>, ApiError> {
        let fetched = self
            .service
            .changes(
                self.selector.clone(),
                self.next_revision,
                API_WATCH_BATCH_EVENTS_MAX,
                wait,
            )
            .await?;
        let mut chunk = Vec::new();
        for event in fetched.iter().skip(self.sent_at_next_revision) {
            serde_json::to_writer(&mut chunk, &event_json(event))
                .expect("serialising a JSON value into a Vec cannot fail");
            chunk.push(b'\n');
        }
        self.advance(&fetched);
        Ok((!chunk.is_empty()).then(|| Bytes::from(chunk)))
    }

    /// Moves the cursor past `fetched` (which started at `next_revision`).
    fn advance(&mut self, fetched: &[Event]) {
        let Some(last) = fetched.last() else {
            return;
        };
        let last_revision = last.key_value.mod_revision;
        if fetched.len() < API_WATCH_BATCH_EVENTS_MAX {
            // A short batch holds every change up to now, so the whole of
            // `last_revision` has been sent.
            self.next_revision = last_revision + 1;
            self.sent_at_next_revision = 0;
            return;
        }
        // A full batch may have cut `last_revision` short: restart from it and
        // skip what was sent. One revision holds at most one transaction branch
        // (fewer events than a batch), so the cursor always moves forward.
        let sent_at_last = fetched
            .iter()
            .filter(|event| event.key_value.mod_revision == last_revision)
            .count();
        assert!(
            last_revision > self.next_revision || sent_at_last > self.sent_at_next_revision,
            "watch cursor at revision {} made no progress",
            self.next_revision
        );
        self.next_revision = last_revision;
        self.sent_at_next_revision = sent_at_last;
    }
}

/// The store revision now, read without a quorum round (a watch only needs a
/// starting point; it never misses a change after it).
async fn current_revision(
    service: &dyn ClusterService,
    selector: &KeySelector,
) -> Result<u64, ApiError> {
    Ok(match selector {
        KeySelector::Exact(key) => {
            service
                .get(key.clone(), Consistency::Serializable)
                .await?
                .revision
        }
        KeySelector::Prefix(prefix) => {
            service
                .range(prefix.clone(), 1, Consistency::Serializable)
                .await?
                .revision
        }
    })
}

fn event_json(event: &Event) -> Value {
    let item = &event.key_value;
    let mut object = Map::new();
    match event.kind {
        EventKind::Put => {
            object.insert("type".into(), "put".into());
            insert_bytes(&mut object, "key", &item.key);
            insert_bytes(&mut object, "value", &item.value);
            object.insert("revision".into(), item.mod_revision.into());
            object.insert("create_revision".into(), item.create_revision.into());
            object.insert("mod_revision".into(), item.mod_revision.into());
            object.insert("version".into(), item.version.into());
        }
        EventKind::Delete => {
            object.insert("type".into(), "delete".into());
            insert_bytes(&mut object, "key", &item.key);
            object.insert("revision".into(), item.mod_revision.into());
        }
    }
    Value::Object(object)
}

fn error_line(error: &ApiError) -> Bytes {
    let mut line = error.to_json();
    if let Value::Object(object) = &mut line {
        object.insert("type".into(), "error".into());
    }
    let mut encoded = line.to_string().into_bytes();
    encoded.push(b'\n');
    Bytes::from(encoded)
}
