//! The `FLT_OPERATION_REGISTRATION` and `FLT_REGISTRATION` tables, derived from a filter's
//! [`Registration`] by `const fn`s: for the filter's const registration they are evaluated at
//! compile time into static data; a registration built at run time (from service parameters) is
//! laid out by the same code into pool memory.

use core::marker::PhantomData;
use core::ptr;

use fsfilter::{Filter, MAX_REGISTERED, MajorFunction, Registration};
use fsfilter_kernel::constants::{FLT_REGISTRATION_VERSION_0203, IRP_MJ_OPERATION_END};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT, FLT_OPERATION_REGISTRATION,
    FLT_REGISTRATION, FLT_SECTION_CONTEXT, FLT_STREAM_CONTEXT, FLT_STREAMHANDLE_CONTEXT,
};

use crate::{callbacks, contexts};
use fsfilter_kernel::datascan::SectionState;

use crate::state::{
    GUARDED, HANDLE_CONTEXT_TAG, INSTANCE_CONTEXT_TAG, InstanceState, SECTION_CONTEXT_TAG,
    STREAM_CONTEXT_TAG,
};

/// Entries of the operation table: one per registered operation plus the `IRP_MJ_OPERATION_END`
/// sentinel.
pub const OPERATION_TABLE_LEN: usize = MAX_REGISTERED + 1;
/// Entries of the context table: instance, section, end.
pub const CONTEXT_TABLE_LEN: usize = 3;

const fn sentinel() -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        MajorFunction: IRP_MJ_OPERATION_END,
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: ptr::null_mut(),
    }
}

/// The operation table for `registration`, with `F`'s trampolines, ended by the sentinel.
///
/// A registration that scans data gets the pre trampoline for the operations that conflict with
/// data-scan sections ([`GUARDED`]: writes and set-information), registered or not, and without
/// skip flags: the FsRtl fallback's conflicts are the caller's to handle (facts.md §6), so the
/// backend must see each of them; the trampoline then applies the filter's own registration of
/// the operation ([`crate::state::Registered::guarded`]).
pub const fn operation_table<F: Filter>(
    registration: &Registration,
) -> [FLT_OPERATION_REGISTRATION; OPERATION_TABLE_LEN] {
    let mut table = [sentinel(); OPERATION_TABLE_LEN];
    // A filter type that does not scan data never does (`Registered::of`).
    let scans = fsfilter::scans_data::<F>() && registration.scans_data();
    let mut i = 0;
    let mut rest = registration.operations();
    while let [op, tail @ ..] = rest {
        rest = tail;
        let guarded = scans && is_guarded(op.major);
        let entry = FLT_OPERATION_REGISTRATION {
            MajorFunction: op.major.code(),
            Flags: if guarded { 0 } else { op.flags.bits() },
            PreOperation: if op.pre || guarded {
                Some(callbacks::pre_operation::<F>)
            } else {
                None
            },
            PostOperation: if op.post { Some(callbacks::post_operation::<F>) } else { None },
            Reserved1: ptr::null_mut(),
        };
        // A registration has at most MAX_REGISTERED entries, so the sentinel slot stays.
        if let Some((_, [slot, ..])) = table.split_at_mut_checked(i) {
            *slot = entry;
        }
        i += 1;
    }
    let mut guarded: &[MajorFunction] = if scans { &GUARDED } else { &[] };
    while let [major, tail @ ..] = guarded {
        let major = *major;
        guarded = tail;
        if registration.get(major).is_some() {
            continue;
        }
        // Not registered by the filter, so the registration has fewer than MAX_REGISTERED
        // entries and the sentinel slot stays (checked all the same).
        if i >= MAX_REGISTERED {
            break;
        }
        if let Some((_, [slot, ..])) = table.split_at_mut_checked(i) {
            *slot = FLT_OPERATION_REGISTRATION {
                MajorFunction: major.code(),
                Flags: 0,
                PreOperation: Some(callbacks::pre_operation::<F>),
                PostOperation: None,
                Reserved1: ptr::null_mut(),
            };
        }
        i += 1;
    }
    table
}

