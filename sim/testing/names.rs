//! File names through a backend (docs/callback-model.md, rule 22): shared by
//! `legacy/tests/names.rs` and `minifilter/tests/names.rs`, which include this file with
//! `#[path]` and build [`Namer`] and [`Plain`] with their backend's `driver!`.
//!
//! Both models give the same names (the opened name as the file was opened, the normalized one
//! as the file system spells it, each after the volume's device name, parsed alike) and the same
//! refusals: a normalized name in pre-create, paging I/O, an FsFilter callback, post-close and
//! the post of a failed create (`STATUS_FLT_INVALID_NAME_REQUEST`), above `PASSIVE_LEVEL`
//! (`STATUS_INVALID_DEVICE_STATE`), and a filter that did not declare name queries
//! (`STATUS_NOT_SUPPORTED`). No name is leaked: the simulator's verifier has nothing to report
//! and the filter's pool is all given back.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, Irql, MajorFunction, NameKind, Operation, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters,
    Services,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, Machine, MachineConfig, PageWriter, ServiceSpec,
    VolumeSpec,
};

/// The service names of the filters under test.
pub(crate) const NAMER: &str = "Namer";
/// A filter without name queries.
pub(crate) const PLAIN: &str = "Plain";

thread_local! {
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

const VOL: &str = r"\Device\HarddiskVolume1";

/// Asks for both names and records what came back.
fn ask(place: &str, services: &dyn Services) {
    for kind in [NameKind::Opened, NameKind::Normalized] {
        let line = match services.file_name(kind) {
            Ok(n) => {
                assert_eq!(n.kind(), kind);
                let p = n.parts();
                format!(
                    "{place} {}: {} | {} | {} | {} | {}",
                    kind.name(),
                    p.name,
                    p.volume,
                    p.parent_dir,
                    p.final_component,
                    p.extension
                )
            }
            Err(e) => format!("{place} {}: {}", kind.name(), e.status()),
        };
        SEEN.with(|s| s.borrow_mut().push(line));
    }
}

fn place(major: MajorFunction, post: bool, services: &dyn Services) -> String {
    let irql = if services.irql() > Irql::APC { " DISPATCH" } else { "" };
    format!("{} {major:?}{irql}", if post { "post" } else { "pre" })
}

/// A filter that asks for names everywhere it is called.
pub(crate) struct Namer;

impl Filter for Namer {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::Write).pre())
        .operation(Operation::new(MajorFunction::DeviceControl).pre())
        .operation(Operation::new(MajorFunction::Close).pre().post())
        .operation(Operation::new(MajorFunction::AcquireForSectionSynchronization).pre())
        .instance_setup_callback(true)
        .validated();
    const NAME_QUERIES: bool = true;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Namer)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let paging = op.header().irp_flags.contains(fsfilter::IrpFlags::PAGING_IO);
        let kind = if op.header().kind == fsfilter::OperationKind::FastIo { " fast" } else { "" };
        let what = format!(
            "{}{kind}{}",
            place(op.major(), false, op.services()),
            if paging { " paging" } else { "" }
        );
        ask(&what, op.services());
        if matches!(op.major(), MajorFunction::Write | MajorFunction::DeviceControl)
            || op.header().kind != fsfilter::OperationKind::Irp
        {
            return PreOutcome::NoPost;
        }
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        let what = format!("{} {}", place(op.major(), true, op.services()), op.result().status);
        ask(&what, op.services());
        PostOutcome::Finished
    }
}

/// The same filter without name queries declared.
pub(crate) struct Plain;

impl Filter for Plain {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Create).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Plain)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        ask("plain post create", op.services());
        PostOutcome::Finished
    }
}

