//! The ledger on disk, under `--state-dir`: `ledger.json`, a versioned
//! snapshot written atomically (temporary file, fsync, rename, fsync of
//! the directory), and `ledger.journal`, each poll's deltas appended as one
//! JSON line right after the poll. A restart replays the journal over the
//! snapshot: a SIGTERM loses nothing (the agent compacts on its way out), a
//! SIGKILL or a crash at most the poll being counted (the lines written are
//! in the page cache; they are fsynced every [`SYNC_EVERY`], so a power cut
//! loses at most that). The journal is folded into the snapshot every
//! [`COMPACT_EVERY`] or past [`JOURNAL_MAX`].
//!
//! Never fatal: an unreadable, corrupt or foreign-version file is moved
//! aside and recorded as a gap (shown by `sensor ledger`); an unwritable
//! directory is logged and counted, and the agent keeps counting in memory.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::detect::ledger::{Entry, IdState, Ledger, LedgerConfig, SlowExfil};

/// The snapshot's format; another is moved aside, not misread.
pub const VERSION: u32 = 1;
pub const SNAPSHOT: &str = "ledger.json";
pub const JOURNAL: &str = "ledger.journal";
pub const COMPACT_EVERY: Duration = Duration::from_secs(300);
pub const JOURNAL_MAX: u64 = 4 << 20;
pub const SYNC_EVERY: Duration = Duration::from_secs(10);
/// Gaps kept in the snapshot (the most recent).
const MAX_GAPS: usize = 100;

/// A span the ledger could not count or lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// Unix seconds.
    pub at: u64,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub horizon_secs: u64,
    pub bucket_secs: u64,
    pub send_bytes: u64,
    /// Unix seconds.
    pub saved: u64,
    pub ids: HashMap<String, IdState>,
    #[serde(default)]
    pub gaps: Vec<Gap>,
}

/// A journaled entry: `(identity, pid, comm, read, [(network, bytes)])`.
type EntryLine = (String, u32, String, u64, Vec<(String, u64)>);

/// One poll's deltas: `(identity, pid, comm, read, [(network, bytes)])`;
/// or the alerts it raised: `(identity, network, total)` (so one alert per
/// horizon holds across a crash).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Line {
    t: u64,
    b: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    e: Vec<EntryLine>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    a: Vec<(String, String, u64)>,
}

pub struct Store {
    dir: PathBuf,
    journal: Option<File>,
    journal_bytes: u64,
    last_compact: Instant,
    last_sync: Instant,
    unsynced: bool,
    pub gaps: Vec<Gap>,
    /// Failed writes (snapshot or journal) since start.
    pub errors: u64,
}

impl Store {
    /// A store of `dir` with no file open yet.
    fn at(dir: &Path, gaps: Vec<Gap>) -> Store {
        Store {
            dir: dir.to_path_buf(),
            journal: None,
            journal_bytes: 0,
            last_compact: Instant::now(),
            last_sync: Instant::now(),
            unsynced: false,
            gaps,
            errors: 0,
        }
    }

    /// Loads the ledger from `dir` (snapshot, then journal), recording what
    /// it could not read as gaps; then compacts, so the files are whole.
    pub fn open(dir: &Path, cfg: LedgerConfig, now: u64) -> (Ledger, Store) {
        let mut store = Store::at(dir, Vec::new());
        if let Err(e) = std::fs::create_dir_all(dir) {
            store.fail(now, format!("state dir {}: {e}", dir.display()));
        }
        let mut ids = HashMap::new();
        match read_snapshot(&dir.join(SNAPSHOT)) {
            Ok(None) => {}
            Ok(Some(s)) if s.version != VERSION => {
                store.set_aside(
                    SNAPSHOT,
                    now,
                    format!(
                        "snapshot version {} (this agent reads {VERSION})",
                        s.version
                    ),
                );
            }
            Ok(Some(s)) if s.bucket_secs != cfg.bucket_secs() => {
                store.gaps = s.gaps;
                store.set_aside(
                    SNAPSHOT,
                    now,
                    format!(
                        "horizon changed ({} s buckets, now {} s): the ledger starts again",
                        s.bucket_secs,
                        cfg.bucket_secs()
                    ),
                );
                let _ = std::fs::remove_file(dir.join(JOURNAL));
            }
            Ok(Some(s)) => {
                ids = s.ids;
                store.gaps = s.gaps;
                if now + cfg.bucket_secs() < s.saved {
                    store.gap(
                        now,
                        format!("the clock is behind the last save ({} s)", s.saved - now),
                    );
                }
            }
            Err(e) => store.set_aside(SNAPSHOT, now, format!("corrupt snapshot: {e}")),
        }
        let mut ledger = Ledger::with_state(cfg, ids, now);
        store.replay(&mut ledger, now);
        ledger.expire(now);
        store.compact(&ledger, now);
        (ledger, store)
    }

