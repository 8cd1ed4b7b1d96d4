//! Bytes accepted by sockets, on kernels without `sock:sock_send_length`
//! (before 6.3): the send-family syscalls, at their exit.
//!
//! Hook: `tp_btf/sys_exit`, `TP_PROTO(struct pt_regs *regs, long ret)`.
//! Counts the return value of write, writev, send/sendto, sendmsg, sendfile
//! and splice whose destination descriptor is a socket, and for sendmmsg the
//! `msg_len` of each message sent. Attached only when the preferred hook is
//! missing. io_uring sends, which no syscall returns, are counted by
//! `file_io_uring_complete` then (5.19+); kernel-internal senders are not
//! seen this way.

use aya_ebpf::{
    helpers::bpf_probe_read_user, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use sensor_common::Loss;

use crate::{
    file::fd,
    net::send,
    runtime::{
        kernel::{load, offsets_ready, Probe},
        loss, syscall,
    },
};

/// `sizeof(struct mmsghdr)` and `offsetof(struct mmsghdr, msg_len)` (LP64 uapi).
const MMSGHDR_SIZE: usize = 64;
const MMSGHDR_MSG_LEN: usize = 56;
/// `UIO_MAXIOV`: sendmmsg sends at most this many messages per call.
const MAX_MMSG: usize = 1024;

#[btf_tracepoint(function = "sys_exit")]
pub fn net_sys_exit_send(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_net_sys_exit_send(&ctx) {
        loss::bump(reason);
    }
    0
}

#[inline(always)]
fn try_net_sys_exit_send(ctx: &BtfTracePointContext) -> Result<(), Loss> {
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return Ok(());
    }
    let regs: *const u8 = ctx.arg(0);
    let nr: i64 = load(regs, syscall::REGS_SYSCALL_NR);
    let Some(arg) = syscall::sink_fd_arg(nr) else {
        return Ok(());
    };
    if !offsets_ready() {
        return Ok(());
    }
    let fd: u64 = load(regs, syscall::REGS_ARGS[arg]);
    let Some(file) = fd::fd_to_file(fd)? else {
        return Ok(());
    };
    let Some(sk) = send::socket_of(file)? else {
        return Ok(());
    };
    let bytes = if nr == syscall::NR_SENDMMSG {
        let msgvec: u64 = load(regs, syscall::REGS_ARGS[1]);
        sendmmsg_bytes(msgvec, ret as usize)?
    } else {
        ret as u64
    };
    send::count_send::<Probe>(sk, bytes)
}

/// Bytes of the first `sent` messages of a sendmmsg vector: the kernel
/// wrote each one's `msg_len` back into the caller's array.
#[inline(always)]
fn sendmmsg_bytes(msgvec: u64, sent: usize) -> Result<u64, Loss> {
    let mut total = 0u64;
    for i in 0..MAX_MMSG {
        if i >= sent {
            break;
        }
        let at = msgvec as usize + i * MMSGHDR_SIZE + MMSGHDR_MSG_LEN;
        // SAFETY: a helper read of user memory; faults are reported, not taken.
        let len: u32 =
            unsafe { bpf_probe_read_user(at as *const u32) }.map_err(|_| Loss::UserReadError)?;
        total += len as u64;
    }
    Ok(total)
}
