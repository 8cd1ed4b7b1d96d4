//! Names and capacities of the kernel maps, and names of the programs,
//! spelled once for both sides.

/// Per-process counters (`PerCpuHashMap<u32 tgid, ProcCounters>`).
pub const PROC_STATS: &str = "PROC_STATS";
/// Per-process counters of processes `PROC_STATS` had no room for
/// (`LruPerCpuHashMap<u32 tgid, ProcCounters>`): under pressure a new
/// process still gets its own counters and identity; the least recently
/// used spilled entry makes room.
pub const PROC_SPILL: &str = "PROC_SPILL";
/// Destinations `SEND_STATS` had no room for (`LruPerCpuHashMap<SendKey, SendCounters>`).
pub const SEND_SPILL: &str = "SEND_SPILL";
/// Per-process identity (`HashMap<u32 tgid, ProcInfo>`).
pub const PROC_INFO: &str = "PROC_INFO";
/// Bytes sent per (process, destination) (`PerCpuHashMap<SendKey, SendCounters>`).
pub const SEND_STATS: &str = "SEND_STATS";
/// Bytes read per (process, watched file) (`PerCpuHashMap<FileKey, u64>`).
pub const FILE_STATS: &str = "FILE_STATS";
/// Destinations of unconnected UDP sends, by socket cookie (`LruHashMap<u64, Dest>`).
pub const PENDING_DEST: &str = "PENDING_DEST";
/// Mappings of watched files (`LruHashMap<MmapKey, MmapInfo>`: under
/// pressure the oldest record makes room for a new mapping).
pub const WATCHED_MMAPS: &str = "WATCHED_MMAPS";
/// Executed path and arguments by tgid (`LruHashMap<u32, ExecInfo>`).
pub const EXEC_INFO: &str = "EXEC_INFO";
/// Watched directories and files (`HashMap<InodeKey, u64 ext mask>`).
pub const WATCH_INODES: &str = "WATCH_INODES";
/// Watched file-name extensions (`HashMap<ExtKey, u64 bit>`).
pub const WATCH_EXTS: &str = "WATCH_EXTS";
/// Inodes that hold weights, whatever their name or path now
/// (`LruHashMap<InodeKey, u32>`): a file once decided watched stays watched
/// through hard links, renames and moves out of the watched directories;
/// user space seeds it with the files under the watched directories.
pub const WATCHED_FILES: &str = "WATCHED_FILES";
/// Capacity of [`WATCHED_FILES`].
pub const WATCHED_FILES_SIZE: u32 = 65_536;
/// Weights each process took in (`LruHashMap<u32 tgid, Holding>`, see
/// [`crate::lineage`]); kept after the process exits, so a chain names it.
pub const HOLDINGS: &str = "HOLDINGS";
/// Capacity of [`HOLDINGS`].
pub const HOLDINGS_SIZE: u32 = 16_384;
/// Derived files, pipes and FIFOs carrying weights
/// (`LruHashMap<CarrierKey, Carrier>`).
pub const CARRIERS: &str = "CARRIERS";
/// Capacity of [`CARRIERS`].
pub const CARRIERS_SIZE: u32 = 16_384;
/// Sockets carrying weights (`LruHashMap<CarrierKey, Carrier>`), apart
/// from [`CARRIERS`] so a holder talking to many peers churns only these.
pub const SOCKET_CARRIERS: &str = "SOCKET_CARRIERS";
/// Capacity of [`SOCKET_CARRIERS`].
pub const SOCKET_CARRIERS_SIZE: u32 = 16_384;
/// Bytes each process already took from each carrier or watched file
/// (`LruHashMap<TakenKey, u64>`).
pub const TAKEN: &str = "TAKEN";
/// Capacity of [`TAKEN`].
pub const TAKEN_SIZE: u32 = 65_536;
/// Paths of derived files (`LruHashMap<CarrierKey, CarrierPath>`).
pub const CARRIER_PATHS: &str = "CARRIER_PATHS";
/// Capacity of [`CARRIER_PATHS`].
pub const CARRIER_PATHS_SIZE: u32 = 8_192;
/// Lineage generations (`Array<u64>`): slot 0 is bumped by every new file
/// carrier (cached "not derived" decisions are then made again), slot 1
/// counts stream carriers made (0: pipe and socket reads skip the lookup).
pub const LINEAGE_GEN: &str = "LINEAGE_GEN";
/// Slots of [`LINEAGE_GEN`].
pub const LINEAGE_GEN_SIZE: u32 = 2;
/// Cache of the watched decision per inode (`LruHashMap<InodeKey, WatchCacheEntry>`).
pub const WATCH_CACHE: &str = "WATCH_CACHE";
/// Runtime knobs user space can change while running (`Array<RuntimeConfig>`, one slot).
pub const RUNTIME: &str = "RUNTIME";
/// Loss reasons and counts (`PerCpuArray<u64>`, indexed by [`crate::Loss`]
/// then [`crate::Count`]).
pub const COUNTERS: &str = "COUNTERS";
/// The last file each CPU counted a read of (`PerCpuArray<LastFile>`, kernel only).
pub const LAST_FILE: &str = "LAST_FILE";
/// Room to build an `ExecInfo` (`PerCpuArray<ExecInfo>`, kernel only).
pub const EXEC_SCRATCH: &str = "EXEC_SCRATCH";

