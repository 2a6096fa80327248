//! A node's backup of one pid: the pair core's `BackupLog` plus the records
//! and checkpoints on disk. Each batch of records is appended to
//! `processes/<pid>.backup` and synced before the core may acknowledge it
//! (docs/pairs.md, rule 1); checkpoint chunks are written to
//! `<pid>.checkpoint.part` and synced likewise.
//!
//! Records file: a header frame holding the epoch the backup was assigned in,
//! then one frame per record, contiguous lsns; a frame is
//! `[length u32 LE][crc32c u32 LE][postcard body]`. A torn tail (a crash
//! mid-write) ends the file at the last whole frame: those records were never
//! acknowledged.
//!
//! The file is preallocated: it grows by [`PREALLOCATED_BYTES`] of zeros at a
//! time and records are written in place into them, so the fdatasync that
//! every append waits for has no file size to commit, only the data blocks
//! (measured on this project's test machine: 142–150 µs per sync in place
//! against 214 µs appending; docs/benchmark.md). Zeros read as an empty frame
//! whose checksum matches, which is never a record: the reader stops there.
//!
//! Checkpoints: a complete one is renamed to `<pid>.checkpoint-<after_lsn>`
//! (its encoding carries its own crc32c) and folded into the in-memory image a
//! promotion restores; the records it covers are then dropped from memory.
//! The records file keeps them, and a reopen skips them, until it has grown
//! past [`RECORDS_FILE_COMPACT_BYTES`]: a checkpoint then rewrites it with only
//! the records after it. Rewriting at every checkpoint cost the backup's node
//! a 1 MiB preallocated file and two more syncs per checkpoint — a dozen a
//! second under load (docs/benchmark.md, "2026-12-06 19:00–20:10"). A
//! checkpoint past the last record kept (a new pairing's first one) is always
//! rewritten, so that the records after it stay contiguous in the file.
//!
//! Checkpoints are incremental: the files since the newest *full* one form
//! the chain a restart folds again; older files are deleted when a full one
//! completes. The primary keeps the chain
//! valid: it ships an incremental checkpoint only after this backup completed
//! its predecessor, and a full one to every new backup.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use understudy_guest::{Checkpoint, CheckpointImage};
use understudy_pair::{BackupLog, Command, Epoch, Lsn, PairMessage, Pid, Record};
use understudy_types::limits::{GUEST_IO_BYTES_MAX, PAIR_CHECKPOINT_BYTES_MAX};

/// Largest frame body read back (a record's payload plus its framing).
const FRAME_BODY_BYTES_MAX: usize = GUEST_IO_BYTES_MAX + 4096;
/// Bytes of the records file's header frame (8 bytes of framing, the epoch).
const HEADER_BYTES: u64 = 16;
/// The records file grows by this many zero bytes at a time (see the module's
/// docs): one size change per this many bytes of records.
pub const PREALLOCATED_BYTES: u64 = 1024 * 1024;
/// A checkpoint rewrites the records file without the records it covers once
/// the file's valid frames reach this size (see the module's docs).
pub const RECORDS_FILE_COMPACT_BYTES: u64 = 8 * PREALLOCATED_BYTES;

/// The backup of one pid on this node.
#[derive(Debug)]
pub struct Backup {
    /// The pair core.
    pub log: BackupLog,
    /// The durable records after the image's lsn (from lsn 1 without one), in
    /// lsn order: what a promotion replays.
    pub records: Vec<Record>,
    /// The newest complete checkpoint, folded: what a promotion restores.
    pub image: Option<CheckpointImage>,
    /// The epoch the backup was assigned in.
    pub assigned_epoch: u64,
    /// When the primary was last heard from.
    pub last_heard: Instant,
    directory: PathBuf,
    pid: u64,
    path: PathBuf,
    /// The records file, written in place (never opened for appending: with
    /// `O_APPEND` Linux ignores the offset of a positioned write).
    file: File,
    /// Where the next record's frame goes: the end of the valid frames.
    write_offset: u64,
    /// The records file's length: valid frames, then zeros.
    allocated: u64,
    /// The checkpoint being received: its `after_lsn` and the bytes so far.
    incoming: Option<(Lsn, Vec<u8>)>,
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(body.len() + 8);
    framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    framed.extend_from_slice(body);
    framed
}

