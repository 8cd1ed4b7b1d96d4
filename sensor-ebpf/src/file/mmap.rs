//! Watched files mapped into memory. Page faults on a mapping are not
//! syscalls, and on current kernels large folios are mapped by PMD without
//! any tracepoint, so the kernel side records each mapping of a watched file
//! (process, address, file, length); user space then reads how much of the
//! mapping is resident in the process's page tables (the kernel's own
//! accounting, `/proc/PID/smaps`).

use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::LruHashMap};
use sensor_common::{
    lineage::{CarrierKey, VIA_FILE, VIA_READ},
    maps, Count, Loss, MmapInfo, MmapKey,
};

use super::{fd, held, watch};
use crate::{
    lineage::{carrier, holding},
    process::stats,
    runtime::{
        atomic,
        kernel::{off, read, read_ptr},
        loss,
    },
};

#[map(name = "WATCHED_MMAPS")]
static WATCHED_MMAPS: LruHashMap<MmapKey, MmapInfo> =
    LruHashMap::with_max_entries(maps::DEFAULT_MAX_FILES, 0);

/// After `addr = mmap(_, len, _, _, fd, _)` succeeded on `file`.
#[inline(always)]
pub fn record(file: *const u8, addr: u64, len: u64) -> Result<(), Loss> {
    let Some((inode, key)) = fd::regular_file_inode(file)? else {
        return Ok(());
    };
    if !watch::is_watched(file, &key)? {
        // A derived file mapped: its weights are in the process's hands.
        let src = CarrierKey {
            via: VIA_FILE,
            dev: key.dev,
            id: key.ino,
        };
        if carrier::is_file_carrier(&src) {
            let tgid = stats::current_tgid();
            let c = stats::counters_of(tgid)?;
            let gain = carrier::read_from(tgid, src, len);
            // SAFETY: this CPU's slot of a per-CPU entry.
            atomic::add(unsafe { &raw mut (*c).derived_read_bytes }, gain);
        }
        return Ok(());
    }
    let size: i64 = read(inode, off!(inode_size))?;
    // What the file can hold: its allocated blocks, or the pages it has in
    // the page cache (a file just written, not yet allocated on disk). A
    // huge sparse file maps next to nothing: never more than this is
    // credited to a mapping no sample saw.
    let blocks: u64 = read(inode, off!(inode_blocks))?;
    let mapping: *const u8 = read(inode, off!(inode_mapping))?;
    let pages: u64 = if mapping.is_null() {
        0
    } else {
        read(mapping, off!(mapping_nrpages))?
    };
    let held = blocks.saturating_mul(512).max(pages.saturating_mul(4096));
    let tgid = stats::current_tgid();
    // Gives the process an identity for user space.
    stats::counters_of(tgid)?;
    // The mapping puts the file's bytes in its hands: it holds them
    // (lineage), whatever it later writes them into.
    let src = CarrierKey {
        via: VIA_READ,
        dev: key.dev,
        id: key.ino,
    };
    let dentry = read_ptr(file, off!(file_dentry))?;
    holding::take(tgid, src, len, held::held_bytes(inode)?, None, Some(dentry));
    let info = MmapInfo {
        dev: key.dev,
        _pad: 0,
        ino: key.ino,
        len: len.min(size.max(0) as u64).min(held),
    };
    let key = MmapKey {
        tgid,
        _pad: 0,
        addr,
    };
    // A new record is counted (user space tells evictions from it); an
    // address mapped again replaces its record.
    if WATCHED_MMAPS.insert(key, info, BPF_NOEXIST as u64).is_ok() {
        loss::count(Count::MmapRecorded);
        return Ok(());
    }
    WATCHED_MMAPS
        .insert(key, info, 0)
        .map_err(|_| Loss::MmapMapFull)
}
