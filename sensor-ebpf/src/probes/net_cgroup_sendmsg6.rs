//! Remembers the destination of each IPv6 datagram sent on an unconnected
//! UDP socket (see `net_cgroup_sendmsg4`).
//!
//! Hook: `cgroup/sendmsg6` on the cgroup v2 root. Always allows the send.

use aya_ebpf::{
    helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use sensor_common::{Dest, AF_INET6};

use crate::net::udp_dest;

#[cgroup_sock_addr(sendmsg6)]
pub fn net_cgroup_sendmsg6(ctx: SockAddrContext) -> i32 {
    // SAFETY: the context is the kernel's `struct bpf_sock_addr`; the verifier
    // allows 4-byte reads of `user_ip6`.
    let (ip6, port) = unsafe { ((*ctx.sock_addr).user_ip6, (*ctx.sock_addr).user_port) };
    let mut dest = Dest {
        family: AF_INET6,
        port: u16::from_be(port as u16),
        _pad: 0,
        addr: [0; 16],
    };
    for (chunk, word) in dest.addr.chunks_exact_mut(4).zip(ip6) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    // SAFETY: a helper on this program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    udp_dest::park(cookie, dest);
    1
}
