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

use std::ffi::c_void;
use std::ptr::null_mut;

use common::machine;
use fsfilter::Status;
use fsfilter_kernel::ntos::{ZwClose, ZwMapViewOfSection, ZwOpenKey, ZwQueryValueKey};
use fsfilter_sim::{RegValue, Rule};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::System::SystemServices::{
    ExAllocatePool2, ExAllocatePoolWithTag, ExFreePoolWithTag,
};

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

#[test]
fn freeing_pool_above_its_irql_is_reported() {
    // ExFreePoolWithTag's reference page: IRQL <= DISPATCH_LEVEL; paged pool is freed at
    // <= APC_LEVEL (its memory may be paged out). Both are checked for allocation already.
    let m = machine(43);
    let at = |irql: u8| fsfilter_sim::kernel::with(|k| k.set_irql(irql));
    // SAFETY: plain allocation calls.
    let (np, pg) = unsafe { (ExAllocatePool2(0x40, 16, TAG), ExAllocatePool2(0x100, 16, TAG)) };
    at(2);
    // SAFETY: the block just allocated, with its tag.
    unsafe { ExFreePoolWithTag(np, TAG) };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // SAFETY: as above.
    unsafe { ExFreePoolWithTag(pg, TAG) };
    at(0);
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh]);
    // SAFETY: a plain allocation call.
    let np = unsafe { ExAllocatePool2(0x40, 16, TAG) };
    at(3);
    // SAFETY: the block just allocated, with its tag.
    unsafe { ExFreePoolWithTag(np, TAG) };
    at(0);
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh, Rule::IrqlTooHigh]);
}

fn open_key(path: &str) -> *mut c_void {
    let units: Vec<u16> = path.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    // SAFETY: plain data.
    let mut attrs: OBJECT_ATTRIBUTES = unsafe { std::mem::zeroed() };
    attrs.Length = size_of::<OBJECT_ATTRIBUTES>() as u32;
    attrs.ObjectName = &name;
    attrs.Attributes = 0x240;
    let mut h = null_mut();
    // SAFETY: valid attributes and out pointer.
    assert_eq!(unsafe { ZwOpenKey(&mut h, 0x2_0019, &attrs) }, 0);
    h
}

/// Queries `value` with a buffer of `len` bytes (pre-filled with 0xEE): status, result
/// length, the buffer.
fn query(key: *mut c_void, value: &str, class: i32, len: usize) -> (Status, u32, Vec<u8>) {
    let units: Vec<u16> = value.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    // 8-byte aligned (the Align64 classes want it).
    let mut words = vec![u64::from_ne_bytes([0xEE; 8]); len.div_ceil(8).max(1)];
    let mut result = 0u32;
    // SAFETY: a key handle, a name, a buffer of at least `len` bytes.
    let s = unsafe {
        ZwQueryValueKey(key, &name, class, words.as_mut_ptr().cast(), len as u32, &mut result)
    };
    let mut buf: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    buf.truncate(len);
    (Status(s), result, buf)
}

#[test]
fn zwqueryvaluekey_writes_the_fixed_part_with_buffer_overflow() {
    let m = machine(42);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditKey";
    m.kernel(|k| {
        let key = k.registry.create(path);
        k.registry.set(key, "Name", RegValue::Sz("abcdefgh".into()));
    });
    let key = open_key(path);
    let le = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    // Partial information: 12 fixed bytes (TitleIndex, Type, DataLength) + 18 bytes of data.
    let (s, n, _) = query(key, "Name", 2, 64);
    assert_eq!((s, n), (Status::SUCCESS, 30));
    // Room for the fixed part only: STATUS_BUFFER_OVERFLOW, "only partial data has been
    // written": the fixed part is there, so Type and DataLength can be read.
    let (s, n, buf) = query(key, "Name", 2, 16);
    assert_eq!((s, n), (Status::BUFFER_OVERFLOW, 30));
    assert_eq!((le(&buf, 4), le(&buf, 8)), (1, 18));
    // Less than the fixed part: STATUS_BUFFER_TOO_SMALL, nothing written.
    let (s, n, buf) = query(key, "Name", 2, 8);
    assert_eq!((s, n), (Status::BUFFER_TOO_SMALL, 30));
    assert!(buf.iter().all(|&b| b == 0xEE));
    // Full information: its fixed part is 20 bytes (TitleIndex, Type, DataOffset, DataLength,
    // NameLength), so 16 bytes are too small for it.
    let (s, _, buf) = query(key, "Name", 1, 16);
    assert_eq!(s, Status::BUFFER_TOO_SMALL);
    assert!(buf.iter().all(|&b| b == 0xEE));
    let (s, n, buf) = query(key, "Name", 1, 20);
    assert_eq!(s, Status::BUFFER_OVERFLOW);
    assert!(n > 20);
    assert_eq!((le(&buf, 4), le(&buf, 12), le(&buf, 16)), (1, 18, 8));
    // Basic information: fixed part 12 bytes, then the name.
    let (s, n, buf) = query(key, "Name", 0, 12);
    assert_eq!((s, n), (Status::BUFFER_OVERFLOW, 20));
    assert_eq!((le(&buf, 4), le(&buf, 8)), (1, 8));
    // SAFETY: our key handle.
    assert_eq!(unsafe { ZwClose(key) }, 0);
}

