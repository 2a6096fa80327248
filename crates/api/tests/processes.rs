//! The `/v1/processes` endpoints over a real socket: shapes, status codes,
//! headers, limits, long-polls, error mapping, and 503 without a process service.

mod common;
mod process_fake;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::LocalService;
use process_fake::{serve, serve_processes, FakeProcesses, Node, Server};
use serde_json::{json, Value};
use understudy_api::process_service::ProcessError;
use understudy_api::service::ServiceError;
use understudy_api::ApiOptions;
use understudy_kv::{KvError, RequestId};
use understudy_types::limits::{
    GUEST_ARGS_ENV_ENTRIES_MAX, GUEST_IO_BYTES_MAX, GUEST_MODULE_BYTES_MAX,
};

/// The smallest valid WebAssembly module: magic and version.
const MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// Sends a request; the status and the body as JSON (`Null` when empty).
async fn json_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("the body arrives");
    if body.is_empty() {
        return (status, Value::Null);
    }
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)));
    (status, json)
}

/// Asserts a JSON error answer: its status and `error` code, and a detail.
async fn assert_error(request: reqwest::RequestBuilder, status: u16, code: &str) -> Value {
    let (answered, body) = json_of(request).await;
    assert_eq!(
        (answered, body["error"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(body["detail"].is_string(), "{body}");
    body
}

/// An output read: the bytes, `X-Next-Offset` and `X-Process-Exited`.
async fn read_output(server: &Server, path: &str) -> (Bytes, u64, bool) {
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200, "{path}");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("ASCII header")
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/octet-stream");
    let next_offset = header("x-next-offset").parse().expect("a decimal offset");
    let exited = match header("x-process-exited").as_str() {
        "true" => true,
        "false" => false,
        other => panic!("X-Process-Exited: {other}"),
    };
    (response.bytes().await.expect("body"), next_offset, exited)
}

#[tokio::test]
async fn spawn_status_list_events_and_delete() {
    let (processes, server) = serve_processes().await;
    let query = "name=totals&arg=totals&arg=--verbose+now&env=MODE=a%3Db&env=EMPTY=";
    let (status, body) = json_of(server.spawn(query, MODULE)).await;
    assert_eq!(
        (status, body),
        (
            201,
            json!({"pid": 1, "primary": 1, "backup": 2, "epoch": 1})
        )
    );
    let received = processes.lock().spawns[0].clone();
    assert_eq!(received.name, "totals");
    assert_eq!(received.module, Bytes::from_static(MODULE));
    assert_eq!(received.args, ["totals", "--verbose now"]);
    let env = [
        ("MODE".into(), "a=b".into()),
        ("EMPTY".into(), String::new()),
    ];
    assert_eq!(received.env, env);
    assert!(!received.unpaired && received.request_id.is_none());

    let (status, body) = json_of(server.spawn("name=solo&unpaired=true", MODULE)).await;
    assert_eq!(
        (status, body),
        (
            201,
            json!({"pid": 2, "primary": 1, "backup": null, "epoch": 1})
        )
    );
    assert!(processes.lock().spawns[1].unpaired);

    let expected = json!({"pid": 1, "name": "totals", "state": "running", "primary": 1,
        "backup": 2, "backup_state": "caught_up", "epoch": 1, "logged_lsn": 0,
        "acked_lsn": 0, "checkpoint_lsn": 0, "stdout_offset": 0, "exit_code": null,
        "recovery_mode": "checkpoint"});
    let get = |path: &str| server.client.get(server.url(path));
    assert_eq!(
        json_of(get("/v1/processes/1")).await,
        (200, expected.clone())
    );
    let (status, list) = json_of(get("/v1/processes")).await;
    assert_eq!(status, 200);
    assert_eq!(list["processes"].as_array().map(Vec::len), Some(2));
    assert_eq!(list["processes"][0], expected);
    assert_eq!(list["processes"][1]["name"], "solo");
    assert_eq!(
        json_of(get("/v1/processes/1/events")).await,
        (
            200,
            json!({"events": [{"at_unix_ms": 1_700_000_000_000u64, "kind": "birth",
                "epoch": 1, "detail": "born on node 1"}]})
        )
    );

    let delete = server.client.delete(server.url("/v1/processes/1"));
    assert_eq!(
        json_of(delete).await,
        (200, json!({"pid": 1, "deleted": true}))
    );
    assert_error(get("/v1/processes/1"), 404, "not_found").await;
    let delete_again = server.client.delete(server.url("/v1/processes/1"));
    assert_error(delete_again, 404, "not_found").await;
}

#[tokio::test]
async fn a_taken_name_is_409_with_the_pid_unless_the_same_key_repeats() {
    let (processes, server) = serve_processes().await;
    let keyed = |key: &str| {
        server
            .spawn("name=job", MODULE)
            .header("Idempotency-Key", key)
    };
    let (status, first) = json_of(keyed("client-7:1")).await;
    assert_eq!(status, 201);
    // A retry with the same key gets the first answer, not a conflict.
    assert_eq!(json_of(keyed("client-7:1")).await, (201, first));
    let received = processes.lock().spawns[0].request_id.clone();
    let expected = RequestId {
        client_id: Bytes::from_static(b"client-7"),
        sequence: 1,
    };
    assert_eq!(received, Some(expected));
    let conflict = assert_error(keyed("client-7:2"), 409, "name_in_use").await;
    assert_eq!(conflict["pid"], 1);
    let conflict = assert_error(server.spawn("name=job", MODULE), 409, "name_in_use").await;
    assert_eq!(conflict["pid"], 1);
    // The KV API's parser: a malformed key is refused before the service.
    let spawns_before = processes.lock().spawns.len();
    for bad in ["client", "c:0", ":1", "c:x"] {
        assert_error(keyed(bad), 400, "invalid_idempotency_key").await;
    }
    assert_eq!(processes.lock().spawns.len(), spawns_before);
}

#[tokio::test]
async fn spawn_input_is_checked_before_the_service_sees_it() {
    let (processes, server) = serve_processes().await;
    let without_type = server
        .client
        .post(server.url("/v1/processes?name=a"))
        .body(MODULE);
    let body = assert_error(without_type, 400, "bad_request").await;
    assert!(body["detail"]
        .as_str()
        .unwrap_or("")
        .contains("application/wasm"));
    let wrong_type = server
        .client
        .post(server.url("/v1/processes?name=a"))
        .header("Content-Type", "application/octet-stream")
        .body(MODULE);
    assert_error(wrong_type, 400, "bad_request").await;
    let long_name = format!("name={}", "n".repeat(129));
    for query in [
        "",
        "name=",
        "name=has+space",
        long_name.as_str(),
        "name=a&env=NOEQUALS",
        "name=a&unpaired=yes",
        "name=a&nmae=b",
        "name=a&name=b",
    ] {
        assert_error(server.spawn(query, MODULE), 400, "bad_request").await;
    }
    assert_error(server.spawn("name=a", Vec::new()), 400, "invalid_module").await;
    let too_many = format!("name=a{}", "&arg=x".repeat(GUEST_ARGS_ENV_ENTRIES_MAX + 1));
    assert_error(server.spawn(&too_many, MODULE), 413, "too_large").await;
    assert!(processes.lock().spawns.is_empty());
    // The same query with one argument fewer is within the limit.
    let at_limit = format!("name=a{}", "&arg=x".repeat(GUEST_ARGS_ENV_ENTRIES_MAX));
    assert_eq!(json_of(server.spawn(&at_limit, MODULE)).await.0, 201);
}

#[tokio::test]
async fn a_module_over_64_mib_is_413_and_one_at_the_limit_is_accepted() {
    let (processes, server) = serve_processes().await;
    let over = vec![0u8; GUEST_MODULE_BYTES_MAX + 1];
    assert_error(server.spawn("name=big", over.clone()), 413, "too_large").await;
    // Without a Content-Length the bytes are counted as they arrive.
    let chunks: Vec<Result<Bytes, std::io::Error>> = over
        .chunks(1024 * 1024)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    assert_error(server.spawn("name=big", streamed), 413, "too_large").await;
    assert!(processes.lock().spawns.is_empty());
    let at_limit = vec![0u8; GUEST_MODULE_BYTES_MAX];
    assert_eq!(json_of(server.spawn("name=big", at_limit)).await.0, 201);
    assert_eq!(
        processes.lock().spawns[0].module.len(),
        GUEST_MODULE_BYTES_MAX
    );
}

#[tokio::test]
async fn stdin_writes_answer_offsets_and_feed_output_streams() {
    let (processes, server) = serve_processes().await;
    assert_eq!(json_of(server.spawn("name=echo", MODULE)).await.0, 201);
    let stdin = |query: &str, body: &'static str| {
        server
            .client
            .post(server.url(&format!("/v1/processes/1/stdin{query}")))
            .header("Content-Type", "text/plain")
            .body(body)
    };
    assert_eq!(
        json_of(stdin("", "hello ")).await,
        (200, json!({"offset": 6}))
    );
    let keyed = || stdin("", "world\n").header("Idempotency-Key", "writer:1");
    assert_eq!(json_of(keyed()).await, (200, json!({"offset": 12})));
    assert_eq!(json_of(keyed()).await, (200, json!({"offset": 12})));
    let write = processes.lock().stdin_writes[1].clone();
    assert_eq!(write.pid, 1);
    assert_eq!(write.bytes, Bytes::from_static(b"world\n"));
    assert!(!write.eof);
    assert_eq!(write.request_id.map(|id| id.sequence), Some(1));

    assert_eq!(
        read_output(&server, "/v1/processes/1/stdout").await,
        (Bytes::from_static(b"hello world\n"), 12, false)
    );
    assert_eq!(
        read_output(&server, "/v1/processes/1/stdout?from=6").await,
        (Bytes::from_static(b"world\n"), 12, false)
    );
    assert_eq!(
        read_output(&server, "/v1/processes/1/stderr").await,
        (Bytes::from_static(b"6 bytes\n6 bytes\n"), 16, false)
    );

    assert_eq!(
        json_of(stdin("?eof=true", "")).await,
        (200, json!({"offset": 12}))
    );
    assert!(processes.lock().stdin_writes[3].eof);
    assert_eq!(
        read_output(&server, "/v1/processes/1/stdout?from=12&wait=5").await,
        (Bytes::new(), 12, true)
    );
    // The service's own refusal (stdin closed) is a 400 bad_request.
    assert_error(stdin("", "late"), 400, "bad_request").await;
}

#[tokio::test]
async fn stdin_input_is_checked_before_the_service_sees_it() {
    let (processes, server) = serve_processes().await;
    assert_eq!(json_of(server.spawn("name=echo", MODULE)).await.0, 201);
    let post = |path: &str| server.client.post(server.url(path));
    let over = vec![b'x'; GUEST_IO_BYTES_MAX + 1];
    assert_error(post("/v1/processes/1/stdin").body(over), 413, "too_large").await;
    assert_error(post("/v1/processes/1/stdin?eof=1"), 400, "bad_request").await;
    assert_error(post("/v1/processes/1/stdin?of=true"), 400, "bad_request").await;
    let bad_key = post("/v1/processes/1/stdin").header("Idempotency-Key", "nosequence");
    assert_error(bad_key, 400, "invalid_idempotency_key").await;
    assert!(processes.lock().stdin_writes.is_empty());
    let at_limit = vec![b'x'; GUEST_IO_BYTES_MAX];
    let (status, body) = json_of(post("/v1/processes/1/stdin").body(at_limit)).await;
    assert_eq!((status, body), (200, json!({"offset": GUEST_IO_BYTES_MAX})));
    assert_error(post("/v1/processes/9/stdin").body("x"), 404, "not_found").await;
}

#[tokio::test]
async fn a_long_poll_returns_when_output_arrives() {
    let (processes, server) = serve_processes().await;
    assert_eq!(json_of(server.spawn("name=echo", MODULE)).await.0, 201);
    let client = server.client.clone();
    let url = server.url("/v1/processes/1/stdout?from=0&wait=60");
    let reader = tokio::spawn(async move {
        let response = client.get(url).send().await.expect("answered");
        let next_offset = response.headers()["x-next-offset"]
            .to_str()
            .ok()
            .map(str::to_owned);
        (next_offset, response.bytes().await.expect("body"))
    });
    let mut waiting = processes.readers_waiting.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        waiting.wait_for(|count| *count == 1),
    )
    .await
    .expect("the read waits for output")
    .expect("the fake lives");
    let stdin = server
        .client
        .post(server.url("/v1/processes/1/stdin"))
        .body("ping");
    assert_eq!(json_of(stdin).await.0, 200);
    let (next_offset, bytes) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the long-poll ends once output arrives")
        .expect("the reader does not panic");
    assert_eq!(
        (next_offset.as_deref(), &bytes[..]),
        (Some("4"), &b"ping"[..])
    );
    assert_eq!(processes.lock().waits, [Duration::from_secs(60)]);
}

