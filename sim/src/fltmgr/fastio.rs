//! The Filter Manager's fast-I/O table (facts.md §1.7, §3, §4): cached reads and writes, the
//! file system's check of one on a file with byte-range locks (`FastIoCheckIfPossible`,
//! `IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE`),
//! byte-range locks and unlocks (`IRP_MJ_LOCK_CONTROL` with its `IRP_MN_*` minor code), basic,
//! standard and network-open information queries (`IRP_MJ_QUERY_INFORMATION`) and query opens
//! (`FastIoQueryOpen`, `IRP_MJ_NETWORK_QUERY_OPEN`) become operations with
//! `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`, run through the frame's instances
//! like IRPs (post callbacks at `PASSIVE_LEVEL` in the same thread), then go to the lower
//! device's routine; `FastIoDetachDevice` tears the frame down on a deleted volume.

use std::ffi::c_void;

use fsfilter::{OperationKind, Status};
use fsfilter_kernel::params::{self, flt, flt_mut};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IRP, PEPROCESS};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_IO_PARAMETER_BLOCK;
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_BASIC_INFORMATION, FILE_NETWORK_OPEN_INFORMATION, FILE_STANDARD_INFORMATION,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::dispatch::{PreEnd, cbd};
use super::params::CbdBlock;
use super::{DevKind, FvId};
use crate::kernel::{self, Kernel};
use crate::nt::{file_info as fi, mj, mn_lock};

/// The Filter Manager's fast-I/O table: reads, writes, their checks on files with byte-range
/// locks, locks, basic, standard and network-open queries, query opens and `FastIoDetachDevice`. The other
/// entries are NULL (the simulator's I/O manager calls no others; a NULL entry makes the caller
/// build an IRP).
pub static FLT_FAST_IO: FAST_IO_DISPATCH = FAST_IO_DISPATCH {
    SizeOfFastIoDispatch: size_of::<FAST_IO_DISPATCH>() as u32,
    FastIoCheckIfPossible: Some(flt_fast_check_if_possible),
    FastIoRead: Some(flt_fast_read),
    FastIoWrite: Some(flt_fast_write),
    FastIoQueryBasicInfo: Some(flt_fast_query_basic_info),
    FastIoQueryStandardInfo: Some(flt_fast_query_standard_info),
    FastIoLock: Some(flt_fast_lock),
    FastIoUnlockSingle: Some(flt_fast_unlock_single),
    FastIoUnlockAll: Some(flt_fast_unlock_all),
    FastIoUnlockAllByKey: Some(flt_fast_unlock_all_by_key),
    FastIoDeviceControl: None,
    AcquireFileForNtCreateSection: None,
    ReleaseFileForNtCreateSection: None,
    FastIoDetachDevice: Some(flt_fast_detach),
    FastIoQueryNetworkOpenInfo: Some(flt_fast_query_network_open_info),
    AcquireForModWrite: None,
    MdlRead: None,
    MdlReadComplete: None,
    PrepareMdlWrite: None,
    MdlWriteComplete: None,
    FastIoReadCompressed: None,
    FastIoWriteCompressed: None,
    MdlReadCompleteCompressed: None,
    MdlWriteCompleteCompressed: None,
    FastIoQueryOpen: Some(flt_fast_query_open),
    ReleaseForModWrite: None,
    AcquireForCcFlush: None,
    ReleaseForCcFlush: None,
};

/// A transfer's arguments.
#[derive(Clone, Copy)]
struct Transfer {
    fo: *const FILE_OBJECT,
    offset: i64,
    length: u32,
    wait: bool,
    key: u32,
    buffer: *mut c_void,
    write: bool,
}

unsafe extern "system" fn flt_fast_read(
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    buffer: *mut c_void,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let offset = unsafe { *offset };
    through_frame(device, Transfer { fo, offset, length, wait, key, buffer, write: false }, iosb)
}