/// True for the operations in [`GUARDED`].
const fn is_guarded(major: MajorFunction) -> bool {
    let mut rest: &[MajorFunction] = &GUARDED;
    while let [m, tail @ ..] = rest {
        if m.code() == major.code() {
            return true;
        }
        rest = tail;
    }
    false
}

/// The context table: the instance context always (it holds the filter's instance state), the
/// section context when the filter scans data.
pub const fn context_table<F: Filter>(
    registration: &Registration,
) -> [FLT_CONTEXT_REGISTRATION; CONTEXT_TABLE_LEN] {
    let end = FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: ptr::null_mut(),
    };
    let instance = FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_INSTANCE_CONTEXT as u16,
        Flags: 0,
        ContextCleanupCallback: Some(callbacks::instance_context_cleanup::<F>),
        Size: core::mem::size_of::<InstanceState<F>>(),
        PoolTag: INSTANCE_CONTEXT_TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: ptr::null_mut(),
    };
    let section = FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_SECTION_CONTEXT as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: core::mem::size_of::<SectionState>(),
        PoolTag: SECTION_CONTEXT_TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: ptr::null_mut(),
    };
    if registration.scans_data() { [instance, section, end] } else { [instance, end, end] }
}

/// Entries of the context table of a filter that declares stream or handle contexts: instance,
/// section, stream, stream handle, end.
pub const STREAM_CONTEXT_TABLE_LEN: usize = CONTEXT_TABLE_LEN + 2;

/// The context table of a filter that declares [`Filter::STREAM_CONTEXT_WORDS`] (rule 28): the
/// entries of [`context_table`] for `F`'s constant registration, then `FLT_STREAM_CONTEXT` of one
/// header word and the filter's words, whose cleanup callback tells the filter
/// (`contexts::stream_context_cleanup`). Also the table of such a filter's run-time registration:
/// one of those only turns data scanning off (`fsfilter::registration_in_force`), and a section
/// context type registered but never allocated costs nothing. Only evaluated for such a filter.
pub const fn stream_context_table<F: Filter>()
-> [FLT_CONTEXT_REGISTRATION; STREAM_CONTEXT_TABLE_LEN] {
    let stream = FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_STREAM_CONTEXT as u16,
        Flags: 0,
        ContextCleanupCallback: Some(contexts::stream_context_cleanup::<F>),
        Size: contexts::block_size::<F>(),
        PoolTag: STREAM_CONTEXT_TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: ptr::null_mut(),
    };
    let handle = FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_STREAMHANDLE_CONTEXT as u16,
        Flags: 0,
        ContextCleanupCallback: Some(contexts::handle_context_cleanup::<F>),
        Size: contexts::handle_block_size::<F>(),
        PoolTag: HANDLE_CONTEXT_TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: ptr::null_mut(),
    };
    let [instance, second, end] = context_table::<F>(&F::REGISTRATION);
    let streams = fsfilter::stream_context_words::<F>() > 0;
    let handles = fsfilter::handle_context_words::<F>() > 0;
    match (fsfilter::scans_data::<F>(), streams, handles) {
        (true, true, true) => [instance, second, stream, handle, end],
        (true, true, false) => [instance, second, stream, end, end],
        (true, false, true) => [instance, second, handle, end, end],
        (false, true, true) => [instance, stream, handle, end, end],
        (false, true, false) => [instance, stream, end, end, end],
        (false, false, true) => [instance, handle, end, end, end],
        (_, false, false) => [instance, second, end, end, end],
    }
}

