//! Raw IRPs (`Machine::send_irp`): requests built by hand with the caller's parameters, as the
//! `irp` fuzz target sends them; well-formed ones behave as the user-mode API's, malformed ones get
//! a status and break nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests"
)]

mod fltcommon;

use fsfilter::Status;
use fsfilter_kernel::params::{self as kparams, flt};
use fsfilter_sim::nt::{disposition, file_info as fi};
use fsfilter_sim::{
    FsKind, Handle, Machine, MachineConfig, RAW_BUFFER_LIMIT, RawBuffer, RawIrp, RawOp, VolumeId,
    VolumeSpec,
};

fn ntfs() -> (Machine, VolumeId) {
    let mut m = Machine::new(MachineConfig { seed: 3 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\a.txt", b"hello"));
    m.boot();
    (m, c)
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn raw(op: RawOp<'_>, handle: Handle, buffer: RawBuffer) -> RawIrp<'_> {
    RawIrp { handle, op, minor: 0, irp_flags: 0, sl_flags: 0, user_mode: false, buffer, data: &[] }
}

fn open(m: &mut Machine, c: VolumeId, name: &[u16], disp: u32) -> fsfilter_sim::IoResult {
    open_with(m, c, name, disp << 24)
}

/// A raw create with these `Options` (disposition in the top byte).
fn open_with(m: &mut Machine, c: VolumeId, name: &[u16], options: u32) -> fsfilter_sim::IoResult {
    m.send_irp(raw(
        RawOp::Create {
            volume: c,
            name,
            options,
            share: 7,
            attributes: 0,
            access: 0x1F01FF,
            ea_length: 0,
        },
        Handle(u32::MAX),
        RawBuffer::Null,
    ))
}

#[test]
fn a_raw_create_read_and_query_work_like_the_user_api() {
    let (mut m, c) = ntfs();
    let r = open(&mut m, c, &units("\\a.txt"), disposition::OPEN);
    assert_eq!(r.status, Status::SUCCESS);
    let h = r.handle.expect("a successful raw create returns a handle");
    for buffer in [RawBuffer::User, RawBuffer::Mdl] {
        let r = m.send_irp(raw(RawOp::Read { length: 5, offset: 0, key: 0 }, h, buffer));
        assert_eq!((r.status, r.data.as_slice()), (Status::SUCCESS, &b"hello"[..]), "{buffer:?}");
    }
    let q = m.send_irp(raw(
        RawOp::QueryInformation { length: 24, class: fi::STANDARD },
        h,
        RawBuffer::System,
    ));
    assert_eq!(q.status, Status::SUCCESS);
    assert_eq!(q.data[8], 5, "EndOfFile");
    assert!(m.close_handle(h).is_success());
    assert_eq!(m.crashed(), None);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn malformed_requests_get_a_status_and_break_nothing() {
    let (mut m, c) = ntfs();
    // Names: empty (the volume), no leading backslash, embedded NUL, unpaired surrogate, a stream.
    for name in [
        Vec::new(),
        units("a.txt"),
        units("\\a\0.txt"),
        vec![u16::from(b'\\'), 0xD800, u16::from(b'x')],
        units("\\a.txt:stream:$DATA"),
        vec![u16::from(b'\\'); 40_000],
    ] {
        let r = open(&mut m, c, &name, disposition::OPEN_IF);
        assert_ne!(r.status, Status::PENDING, "{name:?}");
        if let Some(h) = r.handle {
            m.close_handle(h);
        }
    }
    let h = open(&mut m, c, &units("\\a.txt"), disposition::OPEN).handle.unwrap();
    // No buffer with a length, negative and huge offsets, unaligned non-cached I/O.
    let cases = [
        RawOp::Read { length: 4096, offset: 0, key: 0 },
        RawOp::Write { length: 4096, offset: 0, key: 0 },
        RawOp::Read { length: 5, offset: -7, key: 0 },
        RawOp::Write { length: 5, offset: i64::MAX - 2, key: 0 },
        RawOp::QueryInformation { length: 0, class: fi::ALL },
        RawOp::QueryInformation { length: 3, class: fi::NAME },
        RawOp::SetInformation { length: 0, class: fi::RENAME },
        RawOp::SetInformation { length: 8, class: fi::END_OF_FILE },
        RawOp::DirectoryControl { length: 1, class: 1, pattern: Some(&[0xDC00]), index: 0 },
        RawOp::LockControl { offset: -1, length: None, key: 0 },
        RawOp::LockControl { offset: i64::MAX, length: Some(i64::MAX), key: 0 },
        RawOp::FileSystemControl { code: 0xFFFF_FFFF, input_length: 0, output_length: 0 },
        RawOp::DeviceControl { code: 3, input_length: 16, output_length: 16 },
        RawOp::Flush,
    ];
    for op in cases {
        for buffer in [RawBuffer::Null, RawBuffer::User, RawBuffer::Mdl, RawBuffer::System] {
            let mut irp = raw(op, h, buffer);
            irp.irp_flags = 0x1; // IRP_NOCACHE
            let r = m.send_irp(irp);
            assert_ne!(r.status, Status::PENDING, "{op:?} {buffer:?}");
        }
    }
    // Found by the fuzzer: a write with a length and no buffer panicked the file system, and a
    // write far past the end tried to grow the in-memory file to the offset.
    let w = |m: &mut Machine, offset, buffer| {
        m.send_irp(raw(RawOp::Write { length: 5, offset, key: 0 }, h, buffer)).status
    };
    assert_eq!(
        w(&mut m, 0, RawBuffer::Null),
        Status::from_bits(0xC000_00E8),
        "INVALID_USER_BUFFER"
    );
    assert_eq!(
        w(&mut m, i64::MAX - 2, RawBuffer::User),
        Status::from_bits(0xC000_007F),
        "DISK_FULL"
    );
    assert_eq!(w(&mut m, 1 << 40, RawBuffer::Mdl), Status::from_bits(0xC000_007F), "DISK_FULL");
    assert!(m.file_contents(c, "\\a.txt").is_some_and(|d| d.len() < 1024), "not grown");
    // Found by the fuzzer: no buffer with a huge length allocated that length, in the raw API
    // and in a volume (DASD) read, which built the media image of that length.
    let huge = RawOp::Read { length: u32::MAX, offset: 0, key: 0 };
    let r = m.send_irp(raw(huge, h, RawBuffer::Null));
    assert_eq!(r.status, Status::from_bits(0xC000_00E8), "INVALID_USER_BUFFER");
    let v = open(&mut m, c, &[], disposition::OPEN).handle.expect("the volume opens");
    let r = m.send_irp(raw(huge, v, RawBuffer::Null));
    assert_eq!(r.status, Status::from_bits(0xC000_00E8), "INVALID_USER_BUFFER");
    m.close_handle(v);
    // Lengths past the limit with a buffer are refused before any IRP.
    let r = m.send_irp(raw(
        RawOp::Read { length: RAW_BUFFER_LIMIT as u32 + 1, offset: 0, key: 0 },
        h,
        RawBuffer::User,
    ));
    assert_eq!((r.status, r.io), (Status::INSUFFICIENT_RESOURCES, None));
    // A handle that is not open.
    let r = m.send_irp(raw(RawOp::Flush, Handle(999), RawBuffer::Null));
    assert_eq!(r.status, Status::INVALID_HANDLE);
    m.close_handle(h);
    assert_eq!(m.crashed(), None);
}

/// The majors a volume filter receives that the simulator generates only as raw IRPs (facts.md
/// §1.6), each with its request and the parameters a filter should see.
fn unraised_majors() -> Vec<(u8, RawOp<'static>)> {
    vec![
        (0x07, RawOp::QueryEa { length: 64, index: 0 }),
        (0x08, RawOp::SetEa { length: 64 }),
        (0x0b, RawOp::SetVolumeInformation { length: 64, class: 2 }),
        (
            0x0f,
            RawOp::InternalDeviceControl { code: 0x0022_0003, input_length: 0, output_length: 64 },
        ),
        (0x14, RawOp::QuerySecurity { information: 4, length: 64 }),
        (0x15, RawOp::SetSecurity { information: 4 }),
        (0x19, RawOp::QueryQuota { length: 64 }),
        (0x1a, RawOp::SetQuota { length: 64 }),
    ]
}

#[test]
fn unraised_majors_pass_both_filter_models_to_the_file_system() {
    // facts.md §1.6: a filter attached to a volume receives QUERY/SET_EA, SET_VOLUME_INFORMATION,
    // INTERNAL_DEVICE_CONTROL, QUERY/SET_SECURITY and QUERY/SET_QUOTA; a pass-through filter of
    // either model passes them down. The simulated file systems implement none of them and
    // answer STATUS_INVALID_DEVICE_REQUEST (docs/simulator.md, "Raw IRPs"), which is what the
    // caller, the minifilter's post-operation callback and the legacy filter's caller get.
    use fltcommon::{Config, Seen, install, install_legacy, order, order_clear, seen};
    let mut m = fltcommon::machine(3);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\a.txt", b"hello"));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "Legacy", "FSFilter Activity Monitor", fsfilter_sim::StartType::Boot);
    let mut cfg = Config::new("Mini", "370000").with_pre(|p| {
        let params = &p.iopb().Parameters;
        let shown = match p.major() {
            0x07 => {
                // SAFETY: the member of an EA query.
                let ea = unsafe { flt::<kparams::FltQueryEa>(params) };
                format!("length {} buffer {}", ea.Length, !ea.EaBuffer.is_null())
            }
            0x14 => {
                // SAFETY: the member of a security query.
                let q = unsafe { flt::<kparams::FltQuerySecurity>(params) };
                format!(
                    "information {} length {} buffer {}",
                    q.SecurityInformation,
                    q.Length,
                    !q.SecurityBuffer.is_null()
                )
            }
            // SAFETY: the member of a security set (windows-sys's has the documented layout).
            0x15 => unsafe {
                format!(
                    "information {} descriptor {}",
                    params.SetSecurity.SecurityInformation,
                    !params.SetSecurity.SecurityDescriptor.is_null()
                )
            },
            // SAFETY: the member of a quota query (windows-sys's has the documented layout).
            0x19 => unsafe {
                format!(
                    "length {} buffer {}",
                    params.QueryQuota.Length,
                    !params.QueryQuota.QuotaBuffer.is_null()
                )
            },
            _ => String::new(),
        };
        if !shown.is_empty() {
            fltcommon::order_push(format!("params {}: {shown}", p.major()));
        }
        (0, 0)
    });
    for (major, _) in unraised_majors() {
        cfg = cfg.op(major, true, true);
    }
    install(&mut m, 0, cfg);
    m.boot();
    assert_eq!(m.start("Mini"), Status::SUCCESS);
    let h = open(&mut m, c, &units("\\a.txt"), disposition::OPEN).handle.unwrap();
    for (major, op) in unraised_majors() {
        order_clear();
        fltcommon::seen_clear(0);
        let buffer =
            if matches!(op, RawOp::SetSecurity { .. }) { RawBuffer::Null } else { RawBuffer::User };
        let r = m.send_irp(raw(op, h, buffer));
        assert_eq!(r.status, Status::INVALID_DEVICE_REQUEST, "{op:?}");
        let o = order();
        assert!(o.contains(&format!("Legacy:irp:{major}")), "{op:?}: {o:?}");
        assert!(o.contains(&format!("Mini:pre:{major}")), "{op:?}: {o:?}");
        let posts: Vec<i32> = seen(0)
            .into_iter()
            .filter_map(|s| match s {
                Seen::Post { major: m, status, .. } if m == major => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(posts, [Status::INVALID_DEVICE_REQUEST.0], "{op:?}");
        let shown: Vec<&String> = o.iter().filter(|s| s.starts_with("params")).collect();
        match major {
            0x07 | 0x19 => assert_eq!(shown, [&format!("params {major}: length 64 buffer true")]),
            0x14 => {
                assert_eq!(shown, [&"params 20: information 4 length 64 buffer true".to_owned()])
            }
            0x15 => assert_eq!(shown, [&"params 21: information 4 descriptor true".to_owned()]),
            _ => assert!(shown.is_empty()),
        }
    }
    m.close_handle(h);
    assert_eq!(m.crashed(), None);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_raw_change_notification_waits_and_its_handles_cleanup_ends_it() {
    // Minor 2 with the notification layout (Length, CompletionFilter): before the seventh
    // session a raw request had only the query-directory layout, so its completion filter read
    // as another member and the file system refused it.
    let mut m = Machine::new(MachineConfig { seed: 3 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("\\dir\\a.txt", b"a"));
    m.boot();
    let r = open(&mut m, c, &units("\\dir"), disposition::OPEN);
    let dir = r.handle.expect("the directory opens");
    let notify = |filter| RawIrp {
        minor: 2,
        ..raw(RawOp::NotifyChangeDirectory { length: 256, filter }, dir, RawBuffer::User)
    };
    // Nothing selected: refused by the file system at once.
    assert_eq!(m.send_irp(notify(0)).status, Status::INVALID_PARAMETER);
    // Whatever minor the caller gives, the layout goes with its own: a filter of unknown bits
    // is refused, never read as a query's pattern pointer (the `irp` fuzzer's crash).
    let junk = RawIrp { minor: 1, ..notify(0x0101_0404) };
    assert_eq!(m.send_irp(junk).status, Status::INVALID_PARAMETER);
    let waiting = m.send_irp(notify(0x1));
    assert_eq!(waiting.status, Status::PENDING);
    // The handle's cleanup ends it; its buffer was kept until then (the fuzzer's leak check).
    m.close_handle(dir);
    let end = m.events().into_iter().find_map(|e| match e.kind {
        fsfilter_sim::EventKind::IoComplete { io, status, .. } if Some(io) == waiting.io => {
            Some(status)
        }
        _ => None,
    });
    assert_eq!(end, Some(Status::NOTIFY_CLEANUP));
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn a_raw_create_makes_its_file_object_synchronous_only_as_its_options_ask() {
    // FILE_SYNCHRONOUS_IO_ALERT (0x10) and _NONALERT (0x20) in the options, as IopParseDevice
    // reads them; the file mode query answers from the file object's flags.
    const FILE_MODE_INFORMATION: u32 = 16;
    let (mut m, c) = ntfs();
    for (options, mode) in [(0, 0), (0x20, 0x20), (0x10, 0x10)] {
        let r = open_with(&mut m, c, &units("\\a.txt"), (disposition::OPEN << 24) | options);
        let h = r.handle.expect("opened");
        let q = m.query_information(h, FILE_MODE_INFORMATION, 4);
        let answered = u32::from_le_bytes(q.data[..4].try_into().unwrap());
        assert_eq!(answered & 0x30, mode, "options {options:#x}");
        // A non-cached raw read of it completes whichever it is (the sender waits; the file
        // system completes an asynchronous one from the storage's DPC).
        let mut read = raw(RawOp::Read { length: 512, offset: 0, key: 0 }, h, RawBuffer::Mdl);
        read.irp_flags = 0x1; // IRP_NOCACHE
        let r = m.send_irp(read);
        assert_eq!((r.status, r.information), (Status::SUCCESS, 5), "options {options:#x}");
        assert!(m.close_handle(h).is_success());
    }
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