fn read_frame(reader: &mut impl Read) -> Option<Vec<u8>> {
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).ok()?;
    let length = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let checksum = u32::from_le_bytes(header[4..].try_into().ok()?);
    if length > FRAME_BODY_BYTES_MAX {
        return None;
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    (crc32c::crc32c(&body) == checksum).then_some(body)
}

/// `records` as frames of the records file.
fn record_frames(records: &[Record]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for record in records {
        // Plain data into a Vec: cannot fail.
        let body = postcard::to_allocvec(record).expect("postcard encodes plain data");
        bytes.extend(frame(&body));
    }
    bytes
}

/// The records file of `pid` under `directory`.
pub fn backup_path(directory: &Path, pid: u64) -> PathBuf {
    directory.join(format!("{pid}.backup"))
}

fn part_path(directory: &Path, pid: u64) -> PathBuf {
    directory.join(format!("{pid}.checkpoint.part"))
}

fn checkpoint_path(directory: &Path, pid: u64, after_lsn: Lsn) -> PathBuf {
    directory.join(format!("{pid}.checkpoint-{:020}", after_lsn.0))
}

/// The complete checkpoint files of `pid`, oldest first.
fn checkpoint_files(directory: &Path, pid: u64) -> Vec<(Lsn, PathBuf)> {
    let prefix = format!("{pid}.checkpoint-");
    let Ok(entries) = std::fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut files: Vec<(Lsn, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let lsn = name.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((Lsn(lsn), entry.path()))
        })
        .collect();
    files.sort();
    files
}

/// Removes every checkpoint file of `pid` (complete or not).
pub fn remove_checkpoints(directory: &Path, pid: u64) {
    for (_, path) in checkpoint_files(directory, pid) {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(part_path(directory, pid));
}

/// Folds the chain of checkpoint files into an image. A file that does not
/// decode or does not follow is removed with every later one (the primary
/// ships what the backup then lacks again).
fn fold_checkpoint_files(directory: &Path, pid: u64) -> Option<CheckpointImage> {
    let mut image: Option<CheckpointImage> = None;
    let files = checkpoint_files(directory, pid);
    for (index, (_, path)) in files.iter().enumerate() {
        let folded = std::fs::read(path)
            .map_err(|error| error.to_string())
            .and_then(|bytes| Checkpoint::decode(&bytes).map_err(|error| error.to_string()))
            .and_then(|checkpoint| fold(&mut image, &checkpoint));
        match folded {
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(pid, %error, path = %path.display(), "dropping checkpoints from here");
                for (_, later) in &files[index..] {
                    let _ = std::fs::remove_file(later);
                }
                return None;
            }
        }
    }
    image
}

/// [`CheckpointImage::fold`] with the error as text.
fn fold(image: &mut Option<CheckpointImage>, checkpoint: &Checkpoint) -> Result<(), String> {
    CheckpointImage::fold(image, checkpoint).map_err(|error| error.to_string())
}

/// The contiguous records of a records file written for `epoch`, and the
/// length of their valid prefix; `None` if the file belongs to another
/// assignment (or is missing).
fn read_records(path: &Path, epoch: u64) -> Option<(Vec<Record>, u64)> {
    let mut reader = BufReader::new(File::open(path).ok()?);
    if read_frame(&mut reader).as_deref() != Some(&epoch.to_le_bytes()[..]) {
        return None;
    }
    let mut records: Vec<Record> = Vec::new();
    let mut valid_bytes = HEADER_BYTES;
    while let Some(body) = read_frame(&mut reader) {
        if body.is_empty() {
            break; // the preallocated zeros after the last record
        }
        let Ok(record) = postcard::from_bytes::<Record>(&body) else {
            break;
        };
        let contiguous = records
            .last()
            .is_none_or(|last| last.lsn.next() == record.lsn);
        if !contiguous {
            break;
        }
        valid_bytes += body.len() as u64 + 8;
        records.push(record);
    }
    Some((records, valid_bytes))
}

