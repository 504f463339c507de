//! Filter Manager, deliverable 1 — registration (facts.md §2.6, §3, §5): FLT_REGISTRATION's size
//! and version rules, flags, the operation table up to IRP_MJ_OPERATION_END, the documented
//! failures, forbidden registrations, FltStartFiltering, FltUnregisterFilter.

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

use fltcommon::{Config, Seen, flt, install, machine, mj, rules, seen};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, EventKind, FltEvent, FsKind, InstanceLayout, Rule, StartType, StopResult,
    VolumeSpec,
};

fn load_status(m: &fsfilter_sim::Machine, name: &str) -> Option<Status> {
    m.events().into_iter().rev().find_map(|e| match e.kind {
        EventKind::Load { driver, status, .. } if driver == name => Some(status),
        _ => None,
    })
}

fn booted(files: &[(&str, &[u8])]) -> fsfilter_sim::Machine {
    let mut m = machine(1);
    let mut spec = VolumeSpec::new("C:", FsKind::Ntfs);
    for (p, b) in files {
        spec = spec.file(p, b);
    }
    m.add_volume(spec);
    m.install_filter_manager();
    m.boot();
    m
}

#[test]
fn a_minifilter_registers_starts_and_sees_io_facts_2_6() {
    let mut m = booted(&[("a.txt", b"hello")]);
    install(&mut m, 0, Config::new("MiniA", "370000").op(mj::CREATE, true, true));
    assert_eq!(m.start("MiniA"), Status::SUCCESS);
    let c = m.volume("C:").unwrap();
    let r = m.create(c, "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS);
    let s = seen(0);
    assert!(s.iter().any(|x| matches!(x, Seen::Setup { flags: 1, .. })), "{s:?}");
    assert!(s.iter().any(|x| matches!(x, Seen::Pre { major: 0, .. })), "{s:?}");
    assert!(s.iter().any(|x| matches!(x, Seen::Post { major: 0, status: 0, .. })), "{s:?}");
    let reg = flt(&m, "flt_filter_registered");
    assert!(matches!(
        reg[0].2,
        FltEvent::FilterRegistered { frame: 0, status: Status::SUCCESS, .. }
    ));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn version_major_must_be_2_and_newer_minors_are_accepted_facts_2_6() {
    // facts.md §2.6: a different major version stops the filter loading (STATUS_INVALID_PARAMETER);
    // a newer minor version is accepted.
    let mut m = booted(&[]);
    let mut c = Config::new("Major3", "370000");
    c.version = 0x0303;
    install(&mut m, 0, c);
    assert_eq!(m.start("Major3"), Status::INVALID_PARAMETER);
    let mut c = Config::new("Minor4", "370010");
    c.version = 0x0204;
    install(&mut m, 1, c);
    assert_eq!(m.start("Minor4"), Status::SUCCESS);
    // Version 0x0200 with the 0x0200 size (no transaction, NormalizeEx or section fields).
    let mut c = Config::new("V200", "370020");
    c.version = 0x0200;
    c.size = Some(std::mem::offset_of!(
        windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_REGISTRATION,
        TransactionNotificationCallback
    ) as u16);
    install(&mut m, 2, c);
    assert_eq!(m.start("V200"), Status::SUCCESS);
    // A size smaller than its version's fields.
    let mut c = Config::new("Short", "370030");
    c.size = Some(16);
    install(&mut m, 3, c);
    assert_eq!(m.start("Short"), Status::INVALID_PARAMETER);
    assert_eq!(load_status(&m, "Short"), Some(Status::INVALID_PARAMETER));
}

#[test]
fn section_notification_is_read_only_from_version_0203_facts_2_6() {
    // facts.md §2.6: SectionNotificationCallback exists from 0x0203 (Windows 8). A 0x0202
    // registration's field is not read, so the callback is never called.
    let mut m = booted(&[]);
    let mut c = Config::new("V202", "370000");
    c.version = 0x0202;
    c.section_notification = true;
    install(&mut m, 0, c);
    assert_eq!(m.start("V202"), Status::SUCCESS);
    let f = m.kernel(|k| k.fltmgr.filter_by_name("V202").unwrap());
    assert!(m.kernel(|k| k.fltmgr.filter(f).callbacks.section_notification.is_none()));
}

#[test]
fn no_instances_key_is_object_name_not_found_facts_2_6_and_9() {
    // facts.md §9: installed with only `sc create` (no Instances key) => STATUS_OBJECT_NAME_NOT_FOUND.
    let mut m = booted(&[]);
    let mut c = Config::new("Bare", "370000");
    c.no_instances_key = true;
    install(&mut m, 0, c);
    assert_eq!(m.start("Bare"), Status::OBJECT_NAME_NOT_FOUND);
    assert_eq!(load_status(&m, "Bare"), Some(Status(0xC000_0034_u32 as i32)));
}

#[test]
fn both_instance_key_layouts_are_read_facts_2_5() {
    // facts.md §2.5: `Instances` before Windows 11 24H2, `Parameters\Instances` from 24H2.
    for (slot, layout) in [(0, InstanceLayout::Legacy), (1, InstanceLayout::Parameters)] {
        let mut m = booted(&[]);
        let mut c = Config::new("Layout", "370000");
        c.layout = layout;
        install(&mut m, slot, c);
        assert_eq!(m.start("Layout"), Status::SUCCESS, "{layout:?}");
        assert!(seen(slot).iter().any(|s| matches!(s, Seen::Setup { .. })), "{layout:?}");
    }
}

#[test]
fn without_the_filter_manager_registration_is_flt_not_initialized_facts_2_6() {
    // facts.md §2.6: STATUS_FLT_NOT_INITIALIZED when FltMgr is not loaded.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    let mut c = Config::new("Orphan", "370000");
    c.depends_on_fltmgr = false;
    install(&mut m, 0, c);
    assert_eq!(m.start("Orphan"), Status::FLT_NOT_INITIALIZED);
}

#[test]
fn a_demand_start_minifilter_starts_the_filter_manager_first() {
    // DependOnService = FltMgr: the service control manager starts the dependency first.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.boot();
    install(&mut m, 0, Config::new("Late", "370000"));
    assert_eq!(m.start("Late"), Status::SUCCESS);
    let setups = seen(0).iter().filter(|s| matches!(s, Seen::Setup { flags: 1, .. })).count();
    assert_eq!(setups, 1, "the Filter Manager attached to C: when it loaded late");
}

#[test]
fn forbidden_registrations_are_refused_with_a_verifier_event_facts_3() {
    // facts.md §3: IRP_MJ_POWER and IRP_MJ_DEVICE_CHANGE (no pre or post) and a post for
    // IRP_MJ_SHUTDOWN are forbidden; Windows' handling is undocumented, the simulator refuses the
    // registration with STATUS_INVALID_PARAMETER and a FORBIDDEN_OPERATION_REGISTRATION finding.
    let mut m = booted(&[]);
    install(&mut m, 0, Config::new("Power", "370000").op(mj::POWER, true, false));
    install(&mut m, 1, Config::new("Change", "370010").op(mj::DEVICE_CHANGE, false, true));
    install(&mut m, 2, Config::new("ShutPost", "370020").op(mj::SHUTDOWN, true, true));
    install(&mut m, 3, Config::new("ShutPre", "370030").op(mj::SHUTDOWN, true, false));
    assert_eq!(m.start("Power"), Status::INVALID_PARAMETER);
    assert_eq!(m.start("Change"), Status::INVALID_PARAMETER);
    assert_eq!(m.start("ShutPost"), Status::INVALID_PARAMETER);
    assert_eq!(m.start("ShutPre"), Status::SUCCESS);
    let f = m.findings();
    let forbidden: Vec<_> = f
        .iter()
        .filter(|(r, _, _)| *r == Rule::ForbiddenRegistration)
        .map(|(_, d, _)| d.clone().unwrap())
        .collect();
    assert_eq!(forbidden, ["Power", "Change", "ShutPost"]);
    assert!(f.iter().any(|(_, _, msg)| msg.contains("IRP_MJ_POWER")));
}

#[test]
fn name_provider_callbacks_come_together_facts_2_6() {
    // facts.md §2.6: STATUS_INVALID_PARAMETER for inconsistent name-provider callbacks.
    let mut m = booted(&[]);
    let mut c = Config::new("Names", "370000");
    c.generate_name = true;
    install(&mut m, 0, c);
    assert_eq!(m.start("Names"), Status::INVALID_PARAMETER);
}

#[test]
fn the_operation_table_ends_at_irp_mj_operation_end_facts_3() {
    // facts.md §3: the array is terminated by {IRP_MJ_OPERATION_END}; entries after it are not
    // registrations.
    let mut m = booted(&[("a.txt", b"x")]);
    let mut c = Config::new("End", "370000").op(mj::CREATE, true, false);
    c.after_end = vec![mj::CLEANUP];
    install(&mut m, 0, c);
    assert_eq!(m.start("End"), Status::SUCCESS);
    let v = m.volume("C:").unwrap();
    let h = m.open(v, "a.txt", CreateOptions::open()).unwrap();
    m.close_handle(h);
    let majors: Vec<u8> = seen(0)
        .iter()
        .filter_map(|s| match s {
            Seen::Pre { major, .. } => Some(*major),
            _ => None,
        })
        .collect();
    assert_eq!(majors, [mj::CREATE]);
}

#[test]
fn start_filtering_twice_is_invalid_parameter_facts_2_6() {
    let mut m = booted(&[]);
    install(&mut m, 0, Config::new("Twice", "370000"));
    assert_eq!(m.start("Twice"), Status::SUCCESS);
    let h = fltcommon::filter_handle(0);
    // SAFETY: a registered filter handle.
    let s = unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltStartFiltering(h) };
    assert_eq!(Status(s), Status::INVALID_PARAMETER);
}

#[test]
fn instances_attach_only_after_start_filtering_facts_2_6() {
    // A registered but not started filter gets no instance; FltStartFiltering attaches before it
    // returns.
    let mut m = booted(&[]);
    let mut c = Config::new("NoStart", "370000");
    c.start = false;
    install(&mut m, 0, c);
    assert_eq!(m.start("NoStart"), Status::SUCCESS);
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Setup { .. })));
    let h = fltcommon::filter_handle(0);
    // SAFETY: a registered filter handle.
    let s = unsafe { windows_sys::Wdk::Storage::FileSystem::Minifilters::FltStartFiltering(h) };
    assert_eq!(s, 0);
    assert!(seen(0).iter().any(|s| matches!(s, Seen::Setup { flags: 1, .. })));
}

