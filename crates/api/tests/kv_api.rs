//! The KV endpoints: success shapes, error codes, idempotency, limits.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{call, request, send, setup};
use serde_json::json;
use understudy_api::service::ServiceError;
use understudy_types::limits::{
    API_JSON_BODY_BYTES_MAX, KV_KEY_BYTES_MAX, KV_TXN_OPERATIONS_MAX, KV_VALUE_BYTES_MAX,
};

fn with_idempotency_key(method: Method, uri: &str, body: &str, key: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("Idempotency-Key", key)
        .body(Body::from(body.to_owned()))
        .expect("well-formed")
}

#[tokio::test]
async fn put_get_delete_shapes() {
    let (_, app) = setup();
    assert_eq!(
        call(&app, Method::PUT, "/v1/kv/greeting", "hello").await,
        (StatusCode::OK, json!({"revision": 1}))
    );
    assert_eq!(
        call(&app, Method::PUT, "/v1/kv/greeting", "hi").await,
        (StatusCode::OK, json!({"revision": 2}))
    );
    let expected = json!({"key": "greeting", "value": "hi", "revision": 2,
        "create_revision": 1, "mod_revision": 2, "version": 2});
    assert_eq!(
        call(&app, Method::GET, "/v1/kv/greeting", "").await,
        (StatusCode::OK, expected.clone())
    );
    for consistency in ["serializable", "linearizable"] {
        let uri = format!("/v1/kv/greeting?consistency={consistency}");
        assert_eq!(call(&app, Method::GET, &uri, "").await.1, expected);
    }
    assert_eq!(
        call(&app, Method::DELETE, "/v1/kv/greeting", "").await,
        (StatusCode::OK, json!({"deleted": 1, "revision": 3}))
    );
    let (status, body) = call(&app, Method::GET, "/v1/kv/greeting", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert!(body["detail"].is_string());
    assert_eq!(
        call(&app, Method::DELETE, "/v1/kv/greeting", "").await,
        (StatusCode::OK, json!({"deleted": 0, "revision": 3}))
    );
}

#[tokio::test]
async fn binary_keys_and_values_use_base64_and_paths_are_bytes() {
    let (_, app) = setup();
    let put = request(Method::PUT, "/v1/kv/bin%FF%00", vec![0xffu8, 0x00, 0x41]);
    assert_eq!(send(&app, put).await.0, StatusCode::OK);
    let (status, body) = call(&app, Method::GET, "/v1/kv/bin%ff%00", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["key_base64"], "Ymlu/wA=");
    assert_eq!(body["value_base64"], "/wBB");
    assert!(body.get("value").is_none() && body.get("key").is_none());
    // Slashes, escaped or not, are part of the key.
    assert_eq!(
        call(&app, Method::PUT, "/v1/kv/a/b", "x").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/kv/a%2Fb", "").await.1["key"],
        "a/b"
    );
}

#[tokio::test]
async fn malformed_paths_and_queries_are_400_and_change_nothing() {
    let (service, app) = setup();
    for (method, uri) in [
        (Method::PUT, "/v1/kv/bad%zz"),
        (Method::PUT, "/v1/kv/"),
        (Method::DELETE, "/v1/kv/bad%4"),
        (Method::GET, "/v1/kv/k?consistency=eventual"),
        (Method::GET, "/v1/kv/k?consitency=serializable"),
    ] {
        let (status, body) = call(&app, method, uri, "v").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body["error"].is_string() && body["detail"].is_string());
    }
    assert_eq!(service.writes(), 0);
}

#[tokio::test]
async fn range_shapes_limits_and_errors() {
    let (_, app) = setup();
    for key in ["p/1", "p/2", "p/3", "q"] {
        call(&app, Method::PUT, &format!("/v1/kv/{key}"), key).await;
    }
    let (status, body) = call(&app, Method::GET, "/v1/kv?prefix=p%2F&limit=2", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"items": [
            {"key": "p/1", "value": "p/1", "create_revision": 1, "mod_revision": 1, "version": 1},
            {"key": "p/2", "value": "p/2", "create_revision": 2, "mod_revision": 2, "version": 1},
        ], "revision": 4, "more": true})
    );
    let (_, everything) = call(&app, Method::GET, "/v1/kv", "").await;
    assert_eq!(everything["items"].as_array().map(Vec::len), Some(4));
    assert_eq!(everything["more"], false);
    let (_, serializable) = call(
        &app,
        Method::GET,
        "/v1/kv?prefix=q&consistency=serializable",
        "",
    )
    .await;
    assert_eq!(serializable["items"][0]["key"], "q");
    for uri in [
        "/v1/kv?limit=0",
        "/v1/kv?limit=10001",
        "/v1/kv?limit=-1",
        "/v1/kv?limt=3",
    ] {
        let (status, body) = call(&app, Method::GET, uri, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body["error"].is_string());
    }
    assert_eq!(
        call(&app, Method::GET, "/v1/kv?limit=0", "").await.1["error"],
        "invalid_limit"
    );
}

