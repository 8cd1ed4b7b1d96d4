//! The slots of `COUNTERS` (one per-CPU `u64` each): what could not be
//! counted, and why ([`Loss`], exported as
//! `sensor_lost_events_total{reason}`), then counts that are not losses
//! ([`Count`]). Only their indices cross the kernel/user boundary.

/// Why something was not counted. The kernel side bumps most of them (its
/// programs' typed errors, after tetragon's error metrics); user space
/// fills the rest in the same array of a poll.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Loss {
    /// `PROC_STATS` was full (the process went to the spill map, or to the
    /// reserved overflow entry without an identity).
    ProcMapFull = 0,
    /// `PROC_INFO` was full: a process counted without an identity.
    InfoMapFull = 1,
    /// `SEND_STATS` was full (the destination went to the spill map, or to
    /// the reserved overflow entry).
    SendMapFull = 2,
    /// `FILE_STATS` was full: bytes of a watched file not kept per file.
    FileMapFull = 3,
    /// A read of kernel memory failed.
    KernelReadError = 4,
    /// A mapping of a watched file could not be recorded.
    MmapMapFull = 5,
    /// A `msg_len` of a sendmmsg vector could not be read back (the
    /// send-syscall fallback): those messages' bytes are not counted.
    UserReadError = 6,
    /// Runs of the agent's programs the kernel skipped because the same
    /// program was already running on that CPU (a task preempted inside
    /// it: syscall tracepoints are preemptible on recent kernels). Read by
    /// user space from the programs' `recursion_misses`; the kernel side
    /// never bumps this slot.
    RecursionMiss = 7,
    /// Found by user space: a live process's entry left the per-process
    /// spill map (LRU) between two polls; what it counted since the
    /// previous poll is lost.
    ProcEvicted = 8,
    /// Found by user space: a destination entry left the spill map (LRU);
    /// its bytes since the previous poll are judged as sent to an unknown
    /// (untrusted) destination, from the process's own total.
    SendEvicted = 9,
    /// Found by user space: a live mapping's record left `WATCHED_MMAPS`
    /// (LRU); its later residency is not sampled.
    MmapEvicted = 10,
    /// Found by user space: a process's holding of weights left `HOLDINGS`
    /// (LRU); what it writes or sends afterwards carries nothing, and
    /// lineage hops through it are no longer named.
    HoldingEvicted = 11,
    /// Found by user space: a carrier (derived file, pipe, FIFO) left
    /// `CARRIERS` (LRU); reading it afterwards counts as plain bytes.
    CarrierEvicted = 12,
    /// Found by user space: a (process, carrier) record of bytes already
    /// taken left `TAKEN` (LRU); re-reading that carrier counts again.
    TakenEvicted = 13,
    /// Found by user space: a watched inode left `WATCHED_FILES` (LRU);
    /// under a name outside the watch set it is no longer watched.
    WatchedFileEvicted = 14,
    /// Found by user space: a socket carrier left `SOCKET_CARRIERS` (LRU;
    /// routine when a holder talks to many peers: the least recently used
    /// connections go first).
    SocketCarrierEvicted = 15,
    /// Found by user space: an identity left the `slow_exfil` ledger (its
    /// memory bound was reached; the least recently active go first).
    LedgerEvicted = 16,
}

impl Loss {
    /// How many reasons there are: the loss slots are `0..COUNT`.
    pub const COUNT: usize = 17;

    /// Every reason, in slot order.
    pub const ALL: [Loss; Loss::COUNT] = [
        Loss::ProcMapFull,
        Loss::InfoMapFull,
        Loss::SendMapFull,
        Loss::FileMapFull,
        Loss::KernelReadError,
        Loss::MmapMapFull,
        Loss::UserReadError,
        Loss::RecursionMiss,
        Loss::ProcEvicted,
        Loss::SendEvicted,
        Loss::MmapEvicted,
        Loss::HoldingEvicted,
        Loss::CarrierEvicted,
        Loss::TakenEvicted,
        Loss::WatchedFileEvicted,
        Loss::SocketCarrierEvicted,
        Loss::LedgerEvicted,
    ];

    /// The `reason` label of `sensor_lost_events_total`.
    pub const fn label(self) -> &'static str {
        match self {
            Loss::ProcMapFull => "proc_map_full",
            Loss::InfoMapFull => "info_map_full",
            Loss::SendMapFull => "send_map_full",
            Loss::FileMapFull => "file_map_full",
            Loss::KernelReadError => "kernel_read_error",
            Loss::MmapMapFull => "mmap_map_full",
            Loss::UserReadError => "user_read_error",
            Loss::RecursionMiss => "recursion_miss",
            Loss::ProcEvicted => "proc_evicted",
            Loss::SendEvicted => "send_evicted",
            Loss::MmapEvicted => "mmap_evicted",
            Loss::HoldingEvicted => "holding_evicted",
            Loss::CarrierEvicted => "carrier_evicted",
            Loss::TakenEvicted => "taken_evicted",
            Loss::WatchedFileEvicted => "watched_file_evicted",
            Loss::SocketCarrierEvicted => "socket_carrier_evicted",
            Loss::LedgerEvicted => "ledger_evicted",
        }
    }

    /// Its slot in `COUNTERS`.
    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// Its slot in `COUNTERS`, as an index of a [`COUNTER_SLOTS`] array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Counts kept in `COUNTERS` that are not losses, after the losses.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Count {
    /// New records the kernel put in `WATCHED_MMAPS`, so user space can
    /// tell how many left the (LRU) map before any poll saw them.
    MmapRecorded = Loss::COUNT as u32,
    /// New entries the kernel made in `HOLDINGS`, `CARRIERS`, `TAKEN` and
    /// `WATCHED_FILES` (LRU maps): user space tells evictions from them.
    HoldingsMade,
    CarriersMade,
    TakenMade,
    WatchedFilesMade,
    SocketCarriersMade,
    /// Holdings the kernel removed itself (a holder that passed nothing on
    /// exited): not evictions.
    HoldingsForgotten,
}

impl Count {
    /// How many counts there are.
    pub const COUNT: usize = 7;

    /// Its slot in `COUNTERS`.
    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// Its slot in `COUNTERS`, as an index of a [`COUNTER_SLOTS`] array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Slots of `COUNTERS`: every [`Loss`], then every [`Count`].
pub const COUNTER_SLOTS: usize = Loss::COUNT + Count::COUNT;

const _: () = {
    let mut i = 0;
    while i < Loss::COUNT {
        assert!(Loss::ALL[i].index() == i);
        i += 1;
    }
    assert!(Count::HoldingsForgotten.index() + 1 == COUNTER_SLOTS);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_exported_ones_in_slot_order() {
        let labels = Loss::ALL.map(Loss::label);
        assert_eq!(
            labels,
            [
                "proc_map_full",
                "info_map_full",
                "send_map_full",
                "file_map_full",
                "kernel_read_error",
                "mmap_map_full",
                "user_read_error",
                "recursion_miss",
                "proc_evicted",
                "send_evicted",
                "mmap_evicted",
                "holding_evicted",
                "carrier_evicted",
                "taken_evicted",
                "watched_file_evicted",
                "socket_carrier_evicted",
                "ledger_evicted",
            ]
        );
    }
}
