//! Whole files installed atomically and verified on read: snapshots, metadata,
//! the data directory's version file.
//!
//! "Never modify the only copy": a new version is written to `NAME.tmp`, synced,
//! renamed over `NAME`, and the directory is synced. A crash at any point leaves
//! either the old file or the new one under `NAME`, never a mixture; a leftover
//! `NAME.tmp` is garbage that `Wal::open` removes. Every file carries a checksum
//! of its contents, checked on every read.
//!
//! Layout (little-endian; see `docs/wal-format.md`): magic `USATOMIC` (8 bytes),
//! format version u32, CRC32C of the contents u32, contents length u64, CRC32C of
//! the previous 24 bytes u32, 4 zero bytes, then the contents.

use crate::error::WalError;
use crate::storage::{check_file_name, Storage};
use understudy_types::limits::SNAPSHOT_BYTES_MAX;

/// The first eight bytes of every atomically installed file.
pub const ATOMIC_FILE_MAGIC: [u8; 8] = *b"USATOMIC";
/// The container format this build writes.
pub const ATOMIC_FILE_FORMAT_VERSION: u32 = 1;
/// The container formats this build reads.
pub const ATOMIC_FILE_FORMAT_VERSIONS_SUPPORTED: &[u32] = &[1];
/// Size of the container header before the contents.
pub const ATOMIC_FILE_HEADER_BYTES: u64 = 32;
/// Appended to a file's name while its new version is being written.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// Atomically replaces (or creates) `name` with `contents`; durable on return.
pub fn install<S: Storage>(storage: &mut S, name: &str, contents: &[u8]) -> Result<(), WalError> {
    let length_bytes = contents.len() as u64;
    if length_bytes > SNAPSHOT_BYTES_MAX {
        return Err(WalError::FileTooLarge {
            file: name.to_owned(),
            length_bytes,
            limit_bytes: SNAPSHOT_BYTES_MAX,
        });
    }
    let temporary = format!("{name}{TEMPORARY_SUFFIX}");
    for candidate in [name, temporary.as_str()] {
        if check_file_name(candidate).is_err() {
            return Err(WalError::InvalidFileName {
                name: candidate.to_owned(),
            });
        }
    }
    // A temporary file left by a crash during an earlier install is garbage.
    match storage.remove(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(WalError::io("remove", &temporary, error)),
    }
    storage
        .create(&temporary)
        .map_err(|error| WalError::io("create", &temporary, error))?;
    let header = encode_header(contents);
    storage
        .write_at(&temporary, 0, &header)
        .and_then(|()| storage.write_at(&temporary, ATOMIC_FILE_HEADER_BYTES, contents))
        .map_err(|error| WalError::io("write_at", &temporary, error))?;
    // The contents must be durable before any name can point to them: otherwise a
    // crash after the rename could leave `name` holding a torn file while the old
    // version is already gone.
    storage
        .sync_file(&temporary)
        .map_err(|error| WalError::io("sync_file", &temporary, error))?;
    storage
        .rename(&temporary, name)
        .map_err(|error| WalError::io("rename", name, error))?;
    // The rename is durable only once the directory is synced; the caller may
    // record a reference to `name` right after this returns.
    storage
        .sync_directory()
        .map_err(|error| WalError::io("sync_directory", name, error))
}

