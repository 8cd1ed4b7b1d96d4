//! One poll, straight through: kernel maps (and exec records) → per-process
//! deltas → labels, once → metrics, tail records, audit entries, detection
//! → alerts. What it yields goes to the alert sinks, `sensor tail` and the
//! audit trail.

use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use crate::{
    alerts::{slow::SlowExfilJson, AlertJson, Context, TamperAlertJson},
    audit::{Access, AuditPoll, Destination},
    collect::{resident, Collector, Poll, Snapshot},
    config::Config,
    detect::{
        blind::BlindWatch,
        ledger::{network_of, Entry, Ledger, LedgerConfig, MAX_CELLS},
        Activity, Detector,
    },
    enrich::{
        destination::DestClass,
        identity::identity,
        label::{Enricher, Labelled},
        paths::PathCache,
    },
    export::metrics::Metrics,
    kernel::{lineage::Source, loader::Sensor, watch::WatchSet},
    ledger::store::Store,
    tail::record::{ActivityRecord, DestBytes},
    util::{sysinfo, time::rfc3339},
};

/// What one poll yields.
#[derive(Default)]
pub struct PollOutput {
    /// Every process that read or sent since the previous poll.
    pub records: Vec<ActivityRecord>,
    pub alerts: Vec<AlertJson>,
    /// Watched reads and sends for the audit log (when it is on).
    pub audit: Option<AuditPoll>,
    /// Agent alerts as JSON lines (`sensor_blind`).
    pub notices: Vec<String>,
}

pub struct Pipeline {
    collector: Collector,
    pub metrics: Metrics,
    enricher: Enricher,
    detector: Detector,
    paths: PathCache,
    sampler: resident::Sampler,
    host: String,
    started: Instant,
    audit: bool,
    blind: BlindWatch,
    /// The flow of each live process weights reached through a carrier.
    flows: HashMap<u32, u64>,
    polls: u64,
    /// Lineage map entries found lost so far (holdings, carriers, socket
    /// carriers, taken, watched files).
    lineage_lost: [u64; 5],
    /// Rule `slow_exfil`: the ledger, and where it is kept.
    ledger: Ledger,
    store: Store,
    ledger_evicted: u64,
    ledger_errors: u64,
}

/// Polls between two counts of the lineage maps' entries (each count walks
/// their keys).
const LINEAGE_CHECK_EVERY: u64 = 10;

impl Pipeline {
    pub fn new(cfg: &Config, watch: &WatchSet, metrics: Metrics) -> Self {
        let (ledger, store) = Store::open(
            &cfg.ledger.state_dir,
            LedgerConfig {
                horizon_secs: cfg.ledger.horizon.as_secs(),
                send_bytes: cfg.ledger.send_bytes,
                max_cells: MAX_CELLS,
            },
            unix_now(),
        );
        Self {
            collector: Collector::new(prune_after_polls(cfg)),
            metrics,
            enricher: Enricher::new(cfg.trusted_cidr.clone(), cfg.pods_dir.clone()),
            detector: Detector::new(cfg.detect.clone()),
            paths: PathCache::new(watch.inodes.iter().map(|w| w.path.clone()).collect()),
            sampler: resident::Sampler::default(),
            host: sysinfo::hostname(),
            started: Instant::now(),
            audit: cfg.audit.is_some(),
            blind: BlindWatch::new(cfg.detect.window),
            flows: HashMap::new(),
            polls: 0,
            lineage_lost: [0; 5],
            ledger,
            store,
            ledger_evicted: 0,
            ledger_errors: 0,
        }
    }

