//! Acceptance of process pairs (issue 4) with real node processes: SIGKILL of
//! the primary's node ten times in one stream of input, for a command guest
//! (in C and in Zig) and a reactor guest; SIGKILL of the backup's node; a stdin write retried
//! through another node after a kill; restores from checkpoints, including one
//! taken while a compute-bound command was busy with queued stdin; a sleep in
//! `poll_oneoff` honoured by the primary and finished by the promoted backup; a
//! runaway guest killed, the kill logged and reported, also by a primary
//! promoted while the guest spun.
//!
//! Every wait polls an observable condition with a deadline; each test is
//! bounded by [`TEST_TIMEOUT`].

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{eventually, Cluster, ClusterOptions};
use tokio::task::JoinHandle;
use understudy_client::{Client, ClientOptions, OutputStream, ProcessStatus, SpawnOptions};

/// Longest any one test may run.
const TEST_TIMEOUT: Duration = Duration::from_secs(115);
/// Longest a failover, a re-pairing or a batch of output may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Primary kills in the failover tests.
const KILLS: usize = 10;
/// Numbers the feeder must get acknowledged between two kills, so that every
/// kill lands in the middle of the stream.
const NUMBERS_BETWEEN_KILLS: u64 = 3;

fn guest(name: &str) -> Vec<u8> {
    let path = format!("{}/../../guests/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// A client of every node that keeps retrying through a failover.
fn patient_client(cluster: &Cluster) -> Client {
    let endpoints = cluster
        .nodes
        .iter()
        .map(|node| node.client_url.clone())
        .collect();
    let options = ClientOptions {
        deadline: STEP_TIMEOUT,
        attempt_timeout: Duration::from_secs(6),
        connect_timeout: Duration::from_millis(300),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    };
    Client::with_options(endpoints, None, options).expect("a client")
}

async fn spawn(client: &Client, module: &str, name: &str) -> u64 {
    spawn_module(client, guest(module), name).await
}

async fn spawn_module(client: &Client, module: Vec<u8>, name: &str) -> u64 {
    let options = SpawnOptions {
        name: name.into(),
        args: vec![name.into()],
        ..SpawnOptions::default()
    };
    client.spawn(module, &options).await.expect("spawn").pid
}

async fn status(client: &Client, pid: u64) -> Option<ProcessStatus> {
    client.process_status(pid).await.ok()
}

/// Polls the status until `condition` holds; returns that status.
async fn status_until(
    client: &Client,
    pid: u64,
    what: &str,
    condition: impl Fn(&ProcessStatus) -> bool,
) -> ProcessStatus {
    let found: Arc<Mutex<Option<ProcessStatus>>> = Arc::default();
    eventually(STEP_TIMEOUT, what, || {
        let found = found.clone();
        let condition = &condition;
        async move {
            match status(client, pid).await {
                Some(status) if condition(&status) => {
                    *found.lock().unwrap() = Some(status);
                    true
                }
                _ => false,
            }
        }
    })
    .await;
    let status = found.lock().unwrap().take();
    status.expect("set when the condition held")
}

async fn caught_up(client: &Client, pid: u64) -> ProcessStatus {
    status_until(client, pid, "a caught-up backup", |status| {
        status.state == "running" && status.backup.is_some() && status.backup_state == "caught_up"
    })
    .await
}

/// Collects the process's stdout lines as they are released, from offset 0.
struct Reader {
    lines: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Reader {
    fn start(client: Client, pid: u64) -> Reader {
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let collected = lines.clone();
        let task = tokio::spawn(async move {
            let mut offset = 0;
            let mut partial = Vec::new();
            loop {
                let chunk = client
                    .read_output(pid, OutputStream::Stdout, offset, Duration::from_secs(4))
                    .await
                    .expect("stdout stays readable through failovers");
                offset = chunk.next_offset;
                partial.extend_from_slice(&chunk.bytes);
                while let Some(end) = partial.iter().position(|&byte| byte == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    let text = String::from_utf8(line[..end].to_vec()).expect("UTF-8 output");
                    collected.lock().unwrap().push(text);
                }
                if chunk.exited && chunk.bytes.is_empty() {
                    return;
                }
            }
        });
        Reader { lines, task }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    async fn wait_for(&self, count: usize) {
        let what = format!("{count} output lines");
        eventually(STEP_TIMEOUT, &what, || async { self.count() >= count }).await;
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Writes 1, 2, 3, ... to stdin, one number per write, until stopped; every
/// write must be acknowledged (retried through failovers by the client).
struct Feeder {
    written: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Feeder {
    fn start(client: Client, pid: u64) -> Feeder {
        let written: Arc<Mutex<Vec<u64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (acknowledged, stopping) = (written.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut number = 1u64;
            while !stopping.load(Ordering::Relaxed) {
                client
                    .write_stdin(pid, format!("{number}\n"), false)
                    .await
                    .unwrap_or_else(|error| panic!("write of {number}: {error}"));
                acknowledged.lock().unwrap().push(number);
                number += 1;
            }
        });
        Feeder {
            written,
            stop,
            task,
        }
    }

    fn count(&self) -> u64 {
        self.written.lock().unwrap().len() as u64
    }

    async fn wait_for(&self, count: u64) {
        let what = format!("{count} acknowledged stdin writes");
        eventually(STEP_TIMEOUT, &what, || async {
            // A failed write ends the feeder with a panic: fail now, not at
            // the deadline.
            assert!(
                !self.task.is_finished() || self.stop.load(Ordering::Relaxed),
                "the feeder stopped after {} writes (its panic is printed above)",
                self.count()
            );
            self.count() >= count
        })
        .await;
    }

    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the feeder does not panic");
        let written = self.written.lock().unwrap().clone();
        written
    }
}

/// What running-total (or reactor-total) prints for `inputs` after its token
/// line: `<count> total <sum>` per number.
fn running_totals(inputs: &[u64]) -> Vec<String> {
    let mut total = 0;
    inputs
        .iter()
        .enumerate()
        .map(|(index, value)| {
            total += value;
            format!("{} total {total}", index + 1)
        })
        .collect()
}

/// Lets a few more numbers through (the stream goes on after whatever the
/// test did), stops the feeder and checks the whole output against a
/// fault-free run of the same numbers.
async fn finish_fault_free(feeder: Feeder, reader: Reader) {
    feeder
        .wait_for(feeder.count() + NUMBERS_BETWEEN_KILLS)
        .await;
    let inputs = feeder.finish().await;
    let expected = running_totals(&inputs);
    reader.wait_for(1 + expected.len()).await;
    assert_fault_free(&reader.lines(), &expected);
    reader.task.abort();
}

/// Checks one token line, first, then exactly `expected`.
fn assert_fault_free(lines: &[String], expected: &[String]) {
    let tokens = lines
        .iter()
        .filter(|line| line.starts_with("token "))
        .count();
    assert_eq!(tokens, 1, "exactly one token line in {lines:#?}");
    assert!(
        lines[0].starts_with("token ") && lines[0].contains(" started "),
        "the token line comes first: {:?}",
        lines[0]
    );
    assert_eq!(&lines[1..], expected, "the output of a fault-free run");
}

/// The stored stdout from offset 0, read again in full.
async fn stored_stdout(client: &Client, pid: u64) -> String {
    let mut stored = Vec::new();
    loop {
        let chunk = client
            .read_output(
                pid,
                OutputStream::Stdout,
                stored.len() as u64,
                Duration::ZERO,
            )
            .await
            .expect("stdout");
        if chunk.bytes.is_empty() {
            return String::from_utf8(stored).expect("UTF-8 output");
        }
        stored.extend_from_slice(&chunk.bytes);
    }
}

/// Kills the primary's node `KILLS` times while a feeder streams numbers,
/// restarting the killed node and waiting for a caught-up backup before the
/// next kill. Returns the numbers acknowledged, in order.
async fn kill_primaries_during_a_stream(
    cluster: &mut Cluster,
    client: &Client,
    pid: u64,
    reader: &Reader,
) -> Vec<u64> {
    let feeder = Feeder::start(client.clone(), pid);
    for kill in 1..=KILLS {
        feeder
            .wait_for(feeder.count() + NUMBERS_BETWEEN_KILLS)
            .await;
        let before = caught_up(client, pid).await;
        let victim = cluster.index_of(before.primary);
        cluster.kill(victim);
        let after = status_until(client, pid, "a promoted backup", |status| {
            status.epoch > before.epoch && status.primary != before.primary
        })
        .await;
        assert_eq!(
            Some(after.primary),
            before.backup,
            "kill {kill}: the backup took over"
        );
        eprintln!(
            "kill {kill}: node {} killed, node {} took over in epoch {} after {} numbers",
            before.primary,
            after.primary,
            after.epoch,
            feeder.count()
        );
        // Writes and output continue under the new primary.
        feeder
            .wait_for(feeder.count() + NUMBERS_BETWEEN_KILLS)
            .await;
        // The token line, then one line per acknowledged number.
        let acknowledged = feeder.count() as usize;
        reader.wait_for(1 + acknowledged).await;
        cluster.restart(victim);
        caught_up(client, pid).await;
    }
    feeder.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_guest_survives_ten_kills_of_its_primary() {
    command_survives_ten_kills("running-total.wasm").await;
}

/// The same program written in Zig: checkpointed (Asyncify) like the C one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zig_command_guest_survives_ten_kills_of_its_primary() {
    command_survives_ten_kills("running-total-zig.wasm").await;
}

async fn command_survives_ten_kills(module: &str) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let pid = spawn(&client, module, "running-total").await;
        let paired = caught_up(&client, pid).await;
        assert_eq!(paired.recovery_mode, "checkpoint", "{module}");
        let reader = Reader::start(client.clone(), pid);
        reader.wait_for(1).await;
        let token = reader.lines()[0].clone();
        let inputs = kill_primaries_during_a_stream(&mut cluster, &client, pid, &reader).await;
        client
            .write_stdin(pid, Vec::new(), true)
            .await
            .expect("close stdin");
        tokio::time::timeout(STEP_TIMEOUT, reader.task)
            .await
            .expect("stdout ends once the process exited")
            .expect("the reader does not panic");
        let lines = reader.lines.lock().unwrap().clone();
        let mut expected = running_totals(&inputs);
        let total: u64 = inputs.iter().sum();
        expected.push(format!("done: {} numbers, total {total}", inputs.len()));
        assert_fault_free(&lines, &expected);
        assert_eq!(lines[0], token, "the token line is unchanged");
        let again: String = lines.iter().map(|line| format!("{line}\n")).collect();
        assert_eq!(stored_stdout(&client, pid).await, again);
        let exited = status_until(&client, pid, "the exit", |s| s.state == "exited").await;
        assert_eq!(exited.exit_code, Some(0));
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactor_guest_survives_ten_kills_of_its_primary() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let pid = spawn(&client, "reactor-total.wasm", "reactor-total").await;
        caught_up(&client, pid).await;
        // The reactor prints its token line on its first call.
        let reader = Reader::start(client.clone(), pid);
        let inputs = kill_primaries_during_a_stream(&mut cluster, &client, pid, &reader).await;
        let expected = running_totals(&inputs);
        reader.wait_for(1 + expected.len()).await;
        let lines = reader.lines();
        assert_fault_free(&lines, &expected);
        // Nothing beyond those lines was released (a duplicate would show).
        let again: String = lines.iter().map(|line| format!("{line}\n")).collect();
        assert_eq!(stored_stdout(&client, pid).await, again);
        reader.task.abort();
    })
    .await
    .expect("the test finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_backup_gives_the_primary_a_new_backup() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let pid = spawn(&client, "running-total.wasm", "running-total").await;
        let before = caught_up(&client, pid).await;
        let reader = Reader::start(client.clone(), pid);
        let feeder = Feeder::start(client.clone(), pid);
        feeder.wait_for(NUMBERS_BETWEEN_KILLS).await;
        let backup = before.backup.expect("a caught-up backup");
        cluster.kill(cluster.index_of(backup));
        let after = status_until(&client, pid, "a new caught-up backup", |status| {
            status.backup.is_some_and(|id| id != backup) && status.backup_state == "caught_up"
        })
        .await;
        assert_eq!(
            (after.primary, after.epoch),
            (before.primary, before.epoch),
            "the primary continues in its epoch"
        );
        finish_fault_free(feeder, reader).await;
    })
    .await
    .expect("the test finishes in time");
}

/// One `POST /stdin` with an explicit key, not retried: (status, body). A
/// body of [`EOF`] closes stdin (`?eof=true`, no bytes).
async fn raw_stdin(url: &str, pid: u64, body: &str, key: &str) -> Option<(u16, String)> {
    let (query, body) = if body == EOF {
        ("?eof=true", "")
    } else {
        ("", body)
    };
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/processes/{pid}/stdin{query}"))
        .header("Idempotency-Key", key)
        .body(body.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

/// The body [`raw_stdin`] sends as `?eof=true`.
const EOF: &str = "<eof>";

/// Sends the write to `url` until it is answered 200 (503 and 504 are
/// retried with the same key, as the contract says); returns the body.
async fn raw_stdin_until_ok(url: &str, pid: u64, body: &str, key: &str) -> String {
    let answer: Arc<Mutex<Option<String>>> = Arc::default();
    eventually(STEP_TIMEOUT, "a 200 for the stdin write", || {
        let answer = answer.clone();
        async move {
            match raw_stdin(url, pid, body, key).await {
                Some((200, text)) => {
                    *answer.lock().unwrap() = Some(text);
                    true
                }
                Some((503 | 504, _)) | None => false,
                Some((status, text)) => panic!("stdin write answered {status}: {text}"),
            }
        }
    })
    .await;
    let text = answer.lock().unwrap().take();
    text.expect("set on 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdin_write_retried_through_another_node_after_a_kill_or_an_exit_applies_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let pid = spawn(&client, "running-total.wasm", "running-total").await;
        let before = caught_up(&client, pid).await;
        let primary = cluster.index_of(before.primary);
        let session = format!("pairs-test-{}", std::process::id());
        let first_key = format!("{session}:1");
        let first = raw_stdin_until_ok(&cluster.client_url(primary), pid, "5\n", &first_key).await;
        let first: serde_json::Value = serde_json::from_str(&first).expect("JSON");
        assert_eq!(first["offset"], 2);
        cluster.kill(primary);
        let other = cluster.running()[0];
        // The same write again, through another node, after the failover.
        let retried = raw_stdin_until_ok(&cluster.client_url(other), pid, "5\n", &first_key).await;
        let retried: serde_json::Value = serde_json::from_str(&retried).expect("JSON");
        assert_eq!(retried, first, "the retry returns the first answer");
        let second_key = format!("{session}:2");
        let second = raw_stdin_until_ok(&cluster.client_url(other), pid, "7\n", &second_key).await;
        let second: serde_json::Value = serde_json::from_str(&second).expect("JSON");
        assert_eq!(second["offset"], 4, "the first write counted once");
        let reader = Reader::start(client.clone(), pid);
        reader.wait_for(3).await;
        let lines = reader.lines();
        assert_fault_free(&lines, &running_totals(&[5, 7]));
        let after = status(&client, pid).await.expect("status");
        assert!(
            after.epoch > before.epoch,
            "the write was retried after a failover"
        );
        // Closing stdin ends the guest; a retry of that write after the exit
        // gets the first answer, an older sequence is refused.
        let last_key = format!("{session}:3");
        let closed = raw_stdin_until_ok(&cluster.client_url(other), pid, EOF, &last_key).await;
        status_until(&client, pid, "the exit", |status| status.state == "exited").await;
        for node in cluster.running() {
            let url = cluster.client_url(node);
            let retried = raw_stdin_until_ok(&url, pid, EOF, &last_key).await;
            assert_eq!(retried, closed, "node {node}");
            let mut older = raw_stdin(&url, pid, "7\n", &second_key).await;
            while matches!(older, Some((503 | 504, _)) | None) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                older = raw_stdin(&url, pid, "7\n", &second_key).await;
            }
            assert_eq!(older.map(|(status, _)| status), Some(400), "node {node}");
        }
        reader.task.abort();
    })
    .await
    .expect("the test finishes in time");
}

/// The `replayed` event of `epoch` (committed on its own path, so waited
/// for): (the lsn of the checkpoint restored, if any; the records replayed
/// after it).
async fn restart_of_epoch(client: &Client, pid: u64, epoch: u64) -> (Option<u64>, u64) {
    let detail: Arc<Mutex<Option<String>>> = Arc::default();
    eventually(STEP_TIMEOUT, "the promotion's replayed event", || {
        let detail = detail.clone();
        async move {
            let Ok(events) = client.process_events(pid).await else {
                return false;
            };
            let found = events
                .into_iter()
                .find(|event| event.kind == "replayed" && event.epoch == epoch);
            *detail.lock().unwrap() = found.map(|event| event.detail);
            detail.lock().unwrap().is_some()
        }
    })
    .await;
    let detail = detail.lock().unwrap().take().expect("set when found");
    let number_after = |label: &str| -> Option<u64> {
        let start = detail.find(label)? + label.len();
        let digits: String = detail[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let replayed = number_after("replayed=").expect("the replayed count");
    (number_after("checkpoint at lsn "), replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_reactor_restores_the_checkpoint_instead_of_replaying_everything() {
    restore_from_a_checkpoint("reactor-total.wasm", "reactor-total").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_command_restores_the_checkpoint_instead_of_replaying_everything() {
    restore_from_a_checkpoint("running-total.wasm", "running-total").await;
}

/// Streams numbers until the backup completed a checkpoint and more records
/// followed, kills the primary's node, and checks the promoted backup
/// restored that checkpoint and replayed only what followed it.
async fn restore_from_a_checkpoint(module: &str, name: &str) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let pid = spawn(&client, module, name).await;
        caught_up(&client, pid).await;
        let reader = Reader::start(client.clone(), pid);
        let feeder = Feeder::start(client.clone(), pid);
        feeder.wait_for(NUMBERS_BETWEEN_KILLS).await;
        let checkpointed = status_until(&client, pid, "a checkpoint at the backup", |status| {
            status.checkpoint_lsn > 0 && status.recovery_mode == "checkpoint"
        })
        .await;
        // Records after the checkpoint, so that the failover replays some;
        // then the input stops and the guest answers all of it, so the log
        // ends where `before` says when the primary dies.
        feeder
            .wait_for(feeder.count() + NUMBERS_BETWEEN_KILLS)
            .await;
        let mut inputs = feeder.finish().await;
        reader.wait_for(1 + inputs.len()).await;
        let before = caught_up(&client, pid).await;
        cluster.kill(cluster.index_of(before.primary));
        let after = status_until(&client, pid, "a promoted backup", |status| {
            status.epoch > before.epoch && status.state == "running"
        })
        .await;
        let (restored, replayed) = restart_of_epoch(&client, pid, after.epoch).await;
        let restored = restored.expect("the promoted backup restored a checkpoint");
        assert!(
            restored >= checkpointed.checkpoint_lsn,
            "the newest checkpoint the backup completed ({restored}) is at least the one seen \
             before ({})",
            checkpointed.checkpoint_lsn
        );
        assert_eq!(
            restored + replayed,
            before.logged_lsn,
            "replayed the {replayed} records after lsn {restored}, not the {} from the start",
            before.logged_lsn
        );
        assert!(
            after.checkpoint_lsn >= restored,
            "ps shows the checkpoint: {after:?}"
        );
        assert_eq!(after.recovery_mode, "checkpoint");
        let table = understudy_cli_table(&client).await;
        assert!(
            table.contains("CHECKPOINT") && table.contains("checkpoint"),
            "{table}"
        );
        // More input after the promotion, from a new client session.
        let feeder = Feeder::start(patient_client(&cluster), pid);
        feeder.wait_for(NUMBERS_BETWEEN_KILLS).await;
        inputs.extend(feeder.finish().await);
        let expected = running_totals(&inputs);
        reader.wait_for(1 + expected.len()).await;
        assert_fault_free(&reader.lines(), &expected);
        reader.task.abort();
    })
    .await
    .expect("the test finishes in time");
}

/// Lines of work for the compute-bound test, and the rounds of `cpu-heavy`'s
/// mixing loop each asks for (a few milliseconds each, no host call inside).
const BUSY_LINES: usize = 800;
const BUSY_ROUNDS_PER_LINE: u64 = 400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compute_bound_command_checkpoints_mid_run_and_is_restored_there() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let work: String = (0..BUSY_LINES)
            .map(|_| format!("{BUSY_ROUNDS_PER_LINE}\n"))
            .collect();
        let pid = spawn(&client, "cpu-heavy.wasm", "busy").await;
        caught_up(&client, pid).await;
        let reader = Reader::start(client.clone(), pid);
        // All the work at once: the guest computes through queued stdin and
        // never blocks in a read, so only an unwind at one of its writes
        // makes it checkpointable.
        client
            .write_stdin(pid, work.clone(), true)
            .await
            .expect("the work is accepted");
        let checkpointed = status_until(&client, pid, "a checkpoint mid-run", |status| {
            status.checkpoint_lsn > 0
        })
        .await;
        let done_at_checkpoint = reader.count();
        assert!(
            done_at_checkpoint < 1 + BUSY_LINES,
            "the checkpoint came while the guest still had work queued \
             ({done_at_checkpoint} lines out)"
        );
        cluster.kill(cluster.index_of(checkpointed.primary));
        let after = status_until(&client, pid, "a promoted backup", |status| {
            status.epoch > checkpointed.epoch
                && (status.state == "running" || status.state == "exited")
        })
        .await;
        let (restored, _replayed) = restart_of_epoch(&client, pid, after.epoch).await;
        let restored = restored.expect("the promoted backup restored the checkpoint");
        assert!(
            restored >= checkpointed.checkpoint_lsn,
            "restored at lsn {restored}, the checkpoint seen was at {}",
            checkpointed.checkpoint_lsn
        );
        reader.wait_for(1 + BUSY_LINES).await;
        // The same module and input, never failed over.
        let reference = spawn(&client, "cpu-heavy.wasm", "busy-reference").await;
        let reference_reader = Reader::start(client.clone(), reference);
        client
            .write_stdin(reference, work, true)
            .await
            .expect("the reference's work is accepted");
        reference_reader.wait_for(1 + BUSY_LINES).await;
        let lines = reader.lines();
        let expected = reference_reader.lines();
        assert_eq!(lines.len(), expected.len(), "no line lost or repeated");
        assert_eq!(lines, expected, "the same checksums as without a failover");
        reader.task.abort();
        reference_reader.task.abort();
    })
    .await
    .expect("the test finishes in time");
}

