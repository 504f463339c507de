//! The I/O manager exports drivers use around file systems: `IoGetDeviceObjectPointer` (facts.md
//! §1.1: filters attach to RAW by name), `IoGetRelatedDeviceObject`, `IoGetDiskDeviceObject`
//! (§1.5), `IoBuildSynchronousFsdRequest`, `IoBuildDeviceIoControlRequest`.

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

use std::ptr::null_mut;

use common::{machine, machine_with_spy, spy};
use fsfilter::Status;
use fsfilter_sim::{CreateOptions, EventKind, FsKind, VolumeSpec};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, KEVENT};
use windows_sys::Wdk::Storage::FileSystem::IoGetDiskDeviceObject;
use windows_sys::Wdk::System::SystemServices::{
    IoBuildDeviceIoControlRequest, IoBuildSynchronousFsdRequest, IoGetDeviceObjectPointer,
    IoGetRelatedDeviceObject, KeInitializeEvent, KeWaitForSingleObject, ObfDereferenceObject,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

fn open_by_name(name: &str) -> Result<(*mut FILE_OBJECT, *mut DEVICE_OBJECT), Status> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let us = fsfilter_sim::mem::unicode(&units);
    let mut fo = null_mut();
    let mut dev = null_mut();
    // SAFETY: a valid name and out pointers.
    let s = Status(unsafe { IoGetDeviceObjectPointer(&us, 0x8000_0000, &mut fo, &mut dev) });
    if s.is_success() { Ok((fo, dev)) } else { Err(s) }
}

#[test]
fn device_object_pointers_by_name() {
    let mut m = machine(31);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).mount(fsfilter_sim::MountWhen::Step));
    m.boot();
    m.mount(c);
    // The RAW control device, by name: a create and a cleanup reach it; the file object is ours.
    let (fo, dev) = open_by_name(r"\Device\RawDisk").unwrap();
    let raw = m.kernel(|k| k.objects.device(*k.objects.names.get(r"\DEVICE\RAWDISK").unwrap()).ptr);
    assert_eq!(dev, raw);
    // SAFETY: the file object we hold.
    assert_eq!(unsafe { IoGetRelatedDeviceObject(fo) }, raw);
    // SAFETY: our reference.
    unsafe { ObfDereferenceObject(fo.cast()) };
    // A storage device's name: the volume open goes to its file system; the top is the VDO.
    let (fo, dev) = open_by_name(r"\Device\HarddiskVolume1").unwrap();
    let (vdo, storage) = m.kernel(|k| {
        (
            k.objects.device(k.volume(c).vdo.unwrap()).ptr,
            k.objects.device(k.volume(c).storage.unwrap()).ptr,
        )
    });
    assert_eq!(dev, vdo);
    // SAFETY: the file object we hold.
    assert_eq!(unsafe { (*fo).DeviceObject }, storage);
    // IoGetDiskDeviceObject: VDO -> the real device, referenced; a control device has none.
    let mut disk = null_mut();
    // SAFETY: a volume device and an out pointer.
    assert_eq!(unsafe { IoGetDiskDeviceObject(vdo, &mut disk) }, 0);
    assert_eq!(disk, storage);
    // SAFETY: the reference it returned; our file object.
    unsafe {
        ObfDereferenceObject(disk.cast());
        ObfDereferenceObject(fo.cast());
    }
    let ntfs = m.kernel(|k| k.objects.device(*k.objects.names.get(r"\NTFS").unwrap()).ptr);
    // SAFETY: a control device.
    let s = Status(unsafe { IoGetDiskDeviceObject(ntfs, &mut disk) });
    assert_eq!(s, Status::INVALID_PARAMETER);
    assert_eq!(open_by_name(r"\Device\Nothing").unwrap_err(), Status::OBJECT_NAME_NOT_FOUND);
    let majors: Vec<u8> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::IoStart { major, .. } => Some(major.code()),
            _ => None,
        })
        .collect();
    assert_eq!(majors, [0x00, 0x12, 0x02], "the volume open: create, cleanup, close");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// `IoGetDeviceObjectPointer` opens the device with `ZwOpenFile` for the caller's access, no share
