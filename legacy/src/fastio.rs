//! The fast-I/O table. Every entry passes through to the lower driver's routine after checking
//! that its table covers the field and the field is set (facts.md §1.7); reads, writes, checks
//! (`FastIoCheckIfPossible`, as `IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE`) and query opens
//! (`FastIoQueryOpen`, as `IRP_MJ_NETWORK_QUERY_OPEN`) run the model's pre and post callbacks; the lock and the basic and standard query routines decline
//! for a filter that registers `IRP_MJ_LOCK_CONTROL` or `IRP_MJ_QUERY_INFORMATION`, so that
//! those come to it as IRPs; `FastIoDetachDevice` tears the instance down when the volume below
//! goes away. The six acquire/release entries stay NULL: on XP and later the I/O manager
//! bypasses them for filters, which use FsFilter callbacks instead (facts.md §1.7).

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::{offset_of, size_of};

use fsfilter::{
    Buffer, Filter, HeaderSource, Instance, IoStatus, LazyHeader, MajorFunction, OperationHeader,
    OperationKind, Parameters, PostFlags, PostOperation, PreOperation, PreOutcome,
    ReadWriteParameters, Status,
};
use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, FAST_IO_DISPATCH, FILE_OBJECT, IRP, MDL, PEPROCESS,
};
use windows_sys::Wdk::Storage::FileSystem::{
    COMPRESSED_DATA_INFO, FILE_BASIC_INFORMATION, FILE_NETWORK_OPEN_INFORMATION,
    FILE_STANDARD_INFORMATION,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use crate::dispatch::instance_view;
use crate::services::OpServices;
use crate::state::{DeviceExt, DriverState};
use crate::view;

/// The table for filter type `F`, as static data.
pub(crate) struct FastIoTable<F>(PhantomData<fn() -> F>);

impl<F: Filter> FastIoTable<F> {
    const TABLE: FAST_IO_DISPATCH = FAST_IO_DISPATCH {
        SizeOfFastIoDispatch: size_of::<FAST_IO_DISPATCH>() as u32,
        FastIoCheckIfPossible: Some(check_if_possible::<F>),
        FastIoRead: Some(read::<F>),
        FastIoWrite: Some(write::<F>),
        FastIoQueryBasicInfo: Some(query_basic_info::<F>),
        FastIoQueryStandardInfo: Some(query_standard_info::<F>),
        FastIoLock: Some(lock::<F>),
        FastIoUnlockSingle: Some(unlock_single::<F>),
        FastIoUnlockAll: Some(unlock_all::<F>),
        FastIoUnlockAllByKey: Some(unlock_all_by_key::<F>),
        FastIoDeviceControl: Some(device_control::<F>),
        AcquireFileForNtCreateSection: None,
        ReleaseFileForNtCreateSection: None,
        FastIoDetachDevice: Some(detach_device::<F>),
        FastIoQueryNetworkOpenInfo: Some(query_network_open_info::<F>),
        AcquireForModWrite: None,
        MdlRead: Some(mdl_read::<F>),
        MdlReadComplete: Some(mdl_read_complete::<F>),
        PrepareMdlWrite: Some(prepare_mdl_write::<F>),
        MdlWriteComplete: Some(mdl_write_complete::<F>),
        FastIoReadCompressed: Some(read_compressed::<F>),
        FastIoWriteCompressed: Some(write_compressed::<F>),
        MdlReadCompleteCompressed: Some(mdl_read_complete_compressed::<F>),
        MdlWriteCompleteCompressed: Some(mdl_write_complete_compressed::<F>),
        FastIoQueryOpen: Some(query_open::<F>),
        ReleaseForModWrite: None,
        AcquireForCcFlush: None,
        ReleaseForCcFlush: None,
    };

    /// The table, for `DriverObject->FastIoDispatch` (read-only; nobody writes it).
    pub(crate) fn get() -> &'static FAST_IO_DISPATCH {
        const { &Self::TABLE }
    }
}

