//! A node's backup of one pid: the pair core's `BackupLog` plus the records on
//! disk. Each batch of records is appended to `processes/<pid>.backup` and
//! synced before the core may acknowledge it (docs/pairs.md, rule 1).
//!
//! File format: a header frame holding the epoch the backup was assigned in,
//! then one frame per record; a frame is `[length u32 LE][crc32c u32 LE]
//! [postcard body]`. A torn tail (a crash mid-write) ends the file at the last
//! whole frame: those records were never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use understudy_pair::{BackupLog, Command, Epoch, Lsn, PairMessage, Pid, Record};
use understudy_types::limits::GUEST_IO_BYTES_MAX;

/// Largest frame body read back (a record's payload plus its framing).
const FRAME_BODY_BYTES_MAX: usize = GUEST_IO_BYTES_MAX + 4096;

/// The backup of one pid on this node.
#[derive(Debug)]
pub struct Backup {
    /// The pair core.
    pub log: BackupLog,
    /// Every durable record, in lsn order (what a promotion replays).
    pub records: Vec<Record>,
    /// The epoch the backup was assigned in.
    pub assigned_epoch: u64,
    /// When the primary was last heard from.
    pub last_heard: Instant,
    path: PathBuf,
    file: File,
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

/// The backup file of `pid` under `directory`.
pub fn backup_path(directory: &Path, pid: u64) -> PathBuf {
    directory.join(format!("{pid}.backup"))
}

impl Backup {
    /// Opens the backup of `pid` assigned in `epoch`: reuses the file if it was
    /// written for the same assignment (a restart of this node), else starts
    /// an empty one (a new pairing ships the log from its start).
    pub fn open(directory: &Path, pid: u64, epoch: u64) -> std::io::Result<Backup> {
        std::fs::create_dir_all(directory)?;
        let path = backup_path(directory, pid);
        let mut records = Vec::new();
        let mut valid_bytes = 0u64;
        let reused = match File::open(&path) {
            Ok(file) => {
                let mut reader = BufReader::new(file);
                let header = read_frame(&mut reader);
                let same = header.as_deref() == Some(&epoch.to_le_bytes()[..]);
                if same {
                    valid_bytes = 16;
                    while let Some(body) = read_frame(&mut reader) {
                        let Ok(record) = postcard::from_bytes::<Record>(&body) else {
                            break;
                        };
                        let contiguous = record.lsn.0 == records.len() as u64 + 1;
                        if !contiguous {
                            break;
                        }
                        valid_bytes += body.len() as u64 + 8;
                        records.push(record);
                    }
                }
                same
            }
            Err(_) => false,
        };
        let file = if reused {
            let file = OpenOptions::new().write(true).open(&path)?;
            // Cut a torn tail so appends follow the last whole record.
            file.set_len(valid_bytes)?;
            file.sync_all()?;
            OpenOptions::new().append(true).open(&path)?
        } else {
            records.clear();
            let mut file = File::create(&path)?;
            file.write_all(&frame(&epoch.to_le_bytes()))?;
            file.sync_all()?;
            sync_directory(directory)?;
            file
        };
        let durable = records.last().map_or(Lsn(0), |record| record.lsn);
        Ok(Backup {
            log: BackupLog::new(Pid(pid), Epoch(epoch), durable),
            records,
            assigned_epoch: epoch,
            last_heard: Instant::now(),
            path,
            file,
        })
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
                    // Checkpoints are not shipped by this shell yet.
                    _ => {}
                }
            }
        }
    }

    fn persist(&mut self, records: Vec<Record>) -> std::io::Result<()> {
        let Some(last) = records.last().map(|record| record.lsn) else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        for record in &records {
            // Plain data into a Vec: cannot fail.
            let body = postcard::to_allocvec(record).expect("postcard encodes plain data");
            bytes.extend(frame(&body));
        }
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.records.extend(records);
        self.log.handle_persisted(last);
        Ok(())
    }

    /// Removes the file (the pid was deleted, or this node is no longer its
    /// backup).
    pub fn remove(self) {
        drop(self.file);
        let _ = std::fs::remove_file(&self.path);
    }
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
        drop(backup);
        let path = backup_path(directory.path(), 7);
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(&[9, 0, 0, 0, 1, 2]).expect("torn write");
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
}
