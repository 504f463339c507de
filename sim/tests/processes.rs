//! Processes (docs/simulator.md, "Processes"): the System process (id 4) and user processes
//! (`Machine::new_process`, `Machine::as_process`); the requestor of an operation as drivers read
//! it (`FltGetRequestorProcessId(Ex)`, `IoGetRequestorProcessId`, `IoThreadToProcess`), the
//! current process (`PsGetCurrentProcessId`, `IoGetCurrentProcess`), the fast-I/O lock's
//! `ProcessId`.

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

use std::cell::RefCell;
use std::rc::Rc;

use fltcommon::{Config, PreCall, install_legacy, machine, mj, ntfs_machine, on_legacy_irp, start};
use fsfilter::Status;
use fsfilter_kernel::params::{self, flt};
use fsfilter_sim::exports::ps::{
    FltGetRequestorProcess, FltGetRequestorProcessId, FltGetRequestorProcessIdEx,
    IoGetCurrentProcess, IoGetRequestorProcessId, IoThreadToProcess, PsGetCurrentProcessId,
    PsGetProcessId,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, IoRequest, PageWriter, ProcessId, StartType, VolumeSpec,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLTFL_CALLBACK_DATA_FAST_IO_OPERATION, FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION,
};

type Log = Rc<RefCell<Vec<String>>>;

/// What a pre callback reads of the operation's process, one line per operation.
fn requestor_line(p: &PreCall) -> String {
    let data = p.data;
    let kind = if p.data().Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0 {
        "fast"
    } else if p.data().Flags & FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION != 0 {
        "fsfilter"
    } else {
        "irp"
    };
    let id = unsafe { FltGetRequestorProcessId(data) };
    let ex = unsafe { FltGetRequestorProcessIdEx(data) } as usize;
    let by_thread = unsafe { PsGetProcessId(IoThreadToProcess(p.data().Thread)) } as usize;
    let by_process = unsafe { PsGetProcessId(FltGetRequestorProcess(data)) } as usize;
    let current = unsafe { PsGetCurrentProcessId() } as usize;
    assert_eq!((ex, by_thread, by_process), (id as usize, id as usize, id as usize));
    format!("{kind} {:#x} requestor {id:#x} current {current:#x}", p.major())
}

fn spy(log: &Log) -> Config {
    let l = log.clone();
    let mut c = Config::new("Who", "370000");
    for major in [mj::CREATE, mj::READ, mj::WRITE, mj::CLEANUP, mj::CLOSE] {
        c = c.op(major, true, false);
    }
    c.op(0xff, true, false).with_pre(move |p| {
        l.borrow_mut().push(requestor_line(p));
        (1, 0)
    })
}

#[test]
fn the_default_process_is_user_0x1000_and_new_processes_follow_by_four() {
    // The plan's numbering (docs/simulator.md, "Processes", a choice): ids are multiples of 4
    // (PsGetCurrentProcessId's reference page: a HANDLE-sized id; System is 4).
    let (mut m, _c) = ntfs_machine(&[]);
    assert_eq!(m.process("user"), Some(ProcessId(0x1000)));
    assert_eq!(m.acting_process(), ProcessId(0x1000));
    assert_eq!(m.new_process("svc"), Some(ProcessId(0x1004)));
    assert_eq!(m.new_process("editor"), Some(ProcessId(0x1008)));
    assert_eq!(m.new_process("svc"), None, "names are unique");
    assert_eq!(m.new_process("user"), None);
    assert_eq!(m.process("editor"), Some(ProcessId(0x1008)));
    let svc = m.process("svc").unwrap();
    let inner = m.as_process(svc, |m| m.acting_process());
    assert_eq!(inner, svc);
    assert_eq!(m.acting_process(), ProcessId(0x1000), "restored after as_process");
}

#[test]
fn irp_operations_and_fast_io_carry_the_requesting_process() {
    // FltGetRequestorProcessId(Ex)'s reference pages: the process of the thread that requested
    // the operation (FLT_CALLBACK_DATA's Thread); IoThreadToProcess / PsGetProcessId map the
    // thread and the process. Fast I/O runs in the requesting thread (current = requestor).
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    let log: Log = Rc::default();
    start(&mut m, 0, spy(&log));
    let svc = m.new_process("svc").unwrap();
    let h = m.as_process(svc, |m| {
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        m.read(h, Some(0), 5, IoMode::Cached); // the IRP that caches the file
        m.read(h, Some(0), 5, IoMode::Cached); // fast I/O
        h
    });
    let r = m.write(h, Some(0), b"HELLO", IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        log.borrow()[..4],
        [
            "irp 0x0 requestor 0x1004 current 0x1004",
            "irp 0x3 requestor 0x1004 current 0x1004",
            "fast 0x3 requestor 0x1004 current 0x1004",
            // The handle opened by svc, written by the default process: the writer asks.
            "fast 0x4 requestor 0x1000 current 0x1000",
        ]
    );
}

#[test]
fn the_modified_page_writer_requests_as_the_system_process_a_section_as_its_creator() {
    // Paging writes of the modified-page writer come from a system thread (WRK
    // MiMappedPageWriter): the System process, id 4, is their requestor. An FsFilter callback
    // (the acquire for a section's creation) runs in the thread that creates the section.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    let log: Log = Rc::default();
    start(&mut m, 0, spy(&log));
    let svc = m.new_process("svc").unwrap();
    let h = m.as_process(svc, |m| {
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        assert_eq!(m.create_section(h, 0x02).status, Status::SUCCESS); // PAGE_READONLY
        h
    });
    log.borrow_mut().retain(|l| !l.starts_with("irp 0x0 "));
    let r = m.page_write(h, 0, b"HELLO", PageWriter::ModifiedPageWriter);
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(
        log.borrow()[..],
        ["fsfilter 0xff requestor 0x1004 current 0x1004", "irp 0x4 requestor 0x4 current 0x4"]
    );
}

