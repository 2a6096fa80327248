//! Watch streams, compaction, cluster endpoints, health, metrics and auth.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use common::{call, read_lines, request, send, setup, LocalService};
use serde_json::{json, Value};
use tower::ServiceExt;
use understudy_api::{router, ApiOptions};
use understudy_types::limits::{API_WATCHES_MAX, API_WATCH_BATCH_EVENTS_MAX};

async fn open(app: &Router, uri: &str) -> Response {
    app.clone()
        .oneshot(request(Method::GET, uri, Body::empty()))
        .await
        .expect("the router is infallible")
}

fn revisions(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|line| {
            line["revision"]
                .as_u64()
                .expect("every event has a revision")
        })
        .collect()
}

#[tokio::test]
async fn watch_streams_history_then_live_changes_and_resumes() {
    let (_, app) = setup();
    call(&app, Method::PUT, "/v1/kv/w/a", "1").await;
    call(&app, Method::PUT, "/v1/kv/other", "x").await;
    call(&app, Method::PUT, "/v1/kv/w/b", "2").await;
    call(&app, Method::DELETE, "/v1/kv/w/a", "").await;

    let response = open(&app, "/v1/watch?prefix=w%2F&from_revision=1").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/x-ndjson");
    let mut stream = response.into_body().into_data_stream();
    let mut buffer = Vec::new();
    let history = read_lines(&mut stream, &mut buffer, 3).await;
    assert_eq!(
        history,
        vec![
            json!({"type": "put", "key": "w/a", "value": "1", "revision": 1,
                   "create_revision": 1, "mod_revision": 1, "version": 1}),
            json!({"type": "put", "key": "w/b", "value": "2", "revision": 3,
                   "create_revision": 3, "mod_revision": 3, "version": 1}),
            json!({"type": "delete", "key": "w/a", "revision": 4}),
        ]
    );
    // Live changes arrive on the open stream (the service wakes the waiting
    // `changes` call).
    call(&app, Method::PUT, "/v1/kv/w/c", "3").await;
    call(&app, Method::PUT, "/v1/kv/nope", "3").await;
    call(&app, Method::PUT, "/v1/kv/w/c", "4").await;
    let live = read_lines(&mut stream, &mut buffer, 2).await;
    assert_eq!(revisions(&live), vec![5, 7]);
    assert_eq!(live[1]["version"], 2);
    drop(stream);

    // Resuming from the last seen revision + 1 sees only later changes.
    call(&app, Method::PUT, "/v1/kv/w/d", "5").await;
    let resumed = open(&app, "/v1/watch?prefix=w/&from_revision=8").await;
    let mut stream = resumed.into_body().into_data_stream();
    let lines = read_lines(&mut stream, &mut Vec::new(), 1).await;
    assert_eq!(lines[0]["key"], "w/d");
    assert_eq!(lines[0]["revision"], 8);
}

#[tokio::test]
async fn watch_of_one_key_without_from_revision_sees_only_new_changes() {
    let (_, app) = setup();
    call(&app, Method::PUT, "/v1/kv/k", "old").await;
    call(&app, Method::PUT, "/v1/kv/k2", "other").await;
    let response = open(&app, "/v1/watch?key=k").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    call(&app, Method::PUT, "/v1/kv/k2", "other").await;
    call(&app, Method::PUT, "/v1/kv/k", "new").await;
    let lines = read_lines(&mut stream, &mut Vec::new(), 1).await;
    assert_eq!(lines[0]["value"], "new");
    assert_eq!(lines[0]["revision"], 4);
}

#[tokio::test]
async fn watch_crosses_batch_boundaries_inside_transactions_exactly_once() {
    let (_, app) = setup();
    // Transactions of 100 puts: batches of API_WATCH_BATCH_EVENTS_MAX events
    // cut revisions in the middle, which must neither lose nor repeat events.
    let transactions = 8;
    for transaction in 0..transactions {
        let puts: Vec<Value> = (0..100)
            .map(|index| json!({"op": "put", "key": format!("t/{index:03}"), "value": format!("{transaction}")}))
            .collect();
        let body = json!({ "success": puts }).to_string();
        assert_eq!(
            call(&app, Method::POST, "/v1/txn", &body).await.0,
            StatusCode::OK
        );
    }
    assert!(transactions * 100 > API_WATCH_BATCH_EVENTS_MAX);
    let response = open(&app, "/v1/watch?prefix=t/&from_revision=0").await;
    let mut stream = response.into_body().into_data_stream();
    let lines = read_lines(&mut stream, &mut Vec::new(), transactions * 100).await;
    for (position, line) in lines.iter().enumerate() {
        let expected_revision = (position / 100 + 1) as u64;
        let expected_key = format!("t/{:03}", position % 100);
        assert_eq!(line["revision"], expected_revision, "line {position}");
        assert_eq!(line["key"], expected_key.as_str(), "line {position}");
    }
}

