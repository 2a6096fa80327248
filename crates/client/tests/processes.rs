//! The process-pair calls against a small fake of the `/v1/processes` API:
//! several "nodes" (HTTP servers) share one process table, and a node can be
//! told to fail stdin writes (503 before applying, 504 after applying) so that
//! the client's retries through other nodes can be checked.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use understudy_client::{
    Client, ClientError, ClientOptions, OutputStream, SpawnOptions, Spawned, StdinWritten,
};

/// One fake process: its stdin is echoed to stdout, with stdout released at
/// once.
#[derive(Default)]
struct FakeProcess {
    name: String,
    args: Vec<String>,
    env: Vec<String>,
    content_type: String,
    module: Vec<u8>,
    stdin: Vec<u8>,
    exited: bool,
}

/// What every fake node shares.
#[derive(Default)]
struct Table {
    processes: HashMap<u64, FakeProcess>,
    /// Idempotency key → the answer already given (status, body).
    answers: HashMap<String, (u16, String)>,
    /// Idempotency keys of every stdin request, in arrival order.
    stdin_keys: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared {
    table: Arc<Mutex<Table>>,
    /// Signalled whenever output is released or a process exits.
    output: Arc<Notify>,
}

/// One fake node: the shared table and its own stdin failure script.
#[derive(Clone)]
struct Node {
    shared: Shared,
    /// Status per stdin request to this node (503: refused before applying;
    /// 504: applied, then the answer is lost); 200 once the script is used up.
    stdin_script: Arc<Mutex<Vec<u16>>>,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .expect("no handler panics holding the table")
    }
}

fn json(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).expect("a valid status"),
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).unwrap());
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).unwrap()
}

/// `(name, value)` pairs of a query string, repeated names kept in order.
fn query_pairs(query: Option<String>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .map(|value| value.to_str().unwrap().to_string())
}

