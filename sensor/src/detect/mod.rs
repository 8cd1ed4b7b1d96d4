//! Rule `read_then_send`, evaluated over a sliding window per actor: a
//! process, a session (a shell pipeline shares one), a container, or a
//! flow (the processes weights reached through derived files, pipes and
//! local sockets, whatever their sessions or containers). Pure: activity
//! in, alerts out; no I/O, no kernel, no clock of its own.
//!
//! An actor alerts when, within the window, it read at least
//! `min_read_bytes` from watched files, sent at least `min_send_bytes` to
//! untrusted destinations, and sent/read is at least `min_send_ratio`.
//! Watched bytes are counted once per file and window, at most what the
//! file holds on disk (the kernel's lineage accounting), so re-reading or a
//! sparse watched file does not dilute the ratio. A flow's reads are the
//! weights its senders took in (from watched files, derived files and
//! relays): what reached a sender is judged against what it sent.
//! One alert per actor per window; within the window it alerts again only
//! when its untrusted bytes at least doubled since its last alert
//! (escalation). A session or container alerts only when none of its
//! processes (and, for a container, none of its sessions) already did: the
//! narrowest actor that explains the flow is the one reported.

pub mod blind;
pub mod ledger;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use sensor_common::InodeKey;

use crate::{
    collect::{endpoint::Endpoint, Identity},
    config::DetectConfig,
    enrich::destination::DestClass,
};

pub const RULE_READ_THEN_SEND: &str = "read_then_send";

