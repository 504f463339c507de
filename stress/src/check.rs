//! The invariants checked on every run, step by step, and on the machine at the end.
//!
//! - **findings**: no verifier event at all (the drivers are ours; a finding against a native
//!   driver would be a simulator bug).
//! - **posts**: every pre callback that asked for a post (`FLT_PREOP_SUCCESS_WITH_CALLBACK`,
//!   `FLT_PREOP_SYNCHRONIZE`, or `FLT_PREOP_PENDING` resumed with one of them) gets exactly one
//!   post callback, within the step (the lab settles after each step, so nothing may stay in
//!   flight), or, for a request the file system still holds at the step's end (a change
//!   notification waiting for a change), by the step that completes it; no post comes without
//!   one; every pended pre is resumed exactly once, within the step. A post that answered
//!   `WhenSafe` (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`) comes again, `when_safe`, to finish
//!   (rule 14): that second half pairs with it, not with a pre, and is not in the stack order.
//! - **instances**: on each volume, a filter's instance set up with success gets exactly one
//!   teardown start and then exactly one teardown complete (every sample registers all three
//!   callbacks): no teardown start without an instance set up, no complete without a start, and
//!   a driver stopped at the end of the run has no instance left.
//! - **order**: within one user request, consecutive pre callbacks of one operation and kind run
//!   top down and consecutive post callbacks bottom up, in the order of the volume's stack (legacy
//!   devices and Filter Manager frames, instances by altitude inside a frame).
//! - **statuses**: the documented answers of steps whose result is known in advance (`fltmc`
//!   naming a legacy filter, a probe with malformed parameters, an attach at an occupied
//!   altitude).
//! - **balance**: at the end (after the tail closed every file, stopped every driver and dismounted
//!   every volume), every driver is unloaded unless it documentedly cannot be, and every unloaded
//!   image of ours has no pool block, no device object and no device reference left; once every
//!   driver of ours is stopped, no device of any other driver has a reference left either (one a
//!   filter took with `IoGetDiskDeviceObject`, say, and never dropped).
//! - **contexts** (stream contexts, rule 28 of docs/callback-model.md): at the end no
//!   `FSRTL_PER_STREAM_CONTEXT` an unloaded image of ours inserted is still linked on a stream
//!   (its `FreeCallback` would run in freed code); and every note of the tally sample's totals
//!   (`tally: freed F of C contexts`) has `F <= C`: a context reported freed twice shows as more
//!   freed than attached. The simulator's own rules (`PER_STREAM_CONTEXT_*`, `IRQL_TOO_HIGH`,
//!   `CONTEXT_LEAKED`, `UNLOADED_DRIVER_CODE_RAN`, `POOL_LEAKED_AT_UNLOAD`) are **findings**; a
//!   context never freed is a pool block left (**balance**).

use std::collections::BTreeMap;

use fsfilter::{MajorFunction, OperationKind, Status};
use fsfilter_lab::run::{Run, Snapshot, StackEntry};
use fsfilter_lab::scenario::{Action, Model, Parameter, Scenario};
use fsfilter_sim::kernel::ImageKind;
use fsfilter_sim::loader::ServiceState;
use fsfilter_sim::{Callback, Event, EventKind, FltEvent, Machine, Name, RequestRef};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The step (None: boot, or the end of the run for the balance).
    pub step: Option<u32>,
    /// The invariant's name.
    pub invariant: &'static str,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(s) => write!(f, "step {s}: {}: {}", self.invariant, self.detail),
            None => write!(f, "boot/end: {}: {}", self.invariant, self.detail),
        }
    }
}

/// What one loaded image of a driver left at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageEnd {
    /// Its code may still run.
    pub loaded: bool,
    /// Live pool blocks it allocated.
    pub pool_blocks: usize,
    /// Their bytes.
    pub pool_bytes: usize,
    /// Device objects of its driver object not deleted.
    pub live_devices: usize,
    /// References still held on its driver's device objects.
    pub device_refs: u32,
    /// `FSRTL_PER_STREAM_CONTEXT`s it inserted still linked on streams.
    pub linked_contexts: usize,
}