#[tokio::test]
async fn idempotent_retries_apply_once() {
    let (service, app) = setup();
    let put = || with_idempotency_key(Method::PUT, "/v1/kv/counter", "1", "client:a:1");
    assert_eq!(
        send(&app, put()).await,
        (StatusCode::OK, json!({"revision": 1}))
    );
    // A retry returns the first result; the key's version shows one application.
    assert_eq!(
        send(&app, put()).await,
        (StatusCode::OK, json!({"revision": 1}))
    );
    assert_eq!(service.revision().await, 1);
    assert_eq!(
        call(&app, Method::GET, "/v1/kv/counter", "").await.1["version"],
        1
    );
    let delete = || with_idempotency_key(Method::DELETE, "/v1/kv/counter", "", "client:a:2");
    assert_eq!(
        send(&app, delete()).await,
        (StatusCode::OK, json!({"deleted": 1, "revision": 2}))
    );
    assert_eq!(
        send(&app, delete()).await,
        (StatusCode::OK, json!({"deleted": 1, "revision": 2}))
    );
    // A client whose session the store never saw: never a second application.
    let expired = with_idempotency_key(Method::PUT, "/v1/kv/counter", "2", "stranger:5");
    let (status, body) = send(&app, expired).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], "session_expired");
    assert_eq!(service.revision().await, 2);
}

#[tokio::test]
async fn malformed_idempotency_keys_are_400_and_change_nothing() {
    let (service, app) = setup();
    let long_client = format!("{}:1", "c".repeat(65));
    for key in [
        "nocolon",
        "c:0",
        "c:x",
        ":1",
        "c:",
        "c:-2",
        long_client.as_str(),
    ] {
        let (status, body) = send(
            &app,
            with_idempotency_key(Method::PUT, "/v1/kv/k", "v", key),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key}");
        assert_eq!(body["error"], "invalid_idempotency_key");
    }
    assert_eq!(service.writes(), 0);
}

