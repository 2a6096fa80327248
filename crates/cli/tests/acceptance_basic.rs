//! Acceptance: election and reads through every node, a full stop and restart,
//! idempotent retries, and malformed requests.

mod support;

use support::raw_put;

use std::io::{Read as _, Write as _};
use std::time::Duration;
use support::{eventually, Cluster};
use understudy_client::Consistency;

/// Reads `key` linearizably through node `index`, as text (`None` if missing).
async fn read(cluster: &Cluster, index: usize, key: &str) -> Option<String> {
    match cluster
        .client(index)
        .get(key, Consistency::Linearizable)
        .await
    {
        Ok(item) => Some(String::from_utf8(item.value.to_bytes().unwrap().to_vec()).unwrap()),
        Err(understudy_client::ClientError::NotFound { .. }) => None,
        Err(error) => panic!("read {key} through node {index}: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_writes_through_any_node_read_everywhere() {
    let cluster = Cluster::start(3);
    cluster.leader().await;
    for writer in 0..3 {
        cluster
            .client(writer)
            .put(&format!("k{writer}"), format!("v{writer}"))
            .await
            .expect("a write through any node succeeds");
    }
    for reader in 0..3 {
        for writer in 0..3 {
            let value = read(&cluster, reader, &format!("k{writer}")).await;
            assert_eq!(value.as_deref(), Some(format!("v{writer}").as_str()));
        }
    }
    // Serializable reads on every node converge to the same data.
    for reader in 0..3 {
        let client = cluster.client(reader);
        eventually(
            Duration::from_secs(10),
            "serializable reads converge",
            || {
                let client = client.clone();
                async move {
                    matches!(client.get("k2", Consistency::Serializable).await,
                    Ok(item) if item.value.to_bytes().unwrap().as_ref() == b"v2")
                }
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_every_node_keeps_all_data() {
    let mut cluster = Cluster::start(3);
    cluster.leader().await;
    let client = cluster.client_all();
    for number in 0..50 {
        client
            .put(&format!("key-{number}"), format!("value-{number}"))
            .await
            .expect("write");
    }
    client.delete("key-7").await.expect("delete");
    let before = client
        .range("", Some(1000), Consistency::Linearizable)
        .await
        .unwrap();
    // Half stop cleanly, one is killed: both paths must keep the data.
    assert!(cluster.terminate(0), "node 0 exits cleanly on SIGTERM");
    assert!(cluster.terminate(1), "node 1 exits cleanly on SIGTERM");
    cluster.kill(2);
    for index in 0..3 {
        cluster.restart(index);
    }
    cluster.leader().await;
    let after = cluster
        .client_all()
        .range("", Some(1000), Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        after.items, before.items,
        "every key, value and revision survived"
    );
    assert_eq!(after.items.len(), 49);
    for index in 0..3 {
        assert_eq!(
            read(&cluster, index, "key-49").await.as_deref(),
            Some("value-49")
        );
        assert_eq!(read(&cluster, index, "key-7").await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_retried_with_the_same_idempotency_key_applies_once() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let (status, first) = raw_put(&cluster.client_url(follower), "once", "a", "retry-test:1").await;
    assert_eq!(status, 200, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    // Another client overwrites the key; a late retry of the first write must
    // not bring "a" back.
    cluster.client(leader).put("once", "b").await.unwrap();
    for index in 0..3 {
        let (status, body) = raw_put(&cluster.client_url(index), "once", "a", "retry-test:1").await;
        assert!(
            status == 200 || status == 409,
            "a retry answers with the first result or session_expired, got {status} {body}"
        );
        if status == 200 {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                body["revision"], first["revision"],
                "the retry reports the first result"
            );
        }
    }
    let item = cluster
        .client(leader)
        .get("once", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(item.value.to_bytes().unwrap().as_ref(), b"b");
    assert_eq!(item.version, 2, "exactly two writes applied to the key");
}

/// Many tasks sharing one client (clones share its session) write at once:
/// the client numbers their writes within the window the cluster retains, so
/// none is refused as `session_expired`, and each applies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_shared_by_many_concurrent_tasks_writes_each_value_once() {
    const TASKS: usize = 48;
    const WRITES_PER_TASK: usize = 20;
    let cluster = Cluster::start(3);
    cluster.leader().await;
    let client = cluster.client_all();
    let before = client.put("shared-start", "0").await.unwrap().revision;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let client = client.clone();
            tokio::spawn(async move {
                for write in 0..WRITES_PER_TASK {
                    let key = format!("shared-{task:02}-{write:02}");
                    client
                        .put(&key, "v")
                        .await
                        .expect("every concurrent write succeeds");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = client.put("shared-end", "0").await.unwrap().revision;
    // Every write bumps the revision by one: exactly TASKS * WRITES_PER_TASK
    // writes were applied between the two markers, none twice.
    assert_eq!(after - before - 1, (TASKS * WRITES_PER_TASK) as u64);
    let listed = client
        .range("shared-", Some(10_000), Consistency::Linearizable)
        .await
        .unwrap();
    // The two markers plus every task's keys.
    assert_eq!(listed.items.len(), TASKS * WRITES_PER_TASK + 2);
}

/// Sends raw bytes to `address` and returns what comes back before the peer
/// closes (or a read timeout).
fn raw_exchange(address: &str, request: &[u8]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The peer may close before reading everything: that is a fine answer.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

async fn expect_error(response: reqwest::Response, status: u16) -> serde_json::Value {
    let actual = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(actual, status, "answer: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error body");
    assert!(body["error"].is_string(), "an error code: {body}");
    body
}

/// Non-UTF-8 request lines get a 4xx, percent-encoded binary keys round-trip,
/// and garbage on every peer port is dropped.
async fn check_non_utf8_paths_and_peer_garbage(
    cluster: &Cluster,
    url: &str,
    http: &reqwest::Client,
) {
    let host = url.trim_start_matches("http://");
    // Raw bytes that are not UTF-8 in the request line: an HTTP error, not a crash.
    let answer = raw_exchange(
        host,
        b"GET /v1/kv/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a 4xx answer, got {answer:?}"
    );
    // Percent-encoded non-UTF-8 is a valid binary key (by design) and round-trips.
    let binary = http
        .put(format!("{url}/v1/kv/bin%FF"))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status().as_u16(), 200);
    let binary: serde_json::Value = http
        .get(format!("{url}/v1/kv/bin%FF"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(binary["key_base64"], "Ymlu/w==");

    // Garbage on every peer port: the nodes drop it and stay healthy.
    for index in 0..3 {
        let answer = raw_exchange(&cluster.peer_address(index), &[0xde; 4096]);
        assert!(answer.len() < 4096, "the peer port does not echo garbage");
        let _ = raw_exchange(&cluster.peer_address(index), b"GET / HTTP/1.1\r\n\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_change_nothing() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    cluster.client(leader).put("stable", "value").await.unwrap();
    let before = cluster
        .client(leader)
        .get("stable", Consistency::Linearizable)
        .await
        .unwrap();
    let url = cluster.client_url((leader + 1) % 3);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let bad_json = http
        .post(format!("{url}/v1/txn"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(bad_json, 400).await["error"], "bad_json");
    let unknown_op = http
        .post(format!("{url}/v1/txn"))
        .body(r#"{"compare":[],"success":[{"op":"explode","key":"stable"}]}"#)
        .send()
        .await
        .unwrap();
    expect_error(unknown_op, 400).await;
    let unknown_field = http
        .post(format!("{url}/v1/txn"))
        .body(r#"{"compare":[],"success":[],"surprise":1}"#)
        .send()
        .await
        .unwrap();
    expect_error(unknown_field, 400).await;
    // An oversized body is refused from its declared length, before it is
    // read: raw TCP, because the server may close without reading the body
    // (an HTTP client still writing it would see a broken pipe instead).
    let host = url.trim_start_matches("http://");
    let oversized = raw_exchange(
        host,
        format!(
            "PUT /v1/kv/stable HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\nxx",
            2 * 1024 * 1024
        )
        .as_bytes(),
    );
    let oversized = String::from_utf8_lossy(&oversized);
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
    assert!(oversized.contains("too_large"), "{oversized}");
    let bad_escape = http.get(format!("{url}/v1/kv/%ZZ")).send().await.unwrap();
    expect_error(bad_escape, 400).await;
    let bad_key = http
        .put(format!("{url}/v1/kv/stable"))
        .header("Idempotency-Key", "no-colon")
        .body("changed")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(bad_key, 400).await["error"],
        "invalid_idempotency_key"
    );
    let unknown_path = http.get(format!("{url}/v1/nothing")).send().await.unwrap();
    expect_error(unknown_path, 404).await;

    check_non_utf8_paths_and_peer_garbage(&cluster, &url, &http).await;
    for index in 0..3 {
        let after = cluster
            .client(index)
            .get("stable", Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(after.value, before.value, "nothing changed the key");
        assert_eq!(
            after.mod_revision, before.mod_revision,
            "nothing rewrote the key"
        );
    }
    let all = cluster
        .client_all()
        .range("", None, Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "only `stable` and the binary key exist");
    cluster
        .client_all()
        .put("after", "ok")
        .await
        .expect("the cluster still serves writes");
}

/// TIME_WAIT sockets (IPv4) whose remote port is `port`, from `/proc/net/tcp`.
fn time_wait_sockets_towards(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Field 2 is the remote address, field 3 the state (06: TIME_WAIT).
            fields.len() > 3 && fields[2].ends_with(&port_hex) && fields[3] == "06"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_writes_to_the_leader_leaves_no_time_wait_sockets_behind() {
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let follower = cluster.client((leader + 1) % 3);
    for number in 0..200 {
        follower
            .put(&format!("f-{number}"), "v")
            .await
            .expect("a forwarded write");
    }
    let peer_port: u16 = cluster
        .peer_address(leader)
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let lingering = time_wait_sockets_towards(peer_port);
    assert!(
        lingering < 20,
        "{lingering} TIME_WAIT sockets towards the leader's peer port after 200 forwarded writes"
    );
}