fn take() -> Vec<String> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// Opens, reads (cached, then non-cached completed from a DPC), writes back as the lazy writer,
/// maps and closes a file through [`Namer`], and checks every name and refusal; then asks
/// through [`Plain`].
pub(crate) fn check(
    install: fn(&mut Machine, ServiceSpec),
    namer: fsfilter_sim::DriverEntry,
    plain: fsfilter_sim::DriverEntry,
) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let spec = VolumeSpec::new("C:", FsKind::Ntfs).file(r"Dir\Report.TXT", &[5u8; 4096]);
    let c = m.add_volume(spec);
    install(&mut m, ServiceSpec::new(NAMER, namer, "legacy"));
    m.boot();
    take();
    let opened = format!(r"{VOL}\dir\REPORT.txt | {VOL} | \dir | REPORT.txt | txt");
    let normal = format!(r"{VOL}\Dir\Report.TXT | {VOL} | \Dir | Report.TXT | TXT");
    let invalid = "STATUS_FLT_INVALID_NAME_REQUEST";

    assert_eq!(
        m.open(c, r"\dir\missing.txt", CreateOptions::open()).err(),
        Some(fsfilter::Status::OBJECT_NAME_NOT_FOUND)
    );
    assert_eq!(
        take(),
        [
            format!(
                r"pre IRP_MJ_CREATE opened: {VOL}\dir\missing.txt | {VOL} | \dir | missing.txt | txt"
            ),
            format!("pre IRP_MJ_CREATE normalized: {invalid}"),
            format!("post IRP_MJ_CREATE STATUS_OBJECT_NAME_NOT_FOUND opened: {invalid}"),
            format!("post IRP_MJ_CREATE STATUS_OBJECT_NAME_NOT_FOUND normalized: {invalid}"),
        ]
    );

    let h = m.open(c, r"\dir\REPORT.txt", CreateOptions::open()).expect("opens");
    assert_eq!(
        take(),
        [
            format!("pre IRP_MJ_CREATE opened: {opened}"),
            format!("pre IRP_MJ_CREATE normalized: {invalid}"),
            format!("post IRP_MJ_CREATE STATUS_SUCCESS opened: {opened}"),
            format!("post IRP_MJ_CREATE STATUS_SUCCESS normalized: {normal}"),
        ]
    );

    // A non-cached read: names in pre and post (at PASSIVE_LEVEL).
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, fsfilter::Status::SUCCESS);
    assert_eq!(
        take(),
        [
            format!("pre IRP_MJ_READ opened: {opened}"),
            format!("pre IRP_MJ_READ normalized: {normal}"),
            format!("post IRP_MJ_READ STATUS_SUCCESS opened: {opened}"),
            format!("post IRP_MJ_READ STATUS_SUCCESS normalized: {normal}"),
        ]
    );

    // A control on a handle with write access: its stack location carries
    // SL_WRITE_ACCESS_GRANTED (0x04), which is SL_OPEN_TARGET_DIRECTORY only in a create; the
    // name is still the file's, not its parent directory's.
    let control =
        IoRequest::DeviceControl { handle: h, code: 0x0022_0000, input: &[], output_length: 0 };
    let _ = m.io(control);
    assert_eq!(
        take(),
        [
            format!("pre IRP_MJ_DEVICE_CONTROL opened: {opened}"),
            format!("pre IRP_MJ_DEVICE_CONTROL normalized: {normal}"),
        ]
    );

    // The lazy writer's paging write: refused.
    assert_eq!(
        m.page_write(h, 0, &[6u8; 512], PageWriter::LazyWriter).status,
        fsfilter::Status::SUCCESS
    );
    assert_eq!(
        take(),
        [
            format!("pre IRP_MJ_WRITE paging opened: {invalid}"),
            format!("pre IRP_MJ_WRITE paging normalized: {invalid}"),
        ]
    );

    // A section: the FsFilter acquire is refused.
    let s = m.create_section(h, 0x02);
    assert_eq!(s.status, fsfilter::Status::SUCCESS);
    let got = take();
    assert!(
        got.contains(&format!("pre IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION opened: {invalid}")),
        "{got:#?}"
    );
    assert!(
        got.contains(&format!(
            "pre IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION normalized: {invalid}"
        )),
        "{got:#?}"
    );
    if let Some(sh) = s.handle {
        m.close_handle(sh);
    }
    take();

    // A post at DISPATCH_LEVEL: refused for the IRQL.
    m.kernel(|k| k.fs.complete_at_dpc = true);
    assert_eq!(m.read(h, Some(0), 512, IoMode::NonCached).status, fsfilter::Status::SUCCESS);
    m.settle();
    assert_eq!(
        take(),
        [
            format!("pre IRP_MJ_READ opened: {opened}"),
            format!("pre IRP_MJ_READ normalized: {normal}"),
            "post IRP_MJ_READ DISPATCH STATUS_SUCCESS opened: STATUS_INVALID_DEVICE_STATE"
                .to_owned(),
            "post IRP_MJ_READ DISPATCH STATUS_SUCCESS normalized: STATUS_INVALID_DEVICE_STATE"
                .to_owned(),
        ]
    );
    m.kernel(|k| k.fs.complete_at_dpc = false);

    // The close: names in pre-close, none in post-close.
    m.close_handle(h);
    m.settle();
    let got = take();
    let closes: Vec<&String> = got.iter().filter(|l| l.contains("IRP_MJ_CLOSE")).collect();
    assert_eq!(
        closes,
        [
            &format!("pre IRP_MJ_CLOSE opened: {opened}"),
            &format!("pre IRP_MJ_CLOSE normalized: {normal}"),
            &format!("post IRP_MJ_CLOSE STATUS_SUCCESS opened: {invalid}"),
            &format!("post IRP_MJ_CLOSE STATUS_SUCCESS normalized: {invalid}"),
        ],
        "{got:#?}"
    );
    // Every name given back: a stop finds no pool or name left.
    assert_eq!(m.stop(NAMER), fsfilter_sim::StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());

    // A filter that did not declare name queries.
    drop(m);
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"a"));
    install(&mut m, ServiceSpec::new(PLAIN, plain, "legacy"));
    m.boot();
    take();
    let h = m.open(c, "a.txt", CreateOptions::open()).expect("opens");
    assert_eq!(
        take(),
        [
            "plain post create opened: STATUS_NOT_SUPPORTED",
            "plain post create normalized: STATUS_NOT_SUPPORTED"
        ]
    );
    m.close_handle(h);
}

