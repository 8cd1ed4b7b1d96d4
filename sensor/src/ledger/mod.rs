//! The ledger of rule `slow_exfil` kept across restarts (`--state-dir`).

pub mod store;
