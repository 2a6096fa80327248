//! Acceptance: catching up by snapshot after thousands of writes, and adding and
//! removing members under writes.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{eventually, Cluster, ClusterOptions};
use understudy_client::{AddMember, Client, ClientOptions, Consistency};

/// Writes `count` keys `prefix-N` with `concurrency` writers; panics on failure.
///
/// Each writer has a client (and so an idempotency session) of its own: clones
/// of one client share a session, and concurrent calls on one session can reach
/// the log out of order (sequence 2 before 1, or behind the retained window),
/// which the store answers with `session_expired`.
async fn write_many(endpoints: &[String], prefix: &str, count: u64, concurrency: u64) {
    let mut tasks = Vec::new();
    for writer in 0..concurrency {
        let client = Client::new(endpoints.to_vec(), None).expect("a client");
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut number = writer;
            while number < count {
                client
                    .put(&format!("{prefix}-{number}"), number.to_string())
                    .await
                    .expect("a write with every node but one up");
                number += concurrency;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer does not panic");
    }
}

/// Whether node `index` has applied `key` (a local, serializable read).
async fn has_key(cluster: &Cluster, index: usize, key: &str) -> bool {
    let quick = ClientOptions {
        deadline: Duration::from_secs(1),
        ..ClientOptions::default()
    };
    let client = cluster.client_with(index, quick);
    client.get(key, Consistency::Serializable).await.is_ok()
}

/// The largest `N` of the `snapshot-N` files under `directory` (0 if none).
fn latest_snapshot_number(directory: &std::path::Path) -> u64 {
    let mut latest = 0;
    for entry in std::fs::read_dir(directory)
        .expect("read a data dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            latest = latest.max(latest_snapshot_number(&path));
        } else if let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.strip_prefix("snapshot-"))
            .and_then(|number| number.parse::<u64>().ok())
        {
            latest = latest.max(number);
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_for_thousands_of_writes_catches_up_by_snapshot() {
    let options = ClusterOptions {
        snapshot_threshold_entries: Some(200),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(3, options);
    let leader = cluster.leader().await;
    let lagging = (leader + 1) % 3;
    cluster.client(leader).put("early", "1").await.unwrap();
    cluster.kill(lagging);
    let endpoints: Vec<String> = (0..3).map(|index| cluster.client_url(index)).collect();
    write_many(&endpoints, "bulk", 2_000, 16).await;
    // With a 200-entry threshold, 2,000 applied writes made the leader
    // snapshot (and compact) several times, far past the lagging node's last
    // entry (a handful of entries): the only way to catch up is a snapshot.
    // Snapshot files are numbered by a counter, one new number per save.
    let snapshot_files = latest_snapshot_number(&cluster.nodes[leader].data_dir);
    assert!(
        snapshot_files >= 5,
        "the leader snapshotted repeatedly (latest file {snapshot_files})"
    );
    cluster.restart(lagging);
    eventually(
        Duration::from_secs(30),
        "the lagging node catches up",
        || has_key(&cluster, lagging, "bulk-1999"),
    )
    .await;
    let local = cluster
        .client(lagging)
        .range("bulk-", Some(10_000), Consistency::Serializable)
        .await
        .unwrap();
    assert_eq!(
        local.items.len(),
        2_000,
        "every write reached the lagging node"
    );
    assert!(has_key(&cluster, lagging, "early").await);
    // It keeps following after the snapshot.
    cluster.client(leader).put("late", "1").await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the node follows new writes",
        || has_key(&cluster, lagging, "late"),
    )
    .await;
}

/// Writes `m-N` keys until `stop`; counts acknowledged writes in `written` and
/// returns their numbers.
fn spawn_writer(
    endpoints: Vec<String>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Vec<u64>> {
    let client = Client::new(endpoints, None).unwrap();
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        let mut number = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if client
                .put(&format!("m-{number}"), number.to_string())
                .await
                .is_ok()
            {
                acknowledged.push(number);
                written.fetch_add(1, Ordering::Relaxed);
            }
            number += 1;
        }
        acknowledged
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_and_one_leaves_under_writes() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let endpoints: Vec<String> = (0..3).map(|index| cluster.client_url(index)).collect();
    let writer = spawn_writer(endpoints, stop.clone(), written.clone());
    let joining = cluster.spawn_joining(4);
    cluster
        .client(leader)
        .add_member(&AddMember {
            id: 4,
            peer_address: cluster.peer_address(joining),
            client_address: cluster.client_url(joining),
        })
        .await
        .expect("add member 4");
    eventually(
        Duration::from_secs(30),
        "node 4 becomes a voter",
        || async {
            match cluster.client(leader).cluster().await {
                Ok(status) => status
                    .members
                    .iter()
                    .any(|member| member.id == 4 && member.role == "follower"),
                Err(_) => false,
            }
        },
    )
    .await;
    // Remove a follower that is not the new node.
    let leaving = (leader + 1) % 3;
    let leaving_id = cluster.id(leaving);
    cluster
        .client(leader)
        .remove_member(leaving_id)
        .await
        .expect("remove a member");
    eventually(Duration::from_secs(30), "the member is gone", || async {
        match cluster.client(joining).cluster().await {
            Ok(status) => {
                status.members.len() == 3 && status.members.iter().all(|m| m.id != leaving_id)
            }
            Err(_) => false,
        }
    })
    .await;
    cluster.kill(leaving);
    let before = written.load(Ordering::Relaxed);
    eventually(Duration::from_secs(30), "writes continue", || async {
        written.load(Ordering::Relaxed) >= before + 10
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    let range = cluster
        .client(joining)
        .range("m-", Some(10_000), Consistency::Linearizable)
        .await
        .expect("the new node serves linearizable reads");
    for number in acknowledged {
        assert!(
            range
                .items
                .iter()
                .any(|item| item.key == format!("m-{number}")),
            "acknowledged write {number} missing"
        );
    }
}
