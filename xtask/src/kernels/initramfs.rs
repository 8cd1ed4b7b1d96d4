//! The guests' initramfs: an uncompressed `newc` cpio archive holding
//! `/init` (the test driver), the agent and the workload, all static, and
//! the `/dev/console` node PID 1 needs for its output.

use std::path::Path;

use anyhow::{Context as _, Result};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Writes the archive: `init` becomes `/init`, each of `bins` `/bin/NAME`.
pub fn write(out: &Path, init: &Path, bins: &[&Path]) -> Result<()> {
    let mut a = Archive::default();
    for dir in ["bin", "dev", "proc", "sys", "run", "tmp"] {
        a.entry(dir, S_IFDIR | 0o755, (0, 0), &[]);
    }
    a.entry("dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    a.file("init", init)?;
    for bin in bins {
        let name = bin.file_name().context("a binary without a name")?;
        a.file(&format!("bin/{}", name.to_string_lossy()), bin)?;
    }
    a.entry("TRAILER!!!", 0, (0, 0), &[]);
    std::fs::write(out, &a.bytes).with_context(|| format!("writing {}", out.display()))
}

#[derive(Default)]
struct Archive {
    bytes: Vec<u8>,
    ino: u32,
}

impl Archive {
    fn file(&mut self, name: &str, from: &Path) -> Result<()> {
        let body = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        self.entry(name, S_IFREG | 0o755, (0, 0), &body);
        Ok(())
    }

    /// One `070701` header, the NUL-terminated name and the body, each
    /// padded to 4 bytes.
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            body.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}
