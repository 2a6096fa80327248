//! [`Storage`] on real files in one directory. The only module of the crate that
//! touches `std::fs`.
//!
//! Durability: `sync_file` is `File::sync_data` (`fdatasync`), `sync_directory`
//! opens the directory and calls `sync_all` (`fsync` on the directory), which is
//! what makes a create, rename or remove survive power loss on Linux file
//! systems. Positional I/O uses `std::os::unix::fs::FileExt`, so this module is
//! Unix-only, like the rest of the node shell.

use crate::storage::{check_file_name, Storage};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Real files in one directory.
///
/// Write handles are kept open between calls (one `open` per file, not one per
/// append); read handles are opened per call, since reads happen only during
/// recovery.
#[derive(Debug)]
pub struct FileStorage {
    directory: PathBuf,
    write_handles: BTreeMap<String, File>,
}

impl FileStorage {
    /// Uses `directory`, creating it (and its parents) if it does not exist.
    ///
    /// A directory created here is not itself made durable in its parent: the
    /// caller that creates data directories on a fresh machine should sync the
    /// parent if it matters (a lost empty data directory is a fresh node anyway).
    pub fn open(directory: impl Into<PathBuf>) -> io::Result<FileStorage> {
        let directory = directory.into();
        fs::create_dir_all(&directory)?;
        Ok(FileStorage {
            directory,
            write_handles: BTreeMap::new(),
        })
    }

    /// The directory this storage uses.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_file_name(name)?;
        Ok(self.directory.join(name))
    }

    fn write_handle(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.write_handles.contains_key(name) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.path(name)?)?;
            self.write_handles.insert(name.to_owned(), file);
        }
        // The entry was inserted just above if it was missing.
        Ok(self
            .write_handles
            .get_mut(name)
            .expect("write handle inserted above"))
    }
}

impl Storage for FileStorage {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.directory)? {
            let entry = entry?;
            let name = entry.file_name().into_string().map_err(|raw| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name {raw:?} is not UTF-8"),
                )
            })?;
            names.push(name);
        }
        names.sort();
        Ok(names)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(self.path(name)?)?;
        self.write_handles.insert(name.to_owned(), file);
        Ok(())
    }

    fn read_at(&self, name: &str, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        File::open(self.path(name)?)?.read_exact_at(buffer, offset)
    }

    fn read_all(&self, name: &str, length_bytes_max: u64) -> io::Result<Vec<u8>> {
        let file = File::open(self.path(name)?)?;
        let length_bytes = file.metadata()?.len();
        if length_bytes > length_bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name} is {length_bytes} bytes, more than the {length_bytes_max} allowed"),
            ));
        }
        let length = usize::try_from(length_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut contents = vec![0; length];
        file.read_exact_at(&mut contents, 0)?;
        Ok(contents)
    }

    fn write_at(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_handle(name)?.write_all_at(data, offset)
    }

    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        // fdatasync: the data and the length (needed to read it back), not the
        // access times.
        self.write_handle(name)?.sync_data()
    }

    fn truncate(&mut self, name: &str, length_bytes: u64) -> io::Result<()> {
        self.write_handle(name)?.set_len(length_bytes)
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from)?, self.path(to)?)?;
        self.write_handles.remove(to);
        if let Some(handle) = self.write_handles.remove(from) {
            // The open handle follows the inode, which now has the new name.
            self.write_handles.insert(to.to_owned(), handle);
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name)?)?;
        self.write_handles.remove(name);
        Ok(())
    }

    fn sync_directory(&mut self) -> io::Result<()> {
        // On Linux a directory is synced by opening it read-only and calling fsync
        // on that descriptor; this persists the entries created, renamed or removed.
        File::open(&self.directory)?.sync_all()
    }

    fn file_length(&self, name: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(name)?)?.len())
    }
}
