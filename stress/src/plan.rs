//! Random machines and timelines: a [`Plan`] is drawn by proptest strategies (so that a failing
//! case shrinks), rendered as scenario TOML (../shared/docs/scenario.md) and read back with the
//! lab's parser, so that every case also exercises the parser.
//!
//! Indices inside a plan (a step's driver, volume, path) are taken modulo the length of what they
//! index, so that any shrunk plan still renders to a valid scenario.

use std::fmt::Write as _;

use fsfilter::LoadOrderGroup;
use fsfilter_lab::scenario::{self, Scenario, ScenarioError};
use proptest::collection::vec;
use proptest::prelude::*;

/// The file systems a volume can have.
pub const FILESYSTEMS: [&str; 9] =
    ["ntfs", "fat", "exfat", "refs", "cdfs", "udfs", "mup", "npfs", "msfs"];

/// The load-order groups drivers are put in (those of the samples' INFs and a few around them).
pub const GROUPS: [&str; 6] = [
    "FSFilter Top",
    "FSFilter Activity Monitor",
    "FSFilter Anti-Virus",
    "FSFilter Encryption",
    "FSFilter Compression",
    "FSFilter Copy Protection",
];

/// The samples a driver's `sample` draw picks from ([`DriverPlan::sample_name`] turns some
/// passthroughs into [`TALLY`]).
pub const SAMPLES: [&str; 3] = ["passthrough", "probe", "scanner"];

/// The tally sample (stream contexts, rule 28): a passthrough drawn with
/// [`ScannerPlan::attach_unscanned`], which a passthrough does not read, so that adding it left
/// every plan's draws as they were.
pub const TALLY: &str = "tally";

/// The start types.
pub const STARTS: [&str; 4] = ["boot", "system", "auto", "demand"];

/// The io ops of scenario.md, and the lab's `query_attributes`, `cancel` and `map` extensions
/// (README).
pub const OPS: [&str; 17] = {
    let mut ops = [fsfilter_lab::scenario::QUERY_ATTRIBUTES; 17];
    ops[15] = fsfilter_lab::scenario::CANCEL;
    ops[16] = fsfilter_lab::scenario::MAP;
    let mut i = 0;
    while i < fsfilter_lab::scenario::IO_OPS.len() {
        ops[i] = fsfilter_lab::scenario::IO_OPS[i];
        i += 1;
    }
    ops
};

/// The files the io steps use, relative to the volume. `evil.com` holds the scanner's pattern,
/// `secret.txt` is what probe rules with a pattern match, `dir` the directory a change
/// notification can watch.
pub const PATHS: [&str; 7] =
    ["a.txt", "secret.txt", "evil.com", "new.txt", "dir\\c.log", "", "dir"];

/// The file systems that report `FILE_NAMED_STREAMS`, on whose volumes some io steps name a
/// stream of their file ([`IoPlan::stream`]).
const STREAM_FILESYSTEMS: [&str; 3] = ["ntfs", "refs", "mup"];

/// The file whose `oplock` handle the oplock requests use ([`IoPlan::oplock`]).
const OPLOCK_PATH: &str = "a.txt";

/// The pattern of every generated scanner.
pub const PATTERN: &str = "EVILPATTERN";

/// The probe's volume device types.
const ATTACH_WORDS: [&str; 5] = ["disk", "cdrom", "network", "pipe", "mailslot"];

/// The probe's rule actions.
const RULE_ACTIONS: [&str; 8] = [
    "deny",
    "complete:STATUS_OBJECT_NAME_NOT_FOUND",
    "complete:STATUS_SUCCESS",
    "pend:0",
    "pend:15",
    "synchronize",
    "nopost",
    "disallow_fastio",
];

/// The action that completes a create with `STATUS_REPARSE` ([`probe_parameters`]).
const REPARSE_ACTION: &str = "complete:STATUS_REPARSE";

/// The operations the probe's rules and `Operations` name (the io ops and `*`).
const RULE_OPS: [&str; 13] = [
    "*",
    "create",
    "read",
    "write",
    "query_information",
    "set_information",
    "directory_control",
    "cleanup",
    "close",
    "network_query_open",
    "acquire_for_section_synchronization",
    "acquire_for_mod_write",
    "acquire_for_cc_flush",
];

/// Skip-flag suffixes for the probe's `Operations`, by operation.
const SKIPS: [&str; 5] = ["", ":paging", ":cached", ":paging|cached", ":noncached"];

