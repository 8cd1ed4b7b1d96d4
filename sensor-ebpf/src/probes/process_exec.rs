//! Keeps the command name of a counted process current across execve.
//!
//! Hook: `tp_btf/sched_process_exec`,
//! `TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`,
//! fired after the new image set the task's comm.

use aya_ebpf::{
    helpers::bpf_get_current_comm, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use crate::proc;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(_ctx: BtfTracePointContext) -> i32 {
    let tgid = proc::current_tgid();
    if let Some(info) = proc::PROC_INFO.get_ptr_mut(tgid) {
        if let Ok(comm) = bpf_get_current_comm() {
            // SAFETY: a map value; a racing reader sees the old or new name.
            unsafe { (*info).comm = comm };
        }
    }
    0
}
