//! probe: the lab's instrument.
//!
//! Every callback it gets is recorded by the framework's trace hook (the lab's `pre`, `post`,
//! `instance_setup`, ... events); everything it does comes from its service's `Parameters` key
//! ([`PARAMETERS`] documents each value): which volumes to attach to, which operations to
//! register with which skip flags, whether it can be unloaded or detached, and rules that deny,
//! complete, pend, synchronize or pass matching operations.
//!
//! Parsing happens once, in `DriverEntry`, into fixed-capacity tables: no allocation, and a
//! malformed value fails the load with `STATUS_INVALID_PARAMETER` and a precise [`ParseError`].
//! A value the driver cannot read (of another type, or a string longer than 255 characters, the
//! longest `shared/kernel/src/registry.rs` reads) is taken for an absent one.

#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

use fsfilter::text::{Names, eq_ignore_case};

use fsfilter::{
    Error, FilesystemType, Filter, Instance, InstanceSetup, IoStatus, MajorFunction, Operation,
    OperationFlags, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, PreResume,
    Registration, RegistrationFlags, Result, ServiceParameters, Status, TeardownFlags, UnloadFlags,
    VolumeDeviceType,
};

pub use fsfilter::ParameterDoc;

/// The probe's parameters.
pub const PARAMETERS: &[ParameterDoc] = &[
    ParameterDoc {
        name: "Attach",
        kind: "REG_SZ",
        default: "disk,cdrom,network,pipe,mailslot",
        description: "Volume device types to attach to: disk, cdrom, network, pipe, mailslot (comma-separated); others are refused with STATUS_FLT_DO_NOT_ATTACH.",
    },
    ParameterDoc {
        name: "FileSystems",
        kind: "REG_SZ",
        default: "any",
        description: "File systems to attach to (ntfs, fat, exfat, refs, cdfs, udfs, mup, npfs, msfs, raw, lanman, or any; comma-separated).",
    },
    ParameterDoc {
        name: "Operations",
        kind: "REG_SZ",
        default: "all",
        description: "Operations to register, each with optional skip flags after a colon: read:paging|cached, write:noncached, create:nondasd. Names are the lab's io ops (create, read, write, query_information, set_information, directory_control, cleanup, close, flush, fsctl, device_control, lock, shutdown, query_volume_information, ...; every operation has one, see MajorFunction::short_name); 'all' registers every operation passThrough registers.",
    },
    ParameterDoc {
        name: "Post",
        kind: "REG_DWORD",
        default: "1",
        description: "0 registers pre callbacks only.",
    },
    ParameterDoc {
        name: "Unload",
        kind: "REG_SZ",
        default: "allow",
        description: "allow: non-mandatory unload succeeds; refuse: it fails with STATUS_FLT_DO_NOT_DETACH; none: no unload callback at all, so the filter cannot be unloaded.",
    },
    ParameterDoc {
        name: "Detach",
        kind: "REG_SZ",
        default: "allow",
        description: "allow: manual detach succeeds; refuse: instance_query_teardown answers STATUS_FLT_DO_NOT_DETACH; none: no query-teardown callback, so instances can never be detached manually.",
    },
    ParameterDoc {
        name: "Rules",
        kind: "REG_SZ",
        default: "",
        description: "Up to 16 rules separated by ';', each 'ACTION OPERATION [PATTERN]', 255 characters in all. ACTION: deny | complete:STATUS (a STATUS_* name, not a STATUS_FLT_* one, or a 0x value) | pend:MS | synchronize | nopost | disallow_fastio. OPERATION: an operation name or *. PATTERN: a file-name wildcard (* and ?), default *. The first matching rule applies; others pass with a post callback.",
    },
    ParameterDoc {
        name: "SupportNpfsMsfs",
        kind: "REG_DWORD",
        default: "0",
        description: "1 sets FLTFL_REGISTRATION_SUPPORT_NPFS_MSFS (minifilter only: attach to named-pipe and mailslot volumes).",
    },
    ParameterDoc {
        name: "Notes",
        kind: "REG_DWORD",
        default: "1",
        description: "1 adds a trace note each time a rule matches.",
    },
];

