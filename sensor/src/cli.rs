//! Command line (clap derive). Values stay text here: `config` validates
//! flags and YAML keys with one parser each, so both give the same errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sensor",
    version,
    about = "Kernel-level data-access sensor: counts the bytes processes read from model \
             weights and send on sockets, and alerts on read-then-send."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and attach the programs, serve metrics, run until SIGINT/SIGTERM.
    Run(Box<RunArgs>),
    /// Live per-process reads and sends, and alerts as they fire.
    Tail(TailArgs),
    /// Preflight: kernel, BTF, privileges, and whether each program attaches.
    Check(CheckArgs),
    /// The access audit log written by `sensor run --audit-log`.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit logs: each PATH is a log as given to
    /// --audit-log (its rotated files PATH.1, PATH.2, ... are read too).
    Verify(AuditVerifyArgs),
    /// Print the access records of audit logs, filtered.
    Query(AuditQueryArgs),
}

#[derive(Debug, Default, Args)]
pub struct AuditVerifyArgs {
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The key the log was written with (--audit-key-file): also check
    /// each record's MAC.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The chain head exported by the agent (sensor_audit_chain_head):
    /// SEQ:HASHPREFIX; the log must hold that record with that hash.
    #[arg(long, value_name = "SEQ:HASHPREFIX")]
    pub head: Option<String>,
}

#[derive(Debug, Default, Args)]
pub struct AuditQueryArgs {
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only records whose file path contains this.
    #[arg(long, value_name = "TEXT")]
    pub file: Option<String>,
    /// Only this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only processes with this command name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Only records whose span ends at or after this time (2026-11-26T17:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only records whose span starts at or before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// JSON lines (the records as written) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Every flag has a YAML key of the same name in `--config`; flags win.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// YAML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What counts as weights: a file, a directory (recursive), `*.EXT`, or
    /// `DIR/**/*.EXT`. Repeatable. Default: common weight extensions and
    /// /models, /mnt/models, /data/models, ~/.cache/huggingface.
    #[arg(long = "watch", value_name = "PATH_OR_GLOB")]
    pub watch: Vec<String>,
    /// Where /metrics and /healthz are served.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// A trusted destination network. Repeatable; loopback is always trusted.
    #[arg(long = "trusted-cidr", value_name = "CIDR")]
    pub trusted_cidr: Vec<String>,
    /// Append alerts as JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub alerts_file: Option<PathBuf>,
    /// Push alerts to Alertmanager's v2 API at this base URL.
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Option<String>,
    /// PEM CA certificates to trust for an https Alertmanager.
    #[arg(long, value_name = "FILE")]
    pub alertmanager_ca_file: Option<PathBuf>,
    /// A file holding the bearer token sent to Alertmanager.
    #[arg(long, value_name = "FILE")]
    pub alertmanager_bearer_token_file: Option<PathBuf>,
    /// Detection window in seconds.
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub window: Option<String>,
    /// Watched bytes an actor must read in the window to alert (e.g. 64MiB).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub min_read_bytes: Option<String>,
    /// Untrusted bytes an actor must send in the window to alert (e.g. 32MiB).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub min_send_bytes: Option<String>,
    /// Minimum sent/read ratio to alert.
    #[arg(long, value_name = "RATIO", allow_hyphen_values = true)]
    pub min_send_ratio: Option<String>,
    /// How often the kernel maps are read, in milliseconds.
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    pub poll_interval_ms: Option<String>,
    /// Distinct `comm` label values before the rest fold into "other".
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_comm_labels: Option<String>,
    /// Processes the kernel maps can hold at once.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_processes: Option<String>,
    /// Seconds without activity after which a live process's (or a
    /// destination's) map entries are removed (default: twice the window
    /// plus 60 s).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub prune_idle_secs: Option<String>,
    /// The local socket `sensor tail` attaches to (root only).
    #[arg(long, value_name = "PATH")]
    pub tail_socket: Option<PathBuf>,
    /// The kubelet's pod log directory, for pod names and namespaces.
    #[arg(long, value_name = "DIR")]
    pub pods_dir: Option<PathBuf>,
    /// The kernel's BTF (for kernels that keep it elsewhere than
    /// /sys/kernel/btf/vmlinux).
    #[arg(long, value_name = "FILE")]
    pub btf_path: Option<PathBuf>,
    /// TLS and basic auth for /metrics (Prometheus exporter-toolkit format).
    #[arg(long, value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Append an access audit record per (process, watched file) per
    /// interval to this file (JSON lines, hash-chained). Off when unset.
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Seconds each audit record spans.
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub audit_interval: Option<String>,
    /// Rotate the audit log when it would grow past this size (e.g. 64MiB).
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    pub audit_max_bytes: Option<String>,
    /// Rotated audit files kept (PATH.1 ... PATH.N).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub audit_max_files: Option<String>,
    /// At most this many seconds between fsyncs of the audit log (0: after
    /// every write).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub audit_fsync_secs: Option<String>,
    /// A secret key: each audit record also carries an HMAC-SHA256 under it.
    #[arg(long, value_name = "FILE")]
    pub audit_key_file: Option<PathBuf>,
    /// Access records one process gets per audit interval; the rest are
    /// folded into one summary record.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub audit_max_records_per_process: Option<String>,
    /// Validate the configuration and the watch set, print them, exit.
    #[arg(long)]
    pub dry_run: bool,
}

/// `sensor tail`: attaches to the local agent, else loads its own programs.
#[derive(Debug, Default, Args)]
pub struct TailArgs {
    /// One JSON object per line (activity records and alert objects).
    #[arg(long)]
    pub json: bool,
    /// Only this process (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only processes with this command name (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only processes of this container (id or its prefix).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Only processes that read watched files in the interval.
    #[arg(long)]
    pub watched_only: bool,
    /// Seconds per line of output per process.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1",
        allow_hyphen_values = true
    )]
    pub interval: String,
    /// The agent's socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Load own programs even when an agent runs.
    #[arg(long)]
    pub standalone: bool,
    /// Standalone mode: what counts as weights (as `sensor run --watch`).
    #[arg(long = "watch", value_name = "PATH_OR_GLOB")]
    pub watch: Vec<String>,
    /// Standalone mode: trusted destination networks.
    #[arg(long = "trusted-cidr", value_name = "CIDR")]
    pub trusted_cidr: Vec<String>,
}

#[derive(Debug, Default, Args)]
pub struct CheckArgs {
    /// Print the table as JSON.
    #[arg(long)]
    pub json: bool,
}
