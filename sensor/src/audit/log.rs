//! Writing the audit log: accumulating accesses per interval, sealing each
//! record into the chain, rotating by size and fsyncing on a cadence.
//! Intervals are timed on the monotonic clock; the wall clock only labels
//! them.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;

use super::{
    chain,
    record::{Access, Destination, Envelope, Event},
    AuditPoll,
};
use crate::{
    config::AuditConfig,
    util::time::{rfc3339, unix_secs},
};

/// A moment on both clocks: the monotonic one times intervals and fsyncs,
/// the wall clock labels records.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub wall: SystemTime,
    pub mono: Instant,
}

impl Now {
    pub fn current() -> Now {
        Now {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }
}

/// How far the wall clock may drift from the monotonic one within an
/// interval before it counts as stepped.
const STEP_SLACK: Duration = Duration::from_secs(2);

/// The wall time an interval that started at `start` and lasted `elapsed`
/// (monotonic) ended: `wall_now`, unless the wall clock was stepped during
/// it; then `start + elapsed`, so a record never spans a negative or a
/// giant interval.
pub fn span_end(start: SystemTime, elapsed: Duration, wall_now: SystemTime) -> SystemTime {
    match wall_now.duration_since(start) {
        Ok(d) if d <= elapsed + STEP_SLACK && d + STEP_SLACK >= elapsed => wall_now,
        _ => start + elapsed,
    }
}

/// The agent's open audit log.
pub struct AuditLog {
    cfg: AuditConfig,
    file: File,
    size: u64,
    /// Sequence number of the next record.
    seq: u64,
    /// Hash of the last record written.
    prev: String,
    last_sync: Instant,
    unsynced: bool,
    /// The open interval: its start on the wall clock (for the records)
    /// and on the monotonic clock (for its length).
    span_start: SystemTime,
    span_mono: Instant,
    /// (pid, dev, inode) → the access so far in this interval.
    pending: BTreeMap<(u32, u32, u64), Access>,
    /// pid → bytes sent per destination in this interval.
    sends: HashMap<u32, Vec<Destination>>,
    /// Records written since opened.
    written: u64,
    /// Files folded into `folded` records since opened.
    folded: u64,
    /// pid → the watched files it read (as record templates), so sends in a
    /// later interval are recorded against them too.
    readers: HashMap<u32, Vec<Access>>,
}

/// Processes remembered as readers of watched files (their later sends are
/// audited); past it the oldest-inserted are forgotten first.
const MAX_READERS: usize = 16_384;

/// How the previous run ended, found when the log is opened again.
#[derive(Clone, Debug, PartialEq)]
pub struct Gap {
    pub from: String,
    pub seconds: u64,
    pub clean: bool,
    pub truncated_bytes: u64,
    /// Where a log file that ended in garbage was set aside.
    pub damaged_file: Option<String>,
}

/// The last record of a log: its sequence number, hash, kind and time.
#[derive(Debug)]
struct Tail {
    seq: u64,
    hash: String,
    kind: String,
    ts: String,
    unix: Option<u64>,
}

/// Bytes at the end of a file searched for its last valid record.
const TAIL_SCAN: u64 = 1 << 20;

fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open audit-log {}", path.display()))
}

