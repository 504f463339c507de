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

#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

use fsfilter::{
    Error, FilesystemType, Filter, Instance, InstanceSetup, IoStatus, MajorFunction, Operation,
    OperationFlags, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome, PreResume,
    Registration, RegistrationFlags, Result, ServiceParameters, Status, TeardownFlags, UnloadFlags,
    VolumeDeviceType,
};

/// A documented parameter of a sample, for `fsfilter samples`.
#[derive(Clone, Copy, Debug)]
pub struct ParameterDoc {
    /// The value's name in the `Parameters` key.
    pub name: &'static str,
    /// `REG_SZ` or `REG_DWORD`.
    pub kind: &'static str,
    /// The value when absent.
    pub default: &'static str,
    /// What it does.
    pub description: &'static str,
}

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
        description: "File systems to attach to (ntfs, fat, exfat, refs, cdfs, udfs, mup, npfs, msfs, raw, or any).",
    },
    ParameterDoc {
        name: "Operations",
        kind: "REG_SZ",
        default: "all",
        description: "Operations to register, each with optional skip flags after a colon: read:paging|cached, write:noncached, create:nondasd. Names are the lab's io ops (create, read, write, query_information, set_information, directory_control, cleanup, close, flush, fsctl, device_control, lock, shutdown, query_volume_information, ...) or IRP_MJ_* spellings; 'all' registers every operation passThrough registers.",
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
        description: "Up to 16 rules separated by ';', each 'ACTION OPERATION [PATTERN]'. ACTION: deny | complete:STATUS_NAME | pend:MS | synchronize | nopost | disallow_fastio. OPERATION: an operation name or *. PATTERN: a file-name wildcard (* and ?), default *. The first matching rule applies; others pass with a post callback.",
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

/// The operation names the probe accepts, with their major functions.
pub const OPERATION_NAMES: &[(&str, MajorFunction)] = &[
    ("create", MajorFunction::Create),
    ("create_named_pipe", MajorFunction::CreateNamedPipe),
    ("close", MajorFunction::Close),
    ("read", MajorFunction::Read),
    ("write", MajorFunction::Write),
    ("query_information", MajorFunction::QueryInformation),
    ("set_information", MajorFunction::SetInformation),
    ("query_ea", MajorFunction::QueryEa),
    ("set_ea", MajorFunction::SetEa),
    ("flush", MajorFunction::FlushBuffers),
    ("query_volume_information", MajorFunction::QueryVolumeInformation),
    ("set_volume_information", MajorFunction::SetVolumeInformation),
    ("directory_control", MajorFunction::DirectoryControl),
    ("fsctl", MajorFunction::FileSystemControl),
    ("device_control", MajorFunction::DeviceControl),
    ("internal_device_control", MajorFunction::InternalDeviceControl),
    ("shutdown", MajorFunction::Shutdown),
    ("lock", MajorFunction::LockControl),
    ("cleanup", MajorFunction::Cleanup),
    ("create_mailslot", MajorFunction::CreateMailslot),
    ("query_security", MajorFunction::QuerySecurity),
    ("set_security", MajorFunction::SetSecurity),
    ("query_quota", MajorFunction::QueryQuota),
    ("set_quota", MajorFunction::SetQuota),
    ("pnp", MajorFunction::Pnp),
    // Named so that asking for them is refused with the reason (facts.md §3), not as unknown.
    ("power", MajorFunction::Power),
    ("system_control", MajorFunction::SystemControl),
    ("device_change", MajorFunction::DeviceChange),
    ("acquire_for_section_synchronization", MajorFunction::AcquireForSectionSynchronization),
    ("release_for_section_synchronization", MajorFunction::ReleaseForSectionSynchronization),
    ("query_open", MajorFunction::QueryOpen),
    ("fast_io_check_if_possible", MajorFunction::FastIoCheckIfPossible),
    ("network_query_open", MajorFunction::NetworkQueryOpen),
    ("mdl_read", MajorFunction::MdlRead),
    ("mdl_read_complete", MajorFunction::MdlReadComplete),
    ("prepare_mdl_write", MajorFunction::PrepareMdlWrite),
    ("mdl_write_complete", MajorFunction::MdlWriteComplete),
    ("volume_mount", MajorFunction::VolumeMount),
    ("volume_dismount", MajorFunction::VolumeDismount),
];

/// An operation by the probe's name or the WDK spelling.
pub fn operation_by_name(name: &str) -> Option<MajorFunction> {
    OPERATION_NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, m)| *m)
        .or_else(|| MajorFunction::from_name(name))
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
        core::str::from_utf8(self.pattern.get(..self.pattern_len).unwrap_or(&[])).unwrap_or("*")
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

/// Volume device types, as a small set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSet {
    disk: bool,
    cdrom: bool,
    network: bool,
    pipe: bool,
    mailslot: bool,
}

