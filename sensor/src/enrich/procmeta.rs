//! What an alert says about a process beyond the kernel's identity: its
//! executable and command line, read from /proc while it is alive (taken
//! when it first moves weights or untrusted bytes), else from what the
//! kernel kept of its execve (path and first 256 bytes of arguments).

use std::collections::HashMap;

use sensor_common::ExecInfo;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcMeta {
    pub exe: String,
    pub cmdline: String,
}

/// Bounded cache by (tgid, first-seen time).
pub struct ProcMetaCache {
    map: HashMap<(u32, u64), ProcMeta>,
    cap: usize,
}

impl ProcMetaCache {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
        }
    }

    /// Reads the process's metadata unless already known; `exec` is asked
    /// when /proc no longer has the process.
    pub fn remember(
        &mut self,
        tgid: u32,
        first_seen_ns: u64,
        exec: impl FnOnce() -> Option<ExecInfo>,
    ) {
        if self.map.contains_key(&(tgid, first_seen_ns)) {
            return;
        }
        if self.map.len() >= self.cap {
            // Rare (cap ≫ processes moving weights); start over rather than track age.
            self.map.clear();
        }
        let meta = read(tgid)
            .or_else(|| exec().map(|e| from_exec(&e)))
            .unwrap_or_default();
        self.map.insert((tgid, first_seen_ns), meta);
    }

    pub fn knows(&self, tgid: u32, first_seen_ns: u64) -> bool {
        self.map.contains_key(&(tgid, first_seen_ns))
    }

    pub fn get(&self, tgid: u32, first_seen_ns: u64) -> ProcMeta {
        self.map
            .get(&(tgid, first_seen_ns))
            .cloned()
            .unwrap_or_default()
    }
}

/// From /proc; `None` once the process is gone.
fn read(tgid: u32) -> Option<ProcMeta> {
    let exe = std::fs::read_link(format!("/proc/{tgid}/exe"))
        .ok()?
        .display()
        .to_string();
    let cmdline = cmdline_string(&std::fs::read(format!("/proc/{tgid}/cmdline")).ok()?);
    Some(ProcMeta { exe, cmdline })
}

fn from_exec(e: &ExecInfo) -> ProcMeta {
    let end = e.path.iter().position(|&b| b == 0).unwrap_or(e.path.len());
    let args = &e.args[..(e.args_len as usize).min(e.args.len())];
    ProcMeta {
        exe: String::from_utf8_lossy(&e.path[..end]).into_owned(),
        cmdline: cmdline_string(args),
    }
}

/// NUL-separated arguments, joined by spaces (lossy UTF-8), at most 4 KiB.
pub fn cmdline_string(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    let mut s: String = trimmed
        .split(|&b| b == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    if s.len() > 4096 {
        let mut end = 4096;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_arguments() {
        assert_eq!(
            cmdline_string(b"python3\0exfil.py\0--to\0x\0"),
            "python3 exfil.py --to x"
        );
        assert_eq!(cmdline_string(b""), "");
    }

    #[test]
    fn reads_this_process() {
        let mut c = ProcMetaCache::new(2);
        let me = std::process::id();
        c.remember(me, 1, || None);
        let m = c.get(me, 1);
        assert!(!m.exe.is_empty() && !m.cmdline.is_empty(), "{m:?}");
        assert_eq!(
            c.get(me, 2),
            ProcMeta::default(),
            "another process with the same pid"
        );
    }
}
