//! Three in-process nodes on 127.0.0.1 with real files and real TCP.

use bytes::Bytes;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use understudy_api::service::{ClusterService, Consistency, ServiceError};
use understudy_kv::{Command, Operation, Response};
use understudy_node::{start, NodeConfig, NodeOptions, NodeService, RunningNode};

/// Every wait in these tests gives up after this long.
const DEADLINE: Duration = Duration::from_secs(20);

fn free_port() -> SocketAddr {
    // Bind to port 0, read the port, release it: the initial cluster must name
    // peer ports before the nodes start.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address")
}

struct Cluster {
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<RunningNode>>,
    _directory: tempfile::TempDir,
}

fn options() -> NodeOptions {
    NodeOptions {
        tick: Duration::from_millis(10),
        snapshot_threshold_entries: 50,
        ..NodeOptions::default()
    }
}

impl Cluster {
    async fn start(size: u64) -> Cluster {
        let directory = tempfile::tempdir().expect("temp dir");
        let peers: Vec<(u64, SocketAddr)> = (1..=size).map(|id| (id, free_port())).collect();
        let initial_cluster: Vec<(u64, String)> = peers
            .iter()
            .map(|(id, address)| (*id, address.to_string()))
            .collect();
        let configs: Vec<NodeConfig> = peers
            .iter()
            .map(|(id, peer)| NodeConfig {
                id: *id,
                data_dir: PathBuf::from(directory.path()).join(format!("node-{id}")),
                listen_client: free_port(),
                listen_peer: *peer,
                advertise_client: None,
                initial_cluster: initial_cluster.clone(),
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(300),
                client_token: None,
            })
            .collect();
        let mut cluster = Cluster {
            configs,
            nodes: Vec::new(),
            _directory: directory,
        };
        cluster.start_all().await;
        cluster
    }

    async fn start_all(&mut self) {
        self.nodes.clear();
        for config in &self.configs {
            let node = start(config.clone(), options()).await.expect("node starts");
            self.nodes.push(Some(node));
        }
    }

