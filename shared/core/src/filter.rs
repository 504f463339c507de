//! The `Filter` trait: Filter-Manager-shaped callbacks, written once and run by either backend.
//! The numbered rules in `docs/callback-model.md` say what each callback may rely on.

use core::fmt;
use core::sync::atomic::AtomicU64;

use crate::flags::{InstanceSetupFlags, PostFlags, TeardownFlags, UnloadFlags};
use crate::messages::{ClientId, MessageChannel};
use crate::operation::{IoStatus, PostOperation, PreOperation};
use crate::params::ServiceParameters;
use crate::registration::{Registration, RegistrationError};
use crate::services::{DataScanMode, PendReceipt, PostReceipt, SectionId, Services};
use crate::status::{Error, Result};
use crate::volume::{FilesystemType, VolumeDeviceType};

/// What a filter learns about an instance's volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The file system's volume device type.
    pub device_type: VolumeDeviceType,
    /// The file system.
    pub filesystem: FilesystemType,
}

/// Identifies an instance to the backend and in traces (the `PFLT_INSTANCE` or the filter device
/// object's address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstanceId(pub usize);

/// The arguments of `instance_setup`.
pub struct InstanceSetup<'a> {
    /// Why the instance is being set up.
    pub flags: InstanceSetupFlags,
    /// The volume.
    pub volume: VolumeInfo,
    /// How data scanning works on this volume, when the registration asks for it:
    /// `FilterManager` (`FltRegisterForDataScan` succeeded), `FsRtlFallback` (it answered
    /// `STATUS_NOT_SUPPORTED`, and always in the legacy model), or `NotRequested` (no scanning in
    /// the registration, or the Filter Manager refused it otherwise: the filter decides whether to
    /// attach to a volume it cannot scan).
    pub data_scan: DataScanMode,
    /// The instance being set up.
    pub id: InstanceId,
    /// Backend services (notes; no operation, so no sections).
    pub services: &'a dyn Services,
}

impl fmt::Debug for InstanceSetup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSetup")
            .field("flags", &self.flags)
            .field("volume", &self.volume)
            .field("data_scan", &self.data_scan)
            .field("id", &self.id)
            .finish()
    }
}

/// An attached instance, as every callback after setup sees it.
pub struct Instance<'a, I> {
    /// The filter's per-instance state, made by `instance_setup`.
    pub context: &'a I,
    /// The volume.
    pub volume: VolumeInfo,
    /// How data scanning works on this volume.
    pub data_scan: DataScanMode,
    /// The instance.
    pub id: InstanceId,
}

impl<I> Clone for Instance<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I> Copy for Instance<'_, I> {}

impl<I> fmt::Debug for Instance<'_, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("volume", &self.volume)
            .field("data_scan", &self.data_scan)
            .field("id", &self.id)
            .finish()
    }
}

/// What a pre-operation callback decides (`FLT_PREOP_CALLBACK_STATUS`, facts.md §4).
pub enum PreOutcome<C> {
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK`: pass down; the post callback gets the context.
    WithPost(C),
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK`: pass down; no post callback.
    NoPost,
    /// `FLT_PREOP_COMPLETE`: complete here with this status; nothing below sees the operation,
    /// and only the post callbacks of filters above run. Not `STATUS_PENDING`; cleanup and close
    /// must succeed.
    Complete(IoStatus),
    /// `FLT_PREOP_PENDING`: the filter holds the operation until it resumes the
    /// [`crate::PendedOperation`] it got with this receipt.
    Pending(PendReceipt),
    /// `FLT_PREOP_SYNCHRONIZE`: pass down; the post callback runs in this thread at IRQL ≤
    /// `APC_LEVEL` after the operation completes.
    Synchronize(C),
    /// `FLT_PREOP_DISALLOW_FASTIO`: fast I/O only; the I/O manager reissues it as an IRP.
    DisallowFastIo,
    /// `FLT_PREOP_DISALLOW_FSFILTER_IO`: `IRP_MJ_QUERY_OPEN` only; force the slow path.
    DisallowFsFilterIo,
}