#[tokio::test]
async fn service_errors_map_to_503_and_504() {
    let (service, app) = setup();
    service.fail_writes(Some(ServiceError::Unavailable {
        detail: "no leader".into(),
    }));
    let (status, body) = call(&app, Method::PUT, "/v1/kv/k", "v").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": "unavailable", "detail": "no leader"}));
    service.fail_writes(Some(ServiceError::Timeout {
        detail: "proposal timed out".into(),
    }));
    let (status, body) = call(&app, Method::DELETE, "/v1/kv/k", "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body,
        json!({"error": "timeout", "outcome": "unknown", "detail": "proposal timed out"})
    );
    let txn = json!({"success": [{"op": "put", "key": "k", "value": "v"}]}).to_string();
    assert_eq!(
        call(&app, Method::POST, "/v1/txn", &txn).await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
    service.fail_writes(None);
    assert_eq!(
        call(&app, Method::PUT, "/v1/kv/k", "v").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversized_bodies_and_keys_are_413_and_change_nothing() {
    let (service, app) = setup();
    let value = vec![b'v'; KV_VALUE_BYTES_MAX + 1];
    let (status, body) = send(&app, request(Method::PUT, "/v1/kv/k", value.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "too_large");
    // Without a Content-Length (a streamed body) the bytes are counted instead.
    let chunks = futures::stream::iter(
        value
            .chunks(64 * 1024)
            .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(chunk)))
            .collect::<Vec<_>>(),
    );
    let streamed = request(Method::PUT, "/v1/kv/k", Body::from_stream(chunks));
    assert_eq!(send(&app, streamed).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // A value exactly at the limit is fine.
    let at_limit = request(Method::PUT, "/v1/kv/k", vec![b'v'; KV_VALUE_BYTES_MAX]);
    assert_eq!(send(&app, at_limit).await.0, StatusCode::OK);
    let long_key = format!("/v1/kv/{}", "k".repeat(KV_KEY_BYTES_MAX + 1));
    assert_eq!(
        call(&app, Method::PUT, &long_key, "v").await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let huge_json = "x".repeat(API_JSON_BODY_BYTES_MAX as usize + 1);
    assert_eq!(
        call(&app, Method::POST, "/v1/txn", &huge_json).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        service.writes(),
        1,
        "only the value at the limit was written"
    );
}

#[tokio::test]
async fn txn_compare_and_swap_shapes() {
    let (_, app) = setup();
    call(&app, Method::PUT, "/v1/kv/lock", "free").await;
    let cas = json!({
        "compare": [{"key": "lock", "target": "value", "op": "==", "value": "free"},
                    {"key": "lock", "target": "version", "op": "<", "value": 2},
                    {"key": "lock", "target": "mod_revision", "op": "==", "value": 1}],
        "success": [{"op": "put", "key": "lock", "value": "taken"},
                    {"op": "put", "key_base64": "/w==", "value_base64": "/wA="},
                    {"op": "get", "key": "lock"},
                    {"op": "get", "key": "missing"},
                    {"op": "delete", "key": "missing"}],
        "failure": [{"op": "get", "key": "lock"}],
    })
    .to_string();
    let (status, body) = call(&app, Method::POST, "/v1/txn", &cas).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"succeeded": true, "revision": 2, "results": [
            {"op": "put"}, {"op": "put"},
            {"op": "get", "item": {"key": "lock", "value": "taken", "create_revision": 1,
                                   "mod_revision": 2, "version": 2}},
            {"op": "get", "item": null},
            {"op": "delete", "deleted": 0},
        ]})
    );
    let binary = call(&app, Method::GET, "/v1/kv/%FF", "").await.1;
    assert_eq!(binary["value_base64"], "/wA=");
    // The same transaction again: the compares fail, the failure branch runs.
    let (status, body) = call(&app, Method::POST, "/v1/txn", &cas).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["succeeded"], false);
    assert_eq!(body["revision"], 2);
    assert_eq!(body["results"][0]["item"]["value"], "taken");
    // A missing key matches no value compare, not even `!=`.
    let missing =
        json!({"compare": [{"key": "nope", "target": "value", "op": "!=", "value": "x"}]});
    let (_, body) = call(&app, Method::POST, "/v1/txn", &missing.to_string()).await;
    assert_eq!(
        body,
        json!({"succeeded": false, "results": [], "revision": 2})
    );
}

#[tokio::test]
async fn txn_idempotency_key_applies_once() {
    let (service, app) = setup();
    let txn = json!({"success": [{"op": "put", "key": "k", "value": "v"}]}).to_string();
    let first = send(
        &app,
        with_idempotency_key(Method::POST, "/v1/txn", &txn, "t:1"),
    )
    .await;
    let retry = send(
        &app,
        with_idempotency_key(Method::POST, "/v1/txn", &txn, "t:1"),
    )
    .await;
    assert_eq!(first, retry);
    assert_eq!(first.1["revision"], 1);
    assert_eq!(service.revision().await, 1);
}

