//! Loading and attaching the kernel programs: the only module that knows aya.
//!
//! A table lists each program, its hook and the capability it provides; one
//! loop loads and attaches them. A required program that fails aborts the
//! whole load, and dropping the half-built `Ebpf` detaches whatever was
//! attached: the sensor is either fully attached or not at all.

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context as _};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr},
    Btf, Ebpf, EbpfLoader, Endianness,
};
use sensor_common::{
    maps as names, maps::programs, ExecInfo, ExtKey, FileKey, InodeKey, Loss, MmapInfo, MmapKey,
    ProcCounters, ProcInfo, RuntimeConfig, SendCounters, SendKey, COUNTER_SLOTS, FAMILY_OVERFLOW,
    OVERFLOW_TGID,
};

use crate::{
    kernel::{offsets, watch::WatchSet},
    util::sysinfo,
};

/// The eBPF object, built by `build.rs` from `sensor-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// One way to give the sensor a capability: a program and where it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub program: &'static str,
    /// `tp_btf/<tracepoint>` or `cgroup/<attach type>` (on the cgroup v2 root).
    pub hook: &'static str,
    /// Needs io_uring's structures and a usable `io_uring_complete`.
    pub needs_io_uring: bool,
}

/// What the sensor can see, and the hooks that give it, best first: the
/// first one this kernel loads and attaches is used, the others are not
/// loaded at all.
#[derive(Clone, Copy, Debug)]
pub struct Capability {
    pub name: &'static str,
    /// Without it the agent refuses to run; without an optional one it warns
    /// and exports `sensor_probe_info{capability=...,hook="none"} 0`.
    pub required: bool,
    pub hooks: &'static [Hook],
}

const fn hook(program: &'static str, hook: &'static str) -> Hook {
    Hook {
        program,
        hook,
        needs_io_uring: false,
    }
}

pub const CAPABILITIES: [Capability; 7] = [
    Capability {
        name: "file_read",
        required: true,
        hooks: &[hook(programs::FILE_SYS_EXIT, "tp_btf/sys_exit")],
    },
    Capability {
        name: "file_read_io_uring",
        required: false,
        hooks: &[Hook {
            needs_io_uring: true,
            ..hook(programs::FILE_IO_URING_COMPLETE, "tp_btf/io_uring_complete")
        }],
    },
    Capability {
        name: "socket_send",
        required: true,
        hooks: &[
            // 6.3+: every sendmsg of every socket family, io_uring's too.
            hook(programs::NET_SOCK_SEND_LENGTH, "tp_btf/sock_send_length"),
            // Older kernels: the send-family syscalls on socket descriptors.
            hook(programs::NET_SYS_EXIT_SEND, "tp_btf/sys_exit"),
        ],
    },
    Capability {
        name: "udp_destination_ipv4",
        required: false,
        hooks: &[hook(programs::NET_CGROUP_SENDMSG4, "cgroup/sendmsg4")],
    },
    Capability {
        name: "udp_destination_ipv6",
        required: false,
        hooks: &[hook(programs::NET_CGROUP_SENDMSG6, "cgroup/sendmsg6")],
    },
    Capability {
        name: "process_exit",
        required: true,
        hooks: &[hook(programs::PROCESS_EXIT, "tp_btf/sched_process_exit")],
    },
    Capability {
        name: "process_exec",
        required: false,
        hooks: &[hook(programs::PROCESS_EXEC, "tp_btf/sched_process_exec")],
    },
];

/// What one capability got on this kernel.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub capability: Capability,
    /// The hook in use, `None` when none loaded and attached.
    pub attached: Option<Hook>,
    /// The hooks tried before it (all of them when none worked), each
    /// with the kernel's (or aya's) reason.
    pub failures: Vec<(Hook, String)>,
}

impl ProbeStatus {
    /// `tp_btf/...` or `none`.
    pub fn hook_label(&self) -> &'static str {
        self.attached.map(|h| h.hook).unwrap_or("none")
    }

    /// The reasons of the hooks that did not work, on one line.
    pub fn failure_text(&self) -> String {
        self.failures
            .iter()
            .map(|(h, why)| format!("{} ({}): {why}", h.hook, h.program))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The watch tables and run-time knobs as read back from the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchState {
    pub exts: Vec<([u8; sensor_common::EXT_LEN], u64)>,
    pub inodes: Vec<((u32, u64), u64)>,
    pub runtime: Option<RuntimeConfig>,
}

/// What loading needs to know: map sizes and where the kernel's BTF is.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub processes: u32,
    /// `/sys/kernel/btf/vmlinux` unless configured (`--btf-path`).
    pub btf: PathBuf,
    /// The detection window: what a process takes from one file counts
    /// once per window (see `RuntimeConfig::epoch_ns`).
    pub epoch: std::time::Duration,
}

