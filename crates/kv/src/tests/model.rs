//! Property tests: the store against a BTreeMap model, snapshot round trips
//! and determinism after random commands.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::{Response, Store};

#[derive(Debug, Clone)]
enum Step {
    Put(u8, u8),
    Delete(u8),
    Txn(u8, u8, u8),
    Compact(u8),
    SessionPut(u8, u8, u64),
}

fn key(number: u8) -> String {
    format!("k/{}", number % 6)
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        any::<u8>().prop_map(Step::Delete),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, v)| Step::Txn(a, b, v)),
        any::<u8>().prop_map(Step::Compact),
        (any::<u8>(), any::<u8>(), 1u64..6).prop_map(|(c, v, s)| Step::SessionPut(c, v, s)),
    ]
}

fn command_for(step: &Step, revision: u64) -> Command {
    match step {
        Step::Put(k, v) => put(&key(*k), &v.to_string()),
        Step::Delete(k) => delete(&key(*k)),
        Step::Txn(a, b, v) => txn(
            vec![compare(
                &key(*a),
                CompareTarget::Version(0),
                CompareOperator::Greater,
            )],
            vec![txn_delete(&key(*a)), txn_put(&key(*b), &v.to_string())],
            vec![txn_put(&key(*a), &v.to_string())],
        ),
        Step::Compact(r) => compact(u64::from(*r) % (revision + 2)),
        Step::SessionPut(c, v, s) => with_session(put(&key(*v), "s"), &format!("c{}", c % 3), *s),
    }
}

/// Applies `step` to the model map when the store reports it took effect.
fn update_model(model: &mut BTreeMap<String, String>, step: &Step, response: &Response) {
    match (step, response) {
        (Step::Put(k, v), _) => {
            model.insert(key(*k), v.to_string());
        }
        (Step::Delete(k), _) => {
            model.remove(&key(*k));
        }
        (Step::Txn(a, b, v), Response::Txn { succeeded, .. }) => {
            assert_eq!(
                *succeeded,
                model.contains_key(&key(*a)),
                "compare on existence"
            );
            if *succeeded {
                model.remove(&key(*a));
                model.insert(key(*b), v.to_string());
            } else {
                model.insert(key(*a), v.to_string());
            }
        }
        (Step::SessionPut(_, v, _), Response::Put { .. }) => {
            model.insert(key(*v), "s".to_string());
        }
        _ => {}
    }
}

fn run(steps: &[Step]) -> (Store, BTreeMap<String, String>) {
    let mut applier = Applier::new();
    let mut model = BTreeMap::new();
    for step in steps {
        let revision_before = applier.store.revision();
        let model_before = model.clone();
        let command = command_for(step, revision_before);
        // A session retry or expiry must not touch the model.
        let retry_or_expired = matches!(step, Step::SessionPut(..))
            && !session_is_fresh(&applier.store, command.request_id.as_ref().unwrap());
        let outcome = applier.apply(&command);
        if let (Ok(response), false) = (&outcome, retry_or_expired) {
            update_model(&mut model, step, response);
        }
        let wrote = match step {
            Step::Put(..) | Step::Txn(..) => true,
            Step::Delete(k) => model_before.contains_key(&key(*k)),
            Step::Compact(..) => false,
            Step::SessionPut(..) => !retry_or_expired,
        };
        let expected_revision = revision_before + u64::from(wrote);
        assert_eq!(applier.store.revision(), expected_revision, "{step:?}");
    }
    (applier.store, model)
}

fn session_is_fresh(store: &Store, request_id: &RequestId) -> bool {
    match store.sessions.clients.get(&request_id.client_id) {
        None => request_id.sequence == 1,
        Some(session) => {
            !session.results.contains_key(&request_id.sequence)
                && request_id.sequence > session.discarded_through
        }
    }
}

proptest! {
    #[test]
    fn store_matches_model_and_snapshots_round_trip(
        steps in proptest::collection::vec(step_strategy(), 0..60)
    ) {
        let (store, model) = run(&steps);
        for number in 0..6u8 {
            let expected = model.get(&key(number)).map(|value| bytes(value));
            let actual = store.get(key(number).as_bytes()).map(|item| item.value.clone());
            prop_assert_eq!(actual, expected);
        }
        let (items, more) = store.range(b"k/", 10).unwrap();
        prop_assert!(!more);
        let listed: Vec<(Bytes, Bytes)> = items.into_iter().map(|item| (item.key, item.value)).collect();
        let modelled: Vec<(Bytes, Bytes)> = model.iter().map(|(k, v)| (bytes(k), bytes(v))).collect();
        prop_assert_eq!(listed, modelled);

        let snapshot = store.snapshot();
        let restored = Store::restore(&snapshot).unwrap();
        prop_assert_eq!(&restored, &store);
        // Determinism: the same commands give byte-identical snapshots.
        let (again, _) = run(&steps);
        prop_assert_eq!(again.snapshot(), snapshot);
    }

    #[test]
    fn random_snapshot_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Store::restore(&bytes);
    }
}
