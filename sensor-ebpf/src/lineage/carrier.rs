//! Carriers: derived files, pipes and FIFOs, UNIX sockets and inet
//! connections on this host that a holder wrote or sent weights into.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use sensor_common::{
    lineage::{
        conn_hash, is_v4_mapped, v4_mapped, Carrier, CarrierKey, INET_CONN, INET_PORT, VIA_FILE,
        VIA_LOOPBACK, VIA_PIPE, VIA_UNIX,
    },
    maps, Count, Loss, AF_INET, AF_INET6, AF_UNIX,
};

use super::{
    holding::{self, Held},
    path,
};
use crate::runtime::{
    atomic,
    kernel::{off, read, read_ptr, Mem, S_IFIFO, S_IFMT, S_IFREG},
    loss,
};

#[map(name = "CARRIERS")]
static CARRIERS: LruHashMap<CarrierKey, Carrier> =
    LruHashMap::with_max_entries(maps::CARRIERS_SIZE, 0);

/// Socket carriers apart: a holder serving many clients churns these, not
/// the derived files.
#[map(name = "SOCKET_CARRIERS")]
static SOCKET_CARRIERS: LruHashMap<CarrierKey, Carrier> =
    LruHashMap::with_max_entries(maps::SOCKET_CARRIERS_SIZE, 0);

#[inline(always)]
fn map_of(key: &CarrierKey) -> &'static LruHashMap<CarrierKey, Carrier> {
    if key.via == VIA_UNIX || key.via == VIA_LOOPBACK {
        &SOCKET_CARRIERS
    } else {
        &CARRIERS
    }
}

/// Room to build a new `Carrier`.
#[map(name = "CARRIER_SCRATCH")]
static CARRIER_SCRATCH: PerCpuArray<Carrier> =
    PerCpuArray::with_max_entries(maps::CARRIER_SCRATCH_SIZE, 0);

#[map(name = "LINEAGE_GEN")]
static LINEAGE_GEN: Array<u64> = Array::with_max_entries(maps::LINEAGE_GEN_SIZE, 0);

const GEN_FILES: u32 = 0;
const GEN_STREAMS: u32 = 1;

/// Bumped by every new derived file: cached "not derived" decisions of
/// older generations are made again.
#[inline(always)]
pub fn file_generation() -> u64 {
    // SAFETY: a plain value copied out at once.
    LINEAGE_GEN.get(GEN_FILES).copied().unwrap_or(0)
}

/// Whether any pipe or socket ever carried weights (until then, reads of
/// pipes and sockets skip the lookup).
#[inline(always)]
pub fn any_streams() -> bool {
    LINEAGE_GEN.get(GEN_STREAMS).is_some_and(|n| *n != 0)
}

/// The carrier `file` would be for bytes written into it or read from it:
/// a regular file or a pipe/FIFO by inode. Sockets are keyed by their
/// connection (see [`sock_in`], [`sock_out`]); anything else carries
/// nothing.
#[inline(always)]
pub fn of_file(mode: u16, inode: *const u8) -> Result<Option<CarrierKey>, Loss> {
    let via = match mode & S_IFMT {
        S_IFREG => VIA_FILE,
        S_IFIFO => VIA_PIPE,
        _ => return Ok(None),
    };
    let sb = read_ptr(inode, off!(inode_sb))?;
    Ok(Some(CarrierKey {
        via,
        dev: read(sb, off!(sb_dev))?,
        id: read(inode, off!(inode_ino))?,
    }))
}

/// Both ends of an inet socket: (local address, local port, remote
/// address, remote port), addresses as 16 bytes (IPv4 mapped), ports in
/// host order.
#[inline(always)]
fn inet_ends<M: Mem>(sk: *const u8, family: u16) -> Result<([u8; 16], u16, [u8; 16], u16), Loss> {
    let (local, remote) = if family == AF_INET {
        let l: [u8; 4] = M::get(sk, off!(sk_rcv_saddr))?;
        let r: [u8; 4] = M::get(sk, off!(sk_daddr))?;
        (v4_mapped(l), v4_mapped(r))
    } else {
        let l: [u8; 16] = read(sk, off!(sk_v6_rcv_saddr))?;
        let r: [u8; 16] = read(sk, off!(sk_v6_daddr))?;
        (l, r)
    };
    let lport: u16 = M::get(sk, off!(sk_num))?;
    let rport = u16::from_be(M::get(sk, off!(sk_dport))?);
    Ok((local, lport, remote, rport))
}

