//! A "remote" host: a network namespace joined to this one by a veth pair,
//! addressed from the benchmarking ranges (198.18.0.0/15, 2001:2::/48) on a
//! subnet allocated for it ([`Subnet::claim`]). Deleted on drop, also when
//! the test panics; the subnet is released after.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
};

use crate::scenario::Subnet;

const PREFIX: &str = "sensor-t";

pub struct Peer {
    pub ns: String,
    /// The host's end of the veth pair (raw frames sent there reach the peer).
    pub host_if: String,
    /// This host's end.
    pub host_ip: Ipv4Addr,
    /// The peer's IPv4 address, `.2` on its subnet.
    pub ip: Ipv4Addr,
    /// The peer's IPv6 address, `::2` on its subnet.
    pub ip6: Ipv6Addr,
    /// Held until the namespace is gone (fields drop after `Drop::drop`).
    pub subnet: Subnet,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Removes namespaces left by test processes that no longer exist.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

impl Peer {
    /// A peer on a subnet of its own, unique among all test processes
    /// running now.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Peer {
        static CLEAN: Once = Once::new();
        static N: AtomicU32 = AtomicU32::new(0);
        CLEAN.call_once(remove_stale);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = format!("{PREFIX}{pid}-{n}");
        let host_if = format!("sv{}x{n}", pid % 100_000);
        let peer_if = format!("{host_if}p");
        let subnet = Subnet::claim();
        let (host_ip, peer_ip) = (subnet.v4(1), subnet.v4(2));
        let (host_ip6, peer_ip6) = (subnet.v6(1), subnet.v6(2));
        let peer = Peer {
            ns: ns.clone(),
            host_if: host_if.clone(),
            host_ip,
            ip: peer_ip,
            ip6: peer_ip6,
            subnet,
        };
        // From here on, drop deletes the namespace (and the veth pair with it).
        let setup = || -> anyhow::Result<()> {
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ])?;
            ip(&["link", "set", &peer_if, "netns", &ns])?;
            ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if])?;
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{host_ip6}/64"),
                "dev",
                &host_if,
                "nodad",
            ])?;
            ip(&["link", "set", &host_if, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{peer_ip}/24"),
                "dev",
                &peer_if,
            ])?;
            ip(&[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("{peer_ip6}/64"),
                "dev",
                &peer_if,
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", &peer_if, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = ip(&["link", "del", &host_if]);
            panic!("creating network namespace {ns}: {e:#}");
        }
        peer
    }

    /// A command run inside the peer's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// The peer's IPv4 subnet, `a.b.c.0/24` (for `--trusted-cidr`).
    pub fn cidr4(&self) -> String {
        self.subnet.cidr4()
    }

    /// The peer's IPv6 subnet, `2001:2:0:N::/64`.
    pub fn cidr6(&self) -> String {
        self.subnet.cidr6()
    }

    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ip6.into()
        } else {
            self.ip.into()
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Deleting the namespace destroys the peer end, and so the pair.
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
