//! What `Wal::open` does before the first append: check the data directory's
//! version, clear leftovers of interrupted work, read every segment, keep the
//! batches their commit markers vouch for, and cut off a torn tail.
//!
//! Torn tail or corruption? Unsynced sectors reach the disk in any order, so after a
//! crash the last segment may end with anything: nothing, garbage, or valid-looking
//! records with or without an intact marker. Such a tail was never acknowledged
//! and is discarded. Damage is *corruption* only when something proves the damaged
//! bytes had been synced. The proof is the `durable_position_before` field of every
//! commit marker: the highest position whose `fdatasync` had completed when that
//! marker's batch was written. The WAL writes a batch only after the previous sync
//! returned, so an intact marker anywhere after the damage whose
//! `durable_position_before` reaches the damaged batch's first position proves the
//! damaged batch was durable, hence corrupt. Markers have a fixed size and type, so
//! the search probes every aligned offset cheaply.
//!
//! A segment other than the last is always complete and synced: the WAL syncs a
//! segment before it creates the next one. Damage or an unvouched tail there is
//! corruption. A last segment shorter than its header is the trace of a crash
//! while it was being created and is removed.

use crate::atomic_file::{self, TEMPORARY_SUFFIX};
use crate::error::WalError;
use crate::format::{
    commit_marker_at, parse_record, CommitMarker, HeaderProblem, ParsedRecord, SegmentHeader,
    RECORD_ALIGNMENT_BYTES, SEGMENT_FORMAT_VERSIONS_SUPPORTED, SEGMENT_HEADER_BYTES,
};
use crate::storage::Storage;
use crate::wal::{Position, Record, RecoveryReport, SegmentInfo};
use understudy_types::limits::{WAL_GROUP_COMMIT_RECORDS_MAX, WAL_SEGMENT_BYTES_MAX};

/// The name of the data directory's version file.
pub const VERSION_FILE_NAME: &str = "understudy-version";
/// The data directory layout this build writes.
pub const DATA_DIRECTORY_FORMAT_VERSION: u32 = 1;
/// The data directory layouts this build reads.
pub const DATA_DIRECTORY_FORMAT_VERSIONS_SUPPORTED: &[u32] = &[1];
/// Every segment file's name starts with this.
pub const SEGMENT_NAME_PREFIX: &str = "wal-";
const SEGMENT_NUMBER_DIGITS: usize = 20;

