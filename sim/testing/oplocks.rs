//! Oplock FSCTLs through a filter (docs/simulator.md, "Oplocks"; docs/semantics.md, oplocks):
//! the request's pre callback runs when it is sent, its post callback only when the oplock
//! breaks (the file system pends a granted request), with `FILE_OPLOCK_BROKEN_TO_LEVEL_2` in its
//! information; the acknowledgement's pre and post run at once. A filter that pends the request
//! (facts.md §1.8: oplock operations cannot be pended) delays it past a conflicting open, which
//! then breaks nothing, and the file system refuses it for that second handle. Shared by
//! `legacy/tests/oplocks.rs` and `minifilter/tests/oplocks.rs`.

use std::cell::RefCell;

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, Parameters, PostFlags,
    PostOperation, PostOutcome, PreOperation, PreOutcome, PreResume, Registration, Result,
    ServiceParameters, Status,
};
use fsfilter_sim::fs::oplock::{
    FILE_COMPLETE_IF_OPLOCKED, FILE_OPLOCK_BROKEN_TO_LEVEL_2, OUTPUT_LEN,
    STATUS_OPLOCK_BREAK_IN_PROGRESS, code, input, input_flag, level,
};
use fsfilter_sim::{CreateOptions, FsKind, IoRequest, Machine, MachineConfig, ServiceSpec};
use fsfilter_sim::{EventKind, RequestRef, VolumeSpec};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "OplockObserver";

/// What one FSCTL callback saw: the code, and for a post the status and information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Pre(u32),
    Post(u32, Status, usize),
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// Records its FSCTL callbacks, passing every request on with a post callback; pends those of
/// files whose name ends in `pend.txt` for 20 ms.
pub(crate) struct OplockObserver;

fn code_of(p: &Parameters) -> u32 {
    match p {
        Parameters::FileSystemControl(c) => c.code,
        _ => 0,
    }
}

impl Filter for OplockObserver {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::FileSystemControl).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(OplockObserver)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let code = code_of(&op.header().parameters);
        SEEN.with(|s| s.borrow_mut().push(Seen::Pre(code)));
        if op.file_name().is_some_and(|n| n.ends_with_ignore_case("pend.txt")) {
            if let Some((token, receipt)) = op.pend() {
                token.resume_after(20, PreResume::WithPost(()));
                return PreOutcome::Pending(receipt);
            }
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
        let code = code_of(&op.header().parameters);
        let r = op.result();
        SEEN.with(|s| s.borrow_mut().push(Seen::Post(code, r.status, r.information)));
        PostOutcome::Finished
    }
}

fn take() -> Vec<Seen> {
    SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// The final status of request `io`, if it completed.
fn completed(m: &Machine, io: Option<RequestRef>) -> Option<Status> {
    m.events().iter().find_map(|e| match &e.kind {
        EventKind::IoComplete { io: i, status, .. } if Some(*i) == io => Some(*status),
        _ => None,
    })
}

pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    take();
    let mut m = Machine::new(MachineConfig { seed: 9 });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("a.txt", &[1; 512])
            .file("pend.txt", b"p")
            .file("w7.txt", b"w"),
    );
    install(&mut m, ServiceSpec::new(NAME, entry, "legacy"));
    m.boot();
    let h1 = m.open(c, "a.txt", CreateOptions::open().overlapped()).expect("open");
    take();
    let fsctl = |handle, code| IoRequest::Fsctl { handle, code, input: &[], output_length: 0 };
    let level1 = code::REQUEST_OPLOCK_LEVEL_1;
    let req = m.io(fsctl(h1, level1));
    assert_eq!(req.status, Status::PENDING, "granted: pended by the file system");
    assert_eq!(take(), [Seen::Pre(level1)], "no post before the break");
    let options = CreateOptions::open().options(FILE_COMPLETE_IF_OPLOCKED);
    let r = m.create(c, "a.txt", options);
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    assert_eq!(completed(&m, req.io), Some(Status::SUCCESS));
    assert_eq!(
        take(),
        [Seen::Post(level1, Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_LEVEL_2)],
        "the request's post runs at the break, in the breaking create"
    );
    let ack = code::OPLOCK_BREAK_ACK_NO_2;
    assert_eq!(m.io(fsctl(h1, ack)).status, Status::SUCCESS);
    assert_eq!(take(), [Seen::Pre(ack), Seen::Post(ack, Status::SUCCESS, 0)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());

    // Pended by the filter: a second open meanwhile finds no oplock, and the request, reaching
    // the file system after it, is refused (two handles).
    let p1 = m.open(c, "pend.txt", CreateOptions::open().overlapped()).expect("open");
    take();
    let req = m.io(fsctl(p1, level1));
    assert_eq!(req.status, Status::PENDING, "pended by the filter");
    let second = m.create(c, "pend.txt", CreateOptions::open());
    assert_eq!(second.status, Status::SUCCESS, "nothing to break yet");
    m.settle();
    assert_eq!(completed(&m, req.io), Some(Status::OPLOCK_NOT_GRANTED));
    assert_eq!(
        take(),
        [Seen::Pre(level1), Seen::Post(level1, Status::OPLOCK_NOT_GRANTED, 0)],
        "the pended request came too late"
    );

    // FSCTL_REQUEST_OPLOCK (the Windows 7 oplocks): the same, the post at the break carrying the
    // REQUEST_OPLOCK_OUTPUT_BUFFER's length; the acknowledgement keeping RH is pended in turn.
    let w = m.open(c, "w7.txt", CreateOptions::open().overlapped()).expect("open");
    take();
    let win7 = code::REQUEST_OPLOCK;
    let ask = input(level::RWH, input_flag::REQUEST);
    let req = m.io(IoRequest::Fsctl { handle: w, code: win7, input: &ask, output_length: 64 });
    assert_eq!(req.status, Status::PENDING, "granted");
    assert_eq!(take(), [Seen::Pre(win7)], "no post before the break");
    let r = m.create(c, "w7.txt", options);
    assert_eq!(r.status, STATUS_OPLOCK_BREAK_IN_PROGRESS);
    assert_eq!(take(), [Seen::Post(win7, Status::SUCCESS, OUTPUT_LEN)], "RWH -> RH at the break");
    let keep = input(level::RH, input_flag::ACK);
    let acked = m.io(IoRequest::Fsctl { handle: w, code: win7, input: &keep, output_length: 64 });
    assert_eq!(acked.status, Status::PENDING, "RH kept: pended as its request");
    assert_eq!(take(), [Seen::Pre(win7)]);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
}
