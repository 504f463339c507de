//! redirect: redirects the opens of every name under one prefix to the same name under another
//! prefix, on another volume if need be, by completing the create with `STATUS_REPARSE`: the
//! pattern of Microsoft's SimRep minifilter sample (`filesys/miniFilter/simrep` in
//! microsoft/Windows-driver-samples), written once for both models (rule 27 of
//! docs/callback-model.md, decision 0012).
//!
//! The mapping is two full device paths from the service's `Parameters` key: `OldName`
//! (`\Device\HarddiskVolume1\old`) and `NewName` (`\Device\HarddiskVolume2\new`). In pre-create
//! the filter asks the opened name (`Services::file_name(NameKind::Opened)`, rule 22); when it is
//! the old prefix or continues it at a component boundary (compared without case, as NTFS
//! compares names: `\old` is not a prefix of `\older`), the filter writes the new prefix and the
//! rest of the name into a buffer on its stack ([`MAX_NAME_UNITS`]), replaces the file object's
//! name with it (`Services::replace_file_name`, `IoReplaceFileObjectName` in both models) and
//! completes the create with [`IoStatus::reparse`]. Nothing below sees that create: the I/O
//! manager frees its file object and parses the new name from the root of the namespace, so the
//! open arrives again, as a new create, on the stack of the volume the new name designates.
//!
//! Fast I/O cannot be reparsed, so an `IRP_MJ_NETWORK_QUERY_OPEN` (`FastIoQueryOpen`, the
//! attribute query by name) of a name the filter would redirect is refused
//! (`FLT_PREOP_DISALLOW_FASTIO`): the I/O manager then sends the create IRP, which is redirected.
//!
//! Not redirected (each passes through unchanged): a volume open (no name to replace, and a
//! `STATUS_REPARSE` for one is bugcheck 0xF9); an open by file id (`FILE_OPEN_BY_FILE_ID`: the
//! name is a binary id, not a path); an open with an empty name relative to a handle (it reopens
//! that handle's file, whose own create was redirected or not already); an open whose opened name
//! cannot be had (the name query failed: counted as unnamed); an open whose opened name does not
//! end with the name it was asked with, which is what the Filter Manager gives for an
//! `SL_OPEN_TARGET_DIRECTORY` open (a rename's or a link's target: the parent directory's name,
//! which the framework's header does not flag, and a rename cannot cross volumes anyway); a name
//! whose new spelling does not fit [`MAX_NAME_UNITS`] (counted as too long). Kernel-mode opens are
//! redirected as user-mode ones are: a redirection meant to stand for a reparse point would
//! otherwise show kernel components and programs two different files under one name.
//!
//! The mapping is refused at load (`STATUS_INVALID_PARAMETER`, [`ParseError::Loop`]) when the new
//! name lies under the old one: every redirected name would be redirected again.
//!
//! Mapping to SimRep: its pre-create callback → the pre-create path of [`Redirect::decide`]; its
//! mapping strings read in `DriverEntry` → [`Mapping::from_parameters`]; `IoReplaceFileObjectName`
//! → `Services::replace_file_name`; its network-query-open pre callback returning
//! `FLT_PREOP_DISALLOW_FASTIO` → [`PreOutcome::DisallowFastIo`]. Unlike SimRep this sample maps
//! whole device paths (so across volumes), allocates nothing per operation, and counts what it
//! does ([`Stats`], and a trace note per decision with `Notes`).

#![no_std]
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use fsfilter::{
    Error, Filter, Instance, InstanceSetup, IoStatus, MajorFunction, NameKind, Operation,
    OperationHeader, Parameters, PostFlags, PostOperation, PostOutcome, PreOperation, PreOutcome,
    Registration, Result, ServiceParameters, Services,
};

pub use fsfilter::ParameterDoc;

/// The longest `OldName` or `NewName`, in UTF-16 units: the longest string the backends'
/// registry reader returns.
pub const MAX_PREFIX_UNITS: usize = fsfilter::MAX_STRING_UNITS;

/// The longest name the filter redirects to, in UTF-16 units: the size of the buffer on the
/// kernel stack (1 KiB) where pre-create writes the new name. A longer new name is not built: the
/// open passes through unredirected and is counted ([`Stats::too_long`]).
pub const MAX_NAME_UNITS: usize = 512;

/// `FILE_OPEN_BY_FILE_ID` (wdm.h): the create's name is a file id, not a path.
pub const FILE_OPEN_BY_FILE_ID: u32 = 0x2000;

/// `\`.
const SEP: u16 = b'\\' as u16;

/// The spelling every `OldName` starts with: the opened name the filter compares it with is
/// always the volume's device name and the path (`\Device\HarddiskVolume1\...`,
/// `\Device\Mup\...`).
const DEVICE: &str = "\\Device\\";