/// Normalizes an IPv4-mapped "any" and loopback spellings so both ends
/// hash alike (an IPv6 socket talking IPv4 holds `::ffff:a.b.c.d`).
#[inline(always)]
fn norm(a: [u8; 16]) -> [u8; 16] {
    if a == [0; 16] {
        return v4_mapped([0; 4]);
    }
    if is_v4_mapped(&a) {
        return a;
    }
    a
}

/// `SOCK_DGRAM`: only datagram sockets are matched by port alone.
const SOCK_DGRAM: u16 = 2;

/// Whether `sk` is a datagram socket (false where the kernel's `sk_type`
/// could not be resolved: no port matching then).
#[inline(always)]
pub fn is_datagram<M: Mem>(sk: *const u8) -> Result<bool, Loss> {
    if off!(sk_type) == 0 {
        return Ok(false);
    }
    let ty: u16 = M::get(sk, off!(sk_type))?;
    Ok(ty == SOCK_DGRAM)
}

/// The carrier a receiving socket `sk` reads from: its UNIX peer's sends
/// are keyed by it; an inet socket by its connection, or by its port when
/// it is an unconnected datagram socket (it knows no remote end).
#[inline(always)]
pub fn sock_in<M: Mem>(sk: *const u8) -> Result<Option<CarrierKey>, Loss> {
    let family: u16 = M::get(sk, off!(sk_family))?;
    match family {
        AF_UNIX => Ok(Some(CarrierKey {
            via: VIA_UNIX,
            dev: 0,
            id: sk as u64,
        })),
        AF_INET | AF_INET6 => {
            let (local, lport, remote, rport) = inet_ends::<M>(sk, family)?;
            if rport == 0 {
                if !is_datagram::<M>(sk)? {
                    return Ok(None);
                }
                return Ok(Some(CarrierKey {
                    via: VIA_LOOPBACK,
                    dev: INET_PORT,
                    id: lport as u64,
                }));
            }
            Ok(Some(CarrierKey {
                via: VIA_LOOPBACK,
                dev: INET_CONN,
                id: conn_hash(&norm(remote), rport, &norm(local), lport),
            }))
        }
        _ => Ok(None),
    }
}

/// The port carrier of a receiving inet socket `sk`.
#[inline(always)]
pub fn port_in<M: Mem>(sk: *const u8) -> Result<CarrierKey, Loss> {
    let lport: u16 = M::get(sk, off!(sk_num))?;
    Ok(CarrierKey {
        via: VIA_LOOPBACK,
        dev: INET_PORT,
        id: lport as u64,
    })
}

/// Whether the regular file `key` is a derived file.
#[inline(always)]
pub fn is_file_carrier(key: &CarrierKey) -> bool {
    // SAFETY: only the presence is used.
    unsafe { CARRIERS.get(key) }.is_some()
}

