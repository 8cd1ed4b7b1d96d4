//! Adds to counters in map values. Per-CPU slots are only touched on their
//! own CPU, but on a kernel with full preemption two tasks on one CPU can
//! interleave a plain read-modify-write and lose an increment: the add is
//! one atomic instruction instead (`lock xadd`, cheap on a CPU-local line).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

#[inline(always)]
pub fn add(dst: *mut u64, value: u64) {
    // SAFETY: `dst` points into a map value the caller just looked up.
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, value);
    }
}