/// The redirect sample's parameters.
pub const PARAMETERS: &[ParameterDoc] = &[
    ParameterDoc {
        name: "OldName",
        kind: "REG_SZ",
        default: "(required)",
        description: "The prefix redirected: a full device path (\\Device\\HarddiskVolume1\\old). An open of it or of a name under it (compared without case, at a component boundary) is redirected.",
    },
    ParameterDoc {
        name: "NewName",
        kind: "REG_SZ",
        default: "(required)",
        description: "What replaces OldName in a redirected name: a full object-manager path (\\Device\\HarddiskVolume2\\new, or a drive letter's DOS device path), which may name another volume; not under OldName.",
    },
    ParameterDoc {
        name: "Notes",
        kind: "REG_DWORD",
        default: "1",
        description: "1 adds a trace note for each redirection and each refusal.",
    },
];

/// Why the parameters could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// `OldName` is absent, not a string, longer than [`MAX_PREFIX_UNITS`], or not a device
    /// path under `\Device\`.
    OldName,
    /// `NewName` is absent, not a string, longer than [`MAX_PREFIX_UNITS`], or not a full path
    /// (starting with `\`).
    NewName,
    /// `NewName` is `OldName` or lies under it: every redirected name would be redirected again.
    Loop,
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ParseError::OldName => {
                "OldName: a device path under \\Device\\ of at most 255 characters is required"
            }
            ParseError::NewName => {
                "NewName: a full path (starting with \\) of at most 255 characters is required"
            }
            ParseError::Loop => {
                "NewName lies under OldName: every redirected name would be redirected again"
            }
        })
    }
}

/// One character of a name as NTFS compares names: through its upcase table
/// (`fsfilter::text::upcase_char`); a surrogate compares as it is.
fn fold(unit: u16) -> u16 {
    match char::from_u32(u32::from(unit)) {
        Some(c) => fsfilter::text::upcase_char(c) as u32 as u16,
        None => unit,
    }
}

/// Whether `a` and `b` are the same name but for case.
fn same_ignoring_case(a: &[u16], b: &[u16]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || fold(*x) == fold(*y))
}

/// Where the rest of `name` starts when `name` is `prefix` or continues it at a component
/// boundary (the next character is `\`), compared without case; `None` otherwise
/// (`\old` is a prefix of `\old` and `\old\a`, not of `\older`).
pub fn under(name: &[u16], prefix: &[u16]) -> Option<usize> {
    let head = name.get(..prefix.len())?;
    if prefix.is_empty() || !same_ignoring_case(head, prefix) {
        return None;
    }
    match name.get(prefix.len()) {
        None | Some(&SEP) => Some(prefix.len()),
        Some(_) => None,
    }
}

/// A prefix of the mapping, in UTF-16, without a trailing separator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    units: [u16; MAX_PREFIX_UNITS],
    len: usize,
}

impl Prefix {
    /// `text` as a full path: `None` when it is longer than [`MAX_PREFIX_UNITS`], does not start
    /// with `\`, or is nothing but separators. Trailing separators are dropped (`\a\b\` is
    /// `\a\b`).
    pub fn parse(text: &str) -> Option<Prefix> {
        let mut units = [0u16; MAX_PREFIX_UNITS];
        let mut len = 0;
        for u in text.encode_utf16() {
            *units.get_mut(len)? = u;
            len += 1;
        }
        let mut prefix = Prefix { units, len };
        while prefix.units().last() == Some(&SEP) {
            prefix.len -= 1;
        }
        (prefix.units().first() == Some(&SEP)).then_some(prefix)
    }

    /// The units.
    pub fn units(&self) -> &[u16] {
        self.units.get(..self.len).unwrap_or(&[])
    }
}

/// What the mapping makes of a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// The name is not under the old prefix.
    Outside,
    /// The new name: this many units of the output buffer.
    Name(usize),
    /// The name is under the old prefix, but its new spelling is longer than the output buffer.
    TooLong,
}

/// The mapping: an old prefix and the new one that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    old: Prefix,
    new: Prefix,
}

impl Mapping {
    /// The mapping from `old` to `new`; refused when `old` is not a device path under
    /// `\Device\`, `new` is not a full path, or `new` is `old` or lies under it.
    pub fn new(old: &str, new: &str) -> core::result::Result<Mapping, ParseError> {
        let old = Prefix::parse(old).ok_or(ParseError::OldName)?;
        let device: [u16; DEVICE.len()] = {
            let mut d = [0u16; DEVICE.len()];
            for (slot, u) in d.iter_mut().zip(DEVICE.encode_utf16()) {
                *slot = u;
            }
            d
        };
        let named_device =
            old.units().get(..device.len()).is_some_and(|h| same_ignoring_case(h, &device));
        if !named_device || old.len <= device.len() {
            return Err(ParseError::OldName);
        }
        let new = Prefix::parse(new).ok_or(ParseError::NewName)?;
        if under(new.units(), old.units()).is_some() {
            return Err(ParseError::Loop);
        }
        Ok(Mapping { old, new })
    }

