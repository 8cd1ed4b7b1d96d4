//! Resolves the kernel struct offsets the programs need from the running
//! kernel's BTF (`/sys/kernel/btf/vmlinux`), so one eBPF object runs on any
//! kernel with BTF. Anonymous unions and structs are descended into, bitfields
//! are refused, and each member's size is checked against what the programs
//! read.

use std::{os::fd::AsRawFd as _, path::Path};

use btf_rs::{Btf, Type};
use sensor_common::{
    offsets::{
        FEATURE_SEND_FALLBACK, FEATURE_TASK_BTF, IO_URING_TP_CQE, IO_URING_TP_NONE,
        IO_URING_TP_RES_ARG, OFFSETS_MAGIC,
    },
    Offsets,
};

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error("cannot read kernel BTF at {path}")]
    Open {
        path: String,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: {0} is a bitfield")]
    Bitfield(String),
    #[error("kernel BTF: {what} is {actual} bytes, expected {expected}")]
    Size {
        what: String,
        actual: usize,
        expected: usize,
    },
    #[error("kernel BTF: {0}")]
    Btf(#[from] btf_rs::Error),
    #[error("kernel BTF: enum value {0} not found")]
    NoEnumValue(String),
    #[error("kernel BTF: no tracepoint {0}")]
    NoTracepoint(String),
}

/// The offsets, and which optional kernel features they could not be found for.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub offsets: Offsets,
    /// Why io_uring's structures could not be resolved (no io_uring in this kernel).
    pub io_uring_missing: Option<String>,
}

/// Maps the BTF file: parsed on demand instead of building the whole type
/// table (the agent's start-up memory peak). Kernels before 6.16 cannot
/// mmap `/sys/kernel/btf/vmlinux` (ENODEV): its bytes are then copied into
/// an anonymous memory file, which can be mapped.
fn open_btf(path: &Path) -> Result<Btf, btf_rs::Error> {
    match Btf::from_file_with_backend(path, btf_rs::Backend::Mmap) {
        Err(btf_rs::Error::IO(e)) if e.raw_os_error() == Some(libc::ENODEV) => {
            let copy = memfd_copy(path)?;
            Btf::from_file_with_backend(
                format!("/proc/self/fd/{}", copy.as_raw_fd()),
                btf_rs::Backend::Mmap,
            )
        }
        other => other,
    }
}

fn memfd_copy(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a NUL-terminated name; the new fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"sensor-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
    std::io::copy(&mut std::fs::File::open(path)?, &mut copy)?;
    Ok(copy)
}