    /// Reads the kernel maps once and carries the result through.
    pub fn poll(&mut self, sensor: &mut Sensor) -> anyhow::Result<PollOutput> {
        // The kernel's loss counters, then identities, then counters: a
        // mapping record counted by the kernel is in the map read after it
        // unless it was evicted, and a process seen exited did all its I/O
        // before its counters are read, so forgetting it after this poll
        // loses nothing (the other order would drop its last bytes).
        let lost = sensor.read_lost()?;
        let lost_now = lost;
        let infos = sensor.read_infos()?;
        let mmaps = sensor.read_mmaps()?;
        let counters = sensor.read_counters()?;
        let known: std::collections::HashSet<u32> = infos.iter().map(|(t, _)| *t).collect();
        let late_infos = counters
            .iter()
            .filter(|(t, _)| !known.contains(t))
            .filter_map(|(t, _)| sensor.info(*t).map(|i| (*t, i)))
            .collect();
        let snapshot = Snapshot {
            infos,
            late_infos,
            counters,
            sends: sensor.read_sends()?,
            files: sensor.read_files()?,
            resident: self.sampler.sample_all(&mmaps),
            mmaps,
            lost,
        };
        for (map, n) in [
            ("processes", snapshot.counters.len()),
            ("identities", snapshot.infos.len()),
            ("destinations", snapshot.sends.len()),
            ("files", snapshot.files.len()),
            ("mappings", snapshot.mmaps.len()),
        ] {
            self.metrics
                .map_entries
                .with_label_values(&[map])
                .set(n as i64);
        }
        let mut poll = self.collector.ingest(snapshot, sysinfo::process_exists);
        self.lineage_evictions(sensor, &lost_now, &mut poll)?;
        // Labels, once; the exec records of the processes to name, read with
        // the snapshot (before the kernel forgets exited ones).
        let labelled = self.enricher.label(&poll);
        let exec = labelled
            .needs_meta
            .iter()
            .filter_map(|(t, _)| sensor.exec_info(*t).map(|e| (*t, e)))
            .collect();
        self.enricher.remember(&labelled.needs_meta, &exec);
        let mut out_notices = Vec::new();
        if let Some(detail) = self.blind.check(&poll, self.started.elapsed()) {
            tracing::warn!(%detail, "detection may be blind");
            self.metrics.count_alert("sensor_blind", "", "");
            out_notices
                .push(TamperAlertJson::blind(detail, &self.host, SystemTime::now()).to_line());
        }
        self.metrics.record(&poll, &labelled);
        let activity = self.activity(sensor, &poll, &labelled);
        let mut out = PollOutput {
            records: records(&poll, &labelled),
            alerts: Vec::new(),
            audit: self
                .audit
                .then(|| self.audit_poll(sensor, &activity, &labelled)),
            notices: out_notices,
        };
        let now = self.started.elapsed().as_secs();
        for alert in self.detector.observe(now, &activity) {
            // This poll's labels of the process, else as of now (it may have
            // moved its bytes in an earlier poll of the window).
            let labels = match labelled.of(alert.process.tgid) {
                Some(l) => l.clone(),
                None => self.enricher.labels_of(&alert.process),
            };
            let ctx = Context {
                host: &self.host,
                now: SystemTime::now(),
                meta: self
                    .enricher
                    .meta(alert.process.tgid, alert.process.first_seen_ns),
                pod: labels.pod,
                namespace: labels.namespace,
                paths: &self.paths,
                lineage: sensor.lineage(alert.process.tgid),
            };
            let json = AlertJson::new(&alert, ctx);
            self.metrics
                .count_alert(json.rule, &json.comm, &json.container);
            out.alerts.push(json);
        }
        out.notices.extend(self.slow_exfil(&activity, &labelled));
        for p in poll.procs.iter().filter(|p| p.exited) {
            self.flows.remove(&p.tgid);
        }
        self.detector.forget_exited(
            poll.procs
                .iter()
                .filter(|p| p.exited)
                .filter_map(|p| poll.identities.get(&p.tgid))
                .map(|id| (id.tgid, id.first_seen_ns)),
        );
        self.metrics
            .detector_actors
            .set(self.detector.actors() as i64);
        let evicted = self
            .detector
            .evicted
            .saturating_sub(self.metrics.detector_evicted.get());
        self.metrics.detector_evicted.inc_by(evicted);
        if !poll.forget_tgids.is_empty()
            || !poll.forget_mmaps.is_empty()
            || !poll.forget_sends.is_empty()
            || !poll.forget_files.is_empty()
        {
            sensor.forget(
                &poll.forget_tgids,
                &poll.forget_sends,
                &poll.forget_files,
                &poll.forget_mmaps,
            )?;
        }
        Ok(out)
    }