#[tokio::test]
async fn malformed_txns_are_400_and_change_nothing() {
    let (service, app) = setup();
    let cases = [
        "{not json",
        r#"{"success": [{"op": "frobnicate", "key": "k"}]}"#,
        r#"{"success": [{"op": "put", "key": "k"}]}"#,
        r#"{"success": [{"op": "put", "value": "v"}]}"#,
        r#"{"success": [{"op": "get", "key": "k", "value": "v"}]}"#,
        r#"{"success": [{"op": "put", "key": "k", "key_base64": "aw==", "value": "v"}]}"#,
        r#"{"success": [{"op": "put", "key_base64": "!!", "value": "v"}]}"#,
        r#"{"success": [{"op": "put", "key": "", "value": "v"}]}"#,
        r#"{"success": [], "sucess": []}"#,
        r#"{"success": [{"op": "put", "key": "k", "value": "v", "lease": 5}]}"#,
        r#"{"compare": [{"key": "k", "target": "value", "op": "==", "value": 3}]}"#,
        r#"{"compare": [{"key": "k", "target": "version", "op": "==", "value": "3"}]}"#,
        r#"{"compare": [{"key": "k", "target": "version", "op": "==", "value": -1}]}"#,
        r#"{"compare": [{"key": "k", "target": "lease", "op": "==", "value": 3}]}"#,
        r#"{"compare": [{"key": "k", "target": "version", "op": ">=", "value": 3}]}"#,
        r#"[]"#,
    ];
    for case in cases {
        let (status, body) = call(&app, Method::POST, "/v1/txn", case).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
        assert!(
            body["error"].is_string() && body["detail"].is_string(),
            "{case}"
        );
    }
    let too_many: Vec<_> = (0..=KV_TXN_OPERATIONS_MAX)
        .map(|_| json!({"op": "get", "key": "k"}))
        .collect();
    let body = json!({ "success": too_many }).to_string();
    assert_eq!(
        call(&app, Method::POST, "/v1/txn", &body).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(service.writes(), 0);
}

#[tokio::test]
async fn compact_shapes_and_errors() {
    let (_, app) = setup();
    for value in ["1", "2", "3"] {
        call(&app, Method::PUT, "/v1/kv/k", value).await;
    }
    assert_eq!(
        call(&app, Method::POST, "/v1/compact", r#"{"revision": 2}"#).await,
        (StatusCode::OK, json!({"compact_revision": 2}))
    );
    let (status, body) = call(&app, Method::POST, "/v1/compact", r#"{"revision": 9}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_revision");
    for bad in [
        r#"{"revision": "2"}"#,
        r#"{}"#,
        r#"{"revision": 2, "x": 1}"#,
    ] {
        assert_eq!(
            call(&app, Method::POST, "/v1/compact", bad).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let (_, app) = setup();
    let (status, body) = call(&app, Method::GET, "/v2/kv/k", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    // Not 405: the KV endpoints' status codes are a closed list.
    for (method, path) in [
        (Method::POST, "/v1/kv/k"),
        (Method::PATCH, "/v1/kv/k"),
        (Method::POST, "/v1/kv"),
        (Method::GET, "/v1/txn"),
        (Method::GET, "/v1/compact"),
        (Method::POST, "/v1/watch"),
    ] {
        let (status, body) = call(&app, method.clone(), path, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(body["error"], "method_not_allowed");
    }
}

#[tokio::test]
async fn txn_whose_command_exceeds_the_entry_limit_is_413() {
    let (service, app) = setup();
    // Five values at the value limit: the JSON fits its limit, but the command
    // would not fit one Raft entry.
    let value = "v".repeat(KV_VALUE_BYTES_MAX);
    let puts: Vec<_> = (0..5)
        .map(|index| json!({"op": "put", "key": format!("k{index}"), "value": value}))
        .collect();
    let body = json!({ "success": puts }).to_string();
    assert!(body.len() as u64 <= API_JSON_BODY_BYTES_MAX);
    let (status, body) = call(&app, Method::POST, "/v1/txn", &body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "too_large");
    assert_eq!(service.writes(), 0);
}

#[tokio::test]
async fn unknown_query_parameters_on_writes_are_refused_and_change_nothing() {
    let (service, app) = setup();
    for (method, path, body) in [
        (Method::PUT, "/v1/kv/k?foo=1", "v"),
        (Method::DELETE, "/v1/kv/k?foo=1", ""),
        (
            Method::POST,
            "/v1/txn?foo=1",
            r#"{"compare":[],"success":[],"failure":[]}"#,
        ),
        (Method::POST, "/v1/compact?foo=1", r#"{"revision":0}"#),
    ] {
        let (status, answer) = call(&app, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {answer}");
    }
    assert_eq!(service.writes(), 0, "nothing reached the log");
}

#[tokio::test]
async fn over_long_keys_are_413_on_reads_too() {
    let (_, app) = setup();
    let long = "k".repeat(KV_KEY_BYTES_MAX + 1);
    for path in [
        format!("/v1/kv/{long}"),
        format!("/v1/kv?prefix={long}"),
        format!("/v1/watch?key={long}"),
    ] {
        let (status, body) = call(&app, Method::GET, &path, "").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["error"], "too_large");
    }
}
