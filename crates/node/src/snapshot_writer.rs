//! Writes snapshot data files on a background thread, so the driver thread (Raft
//! core, group commit, state machine) does not stop for the write and its fsyncs.
//!
//! The driver serializes the state (a consistent cut at the applied index),
//! reserves a file number in the log ([`RaftLog::reserve_snapshot_file`]) and
//! submits a [`SnapshotJob`]. This thread installs the file through its own
//! [`FileStorage`] on the log's directory (temporary file, fsync, rename,
//! directory fsync: `understudy_raft_log::write_snapshot_file`) and hands back a
//! [`SnapshotWriteOutcome`]; the driver then records it
//! ([`RaftLog::complete_snapshot`]) and compacts the core. The crash argument
//! for the steps is in raft-log's `snapshot_file.rs`.
//!
//! One long-lived `std::thread` rather than tokio's `spawn_blocking`: the driver
//! is itself a plain thread; a write holds a thread for its whole duration
//! anyway; and shutdown is explicit (dropping the writer joins it), with no
//! dependence on the async runtime still running when the driver stops. At most
//! one job is in flight (the driver waits for its outcome before the next).
//!
//! Outcomes come back on a channel of their own that the driver polls on every
//! turn of its loop (at least once per tick), not on the driver's input channel:
//! a writer holding an input sender would keep that channel connected forever,
//! and the driver stops when every input sender is gone.
//!
//! [`RaftLog::reserve_snapshot_file`]: understudy_raft_log::RaftLog::reserve_snapshot_file
//! [`RaftLog::complete_snapshot`]: understudy_raft_log::RaftLog::complete_snapshot

use bytes::Bytes;
use std::path::PathBuf;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use understudy_raft::SnapshotMeta;
use understudy_raft_log::{write_snapshot_file, SnapshotFileReservation, WrittenSnapshotFile};
use understudy_wal::FileStorage;

/// A snapshot to write: the state at `meta.last_index`, into the reserved file.
#[derive(Debug)]
pub struct SnapshotJob {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The serialized state.
    pub data: Bytes,
    /// The file number the log reserved for it.
    pub reservation: SnapshotFileReservation,
}

/// What became of a [`SnapshotJob`].
#[derive(Debug)]
pub struct SnapshotWriteOutcome {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// The serialized state (the core keeps it to send to lagging followers).
    pub data: Bytes,
    /// The durable, not yet referenced, file; or why writing it failed.
    pub written: Result<WrittenSnapshotFile, String>,
    /// How long the write (with its fsyncs) took.
    pub write_duration: Duration,
}

/// The background writer: a thread and the channels to it.
#[derive(Debug)]
pub struct SnapshotWriter {
    /// `None` once stopping: the thread ends when this sender is dropped.
    jobs: Option<SyncSender<SnapshotJob>>,
    outcomes: Receiver<SnapshotWriteOutcome>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
}

impl SnapshotWriter {
    /// Starts the thread; it writes into `directory` (the log's directory).
    pub fn spawn(directory: PathBuf, node_id: u64) -> std::io::Result<SnapshotWriter> {
        // One job at a time: the driver submits only when none is in flight.
        let (jobs, job_receiver) = sync_channel::<SnapshotJob>(1);
        let (outcome_sender, outcomes) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("snapshot-writer-{node_id}"))
            .spawn(move || {
                for job in job_receiver {
                    let outcome = write(&directory, job);
                    if outcome_sender.send(outcome).is_err() {
                        // The driver is gone; the file is an orphan `open` removes.
                        return;
                    }
                }
            })?;
        Ok(SnapshotWriter {
            jobs: Some(jobs),
            outcomes,
            thread: Some(thread),
            in_flight: false,
        })
    }

    /// Whether a job was submitted whose outcome has not been taken yet.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Hands `job` to the thread; gives it back if the thread is gone.
    pub fn submit(&mut self, job: SnapshotJob) -> Result<(), SnapshotJob> {
        assert!(!self.in_flight, "one snapshot write at a time");
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        // Never blocks: the queue holds one job and none is in flight.
        jobs.try_send(job).map_err(|error| match error {
            std::sync::mpsc::TrySendError::Full(job)
            | std::sync::mpsc::TrySendError::Disconnected(job) => job,
        })?;
        self.in_flight = true;
        Ok(())
    }

    /// The outcome of the job in flight, if it has finished.
    pub fn try_take(&mut self) -> Option<SnapshotWriteOutcome> {
        if !self.in_flight {
            return None;
        }
        match self.outcomes.try_recv() {
            Ok(outcome) => {
                self.in_flight = false;
                Some(outcome)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                // The thread panicked mid-write: whatever it left is an orphan.
                self.in_flight = false;
                self.jobs = None;
                Some(SnapshotWriteOutcome {
                    meta: SnapshotMeta::default(),
                    data: Bytes::new(),
                    written: Err("the snapshot writer thread ended".into()),
                    write_duration: Duration::ZERO,
                })
            }
        }
    }

    /// Stops the thread after its current write (if any) and returns that
    /// write's outcome.
    pub fn stop(&mut self) -> Option<SnapshotWriteOutcome> {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            // A panic was already reported by the panic hook; the outcome below
            // then says the thread ended.
            let _ = thread.join();
        }
        self.try_take()
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        // Never leave a thread writing into a directory a restarted node may
        // already be opening (it could reuse the file number).
        let _ = self.stop();
    }
}

