//! Files: from a descriptor to its file and inode, the watched decision,
//! bytes read per process and per watched file, mappings of watched files.

pub mod fd;
pub mod held;
pub mod mmap;
pub mod reads;
pub mod watch;
