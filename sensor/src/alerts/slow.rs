//! The `slow_exfil` alert line (rule of the long horizon).

use std::time::SystemTime;

use serde::Serialize;

use crate::{detect::ledger::SlowExfil, util::time::rfc3339};

/// One `slow_exfil` alert; field names are the contract (README).
#[derive(Debug, Serialize)]
pub struct SlowExfilJson {
    pub ts: String,
    pub rule: &'static str,
    pub severity: &'static str,
    pub scope: &'static str,
    pub host: String,
    /// Who: `uid=0 exe=/usr/bin/curl` or `workload=NS/OWNER exe=…`.
    pub identity: String,
    /// The destination network (IPv4 /24, IPv6 /64).
    pub network: String,
    pub horizon_s: u64,
    /// Untrusted bytes the identity sent to `network` over the horizon.
    pub sent_bytes: u64,
    /// Watched bytes (watched, derived, relayed) it took in over the horizon.
    pub watched_read_bytes: u64,
    /// Buckets (days with the default horizon) with bytes to `network`.
    pub active_buckets: u64,
    pub bucket_s: u64,
    /// The first bucket of the horizon with bytes to `network`.
    pub since: String,
    /// Raised again: the total at least doubled since the last alert.
    pub escalation: bool,
    /// The last process of the identity seen (it may be gone).
    pub pid: u32,
    pub comm: String,
}

impl SlowExfilJson {
    pub fn new(a: &SlowExfil, host: &str, horizon_s: u64, bucket_s: u64, now: SystemTime) -> Self {
        Self {
            ts: rfc3339(now),
            rule: crate::detect::ledger::RULE_SLOW_EXFIL,
            severity: "critical",
            scope: "identity",
            host: host.to_string(),
            identity: a.identity.clone(),
            network: a.network.clone(),
            horizon_s,
            sent_bytes: a.sent_bytes,
            watched_read_bytes: a.read_bytes,
            active_buckets: a.active_buckets,
            bucket_s,
            since: rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(a.since)),
            escalation: a.escalation,
            pid: a.pid,
            comm: a.comm.clone(),
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"serializing alert: {e}\"}}"))
    }
}
