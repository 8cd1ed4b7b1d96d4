//! Marks a process as exited when its last thread exits, so user space can
//! take its final counts and forget it, and its holding of weights stops
//! passing to a new process reusing the tgid.
//!
//! Hook: `tp_btf/sched_process_exit`, `TP_PROTO(struct task_struct *p)`
//! (6.16+ adds `bool group_dead`; `signal->live` is read instead so the same
//! program runs on both).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::Loss;

use crate::{
    lineage::holding,
    process::{identity, stats},
    runtime::{kernel::offsets_ready, loss},
};

#[btf_tracepoint(function = "sched_process_exit")]
pub fn process_exit(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_process_exit(&ctx) {
        loss::bump(reason);
    }
    0
}

#[inline(always)]
fn try_process_exit(ctx: &BtfTracePointContext) -> Result<(), Loss> {
    if !offsets_ready() {
        return Ok(());
    }
    let tgid = stats::current_tgid();
    if identity::mark_exited(tgid, ctx.arg(0))? {
        holding::exited(tgid);
    }
    Ok(())
}
