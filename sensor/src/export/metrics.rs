//! The Prometheus registry: counters fed from each poll's deltas. Exporters
//! read totals, never kernel maps. Labels are bounded: no pid, no path,
//! `comm` folded past a cap.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use prometheus::{
    core::Collector, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use sensor_common::Loss;

use crate::{collect::Poll, enrich::label::Labelled, export::labels::LabelFolder};

pub struct Metrics {
    pub registry: Registry,
    file_read: IntCounterVec,
    relayed: IntCounterVec,
    socket_send: IntCounterVec,
    alerts: IntCounterVec,
    pub sink_errors: IntCounterVec,
    pub sink_dropped: IntCounterVec,
    lost: IntCounterVec,
    tracked: IntGauge,
    pub detector_actors: IntGauge,
    pub detector_evicted: prometheus::IntCounter,
    pub tail_clients: IntGauge,
    pub tail_dropped: prometheus::IntCounter,
    probe_info: IntGaugeVec,
    pub tamper: IntCounterVec,
    pub heartbeat: IntGauge,
    /// Duration of each poll (`_count`: polls completed).
    pub poll_duration: Histogram,
    /// The longest poll so far.
    pub poll_duration_max: Gauge,
    /// When the last poll completed, for `/healthz`.
    pub health: Arc<Health>,
    pub audit_records: prometheus::IntCounter,
    pub audit_errors: prometheus::IntCounter,
    pub audit_chain_head: IntGaugeVec,
    pub audit_folded: prometheus::IntCounter,
    /// Entries in each counting map after the last poll.
    pub map_entries: IntGaugeVec,
    comms: LabelFolder,
    /// Untrusted bytes per identity (rule `slow_exfil`'s ledger).
    ledger_sent: IntCounterVec,
    pub ledger_identities: IntGauge,
    pub ledger_cells: IntGauge,
    pub ledger_errors: prometheus::IntCounter,
    identities: LabelFolder,
}

/// Distinct `identity` label values before folding into `other`.
pub const MAX_IDENTITY_LABELS: usize = 100;

