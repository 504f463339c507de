//! Reads, writes (IRP and fast I/O, facts.md §1.7) and byte-range locks.

use fsfilter::Status;
use fsfilter_kernel::params;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IRP, PEPROCESS};
use windows_sys::Win32::Foundation::NTSTATUS;
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::media::NodeKind;
use super::oplock::{Oplock, Want};
use super::{Call, FsType, MountState, RangeLock, VOLUME_NODE};
use crate::irpx;
use crate::kernel::{self, Kernel};
use crate::nt::{
    FILE_USE_FILE_POINTER_POSITION, FILE_WRITE_TO_END_OF_FILE, irp_flags, mn_lock, sl,
};

/// `STATUS_INVALID_USER_BUFFER`: a transfer with a length and no buffer.
pub const STATUS_INVALID_USER_BUFFER: Status = Status::from_bits(0xC000_00E8);
/// `STATUS_DISK_FULL`: a write or a new size past [`MAX_FILE_SIZE`].
pub const STATUS_DISK_FULL: Status = Status::DISK_FULL;
/// `STATUS_INVALID_LOCK_RANGE`: a lock or unlock range past the last 64-bit offset (MS-FSA
/// 2.1.5.8, 2.1.5.9).
pub const STATUS_INVALID_LOCK_RANGE: Status = Status::from_bits(0xC000_01A1);
/// The largest file the simulated media holds (its files are kept in memory): writes and new
/// sizes beyond it fail with `STATUS_DISK_FULL`, as a real volume's do past its free space.
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// How a transfer reached the file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Through the cache (an IRP without `IRP_NOCACHE`, or fast I/O).
    Cached,
    /// Non-cached, not paging.
    NonCached,
    /// Paging I/O.
    Paging,
}

impl Path {
    fn of(flags: u32) -> Path {
        if flags & irp_flags::PAGING_IO != 0 {
            Path::Paging
        } else if flags & irp_flags::NOCACHE != 0 {
            Path::NonCached
        } else {
            Path::Cached
        }
    }
}

/// One transfer as the engine sees it.
#[derive(Clone, Copy)]
pub struct Transfer {
    /// The file object.
    pub fo: *mut FILE_OBJECT,
    /// The offset as the request gave it.
    pub offset: i64,
    /// The length.
    pub length: usize,
    /// The lock key.
    pub key: u32,
    /// The data (the caller's buffer).
    pub buffer: *mut u8,
    /// Cached, non-cached or paging.
    pub path: Path,
}

/// `IRP_MJ_READ`.
pub fn read(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `Read` is the member in use for IRP_MJ_READ.
    let p = *unsafe { params::io::<params::IoReadWrite>(&sl.Parameters) };
    let t = Transfer {
        fo: sl.FileObject,
        offset: p.ByteOffset,
        length: p.Length as usize,
        key: p.Key,
        // SAFETY: the live IRP.
        buffer: unsafe { irpx::data_buffer(call.irp) },
        path: Path::of(call.irp_flags()),
    };
    // FsRtlCheckOplock: a read breaks exclusive oplocks of other file objects to Level 2 (not a
    // Filter oplock, which readers share).
    let want = |o: &Oplock| if o.is_filter() { Want::Nothing } else { Want::Level2 };
    if let Some(s) = super::oplock::check_irp(call, want) {
        return s;
    }
    if let Some(pending) = at_dpc(call, t, false) {
        return pending;
    }
    let (status, n) = kernel::with(|k| k.fs_read(t, false));
    call.done(status, n)
}

/// A non-cached or paging transfer the caller does not wait for (asynchronous:
/// `IoIsOperationSynchronous` FALSE), or any with [`crate::fs::FsState::complete_at_dpc`] set,
/// is completed from a DPC (`DISPATCH_LEVEL`), as a transfer the storage stack completes from
/// its interrupt's DPC: completion routines above then run at `DISPATCH_LEVEL`, in whatever
/// thread the DPC interrupted. The file system does its part in the dispatch routine: what it
/// answers without the storage (a refusal, the end of the file, nothing to transfer) completes
/// there, as FastFat's `FatCommonRead` / `FatCommonWrite` answer it, and a transfer, once issued,
/// is not checked again (a dismount or a lock that comes before the DPC does not undo it). A
/// synchronous one is otherwise done and completed in the dispatch routine, the file system
/// waiting for the storage (docs/simulator.md, "Asynchronous I/O").
fn at_dpc(call: Call, t: Transfer, write: bool) -> Option<NTSTATUS> {
    // SAFETY: the live IRP in our dispatch routine.
    let asynchronous = !unsafe { irpx::is_operation_synchronous(call.irp) };
    let dpc = (asynchronous || kernel::with(|k| k.fs.complete_at_dpc)) && t.path != Path::Cached;
    if !dpc {
        return None;
    }
    let (status, n) =
        kernel::with(|k| if write { k.fs_write(t, false) } else { k.fs_read(t, false) });
    if !status.is_success() || n == 0 {
        return Some(call.done(status, n));
    }
    // SAFETY: the live IRP in our dispatch routine, completed later from the DPC.
    unsafe { fsfilter_kernel::irp::IoMarkIrpPending(call.irp) };
    let image = kernel::with(|k| k.current_image());
    crate::sched::queue_dpc(
        "file system transfer",
        image,
        1,
        Box::new(move || {
            let _ = call.done(status, n);
        }),
    );
    Some(crate::irpx::STATUS_PENDING)
}

