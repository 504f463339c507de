//! The redirect sample end to end, shared by `minifilter/tests/redirect.rs` and
//! `legacy/tests/redirect.rs` (included with `#[path]`): each gives a machine with the filter
//! installed in its model; every check holds in both models.
//!
//! The machine has two NTFS volumes: `C:` (`\Device\HarddiskVolume1`) and `D:`
//! (`\Device\HarddiskVolume2`), and the mapping `C:\old` → `D:\new`. Both volumes hold an
//! `a.txt` under their mapped folder, with different contents, so a read tells which one opened.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use fsfilter::{MajorFunction, Status};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoMode, IoRequest, IoResult, Machine,
    MachineConfig, RegValue, Reparsed, RequestRef, ServiceSpec, VolumeSpec,
};

/// The filter's service name in these tests.
pub const SERVICE: &str = "Redirect";

/// `OldName`: `C:\old`.
pub const OLD: &str = r"\Device\HarddiskVolume1\old";

/// `NewName`: `D:\new`.
pub const NEW: &str = r"\Device\HarddiskVolume2\new";

/// What `C:\old\a.txt` holds: never read through the filter.
pub const OLD_DATA: &[u8] = b"the old one, on C:";

/// What `D:\new\a.txt` holds.
pub const NEW_DATA: &[u8] = b"the new one, on D:, a little longer";

/// A machine with `C:` and `D:` and the filter installed by `install` with the mapping
/// [`OLD`] → [`NEW`] (or `mapping`), started; the status of its start.
pub fn machine_with(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
    mapping: (&str, &str),
) -> (Machine, Status) {
    let mut m = Machine::new(MachineConfig { seed: 11 });
    m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file(r"old\a.txt", OLD_DATA)
            .file(r"old\d\b.txt", b"old b")
            .file(r"older\a.txt", b"older, on C:")
            .file("top.txt", b"top of C:"),
    );
    m.add_volume(
        VolumeSpec::new("D:", FsKind::Ntfs)
            .file(r"new\a.txt", NEW_DATA)
            .file(r"new\d\b.txt", b"new b, on D:")
            .file(r"older\a.txt", b"older, on D:"),
    );
    let mut spec = ServiceSpec::new(SERVICE, entry, model);
    spec.parameters.push(("OldName".into(), RegValue::Sz(mapping.0.into())));
    spec.parameters.push(("NewName".into(), RegValue::Sz(mapping.1.into())));
    install(&mut m, spec);
    m.boot();
    let status = m.start(SERVICE);
    (m, status)
}

/// [`machine_with`] the mapping [`OLD`] → [`NEW`], which must start.
pub fn machine(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
) -> Machine {
    let (m, status) = machine_with(install, entry, model, (OLD, NEW));
    assert_eq!(status, Status::SUCCESS);
    m
}

/// The filter's pre callbacks from the event `from` on, each with its request:
/// (volume, major, outcome, completion status).
pub fn pres(
    m: &Machine,
    from: usize,
) -> Vec<(String, MajorFunction, &'static str, Option<Status>)> {
    m.events()
        .into_iter()
        .skip(from)
        .filter_map(|e| match e.kind {
            EventKind::Callback {
                driver,
                volume,
                callback: Callback::Pre { major, outcome, status, .. },
                ..
            } if driver.as_str() == SERVICE => {
                let volume = volume.map_or_else(String::new, |v| v.as_str().to_owned());
                Some((volume, major, outcome, status))
            }
            _ => None,
        })
        .collect()
}

/// The requests that started from the event `from` on: (request, volume, major, fast I/O).
pub fn requests(m: &Machine, from: usize) -> Vec<(RequestRef, String, MajorFunction, bool)> {
    m.events()
        .into_iter()
        .skip(from)
        .filter_map(|e| match e.kind {
            EventKind::IoStart { io, volume, major, fast_io } => {
                Some((io, volume.as_str().to_owned(), major, fast_io))
            }
            _ => None,
        })
        .collect()
}

/// The filter's notes, in order.
pub fn notes(m: &Machine) -> Vec<String> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { driver, callback: Callback::Note { text }, .. }
                if driver.as_str() == SERVICE =>
            {
                Some(text)
            }
            _ => None,
        })
        .collect()
}

