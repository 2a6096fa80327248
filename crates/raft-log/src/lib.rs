//! Durable Raft state on the WAL (being written).
