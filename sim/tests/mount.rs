//! Mounting (facts.md §1.1, §1.4, §1.7): every file-system kind mounts; the recognizer loads file
//! systems on demand; RAW is not reported and mounts only when allowed; the mount request's stack
//! count and flags; FAT's revived VPB; dismount and `FastIoDetachDevice`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod common;

use common::{machine, machine_with_spy, spy};
use fsfilter::Status;
use fsfilter_sim::objects::DeviceRole;
use fsfilter_sim::{CreateOptions, EventKind, FsKind, IoMode, MountWhen, VolumeSpec};

fn mounted_events(m: &fsfilter_sim::Machine) -> Vec<(String, String, Status)> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Mounted { volume, filesystem, status } => Some((volume, filesystem, status)),
            _ => None,
        })
        .collect()
}

fn loads(m: &fsfilter_sim::Machine) -> Vec<String> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Load { driver, .. } => Some(driver),
            _ => None,
        })
        .collect()
}

#[test]
fn every_kind_mounts_with_its_file_system() {
    // facts.md §1.4: the file system that recognizes the volume mounts it with a VDO; §1.1: the
    // names of the control devices.
    let cases = [
        (FsKind::Ntfs, "C:", "Ntfs"),
        (FsKind::Fat, "F:", "fastfat"),
        (FsKind::Exfat, "E:", "exfat"),
        (FsKind::Refs, "R:", "ReFS"),
        (FsKind::Cdfs, "D:", "cdfs"),
        (FsKind::Udfs, "U:", "udfs"),
        (FsKind::Mup, r"\\server\share", "Mup"),
        (FsKind::Npfs, r"\Device\NamedPipe", "Npfs"),
        (FsKind::Msfs, r"\Device\Mailslot", "Msfs"),
    ];
    for (kind, name, fs) in cases {
        let mut m = machine(1);
        let v = m.add_volume(VolumeSpec::new(name, kind).file("a.txt", b"x"));
        m.boot();
        let mounted = mounted_events(&m);
        assert_eq!(mounted, vec![(name.to_owned(), fs.to_owned(), Status::SUCCESS)], "{kind:?}");
        m.kernel(|k| {
            let vdo = k.volume(v).vdo.expect("mounted");
            let info = k.objects.device(vdo);
            assert_eq!(info.volume, Some(v));
            assert_eq!(k.objects.driver(info.driver).service, fs);
            if kind.uses_vpb() {
                assert_eq!(info.role, DeviceRole::FsVolume);
                assert!(info.name.is_none(), "volume devices are never named (§1.1)");
                let storage = k.volume(v).storage.unwrap();
                let vpb = k.objects.dobj(storage).Vpb;
                // SAFETY: the storage device's VPB.
                let (flags, dev) = unsafe { ((*vpb).Flags, (*vpb).DeviceObject) };
                assert_eq!(flags & 1, 1, "VPB_MOUNTED");
                assert_eq!(dev, info.ptr);
                assert_eq!(
                    k.objects.dobj(vdo).StackSize,
                    k.objects.dobj(storage).StackSize + 1,
                    "VDO StackSize = storage + 1"
                );
                assert_eq!(k.objects.dobj(vdo).Flags & 0x80, 0, "DO_DEVICE_INITIALIZING cleared");
            }
        });
        let read_only = CreateOptions::open().access(0x8000_0000);
        let h = m.open(v, "a.txt", read_only).unwrap_or_else(|s| panic!("{kind:?}: {s}"));
        let r = m.read(h, Some(0), 10, IoMode::Cached);
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"x"[..]), "{kind:?}");
        assert!(m.findings().is_empty(), "{kind:?}: {:?}", m.findings());
    }
}

#[test]
fn the_recognizer_loads_fat_on_demand_and_the_mount_is_retried() {
    // facts.md §1.4: FsRec answers STATUS_FS_DRIVER_REQUIRED, gets IRP_MN_LOAD_FILE_SYSTEM, loads
    // the real file system, and the mount is retried.
    let mut m = machine_with_spy(2);
    let v = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    m.boot();
    let l = loads(&m);
    let fsrec = l.iter().position(|d| d == "Fs_Rec").unwrap();
    let fat = l.iter().position(|d| d == "fastfat").unwrap();
    assert!(fsrec < fat, "{l:?}");
    assert_eq!(mounted_events(&m), vec![("F:".into(), "fastfat".into(), Status::SUCCESS)]);
    // The spy, attached to the recognizer's control device, saw the load request, and was told
    // the recognizer went away (FsActive FALSE) when FastFat registered \Fat and \FatCdrom.
    let seen = spy(|s| s.seen.clone());
    assert!(
        seen.iter().any(|s| s.major == 0x0d && s.minor == 0x03),
        "IRP_MN_LOAD_FILE_SYSTEM seen"
    );
    let recognizer = m.kernel(|k| !k.objects.names.contains_key(r"\FILESYSTEM\FATDISKRECOGNIZER"));
    assert!(recognizer, "the recognizer device is deleted once its file system is loaded");
    let notified = spy(|s| s.notified.clone());
    assert!(notified.iter().any(|(_, active)| !active), "{notified:?}");
    // The volume works.
    m.kernel(|k| assert!(k.volume(v).vdo.is_some()));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn raw_is_not_reported_sits_last_and_mounts_only_when_allowed() {
    // facts.md §1.1: RAW's control devices are not reported to notification routines and sit at
    // the tail of their segments (CDFS, low priority, goes before RAW); §1.4: RAW is tried only
    // when a raw mount is allowed.
    let mut m = machine_with_spy(3);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs));
    let blank = m.add_volume(VolumeSpec::new("X:", FsKind::Ntfs).mount(MountWhen::Step));
    m.kernel(|k| k.volume_mut(blank).blank = true);
    m.boot();
    let _ = (c, d);
    let raw: Vec<usize> =
        m.kernel(|k| k.fsreg.raw.iter().map(|d| k.objects.device(*d).ptr as usize).collect());
    assert_eq!(raw.len(), 2);
    let notified = spy(|s| s.notified.clone());
    assert!(notified.iter().all(|(d, _)| !raw.contains(d)), "RAW reported: {notified:?}");
    m.kernel(|k| {
        for seg in [fsfilter_sim::fsreg::Segment::Disk, fsfilter_sim::fsreg::Segment::CdRom] {
            let list = k.fsreg.segment(seg);
            assert!(k.fsreg.raw.contains(list.last().unwrap()), "RAW last in {seg:?}");
        }
        let cd = k.fsreg.segment(fsfilter_sim::fsreg::Segment::CdRom);
        let names: Vec<String> =
            cd.iter().map(|d| k.objects.device(*d).name.clone().unwrap_or_default()).collect();
        assert_eq!(names.last().map(String::as_str), Some(r"\Device\RawCdRom"));
        assert_eq!(
            names[names.len() - 2],
            r"\Cdfs",
            "low priority goes just before RAW: {names:?}"
        );
    });
    // Blank media: no file system recognizes it; a plain mount fails, a volume open mounts RAW.
    assert_eq!(m.mount(blank), Status::UNRECOGNIZED_VOLUME);
    let r = m.create(blank, "", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(mounted_events(&m).last().unwrap(), &("X:".into(), "RAW".into(), Status::SUCCESS));
    m.kernel(|k| {
        let storage = k.volume(blank).storage.unwrap();
        // SAFETY: the storage device's VPB.
        let flags = unsafe { (*k.objects.dobj(storage).Vpb).Flags };
        assert_eq!(flags & 0x11, 0x11, "VPB_MOUNTED | VPB_RAW_MOUNT");
    });
    // Only the volume can be opened on RAW.
    assert_eq!(
        m.create(blank, "a.txt", CreateOptions::default()).status,
        Status::INVALID_PARAMETER
    );
    let mount = spy(|s| s.mounts.last().cloned().unwrap());
    assert_eq!(mount.sl_flags & 1, 1, "SL_ALLOW_RAW_MOUNT on the volume open's mount");
}

