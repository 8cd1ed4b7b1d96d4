//! What counts as weights: `--watch` specs resolved to the kernel's watch
//! tables (inodes and extensions). The decision itself is made in the kernel.
//!
//! Accepted forms:
//! - `*.EXT`: files with that extension anywhere;
//! - `DIR` or `DIR/**`: every regular file below DIR, including files created later;
//! - `DIR/*.EXT` or `DIR/**/*.EXT`: files with that extension below DIR (recursive);
//! - `FILE`: that file.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use sensor_common::{maps::MAX_WATCH_EXTS_USIZE, InodeKey, EXT_LEN, WATCH_ALL};

/// File-name extensions of weights, watched anywhere by default.
pub const DEFAULT_EXTENSIONS: [&str; 13] = [
    "safetensors",
    "gguf",
    "ggml",
    "pt",
    "pth",
    "ckpt",
    "bin",
    "onnx",
    "h5",
    "keras",
    "tflite",
    "npz",
    "msgpack",
];
/// Directories watched by default where they exist.
pub const DEFAULT_DIRS: [&str; 4] = [
    "/models",
    "/mnt/models",
    "/data/models",
    "~/.cache/huggingface",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WatchError {
    #[error("invalid watch '{spec}': {reason}")]
    Invalid { spec: String, reason: String },
}

fn invalid(spec: &str, reason: impl ToString) -> WatchError {
    WatchError::Invalid {
        spec: spec.to_string(),
        reason: reason.to_string(),
    }
}

/// One watched inode: a directory (recursive) or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedInode {
    pub key: InodeKey,
    /// `WATCH_ALL`, or the extension bits that count below it.
    pub mask: u64,
    pub path: PathBuf,
}

/// The kernel's watch tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchSet {
    pub inodes: Vec<WatchedInode>,
    /// Extensions by bit index.
    pub extensions: Vec<String>,
    /// Extensions watched anywhere.
    pub any_ext_mask: u64,
}

impl WatchSet {
    /// Resolves user specs; an empty list means the embedded default set.
    pub fn resolve(specs: &[String]) -> Result<Self, WatchError> {
        let mut set = WatchSet::default();
        if specs.is_empty() {
            for ext in DEFAULT_EXTENSIONS {
                set.any_ext_mask |= set.ext_bit(ext, ext)?;
            }
            for dir in DEFAULT_DIRS
                .iter()
                .map(|d| expand_home(d))
                .chain(extra_hf_caches())
            {
                if dir.is_dir() {
                    set.add_inode(&dir.display().to_string(), &dir, WATCH_ALL)?;
                }
            }
            return Ok(set);
        }
        for spec in specs {
            set.add_spec(spec)?;
        }
        Ok(set)
    }

    fn add_spec(&mut self, spec: &str) -> Result<(), WatchError> {
        let s = spec.trim();
        if let Some(ext) = s.strip_prefix("*.") {
            let bit = self.ext_bit(spec, ext)?;
            self.any_ext_mask |= bit;
            return Ok(());
        }
        let (dir, ext) = match s.rsplit_once('/') {
            Some((dir, last)) if last.starts_with("*.") => {
                (dir.strip_suffix("/**").unwrap_or(dir), Some(&last[2..]))
            }
            Some((dir, "**")) => (dir, None),
            _ => (s, None),
        };
        if dir.contains(['*', '?', '[']) || ext.is_some_and(|e| e.contains(['*', '?', '[', '/'])) {
            return Err(invalid(
                spec,
                "unsupported pattern; use FILE, DIR, *.EXT or DIR/**/*.EXT",
            ));
        }
        let path = expand_home(if dir.is_empty() { "/" } else { dir });
        let mask = match ext {
            Some(ext) => self.ext_bit(spec, ext)?,
            None => WATCH_ALL,
        };
        if ext.is_some() && !path.is_dir() {
            return Err(invalid(
                spec,
                format!("{} is not a directory", path.display()),
            ));
        }
        self.add_inode(spec, &path, mask)
    }

    fn add_inode(&mut self, spec: &str, path: &Path, mask: u64) -> Result<(), WatchError> {
        let meta = std::fs::metadata(path).map_err(|e| invalid(spec, e))?;
        let key = inode_key(&meta);
        if let Some(existing) = self.inodes.iter_mut().find(|w| w.key == key) {
            existing.mask = if existing.mask == WATCH_ALL || mask == WATCH_ALL {
                WATCH_ALL
            } else {
                existing.mask | mask
            };
            return Ok(());
        }
        if self.inodes.len() >= sensor_common::maps::MAX_WATCH_INODES as usize {
            return Err(invalid(spec, "too many watched paths"));
        }
        self.inodes.push(WatchedInode {
            key,
            mask,
            path: path.to_path_buf(),
        });
        Ok(())
    }

    /// The bit of an extension, allocating one for a new extension.
    fn ext_bit(&mut self, spec: &str, ext: &str) -> Result<u64, WatchError> {
        let ext = ext.to_ascii_lowercase();
        if ext.is_empty() || ext.len() >= EXT_LEN || ext.contains(['.', '/', '\0']) {
            return Err(invalid(
                spec,
                format!(
                    "extension must be 1 to {} characters without dots",
                    EXT_LEN - 1
                ),
            ));
        }
        let index = match self.extensions.iter().position(|e| *e == ext) {
            Some(i) => i,
            None if self.extensions.len() < MAX_WATCH_EXTS_USIZE => {
                self.extensions.push(ext);
                self.extensions.len() - 1
            }
            None => {
                return Err(invalid(
                    spec,
                    format!("more than {MAX_WATCH_EXTS_USIZE} extensions"),
                ))
            }
        };
        Ok(1u64 << index)
    }

