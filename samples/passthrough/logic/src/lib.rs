//! passthrough: the fsfilter counterpart of Microsoft's passThrough minifilter sample.
//!
//! It registers every operation a file-system stack receives, with pre and post callbacks, and
//! changes nothing: every pre callback answers `FLT_PREOP_SUCCESS_WITH_CALLBACK`, every post
//! callback `FLT_POSTOP_FINISHED_PROCESSING`. With the service parameter `Trace` (DWORD 1) each
//! callback adds a trace note, as passThrough's `PtDebugTraceLevel` makes it `DbgPrint`.
//!
//! Mapping to passThrough.c: `PtInstanceSetup` → [`Filter::instance_setup`] (attach everywhere),
//! `PtInstanceQueryTeardown` → allow, `PtInstanceTeardownStart/Complete` → trace only,
//! `PtUnload` → allow (the backend unregisters), `PtPreOperationPassThrough` →
//! [`Filter::pre_operation`], `PtPostOperationPassThrough` → [`Filter::post_operation`].

#![no_std]
#![forbid(unsafe_code)]

use fsfilter::{
    Filter, Instance, InstanceSetup, PostFlags, PostOperation, PostOutcome, PreOperation,
    PreOutcome, Registration, Result, ServiceParameters, TeardownFlags, UnloadFlags,
};

/// The passthrough filter.
#[derive(Debug)]
pub struct Passthrough {
    trace: bool,
}

impl Passthrough {
    /// A passthrough filter; `trace` adds a note per callback.
    pub const fn new(trace: bool) -> Passthrough {
        Passthrough { trace }
    }

    /// True when every callback adds a trace note.
    pub const fn traces(&self) -> bool {
        self.trace
    }
}

/// The parameters passthrough reads.
pub const PARAMETERS: &[fsfilter::ParameterDoc] = &[fsfilter::ParameterDoc {
    name: "Trace",
    kind: "REG_DWORD",
    default: "0",
    description: "1 adds a trace note for every callback (passThrough's PtDebugTraceLevel).",
}];

/// Every legal operation with both callbacks, like passThrough's `Callbacks` table; every
/// optional callback present.
pub const REGISTRATION: Registration = Registration::new().every_operation(true, true).validated();

impl Filter for Passthrough {
    const REGISTRATION: Registration = REGISTRATION;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Passthrough> {
        // A DWORD, as documented (and as passThrough's PtDebugTraceLevel is a number): reading it
        // with `flag` would also accept strings, and link a string parser into every build.
        Ok(Passthrough::new(parameters.dword("Trace").is_some_and(|v| v != 0)))
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
        if self.trace {
            setup.services.note("passthrough: instance setup, attaching");
        }
        Ok(())
    }

    fn instance_query_teardown(&self, _instance: &Instance<'_, ()>) -> Result<()> {
        Ok(())
    }

