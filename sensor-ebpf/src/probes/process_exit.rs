//! Marks a process as exited when its last thread exits, so user space can
//! take its final counts and forget it.
//!
//! Hook: `tp_btf/sched_process_exit`, `TP_PROTO(struct task_struct *p)`
//! (6.16+ adds `bool group_dead`; `signal->live` is read instead so the same
//! program runs on both).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::PROC_EXITED;

use crate::{
    counters,
    kernel::{off, offsets_ready, read, read_ptr},
    proc,
};

#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_process_exit(&ctx) {
        counters::bump(reason);
    }
    0
}

#[inline(always)]
fn try_process_exit(ctx: &BtfTracePointContext) -> Result<(), u32> {
    if !offsets_ready() {
        return Ok(());
    }
    let tgid = proc::current_tgid();
    let Some(info) = proc::PROC_INFO.get_ptr_mut(tgid) else {
        return Ok(());
    };
    let task: *const u8 = ctx.arg(0);
    let signal = read_ptr(task, off!(task_signal))?;
    // do_exit() decrements signal->live before this tracepoint.
    let live: i32 = read(signal, off!(signal_live))?;
    if live != 0 {
        return Ok(());
    }
    // SAFETY: a map value; a racing reader sees either state.
    unsafe {
        (*info).flags |= PROC_EXITED;
        (*info).exit_ns = bpf_ktime_get_ns();
    }
    Ok(())
}
