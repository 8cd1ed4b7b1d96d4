//! Configuration: YAML keys and command-line flags, one-to-one, validated by
//! one parser per key. Flags override the file. Every error names the key
//! and the bad value in one line.

pub mod args;
pub mod keys;
pub mod web;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;

pub use self::args::RunArgs;
use crate::util::size::parse_size;

/// The local socket `sensor tail` attaches to (root only).
pub const DEFAULT_SOCKET: &str = "/run/sensor/sensor.sock";
/// The kubelet's pod log directories, which name pods and namespaces.
pub const DEFAULT_PODS_DIR: &str = "/var/log/pods";
/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// A bad configuration value: exit code 2.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid {key} '{value}': {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("invalid config file {path}: {reason}")]
    Syntax { path: String, reason: String },
}

fn invalid(key: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Detection thresholds (rule `read_then_send`).
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    pub window: Duration,
    pub min_read_bytes: u64,
    pub min_send_bytes: u64,
    pub min_send_ratio: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            min_read_bytes: 64 << 20,
            min_send_bytes: 32 << 20,
            min_send_ratio: 0.5,
        }
    }
}

/// Rule `slow_exfil` and where its ledger is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerSettings {
    pub horizon: Duration,
    pub send_bytes: u64,
    pub state_dir: PathBuf,
}

/// Where the ledger is kept unless configured (`--state-dir`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/sensor";

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(30 * 86_400),
            send_bytes: 1 << 30,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// A duration: plain seconds, or a number with `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().map_err(|_| {
        "expected seconds or a number with s, m, h or d (e.g. 3600, 12h, 30d)".to_string()
    })?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| "too long".to_string())
}

/// The access audit log (`--audit-log` and its knobs).
#[derive(Clone, PartialEq)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub interval: Duration,
    pub max_bytes: u64,
    pub max_files: u32,
    pub fsync: Duration,
    /// The HMAC key, when `--audit-key-file` is set.
    pub key: Option<Vec<u8>>,
    /// Access records one process gets per interval; the rest are folded
    /// into one `folded` record (`--audit-max-records-per-process`).
    pub max_records_per_process: usize,
}

/// The key is never printed (`--dry-run` shows the configuration).
impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("max_bytes", &self.max_bytes)
            .field("max_files", &self.max_files)
            .field("fsync", &self.fsync)
            .field(
                "key",
                &self
                    .key
                    .as_ref()
                    .map(|k| format!("<redacted, {} bytes>", k.len())),
            )
            .field("max_records_per_process", &self.max_records_per_process)
            .finish()
    }
}

/// Where alerts are pushed (`--alertmanager-url` and its credentials).
#[derive(Clone, PartialEq)]
pub struct AlertmanagerConfig {
    /// The base URL without userinfo.
    pub url: String,
    /// `user:password` from the URL's userinfo, sent as basic auth.
    pub userinfo: Option<String>,
    /// PEM certificates to trust instead of the system roots.
    pub ca_certs: Option<Vec<u8>>,
    /// The bearer token read from `--alertmanager-bearer-token-file`.
    pub bearer_token: Option<String>,
}

/// Credentials are never printed.
impl std::fmt::Debug for AlertmanagerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertmanagerConfig")
            .field("url", &self.url)
            .field("userinfo", &self.userinfo.as_ref().map(|_| "<redacted>"))
            .field("ca_certs", &self.ca_certs.as_ref().map(|c| c.len()))
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The validated configuration of `sensor run`.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Watch specs as given; empty means the embedded default set.
    pub watch: Vec<String>,
    pub metrics_addr: SocketAddr,
    pub trusted_cidr: Vec<IpNet>,
    pub alerts_file: Option<PathBuf>,
    pub alertmanager: Option<AlertmanagerConfig>,
    pub detect: DetectConfig,
    pub poll_interval: Duration,
    pub max_comm_labels: usize,
    pub max_processes: u32,
    /// Idle map entries are removed after this long; `None`: twice the
    /// window plus 60 s.
    pub prune_idle: Option<Duration>,
    pub tail_socket: PathBuf,
    pub pods_dir: PathBuf,
    pub btf_path: PathBuf,
    pub web: crate::config::web::WebConfig,
    pub audit: Option<AuditConfig>,
    pub ledger: LedgerSettings,
}

impl PartialEq for crate::config::web::WebConfig {
    fn eq(&self, other: &Self) -> bool {
        self.tls.is_some() == other.tls.is_some() && self.users == other.users
    }
}

