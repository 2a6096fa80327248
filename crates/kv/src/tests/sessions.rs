//! Client sessions: idempotent retries, expiry and eviction.

use super::*;
use crate::{KvError, Response};
use understudy_types::limits::{KV_SESSIONS_MAX, KV_SESSION_RESULTS_RETAINED_MAX};

#[test]
fn retry_returns_the_first_result_without_applying_again() {
    let mut applier = Applier::new();
    let first = with_session(put("k", "v"), "client", 1);
    assert_eq!(applier.apply(&first), Ok(Response::Put { revision: 1 }));
    applier.apply(&put("k", "other")).unwrap(); // revision 2
    assert_eq!(applier.apply(&first), Ok(Response::Put { revision: 1 }));
    assert_eq!(applier.store.revision(), 2, "the retry was applied again");
    assert_eq!(applier.store.get(b"k").unwrap().value, bytes("other"));
}

#[test]
fn retry_of_a_failed_operation_returns_the_same_error() {
    let mut applier = Applier::new();
    applier.apply(&put("k", "v")).unwrap();
    applier.apply(&put("k", "w")).unwrap();
    applier.apply(&compact(2)).unwrap();
    let stale = with_session(compact(1), "client", 1);
    let first = applier.apply(&stale);
    assert_eq!(
        first,
        Err(KvError::Compacted {
            compact_revision: 2
        })
    );
    assert_eq!(applier.apply(&stale), first);
}

#[test]
fn unknown_client_with_sequence_above_one_is_expired() {
    let mut applier = Applier::new();
    let command = with_session(put("k", "v"), "stranger", 2);
    assert_eq!(applier.apply(&command), Err(KvError::SessionExpired));
    assert_eq!(applier.store.revision(), 0);
    assert_eq!(applier.store.session_count(), 0);
}

#[test]
fn sequence_older_than_the_window_is_expired_never_reapplied() {
    let mut applier = Applier::new();
    let window = KV_SESSION_RESULTS_RETAINED_MAX as u64;
    for sequence in 1..=window + 1 {
        let command = with_session(put("k", &sequence.to_string()), "client", sequence);
        assert_eq!(
            applier.apply(&command),
            Ok(Response::Put { revision: sequence })
        );
    }
    let revision = applier.store.revision();
    // Sequence 1 fell out of the window: expired, not applied.
    let oldest = with_session(put("k", "1"), "client", 1);
    assert_eq!(applier.apply(&oldest), Err(KvError::SessionExpired));
    // Sequence 2 is still retained: its first result.
    let retained = with_session(put("k", "2"), "client", 2);
    assert_eq!(applier.apply(&retained), Ok(Response::Put { revision: 2 }));
    assert_eq!(applier.store.revision(), revision);
}

#[test]
fn skipped_sequence_inside_the_window_is_applied_once() {
    let mut applier = Applier::new();
    applier
        .apply(&with_session(put("a", "1"), "client", 1))
        .unwrap();
    applier
        .apply(&with_session(put("c", "3"), "client", 3))
        .unwrap();
    // Sequence 2 was never applied and is newer than anything discarded.
    let late = with_session(put("b", "2"), "client", 2);
    assert_eq!(applier.apply(&late), Ok(Response::Put { revision: 3 }));
    assert_eq!(applier.apply(&late), Ok(Response::Put { revision: 3 }));
    assert_eq!(applier.store.revision(), 3);
}

#[test]
fn invalid_session_fields_are_rejected() {
    let mut applier = Applier::new();
    assert_eq!(
        applier.apply(&with_session(put("k", "v"), "client", 0)),
        Err(KvError::SequenceZero)
    );
    assert_eq!(
        applier.apply(&with_session(put("k", "v"), "", 1)),
        Err(KvError::ClientIdInvalid { length_bytes: 0 })
    );
    assert_eq!(applier.store.session_count(), 0);
}

#[test]
fn eviction_removes_the_session_least_recently_used_by_log_index() {
    let mut applier = Applier::new();
    for client in 0..KV_SESSIONS_MAX {
        let command = with_session(put("k", "v"), &format!("client-{client}"), 1);
        applier.apply(&command).unwrap();
    }
    // Touch client-0 (a retry counts as use), so client-1 becomes the oldest.
    applier
        .apply(&with_session(put("k", "v"), "client-0", 1))
        .unwrap();
    applier
        .apply(&with_session(put("k", "v"), "newcomer", 1))
        .unwrap();
    assert_eq!(applier.store.session_count(), KV_SESSIONS_MAX);
    assert_eq!(
        applier.apply(&with_session(put("k", "v"), "client-1", 2)),
        Err(KvError::SessionExpired)
    );
    // Sessions still present accept their next sequence (applied: a new revision).
    for client in ["client-0", "client-2", "newcomer"] {
        let revision = applier.store.revision();
        assert_eq!(
            applier.apply(&with_session(put("k", "v"), client, 2)),
            Ok(Response::Put {
                revision: revision + 1
            })
        );
    }
}
