//! One real cluster: three `understudy node` processes on free loopback ports,
//! a write through node 1 and a linearizable read through node 3 with the
//! `understudy kv` command, then SIGTERM to every node and a clean exit.

mod support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, free_port_block};

/// The whole test must finish within this.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Stops every node it holds on drop, so a failing assertion leaves no orphans.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Already exited is fine: nothing left to stop.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn understudy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(args)
        .env_remove("UNDERSTUDY_ENDPOINTS")
        .env_remove("UNDERSTUDY_TOKEN_FILE")
        .output()
        .expect("the binary runs")
}

fn start_nodes(data_dir: &std::path::Path) -> (Nodes, Vec<String>) {
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let initial_cluster: Vec<String> = peer_ports
        .iter()
        .enumerate()
        .map(|(index, port)| format!("{}=127.0.0.1:{port}", index + 1))
        .collect();
    let mut nodes = Nodes(Vec::new());
    for index in 0..3 {
        let child = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .arg("node")
            .args(["--id", &(index + 1).to_string()])
            .arg("--data-dir")
            .arg(data_dir.join(format!("node-{}", index + 1)))
            .args(["--listen-client", &client_ports[index].to_string()])
            .args(["--listen-peer", &format!("127.0.0.1:{}", peer_ports[index])])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .env("UNDERSTUDY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a node");
        nodes.0.push(child);
    }
    let endpoints = client_ports
        .iter()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .collect();
    (nodes, endpoints)
}

#[test]
fn three_nodes_serve_a_write_through_one_and_a_read_through_another() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, endpoints) = start_nodes(dir.path());

    // The client retries (503 while no leader, refused while a node binds)
    // within its deadline, so the first put doubles as "wait for a leader".
    let put = understudy(&[
        "kv",
        "--endpoints",
        &endpoints[0],
        "--timeout-ms",
        "30000",
        "put",
        "greeting",
        "hello",
    ]);
    assert!(
        put.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(String::from_utf8_lossy(&put.stdout).starts_with("OK revision "));

    let get = understudy(&[
        "kv",
        "--endpoints",
        &endpoints[2],
        "--timeout-ms",
        "10000",
        "--output",
        "json",
        "get",
        "greeting",
    ]);
    assert!(
        get.status.success(),
        "get failed: {}",
        String::from_utf8_lossy(&get.stderr)
    );
    let item: serde_json::Value = serde_json::from_slice(&get.stdout).expect("JSON output");
    assert_eq!(item["value"], "hello");
    assert_eq!(item["version"], 1);

    let missing = understudy(&["kv", "--endpoints", &endpoints[1], "get", "no-such-key"]);
    assert_eq!(missing.status.code(), Some(3), "a missing key exits with 3");

    // SIGTERM: every node stops cleanly, with success, in bounded time.
    for child in &nodes.0 {
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("signal");
    }
    for child in &mut nodes.0 {
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the child") {
                break status;
            }
            assert!(
                started.elapsed() < TEST_DEADLINE,
                "a node did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "a node exited with {status} after SIGTERM"
        );
    }
    assert!(started.elapsed() < TEST_DEADLINE);
}

/// Starts `understudy dev` on a base port whose block (three client ports,
/// then three peer ports 100 above) was free a moment ago.
fn spawn_dev(data_dir: &std::path::Path) -> Child {
    let base_port = free_port_block(104);
    Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["dev", "--nodes", "3", "--base-port", &base_port.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data_dir.join("dev.stderr")).expect("a stderr file"))
        .spawn()
        .expect("start dev")
}

