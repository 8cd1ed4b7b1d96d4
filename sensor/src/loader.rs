//! Loading and attaching the kernel programs: the only module that knows aya.
//!
//! A table lists each program, its hook and the capability it provides; one
//! loop loads and attaches them. A required program that fails aborts the
//! whole load, and dropping the half-built `Ebpf` detaches whatever was
//! attached: the sensor is either fully attached or not at all.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};
use sensor_common::{
    counter, maps as names, maps::programs, ExtKey, FileKey, InodeKey, Offsets, ProcCounters,
    ProcInfo, RuntimeConfig, SendCounters, SendKey,
};

use crate::{offsets, watch::WatchSet};

/// The eBPF object, built by `build.rs` from `sensor-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));

/// One kernel program: what it hooks and what it gives the sensor.
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    pub program: &'static str,
    /// `tp_btf` tracepoint name.
    pub hook: &'static str,
    pub capability: &'static str,
    /// Without it the agent refuses to run.
    pub required: bool,
}

pub const PROBES: [ProbeSpec; 4] = [
    ProbeSpec {
        program: programs::FILE_SYS_EXIT,
        hook: "sys_exit",
        capability: "file_read",
        required: true,
    },
    ProbeSpec {
        program: programs::NET_SOCK_SEND_LENGTH,
        hook: "sock_send_length",
        capability: "socket_send",
        required: true,
    },
    ProbeSpec {
        program: programs::PROCESS_EXIT,
        hook: "sched_process_exit",
        capability: "process_exit",
        required: true,
    },
    ProbeSpec {
        program: programs::PROCESS_EXEC,
        hook: "sched_process_exec",
        capability: "process_exec",
        required: false,
    },
];

/// What happened to one program.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub spec: ProbeSpec,
    /// `Ok(())` when attached, else the kernel's (or aya's) reason.
    pub result: Result<(), String>,
}

/// Sizes of the kernel maps.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    pub processes: u32,
}

/// The loaded and attached sensor. Dropping it detaches every program.
pub struct Sensor {
    ebpf: Ebpf,
    pub probes: Vec<ProbeStatus>,
    generation: u32,
    any_ext_mask: u64,
}

impl Sensor {
    /// Loads the programs, fills the watch tables and attaches everything.
    pub fn load(watch: &WatchSet, capacity: Capacity) -> anyhow::Result<Self> {
        let mut ebpf = open(capacity)?;
        fill_watch_tables(&mut ebpf, watch)?;
        let probes = attach_all(&mut ebpf)?;
        if let Some(failed) = probes.iter().find(|p| p.spec.required && p.result.is_err()) {
            let reason = failed.result.clone().err().unwrap_or_default();
            return Err(anyhow!(
                "cannot attach {} to {}: {reason}",
                failed.spec.program,
                failed.spec.hook
            ));
        }
        let mut sensor = Sensor {
            ebpf,
            probes,
            generation: 0,
            any_ext_mask: watch.any_ext_mask,
        };
        sensor.bump_generation()?;
        Ok(sensor)
    }

