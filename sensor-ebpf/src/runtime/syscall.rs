//! Syscall ABI of the target architecture: where `sys_exit`'s `struct pt_regs`
//! keeps the syscall number and arguments, and the numbers of the syscalls
//! the sensor counts. These are the architecture's user ABI, identical on
//! every kernel build.

#[cfg(bpf_target_arch = "x86_64")]
mod imp {
    /// `offsetof(struct pt_regs, orig_ax)`
    pub const REGS_SYSCALL_NR: usize = 120;
    /// Offsets of the six arguments: di, si, dx, r10, r8, r9 (they survive the
    /// syscall; ax holds the return value).
    pub const REGS_ARGS: [usize; 6] = [112, 104, 96, 56, 72, 64];
    pub const NR_READ: i64 = 0;
    pub const NR_PREAD64: i64 = 17;
    pub const NR_READV: i64 = 19;
    pub const NR_PREADV: i64 = 295;
    pub const NR_PREADV2: i64 = 327;
    pub const NR_SENDFILE: i64 = 40;
    pub const NR_SPLICE: i64 = 275;
    pub const NR_COPY_FILE_RANGE: i64 = 326;
    pub const NR_MMAP: i64 = 9;
    pub const NR_SETSID: i64 = 112;
    pub const NR_WRITE: i64 = 1;
    pub const NR_WRITEV: i64 = 20;
    pub const NR_SENDTO: i64 = 44;
    pub const NR_SENDMSG: i64 = 46;
    pub const NR_SENDMMSG: i64 = 307;
    pub const NR_PWRITE64: i64 = 18;
    pub const NR_PWRITEV: i64 = 296;
    pub const NR_PWRITEV2: i64 = 328;
    pub const NR_VMSPLICE: i64 = 278;
    pub const NR_RECVFROM: i64 = 45;
    pub const NR_RECVMSG: i64 = 47;
}

#[cfg(bpf_target_arch = "aarch64")]
mod imp {
    /// `offsetof(struct pt_regs, syscallno)`
    pub const REGS_SYSCALL_NR: usize = 280;
    /// `orig_x0` (x0 holds the return value), then x1..x5.
    pub const REGS_ARGS: [usize; 6] = [272, 8, 16, 24, 32, 40];
    pub const NR_READ: i64 = 63;
    pub const NR_PREAD64: i64 = 67;
    pub const NR_READV: i64 = 65;
    pub const NR_PREADV: i64 = 69;
    pub const NR_PREADV2: i64 = 286;
    pub const NR_SENDFILE: i64 = 71;
    pub const NR_SPLICE: i64 = 76;
    pub const NR_COPY_FILE_RANGE: i64 = 285;
    pub const NR_MMAP: i64 = 222;
    pub const NR_SETSID: i64 = 157;
    pub const NR_WRITE: i64 = 64;
    pub const NR_WRITEV: i64 = 66;
    pub const NR_SENDTO: i64 = 206;
    pub const NR_SENDMSG: i64 = 211;
    pub const NR_SENDMMSG: i64 = 269;
    pub const NR_PWRITE64: i64 = 68;
    pub const NR_PWRITEV: i64 = 70;
    pub const NR_PWRITEV2: i64 = 287;
    pub const NR_VMSPLICE: i64 = 75;
    pub const NR_RECVFROM: i64 = 207;
    pub const NR_RECVMSG: i64 = 212;
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("sensor-ebpf supports x86_64 and aarch64 syscall ABIs only");

pub use imp::*;

/// For syscalls whose positive return value is a count of bytes taken from
/// a file descriptor: which argument holds that descriptor.
/// read/pread64/readv/preadv/preadv2 (fd), recvfrom/recvmsg (a socket),
/// splice and copy_file_range (fd_in), sendfile (in_fd, the second argument).
#[inline(always)]
pub fn source_fd_arg(nr: i64) -> Option<usize> {
    if nr == NR_READ
        || nr == NR_PREAD64
        || nr == NR_READV
        || nr == NR_PREADV
        || nr == NR_PREADV2
        || nr == NR_SPLICE
        || nr == NR_COPY_FILE_RANGE
        || nr == NR_RECVFROM
        || nr == NR_RECVMSG
    {
        Some(0)
    } else if nr == NR_SENDFILE {
        Some(1)
    } else {
        None
    }
}

/// For syscalls whose positive return value is a count of bytes put into a
/// file descriptor (sendmmsg: of messages): which argument holds it.
/// write, writev, sendto (send), sendmsg, sendmmsg and sendfile (`out_fd`),
/// splice (`fd_out`, the third).
#[inline(always)]
pub fn sink_fd_arg(nr: i64) -> Option<usize> {
    if nr == NR_WRITE
        || nr == NR_WRITEV
        || nr == NR_SENDTO
        || nr == NR_SENDMSG
        || nr == NR_SENDMMSG
        || nr == NR_SENDFILE
    {
        Some(0)
    } else if nr == NR_SPLICE {
        Some(2)
    } else {
        None
    }
}

/// For syscalls whose positive return value is a count of bytes written
/// into a file or pipe (lineage): which argument holds the descriptor.
/// write, writev, pwrite64, pwritev, pwritev2, vmsplice and sendfile
/// (`out_fd`) the first; splice and copy_file_range (`fd_out`) the third.
/// Sends on sockets are marked where they are counted.
#[inline(always)]
pub fn written_fd_arg(nr: i64) -> Option<usize> {
    if nr == NR_WRITE
        || nr == NR_WRITEV
        || nr == NR_PWRITE64
        || nr == NR_PWRITEV
        || nr == NR_PWRITEV2
        || nr == NR_VMSPLICE
        || nr == NR_SENDFILE
    {
        Some(0)
    } else if nr == NR_SPLICE || nr == NR_COPY_FILE_RANGE {
        Some(2)
    } else {
        None
    }
}
