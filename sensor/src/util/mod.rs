//! Small helpers every stage may use: host facts, sizes, fdinfo, time,
//! kernel text.

pub mod fdinfo;
pub mod size;
pub mod sysinfo;
pub mod text;
pub mod time;