/// `IRP_MJ_WRITE`.
pub fn write(call: Call) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `Write` is the member in use for IRP_MJ_WRITE.
    let p = *unsafe { params::io::<params::IoReadWrite>(&sl.Parameters) };
    let t = Transfer {
        fo: sl.FileObject,
        offset: p.ByteOffset,
        length: p.Length as usize,
        key: p.Key,
        // SAFETY: the live IRP.
        buffer: unsafe { irpx::data_buffer(call.irp) },
        path: Path::of(call.irp_flags()),
    };
    // FsRtlCheckOplock: a write breaks every oplock of other file objects to none.
    if let Some(s) = super::oplock::check_irp(call, |_| Want::None) {
        return s;
    }
    if t.path != Path::Paging {
        crate::sections::notify_conflicts(t.fo, crate::sections::ConflictOp::Write);
    }
    if let Some(pending) = at_dpc(call, t, true) {
        return pending;
    }
    let (status, n) = kernel::with(|k| k.fs_write(t, false));
    call.done(status, n)
}

/// Whether a cached transfer may take the fast path (the file header's `IsFastIoPossible`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FastIoState {
    /// `FastIoIsPossible`.
    Possible,
    /// `FastIoIsQuestionable`: the file has byte-range locks; the stack's
    /// `FastIoCheckIfPossible` decides.
    Questionable,
}

/// `FastIoRead`: copies from the "cache" when caching was initiated on the file object (the first
/// cached read or write IRP does that); FALSE otherwise, so the I/O manager builds an IRP.
///
/// # Safety
/// Called by the I/O manager (or a filter passing fast I/O down) with valid arguments.
pub unsafe extern "system" fn fast_io_read(
    fileobject: *const FILE_OBJECT,
    fileoffset: *const i64,
    length: u32,
    _wait: bool,
    lockkey: u32,
    buffer: *mut core::ffi::c_void,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let Some(&offset) = (unsafe { fileoffset.as_ref() }) else { return false };
    let t = Transfer {
        fo: fileobject.cast_mut(),
        offset,
        length: length as usize,
        key: lockkey,
        buffer: buffer.cast(),
        path: Path::Cached,
    };
    let r = fast_io_allowed(t, false, iostatus, |k| k.fs_read(t, true));
    fast_result(r, iostatus)
}

/// Whether a cached transfer may take the fast path (`FsRtlCopyRead` / `FsRtlCopyWrite`, the
/// Windows Research Kernel): not when the file object is not cached or fast I/O is not possible
/// for the file; when it is questionable (the file has byte-range locks), the answer of the
/// `FastIoCheckIfPossible` routine of the top of the file object's stack
/// (`IoGetRelatedDeviceObject`), which filters see on its way down to the file system's own
/// check ([`fast_io_check_if_possible`]). When it may, `then` runs (in the same borrow of the
/// kernel when no check was asked) and its result is answered.
#[inline(always)]
fn fast_io_allowed<R>(
    t: Transfer,
    write: bool,
    iostatus: *mut IO_STATUS_BLOCK,
    then: impl FnOnce(&mut Kernel) -> R,
) -> Option<R> {
    let mut then = Some(then);
    let questionable = kernel::with(|k| match k.fast_io_state(t, write)? {
        FastIoState::Possible => Some(Ok(then.take().map(|f| f(k)))),
        FastIoState::Questionable => Some(Err(())),
    });
    match questionable? {
        Ok(done) => done,
        Err(()) if check_if_possible(t, write, iostatus) => {
            // The file may have changed in the check (a filter's callbacks ran): asked again.
            let then = then.take()?;
            kernel::with(|k| k.fast_io_state(t, write).map(|_| then(k)))
        }
        Err(()) => None,
    }
}

/// Asks the `FastIoCheckIfPossible` of the top of the file object's stack whether a transfer on
/// a file with byte-range locks may take the fast path ([`fast_io_allowed`]); a top driver
/// without the routine is a `BUGCHECK` finding, and the answer FALSE.
#[cold]
#[inline(never)]
fn check_if_possible(t: Transfer, write: bool, iostatus: *mut IO_STATUS_BLOCK) -> bool {
    let routine = kernel::with(|k| {
        let top = k.related_device(t.fo);
        let routine = top_check_if_possible(k, top);
        if routine.is_none() {
            let driver = k
                .objects
                .device_id(top)
                .map(|d| k.objects.driver(k.objects.device(d).driver).service.clone());
            k.report(
                crate::events::Rule::Bugcheck,
                driver,
                "fast I/O on a file with byte-range locks: FsRtlCopyRead and FsRtlCopyWrite \
                 call the FastIoCheckIfPossible routine of the top of the stack, which its \
                 driver does not supply (facts.md §1.7: a filter must supply every routine)",
            );
        }
        routine.map(|r| (r, top))
    });
    let Some(((check, image), top)) = routine else { return false };
    let offset = t.offset;
    let (length, key) = (t.length as u32, t.key);
    kernel::call_into(Some(image), || {
        // SAFETY: the top driver's routine with the transfer's arguments and its device, as
        // FsRtlCopyRead and FsRtlCopyWrite call it.
        unsafe { check(t.fo, &offset, length, true, key, !write, iostatus, top) }
    })
}

