//! The registration: which operations a filter sees, with which skip flags and which of its
//! callbacks exist. Const data, validated when the constant is evaluated (facts.md §3).
//!
//! ```
//! use fsfilter::{MajorFunction, Operation, OperationFlags, Registration};
//!
//! const REGISTRATION: Registration = Registration::new()
//!     .operation(Operation::new(MajorFunction::Create).pre().post())
//!     .operation(Operation::new(MajorFunction::Read).pre().skip(OperationFlags::SKIP_PAGING_IO))
//!     .operation(Operation::new(MajorFunction::Shutdown).pre())
//!     .unload_callback(true)
//!     .validated();
//! assert_eq!(REGISTRATION.operations().len(), 3);
//! ```
//!
//! Registering an operation that file systems never receive does not compile:
//!
//! ```compile_fail,E0080
//! use fsfilter::{MajorFunction, Operation, Registration};
//! const R: Registration =
//!     Registration::new().operation(Operation::new(MajorFunction::Power).pre()).validated();
//! ```
//!
//! ```compile_fail,E0080
//! use fsfilter::{MajorFunction, Operation, Registration};
//! const R: Registration =
//!     Registration::new().operation(Operation::new(MajorFunction::DeviceChange).post()).validated();
//! ```
//!
//! Nor does a code that is no operation at all:
//!
//! ```compile_fail,E0080
//! use fsfilter::{MajorFunction, Operation, Registration};
//! const R: Registration =
//!     Registration::new().operation(Operation::new(MajorFunction::Unknown(0x40)).pre()).validated();
//! ```
//!
//! Nor does a post callback for `IRP_MJ_SHUTDOWN`:
//!
//! ```compile_fail,E0080
//! use fsfilter::{MajorFunction, Operation, Registration};
//! const R: Registration =
//!     Registration::new().operation(Operation::new(MajorFunction::Shutdown).pre().post()).validated();
//! ```
//!
//! Nor an operation registered twice:
//!
//! ```compile_fail,E0080
//! use fsfilter::{MajorFunction, Operation, Registration};
//! const R: Registration = Registration::new()
//!     .operation(Operation::new(MajorFunction::Read).pre())
//!     .operation(Operation::new(MajorFunction::Read).post())
//!     .validated();
//! ```
//!
//! Nor an entry without a callback:
//!
//! ```compile_fail,E0080
//! use fsfilter::{MajorFunction, Operation, Registration};
//! const R: Registration =
//!     Registration::new().operation(Operation::new(MajorFunction::Read)).validated();
//! ```

use core::fmt;

use crate::flags::{OperationFlags, RegistrationFlags};
use crate::major::{MAX_OPERATIONS, MAX_REGISTERED, MajorFunction, OperationKind};
use crate::operation::OperationHeader;
use crate::slots;

/// One entry of the operation table: `FLT_OPERATION_REGISTRATION` without the function pointers,
/// which the backend supplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The operation.
    pub major: MajorFunction,
    /// Skip flags.
    pub flags: OperationFlags,
    /// A pre-operation callback is registered.
    pub pre: bool,
    /// A post-operation callback is registered.
    pub post: bool,
}

impl Operation {
    /// An entry for `major` with no callbacks and no skip flags yet.
    pub const fn new(major: MajorFunction) -> Operation {
        Operation { major, flags: OperationFlags::empty(), pre: false, post: false }
    }

    /// Registers the pre-operation callback.
    pub const fn pre(mut self) -> Operation {
        self.pre = true;
        self
    }

    /// Registers the post-operation callback.
    pub const fn post(mut self) -> Operation {
        self.post = true;
        self
    }

    /// Adds skip flags.
    pub const fn skip(mut self, flags: OperationFlags) -> Operation {
        self.flags = self.flags.union(flags);
        self
    }

    /// True when any skip flag is set: otherwise [`Operation::skips`] is false whatever the
    /// operation, and a backend need not build a header to ask.
    pub const fn has_skip_flags(&self) -> bool {
        !self.flags.is_empty()
    }

