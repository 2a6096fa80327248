//! Process pairs: throughput of a paired guest against the same guest run
//! unpaired on the same node, and failover time of a paired guest, on a
//! three-node cluster of `understudy node` processes this benchmark starts.
//!
//! Throughput, for each writer count C of the sweep: phases alternate paired,
//! unpaired, unpaired, paired (so a drift in the machine's load during the
//! run hits both kinds alike). Each phase spawns a fresh `running-total` on
//! node 1 (the node that takes a spawn is the primary), runs C writers for S
//! seconds (each its own client, so its own idempotency client id, one number
//! per stdin write) and one reader that long-polls stdout; then closes stdin
//! and lets the reader drain. Every writer waits for its write's answer
//! before the next (a closed loop), so with few writers the paired figure is
//! bound by the latency of one durable write at the backup, and with many by
//! what the node can process; the sweep shows both.
//!
//! Failover: one paired guest, one writer and one reader running throughout;
//! N times: SIGKILL the primary's node, time from the kill to the first stdout
//! line the reader receives that answers an input first sent after the kill
//! (so output released before the kill but delivered after it does not
//! count), restart the node and wait for `backup_state: caught_up`.

use crate::failover::{Cluster, FailoverOptions};
use crate::histogram::{format_millis, Samples};
use crate::pair_metrics::PairCounters;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use understudy_client::{Client, ClientError, ClientOptions, OutputStream, SpawnOptions};

/// Longest wait for a spawn, a catch-up or a failover before the run fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time the reader may take to drain a phase's output after stdin closed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one stdout long poll waits on the server.
const OUTPUT_WAIT: Duration = Duration::from_secs(1);
/// Pause after a failed call, so a refusing cluster is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Pause between status polls (waiting for catch-up).
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Chunks the failover reader may report before the measuring task reads them.
const CHUNK_QUEUE_MAX: usize = 4096;
/// Acknowledged writes the failover run waits for before each kill, so the kill
/// lands mid-stream.
const WRITES_BEFORE_KILL: u64 = 20;
/// Rounds of `cpu-heavy`'s mixing loop per input line.
const CPU_HEAVY_ROUNDS_PER_LINE: u64 = 1000;

/// Options of a process-pair benchmark run.
#[derive(Debug, Clone)]
pub struct PairsOptions {
    /// The cluster to start (its `kills` field is unused).
    pub cluster: FailoverOptions,
    /// Directory holding `running-total.wasm` and `cpu-heavy.wasm`.
    pub guests_dir: PathBuf,
    /// Length of each throughput phase.
    pub phase: Duration,
    /// Concurrent stdin writers in a throughput phase: one set of phases per
    /// count, in this order.
    pub writers: Vec<usize>,
    /// Primary kills in the failover part (0 skips it).
    pub failovers: usize,
    /// Run `cpu-heavy.wasm` touching this many MiB in the failover part
    /// instead of `running-total.wasm`.
    pub memory_mib: Option<u32>,
}

/// What one throughput phase measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseResult {
    /// Stdin writes acknowledged during the phase.
    pub acknowledged_writes: u64,
    /// Stdin writes that failed (after the client's retries).
    pub failed_writes: u64,
    /// Output lines (`<count> total <sum>`) the reader received.
    pub output_lines: u64,
    /// The phase's writing time.
    pub writing: Duration,
    /// From the phase's start to the last output line reaching the reader.
    pub until_last_line: Duration,
}

impl PhaseResult {
    /// Acknowledged writes per second of writing.
    pub fn writes_per_second(&self) -> f64 {
        per_second(self.acknowledged_writes, self.writing)
    }

    /// Output lines per second, until the last line reached the reader.
    pub fn lines_per_second(&self) -> f64 {
        per_second(self.output_lines, self.until_last_line)
    }

    fn add(&mut self, other: &PhaseResult) {
        self.acknowledged_writes += other.acknowledged_writes;
        self.failed_writes += other.failed_writes;
        self.output_lines += other.output_lines;
        self.writing += other.writing;
        self.until_last_line += other.until_last_line;
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        return 0.0;
    }
    count as f64 / elapsed.as_secs_f64()
}

/// The throughput phases of one writer count.
#[derive(Debug, Clone, Copy)]
pub struct WritersResult {
    /// Concurrent stdin writers.
    pub writers: usize,
    /// The paired phases, summed.
    pub paired: PhaseResult,
    /// The unpaired phases, summed.
    pub unpaired: PhaseResult,
}

