//! Per-process totals from the kernel maps: each poll turns the cumulative
//! kernel counters into deltas since the previous poll, and says which
//! exited processes can be dropped from the maps. Pure: the maps are read by
//! the loader, liveness is a function handed in.

pub mod endpoint;
pub mod resident;

use std::collections::{HashMap, HashSet};

use sensor_common::{
    Count, FileKey, InodeKey, Loss, MmapInfo, MmapKey, ProcCounters, ProcInfo, SendCounters,
    SendKey, COUNTER_SLOTS, OVERFLOW_TGID, PROC_EXITED,
};

use self::endpoint::Endpoint;
use crate::util::text::c_string;

/// What one read of the kernel maps returned.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Vec<(u32, ProcCounters)>,
    pub infos: Vec<(u32, ProcInfo)>,
    /// Identities looked up after `counters` was read, for processes that
    /// first appeared between the two reads: they name the process, but
    /// whether it exited is left to the next poll (its counters here may
    /// predate its last bytes).
    pub late_infos: Vec<(u32, ProcInfo)>,
    pub sends: Vec<(SendKey, SendCounters)>,
    pub files: Vec<(FileKey, u64)>,
    pub mmaps: Vec<(MmapKey, MmapInfo)>,
    /// Resident bytes of each mapping of a live process (`None`: the mapping
    /// is gone); mappings of processes not sampled are absent.
    pub resident: HashMap<MmapKey, Option<u64>>,
    pub lost: [u64; COUNTER_SLOTS],
}

/// Who a process is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub tgid: u32,
    pub ppid: u32,
    pub sid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    /// Kernel time the process was first counted: with `tgid`, names the
    /// process even after its pid is reused.
    pub first_seen_ns: u64,
    /// Command name; `?` when the kernel could not record it.
    pub comm: String,
}

impl Identity {
    fn from_info(tgid: u32, info: Option<&ProcInfo>) -> Self {
        match info {
            Some(i) => Identity {
                tgid,
                ppid: i.ppid,
                sid: i.sid,
                uid: i.uid,
                cgroup_id: i.cgroup_id,
                first_seen_ns: i.first_seen_ns,
                comm: c_string(&i.comm),
            },
            None => Identity {
                tgid,
                ppid: 0,
                sid: 0,
                uid: 0,
                cgroup_id: 0,
                first_seen_ns: 0,
                // The reserved entry of a full map, or a process whose identity
                // did not fit.
                comm: if tgid == OVERFLOW_TGID {
                    "overflow".into()
                } else {
                    "?".into()
                },
            },
        }
    }
}

