//! Bytes accepted by sockets, per process and remote address.
//!
//! Hook: `tp_btf/sock_send_length` (6.3+),
//! `TP_PROTO(struct sock *sk, int ret, int flags)`, fired by
//! `sock_sendmsg_nosec` after every `sendmsg` of any socket family: write,
//! writev, send, sendto, sendmsg, sendmmsg, sendfile/splice into a socket and
//! io_uring sends all end there. Older kernels use `net_sys_exit_send`.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use sensor_common::Loss;

use crate::{
    net::send,
    runtime::{
        kernel::{offsets_ready, Direct},
        loss,
    },
};

#[btf_tracepoint(function = "sock_send_length")]
pub fn net_sock_send_length(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_net_sock_send_length(&ctx) {
        loss::bump(reason);
    }
    0
}

#[inline(always)]
fn try_net_sock_send_length(ctx: &BtfTracePointContext) -> Result<(), Loss> {
    // An `int` in a u64 slot, zero-extended: negative errors must be read as i32.
    let ret = ctx.arg::<u64>(1) as u32 as i32;
    if ret <= 0 || !offsets_ready() {
        return Ok(());
    }
    // `sk` is a BTF pointer: `sock_common` fields are direct loads.
    send::count_send::<Direct>(ctx.arg(0), ret as u64)
}
