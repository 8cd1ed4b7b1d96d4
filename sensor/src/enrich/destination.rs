//! Where sent bytes went: the classes of the `destination` label.

use ipnet::IpNet;

use crate::collect::endpoint::Endpoint;

/// The `destination` label of `sensor_socket_send_bytes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DestClass {
    Loopback,
    /// UNIX-domain sockets: stays on the host.
    Local,
    Trusted,
    Untrusted,
}

impl DestClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Local => "local",
            Self::Trusted => "trusted",
            Self::Untrusted => "untrusted",
        }
    }
}

/// Classifies endpoints against the trusted networks.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    trusted: Vec<IpNet>,
}

impl Classifier {
    pub fn new(trusted: Vec<IpNet>) -> Self {
        Self { trusted }
    }

    /// Loopback is always trusted and reported apart; an endpoint whose
    /// address the kernel did not know is untrusted (nothing proves it is not).
    pub fn classify(&self, endpoint: &Endpoint) -> DestClass {
        match endpoint {
            Endpoint::Unix => DestClass::Local,
            // Netlink talks to this host's kernel; any other family (raw
            // packets, VSOCK to a hypervisor…) may leave: untrusted.
            Endpoint::Family(crate::collect::endpoint::AF_NETLINK) => DestClass::Local,
            Endpoint::Family(_) => DestClass::Untrusted,
            Endpoint::Unknown | Endpoint::Other => DestClass::Untrusted,
            Endpoint::Ip(ip, _) if ip.is_loopback() => DestClass::Loopback,
            Endpoint::Ip(ip, _) if self.trusted.iter().any(|net| net.contains(ip)) => {
                DestClass::Trusted
            }
            Endpoint::Ip(..) => DestClass::Untrusted,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use sensor_common::{AF_INET, AF_INET6, AF_UNIX};

    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&a);
        addr
    }

    fn classifier() -> Classifier {
        Classifier::new(vec![
            "198.18.1.0/24".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    #[test]
    fn classifies_each_kind() {
        let c = classifier();
        let e = |fam, addr| Endpoint::from_kernel(fam, addr, 443).unwrap();
        assert_eq!(
            c.classify(&e(AF_INET, v4([127, 0, 0, 1]))),
            DestClass::Loopback
        );
        assert_eq!(
            c.classify(&e(AF_INET, v4([127, 9, 9, 9]))),
            DestClass::Loopback
        );
        assert_eq!(
            c.classify(&e(AF_INET, v4([198, 18, 1, 7]))),
            DestClass::Trusted
        );
        assert_eq!(
            c.classify(&e(AF_INET, v4([198, 18, 0, 2]))),
            DestClass::Untrusted
        );
        assert_eq!(
            c.classify(&e(AF_INET, v4([0, 0, 0, 0]))),
            DestClass::Untrusted
        );
        assert_eq!(c.classify(&e(AF_UNIX, [0; 16])), DestClass::Local);
        let v6_loop = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(c.classify(&e(AF_INET6, v6_loop)), DestClass::Loopback);
        let v6_trusted: Ipv6Addr = "fd00::5".parse().unwrap();
        assert_eq!(
            c.classify(&e(AF_INET6, v6_trusted.octets())),
            DestClass::Trusted
        );
        let v6_other: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            c.classify(&e(AF_INET6, v6_other.octets())),
            DestClass::Untrusted
        );
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let mapped: Ipv6Addr = "::ffff:198.18.1.9".parse().unwrap();
        let e = Endpoint::from_kernel(AF_INET6, mapped.octets(), 80).unwrap();
        assert_eq!(e, Endpoint::Ip("198.18.1.9".parse().unwrap(), 80));
        assert_eq!(classifier().classify(&e), DestClass::Trusted);
        let mapped_loop: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
        let e = Endpoint::from_kernel(AF_INET6, mapped_loop.octets(), 80).unwrap();
        assert_eq!(classifier().classify(&e), DestClass::Loopback);
    }

    #[test]
    fn other_families_are_counted_and_judged() {
        let c = Classifier::new(vec![]);
        let netlink = Endpoint::from_kernel(16, [0; 16], 0).unwrap();
        assert_eq!(netlink, Endpoint::Family(16));
        assert_eq!(c.classify(&netlink), DestClass::Local, "the host's kernel");
        let packet = Endpoint::from_kernel(17, [0; 16], 0).unwrap();
        assert_eq!(
            c.classify(&packet),
            DestClass::Untrusted,
            "raw frames leave"
        );
        assert_eq!(packet.to_string(), "packet");
    }
}
