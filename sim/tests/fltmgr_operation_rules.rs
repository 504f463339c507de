//! Filter Manager: which operations a pre-operation status or a skip flag applies to, and what
//! it does to the filters above and below (facts.md §2.4, §3, §4): `FLT_PREOP_DISALLOW_FASTIO`
//! with filters on both sides, `FLT_PREOP_COMPLETE` with `STATUS_FLT_DISALLOW_FAST_IO`, the
//! read/write-only skip flags and `SKIP_NON_DASD_IO` on every operation.

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

use fltcommon::{Config, Seen, machine, mj, order, order_clear, seen, start};
use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, FsKind, Handle, IoMode, Machine, RawBuffer, RawIrp, RawOp, Rule, VolumeId,
    VolumeSpec,
};

const FAST_IO_OPERATION: u32 = 0x2;
/// `IRP_NOCACHE`.
const IRP_NOCACHE: u32 = 0x1;
/// `FileStandardInformation`.
const STANDARD_INFORMATION: u32 = 5;

fn setup() -> (Machine, VolumeId) {
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"hello"));
    m.install_filter_manager();
    m.boot();
    (m, c)
}

/// The posts slot `slot` saw: (major, fast I/O, status).
fn posts(slot: usize) -> Vec<(u8, bool, Status)> {
    seen(slot)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Post { major, data_flags, status, .. } => {
                Some((major, data_flags & FAST_IO_OPERATION != 0, Status(status)))
            }
            _ => None,
        })
        .collect()
}

/// The pres slot `slot` saw: (major, irp flags, fast I/O).
fn pres(slot: usize) -> Vec<(u8, u32, bool)> {
    seen(slot)
        .into_iter()
        .filter_map(|s| match s {
            Seen::Pre { major, irp_flags, data_flags, .. } => {
                Some((major, irp_flags, data_flags & FAST_IO_OPERATION != 0))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn disallow_fastio_stops_the_fast_io_above_the_filters_below_facts_2_4() {
    // facts.md §2.4: FLT_PREOP_DISALLOW_FASTIO stops the operation at the filter that returns
    // it: nothing below sees it (minifilters, the file system), its own post is not called, only
    // the posts above run (with STATUS_FLT_DISALLOW_FAST_IO, §4). The I/O manager then sends
    // the read as an IRP, which every filter sees.
    let (mut m, c) = setup();
    start(&mut m, 0, Config::new("Above", "300000").op(mj::READ, true, true));
    start(
        &mut m,
        1,
        Config::new("NoFast", "200000")
            .op(mj::READ, true, true)
            .with_pre(|p| if p.data().Flags & FAST_IO_OPERATION != 0 { (3, 0) } else { (0, 0) }),
    );
    start(&mut m, 2, Config::new("Below", "100000").op(mj::READ, true, true));
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    // The first cached read is an IRP (it initiates caching), the second is offered to fast I/O.
    assert!(!m.read(h, Some(0), 5, IoMode::Cached).fast_io);
    order_clear();
    let r = m.read(h, Some(0), 5, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.as_slice()), (Status::SUCCESS, false, &b"hello"[..]));
    assert_eq!(
        order(),
        [
            // The fast I/O.
            "Above:pre:3",
            "NoFast:pre:3",
            "Above:post:3",
            // The IRP.
            "Above:pre:3",
            "NoFast:pre:3",
            "Below:pre:3",
            "Below:post:3",
            "NoFast:post:3",
            "Above:post:3",
        ]
    );
    assert_eq!(
        posts(0)[1..],
        [(mj::READ, true, Status::FLT_DISALLOW_FAST_IO), (mj::READ, false, Status::SUCCESS)]
    );
    assert!(pres(2).iter().all(|&(_, _, fast)| !fast), "Below never saw fast I/O");
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}

#[test]
fn complete_with_status_flt_disallow_fast_io_is_reported_facts_4() {
    // facts.md §4: FLT_PREOP_COMPLETE with STATUS_FLT_DISALLOW_FAST_IO is not a way to disallow
    // fast I/O (that is FLT_PREOP_DISALLOW_FASTIO's status, set by the Filter Manager): it is an
    // INVALID_COMPLETION_STATUS finding, and the operation completes with
    // STATUS_INVALID_DEVICE_STATE, nothing below seeing it and only the posts above running.
    let (mut m, c) = setup();
    start(&mut m, 0, Config::new("Above", "300000").op(mj::READ, true, true));
    start(
        &mut m,
        1,
        Config::new("Completer", "200000").op(mj::READ, true, true).with_pre(|p| {
            if p.data().Flags & FAST_IO_OPERATION == 0 {
                return (0, 0);
            }
            p.set_status(Status::FLT_DISALLOW_FAST_IO, 0);
            (4, 0)
        }),
    );
    start(&mut m, 2, Config::new("Below", "100000").op(mj::READ, true, true));
    let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert!(!m.read(h, Some(0), 5, IoMode::Cached).fast_io);
    order_clear();
    let r = m.read(h, Some(0), 5, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::INVALID_DEVICE_STATE, true));
    assert_eq!(order(), ["Above:pre:3", "Completer:pre:3", "Above:post:3"]);
    assert_eq!(posts(0).last(), Some(&(mj::READ, true, Status::INVALID_DEVICE_STATE)));
    let found = m.findings();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].0, found[0].1.as_deref()),
        (Rule::InvalidCompletionStatus, Some("Completer"))
    );
}

