//! How much of a mapping is resident in a process's page tables, from the
//! kernel's own accounting in `/proc/PID/smaps`: the bytes of a watched file
//! a process obtained by mmap (pages it touched, plus those fault-around and
//! large folios mapped with them).

use std::{
    collections::HashMap,
    io::BufRead,
    time::{Duration, Instant},
};

use sensor_common::{MmapInfo, MmapKey};

/// A sample dearer than this (a process with tens of thousands of
/// mappings: smaps is generated for every one) makes the process wait
/// [`BACKOFF_FACTOR`] times its cost before the next one, at most
/// [`MAX_BACKOFF`].
const CHEAP: Duration = Duration::from_millis(10);
const BACKOFF_FACTOR: u32 = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Sampling stops for this poll once it has taken this long; the processes
/// left out go first next time.
const POLL_BUDGET: Duration = Duration::from_millis(100);

/// Samples residency poll after poll, keeping its cost bounded.
#[derive(Default)]
pub struct Sampler {
    /// When each process with recorded mappings was last sampled.
    last: HashMap<u32, Instant>,
    /// Processes whose last sample was expensive: not before this.
    not_before: HashMap<u32, Instant>,
}

impl Sampler {
    /// Samples the recorded mappings, reading `/proc/PID/smaps` once per
    /// process (least recently sampled first, within [`POLL_BUDGET`]);
    /// mappings of processes that are gone, or not sampled this poll, are
    /// left out.
    pub fn sample_all(&mut self, mmaps: &[(MmapKey, MmapInfo)]) -> HashMap<MmapKey, Option<u64>> {
        let mut by_tgid: HashMap<u32, Vec<&(MmapKey, MmapInfo)>> = HashMap::new();
        for m in mmaps {
            by_tgid.entry(m.0.tgid).or_default().push(m);
        }
        self.last.retain(|t, _| by_tgid.contains_key(t));
        self.not_before.retain(|t, _| by_tgid.contains_key(t));
        let mut order: Vec<(Option<Instant>, u32)> = by_tgid
            .keys()
            .map(|t| (self.last.get(t).copied(), *t))
            .collect();
        order.sort_unstable();
        let poll_start = Instant::now();
        let mut out = HashMap::new();
        for (_, tgid) in order {
            let now = Instant::now();
            if now.duration_since(poll_start) >= POLL_BUDGET {
                break;
            }
            if self.not_before.get(&tgid).is_some_and(|t| *t > now) {
                continue;
            }
            let Some(maps) = by_tgid.get(&tgid) else {
                continue;
            };
            let ranges: Vec<(u64, u64)> =
                maps.iter().map(|(k, i)| (k.addr, i.len.max(1))).collect();
            if let Some(sampled) = sample(tgid, &ranges) {
                out.extend(maps.iter().map(|(k, _)| *k).zip(sampled));
            }
            let done = Instant::now();
            let cost = done.duration_since(now);
            self.last.insert(tgid, done);
            if cost > CHEAP {
                self.not_before
                    .insert(tgid, done + (cost * BACKOFF_FACTOR).min(MAX_BACKOFF));
            } else {
                self.not_before.remove(&tgid);
            }
        }
        out
    }
}

