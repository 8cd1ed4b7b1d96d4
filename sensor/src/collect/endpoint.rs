//! Where sent bytes went, as the kernel reported it: an address and port,
//! a UNIX socket, or unknown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sensor_common::{AF_INET, AF_INET6, AF_UNIX, FAMILY_OVERFLOW};

/// A remote endpoint as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// IPv4 or IPv6 address and port; IPv4-mapped IPv6 addresses are IPv4.
    Ip(IpAddr, u16),
    /// A socket without a remote address (e.g. unconnected UDP).
    Unknown,
    Unix,
    /// A socket of another family (`AF_PACKET` raw frames, VSOCK, XDP,
    /// netlink…), by its family number: no address the sensor can judge.
    Family(u16),
    /// Destinations an alert folded together past its per-actor cap (their
    /// bytes still count).
    Other,
}

/// `AF_NETLINK`: the kernel on this host.
pub const AF_NETLINK: u16 = 16;

/// A family's name as the alerts and `sensor tail` show it.
fn family_name(family: u16) -> String {
    match family {
        AF_NETLINK => "netlink".into(),
        17 => "packet".into(),
        40 => "vsock".into(),
        44 => "xdp".into(),
        n => format!("af{n}"),
    }
}

impl Endpoint {
    /// Address and port as an alert shows them.
    pub fn addr_port(&self) -> (String, u16) {
        match self {
            Self::Ip(ip, port) => (ip.to_string(), *port),
            Self::Unknown => ("unknown".into(), 0),
            Self::Unix => ("unix".into(), 0),
            Self::Family(f) => (family_name(*f), 0),
            Self::Other => ("other".into(), 0),
        }
    }

    /// Decodes `SendKey`'s family, network-order address and host-order port.
    pub fn from_kernel(family: u16, addr: [u8; 16], port: u16) -> Option<Self> {
        match family {
            AF_UNIX => Some(Self::Unix),
            // Sends the full per-destination map had no room for.
            FAMILY_OVERFLOW => Some(Self::Unknown),
            AF_INET => {
                let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                Some(if ip.is_unspecified() {
                    Self::Unknown
                } else {
                    Self::Ip(ip.into(), port)
                })
            }
            AF_INET6 => {
                let ip = Ipv6Addr::from(addr);
                if ip.is_unspecified() {
                    Some(Self::Unknown)
                } else {
                    Some(Self::Ip(ip.to_canonical(), port))
                }
            }
            // Counted whatever the family (raw packets leave the host too).
            other => Some(Self::Family(other)),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(IpAddr::V4(ip), port) => write!(f, "{ip}:{port}"),
            Self::Ip(IpAddr::V6(ip), port) => write!(f, "[{ip}]:{port}"),
            Self::Unknown => f.write_str("unknown"),
            Self::Unix => f.write_str("unix"),
            Self::Family(n) => f.write_str(&family_name(*n)),
            Self::Other => f.write_str("other"),
        }
    }
}
