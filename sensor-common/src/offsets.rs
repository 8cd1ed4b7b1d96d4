//! Kernel struct member offsets, resolved from the running kernel's BTF by
//! user space at load time and handed to the programs as a frozen global.
//!
//! Each field is the byte offset of a (possibly nested) member, e.g.
//! `file_dentry` is `offsetof(struct file, f_path) + offsetof(struct path, dentry)`.

/// `Offsets::magic` once user space filled the struct; the programs refuse to
/// count with the zero initializer.
pub const OFFSETS_MAGIC: u32 = 0x5e45_0001;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub magic: u32,
    // struct task_struct
    pub task_files: u32,
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_signal: u32,
    // struct signal_struct
    pub signal_live: u32,
    /// `signal_struct.pids[PIDTYPE_SID]`
    pub signal_sid_pid: u32,
    /// `pid.numbers[0].nr`
    pub pid_nr: u32,
    // struct files_struct / fdtable
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    // struct file
    pub file_inode: u32,
    pub file_dentry: u32,
    // struct dentry
    pub dentry_parent: u32,
    pub dentry_inode: u32,
    pub dentry_name_len: u32,
    pub dentry_name_ptr: u32,
    // struct inode / super_block
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    // struct sock (sock_common)
    pub sk_family: u32,
    pub sk_daddr: u32,
    pub sk_dport: u32,
    pub sk_v6_daddr: u32,
    pub sk_cookie: u32,
    // struct inode
    pub inode_size: u32,
    /// `inode.i_blocks` (512-byte units allocated on disk)
    pub inode_blocks: u32,
    /// `inode.i_mapping`
    pub inode_mapping: u32,
    /// `address_space.nrpages` (pages of the file in the page cache)
    pub mapping_nrpages: u32,
    pub _pad0: u32,
    // io_uring (0 when the kernel has none; the program is then not attached)
    /// `io_kiocb.opcode`
    pub req_opcode: u32,
    /// `io_kiocb.file`
    pub req_file: u32,
    /// `io_uring_cqe.res`
    pub cqe_res: u32,
    // exec
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `mm_struct.arg_start` / `arg_end`
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    // sockets behind a file descriptor (the send-syscall fallback)
    /// `file.private_data` (a `struct socket *` for sockets)
    pub file_private_data: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `FEATURE_*` bits: what this kernel offers the programs.
    pub features: u32,
    /// How `io_uring_complete` passes the result: `IO_URING_TP_*`.
    pub io_uring_tp: u32,
    // lineage
    /// `sock_common.skc_rcv_saddr` / `skc_num` / `skc_v6_rcv_saddr` (local end)
    pub sk_rcv_saddr: u32,
    pub sk_num: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `unix_sock.peer` (0: UNIX relays not followed)
    pub unix_peer: u32,
    /// `super_block.s_magic`
    pub sb_magic: u32,
    /// `inode.i_state`, and its `I_DIRTY_PAGES` bit on this kernel
    pub inode_state: u32,
    pub dirty_pages_flag: u32,
    /// `sock.sk_type` (0: datagram receivers are not matched by port)
    pub sk_type: u32,
    /// ext4's delayed allocation: `ext4_inode_info.i_reserved_data_blocks`
    /// minus `ext4_inode_info.vfs_inode` (from the `struct inode`, may be
    /// negative: an `i32` in two's complement), and `super_block.s_blocksize`.
    /// `ext4_delalloc` is 0 when ext4's types are not in vmlinux BTF.
    pub ext4_reserved: u32,
    pub sb_blocksize: u32,
    pub ext4_delalloc: u32,
    pub _pad1: u32,
}

/// `bpf_get_current_task_btf` exists (5.11+): task fields are direct loads.
/// Without it the programs read the task through `bpf_probe_read_kernel`.
pub const FEATURE_TASK_BTF: u32 = 1;
/// Sends are counted at the send syscalls' exits (no `sock_send_length`):
/// io_uring's sends, which no syscall returns, are then counted at
/// `io_uring_complete`.
pub const FEATURE_SEND_FALLBACK: u32 = 2;

/// `io_uring_complete` has no request argument (before 5.19): not usable.
pub const IO_URING_TP_NONE: u32 = 0;
/// `(ctx, req, user_data, int res, cflags, extra1, extra2)` (5.19 – 6.2).
pub const IO_URING_TP_RES_ARG: u32 = 1;
/// `(ctx, req, struct io_uring_cqe *cqe)` (6.3+).
pub const IO_URING_TP_CQE: u32 = 2;

impl Offsets {
    /// The all-zero initializer the eBPF object is built with.
    pub const ZERO: Self = Self {
        magic: 0,
        task_files: 0,
        task_real_parent: 0,
        task_tgid: 0,
        task_signal: 0,
        signal_live: 0,
        signal_sid_pid: 0,
        pid_nr: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_inode: 0,
        file_dentry: 0,
        dentry_parent: 0,
        dentry_inode: 0,
        dentry_name_len: 0,
        dentry_name_ptr: 0,
        inode_mode: 0,
        inode_ino: 0,
        inode_sb: 0,
        sb_dev: 0,
        sk_family: 0,
        sk_daddr: 0,
        sk_dport: 0,
        sk_v6_daddr: 0,
        sk_cookie: 0,
        inode_size: 0,
        inode_blocks: 0,
        inode_mapping: 0,
        mapping_nrpages: 0,
        _pad0: 0,
        req_opcode: 0,
        req_file: 0,
        cqe_res: 0,
        task_mm: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        bprm_filename: 0,
        file_private_data: 0,
        socket_sk: 0,
        features: 0,
        io_uring_tp: 0,
        sk_rcv_saddr: 0,
        sk_num: 0,
        sk_v6_rcv_saddr: 0,
        unix_peer: 0,
        sb_magic: 0,
        inode_state: 0,
        dirty_pages_flag: 0,
        sk_type: 0,
        ext4_reserved: 0,
        sb_blocksize: 0,
        ext4_delalloc: 0,
        _pad1: 0,
    };
}

const _: () = assert!(core::mem::size_of::<Offsets>() == 216);
