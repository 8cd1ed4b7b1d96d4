//! Privileges: a clear refusal when the agent cannot load programs, and
//! after loading and attaching, giving up every capability no longer needed.
//!
//! Kept after attach: `CAP_BPF` (reading and pruning the maps: with
//! unprivileged BPF disabled every bpf() call needs it), `CAP_SYS_PTRACE`
//! (other processes' /proc exe, cmdline, fd and smaps) and
//! `CAP_DAC_READ_SEARCH` (watched directories and cgroupfs whatever their
//! modes). Gone: `CAP_PERFMON`, `CAP_NET_ADMIN`, `CAP_SYS_RESOURCE`,
//! `CAP_SYS_ADMIN` and all others, from the effective, permitted,
//! inheritable and bounding sets. Capabilities are per thread: this runs
//! before the agent starts any thread.

use anyhow::{bail, Context as _};

use crate::sysinfo::{self, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
/// What the running agent keeps.
pub const KEPT: [u32; 3] = [CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_BPF];

/// Fails with what is missing when programs cannot be loaded.
pub fn require_bpf() -> anyhow::Result<()> {
    let caps = sysinfo::effective_capabilities();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "insufficient privileges: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); \
         this process has effective capabilities {caps:#x} (euid {}): run as root or grant them",
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() }
    )
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but [`KEPT`] (bounding set first, while
/// `CAP_SETPCAP` is still held).
pub fn drop_to_kept() -> anyhow::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in (0..=last).filter(|c| !KEPT.contains(c)) {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: a capability this kernel does not know.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e)
                    .with_context(|| format!("dropping capability {cap} from the bounding set"));
            }
        }
    }
    let mask: u64 = KEPT.iter().fold(0, |m, c| m | (1u64 << c));
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a valid header and two data slots (version 3).
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("capget");
    }
    let have = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let keep = have & mask;
    for (i, d) in data.iter_mut().enumerate() {
        let part = (keep >> (32 * i)) as u32;
        *d = CapData {
            effective: part,
            permitted: part,
            inheritable: 0,
        };
    }
    // SAFETY: capset with a valid header and data (version 3).
    if unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error()).context("capset");
    }
    // No capability may come back through exec either.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Ok(())
}