/// An operation by its short name: the lab's io ops (`create`, `fsctl`, `lock`, `flush`, ...;
/// [`MajorFunction::short_name`]), any ASCII case.
pub fn operation_by_name(name: &str) -> Option<MajorFunction> {
    MajorFunction::from_short_name(name)
}

/// Why a parameter could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A word of a list value is not one of the value's words.
    UnknownWord {
        /// The parameter.
        parameter: &'static str,
    },
    /// A rule's action is not one of the documented ones.
    UnknownAction,
    /// A rule names an unknown operation.
    UnknownOperation,
    /// `complete:` names an unknown status.
    UnknownStatus,
    /// `pend:` is not a number of milliseconds.
    BadDelay,
    /// More than 16 rules.
    TooManyRules,
    /// A rule's pattern is longer than 96 bytes.
    PatternTooLong,
    /// A rule is empty or has more than three words.
    MalformedRule,
    /// The built registration is invalid (a forbidden operation, say).
    Registration(fsfilter::RegistrationError),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownWord { parameter } => write!(f, "{parameter}: unknown word"),
            ParseError::UnknownAction => f.write_str("Rules: unknown action"),
            ParseError::UnknownOperation => f.write_str("unknown operation name"),
            ParseError::UnknownStatus => f.write_str("Rules: complete: needs a STATUS_* name"),
            ParseError::BadDelay => f.write_str("Rules: pend: needs milliseconds"),
            ParseError::TooManyRules => f.write_str("Rules: at most 16 rules"),
            ParseError::PatternTooLong => f.write_str("Rules: a pattern is at most 96 bytes"),
            ParseError::MalformedRule => {
                f.write_str("Rules: each rule is 'ACTION OPERATION [PATTERN]'")
            }
            ParseError::Registration(e) => write!(f, "Operations: {e}"),
        }
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Complete with `STATUS_ACCESS_DENIED`.
    Deny,
    /// Complete with this status.
    Complete(Status),
    /// Pend, then continue with a post callback after this many milliseconds.
    Pend(u32),
    /// `FLT_PREOP_SYNCHRONIZE`.
    Synchronize,
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
    NoPost,
    /// `FLT_PREOP_DISALLOW_FASTIO` (fast I/O only; IRPs pass).
    DisallowFastIo,
}

/// The actions' words in the `Rules` syntax, in [`Action::index`] order: one table for parsing
/// and for naming (probe-legacy.sys has no `.rdata` to spare for a second copy).
const VERBS: Names = Names("deny\ncomplete\npend\nsynchronize\nnopost\ndisallow_fastio\n");

impl Action {
    /// The action's position in [`VERBS`].
    const fn index(self) -> usize {
        match self {
            Action::Deny => 0,
            Action::Complete(_) => 1,
            Action::Pend(_) => 2,
            Action::Synchronize => 3,
            Action::NoPost => 4,
            Action::DisallowFastIo => 5,
        }
    }

    /// The action's word in the `Rules` syntax.
    pub fn name(self) -> &'static str {
        VERBS.get(self.index()).unwrap_or("")
    }
}

/// The longest valid UTF-8 prefix of `bytes` (all of them when they are valid).
fn utf8_prefix(bytes: &[u8]) -> &str {
    bytes.utf8_chunks().next().map_or("", |chunk| chunk.valid())
}

const PATTERN_CAPACITY: usize = 96;
const MAX_RULES: usize = 16;

/// A rule: an action for an operation (or any) on names matching a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What to do.
    pub action: Action,
    /// Which operation; `None` for any.
    pub major: Option<MajorFunction>,
    pattern: [u8; PATTERN_CAPACITY],
    pattern_len: usize,
}

impl Rule {
    /// The pattern.
    pub fn pattern(&self) -> &str {
        // Valid UTF-8 (a whole `&str`, checked against the capacity when parsed): the first
        // chunk is all of it. (`utf8_chunks` links a smaller decoder than `str::from_utf8`.)
        utf8_prefix(self.pattern.get(..self.pattern_len).unwrap_or(&[]))
    }