fn process_exists(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn dev_starts_a_cluster_describes_it_and_stops_it_on_sigterm() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Nodes(vec![spawn_dev(dir.path())]);
    let description_path = dir.path().join("cluster.json");
    let mut port_attempts = 1;
    // cluster.json is written once a leader is known.
    while !description_path.exists() {
        assert!(
            started.elapsed() < TEST_DEADLINE,
            "dev never wrote cluster.json"
        );
        match dev.0[0].try_wait().unwrap() {
            // Exit code 2 before anything started: one of the six ports was
            // taken meanwhile; try another base.
            Some(status) if status.code() == Some(2) && port_attempts < 10 => {
                port_attempts += 1;
                dev.0[0] = spawn_dev(dir.path());
            }
            Some(status) => panic!("dev exited early with {status}"),
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let description: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&description_path).unwrap()).unwrap();
    let nodes = description["nodes"].as_array().expect("a node list");
    assert_eq!(nodes.len(), 3);
    let pids: Vec<u64> = nodes
        .iter()
        .map(|node| node["pid"].as_u64().unwrap())
        .collect();
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    let endpoints = description["endpoints"].as_str().unwrap();

    let put = understudy(&["kv", "--endpoints", endpoints, "put", "k", "v"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let last = nodes[2]["client_url"].as_str().unwrap();
    let get = understudy(&["kv", "--endpoints", last, "get", "k"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "v");

    // A node that dies is reported; dev keeps the others running.
    let killed = rustix::process::Pid::from_raw(pids[2] as i32).expect("a pid");
    rustix::process::kill_process(killed, rustix::process::Signal::KILL).expect("kill node 3");
    let stderr_path = dir.path().join("dev.stderr");
    while !std::fs::read_to_string(&stderr_path)
        .unwrap()
        .contains("node 3 (pid")
    {
        assert!(
            started.elapsed() < TEST_DEADLINE,
            "dev never reported node 3's exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dev.0[0].try_wait().unwrap().is_none(), "dev stopped");
    let first_two = format!(
        "{},{}",
        nodes[0]["client_url"].as_str().unwrap(),
        nodes[1]["client_url"].as_str().unwrap()
    );
    let put = understudy(&["kv", "--endpoints", &first_two, "put", "k", "v2"]);
    assert!(
        put.status.success(),
        "the two remaining nodes serve writes: {}",
        String::from_utf8_lossy(&put.stderr)
    );

    let dev_pid = rustix::process::Pid::from_raw(dev.0[0].id() as i32).expect("a pid");
    rustix::process::kill_process(dev_pid, rustix::process::Signal::TERM).expect("signal dev");
    let status = loop {
        if let Some(status) = dev.0[0].try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < TEST_DEADLINE,
            "dev did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "dev exited with {status}");
    // dev waits for (and so reaps) its nodes before exiting.
    assert!(
        pids.iter().all(|&pid| !process_exists(pid)),
        "a node outlived dev"
    );
}

/// Starts a one-node cluster, with a client token file if given.
fn start_single_node(
    data_dir: &std::path::Path,
    token_file: Option<&std::path::Path>,
) -> (Nodes, String) {
    let client_port = free_port();
    let peer_port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_understudy"));
    command
        .args(["node", "--id", "1", "--data-dir"])
        .arg(data_dir.join("node-1"))
        .args(["--listen-client", &format!("127.0.0.1:{client_port}")])
        .args(["--listen-peer", &format!("127.0.0.1:{peer_port}")])
        .args(["--initial-cluster", &format!("1=127.0.0.1:{peer_port}")])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .env("UNDERSTUDY_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(token_file) = token_file {
        command.arg("--client-token-file").arg(token_file);
    }
    let child = command.spawn().expect("start a node");
    (
        Nodes(vec![child]),
        format!("http://127.0.0.1:{client_port}"),
    )
}

#[test]
fn a_token_protected_node_refuses_clients_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let wrong_token_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_token_file, "guess\n").unwrap();
    let (_nodes, endpoint) = start_single_node(dir.path(), Some(&token_file));
    let token = token_file.to_str().unwrap();

    let put = understudy(&[
        "kv",
        "put",
        "k",
        "v",
        "--endpoints",
        &endpoint,
        "--token-file",
        token,
        "--timeout-ms",
        "30000",
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let without = understudy(&["kv", "get", "k", "--endpoints", &endpoint]);
    assert_eq!(without.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&without.stderr).contains("unauthorized"));
    let wrong = understudy(&[
        "kv",
        "get",
        "k",
        "--endpoints",
        &endpoint,
        "--token-file",
        wrong_token_file.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("unauthorized"));
    let with = understudy(&[
        "kv",
        "get",
        "k",
        "--endpoints",
        &endpoint,
        "--token-file",
        token,
    ]);
    assert_eq!(String::from_utf8_lossy(&with.stdout).trim(), "v");
}

#[test]
fn watch_prints_every_change_including_each_of_a_transactions_puts() {
    use std::io::BufRead as _;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (_nodes, endpoint) = start_single_node(dir.path(), None);
    let run = |args: &[&str]| {
        let mut full = vec!["kv", "--endpoints", &endpoint, "--timeout-ms", "30000"];
        full.extend_from_slice(args);
        let output = understudy(&full);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&["put", "w/a", "1"]);
    run(&[
        "txn",
        r#"{"compare":[],"success":[{"op":"put","key":"w/b","value":"2"},{"op":"put","key":"w/c","value":"3"}]}"#,
    ]);
    run(&["del", "w/a"]);
    run(&["put", "other", "x"]);

    let mut watch = Nodes(vec![Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "kv",
            "--endpoints",
            &endpoint,
            "--output",
            "json",
            "watch",
            "--prefix",
            "w/",
        ])
        .args(["--from-revision", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start watch")]);
    let stdout = watch.0[0].stdout.take().expect("piped stdout");
    // Lines are read on a thread so that a silent watch fails the test at its
    // deadline instead of hanging it.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let remaining = TEST_DEADLINE.saturating_sub(started.elapsed());
        let line = receiver
            .recv_timeout(remaining)
            .expect("the watch printed its events before the deadline")
            .expect("read a line");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON event");
        seen.push((
            event["type"].as_str().unwrap().to_string(),
            event["key"].as_str().unwrap().to_string(),
            event["revision"].as_u64().unwrap(),
        ));
    }
    let expected = [
        ("put", "w/a", 1),
        ("put", "w/b", 2),
        ("put", "w/c", 2),
        ("delete", "w/a", 3),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(kind, key, revision)| (kind.to_string(), key.to_string(), *revision))
        .collect();
    assert_eq!(seen, expected);
}
