//! Alerts as JSON lines (the SIEM contract) and where they go: stdout, an
//! appended file, and Alertmanager's v2 API. Sinks never block counting: the
//! Alertmanager push runs on its own thread behind a bounded queue; what
//! does not fit is dropped and counted.

pub mod slow;

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use prometheus::IntCounterVec;
use serde::Serialize;

use crate::{
    config::AlertmanagerConfig,
    detect::Alert,
    enrich::{paths::PathCache, procmeta::ProcMeta},
    kernel::lineage::{Hop, Via},
    util::time::rfc3339,
};

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

/// One hop of a flow: `pid` took `bytes` of weights `via` from `path`.
#[derive(Debug, Serialize)]
pub struct HopJson {
    pub pid: u32,
    pub comm: String,
    pub via: &'static str,
    pub path: String,
    pub bytes: u64,
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
    /// The hops from the original weights file to the sender (one, `read`,
    /// when it read them itself; absent when the kernel kept no holding).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<HopJson>,
    /// The weights files its lineage started from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origin_files: Vec<String>,
    /// Scope `flow`: the flow's id (hex), the same in every alert of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
}

/// Where the alert happened, beyond what the detector knows.
pub struct Context<'a> {
    pub host: &'a str,
    pub now: SystemTime,
    pub meta: ProcMeta,
    pub pod: String,
    pub namespace: String,
    pub paths: &'a PathCache,
    /// The sender's lineage, origin first.
    pub lineage: Vec<Hop>,
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
            origin_files: origin_files(&ctx.lineage, ctx.paths),
            flow: a.flow.map(|f| format!("{f:016x}")),
            lineage: ctx
                .lineage
                .iter()
                .map(|h| HopJson {
                    pid: h.pid,
                    comm: h.comm.clone(),
                    via: h.via.as_str(),
                    path: ctx.paths.source(&h.source),
                    bytes: h.bytes,
                })
                .collect(),
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"serializing alert: {e}\"}}"))
    }
}

/// The watched files a lineage starts from.
fn origin_files(lineage: &[Hop], paths: &PathCache) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in lineage.iter().filter(|h| h.via == Via::Read) {
        let p = paths.source(&h.source);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
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

    /// Detection may be blind: map pressure lost detail the rules need.
    pub fn blind(detail: String, host: &str, now: SystemTime) -> Self {
        Self {
            rule: "sensor_blind",
            ..Self::new("map_pressure", detail, host, now)
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"serializing alert: {e}\"}}"))
    }
}

/// Every configured sink.
pub struct Sinks {
    file: Option<File>,
    alertmanager: Option<Pusher>,
    errors: IntCounterVec,
    dropped: IntCounterVec,
}

/// The Alertmanager push thread: its queue, the deadline it gets to flush
/// at shutdown, and word that it finished.
struct Pusher {
    tx: Option<SyncSender<String>>,
    deadline: Arc<Mutex<Option<Instant>>>,
    done: Receiver<()>,
}

/// Alerts waiting for Alertmanager at most; more are dropped (and counted).
const ALERTMANAGER_QUEUE: usize = 1024;

/// At shutdown (SIGTERM), how long queued alerts may still be pushed.
pub const FLUSH_BOUND: Duration = Duration::from_secs(5);

impl Sinks {
    pub fn new(
        alerts_file: Option<&Path>,
        alertmanager: Option<&AlertmanagerConfig>,
        generator_url: String,
        errors: IntCounterVec,
        dropped: IntCounterVec,
    ) -> anyhow::Result<Self> {
        let file = match alerts_file {
            // Alerts name processes, files and destinations: owner only.
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("cannot open alerts-file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let alertmanager = match alertmanager {
            Some(am) => {
                let (tx, rx) = sync_channel::<String>(ALERTMANAGER_QUEUE);
                let (done_tx, done) = sync_channel::<()>(1);
                let deadline = Arc::new(Mutex::new(None));
                let push = Push::new(am, generator_url, errors.clone(), dropped.clone())?;
                let until = deadline.clone();
                std::thread::Builder::new()
                    .name("alertmanager".into())
                    .spawn(move || {
                        push.run(rx, &until);
                        let _ = done_tx.send(());
                    })?;
                Some(Pusher {
                    tx: Some(tx),
                    deadline,
                    done,
                })
            }
            None => None,
        };
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
        if let Some(tx) = self.alertmanager.as_ref().and_then(|p| p.tx.as_ref()) {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.with_label_values(&["alertmanager"]).inc();
                }
            }
        }
    }
}

