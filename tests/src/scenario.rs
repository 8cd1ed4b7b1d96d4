//! Tests as scenarios, after pulsar's `TestRunner`: start the agent with
//! what the scenario needs, run a workload, expect an alert (or silence)
//! with a deadline:
//!
//! ```ignore
//! let s = Scenario::new().watch(dir).thresholds(&SCALED_THRESHOLDS).untrusted_peer().start();
//! let r = s.run(Workload::read_send(&weights).as_comm("dt-tcp").to(To::untrusted()));
//! s.expect_alert(Rule::ReadThenSend, "one process").scope("process").naming_pid(r.pid())
//!     .within(Duration::from_secs(15));
//! ```
//!
//! Nothing is hand-picked: namespace peers get a subnet from [`Subnet::claim`]
//! (unique across test processes running side by side) and sinks listen on
//! port 0 in the peer's namespace and say which port they got. The ground
//! truth is the workload's own report ([`Ran`]), never the agent's.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::Value;

use crate::{
    agent::Agent,
    netns::Peer,
    workload::{self, Sink},
};

/// Where the subnet locks live (root only, like the tests).
const LOCK_DIR: &str = "/run/sensor-tests";
/// 198.18.0.0/15 as 512 /24s: 198.18.0–255 then 198.19.0–255.
const SUBNETS: u16 = 512;
/// Subnets used by something other than these tests: 198.18.250 is
/// `cargo xtask bench`'s.
const RESERVED: &[u16] = &[250];

/// A /24 of 198.18.0.0/15 (and the /64 of 2001:2::/48 with the same
/// number), held by this process until dropped. The hold is an `flock` on
/// `/run/sensor-tests/subnet-N`: exclusive between processes and between
/// two claims in one process, released by the kernel if the test is killed.
pub struct Subnet {
    index: u16,
    _lock: File,
}

impl Subnet {
    /// The first free subnet, searching from a place that depends on the
    /// process and the claims it made, so side-by-side runs rarely contend.
    pub fn claim() -> Subnet {
        static CLAIMS: AtomicU32 = AtomicU32::new(0);
        std::fs::create_dir_all(LOCK_DIR).unwrap_or_else(|e| panic!("creating {LOCK_DIR}: {e}"));
        let claim = CLAIMS.fetch_add(1, Ordering::Relaxed);
        let start =
            (std::process::id().wrapping_mul(37).wrapping_add(claim) % u32::from(SUBNETS)) as u16;
        for k in 0..SUBNETS {
            let index = (start + k) % SUBNETS;
            if RESERVED.contains(&index) {
                continue;
            }
            let path = format!("{LOCK_DIR}/subnet-{index}");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("opening {path}: {e}"));
            // SAFETY: flock(2) on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Subnet { index, _lock: file };
            }
        }
        panic!("all {SUBNETS} test subnets are taken (see {LOCK_DIR})");
    }

    /// `198.(18|19).N.host`.
    pub fn v4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18 + (self.index / 256) as u8, self.index as u8, host)
    }

    /// `2001:2:0:N::host` (N in hex, below 0x200).
    pub fn v6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 2, 0, self.index, 0, 0, 0, host)
    }

    pub fn cidr4(&self) -> String {
        format!("{}/24", self.v4(0))
    }

    pub fn cidr6(&self) -> String {
        format!("{}/64", self.v6(0))
    }
}

/// The agent's configuration for a scenario; [`Scenario::start`] makes the
/// peers it asked for and starts the agent.
#[derive(Default)]
pub struct Scenario {
    args: Vec<String>,
    untrusted: bool,
    trusted: bool,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// `--watch DIR`.
    pub fn watch(self, dir: &Path) -> Scenario {
        self.arg("--watch", dir.to_str().expect("UTF-8 path"))
    }

    /// Detection thresholds, e.g. [`crate::SCALED_THRESHOLDS`].
    pub fn thresholds(self, flags: &[&str]) -> Scenario {
        self.args(flags)
    }

    pub fn arg(self, flag: &str, value: &str) -> Scenario {
        self.args(&[flag, value])
    }

