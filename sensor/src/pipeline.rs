//! One poll, straight through: kernel maps → per-process deltas → metrics →
//! activity per process → detection → alerts.

use std::{
    collections::HashMap,
    time::{Instant, SystemTime},
};

use crate::{
    alerts::{AlertJson, Context, Sinks},
    collect::{Collector, Poll, Snapshot},
    config::Config,
    container::CgroupResolver,
    destination::{Classifier, DestClass},
    detect::{Activity, Detector},
    loader::Sensor,
    metrics::Metrics,
    paths::PathCache,
    procmeta::ProcMetaCache,
    resident, sysinfo,
    watch::WatchSet,
};

pub struct Pipeline {
    collector: Collector,
    pub metrics: Metrics,
    containers: CgroupResolver,
    classifier: Classifier,
    detector: Detector,
    procs: ProcMetaCache,
    paths: PathCache,
    sinks: Sinks,
    host: String,
    started: Instant,
}

impl Pipeline {
    pub fn new(cfg: &Config, watch: &WatchSet, metrics: Metrics, sinks: Sinks) -> Self {
        Self {
            collector: Collector::default(),
            metrics,
            containers: CgroupResolver::new(),
            classifier: Classifier::new(cfg.trusted_cidr.clone()),
            detector: Detector::new(cfg.detect.clone()),
            procs: ProcMetaCache::new(16_384),
            paths: PathCache::new(watch.inodes.iter().map(|w| w.path.clone()).collect()),
            sinks,
            host: sysinfo::hostname(),
            started: Instant::now(),
        }
    }

    /// Reads the kernel maps once and carries the result through.
    pub fn poll(&mut self, sensor: &mut Sensor) -> anyhow::Result<()> {
        let mmaps = sensor.read_mmaps()?;
        let snapshot = Snapshot {
            counters: sensor.read_counters()?,
            infos: sensor.read_infos()?,
            sends: sensor.read_sends()?,
            files: sensor.read_files()?,
            resident: resident::sample_all(&mmaps),
            mmaps,
            lost: sensor.read_lost()?,
        };
        let poll = self.collector.ingest(snapshot, sysinfo::process_exists);
        self.metrics
            .record(&poll, &mut self.containers, &self.classifier);
        let activity = self.activity(&poll, sensor);
        let now = self.started.elapsed().as_secs();
        for alert in self.detector.observe(now, &activity) {
            let pod = self.containers.attribution(alert.process.cgroup_id).pod_uid;
            let ctx = Context {
                host: &self.host,
                now: SystemTime::now(),
                meta: self
                    .procs
                    .get(alert.process.tgid, alert.process.first_seen_ns),
                pod,
                namespace: String::new(),
                paths: &self.paths,
            };
            let json = AlertJson::new(&alert, ctx);
            self.metrics
                .count_alert(json.rule, &json.comm, &json.container);
            self.sinks.emit(&json);
        }
        self.metrics
            .detector_actors
            .set(self.detector.actors() as i64);
        if !poll.forget_tgids.is_empty() || !poll.forget_mmaps.is_empty() {
            sensor.forget(
                &poll.forget_tgids,
                &poll.forget_sends,
                &poll.forget_files,
                &poll.forget_mmaps,
            )?;
        }
        Ok(())
    }

    /// What each process did this poll, as the detector sees it. Processes
    /// that moved weights or untrusted bytes get their exe and command line
    /// read now, while they are alive; their files' paths likewise.
    fn activity(&mut self, poll: &Poll, sensor: &Sensor) -> Vec<Activity> {
        let mut by_tgid: HashMap<u32, Activity> = HashMap::new();
        for p in poll.procs.iter().filter(|p| p.watched_read_bytes > 0) {
            if let Some(a) = activity_of(&mut by_tgid, poll, p.tgid, &mut self.containers) {
                a.watched_read += p.watched_read_bytes;
            }
        }
        for f in &poll.files {
            self.paths.learn(f.tgid, f.inode);
            if let Some(a) = activity_of(&mut by_tgid, poll, f.tgid, &mut self.containers) {
                a.files.push((f.inode, f.bytes));
            }
        }
        for s in &poll.sends {
            let class = self.classifier.classify(&s.endpoint);
            if let Some(a) = activity_of(&mut by_tgid, poll, s.tgid, &mut self.containers) {
                a.sends.push((s.endpoint, class, s.bytes));
            }
        }
        let activity: Vec<Activity> = by_tgid.into_values().collect();
        for a in &activity {
            let untrusted = a.sends.iter().any(|(_, c, _)| *c == DestClass::Untrusted);
            if a.watched_read > 0 || untrusted {
                let tgid = a.identity.tgid;
                self.procs
                    .remember(tgid, a.identity.first_seen_ns, || sensor.exec_info(tgid));
            }
        }
        activity
    }
}

/// The activity entry of `tgid`, created with its identity and container.
fn activity_of<'a>(
    by_tgid: &'a mut HashMap<u32, Activity>,
    poll: &Poll,
    tgid: u32,
    containers: &mut CgroupResolver,
) -> Option<&'a mut Activity> {
    let identity = poll.identities.get(&tgid)?;
    Some(by_tgid.entry(tgid).or_insert_with(|| Activity {
        identity: identity.clone(),
        container: containers.attribution(identity.cgroup_id).container,
        watched_read: 0,
        files: Vec::new(),
        sends: Vec::new(),
    }))
}
