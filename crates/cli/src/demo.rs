//! `understudy demo`: a process pair surviving the SIGKILL of its primary's
//! node, checked line by line against a fault-free run.
//!
//! It starts three `understudy node` children (with `dev.rs`'s code, data in a
//! temporary directory), runs the bundled `running-total.wasm` guest and feeds
//! it the numbers 1..=N a batch at a time, waiting for each batch's output
//! before the next. Halfway, with every output so far received, it SIGKILLs
//! the node running the primary, sends the next batch at once and measures
//! the time from the kill to the first output line released after it (the
//! failover as a reader sees it, re-pairing included). Then it feeds the rest,
//! closes stdin and checks the whole output: one token line, unchanged, then
//! exactly the lines a fault-free run prints. Its last line is `demo: ok ...`
//! or `demo: FAILED: <why>` (exit code 1). The nodes are stopped on every
//! path, Ctrl-C included.

use crate::common::{shutdown_signal, CliError};
use crate::dev::{self, DevArgs, DevNode};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::time::Instant;
use understudy_client::{Client, ClientError, ClientOptions, OutputStream, SpawnOptions};

/// The guest the demo runs (see `guests/running-total/main.c`).
const RUNNING_TOTAL_WASM: &[u8] = include_bytes!("../../../guests/running-total.wasm");
/// Nodes of the demo cluster: a primary, a backup and a spare for re-pairing.
const DEMO_NODES: u16 = 3;
/// How long the demo waits for any one step (a batch's output, a failover).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the demo looks for the promotion's `replayed=` event.
const EVENT_WAIT: Duration = Duration::from_secs(3);
/// Pause between looks at the events.
const EVENT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The long-poll of the output reader.
const READ_WAIT: Duration = Duration::from_secs(4);

/// Arguments of `understudy demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Feed the numbers 1..=N.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(4..=100_000))]
    pub numbers: u64,
    /// Numbers per stdin write.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// Pause between batches in milliseconds, so the run can be watched.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Node i (from 1) serves clients on P+i-1 and peers on P+100+i-1.
    #[arg(long, default_value_t = 2379)]
    pub base_port: u16,
}

/// The running demo cluster: children by node id − 1.
struct DemoCluster {
    children: Vec<Child>,
    nodes: Vec<DevNode>,
    data_dir: PathBuf,
}

/// What the failover looked like.
struct Failover {
    killed: u64,
    promoted: u64,
    failover: Duration,
    replayed: Option<u64>,
}

/// Runs `understudy demo`; exits with code 1 after `demo: FAILED: ...`.
pub fn run(args: DemoArgs) -> Result<(), CliError> {
    let dev_args = DevArgs {
        nodes: DEMO_NODES,
        data_dir: None,
        base_port: args.base_port,
        leader_timeout_s: 30,
        heartbeat_interval: 100,
        election_timeout: 1000,
    };
    dev::check_ports_free(&dev_args)?;
    let data_dir = dev::fresh_temp_dir()?;
    std::fs::create_dir_all(&data_dir).map_err(|error| {
        CliError::Failed(format!("cannot create {}: {error}", data_dir.display()))
    })?;
    let outcome = crate::common::block_on(async {
        let mut cluster = start_cluster(&dev_args, data_dir.clone())?;
        let outcome = tokio::select! {
            outcome = demonstrate(&args, &dev_args, &mut cluster) => outcome,
            _ = shutdown_signal() => Err("interrupted".to_string()),
        };
        dev::stop_all(&mut cluster.children, &cluster.nodes).await;
        match outcome {
            Ok(summary) => {
                println!("demo: ok: {summary}");
                Ok(())
            }
            Err(why) => Err(CliError::Failed(why)),
        }
    });
    match outcome {
        Ok(()) => {
            // Only a successful run's data goes: a failed one keeps the logs.
            let _ = std::fs::remove_dir_all(&data_dir);
            Ok(())
        }
        Err(error) => {
            println!(
                "demo: FAILED: {error} (node logs in {})",
                data_dir.display()
            );
            std::process::exit(1);
        }
    }
}

fn start_cluster(dev_args: &DevArgs, data_dir: PathBuf) -> Result<DemoCluster, CliError> {
    let mut cluster = DemoCluster {
        children: Vec::new(),
        nodes: Vec::new(),
        data_dir,
    };
    for id in 1..=dev_args.nodes {
        let (child, node) = dev::spawn_node(dev_args, &cluster.data_dir, id)?;
        cluster.children.push(child);
        cluster.nodes.push(node);
    }
    Ok(cluster)
}