    /// Rule `slow_exfil`: this poll's activity into the ledger (journaled
    /// first), and the alert lines it raises.
    fn slow_exfil(&mut self, activity: &[Activity], labelled: &Labelled) -> Vec<String> {
        let now = unix_now();
        let mut by_id: HashMap<String, Entry> = HashMap::new();
        for a in activity {
            let id = &a.identity;
            let sends: Vec<(String, u64)> = a
                .sends
                .iter()
                .filter(|(_, class, _)| *class == DestClass::Untrusted)
                .map(|(ep, _, bytes)| {
                    let net = match ep {
                        crate::collect::endpoint::Endpoint::Ip(ip, _) => network_of(*ip),
                        other => other.addr_port().0,
                    };
                    (net, *bytes)
                })
                .collect();
            let read = a.watched_read + a.lineage_read;
            if read == 0 && sends.is_empty() {
                continue;
            }
            let labels = match labelled.of(id.tgid) {
                Some(l) => l.clone(),
                None => self.enricher.labels_of(id),
            };
            let meta = self.enricher.meta(id.tgid, id.first_seen_ns);
            let who = identity(
                id.uid,
                &meta.exe,
                &labels.container,
                &labels.pod,
                &labels.namespace,
            );
            let e = by_id.entry(who.clone()).or_insert_with(|| Entry {
                identity: who,
                pid: id.tgid,
                comm: id.comm.clone(),
                read: 0,
                sends: Vec::new(),
            });
            e.read += read;
            for (net, bytes) in sends {
                match e.sends.iter_mut().find(|(n, _)| *n == net) {
                    Some(x) => x.1 += bytes,
                    None => e.sends.push((net, bytes)),
                }
            }
            if !e.sends.is_empty() {
                e.pid = id.tgid;
                e.comm.clone_from(&id.comm);
            }
        }
        let mut entries: Vec<Entry> = by_id.into_values().collect();
        entries.sort_by(|a, b| a.identity.cmp(&b.identity));
        for e in &entries {
            let sent: u64 = e.sends.iter().map(|(_, b)| *b).sum();
            if sent > 0 {
                self.metrics.count_ledger_sent(&e.identity, sent);
            }
        }
        // Journaled before it is judged: no alert on bytes a restart forgets.
        self.store.record(self.ledger.bucket_of(now), now, &entries);
        let mut lines = Vec::new();
        let horizon = self.ledger.cfg.horizon_secs;
        let bucket = self.ledger.cfg.bucket_secs();
        let raised = self.ledger.observe(now, &entries);
        self.store
            .record_alerts(self.ledger.bucket_of(now), now, &raised);
        for a in raised {
            tracing::warn!(identity = %a.identity, network = %a.network, sent = a.sent_bytes, "slow_exfil");
            self.metrics
                .count_alert(crate::detect::ledger::RULE_SLOW_EXFIL, &a.comm, "");
            lines.push(
                SlowExfilJson::new(&a, &self.host, horizon, bucket, SystemTime::now()).to_line(),
            );
        }
        if self.polls.is_multiple_of(60) {
            self.ledger.expire(now);
        }
        self.store.tick(&self.ledger, now);
        self.metrics
            .ledger_identities
            .set(self.ledger.ids.len() as i64);
        self.metrics.ledger_cells.set(self.ledger.cells() as i64);
        self.metrics
            .ledger_errors
            .inc_by(self.store.errors.saturating_sub(self.ledger_errors));
        self.ledger_errors = self.store.errors;
        self.metrics.count_lost(
            sensor_common::Loss::LedgerEvicted,
            self.ledger.evicted.saturating_sub(self.ledger_evicted),
        );
        self.ledger_evicted = self.ledger.evicted;
        lines
    }

    /// At shutdown: the ledger written whole (the journal folded in).
    pub fn stop(&mut self) {
        self.store.compact(&self.ledger, unix_now());
    }

    /// Every few polls: entries the lineage maps (LRU) dropped, into this
    /// poll's losses, and how full they are.
    fn lineage_evictions(
        &mut self,
        sensor: &Sensor,
        made: &[u64; sensor_common::COUNTER_SLOTS],
        poll: &mut Poll,
    ) -> anyhow::Result<()> {
        self.polls += 1;
        if self.polls % LINEAGE_CHECK_EVERY != 1 {
            return Ok(());
        }
        let ev = sensor.lineage_evictions(made)?;
        for (i, (reason, gone)) in ev.lost.iter().enumerate() {
            poll.lost[reason.index()] += gone.saturating_sub(self.lineage_lost[i]);
            self.lineage_lost[i] = self.lineage_lost[i].max(*gone);
        }
        for (map, n) in [
            "holdings",
            "carriers",
            "socket_carriers",
            "taken",
            "watched_files",
        ]
        .iter()
        .zip(ev.entries)
        {
            self.metrics
                .map_entries
                .with_label_values(&[map])
                .set(n as i64);
        }
        Ok(())
    }

