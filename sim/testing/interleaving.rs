//! The interleavings of the asynchrony tests (issue 10 item 3), shared by
//! `legacy/tests/asynchrony.rs` and `minifilter/tests/asynchrony.rs` (each includes this file with
//! `#[path]`): the same machine, the same seeded schedule of pended reads, a waiting lock and a
//! stop or a dismount, and the same view of the event log; each backend's test asserts its own
//! model's draining on it.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::RefCell;
use std::rc::Rc;

use fsfilter::{Status, TeardownFlags};
use fsfilter_sim::{
    Callback, CreateOptions, EventKind, FsKind, IoMode, IoRequest, Machine, MachineConfig,
    RequestRef, StopResult, VolumeId, VolumeSpec,
};

/// Seeds per disruption: each a different interleaving.
pub(crate) const SEEDS: u64 = 20;

pub(crate) const NAME: &str = "Probe";

/// A small deterministic generator (splitmix64): the delays of one seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disruption {
    Stop,
    Dismount,
}

/// What the scheduled callers saw.
#[derive(Default, Debug)]
pub(crate) struct Seen {
    /// (what, status, request) of each request a scheduled caller made.
    pub(crate) results: Vec<(&'static str, Status, Option<RequestRef>)>,
    pub(crate) stop: Option<StopResult>,
    pub(crate) dismount: Option<Status>,
}

pub(crate) fn lock(handle: fsfilter_sim::Handle, wait: bool) -> IoRequest<'static> {
    IoRequest::Lock { handle, offset: 0, length: 16, exclusive: true, fail_immediately: !wait }
}

/// One interleaving: reads of `a.bin` and `b.bin` pended for seed-chosen delays, a lock that waits
/// for a conflicting one, the disruption at a seed-chosen moment, the unlock that lets the waiting
/// lock complete, and a late read. `install` installs the probe as boot-start service [`NAME`]
/// under the backend being tested, with the given `Rules` parameter.
pub(crate) fn run(
    seed: u64,
    disruption: Disruption,
    install: impl FnOnce(&mut Machine, &str),
) -> (Machine, VolumeId, Seen, RequestRef) {
    let mut rng = Rng(seed);
    let (pa, pb) = (rng.range(5, 50), rng.range(5, 50));
    let mut m = Machine::new(MachineConfig { seed });
    let c = m.add_volume(
        VolumeSpec::new("C:", FsKind::Ntfs)
            .file("a.bin", &[0xA; 4096])
            .file("b.bin", &[0xB; 4096])
            .file("lock.bin", &[0xC; 64]),
    );
    install(&mut m, &format!("pend:{pa} read *a.bin; pend:{pb} read *b.bin"));
    m.boot();
    let ha = m.open(c, "a.bin", CreateOptions::open()).unwrap();
    let hb = m.open(c, "b.bin", CreateOptions::open()).unwrap();
    let hl1 = m.open(c, "lock.bin", CreateOptions::open()).unwrap();
    let hl2 = m.open(c, "lock.bin", CreateOptions::open()).unwrap();
    assert_eq!(m.io(lock(hl1, false)).status, Status::SUCCESS);
    let seen = Rc::new(RefCell::new(Seen::default()));
    let record = |seen: &Rc<RefCell<Seen>>, what: &'static str| {
        let seen = seen.clone();
        move |r: fsfilter_sim::IoResult| seen.borrow_mut().results.push((what, r.status, r.io))
    };
    let t_b = rng.range(0, 10);
    let t_lock = rng.range(0, 20);
    let t_disrupt = rng.range(0, 40);
    let t_unlock = rng.range(0, 60);
    let t_late = rng.range(0, 60);
    let done = record(&seen, "read b.bin");
    m.schedule(t_b, move |m| done(m.read(hb, Some(0), 512, IoMode::NonCached)));
    let done = record(&seen, "lock (waits)");
    m.schedule(t_lock, move |m| done(m.io(lock(hl2, true))));
    let s = seen.clone();
    m.schedule(t_disrupt, move |m| match disruption {
        Disruption::Stop => s.borrow_mut().stop = Some(m.stop(NAME)),
        Disruption::Dismount => s.borrow_mut().dismount = Some(m.dismount(c)),
    });
    let done = record(&seen, "unlock");
    m.schedule(t_unlock, move |m| {
        done(m.io(IoRequest::Unlock { handle: hl1, offset: 0, length: 16 }))
    });
    let done = record(&seen, "late read a.bin");
    m.schedule(t_late, move |m| done(m.read(ha, Some(512), 512, IoMode::NonCached)));
    let main = m.read(ha, Some(0), 512, IoMode::NonCached);
    m.settle();
    for h in [ha, hb, hl1, hl2] {
        m.close_handle(h);
    }
    m.settle();
    let seen = Rc::try_unwrap(seen).unwrap().into_inner();
    (m, c, seen, main.io.unwrap())
}

