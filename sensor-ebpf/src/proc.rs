//! Per-process state: counters (per CPU) and identity (written once, when the
//! kernel first counts the process).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::{HashMap, PerCpuHashMap},
};
use sensor_common::{counter, maps, ProcCounters, ProcInfo, OVERFLOW_TGID};

use crate::{
    counters,
    kernel::{current_task, off, read, read_ptr},
};

#[map(name = "PROC_STATS")]
static PROC_STATS: PerCpuHashMap<u32, ProcCounters> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_PROCS, 0);

#[map(name = "PROC_INFO")]
pub(crate) static PROC_INFO: HashMap<u32, ProcInfo> =
    HashMap::with_max_entries(maps::DEFAULT_MAX_PROCS, 0);

/// The thread-group id of the current task.
#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// This CPU's counters of the current process, created on first sight.
#[inline(always)]
pub fn counters_of(tgid: u32) -> Result<*mut ProcCounters, u32> {
    if let Some(c) = PROC_STATS.get_ptr_mut(tgid) {
        return Ok(c);
    }
    // First sight: a zeroed entry (NOEXIST: another CPU may have raced us),
    // then the identity user space labels it with.
    if PROC_STATS
        .insert(tgid, ProcCounters::default(), BPF_NOEXIST as u64)
        .is_ok()
    {
        record_identity(tgid);
    }
    if let Some(c) = PROC_STATS.get_ptr_mut(tgid) {
        return Ok(c);
    }
    // Full: the entry user space reserved keeps the bytes in the totals;
    // the lost per-process detail is counted.
    counters::bump(counter::PROC_MAP_FULL);
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
