//! Ways to take bytes out of a file.

use std::{
    fs::File,
    io::Result,
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
};

use crate::{check, die, report, Args};

/// `read --file F --bs N --mode read|pread|readv|preadv|preadv2|odirect
/// [--for-secs S]`: the whole file once, or (with `--for-secs`) over and over
/// until S seconds passed (a syscall storm); reports bytes and calls.
pub fn read(a: &Args) -> Result<()> {
    let deadline = a
        .opt("for-secs")
        .map(|_| std::time::Instant::now() + std::time::Duration::from_secs(a.num("for-secs")));
    let mode = a.opt("mode").unwrap_or("read");
    let bs = a.num("bs") as usize;
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    if mode == "odirect" {
        opts.custom_flags(libc::O_DIRECT);
    }
    let f = opts.open(a.str("file"))?;
    let fd = f.as_raw_fd();
    // O_DIRECT needs an aligned buffer: over-allocate and align to 4 KiB.
    let mut storage = vec![0u8; bs + 4096];
    let shift = storage.as_ptr().align_offset(4096);
    let buf = &mut storage[shift..shift + bs];
    let mut total = 0u64;
    let mut calls = 0u64;
    let mut off: u64 = 0;
    loop {
        let p = buf.as_mut_ptr().cast::<libc::c_void>();
        let iov = [
            libc::iovec {
                iov_base: p,
                iov_len: bs / 2,
            },
            libc::iovec {
                iov_base: p.wrapping_add(bs / 2),
                iov_len: bs - bs / 2,
            },
        ];
        let off_t = off as libc::off_t;
        // SAFETY: buffers are valid for their lengths; fd is open.
        let n = check(unsafe {
            match mode {
                "read" | "odirect" => libc::read(fd, p, bs),
                "pread" => libc::pread(fd, p, bs, off_t),
                "readv" => libc::readv(fd, iov.as_ptr(), 2),
                "preadv" => libc::preadv(fd, iov.as_ptr(), 2, off_t),
                "preadv2" => libc::preadv2(fd, iov.as_ptr(), 2, off_t, libc::RWF_HIPRI),
                _ => die("unknown --mode"),
            }
        })?;
        calls += 1;
        total += n as u64;
        off += n as u64;
        match deadline {
            // Storm: start over at the end, check the clock now and then.
            Some(d) => {
                if n == 0 {
                    off = 0;
                    // SAFETY: rewinding an open file.
                    unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
                }
                if calls.is_multiple_of(4096) && std::time::Instant::now() >= d {
                    break;
                }
            }
            None if n == 0 => break,
            None => {}
        }
    }
    report(&[("read_bytes", total), ("read_calls", calls)]);
    // Stay alive a while (a live process holds its kernel map entries).
    std::thread::sleep(std::time::Duration::from_millis(a.num_or("hold-ms", 0)));
    Ok(())
}

/// A whole file mapped read-only and shared; unmapped on drop.
pub struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    pub fn open(path: &str) -> Result<Mapping> {
        let f = File::open(path)?;
        let len = f.metadata()?.len() as usize;
        // SAFETY: a fresh read-only shared mapping of an open file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping { ptr, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` bytes long and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// `mmap --file F --touch N [--hold-ms M]`: map the whole file, read one
/// byte of each 4 KiB page of the first N bytes, optionally keep the mapping.
pub fn mmap(a: &Args) -> Result<()> {
    let map = Mapping::open(a.str("file"))?;
    let data = map.bytes();
    let touch = (a.num("touch") as usize).min(data.len());
    let mut sum = 0u64;
    let mut pages = 0u64;
    for off in (0..touch).step_by(4096) {
        // SAFETY: off < len, inside the mapping.
        sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(data.as_ptr().add(off)) } as u64);
        pages += 1;
    }
    std::hint::black_box(sum);
    report(&[
        ("touched_bytes", pages * 4096),
        ("mapped_bytes", data.len() as u64),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(a.num_or("hold-ms", 0)));
    drop(map);
    Ok(())
}

/// `mmap-churn --file F --len L --times N`: map the first L bytes of the
/// file and unmap them at once, N times, touching nothing; reports the
/// bytes mapped in all and what the file really holds (`st_blocks * 512`).
pub fn mmap_churn(a: &Args) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let f = File::open(a.str("file"))?;
    let len = a.num("len") as usize;
    let times = a.num("times");
    for _ in 0..times {
        // SAFETY: a fresh read-only shared mapping of an open file, unmapped
        // right away; nothing reads it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the mapping just made.
        unsafe { libc::munmap(ptr, len) };
    }
    report(&[
        ("mapped_bytes", (len as u64).saturating_mul(times)),
        ("allocated_bytes", f.metadata()?.blocks() * 512),
    ]);
    Ok(())
}

/// `copy-file-range --file F --out G`
pub fn copy_file_range(a: &Args) -> Result<()> {
    let src = File::open(a.str("file"))?;
    let dst = File::create(a.str("out"))?;
    let mut total = 0u64;
    loop {
        // SAFETY: valid fds, null offsets (use the file positions).
        let n = check(unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 24,
                0,
            )
        } as isize)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    report(&[("read_bytes", total)]);
    Ok(())
}

/// `sendfile-file --file F --out G`: sendfile(2) from a file into a file.
pub fn sendfile_to_file(a: &Args) -> Result<()> {
    let src = File::open(a.str("file"))?;
    let dst = File::create(a.str("out"))?;
    let total = sendfile_all(src.as_raw_fd(), dst.as_raw_fd())?;
    report(&[("read_bytes", total)]);
    Ok(())
}

/// sendfile(2) until EOF; returns the bytes it reported.
pub fn sendfile_all(in_fd: i32, out_fd: i32) -> Result<u64> {
    let mut total = 0u64;
    loop {
        // SAFETY: valid fds, null offset.
        let n = check(unsafe { libc::sendfile(out_fd, in_fd, std::ptr::null_mut(), 1 << 20) })?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// `splice-pipe --file F`: splice(2) the file into a pipe, drained by
/// reading the pipe (pipe reads are not file reads).
pub fn splice_to_pipe(a: &Args) -> Result<()> {
    let src = File::open(a.str("file"))?;
    let (r, w) = pipe()?;
    let mut total = 0u64;
    let mut sink = vec![0u8; 1 << 16];
    loop {
        let n = splice(src.as_raw_fd(), w, 1 << 16)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        let mut left = n;
        while left > 0 {
            // SAFETY: valid buffer and fd.
            left -=
                check(unsafe { libc::read(r, sink.as_mut_ptr().cast(), left.min(sink.len())) })?;
        }
    }
    report(&[("read_bytes", total)]);
    Ok(())
}

/// One splice(2) of up to `len` bytes from `from` to `to` (one is a pipe).
pub fn splice(from: i32, to: i32, len: usize) -> Result<usize> {
    // SAFETY: valid fds, null offsets.
    check(unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, 0) })
}

pub fn pipe() -> Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) } as isize)?;
    Ok((fds[0], fds[1]))
}