/// The lower driver's table and device, for one of our attached devices, when the table's size
/// covers `covers` bytes (sfilter's VALID_FAST_IO_DISPATCH_HANDLER: the end of the entry the
/// caller will read, [`covers!`]).
///
/// # Safety
/// `device` must be a live device of this image.
#[inline(never)] // one copy for the twenty pass-through routines
unsafe fn lower<'a, F: Filter>(
    device: *const DEVICE_OBJECT,
    covers: usize,
) -> Option<(&'a FAST_IO_DISPATCH, *mut DEVICE_OBJECT)> {
    // SAFETY: this image's state.
    let state = unsafe { DriverState::<F>::current() }?;
    // SAFETY: our device.
    let lower = unsafe { state.ext(device) }?.lower;
    // SAFETY: the device our device is attached to, or null.
    let (table, lower) = unsafe { table_of(lower) }?;
    (covers <= table.SizeOfFastIoDispatch as usize).then_some((table, lower))
}

/// The size a lower table must have for its `$field` to be there.
macro_rules! covers {
    ($field:ident) => {
        offset_of!(FAST_IO_DISPATCH, $field) + size_of::<usize>()
    };
}

/// The fast-I/O table of the driver of `lower` (the device one of ours is attached to), with
/// `lower`; `None` when there is no such device or table.
///
/// # Safety
/// `lower` must be null or the live device one of ours is attached to.
unsafe fn table_of<'a>(
    lower: *mut DEVICE_OBJECT,
) -> Option<(&'a FAST_IO_DISPATCH, *mut DEVICE_OBJECT)> {
    if lower.is_null() {
        return None;
    }
    // SAFETY: the device we are attached to stays alive while we are.
    let driver = unsafe { crate::raw::device(lower) }.DriverObject;
    // SAFETY: a live device's driver object.
    let driver = unsafe { &*driver };
    // SAFETY: its driver's table, if any, is the driver's static data.
    let table = unsafe { driver.FastIoDispatch.as_ref() }?;
    Some((table, lower))
}

/// The lower table's `$field` when its size covers it (sfilter's VALID_FAST_IO_DISPATCH_HANDLER).
macro_rules! entry {
    ($table:expr, $field:ident) => {
        if covers!($field) <= $table.SizeOfFastIoDispatch as usize { $table.$field } else { None }
    };
}

/// Defines a pass-through routine: call the lower driver's entry, or answer `$default`.
macro_rules! pass_through {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $default:expr) => {
        unsafe extern "system" fn $name<F: Filter>($($arg: $ty,)* device: *const DEVICE_OBJECT) -> $ret {
            // SAFETY: the I/O manager calls us with our device.
            let Some((table, lower)) = (unsafe { lower::<F>(device, covers!($field)) }) else {
                return $default;
            };
            match table.$field {
                Some(f) => fsfilter_kernel::image::call_as_driver_of(lower, || {
                    // SAFETY: the lower driver's routine with the caller's arguments and its
                    // device, called in that driver's context.
                    unsafe { f($($arg,)* lower) }
                }),
                None => $default,
            }
        }
    };
}

