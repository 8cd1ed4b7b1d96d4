//! What the programs could not count, and why: one per-CPU slot per reason
//! (after tetragon's error metrics), summed by user space into
//! `sensor_lost_events_total{reason}`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use sensor_common::counter;

use super::atomic;

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn bump(reason: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(reason) {
        // A per-CPU slot; atomic in case two tasks on this CPU interleave.
        atomic::add(slot, 1);
    }
}