/// The outcome of a whole run.
#[derive(Debug)]
pub struct PairsReport {
    /// Throughput, one entry per writer count, in the order run.
    pub throughput: Vec<WritersResult>,
    /// Kill-to-first-new-output times.
    pub failovers: Samples,
}

impl WritersResult {
    /// Paired over unpaired acknowledged writes per second.
    pub fn ratio(&self) -> f64 {
        let unpaired = self.unpaired.writes_per_second();
        if unpaired == 0.0 {
            return 0.0;
        }
        self.paired.writes_per_second() / unpaired
    }

    /// Paired over unpaired output lines per second.
    pub fn lines_ratio(&self) -> f64 {
        let unpaired = self.unpaired.lines_per_second();
        if unpaired == 0.0 {
            return 0.0;
        }
        self.paired.lines_per_second() / unpaired
    }
}

impl PairsReport {
    /// The highest paired throughput of the sweep over the highest unpaired
    /// one (acknowledged writes per second, each at whichever writer count
    /// gave the most): the ratio of what each kind sustains at saturation.
    pub fn peak_ratio(&self) -> f64 {
        let peak = |kind: fn(&WritersResult) -> &PhaseResult| {
            self.throughput
                .iter()
                .map(|result| kind(result).writes_per_second())
                .fold(0.0, f64::max)
        };
        let unpaired = peak(|result| &result.unpaired);
        if unpaired == 0.0 {
            return 0.0;
        }
        peak(|result| &result.paired) / unpaired
    }
}

/// Starts the cluster, runs both parts and stops the cluster.
pub async fn run(options: PairsOptions) -> Result<PairsReport, String> {
    let running_total = read_guest(&options, "running-total.wasm")?;
    let cpu_heavy = match options.memory_mib {
        Some(_) => Some(read_guest(&options, "cpu-heavy.wasm")?),
        None => None,
    };
    std::fs::create_dir_all(&options.cluster.data_dir).map_err(|error| {
        format!(
            "cannot create {}: {error}",
            options.cluster.data_dir.display()
        )
    })?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let mut cluster = Cluster::new(options.cluster.clone(), http);
    for id in Cluster::node_ids() {
        cluster.start(id)?;
    }
    cluster.wait_for_leader().await?;
    let result = run_parts(&mut cluster, &options, running_total, cpu_heavy).await;
    for id in Cluster::node_ids() {
        if cluster.is_running(id) {
            cluster.kill(id).await?;
        }
    }
    result
}

async fn run_parts(
    cluster: &mut Cluster,
    options: &PairsOptions,
    running_total: Bytes,
    cpu_heavy: Option<Bytes>,
) -> Result<PairsReport, String> {
    let mut throughput = Vec::with_capacity(options.writers.len());
    let mut phase_index = 0;
    for &writers in &options.writers {
        let mut result = WritersResult {
            writers,
            paired: PhaseResult::default(),
            unpaired: PhaseResult::default(),
        };
        // ABBA: each kind runs once early and once late for this count.
        for is_unpaired in [false, true, true, false] {
            let phase = Phase {
                writers,
                is_unpaired,
                index: phase_index,
            };
            phase_index += 1;
            let counters_before = PairCounters::read(cluster).await?;
            let measured = throughput_phase(cluster, options, running_total.clone(), phase).await?;
            print_phase(phase, &measured);
            if !is_unpaired {
                let counters = PairCounters::read(cluster).await?;
                println!(
                    "  pair channel: {}",
                    counters.describe_since(&counters_before)
                );
            }
            if is_unpaired {
                result.unpaired.add(&measured);
            } else {
                result.paired.add(&measured);
            }
        }
        throughput.push(result);
    }
    let failovers = if options.failovers == 0 {
        Samples::new()
    } else {
        let (module, spawn) = failover_guest(options, running_total, cpu_heavy);
        failover_part(cluster, options.failovers, module, spawn).await?
    };
    Ok(PairsReport {
        throughput,
        failovers,
    })
}