/// Room to build a `Holding` (`PerCpuArray<Holding>`, kernel only).
pub const HOLD_SCRATCH: &str = "HOLD_SCRATCH";
/// `HOLD_SCRATCH` holds one `Holding` per CPU.
pub const HOLD_SCRATCH_SIZE: u32 = 1;
/// Room to build a `ProcCounters` (`PerCpuArray<ProcCounters>`, kernel only).
pub const COUNTERS_SCRATCH: &str = "COUNTERS_SCRATCH";
/// `COUNTERS_SCRATCH` holds one `ProcCounters` per CPU.
pub const COUNTERS_SCRATCH_SIZE: u32 = 1;
/// Room to build a `Carrier` (`PerCpuArray<Carrier>`, kernel only).
pub const CARRIER_SCRATCH: &str = "CARRIER_SCRATCH";
/// `CARRIER_SCRATCH` holds one `Carrier` per CPU.
pub const CARRIER_SCRATCH_SIZE: u32 = 1;
/// Room to build a `CarrierPath` (`PerCpuArray<CarrierPath>`, kernel only).
pub const PATH_SCRATCH: &str = "PATH_SCRATCH";

/// Every map of the eBPF object.
pub const ALL: [&str; 27] = [
    PROC_STATS,
    PROC_SPILL,
    PROC_INFO,
    SEND_STATS,
    SEND_SPILL,
    FILE_STATS,
    PENDING_DEST,
    WATCHED_MMAPS,
    EXEC_INFO,
    EXEC_SCRATCH,
    WATCH_INODES,
    WATCH_EXTS,
    WATCH_CACHE,
    WATCHED_FILES,
    RUNTIME,
    COUNTERS,
    LAST_FILE,
    HOLDINGS,
    CARRIERS,
    SOCKET_CARRIERS,
    TAKEN,
    CARRIER_PATHS,
    PATH_SCRATCH,
    HOLD_SCRATCH,
    CARRIER_SCRATCH,
    COUNTERS_SCRATCH,
    LINEAGE_GEN,
];

/// The global holding struct offsets resolved from the running kernel's BTF.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Default capacity of the per-process maps.
pub const DEFAULT_MAX_PROCS: u32 = 16_384;
/// Capacity of the spill maps for a given `PROC_STATS` capacity.
pub const fn proc_spill_size(procs: u32) -> u32 {
    let n = procs / 4;
    if n < 64 {
        64
    } else {
        n
    }
}
pub const fn send_spill_size(procs: u32) -> u32 {
    let n = procs / 2;
    if n < 128 {
        128
    } else {
        n
    }
}
/// Default capacity of the per-destination map.
pub const DEFAULT_MAX_DESTS: u32 = 32_768;
/// Default capacity of the per-file map.
pub const DEFAULT_MAX_FILES: u32 = 16_384;
/// Capacity of the watch tables.
pub const MAX_WATCH_INODES: u32 = 4_096;
/// Capacity of the extension table; also the width of the extension bit mask.
pub const MAX_WATCH_EXTS: u32 = 64;
/// [`MAX_WATCH_EXTS`] as a `usize`.
pub const MAX_WATCH_EXTS_USIZE: usize = MAX_WATCH_EXTS as usize;
/// Capacity of the watched-decision cache.
pub const WATCH_CACHE_SIZE: u32 = 65_536;
/// Processes whose exec is remembered at once.
pub const EXEC_INFO_SIZE: u32 = 8_192;
/// Unconnected UDP sockets whose last destination is remembered at once.
pub const PENDING_DEST_SIZE: u32 = 16_384;
/// Slots of `COUNTERS`: one per loss reason, then the counts.
pub const COUNTERS_SIZE: u32 = crate::COUNTER_SLOTS as u32;
/// `RUNTIME` holds one `RuntimeConfig`.
pub const RUNTIME_SIZE: u32 = 1;
/// `LAST_FILE` holds one entry per CPU.
pub const LAST_FILE_SIZE: u32 = 1;
/// `PATH_SCRATCH` holds one `CarrierPath` per CPU.
pub const PATH_SCRATCH_SIZE: u32 = 1;
/// `EXEC_SCRATCH` holds one `ExecInfo` per CPU.
pub const EXEC_SCRATCH_SIZE: u32 = 1;

/// Program names, as in the eBPF object.
pub mod programs {
    pub const FILE_SYS_EXIT: &str = "file_sys_exit";
    pub const NET_SOCK_SEND_LENGTH: &str = "net_sock_send_length";
    pub const NET_SYS_EXIT_SEND: &str = "net_sys_exit_send";
    pub const PROCESS_EXIT: &str = "process_exit";
    pub const PROCESS_EXEC: &str = "process_exec";
    pub const FILE_IO_URING_COMPLETE: &str = "file_io_uring_complete";
    pub const NET_CGROUP_SENDMSG4: &str = "net_cgroup_sendmsg4";
    pub const NET_CGROUP_SENDMSG6: &str = "net_cgroup_sendmsg6";

    /// Every program of the eBPF object.
    pub const ALL: [&str; 8] = [
        FILE_SYS_EXIT,
        FILE_IO_URING_COMPLETE,
        NET_SOCK_SEND_LENGTH,
        NET_SYS_EXIT_SEND,
        NET_CGROUP_SENDMSG4,
        NET_CGROUP_SENDMSG6,
        PROCESS_EXIT,
        PROCESS_EXEC,
    ];
}