    /// Reads `OldName` and `NewName` (UTF-8 in the registry reader's buffer: at most three bytes
    /// per UTF-16 unit).
    pub fn from_parameters(p: &dyn ServiceParameters) -> core::result::Result<Mapping, ParseError> {
        let mut old = [0u8; 3 * MAX_PREFIX_UNITS];
        let mut new = [0u8; 3 * MAX_PREFIX_UNITS];
        let old = p.string("OldName", &mut old).ok_or(ParseError::OldName)?;
        let new = p.string("NewName", &mut new).ok_or(ParseError::NewName)?;
        Mapping::new(old, new)
    }

    /// The old prefix.
    pub fn old(&self) -> &[u16] {
        self.old.units()
    }

    /// The new prefix.
    pub fn new_prefix(&self) -> &[u16] {
        self.new.units()
    }

    /// How long `name`'s new spelling is: `None` when `name` is not under the old prefix.
    pub fn mapped_len(&self, name: &[u16]) -> Option<usize> {
        let start = under(name, self.old())?;
        Some(self.new.len + (name.len() - start))
    }

    /// Writes `name`'s new spelling (the new prefix, then what follows the old prefix in
    /// `name`) to the start of `out`.
    pub fn map(&self, name: &[u16], out: &mut [u16]) -> Mapped {
        let Some(start) = under(name, self.old()) else { return Mapped::Outside };
        let rest = name.get(start..).unwrap_or(&[]);
        let total = self.new.len + rest.len();
        if total > out.len() {
            return Mapped::TooLong;
        }
        for (slot, u) in out.iter_mut().zip(self.new_prefix().iter().chain(rest)) {
            *slot = *u;
        }
        Mapped::Name(total)
    }
}

/// What the filter counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Creates completed with `STATUS_REPARSE` after their name was replaced.
    pub redirected: u64,
    /// Network query opens of a name that would be redirected, refused as fast I/O.
    pub fast_io_refused: u64,
    /// Names under the old prefix whose new spelling does not fit [`MAX_NAME_UNITS`]: passed
    /// through unredirected.
    pub too_long: u64,
    /// Creates whose name could not be replaced (`replace_file_name` failed): failed with its
    /// status, so that the old name is never opened in the new one's place.
    pub failed: u64,
    /// Opens whose opened name could not be had: passed through.
    pub unnamed: u64,
}

/// Indices into `Redirect::counters`, in [`Stats`]' order.
mod counter {
    pub(crate) const REDIRECTED: usize = 0;
    pub(crate) const FAST_IO_REFUSED: usize = 1;
    pub(crate) const TOO_LONG: usize = 2;
    pub(crate) const FAILED: usize = 3;
    pub(crate) const UNNAMED: usize = 4;
}

/// The trace notes, one per decision (with `Notes`).
pub mod notes {
    /// A create's name was replaced and the create completed with `STATUS_REPARSE`.
    pub const REDIRECTED: &str = "redirect: name replaced, create completed with STATUS_REPARSE";
    /// A network query open of a name the filter redirects was refused as fast I/O.
    pub const FAST_IO_REFUSED: &str = "redirect: fast I/O query open disallowed, the IRP follows";
    /// A name under the old prefix whose new spelling does not fit the buffer.
    pub const TOO_LONG: &str = "redirect: new name too long, not redirected";
    /// `replace_file_name` failed: the create fails with its status.
    pub const FAILED: &str = "redirect: name not replaced, create failed";
    /// The opened name could not be had.
    pub const UNNAMED: &str = "redirect: no opened name, not redirected";
}

/// The registration: pre-create and pre network query open, no post callbacks.
pub const REGISTRATION: Registration = Registration::new()
    .operation(Operation::new(MajorFunction::Create).pre())
    .operation(Operation::new(MajorFunction::NetworkQueryOpen).pre())
    .validated();

/// What pre-create (or a network query open) decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a name the filter redirects: pass it through.
    Pass,
    /// Redirected: complete the create with `STATUS_REPARSE`.
    Redirected,
    /// A network query open of a name the filter would redirect: refuse the fast I/O.
    RefuseFastIo,
    /// The name could not be replaced: fail the create with this error.
    Failed(Error),
}