impl AuditLog {
    /// Opens (or creates) the log and continues its chain: a `gap` record
    /// for the span the agent did not run (returned too), then `start`.
    /// A log whose last line is not a record (garbage) is renamed to
    /// `PATH.damaged-UNIXTIME` and the chain continues from its last valid
    /// record, in a new file.
    pub fn open(
        cfg: &AuditConfig,
        host: &str,
        now: Now,
    ) -> anyhow::Result<(AuditLog, Option<Gap>)> {
        let path = &cfg.path;
        let truncated = trim_torn_tail(path)
            .with_context(|| format!("cannot read audit-log {}", path.display()))?;
        let (tail, garbage) =
            scan_tail(path).with_context(|| format!("cannot read audit-log {}", path.display()))?;
        let damaged_file = if garbage {
            let aside = damaged_name(path, now.wall);
            std::fs::rename(path, &aside).with_context(|| {
                format!(
                    "audit-log {} ends in a line that is not a record, and cannot be set aside",
                    path.display()
                )
            })?;
            tracing::warn!(
                "audit log {} ends in a line that is not a record: set aside as {}; a new file continues the chain",
                path.display(),
                aside.display()
            );
            Some(aside.display().to_string())
        } else {
            None
        };
        let tail = match tail {
            Some(t) => Some(t),
            None => {
                scan_tail(&rotated(path, 1))
                    .with_context(|| format!("cannot read audit-log {}", path.display()))?
                    .0
            }
        };
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let mut log = AuditLog {
            cfg: cfg.clone(),
            file,
            size,
            seq: tail.as_ref().map(|t| t.seq + 1).unwrap_or(0),
            prev: tail
                .as_ref()
                .map(|t| t.hash.clone())
                .unwrap_or_else(|| chain::GENESIS.to_string()),
            last_sync: now.mono,
            unsynced: false,
            span_start: now.wall,
            span_mono: now.mono,
            pending: BTreeMap::new(),
            sends: HashMap::new(),
            written: 0,
            folded: 0,
            readers: HashMap::new(),
        };
        let gap = match (tail, &damaged_file) {
            (Some(t), _) => {
                let now_unix = unix_secs(now.wall);
                Some(Gap {
                    seconds: t.unix.map(|u| now_unix.saturating_sub(u)).unwrap_or(0),
                    from: t.ts,
                    clean: t.kind == "stop" && truncated == 0 && damaged_file.is_none(),
                    truncated_bytes: truncated,
                    damaged_file: damaged_file.clone(),
                })
            }
            (None, Some(_)) => Some(Gap {
                from: String::new(),
                seconds: 0,
                clean: false,
                truncated_bytes: truncated,
                damaged_file: damaged_file.clone(),
            }),
            (None, None) => None,
        };
        if let Some(g) = &gap {
            log.write(
                &Event::Gap {
                    from: g.from.clone(),
                    until: rfc3339(now.wall),
                    seconds: g.seconds,
                    clean: g.clean,
                    truncated_bytes: g.truncated_bytes,
                    damaged_file: g.damaged_file.clone(),
                },
                now.wall,
            )?;
        }
        log.write(
            &Event::Start {
                version: env!("CARGO_PKG_VERSION").into(),
                host: host.into(),
                pid: std::process::id(),
                interval_s: cfg.interval.as_secs(),
                keyed: cfg.key.is_some(),
            },
            now.wall,
        )?;
        log.sync()?;
        Ok((log, gap))
    }

    /// Adds one poll's accesses and sends to the current interval.
    pub fn observe(&mut self, poll: AuditPoll) {
        for a in poll.accesses {
            self.remember_reader(&a);
            let key = (a.pid, a.dev, a.inode);
            match self.pending.get_mut(&key) {
                Some(e) => {
                    e.read_bytes += a.read_bytes;
                    // Later polls may know more (exe read once the process was seen).
                    if e.exe.is_empty() {
                        e.exe = a.exe;
                        e.cmdline = a.cmdline;
                    }
                }
                None => {
                    self.pending.insert(key, a);
                }
            }
        }
        for (pid, d) in poll.sends {
            let list = self.sends.entry(pid).or_default();
            match list
                .iter_mut()
                .find(|x| x.addr == d.addr && x.port == d.port)
            {
                Some(x) => x.bytes += d.bytes,
                None => list.push(d),
            }
        }
    }

    /// Records written since the log was opened.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Files folded into per-process summary records since opened.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// The last record written: its sequence number and hash.
    pub fn head(&self) -> Option<(u64, &str)> {
        self.seq.checked_sub(1).map(|s| (s, self.prev.as_str()))
    }

