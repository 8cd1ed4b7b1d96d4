//! Lineage, in the kernel: which processes hold weights ([`holding`]),
//! which files, pipes and sockets carry them ([`carrier`]), and the hand-
//! over between the two at each read, write and send. Decided at the
//! syscall: a pipe or a relay moves a model in well under one poll.

pub mod carrier;
pub mod holding;
pub mod path;
pub mod write;