impl std::fmt::Debug for crate::config::web::WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebConfig {{ tls: {}, users: {:?} }}",
            self.tls.is_some(),
            self.users.keys().collect::<Vec<_>>()
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            watch: Vec::new(),
            metrics_addr: DEFAULT_METRICS_ADDR.parse().expect("valid default address"),
            trusted_cidr: Vec::new(),
            alerts_file: None,
            alertmanager: None,
            detect: DetectConfig::default(),
            poll_interval: Duration::from_millis(1000),
            max_comm_labels: 256,
            max_processes: sensor_common::maps::DEFAULT_MAX_PROCS,
            prune_idle: None,
            tail_socket: PathBuf::from(DEFAULT_SOCKET),
            pods_dir: PathBuf::from(DEFAULT_PODS_DIR),
            btf_path: PathBuf::from(VMLINUX_BTF),
            web: crate::config::web::WebConfig::default(),
            audit: None,
            ledger: LedgerSettings::default(),
        }
    }
}

impl Config {
    /// Reads `--config` (if any) and applies the flags over it.
    pub fn from_args(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        // A key's values: the flag's (a repeatable flag replaces the file's
        // list), else the file's.
        let all = |name: &'static str| -> Vec<String> {
            debug_assert!(keys::find(name).is_some(), "{name} is not in keys::KEYS");
            args.flags
                .get(name)
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(name))
                .cloned()
                .unwrap_or_default()
        };
        let one = |name: &'static str| all(name).pop();
        let path = |name: &'static str| one(name).map(PathBuf::from);
        let mut cfg = Config {
            watch: all("watch"),
            ..Config::default()
        };
        for w in &cfg.watch {
            if w.trim().is_empty() {
                return Err(invalid("watch", w, "empty path"));
            }
        }
        if let Some(addr) = one("metrics-addr") {
            cfg.metrics_addr = parse_addr(&addr)?;
        }
        cfg.trusted_cidr = all("trusted-cidr")
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<Result<_, _>>()?;
        cfg.alerts_file = path("alerts-file");
        let ca_file = path("alertmanager-ca-file");
        let token_file = path("alertmanager-bearer-token-file");
        if let Some(url) = one("alertmanager-url") {
            let (url, userinfo) = parse_url(&url)?;
            cfg.alertmanager = Some(AlertmanagerConfig {
                url,
                userinfo,
                ca_certs: ca_file.as_deref().map(read_ca).transpose()?,
                bearer_token: token_file.as_deref().map(read_token).transpose()?,
            });
        } else if let Some(p) = ca_file.or(token_file) {
            return Err(invalid(
                "alertmanager-url",
                "",
                format!("needed with {} (it is for Alertmanager)", p.display()),
            ));
        }
        if let Some(v) = one("window") {
            let secs = parse_count("window", &v, 1, 30 * 24 * 3600)?;
            cfg.detect.window = Duration::from_secs(secs);
        }
        if let Some(v) = one("min-read-bytes") {
            cfg.detect.min_read_bytes =
                parse_size(&v).map_err(|e| invalid("min-read-bytes", &v, e))?;
        }
        if let Some(v) = one("min-send-bytes") {
            cfg.detect.min_send_bytes =
                parse_size(&v).map_err(|e| invalid("min-send-bytes", &v, e))?;
        }
        if let Some(v) = one("min-send-ratio") {
            cfg.detect.min_send_ratio = parse_ratio(&v)?;
        }
        if let Some(v) = one("horizon") {
            let d = parse_duration(&v).map_err(|e| invalid("horizon", &v, e))?;
            if !(60..=400 * 86_400).contains(&d.as_secs()) {
                return Err(invalid("horizon", &v, "expected 60 s to 400 days"));
            }
            cfg.ledger.horizon = d;
        }
        if let Some(v) = one("horizon-send-bytes") {
            cfg.ledger.send_bytes = match parse_size(&v) {
                Ok(n) if n > 0 => n,
                Ok(_) => return Err(invalid("horizon-send-bytes", &v, "must be more than 0")),
                Err(e) => return Err(invalid("horizon-send-bytes", &v, e)),
            };
        }
        if let Some(p) = path("state-dir") {
            if p.as_os_str().is_empty() || p.is_file() {
                return Err(invalid(
                    "state-dir",
                    &p.display().to_string(),
                    "expected a directory",
                ));
            }
            cfg.ledger.state_dir = p;
        }
        if let Some(v) = one("poll-interval-ms") {
            let ms = parse_count("poll-interval-ms", &v, 10, 60_000)?;
            cfg.poll_interval = Duration::from_millis(ms);
        }
        if let Some(v) = one("prune-idle-secs") {
            let secs = parse_count("prune-idle-secs", &v, 1, 7 * 86_400)?;
            cfg.prune_idle = Some(Duration::from_secs(secs));
        }
        if let Some(v) = one("max-comm-labels") {
            cfg.max_comm_labels = parse_count("max-comm-labels", &v, 1, 100_000)? as usize;
        }
        if let Some(v) = one("max-processes") {
            cfg.max_processes = parse_count("max-processes", &v, 64, 4_194_304)? as u32;
        }
        if let Some(p) = path("tail-socket") {
            if p.as_os_str().is_empty() || p.as_os_str().len() > 107 {
                return Err(invalid(
                    "tail-socket",
                    &p.display().to_string(),
                    "expected a path of 1 to 107 bytes",
                ));
            }
            cfg.tail_socket = p;
        }
        if let Some(p) = path("pods-dir") {
            cfg.pods_dir = p;
        }
        if let Some(p) = path("btf-path") {
            cfg.btf_path = p;
        }
        if let Some(p) = path("web-config-file") {
            cfg.web = crate::config::web::WebConfig::load(&p)?;
        }
        let interval = one("audit-interval")
            .map(|v| parse_count("audit-interval", &v, 1, 86_400))
            .transpose()?
            .unwrap_or(60);
        let max_bytes = one("audit-max-bytes")
            .map(|v| match parse_size(&v) {
                Ok(n) if n >= 4096 => Ok(n),
                Ok(_) => Err(invalid("audit-max-bytes", &v, "at least 4KiB")),
                Err(e) => Err(invalid("audit-max-bytes", &v, e)),
            })
            .transpose()?
            .unwrap_or(64 << 20);
        let max_files = one("audit-max-files")
            .map(|v| parse_count("audit-max-files", &v, 1, 10_000))
            .transpose()?
            .unwrap_or(8) as u32;
        let fsync = one("audit-fsync-secs")
            .map(|v| parse_count("audit-fsync-secs", &v, 0, 3600))
            .transpose()?
            .unwrap_or(1);
        let max_records_per_process = one("audit-max-records-per-process")
            .map(|v| parse_count("audit-max-records-per-process", &v, 1, 1_000_000))
            .transpose()?
            .unwrap_or(64) as usize;
        let key = path("audit-key-file").map(|p| read_key(&p)).transpose()?;
        if let Some(path) = path("audit-log") {
            if path.as_os_str().is_empty() || path.is_dir() {
                return Err(invalid(
                    "audit-log",
                    &path.display().to_string(),
                    "expected a file path",
                ));
            }
            cfg.audit = Some(AuditConfig {
                path,
                interval: Duration::from_secs(interval),
                max_bytes,
                max_files,
                fsync: Duration::from_secs(fsync),
                key,
                max_records_per_process,
            });
        }
        Ok(cfg)
    }
}