    /// Whether PATH is still the file being written. When someone removed
    /// or replaced it (its device and inode differ from the open file's, or
    /// the open file has no link left), a new file is opened at PATH and
    /// the finding is returned; the chain goes on in the new file.
    pub fn check_file(&mut self) -> anyhow::Result<Option<String>> {
        let path = self.cfg.path.clone();
        let open = self
            .file
            .metadata()
            .with_context(|| format!("stat of audit-log {}", path.display()))?;
        let how = match std::fs::metadata(&path) {
            Ok(m) if m.dev() == open.dev() && m.ino() == open.ino() && open.nlink() > 0 => {
                return Ok(None)
            }
            Ok(_) => "replaced by another file",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "removed",
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("stat of audit-log {}", path.display()))
                )
            }
        };
        // What was written but not yet synced went with the old file.
        let _ = self.file.sync_data();
        self.file = open_append(&path)?;
        self.size = self.file.metadata()?.len();
        self.unsynced = false;
        let last = self
            .head()
            .map(|(s, _)| format!("; its last record was seq {s}"))
            .unwrap_or_default();
        Ok(Some(format!(
            "audit log {} was {how} while the agent ran{last}; a new file continues the chain",
            path.display()
        )))
    }

    /// Writes the interval's records once it is over (on the monotonic
    /// clock), and fsyncs on cadence.
    pub fn tick(&mut self, now: Now) -> anyhow::Result<()> {
        if now.mono.saturating_duration_since(self.span_mono) >= self.cfg.interval {
            self.flush(now)?;
        }
        if self.unsynced && now.mono.saturating_duration_since(self.last_sync) >= self.cfg.fsync {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes one agent event (a tamper finding) at once.
    pub fn event(&mut self, event: &Event, now: Now) -> anyhow::Result<()> {
        self.write(event, now.wall)?;
        if self.cfg.fsync.is_zero() {
            self.sync()?;
        }
        Ok(())
    }

    /// A clean stop: the open interval's records, `stop`, fsync.
    pub fn stop(mut self, reason: &str, now: Now) -> anyhow::Result<()> {
        self.flush(now)?;
        self.write(
            &Event::Stop {
                reason: reason.into(),
            },
            now.wall,
        )?;
        self.sync()
    }

    fn remember_reader(&mut self, a: &Access) {
        if self.readers.len() >= MAX_READERS && !self.readers.contains_key(&a.pid) {
            if let Some(&victim) = self.readers.keys().next() {
                self.readers.remove(&victim);
            }
        }
        let files = self.readers.entry(a.pid).or_default();
        if !files.iter().any(|f| f.dev == a.dev && f.inode == a.inode) {
            files.push(Access {
                read_bytes: 0,
                ..a.clone()
            });
        }
    }

    fn flush(&mut self, now: Now) -> anyhow::Result<()> {
        let elapsed = now.mono.saturating_duration_since(self.span_mono);
        let end = span_end(self.span_start, elapsed, now.wall);
        let (start, end_text) = (rfc3339(self.span_start), rfc3339(end));
        let mut pending = std::mem::take(&mut self.pending);
        let sends = std::mem::take(&mut self.sends);
        // A reader that only sent this interval: a record per file it read
        // before, with 0 bytes read and what it sent.
        for pid in sends.keys() {
            if pending.keys().any(|(p, _, _)| p == pid) {
                continue;
            }
            for f in self.readers.get(pid).into_iter().flatten() {
                pending.insert((f.pid, f.dev, f.inode), f.clone());
            }
        }
        let mut by_pid: BTreeMap<u32, Vec<Access>> = BTreeMap::new();
        for (_, mut a) in pending {
            a.start = start.clone();
            a.end = end_text.clone();
            if let Some(dests) = sends.get(&a.pid) {
                a.sent_bytes = dests.iter().map(|d| d.bytes).sum();
                a.untrusted_sent_bytes = dests
                    .iter()
                    .filter(|d| d.class == "untrusted")
                    .map(|d| d.bytes)
                    .sum();
                a.destinations = dests.clone();
            }
            by_pid.entry(a.pid).or_default().push(a);
        }
        let cap = self.cfg.max_records_per_process.max(1);
        for (_, mut list) in by_pid {
            let rest = if list.len() > cap {
                // The most read files keep their own records.
                list.sort_by_key(|a| std::cmp::Reverse(a.read_bytes));
                let rest = list.split_off(cap);
                list.sort_by_key(|a| (a.dev, a.inode));
                rest
            } else {
                Vec::new()
            };
            for a in &list {
                self.write(&Event::Access(Box::new(a.clone())), end)?;
            }
            if let (Some(first), false) = (list.first(), rest.is_empty()) {
                let event = Event::Folded {
                    start: start.clone(),
                    end: end_text.clone(),
                    pid: first.pid,
                    ppid: first.ppid,
                    uid: first.uid,
                    comm: first.comm.clone(),
                    exe: first.exe.clone(),
                    container: first.container.clone(),
                    kept: list.len() as u64,
                    files: rest.len() as u64,
                    read_bytes: rest.iter().map(|a| a.read_bytes).sum(),
                    sent_bytes: first.sent_bytes,
                    untrusted_sent_bytes: first.untrusted_sent_bytes,
                };
                self.write(&event, end)?;
                self.folded += rest.len() as u64;
            }
        }
        // The next interval starts now on both clocks (after a step, the
        // wall clock's new reading).
        self.span_start = now.wall;
        self.span_mono = now.mono;
        Ok(())
    }

    /// Seals and appends one record, rotating first when it would not fit.
    fn write(&mut self, event: &Event, now: SystemTime) -> anyhow::Result<()> {
        let (mut line, mut hash) = self.seal(event, now)?;
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.cfg.max_bytes {
            // Rotation may write a record of its own: seal again after it.
            self.rotate(now)?;
            (line, hash) = self.seal(event, now)?;
        }
        let len = line.len() as u64 + 1;
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("writing audit-log {}", self.cfg.path.display()))?;
        self.size += len;
        self.seq += 1;
        self.written += 1;
        self.prev = hash;
        self.unsynced = true;
        if self.cfg.fsync.is_zero() {
            self.sync()?;
        }
        Ok(())
    }

    /// The next record's line and hash.
    fn seal(&self, event: &Event, now: SystemTime) -> anyhow::Result<(String, String)> {
        let ts = rfc3339(now);
        let body = serde_json::to_string(&Envelope {
            seq: self.seq,
            ts: &ts,
            event,
            prev: &self.prev,
        })?;
        Ok(chain::seal(&body, self.cfg.key.as_deref()))
    }

    /// PATH → PATH.1 → … → PATH.N; the file pushed past N is deleted, and
    /// the new file says so first (`rotate`), so a verifier can tell a
    /// rotation from a removed file.
    fn rotate(&mut self, now: SystemTime) -> anyhow::Result<()> {
        self.sync()?;
        let path = self.cfg.path.clone();
        let n = self.cfg.max_files;
        let oldest = rotated(&path, n);
        let dropped = match scan_tail(&oldest) {
            Ok((Some(t), _)) => Some(t.seq),
            _ => None,
        };
        if oldest.exists() {
            std::fs::remove_file(&oldest)
                .with_context(|| format!("removing {}", oldest.display()))?;
        }
        for i in (1..n).rev() {
            let from = rotated(&path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&path, i + 1))?;
            }
        }
        std::fs::rename(&path, rotated(&path, 1))?;
        self.file = open_append(&path)?;
        self.size = 0;
        if let Some(seq) = dropped {
            self.write(
                &Event::Rotate {
                    dropped_file: oldest.display().to_string(),
                    dropped_through_seq: seq,
                },
                now,
            )?;
        }
        Ok(())
    }

    fn sync(&mut self) -> anyhow::Result<()> {
        self.file
            .sync_data()
            .with_context(|| format!("fsync of audit-log {}", self.cfg.path.display()))?;
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }
}