/// The loaded and attached sensor. Dropping it detaches every program.
pub struct Sensor {
    ebpf: Ebpf,
    pub probes: Vec<ProbeStatus>,
    /// Each attached hook and its kernel program id (fixed once attached).
    attached: Vec<(Hook, u32)>,
    generation: u32,
    any_ext_mask: u64,
    epoch_ns: u64,
    /// Watched files user space put in `WATCHED_FILES` at start.
    seeded_files: u64,
}

impl Sensor {
    /// Loads the programs, fills the watch tables and attaches everything.
    pub fn load(watch: &WatchSet, opts: &LoadOptions) -> anyhow::Result<Self> {
        let (mut ebpf, resolved) = open(opts)?;
        let seeded_files = fill_watch_tables(&mut ebpf, watch)?;
        reserve_overflow(&mut ebpf)?;
        let probes = attach_all(&mut ebpf, &resolved, &opts.btf)?;
        if let Some(failed) = probes
            .iter()
            .find(|p| p.capability.required && p.attached.is_none())
        {
            return Err(anyhow!(
                "no hook of this kernel gives {}: {}",
                failed.capability.name,
                failed.failure_text()
            ));
        }
        let attached = probes
            .iter()
            .filter_map(|p| p.attached)
            .map(|h| {
                let id = ebpf
                    .program(h.program)
                    .ok_or_else(|| anyhow!("eBPF object has no program {}", h.program))?
                    .info()
                    .with_context(|| format!("program id of {}", h.program))?
                    .id();
                Ok((h, id))
            })
            .collect::<anyhow::Result<_>>()?;
        let mut sensor = Sensor {
            ebpf,
            probes,
            attached,
            generation: 0,
            any_ext_mask: watch.any_ext_mask,
            epoch_ns: opts.epoch.as_nanos().min(u64::MAX as u128) as u64,
            seeded_files,
        };
        sensor.bump_generation()?;
        Ok(sensor)
    }

    /// Tries each program on its own (for `sensor check`); never fails as a whole
    /// once the object loads.
    pub fn probe_each() -> anyhow::Result<Vec<ProbeStatus>> {
        let opts = LoadOptions {
            processes: names::DEFAULT_MAX_PROCS,
            btf: PathBuf::from(crate::config::VMLINUX_BTF),
            epoch: std::time::Duration::ZERO,
        };
        let (mut ebpf, resolved) = open(&opts)?;
        attach_all(&mut ebpf, &resolved, &opts.btf)
    }

    /// Each attached program: its name, hook and kernel program id.
    pub fn attached(&self) -> &[(Hook, u32)] {
        &self.attached
    }

