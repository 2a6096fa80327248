//! Deterministic simulator (being written).
pub mod linearizability;
