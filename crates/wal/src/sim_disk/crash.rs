//! What power loss does to a [`SimDisk`](super::SimDisk).
//!
//! Rules (every random choice is drawn from the caller's RNG, in a fixed order):
//! 1. Each directory operation since the last `sync_directory` is independently
//!    kept or lost, then the kept ones are replayed in order over the durable
//!    directory; an operation whose file is no longer where it was (its create was
//!    lost, say) has no effect.
//! 2. A file whose length changed since its last sync keeps the new length or
//!    reverts to the durable one. Bytes beyond the durable length that no kept
//!    write covers read as zeros.
//! 3. Each sector with unsynced writes is independently lost (its written range
//!    reverts to the durable content) or kept. A kept sector may be torn (only a
//!    prefix of its written range reaches the disk) and may get one flipped bit in
//!    a byte that differs from its durable content.
//! 4. Durable bytes are never altered: loss and tearing only choose between the
//!    durable and the newly written content of the range written since the last
//!    sync, and a bit flip only hits bytes whose content changed since then.

use super::{DirectoryOperation, DiskState, Inode};
use rand::Rng;
use std::collections::BTreeMap;

/// Probabilities that decide what a crash does to unsynced state.
#[derive(Clone, Debug, PartialEq)]
pub struct CrashFaults {
    /// Each unsynced sector is lost (reverts to durable content) with this probability.
    pub sector_loss_probability: f64,
    /// A kept unsynced sector is torn (only a prefix written) with this probability.
    pub torn_sector_probability: f64,
    /// A kept unsynced sector gets one flipped bit with this probability.
    pub bit_flip_probability: f64,
    /// An unsynced change of a file's length is lost with this probability.
    pub length_change_loss_probability: f64,
    /// Each unsynced create, rename or remove is lost with this probability.
    pub directory_operation_loss_probability: f64,
}

impl CrashFaults {
    /// Power loss: half of everything unsynced is lost, some kept sectors are torn
    /// or damaged.
    pub fn power_loss() -> CrashFaults {
        CrashFaults {
            sector_loss_probability: 0.5,
            torn_sector_probability: 0.1,
            bit_flip_probability: 0.05,
            length_change_loss_probability: 0.5,
            directory_operation_loss_probability: 0.5,
        }
    }

    /// A process crash (the operating system survives): everything written is kept.
    pub fn process_crash() -> CrashFaults {
        CrashFaults {
            sector_loss_probability: 0.0,
            torn_sector_probability: 0.0,
            bit_flip_probability: 0.0,
            length_change_loss_probability: 0.0,
            directory_operation_loss_probability: 0.0,
        }
    }

    fn assert_valid(&self) {
        for (name, probability) in [
            ("sector_loss_probability", self.sector_loss_probability),
            ("torn_sector_probability", self.torn_sector_probability),
            ("bit_flip_probability", self.bit_flip_probability),
            (
                "length_change_loss_probability",
                self.length_change_loss_probability,
            ),
            (
                "directory_operation_loss_probability",
                self.directory_operation_loss_probability,
            ),
        ] {
            assert!(
                (0.0..=1.0).contains(&probability),
                "CrashFaults::{name} must be a probability, got {probability}"
            );
        }
    }
}

impl Default for CrashFaults {
    fn default() -> CrashFaults {
        CrashFaults::power_loss()
    }
}

/// What one crash did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    /// Unsynced sectors that reached the disk (possibly torn or damaged).
    pub sectors_kept: u64,
    /// Unsynced sectors that reverted to their durable content.
    pub sectors_lost: u64,
    /// Kept sectors of which only a prefix reached the disk.
    pub sectors_torn: u64,
    /// Kept sectors that got a flipped bit.
    pub bits_flipped: u64,
    /// Files whose unsynced length change was lost.
    pub length_changes_lost: u64,
    /// Unsynced directory operations that survived.
    pub directory_operations_kept: u64,
    /// Unsynced directory operations that were lost.
    pub directory_operations_lost: u64,
}

