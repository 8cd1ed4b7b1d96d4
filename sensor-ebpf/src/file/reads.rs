//! Counting bytes a process took from a file, whichever hook saw them:
//! per-process totals, watched split, per watched file, and the weights it
//! took in (lineage) from watched files, derived files, pipes and sockets.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use sensor_common::{
    lineage::{CarrierKey, INET_CONN, VIA_FILE, VIA_LOOPBACK, VIA_PIPE, VIA_READ},
    maps, FileKey, InodeKey, Loss,
};

use super::{fd, held, watch};
use crate::{
    lineage::{carrier, holding},
    net::send,
    process::stats,
    runtime::{
        atomic,
        kernel::{off, read, read_ptr, Probe, S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK},
        slot::slot_of,
    },
};

/// The last file this CPU counted a read of, and what was found about it:
/// a loop of reads on one descriptor (the common case) skips the inode
/// reads, the watched decision and the derived lookup. Valid while the
/// `struct file` and its inode are the same objects and neither the watch
/// generation nor the derived-file generation has moved.
///
/// Programs on one CPU can interleave where the kernel preempts them (full
/// or lazy preemption: a task preempted inside this program, another task
/// running it on the same CPU). So the entry is copied out whole and
/// trusted only when its `check` matches its fields: a copy torn between
/// two writers fails it and the decision is made afresh.
#[repr(C)]
#[derive(Clone, Copy)]
struct LastFile {
    file: u64,
    inode: u64,
    generation: u32,
    /// `KIND_*`.
    kind: u32,
    watched: u32,
    dev: u32,
    ino: u64,
    /// The derived-file generation `derived` was decided in.
    lineage: u64,
    /// 1: a derived file (it carries weights).
    derived: u64,
    check: u64,
}

impl LastFile {
    #[inline(always)]
    fn digest(&self) -> u64 {
        let a = ((self.generation as u64) << 32) | self.kind as u64;
        let b = ((self.watched as u64) << 32) | self.dev as u64;
        (self.file ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xff51_afd7_ed55_8ccd)
            ^ self.inode.rotate_left(17)
            ^ a.rotate_left(29).wrapping_mul(0xc4ce_b9fe_1a85_ec53)
            ^ b.rotate_left(41)
            ^ self.ino.rotate_left(7)
            ^ self.lineage.wrapping_mul(0x2545_f491_4f6c_dd1d)
            ^ self.derived.rotate_left(53)
    }
}

#[map(name = "LAST_FILE")]
static LAST_FILE: PerCpuArray<LastFile> = PerCpuArray::with_max_entries(maps::LAST_FILE_SIZE, 0);

const KIND_REGULAR: u32 = 1;
const KIND_OTHER: u32 = 2;
/// A pipe or FIFO, a socket: may relay weights.
const KIND_FIFO: u32 = 3;
const KIND_SOCKET: u32 = 4;

#[map(name = "FILE_STATS")]
static FILE_STATS: PerCpuHashMap<FileKey, u64> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_FILES, 0);

/// What is known of `file` (cached per CPU).
#[inline(always)]
fn describe(file: *const u8) -> Result<LastFile, Loss> {
    let inode = read_ptr(file, off!(file_inode))?;
    let generation = watch::generation();
    let lineage = carrier::file_generation();
    let Some(slot) = LAST_FILE.get_ptr_mut(0) else {
        return Err(Loss::KernelReadError);
    };
    // SAFETY: this CPU's slot; copied out whole, then checked (see LastFile).
    let mut last = unsafe { core::ptr::read_volatile(slot) };
    if last.file == file as u64
        && last.inode == inode as u64
        && last.generation == generation
        && last.lineage == lineage
        && last.check == last.digest()
    {
        return Ok(last);
    }
    // Decided afresh in the same stack object (the stack is 512 bytes for
    // the whole call chain; older kernels round each frame up to 32).
    let mode: u16 = read(inode, off!(inode_mode))?;
    last.file = file as u64;
    last.inode = inode as u64;
    last.generation = generation;
    last.kind = KIND_OTHER;
    last.watched = 0;
    last.dev = 0;
    last.ino = 0;
    last.lineage = lineage;
    last.derived = 0;
    match mode & S_IFMT {
        S_IFREG => {
            let (_, key) = fd::inode_key(inode)?;
            last.kind = KIND_REGULAR;
            last.dev = key.dev;
            last.ino = key.ino;
            last.watched = watch::is_watched(file, &key)? as u32;
            if last.watched == 0 {
                last.derived = carrier::is_file_carrier(&file_carrier(&last)) as u64;
            }
        }
        S_IFIFO => {
            let (_, key) = fd::inode_key(inode)?;
            last.kind = KIND_FIFO;
            last.dev = key.dev;
            last.ino = key.ino;
        }
        S_IFSOCK => last.kind = KIND_SOCKET,
        _ => {}
    }
    last.check = last.digest();
    // SAFETY: as above; a torn write is caught by the next reader's check.
    unsafe { core::ptr::write_volatile(slot, last) };
    Ok(last)
}

