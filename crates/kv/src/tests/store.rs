//! Revisions, versions, transactions, ranges, history and compaction.

use super::*;
use crate::{Event, EventKind, KeySelector, KvError, Response, TxnResult};
use understudy_types::limits::KV_RANGE_LIMIT_MAX;

#[test]
fn revision_increases_once_per_effective_write() {
    let mut applier = Applier::new();
    assert_eq!(applier.store.revision(), 0);
    assert_eq!(
        applier.apply(&put("a", "1")),
        Ok(Response::Put { revision: 1 })
    );
    assert_eq!(
        applier.apply(&put("a", "2")),
        Ok(Response::Put { revision: 2 })
    );
    // Deleting a missing key changes nothing: the revision stays.
    assert_eq!(
        applier.apply(&delete("missing")),
        Ok(Response::Delete {
            deleted: 0,
            revision: 2
        })
    );
    assert_eq!(
        applier.apply(&delete("a")),
        Ok(Response::Delete {
            deleted: 1,
            revision: 3
        })
    );
    assert_eq!(applier.store.revision(), 3);
}

#[test]
fn version_counts_puts_and_resets_on_delete() {
    let mut applier = Applier::new();
    applier.apply(&put("k", "1")).unwrap(); // revision 1
    applier.apply(&put("k", "2")).unwrap(); // revision 2
    let item = applier.store.get(b"k").unwrap().clone();
    assert_eq!(
        (item.create_revision, item.mod_revision, item.version),
        (1, 2, 2)
    );
    applier.apply(&delete("k")).unwrap(); // revision 3
    assert_eq!(applier.store.get(b"k"), None);
    applier.apply(&put("k", "3")).unwrap(); // revision 4
    let item = applier.store.get(b"k").unwrap();
    assert_eq!(
        (item.create_revision, item.mod_revision, item.version),
        (4, 4, 1)
    );
    assert_eq!(item.value, bytes("3"));
}

#[test]
fn rejected_command_changes_nothing() {
    let mut applier = Applier::new();
    applier.apply(&put("a", "1")).unwrap();
    let before = applier.store.clone();
    assert_eq!(applier.apply(&put("", "1")), Err(KvError::KeyEmpty));
    let bad_txn = txn(vec![], vec![txn_put("b", "1"), txn_put("", "2")], vec![]);
    assert_eq!(applier.apply(&bad_txn), Err(KvError::KeyEmpty));
    assert_eq!(
        applier.apply(&compact(5)),
        Err(KvError::CompactRevisionAboveCurrent {
            requested: 5,
            current: 1
        })
    );
    // Only the applied index moved.
    let mut expected = before;
    expected.last_applied_index = applier.store.last_applied_index();
    assert_eq!(applier.store, expected);
}

#[test]
#[should_panic(expected = "applied once, in order")]
fn applying_an_old_index_is_a_programmer_error() {
    let mut store = crate::Store::new();
    store.apply(5, &put("a", "1")).unwrap();
    let _ = store.apply(5, &put("a", "2"));
}

#[test]
fn txn_compares_on_version_mod_revision_and_value() {
    let mut applier = Applier::new();
    applier.apply(&put("k", "m")).unwrap(); // revision 1, version 1
    let cases = [
        (CompareTarget::Version(1), CompareOperator::Equal, true),
        (CompareTarget::Version(1), CompareOperator::NotEqual, false),
        (CompareTarget::Version(2), CompareOperator::Less, true),
        (CompareTarget::Version(0), CompareOperator::Greater, true),
        (CompareTarget::ModRevision(1), CompareOperator::Equal, true),
        (CompareTarget::ModRevision(1), CompareOperator::Less, false),
        (
            CompareTarget::Value(bytes("m")),
            CompareOperator::Equal,
            true,
        ),
        (
            CompareTarget::Value(bytes("n")),
            CompareOperator::Less,
            true,
        ),
        (
            CompareTarget::Value(bytes("a")),
            CompareOperator::Greater,
            true,
        ),
        (
            CompareTarget::Value(bytes("a")),
            CompareOperator::Less,
            false,
        ),
        (
            CompareTarget::Value(bytes("m")),
            CompareOperator::NotEqual,
            false,
        ),
    ];
    for (target, operator, expected) in cases {
        let command = txn(vec![compare("k", target.clone(), operator)], vec![], vec![]);
        let Ok(Response::Txn { succeeded, .. }) = applier.apply(&command) else {
            panic!("txn failed");
        };
        assert_eq!(succeeded, expected, "{target:?} {operator:?}");
    }
}

