//! Counters the node exports in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency histogram buckets.
const FSYNC_BUCKETS_SECONDS: [f64; 10] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// The node's counters; shared by the driver, the transport and the service.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Proposals accepted by this node as leader.
    pub proposals: AtomicU64,
    /// Entries this node learned are committed.
    pub commits: AtomicU64,
    /// The state machine's applied index.
    pub applied_index: AtomicU64,
    /// Elections this node started.
    pub elections: AtomicU64,
    /// Messages waiting in peer send queues.
    pub peer_send_queue_depth: AtomicU64,
    /// Messages dropped because a peer queue was full.
    pub peer_messages_dropped: AtomicU64,
    /// Hints that the leader's process is gone (connection closed, port
    /// refusing) handed to the Raft core.
    pub leader_unreachable_hints: AtomicU64,
    /// Connections opened to forward client requests (most requests reuse one).
    pub forward_connections_opened: AtomicU64,
    /// Pair messages this node's primaries sent to their backups (one
    /// exchange: sent, handled at the backup, answered).
    pub pair_exchanges: AtomicU64,
    /// Microseconds those exchanges took, in all.
    pub pair_exchange_micros: AtomicU64,
    /// Records those exchanges carried.
    pub pair_records_sent: AtomicU64,
    /// Appends the backups on this node handled.
    pub pair_backup_appends: AtomicU64,
    /// Microseconds handling them took (records written and synced), in all.
    pub pair_backup_append_micros: AtomicU64,
    fsync_buckets: [AtomicU64; 10],
    fsync_count: AtomicU64,
    fsync_sum_micros: AtomicU64,
}

impl Metrics {
    /// Records one fsync's duration.
    pub fn observe_fsync(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.fsync_buckets.iter().zip(FSYNC_BUCKETS_SECONDS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.fsync_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let counters = [
            ("understudy_proposals_total", "counter", &self.proposals),
            ("understudy_commits_total", "counter", &self.commits),
            ("understudy_applied_index", "gauge", &self.applied_index),
            ("understudy_elections_total", "counter", &self.elections),
            (
                "understudy_peer_send_queue_depth",
                "gauge",
                &self.peer_send_queue_depth,
            ),
            (
                "understudy_peer_messages_dropped_total",
                "counter",
                &self.peer_messages_dropped,
            ),
            (
                "understudy_leader_unreachable_hints_total",
                "counter",
                &self.leader_unreachable_hints,
            ),
            (
                "understudy_forward_connections_opened_total",
                "counter",
                &self.forward_connections_opened,
            ),
            (
                "understudy_pair_exchanges_total",
                "counter",
                &self.pair_exchanges,
            ),
            (
                "understudy_pair_exchange_micros_total",
                "counter",
                &self.pair_exchange_micros,
            ),
            (
                "understudy_pair_records_sent_total",
                "counter",
                &self.pair_records_sent,
            ),
            (
                "understudy_pair_backup_appends_total",
                "counter",
                &self.pair_backup_appends,
            ),
            (
                "understudy_pair_backup_append_micros_total",
                "counter",
                &self.pair_backup_append_micros,
            ),
        ];
        // Writing to a String cannot fail.
        for (name, kind, value) in counters {
            let _ = writeln!(
                text,
                "# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(text, "# TYPE understudy_fsync_seconds histogram");
        for (bucket, bound) in self.fsync_buckets.iter().zip(FSYNC_BUCKETS_SECONDS) {
            let _ = writeln!(
                text,
                "understudy_fsync_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.fsync_count.load(Ordering::Relaxed);
        let _ = writeln!(
            text,
            "understudy_fsync_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.fsync_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(text, "understudy_fsync_seconds_sum {sum}");
        let _ = writeln!(text, "understudy_fsync_seconds_count {count}");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_exported_as_a_counter() {
        let metrics = Metrics::default();
        metrics
            .leader_unreachable_hints
            .fetch_add(2, Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains(
            "# TYPE understudy_leader_unreachable_hints_total counter\nunderstudy_leader_unreachable_hints_total 2\n"
        ));
    }
}
