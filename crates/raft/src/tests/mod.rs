//! Tests of whole-node and whole-cluster behaviour. Each test's doc comment names
//! the section of the Raft paper (or of Ongaro's dissertation) it checks.

mod election;
mod figure8;
mod fixtures;
mod harness;
mod membership;
mod random;
mod read_index;
mod replication;
mod snapshot;
mod transfer;
mod unreachable;
