//! Rule `slow_exfil`: the long horizon. Per identity (what survives
//! restarts and new processes: on the host the uid and executable, in a
//! container the workload and executable; never a pid or a comm), per time
//! bucket (a day for the default 30-day horizon), the watched bytes it took
//! in (watched, derived, relayed) and the untrusted bytes it sent per
//! destination network (IPv4 /24, IPv6 /64). An identity that read watched
//! data and, over the horizon, sent at least `send_bytes` to ONE network
//! raises `slow_exfil`: no ratio (a quantized copy is smaller than the
//! weights), and the same volume spread over many networks (a model server
//! answering clients) does not alert. One alert per identity and network
//! per horizon; again when its total doubled.
//!
//! Pure: deltas and a wall-clock time in, alerts out. Buckets are indexed by
//! the wall clock (a clock step moves a poll's bytes to another bucket: none
//! is lost or counted twice). Memory is bounded by `max_cells` (one cell: one
//! identity, network or read series, one bucket); past it the least recently
//! active identities are forgotten, and counted.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub const RULE_SLOW_EXFIL: &str = "slow_exfil";

/// Buckets a horizon is cut into (a day each for 30 days).
pub const BUCKETS_PER_HORIZON: u64 = 30;
/// Cells kept at most: e.g. 5,000 identities × 20 active buckets × 2
/// series, or any mix. Measured (`a_full_ledger_stays_within_its_bounds`,
/// 10,000 identities a day for 35 days against the bound): the process grew
/// by 33 MiB (the ledger at its bound, allocator slack and the day's
/// entries), the snapshot is 2.9 MB.
pub const MAX_CELLS: usize = 200_000;
/// Networks one identity keeps by name. A new one takes the place of the
/// network with the least bytes over the horizon, whose bytes fold into
/// `other` (counted in totals, never alerted on): to push one network out,
/// an identity must send more than it to each of 255 others.
pub const MAX_NETS_PER_IDENTITY: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct LedgerConfig {
    pub horizon_secs: u64,
    pub send_bytes: u64,
    pub max_cells: usize,
}

impl LedgerConfig {
    /// Seconds a bucket spans: a thirtieth of the horizon, at most a day,
    /// at least a second.
    pub fn bucket_secs(&self) -> u64 {
        (self.horizon_secs / BUCKETS_PER_HORIZON).clamp(1, 86_400)
    }

    /// Buckets the horizon covers (the current one included).
    pub fn horizon_buckets(&self) -> u64 {
        self.horizon_secs.div_ceil(self.bucket_secs()).max(1)
    }
}

/// One identity's series. Bucket index: unix seconds / bucket length.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdState {
    /// Watched bytes taken in per bucket.
    pub read: BTreeMap<u64, u64>,
    /// Untrusted bytes per destination network per bucket.
    pub nets: BTreeMap<String, BTreeMap<u64, u64>>,
    /// The last bucket with activity.
    pub last: u64,
    /// When it was last active (unix seconds): the least recently active
    /// identities are forgotten first.
    #[serde(default)]
    pub last_seen: u64,
    /// Per network: the bucket of the last alert and the total it named.
    #[serde(default)]
    pub alerted: BTreeMap<String, (u64, u64)>,
    /// The last process seen for it (pid, comm), for the alert.
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub comm: String,
}

impl IdState {
    fn cells(&self) -> usize {
        self.read.len() + self.nets.values().map(BTreeMap::len).sum::<usize>()
    }

    /// Folds the named network with the fewest bytes into `other`.
    fn fold_smallest(&mut self) {
        let Some(smallest) = self
            .nets
            .iter()
            .filter(|(n, _)| n.as_str() != "other")
            .min_by_key(|(n, series)| (series.values().sum::<u64>(), (*n).clone()))
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        if let Some(series) = self.nets.remove(&smallest) {
            let other = self.nets.entry("other".to_string()).or_default();
            for (b, v) in series {
                *other.entry(b).or_default() += v;
            }
        }
    }

    fn sum(series: &BTreeMap<u64, u64>, from: u64) -> u64 {
        series.range(from..).map(|(_, v)| *v).sum()
    }
}

/// One identity's activity since the previous poll.
#[derive(Clone, Debug)]
pub struct Entry {
    pub identity: String,
    pub pid: u32,
    pub comm: String,
    /// Watched bytes taken in (watched, derived, relayed).
    pub read: u64,
    /// Untrusted bytes per destination network.
    pub sends: Vec<(String, u64)>,
}