/// access and `FILE_NON_DIRECTORY_FILE` only (the Windows Research Kernel, ReactOS): the create
/// IRP is kernel mode, `FILE_OPEN`, `ShareAccess` 0, its options and its security context's
/// `FullCreateOptions` `FILE_NON_DIRECTORY_FILE` (no synchronous flag), its `DesiredAccess` the
/// caller's (no `SYNCHRONIZE` added) and an `ACCESS_STATE` (the object manager's parse has one).
#[test]
fn the_open_by_name_is_a_kernel_zw_open_file_without_sharing() {
    const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
    const FILE_READ_DATA: u32 = 0x1;
    let mut m = machine_with_spy(35);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let units: Vec<u16> = r"\Device\HarddiskVolume1".encode_utf16().collect();
    let us = fsfilter_sim::mem::unicode(&units);
    let (mut fo, mut dev) = (null_mut(), null_mut());
    spy(|s| s.seen.clear());
    // SAFETY: a valid name and out pointers.
    let s = Status(unsafe { IoGetDeviceObjectPointer(&us, FILE_READ_DATA, &mut fo, &mut dev) });
    assert_eq!(s, Status::SUCCESS);
    let create = spy(|s| s.seen.iter().find(|x| x.major == 0).cloned()).unwrap();
    let options = u32::from_le_bytes(create.parameters[8..12].try_into().unwrap());
    let share = u16::from_le_bytes(create.parameters[18..20].try_into().unwrap());
    assert_eq!(create.requestor_mode, 0, "{create:?}");
    assert_eq!(options, (1 << 24) | FILE_NON_DIRECTORY_FILE, "FILE_OPEN, non-directory");
    assert_eq!(share, 0, "no share access");
    assert_eq!(create.create_security, Some((true, FILE_READ_DATA, FILE_NON_DIRECTORY_FILE)));
    // SAFETY: our reference.
    unsafe { ObfDereferenceObject(fo.cast()) };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The I/O manager's parse refuses a device still initializing (`IopCheckDeviceAndDriver`):
/// `STATUS_NO_SUCH_DEVICE`. With its driver's code not running, the flag was left set: a finding
/// against that driver, once.
#[test]
fn a_device_left_initializing_cannot_be_opened_by_name() {
    let mut m = machine(34);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let (raw, driver) = m.kernel(|k| {
        let id = *k.objects.names.get(r"\DEVICE\RAWDISK").unwrap();
        k.objects.dobj(id).Flags |= 0x80;
        (id, k.objects.driver(k.objects.device(id).driver).service.clone())
    });
    for _ in 0..2 {
        assert_eq!(open_by_name(r"\Device\RawDisk").unwrap_err(), Status::NO_SUCH_DEVICE);
    }
    let found: Vec<_> = m.findings().into_iter().map(|(r, d, _)| (r, d)).collect();
    assert_eq!(found, [(fsfilter_sim::Rule::AttachToInitializingDevice, Some(driver))]);
    assert!(m.findings()[0].2.contains("it could not be opened"), "{:?}", m.findings());
    // Cleared, the device opens.
    m.kernel(|k| k.objects.dobj(raw).Flags &= !0x80);
    let (fo, _) = open_by_name(r"\Device\RawDisk").unwrap();
    // SAFETY: our reference.
    unsafe { ObfDereferenceObject(fo.cast()) };
    assert_eq!(m.findings().len(), 1);
}

#[test]
fn namespace_devices_open_by_name() {
    // The network, pipe and mailslot devices are both control and volume devices: an open of
    // the device itself reaches the file system and names no file.
    let mut m = machine(33);
    m.add_volume(VolumeSpec::new(r"\\srv\data", FsKind::Mup));
    m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    m.boot();
    for name in [r"\Device\Mup", r"\Device\NamedPipe"] {
        let (fo, dev) = open_by_name(name).unwrap();
        // SAFETY: the file object we hold.
        assert!(unsafe { (*fo).FsContext }.is_null() || name.ends_with("Pipe"));
        let me =
            m.kernel(|k| k.objects.device(*k.objects.names.get(&name.to_uppercase()).unwrap()).ptr);
        assert_eq!(dev, me);
        // SAFETY: our reference.
        unsafe { ObfDereferenceObject(fo.cast()) };
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn synchronous_fsd_and_device_control_requests() {
    let mut m = machine(32);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let _ = m.open(c, "", CreateOptions::open()).unwrap();
    let storage = m.kernel(|k| k.objects.device(k.volume(c).storage.unwrap()).ptr);
    let mut buf = [0u8; 512];
    // SAFETY: zeroed event and status block storage.
    let (mut event, mut iosb): (KEVENT, IO_STATUS_BLOCK) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: our event.
    unsafe { KeInitializeEvent(&mut event, 0, false) };
    let offset = 0i64;
    // SAFETY: a live device, our buffer, event and status block.
    let irp = unsafe {
        IoBuildSynchronousFsdRequest(
            3,
            storage,
            buf.as_mut_ptr().cast(),
            512,
            &offset,
            &event,
            &mut iosb,
        )
    };
    assert!(!irp.is_null());
    // SAFETY: a live device and IRP.
    let s = unsafe { fsfilter_kernel::irp::IoCallDriver(storage, irp) };
    if s == Status::PENDING.0 {
        // SAFETY: our event.
        unsafe {
            KeWaitForSingleObject((&event as *const KEVENT).cast(), 0, 0, false, std::ptr::null())
        };
    }
    // SAFETY: written at completion.
    assert_eq!(unsafe { iosb.Anonymous.Status }, 0);
    assert_eq!(&buf[3..11], b"NTFS    ", "the boot sector the file system recognizes");
    let mut out = [0u8; 8];
    // SAFETY: as above.
    let irp = unsafe {
        IoBuildDeviceIoControlRequest(
            0x0007_405C,
            storage,
            std::ptr::null(),
            0,
            out.as_mut_ptr().cast(),
            8,
            false,
            &event,
            &mut iosb,
        )
    };
    // SAFETY: a live device and IRP.
    unsafe { fsfilter_kernel::irp::IoCallDriver(storage, irp) };
    // SAFETY: written at completion.
    assert_eq!(unsafe { iosb.Anonymous.Status }, 0);
    assert_eq!(
        i64::from_le_bytes(out),
        64 * 1024 * 1024 * 1024,
        "copied back from the system buffer"
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_device_list_too_small_holds_as_many_devices_as_fit_each_referenced() {
    // The IoEnumerateDeviceObjectList page: STATUS_BUFFER_TOO_SMALL when the array cannot hold
    // every device, and "as many device object pointers as possible" copied into it, each
    // referenced like the devices of a full list (a caller that releases them must not be
    // reported, one that drops them leaks the references).
    use windows_sys::Wdk::Storage::FileSystem::IoEnumerateDeviceObjectList;
    let mut m = machine(31);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs));
    m.boot();
    let (driver, devices) = m.kernel(|k| {
        let cdo = k.objects.names[&r"\Ntfs".to_uppercase()];
        let driver = k.objects.device(cdo).driver;
        (k.objects.driver(driver).ptr, k.objects.driver(driver).devices.clone())
    });
    assert_eq!(devices.len(), 3, "the control device and two volume devices");
    let refs = |m: &mut fsfilter_sim::Machine| -> Vec<u32> {
        m.kernel(|k| devices.iter().map(|&d| k.objects.device(d).refs).collect())
    };
    let before = refs(&mut m);
    let mut count = 0u32;
    // SAFETY: a sizing call.
    let s = unsafe { IoEnumerateDeviceObjectList(driver, null_mut(), 0, &mut count) };
    assert_eq!((Status(s), count), (Status::BUFFER_TOO_SMALL, 3));
    assert_eq!(refs(&mut m), before, "a sizing call references nothing");
    let mut list = [null_mut::<DEVICE_OBJECT>(); 2];
    // SAFETY: a list of two entries.
    let s = unsafe { IoEnumerateDeviceObjectList(driver, list.as_mut_ptr(), 16, &mut count) };
    assert_eq!((Status(s), count), (Status::BUFFER_TOO_SMALL, 3));
    assert!(list.iter().all(|d| !d.is_null()), "as many as fit: {list:?}");
    let after = refs(&mut m);
    let taken: u32 = after.iter().sum::<u32>() - before.iter().sum::<u32>();
    assert_eq!(taken, 2, "each device copied is referenced");
    for d in list {
        // SAFETY: a device the enumeration referenced.
        unsafe { ObfDereferenceObject(d.cast()) };
    }
    assert_eq!(refs(&mut m), before);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

thread_local! {
    /// Statuses the registering test drivers got, in order.
    static REGISTERED: std::cell::RefCell<Vec<Status>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn notify_a(_cdo: *const DEVICE_OBJECT, _active: bool) {}
unsafe extern "system" fn notify_b(_cdo: *const DEVICE_OBJECT, _active: bool) {}

/// Registers for file-system notifications the ways facts.md §1.1 gives a status for.
unsafe extern "system" fn registering_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::{
        IoRegisterFsRegistrationChange as Register,
        IoRegisterFsRegistrationChangeMountAware as RegisterMountAware,
        IoUnregisterFsRegistrationChange as Unregister,
    };
    // SAFETY: our driver object and routines, during DriverEntry.
    let statuses = unsafe {
        [
            Register(driver, Some(notify_a)),
            // The same pair again, nothing registered in between.
            Register(driver, Some(notify_a)),
            Register(driver, Some(notify_b)),
            // The same pair as the first, another registration in between.
            Register(driver, Some(notify_a)),
            // MountAware: the driver is registered already (any routine).
            RegisterMountAware(driver, Some(notify_b), true),
        ]
    };
    REGISTERED.with(|r| r.borrow_mut().extend(statuses.map(Status)));
    // SAFETY: our driver object and routines, registered above.
    unsafe {
        Unregister(driver, Some(notify_a));
        Unregister(driver, Some(notify_b));
        Unregister(driver, Some(notify_a));
    }
    0
}

/// Registers once with MountAware, then asks again.
unsafe extern "system" fn mount_aware_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChangeMountAware as Register;
    // SAFETY: our driver object and routines, during DriverEntry.
    let statuses = unsafe {
        [Register(driver, Some(notify_a), false), Register(driver, Some(notify_b), false)]
    };
    REGISTERED.with(|r| r.borrow_mut().extend(statuses.map(Status)));
    statuses[0]
}

/// Returns what its one registration returned.
unsafe extern "system" fn blocked_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    // SAFETY: our driver object and routine, during DriverEntry.
    let s = unsafe {
        windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange(
            driver,
            Some(notify_a),
        )
    };
    REGISTERED.with(|r| r.borrow_mut().push(Status(s)));
    s
}

#[test]
fn fs_registration_change_statuses_facts_1_1() {
    // facts.md §1.1: STATUS_DEVICE_ALREADY_ATTACHED when the same (driver, routine) pair
    // registers twice in a row with no other registration in between (so not after another
    // one); the MountAware variant when the driver object is registered already, whatever the
    // routine.
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("Registering", registering_entry, "legacy"));
    m.install(fsfilter_sim::ServiceSpec::new("Aware", mount_aware_entry, "legacy"));
    REGISTERED.with(|r| r.borrow_mut().clear());
    assert_eq!(m.start("Registering"), Status::SUCCESS);
    assert_eq!(
        REGISTERED.with(|r| std::mem::take(&mut *r.borrow_mut())),
        [
            Status::SUCCESS,
            Status::DEVICE_ALREADY_ATTACHED,
            Status::SUCCESS,
            Status::SUCCESS,
            Status::DEVICE_ALREADY_ATTACHED
        ]
    );
    assert_eq!(m.start("Aware"), Status::SUCCESS);
    assert_eq!(
        REGISTERED.with(|r| std::mem::take(&mut *r.borrow_mut())),
        [Status::SUCCESS, Status::DEVICE_ALREADY_ATTACHED]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn the_legacy_filter_block_policy_refuses_registration_facts_1_1() {
    // facts.md §1.1: with IoBlockLegacyFsFilters = 1 the registration returns
    // STATUS_NOT_SUPPORTED and Event ID 1205 is logged; the Filter Manager (a native driver)
    // still registers, so minifilters work. The simulator reads the value at each registration
    // (docs/simulator.md: Windows needs a reboot), so clearing it lets the next one through.
    use fsfilter_sim::fsreg::{BLOCK_POLICY_KEY, BLOCK_POLICY_VALUE};
    let set_policy = |m: &fsfilter_sim::Machine, v: u32| {
        m.kernel(|k| {
            let key = k.registry.create(BLOCK_POLICY_KEY);
            k.registry.set(key, BLOCK_POLICY_VALUE, fsfilter_sim::RegValue::Dword(v));
        })
    };
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    set_policy(&m, 1);
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("Blocked", blocked_entry, "legacy"));
    REGISTERED.with(|r| r.borrow_mut().clear());
    assert_eq!(m.start("Blocked"), Status::NOT_SUPPORTED);
    let blocked: Vec<Option<String>> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::System { what: "legacy_filter_blocked", driver, .. } => {
                Some(driver.map(|d| d.to_string()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(blocked, [Some("Blocked".to_owned())], "FltMgr was not blocked");
    let fltmgr_frames = m.kernel(|k| k.fltmgr.cdos.len());
    assert!(fltmgr_frames > 0, "the Filter Manager attached to the file systems");
    set_policy(&m, 0);
    assert_eq!(m.start("Blocked"), Status::SUCCESS);
    assert_eq!(
        REGISTERED.with(|r| std::mem::take(&mut *r.borrow_mut())),
        [Status::NOT_SUPPORTED, Status::SUCCESS]
    );
}

/// A raw legacy filter for the `SynchronizeWithMounts` tests: its routine attaches to each disk
/// file system's control device and enumerates that file system's volumes (as sfilter does);
/// every request is passed down, mount requests counted. In `IN_MOUNT` mode its `DriverEntry`
/// attaches to [`syncreg::TARGET`] directly and it registers from its mount dispatch instead,
/// in the mounting thread, once the file system pended the request.
mod syncreg {
    use std::cell::{Cell, RefCell};
    use std::ptr::null_mut;

    use fsfilter::Status;
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP};
    use windows_sys::Wdk::Storage::FileSystem::{
        IoEnumerateDeviceObjectList, IoGetDiskDeviceObject,
        IoRegisterFsRegistrationChangeMountAware,
    };
    use windows_sys::Wdk::System::SystemServices::{
        IoAttachDeviceToDeviceStackSafe, IoCreateDevice, ObfDereferenceObject,
    };
    use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

    /// What the filter saw.
    #[derive(Default, Debug)]
    pub(crate) struct Log {
        /// The registration calls' statuses.
        pub(crate) statuses: Vec<Status>,
        /// Virtual time (ms) when the first registration was called and when it returned.
        pub(crate) registered: Option<(u64, u64)>,
        /// Control devices reported active.
        pub(crate) notified: Vec<usize>,
        /// Volume devices found mounted by the enumerations.
        pub(crate) found: Vec<usize>,
        /// Mount requests that went through our devices.
        pub(crate) mounts_seen: usize,
    }

    thread_local! {
        /// `SynchronizeWithMounts`.
        pub(crate) static SYNC: Cell<bool> = const { Cell::new(false) };
        /// Register from the mount dispatch instead of `DriverEntry`.
        pub(crate) static IN_MOUNT: Cell<bool> = const { Cell::new(false) };
        /// NTFS's control device: the one the routine attaches to and `IN_MOUNT` mode too.
        pub(crate) static TARGET: Cell<usize> = const { Cell::new(0) };
        pub(crate) static LOG: RefCell<Log> = RefCell::new(Log::default());
        /// Our driver object.
        static DRIVER: Cell<usize> = const { Cell::new(0) };
        /// (our device, the device below it).
        static LOWER: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn reset(m: &fsfilter_sim::Machine, sync: bool, in_mount: bool) {
        let ntfs = m.kernel(|k| {
            let id = k.objects.names.get(r"\NTFS").copied().unwrap();
            k.objects.device(id).ptr as usize
        });
        TARGET.with(|t| t.set(ntfs));
        SYNC.with(|s| s.set(sync));
        IN_MOUNT.with(|s| s.set(in_mount));
        LOG.with(|l| *l.borrow_mut() = Log::default());
        LOWER.with(|l| l.borrow_mut().clear());
    }

    fn now_ms() -> u64 {
        fsfilter_sim::kernel::with(|k| k.sched.now / 10_000)
    }

    /// Creates a device and attaches it to `target`.
    ///
    /// # Safety
    /// `driver` and `target` must be live.
    unsafe fn attach(driver: *const DRIVER_OBJECT, target: *mut DEVICE_OBJECT) {
        let mut me: *mut DEVICE_OBJECT = null_mut();
        // SAFETY: our driver; an unnamed device of the control device's type.
        let s = unsafe {
            IoCreateDevice(driver, 0, null_mut(), (*target).DeviceType, 0, false, &mut me)
        };
        if s < 0 {
            return;
        }
        let mut lower = null_mut();
        // SAFETY: our new device and a live target.
        if unsafe { IoAttachDeviceToDeviceStackSafe(me, target, &mut lower) } >= 0 {
            // SAFETY: our device and the one below it, both live.
            unsafe {
                (*me).StackSize = (*lower).StackSize + 1;
                (*me).Flags &= !0x80;
            }
            LOWER.with(|l| l.borrow_mut().push((me as usize, lower as usize)));
        }
    }

    /// Registers with `IoRegisterFsRegistrationChangeMountAware` twice; the first time's span
    /// is recorded.
    ///
    /// # Safety
    /// `driver` must be our live driver object.
    unsafe fn register(driver: *const DRIVER_OBJECT) {
        let sync = SYNC.with(Cell::get);
        let start = now_ms();
        // SAFETY: our driver object and routine.
        let first =
            Status(unsafe { IoRegisterFsRegistrationChangeMountAware(driver, Some(notify), sync) });
        let end = now_ms();
        // SAFETY: as above.
        let second =
            Status(unsafe { IoRegisterFsRegistrationChangeMountAware(driver, Some(notify), sync) });
        LOG.with(|l| {
            let mut l = l.borrow_mut();
            l.statuses.extend([first, second]);
            l.registered.get_or_insert((start, end));
        });
    }

    unsafe extern "system" fn notify(cdo: *const DEVICE_OBJECT, active: bool) {
        let driver = DRIVER.with(Cell::get) as *const DRIVER_OBJECT;
        // SAFETY: a live control device.
        let fs_driver = unsafe { (*cdo).DriverObject };
        if !active || cdo as usize != TARGET.with(Cell::get) {
            return;
        }
        LOG.with(|l| l.borrow_mut().notified.push(cdo as usize));
        // SAFETY: our driver object and the live control device.
        unsafe { attach(driver, cdo.cast_mut()) };
        let mut list = [null_mut(); 16];
        let mut count = 0u32;
        // SAFETY: our list; every device returned is referenced.
        let _ = unsafe {
            IoEnumerateDeviceObjectList(
                fs_driver,
                list.as_mut_ptr(),
                size_of_val(&list) as u32,
                &mut count,
            )
        };
        for dev in list.into_iter().filter(|d| !d.is_null()) {
            let mut disk = null_mut();
            // SAFETY: a referenced device of the file system.
            if dev.cast_const() != cdo && unsafe { IoGetDiskDeviceObject(dev, &mut disk) } >= 0 {
                LOG.with(|l| l.borrow_mut().found.push(dev as usize));
                // SAFETY: the reference IoGetDiskDeviceObject took.
                unsafe { ObfDereferenceObject(disk.cast()) };
            }
            // SAFETY: the reference the enumeration took.
            unsafe { ObfDereferenceObject(dev.cast()) };
        }
    }

    unsafe extern "system" fn pass(d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        let lower =
            LOWER.with(|l| l.borrow().iter().find(|(me, _)| *me == d as usize).map(|x| x.1));
        let Some(lower) = lower else { return Status::INVALID_DEVICE_REQUEST.0 };
        // SAFETY: the live IRP at our location.
        let (major, minor) = unsafe {
            let sl = &*fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp);
            (sl.MajorFunction, sl.MinorFunction)
        };
        let mount = major == 0x0d && minor == 0x01;
        if mount {
            LOG.with(|l| l.borrow_mut().mounts_seen += 1);
        }
        // SAFETY: the live IRP; the device below ours.
        let s = unsafe {
            fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp);
            fsfilter_kernel::irp::IoCallDriver(lower as *mut _, irp)
        };
        if mount && IN_MOUNT.with(Cell::get) && s == Status::PENDING.0 {
            // In the mounting thread, the file system holding the request.
            // SAFETY: our live device's driver object.
            unsafe { register((*d).DriverObject) };
        }
        s
    }

    pub(crate) unsafe extern "system" fn entry(
        driver: *const DRIVER_OBJECT,
        _p: *const UNICODE_STRING,
    ) -> NTSTATUS {
        DRIVER.with(|d| d.set(driver as usize));
        // SAFETY: our driver object during DriverEntry.
        unsafe {
            for f in (*driver.cast_mut()).MajorFunction.iter_mut() {
                *f = Some(pass);
            }
        }
        if IN_MOUNT.with(Cell::get) {
            // SAFETY: our driver; the test's live control device.
            unsafe { attach(driver, TARGET.with(Cell::get) as *mut _) };
        } else {
            // SAFETY: our driver object.
            unsafe { register(driver) };
        }
        0
    }
}

/// The volume's volume device, as a pointer value.
fn vdo_of(m: &fsfilter_sim::Machine, v: fsfilter_sim::VolumeId) -> usize {
    m.kernel(|k| k.volume(v).vdo.map_or(0, |d| k.objects.device(d).ptr as usize))
}

#[test]
fn a_synchronized_registration_waits_for_a_pended_mount_and_finds_the_volume_facts_1_1() {
    // facts.md §1.1: with SynchronizeWithMounts TRUE the registration waits for mounts in
    // progress, closing the race where a volume mounts between "attach to the control device"
    // and "enumerate the volumes". The service starts 10 ms into a mount its file system pended
    // for 50 ms: the request went past the control device before the filter attached. With
    // FALSE the enumeration runs before the volume device exists and misses it for good; with
    // TRUE the registration returns once the mount is back, and the enumeration finds it.
    for sync in [false, true] {
        let mut m = machine(21);
        let spec = VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"x");
        let c = m.add_volume(spec.mount(fsfilter_sim::MountWhen::Step).pend_mount(50));
        m.boot();
        syncreg::reset(&m, sync, false);
        m.install(fsfilter_sim::ServiceSpec::new("SyncReg", syncreg::entry, "legacy"));
        m.schedule(10, |m| assert_eq!(m.start("SyncReg"), Status::SUCCESS));
        assert_eq!(m.mount(c), Status::SUCCESS);
        m.settle();
        let vdo = vdo_of(&m, c);
        assert_ne!(vdo, 0);
        let log = syncreg::LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
        assert_eq!(log.statuses, [Status::SUCCESS, Status::DEVICE_ALREADY_ATTACHED], "{sync}");
        assert_eq!(log.notified, [syncreg::TARGET.with(std::cell::Cell::get)], "{sync}");
        assert_eq!(log.mounts_seen, 0, "{sync}: the request had gone past the control device");
        let (called, returned) = log.registered.unwrap();
        assert_eq!(called, 10, "{sync}");
        if sync {
            assert!(returned >= 50, "waited for the mount: {returned}");
            assert_eq!(log.found, [vdo], "the enumeration found the volume");
        } else {
            assert_eq!(returned, 10, "did not wait");
            assert!(log.found.is_empty(), "the race: {:?}", log.found);
        }
        // The I/O manager's work after the mount was done once, and the volume is usable.
        let mounted = m
            .events()
            .into_iter()
            .filter(|e| matches!(&e.kind, EventKind::Mounted { volume, .. } if volume == "C:"))
            .count();
        assert_eq!(mounted, 1, "{sync}");
        m.kernel(|k| {
            let storage = k.volume(c).storage.unwrap();
            // SAFETY: the storage device's VPB.
            assert_eq!(unsafe { (*k.objects.dobj(storage).Vpb).Flags } & 1, 1, "VPB_MOUNTED");
            assert_eq!(k.volume(c).mounting, None);
        });
        assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok(), "{sync}");
        assert!(m.findings().is_empty(), "{sync}: {:?}", m.findings());
    }
}

#[test]
fn a_mount_starting_during_a_synchronized_registration_waits_for_it_facts_1_1() {
    // facts.md §1.1: a mount that starts while a synchronized registration is under way waits
    // until its notification calls are done. The registration (at 10 ms) waits for C:'s pended
    // mount (back at 50 ms); D:'s mount starts at 20 ms and goes out only once the filter is on
    // the control device, so its request goes through the filter, and the enumeration finds
    // C: alone.
    let mut m = machine(22);
    let step = fsfilter_sim::MountWhen::Step;
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).mount(step).pend_mount(50));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs).mount(step));
    m.boot();
    syncreg::reset(&m, true, false);
    m.install(fsfilter_sim::ServiceSpec::new("SyncReg", syncreg::entry, "legacy"));
    m.schedule(10, |m| assert_eq!(m.start("SyncReg"), Status::SUCCESS));
    let d_mount = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = d_mount.clone();
    m.schedule(20, move |m| {
        let s = m.mount(d);
        seen.set(Some((s, m.now_ms())));
    });
    assert_eq!(m.mount(c), Status::SUCCESS);
    m.settle();
    let (status, at) = d_mount.get().unwrap();
    assert_eq!(status, Status::SUCCESS);
    assert!(at >= 50, "D: mounted after the registration: {at} ms");
    let log = syncreg::LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    assert_eq!(log.mounts_seen, 1, "D:'s request went through the filter");
    assert_eq!(log.found, [vdo_of(&m, c)], "C: found by the enumeration, D: not yet mounted");
    assert!(log.registered.is_some_and(|(_, returned)| returned >= 50));
    assert_ne!(vdo_of(&m, d), 0);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_synchronized_registration_from_the_mounting_thread_does_not_wait_for_itself_facts_1_1() {
    // docs/simulator.md (choice): a registration made in a thread that is itself mounting does
    // not wait for that mount (it would wait for itself). The filter registers from its mount
    // dispatch once the file system pended C:'s mount for 50 ms: the registration returns at
    // once, and its enumeration does not find C: (not mounted yet).
    let mut m = machine(23);
    let step = fsfilter_sim::MountWhen::Step;
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).mount(step).pend_mount(50));
    m.boot();
    syncreg::reset(&m, true, true);
    let ntfs = syncreg::TARGET.with(std::cell::Cell::get);
    m.install(fsfilter_sim::ServiceSpec::new("SyncReg", syncreg::entry, "legacy"));
    assert_eq!(m.start("SyncReg"), Status::SUCCESS);
    assert_eq!(m.mount(c), Status::SUCCESS);
    let log = syncreg::LOG.with(|l| std::mem::take(&mut *l.borrow_mut()));
    assert_eq!(log.statuses, [Status::SUCCESS, Status::DEVICE_ALREADY_ATTACHED]);
    let (called, returned) = log.registered.unwrap();
    assert_eq!(returned, called, "no wait");
    assert_eq!(log.notified, [ntfs]);
    assert!(log.found.is_empty(), "{:?}", log.found);
    assert!(m.now_ms() >= 50);
    assert_ne!(vdo_of(&m, c), 0);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

