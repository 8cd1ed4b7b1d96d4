//! Processes: per-process counters, identities and what they executed.

pub mod exec;
pub mod identity;
pub mod stats;
