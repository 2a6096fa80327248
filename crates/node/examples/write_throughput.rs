//! Rough write throughput of an in-process 3-node cluster (fsync on): N clients
//! write 16-byte keys with 256-byte values through the leader for a few seconds.
//!
//! `cargo run --release -p understudy-node --example write_throughput -- 16`

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use understudy_api::service::ClusterService;
use understudy_kv::{Command, Operation};
use understudy_node::{start, NodeConfig, NodeOptions};

fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address")
}

#[tokio::main]
async fn main() {
    let clients: usize = std::env::args()
        .nth(1)
        .and_then(|argument| argument.parse().ok())
        .unwrap_or(16);
    let directory = tempfile::tempdir().expect("temp dir");
    let peers: Vec<(u64, String)> = (1..=3).map(|id| (id, free_port().to_string())).collect();
    let mut nodes = Vec::new();
    for (id, peer) in &peers {
        let config = NodeConfig {
            id: *id,
            data_dir: directory.path().join(format!("node-{id}")),
            listen_client: free_port(),
            listen_peer: peer.parse().expect("socket address"),
            advertise_client: None,
            initial_cluster: peers.clone(),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            client_token: None,
        };
        nodes.push(start(config, NodeOptions::default()).await.expect("starts"));
    }
    let leader = loop {
        let status = nodes[0].service().cluster().await.expect("status");
        if let Some(leader) = status.leader_id {
            break nodes[(leader - 1) as usize].service();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let run_for = Duration::from_secs(3);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let service = Arc::clone(&leader);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sequence = 0u64;
            while started.elapsed() < run_for {
                sequence += 1;
                let key = format!("{client:06}-{sequence:09}");
                let command = Command {
                    request_id: None,
                    operation: Operation::Put {
                        key: Bytes::from(key),
                        value: Bytes::from(vec![b'v'; 256]),
                    },
                };
                let begun = Instant::now();
                if service.write(command).await.is_ok() {
                    latencies.push(begun.elapsed());
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    latencies.sort();
    let elapsed = started.elapsed().as_secs_f64();
    let percentile = |fraction: f64| {
        latencies[((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1)]
    };
    println!(
        "clients {clients}: {:.0} writes/s, p50 {:?}, p99 {:?} ({} writes)",
        latencies.len() as f64 / elapsed,
        percentile(0.5),
        percentile(0.99),
        latencies.len()
    );
    for node in nodes {
        node.stop().await.expect("stops");
    }
}