#[tokio::test]
async fn watch_errors_before_the_stream_are_statuses() {
    let (_, app) = setup();
    for value in ["1", "2", "3"] {
        call(&app, Method::PUT, "/v1/kv/k", value).await;
    }
    call(&app, Method::POST, "/v1/compact", r#"{"revision": 3}"#).await;
    let (status, body) = call(&app, Method::GET, "/v1/watch?key=k&from_revision=1", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "compacted");
    assert_eq!(body["compact_revision"], 3);
    for uri in [
        "/v1/watch",
        "/v1/watch?key=k&prefix=k",
        "/v1/watch?key=k&from_revision=x",
        "/v1/watch?key=k&since=1",
    ] {
        assert_eq!(
            call(&app, Method::GET, uri, "").await.0,
            StatusCode::BAD_REQUEST,
            "{uri}"
        );
    }
    // Still answered from the retained history after compaction.
    let response = open(&app, "/v1/watch?key=k&from_revision=3").await;
    let lines = read_lines(
        &mut response.into_body().into_data_stream(),
        &mut Vec::new(),
        1,
    )
    .await;
    assert_eq!(lines[0]["value"], "3");
}

#[tokio::test]
async fn concurrent_watches_are_bounded() {
    let (_, app) = setup();
    let mut open_watches = Vec::new();
    for _ in 0..API_WATCHES_MAX {
        let response = open(&app, "/v1/watch?prefix=").await;
        assert_eq!(response.status(), StatusCode::OK);
        open_watches.push(response);
    }
    let (status, body) = call(&app, Method::GET, "/v1/watch?prefix=", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "unavailable");
    // Closing one stream frees its slot.
    drop(open_watches.pop());
    assert_eq!(
        open(&app, "/v1/watch?prefix=").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn cluster_status_and_membership() {
    let (_, app) = setup();
    let (status, body) = call(&app, Method::GET, "/v1/cluster", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["leader_id"], 1);
    assert_eq!(body["term"], 3);
    let member = &body["members"][0];
    for field in [
        "id",
        "role",
        "peer_address",
        "client_address",
        "match_index",
        "commit_index",
        "applied_index",
    ] {
        assert!(member.get(field).is_some(), "member lacks {field}");
    }
    let add = json!({"id": 4, "peer_address": "127.0.0.1:7004",
                     "client_address": "http://127.0.0.1:8004"})
    .to_string();
    let (status, body) = call(&app, Method::POST, "/v1/cluster/members", &add).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["members"][1]["id"], 4);
    let (status, body) = call(&app, Method::POST, "/v1/cluster/members", &add).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_cluster_request");
    for bad in [
        r#"{"id": 5}"#,
        r#"{"id": 0, "peer_address": "a", "client_address": "b"}"#,
        r#"{"id": 5, "peer_address": "a", "client_address": "b", "x": 1}"#,
        r#"{"id": 5, "peer_address": "not an address", "client_address": "http://h:1"}"#,
        r#"{"id": 5, "peer_address": "h:0", "client_address": "http://h:1"}"#,
        r#"{"id": 5, "peer_address": "h:1", "client_address": "h:1"}"#,
        r#"{"id": 5, "peer_address": "h:1", "client_address": "http://h:x"}"#,
        r#"{"id": 5, "peer_address": "h:1", "client_address": "http://:1"}"#,
    ] {
        assert_eq!(
            call(&app, Method::POST, "/v1/cluster/members", bad).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    assert_eq!(
        call(&app, Method::DELETE, "/v1/cluster/members/4", "")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::DELETE, "/v1/cluster/members/4", "")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&app, Method::DELETE, "/v1/cluster/members/four", "")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn healthz_and_metrics() {
    let (service, app) = setup();
    assert_eq!(
        call(&app, Method::GET, "/healthz", "").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    service.healthy.store(false, Ordering::SeqCst);
    assert_eq!(
        call(&app, Method::GET, "/healthz", "").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    call(&app, Method::PUT, "/v1/kv/k", "v").await;
    let response = open(&app, "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("in memory");
    assert!(String::from_utf8_lossy(&text).contains("understudy_writes_total 1\n"));
}

fn authorized(uri: &str, authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(Method::GET).uri(uri);
    if let Some(value) = authorization {
        builder = builder.header(AUTHORIZATION, value);
    }
    builder.body(Body::empty()).expect("well-formed")
}

#[tokio::test]
async fn bearer_token_guards_everything_but_healthz() {
    let service = LocalService::new();
    let options = ApiOptions {
        client_token: Some("s3cret-token".into()),
    };
    let app = router(service.clone() as Arc<_>, options);
    for uri in [
        "/v1/kv/k",
        "/v1/kv?prefix=",
        "/v1/cluster",
        "/metrics",
        "/v1/watch?key=k",
    ] {
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("s3cret-token"),
            Some("Bearer s3cret-token2"),
            Some("Bearer  s3cret-token"),
        ] {
            let (status, body) = send(&app, authorized(uri, authorization)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {authorization:?}");
            assert_eq!(body["error"], "unauthorized");
        }
        // The scheme name is case-insensitive (RFC 7235). (`send` reads a
        // whole JSON body: the metrics are not JSON and a watch never ends.)
        if uri.starts_with("/v1/kv") || uri.starts_with("/v1/cluster") {
            let (status, _) = send(&app, authorized(uri, Some("bearer s3cret-token"))).await;
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}");
        }
    }
    let put = Request::builder()
        .method(Method::PUT)
        .uri("/v1/kv/k")
        .body(Body::from("v"))
        .expect("well-formed");
    assert_eq!(send(&app, put).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(service.writes(), 0, "an unauthorized write changes nothing");
    let (status, _) = send(&app, authorized("/v1/kv/k", Some("Bearer s3cret-token"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, authorized("/v1/cluster", Some("Bearer s3cret-token"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        send(&app, authorized("/healthz", None)).await.0,
        StatusCode::OK
    );
}
