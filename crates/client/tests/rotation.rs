//! Endpoint rotation and retries against tiny HTTP servers on 127.0.0.1.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use understudy_client::{Client, ClientError, ClientOptions};

/// What a test server saw: the idempotency key of every request, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// Starts a server whose `PUT /v1/kv/{key}` answers from `script` (one status
/// per request; the last one repeats) and records idempotency keys.
async fn start_server(script: Vec<u16>) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    let handler = move |headers: HeaderMap| {
        let recorded = recorded.clone();
        let script = script.clone();
        async move {
            let key = headers
                .get("idempotency-key")
                .map(|value| value.to_str().unwrap_or("?").to_string())
                .unwrap_or_default();
            let mut seen = recorded.lock().expect("no test thread panics holding it");
            seen.push(key);
            let status = script[(seen.len() - 1).min(script.len() - 1)];
            let body = match status {
                200 => r#"{"revision":42}"#,
                503 => r#"{"error":"unavailable","detail":"no leader"}"#,
                504 => r#"{"error":"timeout","outcome":"unknown"}"#,
                _ => r#"{"error":"session_expired"}"#,
            };
            (StatusCode::from_u16(status).expect("valid status"), body)
        }
    };
    let app = Router::new().route("/v1/kv/{key}", put(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), seen)
}

/// An address nothing listens on (bound, then released).
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        deadline: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn rotates_past_dead_and_unavailable_endpoints_and_remembers_the_good_one() {
    let (unavailable, unavailable_seen) = start_server(vec![503]).await;
    let (healthy, healthy_seen) = start_server(vec![200]).await;
    let client = Client::with_options(
        vec![dead_endpoint(), unavailable, healthy],
        None,
        fast_options(),
    )
    .unwrap();
    assert_eq!(client.put("a", "1").await.unwrap().revision, 42);
    assert_eq!(unavailable_seen.lock().unwrap().len(), 1);
    // The next call starts at the endpoint that answered last.
    client.put("b", "2").await.unwrap();
    assert_eq!(unavailable_seen.lock().unwrap().len(), 1);
    let keys = healthy_seen.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "distinct writes carry distinct keys");
}

#[tokio::test]
async fn a_write_that_timed_out_is_retried_with_the_same_key_elsewhere() {
    let (timing_out, timing_out_seen) = start_server(vec![504]).await;
    let (healthy, healthy_seen) = start_server(vec![200]).await;
    let client = Client::with_options(vec![timing_out, healthy], None, fast_options()).unwrap();
    client.put("k", "v").await.unwrap();
    let first = timing_out_seen.lock().unwrap().clone();
    let second = healthy_seen.lock().unwrap().clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first, second, "the retry must reuse the idempotency key");
    assert!(first[0].starts_with(&format!("{}:", client.client_id())));
}

#[tokio::test]
async fn gives_up_at_the_deadline_with_the_right_error() {
    let (unavailable, _) = start_server(vec![503]).await;
    let options = ClientOptions {
        deadline: Duration::from_millis(300),
        ..fast_options()
    };
    let client = Client::with_options(vec![unavailable], None, options).unwrap();
    let started = std::time::Instant::now();
    let error = client.put("k", "v").await.unwrap_err();
    assert!(
        matches!(error, ClientError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    let (timing_out, seen) = start_server(vec![504]).await;
    let client = Client::with_options(vec![timing_out], None, options).unwrap();
    let error = client.put("k", "v").await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::Timeout {
                outcome_unknown: true,
                ..
            }
        ),
        "{error:?}"
    );
    let keys = seen.lock().unwrap().clone();
    assert!(keys.len() >= 2 && keys.iter().all(|key| key == &keys[0]));
}

#[tokio::test]
async fn a_forgotten_session_is_renewed_once_and_then_the_refusal_stands() {
    let (expired, seen) = start_server(vec![409]).await;
    let client = Client::with_options(vec![expired], None, fast_options()).unwrap();
    assert_eq!(
        client.put("k", "v").await.unwrap_err(),
        ClientError::SessionExpired
    );
    // The first attempt was refused by the session check, so it was never
    // applied: the client resends once under a new session, starting at 1.
    let keys = seen.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let (first_id, _) = keys[0].split_once(':').unwrap();
    let (second_id, second_sequence) = keys[1].split_once(':').unwrap();
    assert_ne!(first_id, second_id);
    assert_eq!(second_sequence, "1");
}