/// A raised `slow_exfil`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlowExfil {
    pub identity: String,
    pub network: String,
    /// Untrusted bytes to `network` over the horizon.
    pub sent_bytes: u64,
    /// Watched bytes taken in over the horizon.
    pub read_bytes: u64,
    /// Buckets over the horizon with bytes to `network`.
    pub active_buckets: u64,
    /// The first bucket of the horizon with bytes to `network` (unix s).
    pub since: u64,
    /// An earlier alert of this identity and network was raised in the
    /// horizon, for half as much.
    pub escalation: bool,
    pub pid: u32,
    pub comm: String,
}

/// The ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub cfg: LedgerConfig,
    pub ids: HashMap<String, IdState>,
    cells: usize,
    /// Identities forgotten because `max_cells` was reached.
    pub evicted: u64,
}

impl Ledger {
    pub fn new(cfg: LedgerConfig) -> Self {
        Self {
            cfg,
            ids: HashMap::new(),
            cells: 0,
            evicted: 0,
        }
    }

    /// A ledger holding `ids` (loaded from disk), trimmed to the horizon.
    pub fn with_state(cfg: LedgerConfig, ids: HashMap<String, IdState>, now: u64) -> Self {
        let mut l = Self::new(cfg);
        l.ids = ids;
        l.expire(now);
        l
    }

    pub fn bucket_of(&self, now: u64) -> u64 {
        now / self.cfg.bucket_secs()
    }

    /// The first bucket of the horizon ending at `now`'s bucket.
    fn horizon_start(&self, now: u64) -> u64 {
        (self.bucket_of(now) + 1).saturating_sub(self.cfg.horizon_buckets())
    }

    /// Adds one poll's entries at `now` (unix seconds, wall clock) and
    /// returns the alerts they raise.
    pub fn observe(&mut self, now: u64, entries: &[Entry]) -> Vec<SlowExfil> {
        let bucket = self.bucket_of(now);
        let mut touched: Vec<String> = Vec::new();
        for e in entries {
            if e.read == 0 && e.sends.is_empty() {
                continue;
            }
            self.add_at(bucket, now, e);
            touched.push(e.identity.clone());
        }
        touched.sort();
        touched.dedup();
        self.bound();
        let mut alerts = Vec::new();
        for id in touched {
            alerts.extend(self.evaluate(&id, now));
        }
        alerts
    }

    /// Adds `e` to bucket `bucket` (no evaluation): replaying a journal.
    pub fn add(&mut self, bucket: u64, e: &Entry) {
        self.add_at(bucket, bucket * self.cfg.bucket_secs(), e);
    }

    fn add_at(&mut self, bucket: u64, now: u64, e: &Entry) {
        let s = self.ids.entry(e.identity.clone()).or_default();
        s.last_seen = s.last_seen.max(now);
        let before = s.cells();
        if e.read > 0 {
            *s.read.entry(bucket).or_default() += e.read;
        }
        for (net, bytes) in &e.sends {
            if !s.nets.contains_key(net) && s.nets.len() >= MAX_NETS_PER_IDENTITY {
                s.fold_smallest();
            }
            *s.nets
                .entry(net.clone())
                .or_default()
                .entry(bucket)
                .or_default() += bytes;
        }
        s.last = s.last.max(bucket);
        if e.pid != 0 {
            s.pid = e.pid;
            s.comm.clone_from(&e.comm);
        }
        let after = s.cells();
        self.cells = self.cells + after - before;
    }

    fn evaluate(&mut self, id: &str, now: u64) -> Vec<SlowExfil> {
        let from = self.horizon_start(now);
        let bucket = self.bucket_of(now);
        let bucket_secs = self.cfg.bucket_secs();
        let send_bytes = self.cfg.send_bytes;
        let Some(s) = self.ids.get_mut(id) else {
            return Vec::new();
        };
        let read = IdState::sum(&s.read, from);
        if read == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (net, series) in &s.nets {
            if net == "other" {
                continue;
            }
            let sent = IdState::sum(series, from);
            if sent < send_bytes {
                continue;
            }
            let escalation = match s.alerted.get(net) {
                Some((at, total)) if *at >= from => {
                    if sent < total.saturating_mul(2) {
                        continue;
                    }
                    true
                }
                _ => false,
            };
            let active: Vec<u64> = series.range(from..).map(|(b, _)| *b).collect();
            out.push(SlowExfil {
                identity: id.to_string(),
                network: net.clone(),
                sent_bytes: sent,
                read_bytes: read,
                active_buckets: active.len() as u64,
                since: active.first().copied().unwrap_or(bucket) * bucket_secs,
                escalation,
                pid: s.pid,
                comm: s.comm.clone(),
            });
        }
        for a in &out {
            s.alerted.insert(a.network.clone(), (bucket, a.sent_bytes));
        }
        out
    }