unsafe extern "system" fn flt_fast_write(
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    buffer: *const c_void,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let offset = unsafe { *offset };
    through_frame(
        device,
        Transfer { fo, offset, length, wait, key, buffer: buffer.cast_mut(), write: true },
        iosb,
    )
}

/// A fast-I/O lock call's arguments (`IRP_MJ_LOCK_CONTROL`, `minor` its `IRP_MN_*` code).
#[derive(Clone, Copy)]
struct LockCall {
    fo: *const FILE_OBJECT,
    minor: u8,
    offset: i64,
    /// The caller's length (null for the unlock-all calls).
    length: *const i64,
    process: PEPROCESS,
    key: u32,
    fail_immediately: bool,
    exclusive: bool,
}

impl LockCall {
    /// An unlock call (`minor`): no fail-immediately or exclusive flag.
    fn unlock(
        fo: *const FILE_OBJECT,
        minor: u8,
        offset: i64,
        length: *const i64,
        process: PEPROCESS,
        key: u32,
    ) -> LockCall {
        LockCall {
            fo,
            minor,
            offset,
            length,
            process,
            key,
            fail_immediately: false,
            exclusive: false,
        }
    }
}

unsafe extern "system" fn flt_fast_lock(
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: *const i64,
    process: PEPROCESS,
    key: u32,
    fail_immediately: bool,
    exclusive: bool,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let Some(&offset) = (unsafe { offset.as_ref() }) else { return false };
    let c = LockCall {
        fo,
        minor: mn_lock::LOCK,
        offset,
        length,
        process,
        key,
        fail_immediately,
        exclusive,
    };
    through_frame(device, c, iosb)
}

unsafe extern "system" fn flt_fast_unlock_single(
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: *const i64,
    process: PEPROCESS,
    key: u32,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let Some(&offset) = (unsafe { offset.as_ref() }) else { return false };
    let c = LockCall::unlock(fo, mn_lock::UNLOCK_SINGLE, offset, length, process, key);
    through_frame(device, c, iosb)
}

unsafe extern "system" fn flt_fast_unlock_all(
    fo: *const FILE_OBJECT,
    process: PEPROCESS,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    let c = LockCall::unlock(fo, mn_lock::UNLOCK_ALL, 0, std::ptr::null(), process, 0);
    through_frame(device, c, iosb)
}

unsafe extern "system" fn flt_fast_unlock_all_by_key(
    fo: *const FILE_OBJECT,
    process: *const c_void,
    key: u32,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    let process = process as PEPROCESS;
    let c = LockCall::unlock(fo, mn_lock::UNLOCK_ALL_BY_KEY, 0, std::ptr::null(), process, key);
    through_frame(device, c, iosb)
}

/// A fast-I/O information query's arguments (`IRP_MJ_QUERY_INFORMATION`).
#[derive(Clone, Copy)]
struct QueryCall {
    fo: *const FILE_OBJECT,
    wait: bool,
    /// `FileBasicInformation`, `FileStandardInformation` or `FileNetworkOpenInformation`.
    class: u32,
    /// The caller's buffer, of the class's size.
    buffer: *mut c_void,
}

unsafe extern "system" fn flt_fast_query_basic_info(
    fo: *const FILE_OBJECT,
    wait: bool,
    buffer: *mut FILE_BASIC_INFORMATION,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    through_frame(device, QueryCall { fo, wait, class: fi::BASIC, buffer: buffer.cast() }, iosb)
}

unsafe extern "system" fn flt_fast_query_standard_info(
    fo: *const FILE_OBJECT,
    wait: bool,
    buffer: *mut FILE_STANDARD_INFORMATION,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    through_frame(device, QueryCall { fo, wait, class: fi::STANDARD, buffer: buffer.cast() }, iosb)
}

/// A query open's arguments (`IRP_MJ_NETWORK_QUERY_OPEN`): the I/O manager's create IRP, at our
/// device's location, and the caller's `FILE_NETWORK_OPEN_INFORMATION`.
#[derive(Clone, Copy)]
struct QueryOpenCall {
    irp: *mut IRP,
    info: *mut FILE_NETWORK_OPEN_INFORMATION,
}

