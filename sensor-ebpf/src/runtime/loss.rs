//! What the programs could not count, and why: one per-CPU slot per
//! [`Loss`] (after tetragon's error metrics), summed by user space into
//! `sensor_lost_events_total{reason}`; then the [`Count`]s that are not
//! losses.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use sensor_common::{maps, Count, Loss};

use super::atomic;

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(maps::COUNTERS_SIZE, 0);

/// Counts one `reason` on this CPU.
#[inline(always)]
pub fn bump(reason: Loss) {
    add_one(reason.slot());
}

/// Counts one more `count` on this CPU.
#[inline(always)]
pub fn count(count: Count) {
    add_one(count.slot());
}

#[inline(always)]
fn add_one(slot: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(slot) {
        // A per-CPU slot; atomic in case two tasks on this CPU interleave.
        atomic::add(slot, 1);
    }
}
