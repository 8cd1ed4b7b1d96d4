//! Privileges: the one table of capabilities the agent is deployed with
//! (the DaemonSet, the README and the tests are all checked against
//! [`DEPLOYMENT`]), a clear refusal when programs cannot be loaded, and,
//! after loading and attaching, giving up every capability no longer needed.
//!
//! Kept after attach: `CAP_BPF` (reading and pruning the maps: with
//! unprivileged BPF disabled every bpf() call needs it), `CAP_SYS_PTRACE`
//! (other processes' /proc exe, cmdline, fd and smaps) and
//! `CAP_DAC_READ_SEARCH` (watched directories and cgroupfs whatever their
//! modes). Everything else leaves the effective, permitted, inheritable and
//! ambient sets. The bounding set is trimmed too when the agent holds
//! `CAP_SETPCAP` (as plain root does); a container runtime that drops ALL
//! has already trimmed it, and `no_new_privs` (always set) makes sure exec
//! can never bring a dropped capability back. Capabilities are per thread:
//! this runs before the agent starts any thread.

use anyhow::{bail, Context as _};

use crate::util::{
    sysinfo,
    sysinfo::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_RESOURCE},
};

pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SETPCAP: u32 = 8;
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_SYS_PTRACE: u32 = 19;

/// One capability the deployment grants.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Grant {
    /// As Kubernetes spells it (`securityContext.capabilities.add`).
    pub name: &'static str,
    #[serde(skip)]
    pub number: u32,
    /// Still held once the programs are attached.
    pub kept: bool,
    pub why: &'static str,
}

/// Exactly what the DaemonSet adds after dropping ALL: the manifest, the
/// README's privileges table and the deployment tests are checked against
/// this list (`sensor check --json` prints it as `capabilities`).
pub const DEPLOYMENT: [Grant; 6] = [
    Grant {
        name: "BPF",
        number: CAP_BPF,
        kept: true,
        why: "create maps, load programs; read and prune the maps while running",
    },
    Grant {
        name: "PERFMON",
        number: CAP_PERFMON,
        kept: false,
        why: "tracing programs (`tp_btf`) and their kernel memory reads",
    },
    Grant {
        name: "NET_ADMIN",
        number: CAP_NET_ADMIN,
        kept: false,
        why: "the `cgroup/sendmsg4,6` programs that see unconnected UDP destinations",
    },
    Grant {
        name: "SYS_RESOURCE",
        number: CAP_SYS_RESOURCE,
        kept: false,
        why: "raise `RLIMIT_MEMLOCK` for maps on kernels before 5.11",
    },
    Grant {
        name: "SYS_PTRACE",
        number: CAP_SYS_PTRACE,
        kept: true,
        why: "read other processes' `/proc/PID/{exe,cmdline,fd,smaps}` (alert details, mmap residency)",
    },
    Grant {
        name: "DAC_READ_SEARCH",
        number: CAP_DAC_READ_SEARCH,
        kept: true,
        why: "walk watched directories and cgroupfs whatever their permissions",
    },
];

/// What the running agent keeps.
fn kept_mask() -> u64 {
    DEPLOYMENT
        .iter()
        .filter(|g| g.kept)
        .fold(0, |m, g| m | (1u64 << g.number))
}

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

fn capget() -> anyhow::Result<(CapHeader, [CapData; 2])> {
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
    Ok((header, data))
}

/// Drops every capability but the kept ones. Returns whether the bounding
/// set could be trimmed too (it needs `CAP_SETPCAP`).
pub fn drop_to_kept() -> anyhow::Result<bool> {
    let (mut header, mut data) = capget()?;
    let effective = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
    let trim_bounding = effective & (1u64 << CAP_SETPCAP) != 0;
    if trim_bounding {
        // Bounding set first, while CAP_SETPCAP is still held.
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let mask = kept_mask();
        for cap in (0..=last).filter(|c| mask & (1u64 << c) == 0) {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: a capability this kernel does not know.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e).with_context(|| {
                        format!("dropping capability {cap} from the bounding set")
                    });
                }
            }
        }
    }
    // Ambient capabilities would survive exec: none.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let have = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    let keep = have & kept_mask();
    for (i, d) in data.iter_mut().enumerate() {
        let part = (keep >> (32 * i)) as u32;
        *d = CapData {
            effective: part,
            permitted: part,
            inheritable: 0,
        };
    }
    // SAFETY: capset with a valid header and data (version 3); lowering
    // the sets needs no capability.
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
    // No capability may come back through exec either: with no_new_privs
    // an exec's permitted set is bounded by the current one.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    Ok(trim_bounding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_is_a_subset_of_the_deployment() {
        let all = DEPLOYMENT.iter().fold(0u64, |m, g| m | (1u64 << g.number));
        assert_eq!(kept_mask() & !all, 0);
        assert_eq!(kept_mask().count_ones(), 3);
        let mut names: Vec<_> = DEPLOYMENT.iter().map(|g| g.name).collect();
        names.dedup();
        assert_eq!(names.len(), DEPLOYMENT.len());
    }
}
