//! Newtype identifiers. Each wraps a `u64`; the newtype keeps a term from being
//! passed where an index is expected.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw integer.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, concat!($prefix, "{}"), self.0)
            }
        }

        impl From<u64> for $name {
            fn from(value: u64) -> Self {
                Self(value)
            }
        }
    };
}

id_type!(
    /// A cluster member. Node ids are assigned by the operator and never reused:
    /// a node that lost its state rejoins under a new id.
    NodeId,
    "n"
);
id_type!(
    /// A Raft group. Group 0 is the coordinator; every Raft message names its group
    /// so that one node can host many groups.
    GroupId,
    "g"
);
id_type!(
    /// A Raft term. Term 0 exists only before the first election.
    Term,
    "t"
);

/// A position in a Raft log. Index 0 is the empty prefix; the first entry has
/// index 1.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The raw integer.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The next index.
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The previous index; the index before 0 is 0.
    pub const fn previous(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "i{}", self.0)
    }
}

impl From<u64> for LogIndex {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_display_with_their_prefix() {
        assert_eq!(NodeId(3).to_string(), "n3");
        assert_eq!(GroupId(0).to_string(), "g0");
        assert_eq!(Term(7).to_string(), "t7");
        assert_eq!(LogIndex(9).to_string(), "i9");
    }

    #[test]
    fn log_index_arithmetic_saturates_at_zero() {
        assert_eq!(LogIndex(0).previous(), LogIndex(0));
        assert_eq!(LogIndex(4).next(), LogIndex(5));
    }
}
