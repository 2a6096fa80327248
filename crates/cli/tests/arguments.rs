//! Argument validation of the real `understudy` binary: every bad command line
//! fails fast with a one-line error naming the problem, before anything starts.

use std::process::{Command, Output};

fn understudy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(args)
        .env_remove("UNDERSTUDY_ENDPOINTS")
        .env_remove("UNDERSTUDY_TOKEN_FILE")
        .output()
        .expect("the binary runs")
}

/// Asserts a failure with `code` and a stderr line containing `needle`.
fn assert_fails(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(needle),
        "expected {needle:?} in stderr: {stderr}"
    );
    assert!(
        stderr.starts_with("understudy: ") || stderr.starts_with("error:"),
        "{stderr}"
    );
}

fn node_args<'a>(data_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "node",
        "--id",
        "1",
        "--data-dir",
        data_dir,
        "--listen-client",
        "127.0.0.1:1",
        "--listen-peer",
        "127.0.0.1:2",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bad_initial_cluster_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for (cluster, needle) in [
        ("1=127.0.0.1:2480,1=127.0.0.1:2481", "appears twice"),
        ("1=127.0.0.1", "HOST:PORT"),
        ("one=127.0.0.1:2480", "not a positive node id"),
        ("2=127.0.0.1:2480,3=127.0.0.1:2481", "not among the members"),
        ("1=127.0.0.1:70000", "bad port"),
    ] {
        let output = understudy(&node_args(data_dir, &["--initial-cluster", cluster]));
        assert_fails(&output, 2, needle);
        assert_fails(&output, 2, "--initial-cluster");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn bad_addresses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut args = node_args(data_dir, &[]);
    args[8] = "nonsense";
    assert_fails(&understudy(&args), 2, "--listen-peer \"nonsense\"");
    let mut args = node_args(data_dir, &[]);
    args[6] = "127.0.0.1:notaport";
    assert_fails(&understudy(&args), 2, "--listen-client");
    let args = node_args(data_dir, &["--advertise-client", "ftp://x"]);
    assert_fails(&understudy(&args), 2, "--advertise-client");
}

#[test]
fn missing_or_empty_token_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let missing = dir.path().join("no-such-token");
    let args = node_args(
        data_dir,
        &["--client-token-file", missing.to_str().unwrap()],
    );
    assert_fails(&understudy(&args), 2, "token file");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").unwrap();
    let args = node_args(data_dir, &["--client-token-file", empty.to_str().unwrap()]);
    assert_fails(&understudy(&args), 2, "empty");
}

#[test]
fn nonsensical_ids_and_timings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut args = node_args(data_dir, &[]);
    args[2] = "0";
    assert_fails(&understudy(&args), 2, "--id");
    let args = node_args(
        data_dir,
        &["--heartbeat-interval", "500", "--election-timeout", "400"],
    );
    assert_fails(&understudy(&args), 2, "--election-timeout");
}

#[test]
fn client_commands_report_an_unreachable_cluster_clearly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let output = understudy(&[
        "kv",
        "--endpoints",
        &dead,
        "--timeout-ms",
        "300",
        "get",
        "k",
    ]);
    assert_fails(&output, 1, "cluster unavailable");
    let output = understudy(&["kv", "--endpoints", "https://x:1", "get", "k"]);
    assert_fails(&output, 2, "only http://");
}

#[test]
fn dev_refuses_ports_in_use() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let output = understudy(&["dev", "--nodes", "3", "--base-port", &port]);
    assert_fails(&output, 2, "not free");
}

#[test]
fn help_explains_the_commands() {
    let output = understudy(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["node", "dev", "kv", "status", "members"] {
        assert!(text.contains(command), "{text}");
    }
}