/// A scenario driver at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverEnd {
    /// The service name.
    pub name: String,
    /// `stopped`, `running` or `stop_pending`.
    pub state: &'static str,
    /// Every image the service loaded, in load order.
    pub images: Vec<ImageEnd>,
    /// A device of its running driver has another device attached above it (what keeps a legacy
    /// filter's stop pending, facts.md §1.9).
    pub attached_above: bool,
}

/// The machine at the end of the run, as the balance invariant needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndState {
    /// The scenario's drivers.
    pub drivers: Vec<DriverEnd>,
    /// The machine bugchecked.
    pub crashed: Option<String>,
    /// Devices of other drivers (file systems, storage, the Filter Manager) with references
    /// still held on them: (device, driver, references).
    pub foreign_refs: Vec<(String, String, u32)>,
}

/// Reads the end state of `scenario`'s drivers from the machine (pass it to
/// [`fsfilter_lab::run::run_inspect`]).
pub fn end_state(m: &Machine, scenario: &Scenario) -> EndState {
    m.kernel(|k| {
        let drivers = scenario
            .drivers
            .iter()
            .map(|d| {
                let svc = k.service_index(&d.name).map(|i| &k.loader.services[i]);
                let state = match svc.map(|s| s.state) {
                    Some(ServiceState::Running) => "running",
                    Some(ServiceState::StopPending) => "stop_pending",
                    _ => "stopped",
                };
                let attached_above = svc.and_then(|s| s.driver).is_some_and(|drv| {
                    k.objects.driver(drv).devices.iter().any(|&dev| k.objects.above(dev).is_some())
                });
                let images = k
                    .images
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| {
                        i.kind == ImageKind::Loaded && i.name.eq_ignore_ascii_case(&d.name)
                    })
                    .map(|(n, i)| {
                        let id = fsfilter_sim::ids::ImageId(n as u32);
                        let (pool_blocks, pool_bytes, _) = k.pool_outstanding(id);
                        let (live_devices, device_refs) = i.driver.map_or((0, 0), |drv| {
                            let live = k.objects.driver(drv).devices.len();
                            let refs = k
                                .objects
                                .devices
                                .iter()
                                .filter(|dev| dev.driver == drv)
                                .map(|dev| dev.refs)
                                .sum();
                            (live, refs)
                        });
                        let linked_contexts =
                            k.perstream.linked.values().filter(|l| l.image == Some(id)).count();
                        ImageEnd {
                            loaded: i.loaded,
                            pool_blocks,
                            pool_bytes,
                            live_devices,
                            device_refs,
                            linked_contexts,
                        }
                    })
                    .collect();
                DriverEnd { name: d.name.clone(), state, images, attached_above }
            })
            .collect();
        let ours =
            |service: &str| scenario.drivers.iter().any(|d| d.name.eq_ignore_ascii_case(service));
        let foreign_refs = k
            .objects
            .devices
            .iter()
            .enumerate()
            .filter(|(_, dev)| dev.refs > 0)
            .filter_map(|(n, dev)| {
                let service = k.objects.driver(dev.driver).service.clone();
                let name = dev.name.clone().unwrap_or_else(|| format!("device #{n}"));
                (!ours(&service)).then_some((name, service, dev.refs))
            })
            .collect();
        EndState { drivers, crashed: k.crashed.clone(), foreign_refs }
    })
}

/// Every invariant, on a finished run.
pub fn check(scenario: &Scenario, run: &Run, end: &EndState) -> Vec<Violation> {
    let mut out = Vec::new();
    findings(run, &mut out);
    posts(&run.events, |d, m| post_only(scenario, d, m), &mut out);
    let running = |d: &str| {
        end.drivers.iter().any(|e| e.name.eq_ignore_ascii_case(d) && e.state != "stopped")
    };
    instances(&run.events, running, |v| volume_key(scenario, v), &mut out);
    order(scenario, run, &mut out);
    statuses(scenario, run, &mut out);
    balance(scenario, end, &mut out);
    contexts(run, end, &mut out);
    out
}

