//! The only place that knows aya: loading and attaching the programs with
//! this kernel's struct offsets, the watch tables, reading and pruning the
//! maps, privileges, and watching the programs for tampering.

pub mod lineage;
pub mod loader;
pub mod offsets;
pub mod privilege;
pub mod tamper;
pub mod watch;