    fn applies(&self, op: &PreOperation<'_, ()>) -> bool {
        if self.major.is_some_and(|m| m != op.major()) {
            return false;
        }
        let pattern = self.pattern();
        match op.file_name() {
            Some(name) => name.matches(pattern),
            None => pattern == "*",
        }
    }
}

/// allow / refuse / none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The callback exists and agrees.
    Allow,
    /// The callback exists and answers `STATUS_FLT_DO_NOT_DETACH`.
    Refuse,
    /// No callback at all.
    None,
}

/// Volume device types, as a small set: disk, cdrom, network, pipe, mailslot (the `Attach`
/// words' order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSet([bool; 5]);

impl DeviceSet {
    const ALL: DeviceSet = DeviceSet([true; 5]);

    fn contains(&self, t: VolumeDeviceType) -> bool {
        let slot = match t {
            VolumeDeviceType::DiskFileSystem => 0,
            VolumeDeviceType::CdRomFileSystem => 1,
            VolumeDeviceType::NetworkFileSystem => 2,
            VolumeDeviceType::Other(fsfilter::device_type::NAMED_PIPE) => 3,
            VolumeDeviceType::Other(fsfilter::device_type::MAILSLOT) => 4,
            VolumeDeviceType::Other(_) => return false,
        };
        self.0.get(slot).copied().unwrap_or(false)
    }
}

/// The probe.
#[derive(Clone, Debug)]
pub struct Probe {
    devices: DeviceSet,
    filesystems: Option<[bool; 31]>,
    unload: Policy,
    detach: Policy,
    notes: bool,
    rules: [Option<Rule>; MAX_RULES],
    registration: Registration,
}

/// Splits `s` at the ASCII `sep`, trimming, skipping empty pieces (panic-free).
fn words(s: &str, sep: u8) -> fsfilter::text::Split<'_> {
    fsfilter::text::split(s, sep)
}

/// An `Unload` or `Detach` value; `None` for an unknown word.
fn policy(value: Option<&str>) -> Option<Policy> {
    const WORDS: Names = Names("allow\nrefuse\nnone\n");
    const POLICIES: [Policy; 3] = [Policy::Allow, Policy::Refuse, Policy::None];
    match value.map(fsfilter::text::trim) {
        None | Some("") => Some(Policy::Allow),
        Some(v) => lookup(WORDS, &POLICIES, v),
    }
}

/// The value of `word` in `names`, from the parallel table `values`.
fn lookup<T: Copy>(names: Names, values: &[T], word: &str) -> Option<T> {
    values.get(names.position(word)?).copied()
}

fn filesystem_by_name(name: &str) -> Option<FilesystemType> {
    const WORDS: Names =
        Names("ntfs\nfat\nexfat\nrefs\ncdfs\nudfs\nmup\nnpfs\nmsfs\nraw\nlanman\n");
    const TYPES: [FilesystemType; 11] = [
        FilesystemType::Ntfs,
        FilesystemType::Fat,
        FilesystemType::Exfat,
        FilesystemType::Refs,
        FilesystemType::Cdfs,
        FilesystemType::Udfs,
        FilesystemType::Mup,
        FilesystemType::Npfs,
        FilesystemType::Msfs,
        FilesystemType::Raw,
        FilesystemType::Lanman,
    ];
    lookup(WORDS, &TYPES, name)
}

