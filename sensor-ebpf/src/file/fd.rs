//! From a descriptor of the current process to its `struct file`, and from
//! a file to its inode when it is a regular file.

use sensor_common::{InodeKey, Loss};

use crate::runtime::kernel::{
    current_task, current_task_btf, has_task_btf, off, read, read_ptr, Direct, Mem, Probe, S_IFMT,
    S_IFREG,
};

/// `current->files->fdt->fd[fd]`, `None` past the table or for a free slot.
/// The walk to the table uses direct BTF loads where the kernel has
/// `bpf_get_current_task_btf`, helper reads before 5.11; the slot itself (a
/// variable index) is always a helper read.
#[inline(always)]
pub fn fd_to_file(fd: u64) -> Result<Option<*const u8>, Loss> {
    if has_task_btf() {
        fd_to_file_in::<Direct>(current_task_btf(), fd)
    } else {
        fd_to_file_in::<Probe>(current_task(), fd)
    }
}

#[inline(always)]
fn fd_to_file_in<M: Mem>(task: *const u8, fd: u64) -> Result<Option<*const u8>, Loss> {
    let files: *const u8 = M::get(task, off!(task_files))?;
    if files.is_null() {
        return Ok(None);
    }
    let fdt: *const u8 = M::get(files, off!(files_fdt))?;
    if fdt.is_null() {
        return Ok(None);
    }
    let max_fds: u32 = M::get(fdt, off!(fdt_max_fds))?;
    if fd >= max_fds as u64 {
        return Ok(None);
    }
    let fds: *const u8 = M::get(fdt, off!(fdt_fd))?;
    let file = read_ptr(fds, (fd as usize) * 8)?;
    Ok((!file.is_null()).then_some(file))
}

/// The inode of `file` when it is a regular file.
#[inline(always)]
pub fn regular_file_inode(file: *const u8) -> Result<Option<(*const u8, InodeKey)>, Loss> {
    let inode = read_ptr(file, off!(file_inode))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    if mode & S_IFMT != S_IFREG {
        return Ok(None);
    }
    inode_key(inode).map(Some)
}

/// The `(dev, ino)` of `inode`.
#[inline(always)]
pub fn inode_key(inode: *const u8) -> Result<(*const u8, InodeKey), Loss> {
    let sb = read_ptr(inode, off!(inode_sb))?;
    let key = InodeKey {
        dev: read(sb, off!(sb_dev))?,
        _pad: 0,
        ino: read(inode, off!(inode_ino))?,
    };
    Ok((inode, key))
}