#[test]
fn service_stop_support_follows_the_registration_facts_5() {
    // facts.md §5: with DO_NOT_SUPPORT_SERVICE_STOP, service stop fails and the unload callback is
    // not called; without an unload callback the filter cannot be stopped either.
    let mut m = booted(&[]);
    let mut c = Config::new("NoStop", "370000");
    c.flags = 0x1;
    install(&mut m, 0, c);
    let mut c = Config::new("NoUnload", "370010");
    c.unload = false;
    install(&mut m, 1, c);
    install(&mut m, 2, Config::new("Stoppable", "370020"));
    for n in ["NoStop", "NoUnload", "Stoppable"] {
        assert_eq!(m.start(n), Status::SUCCESS);
    }
    assert_eq!(m.stop("NoStop"), StopResult::NotStoppable);
    assert_eq!(m.stop("NoUnload"), StopResult::NotStoppable);
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Unload { .. })));
    assert_eq!(m.stop("Stoppable"), StopResult::Unloaded);
    assert!(seen(2).contains(&Seen::Unload { flags: 1 }));
}

#[test]
fn unregister_tears_down_every_instance_and_waits_for_rundown_facts_5() {
    // facts.md §5: FltUnregisterFilter tears down every instance (TeardownStart/Complete) and
    // blocks until rundown references (queued generic work items) are released.
    let mut m = machine(1);
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs));
    m.add_volume(VolumeSpec::new("E:", FsKind::Ntfs));
    m.install_filter_manager();
    m.boot();
    let c = Config::new("Rundown", "370000").with_pre(|_| (1, 0)).op(mj::CREATE, true, false);
    let mut c = c;
    // The unload callback queues a work item just before FltUnregisterFilter; a work item
    // queued during teardown is refused (STATUS_FLT_DELETING_OBJECT).
    c.on_unload = Some(std::rc::Rc::new(|_| {
        use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
        unsafe extern "system" fn work(
            item: PFLT_GENERIC_WORKITEM,
            _o: *const core::ffi::c_void,
            _c: *const core::ffi::c_void,
        ) {
            fltcommon::order_push("work item ran".into());
            unsafe { FltFreeGenericWorkItem(item) };
        }
        let item = unsafe { FltAllocateGenericWorkItem() };
        let s = unsafe {
            FltQueueGenericWorkItem(
                item,
                fltcommon::filter_handle(0) as *const _,
                Some(work),
                1,
                std::ptr::null(),
            )
        };
        assert_eq!(s, 0);
    }));
    c.on_teardown_start = Some(std::rc::Rc::new(|instance, _| {
        use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
        unsafe extern "system" fn never(
            _: PFLT_GENERIC_WORKITEM,
            _o: *const core::ffi::c_void,
            _c: *const core::ffi::c_void,
        ) {
        }
        let item = unsafe { FltAllocateGenericWorkItem() };
        let s = unsafe {
            FltQueueGenericWorkItem(item, instance as *const _, Some(never), 1, std::ptr::null())
        };
        assert_eq!(fsfilter::Status(s), fsfilter::Status::FLT_DELETING_OBJECT);
        unsafe { FltFreeGenericWorkItem(item) };
    }));
    install(&mut m, 0, c);
    assert_eq!(m.start("Rundown"), Status::SUCCESS);
    fltcommon::order_clear();
    assert_eq!(m.fltmc_unload("Rundown"), Status::SUCCESS);
    let order = fltcommon::order();
    let starts = order.iter().filter(|s| s.ends_with("teardown_start")).count();
    let completes = order.iter().filter(|s| s.ends_with("teardown_complete")).count();
    assert_eq!((starts, completes), (2, 2), "{order:?}");
    let ran = order.iter().position(|s| s == "work item ran").expect("the work item ran");
    let returned = order.iter().position(|s| s == "Rundown:unregistered").unwrap();
    assert!(ran < returned, "FltUnregisterFilter returned before its rundown: {order:?}");
    let unregistered = m
        .events()
        .iter()
        .position(|e| {
            matches!(&e.kind, EventKind::FltMgr { event: FltEvent::FilterUnregistered, .. })
        })
        .unwrap();
    assert!(unregistered > 0);
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
    // The reason was a (non-mandatory) filter unload.
    assert!(seen(0).iter().any(|s| matches!(s, Seen::TeardownStart { reason: 0x2, .. })));
    let _ = StartType::Demand;
}

