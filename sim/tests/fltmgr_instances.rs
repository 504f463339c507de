//! Filter Manager, deliverable 2 — instances (facts.md §2.3, §2.5, §2.6, §10.2): automatic
//! attachment before FltStartFiltering returns and on new mounts, the instance Flags, manual
//! attachment, collisions, the setup callback's answer, the volume's flags and types, pipes and
//! mailslots, the revived volume.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use fltcommon::{Config, Seen, flt, install, machine, mj, seen};
use fsfilter::{Status, device_type};
use fsfilter_sim::{CreateOptions, EventKind, FltEvent, FsKind, MountWhen, Rule, VolumeSpec};

fn setups(slot: usize) -> Vec<(u32, u32, i32)> {
    seen(slot)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Setup { flags, device_type, fs_type, .. } => Some((flags, device_type, fs_type)),
            _ => None,
        })
        .collect()
}

#[test]
fn automatic_attachment_happens_before_start_filtering_returns_facts_2_5() {
    // facts.md §2.5: existing volumes are attached before FltStartFiltering returns, with
    // AUTOMATIC_ATTACHMENT, the volume's device type and FLT_FILESYSTEM_TYPE.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs));
    m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Auto", "370000"));
    assert_eq!(m.start("Auto"), Status::SUCCESS);
    let mut got = setups(0);
    got.sort();
    assert_eq!(
        got,
        [
            (1, device_type::CD_ROM_FILE_SYSTEM, 4),
            (1, device_type::DISK_FILE_SYSTEM, 2),
            (1, device_type::NETWORK_FILE_SYSTEM, 13),
        ]
    );
    // Every setup event comes before the driver's Load event (DriverEntry had not returned).
    let ev = m.events();
    let load = ev
        .iter()
        .position(|e| matches!(&e.kind, EventKind::Load { driver, .. } if driver == "Auto"))
        .unwrap();
    let last_setup = ev
        .iter()
        .rposition(|e| {
            matches!(&e.kind, EventKind::FltMgr { event: FltEvent::InstanceSetup { .. }, .. })
        })
        .unwrap();
    assert!(last_setup < load);
}

#[test]
fn a_new_mount_is_automatic_and_newly_mounted_facts_2_5() {
    // facts.md §2.5: a volume mounted later gets AUTOMATIC_ATTACHMENT | NEWLY_MOUNTED_VOLUME
    // (0x5; implied, unconfirmed: the simulator passes both).
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Fat).mount(MountWhen::Step));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Mounts", "370000"));
    assert_eq!(m.start("Mounts"), Status::SUCCESS);
    assert_eq!(setups(0), [(1, device_type::DISK_FILE_SYSTEM, 2)]);
    assert_eq!(m.mount(e), Status::SUCCESS);
    assert_eq!(setups(0)[1], (0x5, device_type::DISK_FILE_SYSTEM, 3));
}

