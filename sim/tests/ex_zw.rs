//! `ExAllocatePool2` argument validation and `ZwQueryValueKey`'s partial answers, against their
//! reference pages (Microsoft Learn: `ExAllocatePool2`, `POOL_FLAGS`, `ZwQueryValueKey`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the tests call kernel exports directly, as drivers do"
)]

mod common;

use common::machine;
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

const TAG: u32 = u32::from_le_bytes(*b"Test");

#[test]
fn exallocatepool2_returns_null_for_a_zero_tag_or_invalid_pool_flags() {
    let _m = machine(41);
    // The reference page: NULL when "Tag is set to 0 or invalid POOL_FLAGS are specified";
    // POOL_FLAGS: one pool type (NON_PAGED 0x40, NON_PAGED_EXECUTE 0x80, PAGED 0x100), and the
    // low 32 bits are required (an unknown or reserved one fails the allocation).
    for (flags, tag) in [
        (0x40u64, 0u32),
        (0x0, TAG),
        (0x2, TAG),
        (0x40 | 0x100, TAG),
        (0x40 | 0x80, TAG),
        (0x40 | 0x10, TAG),
        (0x40 | 0x200, TAG),
        (0x40 | 0x1000, TAG),
    ] {
        // SAFETY: a plain allocation call.
        let p = unsafe { ExAllocatePool2(flags, 16, tag) };
        assert!(p.is_null(), "flags {flags:#x} tag {tag:#x} allocated");
    }
    // Valid ones, optional (high 32-bit) flags included, still allocate.
    for flags in [0x40u64, 0x80, 0x100, 0x40 | 0x2 | 0x8, 0x40 | 0x1_0000_0000] {
        // SAFETY: a plain allocation call.
        let p = unsafe { ExAllocatePool2(flags, 16, TAG) };
        assert!(!p.is_null(), "flags {flags:#x} failed");
        // SAFETY: the block just allocated, with its tag.
        unsafe { ExFreePoolWithTag(p, TAG) };
    }
}
