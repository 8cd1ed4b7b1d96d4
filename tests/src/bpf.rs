//! What a process holds of BPF (from `/proc/PID/fdinfo`) and `bpftool`.

use std::{collections::BTreeSet, process::Command};

/// Each BPF object descriptor of `pid`, as `key → value` of its fdinfo.
pub fn fdinfo(pid: u32) -> Vec<Vec<(String, String)>> {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

/// The value of `key` in one fdinfo entry.
pub fn field<'a>(entry: &'a [(String, String)], key: &str) -> Option<&'a str> {
    entry
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// BPF program ids held by `pid`'s descriptors (links and programs both
/// show `prog_id`).
pub fn prog_ids_of(pid: u32) -> BTreeSet<u32> {
    fdinfo(pid)
        .iter()
        .filter_map(|e| field(e, "prog_id")?.parse().ok())
        .collect()
}

/// Runs `bpftool ARGS`; panics with its stderr if it fails. Its stdout.
pub fn bpftool(args: &[&str]) -> Vec<u8> {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
