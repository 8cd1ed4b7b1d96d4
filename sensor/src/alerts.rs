//! Alerts as JSON lines (the SIEM contract) and where they go: stdout, an
//! appended file, and Alertmanager's v2 API. Sinks never block counting: the
//! Alertmanager push runs on its own thread behind a bounded queue; what
//! does not fit is dropped and counted.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::Path,
    sync::mpsc::{sync_channel, SyncSender, TrySendError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus::IntCounterVec;
use serde::Serialize;

use crate::{detect::Alert, paths::PathCache, procmeta::ProcMeta};

#[derive(Debug, Serialize)]
pub struct FileJson {
    pub path: String,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct DestinationJson {
    pub addr: String,
    pub port: u16,
    pub bytes: u64,
    pub class: &'static str,
}

/// One alert line; field names and order are the contract (README).
#[derive(Debug, Serialize)]
pub struct AlertJson {
    pub ts: String,
    pub rule: &'static str,
    pub severity: &'static str,
    pub scope: &'static str,
    pub host: String,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    pub cmdline: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub window_s: u64,
    pub watched_read_bytes: u64,
    pub sent_bytes: u64,
    pub top_files: Vec<FileJson>,
    pub destinations: Vec<DestinationJson>,
    pub pids: Vec<u32>,
}

/// Where the alert happened, beyond what the detector knows.
pub struct Context<'a> {
    pub host: &'a str,
    pub now: SystemTime,
    pub meta: ProcMeta,
    pub pod: String,
    pub namespace: String,
    pub paths: &'a PathCache,
}

impl AlertJson {
    pub fn new(a: &Alert, ctx: Context<'_>) -> Self {
        AlertJson {
            ts: rfc3339(ctx.now),
            rule: a.rule,
            severity: "critical",
            scope: a.scope.as_str(),
            host: ctx.host.to_string(),
            pid: a.process.tgid,
            ppid: a.process.ppid,
            uid: a.process.uid,
            comm: a.process.comm.clone(),
            exe: ctx.meta.exe,
            cmdline: ctx.meta.cmdline,
            container: a.container.clone(),
            pod: ctx.pod,
            namespace: ctx.namespace,
            window_s: a.window_s,
            watched_read_bytes: a.watched_read_bytes,
            sent_bytes: a.sent_bytes,
            top_files: a
                .top_files
                .iter()
                .map(|(i, b)| FileJson {
                    path: ctx.paths.path(i),
                    bytes: *b,
                })
                .collect(),
            destinations: a
                .destinations
                .iter()
                .map(|(ep, class, bytes)| {
                    let (addr, port) = ep.addr_port();
                    DestinationJson {
                        addr,
                        port,
                        bytes: *bytes,
                        class: class.as_str(),
                    }
                })
                .collect(),
            pids: a.pids.clone(),
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"serializing alert: {e}\"}}"))
    }
}

/// A `sensor_tamper` alert: something is blinding the sensor.
#[derive(Debug, Serialize)]
pub struct TamperAlertJson {
    pub ts: String,
    pub rule: &'static str,
    pub severity: &'static str,
    pub scope: &'static str,
    pub host: String,
    /// What was found (`program_detached`, `map_written`, …).
    pub what: &'static str,
    pub detail: String,
    /// The agent's own pid.
    pub pid: u32,
}

impl TamperAlertJson {
    pub fn new(what: &'static str, detail: String, host: &str, now: SystemTime) -> Self {
        Self {
            ts: rfc3339(now),
            rule: "sensor_tamper",
            severity: "critical",
            scope: "host",
            host: host.to_string(),
            what,
            detail,
            pid: std::process::id(),
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"serializing alert: {e}\"}}"))
    }
}

/// Whole seconds since the Unix epoch (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-26T17:00:00Z` (UTC, whole seconds).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Every configured sink.
pub struct Sinks {
    file: Option<File>,
    alertmanager: Option<SyncSender<String>>,
    errors: IntCounterVec,
    dropped: IntCounterVec,
}

/// Alerts waiting for Alertmanager at most; more are dropped (and counted).
const ALERTMANAGER_QUEUE: usize = 1024;

impl Sinks {
    pub fn new(
        alerts_file: Option<&Path>,
        alertmanager_url: Option<&str>,
        generator_url: String,
        errors: IntCounterVec,
        dropped: IntCounterVec,
    ) -> anyhow::Result<Self> {
        let file = match alerts_file {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("cannot open alerts-file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let alertmanager = alertmanager_url.map(|url| {
            let (tx, rx) = sync_channel::<String>(ALERTMANAGER_QUEUE);
            let url = format!("{url}/api/v2/alerts");
            let errors = errors.clone();
            std::thread::Builder::new()
                .name("alertmanager".into())
                .spawn(move || push_loop(&url, &generator_url, rx, &errors))
                .map(|_| tx)
        });
        let alertmanager = alertmanager.transpose()?;
        Ok(Self {
            file,
            alertmanager,
            errors,
            dropped,
        })
    }

