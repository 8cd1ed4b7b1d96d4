//! What each process holds, and what it already took from each carrier.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use sensor_common::{
    lineage::{
        Carrier, CarrierKey, Holding, Taken, TakenKey, HOLDING_EXITED, HOLDING_WROTE, VIA_READ,
    },
    maps, Count, InodeKey,
};

use super::path;
use crate::{
    file::watch,
    runtime::{atomic, loss},
};

#[map(name = "HOLDINGS")]
static HOLDINGS: LruHashMap<u32, Holding> = LruHashMap::with_max_entries(maps::HOLDINGS_SIZE, 0);

/// Room to build a new `Holding` (the BPF stack is 512 bytes).
#[map(name = "HOLD_SCRATCH")]
static HOLD_SCRATCH: PerCpuArray<Holding> =
    PerCpuArray::with_max_entries(maps::HOLD_SCRATCH_SIZE, 0);

/// What a writer's holding passes on to a carrier.
#[derive(Clone, Copy)]
pub struct Held {
    pub bytes: u64,
    pub flow: u64,
    pub origin: InodeKey,
    pub comm: [u8; 16],
}

#[map(name = "TAKEN")]
static TAKEN: LruHashMap<TakenKey, Taken> = LruHashMap::with_max_entries(maps::TAKEN_SIZE, 0);

/// The holding of `tgid` while it is alive and holds something.
#[inline(always)]
pub fn of(tgid: u32) -> Option<Held> {
    // SAFETY: fields copied out at once.
    let h = unsafe { HOLDINGS.get(tgid) }?;
    (h.flags & HOLDING_EXITED == 0 && h.bytes > 0).then_some(Held {
        bytes: h.bytes,
        flow: h.flow,
        origin: h.origin,
        comm: h.comm,
    })
}

/// `tgid` wrote or sent weights into a carrier: its holding is kept after
/// it exits (a chain through the carrier names it).
#[inline(always)]
pub fn wrote(tgid: u32) {
    if let Some(h) = HOLDINGS.get_ptr_mut(tgid) {
        // SAFETY: a map value; a racing writer sets the same bit.
        unsafe { (*h).flags |= HOLDING_WROTE };
    }
}

/// The current process `tgid` read `bytes` from `src`, which holds `cap`
/// bytes of weights: a watched file (`from` is `None`; `dentry` names it
/// for the alert) or a carrier. Returns the bytes of weights it took in
/// (each byte of `src` once per epoch).
#[inline(always)]
pub fn take(
    tgid: u32,
    src: CarrierKey,
    bytes: u64,
    cap: u64,
    from: Option<&Carrier>,
    dentry: Option<*const u8>,
) -> u64 {
    if cap == 0 || bytes == 0 {
        return 0;
    }
    let key = TakenKey {
        tgid,
        _pad: 0,
        carrier: src,
    };
    let epoch = watch::epoch();
    let gain = match TAKEN.get_ptr_mut(key) {
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
            if TAKEN.insert(key, taken, BPF_NOEXIST as u64).is_ok() {
                loss::count(Count::TakenMade);
                // A watched file first read by this process: its path, for
                // the alert, while the kernel still knows it by name.
                if let Some(d) = dentry {
                    if src.via == VIA_READ {
                        path::record_once(&src, d);
                    }
                }
            }
            gain
        }
    };
    hold(tgid, src, gain, from);
    gain
}

// `&*h`: the scratch slot by reference; by value it would be copied onto
// the 512-byte stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
fn hold(tgid: u32, src: CarrierKey, gain: u64, from: Option<&Carrier>) {
    let writer = from.map_or(0, |c| c.writer);
    if let Some(h) = HOLDINGS.get_ptr_mut(tgid) {
        // SAFETY: a map value of this process; see `take` on races.
        let h = unsafe { &mut *h };
        if h.flags & HOLDING_EXITED == 0 {
            atomic::add(&raw mut h.bytes, gain);
            if h.src == src {
                atomic::add(&raw mut h.src_bytes, gain);
                return;
            }
            if h.alt == src {
                atomic::add(&raw mut h.alt_bytes, gain);
            } else if h.alt_bytes < gain {
                h.alt = src;
                h.alt_bytes = gain;
                h.alt_writer = writer;
            }
            if h.alt == src && h.alt_bytes > h.src_bytes {
                // The runner-up gave more: it becomes the source (and a
                // carrier's flow the holder's flow).
                let (s, b, w) = (h.src, h.src_bytes, h.src_writer);
                h.src = h.alt;
                h.src_bytes = h.alt_bytes;
                h.src_writer = h.alt_writer;
                if let Some(c) = from {
                    h.flow = c.flow;
                    h.origin = c.origin;
                }
                h.alt = s;
                h.alt_bytes = b;
                h.alt_writer = w;
            }
            return;
        }
    }
    let (flow, origin) = match from {
        Some(c) => (c.flow, c.origin),
        None => (
            // A new flow: unique enough, a clock in nanoseconds and the tgid.
            // SAFETY: a helper without preconditions.
            unsafe { bpf_ktime_get_ns() } ^ ((tgid as u64) << 40),
            InodeKey {
                dev: src.dev,
                _pad: 0,
                ino: src.id,
            },
        ),
    };
    let Some(h) = HOLD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, filled then copied into the map.
    let h = unsafe { &mut *h };
    h.bytes = gain;
    h.flow = flow;
    h.origin = origin;
    h.src = src;
    h.src_bytes = gain;
    h.src_writer = writer;
    h.flags = 0;
    h.comm = bpf_get_current_comm().unwrap_or_default();
    h.alt = CarrierKey::default();
    h.alt_bytes = 0;
    h.alt_writer = 0;
    h._pad = 0;
    if HOLDINGS.insert(tgid, &*h, BPF_NOEXIST as u64).is_ok() {
        loss::count(Count::HoldingsMade);
    } else {
        // The holding of an exited process with this tgid (or a racing
        // thread's): replaced.
        let _ = HOLDINGS.insert(tgid, &*h, 0);
    }
}

/// After the last thread of `tgid` exited: a holding that passed nothing
/// on is forgotten (no chain can name it); one that did stays, marked.
#[inline(always)]
pub fn exited(tgid: u32) {
    if let Some(h) = HOLDINGS.get_ptr_mut(tgid) {
        // SAFETY: a map value; a racing reader sees either state.
        let wrote = unsafe { (*h).flags } & HOLDING_WROTE != 0;
        if wrote {
            // SAFETY: as above.
            unsafe { (*h).flags |= HOLDING_EXITED };
        } else if HOLDINGS.remove(tgid).is_ok() {
            loss::count(Count::HoldingsForgotten);
        }
    }
}