/// A volume of the machine.
#[derive(Clone, Debug)]
pub struct VolumePlan {
    /// Index into [`FILESYSTEMS`].
    pub fs: usize,
    /// Mounted while booting (otherwise only by a `mount` step).
    pub at_boot: bool,
    /// A Dev Drive.
    pub dev_drive: bool,
    /// Trusted.
    pub trusted: bool,
    /// Files present at boot.
    pub files: bool,
    /// Its file system pends each mount for this many milliseconds (`mount_pends_ms`).
    pub mount_pends_ms: Option<u64>,
    /// Its new volume devices stay initializing this many milliseconds (`initialize_late_ms`):
    /// within the attach retries, or past them.
    pub initialize_late_ms: Option<u64>,
    /// Unformatted media (`blank`, none for the namespace file systems): only a volume open
    /// mounts it, with RAW.
    pub blank: bool,
}

/// One probe rule.
#[derive(Clone, Debug)]
pub struct RulePlan {
    /// Index into the actions.
    pub action: usize,
    /// Index into the operations.
    pub op: usize,
    /// A pattern: none, `*secret*` or `*.com`.
    pub pattern: usize,
}

/// The parameters of a probe.
#[derive(Clone, Debug)]
pub struct ProbePlan {
    /// Bit set over the volume device types (0: the default, all).
    pub attach: u8,
    /// `Operations`: None for the default (`all`), else (operation, skip) pairs.
    pub operations: Option<Vec<(usize, usize)>>,
    /// `Post = 0`.
    pub no_post: bool,
    /// `Unload`: 0 allow, 1 refuse, 2 none.
    pub unload: u8,
    /// `Detach`: 0 allow, 1 refuse, 2 none.
    pub detach: u8,
    /// The rules.
    pub rules: Vec<RulePlan>,
    /// `SupportNpfsMsfs = 1`.
    pub npfs: bool,
    /// A malformed `Rules` value: `DriverEntry` must fail with `STATUS_INVALID_PARAMETER`.
    pub malformed: bool,
}

/// The parameters of a scanner.
#[derive(Clone, Debug)]
pub struct ScannerPlan {
    /// `ScanLatency` in milliseconds.
    pub latency: u32,
    /// `AttachUnscanned`.
    pub attach_unscanned: bool,
    /// `SupportNpfsMsfs`.
    pub npfs: bool,
}

/// A driver of the machine.
#[derive(Clone, Debug)]
pub struct DriverPlan {
    /// Index into [`SAMPLES`] (see [`DriverPlan::sample_name`]).
    pub sample: usize,
    /// Legacy rather than minifilter.
    pub legacy: bool,
    /// Index into [`STARTS`].
    pub start: usize,
    /// Index into [`GROUPS`].
    pub group: usize,
    /// Where in the group's range the default instance sits (per mille of the range).
    pub altitude: u32,
    /// The default instance's `Flags` (1: no automatic attachment).
    pub manual_only: bool,
    /// The probe's parameters (used when the sample is the probe).
    pub probe: ProbePlan,
    /// The scanner's parameters (used when the sample is the scanner).
    pub scanner: ScannerPlan,
}

impl DriverPlan {
    /// The sample the driver loads: [`SAMPLES`]' pick, but a passthrough drawn with
    /// `scanner.attach_unscanned` (a draw a passthrough does not use) is the [`TALLY`] sample.
    pub fn sample_name(&self) -> &'static str {
        match pick(&SAMPLES, self.sample) {
            "passthrough" if self.scanner.attach_unscanned => TALLY,
            s => s,
        }
    }
}

/// One step.
#[derive(Clone, Debug)]
pub enum StepPlan {
    /// `load`.
    Load(usize),
    /// `unload` (`fltmc unload`).
    Unload(usize),
    /// `stop` (`sc stop`).
    Stop(usize),
    /// `mount`.
    Mount(usize),
    /// `dismount`, or a PnP removal of the volume's device (`remove`): which one, and whether a
    /// removal is a surprise, comes from the quotient of the index by the number of volumes
    /// ([`removal_of`]), so no new draw changes the plans.
    Dismount(usize),
    /// `attach`, optionally at an altitude: `Some(None)` at another driver's altitude (a
    /// collision when that driver has an instance there), `Some(Some(n))` at a fresh one.
    Attach(usize, usize, Option<Option<u32>>),
    /// `detach`.
    Detach(usize, usize),
    /// `io`.
    Io(IoPlan),
    /// `snapshot`.
    Snapshot,
}

/// An io step.
#[derive(Clone, Debug)]
pub struct IoPlan {
    /// The volume.
    pub volume: usize,
    /// Index into [`OPS`].
    pub op: usize,
    /// Index into [`PATHS`].
    pub path: usize,
    /// 0 cached, 1 non-cached, 2 paging (a directory_control or a cancel: see
    /// [`IoPlan::path_name`]).
    pub mode: usize,
    /// Offset in sectors (None: the current position).
    pub offset: Option<u8>,
    /// Length: None, a whole number of sectors, or an odd length.
    pub length: Option<(u8, bool)>,
    /// Data to write containing the scanner's pattern (a change notification: the subtree; a
    /// create: an overlapped open).
    pub infected: bool,
}

