//! Empty on the host: the programs are the `sensor` binary of this crate,
//! built for `bpfel-unknown-none` by `sensor/build.rs`.
#![no_std]