#[test]
fn registry_reads_above_passive_level_are_reported() {
    // The ZwOpenKey and ZwQueryValueKey reference pages: IRQL = PASSIVE_LEVEL (as ZwClose's,
    // which the simulator checks already).
    let m = machine(44);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditIrql";
    m.kernel(|k| {
        let key = k.registry.create(path);
        k.registry.set(key, "Start", RegValue::Dword(3));
    });
    let key = open_key(path);
    let (s, _, _) = query(key, "Start", 2, 64);
    assert_eq!(s, Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    fsfilter_sim::kernel::with(|k| k.set_irql(1));
    let again = open_key(path);
    let (s, _, _) = query(key, "Start", 2, 64);
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    assert_eq!(s, Status::SUCCESS);
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh, Rule::IrqlTooHigh]);
    // SAFETY: our key handles.
    unsafe {
        assert_eq!(ZwClose(again), 0);
        assert_eq!(ZwClose(key), 0);
    }
}

#[test]
fn pool_blocks_are_aligned_as_the_reference_pages_say() {
    // ExAllocatePool2's reference page: "If NumberOfBytes is PAGE_SIZE or greater, a
    // page-aligned buffer is allocated. Memory allocations of PAGE_SIZE or less are allocated
    // within a page and do not cross page boundaries" (16-byte aligned below that on 64-bit);
    // POOL_FLAG_CACHE_ALIGNED (0x8) aligns to a cache line, as the CacheAligned pool types of
    // ExAllocatePoolWithTag do.
    let _m = machine(46);
    let mut blocks = Vec::new();
    for size in [4096usize, 8192, 5000, 100, 1000, 3000, 4095, 24, 1] {
        for _ in 0..4 {
            // SAFETY: a plain allocation call.
            let p = unsafe { ExAllocatePool2(0x40, size, TAG) } as usize;
            assert_ne!(p, 0);
            assert_eq!(p % 16, 0, "{size}");
            if size >= 4096 {
                assert_eq!(p % 4096, 0, "{size} bytes: page aligned");
            } else {
                assert!(p % 4096 + size <= 4096, "{size} bytes cross a page boundary at {p:#x}");
            }
            blocks.push(p);
        }
    }
    for flags in [0x40u64 | 0x8, 0x100 | 0x8] {
        // SAFETY: as above.
        let p = unsafe { ExAllocatePool2(flags, 10, TAG) } as usize;
        assert_eq!(p % 64, 0, "cache aligned");
        blocks.push(p);
    }
    for pool_type in [4, 5] {
        // SAFETY: as above (NonPagedPoolCacheAligned, PagedPoolCacheAligned).
        let p = unsafe { ExAllocatePoolWithTag(pool_type, 10, TAG) } as usize;
        assert_eq!(p % 64, 0, "cache aligned pool type {pool_type}");
        blocks.push(p);
    }
    for p in blocks {
        // SAFETY: the blocks just allocated, with their tag.
        unsafe { ExFreePoolWithTag(p as *mut c_void, TAG) };
    }
}