fn findings(run: &Run, out: &mut Vec<Violation>) {
    for e in run.findings() {
        if let EventKind::Verifier { driver, rule, message } = &e.kind {
            out.push(Violation {
                step: e.step,
                invariant: "findings",
                detail: format!("{rule} against {}: {message}", driver.as_deref().unwrap_or("?")),
            });
        }
    }
}

/// An operation of one driver on one volume for one request.
type OpKey = (Name, Option<Name>, Option<RequestRef>, MajorFunction);
/// A driver's pended operations of one request.
type PendKey = (Name, Option<Name>, Option<RequestRef>);

/// A post's outcome that defers the completion (`PostOutcome::WhenSafe`,
/// `PostOutcome::MoreProcessing`).
const MORE_PROCESSING: &str = "FLT_POSTOP_MORE_PROCESSING_REQUIRED";

fn asks_for_post(outcome: &str) -> bool {
    matches!(outcome, "FLT_PREOP_SUCCESS_WITH_CALLBACK" | "FLT_PREOP_SYNCHRONIZE")
}

/// True when `driver` registered `major` with a post callback and no pre callback: its posts
/// pair with no pre (the scanner's post-create and post-write, `scanner::REGISTRATION`; the
/// tally's post-create, `tally::REGISTRATION`).
pub fn post_only(scenario: &Scenario, driver: &str, major: MajorFunction) -> bool {
    let Some(d) = scenario.driver(driver) else { return false };
    let registration = if d.sample.eq_ignore_ascii_case("scanner") {
        &scanner::REGISTRATION
    } else if d.sample.eq_ignore_ascii_case("tally") {
        &tally::REGISTRATION
    } else {
        return false;
    };
    registration.get(major).is_some_and(|op| op.post && !op.pre)
}

