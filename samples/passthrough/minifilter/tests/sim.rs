//! The passthrough minifilter, built from the real backend, runs on the simulator's Filter
//! Manager: registration, instance setup on every volume before FltStartFiltering returns,
//! pre/post callbacks for IRPs and fast I/O, and a service stop that tears it down cleanly.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use fsfilter::{OperationKind, Status};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FltEvent, FsKind, InstanceLayout, InstanceSpec,
    InstancesSpec, IoMode, Machine, MachineConfig, ServiceSpec, StopResult, VolumeSpec,
};

fn machine() -> Machine {
    let mut m = Machine::new(MachineConfig { seed: 3 });
    m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"hello"));
    m.add_volume(VolumeSpec::new("D:", FsKind::Cdfs).file("b.txt", b"cd"));
    let mut spec = ServiceSpec::new("PassThrough", passthrough_minifilter::ENTRY, "minifilter");
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(InstancesSpec {
        default_instance: "PassThrough Instance".into(),
        instances: vec![InstanceSpec {
            name: "PassThrough Instance".into(),
            altitude: "370030".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
    m.boot();
    m
}

fn callbacks(m: &Machine) -> Vec<(Option<String>, Option<u32>, Callback)> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { volume, io, callback, .. } => {
                Some((volume.map(String::from), io.map(|r| r.0), callback))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn passthrough_runs_on_the_simulated_filter_manager() {
    let mut m = machine();
    assert_eq!(m.start("PassThrough"), Status::SUCCESS);
    let setups: Vec<Option<String>> = callbacks(&m)
        .into_iter()
        .filter(|(_, _, c)| matches!(c, Callback::InstanceSetup { status: Status::SUCCESS, .. }))
        .map(|(v, _, _)| v)
        .collect();
    assert_eq!(setups, [Some("C:".to_owned()), Some("D:".to_owned())]);

    let c = m.volume("C:").unwrap();
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 5, IoMode::Cached).data, b"hello");
    let fast = m.read(h, Some(1), 3, IoMode::Cached);
    assert!(fast.fast_io);
    assert_eq!(fast.data, b"ell");
    m.close_handle(h);
    let ops: Vec<(&'static str, Option<u32>, OperationKind)> = callbacks(&m)
        .into_iter()
        .filter_map(|(_, io, c)| match c {
            Callback::Pre { major, kind, .. } => Some((major.name().unwrap(), io, kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("IRP_MJ_CREATE", Some(0), OperationKind::Irp),
            // The first cached read is an IRP (caching not initiated yet), the next fast I/O.
            ("IRP_MJ_READ", Some(1), OperationKind::Irp),
            ("IRP_MJ_READ", Some(2), OperationKind::FastIo),
            ("IRP_MJ_CLEANUP", Some(3), OperationKind::Irp),
            ("IRP_MJ_CLOSE", Some(4), OperationKind::Irp),
        ]
    );

    assert_eq!(m.stop("PassThrough"), StopResult::Unloaded);
    let teardowns = m
        .flt_events()
        .into_iter()
        .filter(|(_, _, e)| matches!(e, FltEvent::TeardownComplete { .. }))
        .count();
    assert_eq!(teardowns, 2);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