    /// What the watch tables and `RUNTIME` hold now, in a comparable form.
    pub fn watch_state(&self) -> anyhow::Result<WatchState> {
        let exts: HashMap<&MapData, ExtKey, u64> =
            HashMap::try_from(map(&self.ebpf, names::WATCH_EXTS)?)?;
        let inodes: HashMap<&MapData, InodeKey, u64> =
            HashMap::try_from(map(&self.ebpf, names::WATCH_INODES)?)?;
        let rt: Array<&MapData, RuntimeConfig> = Array::try_from(map(&self.ebpf, names::RUNTIME)?)?;
        let mut state = WatchState {
            exts: exts
                .iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (k.ext, v))
                .collect(),
            inodes: inodes
                .iter()
                .filter_map(Result::ok)
                .map(|(k, v)| ((k.dev, k.ino), v))
                .collect(),
            runtime: rt.get(&0, 0).ok(),
        };
        state.exts.sort();
        state.inodes.sort();
        Ok(state)
    }

    /// The `RUNTIME` value this agent last wrote.
    pub fn expected_runtime(&self) -> RuntimeConfig {
        RuntimeConfig {
            generation: self.generation,
            _pad: 0,
            any_ext_mask: self.any_ext_mask,
            epoch_ns: self.epoch_ns,
        }
    }

    /// Makes the kernel recompute every cached watched decision (after the
    /// watch set changed, or periodically to catch renames).
    pub fn bump_generation(&mut self) -> anyhow::Result<()> {
        self.generation = self.generation.wrapping_add(1).max(1);
        let mut rt: Array<&mut MapData, RuntimeConfig> =
            Array::try_from(map_mut(&mut self.ebpf, names::RUNTIME)?)?;
        let value = RuntimeConfig {
            generation: self.generation,
            _pad: 0,
            any_ext_mask: self.any_ext_mask,
            epoch_ns: self.epoch_ns,
        };
        rt.set(0, value, 0).context("writing RUNTIME")?;
        Ok(())
    }

    /// Per-process counters, from `PROC_STATS` and its spill (a tgid is in
    /// one of them; summed if a race put it in both).
    pub fn read_counters(&self) -> anyhow::Result<Vec<(u32, ProcCounters)>> {
        read_merged(
            &self.ebpf,
            [names::PROC_STATS, names::PROC_SPILL],
            |sum: &mut ProcCounters, c| {
                sum.read_bytes += c.read_bytes;
                sum.read_ops += c.read_ops;
                sum.watched_read_bytes += c.watched_read_bytes;
                sum.watched_read_ops += c.watched_read_ops;
                sum.sent_bytes += c.sent_bytes;
                sum.send_ops += c.send_ops;
                sum.distinct_read_bytes += c.distinct_read_bytes;
                sum.derived_read_bytes += c.derived_read_bytes;
                sum.relayed_bytes += c.relayed_bytes;
                sum.born_ns = sum.born_ns.max(c.born_ns);
            },
        )
    }

    pub fn read_infos(&self) -> anyhow::Result<Vec<(u32, ProcInfo)>> {
        let map: HashMap<&MapData, u32, ProcInfo> =
            HashMap::try_from(map(&self.ebpf, names::PROC_INFO)?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// Bytes per (process, destination), from `SEND_STATS` and its spill.
    pub fn read_sends(&self) -> anyhow::Result<Vec<(SendKey, SendCounters)>> {
        read_merged(
            &self.ebpf,
            [names::SEND_STATS, names::SEND_SPILL],
            |sum: &mut SendCounters, c| {
                sum.bytes += c.bytes;
                sum.ops += c.ops;
            },
        )
    }

    pub fn read_files(&self) -> anyhow::Result<Vec<(FileKey, u64)>> {
        let map: PerCpuHashMap<&MapData, FileKey, u64> =
            PerCpuHashMap::try_from(map(&self.ebpf, names::FILE_STATS)?)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| (key, per_cpu.iter().sum()))
            .collect())
    }

    pub fn read_mmaps(&self) -> anyhow::Result<Vec<(MmapKey, MmapInfo)>> {
        let map: HashMap<&MapData, MmapKey, MmapInfo> =
            HashMap::try_from(map(&self.ebpf, names::WATCHED_MMAPS)?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// The identity of one process.
    pub fn info(&self, tgid: u32) -> Option<ProcInfo> {
        let map: HashMap<&MapData, u32, ProcInfo> =
            HashMap::try_from(map(&self.ebpf, names::PROC_INFO).ok()?).ok()?;
        map.get(&tgid, 0).ok()
    }

    /// What `tgid` executed, if its exec happened while the sensor ran.
    pub fn exec_info(&self, tgid: u32) -> Option<ExecInfo> {
        let map: HashMap<&MapData, u32, ExecInfo> =
            HashMap::try_from(map(&self.ebpf, names::EXEC_INFO).ok()?).ok()?;
        map.get(&tgid, 0).ok()
    }

    /// Cumulative `COUNTERS`, by index.
    pub fn read_lost(&self) -> anyhow::Result<[u64; COUNTER_SLOTS]> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map(&self.ebpf, names::COUNTERS)?)?;
        let mut out = [0; COUNTER_SLOTS];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
        }
        out[Loss::RecursionMiss.index()] = self.recursion_misses();
        Ok(out)
    }

    /// Runs of our programs the kernel skipped (`recursion_misses` in their
    /// fdinfo, 5.12+; 0 where the kernel does not say).
    pub fn recursion_misses(&self) -> u64 {
        crate::util::fdinfo::own("bpf-prog")
            .iter()
            .filter(|e| {
                crate::util::fdinfo::num(e, "prog_id")
                    .is_some_and(|id: u32| self.attached.iter().any(|(_, ours)| *ours == id))
            })
            .filter_map(|e| crate::util::fdinfo::num::<u64>(e, "recursion_misses"))
            .sum()
    }

    /// Removes exited (or long idle) processes, destinations, files and
    /// mappings from the maps, spills included.
    pub fn forget(
        &mut self,
        tgids: &[u32],
        sends: &[SendKey],
        files: &[FileKey],
        mmaps: &[MmapKey],
    ) -> anyhow::Result<()> {
        let ebpf = &mut self.ebpf;
        remove_per_cpu::<u32, ProcCounters>(ebpf, names::PROC_STATS, tgids)?;
        remove_per_cpu::<u32, ProcCounters>(ebpf, names::PROC_SPILL, tgids)?;
        remove::<u32, ProcInfo>(ebpf, names::PROC_INFO, tgids)?;
        remove_per_cpu::<SendKey, SendCounters>(ebpf, names::SEND_STATS, sends)?;
        remove_per_cpu::<SendKey, SendCounters>(ebpf, names::SEND_SPILL, sends)?;
        remove_per_cpu::<FileKey, u64>(ebpf, names::FILE_STATS, files)?;
        remove::<u32, ExecInfo>(ebpf, names::EXEC_INFO, tgids)?;
        remove::<MmapKey, MmapInfo>(ebpf, names::WATCHED_MMAPS, mmaps)
    }
}