    pub fn emit(&mut self, alert: &AlertJson) {
        self.emit_line(alert.to_line());
    }

    /// Any alert object, already serialized, to every sink.
    pub fn emit_line(&mut self, line: String) {
        {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                self.errors.with_label_values(&["stdout"]).inc();
            }
        }
        if let Some(f) = &mut self.file {
            if writeln!(f, "{line}").is_err() {
                self.errors.with_label_values(&["file"]).inc();
                tracing::warn!("cannot append to the alerts file");
            }
        }
        if let Some(tx) = &self.alertmanager {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.with_label_values(&["alertmanager"]).inc();
                }
            }
        }
    }
}

/// A field of an alert object as text: strings as they are, other values
/// in JSON, absent fields empty.
pub fn field_text(alert: &serde_json::Value, key: &str) -> String {
    match alert.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

/// Alertmanager v2 alert: labels identify the actor; the whole alert rides
/// in an annotation.
fn alertmanager_body(line: &str, generator_url: &str, now: SystemTime) -> Option<String> {
    let a: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| field_text(&a, k);
    let window = a
        .get("window_s")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(300);
    // Resolved once the window that raised it has passed.
    let ends = rfc3339(now + Duration::from_secs(window));
    if s("rule") == "sensor_tamper" {
        let body = serde_json::json!([{
            "labels": {
                "alertname": "SensorTamper",
                "rule": s("rule"),
                "severity": s("severity"),
                "host": s("host"),
                "what": s("what"),
            },
            "annotations": {
                "summary": format!("sensor on {}: {}", s("host"), s("detail")),
                "alert": line,
            },
            "startsAt": s("ts"),
            "endsAt": ends,
            "generatorURL": generator_url,
        }]);
        return Some(body.to_string());
    }
    let actor = match s("scope").as_str() {
        "session" => format!("session:{}", s("pid")),
        "container" => format!("container:{}", s("container")),
        _ => format!("process:{}", s("pid")),
    };
    let body = serde_json::json!([{
        "labels": {
            "alertname": "SensorReadThenSend",
            "rule": s("rule"),
            "severity": s("severity"),
            "scope": s("scope"),
            "actor": actor,
            "host": s("host"),
            "comm": s("comm"),
            "container": s("container"),
            "pid": s("pid"),
        },
        "annotations": {
            "summary": format!("{} read {} bytes of model weights and sent {} bytes to untrusted destinations",
                s("comm"), s("watched_read_bytes"), s("sent_bytes")),
            "alert": line,
        },
        "startsAt": s("ts"),
        "endsAt": ends,
        "generatorURL": generator_url,
    }]);
    Some(body.to_string())
}

/// Posts queued alerts, retrying with exponential backoff (0.5 s … 8 s,
/// 6 attempts); a failure is logged and counted, never blocks the agent.
fn push_loop(
    url: &str,
    generator_url: &str,
    rx: std::sync::mpsc::Receiver<String>,
    errors: &IntCounterVec,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(true)
        .build()
        .into();
    for line in rx {
        let Some(body) = alertmanager_body(&line, generator_url, SystemTime::now()) else {
            continue;
        };
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(&body)
            {
                Ok(_) => break,
                Err(e) if attempt < 6 => {
                    tracing::debug!(%url, attempt, "alertmanager push failed: {e}; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
                Err(e) => {
                    errors.with_label_values(&["alertmanager"]).inc();
                    tracing::warn!(%url, "alertmanager push failed after {attempt} attempts: {e}");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_712_400)),
            "2026-11-26T17:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn alertmanager_payload_carries_the_alert() {
        let line = r#"{"ts":"2026-11-26T17:00:00Z","rule":"read_then_send","severity":"critical","scope":"session","pid":7,"comm":"nc","container":"","host":"n1","window_s":300,"watched_read_bytes":10,"sent_bytes":9}"#;
        let now = UNIX_EPOCH + Duration::from_secs(1_795_712_400);
        let body: serde_json::Value =
            serde_json::from_str(&alertmanager_body(line, "http://x", now).unwrap()).unwrap();
        let a = &body[0];
        assert_eq!(a["labels"]["alertname"], "SensorReadThenSend");
        assert_eq!(a["labels"]["actor"], "session:7");
        assert_eq!(a["labels"]["pid"], "7");
        assert_eq!(a["annotations"]["alert"], line);
        assert_eq!(a["startsAt"], "2026-11-26T17:00:00Z");
        assert_eq!(a["endsAt"], "2026-11-26T17:05:00Z");
    }
}
