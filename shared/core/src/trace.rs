//! Trace events: what a backend reports of every callback it makes into filter logic, named alike
//! under both models (scenario.md: `instance_setup`, `pre`, `post`, ...). A backend hands each
//! event to `fsfilter-kernel`'s trace hook: `DbgPrintEx` on Windows, the event log in the
//! simulator.

use crate::filter::{InstanceId, VolumeInfo};
use crate::flags::{InstanceSetupFlags, TeardownFlags, UnloadFlags};
use crate::major::{MajorFunction, OperationKind};
use crate::services::{DataScanMode, SectionId};
use crate::status::Status;

/// One callback into filter logic, or a note from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceEvent<'a> {
    /// `instance_setup` ran (or, without the callback, the attachment was made).
    InstanceSetup {
        /// The instance.
        instance: InstanceId,
        /// A kernel object of the volume the instance is for, which the host can resolve while
        /// the instance is not attached yet: the volume device below (legacy) or the
        /// `FLT_VOLUME` (minifilter).
        volume_object: usize,
        /// Setup flags.
        flags: InstanceSetupFlags,
        /// The volume.
        volume: VolumeInfo,
        /// The data-scan mode found for the volume.
        data_scan: DataScanMode,
        /// `STATUS_SUCCESS` when attached, otherwise the refusal.
        status: Status,
    },
    /// `instance_query_teardown` ran.
    InstanceQueryTeardown {
        /// The instance.
        instance: InstanceId,
        /// Its answer.
        status: Status,
    },
    /// `instance_teardown_start` ran.
    TeardownStart {
        /// The instance.
        instance: InstanceId,
        /// Why.
        reason: TeardownFlags,
    },
    /// `instance_teardown_complete` ran.
    TeardownComplete {
        /// The instance.
        instance: InstanceId,
        /// Why.
        reason: TeardownFlags,
    },
    /// `pre_operation` ran.
    Pre {
        /// The instance.
        instance: InstanceId,
        /// The backend's identity for the operation.
        operation: usize,
        /// The major function.
        major: MajorFunction,
        /// The minor function.
        minor: u8,
        /// IRP, fast I/O or FsFilter.
        kind: OperationKind,
        /// The outcome's WDK spelling.
        outcome: &'static str,
        /// The completion status, for `FLT_PREOP_COMPLETE`.
        status: Option<Status>,
    },
    /// `post_operation` (or `post_operation_when_safe`) ran.
    Post {
        /// The instance.
        instance: InstanceId,
        /// The backend's identity for the operation.
        operation: usize,
        /// The major function.
        major: MajorFunction,
        /// The instance is being torn down.
        draining: bool,
        /// Called through [`crate::PostOutcome::WhenSafe`].
        when_safe: bool,
        /// The outcome's WDK spelling.
        outcome: &'static str,
        /// The operation's status.
        status: Status,
    },
    /// A pended operation was resumed.
    Resumed {
        /// The instance.
        instance: InstanceId,
        /// The operation.
        operation: usize,
        /// How it continued (`FLT_PREOP_*` spelling).
        outcome: &'static str,
    },
    /// `unload` ran (or the backend decided without it).
    Unload {
        /// Mandatory or not.
        flags: UnloadFlags,
        /// The answer.
        status: Status,
    },
    /// A data-scan section was requested.
    DataScan {
        /// The instance.
        instance: InstanceId,
        /// The operation it was requested in.
        operation: usize,
        /// How it was created.
        mode: DataScanMode,
        /// The result.
        status: Status,
    },
    /// `section_conflict` ran.
    SectionConflict {
        /// The instance.
        instance: InstanceId,
        /// The section.
        section: SectionId,
    },
    /// A note from filter logic.
    Note {
        /// The instance, when the note came from an instance's callback.
        instance: Option<InstanceId>,
        /// The operation, when it came from an operation's callback.
        operation: Option<usize>,
        /// The text.
        text: &'a str,
    },
}

impl TraceEvent<'_> {
    /// The event's kind as scenario.md's JSON names it.
    pub const fn kind(&self) -> &'static str {
        match self {
            TraceEvent::InstanceSetup { .. } => "instance_setup",
            TraceEvent::InstanceQueryTeardown { .. } => "instance_query_teardown",
            TraceEvent::TeardownStart { .. } => "teardown_start",
            TraceEvent::TeardownComplete { .. } => "teardown_complete",
            TraceEvent::Pre { .. } => "pre",
            TraceEvent::Post { .. } => "post",
            TraceEvent::Resumed { .. } => "resumed",
            TraceEvent::Unload { .. } => "unload_callback",
            TraceEvent::DataScan { .. } => "data_scan",
            TraceEvent::SectionConflict { .. } => "section_conflict",
            TraceEvent::Note { .. } => "note",
        }
    }
}
