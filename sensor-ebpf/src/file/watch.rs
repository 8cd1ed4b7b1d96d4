//! The watched decision, made in the kernel: a regular file is watched when
//! its extension is watched anywhere, or when it or one of its ancestor
//! directories is in `WATCH_INODES` (optionally restricted to extensions).
//! Decisions are cached per inode and per watch-set generation, so a read of
//! an already-seen file costs one LRU lookup. A watched inode is remembered
//! in `WATCHED_FILES` (LRU), so its later names and places stay watched.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, LruHashMap},
};
use sensor_common::{
    maps, Count, ExtKey, InodeKey, Loss, RuntimeConfig, WatchCacheEntry, EXT_LEN, WATCH_ALL,
};

use crate::runtime::{
    kernel::{off, read, read_ptr},
    loss,
};

#[map(name = "WATCH_INODES")]
static WATCH_INODES: HashMap<InodeKey, u64> = HashMap::with_max_entries(maps::MAX_WATCH_INODES, 0);

#[map(name = "WATCH_EXTS")]
static WATCH_EXTS: HashMap<ExtKey, u64> = HashMap::with_max_entries(maps::MAX_WATCH_EXTS, 0);

#[map(name = "WATCH_CACHE")]
static WATCH_CACHE: LruHashMap<InodeKey, WatchCacheEntry> =
    LruHashMap::with_max_entries(maps::WATCH_CACHE_SIZE, 0);

#[map(name = "WATCHED_FILES")]
static WATCHED_FILES: LruHashMap<InodeKey, u32> =
    LruHashMap::with_max_entries(maps::WATCHED_FILES_SIZE, 0);

#[map(name = "RUNTIME")]
static RUNTIME: Array<RuntimeConfig> = Array::with_max_entries(maps::RUNTIME_SIZE, 0);

/// How many directory levels above a file are checked against `WATCH_INODES`.
const MAX_DEPTH: usize = 24;

/// The current watch-set generation (0 before user space set one).
#[inline(always)]
pub fn generation() -> u32 {
    RUNTIME.get(0).map_or(0, |rt| rt.generation)
}

/// The current lineage epoch: the clock divided by the detection window
/// (0 before user space set one).
#[inline(always)]
pub fn epoch() -> u64 {
    let epoch_ns = RUNTIME.get(0).map_or(0, |rt| rt.epoch_ns);
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    now.checked_div(epoch_ns).unwrap_or(0)
}

/// Whether the regular file `file` (inode `key`) is watched.
#[inline(always)]
pub fn is_watched(file: *const u8, key: &InodeKey) -> Result<bool, Loss> {
    let Some(rt) = RUNTIME.get(0) else {
        return Ok(false);
    };
    let generation = rt.generation;
    if let Some(ptr) = WATCH_CACHE.get_ptr(key) {
        // SAFETY: copied out whole, then checked: the element may have been
        // reused for another inode meanwhile (see WatchCacheEntry).
        let cached = unsafe { core::ptr::read_volatile(ptr) };
        if cached.generation == generation
            && cached.dev == key.dev
            && cached.ino == key.ino
            && cached.check == cached.digest()
        {
            return Ok(cached.watched != 0);
        }
    }
    // Once weights, always weights: a hard link, a rename or a move out of
    // the watched directories does not make the inode's bytes anything else.
    // SAFETY: a plain value copied out at once.
    let sticky = unsafe { WATCHED_FILES.get(key) }.is_some();
    let watched = sticky || decide(file, key, rt.any_ext_mask)?;
    if watched && !sticky && WATCHED_FILES.insert(key, 1, BPF_NOEXIST as u64).is_ok() {
        loss::count(Count::WatchedFilesMade);
    }
    let mut entry = WatchCacheEntry {
        generation,
        watched: watched as u32,
        dev: key.dev,
        check: 0,
        ino: key.ino,
    };
    entry.check = entry.digest();
    // A full LRU evicts the oldest decision; nothing is lost but time.
    let _ = WATCH_CACHE.insert(key, entry, 0);
    Ok(watched)
}

#[inline(always)]
fn decide(file: *const u8, key: &InodeKey, any_ext_mask: u64) -> Result<bool, Loss> {
    let dentry = read_ptr(file, off!(file_dentry))?;
    let ext = extension_bit(dentry)?;
    if ext & any_ext_mask != 0 {
        return Ok(true);
    }
    // The file itself, then its ancestors up to the root of its file system
    // (a mount point's inode is the root of the file system mounted there).
    let mut d = dentry;
    let mut probe = InodeKey {
        dev: key.dev,
        _pad: 0,
        ino: key.ino,
    };
    for _ in 0..MAX_DEPTH {
        // SAFETY: a plain value copied out at once.
        if let Some(mask) = unsafe { WATCH_INODES.get(probe) } {
            if *mask == WATCH_ALL || *mask & ext != 0 {
                return Ok(true);
            }
        }
        let parent = read_ptr(d, off!(dentry_parent))?;
        if parent.is_null() || parent == d {
            break;
        }
        d = parent;
        let inode = read_ptr(d, off!(dentry_inode))?;
        if inode.is_null() {
            break;
        }
        probe.ino = read::<u64>(inode, off!(inode_ino))?;
    }
    Ok(false)
}

/// The `WATCH_EXTS` bit of the file name's extension (text after the last
/// dot, ASCII lower-cased), 0 when it has none or none watched.
#[inline(always)]
fn extension_bit(dentry: *const u8) -> Result<u64, Loss> {
    let len = read::<u32>(dentry, off!(dentry_name_len))? as usize;
    if len == 0 {
        return Ok(0);
    }
    let name = read_ptr(dentry, off!(dentry_name_ptr))?;
    // The last EXT_LEN bytes hold any extension short enough to be watched.
    // Names shorter than that are inline in the dentry, so the read stays
    // inside the object.
    let start = len.saturating_sub(EXT_LEN);
    let n = if len < EXT_LEN { len } else { EXT_LEN };
    let tail: [u8; EXT_LEN] = read(name, start)?;
    let mut dot = EXT_LEN;
    for (i, &b) in tail.iter().enumerate() {
        if i < n && b == b'.' {
            dot = i;
        }
    }
    if dot >= EXT_LEN {
        return Ok(0);
    }
    let mut key = ExtKey { ext: [0; EXT_LEN] };
    // Opaque to the compiler: knowing `n <= EXT_LEN` it would drop the mask
    // below, and older verifiers (6.1), having lost that bound when `n` was
    // spilled, refuse the read past the stack slot.
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    for i in 0..EXT_LEN - 1 {
        let j = dot + 1 + i;
        if j >= n {
            break;
        }
        let b = tail[j & (EXT_LEN - 1)];
        if let Some(out) = key.ext.get_mut(i) {
            *out = b.to_ascii_lowercase();
        }
    }
    // SAFETY: a plain value copied out at once.
    Ok(unsafe { WATCH_EXTS.get(key) }.copied().unwrap_or(0))
}