/// The redirect filter.
#[derive(Debug)]
pub struct Redirect {
    mapping: Mapping,
    notes: bool,
    counters: [AtomicU64; 5],
}

impl Redirect {
    /// A filter redirecting by `mapping`; `notes` adds a trace note per decision.
    pub const fn new(mapping: Mapping, notes: bool) -> Redirect {
        Redirect { mapping, notes, counters: [const { AtomicU64::new(0) }; 5] }
    }

    /// Reads the parameters (`OldName`, `NewName`, `Notes`).
    pub fn from_parameters(
        p: &dyn ServiceParameters,
    ) -> core::result::Result<Redirect, ParseError> {
        let mapping = Mapping::from_parameters(p)?;
        Ok(Redirect::new(mapping, p.dword("Notes").is_none_or(|v| v != 0)))
    }

    /// The mapping.
    pub const fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Whether each decision adds a trace note.
    pub const fn notes(&self) -> bool {
        self.notes
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let v = |i: usize| self.counters.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        Stats {
            redirected: v(counter::REDIRECTED),
            fast_io_refused: v(counter::FAST_IO_REFUSED),
            too_long: v(counter::TOO_LONG),
            failed: v(counter::FAILED),
            unnamed: v(counter::UNNAMED),
        }
    }

    /// Counts one event and, with `Notes`, says so in a trace note (`redirect: ...`).
    fn report(&self, services: &dyn Services, i: usize, note: &'static str) {
        if let Some(c) = self.counters.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if self.notes {
            services.note(note);
        }
    }

    /// Whether the create `h` names a file the filter may redirect at all: not a volume open,
    /// not an open by file id, with a name.
    fn may_redirect(h: &OperationHeader<'_>) -> bool {
        let by_id = match h.parameters {
            Parameters::Create(c) => c.create_options() & FILE_OPEN_BY_FILE_ID != 0,
            _ => false,
        };
        !h.volume_open && !by_id && h.file_name.is_some_and(|n| !n.is_empty())
    }

    /// The decision for the create or network query open described by `h`, whose services are
    /// `services` (at `PASSIVE_LEVEL`: pre-create, and the query open's fast I/O).
    pub fn decide(&self, h: &OperationHeader<'_>, services: &dyn Services) -> Decision {
        if !Redirect::may_redirect(h) {
            return Decision::Pass;
        }
        let query_open = h.major == MajorFunction::NetworkQueryOpen;
        let info = match services.file_name(NameKind::Opened) {
            Ok(info) => info,
            // Without its name the query open cannot be told apart from a redirected one: the
            // IRP that follows a refusal is asked again, in pre-create.
            Err(_) if query_open => return self.refuse_fast_io(services),
            Err(_) => {
                self.report(services, counter::UNNAMED, notes::UNNAMED);
                return Decision::Pass;
            }
        };
        let name = info.name().units();
        // An SL_OPEN_TARGET_DIRECTORY open's opened name is its parent directory's: it does not
        // end with the name the create asked for, and is not redirected.
        let asked = h.file_name.map_or(&[][..], |n| n.units());
        if !name.ends_with(asked) {
            return Decision::Pass;
        }
        if query_open {
            return match self.mapping.mapped_len(name) {
                Some(len) if len <= MAX_NAME_UNITS => self.refuse_fast_io(services),
                _ => Decision::Pass,
            };
        }
        let mut out = [0u16; MAX_NAME_UNITS];
        match self.mapping.map(name, &mut out) {
            Mapped::Outside => Decision::Pass,
            Mapped::TooLong => {
                self.report(services, counter::TOO_LONG, notes::TOO_LONG);
                Decision::Pass
            }
            Mapped::Name(len) => {
                let new = out.get(..len).unwrap_or(&[]);
                match services.replace_file_name(new) {
                    Ok(()) => {
                        self.report(services, counter::REDIRECTED, notes::REDIRECTED);
                        Decision::Redirected
                    }
                    Err(e) => {
                        self.report(services, counter::FAILED, notes::FAILED);
                        Decision::Failed(e)
                    }
                }
            }
        }
    }

    fn refuse_fast_io(&self, services: &dyn Services) -> Decision {
        self.report(services, counter::FAST_IO_REFUSED, notes::FAST_IO_REFUSED);
        Decision::RefuseFastIo
    }
}

impl Filter for Redirect {
    const REGISTRATION: Registration = REGISTRATION;
    const NAME_QUERIES: bool = true;
    const REPARSES: bool = true;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Redirect> {
        Redirect::from_parameters(parameters).map_err(|_| Error::INVALID_PARAMETER)
    }