/// For each `[start, start + len)` range, the resident bytes of the
/// file-backed VMAs that begin inside it (a mapping split by mprotect or a
/// partial munmap has several), or `None` when no such VMA is left.
///
/// Streams the text (smaps of a process with 65k mappings is ~70 MB), finds
/// each VMA's range by binary search, and stops past the last range (VMAs
/// come in address order).
pub fn parse_smaps(
    mut r: impl BufRead,
    ranges: &[(u64, u64)],
) -> std::io::Result<Vec<Option<u64>>> {
    let mut out: Vec<Option<u64>> = vec![None; ranges.len()];
    // Ranges by start; `reach[i]`: the furthest end among the first i+1.
    let mut sorted: Vec<(u64, u64, usize)> = ranges
        .iter()
        .enumerate()
        .map(|(i, &(s, len))| (s, s.saturating_add(len), i))
        .collect();
    sorted.sort_unstable();
    let mut reach = Vec::with_capacity(sorted.len());
    let mut far = 0u64;
    for &(_, end, _) in &sorted {
        far = far.max(end);
        reach.push(far);
    }
    let mut current: Option<usize> = None;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        match line.first() {
            // A VMA header: `start-end perms offset dev inode [path]`.
            Some(b'0'..=b'9' | b'a'..=b'f') => {
                let text = String::from_utf8_lossy(&line);
                let mut parts = text.split_whitespace();
                let first = parts.next().unwrap_or("");
                let start = first
                    .split_once('-')
                    .and_then(|(lo, _)| u64::from_str_radix(lo, 16).ok())
                    .unwrap_or(u64::MAX);
                if start >= far {
                    // Past every range.
                    break;
                }
                let inode = parts
                    .nth(3)
                    .and_then(|i| i.parse::<u64>().ok())
                    .unwrap_or(0);
                current = if inode == 0 {
                    None
                } else {
                    containing(&sorted, &reach, start)
                };
                if let Some(i) = current {
                    out[i].get_or_insert(0);
                }
            }
            _ if line.starts_with(b"Rss:") => {
                let kb = String::from_utf8_lossy(&line[4..])
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok());
                if let (Some(i), Some(kb)) = (current, kb) {
                    let e = out[i].get_or_insert(0);
                    *e = e.saturating_add(kb.saturating_mul(1024));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The range (index in the caller's order, the first there if several)
/// that contains `addr`: candidates are the ranges starting at or below it
/// whose running furthest end is past it, scanned down from the last one.
fn containing(sorted: &[(u64, u64, usize)], reach: &[u64], addr: u64) -> Option<usize> {
    let mut j = sorted.partition_point(|&(s, _, _)| s <= addr);
    let mut best: Option<usize> = None;
    while j > 0 && reach[j - 1] > addr {
        j -= 1;
        let (_, end, i) = sorted[j];
        if addr < end {
            best = Some(best.map_or(i, |b| b.min(i)));
        }
    }
    best
}

/// Samples one process; `None` when it is gone (or smaps is unreadable).
pub fn sample(tgid: u32, ranges: &[(u64, u64)]) -> Option<Vec<Option<u64>>> {
    let f = std::fs::File::open(format!("/proc/{tgid}/smaps")).ok()?;
    parse_smaps(std::io::BufReader::with_capacity(64 * 1024, f), ranges).ok()
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
            SMAPS.as_bytes(),
            &[
                (0x7f00_0000_0000, 64 << 20),
                (0x7f00_1000_0000, 0x21000),
                (0x1000, 4096),
            ],
        )
        .unwrap();
        assert_eq!(r[0], Some((16384 + 2048) * 1024));
        assert_eq!(r[1], None, "anonymous memory is not a file mapping");
        assert_eq!(r[2], None, "no VMA there");
    }

    #[test]
    fn overlapping_and_unordered_ranges_match_the_first_given() {
        let r = parse_smaps(
            SMAPS.as_bytes(),
            &[
                (0x7f00_0200_0000, 32 << 20),
                (0x7f00_0000_0000, 64 << 20),
                (0x7f00_0000_0000, 4096),
            ],
        )
        .unwrap();
        assert_eq!(
            r[0],
            Some(2048 * 1024),
            "the second VMA is in both; first given wins"
        );
        assert_eq!(
            r[1],
            Some(16384 * 1024),
            "the first VMA: ranges 1 and 2, 1 given first"
        );
        assert_eq!(r[2], None);
    }

    #[test]
    fn stops_reading_past_the_last_range() {
        // Garbage after the last range would fail the UTF-8-free parse only
        // if read; a reader that errors past a point proves the stop.
        struct Fused<'a>(&'a [u8], usize);
        impl std::io::Read for Fused<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.1 >= self.0.len() {
                    return Err(std::io::Error::other("read past the end"));
                }
                let n = buf.len().min(self.0.len() - self.1).min(16);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let text = SMAPS.to_string();
        let header = text.find("7f0010000000").unwrap();
        let cut = header + text[header..].find('\n').unwrap() + 1;
        let r = parse_smaps(
            std::io::BufReader::with_capacity(16, Fused(&text.as_bytes()[..cut], 0)),
            &[(0x7f00_0000_0000, 64 << 20)],
        )
        .unwrap();
        assert_eq!(r[0], Some((16384 + 2048) * 1024));
    }

    #[test]
    fn own_process_is_readable() {
        assert!(sample(std::process::id(), &[]).is_some());
        assert!(sample(u32::MAX, &[]).is_none());
    }
}