    pub fn args(mut self, args: &[&str]) -> Scenario {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A namespace peer outside every trusted CIDR ([`To::untrusted`]).
    pub fn untrusted_peer(mut self) -> Scenario {
        self.untrusted = true;
        self
    }

    /// A namespace peer whose IPv4 and IPv6 subnets are passed as
    /// `--trusted-cidr` ([`To::trusted`]).
    pub fn trusted_peer(mut self) -> Scenario {
        self.trusted = true;
        self
    }

    pub fn start(self) -> Scene {
        let untrusted = self.untrusted.then(Peer::new);
        let trusted = self.trusted.then(Peer::new);
        let mut args = self.args;
        if let Some(t) = &trusted {
            args.extend(["--trusted-cidr".into(), t.cidr4()]);
            args.extend(["--trusted-cidr".into(), t.cidr6()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start(&args);
        Scene {
            agent,
            untrusted,
            trusted,
        }
    }
}

/// A started scenario: the agent and its peers.
pub struct Scene {
    pub agent: Agent,
    untrusted: Option<Peer>,
    trusted: Option<Peer>,
}

/// Alert rules, as the agent names them.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    ReadThenSend,
    SensorBlind,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::ReadThenSend => "read_then_send",
            Rule::SensorBlind => "sensor_blind",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Role {
    Untrusted,
    Trusted,
    Loopback,
}

/// Where a workload sends: a sink started for the run, on port 0 of the
/// scene's peer (or of loopback), its address passed as `--to` (or `flag`).
#[derive(Clone, Debug)]
pub struct To {
    role: Role,
    udp: bool,
    v6: bool,
    conns: u64,
    flag: &'static str,
}

impl To {
    fn role(role: Role) -> To {
        To {
            role,
            udp: false,
            v6: false,
            conns: 1,
            flag: "--to",
        }
    }

    pub fn untrusted() -> To {
        To::role(Role::Untrusted)
    }

    pub fn trusted() -> To {
        To::role(Role::Trusted)
    }

    /// 127.0.0.1, in this namespace.
    pub fn loopback() -> To {
        To::role(Role::Loopback)
    }

    /// A `udp-sink` instead of a `tcp-sink`.
    pub fn udp(mut self) -> To {
        self.udp = true;
        self
    }

    /// The peer's IPv6 address.
    pub fn v6(mut self) -> To {
        self.v6 = true;
        self
    }

    /// The sink accepts `n` connections.
    pub fn conns(mut self, n: u64) -> To {
        self.conns = n;
        self
    }

    /// The option the address is passed as (`--to` unless told).
    pub fn flag(mut self, flag: &'static str) -> To {
        self.flag = flag;
        self
    }
}

/// A `sensor-workload` run: a subcommand, its options, the command name the
/// kernel sees, and where it sends.
#[derive(Clone, Debug)]
pub struct Workload {
    comm: String,
    args: Vec<String>,
    to: Vec<To>,
}

impl Workload {
    /// `sensor-workload SUBCOMMAND`.
    pub fn new(subcommand: &str) -> Workload {
        Workload {
            comm: String::new(),
            args: vec![subcommand.to_string()],
            to: Vec::new(),
        }
    }

    /// `read-send --file FILE`: read it whole, send what was read.
    pub fn read_send(file: &Path) -> Workload {
        Workload::new("read-send").arg("--file", file.to_str().expect("UTF-8 path"))
    }

    /// `tcp-send --api API --file FILE` (`sendfile`, `splice`).
    pub fn send_file(api: &str, file: &Path) -> Workload {
        Workload::new("tcp-send")
            .arg("--api", api)
            .arg("--file", file.to_str().expect("UTF-8 path"))
    }

    /// `mmap-send --file FILE`: map it, send from the mapping.
    pub fn mmap_send(file: &Path) -> Workload {
        Workload::new("mmap-send").arg("--file", file.to_str().expect("UTF-8 path"))
    }

    /// The command name (at most 15 characters, one run per name).
    pub fn as_comm(mut self, comm: &str) -> Workload {
        self.comm = comm.to_string();
        self
    }

    pub fn arg(mut self, flag: &str, value: &str) -> Workload {
        self.args.extend([flag.to_string(), value.to_string()]);
        self
    }

    pub fn to(mut self, to: To) -> Workload {
        self.to.push(to);
        self
    }
}

/// A finished run: the workload's own report and what each sink received.
#[derive(Debug)]
pub struct Ran {
    pub report: Value,
    /// Bytes each sink received, in the order of [`Workload::to`].
    pub received: Vec<u64>,
    /// Each sink's address, same order.
    pub addrs: Vec<String>,
}

impl Ran {
    /// A number from the report; panics if it has none.
    pub fn u(&self, key: &str) -> u64 {
        self.report[key]
            .as_u64()
            .unwrap_or_else(|| panic!("workload report has no {key}: {}", self.report))
    }

    pub fn pid(&self) -> u64 {
        self.u("pid")
    }

    /// What the first sink received.
    pub fn received(&self) -> u64 {
        self.received[0]
    }

    /// The port the first sink listened on.
    pub fn port(&self) -> u16 {
        self.addrs[0]
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("sink address {} has no port", self.addrs[0]))
    }
}

impl Scene {
    /// The untrusted peer ([`Scenario::untrusted_peer`]).
    pub fn untrusted(&self) -> &Peer {
        self.untrusted
            .as_ref()
            .expect("no untrusted_peer() in this scenario")
    }

    /// The trusted peer ([`Scenario::trusted_peer`]).
    pub fn trusted(&self) -> &Peer {
        self.trusted
            .as_ref()
            .expect("no trusted_peer() in this scenario")
    }

    /// Starts a sink for `to`; its address is `sink.addr()`.
    pub fn sink(&self, to: &To) -> Sink {
        let prog = workload::program("sc-sink");
        let (mut cmd, host) = match to.role {
            Role::Loopback => (Command::new(prog), IpAddr::from(Ipv4Addr::LOCALHOST)),
            Role::Untrusted | Role::Trusted => {
                let peer = if to.role == Role::Untrusted {
                    self.untrusted()
                } else {
                    self.trusted()
                };
                (peer.command(prog), peer.addr(to.v6))
            }
        };
        let listen = match host {
            IpAddr::V4(ip) => format!("{ip}:0"),
            IpAddr::V6(ip) => format!("[{ip}]:0"),
        };
        let kind = if to.udp { "udp-sink" } else { "tcp-sink" };
        cmd.args([kind, "--listen", &listen, "--conns", &to.conns.to_string()]);
        Sink::start(cmd)
    }

    /// Starts the workload's sinks, runs it to completion with their
    /// addresses, and waits for the sinks' counts.
    pub fn run(&self, w: Workload) -> Ran {
        assert!(!w.comm.is_empty(), "give the workload a comm: as_comm()");
        let sinks: Vec<Sink> = w.to.iter().map(|t| self.sink(t)).collect();
        let addrs: Vec<String> = sinks.iter().map(|s| s.addr().to_string()).collect();
        let mut args = w.args.clone();
        for (t, addr) in w.to.iter().zip(&addrs) {
            args.extend([t.flag.to_string(), addr.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = workload::report(&w.comm, &args);
        let received = sinks.into_iter().map(Sink::finish).collect();
        Ran {
            report,
            received,
            addrs,
        }
    }

    /// An alert of `rule` to wait for (`what` names it in messages).
    pub fn expect_alert(&self, rule: Rule, what: &str) -> ExpectAlert<'_> {
        ExpectAlert {
            agent: &self.agent,
            rule,
            what: what.to_string(),
            comm: None,
            pid: None,
            scope: None,
            severity: None,
            dest: None,
            since_ms: None,
        }
    }

    /// No alert may name the given processes (`what` names the case).
    pub fn expect_silence(&self, what: &str) -> ExpectSilence<'_> {
        ExpectSilence {
            agent: &self.agent,
            what: what.to_string(),
            counted: None,
            pids: Vec::new(),
        }
    }
}

/// An expected alert. It is picked by `comm` (and rule) when given, else by
/// `pid` (among the alert's `pids`), else by rule (and severity);
/// everything else is asserted on the alert picked. [`ExpectAlert::within`] waits and checks.
pub struct ExpectAlert<'a> {
    agent: &'a Agent,
    rule: Rule,
    what: String,
    comm: Option<String>,
    pid: Option<u64>,
    scope: Option<String>,
    severity: Option<String>,
    dest: Option<(String, String)>,
    since_ms: Option<u64>,
}

fn pids(a: &Value) -> Vec<u64> {
    a["pids"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

impl ExpectAlert<'_> {
    /// The alert about command `comm` (of this rule).
    pub fn from_comm(mut self, comm: &str) -> Self {
        self.comm = Some(comm.to_string());
        self
    }

    /// The alert lists `pid` in `pids` and names it as `pid`.
    pub fn naming_pid(mut self, pid: u64) -> Self {
        self.pid = Some(pid);
        self
    }

    /// `process`, `session` or `container`.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.to_string());
        self
    }

    pub fn severity(mut self, severity: &str) -> Self {
        self.severity = Some(severity.to_string());
        self
    }

    /// The first destination listed is `addr`, of `class`.
    pub fn first_destination(mut self, addr: IpAddr, class: &str) -> Self {
        self.dest = Some((addr.to_string(), class.to_string()));
        self
    }

    /// Print the detection latency: arrival minus `ms` (the workload's
    /// clock, unix ms, e.g. its `crossed_ms`).
    pub fn latency_from(mut self, ms: u64) -> Self {
        self.since_ms = Some(ms);
        self
    }

    /// Waits up to `timeout` for the alert, checks it, and returns it.
    pub fn within(self, timeout: Duration) -> Value {
        let what = &self.what;
        let rule = self.rule.as_str();
        let (at, a) = self
            .agent
            .wait_for_alert(timeout, what, |a| match (&self.comm, self.pid) {
                (Some(c), _) => a["rule"] == rule && a["comm"] == c.as_str(),
                (None, Some(pid)) => pids(a).contains(&pid),
                (None, None) => {
                    a["rule"] == rule
                        && self
                            .severity
                            .as_ref()
                            .is_none_or(|s| a["severity"] == s.as_str())
                }
            });
        assert_eq!(a["rule"], rule, "{what}: {a}");
        if let Some(pid) = self.pid {
            assert_eq!(a["pid"], pid, "{what}: the alert names the sender: {a}");
            assert!(pids(&a).contains(&pid), "{what}: {a}");
        }
        if let Some(scope) = &self.scope {
            assert_eq!(a["scope"], scope.as_str(), "{what}: {a}");
        }
        if let Some(severity) = &self.severity {
            assert_eq!(a["severity"], severity.as_str(), "{what}: {a}");
        }
        if let Some((addr, class)) = &self.dest {
            let d0 = &a["destinations"][0];
            assert_eq!(
                (d0["addr"].as_str(), d0["class"].as_str()),
                (Some(addr.as_str()), Some(class.as_str())),
                "{what}: {a}"
            );
        }
        if let Some(since) = self.since_ms {
            eprintln!(
                "LATENCY {what}: {} ms (scope {})",
                at.saturating_sub(since),
                a["scope"].as_str().unwrap_or("-")
            );
        }
        a
    }
}

/// Expected silence: once the agent has counted a command's bytes, no alert
/// may name the given processes.
pub struct ExpectSilence<'a> {
    agent: &'a Agent,
    what: String,
    counted: Option<String>,
    pids: Vec<u64>,
}

impl ExpectSilence<'_> {
    /// First wait (10 s at most) until the agent has counted bytes read or
    /// sent by `comm`.
    pub fn once_counted(mut self, comm: &str) -> Self {
        self.counted = Some(comm.to_string());
        self
    }

    pub fn for_pids(mut self, pids: &[u64]) -> Self {
        self.pids.extend_from_slice(pids);
        self
    }

    /// Waits `quiet` more (e.g. a few polls), then checks.
    pub fn after(self, quiet: Duration) {
        let what = &self.what;
        if let Some(comm) = &self.counted {
            self.agent.wait_for(Duration::from_secs(10), what, |m| {
                m.sum("sensor_file_read_bytes_total", &[("comm", comm)])
                    + m.sum("sensor_socket_send_bytes_total", &[("comm", comm)])
                    > 0
            });
        }
        std::thread::sleep(quiet);
        let noisy: Vec<Value> = self
            .agent
            .alerts()
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| pids(a).iter().any(|p| self.pids.contains(p)))
            .collect();
        assert!(
            noisy.is_empty(),
            "{what}: benign workload alerted: {noisy:?}"
        );
        eprintln!("SILENT {what}");
    }
}