/// `PATH.i`.
pub fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// `PATH.damaged-UNIXTIME` (with `-N` when taken).
fn damaged_name(path: &Path, now: SystemTime) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{}", unix_secs(now)));
    let base = PathBuf::from(name);
    let mut candidate = base.clone();
    let mut i = 1;
    while candidate.exists() {
        let mut n = base.as_os_str().to_owned();
        n.push(format!("-{i}"));
        candidate = PathBuf::from(n);
        i += 1;
    }
    candidate
}

/// A write cut short by a crash leaves a line without its newline: cut it
/// off (the `gap` record says how many bytes). Returns that count.
fn trim_torn_tail(path: &Path) -> std::io::Result<u64> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let (keep, _) = last_newline(&mut f, len)?;
    if keep < len {
        f.set_len(keep)?;
        f.sync_data()?;
    }
    Ok(len - keep)
}

/// Where the content up to and including the last newline ends, and the
/// start of the last complete line.
fn last_newline(f: &mut File, len: u64) -> std::io::Result<(u64, u64)> {
    let mut chunk = 64 * 1024u64;
    loop {
        let from = len.saturating_sub(chunk);
        let mut buf = vec![0u8; (len - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut buf)?;
        if let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
            let end_abs = from + end as u64 + 1;
            if let Some(start) = buf[..end].iter().rposition(|b| *b == b'\n') {
                return Ok((end_abs, from + start as u64 + 1));
            }
            if from == 0 {
                return Ok((end_abs, 0));
            }
        } else if from == 0 {
            return Ok((0, 0));
        }
        chunk *= 4;
    }
}