unsafe extern "system" fn flt_fast_query_open(
    irp: *mut IRP,
    info: *mut FILE_NETWORK_OPEN_INFORMATION,
    device: *const DEVICE_OBJECT,
) -> bool {
    if irp.is_null() {
        return false;
    }
    // The routine's status is the IRP's status block (the I/O manager reads it there).
    // SAFETY: the I/O manager's live IRP.
    let iosb = unsafe { &raw mut (*irp).IoStatus };
    through_frame(device, QueryOpenCall { irp, info }, iosb)
}

unsafe extern "system" fn flt_fast_query_network_open_info(
    fo: *const FILE_OBJECT,
    wait: bool,
    buffer: *mut FILE_NETWORK_OPEN_INFORMATION,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    let call = QueryCall { fo, wait, class: fi::NETWORK_OPEN, buffer: buffer.cast() };
    through_frame(device, call, iosb)
}

/// A fast-I/O check's arguments (`IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE`): the transfer a file
/// system's `FsRtlCopyRead` or `FsRtlCopyWrite` asks about for a file with byte-range locks.
#[derive(Clone, Copy)]
struct CheckCall {
    fo: *const FILE_OBJECT,
    offset: i64,
    length: u32,
    wait: bool,
    key: u32,
    read: bool,
}

unsafe extern "system" fn flt_fast_check_if_possible(
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    read: bool,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let Some(&offset) = (unsafe { offset.as_ref() }) else { return false };
    through_frame(device, CheckCall { fo, offset, length, wait, key, read }, iosb)
}

unsafe extern "system" fn flt_fast_detach(
    source: *const DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
) {
    super::frames::lower_deleted(source, target);
}

/// Calls `call` with the fast-I/O table of the driver of `lower`, as that driver's code, when the
/// table is large enough to hold the entry at `field` (facts.md §1.7); FALSE otherwise (the
/// caller builds an IRP).
fn call_below(
    lower: *mut DEVICE_OBJECT,
    field: usize,
    call: impl FnOnce(&FAST_IO_DISPATCH) -> bool,
) -> bool {
    let table = kernel::with(|k| {
        let d = k.objects.device_id(lower)?;
        let driver = k.objects.driver(k.objects.device(d).driver);
        // SAFETY: a live driver object.
        let table = unsafe { (*driver.ptr).FastIoDispatch };
        // SAFETY: the driver's table, when set.
        let tbl = unsafe { table.as_ref() }?;
        ((tbl.SizeOfFastIoDispatch as usize) >= field + size_of::<usize>())
            .then_some((*tbl, driver.image))
    });
    let Some((tbl, image)) = table else { return false };
    kernel::call_into(Some(image), || call(&tbl))
}

/// A fast-I/O call the Filter Manager presents to its instances as an operation: how to build
/// the operation, how a filter's changes to its parameter block change the call, and how to
/// call the device below with it.
trait FastCall: Copy {
    /// Builds the operation on a volume frame ([`build_op`]; None: no instance there).
    fn build(self, k: &mut Kernel, at: At) -> Option<u64>;
    /// The call as the parameter block a filter made dirty says.
    fn changed(self, iopb: &FLT_IO_PARAMETER_BLOCK) -> Self;
    /// Calls the lower device's routine for the call (FALSE when there is none).
    fn forward(self, lower: *mut DEVICE_OBJECT, iosb: *mut IO_STATUS_BLOCK) -> bool;
}

impl FastCall for Transfer {
    fn build(self, k: &mut Kernel, at: At) -> Option<u64> {
        let t = self;
        build_op(k, at, t.fo, t.write, |iopb| {
            iopb.MajorFunction = if t.write { mj::WRITE } else { mj::READ };
            // SAFETY: the member of a read or write (they share its layout).
            let r = unsafe { flt_mut::<params::FltRead>(&mut iopb.Parameters) };
            r.Length = t.length;
            r.Key = t.key;
            r.ByteOffset = t.offset;
            r.ReadBuffer = t.buffer;
        })
    }

