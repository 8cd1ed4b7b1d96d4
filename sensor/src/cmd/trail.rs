//! The agent's trail: the access audit log and tamper detection, fed after
//! every poll, with findings raised as `sensor_tamper` alerts, counted in
//! `sensor_tamper_events_total` and written into the audit log.

use crate::{
    alerts::{Sinks, TamperAlertJson},
    audit::{AuditLog, Event, Gap, Now},
    cmd::pipeline::PollOutput,
    config::Config,
    export::metrics::Metrics,
    kernel::{
        loader::Sensor,
        tamper::{Finding, TamperWatch},
    },
    util::time::unix_secs,
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
                let (log, gap) = AuditLog::open(a, host, Now::current())?;
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
        let now = Now::current();
        let mut findings = std::mem::take(&mut self.pending);
        if let Some(t) = &mut self.tamper {
            findings.extend(t.check(sensor));
        }
        // A log file removed or replaced from outside: reopened, and said.
        if let Some(log) = &mut self.audit {
            match log.check_file() {
                Ok(Some(detail)) => findings.push(Finding {
                    what: "audit_log_removed",
                    detail,
                }),
                Ok(None) => {}
                Err(e) => {
                    metrics.audit_errors.inc();
                    tracing::error!("audit log: {e:#}");
                }
            }
        }
        let (written, folded) = self
            .audit
            .as_ref()
            .map(|l| (l.written(), l.folded()))
            .unwrap_or_default();
        for f in findings {
            self.raise(f, now, metrics, sinks);
        }
        if let Some(log) = &mut self.audit {
            if let Some(poll) = out.audit.take() {
                log.observe(poll);
            }
            if let Err(e) = log.tick(now) {
                metrics.audit_errors.inc();
                tracing::error!("audit log: {e:#}");
            }
            metrics.audit_records.inc_by(log.written() - written);
            metrics.audit_folded.inc_by(log.folded() - folded);
            if let Some((seq, hash)) = log.head() {
                // One series: the head as of now.
                metrics.audit_chain_head.reset();
                metrics
                    .audit_chain_head
                    .with_label_values(&[&hash[..16]])
                    .set(seq as i64);
            }
        }
        metrics.heartbeat.set(unix_secs(now.wall) as i64);
    }

    /// A clean stop: the open interval and a `stop` record, fsynced.
    pub fn stop(self, reason: &str) {
        if let Some(log) = self.audit {
            if let Err(e) = log.stop(reason, Now::current()) {
                tracing::error!("audit log: {e:#}");
            }
        }
    }

    fn raise(&mut self, f: Finding, now: Now, metrics: &Metrics, sinks: &mut Sinks) {
        tracing::warn!(what = f.what, detail = %f.detail, "tamper");
        metrics.tamper.with_label_values(&[f.what]).inc();
        sinks.emit_line(
            TamperAlertJson::new(f.what, f.detail.clone(), &self.host, now.wall).to_line(),
        );
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
    let damaged = match &g.damaged_file {
        Some(d) => {
            format!("; the log ended in a line that is not a record and was set aside as {d}")
        }
        None => String::new(),
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
            "the agent was not running for {} s since {}: its previous run {how}{torn}{damaged}",
            g.seconds, g.from
        ),
    }
}
