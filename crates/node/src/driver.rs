//! The Raft driver: one dedicated thread owns the Raft core, the durable log and
//! the state machine, executes the core's commands in order and does group
//! commit (every Persist is appended and flushed as it comes; one fsync then
//! covers the whole batch of inputs handled since the last one).
//!
//! It runs on its own OS thread rather than a tokio task so that fsync never
//! blocks the async runtime's workers; inputs arrive on a bounded channel.
//!
//! Application snapshots are serialized here (a consistent cut at the applied
//! index) but their files are written by `snapshot_writer`'s thread; the driver
//! keeps committing meanwhile and records the file when the write is done.

use crate::shared::{Shared, StatusView};
use crate::snapshot_writer::{SnapshotJob, SnapshotWriteOutcome, SnapshotWriter};
use crate::state::{Applied, NodeState};
use crate::transport::Outbound;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use understudy_raft::{
    Command, Entry, EntryPayload, Membership, MembershipChange, Message, PersistId, RaftError,
    RaftNode, Role, SnapshotMeta,
};
use understudy_raft_log::RaftLog;
use understudy_types::{LogIndex, NodeId, Term};
use understudy_wal::FileStorage;

/// Inputs handled per fsync batch, at most, so a flood cannot starve the timer.
const INPUTS_PER_BATCH_MAX: usize = 1024;

/// Why a proposal has no result.
#[derive(Debug)]
pub enum ProposeFailure {
    /// Refused before anything was appended.
    Refused(RaftError),
    /// Appended, then its slot went to another entry (or a snapshot covered it):
    /// the outcome is unknown to this node.
    Lost,
}

/// The answer to a proposal.
pub type ProposeResult = Result<Applied, ProposeFailure>;

/// One input to the driver.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer.
    Message(Message),
    /// Propose a command; answered once it applied (or failed).
    Propose {
        /// The encoded node command.
        command: Bytes,
        /// Where the answer goes.
        reply: oneshot::Sender<ProposeResult>,
    },
    /// A linearizable read barrier: answered once the state machine applied the
    /// read index, or with the leader hint if this node cannot serve it.
    ReadIndex {
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), Option<u64>>>,
    },
    /// Change the membership.
    ChangeMembership {
        /// The change.
        change: MembershipChange,
        /// The log index and term of the configuration entry, if the core
        /// accepted the change.
        reply: oneshot::Sender<Result<(LogIndex, Term), RaftError>>,
    },
    /// Hand leadership to `target` (before a clean shutdown).
    TransferLeadership {
        /// The voter to hand over to.
        target: u64,
    },
    /// The transport's evidence that the leader's process is gone: its peer
    /// connection to us ended and its peer port refused a new connection (the
    /// kernel closed its sockets). The core campaigns early if `peer` is still
    /// the leader it follows (`RaftNode::report_unreachable`).
    LeaderUnreachable {
        /// The node believed gone.
        peer: u64,
    },
    /// `peer` opened a connection to us (it is up): our lanes to it that are
    /// backing off reconnect now.
    PeerConnected {
        /// The node that connected.
        peer: u64,
    },
    /// Finish the current batch (including its fsync) and stop.
    Stop,
}

type ReadReply = oneshot::Sender<Result<(), Option<u64>>>;

/// The driver's state.
pub struct Driver {
    /// The core.
    pub raft: RaftNode,
    /// Durable Raft state.
    pub log: RaftLog<FileStorage>,
    /// Shared with the service.
    pub shared: Arc<Shared>,
    /// Peer connections.
    pub outbound: Outbound,
    /// Take a snapshot after this many applied entries.
    pub snapshot_threshold_entries: u64,
    /// The index and term of the last applied entry.
    pub applied: (LogIndex, Term),
    /// The membership of the last applied configuration.
    pub applied_membership: Membership,
    /// The last snapshot's index.
    pub snapshot_index: LogIndex,
    /// No snapshot is started before this index is applied (set after a failed
    /// write, so a failing disk is retried once per threshold, not every turn).
    snapshot_retry_index: LogIndex,
    /// Writes snapshot files off this thread; started with the first snapshot.
    snapshot_writer: Option<SnapshotWriter>,
    /// Set on `Stop`: no new snapshot is started.
    stopping: bool,
    written_unsynced: Option<PersistId>,
    pending_writes: BTreeMap<LogIndex, (Term, oneshot::Sender<ProposeResult>)>,
    pending_reads: BTreeMap<u64, ReadReply>,
    next_read_context: u64,
    ready_reads: Vec<(LogIndex, ReadReply)>,
    last_role: Role,
}

