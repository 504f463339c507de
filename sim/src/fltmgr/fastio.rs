//! The Filter Manager's fast-I/O table (facts.md §1.7, §3, §4): cached reads and writes become
//! operations with `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`, run through the frame's instances
//! like IRPs (post callbacks at `PASSIVE_LEVEL` in the same thread), then go to the lower
//! device's routine; `FastIoDetachDevice` tears the frame down on a deleted volume.

use std::ffi::c_void;

use fsfilter::{OperationKind, Status};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::dispatch::{PreEnd, cbd};
use super::params::CbdBlock;
use super::{DevKind, FvId};
use crate::kernel::{self, Kernel};
use crate::nt::mj;

/// The Filter Manager's fast-I/O table: reads, writes and `FastIoDetachDevice`. The other
/// entries are NULL (the simulator's I/O manager only calls these three; a NULL entry makes the
/// caller build an IRP).
pub static FLT_FAST_IO: FAST_IO_DISPATCH = FAST_IO_DISPATCH {
    SizeOfFastIoDispatch: size_of::<FAST_IO_DISPATCH>() as u32,
    FastIoCheckIfPossible: None,
    FastIoRead: Some(flt_fast_read),
    FastIoWrite: Some(flt_fast_write),
    FastIoQueryBasicInfo: None,
    FastIoQueryStandardInfo: None,
    FastIoLock: None,
    FastIoUnlockSingle: None,
    FastIoUnlockAll: None,
    FastIoUnlockAllByKey: None,
    FastIoDeviceControl: None,
    AcquireFileForNtCreateSection: None,
    ReleaseFileForNtCreateSection: None,
    FastIoDetachDevice: Some(flt_fast_detach),
    FastIoQueryNetworkOpenInfo: None,
    AcquireForModWrite: None,
    MdlRead: None,
    MdlReadComplete: None,
    PrepareMdlWrite: None,
    MdlWriteComplete: None,
    FastIoReadCompressed: None,
    FastIoWriteCompressed: None,
    MdlReadCompleteCompressed: None,
    MdlWriteCompleteCompressed: None,
    FastIoQueryOpen: None,
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
    fast_io(device, Transfer { fo, offset, length, wait, key, buffer, write: false }, iosb)
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
    fast_io(
        device,
        Transfer { fo, offset, length, wait, key, buffer: buffer.cast_mut(), write: true },
        iosb,
    )
}

unsafe extern "system" fn flt_fast_detach(
    source: *const DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
) {
    super::frames::lower_deleted(source, target);
}

/// The lower device's fast-I/O routine call (the table's size checked, facts.md §1.7).
fn forward(lower: *mut DEVICE_OBJECT, t: Transfer, iosb: *mut IO_STATUS_BLOCK) -> bool {
    let target = kernel::with(|k| {
        let d = k.objects.device_id(lower)?;
        let driver = k.objects.device(d).driver;
        let image = k.objects.driver(driver).image;
        // SAFETY: a live driver object.
        let table = unsafe { (*k.objects.driver(driver).ptr).FastIoDispatch };
        // SAFETY: the driver's table, when set.
        let tbl = unsafe { table.as_ref() }?;
        let field = if t.write {
            std::mem::offset_of!(FAST_IO_DISPATCH, FastIoWrite)
        } else {
            std::mem::offset_of!(FAST_IO_DISPATCH, FastIoRead)
        };
        if (tbl.SizeOfFastIoDispatch as usize) < field + size_of::<usize>() {
            return None;
        }
        Some((tbl.FastIoRead, tbl.FastIoWrite, image))
    });
    let Some((read, write, image)) = target else { return false };
    let offset = t.offset;
    kernel::call_into(Some(image), || match (t.write, read, write) {
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

fn fast_io(device: *const DEVICE_OBJECT, t: Transfer, iosb: *mut IO_STATUS_BLOCK) -> bool {
    let Some(ext) = super::ext_of(device) else { return false };
    if ext.kind != DevKind::Volume as u8 {
        return forward(ext.lower, t, iosb);
    }
    let key = kernel::with(|k| build(k, device, ext.frame, FvId(ext.volume), ext.lower, t));
    let Some(key) = key else { return forward(ext.lower, t, iosb) };
    match super::dispatch::fast_pre(key) {
        PreEnd::Down => {
            // Parameters a filter changed (and marked dirty) go down.
            let t = match super::dispatch::data_of(key) {
                Some(d) if d.Flags & cbd::DIRTY != 0 => {
                    // SAFETY: the op's parameter block (its block outlives the op).
                    let iopb = unsafe { &*d.Iopb };
                    // SAFETY: the member of a read or write.
                    let p = unsafe { iopb.Parameters.Read };
                    Transfer { offset: p.ByteOffset, length: p.Length, buffer: p.ReadBuffer, ..t }
                }
                _ => t,
            };
            let done = forward(ext.lower, t, iosb);
            // SAFETY: all-zero is a valid status block.
            let mut result: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
            if done {
                // SAFETY: the caller's status block, written by the lower routine.
                result = unsafe { *iosb };
            } else {
                result.Anonymous.Status = Status::FLT_DISALLOW_FAST_IO.0;
            }
            super::dispatch::fast_result(key, result);
            super::dispatch::fast_post(key);
            done
        }
        PreEnd::Complete => {
            let d = super::dispatch::data_of(key);
            super::dispatch::fast_post(key);
            if let Some(d) = d {
                // SAFETY: the caller's status block.
                unsafe { *iosb = d.IoStatus };
            }
            true
        }
        PreEnd::Disallow | PreEnd::Pended => {
            super::dispatch::fast_post(key);
            false
        }
    }
}

fn build(
    k: &mut Kernel,
    device: *const DEVICE_OBJECT,
    frame: u32,
    v: FvId,
    lower: *mut DEVICE_OBJECT,
    t: Transfer,
) -> Option<u64> {
    let mut chain = k.fltmgr.ops.new_chain();
    k.fltmgr.frame_chain(v, frame, &mut chain);
    if chain.is_empty() {
        k.fltmgr.ops.unused_chain(chain);
        return None;
    }
    let posts = k.fltmgr.ops.new_posts();
    // SAFETY: a live file object of the request.
    let stream = unsafe { t.fo.as_ref() }.map_or(0, |f| f.FsContext as usize);
    let request = k.current_request;
    let key = super::dispatch::insert_op(k, |data, block, event| {
        // SAFETY: the fresh block behind `data` holds a CbdBlock.
        let b = unsafe { &mut *data.cast::<CbdBlock>() };
        b.iopb.MajorFunction = if t.write { mj::WRITE } else { mj::READ };
        b.iopb.TargetFileObject = t.fo.cast_mut();
        b.iopb.Parameters.Read.Length = t.length;
        b.iopb.Parameters.Read.Key = t.key;
        b.iopb.Parameters.Read.ByteOffset = t.offset;
        b.iopb.Parameters.Read.ReadBuffer = t.buffer;
        b.data.Flags = cbd::FAST_IO_OPERATION;
        b.data.Iopb = &raw const b.iopb;
        b.data.RequestorMode = 1;
        super::dispatch::fast_op(
            data,
            block,
            event,
            device,
            lower,
            frame,
            v,
            chain,
            t.fo as usize,
            stream,
            t.write,
            request,
            posts,
        )
    });
    let _ = OperationKind::FastIo;
    Some(key)
}