    fn changed(self, iopb: &FLT_IO_PARAMETER_BLOCK) -> Transfer {
        // SAFETY: the member of a read or write.
        let p = *unsafe { flt::<params::FltRead>(&iopb.Parameters) };
        Transfer { offset: p.ByteOffset, length: p.Length, buffer: p.ReadBuffer, ..self }
    }

    fn forward(self, lower: *mut DEVICE_OBJECT, iosb: *mut IO_STATUS_BLOCK) -> bool {
        let t = self;
        let field = if t.write {
            std::mem::offset_of!(FAST_IO_DISPATCH, FastIoWrite)
        } else {
            std::mem::offset_of!(FAST_IO_DISPATCH, FastIoRead)
        };
        let offset = t.offset;
        call_below(lower, field, |tbl| match (t.write, tbl.FastIoRead, tbl.FastIoWrite) {
            // SAFETY: the lower driver's routine with the transfer's arguments and its device.
            (false, Some(r), _) => unsafe {
                r(t.fo, &offset, t.length, t.wait, t.key, t.buffer, iosb, lower)
            },
            // SAFETY: as above.
            (true, _, Some(w)) => unsafe {
                w(t.fo, &offset, t.length, t.wait, t.key, t.buffer, iosb, lower)
            },
            _ => false,
        })
    }
}

impl FastCall for LockCall {
    fn build(self, k: &mut Kernel, at: At) -> Option<u64> {
        let c = self;
        build_op(k, at, c.fo, false, |iopb| {
            iopb.MajorFunction = mj::LOCK_CONTROL;
            iopb.MinorFunction = c.minor;
            // SAFETY: the member of a lock control.
            let l = unsafe { flt_mut::<params::FltLockControl>(&mut iopb.Parameters) };
            l.Length = c.length.cast_mut();
            l.Key = c.key;
            l.ByteOffset = c.offset;
            l.ProcessId = c.process;
            l.FailImmediately = c.fail_immediately;
            l.ExclusiveLock = c.exclusive;
        })
    }

    fn changed(self, iopb: &FLT_IO_PARAMETER_BLOCK) -> LockCall {
        // SAFETY: the member of a lock control.
        let p = *unsafe { flt::<params::FltLockControl>(&iopb.Parameters) };
        LockCall {
            offset: p.ByteOffset,
            length: if p.Length.is_null() { self.length } else { p.Length.cast_const() },
            key: p.Key,
            fail_immediately: p.FailImmediately,
            exclusive: p.ExclusiveLock,
            ..self
        }
    }

    fn forward(self, lower: *mut DEVICE_OBJECT, iosb: *mut IO_STATUS_BLOCK) -> bool {
        let c = self;
        let field = match c.minor {
            mn_lock::LOCK => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoLock),
            mn_lock::UNLOCK_SINGLE => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoUnlockSingle),
            mn_lock::UNLOCK_ALL => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoUnlockAll),
            _ => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoUnlockAllByKey),
        };
        let offset = c.offset;
        call_below(lower, field, |tbl| match c.minor {
            mn_lock::LOCK => tbl.FastIoLock.is_some_and(|f| {
                // SAFETY: the lower driver's routine with the call's arguments and its device.
                unsafe {
                    f(
                        c.fo,
                        &offset,
                        c.length,
                        c.process,
                        c.key,
                        c.fail_immediately,
                        c.exclusive,
                        iosb,
                        lower,
                    )
                }
            }),
            mn_lock::UNLOCK_SINGLE => tbl.FastIoUnlockSingle.is_some_and(|f| {
                // SAFETY: as above.
                unsafe { f(c.fo, &offset, c.length, c.process, c.key, iosb, lower) }
            }),
            mn_lock::UNLOCK_ALL => tbl.FastIoUnlockAll.is_some_and(|f| {
                // SAFETY: as above.
                unsafe { f(c.fo, c.process, iosb, lower) }
            }),
            _ => tbl.FastIoUnlockAllByKey.is_some_and(|f| {
                // SAFETY: as above.
                unsafe { f(c.fo, c.process as *const c_void, c.key, iosb, lower) }
            }),
        })
    }
}