impl Sensor {
    /// One value of the (LRU) hash map `name`.
    pub fn lookup<K: aya::Pod, V: aya::Pod>(&self, name: &str, key: &K) -> Option<V> {
        let m: HashMap<&MapData, K, V> = HashMap::try_from(map(&self.ebpf, name).ok()?).ok()?;
        m.get(key, 0).ok()
    }

    /// How many keys the hash map `name` holds now.
    pub fn count_keys<K: aya::Pod, V: aya::Pod>(&self, name: &str) -> anyhow::Result<u64> {
        let m: HashMap<&MapData, K, V> = HashMap::try_from(map(&self.ebpf, name)?)?;
        Ok(m.keys().filter(Result::is_ok).count() as u64)
    }

    /// Files user space put in `WATCHED_FILES` at start (with the kernel's
    /// own count of entries it made, what left the map is known).
    pub fn seeded_files(&self) -> u64 {
        self.seeded_files
    }
}

/// The entries of per-CPU maps `names` (a main map and its spill), each
/// key's per-CPU values (and its values in both maps) folded by `add`.
fn read_merged<K, V>(
    ebpf: &Ebpf,
    names: [&str; 2],
    add: impl Fn(&mut V, &V),
) -> anyhow::Result<Vec<(K, V)>>
where
    K: aya::Pod + std::hash::Hash + Eq,
    V: aya::Pod + Default,
{
    let mut out: std::collections::HashMap<K, V> = std::collections::HashMap::new();
    for name in names {
        let m: PerCpuHashMap<&MapData, K, V> = PerCpuHashMap::try_from(map(ebpf, name)?)?;
        for (key, per_cpu) in m.iter().filter_map(Result::ok) {
            let sum = out.entry(key).or_default();
            for c in per_cpu.iter() {
                add(sum, c);
            }
        }
    }
    Ok(out.into_iter().collect())
}

fn remove<K: aya::Pod, V: aya::Pod>(ebpf: &mut Ebpf, name: &str, keys: &[K]) -> anyhow::Result<()> {
    let mut m: HashMap<&mut MapData, K, V> = HashMap::try_from(map_mut(ebpf, name)?)?;
    for k in keys {
        // Already gone is fine.
        let _ = m.remove(k);
    }
    Ok(())
}

fn remove_per_cpu<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    keys: &[K],
) -> anyhow::Result<()> {
    let mut m: PerCpuHashMap<&mut MapData, K, V> = PerCpuHashMap::try_from(map_mut(ebpf, name)?)?;
    for k in keys {
        let _ = m.remove(k);
    }
    Ok(())
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .ok_or_else(|| anyhow!("eBPF object has no map {name}"))
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("eBPF object has no map {name}"))
}