/// The file name of segment `number`.
pub fn segment_name(number: u64) -> String {
    format!(
        "{SEGMENT_NAME_PREFIX}{number:0width$}",
        width = SEGMENT_NUMBER_DIGITS
    )
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(SEGMENT_NAME_PREFIX)?;
    if digits.len() != SEGMENT_NUMBER_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` belongs to the WAL itself (segments, the version file, temporary
/// files), so that callers cannot install or remove it.
pub fn is_reserved_name(name: &str) -> bool {
    name.starts_with(SEGMENT_NAME_PREFIX)
        || name == VERSION_FILE_NAME
        || name.ends_with(TEMPORARY_SUFFIX)
}

/// The state `open` hands to the WAL.
pub(crate) struct Recovered {
    pub segments: Vec<SegmentInfo>,
    pub last_segment_length_bytes: u64,
    pub next_position: u64,
    pub records: Vec<Record>,
    pub report: RecoveryReport,
}

/// Runs recovery; see the module documentation.
pub(crate) fn recover<S: Storage>(storage: &mut S) -> Result<Recovered, WalError> {
    let names = storage
        .list()
        .map_err(|error| WalError::io("list", "data directory", error))?;
    let mut segment_names = Vec::new();
    for name in &names {
        if let Some(number) = parse_segment_name(name) {
            segment_names.push((number, name.clone()));
        } else if name.starts_with(SEGMENT_NAME_PREFIX) && !name.ends_with(TEMPORARY_SUFFIX) {
            return Err(WalError::corrupt(
                name,
                0,
                "unexpected file name in the WAL's namespace",
            ));
        }
    }
    check_version_file(storage, &names, !segment_names.is_empty())?;
    remove_temporary_files(storage, &names)?;
    let mut report = RecoveryReport::default();
    if remove_torn_new_segment(storage, &mut segment_names)? {
        report.torn_segment_removed = true;
    }
    if segment_names.is_empty() {
        return create_first_segment(storage, report);
    }
    check_contiguous(&segment_names)?;
    let mut recovered = Recovered {
        segments: Vec::new(),
        last_segment_length_bytes: 0,
        next_position: 0,
        records: Vec::new(),
        report,
    };
    let last = segment_names.len() - 1;
    for (index, (number, name)) in segment_names.iter().enumerate() {
        // After a torn new segment was removed, the one before it had been synced in
        // full before that creation began: it may not have a torn tail either.
        let may_have_torn_tail = index == last && !recovered.report.torn_segment_removed;
        recover_segment(storage, *number, name, may_have_torn_tail, &mut recovered)?;
    }
    recovered.report.segment_count = recovered.segments.len();
    recovered.report.record_count = recovered.records.len();
    // Whatever is returned must be durable before anyone acts on it: after a
    // process crash the recovered tail may still sit only in the page cache.
    let current = &recovered.segments[last].name;
    storage
        .sync_file(current)
        .map_err(|error| WalError::io("sync_file", current, error))?;
    Ok(recovered)
}

fn check_version_file<S: Storage>(
    storage: &mut S,
    names: &[String],
    has_segments: bool,
) -> Result<(), WalError> {
    if !names.iter().any(|name| name == VERSION_FILE_NAME) {
        if has_segments {
            return Err(WalError::corrupt(
                VERSION_FILE_NAME,
                0,
                "version file missing from a data directory that holds WAL segments",
            ));
        }
        // A fresh directory: the version file goes first, so that any directory
        // with segments also has it.
        return atomic_file::install(
            storage,
            VERSION_FILE_NAME,
            &DATA_DIRECTORY_FORMAT_VERSION.to_le_bytes(),
        );
    }
    let contents = atomic_file::read(storage, VERSION_FILE_NAME)?;
    let bytes: [u8; 4] = contents.as_slice().try_into().map_err(|_| {
        WalError::corrupt(
            VERSION_FILE_NAME,
            0,
            "version file does not hold a 4-byte version",
        )
    })?;
    let found = u32::from_le_bytes(bytes);
    if !DATA_DIRECTORY_FORMAT_VERSIONS_SUPPORTED.contains(&found) {
        return Err(WalError::UnsupportedVersion {
            file: VERSION_FILE_NAME.to_owned(),
            found,
            supported: DATA_DIRECTORY_FORMAT_VERSIONS_SUPPORTED,
        });
    }
    Ok(())
}

fn remove_temporary_files<S: Storage>(storage: &mut S, names: &[String]) -> Result<(), WalError> {
    let mut removed = false;
    for name in names.iter().filter(|name| name.ends_with(TEMPORARY_SUFFIX)) {
        // Left by a crash during an atomic install: the old version (or none) is
        // still in place under the real name, so this copy is never needed.
        storage
            .remove(name)
            .map_err(|error| WalError::io("remove", name, error))?;
        removed = true;
    }
    if removed {
        storage
            .sync_directory()
            .map_err(|error| WalError::io("sync_directory", "data directory", error))?;
    }
    Ok(())
}

/// Removes the newest segment if its creation was interrupted: no complete,
/// valid header (records are written only after the header is synced, so such a
/// file holds nothing else). Returns whether it did.
fn remove_torn_new_segment<S: Storage>(
    storage: &mut S,
    segment_names: &mut Vec<(u64, String)>,
) -> Result<bool, WalError> {
    let Some((number, name)) = segment_names.last().cloned() else {
        return Ok(false);
    };
    let length = storage
        .file_length(&name)
        .map_err(|error| WalError::io("file_length", &name, error))?;
    if length > SEGMENT_HEADER_BYTES {
        return Ok(false);
    }
    let mut header = vec![0; length as usize];
    storage
        .read_at(&name, 0, &mut header)
        .map_err(|error| WalError::io("read_at", &name, error))?;
    match SegmentHeader::decode(&header) {
        Ok(_) => return Ok(false),
        // A complete header with a valid checksum from a newer format is not torn.
        Err(problem @ HeaderProblem::UnsupportedVersion(_))
            if length == SEGMENT_HEADER_BYTES
                && header[32..36] == crc32c::crc32c(&header[0..32]).to_le_bytes() =>
        {
            return Err(header_error(&name, problem));
        }
        // Anything else in a file this short is a torn header write (tearing can
        // leave any prefix, hence even a bad magic or version).
        Err(_) => {}
    }
    if segment_names.len() == 1 && number != 1 {
        return Err(WalError::corrupt(
            &name,
            0,
            "the only segment has a damaged header",
        ));
    }
    storage
        .remove(&name)
        .map_err(|error| WalError::io("remove", &name, error))?;
    // The removal must be durable before a segment with this number is created
    // again, or a crash could bring the torn file back in its place.
    storage
        .sync_directory()
        .map_err(|error| WalError::io("sync_directory", &name, error))?;
    segment_names.pop();
    Ok(true)
}

fn create_first_segment<S: Storage>(
    storage: &mut S,
    report: RecoveryReport,
) -> Result<Recovered, WalError> {
    let info = create_segment(storage, 1, 1)?;
    Ok(Recovered {
        segments: vec![info],
        last_segment_length_bytes: SEGMENT_HEADER_BYTES,
        next_position: 1,
        records: Vec::new(),
        report: RecoveryReport {
            segment_count: 1,
            ..report
        },
    })
}

/// Creates segment `number` holding only its header; durable on return.
pub(crate) fn create_segment<S: Storage>(
    storage: &mut S,
    number: u64,
    first_position: u64,
) -> Result<SegmentInfo, WalError> {
    let name = segment_name(number);
    let header = SegmentHeader {
        segment_number: number,
        first_position,
    };
    storage
        .create(&name)
        .map_err(|error| WalError::io("create", &name, error))?;
    storage
        .write_at(&name, 0, &header.encode())
        .map_err(|error| WalError::io("write_at", &name, error))?;
    // The header is synced before the directory entry, and before any record is
    // written: a segment found after a crash either has a valid header or holds
    // nothing else (recovery then removes it).
    storage
        .sync_file(&name)
        .map_err(|error| WalError::io("sync_file", &name, error))?;
    // Records synced into a file whose directory entry is not durable would vanish
    // with it.
    storage
        .sync_directory()
        .map_err(|error| WalError::io("sync_directory", &name, error))?;
    Ok(SegmentInfo {
        number,
        first_position,
        name,
    })
}

fn check_contiguous(segment_names: &[(u64, String)]) -> Result<(), WalError> {
    for pair in segment_names.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(WalError::corrupt(
                &pair[1].1,
                0,
                format!("segment {} is missing before this one", pair[0].0 + 1),
            ));
        }
    }
    Ok(())
}

fn header_error(name: &str, problem: HeaderProblem) -> WalError {
    match problem {
        HeaderProblem::UnsupportedVersion(found) => WalError::UnsupportedVersion {
            file: name.to_owned(),
            found,
            supported: SEGMENT_FORMAT_VERSIONS_SUPPORTED,
        },
        HeaderProblem::BadMagic => WalError::corrupt(name, 0, "not a WAL segment (bad magic)"),
        HeaderProblem::Truncated => WalError::corrupt(name, 0, "segment header cut short"),
        HeaderProblem::Damaged => WalError::corrupt(name, 0, "segment header checksum mismatch"),
    }
}

/// Reads one segment into `recovered`, truncating a torn tail if allowed.
fn recover_segment<S: Storage>(
    storage: &mut S,
    number: u64,
    name: &str,
    may_have_torn_tail: bool,
    recovered: &mut Recovered,
) -> Result<(), WalError> {
    let bytes = storage
        .read_all(name, WAL_SEGMENT_BYTES_MAX)
        .map_err(|error| WalError::io("read_all", name, error))?;
    let header = SegmentHeader::decode(&bytes).map_err(|problem| header_error(name, problem))?;
    if header.segment_number != number {
        return Err(WalError::corrupt(
            name,
            16,
            "segment number differs from the file name",
        ));
    }
    let expected_first = if recovered.segments.is_empty() {
        header.first_position
    } else {
        recovered.next_position
    };
    if header.first_position != expected_first || header.first_position == 0 {
        return Err(WalError::corrupt(
            name,
            24,
            format!(
                "segment starts at position {}, expected {expected_first}",
                header.first_position
            ),
        ));
    }
    let scan = scan_segment(&bytes, number, header.first_position);
    let length = bytes.len() as u64;
    if scan.committed_end < length {
        check_tail(name, &bytes, &scan, may_have_torn_tail)?;
        // Torn tail: never acknowledged. Cut it off durably now, so that stale
        // bytes cannot reappear behind records appended later.
        storage
            .truncate(name, scan.committed_end)
            .and_then(|()| storage.sync_file(name))
            .map_err(|error| WalError::io("truncate", name, error))?;
        recovered.report.truncated_bytes += length - scan.committed_end;
    }
    recovered.segments.push(SegmentInfo {
        number,
        first_position: header.first_position,
        name: name.to_owned(),
    });
    recovered.next_position = scan.next_position;
    recovered.last_segment_length_bytes = scan.committed_end;
    recovered.records.extend(scan.records);
    Ok(())
}

/// Decides whether the bytes after the last vouched batch are a torn tail (fine)
/// or corruption (error).
fn check_tail(
    name: &str,
    bytes: &[u8],
    scan: &SegmentScan,
    may_have_torn_tail: bool,
) -> Result<(), WalError> {
    let (offset, detail) = match &scan.damage {
        Some((offset, detail)) => (*offset, *detail),
        None => (scan.committed_end, "records without a commit marker"),
    };
    if !may_have_torn_tail {
        return Err(WalError::corrupt(
            name,
            offset,
            format!("{detail}, in a segment that was complete and synced before the next began"),
        ));
    }
    if let Some((marker_offset, marker)) = durable_marker_after(bytes, offset, scan.next_position) {
        return Err(WalError::corrupt(
            name,
            offset,
            format!(
                "{detail}, but the commit marker at offset {marker_offset} shows every position \
                 up to {} was durable",
                marker.durable_position_before
            ),
        ));
    }
    Ok(())
}

/// The first intact commit marker at or after `offset` proving that position
/// `first_unvouched_position` had been synced.
fn durable_marker_after(
    bytes: &[u8],
    offset: u64,
    first_unvouched_position: u64,
) -> Option<(u64, CommitMarker)> {
    let mut candidate = offset.next_multiple_of(RECORD_ALIGNMENT_BYTES);
    while candidate < bytes.len() as u64 {
        if let Some(marker) = commit_marker_at(bytes, candidate) {
            if marker.durable_position_before >= first_unvouched_position {
                return Some((candidate, marker));
            }
        }
        candidate += RECORD_ALIGNMENT_BYTES;
    }
    None
}

struct SegmentScan {
    records: Vec<Record>,
    /// End of the last batch vouched for by an intact, matching commit marker.
    committed_end: u64,
    /// The position after the last vouched record.
    next_position: u64,
    /// Where parsing stopped on a damaged record or mismatched marker, and why.
    damage: Option<(u64, &'static str)>,
}

/// Parses records from the header on, keeping whole batches closed by a marker.
fn scan_segment(bytes: &[u8], segment_number: u64, first_position: u64) -> SegmentScan {
    let mut scan = SegmentScan {
        records: Vec::new(),
        committed_end: SEGMENT_HEADER_BYTES,
        next_position: first_position,
        damage: None,
    };
    let mut pending: Vec<(u64, &[u8])> = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset < bytes.len() as u64 {
        match parse_record(bytes, offset) {
            Err(reason) => {
                scan.damage = Some((offset, reason));
                break;
            }
            Ok((ParsedRecord::Data(payload), next)) => {
                if pending.len() >= WAL_GROUP_COMMIT_RECORDS_MAX {
                    scan.damage = Some((offset, "batch holds more records than allowed"));
                    break;
                }
                pending.push((offset, payload));
                offset = next;
            }
            Ok((ParsedRecord::Commit(marker), next)) => {
                let start = scan.committed_end;
                let expected = CommitMarker {
                    batch_first_position: scan.next_position,
                    batch_record_count: pending.len() as u32,
                    batch_checksum: crc32c::crc32c(&bytes[start as usize..offset as usize]),
                    batch_start_offset: start,
                    durable_position_before: marker.durable_position_before,
                };
                if marker != expected
                    || pending.is_empty()
                    || marker.durable_position_before >= scan.next_position
                {
                    scan.damage = Some((offset, "commit marker does not match its batch"));
                    break;
                }
                for (record_offset, payload) in pending.drain(..) {
                    scan.records.push(Record {
                        position: Position(scan.next_position),
                        payload: payload.to_vec(),
                        segment_number,
                        offset: record_offset,
                    });
                    scan.next_position += 1;
                }
                scan.committed_end = next;
                offset = next;
            }
        }
    }
    scan
}