#[tokio::test]
async fn output_read_parameters_are_parsed_strictly() {
    let (processes, server) = serve_processes().await;
    assert_eq!(json_of(server.spawn("name=quiet", MODULE)).await.0, 201);
    // A fractional wait reaches the service as that many seconds; with no
    // output coming the read ends empty when it runs out.
    assert_eq!(
        read_output(&server, "/v1/processes/1/stderr?wait=0.05").await,
        (Bytes::new(), 0, false)
    );
    read_output(&server, "/v1/processes/1/stdout").await;
    assert_eq!(
        processes.lock().waits,
        [Duration::from_millis(50), Duration::ZERO]
    );
    let get = |path: &str| server.client.get(server.url(path));
    for query in [
        "wait=61",
        "wait=60.5",
        "wait=-1",
        "wait=1e1",
        "wait=.5",
        "wait=soon",
        "from=-1",
        "from=x",
        "since=0",
        "wait=1&wait=2",
    ] {
        let path = format!("/v1/processes/1/stdout?{query}");
        assert_error(get(&path), 400, "bad_request").await;
    }
    assert_eq!(processes.lock().waits.len(), 2);
}

#[tokio::test]
async fn pids_must_be_positive_integers_and_unknown_ones_are_404() {
    let (_, server) = serve_processes().await;
    let get = |path: &str| server.client.get(server.url(path));
    for pid in ["0", "-1", "abc", "1.5", "18446744073709551616", "%31"] {
        for suffix in ["", "/stdout", "/stderr", "/events"] {
            let path = format!("/v1/processes/{pid}{suffix}");
            assert_error(get(&path), 400, "bad_request").await;
        }
        let delete = server
            .client
            .delete(server.url(&format!("/v1/processes/{pid}")));
        assert_error(delete, 400, "bad_request").await;
    }
    for suffix in ["", "/stdout", "/stderr", "/events"] {
        let path = format!("/v1/processes/18446744073709551615{suffix}");
        assert_error(get(&path), 404, "not_found").await;
    }
    assert_error(get("/v1/processes/1/unknown"), 404, "not_found").await;
    assert_error(get("/v1/processes?all=true"), 400, "bad_request").await;
    let put = server.client.put(server.url("/v1/processes/1"));
    assert_error(put, 400, "method_not_allowed").await;
}

