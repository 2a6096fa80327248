//! The simulated network between a pair's nodes and the output store.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

/// A message on the wire, with the step at which it arrives.
pub(super) struct InFlight<T> {
    pub(super) arrives_at: u64,
    pub(super) message: T,
}

/// One direction of the network: delay, loss and duplication, no reordering
/// beyond what delays cause; cut (everything lost) before `cut_until`.
pub(super) struct Link<T> {
    pub(super) queue: VecDeque<InFlight<T>>,
    cut_until: u64,
}

impl<T: Clone> Link<T> {
    pub(super) fn new() -> Link<T> {
        Link::cut_until(0)
    }

    /// A link that loses everything sent before step `heal_at` (a partition).
    pub(super) fn cut_until(heal_at: u64) -> Link<T> {
        Link {
            queue: VecDeque::new(),
            cut_until: heal_at,
        }
    }

    /// Heals the link at once.
    pub(super) fn heal(&mut self) {
        self.cut_until = 0;
    }

    pub(super) fn send(&mut self, random: &mut ChaCha8Rng, now: u64, message: T) {
        if now < self.cut_until || random.gen_bool(0.05) {
            return; // cut off, or lost
        }
        let copies = if random.gen_bool(0.03) { 2 } else { 1 };
        for _ in 0..copies {
            let arrives_at = now + random.gen_range(1..6);
            self.queue.push_back(InFlight {
                arrives_at,
                message: message.clone(),
            });
        }
    }

    pub(super) fn arrived(&mut self, now: u64) -> Vec<T> {
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .queue
            .drain(..)
            .partition(|flight| flight.arrives_at <= now);
        self.queue = waiting.into();
        ready.into_iter().map(|flight| flight.message).collect()
    }
}
