//! The scanner as a minifilter on the simulated Filter Manager: on disk volumes the sections
//! come from `FltCreateSectionForDataScan` (after `FltRegisterForDataScan` in instance setup); on
//! the named-pipe file system, where the Filter Manager answers `STATUS_NOT_SUPPORTED`, from the
//! `FsRtlCreateSectionForDataScan` fallback (facts.md §6). Infected files are refused with
//! `FltCancelFileOpen`; a conflicting write aborts a scan through the section-conflict callback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter::{DataScanMode, Status};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, InstanceLayout, InstanceSpec, InstancesSpec,
    IoMode, Machine, MachineConfig, RegValue, ServiceSpec, StartType, VolumeId, VolumeSpec,
};

#[path = "../../testing/events.rs"]
mod events;

#[path = "../../../../sim/testing/reparse.rs"]
mod reparse;

mod redirector {
    fsfilter_minifilter::driver!(super::reparse::Redirector);
}
use events::{PATTERN, conflicts, fast_writes, notes, pattern, scans};

fn machine(params: &[(&str, RegValue)], volumes: &[VolumeSpec]) -> (Machine, Vec<VolumeId>) {
    machine_with(params, volumes, |_| {})
}

/// A machine as [`machine`]'s, `before` run once the volumes are there (to install a filter that
/// loads before the scanner, under it).
fn machine_with(
    params: &[(&str, RegValue)],
    volumes: &[VolumeSpec],
    before: impl FnOnce(&mut Machine),
) -> (Machine, Vec<VolumeId>) {
    let mut m = Machine::new(MachineConfig { seed: 11 });
    let _ = m.install_filter_manager();
    let ids = volumes.iter().cloned().map(|v| m.add_volume(v)).collect();
    before(&mut m);
    let mut spec = ServiceSpec::new("Scanner", scanner_minifilter::ENTRY, "minifilter");
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Anti-Virus".into());
    spec.depends_on = vec!["FltMgr".into()];
    spec.parameters = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    spec.instances = Some(InstancesSpec {
        default_instance: "Scanner Instance".into(),
        instances: vec![InstanceSpec {
            name: "Scanner Instance".into(),
            altitude: "323050".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
    m.boot();
    (m, ids)
}

fn infected_body() -> Vec<u8> {
    let mut body = b"header ".to_vec();
    body.extend_from_slice(PATTERN);
    body
}

#[test]
fn on_a_disk_volume_the_filter_manager_makes_the_sections() {
    let (mut m, v) = machine(
        &[pattern()],
        &[VolumeSpec::new("C:", FsKind::Ntfs)
            .file("clean.txt", b"fine")
            .file("bad.exe", &infected_body())],
    );
    let clean = m.open(v[0], "clean.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.create(v[0], "bad.exe", CreateOptions::open()).status, Status::ACCESS_DENIED);
    assert_eq!(notes(&m), ["scanner: open clean", "scanner: open infected"]);
    assert_eq!(scans(&m), [(DataScanMode::FilterManager, Status::SUCCESS); 2]);
    m.close_handle(clean);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn on_named_pipes_the_fsrtl_fallback_scans() {
    // FltRegisterForDataScan answers STATUS_NOT_SUPPORTED on NPFS; the scanner attaches there only
    // with SupportNpfsMsfs, and scans through FsRtlCreateSectionForDataScan.
    let (mut m, v) = machine(
        &[pattern(), ("SupportNpfsMsfs", RegValue::Dword(1))],
        &[VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs)],
    );
    let setups: Vec<DataScanMode> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback {
                callback: Callback::InstanceSetup { data_scan, status, .. },
                ..
            } if status.is_success() => Some(data_scan),
            _ => None,
        })
        .collect();
    assert_eq!(setups, [DataScanMode::FsRtlFallback]);
    let h = m.create(v[0], "pipe1", CreateOptions::default()).handle.unwrap();
    assert_eq!(m.write(h, None, &infected_body(), IoMode::Cached).status, Status::SUCCESS);
    m.close_handle(h);
    // The next open of the pipe finds the pattern in its data.
    assert_eq!(m.create(v[0], "pipe1", CreateOptions::open()).status, Status::ACCESS_DENIED);
    assert!(scans(&m).iter().all(|(mode, _)| *mode == DataScanMode::FsRtlFallback));
    assert!(notes(&m).contains(&"scanner: open infected".to_owned()), "{:?}", notes(&m));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn without_the_flag_named_pipes_are_not_attached() {
    let (m, _) = machine(&[pattern()], &[VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs)]);
    let setups = m
        .events()
        .into_iter()
        .filter(|e| {
            matches!(&e.kind, EventKind::Callback { callback: Callback::InstanceSetup { .. }, .. })
        })
        .count();
    assert_eq!(setups, 0, "SUPPORT_NPFS_MSFS is off: the Filter Manager does not offer the volume");
}

#[test]
fn a_conflicting_write_reaches_the_section_conflict_callback() {
    // facts.md §6: the Filter Manager notifies the section owner of conflicting I/O; the scan
    // holding it gives up.
    let (mut m, v) = machine(
        &[pattern(), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", &[b'a'; 1024])],
    );
    let writer = m.open(v[0], "f.txt", CreateOptions::open()).unwrap();
    m.schedule(5, move |m| {
        assert_eq!(
            m.write(writer, Some(0), &[b'b'; 512], IoMode::NonCached).status,
            Status::SUCCESS
        );
    });
    let reader = m.open(v[0], "f.txt", CreateOptions::open()).expect("the open goes through");
    let conflicts = conflicts(&m);
    assert_eq!(conflicts, 1);
    assert_eq!(notes(&m), ["scanner: open clean", "scanner: open aborted"]);
    m.close_handle(reader);
    m.close_handle(writer);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_conflicting_write_aborts_a_scan_on_the_fsrtl_fallback() {
    // facts.md §6: with FsRtlCreateSectionForDataScan (the fallback where FltRegisterForDataScan
    // answers STATUS_NOT_SUPPORTED) the caller handles conflicts, not the Filter Manager: the
    // minifilter backend closes the section before the write goes on and tells the filter, as
    // the legacy backend does.
    let (mut m, v) = machine(
        &[pattern(), ("SupportNpfsMsfs", RegValue::Dword(1)), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new(r"\Device\NamedPipe", FsKind::Npfs)],
    );
    let writer = m.create(v[0], "pipe1", CreateOptions::default()).handle.unwrap();
    assert_eq!(m.write(writer, None, &[b'a'; 512], IoMode::Cached).status, Status::SUCCESS);
    m.schedule(5, move |m| {
        assert_eq!(m.write(writer, None, &[b'b'; 512], IoMode::Cached).status, Status::SUCCESS);
    });
    let reader = m.create(v[0], "pipe1", CreateOptions::open()).handle.expect("the open goes on");
    let conflicts = conflicts(&m);
    assert_eq!(conflicts, 1);
    assert!(notes(&m).contains(&"scanner: open aborted".to_owned()), "{:?}", notes(&m));
    assert!(scans(&m).iter().all(|(mode, _)| *mode == DataScanMode::FsRtlFallback));
    m.close_handle(reader);
    m.close_handle(writer);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_conflicting_fast_io_write_reaches_the_section_conflict_callback() {
    // A cached write to a file whose cache is set up comes as fast I/O; the Filter Manager
    // synchronizes it with the open section all the same (facts.md §6).
    let (mut m, v) = machine(
        &[pattern(), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", &[b'a'; 1024])],
    );
    let writer = m.open(v[0], "f.txt", CreateOptions::open()).unwrap();
    // The first cached transfer sets the cache up (an IRP); the next ones are fast I/O.
    assert_eq!(m.read(writer, Some(0), 16, IoMode::Cached).status, Status::SUCCESS);
    m.schedule(5, move |m| {
        assert_eq!(m.write(writer, Some(0), &[b'b'; 512], IoMode::Cached).status, Status::SUCCESS);
    });
    let reader = m.open(v[0], "f.txt", CreateOptions::open()).expect("the open goes through");
    let fast_writes = fast_writes(&m);
    assert_eq!(fast_writes, 1, "the write came as fast I/O");
    let conflicts = conflicts(&m);
    assert_eq!(conflicts, 1);
    assert_eq!(notes(&m), ["scanner: open clean", "scanner: open aborted"]);
    m.close_handle(reader);
    m.close_handle(writer);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_write_in_flight_when_the_section_is_made_aborts_the_scan_before_it_starts() {
    // facts.md §6: the section-conflict notification "may arrive before
    // FltCreateSectionForDataScan returns": a non-cached write is still in flight (the storage
    // completes it from a DPC 1 ms later) when the scanner makes its section for an open.
    let (mut m, v) = machine(
        &[pattern(), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", &[b'a'; 1024])],
    );
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let writer = m.open(v[0], "f.txt", CreateOptions::open()).unwrap();
    let wrote = std::rc::Rc::new(std::cell::Cell::new(None));
    let opened = std::rc::Rc::new(std::cell::Cell::new(None));
    let (w, o) = (wrote.clone(), opened.clone());
    m.schedule(0, move |m| {
        // Another thread opens the file as soon as this one waits for its write.
        m.schedule(0, move |m| o.set(Some(m.open(v[0], "f.txt", CreateOptions::open()))));
        w.set(Some(m.write(writer, Some(0), &[b'b'; 512], IoMode::NonCached)));
    });
    m.settle();
    assert_eq!(wrote.take().map(|r| r.status), Some(Status::SUCCESS));
    let reader = opened.take().expect("the open ran").expect("the open goes through");
    // The notification comes before the scan's section is reported made.
    let order: Vec<&str> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { callback: Callback::SectionConflict { .. }, .. } => {
                Some("conflict")
            }
            EventKind::Callback { callback: Callback::DataScan { .. }, .. } => Some("section"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["section", "conflict", "section"]);
    assert_eq!(notes(&m), ["scanner: open clean", "scanner: open aborted"]);
    m.close_handle(reader);
    m.close_handle(writer);
    m.settle();
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn bytes_past_the_end_of_the_file_are_not_scanned() {
    // ZwMapViewOfSection rounds the view up to whole pages, zero-filled past the end of the
    // file: a pattern of zero bytes must not match there.
    let (mut m, v) = machine(
        &[("Pattern", RegValue::Sz("hex:0000".into()))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"no zero bytes here")],
    );
    let r = m.create(v[0], "a.txt", CreateOptions::open());
    assert_eq!(r.status, Status::SUCCESS, "notes: {:?}", notes(&m));
    m.close_handle(r.handle.unwrap());
}

#[test]
fn a_concurrent_open_of_an_infected_file_is_refused_too() {
    // facts.md §6: one data-scan section per stream per instance. A second open of the same
    // file while the first one's scan holds the section waits for it; it must not let the
    // infected file through unscanned. (In the simulator the second open runs on top of the
    // first one's thread, which cannot go on before it returns: its waits run out, and the
    // stream it could not scan is refused.)
    let (mut m, v) = machine(
        &[pattern(), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("bad.exe", &infected_body())],
    );
    let c = v[0];
    let second = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = second.clone();
    m.schedule(5, move |m| {
        seen.set(Some(m.create(c, "bad.exe", CreateOptions::open()).status));
    });
    assert_eq!(m.create(c, "bad.exe", CreateOptions::open()).status, Status::ACCESS_DENIED);
    m.settle();
    assert_eq!(second.get(), Some(Status::ACCESS_DENIED), "notes: {:?}", notes(&m));
    assert_eq!(notes(&m), ["scanner: open busy", "scanner: open infected"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Installs `sim/testing/reparse.rs`'s redirector (a minifilter at 135000, under the scanner): it redirects
/// `C:\redir\*` to `D:` (rule 27).
fn install_redirector(m: &mut Machine) {
    let mut spec = ServiceSpec::new(reparse::REDIRECTOR, redirector::ENTRY, "minifilter");
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Virtualization".into());
    spec.depends_on = vec!["FltMgr".into()];
    spec.instances = Some(InstancesSpec {
        default_instance: "Redirector Instance".into(),
        instances: vec![InstanceSpec {
            name: "Redirector Instance".into(),
            altitude: "135000".into(),
            flags: 0,
        }],
        layout: InstanceLayout::Both,
    });
    m.install(spec);
}

#[test]
fn a_redirected_open_is_scanned_once_by_its_reparsed_create() {
    // The create of C:\redir\bad.exe ends STATUS_REPARSE under the scanner: nothing is open to
    // scan or cancel (rule 27). The reparsed create opens D:\bad.exe, which is scanned once and
    // refused.
    let (mut m, v) = machine_with(
        &[pattern()],
        &[
            VolumeSpec::new("C:", FsKind::Ntfs).file(r"redir\bad.exe", b"clean on C"),
            VolumeSpec::new("D:", FsKind::Ntfs).file("bad.exe", &infected_body()),
        ],
        install_redirector,
    );
    let r = m.create(v[0], r"redir\bad.exe", CreateOptions::open());
    assert_eq!((r.status, r.handle), (Status::ACCESS_DENIED, None), "{:?}", m.findings());
    assert_eq!(r.reparsed.map(|r| (r.count, r.volume)), Some((1, v[1])));
    assert_eq!(notes(&m), ["scanner: open infected"]);
    assert_eq!(scans(&m), [(DataScanMode::FilterManager, Status::SUCCESS)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
