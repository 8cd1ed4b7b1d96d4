//! Reading kernel memory at offsets resolved from the running kernel's BTF.
//!
//! `OFFSETS` lives in frozen `.rodata`: user space overrides it before load
//! (`EbpfLoader::override_global`), so the verifier sees constants. Each field
//! is read with `read_volatile`, or LLVM would fold the zero initializer.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use sensor_common::{offsets::OFFSETS_MAGIC, Loss, Offsets};

#[unsafe(no_mangle)]
pub(crate) static OFFSETS: Offsets = Offsets::ZERO;

/// The offset of one member, e.g. `off!(file_inode)`.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a plain read of a static; volatile so the loader's value is used.
        unsafe {
            core::ptr::read_volatile(&raw const $crate::runtime::kernel::OFFSETS.$field) as usize
        }
    };
}
pub(crate) use off;

/// True once user space patched the offsets (never true for the zero initializer).
#[inline(always)]
pub fn offsets_ready() -> bool {
    // SAFETY: as in `off!`.
    unsafe { core::ptr::read_volatile(&raw const OFFSETS.magic) == OFFSETS_MAGIC }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: usize) -> Result<T, Loss> {
    // SAFETY: bpf_probe_read_kernel tolerates any address and reports faults.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset) as *const T) }
        .map_err(|_| Loss::KernelReadError)
}

/// Reads a pointer at `base + offset`.
#[inline(always)]
pub fn read_ptr(base: *const u8, offset: usize) -> Result<*const u8, Loss> {
    read::<*const u8>(base, offset)
}

/// The current `struct task_struct *`.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a helper without preconditions; the pointer is only ever read
    // through `read`.
    unsafe { aya_ebpf::helpers::bpf_get_current_task() as *const u8 }
}

/// The current task as a BTF pointer: loads through it at constant offsets
/// are checked by the verifier and need no helper call.
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    // SAFETY: a helper without preconditions.
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_task_btf() as *const u8 }
}

/// A direct load at `base + offset` through a BTF-typed pointer (a
/// `tp_btf` argument or `current_task_btf`), with `offset` a constant or a
/// frozen `.rodata` value: the verifier checks it against the type.
#[inline(always)]
pub fn load<T: Copy>(base: *const u8, offset: usize) -> T {
    // SAFETY: only called on BTF pointers, where the verifier turns the
    // access into a fault-tolerant load checked against the kernel's BTF.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset) as *const T) }
}

/// `bpf_get_current_task_btf` is available (5.11+). A frozen constant: the
/// verifier drops the branch not taken, helper call included, so one object
/// loads on kernels with and without it.
#[inline(always)]
pub fn has_task_btf() -> bool {
    off!(features) as u32 & sensor_common::offsets::FEATURE_TASK_BTF != 0
}

/// Sends are counted at syscall exits (see `FEATURE_SEND_FALLBACK`).
#[inline(always)]
pub fn send_fallback() -> bool {
    off!(features) as u32 & sensor_common::offsets::FEATURE_SEND_FALLBACK != 0
}

/// How a kernel pointer is read: [`Direct`] loads through BTF-typed
/// pointers, [`Probe`] helper reads through plain addresses. Code generic
/// over it walks the same structures in both worlds.
pub trait Mem {
    fn get<T: Copy>(base: *const u8, offset: usize) -> Result<T, Loss>;
}

/// Direct loads (a `tp_btf` argument, `current_task_btf` and what they lead to).
pub struct Direct;

/// `bpf_probe_read_kernel` (addresses the verifier knows nothing about).
pub struct Probe;

impl Mem for Direct {
    #[inline(always)]
    fn get<T: Copy>(base: *const u8, offset: usize) -> Result<T, Loss> {
        Ok(load(base, offset))
    }
}

impl Mem for Probe {
    #[inline(always)]
    fn get<T: Copy>(base: *const u8, offset: usize) -> Result<T, Loss> {
        read(base, offset)
    }
}

/// `S_IFMT` and the file types the programs tell apart (uapi `stat.h`).
pub const S_IFMT: u16 = 0o170000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFIFO: u16 = 0o010000;
