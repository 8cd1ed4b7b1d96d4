//! Map keys and values.

/// Length of a task's command name, as in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Address families the send probe distinguishes (values of `AF_*`).
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Per-process byte counters, one copy per CPU (user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounters {
    /// Bytes returned by reads of regular files.
    pub read_bytes: u64,
    pub read_ops: u64,
    /// The part of `read_bytes` that came from watched files.
    pub watched_read_bytes: u64,
    pub watched_read_ops: u64,
    /// Bytes accepted by sockets of any family (per destination in `SEND_STATS`).
    pub sent_bytes: u64,
    pub send_ops: u64,
    /// Lineage (see [`crate::lineage`]): bytes of watched files taken in,
    /// each file's bytes counted once and at most what it holds on disk
    /// (re-reads and sparse padding do not add).
    pub distinct_read_bytes: u64,
    /// Bytes of weights taken in from derived files.
    pub derived_read_bytes: u64,
    /// Bytes of weights relayed in through pipes, FIFOs, UNIX sockets and
    /// inet connections on this host.
    pub relayed_bytes: u64,
    /// `bpf_ktime_get_ns` when the kernel created the entry (set in the
    /// creating CPU's copy only; user space takes the largest). A new value
    /// for a known tgid means the entry was evicted and made again.
    pub born_ns: u64,
}

/// The reserved `PROC_STATS` entry that takes the bytes of processes the
/// full map has no room for (so the totals stay exact; lost detail is counted).
pub const OVERFLOW_TGID: u32 = 0;
/// `SendKey::family` of the reserved `SEND_STATS` entry for destinations the
/// full map has no room for.
pub const FAMILY_OVERFLOW: u16 = 0xffff;

/// `ProcInfo::flags`: the whole thread group has exited.
pub const PROC_EXITED: u32 = 1;

/// Identity of a process, written when the kernel first counts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub tgid: u32,
    /// Thread-group id of the real parent when first seen.
    pub ppid: u32,
    /// Session id (global pid namespace).
    pub sid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `PROC_*` flags.
    pub flags: u32,
    /// cgroup v2 id (the inode number of the cgroup directory).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_ns` when first counted.
    pub first_seen_ns: u64,
    /// `bpf_ktime_get_ns` at exit of the last thread, 0 while alive.
    pub exit_ns: u64,
    pub comm: [u8; COMM_LEN],
}

/// A destination of sent bytes, per process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SendKey {
    pub tgid: u32,
    /// `AF_INET`, `AF_INET6` or `AF_UNIX`.
    pub family: u16,
    /// Remote port in host byte order (0 when the socket has none).
    pub port: u16,
    /// Remote address in network byte order: 4 bytes for IPv4, 16 for IPv6,
    /// all zero when the socket has none (unconnected) or for `AF_UNIX`.
    pub addr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendCounters {
    pub bytes: u64,
    pub ops: u64,
}

/// A datagram's destination, taken by the cgroup `sendmsg` hooks from the
/// `sendto`/`sendmsg` address of an unconnected UDP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dest {
    pub family: u16,
    /// Host byte order.
    pub port: u16,
    pub _pad: u32,
    /// Network byte order, as in [`SendKey::addr`].
    pub addr: [u8; 16],
}

/// Bytes of the executed path kept by `EXEC_INFO`.
pub const EXEC_PATH_LEN: usize = 128;
/// Bytes of the argument vector kept by `EXEC_INFO`.
pub const EXEC_ARGS_LEN: usize = 256;

/// What a process executed, captured at `execve` (so an alert can name a
/// process that exited before user space could read /proc).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecInfo {
    /// The path given to execve, NUL-terminated (truncated).
    pub path: [u8; EXEC_PATH_LEN],
    /// The NUL-separated arguments (truncated to `EXEC_ARGS_LEN`).
    pub args: [u8; EXEC_ARGS_LEN],
    /// Bytes of `args` filled.
    pub args_len: u32,
    pub _pad: u32,
}

