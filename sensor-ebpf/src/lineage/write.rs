//! A holder wrote into a file descriptor: a regular file becomes derived,
//! a pipe or FIFO carries what it wrote to whoever reads it. (Sockets are
//! marked where sends are counted, `net::send`.)

use sensor_common::Loss;

use super::{carrier, holding};
use crate::{
    file::fd,
    process::stats,
    runtime::kernel::{off, read, read_ptr},
};

/// After a write-family syscall put `bytes` into descriptor `fd`.
#[inline(always)]
pub fn written(fd: u64, bytes: u64) -> Result<(), Loss> {
    let tgid = stats::current_tgid();
    // Most writers hold nothing: one lookup, then done.
    let Some(h) = holding::of(tgid) else {
        return Ok(());
    };
    let Some(file) = fd::fd_to_file(fd)? else {
        return Ok(());
    };
    let inode = read_ptr(file, off!(file_inode))?;
    let mode: u16 = read(inode, off!(inode_mode))?;
    let Some(key) = carrier::of_file(mode, inode)? else {
        return Ok(());
    };
    let dentry = read_ptr(file, off!(file_dentry))?;
    carrier::written(key, &h, tgid, bytes, dentry);
    Ok(())
}
