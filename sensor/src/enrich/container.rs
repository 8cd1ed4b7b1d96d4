//! Container attribution: the kernel gives each process's cgroup v2 id (the
//! inode number of its cgroup directory); this finds the directory and reads
//! the container id (and pod UID) out of the runtime's naming.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Container and pod of a cgroup; empty strings on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub container: String,
    pub pod_uid: String,
}

/// Reads container ids from cgroup paths of containerd, CRI-O, Docker and
/// podman, with the cgroupfs and systemd drivers:
/// `/kubepods/burstable/pod<uid>/<id>`,
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
/// `/system.slice/docker-<id>.scope`, `/docker/<id>`, `crio-<id>.scope`, `libpod-<id>.scope`.
pub fn parse_cgroup_path(path: &str) -> Attribution {
    let mut out = Attribution::default();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let stem = part
            .strip_suffix(".scope")
            .or_else(|| part.strip_suffix(".slice"))
            .unwrap_or(part);
        if let Some(uid) = pod_uid(stem) {
            out.pod_uid = uid;
            continue;
        }
        let id = stem.rsplit(['-', ':']).next().unwrap_or(stem);
        if is_container_id(id) && !stem.starts_with("crio-conmon-") {
            out.container = id.to_string();
        }
    }
    out
}

fn pod_uid(stem: &str) -> Option<String> {
    let at = stem.rfind("pod")?;
    let uid = &stem[at + 3..];
    let looks_like_uid = uid.len() == 36
        && uid
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
        && (at == 0 || stem[..at].ends_with('-'));
    looks_like_uid.then(|| uid.replace('_', "-"))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Maps cgroup ids to attributions. A new id (a container just started) is
/// looked up through the process that has it: the cgroup path in
/// `/proc/PID/cgroup`, confirmed by that directory's inode being the id.
/// Only when that fails (the process is gone, moved, or in another cgroup
/// namespace) is cgroupfs rescanned, at most once per `rescan_every`; an id
/// a fresh scan did not find (its cgroup already removed) is remembered as
/// unattributed for `forget_misses_after`, so it cannot cause a scan a poll.
pub struct CgroupResolver {
    root: Option<PathBuf>,
    by_id: HashMap<u64, Attribution>,
    misses: HashMap<u64, Instant>,
    last_scan: Option<Instant>,
    rescan_every: Duration,
    forget_misses_after: Duration,
}

impl CgroupResolver {
    pub fn new() -> Self {
        Self {
            root: crate::util::sysinfo::cgroup2_mount(),
            by_id: HashMap::new(),
            misses: HashMap::new(),
            last_scan: None,
            rescan_every: Duration::from_secs(1),
            forget_misses_after: Duration::from_secs(30),
        }
    }

    /// The attribution of `cgroup_id`, the cgroup of process `tgid`.
    pub fn attribution(&mut self, cgroup_id: u64, tgid: u32) -> Attribution {
        if let Some(a) = self.by_id.get(&cgroup_id) {
            return a.clone();
        }
        if self
            .misses
            .get(&cgroup_id)
            .is_some_and(|t| t.elapsed() < self.forget_misses_after)
        {
            return Attribution::default();
        }
        if let Some(a) = self.by_process(cgroup_id, tgid) {
            if self.by_id.len() >= MAX_IDS {
                self.by_id.clear();
            }
            self.by_id.insert(cgroup_id, a.clone());
            return a;
        }
        let due = self
            .last_scan
            .is_none_or(|t| t.elapsed() >= self.rescan_every);
        if due {
            self.scan();
            if !self.by_id.contains_key(&cgroup_id) {
                self.misses.insert(cgroup_id, Instant::now());
            }
        }
        self.by_id.get(&cgroup_id).cloned().unwrap_or_default()
    }

    /// From the process's own cgroup path, when that directory is `cgroup_id`.
    fn by_process(&self, cgroup_id: u64, tgid: u32) -> Option<Attribution> {
        let root = self.root.as_ref()?;
        let text = std::fs::read_to_string(format!("/proc/{tgid}/cgroup")).ok()?;
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let meta = std::fs::metadata(root.join(rel.trim_start_matches('/'))).ok()?;
        (meta.is_dir() && meta.ino() == cgroup_id).then(|| parse_cgroup_path(rel))
    }

    fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut by_id = HashMap::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&root)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            by_id.insert(
                meta.ino(),
                parse_cgroup_path(&format!("/{}", rel.display())),
            );
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        self.by_id = by_id;
        let keep = self.forget_misses_after;
        self.misses.retain(|_, t| t.elapsed() < keep);
    }
}

/// Cgroup ids remembered at most (cleared past it; a scan rebuilds them).
const MAX_IDS: usize = 65_536;

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a9c1e0b7d3a5f6e8c9d0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e";
    const UID: &str = "6a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";

    #[test]
    fn runtimes_and_drivers() {
        let uid_ = UID.replace('-', "_");
        let cases = [
            // containerd / CRI-O, cgroupfs driver
            (format!("/kubepods/burstable/pod{UID}/{ID}"), ID, UID),
            (format!("/kubepods/pod{UID}/{ID}"), ID, UID),
            // systemd driver
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"),
                ID,
                UID,
            ),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"), ID, UID),
            (format!("/kubepods.slice/kubepods-pod{uid_}.slice/docker-{ID}.scope"), ID, UID),
            // Docker without Kubernetes
            (format!("/system.slice/docker-{ID}.scope"), ID, ""),
            (format!("/docker/{ID}"), ID, ""),
            // podman
            (format!("/machine.slice/libpod-{ID}.scope/container"), ID, ""),
            // cgroup v1 style path under a controller
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), ID, UID),
        ];
        for (path, container, pod) in cases {
            let a = parse_cgroup_path(&path);
            assert_eq!(a.container, container, "{path}");
            assert_eq!(a.pod_uid, pod, "{path}");
        }
    }

    #[test]
    fn host_processes_have_none() {
        for path in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/system.slice/ssh.service",
            "/init.scope",
        ] {
            assert_eq!(parse_cgroup_path(path), Attribution::default(), "{path}");
        }
        // conmon (CRI-O's monitor) is not the container.
        assert_eq!(
            parse_cgroup_path(&format!("/system.slice/crio-conmon-{ID}.scope")).container,
            ""
        );
    }

    #[test]
    fn resolver_finds_this_process() {
        let mut r = CgroupResolver::new();
        // An id that is not our cgroup's (no cgroup has inode u64::MAX; 1 is
        // the root's, which is our own when we run at the root) is not
        // taken from our process: cgroupfs is scanned, never a panic.
        let _ = r.attribution(u64::MAX, std::process::id());
        assert!(r.last_scan.is_some() || r.root.is_none());
    }

    #[test]
    fn a_new_id_is_found_through_its_process_without_a_scan() {
        let mut r = CgroupResolver::new();
        let Some(root) = r.root.clone() else {
            return;
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = std::fs::metadata(root.join(rel.trim_start_matches('/')))
            .unwrap()
            .ino();
        assert_eq!(
            r.attribution(id, std::process::id()),
            parse_cgroup_path(rel)
        );
        assert!(r.last_scan.is_none(), "no scan of cgroupfs");
        // Another id than the process's: not taken from it.
        let _ = r.attribution(id + 1_000_000, std::process::id());
        assert!(!r.by_id.contains_key(&(id + 1_000_000)));
    }
}