    /// True when the skip flags exclude the operation `header` describes (facts.md §3):
    /// `SKIP_PAGING_IO` skips IRP-based paging I/O (it is ignored for fast I/O and FsFilter
    /// operations); `SKIP_CACHED_IO` skips cached reads and writes, every fast-I/O read and write
    /// included; `SKIP_NON_CACHED_NON_PAGING_IO` skips reads and writes that are neither cached
    /// nor paging; `SKIP_NON_DASD_IO` skips every operation not issued on a volume (DASD) handle.
    pub const fn skips(&self, header: &OperationHeader<'_>) -> bool {
        let f = self.flags;
        let irp = matches!(header.kind, OperationKind::Irp);
        if f.contains(OperationFlags::SKIP_PAGING_IO) && irp && header.is_paging() {
            return true;
        }
        if header.major.is_read_or_write() {
            let cached = header.is_fast_io() || header.is_cached();
            if f.contains(OperationFlags::SKIP_CACHED_IO) && cached {
                return true;
            }
            if f.contains(OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO)
                && irp
                && header.is_noncached()
                && !header.is_paging()
            {
                return true;
            }
        }
        f.contains(OperationFlags::SKIP_NON_DASD_IO) && !header.volume_open
    }

    /// What is wrong with this entry on its own, if anything (facts.md §3).
    pub const fn problem(&self) -> Option<RegistrationError> {
        if self.major.forbidden_reason().is_some() {
            return Some(RegistrationError::Forbidden(self.major));
        }
        if matches!(self.major, MajorFunction::Shutdown) && self.post {
            return Some(RegistrationError::ShutdownPost);
        }
        if !self.pre && !self.post {
            return Some(RegistrationError::NoCallback(self.major));
        }
        None
    }
}

/// Why a registration is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationError {
    /// `IRP_MJ_POWER`, `IRP_MJ_DEVICE_CHANGE` or an unknown code: file systems never receive it.
    Forbidden(MajorFunction),
    /// A post callback for `IRP_MJ_SHUTDOWN`.
    ShutdownPost,
    /// The same operation twice.
    Duplicate(MajorFunction),
    /// An entry with neither callback.
    NoCallback(MajorFunction),
    /// A run-time registration scans data but the filter's `REGISTRATION` does not: the backends
    /// carry the data-scan code only for filters that declare it there.
    DataScanNotDeclared,
    /// A post callback without a pre callback in a filter whose `CompletionContext` is not
    /// zero-sized: no pre callback makes the context the post callback would get
    /// (docs/callback-model.md, rule 6).
    PostOnlyNeedsZeroSizedContext,
}

impl RegistrationError {
    /// The message, as a whole string (a const panic can only show a `&'static str`).
    pub const fn message(self) -> &'static str {
        match self {
            RegistrationError::Forbidden(major) => match major.forbidden_reason() {
                Some(reason) => reason,
                None => "invalid registration: forbidden operation",
            },
            RegistrationError::ShutdownPost => {
                "IRP_MJ_SHUTDOWN cannot have a post-operation callback (facts.md §3)"
            }
            RegistrationError::Duplicate(major) => major.registration_messages().0,
            RegistrationError::NoCallback(major) => major.registration_messages().1,
            RegistrationError::DataScanNotDeclared => {
                "invalid registration: data scanning must be declared in Filter::REGISTRATION"
            }
            RegistrationError::PostOnlyNeedsZeroSizedContext => {
                "invalid registration: a post callback without a pre callback needs a zero-sized \
                 CompletionContext (no pre callback makes one)"
            }
        }
    }
}

impl fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// Which optional callbacks a filter has. An absent callback is registered as NULL, with the
/// Windows meaning of a NULL (facts.md §2.5, §5):
/// no unload callback means the filter can never be unloaded; no query-teardown callback means its
/// instances can never be detached manually; no instance-setup callback means every automatic
/// attachment is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Callbacks {
    /// `InstanceSetupCallback`.
    pub instance_setup: bool,
    /// `InstanceQueryTeardownCallback`.
    pub instance_query_teardown: bool,
    /// `InstanceTeardownStartCallback`.
    pub instance_teardown_start: bool,
    /// `InstanceTeardownCompleteCallback`.
    pub instance_teardown_complete: bool,
    /// `FilterUnloadCallback`.
    pub filter_unload: bool,
    /// `SectionNotificationCallback` (section conflicts, Windows 8).
    pub section_notification: bool,
}