/// One mapping of a watched file: the process and the address `mmap` returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MmapKey {
    pub tgid: u32,
    pub _pad: u32,
    pub addr: u64,
}

/// What was mapped at an [`MmapKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapInfo {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
    /// Bytes mapped, clipped to the file's size.
    pub len: u64,
}

/// An inode, as the kernel names it: `(super_block.s_dev, inode.i_ino)`.
/// `dev` uses the kernel's internal encoding, `major << 20 | minor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// Bytes a process read from one watched file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub tgid: u32,
    pub dev: u32,
    pub ino: u64,
}

/// Length of an extension key, NUL padded, without the dot.
pub const EXT_LEN: usize = 16;

/// A watched file-name extension, lower case, without the dot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExtKey {
    pub ext: [u8; EXT_LEN],
}

/// `WATCH_INODES` value: every regular file at or below the inode is watched.
pub const WATCH_ALL: u64 = u64::MAX;

/// The cached watched decision of one inode, valid for one watch-set
/// generation. It names its own inode and carries a check value: an LRU
/// map reuses a freed element at once, so a reader preempted between the
/// lookup and the copy may find another inode's entry, or half of one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchCacheEntry {
    pub generation: u32,
    pub watched: u32,
    pub dev: u32,
    pub check: u32,
    pub ino: u64,
}

impl WatchCacheEntry {
    /// The check value of the other fields.
    #[inline(always)]
    pub fn digest(&self) -> u32 {
        let a = ((self.generation as u64) << 32) | self.watched as u64;
        let h = (a ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xff51_afd7_ed55_8ccd)
            ^ (self.ino ^ ((self.dev as u64) << 40)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        (h ^ (h >> 32)) as u32
    }
}

/// Knobs user space changes at run time (one slot of `RUNTIME`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Bumped whenever the watch set changes; cached decisions of older
    /// generations are recomputed.
    pub generation: u32,
    pub _pad: u32,
    /// Extensions (bits of `WATCH_EXTS`) watched anywhere in the tree.
    pub any_ext_mask: u64,
    /// Lineage: bytes a process takes from one file or carrier count once
    /// per epoch of this length (the detection window), so re-reading does
    /// not dilute a window and a later window counts them again. 0: once.
    pub epoch_ns: u64,
}

const _: () = {
    assert!(core::mem::size_of::<ProcCounters>() == 80);
    assert!(core::mem::size_of::<ProcInfo>() == 64);
    assert!(core::mem::size_of::<SendKey>() == 24);
    assert!(core::mem::size_of::<SendCounters>() == 16);
    assert!(core::mem::size_of::<InodeKey>() == 16);
    assert!(core::mem::size_of::<FileKey>() == 16);
    assert!(core::mem::size_of::<ExtKey>() == 16);
    assert!(core::mem::size_of::<WatchCacheEntry>() == 24);
    assert!(core::mem::size_of::<RuntimeConfig>() == 24);
    assert!(core::mem::size_of::<Dest>() == 24);
    assert!(core::mem::size_of::<MmapInfo>() == 24);
    assert!(core::mem::size_of::<MmapKey>() == 16);
    assert!(core::mem::size_of::<ExecInfo>() == 392);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are `#[repr(C)]`, made of integers, with explicit padding.
    unsafe impl aya::Pod for ProcCounters {}
    unsafe impl aya::Pod for ProcInfo {}
    unsafe impl aya::Pod for SendKey {}
    unsafe impl aya::Pod for SendCounters {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for FileKey {}
    unsafe impl aya::Pod for ExtKey {}
    unsafe impl aya::Pod for WatchCacheEntry {}
    unsafe impl aya::Pod for RuntimeConfig {}
    unsafe impl aya::Pod for Dest {}
    unsafe impl aya::Pod for MmapInfo {}
    unsafe impl aya::Pod for MmapKey {}
    unsafe impl aya::Pod for ExecInfo {}
    unsafe impl aya::Pod for crate::Offsets {}
}