#[test]
fn the_mount_request_has_the_documented_stack_count_flags_and_parameters() {
    // facts.md §1.4: sent to the top of the CDO's chain; stack count = storage top StackSize + 1 +
    // devices attached to the CDO; IRP_MOUNT_COMPLETION | IRP_SYNCHRONOUS_PAGING_IO; Vpb = the
    // real device's VPB; DeviceObject = top of the storage stack.
    let mut m = machine_with_spy(4);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let mounts = spy(|s| s.mounts.clone());
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let mount = &mounts[0];
    let (storage_ptr, vpb, vdo, storage_stack) = m.kernel(|k| {
        let s = k.volume(c).storage.unwrap();
        let vdo = k.volume(c).vdo.unwrap();
        (
            k.objects.device(s).ptr as usize,
            k.objects.dobj(s).Vpb as usize,
            k.objects.device(vdo).ptr as usize,
            k.objects.dobj(s).StackSize,
        )
    });
    assert_eq!(mount.stack_count, storage_stack + 1 + 1, "one spy device on \\Ntfs");
    assert_eq!(mount.irp_flags, 0x2 | 0x40);
    assert_eq!(mount.param_vpb, vpb);
    assert_eq!(
        mount.param_device, storage_ptr,
        "no storage filters: the storage device is the top"
    );
    assert_eq!(mount.real_device, storage_ptr);
    assert_eq!(mount.vdo, vdo);
    assert!(mount.attached);
    // The spy is now on top of the VDO, and user requests go through it.
    let h = m.open(c, "x.txt", CreateOptions::default()).unwrap();
    let _ = m.write(h, Some(0), b"abc", IoMode::Cached);
    let seen = spy(|s| s.seen.iter().filter(|x| x.major == 0).count());
    assert!(seen >= 1);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_dismounted_fat_volume_with_open_files_is_revived_and_the_old_vpb_comes_back() {
    // facts.md §1.4 steps 1 and 4: FAT may swap in the previous VPB; the VPB in the stack location
    // goes stale; the filter re-reads RealDevice->Vpb and finds the volume it is attached to.
    let mut m = machine_with_spy(5);
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("keep.txt", b"kept"));
    m.boot();
    let first = spy(|s| s.mounts.last().cloned().unwrap());
    assert!(first.attached);
    let h = m.open(f, "keep.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.dismount(f), Status::SUCCESS);
    // The open file's requests now fail; its volume device lives on.
    assert_eq!(m.read(h, Some(0), 4, IoMode::Cached).status, Status::VOLUME_DISMOUNTED);
    // The media comes back: FastFat revives the old volume.
    assert_eq!(m.mount(f), Status::SUCCESS);
    let second = spy(|s| s.mounts.last().cloned().unwrap());
    assert_ne!(second.param_vpb, first.param_vpb, "the mount request carried a fresh VPB");
    assert_eq!(second.stale_vpb_device, 0, "the fresh VPB was not used: stale");
    assert_eq!(second.real_vpb_after, first.param_vpb, "the old VPB is back on the real device");
    assert_eq!(second.vdo, first.vdo, "the old volume device serves again");
    assert!(!second.attached, "the spy is attached to it already");
    assert!(
        m.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::System { what: "volume_revived", .. }))
    );
    let r = m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"kept"[..]));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_file_system_can_pend_the_mount_and_complete_it_from_a_worker_facts_1_4() {
    // facts.md §1.4 step 3: mounts may complete asynchronously. `VolumeSpec::pend_mount`: the
    // file system that recognizes the media pends the request and mounts from a worker thread
    // later; the spy's dispatch (the sfilter pattern) waits, then attaches to the new volume.
    for (kind, name) in [
        (FsKind::Ntfs, "C:"),
        (FsKind::Fat, "F:"),
        (FsKind::Exfat, "E:"),
        (FsKind::Refs, "R:"),
        (FsKind::Cdfs, "D:"),
        (FsKind::Udfs, "U:"),
    ] {
        let mut m = machine_with_spy(11);
        let spec = VolumeSpec::new(name, kind).file("a.txt", b"x").mount(MountWhen::Step);
        let v = m.add_volume(spec.pend_mount(4));
        m.boot();
        let before = m.now_ms();
        assert_eq!(m.mount(v), Status::SUCCESS, "{kind:?}");
        assert!(m.now_ms() >= before + 4, "{kind:?}: mounted 4 ms later");
        let mount = spy(|s| s.mounts.last().cloned().unwrap());
        assert_eq!(mount.status, 0, "{kind:?}");
        assert!(mount.attached, "{kind:?}: the spy attached after waiting");
        m.kernel(|k| {
            let vdo = k.volume(v).vdo.expect("mounted");
            assert_eq!(k.objects.device(vdo).ptr as usize, mount.vdo, "{kind:?}");
            let storage = k.volume(v).storage.unwrap();
            // SAFETY: the storage device's VPB.
            let flags = unsafe { (*k.objects.dobj(storage).Vpb).Flags };
            assert_eq!(flags & 1, 1, "{kind:?}: VPB_MOUNTED");
        });
        // The I/O manager logged the mount once the worker had completed it, 4 ms on.
        let at = m.events().into_iter().find_map(|e| match &e.kind {
            EventKind::Mounted { volume, status: Status::SUCCESS, .. } if volume == name => {
                Some(e.time / 10_000)
            }
            _ => None,
        });
        assert!(at.is_some_and(|t| t >= before + 4), "{kind:?}: {at:?}");
        let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).unwrap();
        let r = m.read(h, Some(0), 1, IoMode::Cached);
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"x"[..]), "{kind:?}");
        let seen = spy(|s| s.seen.iter().filter(|x| x.major == 0x03 && !x.fast_io).count());
        assert!(seen >= 1, "{kind:?}: the spy sees the volume's reads");
        assert!(m.findings().is_empty(), "{kind:?}: {:?}", m.findings());
    }
}

