//! What every subsystem uses: kernel memory reads at the offsets user space
//! resolved, atomic adds, loss counters, the syscall ABI and the one
//! get-or-insert helper of the counting maps.

pub mod atomic;
pub mod kernel;
pub mod loss;
pub mod slot;
pub mod syscall;