#[test]
fn txn_compares_on_missing_key() {
    let mut applier = Applier::new();
    let cases = [
        (CompareTarget::Version(0), CompareOperator::Equal, true),
        (CompareTarget::ModRevision(0), CompareOperator::Equal, true),
        (CompareTarget::ModRevision(1), CompareOperator::Less, true),
        // No value compare matches a missing key, not even NotEqual.
        (
            CompareTarget::Value(bytes("x")),
            CompareOperator::NotEqual,
            false,
        ),
        (
            CompareTarget::Value(bytes("")),
            CompareOperator::Equal,
            false,
        ),
        (
            CompareTarget::Value(bytes("x")),
            CompareOperator::Less,
            false,
        ),
    ];
    for (target, operator, expected) in cases {
        let command = txn(
            vec![compare("missing", target.clone(), operator)],
            vec![],
            vec![],
        );
        let Ok(Response::Txn { succeeded, .. }) = applier.apply(&command) else {
            panic!("txn failed");
        };
        assert_eq!(succeeded, expected, "{target:?} {operator:?}");
    }
}

#[test]
fn txn_runs_failure_branch_when_any_compare_fails() {
    let mut applier = Applier::new();
    applier.apply(&put("k", "1")).unwrap();
    let command = txn(
        vec![
            compare("k", CompareTarget::Version(1), CompareOperator::Equal),
            compare(
                "k",
                CompareTarget::Value(bytes("2")),
                CompareOperator::Equal,
            ),
        ],
        vec![txn_put("chosen", "success")],
        vec![txn_put("chosen", "failure")],
    );
    assert_eq!(
        applier.apply(&command),
        Ok(Response::Txn {
            succeeded: false,
            results: vec![TxnResult::Put],
            revision: 2
        })
    );
    assert_eq!(
        applier.store.get(b"chosen").unwrap().value,
        bytes("failure")
    );
}

#[test]
fn txn_writes_share_one_revision_and_gets_see_earlier_writes() {
    let mut applier = Applier::new();
    applier.apply(&put("gone", "x")).unwrap(); // revision 1
    let command = txn(
        vec![],
        vec![
            txn_get("a"),
            txn_put("a", "1"),
            txn_get("a"),
            txn_put("a", "2"),
            txn_delete("gone"),
            txn_get("gone"),
            txn_delete("never"),
        ],
        vec![],
    );
    let Ok(Response::Txn {
        succeeded: true,
        results,
        revision: 2,
    }) = applier.apply(&command)
    else {
        panic!("txn did not commit at revision 2");
    };
    let get_after_first_put = crate::KeyValue {
        key: bytes("a"),
        value: bytes("1"),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
    };
    assert_eq!(
        results,
        vec![
            TxnResult::Get { item: None },
            TxnResult::Put,
            TxnResult::Get {
                item: Some(get_after_first_put)
            },
            TxnResult::Put,
            TxnResult::Delete { deleted: 1 },
            TxnResult::Get { item: None },
            TxnResult::Delete { deleted: 0 },
        ]
    );
    let item = applier.store.get(b"a").unwrap();
    assert_eq!((item.version, item.mod_revision), (2, 2));
    assert_eq!(applier.store.revision(), 2);
}