#[test]
fn a_second_mount_during_a_pended_one_fails_not_ready_and_one_volume_device_exists() {
    // docs/simulator.md (choice): one mount of a device at a time. A create from another thread
    // while a pended mount is under way gets STATUS_DEVICE_NOT_READY (Windows would make it
    // wait); the first mount makes the only volume device, and later creates use it.
    let mut m = machine_with_spy(12);
    let spec = VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"x").mount(MountWhen::Step);
    let v = m.add_volume(spec.pend_mount(10));
    m.boot();
    let other = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = other.clone();
    m.schedule(3, move |m| seen.set(Some(m.open(v, "a.txt", CreateOptions::open()).err())));
    assert_eq!(m.mount(v), Status::SUCCESS);
    assert_eq!(other.get(), Some(Some(Status::DEVICE_NOT_READY)), "the second request failed");
    let vdos = m.kernel(|k| {
        k.objects
            .devices
            .iter()
            .filter(|d| !d.deleted && d.role == DeviceRole::FsVolume && d.volume == Some(v))
            .count()
    });
    assert_eq!(vdos, 1, "one volume device");
    let mounts = spy(|s| s.mounts.iter().map(|x| x.status).collect::<Vec<_>>());
    assert_eq!(mounts.iter().filter(|s| **s >= 0).count(), 1, "one mount succeeded: {mounts:?}");
    assert!(m.open(v, "a.txt", CreateOptions::open()).is_ok());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn dismount_deletes_the_volume_device_after_the_last_close_and_detaches_filters() {
    // facts.md §1.7: deleting the VDO calls FastIoDetachDevice of the device attached above it.
    let mut m = machine_with_spy(6);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"aaa"));
    m.boot();
    let (vdo, spy_dev) = m.kernel(|k| {
        let vdo = k.volume(c).vdo.unwrap();
        (k.objects.device(vdo).ptr as usize, k.objects.device(k.objects.top(vdo)).ptr as usize)
    });
    assert_ne!(vdo, spy_dev);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.dismount(c), Status::SUCCESS);
    assert!(spy(|s| s.detached.is_empty()), "a file is still open: the VDO lives");
    assert!(
        m.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Dismounted { volume } if volume == "C:"))
    );
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(spy(|s| s.detached.clone()), vec![(spy_dev, vdo)]);
    m.kernel(|k| {
        let d = k.objects.device_id(vdo as *const _).unwrap();
        assert!(k.objects.device(d).deleted);
        assert!(k.objects.above(d).is_none());
    });
    // The next open mounts the volume again, with a new volume device.
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    let r = m.read(h, Some(0), 3, IoMode::Cached);
    assert_eq!(r.data, b"aaa");
    let again = m.kernel(|k| k.objects.device(k.volume(c).vdo.unwrap()).ptr as usize);
    assert_ne!(again, vdo);
    assert_eq!(mounted_events(&m).len(), 2);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_missing_fast_io_detach_is_a_finding() {
    // facts.md §1.7: filters attached to volumes must implement FastIoDetachDevice.
    let mut m = machine(7);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    bare::TARGET
        .with(|t| t.set(m.kernel(|k| k.objects.device(k.volume(c).vdo.unwrap()).ptr as usize)));
    m.install(fsfilter_sim::ServiceSpec::new("NoDetach", bare::entry, "legacy"));
    assert_eq!(m.start("NoDetach"), Status::SUCCESS);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert!(
        rules.contains(&(fsfilter_sim::Rule::FastIoDetachMissing, Some("NoDetach".into()))),
        "{rules:?}"
    );
}

#[test]
fn step_volumes_mount_only_when_their_media_arrives() {
    // scenario.md: `mount = "step"` volumes mount by a mount step; before it the drive reports
    // no media.
    let mut m = machine(8);
    let v =
        m.add_volume(VolumeSpec::new("E:", FsKind::Exfat).mount(MountWhen::Step).file("f", b"1"));
    m.boot();
    assert!(mounted_events(&m).is_empty());
    assert_eq!(m.create(v, "f", CreateOptions::open()).status, Status::NO_MEDIA_IN_DEVICE);
    assert_eq!(m.mount(v), Status::SUCCESS);
    assert_eq!(mounted_events(&m), vec![("E:".into(), "exfat".into(), Status::SUCCESS)]);
    assert!(m.open(v, "f", CreateOptions::open()).is_ok());
}

#[test]
fn volumes_added_after_boot_get_their_services_and_devices() {
    let mut m = machine(9);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Udfs).file("disc.txt", b"udf"));
    let p = m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    let _ = c;
    let h = m.open(d, "disc.txt", CreateOptions::open().access(0x8000_0000)).unwrap();
    assert_eq!(m.read(h, None, 10, IoMode::Cached).data, b"udf");
    assert!(m.open(p, "pipe1", CreateOptions::default()).is_ok());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_filter_without_fast_io_routines_on_a_cached_file_is_a_bugcheck() {
    // facts.md §1.7: a filter must supply the fast-I/O routines (returning FALSE when it does not
    // serve them); Windows' NtReadFile calls the top device's FastIoRead without a check once the
    // file object is cached. The first cached read (an IRP, which initiates caching) is fine; the
    // second finds no routine.
    let mut m = machine(9);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"abcdef"));
    m.boot();
    bare::TARGET
        .with(|t| t.set(m.kernel(|k| k.objects.device(k.volume(c).vdo.unwrap()).ptr as usize)));
    m.install(fsfilter_sim::ServiceSpec::new("NoFastIo", bare::entry, "legacy"));
    assert_eq!(m.start("NoFastIo"), Status::SUCCESS);
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 3, IoMode::Cached).data, b"abc");
    assert!(m.findings().is_empty(), "the first cached read is an IRP: {:?}", m.findings());
    // The simulator reports it and goes on with an IRP.
    let r = m.read(h, Some(3), 3, IoMode::Cached);
    assert_eq!((r.data.as_slice(), r.fast_io), (&b"def"[..], false));
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(fsfilter_sim::Rule::Bugcheck, Some("NoFastIo".into()))]);
}