/// What one process did since the previous poll.
#[derive(Clone, Debug)]
pub struct Activity {
    pub identity: Identity,
    /// Container id, empty on the host.
    pub container: String,
    pub watched_read: u64,
    /// Weights taken in from derived files and relays (lineage).
    pub lineage_read: u64,
    /// The flow it belongs to, when weights reached it through a carrier.
    pub flow: Option<u64>,
    pub files: Vec<(InodeKey, u64)>,
    pub sends: Vec<(Endpoint, DestClass, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Process,
    Session,
    Container,
    Flow,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Process => "process",
            Scope::Session => "session",
            Scope::Container => "container",
            Scope::Flow => "flow",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorKey {
    /// tgid and first-seen time (a reused pid is another process).
    Process(u32, u64),
    Session(u32),
    Container(String),
    /// A flow, by the id the kernel gave it.
    Flow(u64),
}

impl ActorKey {
    fn scope(&self) -> Scope {
        match self {
            ActorKey::Process(..) => Scope::Process,
            ActorKey::Session(_) => Scope::Session,
            ActorKey::Container(_) => Scope::Container,
            ActorKey::Flow(_) => Scope::Flow,
        }
    }
}

/// A raised alert, before rendering (paths, exe, host are added by `alerts`).
#[derive(Clone, Debug)]
pub struct Alert {
    pub rule: &'static str,
    pub scope: Scope,
    /// The process that sent the most untrusted bytes in the window.
    pub process: Identity,
    pub container: String,
    /// The flow of a `Scope::Flow` alert.
    pub flow: Option<u64>,
    pub window_s: u64,
    pub watched_read_bytes: u64,
    /// Bytes sent to untrusted destinations in the window.
    pub sent_bytes: u64,
    /// Watched files by bytes read, most first (at most 10).
    pub top_files: Vec<(InodeKey, u64)>,
    /// Destinations by bytes, untrusted first, then most bytes (at most 10).
    pub destinations: Vec<(Endpoint, DestClass, u64)>,
    /// Every process of the actor active in the window.
    pub pids: Vec<u32>,
}

/// One slice of an actor's window.
#[derive(Debug, Default)]
struct Bucket {
    start: u64,
    watched_read: u64,
    untrusted_sent: u64,
    files: HashMap<InodeKey, u64>,
    dests: HashMap<(Endpoint, DestClass), u64>,
    /// Untrusted bytes by process, to name the sender.
    senders: HashMap<u32, u64>,
    /// Weights taken in by process (flows only: a flow's reads are its
    /// senders' inputs).
    inputs: HashMap<u32, u64>,
    pids: HashSet<u32>,
}

impl Bucket {
    fn add_dest(&mut self, ep: Endpoint, class: DestClass, bytes: u64) {
        add_to(&mut self.dests, (ep, class), bytes);
        if self.dests.len() > 2 * MAX_DESTS_PER_BUCKET {
            self.fold_dests();
        }
    }

    /// Keeps the [`MAX_DESTS_PER_BUCKET`] largest destinations (untrusted
    /// first, as alerts list them) and folds the rest into one
    /// [`Endpoint::Other`] entry per class: bytes are never dropped.
    fn fold_dests(&mut self) {
        let mut named: Vec<((Endpoint, DestClass), u64)> = Vec::with_capacity(self.dests.len());
        let mut other: HashMap<(Endpoint, DestClass), u64> = HashMap::new();
        for (k, v) in self.dests.drain() {
            if k.0 == Endpoint::Other {
                add_to(&mut other, k, v);
            } else {
                named.push((k, v));
            }
        }
        named.sort_by(|a, b| {
            (b.0 .1 == DestClass::Untrusted)
                .cmp(&(a.0 .1 == DestClass::Untrusted))
                .then(b.1.cmp(&a.1))
                .then(a.0 .0.cmp(&b.0 .0))
        });
        for ((_, class), v) in named.split_off(named.len().min(MAX_DESTS_PER_BUCKET)) {
            add_to(&mut other, (Endpoint::Other, class), v);
        }
        self.dests.extend(named);
        for (k, v) in other {
            add_to(&mut self.dests, k, v);
        }
    }
}

#[derive(Debug, Default)]
struct ActorState {
    buckets: VecDeque<Bucket>,
    /// Latest identity of each process seen (for the alert's process fields).
    identities: HashMap<u32, Identity>,
    /// Sessions and containers the actor's processes belong to.
    sessions: HashSet<u32>,
    container: String,
    /// The container of each process named in `identities` (a flow spans
    /// several: the alert gives its sender's).
    containers: HashMap<u32, String>,
    last_alert: Option<(u64, u64)>,
}

impl ActorState {
    /// Adds one process's activity to the current bucket. `significant`:
    /// it read watched files or sent untrusted bytes (it is named and listed
    /// whatever the caps).
    fn add(
        &mut self,
        a: &Activity,
        flow: bool,
        untrusted: u64,
        bucket_start: u64,
        significant: bool,
    ) {
        if self.buckets.back().is_none_or(|b| b.start != bucket_start) {
            self.buckets.push_back(Bucket {
                start: bucket_start,
                ..Default::default()
            });
        }
        let Some(b) = self.buckets.back_mut() else {
            return;
        };
        if flow {
            let input = a.watched_read.saturating_add(a.lineage_read);
            if input > 0 {
                add_to(&mut b.inputs, a.identity.tgid, input);
            }
        } else {
            b.watched_read = b.watched_read.saturating_add(a.watched_read);
        }
        b.untrusted_sent = b.untrusted_sent.saturating_add(untrusted);
        if significant || b.pids.len() < MAX_PIDS_PER_BUCKET {
            b.pids.insert(a.identity.tgid);
        }
        if untrusted > 0 {
            add_to(&mut b.senders, a.identity.tgid, untrusted);
        }
        for (inode, bytes) in &a.files {
            add_to(&mut b.files, *inode, *bytes);
        }
        for (ep, class, bytes) in &a.sends {
            b.add_dest(*ep, *class, *bytes);
        }
        if significant {
            self.identities.insert(a.identity.tgid, a.identity.clone());
            self.containers.insert(a.identity.tgid, a.container.clone());
            self.sessions.insert(a.identity.sid);
        }
        self.container.clone_from(&a.container);
    }

    /// Watched bytes read and untrusted bytes sent in the window. A flow
    /// reads what its exfiltrating senders took in and sends what they
    /// sent: members whose own untrusted bytes are below `ratio` of what
    /// they took in (a model server answering clients, a peer acknowledging
    /// what it received) neither dilute nor add.
    fn sums(&self, ratio: f64) -> (u64, u64) {
        let (read, sent) = self.buckets.iter().fold((0u64, 0u64), |(r, s), b| {
            (
                r.saturating_add(b.watched_read),
                s.saturating_add(b.untrusted_sent),
            )
        });
        if self.buckets.iter().all(|b| b.inputs.is_empty()) {
            return (read, sent);
        }
        let mut per: HashMap<u32, (u64, u64)> = HashMap::new();
        for b in &self.buckets {
            for (pid, v) in &b.inputs {
                let e = per.entry(*pid).or_default();
                e.0 = e.0.saturating_add(*v);
            }
            for (pid, v) in &b.senders {
                let e = per.entry(*pid).or_default();
                e.1 = e.1.saturating_add(*v);
            }
        }
        per.values()
            .filter(|(input, out)| *out > 0 && *out as f64 >= ratio * *input as f64)
            .fold((read, 0), |(r, s), (input, out)| {
                (r.saturating_add(*input), s.saturating_add(*out))
            })
    }

    /// Whether anything in the window can make an alert.
    fn holds_anything(&self) -> bool {
        self.buckets
            .iter()
            .any(|b| b.watched_read > 0 || b.untrusted_sent > 0 || !b.inputs.is_empty())
    }

    /// Processes that sent untrusted bytes in the window.
    fn senders(&self) -> HashSet<u32> {
        self.buckets
            .iter()
            .flat_map(|b| b.senders.keys().copied())
            .collect()
    }

    fn alerted_since(&self, t: u64) -> bool {
        self.last_alert.is_some_and(|(at, _)| at >= t)
    }
}

pub struct Detector {
    cfg: DetectConfig,
    bucket_secs: u64,
    actors: BTreeMap<ActorKey, ActorState>,
    max_actors: usize,
    /// Actors forgotten early because `max_actors` was reached.
    pub evicted: u64,
}

/// Actors kept at most (memory bound under a storm of short-lived
/// processes): past it, the least recently active are forgotten first.
pub const MAX_ACTORS: usize = 65_536;
/// Destinations a bucket keeps by name; past it the smallest are folded into
/// [`Endpoint::Other`] (their bytes still count).
pub const MAX_DESTS_PER_BUCKET: usize = 64;
/// Processes a bucket lists beyond those that read watched files or sent
/// untrusted bytes (always listed).
pub const MAX_PIDS_PER_BUCKET: usize = 256;

impl Detector {
    pub fn new(cfg: DetectConfig) -> Self {
        // Sixty slices a window, at least a second each.
        let bucket_secs = (cfg.window.as_secs() / 60).max(1);
        Self {
            cfg,
            bucket_secs,
            actors: BTreeMap::new(),
            max_actors: MAX_ACTORS,
            evicted: 0,
        }
    }

    #[cfg(test)]
    fn with_max_actors(mut self, n: usize) -> Self {
        self.max_actors = n;
        self
    }

    /// Forgets the process-scope actors of processes that exited: all their
    /// bytes were in the poll just observed, so nothing can raise them any
    /// more (their session and container actors stay). Without this, a storm
    /// of short-lived readers of weights holds an actor each for a window.
    pub fn forget_exited(&mut self, exited: impl IntoIterator<Item = (u32, u64)>) {
        for (tgid, first_seen_ns) in exited {
            let key = ActorKey::Process(tgid, first_seen_ns);
            // One that alerted stays until its window passes: its session
            // and container defer to it (else they would alert again, for
            // the same bytes, the poll after it exited).
            if self
                .actors
                .get(&key)
                .is_some_and(|s| s.last_alert.is_none())
            {
                self.actors.remove(&key);
            }
        }
    }

    /// Number of actors with activity in the window (memory is bounded by it).
    pub fn actors(&self) -> usize {
        self.actors.len()
    }

    /// Adds one poll's activity at `now` (seconds on a monotonic clock) and
    /// returns the alerts it raises.
    ///
    /// Only activity that can make an alert (watched reads, untrusted sends)
    /// creates actors; loopback, local and trusted sends add detail to actors
    /// that exist and cost nothing otherwise, so a host full of loopback
    /// chatter holds no detector state.
    pub fn observe(&mut self, now: u64, activity: &[Activity]) -> Vec<Alert> {
        let bucket_start = now - now % self.bucket_secs;
        let mut rest = Vec::new();
        for a in activity {
            let untrusted = untrusted_bytes(a);
            if a.watched_read == 0 && a.lineage_read == 0 && untrusted == 0 {
                if !a.sends.is_empty() {
                    rest.push(a);
                }
                continue;
            }
            for key in actor_keys(a) {
                let flow = key.scope() == Scope::Flow;
                let state = self.actors.entry(key).or_default();
                state.add(a, flow, untrusted, bucket_start, true);
            }
        }
        // After the actors this poll created, so a relay's loopback hop is
        // listed with the reader of its session whatever the order.
        for a in rest {
            for key in actor_keys(a) {
                let flow = key.scope() == Scope::Flow;
                if let Some(state) = self.actors.get_mut(&key) {
                    state.add(a, flow, 0, bucket_start, false);
                }
            }
        }
        self.expire(now);
        let alerts = self.evaluate(now);
        self.bound();
        alerts
    }

    /// Forgets the least recently active actors (a tenth of the cap at a
    /// time) while there are more than `max_actors`.
    fn bound(&mut self) {
        if self.actors.len() <= self.max_actors {
            return;
        }
        let mut last: Vec<(u64, ActorKey)> = self
            .actors
            .iter()
            .map(|(k, s)| (s.buckets.back().map_or(0, |b| b.start), k.clone()))
            .collect();
        last.sort();
        let excess = self.actors.len() - self.max_actors + self.max_actors / 10;
        for (_, key) in last.into_iter().take(excess) {
            self.actors.remove(&key);
            self.evicted += 1;
        }
    }

    fn expire(&mut self, now: u64) {
        let window = self.cfg.window.as_secs();
        let horizon = now.saturating_sub(window);
        self.actors.retain(|_, s| {
            while s
                .buckets
                .front()
                .is_some_and(|b| b.start + self.bucket_secs <= horizon)
            {
                s.buckets.pop_front();
            }
            if s.identities.len() > MAX_PIDS_PER_BUCKET {
                // Names of processes no longer in the window.
                let live: HashSet<u32> = s
                    .buckets
                    .iter()
                    .flat_map(|b| b.pids.iter().copied())
                    .collect();
                s.identities.retain(|pid, _| live.contains(pid));
                s.containers.retain(|pid, _| live.contains(pid));
            }
            // An actor is kept while its window holds something that can make
            // an alert (watched reads, untrusted sends), or a recent alert to
            // suppress repeats of; loopback chatter alone does not keep it.
            s.holds_anything() || s.alerted_since(horizon)
        });
    }

    fn fires(&self, read: u64, sent: u64) -> bool {
        read >= self.cfg.min_read_bytes
            && sent >= self.cfg.min_send_bytes
            && read > 0
            && sent as f64 / read as f64 >= self.cfg.min_send_ratio
    }

    fn evaluate(&mut self, now: u64) -> Vec<Alert> {
        let horizon = now.saturating_sub(self.cfg.window.as_secs());
        let mut alerts = Vec::new();
        // Narrow scopes first, so wider ones can defer to them.
        for scope in [
            Scope::Process,
            Scope::Session,
            Scope::Container,
            Scope::Flow,
        ] {
            let keys: Vec<ActorKey> = self
                .actors
                .keys()
                .filter(|k| k.scope() == scope)
                .cloned()
                .collect();
            for key in keys {
                let state = &self.actors[&key];
                let (read, sent) = state.sums(self.cfg.min_send_ratio);
                if !self.fires(read, sent) {
                    continue;
                }
                let repeat = match state.last_alert {
                    Some((at, last_sent)) if at >= horizon => sent >= last_sent.saturating_mul(2),
                    _ => true,
                };
                if !repeat || self.explained_by_narrower(&key, horizon) {
                    continue;
                }
                alerts.push(self.build(&key, read, sent));
                if let Some(s) = self.actors.get_mut(&key) {
                    s.last_alert = Some((now, sent));
                }
            }
        }
        alerts
    }

    /// Whether a process (or, for a container, a process or session) inside
    /// this actor alerted within the window; for a flow, whether any other
    /// actor holding one of its senders did.
    fn explained_by_narrower(&self, key: &ActorKey, horizon: u64) -> bool {
        if let ActorKey::Flow(_) = key {
            let senders = self.actors[key].senders();
            return self.actors.iter().any(|(k, s)| {
                k.scope() != Scope::Flow
                    && s.alerted_since(horizon)
                    && s.buckets
                        .iter()
                        .any(|b| b.pids.iter().any(|p| senders.contains(p)))
            });
        }
        let inside = |other: &ActorKey, s: &ActorState| match (key, other) {
            (ActorKey::Session(sid), ActorKey::Process(..)) => s.sessions.contains(sid),
            (ActorKey::Container(c), ActorKey::Process(..) | ActorKey::Session(_)) => {
                &s.container == c
            }
            _ => false,
        };
        self.actors
            .iter()
            .any(|(k, s)| inside(k, s) && s.alerted_since(horizon))
    }

    fn build(&self, key: &ActorKey, read: u64, sent: u64) -> Alert {
        let state = &self.actors[key];
        let mut files: HashMap<InodeKey, u64> = HashMap::new();
        let mut dests: HashMap<(Endpoint, DestClass), u64> = HashMap::new();
        let mut senders: HashMap<u32, u64> = HashMap::new();
        let mut pids: Vec<u32> = Vec::new();
        for b in &state.buckets {
            for (k, v) in &b.files {
                add_to(&mut files, *k, *v);
            }
            for (k, v) in &b.dests {
                add_to(&mut dests, *k, *v);
            }
            for (k, v) in &b.senders {
                add_to(&mut senders, *k, *v);
            }
            pids.extend(&b.pids);
        }
        pids.sort_unstable();
        pids.dedup();
        let mut top_files: Vec<(InodeKey, u64)> = files.into_iter().collect();
        top_files.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.ino.cmp(&b.0.ino)));
        top_files.truncate(10);
        let mut destinations: Vec<(Endpoint, DestClass, u64)> =
            dests.into_iter().map(|((e, c), b)| (e, c, b)).collect();
        destinations.sort_by(|a, b| {
            (b.1 == DestClass::Untrusted)
                .cmp(&(a.1 == DestClass::Untrusted))
                .then(b.2.cmp(&a.2))
                .then(a.0.cmp(&b.0))
        });
        destinations.truncate(10);
        let top_sender = senders
            .into_iter()
            .max_by_key(|(pid, bytes)| (*bytes, *pid))
            .map(|(pid, _)| pid);
        let container = top_sender
            .and_then(|pid| state.containers.get(&pid))
            .unwrap_or(&state.container)
            .clone();
        let process = top_sender
            .and_then(|pid| state.identities.get(&pid))
            .or_else(|| state.identities.values().next())
            .cloned()
            .unwrap_or(Identity {
                tgid: 0,
                ppid: 0,
                sid: 0,
                uid: 0,
                cgroup_id: 0,
                first_seen_ns: 0,
                comm: String::new(),
            });
        Alert {
            rule: RULE_READ_THEN_SEND,
            scope: key.scope(),
            process,
            container,
            flow: match key {
                ActorKey::Flow(f) => Some(*f),
                _ => None,
            },
            window_s: self.cfg.window.as_secs(),
            watched_read_bytes: read,
            sent_bytes: sent,
            top_files,
            destinations,
            pids,
        }
    }
}

