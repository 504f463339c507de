//! Attachment of the legacy backend (facts.md §1.2 to §1.5, §1.7), with the probe sample as the
//! filter: at mount time and to volumes already mounted, to file systems registered after load,
//! several filters (load order is stack order), refusals, dismount.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod common;

use common::*;
use fsfilter::{InstanceSetupFlags as F, MajorFunction, Status, TeardownFlags};
use fsfilter_sim::{Callback, CreateOptions, FsKind, Machine, StartType, VolumeSpec};

#[test]
fn a_boot_filter_attaches_to_volumes_as_they_mount() {
    // §1.2: the notification routine attaches to each file system's control device; §1.4: the
    // mount request is seen at that device and the new volume device is attached to.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("C:".into()), F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME, Status::SUCCESS)]
    );
    assert_eq!(m.volume_stack_drivers(c), ["ProbeA", "Ntfs"]);
    assert_eq!(m.device_stack_drivers(r"\Ntfs"), ["ProbeA", "Ntfs"]);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_filter_started_later_attaches_to_mounted_volumes() {
    // §1.5: volumes mounted before the filter loaded are found with IoEnumerateDeviceObjectList;
    // the emulated instance setup says AUTOMATIC_ATTACHMENT without NEWLY_MOUNTED_VOLUME.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("C:".into()), F::AUTOMATIC_ATTACHMENT, Status::SUCCESS)]
    );
    assert_eq!(m.volume_stack_drivers(c), ["ProbeA", "Ntfs"]);
    // And it sees I/O on it.
    let h = m.create(c, "new.txt", CreateOptions::create()).handle.unwrap();
    m.close_handle(h);
    assert_eq!(pres(&m, "ProbeA", MajorFunction::Create).len(), 1);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_filter_started_later_attaches_to_every_mounted_volume_however_many() {
    // §1.5: IoEnumerateDeviceObjectList returns every device of the file system, or
    // STATUS_BUFFER_TOO_SMALL with the count and only as many as fit: the list is sized by the
    // count (the backend once used a fixed list of 64, and on a file system with more devices
    // attached to none).
    let mut m = machine();
    let volumes: Vec<_> = (0..80)
        .map(|i| {
            m.add_volume(VolumeSpec::new(&format!(r"\Device\HarddiskVolume{i}"), FsKind::Ntfs))
        })
        .collect();
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    for &v in &volumes {
        assert_eq!(m.volume_stack_drivers(v), ["ProbeA", "Ntfs"], "{v:?}");
    }
    assert_eq!(setups(&m, "ProbeA").len(), volumes.len());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn file_systems_registered_after_load_are_attached_but_not_the_recognizer() {
    // §1.1, §1.4: FastFat is loaded on demand by the recognizer after the filter; the filter is
    // told, attaches to \Fat, never to the recognizer's devices, and then to the FAT volume.
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.device_stack_drivers(r"\Fat"), ["ProbeA", "fastfat"]);
    // The recognizers that remain (FastFat's were deleted once it loaded) have no filter.
    assert_eq!(m.device_stack_drivers(r"\FileSystem\CdfsRecognizer"), ["Fs_Rec"]);
    assert_eq!(m.device_stack_drivers(r"\FileSystem\ExFatRecognizer"), ["Fs_Rec"]);
    assert_eq!(m.volume_stack_drivers(f), ["ProbeA", "fastfat"]);
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("F:".into()), F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME, Status::SUCCESS)]
    );
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_file_system_that_unregisters_is_detached_from() {
    // §1.2: the registration routine is called with FsActive FALSE when a file system
    // unregisters (IoUnregisterFileSystem): the filter detaches from its control device and
    // deletes its device there; its volume devices stay until the volumes go.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.device_stack_drivers(r"\Ntfs"), ["ProbeA", "Ntfs"]);
    let cdo = m.kernel(|k| {
        let id = k.objects.names[&r"\Ntfs".to_uppercase()];
        k.objects.device(id).ptr as usize
    });
    // Ntfs's own code unregisters, from a thread of the machine.
    m.schedule(0, move |_| fsfilter_sim::fsreg::unregister_file_system(cdo as *const _));
    m.settle();
    assert_eq!(m.device_stack_drivers(r"\Ntfs"), ["Ntfs"]);
    assert_eq!(m.volume_stack_drivers(c), ["ProbeA", "Ntfs"], "the mounted volume keeps it");
    assert_eq!(m.stop("ProbeA"), fsfilter_sim::StopResult::Unloaded);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_network_file_system_that_unregisters_tears_its_instance_down() {
    // §1.2, §2.5: a redirector's control device is where its shares' I/O arrives, and the
    // instance there is the share volume's; its unregistration (FsActive FALSE) ends that
    // instance as a volume dismount, as the Filter Manager tears instances down for a file
    // system's unregistration: teardown start before the detach, complete before the delete.
    let mut m = machine();
    let s = m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("r.txt", b"remote"));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.device_stack_drivers(r"\Device\Mup"), ["ProbeA", "Mup"]);
    let h = m.create(s, "r.txt", CreateOptions::open()).handle.unwrap();
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(pres(&m, "ProbeA", MajorFunction::Create).len(), 1);
    let cdo = m.kernel(|k| {
        let id = k.objects.names[&r"\Device\Mup".to_uppercase()];
        k.objects.device(id).ptr as usize
    });
    // Mup's own code unregisters, from a thread of the machine.
    m.schedule(0, move |_| fsfilter_sim::fsreg::unregister_file_system(cdo as *const _));
    m.settle();
    assert_eq!(m.device_stack_drivers(r"\Device\Mup"), ["Mup"]);
    let teardown = teardowns(&m, "ProbeA");
    assert_eq!(
        teardown,
        [
            Callback::TeardownStart { reason: TeardownFlags::VOLUME_DISMOUNT },
            Callback::TeardownComplete { reason: TeardownFlags::VOLUME_DISMOUNT }
        ]
    );
    assert_eq!(m.stop("ProbeA"), fsfilter_sim::StopResult::Unloaded);
    // The unload tore down no instance: there was none left.
    let teardowns = callbacks(&m, "ProbeA")
        .into_iter()
        .filter(|(_, c)| matches!(c, Callback::TeardownStart { .. }))
        .count();
    assert_eq!(teardowns, 1);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn load_order_is_stack_order_and_callbacks_follow_the_stack() {
    // §1.3: each legacy filter attaches at the top of the stack as it finds it: the later one is
    // above, sees requests first on the way down and last on the way up.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    install_probe(&mut m, "ProbeB", StartType::Demand, &[]);
    m.boot();
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    assert_eq!(m.start("ProbeB"), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(c), ["ProbeB", "ProbeA", "Ntfs"]);
    assert_eq!(m.device_stack_drivers(r"\Ntfs"), ["ProbeB", "ProbeA", "Ntfs"]);
    let r = m.create(c, "a.txt", CreateOptions::create());
    let order = order_for_io(&m, r.io.unwrap());
    let order: Vec<(&str, &str)> = order.iter().map(|(d, k)| (d.as_str(), *k)).collect();
    assert_eq!(
        order,
        [("ProbeB", "pre"), ("ProbeA", "pre"), ("ProbeA", "post"), ("ProbeB", "post")]
    );
    // Boot start in one group: the same, in load order.
    drop(m);
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    install_probe(&mut m, "ProbeB", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.volume_stack_drivers(c), ["ProbeB", "ProbeA", "Ntfs"]);
}