/// What `understudy ps` prints for the cluster `client` talks to.
async fn understudy_cli_table(client: &Client) -> String {
    let processes = client.list_processes().await.expect("ps");
    let endpoints = client.endpoints().join(",");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["ps", "--endpoints", &endpoints])
        .output()
        .expect("run understudy ps");
    assert!(output.status.success(), "understudy ps: {output:?}");
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(table.lines().count(), 1 + processes.len(), "{table}");
    table
}

/// How long guests/sleeper/sleeper.wat sleeps before echoing a chunk.
const SLEEPER_NAP: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_is_honoured_and_survives_a_kill_of_the_primary_in_the_middle() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let mut cluster = Cluster::start(3);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let source = format!(
            "{}/../../guests/sleeper/sleeper.wat",
            env!("CARGO_MANIFEST_DIR")
        );
        let module = wat::parse_file(&source).expect("sleeper.wat assembles");
        let pid = spawn_module(&client, module, "sleeper").await;
        caught_up(&client, pid).await;
        let reader = Reader::start(client.clone(), pid);
        let sent = std::time::Instant::now();
        client
            .write_stdin(pid, "first\n", false)
            .await
            .expect("stdin accepted");
        reader.wait_for(1).await;
        assert!(
            sent.elapsed() >= SLEEPER_NAP,
            "the echo came after {:?}: the primary did not sleep",
            sent.elapsed()
        );
        let before = caught_up(&client, pid).await;
        // Logged and acknowledged, then the primary dies while it sleeps.
        client
            .write_stdin(pid, "second\n", false)
            .await
            .expect("stdin accepted");
        cluster.kill(cluster.index_of(before.primary));
        status_until(&client, pid, "a promoted backup", |status| {
            status.epoch > before.epoch && status.state == "running"
        })
        .await;
        reader.wait_for(2).await;
        client
            .write_stdin(pid, "", true)
            .await
            .expect("stdin closed");
        status_until(&client, pid, "the sleeper's exit", |status| {
            status.state == "exited"
        })
        .await;
        assert_eq!(reader.lines(), vec!["first", "second"], "each echo once");
        reader.task.abort();
    })
    .await
    .expect("the test finishes in time");
}