#[test]
fn a_failed_driver_entry_must_have_unregistered_facts_2_6() {
    // facts.md §2.6: on failure after FltRegisterFilter the driver must FltUnregisterFilter; one
    // that does not is reported (FILTER_NOT_UNREGISTERED_AT_UNLOAD) and unregistered before its
    // image goes, so no callback of it runs later.
    let mut m = booted(&[("a.txt", b"x")]);
    let mut c = Config::new("Broken", "370000").op(mj::CREATE, true, false);
    c.fail_entry = true;
    install(&mut m, 0, c);
    assert_eq!(m.start("Broken"), Status::UNSUCCESSFUL);
    assert_eq!(rules(&m), [Rule::FilterNotUnregistered]);
    let v = m.volume("C:").unwrap();
    m.create(v, "a.txt", CreateOptions::open());
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Pre { .. })));
    assert_eq!(rules(&m), [Rule::FilterNotUnregistered]);
}

#[test]
fn a_filter_can_only_unregister_itself() {
    // The FltUnregisterFilter page: "A minifilter driver can only call FltUnregisterFilter to
    // unregister itself, not another minifilter driver."
    let mut m = booted(&[("a.txt", b"hello")]);
    install(&mut m, 0, Config::new("Victim", "370000").op(mj::CREATE, true, false));
    let rogue = Config::new("Rogue", "360000").op(mj::CREATE, true, false).with_pre(|_| {
        // SAFETY: a live filter handle, though not the caller's.
        unsafe {
            windows_sys::Wdk::Storage::FileSystem::Minifilters::FltUnregisterFilter(
                fltcommon::filter_handle(0),
            )
        };
        (1, 0)
    });
    install(&mut m, 1, rogue);
    assert_eq!(m.start("Victim"), Status::SUCCESS);
    assert_eq!(m.start("Rogue"), Status::SUCCESS);
    let c = m.volume("C:").unwrap();
    assert_eq!(m.create(c, "a.txt", CreateOptions::open()).status, Status::SUCCESS);
    assert!(rules(&m).contains(&Rule::InvalidFltObject), "{:?}", m.findings());
    // The victim is still registered and filtering.
    let pres = || seen(0).iter().filter(|s| matches!(s, Seen::Pre { major: 0, .. })).count();
    let before = pres();
    assert_eq!(m.create(c, "a.txt", CreateOptions::open()).status, Status::SUCCESS);
    assert_eq!(pres(), before + 1, "the victim still sees creates");
}