/// A holder sent `bytes` on `sk` (remote end `to`, `port`, already
/// resolved by the send counter for unconnected datagrams): the receiving
/// end carries them. An inet connection is marked by its two ends; a
/// datagram also by the receiving port (the receiver may be unconnected).
#[inline(always)]
pub fn sent<M: Mem>(
    h: &Held,
    tgid: u32,
    sk: *const u8,
    family: u16,
    to: [u8; 16],
    port: u16,
    bytes: u64,
) -> Result<(), Loss> {
    match family {
        AF_UNIX => {
            if off!(unix_peer) == 0 {
                return Ok(());
            }
            let peer = read_ptr(sk, off!(unix_peer))?;
            if peer.is_null() {
                return Ok(());
            }
            let key = CarrierKey {
                via: VIA_UNIX,
                dev: 0,
                id: peer as u64,
            };
            put(key, h, tgid, bytes, [0; 16], 0, None);
        }
        AF_INET | AF_INET6 => {
            let (local, lport, _, _) = inet_ends::<M>(sk, family)?;
            let to = if family == AF_INET {
                v4_mapped([to[0], to[1], to[2], to[3]])
            } else {
                to
            };
            let conn = CarrierKey {
                via: VIA_LOOPBACK,
                dev: INET_CONN,
                id: conn_hash(&norm(local), lport, &norm(to), port),
            };
            put(conn, h, tgid, bytes, to, port, None);
            if is_datagram::<M>(sk)? {
                let by_port = CarrierKey {
                    via: VIA_LOOPBACK,
                    dev: INET_PORT,
                    id: port as u64,
                };
                put(by_port, h, tgid, bytes, to, port, None);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A holder wrote `bytes` into the file or pipe `key` (`dentry` names a
/// regular file, for its path).
#[inline(always)]
pub fn written(key: CarrierKey, h: &Held, tgid: u32, bytes: u64, dentry: *const u8) {
    put(key, h, tgid, bytes, [0; 16], 0, Some(dentry));
}

/// The carrier `key` takes `bytes` from holder `h`: never more than `h`
/// holds in all (proportional).
#[inline(always)]
fn put(
    key: CarrierKey,
    h: &Held,
    tgid: u32,
    bytes: u64,
    addr: [u8; 16],
    port: u16,
    dentry: Option<*const u8>,
) {
    let map = map_of(&key);
    holding::wrote(tgid);
    if let Some(c) = map.get_ptr_mut(key) {
        // SAFETY: a map value; two writers racing may lose an increment
        // (the carrier then holds a little less): harmless.
        unsafe {
            let cur = (*c).bytes;
            let next = cur.max(cur.saturating_add(bytes).min(h.bytes));
            if next > cur {
                (*c).bytes = next;
            }
        }
        return;
    }
    // Built in this CPU's scratch slot: the stack is 512 bytes for the
    // whole call chain.
    let Some(c) = CARRIER_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, filled then copied into the map.
    let c = unsafe { &mut *c };
    c.bytes = bytes.min(h.bytes);
    c.flow = h.flow;
    c.origin = h.origin;
    c.writer = tgid;
    c.port = port;
    c._pad = 0;
    c.addr = addr;
    c.comm = h.comm;
    #[allow(clippy::needless_borrows_for_generic_args)]
    if map.insert(key, &*c, BPF_NOEXIST as u64).is_err() {
        return;
    }
    let sockets = key.via == VIA_UNIX || key.via == VIA_LOOPBACK;
    loss::count(if sockets {
        Count::SocketCarriersMade
    } else {
        Count::CarriersMade
    });
    let slot = if key.via == VIA_FILE {
        GEN_FILES
    } else {
        GEN_STREAMS
    };
    if let Some(n) = LINEAGE_GEN.get_ptr_mut(slot) {
        atomic::add(n, 1);
    }
    if let Some(d) = dentry {
        path::record(&key, d);
    }
}

/// The current process `tgid` read `bytes` from carrier `key`: what it
/// takes in (0 when `key` carries nothing, or it is its own writing).
#[inline(always)]
pub fn read_from(tgid: u32, key: CarrierKey, bytes: u64) -> u64 {
    // SAFETY: the map value, read in place (not copied onto the 512-byte
    // stack); an entry reused meanwhile gives another carrier's figures.
    let Some(c) = (unsafe { map_of(&key).get(key) }) else {
        return 0;
    };
    // Reading back what it wrote itself adds nothing (no self-amplifying loop).
    if c.writer == tgid {
        return 0;
    }
    // A stream's reader may be ahead of the marking: the writer's bytes
    // are readable as soon as they are queued, before the writer's hook
    // runs (the last chunk of a stream would be missed). Up to what the
    // writer holds, they are taken as read. (Not for files: others may
    // append to a derived file.)
    let mut cap = c.bytes;
    if key.via != VIA_FILE {
        if let Some(h) = holding::of(c.writer) {
            cap = cap.max(h.bytes);
        }
    }
    holding::take(tgid, key, bytes, cap, Some(c), None)
}
