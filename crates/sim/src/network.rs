//! The simulated network: who can reach whom, and what happens to a message on
//! the way (loss, duplication, delay and thereby reordering).
//!
//! The network only decides; the cluster schedules the deliveries it returns.
//! Reachability is checked twice, when a message is sent and when it arrives, so a
//! partition that starts while a message is in flight also cuts that message.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;
use understudy_types::NodeId;

/// How the network treats messages that can be delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkFaults {
    /// Probability that a message is lost.
    pub drop_probability: f64,
    /// Probability that a delivered message is delivered a second time.
    pub duplicate_probability: f64,
    /// Shortest one-way delay.
    pub delay_min_micros: u64,
    /// Longest ordinary one-way delay.
    pub delay_max_micros: u64,
    /// Probability that a message takes a long detour (strong reordering).
    pub long_delay_probability: f64,
    /// Longest detour.
    pub long_delay_max_micros: u64,
}

impl NetworkFaults {
    /// A reliable network: no loss, no duplication, short delays.
    pub fn reliable() -> NetworkFaults {
        NetworkFaults {
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            delay_min_micros: 200,
            delay_max_micros: 2_000,
            long_delay_probability: 0.0,
            long_delay_max_micros: 0,
        }
    }

    /// The MIT lab's unreliable network: 10% loss, delays up to 26 ms, plus some
    /// duplication and long detours, which their RPC layer cannot produce but a
    /// real network can.
    pub fn unreliable() -> NetworkFaults {
        NetworkFaults {
            drop_probability: 0.1,
            duplicate_probability: 0.05,
            delay_min_micros: 200,
            delay_max_micros: 26_000,
            long_delay_probability: 0.02,
            long_delay_max_micros: 200_000,
        }
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages dropped by loss or by a partition.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

/// Reachability and fault settings.
#[derive(Clone, Debug)]
pub struct Network {
    /// Current fault settings.
    pub faults: NetworkFaults,
    /// Nodes cut off from everyone (the MIT labs' `disconnect`).
    isolated: BTreeSet<NodeId>,
    /// One-way links that are cut: `(from, to)`.
    blocked_links: BTreeSet<(NodeId, NodeId)>,
    /// What happened so far.
    pub stats: NetworkStats,
}

impl Network {
    /// A fully connected network with the given faults.
    pub fn new(faults: NetworkFaults) -> Network {
        Network {
            faults,
            isolated: BTreeSet::new(),
            blocked_links: BTreeSet::new(),
            stats: NetworkStats::default(),
        }
    }

    /// Whether a message from `from` can currently reach `to`.
    pub fn can_reach(&self, from: NodeId, to: NodeId) -> bool {
        !self.isolated.contains(&from)
            && !self.isolated.contains(&to)
            && !self.blocked_links.contains(&(from, to))
    }

    /// Cuts a node off from every other node.
    pub fn isolate(&mut self, node: NodeId) {
        self.isolated.insert(node);
    }

    /// Reconnects a node cut off by `isolate`.
    pub fn reconnect(&mut self, node: NodeId) {
        self.isolated.remove(&node);
    }

    /// Whether `node` is cut off by `isolate`.
    pub fn is_isolated(&self, node: NodeId) -> bool {
        self.isolated.contains(&node)
    }

    /// Cuts every link between the two sides, in both directions.
    pub fn partition_symmetric(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        self.partition_one_way(side_a, side_b);
        self.partition_one_way(side_b, side_a);
    }

    /// Cuts every link from `senders` to `receivers`; the other direction stays.
    pub fn partition_one_way(&mut self, senders: &[NodeId], receivers: &[NodeId]) {
        for from in senders {
            for to in receivers {
                if from != to {
                    self.blocked_links.insert((*from, *to));
                }
            }
        }
    }

    /// Removes every partition and reconnects every isolated node.
    pub fn heal(&mut self) {
        self.blocked_links.clear();
        self.isolated.clear();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.blocked_links.is_empty() || !self.isolated.is_empty()
    }

    /// Decides the fate of one message: the delays of its deliveries (none if it
    /// is lost, two if it is duplicated).
    pub fn route(&mut self, random: &mut ChaCha8Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        self.stats.sent += 1;
        if !self.can_reach(from, to) || random.gen_bool(self.faults.drop_probability) {
            self.stats.dropped += 1;
            return Vec::new();
        }
        let mut delays = vec![self.delay(random)];
        if random.gen_bool(self.faults.duplicate_probability) {
            self.stats.duplicated += 1;
            delays.push(self.delay(random));
        }
        delays
    }

    fn delay(&self, random: &mut ChaCha8Rng) -> u64 {
        let faults = &self.faults;
        if faults.long_delay_max_micros > faults.delay_max_micros
            && random.gen_bool(faults.long_delay_probability)
        {
            return random.gen_range(faults.delay_max_micros..=faults.long_delay_max_micros);
        }
        random.gen_range(faults.delay_min_micros..=faults.delay_max_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_the_named_directions_only() {
        let mut network = Network::new(NetworkFaults::reliable());
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        network.partition_one_way(&[a], &[b, c]);
        assert!(!network.can_reach(a, b));
        assert!(network.can_reach(b, a));
        network.heal();
        network.isolate(c);
        assert!(!network.can_reach(a, c) && !network.can_reach(c, b));
        assert!(network.can_reach(a, b));
    }

    #[test]
    fn a_reliable_network_delivers_every_message_once() {
        let mut network = Network::new(NetworkFaults::reliable());
        let mut random = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..1000 {
            assert_eq!(network.route(&mut random, NodeId(1), NodeId(2)).len(), 1);
        }
    }
}