impl Callbacks {
    /// Every optional callback present.
    pub const ALL: Callbacks = Callbacks {
        instance_setup: true,
        instance_query_teardown: true,
        instance_teardown_start: true,
        instance_teardown_complete: true,
        filter_unload: true,
        section_notification: false,
    };
}

/// A filter's registration: the operation table, the registration flags, which optional
/// callbacks exist, and whether it scans data.
///
/// Build it in a `const` with the builder methods and end with [`Registration::validated`], which
/// turns any mistake into a compile error. A registration built at run time (from a service's
/// parameters, as the probe sample does) ends with [`Registration::check`] instead, which returns
/// the error.
#[derive(Clone, Copy)]
pub struct Registration {
    operations: [Operation; MAX_REGISTERED],
    len: usize,
    /// `index[major.index()]` = position in `operations`, or `NONE`.
    index: [u8; MAX_OPERATIONS],
    flags: RegistrationFlags,
    callbacks: Callbacks,
    data_scan: bool,
    error: Option<RegistrationError>,
}

const NONE: u8 = u8::MAX;

impl Registration {
    /// No operations, no flags, every optional callback but the section notification present.
    pub const fn new() -> Registration {
        Registration {
            operations: [Operation::new(MajorFunction::Create); MAX_REGISTERED],
            len: 0,
            index: [NONE; MAX_OPERATIONS],
            flags: RegistrationFlags::empty(),
            callbacks: Callbacks::ALL,
            data_scan: false,
            error: None,
        }
    }

    /// Adds an operation. The first problem found is kept and reported by
    /// [`Registration::validated`] or [`Registration::check`].
    pub const fn operation(mut self, op: Operation) -> Registration {
        if self.error.is_some() {
            return self;
        }
        if let Some(problem) = op.problem() {
            self.error = Some(problem);
            return self;
        }
        let Some(slot) = op.major.index() else {
            self.error = Some(RegistrationError::Forbidden(op.major));
            return self;
        };
        if !matches!(slots::get(&self.index, slot), Some(NONE)) {
            self.error = Some(RegistrationError::Duplicate(op.major));
            return self;
        }
        // Every major has a distinct index below MAX_OPERATIONS; forbidden majors and duplicates
        // are refused, so `len` stays below MAX_REGISTERED and both stores succeed.
        if slots::set(&mut self.operations, self.len, op) {
            slots::set(&mut self.index, slot, self.len as u8);
            self.len += 1;
        }
        self
    }

    /// Registers what Microsoft's passThrough registers (facts.md §3, S60): every IRP code a
    /// file-system stack receives (all but `IRP_MJ_POWER`, `IRP_MJ_SYSTEM_CONTROL` and
    /// `IRP_MJ_DEVICE_CHANGE`) and every Filter Manager pseudo-operation but `IRP_MJ_QUERY_OPEN`
    /// (newer than the sample, and not in its table), with pre and post callbacks as asked;
    /// `IRP_MJ_SHUTDOWN` never gets a post callback.
    pub const fn every_operation(mut self, pre: bool, post: bool) -> Registration {
        let mut rest = MajorFunction::ALL;
        while let [major, tail @ ..] = rest {
            let major = *major;
            rest = tail;
            if matches!(
                major,
                MajorFunction::Power
                    | MajorFunction::SystemControl
                    | MajorFunction::DeviceChange
                    | MajorFunction::QueryOpen
            ) {
                continue;
            }
            let mut op = Operation::new(major);
            op.pre = pre;
            op.post = post && !matches!(major, MajorFunction::Shutdown);
            if !op.pre && !op.post {
                continue;
            }
            self = self.operation(op);
        }
        self
    }

    /// Sets the registration flags.
    pub const fn flags(mut self, flags: RegistrationFlags) -> Registration {
        self.flags = flags;
        self
    }

    /// Whether the filter has an unload callback. Without one it can never be unloaded
    /// (facts.md §5).
    pub const fn unload_callback(mut self, present: bool) -> Registration {
        self.callbacks.filter_unload = present;
        self
    }

    /// Whether the filter has an instance-setup callback. Without one every automatic attachment
    /// is made (facts.md §2.5).
    pub const fn instance_setup_callback(mut self, present: bool) -> Registration {
        self.callbacks.instance_setup = present;
        self
    }

