//! The cores never reach for the clock, the OS random source, files or sockets
//! (shared STYLE.md, habit 1). Clippy's `disallowed-methods` catches calls; this
//! test also catches imports and paths, in every source file of the cores. The
//! WAL's one real-file implementation, `file_storage.rs`, is the only exception.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 6] = [
    "Instant::now",
    "SystemTime::now",
    "thread_rng",
    "std::fs",
    "std::net",
    "tokio",
];

fn rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn cores_use_no_clock_randomness_files_or_sockets() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for core in ["raft/src", "raft-log/src", "wal/src", "kv/src", "pair/src"] {
        rust_files(&crates.join(core), &mut files);
    }
    assert!(files.len() > 10, "found only {} source files", files.len());
    let mut offences = Vec::new();
    for file in files {
        let exempt = file.ends_with("wal/src/file_storage.rs")
            || file.ends_with("wal/src/bin/wal-crash-writer.rs");
        let text = std::fs::read_to_string(&file).expect("a source file is UTF-8");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for forbidden in FORBIDDEN {
                if code.contains(forbidden) && !exempt {
                    offences.push(format!(
                        "{}:{}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "cores reach for I/O, time or randomness:\n{}",
        offences.join("\n")
    );
}