impl Backup {
    /// Opens the backup of `pid` assigned in `epoch`: reuses the files if they
    /// were written for the same assignment (a restart of this node), else
    /// starts empty (a new pairing ships a checkpoint and the log after it).
    pub fn open(directory: &Path, pid: u64, epoch: u64) -> std::io::Result<Backup> {
        std::fs::create_dir_all(directory)?;
        let path = backup_path(directory, pid);
        let _ = std::fs::remove_file(part_path(directory, pid));
        let reused = read_records(&path, epoch).and_then(|(records, valid_bytes)| {
            let image = fold_checkpoint_files(directory, pid);
            let image_lsn = image.as_ref().map_or(Lsn(0), |image| image.lsn());
            let records: Vec<Record> = records
                .into_iter()
                .filter(|record| record.lsn > image_lsn)
                .collect();
            // The records must continue the image (or lsn 1) without a gap.
            let continues = records
                .first()
                .is_none_or(|first| first.lsn == image_lsn.next());
            continues.then_some((records, valid_bytes, image))
        });
        let (records, image, file, valid_bytes) = match reused {
            Some((records, valid_bytes, image)) => {
                let file = OpenOptions::new().write(true).open(&path)?;
                // Cut a torn tail (and the zeros after it) so the next record
                // follows the last whole one.
                file.set_len(valid_bytes)?;
                file.sync_all()?;
                (records, image, file, valid_bytes)
            }
            None => {
                remove_checkpoints(directory, pid);
                let mut file = File::create(&path)?;
                file.write_all(&frame(&epoch.to_le_bytes()))?;
                file.sync_all()?;
                sync_directory(directory)?;
                (Vec::new(), None, file, HEADER_BYTES)
            }
        };
        let checkpoint_lsn = image.as_ref().map_or(Lsn(0), |image| image.lsn());
        let durable = records.last().map_or(checkpoint_lsn, |record| record.lsn);
        let mut backup = Backup {
            log: BackupLog::with_checkpoint(Pid(pid), Epoch(epoch), checkpoint_lsn, durable),
            records,
            image,
            assigned_epoch: epoch,
            last_heard: Instant::now(),
            directory: directory.to_path_buf(),
            pid,
            path,
            file,
            write_offset: valid_bytes,
            allocated: valid_bytes,
            incoming: None,
        };
        // No record kept past the image: the file may end before the image
        // (a crash between such a checkpoint and its rewrite), and the next
        // record would not follow in the file. Rewrite it, as a checkpoint does.
        if backup.records.is_empty() && backup.image.is_some() {
            backup.rewrite_records()?;
        }
        Ok(backup)
    }

    /// Handles a message from the primary: persists what the core asks to
    /// (write + fdatasync), and returns the answers to send back.
    pub fn handle(&mut self, message: PairMessage) -> std::io::Result<Vec<PairMessage>> {
        if message_epoch(&message).is_none_or(|epoch| epoch >= self.log.epoch()) {
            self.last_heard = Instant::now();
        }
        self.log.handle(message);
        let mut answers = Vec::new();
        // Persisting produces acknowledgements: loop until the core is quiet.
        loop {
            let commands = self.log.take_commands();
            if commands.is_empty() {
                return Ok(answers);
            }
            for command in commands {
                match command {
                    Command::Send(answer) => answers.push(answer),
                    Command::Persist(records) => self.persist(records)?,
                    Command::PersistCheckpoint {
                        after_lsn,
                        offset,
                        total_bytes,
                        data,
                    } => self.persist_checkpoint(after_lsn, offset, total_bytes, &data)?,
                    Command::Release(_) | Command::Stop { .. } => {}
                }
            }
        }
    }