#[test]
fn txn_without_effective_writes_keeps_the_revision() {
    let mut applier = Applier::new();
    applier.apply(&put("a", "1")).unwrap();
    let command = txn(vec![], vec![txn_get("a"), txn_delete("missing")], vec![]);
    let Ok(Response::Txn { revision, .. }) = applier.apply(&command) else {
        panic!("txn failed");
    };
    assert_eq!((revision, applier.store.revision()), (1, 1));
    assert!(!applier.store.history.contains_key(&2));
}

#[test]
fn range_returns_prefix_matches_in_key_order_with_more_flag() {
    let mut applier = Applier::new();
    for key in ["b/2", "a", "b/1", "b/3", "c", "b"] {
        applier.apply(&put(key, key)).unwrap();
    }
    let keys = |items: Vec<crate::KeyValue>| -> Vec<Bytes> {
        items.into_iter().map(|item| item.key).collect()
    };
    let (items, more) = applier.store.range(b"b/", 2).unwrap();
    assert_eq!(
        (keys(items), more),
        (vec![bytes("b/1"), bytes("b/2")], true)
    );
    let (items, more) = applier.store.range(b"b/", 3).unwrap();
    assert_eq!(
        (keys(items), more),
        (vec![bytes("b/1"), bytes("b/2"), bytes("b/3")], false)
    );
    let (items, more) = applier.store.range(b"", 10).unwrap();
    assert_eq!(items.len(), 6);
    assert!(!more);
    assert_eq!(
        applier.store.range(b"", 0),
        Err(KvError::RangeLimitInvalid { limit: 0 })
    );
    assert!(applier.store.range(b"", KV_RANGE_LIMIT_MAX + 1).is_err());
}

fn event_summary(events: &[Event]) -> Vec<(u64, EventKind, Bytes, Bytes)> {
    events
        .iter()
        .map(|event| {
            let item = &event.key_value;
            (
                item.mod_revision,
                event.kind,
                item.key.clone(),
                item.value.clone(),
            )
        })
        .collect()
}

#[test]
fn changes_since_lists_history_in_revision_then_key_order() {
    let mut applier = Applier::new();
    applier.apply(&put("p/b", "1")).unwrap(); // 1
    applier.apply(&put("other", "x")).unwrap(); // 2
    let both = txn(
        vec![],
        vec![txn_put("p/c", "2"), txn_put("p/a", "3")],
        vec![],
    );
    applier.apply(&both).unwrap(); // 3
    applier.apply(&delete("p/b")).unwrap(); // 4
    let prefix = KeySelector::Prefix(bytes("p/"));
    let events = applier.store.changes_since(0, &prefix, 100).unwrap();
    assert_eq!(
        event_summary(&events),
        vec![
            (1, EventKind::Put, bytes("p/b"), bytes("1")),
            (3, EventKind::Put, bytes("p/a"), bytes("3")),
            (3, EventKind::Put, bytes("p/c"), bytes("2")),
            (4, EventKind::Delete, bytes("p/b"), bytes("")),
        ]
    );
    let events = applier.store.changes_since(3, &prefix, 2).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].key_value.key, bytes("p/a"));
    let exact = KeySelector::Exact(bytes("p/b"));
    let events = applier.store.changes_since(2, &exact, 10).unwrap();
    assert_eq!(
        event_summary(&events),
        vec![(4, EventKind::Delete, bytes("p/b"), bytes(""))]
    );
    // Earlier versions stay available: the first put of p/b still has version 1.
    let events = applier.store.changes_since(1, &exact, 1).unwrap();
    assert_eq!(events[0].key_value.version, 1);
}

