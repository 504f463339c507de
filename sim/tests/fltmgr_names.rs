//! Filter Manager: file names (docs/simulator.md, "File names"): FltGetFileNameInformation's
//! opened and normalized names, FltParseFileNameInformation, the reference count, the
//! documented refusals, the query below the caller's frame, and the verifier's findings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]

mod fltcommon;

use std::cell::RefCell;

use fltcommon::{Config, install, machine, mj, rules};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, PageWriter, Rule, VolumeId, VolumeSpec,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::*;
use windows_sys::Win32::Foundation::UNICODE_STRING;

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static KEPT: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

fn log(s: String) {
    LOG.with(|l| l.borrow_mut().push(s));
}

fn logged() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

const VOL: &str = r"\Device\HarddiskVolume1";
const DEFAULT: u32 = FLT_FILE_NAME_QUERY_DEFAULT;
const OPENED: u32 = FLT_FILE_NAME_OPENED | DEFAULT;
const NORMALIZED: u32 = FLT_FILE_NAME_NORMALIZED | DEFAULT;

fn setup() -> (Machine, VolumeId) {
    LOG.with(|l| l.borrow_mut().clear());
    KEPT.with(|k| k.borrow_mut().clear());
    let mut m = machine(1);
    let spec = VolumeSpec::new("C:", FsKind::Ntfs)
        .file(r"Dir\Report.TXT", &[7u8; 512])
        .file("Makefile", b"all:");
    let c = m.add_volume(spec);
    m.install_filter_manager();
    m.boot();
    (m, c)
}

fn text(s: &UNICODE_STRING) -> String {
    unsafe { fsfilter_sim::mem::read_unicode(s) }
}

/// Asks for a name; on success logs it whole and parsed, then releases it.
fn name(what: &str, data: *const FLT_CALLBACK_DATA, options: u32) -> Status {
    let mut info: *mut FLT_FILE_NAME_INFORMATION = std::ptr::null_mut();
    let s = Status(unsafe { FltGetFileNameInformation(data, options, &mut info) });
    if s != Status::SUCCESS {
        log(format!("{what}: {s}"));
        return s;
    }
    assert_eq!(unsafe { FltParseFileNameInformation(info) }, 0);
    let r = unsafe { &*info };
    assert_eq!(r.NamesParsed, 0xF);
    assert_eq!(r.Format, options & 0xFF);
    log(format!(
        "{what}: {} | volume {} | share {} | parent {} | final {} | ext {} | stream {}",
        text(&r.Name),
        text(&r.Volume),
        text(&r.Share),
        text(&r.ParentDir),
        text(&r.FinalComponent),
        text(&r.Extension),
        text(&r.Stream)
    ));
    unsafe { FltReleaseFileNameInformation(info) };
    s
}

fn is_irp(data: *const FLT_CALLBACK_DATA) -> bool {
    unsafe { (*data).Flags & 0x1 != 0 }
}