/// Reads `name` and verifies its header and checksum; returns the contents.
pub fn read<S: Storage>(storage: &S, name: &str) -> Result<Vec<u8>, WalError> {
    let mut bytes = storage
        .read_all(name, SNAPSHOT_BYTES_MAX + ATOMIC_FILE_HEADER_BYTES)
        .map_err(|error| WalError::io("read_all", name, error))?;
    let header_length = ATOMIC_FILE_HEADER_BYTES as usize;
    if bytes.len() < header_length {
        return Err(WalError::corrupt(name, 0, "file shorter than its header"));
    }
    if bytes[0..8] != ATOMIC_FILE_MAGIC {
        return Err(WalError::corrupt(
            name,
            0,
            "not an atomically installed file (bad magic)",
        ));
    }
    let version = u32::from_le_bytes(field(&bytes, 8));
    if !ATOMIC_FILE_FORMAT_VERSIONS_SUPPORTED.contains(&version) {
        return Err(WalError::UnsupportedVersion {
            file: name.to_owned(),
            found: version,
            supported: ATOMIC_FILE_FORMAT_VERSIONS_SUPPORTED,
        });
    }
    let header_checksum = u32::from_le_bytes(field(&bytes, 24));
    if header_checksum != crc32c::crc32c(&bytes[0..24]) || bytes[28..32] != [0; 4] {
        return Err(WalError::corrupt(name, 0, "file header checksum mismatch"));
    }
    let contents_length = u64::from_le_bytes(field(&bytes, 16));
    if contents_length != (bytes.len() - header_length) as u64 {
        return Err(WalError::corrupt(
            name,
            ATOMIC_FILE_HEADER_BYTES,
            format!(
                "header says {contents_length} bytes of contents, file holds {}",
                bytes.len() - header_length
            ),
        ));
    }
    let contents_checksum = u32::from_le_bytes(field(&bytes, 12));
    let contents = bytes.split_off(header_length);
    if crc32c::crc32c(&contents) != contents_checksum {
        return Err(WalError::corrupt(
            name,
            ATOMIC_FILE_HEADER_BYTES,
            "contents checksum mismatch",
        ));
    }
    Ok(contents)
}

/// The `N` bytes at `offset` of the header.
fn field<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut field = [0; N];
    // `read` checked that the whole header is present before reading any field.
    field.copy_from_slice(&bytes[offset..offset + N]);
    field
}

fn encode_header(contents: &[u8]) -> [u8; ATOMIC_FILE_HEADER_BYTES as usize] {
    let mut header = [0; ATOMIC_FILE_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&ATOMIC_FILE_MAGIC);
    header[8..12].copy_from_slice(&ATOMIC_FILE_FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&crc32c::crc32c(contents).to_le_bytes());
    header[16..24].copy_from_slice(&(contents.len() as u64).to_le_bytes());
    let header_checksum = crc32c::crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&header_checksum.to_le_bytes());
    header
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_disk::{CrashFaults, SimDisk};
    use rand::SeedableRng;

    #[test]
    fn installed_file_reads_back_and_replaces_atomically() {
        let mut disk = SimDisk::new();
        install(&mut disk, "meta", b"first").expect("install");
        install(&mut disk, "meta", b"second version").expect("replace");
        assert_eq!(read(&disk, "meta").expect("read"), b"second version");
        assert_eq!(disk.list().expect("list"), vec!["meta".to_owned()]);
    }

    #[test]
    fn every_byte_is_verified() {
        let mut disk = SimDisk::new();
        install(&mut disk, "meta", b"0123456789").expect("install");
        let length = disk.file_length("meta").expect("length");
        for offset in 0..length {
            disk.flip_durable_bit("meta", offset, 3).expect("flip");
            assert!(
                read(&disk, "meta").is_err(),
                "damage at {offset} undetected"
            );
            disk.flip_durable_bit("meta", offset, 3).expect("flip back");
        }
        assert_eq!(read(&disk, "meta").expect("intact again"), b"0123456789");
    }

    #[test]
    fn a_crash_leaves_the_old_or_the_new_version() {
        for seed in 0..200 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut disk = SimDisk::new();
            install(&mut disk, "meta", b"old").expect("install");
            // Fail a step of the second install at a seed-chosen point, then crash.
            let failing = [
                crate::FaultOperation::Write,
                crate::FaultOperation::SyncFile,
                crate::FaultOperation::Rename,
                crate::FaultOperation::SyncDirectory,
            ];
            // Every fifth seed installs without a fault.
            if let Some(&operation) = failing.get((seed % 5) as usize) {
                disk.fail_next(operation);
            }
            let installed = install(&mut disk, "meta", b"new contents").is_ok();
            disk.crash(&mut rng, &CrashFaults::power_loss());
            let contents = read(&disk, "meta").expect("old or new version, intact");
            assert!(
                contents == b"old" || contents == b"new contents",
                "seed {seed}"
            );
            if installed {
                assert_eq!(
                    contents, b"new contents",
                    "seed {seed}: durable install lost"
                );
            }
        }
    }
}