#[test]
fn start_filtering_and_unregistering_are_allowed_at_apc_level_and_attaching_waits_for_start() {
    // FltStartFiltering and FltUnregisterFilter: IRQL <= APC_LEVEL (their reference pages);
    // FltAttachVolume before FltStartFiltering: STATUS_FLT_FILTER_NOT_READY.
    let mut m = booted(&[]);
    let mut cfg = Config::new("Late", "370000");
    cfg.start = false;
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Late"), Status::SUCCESS);
    let c = m.volume("C:").unwrap();
    assert_eq!(m.filter_attach("Late", c, None), Status::FLT_FILTER_NOT_READY);
    assert!(seen(0).iter().all(|s| !matches!(s, Seen::Setup { .. })), "no instance set up");
    let image = m.kernel(|k| k.service_index("Late").and_then(|i| k.loader.services[i].image));
    let at_apc = |f: &dyn Fn()| {
        fsfilter_sim::kernel::call_into(image, || {
            fsfilter_sim::kernel::with(|k| k.set_irql(1));
            f();
            fsfilter_sim::kernel::with(|k| k.set_irql(0));
        })
    };
    // SAFETY: the filter's own handle.
    at_apc(&|| {
        assert_eq!(
            unsafe {
                windows_sys::Wdk::Storage::FileSystem::Minifilters::FltStartFiltering(
                    fltcommon::filter_handle(0),
                )
            },
            0
        )
    });
    assert!(seen(0).iter().any(|s| matches!(s, Seen::Setup { .. })), "attached once started");
    // SAFETY: as above.
    at_apc(&|| unsafe {
        windows_sys::Wdk::Storage::FileSystem::Minifilters::FltUnregisterFilter(
            fltcommon::filter_handle(0),
        )
    });
    // Neither call is reported for its IRQL (the callbacks the Filter Manager then runs inline
    // are, at APC_LEVEL: instance setup and teardown run at PASSIVE_LEVEL, facts.md §2.5).
    let calls: Vec<String> = m
        .findings()
        .into_iter()
        .map(|(_, _, message)| message)
        .filter(|msg| {
            msg.starts_with("FltStartFiltering") || msg.starts_with("FltUnregisterFilter")
        })
        .collect();
    assert_eq!(calls, Vec::<String>::new());
}