impl FastCall for QueryCall {
    fn build(self, k: &mut Kernel, at: At) -> Option<u64> {
        let q = self;
        let length = match q.class {
            fi::BASIC => size_of::<FILE_BASIC_INFORMATION>(),
            fi::STANDARD => size_of::<FILE_STANDARD_INFORMATION>(),
            _ => size_of::<FILE_NETWORK_OPEN_INFORMATION>(),
        };
        build_op(k, at, q.fo, false, |iopb| {
            iopb.MajorFunction = mj::QUERY_INFORMATION;
            // SAFETY: the member of an information query.
            let i = unsafe { flt_mut::<params::FltFileInformation>(&mut iopb.Parameters) };
            i.Length = length as u32;
            i.FileInformationClass = q.class as _;
            i.InfoBuffer = q.buffer;
        })
    }

    /// The buffer: the class is the routine's, and so is the length.
    fn changed(self, iopb: &FLT_IO_PARAMETER_BLOCK) -> QueryCall {
        // SAFETY: the member of an information query.
        let p = *unsafe { flt::<params::FltFileInformation>(&iopb.Parameters) };
        QueryCall { buffer: p.InfoBuffer, ..self }
    }

    fn forward(self, lower: *mut DEVICE_OBJECT, iosb: *mut IO_STATUS_BLOCK) -> bool {
        let q = self;
        let field = match q.class {
            fi::BASIC => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryBasicInfo),
            fi::STANDARD => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryStandardInfo),
            _ => std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryNetworkOpenInfo),
        };
        call_below(lower, field, |tbl| match q.class {
            fi::BASIC => tbl.FastIoQueryBasicInfo.is_some_and(|f| {
                // SAFETY: the lower driver's routine with the call's arguments and its device.
                unsafe { f(q.fo, q.wait, q.buffer.cast(), iosb, lower) }
            }),
            fi::STANDARD => tbl.FastIoQueryStandardInfo.is_some_and(|f| {
                // SAFETY: as above.
                unsafe { f(q.fo, q.wait, q.buffer.cast(), iosb, lower) }
            }),
            _ => tbl.FastIoQueryNetworkOpenInfo.is_some_and(|f| {
                // SAFETY: as above.
                unsafe { f(q.fo, q.wait, q.buffer.cast(), iosb, lower) }
            }),
        })
    }
}

impl FastCall for CheckCall {
    fn build(self, k: &mut Kernel, at: At) -> Option<u64> {
        let c = self;
        build_op(k, at, c.fo, false, |iopb| {
            iopb.MajorFunction = fsfilter::MajorFunction::FastIoCheckIfPossible.code();
            // SAFETY: the member of a fast-I/O check.
            let p = unsafe { flt_mut::<params::FltFastIoCheckIfPossible>(&mut iopb.Parameters) };
            p.FileOffset = c.offset;
            p.Length = c.length;
            p.LockKey = c.key;
            p.CheckForReadOperation = c.read;
        })
    }

    fn changed(self, iopb: &FLT_IO_PARAMETER_BLOCK) -> CheckCall {
        // SAFETY: the member of a fast-I/O check.
        let p = *unsafe { flt::<params::FltFastIoCheckIfPossible>(&iopb.Parameters) };
        CheckCall { offset: p.FileOffset, length: p.Length, key: p.LockKey, ..self }
    }

