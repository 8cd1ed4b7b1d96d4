//! io_uring reads and sends (no read/send syscalls at all).

use std::{fs::File, io::Result, os::fd::AsRawFd};

use io_uring::{opcode, squeue, types, IoUring};

use crate::{die, report, Args};

fn one(ring: &mut IoUring, entry: squeue::Entry) -> Result<i32> {
    // SAFETY: every buffer the entry points to outlives this call, which
    // waits for the completion.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| std::io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| std::io::Error::other("no completion"))?;
    let res = cqe.result();
    if res < 0 {
        return Err(std::io::Error::from_raw_os_error(-res));
    }
    Ok(res)
}

/// `uring-read --file F --bs N --op read|readv|read-fixed`
pub fn read(a: &Args) -> Result<()> {
    let f = File::open(a.str("file"))?;
    let fd = types::Fd(f.as_raw_fd());
    let bs = a.num("bs") as usize;
    let mut buf = vec![0u8; bs];
    let mut ring = IoUring::new(8)?;
    let op = a.opt("op").unwrap_or("read");
    if op == "read-fixed" {
        let iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: bs,
        }];
        // SAFETY: the buffer lives until the ring is dropped.
        unsafe { ring.submitter().register_buffers(&iov)? };
    }
    let mut total = 0u64;
    loop {
        let ptr = buf.as_mut_ptr();
        let iov = [libc::iovec {
            iov_base: ptr.cast(),
            iov_len: bs,
        }];
        let entry = match op {
            "read" => opcode::Read::new(fd, ptr, bs as u32).offset(total).build(),
            "readv" => opcode::Readv::new(fd, iov.as_ptr(), 1)
                .offset(total)
                .build(),
            "read-fixed" => opcode::ReadFixed::new(fd, ptr, bs as u32, 0)
                .offset(total)
                .build(),
            _ => die("unknown --op"),
        };
        let n = one(&mut ring, entry)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    report(&[("read_bytes", total)]);
    Ok(())
}

/// Sends `total` bytes of `buf` chunks on a connected socket with
/// IORING_OP_SEND or IORING_OP_SENDMSG; returns what the completions reported.
pub fn send_all(fd: i32, buf: &[u8], total: u64, sendmsg: bool) -> Result<u64> {
    let mut ring = IoUring::new(8)?;
    let mut sent = 0u64;
    while sent < total {
        let want = ((total - sent) as usize).min(buf.len());
        let mut iov = [libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: want,
        }];
        // SAFETY: an all-zero msghdr is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = 1;
        let entry = if sendmsg {
            opcode::SendMsg::new(types::Fd(fd), &msg).build()
        } else {
            opcode::Send::new(types::Fd(fd), buf.as_ptr(), want as u32).build()
        };
        sent += one(&mut ring, entry)? as u64;
    }
    Ok(sent)
}
