//! Counting bytes a process took from a regular file, whichever hook saw
//! them: per-process totals, watched split, and per watched file.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use sensor_common::{maps, FileKey, InodeKey, Loss};

use super::{fd, watch};
use crate::{
    process::stats,
    runtime::{
        atomic,
        kernel::{off, read_ptr},
        slot::slot_of,
    },
};

/// The last file this CPU counted a read of, and what was found about it:
/// a loop of reads on one descriptor (the common case) skips the inode
/// reads and the watched decision. Valid while the `struct file` and its
/// inode are the same objects and the watch generation has not moved.
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
    /// 1: regular file; 2: not regular.
    kind: u32,
    watched: u32,
    dev: u32,
    ino: u64,
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
    }

    #[inline(always)]
    fn sealed(mut self) -> Self {
        self.check = self.digest();
        self
    }
}

#[map(name = "LAST_FILE")]
static LAST_FILE: PerCpuArray<LastFile> = PerCpuArray::with_max_entries(maps::LAST_FILE_SIZE, 0);

const KIND_REGULAR: u32 = 1;
const KIND_OTHER: u32 = 2;

#[map(name = "FILE_STATS")]
static FILE_STATS: PerCpuHashMap<FileKey, u64> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_FILES, 0);

/// Counts `bytes` read by the current process from `file`, if regular.
#[inline(always)]
pub fn count_file_read(file: *const u8, bytes: u64) -> Result<(), Loss> {
    let inode = read_ptr(file, off!(file_inode))?;
    let generation = watch::generation();
    let Some(slot) = LAST_FILE.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's slot; copied out whole, then checked (see LastFile).
    let cached = unsafe { core::ptr::read_volatile(slot) };
    let last = if cached.file == file as u64
        && cached.inode == inode as u64
        && cached.generation == generation
        && cached.check == cached.digest()
    {
        cached
    } else {
        let fresh = match fd::regular_file_inode(file)? {
            Some((_, key)) => LastFile {
                file: file as u64,
                inode: inode as u64,
                generation,
                kind: KIND_REGULAR,
                watched: watch::is_watched(file, &key)? as u32,
                dev: key.dev,
                ino: key.ino,
                check: 0,
            },
            None => LastFile {
                file: file as u64,
                inode: inode as u64,
                generation,
                kind: KIND_OTHER,
                watched: 0,
                dev: 0,
                ino: 0,
                check: 0,
            },
        }
        .sealed();
        // SAFETY: as above; a torn write is caught by the next reader's check.
        unsafe { core::ptr::write_volatile(slot, fresh) };
        fresh
    };
    if last.kind != KIND_REGULAR {
        return Ok(());
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
    }
    Ok(())
}

#[inline(always)]
fn add_file_bytes(key: FileKey, bytes: u64) -> Result<(), Loss> {
    let (slot, _) = slot_of!(FILE_STATS, key, 0).ok_or(Loss::FileMapFull)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    atomic::add(slot, bytes);
    Ok(())
}