thread_local! {
    /// The control devices the "Enumerating" driver's routine was told of, in order.
    static ENUMERATED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The control devices it was told went away (FsActive FALSE), in order.
    static GONE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "system" fn record_notify(cdo: *const DEVICE_OBJECT, active: bool) {
    if active {
        ENUMERATED.with(|e| e.borrow_mut().push(cdo as usize));
    } else {
        GONE.with(|e| e.borrow_mut().push(cdo as usize));
    }
}

/// Registers `record_notify` and leaves it registered until the test ends.
unsafe extern "system" fn enumerating_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    // SAFETY: our driver object and routine, during DriverEntry.
    unsafe {
        windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange(
            driver,
            Some(record_notify),
        )
    }
}

#[test]
fn a_new_routine_hears_of_network_then_cd_rom_then_disk_file_systems_facts_1_1() {
    // facts.md §1.1: the order of the initial enumeration is unconfirmed for Windows; ReactOS
    // reports network, CD-ROM, disk, tape, each queue head first, RAW left out.
    // docs/simulator.md (File-system registration) makes that the simulator's choice.
    use fsfilter_sim::fsreg::Segment;
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs));
    m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup));
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("Enumerating", enumerating_entry, "legacy"));
    ENUMERATED.with(|e| e.borrow_mut().clear());
    assert_eq!(m.start("Enumerating"), Status::SUCCESS);
    let heard = ENUMERATED.with(|e| std::mem::take(&mut *e.borrow_mut()));
    let (expected, names) = m.kernel(|k| {
        let mut expected = Vec::new();
        for seg in [Segment::Network, Segment::CdRom, Segment::Disk, Segment::Tape] {
            for d in k.fsreg.segment(seg) {
                if !k.fsreg.raw.contains(d) {
                    expected.push(k.objects.device(*d).ptr as usize);
                }
            }
        }
        let name = |p: &usize| {
            let id = k.objects.device_id(*p as *const DEVICE_OBJECT).unwrap();
            k.objects.device(id).name.clone().unwrap_or_default()
        };
        (expected, heard.iter().map(name).collect::<Vec<String>>())
    });
    assert_eq!(heard, expected, "{names:?}");
    // Each segment is there: \Device\Mup first, then CDFS and FastFat's CD-ROM device, then NTFS
    // and FastFat's disk device.
    let at =
        |n: &str| names.iter().position(|x| x == n).unwrap_or_else(|| panic!("{n}: {names:?}"));
    assert_eq!(at(r"\Device\Mup"), 0, "{names:?}");
    assert!(at(r"\Cdfs") < at(r"\Ntfs") && at(r"\FatCdrom") < at(r"\Fat"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(r"\Device\Raw")), "{names:?}");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Does nothing and loads.