#[test]
fn a_volume_device_initialized_late_refuses_attaches_until_its_file_system_clears_it_facts_1_5() {
    // facts.md §1.3: an attach to a stack whose top is still DO_DEVICE_INITIALIZING fails with
    // STATUS_NO_SUCH_DEVICE; §1.5: right after a mount the volume device can still be
    // initializing, so filters retry. `VolumeSpec::initialize_late`: NTFS clears the flag from
    // a worker 250 ms after the mount. A hand-written filter tries every 100 ms.
    let mut m = machine(13);
    let spec = VolumeSpec::new("E:", FsKind::Ntfs).file("a.txt", b"late").mount(MountWhen::Step);
    let v = m.add_volume(spec.initialize_late(250));
    m.boot();
    assert_eq!(m.mount(v), Status::SUCCESS);
    let mounted_at = m.now_ms();
    let vdo = m.kernel(|k| k.volume(v).vdo.unwrap());
    let flags = m.kernel(|k| k.objects.dobj(vdo).Flags);
    assert_ne!(flags & 0x80, 0, "the volume device is still initializing after the mount");
    // The volume serves I/O meanwhile (the I/O manager checks the storage device, not the
    // volume device).
    let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).unwrap();
    let r = m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"late"[..]));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    retrying::reset(m.kernel(|k| k.objects.device(vdo).ptr as usize));
    m.install(fsfilter_sim::ServiceSpec::new("Retry", retrying::entry, "legacy"));
    assert_eq!(m.start("Retry"), Status::SUCCESS);
    let attempts = retrying::ATTEMPTS.with(|a| a.borrow().clone());
    let statuses: Vec<Status> = attempts.iter().map(|a| Status(a.0)).collect();
    let ns = Status::NO_SUCH_DEVICE;
    assert_eq!(statuses, [ns, ns, ns, Status::SUCCESS], "{attempts:?}");
    for (status, at) in &attempts {
        let initialized = *at >= mounted_at + 250;
        assert_eq!(*status >= 0, initialized, "{attempts:?}, mounted at {mounted_at} ms");
    }
    m.kernel(|k| {
        assert_eq!(k.objects.dobj(vdo).Flags & 0x80, 0);
        let top = k.objects.top(vdo);
        assert_eq!(k.objects.driver(k.objects.device(top).driver).service, "Retry");
    });
    let cleared = m.events().into_iter().find_map(|e| match e.kind {
        EventKind::System { what: "volume_device_initialized", driver, volume, .. } => {
            Some((driver, volume, e.time / 10_000))
        }
        _ => None,
    });
    assert_eq!(cleared, Some((Some("Ntfs".into()), Some("E:".into()), mounted_at + 250)));
    // The filter sees the volume's I/O from then on.
    let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).unwrap();
    let r = m.read(h, Some(0), 4, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"late"[..]));
    assert!(retrying::SEEN.get() >= 2, "create and read through the filter");
    // The file system's own window is no driver's mistake.
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_volume_device_still_initializing_after_its_file_system_worker_is_a_finding() {
    // The window of `initialize_late` ends with the file system's worker: a volume device that
    // is initializing after it (as one its file system never cleared) refuses the attach and is
    // reported against the file system (docs/simulator.md, "Mounting").
    let mut m = machine(14);
    let spec = VolumeSpec::new("E:", FsKind::Ntfs).mount(MountWhen::Step).initialize_late(50);
    let v = m.add_volume(spec);
    m.boot();
    assert_eq!(m.mount(v), Status::SUCCESS);
    m.settle();
    let vdo = m.kernel(|k| k.volume(v).vdo.unwrap());
    m.kernel(|k| k.objects.dobj(vdo).Flags |= 0x80);
    retrying::reset(m.kernel(|k| k.objects.device(vdo).ptr as usize));
    m.install(fsfilter_sim::ServiceSpec::new("Retry", retrying::entry, "legacy"));
    assert_eq!(m.start("Retry"), Status::SUCCESS);
    let attempts = retrying::ATTEMPTS.with(|a| a.borrow().clone());
    assert!(attempts.iter().all(|a| a.0 == Status::NO_SUCH_DEVICE.0), "{attempts:?}");
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(fsfilter_sim::Rule::AttachToInitializingDevice, Some("Ntfs".into()))]);
}

/// A legacy filter that attaches in its `DriverEntry` to the device in [`retrying::reset`],
/// trying up to ten times 100 ms apart while the attach fails, as sfilter retries (facts.md
/// §1.5); it records each try and passes every IRP down.
mod retrying {
    use std::cell::{Cell, RefCell};
    use std::ptr::null_mut;
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP};
    use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

    thread_local! {
        static TARGET: Cell<usize> = const { Cell::new(0) };
        static LOWER: Cell<usize> = const { Cell::new(0) };
        /// Each attach: its status and the virtual time, in ms since boot.
        pub(crate) static ATTEMPTS: RefCell<Vec<(NTSTATUS, u64)>> = const { RefCell::new(Vec::new()) };
        /// IRPs passed down.
        pub(crate) static SEEN: Cell<u32> = const { Cell::new(0) };
    }

    /// Sets the device to attach to and forgets earlier tries.
    pub(crate) fn reset(target: usize) {
        TARGET.set(target);
        LOWER.set(0);
        ATTEMPTS.with(|a| a.borrow_mut().clear());
        SEEN.set(0);
    }

    unsafe extern "system" fn pass(_d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        SEEN.set(SEEN.get() + 1);
        // SAFETY: the live IRP; our lower device.
        unsafe {
            fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp);
            fsfilter_kernel::irp::IoCallDriver(LOWER.get() as *mut _, irp)
        }
    }

    fn now_ms() -> u64 {
        // 1 January 2026 in 100 ns units since 1601: the simulator's boot time.
        const EPOCH_2026: i64 = 134_116_128_000_000_000;
        let mut t = 0i64;
        // SAFETY: our out parameter.
        unsafe { windows_sys::Wdk::System::SystemServices::KeQuerySystemTimePrecise(&mut t) };
        u64::try_from((t - EPOCH_2026) / 10_000).unwrap_or(0)
    }

    pub(crate) unsafe extern "system" fn entry(
        driver: *const DRIVER_OBJECT,
        _p: *const UNICODE_STRING,
    ) -> NTSTATUS {
        use windows_sys::Wdk::System::SystemServices::{
            IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice, KeDelayExecutionThread,
        };
        let mut me: *mut DEVICE_OBJECT = null_mut();
        // SAFETY: valid arguments.
        unsafe {
            for f in (*driver.cast_mut()).MajorFunction.iter_mut() {
                *f = Some(pass);
            }
            let s = IoCreateDevice(driver, 0, std::ptr::null(), 8, 0, false, &mut me);
            assert_eq!(s, 0);
        }
        for attempt in 0..10 {
            if attempt > 0 {
                let interval = -100 * 10_000i64;
                // SAFETY: PASSIVE_LEVEL, a relative wait.
                unsafe { KeDelayExecutionThread(0, false, &interval) };
            }
            let mut lower = null_mut();
            // SAFETY: our device and the target, both live.
            let s =
                unsafe { IoAttachDeviceToDeviceStackSafe(me, TARGET.get() as *mut _, &mut lower) };
            ATTEMPTS.with(|a| a.borrow_mut().push((s, now_ms())));
            if s >= 0 {
                LOWER.set(lower as usize);
                return 0;
            }
        }
        // SAFETY: our device, never attached.
        unsafe { IoDeleteDevice(me) };
        0
    }
}

