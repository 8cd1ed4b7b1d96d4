//! Counting bytes a process sent on a socket, whichever hook saw them:
//! per-process totals and per destination (address and port, or the UNIX
//! family), with the destination of unconnected UDP from the cgroup hooks.

use aya_ebpf::{
    macros::map,
    maps::{LruPerCpuHashMap, PerCpuHashMap},
};
use sensor_common::{
    maps, Loss, SendCounters, SendKey, AF_INET, AF_INET6, FAMILY_OVERFLOW, OVERFLOW_TGID,
};

use super::udp_dest;
use crate::{
    lineage::{carrier, holding},
    process::stats,
    runtime::{
        atomic,
        kernel::{off, read, read_ptr, Mem, S_IFMT, S_IFSOCK},
        slot::slot_of,
    },
};

#[map(name = "SEND_STATS")]
static SEND_STATS: PerCpuHashMap<SendKey, SendCounters> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_DESTS, 0);

#[map(name = "SEND_SPILL")]
static SEND_SPILL: LruPerCpuHashMap<SendKey, SendCounters> =
    LruPerCpuHashMap::with_max_entries(maps::send_spill_size(maps::DEFAULT_MAX_PROCS), 0);

/// Counts `bytes` accepted by the socket `sk` (`struct sock *`) for the
/// current process; `M` says how `sk` may be dereferenced.
#[inline(always)]
pub fn count_send<M: Mem>(sk: *const u8, bytes: u64) -> Result<(), Loss> {
    let family: u16 = M::get(sk, off!(sk_family))?;
    let tgid = stats::current_tgid();
    let mut key = SendKey {
        tgid,
        family,
        port: 0,
        addr: [0; 16],
    };
    match family {
        AF_INET => {
            let addr: u32 = M::get(sk, off!(sk_daddr))?;
            key.addr[..4].copy_from_slice(&addr.to_ne_bytes());
            key.port = u16::from_be(M::get(sk, off!(sk_dport))?);
        }
        AF_INET6 => {
            key.addr = read(sk, off!(sk_v6_daddr))?;
            key.port = u16::from_be(M::get(sk, off!(sk_dport))?);
        }
        // Every other family (AF_PACKET raw frames, VSOCK, XDP…) is counted
        // too, by family: user space judges it (untrusted unless known).
        _ => {}
    }
    let inet = family == AF_INET || family == AF_INET6;
    // A datagram sent with an address: the destination the cgroup hook saw
    // for this socket, connected or not (a UDP socket connected to a
    // trusted peer may `sendto` anywhere).
    if inet && (key.addr == [0; 16] || carrier::is_datagram::<M>(sk)?) {
        let cookie: u64 = M::get(sk, off!(sk_cookie))?;
        if let Some(dest) = udp_dest::take(cookie) {
            key.family = dest.family;
            key.port = dest.port;
            key.addr = dest.addr;
        }
    }
    let c = stats::counters_of(tgid)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    unsafe {
        atomic::add(&raw mut (*c).sent_bytes, bytes);
        atomic::add(&raw mut (*c).send_ops, 1);
    }
    // Neither map has room: the entry user space reserved keeps the bytes
    // (destination unknown).
    let (slot, _) = slot_of!(
        SEND_STATS,
        key,
        SendCounters::default(),
        spill: SEND_SPILL,
        full: Loss::SendMapFull,
        overflow: SendKey {
            tgid: OVERFLOW_TGID,
            family: FAMILY_OVERFLOW,
            port: 0,
            addr: [0; 16],
        },
    )
    .ok_or(Loss::SendMapFull)?;
    // SAFETY: as above.
    unsafe {
        atomic::add(&raw mut (*slot).bytes, bytes);
        atomic::add(&raw mut (*slot).ops, 1);
    }
    // A holder's sends carry weights to whoever receives them on this host.
    if let Some(h) = holding::of(tgid) {
        carrier::sent::<M>(&h, tgid, sk, key.family, key.addr, key.port, bytes)?;
    }
    Ok(())
}

/// The `struct sock *` behind `file` when it is a socket.
#[inline(always)]
pub fn socket_of(file: *const u8) -> Result<Option<*const u8>, Loss> {
    let inode = read_ptr(file, off!(file_inode))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let socket = read_ptr(file, off!(file_private_data))?;
    if socket.is_null() {
        return Ok(None);
    }
    let sk = read_ptr(socket, off!(socket_sk))?;
    Ok((!sk.is_null()).then_some(sk))
}
