//! Bytes read from regular files by the read family of syscalls.
//!
//! Hook: `tp_btf/sys_exit`, `TP_PROTO(struct pt_regs *regs, long ret)`.
//! Counts the return value of read, pread64, readv, preadv and preadv2 when
//! the descriptor is a regular file, split into watched and not watched.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use sensor_common::{counter, maps, FileKey, InodeKey};

use crate::{
    arch, counters,
    kernel::{current_task, off, offsets_ready, read, read_ptr},
    proc, watch,
};

#[map(name = "FILE_STATS")]
static FILE_STATS: PerCpuHashMap<FileKey, u64> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_FILES, 0);

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;

#[btf_tracepoint(function = "sys_exit")]
pub fn file_sys_exit(ctx: BtfTracePointContext) -> i32 {
    if let Err(reason) = try_file_sys_exit(&ctx) {
        counters::bump(reason);
    }
    0
}

#[inline(always)]
fn try_file_sys_exit(ctx: &BtfTracePointContext) -> Result<(), u32> {
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return Ok(());
    }
    let regs: *const u8 = ctx.arg(0);
    let nr: i64 = read(regs, arch::REGS_SYSCALL_NR)?;
    if !arch::is_read_family(nr) || !offsets_ready() {
        return Ok(());
    }
    let fd: u64 = read(regs, arch::REGS_ARG0)?;
    let Some(file) = fd_to_file(fd)? else {
        return Ok(());
    };
    let inode = read_ptr(file, off!(file_inode))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFREG {
        return Ok(());
    }
    let sb = read_ptr(inode, off!(inode_sb))?;
    let key = InodeKey {
        dev: read(sb, off!(sb_dev))?,
        _pad: 0,
        ino: read(inode, off!(inode_ino))?,
    };
    let watched = watch::is_watched(file, &key)?;

    let tgid = proc::current_tgid();
    let bytes = ret as u64;
    let c = proc::counters_of(tgid)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    unsafe {
        (*c).read_bytes += bytes;
        (*c).read_ops += 1;
        if watched {
            (*c).watched_read_bytes += bytes;
            (*c).watched_read_ops += 1;
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

/// `current->files->fdt->fd[fd]`, `None` past the table or for a free slot.
#[inline(always)]
fn fd_to_file(fd: u64) -> Result<Option<*const u8>, u32> {
    let task = current_task();
    let files = read_ptr(task, off!(task_files))?;
    let fdt = read_ptr(files, off!(files_fdt))?;
    let max_fds: u32 = read(fdt, off!(fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return Ok(None);
    }
    let fds = read_ptr(fdt, off!(fdt_fd))?;
    let file = read_ptr(fds, (fd as usize) * 8)?;
    Ok((!file.is_null()).then_some(file))
}

#[inline(always)]
fn add_file_bytes(key: FileKey, bytes: u64) -> Result<(), u32> {
    if FILE_STATS.get_ptr_mut(key).is_none() {
        let _ = FILE_STATS.insert(key, 0, BPF_NOEXIST as u64);
    }
    let slot = FILE_STATS.get_ptr_mut(key).ok_or(counter::FILE_MAP_FULL)?;
    // SAFETY: this CPU's slot of a per-CPU entry.
    unsafe { *slot += bytes };
    Ok(())
}