/// A bare legacy filter written as a C author in a hurry would: every IRP passed down, no
/// fast-I/O table at all (so no `FastIoDetachDevice` and no `FastIoRead`), attached in its
/// `DriverEntry` to the device in [`bare::TARGET`].
mod bare {
    use std::ptr::null_mut;
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP};
    use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

    thread_local! {
        /// The device to attach to.
        pub(crate) static TARGET: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        static LOWER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    unsafe extern "system" fn pass(_d: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        // SAFETY: the live IRP; our lower device.
        unsafe {
            fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp);
            fsfilter_kernel::irp::IoCallDriver(LOWER.with(|l| l.get()) as *mut _, irp)
        }
    }

    pub(crate) unsafe extern "system" fn entry(
        driver: *const DRIVER_OBJECT,
        _p: *const UNICODE_STRING,
    ) -> NTSTATUS {
        let mut me: *mut DEVICE_OBJECT = null_mut();
        // SAFETY: valid arguments; no FastIoDispatch is set.
        unsafe {
            for f in (*driver.cast_mut()).MajorFunction.iter_mut() {
                *f = Some(pass);
            }
            windows_sys::Wdk::System::SystemServices::IoCreateDevice(
                driver,
                0,
                std::ptr::null(),
                8,
                0,
                false,
                &mut me,
            );
            let mut lower = null_mut();
            let s = windows_sys::Wdk::System::SystemServices::IoAttachDeviceToDeviceStackSafe(
                me,
                TARGET.with(|t| t.get()) as *mut _,
                &mut lower,
            );
            if s >= 0 {
                (*me).StackSize = (*lower).StackSize + 1;
            }
            LOWER.with(|l| l.set(lower as usize));
            s
        }
    }
}

thread_local! {
    /// Calls of `slow_notify` so far; the first one delays.
    static SLOW_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A file-system notification routine whose first call lets 10 ms pass (a driver that opens
/// something or waits for an event there).
unsafe extern "system" fn slow_notify(
    _cdo: *const windows_sys::Wdk::Foundation::DEVICE_OBJECT,
    _active: bool,
) {
    SLOW_CALLS.set(SLOW_CALLS.get() + 1);
    if SLOW_CALLS.get() == 1 {
        let ten_ms: i64 = -100_000;
        // SAFETY: a relative interval, at PASSIVE_LEVEL in the registering thread.
        let _ = unsafe {
            windows_sys::Wdk::System::SystemServices::KeDelayExecutionThread(0, false, &ten_ms)
        };
    }
}

/// A driver that registers `slow_notify`, synchronized with mounts.
unsafe extern "system" fn slow_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> windows_sys::Win32::Foundation::NTSTATUS {
    // SAFETY: our driver object and routine.
    unsafe {
        windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChangeMountAware(
            driver,
            Some(slow_notify),
            true,
        )
    }
}

#[test]
fn a_mount_during_a_synchronized_notification_call_in_a_suspended_thread_fails_not_ready() {
    // docs/simulator.md, "File-system registration": a mount waits for the synchronized
    // registrations under way by doing their remaining calls itself; one whose notification call
    // is running in a thread suspended below (here delayed 10 ms) cannot be waited for, and the
    // mount fails with STATUS_DEVICE_NOT_READY, as a second mount of a device under way does.
    // Once the registration is over, the volume mounts.
    SLOW_CALLS.set(0);
    let mut m = machine(13);
    let v = m
        .add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"x").mount(MountWhen::Step));
    let mut spec = fsfilter_sim::ServiceSpec::new("Slow", slow_entry, "legacy");
    spec.group = Some("FSFilter Activity Monitor".into());
    m.install(spec);
    m.boot();
    let during = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = during.clone();
    m.schedule(5, move |m| seen.set(Some(m.mount(v))));
    assert_eq!(m.start("Slow"), Status::SUCCESS);
    m.settle();
    assert!(SLOW_CALLS.get() >= 1, "the routine was called");
    assert_eq!(during.get(), Some(Status::DEVICE_NOT_READY), "the mount during the delayed call");
    assert_eq!(mounted_events(&m).len(), 0, "{:?}", mounted_events(&m));
    assert_eq!(m.mount(v), Status::SUCCESS, "after the registration");
    assert!(m.open(v, "a.txt", CreateOptions::open()).is_ok());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_shutdown_goes_to_the_top_of_the_volume_stack() {
    // docs/simulator.md (User-mode I/O, Shutdown), a choice: IRP_MJ_SHUTDOWN is sent to the top
    // of the volume's stack (Windows sends it to the devices registered with
    // IoRegisterShutdownNotification), so a filter attached to the volume sees it.
    let mut m = machine_with_spy(9);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let top = m.kernel(|k| {
        let vdo = k.volume(c).vdo.unwrap();
        k.objects.device(k.objects.top(vdo)).ptr as usize
    });
    spy(|s| s.seen.clear());
    assert_eq!(m.io(fsfilter_sim::IoRequest::Shutdown { volume: c }).status, Status::SUCCESS);
    let seen = spy(|s| s.seen.clone());
    let shutdowns: Vec<usize> = seen.iter().filter(|s| s.major == 0x10).map(|s| s.device).collect();
    assert_eq!(shutdowns, [top], "the spy's volume device, the top of C:'s stack");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_mount_failure_other_than_unrecognized_stops_the_walk() {
    // docs/simulator.md (Mounting), a choice after ReactOS: STATUS_UNRECOGNIZED_VOLUME moves on to
    // the next file system, any other failure stops the walk with that status. The spy, on top of
    // every control device, fails the mount of the first one tried: no other file system is
    // asked, and the create that mounted fails with that status. Without the failure the volume
    // mounts.
    let mut m = machine_with_spy(11);
    let x = m.add_volume(VolumeSpec::new("X:", FsKind::Ntfs).mount(MountWhen::Step));
    m.boot();
    spy(|s| {
        s.seen.clear();
        s.fail_mounts = Some(Status::ACCESS_DENIED);
    });
    assert_eq!(m.mount(x), Status::ACCESS_DENIED);
    let asked = spy(|s| s.seen.iter().filter(|s| s.major == 0x0d && s.minor == 0x01).count());
    assert_eq!(asked, 1, "the walk stopped at the first control device");
    assert!(m.kernel(|k| k.volume(x).vdo.is_none()), "not mounted");
    spy(|s| s.fail_mounts = None);
    assert_eq!(m.mount(x), Status::SUCCESS);
    assert!(m.kernel(|k| k.volume(x).vdo.is_some()));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A legacy filter on every file system's control device (attached from its
/// `IoRegisterFsRegistrationChange` routine, detached when the file system goes) that lets 10 ms
/// pass before it passes the first mount request it sees down, as a filter that waits for
/// something in its mount path does; every other request goes down at once.
mod delaying {
    use std::cell::Cell;
    use std::ptr::null_mut;
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, FAST_IO_DISPATCH, IRP};
    use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

    thread_local! {
        static DRIVER: Cell<usize> = const { Cell::new(0) };
        /// Mount requests seen so far.
        pub(crate) static MOUNTS: Cell<u32> = const { Cell::new(0) };
    }

    fn lower(device: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        // SAFETY: one of our devices, whose extension holds the device below.
        unsafe { *(*device).DeviceExtension.cast::<*mut DEVICE_OBJECT>() }
    }

    unsafe extern "system" fn dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        // SAFETY: the live IRP in our dispatch routine.
        let sl = unsafe { &*fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp) };
        if sl.MajorFunction == 0x0d && sl.MinorFunction == 0x01 {
            MOUNTS.set(MOUNTS.get() + 1);
            if MOUNTS.get() == 1 {
                let ten_ms: i64 = -100_000;
                // SAFETY: a relative interval, at PASSIVE_LEVEL in the mounting thread.
                let _ = unsafe {
                    windows_sys::Wdk::System::SystemServices::KeDelayExecutionThread(
                        0, false, &ten_ms,
                    )
                };
            }
        }
        // SAFETY: the live IRP; our lower device.
        unsafe {
            fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp);
            fsfilter_kernel::irp::IoCallDriver(lower(device), irp)
        }
    }

    unsafe extern "system" fn notify(cdo: *const DEVICE_OBJECT, active: bool) {
        use windows_sys::Wdk::System::SystemServices::{
            IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice, IoDetachDevice,
        };
        let driver = DRIVER.get() as *const DRIVER_OBJECT;
        if active {
            let mut me: *mut DEVICE_OBJECT = null_mut();
            // SAFETY: our driver; an unnamed device of the control device's type, attached
            // above it, its extension filled before the flag is cleared.
            unsafe {
                let size = size_of::<*mut DEVICE_OBJECT>() as u32;
                let ty = (*cdo).DeviceType;
                if IoCreateDevice(driver, size, std::ptr::null(), ty, 0, false, &mut me) != 0 {
                    return;
                }
                let slot = (*me).DeviceExtension.cast::<*mut DEVICE_OBJECT>();
                if IoAttachDeviceToDeviceStackSafe(me, cdo.cast_mut(), slot) != 0 {
                    IoDeleteDevice(me);
                    return;
                }
                (*me).Flags &= !0x80;
            }
            return;
        }
        // SAFETY: walking the control device's attachment chain for our device.
        unsafe {
            let mut cur = (*cdo).AttachedDevice;
            while !cur.is_null() {
                if std::ptr::eq((*cur).DriverObject, driver) {
                    IoDetachDevice(lower(cur));
                    IoDeleteDevice(cur);
                    return;
                }
                cur = (*cur).AttachedDevice;
            }
        }
    }

    unsafe extern "system" fn detach(source: *const DEVICE_OBJECT, target: *const DEVICE_OBJECT) {
        // SAFETY: our device attached to `target`.
        unsafe {
            windows_sys::Wdk::System::SystemServices::IoDetachDevice(target.cast_mut());
            windows_sys::Wdk::System::SystemServices::IoDeleteDevice(source);
        }
    }

    static FAST_IO: FAST_IO_DISPATCH = {
        // SAFETY: all-zero is a table of absent routines.
        let mut t: FAST_IO_DISPATCH = unsafe { std::mem::zeroed() };
        t.SizeOfFastIoDispatch = size_of::<FAST_IO_DISPATCH>() as u32;
        t.FastIoDetachDevice = Some(detach);
        t
    };

    pub(crate) unsafe extern "system" fn entry(
        driver: *const DRIVER_OBJECT,
        _p: *const UNICODE_STRING,
    ) -> NTSTATUS {
        DRIVER.set(driver as usize);
        MOUNTS.set(0);
        // SAFETY: our driver object during DriverEntry, and our routine.
        unsafe {
            for f in (*driver.cast_mut()).MajorFunction.iter_mut() {
                *f = Some(dispatch);
            }
            (*driver.cast_mut()).FastIoDispatch = (&raw const FAST_IO).cast_mut();
            windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange(
                driver,
                Some(notify),
            )
        }
    }
}

