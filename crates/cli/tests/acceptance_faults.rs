//! Acceptance: leader SIGKILL under writes, SIGSTOP of a majority, a paused old
//! leader, and a watch across a leader kill.

mod support;

use support::raw_put;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{eventually, Cluster};
use understudy_client::{Client, Consistency, WatchTarget};

/// Writes `stream-N` keys until told to stop; records the acknowledged ones.
struct WriteStream {
    acknowledged: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteStream {
    fn start(client: Client) -> WriteStream {
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (acks, stopping) = (acknowledged.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut number = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                // A failed write (timeout, outcome unknown) is simply not
                // counted: only acknowledged writes must survive.
                if client
                    .put(&format!("stream-{number}"), number.to_string())
                    .await
                    .is_ok()
                {
                    acks.lock().unwrap().push(number);
                }
                number += 1;
            }
        });
        WriteStream {
            acknowledged,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    async fn wait_for(&self, count: usize, what: &str) {
        eventually(Duration::from_secs(30), what, || async {
            self.count() >= count
        })
        .await;
    }

    async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer does not panic");
        Arc::try_unwrap(self.acknowledged)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Asserts every acknowledged `stream-N` key is present with its value.
async fn assert_all_present(client: &Client, acknowledged: &[u64]) {
    let range = client
        .range("stream-", Some(10_000), Consistency::Linearizable)
        .await
        .expect("range");
    let present: std::collections::HashMap<String, String> = range
        .items
        .iter()
        .map(|item| {
            let value = item.value.to_bytes().unwrap();
            (item.key.clone(), String::from_utf8(value.to_vec()).unwrap())
        })
        .collect();
    for number in acknowledged {
        assert_eq!(
            present.get(&format!("stream-{number}")).map(String::as_str),
            Some(number.to_string().as_str()),
            "acknowledged write {number} is missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let (status, first) = raw_put(&cluster.client_url(leader), "idem", "v", "killtest:1").await;
    assert_eq!(status, 200, "{first}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let stream = WriteStream::start(cluster.client_all());
    stream.wait_for(30, "writes before the kill").await;
    cluster.kill(leader);
    let killed_at = stream.count();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    stream
        .wait_for(killed_at + 30, "writes resume after the kill")
        .await;
    let acknowledged = stream.finish().await;
    assert_all_present(&cluster.client(new_leader), &acknowledged).await;

    // The retry through another node, after the kill, does not apply again.
    let other = (leader + 1) % 3;
    let (status, body) = raw_put(&cluster.client_url(other), "idem", "v", "killtest:1").await;
    assert!(status == 200 || status == 409, "{status} {body}");
    if status == 200 {
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["revision"], first["revision"],
            "the first result, not a new write"
        );
    }
    let item = cluster
        .client(other)
        .get("idem", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(item.version, 1, "applied exactly once");
    assert_eq!(Some(item.mod_revision), first["revision"].as_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_its_majority_answers_503_quickly_and_never_stale() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    cluster.client(leader).put("k", "1").await.unwrap();
    // Pause the leader and one follower; the survivor is a lone follower.
    let survivor = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    cluster.stop(leader);
    cluster.stop(other);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = cluster.client_url(survivor);
    for attempt in 0..3 {
        let started = Instant::now();
        let read = http
            .get(format!("{url}/v1/kv/k"))
            .send()
            .await
            .expect("an answer");
        let status = read.status().as_u16();
        let body = read.text().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "read {attempt} answered late"
        );
        assert!(
            status == 503 || status == 504,
            "a read without quorum: {status} {body}"
        );
        let started = Instant::now();
        let write = http
            .put(format!("{url}/v1/kv/k"))
            .body("2")
            .send()
            .await
            .expect("an answer");
        let status = write.status().as_u16();
        let body = write.text().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "write {attempt} answered late"
        );
        assert!(
            status == 503 || status == 504,
            "a write without quorum: {status} {body}"
        );
        if status == 504 {
            assert!(
                body.contains("unknown"),
                "504 says the outcome is unknown: {body}"
            );
        }
    }
    cluster.cont(leader);
    cluster.cont(other);
    cluster.leader().await;
    cluster
        .client(survivor)
        .put("k", "3")
        .await
        .expect("the cluster recovers");
    for index in 0..3 {
        let item = cluster
            .client(index)
            .get("k", Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(item.value.to_bytes().unwrap().as_ref(), b"3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_old_leader_never_serves_a_stale_read() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.leader().await;
    cluster.client(old_leader).put("k", "old").await.unwrap();
    cluster.stop(old_leader);
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    for number in 0..5 {
        cluster
            .client(new_leader)
            .put("k", format!("new-{number}"))
            .await
            .unwrap();
    }
    cluster.cont(old_leader);
    // At once: the old leader must not answer from its stale state.
    let item = cluster
        .client(old_leader)
        .get("k", Consistency::Linearizable)
        .await
        .expect("the old leader answers (forwarding or confirming)");
    assert_eq!(
        item.value.to_bytes().unwrap().as_ref(),
        b"new-4",
        "no stale value"
    );
}

/// Appends the watch's next event as (key, value, revision); bounded in time.
async fn next_event(watch: &mut understudy_client::Watch, seen: &mut Vec<(String, String, u64)>) {
    let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("an event in time")
        .expect("a watch event");
    let value = String::from_utf8(event.value.to_bytes().unwrap().to_vec()).unwrap();
    seen.push((event.key, value, event.revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_an_old_revision_sees_every_change_once_in_order_across_a_leader_kill() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let writer = cluster.client_all();
    let mut expected = Vec::new();
    for number in 0..20 {
        let key = format!("w/{}", number % 4);
        let revision = writer.put(&key, number.to_string()).await.unwrap().revision;
        expected.push((key, number.to_string(), revision));
    }
    writer.put("elsewhere", "x").await.unwrap();
    let mut watch = cluster
        .client_all()
        .watch(WatchTarget::Prefix("w/".into()), 1)
        .expect("a watch");
    let mut seen = Vec::new();
    for _ in 0..10 {
        next_event(&mut watch, &mut seen).await;
    }
    cluster.kill(leader);
    for number in 20..40 {
        let key = format!("w/{}", number % 4);
        let revision = writer.put(&key, number.to_string()).await.unwrap().revision;
        expected.push((key, number.to_string(), revision));
    }
    while seen.len() < expected.len() {
        next_event(&mut watch, &mut seen).await;
    }
    assert_eq!(seen, expected, "every change exactly once, in order");
}