/// The **posts** invariant over an event list (public so that the tests can feed it a tampered
/// one); `post_only` says which operations of which drivers have no pre callback.
pub fn posts(
    events: &[Event],
    post_only: impl Fn(&str, MajorFunction) -> bool,
    out: &mut Vec<Violation>,
) {
    let mut outstanding: BTreeMap<OpKey, u32> = BTreeMap::new();
    let mut pended: BTreeMap<PendKey, Vec<MajorFunction>> = BTreeMap::new();
    // Posts that answered FLT_POSTOP_MORE_PROCESSING_REQUIRED: a `WhenSafe` one's second half
    // comes as a post `when_safe` (a `MoreProcessing` one's never does).
    let mut deferred: BTreeMap<OpKey, u32> = BTreeMap::new();
    // User requests started and not completed yet: their posts may come in a later step.
    let mut open: std::collections::BTreeSet<RequestRef> = std::collections::BTreeSet::new();
    let mut step: Option<u32> = None;
    let flush = |step: Option<u32>,
                 outstanding: &mut BTreeMap<OpKey, u32>,
                 pended: &mut BTreeMap<PendKey, Vec<MajorFunction>>,
                 open: Option<&std::collections::BTreeSet<RequestRef>>,
                 out: &mut Vec<Violation>| {
        for ((d, v, io, major), n) in std::mem::take(outstanding) {
            if n > 0 && io.is_some_and(|i| open.is_some_and(|o| o.contains(&i))) {
                // Still held below (a waiting notification): its post comes when it completes.
                outstanding.insert((d, v, io, major), n);
            } else if n > 0 {
                out.push(Violation {
                    step,
                    invariant: "posts",
                    detail: format!(
                        "{d} on {}: {n} pre callback(s) of {major} for request {io:?} asked for a post that never came",
                        v.as_deref().unwrap_or("?")
                    ),
                });
            }
        }
        for ((d, _, io), majors) in std::mem::take(pended) {
            if !majors.is_empty() {
                out.push(Violation {
                    step,
                    invariant: "posts",
                    detail: format!("{d}: pended {majors:?} of request {io:?} never resumed"),
                });
            }
        }
    };
    for e in events {
        if e.step != step {
            flush(step, &mut outstanding, &mut pended, Some(&open), out);
            step = e.step;
        }
        match &e.kind {
            EventKind::IoStart { io, .. } => {
                open.insert(*io);
            }
            EventKind::IoComplete { io, .. } => {
                open.remove(io);
            }
            _ => {}
        }
        let EventKind::Callback { driver, volume, io, callback } = &e.kind else { continue };
        match callback {
            Callback::Pre { major, outcome, .. } => {
                if asks_for_post(outcome) {
                    *outstanding
                        .entry((driver.clone(), volume.clone(), *io, *major))
                        .or_default() += 1;
                } else if *outcome == "FLT_PREOP_PENDING" {
                    pended.entry((driver.clone(), volume.clone(), *io)).or_default().push(*major);
                }
            }
            Callback::Resumed { outcome } => {
                let list = pended.entry((driver.clone(), volume.clone(), *io)).or_default();
                if list.is_empty() {
                    out.push(Violation {
                        step: e.step,
                        invariant: "posts",
                        detail: format!(
                            "{driver}: resumed ({outcome}) with no pended pre for request {io:?}"
                        ),
                    });
                    continue;
                }
                let major = list.remove(0);
                if asks_for_post(outcome) {
                    *outstanding
                        .entry((driver.clone(), volume.clone(), *io, major))
                        .or_default() += 1;
                }
            }
            Callback::Post { major, when_safe: true, .. } => {
                // The second half of a post that answered `WhenSafe` (rule 14): it pairs with
                // that post, not with a pre.
                let n = deferred.entry((driver.clone(), volume.clone(), *io, *major)).or_default();
                if *n == 0 {
                    out.push(Violation {
                        step: e.step,
                        invariant: "posts",
                        detail: format!(
                            "{driver} on {}: post of {major} finished when safe for request {io:?} \
                             without a post that answered FLT_POSTOP_MORE_PROCESSING_REQUIRED",
                            volume.as_deref().unwrap_or("?")
                        ),
                    });
                } else {
                    *n -= 1;
                }
            }
            Callback::Post { major, outcome, .. } if post_only(driver, *major) => {
                // No pre to pair with: only a deferral counts (the next arm must not see it).
                if *outcome != MORE_PROCESSING {
                    continue;
                }
                *deferred.entry((driver.clone(), volume.clone(), *io, *major)).or_default() += 1;
            }
            Callback::Post { major, draining, outcome, .. } => {
                if *outcome == MORE_PROCESSING {
                    *deferred.entry((driver.clone(), volume.clone(), *io, *major)).or_default() +=
                        1;
                }
                let n =
                    outstanding.entry((driver.clone(), volume.clone(), *io, *major)).or_default();
                if *n == 0 {
                    out.push(Violation {
                        step: e.step,
                        invariant: "posts",
                        detail: format!(
                            "{driver} on {}: post of {major} (draining {draining}) for request {io:?} without a pre that asked for it",
                            volume.as_deref().unwrap_or("?")
                        ),
                    });
                } else {
                    *n -= 1;
                }
            }
            _ => {}
        }
    }
    // The run's end: whatever is still outstanding never got its post.
    flush(step, &mut outstanding, &mut pended, None, out);
}

/// A filter's instances on one volume: set up with success and not torn down yet, and with their
/// teardown started and not complete yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lives {
    live: u32,
    tearing_down: u32,
}