#[test]
fn a_mount_walk_starts_over_when_the_file_system_queue_changed_during_a_request() {
    // facts.md §1.1 (a registration counter is bumped at each registration) and §1.4 (ReactOS
    // IopMountVolume, the reference): the walk notes the counter before each mount request and,
    // when the request failed and file systems registered or unregistered meanwhile, starts over
    // at the head of the queue instead of walking the entries it read before. Here the first
    // mount request of F: waits 10 ms in a filter on the first recognizer; meanwhile another
    // thread mounts G:, which loads FastFat: \Fat goes to the head of the disk queue and the FAT
    // recognizer is unregistered and deleted. F: must then mount with FastFat, not be sent to the
    // deleted recognizer and miss \Fat.
    let mut m = machine(15);
    let f =
        m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("a.txt", b"f").mount(MountWhen::Step));
    let g =
        m.add_volume(VolumeSpec::new("G:", FsKind::Fat).file("b.txt", b"g").mount(MountWhen::Step));
    m.install(fsfilter_sim::ServiceSpec::new("Delaying", delaying::entry, "legacy"));
    m.boot();
    assert_eq!(m.start("Delaying"), Status::SUCCESS);
    let other = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = other.clone();
    m.schedule(2, move |m| seen.set(Some(m.mount(g))));
    assert_eq!(m.mount(f), Status::SUCCESS, "{:?}", mounted_events(&m));
    assert_eq!(other.get(), Some(Status::SUCCESS), "G: mounted meanwhile");
    assert!(delaying::MOUNTS.get() >= 2);
    let mounted = mounted_events(&m);
    assert!(mounted.contains(&("F:".into(), "fastfat".into(), Status::SUCCESS)), "{mounted:?}");
    assert!(mounted.contains(&("G:".into(), "fastfat".into(), Status::SUCCESS)), "{mounted:?}");
    assert!(m.open(f, "a.txt", CreateOptions::open()).is_ok());
    assert!(m.open(g, "b.txt", CreateOptions::open()).is_ok());
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A legacy filter on every file system's control device that, once a mount request it sent
/// down came back successful, opens the volume by its storage device's name from its mount path
/// (`IoGetDeviceObjectPointer`), before passing the result up.
mod reopening {
    use std::cell::Cell;
    use std::ffi::c_void;
    use std::ptr::null_mut;
    use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, IRP, KEVENT};
    use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

    thread_local! {
        static DRIVER: Cell<usize> = const { Cell::new(0) };
        /// The status of the open made from the mount path, once made.
        pub(crate) static OPENED: Cell<Option<i32>> = const { Cell::new(None) };
    }

    fn lower(device: *const DEVICE_OBJECT) -> *mut DEVICE_OBJECT {
        // SAFETY: one of our devices, whose extension holds the device below.
        unsafe { *(*device).DeviceExtension.cast::<*mut DEVICE_OBJECT>() }
    }

    unsafe extern "system" fn done(_d: *mut DEVICE_OBJECT, _i: *mut IRP, c: *mut c_void) -> i32 {
        // SAFETY: the waiting dispatch routine's event.
        unsafe { windows_sys::Wdk::System::SystemServices::KeSetEvent(c.cast(), 0, false) };
        fsfilter::Status::MORE_PROCESSING_REQUIRED.0
    }

    unsafe extern "system" fn dispatch(device: *const DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
        use fsfilter_kernel::irp::{IoCallDriver, IoCompleteRequest};
        // SAFETY: the live IRP in our dispatch routine.
        let sl = unsafe { &*fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp) };
        if sl.MajorFunction != 0x0d || sl.MinorFunction != 0x01 {
            // SAFETY: the live IRP; our lower device.
            return unsafe {
                fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp);
                IoCallDriver(lower(device), irp)
            };
        }
        // SAFETY: zeroed storage for an event, alive until the wait ends.
        let mut event: KEVENT = unsafe { std::mem::zeroed() };
        // SAFETY: our event; the live IRP with a lower location; our routine.
        let s = unsafe {
            windows_sys::Wdk::System::SystemServices::KeInitializeEvent(&mut event, 0, false);
            fsfilter_kernel::irp::IoCopyCurrentIrpStackLocationToNext(irp);
            let ctx = (&raw mut event).cast();
            fsfilter_kernel::irp::IoSetCompletionRoutine(irp, done, ctx, true, true, true);
            IoCallDriver(lower(device), irp)
        };
        if s == fsfilter::Status::PENDING.0 {
            // SAFETY: our event.
            unsafe {
                windows_sys::Wdk::System::SystemServices::KeWaitForSingleObject(
                    (&raw const event).cast(),
                    0,
                    0,
                    false,
                    std::ptr::null(),
                )
            };
        }
        // SAFETY: the IRP is ours again (the routine stopped its completion).
        let status = unsafe { (*irp).IoStatus.Anonymous.Status };
        if status >= 0 && OPENED.get().is_none() {
            let units: Vec<u16> = r"\Device\HarddiskVolume1".encode_utf16().collect();
            let name = fsfilter_sim::mem::unicode(&units);
            let (mut fo, mut dev) = (null_mut(), null_mut());
            // SAFETY: a valid name and out parameters, at PASSIVE_LEVEL.
            let s = unsafe {
                windows_sys::Wdk::System::SystemServices::IoGetDeviceObjectPointer(
                    &name,
                    0x8000_0000,
                    &mut fo,
                    &mut dev,
                )
            };
            OPENED.set(Some(s));
            if s >= 0 {
                // SAFETY: the reference the open returned.
                unsafe {
                    windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(fo.cast())
                };
            }
        }
        // SAFETY: completing the IRP our routine held.
        unsafe { IoCompleteRequest(irp, 0) };
        status
    }

    unsafe extern "system" fn notify(cdo: *const DEVICE_OBJECT, active: bool) {
        use windows_sys::Wdk::System::SystemServices::{
            IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice,
        };
        if !active {
            return;
        }
        let driver = DRIVER.get() as *const DRIVER_OBJECT;
        let mut me: *mut DEVICE_OBJECT = null_mut();
        // SAFETY: our driver; an unnamed device of the control device's type, attached above it.
        unsafe {
            let size = size_of::<*mut DEVICE_OBJECT>() as u32;
            let ty = (*cdo).DeviceType;
            if IoCreateDevice(driver, size, std::ptr::null(), ty, 0, false, &mut me) != 0 {
                return;
            }
            let slot = (*me).DeviceExtension.cast::<*mut DEVICE_OBJECT>();
            if IoAttachDeviceToDeviceStackSafe(me, cdo.cast_mut(), slot) != 0 {
                IoDeleteDevice(me);
                return;
            }
            (*me).Flags &= !0x80;
        }
    }

    pub(crate) unsafe extern "system" fn entry(
        driver: *const DRIVER_OBJECT,
        _p: *const UNICODE_STRING,
    ) -> NTSTATUS {
        DRIVER.set(driver as usize);
        OPENED.set(None);
        // SAFETY: our driver object during DriverEntry, and our routine.
        unsafe {
            for f in (*driver.cast_mut()).MajorFunction.iter_mut() {
                *f = Some(dispatch);
            }
            windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange(
                driver,
                Some(notify),
            )
        }
    }
}