#[test]
fn a_pended_mount_is_newly_mounted_too_facts_1_4_and_2_5() {
    // facts.md §1.4 step 3: a mount may complete asynchronously. The Filter Manager's frame waits
    // for the pended request in the control device's mount path, then attaches and sets up the
    // instance as for any new mount; the filter sees the volume's creates.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let e = m.add_volume(
        VolumeSpec::new("E:", FsKind::Fat).mount(MountWhen::Step).file("a.txt", b"e").pend_mount(6),
    );
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Mounts", "370000").op(mj::CREATE, true, false));
    assert_eq!(m.start("Mounts"), Status::SUCCESS);
    let before = m.now_ms();
    assert_eq!(m.mount(e), Status::SUCCESS);
    assert!(m.now_ms() >= before + 6, "the file system completed the mount 6 ms later");
    assert_eq!(setups(0)[1..], [(0x5, device_type::DISK_FILE_SYSTEM, 3)]);
    let creates =
        || seen(0).into_iter().filter(|s| matches!(s, Seen::Pre { major: mj::CREATE, .. })).count();
    let n = creates();
    assert!(m.open(e, "a.txt", CreateOptions::open()).is_ok());
    assert_eq!(creates(), n + 1, "the new instance saw the create");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn instance_flags_suppress_automatic_attachment_not_manual_facts_2_5() {
    // facts.md §2.5: Flags 0x1 suppresses automatic attachments; FilterAttach still attaches,
    // with MANUAL_ATTACHMENT.
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Manual", "370000");
    cfg.instance_flags = 1;
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Manual"), Status::SUCCESS);
    assert!(setups(0).is_empty());
    assert_eq!(m.filter_attach("Manual", c, None), Status::SUCCESS);
    assert_eq!(setups(0), [(2, device_type::DISK_FILE_SYSTEM, 2)]);
    // Attached: it sees I/O now.
    assert_eq!(m.filter_attach("Manual", c, None), Status::FLT_INSTANCE_NAME_COLLISION);
    assert_eq!(m.filter_attach("Manual", c, Some("no such")), Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(m.filter_attach("Nobody", c, None), Status::FLT_FILTER_NOT_FOUND);
}

#[test]
fn instance_flags_0x2_does_not_suppress_manual_attachment_facts_2_5() {
    // facts.md §2.5: Flags 0x2 "suppress manual attachment" is unconfirmed; docs/simulator.md
    // (Instances): the simulator does not honour it. With 0x3 automatic attachment is suppressed
    // (0x1) and a manual attach still succeeds; with 0x2 alone the instance attaches
    // automatically as with 0.
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("NoManual", "370000");
    cfg.instance_flags = 0x3;
    install(&mut m, 0, cfg);
    let mut cfg = Config::new("Auto", "360000");
    cfg.instance_flags = 0x2;
    install(&mut m, 1, cfg);
    assert_eq!(m.start("NoManual"), Status::SUCCESS);
    assert_eq!(m.start("Auto"), Status::SUCCESS);
    assert!(setups(0).is_empty());
    assert_eq!(setups(1), [(1, device_type::DISK_FILE_SYSTEM, 2)]);
    assert_eq!(m.filter_attach("NoManual", c, None), Status::SUCCESS);
    assert_eq!(setups(0), [(2, device_type::DISK_FILE_SYSTEM, 2)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_new_volume_sets_up_the_frames_filters_lowest_altitude_first() {
    // docs/simulator.md (Instances), a choice: on a new volume each frame sets up its filters
    // lowest altitude first, whatever order they started in.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Fat).mount(MountWhen::Step));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("High", "385000"));
    install(&mut m, 1, Config::new("Low", "320000"));
    install(&mut m, 2, Config::new("Middle", "370000"));
    for name in ["High", "Low", "Middle"] {
        assert_eq!(m.start(name), Status::SUCCESS);
    }
    fltcommon::order_clear();
    assert_eq!(m.mount(e), Status::SUCCESS);
    assert_eq!(fltcommon::order(), ["Low:setup", "Middle:setup", "High:setup"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn one_instance_per_altitude_per_volume_facts_2_3_and_10_2() {
    // facts.md §2.3: one instance per altitude per volume. §10.2: FltAttachVolume reports
    // STATUS_OBJECT_NAME_COLLISION, FltAttachVolumeAtAltitude STATUS_FLT_INSTANCE_ALTITUDE_COLLISION.
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("First", "370000"));
    let mut second = Config::new("Second", "370000");
    second.extra_instances = vec![("Second Other".into(), "370001".into(), 1)];
    install(&mut m, 1, second);
    assert_eq!(m.start("First"), Status::SUCCESS);
    assert_eq!(m.start("Second"), Status::SUCCESS);
    // Second's automatic attachment was refused before any callback.
    assert!(setups(1).is_empty());
    let refused = flt(&m, "flt_instance_setup")
        .into_iter()
        .find(|(d, _, _)| d.as_deref() == Some("Second"))
        .unwrap();
    assert!(matches!(
        refused.2,
        FltEvent::InstanceSetup {
            called: false,
            status: Status::FLT_INSTANCE_ALTITUDE_COLLISION,
            ..
        }
    ));
    // From the kernel: FltAttachVolume, FltAttachVolumeAtAltitude.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let mut vol = 0;
    let f = fltcommon::filter_handle(1);
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    let mut inst = 0;
    let s = unsafe { FltAttachVolume(f, vol, std::ptr::null(), &mut inst) };
    assert_eq!(Status(s), Status::OBJECT_NAME_COLLISION);
    let alt: Vec<u16> = "370000".encode_utf16().collect();
    let iname: Vec<u16> = "Second AtAlt".encode_utf16().collect();
    let s = unsafe {
        FltAttachVolumeAtAltitude(f, vol, &fltcommon::us(&alt), &fltcommon::us(&iname), &mut inst)
    };
    assert_eq!(Status(s), Status::FLT_INSTANCE_ALTITUDE_COLLISION);
    // A free altitude works, through FltAttachVolume with the other instance's name.
    let other: Vec<u16> = "Second Other".encode_utf16().collect();
    let s = unsafe { FltAttachVolume(f, vol, &fltcommon::us(&other), &mut inst) };
    assert_eq!(s, 0);
    assert_ne!(inst, 0);
    unsafe { FltObjectDereference(inst as *mut _) };
    unsafe { FltObjectDereference(vol as *mut _) };
    assert_eq!(setups(1), [(2, device_type::DISK_FILE_SYSTEM, 2)]);
    // fltmc attach at a taken altitude.
    assert_eq!(
        m.filter_attach_at_altitude("Second", c, "370000", Some("x")),
        Status::FLT_INSTANCE_ALTITUDE_COLLISION
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn any_error_or_warning_refuses_a_null_callback_always_attaches_facts_2_5() {
    // facts.md §2.5: any error or warning status refuses the instance; success (informational
    // included) attaches; with a NULL InstanceSetupCallback the attachment is always made.
    let cases = [
        (Status::FLT_DO_NOT_ATTACH, false),
        (Status::BUFFER_OVERFLOW, false),
        (Status::OBJECT_NAME_EXISTS, true),
        (Status::SUCCESS, true),
    ];
    for (status, attached) in cases {
        let mut m = machine(1);
        let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a", b"a"));
        m.install_filter_manager();
        m.boot();
        let mut cfg = Config::new("Answer", "370000").op(mj::CREATE, true, false);
        cfg.setup_status = status;
        install(&mut m, 0, cfg);
        assert_eq!(m.start("Answer"), Status::SUCCESS);
        m.create(c, "a", CreateOptions::open());
        let pres = seen(0).iter().filter(|s| matches!(s, Seen::Pre { .. })).count();
        assert_eq!(pres > 0, attached, "{status}");
        let ev = flt(&m, "flt_instance_setup");
        assert!(
            matches!(ev[0].2, FltEvent::InstanceSetup { called: true, status: s, .. } if s == status)
        );
    }
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a", b"a"));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("NoSetup", "370000").op(mj::CREATE, true, false);
    cfg.setup = false;
    install(&mut m, 0, cfg);
    assert_eq!(m.start("NoSetup"), Status::SUCCESS);
    m.create(c, "a", CreateOptions::open());
    assert!(seen(0).iter().any(|s| matches!(s, Seen::Pre { major: 0, .. })));
    assert!(matches!(
        flt(&m, "flt_instance_setup")[0].2,
        FltEvent::InstanceSetup { called: false, status: Status::SUCCESS, .. }
    ));
}

#[test]
fn dev_and_trusted_volumes_are_flagged_facts_2_5() {
    // facts.md §2.5: 0x10 DEV_VOLUME and 0x20 TRUSTED_VOLUME from the volume's settings.
    let mut m = machine(1);
    let mut dev = VolumeSpec::new("V:", FsKind::Refs);
    dev.dev_drive = true;
    let mut trusted = VolumeSpec::new("T:", FsKind::Refs);
    trusted.dev_drive = true;
    trusted.trusted = true;
    m.add_volume(dev);
    m.add_volume(trusted);
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Dev", "370000"));
    assert_eq!(m.start("Dev"), Status::SUCCESS);
    let mut flags: Vec<(u32, i32)> = setups(0).into_iter().map(|(f, _, t)| (f, t)).collect();
    flags.sort();
    assert_eq!(flags, [(0x11, 28), (0x31, 28)]);
}

#[test]
fn pipes_and_mailslots_need_support_npfs_msfs_facts_2_6() {
    // facts.md §2.6: SUPPORT_NPFS_MSFS opts in to named pipes and mailslots; the Filter Manager
    // reaches them by name (docs/simulator.md). §6: data scan is not supported there.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs));
    m.add_volume(VolumeSpec::new(r"\Device\Mailslot", FsKind::Msfs));
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Plain", "370000"));
    let mut cfg = Config::new("Pipes", "370010");
    cfg.flags = 0x2;
    cfg.on_setup = Some(std::rc::Rc::new(|instance, _| {
        let s = unsafe {
            windows_sys::Wdk::Storage::FileSystem::Minifilters::FltRegisterForDataScan(instance)
        };
        fltcommon::order_push(format!("datascan:{}", Status(s)));
    }));
    install(&mut m, 1, cfg);
    assert_eq!(m.start("Plain"), Status::SUCCESS);
    assert_eq!(m.start("Pipes"), Status::SUCCESS);
    assert_eq!(setups(0), [(1, device_type::DISK_FILE_SYSTEM, 2)]);
    let mut got = setups(1);
    got.sort();
    assert_eq!(
        got,
        [
            (1, device_type::DISK_FILE_SYSTEM, 2),
            (1, device_type::MAILSLOT, 26),
            (1, device_type::NAMED_PIPE, 25)
        ]
    );
    let ds = fltcommon::order();
    assert_eq!(
        ds.iter().filter(|s| s.as_str() == "datascan:STATUS_NOT_SUPPORTED").count(),
        2,
        "{ds:?}"
    );
    assert_eq!(ds.iter().filter(|s| s.as_str() == "datascan:STATUS_SUCCESS").count(), 1, "{ds:?}");
    // Manual attachment of a filter without the flag is refused.
    let p = m.volume(r"\Device\NamedPipe").unwrap();
    assert_eq!(m.filter_attach("Plain", p, None), Status::NOT_SUPPORTED);
}

#[test]
fn a_revived_volume_is_set_up_again_as_detached_facts_2_5_and_1_4() {
    // facts.md §2.5: DETACHED_VOLUME for a FAT/CDFS volume dismounted with open files that is
    // attached again; §1.4: FastFat revives the previous mount.
    let mut m = machine(1);
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("a.txt", b"abc"));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Revive", "370000"));
    assert_eq!(m.start("Revive"), Status::SUCCESS);
    let h = m.open(f, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.dismount(f), Status::SUCCESS);
    // The dismount tore the instance down (VOLUME_DISMOUNT).
    assert!(seen(0).iter().any(|s| matches!(s, Seen::TeardownComplete { reason: 0x8, .. })));
    // The next open remounts: FastFat revives the old volume device, still alive (a file is
    // open), the frame is still attached: the instance is set up again as DETACHED_VOLUME.
    let h2 = m.open(f, "a.txt", CreateOptions::open()).unwrap();
    let flags: Vec<u32> = setups(0).into_iter().map(|(f, _, _)| f).collect();
    assert_eq!(flags, [0x1, 0x9]);
    m.close_handle(h2);
    m.close_handle(h);
}

#[test]
fn every_instance_without_flags_attaches_the_default_first_facts_2_5() {
    // facts.md §2.5: the default instance orders the attachments; instances whose Flags lack 0x1
    // attach automatically (as minispy's three instances do).
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Spy", "370000");
    cfg.extra_instances = vec![
        ("Spy Top".into(), "385100".into(), 0),
        ("Spy Bottom".into(), "361000".into(), 0),
        ("Spy Manual".into(), "365000".into(), 1),
    ];
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Spy"), Status::SUCCESS);
    let names: Vec<String> = flt(&m, "flt_instance_setup")
        .into_iter()
        .map(|(_, _, e)| match e {
            FltEvent::InstanceSetup { instance, .. } => instance,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(names, ["Spy Instance", "Spy Top", "Spy Bottom"]);
    let stack = m.device_stack(c);
    let fsfilter_sim::StackEntry::Frame { instances, .. } = &stack[0] else { panic!("{stack:?}") };
    let alts: Vec<&str> = instances.iter().map(|i| i.altitude.as_str()).collect();
    assert_eq!(alts, ["385100", "370000", "361000"]);
}

#[test]
fn volume_properties_and_file_system_type_facts_2_5() {
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Props", "370000");
    cfg.on_setup = Some(std::rc::Rc::new(|instance, _| {
        let mut vol = 0;
        assert_eq!(unsafe { FltGetVolumeFromInstance(instance, &mut vol) }, 0);
        let mut buf = vec![0u64; 64];
        let mut ret = 0u32;
        let s = unsafe {
            FltGetVolumeProperties(
                vol,
                buf.as_mut_ptr().cast(),
                size_of::<FLT_VOLUME_PROPERTIES>() as u32,
                &mut ret,
            )
        };
        assert_eq!(Status(s), Status::BUFFER_OVERFLOW);
        assert!(ret as usize > size_of::<FLT_VOLUME_PROPERTIES>());
        let s = unsafe { FltGetVolumeProperties(vol, buf.as_mut_ptr().cast(), 512, &mut ret) };
        assert_eq!(s, 0);
        let p = unsafe { &*buf.as_ptr().cast::<FLT_VOLUME_PROPERTIES>() };
        assert_eq!(p.DeviceType, device_type::DISK_FILE_SYSTEM);
        let real = unsafe { fsfilter_sim::mem::read_unicode(&p.RealDeviceName) };
        let driver = unsafe { fsfilter_sim::mem::read_unicode(&p.FileSystemDriverName) };
        fltcommon::order_push(format!("{driver} {real}"));
        let mut t = 0;
        assert_eq!(unsafe { FltGetFileSystemType(instance as *const _, &mut t) }, 0);
        assert_eq!(t, 2);
        unsafe { FltObjectDereference(vol as *mut _) };
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Props"), Status::SUCCESS);
    assert!(fltcommon::order().contains(&r"\FileSystem\Ntfs \Device\HarddiskVolume1".to_owned()));
}

#[test]
fn dereferencing_an_instance_or_filter_more_than_referenced_is_reported() {
    // FltObjectDereference's reference page: it drops a rundown reference the caller took
    // (FltObjectReference, FltAttachVolume, FltGetFilterFromInstance). One more than was taken
    // releases a rundown protection nobody holds: a finding (OBJECT_OVER_DEREFERENCED), as for
    // a volume, not a silent no-op.
    let mut m = machine(3);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Deref", "370000");
    cfg.extra_instances = vec![("Deref Other".into(), "370001".into(), 1)];
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Deref"), Status::SUCCESS);
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let mut vol = 0;
    let f = fltcommon::filter_handle(0);
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    let other: Vec<u16> = "Deref Other".encode_utf16().collect();
    let mut inst = 0;
    assert_eq!(unsafe { FltAttachVolume(f, vol, &fltcommon::us(&other), &mut inst) }, 0);
    let mut filter = 0;
    assert_eq!(unsafe { FltGetFilterFromInstance(inst, &mut filter) }, 0);
    unsafe { FltObjectDereference(vol as *mut _) };
    unsafe { FltObjectDereference(inst as *mut _) };
    unsafe { FltObjectDereference(filter as *mut _) };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    // One more on the instance: over-dereferenced.
    unsafe { FltObjectDereference(inst as *mut _) };
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::ObjectOverDereferenced]);
    // The filter's rundown is back where it was; drop every reference it holds, then one more.
    let held = m.kernel(|k| {
        let f = k.fltmgr.filter_of(f).unwrap();
        k.fltmgr.filter(f).rundown
    });
    for _ in 0..=held {
        unsafe { FltObjectDereference(f as *mut _) };
    }
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::ObjectOverDereferenced, Rule::ObjectOverDereferenced]);
}

#[test]
fn the_volume_of_an_instance_whose_volume_was_torn_down_is_flt_deleting_object() {
    // FltGetVolumeFromInstance's reference page: STATUS_FLT_DELETING_OBJECT when "the volume
    // that the minifilter driver instance is attached to is being torn down"; IRQL <=
    // APC_LEVEL. A filter may still hold a referenced instance of a dismounted volume.
    let mut m = machine(4);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Gv", "370000"));
    assert_eq!(m.start("Gv"), Status::SUCCESS);
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let f = fltcommon::filter_handle(0);
    let mut vol = 0;
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    let iname: Vec<u16> = "Gv Mine".encode_utf16().collect();
    let alt: Vec<u16> = "370005".encode_utf16().collect();
    let mut inst = 0;
    let s = unsafe {
        FltAttachVolumeAtAltitude(f, vol, &fltcommon::us(&alt), &fltcommon::us(&iname), &mut inst)
    };
    assert_eq!(s, 0);
    unsafe { FltObjectDereference(vol as *mut _) };
    let mut v2 = 0;
    assert_eq!(unsafe { FltGetVolumeFromInstance(inst, &mut v2) }, 0);
    unsafe { FltObjectDereference(v2 as *mut _) };
    // Above APC_LEVEL: reported.
    fsfilter_sim::kernel::with(|k| k.set_irql(2));
    assert_eq!(unsafe { FltGetVolumeFromInstance(inst, &mut v2) }, 0);
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    unsafe { FltObjectDereference(v2 as *mut _) };
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh]);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    m.settle();
    assert!(m.kernel(|k| {
        let v = k.fltmgr.volume_of(vol).unwrap();
        k.fltmgr.vol(v).gone
    }));
    let mut v3 = 0;
    let s = unsafe { FltGetVolumeFromInstance(inst, &mut v3) };
    assert_eq!(Status(s), Status::FLT_DELETING_OBJECT);
    unsafe { FltObjectDereference(inst as *mut _) };
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh]);
}

#[test]
fn referencing_an_object_being_torn_down_is_flt_deleting_object() {
    // FltObjectReference's reference page: STATUS_FLT_DELETING_OBJECT when "the minifilter
    // driver, instance, or volume is being torn down"; FltGetFilterFromInstance's: the same when
    // "the minifilter driver is being torn down". From the teardown-start callback of a manual
    // detach the instance is being torn down (its filter is not); from an unregistration's,
    // both are; a dismounted volume's record is gone.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(5);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Refs", "370000");
    cfg.on_teardown_start = Some(std::rc::Rc::new(|instance, reason| {
        let s = Status(unsafe { FltObjectReference(instance as *mut _) });
        if s.is_success() {
            unsafe { FltObjectDereference(instance as *mut _) };
        }
        let mut filter = 0;
        let g = Status(unsafe { FltGetFilterFromInstance(instance, &mut filter) });
        if g.is_success() {
            unsafe { FltObjectDereference(filter as *mut _) };
        }
        fltcommon::order_push(format!("{reason:#x} instance {s} filter {g}"));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Refs"), Status::SUCCESS);
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let f = fltcommon::filter_handle(0);
    let mut vol = 0;
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    assert_eq!(m.filter_detach("Refs", c, None), Status::SUCCESS);
    assert_eq!(m.filter_attach("Refs", c, None), Status::SUCCESS);
    assert_eq!(m.dismount(c), Status::SUCCESS);
    m.settle();
    let s = Status(unsafe { FltObjectReference(vol as *mut _) });
    if s.is_success() {
        unsafe { FltObjectDereference(vol as *mut _) };
    }
    fltcommon::order_push(format!("gone volume {s}"));
    unsafe { FltObjectDereference(vol as *mut _) };
    assert_eq!(m.mount(c), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Refs"), Status::SUCCESS);
    let got: Vec<String> =
        fltcommon::order().into_iter().filter(|s| !s.starts_with("Refs:")).collect();
    assert_eq!(
        got,
        [
            "0x1 instance STATUS_FLT_DELETING_OBJECT filter STATUS_SUCCESS",
            "0x8 instance STATUS_FLT_DELETING_OBJECT filter STATUS_SUCCESS",
            "gone volume STATUS_FLT_DELETING_OBJECT",
            "0x2 instance STATUS_FLT_DELETING_OBJECT filter STATUS_FLT_DELETING_OBJECT",
        ]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn attaching_for_a_filter_being_unregistered_is_flt_deleting_object() {
    // FltAttachVolume's reference page: STATUS_FLT_DELETING_OBJECT when "the specified Filter
    // or Volume is being torn down"; STATUS_FLT_FILTER_NOT_READY is for a filter that "has not
    // started filtering". From an unregistration's teardown callback the filter is being torn
    // down; from a manual detach's it is not.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(6);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Late", "370000");
    cfg.extra_instances = vec![("Late Other".into(), "370001".into(), 1)];
    cfg.on_teardown_start = Some(std::rc::Rc::new(|instance, reason| {
        let mut vol = 0;
        assert_eq!(unsafe { FltGetVolumeFromInstance(instance, &mut vol) }, 0);
        let other: Vec<u16> = "Late Other".encode_utf16().collect();
        let f = fltcommon::filter_handle(0);
        let s = Status(unsafe {
            FltAttachVolume(f, vol, &fltcommon::us(&other), std::ptr::null_mut())
        });
        unsafe { FltObjectDereference(vol as *mut _) };
        fltcommon::order_push(format!("{reason:#x} attach {s}"));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Late"), Status::SUCCESS);
    assert_eq!(m.filter_detach("Late", c, Some("Late Instance")), Status::SUCCESS);
    assert_eq!(m.filter_attach("Late", c, None), Status::SUCCESS);
    assert_eq!(m.filter_detach("Late", c, Some("Late Other")), Status::SUCCESS);
    assert_eq!(m.fltmc_unload("Late"), Status::SUCCESS);
    let got: Vec<String> =
        fltcommon::order().into_iter().filter(|s| !s.starts_with("Late:")).collect();
    assert_eq!(
        got,
        [
            "0x1 attach STATUS_SUCCESS",
            "0x1 attach STATUS_FLT_INSTANCE_NAME_COLLISION",
            "0x2 attach STATUS_FLT_DELETING_OBJECT",
        ]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn fltdetachvolume_is_allowed_at_apc_level() {
    // FltDetachVolume's reference page: IRQL <= APC_LEVEL (FltAttachVolume's: PASSIVE_LEVEL).
    // A detach at APC_LEVEL is not an IRQL_TOO_HIGH finding.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(7);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Apc", "370000"));
    assert_eq!(m.start("Apc"), Status::SUCCESS);
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let f = fltcommon::filter_handle(0);
    let mut vol = 0;
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    let inst: Vec<u16> = "Apc Instance".encode_utf16().collect();
    fsfilter_sim::kernel::with(|k| k.set_irql(1));
    let s = unsafe { FltDetachVolume(f, vol, &fltcommon::us(&inst)) };
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    assert_eq!(Status(s), Status::SUCCESS);
    unsafe { FltObjectDereference(vol as *mut _) };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_detach_without_an_instance_name_detaches_the_highest_instance() {
    // FltDetachVolume's and FilterDetach's reference pages: InstanceName "is optional and can be
    // NULL. If it is NULL, the highest matching instance is removed" (the filter's instance of
    // the highest altitude on the volume), not the default instance as for an attach.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(8);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Hi", "370000");
    cfg.extra_instances =
        vec![("Hi Upper".into(), "370005".into(), 0), ("Hi Lower".into(), "369995".into(), 0)];
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Hi"), Status::SUCCESS);
    let attached = |m: &fsfilter_sim::Machine| -> Vec<String> {
        m.kernel(|k| {
            let f = k.fltmgr.filter_by_name("Hi").unwrap();
            k.fltmgr
                .filter_instances(f)
                .iter()
                .map(|&i| k.fltmgr.inst(i).name.to_string())
                .collect()
        })
    };
    assert_eq!(attached(&m), ["Hi Instance", "Hi Upper", "Hi Lower"]);
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let f = fltcommon::filter_handle(0);
    let mut vol = 0;
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    assert_eq!(unsafe { FltDetachVolume(f, vol, std::ptr::null()) }, 0);
    assert_eq!(attached(&m), ["Hi Instance", "Hi Lower"]);
    // FilterDetach (`fltmc detach` without an instance name) alike.
    assert_eq!(m.filter_detach("Hi", c, None), Status::SUCCESS);
    assert_eq!(attached(&m), ["Hi Lower"]);
    assert_eq!(unsafe { FltDetachVolume(f, vol, std::ptr::null()) }, 0);
    assert!(attached(&m).is_empty());
    let s = unsafe { FltDetachVolume(f, vol, std::ptr::null()) };
    assert_eq!(Status(s), Status::FLT_INSTANCE_NOT_FOUND);
    unsafe { FltObjectDereference(vol as *mut _) };
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn object_and_context_routines_above_their_irql_are_reported() {
    // Their reference pages: FltGetVolumeFromName at PASSIVE_LEVEL; FltObjectReference,
    // FltObjectDereference and FltReferenceContext at IRQL <= DISPATCH_LEVEL. None was checked.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(9);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Irql", "370000");
    cfg.contexts = vec![(0x2, 24)];
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Irql"), Status::SUCCESS);
    let f = fltcommon::filter_handle(0);
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let mut vol = 0;
    // At APC_LEVEL: the volume lookup is reported.
    fsfilter_sim::kernel::with(|k| k.set_irql(1));
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    fsfilter_sim::kernel::with(|k| k.set_irql(0));
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh]);
    let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
    let pool = windows_sys::Wdk::Foundation::NonPagedPoolNx;
    assert_eq!(unsafe { FltAllocateContext(f, 0x2, 24, pool, &mut ctx) }, 0);
    // At DISPATCH_LEVEL all three are fine; above it each is reported.
    for irql in [2, 3] {
        fsfilter_sim::kernel::with(|k| k.set_irql(irql));
        assert_eq!(unsafe { FltObjectReference(vol as *mut _) }, 0);
        unsafe { FltObjectDereference(vol as *mut _) };
        unsafe { FltReferenceContext(ctx) };
        fsfilter_sim::kernel::with(|k| k.set_irql(0));
        unsafe { FltReleaseContext(ctx) };
    }
    unsafe { FltReleaseContext(ctx) };
    unsafe { FltObjectDereference(vol as *mut _) };
    let rules: Vec<Rule> = m.findings().into_iter().map(|(r, _, _)| r).collect();
    assert_eq!(rules, [Rule::IrqlTooHigh; 4], "{:?}", m.findings());
}

#[test]
fn an_attach_at_altitude_without_a_name_generates_one() {
    // FltAttachVolumeAtAltitude's reference page: with a NULL InstanceName it "generates an
    // instance name from the minifilter driver name and the altitude string", truncated to
    // INSTANCE_NAME_MAX_CHARS; it does not take the default instance's name (which is in use
    // on the volume here, so the attach failed with STATUS_FLT_INSTANCE_NAME_COLLISION).
    // FilterAttachAtAltitude's page gives the default instance name (user mode, unchanged).
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = machine(11);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    install(&mut m, 0, Config::new("Gen", "370000"));
    assert_eq!(m.start("Gen"), Status::SUCCESS);
    let f = fltcommon::filter_handle(0);
    let name: Vec<u16> = "C:".encode_utf16().collect();
    let mut vol = 0;
    assert_eq!(unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), &mut vol) }, 0);
    let alt: Vec<u16> = "370005".encode_utf16().collect();
    let mut inst = 0;
    let s = unsafe {
        FltAttachVolumeAtAltitude(f, vol, &fltcommon::us(&alt), std::ptr::null(), &mut inst)
    };
    assert_eq!(Status(s), Status::SUCCESS);
    let (iname, ialt) = m.kernel(|k| {
        let i = k.fltmgr.instance_of(inst).unwrap();
        (k.fltmgr.inst(i).name.to_string(), k.fltmgr.inst(i).altitude_text.to_string())
    });
    assert_ne!(iname, "Gen Instance");
    assert!(iname.contains("Gen") && iname.contains("370005"), "{iname}");
    assert_eq!(ialt, "370005");
    unsafe { FltObjectDereference(inst as *mut _) };
    unsafe { FltObjectDereference(vol as *mut _) };
    // FilterAttachAtAltitude without a name: the default instance's name, taken here.
    assert_eq!(
        m.filter_attach_at_altitude("Gen", c, "370006", None),
        Status::FLT_INSTANCE_NAME_COLLISION
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_work_item_can_be_queued_for_an_instance_being_set_up() {
    // FltQueueGenericWorkItem's reference page: STATUS_FLT_DELETING_OBJECT when "the specified
    // FltObject is being torn down". An instance whose InstanceSetupCallback runs is being set
    // up, not torn down: a filter may queue work for it there (to read its settings from the
    // volume, say); the routine runs once the setup has answered.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    unsafe extern "system" fn work(
        item: PFLT_GENERIC_WORKITEM,
        _o: *const core::ffi::c_void,
        _c: *const core::ffi::c_void,
    ) {
        fltcommon::order_push("work item ran".into());
        unsafe { FltFreeGenericWorkItem(item) };
    }
    let mut m = machine(12);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let mut cfg = Config::new("Early", "370000");
    cfg.on_setup = Some(std::rc::Rc::new(|instance, _| {
        let item = unsafe { FltAllocateGenericWorkItem() };
        let s = unsafe {
            FltQueueGenericWorkItem(item, instance as *const _, Some(work), 1, std::ptr::null())
        };
        fltcommon::order_push(format!("queued {}", Status(s)));
        if s != 0 {
            unsafe { FltFreeGenericWorkItem(item) };
        }
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Early"), Status::SUCCESS);
    m.settle();
    let got: Vec<String> =
        fltcommon::order().into_iter().filter(|s| !s.starts_with("Early:")).collect();
    assert_eq!(got, ["queued STATUS_SUCCESS", "work item ran"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
