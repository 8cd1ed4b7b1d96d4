//! Per-process counters (per CPU), created when the kernel first counts a
//! process, which is when its identity is recorded.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{LruPerCpuHashMap, PerCpuArray, PerCpuHashMap},
};
use sensor_common::{maps, Loss, ProcCounters, OVERFLOW_TGID};

use super::identity;
use crate::runtime::slot::slot_of;

#[map(name = "PROC_STATS")]
static PROC_STATS: PerCpuHashMap<u32, ProcCounters> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_PROCS, 0);

#[map(name = "PROC_SPILL")]
static PROC_SPILL: LruPerCpuHashMap<u32, ProcCounters> =
    LruPerCpuHashMap::with_max_entries(maps::proc_spill_size(maps::DEFAULT_MAX_PROCS), 0);

/// Room to build a new entry: the 512-byte stack is shared by the whole
/// call chain of a program (and older kernels round each frame up).
#[map(name = "COUNTERS_SCRATCH")]
static COUNTERS_SCRATCH: PerCpuArray<ProcCounters> =
    PerCpuArray::with_max_entries(maps::COUNTERS_SCRATCH_SIZE, 0);

/// A fresh entry, born now, in this CPU's scratch slot (field by field:
/// no struct built on the stack).
#[inline(always)]
fn fresh() -> Option<&'static ProcCounters> {
    let p = COUNTERS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, read right after by the insert.
    unsafe {
        (*p).read_bytes = 0;
        (*p).read_ops = 0;
        (*p).watched_read_bytes = 0;
        (*p).watched_read_ops = 0;
        (*p).sent_bytes = 0;
        (*p).send_ops = 0;
        (*p).distinct_read_bytes = 0;
        (*p).derived_read_bytes = 0;
        (*p).relayed_bytes = 0;
        (*p).born_ns = bpf_ktime_get_ns();
        Some(&*p)
    }
}

/// The thread-group id of the current task.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// This CPU's counters of the current process, created on first sight
/// (in `PROC_STATS`, or in the LRU spill when it is full, so a new process
/// keeps its own counters and identity under pressure).
#[inline(always)]
pub fn counters_of(tgid: u32) -> Result<*mut ProcCounters, Loss> {
    // The value is only built (and the clock read) when an entry is made.
    // Both full and no spill slot: the entry user space reserved keeps the
    // bytes in the totals, without an identity.
    let (c, created) = slot_of!(
        PROC_STATS,
        tgid,
        fresh().ok_or(Loss::ProcMapFull)?,
        spill: PROC_SPILL,
        full: Loss::ProcMapFull,
        overflow: OVERFLOW_TGID,
    )
    .ok_or(Loss::ProcMapFull)?;
    if created {
        identity::record(tgid);
    }
    Ok(c)
}
