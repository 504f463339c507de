//! The tally sample end to end, shared by `minifilter/tests/tally.rs` and `legacy/tests/tally.rs`
//! (included with `#[path]`): each gives a machine with the filter installed in its model; every
//! check holds in both models, with the same expected notes and totals, so the two models' tallies
//! of the same workload agree.
//!
//! The machine has one NTFS volume, `C:`, with `report.txt` ([`REPORT`]) and `notes.txt`
//! ([`NOTES`]). Some checks run [`Observed`], the tally filter wrapped so that the test sees what
//! reaches `Filter::stream_context_freed` and the totals the filter holds when it is dropped at
//! unload: each driver crate builds a driver of it (`driver!(Observed)`).

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use fsfilter::{
    Filter, Instance, InstanceSetup, PostFlags, PostOperation, PostOutcome, PreOperation,
    PreOutcome, Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, Handle, IoMode, Machine, MachineConfig, PageWriter,
    ServiceSpec, StopResult, VolumeSpec,
};
use tally::{StreamTally, Tally, Totals};

/// The filter's service name in these tests.
pub const SERVICE: &str = "Tally";

/// What `C:\report.txt` holds (57 bytes).
pub const REPORT: &[u8] = b"quarterly report: revenue up, costs down, outlook stable.";

/// What `C:\notes.txt` holds (13 bytes).
pub const NOTES: &[u8] = b"meeting notes";

/// How a test installs the filter in its model (the minifilter's instance keys, or nothing).
pub type Install = fn(&mut Machine, ServiceSpec);

/// A machine with `C:` and the filter installed by `install`, booted; the filter is started
/// unless `started` is false.
pub fn machine(
    install: Install,
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
    started: bool,
) -> Machine {
    let mut m = Machine::new(MachineConfig { seed: 28 });
    m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs).file("report.txt", REPORT).file("notes.txt", NOTES),
    );
    install(&mut m, ServiceSpec::new(SERVICE, entry, model));
    m.boot();
    if started {
        assert_eq!(m.start(SERVICE), Status::SUCCESS);
    }
    m
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

fn open(m: &mut Machine, path: &str, options: CreateOptions) -> Handle {
    let c = m.volume("C:").unwrap();
    m.open(c, path, options).unwrap()
}

/// The workload of `lab/scenarios/tally.toml`: `report.txt` opened twice, read cached on each
/// handle (an IRP each: the first cached read of a file object initiates its caching), read
/// cached again on the first (fast I/O), read non-cached, written cached (fast I/O), written back
/// by the lazy writer (paging); `notes.txt` opened for overlapped I/O, read non-cached (completed
/// from the storage's DPC: the post callbacks at `DISPATCH_LEVEL`) and cached (an IRP); then the
/// handles closed, `report.txt`'s second last.
pub fn workload(m: &mut Machine) {
    let h1 = open(m, "report.txt", CreateOptions::open());
    let h2 = open(m, "report.txt", CreateOptions::open());
    let n = open(m, "notes.txt", CreateOptions { overlapped: true, ..CreateOptions::open() });
    let r = m.read(h1, Some(0), 16, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.len()), (Status::SUCCESS, false, 16));
    let r = m.read(h2, Some(16), 16, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.len()), (Status::SUCCESS, false, 16));
    let r = m.read(h1, Some(32), 16, IoMode::Cached);
    assert_eq!((r.status, r.fast_io, r.data.len()), (Status::SUCCESS, true, 16));
    let r = m.read(h1, Some(0), 512, IoMode::NonCached);
    assert_eq!((r.status, r.data.len()), (Status::SUCCESS, REPORT.len()));
    let r = m.write(h1, Some(0), b"QUARTERLY", IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, true));
    let page: Vec<u8> = b"QUARTERLY report".iter().copied().cycle().take(512).collect();
    let r = m.page_write(h1, 0, &page, PageWriter::LazyWriter);
    assert_eq!(r.status, Status::SUCCESS);
    let r = m.read(n, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::PENDING, "overlapped: completed from the DPC");
    m.settle();
    let r = m.read(n, Some(0), 8, IoMode::Cached);
    assert_eq!((r.status, r.fast_io), (Status::SUCCESS, false));
    m.close_handle(h1);
    m.close_handle(h2);
    m.close_handle(n);
}

/// What the filter notes of [`workload`], in both models.
pub const WORKLOAD_NOTES: [&str; 3] = [
    "tally: last handle of stream 1: opens 2; reads 4 (fast 1, noncached 1) 105 B; writes 1 \
     (fast 1, noncached 0) 9 B; paging reads 0 (0 B), writes 1 (512 B); fast I/O declined 0",
    "tally: last handle of stream 2: opens 1; reads 2 (fast 0, noncached 1) 21 B; writes 0 \
     (fast 0, noncached 0) 0 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O declined 0",
    "tally: freed 1 of 2 contexts, 0 untracked: opens 2; reads 4 (fast 1, noncached 1) 105 B; \
     writes 1 (fast 1, noncached 0) 9 B; paging reads 0 (0 B), writes 1 (512 B); fast I/O \
     declined 0",
];