#[inline(always)]
fn file_carrier(last: &LastFile) -> CarrierKey {
    CarrierKey {
        via: VIA_FILE,
        dev: last.dev,
        id: last.ino,
    }
}

/// Counts `bytes` read by the current process from `file`: regular files
/// are counted (watched, derived or plain); from a pipe, FIFO or socket
/// only what relays weights is.
#[inline(always)]
pub fn count_file_read(file: *const u8, bytes: u64) -> Result<(), Loss> {
    let last = describe(file)?;
    match last.kind {
        KIND_REGULAR => {}
        KIND_FIFO | KIND_SOCKET => return relayed(file, &last, bytes),
        _ => return Ok(()),
    }
    let key = InodeKey {
        dev: last.dev,
        _pad: 0,
        ino: last.ino,
    };
    let watched = last.watched != 0;
    let tgid = stats::current_tgid();
    let c = stats::counters_of(tgid)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    unsafe {
        atomic::add(&raw mut (*c).read_bytes, bytes);
        atomic::add(&raw mut (*c).read_ops, 1);
        if watched {
            atomic::add(&raw mut (*c).watched_read_bytes, bytes);
            atomic::add(&raw mut (*c).watched_read_ops, 1);
        }
    }
    if watched {
        add_file_bytes(
            FileKey {
                tgid,
                dev: key.dev,
                ino: key.ino,
            },
            bytes,
        )?;
        let src = CarrierKey {
            via: VIA_READ,
            dev: key.dev,
            id: key.ino,
        };
        let cap = held::held_bytes(last.inode as *const u8)?;
        let dentry = read_ptr(file, off!(file_dentry))?;
        let gain = holding::take(tgid, src, bytes, cap, None, Some(dentry));
        // SAFETY: as above.
        atomic::add(unsafe { &raw mut (*c).distinct_read_bytes }, gain);
    } else if last.derived != 0 {
        let gain = carrier::read_from(tgid, file_carrier(&last), bytes);
        // SAFETY: as above.
        atomic::add(unsafe { &raw mut (*c).derived_read_bytes }, gain);
    }
    Ok(())
}

/// A read from a pipe, FIFO or socket: what it relays of a holder's weights.
#[inline(always)]
fn relayed(file: *const u8, last: &LastFile, bytes: u64) -> Result<(), Loss> {
    if !carrier::any_streams() {
        return Ok(());
    }
    let tgid = stats::current_tgid();
    let gain = if last.kind == KIND_FIFO {
        let key = CarrierKey {
            via: VIA_PIPE,
            dev: last.dev,
            id: last.ino,
        };
        carrier::read_from(tgid, key, bytes)
    } else {
        let Some(sk) = send::socket_of(file)? else {
            return Ok(());
        };
        let Some(key) = carrier::sock_in::<Probe>(sk)? else {
            return Ok(());
        };
        let gain = carrier::read_from(tgid, key, bytes);
        if gain == 0 && key.via == VIA_LOOPBACK && key.dev == INET_CONN {
            // A connected datagram socket whose sender was not connected
            // (the sender marked the receiving port).
            if carrier::is_datagram::<Probe>(sk)? {
                carrier::read_from(tgid, carrier::port_in::<Probe>(sk)?, bytes)
            } else {
                0
            }
        } else {
            gain
        }
    };
    if gain == 0 {
        return Ok(());
    }
    let c = stats::counters_of(tgid)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    atomic::add(unsafe { &raw mut (*c).relayed_bytes }, gain);
    Ok(())
}
#[inline(always)]
fn add_file_bytes(key: FileKey, bytes: u64) -> Result<(), Loss> {
    let (slot, _) = slot_of!(FILE_STATS, key, 0).ok_or(Loss::FileMapFull)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    atomic::add(slot, bytes);
    Ok(())
}