/// Opens `path` on `volume` for reading, reads it whole and closes it: the create's result, the
/// data, and the number of events before the create (where its callbacks start).
pub fn open_and_read(m: &mut Machine, volume: &str, path: &str) -> (IoResult, Vec<u8>, usize) {
    let from = m.events().len();
    let v = m.volume(volume).unwrap();
    let r = m.create(v, path, CreateOptions::open());
    let Some(h) = r.handle else { return (r, Vec::new(), from) };
    let data = m.read(h, Some(0), 4096, IoMode::Cached).data;
    m.close_handle(h);
    (r, data, from)
}

const COMPLETE: &str = "FLT_PREOP_COMPLETE";
const PASS: &str = "FLT_PREOP_SUCCESS_NO_CALLBACK";
const DISALLOW: &str = "FLT_PREOP_DISALLOW_FASTIO";

/// An open of `C:\old\a.txt` opens `D:\new\a.txt`: its data is read back. The open made two
/// creates, each a request: the first on C:'s stack, where the filter completed it
/// `STATUS_REPARSE`, the second on D:'s, where it passed; the I/O manager says it followed one
/// reparse to D:. The same for a name deeper down and in another case, and for the folder itself.
pub fn check_an_open_under_the_old_name_opens_the_new_one(mut m: Machine) {
    let d = m.volume("D:").unwrap();
    let (r, data, from) = open_and_read(&mut m, "C:", r"old\a.txt");
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(data, NEW_DATA, "D:'s file, not C:'s");
    assert_eq!(r.reparsed, Some(Reparsed { count: 1, volume: d }));
    let creates: Vec<_> = requests(&m, from)
        .into_iter()
        .filter(|q| q.2 == MajorFunction::Create)
        .map(|(_, volume, _, fast)| (volume, fast))
        .collect();
    assert_eq!(creates, [("C:".into(), false), ("D:".into(), false)]);
    assert_eq!(
        pres(&m, from),
        [
            ("C:".into(), MajorFunction::Create, COMPLETE, Some(Status::REPARSE)),
            ("D:".into(), MajorFunction::Create, PASS, None),
        ]
    );
    assert_eq!(notes(&m), [redirect::notes::REDIRECTED]);
    assert_eq!(m.findings(), []);

    let (r, data, _) = open_and_read(&mut m, "C:", r"OLD\D\B.TXT");
    assert_eq!((r.status, data.as_slice()), (Status::SUCCESS, &b"new b, on D:"[..]));
    assert_eq!(r.reparsed.map(|p| p.volume), Some(d));
    let (r, _, from) = open_and_read(&mut m, "C:", "old");
    assert_eq!(r.status, Status::SUCCESS);
    let pre = pres(&m, from);
    assert_eq!(pre.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["C:", "D:"]);
    assert_eq!(notes(&m).len(), 3);
    // The file on C: was never opened through the mapping.
    assert_eq!(m.file_contents(m.volume("C:").unwrap(), r"old\a.txt").unwrap(), OLD_DATA);
    assert_eq!(m.findings(), []);
}

/// A name outside the mapping, one that only shares its prefix (`\older`), the same folder on
/// the other volume: each opens where it was asked, by one create, untouched.
pub fn check_names_outside_the_mapping_are_untouched(mut m: Machine) {
    for (volume, path, expected) in [
        ("C:", "top.txt", &b"top of C:"[..]),
        ("C:", r"older\a.txt", b"older, on C:"),
        ("D:", r"older\a.txt", b"older, on D:"),
        ("D:", r"new\a.txt", NEW_DATA),
    ] {
        let (r, data, from) = open_and_read(&mut m, volume, path);
        assert_eq!((r.status, data.as_slice()), (Status::SUCCESS, expected), "{volume}{path}");
        assert_eq!(r.reparsed, None, "{volume}{path}");
        let pre = pres(&m, from);
        assert_eq!(pre, [(volume.into(), MajorFunction::Create, PASS, None)], "{volume}{path}");
    }
    assert_eq!(notes(&m), Vec::<String>::new());
    // A file created in C:\older stays on C:.
    let c = m.volume("C:").unwrap();
    let h = m.open(c, r"older\new.txt", CreateOptions::default()).unwrap();
    m.close_handle(h);
    assert!(m.file_contents(c, r"older\new.txt").is_some());
    assert!(m.file_contents(m.volume("D:").unwrap(), r"older\new.txt").is_none());
    assert_eq!(m.findings(), []);
}

