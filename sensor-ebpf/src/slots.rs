//! Get-or-insert for the counting maps, with a spill map for when the main
//! map is full: the main map is a plain hash (nothing counted in it is ever
//! evicted); the spill is an LRU hash, so under pressure a new key always
//! gets its own slot (the least recently used spilled key makes room, and
//! user space counts that eviction when it sees it).

/// `$main.get_ptr_mut(key)`, else `$spill`'s, else a new zeroed `$value` in
/// `$main`, else in `$spill` (bumping `$full`). Evaluates to
/// `Option<(*mut V, bool)>`: the slot, and whether it was created here.
macro_rules! slot_of {
    ($main:expr, $spill:expr, $key:expr, $value:expr, $full:expr) => {{
        use aya_ebpf::bindings::BPF_NOEXIST;
        let key = $key;
        if let Some(p) = $main.get_ptr_mut(key) {
            Some((p, false))
        } else if let Some(p) = $spill.get_ptr_mut(key) {
            Some((p, false))
        } else {
            // NOEXIST: another CPU may have raced us; either way the slot
            // is looked up again.
            let created = $main.insert(key, $value, BPF_NOEXIST as u64).is_ok();
            if let Some(p) = $main.get_ptr_mut(key) {
                Some((p, created))
            } else {
                $crate::counters::bump($full);
                let created = $spill.insert(key, $value, BPF_NOEXIST as u64).is_ok();
                $spill.get_ptr_mut(key).map(|p| (p, created))
            }
        }
    }};
}
pub(crate) use slot_of;