/// A driver's `FastIoCheckIfPossible`.
type CheckIfPossible = unsafe extern "system" fn(
    *const FILE_OBJECT,
    *const i64,
    u32,
    bool,
    u32,
    bool,
    *mut IO_STATUS_BLOCK,
    *const DEVICE_OBJECT,
) -> bool;

/// The `FastIoCheckIfPossible` of `top`'s driver, with its image, when its table holds one.
fn top_check_if_possible(
    k: &Kernel,
    top: *mut DEVICE_OBJECT,
) -> Option<(CheckIfPossible, crate::ids::ImageId)> {
    let d = k.objects.device_id(top)?;
    let driver = k.objects.driver(k.objects.device(d).driver);
    // SAFETY: a live driver object.
    let table = unsafe { (*driver.ptr).FastIoDispatch };
    // SAFETY: its table, when set (the driver's static data).
    let table = unsafe { table.as_ref() }?;
    let field = std::mem::offset_of!(FAST_IO_DISPATCH, FastIoCheckIfPossible);
    if (table.SizeOfFastIoDispatch as usize) < field + size_of::<usize>() {
        return None;
    }
    Some((table.FastIoCheckIfPossible?, driver.image))
}

/// `FastIoCheckIfPossible` of the disk file systems (`FsRtlFastCheckLockForRead` /
/// `FsRtlFastCheckLockForWrite`): TRUE when no byte-range lock of another holder conflicts with
/// the transfer, so the fast path may go on.
///
/// # Safety
/// Called by a driver above (or `FsRtlCopyRead`) with valid arguments.
pub unsafe extern "system" fn fast_io_check_if_possible(
    fileobject: *const FILE_OBJECT,
    fileoffset: *const i64,
    length: u32,
    _wait: bool,
    lockkey: u32,
    checkforreadoperation: bool,
    _iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let Some(&offset) = (unsafe { fileoffset.as_ref() }) else { return false };
    if offset < 0 {
        return false;
    }
    kernel::with(|k| {
        let Some(fcb) = k.fcb_of(fileobject) else { return false };
        let write = !checkforreadoperation;
        let (fo, length) = (fileobject as usize, u64::from(length));
        !lock_conflict(&fcb.locks, fo, lockkey, offset as u64, length, write)
    })
}

/// `FastIoWrite`: writes through the "cache" when caching was initiated and the write does not
/// extend the file; FALSE otherwise.
///
/// # Safety
/// As [`fast_io_read`].
pub unsafe extern "system" fn fast_io_write(
    fileobject: *const FILE_OBJECT,
    fileoffset: *const i64,
    length: u32,
    _wait: bool,
    lockkey: u32,
    buffer: *const core::ffi::c_void,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset.
    let Some(&offset) = (unsafe { fileoffset.as_ref() }) else { return false };
    let t = Transfer {
        fo: fileobject.cast_mut(),
        offset,
        length: length as usize,
        key: lockkey,
        buffer: buffer.cast_mut().cast(),
        path: Path::Cached,
    };
    if fast_io_allowed(t, true, iostatus, |_| ()).is_none() {
        return false;
    }
    crate::sections::notify_conflicts(t.fo, crate::sections::ConflictOp::Write);
    // Checked again after the section owners ran; a lock taken meanwhile is checked here.
    let r = kernel::with(|k| {
        let possible = match k.fast_io_state(t, true)? {
            FastIoState::Possible => true,
            FastIoState::Questionable => !k.fast_lock_conflict(t, true),
        };
        possible.then(|| k.fs_write(t, true))
    });
    fast_result(r, iostatus)
}

fn fast_result(r: Option<(Status, usize)>, iostatus: *mut IO_STATUS_BLOCK) -> bool {
    let Some((status, n)) = r else { return false };
    // SAFETY: the caller's status block.
    if let Some(iosb) = unsafe { iostatus.as_mut() } {
        iosb.Anonymous.Status = status.0;
        iosb.Information = n;
    }
    true
}