pass_through!(query_basic_info_below, FastIoQueryBasicInfo, (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_BASIC_INFORMATION, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(query_standard_info_below, FastIoQueryStandardInfo, (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_STANDARD_INFORMATION, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(lock_below, FastIoLock, (file: *const FILE_OBJECT, offset: *const i64, length: *const i64, process: PEPROCESS, key: u32, fail_immediately: bool, exclusive: bool, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(unlock_single_below, FastIoUnlockSingle, (file: *const FILE_OBJECT, offset: *const i64, length: *const i64, process: PEPROCESS, key: u32, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(unlock_all_below, FastIoUnlockAll, (file: *const FILE_OBJECT, process: PEPROCESS, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(unlock_all_by_key_below, FastIoUnlockAllByKey, (file: *const FILE_OBJECT, process: *const c_void, key: u32, iosb: *mut IO_STATUS_BLOCK) -> bool, false);

/// Whether filter `F` takes the operation whose major function code is `MAJOR` as IRPs only:
/// it registers the operation, and the backend does not run it through the model as fast I/O
/// (only reads, writes, checks and query opens are). Its fast-I/O routines for it then answer FALSE,
/// and the I/O manager sends the IRP instead, which the filter sees through its dispatch routine
/// (docs/semantics.md, operations-delivered): byte-range locks (`NtLockFile`, `NtUnlockFile`,
/// the close of a handle that locked), basic and standard information queries
/// (`NtQueryInformationFile`) and network-open information queries (`NtQueryFullAttributesFile`
/// when the query open was refused). Decided at compile time when `F::REGISTRATION` registers the
/// operation (nothing else is compiled into the routines then); otherwise from the registration
/// in force, which may add it at run time.
#[inline(always)]
fn takes_as_irps<F: Filter, const MAJOR: u8>() -> bool {
    const fn registers(r: &fsfilter::Registration, major: u8) -> bool {
        match r.get(MajorFunction::from_code(major)) {
            Some(o) => o.pre || o.post,
            None => false,
        }
    }
    if const { registers(&F::REGISTRATION, MAJOR) } {
        return true;
    }
    // SAFETY: this image's state.
    unsafe { DriverState::<F>::current() }.is_some_and(|s| registers(&s.registration, MAJOR))
}

/// `IRP_MJ_LOCK_CONTROL`, `IRP_MJ_QUERY_INFORMATION`.
const LOCK_CONTROL: u8 = MajorFunction::LockControl.code();
const QUERY_INFORMATION: u8 = MajorFunction::QueryInformation.code();

/// Defines a routine that declines (answers FALSE) for a filter that takes the operation whose
/// code is `$major` as IRPs ([`takes_as_irps`]), so that the I/O manager sends the IRP, and
/// passes the call through to `$below` otherwise.
macro_rules! declines_for_irps {
    ($(#[$doc:meta])* $name:ident, $below:ident, $major:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        unsafe extern "system" fn $name<F: Filter>($($arg: $ty,)* device: *const DEVICE_OBJECT) -> bool {
            !takes_as_irps::<F, $major>()
                // SAFETY: forwarded from the I/O manager.
                && unsafe { $below::<F>($($arg,)* device) }
        }
    };
}

declines_for_irps!(
    /// `FastIoQueryBasicInfo`: declined for a filter that registers `IRP_MJ_QUERY_INFORMATION`.
    query_basic_info, query_basic_info_below, QUERY_INFORMATION,
    (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_BASIC_INFORMATION, iosb: *mut IO_STATUS_BLOCK)
);
declines_for_irps!(
    /// `FastIoQueryStandardInfo`: as [`query_basic_info`].
    query_standard_info, query_standard_info_below, QUERY_INFORMATION,
    (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_STANDARD_INFORMATION, iosb: *mut IO_STATUS_BLOCK)
);
declines_for_irps!(
    /// `FastIoQueryNetworkOpenInfo`: as [`query_basic_info`].
    query_network_open_info, query_network_open_info_below, QUERY_INFORMATION,
    (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_NETWORK_OPEN_INFORMATION, iosb: *mut IO_STATUS_BLOCK)
);
declines_for_irps!(
    /// `FastIoLock`: declined for a filter that registers `IRP_MJ_LOCK_CONTROL`.
    lock, lock_below, LOCK_CONTROL,
    (file: *const FILE_OBJECT, offset: *const i64, length: *const i64, process: PEPROCESS, key: u32, fail_immediately: bool, exclusive: bool, iosb: *mut IO_STATUS_BLOCK)
);
declines_for_irps!(
    /// `FastIoUnlockSingle`: as [`lock`].
    unlock_single, unlock_single_below, LOCK_CONTROL,
    (file: *const FILE_OBJECT, offset: *const i64, length: *const i64, process: PEPROCESS, key: u32, iosb: *mut IO_STATUS_BLOCK)
);
declines_for_irps!(
    /// `FastIoUnlockAll`: as [`lock`].
    unlock_all, unlock_all_below, LOCK_CONTROL,
    (file: *const FILE_OBJECT, process: PEPROCESS, iosb: *mut IO_STATUS_BLOCK)
);
declines_for_irps!(
    /// `FastIoUnlockAllByKey`: as [`lock`].
    unlock_all_by_key, unlock_all_by_key_below, LOCK_CONTROL,
    (file: *const FILE_OBJECT, process: *const c_void, key: u32, iosb: *mut IO_STATUS_BLOCK)
);
pass_through!(device_control, FastIoDeviceControl, (file: *const FILE_OBJECT, wait: bool, input: *const c_void, input_length: u32, output: *mut c_void, output_length: u32, code: u32, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(query_network_open_info_below, FastIoQueryNetworkOpenInfo, (file: *const FILE_OBJECT, wait: bool, buffer: *mut FILE_NETWORK_OPEN_INFORMATION, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(mdl_read, MdlRead, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(mdl_read_complete, MdlReadComplete, (file: *const FILE_OBJECT, chain: *const MDL) -> bool, false);
pass_through!(mdl_write_complete, MdlWriteComplete, (file: *const FILE_OBJECT, offset: *const i64, chain: *const MDL) -> bool, false);
pass_through!(read_compressed, FastIoReadCompressed, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, buffer: *mut c_void, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK, info: *mut COMPRESSED_DATA_INFO, info_length: u32) -> bool, false);
pass_through!(prepare_mdl_write_below, PrepareMdlWrite, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK) -> bool, false);
pass_through!(write_compressed_below, FastIoWriteCompressed, (file: *const FILE_OBJECT, offset: *const i64, length: u32, key: u32, buffer: *const c_void, chain: *mut *mut MDL, iosb: *mut IO_STATUS_BLOCK, info: *const COMPRESSED_DATA_INFO, info_length: u32) -> bool, false);
pass_through!(mdl_read_complete_compressed, MdlReadCompleteCompressed, (file: *const FILE_OBJECT, chain: *const MDL) -> bool, false);
pass_through!(mdl_write_complete_compressed, MdlWriteCompleteCompressed, (file: *const FILE_OBJECT, offset: *const i64, chain: *const MDL) -> bool, false);

/// Closes the FsRtl data-scan sections of the stream a fast-I/O write is about to change, and
/// tells the filter, as the dispatch routine does for a write IRP: the fast-I/O path changes the
/// data all the same, and with `FsRtlCreateSectionForDataScan` the conflicts are the caller's to
/// handle (facts.md §6). Nothing for a filter that does not scan data (compiled out).
///
/// # Safety
/// `device` must be our device; `file` the caller's file object or null. `PASSIVE_LEVEL`, as the
/// I/O manager calls the fast-I/O write routines.
#[inline(always)]
unsafe fn close_conflicting_sections<F: Filter>(
    device: *const DEVICE_OBJECT,
    file: *const FILE_OBJECT,
) {
    if !fsfilter::scans_data::<F>() {
        return;
    }
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return };
    let torn_down = ext.is_torn_down();
    let fallback = instance_view(device, ext)
        .is_some_and(|i| i.data_scan == fsfilter::DataScanMode::FsRtlFallback);
    // SAFETY: the caller's file object, if any.
    let Some(file) = (unsafe { file.as_ref() }) else { return };
    if fallback && !torn_down {
        crate::dispatch::notify_conflicts(state, device, ext, file.FsContext as usize);
    }
}

/// `PrepareMdlWrite`: closes conflicting data-scan sections, then passes through.
unsafe extern "system" fn prepare_mdl_write<F: Filter>(
    file: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    key: u32,
    chain: *mut *mut MDL,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the I/O manager's arguments.
    unsafe { close_conflicting_sections::<F>(device, file) };
    // SAFETY: forwarded.
    unsafe { prepare_mdl_write_below::<F>(file, offset, length, key, chain, iosb, device) }
}

/// `FastIoWriteCompressed`: closes conflicting data-scan sections, then passes through.
unsafe extern "system" fn write_compressed<F: Filter>(
    file: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    key: u32,
    buffer: *const c_void,
    chain: *mut *mut MDL,
    iosb: *mut IO_STATUS_BLOCK,
    info: *const COMPRESSED_DATA_INFO,
    info_length: u32,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the I/O manager's arguments.
    unsafe { close_conflicting_sections::<F>(device, file) };
    // SAFETY: forwarded.
    unsafe {
        write_compressed_below::<F>(
            file,
            offset,
            length,
            key,
            buffer,
            chain,
            iosb,
            info,
            info_length,
            device,
        )
    }
}

/// `FastIoQueryOpen` (`NtQueryAttributesFile`, `NtQueryFullAttributesFile`): through the model
/// as `IRP_MJ_NETWORK_QUERY_OPEN`, a fast-I/O operation, as the Filter Manager presents it. The
/// IRP is a create IRP the I/O manager set at the top device's location and never completes; the
/// lower driver gets it at the same location, naming its device ([`ReadWrite::call_lower`]).
unsafe extern "system" fn query_open<F: Filter>(
    irp: *mut IRP,
    info: *mut FILE_NETWORK_OPEN_INFORMATION,
    device: *const DEVICE_OBJECT,
) -> bool {
    if irp.is_null() {
        return false;
    }
    // SAFETY: the I/O manager's live IRP, at our device's location.
    let location = unsafe { fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp) };
    // SAFETY: its current location (the create's file object is the I/O manager's).
    let file = unsafe { (*location).FileObject }.cast_const();
    let call = ReadWrite {
        major: MajorFunction::NetworkQueryOpen,
        file,
        offset: core::ptr::null(),
        length: 0,
        wait: true,
        key: 0,
        buffer: info.cast(),
        // SAFETY: the IRP's status block, where the routine below leaves its status.
        iosb: unsafe { &raw mut (*irp).IoStatus },
        irp,
        check_read: false,
    };
    // SAFETY: forwarded from the I/O manager.
    unsafe { model::<F>(&call, device) }
}

/// `FastIoDetachDevice`: the device we are attached to is being deleted.
unsafe extern "system" fn detach_device<F: Filter>(
    source: *const DEVICE_OBJECT,
    target: *const DEVICE_OBJECT,
) {
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return };
    let reason = fsfilter::TeardownFlags::VOLUME_DISMOUNT;
    // SAFETY: the I/O manager passes our device and the one below it.
    unsafe { crate::attach::detach(state, source, target, reason) };
}

/// `FastIoCheckIfPossible`: through the model as `IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE`, as the
/// Filter Manager presents it. A file system's fast path asks it of the top of the stack for a
/// file with byte-range locks (`FsRtlCopyRead`, `FsRtlCopyWrite`), inside the fast read or write;
/// FALSE makes that transfer an IRP.
unsafe extern "system" fn check_if_possible<F: Filter>(
    file: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    check_read: bool,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    let call = ReadWrite {
        major: MajorFunction::FastIoCheckIfPossible,
        file,
        offset,
        length,
        wait,
        key,
        buffer: core::ptr::null_mut(),
        iosb,
        irp: core::ptr::null_mut(),
        check_read,
    };
    // SAFETY: forwarded from the caller.
    unsafe { model::<F>(&call, device) }
}

/// `FastIoRead`: through the model.
unsafe extern "system" fn read<F: Filter>(
    file: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    buffer: *mut c_void,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    let call = ReadWrite::transfer(file, offset, length, wait, key, buffer, iosb);
    // SAFETY: forwarded from the I/O manager.
    unsafe { model::<F>(&call, device) }
}

/// `FastIoWrite`: through the model.
unsafe extern "system" fn write<F: Filter>(
    file: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    buffer: *const c_void,
    iosb: *mut IO_STATUS_BLOCK,
    device: *const DEVICE_OBJECT,
) -> bool {
    // SAFETY: the I/O manager's arguments.
    unsafe { close_conflicting_sections::<F>(device, file) };
    let transfer = ReadWrite::transfer(file, offset, length, wait, key, buffer.cast_mut(), iosb);
    let call = ReadWrite { major: MajorFunction::Write, ..transfer };
    // SAFETY: forwarded from the I/O manager.
    unsafe { model::<F>(&call, device) }
}

/// The arguments of a fast-I/O read or write, of a `FastIoCheckIfPossible` (no buffer), or of a
/// `FastIoQueryOpen` (`irp` and the network information buffer in `buffer`), kept to hand them
/// to the lower driver.
struct ReadWrite {
    major: MajorFunction,
    file: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    wait: bool,
    key: u32,
    /// The caller's buffer (`*const` for a write: the lower routine gets it back as such).
    buffer: *mut c_void,
    iosb: *mut IO_STATUS_BLOCK,
    /// A query open's create IRP (null for a read or write).
    irp: *mut IRP,
    /// A fast-I/O check's `CheckForReadOperation`.
    check_read: bool,
}

impl ReadWrite {
    /// A fast-I/O read's arguments (a write's with its `major` changed).
    const fn transfer(
        file: *const FILE_OBJECT,
        offset: *const i64,
        length: u32,
        wait: bool,
        key: u32,
        buffer: *mut c_void,
        iosb: *mut IO_STATUS_BLOCK,
    ) -> ReadWrite {
        let (irp, check_read) = (core::ptr::null_mut(), false);
        let major = MajorFunction::Read;
        ReadWrite { major, file, offset, length, wait, key, buffer, iosb, irp, check_read }
    }

    /// Calls the lower driver's `FastIoRead` or `FastIoWrite` with the caller's arguments; false
    /// (take the IRP path) when its table has no such routine. One body for both, and for every
    /// filter type.
    ///
    /// # Safety
    /// The arguments are the I/O manager's for this call; `lower` is the device below ours.
    #[inline(never)]
    unsafe fn call_lower(&self, table: &FAST_IO_DISPATCH, lower: *mut DEVICE_OBJECT) -> bool {
        let Self { major, file, offset, length, wait, key, buffer, iosb, irp, check_read } = *self;
        if major == MajorFunction::FastIoCheckIfPossible {
            let Some(f) = entry!(table, FastIoCheckIfPossible) else { return false };
            return fsfilter_kernel::image::call_as_driver_of(lower, || {
                // SAFETY: the lower driver's routine with the caller's arguments and its device,
                // called in that driver's context.
                unsafe { f(file, offset, length, wait, key, check_read, iosb, lower) }
            });
        }
        if major == MajorFunction::NetworkQueryOpen {
            let Some(f) = entry!(table, FastIoQueryOpen) else { return false };
            // SAFETY: the I/O manager's live IRP: the lower driver sees it at the same location,
            // naming its own device for the call (the location names ours again after).
            let location = unsafe { fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp) };
            // SAFETY: as above.
            let ours = unsafe { core::mem::replace(&mut (*location).DeviceObject, lower) };
            let handled = fsfilter_kernel::image::call_as_driver_of(lower, || {
                // SAFETY: the lower driver's routine with the IRP at its location, the caller's
                // buffer, and its device, called in that driver's context.
                unsafe { f(irp, buffer.cast(), lower) }
            });
            // SAFETY: as above.
            unsafe { (*location).DeviceObject = ours };
            return handled;
        }
        if major == MajorFunction::Read {
            let Some(f) = entry!(table, FastIoRead) else { return false };
            fsfilter_kernel::image::call_as_driver_of(lower, || {
                // SAFETY: the lower driver's routine with the I/O manager's arguments and its
                // device, called in that driver's context.
                unsafe { f(file, offset, length, wait, key, buffer, iosb, lower) }
            })
        } else {
            let Some(f) = entry!(table, FastIoWrite) else { return false };
            fsfilter_kernel::image::call_as_driver_of(lower, || {
                // SAFETY: as above.
                unsafe { f(file, offset, length, wait, key, buffer.cast_const(), iosb, lower) }
            })
        }
    }
}

/// The header of a fast-I/O operation, built from the routine's arguments when first asked for.
struct FastIoHeader<'r> {
    io: &'r ReadWrite,
    id: usize,
}

impl<'a> HeaderSource<'a> for FastIoHeader<'_> {
    fn header(&self) -> OperationHeader<'a> {
        let ReadWrite { major, file, offset, length, key, .. } = *self.io;
        // SAFETY: the caller's offset, valid for the call (`model`'s contract).
        let offset = unsafe { offset.as_ref() }.copied().unwrap_or(0);
        let rw = ReadWriteParameters { offset, length, key };
        let parameters = match major {
            MajorFunction::Read => Parameters::Read(rw),
            MajorFunction::Write => Parameters::Write(rw),
            _ => Parameters::None,
        };
        // SAFETY: the caller's file object, valid for the call.
        unsafe { view::irpless_header(major, OperationKind::FastIo, file, parameters, self.id) }
    }
}

/// A fast-I/O read, write, check or query open through the model: pre callback, the lower
/// driver, post callback.
///
/// # Safety
/// Called from a fast-I/O routine with its arguments (`io`) and device.
unsafe fn model<F: Filter>(io: &ReadWrite, device: *const DEVICE_OBJECT) -> bool {
    let ReadWrite { major, file, iosb, .. } = *io;
    // SAFETY: the caller's arguments (`call_lower`'s contract).
    let call = |table: &FAST_IO_DISPATCH, lower| unsafe { io.call_lower(table, lower) };
    // SAFETY: this image's state.
    let Some(state) = (unsafe { DriverState::<F>::current() }) else { return false };
    // SAFETY: our device.
    let Some(ext) = (unsafe { state.ext(device) }) else { return false };
    // SAFETY: the device ours is attached to, or null.
    let Some((table, lower)) = (unsafe { table_of(ext.lower) }) else { return false };
    let Some(instance) = instance_view(device, ext) else {
        // SAFETY: the lower routine with the caller's arguments (`call` does it).
        return call(table, lower);
    };
    // Fast I/O has no IRP: the file object identifies the operation in traces.
    let id = file as usize;
    let source = FastIoHeader { io, id };
    // Built only if filter logic or a skip flag asks.
    let header = LazyHeader::on_demand(&source, major, id);
    let services = OpServices::<F>::fast_io(state, device, file, instance.data_scan);
    let kind = OperationKind::FastIo;
    let context = match pre_half(state, ext, &instance, &header, &services, kind) {
        Pre::Pass => return call(table, lower),
        // The I/O manager reissues the request as an IRP.
        Pre::Disallow => return false,
        Pre::Complete(io) => {
            // SAFETY: the caller's status block.
            if let Some(iosb) = unsafe { iosb.as_mut() } {
                iosb.Anonymous.Status = io.status.0;
                iosb.Information = io.information;
            }
            return true;
        }
        Pre::Post(c) => c,
    };
    let handled = call(table, lower);
    let result = if handled {
        // SAFETY: the caller's status block, filled by the lower driver.
        unsafe { iosb.as_ref() }.map_or(IoStatus::new(Status::SUCCESS), |i| IoStatus {
            // SAFETY: the status member.
            status: Status(unsafe { i.Anonymous.Status }),
            information: i.Information,
        })
    } else {
        // Declined below: the request comes back as an IRP. The pre callback still gets its
        // post, with STATUS_FLT_DISALLOW_FAST_IO, as the Filter Manager does (rule 12).
        IoStatus::new(Status::FLT_DISALLOW_FAST_IO)
    };
    post_half(state, &instance, &header, &services, result, context, kind);
    handled
}

/// What the pre half of an IRP-less operation (fast I/O, FsFilter) through the model decided,
/// its pre callback reported.
pub(crate) enum Pre<C> {
    /// The operation goes on, no post callback owed (skipped, or no callback asked for).
    Pass,
    /// `FLT_PREOP_DISALLOW_FASTIO` (fast I/O only): the request comes back as an IRP.
    Disallow,
    /// Completed by the pre callback, with this status (`IoStatus::for_completion` applied).
    Complete(IoStatus),
    /// The operation goes on; its post callback is owed, with this context.
    Post(C),
}

/// The pre half of an IRP-less operation (fast I/O, FsFilter) through the model at `instance`
/// of our device `ext`, when its filter registers it and the instance is not torn down: the skip
/// flags, the pre callback (or the zero-sized context of a post-only registration), its report,
/// and what it asks for under the model's rules. One body for both kinds of operation (`kind`
/// says which); the caller keeps the header and the services for [`post_half`].
#[inline(never)]
pub(crate) fn pre_half<'h, F: Filter>(
    state: &DriverState<F>,
    ext: &DeviceExt<F>,
    instance: &Instance<'_, F::InstanceContext>,
    header: &'h LazyHeader<'h>,
    services: &'h OpServices<'h, F>,
    kind: OperationKind,
) -> Pre<F::CompletionContext> {
    let (id, major) = (header.id(), header.major());
    let op = state.registration.get(major).copied().filter(|o| o.pre || o.post);
    let (Some(op), false) = (op, ext.is_torn_down()) else { return Pre::Pass };
    if op.has_skip_flags() && op.skips(header.get()) {
        return Pre::Pass;
    }
    let fast_io = kind == OperationKind::FastIo;
    let outcome = if op.pre {
        let buffer = if fast_io { Buffer::User } else { Buffer::None };
        let mut pre = PreOperation::new(header, buffer.into(), services, None);
        state.filter.pre_operation(instance, &mut pre)
    } else {
        // SAFETY: post without pre: the context is zero-sized (checked at load).
        match unsafe { fsfilter_kernel::context::decode::<F::CompletionContext>(core::ptr::null()) }
        {
            Some(c) => PreOutcome::WithPost(c),
            None => PreOutcome::NoPost,
        }
    };
    // A post-only registration has no pre callback to report (the Filter Manager calls none).
    let report = |outcome: &'static str, status: Option<Status>| {
        if op.pre && fsfilter_kernel::trace::wanted() {
            crate::dispatch::report_pre(instance.id, id, major, 0, kind, outcome, status);
        }
    };
    match outcome {
        PreOutcome::DisallowFastIo if fast_io => {
            report("FLT_PREOP_DISALLOW_FASTIO", None);
            Pre::Disallow
        }
        PreOutcome::Complete(io) => {
            // An FsFilter release cannot fail (rule 5): completed with success instead.
            let io = io.for_completion(major.cannot_fail());
            report("FLT_PREOP_COMPLETE", Some(io.status));
            Pre::Complete(io)
        }
        // IRP-less operations are synchronous already: synchronizing changes nothing but the
        // name.
        PreOutcome::WithPost(c) if op.post => {
            report("FLT_PREOP_SUCCESS_WITH_CALLBACK", None);
            Pre::Post(c)
        }
        PreOutcome::Synchronize(c) if op.post => {
            report("FLT_PREOP_SYNCHRONIZE", None);
            Pre::Post(c)
        }
        _ => {
            report("FLT_PREOP_SUCCESS_NO_CALLBACK", None);
            Pre::Pass
        }
    }
}

/// The post half of an IRP-less operation: the post callback with the operation's result, and
/// its report. IRP-less operations cannot be deferred: a WhenSafe answer is treated as finished
/// and its context dropped (rule 9), as the Filter Manager's FltDoCompletionProcessingWhenSafe
/// refuses fast I/O; MoreProcessing cannot be answered (no deferrer).
pub(crate) fn post_half<'h, F: Filter>(
    state: &DriverState<F>,
    instance: &Instance<'_, F::InstanceContext>,
    header: &'h LazyHeader<'h>,
    services: &'h OpServices<'h, F>,
    result: IoStatus,
    context: F::CompletionContext,
    kind: OperationKind,
) {
    let buffer = if kind == OperationKind::FastIo { Buffer::User } else { Buffer::None };
    let mut post = PostOperation::new(header, result, buffer.into(), services, None);
    let _ = state.filter.post_operation(instance, &mut post, context, PostFlags::empty());
    if fsfilter_kernel::trace::wanted() {
        let (id, major, status) = (header.id(), header.major(), result.status);
        let outcome = "FLT_POSTOP_FINISHED_PROCESSING";
        crate::dispatch::emit_post(instance.id, id, major, status, false, outcome);
    }
}
