//! [`SimDisk`]: an in-memory disk for the deterministic simulator.
//!
//! It keeps what was *written* apart from what is *durable*:
//! - per file, the current bytes and the durable bytes, and for every sector
//!   (`SECTOR_BYTES`) the range of bytes written since the last `sync_file`;
//! - the current directory (name → inode) and the durable directory, plus the
//!   directory operations (create, rename, remove) since the last
//!   `sync_directory`.
//!
//! [`SimDisk::crash`] turns the current state into what a machine would find after
//! power loss (see `crash.rs`): each unsynced sector is independently kept or lost,
//! a kept one may be torn or get a flipped bit, each unsynced directory operation
//! is independently kept or lost. Synced data is never altered by a crash.
//!
//! The disk is a cheap handle (`Rc<RefCell<...>>`; the simulator is
//! single-threaded): the simulator keeps a clone, drops the WAL at a crash, calls
//! `crash` and opens a new WAL on the same disk. Every map is a `BTreeMap` and every
//! random choice comes from the caller's RNG, so a seed replays exactly.

mod crash;

pub use crash::{CrashFaults, CrashReport};

use crate::storage::{check_file_name, Storage};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

/// The unit in which the simulated disk loses, tears and keeps unsynced data.
pub const SECTOR_BYTES: u64 = 512;

/// An operation that [`SimDisk::fail_next`] can make fail once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultOperation {
    /// `create`.
    Create,
    /// `read_at` and `read_all`.
    Read,
    /// `write_at`.
    Write,
    /// `sync_file`. The data stays written but not durable, as after a real
    /// failed `fdatasync` whose dirty pages may or may not have reached the disk.
    SyncFile,
    /// `truncate`.
    Truncate,
    /// `rename`.
    Rename,
    /// `remove`.
    Remove,
    /// `sync_directory`.
    SyncDirectory,
}

/// Counters the simulator reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskStatistics {
    /// Crashes so far.
    pub crash_count: u64,
    /// What the latest crash did.
    pub last_crash: CrashReport,
    /// Successful `sync_file` calls.
    pub file_sync_count: u64,
    /// Successful `sync_directory` calls.
    pub directory_sync_count: u64,
    /// Bytes passed to successful `write_at` calls.
    pub bytes_written: u64,
    /// Errors injected with [`SimDisk::fail_next`] that have fired.
    pub injected_error_count: u64,
}

/// An in-memory simulated disk; see the module documentation.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Rc<RefCell<DiskState>>,
}

/// One file's content, apart from its name.
#[derive(Clone, Debug, Default)]
struct Inode {
    /// What a read returns now.
    data: Vec<u8>,
    /// What survives a crash for certain.
    durable: Vec<u8>,
    /// Per sector index, the byte range `[start, end)` (absolute offsets) written
    /// since the last sync. Ranges are merged, so they may cover unchanged bytes.
    dirty_sectors: BTreeMap<u64, (u64, u64)>,
    /// The smallest length the file was truncated to since the last sync.
    truncated_to: Option<u64>,
}

/// A directory change not yet made durable by `sync_directory`.
#[derive(Clone, Debug)]
enum DirectoryOperation {
    Create {
        name: String,
        inode: u64,
    },
    Rename {
        from: String,
        to: String,
        inode: u64,
    },
    Remove {
        name: String,
        inode: u64,
    },
}

#[derive(Debug, Default)]
struct DiskState {
    inodes: BTreeMap<u64, Inode>,
    directory: BTreeMap<String, u64>,
    durable_directory: BTreeMap<String, u64>,
    pending_directory_operations: Vec<DirectoryOperation>,
    next_inode: u64,
    pending_faults: Vec<FaultOperation>,
    /// Operations left before a simulated power cut; see `SimDisk::cut_power_after`.
    operations_before_power_cut: Option<u64>,
    statistics: DiskStatistics,
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

fn to_index(value: u64) -> io::Result<usize> {
    usize::try_from(value)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds memory"))
}

impl Inode {
    /// Records that bytes `[start, end)` changed since the last sync.
    fn mark_dirty(&mut self, start: u64, end: u64) {
        let mut sector_start = start - start % SECTOR_BYTES;
        while sector_start < end {
            let sector_end = sector_start + SECTOR_BYTES;
            let range_start = start.max(sector_start);
            let range_end = end.min(sector_end);
            self.dirty_sectors
                .entry(sector_start / SECTOR_BYTES)
                .and_modify(|range| *range = (range.0.min(range_start), range.1.max(range_end)))
                .or_insert((range_start, range_end));
            sector_start = sector_end;
        }
    }