    fn persist(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        let Some(last) = records.last().map(|record| record.lsn) else {
            return Ok(());
        };
        let frames = record_frames(&records);
        let end = self.write_offset + frames.len() as u64;
        if end > self.allocated {
            // The zeros and the size change are synced with the records.
            let allocated = end.next_multiple_of(PREALLOCATED_BYTES);
            let zeros = vec![0u8; (allocated - self.allocated) as usize];
            self.file.write_all_at(&zeros, self.allocated)?;
            self.allocated = allocated;
        }
        self.file.write_all_at(&frames, self.write_offset)?;
        self.file.sync_data()?;
        self.write_offset = end;
        self.records.extend(records);
        self.log.handle_persisted(last);
        Ok(())
    }

    /// Writes one chunk of the checkpoint after `after_lsn` and syncs it; the
    /// last chunk completes it (see the module's docs).
    fn persist_checkpoint(
        &mut self,
        after_lsn: Lsn,
        offset: u64,
        total_bytes: u64,
        data: &[u8],
    ) -> std::io::Result<()> {
        let invalid = |detail: String| std::io::Error::new(std::io::ErrorKind::InvalidData, detail);
        if total_bytes > PAIR_CHECKPOINT_BYTES_MAX {
            return Err(invalid(format!("a checkpoint of {total_bytes} bytes")));
        }
        let part = part_path(&self.directory, self.pid);
        let continuing = matches!(&self.incoming, Some((lsn, bytes))
            if *lsn == after_lsn && offset > 0 && offset <= bytes.len() as u64);
        if !continuing {
            if offset != 0 {
                return Err(invalid(format!(
                    "checkpoint after lsn {} continues at {offset} with nothing before it",
                    after_lsn.0
                )));
            }
            File::create(&part)?;
            self.incoming = Some((after_lsn, Vec::with_capacity(total_bytes as usize)));
        }
        let Some((_, bytes)) = &mut self.incoming else {
            return Ok(()); // set just above
        };
        bytes.truncate(offset as usize);
        bytes.extend_from_slice(data);
        let mut file = OpenOptions::new().write(true).open(&part)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(data)?;
        file.sync_data()?;
        let end = offset + data.len() as u64;
        if end == total_bytes {
            let complete = self
                .incoming
                .take()
                .map(|(_, bytes)| bytes)
                .unwrap_or_default();
            if let Err(error) = self.complete_checkpoint(after_lsn, &complete) {
                // Not acknowledged: the primary sends it again, and the error
                // says loudly what is wrong.
                tracing::error!(pid = self.pid, after_lsn = after_lsn.0, %error, "a checkpoint cannot be kept");
                return Ok(());
            }
        }
        self.log.handle_checkpoint_persisted(after_lsn, end);
        Ok(())
    }

