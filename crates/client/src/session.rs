//! The client's idempotency session, shared by clones and concurrent calls.
//!
//! The cluster keeps, per client id, the results of the client's last
//! [`KV_SESSION_RESULTS_RETAINED_MAX`] writes; it opens a session only for
//! sequence number 1 and answers `session_expired` to anything older than the
//! retained window (or to seq > 1 from a client it does not know). So that
//! concurrent calls never trip over those rules, a keyed write takes its
//! sequence number from a window:
//!
//! - until some write of the session was answered 200 (the session is not known
//!   to exist on the cluster), one keyed write at a time, so seq 1 is applied
//!   before seq 2 is sent;
//! - then a new number at most `lowest outstanding + RETAINED - 1`, so every
//!   write still outstanding keeps its result retained until it completes.
//!
//! A write whose attempts all certainly missed the log and that got
//! `session_expired` was never applied: the cluster forgot the session (it
//! evicts the least recently used one when it holds too many, or the opening
//! write never applied). The client then opens a new session and resends.

use rand::Rng as _;
use std::collections::BTreeSet;
use std::sync::Mutex;
use tokio::sync::Notify;
use understudy_types::limits::KV_SESSION_RESULTS_RETAINED_MAX;

/// Sequence numbers one session may have outstanding: the server's window.
const WINDOW: u64 = KV_SESSION_RESULTS_RETAINED_MAX as u64;

/// A client session: its id and the numbers in flight.
pub(crate) struct Session {
    state: Mutex<SessionState>,
    changed: Notify,
}

struct SessionState {
    client_id: String,
    /// Incremented whenever the session is replaced by a new one.
    generation: u64,
    next_sequence: u64,
    outstanding: BTreeSet<u64>,
    /// Whether a write of this session was answered 200.
    established: bool,
}

/// The right to send one keyed write; hand it back with [`Session::complete`].
#[derive(Debug)]
pub(crate) struct Ticket {
    /// The `Idempotency-Key` header value.
    pub(crate) key: String,
    generation: u64,
    sequence: u64,
}

/// 16 random bytes in hex: unique enough that two clients never share a
/// session, and far below the server's 64-byte client id limit.
fn random_client_id() -> String {
    (0..16)
        .map(|_| format!("{:02x}", rand::thread_rng().gen::<u8>()))
        .collect()
}

impl Session {
    pub(crate) fn new() -> Session {
        Session {
            state: Mutex::new(SessionState {
                client_id: random_client_id(),
                generation: 0,
                next_sequence: 1,
                outstanding: BTreeSet::new(),
                established: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // A panic while holding this short lock leaves consistent state (every
        // update is a single assignment or set operation), so poisoning is moot.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current session's client id.
    pub(crate) fn client_id(&self) -> String {
        self.lock().client_id.clone()
    }

    /// Waits until the window admits another write, then numbers it.
    pub(crate) async fn acquire(&self) -> Ticket {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the check and
            // the wait is not missed.
            notified.as_mut().enable();
            if let Some(ticket) = self.try_acquire() {
                return ticket;
            }
            notified.await;
        }
    }

    fn try_acquire(&self) -> Option<Ticket> {
        let mut state = self.lock();
        let lowest = state
            .outstanding
            .first()
            .copied()
            .unwrap_or(state.next_sequence);
        let admitted = if state.established {
            state.next_sequence < lowest + WINDOW
        } else {
            state.outstanding.is_empty()
        };
        if !admitted {
            return None;
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.outstanding.insert(sequence);
        Some(Ticket {
            key: format!("{}:{sequence}", state.client_id),
            generation: state.generation,
            sequence,
        })
    }

    /// The write of `ticket` is done; `succeeded`: it was answered 200.
    pub(crate) fn complete(&self, ticket: Ticket, succeeded: bool) {
        let mut state = self.lock();
        if state.generation == ticket.generation {
            state.outstanding.remove(&ticket.sequence);
            state.established |= succeeded;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The cluster no longer knows the session of `ticket`, which was never
    /// applied: replace the session (once, however many writes notice).
    pub(crate) fn renew(&self, ticket: Ticket) {
        let mut state = self.lock();
        if state.generation == ticket.generation {
            state.client_id = random_client_id();
            state.generation += 1;
            state.next_sequence = 1;
            state.outstanding.clear();
            state.established = false;
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sequence_of(ticket: &Ticket) -> u64 {
        ticket.key.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    #[tokio::test]
    async fn a_new_session_sends_one_write_until_the_first_succeeds() {
        let session = Session::new();
        let first = session.acquire().await;
        assert_eq!(sequence_of(&first), 1);
        assert!(session.try_acquire().is_none(), "seq 2 waits for seq 1");
        // A failed first write does not establish the session.
        session.complete(first, false);
        let second = session.acquire().await;
        assert!(session.try_acquire().is_none());
        session.complete(second, true);
        let third = session
            .try_acquire()
            .expect("established: concurrent writes");
        let fourth = session
            .try_acquire()
            .expect("established: concurrent writes");
        assert_eq!((sequence_of(&third), sequence_of(&fourth)), (3, 4));
    }

    #[tokio::test]
    async fn an_outstanding_write_holds_back_numbers_beyond_the_retained_window() {
        let session = std::sync::Arc::new(Session::new());
        let opening = session.acquire().await;
        session.complete(opening, true);
        let slow = session.acquire().await; // seq 2
        let mut done = Vec::new();
        for _ in 1..WINDOW {
            done.push(session.try_acquire().expect("inside the window"));
        }
        assert_eq!(sequence_of(done.last().unwrap()), 2 + WINDOW - 1);
        for ticket in done {
            session.complete(ticket, true);
        }
        // Seq 2 + WINDOW would push seq 2's result out of the server's window.
        assert!(session.try_acquire().is_none());
        let waiter = tokio::spawn({
            let session = session.clone();
            async move { sequence_of(&session.acquire().await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits for the slow write");
        session.complete(slow, true);
        let sequence = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert_eq!(sequence, 2 + WINDOW);
    }

    #[test]
    fn renewal_starts_a_new_session_once() {
        let session = Session::new();
        let old_id = session.client_id();
        let ticket = session.try_acquire().unwrap();
        let stale = Ticket {
            key: ticket.key.clone(),
            generation: ticket.generation,
            sequence: ticket.sequence,
        };
        session.renew(ticket);
        let new_id = session.client_id();
        assert_ne!(old_id, new_id);
        // A second write noticing the same expiry does not renew again.
        session.renew(stale);
        assert_eq!(session.client_id(), new_id);
        let first = session.try_acquire().unwrap();
        assert_eq!(first.key, format!("{new_id}:1"), "sessions start at 1");
    }

    #[tokio::test]
    async fn a_waiting_write_wakes_when_the_window_opens() {
        let session = std::sync::Arc::new(Session::new());
        let first = session.acquire().await;
        let waiter = tokio::spawn({
            let session = session.clone();
            async move { sequence_of(&session.acquire().await) }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "seq 2 waits while seq 1 is out");
        session.complete(first, true);
        let sequence = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert_eq!(sequence, 2);
    }
}