unsafe extern "system" fn quiet_entry(
    _driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    0
}

#[test]
fn drivers_of_one_group_load_in_installation_order_whatever_the_seed() {
    // docs/simulator.md (Services, start types and load order), a choice: facts.md §2.3 says
    // the order within a load-order group is random on Windows; the simulator loads a group's
    // drivers in the order they were installed, and the machine's seed does not change it.
    for seed in 1..=8 {
        for names in [["Alpha", "Beta", "Gamma"], ["Gamma", "Alpha", "Beta"]] {
            let mut m = machine(seed);
            m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
            for n in names {
                let mut spec = fsfilter_sim::ServiceSpec::new(n, quiet_entry, "legacy");
                spec.start = fsfilter_sim::StartType::Boot;
                spec.group = Some("FSFilter Activity Monitor".into());
                m.install(spec);
            }
            m.boot();
            let loaded: Vec<String> = m
                .events()
                .into_iter()
                .filter_map(|e| match e.kind {
                    EventKind::Load { driver, .. } if names.contains(&driver.as_str()) => {
                        Some(driver)
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(loaded, names, "seed {seed}");
        }
    }
}

/// Registers `notify_a`, then unregisters `notify_b`, which it never registered.
unsafe extern "system" fn unregister_other_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::{
        IoRegisterFsRegistrationChange as Register, IoUnregisterFsRegistrationChange as Unregister,
    };
    // SAFETY: our driver object and routines, during DriverEntry.
    unsafe {
        Register(driver, Some(notify_a));
        Unregister(driver, Some(notify_b));
    }
    0
}

/// Registers `notify_a` and `notify_b`, then unregisters `record_notify`, registered by neither.
unsafe extern "system" fn unregister_unknown_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::{
        IoRegisterFsRegistrationChange as Register, IoUnregisterFsRegistrationChange as Unregister,
    };
    // SAFETY: our driver object and routines, during DriverEntry.
    unsafe {
        Register(driver, Some(notify_a));
        Register(driver, Some(notify_b));
        Unregister(driver, Some(record_notify));
    }
    0
}

#[test]
fn unregistering_an_unknown_routine_removes_a_drivers_only_registration() {
    // docs/simulator.md (Identity of driver code), a choice: IoUnregisterFsRegistrationChange
    // matches the (driver, routine) pair; a routine that matches none of the driver's
    // registrations removes the driver's registration when it has exactly one, and nothing when
    // it has more.
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("OnlyOne", unregister_other_entry, "legacy"));
    m.install(fsfilter_sim::ServiceSpec::new("Two", unregister_unknown_entry, "legacy"));
    assert_eq!(m.start("OnlyOne"), Status::SUCCESS);
    assert_eq!(m.start("Two"), Status::SUCCESS);
    let registered = |m: &fsfilter_sim::Machine, service: &str| {
        m.kernel(|k| {
            k.fsreg
                .notifications
                .iter()
                .filter(|n| k.objects.driver(n.driver).service == service)
                .count()
        })
    };
    assert_eq!(registered(&m, "OnlyOne"), 0);
    assert_eq!(registered(&m, "Two"), 2);
}