    /// An alert raised before (replaying a journal).
    pub fn mark_alerted(&mut self, id: &str, network: &str, bucket: u64, total: u64) {
        if let Some(s) = self.ids.get_mut(id) {
            s.alerted.insert(network.to_string(), (bucket, total));
        }
    }

    /// Drops buckets that left the horizon (and identities left empty).
    pub fn expire(&mut self, now: u64) {
        let from = self.horizon_start(now);
        let mut cells = 0;
        self.ids.retain(|_, s| {
            s.read = s.read.split_off(&from);
            for series in s.nets.values_mut() {
                *series = series.split_off(&from);
            }
            s.nets.retain(|_, series| !series.is_empty());
            s.alerted.retain(|_, (at, _)| *at >= from);
            cells += s.cells();
            s.cells() > 0 || !s.alerted.is_empty()
        });
        self.cells = cells;
    }

    /// Forgets the least recently active identities while over `max_cells`.
    fn bound(&mut self) {
        if self.cells <= self.cfg.max_cells {
            return;
        }
        // Least recently active first; among equals, the fewest untrusted
        // bytes (a flood of new identities does not push out a drip).
        let mut by_last: Vec<(u64, u64, String)> = self
            .ids
            .iter()
            .map(|(k, s)| {
                let sent: u64 = s.nets.values().flat_map(|v| v.values()).sum();
                (s.last_seen, sent, k.clone())
            })
            .collect();
        by_last.sort();
        for (_, _, id) in by_last {
            if self.cells <= self.cfg.max_cells * 9 / 10 {
                break;
            }
            if let Some(s) = self.ids.remove(&id) {
                self.cells -= s.cells();
                self.evicted += 1;
            }
        }
    }

    pub fn cells(&self) -> usize {
        self.cells
    }

    /// Horizon totals of one identity at `now`: watched bytes in, and
    /// untrusted bytes per network, most first.
    pub fn totals(&self, id: &str, now: u64) -> (u64, Vec<(String, u64)>) {
        let from = self.horizon_start(now);
        let Some(s) = self.ids.get(id) else {
            return (0, Vec::new());
        };
        let mut nets: Vec<(String, u64)> = s
            .nets
            .iter()
            .map(|(n, series)| (n.clone(), IdState::sum(series, from)))
            .filter(|(_, b)| *b > 0)
            .collect();
        nets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        (IdState::sum(&s.read, from), nets)
    }
}