/// `IRP_MJ_LOCK_CONTROL`.
pub fn lock_control(call: Call, minor: u8) -> NTSTATUS {
    // FsRtlCheckOplock: byte-range locking breaks oplocks of other file objects to none, except
    // a Filter oplock.
    let want = |o: &Oplock| if o.is_filter() { Want::Nothing } else { Want::None };
    if let Some(s) = super::oplock::check_irp(call, want) {
        return s;
    }
    let sl = call.sl();
    // SAFETY: `LockControl` is the member in use for IRP_MJ_LOCK_CONTROL.
    let p = *unsafe { params::io::<params::IoLockControl>(&sl.Parameters) };
    // Lock offsets and lengths are unsigned 64-bit values (MS-FSA 2.1.5.8, FsRtl's lock package).
    // SAFETY: the I/O manager's length, or null.
    let length = unsafe { p.Length.as_ref() }.copied().unwrap_or(0) as u64;
    let offset = p.ByteOffset as u64;
    let fo = sl.FileObject as usize;
    let flags = sl.Flags;
    let lock =
        RangeLock { fo, key: p.Key, offset, length, exclusive: flags & sl::EXCLUSIVE_LOCK != 0 };
    let irp = call.irp as usize;
    let r = kernel::with(|k| k.fs_lock(fo, minor, lock, flags & sl::FAIL_IMMEDIATELY != 0, irp));
    let (result, granted) = r;
    let status = match result {
        Some(s) => call.done(s, 0),
        None => Status::PENDING.0,
    };
    complete_granted(granted);
    status
}

/// `FastIoLock` of the disk file systems (`FsRtlFastLock` on the file's lock): a lock that can be
/// granted now is granted, one that conflicts is refused when the caller asked to fail
/// immediately (TRUE, `STATUS_LOCK_NOT_GRANTED`), and one that would have to wait is not served
/// (FALSE: the I/O manager builds the IRP, which waits). Namespace file systems serve no lock
/// here.
///
/// # Safety
/// Called by the I/O manager (or a filter passing fast I/O down) with valid arguments.
pub unsafe extern "system" fn fast_io_lock(
    fileobject: *const FILE_OBJECT,
    fileoffset: *const i64,
    length: *const i64,
    _processid: PEPROCESS,
    key: u32,
    failimmediately: bool,
    exclusivelock: bool,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset and length.
    let range = unsafe { fast_range(fileobject, fileoffset, length, key, exclusivelock) };
    let Some(lock) = range else { return false };
    fast_lock(lock, mn_lock::LOCK, failimmediately, iostatus)
}

/// `FastIoUnlockSingle` of the disk file systems (`FsRtlFastUnlockSingle`): TRUE with
/// `STATUS_SUCCESS`, or `STATUS_RANGE_NOT_LOCKED` when the range is not locked by the caller;
/// locks that waited for the range are granted.
///
/// # Safety
/// As [`fast_io_lock`].
pub unsafe extern "system" fn fast_io_unlock_single(
    fileobject: *const FILE_OBJECT,
    fileoffset: *const i64,
    length: *const i64,
    _processid: PEPROCESS,
    key: u32,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the caller's offset and length.
    let range = unsafe { fast_range(fileobject, fileoffset, length, key, false) };
    let Some(lock) = range else { return false };
    fast_lock(lock, mn_lock::UNLOCK_SINGLE, false, iostatus)
}

/// `FastIoUnlockAll` of the disk file systems (`FsRtlFastUnlockAll`): the file object's locks.
///
/// # Safety
/// As [`fast_io_lock`].
pub unsafe extern "system" fn fast_io_unlock_all(
    fileobject: *const FILE_OBJECT,
    _processid: PEPROCESS,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    let lock =
        RangeLock { fo: fileobject as usize, key: 0, offset: 0, length: 0, exclusive: false };
    fast_lock(lock, mn_lock::UNLOCK_ALL, false, iostatus)
}

/// `FastIoUnlockAllByKey` of the disk file systems (`FsRtlFastUnlockAllByKey`).
///
/// # Safety
/// As [`fast_io_lock`].
pub unsafe extern "system" fn fast_io_unlock_all_by_key(
    fileobject: *const FILE_OBJECT,
    _processid: *const core::ffi::c_void,
    key: u32,
    iostatus: *mut IO_STATUS_BLOCK,
    _deviceobject: *const DEVICE_OBJECT,
) -> bool {
    let lock = RangeLock { fo: fileobject as usize, key, offset: 0, length: 0, exclusive: false };
    fast_lock(lock, mn_lock::UNLOCK_ALL_BY_KEY, false, iostatus)
}

/// The range of a fast lock call.
///
/// # Safety
/// `offset` and `length` must be null or point to the caller's values.
unsafe fn fast_range(
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: *const i64,
    key: u32,
    exclusive: bool,
) -> Option<RangeLock> {
    // SAFETY: the caller's offset.
    let offset = *unsafe { offset.as_ref() }?;
    // SAFETY: the caller's length.
    let length = *unsafe { length.as_ref() }?;
    Some(RangeLock {
        fo: fo as usize,
        key,
        offset: offset as u64,
        length: length as u64,
        exclusive,
    })
}

/// Serves a fast lock call on the file's lock, or answers FALSE (see [`fast_io_lock`]).
fn fast_lock(
    lock: RangeLock,
    minor: u8,
    fail_immediately: bool,
    iostatus: *mut IO_STATUS_BLOCK,
) -> bool {
    let served = kernel::with(|k| k.fs_fast_lock(minor, lock, fail_immediately));
    let Some((status, granted)) = served else { return false };
    // SAFETY: the caller's status block.
    if let Some(iosb) = unsafe { iostatus.as_mut() } {
        iosb.Anonymous.Status = status.0;
        iosb.Information = 0;
    }
    complete_granted(granted);
    true
}

