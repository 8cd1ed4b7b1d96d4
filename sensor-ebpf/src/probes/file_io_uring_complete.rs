//! Bytes read from regular files by io_uring, which bypasses the syscall
//! layer: IORING_OP_READ, IORING_OP_READV and IORING_OP_READ_FIXED; and on
//! kernels where sends are counted at syscall exits (before 6.3), the bytes
//! io_uring sends or writes into sockets.
//!
//! Hook: `tp_btf/io_uring_complete`, fired when the completion is posted, in
//! the submitting process (its task or one of its io-wq / SQPOLL threads).
//! Its arguments changed: `(ctx, req, struct io_uring_cqe *cqe)` from 6.3,
//! `(ctx, req, u64 user_data, int res, cflags, extra1, extra2)` in 5.19 – 6.2
//! (user space tells which, `Offsets::io_uring_tp`); before 5.19 it names
//! no request and the program is not attached.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::{offsets::IO_URING_TP_RES_ARG, Loss};

use crate::{
    file::reads,
    net::send,
    runtime::{
        kernel::{off, offsets_ready, read, read_ptr, send_fallback, Probe},
        loss,
    },
};

/// `IORING_OP_*` values (uapi).
const IORING_OP_READV: u8 = 1;
const IORING_OP_WRITEV: u8 = 2;
const IORING_OP_READ_FIXED: u8 = 4;
const IORING_OP_WRITE_FIXED: u8 = 5;
const IORING_OP_SENDMSG: u8 = 9;
const IORING_OP_READ: u8 = 22;
const IORING_OP_WRITE: u8 = 23;
const IORING_OP_SEND: u8 = 26;
const IORING_OP_SEND_ZC: u8 = 47;
const IORING_OP_SENDMSG_ZC: u8 = 48;

#[btf_tracepoint(function = "io_uring_complete")]
pub fn file_io_uring_complete(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_file_io_uring_complete(&ctx) {
        loss::bump(reason);
    }
    0
}

#[inline(always)]
fn try_file_io_uring_complete(ctx: &BtfTracePointContext) -> Result<(), Loss> {
    if !offsets_ready() {
        return Ok(());
    }
    let req: *const u8 = ctx.arg(1);
    let res: i32 = if off!(io_uring_tp) as u32 == IO_URING_TP_RES_ARG {
        // An `int` in a u64 slot.
        ctx.arg::<u64>(3) as u32 as i32
    } else {
        let cqe: *const u8 = ctx.arg(2);
        read(cqe, off!(cqe_res))?
    };
    if res <= 0 {
        return Ok(());
    }
    let opcode: u8 = read(req, off!(req_opcode))?;
    let is_read =
        opcode == IORING_OP_READ || opcode == IORING_OP_READV || opcode == IORING_OP_READ_FIXED;
    // Where sends are counted at syscall exits, io_uring's are counted here.
    let is_send = send_fallback()
        && (opcode == IORING_OP_SEND
            || opcode == IORING_OP_SENDMSG
            || opcode == IORING_OP_SEND_ZC
            || opcode == IORING_OP_SENDMSG_ZC
            || opcode == IORING_OP_WRITE
            || opcode == IORING_OP_WRITEV
            || opcode == IORING_OP_WRITE_FIXED);
    if !is_read && !is_send {
        return Ok(());
    }
    let file = read_ptr(req, off!(req_file))?;
    if file.is_null() {
        return Ok(());
    }
    if is_read {
        return reads::count_file_read(file, res as u64);
    }
    match send::socket_of(file)? {
        Some(sk) => send::count_send::<Probe>(sk, res as u64),
        None => Ok(()),
    }
}