impl Metrics {
    pub fn new(max_comm_labels: usize, kernel: &str) -> Result<Self, prometheus::Error> {
        fn register<M: Collector + Clone + 'static>(
            registry: &Registry,
            metric: M,
        ) -> Result<M, prometheus::Error> {
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        }
        let registry = Registry::new();
        let counter = |name: &str, help: &str| register(&registry, IntCounter::new(name, help)?);
        let gauge = |name: &str, help: &str| register(&registry, IntGauge::new(name, help)?);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels)?,
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        let file_read = counter_vec(
            "sensor_file_read_bytes_total",
            "Bytes read from regular files, by watched: true (weights), derived (weights a holder wrote into another file: copies, archives, tmpfs staging; counted once per window, at most what the writer held), false.",
            &["comm", "container", "watched"],
        )?;
        let relayed = counter_vec(
            "sensor_relayed_bytes_total",
            "Bytes of weights relayed to a process through pipes, FIFOs, UNIX sockets and inet connections on this host.",
            &["comm", "container"],
        )?;
        let socket_send = counter_vec(
            "sensor_socket_send_bytes_total",
            "Bytes sent on sockets, by destination class (loopback, local = UNIX domain, trusted, untrusted).",
            &["comm", "container", "destination"],
        )?;
        let alerts = counter_vec(
            "sensor_alerts_total",
            "Alerts raised, by rule.",
            &["rule", "comm", "container"],
        )?;
        let sink_errors = counter_vec(
            "sensor_alert_sink_errors_total",
            "Alerts a sink failed to deliver (stdout, file, alertmanager after retries).",
            &["sink"],
        )?;
        let sink_dropped = counter_vec(
            "sensor_alerts_dropped_total",
            "Alerts dropped because a sink's queue was full.",
            &["sink"],
        )?;
        for sink in ["stdout", "file", "alertmanager"] {
            sink_errors.with_label_values(&[sink]).inc_by(0);
            sink_dropped.with_label_values(&[sink]).inc_by(0);
        }
        let lost = counter_vec(
            "sensor_lost_events_total",
            "Reads or sends the kernel side could not count, by reason.",
            &["reason"],
        )?;
        for reason in Loss::ALL {
            lost.with_label_values(&[reason.label()]).inc_by(0);
        }
        let tracked = gauge(
            "sensor_tracked_processes",
            "Processes the kernel maps hold counts for.",
        )?;
        let detector_actors = gauge(
            "sensor_detector_actors",
            "Actors (processes, sessions, containers) with activity in the detection window.",
        )?;
        let detector_evicted = counter(
            "sensor_detector_actors_evicted_total",
            "Actors forgotten before their window ended because the detector held its maximum.",
        )?;
        let tail_clients = gauge("sensor_tail_clients", "`sensor tail` clients connected.")?;
        let tail_dropped = counter(
            "sensor_tail_clients_dropped_total",
            "`sensor tail` clients disconnected for not keeping up.",
        )?;
        let build = gauge_vec(
            "sensor_build_info",
            "Build and kernel of the running agent (always 1).",
            &["version", "kernel"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel])
            .set(1);
        let probe_info = gauge_vec(
            "sensor_probe_info",
            "1 for each capability's attached hook, 0 when it has none.",
            &["capability", "hook"],
        )?;
        let tamper = counter_vec(
            "sensor_tamper_events_total",
            "Tamper findings (rule sensor_tamper), by what was found.",
            &["what"],
        )?;
        let heartbeat = gauge(
            "sensor_heartbeat_timestamp_seconds",
            "Unix time of the agent's last completed poll: stale or absent means the agent is not watching.",
        )?;
        let poll_duration = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "sensor_poll_duration_seconds",
                    "Time one poll took (maps read, deltas, labels, detection, alerts); _count is the polls completed.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )?,
        )?;
        let poll_duration_max = register(
            &registry,
            Gauge::new(
                "sensor_poll_duration_max_seconds",
                "The longest poll since the agent started.",
            )?,
        )?;
        let audit_records = counter(
            "sensor_audit_records_total",
            "Records appended to the audit log.",
        )?;
        let audit_errors = counter(
            "sensor_audit_errors_total",
            "Failed writes or fsyncs of the audit log.",
        )?;
        let audit_chain_head = gauge_vec(
            "sensor_audit_chain_head",
            "Sequence number of the last audit record written; hash_prefix is the first 16 hex digits of its hash (one series).",
            &["hash_prefix"],
        )?;
        let audit_folded = counter(
            "sensor_audit_records_folded_total",
            "Files folded into one summary audit record because a process passed audit-max-records-per-process in an interval.",
        )?;
        let ledger_sent = counter_vec(
            "sensor_ledger_untrusted_sent_bytes_total",
            "Bytes sent to untrusted destinations per identity (uid and executable on the host, workload and executable in a container; the first 100 identities seen, the rest folded into identity=\"other\").",
            &["identity"],
        )?;
        let ledger_identities = gauge(
            "sensor_ledger_identities",
            "Identities the slow_exfil ledger holds over the horizon.",
        )?;
        let ledger_cells = gauge(
            "sensor_ledger_cells",
            "Cells (identity × network or read series × bucket) the slow_exfil ledger holds.",
        )?;
        let ledger_errors = counter(
            "sensor_ledger_state_errors_total",
            "Failed writes of the ledger's state dir (counting continues in memory).",
        )?;
        let map_entries = gauge_vec(
            "sensor_map_entries",
            "Entries in the kernel's counting maps after the last poll (spill maps included).",
            &["map"],
        )?;
        Ok(Self {
            registry,
            file_read,
            relayed,
            socket_send,
            alerts,
            sink_errors,
            sink_dropped,
            lost,
            tracked,
            detector_actors,
            detector_evicted,
            tail_clients,
            tail_dropped,
            probe_info,
            tamper,
            heartbeat,
            poll_duration,
            poll_duration_max,
            health: Arc::new(Health::new()),
            audit_records,
            audit_errors,
            audit_chain_head,
            audit_folded,
            map_entries,
            comms: LabelFolder::new(max_comm_labels),
            ledger_sent,
            ledger_identities,
            ledger_cells,
            ledger_errors,
            identities: LabelFolder::new(MAX_IDENTITY_LABELS),
        })
    }

    /// A poll completed after `took`.
    pub fn poll_done(&self, took: Duration) {
        let secs = took.as_secs_f64();
        self.poll_duration.observe(secs);
        if secs > self.poll_duration_max.get() {
            self.poll_duration_max.set(secs);
        }
        self.health.polled();
    }

    pub fn set_probe(&self, capability: &str, hook: &str, attached: bool) {
        self.probe_info
            .with_label_values(&[capability, hook])
            .set(attached as i64);
    }

    /// Losses found outside a poll's counters.
    pub fn count_lost(&self, reason: Loss, n: u64) {
        if n > 0 {
            self.lost.with_label_values(&[reason.label()]).inc_by(n);
        }
    }

    /// Untrusted bytes of one identity this poll.
    pub fn count_ledger_sent(&mut self, identity: &str, bytes: u64) {
        let id = self.identities.fold(identity);
        self.ledger_sent.with_label_values(&[id]).inc_by(bytes);
    }

    pub fn count_alert(&mut self, rule: &str, comm: &str, container: &str) {
        let comm = self.comms.fold(comm);
        self.alerts
            .with_label_values(&[rule, comm, container])
            .inc();
    }

    /// Adds one poll's deltas, with the poll's labels.
    pub fn record(&mut self, poll: &Poll, labelled: &Labelled) {
        let labels_of = |tgid: u32, comms: &mut LabelFolder| -> (String, String) {
            match labelled.of(tgid) {
                Some(l) => (comms.fold(&l.comm).to_string(), l.container.clone()),
                None => ("?".to_string(), String::new()),
            }
        };
        for p in &poll.procs {
            if p.read_bytes + p.relayed_bytes == 0 {
                continue;
            }
            let (comm, container) = labels_of(p.tgid, &mut self.comms);
            if p.relayed_bytes > 0 {
                self.relayed
                    .with_label_values(&[&comm, &container])
                    .inc_by(p.relayed_bytes);
            }
            let derived = p
                .derived_read_bytes
                .min(p.read_bytes.saturating_sub(p.watched_read_bytes));
            if derived > 0 {
                self.file_read
                    .with_label_values(&[&comm, &container, "derived"])
                    .inc_by(derived);
            }
            let unwatched = p
                .read_bytes
                .saturating_sub(p.watched_read_bytes)
                .saturating_sub(derived);
            if p.watched_read_bytes > 0 {
                self.file_read
                    .with_label_values(&[&comm, &container, "true"])
                    .inc_by(p.watched_read_bytes);
            }
            if unwatched > 0 {
                self.file_read
                    .with_label_values(&[&comm, &container, "false"])
                    .inc_by(unwatched);
            }
        }
        for s in &labelled.sends {
            let (comm, container) = labels_of(s.tgid, &mut self.comms);
            self.socket_send
                .with_label_values(&[&comm, &container, s.class.as_str()])
                .inc_by(s.bytes);
        }
        for reason in Loss::ALL {
            let n = poll.lost[reason.index()];
            if n > 0 {
                self.lost.with_label_values(&[reason.label()]).inc_by(n);
            }
        }
        self.tracked.set(poll.tracked as i64);
    }

    /// The text exposition format.
    pub fn encode(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

/// Slack beyond three poll intervals before `/healthz` calls a poll late.
pub const HEALTH_SLACK: Duration = Duration::from_secs(2);

/// Whether the poll loop keeps its schedule, for `/healthz` (read on the
/// metrics server's thread while the poll runs on its own).
pub struct Health {
    epoch: Instant,
    interval_ms: AtomicU64,
    /// Milliseconds after `epoch` the last poll completed (or the loop began).
    last_ms: AtomicU64,
}

impl Health {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: AtomicU64::new(1000),
            last_ms: AtomicU64::new(0),
        }
    }

    /// The poll loop starts, polling every `interval`.
    pub fn start(&self, interval: Duration) {
        self.interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
        self.polled();
    }

    pub fn polled(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Why the agent is not healthy: its last poll completed longer ago
    /// than three intervals and [`HEALTH_SLACK`]; `None` when it is.
    pub fn problem(&self) -> Option<String> {
        self.problem_at(self.epoch.elapsed())
    }

    fn problem_at(&self, now: Duration) -> Option<String> {
        let interval = self.interval_ms.load(Ordering::Relaxed);
        let limit = interval.saturating_mul(3) + HEALTH_SLACK.as_millis() as u64;
        let age = (now.as_millis() as u64).saturating_sub(self.last_ms.load(Ordering::Relaxed));
        (age > limit).then(|| {
            format!(
                "last poll completed {:.1} s ago (limit {:.1} s: 3 poll intervals + {} s): polling is stuck or behind",
                age as f64 / 1000.0,
                limit as f64 / 1000.0,
                HEALTH_SLACK.as_secs()
            )
        })
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use sensor_common::{ProcCounters, AF_INET};

    use super::*;
    use crate::collect::{Identity, ProcDelta, SendDelta};

    #[test]
    fn health_turns_bad_when_polls_stop() {
        let h = Health::new();
        h.start(Duration::from_millis(200));
        let t = h.epoch.elapsed();
        assert_eq!(h.problem_at(t + Duration::from_millis(2500)), None);
        let why = h.problem_at(t + Duration::from_secs(3)).unwrap();
        assert!(
            why.contains("last poll completed 3.0 s ago (limit 2.6 s"),
            "{why}"
        );
        h.polled();
        assert_eq!(h.problem_at(h.epoch.elapsed()), None);
        let m = Metrics::new(8, "k").unwrap();
        m.poll_done(Duration::from_millis(30));
        m.poll_done(Duration::from_millis(10));
        assert_eq!(m.poll_duration.get_sample_count(), 2);
        assert!((m.poll_duration_max.get() - 0.03).abs() < 1e-9);
    }

    #[test]
    fn records_labelled_deltas() {
        let mut m = Metrics::new(8, "6.18.0-test").unwrap();
        let mut poll = Poll::default();
        poll.identities.insert(
            5,
            Identity {
                tgid: 5,
                ppid: 1,
                sid: 5,
                uid: 0,
                cgroup_id: 0,
                first_seen_ns: 0,
                comm: "we\"ird\\na\nme".into(),
            },
        );
        poll.procs.push(ProcDelta {
            tgid: 5,
            read_bytes: 100,
            watched_read_bytes: 60,
            sent_bytes: 30,
            mmap_bytes: 0,
            total: ProcCounters::default(),
            exited: false,
            ..Default::default()
        });
        let ep = crate::collect::endpoint::Endpoint::from_kernel(
            AF_INET,
            [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            9,
        )
        .unwrap();
        poll.sends.push(SendDelta {
            tgid: 5,
            endpoint: ep,
            bytes: 30,
        });
        poll.lost[1] = 3;
        poll.tracked = 1;
        let labelled =
            crate::enrich::label::Enricher::new(Vec::new(), "/nonexistent".into()).label(&poll);
        m.record(&poll, &labelled);
        let text = Metrics::encode(&m.registry);
        assert!(text.contains(r#"sensor_file_read_bytes_total{comm="we\"ird\\na\nme",container="",watched="true"} 60"#), "{text}");
        assert!(text.contains(r#"watched="false"} 40"#), "{text}");
        assert!(text.contains(r#"destination="untrusted"} 30"#), "{text}");
        assert!(
            text.contains(r#"sensor_lost_events_total{reason="info_map_full"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sensor_lost_events_total{reason="proc_map_full"} 0"#),
            "{text}"
        );
        assert!(text.contains("sensor_tracked_processes 1"), "{text}");
        assert!(
            text.contains(r#"sensor_build_info{kernel="6.18.0-test""#),
            "{text}"
        );
    }
}