impl Driver {
    /// A driver over a restored core and log; `meta` is the restored snapshot's.
    pub fn new(
        raft: RaftNode,
        log: RaftLog<FileStorage>,
        shared: Arc<Shared>,
        outbound: Outbound,
        meta: &SnapshotMeta,
        snapshot_threshold_entries: u64,
    ) -> Driver {
        Driver {
            raft,
            log,
            shared,
            outbound,
            snapshot_threshold_entries,
            applied: (meta.last_index, meta.last_term),
            applied_membership: meta.membership.clone(),
            snapshot_index: meta.last_index,
            snapshot_retry_index: LogIndex(0),
            snapshot_writer: None,
            stopping: false,
            written_unsynced: None,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            next_read_context: 1,
            ready_reads: Vec::new(),
            last_role: Role::Follower,
        }
    }

    /// Runs until `Stop` or until every sender is gone; an I/O error stops the
    /// node (it must not acknowledge anything it could not make durable).
    pub fn run(mut self, inputs: Receiver<Input>, tick: Duration) -> Result<(), String> {
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut stop = false;
            match inputs.recv_timeout(wait) {
                Ok(input) => stop |= self.handle(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            // Group commit: everything already queued joins this batch.
            for _ in 0..INPUTS_PER_BATCH_MAX {
                match inputs.try_recv() {
                    Ok(input) => stop |= self.handle(input),
                    Err(_) => break,
                }
            }
            if Instant::now() >= next_tick {
                self.raft.tick();
                next_tick = Instant::now() + tick;
            }
            // At least once per tick: a finished background snapshot write is
            // recorded and the core compacted.
            if let Some(outcome) = self
                .snapshot_writer
                .as_mut()
                .and_then(SnapshotWriter::try_take)
            {
                self.finish_snapshot(outcome)?;
            }
            self.drain()?;
            self.sync_batch()?;
            self.publish_status();
            if stop {
                self.stopping = true;
                // Wait for a write in flight (at most one snapshot file) and record
                // it: the restart then replays less. Dropping the writer would also
                // wait; its file would then be an orphan that `open` removes.
                if let Some(outcome) = self.snapshot_writer.as_mut().and_then(SnapshotWriter::stop)
                {
                    self.finish_snapshot(outcome)?;
                    self.drain()?;
                    self.sync_batch()?;
                }
                tracing::info!(node = self.shared.id, "raft driver stopped");
                return Ok(());
            }
        }
    }

    /// Handles one input; true for `Stop`.
    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Message(message) => self.raft.step(message),
            Input::Propose { command, reply } => match self.raft.propose(command) {
                Ok((index, term)) => {
                    self.shared
                        .metrics
                        .proposals
                        .fetch_add(1, Ordering::Relaxed);
                    self.pending_writes.insert(index, (term, reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(ProposeFailure::Refused(error)));
                }
            },
            Input::ReadIndex { reply } => {
                let context = self.next_read_context;
                self.next_read_context += 1;
                self.pending_reads.insert(context, reply);
                self.raft.read_index(context);
            }
            Input::ChangeMembership { change, reply } => {
                let _ = reply.send(self.raft.change_membership(change));
            }
            Input::TransferLeadership { target } => {
                if let Err(error) = self.raft.transfer_leadership(NodeId(target)) {
                    tracing::debug!(node = self.shared.id, %error, "leadership transfer refused");
                }
            }
            Input::LeaderUnreachable { peer } => {
                self.shared
                    .metrics
                    .leader_unreachable_hints
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    node = self.shared.id,
                    peer,
                    "hint: the leader's process is gone"
                );
                self.raft.report_unreachable(NodeId(peer));
            }
            Input::PeerConnected { peer } => self.outbound.wake(peer),
            Input::Stop => return true,
        }
        false
    }

    /// Executes the core's commands until it has nothing more to say.
    fn drain(&mut self) -> Result<(), String> {
        loop {
            let commands = self.raft.take_commands();
            if commands.is_empty() {
                return Ok(());
            }
            for command in commands {
                self.execute(command)?;
            }
            self.serve_ready_reads();
            self.maybe_snapshot();
        }
    }

    fn execute(&mut self, command: Command) -> Result<(), String> {
        match command {
            Command::Persist {
                id,
                hard_state,
                entries,
            } => {
                // Written (to the OS) now; made durable by the batch's single fsync
                // in `sync_batch` before the core hears that `id` is persisted.
                self.log
                    .append(hard_state, &entries)
                    .and_then(|()| self.log.flush())
                    .map_err(|error| format!("log append failed: {error}"))?;
                self.written_unsynced = Some(id);
            }
            Command::Send(message) => self.outbound.send(message),
            Command::Apply(entries) => {
                for entry in entries {
                    self.apply(entry);
                }
            }
            Command::InstallSnapshot {
                id,
                meta,
                data,
                keep_entries_after,
            } => self.install_snapshot(id, meta, data, keep_entries_after)?,
            Command::ReadReady { context, index } => {
                if let Some(reply) = self.pending_reads.remove(&context) {
                    self.ready_reads.push((index, reply));
                }
            }
            Command::ReadFailed {
                context,
                leader_hint,
            } => {
                if let Some(reply) = self.pending_reads.remove(&context) {
                    let _ = reply.send(Err(leader_hint.map(NodeId::get)));
                }
            }
        }
        Ok(())
    }

    /// One fsync for everything written since the last one, then the core learns
    /// the highest persistence id it covers (ids are cumulative).
    fn sync_batch(&mut self) -> Result<(), String> {
        while let Some(id) = self.written_unsynced.take() {
            let started = Instant::now();
            self.log
                .sync()
                .map_err(|error| format!("log sync failed: {error}"))?;
            self.shared.metrics.observe_fsync(started.elapsed());
            self.raft.handle_persisted(id);
            self.drain()?;
        }
        Ok(())
    }

    fn apply(&mut self, entry: Entry) {
        let result = match &entry.payload {
            EntryPayload::Empty => None,
            EntryPayload::Command(bytes) => Some(
                self.shared
                    .state
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .apply(entry.index.get(), bytes),
            ),
            EntryPayload::Membership(membership) => {
                self.applied_membership = membership.clone();
                None
            }
        };
        if let Some((term, reply)) = self.pending_writes.remove(&entry.index) {
            let answer = match result {
                Some(applied) if term == entry.term => Ok(applied),
                _ => Err(ProposeFailure::Lost),
            };
            let _ = reply.send(answer);
        }
        // Slots below this one can no longer be answered (a new leader's log).
        while let Some(entry_pending) = self.pending_writes.first_entry() {
            if *entry_pending.key() > entry.index {
                break;
            }
            let (_, reply) = entry_pending.remove();
            let _ = reply.send(Err(ProposeFailure::Lost));
        }
        self.applied = (entry.index, entry.term);
        self.shared.metrics.commits.fetch_add(1, Ordering::Relaxed);
        self.shared
            .metrics
            .applied_index
            .store(entry.index.get(), Ordering::Relaxed);
        self.shared.applied.send_replace(entry.index.get());
    }

    fn install_snapshot(
        &mut self,
        id: PersistId,
        meta: SnapshotMeta,
        data: Bytes,
        keep_entries_after: bool,
    ) -> Result<(), String> {
        let state = NodeState::restore(&data)?;
        // The install syncs the snapshot and every record written before it, so it
        // also covers the persistence ids written earlier.
        self.log
            .install_snapshot(&meta, &data, keep_entries_after)
            .map_err(|error| format!("snapshot install failed: {error}"))?;
        *self
            .shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
        let later = self.pending_writes.split_off(&meta.last_index.next());
        for (_, (_, reply)) in std::mem::replace(&mut self.pending_writes, later) {
            let _ = reply.send(Err(ProposeFailure::Lost));
        }
        self.applied = (meta.last_index, meta.last_term);
        self.applied_membership = meta.membership.clone();
        self.snapshot_index = meta.last_index;
        self.written_unsynced = None;
        self.shared.applied.send_replace(meta.last_index.get());
        tracing::info!(node = self.shared.id, index = %meta.last_index, "installed snapshot");
        self.raft.handle_persisted(id);
        Ok(())
    }

    fn serve_ready_reads(&mut self) {
        let applied = self.applied.0;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready_reads = waiting;
        for (_, reply) in ready {
            let _ = reply.send(Ok(()));
        }
        // Readers that gave up (deadline) are forgotten.
        self.pending_reads.retain(|_, reply| !reply.is_closed());
    }

    /// Starts a background snapshot once `snapshot_threshold_entries` entries
    /// were applied since the last one, unless one is being written.
    fn maybe_snapshot(&mut self) {
        let due = self.snapshot_index.get() + self.snapshot_threshold_entries;
        if self.stopping
            || self.applied.0.get() < due.max(self.snapshot_retry_index.get())
            || self
                .snapshot_writer
                .as_ref()
                .is_some_and(SnapshotWriter::in_flight)
        {
            return;
        }
        let meta = SnapshotMeta {
            last_index: self.applied.0,
            last_term: self.applied.1,
            membership: self.applied_membership.clone(),
        };
        // Serialized here, on the thread that applies entries: the snapshot must
        // be a consistent cut at exactly `meta.last_index`.
        let started = Instant::now();
        let data = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .snapshot();
        let serialize_duration = started.elapsed();
        let job = SnapshotJob {
            meta,
            data,
            reservation: self.log.reserve_snapshot_file(),
        };
        tracing::debug!(
            node = self.shared.id,
            index = %job.meta.last_index,
            bytes = job.data.len(),
            serialize_ms = serialize_duration.as_secs_f64() * 1e3,
            "snapshot serialized; writing it in the background"
        );
        let submitted = match self.snapshot_writer() {
            Ok(writer) => writer
                .submit(job)
                .map_err(|job| (job.meta, "the snapshot writer thread is gone".to_owned())),
            Err(error) => Err((job.meta, error)),
        };
        if let Err((meta, error)) = submitted {
            self.snapshot_write_failed(&meta, &error);
            // Joins the dead thread; the next attempt starts a new one.
            self.snapshot_writer = None;
        }
    }

    /// The background writer, started on first use.
    fn snapshot_writer(&mut self) -> Result<&mut SnapshotWriter, String> {
        if self.snapshot_writer.is_none() {
            let directory = self.log.wal().storage().directory().to_path_buf();
            let writer = SnapshotWriter::spawn(directory, self.shared.id)
                .map_err(|error| format!("cannot start the snapshot writer: {error}"))?;
            self.snapshot_writer = Some(writer);
        }
        // Set just above when it was empty.
        Ok(self.snapshot_writer.as_mut().expect("writer started"))
    }

    /// Records a snapshot file the writer made durable, then compacts the core.
    /// A write that failed, or a snapshot the leader's newer one superseded while
    /// it was written, is dropped (its file removed); only a failure of the log
    /// itself stops the node.
    fn finish_snapshot(&mut self, outcome: SnapshotWriteOutcome) -> Result<(), String> {
        let SnapshotWriteOutcome {
            meta,
            data,
            written,
            write_duration,
        } = outcome;
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                self.snapshot_write_failed(&meta, &error);
                return Ok(());
            }
        };
        let started = Instant::now();
        // Appends the record referencing the file and syncs it (with every entry
        // written before it), then removes the superseded file and compacts.
        match self.log.complete_snapshot(&meta, written) {
            Ok(()) => {}
            Err(error) if !error.must_stop() => {
                tracing::info!(node = self.shared.id, index = %meta.last_index, %error, "local snapshot dropped");
                return Ok(());
            }
            Err(error) => return Err(format!("snapshot save failed: {error}")),
        }
        self.raft.compact(meta.last_index, data);
        self.snapshot_index = meta.last_index;
        tracing::debug!(
            node = self.shared.id,
            index = %meta.last_index,
            write_ms = write_duration.as_secs_f64() * 1e3,
            complete_ms = started.elapsed().as_secs_f64() * 1e3,
            "compacted log"
        );
        Ok(())
    }

    fn snapshot_write_failed(&mut self, meta: &SnapshotMeta, error: &str) {
        tracing::warn!(node = self.shared.id, index = %meta.last_index, %error, "snapshot write failed; retrying after the next threshold");
        self.snapshot_retry_index =
            LogIndex(self.applied.0.get() + self.snapshot_threshold_entries);
    }

    fn publish_status(&mut self) {
        let status = self.raft.status();
        if status.role == Role::Candidate && self.last_role != Role::Candidate {
            self.shared
                .metrics
                .elections
                .fetch_add(1, Ordering::Relaxed);
        }
        if status.role != self.last_role {
            tracing::info!(node = self.shared.id, role = ?status.role, term = %status.term, "role changed");
        }
        self.last_role = status.role;
        let match_indexes = status
            .membership
            .members()
            .filter_map(|member| {
                self.raft
                    .match_index_of(member)
                    .map(|index| (member.get(), index.get()))
            })
            .collect();
        *self
            .shared
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = StatusView {
            status: Some(status),
            match_indexes,
        };
    }
}
