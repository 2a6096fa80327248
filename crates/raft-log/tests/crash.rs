//! Crash tests on the simulated disk, many seeds each.
//!
//! A random Raft-like workload (votes, appends with conflicting suffixes, group
//! commits, application snapshots with compaction, installed snapshots that keep
//! or drop the log) runs against a reference model. A simulated power cut stops it
//! between two storage calls at a seed-chosen point; the disk then crashes. The
//! reopened state must equal the model's state after some record at or after the
//! last acknowledged sync: nothing durable lost, nothing invented, no mixture.
//!
//! Rerun one seed with `RAFT_LOG_CRASH_SEED=<n>`; run more seeds with
//! `RAFT_LOG_CRASH_SEED_COUNT=<n>`.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use understudy_raft::{Entry, EntryPayload, HardState, Membership, RestoredState, SnapshotMeta};
use understudy_raft_log::{write_snapshot_file, RaftLog, RaftLogError, RaftLogOptions};
use understudy_types::{LogIndex, NodeId, Term};
use understudy_wal::{CrashFaults, SimDisk, WalOptions};

const SEED_COUNT: u64 = 300;

/// The model's view of the durable state.
#[derive(Clone, Debug, PartialEq)]
struct State {
    hard_state: HardState,
    snapshot: (SnapshotMeta, Bytes),
    entries: Vec<Entry>,
}

impl State {
    fn from_restored(restored: RestoredState) -> State {
        State {
            hard_state: restored.hard_state,
            snapshot: restored.snapshot,
            entries: restored.entries,
        }
    }

    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.0.last_index, |e| e.index)
            .get()
    }

    fn term_at(&self, index: u64) -> Option<Term> {
        if index == self.snapshot.0.last_index.get() {
            return Some(self.snapshot.0.last_term);
        }
        let offset = index.checked_sub(self.snapshot.0.last_index.get() + 1)?;
        self.entries.get(offset as usize).map(|entry| entry.term)
    }
}

/// Every state the durable log may legitimately come back as: one per record
/// written since the last acknowledged sync (the first element).
struct History {
    states: Vec<State>,
}

impl History {
    fn current(&self) -> &State {
        self.states.last().expect("history is never empty")
    }

    fn push(&mut self, state: State) {
        self.states.push(state);
    }

    fn acknowledge(&mut self) {
        let current = self.current().clone();
        self.states = vec![current];
    }
}

fn random_entry(rng: &mut ChaCha8Rng, index: u64, term: Term) -> Entry {
    let payload = match rng.gen_range(0..10) {
        0 => EntryPayload::Empty,
        1 => EntryPayload::Membership(Membership::with_voters(
            (1..rng.gen_range(2..6)).map(NodeId),
        )),
        _ => {
            let length = rng.gen_range(0..400);
            EntryPayload::Command((0..length).map(|_| rng.gen()).collect::<Vec<u8>>().into())
        }
    };
    Entry {
        term,
        index: LogIndex(index),
        payload,
    }
}

fn random_data(rng: &mut ChaCha8Rng) -> Vec<u8> {
    (0..rng.gen_range(0..600)).map(|_| rng.gen()).collect()
}