/// `FLT_REGISTRATION` (version 0x0203, Windows 8: the section-conflict callback exists) pointing
/// at the given tables. Optional callbacks the registration does not declare are NULL, with the
/// Filter Manager's meaning of NULL.
pub const fn registration_block<F: Filter>(
    registration: &Registration,
    operations: *const FLT_OPERATION_REGISTRATION,
    contexts: *const FLT_CONTEXT_REGISTRATION,
) -> FLT_REGISTRATION {
    let cb = registration.callbacks();
    FLT_REGISTRATION {
        Size: core::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: FLT_REGISTRATION_VERSION_0203,
        Flags: registration.registration_flags().bits(),
        ContextRegistration: contexts,
        OperationRegistration: operations,
        FilterUnloadCallback: if cb.filter_unload {
            Some(callbacks::filter_unload::<F>)
        } else {
            None
        },
        // Registered whether or not the filter declares the callback: without one it attaches
        // every volume, and the backend builds the default state there (`instance_setup`).
        InstanceSetupCallback: Some(callbacks::instance_setup::<F>),
        InstanceQueryTeardownCallback: if cb.instance_query_teardown {
            Some(callbacks::instance_query_teardown::<F>)
        } else {
            None
        },
        InstanceTeardownStartCallback: if cb.instance_teardown_start {
            Some(callbacks::instance_teardown_start::<F>)
        } else {
            None
        },
        InstanceTeardownCompleteCallback: if cb.instance_teardown_complete {
            Some(callbacks::instance_teardown_complete::<F>)
        } else {
            None
        },
        GenerateFileNameCallback: None,
        NormalizeNameComponentCallback: None,
        NormalizeContextCleanupCallback: None,
        TransactionNotificationCallback: None,
        NormalizeNameComponentExCallback: None,
        SectionNotificationCallback: if cb.section_notification {
            Some(callbacks::section_conflict::<F>)
        } else {
            None
        },
    }
}

/// The tables of `F`'s const registration, as static data.
pub struct StaticTables<F>(PhantomData<F>);

impl<F: Filter> StaticTables<F> {
    const OPERATIONS: [FLT_OPERATION_REGISTRATION; OPERATION_TABLE_LEN] =
        operation_table::<F>(&F::REGISTRATION);
    const CONTEXTS: [FLT_CONTEXT_REGISTRATION; CONTEXT_TABLE_LEN] =
        context_table::<F>(&F::REGISTRATION);
    /// Only evaluated (and only in the image) for a filter that declares stream contexts.
    const STREAM_CONTEXTS: [FLT_CONTEXT_REGISTRATION; STREAM_CONTEXT_TABLE_LEN] =
        stream_context_table::<F>();
    const REGISTRATION: FLT_REGISTRATION = registration_block::<F>(
        &F::REGISTRATION,
        Self::OPERATIONS.as_ptr(),
        if fsfilter::context_words::<F>() == 0 {
            Self::CONTEXTS.as_ptr()
        } else {
            Self::STREAM_CONTEXTS.as_ptr()
        },
    );

    /// The `FLT_REGISTRATION` to pass to `FltRegisterFilter`.
    pub fn registration() -> &'static FLT_REGISTRATION {
        const { &Self::REGISTRATION }
    }

    /// The stream-context table of a filter that declares stream contexts.
    fn stream_contexts() -> *const FLT_CONTEXT_REGISTRATION {
        const { &Self::STREAM_CONTEXTS }.as_ptr()
    }

    /// The operation table.
    pub fn operations() -> &'static [FLT_OPERATION_REGISTRATION; OPERATION_TABLE_LEN] {
        const { &Self::OPERATIONS }
    }
}

/// Tables for a registration built at run time, laid out in one pool block so that the
/// registration's pointers stay valid while the filter is registered.
pub struct RuntimeTables {
    operations: [FLT_OPERATION_REGISTRATION; OPERATION_TABLE_LEN],
    contexts: [FLT_CONTEXT_REGISTRATION; CONTEXT_TABLE_LEN],
    registration: FLT_REGISTRATION,
}

