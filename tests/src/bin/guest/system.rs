//! What PID 1 of a bare initramfs must do itself: the pseudo filesystems,
//! the loopback interface, and powering the VM off with a status.

use std::{ffi::CString, io};

/// Mounts proc, sysfs, devtmpfs, cgroup v2 and a tmpfs for `/run`, and
/// brings `lo` up.
pub fn boot() -> io::Result<()> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2")?;
    mount("tmpfs", "/run", "tmpfs")?;
    loopback_up()
}

fn mount(source: &str, target: &str, fstype: &str) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let c = |s: &str| CString::new(s).expect("no NUL in a mount argument");
    let (source, target_c, fstype) = (c(source), c(target), c(fstype));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("mount {target}: {e}")));
    }
    Ok(())
}

/// `ip link set lo up`, by ioctl.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket for the interface ioctls, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an all-zero ifreq is valid; the name is NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: fd is a socket, req a valid ifreq for these requests.
    let rc = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = io::Error::last_os_error();
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(io::Error::new(err.kind(), format!("lo up: {err}")));
    }
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: an all-zero utsname is valid, uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname NUL-terminates release.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Ends the VM: qemu's `isa-debug-exit` device at port 0xf4 makes qemu
/// exit with `(code << 1) | 1`. Falls back to a plain power-off.
pub fn power_off(code: u8) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    #[cfg(target_arch = "x86_64")]
    // SAFETY: ioperm grants this process the port; `out` writes one byte to
    // the debug-exit device, which stops the VM.
    unsafe {
        if libc::ioperm(0xf4, 4, 1) == 0 {
            core::arch::asm!("out dx, al", in("dx") 0xf4u16, in("al") code);
        }
    }
    // SAFETY: reboot(2) as PID 1; the VM was started with -no-reboot.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    std::process::exit(code as i32)
}
