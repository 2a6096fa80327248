//! The on-disk layout of segments: file header, record header, commit marker.
//! `docs/wal-format.md` specifies it byte by byte; this module is the only code
//! that encodes or decodes it. All integers are little-endian.

use understudy_types::limits::WAL_RECORD_PAYLOAD_BYTES_MAX;

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"USWALSEG";
/// The segment format this build writes.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// The segment formats this build reads.
pub const SEGMENT_FORMAT_VERSIONS_SUPPORTED: &[u32] = &[1];
/// Size of the segment file header; the first record starts right after it.
pub const SEGMENT_HEADER_BYTES: u64 = 40;
/// Every record starts at a multiple of this, so that its first eight bytes (checksum
/// and length) never straddle a sector boundary.
pub const RECORD_ALIGNMENT_BYTES: u64 = 8;
/// Size of a record header.
pub const RECORD_HEADER_BYTES: u64 = 16;
/// Size of a commit marker's payload.
pub const COMMIT_PAYLOAD_BYTES: u64 = 40;
/// Size of a whole commit marker record (header and payload; no padding needed).
pub const COMMIT_RECORD_BYTES: u64 = RECORD_HEADER_BYTES + COMMIT_PAYLOAD_BYTES;

const _: () = assert!(SEGMENT_HEADER_BYTES % RECORD_ALIGNMENT_BYTES == 0);
const _: () = assert!(COMMIT_RECORD_BYTES % RECORD_ALIGNMENT_BYTES == 0);
const _: () = assert!(WAL_RECORD_PAYLOAD_BYTES_MAX < u32::MAX as u64);

/// The type byte of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// A caller's payload.
    Data = 1,
    /// Closes a batch and vouches for it; see [`CommitMarker`].
    Commit = 2,
}

/// The decoded segment file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number; also in its file name.
    pub segment_number: u64,
    /// The position of the segment's first record (or of the next record appended,
    /// if it has none yet).
    pub first_position: u64,
}

/// Why a segment header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Shorter than a header: a crash while it was created.
    Truncated,
    /// Not a WAL segment.
    BadMagic,
    /// Written by another format version.
    UnsupportedVersion(u32),
    /// Checksum mismatch or non-zero reserved bytes.
    Damaged,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES as usize] {
        let mut bytes = [0; SEGMENT_HEADER_BYTES as usize];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.segment_number.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.first_position.to_le_bytes());
        let checksum = crc32c::crc32c(&bytes[0..32]);
        bytes[32..36].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Decodes the header at the start of `segment`. The magic and version are
    /// checked before the checksum, so that a future format is reported as such
    /// rather than as damage.
    pub fn decode(segment: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if segment.len() < SEGMENT_HEADER_BYTES as usize {
            return Err(HeaderProblem::Truncated);
        }
        if segment[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::BadMagic);
        }
        let version = read_u32(segment, 8);
        if !SEGMENT_FORMAT_VERSIONS_SUPPORTED.contains(&version) {
            return Err(HeaderProblem::UnsupportedVersion(version));
        }
        let reserved_zero = read_u32(segment, 12) == 0 && read_u32(segment, 36) == 0;
        if read_u32(segment, 32) != crc32c::crc32c(&segment[0..32]) || !reserved_zero {
            return Err(HeaderProblem::Damaged);
        }
        Ok(SegmentHeader {
            segment_number: read_u64(segment, 16),
            first_position: read_u64(segment, 24),
        })
    }
}

/// The payload of a commit marker: which batch it closes and what was durable
/// when that batch was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitMarker {
    /// Position of the batch's first record.
    pub batch_first_position: u64,
    /// Data records in the batch (at least one).
    pub batch_record_count: u32,
    /// CRC32C of the segment bytes from `batch_start_offset` up to the marker.
    pub batch_checksum: u32,
    /// Offset in the segment of the batch's first record.
    pub batch_start_offset: u64,
    /// The highest position whose `fdatasync` had completed when the batch was
    /// written. Recovery uses it to tell a torn tail from corruption.
    pub durable_position_before: u64,
}

impl CommitMarker {
    fn encode(&self) -> [u8; COMMIT_PAYLOAD_BYTES as usize] {
        let mut bytes = [0; COMMIT_PAYLOAD_BYTES as usize];
        bytes[0..8].copy_from_slice(&self.batch_first_position.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.batch_record_count.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.batch_checksum.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.batch_start_offset.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.durable_position_before.to_le_bytes());
        bytes
    }

    fn decode(payload: &[u8]) -> Option<CommitMarker> {
        if payload.len() != COMMIT_PAYLOAD_BYTES as usize || read_u64(payload, 32) != 0 {
            return None;
        }
        Some(CommitMarker {
            batch_first_position: read_u64(payload, 0),
            batch_record_count: read_u32(payload, 8),
            batch_checksum: read_u32(payload, 12),
            batch_start_offset: read_u64(payload, 16),
            durable_position_before: read_u64(payload, 24),
        })
    }
}

/// A record that passed its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParsedRecord<'a> {
    /// A caller's payload.
    Data(&'a [u8]),
    /// A commit marker.
    Commit(CommitMarker),
}

/// The size of a record with `payload_length` bytes of payload, padding included.
pub fn record_bytes(payload_length: u64) -> u64 {
    RECORD_HEADER_BYTES + payload_length.next_multiple_of(RECORD_ALIGNMENT_BYTES)
}