#[test]
fn a_refused_instance_attaches_no_device() {
    // The emulated instance setup: an error refuses, and then nothing is attached to the volume;
    // the control-device attachment (needed to see mounts) stays.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[("Attach", sz("cdrom"))]);
    m.boot();
    let s = setups(&m, "ProbeA");
    assert!(
        s.contains(&(
            Some("C:".into()),
            F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME,
            Status::FLT_DO_NOT_ATTACH
        )),
        "{s:?}"
    );
    assert!(
        s.contains(&(
            Some("D:".into()),
            F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME,
            Status::SUCCESS
        )),
        "{s:?}"
    );
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert_eq!(m.volume_stack_drivers(d), ["ProbeA", "cdfs"]);
    assert_eq!(m.device_stack_drivers(r"\Ntfs"), ["ProbeA", "Ntfs"]);
    // No callback for the refused volume's I/O.
    let h = m.create(c, "a.txt", CreateOptions::create()).handle.unwrap();
    m.close_handle(h);
    assert!(pres(&m, "ProbeA", MajorFunction::Create).is_empty());
}

#[test]
fn file_system_filter_by_name_refuses_other_file_systems() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[("FileSystems", sz("fat"))]);
    m.boot();
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert_eq!(m.volume_stack_drivers(f), ["ProbeA", "fastfat"]);
}