    /// The audit log's view of this poll: each process's reads of each
    /// watched file, with who it is, and every process's sends.
    fn audit_poll(
        &mut self,
        sensor: &Sensor,
        activity: &[Activity],
        labelled: &Labelled,
    ) -> AuditPoll {
        let mut out = AuditPoll::default();
        for a in activity {
            let id = &a.identity;
            if a.lineage_read > 0 {
                // Weights that came through a derived file or a relay: the
                // process's main source, and the weights file of origin.
                let hops = sensor.lineage(id.tgid);
                if let Some(last) = hops.last() {
                    let meta = self.enricher.meta(id.tgid, id.first_seen_ns);
                    let labels = labelled.of(id.tgid).cloned().unwrap_or_default();
                    // Its main source may be a watched file while these bytes
                    // came through a carrier of lesser weight: not that file's
                    // record, and no path the kernel kept.
                    let (dev, inode, via, path) = match &last.source {
                        Source::Watched { .. } => (0, 0, "carrier", "secondary source".into()),
                        Source::Node { key, .. } => (
                            key.dev,
                            key.ino,
                            last.via.as_str(),
                            self.paths.source(&last.source),
                        ),
                        other => (0, 0, last.via.as_str(), self.paths.source(other)),
                    };
                    out.accesses.push(Access {
                        pid: id.tgid,
                        ppid: id.ppid,
                        uid: id.uid,
                        comm: id.comm.clone(),
                        exe: meta.exe,
                        cmdline: meta.cmdline,
                        container: a.container.clone(),
                        pod: labels.pod,
                        namespace: labels.namespace,
                        path,
                        dev,
                        inode,
                        read_bytes: a.lineage_read,
                        via: via.into(),
                        origin: hops
                            .first()
                            .map(|h| self.paths.source(&h.source))
                            .unwrap_or_default(),
                        ..Access::default()
                    });
                }
            }
            if !a.files.is_empty() {
                let meta = self.enricher.meta(id.tgid, id.first_seen_ns);
                let labels = labelled.of(id.tgid).cloned().unwrap_or_default();
                let (pod, namespace) = (labels.pod, labels.namespace);
                for (inode, bytes) in &a.files {
                    out.accesses.push(Access {
                        pid: id.tgid,
                        ppid: id.ppid,
                        uid: id.uid,
                        comm: id.comm.clone(),
                        exe: meta.exe.clone(),
                        cmdline: meta.cmdline.clone(),
                        container: a.container.clone(),
                        pod: pod.clone(),
                        namespace: namespace.clone(),
                        path: self.paths.path(inode),
                        dev: inode.dev,
                        inode: inode.ino,
                        read_bytes: *bytes,
                        ..Access::default()
                    });
                }
            }
            for (endpoint, class, bytes) in &a.sends {
                let (addr, port) = endpoint.addr_port();
                out.sends.push((
                    id.tgid,
                    Destination {
                        addr,
                        port,
                        class: class.as_str().into(),
                        bytes: *bytes,
                    },
                ));
            }
        }
        out
    }

    /// What each process did this poll, as the detector sees it; the
    /// files' paths are learnt while the processes are alive.
    fn activity(&mut self, sensor: &Sensor, poll: &Poll, labelled: &Labelled) -> Vec<Activity> {
        let mut by_tgid: HashMap<u32, Activity> = HashMap::new();
        self.paths.begin_poll();
        for p in &poll.procs {
            let lineage = p.derived_read_bytes + p.relayed_bytes;
            if lineage > 0 {
                // Weights reached it through a carrier: its flow (that of
                // its main source, which may change as it takes more in).
                if let Some(flow) = sensor.flow_of(p.tgid) {
                    self.flows.insert(p.tgid, flow);
                }
            }
            if p.distinct_read_bytes + lineage == 0 {
                continue;
            }
            if let Some(a) = activity_of(&mut by_tgid, poll, labelled, p.tgid) {
                a.watched_read += p.distinct_read_bytes;
                a.lineage_read += lineage;
            }
        }
        for f in &poll.files {
            self.paths.learn(f.tgid, f.inode);
            if let Some(a) = activity_of(&mut by_tgid, poll, labelled, f.tgid) {
                a.files.push((f.inode, f.bytes));
            }
        }
        for s in &labelled.sends {
            if let Some(a) = activity_of(&mut by_tgid, poll, labelled, s.tgid) {
                a.sends.push((s.endpoint, s.class, s.bytes));
            }
        }
        for a in by_tgid.values_mut() {
            a.flow = self.flows.get(&a.identity.tgid).copied();
        }
        by_tgid.into_values().collect()
    }
}

