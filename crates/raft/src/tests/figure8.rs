//! The Figure 8 scenario of the Raft paper (§5.4.2), scripted on five nodes: a
//! leader must not commit an entry of an earlier term by counting replicas, or a
//! later leader can overwrite it.

use super::harness::*;
use crate::{Config, EntryPayload, Message, MessageBody, Role};
use understudy_types::{LogIndex, NodeId};

fn node(id: u64) -> NodeId {
    NodeId(id)
}

fn figure8_config(id: u64, adjust: &impl Fn(&mut Config)) -> Config {
    let mut config = config(id);
    // The scenario is about the basic algorithm; leases would keep the
    // scripted elections from happening.
    config.pre_vote = false;
    config.check_quorum = false;
    // One entry per append, so the old entry can reach a majority without the
    // new leader's own entry.
    config.append_entries_max = 1;
    adjust(&mut config);
    config
}

/// An AppendEntries from `from` to `to` carrying the entry at `index`.
fn carries(message: &Message, from: u64, to: &[u64], index: u64) -> bool {
    message.from == node(from)
        && to.contains(&message.to.0)
        && matches!(&message.body, MessageBody::AppendRequest { entries, .. }
            if entries.iter().any(|entry| entry.index == LogIndex(index)))
}

fn cut_off(cluster: &mut Cluster, a: u64, others: &[u64]) {
    for &b in others {
        cluster.cut.insert((node(a), node(b)));
        cluster.cut.insert((node(b), node(a)));
    }
}

/// Runs Figure 8 (a)-(e). Returns the cluster at the end.
pub(crate) fn run_figure8(adjust: impl Fn(&mut Config)) -> Cluster {
    let mut cluster =
        Cluster::with_configs((1..=5).map(|id| figure8_config(id, &adjust)).collect());
    // S1 leads and commits its empty entry (index 1) everywhere.
    cluster.elect(node(1));
    cluster.run(4);
    // (a) S1 appends X at index 2, which reaches only S2.
    cut_off(&mut cluster, 1, &[3, 4, 5]);
    cluster.propose(node(1), b"X");
    assert_eq!(cluster.node(node(2)).status().last_index, LogIndex(2));
    // (b) S1 crashes; S5 wins with S3 and S4 and appends at index 2 locally only.
    cluster.crash(node(1));
    cluster.heal();
    while cluster.node(node(5)).status().role != Role::Candidate {
        cluster.node_mut(node(5)).tick();
        cluster.process(node(5));
    }
    while cluster.node(node(5)).status().role != Role::Leader {
        assert!(!cluster.network.is_empty(), "S5 should win with S3 and S4");
        cluster.deliver_at(0);
    }
    cut_off(&mut cluster, 5, &[1, 2, 3, 4]);
    cluster.deliver_all();
    let s5_term = cluster.node(node(5)).status().term;
    // (c) S5 crashes; S1 restarts, leads, and replicates X to S3 and S4 — but its
    // own empty entry (index 3) reaches only S2.
    cluster.crash(node(5));
    cluster.heal();
    cluster.restart(node(1));
    // The first such append to S3 and S4 is S1's probe, which they reject (they
    // lack index 2); it must get through so that S1 backs up and sends X.
    let probed = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let drop_new_entry = |message: &Message| {
        carries(message, 1, &[3, 4], 3) && !probed.borrow_mut().insert(message.to)
    };
    cluster.campaign_until_leader(node(1), 200, drop_new_entry);
    for _ in 0..3 {
        cluster.tick_all();
        cluster.deliver_all_except(drop_new_entry);
    }
    assert_eq!(cluster.node(node(3)).status().last_index, LogIndex(2));
    // (d)/(e) S1 crashes; S5 restarts and wins with S3 and S4 (its last term is
    // newer than theirs), then overwrites index 2 and commits.
    cluster.crash(node(1));
    cluster.restart(node(5));
    cluster.campaign_until_leader(node(5), 200, |_| false);
    cluster.run(6);
    cluster.restart(node(1));
    cluster.run(10);
    let entry = cluster
        .applied_entries
        .get(&LogIndex(2))
        .expect("index 2 committed");
    assert_eq!(entry.term, s5_term, "S5's entry won index 2");
    assert_eq!(entry.payload, EntryPayload::Empty);
    cluster
}

/// Figure 8 with the correct commit rule: X is never committed, S5's entry is.
#[test]
fn figure8_is_safe_with_the_commit_rule() {
    let cluster = run_figure8(|_| {});
    for id in 1..=5 {
        assert!(cluster.applied_index(node(id)) >= LogIndex(3));
    }
}

/// Figure 8 with the deliberate bug: S1 commits X at index 2 by counting
/// replicas, and S5 later overwrites it — state machine safety breaks.
#[cfg(feature = "deliberate-bugs")]
#[test]
fn figure8_breaks_when_earlier_terms_commit_by_counting() {
    let result = std::panic::catch_unwind(|| {
        run_figure8(|config| config.deliberate_bugs.commit_earlier_term_by_counting = true)
    });
    let error = result.err().expect("the bug must break safety");
    let message = error
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| error.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_default();
    assert!(
        message.contains("state machine safety") || message.contains("truncating committed"),
        "unexpected failure: {message}"
    );
}