    /// Tries each program on its own (for `sensor check`); never fails as a whole
    /// once the object loads.
    pub fn probe_each() -> anyhow::Result<Vec<ProbeStatus>> {
        let mut ebpf = open(Capacity {
            processes: names::DEFAULT_MAX_PROCS,
        })?;
        attach_all(&mut ebpf)
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
        };
        rt.set(0, value, 0).context("writing RUNTIME")?;
        Ok(())
    }

    pub fn read_counters(&self) -> anyhow::Result<Vec<(u32, ProcCounters)>> {
        let map: PerCpuHashMap<&MapData, u32, ProcCounters> =
            PerCpuHashMap::try_from(map(&self.ebpf, names::PROC_STATS)?)?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let Ok((tgid, per_cpu)) = entry else { continue };
            let mut sum = ProcCounters::default();
            for c in per_cpu.iter() {
                sum.read_bytes += c.read_bytes;
                sum.read_ops += c.read_ops;
                sum.watched_read_bytes += c.watched_read_bytes;
                sum.watched_read_ops += c.watched_read_ops;
                sum.sent_bytes += c.sent_bytes;
                sum.send_ops += c.send_ops;
            }
            out.push((tgid, sum));
        }
        Ok(out)
    }

    pub fn read_infos(&self) -> anyhow::Result<Vec<(u32, ProcInfo)>> {
        let map: HashMap<&MapData, u32, ProcInfo> =
            HashMap::try_from(map(&self.ebpf, names::PROC_INFO)?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    pub fn read_sends(&self) -> anyhow::Result<Vec<(SendKey, SendCounters)>> {
        let map: PerCpuHashMap<&MapData, SendKey, SendCounters> =
            PerCpuHashMap::try_from(map(&self.ebpf, names::SEND_STATS)?)?;
        let mut out = Vec::new();
        for entry in map.iter() {
            let Ok((key, per_cpu)) = entry else { continue };
            let sum = per_cpu
                .iter()
                .fold(SendCounters::default(), |a, c| SendCounters {
                    bytes: a.bytes + c.bytes,
                    ops: a.ops + c.ops,
                });
            out.push((key, sum));
        }
        Ok(out)
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

    /// Cumulative `COUNTERS`, by index.
    pub fn read_lost(&self) -> anyhow::Result<[u64; counter::COUNT as usize]> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map(&self.ebpf, names::COUNTERS)?)?;
        let mut out = [0; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
        }
        Ok(out)
    }

    /// Removes exited processes (and their destinations and files) from the maps.
    pub fn forget(
        &mut self,
        tgids: &[u32],
        sends: &[SendKey],
        files: &[FileKey],
    ) -> anyhow::Result<()> {
        {
            let mut m: PerCpuHashMap<&mut MapData, u32, ProcCounters> =
                PerCpuHashMap::try_from(map_mut(&mut self.ebpf, names::PROC_STATS)?)?;
            for t in tgids {
                let _ = m.remove(t);
            }
        }
        {
            let mut m: HashMap<&mut MapData, u32, ProcInfo> =
                HashMap::try_from(map_mut(&mut self.ebpf, names::PROC_INFO)?)?;
            for t in tgids {
                let _ = m.remove(t);
            }
        }
        {
            let mut m: PerCpuHashMap<&mut MapData, SendKey, SendCounters> =
                PerCpuHashMap::try_from(map_mut(&mut self.ebpf, names::SEND_STATS)?)?;
            for k in sends {
                let _ = m.remove(k);
            }
        }
        let mut m: PerCpuHashMap<&mut MapData, FileKey, u64> =
            PerCpuHashMap::try_from(map_mut(&mut self.ebpf, names::FILE_STATS)?)?;
        for k in files {
            let _ = m.remove(k);
        }
        Ok(())
    }
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
fn open(capacity: Capacity) -> anyhow::Result<Ebpf> {
    raise_memlock_limit();
    let offsets: Offsets = offsets::resolve_offsets(Path::new(offsets::VMLINUX_BTF))?;
    let procs = capacity.processes;
    EbpfLoader::new()
        .override_global(names::OFFSETS_GLOBAL, &offsets, true)
        .map_max_entries(names::PROC_STATS, procs)
        .map_max_entries(names::PROC_INFO, procs)
        .map_max_entries(names::FILE_STATS, procs)
        .map_max_entries(names::SEND_STATS, procs.saturating_mul(2))
        .load(EBPF_OBJECT)
        .context("loading the eBPF object (maps)")
}

fn attach_all(ebpf: &mut Ebpf) -> anyhow::Result<Vec<ProbeStatus>> {
    let btf = Btf::from_sys_fs().context("reading kernel BTF for attach points")?;
    let mut out = Vec::new();
    for spec in PROBES {
        let result = attach_one(ebpf, &btf, &spec).map_err(|e| format!("{e:#}"));
        match &result {
            Ok(()) => tracing::info!(program = spec.program, hook = spec.hook, "attached"),
            Err(reason) => {
                tracing::warn!(program = spec.program, hook = spec.hook, %reason, "not attached")
            }
        }
        out.push(ProbeStatus { spec, result });
    }
    Ok(out)
}

fn attach_one(ebpf: &mut Ebpf, btf: &Btf, spec: &ProbeSpec) -> anyhow::Result<()> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| anyhow!("eBPF object has no program {}", spec.program))?
        .try_into()?;
    program.load(spec.hook, btf).context("load")?;
    program.attach().context("attach")?;
    Ok(())
}

fn fill_watch_tables(ebpf: &mut Ebpf, watch: &WatchSet) -> anyhow::Result<()> {
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
    Ok(())
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
