//! Reading lineage from the kernel maps: a process's holding of weights,
//! the chain of hops that brought them to it, and how many lineage entries
//! the (LRU) maps lost.

use std::collections::HashSet;

use sensor_common::{
    lineage::{
        Carrier, CarrierKey, CarrierPath, Holding, Taken, TakenKey, VIA_FILE, VIA_LOOPBACK,
        VIA_PIPE, VIA_READ, VIA_UNIX,
    },
    maps as names, Count, InodeKey, Loss, COUNTER_SLOTS,
};

use super::loader::Sensor;
use crate::util::text::c_string;

/// Hops followed at most from a sender back to the weights file.
pub const MAX_HOPS: usize = 8;

/// How weights reached a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    Read,
    File,
    Pipe,
    Unix,
    Loopback,
}

impl Via {
    pub fn from_raw(via: u32) -> Option<Via> {
        Some(match via {
            VIA_READ => Via::Read,
            VIA_FILE => Via::File,
            VIA_PIPE => Via::Pipe,
            VIA_UNIX => Via::Unix,
            VIA_LOOPBACK => Via::Loopback,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Via::Read => "read",
            Via::File => "file",
            Via::Pipe => "pipe",
            Via::Unix => "unix",
            Via::Loopback => "loopback",
        }
    }
}

/// Where a hop took its bytes from, as the kernel recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A watched file (the path is resolved by the path cache; the
    /// components the kernel kept when the process first read it are the
    /// fallback, e.g. for a file moved out of the watched directories).
    Watched {
        key: InodeKey,
        parts: Vec<String>,
        complete: bool,
    },
    /// A derived file or FIFO: its device, inode and the path components
    /// the kernel kept (file name first), when it kept them.
    Node {
        key: InodeKey,
        parts: Vec<String>,
        complete: bool,
    },
    /// A UNIX socket.
    Unix,
    /// An inet connection on this host: the receiving address and port.
    Inet(std::net::IpAddr, u16),
    /// The carrier left the map before it was read.
    Unknown,
}

/// One hop: `pid` took `bytes` of weights `via` from `source`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub pid: u32,
    pub comm: String,
    pub via: Via,
    pub source: Source,
    pub bytes: u64,
}

impl Sensor {
    /// The flow of `tgid`'s holding (the one of its main source).
    pub fn flow_of(&self, tgid: u32) -> Option<u64> {
        let h: Holding = self.lookup(names::HOLDINGS, &tgid)?;
        Some(h.flow)
    }

    fn carrier(&self, key: &CarrierKey) -> Option<Carrier> {
        let name = if key.via == VIA_UNIX || key.via == VIA_LOOPBACK {
            names::SOCKET_CARRIERS
        } else {
            names::CARRIERS
        };
        self.lookup(name, key)
    }

    /// The hops from the original weights file to `tgid`, origin first.
    pub fn lineage(&self, tgid: u32) -> Vec<Hop> {
        let mut hops = Vec::new();
        let mut seen = HashSet::new();
        let mut pid = tgid;
        while hops.len() < MAX_HOPS && seen.insert(pid) {
            let Some(h) = self.lookup::<u32, Holding>(names::HOLDINGS, &pid) else {
                break;
            };
            let Some(via) = Via::from_raw(h.src.via) else {
                break;
            };
            hops.push(Hop {
                pid,
                comm: c_string(&h.comm),
                via,
                source: self.source(&h.src),
                bytes: h.src_bytes,
            });
            if via == Via::Read || h.src_writer == 0 {
                break;
            }
            pid = h.src_writer;
        }
        hops.reverse();
        hops
    }

    fn source(&self, key: &CarrierKey) -> Source {
        let inode = InodeKey {
            dev: key.dev,
            _pad: 0,
            ino: key.id,
        };
        let path = || {
            let path: Option<CarrierPath> = self.lookup(names::CARRIER_PATHS, key);
            path.map_or((Vec::new(), false), |p| {
                let parts = p
                    .parts
                    .iter()
                    .take(p.depth as usize)
                    .map(|b| c_string(b))
                    .filter(|s| !s.is_empty())
                    .collect();
                (parts, p.complete != 0)
            })
        };
        match key.via {
            VIA_READ => {
                let (parts, complete) = path();
                Source::Watched {
                    key: inode,
                    parts,
                    complete,
                }
            }
            VIA_FILE | VIA_PIPE => {
                let (parts, complete) = path();
                Source::Node {
                    key: inode,
                    parts,
                    complete,
                }
            }
            VIA_UNIX => Source::Unix,
            VIA_LOOPBACK => match self.carrier(key) {
                Some(c) => Source::Inet(ip_of(&c.addr), c.port),
                None => Source::Unknown,
            },
            _ => Source::Unknown,
        }
    }

    /// Lineage entries the LRU maps dropped since start, by loss slot:
    /// entries the kernel made (and user space seeded; `made` read before
    /// the walk) minus those it removed itself (read after it) minus those
    /// there now. Each map's keys are walked: call it every few polls.
    pub fn lineage_evictions(&self, made: &[u64; COUNTER_SLOTS]) -> anyhow::Result<Evictions> {
        let holdings = self.count_keys::<u32, Holding>(names::HOLDINGS)?;
        let carriers = self.count_keys::<CarrierKey, Carrier>(names::CARRIERS)?;
        let sockets = self.count_keys::<CarrierKey, Carrier>(names::SOCKET_CARRIERS)?;
        let taken = self.count_keys::<TakenKey, Taken>(names::TAKEN)?;
        let files = self.count_keys::<InodeKey, u32>(names::WATCHED_FILES)?;
        // A holding made before `made` was read and removed at its exit
        // during the walk is in neither `made - forgotten` nor the walk
        // unless `forgotten` is read now.
        let forgotten = self.read_lost()?[Count::HoldingsForgotten.index()];
        let gone = |made: u64, now: u64| made.saturating_sub(now);
        Ok(Evictions {
            entries: [holdings, carriers, sockets, taken, files],
            lost: [
                (
                    Loss::HoldingEvicted,
                    gone(
                        made[Count::HoldingsMade.index()].saturating_sub(forgotten),
                        holdings,
                    ),
                ),
                (
                    Loss::CarrierEvicted,
                    gone(made[Count::CarriersMade.index()], carriers),
                ),
                (
                    Loss::SocketCarrierEvicted,
                    gone(made[Count::SocketCarriersMade.index()], sockets),
                ),
                (
                    Loss::TakenEvicted,
                    gone(made[Count::TakenMade.index()], taken),
                ),
                (
                    Loss::WatchedFileEvicted,
                    gone(
                        made[Count::WatchedFilesMade.index()] + self.seeded_files(),
                        files,
                    ),
                ),
            ],
        })
    }
}

/// Entries of the lineage maps now, and how many each lost since start.
#[derive(Clone, Debug)]
pub struct Evictions {
    /// holdings, carriers (files, pipes), socket carriers, taken, watched files.
    pub entries: [u64; 5],
    pub lost: [(Loss, u64); 5],
}

fn ip_of(addr: &[u8; 16]) -> std::net::IpAddr {
    let v6 = std::net::Ipv6Addr::from(*addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.into(),
        None => v6.into(),
    }
}