/// Loads the object with this kernel's offsets and the map sizes (programs
/// are not loaded into the kernel yet).
fn open(opts: &LoadOptions) -> anyhow::Result<(Ebpf, offsets::Resolved)> {
    raise_memlock_limit();
    let mut resolved = offsets::resolve_offsets(&opts.btf)?;
    if disabled_programs()
        .iter()
        .any(|p| p == programs::NET_SOCK_SEND_LENGTH)
    {
        // The send-syscall fallback will be used: io_uring sends then too.
        resolved.offsets.features |= sensor_common::offsets::FEATURE_SEND_FALLBACK;
    }
    let procs = opts.processes;
    let ebpf = EbpfLoader::new()
        .override_global(names::OFFSETS_GLOBAL, &resolved.offsets, true)
        // One more each for the overflow entries.
        .map_max_entries(names::PROC_STATS, procs + 1)
        .map_max_entries(names::PROC_SPILL, names::proc_spill_size(procs))
        .map_max_entries(
            names::PROC_INFO,
            procs.saturating_add(names::proc_spill_size(procs)),
        )
        .map_max_entries(names::FILE_STATS, procs)
        .map_max_entries(names::SEND_STATS, procs.saturating_mul(2) + 1)
        .map_max_entries(names::SEND_SPILL, names::send_spill_size(procs))
        .map_max_entries(names::WATCHED_MMAPS, procs)
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (maps)")?;
    Ok((ebpf, resolved))
}

fn attach_all(
    ebpf: &mut Ebpf,
    resolved: &offsets::Resolved,
    btf_path: &Path,
) -> anyhow::Result<Vec<ProbeStatus>> {
    let btf = Btf::parse_file(btf_path, Endianness::default()).with_context(|| {
        format!(
            "reading kernel BTF {} for attach points",
            btf_path.display()
        )
    })?;
    let disabled = disabled_programs();
    let mut out = Vec::new();
    for capability in CAPABILITIES {
        let mut status = ProbeStatus {
            capability,
            attached: None,
            failures: Vec::new(),
        };
        for hook in capability.hooks {
            let result = match (&resolved.io_uring_missing, hook.needs_io_uring) {
                _ if disabled.iter().any(|d| d == hook.program) => {
                    Err(format!("disabled by {DISABLE_HOOKS_ENV}"))
                }
                (Some(why), true) => Err(format!("io_uring not usable on this kernel: {why}")),
                _ => attach_one(ebpf, &btf, hook).map_err(|e| format!("{e:#}")),
            };
            match result {
                Ok(()) => {
                    tracing::info!(
                        capability = capability.name,
                        program = hook.program,
                        hook = hook.hook,
                        "attached"
                    );
                    status.attached = Some(*hook);
                    break;
                }
                Err(reason) => {
                    tracing::info!(
                        capability = capability.name,
                        program = hook.program,
                        hook = hook.hook,
                        %reason,
                        "hook not available"
                    );
                    status.failures.push((*hook, reason));
                }
            }
        }
        if status.attached.is_none() {
            tracing::warn!(
                capability = capability.name,
                reasons = status.failure_text(),
                "no hook: the sensor is blind to this"
            );
        }
        out.push(status);
    }
    Ok(out)
}

/// Programs not to use even where the kernel has their hook (comma
/// separated names): to step around a hook misbehaving on one kernel, and
/// for the tests to exercise the fallbacks on a kernel that needs none.
pub const DISABLE_HOOKS_ENV: &str = "SENSOR_DISABLE_HOOKS";

fn disabled_programs() -> Vec<String> {
    std::env::var(DISABLE_HOOKS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, spec: &Hook) -> anyhow::Result<()> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| anyhow!("eBPF object has no program {}", spec.program))?;
    match spec.hook.split_once('/') {
        Some(("tp_btf", tracepoint)) => {
            let program: &mut BtfTracePoint = program.try_into()?;
            program.load(tracepoint, btf).context("load")?;
            program.attach().context("attach")?;
        }
        Some(("cgroup", _)) => {
            let root = sysinfo::cgroup2_mount().ok_or_else(|| anyhow!("no cgroup v2 mount"))?;
            let cgroup =
                File::open(&root).with_context(|| format!("opening {}", root.display()))?;
            let program: &mut CgroupSockAddr = program.try_into()?;
            program.load().context("load")?;
            // As a bpf_link (5.7+): other tools' programs on the root keep
            // running beside ours; link_create refuses the ALLOW_MULTI flag.
            program
                .attach(&cgroup, CgroupAttachMode::Single)
                .context("attach")?;
        }
        _ => return Err(anyhow!("unknown hook kind {}", spec.hook)),
    }
    Ok(())
}

