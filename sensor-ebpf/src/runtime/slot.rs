//! Get-or-insert for the counting maps, the one helper every counting map
//! goes through. With a spill map for when the main map is full: the main
//! map is a plain hash (nothing counted in it is ever evicted); the spill is
//! an LRU hash, so under pressure a new key always gets its own slot (the
//! least recently used spilled key makes room, and user space counts that
//! eviction when it sees it); and when even that fails, the overflow entry
//! user space reserved in the main map.

/// The slot of `$key` in a counting map, created (as `$value`) if missing.
/// Evaluates to `Option<(*mut V, bool)>`: the slot, and whether it was
/// created here. `$value` is only evaluated when an entry is inserted.
///
/// - `slot_of!(MAP, key, value)`: `MAP`'s entry, else a new one in `MAP`;
///   `None` when `MAP` is full.
/// - `slot_of!(MAP, key, value, spill: SPILL, full: REASON, overflow: KEY)`:
///   `MAP`'s entry, else `SPILL`'s, else a new one in `MAP`, else (bumping
///   the loss `REASON`) a new one in `SPILL`, else `MAP`'s entry at the
///   reserved overflow `KEY` (never "created": it has no identity).
macro_rules! slot_of {
    ($main:expr, $key:expr, $value:expr $(,)?) => {{
        use aya_ebpf::bindings::BPF_NOEXIST;
        let key = $key;
        if let Some(p) = $main.get_ptr_mut(key) {
            Some((p, false))
        } else {
            // NOEXIST: another CPU may have raced us; either way the slot
            // is looked up again.
            let created = $main.insert(key, $value, BPF_NOEXIST as u64).is_ok();
            $main.get_ptr_mut(key).map(|p| (p, created))
        }
    }};
    (
        $main:expr, $key:expr, $value:expr,
        spill: $spill:expr, full: $full:expr, overflow: $overflow:expr $(,)?
    ) => {{
        use aya_ebpf::bindings::BPF_NOEXIST;
        let key = $key;
        let slot = if let Some(p) = $main.get_ptr_mut(key) {
            Some((p, false))
        } else if let Some(p) = $spill.get_ptr_mut(key) {
            Some((p, false))
        } else {
            // NOEXIST: as above.
            let created = $main.insert(key, $value, BPF_NOEXIST as u64).is_ok();
            if let Some(p) = $main.get_ptr_mut(key) {
                Some((p, created))
            } else {
                $crate::runtime::loss::bump($full);
                let created = $spill.insert(key, $value, BPF_NOEXIST as u64).is_ok();
                $spill.get_ptr_mut(key).map(|p| (p, created))
            }
        };
        match slot {
            Some(slot) => Some(slot),
            None => $main.get_ptr_mut($overflow).map(|p| (p, false)),
        }
    }};
}
pub(crate) use slot_of;
