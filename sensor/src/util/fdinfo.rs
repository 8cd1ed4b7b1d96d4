//! This process's BPF objects as the kernel describes them in
//! `/proc/self/fdinfo`: links (for tamper detection) and programs (their
//! `recursion_misses`). No capability is needed to read one's own.

use std::collections::BTreeMap;

/// Each BPF descriptor of this process whose link name (`anon_inode:bpf_…`)
/// is `kind` (`bpf_link`, `bpf-prog`), as `key → value`.
pub fn own(kind: &str) -> Vec<BTreeMap<String, String>> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let want = format!("anon_inode:{kind}");
    dir.flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == want))
        .filter_map(|e| {
            std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()
        })
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

/// A numeric field of one entry.
pub fn num<T: std::str::FromStr>(entry: &BTreeMap<String, String>, key: &str) -> Option<T> {
    entry.get(key)?.parse().ok()
}