/// [`workload`]: the tally of each stream at its last handle's cleanup, and the totals of the
/// contexts freed by then (`report.txt`'s, torn down at its last close), are [`WORKLOAD_NOTES`],
/// in either model.
pub fn check_the_workload_is_tallied_per_stream(mut m: Machine) {
    workload(&mut m);
    assert_eq!(notes(&m), WORKLOAD_NOTES);
    assert_eq!(m.findings(), []);
}

std::thread_local! {
    /// The words of every context [`Observed`] was told was freed, in order.
    static FREED: RefCell<Vec<StreamTally>> = const { RefCell::new(Vec::new()) };
    /// The totals [`Observed`] held when it was dropped (at unload).
    static DROPPED: RefCell<Option<Totals>> = const { RefCell::new(None) };
}

/// The contexts freed so far (this thread's machine).
pub fn freed() -> Vec<StreamTally> {
    FREED.with(|f| f.borrow().clone())
}

/// The totals of the filter when it was dropped, once it was.
pub fn dropped() -> Option<Totals> {
    DROPPED.with(|d| *d.borrow())
}

/// The tally filter, watched: what reaches `stream_context_freed` is recorded before the filter
/// counts it, and its totals when it is dropped. Everything else is [`Tally`]'s.
#[derive(Debug, Default)]
pub struct Observed(Tally);

impl Drop for Observed {
    fn drop(&mut self) {
        let totals = self.0.totals();
        DROPPED.with(|d| *d.borrow_mut() = Some(totals));
    }
}

impl Filter for Observed {
    const REGISTRATION: Registration = tally::REGISTRATION;
    const STREAM_CONTEXT_WORDS: usize = <Tally as Filter>::STREAM_CONTEXT_WORDS;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Observed> {
        FREED.with(|f| f.borrow_mut().clear());
        DROPPED.with(|d| *d.borrow_mut() = None);
        Tally::load(parameters).map(Observed)
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
        self.0.instance_setup(setup)
    }

    fn pre_operation(
        &self,
        instance: &Instance<'_, ()>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        self.0.pre_operation(instance, op)
    }

    fn post_operation(
        &self,
        instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        context: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        self.0.post_operation(instance, op, context, flags)
    }

    fn post_operation_when_safe(
        &self,
        instance: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        context: (),
    ) -> PostOutcome<()> {
        self.0.post_operation_when_safe(instance, op, context)
    }

    fn stream_context_freed(&self, words: &[AtomicU64]) {
        assert_eq!(words.len(), tally::word::COUNT);
        FREED.with(|f| f.borrow_mut().push(StreamTally::from_words(words)));
        self.0.stream_context_freed(words);
    }
}

/// The sum of `tallies`, as [`Totals::streams`] counts it.
fn sum(tallies: &[StreamTally]) -> StreamTally {
    let words: Vec<AtomicU64> = (0..tally::word::COUNT).map(|_| AtomicU64::new(0)).collect();
    for t in tallies {
        let values = [
            0,
            0,
            t.opens,
            t.handles,
            t.cleanups,
            t.reads,
            t.read_bytes,
            t.fast_io_reads,
            t.noncached_reads,
            t.writes,
            t.write_bytes,
            t.fast_io_writes,
            t.noncached_writes,
            t.paging_reads,
            t.paging_read_bytes,
            t.paging_writes,
            t.paging_write_bytes,
            t.fast_io_declined,
        ];
        for (w, v) in words.iter().zip(values) {
            w.fetch_add(v, Ordering::Relaxed);
        }
    }
    StreamTally::from_words(&words)
}