/// The **instances** invariant over an event list (public so that the tests can feed it a
/// tampered one); `running` says which drivers were not stopped at the end of the run (a filter
/// with no unload callback, or one whose stop is pending), whose instances may stay; `volume`
/// gives the key of a volume name ([`volume_key`]).
///
/// Instances are counted per filter and volume, not told apart: a legacy filter's instance on a
/// dismounted volume lives until the volume device goes (docs/semantics.md, "dismount"), so a
/// remount of the volume can set up a second instance beside it.
pub fn instances(
    events: &[Event],
    running: impl Fn(&str) -> bool,
    volume: impl Fn(&str) -> String,
    out: &mut Vec<Violation>,
) {
    let mut lives: BTreeMap<(String, String), Lives> = BTreeMap::new();
    let key = volume;
    for e in events {
        let EventKind::Callback { driver, volume: Some(volume), callback, .. } = &e.kind else {
            continue;
        };
        let n = lives.entry((driver.to_ascii_lowercase(), key(volume))).or_default();
        let mut bad = |detail: String| {
            out.push(Violation { step: e.step, invariant: "instances", detail });
        };
        match callback {
            Callback::InstanceSetup { status, .. } if status.is_success() => n.live += 1,
            Callback::TeardownStart { reason } => {
                if n.live == 0 {
                    bad(format!(
                        "{driver} on {volume}: teardown start ({reason:?}) with no instance set up \
                         and not torn down ({n:?})"
                    ));
                } else {
                    n.live -= 1;
                    n.tearing_down += 1;
                }
            }
            Callback::TeardownComplete { reason } => {
                if n.tearing_down == 0 {
                    bad(format!(
                        "{driver} on {volume}: teardown complete ({reason:?}) with no teardown \
                         started before it ({n:?})"
                    ));
                } else {
                    n.tearing_down -= 1;
                }
            }
            _ => {}
        }
    }
    for ((driver, volume), n) in lives {
        if running(&driver) || n == Lives::default() {
            continue;
        }
        out.push(Violation {
            step: None,
            invariant: "instances",
            detail: format!(
                "{driver} on {volume}: stopped with {} instance(s) never torn down and {} whose \
                 teardown never completed",
                n.live, n.tearing_down
            ),
        });
    }
}

/// The key of a volume name for the **instances** invariant: every share of MUP is one device,
/// `\Device\Mup`, with one instance of a filter on it, which the events name after whichever
/// share the simulator finds first.
pub fn volume_key(scenario: &Scenario, volume: &str) -> String {
    let mup = scenario
        .volumes
        .iter()
        .any(|v| v.name == volume && v.filesystem == fsfilter_lab::scenario::FileSystem::Mup);
    if mup { "\\Device\\Mup".to_owned() } else { volume.to_owned() }
}

/// The drivers of a volume's stack, top down, by position (`None`: the driver appears twice, so
/// its position is ambiguous).
fn ranks(snapshot: &Snapshot, volume: &str) -> BTreeMap<String, Option<usize>> {
    let mut out: BTreeMap<String, Option<usize>> = BTreeMap::new();
    let Some((_, stack)) = snapshot.volumes.iter().find(|(v, _)| v == volume) else { return out };
    let mut pos = 0;
    let mut put = |d: &str, pos: usize| {
        let key = d.to_ascii_lowercase();
        let seen = out.contains_key(&key);
        out.insert(key, if seen { None } else { Some(pos) });
    };
    for entry in stack {
        match entry {
            StackEntry::Legacy { driver } => {
                put(driver, pos);
                pos += 1;
            }
            StackEntry::Frame { instances, .. } => {
                for (driver, _, _) in instances {
                    put(driver, pos);
                    pos += 1;
                }
            }
            StackEntry::FileSystem { .. } => {}
        }
    }
    out
}

