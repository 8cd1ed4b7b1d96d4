//! Keeps the identity of a counted process current across execve: command
//! name, session, cgroup and credentials (`setsid prog` counts its loader's
//! reads before it changes them; a runtime moves a container's init into its
//! cgroup before exec).
//!
//! Hook: `tp_btf/sched_process_exec`,
//! `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
//! fired after the new image set the task's comm.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{kernel::offsets_ready, proc};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(_ctx: BtfTracePointContext) -> i32 {
    if offsets_ready() {
        proc::refresh_identity(proc::current_tgid(), true);
    }
    0
}
