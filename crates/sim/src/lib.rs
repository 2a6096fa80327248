//! The deterministic simulator: whole understudy clusters in one thread, from one
//! seed.
//!
//! A run builds N nodes of the real Raft core ([`understudy_raft`]) over the real
//! Raft log store ([`understudy_raft_log`]) on simulated disks
//! ([`understudy_wal::SimDisk`]), connects them with a simulated network, and
//! drives everything from one event queue ordered by virtual time:
//!
//! - [`cluster`] owns the queue, the nodes, the network and the checker;
//! - [`node`] executes one node's Raft commands against its log store and
//!   key-value state machine ([`kv`]);
//! - [`network`] decides loss, duplication, delay and partitions;
//! - [`nemesis`] injects crashes, partitions, clock skew and membership changes;
//! - [`workload`] runs clients and records their history;
//! - [`invariants`] checks safety after every event; [`history`] and
//!   [`linearizability`] check the client history once per run;
//! - [`runner`] runs one seed through workload, liveness and checking, and
//!   [`summary`] runs many seeds on several threads.
//!
//! Nothing here reads a clock or an unseeded random source: the same seed gives
//! the same run, and the [`trace`] hash proves it.

pub mod cluster;
pub mod harness;
pub mod history;
pub mod invariants;
pub mod kv;
pub mod linearizability;
pub mod nemesis;
pub mod network;
pub mod node;
pub mod pairs;
pub mod runner;
pub mod summary;
pub mod trace;
pub mod workload;

#[cfg(test)]
mod unreachable_tests;
