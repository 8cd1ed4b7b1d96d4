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
use sensor_common::{
    counter, maps, SendCounters, SendKey, AF_INET, AF_INET6, AF_UNIX, FAMILY_OVERFLOW,
    OVERFLOW_TGID,
};

use crate::{
    atomic, counters,
    kernel::{load, off, offsets_ready, read},
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
    // `sk` is a BTF pointer: `sock_common` fields are direct loads.
    let sk: *const u8 = ctx.arg(0);
    let family: u16 = load(sk, off!(sk_family));
    let tgid = proc::current_tgid();
    let mut key = SendKey {
        tgid,
        family,
        port: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            let addr: u32 = load(sk, off!(sk_daddr));
            key.addr[..4].copy_from_slice(&addr.to_ne_bytes());
            key.port = u16::from_be(load(sk, off!(sk_dport)));
        }
        AF_INET6 => {
            key.addr = read(sk, off!(sk_v6_daddr))?;
            key.port = u16::from_be(load(sk, off!(sk_dport)));
        }
        AF_UNIX => {}
        _ => return Ok(()),
    }
    if family != AF_UNIX && key.port == 0 && key.addr == [0; 16] {
        // Unconnected UDP: the destination the cgroup hook saw for this socket.
        let cookie: u64 = load(sk, off!(sk_cookie));
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
        atomic::add(&raw mut (*c).sent_bytes, bytes);
        atomic::add(&raw mut (*c).send_ops, 1);
    }
    let slot = match SEND_STATS.get_ptr_mut(key) {
        Some(slot) => slot,
        None => {
            let _ = SEND_STATS.insert(key, SendCounters::default(), BPF_NOEXIST as u64);
            match SEND_STATS.get_ptr_mut(key) {
                Some(slot) => slot,
                None => {
                    // Full: the reserved entry keeps the bytes (destination unknown).
                    counters::bump(counter::SEND_MAP_FULL);
                    let overflow = SendKey {
                        tgid: OVERFLOW_TGID,
                        family: FAMILY_OVERFLOW,
                        port: 0,
                        addr: [0; 16],
                    };
                    SEND_STATS
                        .get_ptr_mut(overflow)
                        .ok_or(counter::SEND_MAP_FULL)?
                }
            }
        }
    };
    // SAFETY: as above.
    unsafe {
        atomic::add(&raw mut (*slot).bytes, bytes);
        atomic::add(&raw mut (*slot).ops, 1);
    }
    Ok(())
}