#[test]
fn null_registry_out_parameters_are_a_bugcheck_finding() {
    // A kernel-mode caller's out parameters are not probed: NULL where ZwOpenKey writes the
    // handle, or a NULL buffer with a non-zero Length, is a write through NULL, which bugchecks
    // on Windows. The simulator names it instead of crashing the host process. (NULL with
    // Length 0, the usual size query, is fine.)
    let m = machine(47);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditNull";
    m.kernel(|k| {
        let key = k.registry.create(path);
        k.registry.set(key, "Start", RegValue::Dword(3));
    });
    let units: Vec<u16> = path.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    // SAFETY: plain data.
    let mut attrs: OBJECT_ATTRIBUTES = unsafe { std::mem::zeroed() };
    attrs.Length = size_of::<OBJECT_ATTRIBUTES>() as u32;
    attrs.ObjectName = &name;
    attrs.Attributes = 0x240;
    // SAFETY: deliberately NULL: the simulator checks before writing.
    let s = unsafe { ZwOpenKey(null_mut(), 0x2_0019, &attrs) };
    assert_eq!(Status(s), Status::INVALID_PARAMETER);
    let key = open_key(path);
    let units: Vec<u16> = "Start".encode_utf16().collect();
    let value = fsfilter_sim::mem::unicode(&units);
    let mut needed = 0u32;
    // SAFETY: the size query: no buffer, no length.
    let s = unsafe { ZwQueryValueKey(key, &value, 2, null_mut(), 0, &mut needed) };
    assert_eq!((Status(s), needed), (Status::BUFFER_TOO_SMALL, 16));
    assert_eq!(m.findings().len(), 1, "only the NULL KeyHandle: {:?}", m.findings());
    // SAFETY: deliberately NULL with a length: the simulator checks before writing.
    let s = unsafe { ZwQueryValueKey(key, &value, 2, null_mut(), 64, &mut needed) };
    assert_eq!(Status(s), Status::INVALID_PARAMETER);
    // SAFETY: our key handle.
    assert_eq!(unsafe { ZwClose(key) }, 0);
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::Bugcheck, Rule::Bugcheck], "{:?}", m.findings());
}

fn open_key_with(path: &str, attributes: u32) -> (Status, *mut c_void) {
    let units: Vec<u16> = path.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    // SAFETY: plain data.
    let mut attrs: OBJECT_ATTRIBUTES = unsafe { std::mem::zeroed() };
    attrs.Length = size_of::<OBJECT_ATTRIBUTES>() as u32;
    attrs.ObjectName = &name;
    attrs.Attributes = attributes;
    let mut h = null_mut();
    // SAFETY: valid attributes and out pointer.
    let s = unsafe { ZwOpenKey(&mut h, 0x2_0019, &attrs) };
    (Status(s), h)
}

#[test]
fn zwopenkey_in_a_user_thread_without_obj_kernel_handle_is_reported() {
    // ZwOpenKey's reference page: "If the caller is not running in a system thread context, it
    // must set the OBJ_KERNEL_HANDLE attribute": the handle is otherwise one of the user
    // process the thread belongs to, which that process can use or close. In a system thread
    // (DriverEntry's, a worker's) the flag is not needed. The key is still opened.
    let m = machine(48);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditKernelHandle";
    m.kernel(|k| {
        k.registry.create(path);
    });
    let on = |thread: u32, attributes: u32| {
        let saved = fsfilter_sim::kernel::with(|k| {
            std::mem::replace(&mut k.thread, fsfilter_sim::ids::ThreadId(thread))
        });
        let (s, h) = open_key_with(path, attributes);
        fsfilter_sim::kernel::with(|k| k.thread = saved);
        assert_eq!(s, Status::SUCCESS);
        // SAFETY: the key handle just opened.
        assert_eq!(unsafe { ZwClose(h) }, 0);
    };
    // A system thread (the boot thread, a worker): either way.
    on(0, 0x40);
    on(1001, 0x40);
    // The user thread, with OBJ_KERNEL_HANDLE (0x200).
    on(1, 0x240);
    assert_eq!(m.findings(), []);
    on(1, 0x40);
    let rules: Vec<&str> = m.findings().into_iter().map(|(r, _, _)| r.name()).collect();
    assert_eq!(rules, ["KEY_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE"], "{:?}", m.findings());
}