/// A context freed when the file system tears its stream down (the last close of `report.txt`)
/// and one freed at unload (`notes.txt`'s handle is still open when the service stops) each reach
/// `stream_context_freed` once, and the totals the filter holds at the end are their sum: two
/// contexts created, two freed, in either model.
pub fn check_contexts_freed_at_teardown_and_at_unload_are_counted_once(
    install: Install,
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
) {
    let mut m = machine(install, entry, model, true);
    let report = open(&mut m, "report.txt", CreateOptions::open());
    let r = m.read(report, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    m.close_handle(report);
    let notes_txt = open(&mut m, "notes.txt", CreateOptions::open());
    let r = m.read(notes_txt, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    m.settle();
    // report.txt's stream went with its last close.
    let gone = freed();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!((gone[0].serial, gone[0].opens, gone[0].handles), (1, 1, 0));
    assert_eq!((gone[0].reads, gone[0].read_bytes), (1, REPORT.len() as u64));
    assert_eq!(dropped(), None);
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    m.settle();
    let gone = freed();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert_eq!((gone[1].serial, gone[1].opens, gone[1].handles), (2, 1, 1), "open at unload");
    assert_eq!((gone[1].reads, gone[1].read_bytes), (1, NOTES.len() as u64));
    let totals = dropped().expect("the filter was dropped at unload");
    assert_eq!((totals.created, totals.freed), (2, 2));
    assert_eq!(totals.streams, sum(&gone));
    // The handle outlives the filter: its cleanup and close reach nobody.
    m.close_handle(notes_txt);
    assert_eq!(freed().len(), 2);
    assert_eq!(m.findings(), []);
}

/// An overwrite (`FILE_OVERWRITE_IF` of an existing file, with another handle open) restarts the
/// stream's tally: the old one is noted and its context deleted, and so freed, at once; the new
/// one carries the open handle over (the second handle's write, its file object's first cached
/// transfer, is an IRP), and the last cleanup notes it, then the totals with the old one; at
/// unload, every context was freed once.
pub fn check_an_overwrite_restarts_the_tally(
    install: Install,
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
) {
    let mut m = machine(install, entry, model, true);
    let first = open(&mut m, "report.txt", CreateOptions::open());
    let r = m.write(first, Some(0), b"draft", IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    let overwrite = CreateOptions { disposition: 5, ..CreateOptions::default() };
    let c = m.volume("C:").unwrap();
    let r = m.create(c, "report.txt", overwrite);
    assert_eq!((r.status, r.information), (Status::SUCCESS, 3), "FILE_OVERWRITTEN");
    let second = r.handle.unwrap();
    m.settle();
    let gone = freed();
    assert_eq!(gone.len(), 1, "the old tally's context, deleted: {gone:?}");
    assert_eq!((gone[0].serial, gone[0].opens, gone[0].writes, gone[0].write_bytes), (1, 1, 1, 5));
    let r = m.write(second, Some(0), b"final", IoMode::Cached);
    assert_eq!(r.status, Status::SUCCESS);
    m.close_handle(first);
    m.close_handle(second);
    m.settle();
    assert_eq!(
        notes(&m),
        [
            "tally: overwritten, restarting stream 1: opens 1; reads 0 (fast 0, noncached 0) 0 B; \
             writes 1 (fast 0, noncached 0) 5 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O \
             declined 0",
            "tally: last handle of stream 2: opens 1; reads 0 (fast 0, noncached 0) 0 B; writes 1 \
             (fast 0, noncached 0) 5 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O declined 0",
            "tally: freed 1 of 2 contexts, 0 untracked: opens 1; reads 0 (fast 0, noncached 0) 0 \
             B; writes 1 (fast 0, noncached 0) 5 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O \
             declined 0",
        ]
    );
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    m.settle();
    let totals = dropped().unwrap();
    assert_eq!((totals.created, totals.freed, totals.restarted), (2, 2, 1));
    assert_eq!(totals.streams, sum(&freed()));
    assert_eq!(m.findings(), []);
}

/// A stream opened before the filter started has no context: its read and its handle's cleanup
/// are untracked. A later open attaches one, which knows that handle only: its cleanup is the
/// last the filter knows of (noted), the older handle's is untracked no more but counts no handle.
pub fn check_a_stream_opened_before_the_filter_is_untracked(
    install: Install,
    entry: fsfilter_sim::DriverEntry,
    model: &'static str,
) {
    let mut m = machine(install, entry, model, false);
    let early = open(&mut m, "notes.txt", CreateOptions::open());
    assert_eq!(m.start(SERVICE), Status::SUCCESS);
    let r = m.read(early, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    let late = open(&mut m, "notes.txt", CreateOptions::open());
    let r = m.read(late, Some(0), 512, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    m.close_handle(late);
    m.close_handle(early);
    m.settle();
    assert_eq!(
        notes(&m),
        ["tally: last handle of stream 1: opens 1; reads 1 (fast 0, noncached 1) 13 B; writes 0 \
             (fast 0, noncached 0) 0 B; paging reads 0 (0 B), writes 0 (0 B); fast I/O declined 0",]
    );
    assert_eq!(m.stop(SERVICE), StopResult::Unloaded);
    m.settle();
    let totals = dropped().unwrap();
    assert_eq!((totals.created, totals.freed, totals.untracked), (1, 1, 1));
    assert_eq!((totals.streams.cleanups, totals.streams.handles), (2, 0));
    assert_eq!(m.findings(), []);
}

/// The checks above as the tests of one driver crate: `install`, the crate's tally entry, the
/// entry of its `driver!(Observed)` and the model's name. Expanded at the crate root of a crate
/// that includes this file as `mod tally_test`.
macro_rules! tests {
    ($install:expr, $tally:expr, $observed:expr, $model:literal $(,)?) => {
        #[test]
        fn the_workload_is_tallied_per_stream() {
            let m = $crate::tally_test::machine($install, $tally, $model, true);
            $crate::tally_test::check_the_workload_is_tallied_per_stream(m);
        }

        #[test]
        fn contexts_freed_at_teardown_and_at_unload_are_counted_once() {
            $crate::tally_test::check_contexts_freed_at_teardown_and_at_unload_are_counted_once(
                $install, $observed, $model,
            );
        }

        #[test]
        fn an_overwrite_restarts_the_tally() {
            $crate::tally_test::check_an_overwrite_restarts_the_tally($install, $observed, $model);
        }

        #[test]
        fn a_stream_opened_before_the_filter_is_untracked() {
            $crate::tally_test::check_a_stream_opened_before_the_filter_is_untracked(
                $install, $observed, $model,
            );
        }
    };
}
pub(crate) use tests;