/// A line as a record's tail, if it is a sealed JSON record with a seq.
fn tail_of(line: &str) -> Option<Tail> {
    let sealed = chain::unseal(line)?;
    let v: serde_json::Value = serde_json::from_str(&sealed.body).ok()?;
    let ts = v["ts"].as_str().unwrap_or_default().to_string();
    Some(Tail {
        seq: v["seq"].as_u64()?,
        hash: sealed.hash.to_string(),
        kind: v["kind"].as_str().unwrap_or_default().to_string(),
        unix: super::parse_rfc3339(&ts),
        ts,
    })
}

/// The last valid record among the last [`TAIL_SCAN`] bytes of `path`
/// (complete lines only), and whether the last line is not a record
/// (garbage). `(None, false)` for a missing or empty file.
fn scan_tail(path: &Path) -> std::io::Result<(Option<Tail>, bool)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, false)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = len.saturating_sub(TAIL_SCAN);
    let mut buf = vec![0u8; (len - from) as usize];
    f.seek(SeekFrom::Start(from))?;
    f.read_exact(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    // Complete lines: up to the last newline; the first one may be cut by
    // the window.
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return Ok((None, false)),
    };
    let mut lines: Vec<&str> = complete.split('\n').collect();
    if from > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let mut garbage = false;
    for (i, line) in lines.iter().rev().enumerate() {
        if let Some(t) = tail_of(line) {
            return Ok((Some(t), garbage));
        }
        if i == 0 {
            garbage = true;
        }
    }
    Ok((None, garbage || !lines.is_empty()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::{files_of, verify::verify};

    fn cfg(dir: &Path, max_bytes: u64, max_files: u32) -> AuditConfig {
        AuditConfig {
            path: dir.join("audit.log"),
            interval: Duration::from_secs(1),
            max_bytes,
            max_files,
            fsync: Duration::from_secs(1),
            key: None,
            max_records_per_process: 64,
        }
    }

    /// A fixed start on both clocks.
    fn t0() -> Now {
        Now {
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_712_400),
            mono: Instant::now(),
        }
    }

    /// `secs` after `base` on both clocks.
    fn at(base: Now, secs: u64) -> Now {
        Now {
            wall: base.wall + Duration::from_secs(secs),
            mono: base.mono + Duration::from_secs(secs),
        }
    }

    fn access(pid: u32, inode: u64) -> Access {
        Access {
            pid,
            comm: "reader".into(),
            path: format!("/models/{inode}.gguf"),
            dev: 1,
            inode,
            read_bytes: 4096,
            ..Access::default()
        }
    }

    /// Writes `n` access records, one interval each.
    fn fill(log: &mut AuditLog, n: u64, t0: Now) {
        for i in 0..n {
            log.observe(AuditPoll {
                accesses: vec![access(7, i)],
                sends: Vec::new(),
            });
            log.tick(at(t0, i + 1)).unwrap();
        }
    }

    #[test]
    fn rotation_keeps_the_chain_and_says_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 4096, 2);
        let t0 = t0();
        let (mut log, gap) = AuditLog::open(&c, "n1", t0).unwrap();
        assert_eq!(gap, None);
        fill(&mut log, 60, t0);
        log.stop("test", at(t0, 100)).unwrap();
        let files = files_of(std::slice::from_ref(&c.path)).unwrap();
        assert_eq!(files.len(), 3, "PATH.2, PATH.1, PATH: {files:?}");
        let all: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        assert!(
            all.contains("\"kind\":\"rotate\""),
            "the dropped file is recorded"
        );
        let s = verify(&files, None).expect("intact after rotations");
        assert!(
            s.first_seq > 0,
            "the oldest records were rotated away: {s:?}"
        );
        // start + 60 accesses + stop, and one `rotate` per dropped file.
        assert!(s.last_seq > 61, "{s:?}");
        assert!(all.trim_end().ends_with("}") && all.contains("\"kind\":\"stop\""));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_reported_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, 4);
        let t0 = t0();
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        fill(&mut log, 3, t0);
        drop(log); // no stop: as if killed
        let torn = b"{\"seq\":4,\"ts\":\"2026-11-";
        let mut f = OpenOptions::new().append(true).open(&c.path).unwrap();
        f.write_all(torn).unwrap();
        drop(f);
        let later = at(t0, 60);
        let (log, gap) = AuditLog::open(&c, "n1", later).unwrap();
        let gap = gap.expect("a gap after the unclean end");
        assert!(!gap.clean);
        assert_eq!(gap.truncated_bytes, torn.len() as u64);
        assert_eq!(
            gap.seconds, 57,
            "from the last record (t0+3) to now (t0+60)"
        );
        log.stop("test", later).unwrap();
        verify(std::slice::from_ref(&c.path), None).expect("the chain continues");
    }

    #[test]
    fn sends_after_the_reads_are_recorded_against_the_files_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, 4);
        let t0 = t0();
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        fill(&mut log, 1, t0);
        log.observe(AuditPoll {
            accesses: Vec::new(),
            sends: vec![(
                7,
                Destination {
                    addr: "198.18.0.2".into(),
                    port: 443,
                    class: "untrusted".into(),
                    bytes: 4096,
                },
            )],
        });
        log.tick(at(t0, 5)).unwrap();
        log.stop("test", at(t0, 6)).unwrap();
        let text = std::fs::read_to_string(&c.path).unwrap();
        let later: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|r: &serde_json::Value| r["kind"] == "access" && r["read_bytes"] == 0)
            .collect();
        assert_eq!(later.len(), 1, "{text}");
        assert_eq!(later[0]["untrusted_sent_bytes"], 4096);
        assert_eq!(later[0]["path"], "/models/0.gguf");
    }

    fn read_records(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_garbage_last_line_is_set_aside_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, 4);
        let t0 = t0();
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        fill(&mut log, 3, t0);
        let (last_seq, last_hash) = log.head().map(|(s, h)| (s, h.to_string())).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&c.path).unwrap();
        f.write_all(b"this is not a record\n").unwrap();
        drop(f);
        let later = at(t0, 60);
        let (log, gap) = AuditLog::open(&c, "n1", later).expect("starts despite the garbage");
        let gap = gap.expect("a gap record");
        let aside = PathBuf::from(gap.damaged_file.clone().expect("the damaged file named"));
        assert!(!gap.clean);
        assert!(aside.exists(), "{aside:?} kept");
        assert!(aside
            .to_string_lossy()
            .ends_with(&format!(".damaged-{}", unix_secs(later.wall))));
        assert!(std::fs::read_to_string(&aside)
            .unwrap()
            .contains("this is not a record"));
        log.stop("test", later).unwrap();
        let recs = read_records(&c.path);
        assert_eq!(recs[0]["kind"], "gap");
        assert_eq!(recs[0]["seq"], last_seq + 1, "the chain continues");
        assert_eq!(recs[0]["prev"], last_hash.as_str());
        assert_eq!(recs[0]["damaged_file"], aside.to_str().unwrap());
        // The new file alone: the records set aside are missing before it.
        let err = verify(std::slice::from_ref(&c.path), None).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn a_file_of_garbage_only_starts_a_new_chain() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, 4);
        std::fs::write(&c.path, b"garbage\nmore garbage\n").unwrap();
        let (log, gap) = AuditLog::open(&c, "n1", t0()).unwrap();
        assert!(gap.unwrap().damaged_file.is_some());
        log.stop("test", at(t0(), 1)).unwrap();
        verify(std::slice::from_ref(&c.path), None).expect("a fresh chain");
    }

    #[test]
    fn intervals_run_on_the_monotonic_clock_across_wall_clock_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 20, 4);
        c.interval = Duration::from_secs(10);
        let t0 = t0();
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        let read = |log: &mut AuditLog, inode| {
            log.observe(AuditPoll {
                accesses: vec![access(7, inode)],
                sends: Vec::new(),
            })
        };
        // The wall clock steps back an hour 5 s in: the interval still ends
        // 10 s (monotonic) after it started, and its record spans 10 s.
        read(&mut log, 1);
        let stepped = |secs: u64, wall_offset: i64| Now {
            wall: if wall_offset < 0 {
                t0.wall + Duration::from_secs(secs)
                    - Duration::from_secs(wall_offset.unsigned_abs())
            } else {
                t0.wall + Duration::from_secs(secs + wall_offset as u64)
            },
            mono: t0.mono + Duration::from_secs(secs),
        };
        log.tick(stepped(5, -3600)).unwrap();
        assert_eq!(log.written(), 1, "no record 5 s in");
        log.tick(stepped(10, -3600)).unwrap();
        assert_eq!(log.written(), 2, "the interval ended after 10 s");
        // Then a step forward of a day: again a 10 s record, not a day's.
        read(&mut log, 2);
        log.tick(stepped(15, 86_400)).unwrap();
        assert_eq!(log.written(), 2);
        log.tick(stepped(20, 86_400)).unwrap();
        assert_eq!(log.written(), 3);
        log.stop("test", stepped(21, 86_400)).unwrap();
        let spans: Vec<i64> = read_records(&c.path)
            .iter()
            .filter(|r| r["kind"] == "access")
            .map(|r| {
                let s = crate::audit::parse_rfc3339(r["start"].as_str().unwrap()).unwrap();
                let e = crate::audit::parse_rfc3339(r["end"].as_str().unwrap()).unwrap();
                e as i64 - s as i64
            })
            .collect();
        assert_eq!(spans, vec![10, 10], "no negative or giant span");
        assert_eq!(
            span_end(
                t0.wall,
                Duration::from_secs(10),
                t0.wall + Duration::from_secs(11)
            ),
            t0.wall + Duration::from_secs(11),
            "ordinary drift keeps the wall clock"
        );
    }

    #[test]
    fn records_past_the_per_process_cap_are_folded() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path(), 1 << 20, 4);
        c.max_records_per_process = 4;
        let t0 = t0();
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        let flood: Vec<Access> = (0..10)
            .map(|i| Access {
                read_bytes: 100 + i,
                ..access(7, i)
            })
            .chain([access(8, 99)])
            .collect();
        log.observe(AuditPoll {
            accesses: flood,
            sends: Vec::new(),
        });
        log.tick(at(t0, 1)).unwrap();
        log.stop("test", at(t0, 2)).unwrap();
        assert_eq!(log_folded(&c), 1);
        let recs = read_records(&c.path);
        let kept: Vec<u64> = recs
            .iter()
            .filter(|r| r["kind"] == "access" && r["pid"] == 7)
            .map(|r| r["read_bytes"].as_u64().unwrap())
            .collect();
        assert_eq!(kept, vec![106, 107, 108, 109], "the most read kept");
        let folded = recs.iter().find(|r| r["kind"] == "folded").unwrap();
        assert_eq!(folded["pid"], 7);
        assert_eq!(folded["files"], 6);
        assert_eq!(folded["kept"], 4);
        assert_eq!(folded["read_bytes"], 100 + 101 + 102 + 103 + 104 + 105);
        assert!(recs.iter().any(|r| r["kind"] == "access" && r["pid"] == 8));
        verify(std::slice::from_ref(&c.path), None).unwrap();
    }

    /// Folded records in the log at `c`.
    fn log_folded(c: &AuditConfig) -> usize {
        read_records(&c.path)
            .iter()
            .filter(|r| r["kind"] == "folded")
            .count()
    }

    #[test]
    fn a_log_removed_while_running_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 1 << 20, 4);
        let t0 = t0();
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        fill(&mut log, 2, t0);
        assert_eq!(log.check_file().unwrap(), None);
        std::fs::remove_file(&c.path).unwrap();
        let found = log.check_file().unwrap().expect("the removal noticed");
        assert!(
            found.contains("removed") && found.contains("seq 2"),
            "{found}"
        );
        assert!(c.path.exists(), "a new file");
        fill(&mut log, 1, at(t0, 10));
        log.stop("test", at(t0, 20)).unwrap();
        let recs = read_records(&c.path);
        assert_eq!(recs[0]["seq"], 3);
        let err = verify(std::slice::from_ref(&c.path), None).unwrap_err();
        assert!(err.contains("records seq 0..2 are missing"), "{err}");
        // Renamed away (logrotate without telling the agent).
        let (mut log, _) = AuditLog::open(&c, "n1", at(t0, 30)).unwrap();
        std::fs::rename(&c.path, dir.path().join("elsewhere")).unwrap();
        std::fs::write(&c.path, b"").unwrap();
        let found = log.check_file().unwrap().expect("the rename noticed");
        assert!(found.contains("replaced"), "{found}");
    }
}