    fn sync(&mut self) {
        if let Some(length) = self.truncated_to.take() {
            self.durable.truncate(length as usize);
        }
        self.durable.resize(self.data.len(), 0);
        for &(start, end) in self.dirty_sectors.values() {
            let (start, end) = (start as usize, (end as usize).min(self.data.len()));
            if start < end {
                self.durable[start..end].copy_from_slice(&self.data[start..end]);
            }
        }
        self.dirty_sectors.clear();
        debug_assert_eq!(self.durable, self.data, "a synced file equals its data");
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Makes the next call of `operation` fail with an I/O error (once). Several
    /// calls queue several failures.
    pub fn fail_next(&self, operation: FaultOperation) {
        self.state.borrow_mut().pending_faults.push(operation);
    }

    /// Simulates a power cut in the middle of whatever runs next: after
    /// `operation_count` more operations (of any kind) succeed, every operation
    /// fails until [`SimDisk::crash`]. A crash test uses it to stop the WAL between
    /// any two of its storage calls (between a write and its fsync, say), then
    /// crashes the disk.
    pub fn cut_power_after(&self, operation_count: u64) {
        self.state.borrow_mut().operations_before_power_cut = Some(operation_count);
    }

    /// Counters for reports.
    pub fn statistics(&self) -> DiskStatistics {
        self.state.borrow().statistics.clone()
    }

    /// Simulates power loss: each unsynced sector and directory operation is kept
    /// or lost as `faults` says, drawing from `rng`; synced data is never altered.
    /// The module documentation of `sim_disk/crash.rs` states the exact rules.
    pub fn crash(&self, rng: &mut impl rand::RngCore, faults: &CrashFaults) -> CrashReport {
        let mut state = self.state.borrow_mut();
        let report = crash::crash_state(&mut state, rng, faults);
        state.operations_before_power_cut = None;
        state.statistics.crash_count += 1;
        state.statistics.last_crash = report.clone();
        report
    }

    /// Media corruption: flips bit `bit` (0..8) of the byte at `offset` in both the
    /// current and the durable content, as a decaying disk would. For tests that
    /// check corruption is detected.
    pub fn flip_durable_bit(&self, name: &str, offset: u64, bit: u8) -> io::Result<()> {
        assert!(bit < 8, "a byte has eight bits, not {bit}");
        let mut state = self.state.borrow_mut();
        let inode = *state.directory.get(name).ok_or_else(|| not_found(name))?;
        // Garbage collection keeps every inode a name reaches.
        let file = state
            .inodes
            .get_mut(&inode)
            .expect("directory entries name live inodes");
        let index = to_index(offset)?;
        if index >= file.data.len() || index >= file.durable.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "offset past the end",
            ));
        }
        file.data[index] ^= 1 << bit;
        file.durable[index] ^= 1 << bit;
        Ok(())
    }

    /// Whether any written data or directory change is not yet durable.
    pub fn has_unsynced_changes(&self) -> bool {
        let state = self.state.borrow();
        !state.pending_directory_operations.is_empty()
            || state.inodes.values().any(|inode| {
                !inode.dirty_sectors.is_empty()
                    || inode.truncated_to.is_some()
                    || inode.data.len() != inode.durable.len()
            })
    }
}

impl DiskState {
    /// Fails if a fault for `operation` is pending, consuming it.
    fn check_fault(&mut self, operation: FaultOperation) -> io::Result<()> {
        if let Some(remaining) = self.operations_before_power_cut.as_mut() {
            if *remaining == 0 {
                self.statistics.injected_error_count += 1;
                return Err(io::Error::other(format!("power cut before {operation:?}")));
            }
            *remaining -= 1;
        }
        if let Some(position) = self.pending_faults.iter().position(|&f| f == operation) {
            self.pending_faults.remove(position);
            self.statistics.injected_error_count += 1;
            return Err(io::Error::other(format!("injected fault: {operation:?}")));
        }
        Ok(())
    }

    // In both lookups below: garbage collection only drops inodes that no name or
    // pending operation reaches, so every directory entry names a live inode.
    fn inode(&self, name: &str) -> io::Result<&Inode> {
        check_file_name(name)?;
        let inode = self.directory.get(name).ok_or_else(|| not_found(name))?;
        Ok(self
            .inodes
            .get(inode)
            .expect("directory entries name live inodes"))
    }