fn write(directory: &std::path::Path, job: SnapshotJob) -> SnapshotWriteOutcome {
    let started = Instant::now();
    // A fresh handle per job: `FileStorage` keeps the handles of files it wrote
    // open, and dropping it closes the snapshot file's.
    let written = FileStorage::open(directory)
        .map_err(|error| format!("{}: {error}", directory.display()))
        .and_then(|mut storage| {
            write_snapshot_file(&mut storage, &job.reservation, &job.data)
                .map_err(|error| error.to_string())
        });
    SnapshotWriteOutcome {
        meta: job.meta,
        data: job.data,
        written,
        write_duration: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_raft::RestoredState;
    use understudy_raft_log::{RaftLog, RaftLogOptions};
    use understudy_types::{LogIndex, NodeId};

    fn open_log(directory: &std::path::Path) -> (RaftLog<FileStorage>, RestoredState) {
        let storage = FileStorage::open(directory).expect("storage");
        RaftLog::open(storage, RaftLogOptions::default(), || {
            RestoredState::bootstrap([NodeId(1)])
        })
        .expect("open")
    }

    #[test]
    fn a_written_snapshot_completes_and_survives_reopen() {
        let directory = tempfile::tempdir().expect("tempdir");
        let (mut log, restored) = open_log(directory.path());
        let mut writer = SnapshotWriter::spawn(directory.path().to_path_buf(), 1).expect("spawn");
        let meta = SnapshotMeta {
            last_index: LogIndex(0),
            ..restored.snapshot.0.clone()
        };
        let reservation = log.reserve_snapshot_file();
        writer
            .submit(SnapshotJob {
                meta: meta.clone(),
                data: Bytes::from_static(b"state"),
                reservation,
            })
            .expect("submit");
        assert!(writer.in_flight());
        // `stop` waits for the write in flight and returns its outcome.
        let outcome = writer.stop().expect("the write finished");
        assert!(!writer.in_flight());
        let written = outcome.written.expect("written");
        log.complete_snapshot(&outcome.meta, written)
            .expect("complete");
        drop(log);
        let (_, reopened) = open_log(directory.path());
        assert_eq!(reopened.snapshot, (meta, Bytes::from_static(b"state")));
    }

    #[test]
    fn a_stopped_writer_refuses_jobs() {
        let directory = tempfile::tempdir().expect("tempdir");
        let (mut log, restored) = open_log(directory.path());
        let mut writer = SnapshotWriter::spawn(directory.path().to_path_buf(), 1).expect("spawn");
        assert!(writer.stop().is_none(), "nothing was in flight");
        let job = SnapshotJob {
            meta: restored.snapshot.0,
            data: Bytes::new(),
            reservation: log.reserve_snapshot_file(),
        };
        assert!(writer.submit(job).is_err());
        assert!(!writer.in_flight());
    }

    #[test]
    fn a_failed_write_is_reported_not_fatal() {
        let directory = tempfile::tempdir().expect("tempdir");
        let (mut log, restored) = open_log(directory.path());
        // A regular file where the writer expects a directory: every write fails.
        let not_a_directory = directory.path().join("not-a-directory");
        std::fs::write(&not_a_directory, b"x").expect("write");
        let mut writer = SnapshotWriter::spawn(not_a_directory, 1).expect("spawn");
        let job = SnapshotJob {
            meta: restored.snapshot.0,
            data: Bytes::from_static(b"state"),
            reservation: log.reserve_snapshot_file(),
        };
        writer.submit(job).expect("submit");
        let outcome = writer.stop().expect("the write finished");
        assert!(outcome.written.is_err(), "{:?}", outcome.written);
        // The log is untouched and usable.
        log.sync().expect("sync");
    }
}