thread_local! {
    /// Requests the "OddFs" driver's device received.
    static ODD_REQUESTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The "OddFs" driver's registered device.
    static ODD_DEVICE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Counts the request and fails it, as a device that serves no file-system request would.
unsafe extern "system" fn odd_dispatch(
    _device: *const DEVICE_OBJECT,
    irp: *mut windows_sys::Wdk::Foundation::IRP,
) -> i32 {
    ODD_REQUESTS.set(ODD_REQUESTS.get() + 1);
    // SAFETY: the live IRP, ours to complete.
    unsafe {
        (*irp).IoStatus.Anonymous.Status = Status::INVALID_DEVICE_REQUEST.0;
        fsfilter_kernel::irp::IoCompleteRequest(irp, 0);
    }
    Status::INVALID_DEVICE_REQUEST.0
}

/// Registers a named device of type FILE_DEVICE_NAMED_PIPE (0x11) as a file system.
unsafe extern "system" fn odd_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    let units: Vec<u16> = r"\OddFs".encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let mut dev = null_mut();
    // SAFETY: our driver object during DriverEntry; a valid name and out pointer; our device.
    unsafe {
        for f in (*driver.cast_mut()).MajorFunction.iter_mut() {
            *f = Some(odd_dispatch);
        }
        let s = windows_sys::Wdk::System::SystemServices::IoCreateDevice(
            driver, 0, &name, 0x11, 0, false, &mut dev,
        );
        if s != 0 {
            return s;
        }
        ODD_DEVICE.set(dev as usize);
        windows_sys::Wdk::Storage::FileSystem::IoRegisterFileSystem(dev);
    }
    0
}