    fn forward(self, lower: *mut DEVICE_OBJECT, iosb: *mut IO_STATUS_BLOCK) -> bool {
        let c = self;
        let field = std::mem::offset_of!(FAST_IO_DISPATCH, FastIoCheckIfPossible);
        let offset = c.offset;
        call_below(lower, field, |tbl| {
            tbl.FastIoCheckIfPossible.is_some_and(|f| {
                // SAFETY: the lower driver's routine with the call's arguments and its device.
                unsafe { f(c.fo, &offset, c.length, c.wait, c.key, c.read, iosb, lower) }
            })
        })
    }
}

impl FastCall for QueryOpenCall {
    fn build(self, k: &mut Kernel, at: At) -> Option<u64> {
        let q = self;
        // SAFETY: the I/O manager's live IRP at our location: its create's file object (a
        // stack-based one on Windows, which filters must not reference).
        let fo = unsafe { crate::irpx::current(q.irp) }.FileObject;
        build_op(k, at, fo, false, |iopb| {
            iopb.MajorFunction = fsfilter::MajorFunction::NetworkQueryOpen.code();
            iopb.Parameters.NetworkQueryOpen.Irp = q.irp;
            iopb.Parameters.NetworkQueryOpen.NetworkInformation = q.info;
        })
    }

    /// The information buffer; the IRP is the I/O manager's.
    fn changed(self, iopb: &FLT_IO_PARAMETER_BLOCK) -> QueryOpenCall {
        // SAFETY: the member of a query open.
        let p = unsafe { iopb.Parameters.NetworkQueryOpen };
        QueryOpenCall { info: p.NetworkInformation, ..self }
    }

    /// The lower device gets the IRP at the same location, naming it for the call.
    fn forward(self, lower: *mut DEVICE_OBJECT, _iosb: *mut IO_STATUS_BLOCK) -> bool {
        let q = self;
        let field = std::mem::offset_of!(FAST_IO_DISPATCH, FastIoQueryOpen);
        call_below(lower, field, |tbl| {
            let Some(f) = tbl.FastIoQueryOpen else { return false };
            // SAFETY: the live IRP's current location, ours for the call.
            let location = unsafe { crate::irpx::current(q.irp) };
            let ours = std::mem::replace(&mut location.DeviceObject, lower);
            // SAFETY: the lower driver's routine with the IRP at its location and the buffer.
            let handled = unsafe { f(q.irp, q.info, lower) };
            location.DeviceObject = ours;
            handled
        })
    }
}

/// A fast-I/O call on one of our devices. On a volume frame with instances, its operation runs
/// through their callbacks ([`walk`]) around the call to the device below (as a filter changed
/// it, when one made the parameter block dirty); otherwise the call goes straight down.
fn through_frame<C: FastCall>(
    device: *const DEVICE_OBJECT,
    call: C,
    iosb: *mut IO_STATUS_BLOCK,
) -> bool {
    let Some(ext) = super::ext_of(device) else { return false };
    if ext.kind != DevKind::Volume as u8 {
        return call.forward(ext.lower, iosb);
    }
    let at = At { device, frame: ext.frame, v: FvId(ext.volume), lower: ext.lower };
    let Some(key) = kernel::with(|k| call.build(k, at)) else {
        return call.forward(ext.lower, iosb);
    };
    walk(key, iosb, |dirty| dirty.map_or(call, |iopb| call.changed(iopb)).forward(ext.lower, iosb))
}