impl<C> PreOutcome<C> {
    /// The WDK spelling of the status the outcome maps to.
    pub const fn wdk_name(&self) -> &'static str {
        match self {
            PreOutcome::WithPost(_) => "FLT_PREOP_SUCCESS_WITH_CALLBACK",
            PreOutcome::NoPost => "FLT_PREOP_SUCCESS_NO_CALLBACK",
            PreOutcome::Complete(_) => "FLT_PREOP_COMPLETE",
            PreOutcome::Pending(_) => "FLT_PREOP_PENDING",
            PreOutcome::Synchronize(_) => "FLT_PREOP_SYNCHRONIZE",
            PreOutcome::DisallowFastIo => "FLT_PREOP_DISALLOW_FASTIO",
            PreOutcome::DisallowFsFilterIo => "FLT_PREOP_DISALLOW_FSFILTER_IO",
        }
    }

    /// The `FLT_PREOP_CALLBACK_STATUS` value.
    pub const fn wdk_value(&self) -> i32 {
        match self {
            PreOutcome::WithPost(_) => 0,
            PreOutcome::NoPost => 1,
            PreOutcome::Pending(_) => 2,
            PreOutcome::DisallowFastIo => 3,
            PreOutcome::Complete(_) => 4,
            PreOutcome::Synchronize(_) => 5,
            PreOutcome::DisallowFsFilterIo => 6,
        }
    }

    /// The spelling of an `FLT_PREOP_CALLBACK_STATUS` value (`"FLT_PREOP_UNKNOWN"` for others).
    pub const fn wdk_name_of(value: i32) -> &'static str {
        match value {
            0 => "FLT_PREOP_SUCCESS_WITH_CALLBACK",
            1 => "FLT_PREOP_SUCCESS_NO_CALLBACK",
            2 => "FLT_PREOP_PENDING",
            3 => "FLT_PREOP_DISALLOW_FASTIO",
            4 => "FLT_PREOP_COMPLETE",
            5 => "FLT_PREOP_SYNCHRONIZE",
            6 => "FLT_PREOP_DISALLOW_FSFILTER_IO",
            _ => "FLT_PREOP_UNKNOWN",
        }
    }

    /// A denial: complete with `STATUS_ACCESS_DENIED`.
    pub const fn deny() -> PreOutcome<C> {
        PreOutcome::Complete(IoStatus::new(crate::Status::ACCESS_DENIED))
    }
}

impl<C> fmt::Debug for PreOutcome<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreOutcome::Complete(s) => write!(f, "{}({})", self.wdk_name(), s.status),
            _ => f.write_str(self.wdk_name()),
        }
    }
}

/// What a post-operation callback decides (`FLT_POSTOP_CALLBACK_STATUS`, facts.md §4).
pub enum PostOutcome<C> {
    /// `FLT_POSTOP_FINISHED_PROCESSING`.
    Finished,
    /// Finish at a safe IRQL: `Filter::post_operation_when_safe` runs with the context, inline
    /// when the IRQL is below `DISPATCH_LEVEL`, otherwise from a worker
    /// (`FltDoCompletionProcessingWhenSafe`). Where that is impossible (paging I/O, non-IRP
    /// operations) the backend finishes the operation and drops the context.
    WhenSafe(C),
    /// `FLT_POSTOP_MORE_PROCESSING_REQUIRED`: completion waits for the
    /// [`crate::DeferredPost`] that came with this receipt.
    MoreProcessing(PostReceipt),
}

impl<C> PostOutcome<C> {
    /// The WDK spelling of the status the outcome maps to.
    pub const fn wdk_name(&self) -> &'static str {
        match self {
            PostOutcome::Finished => "FLT_POSTOP_FINISHED_PROCESSING",
            PostOutcome::WhenSafe(_) | PostOutcome::MoreProcessing(_) => {
                "FLT_POSTOP_MORE_PROCESSING_REQUIRED"
            }
        }
    }
}

impl<C> fmt::Debug for PostOutcome<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostOutcome::WhenSafe(_) => f.write_str("WhenSafe"),
            _ => f.write_str(self.wdk_name()),
        }
    }
}

