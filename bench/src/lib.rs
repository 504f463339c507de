//! fsfilter-bench: the machines, workloads and timing records of issue 9's benchmarks.
//!
//! A [`Bench`] is one simulated machine with an NTFS volume `C:` holding `data.bin` (64 KiB),
//! a stack of filters chosen from [`Driver`] (the fsfilter samples under either model and the raw
//! windows-sys baselines of `bench/raw-*`), booted, with one handle open on the file. The
//! benchmarks (`benches/`) build one per group and run operations on it in the timed loop; the
//! simulator keeps one machine per thread, so a group drops its machine before the next builds
//! one.
//!
//! [`Timings`] records what criterion measured (`iter_custom`) so that a benchmark can print
//! ratios between configurations measured in the same run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "host benchmark harness: a failed setup should stop the benchmark loudly"
)]

pub mod lab;
pub mod paired;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use fsfilter::Status;
use fsfilter_sim::{
    CreateOptions, Handle, InstanceLayout, InstanceSpec, InstancesSpec, IoMode, Machine,
    MachineConfig, ServiceSpec, StartType, VolumeId, VolumeSpec,
};

/// The file the workloads use.
pub const FILE: &str = "data.bin";
/// Its size.
pub const FILE_SIZE: usize = 64 * 1024;
/// Bytes per read.
pub const READ_LENGTH: usize = 4096;

/// A filter driver a bench machine can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Driver {
    /// `bench/raw-minifilter`: passthrough written directly against windows-sys.
    RawMinifilter,
    /// `bench/raw-legacy`: sfilter-style passthrough written directly against windows-sys.
    RawLegacy,
    /// The passthrough sample on the minifilter backend.
    PassthroughMinifilter,
    /// The passthrough sample on the legacy backend.
    PassthroughLegacy,
    /// The passthrough sample on the legacy backend, registered without an unload callback
    /// ([`passthrough::Resident`]): it can never be unloaded, so its completion routines need no
    /// `IoSetCompletionRoutineEx`, and per IRP it pays what the raw legacy filter pays (whose
    /// `DriverUnload`, sfilter's debug-build one, waits five seconds instead).
    ResidentLegacy,
    /// The probe sample (records every callback in its trace) on the minifilter backend.
    ProbeMinifilter,
    /// The probe sample on the legacy backend.
    ProbeLegacy,
}

impl Driver {
    /// The driver's entry point.
    pub fn entry(self) -> fsfilter_sim::DriverEntry {
        match self {
            Driver::RawMinifilter => raw_minifilter::ENTRY,
            Driver::RawLegacy => raw_legacy::ENTRY,
            Driver::PassthroughMinifilter => passthrough_minifilter::ENTRY,
            Driver::PassthroughLegacy => passthrough_legacy::ENTRY,
            Driver::ResidentLegacy => resident_legacy::ENTRY,
            Driver::ProbeMinifilter => probe_minifilter::ENTRY,
            Driver::ProbeLegacy => probe_legacy::ENTRY,
        }
    }

    /// True for Filter Manager minifilters.
    pub fn is_minifilter(self) -> bool {
        matches!(
            self,
            Driver::RawMinifilter | Driver::PassthroughMinifilter | Driver::ProbeMinifilter
        )
    }

    /// A short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Driver::RawMinifilter => "raw minifilter",
            Driver::RawLegacy => "raw legacy",
            Driver::PassthroughMinifilter => "fsfilter passthrough minifilter",
            Driver::PassthroughLegacy => "fsfilter passthrough legacy",
            Driver::ResidentLegacy => "fsfilter passthrough legacy, no unload",
            Driver::ProbeMinifilter => "fsfilter probe minifilter",
            Driver::ProbeLegacy => "fsfilter probe legacy",
        }
    }

    /// The raw drivers keep process-wide globals: at most one instance of each per process at a
    /// time.
    pub fn is_raw(self) -> bool {
        matches!(self, Driver::RawMinifilter | Driver::RawLegacy)
    }
}

mod resident_legacy {
    fsfilter_legacy::driver!(passthrough::Resident);
}

/// The service spec of the `index`th filter of a stack: `Filter<index>`, boot start in
/// FSFilter Activity Monitor; a minifilter gets one instance at altitude `370000 + 10 * index`
/// (the top of the list is the highest).
pub fn service(driver: Driver, index: usize) -> ServiceSpec {
    let name = format!("Filter{index}");
    let model = if driver.is_minifilter() { "minifilter" } else { "legacy" };
    let mut spec = ServiceSpec::new(&name, driver.entry(), model);
    spec.start = StartType::Boot;
    spec.group = Some("FSFilter Activity Monitor".to_owned());
    if driver.is_minifilter() {
        spec.depends_on = vec!["FltMgr".to_owned()];
        let instance = format!("{name} Instance");
        spec.instances = Some(InstancesSpec {
            default_instance: instance.clone(),
            instances: vec![InstanceSpec {
                name: instance,
                altitude: (370_000 + 10 * index).to_string(),
                flags: 0,
            }],
            layout: InstanceLayout::Both,
        });
    }
    spec
}