/// The demo proper; `Ok` is the summary, `Err` why it failed.
async fn demonstrate(
    args: &DemoArgs,
    dev_args: &DevArgs,
    cluster: &mut DemoCluster,
) -> Result<String, String> {
    dev::wait_for_leader(dev_args, &cluster.nodes)
        .await
        .map_err(|error| error.to_string())?;
    let client = demo_client(&cluster.nodes)?;
    let spawned = client
        .spawn(RUNNING_TOTAL_WASM, &spawn_options())
        .await
        .map_err(|error| format!("spawning running-total: {error}"))?;
    println!(
        "running running-total.wasm as pid {}: primary node {}, backup {}",
        spawned.pid,
        spawned.primary,
        spawned
            .backup
            .map_or("none".into(), |id| format!("node {id}"))
    );
    let (lines_sender, mut lines) = mpsc::unbounded_channel();
    let reader = tokio::spawn(read_lines(client.clone(), spawned.pid, lines_sender));
    let mut received = Received::default();
    received.wait_for(&mut lines, 1).await?;
    println!("  {}", received.lines[0].0);
    let inputs: Vec<u64> = (1..=args.numbers).collect();
    let half = inputs.len() / 2;
    let batch = usize::try_from(args.batch).map_err(|error| error.to_string())?;
    let feed = Feed {
        client: &client,
        pid: spawned.pid,
        interval: Duration::from_millis(args.interval_ms),
    };
    feed.batches(&inputs[..half], batch, &mut received, &mut lines)
        .await?;
    let failover = fail_over(
        &feed,
        cluster,
        &inputs[half..],
        batch,
        &mut received,
        &mut lines,
    )
    .await?;
    let rest_start = (half + batch).min(inputs.len());
    feed.batches(&inputs[rest_start..], batch, &mut received, &mut lines)
        .await?;
    feed.close(&mut received, &mut lines).await?;
    reader.abort();
    let seen: Vec<String> = received
        .lines
        .iter()
        .map(|(line, _)| line.clone())
        .collect();
    verify_output(&seen, &inputs)?;
    check_stored_stream(&client, spawned.pid, &seen).await?;
    Ok(format!(
        "{} numbers; node {} killed, node {} took over in {} ms (first new output), replayed={}; \
         output has no gap, no duplicate and equals a fault-free run",
        inputs.len(),
        failover.killed,
        failover.promoted,
        failover.failover.as_millis(),
        failover
            .replayed
            .map_or_else(|| "unknown".to_string(), |count| count.to_string())
    ))
}

fn demo_client(nodes: &[DevNode]) -> Result<Client, String> {
    let endpoints = nodes.iter().map(|node| node.client_url.clone()).collect();
    let options = ClientOptions {
        deadline: STEP_TIMEOUT,
        attempt_timeout: READ_WAIT + Duration::from_secs(2),
        ..ClientOptions::default()
    };
    Client::with_options(endpoints, None, options).map_err(|error| error.to_string())
}

fn spawn_options() -> SpawnOptions {
    SpawnOptions {
        name: "running-total".into(),
        args: vec!["running-total".into()],
        env: Vec::new(),
        unpaired: false,
    }
}

/// Output lines received so far, each with when it arrived.
#[derive(Default)]
struct Received {
    lines: Vec<(String, Instant)>,
}