/// A file-system filter, written once against the Filter Manager's callback model.
///
/// The minifilter backend registers it with the Filter Manager; the legacy backend runs it from
/// device objects attached to file-system stacks. `docs/callback-model.md` numbers the rules both
/// uphold; `docs/semantics.md` lists where the two models differ.
pub trait Filter: Sized + Send + Sync + 'static {
    /// The registration, validated at compile time (end the constant with
    /// [`Registration::validated`]).
    const REGISTRATION: Registration;

    /// Whether the filter asks for file names (`Services::file_name`, rule 22), declared beside
    /// its registration. A filter that leaves it `false` carries none of the name code, and its
    /// `file_name` answers `STATUS_NOT_SUPPORTED` (docs/decisions/0007: a field of
    /// [`Registration`] would have perturbed every driver's `DriverEntry`).
    const NAME_QUERIES: bool = false;

    /// The filter's user-mode message channel, declared beside its registration (end it with
    /// [`MessageChannel::validated`]). `None`, the default: no channel, and none of the channel's
    /// code in the driver; user mode finds no port or device name to connect to.
    const MESSAGES: Option<MessageChannel> = None;

    /// Whether [`Filter::load`] allocates load buffers (`ServiceParameters::allocate`, rule 24),
    /// declared beside the registration. A filter that leaves it `false` carries none of their
    /// code, and `allocate` answers it `STATUS_NOT_SUPPORTED` (docs/decisions/0009).
    const LOAD_BUFFERS: bool = false;

    /// Whether the filter asks for processes (`Services::requestor_process` and
    /// `Services::client_process`, rule 26), declared beside its registration. A filter that
    /// leaves it `false` carries none of that code (no import, no per-client record of the
    /// connecting process), and both services answer it `None`.
    const PROCESS_QUERIES: bool = false;

    /// Whether the filter redirects creates (`Services::replace_file_name` then
    /// [`crate::IoStatus::reparse`], rule 27), declared beside its registration. A filter that
    /// leaves it `false` carries none of that code (no `IoReplaceFileObjectName` import), and
    /// `replace_file_name` answers it `STATUS_NOT_SUPPORTED`.
    const REPARSES: bool = false;

    /// How many 64-bit words each of the filter's stream contexts holds
    /// ([`Services::stream_context`], rule 28), declared beside its registration: 0, the default,
    /// for none, and then the filter carries none of that code (no context registration, no
    /// context import) and `stream_context` answers it `STATUS_NOT_SUPPORTED`. At most
    /// [`crate::MAX_STREAM_CONTEXT_WORDS`]: a larger value does not compile
    /// ([`stream_context_words`]).
    const STREAM_CONTEXT_WORDS: usize = 0;

    /// How many 64-bit words each of the filter's handle contexts holds (per open handle, that
    /// is per file object: [`crate::ContextRequest::HandleGet`] and
    /// [`crate::ContextRequest::HandleGetOrCreate`] of [`Services::stream_context`], rule 29),
    /// declared beside its registration: 0, the default, for none, and then the filter carries
    /// none of that code and those requests answer `STATUS_NOT_SUPPORTED`. At most
    /// [`crate::MAX_STREAM_CONTEXT_WORDS`] ([`handle_context_words`]).
    const HANDLE_CONTEXT_WORDS: usize = 0;

    /// Per-instance state, made by [`Filter::instance_setup`] and dropped after teardown.
    type InstanceContext: Send + Sync + 'static;

    /// The completion context: moved from a pre callback to its post callback, by value.
    type CompletionContext: Send + 'static;

    /// Builds the filter in `DriverEntry`, from the service's `Parameters` key. The value is
    /// moved through the kernel stack before the backend places it in pool: large tables belong
    /// in load buffers (`parameters.allocate`, with [`Filter::LOAD_BUFFERS`]), which the backend
    /// frees after the value is dropped, or after this fails.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`, system thread, may block. An error fails `DriverEntry` with that status.
    fn load(parameters: &dyn ServiceParameters) -> Result<Self>;

    /// The registration in force, when it is not [`Filter::REGISTRATION`]. The default, `None`,
    /// registers the constant, validated at compile time, from static tables: a filter that does
    /// not override this carries no run-time registration code at all. A filter whose operations
    /// come from its parameters (the probe sample) returns one built at run time, which the
    /// backend checks with [`Registration::check`]. A run-time registration may leave data
    /// scanning out but cannot add it: the backends compile the data-scan paths only into filters
    /// whose `REGISTRATION` scans data, and refuse the load otherwise
    /// ([`registration_in_force`]).
    ///
    /// # Context
    /// Called once, from `DriverEntry`, after [`Filter::load`].
    fn registration(&self) -> Option<Registration> {
        None
    }

    /// Decides whether to attach to a volume. `Ok` attaches with that instance state; any
    /// error (`STATUS_FLT_DO_NOT_ATTACH` by convention) refuses. Called only when the registration
    /// declares an instance-setup callback; otherwise every volume is attached with
    /// `InstanceContext::default()`-free rules (see [`Filter::default_instance`]).
    ///
    /// # Context
    /// `PASSIVE_LEVEL`; do not wait on other threads (deadlock, facts.md §2.5).
    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<Self::InstanceContext>;

    /// The instance state used when the registration declares no instance-setup callback
    /// (every attachment is then made, facts.md §2.5). `None` refuses anyway: a filter that
    /// cannot build state without setup should declare the callback.
    fn default_instance(&self) -> Option<Self::InstanceContext> {
        None
    }

    /// Decides whether a manual detach may proceed (`fltmc detach`). Any error vetoes it.
    /// Called only for manual detach, and only when the registration declares the callback.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`.
    fn instance_query_teardown(
        &self,
        _instance: &Instance<'_, Self::InstanceContext>,
    ) -> Result<()> {
        Ok(())
    }

    /// Teardown begins: complete or cancel pended operations, stop queuing work. No new
    /// operation reaches the instance after it.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`.
    fn instance_teardown_start(
        &self,
        _instance: &Instance<'_, Self::InstanceContext>,
        _reason: TeardownFlags,
    ) {
    }

    /// Teardown ends: every outstanding operation of the instance has completed or drained.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`.
    fn instance_teardown_complete(
        &self,
        _instance: &Instance<'_, Self::InstanceContext>,
        _reason: TeardownFlags,
    ) {
    }

    /// The pre-operation callback for every operation registered with a pre callback.
    ///
    /// # Context
    /// `PASSIVE_LEVEL` or `APC_LEVEL` (paging I/O), usually in the requester's thread; may be a
    /// worker thread when a filter above pended the operation.
    fn pre_operation(
        &self,
        instance: &Instance<'_, Self::InstanceContext>,
        operation: &mut PreOperation<'_, Self::CompletionContext>,
    ) -> PreOutcome<Self::CompletionContext>;

    /// The post-operation callback. `context` is what the pre callback passed on; with
    /// [`PostFlags::DRAINING`] the operation may not have completed: clean up and return
    /// [`PostOutcome::Finished`] (anything else is treated as finished).
    ///
    /// # Context
    /// IRQL ≤ `DISPATCH_LEVEL`, arbitrary thread: no blocking, no paged memory, no sections.
    /// After [`PreOutcome::Synchronize`]: ≤ `APC_LEVEL` in the pre callback's thread. After a
    /// create: `PASSIVE_LEVEL`.
    fn post_operation(
        &self,
        _instance: &Instance<'_, Self::InstanceContext>,
        _operation: &mut PostOperation<'_>,
        _context: Self::CompletionContext,
        _flags: PostFlags,
    ) -> PostOutcome<Self::CompletionContext> {
        PostOutcome::Finished
    }

    /// The rest of a post callback that answered [`PostOutcome::WhenSafe`].
    ///
    /// # Context
    /// IRQL ≤ `APC_LEVEL`; may block.
    fn post_operation_when_safe(
        &self,
        _instance: &Instance<'_, Self::InstanceContext>,
        _operation: &mut PostOperation<'_>,
        _context: Self::CompletionContext,
    ) -> PostOutcome<Self::CompletionContext> {
        PostOutcome::Finished
    }

    /// Decides a non-mandatory unload (`fltmc unload`); an error (`STATUS_FLT_DO_NOT_DETACH`)
    /// keeps the filter loaded. For a mandatory unload (service stop, [`UnloadFlags::MANDATORY`])
    /// the answer is ignored. Called only when the registration declares an unload callback;
    /// without one the filter cannot be unloaded at all.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`.
    fn unload(&self, _flags: UnloadFlags) -> Result<()> {
        Ok(())
    }

    /// A user-mode client connects to the channel ([`Filter::MESSAGES`]); `context` is the
    /// connection context it passed (at most `max_message` bytes; empty when it passed none). An
    /// error refuses the connection, and the client gets that status.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`, the connecting client's thread (rule 23).
    fn client_connect(&self, _client: ClientId, _context: &[u8]) -> Result<()> {
        Ok(())
    }

    /// A client's connection ends: its handle was closed, or the channel is being torn down at
    /// unload. Runs once for each client `client_connect` accepted; no `message` of the client
    /// starts after it.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`, arbitrary thread (rule 23).
    fn client_disconnect(&self, _client: ClientId) {}

    /// A message from a connected client: `input` is a kernel copy of what it sent (at most
    /// `max_message` bytes); write the reply into `reply` (a kernel buffer of the capacity the
    /// client offered, at most `max_message` bytes) and return its length (larger than
    /// `reply.len()` counts as `reply.len()`). An error goes back to the client as the call's
    /// status, with no reply. The default answers `STATUS_INVALID_DEVICE_REQUEST`, what a
    /// control device answers an I/O control code it does not know.
    ///
    /// # Context
    /// `PASSIVE_LEVEL`, the client's thread; may block. Never touches user memory (rule 23).
    fn message(&self, _client: ClientId, _input: &[u8], _reply: &mut [u8]) -> Result<usize> {
        Err(Error::INVALID_DEVICE_REQUEST)
    }

    /// Conflicting I/O needs the data-scan section `section` closed: drop it (a scan using it
    /// should stop; [`crate::ScanSection::conflicted`] is already true). May arrive before the
    /// call that creates the section returns.
    ///
    /// # Context
    /// IRQL ≤ `APC_LEVEL`.
    fn section_conflict(
        &self,
        _instance: &Instance<'_, Self::InstanceContext>,
        _section: SectionId,
    ) {
    }

    /// A stream context is freed (rule 28): its stream went away (the file system tore it down
    /// after the last close), the filter deleted it, or its instance tore down; and the last
    /// reference to it was dropped. `words` are its final values. Called exactly once for each
    /// context a [`crate::ContextRequest::GetOrCreate`] attached, before the filter's unload
    /// completes (the Filter Manager's context cleanup callback; in the legacy model the
    /// backend's `FreeCallback` or its own removal). Only for a filter that declares
    /// [`Filter::STREAM_CONTEXT_WORDS`].
    ///
    /// # Context
    /// IRQL ≤ `APC_LEVEL`, arbitrary thread; no services (no operation). Must not wait for I/O
    /// (the file system may be tearing the stream down in this thread).
    fn stream_context_freed(&self, _words: &[AtomicU64]) {}

    /// A handle context is freed (rule 29): its handle's file object was closed (after the
    /// handle's last operation), the filter deleted it, or its instance tore down; and the last
    /// reference to it was dropped. `words` are its final values. Called exactly once for each
    /// context a [`crate::ContextRequest::HandleGetOrCreate`] attached, before the filter's
    /// unload completes (the Filter Manager's cleanup callback of its stream-handle contexts; in
    /// the legacy model the backend's own removal at `IRP_MJ_CLOSE` or at the teardown). Only for
    /// a filter that declares [`Filter::HANDLE_CONTEXT_WORDS`].
    ///
    /// # Context
    /// IRQL ≤ `APC_LEVEL`, arbitrary thread; no services (no operation). Must not wait for I/O.
    fn handle_context_freed(&self, _words: &[AtomicU64]) {}
}

