//! The agent's trail: the access audit log and tamper detection, fed after
//! every poll, with findings raised as `sensor_tamper` alerts, counted in
//! `sensor_tamper_events_total` and written into the audit log.

use std::time::SystemTime;

use crate::{
    alerts::{unix_secs, Sinks, TamperAlertJson},
    audit::{AuditLog, Event, Gap},
    config::Config,
    loader::Sensor,
    metrics::Metrics,
    pipeline::PollOutput,
    tamper::{Finding, TamperWatch},
};

pub struct Trail {
    audit: Option<AuditLog>,
    tamper: Option<TamperWatch>,
    host: String,
    /// A finding made before the alert sinks existed (the restart gap).
    pending: Vec<Finding>,
}

impl Trail {
    /// Opens the audit log (before anything is attached: a bad path stops
    /// the agent cleanly) and notes the span the agent did not run.
    pub fn open(cfg: &Config, host: &str) -> anyhow::Result<Trail> {
        let mut pending = Vec::new();
        let audit = match &cfg.audit {
            Some(a) => {
                let (log, gap) = AuditLog::open(a, host, SystemTime::now())?;
                if let Some(g) = gap {
                    pending.push(gap_finding(&g));
                }
                Some(log)
            }
            None => None,
        };
        Ok(Trail {
            audit,
            tamper: None,
            host: host.to_string(),
            pending,
        })
    }

    /// Starts watching the attached sensor for tampering.
    pub fn watch(&mut self, sensor: &Sensor) -> anyhow::Result<()> {
        let watch = TamperWatch::new(sensor)?;
        tracing::info!(links = watch.watched_links(), "tamper detection on");
        self.tamper = Some(watch);
        Ok(())
    }

    /// After each poll: audit the poll, check for tampering, raise findings.
    pub fn after_poll(
        &mut self,
        out: &mut PollOutput,
        sensor: &Sensor,
        metrics: &Metrics,
        sinks: &mut Sinks,
    ) {
        let now = SystemTime::now();
        let mut findings = std::mem::take(&mut self.pending);
        if let Some(t) = &mut self.tamper {
            findings.extend(t.check(sensor));
        }
        for f in findings {
            self.raise(f, now, metrics, sinks);
        }
        if let Some(log) = &mut self.audit {
            if let Some(poll) = out.audit.take() {
                log.observe(poll);
            }
            let before = log.written();
            if let Err(e) = log.tick(now) {
                metrics.audit_errors.inc();
                tracing::error!("audit log: {e:#}");
            }
            metrics.audit_records.inc_by(log.written() - before);
        }
        metrics.heartbeat.set(unix_secs(now) as i64);
    }

    /// A clean stop: the open interval and a `stop` record, fsynced.
    pub fn stop(self, reason: &str) {
        if let Some(log) = self.audit {
            if let Err(e) = log.stop(reason, SystemTime::now()) {
                tracing::error!("audit log: {e:#}");
            }
        }
    }

    fn raise(&mut self, f: Finding, now: SystemTime, metrics: &Metrics, sinks: &mut Sinks) {
        tracing::warn!(what = f.what, detail = %f.detail, "tamper");
        metrics.tamper.with_label_values(&[f.what]).inc();
        sinks.emit_line(TamperAlertJson::new(f.what, f.detail.clone(), &self.host, now).to_line());
        if let Some(log) = &mut self.audit {
            let event = Event::Tamper {
                what: f.what.into(),
                detail: f.detail,
            };
            if let Err(e) = log.event(&event, now) {
                metrics.audit_errors.inc();
                tracing::error!("audit log: {e:#}");
            }
        }
    }
}

fn gap_finding(g: &Gap) -> Finding {
    let how = if g.clean {
        "stopped cleanly"
    } else {
        "ended without a clean stop (killed or crashed; up to one audit interval before it may be missing)"
    };
    let torn = if g.truncated_bytes > 0 {
        format!(
            "; a torn last record of {} bytes was cut off",
            g.truncated_bytes
        )
    } else {
        String::new()
    };
    Finding {
        what: "agent_gap",
        detail: format!(
            "the agent was not running for {} s since {}: its previous run {how}{torn}",
            g.seconds, g.from
        ),
    }
}