/// The **order** invariant over the io steps of a run (the `cancel` ones included).
pub fn order(scenario: &Scenario, run: &Run, out: &mut Vec<Violation>) {
    /// The last pre (operation, kind, position, driver) and post (operation, position, driver)
    /// of a request's current run of callbacks.
    #[derive(Default)]
    struct Last {
        pre: Option<(MajorFunction, OperationKind, usize, String)>,
        post: Option<(MajorFunction, usize, String)>,
    }
    let mut state: BTreeMap<RequestRef, Last> = BTreeMap::new();
    for e in &run.events {
        let Some(step) = e.step else { continue };
        let is_io = scenario
            .steps
            .get(step as usize)
            // A cancel step sends no request, but the cancelled requests' posts come in it.
            .is_some_and(|s| matches!(s.action, Action::Io { .. } | Action::Cancel { .. }));
        if !is_io {
            continue;
        }
        let (driver, volume, io, callback) = match &e.kind {
            EventKind::Callback { driver, volume: Some(volume), io: Some(io), callback } => {
                (driver, volume, *io, callback)
            }
            // A declined fast-I/O operation comes again as an IRP, from the top
            // (docs/semantics.md, "callbacks": its posts ran with STATUS_FLT_DISALLOW_FAST_IO).
            EventKind::System { what: "fast_io_declined", .. } => {
                state.clear();
                continue;
            }
            _ => continue,
        };
        // A post finished when safe runs later, in a worker (rule 14), outside the stack walk.
        if !matches!(callback, Callback::Pre { .. } | Callback::Post { when_safe: false, .. }) {
            continue;
        }
        let last = state.entry(io).or_default();
        let Some(rank) = position(run, step, volume, driver) else {
            // Ambiguous or not in the stack before or after the step: nothing to compare.
            *last = Last::default();
            continue;
        };
        match callback {
            Callback::Pre { major, kind, .. } => {
                if let Some((m, k, r, d)) = &last.pre {
                    if m == major && k == kind && *r >= rank {
                        out.push(Violation {
                            step: Some(step),
                            invariant: "order",
                            detail: format!(
                                "request {io:?} on {volume}: pre {major} {kind:?} of {driver} (position {rank}) after {d}'s (position {r}): pre callbacks run top down"
                            ),
                        });
                    }
                }
                last.pre = Some((*major, *kind, rank, driver.to_string()));
                last.post = None;
            }
            Callback::Post { major, .. } => {
                if let Some((m, r, d)) = &last.post {
                    if m == major && *r <= rank {
                        out.push(Violation {
                            step: Some(step),
                            invariant: "order",
                            detail: format!(
                                "request {io:?} on {volume}: post {major} of {driver} (position {rank}) after {d}'s (position {r}): post callbacks run bottom up"
                            ),
                        });
                    }
                }
                last.post = Some((*major, rank, driver.to_string()));
                last.pre = None;
            }
            _ => {}
        }
    }
}

/// A driver's position in a volume's stack before `step` (or after it, when the step mounted
/// the volume).
fn position(run: &Run, step: u32, volume: &str, driver: &str) -> Option<usize> {
    let key = driver.to_ascii_lowercase();
    let before = run.after_step.get(step as usize).map(|s| ranks(s, volume));
    match before.as_ref().and_then(|r| r.get(&key)) {
        Some(p) => *p,
        None => run
            .after_step
            .get(step as usize + 1)
            .and_then(|s| ranks(s, volume).get(&key).copied().flatten()),
    }
}

fn parameter<'a>(scenario: &'a Scenario, driver: &str, name: &str) -> Option<&'a str> {
    scenario.driver(driver)?.parameters.iter().find_map(|(k, v)| match v {
        Parameter::String(s) if k.eq_ignore_ascii_case(name) => Some(s.as_str()),
        _ => None,
    })
}

