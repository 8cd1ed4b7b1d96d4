//! Paths of watched files for alerts: the kernel counts by inode; the path
//! is found, while the reading process is alive, among its open files and
//! mapped files (`/proc/PID/fd`, `/proc/PID/map_files`), else by walking the
//! watched directories (bounded, at most once a second).

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use sensor_common::InodeKey;

use crate::watch::inode_key;

#[derive(Default)]
pub struct PathCache {
    map: HashMap<InodeKey, String>,
    /// Watched directories and files, walked for inodes no process shows.
    roots: Vec<PathBuf>,
    last_walk: Option<Instant>,
}

const CAP: usize = 65_536;
/// Entries one walk of the watched directories visits at most.
const WALK_LIMIT: usize = 50_000;

impl PathCache {
    pub fn new(roots: Vec<PathBuf>) -> Self {
        Self {
            roots,
            ..Self::default()
        }
    }

    /// Looks for `inode` among `tgid`'s open and mapped files, unless known.
    pub fn learn(&mut self, tgid: u32, inode: InodeKey) {
        if self.map.contains_key(&inode) {
            return;
        }
        if self.map.len() >= CAP {
            self.map.clear();
        }
        for dir in ["fd", "map_files"] {
            let Ok(entries) = std::fs::read_dir(format!("/proc/{tgid}/{dir}")) else {
                continue;
            };
            for e in entries.flatten() {
                let link = e.path();
                if std::fs::metadata(&link).is_ok_and(|m| inode_key(&m) == inode) {
                    if let Ok(target) = std::fs::read_link(&link) {
                        self.map.insert(inode, target.display().to_string());
                        return;
                    }
                }
            }
        }
        self.walk_roots();
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
        c.learn(std::process::id(), key);
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
}