/// The YAML file: a mapping of keys of [`keys::KEYS`] to a value, or a
/// list of values for a repeatable key; each kept as text for the parser
/// its flag goes through.
fn read_file(path: &Path) -> Result<BTreeMap<&'static str, Vec<String>>, ConfigError> {
    use serde_norway::Value;
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let syntax = |reason: String| ConfigError::Syntax {
        path: shown.clone(),
        reason: reason.replace('\n', " "),
    };
    let doc: Value = serde_norway::from_str(&text).map_err(|e| syntax(e.to_string()))?;
    let map = match doc {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(m) => m,
        _ => return Err(syntax("expected a mapping of keys to values".into())),
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for (k, v) in &map {
        let name = scalar(k).unwrap_or_default();
        let key = keys::find(&name).ok_or_else(|| {
            syntax(format!(
                "unknown key `{name}`, expected one of {}",
                keys::KEYS.map(|k| k.name).join(", ")
            ))
        })?;
        let values = match v {
            Value::Null => continue,
            Value::Sequence(items) if key.repeatable => items
                .iter()
                .map(|i| {
                    scalar(i).ok_or_else(|| syntax(format!("{name}: expected a list of values")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![scalar(other).ok_or_else(|| {
                syntax(format!(
                    "{name}: expected {}",
                    if key.repeatable {
                        "a value or a list of values"
                    } else {
                        "one value"
                    }
                ))
            })?],
        };
        out.insert(key.name, values);
    }
    Ok(out)
}

/// An audit key file: its bytes, at least 16 of them, in a file that group
/// and others cannot access (the key is what makes the log tamper-evident).
pub fn read_key(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display().to_string();
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(invalid(
                "audit-key-file",
                &shown,
                format!("mode {mode:04o} lets group or others access the key; chmod 600 it"),
            ));
        }
    }
    match std::fs::read(path) {
        Ok(k) if k.len() >= 16 => Ok(k),
        Ok(_) => Err(invalid(
            "audit-key-file",
            &shown,
            "a key needs at least 16 bytes",
        )),
        Err(e) => Err(invalid("audit-key-file", &shown, e)),
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, ConfigError> {
    let t = text.trim();
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = t.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
        }
    }
    Err(invalid(
        "metrics-addr",
        text,
        "expected IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464",
    ))
}

fn parse_cidr(text: &str) -> Result<IpNet, ConfigError> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(invalid(
        "trusted-cidr",
        text,
        "expected a network such as 10.0.0.0/8 or fd00::/8",
    ))
}

/// The URL without its userinfo, and the userinfo. An error never shows
/// the userinfo.
fn parse_url(text: &str) -> Result<(String, Option<String>), ConfigError> {
    let t = text.trim().trim_end_matches('/');
    let (scheme, rest) = match t.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        _ => ("", ""),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    if scheme.is_empty() || host.is_empty() || rest.contains(char::is_whitespace) {
        return Err(invalid(
            "alertmanager-url",
            &redact_userinfo(text),
            "expected http://HOST:PORT or https://HOST:PORT",
        ));
    }
    Ok((format!("{scheme}://{host}{path}"), userinfo))
}

/// `text` with anything before an `@` in its authority replaced.
pub fn redact_userinfo(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let sep = if text.contains("://") { "://" } else { "" };
            format!("{scheme}{sep}<redacted>{}", &rest[at..])
        }
        None => text.to_string(),
    }
}

