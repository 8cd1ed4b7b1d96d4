//! `sensor tail`: the live per-process view, and the agent's socket that
//! feeds it.

pub mod record;
pub mod render;
pub mod server;