/// Completes lock requests that waited and are now granted.
pub fn complete_granted(granted: Vec<usize>) {
    for irp in granted {
        // SAFETY: a lock IRP the file system kept pending (marked pending when queued).
        unsafe { irpx::complete(irp as *mut _, Status::SUCCESS, 0) };
    }
}

/// Completes lock requests that waited and were given up because their file object's handle
/// went (its cleanup): `STATUS_RANGE_NOT_LOCKED`, as FsRtl's unlock-all of the file object
/// completes the object's waiting locks (the Windows Research Kernel's
/// `FsRtlPrivateFastUnlockAll`).
pub fn complete_dropped(dropped: Vec<usize>) {
    for irp in dropped {
        // SAFETY: a lock IRP the file system kept pending (marked pending when queued).
        unsafe { irpx::complete(irp as *mut _, Status::RANGE_NOT_LOCKED, 0) };
    }
}

impl Kernel {
    /// Checks that fast I/O can serve the transfer: a cached file (caching initiated), a mounted
    /// volume, no lock in the way, and for writes no extension of the file.
    #[inline]
    fn fast_io_state(&self, t: Transfer, write: bool) -> Option<FastIoState> {
        let fcb = self.fcb_of(t.fo)?;
        if fcb.node == VOLUME_NODE {
            return None;
        }
        let m = &self.fs.mounts[fcb.mount as usize];
        if m.state != MountState::Mounted || m.ty.is_namespace() {
            return None;
        }
        // SAFETY: a live file object of this file system.
        if unsafe { (*t.fo).PrivateCacheMap }.is_null() {
            return None;
        }
        let node = self.volumes.list[m.volume.index()].media.node(fcb.node);
        if node.is_dir() || t.offset < 0 {
            return None;
        }
        if write && t.offset as u64 + t.length as u64 > node.size() {
            return None;
        }
        // Not with Level 2 oplocks or a break under way (`FsRtlOplockIsFastIoPossible`, which
        // FastFat's `FatIsFastIoPossible` asks): the IRP checks the oplock.
        if !self.fs.oplocks.is_empty()
            && self.fs.oplocks.get(&fcb.ptr()).is_some_and(|o| !o.fast_io_possible())
        {
            return None;
        }
        // A file with byte-range locks: questionable, as the disk file systems set
        // `IsFastIoPossible` (FastFat's `FatIsFastIoPossible`).
        Some(if fcb.locks.is_empty() { FastIoState::Possible } else { FastIoState::Questionable })
    }

    /// Whether a byte-range lock of another holder conflicts with a cached transfer.
    fn fast_lock_conflict(&self, t: Transfer, write: bool) -> bool {
        let Some(fcb) = self.fcb_of(t.fo) else { return true };
        let offset = t.offset.max(0) as u64;
        lock_conflict(&fcb.locks, t.fo as usize, t.key, offset, t.length as u64, write)
    }

    /// The file system's read; `fast` for `FastIoRead` (`FsRtlCopyRead`), which leaves the
    /// position alone when it answers the end of the file.
    pub fn fs_read(&mut self, t: Transfer, fast: bool) -> (Status, usize) {
        let Some(fcb) = self.fcb_of(t.fo) else { return (Status::INVALID_DEVICE_REQUEST, 0) };
        let (mount, node_id) = (fcb.mount, fcb.node);
        let m = &self.fs.mounts[mount as usize];
        if m.state != MountState::Mounted {
            return (Status::VOLUME_DISMOUNTED, 0);
        }
        let ty = m.ty;
        let volume = &self.volumes.list[m.volume.index()];
        // SAFETY: the request's live file object.
        let file = unsafe { irpx::file(t.fo) };
        if t.buffer.is_null() && t.length > 0 {
            // As for a write (fs_write): the access to the missing buffer faults.
            return (STATUS_INVALID_USER_BUFFER, 0);
        }
        if node_id == VOLUME_NODE {
            // A volume (DASD) read: the raw media, as the storage device holds it.
            if t.offset < 0 {
                return (Status::INVALID_PARAMETER, 0);
            }
            let bytes = volume.media_image(t.offset as u64, t.length);
            // SAFETY: the request's buffer of `length` bytes.
            let n = unsafe { irpx::copy_out(t.buffer, t.length, &bytes) };
            return (Status::SUCCESS, n);
        }
        let node = volume.media.node(node_id);
        if node.is_dir() {
            return (Status::INVALID_DEVICE_REQUEST, 0);
        }
        let offset = if ty.is_stream() || t.offset == FILE_USE_FILE_POINTER_POSITION {
            file.CurrentByteOffset
        } else {
            t.offset
        };
        if offset < 0 {
            return (Status::INVALID_PARAMETER, 0);
        }
        let offset = offset as u64;
        if t.path == Path::NonCached && ty.sector_aligned() && !aligned(ty, offset, t.length) {
            return (Status::INVALID_PARAMETER, 0);
        }
        // FastFat's FatCommonRead and FatCommonWrite leave the position of a synchronous file
        // object at the transfer's start when they answer an error once the offset is known (the
        // position is the start plus nothing for an NT_ERROR status), so an explicit offset moves
        // it even so; FsRtlCopyRead's end of file does not touch it.
        let failed = |file: &mut FILE_OBJECT, status: Status| {
            if !fast && moves_position(file, t.path, ty) {
                file.CurrentByteOffset = offset as i64;
            }
            (status, 0)
        };
        if t.path != Path::Paging
            && lock_conflict(&fcb.locks, t.fo as usize, t.key, offset, t.length as u64, false)
        {
            return failed(file, Status::FILE_LOCK_CONFLICT);
        }
        if t.length == 0 {
            return (Status::SUCCESS, 0);
        }
        let data = node.data();
        if offset >= data.len() as u64 {
            return failed(file, Status::END_OF_FILE);
        }
        let start = offset as usize;
        let end = data.len().min(start + t.length);
        // SAFETY: the request's buffer of `length` bytes.
        let n = unsafe { irpx::copy_out(t.buffer, t.length, &data[start..end]) };
        if moves_position(file, t.path, ty) {
            file.CurrentByteOffset = (offset + n as u64) as i64;
        }
        if t.path == Path::Cached && file.PrivateCacheMap.is_null() && ty.initiates_caching() {
            // CcInitializeCacheMap on the first cached transfer.
            file.PrivateCacheMap = fcb.cache_map();
            // SAFETY: the FCB's section object pointers.
            unsafe { (*fcb.sop()).SharedCacheMap = fcb.cache_map() };
        }
        (Status::SUCCESS, n)
    }