    /// Whether the filter has a query-teardown callback. Without one its instances can never be
    /// detached manually (facts.md §2.5).
    pub const fn query_teardown_callback(mut self, present: bool) -> Registration {
        self.callbacks.instance_query_teardown = present;
        self
    }

    /// Whether the filter has teardown start and complete callbacks.
    pub const fn teardown_callbacks(mut self, start: bool, complete: bool) -> Registration {
        self.callbacks.instance_teardown_start = start;
        self.callbacks.instance_teardown_complete = complete;
        self
    }

    /// Declares that the filter scans data through sections (facts.md §6): the backend registers
    /// each instance for data scan, provides sections, and registers the section-conflict
    /// callback.
    pub const fn data_scan(mut self, enabled: bool) -> Registration {
        self.data_scan = enabled;
        self.callbacks.section_notification = enabled;
        self
    }

    /// The registration, or a compile error naming the first mistake when evaluated in a `const`.
    ///
    /// Use it only in constants: at run time it would panic, so run-time registrations use
    /// [`Registration::check`].
    #[expect(clippy::panic, reason = "const-evaluated: the panic is a compile error")]
    pub const fn validated(self) -> Registration {
        match self.error {
            Some(e) => panic!("{}", e.message()),
            None => self,
        }
    }

    /// The registration, or the first mistake found while building it.
    pub const fn check(self) -> Result<Registration, RegistrationError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// The operation entries, in the order they were added.
    pub const fn operations(&self) -> &[Operation] {
        match self.operations.split_at_checked(self.len) {
            Some((used, _)) => used,
            None => &self.operations,
        }
    }

    /// The entry of the IRP major function `code` (`IRP_MJ_*`, as an IRP's stack location holds
    /// it), if registered: [`Registration::get`] without decoding the code first, for a legacy
    /// filter's dispatch path. IRP codes index the table as they are; any other code is `None`.
    #[inline]
    pub fn get_irp(&self, code: u8) -> Option<&Operation> {
        if code > crate::major::IRP_MJ_MAXIMUM_FUNCTION {
            return None;
        }
        let at = *self.index.get(usize::from(code))?;
        self.operations.get(..self.len)?.get(usize::from(at))
    }

    /// The entry for `major`, if registered. Constant time.
    pub const fn get(&self, major: MajorFunction) -> Option<&Operation> {
        let Some(slot) = major.index() else { return None };
        match slots::get(&self.index, slot) {
            Some(NONE) | None => None,
            Some(at) => match self.operations.split_at_checked(at as usize) {
                Some((_, [op, ..])) => Some(op),
                _ => None,
            },
        }
    }

    /// The registration flags.
    pub const fn registration_flags(&self) -> RegistrationFlags {
        self.flags
    }

    /// Which optional callbacks exist.
    pub const fn callbacks(&self) -> Callbacks {
        self.callbacks
    }

    /// True when the filter scans data through sections.
    pub const fn scans_data(&self) -> bool {
        self.data_scan
    }

    /// Any pre callback registered.
    pub fn has_any_pre(&self) -> bool {
        self.operations().iter().any(|o| o.pre)
    }
}

impl Default for Registration {
    fn default() -> Registration {
        Registration::new()
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("operations", &self.operations())
            .field("flags", &self.flags)
            .field("callbacks", &self.callbacks)
            .field("data_scan", &self.data_scan)
            .field("error", &self.error)
            .finish()
    }
}

impl PartialEq for Registration {
    fn eq(&self, other: &Registration) -> bool {
        self.operations() == other.operations()
            && self.flags == other.flags
            && self.callbacks == other.callbacks
            && self.data_scan == other.data_scan
            && self.error == other.error
    }
}