impl IoPlan {
    /// The step uses the path's second handle (`handle = "other"`, the lab's thirteenth
    /// extension) rather than its own: one step in eight, those with the largest offset, drawn
    /// from the offset so that adding the extension left every plan's other draws as they were.
    fn second(&self) -> bool {
        self.offset == Some(3)
    }

    /// A directory_control step of a plan that `notifies` (see [`Plan`]), with a non-cached or
    /// paging mode, waits for changes (`notify`) in `dir` instead of listing.
    fn notify(&self, notifies: bool) -> bool {
        notifies && pick(&OPS, self.op) == "directory_control" && self.mode != 0
    }

    /// The step's path: `dir` for a change notification, and for a cancel with a non-cached or
    /// paging mode (what a notification leaves outstanding); [`PATHS`] otherwise.
    fn path_name(&self, notifies: bool) -> &'static str {
        let cancel = pick(&OPS, self.op) == fsfilter_lab::scenario::CANCEL && self.mode != 0;
        if self.notify(notifies) || cancel {
            "dir"
        } else if self.oplock(notifies) {
            OPLOCK_PATH
        } else {
            pick(&PATHS, self.path)
        }
    }

    /// An fsctl step of a plan that `notifies` (see [`Plan`]), with a non-cached or paging mode,
    /// sends an oplock request or acknowledgement on `a.txt`'s second handle; a create step of
    /// a second handle opens `a.txt`'s, overlapped (an oplock is granted on an overlapped handle
    /// only).
    fn oplock(&self, notifies: bool) -> bool {
        let op = pick(&OPS, self.op);
        (op == "fsctl" && self.mode != 0 && notifies) || (op == "create" && self.second())
    }

    /// The stream the step names after its path (docs/simulator.md, "Named data streams"), on a
    /// volume whose file system has them (`fs`), for a path other than the volume's: none for
    /// the steps whose volume index over the number of volumes (`volumes`; the index is taken
    /// modulo that number, so the quotient is a draw of its own) is even, nor for what waits in
    /// `dir`; else the default data stream spelled out (`::$DATA`) for the steps drawn
    /// `infected`, `:s:$DATA` for those at offset 2 sectors, `:s` for the others. Derived from
    /// existing draws, so that adding streams left every plan's draws as they were.
    fn stream(&self, volumes: usize, fs: &str, notifies: bool) -> &'static str {
        let waits = self.notify(notifies)
            || (pick(&OPS, self.op) == fsfilter_lab::scenario::CANCEL && self.mode != 0);
        let drawn = (self.volume / volumes.max(1)) % 2 == 1;
        if waits
            || !drawn
            || self.path_name(notifies).is_empty()
            || !STREAM_FILESYSTEMS.contains(&fs)
        {
            ""
        } else if self.infected {
            "::$DATA"
        } else if self.offset == Some(2) {
            ":s:$DATA"
        } else {
            ":s"
        }
    }

    /// The handle the step names: the path's second one, `other`, for [`IoPlan::oplock`] and
    /// for an op that takes a handle, but a change notification's and a cancel's (which stay on
    /// the path's own, where a notification waits).
    fn handle(&self, notifies: bool) -> Option<&'static str> {
        let op = pick(&OPS, self.op);
        let own = matches!(op, "shutdown" | "directory_control")
            || op == fsfilter_lab::scenario::QUERY_ATTRIBUTES
            || op == fsfilter_lab::scenario::CANCEL;
        (self.oplock(notifies) || (self.second() && !own)).then_some("other")
    }
}

/// A whole machine and its timeline.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The machine's seed.
    pub seed: u64,
    /// The volumes (at least one).
    pub volumes: Vec<VolumePlan>,
    /// The drivers (at least one).
    pub drivers: Vec<DriverPlan>,
    /// The random steps.
    pub steps: Vec<StepPlan>,
    /// Give the second minifilter the first one's altitude, to check the documented refusal
    /// (facts.md §2.3: two instances cannot share an altitude; the parser says so).
    pub collide: bool,
}

fn volume_plan() -> impl Strategy<Value = VolumePlan> {
    (
        0..FILESYSTEMS.len(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
        any::<bool>(),
        any::<bool>(),
        prop::option::weighted(0.25, 1..30u64),
        prop::option::weighted(0.1, prop::sample::select(&[100u64, 1200, 3400, 5000][..])),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                fs,
                at_boot,
                dev_drive,
                trusted,
                files,
                mount_pends_ms,
                initialize_late_ms,
                blank,
            )| {
                VolumePlan {
                    fs,
                    at_boot,
                    dev_drive,
                    trusted,
                    files,
                    mount_pends_ms,
                    initialize_late_ms,
                    blank,
                }
            },
        )
}

fn rule_plan() -> impl Strategy<Value = RulePlan> {
    (0..RULE_ACTIONS.len(), 0..RULE_OPS.len(), 0..3usize)
        .prop_map(|(action, op, pattern)| RulePlan { action, op, pattern })
}

