//! The scanner as a legacy filter in the simulator: every scan goes through
//! `FsRtlCreateSectionForDataScan` (the legacy model has no Filter Manager), infected files are
//! refused with `IoCancelFileOpen`, modified streams are rescanned at cleanup, and conflicting
//! writes abort a scan that holds its section.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

use fsfilter::{DataScanMode, Status};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoMode, Machine, MachineConfig, RegValue,
    ServiceSpec, StartType, VolumeId, VolumeSpec,
};

#[path = "../../testing/events.rs"]
mod events;

#[path = "../../../../sim/testing/reparse.rs"]
mod reparse;

mod redirector {
    fsfilter_legacy::driver!(super::reparse::Redirector);
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
    let ids = volumes.iter().cloned().map(|v| m.add_volume(v)).collect();
    before(&mut m);
    let mut spec = ServiceSpec::new("Scanner", scanner_legacy::ENTRY, "legacy");
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Anti-Virus".into());
    spec.parameters = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    m.install(spec);
    m.boot();
    (m, ids)
}

fn infected_body() -> Vec<u8> {
    let mut body = b"header ".to_vec();
    body.extend_from_slice(PATTERN);
    body.extend_from_slice(b" trailer");
    body
}

#[test]
fn an_infected_file_is_refused_and_a_clean_one_opens() {
    let (mut m, v) = machine(
        &[pattern()],
        &[VolumeSpec::new("C:", FsKind::Ntfs)
            .file("clean.txt", b"nothing to see here")
            .file("bad.exe", &infected_body())],
    );
    let c = v[0];
    let clean = m.open(c, "clean.txt", CreateOptions::open());
    assert!(clean.is_ok(), "{clean:?}");
    let bad = m.create(c, "bad.exe", CreateOptions::open());
    assert_eq!(bad.status, Status::ACCESS_DENIED);
    assert!(bad.handle.is_none());
    assert_eq!(notes(&m), ["scanner: open clean", "scanner: open infected"]);
    // The scans went through FsRtl sections: data_scan events in fallback mode.
    assert_eq!(scans(&m), [(DataScanMode::FsRtlFallback, Status::SUCCESS); 2]);
    // The file system saw the infected file opened and then closed (IoCancelFileOpen), and
    // nothing leaked: no handle, no section, no file object.
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    assert_eq!(m.file_contents(c, "bad.exe").unwrap(), infected_body(), "nothing was changed");
    m.close_handle(clean.unwrap());
}

#[test]
fn a_file_infected_by_a_write_is_found_at_cleanup_and_refused_next_time() {
    let (mut m, v) = machine(&[pattern()], &[VolumeSpec::new("C:", FsKind::Ntfs)]);
    let c = v[0];
    let h = m.create(c, "doc.txt", CreateOptions::create()).handle.unwrap();
    assert_eq!(m.write(h, Some(0), &infected_body(), IoMode::Cached).status, Status::SUCCESS);
    m.close_handle(h);
    let reopened = m.create(c, "doc.txt", CreateOptions::open());
    assert_eq!(reopened.status, Status::ACCESS_DENIED);
    assert_eq!(
        notes(&m),
        ["scanner: open clean", "scanner: cleanup infected", "scanner: open infected"],
        "the empty new file is clean; the write marks it, cleanup rescans it"
    );
}

