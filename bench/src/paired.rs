//! Paired timing: two stacks timed in alternating batches, for ratios that a burst of load on
//! the machine does not skew.
//!
//! Criterion measures one configuration after another, a few seconds each, so a burst of load
//! during one of them moves the ratio between two configurations by as much as the burst costs
//! (this VM's bursts reach 20%). [`paired`] runs each stack on a machine of its own, each in a
//! thread of its own (the simulator keeps one machine per thread), and times short batches of
//! the same operation on them in turn, one batch at a time, in the order A B, B A, A B, ...: a
//! burst longer than a round slows both of its batches alike, and the median of the rounds'
//! ratios sets aside the few rounds a shorter one caught.
//!
//! Both threads are pinned to the same processor. Left to the scheduler, they ran on the VM's two
//! processors, one of which was steadily slower for a whole run, and the rounds' ratios of two
//! identical stacks scattered from 0.87 to 1.56 (first and third quartiles of 101 rounds; one run
//! put the two sides' fastest batches at 1.71 ms and 2.70 ms). Pinned, the same comparison gives
//! quartiles within 2% of its median. What remains is a bias of up to 2% between two machines of
//! the same stack, which differ in where their memory landed: the overhead benchmark prints the
//! raw filter against itself beside the comparisons, as the measurement's own floor.
//!
//! [`paired_timed`] does the same with each stack in a worker process of the lab's build
//! ([`crate::worker`]), both pinned to one processor; the overhead benchmark uses it, pooling the
//! rounds of several fresh pairs of processes, since two processes differ in their layout too.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Bench, Driver};

/// The batch times of two stacks, round by round ([`paired`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Paired {
    /// The first stack's batch of each round.
    pub a: Vec<Duration>,
    /// The second stack's batch of each round.
    pub b: Vec<Duration>,
}

impl Paired {
    /// Each round's ratio of the second stack's time to the first's.
    pub fn ratios(&self) -> Vec<f64> {
        self.a.iter().zip(&self.b).map(|(a, b)| b.as_secs_f64() / a.as_secs_f64()).collect()
    }

    /// The first quartile, the median and the third quartile of [`Paired::ratios`] (NaN for
    /// no rounds).
    pub fn ratio_quartiles(&self) -> (f64, f64, f64) {
        quartiles(self.ratios())
    }
}

/// The first quartile, median and third quartile of `values`, each the value at that rank in
/// sorted order (the lower one of two for an even count: what was measured, never a mean).
pub fn quartiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: usize| values[(values.len() - 1) * q / 4];
    (at(1), at(2), at(3))
}

/// One stack's thread: its machine, and the channels that start a batch and return its time.
struct Worker {
    go: Sender<()>,
    done: Receiver<Duration>,
    thread: JoinHandle<()>,
}

impl Worker {
    /// Builds `drivers`' machine in a new thread on processor `core` (callback events off, as
    /// in the overhead benchmark), runs one untimed batch, and reports ready.
    fn start(
        drivers: &[Driver],
        op: fn(&mut Bench),
        iters: u64,
        core: Option<core_affinity::CoreId>,
    ) -> Worker {
        let drivers = drivers.to_vec();
        let (go, starts) = channel::<()>();
        let (report, done) = channel::<Duration>();
        let thread = std::thread::spawn(move || {
            // Where the system allows it; otherwise the thread runs where it is put.
            if let Some(core) = core {
                let _ = core_affinity::set_for_current(core);
            }
            let mut bench = Bench::new(&drivers);
            bench.record_callbacks(false);
            for _ in 0..iters {
                op(&mut bench);
            }
            if report.send(Duration::ZERO).is_err() {
                return;
            }
            while starts.recv().is_ok() {
                let start = Instant::now();
                for _ in 0..iters {
                    op(&mut bench);
                }
                if report.send(start.elapsed()).is_err() {
                    return;
                }
            }
        });
        let ready = done.recv().expect("the stack's machine booted and warmed up");
        debug_assert_eq!(ready, Duration::ZERO);
        Worker { go, done, thread }
    }

    /// Times one batch (the other worker waits meanwhile).
    fn batch(&self) -> Duration {
        self.go.send(()).expect("the worker waits for its next batch");
        self.done.recv().expect("the worker timed its batch")
    }

    fn stop(self) {
        drop(self.go);
        self.thread.join().expect("the worker ended cleanly");
    }
}

/// Times `rounds` batches of `iters` runs of `op` on stack `a` and as many on stack `b`,
/// alternating (A B, then B A, ...), one batch running at a time; each stack in a thread of
/// this process.
pub fn paired(a: &[Driver], b: &[Driver], op: fn(&mut Bench), iters: u64, rounds: usize) -> Paired {
    let core = last_core();
    let (wa, wb) = (Worker::start(a, op, iters, core), Worker::start(b, op, iters, core));
    let out = alternate(rounds, || wa.batch(), || wb.batch());
    wa.stop();
    wb.stop();
    out
}

/// As [`paired`], with each stack in a worker process ([`crate::worker::Timed`], started with
/// `--pin` so that both run on the same processor): batches of `iters` runs of their workload,
/// after one untimed batch each.
pub fn paired_timed(
    a: &mut crate::worker::Timed,
    b: &mut crate::worker::Timed,
    iters: u64,
    rounds: usize,
) -> Result<Paired, String> {
    a.run(iters)?;
    b.run(iters)?;
    let error = std::cell::RefCell::new(None);
    let batch = |t: &mut crate::worker::Timed| {
        t.run(iters).unwrap_or_else(|e| {
            error.borrow_mut().get_or_insert(e);
            Duration::ZERO
        })
    };
    let out = alternate(rounds, || batch(a), || batch(b));
    match error.into_inner() {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The processor both sides of a pair run on: the last one (the first takes more of the
/// system's interrupts, if any do); `None` where the system does not say.
pub fn last_core() -> Option<core_affinity::CoreId> {
    core_affinity::get_core_ids().and_then(|ids| ids.last().copied())
}

/// `rounds` rounds of one batch of each side, in the order A B, then B A, ...
fn alternate(
    rounds: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> Paired {
    let mut out = Paired { a: Vec::with_capacity(rounds), b: Vec::with_capacity(rounds) };
    for round in 0..rounds {
        if round % 2 == 0 {
            out.a.push(a());
            out.b.push(b());
        } else {
            out.b.push(b());
            out.a.push(a());
        }
    }
    out
}