/// Bytes a process sent to untrusted destinations.
fn untrusted_bytes(a: &Activity) -> u64 {
    a.sends
        .iter()
        .filter(|(_, c, _)| *c == DestClass::Untrusted)
        .fold(0u64, |s, (_, _, b)| s.saturating_add(*b))
}

/// The actors a process's activity counts for.
fn actor_keys(a: &Activity) -> Vec<ActorKey> {
    let id = &a.identity;
    let mut keys = vec![ActorKey::Process(id.tgid, id.first_seen_ns)];
    // Sessions 0 and 1 are "unknown" and init's catch-all, not a pipeline.
    if id.sid > 1 {
        keys.push(ActorKey::Session(id.sid));
    }
    if !a.container.is_empty() {
        keys.push(ActorKey::Container(a.container.clone()));
    }
    if let Some(flow) = a.flow {
        keys.push(ActorKey::Flow(flow));
    }
    keys
}

/// `map[key] += bytes`, saturating: counts fed from the kernel must not
/// overflow (a panic in debug builds, a wrap in release).
fn add_to<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u64>, key: K, bytes: u64) {
    let e = map.entry(key).or_default();
    *e = e.saturating_add(bytes);
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use super::*;

    const MIB: u64 = 1 << 20;

    fn cfg() -> DetectConfig {
        DetectConfig {
            window: Duration::from_secs(60),
            min_read_bytes: 64 * MIB,
            min_send_bytes: 32 * MIB,
            min_send_ratio: 0.5,
        }
    }

    fn id(tgid: u32, sid: u32) -> Identity {
        Identity {
            tgid,
            ppid: 1,
            sid,
            uid: 0,
            cgroup_id: 0,
            first_seen_ns: 1000 + tgid as u64,
            comm: format!("p{tgid}"),
        }
    }

    fn ep(last: u8) -> Endpoint {
        Endpoint::Ip(IpAddr::from([198, 18, 0, last]), 443)
    }

    fn act(tgid: u32, sid: u32, read: u64, sends: &[(u8, DestClass, u64)]) -> Activity {
        Activity {
            identity: id(tgid, sid),
            container: String::new(),
            watched_read: read,
            lineage_read: 0,
            flow: None,
            files: if read > 0 {
                vec![(
                    InodeKey {
                        dev: 1,
                        _pad: 0,
                        ino: 7,
                    },
                    read,
                )]
            } else {
                vec![]
            },
            sends: sends.iter().map(|(l, c, b)| (ep(*l), *c, *b)).collect(),
        }
    }

    use DestClass::{Loopback, Trusted, Untrusted};

    /// A flow member: weights taken in through a carrier.
    fn member(
        tgid: u32,
        sid: u32,
        flow: u64,
        took: u64,
        sends: &[(u8, DestClass, u64)],
    ) -> Activity {
        Activity {
            lineage_read: took,
            flow: Some(flow),
            ..act(tgid, sid, 0, sends)
        }
    }

    #[test]
    fn a_flow_alerts_for_a_sender_whose_weights_came_through_a_carrier() {
        let mut d = Detector::new(cfg());
        // The reader (session 100) copies; the sender (session 200) reads
        // the copy and sends it: neither process nor session read-and-sent.
        assert!(d.observe(100, &[act(10, 100, 100 * MIB, &[])]).is_empty());
        let alerts = d.observe(
            101,
            &[member(20, 200, 7, 100 * MIB, &[(2, Untrusted, 100 * MIB)])],
        );
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(
            (
                a.scope,
                a.process.tgid,
                a.flow,
                a.watched_read_bytes,
                a.sent_bytes
            ),
            (Scope::Flow, 20, Some(7), 100 * MIB, 100 * MIB)
        );
    }

    #[test]
    fn flow_members_that_send_little_of_what_they_took_neither_dilute_nor_add() {
        let mut d = Detector::new(cfg());
        let alerts = d.observe(
            100,
            &[
                member(20, 200, 7, 100 * MIB, &[(2, Untrusted, 100 * MIB)]),
                // A peer that received it all and acknowledges a byte.
                member(30, 300, 7, 100 * MIB, &[(3, Untrusted, 1)]),
                // A model server in the flow answering clients.
                member(40, 400, 7, 900 * MIB, &[(4, Untrusted, 10 * MIB)]),
            ],
        );
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            (alerts[0].watched_read_bytes, alerts[0].sent_bytes),
            (100 * MIB, 100 * MIB)
        );
    }

    #[test]
    fn a_flow_of_small_senders_adds_up() {
        let mut d = Detector::new(cfg());
        let mut alerts = Vec::new();
        // Five short-lived senders, 20 MiB each, each below the thresholds.
        for i in 0..5u32 {
            alerts.extend(d.observe(
                100 + i as u64,
                &[member(
                    20 + i,
                    200 + i,
                    7,
                    20 * MIB,
                    &[(2, Untrusted, 20 * MIB)],
                )],
            ));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].scope, Scope::Flow);
        assert!(alerts[0].watched_read_bytes >= 64 * MIB);
    }

    #[test]
    fn a_model_server_in_a_flow_stays_quiet() {
        let mut d = Detector::new(cfg());
        let alerts = d.observe(
            100,
            &[member(
                40,
                400,
                8,
                20 * 1024 * MIB,
                &[(4, Untrusted, 40 * MIB)],
            )],
        );
        assert!(alerts.is_empty(), "{alerts:?}");
    }

    #[test]
    fn a_flow_defers_to_a_process_alert_naming_its_sender() {
        let mut d = Detector::new(cfg());
        let mut a = member(20, 200, 7, 100 * MIB, &[(2, Untrusted, 100 * MIB)]);
        a.watched_read = 100 * MIB;
        let alerts = d.observe(100, &[a]);
        let scopes: Vec<Scope> = alerts.iter().map(|a| a.scope).collect();
        assert_eq!(scopes, vec![Scope::Process], "{alerts:?}");
    }

    #[test]
    fn one_process_read_then_send() {
        let mut d = Detector::new(cfg());
        assert!(
            d.observe(100, &[act(10, 10, 200 * MIB, &[])]).is_empty(),
            "reading alone is fine"
        );
        let alerts = d.observe(101, &[act(10, 10, 0, &[(2, Untrusted, 150 * MIB)])]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(
            (a.scope, a.process.tgid, a.watched_read_bytes, a.sent_bytes),
            (Scope::Process, 10, 200 * MIB, 150 * MIB)
        );
        assert_eq!(
            a.top_files,
            vec![(
                InodeKey {
                    dev: 1,
                    _pad: 0,
                    ino: 7
                },
                200 * MIB
            )]
        );
        assert_eq!(a.destinations, vec![(ep(2), Untrusted, 150 * MIB)]);
        assert_eq!(a.pids, vec![10]);
    }

    #[test]
    fn a_session_does_not_alert_again_after_its_alerted_process_exits() {
        let mut d = Detector::new(cfg());
        let a = d.observe(100, &[act(10, 50, 100 * MIB, &[(2, Untrusted, 60 * MIB)])]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].scope, Scope::Process);
        d.forget_exited([(10, 1010)]);
        // Another process of the session, moving nothing that matters.
        let b = d.observe(101, &[act(11, 50, 0, &[(3, Loopback, 10)])]);
        assert!(b.is_empty(), "{b:?}");
    }

    #[test]
    fn one_alert_per_window_then_escalation() {
        let mut d = Detector::new(cfg());
        assert_eq!(
            d.observe(100, &[act(10, 10, 100 * MIB, &[(2, Untrusted, 60 * MIB)])])
                .len(),
            1
        );
        // More bytes, but not double: quiet.
        assert!(d
            .observe(101, &[act(10, 10, 0, &[(2, Untrusted, 30 * MIB)])])
            .is_empty());
        // Doubled (60 -> 120): escalation with the new totals.
        let a = d.observe(102, &[act(10, 10, 0, &[(2, Untrusted, 30 * MIB)])]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].sent_bytes, 120 * MIB);
        // A new window: the same actor may alert again.
        assert!(d
            .observe(140, &[act(10, 10, 0, &[(2, Untrusted, MIB)])])
            .is_empty());
        let a = d.observe(200, &[act(10, 10, 100 * MIB, &[(2, Untrusted, 60 * MIB)])]);
        assert_eq!(a.len(), 1, "after the window passed");
    }

    #[test]
    fn pipeline_alerts_as_a_session_even_after_the_reader_exited() {
        let mut d = Detector::new(cfg());
        // tar reads and exits; gzip relays through a pipe; nc sends.
        assert!(d.observe(100, &[act(20, 20, 100 * MIB, &[])]).is_empty());
        assert!(d.observe(101, &[act(21, 20, 0, &[])]).is_empty());
        let a = d.observe(103, &[act(22, 20, 0, &[(2, Untrusted, 90 * MIB)])]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].scope, a[0].process.tgid), (Scope::Session, 22));
        assert_eq!(
            a[0].pids,
            vec![20, 22],
            "processes with bytes in the window"
        );
    }

    #[test]
    fn narrowest_scope_only() {
        let mut d = Detector::new(cfg());
        let mut a = act(30, 30, 100 * MIB, &[(2, Untrusted, 100 * MIB)]);
        a.container = "c0ffee".into();
        let alerts = d.observe(100, &[a]);
        assert_eq!(
            alerts.len(),
            1,
            "process alert only, not also session and container: {alerts:?}"
        );
        assert_eq!(alerts[0].scope, Scope::Process);
    }

    #[test]
    fn container_alerts_across_sessions() {
        let mut d = Detector::new(cfg());
        let mut reader = act(40, 40, 100 * MIB, &[]);
        let mut sender = act(41, 41, 0, &[(2, Untrusted, 80 * MIB)]);
        reader.container = "feed".into();
        sender.container = "feed".into();
        let alerts = d.observe(100, &[reader, sender]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            (alerts[0].scope, alerts[0].container.as_str()),
            (Scope::Container, "feed")
        );
    }

    #[test]
    fn benign_workloads_stay_silent() {
        let mut d = Detector::new(cfg());
        // A model server: loads 1 GiB, streams small responses.
        assert!(d
            .observe(100, &[act(50, 50, 1024 * MIB, &[(2, Untrusted, MIB)])])
            .is_empty());
        // A trainer: reads and sends the same volume, to a trusted network.
        assert!(d
            .observe(100, &[act(51, 51, 200 * MIB, &[(3, Trusted, 200 * MIB)])])
            .is_empty());
        // Loopback only.
        assert!(d
            .observe(100, &[act(52, 52, 200 * MIB, &[(4, Loopback, 200 * MIB)])])
            .is_empty());
        // Sends a lot, read no weights.
        assert!(d
            .observe(100, &[act(53, 53, 0, &[(5, Untrusted, 500 * MIB)])])
            .is_empty());
        // Ratio too low: 40 MiB out of 200 MiB read.
        assert!(d
            .observe(100, &[act(54, 54, 200 * MIB, &[(6, Untrusted, 40 * MIB)])])
            .is_empty());
        // Enough bytes, but the read fell out of the window before the send.
        assert!(d.observe(100, &[act(55, 55, 200 * MIB, &[])]).is_empty());
        assert!(d
            .observe(200, &[act(55, 55, 0, &[(7, Untrusted, 200 * MIB)])])
            .is_empty());
    }

    #[test]
    fn slow_exfil_within_the_window_alerts() {
        let mut d = Detector::new(cfg());
        assert!(d.observe(100, &[act(60, 60, 80 * MIB, &[])]).is_empty());
        for t in 0..5 {
            assert!(d
                .observe(110 + t * 5, &[act(60, 60, 0, &[(2, Untrusted, 7 * MIB)])])
                .is_empty());
        }
        let a = d.observe(140, &[act(60, 60, 0, &[(2, Untrusted, 7 * MIB)])]);
        assert_eq!(a.len(), 1, "42 MiB sent over 40 s of a 60 s window");
    }

    #[test]
    fn exited_processes_leave_only_their_session_behind() {
        let mut d = Detector::new(cfg());
        // 1,000 short-lived readers of weights in one session.
        let readers: Vec<Activity> = (0..1000u32).map(|t| act(2000 + t, 7, MIB, &[])).collect();
        assert!(d.observe(100, &readers).is_empty());
        assert_eq!(d.actors(), 1001);
        d.forget_exited(
            readers
                .iter()
                .map(|a| (a.identity.tgid, a.identity.first_seen_ns)),
        );
        assert_eq!(d.actors(), 1, "only the session actor");
        // The session still sees the reads: its sender alerts.
        let alerts = d.observe(101, &[act(9, 7, 0, &[(2, Untrusted, 600 * MIB)])]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].scope, Scope::Session);
    }

    #[test]
    fn actors_are_bounded() {
        let mut d = Detector::new(cfg()).with_max_actors(100);
        // 300 processes within one window.
        for t in 0..300u32 {
            d.observe(100 + u64::from(t / 10), &[act(1000 + t, 0, MIB, &[])]);
        }
        assert!(d.actors() <= 100, "{}", d.actors());
        assert!(d.evicted >= 200, "{}", d.evicted);
        assert!(
            d.actors.contains_key(&ActorKey::Process(1299, 1000 + 1299)),
            "the newest is kept"
        );
    }

    #[test]
    fn loopback_and_trusted_senders_cost_nothing() {
        let mut d = Detector::new(cfg());
        for round in 0..3u64 {
            let chatter: Vec<Activity> = (0..4000u32)
                .map(|t| act(5000 + t, 5000 + t, 0, &[(1, Loopback, 1), (3, Trusted, 1)]))
                .collect();
            assert!(d.observe(100 + round * 3, &chatter).is_empty());
            assert_eq!(d.actors(), 0, "round {round}");
        }
    }

    #[test]
    fn loopback_hops_still_add_detail_to_an_existing_actor() {
        let mut d = Detector::new(cfg());
        // The loopback hop comes first in the poll; the reader of its
        // session makes the actor.
        let hop = act(81, 80, 0, &[(9, Loopback, 5 * MIB)]);
        let reader = act(80, 80, 100 * MIB, &[]);
        assert!(d.observe(100, &[hop, reader]).is_empty());
        let a = d.observe(101, &[act(82, 80, 0, &[(2, Untrusted, 60 * MIB)])]);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].scope, Scope::Session);
        assert_eq!(a[0].pids, vec![80, 81, 82]);
        assert!(a[0].destinations.contains(&(ep(9), Loopback, 5 * MIB)));
        assert_eq!(
            d.actors(),
            3,
            "reader, sender and their session; not the hop"
        );
    }

    #[test]
    fn an_actor_is_dropped_once_only_chatter_is_left_in_its_window() {
        let mut d = Detector::new(cfg());
        d.observe(100, &[act(90, 90, MIB, &[])]);
        assert_eq!(d.actors(), 2);
        for t in (103..200).step_by(3) {
            d.observe(t, &[act(90, 90, 0, &[(1, Loopback, 1)])]);
        }
        assert_eq!(d.actors(), 0, "the read left the window");
    }

    #[test]
    fn destinations_are_capped_and_totals_stay_exact() {
        let mut d = Detector::new(cfg());
        assert!(d.observe(100, &[act(95, 95, 100 * MIB, &[])]).is_empty());
        // 32,768 untrusted destinations of 1 KiB each, one with 40 MiB,
        // and 1,000 loopback ones.
        let mut sends: Vec<(Endpoint, DestClass, u64)> = (0..32_768u32)
            .map(|i| {
                (
                    Endpoint::Ip(IpAddr::from([198, 19, (i >> 8) as u8, i as u8]), 9),
                    Untrusted,
                    1024,
                )
            })
            .collect();
        sends.push((ep(1), Untrusted, 40 * MIB));
        sends.extend((0..1000u16).map(|p| {
            (
                Endpoint::Ip(IpAddr::from([127, 0, 0, 1]), 1000 + p),
                Loopback,
                1,
            )
        }));
        let mut a = act(95, 95, 0, &[]);
        a.sends = sends;
        let alerts = d.observe(101, &[a]);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let al = &alerts[0];
        assert_eq!(al.sent_bytes, 32_768 * 1024 + 40 * MIB, "exact total");
        assert_eq!(al.destinations[0], (ep(1), Untrusted, 40 * MIB));
        assert!(al.destinations.len() <= 10);
        for s in d.actors.values() {
            for b in &s.buckets {
                assert!(
                    b.dests.len() <= 2 * MAX_DESTS_PER_BUCKET + 4,
                    "{}",
                    b.dests.len()
                );
                let untrusted: u64 = b
                    .dests
                    .iter()
                    .filter(|((_, c), _)| *c == Untrusted)
                    .map(|(_, v)| v)
                    .sum();
                assert_eq!(untrusted, b.untrusted_sent, "folded bytes still count");
                let loopback: u64 = b
                    .dests
                    .iter()
                    .filter(|((_, c), _)| *c == Loopback)
                    .map(|(_, v)| v)
                    .sum();
                assert_eq!(loopback, if b.untrusted_sent > 0 { 1000 } else { 0 });
            }
        }
    }

    #[test]
    fn idle_actors_are_forgotten() {
        let mut d = Detector::new(cfg());
        d.observe(100, &[act(70, 70, MIB, &[])]);
        assert_eq!(d.actors(), 2, "process and session");
        d.observe(1000, &[]);
        assert_eq!(d.actors(), 0);
    }
}
