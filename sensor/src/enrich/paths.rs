//! Paths of watched files for alerts: the kernel counts by inode; the path
//! is found, while the reading process is alive, among its open files and
//! mapped files (`/proc/PID/fd`, `/proc/PID/map_files`), else by walking the
//! watched directories (bounded, at most once a second).
//!
//! A process's descriptors are examined at most [`PER_PROCESS`] a poll (and
//! [`PER_POLL`] for all processes): a process with a million open files is
//! searched over many polls, from where the previous poll stopped, instead of
//! holding one poll for seconds.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use sensor_common::InodeKey;

use crate::{
    kernel::{lineage::Source, watch::inode_key},
    util::sysinfo,
};

#[derive(Default)]
pub struct PathCache {
    map: HashMap<InodeKey, String>,
    /// Watched directories and files, walked for inodes no process shows.
    roots: Vec<PathBuf>,
    last_walk: Option<Instant>,
    /// Searches in progress, by process (kept while continued every poll).
    scans: HashMap<u32, Scan>,
    /// Entries examined this poll, all processes.
    examined: usize,
}

/// Where a process's search stands.
#[derive(Default)]
struct Scan {
    /// Next descriptor number to look at; past the table, `map_files`.
    next_fd: u64,
    /// `map_files` entries already looked at.
    map_skip: usize,
    /// Entries examined this poll.
    used: usize,
    /// Continued during the current poll.
    touched: bool,
}

const CAP: usize = 65_536;
/// Entries one walk of the watched directories visits at most.
const WALK_LIMIT: usize = 50_000;
/// Descriptors and mapped files examined per process per poll.
pub const PER_PROCESS: usize = 4_096;
/// ... and for all processes together.
pub const PER_POLL: usize = 16_384;

impl PathCache {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            ..Self::default()
        }
    }

    /// A new poll: budgets refilled; searches not continued last poll dropped.
    pub fn begin_poll(&mut self) {
        self.examined = 0;
        self.scans.retain(|_, s| std::mem::take(&mut s.touched));
        for s in self.scans.values_mut() {
            s.used = 0;
        }
    }

    /// Looks for `inode` among `tgid`'s open and mapped files, unless known
    /// (within this poll's budget), else walks the watched directories.
    pub fn learn(&mut self, tgid: u32, inode: InodeKey) {
        if self.map.contains_key(&inode) {
            return;
        }
        if self.map.len() >= CAP {
            self.map.clear();
        }
        if !self.search(tgid, inode) {
            self.walk_roots();
        }
    }

    /// Continues `tgid`'s search for `inode`; whether it was found.
    fn search(&mut self, tgid: u32, inode: InodeKey) -> bool {
        let Some(fd_size) = fd_table_size(tgid) else {
            self.scans.remove(&tgid);
            return false;
        };
        let mut examined = self.examined;
        let scan = self.scans.entry(tgid).or_default();
        scan.touched = true;
        let resumed = scan.next_fd > 0 || scan.map_skip > 0;
        let mut wrapped = false;
        let found = loop {
            let mut out_of_budget = false;
            let mut hit = None;
            // Descriptors by number: resumable, unlike a directory listing.
            while scan.next_fd < fd_size {
                if !scan_budget(scan.used, examined) {
                    out_of_budget = true;
                    break;
                }
                scan.used += 1;
                examined += 1;
                let link = PathBuf::from(format!("/proc/{tgid}/fd/{}", scan.next_fd));
                scan.next_fd += 1;
                if let Some(p) = matching(&link, inode) {
                    hit = Some(p);
                    break;
                }
            }
            if hit.is_none() && !out_of_budget {
                if let Ok(entries) = std::fs::read_dir(format!("/proc/{tgid}/map_files")) {
                    for e in entries.flatten().skip(scan.map_skip) {
                        if !scan_budget(scan.used, examined) {
                            out_of_budget = true;
                            break;
                        }
                        scan.used += 1;
                        examined += 1;
                        scan.map_skip += 1;
                        if let Some(p) = matching(&e.path(), inode) {
                            hit = Some(p);
                            break;
                        }
                    }
                }
            }
            if hit.is_some() || out_of_budget {
                break hit;
            }
            // A whole pass without it: start over (once, if this call
            // began mid-pass, for what the earlier part may now hold).
            scan.next_fd = 0;
            scan.map_skip = 0;
            if !resumed || wrapped {
                break None;
            }
            wrapped = true;
        };
        self.examined = examined;
        match found {
            Some(path) => {
                // The next inode starts a fresh pass.
                self.scans.remove(&tgid);
                self.map.insert(inode, path);
                true
            }
            None => false,
        }
    }

    /// Records every regular file below the watched roots.
    fn walk_roots(&mut self) {
        if self.roots.is_empty()
            || self
                .last_walk
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_walk = Some(Instant::now());
        let mut stack = self.roots.clone();
        let mut visited = 0;
        while let Some(p) = stack.pop() {
            visited += 1;
            if visited > WALK_LIMIT {
                break;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&p) {
                    stack.extend(entries.flatten().map(|e| e.path()));
                }
            } else if meta.is_file() && self.map.len() < CAP {
                self.map.insert(inode_key(&meta), p.display().to_string());
            }
        }
    }

    #[cfg(test)]
    fn scan_of(&self, tgid: u32) -> Option<(u64, usize)> {
        self.scans.get(&tgid).map(|s| (s.next_fd, s.map_skip))
    }

    /// The path, or `inode:MAJOR:MINOR:INO` when it could not be found.
    pub fn path(&self, inode: &InodeKey) -> String {
        self.map.get(inode).cloned().unwrap_or_else(|| {
            format!(
                "inode:{}:{}:{}",
                inode.dev >> 20,
                inode.dev & 0xfffff,
                inode.ino
            )
        })
    }
}