#[test]
fn a_device_of_another_type_registered_as_a_file_system_joins_no_mount_queue_facts_1_1() {
    // facts.md §1.1: the queue has four segments, CD-ROM, disk, tape and network, and a control
    // device goes to the one of its DeviceType; ReactOS IoRegisterFileSystem (and Windows, as
    // its public symbol-level listings show) puts a device of any other type in no queue, bumps
    // the counter and calls the notification routines all the same. Such a device must not
    // receive the mount requests of disk volumes.
    use fsfilter_sim::fsreg::Segment;
    let mut m = machine(5);
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("a.txt", b"c")
            .mount(fsfilter_sim::MountWhen::Step),
    );
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("Enumerating", enumerating_entry, "legacy"));
    m.install(fsfilter_sim::ServiceSpec::new("OddFs", odd_entry, "legacy"));
    assert_eq!(m.start("Enumerating"), Status::SUCCESS);
    ENUMERATED.with(|e| e.borrow_mut().clear());
    ODD_REQUESTS.set(0);
    assert_eq!(m.start("OddFs"), Status::SUCCESS);
    let odd = ODD_DEVICE.get();
    let heard = ENUMERATED.with(|e| std::mem::take(&mut *e.borrow_mut()));
    assert_eq!(heard, [odd], "the routines are told of it");
    m.kernel(|k| {
        for seg in [Segment::Network, Segment::CdRom, Segment::Disk, Segment::Tape] {
            let queued =
                k.fsreg.segment(seg).iter().any(|d| k.objects.device(*d).ptr as usize == odd);
            assert!(!queued, "in no segment: {seg:?}");
        }
    });
    assert_eq!(m.mount(c), Status::SUCCESS);
    assert_eq!(ODD_REQUESTS.get(), 0, "no mount request reached it");
    assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Registers `notify_a`, then fails its `DriverEntry` without unregistering it.