    fn instance_teardown_start(&self, _instance: &Instance<'_, ()>, _reason: TeardownFlags) {}

    fn instance_teardown_complete(&self, _instance: &Instance<'_, ()>, _reason: TeardownFlags) {}

    // Inline: the backends call filter logic through generics, so a callback this small costs
    // no call at all (docs/performance-history.md, the legacy create, late on December 5).
    #[inline]
    fn pre_operation(
        &self,
        _instance: &Instance<'_, ()>,
        operation: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        if self.trace {
            operation.services().note("passthrough: pre-operation");
        }
        PreOutcome::WithPost(())
    }

    #[inline]
    fn post_operation(
        &self,
        _instance: &Instance<'_, ()>,
        operation: &mut PostOperation<'_>,
        _context: (),
        _flags: PostFlags,
    ) -> PostOutcome<()> {
        if self.trace {
            operation.services().note("passthrough: post-operation");
        }
        PostOutcome::Finished
    }

    fn unload(&self, _flags: UnloadFlags) -> Result<()> {
        Ok(())
    }
}

/// Passthrough registered without an unload callback: like sfilter's release build, a filter that
/// can never be unloaded (`DriverUnload` stays NULL; the minifilter has no
/// `FilterUnloadCallback`). The legacy backend then sets plain completion routines, with no
/// per-IRP `IoSetCompletionRoutineEx`, as the benchmarks' raw legacy filter does
/// (docs/performance.md). Everything else is passthrough's.
#[derive(Debug)]
pub struct Resident(Passthrough);

/// [`REGISTRATION`] without the unload callback.
pub const RESIDENT_REGISTRATION: Registration = REGISTRATION.unload_callback(false).validated();

impl Filter for Resident {
    const REGISTRATION: Registration = RESIDENT_REGISTRATION;
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Resident> {
        Passthrough::load(parameters).map(Resident)
    }

    fn instance_setup(&self, setup: &InstanceSetup<'_>) -> Result<()> {
        self.0.instance_setup(setup)
    }

    fn instance_query_teardown(&self, instance: &Instance<'_, ()>) -> Result<()> {
        self.0.instance_query_teardown(instance)
    }

    #[inline]
    fn pre_operation(
        &self,
        instance: &Instance<'_, ()>,
        operation: &mut PreOperation<'_, ()>,
    ) -> PreOutcome<()> {
        self.0.pre_operation(instance, operation)
    }

    #[inline]
    fn post_operation(
        &self,
        instance: &Instance<'_, ()>,
        operation: &mut PostOperation<'_>,
        context: (),
        flags: PostFlags,
    ) -> PostOutcome<()> {
        self.0.post_operation(instance, operation, context, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fsfilter::{MajorFunction, ParameterList, ParameterValue};

    #[test]
    fn registers_what_passthrough_registers() {
        // facts.md §3: everything but POWER, SYSTEM_CONTROL and DEVICE_CHANGE; SHUTDOWN pre only.
        assert!(REGISTRATION.get(MajorFunction::Power).is_none());
        assert!(REGISTRATION.get(MajorFunction::SystemControl).is_none());
        assert!(REGISTRATION.get(MajorFunction::DeviceChange).is_none());
        assert!(!REGISTRATION.get(MajorFunction::Shutdown).unwrap().post);
        for op in REGISTRATION.operations() {
            assert!(op.pre, "{:?}", op.major);
            assert!(op.flags.is_empty(), "no skip flags");
        }
        assert!(REGISTRATION.callbacks().filter_unload);
        assert!(REGISTRATION.callbacks().instance_query_teardown);
        // The operation table of passThrough.c (facts.md S60), in the order of `MajorFunction::ALL`:
        // IRP_MJ_QUERY_OPEN, newer than the sample, is not in it.
        let names = [
            "IRP_MJ_CREATE",
            "IRP_MJ_CREATE_NAMED_PIPE",
            "IRP_MJ_CLOSE",
            "IRP_MJ_READ",
            "IRP_MJ_WRITE",
            "IRP_MJ_QUERY_INFORMATION",
            "IRP_MJ_SET_INFORMATION",
            "IRP_MJ_QUERY_EA",
            "IRP_MJ_SET_EA",
            "IRP_MJ_FLUSH_BUFFERS",
            "IRP_MJ_QUERY_VOLUME_INFORMATION",
            "IRP_MJ_SET_VOLUME_INFORMATION",
            "IRP_MJ_DIRECTORY_CONTROL",
            "IRP_MJ_FILE_SYSTEM_CONTROL",
            "IRP_MJ_DEVICE_CONTROL",
            "IRP_MJ_INTERNAL_DEVICE_CONTROL",
            "IRP_MJ_SHUTDOWN",
            "IRP_MJ_LOCK_CONTROL",
            "IRP_MJ_CLEANUP",
            "IRP_MJ_CREATE_MAILSLOT",
            "IRP_MJ_QUERY_SECURITY",
            "IRP_MJ_SET_SECURITY",
            "IRP_MJ_QUERY_QUOTA",
            "IRP_MJ_SET_QUOTA",
            "IRP_MJ_PNP",
            "IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION",
            "IRP_MJ_RELEASE_FOR_SECTION_SYNCHRONIZATION",
            "IRP_MJ_ACQUIRE_FOR_MOD_WRITE",
            "IRP_MJ_RELEASE_FOR_MOD_WRITE",
            "IRP_MJ_ACQUIRE_FOR_CC_FLUSH",
            "IRP_MJ_RELEASE_FOR_CC_FLUSH",
            "IRP_MJ_FAST_IO_CHECK_IF_POSSIBLE",
            "IRP_MJ_NETWORK_QUERY_OPEN",
            "IRP_MJ_MDL_READ",
            "IRP_MJ_MDL_READ_COMPLETE",
            "IRP_MJ_PREPARE_MDL_WRITE",
            "IRP_MJ_MDL_WRITE_COMPLETE",
            "IRP_MJ_VOLUME_MOUNT",
            "IRP_MJ_VOLUME_DISMOUNT",
        ];
        let registered = REGISTRATION.operations();
        assert_eq!(registered.len(), names.len());
        for (op, name) in registered.iter().zip(names) {
            assert_eq!(op.major.name(), Some(name));
        }
        // The resident variant differs by the unload callback only.
        assert!(!RESIDENT_REGISTRATION.callbacks().filter_unload);
        assert_eq!(RESIDENT_REGISTRATION.operations(), REGISTRATION.operations());
        assert_eq!(RESIDENT_REGISTRATION.unload_callback(true), REGISTRATION);
    }

    #[test]
    fn trace_comes_from_the_parameters_key() {
        let on = ParameterList {
            service: "PassThrough",
            values: &[("Trace", ParameterValue::Dword(1))],
        };
        assert!(Passthrough::load(&on).unwrap().traces());
        let off = ParameterList { service: "PassThrough", values: &[] };
        assert!(!Passthrough::load(&off).unwrap().traces());
        let zero = ParameterList {
            service: "PassThrough",
            values: &[("Trace", ParameterValue::Dword(0))],
        };
        assert!(!Passthrough::load(&zero).unwrap().traces());
        // A REG_SZ is not the documented kind: ignored.
        let text = ParameterList {
            service: "PassThrough",
            values: &[("Trace", ParameterValue::String("1"))],
        };
        assert!(!Passthrough::load(&text).unwrap().traces());
    }
}
