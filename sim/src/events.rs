//! The event log: everything a run did, in order, for the lab's reports and the tests.

use crate::name::Name;
use std::fmt;

use fsfilter::trace::TraceEvent;
use fsfilter::{
    DataScanMode, InstanceSetupFlags, MajorFunction, OperationKind, Status, TeardownFlags,
    UnloadFlags, VolumeInfo,
};

/// A verifier rule, in the spirit of Driver Verifier and Filter Verifier. Each breach is an
/// [`EventKind::Verifier`] event naming the rule and the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// An IRP was completed twice.
    IrpCompletedTwice,
    /// An IRP was completed with `STATUS_PENDING`.
    CompletedWithStatusPending,
    /// A dispatch routine returned `STATUS_PENDING` without marking the IRP pending.
    PendingWithoutMark,
    /// A dispatch routine marked the IRP pending but returned another status.
    MarkedPendingButNotReturned,
    /// A dispatch routine returned a status a dispatch routine may not return.
    UnknownDispatchResult,
    /// A dispatch routine returned a status other than `STATUS_PENDING` and the IRP was neither
    /// completed nor passed on to a driver that completed it: nothing will complete it. Driver
    /// Verifier's I/O verification names it `DCERROR_IRP_RETURNED_WITHOUT_COMPLETION`.
    IrpReturnedWithoutCompletion,
    /// A dispatch routine returned a status other than `STATUS_PENDING` for an IRP whose
    /// completion had already passed its stack location, and the IRP's `IoStatus.Status` was
    /// another one then: its caller gets two answers (the returned status, which a system
    /// service returns, and the IRP's, which the caller's I/O status block gets). Driver
    /// Verifier's I/O verification, WDM DRIVER ERROR 0x224 ("An IRP dispatch handler has
    /// returned a status that is inconsistent with the IRP's IoStatus.Status field").
    DispatchStatusDiffersFromIrpStatus,
    /// Code of an unloaded driver would have run (a completion routine, a dispatch routine, a
    /// callback), or its image went while its code was on the call stack (which returns into
    /// it).
    UnloadedDriverCodeRan,
    /// Device objects remained after the driver unloaded.
    DeviceObjectsLeaked,
    /// Pool allocations remained after the driver unloaded.
    PoolLeaked,
    /// The driver's image went while an IRP whose completion one of its routines halted
    /// (`STATUS_MORE_PROCESSING_REQUIRED`) was never completed again: its requester waits for
    /// good.
    IrpHaltedAtUnload,
    /// A pool block was freed twice, or a pointer that is not a pool block was freed.
    BadPoolFree,
    /// A pool block was freed with a tag other than the one it was allocated with.
    PoolTagMismatch,
    /// A device was left with `DO_DEVICE_INITIALIZING` set after its driver's code returned, and
    /// an attach above it or an open of it by name failed for that (reported against the
    /// device's driver; the name is kept from when it blamed the attacher).
    AttachToInitializingDevice,
    /// A call was made at an IRQL its contract forbids.
    IrqlTooHigh,
    /// A request was sent to a deleted device.
    CallToDeletedDevice,
    /// An IRP ran out of stack locations.
    NoMoreStackLocations,
    /// A wait could never be satisfied.
    Deadlock,
    /// An `IoRegisterFsRegistrationChange` routine was still registered when its driver
    /// unloaded.
    FsNotificationLeaked,
    /// A spin lock was released with an IRQL that does not restore the state before acquiring.
    SpinLockMisuse,
    /// The image global was used outside a driver image.
    ImageGlobalOutsideImage,
    /// A handle was used after being closed, or never existed.
    InvalidHandle,
    /// A minifilter registered an operation Windows documents as forbidden.
    ForbiddenRegistration,
    /// A minifilter's context registration breaks `FLT_CONTEXT_REGISTRATION`'s documented limits
    /// for a context type (more than three fixed-size definitions, more than one variable-sized
    /// one, or a `ContextAllocateCallback` definition that is not the type's only one).
    ForbiddenContextRegistration,
    /// A minifilter callback returned a status that is not a valid `FLT_PREOP_*` / `FLT_POSTOP_*`.
    UnknownCallbackStatus,
    /// A completion context was returned with `FLT_PREOP_SUCCESS_NO_CALLBACK` (or another status
    /// that forbids one).
    ContextWithoutPost,
    /// `FLT_PREOP_PENDING` was returned for a fast-I/O or FsFilter operation.
    PendingOnFastIo,
    /// `FLT_PREOP_COMPLETE` with `STATUS_PENDING`.
    CompleteWithPending,
    /// A filter context was still referenced when its filter unloaded.
    ContextLeaked,
    /// A data-scan section was still open when its filter unloaded.
    SectionLeaked,
    /// A file name information (`FltGetFileNameInformation`) was still referenced when its
    /// filter unloaded.
    FileNameLeaked,
    /// `FltReleaseFileNameInformation` (or a reference or parse) of a name information released
    /// already.
    FileNameReleasedTwice,
    /// `FltCreateSectionForDataScan` / `FsRtlCreateSectionForDataScan` asked for a section
    /// handle without `OBJ_KERNEL_HANDLE` in its `ObjectAttributes` (or with none): the handle is
    /// then a user handle of whatever process the caller runs in (facts.md §6), which that process
    /// can close or duplicate, and a later `ZwClose` from another process closes a different one.
    SectionHandleNotKernel,
    /// `ZwOpenKey` in a user thread (not a system thread context) without `OBJ_KERNEL_HANDLE`:
    /// its reference page requires the flag there, as the handle is otherwise one of the user
    /// process the thread belongs to, which that process can use or close.
    KeyHandleNotKernel,
    /// A filter callback ran after its filter unloaded.
    CallbackAfterUnload,
    /// An object was dereferenced more than it was referenced.
    ObjectOverDereferenced,
    /// A device was deleted under an attached device whose driver has no `FastIoDetachDevice`.
    FastIoDetachMissing,
    /// `IoDetachDevice(target)` with nothing attached above `target`: a second detach, or the
    /// filter's own device passed instead of the lower one. Windows clears the attached device's
    /// `AttachedTo` through the NULL `AttachedDevice`; Driver Verifier names it "detach from a
    /// device object which is not attached to anything".
    DetachNotAttached,
    /// `IoDeleteDevice` of a device still attached to the device below it (no `IoDetachDevice`
    /// first): the device below keeps the deleted one as its `AttachedDevice`. Driver Verifier's
    /// I/O verification names it "a device is deleting itself while there is another device
    /// beneath it in the driver stack".
    DeleteWhileAttached,
    /// `IoCancelFileOpen` / `FltCancelFileOpen` on a file object that already has a handle
    /// (`FO_HANDLE_CREATED`), or outside a create.
    CancelFileOpenMisuse,
    /// A callback returned a known `FLT_PREOP_*` / `FLT_POSTOP_*` status that the operation
    /// cannot take (`FLT_PREOP_DISALLOW_FASTIO` for an IRP, `FLT_POSTOP_MORE_PROCESSING_REQUIRED`
    /// for fast I/O or while draining, ...).
    StatusInvalidForOperation,
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK` or `FLT_PREOP_SYNCHRONIZE` from a filter that registered
    /// no post-operation callback for the operation.
    PostCallbackMissing,
    /// `FLT_PREOP_COMPLETE` with a status the operation cannot complete with
    /// (`STATUS_FLT_DISALLOW_FAST_IO`, or a failure for cleanup or close).
    InvalidCompletionStatus,
    /// A minifilter's driver unloaded while its filter was still registered (its unload callback
    /// did not call `FltUnregisterFilter`).
    FilterNotUnregistered,
    /// A Filter Manager routine was called with an object it does not know, or in a state the
    /// routine does not accept (a callback data that is not pended, ...).
    InvalidFltObject,
    /// A reference taken to the stack-based file object of a query open
    /// (`IRP_MJ_NETWORK_QUERY_OPEN`, `FastIoQueryOpen`), which its `FLT_PARAMETERS` page forbids:
    /// the object lives on the I/O manager's stack for the call only.
    StackFileObjectReferenced,
    /// An IRP completed with its cancel routine still set, or cancelled once completed with one:
    /// bug check 0x48, `CANCEL_STATE_IN_COMPLETED_IRP` (a driver must call
    /// `IoSetCancelRoutine(Irp, NULL)` before it completes an IRP it made cancelable).
    CancelStateInCompletedIrp,
    /// A cancel routine returned with the cancel spin lock still held: bug check 0x11B,
    /// `DRIVER_RETURNED_HOLDING_CANCEL_LOCK`.
    ReturnedHoldingCancelLock,
    /// An IRP sent down (`IoCallDriver`) with its cancel routine still set: Driver Verifier's
    /// I/O verification, WDM DRIVER ERROR 0x203 (the driver below owns the IRP now; cancelling
    /// it would call the sender's routine for an IRP the sender no longer holds).
    CancelRoutineAtCallDriver,
    /// A minifilter called `FsRtlRegisterFileSystemFilterCallbacks`, which its model does not
    /// use and minifilters must never call (the reference page of `FLT_IS_FS_FILTER_OPERATION`:
    /// the Filter Manager registers FsFilter callbacks for them). The call goes on.
    MinifilterFsFilterRegistration,
    /// `FltUnregisterFilter` while a communication server port of the filter is still open:
    /// the unload must close it with `FltCloseCommunicationPort` first, or it hangs ("Closing
    /// the Communication Server Port"). The simulator closes it and goes on.
    CommunicationPortOpenAtUnregister,
    /// A client port (a connection's kernel end) never closed with `FltCloseClientPort` when its
    /// filter unregistered (its `DisconnectNotifyCallback` should close it).
    ClientPortLeaked,
    /// A `MessageNotifyCallback` said it returned more bytes (`ReturnOutputBufferLength`) than
    /// the output buffer holds (`OutputBufferLength`).
    MessageReplyBeyondBuffer,
    /// A driver completed an `IRP_MJ_CREATE` with no trailing name (a user-mode open of the
    /// volume itself) with `STATUS_REPARSE`: bug check 0xF9,
    /// `DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN` (WRK `IopParseDevice`).
    ReparseForVolumeOpen,
    /// A query open (`FastIoQueryOpen`, `IRP_MJ_NETWORK_QUERY_OPEN`) answered with
    /// `STATUS_REPARSE`: reparse works on IRPs only, so the I/O manager does not follow it and
    /// the caller gets `STATUS_REPARSE` (WRK `IopParseDevice`; Microsoft's SimRep sample answers
    /// `FLT_PREOP_DISALLOW_FSFILTER_IO` instead).
    ReparseOnFastIo,
    /// A driver's image went while an `FSRTL_PER_STREAM_CONTEXT` it inserted
    /// (`FsRtlInsertPerStreamContext`) was still linked on a stream: the file system's
    /// `FsRtlTeardownPerStreamContexts` calls its `FreeCallback` in the unloaded image when the
    /// stream goes (a crash on Windows). Legacy filters remove their contexts before unloading.
    PerStreamContextLinkedAtUnload,
    /// Pool holding a linked `FSRTL_PER_STREAM_CONTEXT` freed (`ExFreePool`,
    /// `ExFreePoolWithTag`) before `FsRtlRemovePerStreamContext`: "Deleting a Per-Stream
    /// Context": otherwise "the system crashes when the file stream is closed". The simulator
    /// unlinks it.
    PerStreamContextFreedWhileLinked,
    /// A per-stream context routine misused: an insertion with a NULL `OwnerId` or
    /// `FreeCallback` (`FSRTL_PER_STREAM_CONTEXT`'s page: both must be set) or of a context
    /// already linked; a lookup or removal with an `InstanceId` and no `OwnerId`
    /// (`FsRtlLookupPerStreamContext`'s page); a removal that takes a context another driver
    /// inserted.
    PerStreamContextMisuse,
    /// An `FSRTL_PER_FILEOBJECT_CONTEXT` (`FsRtlInsertPerFileObjectContext`) still linked on a
    /// file object the I/O manager deletes: "Filter drivers must explicitly remove all context
    /// they associate with a file object (otherwise the underlying filesystem will BugCheck at
    /// close). This should be done at IRP_CLOSE time" (WRK `FsRtlRemovePerFileObjectContext`;
    /// `FsRtlPTeardownPerFileObjectContexts` asserts the list empty). The simulator drops it.
    PerFileObjectContextLinkedAtClose,
    /// A driver's image went while an `FSRTL_PER_FILEOBJECT_CONTEXT` it inserted was still
    /// linked on a file object.
    PerFileObjectContextLinkedAtUnload,
    /// Pool holding a linked `FSRTL_PER_FILEOBJECT_CONTEXT` freed before
    /// `FsRtlRemovePerFileObjectContext`. The simulator unlinks it.
    PerFileObjectContextFreedWhileLinked,
    /// A per-file-object context routine misused: an insertion with a NULL `OwnerId` or of a
    /// context already linked; a lookup or removal with an `InstanceId` and no `OwnerId`; a
    /// removal that takes a context another driver inserted.
    PerFileObjectContextMisuse,
    /// A fast mutex misused (`ExReleaseFastMutex`'s page): released by a thread that does not
    /// own it, or free; released below `APC_LEVEL`, where its acquisition left the caller (the
    /// IRQL lowered meanwhile, or fast mutexes released in another order than the reverse of
    /// their acquisition).
    FastMutexMisuse,
    /// `FsRtlCreateSectionForDataScan` or `FltCreateSectionForDataScan` on a file object the
    /// file system never opened (no `FsContext` and no `SectionObjectPointer`: the file object of
    /// a create that failed or ended `STATUS_REPARSE`, seen in its post): a bug check on
    /// Windows, where the memory manager's file-object path (WRK mm/creasect.c
    /// `MmCreateSection`) reads `FileObject->SectionObjectPointer->DataSectionObject` without a
    /// test (only the file-handle path tests it for `STATUS_INVALID_FILE_FOR_SECTION`). The
    /// simulator reports it before the acquire for section synchronization and answers
    /// `STATUS_INVALID_FILE_FOR_SECTION`.
    SectionOnUnopenedFile,
    /// `KeReleaseMutex` by a thread that does not own the mutex (free, or another thread's):
    /// Windows raises `STATUS_MUTANT_NOT_OWNED` (WRK `base/ntos/ke/mutntobj.c`
    /// `KeReleaseMutant`; `KeReleaseMutex`'s page: "A mutex object can be released only by the
    /// thread that currently holds the mutex"), an exception a driver without a handler does
    /// not survive. The simulator releases nothing.
    MutantNotOwned,
    /// A thread returned to user mode from a system service still owning a kernel mutex, its
    /// normal kernel APCs still disabled: bug check 0x1 `APC_INDEX_MISMATCH` (its page: the
    /// thread's `KernelApcDisable` mismatched at the exit of a system call).
    ApcIndexMismatch,
    /// A worker routine (or other queued work) returned still owning a kernel mutex: bug check
    /// 0x39 `SYSTEM_EXIT_OWNED_MUTEX` ("the worker routine returned without releasing the mutex
    /// object that it owned").
    SystemExitOwnedMutex,
    /// A machine-level failure that Windows would answer with a bugcheck.
    Bugcheck,
}

impl Rule {
    /// The rule's name, as events and reports spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::IrpCompletedTwice => "IRP_COMPLETED_TWICE",
            Rule::CompletedWithStatusPending => "COMPLETED_WITH_STATUS_PENDING",
            Rule::PendingWithoutMark => "PENDING_RETURNED_WITHOUT_IO_MARK_IRP_PENDING",
            Rule::MarkedPendingButNotReturned => "IO_MARK_IRP_PENDING_WITHOUT_STATUS_PENDING",
            Rule::UnknownDispatchResult => "UNKNOWN_DISPATCH_RESULT",
            Rule::IrpReturnedWithoutCompletion => "IRP_RETURNED_WITHOUT_COMPLETION",
            Rule::DispatchStatusDiffersFromIrpStatus => "DISPATCH_STATUS_DIFFERS_FROM_IRP_STATUS",
            Rule::UnloadedDriverCodeRan => "UNLOADED_DRIVER_CODE_RAN",
            Rule::DeviceObjectsLeaked => "DEVICE_OBJECTS_LEAKED_AT_UNLOAD",
            Rule::PoolLeaked => "POOL_LEAKED_AT_UNLOAD",
            Rule::IrpHaltedAtUnload => "IRP_HALTED_AT_UNLOAD",
            Rule::BadPoolFree => "BAD_POOL_FREE",
            Rule::PoolTagMismatch => "POOL_TAG_MISMATCH",
            Rule::AttachToInitializingDevice => "ATTACH_TO_INITIALIZING_DEVICE",
            Rule::IrqlTooHigh => "IRQL_TOO_HIGH",
            Rule::CallToDeletedDevice => "CALL_TO_DELETED_DEVICE",
            Rule::NoMoreStackLocations => "NO_MORE_IRP_STACK_LOCATIONS",
            Rule::Deadlock => "DEADLOCK",
            Rule::FsNotificationLeaked => "FS_NOTIFICATION_LEAKED_AT_UNLOAD",
            Rule::SpinLockMisuse => "SPIN_LOCK_MISUSE",
            Rule::ImageGlobalOutsideImage => "IMAGE_GLOBAL_OUTSIDE_IMAGE",
            Rule::InvalidHandle => "INVALID_HANDLE",
            Rule::ForbiddenRegistration => "FORBIDDEN_OPERATION_REGISTRATION",
            Rule::ForbiddenContextRegistration => "FORBIDDEN_CONTEXT_REGISTRATION",
            Rule::UnknownCallbackStatus => "UNKNOWN_CALLBACK_STATUS",
            Rule::ContextWithoutPost => "COMPLETION_CONTEXT_WITHOUT_POST_CALLBACK",
            Rule::PendingOnFastIo => "PENDING_ON_FAST_IO",
            Rule::CompleteWithPending => "COMPLETE_WITH_STATUS_PENDING",
            Rule::ContextLeaked => "CONTEXT_LEAKED_AT_UNLOAD",
            Rule::SectionLeaked => "SECTION_LEAKED_AT_UNLOAD",
            Rule::FileNameLeaked => "FILE_NAME_LEAKED_AT_UNLOAD",
            Rule::FileNameReleasedTwice => "FILE_NAME_RELEASED_TWICE",
            Rule::SectionHandleNotKernel => "SECTION_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE",
            Rule::KeyHandleNotKernel => "KEY_HANDLE_WITHOUT_OBJ_KERNEL_HANDLE",
            Rule::CallbackAfterUnload => "CALLBACK_AFTER_UNLOAD",
            Rule::CancelFileOpenMisuse => "CANCEL_FILE_OPEN_MISUSE",
            Rule::ObjectOverDereferenced => "OBJECT_OVER_DEREFERENCED",
            Rule::FastIoDetachMissing => "FAST_IO_DETACH_DEVICE_MISSING",
            Rule::DetachNotAttached => "DETACH_FROM_DEVICE_NOT_ATTACHED",
            Rule::DeleteWhileAttached => "DELETE_WHILE_ATTACHED",
            Rule::StatusInvalidForOperation => "CALLBACK_STATUS_INVALID_FOR_OPERATION",
            Rule::PostCallbackMissing => "POST_CALLBACK_NOT_REGISTERED",
            Rule::InvalidCompletionStatus => "INVALID_COMPLETION_STATUS",
            Rule::FilterNotUnregistered => "FILTER_NOT_UNREGISTERED_AT_UNLOAD",
            Rule::InvalidFltObject => "INVALID_FLT_OBJECT",
            Rule::StackFileObjectReferenced => "STACK_FILE_OBJECT_REFERENCED",
            Rule::CancelStateInCompletedIrp => "CANCEL_STATE_IN_COMPLETED_IRP",
            Rule::ReturnedHoldingCancelLock => "DRIVER_RETURNED_HOLDING_CANCEL_LOCK",
            Rule::CancelRoutineAtCallDriver => "CALL_DRIVER_WITH_CANCEL_ROUTINE",
            Rule::MinifilterFsFilterRegistration => "MINIFILTER_FS_FILTER_REGISTRATION",
            Rule::CommunicationPortOpenAtUnregister => "COMMUNICATION_PORT_OPEN_AT_UNREGISTER",
            Rule::ClientPortLeaked => "CLIENT_PORT_LEAKED_AT_UNLOAD",
            Rule::MessageReplyBeyondBuffer => "MESSAGE_REPLY_LENGTH_BEYOND_BUFFER",
            Rule::ReparseForVolumeOpen => "DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN",
            Rule::ReparseOnFastIo => "REPARSE_ON_FAST_IO",
            Rule::PerStreamContextLinkedAtUnload => "PER_STREAM_CONTEXT_LINKED_AT_UNLOAD",
            Rule::PerStreamContextFreedWhileLinked => "PER_STREAM_CONTEXT_FREED_WHILE_LINKED",
            Rule::PerStreamContextMisuse => "PER_STREAM_CONTEXT_MISUSE",
            Rule::PerFileObjectContextLinkedAtClose => "PER_FILE_OBJECT_CONTEXT_LINKED_AT_CLOSE",
            Rule::PerFileObjectContextLinkedAtUnload => "PER_FILE_OBJECT_CONTEXT_LINKED_AT_UNLOAD",
            Rule::PerFileObjectContextFreedWhileLinked => {
                "PER_FILE_OBJECT_CONTEXT_FREED_WHILE_LINKED"
            }
            Rule::PerFileObjectContextMisuse => "PER_FILE_OBJECT_CONTEXT_MISUSE",
            Rule::FastMutexMisuse => "FAST_MUTEX_MISUSE",
            Rule::SectionOnUnopenedFile => "DATA_SCAN_SECTION_ON_UNOPENED_FILE",
            Rule::MutantNotOwned => "MUTANT_NOT_OWNED",
            Rule::ApcIndexMismatch => "APC_INDEX_MISMATCH",
            Rule::SystemExitOwnedMutex => "SYSTEM_EXIT_OWNED_MUTEX",
            Rule::Bugcheck => "BUGCHECK",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A filter-logic callback reported by a backend's trace hook, with the instance resolved to a
/// driver and a volume and the operation to a user request where the simulator knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callback {
    /// `instance_setup`.
    InstanceSetup {
        /// Setup flags.
        flags: InstanceSetupFlags,
        /// The volume as the filter saw it.
        volume: VolumeInfo,
        /// The data-scan mode found.
        data_scan: DataScanMode,
        /// The answer.
        status: Status,
    },
    /// `instance_query_teardown`.
    InstanceQueryTeardown {
        /// The answer.
        status: Status,
    },
    /// `instance_teardown_start`.
    TeardownStart {
        /// Why.
        reason: TeardownFlags,
    },
    /// `instance_teardown_complete`.
    TeardownComplete {
        /// Why.
        reason: TeardownFlags,
    },
    /// `pre_operation`.
    Pre {
        /// The operation.
        major: MajorFunction,
        /// Its minor function.
        minor: u8,
        /// IRP, fast I/O or FsFilter.
        kind: OperationKind,
        /// The outcome's WDK spelling.
        outcome: &'static str,
        /// The completion status for `FLT_PREOP_COMPLETE`.
        status: Option<Status>,
    },
    /// `post_operation`.
    Post {
        /// The operation.
        major: MajorFunction,
        /// Draining.
        draining: bool,
        /// Through `WhenSafe`.
        when_safe: bool,
        /// The outcome's WDK spelling.
        outcome: &'static str,
        /// The operation's status.
        status: Status,
    },
    /// A pended operation resumed.
    Resumed {
        /// How (`FLT_PREOP_*`).
        outcome: &'static str,
    },
    /// The filter's unload callback.
    UnloadCallback {
        /// Flags.
        flags: UnloadFlags,
        /// The filter's answer.
        status: Status,
    },
    /// A data-scan section request.
    DataScan {
        /// How.
        mode: DataScanMode,
        /// Result.
        status: Status,
    },
    /// A section-conflict notification.
    SectionConflict {
        /// The section's identity.
        section: usize,
    },
    /// A note from filter logic.
    Note {
        /// The text.
        text: String,
    },
}

impl Callback {
    /// The scenario.md event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Callback::InstanceSetup { .. } => "instance_setup",
            Callback::InstanceQueryTeardown { .. } => "instance_query_teardown",
            Callback::TeardownStart { .. } => "teardown_start",
            Callback::TeardownComplete { .. } => "teardown_complete",
            Callback::Pre { .. } => "pre",
            Callback::Post { .. } => "post",
            Callback::Resumed { .. } => "resumed",
            Callback::UnloadCallback { .. } => "unload_callback",
            Callback::DataScan { .. } => "data_scan",
            Callback::SectionConflict { .. } => "section_conflict",
            Callback::Note { .. } => "note",
        }
    }

    pub(crate) fn from_trace(event: &TraceEvent<'_>) -> Callback {
        match *event {
            TraceEvent::InstanceSetup { flags, volume, data_scan, status, .. } => {
                Callback::InstanceSetup { flags, volume, data_scan, status }
            }
            TraceEvent::InstanceQueryTeardown { status, .. } => {
                Callback::InstanceQueryTeardown { status }
            }
            TraceEvent::TeardownStart { reason, .. } => Callback::TeardownStart { reason },
            TraceEvent::TeardownComplete { reason, .. } => Callback::TeardownComplete { reason },
            TraceEvent::Pre { major, minor, kind, outcome, status, .. } => {
                Callback::Pre { major, minor, kind, outcome, status }
            }
            TraceEvent::Post { major, draining, when_safe, outcome, status, .. } => {
                Callback::Post { major, draining, when_safe, outcome, status }
            }
            TraceEvent::Resumed { outcome, .. } => Callback::Resumed { outcome },
            TraceEvent::Unload { flags, status } => Callback::UnloadCallback { flags, status },
            TraceEvent::DataScan { mode, status, .. } => Callback::DataScan { mode, status },
            TraceEvent::SectionConflict { section, .. } => {
                Callback::SectionConflict { section: section.0 }
            }
            TraceEvent::Note { text, .. } => Callback::Note { text: text.to_owned() },
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A driver's `DriverEntry` ran (`sc start`, `fltmc load`, or boot).
    Load {
        /// The service.
        driver: String,
        /// `"legacy"`, `"minifilter"` or `"native"`.
        model: &'static str,
        /// `DriverEntry`'s status.
        status: Status,
    },
    /// An unload request and its result.
    Unload {
        /// The service.
        driver: String,
        /// A service stop (mandatory) rather than `fltmc unload`.
        mandatory: bool,
        /// The result.
        status: Status,
    },
    /// A file system registered its control device.
    FileSystemRegistered {
        /// The file system's driver.
        driver: String,
        /// The control device's name.
        device: String,
    },
    /// A device object was attached on top of a stack.
    Attached {
        /// The attaching driver.
        driver: String,
        /// The driver of the device it landed on.
        below: String,
        /// The volume, when the stack is a volume's.
        volume: Option<String>,
    },
    /// A device object was detached.
    Detached {
        /// The detaching driver.
        driver: String,
        /// The volume, when the stack is a volume's.
        volume: Option<String>,
    },
    /// A volume was mounted.
    Mounted {
        /// The volume.
        volume: String,
        /// The file system's driver.
        filesystem: String,
        /// The result.
        status: Status,
    },
    /// A volume was dismounted.
    Dismounted {
        /// The volume.
        volume: String,
    },
    /// A user-mode request started.
    IoStart {
        /// The request.
        io: RequestRef,
        /// The volume.
        volume: Name,
        /// The operation.
        major: MajorFunction,
        /// Fast I/O or IRP.
        fast_io: bool,
    },
    /// A user-mode request completed.
    IoComplete {
        /// The request.
        io: RequestRef,
        /// The volume.
        volume: Name,
        /// Its final status.
        status: Status,
        /// `IoStatus.Information`.
        information: usize,
    },
    /// A callback into filter logic (backend trace hook).
    Callback {
        /// The driver (service) whose logic ran.
        driver: Name,
        /// The volume of the instance, when known.
        volume: Option<Name>,
        /// The user request the operation belongs to, when known.
        io: Option<RequestRef>,
        /// What ran.
        callback: Callback,
    },
    /// A verifier finding.
    Verifier {
        /// The driver at fault, when known.
        driver: Option<String>,
        /// The rule.
        rule: Rule,
        /// What happened.
        message: String,
    },
    /// `DbgPrintEx` output.
    DebugPrint {
        /// The printing driver.
        driver: Option<String>,
        /// The text.
        text: String,
    },
    /// What the Filter Manager did (the kernel's side of instance setup, teardown, callbacks,
    /// frames, data scan), as opposed to [`EventKind::Callback`], which is what a backend's filter
    /// logic reported.
    FltMgr {
        /// The minifilter (service name) concerned, if any.
        driver: Option<Name>,
        /// The volume concerned, if any (its display name).
        volume: Option<Name>,
        /// What happened.
        event: FltEvent,
    },
    /// A simulator-level event of a subsystem, named by `what`, described by `detail`.
    System {
        /// Short machine-readable kind.
        what: &'static str,
        /// The driver concerned, if any.
        driver: Option<String>,
        /// The volume concerned, if any.
        volume: Option<String>,
        /// Free text.
        detail: String,
    },
}

/// A user-mode request's number, as the lab's `"io"` field shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestRef(pub u32);

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Order of the event in the run.
    pub seq: u64,
    /// The scenario step that caused it, or `None` during boot.
    pub step: Option<u32>,
    /// Virtual time, in 100 ns units since boot.
    pub time: u64,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    /// The scenario.md kind of the event.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EventKind::Load { .. } => "load",
            EventKind::Unload { .. } => "unload",
            EventKind::FileSystemRegistered { .. } => "filesystem_registered",
            EventKind::Attached { .. } => "attach",
            EventKind::Detached { .. } => "detach",
            EventKind::Mounted { .. } => "mount",
            EventKind::Dismounted { .. } => "dismount",
            EventKind::IoStart { .. } => "io_start",
            EventKind::IoComplete { .. } => "io_complete",
            EventKind::Callback { callback, .. } => callback.kind(),
            EventKind::Verifier { .. } => "verifier",
            EventKind::DebugPrint { .. } => "debug_print",
            EventKind::FltMgr { event, .. } => event.kind_name(),
            EventKind::System { what, .. } => what,
        }
    }

    /// The rule, for verifier events.
    pub fn rule(&self) -> Option<Rule> {
        match &self.kind {
            EventKind::Verifier { rule, .. } => Some(*rule),
            _ => None,
        }
    }
}

/// Pre or post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A pre-operation callback.
    Pre,
    /// A post-operation callback.
    Post,
}

/// What the Filter Manager did (facts.md §2 to §6). Statuses, flags and operations are the WDK's
/// values; [`FltEvent::lab_kind`] gives the scenario.md kind an event corresponds to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FltEvent {
    /// A frame was created (facts.md §2.2).
    FrameCreated {
        /// Its number.
        frame: u32,
        /// The legacy filter it was created above, when one forced it.
        above: Option<String>,
        /// The altitude of the minifilter it was created for.
        altitude: String,
    },
    /// `FltRegisterFilter` ended.
    FilterRegistered {
        /// The frame the filter was placed in (meaningless on failure).
        frame: u32,
        /// The default instance's altitude (empty when unknown).
        altitude: String,
        /// The result.
        status: Status,
    },
    /// `FltStartFiltering` ended.
    FilterStarted {
        /// The result.
        status: Status,
    },
    /// `FltUnregisterFilter` finished.
    FilterUnregistered,
    /// An instance setup: the callback's answer (or success for a NULL callback), or the
    /// Filter Manager's refusal before any callback.
    InstanceSetup {
        /// The instance name.
        instance: String,
        /// Its altitude.
        altitude: String,
        /// Its frame.
        frame: u32,
        /// `FLTFL_INSTANCE_SETUP_*`.
        flags: fsfilter::InstanceSetupFlags,
        /// `VolumeDeviceType`.
        volume_device_type: u32,
        /// `FLT_FILESYSTEM_TYPE`.
        filesystem: u32,
        /// The callback ran (false: NULL callback, or refused before).
        called: bool,
        /// The result: success attaches.
        status: Status,
    },
    /// `InstanceQueryTeardownCallback` (or the refusal for a NULL one).
    InstanceQueryTeardown {
        /// The instance.
        instance: String,
        /// The callback ran.
        called: bool,
        /// The answer.
        status: Status,
    },
    /// `InstanceTeardownStartCallback` time.
    TeardownStart {
        /// The instance.
        instance: String,
        /// `FLTFL_INSTANCE_TEARDOWN_*`.
        reason: TeardownFlags,
    },
    /// `InstanceTeardownCompleteCallback` time: the instance is gone.
    TeardownComplete {
        /// The instance.
        instance: String,
        /// `FLTFL_INSTANCE_TEARDOWN_*`.
        reason: TeardownFlags,
    },
    /// The filter's `FilterUnloadCallback` ran.
    UnloadCallback {
        /// `FLTFL_FILTER_UNLOAD_MANDATORY`.
        mandatory: bool,
        /// What it returned (ignored when mandatory).
        status: Status,
    },
    /// A pre- or post-operation callback ran.
    Operation {
        /// The instance.
        instance: Name,
        /// Its altitude.
        altitude: Name,
        /// Pre or post.
        phase: Phase,
        /// The operation.
        major: MajorFunction,
        /// IRP, fast I/O or FsFilter.
        kind: OperationKind,
        /// The user request, when known.
        io: Option<RequestRef>,
        /// `FLTFL_POST_OPERATION_DRAINING`.
        draining: bool,
        /// The raw `FLT_PREOP_*` / `FLT_POSTOP_*` value returned.
        outcome: i32,
    },
    /// A data-scan request (`FltRegisterForDataScan`, `FltCreateSectionForDataScan`,
    /// `FltCloseSectionForDataScan`).
    DataScan {
        /// The instance.
        instance: String,
        /// `"register"`, `"create_section"` or `"close_section"`.
        what: &'static str,
        /// The result.
        status: Status,
    },
    /// A section-conflict notification was delivered.
    SectionConflict {
        /// The instance.
        instance: String,
        /// The section context.
        context: usize,
        /// Delivered while `FltCreateSectionForDataScan` had not returned yet.
        during_create: bool,
    },
}

impl FltEvent {
    /// The event kind as `Event::kind_name` spells it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            FltEvent::FrameCreated { .. } => "flt_frame_created",
            FltEvent::FilterRegistered { .. } => "flt_filter_registered",
            FltEvent::FilterStarted { .. } => "flt_filter_started",
            FltEvent::FilterUnregistered => "flt_filter_unregistered",
            FltEvent::InstanceSetup { .. } => "flt_instance_setup",
            FltEvent::InstanceQueryTeardown { .. } => "flt_instance_query_teardown",
            FltEvent::TeardownStart { .. } => "flt_teardown_start",
            FltEvent::TeardownComplete { .. } => "flt_teardown_complete",
            FltEvent::UnloadCallback { .. } => "flt_unload_callback",
            FltEvent::Operation { phase: Phase::Pre, .. } => "flt_pre",
            FltEvent::Operation { phase: Phase::Post, .. } => "flt_post",
            FltEvent::DataScan { .. } => "flt_data_scan",
            FltEvent::SectionConflict { .. } => "flt_section_conflict",
        }
    }

    /// The scenario.md event kind this event reports, where there is one.
    pub fn lab_kind(&self) -> Option<&'static str> {
        match self {
            FltEvent::InstanceSetup { .. } => Some("instance_setup"),
            FltEvent::InstanceQueryTeardown { .. } => Some("instance_query_teardown"),
            FltEvent::TeardownStart { .. } => Some("teardown_start"),
            FltEvent::TeardownComplete { .. } => Some("teardown_complete"),
            FltEvent::UnloadCallback { .. } => Some("unload"),
            FltEvent::Operation { phase: Phase::Pre, .. } => Some("pre"),
            FltEvent::Operation { phase: Phase::Post, .. } => Some("post"),
            FltEvent::DataScan { .. } => Some("data_scan"),
            FltEvent::SectionConflict { .. } => Some("section_conflict"),
            _ => None,
        }
    }
}

/// The machine's event log ([`crate::kernel::Kernel::events`]): the events in order, read as a
/// slice, and which of them own memory on the heap.
///
/// The events of the hot paths (requests, callbacks, the Filter Manager's operations) hold only
/// interned names and plain values, so dropping them frees nothing. [`clear`] drops the few
/// events that own something (text, a counted name) and forgets the others at once, instead of
/// visiting every event of the log to run drop glue that does nothing: a long run's log is
/// megabytes, and the visit was about 5% of a 4-filter stack's time per request
/// (docs/performance-history.md).
///
/// [`clear`]: EventLog::clear
#[derive(Default)]
pub struct EventLog {
    events: Vec<Event>,
    /// The indices of the events that may own heap memory, in order.
    owning: Vec<usize>,
}

impl EventLog {
    /// Appends an event.
    pub fn push(&mut self, event: Event) {
        if !event.owns_nothing() {
            self.owning.push(self.events.len());
        }
        self.events.push(event);
    }

    /// Empties the log, keeping its capacity.
    pub fn clear(&mut self) {
        for i in self.owning.drain(..) {
            if let Some(e) = self.events.get_mut(i) {
                drop(std::mem::replace(e, Event::NOTHING));
            }
        }
        // SAFETY: a length of 0 is within the capacity and leaves no element to read. The events
        // are forgotten, not dropped, and none of them owns heap memory: every event that did
        // not answer `owns_nothing` when it was pushed was replaced (and dropped) just above,
        // so nothing leaks.
        unsafe { self.events.set_len(0) };
    }

    /// A copy of the events.
    pub fn to_vec(&self) -> Vec<Event> {
        self.events.clone()
    }
}

impl std::ops::Deref for EventLog {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.events
    }
}

impl Event {
    /// An event that owns nothing, put in place of an event the log drops.
    const NOTHING: Event = Event {
        seq: 0,
        step: None,
        time: 0,
        kind: EventKind::Unload { driver: String::new(), mandatory: false, status: Status(0) },
    };

    /// Whether dropping the event frees nothing: a kind of the hot paths whose names are all
    /// interned. Conservative: any other kind answers false, whether or not it holds text.
    fn owns_nothing(&self) -> bool {
        let interned = |n: &Option<Name>| n.as_ref().is_none_or(Name::is_interned);
        match &self.kind {
            EventKind::IoStart { volume, .. } | EventKind::IoComplete { volume, .. } => {
                volume.is_interned()
            }
            EventKind::Callback { driver, volume, callback, .. } => {
                driver.is_interned()
                    && interned(volume)
                    && matches!(
                        callback,
                        Callback::Pre { .. } | Callback::Post { .. } | Callback::Resumed { .. }
                    )
            }
            EventKind::FltMgr {
                driver,
                volume,
                event: FltEvent::Operation { instance, altitude, .. },
            } => {
                interned(driver)
                    && interned(volume)
                    && instance.is_interned()
                    && altitude.is_interned()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, kind: EventKind) -> Event {
        Event { seq, step: None, time: 0, kind }
    }

    fn pre(driver: Name) -> EventKind {
        EventKind::Callback {
            driver,
            volume: Some(Name::from("C:")),
            io: Some(RequestRef(1)),
            callback: Callback::Pre {
                major: MajorFunction::Read,
                minor: 0,
                kind: OperationKind::Irp,
                outcome: "FLT_PREOP_SUCCESS_WITH_CALLBACK",
                status: None,
            },
        }
    }

    fn operation(instance: Name) -> EventKind {
        EventKind::FltMgr {
            driver: Some(Name::from("Filter0")),
            volume: Some(Name::from("C:")),
            event: FltEvent::Operation {
                instance,
                altitude: Name::from("370000"),
                phase: Phase::Pre,
                major: MajorFunction::Read,
                kind: OperationKind::Irp,
                io: None,
                draining: false,
                outcome: 0,
            },
        }
    }

    #[test]
    fn a_log_of_hot_events_with_interned_names_owns_nothing_and_empties() {
        let mut log = EventLog::default();
        log.push(event(
            0,
            EventKind::IoStart {
                io: RequestRef(1),
                volume: Name::from("C:"),
                major: MajorFunction::Read,
                fast_io: false,
            },
        ));
        log.push(event(1, pre(Name::from("Filter0"))));
        log.push(event(2, operation(Name::from("Filter0 Instance"))));
        assert!(log.owning.is_empty(), "only interned names and plain values");
        assert_eq!(log.len(), 3);
        assert_eq!(log.to_vec().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
        log.clear();
        assert!(log.is_empty());
        // The log keeps working after a clear that forgot its events.
        log.push(event(3, pre(Name::from("Filter1"))));
        assert_eq!(log.first().map(|e| e.seq), Some(3));
    }

    #[test]
    fn events_that_own_text_or_counted_names_are_dropped_when_the_log_empties() {
        // Under Miri, a forgotten counted name or string here would be reported as a leak.
        let long = "F".repeat(crate::name::INTERN_MAX_LEN + 1);
        let owning = [
            EventKind::Verifier {
                driver: Some("Filter0".into()),
                rule: Rule::IrpCompletedTwice,
                message: "completed twice".into(),
            },
            pre(Name::from(long.as_str())),
            operation(Name::from(long.as_str())),
            EventKind::Callback {
                driver: Name::from("Filter0"),
                volume: None,
                io: None,
                callback: Callback::Note { text: "a note".into() },
            },
        ];
        for kind in owning {
            let mut log = EventLog::default();
            log.push(event(0, pre(Name::from("Filter0"))));
            log.push(event(1, kind));
            log.push(event(2, pre(Name::from("Filter1"))));
            assert_eq!(log.owning, vec![1], "{:?}", log.get(1));
            log.clear();
            assert!(log.is_empty() && log.owning.is_empty());
        }
    }
}
