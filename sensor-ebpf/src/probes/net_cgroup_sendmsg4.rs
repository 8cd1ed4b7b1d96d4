//! Remembers the destination of each IPv4 datagram sent on an unconnected
//! UDP socket (`sendto`, `sendmsg`, `sendmmsg` with an address).
//!
//! Hook: `cgroup/sendmsg4` on the cgroup v2 root, run by `udp_sendmsg` for
//! unconnected sockets before the datagram goes out. Always allows the send.

use aya_ebpf::{
    helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use sensor_common::{Dest, AF_INET};

use crate::net::udp_dest;

#[cgroup_sock_addr(sendmsg4)]
pub fn net_cgroup_sendmsg4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context is the kernel's `struct bpf_sock_addr`.
    let (ip, port) = unsafe { ((*ctx.sock_addr).user_ip4, (*ctx.sock_addr).user_port) };
    let mut dest = Dest {
        family: AF_INET,
        port: u16::from_be(port as u16),
        _pad: 0,
        addr: [0; 16],
    };
    dest.addr[..4].copy_from_slice(&ip.to_ne_bytes());
    // SAFETY: a helper on this program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    udp_dest::park(cookie, dest);
    1
}
