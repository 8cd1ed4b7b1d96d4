//! Counting bytes a process took from a regular file, whichever hook saw
//! them: per-process totals, watched split, and per watched file.

use aya_ebpf::{bindings::BPF_NOEXIST, macros::map, maps::PerCpuHashMap};
use sensor_common::{counter, maps, FileKey, InodeKey};

use crate::{
    kernel::{current_task, off, read, read_ptr},
    proc, watch,
};

#[map(name = "FILE_STATS")]
static FILE_STATS: PerCpuHashMap<FileKey, u64> =
    PerCpuHashMap::with_max_entries(maps::DEFAULT_MAX_FILES, 0);

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;

/// `current->files->fdt->fd[fd]`, `None` past the table or for a free slot.
#[inline(always)]
pub fn fd_to_file(fd: u64) -> Result<Option<*const u8>, u32> {
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

/// The inode of `file` when it is a regular file.
#[inline(always)]
pub fn regular_file_inode(file: *const u8) -> Result<Option<(*const u8, InodeKey)>, u32> {
    let inode = read_ptr(file, off!(file_inode))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFREG {
        return Ok(None);
    }
    let sb = read_ptr(inode, off!(inode_sb))?;
    let key = InodeKey {
        dev: read(sb, off!(sb_dev))?,
        _pad: 0,
        ino: read(inode, off!(inode_ino))?,
    };
    Ok(Some((inode, key)))
}

/// Counts `bytes` read by the current process from the regular file `file`.
#[inline(always)]
pub fn count_file_read(file: *const u8, bytes: u64) -> Result<(), u32> {
    let Some((_, key)) = regular_file_inode(file)? else {
        return Ok(());
    };
    let watched = watch::is_watched(file, &key)?;
    let tgid = proc::current_tgid();
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