/// What a backend's `DriverEntry` registers: `None` for [`Filter::REGISTRATION`] (validated at
/// compile time, registered from static tables), or the run-time registration
/// [`Filter::registration`] returned, checked, and refused when it scans data that
/// `REGISTRATION` does not declare.
///
/// Inlined, so that the branch a filter cannot take disappears: a filter that keeps the default
/// carries no checking code, and one that always builds its registration carries no copy of the
/// constant.
///
/// `REGISTRATION` is checked here at compile time whether or not it ends in
/// [`Registration::validated`]: a builder that met a mistake keeps none of the entries after it,
/// so an unchecked constant would register a silently shorter table. A driver built from one does
/// not compile:
///
/// ```compile_fail,E0080
/// use fsfilter::{
///     Filter, Instance, InstanceSetup, MajorFunction, Operation, PreOperation, PreOutcome,
///     Registration, Result, ServiceParameters,
/// };
/// struct Unchecked;
/// impl Filter for Unchecked {
///     // IRP_MJ_POWER cannot be registered (facts.md §3); no `.validated()` at the end.
///     const REGISTRATION: Registration = Registration::new()
///         .operation(Operation::new(MajorFunction::Power).pre())
///         .operation(Operation::new(MajorFunction::Read).pre());
///     type InstanceContext = ();
///     type CompletionContext = ();
///     fn load(_: &dyn ServiceParameters) -> Result<Self> {
///         Ok(Unchecked)
///     }
///     fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
///         Ok(())
///     }
///     fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
///         PreOutcome::NoPost
///     }
/// }
/// let _ = fsfilter::registration_in_force(&Unchecked);
/// ```
#[inline(always)]
pub fn registration_in_force<F: Filter>(
    filter: &F,
) -> core::result::Result<Option<Registration>, RegistrationError> {
    // Evaluated when the backend's `DriverEntry` is built for `F`; costs nothing at run time.
    let _ = const { F::REGISTRATION.validated() };
    match filter.registration() {
        None if const { post_only_is_zero_sized::<F>(&F::REGISTRATION) } => Ok(None),
        None => Err(RegistrationError::PostOnlyNeedsZeroSizedContext),
        Some(r) => match check_run_time(r, F::REGISTRATION.scans_data()) {
            Ok(r) if post_only_is_zero_sized::<F>(&r) => Ok(Some(r)),
            Ok(_) => Err(RegistrationError::PostOnlyNeedsZeroSizedContext),
            Err(e) => Err(e),
        },
    }
}