unsafe extern "system" fn failing_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    // SAFETY: our driver object and routine, during DriverEntry.
    let s = unsafe {
        windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange(
            driver,
            Some(notify_a),
        )
    };
    assert_eq!(s, 0);
    Status::UNSUCCESSFUL.0
}

#[test]
fn a_driver_entry_that_fails_with_its_routine_registered_is_reported() {
    // facts.md §2.6 / docs/simulator.md (Services): a failed DriverEntry unloads the driver
    // without DriverUnload; a notification routine it left registered (facts.md §1.1: the
    // registration holds the driver object, the routine's code goes with the image) is
    // FS_NOTIFICATION_LEAKED, and a file system registering later would run the unloaded
    // routine: UNLOADED_DRIVER_CODE_RAN, not a call.
    use fsfilter_sim::Rule;
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("Failing", failing_entry, "legacy"));
    assert_eq!(m.start("Failing"), Status::UNSUCCESSFUL);
    let rules = |m: &fsfilter_sim::Machine| -> Vec<(Rule, Option<String>)> {
        m.findings().into_iter().map(|f| (f.0, f.1)).collect()
    };
    assert_eq!(rules(&m), [(Rule::FsNotificationLeaked, Some("Failing".into()))]);
    m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs));
    let later = rules(&m);
    assert!(later.len() > 1, "{later:?}");
    assert!(
        later[1..].iter().all(|f| *f == (Rule::UnloadedDriverCodeRan, Some("Failing".into()))),
        "{later:?}"
    );
    assert_eq!(m.crashed(), None);
}