#[test]
fn an_open_of_the_volume_from_its_own_mount_path_is_a_deadlock() {
    // facts.md §1.4 (ReactOS IopMountVolume): the I/O manager holds the real device's lock for
    // the whole walk, and VPB_MOUNTED is set only once the request is back. An open of the
    // volume from a filter's mount path, in the mounting thread, finds the VPB unmounted, mounts
    // again and waits for the lock its own thread holds: on Windows the thread hangs. It must
    // not mount the volume a second time (a second volume device for one VPB).
    let mut m = machine(16);
    let c = m
        .add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"c").mount(MountWhen::Step));
    m.install(fsfilter_sim::ServiceSpec::new("Reopening", reopening::entry, "legacy"));
    m.boot();
    assert_eq!(m.start("Reopening"), Status::SUCCESS);
    let _ = m.mount(c);
    let opened = reopening::OPENED.get();
    let vdos = m.kernel(|k| {
        k.objects.devices.iter().filter(|d| !d.deleted && d.role == DeviceRole::FsVolume).count()
    });
    let mounted = mounted_events(&m);
    assert_eq!(vdos, 1, "one volume device; the open from the mount path: {opened:?}, {mounted:?}");
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(fsfilter_sim::Rule::Deadlock, Some("Reopening".into()))]);
}