/// Appends one record (header, payload, zero padding) to `buffer`.
pub fn encode_record(buffer: &mut Vec<u8>, record_type: RecordType, payload: &[u8]) {
    assert!(
        payload.len() as u64 <= WAL_RECORD_PAYLOAD_BYTES_MAX,
        "record payload of {} bytes passed the size check",
        payload.len()
    );
    assert!(
        buffer.len() as u64 % RECORD_ALIGNMENT_BYTES == 0,
        "records start aligned"
    );
    let mut header = [0u8; RECORD_HEADER_BYTES as usize];
    header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8] = record_type as u8;
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&header[4..]), payload);
    header[0..4].copy_from_slice(&checksum.to_le_bytes());
    buffer.extend_from_slice(&header);
    buffer.extend_from_slice(payload);
    let padded_length = buffer
        .len()
        .next_multiple_of(RECORD_ALIGNMENT_BYTES as usize);
    buffer.resize(padded_length, 0);
}

/// Appends a commit marker record to `buffer`.
pub fn encode_commit(buffer: &mut Vec<u8>, marker: &CommitMarker) {
    encode_record(buffer, RecordType::Commit, &marker.encode());
}

/// Parses the record at `offset` of `segment`; returns it and the offset of the
/// next record, or why it is not an intact record.
pub fn parse_record(segment: &[u8], offset: u64) -> Result<(ParsedRecord<'_>, u64), &'static str> {
    assert!(
        offset % RECORD_ALIGNMENT_BYTES == 0,
        "records start aligned"
    );
    let available = (segment.len() as u64).saturating_sub(offset);
    if available < RECORD_HEADER_BYTES {
        return Err("record header cut short by the end of the file");
    }
    let start = offset as usize;
    let header = &segment[start..start + RECORD_HEADER_BYTES as usize];
    let payload_length = u64::from(read_u32(header, 4));
    if payload_length > WAL_RECORD_PAYLOAD_BYTES_MAX {
        return Err("record length exceeds the limit");
    }
    let record_type = header[8];
    if record_type != RecordType::Data as u8 && record_type != RecordType::Commit as u8 {
        return Err("unknown record type");
    }
    if header[9..16].iter().any(|&byte| byte != 0) {
        return Err("non-zero reserved bytes in record header");
    }
    let length = record_bytes(payload_length);
    if available < length {
        return Err("record cut short by the end of the file");
    }
    let payload_start = start + RECORD_HEADER_BYTES as usize;
    let payload = &segment[payload_start..payload_start + payload_length as usize];
    let checksum = crc32c::crc32c_append(crc32c::crc32c(&header[4..]), payload);
    if checksum != read_u32(header, 0) {
        return Err("record checksum mismatch");
    }
    let record = if record_type == RecordType::Data as u8 {
        ParsedRecord::Data(payload)
    } else {
        let marker = CommitMarker::decode(payload).ok_or("malformed commit marker")?;
        ParsedRecord::Commit(marker)
    };
    Ok((record, offset + length))
}

/// Whether an intact commit marker starts at `offset`. Cheap (a marker has a fixed
/// size), so recovery can probe every aligned offset of a damaged tail.
pub fn commit_marker_at(segment: &[u8], offset: u64) -> Option<CommitMarker> {
    let end = offset.checked_add(COMMIT_RECORD_BYTES)?;
    if end > segment.len() as u64 || segment[offset as usize + 8] != RecordType::Commit as u8 {
        return None;
    }
    match parse_record(segment, offset) {
        Ok((ParsedRecord::Commit(marker), _)) => Some(marker),
        _ => None,
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_aligned() {
        let mut buffer = Vec::new();
        encode_record(&mut buffer, RecordType::Data, b"hello");
        assert_eq!(buffer.len() as u64, record_bytes(5));
        assert_eq!(buffer.len() % 8, 0);
        let marker = CommitMarker {
            batch_first_position: 7,
            batch_record_count: 1,
            batch_checksum: crc32c::crc32c(&buffer),
            batch_start_offset: 0,
            durable_position_before: 6,
        };
        encode_commit(&mut buffer, &marker);
        let (first, next) = parse_record(&buffer, 0).expect("intact data record");
        assert_eq!(first, ParsedRecord::Data(b"hello"));
        let (second, end) = parse_record(&buffer, next).expect("intact marker");
        assert_eq!(second, ParsedRecord::Commit(marker));
        assert_eq!(end, buffer.len() as u64);
        assert_eq!(commit_marker_at(&buffer, next), Some(marker));
        assert_eq!(commit_marker_at(&buffer, 0), None);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buffer = Vec::new();
        encode_record(&mut buffer, RecordType::Data, b"some payload bytes");
        let payload_end = RECORD_HEADER_BYTES as usize + 18;
        for bit in 0..payload_end * 8 {
            let mut damaged = buffer.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                parse_record(&damaged, 0).is_err(),
                "flip of bit {bit} undetected"
            );
        }
    }

    #[test]
    fn zeroed_space_is_not_a_record() {
        assert_eq!(parse_record(&[0; 64], 0), Err("unknown record type"));
        assert_eq!(commit_marker_at(&[0; 64], 0), None);
    }

    #[test]
    fn segment_header_checks_magic_version_and_checksum() {
        let header = SegmentHeader {
            segment_number: 3,
            first_position: 99,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        assert_eq!(
            SegmentHeader::decode(&bytes[..39]),
            Err(HeaderProblem::Truncated)
        );
        let mut future = bytes;
        future[8] = 9;
        assert_eq!(
            SegmentHeader::decode(&future),
            Err(HeaderProblem::UnsupportedVersion(9))
        );
        let mut damaged = bytes;
        damaged[20] ^= 4;
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderProblem::Damaged));
        let mut foreign = bytes;
        foreign[0] = b'X';
        assert_eq!(
            SegmentHeader::decode(&foreign),
            Err(HeaderProblem::BadMagic)
        );
    }
}
