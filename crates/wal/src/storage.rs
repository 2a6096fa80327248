//! The narrow storage interface every byte of the WAL goes through.
//!
//! One directory, flat file names, eleven operations. Two implementations exist:
//! [`crate::FileStorage`] (real files) and [`crate::SimDisk`] (an in-memory disk
//! that keeps written and durable bytes apart and can crash). The WAL logic above
//! this trait never touches `std::fs`, so the same code runs in production and in
//! the deterministic simulator.
//!
//! Errors are plain `std::io::Error`s: a missing file is `ErrorKind::NotFound`,
//! creating an existing one `ErrorKind::AlreadyExists`, reading past the end
//! `ErrorKind::UnexpectedEof`. Both implementations behave identically; the
//! conformance suite in `tests/storage_conformance.rs` holds them to it.

use std::io;
use understudy_types::limits::STORAGE_FILE_NAME_BYTES_MAX;

/// A directory of flat files with explicit durability.
///
/// Nothing written is durable until [`Storage::sync_file`] returns for that file;
/// no directory change (create, rename, remove) is durable until
/// [`Storage::sync_directory`] returns. A crash may lose anything that was not.
pub trait Storage {
    /// The names of every file in the directory, sorted.
    fn list(&self) -> io::Result<Vec<String>>;

    /// Creates a new, empty file. Fails with `AlreadyExists` if `name` exists.
    fn create(&mut self, name: &str) -> io::Result<()>;

    /// Fills `buffer` with the bytes at `offset`. Fails with `UnexpectedEof` if the
    /// file is shorter than `offset + buffer.len()`.
    fn read_at(&self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<()>;

    /// Reads the whole file. Fails with `InvalidData` if it is longer than
    /// `length_bytes_max`, before allocating anything.
    fn read_all(&self, name: &str, length_bytes_max: u64) -> io::Result<Vec<u8>>;

    /// Writes `data` at `offset`, extending the file (with zeros before `offset`
    /// if it lies past the end).
    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes the file's data and length durable (`fdatasync`).
    fn sync_file(&mut self, name: &str) -> io::Result<()>;

    /// Sets the file's length, cutting it or extending it with zeros.
    fn truncate(&mut self, name: &str, length_bytes: u64) -> io::Result<()>;

    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;

    /// Removes the file.
    fn remove(&mut self, name: &str) -> io::Result<()>;

    /// Makes every create, rename and remove so far durable (`fsync` of the
    /// directory).
    fn sync_directory(&mut self) -> io::Result<()>;

    /// The file's current length in bytes.
    fn file_length(&self, name: &str) -> io::Result<u64>;
}

/// Checks that `name` is a flat file name both implementations accept: 1 to
/// `STORAGE_FILE_NAME_BYTES_MAX` bytes of ASCII letters, digits, `-`, `_` and
/// `.`, not starting with a dot (no hidden files, no `.` or `..`).
pub fn check_file_name(name: &str) -> io::Result<()> {
    let valid_characters = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if name.is_empty()
        || name.len() > STORAGE_FILE_NAME_BYTES_MAX
        || name.starts_with('.')
        || !valid_characters
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid storage file name {name:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_flat_and_bounded() {
        assert!(check_file_name("wal-00000000000000000001").is_ok());
        assert!(check_file_name("snapshot.tmp").is_ok());
        for invalid in ["", ".", "..", ".hidden", "a/b", "a b", "é"] {
            assert!(check_file_name(invalid).is_err(), "{invalid:?} accepted");
        }
        let too_long = "x".repeat(STORAGE_FILE_NAME_BYTES_MAX + 1);
        assert!(check_file_name(&too_long).is_err());
        assert!(check_file_name(&too_long[1..]).is_ok());
    }
}
