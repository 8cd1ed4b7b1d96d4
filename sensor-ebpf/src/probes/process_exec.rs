//! Keeps the identity of a counted process current across execve: command
//! name, session, cgroup and credentials (`setsid prog` counts its loader's
//! reads before it changes them; a runtime moves a container's init into its
//! cgroup before exec). Also keeps what was executed, with its arguments, so
//! an alert can name a process that exited before user space saw it.
//!
//! Hook: `tp_btf/sched_process_exec`,
//! `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
//! fired after the new image set the task's comm and argument pages.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    process::{exec, identity, stats},
    runtime::{kernel::offsets_ready, loss},
};

#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(ctx: BtfTracePointContext) -> i32 {
    if !offsets_ready() {
        return 0;
    }
    let tgid = stats::current_tgid();
    identity::refresh(tgid, true);
    if let Err(reason) = exec::record(ctx.arg(2), tgid) {
        loss::bump(reason);
    }
    0
}
