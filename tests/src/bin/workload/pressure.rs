//! Map pressure: workloads that fill the sensor's per-destination,
//! per-process and per-mapping maps, then stay alive (a flood that stops
//! but whose processes linger).

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::UdpSocket,
    time::Duration,
};

use crate::{check, report, Args};

type Result<T> = std::io::Result<T>;

/// `udp-spray --ports N [--hold-ms M]`: one byte of UDP to each of N
/// loopback ports (unconnected `sendto`, a destination each), then stays
/// alive M ms. Prints `{"sent_bytes": N, "ports": N}` before holding.
pub fn udp_spray(a: &Args) -> Result<()> {
    let ports = a.num("ports");
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let mut sent = 0u64;
    for i in 0..ports {
        let port = 1024 + (i % 64_000) as u16;
        sent += s.send_to(&[0x5a], ("127.0.0.1", port))? as u64;
    }
    report(&[("sent_bytes", sent), ("ports", ports)]);
    std::io::stdout().flush()?;
    std::thread::sleep(Duration::from_millis(a.num_or("hold-ms", 0)));
    Ok(())
}

/// `idle-readers --procs N --file F [--hold-ms M]`: N child processes each
/// read one byte of F (so the sensor counts each), then idle M ms. Prints
/// `{"procs": N, "read_bytes": N}` once every child has read.
pub fn idle_readers(a: &Args) -> Result<()> {
    let procs = a.num("procs");
    let hold = a.num_or("hold-ms", 0);
    let path = a.str("file").to_string();
    let mut fds = [0i32; 2];
    // SAFETY: a two-slot array for pipe(2).
    check(unsafe { libc::pipe(fds.as_mut_ptr()) } as isize)?;
    let mut children = Vec::new();
    for _ in 0..procs {
        // SAFETY: the child only reads a file, writes a pipe, sleeps and
        // leaves with _exit (no allocation-dependent state is touched).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            let mut one = [0u8; 1];
            let ok = File::open(&path).and_then(|mut f| f.read(&mut one)).is_ok();
            // SAFETY: the write end of our pipe, one byte.
            unsafe {
                libc::write(fds[1], [u8::from(ok)].as_ptr().cast(), 1);
                libc::usleep((hold.min(u64::from(u32::MAX) / 1000) * 1000) as u32);
                libc::_exit(0)
            }
        }
        children.push(pid);
    }
    // SAFETY: our own write end, no longer needed here.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end of the pipe made above, owned from here on.
    let mut ready: File = unsafe { std::os::fd::FromRawFd::from_raw_fd(fds[0]) };
    let mut read = 0u64;
    let mut byte = [0u8; 1];
    for _ in 0..procs {
        ready.read_exact(&mut byte)?;
        read += u64::from(byte[0]);
    }
    report(&[("procs", procs), ("read_bytes", read)]);
    std::io::stdout().flush()?;
    for pid in children {
        // SAFETY: waiting for our own children.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    Ok(())
}