/// The event log, one line per event of interest.
pub(crate) fn trace(m: &Machine) -> Vec<String> {
    m.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Callback { driver, callback, io, .. } if driver == NAME => {
                let io = io.map_or(String::new(), |i| format!(" io{}", i.0));
                Some(match callback {
                    Callback::Pre { major, outcome, .. } => format!("pre {major:?} {outcome}{io}"),
                    Callback::Post { major, draining, .. } => {
                        format!("post {major:?}{}{io}", if draining { " draining" } else { "" })
                    }
                    other => format!("{}{io}", other.kind()),
                })
            }
            EventKind::Unload { driver, .. } if driver == NAME => Some("UNLOAD".into()),
            EventKind::IoStart { io, major, .. } => Some(format!("start io{} {major:?}", io.0)),
            EventKind::IoComplete { io, status, .. } => {
                Some(format!("complete io{} {status:?}", io.0))
            }
            EventKind::Dismounted { .. } => Some("DISMOUNTED".into()),
            _ => None,
        })
        .collect()
}

/// The probe's events and the requests' lives, by position in the event log.
#[derive(Default)]
pub(crate) struct Log {
    /// (position, io, outcome) of each pre.
    pub(crate) pres: Vec<(usize, Option<RequestRef>, &'static str)>,
    /// (position, io, outcome) of each resumption.
    pub(crate) resumed: Vec<(usize, Option<RequestRef>, &'static str)>,
    /// (position, io, draining) of each post.
    pub(crate) posts: Vec<(usize, Option<RequestRef>, bool)>,
    pub(crate) teardown_start: Vec<(usize, TeardownFlags)>,
    pub(crate) teardown_complete: Vec<(usize, TeardownFlags)>,
    pub(crate) unload_callback: Vec<usize>,
    /// Positions of the driver's unload.
    pub(crate) unload: Vec<usize>,
    pub(crate) dismounted: Vec<usize>,
    /// Position of the last event of the driver's logic.
    pub(crate) last_callback: Option<usize>,
    /// (position, io, major) of each request start; (position, io, status) of each completion.
    pub(crate) starts: Vec<(usize, RequestRef, fsfilter::MajorFunction)>,
    pub(crate) completions: Vec<(usize, RequestRef, Status)>,
}

pub(crate) fn log(m: &Machine) -> Log {
    let mut l = Log::default();
    for (p, e) in m.events().into_iter().enumerate() {
        match e.kind {
            EventKind::Callback { driver, callback, io, .. } if driver == NAME => {
                l.last_callback = Some(p);
                match callback {
                    Callback::Pre { outcome, .. } => l.pres.push((p, io, outcome)),
                    Callback::Resumed { outcome } => l.resumed.push((p, io, outcome)),
                    Callback::Post { draining, .. } => l.posts.push((p, io, draining)),
                    Callback::TeardownStart { reason } => l.teardown_start.push((p, reason)),
                    Callback::TeardownComplete { reason } => l.teardown_complete.push((p, reason)),
                    Callback::UnloadCallback { .. } => l.unload_callback.push(p),
                    _ => {}
                }
            }
            EventKind::Unload { driver, .. } if driver == NAME => l.unload.push(p),
            EventKind::Dismounted { .. } => l.dismounted.push(p),
            EventKind::IoStart { io, major, .. } => l.starts.push((p, io, major)),
            EventKind::IoComplete { io, status, .. } => l.completions.push((p, io, status)),
            _ => {}
        }
    }
    l
}

/// A resumption of, or a post to, a pre: (position, io, outcome or draining).
pub(crate) type After<'a, T> = Vec<&'a (usize, Option<RequestRef>, T)>;

impl Log {
    /// The resumptions and posts that belong to the pre at position `p` of request `io`: the
    /// request's, after `p` and before the request's next pre (a fast-I/O attempt that the
    /// drivers below refused is followed by the IRP of the same request, with its own pre).
    pub(crate) fn after_pre(
        &self,
        p: usize,
        io: RequestRef,
    ) -> (After<'_, &'static str>, After<'_, bool>) {
        let next = self.pres.iter().filter(|q| q.1 == Some(io) && q.0 > p).map(|q| q.0).min();
        let mine = |q: usize| p < q && next.is_none_or(|n| q < n);
        let resumed = self.resumed.iter().filter(|r| r.1 == Some(io) && mine(r.0)).collect();
        let posts = self.posts.iter().filter(|q| q.1 == Some(io) && mine(q.0)).collect();
        (resumed, posts)
    }

    pub(crate) fn completion(&self, io: RequestRef) -> (usize, Status) {
        let c: Vec<_> = self.completions.iter().filter(|(_, i, _)| *i == io).collect();
        assert_eq!(c.len(), 1, "io{} completes exactly once", io.0);
        (c[0].0, c[0].2)
    }
}

/// Prints a run's trace when one of its assertions fails.
pub(crate) struct TraceOnPanic(pub(crate) Vec<String>);

impl Drop for TraceOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("trace:\n  {}", self.0.join("\n  "));
        }
    }
}