/// `NtQueryFullAttributesFile` on `C:\old\a.txt`: its fast-I/O query open on C: is refused, the
/// IRP path's create is redirected, and the query on D: (which tries fast I/O again) answers
/// with `D:\new\a.txt`'s attributes (its size).
pub fn check_a_query_open_of_a_redirected_name_takes_the_irp_path(mut m: Machine) {
    let c = m.volume("C:").unwrap();
    let from = m.events().len();
    let r = m.io(IoRequest::QueryAttributes { volume: c, path: r"old\a.txt" });
    assert_eq!(r.status, Status::SUCCESS);
    // One reparse followed. (`reparsed.volume` names the last create's volume, C:: D:'s answer
    // came from its FastIoQueryOpen, with no create.)
    assert_eq!(r.reparsed.map(|p| p.count), Some(1));
    // FILE_NETWORK_OPEN_INFORMATION: EndOfFile at offset 40.
    let end = u64::from_le_bytes(r.data[40..48].try_into().unwrap());
    assert_eq!(end, NEW_DATA.len() as u64, "D:'s file's size");
    let pre = pres(&m, from);
    assert_eq!(
        pre[..3],
        [
            ("C:".into(), MajorFunction::NetworkQueryOpen, DISALLOW, None),
            ("C:".into(), MajorFunction::Create, COMPLETE, Some(Status::REPARSE)),
            ("D:".into(), MajorFunction::NetworkQueryOpen, PASS, None),
        ],
        "{pre:?}"
    );
    assert_eq!(notes(&m), [redirect::notes::FAST_IO_REFUSED, redirect::notes::REDIRECTED]);
    // A name outside the mapping keeps its fast path.
    let r = m.io(IoRequest::QueryAttributes { volume: c, path: r"older\a.txt" });
    assert_eq!((r.status, r.fast_io, r.reparsed), (Status::SUCCESS, true, None));
    assert_eq!(m.findings(), []);
}

/// A relative open (`old\a.txt` beside a handle on C:'s root directory): the opened name the
/// filter asks is the whole name, so it is redirected as the absolute open is; the reparsed
/// create, absolute, opens D:'s file. A relative open beside a handle on `C:\older` is not.
pub fn check_a_relative_open_is_redirected_by_its_whole_name(mut m: Machine) {
    let (c, d) = (m.volume("C:").unwrap(), m.volume("D:").unwrap());
    let root = m.open(c, r"\", CreateOptions::open()).unwrap();
    let from = m.events().len();
    let r = m.create_relative(root, r"old\a.txt", CreateOptions::open());
    assert_eq!((r.status, r.reparsed), (Status::SUCCESS, Some(Reparsed { count: 1, volume: d })));
    let h = r.handle.unwrap();
    assert_eq!(m.read(h, Some(0), 4096, IoMode::Cached).data, NEW_DATA);
    m.close_handle(h);
    let pre: Vec<_> = pres(&m, from).into_iter().map(|p| (p.0, p.2)).collect();
    assert_eq!(pre, [("C:".into(), COMPLETE), ("D:".into(), PASS)]);
    let older = m.open(c, "older", CreateOptions::open()).unwrap();
    let r = m.create_relative(older, "a.txt", CreateOptions::open());
    assert_eq!((r.status, r.reparsed), (Status::SUCCESS, None));
    m.close_handle(r.handle.unwrap());
    m.close_handle(older);
    m.close_handle(root);
    assert_eq!(m.findings(), []);
}

/// A mapping whose new name lies under the old one does not load.
pub fn check_a_looping_mapping_does_not_load(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
) {
    let looping = (OLD, r"\Device\HarddiskVolume1\OLD\inner");
    let (_, status) = machine_with(install, entry, model, looping);
    assert_eq!(status, Status::INVALID_PARAMETER);
}