#[test]
fn fltmc_unload_calls_the_unload_callback_of_a_filter_that_refuses_service_stop_facts_5() {
    // facts.md §5: DO_NOT_SUPPORT_SERVICE_STOP makes service-stop requests (mandatory) fail
    // without calling the unload callback; a non-mandatory unload (`fltmc unload`, FilterUnload,
    // FltUnloadFilter) is not a service stop: it calls FilterUnloadCallback without
    // FLTFL_FILTER_UNLOAD_MANDATORY, and the callback's success unloads the filter.
    let mut m = booted(&[]);
    let mut c = Config::new("NoStop", "370000");
    c.flags = 0x1;
    install(&mut m, 0, c);
    assert_eq!(m.start("NoStop"), Status::SUCCESS);
    assert_eq!(m.stop("NoStop"), StopResult::NotStoppable);
    assert!(!seen(0).iter().any(|s| matches!(s, Seen::Unload { .. })));
    assert_eq!(m.fltmc_unload("NoStop"), Status::SUCCESS);
    let unloads: Vec<Seen> =
        seen(0).into_iter().filter(|s| matches!(s, Seen::Unload { .. })).collect();
    assert_eq!(unloads, [Seen::Unload { flags: 0 }], "called once, not mandatory");
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("NoStop").is_none()), "unregistered");
    assert_eq!(m.stop("NoStop"), StopResult::NotRunning, "the driver is gone");
    assert!(rules(&m).is_empty(), "{:?}", m.findings());
}