    /// A whole checkpoint is in the part file: fold it, keep it under its
    /// name, drop what it covers.
    fn complete_checkpoint(&mut self, after_lsn: Lsn, bytes: &[u8]) -> Result<(), String> {
        let checkpoint = Checkpoint::decode(bytes).map_err(|error| error.to_string())?;
        if checkpoint.lsn != after_lsn {
            return Err(format!(
                "the checkpoint shipped after lsn {} says lsn {}",
                after_lsn.0, checkpoint.lsn.0
            ));
        }
        // A refused checkpoint changes nothing. Once folded, memory holds the
        // new image and the records after it; the disk holds the old chain and
        // every record until the renames below finish (each consistent).
        fold(&mut self.image, &checkpoint)?;
        // The last record kept in memory is the file's last one (with none
        // kept, the file may end anywhere before): past it, the next records
        // would not follow it in the file.
        let past_the_file = self
            .records
            .last()
            .is_none_or(|record| record.lsn < after_lsn);
        self.records.retain(|record| record.lsn > after_lsn);
        let io = |error: std::io::Error| error.to_string();
        let named = checkpoint_path(&self.directory, self.pid, after_lsn);
        std::fs::rename(part_path(&self.directory, self.pid), &named).map_err(io)?;
        sync_directory(&self.directory).map_err(io)?;
        if checkpoint.full {
            for (lsn, path) in checkpoint_files(&self.directory, self.pid) {
                if lsn < after_lsn {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        if past_the_file || self.write_offset >= RECORDS_FILE_COMPACT_BYTES {
            self.rewrite_records().map_err(io)?;
        }
        Ok(())
    }

    /// Writes the records file anew with the records kept (after the newest
    /// checkpoint), atomically, preallocated like the file it replaces.
    fn rewrite_records(&mut self) -> std::io::Result<()> {
        let temporary = self.path.with_extension("backup.tmp");
        let mut bytes = frame(&self.assigned_epoch.to_le_bytes());
        bytes.extend(record_frames(&self.records));
        let write_offset = bytes.len() as u64;
        let allocated = write_offset.next_multiple_of(PREALLOCATED_BYTES);
        bytes.resize(allocated as usize, 0);
        let mut file = File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        sync_directory(&self.directory)?;
        self.file = file;
        self.write_offset = write_offset;
        self.allocated = allocated;
        Ok(())
    }
}

/// Removes the files of the backup of `pid` (the pid was deleted, or this
/// node is no longer its backup). A handle still open elsewhere (a message
/// being handled) keeps writing to an unlinked file, which is then lost.
pub fn remove_files(directory: &Path, pid: u64) {
    let _ = std::fs::remove_file(backup_path(directory, pid));
    remove_checkpoints(directory, pid);
}

/// The sender's epoch of the messages a primary sends.
pub fn message_epoch(message: &PairMessage) -> Option<Epoch> {
    match message {
        PairMessage::Append { epoch, .. } | PairMessage::Heartbeat { epoch, .. } => Some(*epoch),
        _ => None,
    }
}

fn sync_directory(directory: &Path) -> std::io::Result<()> {
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use understudy_pair::RecordKind;

    fn append(epoch: u64, lsns: std::ops::RangeInclusive<u64>) -> PairMessage {
        let records = lsns
            .map(|lsn| Record {
                lsn: Lsn(lsn),
                epoch: Epoch(epoch),
                kind: RecordKind::Random,
                payload: Bytes::from(vec![lsn as u8]),
                fuel_consumed: lsn,
            })
            .collect();
        PairMessage::Append {
            pid: Pid(7),
            epoch: Epoch(epoch),
            records,
        }
    }

    /// A record of lsn `lsn` with a 4000-byte payload.
    fn big_record(lsn: u64) -> Record {
        Record {
            lsn: Lsn(lsn),
            epoch: Epoch(1),
            kind: RecordKind::StdinArrived,
            payload: Bytes::from(vec![b'x'; 4000]),
            fuel_consumed: 0,
        }
    }

    /// reactor-total's checkpoints, taken after each handler call: the
    /// first full, the others incremental.
    fn reactor_checkpoints(inputs: &[&[u8]]) -> Vec<Checkpoint> {
        use understudy_guest::{Birth, GuestConfig, GuestEngine, GuestInstance, Recorder};
        let engine = GuestEngine::new(GuestConfig::default()).expect("engine");
        let wasm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../guests/reactor-total.wasm"
        ))
        .expect("the committed reactor guest");
        let module = engine.load(&wasm).expect("module");
        let recorder = Recorder::new(understudy_guest::SystemInputs::new(), Epoch(1));
        let mut guest =
            GuestInstance::new(&engine, &module, &Birth::default(), recorder).expect("guest");
        inputs
            .iter()
            .map(|input| {
                guest.call_handler(input).expect("handler call");
                guest.take_outputs();
                guest
                    .checkpoint(Bytes::from_static(b"shell state"))
                    .expect("checkpoint between calls")
            })
            .collect()
    }

    /// Ships `checkpoint` in two chunks; returns the answers to the last.
    fn ship(backup: &mut Backup, checkpoint: &Checkpoint) -> Vec<PairMessage> {
        let data = checkpoint.encode();
        let half = data.len() / 2;
        let mut answers = Vec::new();
        for (offset, chunk) in [(0, data.slice(..half)), (half, data.slice(half..))] {
            let message = PairMessage::Checkpoint {
                pid: Pid(7),
                epoch: Epoch(1),
                after_lsn: checkpoint.lsn,
                offset: offset as u64,
                total_bytes: data.len() as u64,
                data: chunk,
            };
            answers = backup.handle(message).expect("persist a chunk");
        }
        answers
    }

    fn lsns(records: &[Record]) -> Vec<u64> {
        records.iter().map(|record| record.lsn.0).collect()
    }

    #[test]
    fn a_complete_checkpoint_is_folded_kept_and_truncates_the_records() {
        let checkpoints = reactor_checkpoints(&[b"5\n", b"7\n", b"9\n"]);
        let (first, second) = (&checkpoints[0], &checkpoints[1]);
        assert!(first.full && !second.full);
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup
            .handle(append(1, 1..=second.lsn.0 + 1))
            .expect("records");
        let answers = ship(&mut backup, first);
        assert!(
            answers.iter().any(|answer| matches!(answer,
                PairMessage::CheckpointAck { after_lsn, durable_bytes, .. }
                    if *after_lsn == first.lsn && *durable_bytes == first.encode().len() as u64)),
            "the whole checkpoint is acknowledged: {answers:?}"
        );
        assert_eq!(backup.log.checkpoint_lsn(), first.lsn);
        assert_eq!(
            lsns(&backup.records)[0],
            first.lsn.0 + 1,
            "covered records dropped"
        );
        ship(&mut backup, second);
        let image = backup.image.clone().expect("an image");
        assert_eq!((image.number(), image.lsn()), (2, second.lsn));
        assert_eq!(image.extra(), &Bytes::from_static(b"shell state"));
        assert_eq!(lsns(&backup.records), vec![second.lsn.0 + 1]);
        assert_eq!(checkpoint_files(directory.path(), 7).len(), 2, "the chain");
        drop(backup);

        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        assert_eq!(reopened.image, Some(image), "the chain folds again");
        assert_eq!(lsns(&reopened.records), vec![second.lsn.0 + 1]);
        assert_eq!(reopened.log.checkpoint_lsn(), second.lsn);
        assert_eq!(reopened.log.durable(), Lsn(second.lsn.0 + 1));
    }

    #[test]
    fn covered_records_stay_in_the_file_and_a_reopen_skips_them() {
        let checkpoints = reactor_checkpoints(&[b"5\n", b"7\n"]);
        let first = &checkpoints[0];
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup
            .handle(append(1, 1..=first.lsn.0 + 2))
            .expect("records");
        let written = backup.write_offset;
        ship(&mut backup, first);
        assert_eq!(backup.write_offset, written, "the file is not rewritten");
        assert_eq!(
            lsns(&backup.records),
            vec![first.lsn.0 + 1, first.lsn.0 + 2]
        );
        backup
            .handle(append(1, first.lsn.0 + 3..=first.lsn.0 + 3))
            .expect("more");
        drop(backup);

        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        let after: Vec<u64> = (first.lsn.0 + 1..=first.lsn.0 + 3).collect();
        assert_eq!(lsns(&reopened.records), after, "covered records skipped");
        assert_eq!(reopened.log.checkpoint_lsn(), first.lsn);
    }

    #[test]
    fn a_checkpoint_rewrites_the_records_file_once_it_is_large() {
        let checkpoints = reactor_checkpoints(&[b"5\n", b"7\n"]);
        let (first, second) = (&checkpoints[0], &checkpoints[1]);
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup.handle(append(1, 1..=first.lsn.0)).expect("records");
        ship(&mut backup, first);
        // Records of about 4 KiB until the file passes the compaction size.
        let count = RECORDS_FILE_COMPACT_BYTES / 4000 + 1;
        let last = second.lsn.0 + count;
        let records = (first.lsn.0 + 1..=last).map(big_record).collect();
        let message = PairMessage::Append {
            pid: Pid(7),
            epoch: Epoch(1),
            records,
        };
        backup.handle(message).expect("big records");
        assert!(backup.write_offset >= RECORDS_FILE_COMPACT_BYTES);
        ship(&mut backup, second);
        let kept = (last - second.lsn.0) * (4000 + 8 + 16);
        assert!(
            backup.write_offset < HEADER_BYTES + kept + 4096,
            "rewritten with the records after the checkpoint only: {} bytes",
            backup.write_offset
        );
        drop(backup);
        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        let after: Vec<u64> = (second.lsn.0 + 1..=last).collect();
        assert_eq!(lsns(&reopened.records), after);
    }

    #[test]
    fn a_checkpoint_past_the_files_last_record_keeps_the_next_records_readable() {
        let checkpoints = reactor_checkpoints(&[b"5\n", b"7\n"]);
        let first = &checkpoints[0];
        assert!(
            first.lsn.0 > 1,
            "the checkpoint follows more than one record"
        );
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup.handle(append(1, 1..=1)).expect("record 1");
        ship(&mut backup, first);
        records_after_survive_a_reopen(backup, directory.path(), first.lsn);
    }

    /// Appends the two records after `lsn` to `backup`, then checks that a
    /// reopen reads them back.
    fn records_after_survive_a_reopen(mut backup: Backup, directory: &Path, lsn: Lsn) {
        let next = lsn.0 + 1..=lsn.0 + 2;
        backup
            .handle(append(1, next.clone()))
            .expect("records after");
        drop(backup);
        let reopened = Backup::open(directory, 7, 1).expect("reopen");
        assert_eq!(lsns(&reopened.records), next.collect::<Vec<_>>());
    }

    #[test]
    fn a_crash_before_the_rewrite_after_a_checkpoint_past_the_file_is_repaired_at_open() {
        let checkpoints = reactor_checkpoints(&[b"5\n"]);
        let first = &checkpoints[0];
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup.handle(append(1, 1..=1)).expect("record 1");
        drop(backup);
        // The checkpoint was kept under its name; the rewrite never ran.
        let named = checkpoint_path(directory.path(), 7, first.lsn);
        std::fs::write(named, first.encode()).expect("checkpoint file");
        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        records_after_survive_a_reopen(reopened, directory.path(), first.lsn);
    }

    #[test]
    fn a_full_checkpoint_ends_the_chain_and_a_torn_part_is_dropped() {
        let checkpoints = reactor_checkpoints(&[b"1\n", b"2\n"]);
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup
            .handle(append(1, 1..=checkpoints[1].lsn.0))
            .expect("records");
        ship(&mut backup, &checkpoints[0]);
        // A new lineage's full checkpoint (what a re-paired primary sends).
        let mut full = reactor_checkpoints(&[b"1\n", b"2\n"]).remove(0);
        full.lsn = checkpoints[1].lsn;
        full.number = 9;
        ship(&mut backup, &full);
        let files = checkpoint_files(directory.path(), 7);
        assert_eq!(files.len(), 1, "older files deleted: {files:?}");
        assert_eq!(backup.image.as_ref().map(|image| image.number()), Some(9));
        std::fs::write(part_path(directory.path(), 7), b"torn").expect("a torn part");
        drop(backup);
        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        assert!(!part_path(directory.path(), 7).exists());
        assert_eq!(reopened.image.as_ref().map(|image| image.number()), Some(9));
    }

    #[test]
    fn an_incremental_checkpoint_without_its_predecessor_is_not_acknowledged() {
        let checkpoints = reactor_checkpoints(&[b"1\n", b"2\n"]);
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup
            .handle(append(1, 1..=checkpoints[1].lsn.0))
            .expect("records");
        let answers = ship(&mut backup, &checkpoints[1]);
        assert!(
            !answers.iter().any(|answer| matches!(answer,
                PairMessage::CheckpointAck { durable_bytes, .. }
                    if *durable_bytes == checkpoints[1].encode().len() as u64)),
            "never acknowledged whole: {answers:?}"
        );
        assert_eq!(backup.log.checkpoint_lsn(), Lsn(0));
        assert!(backup.image.is_none());
        assert_eq!(
            backup.records.len() as u64,
            checkpoints[1].lsn.0,
            "records kept"
        );
    }

    #[test]
    fn a_refused_checkpoint_keeps_the_image_and_the_records_after_it() {
        let checkpoints = reactor_checkpoints(&[b"1\n", b"2\n", b"3\n"]);
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup
            .handle(append(1, 1..=checkpoints[2].lsn.0))
            .expect("records");
        ship(&mut backup, &checkpoints[0]);
        let kept_lsn = checkpoints[0].lsn;
        // The third skips the second: it does not follow the image.
        ship(&mut backup, &checkpoints[2]);
        let image = backup.image.as_ref().expect("the first image is kept");
        assert_eq!(image.lsn(), kept_lsn);
        assert_eq!(
            lsns(&backup.records),
            (kept_lsn.0 + 1..=checkpoints[2].lsn.0).collect::<Vec<_>>(),
            "the records after the kept image"
        );
    }

    #[test]
    fn records_are_acknowledged_after_the_sync_and_survive_a_reopen() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        let answers = backup.handle(append(1, 1..=3)).expect("handle");
        assert_eq!(
            answers,
            vec![PairMessage::Ack {
                pid: Pid(7),
                epoch: Epoch(1),
                durable: Lsn(3)
            }]
        );
        drop(backup);
        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        assert_eq!(reopened.records.len(), 3);
        assert_eq!(reopened.log.durable(), Lsn(3));
        let other_assignment = Backup::open(directory.path(), 7, 2).expect("reassigned");
        assert!(
            other_assignment.records.is_empty(),
            "a new pairing starts empty"
        );
    }

