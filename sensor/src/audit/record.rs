//! What the audit log holds: access records, and the agent's own events
//! (start, stop, a span it did not run, a rotation, a tamper finding), each
//! wrapped with its sequence number, write time and the previous hash.

use serde::{Deserialize, Serialize};

/// Bytes a process sent to one destination in the record's span.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub addr: String,
    pub port: u16,
    pub class: String,
    pub bytes: u64,
}

/// One process's reads of one watched file during one interval, and what
/// that process sent in the same interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// The interval (RFC 3339, UTC).
    pub start: String,
    pub end: String,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    pub exe: String,
    pub cmdline: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub path: String,
    pub dev: u32,
    pub inode: u64,
    pub read_bytes: u64,
    pub sent_bytes: u64,
    pub untrusted_sent_bytes: u64,
    pub destinations: Vec<Destination>,
    /// Lineage: how these bytes of weights reached the process when not
    /// read from a watched file (`file`: a derived file at `path`; `pipe`,
    /// `unix`, `loopback`: relayed), and the weights file they came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub via: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

/// The body of a record; `kind` names the variant.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Access(Box<Access>),
    /// The agent started writing (after a `gap` when the log existed).
    Start {
        version: String,
        host: String,
        pid: u32,
        interval_s: u64,
        keyed: bool,
    },
    /// A clean stop: everything before it was flushed.
    Stop {
        reason: String,
    },
    /// A span without the agent: from the last record of the previous run
    /// to this start. `clean` when that run ended with `stop`; else it
    /// crashed or was killed, and up to one interval of accesses before
    /// `from` may be missing. `truncated_bytes`: a torn last line removed.
    Gap {
        from: String,
        until: String,
        seconds: u64,
        clean: bool,
        truncated_bytes: u64,
        /// The log file ended in a line that is not a record: it was
        /// renamed to this, and the chain continues from its last record.
        #[serde(skip_serializing_if = "Option::is_none")]
        damaged_file: Option<String>,
    },
    /// A process had more than `--audit-max-records-per-process` files in
    /// one interval: `kept` got their own records (the most read), the
    /// other `files` are summed here.
    Folded {
        start: String,
        end: String,
        pid: u32,
        ppid: u32,
        uid: u32,
        comm: String,
        exe: String,
        container: String,
        kept: u64,
        files: u64,
        read_bytes: u64,
        sent_bytes: u64,
        untrusted_sent_bytes: u64,
    },
    /// The oldest file was deleted by rotation; the chain may now start
    /// after `dropped_through_seq`.
    Rotate {
        dropped_file: String,
        dropped_through_seq: u64,
    },
    /// What tamper detection found (also raised as a `sensor_tamper` alert).
    Tamper {
        what: String,
        detail: String,
    },
}

/// A record before sealing.
#[derive(Serialize)]
pub struct Envelope<'a> {
    pub seq: u64,
    pub ts: &'a str,
    #[serde(flatten)]
    pub event: &'a Event,
    pub prev: &'a str,
}