/// True unless `registration` has a post callback without a pre callback while `F`'s completion
/// context is not zero-sized: such a post callback would get a context nobody made (rule 6).
pub const fn post_only_is_zero_sized<F: Filter>(registration: &Registration) -> bool {
    if core::mem::size_of::<F::CompletionContext>() == 0 {
        return true;
    }
    let mut rest = registration.operations();
    while let [o, tail @ ..] = rest {
        if o.post && !o.pre {
            return false;
        }
        rest = tail;
    }
    true
}

/// [`Registration::check`], and no data scanning unless the constant declares it.
fn check_run_time(
    registration: Registration,
    declared_scan: bool,
) -> core::result::Result<Registration, RegistrationError> {
    let registration = registration.check()?;
    if registration.scans_data() && !declared_scan {
        return Err(RegistrationError::DataScanNotDeclared);
    }
    Ok(registration)
}

/// Whether filter type `F` can scan data at all: the backends test this constant before every
/// data-scan path, so a filter that never scans carries none of that code.
pub const fn scans_data<F: Filter>() -> bool {
    F::REGISTRATION.scans_data()
}

/// Whether filter type `F` asks for file names ([`Filter::NAME_QUERIES`]): the backends test
/// this constant first in `Services::file_name`, so a filter that never asks carries none of
/// that code.
pub const fn queries_names<F: Filter>() -> bool {
    F::NAME_QUERIES
}