    fn replay(&mut self, ledger: &mut Ledger, now: u64) {
        let path = self.dir.join(JOURNAL);
        let Ok(f) = File::open(&path) else {
            return;
        };
        let mut bad = 0;
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else {
                bad += 1;
                break;
            };
            match serde_json::from_str::<Line>(&line) {
                Ok(l) => {
                    for (identity, network, total) in l.a {
                        ledger.mark_alerted(&identity, &network, l.b, total);
                    }
                    for (identity, pid, comm, read, sends) in l.e {
                        ledger.add(
                            l.b,
                            &Entry {
                                identity,
                                pid,
                                comm,
                                read,
                                sends,
                            },
                        );
                    }
                }
                // A line cut short by a crash (the last one) or damaged.
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            self.gap(now, format!("{bad} unreadable journal lines skipped"));
        }
    }

    /// Appends the alerts a poll raised.
    pub fn record_alerts(&mut self, bucket: u64, now: u64, alerts: &[SlowExfil]) {
        if alerts.is_empty() {
            return;
        }
        let line = Line {
            t: now,
            b: bucket,
            a: alerts
                .iter()
                .map(|a| (a.identity.clone(), a.network.clone(), a.sent_bytes))
                .collect(),
            ..Line::default()
        };
        self.append(&line, now);
    }

    /// Appends one poll's deltas (before they are evaluated: an alert is
    /// never raised on bytes the ledger would not remember).
    pub fn record(&mut self, bucket: u64, now: u64, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        let line = Line {
            t: now,
            b: bucket,
            a: Vec::new(),
            e: entries
                .iter()
                .map(|e| {
                    (
                        e.identity.clone(),
                        e.pid,
                        e.comm.clone(),
                        e.read,
                        e.sends.clone(),
                    )
                })
                .collect(),
        };
        self.append(&line, now);
    }

