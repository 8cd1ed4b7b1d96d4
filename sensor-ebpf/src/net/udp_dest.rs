//! Destinations of unconnected UDP sends. The socket of a `sendto` on an
//! unconnected UDP socket has no remote address; the cgroup `sendmsg` hooks
//! see the address the caller passed and park it here, by socket cookie,
//! for `sock_send_length` to pick up when the send completes.

use aya_ebpf::{macros::map, maps::LruHashMap};
use sensor_common::{maps, Dest};

#[map(name = "PENDING_DEST")]
static PENDING_DEST: LruHashMap<u64, Dest> =
    LruHashMap::with_max_entries(maps::PENDING_DEST_SIZE, 0);

#[inline(always)]
pub fn park(cookie: u64, dest: Dest) {
    // A full LRU drops the oldest socket's entry, not this one.
    let _ = PENDING_DEST.insert(cookie, dest, 0);
}

#[inline(always)]
pub fn take(cookie: u64) -> Option<Dest> {
    // SAFETY: a plain value copied out at once.
    unsafe { PENDING_DEST.get(cookie) }.copied()
}
