//! The router behind a real socket on 127.0.0.1: streaming and disconnects.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::LocalService;
use futures::StreamExt;
use understudy_api::{router, ApiOptions};

/// Polls `condition` every few milliseconds until it holds or 10 s pass.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn watch_over_tcp_streams_and_a_disconnect_cancels_it() {
    let service = LocalService::new();
    let app = router(service.clone(), ApiOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding an ephemeral loopback port");
    let address = listener
        .local_addr()
        .expect("a bound listener has an address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{address}");
    let client = reqwest::Client::new();

    let put = client
        .put(format!("{base}/v1/kv/k"))
        .body("one")
        .send()
        .await;
    assert_eq!(put.expect("put").status(), 200);
    let watch = client
        .get(format!("{base}/v1/watch?key=k&from_revision=1"))
        .send()
        .await
        .expect("watch");
    assert_eq!(watch.status(), 200);
    let mut stream = watch.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the first event arrives")
        .expect("the stream is open")
        .expect("no transport error");
    let line: serde_json::Value = serde_json::from_slice(&first).expect("a JSON line");
    assert_eq!(line["value"], "one");
    // The stream now waits inside `changes`; closing the connection must
    // cancel that wait rather than leave it running.
    eventually("the watch to wait for changes", || {
        service.changes_in_progress.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(stream);
    eventually("the cancelled watch to stop", || {
        service.changes_in_progress.load(Ordering::SeqCst) == 0
    })
    .await;
    server.abort();
}
