//! The byte format of a [`Checkpoint`] (specified in `docs/checkpoints.md`).
//!
//! Every integer is little-endian. The decoder checks the crc32c over the whole
//! encoding before it reads a field, then checks every count and length against
//! its limit and against the bytes that remain before it allocates anything: bad
//! input is an error, never a panic or a large allocation.

use bytes::{BufMut, Bytes, BytesMut};
use understudy_pair::{Lsn, Oseq, Output, Stream};
use understudy_types::limits::{
    GUEST_ASYNCIFY_STACK_BYTES_MAX, GUEST_CHECKPOINT_EXTRA_BYTES_MAX, GUEST_CHECKPOINT_GLOBALS_MAX,
    GUEST_CHECKPOINT_OUTPUTS_MAX, GUEST_CHECKPOINT_OUTPUT_BYTES_MAX,
    GUEST_CHECKPOINT_STDIN_BYTES_MAX, GUEST_GLOBAL_NAME_BYTES_MAX, GUEST_IO_BYTES_MAX,
};

use crate::checkpoint::{
    Checkpoint, GlobalBits, GlobalValue, GuestPhase, HostSnapshot, StdinBacklog,
};
use crate::pages::CHECKPOINT_PAGE_BYTES;
use crate::unwind::UnwindReason;
use crate::GuestError;

// A checkpoint must be able to carry the whole Asyncify memory.
const _: () =
    assert!(understudy_instrument::ASYNCIFY_MEMORY_BYTES as u64 <= GUEST_ASYNCIFY_STACK_BYTES_MAX);

/// The first bytes of every encoded checkpoint.
const MAGIC: &[u8; 4] = b"USCK";
/// The format version this code writes. Version 2 added the unwound phase (tag 3
/// and its fields); otherwise the two are identical, so version 1 still decodes.
const FORMAT_VERSION: u16 = 2;
/// The first format version, still read.
const FORMAT_VERSION_UNWOUND_UNKNOWN: u16 = 1;
/// Magic, version and flags, then the trailing crc32c: the least an encoding holds.
const FRAME_BYTES_MIN: usize = 4 + 2 + 1 + 4;
const FLAG_FULL: u8 = 1;

impl Checkpoint {
    /// The encoding: header, memory pages, globals, host state, extra bytes, crc32c.
    pub fn encode(&self) -> Bytes {
        let mut buffer = BytesMut::with_capacity(self.page_bytes.len() + 4096);
        buffer.put_slice(MAGIC);
        buffer.put_u16_le(FORMAT_VERSION);
        buffer.put_u8(if self.full { FLAG_FULL } else { 0 });
        buffer.put_u64_le(self.number);
        buffer.put_u64_le(self.lsn.0);
        buffer.put_u32_le(self.memory_pages);
        put_count(&mut buffer, self.page_indexes.len());
        for &index in &self.page_indexes {
            buffer.put_u32_le(index);
        }
        buffer.put_slice(&self.page_bytes);
        put_count(&mut buffer, self.globals.len());
        for global in &self.globals {
            put_global(&mut buffer, global);
        }
        put_host(&mut buffer, &self.host);
        put_bytes(&mut buffer, &self.extra);
        let crc = crc32c::crc32c(&buffer);
        buffer.put_u32_le(crc);
        buffer.freeze()
    }

    /// Decodes and validates an encoding made by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, GuestError> {
        if bytes.len() < FRAME_BYTES_MIN {
            return Err(corrupt(format!("{} bytes is too short", bytes.len())));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        // split_at left exactly 4 bytes.
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        if crc32c::crc32c(body) != crc {
            return Err(corrupt("crc32c mismatch".into()));
        }
        let mut reader = Reader { rest: body };
        if reader.take(4)? != MAGIC {
            return Err(corrupt("not a checkpoint (magic)".into()));
        }
        let version = reader.u16()?;
        if version != FORMAT_VERSION && version != FORMAT_VERSION_UNWOUND_UNKNOWN {
            return Err(corrupt(format!("format version {version} is not known")));
        }
        let checkpoint = read_checkpoint(&mut reader, version)?;
        if !reader.rest.is_empty() {
            return Err(corrupt(format!("{} trailing bytes", reader.rest.len())));
        }
        checkpoint.validate_pages()?;
        Ok(checkpoint)
    }
}

