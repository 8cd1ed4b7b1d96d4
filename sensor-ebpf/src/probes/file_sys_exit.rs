//! Bytes taken from regular files by syscalls that return a byte count.
//!
//! Hook: `tp_btf/sys_exit`, `TP_PROTO(struct pt_regs *regs, long ret)`.
//! Counts the return value of read, pread64, readv, preadv, preadv2
//! (whatever the RWF flags, O_DIRECT too), splice and copy_file_range (from
//! `fd_in`) and sendfile (from `in_fd`) when that descriptor is a regular
//! file, split into watched and not watched. Records mmaps of watched files,
//! and the new session of a process that called setsid (the one syscall
//! hook serves both: a second program on `sys_exit` would double its cost).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::Loss;

use crate::{
    file::{fd, mmap, reads},
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
    let fd_offset = match syscall::source_fd_arg(nr) {
        Some(0) => syscall::REGS_ARGS[0],
        Some(_) => syscall::REGS_ARGS[1],
        None if nr == syscall::NR_MMAP => syscall::REGS_ARGS[4],
        None if nr == syscall::NR_SETSID => {
            if offsets_ready() {
                identity::refresh(stats::current_tgid(), false);
            }
            return Ok(());
        }
        None => return Ok(()),
    };
    if !offsets_ready() {
        return Ok(());
    }
    let fd: u64 = load(regs, fd_offset);
    let Some(file) = fd::fd_to_file(fd)? else {
        return Ok(());
    };
    if nr == syscall::NR_MMAP {
        let len: u64 = load(regs, syscall::REGS_ARGS[1]);
        return mmap::record(file, ret as u64, len);
    }
    reads::count_file_read(file, ret as u64)
}