/// One step of the workload; records every intermediate state in `history`.
fn step(
    log: &mut RaftLog<SimDisk>,
    rng: &mut ChaCha8Rng,
    history: &mut History,
) -> Result<(), RaftLogError> {
    let state = history.current().clone();
    match rng.gen_range(0..20) {
        0..=10 => {
            let mut next = state.clone();
            let hard_state = rng.gen_bool(0.3).then(|| HardState {
                term: Term(state.hard_state.term.get() + rng.gen_range(0..2)),
                voted_for: Some(NodeId(rng.gen_range(1..4))),
            });
            let first_allowed = state.snapshot.0.last_index.get() + 1;
            let start = rng.gen_range(first_allowed..=state.last_index() + 1);
            let term = hard_state.map_or(state.hard_state.term, |h| h.term);
            let new: Vec<Entry> = (start..start + rng.gen_range(0..6))
                .map(|i| random_entry(rng, i, term))
                .collect();
            log.append(hard_state, &new)?;
            // Record order: the hard state first, then each entry.
            if let Some(hard_state) = hard_state {
                next.hard_state = hard_state;
                history.push(next.clone());
            }
            for entry in new {
                next.entries
                    .truncate((entry.index.get() - first_allowed) as usize);
                next.entries.push(entry);
                history.push(next.clone());
            }
        }
        11..=15 => {
            log.sync()?;
            history.acknowledge();
        }
        16..=17 => {
            let index = rng.gen_range(state.snapshot.0.last_index.get()..=state.last_index());
            let meta = SnapshotMeta {
                last_index: LogIndex(index),
                last_term: state.term_at(index).expect("index inside the log"),
                membership: Membership::with_voters([NodeId(1)]),
            };
            let data = random_data(rng);
            // Half the application snapshots take the two-step path, the file
            // written through a second handle on the disk, as the node does.
            let saved = if rng.gen_bool(0.5) {
                Saved::TwoStep
            } else {
                Saved::OneCall
            };
            apply_snapshot(log, history, meta, data, true, saved)?;
        }
        _ => {
            let keep = rng.gen_bool(0.5) && state.last_index() > state.snapshot.0.last_index.get();
            let index = if keep {
                rng.gen_range(state.snapshot.0.last_index.get() + 1..=state.last_index())
            } else {
                state.snapshot.0.last_index.get() + rng.gen_range(0..20)
            };
            let meta = SnapshotMeta {
                last_index: LogIndex(index),
                last_term: state.term_at(index).unwrap_or(state.hard_state.term),
                membership: Membership::with_voters([NodeId(2), NodeId(3)]),
            };
            let data = random_data(rng);
            apply_snapshot(log, history, meta, data, keep, Saved::Installed)?;
        }
    }
    Ok(())
}

/// How a snapshot reaches the log.
enum Saved {
    /// `install_snapshot` (from a leader).
    Installed,
    /// `save_snapshot`.
    OneCall,
    /// Reserve, `write_snapshot_file` on a second handle, `complete_snapshot`.
    TwoStep,
}

fn apply_snapshot(
    log: &mut RaftLog<SimDisk>,
    history: &mut History,
    meta: SnapshotMeta,
    data: Vec<u8>,
    keep_entries_after: bool,
    saved: Saved,
) -> Result<(), RaftLogError> {
    let written = match saved {
        Saved::TwoStep => {
            let reservation = log.reserve_snapshot_file();
            let mut writer_disk = log.wal().storage().clone();
            Some(write_snapshot_file(&mut writer_disk, &reservation, &data)?)
        }
        Saved::Installed | Saved::OneCall => None,
    };
    let mut next = history.current().clone();
    if keep_entries_after {
        next.entries.retain(|entry| entry.index > meta.last_index);
    } else {
        next.entries.clear();
    }
    next.snapshot = (meta.clone(), Bytes::from(data.clone()));
    // The snapshot record is written (and may survive a crash) before the call
    // returns; once it returns, it is durable.
    history.push(next);
    match (saved, written) {
        (Saved::Installed, _) => log.install_snapshot(&meta, &data, keep_entries_after)?,
        (Saved::TwoStep, Some(written)) => log.complete_snapshot(&meta, written)?,
        _ => log.save_snapshot(&meta, &data)?,
    }
    history.acknowledge();
    Ok(())
}

/// What the runs exercised, so that the suite cannot pass vacuously.
#[derive(Debug, Default)]
struct Coverage {
    steps: u64,
    snapshots_stored: u64,
    segments_at_most: usize,
    restored_past_acknowledged: u64,
    sectors_lost: u64,
    sectors_torn: u64,
}

