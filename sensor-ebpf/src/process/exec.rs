//! What each process executed, with its arguments, so an alert can name a
//! process that exited before user space saw it.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use sensor_common::{maps, ExecInfo, Loss, EXEC_ARGS_LEN};

use crate::runtime::kernel::{current_task, off, read, read_ptr};

#[map(name = "EXEC_INFO")]
static EXEC_INFO: LruHashMap<u32, ExecInfo> = LruHashMap::with_max_entries(maps::EXEC_INFO_SIZE, 0);

/// Room to build an `ExecInfo` (too big for the 512-byte stack).
#[map(name = "EXEC_SCRATCH")]
static EXEC_SCRATCH: PerCpuArray<ExecInfo> =
    PerCpuArray::with_max_entries(maps::EXEC_SCRATCH_SIZE, 0);

/// Records the path and arguments of the image `tgid` (the current
/// process) just executed, from its `struct linux_binprm *bprm`.
#[inline(always)]
pub fn record(bprm: *const u8, tgid: u32) -> Result<(), Loss> {
    let Some(info) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return Ok(());
    };
    // SAFETY: this CPU's scratch slot, used by this program only, not across calls.
    let info = unsafe { &mut *info };
    let filename = read_ptr(bprm, off!(bprm_filename))?;
    // SAFETY: a kernel string; the helper bounds the copy and NUL-terminates.
    if unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut info.path) }.is_err() {
        info.path[0] = 0;
    }
    let mm = read_ptr(current_task(), off!(task_mm))?;
    let start: u64 = read(mm, off!(mm_arg_start))?;
    let end: u64 = read(mm, off!(mm_arg_end))?;
    let len = end.saturating_sub(start).min(EXEC_ARGS_LEN as u64) as usize;
    info.args_len = 0;
    if len > 0 && len <= EXEC_ARGS_LEN {
        // SAFETY: the new image's argument pages, just written by execve;
        // the length stays within the arguments (never the environment).
        if unsafe { bpf_probe_read_user_buf(start as *const u8, &mut info.args[..len]) }.is_ok() {
            info.args_len = len as u32;
        }
    }
    // A full LRU forgets the oldest exec.
    let _ = EXEC_INFO.insert(tgid, *info, 0);
    Ok(())
}