/// Parses `Operations` into a registration (plus the unload and detach policies and flags).
fn registration(
    operations: Option<&str>,
    post: bool,
    unload: Policy,
    detach: Policy,
    npfs_msfs: bool,
) -> core::result::Result<Registration, ParseError> {
    let mut r = Registration::new();
    let v = operations.map_or("", fsfilter::text::trim);
    if v.is_empty() || eq_ignore_case(v, "all") {
        r = r.every_operation(true, post);
    } else {
        for item in words(v, b',') {
            let (name, flags) = match fsfilter::text::split_once(item, b':') {
                Some((n, f)) => (fsfilter::text::trim(n), Some(f)),
                None => (item, None),
            };
            let major = operation_by_name(name).ok_or(ParseError::UnknownOperation)?;
            let mut op = Operation::new(major).pre();
            if post && major != MajorFunction::Shutdown {
                op = op.post();
            }
            const SKIPS: Names = Names("paging\ncached\nnoncached\nnondasd\n");
            const SKIP_FLAGS: [OperationFlags; 4] = [
                OperationFlags::SKIP_PAGING_IO,
                OperationFlags::SKIP_CACHED_IO,
                OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO,
                OperationFlags::SKIP_NON_DASD_IO,
            ];
            for flag in flags.map(|f| words(f, b'|')).into_iter().flatten() {
                let skip = lookup(SKIPS, &SKIP_FLAGS, flag)
                    .ok_or(ParseError::UnknownWord { parameter: "Operations" })?;
                op = op.skip(skip);
            }
            r = r.operation(op);
        }
    }
    let flags =
        if npfs_msfs { RegistrationFlags::SUPPORT_NPFS_MSFS } else { RegistrationFlags::empty() };
    r.flags(flags)
        .unload_callback(unload != Policy::None)
        .query_teardown_callback(detach != Policy::None)
        .check()
        .map_err(ParseError::Registration)
}

fn parse_rule(text: &str) -> core::result::Result<Rule, ParseError> {
    let mut parts = words(text, b' ');
    let action = parts.next().ok_or(ParseError::MalformedRule)?;
    let operation = parts.next().ok_or(ParseError::MalformedRule)?;
    let pattern = parts.next().unwrap_or("*");
    if parts.next().is_some() {
        return Err(ParseError::MalformedRule);
    }
    let (verb, argument) = match fsfilter::text::split_once(action, b':') {
        Some((v, a)) => (v, Some(a)),
        None => (action, None),
    };
    let action = match (VERBS.position(verb), argument) {
        (Some(0), None) => Action::Deny,
        (Some(1), Some(s)) => Action::Complete(
            Status::from_io_name(s)
                .or_else(|| fsfilter::text::parse_u32(s).map(Status::from_bits))
                .ok_or(ParseError::UnknownStatus)?,
        ),
        (Some(2), Some(ms)) => {
            Action::Pend(fsfilter::text::parse_u32(ms).ok_or(ParseError::BadDelay)?)
        }
        (Some(2), None) => Action::Pend(0),
        (Some(3), None) => Action::Synchronize,
        (Some(4), None) => Action::NoPost,
        (Some(5), None) => Action::DisallowFastIo,
        _ => return Err(ParseError::UnknownAction),
    };
    let major = if operation == "*" {
        None
    } else {
        Some(operation_by_name(operation).ok_or(ParseError::UnknownOperation)?)
    };
    if pattern.len() > PATTERN_CAPACITY {
        return Err(ParseError::PatternTooLong);
    }
    let mut rule =
        Rule { action, major, pattern: [0; PATTERN_CAPACITY], pattern_len: pattern.len() };
    fsfilter::text::copy_prefix(&mut rule.pattern, pattern.as_bytes());
    Ok(rule)
}

impl Probe {
    /// Parses the probe's configuration from its parameters.
    pub fn from_parameters(p: &dyn ServiceParameters) -> core::result::Result<Probe, ParseError> {
        let mut buf = [0u8; 512];
        let devices = match p.string("Attach", &mut buf) {
            None => DeviceSet::ALL,
            Some(v) => {
                let mut set = DeviceSet([false; 5]);
                const WORDS: Names = Names("disk\ncdrom\nnetwork\npipe\nmailslot\n");
                for w in words(v, b',') {
                    let unknown = ParseError::UnknownWord { parameter: "Attach" };
                    *WORDS.position(w).and_then(|i| set.0.get_mut(i)).ok_or(unknown)? = true;
                }
                set
            }
        };
        let filesystems = match p.string("FileSystems", &mut buf) {
            None => None,
            Some(v) if eq_ignore_case(fsfilter::text::trim(v), "any") => None,
            Some(v) => {
                let mut set = [false; 31];
                for w in words(v, b',') {
                    let t = filesystem_by_name(w)
                        .ok_or(ParseError::UnknownWord { parameter: "FileSystems" })?;
                    if let Some(slot) = set.get_mut(t.raw() as usize) {
                        *slot = true;
                    }
                }
                Some(set)
            }
        };
        let unknown = |parameter| ParseError::UnknownWord { parameter };
        let unload = policy(p.string("Unload", &mut buf)).ok_or(unknown("Unload"))?;
        let detach = policy(p.string("Detach", &mut buf)).ok_or(unknown("Detach"))?;
        let post = p.flag("Post").unwrap_or(true);
        let npfs_msfs = p.flag("SupportNpfsMsfs").unwrap_or(false);
        let notes = p.flag("Notes").unwrap_or(true);
        let registration =
            registration(p.string("Operations", &mut buf), post, unload, detach, npfs_msfs)?;
        let mut rules = [None; MAX_RULES];
        if let Some(v) = p.string("Rules", &mut buf) {
            for (i, text) in words(v, b';').enumerate() {
                *rules.get_mut(i).ok_or(ParseError::TooManyRules)? = Some(parse_rule(text)?);
            }
        }
        Ok(Probe { devices, filesystems, unload, detach, notes, rules, registration })
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().flatten()
    }