impl Received {
    /// Waits until `count` lines have arrived.
    async fn wait_for(
        &mut self,
        lines: &mut mpsc::UnboundedReceiver<Result<String, ClientError>>,
        count: usize,
    ) -> Result<(), String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while self.lines.len() < count {
            let next = tokio::time::timeout_at(deadline, lines.recv())
                .await
                .map_err(|_| {
                    format!(
                        "only {} of {count} output lines within {STEP_TIMEOUT:?}",
                        self.lines.len()
                    )
                })?;
            match next {
                Some(Ok(line)) => self.lines.push((line, Instant::now())),
                Some(Err(error)) => return Err(format!("reading stdout: {error}")),
                None => {
                    return Err(format!(
                        "stdout ended after {} lines, {count} expected",
                        self.lines.len()
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Reads the process's stdout from offset 0 and sends each complete line
/// until the process has exited and its output is drained (or a read fails).
async fn read_lines(
    client: Client,
    pid: u64,
    sender: mpsc::UnboundedSender<Result<String, ClientError>>,
) {
    let mut offset = 0;
    let mut partial = Vec::new();
    loop {
        let chunk = match client
            .read_output(pid, OutputStream::Stdout, offset, READ_WAIT)
            .await
        {
            Ok(chunk) => chunk,
            Err(error) => {
                let _ = sender.send(Err(error));
                return;
            }
        };
        offset = chunk.next_offset;
        partial.extend_from_slice(&chunk.bytes);
        while let Some(end) = partial.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]).into_owned();
            if sender.send(Ok(text)).is_err() {
                return; // the demo stopped listening
            }
        }
        if chunk.exited && chunk.bytes.is_empty() {
            return;
        }
    }
}

/// Writes numbers to the process's stdin.
struct Feed<'a> {
    client: &'a Client,
    pid: u64,
    interval: Duration,
}

impl Feed<'_> {
    /// Sends `numbers` one line each, `batch` per write; waits for each
    /// batch's output lines before the next.
    async fn batches(
        &self,
        numbers: &[u64],
        batch: usize,
        received: &mut Received,
        lines: &mut mpsc::UnboundedReceiver<Result<String, ClientError>>,
    ) -> Result<(), String> {
        for chunk in numbers.chunks(batch) {
            self.send(chunk).await?;
            received
                .wait_for(lines, received.lines.len() + chunk.len())
                .await?;
            let last = &received.lines[received.lines.len() - 1].0;
            println!("  sent {chunk:?} -> {last}");
            // Pacing for a person watching, not synchronisation.
            tokio::time::sleep(self.interval).await;
        }
        Ok(())
    }

    async fn send(&self, numbers: &[u64]) -> Result<(), String> {
        let text: String = numbers.iter().map(|number| format!("{number}\n")).collect();
        self.client
            .write_stdin(self.pid, text, false)
            .await
            .map(|_| ())
            .map_err(|error| format!("writing stdin: {error}"))
    }

    /// Closes stdin and waits for the `done:` line.
    async fn close(
        &self,
        received: &mut Received,
        lines: &mut mpsc::UnboundedReceiver<Result<String, ClientError>>,
    ) -> Result<(), String> {
        self.client
            .write_stdin(self.pid, Vec::new(), true)
            .await
            .map_err(|error| format!("closing stdin: {error}"))?;
        received.wait_for(lines, received.lines.len() + 1).await?;
        println!(
            "  closed stdin -> {}",
            received.lines[received.lines.len() - 1].0
        );
        Ok(())
    }
}

/// SIGKILLs the primary's node, sends the next batch and measures the time to
/// its first output line; reports who took over and what the promotion replayed.
async fn fail_over(
    feed: &Feed<'_>,
    cluster: &mut DemoCluster,
    remaining: &[u64],
    batch: usize,
    received: &mut Received,
    lines: &mut mpsc::UnboundedReceiver<Result<String, ClientError>>,
) -> Result<Failover, String> {
    let status = feed
        .client
        .process_status(feed.pid)
        .await
        .map_err(|error| format!("status before the kill: {error}"))?;
    let killed = status.primary;
    let child = usize::try_from(killed)
        .ok()
        .and_then(|id| cluster.children.get_mut(id.wrapping_sub(1)))
        .ok_or_else(|| format!("the primary is node {killed}, which the demo did not start"))?;
    println!(
        "SIGKILL node {killed} (the primary), epoch {}",
        status.epoch
    );
    let killed_at = Instant::now();
    child
        .start_kill()
        .map_err(|error| format!("cannot kill node {killed}: {error}"))?;
    // Reaped so that it does not linger as a zombie; it is gone either way.
    let _ = child.wait().await;
    let next = &remaining[..batch.min(remaining.len())];
    let before = received.lines.len();
    feed.send(next).await?;
    received.wait_for(lines, before + next.len()).await?;
    let failover = received.lines[before].1.duration_since(killed_at);
    let last = &received.lines[received.lines.len() - 1].0;
    println!("  sent {next:?} -> {last}");
    let promoted = feed
        .client
        .process_status(feed.pid)
        .await
        .map_err(|error| format!("status after the kill: {error}"))?;
    if promoted.primary == killed || promoted.epoch <= status.epoch {
        return Err(format!(
            "output continued but the status still shows primary node {} in epoch {}",
            promoted.primary, promoted.epoch
        ));
    }
    let replayed = promotion_replayed(feed.client, feed.pid, promoted.epoch).await;
    println!(
        "node {} took over in epoch {}; first new output {} ms after the kill; replayed={}",
        promoted.primary,
        promoted.epoch,
        failover.as_millis(),
        replayed.map_or_else(|| "unknown".to_string(), |count| count.to_string())
    );
    Ok(Failover {
        killed,
        promoted: promoted.primary,
        failover,
        replayed,
    })
}

/// The `replayed=<N>` the promoted backup reported in `epoch` (an event of
/// the promotion carries it in its detail). The event is committed on its own
/// path, possibly after the first output, so it is polled for a short while.
async fn promotion_replayed(client: &Client, pid: u64, epoch: u64) -> Option<u64> {
    let deadline = Instant::now() + EVENT_WAIT;
    loop {
        if let Ok(events) = client.process_events(pid).await {
            let replayed = events
                .iter()
                .rev()
                .filter(|event| event.epoch == epoch)
                .find_map(|event| replayed_count(&event.detail));
            if replayed.is_some() {
                return replayed;
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(EVENT_POLL_INTERVAL).await;
    }
}

/// `N` from a detail containing `replayed=N`.
pub fn replayed_count(detail: &str) -> Option<u64> {
    let start = detail.find("replayed=")? + "replayed=".len();
    let digits: String = detail[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The lines a fault-free run of running-total prints for `inputs`, after its
/// token line: `<count> total <sum>` per number, then the `done:` line.
pub fn expected_lines(inputs: &[u64]) -> Vec<String> {
    let mut total: u64 = 0;
    let mut lines = Vec::with_capacity(inputs.len() + 1);
    for (index, value) in inputs.iter().enumerate() {
        total += value;
        lines.push(format!("{} total {total}", index + 1));
    }
    lines.push(format!("done: {} numbers, total {total}", inputs.len()));
    lines
}

/// Checks `lines` (the whole output) against a fault-free run: exactly one
/// token line, first, and then exactly [`expected_lines`].
pub fn verify_output(lines: &[String], inputs: &[u64]) -> Result<(), String> {
    let tokens = lines
        .iter()
        .filter(|line| line.starts_with("token "))
        .count();
    if tokens != 1 {
        return Err(format!("{tokens} token lines, exactly 1 expected"));
    }
    if !lines[0].starts_with("token ") || !lines[0].contains(" started ") {
        return Err(format!(
            "the first line is {:?}, not the token line",
            lines[0]
        ));
    }
    let expected = expected_lines(inputs);
    let actual = &lines[1..];
    if let Some(index) = (0..expected.len().min(actual.len())).find(|&i| actual[i] != expected[i]) {
        return Err(format!(
            "line {} is {:?}, a fault-free run prints {:?}",
            index + 2,
            actual[index],
            expected[index]
        ));
    }
    if actual.len() != expected.len() {
        return Err(format!(
            "{} lines after the token, a fault-free run prints {}",
            actual.len(),
            expected.len()
        ));
    }
    Ok(())
}

/// Reads the stored stdout again from offset 0: it must be exactly what the
/// reader saw incrementally (so the token line was not rewritten either).
async fn check_stored_stream(client: &Client, pid: u64, seen: &[String]) -> Result<(), String> {
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
            .map_err(|error| format!("re-reading stdout: {error}"))?;
        if chunk.bytes.is_empty() {
            break;
        }
        stored.extend_from_slice(&chunk.bytes);
    }
    let expected: String = seen.iter().map(|line| format!("{line}\n")).collect();
    if stored != expected.as_bytes() {
        return Err("stdout read again from offset 0 differs from what was read as it ran".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(lines: &[String]) -> Vec<String> {
        let mut all = vec!["token 00ff00ff00ff00ff started 1.000000001".to_string()];
        all.extend_from_slice(lines);
        all
    }

    #[test]
    fn a_fault_free_run_prints_running_totals_then_done() {
        assert_eq!(
            expected_lines(&[1, 2, 3]),
            [
                "1 total 1",
                "2 total 3",
                "3 total 6",
                "done: 3 numbers, total 6"
            ]
        );
    }

    #[test]
    fn verification_catches_gaps_duplicates_and_second_tokens() {
        let inputs = [1, 2, 3];
        let good = with_token(&expected_lines(&inputs));
        assert_eq!(verify_output(&good, &inputs), Ok(()));
        let mut gap = good.clone();
        gap.remove(2);
        assert!(verify_output(&gap, &inputs).is_err());
        let mut duplicate = good.clone();
        duplicate.insert(2, good[2].clone());
        assert!(verify_output(&duplicate, &inputs).is_err());
        let mut second_token = good.clone();
        second_token.insert(3, good[0].clone());
        assert!(verify_output(&second_token, &inputs).is_err());
        let missing_done = good[..good.len() - 1].to_vec();
        assert!(verify_output(&missing_done, &inputs).is_err());
    }

    #[test]
    fn the_replayed_count_is_read_from_the_promotion_detail() {
        assert_eq!(
            replayed_count("node 2 promoted, replayed=17 records"),
            Some(17)
        );
        assert_eq!(replayed_count("replayed=3"), Some(3));
        assert_eq!(replayed_count("no count"), None);
    }
}