/// At shutdown, alerts still queued for Alertmanager are pushed for at most
/// [`FLUSH_BOUND`]; what is left then is dropped and counted.
impl Drop for Sinks {
    fn drop(&mut self) {
        let Some(p) = &mut self.alertmanager else {
            return;
        };
        let end = Instant::now() + FLUSH_BOUND;
        if let Ok(mut d) = p.deadline.lock() {
            *d = Some(end);
        }
        // Closing the queue ends the thread once it is drained.
        p.tx = None;
        if p.done.recv_timeout(FLUSH_BOUND).is_err() {
            tracing::warn!(
                "alertmanager: pending alerts not pushed within {} s of shutdown",
                FLUSH_BOUND.as_secs()
            );
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
    if s("rule") == crate::detect::ledger::RULE_SLOW_EXFIL {
        // Held for the horizon it was raised over: one alert per identity
        // and network per horizon.
        let horizon = a
            .get("horizon_s")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(30 * 86_400);
        let body = serde_json::json!([{
            "labels": {
                "alertname": "SensorSlowExfilLedger",
                "rule": s("rule"),
                "severity": s("severity"),
                "scope": s("scope"),
                "identity": s("identity"),
                "network": s("network"),
                "host": s("host"),
            },
            "annotations": {
                "summary": format!("{} sent {} bytes to {} over the horizon, having read model weights",
                    s("identity"), s("sent_bytes"), s("network")),
                "alert": line,
            },
            "startsAt": s("ts"),
            "endsAt": rfc3339(now + Duration::from_secs(horizon)),
            "generatorURL": generator_url,
        }]);
        return Some(body.to_string());
    }
    let actor = match s("scope").as_str() {
        "session" => format!("session:{}", s("pid")),
        "flow" => format!("flow:{}", s("flow")),
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

/// What a failed push means.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Try again later (connection errors, timeouts, 5xx, 408, 429).
    Retry,
    /// Alertmanager refused this alert (other 4xx): sending it again would
    /// be refused again.
    Refused,
}

fn outcome_of(e: &ureq::Error) -> Outcome {
    match e {
        ureq::Error::StatusCode(408 | 429) => Outcome::Retry,
        ureq::Error::StatusCode(c) if (400..500).contains(c) => Outcome::Refused,
        _ => Outcome::Retry,
    }
}

/// The push thread's side: one configured Alertmanager.
struct Push {
    agent: ureq::Agent,
    /// `…/api/v2/alerts` without userinfo: what the logs may show.
    url: String,
    /// `Authorization` header value (bearer token, else the URL's userinfo).
    authorization: Option<String>,
    generator_url: String,
    errors: IntCounterVec,
    dropped: IntCounterVec,
}

impl Push {
    fn new(
        am: &AlertmanagerConfig,
        generator_url: String,
        errors: IntCounterVec,
        dropped: IntCounterVec,
    ) -> anyhow::Result<Push> {
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(true);
        if let Some(pem) = &am.ca_certs {
            let certs = ureq::tls::parse_pem(pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let authorization = match (&am.bearer_token, &am.userinfo) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(u)) => {
                use base64::Engine as _;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(u)
                ))
            }
            (None, None) => None,
        };
        Ok(Push {
            agent: config.build().into(),
            url: format!("{}/api/v2/alerts", am.url),
            authorization,
            generator_url,
            errors,
            dropped,
        })
    }

    /// Posts queued alerts, retrying with exponential backoff (0.5 s … 8 s,
    /// 6 attempts) unless Alertmanager refused the alert (4xx); a failure is
    /// logged and counted, never blocks the agent. Once `deadline` is set
    /// (shutdown) the queue is drained until then; what is left is dropped.
    fn run(&self, rx: Receiver<String>, deadline: &Mutex<Option<Instant>>) {
        let remaining = || -> Option<Duration> {
            let d = deadline.lock().ok().and_then(|d| *d)?;
            Some(d.saturating_duration_since(Instant::now()))
        };
        for line in rx {
            if remaining().is_some_and(|r| r.is_zero()) {
                self.dropped.with_label_values(&["alertmanager"]).inc();
                continue;
            }
            let Some(body) = alertmanager_body(&line, &self.generator_url, SystemTime::now())
            else {
                continue;
            };
            let url = &self.url;
            let mut delay = Duration::from_millis(500);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let left = remaining();
                let mut req = self
                    .agent
                    .post(url)
                    .header("Content-Type", "application/json");
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                if let Some(left) = left {
                    req = req
                        .config()
                        .timeout_global(Some(left.min(Duration::from_secs(5))))
                        .build();
                }
                let err = match req.send(&body) {
                    Ok(_) => break,
                    Err(e) => e,
                };
                let out = outcome_of(&err);
                let time_left = remaining().is_none_or(|r| r > delay);
                if out == Outcome::Retry && attempt < 6 && time_left {
                    tracing::debug!(%url, attempt, "alertmanager push failed: {err}; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(8));
                    continue;
                }
                self.errors.with_label_values(&["alertmanager"]).inc();
                if out == Outcome::Refused {
                    tracing::warn!(%url, "alertmanager refused the alert ({err}); not retried");
                } else {
                    tracing::warn!(%url, "alertmanager push failed after {attempt} attempts: {err}");
                }
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn client_errors_are_not_retried() {
        assert_eq!(outcome_of(&ureq::Error::StatusCode(400)), Outcome::Refused);
        assert_eq!(outcome_of(&ureq::Error::StatusCode(401)), Outcome::Refused);
        assert_eq!(outcome_of(&ureq::Error::StatusCode(429)), Outcome::Retry);
        assert_eq!(outcome_of(&ureq::Error::StatusCode(503)), Outcome::Retry);
        assert_eq!(outcome_of(&ureq::Error::ConnectionFailed), Outcome::Retry);
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

    #[test]
    fn slow_exfil_reaches_alertmanager_by_identity_and_network_for_the_horizon() {
        let line = r#"{"ts":"2026-11-26T17:00:00Z","rule":"slow_exfil","severity":"critical","scope":"identity","host":"n1","identity":"uid=0 exe=/usr/bin/curl","network":"198.18.7.0/24","horizon_s":2592000,"sent_bytes":1073741824}"#;
        let now = UNIX_EPOCH + Duration::from_secs(1_795_712_400);
        let body: serde_json::Value =
            serde_json::from_str(&alertmanager_body(line, "http://x", now).unwrap()).unwrap();
        let a = &body[0];
        assert_eq!(a["labels"]["alertname"], "SensorSlowExfilLedger");
        assert_eq!(a["labels"]["identity"], "uid=0 exe=/usr/bin/curl");
        assert_eq!(a["labels"]["network"], "198.18.7.0/24");
        assert!(
            a["labels"].get("pid").is_none(),
            "no pid in an identity alert"
        );
        assert_eq!(a["endsAt"], "2026-12-26T17:00:00Z");
    }
}