fn probe_plan() -> impl Strategy<Value = ProbePlan> {
    (
        prop_oneof![3 => Just(0u8), 1 => 1u8..32],
        prop::option::weighted(0.3, vec((1..RULE_OPS.len(), 0..SKIPS.len()), 1..5)),
        prop::bool::weighted(0.15),
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
        prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8)],
        vec(rule_plan(), 0..4),
        any::<bool>(),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(attach, operations, no_post, unload, detach, rules, npfs, malformed)| {
            ProbePlan { attach, operations, no_post, unload, detach, rules, npfs, malformed }
        })
}

fn scanner_plan() -> impl Strategy<Value = ScannerPlan> {
    (prop_oneof![Just(0u32), Just(5u32), Just(30u32)], any::<bool>(), any::<bool>()).prop_map(
        |(latency, attach_unscanned, npfs)| ScannerPlan { latency, attach_unscanned, npfs },
    )
}

fn driver_plan() -> impl Strategy<Value = DriverPlan> {
    (
        0..SAMPLES.len(),
        any::<bool>(),
        // Demand start most often, so that load steps mostly load something.
        prop_oneof![1 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize), 3 => Just(3usize)],
        0..GROUPS.len(),
        0..1000u32,
        prop::bool::weighted(0.1),
        probe_plan(),
        scanner_plan(),
    )
        .prop_map(|(sample, legacy, start, group, altitude, manual_only, probe, scanner)| {
            DriverPlan { sample, legacy, start, group, altitude, manual_only, probe, scanner }
        })
}