/// Reads the kernel BTF and resolves every offset of [`Offsets`]: the ones
/// every program needs (an error when missing) and io_uring's (reported in
/// [`Resolved::io_uring_missing`]).
pub fn resolve_offsets(path: &Path) -> Result<Resolved, OffsetError> {
    // Mmap: parse on demand instead of building the whole type table (the
    // agent's start-up memory peak).
    let btf = open_btf(path).map_err(|source| OffsetError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let r = Resolver { btf: &btf };
    let sid = r.enum_value("pid_type", "PIDTYPE_SID")?;
    let io_uring_tp = r.io_uring_complete_shape();
    let io_uring = (|| -> Result<(u32, u32, u32), OffsetError> {
        if io_uring_tp == IO_URING_TP_NONE {
            return Err(OffsetError::NoTracepoint(
                "io_uring_complete with a request argument (5.19+)".into(),
            ));
        }
        Ok((
            r.member("io_kiocb", &["opcode"], 1)?,
            r.member("io_kiocb", &["file"], 8)?,
            r.member("io_uring_cqe", &["res"], 4)?,
        ))
    })();
    let mut features = 0;
    if r.enum_value("bpf_func_id", "BPF_FUNC_get_current_task_btf")
        .is_ok()
    {
        features |= FEATURE_TASK_BTF;
    }
    if r.tracepoint_params("sock_send_length").is_none() {
        features |= FEATURE_SEND_FALLBACK;
    }
    let (req_opcode, req_file, cqe_res) = *io_uring.as_ref().unwrap_or(&(0, 0, 0));
    // ext4 (built in on distribution kernels): its delayed allocations, so a
    // file just written is credited before its blocks are allocated.
    let ext4 = (|| -> Result<(i32, ()), OffsetError> {
        let reserved = r.member("ext4_inode_info", &["i_reserved_data_blocks"], 4)?;
        let inode = r.member("ext4_inode_info", &["vfs_inode"], 0)?;
        Ok((reserved as i32 - inode as i32, ()))
    })()
    .ok();
    let offsets = Offsets {
        magic: OFFSETS_MAGIC,
        task_files: r.member("task_struct", &["files"], 8)?,
        task_real_parent: r.member("task_struct", &["real_parent"], 8)?,
        task_tgid: r.member("task_struct", &["tgid"], 4)?,
        task_signal: r.member("task_struct", &["signal"], 8)?,
        signal_live: r.member("signal_struct", &["live"], 4)?,
        // `struct pid *pids[PIDTYPE_MAX]`: the SID slot of the array.
        signal_sid_pid: r.member(
            "signal_struct",
            &["pids"],
            8 * r.array_len("signal_struct", "pids")?,
        )? + 8 * sid,
        pid_nr: r.member("pid", &["numbers"], 0)? + r.member("upid", &["nr"], 4)?,
        files_fdt: r.member("files_struct", &["fdt"], 8)?,
        fdt_max_fds: r.member("fdtable", &["max_fds"], 4)?,
        fdt_fd: r.member("fdtable", &["fd"], 8)?,
        file_inode: r.member("file", &["f_inode"], 8)?,
        file_dentry: r.member("file", &["f_path", "dentry"], 8)?,
        dentry_parent: r.member("dentry", &["d_parent"], 8)?,
        dentry_inode: r.member("dentry", &["d_inode"], 8)?,
        dentry_name_len: r.member("dentry", &["d_name", "len"], 4)?,
        dentry_name_ptr: r.member("dentry", &["d_name", "name"], 8)?,
        inode_mode: r.member("inode", &["i_mode"], 2)?,
        inode_ino: r.member("inode", &["i_ino"], 8)?,
        inode_sb: r.member("inode", &["i_sb"], 8)?,
        sb_dev: r.member("super_block", &["s_dev"], 4)?,
        sk_family: r.member("sock", &["__sk_common", "skc_family"], 2)?,
        sk_daddr: r.member("sock", &["__sk_common", "skc_daddr"], 4)?,
        sk_dport: r.member("sock", &["__sk_common", "skc_dport"], 2)?,
        sk_v6_daddr: r.member("sock", &["__sk_common", "skc_v6_daddr"], 16)?,
        sk_cookie: r.member("sock", &["__sk_common", "skc_cookie"], 8)?,
        inode_size: r.member("inode", &["i_size"], 8)?,
        inode_blocks: r.member("inode", &["i_blocks"], 8)?,
        inode_mapping: r.member("inode", &["i_mapping"], 8)?,
        mapping_nrpages: r.member("address_space", &["nrpages"], 8)?,
        _pad0: 0,
        req_opcode,
        req_file,
        cqe_res,
        task_mm: r.member("task_struct", &["mm"], 8)?,
        mm_arg_start: r.member("mm_struct", &["arg_start"], 8)?,
        mm_arg_end: r.member("mm_struct", &["arg_end"], 8)?,
        bprm_filename: r.member("linux_binprm", &["filename"], 8)?,
        file_private_data: r.member("file", &["private_data"], 8)?,
        socket_sk: r.member("socket", &["sk"], 8)?,
        features,
        io_uring_tp,
        sk_rcv_saddr: r.member("sock", &["__sk_common", "skc_rcv_saddr"], 4)?,
        sk_num: r.member("sock", &["__sk_common", "skc_num"], 2)?,
        sk_v6_rcv_saddr: r.member("sock", &["__sk_common", "skc_v6_rcv_saddr"], 16)?,
        // Built into every distribution kernel; as a module its type is not
        // in vmlinux BTF and UNIX relays are then not followed (`check` says so).
        unix_peer: r.member("unix_sock", &["peer"], 8).unwrap_or(0),
        sb_magic: r.member("super_block", &["s_magic"], 8)?,
        inode_state: r.member("inode", &["i_state"], 0)?,
        dirty_pages_flag: r
            .enum_value("inode_state_flags_t", "I_DIRTY_PAGES")
            .unwrap_or_else(|_| dirty_pages_define()),
        // A plain u16 since 5.6 (a bitfield before: refused, and 0 here).
        sk_type: r.member("sock", &["sk_type"], 2).unwrap_or(0),
        ext4_reserved: ext4.map_or(0, |(rel, _)| rel as u32),
        sb_blocksize: r.member("super_block", &["s_blocksize"], 8)?,
        ext4_delalloc: ext4.is_some() as u32,
        _pad1: 0,
    };
    Ok(Resolved {
        offsets,
        io_uring_missing: io_uring.err().map(|e| e.to_string()),
    })
}

/// `I_DIRTY_PAGES` where fs.h defines it as a macro (not in BTF): `1 << 5`
/// since the i_state bits were reordered in 6.12, `1 << 2` before. Later
/// kernels name it in `enum inode_state_flags_t`.
fn dirty_pages_define() -> u32 {
    let release = crate::util::sysinfo::kernel_release();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= (6, 12) {
        1 << 5
    } else {
        1 << 2
    }
}

struct Resolver<'a> {
    btf: &'a Btf,
}

