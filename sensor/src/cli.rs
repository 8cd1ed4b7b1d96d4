//! Command line (clap derive). Values stay text here: `config` validates
//! flags and YAML keys with one parser each, so both give the same errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::config::args::RunArgs;

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
    /// The long-horizon ledger of rule `slow_exfil` (read from the state
    /// dir; no agent needed).
    Ledger(LedgerArgs),
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The agent's `--state-dir` [default: /var/lib/sensor].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// JSON lines: one per identity, then one per gap.
    #[arg(long)]
    pub json: bool,
    /// Destination networks listed per identity.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
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
