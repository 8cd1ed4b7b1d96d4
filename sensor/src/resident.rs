//! How much of a mapping is resident in a process's page tables, from the
//! kernel's own accounting in `/proc/PID/smaps`: the bytes of a watched file
//! a process obtained by mmap (pages it touched, plus those fault-around and
//! large folios mapped with them).

use std::collections::HashMap;

use sensor_common::{MmapInfo, MmapKey};

/// Samples every recorded mapping, reading `/proc/PID/smaps` once per
/// process; mappings of processes that are gone are left out.
pub fn sample_all(mmaps: &[(MmapKey, MmapInfo)]) -> HashMap<MmapKey, Option<u64>> {
    let mut by_tgid: HashMap<u32, Vec<&(MmapKey, MmapInfo)>> = HashMap::new();
    for m in mmaps {
        by_tgid.entry(m.0.tgid).or_default().push(m);
    }
    let mut out = HashMap::new();
    for (tgid, maps) in by_tgid {
        let ranges: Vec<(u64, u64)> = maps.iter().map(|(k, i)| (k.addr, i.len.max(1))).collect();
        if let Some(sampled) = sample(tgid, &ranges) {
            out.extend(maps.iter().map(|(k, _)| *k).zip(sampled));
        }
    }
    out
}

/// For each `[start, start + len)` range, the resident bytes of the
/// file-backed VMAs that begin inside it (a mapping split by mprotect or a
/// partial munmap has several), or `None` when no such VMA is left.
pub fn parse_smaps(text: &str, ranges: &[(u64, u64)]) -> Vec<Option<u64>> {
    let mut out = vec![None; ranges.len()];
    let mut current: Option<usize> = None;
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if let Some((lo, _hi)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A VMA header: `start-end perms offset dev inode [path]`.
            let inode = parts
                .nth(3)
                .and_then(|i| i.parse::<u64>().ok())
                .unwrap_or(0);
            let start = u64::from_str_radix(lo, 16).unwrap_or(u64::MAX);
            current = (inode != 0)
                .then(|| {
                    ranges
                        .iter()
                        .position(|&(s, len)| start >= s && start < s.saturating_add(len))
                })
                .flatten();
            if let Some(i) = current {
                out[i].get_or_insert(0);
            }
        } else if first == "Rss:" {
            if let (Some(i), Some(kb)) = (current, parts.next().and_then(|v| v.parse::<u64>().ok()))
            {
                *out[i].get_or_insert(0) += kb * 1024;
            }
        }
    }
    out
}

/// Samples one process; `None` when it is gone (or smaps is unreadable).
pub fn sample(tgid: u32, ranges: &[(u64, u64)]) -> Option<Vec<Option<u64>>> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/smaps")).ok()?;
    Some(parse_smaps(&text, ranges))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:00 131                        /usr/bin/python3
Size:                  4 kB
Rss:                   4 kB
7f0000000000-7f0002000000 r--s 00000000 fd:00 10012100                   /models/m.safetensors
Size:              32768 kB
Rss:               16384 kB
Pss:               16384 kB
VmFlags: rd sh mr mw me ms sd
7f0002000000-7f0004000000 r--s 02000000 fd:00 10012100                   /models/m.safetensors
Size:              32768 kB
Rss:                2048 kB
7f0010000000-7f0010021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
";

    #[test]
    fn sums_split_mappings_of_a_range() {
        let r = parse_smaps(
            SMAPS,
            &[
                (0x7f00_0000_0000, 64 << 20),
                (0x7f00_1000_0000, 0x21000),
                (0x1000, 4096),
            ],
        );
        assert_eq!(r[0], Some((16384 + 2048) * 1024));
        assert_eq!(r[1], None, "anonymous memory is not a file mapping");
        assert_eq!(r[2], None, "no VMA there");
    }

    #[test]
    fn own_process_is_readable() {
        assert!(sample(std::process::id(), &[]).is_some());
        assert!(sample(u32::MAX, &[]).is_none());
    }
}
