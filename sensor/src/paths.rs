//! Paths of watched files for alerts: the kernel counts by inode; the path
//! is found, while the reading process is alive, among its open files and
//! mapped files (`/proc/PID/fd`, `/proc/PID/map_files`).

use std::collections::HashMap;

use sensor_common::InodeKey;

use crate::watch::inode_key;

#[derive(Default)]
pub struct PathCache {
    map: HashMap<InodeKey, String>,
}

const CAP: usize = 65_536;

impl PathCache {
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
        let unknown = InodeKey {
            dev: (8 << 20) | 1,
            _pad: 0,
            ino: 42,
        };
        assert_eq!(c.path(&unknown), "inode:8:1:42");
    }
}