/// Bytes a process moved since the previous poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcDelta {
    pub tgid: u32,
    pub read_bytes: u64,
    pub watched_read_bytes: u64,
    pub sent_bytes: u64,
    /// The part of the read bytes that came from mapped watched files.
    pub mmap_bytes: u64,
    /// Lineage: watched bytes taken in, each file's bytes once per window
    /// and at most what it holds on disk (mapped bytes included).
    pub distinct_read_bytes: u64,
    /// Weights taken in from derived files.
    pub derived_read_bytes: u64,
    /// Weights relayed in through pipes, FIFOs and sockets on this host.
    pub relayed_bytes: u64,
    /// Cumulative totals since the sensor first counted the process.
    pub total: ProcCounters,
    pub exited: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendDelta {
    pub tgid: u32,
    pub endpoint: Endpoint,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDelta {
    pub tgid: u32,
    pub inode: InodeKey,
    pub bytes: u64,
}

/// The result of one poll.
#[derive(Clone, Debug, Default)]
pub struct Poll {
    /// Processes that moved bytes since the previous poll (or exited).
    pub procs: Vec<ProcDelta>,
    pub sends: Vec<SendDelta>,
    pub files: Vec<FileDelta>,
    /// Identity of every process in this poll's deltas.
    pub identities: HashMap<u32, Identity>,
    /// Lost counts since the previous poll, by `counter` index.
    pub lost: [u64; COUNTER_SLOTS],
    /// Processes the kernel maps hold now, minus the exited ones.
    pub tracked: usize,
    /// Map entries of exited processes, to remove now that they are counted.
    pub forget_tgids: Vec<u32>,
    pub forget_sends: Vec<SendKey>,
    pub forget_files: Vec<FileKey>,
    pub forget_mmaps: Vec<MmapKey>,
}

/// Remembers the previous cumulative values.
#[derive(Debug, Default)]
pub struct Collector {
    last_proc: HashMap<u32, ProcCounters>,
    last_send: HashMap<SendKey, u64>,
    last_file: HashMap<FileKey, u64>,
    last_lost: [u64; COUNTER_SLOTS],
    /// Bytes counted so far for each mapping (the most seen resident).
    mmap_counted: HashMap<MmapKey, u64>,
    /// Mappings a sample has seen in place.
    mmap_seen: HashSet<MmapKey>,
    /// Polls so far.
    polls: u64,
    /// The poll at which each entry last grew (for pruning idle ones).
    proc_active: HashMap<u32, u64>,
    send_active: HashMap<SendKey, u64>,
    file_active: HashMap<FileKey, u64>,
    /// Per process: sent bytes (its own total) minus the bytes its
    /// destination entries accounted for. Positive after a destination
    /// entry was evicted or had no room: those bytes went somewhere the
    /// sensor cannot name.
    send_balance: HashMap<u32, i64>,
    /// New mapping records the kernel made minus those a poll saw: what is
    /// left was evicted unseen (the counter is read before the map).
    mmap_unseen: i64,
    /// Until which poll a process's positive balance is reported: one of
    /// its destination entries was lost recently (key `OVERFLOW_TGID`: the
    /// reserved entry took bytes, whose sender is not known).
    send_lossy: HashMap<u32, u64>,
    /// Entries of live processes that have not grown for this many polls
    /// are removed from the kernel maps (0: never), so a flood's entries
    /// do not stay once it stops.
    pub prune_after: u64,
}

/// How often (in polls) idle entries are looked for.
const PRUNE_EVERY: u64 = 8;
/// For how many polls after losing a destination entry a process's
/// unattributed sent bytes are reported.
const LOSSY_POLLS: u64 = 4;

impl Collector {
    pub fn new(prune_after: u64) -> Self {
        Self {
            prune_after,
            ..Self::default()
        }
    }

    /// Turns a snapshot into deltas. `alive(tgid)` is asked only for
    /// processes the kernel has no identity for (their exit is unmarked).
    pub fn ingest(&mut self, snap: Snapshot, alive: impl Fn(u32) -> bool) -> Poll {
        self.polls += 1;
        let mut infos: HashMap<u32, ProcInfo> = snap.infos.into_iter().collect();
        let late: HashMap<u32, ProcInfo> = snap.late_infos.into_iter().collect();
        let mut poll = Poll::default();
        let mut evicted = [0u64; COUNTER_SLOTS];
        let gone = exited(&snap.counters, &infos, &late, alive);
        let mut orphans = self.proc_evictions(&snap.counters, &mut infos, &gone, &mut evicted);
        self.send_evictions(&snap.sends, &mut evicted);
        self.mmap_evictions(
            &snap.mmaps,
            snap.lost[Count::MmapRecorded.index()],
            &mut evicted,
        );
        let mmap_bytes = self.ingest_mmaps(&snap.mmaps, &snap.resident, &gone, &mut poll);
        for (tgid, info) in late {
            infos.entry(tgid).or_insert(info);
        }
        self.ingest_procs(
            snap.counters,
            &infos,
            &gone,
            mmap_bytes,
            &mut poll,
            &mut evicted,
        );
        self.ingest_sends(snap.sends, &gone, &mut poll, &mut evicted);
        self.ingest_files(snap.files, &gone, &mut poll);
        for (i, now) in snap.lost.iter().enumerate() {
            poll.lost[i] = now.saturating_sub(self.last_lost[i]) + evicted[i];
            self.last_lost[i] = *now;
        }
        self.attribute_lost_sends(&mut poll, &gone);
        for tgid in &gone {
            self.send_balance.remove(tgid);
        }
        poll.forget_tgids = gone.into_iter().collect();
        poll.forget_tgids.append(&mut orphans);
        if self.prune_after > 0 && self.polls.is_multiple_of(PRUNE_EVERY) {
            self.prune(&mut poll);
        }
        poll.forget_tgids.sort_unstable();
        poll.forget_tgids.dedup();
        poll
    }

    /// Process entries that left the maps without us removing them: evicted
    /// from the spill (LRU); their last bytes are lost, and counted. Returns
    /// the identities whose counters went before any poll saw them (the
    /// kernel writes counters first, then the identity, and identities are
    /// read first, so those counters were evicted): removed with them.
    fn proc_evictions(
        &mut self,
        counters: &[(u32, ProcCounters)],
        infos: &mut HashMap<u32, ProcInfo>,
        gone: &HashSet<u32>,
        evicted: &mut [u64; COUNTER_SLOTS],
    ) -> Vec<u32> {
        let present: HashSet<u32> = counters.iter().map(|(t, _)| *t).collect();
        let vanished: HashSet<u32> = vanished_keys(&self.last_proc, &present).collect();
        for tgid in &vanished {
            self.last_proc.remove(tgid);
            self.proc_active.remove(tgid);
            self.send_balance.remove(tgid);
        }
        let orphans: Vec<u32> = infos
            .keys()
            .filter(|t| {
                **t != OVERFLOW_TGID
                    && !present.contains(t)
                    && !gone.contains(t)
                    && !vanished.contains(t)
            })
            .copied()
            .collect();
        for tgid in &orphans {
            infos.remove(tgid);
        }
        evicted[Loss::ProcEvicted.index()] += (vanished.len() + orphans.len()) as u64;
        orphans
    }

    /// Destination entries evicted from the spill: their senders' later
    /// unattributed bytes are reported (see [`Self::attribute_lost_sends`]).
    fn send_evictions(
        &mut self,
        sends: &[(SendKey, SendCounters)],
        evicted: &mut [u64; COUNTER_SLOTS],
    ) {
        let present: HashSet<SendKey> = sends.iter().map(|(k, _)| *k).collect();
        let vanished: Vec<SendKey> = vanished_keys(&self.last_send, &present).collect();
        for key in vanished {
            self.last_send.remove(&key);
            self.send_active.remove(&key);
            self.send_lossy.insert(key.tgid, self.polls + LOSSY_POLLS);
            evicted[Loss::SendEvicted.index()] += 1;
        }
    }

    /// Mapping records evicted from the LRU map: those a poll had seen, and
    /// those the kernel made (its `MMAP_RECORDED` count, read before the
    /// map) that no poll saw.
    fn mmap_evictions(
        &mut self,
        mmaps: &[(MmapKey, MmapInfo)],
        recorded_total: u64,
        evicted: &mut [u64; COUNTER_SLOTS],
    ) {
        let newly_seen = mmaps
            .iter()
            .filter(|(k, _)| !self.mmap_counted.contains_key(k))
            .count() as i64;
        let recorded = recorded_total.saturating_sub(self.last_lost[Count::MmapRecorded.index()]);
        self.mmap_unseen += recorded as i64 - newly_seen;
        if self.mmap_unseen > 0 {
            evicted[Loss::MmapEvicted.index()] += self.mmap_unseen as u64;
            self.mmap_unseen = 0;
        }
        let present: HashSet<MmapKey> = mmaps.iter().map(|(k, _)| *k).collect();
        let vanished: Vec<MmapKey> = vanished_keys(&self.mmap_counted, &present).collect();
        for key in vanished {
            self.mmap_counted.remove(&key);
            self.mmap_seen.remove(&key);
            evicted[Loss::MmapEvicted.index()] += 1;
        }
    }

    /// Per-process deltas (mapped bytes added), identities, activity.
    fn ingest_procs(
        &mut self,
        counters: Vec<(u32, ProcCounters)>,
        infos: &HashMap<u32, ProcInfo>,
        gone: &HashSet<u32>,
        mut mmap_bytes: HashMap<u32, u64>,
        poll: &mut Poll,
        evicted: &mut [u64; COUNTER_SLOTS],
    ) {
        for (tgid, now) in counters {
            let exited = gone.contains(&tgid);
            let mut before = self.last_proc.get(&tgid).copied().unwrap_or_default();
            if before.born_ns != 0 && now.born_ns != before.born_ns {
                // Evicted and made again between two polls: a new count.
                before = ProcCounters::default();
                self.send_balance.remove(&tgid);
                evicted[Loss::ProcEvicted.index()] += 1;
            }
            let mapped = mmap_bytes.remove(&tgid).unwrap_or(0);
            let delta = ProcDelta {
                tgid,
                read_bytes: now
                    .read_bytes
                    .saturating_sub(before.read_bytes)
                    .saturating_add(mapped),
                watched_read_bytes: now
                    .watched_read_bytes
                    .saturating_sub(before.watched_read_bytes)
                    .saturating_add(mapped),
                sent_bytes: now.sent_bytes.saturating_sub(before.sent_bytes),
                mmap_bytes: mapped,
                distinct_read_bytes: now
                    .distinct_read_bytes
                    .saturating_sub(before.distinct_read_bytes)
                    .saturating_add(mapped),
                derived_read_bytes: now
                    .derived_read_bytes
                    .saturating_sub(before.derived_read_bytes),
                relayed_bytes: now.relayed_bytes.saturating_sub(before.relayed_bytes),
                total: now,
                exited,
            };
            let moved = delta.read_bytes + delta.sent_bytes + delta.relayed_bytes > 0;
            if exited {
                self.last_proc.remove(&tgid);
                self.proc_active.remove(&tgid);
            } else {
                self.last_proc.insert(tgid, now);
                poll.tracked += 1;
                touch(&mut self.proc_active, tgid, moved, self.polls);
            }
            if exited || moved {
                if tgid != OVERFLOW_TGID && delta.sent_bytes > 0 {
                    *self.send_balance.entry(tgid).or_default() += delta.sent_bytes as i64;
                }
                poll.identities
                    .insert(tgid, Identity::from_info(tgid, infos.get(&tgid)));
                poll.procs.push(delta);
            }
        }
    }

    /// Per-destination deltas; each is taken off its sender's balance.
    fn ingest_sends(
        &mut self,
        sends: Vec<(SendKey, SendCounters)>,
        gone: &HashSet<u32>,
        poll: &mut Poll,
        evicted: &mut [u64; COUNTER_SLOTS],
    ) {
        for (key, now) in sends {
            let gone_now = gone.contains(&key.tgid);
            if self.last_send.get(&key).is_some_and(|b| now.bytes < *b) {
                // Evicted and made again: counting restarted.
                self.last_send.remove(&key);
                self.send_lossy.insert(key.tgid, self.polls + LOSSY_POLLS);
                evicted[Loss::SendEvicted.index()] += 1;
            }
            let bytes = advance(
                &mut self.last_send,
                key,
                now.bytes,
                gone_now,
                &mut poll.forget_sends,
            );
            if gone_now {
                self.send_active.remove(&key);
            } else {
                touch(&mut self.send_active, key, bytes > 0, self.polls);
            }
            if let Some(b) = self.send_balance.get_mut(&key.tgid) {
                *b -= bytes as i64;
            }
            if key.tgid == OVERFLOW_TGID && bytes > 0 {
                self.send_lossy
                    .insert(OVERFLOW_TGID, self.polls + LOSSY_POLLS);
            }
            let endpoint = Endpoint::from_kernel(key.family, key.addr, key.port);
            if let (true, Some(endpoint)) = (bytes > 0, endpoint) {
                poll.sends.push(SendDelta {
                    tgid: key.tgid,
                    endpoint,
                    bytes,
                });
            }
        }
    }

    /// Per-(process, watched file) deltas.
    fn ingest_files(&mut self, files: Vec<(FileKey, u64)>, gone: &HashSet<u32>, poll: &mut Poll) {
        for (key, now) in files {
            let gone_now = gone.contains(&key.tgid);
            let bytes = advance(
                &mut self.last_file,
                key,
                now,
                gone_now,
                &mut poll.forget_files,
            );
            if gone_now {
                self.file_active.remove(&key);
            } else {
                touch(&mut self.file_active, key, bytes > 0, self.polls);
            }
            if bytes > 0 {
                let inode = InodeKey {
                    dev: key.dev,
                    _pad: 0,
                    ino: key.ino,
                };
                poll.files.push(FileDelta {
                    tgid: key.tgid,
                    inode,
                    bytes,
                });
            }
        }
    }

    /// Sent bytes whose destination entry was evicted or never got room are
    /// still in the process's own total: while entries are being lost, the
    /// difference is reported as sent to an unknown destination (which the
    /// rules judge untrusted), so pressure on the destination maps cannot
    /// hide a sender.
    fn attribute_lost_sends(&mut self, poll: &mut Poll, gone: &HashSet<u32>) {
        let polls = self.polls;
        if poll.lost[Loss::SendMapFull.index()] > 0 {
            // Destinations spilled: some may have been evicted before any
            // poll saw them, whoever sent them.
            self.send_lossy.insert(OVERFLOW_TGID, polls + LOSSY_POLLS);
        }
        self.send_lossy.retain(|_, until| *until >= polls);
        if self.send_lossy.is_empty() {
            // No loss: a balance is bytes in flight between the two map
            // reads, and evens out by itself.
            return;
        }
        let anyone = self.send_lossy.contains_key(&OVERFLOW_TGID);
        for (tgid, balance) in self.send_balance.iter_mut() {
            let lossy = anyone || self.send_lossy.contains_key(tgid);
            if lossy && *balance > 0 && (poll.identities.contains_key(tgid) || gone.contains(tgid))
            {
                poll.sends.push(SendDelta {
                    tgid: *tgid,
                    endpoint: Endpoint::Unknown,
                    bytes: *balance as u64,
                });
                *balance = 0;
            }
        }
    }

    /// Queues entries of live processes idle for `prune_after` polls for
    /// removal: the process, its destinations and files; and destinations
    /// and files idle that long on their own.
    fn prune(&mut self, poll: &mut Poll) {
        let cutoff = self.polls.saturating_sub(self.prune_after);
        let idle: Vec<u32> = self
            .proc_active
            .iter()
            .filter(|(t, at)| **t != OVERFLOW_TGID && **at <= cutoff)
            .map(|(t, _)| *t)
            .collect();
        let idle_set: HashSet<u32> = idle.iter().copied().collect();
        for tgid in &idle {
            self.last_proc.remove(tgid);
            self.proc_active.remove(tgid);
            self.send_balance.remove(tgid);
        }
        poll.forget_tgids.extend(idle);
        let sends: Vec<SendKey> = self
            .send_active
            .iter()
            .filter(|(k, at)| {
                k.tgid != OVERFLOW_TGID && (**at <= cutoff || idle_set.contains(&k.tgid))
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &sends {
            self.send_active.remove(k);
            // Its bytes stay accounted: the next entry for this key counts
            // from zero.
            self.last_send.remove(k);
        }
        poll.forget_sends.extend(sends);
        let files: Vec<FileKey> = self
            .file_active
            .iter()
            .filter(|(k, at)| **at <= cutoff || idle_set.contains(&k.tgid))
            .map(|(k, _)| *k)
            .collect();
        for k in &files {
            self.file_active.remove(k);
            self.last_file.remove(k);
        }
        poll.forget_files.extend(files);
    }

    /// Bytes obtained through mappings of watched files since the previous
    /// poll, per process. A mapping counts the most of it ever seen resident;
    /// one that disappeared (unmapped, or its process exited) before any
    /// sample saw it counts its whole mapped length: the process may have
    /// read all of it, and nothing can tell less any more.
    fn ingest_mmaps(
        &mut self,
        mmaps: &[(MmapKey, MmapInfo)],
        resident: &HashMap<MmapKey, Option<u64>>,
        gone: &HashSet<u32>,
        poll: &mut Poll,
    ) -> HashMap<u32, u64> {
        let mut per_tgid: HashMap<u32, u64> = HashMap::new();
        for (key, info) in mmaps {
            let counted = self.mmap_counted.get(key).copied().unwrap_or(0);
            let sample = resident.get(key).copied();
            let mut target = counted;
            if let Some(Some(bytes)) = sample {
                self.mmap_seen.insert(*key);
                target = target.max(bytes);
            }
            let vanished = gone.contains(&key.tgid) || matches!(sample, Some(None));
            if vanished && !self.mmap_seen.contains(key) {
                target = target.max(info.len);
            }
            let delta = target.saturating_sub(counted);
            if delta > 0 {
                let sum = per_tgid.entry(key.tgid).or_default();
                *sum = sum.saturating_add(delta);
                let inode = InodeKey {
                    dev: info.dev,
                    _pad: 0,
                    ino: info.ino,
                };
                poll.files.push(FileDelta {
                    tgid: key.tgid,
                    inode,
                    bytes: delta,
                });
            }
            if vanished {
                self.mmap_counted.remove(key);
                self.mmap_seen.remove(key);
                poll.forget_mmaps.push(*key);
            } else {
                self.mmap_counted.insert(*key, target);
            }
        }
        per_tgid
    }
}

/// The processes that exited: flagged by the kernel, or (without an
/// identity, or not yet labelled) no longer alive.
fn exited(
    counters: &[(u32, ProcCounters)],
    infos: &HashMap<u32, ProcInfo>,
    late: &HashMap<u32, ProcInfo>,
    alive: impl Fn(u32) -> bool,
) -> HashSet<u32> {
    let mut gone: HashSet<u32> = counters
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| match (infos.get(t), late.contains_key(t)) {
            (Some(i), _) => i.flags & PROC_EXITED != 0,
            (None, true) => false,
            (None, false) => *t != OVERFLOW_TGID && !alive(*t),
        })
        .collect();
    // Identities without counters (an evicted entry): forget with the process.
    gone.extend(
        infos
            .iter()
            .filter(|(_, i)| i.flags & PROC_EXITED != 0)
            .map(|(t, _)| *t),
    );
    gone
}

/// Keys we hold a baseline for that the kernel's map no longer has.
fn vanished_keys<'a, K: std::hash::Hash + Eq + Copy, V>(
    baseline: &'a HashMap<K, V>,
    present: &'a HashSet<K>,
) -> impl Iterator<Item = K> + 'a {
    baseline.keys().filter(|k| !present.contains(k)).copied()
}

