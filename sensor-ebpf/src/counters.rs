//! What the programs could not count, and why: one per-CPU slot per reason
//! (after tetragon's error metrics), summed by user space into
//! `sensor_lost_events_total{reason}`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use sensor_common::counter;

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn bump(reason: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot, written only by programs on this CPU.
        unsafe { *slot += 1 };
    }
}
