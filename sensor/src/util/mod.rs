//! Small helpers every stage may use: host facts, sizes, fdinfo, time.

pub mod fdinfo;
pub mod size;
pub mod sysinfo;
pub mod time;