thread_local! {
    /// The driver object of "Bystander" and what FltRegisterFilter returned to "Thief".
    static BYSTANDER: std::cell::Cell<(usize, i32)> = const { std::cell::Cell::new((0, 0)) };
}

unsafe extern "system" fn bystander_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    BYSTANDER.with(|b| b.set((driver as usize, 0)));
    0
}

unsafe extern "system" fn thief_entry(
    _driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_REGISTRATION, FltRegisterFilter};
    // A valid registration with no callbacks, for another driver's object.
    let mut reg: FLT_REGISTRATION = unsafe { std::mem::zeroed() };
    reg.Size = size_of::<FLT_REGISTRATION>() as u16;
    reg.Version = 0x0203;
    let other = BYSTANDER.with(|b| b.get().0) as *const windows_sys::Wdk::Foundation::DRIVER_OBJECT;
    let mut filter = 0;
    let s = unsafe { FltRegisterFilter(other, &reg, &mut filter) };
    BYSTANDER.with(|b| b.set((b.get().0, s)));
    s
}

#[test]
fn a_driver_can_only_register_itself_facts_2_6() {
    // facts.md §2.6: "A driver can only register itself": FltRegisterFilter with another
    // driver's DRIVER_OBJECT is STATUS_INVALID_PARAMETER, and registers nothing for it (the
    // other driver's service has an Instances key, so nothing else would refuse it).
    let mut m = booted(&[]);
    let instances = fsfilter_sim::InstancesSpec {
        default_instance: "Bystander Instance".into(),
        instances: vec![fsfilter_sim::InstanceSpec {
            name: "Bystander Instance".into(),
            altitude: "370000".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    };
    let mut spec = fsfilter_sim::ServiceSpec::new("Bystander", bystander_entry, "minifilter");
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(instances);
    m.install(spec);
    let mut spec = fsfilter_sim::ServiceSpec::new("Thief", thief_entry, "minifilter");
    spec.depends_on = vec!["FltMgr".into()];
    m.install(spec);
    assert_eq!(m.start("Bystander"), Status::SUCCESS);
    assert_ne!(BYSTANDER.with(|b| b.get().0), 0);
    assert_eq!(m.start("Thief"), Status::INVALID_PARAMETER);
    assert_eq!(Status(BYSTANDER.with(|b| b.get().1)), Status::INVALID_PARAMETER);
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("Bystander").is_none()));
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("Thief").is_none()));
}