#[test]
fn the_lazy_writer_requests_as_the_system_process_a_flush_as_its_caller() {
    // WRK lazyrite.c: the lazy writer's write-behind runs in the cache manager's worker
    // (CcWorkerThread, queued with ExQueueWorkItem to the CriticalWorkQueue by CcPostWorkQueue),
    // a system thread: the System process is the requestor of its paging writes, whoever made
    // the pages dirty. A mapped view's flush (FlushViewOfFile) runs in its caller's thread.
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello")]);
    let log: Log = Rc::default();
    start(&mut m, 0, spy(&log));
    let svc = m.new_process("svc").unwrap();
    let h = m.as_process(svc, |m| m.open(c, "a.txt", CreateOptions::open()).unwrap());
    log.borrow_mut().clear();
    m.as_process(svc, |m| {
        let r = m.page_write(h, 0, b"HELLO", PageWriter::LazyWriter);
        assert_eq!(r.status, Status::SUCCESS);
        let r = m.write(h, Some(0), b"HELLO", IoMode::Paging);
        assert_eq!(r.status, Status::SUCCESS);
    });
    let writes: Vec<String> =
        log.borrow().iter().filter(|l| l.starts_with("irp 0x4 ")).cloned().collect();
    assert_eq!(writes, ["irp 0x4 requestor 0x4 current 0x4"; 2]);
    log.borrow_mut().clear();
    m.as_process(svc, |m| {
        let r = m.page_write(h, 0, b"HELLO", PageWriter::Flush);
        assert_eq!(r.status, Status::SUCCESS);
    });
    let writes: Vec<String> =
        log.borrow().iter().filter(|l| l.starts_with("irp 0x4 ")).cloned().collect();
    assert_eq!(writes, ["irp 0x4 requestor 0x1004 current 0x1004"]);
    m.as_process(svc, |m| m.close_handle(h));
}

#[test]
fn the_fast_io_lock_passes_the_callers_process() {
    // WRK lock.c (NtLockFile): the fast-I/O lock routine gets PsGetCurrentProcess(); the
    // Filter Manager passes it in FLT_PARAMETERS.LockControl.ProcessId (its reference page).
    let (mut m, c) = ntfs_machine(&[("a.txt", b"hello world")]);
    let got: Log = Rc::default();
    let g = got.clone();
    let look = Config::new("Look", "370000").op(mj::LOCK_CONTROL, true, false).with_pre(move |p| {
        let l = *unsafe { flt::<params::FltLockControl>(&p.iopb().Parameters) };
        let fast = p.data().Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0;
        let id = unsafe { PsGetProcessId(l.ProcessId) } as usize;
        let current = unsafe { IoGetCurrentProcess() };
        g.borrow_mut().push(format!("fast={fast} process={id:#x} same={}", l.ProcessId == current));
        (1, 0)
    });
    start(&mut m, 0, look);
    let svc = m.new_process("svc").unwrap();
    m.as_process(svc, |m| {
        let h = m.open(c, "a.txt", CreateOptions::open()).unwrap();
        let lock = IoRequest::Lock {
            handle: h,
            offset: 0,
            length: 4,
            exclusive: true,
            fail_immediately: true,
        };
        assert_eq!(m.io(lock).status, Status::SUCCESS);
    });
    assert_eq!(got.borrow()[..], ["fast=true process=0x1004 same=true"]);
}

#[test]
fn a_legacy_filter_reads_the_irps_requestor_and_a_driver_irp_has_none() {
    // IoGetRequestorProcessId's reference page: the process of the IRP's thread
    // (Irp->Tail.Overlay.Thread, which the I/O manager sets for the IRPs it builds), 0 when
    // the IRP has no thread (IoAllocateIrp leaves it NULL).
    let mut m = machine(1);
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"data"));
    m.install_filter_manager();
    install_legacy(&mut m, 0, "Old", "FSFilter Activity Monitor", StartType::Boot);
    m.boot();
    let log: Log = Rc::default();
    let l = log.clone();
    on_legacy_irp(move |irp| {
        let major =
            unsafe { (*fsfilter_kernel::irp::IoGetCurrentIrpStackLocation(irp)).MajorFunction };
        l.borrow_mut().push(format!("{major:#x} {:#x}", unsafe { IoGetRequestorProcessId(irp) }));
    });
    let editor = m.new_process("editor").unwrap();
    let h = m.as_process(editor, |m| m.open(c, "a.txt", CreateOptions::open()).unwrap());
    assert_eq!(m.close_handle(h), Status::SUCCESS);
    assert_eq!(log.borrow()[..], ["0x0 0x1004", "0x12 0x1000", "0x2 0x1000"]);
    let irp = unsafe { windows_sys::Wdk::System::SystemServices::IoAllocateIrp(1, false) };
    assert_eq!(unsafe { IoGetRequestorProcessId(irp) }, 0);
    assert_eq!(unsafe { IoGetRequestorProcessId(std::ptr::null()) }, 0);
    unsafe { windows_sys::Wdk::System::SystemServices::IoFreeIrp(irp) };
}

#[test]
#[should_panic(expected = "is not a user process")]
fn acting_as_the_system_process_is_refused() {
    let (mut m, _c) = ntfs_machine(&[]);
    m.as_process(ProcessId(4), |_| ());
}