/// One record per process that read or sent since the previous poll.
fn records(poll: &Poll, labelled: &Labelled) -> Vec<ActivityRecord> {
    let ts = rfc3339(SystemTime::now());
    let mut by_tgid: HashMap<u32, ActivityRecord> = HashMap::new();
    // Where each (process, destination) is in its record's list: one
    // lookup per send, not a scan (a sprayer sends to thousands a poll).
    let mut dest_at: HashMap<(u32, crate::collect::endpoint::Endpoint), usize> = HashMap::new();
    for p in poll
        .procs
        .iter()
        .filter(|p| p.read_bytes + p.sent_bytes + p.relayed_bytes > 0)
    {
        let Some(labels) = labelled.of(p.tgid) else {
            continue;
        };
        by_tgid.insert(
            p.tgid,
            ActivityRecord {
                ts: ts.clone(),
                pid: p.tgid,
                comm: labels.comm.clone(),
                container: labels.container.clone(),
                read_bytes: p.read_bytes,
                watched_read_bytes: p.watched_read_bytes,
                derived_read_bytes: p.derived_read_bytes,
                relayed_bytes: p.relayed_bytes,
                ..Default::default()
            },
        );
    }
    for s in &labelled.sends {
        let Some(r) = by_tgid.get_mut(&s.tgid) else {
            continue;
        };
        r.sent_bytes += s.bytes;
        *match s.class {
            DestClass::Untrusted => &mut r.untrusted_sent_bytes,
            DestClass::Trusted => &mut r.trusted_sent_bytes,
            DestClass::Loopback => &mut r.loopback_sent_bytes,
            DestClass::Local => &mut r.local_sent_bytes,
        } += s.bytes;
        match dest_at.get(&(s.tgid, s.endpoint)) {
            Some(&i) => r.destinations[i].bytes += s.bytes,
            None => {
                dest_at.insert((s.tgid, s.endpoint), r.destinations.len());
                r.destinations.push(DestBytes {
                    addr: s.endpoint.to_string(),
                    class: s.class.as_str().into(),
                    bytes: s.bytes,
                });
            }
        }
    }
    let mut records: Vec<ActivityRecord> = by_tgid.into_values().collect();
    for r in &mut records {
        r.finish();
    }
    records
}

/// Wall-clock seconds since the epoch (the ledger's buckets).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Entries of live processes idle this long leave the kernel maps
/// (`prune-idle-secs`; by default twice the detection window and a minute:
/// a process idle that long has nothing left in any window; if it moves
/// bytes again it is counted anew).
fn prune_after_polls(cfg: &Config) -> u64 {
    let idle = cfg
        .prune_idle
        .map(|d| d.as_secs_f64())
        .unwrap_or(cfg.detect.window.as_secs_f64() * 2.0 + 60.0);
    (idle / cfg.poll_interval.as_secs_f64().max(0.001)).ceil() as u64
}

/// The activity entry of `tgid`, created with its identity and container.
fn activity_of<'a>(
    by_tgid: &'a mut HashMap<u32, Activity>,
    poll: &Poll,
    labelled: &Labelled,
    tgid: u32,
) -> Option<&'a mut Activity> {
    let identity = poll.identities.get(&tgid)?;
    Some(by_tgid.entry(tgid).or_insert_with(|| {
        Activity {
            identity: identity.clone(),
            container: labelled
                .of(tgid)
                .map(|l| l.container.clone())
                .unwrap_or_default(),
            watched_read: 0,
            lineage_read: 0,
            flow: None,
            files: Vec::new(),
            sends: Vec::new(),
        }
    }))
}