/// Marks `key` active at `poll` when it moved (or is new).
fn touch<K: std::hash::Hash + Eq>(active: &mut HashMap<K, u64>, key: K, moved: bool, poll: u64) {
    match active.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut e) if moved => {
            e.insert(poll);
        }
        std::collections::hash_map::Entry::Occupied(_) => {}
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(poll);
        }
    }
}

/// The growth of a cumulative counter since the previous poll; the entry
/// of an exited process is dropped and queued to be forgotten in the kernel.
fn advance<K: std::hash::Hash + Eq + Copy>(
    last: &mut HashMap<K, u64>,
    key: K,
    now: u64,
    gone: bool,
    forget: &mut Vec<K>,
) -> u64 {
    let delta = now.saturating_sub(last.get(&key).copied().unwrap_or(0));
    if gone {
        last.remove(&key);
        forget.push(key);
    } else {
        last.insert(key, now);
    }
    delta
}

#[cfg(test)]
mod tests {
    use sensor_common::AF_INET;

    use super::*;

    fn info(tgid: u32, comm: &str, flags: u32) -> (u32, ProcInfo) {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        (
            tgid,
            ProcInfo {
                tgid,
                ppid: 1,
                sid: 7,
                uid: 0,
                comm: c,
                flags,
                ..Default::default()
            },
        )
    }