impl RuntimeTables {
    /// Fills the tables. [`RuntimeTables::link`] must run once the value has its final address.
    pub fn new<F: Filter>(registration: &Registration) -> RuntimeTables {
        RuntimeTables {
            operations: operation_table::<F>(registration),
            contexts: context_table::<F>(registration),
            registration: registration_block::<F>(registration, ptr::null(), ptr::null()),
        }
    }

    /// Points the registration at the tables beside it (at `F`'s static stream-context table
    /// when `F` declares stream contexts) and returns it.
    pub fn link<F: Filter>(&mut self) -> *const FLT_REGISTRATION {
        self.registration.OperationRegistration = self.operations.as_ptr();
        self.registration.ContextRegistration = if fsfilter::context_words::<F>() == 0 {
            self.contexts.as_ptr()
        } else {
            StaticTables::<F>::stream_contexts()
        };
        &self.registration
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use fsfilter::{Filter, MajorFunction, Operation, OperationFlags, Registration};

    use super::*;
    use crate::state::Registered;
    use crate::state::tests::{Plain, Scanning};

    /// (major, flags, pre, post) of each entry before the sentinel.
    fn entries<F: Filter>(r: &Registration) -> Vec<(u8, u32, bool, bool)> {
        let table = operation_table::<F>(r);
        let end = table.iter().position(|e| e.MajorFunction == IRP_MJ_OPERATION_END).unwrap();
        assert!(table[end..].iter().all(|e| e.MajorFunction == IRP_MJ_OPERATION_END));
        table[..end]
            .iter()
            .map(|e| {
                (e.MajorFunction, e.Flags, e.PreOperation.is_some(), e.PostOperation.is_some())
            })
            .collect()
    }

    const WRITE: u8 = MajorFunction::Write.code();
    const SET_INFORMATION: u8 = MajorFunction::SetInformation.code();
    const CREATE: u8 = MajorFunction::Create.code();

    #[test]
    fn a_filter_that_does_not_scan_gets_exactly_its_registration() {
        let r = Registration::new()
            .operation(Operation::new(MajorFunction::Create).post())
            .operation(
                Operation::new(MajorFunction::Write).post().skip(OperationFlags::SKIP_PAGING_IO),
            )
            .validated();
        let paging = OperationFlags::SKIP_PAGING_IO.bits();
        let expected = [(CREATE, 0, false, true), (WRITE, paging, false, true)];
        assert_eq!(entries::<Plain>(&r), expected);
        assert_eq!(entries::<Scanning>(&r), expected, "this registration does not scan");
        assert_eq!(Registered::of::<Plain>(&r).guarded(MajorFunction::Write), None);
    }

    #[test]
    fn a_scanning_filter_gets_a_pre_callback_for_every_conflicting_operation() {
        // facts.md §6: the FsRtl fallback's conflicts are the caller's; the backend's pre
        // callback must see every write and set-information, so their skip flags move into the
        // trampoline (state::Registered::guarded).
        let r = Scanning::REGISTRATION;
        assert_eq!(
            entries::<Scanning>(&r),
            [(CREATE, 0, false, true), (WRITE, 0, true, true), (SET_INFORMATION, 0, true, false)]
        );
        let registered = Registered::of::<Scanning>(&r);
        let write = registered.guarded(MajorFunction::Write).unwrap().unwrap();
        assert!(!write.pre && write.post && write.has_skip_flags());
        assert_eq!(registered.guarded(MajorFunction::SetInformation), Some(None));
        assert_eq!(registered.guarded(MajorFunction::Read), None);
        let all = Registration::new().every_operation(true, true).data_scan(true).validated();
        let e = entries::<Scanning>(&all);
        assert_eq!(e.len(), all.operations().len(), "both registered: nothing added");
        assert!(e.iter().all(|&(_, flags, pre, _)| flags == 0 && pre));
    }
}
