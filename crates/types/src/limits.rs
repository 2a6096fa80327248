//! Every limit of the system, in one place.
//!
//! Names end in their unit. A limit is checked before anything is allocated on its
//! account: a decoder reads a length, compares it with the limit here, and only then
//! allocates. Relationships between limits are asserted at compile time at the end
//! of this file, so changing one number cannot silently break another.

/// Largest payload of one WAL record (header excluded).
pub const WAL_RECORD_PAYLOAD_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// A WAL segment is closed and a new one started once it grows past this size.
pub const WAL_SEGMENT_BYTES_TARGET: u64 = 64 * 1024 * 1024;
/// Largest WAL segment file accepted when reading; anything larger is corruption.
pub const WAL_SEGMENT_BYTES_MAX: u64 =
    WAL_SEGMENT_BYTES_TARGET + WAL_RECORD_PAYLOAD_BYTES_MAX + 4096;
/// Records written between two `fdatasync` calls by group commit, at most.
pub const WAL_GROUP_COMMIT_RECORDS_MAX: usize = 4096;
/// Bytes one group-commit batch (its records, their padding and its commit marker)
/// may occupy, at most. A batch is closed early once the next record would pass it.
pub const WAL_BATCH_BYTES_MAX: u64 = WAL_RECORD_PAYLOAD_BYTES_MAX + 4096;
/// Longest file name a `Storage` implementation accepts (names are flat: one
/// directory, no separators).
pub const STORAGE_FILE_NAME_BYTES_MAX: usize = 128;
/// Largest snapshot or metadata file installed atomically.
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Largest command carried by one Raft log entry.
pub const RAFT_ENTRY_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Entries carried by one AppendEntries message, at most.
pub const RAFT_APPEND_ENTRIES_MAX: usize = 256;
/// Payload bytes carried by one AppendEntries message, at most (a single larger
/// entry is still sent alone).
pub const RAFT_APPEND_BYTES_MAX: u64 = 1024 * 1024;
/// AppendEntries messages in flight to one follower, at most (pipelining depth).
pub const RAFT_INFLIGHT_APPENDS_MAX: usize = 16;
/// Bytes of snapshot data carried by one InstallSnapshot chunk.
pub const RAFT_SNAPSHOT_CHUNK_BYTES_MAX: u64 = 256 * 1024;
/// Proposals a leader accepts that are not yet committed, at most (backpressure).
pub const RAFT_UNCOMMITTED_ENTRIES_MAX: usize = 65_536;
/// Pending ReadIndex requests on one leader, at most.
pub const RAFT_PENDING_READS_MAX: usize = 65_536;
/// Voters plus learners in one Raft group, at most.
pub const RAFT_MEMBERS_MAX: usize = 64;
/// Messages a Raft node holds back until its persistence catches up (granted
/// votes, acknowledgements), at most; beyond it new ones are dropped, which is
/// safe because the peers retransmit.
pub const RAFT_GATED_MESSAGES_MAX: usize = 4096;
/// How far (in entries) a learner's match index may trail the leader's last index
/// for `PromoteLearner` to be accepted; a learner further behind would stall
/// commits as soon as it counts toward the quorum.
pub const RAFT_LEARNER_PROMOTION_LAG_ENTRIES_MAX: u64 = 64;

/// Operations in one history given to the linearizability checker, at most. The
/// checker numbers operations and list entries (two per operation) with `u32`.
pub const LINEARIZABILITY_HISTORY_OPERATIONS_MAX: usize = 16 * 1024 * 1024;

/// Longest key of the key-value store.
pub const KV_KEY_BYTES_MAX: usize = 4096;
/// Largest value of the key-value store.
pub const KV_VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Compares, and operations in each branch, of one key-value transaction, at most.
pub const KV_TXN_OPERATIONS_MAX: usize = 128;
/// Items returned by one key-value range read or history query, at most.
pub const KV_RANGE_LIMIT_MAX: usize = 10_000;
/// Longest client id of a key-value client session.
pub const KV_SESSION_CLIENT_ID_BYTES_MAX: usize = 64;
/// Bytes of key-value history (earlier versions of keys, for watches) kept at
/// most; beyond it the oldest revisions are compacted automatically, which
/// bounds the state machine's memory and its snapshots.
pub const KV_HISTORY_BYTES_RETAINED_MAX: u64 = 32 * 1024 * 1024;
/// Client sessions kept by the key-value state machine, at most.
pub const KV_SESSIONS_MAX: usize = 10_000;
/// Results of one client's most recent requests kept for retries, at most.
pub const KV_SESSION_RESULTS_RETAINED_MAX: usize = 16;
/// Largest encoded key-value command (it travels in one Raft entry).
pub const KV_COMMAND_BYTES_MAX: u64 = RAFT_ENTRY_BYTES_MAX;