    fn counters(read: u64, watched: u64, sent: u64) -> ProcCounters {
        ProcCounters {
            read_bytes: read,
            watched_read_bytes: watched,
            sent_bytes: sent,
            ..Default::default()
        }
    }

    fn send(tgid: u32, bytes: u64) -> (SendKey, SendCounters) {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[198, 18, 0, 2]);
        (
            SendKey {
                tgid,
                family: AF_INET,
                port: 443,
                addr,
            },
            SendCounters { bytes, ops: 1 },
        )
    }

    #[test]
    fn deltas_between_polls() {
        let mut c = Collector::default();
        let p = c.ingest(
            Snapshot {
                counters: vec![(10, counters(100, 60, 5))],
                infos: vec![info(10, "python3", 0)],
                sends: vec![send(10, 5)],
                ..Default::default()
            },
            |_| true,
        );
        assert_eq!(p.procs[0].read_bytes, 100);
        assert_eq!(p.procs[0].watched_read_bytes, 60);
        assert_eq!(p.identities[&10].comm, "python3");
        assert_eq!(p.sends[0].bytes, 5);
        assert_eq!(p.tracked, 1);
        let p = c.ingest(
            Snapshot {
                counters: vec![(10, counters(150, 60, 5))],
                infos: vec![info(10, "python3", 0)],
                sends: vec![send(10, 5)],
                ..Default::default()
            },
            |_| true,
        );
        assert_eq!(p.procs.len(), 1);
        assert_eq!(
            (
                p.procs[0].read_bytes,
                p.procs[0].watched_read_bytes,
                p.procs[0].sent_bytes
            ),
            (50, 0, 0)
        );
        assert!(p.sends.is_empty(), "no new send bytes");
        let p = c.ingest(
            Snapshot {
                counters: vec![(10, counters(150, 60, 5))],
                infos: vec![info(10, "python3", 0)],
                ..Default::default()
            },
            |_| true,
        );
        assert!(p.procs.is_empty(), "idle processes are not reported");
        assert!(p.forget_tgids.is_empty());
    }

    #[test]
    fn exited_processes_report_last_bytes_then_are_forgotten() {
        let mut c = Collector::default();
        c.ingest(
            Snapshot {
                counters: vec![(10, counters(100, 0, 0))],
                infos: vec![info(10, "dd", 0)],
                ..Default::default()
            },
            |_| true,
        );
        let file = (
            FileKey {
                tgid: 10,
                dev: 1,
                ino: 2,
            },
            40,
        );
        let p = c.ingest(
            Snapshot {
                counters: vec![(10, counters(140, 40, 0))],
                infos: vec![info(10, "dd", PROC_EXITED)],
                files: vec![file],
                ..Default::default()
            },
            |_| true,
        );
        assert_eq!(p.procs[0].read_bytes, 40);
        assert!(p.procs[0].exited);
        assert_eq!(p.forget_tgids, vec![10]);
        assert_eq!(p.forget_files, vec![file.0]);
        assert_eq!(p.files[0].bytes, 40);
        assert_eq!(p.tracked, 0);
        // A new process reusing the pid starts from zero.
        let p = c.ingest(
            Snapshot {
                counters: vec![(10, counters(7, 0, 0))],
                infos: vec![info(10, "cat", 0)],
                ..Default::default()
            },
            |_| true,
        );
        assert_eq!(p.procs[0].read_bytes, 7);
    }

    #[test]
    fn unlabelled_processes_use_liveness() {
        let mut c = Collector::default();
        let p = c.ingest(
            Snapshot {
                counters: vec![(99, counters(1, 0, 0))],
                ..Default::default()
            },
            |_| false,
        );
        assert_eq!(p.identities[&99].comm, "?");
        assert_eq!(p.forget_tgids, vec![99]);
    }

    #[test]
    fn lost_is_a_delta() {
        let mut c = Collector::default();
        let mut lost = [0; COUNTER_SLOTS];
        lost[0] = 5;
        assert_eq!(
            c.ingest(
                Snapshot {
                    lost,
                    ..Default::default()
                },
                |_| true
            )
            .lost[0],
            5
        );
        lost[0] = 7;
        assert_eq!(
            c.ingest(
                Snapshot {
                    lost,
                    ..Default::default()
                },
                |_| true
            )
            .lost[0],
            2
        );
    }

    #[test]
    fn mappings_count_the_most_resident_seen() {
        let mut c = Collector::default();
        let key = MmapKey {
            tgid: 10,
            _pad: 0,
            addr: 0x7f00_0000_0000,
        };
        let mapping = MmapInfo {
            dev: 1,
            _pad: 0,
            ino: 2,
            len: 64 << 20,
        };
        let snap = |resident: Option<Option<u64>>, flags| Snapshot {
            counters: vec![(10, counters(0, 0, 0))],
            infos: vec![info(10, "loader", flags)],
            mmaps: vec![(key, mapping)],
            resident: resident
                .map(|r| HashMap::from([(key, r)]))
                .unwrap_or_default(),
            ..Default::default()
        };
        let p = c.ingest(snap(Some(Some(8 << 20)), 0), |_| true);
        assert_eq!(
            (p.procs[0].watched_read_bytes, p.procs[0].mmap_bytes),
            (8 << 20, 8 << 20)
        );
        assert_eq!(p.files[0].bytes, 8 << 20);
        // Pages reclaimed and faulted again are not counted twice.
        let p = c.ingest(snap(Some(Some(4 << 20)), 0), |_| true);
        assert!(p.procs.is_empty());
        let p = c.ingest(snap(Some(Some(32 << 20)), 0), |_| true);
        assert_eq!(p.procs[0].watched_read_bytes, 24 << 20);
        // Unmapped after being seen: nothing more, and forgotten.
        let p = c.ingest(snap(Some(None), 0), |_| true);
        assert!(p.procs.is_empty());
        assert_eq!(p.forget_mmaps, vec![key]);
    }

    #[test]
    fn mappings_never_sampled_count_their_length() {
        let mut c = Collector::default();
        let key = MmapKey {
            tgid: 11,
            _pad: 0,
            addr: 0x1000,
        };
        let mapping = MmapInfo {
            dev: 1,
            _pad: 0,
            ino: 2,
            len: 5000,
        };
        let p = c.ingest(
            Snapshot {
                counters: vec![(11, counters(0, 0, 0))],
                infos: vec![info(11, "quick", PROC_EXITED)],
                mmaps: vec![(key, mapping)],
                ..Default::default()
            },
            |_| false,
        );
        assert_eq!(p.procs[0].mmap_bytes, 5000);
        assert_eq!(p.forget_mmaps, vec![key]);
    }

    fn born(c: ProcCounters, born_ns: u64) -> ProcCounters {
        ProcCounters { born_ns, ..c }
    }

    #[test]
    fn an_evicted_process_is_counted_and_a_remade_entry_counts_anew() {
        let mut c = Collector::default();
        let snap = |procs: Vec<(u32, ProcCounters)>| Snapshot {
            infos: procs.iter().map(|(t, _)| info(*t, "w", 0)).collect(),
            counters: procs,
            ..Default::default()
        };
        c.ingest(
            snap(vec![
                (10, born(counters(100, 0, 0), 1)),
                (11, born(counters(5, 0, 0), 2)),
            ]),
            |_| true,
        );
        // 11 left the spill while alive; 10's entry was evicted and made again.
        let p = c.ingest(snap(vec![(10, born(counters(30, 0, 0), 9))]), |_| true);
        assert_eq!(p.lost[Loss::ProcEvicted.index()], 2);
        assert_eq!(p.procs[0].read_bytes, 30, "a new entry counts from zero");
        // An identity whose counters were evicted before any poll saw them.
        let p = c.ingest(
            Snapshot {
                counters: vec![(10, born(counters(30, 0, 0), 9))],
                infos: vec![info(10, "w", 0), info(12, "x", 0)],
                ..Default::default()
            },
            |_| true,
        );
        assert_eq!(p.lost[Loss::ProcEvicted.index()], 1);
        assert!(p.forget_tgids.contains(&12), "its identity is removed");
    }

    #[test]
    fn sent_bytes_of_lost_destinations_go_to_an_unknown_destination() {
        let mut c = Collector::default();
        let snap = |sent: u64, dests: Vec<(SendKey, SendCounters)>, full: u64| {
            let mut lost = [0; COUNTER_SLOTS];
            lost[Loss::SendMapFull.index()] = full;
            Snapshot {
                counters: vec![(10, born(counters(0, 0, sent), 1))],
                infos: vec![info(10, "w", 0)],
                sends: dests,
                lost,
                ..Default::default()
            }
        };
        // No loss: nothing unknown, even with bytes in flight between reads.
        let p = c.ingest(snap(100, vec![send(10, 90)], 0), |_| true);
        assert!(p.sends.iter().all(|s| s.endpoint != Endpoint::Unknown));
        // The destination map spilled and 10's entry went unseen: its own
        // total (1000) is 310 more than its entries account for.
        let p = c.ingest(snap(1000, vec![send(10, 690)], 5), |_| true);
        let unknown: u64 = p
            .sends
            .iter()
            .filter(|s| s.endpoint == Endpoint::Unknown)
            .map(|s| s.bytes)
            .sum();
        let named: u64 = p
            .sends
            .iter()
            .filter(|s| s.endpoint != Endpoint::Unknown)
            .map(|s| s.bytes)
            .sum();
        assert_eq!(named, 600);
        assert_eq!(
            named + unknown + 90,
            1000,
            "every sent byte has a destination"
        );
    }

    #[test]
    fn idle_entries_of_live_processes_are_pruned() {
        let mut c = Collector::new(10);
        let mut forgot = Vec::new();
        for i in 0..40u64 {
            let read = if i < 3 { 100 * (i + 1) } else { 300 };
            let p = c.ingest(
                Snapshot {
                    counters: vec![
                        (10, born(counters(read, 0, 5), 1)),
                        (20, born(counters(i, 0, 0), 2)),
                    ],
                    infos: vec![info(10, "idle", 0), info(20, "busy", 0)],
                    sends: vec![send(10, 5)],
                    ..Default::default()
                },
                |_| true,
            );
            if p.forget_tgids.contains(&10) {
                forgot.push(i);
                assert!(p.forget_sends.iter().all(|k| k.tgid == 10));
                assert!(!p.forget_sends.is_empty());
                break;
            }
            assert!(!p.forget_tgids.contains(&20), "a busy process stays");
        }
        assert_eq!(forgot.len(), 1, "the idle process was pruned");
        assert!(
            forgot[0] >= 12,
            "not before it was idle for 10 polls: {forgot:?}"
        );
    }
}