impl Eq for Registration {}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSTHROUGH: Registration = Registration::new().every_operation(true, true).validated();

    #[test]
    fn passthrough_registers_every_legal_operation() {
        // facts.md §3: passThrough registers everything except POWER, SYSTEM_CONTROL and
        // DEVICE_CHANGE, and SHUTDOWN with a NULL post; its table (S60) has no QUERY_OPEN.
        assert_eq!(PASSTHROUGH.operations().len(), MajorFunction::ALL.len() - 4);
        assert!(PASSTHROUGH.get(MajorFunction::QueryOpen).is_none());
        assert!(PASSTHROUGH.get(MajorFunction::Power).is_none());
        assert!(PASSTHROUGH.get(MajorFunction::DeviceChange).is_none());
        assert!(PASSTHROUGH.get(MajorFunction::SystemControl).is_none());
        let shutdown = PASSTHROUGH.get(MajorFunction::Shutdown).unwrap();
        assert!(shutdown.pre && !shutdown.post);
        let read = PASSTHROUGH.get(MajorFunction::Read).unwrap();
        assert!(read.pre && read.post);
        assert!(PASSTHROUGH.get(MajorFunction::VolumeMount).is_some());
    }

    #[test]
    fn an_irp_code_finds_the_entry_of_its_major_function() {
        let reads = Registration::new()
            .operation(Operation::new(MajorFunction::Cleanup).pre())
            .operation(Operation::new(MajorFunction::Read).pre().post())
            .validated();
        for code in 0..=u8::MAX {
            let major = MajorFunction::from_code(code);
            let expected =
                (code <= crate::major::IRP_MJ_MAXIMUM_FUNCTION).then(|| reads.get(major)).flatten();
            assert_eq!(reads.get_irp(code), expected, "{code:#x}");
            let every = (code <= crate::major::IRP_MJ_MAXIMUM_FUNCTION)
                .then(|| PASSTHROUGH.get(major))
                .flatten();
            assert_eq!(PASSTHROUGH.get_irp(code), every, "{code:#x}");
        }
        assert_eq!(
            reads.get_irp(MajorFunction::Read.code()).map(|o| (o.pre, o.post)),
            Some((true, true))
        );
        assert!(reads.get_irp(MajorFunction::Write.code()).is_none());
        // A pseudo-operation's code is no IRP's.
        assert!(PASSTHROUGH.get(MajorFunction::FastIoCheckIfPossible).is_some());
        assert!(PASSTHROUGH.get_irp(MajorFunction::FastIoCheckIfPossible.code()).is_none());
    }

    #[test]
    fn runtime_checks_report_each_mistake() {
        let power = Registration::new().operation(Operation::new(MajorFunction::Power).pre());
        assert_eq!(power.check(), Err(RegistrationError::Forbidden(MajorFunction::Power)));
        let change =
            Registration::new().operation(Operation::new(MajorFunction::DeviceChange).post());
        assert_eq!(change.check(), Err(RegistrationError::Forbidden(MajorFunction::DeviceChange)));
        let shutdown =
            Registration::new().operation(Operation::new(MajorFunction::Shutdown).pre().post());
        assert_eq!(shutdown.check(), Err(RegistrationError::ShutdownPost));
        let twice = Registration::new()
            .operation(Operation::new(MajorFunction::Read).pre())
            .operation(Operation::new(MajorFunction::Read).post());
        assert_eq!(twice.check(), Err(RegistrationError::Duplicate(MajorFunction::Read)));
        let none = Registration::new().operation(Operation::new(MajorFunction::Write));
        assert_eq!(none.check(), Err(RegistrationError::NoCallback(MajorFunction::Write)));
        let unknown =
            Registration::new().operation(Operation::new(MajorFunction::Unknown(0x40)).pre());
        assert_eq!(
            unknown.check(),
            Err(RegistrationError::Forbidden(MajorFunction::Unknown(0x40)))
        );
    }

    #[test]
    fn the_first_mistake_is_kept() {
        let r = Registration::new()
            .operation(Operation::new(MajorFunction::Power).pre())
            .operation(Operation::new(MajorFunction::Shutdown).pre().post());
        assert_eq!(r.check(), Err(RegistrationError::Forbidden(MajorFunction::Power)));
    }

    #[test]
    fn messages_name_the_operation() {
        assert_eq!(
            RegistrationError::Duplicate(MajorFunction::Read).message(),
            "invalid registration: IRP_MJ_READ is registered twice"
        );
        assert!(
            RegistrationError::Forbidden(MajorFunction::Power).message().contains("IRP_MJ_POWER")
        );
        assert!(RegistrationError::ShutdownPost.message().contains("IRP_MJ_SHUTDOWN"));
    }

    #[test]
    fn skip_flags_and_callbacks() {
        let r = Registration::new()
            .operation(
                Operation::new(MajorFunction::Read)
                    .pre()
                    .skip(OperationFlags::SKIP_PAGING_IO)
                    .skip(OperationFlags::SKIP_CACHED_IO),
            )
            .unload_callback(false)
            .query_teardown_callback(false)
            .data_scan(true)
            .flags(RegistrationFlags::SUPPORT_NPFS_MSFS)
            .check()
            .unwrap();
        let read = r.get(MajorFunction::Read).unwrap();
        assert_eq!(read.flags, OperationFlags::SKIP_PAGING_IO | OperationFlags::SKIP_CACHED_IO);
        assert!(!r.callbacks().filter_unload);
        assert!(!r.callbacks().instance_query_teardown);
        assert!(r.callbacks().section_notification);
        assert!(r.scans_data());
        assert_eq!(r.registration_flags(), RegistrationFlags::SUPPORT_NPFS_MSFS);
        assert!(r.get(MajorFunction::Write).is_none());
    }

    fn header(
        major: MajorFunction,
        kind: OperationKind,
        irp: crate::IrpFlags,
        volume_open: bool,
    ) -> OperationHeader<'static> {
        OperationHeader {
            major,
            minor: 0,
            kind,
            irp_flags: irp,
            data_flags: crate::CallbackDataFlags::empty(),
            requestor_mode: crate::RequestorMode::User,
            file_name: None,
            volume_open,
            file: 0,
            stream: 0,
            parameters: crate::Parameters::None,
            irql: crate::Irql::PASSIVE,
            synchronous: true,
            id: 0,
        }
    }

    #[test]
    fn skip_flags_follow_facts_section_3() {
        use crate::IrpFlags as I;
        let read = |f| Operation::new(MajorFunction::Read).pre().skip(f);
        let irp = OperationKind::Irp;
        let fast = OperationKind::FastIo;
        let cached = header(MajorFunction::Read, irp, I::empty(), false);
        let noncached = header(MajorFunction::Read, irp, I::NOCACHE, false);
        let paging = header(MajorFunction::Read, irp, I::NOCACHE | I::PAGING_IO, false);
        let fast_read = header(MajorFunction::Read, fast, I::empty(), false);

        let p = read(OperationFlags::SKIP_PAGING_IO);
        assert!(p.skips(&paging));
        assert!(!p.skips(&cached) && !p.skips(&noncached) && !p.skips(&fast_read));

        let c = read(OperationFlags::SKIP_CACHED_IO);
        assert!(c.skips(&cached));
        assert!(c.skips(&fast_read), "every fast-I/O read is cached I/O");
        assert!(!c.skips(&noncached) && !c.skips(&paging));

        let n = read(OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO);
        assert!(n.skips(&noncached));
        assert!(!n.skips(&cached) && !n.skips(&paging) && !n.skips(&fast_read));

        // Read/write-only flags do not apply to other operations.
        let create = header(MajorFunction::Create, irp, I::NOCACHE, false);
        assert!(
            !Operation::new(MajorFunction::Create)
                .pre()
                .skip(OperationFlags::SKIP_CACHED_IO)
                .skips(&create)
        );
        assert!(
            !Operation::new(MajorFunction::Create)
                .pre()
                .skip(OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO)
                .skips(&create)
        );

        let d = Operation::new(MajorFunction::Create).pre().skip(OperationFlags::SKIP_NON_DASD_IO);
        assert!(d.skips(&create));
        assert!(!d.skips(&header(MajorFunction::Create, irp, I::empty(), true)));

        // SKIP_PAGING_IO is ignored for fast I/O (which is never paging anyway) and FsFilter ops.
        let fs = header(
            MajorFunction::AcquireForSectionSynchronization,
            OperationKind::FsFilter,
            I::PAGING_IO,
            false,
        );
        assert!(
            !Operation::new(MajorFunction::AcquireForSectionSynchronization)
                .pre()
                .skip(OperationFlags::SKIP_PAGING_IO)
                .skips(&fs)
        );
    }

    #[test]
    fn pseudo_operations_are_registrable() {
        let r = Registration::new()
            .operation(Operation::new(MajorFunction::AcquireForSectionSynchronization).pre().post())
            .operation(Operation::new(MajorFunction::FastIoCheckIfPossible).pre())
            .check()
            .unwrap();
        assert_eq!(r.operations().len(), 2);
        assert!(r.get(MajorFunction::FastIoCheckIfPossible).unwrap().pre);
    }
}