/// The entries the kernel falls back to when a per-process or
/// per-destination map is full, so bytes stay in the totals.
fn reserve_overflow(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| anyhow!("counting CPUs: {e}"))?;
    {
        let mut procs: PerCpuHashMap<&mut MapData, u32, ProcCounters> =
            PerCpuHashMap::try_from(map_mut(ebpf, names::PROC_STATS)?)?;
        let zero = PerCpuValues::try_from(vec![ProcCounters::default(); cpus])?;
        procs
            .insert(OVERFLOW_TGID, zero, 0)
            .context("reserving the overflow process entry")?;
    }
    let mut sends: PerCpuHashMap<&mut MapData, SendKey, SendCounters> =
        PerCpuHashMap::try_from(map_mut(ebpf, names::SEND_STATS)?)?;
    let key = SendKey {
        tgid: OVERFLOW_TGID,
        family: FAMILY_OVERFLOW,
        port: 0,
        addr: [0; 16],
    };
    let zero = PerCpuValues::try_from(vec![SendCounters::default(); cpus])?;
    sends
        .insert(key, zero, 0)
        .context("reserving the overflow destination entry")?;
    Ok(())
}

/// Fills the watch tables; returns how many files were put in `WATCHED_FILES`.
fn fill_watch_tables(ebpf: &mut Ebpf, watch: &WatchSet) -> anyhow::Result<u64> {
    {
        let mut exts: HashMap<&mut MapData, ExtKey, u64> =
            HashMap::try_from(map_mut(ebpf, names::WATCH_EXTS)?)?;
        for (i, ext) in watch.extensions.iter().enumerate() {
            exts.insert(
                ExtKey {
                    ext: WatchSet::ext_key(ext),
                },
                1u64 << i,
                0,
            )
            .with_context(|| format!("adding extension {ext} to WATCH_EXTS"))?;
        }
    }
    let mut inodes: HashMap<&mut MapData, InodeKey, u64> =
        HashMap::try_from(map_mut(ebpf, names::WATCH_INODES)?)?;
    for w in &watch.inodes {
        inodes
            .insert(w.key, w.mask, 0)
            .with_context(|| format!("adding {} to WATCH_INODES", w.path.display()))?;
    }
    // The files there now, by inode: their other names and later places
    // stay watched. Half the map, so files first read later still fit.
    let mut files: HashMap<&mut MapData, InodeKey, u32> =
        HashMap::try_from(map_mut(ebpf, names::WATCHED_FILES)?)?;
    let found = watch.files(names::WATCHED_FILES_SIZE as usize / 2, 32);
    for key in &found {
        files
            .insert(key, 1, 0)
            .context("adding a watched file to WATCHED_FILES")?;
    }
    tracing::debug!(files = found.len(), "watched files seeded by inode");
    Ok(found.len() as u64)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use aya_obj::{Object, ProgramSection};
    use sensor_common::Offsets;

    use super::*;

    fn object() -> Object {
        Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses")
    }

    /// The maps of the object by name, without the data sections (`.rodata`…).
    fn object_maps(obj: &Object) -> BTreeSet<&str> {
        obj.maps
            .keys()
            .map(String::as_str)
            .filter(|name| !name.starts_with('.'))
            .collect()
    }

    #[test]
    fn the_object_has_every_map_the_loader_names_and_no_other() {
        let obj = object();
        let named: BTreeSet<&str> = names::ALL.into_iter().collect();
        assert_eq!(named.len(), names::ALL.len(), "a map named twice");
        let in_object = object_maps(&obj);
        let missing: Vec<_> = named.difference(&in_object).collect();
        let unnamed: Vec<_> = in_object.difference(&named).collect();
        assert!(
            missing.is_empty() && unnamed.is_empty(),
            "named in sensor_common::maps but not in the object: {missing:?}; \
             in the object but not named: {unnamed:?}"
        );
    }

    #[test]
    fn every_map_has_the_capacity_sensor_common_gives_it() {
        let obj = object();
        let procs = names::DEFAULT_MAX_PROCS;
        for (name, capacity) in [
            (names::PROC_STATS, procs),
            (names::PROC_SPILL, names::proc_spill_size(procs)),
            (names::PROC_INFO, procs + names::proc_spill_size(procs)),
            (names::SEND_STATS, names::DEFAULT_MAX_DESTS),
            (names::SEND_SPILL, names::send_spill_size(procs)),
            (names::FILE_STATS, names::DEFAULT_MAX_FILES),
            (names::PENDING_DEST, names::PENDING_DEST_SIZE),
            (names::WATCHED_MMAPS, names::DEFAULT_MAX_FILES),
            (names::EXEC_INFO, names::EXEC_INFO_SIZE),
            (names::EXEC_SCRATCH, names::EXEC_SCRATCH_SIZE),
            (names::WATCH_INODES, names::MAX_WATCH_INODES),
            (names::WATCH_EXTS, names::MAX_WATCH_EXTS),
            (names::WATCH_CACHE, names::WATCH_CACHE_SIZE),
            (names::WATCHED_FILES, names::WATCHED_FILES_SIZE),
            (names::RUNTIME, names::RUNTIME_SIZE),
            (names::COUNTERS, names::COUNTERS_SIZE),
            (names::LAST_FILE, names::LAST_FILE_SIZE),
            (names::HOLDINGS, names::HOLDINGS_SIZE),
            (names::CARRIERS, names::CARRIERS_SIZE),
            (names::SOCKET_CARRIERS, names::SOCKET_CARRIERS_SIZE),
            (names::TAKEN, names::TAKEN_SIZE),
            (names::CARRIER_PATHS, names::CARRIER_PATHS_SIZE),
            (names::PATH_SCRATCH, names::PATH_SCRATCH_SIZE),
            (names::HOLD_SCRATCH, names::HOLD_SCRATCH_SIZE),
            (names::CARRIER_SCRATCH, names::CARRIER_SCRATCH_SIZE),
            (names::COUNTERS_SCRATCH, names::COUNTERS_SCRATCH_SIZE),
            (names::LINEAGE_GEN, names::LINEAGE_GEN_SIZE),
        ] {
            let map = obj
                .maps
                .get(name)
                .unwrap_or_else(|| panic!("no map {name}"));
            assert_eq!(map.max_entries(), capacity, "capacity of {name}");
        }
    }

    #[test]
    fn the_object_has_every_program_the_loader_attaches_and_no_other() {
        let obj = object();
        let named: BTreeSet<&str> = programs::ALL.into_iter().collect();
        assert_eq!(named.len(), programs::ALL.len(), "a program named twice");
        let in_object: BTreeSet<&str> = obj.programs.keys().map(String::as_str).collect();
        assert_eq!(in_object, named, "programs in the object, then named");
        let hooked: BTreeSet<&str> = CAPABILITIES
            .iter()
            .flat_map(|c| c.hooks)
            .map(|h| h.program)
            .collect();
        assert_eq!(hooked, named, "programs the loader attaches, then named");
        for hook in CAPABILITIES.iter().flat_map(|c| c.hooks) {
            let section = &obj.programs[hook.program].section;
            let kind_matches = match hook.hook.split_once('/') {
                Some(("tp_btf", _)) => matches!(section, ProgramSection::BtfTracePoint),
                Some(("cgroup", _)) => matches!(section, ProgramSection::CgroupSockAddr { .. }),
                _ => false,
            };
            assert!(
                kind_matches,
                "{} is {section:?}, attached as {}",
                hook.program, hook.hook
            );
        }
    }

    #[test]
    fn the_object_has_the_offsets_global_the_loader_overrides() {
        let mut obj = object();
        // What `EbpfLoader::override_global(_, _, true)` does at load: the
        // symbol must exist and be exactly an `Offsets`.
        let bytes = vec![0u8; std::mem::size_of::<Offsets>()];
        obj.patch_map_data(HashMap::from([(
            names::OFFSETS_GLOBAL,
            (bytes.as_slice(), true),
        )]))
        .expect("the OFFSETS global, the size of Offsets");
    }
}
