//! Argument validation of the real `understudy` binary: every bad command line
//! fails fast with a one-line error naming the problem, before anything starts.

use std::process::{Command, Output};

fn understudy(args: &[&str]) -> Output {
    understudy_with_env(args, &[])
}

/// Runs the binary with no `UNDERSTUDY_*` variable but those in `variables`.
fn understudy_with_env(args: &[&str], variables: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_understudy"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("UNDERSTUDY_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(variables.iter().copied())
        .output()
        .expect("the binary runs")
}

/// A client URL nothing listens on.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    dead
}

/// Parses stderr as JSON lines.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect()
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
    let dead = dead_endpoint();
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
    for code in ["Exit codes:", "2  usage error", "3  not found"] {
        assert!(text.contains(code), "{text}");
    }
}

#[test]
fn client_options_work_before_and_after_the_subcommand() {
    let dead = dead_endpoint();
    let before = [
        "--output",
        "json",
        "--endpoints",
        &dead,
        "--timeout-ms",
        "300",
        "kv",
        "get",
        "k",
    ];
    let after = [
        "kv",
        "get",
        "k",
        "--output",
        "json",
        "--endpoints",
        &dead,
        "--timeout-ms",
        "300",
    ];
    for args in [&before[..], &after[..]] {
        let output = understudy(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let lines = json_lines(&output);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["error"], "unavailable", "{lines:?}");
        assert!(lines[0]["detail"]
            .as_str()
            .unwrap()
            .contains("cluster unavailable"));
    }
}

#[test]
fn usage_errors_are_json_with_output_json_and_exit_2() {
    let output = understudy(&["--output", "json", "kv", "ls", "--limit", "0"]);
    assert_eq!(output.status.code(), Some(2));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["error"], "usage", "{lines:?}");
    assert!(lines[0]["detail"].as_str().unwrap().contains("--limit"));
    assert_fails(
        &understudy(&["kv", "ls", "--limit", "10001"]),
        2,
        "1..=10000",
    );
    let bad_txn = r#"{"success":[{"op":"put","key":"k","key_base64":"aw==","value":"v"}]}"#;
    assert_fails(&understudy(&["kv", "txn", bad_txn]), 2, "not both");
}

#[test]
fn a_watch_that_cannot_connect_warns_then_gives_up() {
    let dead = dead_endpoint();
    let output = understudy(&[
        "kv",
        "--endpoints",
        &dead,
        "--timeout-ms",
        "500",
        "watch",
        "k",
    ]);
    assert_fails(&output, 1, "could not connect");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("understudy: warning: "), "{stderr}");
    let output = understudy(&[
        "kv",
        "--endpoints",
        &dead,
        "--timeout-ms",
        "500",
        "--output",
        "json",
        "watch",
        "k",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["warning"], "unavailable", "{lines:?}");
    assert_eq!(lines.last().unwrap()["error"], "unavailable", "{lines:?}");
}

/// `understudy node --print-config` with a config file holding `file_text`.
fn print_config(file_text: &str, extra: &[&str], variables: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    std::fs::write(&file, file_text).unwrap();
    let mut args = vec!["node", "--print-config", "--config", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    understudy_with_env(&args, variables)
}

/// The `key = value` line of a successful `--print-config`.
fn setting(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {stdout}"))
        .to_string()
}

const NODE_FILE: &str = "id = 5\ndata-dir = \"/tmp/understudy-file\"\nlisten-peer = \"127.0.0.1:2480\"\nelection-timeout = 900\n";

#[test]
fn node_settings_come_from_flags_then_environment_then_file() {
    // The file alone.
    let output = print_config(NODE_FILE, &[], &[]);
    assert_eq!(setting(&output, "id"), "id = 5");
    assert_eq!(
        setting(&output, "election-timeout"),
        "election-timeout = 900"
    );
    assert_eq!(
        setting(&output, "data-dir"),
        "data-dir = \"/tmp/understudy-file\""
    );
    // The environment beats the file.
    let variables = [
        ("UNDERSTUDY_ID", "7"),
        ("UNDERSTUDY_HEARTBEAT_INTERVAL", "30"),
    ];
    let output = print_config(NODE_FILE, &[], &variables);
    assert_eq!(setting(&output, "id"), "id = 7");
    assert_eq!(
        setting(&output, "heartbeat-interval"),
        "heartbeat-interval = 30"
    );
    assert_eq!(
        setting(&output, "election-timeout"),
        "election-timeout = 900"
    );
    // A flag beats both.
    let output = print_config(NODE_FILE, &["--id", "3"], &variables);
    assert_eq!(setting(&output, "id"), "id = 3");
    // The environment alone, with no file.
    let output = understudy_with_env(
        &["node", "--print-config"],
        &[
            ("UNDERSTUDY_ID", "9"),
            ("UNDERSTUDY_DATA_DIR", "/tmp/understudy-env"),
            ("UNDERSTUDY_LISTEN_PEER", "127.0.0.1:2481"),
        ],
    );
    assert_eq!(setting(&output, "id"), "id = 9");
    assert_eq!(
        setting(&output, "listen-peer"),
        "listen-peer = \"127.0.0.1:2481\""
    );
    // A bad value from the environment is refused even though the file is good.
    let output = print_config(NODE_FILE, &[], &[("UNDERSTUDY_ELECTION_TIMEOUT", "soon")]);
    assert_fails(&output, 2, "--election-timeout");
    // ...but a bad one in the file is overridden by a good flag.
    let output = print_config(
        "election-timeout = 0\n",
        &[
            "--election-timeout",
            "800",
            "--id",
            "1",
            "--data-dir",
            "/tmp/x",
            "--listen-peer",
            "127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(
        setting(&output, "election-timeout"),
        "election-timeout = 800"
    );
}

#[test]
fn node_config_file_errors_name_the_key() {
    let output = print_config(&format!("{NODE_FILE}colour = \"red\"\n"), &[], &[]);
    assert_fails(&output, 2, "key \"colour\": unknown setting");
    let output = print_config("id = \"five\"\n", &[], &[]);
    assert_fails(&output, 2, "key \"id\": expected an integer");
    let output = print_config("heartbeat-interval = -4\n", &[], &[]);
    assert_fails(&output, 2, "key \"heartbeat-interval\"");
    let output = print_config("id = [\n", &[], &[]);
    assert_fails(&output, 2, "config file");
    let output = understudy_with_env(
        &["node"],
        &[("UNDERSTUDY_CONFIG", "/nonexistent/node.toml")],
    );
    assert_fails(&output, 2, "/nonexistent/node.toml");
    let output = understudy_with_env(&["node", "--print-config"], &[]);
    assert_fails(&output, 2, "--id is required");
}

#[test]
fn node_help_documents_environment_and_logging() {
    let output = understudy(&["node", "--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "UNDERSTUDY_ID",
        "UNDERSTUDY_DATA_DIR",
        "UNDERSTUDY_CONFIG",
        "UNDERSTUDY_LOG",
        "--config",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
}
