//! Identifiers, limits and small shared types used by every understudy crate.
//!
//! This crate sits at the bottom of the dependency graph: it has no I/O, no clock
//! and no randomness, only plain data. Every `*_max` limit of the system lives in
//! [`limits`], so that the relationships between limits can be asserted in one
//! place at compile time.

pub mod ids;
pub mod limits;

pub use ids::{GroupId, LogIndex, NodeId, Term};
