//! Closed-loop HTTP load: N clients, each sending its next request as soon as
//! the previous one answered, for a fixed duration.
//!
//! Keys are 16 bytes (`bench-0000000042`), values 256 bytes. Client `i` talks to
//! endpoint `i mod len(endpoints)`, over its own keep-alive connection, so both
//! systems see the same spread of requests over their nodes (followers forward
//! to the leader in both).

use crate::histogram::{format_millis, Samples};
use base64::Engine;
use clap::ValueEnum;
use rand::Rng;
use std::time::{Duration, Instant};

/// Bytes of every key written or read.
pub const KEY_BYTES: usize = 16;
/// Bytes of every value written.
pub const VALUE_BYTES: usize = 256;
/// Distinct keys the load touches (pre-written before a `get` run).
pub const KEY_SPACE: u64 = 1000;
/// Concurrent clients one run may have.
pub const CLIENTS_MAX: usize = 4096;
/// Longest one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed request before the client's next one.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Which HTTP API to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// understudy's `/v1/kv/{key}`.
    Understudy,
    /// etcd's grpc-gateway: `POST /v3/kv/put` and `/v3/kv/range` (base64 JSON).
    Etcd,
}

/// What each request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Write a 256-byte value to a random key.
    Put,
    /// Read a random (pre-written) key, linearizably.
    Get,
}

/// The result of one run.
#[derive(Debug)]
pub struct Outcome {
    /// Latencies of the successful requests.
    pub samples: Samples,
    /// Requests that failed (non-2xx, timeout, connection error).
    pub errors: u64,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl Outcome {
    /// One tab-separated line: ops, ops/s, p50 ms, p99 ms, errors.
    pub fn tsv_fields(&mut self) -> String {
        let per_second = self.samples.operations() as f64 / self.elapsed.as_secs_f64();
        format!(
            "{}\t{:.0}\t{}\t{}\t{}",
            self.samples.operations(),
            per_second,
            format_millis(self.samples.percentile(50.0)),
            format_millis(self.samples.percentile(99.0)),
            self.errors
        )
    }
}

/// The 16-byte key number `index`.
pub fn key_of(index: u64) -> String {
    let key = format!("bench-{index:010}");
    assert_eq!(key.len(), KEY_BYTES, "key {key} is not {KEY_BYTES} bytes");
    key
}

/// One request's target and body, built for `target`.
struct Request {
    url: String,
    method: reqwest::Method,
    body: Vec<u8>,
}

fn build_request(target: Target, mode: Mode, endpoint: &str, key: &str, value: &[u8]) -> Request {
    let base64 = base64::engine::general_purpose::STANDARD;
    match (target, mode) {
        (Target::Understudy, Mode::Put) => Request {
            url: format!("{endpoint}/v1/kv/{key}"),
            method: reqwest::Method::PUT,
            body: value.to_vec(),
        },
        (Target::Understudy, Mode::Get) => Request {
            url: format!("{endpoint}/v1/kv/{key}?consistency=linearizable"),
            method: reqwest::Method::GET,
            body: Vec::new(),
        },
        (Target::Etcd, Mode::Put) => Request {
            url: format!("{endpoint}/v3/kv/put"),
            method: reqwest::Method::POST,
            body: serde_json::json!({ "key": base64.encode(key), "value": base64.encode(value) })
                .to_string()
                .into_bytes(),
        },
        // etcd's range is linearizable unless `serializable` is set.
        (Target::Etcd, Mode::Get) => Request {
            url: format!("{endpoint}/v3/kv/range"),
            method: reqwest::Method::POST,
            body: serde_json::json!({ "key": base64.encode(key) })
                .to_string()
                .into_bytes(),
        },
    }
}

/// Sends one request; `Ok` only for a 2xx whose body was read completely.
async fn send(http: &reqwest::Client, request: Request) -> Result<(), String> {
    let response = http
        .request(request.method, &request.url)
        .body(request.body)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|error| error.to_string())?;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))
}

/// Writes every key of [`KEY_SPACE`] once, so a `get` run reads existing keys.
pub async fn prewrite(target: Target, endpoints: &[String]) -> Result<(), String> {
    let http = http_client()?;
    let value = vec![b'v'; VALUE_BYTES];
    let writers = (0..16u64).map(|writer| {
        let http = http.clone();
        let value = value.clone();
        async move {
            for index in (writer..KEY_SPACE).step_by(16) {
                let endpoint = &endpoints[index as usize % endpoints.len()];
                let request = build_request(target, Mode::Put, endpoint, &key_of(index), &value);
                send(&http, request)
                    .await
                    .map_err(|error| format!("pre-writing {}: {error}", key_of(index)))?;
            }
            Ok::<(), String>(())
        }
    });
    for result in futures::future::join_all(writers).await {
        result?;
    }
    Ok(())
}

/// Runs `clients` closed-loop clients for `duration`.
pub async fn run(
    target: Target,
    mode: Mode,
    endpoints: &[String],
    clients: usize,
    duration: Duration,
) -> Result<Outcome, String> {
    assert!(!endpoints.is_empty(), "the caller checks for endpoints");
    if clients == 0 || clients > CLIENTS_MAX {
        return Err(format!("--clients must be within 1..={CLIENTS_MAX}"));
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let endpoint = endpoints[client % endpoints.len()].clone();
        let http = http_client()?;
        tasks.push(tokio::spawn(client_loop(
            target, mode, endpoint, http, deadline,
        )));
    }
    let mut samples = Samples::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (client_samples, client_errors, client_first_error) = task
            .await
            .map_err(|error| format!("a client task failed: {error}"))?;
        samples.merge(&client_samples);
        errors += client_errors;
        first_error = first_error.or(client_first_error);
    }
    if let Some(error) = first_error {
        eprintln!("understudy-bench: {errors} errors; the first: {error}");
    }
    Ok(Outcome {
        samples,
        errors,
        elapsed: start.elapsed(),
    })
}

async fn client_loop(
    target: Target,
    mode: Mode,
    endpoint: String,
    http: reqwest::Client,
    deadline: Instant,
) -> (Samples, u64, Option<String>) {
    let value = vec![b'x'; VALUE_BYTES];
    let mut samples = Samples::new();
    let mut errors = 0;
    let mut first_error = None;
    while Instant::now() < deadline {
        let index = rand::thread_rng().gen_range(0..KEY_SPACE);
        let request = build_request(target, mode, &endpoint, &key_of(index), &value);
        let started = Instant::now();
        match send(&http, request).await {
            Ok(()) => samples.record(started.elapsed()),
            Err(error) => {
                errors += 1;
                first_error = first_error.or(Some(error));
                // Back off briefly so a refused connection does not spin the CPU
                // the cluster under test needs.
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    (samples, errors, first_error)
}