    fn append(&mut self, line: &Line, now: u64) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        if self.journal.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(JOURNAL))
            {
                Ok(f) => self.journal = Some(f),
                Err(e) => {
                    self.fail(now, format!("opening the journal: {e}"));
                    return;
                }
            }
        }
        if let Some(f) = &mut self.journal {
            match f.write_all(text.as_bytes()) {
                Ok(()) => {
                    self.journal_bytes += text.len() as u64;
                    self.unsynced = true;
                }
                Err(e) => {
                    self.journal = None;
                    self.fail(now, format!("appending to the journal: {e}"));
                }
            }
        }
    }

    /// Folds the journal into the snapshot when due; fsyncs when due.
    pub fn tick(&mut self, ledger: &Ledger, now: u64) {
        if self.last_compact.elapsed() >= COMPACT_EVERY || self.journal_bytes >= JOURNAL_MAX {
            self.compact(ledger, now);
        } else if self.unsynced && self.last_sync.elapsed() >= SYNC_EVERY {
            if let Some(f) = &self.journal {
                let _ = f.sync_data();
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
    }

    /// Writes the snapshot atomically, then empties the journal.
    pub fn compact(&mut self, ledger: &Ledger, now: u64) {
        self.last_compact = Instant::now();
        let gaps_from = self.gaps.len().saturating_sub(MAX_GAPS);
        let snap = Snapshot {
            version: VERSION,
            horizon_secs: ledger.cfg.horizon_secs,
            bucket_secs: ledger.cfg.bucket_secs(),
            send_bytes: ledger.cfg.send_bytes,
            saved: now,
            ids: ledger.ids.clone(),
            gaps: self.gaps[gaps_from..].to_vec(),
        };
        if let Err(e) = write_atomically(&self.dir, SNAPSHOT, &snap) {
            self.fail(now, format!("writing the snapshot: {e}"));
            return;
        }
        match File::create(self.dir.join(JOURNAL)) {
            Ok(f) => {
                self.journal = Some(f);
                self.journal_bytes = 0;
                self.unsynced = false;
            }
            Err(e) => self.fail(now, format!("emptying the journal: {e}")),
        }
    }

    fn gap(&mut self, now: u64, reason: String) {
        tracing::warn!(dir = %self.dir.display(), %reason, "ledger gap");
        self.gaps.push(Gap { at: now, reason });
    }

    /// A write failed: logged and counted once per kind, the agent counts on.
    fn fail(&mut self, now: u64, what: String) {
        self.errors += 1;
        if self.errors == 1 || self.errors.is_power_of_two() {
            tracing::error!(dir = %self.dir.display(), %what, "ledger state not saved (counting continues in memory)");
        }
        if self.gaps.last().is_none_or(|g| g.reason != what) {
            self.gaps.push(Gap {
                at: now,
                reason: what,
            });
        }
    }

    /// Moves a damaged or foreign file aside (`NAME.corrupt-UNIX`) and
    /// records why.
    fn set_aside(&mut self, name: &str, now: u64, why: String) {
        let from = self.dir.join(name);
        let to = self.dir.join(format!("{name}.corrupt-{now}"));
        let moved = std::fs::rename(&from, &to).is_ok();
        let reason = if moved {
            format!("{why}; kept as {}", to.display())
        } else {
            why
        };
        tracing::error!(file = %from.display(), %reason, "ledger state unreadable, starting a new one");
        self.gaps.push(Gap { at: now, reason });
    }
}

fn read_snapshot(path: &Path) -> Result<Option<Snapshot>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // The version first, so another format is named, not misparsed.
    #[derive(Deserialize)]
    struct Head {
        version: u32,
    }
    let head: Head = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    if head.version != VERSION {
        return Ok(Some(Snapshot {
            version: head.version,
            horizon_secs: 0,
            bucket_secs: 0,
            send_bytes: 0,
            saved: 0,
            ids: HashMap::new(),
            gaps: Vec::new(),
        }));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn write_atomically(dir: &Path, name: &str, snap: &Snapshot) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        serde_json::to_writer(&mut f, snap)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// What `sensor ledger` reads: the snapshot with the journal replayed,
/// without writing anything.
pub fn read_only(dir: &Path, now: u64) -> Result<(Ledger, Vec<Gap>), String> {
    let snap = read_snapshot(&dir.join(SNAPSHOT))
        .map_err(|e| format!("{}: {e}", dir.join(SNAPSHOT).display()))?
        .ok_or_else(|| format!("no ledger in {} (no {SNAPSHOT})", dir.display()))?;
    if snap.version != VERSION {
        return Err(format!(
            "{}: version {} (this sensor reads {VERSION})",
            dir.join(SNAPSHOT).display(),
            snap.version
        ));
    }
    let cfg = LedgerConfig {
        horizon_secs: snap.horizon_secs,
        send_bytes: snap.send_bytes,
        max_cells: usize::MAX,
    };
    let mut store = Store::at(dir, snap.gaps);
    let mut ledger = Ledger::with_state(cfg, snap.ids, now);
    store.replay(&mut ledger, now);
    ledger.expire(now);
    Ok((ledger, store.gaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LedgerConfig {
        LedgerConfig {
            horizon_secs: 3000,
            send_bytes: 1000,
            max_cells: 10_000,
        }
    }

    fn entry(bytes: u64) -> Entry {
        Entry {
            identity: "uid=0 exe=/bin/x".into(),
            pid: 9,
            comm: "x".into(),
            read: 1,
            sends: vec![("198.18.0.0/24".into(), bytes)],
        }
    }

    #[test]
    fn journal_lines_survive_a_kill_and_a_restart_replays_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, mut s) = Store::open(dir.path(), cfg(), 1000);
        for t in 0..5 {
            let e = [entry(100)];
            s.record(l.bucket_of(1000 + t), 1000 + t, &e);
            l.observe(1000 + t, &e);
        }
        // A SIGKILL: the store is dropped without compaction.
        drop(s);
        let (l2, s2) = Store::open(dir.path(), cfg(), 1010);
        assert_eq!(
            l2.totals("uid=0 exe=/bin/x", 1010),
            l.totals("uid=0 exe=/bin/x", 1010)
        );
        assert_eq!(l2.totals("uid=0 exe=/bin/x", 1010).1[0].1, 500);
        assert!(s2.gaps.is_empty(), "{:?}", s2.gaps);
    }

    #[test]
    fn an_alert_raised_before_a_kill_is_not_raised_again_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut l, mut s) = Store::open(dir.path(), cfg(), 1000);
        let e = [entry(1500)];
        s.record(l.bucket_of(1000), 1000, &e);
        let raised = l.observe(1000, &e);
        assert_eq!(raised.len(), 1);
        s.record_alerts(l.bucket_of(1000), 1000, &raised);
        drop(s);
        let (mut l, _) = Store::open(dir.path(), cfg(), 1001);
        assert!(l.observe(1001, &[entry(10)]).is_empty(), "once per horizon");
        // Doubled: escalation.
        assert_eq!(l.observe(1002, &[entry(1600)]).len(), 1);
    }

    /// The disk bound: a full ledger's snapshot. Prints the figures.
    #[test]
    fn a_full_ledger_stays_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400;
        let cfg = LedgerConfig {
            horizon_secs: 30 * day,
            send_bytes: 1 << 30,
            max_cells: crate::detect::ledger::MAX_CELLS,
        };
        let rss = || {
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        let rss_before = rss();
        let (mut l, mut s) = Store::open(dir.path(), cfg, 1_800_000_000);
        // 10,000 identities, each sending to 2 networks and reading, every
        // day for 35 days: more than the bound.
        for d in 0..35u64 {
            let now = 1_800_000_000 + d * day;
            let entries: Vec<Entry> = (0..10_000)
                .map(|i| Entry {
                    identity: format!("uid={} exe=/usr/bin/tool-{i}", i % 100),
                    pid: i,
                    comm: "tool".into(),
                    read: 1 << 20,
                    sends: vec![
                        (format!("10.{}.{}.0/24", i / 256 % 256, i % 256), 1 << 20),
                        ("198.18.0.0/24".into(), 1 << 10),
                    ],
                })
                .collect();
            l.observe(now, &entries);
            l.expire(now);
        }
        assert!(
            l.cells() <= crate::detect::ledger::MAX_CELLS,
            "{}",
            l.cells()
        );
        eprintln!(
            "full ledger: RSS grew {} KiB (this test alone)",
            rss().saturating_sub(rss_before)
        );
        s.compact(&l, 1_800_000_000 + 35 * day);
        let size = std::fs::metadata(dir.path().join(SNAPSHOT)).unwrap().len();
        eprintln!(
            "full ledger: {} cells, {} identities, {} evicted, snapshot {} bytes",
            l.cells(),
            l.ids.len(),
            l.evicted,
            size
        );
        assert!(size < 32 << 20, "snapshot {size} bytes");
        assert!(l.evicted > 0);
    }

    #[test]
    fn a_corrupt_snapshot_is_set_aside_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT), "{not json").unwrap();
        let (l, s) = Store::open(dir.path(), cfg(), 1000);
        assert!(l.ids.is_empty());
        assert_eq!(s.gaps.len(), 1);
        assert!(
            s.gaps[0].reason.contains("corrupt snapshot"),
            "{:?}",
            s.gaps
        );
        assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("ledger.json.corrupt-")));
        // The gap is kept across restarts.
        let (_, s) = Store::open(dir.path(), cfg(), 1001);
        assert_eq!(s.gaps.len(), 1);
    }

    #[test]
    fn a_torn_last_journal_line_is_skipped_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (l, mut s) = Store::open(dir.path(), cfg(), 1000);
        s.record(l.bucket_of(1000), 1000, &[entry(100)]);
        drop(s);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(b"{\"t\":1001,\"b\":10,\"e\":[[\"uid").unwrap();
        let (l, s) = Store::open(dir.path(), cfg(), 1002);
        assert_eq!(l.totals("uid=0 exe=/bin/x", 1002).1[0].1, 100);
        assert_eq!(s.gaps.len(), 1, "{:?}", s.gaps);
    }

    #[test]
    fn an_unwritable_dir_keeps_counting_in_memory() {
        let (mut l, mut s) = Store::open(Path::new("/proc/sensor-ledger-test"), cfg(), 1000);
        s.record(l.bucket_of(1000), 1000, &[entry(2000)]);
        let alerts = l.observe(1000, &[entry(2000)]);
        assert_eq!(alerts.len(), 1);
        assert!(s.errors > 0);
        assert!(!s.gaps.is_empty());
    }
}
