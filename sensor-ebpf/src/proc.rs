//! Per-process state: counters (per CPU) and identity (written once, when the
//! kernel first counts the process).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{HashMap, LruPerCpuHashMap, PerCpuHashMap},
};
use sensor_common::{counter, maps, ProcCounters, ProcInfo, OVERFLOW_TGID};

use crate::{
    counters,
    kernel::{current_task, off, read, read_ptr},
    slots::slot_of,
};

#[map(name = "PROC_STATS")]
static PROC_STATS: PerCpuHashMap<u32, ProcCounters> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_PROCS, 0);

#[map(name = "PROC_SPILL")]
static PROC_SPILL: LruPerCpuHashMap<u32, ProcCounters> =
    LruPerCpuHashMap::with_max_entries(maps::proc_spill_size(maps::DEFAULT_MAX_PROCS), 0);

#[map(name = "PROC_INFO")]
pub(crate) static PROC_INFO: HashMap<u32, ProcInfo> = HashMap::with_max_entries(
    maps::DEFAULT_MAX_PROCS + maps::proc_spill_size(maps::DEFAULT_MAX_PROCS),
    0,
);

/// The thread-group id of the current task.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// This CPU's counters of the current process, created on first sight
/// (in `PROC_STATS`, or in the LRU spill when it is full, so a new process
/// keeps its own counters and identity under pressure).
#[inline(always)]
pub fn counters_of(tgid: u32) -> Result<*mut ProcCounters, u32> {
    // The value is only built (and the clock read) when an entry is made.
    let slot = slot_of!(
        PROC_STATS,
        PROC_SPILL,
        tgid,
        ProcCounters {
            // SAFETY: a helper without preconditions.
            born_ns: unsafe { bpf_ktime_get_ns() },
            ..ProcCounters::default()
        },
        counter::PROC_MAP_FULL
    );
    if let Some((c, created)) = slot {
        if created {
            record_identity(tgid);
        }
        return Ok(c);
    }
    // Both full and no spill slot: the entry user space reserved keeps the
    // bytes in the totals, without an identity.
    PROC_STATS
        .get_ptr_mut(OVERFLOW_TGID)
        .ok_or(counter::PROC_MAP_FULL)
}

#[inline(always)]
fn record_identity(tgid: u32) {
    let task = current_task();
    let uid_gid = bpf_get_current_uid_gid();
    let info = ProcInfo {
        tgid,
        ppid: parent_tgid(task).unwrap_or(0),
        sid: session_id(task).unwrap_or(0),
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        flags: 0,
        // SAFETY: helpers without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        first_seen_ns: unsafe { bpf_ktime_get_ns() },
        exit_ns: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if PROC_INFO.insert(tgid, info, 0).is_err() {
        counters::bump(counter::INFO_MAP_FULL);
    }
}

/// After `setsid()` or `execve()`: the session of a process already
/// counted as it is now and, on exec, its command name, cgroup and
/// credentials too.
#[inline(always)]
pub fn refresh_identity(tgid: u32, exec: bool) {
    let Some(info) = PROC_INFO.get_ptr_mut(tgid) else {
        return;
    };
    let sid = session_id(current_task()).unwrap_or(0);
    // SAFETY: a map value; a racing reader sees the old or the new value.
    unsafe {
        (*info).sid = sid;
        if exec {
            if let Ok(name) = bpf_get_current_comm() {
                (*info).comm = name;
            }
            (*info).cgroup_id = bpf_get_current_cgroup_id();
            let uid_gid = bpf_get_current_uid_gid();
            (*info).uid = uid_gid as u32;
            (*info).gid = (uid_gid >> 32) as u32;
        }
    }
}

#[inline(always)]
fn parent_tgid(task: *const u8) -> Result<u32, u32> {
    let parent = read_ptr(task, off!(task_real_parent))?;
    read::<u32>(parent, off!(task_tgid))
}

/// `task->signal->pids[PIDTYPE_SID]->numbers[0].nr`
#[inline(always)]
fn session_id(task: *const u8) -> Result<u32, u32> {
    let signal = read_ptr(task, off!(task_signal))?;
    let pid = read_ptr(signal, off!(signal_sid_pid))?;
    if pid.is_null() {
        return Ok(0);
    }
    read::<u32>(pid, off!(pid_nr))
}
