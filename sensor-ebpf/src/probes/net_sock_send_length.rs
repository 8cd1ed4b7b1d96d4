//! Bytes accepted by sockets, per process and remote address.
//!
//! Hook: `tp_btf/sock_send_length`,
//! `TP_PROTO(struct sock *sk, int ret, int flags)`, fired by
//! `sock_sendmsg_nosec` after every `sendmsg` of any socket family: write,
//! writev, send, sendto, sendmsg, sendmmsg, sendfile/splice into a socket and
//! io_uring sends all end there.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use sensor_common::{counter, maps, SendCounters, SendKey, AF_INET, AF_INET6, AF_UNIX};

use crate::{
    counters,
    kernel::{off, offsets_ready, read},
    proc, udp_dest,
};

#[map(name = "SEND_STATS")]
static SEND_STATS: PerCpuHashMap<SendKey, SendCounters> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_DESTS, 0);

#[btf_tracepoint(function = "sock_send_length")]
pub fn net_sock_send_length(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_net_sock_send_length(&ctx) {
        counters::bump(reason);
    }
    0
}

#[inline(always)]
fn try_net_sock_send_length(ctx: &BtfTracePointContext) -> Result<(), u32> {
    // An `int` in a u64 slot, zero-extended: negative errors must be read as i32.
    let ret = ctx.arg::<u64>(1) as u32 as i32;
    if ret <= 0 || !offsets_ready() {
        return Ok(());
    }
    let sk: *const u8 = ctx.arg(0);
    let family: u16 = read(sk, off!(sk_family))?;
    let tgid = proc::current_tgid();
    let mut key = SendKey {
        tgid,
        family,
        port: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            let addr: [u8; 4] = read(sk, off!(sk_daddr))?;
            key.addr[..4].copy_from_slice(&addr);
            key.port = u16::from_be(read(sk, off!(sk_dport))?);
        }
        AF_INET6 => {
            key.addr = read(sk, off!(sk_v6_daddr))?;
            key.port = u16::from_be(read(sk, off!(sk_dport))?);
        }
        AF_UNIX => {}
        _ => return Ok(()),
    }
    if family != AF_UNIX && key.port == 0 && key.addr == [0; 16] {
        // Unconnected UDP: the destination the cgroup hook saw for this socket.
        let cookie: u64 = read(sk, off!(sk_cookie))?;
        if let Some(dest) = udp_dest::take(cookie) {
            key.family = dest.family;
            key.port = dest.port;
            key.addr = dest.addr;
        }
    }
    let bytes = ret as u64;
    let c = proc::counters_of(tgid)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    unsafe {
        (*c).sent_bytes += bytes;
        (*c).send_ops += 1;
    }
    if SEND_STATS.get_ptr_mut(key).is_none() {
        let _ = SEND_STATS.insert(key, SendCounters::default(), BPF_NOEXIST as u64);
    }
    let slot = SEND_STATS.get_ptr_mut(key).ok_or(counter::SEND_MAP_FULL)?;
    // SAFETY: as above.
    unsafe {
        (*slot).bytes += bytes;
        (*slot).ops += 1;
    }
    Ok(())
}
