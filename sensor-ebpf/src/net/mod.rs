//! Sockets: bytes sent per process and destination, and the destinations of
//! unconnected UDP sends.

pub mod send;
pub mod udp_dest;