/// A booted machine with a filter stack and a handle on [`FILE`].
pub struct Bench {
    /// The machine.
    pub machine: Machine,
    /// `C:`.
    pub volume: VolumeId,
    /// An open handle on [`FILE`] (cached reads go through fast I/O after the first).
    pub handle: Handle,
    /// Requests since the event log was last emptied.
    since_trim: u64,
    /// The next read offset.
    offset: u64,
}

/// Requests between two trims of the event log (it grows by a few events per request).
const TRIM_EVERY: u64 = 4096;

impl Bench {
    /// Builds and boots a machine with `drivers` loaded at boot, in that order (`Filter0`,
    /// `Filter1`, ...), opens [`FILE`] and warms the cache with one read.
    ///
    /// # Panics
    /// When this thread has a machine already, or a driver fails to load.
    pub fn new(drivers: &[Driver]) -> Bench {
        let mut machine = Machine::new(MachineConfig { seed: 9 });
        let data: Vec<u8> = (0..FILE_SIZE).map(|i| i as u8).collect();
        let volume =
            machine.add_volume(VolumeSpec::new("C:", fsfilter_sim::FsKind::Ntfs).file(FILE, &data));
        for (i, &d) in drivers.iter().enumerate() {
            machine.install(service(d, i));
        }
        machine.boot();
        let handle = machine.open(volume, FILE, CreateOptions::open()).expect("open data.bin");
        let mut bench = Bench { machine, volume, handle, since_trim: 0, offset: 0 };
        assert_eq!(bench.read(IoMode::Cached), READ_LENGTH, "warm-up read");
        bench.trim();
        let findings = bench.machine.findings();
        assert!(findings.is_empty(), "verifier findings while booting: {findings:?}");
        bench
    }

    /// Empties the event log (and forgets the requests' records) every [`TRIM_EVERY`] requests.
    fn count(&mut self, requests: u64) {
        self.since_trim += requests;
        if self.since_trim >= TRIM_EVERY {
            self.trim();
        }
    }

    /// Whether the backends' trace hook records its callback events (on by default, as in the
    /// lab). Off, a framework driver costs what it costs on Windows without `dbgprint-trace`,
    /// where the hook is compiled out; the Filter Manager's own events stay on for every
    /// driver alike.
    pub fn record_callbacks(&mut self, on: bool) {
        self.machine.kernel(|k| k.set_record_callbacks(on));
    }

    /// Empties the event log now.
    pub fn trim(&mut self) {
        self.since_trim = 0;
        self.machine.kernel(|k| {
            k.events.clear();
            k.requests.forget_completed();
        });
    }

    fn read(&mut self, mode: IoMode) -> usize {
        self.read_on(self.handle, mode)
    }

    fn read_on(&mut self, handle: Handle, mode: IoMode) -> usize {
        let offset = self.offset;
        self.offset = (self.offset + READ_LENGTH as u64) % FILE_SIZE as u64;
        let r = self.machine.read(handle, Some(offset), READ_LENGTH, mode);
        assert_eq!(r.status, Status::SUCCESS, "{mode:?} read");
        r.data.len()
    }

    /// Opens [`FILE`] and closes the handle: create, cleanup and close (2 user requests).
    pub fn create_close(&mut self) {
        let h = self.machine.open(self.volume, FILE, CreateOptions::open()).expect("open");
        self.machine.close_handle(h);
        self.count(2);
    }

    /// A cached 4 KiB read (fast I/O: the file is cached after the first read).
    pub fn cached_read(&mut self) {
        self.read(IoMode::Cached);
        self.count(1);
    }

    /// A paging 4 KiB read (an IRP with `IRP_PAGING_IO`).
    pub fn paging_read(&mut self) {
        self.read(IoMode::Paging);
        self.count(1);
    }

    /// The mixed workload of the throughput benchmark: [`MIXED_REQUESTS`] user requests (open,
    /// 4 cached reads, a paging read, a non-cached read, a non-cached write, a query, close).
    pub fn mixed(&mut self) {
        let h = self.machine.open(self.volume, FILE, CreateOptions::open()).expect("open");
        for _ in 0..4 {
            self.read_on(h, IoMode::Cached);
        }
        self.read_on(h, IoMode::Paging);
        self.read_on(h, IoMode::NonCached);
        let w = self.machine.write(h, Some(0), &[0u8; 512], IoMode::NonCached);
        assert_eq!(w.status, Status::SUCCESS, "write");
        // FileStandardInformation.
        let q = self.machine.query_information(h, 5, 24);
        assert_eq!(q.status, Status::SUCCESS, "query");
        self.machine.close_handle(h);
        self.count(MIXED_REQUESTS);
    }

    /// Pre and post callbacks the filters' logic ran for one [`Bench::mixed`] (from the trace
    /// hook's events; needs [`Bench::record_callbacks`] on, the default).
    pub fn callbacks_per_mixed(&mut self) -> usize {
        self.traced_mixed().callbacks
    }