    fn inode_mut(&mut self, name: &str) -> io::Result<&mut Inode> {
        check_file_name(name)?;
        let inode = self.directory.get(name).ok_or_else(|| not_found(name))?;
        Ok(self
            .inodes
            .get_mut(inode)
            .expect("directory entries name live inodes"))
    }

    /// Drops inodes that nothing can reach any more: no current or durable name
    /// and no pending directory operation (a crash may replay it) points to them.
    fn collect_garbage(&mut self) {
        let pending = self
            .pending_directory_operations
            .iter()
            .map(|operation| match operation {
                DirectoryOperation::Create { inode, .. }
                | DirectoryOperation::Rename { inode, .. }
                | DirectoryOperation::Remove { inode, .. } => *inode,
            });
        let live: std::collections::BTreeSet<u64> = self
            .directory
            .values()
            .chain(self.durable_directory.values())
            .copied()
            .chain(pending)
            .collect();
        self.inodes.retain(|inode, _| live.contains(inode));
    }
}

impl Storage for SimDisk {
    fn list(&self) -> io::Result<Vec<String>> {
        // BTreeMap keys are already sorted.
        Ok(self.state.borrow().directory.keys().cloned().collect())
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Create)?;
        if state.directory.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} already exists"),
            ));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.directory.insert(name.to_owned(), inode);
        let operation = DirectoryOperation::Create {
            name: name.to_owned(),
            inode,
        };
        state.pending_directory_operations.push(operation);
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Read)?;
        let data = &state.inode(name)?.data;
        let start = to_index(offset)?;
        let end = start.checked_add(buffer.len());
        match end {
            Some(end) if end <= data.len() => {
                buffer.copy_from_slice(&data[start..end]);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: read past the end"),
            )),
        }
    }

    fn read_all(&self, name: &str, length_bytes_max: u64) -> io::Result<Vec<u8>> {
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Read)?;
        let data = &state.inode(name)?.data;
        if data.len() as u64 > length_bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{name} is {} bytes, more than the {length_bytes_max} allowed",
                    data.len()
                ),
            ));
        }
        Ok(data.clone())
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Write)?;
        let file = state.inode_mut(name)?;
        let start = to_index(offset)?;
        let end = start + data.len();
        if file.data.len() < end {
            file.data.resize(end, 0);
        }
        file.data[start..end].copy_from_slice(data);
        file.mark_dirty(offset, end as u64);
        state.statistics.bytes_written += data.len() as u64;
        Ok(())
    }

    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::SyncFile)?;
        state.inode_mut(name)?.sync();
        state.statistics.file_sync_count += 1;
        Ok(())
    }

    fn truncate(&mut self, name: &str, length_bytes: u64) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Truncate)?;
        let file = state.inode_mut(name)?;
        let old_length = file.data.len() as u64;
        file.data.resize(to_index(length_bytes)?, 0);
        if length_bytes < old_length {
            file.truncated_to = Some(
                file.truncated_to
                    .map_or(length_bytes, |t| t.min(length_bytes)),
            );
            file.dirty_sectors.retain(|_, range| {
                range.1 = range.1.min(length_bytes);
                range.0 < range.1
            });
        } else if length_bytes > old_length {
            // The zeros that extend the file are new content like any write.
            file.mark_dirty(old_length, length_bytes);
        }
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        check_file_name(to)?;
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Rename)?;
        check_file_name(from)?;
        let inode = state
            .directory
            .remove(from)
            .ok_or_else(|| not_found(from))?;
        state.directory.insert(to.to_owned(), inode);
        let operation = DirectoryOperation::Rename {
            from: from.to_owned(),
            to: to.to_owned(),
            inode,
        };
        state.pending_directory_operations.push(operation);
        state.collect_garbage();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        check_file_name(name)?;
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::Remove)?;
        let inode = state
            .directory
            .remove(name)
            .ok_or_else(|| not_found(name))?;
        let operation = DirectoryOperation::Remove {
            name: name.to_owned(),
            inode,
        };
        state.pending_directory_operations.push(operation);
        state.collect_garbage();
        Ok(())
    }

    fn sync_directory(&mut self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.check_fault(FaultOperation::SyncDirectory)?;
        state.durable_directory = state.directory.clone();
        state.pending_directory_operations.clear();
        state.collect_garbage();
        state.statistics.directory_sync_count += 1;
        Ok(())
    }

    fn file_length(&self, name: &str) -> io::Result<u64> {
        Ok(self.state.borrow().inode(name)?.data.len() as u64)
    }
}