/// PEM certificates for `--alertmanager-ca-file`.
fn read_ca(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| invalid("alertmanager-ca-file", &shown, e))?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter(|i| matches!(i, Ok(ureq::tls::PemItem::Certificate(_))))
        .count();
    if certs == 0 {
        return Err(invalid(
            "alertmanager-ca-file",
            &shown,
            "no PEM certificate in it",
        ));
    }
    Ok(pem)
}

/// The token of `--alertmanager-bearer-token-file` (surrounding whitespace
/// trimmed); never shown in an error.
fn read_token(path: &Path) -> Result<String, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("alertmanager-bearer-token-file", &shown, e))?;
    let token = text.trim();
    if token.is_empty() || token.contains(|c: char| c.is_control() || c == ' ') {
        return Err(invalid(
            "alertmanager-bearer-token-file",
            &shown,
            "expected one token without spaces or control characters",
        ));
    }
    Ok(token.to_string())
}

fn parse_ratio(text: &str) -> Result<f64, ConfigError> {
    match text.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(invalid(
            "min-send-ratio",
            text,
            "expected a number >= 0, e.g. 0.5",
        )),
    }
}

fn parse_count(key: &'static str, text: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(
            key,
            text,
            format!("expected a whole number from {min} to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn args() -> RunArgs {
        RunArgs::default()
    }

    fn yaml(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert!(parse_duration("30w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn defaults() {
        let cfg = Config::from_args(&args()).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.metrics_addr.to_string(), "127.0.0.1:9464");
        assert_eq!(cfg.detect.min_read_bytes, 64 << 20);
        assert_eq!(cfg.detect.min_send_bytes, 32 << 20);
        assert_eq!(cfg.detect.window, Duration::from_secs(300));
    }

    #[test]
    fn yaml_keys_match_flags() {
        let f = yaml(
            "watch: [/models, '*.gguf']\nmetrics-addr: 0.0.0.0:9000\ntrusted-cidr: [10.0.0.0/8]\n\
             alerts-file: /tmp/a.jsonl\nalertmanager-url: http://127.0.0.1:9093/\nwindow: 60\n\
             min-read-bytes: 1GiB\nmin-send-bytes: 1048576\nmin-send-ratio: 0.25\n\
             poll-interval-ms: 250\nmax-comm-labels: 10\nmax-processes: 1024\n",
        );
        let cfg = Config::from_args(&RunArgs {
            config: Some(f.path().into()),
            ..args()
        })
        .unwrap();
        assert_eq!(cfg.watch, vec!["/models", "*.gguf"]);
        assert_eq!(cfg.metrics_addr.to_string(), "0.0.0.0:9000");
        assert_eq!(
            cfg.trusted_cidr,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(cfg.alerts_file, Some(PathBuf::from("/tmp/a.jsonl")));
        assert_eq!(
            cfg.alertmanager.as_ref().map(|a| a.url.as_str()),
            Some("http://127.0.0.1:9093")
        );
        assert_eq!(cfg.detect.window, Duration::from_secs(60));
        assert_eq!(cfg.detect.min_read_bytes, 1 << 30);
        assert_eq!(cfg.detect.min_send_bytes, 1 << 20);
        assert_eq!(cfg.detect.min_send_ratio, 0.25);
        assert_eq!(cfg.poll_interval, Duration::from_millis(250));
        assert_eq!(cfg.max_comm_labels, 10);
        assert_eq!(cfg.max_processes, 1024);
    }

    #[test]
    fn flags_override_file() {
        let f = yaml("metrics-addr: 0.0.0.0:9000\nwatch: [/a]\nmin-read-bytes: 1GiB\n");
        let a = RunArgs {
            config: Some(f.path().into()),
            ..args()
                .with("metrics-addr", "127.0.0.1:1234")
                .with("watch", "/b")
        };
        let cfg = Config::from_args(&a).unwrap();
        assert_eq!(cfg.metrics_addr.to_string(), "127.0.0.1:1234");
        assert_eq!(cfg.watch, vec!["/b"]);
        assert_eq!(cfg.detect.min_read_bytes, 1 << 30);
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let cases: Vec<(RunArgs, &str, &str)> = vec![
            (
                args().with("trusted-cidr", "10.0.0.0/33"),
                "trusted-cidr",
                "10.0.0.0/33",
            ),
            (
                args().with("metrics-addr", "nowhere"),
                "metrics-addr",
                "nowhere",
            ),
            (
                args().with("min-read-bytes", "12XB"),
                "min-read-bytes",
                "12XB",
            ),
            (args().with("min-send-ratio", "-1"), "min-send-ratio", "-1"),
            (args().with("window", "0"), "window", "0"),
            (args().with("horizon", "30x"), "horizon", "30x"),
            (args().with("horizon", "10"), "horizon", "10"),
            (
                args().with("horizon-send-bytes", "0"),
                "horizon-send-bytes",
                "0",
            ),
            (
                args().with("state-dir", "/etc/hostname"),
                "state-dir",
                "/etc/hostname",
            ),
            (
                args().with("alertmanager-url", "ftp://x"),
                "alertmanager-url",
                "ftp://x",
            ),
        ];
        for (a, key, value) in cases {
            let msg = Config::from_args(&a).unwrap_err().to_string();
            assert!(msg.contains(key) && msg.contains(value), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn bad_files() {
        let missing = Config::from_args(&RunArgs {
            config: Some("/nonexistent.yaml".into()),
            ..args()
        });
        assert!(matches!(missing, Err(ConfigError::Unreadable { .. })));
        let f = yaml("no-such-key: 1\n");
        let err = Config::from_args(&RunArgs {
            config: Some(f.path().into()),
            ..args()
        })
        .unwrap_err();
        assert!(err.to_string().contains("no-such-key"), "{err}");
        let f = yaml("min-read-bytes: lots\n");
        let err = Config::from_args(&RunArgs {
            config: Some(f.path().into()),
            ..args()
        })
        .unwrap_err();
        assert_eq!(
            err,
            invalid("min-read-bytes", "lots", parse_size("lots").unwrap_err())
        );
        let f = yaml("watch: [\n");
        assert!(matches!(
            Config::from_args(&RunArgs {
                config: Some(f.path().into()),
                ..args()
            }),
            Err(ConfigError::Syntax { .. })
        ));
    }

    #[test]
    fn audit_key_file_mode_is_checked_and_the_key_never_printed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, b"0123456789abcdef-secret").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let a = args()
            .with("audit-log", dir.path().join("audit.log").to_str().unwrap())
            .with("audit-key-file", key.to_str().unwrap());
        let msg = Config::from_args(&a).unwrap_err().to_string();
        assert!(
            msg.contains("audit-key-file") && msg.contains(key.to_str().unwrap()),
            "{msg}"
        );
        assert!(msg.contains("0640") && !msg.contains('\n'), "{msg}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = Config::from_args(&a).unwrap();
        let audit = cfg.audit.as_ref().unwrap();
        assert_eq!(audit.key.as_deref(), Some(&b"0123456789abcdef-secret"[..]));
        assert_eq!(audit.max_records_per_process, 64);
        let shown = format!("{cfg:#?}");
        assert!(
            !shown.contains("secret") && !shown.contains("48, 49"),
            "{shown}"
        );
        assert!(shown.contains("<redacted, 23 bytes>"), "{shown}");
    }

    #[test]
    fn alertmanager_credentials_are_split_off_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok-s3cret\n").unwrap();
        let cfg = Config::from_args(
            &args()
                .with("alertmanager-url", "https://am:pa55@alerts.example:9093/")
                .with("alertmanager-bearer-token-file", &token),
        )
        .unwrap();
        let am = cfg.alertmanager.as_ref().unwrap();
        assert_eq!(am.url, "https://alerts.example:9093");
        assert_eq!(am.userinfo.as_deref(), Some("am:pa55"));
        assert_eq!(am.bearer_token.as_deref(), Some("tok-s3cret"));
        let shown = format!("{cfg:#?}");
        assert!(
            !shown.contains("pa55") && !shown.contains("tok-s3cret"),
            "{shown}"
        );
        let bad = Config::from_args(&args().with("alertmanager-url", "ftp://am:pa55@x"))
            .unwrap_err()
            .to_string();
        assert!(!bad.contains("pa55"), "{bad}");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let bad = Config::from_args(
            &args()
                .with("alertmanager-url", "https://x:1")
                .with("alertmanager-ca-file", ca),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("alertmanager-ca-file"), "{bad}");
        let lonely = Config::from_args(&args().with("alertmanager-bearer-token-file", token))
            .unwrap_err()
            .to_string();
        assert!(lonely.contains("alertmanager-url"), "{lonely}");
    }

    #[test]
    fn plain_ip_is_a_host_network() {
        assert_eq!(
            parse_cidr("198.18.0.5").unwrap().to_string(),
            "198.18.0.5/32"
        );
        assert_eq!(
            parse_cidr("198.18.0.5/24").unwrap().to_string(),
            "198.18.0.0/24"
        );
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn check(result: Result<Config, ConfigError>) {
            if let Err(e) = result {
                let msg = e.to_string();
                assert!(
                    !msg.contains('\n') && !msg.is_empty(),
                    "multi-line or empty error: {msg:?}"
                );
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any bytes as the YAML file: an error or a config, never a panic.
            #[test]
            fn arbitrary_yaml_never_panics(text in "(?s).{0,300}") {
                let f = yaml(&text);
                check(Config::from_args(&RunArgs { config: Some(f.path().into()), ..args() }));
            }

            /// Valid keys with arbitrary values.
            #[test]
            fn arbitrary_values_never_panic(
                key in prop::sample::select(vec![
                    "watch", "metrics-addr", "trusted-cidr", "alerts-file", "alertmanager-url", "window",
                    "min-read-bytes", "min-send-bytes", "min-send-ratio", "poll-interval-ms",
                    "max-comm-labels", "max-processes", "prune-idle-secs", "tail-socket", "pods-dir", "btf-path",
                    "audit-log", "audit-interval", "audit-max-bytes", "audit-max-files",
                    "audit-fsync-secs", "audit-key-file", "audit-max-records-per-process",
                    "alertmanager-ca-file", "alertmanager-bearer-token-file", "horizon",
                    "horizon-send-bytes", "state-dir",
                ]),
                value in "[ -~]{0,40}",
            ) {
                let f = yaml(&format!("{key}: {value:?}\n"));
                check(Config::from_args(&RunArgs { config: Some(f.path().into()), ..args() }));
            }

            /// Arbitrary flag values.
            #[test]
            fn arbitrary_flags_never_panic(value in ".{0,40}") {
                for a in [
                    args().with("trusted-cidr", &value),
                    args().with("metrics-addr", &value),
                    args().with("min-read-bytes", &value),
                    args().with("min-send-ratio", &value),
                    args().with("window", &value),
                    args().with("alertmanager-url", &value),
                ] {
                    check(Config::from_args(&a));
                }
            }
        }
    }
}