/// The **statuses** invariant.
fn statuses(scenario: &Scenario, run: &Run, out: &mut Vec<Violation>) {
    let mut bad = |step: u32, what: &str, got: Status, want: &[Status]| {
        if !want.contains(&got) {
            out.push(Violation {
                step: Some(step),
                invariant: "statuses",
                detail: format!("{what}: {got}, expected one of {want:?}"),
            });
        }
    };
    for (i, (step, outcome)) in scenario.steps.iter().zip(&run.steps).enumerate() {
        let i = i as u32;
        let model = |d: &str| scenario.driver(d).map(|d| d.model);
        match &step.action {
            Action::Unload { driver }
            | Action::Attach { driver, .. }
            | Action::Detach { driver, .. }
                if model(driver) == Some(Model::Legacy) =>
            {
                // docs/semantics.md, "unload" and "manual-attach-detach": fltmc does not know
                // legacy filters.
                bad(i, &outcome.what, outcome.status, &[Status::FLT_FILTER_NOT_FOUND]);
            }
            Action::Load { driver }
                if parameter(scenario, driver, "Rules").is_some_and(|r| r.contains("explode")) =>
            {
                // The probe parses its parameters in DriverEntry and fails on a malformed one.
                bad(i, &outcome.what, outcome.status, &[Status::INVALID_PARAMETER]);
            }
            Action::Attach { driver, volume, altitude, instance: None } => {
                let Some(stack) = run
                    .after_step
                    .get(i as usize)
                    .and_then(|s| s.volumes.iter().find(|(v, _)| v == volume))
                    .map(|(_, stack)| stack)
                else {
                    continue;
                };
                let instances: Vec<&(String, String, String)> = stack
                    .iter()
                    .flat_map(|e| match e {
                        StackEntry::Frame { instances, .. } => instances.iter().collect(),
                        _ => Vec::new(),
                    })
                    .collect();
                let mine = instances.iter().any(|(d, _, _)| d.eq_ignore_ascii_case(driver));
                let taken = altitude.as_ref().is_some_and(|a| {
                    instances.iter().any(|(d, _, alt)| alt == a && !d.eq_ignore_ascii_case(driver))
                });
                let mut want = if mine {
                    // The default instance is already there (facts.md §2.3: instance names are
                    // unique on a volume).
                    vec![
                        Status::FLT_INSTANCE_NAME_COLLISION,
                        Status::FLT_INSTANCE_ALTITUDE_COLLISION,
                    ]
                } else if taken {
                    // facts.md §2.3: an altitude already taken on the volume is refused (or the
                    // filter is not loaded at all, or it cannot attach to a pipe or mailslot
                    // volume without SUPPORT_NPFS_MSFS, which sim/src/fltmgr/instances.rs
                    // checks first).
                    vec![
                        Status::FLT_INSTANCE_ALTITUDE_COLLISION,
                        Status::FLT_FILTER_NOT_FOUND,
                        Status::NOT_SUPPORTED,
                    ]
                } else {
                    continue;
                };
                // The Filter Manager finds no volume for the filter before it looks at names and
                // altitudes when the filter's frame has no device in the stack (its attach
                // failed, above a driver being unloaded, say), or when the volume's last
                // dismount request came after its last mount: the frames it went through saw
                // the volume dismounted even when a filter below them completed the request
                // itself (docs/simulator.md, "A volume per frame").
                let frames: Vec<u32> = stack
                    .iter()
                    .filter_map(|e| match e {
                        StackEntry::Frame { frame, .. } => Some(*frame),
                        _ => None,
                    })
                    .collect();
                let absent = frame_of(run, driver, i).is_some_and(|f| !frames.contains(&f));
                if absent || dismounted_since(scenario, run, volume, i) {
                    want.push(Status::FLT_VOLUME_NOT_FOUND);
                }
                bad(i, &outcome.what, outcome.status, &want);
            }
            _ => {}
        }
    }
}

/// The frame the minifilter `driver` was last registered in before step `step` (None: never, or
/// a legacy filter).
fn frame_of(run: &Run, driver: &str, step: u32) -> Option<u32> {
    run.events
        .iter()
        .take_while(|e| e.step.is_none_or(|s| s < step))
        .filter_map(|e| match &e.kind {
            EventKind::FltMgr {
                driver: Some(d),
                event: FltEvent::FilterRegistered { frame, status, .. },
                ..
            } if d.eq_ignore_ascii_case(driver) && status.is_success() => Some(*frame),
            _ => None,
        })
        .last()
}