#[test]
fn context_definitions_beyond_the_documented_limits_are_refused_facts_2_6() {
    // FLT_CONTEXT_REGISTRATION's remarks: per context type at most three fixed-size definitions
    // and one FLT_VARIABLE_SIZED_CONTEXTS one; a definition with a ContextAllocateCallback must
    // be the type's only one; identical definitions are ignored after the first. Windows'
    // status is undocumented: the simulator refuses with STATUS_FLT_INVALID_CONTEXT_REGISTRATION
    // and a FORBIDDEN_CONTEXT_REGISTRATION finding.
    const INSTANCE: u16 = 0x2;
    const STREAM: u16 = 0x8;
    const VARIABLE: usize = usize::MAX;
    let mut m = booted(&[]);
    let cases = [
        ("Four", vec![(INSTANCE, 8), (INSTANCE, 16), (INSTANCE, 32), (INSTANCE, 64)], false),
        // Two variable-sized definitions that differ in their pool tags.
        ("TwoVar", vec![(STREAM, VARIABLE), (INSTANCE, 8), (STREAM, VARIABLE)], false),
        ("Alloc", vec![(INSTANCE, 8), (INSTANCE, 16)], true),
        // Within the limits: three fixed sizes and a variable one per type; an identical
        // definition repeated; one definition with an allocate callback.
        ("Three", vec![(INSTANCE, 8), (INSTANCE, 16), (INSTANCE, 32), (INSTANCE, VARIABLE)], false),
        ("Dup", vec![(STREAM, 8), (STREAM, 16), (STREAM, 32), (STREAM, 16)], false),
        ("OneAlloc", vec![(INSTANCE, 24)], true),
    ];
    for (slot, (name, contexts, allocator)) in cases.into_iter().enumerate() {
        let mut c = Config::new(name, &format!("{}", 370000 + slot * 10));
        c.contexts = contexts;
        c.context_allocator = allocator;
        c.context_distinct_tags = name == "TwoVar";
        if name == "OneAlloc" {
            c.on_setup = Some(std::rc::Rc::new(|_, _| {
                let f = fltcommon::filter_handle(5);
                let mut ctx = std::ptr::null_mut();
                let s = unsafe {
                    windows_sys::Wdk::Storage::FileSystem::Minifilters::FltAllocateContext(
                        f, INSTANCE, 24, 512, &mut ctx,
                    )
                };
                assert_eq!(s, 0);
                // The callback's memory is the context.
                let mine = fltcommon::ALLOCATED.with(|a| a.borrow().clone());
                assert_eq!(mine, [(ctx as usize, 24)]);
                unsafe {
                    windows_sys::Wdk::Storage::FileSystem::Minifilters::FltReleaseContext(ctx)
                };
                assert!(fltcommon::ALLOCATED.with(|a| a.borrow().is_empty()));
            }));
        }
        install(&mut m, slot, c);
    }
    for name in ["Four", "TwoVar", "Alloc"] {
        assert_eq!(m.start(name), Status::FLT_INVALID_CONTEXT_REGISTRATION, "{name}");
    }
    for name in ["Three", "Dup", "OneAlloc"] {
        assert_eq!(m.start(name), Status::SUCCESS, "{name}");
    }
    let f = m.findings();
    let refused: Vec<_> = f
        .iter()
        .filter(|(r, _, _)| *r == Rule::ForbiddenContextRegistration)
        .map(|(_, d, msg)| (d.clone().unwrap(), msg.clone()))
        .collect();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(refused[0].0, "Four");
    assert!(refused[0].1.contains("4 fixed-size"), "{refused:?}");
    assert_eq!(refused[1].0, "TwoVar");
    assert!(refused[1].1.contains("FLT_VARIABLE_SIZED_CONTEXTS"), "{refused:?}");
    assert_eq!(refused[2].0, "Alloc");
    assert!(refused[2].1.contains("ContextAllocateCallback"), "{refused:?}");
    assert_eq!(f.len(), 3, "{f:?}");
}

thread_local! {
    /// What the two FltRegisterFilter calls of "Twice" returned.
    static TWICE: std::cell::Cell<(i32, i32)> = const { std::cell::Cell::new((1, 1)) };
}

unsafe extern "system" fn twice_entry(
    driver: *const windows_sys::Wdk::Foundation::DRIVER_OBJECT,
    _path: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> i32 {
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
        FLT_REGISTRATION, FltRegisterFilter, FltUnregisterFilter,
    };
    // A valid registration with no callbacks, registered twice by the same driver.
    let mut reg: FLT_REGISTRATION = unsafe { std::mem::zeroed() };
    reg.Size = size_of::<FLT_REGISTRATION>() as u16;
    reg.Version = 0x0203;
    let (mut first, mut second) = (0, 0);
    let a = unsafe { FltRegisterFilter(driver, &reg, &mut first) };
    let b = unsafe { FltRegisterFilter(driver, &reg, &mut second) };
    TWICE.with(|t| t.set((a, b)));
    if a >= 0 {
        unsafe { FltUnregisterFilter(first) };
    }
    if b >= 0 {
        unsafe { FltUnregisterFilter(second) };
    }
    0
}