#[test]
fn zwopenkey_in_driver_entrys_thread_or_the_modified_page_writers_is_a_system_thread() {
    // DriverEntry's thread (4) and the modified-page writer's (999) are System process threads
    // (docs/simulator.md, "Processes"), a system thread context: no OBJ_KERNEL_HANDLE needed.
    // A process made with new_process has a user thread (501): reported without it.
    let mut m = machine(48);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditSystemThreads";
    m.kernel(|k| {
        k.registry.create(path);
    });
    let app = m.new_process("app").expect("a new process");
    let on = |thread: u32| {
        let saved = fsfilter_sim::kernel::with(|k| {
            std::mem::replace(&mut k.thread, fsfilter_sim::ids::ThreadId(thread))
        });
        let (s, h) = open_key_with(path, 0x40);
        fsfilter_sim::kernel::with(|k| k.thread = saved);
        assert_eq!(s, Status::SUCCESS);
        // SAFETY: the key handle just opened.
        assert_eq!(unsafe { ZwClose(h) }, 0);
    };
    on(4);
    on(999);
    assert_eq!(m.findings(), []);
    let thread = m.kernel(|k| k.processes.thread_of(app)).expect("its thread");
    on(thread.0);
    let rules: Vec<&str> = m.findings().into_iter().map(|(r, _, _)| r.name()).collect();
    assert_eq!(rules, ["KEY_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE"], "{:?}", m.findings());
}

#[test]
fn a_handle_of_another_type_is_a_type_mismatch_and_a_closed_one_is_reported() {
    // Each Zw routine references its handle for its own object type (ObReferenceObjectByHandle:
    // STATUS_OBJECT_TYPE_MISMATCH "The ObjectType parameter specifies the wrong object type for
    // the object that is identified by the Handle parameter"; STATUS_INVALID_HANDLE for a handle
    // that is not open). A closed handle used again is the verifier's INVALID_HANDLE ("used
    // after being closed"), as ZwClose of it already was.
    const OBJECT_TYPE_MISMATCH: Status = Status(0xC000_0024_u32 as i32);
    let m = machine(49);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditTypes";
    m.kernel(|k| {
        let key = k.registry.create(path);
        k.registry.set(key, "Start", RegValue::Dword(3));
    });
    let key = open_key(path);
    let mut base: *mut c_void = null_mut();
    let mut size = 0usize;
    // SAFETY: a key handle where a section handle belongs; valid out parameters.
    let s = unsafe {
        ZwMapViewOfSection(key, -1isize as _, &mut base, 0, 0, null_mut(), &mut size, 2, 0, 2)
    };
    assert_eq!(Status(s), OBJECT_TYPE_MISMATCH);
    assert_eq!(m.findings(), []);
    // SAFETY: our key handle.
    assert_eq!(unsafe { ZwClose(key) }, 0);
    let (s, _, _) = query(key, "Start", 2, 64);
    assert_eq!(s, Status::INVALID_HANDLE);
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::InvalidHandle], "{:?}", m.findings());
}

#[test]
fn a_zero_byte_pool_allocation_is_a_verifier_bugcheck() {
    // ExAllocatePool2's reference page: NumberOfBytes "Specifies a non-zero number of bytes";
    // Driver Verifier stops a zero-byte request (bug check 0xC4, parameter 0x00: "The driver
    // requested a zero-byte pool allocation"). The simulator names it; the call still answers.
    let m = machine(50);
    // SAFETY: plain allocation calls (0x40: POOL_FLAG_NON_PAGED; 0: NonPagedPool).
    let (a, b) = unsafe { (ExAllocatePool2(0x40, 0, TAG), ExAllocatePoolWithTag(0, 0, TAG)) };
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::Bugcheck, Rule::Bugcheck], "{:?}", m.findings());
    // SAFETY: the blocks just allocated, with their tag.
    unsafe {
        ExFreePoolWithTag(a, TAG);
        ExFreePoolWithTag(b, TAG);
    }
    assert_eq!(m.findings().len(), 2);
}

