//! Types shared by the eBPF programs and user space.
//!
//! Everything here crosses the kernel/user boundary: `#[repr(C)]`, explicit
//! padding, integers instead of `bool`/enums, and a size assertion each
//! ([`Loss`] and [`Count`] only name slots: their indices cross, not them).
#![no_std]

pub mod lineage;
pub mod loss;
pub mod maps;
pub mod offsets;
pub mod types;

pub use loss::{Count, Loss, COUNTER_SLOTS};
pub use offsets::Offsets;
pub use types::*;