#[tokio::test]
async fn process_errors_map_onto_the_api_codes() {
    let (processes, server) = serve_processes().await;
    let detail = || "why".to_owned();
    let cases = [
        (ProcessError::NotFound { pid: 5 }, 404, "not_found"),
        (
            ProcessError::NameInUse {
                name: "n".into(),
                pid: 5,
            },
            409,
            "name_in_use",
        ),
        (
            ProcessError::InvalidModule { detail: detail() },
            400,
            "invalid_module",
        ),
        (
            ProcessError::BadRequest { detail: detail() },
            400,
            "bad_request",
        ),
        (
            ProcessError::TooLarge { detail: detail() },
            413,
            "too_large",
        ),
        (
            ProcessError::Unavailable { detail: detail() },
            503,
            "unavailable",
        ),
        (
            ProcessError::Service(ServiceError::Unavailable { detail: detail() }),
            503,
            "unavailable",
        ),
        (
            ProcessError::Service(ServiceError::Timeout { detail: detail() }),
            504,
            "timeout",
        ),
        (
            ProcessError::Service(ServiceError::Rejected(KvError::SessionExpired)),
            409,
            "session_expired",
        ),
    ];
    for (error, status, code) in cases {
        processes.fail_next(error.clone());
        let request = server.client.get(server.url("/v1/processes"));
        let body = assert_error(request, status, code).await;
        match error {
            ProcessError::NameInUse { pid, .. } => assert_eq!(body["pid"], pid),
            ProcessError::Service(ServiceError::Timeout { .. }) => {
                assert_eq!(body["outcome"], "unknown")
            }
            _ => {}
        }
    }
    // Each failure was consumed by exactly one request.
    assert_eq!(
        json_of(server.client.get(server.url("/v1/processes")))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn every_route_is_503_without_a_process_service() {
    let node = Node {
        kv: LocalService::new(),
        processes: None,
    };
    let server = serve(node, ApiOptions::default()).await;
    let client = &server.client;
    let requests = [
        server.spawn("name=a", MODULE),
        client.get(server.url("/v1/processes")),
        client.get(server.url("/v1/processes/1")),
        client.delete(server.url("/v1/processes/1")),
        client.post(server.url("/v1/processes/1/stdin")).body("x"),
        client.get(server.url("/v1/processes/1/stdout?wait=1")),
        client.get(server.url("/v1/processes/1/stderr")),
        client.get(server.url("/v1/processes/1/events")),
    ];
    for request in requests {
        assert_error(request, 503, "unavailable").await;
    }
    // The KV routes of the same node still work.
    let put = client.put(server.url("/v1/kv/k")).body("v");
    assert_eq!(json_of(put).await, (200, json!({"revision": 1})));
}

#[tokio::test]
async fn process_routes_need_the_bearer_token() {
    let processes = Arc::new(FakeProcesses::default());
    let node = Node {
        kv: LocalService::new(),
        processes: Some(processes.clone()),
    };
    let options = ApiOptions {
        client_token: Some("s3cret".into()),
    };
    let server = serve(node, options).await;
    let client = &server.client;
    let unauthenticated = [
        server.spawn("name=a", MODULE),
        client.get(server.url("/v1/processes")),
        client.get(server.url("/v1/processes/1/stdout")),
        client.post(server.url("/v1/processes/1/stdin")).body("x"),
        client.delete(server.url("/v1/processes/1")),
    ];
    for request in unauthenticated {
        assert_error(request, 401, "unauthorized").await;
    }
    assert!(processes.lock().spawns.is_empty());
    let spawn = server.spawn("name=a", MODULE).bearer_auth("s3cret");
    assert_eq!(json_of(spawn).await.0, 201);
}
