//! One hook per file; programs are named `<subsystem>_<hook>`. What they
//! share (maps, kernel walks, counting) is in the subsystem folders beside
//! this one: `file`, `net`, `process`, and `runtime` for all of them.

mod file_io_uring_complete;
mod file_sys_exit;
mod net_cgroup_sendmsg4;
mod net_cgroup_sendmsg6;
mod net_sock_send_length;
mod net_sys_exit_send;
mod process_exec;
mod process_exit;