#[test]
fn zwqueryvaluekey_answers_the_align64_classes() {
    // KEY_VALUE_INFORMATION_CLASS: KeyValueFullInformationAlign64 (3) is KEY_VALUE_FULL_INFORMATION
    // and KeyValuePartialInformationAlign64 (4) KEY_VALUE_PARTIAL_INFORMATION_ALIGN64 (Type,
    // DataLength, Data: no TitleIndex), both in a buffer on an 8-byte boundary, else
    // STATUS_DATATYPE_MISALIGNMENT. ZwQueryValueKey refuses only a class that is not a valid
    // KEY_VALUE_INFORMATION_CLASS value (STATUS_INVALID_PARAMETER).
    const MISALIGNED: Status = Status(0x8000_0002_u32 as i32);
    let _m = machine(51);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditAlign";
    fsfilter_sim::kernel::with(|k| {
        let key = k.registry.create(path);
        k.registry.set(key, "Start", RegValue::Dword(3));
    });
    let key = open_key(path);
    let le = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    // Partial, aligned: Type, DataLength, then the data.
    let (s, n, buf) = query(key, "Start", 4, 64);
    assert_eq!((s, n), (Status::SUCCESS, 12));
    assert_eq!((le(&buf, 0), le(&buf, 4), le(&buf, 8)), (4, 4, 3));
    // Its fixed part is 8 bytes: 8 is room for it (partial data), 7 is not.
    let (s, n, _) = query(key, "Start", 4, 8);
    assert_eq!((s, n), (Status::BUFFER_OVERFLOW, 12));
    let (s, _, _) = query(key, "Start", 4, 7);
    assert_eq!(s, Status::BUFFER_TOO_SMALL);
    // Full, aligned: the full class's layout.
    let (s, _, buf) = query(key, "Start", 3, 64);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!((le(&buf, 4), le(&buf, 12), le(&buf, 16)), (4, 4, 10));
    assert_eq!(le(&buf, le(&buf, 8) as usize), 3, "the data at DataOffset");
    // A buffer off an 8-byte boundary.
    let units: Vec<u16> = "Start".encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let mut raw = vec![0u64; 16];
    let odd = raw.as_mut_ptr().cast::<u8>().wrapping_add(4).cast::<c_void>();
    let mut result = 0u32;
    for class in [3, 4] {
        // SAFETY: a key handle, a name, a buffer of at least 64 bytes past `odd`.
        let s = unsafe { ZwQueryValueKey(key, &name, class, odd, 64, &mut result) };
        assert_eq!(Status(s), MISALIGNED, "class {class}");
    }
    // Not a class.
    let (s, _, _) = query(key, "Start", 6, 64);
    assert_eq!(s, Status::INVALID_PARAMETER);
    // SAFETY: our key handle.
    assert_eq!(unsafe { ZwClose(key) }, 0);
}

fn open_key_in(root: *mut c_void, path: &str) -> (Status, *mut c_void) {
    let units: Vec<u16> = path.encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    // SAFETY: plain data.
    let mut attrs: OBJECT_ATTRIBUTES = unsafe { std::mem::zeroed() };
    attrs.Length = size_of::<OBJECT_ATTRIBUTES>() as u32;
    attrs.RootDirectory = root;
    attrs.ObjectName = &name;
    attrs.Attributes = 0x240;
    let mut h = null_mut();
    // SAFETY: valid attributes and out pointer.
    let s = unsafe { ZwOpenKey(&mut h, 0x2_0019, &attrs) };
    (Status(s), h)
}

/// The object manager's lookup (ReactOS's `ObpLookupObjectName`): without `RootDirectory` a name
/// must start with a separator, and with a root key it must not; either mistake is
/// `STATUS_OBJECT_PATH_SYNTAX_BAD`, not a missing key. An empty name with a root opens the root.
#[test]
fn zwopenkey_names_that_do_not_fit_the_root_are_path_syntax_errors() {
    const OBJECT_PATH_SYNTAX_BAD: Status = Status(0xC000_003B_u32 as i32);
    let m = machine(49);
    let path = r"\Registry\Machine\System\CurrentControlSet\Services\AuditSyntax";
    m.kernel(|k| {
        k.registry.create(path);
    });
    for name in ["", "Nothing", r"Registry\Machine\System"] {
        let (s, _) = open_key_in(null_mut(), name);
        assert_eq!(s, OBJECT_PATH_SYNTAX_BAD, "{name:?} without a root");
    }
    let (s, root) = open_key_in(null_mut(), r"\Registry\Machine\System");
    assert_eq!(s, Status::SUCCESS);
    let (s, _) = open_key_in(root, r"\CurrentControlSet");
    assert_eq!(s, OBJECT_PATH_SYNTAX_BAD, "a rooted name relative to a key");
    let (s, services) = open_key_in(root, r"CurrentControlSet\Services");
    assert_eq!(s, Status::SUCCESS);
    let (s, same) = open_key_in(services, "");
    assert_eq!(s, Status::SUCCESS, "an empty name opens the root key");
    let (s, _) = open_key_in(services, "Missing");
    assert_eq!(s, Status::OBJECT_NAME_NOT_FOUND);
    for h in [root, services, same] {
        // SAFETY: key handles just opened.
        assert_eq!(unsafe { ZwClose(h) }, 0);
    }
    assert_eq!(m.findings(), []);
}
