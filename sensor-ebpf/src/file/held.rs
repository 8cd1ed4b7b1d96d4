//! What a watched file holds on disk, the most its reads can credit: the
//! bytes of its allocated blocks (a sparse file read end to end adds only
//! what it really stores), and of the blocks ext4 reserved for it (a file
//! just written, its blocks not yet allocated: delayed allocation). On
//! xfs, btrfs and f2fs, whose reservations are not in vmlinux BTF, a file
//! with dirty pages is credited with its page cache instead. File systems
//! that do not keep block counts for their inodes (overlayfs, FUSE, network
//! file systems) are credited with the file's size.

use sensor_common::Loss;

use crate::runtime::kernel::{off, read, read_ptr};

/// `super_block.s_magic` of file systems whose `i_blocks` is the storage
/// of the file (uapi `magic.h`).
const EXT4: u64 = 0xEF53;
const XFS: u64 = 0x5846_5342;
const BTRFS: u64 = 0x9123_683E;
const TMPFS: u64 = 0x0102_1994;
const F2FS: u64 = 0xF2F5_2010;

#[inline(always)]
pub fn held_bytes(inode: *const u8) -> Result<u64, Loss> {
    let size: i64 = read(inode, off!(inode_size))?;
    let size = size.max(0) as u64;
    let sb = read_ptr(inode, off!(inode_sb))?;
    let magic: u64 = read(sb, off!(sb_magic))?;
    if magic != EXT4 && magic != XFS && magic != BTRFS && magic != TMPFS && magic != F2FS {
        return Ok(size);
    }
    let blocks: u64 = read(inode, off!(inode_blocks))?;
    let mut held = blocks.saturating_mul(512);
    if magic == EXT4 && off!(ext4_delalloc) != 0 {
        // `i_reserved_data_blocks` sits at a signed offset from the inode.
        let rel = off!(ext4_reserved) as u32 as i32 as isize as usize;
        let reserved: u32 = read(inode, rel)?;
        let block: u64 = read(sb, off!(sb_blocksize))?;
        // (A block is at most 64 KiB: no overflow.)
        held = held.saturating_add(reserved as u64 * (block & 0xf_ffff));
        return Ok(held.min(size));
    }
    if magic == TMPFS {
        // Charged when written.
        return Ok(held.min(size));
    }
    let state: u32 = read(inode, off!(inode_state))?;
    if state & off!(dirty_pages_flag) as u32 != 0 {
        let mapping = read_ptr(inode, off!(inode_mapping))?;
        if !mapping.is_null() {
            let pages: u64 = read(mapping, off!(mapping_nrpages))?;
            held = held.max(pages.saturating_mul(4096));
        }
    }
    Ok(held.min(size))
}
