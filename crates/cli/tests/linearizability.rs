//! Acceptance: a concurrent history of reads, writes and compare-and-swaps from
//! several clients against three real `understudy node` processes, under a
//! nemesis that kills, restarts, pauses and resumes nodes, is linearizable.
//!
//! Each client sends one raw HTTP request at a time (no retries, no connection
//! reuse, so nothing hides an outcome) to a random node and records exactly what
//! came back, mapped by the API's contract: 200 is a known output; 503 or a
//! refused connection means the request never reached a log, so it is left out
//! of the history; 504, a timeout or a connection lost after sending means the
//! outcome is unknown; 404 on a read means the key is absent. The history is
//! checked with the simulator's Wing–Gong–Lowe checker against a key-value model
//! with compare-and-swap.
//!
//! Rerun with a given nemesis schedule: `LINEARIZABILITY_SEED=<seed> cargo test
//! -p understudy-cli --test linearizability` (the seed is printed).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::Cluster;
use understudy_sim::linearizability::{
    check, CheckResult, KvCasInput, KvCasModel, KvCasOutput, Operation, SearchBudget,
};

/// How long the clients run under the nemesis.
const WORKLOAD_DURATION: Duration = Duration::from_secs(30);
/// Bound on everything after the cluster's first leader: workload, healing, check.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// Concurrent clients.
const CLIENT_COUNT: u64 = 5;
/// Keys the clients share (few, so that operations contend).
const KEY_COUNT: u64 = 3;
/// One HTTP request's whole budget; a paused node makes requests run into it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Completed operations below which the test proves nothing.
const COMPLETED_OPERATIONS_MIN: usize = 200;

type History = Vec<Operation<KvCasInput, KvCasOutput>>;