    /// The unload policy.
    pub const fn unload_policy(&self) -> Policy {
        self.unload
    }

    /// The detach policy.
    pub const fn detach_policy(&self) -> Policy {
        self.detach
    }

    /// The first rule matching `op`, with its number (1-based).
    fn rule_for(&self, op: &PreOperation<'_, ()>) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, r)| r.applies(op))
            .map(|(i, r)| (i + 1, r))
    }
}

impl Filter for Probe {
    /// The default registration; the one in force comes from the parameters
    /// ([`Filter::registration`]).
    const REGISTRATION: Registration = Registration::new().every_operation(true, true).validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Probe> {
        Probe::from_parameters(parameters).map_err(|_| Error::INVALID_PARAMETER)
    }

    fn registration(&self) -> Option<Registration> {
        Some(self.registration)
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
        let device_ok = self.devices.contains(setup.volume.device_type);
        let fs_ok = self.filesystems.is_none_or(|set| {
            set.get(setup.volume.filesystem.raw() as usize).copied().unwrap_or(false)
        });
        if device_ok && fs_ok { Ok(()) } else { Err(Error::FLT_DO_NOT_ATTACH) }
    }

    fn instance_query_teardown(&self, _instance: &Instance<'_, ()>) -> Result<()> {
        match self.detach {
            Policy::Refuse => Err(Error::FLT_DO_NOT_DETACH),
            _ => Ok(()),
        }
    }

    fn instance_teardown_start(&self, _instance: &Instance<'_, ()>, _reason: TeardownFlags) {}

    fn instance_teardown_complete(&self, _instance: &Instance<'_, ()>, _reason: TeardownFlags) {}

    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        let Some((number, rule)) = self.rule_for(op) else { return PreOutcome::WithPost(()) };
        if self.notes {
            let mut text = note::Note::new();
            text.push("probe: rule ");
            text.push_number(number as u32);
            text.push(" matched: ");
            text.push(rule.action.name());
            op.services().note(text.as_str());
        }
        match rule.action {
            Action::Deny => PreOutcome::deny(),
            Action::Complete(status) => PreOutcome::Complete(IoStatus::new(status)),
            Action::Synchronize => PreOutcome::Synchronize(()),
            Action::NoPost => PreOutcome::NoPost,
            Action::DisallowFastIo => {
                if op.header().is_fast_io() {
                    PreOutcome::DisallowFastIo
                } else {
                    PreOutcome::WithPost(())
                }
            }
            Action::Pend(ms) => match op.pend() {
                Some((token, receipt)) => {
                    token.resume_after(ms, PreResume::WithPost(()));
                    PreOutcome::Pending(receipt)
                }
                // Fast I/O cannot be pended (facts.md §4): disallow it so the IRP comes, and pend
                // that.
                None if op.header().is_fast_io() => PreOutcome::DisallowFastIo,
                None => PreOutcome::WithPost(()),
            },
        }
    }

    fn post_operation(
        &self,
        _instance: &Instance<'_, ()>,
        _op: &mut PostOperation<'_>,
        _context: (),
        _flags: PostFlags,
    ) -> PostOutcome<()> {
        PostOutcome::Finished
    }

    fn unload(&self, flags: UnloadFlags) -> Result<()> {
        match self.unload {
            Policy::Refuse if !flags.contains(UnloadFlags::MANDATORY) => {
                Err(Error::FLT_DO_NOT_DETACH)
            }
            _ => Ok(()),
        }
    }
}

/// A short note built without `core::fmt` (which would add kilobytes to the driver).
mod note {
    /// A 128-byte ASCII text buffer; what does not fit is dropped.
    pub(crate) struct Note {
        bytes: [u8; 128],
        len: usize,
    }