    /// The file system's write.
    pub fn fs_write(&mut self, t: Transfer, fast: bool) -> (Status, usize) {
        let Some(fcb) = self.fcb_of(t.fo) else { return (Status::INVALID_DEVICE_REQUEST, 0) };
        let (mount, node_id, fcb_ptr) = (fcb.mount, fcb.node, fcb.ptr());
        let m = &self.fs.mounts[mount as usize];
        if m.state != MountState::Mounted {
            return (Status::VOLUME_DISMOUNTED, 0);
        }
        let ty = m.ty;
        let vidx = m.volume.index();
        if ty.desc().read_only {
            return (Status::MEDIA_WRITE_PROTECTED, 0);
        }
        // SAFETY: the request's live file object.
        let file = unsafe { irpx::file(t.fo) };
        if node_id == VOLUME_NODE {
            // Volume (DASD) writes are accepted and leave the simulated media as it is.
            return (Status::SUCCESS, t.length);
        }
        let now = crate::fs::media::EPOCH_2026 + self.sched.now as i64;
        let size = self.volumes.list[vidx].media.node(node_id).size();
        if self.volumes.list[vidx].media.node(node_id).is_dir() {
            return (Status::INVALID_DEVICE_REQUEST, 0);
        }
        let offset = if ty.is_stream() || t.offset == FILE_WRITE_TO_END_OF_FILE {
            size as i64
        } else if t.offset == FILE_USE_FILE_POINTER_POSITION {
            file.CurrentByteOffset
        } else {
            t.offset
        };
        if offset < 0 {
            return (Status::INVALID_PARAMETER, 0);
        }
        let offset = offset as u64;
        if t.path == Path::NonCached && ty.sector_aligned() && !aligned(ty, offset, t.length) {
            return (Status::INVALID_PARAMETER, 0);
        }
        let fcb = &self.fs.fcbs[&fcb_ptr];
        if t.path != Path::Paging
            && lock_conflict(&fcb.locks, t.fo as usize, t.key, offset, t.length as u64, true)
        {
            // As for a read (fs_read): the position is left at the start (FatCommonWrite).
            if moves_position(file, t.path, ty) {
                file.CurrentByteOffset = offset as i64;
            }
            return (Status::FILE_LOCK_CONFLICT, 0);
        }
        let length = if t.path == Path::Paging {
            // Paging writes never extend the file.
            if offset >= size {
                return (Status::SUCCESS, 0);
            }
            t.length.min((size - offset) as usize)
        } else {
            t.length
        };
        if length == 0 {
            return (Status::SUCCESS, 0);
        }
        if t.buffer.is_null() {
            // The file system's access to a missing buffer faults, and its exception handler
            // answers for it (a kernel-mode caller's malformed request, fuzz target `irp`).
            return (STATUS_INVALID_USER_BUFFER, 0);
        }
        if offset.checked_add(length as u64).is_none_or(|end| end > MAX_FILE_SIZE) {
            return (STATUS_DISK_FULL, 0);
        }
        // SAFETY: the request's buffer of `length` bytes.
        let src = unsafe { irpx::bytes(t.buffer, length) };
        let node = self.volumes.list[vidx].media.node_mut(node_id);
        let start = offset as usize;
        if let NodeKind::File { data } = &mut node.kind {
            if data.len() < start + length {
                data.resize(start + length, 0);
            }
            data[start..start + length].copy_from_slice(src);
        }
        let new_size = node.size();
        // A named stream's times and attributes are its file's (Learn, "File Streams").
        let media = &mut self.volumes.list[vidx].media;
        let node = media.node_mut(media.file_of(node_id));
        node.times[2] = now;
        node.times[3] = now;
        node.attributes |= crate::nt::attr::ARCHIVE;
        if t.path != Path::Paging {
            super::notify::mark_modified(file, new_size != size);
        }
        let fcb = &self.fs.fcbs[&fcb_ptr];
        fcb.set_size(new_size);
        self.sections.write_through(fcb_ptr, offset, src);
        if moves_position(file, t.path, ty) {
            file.CurrentByteOffset = (offset + length as u64) as i64;
        }
        if t.path == Path::Cached
            && file.PrivateCacheMap.is_null()
            && !fast
            && ty.initiates_caching()
        {
            file.PrivateCacheMap = fcb.cache_map();
            // SAFETY: the FCB's section object pointers.
            unsafe { (*fcb.sop()).SharedCacheMap = fcb.cache_map() };
        }
        (Status::SUCCESS, length)
    }