#[test]
fn a_second_registration_by_the_same_driver_is_a_name_collision() {
    // docs/simulator.md (Registration), a choice: a second FltRegisterFilter by a driver that
    // has a filter registered answers STATUS_OBJECT_NAME_COLLISION and registers nothing more.
    let mut m = booted(&[]);
    let instances = fsfilter_sim::InstancesSpec {
        default_instance: "Twice Instance".into(),
        instances: vec![fsfilter_sim::InstanceSpec {
            name: "Twice Instance".into(),
            altitude: "370000".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    };
    let mut spec = fsfilter_sim::ServiceSpec::new("Twice", twice_entry, "minifilter");
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(instances);
    m.install(spec);
    assert_eq!(m.start("Twice"), Status::SUCCESS);
    let (a, b) = TWICE.with(std::cell::Cell::get);
    assert_eq!((Status(a), Status(b)), (Status::SUCCESS, Status::OBJECT_NAME_COLLISION));
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("Twice").is_none()), "unregistered");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_null_out_pointer_to_the_object_routines_is_a_bugcheck_finding() {
    // FltRegisterFilter's RetFilter, FltGetFilterFromInstance's RetFilter,
    // FltGetVolumeFromInstance's and FltGetVolumeFromName's RetVolume and FltGetFileSystemType's
    // FileSystemType are out parameters none of their pages marks optional
    // (FltGetFilterFromInstance's and FltGetVolumeFromInstance's: "This parameter is required
    // and cannot be NULL"): Windows writes through them and bugchecks. The simulator wrote through the NULL pointer and
    // aborted its own process; as for the context routines, a BUGCHECK finding, nothing is
    // registered or referenced, and the call answers STATUS_INVALID_PARAMETER.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
    let mut m = booted(&[]);
    let mut bad = Config::new("NullReg", "370000");
    bad.null_retfilter = true;
    install(&mut m, 1, bad);
    assert_eq!(m.start("NullReg"), Status::INVALID_PARAMETER);
    assert!(m.kernel(|k| k.fltmgr.filter_by_name("NullReg").is_none()), "not registered");
    assert_eq!(rules(&m), [Rule::Bugcheck], "{:?}", m.findings());
    let mut cfg = Config::new("NullOut", "370000");
    cfg.on_setup = Some(std::rc::Rc::new(|i, _| {
        let f = fltcommon::filter_handle(0);
        let null = std::ptr::null_mut();
        let a = unsafe { FltGetFilterFromInstance(i, null) };
        let b = unsafe { FltGetVolumeFromInstance(i, null) };
        let name: Vec<u16> = "C:".encode_utf16().collect();
        let c = unsafe { FltGetVolumeFromName(f, &fltcommon::us(&name), null) };
        let d = unsafe { FltGetFileSystemType(i as *const _, std::ptr::null_mut()) };
        fltcommon::order_push(format!("{} {} {} {}", Status(a), Status(b), Status(c), Status(d)));
    }));
    install(&mut m, 0, cfg);
    assert_eq!(m.start("NullOut"), Status::SUCCESS);
    let p = "STATUS_INVALID_PARAMETER";
    let got: Vec<String> = fltcommon::order().into_iter().filter(|s| !s.contains(':')).collect();
    assert_eq!(got, [format!("{p} {p} {p} {p}")]);
    // No reference was taken: the unload does not wait for rundown that never comes.
    assert_eq!(m.fltmc_unload("NullOut"), Status::SUCCESS);
    assert_eq!(rules(&m), [Rule::Bugcheck; 5], "{:?}", m.findings());
}

#[test]
fn normalize_name_component_ex_is_read_only_from_version_0202_facts_2_6() {
    // facts.md §2.6: NormalizeNameComponentExCallback is a field of version 0x0202 (Vista RTM);
    // a 0x0201 registration's Size ends before it, so it is not read (as SectionNotification-
    // Callback is read only from 0x0203). A 0x0201 registration whose memory beyond its fields
    // holds a value there was refused as a name provider without a generator.
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_REGISTRATION;
    let mut m = booted(&[]);
    let mut c = Config::new("Old", "370000");
    c.version = 0x0201;
    c.size = Some(std::mem::offset_of!(FLT_REGISTRATION, NormalizeNameComponentExCallback) as u16);
    c.normalize_ex = true;
    install(&mut m, 0, c);
    assert_eq!(m.start("Old"), Status::SUCCESS);
    // From 0x0202 the field is read: the normalizer alone is an inconsistent name provider.
    let mut c = Config::new("New", "380000");
    c.version = 0x0202;
    c.normalize_ex = true;
    install(&mut m, 1, c);
    assert_eq!(m.start("New"), Status::INVALID_PARAMETER);
}