#[test]
fn an_open_files_opened_name_is_as_opened_and_its_normalized_name_as_stored() {
    // FLT_FILE_NAME_INFORMATION's remarks: the opened name is the name the file was opened
    // with, after the volume's device name; the normalized one spells each component as the
    // file system does (ours: the case it stores). FltParseFileNameInformation's examples.
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000")
        .op(mj::CREATE, false, true)
        .op(mj::READ, true, false)
        .with_pre(|p| {
            if is_irp(p.data) {
                name("read opened", p.data, OPENED);
                name("read normalized", p.data, NORMALIZED);
            }
            (1, 0)
        })
        .with_post(|p| {
            if p.status() == Status::SUCCESS {
                name("post-create opened", p.data, OPENED);
                name("post-create normalized", p.data, NORMALIZED);
                name(
                    "post-create filesystem only",
                    p.data,
                    FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_FILESYSTEM_ONLY,
                );
                // FltGetFileNameInformationUnsafe: the same names for the open file object,
                // with the caller's instance or none (its reference page: Instance optional).
                let fo = unsafe { (*p.data().Iopb).TargetFileObject };
                for (what, instance) in [("unsafe", p.instance()), ("unsafe without instance", 0)] {
                    let mut info: *mut FLT_FILE_NAME_INFORMATION = std::ptr::null_mut();
                    let s = unsafe {
                        FltGetFileNameInformationUnsafe(fo, instance, NORMALIZED, &mut info)
                    };
                    assert_eq!(Status(s), Status::SUCCESS);
                    log(format!("{what}: {}", text(unsafe { &(*info).Name })));
                    unsafe { FltReleaseFileNameInformation(info) };
                }
            }
            0
        });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    let h = m.open(c, r"\dir\REPORT.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    let opened = format!(
        r"{VOL}\dir\REPORT.txt | volume {VOL} | share  | parent \dir | final REPORT.txt | ext txt | stream "
    );
    let normal = format!(
        r"{VOL}\Dir\Report.TXT | volume {VOL} | share  | parent \Dir | final Report.TXT | ext TXT | stream "
    );
    assert_eq!(
        logged(),
        [
            format!("post-create opened: {opened}"),
            format!("post-create normalized: {normal}"),
            format!("post-create filesystem only: {normal}"),
            format!(r"unsafe: {VOL}\Dir\Report.TXT"),
            format!(r"unsafe without instance: {VOL}\Dir\Report.TXT"),
            format!("read opened: {opened}"),
            format!("read normalized: {normal}"),
        ]
    );
    // A file in the root: its parent is `\` (ours); no dot, no extension.
    let h2 = m.open(c, r"\MAKEFILE", CreateOptions::open()).unwrap();
    let got = logged();
    assert_eq!(
        got[1],
        format!(
            r"post-create normalized: {VOL}\Makefile | volume {VOL} | share  | parent \ | final Makefile | ext  | stream "
        )
    );
    m.close_handle(h);
    m.close_handle(h2);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_pre_create_name_needs_no_file_yet_but_a_normalized_one_needs_its_directory() {
    // FltGetFileNameInformation's remarks: in pre-create the opened name succeeds even if the
    // path does not exist, the normalized one even if the final component does not; a short
    // name is refused there (STATUS_FLT_INVALID_NAME_REQUEST). Ours: a missing directory on the
    // way fails the normalized name with STATUS_OBJECT_PATH_NOT_FOUND.
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000").op(mj::CREATE, true, false).with_pre(|p| {
        name("opened", p.data, OPENED);
        name("normalized", p.data, NORMALIZED);
        name("short", p.data, FLT_FILE_NAME_SHORT | DEFAULT);
        (1, 0)
    });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    let h = m.open(c, r"\DIR\new.txt", CreateOptions::default()).unwrap();
    assert_eq!(
        logged(),
        [
            format!(
                r"opened: {VOL}\DIR\new.txt | volume {VOL} | share  | parent \DIR | final new.txt | ext txt | stream "
            ),
            format!(
                r"normalized: {VOL}\Dir\new.txt | volume {VOL} | share  | parent \Dir | final new.txt | ext txt | stream "
            ),
            "short: STATUS_FLT_INVALID_NAME_REQUEST".to_owned(),
        ]
    );
    assert_eq!(
        m.create(c, r"\Missing\x.txt", CreateOptions::default()).status,
        Status::OBJECT_PATH_NOT_FOUND
    );
    assert_eq!(
        logged(),
        [
            format!(
                r"opened: {VOL}\Missing\x.txt | volume {VOL} | share  | parent \Missing | final x.txt | ext txt | stream "
            ),
            "normalized: STATUS_OBJECT_PATH_NOT_FOUND".to_owned(),
            "short: STATUS_FLT_INVALID_NAME_REQUEST".to_owned(),
        ]
    );
    m.close_handle(h);
}