    #[test]
    fn a_torn_tail_is_cut() {
        let directory = tempfile::tempdir().expect("tempdir");
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup.handle(append(1, 1..=2)).expect("handle");
        let valid_end = backup.write_offset;
        drop(backup);
        let path = backup_path(directory.path(), 7);
        let file = OpenOptions::new().write(true).open(&path).expect("open");
        // A frame header promising 9 bytes, and only 2 of them, in the zeros.
        file.write_all_at(&[9, 0, 0, 0, 1, 2, 3, 4, 5, 6], valid_end)
            .expect("torn write");
        drop(file);
        let mut reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        assert_eq!(reopened.records.len(), 2);
        reopened
            .handle(append(1, 3..=3))
            .expect("append after the cut");
        drop(reopened);
        assert_eq!(
            Backup::open(directory.path(), 7, 1)
                .expect("again")
                .records
                .len(),
            3
        );
    }

    #[test]
    fn records_are_written_in_place_into_preallocated_zeros_and_the_file_grows_by_chunks() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = backup_path(directory.path(), 7);
        let mut backup = Backup::open(directory.path(), 7, 1).expect("open");
        backup.handle(append(1, 1..=3)).expect("handle");
        let length = || std::fs::metadata(&path).expect("metadata").len();
        assert_eq!(length(), PREALLOCATED_BYTES, "one chunk of zeros");
        // Records of about 4 KiB each: 300 of them need a second chunk.
        let records = (4..=303).map(big_record).collect();
        let answers = backup
            .handle(PairMessage::Append {
                pid: Pid(7),
                epoch: Epoch(1),
                records,
            })
            .expect("handle");
        assert_eq!(
            answers,
            vec![PairMessage::Ack {
                pid: Pid(7),
                epoch: Epoch(1),
                durable: Lsn(303)
            }]
        );
        assert_eq!(length(), 2 * PREALLOCATED_BYTES, "grown by one chunk");
        drop(backup);
        let reopened = Backup::open(directory.path(), 7, 1).expect("reopen");
        assert_eq!(lsns(&reopened.records), (1..=303).collect::<Vec<_>>());
        assert_eq!(reopened.log.durable(), Lsn(303));
    }
}
