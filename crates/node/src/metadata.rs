//! The data directory's identity file: which cluster and node it belongs to, and
//! how often the node has booted (its incarnation).

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use understudy_types::limits::NODE_METADATA_BYTES_MAX;

/// The identity file's name inside the data directory.
pub const METADATA_FILE_NAME: &str = "node.json";

/// What the identity file records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The cluster (0 until a joining node has heard from it).
    pub cluster_id: u64,
    /// The node.
    pub node_id: u64,
    /// Boots so far, this one included: the node's incarnation.
    pub boot_count: u64,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(METADATA_FILE_NAME)
}

/// Reads the identity file, if the directory has one.
pub fn load(data_dir: &Path) -> Result<Option<Metadata>, String> {
    let path = path(data_dir);
    let length = match fs::metadata(&path) {
        Ok(found) => found.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", path.display())),
    };
    if length > NODE_METADATA_BYTES_MAX {
        return Err(format!("{} is {length} bytes: corrupt", path.display()));
    }
    let bytes = fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| format!("{} is corrupt: {error}", path.display()))
}

/// Writes the identity file atomically: a temporary file is written and synced,
/// renamed over the old one, and the directory synced, so a crash leaves either
/// the old or the new file, never a torn one.
pub fn store(data_dir: &Path, metadata: &Metadata) -> Result<(), String> {
    let fail = |error: std::io::Error| format!("{}: {error}", data_dir.display());
    fs::create_dir_all(data_dir).map_err(fail)?;
    let temporary = data_dir.join(format!("{METADATA_FILE_NAME}.tmp"));
    // Serializing plain integers to JSON cannot fail.
    let bytes = serde_json::to_vec_pretty(metadata).expect("plain data serializes");
    let mut file = fs::File::create(&temporary).map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    // Durable contents before the rename makes them visible under the real name.
    file.sync_all().map_err(fail)?;
    fs::rename(&temporary, path(data_dir)).map_err(fail)?;
    // The rename itself is durable only once the directory is synced.
    fs::File::open(data_dir)
        .and_then(|directory| directory.sync_all())
        .map_err(fail)
}

/// A cluster id derived from the initial member list, so every node bootstrapped
/// with the same `--initial-cluster` agrees on it without talking (FNV-1a, never 0).
pub fn cluster_id_of(initial_cluster: &[(u64, String)]) -> u64 {
    let mut members: Vec<String> = initial_cluster
        .iter()
        .map(|(id, address)| format!("{id}={address}"))
        .collect();
    members.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in members.join(",").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// Loads (or creates, for an empty directory) the identity, checks it belongs to
/// this node, counts this boot and stores it.
pub fn boot(
    data_dir: &Path,
    node_id: u64,
    initial_cluster: &[(u64, String)],
) -> Result<Metadata, String> {
    let mut metadata = match load(data_dir)? {
        Some(existing) => existing,
        None => Metadata {
            cluster_id: if initial_cluster.is_empty() {
                0
            } else {
                cluster_id_of(initial_cluster)
            },
            node_id,
            boot_count: 0,
        },
    };
    if metadata.node_id != node_id {
        return Err(format!(
            "{} belongs to node {}, not {node_id}",
            data_dir.display(),
            metadata.node_id
        ));
    }
    if !initial_cluster.is_empty()
        && metadata.cluster_id != 0
        && metadata.cluster_id != cluster_id_of(initial_cluster)
    {
        return Err(format!(
            "{} belongs to another cluster than --initial-cluster describes",
            data_dir.display()
        ));
    }
    metadata.boot_count += 1;
    store(data_dir, &metadata)?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_count_and_foreign_directories_are_refused() {
        let directory = tempfile::tempdir().expect("temp dir");
        let cluster = vec![
            (1, "127.0.0.1:1".to_string()),
            (2, "127.0.0.1:2".to_string()),
        ];
        let first = boot(directory.path(), 1, &cluster).expect("fresh directory boots");
        let second = boot(directory.path(), 1, &cluster).expect("same node reboots");
        assert_eq!(second.boot_count, first.boot_count + 1);
        assert_eq!(second.cluster_id, cluster_id_of(&cluster));
        assert!(boot(directory.path(), 2, &cluster).is_err());
        let other = vec![(1, "127.0.0.1:9".to_string())];
        assert!(boot(directory.path(), 1, &other).is_err());
    }
}