fn read_checkpoint(reader: &mut Reader<'_>, version: u16) -> Result<Checkpoint, GuestError> {
    let flags = reader.u8()?;
    if flags & !FLAG_FULL != 0 {
        return Err(corrupt(format!("unknown flags {flags:#x}")));
    }
    let number = reader.u64()?;
    let lsn = Lsn(reader.u64()?);
    let memory_pages = reader.u32()?;
    // Each page takes 4 bytes of index and 4 KiB of contents: bounding the count
    // by the bytes left bounds the allocation below.
    let page_count = reader.count(4 + CHECKPOINT_PAGE_BYTES, usize::MAX)?;
    let mut page_indexes = Vec::with_capacity(page_count);
    for _ in 0..page_count {
        page_indexes.push(reader.u32()?);
    }
    let page_bytes = Bytes::copy_from_slice(reader.take(page_count * CHECKPOINT_PAGE_BYTES)?);
    let global_count = reader.count(4, GUEST_CHECKPOINT_GLOBALS_MAX)?;
    let mut globals = Vec::with_capacity(global_count);
    for _ in 0..global_count {
        globals.push(read_global(reader)?);
    }
    let host = read_host(reader, version)?;
    let extra = reader.bytes(GUEST_CHECKPOINT_EXTRA_BYTES_MAX)?;
    Ok(Checkpoint {
        number,
        full: flags & FLAG_FULL != 0,
        lsn,
        memory_pages,
        page_indexes,
        page_bytes,
        globals,
        host,
        extra,
    })
}

fn corrupt(detail: String) -> GuestError {
    GuestError::CheckpointInvalid(detail)
}

fn put_count(buffer: &mut BytesMut, count: usize) {
    // Every count the encoder writes is bounded far below u32::MAX by a limit.
    buffer.put_u32_le(u32::try_from(count).unwrap_or(u32::MAX));
}

fn put_bytes(buffer: &mut BytesMut, bytes: &[u8]) {
    buffer.put_u64_le(bytes.len() as u64);
    buffer.put_slice(bytes);
}

const GLOBAL_I32: u8 = 0;
const GLOBAL_I64: u8 = 1;
const GLOBAL_F32: u8 = 2;
const GLOBAL_F64: u8 = 3;
const GLOBAL_V128: u8 = 4;

fn put_global(buffer: &mut BytesMut, global: &GlobalValue) {
    // Export names are bounded by GUEST_GLOBAL_NAME_BYTES_MAX when captured.
    buffer.put_u16_le(u16::try_from(global.name.len()).unwrap_or(u16::MAX));
    buffer.put_slice(global.name.as_bytes());
    match global.bits {
        GlobalBits::I32(bits) => {
            buffer.put_u8(GLOBAL_I32);
            buffer.put_u32_le(bits);
        }
        GlobalBits::I64(bits) => {
            buffer.put_u8(GLOBAL_I64);
            buffer.put_u64_le(bits);
        }
        GlobalBits::F32(bits) => {
            buffer.put_u8(GLOBAL_F32);
            buffer.put_u32_le(bits);
        }
        GlobalBits::F64(bits) => {
            buffer.put_u8(GLOBAL_F64);
            buffer.put_u64_le(bits);
        }
        GlobalBits::V128(bits) => {
            buffer.put_u8(GLOBAL_V128);
            buffer.put_u128_le(bits);
        }
    }
}