/// Registers a disk file system's control device, then unregisters it twice.
unsafe extern "system" fn unregistering_twice_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::{IoRegisterFileSystem, IoUnregisterFileSystem};
    let units: Vec<u16> = r"\TwiceFs".encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let mut dev = null_mut();
    // SAFETY: our driver object during DriverEntry; a valid name and out pointer; our device.
    unsafe {
        let s = windows_sys::Wdk::System::SystemServices::IoCreateDevice(
            driver, 0, &name, 0x08, 0, false, &mut dev,
        );
        if s != 0 {
            return s;
        }
        ODD_DEVICE.set(dev as usize);
        IoRegisterFileSystem(dev);
        IoUnregisterFileSystem(dev);
        IoUnregisterFileSystem(dev);
    }
    0
}

#[test]
fn unregistering_a_file_system_twice_is_a_bugcheck() {
    // IoUnregisterFileSystem unlinks the control device from its queue segment (facts.md §1.1);
    // Windows' list check (__fastfail, KERNEL_SECURITY_CHECK_FAILURE, in its symbol-level
    // listing) stops a second unlink of the same entry, whose links are stale, before any
    // routine is called. The simulator reports it and tells the routines nothing more.
    use fsfilter_sim::Rule;
    let mut m = machine(5);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    m.install(fsfilter_sim::ServiceSpec::new("Enumerating", enumerating_entry, "legacy"));
    m.install(fsfilter_sim::ServiceSpec::new("Twice", unregistering_twice_entry, "legacy"));
    assert_eq!(m.start("Enumerating"), Status::SUCCESS);
    ENUMERATED.with(|e| e.borrow_mut().clear());
    GONE.with(|e| e.borrow_mut().clear());
    assert_eq!(m.start("Twice"), Status::SUCCESS);
    let odd = ODD_DEVICE.get();
    assert_eq!(ENUMERATED.with(|e| e.borrow().clone()), [odd], "told of it once");
    assert_eq!(GONE.with(|e| e.borrow().clone()), [odd], "told it went once");
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(Rule::Bugcheck, Some("Twice".into()))]);
}

#[test]
fn ob_query_name_string_names_a_device_and_says_how_much_room_it_needs() {
    // ObQueryNameString's reference page: the name after the OBJECT_NAME_INFORMATION,
    // NUL-terminated (MaximumLength counts the NUL, Length does not); a zero or short Length is
    // STATUS_INFO_LENGTH_MISMATCH with the size needed in ReturnLength; an unnamed object gets
    // a NULL Buffer and zero lengths. The legacy backend names volumes this way (rule 22).
    use windows_sys::Wdk::Foundation::OBJECT_NAME_INFORMATION;
    use windows_sys::Wdk::Storage::FileSystem::ObQueryNameString;
    let mut m = machine(31);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let (storage, vdo) = m.kernel(|k| {
        let v = k.volume(c);
        (k.objects.device(v.storage.unwrap()).ptr, k.objects.device(v.vdo.unwrap()).ptr)
    });
    let header = std::mem::size_of::<OBJECT_NAME_INFORMATION>();
    let name = r"\Device\HarddiskVolume1";
    let needed = header + (name.len() + 1) * 2;
    let mut got = 0u32;
    // SAFETY: a live device, no buffer.
    let s = unsafe { ObQueryNameString(storage.cast(), null_mut(), 0, &mut got) };
    assert_eq!((Status(s), got as usize), (Status::INFO_LENGTH_MISMATCH, needed));
    let mut buf = vec![0u64; 64];
    let info = buf.as_mut_ptr().cast::<OBJECT_NAME_INFORMATION>();
    // SAFETY: a live device, a buffer one byte short.
    let s = unsafe { ObQueryNameString(storage.cast(), info, needed as u32 - 1, &mut got) };
    assert_eq!(Status(s), Status::INFO_LENGTH_MISMATCH);
    // SAFETY: a live device, a large enough buffer.
    let s = unsafe { ObQueryNameString(storage.cast(), info, 512, &mut got) };
    assert_eq!((Status(s), got as usize), (Status::SUCCESS, needed));
    // SAFETY: the name just written into our buffer.
    let (text, max) =
        unsafe { (fsfilter_sim::mem::read_unicode(&(*info).Name), (*info).Name.MaximumLength) };
    assert_eq!((text.as_str(), usize::from(max)), (name, name.len() * 2 + 2));
    // The file system's volume device has no name.
    // SAFETY: a live device, a large enough buffer.
    let s = unsafe { ObQueryNameString(vdo.cast(), info, 512, &mut got) };
    assert_eq!((Status(s), got as usize), (Status::SUCCESS, header));
    // SAFETY: as above.
    assert!(unsafe { (*info).Name.Buffer }.is_null());
}