#[test]
fn dismount_detaches_through_fast_io_detach_device_and_tears_the_instance_down() {
    // §1.7: the file system deletes the volume device; the I/O manager calls the attached
    // filter's FastIoDetachDevice, which detaches and deletes its device.
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.volume_stack_drivers(f), ["ProbeA", "fastfat"]);
    assert_eq!(m.dismount(f), Status::SUCCESS);
    m.settle();
    let teardown = teardowns(&m, "ProbeA");
    assert_eq!(
        teardown,
        [
            Callback::TeardownStart { reason: TeardownFlags::VOLUME_DISMOUNT },
            Callback::TeardownComplete { reason: TeardownFlags::VOLUME_DISMOUNT }
        ]
    );
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    // Mounted again: a new instance, NEWLY_MOUNTED_VOLUME.
    let h = m.create(f, "x.txt", CreateOptions::create()).handle.unwrap();
    m.close_handle(h);
    assert_eq!(m.volume_stack_drivers(f), ["ProbeA", "fastfat"]);
    // (A boot-start filter sees the boot mount as a new one too.)
    let flags: Vec<F> = setups(&m, "ProbeA").into_iter().map(|(_, f, _)| f).collect();
    assert_eq!(flags, [F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME; 2]);
}

#[test]
fn a_create_the_filter_pends_across_a_dismount_keeps_the_volume_device_until_it_fails() {
    // The I/O manager's parse references the volume's VPB for a create before it sends the
    // request (`IopCheckVpbMounted`) and drops that reference only once a failed create is back,
    // so a file system's dismount check, which reads the VPB's ReferenceCount, keeps the volume
    // device while the create is held above it. Before the simulator counted that reference,
    // the dismount's own close deleted E:'s device under the create ProbeA pended, and the
    // resumption went down to the deleted device (CALL_TO_DELETED_DEVICE against the backend).
    let mut m = machine();
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs).file("a.txt", b"abc"));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[("Rules", sz("pend:50 create *.txt"))]);
    m.boot();
    let dismounted = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = dismounted.clone();
    m.schedule(10, move |m| seen.set(Some(m.dismount(e))));
    assert_eq!(m.open(e, "a.txt", CreateOptions::open()), Err(Status::VOLUME_DISMOUNTED));
    assert_eq!(dismounted.get(), Some(Status::SUCCESS), "dismounted while the create was held");
    m.settle();
    // The create failed in the file system, and only then did the device go: the instance is
    // torn down after the create's post callback.
    let k = kinds(&m);
    let pos = |what: &str| k.iter().rposition(|x| x == what).unwrap();
    assert!(pos("ProbeA:resumed") < pos("ProbeA:teardown_start"), "{k:?}");
    assert!(pos("ProbeA:post") < pos("ProbeA:teardown_start"), "{k:?}");
    let teardown = teardowns(&m, "ProbeA");
    let reason = TeardownFlags::VOLUME_DISMOUNT;
    assert_eq!(
        teardown,
        [Callback::TeardownStart { reason }, Callback::TeardownComplete { reason }]
    );
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_revived_volume_keeps_its_device_and_its_instance() {
    // docs/semantics.md, dismount: FastFat dismounts F: with a file open, so its volume device
    // lives on, and revives it at the next mount (facts.md §1.4). The I/O manager never calls
    // FastIoDetachDevice, so the legacy filter stays attached to that device through it all: no
    // teardown, no new instance, and the remount's completion finds it attached already. (The
    // Filter Manager tears the instance down at the dismount and sets it up again as
    // DETACHED_VOLUME: minifilter `model::a_revived_volume_is_torn_down_and_set_up_again_as_detached`.)
    let mut m = machine();
    let f = m.add_volume(VolumeSpec::new("F:", FsKind::Fat).file("a.txt", b"abc"));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    let h = m.open(f, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.dismount(f), Status::SUCCESS);
    let h2 = m.open(f, "a.txt", CreateOptions::open()).unwrap();
    assert!(
        m.events().iter().any(|e| matches!(
            &e.kind,
            fsfilter_sim::EventKind::System { what, .. } if *what == "volume_revived"
        )),
        "FastFat revived the volume"
    );
    let creates = pres(&m, "ProbeA", MajorFunction::Create).len();
    m.close_handle(h2);
    m.close_handle(h);
    assert!(teardowns(&m, "ProbeA").is_empty(), "{:?}", teardowns(&m, "ProbeA"));
    assert_eq!(setups(&m, "ProbeA").len(), 1);
    assert_eq!(m.volume_stack_drivers(f), ["ProbeA", "fastfat"]);
    assert!(creates >= 2, "both opens went through the filter");
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn the_control_device_is_named_after_the_service() {
    // §1.2, step 1: the filter's control device is \FileSystem\Filters\<service>, built from the
    // last component of the registry path DriverEntry is given.
    let mut m = machine();
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeCdo7", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.device_stack_drivers(r"\FileSystem\Filters\ProbeCdo7"), ["ProbeCdo7"]);
    assert!(m.device_stack_drivers(r"\FileSystem\Filters\ProbeCdo").is_empty());
    // Gone with the driver.
    assert_eq!(m.stop("ProbeCdo7"), fsfilter_sim::StopResult::Unloaded);
    assert!(m.device_stack_drivers(r"\FileSystem\Filters\ProbeCdo7").is_empty());
}

#[test]
fn a_filter_started_later_attaches_to_raw_volumes_under_another_filter() {
    // §1.2 step 6, §1.5: RAW is attached by name. IoGetDeviceObjectPointer answers the top of
    // \Device\RawDisk's stack, another filter's device when one is attached there already: the
    // backend must enumerate RAW's own volumes (its driver's), not that filter's devices.
    let mut m = machine();
    let x = m.add_volume(VolumeSpec::new("X:", FsKind::Ntfs).mount(fsfilter_sim::MountWhen::Step));
    m.kernel(|k| k.volume_mut(x).blank = true);
    install_probe(&mut m, "ProbeB", StartType::Demand, &[]);
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    assert_eq!(m.start("ProbeB"), Status::SUCCESS);
    assert_eq!(m.device_stack_drivers(r"\Device\RawDisk"), ["ProbeB", "RAW"]);
    // Blank media in the drive: no file system recognizes it, a volume open mounts it with RAW.
    assert_eq!(m.mount(x), Status::UNRECOGNIZED_VOLUME);
    let h = m.create(x, "", CreateOptions::open()).handle.unwrap();
    assert_eq!(m.volume_stack_drivers(x), ["ProbeB", "RAW"]);
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(x), ["ProbeA", "ProbeB", "RAW"]);
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("X:".into()), F::AUTOMATIC_ATTACHMENT, Status::SUCCESS)]
    );
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn every_major_function_is_passed_through_but_power() {
    // §1.2 step 2 fills the dispatch table with a pass-through; §1.6: IRP_MJ_POWER never reaches
    // a file-system stack, and a file-system filter registers no dispatch routine for it.
    let mut m = machine();
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    let table = m.kernel(|k| {
        let cdo = k.objects.names[&r"\FileSystem\Filters\ProbeA".to_uppercase()];
        let driver = k.objects.device(cdo).driver;
        // SAFETY: driver objects live as long as the machine.
        unsafe { (*k.objects.driver(driver).ptr).MajorFunction }.map(|f| f.map(|f| f as usize))
    });
    let ours = table[usize::from(MajorFunction::Create.code())];
    assert!(ours.is_some());
    let power = usize::from(MajorFunction::Power.code());
    for (major, slot) in table.iter().enumerate() {
        if major == power {
            assert!(
                slot.is_some() && *slot != ours,
                "IRP_MJ_POWER keeps the I/O manager's default"
            );
        } else {
            assert_eq!(*slot, ours, "major {major:#x}");
        }
    }
}