fn read_global(reader: &mut Reader<'_>) -> Result<GlobalValue, GuestError> {
    let name_length = usize::from(reader.u16()?);
    if name_length > GUEST_GLOBAL_NAME_BYTES_MAX {
        return Err(corrupt(format!("global name of {name_length} bytes")));
    }
    let name = std::str::from_utf8(reader.take(name_length)?)
        .map_err(|_| corrupt("global name is not UTF-8".into()))?
        .to_string();
    let bits = match reader.u8()? {
        GLOBAL_I32 => GlobalBits::I32(reader.u32()?),
        GLOBAL_I64 => GlobalBits::I64(reader.u64()?),
        GLOBAL_F32 => GlobalBits::F32(reader.u32()?),
        GLOBAL_F64 => GlobalBits::F64(reader.u64()?),
        GLOBAL_V128 => GlobalBits::V128(u128::from_le_bytes(reader.array()?)),
        other => return Err(corrupt(format!("global type {other}"))),
    };
    Ok(GlobalValue { name, bits })
}

const PHASE_NOT_STARTED: u8 = 0;
const PHASE_BETWEEN_CALLS: u8 = 1;
const PHASE_EXITED: u8 = 2;
const PHASE_UNWOUND: u8 = 3;
const UNWOUND_IN_STDIN: u8 = 0;
const UNWOUND_ON_REQUEST: u8 = 1;
/// Never in a checkpoint a capture made (a sleeping guest is not quiescent);
/// refused by the decoder.
const UNWOUND_IN_SLEEP: u8 = 2;

fn put_host(buffer: &mut BytesMut, host: &HostSnapshot) {
    let (phase, exit_code) = match host.phase {
        GuestPhase::NotStarted => (PHASE_NOT_STARTED, 0),
        GuestPhase::BetweenCalls => (PHASE_BETWEEN_CALLS, 0),
        GuestPhase::Exited(code) => (PHASE_EXITED, code),
        GuestPhase::Unwound { .. } => (PHASE_UNWOUND, 0),
    };
    buffer.put_u8(phase);
    buffer.put_i32_le(exit_code);
    if let GuestPhase::Unwound { reason, stack } = &host.phase {
        buffer.put_u8(match reason {
            UnwindReason::Stdin => UNWOUND_IN_STDIN,
            UnwindReason::Requested => UNWOUND_ON_REQUEST,
            UnwindReason::Sleep => UNWOUND_IN_SLEEP,
        });
        put_bytes(buffer, stack);
    }
    buffer.put_u64_le(host.next_oseq.0);
    buffer.put_u64_le(host.monotonic_offset_nanos);
    let closed = host
        .closed_fds
        .iter()
        .enumerate()
        .fold(0u8, |bits, (fd, &closed)| bits | (u8::from(closed) << fd));
    buffer.put_u8(closed);
    buffer.put_u64_le(host.stdin_bytes_read);
    buffer.put_u8(u8::from(host.stdin_eof_read));
    buffer.put_u8(u8::from(host.stdin_backlog.closed));
    put_bytes(buffer, &host.stdin_backlog.bytes);
    buffer.put_u64_le(host.fuel_consumed);
    put_count(buffer, host.outputs.len());
    for output in &host.outputs {
        buffer.put_u64_le(output.oseq.0);
        buffer.put_u8(match output.stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        });
        buffer.put_u64_le(output.depends_on.0);
        put_bytes(buffer, &output.bytes);
    }
}

fn read_host(reader: &mut Reader<'_>, version: u16) -> Result<HostSnapshot, GuestError> {
    let phase_tag = reader.u8()?;
    let exit_code = i32::from_le_bytes(reader.array()?);
    let phase = match phase_tag {
        PHASE_NOT_STARTED => GuestPhase::NotStarted,
        PHASE_BETWEEN_CALLS => GuestPhase::BetweenCalls,
        PHASE_EXITED => GuestPhase::Exited(exit_code),
        PHASE_UNWOUND if version >= FORMAT_VERSION => read_unwound(reader)?,
        other => return Err(corrupt(format!("guest phase {other}"))),
    };
    let next_oseq = Oseq(reader.u64()?);
    let monotonic_offset_nanos = reader.u64()?;
    let closed = reader.u8()?;
    if closed > 0b111 {
        return Err(corrupt(format!("closed descriptors {closed:#b}")));
    }
    let closed_fds = [closed & 1 != 0, closed & 2 != 0, closed & 4 != 0];
    let stdin_bytes_read = reader.u64()?;
    let stdin_eof_read = reader.flag()?;
    let backlog_closed = reader.flag()?;
    let backlog_bytes = reader.bytes(GUEST_CHECKPOINT_STDIN_BYTES_MAX)?;
    let fuel_consumed = reader.u64()?;
    let outputs = read_outputs(reader)?;
    Ok(HostSnapshot {
        fuel_consumed,
        phase,
        next_oseq,
        monotonic_offset_nanos,
        closed_fds,
        stdin_bytes_read,
        stdin_eof_read,
        stdin_backlog: StdinBacklog {
            bytes: backlog_bytes,
            closed: backlog_closed,
        },
        outputs,
    })
}