/// Names on a network share (`\Device\Mup`): the share is its own part, as in
/// `FltParseFileNameInformation`'s remote example, and the parent directory follows it.
pub(crate) fn check_network(
    install: fn(&mut Machine, ServiceSpec),
    namer: fsfilter_sim::DriverEntry,
) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let spec = VolumeSpec::new(r"\\server\share", FsKind::Mup).file(r"Dir\Notes.Tar.GZ", b"x");
    let s = m.add_volume(spec);
    install(&mut m, ServiceSpec::new(NAMER, namer, "legacy"));
    m.boot();
    take();
    let h = m.open(s, r"dir\notes.tar.gz", CreateOptions::open()).expect("opens");
    let got: Vec<String> = take().into_iter().filter(|l| l.starts_with("post")).collect();
    let mup = r"\Device\Mup";
    assert_eq!(
        got,
        [
            format!(
                r"post IRP_MJ_CREATE STATUS_SUCCESS opened: {mup}\server\share\dir\notes.tar.gz | {mup} | \dir | notes.tar.gz | gz"
            ),
            format!(
                r"post IRP_MJ_CREATE STATUS_SUCCESS normalized: {mup}\server\share\Dir\Notes.Tar.GZ | {mup} | \Dir | Notes.Tar.GZ | GZ"
            ),
        ]
    );
    m.close_handle(h);
    m.settle();
    take();
    assert_eq!(m.stop(NAMER), fsfilter_sim::StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A create with `SL_OPEN_TARGET_DIRECTORY` (a rename's target): in pre-create the opened name
/// is the parent directory's (`FltGetFileNameInformation`'s remarks), in both models.
pub(crate) fn check_target_directory(
    install: fn(&mut Machine, ServiceSpec),
    namer: fsfilter_sim::DriverEntry,
) {
    use fsfilter_sim::{RawBuffer, RawIrp, RawOp};
    take();
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let spec = VolumeSpec::new("C:", FsKind::Ntfs).file(r"Dir\Report.TXT", &[5u8; 16]);
    let c = m.add_volume(spec);
    install(&mut m, ServiceSpec::new(NAMER, namer, "legacy"));
    m.boot();
    take();
    // The parent of `\dir\New.txt`, and of `\dir\New\` (a trailing separator names the same
    // directory `New`, whose parent is `\dir`).
    for path in [r"\dir\New.txt", r"\dir\New\"] {
        let name: Vec<u16> = path.encode_utf16().collect();
        let op = RawOp::Create {
            volume: c,
            name: &name,
            options: 1 << 24, // FILE_OPEN
            share: 7,
            attributes: 0,
            access: 0x0012_019F,
            ea_length: 0,
        };
        let r = m.send_irp(RawIrp {
            handle: fsfilter_sim::Handle(u32::MAX),
            op,
            minor: 0,
            irp_flags: 0,
            sl_flags: 0x04, // SL_OPEN_TARGET_DIRECTORY
            user_mode: false,
            buffer: RawBuffer::Null,
            data: &[],
        });
        let got: Vec<String> = take().into_iter().filter(|l| l.starts_with("pre")).collect();
        assert_eq!(
            got,
            [
                format!(r"pre IRP_MJ_CREATE opened: {VOL}\dir | {VOL} | \ | dir | "),
                "pre IRP_MJ_CREATE normalized: STATUS_FLT_INVALID_NAME_REQUEST".to_owned(),
            ],
            "{path}"
        );
        if let Some(h) = r.handle {
            m.close_handle(h);
        }
        m.settle();
        take();
    }
    assert_eq!(m.stop(NAMER), fsfilter_sim::StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A normalized name longer than `MAX_PATH`: the legacy provider's first query buffer is too
/// small, the file system answers `STATUS_BUFFER_OVERFLOW` with the length it needs, and the
/// name comes whole in both models.
pub(crate) fn check_long_name(
    install: fn(&mut Machine, ServiceSpec),
    namer: fsfilter_sim::DriverEntry,
) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let dir = "D".repeat(200);
    let file = format!("{}.Txt", "F".repeat(150));
    let spec = VolumeSpec::new("C:", FsKind::Ntfs).file(&format!(r"{dir}\{file}"), b"x");
    let c = m.add_volume(spec);
    install(&mut m, ServiceSpec::new(NAMER, namer, "legacy"));
    m.boot();
    take();
    let h = m.open(c, &format!(r"\{dir}\{file}"), CreateOptions::open()).expect("opens");
    let got: Vec<String> = take().into_iter().filter(|l| l.contains("post")).collect();
    assert_eq!(
        got.get(1),
        Some(&format!(
            r"post IRP_MJ_CREATE STATUS_SUCCESS normalized: {VOL}\{dir}\{file} | {VOL} | \{dir} | {file} | Txt"
        ))
    );
    m.close_handle(h);
    m.settle();
    take();
    assert_eq!(m.stop(NAMER), fsfilter_sim::StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

/// A stream opened relative to its file's handle (`:Meta`; docs/simulator.md, "Named data
/// streams"): its opened name is the file's followed by the stream, no separator between them,
/// in both models.
pub(crate) fn check_relative_stream(
    install: fn(&mut Machine, ServiceSpec),
    namer: fsfilter_sim::DriverEntry,
) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 23 });
    let spec = VolumeSpec::new("C:", FsKind::Ntfs).file(r"Dir\Report.TXT", &[5u8; 16]);
    let c = m.add_volume(spec);
    install(&mut m, ServiceSpec::new(NAMER, namer, "legacy"));
    m.boot();
    let f = m.open(c, r"\dir\REPORT.txt", CreateOptions::open()).unwrap();
    take();
    let r = m.create_relative(f, ":Meta", CreateOptions::default());
    assert_eq!(r.status, fsfilter::Status::SUCCESS);
    let opened = format!(r"{VOL}\dir\REPORT.txt:Meta | {VOL} | \dir | REPORT.txt:Meta | txt");
    let normalized = format!(r"{VOL}\Dir\Report.TXT:Meta | {VOL} | \Dir | Report.TXT:Meta | TXT");
    assert_eq!(
        take(),
        [
            format!("pre IRP_MJ_CREATE opened: {opened}"),
            "pre IRP_MJ_CREATE normalized: STATUS_FLT_INVALID_NAME_REQUEST".to_owned(),
            format!("post IRP_MJ_CREATE STATUS_SUCCESS opened: {opened}"),
            format!("post IRP_MJ_CREATE STATUS_SUCCESS normalized: {normalized}"),
        ]
    );
    m.close_handle(r.handle.unwrap());
    m.close_handle(f);
    m.settle();
    take();
    assert_eq!(m.stop(NAMER), fsfilter_sim::StopResult::Unloaded);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