#[test]
fn names_are_refused_where_the_reference_page_forbids_them() {
    // FltGetFileNameInformation's return values: STATUS_FLT_INVALID_NAME_REQUEST in the paging
    // I/O path and in post-close; STATUS_FLT_NAME_CACHE_MISS for a cache-only query that misses
    // (no name cache is modelled: always) and for ALWAYS_ALLOW_CACHE_LOOKUP where the file
    // system may not be asked; STATUS_INVALID_PARAMETER for NULL parameters. Ours: the post of
    // a failed create is refused like post-close; options without one format and one method
    // are STATUS_INVALID_PARAMETER; short names STATUS_OBJECT_NAME_NOT_FOUND.
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000")
        .op(mj::CREATE, false, true)
        .op(mj::WRITE, true, false)
        .op(mj::CLOSE, true, true)
        .with_pre(|p| {
            let paging = unsafe { (*p.data().Iopb).IrpFlags } & 0x2 != 0;
            if p.major() == mj::WRITE && paging {
                name("paging default", p.data, NORMALIZED);
                name(
                    "paging filesystem",
                    p.data,
                    FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_FILESYSTEM_ONLY,
                );
                name(
                    "paging always-allow",
                    p.data,
                    FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_ALWAYS_ALLOW_CACHE_LOOKUP,
                );
            }
            if p.major() == mj::CLOSE {
                name("pre-close", p.data, OPENED);
                return (0, 0);
            }
            (1, 0)
        })
        .with_post(|p| {
            match p.major() {
                mj::CREATE if p.status() != Status::SUCCESS => {
                    name("failed create", p.data, OPENED);
                }
                mj::CREATE => {
                    name(
                        "cache only",
                        p.data,
                        FLT_FILE_NAME_OPENED | FLT_FILE_NAME_QUERY_CACHE_ONLY,
                    );
                    name("no format", p.data, DEFAULT);
                    name("two methods", p.data, FLT_FILE_NAME_OPENED | 0x300 | 0x400);
                    name("unknown flag", p.data, OPENED | 0x0800_0000);
                    name("do not cache", p.data, OPENED | FLT_FILE_NAME_DO_NOT_CACHE);
                    name("short", p.data, FLT_FILE_NAME_SHORT | DEFAULT);
                    let s =
                        unsafe { FltGetFileNameInformation(p.data, OPENED, std::ptr::null_mut()) };
                    log(format!("null out: {}", Status(s)));
                    let mut info = std::ptr::null_mut();
                    let s =
                        unsafe { FltGetFileNameInformation(std::ptr::null(), OPENED, &mut info) };
                    log(format!("null data: {}", Status(s)));
                }
                mj::CLOSE => {
                    name("post-close", p.data, OPENED);
                }
                _ => {}
            }
            0
        });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    let h = m.open(c, r"\Makefile", CreateOptions::open()).unwrap();
    let got = logged();
    assert_eq!(
        got[..8],
        [
            "cache only: STATUS_FLT_NAME_CACHE_MISS",
            "no format: STATUS_INVALID_PARAMETER",
            "two methods: STATUS_INVALID_PARAMETER",
            "unknown flag: STATUS_INVALID_PARAMETER",
            &format!(
                r"do not cache: {VOL}\Makefile | volume {VOL} | share  | parent \ | final Makefile | ext  | stream "
            ),
            "short: STATUS_OBJECT_NAME_NOT_FOUND",
            "null out: STATUS_INVALID_PARAMETER",
            "null data: STATUS_INVALID_PARAMETER",
        ]
    );
    assert_eq!(m.page_write(h, 0, &[1u8; 512], PageWriter::LazyWriter).status, Status::SUCCESS);
    assert_eq!(
        logged(),
        [
            "paging default: STATUS_FLT_INVALID_NAME_REQUEST",
            "paging filesystem: STATUS_FLT_INVALID_NAME_REQUEST",
            "paging always-allow: STATUS_FLT_NAME_CACHE_MISS",
        ]
    );
    m.close_handle(h);
    m.settle();
    assert_eq!(
        logged(),
        [
            format!(
                r"pre-close: {VOL}\Makefile | volume {VOL} | share  | parent \ | final Makefile | ext  | stream "
            ),
            "post-close: STATUS_FLT_INVALID_NAME_REQUEST".to_owned(),
        ]
    );
    assert_eq!(
        m.create(c, r"\nothere", CreateOptions::open()).status,
        Status::OBJECT_NAME_NOT_FOUND
    );
    assert_eq!(logged(), ["failed create: STATUS_FLT_INVALID_NAME_REQUEST"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_name_asked_above_apc_level_is_reported_and_refused() {
    // The reference page: IRQL <= APC_LEVEL. A post callback at DISPATCH_LEVEL that asks is an
    // IRQL_TOO_HIGH finding; the call answers STATUS_FLT_INVALID_NAME_REQUEST (ours).
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000")
        .op(mj::READ, true, true)
        .with_pre(|p| if is_irp(p.data) { (0, 0) } else { (1, 0) })
        .with_post(|p| {
            name("post read at dispatch", p.data, OPENED);
            0
        });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    m.kernel(|k| k.fs.complete_at_dpc = true);
    let h = m.open(c, r"\Dir\Report.TXT", CreateOptions::open()).unwrap();
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    m.settle();
    assert_eq!(logged(), ["post read at dispatch: STATUS_FLT_INVALID_NAME_REQUEST"]);
    assert_eq!(rules(&m), [Rule::IrqlTooHigh]);
}

#[test]
fn the_normalized_name_is_asked_below_the_callers_frame() {
    // Ours (docs/simulator.md): the Filter Manager sends a FileNameInformation query for the
    // operation's file object to the device below the caller's frame, so the instances of the
    // caller's frame, above or below it, never see it (those of a lower frame and legacy
    // filters under the frame would). An opened name asks nothing.
    let (mut m, c) = setup();
    let upper = Config::new("Asker", "370000").op(mj::CREATE, false, true).with_post(|p| {
        if p.status() == Status::SUCCESS {
            name("opened", p.data, OPENED);
            name("normalized", p.data, NORMALIZED);
        }
        0
    });
    let lower =
        Config::new("Watcher", "360000").op(mj::QUERY_INFORMATION, true, false).with_pre(|p| {
            let params = unsafe { &(*p.data().Iopb).Parameters };
            let class = unsafe {
                fsfilter_kernel::params::flt::<fsfilter_kernel::params::FltFileInformation>(params)
            }
            .FileInformationClass;
            log(format!("the same frame sees query class {class}"));
            (1, 0)
        });
    install(&mut m, 0, upper);
    install(&mut m, 1, lower);
    assert_eq!(m.start("Asker"), Status::SUCCESS);
    assert_eq!(m.start("Watcher"), Status::SUCCESS);
    let h = m.open(c, r"\Makefile", CreateOptions::open()).unwrap();
    let got = logged();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[1].starts_with(&format!(r"normalized: {VOL}\Makefile")), "{got:?}");
    // The user's own query reaches the lower instance.
    assert_eq!(m.query_information(h, 9, 512).status, Status::SUCCESS);
    assert_eq!(logged(), ["the same frame sees query class 9"]);
    m.close_handle(h);
}

#[test]
fn a_name_is_reference_counted_and_a_leak_or_a_second_release_is_reported() {
    // FltReferenceFileNameInformation adds a reference, FltReleaseFileNameInformation drops one
    // and frees the structure at zero (their reference pages). The verifier reports a release
    // of a released structure (FILE_NAME_RELEASED_TWICE) and names still referenced when the
    // filter unregisters (FILE_NAME_LEAKED_AT_UNLOAD).
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000").op(mj::CREATE, false, true).with_post(|p| {
        if p.status() != Status::SUCCESS {
            return 0;
        }
        let kept = KEPT.with(|k| k.borrow().clone());
        match kept.len() {
            0 => {
                // The first open: a name, kept with its one reference.
                let mut info: *mut FLT_FILE_NAME_INFORMATION = std::ptr::null_mut();
                assert_eq!(unsafe { FltGetFileNameInformation(p.data, OPENED, &mut info) }, 0);
                KEPT.with(|k| k.borrow_mut().push(info as usize));
            }
            1 => {
                // The second: one more reference and two releases free it.
                let first = kept[0] as *const FLT_FILE_NAME_INFORMATION;
                unsafe { FltReferenceFileNameInformation(first) };
                unsafe { FltReleaseFileNameInformation(first) };
                unsafe { FltReleaseFileNameInformation(first) };
                log("freed".into());
                // A new name, never released.
                let mut info: *mut FLT_FILE_NAME_INFORMATION = std::ptr::null_mut();
                assert_eq!(unsafe { FltGetFileNameInformation(p.data, NORMALIZED, &mut info) }, 0);
                KEPT.with(|k| k.borrow_mut().push(info as usize));
            }
            _ => {
                // The third: the freed one released again.
                unsafe {
                    FltReleaseFileNameInformation(kept[0] as *const FLT_FILE_NAME_INFORMATION)
                };
                log("released again".into());
            }
        }
        0
    });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    let h = m.open(c, r"\Makefile", CreateOptions::open()).unwrap();
    let h2 = m.open(c, r"\Makefile", CreateOptions::open()).unwrap();
    assert_eq!(logged(), ["freed"]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    let h3 = m.open(c, r"\Makefile", CreateOptions::open()).unwrap();
    assert_eq!(logged(), ["released again"]);
    assert_eq!(rules(&m), [Rule::FileNameReleasedTwice]);
    for h in [h, h2, h3] {
        m.close_handle(h);
    }
    let _ = m.stop("Names");
    let found = m.findings();
    assert_eq!(rules(&m), [Rule::FileNameReleasedTwice, Rule::FileNameLeaked], "{found:?}");
    assert!(found[1].2.contains("1 file name information"), "{found:?}");
}

#[test]
fn a_named_streams_name_carries_its_stream_component() {
    // FltParseFileNameInformation's reference page: a name `...\Test Results.txt:stream1` has
    // the final component `Test Results.txt:stream1`, the extension `txt` and the stream
    // `:stream1`. The opened name is as opened; the normalized one spells the file's part as
    // stored and, before the create, the stream's as given; after it, as the file system
    // reports it (FileNameInformation of the stream: its name as created; docs/simulator.md,
    // "Named data streams").
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000")
        .op(mj::CREATE, true, true)
        .with_pre(|p| {
            name("pre opened", p.data, OPENED);
            name("pre normalized", p.data, NORMALIZED);
            (0, 0)
        })
        .with_post(|p| {
            if p.status() == Status::SUCCESS {
                name("post normalized", p.data, NORMALIZED);
            }
            0
        });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    let h = m.open(c, r"\dir\REPORT.txt:Meta", CreateOptions::default()).unwrap();
    m.close_handle(h);
    let h = m.open(c, r"\DIR\report.txt:META:$DATA", CreateOptions::open()).unwrap();
    m.close_handle(h);
    let parts = |name: &str, parent: &str, last: &str, ext: &str, stream: &str| {
        format!(
            r"{VOL}{name} | volume {VOL} | share  | parent {parent} | final {last} | ext {ext} | stream {stream}"
        )
    };
    assert_eq!(
        logged(),
        [
            format!(
                "pre opened: {}",
                parts(r"\dir\REPORT.txt:Meta", r"\dir", "REPORT.txt:Meta", "txt", ":Meta")
            ),
            format!(
                "pre normalized: {}",
                parts(r"\Dir\Report.TXT:Meta", r"\Dir", "Report.TXT:Meta", "TXT", ":Meta")
            ),
            format!(
                "post normalized: {}",
                parts(r"\Dir\Report.TXT:Meta", r"\Dir", "Report.TXT:Meta", "TXT", ":Meta")
            ),
            format!(
                "pre opened: {}",
                parts(
                    r"\DIR\report.txt:META:$DATA",
                    r"\DIR",
                    "report.txt:META:$DATA",
                    "txt",
                    ":META:$DATA"
                )
            ),
            format!(
                "pre normalized: {}",
                parts(
                    r"\Dir\Report.TXT:META:$DATA",
                    r"\Dir",
                    "Report.TXT:META:$DATA",
                    "TXT",
                    ":META:$DATA"
                )
            ),
            format!(
                "post normalized: {}",
                parts(r"\Dir\Report.TXT:Meta", r"\Dir", "Report.TXT:Meta", "TXT", ":Meta")
            ),
        ]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_stream_opened_relative_to_its_files_handle_is_named_after_the_file() {
    // A relative stream open (`:Meta` relative to a handle of the file; docs/simulator.md,
    // "Named data streams"): its opened name is the related file's name followed by the stream,
    // no separator between them.
    let (mut m, c) = setup();
    let cfg = Config::new("Names", "370000")
        .op(mj::CREATE, true, true)
        .with_pre(|p| {
            name("pre opened", p.data, OPENED);
            (0, 0)
        })
        .with_post(|p| {
            if p.status() == Status::SUCCESS {
                name("post normalized", p.data, NORMALIZED);
            }
            0
        });
    install(&mut m, 0, cfg);
    assert_eq!(m.start("Names"), Status::SUCCESS);
    let f = m.open(c, r"\dir\REPORT.txt", CreateOptions::open()).unwrap();
    let r = m.create_relative(f, ":Meta", CreateOptions::default());
    assert_eq!(r.status, Status::SUCCESS);
    m.close_handle(r.handle.unwrap());
    m.close_handle(f);
    let parts = |name: &str, parent: &str, last: &str, ext: &str, stream: &str| {
        format!(
            r"{VOL}{name} | volume {VOL} | share  | parent {parent} | final {last} | ext {ext} | stream {stream}"
        )
    };
    let log = logged();
    assert_eq!(
        log[2..],
        [
            format!(
                "pre opened: {}",
                parts(r"\dir\REPORT.txt:Meta", r"\dir", "REPORT.txt:Meta", "txt", ":Meta")
            ),
            format!(
                "post normalized: {}",
                parts(r"\Dir\Report.TXT:Meta", r"\Dir", "Report.TXT:Meta", "TXT", ":Meta")
            ),
        ]
    );
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