fn io_plan() -> impl Strategy<Value = IoPlan> {
    (
        0..8usize,
        prop_oneof![
            // Reads and writes and the handle's life dominate; every op comes up.
            4 => Just(0usize),
            5 => Just(1usize),
            4 => Just(2usize),
            // A change notification or a listing, and a cancel.
            1 => Just(5usize),
            1 => Just(15usize),
            6 => 0..OPS.len(),
        ],
        0..PATHS.len(),
        prop_oneof![3 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
        prop::option::of(0u8..4),
        prop::option::of((1u8..3, prop::bool::weighted(0.2))),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(volume, op, path, mode, offset, length, infected)| IoPlan {
            volume,
            op,
            path,
            mode,
            offset,
            length,
            infected,
        })
}

/// Whether a `Dismount(index)` step over `volumes` volumes is a PnP removal instead, and if so
/// whether a surprise one: the volume is `index % volumes`; the quotient `index / volumes`, free
/// until removals came, chooses (1 and 5: a safe removal; 3 and 7: a surprise removal; else a
/// dismount). With four volumes (quotients 0 and 1) half the dismounts are safe removals and
/// none is a surprise; with one volume, a quarter of each.
pub fn removal_of(index: usize, volumes: usize) -> Option<bool> {
    match (index / volumes.max(1)) % 4 {
        1 => Some(false),
        3 => Some(true),
        _ => None,
    }
}

fn step_plan() -> impl Strategy<Value = StepPlan> {
    prop_oneof![
        4 => (0..8usize).prop_map(StepPlan::Load),
        2 => (0..8usize).prop_map(StepPlan::Unload),
        2 => (0..8usize).prop_map(StepPlan::Stop),
        2 => (0..8usize).prop_map(StepPlan::Mount),
        2 => (0..8usize).prop_map(StepPlan::Dismount),
        2 => (0..8usize, 0..8usize, prop::option::weighted(0.5, prop::option::weighted(0.7, 0..1000u32)))
            .prop_map(|(d, v, a)| StepPlan::Attach(d, v, a)),
        2 => (0..8usize, 0..8usize).prop_map(|(d, v)| StepPlan::Detach(d, v)),
        20 => io_plan().prop_map(StepPlan::Io),
        1 => Just(StepPlan::Snapshot),
    ]
}

/// The strategy of whole plans: 1 to 4 volumes, 1 to 5 drivers, up to `max_steps` steps.
pub fn plan(max_steps: usize) -> impl Strategy<Value = Plan> {
    (
        any::<u64>(),
        vec(volume_plan(), 1..5),
        vec(driver_plan(), 1..6),
        vec(step_plan(), 0..max_steps.max(1)),
        prop::bool::weighted(0.02),
    )
        .prop_map(|(seed, volumes, drivers, steps, collide)| Plan {
            seed,
            volumes,
            drivers,
            steps,
            collide,
        })
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn pick<T: Copy>(list: &[T], i: usize) -> T {
    *pick_ref(list, i)
}

fn pick_ref<T>(list: &[T], i: usize) -> &T {
    // `list` is never empty: the tables above and the plan's vectors (at least one each).
    &list[i % list.len()]
}

/// The rendered names of a plan's volumes, drivers and altitudes.
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// Volume names, by plan index (the file system of a dropped duplicate pipe or mailslot
    /// volume becomes NTFS).
    pub volumes: Vec<(String, &'static str)>,
    /// Driver names and, for minifilters, altitudes.
    pub drivers: Vec<(String, Option<u32>)>,
}

impl Plan {
    /// The names the plan renders to.
    pub fn names(&self) -> Names {
        let mut names = Names::default();
        let mut letter = b'C';
        let mut share = 0;
        let mut has = [false; 2];
        for v in &self.volumes {
            let mut fs = pick(&FILESYSTEMS, v.fs);
            // One pipe and one mailslot namespace per machine (the simulator refuses a second).
            if fs == "npfs" || fs == "msfs" {
                let slot = usize::from(fs == "msfs");
                if has[slot] {
                    fs = "ntfs";
                }
                has[slot] = true;
            }
            let name = match fs {
                "mup" => {
                    share += 1;
                    format!("\\\\server\\share{share}")
                }
                "npfs" => "\\Device\\NamedPipe".to_owned(),
                "msfs" => "\\Device\\Mailslot".to_owned(),
                _ => {
                    let n = format!("{}:", letter as char);
                    letter += 1;
                    n
                }
            };
            names.volumes.push((name, fs));
        }
        let mut used: Vec<u32> = Vec::new();
        let mut first_mini: Option<u32> = None;
        for (i, d) in self.drivers.iter().enumerate() {
            let name = format!("{}{}", capitalized(d.sample_name()), i);
            let altitude = if d.legacy {
                None
            } else {
                let g = group(d.group);
                let span = g.high - g.low;
                let mut a = g.low + d.altitude * span / 1000;
                match first_mini {
                    Some(first) if self.collide => a = first,
                    _ => {
                        while used.contains(&a) {
                            a = if a >= g.high { g.low } else { a + 1 };
                        }
                    }
                }
                first_mini.get_or_insert(a);
                used.push(a);
                Some(a)
            };
            names.drivers.push((name, altitude));
        }
        names
    }

    /// True when the plan gives two minifilters one altitude (the scenario must be refused).
    pub fn has_collision(&self) -> bool {
        self.collide && self.drivers.iter().filter(|d| !d.legacy).count() >= 2
    }

    /// The scenario TOML of the plan: the random steps, then a tail that closes every file the
    /// steps may have opened, stops every driver and dismounts every volume, for the end-of-run
    /// accounting.
    pub fn to_toml(&self) -> String {
        let names = self.names();
        let mut t = String::new();
        let _ = writeln!(t, "name = \"stress\"\nseed = {}", self.seed);
        for (v, (name, fs)) in self.volumes.iter().zip(&names.volumes) {
            let _ = writeln!(t, "\n[[volume]]\nname = {}\nfilesystem = \"{fs}\"", quote(name));
            if !v.at_boot {
                t.push_str("mount = \"step\"\n");
            }
            if v.dev_drive {
                t.push_str("dev_drive = true\n");
            }
            if v.trusted {
                t.push_str("trusted = true\n");
            }
            if let Some(ms) = v.mount_pends_ms {
                let _ = writeln!(t, "mount_pends_ms = {ms}");
            }
            if let Some(ms) = v.initialize_late_ms {
                let _ = writeln!(t, "initialize_late_ms = {ms}");
            }
            let blank = v.blank && !matches!(*fs, "npfs" | "msfs" | "mup");
            if blank {
                t.push_str("blank = true\n");
            }
            if v.files && !blank && !matches!(*fs, "npfs" | "msfs") {
                let _ = writeln!(
                    t,
                    "files = {{ \"a.txt\" = \"alpha\", \"secret.txt\" = \"top secret\", \
                     \"evil.com\" = \"xx{PATTERN}xx\", \"dir\\\\c.log\" = \"log\" }}"
                );
            }
        }
        for (d, (name, altitude)) in self.drivers.iter().zip(&names.drivers) {
            let sample = d.sample_name();
            let model = if d.legacy { "legacy" } else { "minifilter" };
            let _ = writeln!(
                t,
                "\n[[driver]]\nname = \"{name}\"\nsample = \"{sample}\"\nmodel = \"{model}\"\n\
                 start = \"{}\"\ngroup = \"{}\"",
                pick(&STARTS, d.start),
                group(d.group).name
            );
            if let Some(a) = altitude {
                let _ = writeln!(t, "altitude = \"{a}\"");
                if d.manual_only {
                    t.push_str("instance_flags = 1\n");
                }
            }
            let params = match sample {
                "probe" => probe_parameters(&d.probe, d.altitude % 2 == 1),
                "scanner" => scanner_parameters(&d.scanner),
                _ => Vec::new(),
            };
            if !params.is_empty() {
                t.push_str("[driver.parameters]\n");
                for (k, v) in params {
                    let _ = writeln!(t, "{k} = {v}");
                }
            }
        }
        for s in &self.steps {
            self.render_step(&mut t, &names, s);
        }
        self.render_tail(&mut t, &names);
        t
    }

    fn render_step(&self, t: &mut String, names: &Names, s: &StepPlan) {
        let driver = |i: usize| &names.drivers[i % names.drivers.len()].0;
        let volume = |i: usize| quote(&names.volumes[i % names.volumes.len()].0);
        if let StepPlan::Io(io) = s
            && io.notify(self.notifies())
        {
            // A change notification goes through a handle of its own, opened overlapped: on a
            // synchronous handle a second notification, and the close of the handle at the
            // tail, would wait for one still waiting (the file object's lock, docs/simulator.md,
            // "Asynchronous I/O"), and a legacy stop after them for ever.
            let _ = writeln!(
                t,
                "\n[[step]]\naction = \"io\"\nvolume = {}\nop = \"create\"\npath = \"dir\"\n\
                 overlapped = true",
                volume(io.volume)
            );
        }
        t.push_str("\n[[step]]\n");
        match s {
            StepPlan::Load(d) => {
                let _ = writeln!(t, "action = \"load\"\ndriver = \"{}\"", driver(*d));
            }
            StepPlan::Unload(d) => {
                let _ = writeln!(t, "action = \"unload\"\ndriver = \"{}\"", driver(*d));
            }
            StepPlan::Stop(d) => {
                let _ = writeln!(t, "action = \"stop\"\ndriver = \"{}\"", driver(*d));
            }
            StepPlan::Mount(v) => {
                let _ = writeln!(t, "action = \"mount\"\nvolume = {}", volume(*v));
            }
            StepPlan::Dismount(v) => match removal_of(*v, names.volumes.len()) {
                None => {
                    let _ = writeln!(t, "action = \"dismount\"\nvolume = {}", volume(*v));
                }
                Some(surprise) => {
                    let _ = writeln!(
                        t,
                        "action = \"remove\"\nvolume = {}\nsurprise = {surprise}",
                        volume(*v)
                    );
                }
            },
            StepPlan::Attach(d, v, a) => {
                let _ = writeln!(
                    t,
                    "action = \"attach\"\ndriver = \"{}\"\nvolume = {}",
                    driver(*d),
                    volume(*v)
                );
                match a {
                    None => {}
                    Some(None) => {
                        // Another minifilter's altitude: refused when it has an instance there.
                        let other = names
                            .drivers
                            .iter()
                            .cycle()
                            .skip(d % names.drivers.len() + 1)
                            .take(names.drivers.len())
                            .find_map(|(_, a)| *a);
                        if let Some(a) = other {
                            let _ = writeln!(t, "altitude = \"{a}\"");
                        }
                    }
                    Some(Some(n)) => {
                        let _ = writeln!(t, "altitude = \"{}\"", 100_000 + n * 300 + 7);
                    }
                }
            }
            StepPlan::Detach(d, v) => {
                let _ = writeln!(
                    t,
                    "action = \"detach\"\ndriver = \"{}\"\nvolume = {}",
                    driver(*d),
                    volume(*v)
                );
            }
            StepPlan::Snapshot => t.push_str("action = \"snapshot\"\nlabel = \"random\"\n"),
            StepPlan::Io(io) => {
                let op = pick(&OPS, io.op);
                let _ =
                    writeln!(t, "action = \"io\"\nvolume = {}\nop = \"{op}\"", volume(io.volume));
                let path = self.io_path(names, io);
                if !path.is_empty() {
                    let _ = writeln!(t, "path = {}", quote(&path));
                }
                if let Some(h) = io.handle(self.notifies()) {
                    let _ = writeln!(t, "handle = \"{h}\"");
                }
                if op == "fsctl" && io.oplock(self.notifies()) {
                    // The oplock requests and acknowledgements (the lab's twelfth extension): a
                    // granted request stays with the file system until a break, as a waiting
                    // notification does, so they come under the same condition.
                    // The Windows 7 oplocks' controls (FSCTL_REQUEST_OPLOCK) in the steps that
                    // drew a length (which an fsctl does not use), the legacy ones in the others.
                    let all = fsfilter_lab::scenario::CONTROLS;
                    let (legacy, win7) = all.split_at(fsfilter_lab::scenario::LEGACY_CONTROLS);
                    let controls = if io.length.is_some() { win7 } else { legacy };
                    let (control, _) = pick(controls, io.path + 3 * io.volume + io.mode);
                    let _ = writeln!(t, "control = \"{control}\"");
                }
                if op == "create" && io.mode == 2 {
                    // An open that answers STATUS_OPLOCK_BREAK_IN_PROGRESS rather than wait for
                    // an oplock's break.
                    t.push_str("complete_if_oplocked = true\n");
                }
                if matches!(op, "read" | "write") {
                    let mode = ["cached", "noncached", "paging"][io.mode % 3];
                    let _ = writeln!(t, "mode = \"{mode}\"");
                }
                if op == "write" && io.mode % 3 == 2 {
                    // Whose paging write: the acquire and release around it are the writer's.
                    let writers = fsfilter_lab::scenario::WRITERS;
                    let (writer, _) = pick(&writers, io.path + io.volume);
                    let _ = writeln!(t, "writer = \"{writer}\"");
                }
                if io.notify(self.notifies()) {
                    let tree = if io.infected { "\nwatch_tree = true" } else { "" };
                    let _ = writeln!(t, "notify = \"file_name|dir_name|size|last_write\"{tree}");
                }
                if op == "query_information" {
                    // Every class, some answered by the I/O manager, some by fast I/O first;
                    // not `stream`, the last (December 8), so that the plans stay as they were.
                    let classes = fsfilter_lab::scenario::QUERY_CLASSES;
                    let before = classes.split_last().map_or(&classes[..], |(_, rest)| rest);
                    let (class, _, _) = pick(before, io.mode + 3 * io.path);
                    let _ = writeln!(t, "class = \"{class}\"");
                }
                if let Some(o) = io.offset {
                    let _ = writeln!(t, "offset = {}", u64::from(o) * 512);
                }
                if let Some((sectors, odd)) = io.length {
                    let len = u32::from(sectors) * 512 - if odd { 301 } else { 0 };
                    let _ = writeln!(t, "length = {len}");
                }
                if op == "create" && (io.infected || io.oplock(self.notifies())) {
                    // The path's handle for asynchronous I/O: its reads and writes need an offset
                    // and may pend (docs/simulator.md, "Asynchronous I/O").
                    t.push_str("overlapped = true\n");
                }
                if op == fsfilter_lab::scenario::MAP && io.mode != 0 {
                    // A writable or an executable section (the default is read-only).
                    let protection = if io.mode == 1 { "execute_read" } else { "readwrite" };
                    let _ = writeln!(t, "protection = \"{protection}\"");
                }
                if op == "write" && io.infected {
                    let _ = writeln!(t, "data = \"an {PATTERN} in the data\"");
                }
            }
        }
    }

    /// Whether the plan's directory_control steps may wait for changes: not when a step before
    /// the tail stops or unloads a driver, as a legacy stop waits for a notification still
    /// waiting (docs/semantics.md, draining), a deadlock the checker would report; nor when a
    /// probe may complete a cleanup itself (`deny` or `complete` for every file's cleanup), as
    /// the file system then never ends the notification at the tail's close and the tail's stop
    /// waits for it (found by the stress, seed 0x5eed1504).
    fn notifies(&self) -> bool {
        let swallows_cleanup = |r: &RulePlan| {
            let completes = pick(&RULE_ACTIONS, r.action) == "deny"
                || pick(&RULE_ACTIONS, r.action).starts_with("complete:");
            completes && matches!(pick(&RULE_OPS, r.op), "*" | "cleanup") && r.pattern % 3 == 0
        };
        let probes_swallow = self
            .drivers
            .iter()
            .any(|d| d.sample_name() == "probe" && d.probe.rules.iter().any(swallows_cleanup));
        !probes_swallow
            && !self.steps.iter().any(|s| matches!(s, StepPlan::Stop(_) | StepPlan::Unload(_)))
    }

    /// An io step's path: [`IoPlan::path_name`] and the stream it names ([`IoPlan::stream`]).
    fn io_path(&self, names: &Names, io: &IoPlan) -> String {
        let notifies = self.notifies();
        let (_, fs) = pick_ref(&names.volumes, io.volume);
        let stream = io.stream(names.volumes.len(), fs, notifies);
        format!("{}{stream}", io.path_name(notifies))
    }

    /// The (volume, path, handle) triples the io steps name: the handles the caller may still
    /// hold open.
    fn used_paths(&self, names: &Names) -> Vec<(usize, String, Option<&'static str>)> {
        let mut used: Vec<(usize, String, Option<&'static str>)> = Vec::new();
        for s in &self.steps {
            if let StepPlan::Io(io) = s {
                let volume = io.volume % names.volumes.len();
                let key = (volume, self.io_path(names, io), io.handle(self.notifies()));
                if !used.contains(&key) {
                    used.push(key);
                }
            }
        }
        used.sort_unstable();
        used
    }

    /// Closes every file the steps may have left open, stops every driver (latest declared
    /// first), dismounts every volume.
    fn render_tail(&self, t: &mut String, names: &Names) {
        for (v, p, h) in self.used_paths(names) {
            let v = &names.volumes[v].0;
            let _ =
                writeln!(t, "\n[[step]]\naction = \"io\"\nvolume = {}\nop = \"close\"", quote(v));
            if !p.is_empty() {
                let _ = writeln!(t, "path = {}", quote(&p));
            }
            if let Some(h) = h {
                let _ = writeln!(t, "handle = \"{h}\"");
            }
        }
        for (d, _) in names.drivers.iter().rev() {
            let _ = writeln!(t, "\n[[step]]\naction = \"stop\"\ndriver = \"{d}\"");
        }
        for (v, _) in &names.volumes {
            let _ = writeln!(t, "\n[[step]]\naction = \"dismount\"\nvolume = {}", quote(v));
        }
    }

    /// The number of steps the rendering adds before the plan's steps: the overlapped open
    /// before each change notification.
    pub fn opens_len(&self) -> usize {
        let notifies = self.notifies();
        self.steps.iter().filter(|s| matches!(s, StepPlan::Io(io) if io.notify(notifies))).count()
    }

    /// The number of steps of the rendered scenario that belong to the tail.
    pub fn tail_len(&self) -> usize {
        let names = self.names();
        self.used_paths(&names).len() + names.drivers.len() + names.volumes.len()
    }

    /// Renders and parses the plan.
    pub fn scenario(&self) -> Result<Scenario, ScenarioError> {
        scenario::parse("stress.toml", &self.to_toml())
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

fn group(i: usize) -> &'static LoadOrderGroup {
    let name = pick(&GROUPS, i);
    LoadOrderGroup::ALL.iter().find(|g| g.name == name).unwrap_or(&LoadOrderGroup::ALL[0])
}

/// The probe's parameters. `reparse`: its rules that complete a create of a file (a rule with a
/// pattern) with `STATUS_SUCCESS` or `STATUS_OBJECT_NAME_NOT_FOUND` complete it with
/// `STATUS_REPARSE` instead, the file object's name unchanged, which the I/O manager then parses
/// from the root, where it names nothing (docs/simulator.md, "Reparse"): drawn from the driver's
/// altitude (odd), so that adding it left every plan's draws as they were. (Not for a rule
/// without a pattern: a volume open's `STATUS_REPARSE` is bug check 0xF9.)
fn probe_parameters(p: &ProbePlan, reparse: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if p.attach != 0 {
        let words: Vec<&str> = ATTACH_WORDS
            .iter()
            .enumerate()
            .filter(|(i, _)| p.attach & (1 << i) != 0)
            .map(|(_, w)| *w)
            .collect();
        out.push(("Attach", quote(&words.join(","))));
    }
    if let Some(ops) = &p.operations {
        let mut list: Vec<String> = Vec::new();
        for (op, skip) in ops {
            let name = pick(&RULE_OPS, *op);
            // The skip flags each operation takes (facts.md §3): paging and cached for reads,
            // non-cached for writes.
            let skip = match (name, pick(&SKIPS, *skip)) {
                ("read", s) if s != ":noncached" => s,
                ("write", ":noncached") => ":noncached",
                _ => "",
            };
            if !list.iter().any(|l| l.split(':').next() == Some(name)) {
                list.push(format!("{name}{skip}"));
            }
        }
        out.push(("Operations", quote(&list.join(","))));
    }
    if p.no_post {
        out.push(("Post", "0".to_owned()));
    }
    match p.unload {
        1 => out.push(("Unload", quote("refuse"))),
        2 => out.push(("Unload", quote("none"))),
        _ => {}
    }
    match p.detach {
        1 => out.push(("Detach", quote("refuse"))),
        2 => out.push(("Detach", quote("none"))),
        _ => {}
    }
    let mut rules: Vec<String> = p
        .rules
        .iter()
        .map(|r| {
            let pattern = ["", " *secret*", " *.com"][r.pattern % 3];
            let (action, op) = (pick(&RULE_ACTIONS, r.action), pick(&RULE_OPS, r.op));
            let completes = matches!(
                action,
                "complete:STATUS_SUCCESS" | "complete:STATUS_OBJECT_NAME_NOT_FOUND"
            );
            let reparses = reparse && completes && op == "create";
            let action = if reparses && !pattern.is_empty() { REPARSE_ACTION } else { action };
            format!("{action} {op}{pattern}")
        })
        .collect();
    if p.malformed {
        rules.push("explode create".to_owned());
    }
    if !rules.is_empty() {
        out.push(("Rules", quote(&rules.join("; "))));
    }
    if p.npfs {
        out.push(("SupportNpfsMsfs", "1".to_owned()));
    }
    out
}

fn scanner_parameters(s: &ScannerPlan) -> Vec<(&'static str, String)> {
    let mut out = vec![("Pattern", quote(PATTERN))];
    if s.latency != 0 {
        out.push(("ScanLatency", s.latency.to_string()));
    }
    if s.attach_unscanned {
        out.push(("AttachUnscanned", "1".to_owned()));
    }
    if s.npfs {
        out.push(("SupportNpfsMsfs", "1".to_owned()));
    }
    out
}