/// Largest JSON request body the HTTP API reads (a transaction, a compaction, a
/// membership change). Twice the command limit leaves room for JSON escaping and
/// base64 of a command that still fits `KV_COMMAND_BYTES_MAX` once decoded.
pub const API_JSON_BODY_BYTES_MAX: u64 = 2 * KV_COMMAND_BYTES_MAX;
/// Concurrent `GET /v1/watch` streams one node serves, at most.
pub const API_WATCHES_MAX: usize = 1024;
/// Events one watch stream fetches from the service per round, at most. Larger
/// than one revision's events (a transaction branch) so every round progresses.
pub const API_WATCH_BATCH_EVENTS_MAX: usize = 512;

/// Longest peer or client address a node records for a member.
pub const NODE_ADDRESS_BYTES_MAX: usize = 256;
/// Largest payload of one frame on the peer transport: an AppendEntries batch may
/// carry `RAFT_APPEND_BYTES_MAX` plus one entry of up to `RAFT_ENTRY_BYTES_MAX`.
pub const PEER_FRAME_BYTES_MAX: u64 = RAFT_APPEND_BYTES_MAX + RAFT_ENTRY_BYTES_MAX + 64 * 1024;
/// Messages queued for one peer lane before new ones are dropped (Raft retransmits).
pub const PEER_SEND_QUEUE_MESSAGES_MAX: usize = 1024;
/// Inputs (peer messages, client requests) queued for a node's Raft driver.
pub const NODE_INPUT_QUEUE_MAX: usize = 16 * 1024;
/// Largest node metadata file (cluster id, node id, boot count).
pub const NODE_METADATA_BYTES_MAX: u64 = 4096;

/// Largest WebAssembly module a guest host accepts (checked before compiling).
pub const GUEST_MODULE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Default linear-memory limit of one guest (its `ResourceLimiter`).
pub const GUEST_MEMORY_BYTES_DEFAULT: usize = 256 * 1024 * 1024;
/// Bytes one guest host call moves at most (one stdin read, one `fd_write`, one
/// slice of `random_get`, one reactor input record); larger requests are cut short
/// (reads, writes) or served in slices (random bytes), as WASI allows.
pub const GUEST_IO_BYTES_MAX: usize = 1024 * 1024;
/// Arguments plus environment entries given to a guest at birth, at most.
pub const GUEST_ARGS_ENV_ENTRIES_MAX: usize = 1024;
/// Bytes of all arguments plus environment entries given to a guest, at most.
pub const GUEST_ARGS_ENV_BYTES_MAX: usize = 64 * 1024;
/// Elements a guest's table may grow to, at most (its `ResourceLimiter`).
pub const GUEST_TABLE_ELEMENTS_MAX: usize = 1_000_000;
/// Subscriptions in one `poll_oneoff` call, at most.
pub const GUEST_POLL_SUBSCRIPTIONS_MAX: usize = 1024;
/// Linear memory of one guest, at most, in any configuration: wasm32's 65,536
/// pages of 64 KiB. A checkpoint claiming more is corrupt.
pub const GUEST_MEMORY_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Exported mutable globals one checkpoint carries, at most.
pub const GUEST_CHECKPOINT_GLOBALS_MAX: usize = 65_536;
/// Longest export name of a global in a checkpoint.
pub const GUEST_GLOBAL_NAME_BYTES_MAX: usize = 1024;
/// Outputs generated and not yet released that one checkpoint carries, at most.
pub const GUEST_CHECKPOINT_OUTPUTS_MAX: usize = 65_536;
/// Bytes of those outputs together, at most.
pub const GUEST_CHECKPOINT_OUTPUT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Stdin bytes arrived and not yet read that one checkpoint carries, at most.
pub const GUEST_CHECKPOINT_STDIN_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The caller's opaque bytes in one checkpoint (pending idempotency keys), at most.
pub const GUEST_CHECKPOINT_EXTRA_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Bytes of a command's unwound call stack (the used part of its Asyncify
/// memory) that one checkpoint carries, at most: the whole Asyncify memory of
/// `understudy-instrument` (16 pages of 64 KiB).
pub const GUEST_ASYNCIFY_STACK_BYTES_MAX: u64 = 1024 * 1024;

