#![no_std]
#![no_main]
// Atomic adds on map values (no `fetch_add` in `core` for the BPF target).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod file;
mod lineage;
mod net;
mod probes;
mod process;
mod runtime;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path; this is never entered.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