/// Applies a crash to `state`; see the module documentation.
pub(super) fn crash_state(
    state: &mut DiskState,
    rng: &mut impl rand::RngCore,
    faults: &CrashFaults,
) -> CrashReport {
    faults.assert_valid();
    let mut report = CrashReport::default();
    let directory = crash_directory(state, rng, faults, &mut report);
    let mut inodes = BTreeMap::new();
    let mut reachable: Vec<u64> = directory.values().copied().collect();
    reachable.sort_unstable();
    reachable.dedup();
    for inode_number in reachable {
        // Names in the durable directory or in pending operations are never
        // garbage-collected, and the crashed directory is built from those.
        let inode = state
            .inodes
            .get(&inode_number)
            .expect("pending operations and directories name live inodes");
        let content = crash_file(inode, rng, faults, &mut report);
        let survivor = Inode {
            data: content.clone(),
            durable: content,
            dirty_sectors: BTreeMap::new(),
            truncated_to: None,
        };
        inodes.insert(inode_number, survivor);
    }
    state.inodes = inodes;
    state.directory = directory.clone();
    state.durable_directory = directory;
    state.pending_directory_operations.clear();
    report
}

fn crash_directory(
    state: &DiskState,
    rng: &mut impl rand::RngCore,
    faults: &CrashFaults,
    report: &mut CrashReport,
) -> BTreeMap<String, u64> {
    let mut directory = state.durable_directory.clone();
    for operation in &state.pending_directory_operations {
        if rng.gen_bool(faults.directory_operation_loss_probability) {
            report.directory_operations_lost += 1;
            continue;
        }
        report.directory_operations_kept += 1;
        match operation {
            DirectoryOperation::Create { name, inode } => {
                if !directory.contains_key(name) {
                    directory.insert(name.clone(), *inode);
                }
            }
            DirectoryOperation::Rename { from, to, inode } => {
                if directory.get(from) == Some(inode) {
                    directory.remove(from);
                    directory.insert(to.clone(), *inode);
                }
            }
            DirectoryOperation::Remove { name, inode } => {
                if directory.get(name) == Some(inode) {
                    directory.remove(name);
                }
            }
        }
    }
    directory
}