    /// A fast-I/O lock call ([`fast_io_lock`]): the status and the waiting requests granted, or
    /// None when fast I/O does not serve it (a namespace file system, or a lock that would wait).
    fn fs_fast_lock(
        &mut self,
        minor: u8,
        lock: RangeLock,
        fail_immediately: bool,
    ) -> Option<(Status, Vec<usize>)> {
        let fcb = self.fcb_of(lock.fo as *const FILE_OBJECT)?;
        let m = self.fs.mounts.get(fcb.mount as usize)?;
        let oplocked = !self.fs.oplocks.is_empty()
            && self.fs.oplocks.get(&fcb.ptr()).is_some_and(|o| !o.fast_io_possible());
        if m.ty.is_namespace() || oplocked {
            return None;
        }
        if minor == mn_lock::LOCK && !fail_immediately && range_conflict(&fcb.locks, &lock) {
            return None;
        }
        let (status, granted) = self.fs_lock(lock.fo, minor, lock, fail_immediately, 0);
        status.map(|s| (s, granted))
    }

    /// Lock control. Returns the completion status (None: the request waits, pended) and the
    /// waiting requests granted meanwhile.
    fn fs_lock(
        &mut self,
        fo: usize,
        minor: u8,
        lock: RangeLock,
        fail_immediately: bool,
        irp: usize,
    ) -> (Option<Status>, Vec<usize>) {
        let Some(fcb) = self.fcb_of(fo as *const FILE_OBJECT) else {
            return (Some(Status::INVALID_DEVICE_REQUEST), Vec::new());
        };
        let (mount, node, p) = (fcb.mount, fcb.node, fcb.ptr());
        let m = &self.fs.mounts[mount as usize];
        if m.state != MountState::Mounted {
            return (Some(Status::VOLUME_DISMOUNTED), Vec::new());
        }
        if node == VOLUME_NODE || self.volumes.list[m.volume.index()].media.node(node).is_dir() {
            return (Some(Status::INVALID_PARAMETER), Vec::new());
        }
        let fcb = self.fs.fcbs.get_mut(&p).expect("the FCB found above");
        let single = matches!(minor, mn_lock::LOCK | mn_lock::UNLOCK_SINGLE);
        if single && lock.length != 0 && lock.offset.checked_add(lock.length - 1).is_none() {
            // The range holds bytes past the last 64-bit offset (MS-FSA 2.1.5.8, 2.1.5.9).
            return (Some(STATUS_INVALID_LOCK_RANGE), Vec::new());
        }
        let status = match minor {
            mn_lock::LOCK => {
                if range_conflict(&fcb.locks, &lock) {
                    if fail_immediately {
                        Some(Status::LOCK_NOT_GRANTED)
                    } else {
                        // Waits for the conflicting range to be unlocked, cancelable
                        // (`CancelIoEx`): FsRtl's lock package sets its cancel routine, then
                        // answers a request cancelled on its way down at once.
                        let irp_ptr = irp as *mut IRP;
                        let routine = Some(waiting_lock_cancelled as _);
                        // SAFETY: the live lock IRP in our dispatch routine.
                        if !unsafe { crate::cancel::make_cancelable(irp_ptr, routine) } {
                            Some(Status::CANCELLED)
                        } else {
                            // SAFETY: as above.
                            unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp_ptr) };
                            fcb.waiting_locks.push(irp);
                            self.fs.waiting.insert(irp, lock);
                            None
                        }
                    }
                } else {
                    fcb.locks.push(lock);
                    Some(Status::SUCCESS)
                }
            }
            mn_lock::UNLOCK_SINGLE => {
                match fcb.locks.iter().position(|l| {
                    l.fo == fo
                        && l.key == lock.key
                        && l.offset == lock.offset
                        && l.length == lock.length
                }) {
                    Some(i) => {
                        fcb.locks.remove(i);
                        Some(Status::SUCCESS)
                    }
                    None => Some(Status::RANGE_NOT_LOCKED),
                }
            }
            mn_lock::UNLOCK_ALL => {
                fcb.locks.retain(|l| l.fo != fo);
                Some(Status::SUCCESS)
            }
            mn_lock::UNLOCK_ALL_BY_KEY => {
                fcb.locks.retain(|l| l.fo != fo || l.key != lock.key);
                Some(Status::SUCCESS)
            }
            _ => Some(Status::INVALID_DEVICE_REQUEST),
        };
        let granted = self.grant_waiting_locks(p);
        (status, granted)
    }

    /// Removes the waiting lock requests of a file object from its FCB; returns their IRPs, for
    /// [`complete_dropped`]. Without this, a request still waiting when its handle is cleaned up
    /// was granted later to a file object nobody could unlock with any more.
    pub fn drop_waiting_locks(&mut self, fcb: usize, fo: usize) -> Vec<usize> {
        let mut dropped = Vec::new();
        let Some(f) = self.fs.fcbs.get_mut(&fcb) else { return dropped };
        let waiting = &mut self.fs.waiting;
        f.waiting_locks.retain(|irp| match waiting.get(irp) {
            Some(lock) if lock.fo == fo => {
                waiting.remove(irp);
                // SAFETY: a waiting lock IRP, live until completed.
                unsafe { crate::cancel::clear_cancel_routine(*irp as *mut IRP) };
                dropped.push(*irp);
                false
            }
            Some(_) => true,
            None => false,
        });
        dropped
    }

    /// Grants the waiting lock requests of an FCB that no longer conflict; returns their IRPs.
    pub fn grant_waiting_locks(&mut self, fcb: usize) -> Vec<usize> {
        let mut granted = Vec::new();
        let Some(f) = self.fs.fcbs.get_mut(&fcb) else { return granted };
        let mut i = 0;
        while i < f.waiting_locks.len() {
            let irp = f.waiting_locks[i];
            let Some(lock) = self.fs.waiting.get(&irp).copied() else {
                f.waiting_locks.remove(i);
                continue;
            };
            if range_conflict(&f.locks, &lock) {
                i += 1;
            } else {
                f.locks.push(lock);
                f.waiting_locks.remove(i);
                self.fs.waiting.remove(&irp);
                // SAFETY: a waiting lock IRP, live until completed.
                unsafe { crate::cancel::clear_cancel_routine(irp as *mut IRP) };
                granted.push(irp);
            }
        }
        granted
    }
}