#[test]
fn a_mount_completed_successfully_without_a_volume_device_is_a_bugcheck() {
    // facts.md §1.4 (ReactOS IopMountVolume, IopMountInitializeVpb): on a successful mount the
    // I/O manager marks the real device's VPB mounted and sets the stack size of
    // `Vpb->DeviceObject`, the volume device the file system put there. A filter that completes
    // the mount request with STATUS_SUCCESS itself, without the file system, leaves that field
    // NULL: Windows dereferences it and bugchecks. The simulator must report it and not mark
    // the VPB mounted with no volume device (creates would go to the storage device itself).
    let mut m = machine_with_spy(17);
    let x = m
        .add_volume(VolumeSpec::new("X:", FsKind::Ntfs).file("a.txt", b"x").mount(MountWhen::Step));
    m.boot();
    spy(|s| s.fail_mounts = Some(Status::SUCCESS));
    assert!(!m.mount(x).is_success(), "no volume device: the mount failed");
    m.kernel(|k| {
        let storage = k.volume(x).storage.unwrap();
        // SAFETY: the storage device's VPB.
        let (flags, dev) = unsafe {
            let v = k.objects.dobj(storage).Vpb;
            ((*v).Flags, (*v).DeviceObject)
        };
        assert_eq!((flags & 1, dev), (0, std::ptr::null_mut()), "the VPB is not mounted");
    });
    let rules: Vec<_> = m.findings().into_iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(rules, [(fsfilter_sim::Rule::Bugcheck, Some("Spy".into()))]);
    // Once the spy lets the request through, the volume mounts.
    spy(|s| s.fail_mounts = None);
    assert_eq!(m.mount(x), Status::SUCCESS);
    assert!(m.open(x, "a.txt", CreateOptions::open()).is_ok());
}

#[test]
fn a_storage_device_name_in_use_by_another_volume_is_refused_in_either_order() {
    // docs/simulator.md (Volumes and media, Names): a DOS-named disk volume gets
    // \Device\HarddiskVolumeN (N from 1), a CD \Device\CdRomN (N from 0), and a `\Device\...`
    // name is the storage device's own. Two storage devices cannot share a name: a volume whose
    // device would take one another volume has is refused, whichever comes first, and the
    // volumes already there work.
    use fsfilter_sim::VolumeError;
    let mut m = machine(18);
    let d = m.add_volume(VolumeSpec::new(r"\Device\HarddiskVolume1", FsKind::Ntfs).file("d", b"d"));
    let c = m.try_add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let (dev, name) =
        (r"\Device\HarddiskVolume1".to_owned(), r"\Device\HarddiskVolume1".to_owned());
    assert_eq!(c.err(), Some(VolumeError::DeviceInUse(dev, name)));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Cdfs).file("e", b"e"));
    let cd = m.try_add_volume(VolumeSpec::new(r"\device\cdrom0", FsKind::Udfs));
    assert_eq!(cd.err(), Some(VolumeError::DeviceInUse(r"\device\cdrom0".into(), "E:".into())));
    m.boot();
    // The numbers go to DOS-named volumes in order: the next one would take the same device.
    let f = m.try_add_volume(VolumeSpec::new("F:", FsKind::Ntfs));
    assert!(matches!(f, Err(VolumeError::DeviceInUse(..))), "{f:?}");
    for (v, file) in [(d, "d"), (e, "e")] {
        assert!(m.open(v, file, CreateOptions::open().access(0x8000_0000)).is_ok(), "{file}");
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn an_open_of_a_locked_volume_is_refused_by_the_io_manager_before_any_request() {
    // ReactOS IopCheckVpbMounted (facts.md S5, the reference for §1.4): once the volume is
    // mounted, an open through a VPB marked VPB_LOCKED (FSCTL_LOCK_VOLUME) fails with
    // STATUS_ACCESS_DENIED in the I/O manager's parse, before any IRP: no filter sees the create.
    // After FSCTL_UNLOCK_VOLUME opens go through again.
    use fsfilter_sim::IoRequest;
    let mut m = machine_with_spy(19);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"c"));
    m.boot();
    let v = m.open(c, "", CreateOptions::open()).unwrap();
    let fsctl = |code| IoRequest::Fsctl { handle: v, code, input: &[], output_length: 0 };
    assert_eq!(m.io(fsctl(0x0009_0018)).status, Status::SUCCESS, "FSCTL_LOCK_VOLUME");
    spy(|s| s.seen.clear());
    assert_eq!(m.create(c, "a.txt", CreateOptions::open()).status, Status::ACCESS_DENIED);
    assert_eq!(m.create(c, "", CreateOptions::open()).status, Status::ACCESS_DENIED);
    let creates = spy(|s| s.seen.iter().filter(|x| x.major == 0).count());
    assert_eq!(creates, 0, "no create request reached the volume's stack");
    assert_eq!(m.io(fsctl(0x0009_001C)).status, Status::SUCCESS, "FSCTL_UNLOCK_VOLUME");
    assert!(m.open(c, "a.txt", CreateOptions::open()).is_ok());
    assert_eq!(m.close_handle(v), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// The PnP manager's removal of a device with nothing mounted on it goes to the storage stack
/// only (ReactOS `IopRemoveDevice`: no mounted VPB, no file system to ask): no `IRP_MJ_PNP`
/// reaches a file system, the removal succeeds, and the media is gone until the device comes
/// back (`mount`), when the volume mounts as before. docs/simulator.md, "Removal of a volume
/// (PnP)".
#[test]
fn a_removal_with_nothing_mounted_sends_no_irp_and_takes_the_media_away() {
    let mut m = machine(7);
    let v =
        m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs).mount(MountWhen::Step).file("a", b"x"));
    m.boot();
    assert_eq!(m.remove_volume(v, false), Status::SUCCESS);
    let pnp = |m: &fsfilter_sim::Machine| {
        m.events()
            .iter()
            .filter(|e| {
                matches!(e.kind, EventKind::IoStart { major: fsfilter::MajorFunction::Pnp, .. })
            })
            .count()
    };
    assert_eq!(pnp(&m), 0);
    assert_eq!(m.create(v, "a", CreateOptions::open()).status, Status::NO_MEDIA_IN_DEVICE);
    assert_eq!(m.mount(v), Status::SUCCESS);
    let h = m.open(v, "a", CreateOptions::open()).expect("the volume mounts again");
    assert_eq!(m.close_handle(h), Status::SUCCESS);
}

/// A FAT volume removed safely (nothing open: the query-remove locks and dismounts it, the
/// volume device goes) mounts afresh when its device comes back, its files as they were.
#[test]
fn a_removed_fat_volume_mounts_afresh_when_its_device_comes_back() {
    let mut m = machine(7);
    let v = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("a.txt", b"fat"));
    m.boot();
    assert_eq!(m.remove_volume(v, false), Status::SUCCESS);
    m.settle();
    let dismounted = m.events().iter().any(|e| matches!(e.kind, EventKind::Dismounted { .. }));
    assert!(dismounted);
    assert_eq!(m.create(v, "a.txt", CreateOptions::open()).status, Status::NO_MEDIA_IN_DEVICE);
    assert_eq!(m.mount(v), Status::SUCCESS);
    let h = m.open(v, "a.txt", CreateOptions::open().access(0x8000_0000)).expect("mounted again");
    let r = m.read(h, Some(0), 3, IoMode::Cached);
    assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"fat"[..]));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