/// Runs one seed; returns the first violation.
fn run_seed(seed: u64, no_op_sync: bool, coverage: &mut Coverage) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let disk = SimDisk::new();
    let options = RaftLogOptions {
        wal: WalOptions {
            segment_bytes_target: [512, 2048, 1 << 20][rng.gen_range(0..3)],
            deliberate_bug_no_op_sync: no_op_sync,
        },
    };
    let faults = if seed % 3 == 0 {
        CrashFaults::process_crash()
    } else {
        CrashFaults::power_loss()
    };
    let mut history = History {
        states: vec![State::from_restored(RestoredState::bootstrap([
            NodeId(1),
            NodeId(2),
        ]))],
    };
    // Interrupted bootstraps may leave nothing durable: then bootstrap again.
    let mut fresh_allowed = true;
    for life in 0..5 {
        let bootstrap = || RestoredState::bootstrap([NodeId(1), NodeId(2)]);
        let (mut log, restored) = RaftLog::open(disk.clone(), options.clone(), bootstrap)
            .map_err(|error| format!("life {life}: open failed: {error}"))?;
        let restored = State::from_restored(restored);
        let matches = history.states.contains(&restored);
        let is_bootstrap = fresh_allowed && restored == history.states[0];
        if !matches && !is_bootstrap {
            return Err(format!(
                "life {life}: restored state is none of the {} allowed; acknowledged {:?}, restored {:?}",
                history.states.len(),
                summary(&history.states[0]),
                summary(&restored)
            ));
        }
        fresh_allowed = false;
        if history.states.len() > 1 && restored != history.states[0] {
            coverage.restored_past_acknowledged += 1;
        }
        history.states = vec![restored];
        disk.cut_power_after(rng.gen_range(0..120));
        for _ in 0..80 {
            coverage.steps += 1;
            let snapshot_before = log.snapshot_meta().clone();
            if step(&mut log, &mut rng, &mut history).is_err() {
                break;
            }
            coverage.snapshots_stored += u64::from(*log.snapshot_meta() != snapshot_before);
            coverage.segments_at_most = coverage.segments_at_most.max(log.wal().segments().len());
        }
        drop(log);
        let crash = disk.crash(&mut rng, &faults);
        coverage.sectors_lost += crash.sectors_lost;
        coverage.sectors_torn += crash.sectors_torn;
    }
    Ok(())
}

fn summary(state: &State) -> String {
    format!(
        "term {} vote {:?} snapshot {} entries {}..={}",
        state.hard_state.term,
        state.hard_state.voted_for,
        state.snapshot.0.last_index,
        state.snapshot.0.last_index.get() + 1,
        state.last_index()
    )
}

#[test]
fn crashes_restore_exactly_a_durable_state() {
    let seeds: Vec<u64> = match std::env::var("RAFT_LOG_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("a number")],
        Err(_) => {
            let count = std::env::var("RAFT_LOG_CRASH_SEED_COUNT")
                .map_or(SEED_COUNT, |count| count.parse().expect("a number"));
            (0..count).collect()
        }
    };
    let mut coverage = Coverage::default();
    let all_seeds = seeds.len() > 1;
    for seed in seeds {
        if let Err(violation) = run_seed(seed, false, &mut coverage) {
            panic!("seed {seed}: {violation}\nrerun: RAFT_LOG_CRASH_SEED={seed} cargo test -p understudy-raft-log --test crash");
        }
    }
    println!("{coverage:?}");
    if all_seeds {
        let counts = [
            coverage.snapshots_stored,
            coverage.restored_past_acknowledged,
            coverage.sectors_lost,
            coverage.sectors_torn,
        ];
        assert!(
            counts.iter().all(|&count| count > 0),
            "a case never happened: {coverage:?}"
        );
        assert!(
            coverage.segments_at_most >= 3,
            "compaction never had segments to remove"
        );
    }
}

/// The same workload with the WAL's fsync turned into a no-op must be caught.
#[test]
fn crash_suite_catches_a_no_op_fsync() {
    let caught = (0..SEED_COUNT)
        .filter(|&seed| run_seed(seed, true, &mut Coverage::default()).is_err())
        .count();
    assert!(caught > 0, "no seed noticed that fsync did nothing");
}