fn raw_query(handle: Handle, irp_flags: u32) -> RawIrp<'static> {
    RawIrp {
        handle,
        op: RawOp::QueryInformation { length: 24, class: STANDARD_INFORMATION },
        minor: 0,
        irp_flags,
        sl_flags: 0,
        user_mode: false,
        buffer: RawBuffer::System,
        data: &[],
    }
}

#[test]
fn the_cached_and_non_cached_skip_flags_apply_to_reads_and_writes_only_facts_3() {
    // facts.md §3: SKIP_CACHED_IO and SKIP_NON_CACHED_NON_PAGING_IO are for reads and writes
    // only. Registered on IRP_MJ_QUERY_INFORMATION and IRP_MJ_CREATE they skip nothing: not an
    // IRP without IRP_NOCACHE (which a cached read would be), not one with it (a non-cached,
    // non-paging read would be), not a fast-I/O query (every fast-I/O read or write is cached).
    for (name, flags) in [("SkipCached", 0x2), ("SkipNonCached", 0x8)] {
        let (mut m, c) = setup();
        start(
            &mut m,
            0,
            Config::new(name, "300000").op_flags(mj::CREATE, flags, true, false).op_flags(
                mj::QUERY_INFORMATION,
                flags,
                true,
                false,
            ),
        );
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        // A fast-I/O query, then two IRPs.
        assert!(m.query_information(h, STANDARD_INFORMATION, 24).fast_io);
        for irp_flags in [0, IRP_NOCACHE] {
            assert_eq!(m.send_irp(raw_query(h, irp_flags)).status, Status::SUCCESS);
        }
        assert_eq!(
            pres(0),
            [
                (mj::CREATE, pres(0)[0].1, false),
                (mj::QUERY_INFORMATION, 0, true),
                (mj::QUERY_INFORMATION, 0, false),
                (mj::QUERY_INFORMATION, IRP_NOCACHE, false),
            ],
            "{name}"
        );
        // The same flag on reads does skip.
        drop(m);
        let (mut m, c) = setup();
        start(&mut m, 0, Config::new(name, "300000").op_flags(mj::READ, flags, true, false));
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        m.read(h, Some(0), 5, IoMode::Cached);
        m.read(h, Some(0), 512, IoMode::NonCached);
        assert_eq!(pres(0).len(), 1, "{name}: one of the two reads is skipped");
    }
}

#[test]
fn skip_non_dasd_io_applies_to_every_operation_facts_3() {
    // facts.md §3: SKIP_NON_DASD_IO skips every operation not issued on a volume (DASD) handle,
    // not only creates: a read and a query on a file are skipped, the same on the volume are
    // not.
    let (mut m, c) = setup();
    start(
        &mut m,
        0,
        Config::new("Dasd", "300000").op_flags(mj::READ, 0x4, true, false).op_flags(
            mj::QUERY_INFORMATION,
            0x4,
            true,
            false,
        ),
    );
    let file = m.open(c, "a.txt", CreateOptions::open()).unwrap();
    assert_eq!(m.read(file, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    assert_eq!(m.send_irp(raw_query(file, 0)).status, Status::SUCCESS);
    assert!(pres(0).is_empty(), "{:?}", pres(0));
    let volume = m.open(c, "", CreateOptions::open().options(0)).unwrap();
    assert_eq!(m.read(volume, Some(0), 512, IoMode::NonCached).status, Status::SUCCESS);
    let _ = m.send_irp(raw_query(volume, 0));
    let majors: Vec<u8> = pres(0).into_iter().map(|(major, _, _)| major).collect();
    assert_eq!(majors, [mj::READ, mj::QUERY_INFORMATION]);
}
