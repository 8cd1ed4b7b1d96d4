//! Every key of `sensor run`, once: each is a flag `--NAME VALUE` and a key
//! `NAME` of the YAML file given with `--config` (flags win). Clap's flags
//! and their `--help`, the YAML keys accepted and the README's
//! configuration table are all made from this table (a test checks the
//! README against it); `Config::from_args` parses each value.

/// One key.
#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    /// What its value is, as `--help` and the README show it.
    pub value: &'static str,
    /// May be given more than once (a YAML list).
    pub repeatable: bool,
    /// The default, as the README shows it.
    pub default: &'static str,
    pub help: &'static str,
}

const fn key(
    name: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
) -> Key {
    Key {
        name,
        value,
        repeatable: false,
        default,
        help,
    }
}

const fn list(
    name: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
) -> Key {
    Key {
        name,
        value,
        repeatable: true,
        default,
        help,
    }
}

pub const KEYS: [Key; 29] = [
    list("watch", "PATH_OR_GLOB", "see below", "what counts as weights; repeatable"),
    key("metrics-addr", "HOST:PORT", "`127.0.0.1:9464`", "where `/metrics` and `/healthz` listen"),
    list("trusted-cidr", "CIDR", "none", "trusted destination networks; repeatable; loopback is always trusted"),
    key("alerts-file", "PATH", "—", "append alerts as JSON lines"),
    key("alertmanager-url", "URL", "—", "push alerts to Alertmanager's v2 API (`http://` or `https://`; userinfo is sent as basic auth)"),
    key("alertmanager-ca-file", "FILE", "system roots", "PEM CA certificates to trust for an `https://` Alertmanager"),
    key("alertmanager-bearer-token-file", "FILE", "—", "a file holding the bearer token sent to Alertmanager"),
    key("window", "SECS", "300", "detection window"),
    key("min-read-bytes", "SIZE", "64MiB", "watched bytes an actor must read in the window"),
    key("min-send-bytes", "SIZE", "32MiB", "untrusted bytes an actor must send in the window"),
    key("min-send-ratio", "R", "0.5", "untrusted sent / watched read"),
    key("horizon", "DURATION", "30d", "the long horizon of rule `slow_exfil`: plain seconds or with a unit (`3600`, `90m`, `12h`, `30d`)"),
    key("horizon-send-bytes", "SIZE", "1GiB", "untrusted bytes one identity must send to ONE destination network (IPv4 /24, IPv6 /64) over the horizon, having read watched data"),
    key("state-dir", "DIR", "`/var/lib/sensor`", "where the ledger of `slow_exfil` is kept across restarts (`sensor ledger` reads it)"),
    key("poll-interval-ms", "MS", "1000", "how often the kernel maps are read"),
    key("max-comm-labels", "N", "256", "distinct `comm` label values before folding into `other`"),
    key("max-processes", "N", "16384", "processes the kernel maps hold at once (destinations: 2×), plus spills of a quarter (processes) and a half (destinations)"),
    key("prune-idle-secs", "SECS", "2 × window + 60", "live processes' (and destinations') map entries idle this long are removed, so a flood's entries do not stay; a pruned process that moves bytes again is counted anew"),
    key("tail-socket", "PATH", "`/run/sensor/sensor.sock`", "the local socket `sensor tail` attaches to; a live socket there means another agent runs (exit 1)"),
    key("pods-dir", "DIR", "`/var/log/pods`", "the kubelet's pod log directories, for pod names and namespaces"),
    key("web-config-file", "FILE", "—", "TLS, client certificates, basic auth, response headers and a rate limit for `/metrics`, Prometheus exporter-toolkit `web-config.yml` format (below); `/healthz` stays open"),
    key("btf-path", "FILE", "`/sys/kernel/btf/vmlinux`", "the kernel's BTF, for kernels that keep it elsewhere"),
    key("audit-log", "PATH", "— (off)", "append the access audit log here (below)"),
    key("audit-interval", "SECS", "60", "span of each audit record"),
    key("audit-max-bytes", "SIZE", "64MiB", "rotate the audit log past this size"),
    key("audit-max-files", "N", "8", "rotated files kept (`PATH.1` … `PATH.N`)"),
    key("audit-fsync-secs", "SECS", "1", "longest time between fsyncs of the audit log; 0 = after every record"),
    key("audit-key-file", "FILE", "—", "secret (≥ 16 bytes) in a file group and others cannot access (else exit 2 naming the file and its mode; a Kubernetes Secret volume needs `defaultMode: 0400`): each audit record also carries an HMAC-SHA256 under it; never printed"),
    key("audit-max-records-per-process", "N", "64", "access records one process gets per audit interval; the rest fold into one `folded` record"),
];

/// The key called `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

impl Key {
    /// Values that may start with `-` (numbers), as clap must be told.
    pub fn numeric(&self) -> bool {
        matches!(self.value, "SECS" | "SIZE" | "R" | "MS" | "N")
    }

    /// Its row of the README's configuration table.
    #[cfg(test)]
    pub fn readme_row(&self) -> String {
        format!(
            "| `--{} {}` | {} | {} |",
            self.name, self.value, self.default, self.help
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                k.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                k.name
            );
            assert!(KEYS[..i].iter().all(|o| o.name != k.name), "{}", k.name);
        }
    }

    /// The README's configuration table is this table.
    #[test]
    fn the_readme_documents_every_key() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<&str> = readme
            .split("## Configuration")
            .nth(1)
            .expect("README has a Configuration section")
            .lines()
            .filter(|l| l.starts_with("| `--"))
            .filter(|l| !l.starts_with("| `--config") && !l.starts_with("| `--dry-run"))
            .collect();
        let expected: Vec<String> = KEYS.iter().map(Key::readme_row).collect();
        assert_eq!(
            rows,
            expected,
            "README's configuration table differs from config::keys::KEYS; it should read:\n{}",
            expected.join("\n")
        );
    }
}