fn read_unwound(reader: &mut Reader<'_>) -> Result<GuestPhase, GuestError> {
    let reason = match reader.u8()? {
        UNWOUND_IN_STDIN => UnwindReason::Stdin,
        UNWOUND_ON_REQUEST => UnwindReason::Requested,
        UNWOUND_IN_SLEEP => {
            return Err(corrupt(
                "a guest unwound in a sleep (its deadlines are not in checkpoints)".into(),
            ))
        }
        other => return Err(corrupt(format!("unwind reason {other}"))),
    };
    let stack = reader.bytes(GUEST_ASYNCIFY_STACK_BYTES_MAX)?;
    Ok(GuestPhase::Unwound { reason, stack })
}

fn read_outputs(reader: &mut Reader<'_>) -> Result<Vec<Output>, GuestError> {
    // oseq, stream, depends_on and length: 25 bytes at least per output.
    let count = reader.count(25, GUEST_CHECKPOINT_OUTPUTS_MAX)?;
    let mut outputs = Vec::with_capacity(count);
    let mut total_bytes = 0u64;
    for _ in 0..count {
        let oseq = Oseq(reader.u64()?);
        let stream = match reader.u8()? {
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            other => return Err(corrupt(format!("output stream {other}"))),
        };
        let depends_on = Lsn(reader.u64()?);
        let bytes = reader.bytes(GUEST_IO_BYTES_MAX as u64)?;
        total_bytes += bytes.len() as u64;
        if total_bytes > GUEST_CHECKPOINT_OUTPUT_BYTES_MAX {
            return Err(corrupt(format!("more than {total_bytes} output bytes")));
        }
        outputs.push(Output {
            oseq,
            stream,
            bytes,
            depends_on,
        });
    }
    Ok(outputs)
}

/// Reads fields off the front of a slice, never past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], GuestError> {
        if length > self.rest.len() {
            return Err(corrupt(format!(
                "truncated: {length} bytes wanted, {} left",
                self.rest.len()
            )));
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GuestError> {
        // take() returned exactly N bytes.
        Ok(self.take(N)?.try_into().unwrap_or([0; N]))
    }

    fn u8(&mut self) -> Result<u8, GuestError> {
        Ok(self.array::<1>()?[0])
    }

    fn flag(&mut self) -> Result<bool, GuestError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("flag byte {other}"))),
        }
    }

    fn u16(&mut self) -> Result<u16, GuestError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, GuestError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GuestError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A u32 count of items of at least `item_bytes_min` bytes each, at most
    /// `limit`, and no more than the bytes left could hold.
    fn count(&mut self, item_bytes_min: usize, limit: usize) -> Result<usize, GuestError> {
        let count = self.u32()? as usize;
        if count > limit || count > self.rest.len() / item_bytes_min {
            return Err(corrupt(format!(
                "count {count} exceeds the limit or the input"
            )));
        }
        Ok(count)
    }

    /// A u64 length, at most `limit`, then that many bytes.
    fn bytes(&mut self, limit: u64) -> Result<Bytes, GuestError> {
        let length = self.u64()?;
        if length > limit {
            return Err(corrupt(format!("{length} bytes exceed the limit {limit}")));
        }
        // length <= limit, which fits in usize on every supported target.
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        Ok(Bytes::copy_from_slice(self.take(length)?))
    }
}