fn read_guest(options: &PairsOptions, file: &str) -> Result<Bytes, String> {
    let path = options.guests_dir.join(file);
    std::fs::read(&path)
        .map(Bytes::from)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// One throughput phase: how many writers, which kind, its place in the run.
#[derive(Debug, Clone, Copy)]
struct Phase {
    writers: usize,
    is_unpaired: bool,
    index: usize,
}

fn print_phase(phase: Phase, result: &PhaseResult) {
    println!(
        "phase {} {} writers={}: {} writes acknowledged ({:.0}/s), {} failed, {} lines read ({:.0}/s)",
        phase.index,
        if phase.is_unpaired { "unpaired" } else { "paired" },
        phase.writers,
        result.acknowledged_writes,
        result.writes_per_second(),
        result.failed_writes,
        result.output_lines,
        result.lines_per_second(),
    );
}

/// A client of `endpoints` in that order (the first is tried first).
fn client_of(endpoints: Vec<String>) -> Result<Client, String> {
    client_with(endpoints, ClientOptions::default())
}

fn client_with(endpoints: Vec<String>, options: ClientOptions) -> Result<Client, String> {
    Client::with_options(endpoints, None, options)
        .map_err(|error| format!("cannot build a client: {error}"))
}

/// Longest pause between two attempts of the failover part's writer and
/// reader.
const FAILOVER_RETRY_PAUSE_MAX: Duration = Duration::from_millis(20);

/// A client for the failover part: it retries every few milliseconds instead
/// of backing off exponentially (the default 50 ms doubling to 1 s), so the
/// time measured is when the cluster answers again, not when the client's
/// backoff schedule next tries (with the default client every failover
/// measured 0.76 s = 50 + 100 + 200 + 400 ms, or 1.56 s when not ready by
/// then).
fn failover_client_of(endpoints: Vec<String>) -> Result<Client, String> {
    let options = ClientOptions {
        backoff_initial: Duration::from_millis(5),
        backoff_max: FAILOVER_RETRY_PAUSE_MAX,
        ..ClientOptions::default()
    };
    client_with(endpoints, options)
}

/// Every node's URL, node `first` first.
fn endpoints_from(cluster: &Cluster, first: u16) -> Vec<String> {
    let mut ids: Vec<u16> = Cluster::node_ids().collect();
    ids.sort_by_key(|&id| id != first);
    ids.into_iter().map(|id| cluster.client_url(id)).collect()
}

async fn throughput_phase(
    cluster: &Cluster,
    options: &PairsOptions,
    module: Bytes,
    phase: Phase,
) -> Result<PhaseResult, String> {
    let Phase {
        writers: writer_count,
        is_unpaired,
        index: phase_index,
    } = phase;
    // Node 1 takes every spawn, so paired and unpaired primaries share a node.
    const SPAWN_NODE: u16 = 1;
    let endpoints = endpoints_from(cluster, SPAWN_NODE);
    let spawner = client_of(vec![cluster.client_url(SPAWN_NODE)])?;
    let kind = if is_unpaired { "unpaired" } else { "paired" };
    let spawn = SpawnOptions {
        name: format!("bench-{kind}-{phase_index}-{}", std::process::id()),
        args: vec!["running-total".into()],
        unpaired: is_unpaired,
        ..SpawnOptions::default()
    };
    let spawned = spawner
        .spawn(module, &spawn)
        .await
        .map_err(|error| format!("cannot spawn {}: {error}", spawn.name))?;
    let pid = spawned.pid;
    if !is_unpaired {
        wait_caught_up(&spawner, pid, None).await?;
    }
    let reader_client = client_of(endpoints.clone())?;
    let started = Instant::now();
    let reader = tokio::spawn(count_lines_until_exit(reader_client, pid, started));
    let deadline = started + options.phase;
    let mut writers = Vec::with_capacity(writer_count);
    for writer_index in 0..writer_count {
        let client = client_of(endpoints.clone())?;
        writers.push(tokio::spawn(write_numbers(
            client,
            pid,
            deadline,
            writer_index as u64,
        )));
    }
    let mut result = PhaseResult::default();
    for writer in writers {
        let (acknowledged, failed) = writer
            .await
            .map_err(|error| format!("a writer failed: {error}"))?;
        result.acknowledged_writes += acknowledged;
        result.failed_writes += failed;
    }
    result.writing = started.elapsed();
    spawner
        .write_stdin(pid, Bytes::new(), true)
        .await
        .map_err(|error| format!("cannot close stdin of {pid}: {error}"))?;
    let (lines, until_last_line) = tokio::time::timeout(DRAIN_TIMEOUT, reader)
        .await
        .map_err(|_| format!("process {pid}'s output did not end within {DRAIN_TIMEOUT:?}"))?
        .map_err(|error| format!("the reader failed: {error}"))??;
    result.output_lines = lines;
    result.until_last_line = until_last_line;
    // Best effort: a leftover process only costs the cluster memory.
    if let Err(error) = spawner.delete_process(pid).await {
        eprintln!("understudy-bench: cannot delete process {pid}: {error}");
    }
    Ok(result)
}

/// Writes one number per stdin write until `deadline`; returns the counts of
/// acknowledged and failed writes.
async fn write_numbers(client: Client, pid: u64, deadline: Instant, seed: u64) -> (u64, u64) {
    let mut acknowledged = 0u64;
    let mut failed = 0u64;
    while Instant::now() < deadline {
        let number = seed * 1_000_000 + acknowledged + failed;
        match client
            .write_stdin(pid, Bytes::from(format!("{number}\n")), false)
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(_) => failed += 1,
        }
    }
    (acknowledged, failed)
}