impl DeviceSet {
    const ALL: DeviceSet =
        DeviceSet { disk: true, cdrom: true, network: true, pipe: true, mailslot: true };

    fn contains(&self, t: VolumeDeviceType) -> bool {
        match t {
            VolumeDeviceType::DiskFileSystem => self.disk,
            VolumeDeviceType::CdRomFileSystem => self.cdrom,
            VolumeDeviceType::NetworkFileSystem => self.network,
            VolumeDeviceType::Other(fsfilter::device_type::NAMED_PIPE) => self.pipe,
            VolumeDeviceType::Other(fsfilter::device_type::MAILSLOT) => self.mailslot,
            VolumeDeviceType::Other(_) => false,
        }
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

/// Splits `s` at `sep`, trimming, skipping empty pieces.
fn words(s: &str, sep: char) -> impl Iterator<Item = &str> {
    s.split(sep).map(str::trim).filter(|w| !w.is_empty())
}

fn policy(
    value: Option<&str>,
    parameter: &'static str,
) -> core::result::Result<Policy, ParseError> {
    match value.map(str::trim) {
        None | Some("") => Ok(Policy::Allow),
        Some(v) if v.eq_ignore_ascii_case("allow") => Ok(Policy::Allow),
        Some(v) if v.eq_ignore_ascii_case("refuse") => Ok(Policy::Refuse),
        Some(v) if v.eq_ignore_ascii_case("none") => Ok(Policy::None),
        Some(_) => Err(ParseError::UnknownWord { parameter }),
    }
}

fn filesystem_by_name(name: &str) -> Option<FilesystemType> {
    let t = match name.to_ascii_lowercase_fixed().as_str() {
        "ntfs" => FilesystemType::Ntfs,
        "fat" => FilesystemType::Fat,
        "exfat" => FilesystemType::Exfat,
        "refs" => FilesystemType::Refs,
        "cdfs" => FilesystemType::Cdfs,
        "udfs" => FilesystemType::Udfs,
        "mup" => FilesystemType::Mup,
        "npfs" => FilesystemType::Npfs,
        "msfs" => FilesystemType::Msfs,
        "raw" => FilesystemType::Raw,
        "lanman" => FilesystemType::Lanman,
        _ => return None,
    };
    Some(t)
}

/// A lower-case copy of a short ASCII word, without allocation.
trait LowerFixed {
    fn to_ascii_lowercase_fixed(&self) -> Lowered;
}

struct Lowered {
    bytes: [u8; 16],
    len: usize,
}

impl Lowered {
    fn as_str(&self) -> &str {
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl LowerFixed for str {
    fn to_ascii_lowercase_fixed(&self) -> Lowered {
        let mut out = Lowered { bytes: [0; 16], len: 0 };
        if self.len() > out.bytes.len() {
            return out;
        }
        for (slot, b) in out.bytes.iter_mut().zip(self.bytes()) {
            *slot = b.to_ascii_lowercase();
        }
        out.len = self.len();
        out
    }
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
    match operations.map(str::trim) {
        None | Some("") => r = r.every_operation(true, post),
        Some(v) if v.eq_ignore_ascii_case("all") => r = r.every_operation(true, post),
        Some(v) => {
            for item in words(v, ',') {
                let (name, flags) = match item.split_once(':') {
                    Some((n, f)) => (n.trim(), Some(f)),
                    None => (item, None),
                };
                let major = operation_by_name(name).ok_or(ParseError::UnknownOperation)?;
                let mut op = Operation::new(major).pre();
                if post && major != MajorFunction::Shutdown {
                    op = op.post();
                }
                for flag in flags.map(|f| words(f, '|')).into_iter().flatten() {
                    let skip = match flag.to_ascii_lowercase_fixed().as_str() {
                        "paging" => OperationFlags::SKIP_PAGING_IO,
                        "cached" => OperationFlags::SKIP_CACHED_IO,
                        "noncached" => OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO,
                        "nondasd" => OperationFlags::SKIP_NON_DASD_IO,
                        _ => return Err(ParseError::UnknownWord { parameter: "Operations" }),
                    };
                    op = op.skip(skip);
                }
                r = r.operation(op);
            }
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
    let mut parts = text.split_whitespace();
    let action = parts.next().ok_or(ParseError::MalformedRule)?;
    let operation = parts.next().ok_or(ParseError::MalformedRule)?;
    let pattern = parts.next().unwrap_or("*");
    if parts.next().is_some() {
        return Err(ParseError::MalformedRule);
    }
    let (verb, argument) = match action.split_once(':') {
        Some((v, a)) => (v, Some(a)),
        None => (action, None),
    };
    let action = match (verb.to_ascii_lowercase_fixed().as_str(), argument) {
        ("deny", None) => Action::Deny,
        ("complete", Some(s)) => {
            Action::Complete(Status::from_name(s).ok_or(ParseError::UnknownStatus)?)
        }
        ("pend", Some(ms)) => Action::Pend(ms.parse().map_err(|_| ParseError::BadDelay)?),
        ("pend", None) => Action::Pend(0),
        ("synchronize", None) => Action::Synchronize,
        ("nopost", None) => Action::NoPost,
        ("disallow_fastio", None) => Action::DisallowFastIo,
        _ => return Err(ParseError::UnknownAction),
    };
    let major = if operation == "*" {
        None
    } else {
        Some(operation_by_name(operation).ok_or(ParseError::UnknownOperation)?)
    };
    let mut rule =
        Rule { action, major, pattern: [0; PATTERN_CAPACITY], pattern_len: pattern.len() };
    rule.pattern
        .get_mut(..pattern.len())
        .ok_or(ParseError::PatternTooLong)?
        .copy_from_slice(pattern.as_bytes());
    Ok(rule)
}

impl Probe {
    /// Parses the probe's configuration from its parameters.
    pub fn from_parameters(p: &dyn ServiceParameters) -> core::result::Result<Probe, ParseError> {
        let mut buf = [0u8; 512];
        let devices = match p.string("Attach", &mut buf) {
            None => DeviceSet::ALL,
            Some(v) => {
                let mut set = DeviceSet {
                    disk: false,
                    cdrom: false,
                    network: false,
                    pipe: false,
                    mailslot: false,
                };
                for w in words(v, ',') {
                    match w.to_ascii_lowercase_fixed().as_str() {
                        "disk" => set.disk = true,
                        "cdrom" => set.cdrom = true,
                        "network" => set.network = true,
                        "pipe" => set.pipe = true,
                        "mailslot" => set.mailslot = true,
                        _ => return Err(ParseError::UnknownWord { parameter: "Attach" }),
                    }
                }
                set
            }
        };
        let filesystems = match p.string("FileSystems", &mut buf) {
            None => None,
            Some(v) if v.trim().eq_ignore_ascii_case("any") => None,
            Some(v) => {
                let mut set = [false; 31];
                for w in words(v, ',') {
                    let t = filesystem_by_name(w)
                        .ok_or(ParseError::UnknownWord { parameter: "FileSystems" })?;
                    if let Some(slot) = set.get_mut(t.raw() as usize) {
                        *slot = true;
                    }
                }
                Some(set)
            }
        };
        let unload = policy(p.string("Unload", &mut buf), "Unload")?;
        let detach = policy(p.string("Detach", &mut buf), "Detach")?;
        let post = p.flag("Post").unwrap_or(true);
        let npfs_msfs = p.flag("SupportNpfsMsfs").unwrap_or(false);
        let notes = p.flag("Notes").unwrap_or(true);
        let registration =
            registration(p.string("Operations", &mut buf), post, unload, detach, npfs_msfs)?;
        let mut rules = [None; MAX_RULES];
        if let Some(v) = p.string("Rules", &mut buf) {
            for (i, text) in words(v, ';').enumerate() {
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
    fn rule_for(&self, op: &PreOperation<'_, ()>) -> Option<(usize, Rule)> {
        self.rules
            .iter()
            .flatten()
            .enumerate()
            .find(|(_, r)| r.applies(op))
            .map(|(i, r)| (i + 1, *r))
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

    fn registration(&self) -> Registration {
        self.registration
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
            let mut text = fsfilter_note::Note::new();
            let _ = fmt::Write::write_fmt(
                &mut text,
                format_args!("probe: rule {number} ({:?}) matched", rule.action),
            );
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

/// Formatting a short note without allocation.
mod fsfilter_note {
    use core::fmt;

    /// A 128-byte text buffer.
    pub(crate) struct Note {
        bytes: [u8; 128],
        len: usize,
    }

    impl Note {
        pub(crate) fn new() -> Note {
            Note { bytes: [0; 128], len: 0 }
        }

        pub(crate) fn as_str(&self) -> &str {
            core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
        }
    }

    impl fmt::Write for Note {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &b in s.as_bytes() {
                let Some(slot) = self.bytes.get_mut(self.len) else { return Ok(()) };
                // Keep the text valid UTF-8 when cut: drop non-ASCII bytes.
                *slot = if b.is_ascii() { b } else { b'?' };
                self.len += 1;
            }
            Ok(())
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
    fn wdk_spellings_and_pre_only() {
        let p =
            probe(&[("Operations", V::String("IRP_MJ_CREATE,shutdown")), ("Post", V::Dword(0))])
                .unwrap();
        let c = p.registration.get(MajorFunction::Create).unwrap();
        assert!(c.pre && !c.post);
        assert!(!p.registration.get(MajorFunction::Shutdown).unwrap().post);
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
