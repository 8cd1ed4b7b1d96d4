//! Lineage: weights stay weights as they move on the host.
//!
//! A process that took in weights *holds* them ([`Holding`]): bytes it read
//! from watched files (distinct, capped by what each file holds on disk),
//! from *derived* files, or *relayed* to it through a pipe, FIFO, UNIX
//! socket or inet connection on this host. Whatever a holder writes or sends
//! into one of those *carriers* ([`Carrier`]) carries weights, at most as
//! many bytes as the writer holds (proportional: a process that read a few
//! KiB of weights does not make the dataset it writes later weights). A
//! reader of a carrier takes in at most what the carrier holds, once
//! ([`TakenKey`]: re-reading does not count twice).

use crate::InodeKey;

/// How bytes reached a holder: the `via` of a lineage hop.
/// A watched file (the original weights).
pub const VIA_READ: u32 = 1;
/// A derived file: written by a holder (a copy, an archive, a file on tmpfs).
pub const VIA_FILE: u32 = 2;
/// A pipe or FIFO written by a holder.
pub const VIA_PIPE: u32 = 3;
/// A UNIX-domain socket a holder sent on.
pub const VIA_UNIX: u32 = 4;
/// An inet connection on this host (loopback, or any local address) a
/// holder sent on: the receiver is matched by the connection's addresses.
pub const VIA_LOOPBACK: u32 = 5;

/// `CarrierKey::dev` of an inet carrier keyed by the connection (hash of
/// both ends).
pub const INET_CONN: u32 = 0;
/// `CarrierKey::dev` of an inet carrier keyed by the receiving port only
/// (for unconnected datagram receivers, which know no remote end).
pub const INET_PORT: u32 = 1;

/// A carrier: a file or pipe `(VIA_FILE|VIA_PIPE, dev, ino)`, a UNIX socket
/// `(VIA_UNIX, 0, receiving struct sock address)`, an inet connection
/// `(VIA_LOOPBACK, INET_CONN, hash)` or port `(VIA_LOOPBACK, INET_PORT, port)`.
/// `via == VIA_READ` names a watched file (the origin of a holding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CarrierKey {
    pub via: u32,
    pub dev: u32,
    pub id: u64,
}

/// What a carrier holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carrier {
    /// Bytes of weights put into it, never more than its writers held.
    pub bytes: u64,
    /// The flow (see [`Holding::flow`]) of its first writer.
    pub flow: u64,
    /// The original weights file of that flow.
    pub origin: InodeKey,
    /// tgid of its first writer.
    pub writer: u32,
    /// Receiving port (host order) of an inet carrier, else 0.
    pub port: u16,
    pub _pad: u16,
    /// Receiving address of an inet carrier (IPv4 as `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Command name of its first writer.
    pub comm: [u8; 16],
}

/// Weights a process took in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// Bytes of weights taken in, all ways (the cap of what it passes on).
    pub bytes: u64,
    /// The flow: set when a process first takes in weights from a watched
    /// file, inherited through carriers. A chain of holders is one flow.
    pub flow: u64,
    /// The original weights file of the flow.
    pub origin: InodeKey,
    /// Where most of its weights came from (the hop an alert names).
    pub src: CarrierKey,
    /// Bytes taken from `src`.
    pub src_bytes: u64,
    /// The first writer of `src` (0 for a watched file).
    pub src_writer: u32,
    /// `HOLDING_*` flags.
    pub flags: u32,
    pub comm: [u8; 16],
    /// The runner-up source: when it has given more than `src`, the two
    /// swap (and, swapping to a carrier, the carrier's flow becomes the
    /// holder's). A process that
    /// first read a few KiB of a watched `*.pth` and then took a model
    /// through a pipe is named, and judged, by the pipe.
    pub alt: CarrierKey,
    pub alt_bytes: u64,
    pub alt_writer: u32,
    pub _pad: u32,
}

/// `Holding::flags`: its last thread exited (the holding stays while a
/// chain may name it, but a process reusing the tgid does not inherit it).
pub const HOLDING_EXITED: u32 = 1;
/// `Holding::flags`: it wrote or sent into a carrier (kept after exit).
pub const HOLDING_WROTE: u32 = 2;

/// Bytes a process already took from one carrier (or watched file).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TakenKey {
    pub tgid: u32,
    pub _pad: u32,
    pub carrier: CarrierKey,
}

/// What a process took from one carrier: bytes, in which epoch (see
/// `RuntimeConfig::epoch_ns`; a new epoch starts from 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub bytes: u64,
    pub epoch: u64,
}

/// Path components of a derived file kept by `CARRIER_PATHS`.
pub const PATH_PARTS: usize = 4;
/// Bytes kept of each component (NUL padded, truncated).
pub const PATH_PART_LEN: usize = 48;

/// The last [`PATH_PARTS`] components of a derived file's path, file name
/// first, relative to the root of its file system; `complete` when the root
/// was reached (user space prefixes the mount point of `dev`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarrierPath {
    pub parts: [[u8; PATH_PART_LEN]; PATH_PARTS],
    pub depth: u32,
    pub complete: u32,
}

impl Default for CarrierPath {
    fn default() -> Self {
        Self {
            parts: [[0; PATH_PART_LEN]; PATH_PARTS],
            depth: 0,
            complete: 0,
        }
    }
}

/// The hash of an inet connection, the same from both ends: `from` is the
/// sender's local end, `to` its remote end (the receiver's local end).
/// Addresses are 16 bytes, IPv4 as `::ffff:a.b.c.d`.
#[inline(always)]
pub fn conn_hash(from: &[u8; 16], from_port: u16, to: &[u8; 16], to_port: u16) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ ((from_port as u64) << 16 | to_port as u64);
    let mut i = 0;
    while i < 16 {
        h = (h ^ from[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h = (h ^ to[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h ^ (h >> 29)
}

/// Whether a 16-byte address is IPv4-mapped (`::ffff:a.b.c.d`).
#[inline(always)]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

/// An IPv4 address (network order bytes) as `::ffff:a.b.c.d`.
#[inline(always)]
pub fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

const _: () = {
    assert!(core::mem::size_of::<CarrierKey>() == 16);
    assert!(core::mem::size_of::<Carrier>() == 72);
    assert!(core::mem::size_of::<Holding>() == 112);
    assert!(core::mem::size_of::<TakenKey>() == 24);
    assert!(core::mem::size_of::<Taken>() == 16);
    assert!(core::mem::size_of::<CarrierPath>() == 200);
};

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are `#[repr(C)]`, made of integers, with explicit padding.
    unsafe impl aya::Pod for CarrierKey {}
    unsafe impl aya::Pod for Carrier {}
    unsafe impl aya::Pod for Holding {}
    unsafe impl aya::Pod for TakenKey {}
    unsafe impl aya::Pod for Taken {}
    unsafe impl aya::Pod for CarrierPath {}
}
