//! What each process holds, and what it already took from each carrier.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
};
use sensor_common::{
    lineage::{Carrier, CarrierKey, Holding, Taken, TakenKey},
    maps, Count, InodeKey,
};

use crate::{
    file::watch,
    runtime::{atomic, loss},
};

#[map(name = "HOLDINGS")]
static HOLDINGS: LruHashMap<u32, Holding> = LruHashMap::with_max_entries(maps::HOLDINGS_SIZE, 0);

#[map(name = "TAKEN")]
static TAKEN: LruHashMap<TakenKey, Taken> = LruHashMap::with_max_entries(maps::TAKEN_SIZE, 0);

/// `Holding::_pad` of a process whose last thread exited: its holding
/// stays (a chain still names it) but a new process reusing the tgid does
/// not inherit it.
const EXITED: u32 = 1;

/// The holding of `tgid` while it is alive and holds something.
#[inline(always)]
pub fn of(tgid: u32) -> Option<Holding> {
    // SAFETY: a plain value copied out at once.
    let h = unsafe { HOLDINGS.get(tgid) }.copied()?;
    (h._pad != EXITED && h.bytes > 0).then_some(h)
}

/// The current process `tgid` read `bytes` from `src`, which holds `cap`
/// bytes of weights: a watched file (`from` is `None`) or a carrier.
/// Returns the bytes of weights it took in (each byte of `src` once).
#[inline(always)]
pub fn take(tgid: u32, src: CarrierKey, bytes: u64, cap: u64, from: Option<&Carrier>) -> u64 {
    if cap == 0 || bytes == 0 {
        return 0;
    }
    let key = TakenKey {
        tgid,
        _pad: 0,
        carrier: src,
    };
    let epoch = watch::epoch();
    let gain = match TAKEN.get_ptr_mut(&key) {
        Some(taken) => {
            // SAFETY: a map value; concurrent readers of one carrier by
            // threads of one process may both take a little: harmless.
            unsafe {
                if (*taken).epoch != epoch {
                    // A new window: its bytes count again.
                    (*taken).epoch = epoch;
                    (*taken).bytes = 0;
                }
                let already = (*taken).bytes;
                if already >= cap {
                    return 0;
                }
                let gain = bytes.min(cap - already);
                atomic::add(&raw mut (*taken).bytes, gain);
                gain
            }
        }
        None => {
            let gain = bytes.min(cap);
            let taken = Taken { bytes: gain, epoch };
            if TAKEN.insert(&key, &taken, BPF_NOEXIST as u64).is_ok() {
                loss::count(Count::TakenMade);
            }
            gain
        }
    };
    hold(tgid, src, gain, from);
    gain
}

#[inline(always)]
fn hold(tgid: u32, src: CarrierKey, gain: u64, from: Option<&Carrier>) {
    if let Some(h) = HOLDINGS.get_ptr_mut(&tgid) {
        // SAFETY: a map value of this process; see `take` on races.
        unsafe {
            if (*h)._pad != EXITED {
                atomic::add(&raw mut (*h).bytes, gain);
                if (*h).src == src {
                    atomic::add(&raw mut (*h).src_bytes, gain);
                }
                return;
            }
        }
    }
    let (flow, origin, src_writer) = match from {
        Some(c) => (c.flow, c.origin, c.writer),
        None => (
            // A new flow: unique enough, a clock in nanoseconds and the tgid.
            // SAFETY: a helper without preconditions.
            unsafe { bpf_ktime_get_ns() } ^ ((tgid as u64) << 40),
            InodeKey {
                dev: src.dev,
                _pad: 0,
                ino: src.id,
            },
            0,
        ),
    };
    let h = Holding {
        bytes: gain,
        flow,
        origin,
        src,
        src_bytes: gain,
        src_writer,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    if HOLDINGS.insert(&tgid, &h, BPF_NOEXIST as u64).is_ok() {
        loss::count(Count::HoldingsMade);
    } else {
        // The holding of an exited process with this tgid (or a racing
        // thread's): replaced.
        let _ = HOLDINGS.insert(&tgid, &h, 0);
    }
}

/// After the last thread of `tgid` exited.
#[inline(always)]
pub fn exited(tgid: u32) {
    if let Some(h) = HOLDINGS.get_ptr_mut(&tgid) {
        // SAFETY: a map value; a racing reader sees either state.
        unsafe { (*h)._pad = EXITED };
    }
}