#[test]
fn a_conflicting_write_aborts_the_scan_holding_the_section() {
    // facts.md §6: with FsRtlCreateSectionForDataScan the caller handles conflicts: a write
    // that arrives while the section is open (the scan engine takes 20 ms) gets it closed; the
    // scan gives up, the open goes through, and the stream is scanned again at cleanup.
    let (mut m, v) = machine(
        &[pattern(), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", &[b'a'; 1024])],
    );
    let c = v[0];
    let writer = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    m.schedule(5, move |m| {
        let r = m.write(writer, Some(0), &[b'b'; 512], IoMode::NonCached);
        assert_eq!(r.status, Status::SUCCESS);
    });
    let reader = m.open(c, "f.txt", CreateOptions::open()).expect("the open goes through");
    let conflicts = conflicts(&m);
    assert_eq!(conflicts, 1);
    assert_eq!(notes(&m), ["scanner: open clean", "scanner: open aborted"]);
    m.close_handle(reader);
    assert_eq!(notes(&m).last().map(String::as_str), Some("scanner: cleanup clean"));
    m.close_handle(writer);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn scans_on_every_kind_of_volume_the_legacy_model_sees() {
    // The legacy model has no FltRegisterForDataScan: every volume gets the FsRtl fallback,
    // named pipes included (the minifilter would get STATUS_NOT_SUPPORTED there first).
    let (mut m, v) = machine(
        &[pattern()],
        &[
            VolumeSpec::new("C:", FsKind::Ntfs).file("a.bin", &infected_body()),
            VolumeSpec::new("F:", FsKind::Fat).file("b.bin", &infected_body()),
        ],
    );
    for (vol, name) in [(v[0], "a.bin"), (v[1], "b.bin")] {
        assert_eq!(m.create(vol, name, CreateOptions::open()).status, Status::ACCESS_DENIED);
    }
    let setups: Vec<DataScanMode> = m
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { callback: Callback::InstanceSetup { data_scan, .. }, .. } => {
                Some(data_scan)
            }
            _ => None,
        })
        .collect();
    assert_eq!(setups, [DataScanMode::FsRtlFallback; 2]);
}

#[test]
fn a_conflicting_fast_io_write_aborts_the_scan_too() {
    // A cached write to a file whose cache is set up goes through the fast-I/O path, not as an
    // IRP: it changes the data all the same and conflicts with the FsRtl section (facts.md §6).
    let (mut m, v) = machine(
        &[pattern(), ("ScanLatency", RegValue::Dword(20))],
        &[VolumeSpec::new("C:", FsKind::Ntfs).file("f.txt", &[b'a'; 1024])],
    );
    let c = v[0];
    let writer = m.open(c, "f.txt", CreateOptions::open()).unwrap();
    // The first cached transfer sets the cache up (an IRP); the next ones are fast I/O.
    assert_eq!(m.read(writer, Some(0), 16, IoMode::Cached).status, Status::SUCCESS);
    m.schedule(5, move |m| {
        let r = m.write(writer, Some(0), &[b'b'; 512], IoMode::Cached);
        assert_eq!(r.status, Status::SUCCESS);
    });
    let reader = m.open(c, "f.txt", CreateOptions::open()).expect("the open goes through");
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
fn a_modified_stream_is_rescanned_at_cleanup_even_when_the_table_is_full() {
    // The scanner remembers 32 modified streams at a time. With 32 written files still open, a
    // 33rd file infected by a write must still be rescanned when its handle closes.
    let (mut m, v) = machine(&[pattern()], &[VolumeSpec::new("C:", FsKind::Ntfs)]);
    let c = v[0];
    let mut open = Vec::new();
    for i in 0..32 {
        let h = m.create(c, &format!("f{i}.txt"), CreateOptions::create()).handle.unwrap();
        assert_eq!(m.write(h, Some(0), b"clean data", IoMode::Cached).status, Status::SUCCESS);
        open.push(h);
    }
    let h = m.create(c, "doc.txt", CreateOptions::create()).handle.unwrap();
    assert_eq!(m.write(h, Some(0), &infected_body(), IoMode::Cached).status, Status::SUCCESS);
    m.close_handle(h);
    assert_eq!(notes(&m).last().map(String::as_str), Some("scanner: cleanup infected"));
    for h in open {
        m.close_handle(h);
    }
    assert_eq!(notes(&m).last().map(String::as_str), Some("scanner: cleanup clean"));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// Installs `sim/testing/reparse.rs`'s redirector (a legacy filter loaded before the scanner,
/// under it): it redirects `C:\redir\*` to `D:` (rule 27).
fn install_redirector(m: &mut Machine) {
    let mut spec = ServiceSpec::new(reparse::REDIRECTOR, redirector::ENTRY, "legacy");
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Virtualization".into());
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
    assert_eq!(scans(&m), [(DataScanMode::FsRtlFallback, Status::SUCCESS)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