/// Whether filter type `F` asks for processes ([`Filter::PROCESS_QUERIES`]): the backends test
/// this constant first in `Services::requestor_process` and `Services::client_process` and before
/// recording a client's process at its connection, so a filter that never asks carries none of
/// that code.
pub const fn queries_processes<F: Filter>() -> bool {
    F::PROCESS_QUERIES
}

/// Whether filter type `F` redirects creates ([`Filter::REPARSES`]): the backends test this
/// constant first in `Services::replace_file_name`, so a filter that never redirects carries none
/// of that code.
pub const fn reparses<F: Filter>() -> bool {
    F::REPARSES
}

/// How many words filter type `F`'s stream contexts hold ([`Filter::STREAM_CONTEXT_WORDS`]; 0 for
/// none): the backends test this constant first in `Services::stream_context` and before building
/// a context registration, so a filter without stream contexts carries none of that code. A filter
/// that declares more than [`crate::MAX_STREAM_CONTEXT_WORDS`] does not compile:
///
/// ```compile_fail,E0080
/// use fsfilter::{
///     Filter, Instance, InstanceSetup, MajorFunction, Operation, PreOperation, PreOutcome,
///     Registration, Result, ServiceParameters,
/// };
/// struct Huge;
/// impl Filter for Huge {
///     const REGISTRATION: Registration =
///         Registration::new().operation(Operation::new(MajorFunction::Read).pre()).validated();
///     const STREAM_CONTEXT_WORDS: usize = 33;
///     type InstanceContext = ();
///     type CompletionContext = ();
///     fn load(_: &dyn ServiceParameters) -> Result<Self> {
///         Ok(Huge)
///     }
///     fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
///         Ok(())
///     }
///     fn pre_operation(&self, _: &Instance<'_, ()>, _: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
///         PreOutcome::NoPost
///     }
/// }
/// let _ = fsfilter::stream_context_words::<Huge>();
/// ```
pub const fn stream_context_words<F: Filter>() -> usize {
    const {
        assert!(
            F::STREAM_CONTEXT_WORDS <= crate::MAX_STREAM_CONTEXT_WORDS,
            "Filter::STREAM_CONTEXT_WORDS is larger than MAX_STREAM_CONTEXT_WORDS"
        );
        F::STREAM_CONTEXT_WORDS
    }
}