impl Kernel {
    /// A waiting lock request was cancelled: it stops waiting.
    fn drop_waiting_lock(&mut self, irp: usize) {
        if self.fs.waiting.remove(&irp).is_some() {
            for f in self.fs.fcbs.values_mut() {
                f.waiting_locks.retain(|&i| i != irp);
            }
        }
    }
}

/// The cancel routine of a waiting lock request: it stops waiting and completes with
/// `STATUS_CANCELLED`, as FsRtl's lock package cancels one.
unsafe extern "system" fn waiting_lock_cancelled(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: the IRP being cancelled, as IoCancelIrp passes it, waiting for its range.
    unsafe { crate::cancel::complete_cancelled(irp, |k| k.drop_waiting_lock(irp as usize)) };
}

/// Non-cached transfers on disk and CD file systems must be sector aligned.
/// Whether a transfer moves the file object's position: on a synchronous file object only
/// (FastFat and FsRtl's fast paths), not for paging I/O; an asynchronous one has none the I/O
/// manager keeps. A pipe's or mailslot's is the reader's place in the stream, which moves
/// whoever waits (its data is consumed).
fn moves_position(file: &FILE_OBJECT, path: Path, ty: FsType) -> bool {
    path != Path::Paging && (file.Flags & crate::nt::fo::SYNCHRONOUS_IO != 0 || ty.is_stream())
}

fn aligned(ty: FsType, offset: u64, length: usize) -> bool {
    let sector: u64 = if matches!(ty, FsType::Cdfs | FsType::Udfs) { 2048 } else { 512 };
    offset % sector == 0 && length as u64 % sector == 0
}

/// A new lock conflicts with an overlapping lock when either is exclusive.
fn range_conflict(locks: &[RangeLock], new: &RangeLock) -> bool {
    locks.iter().any(|l| l.overlaps(new.offset, new.length) && (l.exclusive || new.exclusive))
}

/// `FsRtlCheckLockForReadAccess` / `...WriteAccess`: a read conflicts with another owner's
/// exclusive lock; a write with another owner's lock and with any shared lock.
fn lock_conflict(
    locks: &[RangeLock],
    fo: usize,
    key: u32,
    offset: u64,
    length: u64,
    write: bool,
) -> bool {
    locks.iter().any(|l| {
        if !l.overlaps(offset, length) {
            return false;
        }
        let owner = l.fo == fo && l.key == key;
        if write { !(owner && l.exclusive) } else { l.exclusive && !owner }
    })
}
