//! Per-process identity, written once when the kernel first counts the
//! process, kept current across setsid and execve, marked on exit.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_uid_gid, bpf_ktime_get_ns,
    },
    macros::map,
    maps::HashMap,
};
use sensor_common::{maps, Loss, ProcInfo, PROC_EXITED};

use crate::runtime::{
    kernel::{current_task, off, read, read_ptr},
    loss,
};

#[map(name = "PROC_INFO")]
static PROC_INFO: HashMap<u32, ProcInfo> = HashMap::with_max_entries(
    maps::DEFAULT_MAX_PROCS + maps::proc_spill_size(maps::DEFAULT_MAX_PROCS),
    0,
);

/// Records the identity of `tgid`, the current process, just counted for
/// the first time.
#[inline(always)]
pub(super) fn record(tgid: u32) {
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
        loss::bump(Loss::InfoMapFull);
    }
}

/// After `setsid()` or `execve()`: the session of a process already
/// counted as it is now and, on exec, its command name, cgroup and
/// credentials too.
#[inline(always)]
pub fn refresh(tgid: u32, exec: bool) {
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
fn parent_tgid(task: *const u8) -> Result<u32, Loss> {
    let parent = read_ptr(task, off!(task_real_parent))?;
    read::<u32>(parent, off!(task_tgid))
}

/// `task->signal->pids[PIDTYPE_SID]->numbers[0].nr`
#[inline(always)]
fn session_id(task: *const u8) -> Result<u32, Loss> {
    let signal = read_ptr(task, off!(task_signal))?;
    let pid = read_ptr(signal, off!(signal_sid_pid))?;
    if pid.is_null() {
        return Ok(0);
    }
    read::<u32>(pid, off!(pid_nr))
}

/// After the thread `task` of `tgid` exited: marks the process exited when
/// it was its last thread, so user space can take its final counts and
/// forget it. Returns whether it was the last thread of a counted process.
#[inline(always)]
pub fn mark_exited(tgid: u32, task: *const u8) -> Result<bool, Loss> {
    let Some(info) = PROC_INFO.get_ptr_mut(tgid) else {
        return Ok(false);
    };
    let signal = read_ptr(task, off!(task_signal))?;
    // do_exit() decrements signal->live before the exit tracepoint.
    let live: i32 = read(signal, off!(signal_live))?;
    if live != 0 {
        return Ok(false);
    }
    // SAFETY: a map value; a racing reader sees either state.
    unsafe {
        (*info).flags |= PROC_EXITED;
        (*info).exit_ns = bpf_ktime_get_ns();
    }
    Ok(true)
}