/// A small deterministic generator (xorshift64*), so a nemesis schedule and a
/// workload can be replayed from a printed seed without another dependency.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        // Xorshift's state must not be zero.
        Random(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..bound` (bias negligible for the small bounds used here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn millis_between(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

fn seed() -> u64 {
    match std::env::var("LINEARIZABILITY_SEED") {
        Ok(text) => text.parse().expect("LINEARIZABILITY_SEED is an integer"),
        // Only the seed comes from the clock; everything else follows from it.
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// What one request came to, by the API's contract.
enum Outcome {
    /// 200 (or 404 on a read): this output.
    Known(KvCasOutput),
    /// 503 or a refused connection: the request never reached a log.
    DidNotHappen,
    /// 504, a timeout or a lost connection after sending: may or may not have
    /// taken effect.
    Unknown,
}

/// Counts kept while the workload runs, for the summary and its assertions.
#[derive(Default)]
struct Counters {
    did_not_happen: AtomicU64,
    unexpected_status: AtomicU64,
}

/// Everything a client task needs.
struct Workload {
    urls: Vec<String>,
    epoch: Instant,
    stop: AtomicBool,
    history: Mutex<History>,
    counters: Counters,
}

impl Workload {
    fn micros_since_epoch(&self) -> u64 {
        // A test lasts seconds: far below u64::MAX microseconds.
        self.epoch.elapsed().as_micros() as u64
    }
}

fn key_name(key: u64) -> String {
    format!("lin-{key}")
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_millis(500))
        // A fresh connection per request: a pooled connection to a killed node
        // would turn "never sent" into an ambiguous failure (and could be retried
        // transparently).
        .pool_max_idle_per_host(0)
        .build()
        .expect("an HTTP client")
}

/// Sends one request and classifies the answer. `parse` decides what a 200 (and,
/// for reads, a 404) body means.
async fn send(
    request: reqwest::RequestBuilder,
    counters: &Counters,
    parse: impl FnOnce(u16, &[u8]) -> Option<KvCasOutput>,
) -> Outcome {
    let response = match request.send().await {
        Ok(response) => response,
        // Nothing was written to a socket: the node is down or not listening yet.
        Err(error) if error.is_connect() => return Outcome::DidNotHappen,
        Err(_) => return Outcome::Unknown,
    };
    let status = response.status().as_u16();
    let Ok(body) = response.bytes().await else {
        // The status line came, the body did not: for a 200 the output is lost.
        return Outcome::Unknown;
    };
    match status {
        503 => Outcome::DidNotHappen,
        504 => Outcome::Unknown,
        _ => match parse(status, &body) {
            Some(output) => Outcome::Known(output),
            None => {
                let text = String::from_utf8_lossy(&body);
                eprintln!("unexpected answer: HTTP {status}: {text}");
                counters.unexpected_status.fetch_add(1, Ordering::Relaxed);
                Outcome::Unknown
            }
        },
    }
}

fn json_body(body: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(body).ok()
}

async fn run_get(http: &reqwest::Client, url: &str, key: u64, counters: &Counters) -> Outcome {
    let request = http.get(format!("{url}/v1/kv/{}", key_name(key)));
    send(request, counters, |status, body| match status {
        200 => {
            let value = json_body(body)?.get("value")?.as_str()?.to_string();
            Some(KvCasOutput::Value(Some(value)))
        }
        404 => Some(KvCasOutput::Value(None)),
        _ => None,
    })
    .await
}

async fn run_put(
    http: &reqwest::Client,
    url: &str,
    key: u64,
    value: &str,
    counters: &Counters,
) -> Outcome {
    let request = http
        .put(format!("{url}/v1/kv/{}", key_name(key)))
        .body(value.to_string());
    send(request, counters, |status, body| {
        (status == 200 && json_body(body)?.get("revision")?.is_u64()).then_some(KvCasOutput::Ok)
    })
    .await
}

async fn run_cas(
    http: &reqwest::Client,
    url: &str,
    key: u64,
    expected: Option<&str>,
    new: &str,
    counters: &Counters,
) -> Outcome {
    let name = key_name(key);
    // "Absent" is version 0: no value compare matches a missing key.
    let compare = match expected {
        Some(value) => {
            serde_json::json!({"key": name, "target": "value", "op": "==", "value": value})
        }
        None => serde_json::json!({"key": name, "target": "version", "op": "==", "value": 0}),
    };
    let txn = serde_json::json!({
        "compare": [compare],
        "success": [{"op": "put", "key": name, "value": new}],
        "failure": [],
    });
    let request = http
        .post(format!("{url}/v1/txn"))
        .header("content-type", "application/json")
        .body(txn.to_string());
    send(request, counters, |status, body| {
        let succeeded = json_body(body)?.get("succeeded")?.as_bool()?;
        (status == 200).then_some(KvCasOutput::CasResult(succeeded))
    })
    .await
}

/// One client: operations in a loop until told to stop, each recorded with its
/// call and return times. Compare-and-swaps expect the value this client last
/// saw for the key, so that many of them can succeed.
async fn client_loop(workload: Arc<Workload>, client: u64, seed: u64) {
    let http = http_client();
    let mut random = Random::new(seed);
    let mut last_seen: Vec<Option<String>> = vec![None; KEY_COUNT as usize];
    let mut sequence = 0u64;
    while !workload.stop.load(Ordering::Relaxed) {
        let key = random.below(KEY_COUNT);
        let url = &workload.urls[random.below(workload.urls.len() as u64) as usize];
        sequence += 1;
        // Unique per write, so a read names the write it saw.
        let value = format!("c{client}-{sequence}");
        let counters = &workload.counters;
        let call_time = workload.micros_since_epoch();
        let (input, outcome) = match random.below(10) {
            0..=3 => (
                KvCasInput::Get { key },
                run_get(&http, url, key, counters).await,
            ),
            4..=5 => {
                let outcome = run_put(&http, url, key, &value, counters).await;
                (KvCasInput::Put { key, value }, outcome)
            }
            _ => {
                let expected = last_seen[key as usize].clone();
                let outcome = run_cas(&http, url, key, expected.as_deref(), &value, counters).await;
                let input = KvCasInput::Cas {
                    key,
                    expected,
                    new: value,
                };
                (input, outcome)
            }
        };
        // Strictly after the call, as the checker requires.
        let return_time = workload.micros_since_epoch().max(call_time + 1);
        remember(&mut last_seen, &input, &outcome);
        let operation = match outcome {
            Outcome::Known(output) => {
                Operation::completed(client, input, output, call_time, return_time)
            }
            Outcome::Unknown => Operation::unknown(client, input, call_time),
            Outcome::DidNotHappen => {
                counters.did_not_happen.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        workload
            .history
            .lock()
            .expect("no client panics holding the lock")
            .push(operation);
    }
}

/// Tracks the value a client last knew for each key.
fn remember(last_seen: &mut [Option<String>], input: &KvCasInput, outcome: &Outcome) {
    let Outcome::Known(output) = outcome else {
        return;
    };
    let slot = &mut last_seen[input.key() as usize];
    match (input, output) {
        (KvCasInput::Get { .. }, KvCasOutput::Value(value)) => *slot = value.clone(),
        (KvCasInput::Put { value, .. }, KvCasOutput::Ok) => *slot = Some(value.clone()),
        (KvCasInput::Cas { new, .. }, KvCasOutput::CasResult(true)) => *slot = Some(new.clone()),
        _ => {}
    }
}

/// What the nemesis did.
#[derive(Default, Debug)]
struct NemesisCounts {
    kills: u64,
    pauses: u64,
}

/// Every 1–3 s, SIGKILLs a node and restarts it 0.5–2 s later, or SIGSTOPs one
/// and SIGCONTs it 0.5–2 s later: never more than one node down, so a majority
/// can always make progress. Returns with every node running.
async fn nemesis(cluster: &mut Cluster, random: &mut Random, until: Instant) -> NemesisCounts {
    let mut counts = NemesisCounts::default();
    loop {
        // Timing of faults, not synchronisation: nothing waits on these sleeps.
        tokio::time::sleep(random.millis_between(1_000, 3_000)).await;
        if Instant::now() >= until {
            return counts;
        }
        let victim = random.below(cluster.len() as u64) as usize;
        let kill = random.below(2) == 0;
        if kill {
            cluster.kill(victim);
            counts.kills += 1;
        } else {
            cluster.stop(victim);
            counts.pauses += 1;
        }
        tokio::time::sleep(random.millis_between(500, 2_000)).await;
        if kill {
            cluster.restart(victim);
        } else {
            cluster.cont(victim);
        }
    }
}

/// Completed operations, unknown ones, and compare-and-swaps that succeeded.
fn summarize(history: &History) -> (usize, usize, usize) {
    let completed = history.iter().filter(|op| op.output.is_some()).count();
    let swapped = history
        .iter()
        .filter(|op| op.output == Some(KvCasOutput::CasResult(true)))
        .count();
    (completed, history.len() - completed, swapped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_and_compare_and_swaps_under_a_nemesis_are_linearizable() {
    let seed = seed();
    let mut random = Random::new(seed);
    let mut cluster = Cluster::start(3);
    cluster.leader().await;
    let workload = Arc::new(Workload {
        urls: (0..cluster.len()).map(|i| cluster.client_url(i)).collect(),
        epoch: Instant::now(),
        stop: AtomicBool::new(false),
        history: Mutex::new(Vec::new()),
        counters: Counters::default(),
    });
    let clients: Vec<_> = (0..CLIENT_COUNT)
        .map(|client| {
            let client_seed = random.next();
            tokio::spawn(client_loop(workload.clone(), client, client_seed))
        })
        .collect();

    let until = workload.epoch + WORKLOAD_DURATION;
    let counts = tokio::time::timeout(TEST_DEADLINE, nemesis(&mut cluster, &mut random, until))
        .await
        .expect("the nemesis finishes within the test deadline");
    workload.stop.store(true, Ordering::Relaxed);
    for client in clients {
        // Each client finishes its current request within REQUEST_TIMEOUT.
        tokio::time::timeout(REQUEST_TIMEOUT * 2, client)
            .await
            .expect("a client stops within two request timeouts")
            .expect("a client task does not panic");
    }
    let history = std::mem::take(&mut *workload.history.lock().expect("clients are done"));

    let checking = Instant::now();
    let result = check(&KvCasModel, &history, SearchBudget::default()).expect("a valid history");
    let check_time = checking.elapsed();
    let (completed, unknown, swapped) = summarize(&history);
    let did_not_happen = workload.counters.did_not_happen.load(Ordering::Relaxed);
    let unexpected = workload.counters.unexpected_status.load(Ordering::Relaxed);
    println!(
        "linearizability: seed {seed}, {} operations ({completed} completed, {unknown} \
         unknown, {did_not_happen} refused or 503, {swapped} successful swaps), {} kills, \
         {} pauses, checked in {:?}",
        history.len(),
        counts.kills,
        counts.pauses,
        check_time
    );
    assert_eq!(
        result,
        CheckResult::Linearizable,
        "seed {seed}: rerun with LINEARIZABILITY_SEED={seed}"
    );
    assert_eq!(
        unexpected, 0,
        "answers outside the API contract (see stderr)"
    );
    assert!(
        completed > COMPLETED_OPERATIONS_MIN,
        "only {completed} operations completed: the test proves little"
    );
    assert!(swapped > 0, "no compare-and-swap ever succeeded");
    assert!(
        counts.kills + counts.pauses >= 5,
        "the nemesis acted only {} times",
        counts.kills + counts.pauses
    );
    assert!(workload.epoch.elapsed() < TEST_DEADLINE);
}
