//! Bytes taken from regular files by syscalls that return a byte count.
//!
//! Hook: `tp_btf/sys_exit`, `TP_PROTO(struct pt_regs *regs, long ret)`.
//! Counts the return value of read, pread64, readv, preadv, preadv2
//! (whatever the RWF flags, O_DIRECT too), splice and copy_file_range (from
//! `fd_in`) and sendfile (from `in_fd`) when that descriptor is a regular
//! file, split into watched and not watched; what reads of pipes, FIFOs and
//! sockets (recvfrom and recvmsg too) relay of weights; and what a process
//! holding weights writes into files and pipes (write, writev, pwrite64,
//! pwritev, pwritev2, vmsplice, and the sinks of splice, sendfile and
//! copy_file_range). Records mmaps of watched files, and the new session of
//! a process that called setsid (the one syscall hook serves all: a second
//! program on `sys_exit` would double its cost).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::Loss;

use crate::{
    file::{fd, mmap, reads},
    lineage::write,
    process::{identity, stats},
    runtime::{
        kernel::{load, offsets_ready},
        loss, syscall,
    },
};

#[btf_tracepoint(function = "sys_exit")]
pub fn file_sys_exit(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_file_sys_exit(&ctx) {
        loss::bump(reason);
    }
    0
}

#[inline(always)]
fn try_file_sys_exit(ctx: &BtfTracePointContext) -> Result<(), Loss> {
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return Ok(());
    }
    // `regs` is a BTF pointer: direct loads, no helper call.
    let regs: *const u8 = ctx.arg(0);
    let nr: i64 = load(regs, syscall::REGS_SYSCALL_NR);
    let source = syscall::source_fd_arg(nr);
    let written = syscall::written_fd_arg(nr);
    if source.is_none() && written.is_none() && nr != syscall::NR_MMAP {
        if nr == syscall::NR_SETSID && offsets_ready() {
            identity::refresh(stats::current_tgid(), false);
        }
        return Ok(());
    }
    if !offsets_ready() {
        return Ok(());
    }
    if nr == syscall::NR_MMAP {
        let fd: u64 = load(regs, syscall::REGS_ARGS[4]);
        let Some(file) = fd::fd_to_file(fd)? else {
            return Ok(());
        };
        let len: u64 = load(regs, syscall::REGS_ARGS[1]);
        return mmap::record(file, ret as u64, len);
    }
    // splice, sendfile and copy_file_range are both: the source is counted
    // first, so weights read by this call are held when the sink is marked.
    if let Some(arg) = source {
        let fd: u64 = load(regs, syscall::REGS_ARGS[arg]);
        if let Some(file) = fd::fd_to_file(fd)? {
            reads::count_file_read(file, ret as u64)?;
        }
    }
    if let Some(arg) = written {
        let fd: u64 = load(regs, syscall::REGS_ARGS[arg]);
        write::written(fd, ret as u64)?;
    }
    Ok(())
}