/// Writes "start\n", then spins without a host call for ever.
const SPINNER: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write"
        (func $write (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (data (i32.const 64) "start\n")
    (func (export "_start")
        (i32.store (i32.const 16) (i32.const 64))
        (i32.store (i32.const 20) (i32.const 6))
        (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
        (loop $forever (br $forever))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_guest_is_killed_and_its_kill_reported() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let options = ClusterOptions {
            guest_runaway_seconds: Some(1),
            ..ClusterOptions::default()
        };
        let cluster = Cluster::start_with(3, options);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let module = wat::parse_str(SPINNER).expect("the spinner assembles");
        let pid = spawn_module(&client, module, "spinner").await;
        let exited = status_until(&client, pid, "the spinner's kill", |status| {
            status.state == "exited"
        })
        .await;
        assert_eq!(exited.exit_code, Some(137), "{exited:?}");
        assert_eq!(stored_stdout(&client, pid).await, "start\n");
        let events = client.process_events(pid).await.expect("events");
        let killed = events
            .iter()
            .any(|event| event.detail.contains("killed: runaway"));
        assert!(killed, "no kill among the events: {events:?}");
    })
    .await
    .expect("the test finishes in time");
}

/// The runaway limit of the promoted-primary test: long enough that the
/// test's SIGKILL of the first primary comes well before it.
const RUNAWAY_SECONDS_ACROSS_A_KILL: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_guest_whose_primary_dies_is_killed_by_the_promoted_primary() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let options = ClusterOptions {
            guest_runaway_seconds: Some(RUNAWAY_SECONDS_ACROSS_A_KILL),
            ..ClusterOptions::default()
        };
        let mut cluster = Cluster::start_with(3, options);
        cluster.leader().await;
        let client = patient_client(&cluster);
        let module = wat::parse_str(SPINNER).expect("the spinner assembles");
        let spawned = std::time::Instant::now();
        let pid = spawn_module(&client, module, "spinner").await;
        let reader = Reader::start(client.clone(), pid);
        // "start" released: the backup acknowledged the records before the spin.
        reader.wait_for(1).await;
        let before = caught_up(&client, pid).await;
        assert!(
            spawned.elapsed() < Duration::from_secs(RUNAWAY_SECONDS_ACROSS_A_KILL - 1),
            "pairing took {:?}: too close to the runaway limit for this test",
            spawned.elapsed()
        );
        cluster.kill(cluster.index_of(before.primary));
        let exited = status_until(&client, pid, "the promoted spinner's kill", |status| {
            status.state == "exited"
        })
        .await;
        assert_eq!(exited.exit_code, Some(137), "{exited:?}");
        assert!(exited.epoch > before.epoch, "{exited:?} after {before:?}");
        // The promoted primary regenerated "start" (oseq 0): released once.
        assert_eq!(stored_stdout(&client, pid).await, "start\n");
        assert_eq!(reader.lines(), vec!["start"]);
        let events = client.process_events(pid).await.expect("events");
        let killed_in = events
            .iter()
            .find(|event| event.detail.contains("killed: runaway"))
            .map(|event| event.epoch);
        assert_eq!(killed_in, Some(exited.epoch), "{events:?}");
        reader.task.abort();
    })
    .await
    .expect("the test finishes in time");
}