/// Bytes of checkpoint data one pair `Checkpoint` message carries, at most: a
/// checkpoint larger than this travels in several chunks.
pub const PAIR_CHECKPOINT_CHUNK_BYTES_MAX: u64 = 256 * 1024;
/// Largest encoded checkpoint of one process a pair ships: a full memory image
/// plus every bounded part of the host state and 64 MiB for globals and framing.
pub const PAIR_CHECKPOINT_BYTES_MAX: u64 = GUEST_MEMORY_BYTES_MAX
    + GUEST_CHECKPOINT_OUTPUT_BYTES_MAX
    + GUEST_CHECKPOINT_STDIN_BYTES_MAX
    + GUEST_CHECKPOINT_EXTRA_BYTES_MAX
    + 64 * 1024 * 1024;

const _: () = assert!(WAL_SEGMENT_BYTES_TARGET < WAL_SEGMENT_BYTES_MAX);
const _: () = assert!(WAL_BATCH_BYTES_MAX + 4096 <= WAL_SEGMENT_BYTES_MAX);
const _: () = assert!(WAL_RECORD_PAYLOAD_BYTES_MAX + 1024 <= WAL_BATCH_BYTES_MAX);
const _: () = assert!(RAFT_ENTRY_BYTES_MAX + 4096 <= WAL_RECORD_PAYLOAD_BYTES_MAX);
const _: () = assert!(RAFT_APPEND_BYTES_MAX <= WAL_RECORD_PAYLOAD_BYTES_MAX);
const _: () = assert!(RAFT_SNAPSHOT_CHUNK_BYTES_MAX <= RAFT_APPEND_BYTES_MAX);
const _: () = assert!(RAFT_INFLIGHT_APPENDS_MAX >= 1);
const _: () = assert!(2 * (LINEARIZABILITY_HISTORY_OPERATIONS_MAX as u64) + 1 < u32::MAX as u64);
const _: () = assert!(KV_COMMAND_BYTES_MAX <= RAFT_ENTRY_BYTES_MAX);
const _: () =
    assert!((KV_KEY_BYTES_MAX + KV_VALUE_BYTES_MAX) as u64 + 1024 <= KV_COMMAND_BYTES_MAX);
const _: () = assert!(API_WATCH_BATCH_EVENTS_MAX > KV_TXN_OPERATIONS_MAX);
const _: () = assert!(API_WATCH_BATCH_EVENTS_MAX <= KV_RANGE_LIMIT_MAX);
const _: () = assert!(API_JSON_BODY_BYTES_MAX >= KV_COMMAND_BYTES_MAX);
const _: () = assert!(KV_COMMAND_BYTES_MAX + 4096 <= PEER_FRAME_BYTES_MAX);
const _: () = assert!(RAFT_SNAPSHOT_CHUNK_BYTES_MAX + 4096 <= PEER_FRAME_BYTES_MAX);
const _: () = assert!(GUEST_IO_BYTES_MAX <= WAL_RECORD_PAYLOAD_BYTES_MAX as usize);
const _: () = assert!(GUEST_MEMORY_BYTES_DEFAULT as u64 <= GUEST_MEMORY_BYTES_MAX);
const _: () = assert!(GUEST_IO_BYTES_MAX as u64 <= GUEST_CHECKPOINT_OUTPUT_BYTES_MAX);
// The 64 MiB of slack in PAIR_CHECKPOINT_BYTES_MAX also covers an unwound stack.
const _: () = assert!(GUEST_ASYNCIFY_STACK_BYTES_MAX <= 16 * 1024 * 1024);
const _: () = assert!(PAIR_CHECKPOINT_CHUNK_BYTES_MAX + 4096 <= PEER_FRAME_BYTES_MAX);
const _: () = assert!(PAIR_CHECKPOINT_CHUNK_BYTES_MAX <= PAIR_CHECKPOINT_BYTES_MAX);