/// How many words filter type `F`'s handle contexts hold ([`Filter::HANDLE_CONTEXT_WORDS`]; 0 for
/// none): the backends test this constant first, as [`stream_context_words`]. A value larger than
/// [`crate::MAX_STREAM_CONTEXT_WORDS`] does not compile.
pub const fn handle_context_words<F: Filter>() -> usize {
    const {
        assert!(
            F::HANDLE_CONTEXT_WORDS <= crate::MAX_STREAM_CONTEXT_WORDS,
            "Filter::HANDLE_CONTEXT_WORDS is larger than MAX_STREAM_CONTEXT_WORDS"
        );
        F::HANDLE_CONTEXT_WORDS
    }
}

/// How many words the larger of filter type `F`'s stream and handle contexts holds: 0 when it
/// declares neither, and then no context code at all is linked.
pub const fn context_words<F: Filter>() -> usize {
    let (s, h) = (stream_context_words::<F>(), handle_context_words::<F>());
    if s > h { s } else { h }
}

/// Whether filter type `F` allocates load buffers ([`Filter::LOAD_BUFFERS`]): the backends test
/// this constant before every load-buffer path, so a filter that never allocates carries none of
/// that code.
pub const fn load_buffers<F: Filter>() -> bool {
    F::LOAD_BUFFERS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Status;

    #[test]
    fn outcome_values_match_fltkernel_h() {
        // facts.md §4: FLT_PREOP_CALLBACK_STATUS 0..6 in this order.
        let all: [PreOutcome<()>; 5] = [
            PreOutcome::WithPost(()),
            PreOutcome::NoPost,
            PreOutcome::DisallowFastIo,
            PreOutcome::Complete(IoStatus::new(Status::ACCESS_DENIED)),
            PreOutcome::Synchronize(()),
        ];
        let values: [i32; 5] = core::array::from_fn(|i| all[i].wdk_value());
        assert_eq!(values, [0, 1, 3, 4, 5]);
        assert_eq!(PreOutcome::<()>::DisallowFsFilterIo.wdk_value(), 6);
        for o in &all {
            assert_eq!(PreOutcome::<()>::wdk_name_of(o.wdk_value()), o.wdk_name());
        }
        assert_eq!(PreOutcome::<()>::wdk_name_of(9), "FLT_PREOP_UNKNOWN");
        assert_eq!(PreOutcome::<()>::deny().wdk_name(), "FLT_PREOP_COMPLETE");
        assert_eq!(PostOutcome::<()>::Finished.wdk_name(), "FLT_POSTOP_FINISHED_PROCESSING");
        assert_eq!(PostOutcome::WhenSafe(()).wdk_name(), "FLT_POSTOP_MORE_PROCESSING_REQUIRED");
    }

    /// A filter whose run-time registration is whatever its field says.
    struct Configurable(Option<Registration>);

    impl Filter for Configurable {
        const REGISTRATION: Registration = Registration::new()
            .operation(crate::Operation::new(crate::MajorFunction::Create).pre())
            .validated();
        type InstanceContext = ();
        type CompletionContext = ();

        fn load(_: &dyn ServiceParameters) -> Result<Self> {
            Ok(Configurable(None))
        }

        fn registration(&self) -> Option<Registration> {
            self.0
        }

        fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
            Ok(())
        }

        fn pre_operation(
            &self,
            _: &Instance<'_, ()>,
            _: &mut PreOperation<'_, ()>,
        ) -> PreOutcome<()> {
            PreOutcome::NoPost
        }
    }

    #[test]
    fn run_time_registrations_cannot_add_data_scanning() {
        let plain = Configurable::REGISTRATION;
        assert!(!scans_data::<Configurable>());
        // The default: the constant, with nothing checked at run time.
        assert_eq!(registration_in_force(&Configurable(None)), Ok(None));
        assert_eq!(registration_in_force(&Configurable(Some(plain))), Ok(Some(plain)));
        assert_eq!(
            registration_in_force(&Configurable(Some(plain.data_scan(true)))),
            Err(RegistrationError::DataScanNotDeclared)
        );
        let twice = plain.operation(crate::Operation::new(crate::MajorFunction::Create).pre());
        assert_eq!(
            registration_in_force(&Configurable(Some(twice))),
            Err(RegistrationError::Duplicate(crate::MajorFunction::Create))
        );
    }

    #[test]
    fn a_filter_without_a_channel_refuses_messages_by_default() {
        // Rule 23: no channel unless declared; the default message answer is the one a control
        // device gives an I/O control code it does not know.
        assert_eq!(crate::message_channel::<Configurable>(), None);
        let filter = Configurable(None);
        let client = ClientId(1);
        assert_eq!(filter.client_connect(client, b"ctx"), Ok(()));
        let mut reply = [0u8; 4];
        assert_eq!(filter.message(client, b"in", &mut reply), Err(Error::INVALID_DEVICE_REQUEST));
        filter.client_disconnect(client);
    }

    /// A filter with a context of one word, registering what its field says.
    struct Carrying(Option<Registration>);

    impl Filter for Carrying {
        const REGISTRATION: Registration = Registration::new()
            .operation(crate::Operation::new(crate::MajorFunction::Read).post())
            .validated();
        type InstanceContext = ();
        type CompletionContext = u64;

        fn load(_: &dyn ServiceParameters) -> Result<Self> {
            Ok(Carrying(None))
        }

        fn registration(&self) -> Option<Registration> {
            self.0
        }

        fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
            Ok(())
        }

        fn pre_operation(
            &self,
            _: &Instance<'_, ()>,
            _: &mut PreOperation<'_, u64>,
        ) -> PreOutcome<u64> {
            PreOutcome::NoPost
        }
    }

    #[test]
    fn a_post_only_operation_needs_a_zero_sized_context() {
        // Rule 6: a post callback without a pre callback gets a context nobody made.
        let post_only = Carrying::REGISTRATION;
        assert!(!post_only_is_zero_sized::<Carrying>(&post_only));
        assert!(post_only_is_zero_sized::<Configurable>(&post_only), "() needs no maker");
        let err = Err(RegistrationError::PostOnlyNeedsZeroSizedContext);
        assert_eq!(registration_in_force(&Carrying(None)), err);
        assert_eq!(registration_in_force(&Carrying(Some(post_only))), err);
        let with_pre = Registration::new()
            .operation(crate::Operation::new(crate::MajorFunction::Read).pre().post())
            .validated();
        assert_eq!(registration_in_force(&Carrying(Some(with_pre))), Ok(Some(with_pre)));
        assert!(RegistrationError::PostOnlyNeedsZeroSizedContext.message().contains("zero-sized"));
    }
}