/// The destination network of an address: IPv4 /24, IPv6 /64.
pub fn network_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(v4.into()),
            None => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const DAY: u64 = 86_400;
    /// 2026-11-01T00:00:00Z
    const T0: u64 = 1_793_491_200;

    fn cfg() -> LedgerConfig {
        LedgerConfig {
            horizon_secs: 30 * DAY,
            send_bytes: GIB,
            max_cells: MAX_CELLS,
        }
    }

    fn entry(id: &str, read: u64, sends: &[(&str, u64)]) -> Entry {
        Entry {
            identity: id.into(),
            pid: 1,
            comm: "c".into(),
            read,
            sends: sends.iter().map(|(n, b)| (n.to_string(), *b)).collect(),
        }
    }

    /// Runs `days` simulated days of 5-minute polls; `each(day, poll)` gives
    /// the poll's entries. Returns (day, alert) of every alert.
    fn simulate(
        l: &mut Ledger,
        days: u64,
        each: impl Fn(u64, u64) -> Vec<Entry>,
    ) -> Vec<(u64, SlowExfil)> {
        let mut out = Vec::new();
        for day in 0..days {
            for poll in 0..288 {
                let now = T0 + day * DAY + poll * 300;
                for a in l.observe(now, &each(day, poll)) {
                    out.push((day, a));
                }
            }
            l.expire(T0 + (day + 1) * DAY);
        }
        out
    }

    #[test]
    fn a_drip_by_rotating_pids_of_one_identity_alerts_the_day_it_crosses() {
        let mut l = Ledger::new(cfg());
        // 60 MiB every 5 minutes by a new process each time, one identity:
        // ~16.9 GiB a day, well above 1 GiB on day 0.
        let alerts = simulate(&mut l, 30, |_, poll| {
            let mut e = entry(
                "uid=0 exe=/usr/bin/curl",
                60 * MIB,
                &[("198.18.7.0/24", 60 * MIB)],
            );
            e.pid = 1000 + poll as u32;
            vec![e]
        });
        let first = &alerts[0];
        assert_eq!(first.0, 0, "{alerts:?}");
        assert_eq!(first.1.network, "198.18.7.0/24");
        assert!(first.1.sent_bytes >= GIB && first.1.sent_bytes < GIB + 60 * MIB);
        // Escalations on doubling only, not every poll.
        assert!(alerts.len() < 40, "{} alerts", alerts.len());
        assert!(alerts[1..].iter().all(|(_, a)| a.escalation));
    }

    #[test]
    fn a_slow_drip_below_the_window_thresholds_alerts_on_the_day_it_reaches_the_total() {
        let mut l = Ledger::new(cfg());
        // 40 MiB a day: 1 GiB after 26 days (25.6).
        let alerts = simulate(&mut l, 30, |_, poll| {
            if poll == 100 {
                vec![entry(
                    "uid=1000 exe=/usr/bin/python3.11",
                    40 * MIB,
                    &[("203.0.113.0/24", 40 * MIB)],
                )]
            } else {
                vec![]
            }
        });
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].0, 25, "day 26 (index 25): 26 × 40 MiB ≥ 1 GiB");
        assert_eq!(alerts[0].1.active_buckets, 26);
    }

    #[test]
    fn a_quantized_copy_a_quarter_of_the_read_alerts() {
        let mut l = Ledger::new(cfg());
        // Reads 8 GiB of weights once; sends a 4-bit copy (2 GiB) slowly.
        let alerts = simulate(&mut l, 30, |day, poll| {
            let read = if day == 0 && poll == 0 { 8 * GIB } else { 0 };
            let sent = if poll % 12 == 0 {
                2 * GIB / (30 * 24)
            } else {
                0
            };
            let sends: Vec<(&str, u64)> = if sent > 0 {
                vec![("192.0.2.0/24", sent)]
            } else {
                vec![]
            };
            vec![entry("pod=ml/quantizer exe=/usr/bin/python3", read, &sends)]
        });
        assert!(!alerts.is_empty(), "a quarter-size copy leaves: alert");
        // 2 GiB over 30 days (1/720 of it every hour): 1 GiB is passed in
        // the first hour of day 16 (index 15).
        assert_eq!(alerts[0].0, 15, "{:?}", alerts[0]);
    }

    #[test]
    fn a_model_server_streaming_to_a_thousand_clients_for_30_days_stays_quiet() {
        let mut l = Ledger::new(cfg());
        // Loads 20 GiB; streams 5 GiB a day spread over 1,000 client /24s.
        let alerts = simulate(&mut l, 30, |day, poll| {
            let read = if day == 0 && poll == 0 { 20 * GIB } else { 0 };
            let mut sends = Vec::new();
            for c in 0..4u64 {
                let client = (day * 288 * 4 + poll * 4 + c) % 1000;
                sends.push((
                    format!("10.{}.{}.0/24", client / 256, client % 256),
                    5 * GIB / (288 * 4),
                ));
            }
            vec![Entry {
                identity: "pod=serving/vllm exe=/usr/bin/python3".into(),
                pid: 7,
                comm: "python3".into(),
                read,
                sends,
            }]
        });
        assert!(alerts.is_empty(), "{:?}", &alerts[..alerts.len().min(3)]);
        // 150 GiB left in all; no client network got near 1 GiB.
        let (_, nets) = l.totals("pod=serving/vllm exe=/usr/bin/python3", T0 + 30 * DAY - 1);
        let named: Vec<&(String, u64)> = nets.iter().filter(|(n, _)| n != "other").collect();
        assert!(named[0].1 < GIB / 4, "{:?}", named[0]);
        assert!(named.len() <= MAX_NETS_PER_IDENTITY);
    }

    #[test]
    fn two_identities_each_under_the_threshold_stay_quiet() {
        let mut l = Ledger::new(cfg());
        let alerts = simulate(&mut l, 30, |_, poll| {
            if poll == 0 {
                vec![
                    entry(
                        "uid=0 exe=/usr/bin/curl",
                        MIB,
                        &[("198.51.100.0/24", 20 * MIB)],
                    ),
                    entry(
                        "uid=0 exe=/usr/bin/wget",
                        MIB,
                        &[("198.51.100.0/24", 20 * MIB)],
                    ),
                ]
            } else {
                vec![]
            }
        });
        assert!(
            alerts.is_empty(),
            "2 × 600 MiB over 30 days, 600 MiB each: {alerts:?}"
        );
    }

    #[test]
    fn a_drip_split_over_two_hosts_of_one_network_alerts() {
        let mut l = Ledger::new(cfg());
        let alerts = simulate(&mut l, 30, |_, poll| {
            if poll % 24 == 0 {
                vec![entry(
                    "uid=0 exe=/usr/local/bin/sync",
                    MIB,
                    &[
                        (&network_of("198.18.9.10".parse().unwrap()), 2 * MIB),
                        (&network_of("198.18.9.200".parse().unwrap()), 2 * MIB),
                    ],
                )]
            } else {
                vec![]
            }
        });
        assert!(!alerts.is_empty());
        assert_eq!(alerts[0].1.network, "198.18.9.0/24");
        // 48 MiB a day to one /24: 1 GiB on day 21 (index 21).
        assert_eq!(alerts[0].0, 21, "{alerts:?}");
    }

    /// Walking around the cap on networks: decoys to many networks first,
    /// then the drip to one. The drip's network takes a place and keeps it.
    #[test]
    fn decoy_networks_do_not_push_the_drip_out() {
        let mut l = Ledger::new(cfg());
        let alerts = simulate(&mut l, 30, |day, poll| {
            let mut sends = Vec::new();
            if day == 0 && poll < 100 {
                for d in 0..4u64 {
                    sends.push((format!("10.0.{}.0/24", poll * 4 + d), MIB));
                }
            }
            if poll % 24 == 0 {
                sends.push(("198.18.66.0/24".to_string(), 4 * MIB));
            }
            vec![Entry {
                identity: "uid=0 exe=/usr/bin/x".into(),
                pid: 1,
                comm: "x".into(),
                read: 1,
                sends,
            }]
        });
        assert!(
            !alerts.is_empty(),
            "48 MiB a day to one /24 after 400 decoys"
        );
        assert_eq!(alerts[0].1.network, "198.18.66.0/24");
    }

    #[test]
    fn sending_without_reading_weights_never_alerts() {
        let mut l = Ledger::new(cfg());
        let alerts = simulate(&mut l, 3, |_, _| {
            vec![entry(
                "uid=0 exe=/usr/bin/rsync",
                0,
                &[("198.18.1.0/24", 100 * MIB)],
            )]
        });
        assert!(alerts.is_empty());
    }

    #[test]
    fn a_clock_step_back_neither_loses_nor_doubles_bytes() {
        let mut l = Ledger::new(cfg());
        l.observe(T0 + 10 * DAY, &[entry("i", MIB, &[("n", 100 * MIB)])]);
        // The clock steps back a day: those bytes land in an earlier bucket.
        l.observe(T0 + 9 * DAY, &[entry("i", 0, &[("n", 100 * MIB)])]);
        let (_, nets) = l.totals("i", T0 + 10 * DAY);
        assert_eq!(nets, vec![("n".to_string(), 200 * MIB)]);
    }

    #[test]
    fn memory_is_bounded_and_evictions_counted() {
        let mut l = Ledger::new(LedgerConfig {
            max_cells: 1000,
            ..cfg()
        });
        for i in 0..2000u64 {
            l.observe(T0 + i, &[entry(&format!("id{i}"), 1, &[("n", 1)])]);
        }
        assert!(l.cells() <= 1000, "{}", l.cells());
        assert!(l.evicted >= 1000, "{}", l.evicted);
        // The most recent identities are kept.
        assert!(l.ids.contains_key("id1999"));
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(network_of("198.18.3.77".parse().unwrap()), "198.18.3.0/24");
        assert_eq!(
            network_of("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            network_of("::ffff:198.18.3.77".parse().unwrap()),
            "198.18.3.0/24"
        );
    }
}