    /// Operations that one [`Bench::mixed`] takes through the stack: the pre callbacks of the
    /// filter that saw the most of them (each passthrough registers every operation, so each
    /// filter sees each operation once: a close of a handle is two, cleanup and close). Zero
    /// without a filter. As [`Bench::callbacks_per_mixed`], from the trace hook's events.
    pub fn operations_per_mixed(&mut self) -> usize {
        self.traced_mixed().operations
    }

    /// One [`Bench::mixed`] counted through its callback events.
    fn traced_mixed(&mut self) -> Traced {
        self.trim();
        self.mixed();
        let mut callbacks = 0;
        let mut pres: std::collections::BTreeMap<&str, usize> = Default::default();
        let events = self.machine.events();
        for e in &events {
            let fsfilter_sim::EventKind::Callback { driver, callback, .. } = &e.kind else {
                continue;
            };
            match callback {
                fsfilter_sim::Callback::Pre { .. } => {
                    callbacks += 1;
                    *pres.entry(driver.as_str()).or_default() += 1;
                }
                fsfilter_sim::Callback::Post { .. } => callbacks += 1,
                _ => {}
            }
        }
        let operations = pres.values().copied().max().unwrap_or(0);
        self.trim();
        Traced { callbacks, operations }
    }

    /// Pool calls made so far by the service `Filter<index>`.
    pub fn pool_calls(&self, index: usize) -> u64 {
        let name = format!("Filter{index}");
        self.machine.kernel(|k| k.pool_calls_of_service(&name))
    }
}

/// What one [`Bench::mixed`] ran through the stack ([`Bench::callbacks_per_mixed`],
/// [`Bench::operations_per_mixed`]).
struct Traced {
    callbacks: usize,
    operations: usize,
}

/// User requests in one [`Bench::mixed`].
pub const MIXED_REQUESTS: u64 = 10;

/// Times criterion measured, by benchmark: the benchmarks time with `iter_custom` and record
/// here, then print ratios from the same run.
///
/// Criterion runs an `iter_custom` routine for its warm-up as well as for its samples: batches
/// of 1, 2, 4, ... iterations until the warm-up time is spent, then one batch per sample, of
/// `d`, `2d`, ... `nd` iterations (linear sampling, also `--quick`'s last two) or `n` batches of
/// `d` (flat). Only the samples count ([`measured`]): the warm-up's small first batches are the
/// coldest (the lab's sweep writes its scenario folder in its first), and they were a fifth of
/// a 100-sample benchmark's records and a third of the 10-sample sweep's.
#[derive(Default)]
pub struct Timings {
    /// Each routine call by benchmark, in order: its iterations and time per iteration.
    samples: Mutex<BTreeMap<String, Vec<(u64, f64)>>>,
}

impl Timings {
    /// An empty record.
    pub const fn new() -> Timings {
        Timings { samples: Mutex::new(BTreeMap::new()) }
    }

    /// Records that `iters` iterations of `id` took `elapsed`.
    pub fn record(&self, id: &str, iters: u64, elapsed: Duration) {
        if iters == 0 {
            return;
        }
        let per_iter = elapsed.as_secs_f64() / iters as f64;
        self.samples.lock().unwrap().entry(id.to_owned()).or_default().push((iters, per_iter));
    }

    /// How many samples of `id` criterion measured: those [`Timings::median`] is taken from.
    pub fn samples(&self, id: &str) -> usize {
        self.samples.lock().unwrap().get(id).map_or(0, |v| measured(v).len())
    }

    /// The median time per iteration of the samples criterion measured of `id`, in seconds.
    pub fn median(&self, id: &str) -> Option<f64> {
        let samples = self.samples.lock().unwrap();
        let mut v: Vec<f64> = measured(samples.get(id)?).iter().map(|&(_, t)| t).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

/// The samples criterion measured among the calls of one benchmark's routine, `(iterations,
/// time per iteration)` in call order: the last calls, whose iterations are `d`, `2d`, ...
/// (linear sampling) or all `d` (flat). The warm-up before them doubles from 1, so a linear run
/// never takes a warm-up batch in (its `d - d` would be 0), nor does a flat run that covers
/// every call (the warm-up was its first, of 1); a flat run takes the warm-up's last batch in
/// only when that batch had the samples' own size. One call (`--test`) is the sample; calls in
/// no such pattern are all kept.
pub fn measured(calls: &[(u64, f64)]) -> &[(u64, f64)] {
    let [.., (before, _), (last, _)] = calls else { return calls };
    let step = last.saturating_sub(*before);
    let iters = |i: usize| calls.get(i).map_or(0, |&(n, _)| n);
    let mut first = calls.len() - 1;
    if step == 0 {
        // Flat: the last calls of equal size, less the warm-up's single batch.
        while first > 0 && iters(first - 1) == *last {
            first -= 1;
        }
        first = first.max(1);
    } else {
        // Linear: back to the call of `step` iterations, each call `step` more than the last.
        while iters(first) != step && first > 0 && iters(first - 1) + step == iters(first) {
            first -= 1;
        }
        if iters(first) != step {
            return calls;
        }
    }
    calls.get(first..).unwrap_or(calls)
}

/// Nanoseconds, for reports.
pub fn ns(seconds: f64) -> f64 {
    seconds * 1e9
}