impl Resolver<'_> {
    fn find_struct(&self, name: &str) -> Result<Type, OffsetError> {
        self.btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if !s.members.is_empty()))
            .ok_or_else(|| OffsetError::NoStruct(name.to_string()))
    }

    /// Byte offset of `strukt.path[0].path[1]…`, checking the last member's
    /// size (0: any size).
    fn member(&self, strukt: &str, path: &[&str], size: usize) -> Result<u32, OffsetError> {
        let mut ty = self.find_struct(strukt)?;
        let mut offset = 0u32;
        let mut what = strukt.to_string();
        for name in path {
            what = format!("{what}.{name}");
            let (bits, member_ty) =
                self.find_member(&ty, name)?
                    .ok_or_else(|| OffsetError::NoMember {
                        strukt: strukt.into(),
                        member: what.clone(),
                    })?;
            offset += bits / 8;
            ty = self.strip(member_ty)?;
        }
        let actual = self.size_of(&ty)?;
        if size != 0 && actual != size {
            return Err(OffsetError::Size {
                what,
                actual,
                expected: size,
            });
        }
        Ok(offset)
    }

    /// Number of elements of the array member `strukt.name`.
    fn array_len(&self, strukt: &str, name: &str) -> Result<usize, OffsetError> {
        let ty = self.find_struct(strukt)?;
        match self
            .find_member(&ty, name)?
            .map(|(_, t)| self.strip(t))
            .transpose()?
        {
            Some(Type::Array(a)) => Ok(a.len()),
            _ => Err(OffsetError::NoMember {
                strukt: strukt.into(),
                member: name.into(),
            }),
        }
    }

    /// Finds `name` in a struct or union, descending into anonymous members;
    /// returns its bit offset and type.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>, OffsetError> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for m in members {
            let m_name = self.btf.resolve_name(m).unwrap_or_default();
            if m_name == name {
                if m.bitfield_size().is_some_and(|b| b != 0) {
                    return Err(OffsetError::Bitfield(name.to_string()));
                }
                return Ok(Some((m.bit_offset(), self.btf.resolve_chained_type(m)?)));
            }
            if m_name.is_empty() {
                let inner = self.strip(self.btf.resolve_chained_type(m)?)?;
                if let Some((bits, t)) = self.find_member(&inner, name)? {
                    return Ok(Some((m.bit_offset() + bits, t)));
                }
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, OffsetError> {
        for _ in 0..32 {
            match &ty {
                Type::Typedef(t) => ty = self.btf.resolve_chained_type(t)?,
                Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => {
                    ty = self.btf.resolve_chained_type(t)?
                }
                Type::TypeTag(t) => ty = self.btf.resolve_chained_type(t)?,
                _ => break,
            }
        }
        Ok(ty)
    }

    fn size_of(&self, ty: &Type) -> Result<usize, OffsetError> {
        Ok(match ty {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => 8,
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Array(a) => {
                let elem = self.strip(self.btf.resolve_chained_type(a)?)?;
                a.len() * self.size_of(&elem)?
            }
            Type::Float(f) => f.size(),
            _ => 0,
        })
    }

    /// The parameters of tracepoint `name` (after the leading `void *`),
    /// from its `btf_trace_NAME` typedef; `None` when the kernel has no such
    /// tracepoint.
    fn tracepoint_params(&self, name: &str) -> Option<Vec<Type>> {
        let typedef = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .ok()?
            .into_iter()
            .find(|t| matches!(t, Type::Typedef(_)))?;
        let Type::Ptr(ptr) = self.strip(typedef).ok()? else {
            return None;
        };
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&ptr).ok()? else {
            return None;
        };
        proto
            .parameters
            .iter()
            .skip(1)
            .map(|p| {
                self.btf
                    .resolve_chained_type(p)
                    .map_err(OffsetError::from)
                    .and_then(|t| self.strip(t))
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()
    }

    /// Which `io_uring_complete` this kernel has (`IO_URING_TP_*`).
    fn io_uring_complete_shape(&self) -> u32 {
        let Some(params) = self.tracepoint_params("io_uring_complete") else {
            return IO_URING_TP_NONE;
        };
        let is_ptr = |i: usize| matches!(params.get(i), Some(Type::Ptr(_)));
        let is_int = |i: usize| matches!(params.get(i), Some(Type::Int(_)));
        match params.len() {
            3 if is_ptr(1) && is_ptr(2) => IO_URING_TP_CQE,
            n if n >= 4 && is_ptr(1) && is_int(3) => IO_URING_TP_RES_ARG,
            _ => IO_URING_TP_NONE,
        }
    }

    fn enum_value(&self, enum_name: &str, value: &str) -> Result<u32, OffsetError> {
        for ty in self
            .btf
            .resolve_types_by_name(enum_name)
            .unwrap_or_default()
        {
            if let Type::Enum(e) = ty {
                for m in &e.members {
                    if self.btf.resolve_name(m).ok().as_deref() == Some(value) {
                        return Ok(m.val());
                    }
                }
            }
        }
        Err(OffsetError::NoEnumValue(format!("{enum_name}::{value}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves against this machine's kernel; the values themselves differ by
    /// kernel, so this checks their consistency instead.
    #[test]
    fn resolves_running_kernel() {
        let r = resolve_offsets(Path::new(crate::config::VMLINUX_BTF))
            .expect("offsets from /sys/kernel/btf/vmlinux");
        assert_eq!(r.io_uring_missing, None, "this kernel has io_uring");
        let o = r.offsets;
        // uapi: `struct io_uring_cqe { __u64 user_data; __s32 res; ... }`.
        assert_eq!(o.cqe_res, 8);
        // `io_kiocb` starts with its file (offset 0); the opcode comes later.
        assert!(o.req_opcode > o.req_file && o.sk_cookie > 0 && o.inode_size > 0);
        assert_eq!(o.magic, OFFSETS_MAGIC);
        // `struct qstr { u32 hash; u32 len; } name` on little endian.
        assert_eq!(o.dentry_name_ptr - o.dentry_name_len, 4);
        // `struct sock_common` begins `struct sock`; daddr is its first member.
        assert_eq!(o.sk_daddr, 0);
        assert!(o.sk_dport > o.sk_daddr && o.sk_family > o.sk_dport);
        assert!(o.task_files > 0 && o.task_signal > 0 && o.file_inode > 0);
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = resolve_offsets(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
