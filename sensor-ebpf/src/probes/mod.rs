//! One hook per file; programs are named `<subsystem>_<hook>`.

mod file_sys_exit;
mod net_sock_send_length;
mod process_exec;
mod process_exit;