    /// The kernel key of an extension (`WATCH_EXTS`).
    pub fn ext_key(ext: &str) -> [u8; EXT_LEN] {
        let mut key = [0u8; EXT_LEN];
        for (k, b) in key.iter_mut().zip(ext.bytes()) {
            *k = b;
        }
        key
    }

    /// The regular files the watch set covers now, by inode (explicitly
    /// watched files, and the files below watched directories whose
    /// extension the directory's spec takes), at most `limit`, walking at
    /// most `max_depth` levels without following symbolic links: seeded into
    /// the kernel's `WATCHED_FILES`, so a hard link made, or a move out of
    /// the directory done, before the file is ever read keeps it watched.
    pub fn files(&self, limit: usize, max_depth: usize) -> Vec<InodeKey> {
        let mut out = Vec::new();
        for w in &self.inodes {
            let mut stack = vec![(w.path.clone(), 0usize)];
            while let Some((path, depth)) = stack.pop() {
                if out.len() >= limit {
                    return out;
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_file() {
                    if w.mask == WATCH_ALL || self.path_ext_bit(&path) & w.mask != 0 {
                        out.push(inode_key(&meta));
                    }
                } else if meta.is_dir() && depth < max_depth {
                    if let Ok(entries) = std::fs::read_dir(&path) {
                        stack.extend(entries.flatten().map(|e| (e.path(), depth + 1)));
                    }
                }
            }
        }
        out
    }

    /// The `WATCH_EXTS` bit of a path's extension (lower-cased), 0 if none.
    fn path_ext_bit(&self, path: &Path) -> u64 {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
            return 0;
        };
        let ext = ext.to_ascii_lowercase();
        self.extensions
            .iter()
            .position(|e| *e == ext)
            .map_or(0, |i| 1u64 << i)
    }

    /// Paths shown to users, e.g. by `sensor check` and the start-up log.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .extensions
            .iter()
            .enumerate()
            .filter(|(i, _)| self.any_ext_mask & (1 << i) != 0)
            .map(|(_, e)| format!("*.{e}"))
            .collect();
        let by_path: BTreeMap<_, _> = self
            .inodes
            .iter()
            .map(|w| (w.path.display().to_string(), w.mask))
            .collect();
        for (path, mask) in by_path {
            if mask == WATCH_ALL {
                parts.push(path);
            } else {
                for (i, e) in self.extensions.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        parts.push(format!("{path}/**/*.{e}"));
                    }
                }
            }
        }
        parts.join(" ")
    }
}

/// `(s_dev, i_ino)` as the kernel encodes them: `st_dev` is the user-space
/// encoding of the same `dev_t`, re-packed as `major << 20 | minor`.
pub fn inode_key(meta: &std::fs::Metadata) -> InodeKey {
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    InodeKey {
        dev: (major << 20) | minor,
        _pad: 0,
        ino: meta.ino(),
    }
}

fn expand_home(path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/root".into())
            .join(rest),
        None => PathBuf::from(path),
    }
}

/// Hugging Face caches of the host's users (the agent runs as root, but the
/// weights are usually in a user's home).
fn extra_hf_caches() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/root/.cache/huggingface")];
    if let Ok(entries) = std::fs::read_dir("/home") {
        dirs.extend(
            entries
                .flatten()
                .map(|e| e.path().join(".cache/huggingface")),
        );
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_watch_weight_extensions() {
        let set = WatchSet::resolve(&[]).unwrap();
        assert_eq!(set.extensions.len(), DEFAULT_EXTENSIONS.len());
        assert_eq!(set.any_ext_mask, (1u64 << DEFAULT_EXTENSIONS.len()) - 1);
        assert!(set.describe().contains("*.safetensors"));
    }

    #[test]
    fn forms() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let file = dir.path().join("a.bin");
        std::fs::write(&file, b"x").unwrap();
        let specs = vec![
            "*.GGUF".to_string(),
            format!("{d}/**/*.safetensors"),
            format!("{d}/*.pt"),
            file.display().to_string(),
        ];
        let set = WatchSet::resolve(&specs).unwrap();
        assert_eq!(set.extensions, vec!["gguf", "safetensors", "pt"]);
        assert_eq!(set.any_ext_mask, 0b001);
        assert_eq!(set.inodes.len(), 2);
        assert_eq!(
            set.inodes[0].mask, 0b110,
            "both extension specs name the same directory"
        );
        assert_eq!(set.inodes[1].mask, WATCH_ALL);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(set.inodes[1].key.ino, meta.ino());
        // A directory given twice, once whole: the whole wins.
        let set = WatchSet::resolve(&[format!("{d}/*.pt"), d.clone()]).unwrap();
        assert_eq!(set.inodes[0].mask, WATCH_ALL);
    }

    #[test]
    fn errors_name_the_spec() {
        let err = WatchSet::resolve(&["/nonexistent/models".to_string()]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/models"), "{err}");
        for bad in [
            "/tmp/*/x",
            "*.",
            "*.waytoolongextension",
            "/tmp/model-*.bin",
        ] {
            let err = WatchSet::resolve(&[bad.to_string()]).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn ext_key_pads() {
        assert_eq!(&WatchSet::ext_key("pt")[..3], b"pt\0");
    }

    #[test]
    fn kernel_dev_encoding() {
        // makedev(8, 1) in user space is (8 << 8) | 1; the kernel's is 8 << 20 | 1.
        let meta = std::fs::metadata("/").unwrap();
        let key = inode_key(&meta);
        assert_eq!(key.dev >> 20, libc::major(meta.dev()));
        assert_eq!(key.dev & 0xfffff, libc::minor(meta.dev()));
    }
}