    async fn stop_all(&mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(node) = node.take() {
                node.stop().await.expect("clean stop");
            }
        }
    }

    fn service(&self, index: usize) -> Arc<NodeService> {
        self.nodes[index].as_ref().expect("node running").service()
    }

    /// Polls until every node agrees on one leader; returns its index.
    async fn wait_for_leader(&self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut leaders = Vec::new();
            for index in 0..self.nodes.len() {
                if let Ok(status) = self.service(index).cluster().await {
                    leaders.push(status.leader_id);
                }
            }
            if leaders.len() == self.nodes.len()
                && leaders.iter().all(|l| l.is_some() && *l == leaders[0])
            {
                let leader = leaders[0].expect("checked above");
                return (leader - 1) as usize;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {DEADLINE:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn put(key: &str, value: &str) -> Command {
    Command {
        request_id: None,
        operation: Operation::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
        },
    }
}

async fn read(service: &NodeService, key: &str) -> Option<Bytes> {
    service
        .get(
            Bytes::copy_from_slice(key.as_bytes()),
            Consistency::Linearizable,
        )
        .await
        .expect("linearizable read succeeds")
        .item
        .map(|item| item.value)
}

/// Writes through a node, retrying only `Unavailable` (never appended) while a
/// leader settles.
async fn write(service: &NodeService, command: Command) -> Response {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match service.write(command.clone()).await {
            Ok(response) => return response,
            Err(ServiceError::Unavailable { .. }) if Instant::now() < deadline => {}
            Err(error) => panic!("write failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_node_are_read_everywhere_and_survive_restart() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;

    let response = write(&cluster.service(leader), put("through-leader", "1")).await;
    assert!(matches!(response, Response::Put { .. }), "{response:?}");
    // Forwarded: the follower proposes nothing itself.
    let response = write(&cluster.service(follower), put("through-follower", "2")).await;
    assert!(matches!(response, Response::Put { .. }), "{response:?}");
    for index in 0..3 {
        let service = cluster.service(index);
        assert_eq!(
            read(&service, "through-leader").await.as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            read(&service, "through-follower").await.as_deref(),
            Some(&b"2"[..])
        );
    }
    // Enough writes to pass the snapshot threshold, so restart also exercises
    // snapshots on disk.
    for round in 0..120 {
        write(
            &cluster.service(round % 3),
            put(&format!("bulk-{round}"), "x"),
        )
        .await;
    }

    cluster.stop_all().await;
    cluster.start_all().await;
    cluster.wait_for_leader().await;
    for index in 0..3 {
        let service = cluster.service(index);
        assert_eq!(
            read(&service, "through-follower").await.as_deref(),
            Some(&b"2"[..])
        );
        assert_eq!(read(&service, "bulk-119").await.as_deref(), Some(&b"x"[..]));
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_on_the_peer_port_is_refused_and_changes_nothing() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    write(&cluster.service(leader), put("k", "before")).await;
    let status_before = cluster.service(leader).cluster().await.expect("status");

    for index in 0..3 {
        let peer = cluster.nodes[index]
            .as_ref()
            .expect("running")
            .peer_address();
        let mut stream = tokio::net::TcpStream::connect(peer).await.expect("connect");
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n garbage \xff\xfe")
            .await;
        // The node must close the connection: reading reaches end of stream (or
        // a reset) before the deadline instead of hanging.
        let mut buffer = [0u8; 64];
        let closed = tokio::time::timeout(DEADLINE, stream.read(&mut buffer))
            .await
            .expect("connection closed within the deadline");
        assert!(
            matches!(closed, Ok(0) | Err(_)),
            "node answered garbage: {closed:?}"
        );
    }

    let status_after = cluster.service(leader).cluster().await.expect("status");
    assert_eq!(
        status_before.term, status_after.term,
        "garbage disturbed the term"
    );
    for index in 0..3 {
        assert_eq!(
            read(&cluster.service(index), "k").await.as_deref(),
            Some(&b"before"[..])
        );
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_api_serves_the_cluster() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let client = reqwest::Client::new();
    let base = |index: usize| {
        format!(
            "http://{}",
            cluster.nodes[index]
                .as_ref()
                .expect("running")
                .client_address()
        )
    };
    let response = client
        .put(format!("{}/v1/kv/http-key", base(follower)))
        .body("http-value")
        .send()
        .await
        .expect("PUT sent");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = client
        .get(format!("{}/v1/kv/http-key", base(leader)))
        .send()
        .await
        .expect("GET sent")
        .json()
        .await
        .expect("JSON body");
    assert_eq!(body["value"], "http-value");
    // Every member registers its client URL, so the status names all of them.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status: serde_json::Value = client
            .get(format!("{}/v1/cluster", base(follower)))
            .send()
            .await
            .expect("GET /v1/cluster sent")
            .json()
            .await
            .expect("JSON body");
        let members = status["members"].as_array().expect("members").clone();
        let registered = members
            .iter()
            .filter(|member| {
                member["client_address"]
                    .as_str()
                    .is_some_and(|url| url.starts_with("http://127.0.0.1:"))
            })
            .count();
        if members.len() == 3 && registered == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members never registered: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = client
        .get(format!("{}/metrics", base(leader)))
        .send()
        .await
        .expect("GET /metrics sent")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("understudy_proposals_total"), "{metrics}");
    cluster.stop_all().await;
}

impl Cluster {
    async fn stop_node(&mut self, index: usize) {
        let node = self.nodes[index].take().expect("node running");
        node.stop().await.expect("clean stop");
    }

    async fn restart_node(&mut self, index: usize) {
        let node = start(self.configs[index].clone(), options())
            .await
            .expect("node restarts");
        self.nodes[index] = Some(node);
    }
}

/// Polls a serializable read on one node until it sees `value`.
async fn wait_for_local_value(service: &NodeService, key: &str, value: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let found = service
            .get(
                Bytes::copy_from_slice(key.as_bytes()),
                Consistency::Serializable,
            )
            .await
            .expect("serializable reads are local")
            .item
            .map(|item| item.value);
        if found.as_deref() == Some(value.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached {value}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_many_writes_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let lagging = (leader + 1) % 3;
    cluster.stop_node(lagging).await;
    // Four times the snapshot threshold: the leader compacts past what the
    // lagging node holds, so only a snapshot can bring it up to date.
    for round in 0..200 {
        write(
            &cluster.service(leader),
            put(&format!("missed-{round}"), "y"),
        )
        .await;
    }
    cluster.restart_node(lagging).await;
    wait_for_local_value(&cluster.service(lagging), "missed-199", "y").await;
    wait_for_local_value(&cluster.service(lagging), "missed-0", "y").await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_answers_unavailable_or_timeout_within_three_seconds() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    write(&cluster.service(leader), put("k", "v")).await;
    let survivor = (leader + 1) % 3;
    for index in 0..3 {
        if index != survivor {
            cluster.stop_node(index).await;
        }
    }
    let service = cluster.service(survivor);
    // The contract: the minority side answers within 3 seconds.
    let bound = Duration::from_millis(3200);
    let started = Instant::now();
    let written = service.write(put("k", "lost?")).await;
    assert!(
        matches!(
            written,
            Err(ServiceError::Unavailable { .. }) | Err(ServiceError::Timeout { .. })
        ),
        "{written:?}"
    );
    assert!(
        started.elapsed() < bound,
        "write took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let read = service
        .get(Bytes::from_static(b"k"), Consistency::Linearizable)
        .await;
    assert!(
        matches!(read, Err(ServiceError::Unavailable { .. })),
        "{read:?}"
    );
    assert!(
        started.elapsed() < bound,
        "read took {:?}",
        started.elapsed()
    );
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handshakes_from_another_cluster_are_refused() {
    use understudy_node::wire::{encode_frame, Envelope, Handshake, Payload};
    let mut cluster = Cluster::start(3).await;
    cluster.wait_for_leader().await;
    let peer = cluster.nodes[0].as_ref().expect("running").peer_address();
    let frame = encode_frame(&Envelope {
        cluster_id: 0xdead_beef,
        from: 2,
        incarnation: u64::MAX,
        payload: Payload::Handshake(Handshake {
            to: 1,
            peer_address: "127.0.0.1:9".into(),
        }),
    })
    .expect("encodes");
    let mut stream = tokio::net::TcpStream::connect(peer).await.expect("connect");
    stream.write_all(&frame).await.expect("handshake sent");
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(DEADLINE, stream.read(&mut buffer))
        .await
        .expect("connection closed within the deadline");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    // Node 2's real process is unaffected (its incarnation was not raised by the
    // refused handshake): the cluster still commits.
    let leader = cluster.wait_for_leader().await;
    write(&cluster.service(leader), put("after", "ok")).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_node_joins_and_a_member_is_removed() {
    use understudy_api::service::AddMember;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    write(&cluster.service(leader), put("early", "1")).await;
    let mut config = cluster.configs[0].clone();
    config.id = 4;
    config.data_dir = config.data_dir.with_file_name("node-4");
    config.listen_peer = free_port();
    config.listen_client = free_port();
    config.initial_cluster = Vec::new();
    let joining = start(config.clone(), options())
        .await
        .expect("joiner starts");
    let follower = (leader + 1) % 3;
    let added = cluster
        .service(follower)
        .add_member(AddMember {
            id: 4,
            peer_address: config.listen_peer.to_string(),
            client_address: format!("http://{}", config.listen_client),
        })
        .await
        .expect("member added through a follower");
    // The answer comes once the change is committed, and shows it.
    assert!(
        added.members.iter().any(|member| member.id == 4),
        "{added:?}"
    );
    wait_for_local_value(&joining.service(), "early", "1").await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = cluster.service(leader).cluster().await.expect("status");
        let voter = status
            .members
            .iter()
            .any(|member| member.id == 4 && member.role != "learner");
        if voter {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never promoted: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let removed = ((leader + 2) % 3) as u64 + 1;
    let status = cluster
        .service(leader)
        .remove_member(removed)
        .await
        .expect("member removed");
    assert_eq!(status.leader_id, Some(leader as u64 + 1));
    assert!(
        status.members.iter().all(|member| member.id != removed),
        "the answer shows the committed removal: {status:?}"
    );
    write(&joining.service(), put("late", "2")).await;
    wait_for_local_value(&joining.service(), "late", "2").await;
    joining.stop().await.expect("joiner stops");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_apply_once_through_any_node_and_changes_wake_waiters() {
    use understudy_kv::{KeySelector, RequestId};
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let mut command = put("counter", "1");
    command.request_id = Some(RequestId {
        client_id: Bytes::from_static(b"client-a"),
        sequence: 1,
    });
    let first = write(&cluster.service(follower), command.clone()).await;
    let retried = write(&cluster.service(leader), command.clone()).await;
    assert_eq!(first, retried, "a retry returns the first result");
    let item = cluster
        .service(leader)
        .get(Bytes::from_static(b"counter"), Consistency::Linearizable)
        .await
        .expect("read")
        .item
        .expect("key exists");
    assert_eq!(item.version, 1, "the retry did not apply again");

    // A waiter on a follower wakes when a later write applies there.
    let Response::Put { revision } = first else {
        panic!("unexpected {first:?}")
    };
    let waiter_service = cluster.service(follower);
    let waiter = tokio::spawn(async move {
        waiter_service
            .changes(
                KeySelector::Prefix(Bytes::from_static(b"watched/")),
                revision + 1,
                10,
                DEADLINE,
            )
            .await
    });
    write(&cluster.service(leader), put("watched/a", "x")).await;
    let events = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("waiter answered before its deadline")
        .expect("task ran")
        .expect("changes served");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(&events[0].key_value.key[..], b"watched/a");
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_stops_cleanly_hands_over_and_writes_continue() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    write(&cluster.service(leader), put("before", "1")).await;
    cluster.stop_node(leader).await;
    let survivor = (leader + 1) % 3;
    let deadline = Instant::now() + DEADLINE;
    let new_leader = loop {
        let status = cluster.service(survivor).cluster().await.expect("status");
        match status.leader_id {
            Some(id) if id != leader as u64 + 1 => break id,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no new leader: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    write(&cluster.service(survivor), put("after", "2")).await;
    let other = (leader + 2) % 3;
    assert_eq!(
        read(&cluster.service(other), "before").await.as_deref(),
        Some(&b"1"[..])
    );
    assert_ne!(new_leader, leader as u64 + 1);
    cluster.restart_node(leader).await;
    assert_eq!(
        read(&cluster.service(leader), "after").await.as_deref(),
        Some(&b"2"[..])
    );
    cluster.stop_all().await;
}

/// `GET /v1/cluster` through any node shows every member's own commit and
/// applied index and the leader's match index; a stopped member is `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_status_through_a_follower_shows_every_members_indexes() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let written = write(&cluster.service(follower), put("k", "v")).await;
    assert!(matches!(written, Response::Put { .. }));
    let status = cluster.service(follower).cluster().await.expect("status");
    assert_eq!(status.node_id, follower as u64 + 1);
    for member in &status.members {
        assert!(member.commit_index.is_some(), "{member:?}");
        assert!(member.applied_index.is_some(), "{member:?}");
        assert!(member.match_index.is_some(), "{member:?}");
        let expected = if member.id == leader as u64 + 1 {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(member.role, expected);
    }
    let stopped = (leader + 2) % 3;
    let node = cluster.nodes[stopped].take().expect("running");
    node.stop().await.expect("clean stop");
    let status = cluster.service(follower).cluster().await.expect("status");
    let member = status
        .members
        .iter()
        .find(|member| member.id == stopped as u64 + 1)
        .expect("still a member");
    assert_eq!(member.role, "unknown", "{member:?}");
    assert_eq!(member.applied_index, None);
    cluster.stop_all().await;
}

/// A follower forwards over pooled connections: sequential forwarded writes
/// reuse one connection instead of opening one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwarded_requests_reuse_pooled_connections() {
    use std::sync::atomic::Ordering;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.service((leader + 1) % 3);
    let opened = || {
        follower
            .shared()
            .metrics
            .forward_connections_opened
            .load(Ordering::Relaxed)
    };
    let before = opened();
    for number in 0..100 {
        let response = write(&follower, put(&format!("pooled-{number}"), "v")).await;
        assert!(matches!(response, Response::Put { .. }), "{response:?}");
    }
    // At most one new connection (none if the status queries of
    // `wait_for_leader` left one in the pool), two if one was closed meanwhile;
    // without the pool it would be 100.
    let sequential = opened() - before;
    assert!(
        sequential <= 2,
        "{sequential} connections for 100 sequential forwards"
    );
    // Concurrent forwards need a connection each, and then reuse them.
    for _round in 0..3 {
        let writes: Vec<_> = (0..8)
            .map(|number| {
                let follower = follower.clone();
                tokio::spawn(
                    async move { write(&follower, put(&format!("c-{number}"), "v")).await },
                )
            })
            .collect();
        for handle in writes {
            handle.await.expect("write task");
        }
    }
    let total = opened() - before;
    assert!(
        total <= 2 + 8,
        "{total} connections: rounds did not reuse them"
    );
    for number in 0..100 {
        assert_eq!(
            read(&cluster.service(leader), &format!("pooled-{number}"))
                .await
                .as_deref(),
            Some(&b"v"[..])
        );
    }
    cluster.stop_all().await;
}