/// The content `inode` has after the crash.
fn crash_file(
    inode: &Inode,
    rng: &mut impl rand::RngCore,
    faults: &CrashFaults,
    report: &mut CrashReport,
) -> Vec<u8> {
    let length_changed = inode.truncated_to.is_some() || inode.data.len() != inode.durable.len();
    let mut result = inode.durable.clone();
    let result_length = if length_changed && rng.gen_bool(faults.length_change_loss_probability) {
        report.length_changes_lost += 1;
        inode.durable.len()
    } else {
        if let Some(length) = inode.truncated_to {
            result.truncate(length as usize);
        }
        inode.data.len()
    };
    result.resize(result_length, 0);
    for &(start, end) in inode.dirty_sectors.values() {
        let start = start as usize;
        let end = (end as usize).min(result_length).min(inode.data.len());
        if start >= end {
            continue;
        }
        if rng.gen_bool(faults.sector_loss_probability) {
            report.sectors_lost += 1;
            continue;
        }
        report.sectors_kept += 1;
        let mut copied_end = end;
        if rng.gen_bool(faults.torn_sector_probability) {
            report.sectors_torn += 1;
            copied_end = rng.gen_range(start..end);
        }
        result[start..copied_end].copy_from_slice(&inode.data[start..copied_end]);
        if copied_end > start && rng.gen_bool(faults.bit_flip_probability) {
            // Only bytes that differ from the durable content are candidates: a
            // merged dirty span may cover durable bytes no write changed.
            let changed: Vec<usize> = (start..copied_end)
                .filter(|&index| inode.durable.get(index) != Some(&inode.data[index]))
                .collect();
            if !changed.is_empty() {
                report.bits_flipped += 1;
                let byte = changed[rng.gen_range(0..changed.len())];
                result[byte] ^= 1 << rng.gen_range(0..8);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_disk::{SimDisk, SECTOR_BYTES};
    use crate::storage::Storage;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A disk with one synced file of three sectors plus an unsynced tail of three
    /// sectors, written by a write that also rewrites the end of the synced part.
    fn disk_with_unsynced_tail() -> (SimDisk, Vec<u8>, Vec<u8>) {
        let mut disk = SimDisk::new();
        let durable: Vec<u8> = (0..3 * SECTOR_BYTES).map(|i| (i % 251) as u8).collect();
        disk.create("file").expect("create");
        disk.write_at("file", 0, &durable).expect("write");
        disk.sync_file("file").expect("sync");
        disk.sync_directory().expect("sync directory");
        let tail: Vec<u8> = (0..3 * SECTOR_BYTES)
            .map(|i| (i % 13) as u8 + 100)
            .collect();
        // The write starts 100 bytes early, rewriting them with identical content,
        // as an append into a partly synced sector does.
        let rewrite_start = durable.len() - 100;
        let write = [&durable[rewrite_start..], &tail[..]].concat();
        disk.write_at("file", rewrite_start as u64, &write)
            .expect("write tail");
        (disk, durable, tail)
    }

    #[test]
    fn synced_bytes_survive_every_crash() {
        let harsh = CrashFaults {
            sector_loss_probability: 0.5,
            torn_sector_probability: 0.5,
            bit_flip_probability: 0.5,
            length_change_loss_probability: 0.5,
            directory_operation_loss_probability: 0.5,
        };
        let mut saw = CrashReport::default();
        for seed in 0..300 {
            let (disk, durable, tail) = disk_with_unsynced_tail();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let report = disk.crash(&mut rng, &harsh);
            let after = disk.read_all("file", 1 << 20).expect("file survives");
            assert_eq!(
                &after[..durable.len()],
                &durable[..],
                "seed {seed}: synced bytes changed"
            );
            // Every unsynced byte is either what was written, zero (lost beyond the
            // durable length) or the written byte with one bit flipped.
            for (index, &byte) in after[durable.len()..].iter().enumerate() {
                let written = tail[index];
                let plausible = byte == written || byte == 0 || (byte ^ written).count_ones() == 1;
                assert!(
                    plausible,
                    "seed {seed}: byte {index} is {byte}, wrote {written}"
                );
            }
            saw.sectors_lost += report.sectors_lost;
            saw.sectors_torn += report.sectors_torn;
            saw.bits_flipped += report.bits_flipped;
            saw.length_changes_lost += report.length_changes_lost;
        }
        assert!(saw.sectors_lost > 0 && saw.sectors_torn > 0 && saw.bits_flipped > 0);
        assert!(saw.length_changes_lost > 0);
    }

    #[test]
    fn a_process_crash_keeps_everything_written() {
        let (disk, durable, tail) = disk_with_unsynced_tail();
        let report = disk.crash(
            &mut ChaCha8Rng::seed_from_u64(0),
            &CrashFaults::process_crash(),
        );
        assert_eq!(report.sectors_lost, 0);
        let after = disk.read_all("file", 1 << 20).expect("read");
        assert_eq!(after, [durable, tail].concat());
        assert!(!disk.has_unsynced_changes());
    }

    #[test]
    fn unsynced_directory_operations_may_be_lost_but_synced_ones_are_not() {
        let mut lost_create = false;
        let mut kept_create = false;
        for seed in 0..50 {
            let mut disk = SimDisk::new();
            disk.create("synced").expect("create");
            disk.sync_directory().expect("sync directory");
            disk.create("unsynced").expect("create");
            disk.remove("synced").expect("remove");
            disk.crash(
                &mut ChaCha8Rng::seed_from_u64(seed),
                &CrashFaults::power_loss(),
            );
            let names = disk.list().expect("list");
            lost_create |= !names.contains(&"unsynced".to_owned());
            kept_create |= names.contains(&"unsynced".to_owned());
        }
        assert!(lost_create && kept_create);
        let mut disk = SimDisk::new();
        disk.create("durable").expect("create");
        disk.sync_directory().expect("sync directory");
        let all_lost = CrashFaults {
            directory_operation_loss_probability: 1.0,
            ..CrashFaults::power_loss()
        };
        disk.remove("durable").expect("remove");
        disk.crash(&mut ChaCha8Rng::seed_from_u64(0), &all_lost);
        assert_eq!(
            disk.list().expect("list"),
            vec!["durable"],
            "the lost removal is undone"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_crash() {
        let outcome = |seed| {
            let (disk, _, _) = disk_with_unsynced_tail();
            let report = disk.crash(
                &mut ChaCha8Rng::seed_from_u64(seed),
                &CrashFaults::power_loss(),
            );
            (report, disk.read_all("file", 1 << 20).expect("read"))
        };
        assert_eq!(outcome(7), outcome(7));
        assert!(
            (0..20).any(|seed| outcome(seed) != outcome(7)),
            "crashes depend on the seed"
        );
    }
}