/// Runs a fast-I/O operation's walk: the pre callbacks; then, unless a filter completed or
/// refused it, `down` (given the parameter block when a filter made it dirty), whose result
/// the post callbacks see (`STATUS_FLT_DISALLOW_FAST_IO` when the drivers below refused it).
fn walk(
    key: u64,
    iosb: *mut IO_STATUS_BLOCK,
    down: impl FnOnce(Option<&FLT_IO_PARAMETER_BLOCK>) -> bool,
) -> bool {
    match super::dispatch::fast_pre(key) {
        PreEnd::Down => {
            let dirty = super::dispatch::data_of(key)
                .filter(|d| d.Flags & cbd::DIRTY != 0)
                // SAFETY: the op's parameter block (its block outlives the op).
                .map(|d| unsafe { *d.Iopb });
            let done = down(dirty.as_ref());
            // SAFETY: all-zero is a valid status block.
            let mut result: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
            if done {
                // SAFETY: the caller's status block, written by the lower routine.
                result = unsafe { *iosb };
            } else {
                result.Anonymous.Status = Status::FLT_DISALLOW_FAST_IO.0;
            }
            super::dispatch::fast_result(key, result);
            let last = super::dispatch::fast_post(key);
            // The status block as the posts left it (a post may change it, FLT_CALLBACK_DATA's
            // reference page); a refused call's goes nowhere (the caller builds an IRP).
            if let (true, Some(last)) = (done, last) {
                // SAFETY: the caller's status block.
                unsafe { *iosb = last };
            }
            done
        }
        PreEnd::Complete => {
            if let Some(last) = super::dispatch::fast_post(key) {
                // SAFETY: the caller's status block.
                unsafe { *iosb = last };
            }
            true
        }
        PreEnd::Disallow | PreEnd::Pended => {
            let _ = super::dispatch::fast_post(key);
            false
        }
    }
}

/// Where a fast-I/O call (or an FsFilter callback) came in: our volume frame device, its frame
/// and volume, and the device below it.
#[derive(Clone, Copy)]
pub(super) struct At {
    pub(super) device: *const DEVICE_OBJECT,
    pub(super) frame: u32,
    pub(super) v: FvId,
    pub(super) lower: *mut DEVICE_OBJECT,
}

/// Builds the operation of a fast-I/O call on a volume frame (None: no instance there): callback
/// data with `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION` on `fo`, whose parameter block `fill` writes.
/// `conflicting`: a write, which data-scan sections conflict with.
fn build_op(
    k: &mut Kernel,
    at: At,
    fo: *const FILE_OBJECT,
    conflicting: bool,
    fill: impl FnOnce(&mut FLT_IO_PARAMETER_BLOCK),
) -> Option<u64> {
    build_irpless_op(k, at, fo, conflicting, OperationKind::FastIo, fill)
}

/// [`build_op`] for an operation of `kind`: fast I/O, or an FsFilter callback
/// (`FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION`).
pub(super) fn build_irpless_op(
    k: &mut Kernel,
    at: At,
    fo: *const FILE_OBJECT,
    conflicting: bool,
    kind: OperationKind,
    fill: impl FnOnce(&mut FLT_IO_PARAMETER_BLOCK),
) -> Option<u64> {
    let mut chain = k.fltmgr.ops.new_chain();
    k.fltmgr.frame_chain(at.v, at.frame, &mut chain);
    if chain.is_empty() {
        k.fltmgr.ops.unused_chain(chain);
        return None;
    }
    let posts = k.fltmgr.ops.new_posts();
    // SAFETY: a live file object of the request.
    let stream = unsafe { fo.as_ref() }.map_or(0, |f| f.FsContext as usize);
    let request = k.current_request;
    // Fast I/O and FsFilter callbacks run in the requesting thread (docs/simulator.md,
    // "Processes").
    let thread = crate::process::ethread(k.thread) as _;
    let key = super::dispatch::insert_op(k, |data, block, event| {
        // SAFETY: the fresh block behind `data` holds a CbdBlock.
        let b = unsafe { &mut *data.cast::<CbdBlock>() };
        b.iopb.TargetFileObject = fo.cast_mut();
        fill(&mut b.iopb);
        b.data.Flags = if kind == OperationKind::FsFilter {
            cbd::FS_FILTER_OPERATION
        } else {
            cbd::FAST_IO_OPERATION
        };
        b.data.Iopb = &raw const b.iopb;
        b.data.RequestorMode = 1;
        b.data.Thread = thread;
        super::dispatch::fast_op(
            kind,
            data,
            block,
            event,
            at.device,
            at.lower,
            at.frame,
            at.v,
            chain,
            fo as usize,
            stream,
            conflicting,
            request,
            posts,
        )
    });
    Some(key)
}
