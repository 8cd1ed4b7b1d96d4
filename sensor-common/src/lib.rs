//! Types shared by the eBPF programs and user space.
//!
//! Everything here crosses the kernel/user boundary: `#[repr(C)]`, explicit
//! padding, integers instead of `bool`/enums, and a size assertion each.
#![no_std]

pub mod maps;
pub mod offsets;
pub mod types;

pub use offsets::Offsets;
pub use types::*;
