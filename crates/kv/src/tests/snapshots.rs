//! Snapshot round trips and corruption.

use super::*;
use crate::{KvError, Store, SNAPSHOT_MAGIC};

fn busy_store() -> Store {
    let mut applier = Applier::new();
    applier.apply(&put("a", "1")).unwrap();
    applier
        .apply(&with_session(put("b", "2"), "client", 1))
        .unwrap();
    applier.apply(&delete("a")).unwrap();
    let command = txn(vec![], vec![txn_put("c", "3"), txn_get("c")], vec![]);
    applier.apply(&with_session(command, "client", 2)).unwrap();
    applier.apply(&compact(2)).unwrap();
    applier.store
}

#[test]
fn snapshot_round_trips_everything() {
    let store = busy_store();
    let restored = Store::restore(&store.snapshot()).unwrap();
    assert_eq!(restored, store);
    assert_eq!(restored.snapshot(), store.snapshot());
    // The restored sessions still answer retries with their first results.
    let mut restored = restored;
    let retry = with_session(put("b", "2"), "client", 1);
    let index = restored.last_applied_index() + 1;
    assert_eq!(
        restored.apply(index, &retry),
        Ok(crate::Response::Put { revision: 2 })
    );
}

#[test]
fn every_corrupted_byte_is_rejected() {
    let encoded = busy_store().snapshot();
    for index in 0..encoded.len() {
        let mut corrupted = encoded.to_vec();
        corrupted[index] ^= 0x01;
        assert!(
            Store::restore(&corrupted).is_err(),
            "flip at byte {index} accepted"
        );
    }
}

#[test]
fn truncated_extended_and_foreign_snapshots_are_rejected() {
    let encoded = busy_store().snapshot();
    for length in [0, 5, 21, encoded.len() - 1] {
        assert!(
            Store::restore(&encoded[..length]).is_err(),
            "length {length} accepted"
        );
    }
    let mut trailing = encoded.to_vec();
    trailing.push(0);
    assert!(matches!(
        Store::restore(&trailing),
        Err(KvError::SnapshotLengthInvalid { .. })
    ));
    let mut foreign = encoded.to_vec();
    foreign[..8].copy_from_slice(b"NOTASNAP");
    assert_eq!(
        Store::restore(&foreign),
        Err(KvError::SnapshotMagicMismatch)
    );
    let mut version = encoded.to_vec();
    version[8] = 2;
    assert_eq!(
        Store::restore(&version),
        Err(KvError::SnapshotVersionUnsupported { version: 2 })
    );
}

#[test]
fn well_checksummed_but_inconsistent_payload_is_rejected() {
    let mut store = busy_store();
    store.compact_revision = store.revision + 1;
    assert_eq!(
        Store::restore(&store.snapshot()),
        Err(KvError::SnapshotMalformed)
    );
    let mut store = busy_store();
    store
        .keys
        .insert(bytes("x"), store.keys[&bytes("b")].clone());
    assert_eq!(
        Store::restore(&store.snapshot()),
        Err(KvError::SnapshotMalformed)
    );
}

#[test]
fn empty_store_snapshot_starts_with_magic() {
    let encoded = Store::new().snapshot();
    assert_eq!(encoded[..8], SNAPSHOT_MAGIC);
    assert_eq!(Store::restore(&encoded).unwrap(), Store::new());
}