    impl Note {
        pub(crate) fn new() -> Note {
            Note { bytes: [0; 128], len: 0 }
        }

        pub(crate) fn push(&mut self, s: &str) {
            self.push_bytes(s.as_bytes());
        }

        fn push_bytes(&mut self, bytes: &[u8]) {
            for &b in bytes {
                let Some(slot) = self.bytes.get_mut(self.len) else { return };
                // Keep the text valid UTF-8 when cut: non-ASCII bytes become '?'.
                *slot = if b.is_ascii() { b } else { b'?' };
                self.len += 1;
            }
        }

        pub(crate) fn push_number(&mut self, mut n: u32) {
            let mut digits = [0u8; 10];
            let mut i = digits.len();
            loop {
                i -= 1;
                if let Some(d) = digits.get_mut(i) {
                    *d = b'0' + (n % 10) as u8;
                }
                n /= 10;
                if n == 0 || i == 0 {
                    break;
                }
            }
            self.push_bytes(digits.get(i..).unwrap_or(&[]));
        }

        pub(crate) fn as_str(&self) -> &str {
            // ASCII only (`push_bytes`): the first chunk is all of it.
            super::utf8_prefix(self.bytes.get(..self.len).unwrap_or(&[]))
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn numbers_and_truncation() {
            let mut n = super::Note::new();
            n.push("rule ");
            n.push_number(0);
            n.push(" ");
            n.push_number(4_294_967_295);
            n.push(" é");
            assert_eq!(n.as_str(), "rule 0 4294967295 ??");
            let mut long = super::Note::new();
            for _ in 0..50 {
                long.push("abcd");
            }
            assert_eq!(long.as_str().len(), 128);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsfilter::{ParameterList, ParameterValue as V};

    fn probe(values: &[(&str, V<'_>)]) -> core::result::Result<Probe, ParseError> {
        Probe::from_parameters(&ParameterList { service: "ProbeA", values })
    }

    #[test]
    fn utf8_prefix_is_the_valid_start() {
        assert_eq!(utf8_prefix(b"\\locked\\*"), "\\locked\\*");
        assert_eq!(utf8_prefix("d\u{e9}j\u{e0}".as_bytes()), "d\u{e9}j\u{e0}");
        assert_eq!(utf8_prefix(b"ab\xffcd"), "ab");
        assert_eq!(utf8_prefix(b""), "");
    }

    #[test]
    fn defaults_register_everything_and_allow_everything() {
        let p = probe(&[]).unwrap();
        assert_eq!(p.registration, Probe::REGISTRATION);
        assert_eq!(p.unload_policy(), Policy::Allow);
        assert_eq!(p.detach_policy(), Policy::Allow);
        assert_eq!(p.rules().count(), 0);
    }

    #[test]
    fn operations_with_skip_flags() {
        let p = probe(&[(
            "Operations",
            V::String("create, read:paging|cached, write:noncached, cleanup:nondasd"),
        )])
        .unwrap();
        let r = p.registration;
        assert_eq!(r.operations().len(), 4);
        let read = r.get(MajorFunction::Read).unwrap();
        assert_eq!(read.flags, OperationFlags::SKIP_PAGING_IO | OperationFlags::SKIP_CACHED_IO);
        assert!(read.pre && read.post);
        assert_eq!(
            r.get(MajorFunction::Write).unwrap().flags,
            OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO
        );
        assert_eq!(r.get(MajorFunction::Cleanup).unwrap().flags, OperationFlags::SKIP_NON_DASD_IO);
        assert!(r.get(MajorFunction::Close).is_none());
    }

    #[test]
    fn short_names_in_any_case_and_pre_only() {
        let p = probe(&[("Operations", V::String("Create,SHUTDOWN,fsctl")), ("Post", V::Dword(0))])
            .unwrap();
        let c = p.registration.get(MajorFunction::Create).unwrap();
        assert!(c.pre && !c.post);
        assert!(!p.registration.get(MajorFunction::Shutdown).unwrap().post);
        assert!(p.registration.get(MajorFunction::FileSystemControl).is_some());
        // The WDK spelling is not one of the probe's names (the lab's io ops are).
        assert_eq!(
            probe(&[("Operations", V::String("IRP_MJ_CREATE"))]).unwrap_err(),
            ParseError::UnknownOperation
        );
    }

    #[test]
    fn complete_takes_a_status_name_or_value() {
        let p = probe(&[(
            "Rules",
            V::String("complete:STATUS_SHARING_VIOLATION create; complete:0xC0000022 read"),
        )])
        .unwrap();
        let mut actions = p.rules().map(|r| r.action);
        assert_eq!(actions.next(), Some(Action::Complete(Status::SHARING_VIOLATION)));
        assert_eq!(actions.next(), Some(Action::Complete(Status::ACCESS_DENIED)));
        assert_eq!(actions.next(), None);
        assert_eq!(
            probe(&[("Rules", V::String("complete:STATUS_NO_SUCH_THING create"))]).unwrap_err(),
            ParseError::UnknownStatus
        );
    }

    #[test]
    fn forbidden_operations_are_refused_at_load() {
        let e = probe(&[("Operations", V::String("power"))]).unwrap_err();
        assert_eq!(
            e,
            ParseError::Registration(fsfilter::RegistrationError::Forbidden(MajorFunction::Power))
        );
        assert_eq!(
            probe(&[("Operations", V::String("read:sometimes"))]).unwrap_err(),
            ParseError::UnknownWord { parameter: "Operations" }
        );
        assert_eq!(
            probe(&[("Operations", V::String("teleport"))]).unwrap_err(),
            ParseError::UnknownOperation
        );
    }

    #[test]
    fn unload_and_detach_policies_shape_the_registration() {
        let p = probe(&[("Unload", V::String("none")), ("Detach", V::String("none"))]).unwrap();
        assert!(!p.registration.callbacks().filter_unload);
        assert!(!p.registration.callbacks().instance_query_teardown);
        let p = probe(&[("Unload", V::String("refuse")), ("Detach", V::String("refuse"))]).unwrap();
        assert!(p.registration.callbacks().filter_unload);
        assert_eq!(p.unload(UnloadFlags::empty()), Err(Error::FLT_DO_NOT_DETACH));
        assert_eq!(
            p.unload(UnloadFlags::MANDATORY),
            Ok(()),
            "a mandatory unload cannot be refused"
        );
        assert_eq!(
            probe(&[("Unload", V::String("maybe"))]).unwrap_err(),
            ParseError::UnknownWord { parameter: "Unload" }
        );
    }

    #[test]
    fn rules_parse_in_order() {
        let p = probe(&[(
            "Rules",
            V::String("deny create *.exe; complete:STATUS_SHARING_VIOLATION write \\locked\\*; pend:25 read; synchronize * ; nopost cleanup"),
        )])
        .unwrap();
        let rules: [Option<Rule>; 5] = core::array::from_fn(|i| p.rules().nth(i).copied());
        let r = rules.map(|r| r.unwrap());
        assert_eq!(
            (r[0].action, r[0].major, r[0].pattern()),
            (Action::Deny, Some(MajorFunction::Create), "*.exe")
        );
        assert_eq!(r[1].action, Action::Complete(Status::SHARING_VIOLATION));
        assert_eq!(r[1].pattern(), "\\locked\\*");
        assert_eq!((r[2].action, r[2].pattern()), (Action::Pend(25), "*"));
        assert_eq!((r[3].action, r[3].major), (Action::Synchronize, None));
        assert_eq!(r[4].action, Action::NoPost);
    }

    #[test]
    fn each_actions_name_parses_back_to_it() {
        extern crate std;
        let actions = [
            Action::Deny,
            Action::Complete(Status::ACCESS_DENIED),
            Action::Pend(0),
            Action::Synchronize,
            Action::NoPost,
            Action::DisallowFastIo,
        ];
        let names = actions.map(Action::name);
        assert_eq!(names, ["deny", "complete", "pend", "synchronize", "nopost", "disallow_fastio"]);
        for (action, name) in actions.into_iter().zip(names) {
            let rule = match action {
                Action::Complete(_) => std::format!("{name}:STATUS_ACCESS_DENIED read"),
                _ => std::format!("{name} read"),
            };
            let p = probe(&[("Rules", V::String(&rule))]).unwrap();
            assert_eq!(p.rules().next().unwrap().action, action, "{rule}");
        }
    }

    #[test]
    fn bad_rules_name_the_problem() {
        assert_eq!(
            probe(&[("Rules", V::String("explode create"))]).unwrap_err(),
            ParseError::UnknownAction
        );
        assert_eq!(
            probe(&[("Rules", V::String("complete:STATUS_NOPE create"))]).unwrap_err(),
            ParseError::UnknownStatus
        );
        assert_eq!(
            probe(&[("Rules", V::String("pend:soon read"))]).unwrap_err(),
            ParseError::BadDelay
        );
        assert_eq!(probe(&[("Rules", V::String("deny"))]).unwrap_err(), ParseError::MalformedRule);
        assert_eq!(
            probe(&[("Rules", V::String("deny create a b"))]).unwrap_err(),
            ParseError::MalformedRule
        );
        assert_eq!(
            probe(&[("Rules", V::String("deny teleport"))]).unwrap_err(),
            ParseError::UnknownOperation
        );
        let many = "nopost read;".repeat(17);
        let mut buf = [0u8; 512];
        buf[..many.len()].copy_from_slice(many.as_bytes());
        let text = core::str::from_utf8(&buf[..many.len()]).unwrap();
        assert_eq!(probe(&[("Rules", V::String(text))]).unwrap_err(), ParseError::TooManyRules);
    }

    #[test]
    fn attach_sets() {
        let p = probe(&[("Attach", V::String("disk")), ("FileSystems", V::String("ntfs,fat"))])
            .unwrap();
        assert!(p.devices.contains(VolumeDeviceType::DiskFileSystem));
        assert!(!p.devices.contains(VolumeDeviceType::NetworkFileSystem));
        let fs = p.filesystems.unwrap();
        assert!(fs[FilesystemType::Ntfs.raw() as usize] && fs[FilesystemType::Fat.raw() as usize]);
        assert!(!fs[FilesystemType::Refs.raw() as usize]);
        assert_eq!(
            probe(&[("Attach", V::String("floppy"))]).unwrap_err(),
            ParseError::UnknownWord { parameter: "Attach" }
        );
        assert_eq!(
            probe(&[("FileSystems", V::String("zfs"))]).unwrap_err(),
            ParseError::UnknownWord { parameter: "FileSystems" }
        );
    }

    #[test]
    fn every_file_system_word_is_documented() {
        let doc = PARAMETERS.iter().find(|d| d.name == "FileSystems").unwrap().description;
        for word in ["ntfs", "fat", "exfat", "refs", "cdfs", "udfs", "mup", "npfs", "msfs", "raw"]
            .into_iter()
            .chain(["lanman"])
        {
            assert!(filesystem_by_name(word).is_some(), "{word}");
            let mut words = doc.split(|c: char| !c.is_ascii_alphanumeric());
            assert!(words.any(|w| w == word), "{word} is not in the docs");
        }
    }

    #[test]
    fn every_documented_parameter_is_read() {
        // The docs table and the parser agree on the names.
        let names: [&str; 9] = [
            "Attach",
            "FileSystems",
            "Operations",
            "Post",
            "Unload",
            "Detach",
            "Rules",
            "SupportNpfsMsfs",
            "Notes",
        ];
        assert_eq!(PARAMETERS.len(), names.len());
        for (doc, name) in PARAMETERS.iter().zip(names) {
            assert_eq!(doc.name, name);
        }
    }
}