impl PathCache {
    /// What a lineage hop took its bytes from, as a path or an address.
    pub fn source(&self, source: &Source) -> String {
        match source {
            Source::Watched {
                key,
                parts,
                complete,
            } => {
                // The name the process read it by (the kernel's, at its
                // first read) over the cache's, which may predate a rename.
                if *complete && !parts.is_empty() {
                    node_path(key, parts, true)
                } else if parts.is_empty() || self.map.contains_key(key) {
                    self.path(key)
                } else {
                    node_path(key, parts, *complete)
                }
            }
            Source::Node {
                key,
                parts,
                complete,
            } => node_path(key, parts, *complete),
            Source::Unix => "unix".into(),
            Source::Inet(ip, port) => std::net::SocketAddr::new(*ip, *port).to_string(),
            Source::Unknown => "unknown".into(),
        }
    }
}

/// A derived file's (or FIFO's) path from the components the kernel kept:
/// the mount point of its device, then its path inside that file system.
/// An anonymous pipe is `pipe:[INODE]`.
fn node_path(key: &InodeKey, parts: &[String], complete: bool) -> String {
    if parts.is_empty() || parts.iter().any(|p| p.starts_with("pipe:")) {
        return format!("pipe:[{}]", key.ino);
    }
    let inside: Vec<&str> = parts.iter().rev().map(String::as_str).collect();
    let inside = inside.join("/");
    if !complete {
        return format!(".../{inside}");
    }
    match sysinfo::mount_of(key.dev) {
        Some((point, root)) => {
            let inside = format!("/{inside}");
            let rel = match inside.strip_prefix(root.trim_end_matches('/')) {
                Some(rest) if root != "/" => rest.to_string(),
                _ => inside,
            };
            let point = point.display().to_string();
            format!("{}{}", point.trim_end_matches('/'), rel)
        }
        None => format!("{}:{}:/{inside}", key.dev >> 20, key.dev & 0xfffff),
    }
}

fn scan_budget(used: usize, examined: usize) -> bool {
    used < PER_PROCESS && examined < PER_POLL
}

/// The link's target when the file it opens is `inode`.
fn matching(link: &std::path::Path, inode: InodeKey) -> Option<String> {
    if std::fs::metadata(link).is_ok_and(|m| inode_key(&m) == inode) {
        return std::fs::read_link(link)
            .ok()
            .map(|t| t.display().to_string());
    }
    None
}

/// Slots in the process's descriptor table (`FDSize`): every open
/// descriptor's number is below it. `None` when the process is gone.
fn fd_table_size(tgid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{tgid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    #[test]
    fn finds_an_open_file_of_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        std::fs::write(&p, b"x").unwrap();
        let _open = File::open(&p).unwrap();
        let key = inode_key(&std::fs::metadata(&p).unwrap());
        let mut c = PathCache::default();
        // Within a few polls (another test holds thousands of descriptors).
        for _ in 0..4 {
            c.begin_poll();
            c.learn(std::process::id(), key);
        }
        assert_eq!(c.path(&key), p.display().to_string());
        // Nobody has it open: found by walking the watched directory.
        let q = dir.path().join("sub").join("v.gguf");
        std::fs::create_dir_all(q.parent().unwrap()).unwrap();
        std::fs::write(&q, b"y").unwrap();
        let qkey = inode_key(&std::fs::metadata(&q).unwrap());
        let mut c = PathCache::new(vec![dir.path().to_path_buf()]);
        c.learn(u32::MAX, qkey);
        assert_eq!(c.path(&qkey), q.display().to_string());
        let unknown = InodeKey {
            dev: (8 << 20) | 1,
            _pad: 0,
            ino: 42,
        };
        assert_eq!(c.path(&unknown), "inode:8:1:42");
    }

    #[test]
    fn a_large_descriptor_table_is_searched_a_budget_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("late.gguf");
        std::fs::write(&p, b"x").unwrap();
        let key = inode_key(&std::fs::metadata(&p).unwrap());
        // Enough descriptors before it that one poll cannot reach it.
        let null = File::open("/dev/null").unwrap();
        let fillers: Vec<File> = (0..PER_PROCESS + 100)
            .map(|_| null.try_clone().unwrap())
            .collect();
        let _late = File::open(&p).unwrap();
        let mut c = PathCache::default();
        let me = std::process::id();
        c.begin_poll();
        c.learn(me, key);
        assert!(c.path(&key).starts_with("inode:"), "not within one budget");
        let (next_fd, _) = c.scan_of(me).unwrap();
        assert_eq!(next_fd, PER_PROCESS as u64, "stopped at the budget");
        // Further calls in the same poll add nothing.
        c.learn(me, key);
        assert_eq!(c.scan_of(me).unwrap().0, PER_PROCESS as u64);
        // The next poll goes on from there and finds it.
        c.begin_poll();
        c.learn(me, key);
        assert_eq!(c.path(&key), p.display().to_string());
        assert!(c.scan_of(me).is_none(), "search done");
        drop(fillers);
    }
}