/// Reads stdout from offset 0 until the process exits; returns the number of
/// `total` lines and the time from `started` to the last one.
async fn count_lines_until_exit(
    client: Client,
    pid: u64,
    started: Instant,
) -> Result<(u64, Duration), String> {
    let mut offset = 0u64;
    let mut lines = 0u64;
    let mut partial_line: Vec<u8> = Vec::new();
    let mut until_last_line = Duration::ZERO;
    loop {
        let chunk = match client
            .read_output(pid, OutputStream::Stdout, offset, OUTPUT_WAIT)
            .await
        {
            Ok(chunk) => chunk,
            Err(ClientError::NotFound { detail }) => {
                return Err(format!("process {pid} vanished: {detail}"))
            }
            Err(_) => {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let total_lines = count_total_lines(&mut partial_line, &chunk.bytes);
        if total_lines > 0 {
            lines += total_lines;
            until_last_line = started.elapsed();
        }
        offset = chunk.next_offset;
        if chunk.exited && chunk.bytes.is_empty() {
            return Ok((lines, until_last_line));
        }
    }
}

/// Counts complete `<count> total <sum>` lines in `bytes`, keeping an
/// unfinished line in `partial_line` for the next chunk.
fn count_total_lines(partial_line: &mut Vec<u8>, bytes: &[u8]) -> u64 {
    let mut count = 0;
    for &byte in bytes {
        if byte != b'\n' {
            partial_line.push(byte);
            continue;
        }
        // `done: N numbers, total T` at exit is not a per-input line.
        let is_total_line = partial_line.windows(7).any(|window| window == b" total ")
            && !partial_line.starts_with(b"done:");
        if is_total_line {
            count += 1;
        }
        partial_line.clear();
    }
    count
}

/// Waits until process `pid` has a backup whose state is `caught_up` (and, if
/// `not_on` is given, whose primary is not that node).
async fn wait_caught_up(client: &Client, pid: u64, not_on: Option<u64>) -> Result<(), String> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        if let Ok(status) = client.process_status(pid).await {
            let primary_moved = not_on.is_none_or(|node| status.primary != node);
            if status.backup.is_some() && status.backup_state == "caught_up" && primary_moved {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "process {pid} had no caught-up backup within {PHASE_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The failover part's module and spawn options.
fn failover_guest(
    options: &PairsOptions,
    running_total: Bytes,
    cpu_heavy: Option<Bytes>,
) -> (FailoverGuest, SpawnOptions) {
    let name = format!("bench-failover-{}", std::process::id());
    match (options.memory_mib, cpu_heavy) {
        (Some(memory_mib), Some(module)) => (
            FailoverGuest {
                module,
                line: format!("{CPU_HEAVY_ROUNDS_PER_LINE}\n"),
            },
            SpawnOptions {
                name,
                args: vec!["cpu-heavy".into(), memory_mib.to_string()],
                ..SpawnOptions::default()
            },
        ),
        _ => (
            FailoverGuest {
                module: running_total,
                line: "1\n".into(),
            },
            SpawnOptions {
                name,
                args: vec!["running-total".into()],
                ..SpawnOptions::default()
            },
        ),
    }
}

/// The guest of the failover part and the line its writer sends.
struct FailoverGuest {
    module: Bytes,
    line: String,
}

/// One stdout chunk as the failover reader saw it.
struct ChunkSeen {
    /// Complete lines read so far, from offset 0 (the first is the guest's
    /// start line, then one per input line).
    lines: u64,
    received_at: Instant,
}

async fn failover_part(
    cluster: &mut Cluster,
    kills: usize,
    guest: FailoverGuest,
    spawn: SpawnOptions,
) -> Result<Samples, String> {
    let all_endpoints = endpoints_from(cluster, 1);
    let client = client_of(all_endpoints.clone())?;
    let spawned = client
        .spawn(guest.module.clone(), &spawn)
        .await
        .map_err(|error| format!("cannot spawn {}: {error}", spawn.name))?;
    let pid = spawned.pid;
    wait_caught_up(&client, pid, None).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn(feed_forever(
        failover_client_of(all_endpoints.clone())?,
        pid,
        guest.line.clone(),
        Arc::clone(&stop),
        Arc::clone(&acknowledged),
        Arc::clone(&sent),
    ));
    let (chunk_sender, mut chunks) = mpsc::channel(CHUNK_QUEUE_MAX);
    let reader = tokio::spawn(read_forever(
        failover_client_of(all_endpoints)?,
        pid,
        chunk_sender,
        Arc::clone(&stop),
    ));
    let mut samples = Samples::new();
    let mut outcome = Ok(());
    for round in 1..=kills {
        let counters = WriterCounters {
            acknowledged: &acknowledged,
            sent: &sent,
        };
        match one_failover(cluster, &client, pid, &mut chunks, counters).await {
            Ok((node, elapsed)) => {
                println!(
                    "failover {round}: node {node} killed; first new output after {} ms",
                    format_millis(Some(elapsed))
                );
                samples.record(elapsed);
            }
            Err(error) => {
                outcome = Err(format!("failover {round}: {error}"));
                break;
            }
        }
    }
    if outcome.is_ok() {
        print_recovery_events(&client, pid).await;
    }
    stop.store(true, Ordering::Relaxed);
    chunks.close();
    // The tasks end within one call's deadline once `stop` is set; aborting
    // them is quicker and loses nothing the run still needs.
    writer.abort();
    reader.abort();
    outcome.map(|()| samples)
}

/// Prints the pid's checkpoint and replay events: what each checkpoint cost
/// (bytes, capture time; the first to each new backup is full) and how many
/// records each promotion replayed after the checkpoint it restored.
async fn print_recovery_events(client: &Client, pid: u64) {
    match client.process_events(pid).await {
        Ok(events) => {
            for event in events {
                if event.kind == "checkpoint" || event.kind == "replayed" {
                    println!(
                        "event {} (epoch {}): {}",
                        event.kind, event.epoch, event.detail
                    );
                }
            }
        }
        Err(error) => println!("no events of {pid}: {error}"),
    }
}

/// Kills the primary's node once; returns the node and the time to the first
/// new output, after the node was restarted and the backup caught up again.
async fn one_failover(
    cluster: &mut Cluster,
    client: &Client,
    pid: u64,
    chunks: &mut mpsc::Receiver<ChunkSeen>,
    counters: WriterCounters<'_>,
) -> Result<(u16, Duration), String> {
    let acknowledged = counters.acknowledged;
    let status = client
        .process_status(pid)
        .await
        .map_err(|error| format!("no status of {pid}: {error}"))?;
    let node = u16::try_from(status.primary)
        .ok()
        .filter(|&id| Cluster::node_ids().contains(&id))
        .ok_or_else(|| format!("primary {} is not a node of this cluster", status.primary))?;
    // Mid-stream: writes are flowing and the reader is receiving output now.
    let writes_before = acknowledged.load(Ordering::Relaxed);
    drain(chunks);
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while acknowledged.load(Ordering::Relaxed) < writes_before + WRITES_BEFORE_KILL {
        next_chunk(chunks, deadline).await?;
    }
    drain(chunks);
    cluster.kill(node).await?;
    let killed_at = Instant::now();
    // Output released before the kill can still reach the reader after it
    // (released output is committed through Raft), so "new" output is the
    // answer to an input line first sent after the kill: line 1 is the start
    // line, line k + 1 answers input k.
    let sent_before_kill = counters.sent.load(Ordering::SeqCst);
    let elapsed = loop {
        let chunk = next_chunk(chunks, killed_at + PHASE_TIMEOUT).await?;
        if chunk.lines > sent_before_kill + 1 && chunk.received_at > killed_at {
            break chunk.received_at - killed_at;
        }
    };
    cluster.start(node)?;
    let caught_up = wait_caught_up(client, pid, Some(u64::from(node)));
    // Keep the chunk queue empty while waiting so the reader never blocks.
    tokio::pin!(caught_up);
    loop {
        tokio::select! {
            result = &mut caught_up => { result?; break; }
            _ = chunks.recv() => {}
        }
    }
    Ok((node, elapsed))
}

/// The failover writer's counts of acknowledged and sent stdin writes.
#[derive(Clone, Copy)]
struct WriterCounters<'a> {
    acknowledged: &'a AtomicU64,
    sent: &'a AtomicU64,
}

/// Drops every queued chunk (the reader never waits on a full queue).
fn drain(chunks: &mut mpsc::Receiver<ChunkSeen>) {
    while chunks.try_recv().is_ok() {}
}

async fn next_chunk(
    chunks: &mut mpsc::Receiver<ChunkSeen>,
    deadline: Instant,
) -> Result<ChunkSeen, String> {
    let wait = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(wait, chunks.recv()).await {
        Ok(Some(chunk)) => Ok(chunk),
        Ok(None) => Err("the reader stopped".into()),
        Err(_) => Err(format!("no output within {PHASE_TIMEOUT:?}")),
    }
}

/// Sends `line` to stdin until `stop`, counting acknowledged writes.
async fn feed_forever(
    client: Client,
    pid: u64,
    line: String,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) {
    let line = Bytes::from(line);
    while !stop.load(Ordering::Relaxed) {
        // Counted before sending: an input counted here may already be on
        // its way, so "sent after the kill" is never overstated.
        sent.fetch_add(1, Ordering::SeqCst);
        match client.write_stdin(pid, line.clone(), false).await {
            Ok(_) => {
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Long-polls stdout until `stop`, reporting every non-empty chunk.
async fn read_forever(
    client: Client,
    pid: u64,
    chunks: mpsc::Sender<ChunkSeen>,
    stop: Arc<AtomicBool>,
) {
    let mut offset = 0u64;
    let mut lines = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match client
            .read_output(pid, OutputStream::Stdout, offset, OUTPUT_WAIT)
            .await
        {
            Ok(chunk) if !chunk.bytes.is_empty() => {
                let received_at = Instant::now();
                offset = chunk.next_offset;
                lines += chunk.bytes.iter().filter(|&&byte| byte == b'\n').count() as u64;
                let seen = ChunkSeen { lines, received_at };
                if chunks.send(seen).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_total_lines_across_chunk_boundaries() {
        let mut partial = Vec::new();
        assert_eq!(
            count_total_lines(&mut partial, b"token 12 started 1.0\n1 to"),
            0
        );
        assert_eq!(
            count_total_lines(
                &mut partial,
                b"tal 5\n2 total 7\ndone: 2 numbers, total 7\n"
            ),
            2
        );
        assert!(partial.is_empty());
    }

    /// A phase that acknowledged `writes` writes in `seconds`.
    fn phase(writes: u64, seconds: u64) -> PhaseResult {
        PhaseResult {
            acknowledged_writes: writes,
            writing: Duration::from_secs(seconds),
            ..PhaseResult::default()
        }
    }

    #[test]
    fn ratio_of_writes_per_second() {
        let result = WritersResult {
            writers: 8,
            paired: phase(90, 2),
            unpaired: phase(100, 2),
        };
        assert!((result.ratio() - 0.9).abs() < 1e-9);
        let nothing_unpaired = WritersResult {
            unpaired: PhaseResult::default(),
            ..result
        };
        assert_eq!(nothing_unpaired.ratio(), 0.0);
    }

    #[test]
    fn peak_ratio_compares_each_kinds_best_writer_count() {
        let sweep = |pairs: &[(u64, u64)]| PairsReport {
            throughput: pairs
                .iter()
                .enumerate()
                .map(|(index, &(paired, unpaired))| WritersResult {
                    writers: index + 1,
                    paired: phase(paired, 1),
                    unpaired: phase(unpaired, 1),
                })
                .collect(),
            failovers: Samples::default(),
        };
        // Unpaired peaks at the second count, paired at the third.
        let report = sweep(&[(10, 50), (60, 100), (85, 90)]);
        assert!((report.peak_ratio() - 0.85).abs() < 1e-9);
        assert_eq!(sweep(&[]).peak_ratio(), 0.0);
    }
}
