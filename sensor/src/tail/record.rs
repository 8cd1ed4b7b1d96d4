//! What `sensor tail` shows, and what the agent streams to it over its
//! local socket: one JSON object per line, `{"type":"activity",...}` per
//! active process per poll, `{"type":"alert","alert":{...}}` as alerts fire.

use serde::{Deserialize, Serialize};

/// Bytes to one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestBytes {
    /// `ip:port`, `[ipv6]:port`, `unix` or `unknown`.
    pub addr: String,
    pub class: String,
    pub bytes: u64,
}

/// One process's activity over an interval. The field names are stable
/// (README, "sensor tail --json").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    pub ts: String,
    pub pid: u32,
    pub comm: String,
    pub container: String,
    /// Bytes read from regular files.
    pub read_bytes: u64,
    /// The part of `read_bytes` from watched files.
    pub watched_read_bytes: u64,
    /// Weights taken in from derived files (copies, archives, tmpfs
    /// staging of weights; lineage).
    #[serde(default)]
    pub derived_read_bytes: u64,
    /// Weights relayed in through pipes, FIFOs and sockets on this host.
    #[serde(default)]
    pub relayed_bytes: u64,
    /// Bytes sent on sockets, all destinations.
    pub sent_bytes: u64,
    pub untrusted_sent_bytes: u64,
    pub trusted_sent_bytes: u64,
    pub loopback_sent_bytes: u64,
    /// UNIX-domain sockets.
    pub local_sent_bytes: u64,
    /// The destination with the most bytes, `""` when none.
    #[serde(default)]
    pub top_destination: String,
    /// Destinations by bytes, most first.
    #[serde(default)]
    pub destinations: Vec<DestBytes>,
}

impl ActivityRecord {
    /// Adds a later record of the same process.
    pub fn absorb(&mut self, other: &ActivityRecord) {
        self.ts.clone_from(&other.ts);
        self.comm.clone_from(&other.comm);
        self.read_bytes += other.read_bytes;
        self.watched_read_bytes += other.watched_read_bytes;
        self.derived_read_bytes += other.derived_read_bytes;
        self.relayed_bytes += other.relayed_bytes;
        self.sent_bytes += other.sent_bytes;
        self.untrusted_sent_bytes += other.untrusted_sent_bytes;
        self.trusted_sent_bytes += other.trusted_sent_bytes;
        self.loopback_sent_bytes += other.loopback_sent_bytes;
        self.local_sent_bytes += other.local_sent_bytes;
        for d in &other.destinations {
            match self
                .destinations
                .iter_mut()
                .find(|x| x.addr == d.addr && x.class == d.class)
            {
                Some(x) => x.bytes += d.bytes,
                None => self.destinations.push(d.clone()),
            }
        }
        self.finish();
    }

    /// Sorts destinations, keeps the top 5, names the top one.
    pub fn finish(&mut self) {
        self.destinations
            .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.addr.cmp(&b.addr)));
        self.destinations.truncate(5);
        self.top_destination = self
            .destinations
            .first()
            .map(|d| d.addr.clone())
            .unwrap_or_default();
    }

    /// Total bytes moved, to sort by.
    pub fn volume(&self) -> u64 {
        self.read_bytes + self.sent_bytes
    }
}

/// A line on the agent's tail socket.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Activity(ActivityRecord),
    Alert { alert: serde_json::Value },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(read: u64, dest: &str, sent: u64) -> ActivityRecord {
        let mut r = ActivityRecord {
            pid: 1,
            read_bytes: read,
            sent_bytes: sent,
            untrusted_sent_bytes: sent,
            destinations: vec![DestBytes {
                addr: dest.into(),
                class: "untrusted".into(),
                bytes: sent,
            }],
            ..Default::default()
        };
        r.finish();
        r
    }

    #[test]
    fn absorbs_and_ranks_destinations() {
        let mut a = rec(10, "198.18.0.2:443", 5);
        a.absorb(&rec(1, "198.18.0.3:80", 7));
        a.absorb(&rec(1, "198.18.0.2:443", 4));
        assert_eq!(
            (a.read_bytes, a.sent_bytes, a.untrusted_sent_bytes),
            (12, 16, 16)
        );
        assert_eq!(a.top_destination, "198.18.0.2:443");
        assert_eq!(a.destinations.len(), 2);
    }

    #[test]
    fn messages_round_trip() {
        let line = serde_json::to_string(&Message::Activity(rec(1, "x", 1))).unwrap();
        assert!(line.starts_with(r#"{"type":"activity""#), "{line}");
        assert!(matches!(
            serde_json::from_str::<Message>(&line).unwrap(),
            Message::Activity(_)
        ));
        let alert = Message::Alert {
            alert: serde_json::json!({"rule": "read_then_send"}),
        };
        let line = serde_json::to_string(&alert).unwrap();
        assert!(matches!(
            serde_json::from_str::<Message>(&line).unwrap(),
            Message::Alert { .. }
        ));
    }
}
