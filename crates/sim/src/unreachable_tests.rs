//! The simulator's hint that a crashed node's process is gone
//! (`ClusterConfig::unreachable_hint_probability`): it shortens failover, and
//! the randomized runs exercise it.

use crate::cluster::{Cluster, ClusterConfig};
use crate::harness::MILLIS;
use crate::runner::{cluster_config, run_seed, RunConfig};

/// A randomized run of `seed` as the CI runs them (three nodes, no bug).
fn run_config(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        nodes: 3,
        operations: 2_000,
        bug: None,
    }
}

/// Crashes the leader of a reliable three-node cluster and returns the virtual
/// time until another node leads, and the cluster.
fn failover_micros(seed: u64, hint_probability: f64) -> (u64, Cluster) {
    let mut config = ClusterConfig::reliable(seed, 3);
    config.unreachable_hint_probability = hint_probability;
    let mut cluster = Cluster::new(config);
    cluster.run_for(2_000 * MILLIS);
    let leader = cluster.leader().expect("a leader within two seconds");
    cluster.crash(leader);
    let crashed_at = cluster.now_micros;
    while cluster.leader().is_none_or(|current| current == leader) {
        assert!(
            cluster.now_micros - crashed_at < 5_000 * MILLIS,
            "seed {seed}: no new leader within 5 s"
        );
        cluster.run_for(MILLIS);
    }
    assert_eq!(cluster.checker.violations().len(), 0);
    (cluster.now_micros - crashed_at, cluster)
}

/// With every survivor hinted, a new leader is usually elected within a
/// heartbeat interval (50 ms) plus message and fsync time. Without the hint
/// failover takes at least the 150 ms minimum election timeout less the up to
/// 50 ms since the followers last heard from the leader. Both survivors draw
/// their delay from the same 1..=5 ticks, so now and then they pre-campaign
/// within a round trip of each other, split the vote and fall back to an
/// election timeout: most seeds must be fast, every seed must elect.
#[test]
fn a_hint_at_every_survivor_usually_fails_over_within_a_heartbeat_interval() {
    let config = ClusterConfig::reliable(0, 3);
    let election_timeout_micros = u64::from(config.election_timeout_ticks) * config.tick_micros;
    let heartbeat_micros = u64::from(config.heartbeat_interval_ticks) * config.tick_micros;
    let fast_micros_max = heartbeat_micros + 40 * MILLIS;
    assert!(fast_micros_max < election_timeout_micros - heartbeat_micros);
    let seeds = 40;
    let mut fast = 0;
    for seed in 0..seeds {
        let (hinted, cluster) = failover_micros(seed, 1.0);
        fast += u64::from(hinted <= fast_micros_max);
        assert_eq!(cluster.stats.unreachable_hints, 2);
        assert!(cluster.stats.unreachable_hints_followed >= 1);
        let (plain, cluster) = failover_micros(seed, 0.0);
        assert!(
            plain >= election_timeout_micros - heartbeat_micros,
            "seed {seed}: {plain} µs without the hint"
        );
        assert_eq!(cluster.stats.unreachable_hints, 0);
    }
    assert!(
        fast * 4 >= seeds * 3,
        "only {fast} of {seeds} seeds failed over within {fast_micros_max} µs"
    );
}

/// The randomized runs' configuration hints, and some seeds act on hints (the
/// invariant checks then cover early campaigns); none of them find violations.
#[test]
fn randomized_runs_exercise_the_hint() {
    let mut followed = 0;
    for seed in 0..8 {
        let run = run_config(seed);
        assert!(cluster_config(&run).unreachable_hint_probability > 0.0);
        let report = run_seed(&run);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:?}",
            report.violations
        );
        followed += report.unreachable_hints_followed;
    }
    assert!(followed > 0, "no hint was acted on in 8 seeds");
}

/// Hints are part of the trace: the same seed gives the same hash.
#[test]
fn hinted_runs_are_deterministic() {
    let run = run_config(3);
    assert_eq!(run_seed(&run).trace_hash, run_seed(&run).trace_hash);
}