async fn spawn(
    State(node): State<Node>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    module: Bytes,
) -> Response {
    let mut table = node.shared.table();
    let key = idempotency_key(&headers);
    if let Some(answer) = key.as_ref().and_then(|key| table.answers.get(key)) {
        return json(answer.0, answer.1.clone());
    }
    let mut process = FakeProcess {
        module: module.to_vec(),
        content_type: headers
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_string())
            .unwrap_or_default(),
        ..FakeProcess::default()
    };
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "name" => process.name = value,
            "arg" => process.args.push(value),
            "env" => process.env.push(value),
            _ => {}
        }
    }
    let taken = table
        .processes
        .iter()
        .find(|(_, existing)| existing.name == process.name);
    if let Some((pid, _)) = taken {
        let body = format!(r#"{{"error":"name_in_use","detail":"taken","pid":{pid}}}"#);
        return json(409, body);
    }
    let pid = table.processes.len() as u64 + 1;
    table.processes.insert(pid, process);
    let body = format!(r#"{{"pid":{pid},"primary":1,"backup":2,"epoch":1}}"#);
    if let Some(key) = key {
        table.answers.insert(key, (201, body.clone()));
    }
    json(201, body)
}

fn status_json(pid: u64, process: &FakeProcess) -> String {
    serde_json::json!({
        "pid": pid, "name": process.name,
        "state": if process.exited { "exited" } else { "running" },
        "primary": 1, "backup": 2, "backup_state": "caught_up", "epoch": 1,
        "logged_lsn": 3, "acked_lsn": 3, "checkpoint_lsn": 0,
        "stdout_offset": process.stdin.len(),
        "exit_code": if process.exited { Some(0) } else { None },
        "recovery_mode": "checkpoint",
    })
    .to_string()
}

fn not_found(pid: u64) -> Response {
    json(
        404,
        format!(r#"{{"error":"not_found","detail":"no process {pid}"}}"#),
    )
}

async fn list(State(node): State<Node>) -> Response {
    let table = node.shared.table();
    let mut pids: Vec<&u64> = table.processes.keys().collect();
    pids.sort();
    let items: Vec<String> = pids
        .into_iter()
        .map(|pid| status_json(*pid, &table.processes[pid]))
        .collect();
    json(200, format!(r#"{{"processes":[{}]}}"#, items.join(",")))
}

async fn status(State(node): State<Node>, Path(pid): Path<u64>) -> Response {
    let table = node.shared.table();
    match table.processes.get(&pid) {
        Some(process) => json(200, status_json(pid, process)),
        None => not_found(pid),
    }
}

async fn delete(State(node): State<Node>, Path(pid): Path<u64>) -> Response {
    match node.shared.table().processes.remove(&pid) {
        Some(_) => json(200, format!(r#"{{"pid":{pid},"deleted":true}}"#)),
        None => not_found(pid),
    }
}

async fn events(State(node): State<Node>, Path(pid): Path<u64>) -> Response {
    if !node.shared.table().processes.contains_key(&pid) {
        return not_found(pid);
    }
    let body = r#"{"events":[{"at_unix_ms":5,"kind":"birth","epoch":1,"detail":"on node 1"},
        {"at_unix_ms":9,"kind":"promotion","epoch":2,"detail":"node 2 took over, replayed=4"}]}"#;
    json(200, body.to_string())
}

async fn stdin(
    State(node): State<Node>,
    Path(pid): Path<u64>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    bytes: Bytes,
) -> Response {
    let scripted = {
        let mut script = node.stdin_script.lock().unwrap();
        (!script.is_empty()).then(|| script.remove(0))
    };
    let key = idempotency_key(&headers).expect("stdin writes carry a key");
    let eof = query_pairs(query).contains(&("eof".to_string(), "true".to_string()));
    let mut table = node.shared.table();
    table.stdin_keys.push(key.clone());
    if scripted == Some(503) {
        return json(
            503,
            r#"{"error":"unavailable","detail":"failing over"}"#.into(),
        );
    }
    let answer = match table.answers.get(&key) {
        Some(answer) => answer.clone(),
        None => {
            let Some(process) = table.processes.get_mut(&pid) else {
                return not_found(pid);
            };
            process.stdin.extend_from_slice(&bytes);
            process.exited |= eof;
            let answer = (200, format!(r#"{{"offset":{}}}"#, process.stdin.len()));
            table.answers.insert(key, answer.clone());
            node.shared.output.notify_waiters();
            answer
        }
    };
    if scripted == Some(504) {
        return json(504, r#"{"error":"timeout","outcome":"unknown"}"#.into());
    }
    json(answer.0, answer.1)
}

/// Stdout is the stdin echoed; long-polls up to `wait` seconds for bytes.
async fn stdout(
    State(node): State<Node>,
    Path(pid): Path<u64>,
    RawQuery(query): RawQuery,
) -> Response {
    let mut from = 0usize;
    let mut wait = 0u64;
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "from" => from = value.parse().unwrap(),
            "wait" => wait = value.parse().unwrap(),
            _ => {}
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before looking, so a write in between is not missed.
        let notified = node.shared.output.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (bytes, exited) = {
            let table = node.shared.table();
            let Some(process) = table.processes.get(&pid) else {
                return not_found(pid);
            };
            let from = from.min(process.stdin.len());
            (process.stdin[from..].to_vec(), process.exited)
        };
        if !bytes.is_empty() || exited || tokio::time::Instant::now() >= deadline {
            let next = (from + bytes.len()).to_string();
            let headers = [
                ("x-next-offset", next),
                ("x-process-exited", exited.to_string()),
            ];
            return (StatusCode::OK, headers, bytes).into_response();
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn start_node(shared: &Shared, stdin_script: Vec<u16>) -> String {
    let node = Node {
        shared: shared.clone(),
        stdin_script: Arc::new(Mutex::new(stdin_script)),
    };
    let app = Router::new()
        .route("/v1/processes", post(spawn).get(list))
        .route("/v1/processes/{pid}", get(status).delete(delete))
        .route("/v1/processes/{pid}/events", get(events))
        .route("/v1/processes/{pid}/stdin", post(stdin))
        .route("/v1/processes/{pid}/stdout", get(stdout))
        .with_state(node);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

fn spawn_options(name: &str) -> SpawnOptions {
    SpawnOptions {
        name: name.into(),
        args: vec!["prog".into(), "two words".into()],
        env: vec![("MODE".into(), "a=b".into())],
        unpaired: false,
    }
}

#[tokio::test]
async fn spawn_uploads_the_module_and_a_taken_name_reports_its_pid() {
    let shared = Shared::default();
    let url = start_node(&shared, vec![]).await;
    let client = Client::with_options(vec![url], None, fast_options()).unwrap();
    let spawned = client
        .spawn(&b"\0asm module"[..], &spawn_options("adder"))
        .await
        .unwrap();
    assert_eq!(
        spawned,
        Spawned {
            pid: 1,
            primary: 1,
            backup: Some(2),
            epoch: 1
        }
    );
    {
        let table = shared.table();
        let process = &table.processes[&1];
        assert_eq!(process.module, b"\0asm module");
        assert_eq!(process.content_type, "application/wasm");
        assert_eq!(process.args, ["prog", "two words"]);
        assert_eq!(process.env, ["MODE=a=b"]);
    }
    let again = client.spawn(&b"other"[..], &spawn_options("adder")).await;
    assert!(
        matches!(again, Err(ClientError::NameInUse { pid: 1, .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_stdin_write_whose_answer_was_lost_is_retried_elsewhere_under_the_same_key() {
    let shared = Shared::default();
    // The first node applies the write and loses the answer (504), the second
    // refuses it (503, mid-failover), the third answers.
    let lossy = start_node(&shared, vec![504]).await;
    let refusing = start_node(&shared, vec![503]).await;
    let healthy = start_node(&shared, vec![]).await;
    let client =
        Client::with_options(vec![lossy, refusing, healthy], None, fast_options()).unwrap();
    let pid = client
        .spawn(&b"m"[..], &spawn_options("p"))
        .await
        .unwrap()
        .pid;
    let written = client.write_stdin(pid, &b"1\n"[..], false).await.unwrap();
    assert_eq!(written, StdinWritten { offset: 2 });
    let table = shared.table();
    assert_eq!(table.processes[&pid].stdin, b"1\n", "applied once");
    assert_eq!(table.stdin_keys.len(), 3, "one attempt per node");
    assert!(
        table
            .stdin_keys
            .iter()
            .all(|key| *key == table.stdin_keys[0]),
        "every attempt carries the same key: {:?}",
        table.stdin_keys
    );
}

#[tokio::test]
async fn distinct_stdin_writes_carry_distinct_keys() {
    let shared = Shared::default();
    let url = start_node(&shared, vec![]).await;
    let client = Client::with_options(vec![url], None, fast_options()).unwrap();
    let pid = client
        .spawn(&b"m"[..], &spawn_options("p"))
        .await
        .unwrap()
        .pid;
    client.write_stdin(pid, &b"1\n"[..], false).await.unwrap();
    let second = client.write_stdin(pid, &b"2\n"[..], false).await.unwrap();
    assert_eq!(second.offset, 4);
    let table = shared.table();
    assert_eq!(table.processes[&pid].stdin, b"1\n2\n");
    assert_ne!(table.stdin_keys[0], table.stdin_keys[1]);
}

#[tokio::test]
async fn output_reads_long_poll_and_report_the_exit() {
    let shared = Shared::default();
    let url = start_node(&shared, vec![]).await;
    let client = Client::with_options(vec![url], None, fast_options()).unwrap();
    let pid = client
        .spawn(&b"m"[..], &spawn_options("p"))
        .await
        .unwrap()
        .pid;
    // The reader starts first and waits on the server until output exists.
    let reader = tokio::spawn({
        let client = client.clone();
        async move {
            let mut collected = Vec::new();
            let mut offset = 0;
            loop {
                let chunk = client
                    .read_output(pid, OutputStream::Stdout, offset, Duration::from_secs(3))
                    .await
                    .unwrap();
                collected.extend_from_slice(&chunk.bytes);
                offset = chunk.next_offset;
                if chunk.exited && chunk.bytes.is_empty() {
                    return (collected, offset);
                }
            }
        }
    });
    client
        .write_stdin(pid, &b"hello "[..], false)
        .await
        .unwrap();
    client.write_stdin(pid, &b"world"[..], true).await.unwrap();
    let (collected, offset) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader finishes once the process exited")
        .unwrap();
    assert_eq!(collected, b"hello world");
    assert_eq!(offset, 11);
    let tail = client
        .read_output(pid, OutputStream::Stdout, 6, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((&tail.bytes[..], tail.exited), (&b"world"[..], true));
}

#[tokio::test]
async fn status_list_events_and_delete() {
    let shared = Shared::default();
    let url = start_node(&shared, vec![]).await;
    let client = Client::with_options(vec![url], None, fast_options()).unwrap();
    let first = client.spawn(&b"m"[..], &spawn_options("a")).await.unwrap();
    let second = client.spawn(&b"m"[..], &spawn_options("b")).await.unwrap();
    let listed = client.list_processes().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|status| status.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let status = client.process_status(second.pid).await.unwrap();
    assert_eq!(
        (
            status.backup_state.as_str(),
            status.backup,
            status.exit_code
        ),
        ("caught_up", Some(2), None)
    );
    let events = client.process_events(first.pid).await.unwrap();
    assert_eq!(events[1].kind, "promotion");
    assert!(events[1].detail.contains("replayed=4"));
    let deleted = client.delete_process(first.pid).await.unwrap();
    assert!(deleted.deleted && deleted.pid == first.pid);
    assert!(matches!(
        client.process_status(first.pid).await,
        Err(ClientError::NotFound { .. })
    ));
    assert!(matches!(
        client.process_events(99).await,
        Err(ClientError::NotFound { .. })
    ));
}
