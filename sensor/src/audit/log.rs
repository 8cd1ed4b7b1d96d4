//! Writing the audit log: accumulating accesses per interval, sealing each
//! record into the chain, rotating by size and fsyncing on a cadence.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::{Instant, SystemTime},
};

use anyhow::Context as _;

use super::{
    chain,
    record::{Access, Destination, Envelope, Event},
    AuditPoll,
};
use crate::{
    alerts::{rfc3339, unix_secs},
    config::AuditConfig,
};

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
    span_start: SystemTime,
    /// (pid, dev, inode) → the access so far in this interval.
    pending: BTreeMap<(u32, u32, u64), Access>,
    /// pid → bytes sent per destination in this interval.
    sends: HashMap<u32, Vec<Destination>>,
    /// Records written since opened.
    written: u64,
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

impl AuditLog {
    /// Opens (or creates) the log and continues its chain: a `gap` record
    /// for the span the agent did not run (returned too), then `start`.
    pub fn open(
        cfg: &AuditConfig,
        host: &str,
        now: SystemTime,
    ) -> anyhow::Result<(AuditLog, Option<Gap>)> {
        let path = &cfg.path;
        let truncated = trim_torn_tail(path)
            .with_context(|| format!("cannot read audit-log {}", path.display()))?;
        let tail = [path.clone(), rotated(path, 1)]
            .iter()
            .find_map(|p| last_record(p).transpose())
            .transpose()
            .with_context(|| format!("cannot read audit-log {}", path.display()))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open audit-log {}", path.display()))?;
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
            last_sync: Instant::now(),
            unsynced: false,
            span_start: now,
            pending: BTreeMap::new(),
            sends: HashMap::new(),
            written: 0,
            readers: HashMap::new(),
        };
        let gap = tail.map(|t| {
            let now_unix = unix_secs(now);
            Gap {
                seconds: t.unix.map(|u| now_unix.saturating_sub(u)).unwrap_or(0),
                from: t.ts,
                clean: t.kind == "stop" && truncated == 0,
                truncated_bytes: truncated,
            }
        });
        if let Some(g) = &gap {
            log.write(
                &Event::Gap {
                    from: g.from.clone(),
                    until: rfc3339(now),
                    seconds: g.seconds,
                    clean: g.clean,
                    truncated_bytes: g.truncated_bytes,
                },
                now,
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
            now,
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

    /// Writes the interval's records once it is over, and fsyncs on cadence.
    pub fn tick(&mut self, now: SystemTime) -> anyhow::Result<()> {
        let elapsed = now.duration_since(self.span_start).unwrap_or_default();
        if elapsed >= self.cfg.interval {
            self.flush(now)?;
        }
        if self.unsynced && self.last_sync.elapsed() >= self.cfg.fsync {
            self.sync()?;
        }
        Ok(())
    }

    /// Writes one agent event (a tamper finding) at once.
    pub fn event(&mut self, event: &Event, now: SystemTime) -> anyhow::Result<()> {
        self.write(event, now)?;
        if self.cfg.fsync.is_zero() {
            self.sync()?;
        }
        Ok(())
    }

    /// A clean stop: the open interval's records, `stop`, fsync.
    pub fn stop(mut self, reason: &str, now: SystemTime) -> anyhow::Result<()> {
        self.flush(now)?;
        self.write(
            &Event::Stop {
                reason: reason.into(),
            },
            now,
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

    fn flush(&mut self, end: SystemTime) -> anyhow::Result<()> {
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
            self.write(&Event::Access(Box::new(a)), end)?;
        }
        self.span_start = end;
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
        let dropped = match last_record(&oldest) {
            Ok(Some(t)) => Some(t.seq),
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
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open audit-log {}", path.display()))?;
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

/// The last complete record of `path`, `None` for a missing or empty file.
fn last_record(path: &Path) -> anyhow::Result<Option<Tail>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata()?.len();
    let (end, start) = last_newline(&mut f, len)?;
    if end == 0 {
        return Ok(None);
    }
    let mut buf = vec![0u8; (end - start - 1) as usize];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut buf)?;
    let line = String::from_utf8_lossy(&buf);
    let sealed = chain::unseal(&line)
        .with_context(|| format!("the last line of {} is not an audit record", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&sealed.body)
        .with_context(|| format!("the last line of {} is not JSON", path.display()))?;
    let ts = v["ts"].as_str().unwrap_or_default().to_string();
    Ok(Some(Tail {
        seq: v["seq"]
            .as_u64()
            .with_context(|| format!("the last record of {} has no seq", path.display()))?,
        hash: sealed.hash.to_string(),
        kind: v["kind"].as_str().unwrap_or_default().to_string(),
        unix: super::parse_rfc3339(&ts),
        ts,
    }))
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
    fn fill(log: &mut AuditLog, n: u64, t0: SystemTime) {
        for i in 0..n {
            log.observe(AuditPoll {
                accesses: vec![access(7, i)],
                sends: Vec::new(),
            });
            log.tick(t0 + Duration::from_secs(i + 1)).unwrap();
        }
    }

    #[test]
    fn rotation_keeps_the_chain_and_says_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 4096, 2);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_712_400);
        let (mut log, gap) = AuditLog::open(&c, "n1", t0).unwrap();
        assert_eq!(gap, None);
        fill(&mut log, 60, t0);
        log.stop("test", t0 + Duration::from_secs(100)).unwrap();
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
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_712_400);
        let (mut log, _) = AuditLog::open(&c, "n1", t0).unwrap();
        fill(&mut log, 3, t0);
        drop(log); // no stop: as if killed
        let torn = b"{\"seq\":4,\"ts\":\"2026-11-";
        let mut f = OpenOptions::new().append(true).open(&c.path).unwrap();
        f.write_all(torn).unwrap();
        drop(f);
        let later = t0 + Duration::from_secs(60);
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
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_712_400);
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
        log.tick(t0 + Duration::from_secs(5)).unwrap();
        log.stop("test", t0 + Duration::from_secs(6)).unwrap();
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
}