/// Whether a `dismount` step for `volume` ran before step `step` with no mount of the volume
/// after it began.
fn dismounted_since(scenario: &Scenario, run: &Run, volume: &str, step: u32) -> bool {
    let last_dismount = scenario
        .steps
        .iter()
        .take(step as usize)
        .enumerate()
        .rfind(|(_, s)| matches!(&s.action, Action::Dismount { volume: v } if v == volume))
        .map(|(j, _)| j as u32);
    let Some(j) = last_dismount else { return false };
    !run.events.iter().any(|e| {
        e.step.is_some_and(|s| s >= j && s < step)
            && matches!(&e.kind, EventKind::Mounted { volume: v, .. } if v == volume)
    })
}

/// The **balance** invariant.
fn balance(scenario: &Scenario, end: &EndState, out: &mut Vec<Violation>) {
    let mut v = |detail: String| out.push(Violation { step: None, invariant: "balance", detail });
    if let Some(c) = &end.crashed {
        v(format!("the machine bugchecked: {c}"));
    }
    if end.drivers.iter().all(|d| d.state == "stopped") {
        for (device, driver, refs) in &end.foreign_refs {
            v(format!(
                "{refs} reference(s) left on {device} of {driver} once every driver stopped"
            ));
        }
    }
    for d in &end.drivers {
        match d.state {
            "running" => {
                // docs/semantics.md, "unload": a filter with no unload callback cannot be
                // stopped in either model (the probe with `Unload = none`).
                let no_unload = parameter(scenario, &d.name, "Unload") == Some("none");
                if !no_unload {
                    v(format!("{} is still running after its stop", d.name));
                }
            }
            // facts.md §1.9: a stop stays pending while a device is attached above the
            // driver's devices (a Filter Manager frame created above a legacy filter, say, on a
            // file system's control device, which never goes away).
            "stop_pending" if !d.attached_above => {
                v(format!("{}'s stop is pending with nothing attached above it", d.name));
            }
            _ => {}
        }
        for (n, image) in d.images.iter().enumerate() {
            if image.loaded {
                continue;
            }
            if image.pool_blocks > 0 || image.live_devices > 0 || image.device_refs > 0 {
                v(format!(
                    "{} (load #{n}) unloaded with {} pool block(s) ({} bytes), {} device object(s), {} device reference(s) left",
                    d.name,
                    image.pool_blocks,
                    image.pool_bytes,
                    image.live_devices,
                    image.device_refs
                ));
            }
        }
    }
}

/// The **contexts** invariant (see the module's documentation).
fn contexts(run: &Run, end: &EndState, out: &mut Vec<Violation>) {
    for e in &run.events {
        let EventKind::Callback { driver, callback: Callback::Note { text }, .. } = &e.kind else {
            continue;
        };
        let Some((freed, created)) = tally_totals(text) else { continue };
        if freed > created {
            out.push(Violation {
                step: e.step,
                invariant: "contexts",
                detail: format!(
                    "{driver} noted {freed} stream context(s) freed of {created} attached: one \
                     was reported freed twice ({text})"
                ),
            });
        }
    }
    for d in &end.drivers {
        for (n, image) in d.images.iter().enumerate() {
            if !image.loaded && image.linked_contexts > 0 {
                out.push(Violation {
                    step: None,
                    invariant: "contexts",
                    detail: format!(
                        "{} (load #{n}) unloaded with {} FSRTL_PER_STREAM_CONTEXT(s) it inserted \
                         still linked on streams",
                        d.name, image.linked_contexts
                    ),
                });
            }
        }
    }
}

/// The counts of a tally totals note, `tally: freed F of C contexts, ...`: `(F, C)`.
pub fn tally_totals(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(tally::notes::TOTALS)?;
    let (freed, rest) = rest.split_once(" of ")?;
    let (created, _) = rest.split_once(" contexts")?;
    Some((freed.parse().ok()?, created.parse().ok()?))
}