#[test]
fn a_read_pended_when_its_network_file_system_unregisters_ends_before_the_teardown() {
    // Rule 20 with the unregistration of a redirector (§2.5): a read the filter pended when Mup
    // unregistered goes on when resumed, and the teardown completes after its post callback.
    let m = read_while_mup_unregisters(&[("Rules", sz("pend:5 read"))], false, false);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_teardown_whose_last_operation_ends_at_dispatch_level_completes_at_passive_level() {
    // Rule 20 when the last operation on a detached device ends in a completion routine at
    // DISPATCH_LEVEL: the redirector completes a non-cached read from a DPC after it unregistered.
    // Teardown complete (PASSIVE_LEVEL, facts.md §2.5) and IoDeleteDevice (APC_LEVEL at most)
    // must not run there: the backend finishes from a work item. Before the fix the simulator
    // reported IRQL_TOO_HIGH for InstanceTeardownCompleteCallback and IoDeleteDevice.
    let m = read_while_mup_unregisters(&[], true, false);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_teardown_ending_at_dispatch_level_reaches_passive_level_without_memory() {
    // As above, with every pool allocation of the probe failing from the unregistration on: the
    // work item that takes the retirement to PASSIVE_LEVEL was allocated there, and without it
    // the backend completed the teardown and deleted the device at DISPATCH_LEVEL (IRQL_TOO_HIGH
    // for InstanceTeardownCompleteCallback and IoDeleteDevice), before a fix of December 6: it
    // is allocated with the device now.
    let m = read_while_mup_unregisters(&[], true, true);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

/// ProbeA (with `params`) on a share; Mup unregisters while a non-cached read is outstanding
/// (pended by the probe, or waiting for its DPC with `dpc`). Checks that the read succeeds, that
/// its post callback comes between teardown start and complete, that the probe left the stack,
/// and that it unloads; returns the machine for the findings. With `starve`, every pool allocation
/// the probe makes from the unregistration on fails.
fn read_while_mup_unregisters(
    params: &[(&str, fsfilter_sim::RegValue)],
    dpc: bool,
    starve: bool,
) -> Machine {
    let mut m = machine();
    let s = m.add_volume(VolumeSpec::new(r"\\server\share", FsKind::Mup).file("r.txt", b"remote"));
    install_probe(&mut m, "ProbeA", StartType::Boot, params);
    m.boot();
    m.kernel(|k| k.fs.complete_at_dpc = dpc);
    let h = m.create(s, "r.txt", CreateOptions::open()).handle.unwrap();
    let cdo = m.kernel(|k| {
        let id = k.objects.names[&r"\Device\Mup".to_uppercase()];
        k.objects.device(id).ptr as usize
    });
    // While the read is outstanding (the probe's pend is 5 ms).
    m.schedule(u64::from(!dpc), move |m| {
        if starve {
            m.kernel(|k| {
                let n = k.faults.service_count("ProbeA", fsfilter_sim::FaultKind::Pool);
                for nth in n + 1..=n + 64 {
                    k.faults.plan_for_service("ProbeA", fsfilter_sim::FaultKind::Pool, nth);
                }
            });
        }
        fsfilter_sim::fsreg::unregister_file_system(cdo as *const _);
    });
    let r = m.read(h, Some(0), 6, fsfilter_sim::IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    m.settle();
    let order: Vec<&str> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter_map(|(_, c)| match c {
            Callback::TeardownStart { .. } => Some("teardown start"),
            Callback::TeardownComplete { .. } => Some("teardown complete"),
            Callback::Post { major: MajorFunction::Read, .. } => Some("post read"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["teardown start", "post read", "teardown complete"]);
    assert!(!m.volume_stack_drivers(s).contains(&"ProbeA".to_string()));
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(m.stop("ProbeA"), fsfilter_sim::StopResult::Unloaded);
    m
}

/// The teardown callbacks `driver` got, in order.
fn teardowns(m: &fsfilter_sim::Machine, driver: &str) -> Vec<Callback> {
    callbacks(m, driver)
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| matches!(c, Callback::TeardownStart { .. } | Callback::TeardownComplete { .. }))
        .collect()
}

#[test]
fn a_filter_loaded_while_another_unloads_does_not_attach_above_it() {
    // facts.md §1.3: attaching fails (STATUS_NO_SUCH_DEVICE) when the top of the stack is unload
    // pending. ProbeA's stop stays pending while ProbeB sits above it on C:; ProbeC, loaded then,
    // attaches above ProbeB on C: but not above ProbeA on D:, and ProbeA's unload is not held up
    // by a new filter there.
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Fat));
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    install_probe(&mut m, "ProbeB", StartType::Demand, &[("FileSystems", sz("ntfs"))]);
    install_probe(&mut m, "ProbeC", StartType::Demand, &[]);
    m.boot();
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    assert_eq!(m.start("ProbeB"), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(c), ["ProbeB", "ProbeA", "Ntfs"]);
    assert_eq!(m.volume_stack_drivers(d), ["ProbeA", "fastfat"]);
    assert_eq!(m.stop("ProbeA"), fsfilter_sim::StopResult::Pending);
    assert_eq!(m.start("ProbeC"), Status::SUCCESS);
    assert_eq!(m.volume_stack_drivers(c), ["ProbeC", "ProbeB", "ProbeA", "Ntfs"]);
    assert!(
        !m.volume_stack_drivers(d).contains(&"ProbeC".to_owned()),
        "{:?}",
        m.volume_stack_drivers(d)
    );
    // Nor does its control device open any more (the object manager's parse refuses it).
    let open = |name: &str| {
        let units: Vec<u16> = name.encode_utf16().collect();
        let us = fsfilter_sim::mem::unicode(&units);
        let (mut fo, mut dev) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: a valid name and out pointers.
        let s = unsafe {
            windows_sys::Wdk::System::SystemServices::IoGetDeviceObjectPointer(
                &us,
                0x8000_0000,
                &mut fo,
                &mut dev,
            )
        };
        if s >= 0 {
            // SAFETY: the reference the open gave.
            unsafe { windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(fo.cast()) };
        }
        Status(s)
    };
    assert_eq!(open(r"\FileSystem\Filters\ProbeA"), Status::NO_SUCH_DEVICE);
    assert_eq!(open(r"\FileSystem\Filters\ProbeC"), Status::SUCCESS);
    // ProbeC, then ProbeB leave: ProbeA's unload runs, and D: is left with its file system
    // alone.
    assert_eq!(m.stop("ProbeC"), fsfilter_sim::StopResult::Unloaded);
    assert_eq!(m.stop("ProbeB"), fsfilter_sim::StopResult::Unloaded);
    m.settle();
    assert!(
        !m.volume_stack_drivers(d).contains(&"ProbeA".to_owned()),
        "{:?}",
        m.volume_stack_drivers(d)
    );
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_device_made_while_its_stop_is_pending_takes_a_filter_above_it() {
    // IopUnloadDriver marks DOE_UNLOAD_PENDING on the devices a driver has when its stop is
    // asked; IoCreateDevice sets no such mark, so a device the driver makes while its stop is
    // pending takes attaches (facts.md §1.3 checks the top device's own flags). ProbeA's stop
    // stays pending while ProbeB sits above it on C:; E: mounts then, ProbeA attaches a new
    // device there, and ProbeB attaches above it at once (until December 7 the simulator refused
    // every device of a stop-pending driver, and ProbeB retried for 3.5 s and gave up).
    use fsfilter_sim::{MountWhen, StopResult};
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs).mount(MountWhen::Step));
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    install_probe(&mut m, "ProbeB", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.stop("ProbeA"), StopResult::Pending);
    let before = m.now_ms();
    assert_eq!(m.mount(e), Status::SUCCESS);
    assert_eq!(m.now_ms(), before, "no attach was retried");
    assert_eq!(m.volume_stack_drivers(e), ["ProbeB", "ProbeA", "Ntfs"]);
    assert!(teardowns(&m, "ProbeB").is_empty(), "{:?}", teardowns(&m, "ProbeB"));
    // ProbeB leaves: ProbeA's unload runs once nothing is above any of its devices, the new one
    // included, and it tears its E: instance down once. ProbeB leaves E: first and ProbeA's
    // control-device attachments (marked at the stop) last, so on Windows too the last detach
    // is from a marked device, which re-checks the pending unload (IoDetachDevice).
    assert_eq!(m.stop("ProbeB"), StopResult::Unloaded);
    m.settle();
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert_eq!(m.volume_stack_drivers(e), ["Ntfs"]);
    let unloaded = callbacks(&m, "ProbeA")
        .into_iter()
        .filter(|(v, c)| {
            v.as_deref() == Some("E:") && matches!(c, Callback::TeardownComplete { .. })
        })
        .count();
    assert_eq!(unloaded, 1);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn the_control_device_opens_and_refuses_anything_else_and_an_open_holds_the_stop() {
    // §1.2 step 1: the filter's own control device is attached to nothing and must complete
    // every request it gets itself: an open succeeds, a device control is refused
    // (STATUS_INVALID_DEVICE_REQUEST), and no fast-I/O routine of it takes the call (none is
    // below it). §1.9: while the open file object holds it, the driver cannot unload; once it is
    // released, the pending stop goes on.
    use windows_sys::Wdk::Foundation::KEVENT;
    use windows_sys::Wdk::System::SystemServices::{
        IoBuildDeviceIoControlRequest, IoGetDeviceObjectPointer, KeInitializeEvent,
        KeWaitForSingleObject, ObfDereferenceObject,
    };
    use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
    let mut m = machine();
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    let units: Vec<u16> = r"\FileSystem\Filters\ProbeA".encode_utf16().collect();
    let name = fsfilter_sim::mem::unicode(&units);
    let (mut file, mut device) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: a valid name and out pointers.
    let s = unsafe { IoGetDeviceObjectPointer(&name, 0x8000_0000, &mut file, &mut device) };
    assert_eq!(Status(s), Status::SUCCESS);
    // SAFETY: all-zero is valid for both before use.
    let mut event: KEVENT = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: our event.
    unsafe { KeInitializeEvent(&mut event, 0, false) };
    let mut out = [0u8; 16];
    // SAFETY: the live device, our buffers and event.
    let irp = unsafe {
        IoBuildDeviceIoControlRequest(
            0x0022_2000, // FILE_DEVICE_UNKNOWN, function 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS
            device,
            std::ptr::null(),
            0,
            out.as_mut_ptr().cast(),
            16,
            false,
            &event,
            &mut iosb,
        )
    };
    assert!(!irp.is_null());
    // SAFETY: the top of the control device's stack and the IRP built for it.
    let s = unsafe { fsfilter_kernel::irp::IoCallDriver(device, irp) };
    if s == Status::PENDING.0 {
        // SAFETY: our event.
        unsafe { KeWaitForSingleObject((&raw const event).cast(), 0, 0, false, std::ptr::null()) };
    }
    assert_eq!(Status(s), Status::INVALID_DEVICE_REQUEST);
    // SAFETY: written at completion.
    assert_eq!(Status(unsafe { iosb.Anonymous.Status }), Status::INVALID_DEVICE_REQUEST);
    // The driver's fast-I/O device control has nothing below the control device to call.
    let (routine, image) = m.kernel(|k| {
        let id = k.objects.device_id(device).unwrap();
        // SAFETY: a live driver object.
        let table = unsafe { (*k.objects.dobj(id).DriverObject).FastIoDispatch };
        // SAFETY: the driver's static table.
        let routine = unsafe { (*table).FastIoDeviceControl }.unwrap();
        (routine, k.objects.image_of(device))
    });
    // As the I/O manager calls it, in the driver's image.
    let taken = fsfilter_sim::kernel::call_into(image, || {
        let buffer = out.as_mut_ptr().cast();
        // SAFETY: the driver's routine with the control device's file object and our buffers.
        unsafe {
            routine(file, true, std::ptr::null(), 0, buffer, 16, 0x0022_2000, &mut iosb, device)
        }
    });
    assert!(!taken, "the control device takes no fast I/O: the I/O manager sends the IRP");
    // The open holds the stop; its release lets the unload go on.
    assert_eq!(m.stop("ProbeA"), fsfilter_sim::StopResult::Pending);
    // SAFETY: the reference the open gave.
    unsafe { ObfDereferenceObject(file.cast()) };
    m.settle();
    assert!(m.device_stack_drivers(r"\FileSystem\Filters\ProbeA").is_empty());
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_filter_device_takes_the_type_flags_and_characteristics_of_the_device_below() {
    // §1.2: a filter device is unnamed, of the target's DeviceType, with DO_BUFFERED_IO,
    // DO_DIRECT_IO, DO_SUPPORTS_TRANSACTIONS and FILE_DEVICE_SECURE_OPEN copied from it, and
    // DO_DEVICE_INITIALIZING cleared after the attach; §1.3: StackSize is the target's plus one.
    // The simulated file systems set none of those flags, so the test sets them on the control
    // and volume devices before the filter attaches (to volumes already mounted, and to the
    // control devices, with different flags on each so that a copy from the wrong device shows).
    const BUFFERED: u32 = 0x4;
    const DIRECT: u32 = 0x10;
    const HAS_NAME: u32 = 0x40;
    const INITIALIZING: u32 = 0x80;
    const TRANSACTIONS: u32 = 0x0004_0000;
    const SECURE_OPEN: u32 = 0x100;
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    let e = m.add_volume(VolumeSpec::new("E:", FsKind::Cdfs));
    install_probe(&mut m, "ProbeA", StartType::Demand, &[]);
    m.boot();
    let (vdo_c, vdo_e, cdo_ntfs) = m.kernel(|k| {
        let vdo_c = k.volume(c).vdo.unwrap();
        let vdo_e = k.volume(e).vdo.unwrap();
        let cdo = k.objects.names[&r"\Ntfs".to_uppercase()];
        k.objects.dobj(vdo_c).Flags |= DIRECT | TRANSACTIONS;
        k.objects.dobj(vdo_c).Characteristics |= SECURE_OPEN;
        k.objects.dobj(vdo_e).Flags |= BUFFERED;
        k.objects.dobj(cdo).Flags |= BUFFERED;
        (vdo_c, vdo_e, cdo)
    });
    assert_eq!(m.start("ProbeA"), Status::SUCCESS);
    m.kernel(|k| {
        for below in [vdo_c, vdo_e, cdo_ntfs] {
            let ours = k.objects.above(below).expect("the filter is attached");
            assert_eq!(k.objects.driver(k.objects.device(ours).driver).service, "ProbeA");
            let (o, b) = (k.objects.dobj(ours), k.objects.dobj(below));
            assert_eq!(o.DeviceType, b.DeviceType, "the type of the device below");
            let copied = BUFFERED | DIRECT | TRANSACTIONS;
            assert_eq!(o.Flags & copied, b.Flags & copied, "{:#x} below {:#x}", o.Flags, b.Flags);
            assert_eq!(o.Characteristics & SECURE_OPEN, b.Characteristics & SECURE_OPEN);
            assert_eq!(o.Flags & (HAS_NAME | INITIALIZING), 0, "unnamed and initialized");
            assert_eq!(o.StackSize, b.StackSize + 1);
        }
    });
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}

#[test]
fn a_boot_filter_attaches_to_raw_from_its_driver_entry() {
    // §1.2 step 6: RAW is attached by name in DriverEntry. RAW is built into the kernel, whose
    // boot sequence initializes it before any boot-start driver (facts.md S23, step 3), so a
    // boot-start filter finds \Device\RawDisk then, and sees the volumes RAW mounts later.
    let mut m = machine();
    let x = m.add_volume(VolumeSpec::new("X:", FsKind::Ntfs).mount(fsfilter_sim::MountWhen::Step));
    m.kernel(|k| k.volume_mut(x).blank = true);
    install_probe(&mut m, "ProbeA", StartType::Boot, &[]);
    m.boot();
    assert_eq!(m.device_stack_drivers(r"\Device\RawDisk"), ["ProbeA", "RAW"]);
    assert_eq!(m.device_stack_drivers(r"\Device\RawCdRom"), ["ProbeA", "RAW"]);
    // Blank media: a volume open mounts it with RAW, and the mount path attaches to it.
    assert_eq!(m.mount(x), Status::UNRECOGNIZED_VOLUME);
    let h = m.create(x, "", CreateOptions::open()).handle.unwrap();
    assert_eq!(m.volume_stack_drivers(x), ["ProbeA", "RAW"]);
    assert_eq!(
        setups(&m, "ProbeA"),
        [(Some("X:".into()), F::AUTOMATIC_ATTACHMENT | F::NEWLY_MOUNTED_VOLUME, Status::SUCCESS)]
    );
    // The file system instance setup is told: RAW, as the Filter Manager tells a minifilter
    // (docs/semantics.md, volumes; minifilter `raw.rs`).
    let told: Vec<_> = callbacks(&m, "ProbeA")
        .into_iter()
        .filter_map(|(_, c)| match c {
            Callback::InstanceSetup { volume, .. } => Some(volume.filesystem),
            _ => None,
        })
        .collect();
    assert_eq!(told, [fsfilter::FilesystemType::Raw]);
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
}
