//! Syscall ABI of the target architecture: where `sys_exit`'s `struct pt_regs`
//! keeps the syscall number and first argument, and the numbers of the read
//! family. These are the architecture's user ABI, identical on every kernel.

#[cfg(bpf_target_arch = "x86_64")]
mod imp {
    /// `offsetof(struct pt_regs, orig_ax)`
    pub const REGS_SYSCALL_NR: usize = 120;
    /// `offsetof(struct pt_regs, di)`: the first argument survives the syscall.
    pub const REGS_ARG0: usize = 112;
    pub const NR_READ: i64 = 0;
    pub const NR_PREAD64: i64 = 17;
    pub const NR_READV: i64 = 19;
    pub const NR_PREADV: i64 = 295;
    pub const NR_PREADV2: i64 = 327;
}

#[cfg(bpf_target_arch = "aarch64")]
mod imp {
    /// `offsetof(struct pt_regs, syscallno)` (an `s32`, sign-extended on read).
    pub const REGS_SYSCALL_NR: usize = 280;
    /// `offsetof(struct pt_regs, orig_x0)`: `regs[0]` holds the return value.
    pub const REGS_ARG0: usize = 272;
    pub const NR_READ: i64 = 63;
    pub const NR_PREAD64: i64 = 67;
    pub const NR_READV: i64 = 65;
    pub const NR_PREADV: i64 = 69;
    pub const NR_PREADV2: i64 = 286;
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("sensor-ebpf supports x86_64 and aarch64 syscall ABIs only");

pub use imp::*;

/// True for the syscalls whose positive return value is a count of bytes read
/// from the file descriptor in their first argument.
#[inline(always)]
pub fn is_read_family(nr: i64) -> bool {
    nr == NR_READ || nr == NR_PREAD64 || nr == NR_READV || nr == NR_PREADV || nr == NR_PREADV2
}
