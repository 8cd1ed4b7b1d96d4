//! The path of a derived file, taken when it becomes one (the writer may be
//! gone, and the file renamed, by the time an alert names it): the last
//! components of its dentry chain up to the root of its file system.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use sensor_common::{
    lineage::{CarrierKey, CarrierPath, PATH_PARTS},
    maps,
};

use crate::runtime::kernel::{off, read_ptr};

#[map(name = "CARRIER_PATHS")]
static CARRIER_PATHS: LruHashMap<CarrierKey, CarrierPath> =
    LruHashMap::with_max_entries(maps::CARRIER_PATHS_SIZE, 0);

#[map(name = "PATH_SCRATCH")]
static PATH_SCRATCH: PerCpuArray<CarrierPath> =
    PerCpuArray::with_max_entries(maps::PATH_SCRATCH_SIZE, 0);

/// Records the path of `dentry` for `key` unless one is recorded.
#[inline(always)]
pub fn record_once(key: &CarrierKey, dentry: *const u8) {
    // SAFETY: only the presence is used.
    if unsafe { CARRIER_PATHS.get(key) }.is_none() {
        record(key, dentry);
    }
}

/// Records the path of `dentry` for the new derived file `key`.
// `&*p`: the scratch slot by reference, not a 200-byte copy on the stack.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
pub fn record(key: &CarrierKey, dentry: *const u8) {
    let Some(p) = PATH_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, filled then copied into the map.
    let p = unsafe { &mut *p };
    p.depth = 0;
    p.complete = 0;
    let mut d = dentry;
    for i in 0..PATH_PARTS {
        let Ok(name) = read_ptr(d, off!(dentry_name_ptr)) else {
            return;
        };
        if let Some(part) = p.parts.get_mut(i) {
            part[0] = 0;
            // SAFETY: a helper read of a NUL-terminated kernel string into
            // a buffer of its size; faults are reported, not taken.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, part) };
        }
        p.depth = i as u32 + 1;
        let Ok(parent) = read_ptr(d, off!(dentry_parent)) else {
            break;
        };
        if parent.is_null() || parent == d {
            // `d` was the root: its name ("/") is not a component.
            p.depth = i as u32;
            p.complete = 1;
            break;
        }
        d = parent;
    }
    if p.complete == 0 {
        // Reached the root right after the last component kept?
        if let Ok(parent) = read_ptr(d, off!(dentry_parent)) {
            if parent == d {
                p.complete = 1;
            }
        }
    }
    let _ = CARRIER_PATHS.insert(key, &*p, 0);
}