#[test]
fn compaction_discards_history_and_reports_compacted() {
    let mut applier = Applier::new();
    for value in ["1", "2", "3", "4"] {
        applier.apply(&put("k", value)).unwrap();
    }
    assert_eq!(
        applier.apply(&compact(3)),
        Ok(Response::Compact {
            compact_revision: 3
        })
    );
    assert_eq!(applier.store.compact_revision(), 3);
    assert_eq!(applier.store.revision(), 4, "compaction is not a key write");
    let all = KeySelector::Prefix(Bytes::new());
    assert_eq!(
        applier.store.changes_since(2, &all, 10),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
    let events = applier.store.changes_since(3, &all, 10).unwrap();
    assert_eq!(
        event_summary(&events),
        vec![
            (3, EventKind::Put, bytes("k"), bytes("3")),
            (4, EventKind::Put, bytes("k"), bytes("4")),
        ]
    );
    // The current value survives compaction.
    assert_eq!(applier.store.get(b"k").unwrap().value, bytes("4"));
    // Compacting below the compaction revision fails; at it, it is a no-op.
    assert_eq!(
        applier.apply(&compact(2)),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
    assert_eq!(
        applier.apply(&compact(3)),
        Ok(Response::Compact {
            compact_revision: 3
        })
    );
    assert_eq!(
        applier.apply(&compact(5)),
        Err(KvError::CompactRevisionAboveCurrent {
            requested: 5,
            current: 4
        })
    );
    assert_eq!(
        applier.apply(&compact(4)),
        Ok(Response::Compact {
            compact_revision: 4
        })
    );
    assert_eq!(applier.store.history.len(), 1);
}

#[test]
fn history_queries_validate_their_arguments() {
    let store = crate::Store::new();
    let all = KeySelector::Prefix(Bytes::new());
    assert_eq!(
        store.changes_since(0, &all, 0),
        Err(KvError::RangeLimitInvalid { limit: 0 })
    );
    let empty_key = KeySelector::Exact(Bytes::new());
    assert_eq!(
        store.changes_since(0, &empty_key, 1),
        Err(KvError::KeyEmpty)
    );
    assert_eq!(store.changes_since(0, &all, KV_RANGE_LIMIT_MAX), Ok(vec![]));
}

#[test]
fn apply_encoded_decodes_applies_and_rejects_garbage_deterministically() {
    let mut store = crate::Store::new();
    assert_eq!(
        store.apply_encoded(1, &put("k", "v").encode()),
        Ok(Response::Put { revision: 1 })
    );
    assert_eq!(
        store.apply_encoded(2, &[0xff, 0x00]),
        Err(KvError::CommandVersionUnsupported { version: 0xff })
    );
    assert_eq!(store.last_applied_index(), 2);
    assert_eq!(store.revision(), 1);
}

#[test]
fn history_beyond_the_retained_bytes_is_compacted_oldest_first() {
    use understudy_types::limits::KV_HISTORY_BYTES_RETAINED_MAX;
    let mut applier = Applier::new();
    let value = "v".repeat(512 * 1024);
    // Each put adds a little over 512 KiB of history; write 20% more than fits.
    let puts = KV_HISTORY_BYTES_RETAINED_MAX * 12 / 10 / (512 * 1024);
    for number in 0..puts {
        applier
            .apply(&put(&format!("k{}", number % 3), &value))
            .unwrap();
    }
    let store = &applier.store;
    assert_eq!(store.revision(), puts);
    let compact = store.compact_revision();
    assert!(compact > 1, "the oldest revisions were compacted");
    assert!(store.history_bytes <= KV_HISTORY_BYTES_RETAINED_MAX);
    // Only whole revisions go, oldest first, and only as many as needed: one
    // more revision would not have fitted.
    let kept = puts - compact + 1;
    let event = (2 + 512 * 1024 + 64) as u64;
    assert_eq!(store.history_bytes, kept * event);
    assert!((kept + 1) * event > KV_HISTORY_BYTES_RETAINED_MAX);
    let all = KeySelector::Prefix(bytes("k"));
    assert!(matches!(
        store.changes_since(compact - 1, &all, 10),
        Err(KvError::Compacted { compact_revision }) if compact_revision == compact
    ));
    let changes = store.changes_since(compact, &all, 10).unwrap();
    assert_eq!(changes[0].key_value.mod_revision, compact);
    // The limit holds after a restore too (the byte count is rebuilt).
    let restored = crate::Store::restore(&store.snapshot()).unwrap();
    assert_eq!(restored.history_bytes, store.history_bytes);
    assert_eq!(&restored, store);
}