    fn instance_setup(&self, _setup: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        op: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        if !matches!(op.major(), MajorFunction::Create | MajorFunction::NetworkQueryOpen) {
            return PreOutcome::NoPost;
        }
        // `decide` redirects and fails only creates, and refuses only query opens.
        match self.decide(op.header(), op.services()) {
            Decision::Pass => PreOutcome::NoPost,
            Decision::Redirected => PreOutcome::Complete(IoStatus::reparse()),
            Decision::RefuseFastIo => PreOutcome::DisallowFastIo,
            Decision::Failed(e) => PreOutcome::Complete(IoStatus::new(e.status())),
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

    extern crate std;

    use super::*;
    use fsfilter::testing::{self, FakeServices};
    use fsfilter::{
        CreateParameters, FileName, IrpFlags, ParameterList, ParameterValue as V, Status,
    };
    use std::string::String;
    use std::vec::Vec;

    const OLD: &str = r"\Device\HarddiskVolume1\old";
    const NEW: &str = r"\Device\HarddiskVolume2\new";

    fn u(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn text(units: &[u16]) -> String {
        String::from_utf16(units).unwrap()
    }

    fn mapping() -> Mapping {
        Mapping::new(OLD, NEW).unwrap()
    }

    /// `name` through the mapping, as text; `None` outside it.
    fn mapped(m: &Mapping, name: &str) -> Option<String> {
        let mut out = [0u16; MAX_NAME_UNITS];
        match m.map(&u(name), &mut out) {
            Mapped::Name(n) => Some(text(&out[..n])),
            Mapped::Outside => None,
            Mapped::TooLong => panic!("{name}: too long"),
        }
    }

    #[test]
    fn names_under_the_old_prefix_take_the_new_one() {
        let m = mapping();
        let v1 = r"\Device\HarddiskVolume1";
        assert_eq!(mapped(&m, &[OLD, r"\a.txt"].concat()), Some([NEW, r"\a.txt"].concat()));
        assert_eq!(mapped(&m, &[OLD, r"\d\e\f.txt"].concat()), Some([NEW, r"\d\e\f.txt"].concat()));
        // The prefix itself (the directory), with and without a trailing separator; a stream.
        assert_eq!(mapped(&m, OLD), Some(NEW.into()));
        assert_eq!(mapped(&m, &[OLD, r"\"].concat()), Some([NEW, r"\"].concat()));
        assert_eq!(mapped(&m, &[OLD, r"\a.txt:s"].concat()), Some([NEW, r"\a.txt:s"].concat()));
        // Outside: another directory, another volume, the parent, a shorter name.
        assert_eq!(mapped(&m, &[v1, r"\other\a.txt"].concat()), None);
        assert_eq!(mapped(&m, r"\Device\HarddiskVolume2\old\a.txt"), None);
        assert_eq!(mapped(&m, &[v1, r"\"].concat()), None);
        assert_eq!(mapped(&m, r"\Device"), None);
        assert_eq!(mapped(&m, ""), None);
    }

    #[test]
    fn the_prefix_ends_at_a_component_boundary() {
        let m = mapping();
        let v1 = r"\Device\HarddiskVolume1";
        for name in [r"\older", r"\older\a.txt", r"\old.txt", r"\old:stream", r"\old_"] {
            assert_eq!(mapped(&m, &[v1, name].concat()), None, "{name}");
        }
        assert_eq!(under(&u(r"\a\old\x"), &u(r"\a\old")), Some(6));
        assert_eq!(under(&u(r"\a\older"), &u(r"\a\old")), None);
        assert_eq!(under(&u(r"\a\old"), &u(r"\a\old")), Some(6));
        assert_eq!(under(&u(r"\a"), &[]), None, "an empty prefix matches nothing");
    }

    #[test]
    fn names_compare_without_case_as_ntfs_does() {
        let m = mapping();
        // The rest keeps the case it was asked with; the new prefix is the parameter's.
        assert_eq!(
            mapped(&m, r"\DEVICE\harddiskvolume1\OLD\Mixed.TXT"),
            Some([NEW, r"\Mixed.TXT"].concat())
        );
        // Latin-1 and Cyrillic through the upcase table; dotless i is not an i (NTFS).
        let m = Mapping::new(r"\Device\HarddiskVolume1\été\Юг", NEW).unwrap();
        assert_eq!(mapped(&m, r"\Device\HarddiskVolume1\ÉTÉ\юг\x"), Some([NEW, r"\x"].concat()));
        let m = Mapping::new(r"\Device\HarddiskVolume1\file", NEW).unwrap();
        assert_eq!(mapped(&m, r"\Device\HarddiskVolume1\fıle\x"), None);
        // A surrogate pair compares exactly.
        let m = Mapping::new(r"\Device\HarddiskVolume1\😀", NEW).unwrap();
        assert_eq!(mapped(&m, r"\Device\HarddiskVolume1\😀\x"), Some([NEW, r"\x"].concat()));
    }

    #[test]
    fn a_new_name_too_long_for_the_buffer_is_not_built() {
        let m = mapping();
        let fits = MAX_NAME_UNITS - NEW.len() - 1;
        let name = [OLD, r"\", &"a".repeat(fits)].concat();
        let mut out = [0u16; MAX_NAME_UNITS];
        assert_eq!(m.map(&u(&name), &mut out), Mapped::Name(MAX_NAME_UNITS));
        assert_eq!(m.mapped_len(&u(&name)), Some(MAX_NAME_UNITS));
        let name = [OLD, r"\", &"a".repeat(fits + 1)].concat();
        let before = out;
        assert_eq!(m.map(&u(&name), &mut out), Mapped::TooLong);
        assert_eq!(out, before, "nothing written");
        assert_eq!(m.mapped_len(&u(&name)), Some(MAX_NAME_UNITS + 1));
        assert_eq!(m.map(&u(&name), &mut []), Mapped::TooLong);
    }

    fn load(values: &[(&str, V<'_>)]) -> core::result::Result<Redirect, ParseError> {
        Redirect::from_parameters(&ParameterList { service: "Redirect", values })
    }

    #[test]
    fn a_mapping_whose_new_name_lies_under_the_old_one_is_refused_at_load() {
        let pair = |old: &'static str, new: &'static str| {
            load(&[("OldName", V::String(old)), ("NewName", V::String(new))]).map(|r| r.mapping)
        };
        for new in [
            OLD,
            r"\Device\HarddiskVolume1\old\",
            r"\DEVICE\HARDDISKVOLUME1\OLD",
            r"\Device\HarddiskVolume1\old\new",
            r"\device\harddiskvolume1\Old\a\b\c",
        ] {
            assert_eq!(pair(OLD, new), Err(ParseError::Loop), "{new}");
        }
        // Beside it, above it, on another volume: no loop.
        for new in [
            r"\Device\HarddiskVolume1\older",
            r"\Device\HarddiskVolume1",
            r"\Device\HarddiskVolume1\o",
            NEW,
            r"\??\D:\new",
        ] {
            assert!(pair(OLD, new).is_ok(), "{new}");
        }
        // And the refusal reaches DriverEntry as STATUS_INVALID_PARAMETER, with a message.
        let values = [("OldName", V::String(OLD)), ("NewName", V::String(OLD))];
        let r = <Redirect as Filter>::load(&ParameterList { service: "Redirect", values: &values });
        assert_eq!(r.err(), Some(Error::INVALID_PARAMETER));
        assert!(std::format!("{}", ParseError::Loop).contains("NewName lies under OldName"));
    }

    #[test]
    fn parameters() {
        let both = |old: &'static str, new: &'static str| {
            load(&[("OldName", V::String(old)), ("NewName", V::String(new))]).map(|r| r.mapping)
        };
        let m = both([OLD, r"\\"].concat().leak(), [NEW, r"\"].concat().leak()).unwrap();
        assert_eq!((text(m.old()), text(m.new_prefix())), (OLD.into(), NEW.into()));
        // OldName: a device path under \Device\ (the opened name is always one).
        for old in [r"C:\old", r"\old", r"\??\C:\old", r"\Device\", r"\Device", "", r"\\"] {
            assert_eq!(both(old, NEW), Err(ParseError::OldName), "{old}");
        }
        // NewName: a full path.
        for new in [r"D:\new", "new", "", r"\"] {
            assert_eq!(both(OLD, new), Err(ParseError::NewName), "{new}");
        }
        assert_eq!(load(&[("NewName", V::String(NEW))]).err(), Some(ParseError::OldName));
        assert_eq!(load(&[("OldName", V::String(OLD))]).err(), Some(ParseError::NewName));
        assert_eq!(
            load(&[("OldName", V::Dword(1)), ("NewName", V::String(NEW))]).err(),
            Some(ParseError::OldName)
        );
        // At most 255 units, non-ASCII ones included (3 UTF-8 bytes each).
        let long = |n: usize| [r"\Device\", &"é".repeat(n - 8)].concat().leak() as &'static str;
        assert!(both(long(MAX_PREFIX_UNITS), NEW).is_ok());
        assert_eq!(both(long(MAX_PREFIX_UNITS + 1), NEW), Err(ParseError::OldName));
        // Notes: on unless 0.
        let notes = |v: Option<u32>| {
            let mut values = std::vec![("OldName", V::String(OLD)), ("NewName", V::String(NEW))];
            values.extend(v.map(|v| ("Notes", V::Dword(v))));
            load(&values).unwrap().notes()
        };
        assert_eq!((notes(None), notes(Some(1)), notes(Some(0))), (true, true, false));
        let names: Vec<_> = PARAMETERS.iter().map(|d| d.name).collect();
        assert_eq!(names, ["OldName", "NewName", "Notes"]);
        const {
            assert!(fsfilter::reparses::<Redirect>() && fsfilter::queries_names::<Redirect>());
        };
    }

    /// Services whose opened name is `opened` (or none: `STATUS_FLT_INVALID_NAME_REQUEST`),
    /// recording the replaced name and the notes.
    fn fake(opened: Option<&'static str>) -> FakeServices<'static> {
        let f = FakeServices::new().refusing_cancel(Error::INVALID_PARAMETER);
        match opened {
            Some(name) => f.named(name),
            None => f.refusing_names(Error::FLT_INVALID_NAME_REQUEST),
        }
    }

    fn header(
        major: MajorFunction,
        asked: &'static [u16],
        options: u32,
        volume_open: bool,
    ) -> OperationHeader<'static> {
        let fast = major == MajorFunction::NetworkQueryOpen;
        OperationHeader {
            irp_flags: IrpFlags::SYNCHRONOUS_API,
            file_name: Some(FileName::new(asked)),
            volume_open,
            parameters: Parameters::Create(CreateParameters {
                desired_access: 0x12_0089,
                options: (1 << 24) | options,
                ..CreateParameters::default()
            }),
            ..if fast { testing::fast_io(major) } else { testing::irp(major) }
        }
    }

    fn redirect() -> Redirect {
        Redirect::new(mapping(), true)
    }

    /// The pre callback's outcome, as its WDK name and completion status.
    /// Only opened names are asked for.
    fn pre(
        r: &Redirect,
        h: OperationHeader<'static>,
        services: &FakeServices<'_>,
    ) -> (&'static str, Status) {
        let outcome = testing::pre(r, &testing::instance(), h, services);
        assert!(services.names_asked().iter().all(|kind| *kind == NameKind::Opened));
        let status = match &outcome {
            PreOutcome::Complete(io) => {
                if io.status == Status::REPARSE {
                    assert_eq!(io.information, fsfilter::reparse::IO_REPARSE);
                }
                io.status
            }
            _ => Status::SUCCESS,
        };
        (outcome.wdk_name(), status)
    }

    /// The file object's name of an absolute open of `path` on the volume: `path` itself.
    fn asked(path: &str) -> &'static [u16] {
        u(path).leak()
    }

    fn create(r: &Redirect, path: &str, f: &FakeServices<'_>) -> (&'static str, Status) {
        pre(r, header(MajorFunction::Create, asked(path), 0, false), f)
    }

    #[test]
    fn a_create_under_the_old_prefix_is_renamed_and_completed_with_status_reparse() {
        let r = redirect();
        let f = fake(Some(r"\Device\HarddiskVolume1\old\d\a.txt"));
        assert_eq!(create(&r, r"\old\d\a.txt", &f), ("FLT_PREOP_COMPLETE", Status::REPARSE));
        let new = r"\Device\HarddiskVolume2\new\d\a.txt";
        assert_eq!(f.replaced().as_deref(), Some(new));
        assert_eq!(f.notes(), [notes::REDIRECTED]);
        assert_eq!(r.stats(), Stats { redirected: 1, ..Stats::default() });
        // A relative open (`d\a.txt` beside a handle on \old): the opened name is whole.
        let f = fake(Some(r"\Device\HarddiskVolume1\old\d\a.txt"));
        assert_eq!(create(&r, r"d\a.txt", &f).1, Status::REPARSE);
        assert_eq!(r.stats().redirected, 2);
    }

    #[test]
    fn names_outside_the_mapping_pass_through_untouched() {
        let r = redirect();
        for (path, opened) in [
            (r"\older\a.txt", r"\Device\HarddiskVolume1\older\a.txt"),
            (r"\a.txt", r"\Device\HarddiskVolume1\a.txt"),
            (r"\new\a.txt", r"\Device\HarddiskVolume2\new\a.txt"),
            (r"\old\a.txt", r"\Device\HarddiskVolume3\old\a.txt"),
        ] {
            let f = fake(Some(opened));
            assert_eq!(create(&r, path, &f), ("FLT_PREOP_SUCCESS_NO_CALLBACK", Status::SUCCESS));
            assert_eq!(f.replaced(), None, "{opened}");
            assert!(f.notes().is_empty());
        }
        assert_eq!(r.stats(), Stats::default());
    }

    #[test]
    fn volume_opens_opens_by_id_and_target_directory_opens_are_not_redirected() {
        let r = redirect();
        let pass = ("FLT_PREOP_SUCCESS_NO_CALLBACK", Status::SUCCESS);
        // A volume open: no name at all; not even asked.
        let f = fake(Some(r"\Device\HarddiskVolume1"));
        assert_eq!(pre(&r, header(MajorFunction::Create, &[], 0, true), &f), pass);
        // By file id: the name is eight bytes of id.
        let f = fake(Some(OLD));
        let id = header(MajorFunction::Create, asked("\u{1}\u{0}\u{0}\u{0}"), 0x2000, false);
        assert_eq!(pre(&r, id, &f), pass);
        assert_eq!(f.names_asked().len(), 0);
        // SL_OPEN_TARGET_DIRECTORY: the opened name is the parent's, which does not end with the
        // name asked for.
        let f = fake(Some(OLD));
        assert_eq!(create(&r, r"\old\renamed.txt", &f), pass);
        assert_eq!((f.names_asked().len(), f.replaced()), (1, None));
        // No opened name (the query failed): passed and counted.
        let f = fake(None);
        assert_eq!(create(&r, r"\old\a.txt", &f), pass);
        assert_eq!(f.notes(), [notes::UNNAMED]);
        assert_eq!(r.stats(), Stats { unnamed: 1, ..Stats::default() });
    }

    #[test]
    fn a_name_too_long_to_redirect_passes_and_is_counted() {
        let r = redirect();
        let tail: &'static str = ["\\", &"a".repeat(MAX_NAME_UNITS)].concat().leak();
        let opened: &'static str = [OLD, tail].concat().leak();
        let f = fake(Some(opened));
        let path = [r"\old", tail].concat();
        assert_eq!(create(&r, &path, &f), ("FLT_PREOP_SUCCESS_NO_CALLBACK", Status::SUCCESS));
        assert_eq!(f.replaced(), None);
        assert_eq!(f.notes(), [notes::TOO_LONG]);
        assert_eq!(r.stats(), Stats { too_long: 1, ..Stats::default() });
        // A query open of it is not refused: its IRP would not be redirected either.
        let f = fake(Some(opened));
        let h = header(MajorFunction::NetworkQueryOpen, u(&path).leak(), 0, false);
        assert_eq!(pre(&r, h, &f).0, "FLT_PREOP_SUCCESS_NO_CALLBACK");
    }

    #[test]
    fn a_name_that_cannot_be_replaced_fails_the_create() {
        let r = redirect();
        let f = fake(Some(r"\Device\HarddiskVolume1\old\a.txt"))
            .refusing_replace(Error::INSUFFICIENT_RESOURCES);
        assert_eq!(
            create(&r, r"\old\a.txt", &f),
            ("FLT_PREOP_COMPLETE", Status::INSUFFICIENT_RESOURCES)
        );
        assert_eq!(f.notes(), [notes::FAILED]);
        assert_eq!(r.stats(), Stats { failed: 1, ..Stats::default() });
    }

    #[test]
    fn a_query_open_of_a_redirected_name_is_refused_as_fast_io() {
        let r = redirect();
        let query = |path: &str| header(MajorFunction::NetworkQueryOpen, asked(path), 0, false);
        let f = fake(Some(r"\Device\HarddiskVolume1\old\a.txt"));
        assert_eq!(pre(&r, query(r"\old\a.txt"), &f).0, "FLT_PREOP_DISALLOW_FASTIO");
        assert_eq!(f.replaced(), None, "fast I/O is never reparsed");
        assert_eq!(f.notes(), [notes::FAST_IO_REFUSED]);
        let f = fake(Some(r"\Device\HarddiskVolume1\older\a.txt"));
        assert_eq!(pre(&r, query(r"\older\a.txt"), &f).0, "FLT_PREOP_SUCCESS_NO_CALLBACK");
        // Without its name it cannot be told apart from a redirected one: the IRP decides.
        let f = fake(None);
        assert_eq!(pre(&r, query(r"\old\a.txt"), &f).0, "FLT_PREOP_DISALLOW_FASTIO");
        assert_eq!(r.stats(), Stats { fast_io_refused: 2, ..Stats::default() });
    }

    #[test]
    fn without_notes_nothing_is_said_but_everything_is_counted() {
        let r = Redirect::new(mapping(), false);
        let f = fake(Some(r"\Device\HarddiskVolume1\old\a.txt"));
        assert_eq!(create(&r, r"\old\a.txt", &f).1, Status::REPARSE);
        assert!(f.notes().is_empty());
        assert_eq!(r.stats().redirected, 1);
    }
}
