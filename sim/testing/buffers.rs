//! Operation buffers through a backend (issue 9): a filter sees a write's data in its pre
//! callback and changes a read's data in place in its post callback, and a filter that never asks
//! for the data maps nothing. Shared by `legacy/tests/buffers.rs` and
//! `minifilter/tests/buffers.rs` (each includes this file with `#[path]` and builds
//! [`Inverter`] with its backend's `driver!`).
//!
//! The simulator counts the MDLs each driver image maps to system space
//! (`MmMapLockedPagesSpecifyCache` on an MDL not mapped yet): on Windows each mapping takes
//! system PTEs, so a passthrough callback that mapped every paging read's MDL would cost every
//! paging I/O in the stack.

#![allow(dead_code, unreachable_pub, reason = "each test uses part of it")]

use std::cell::Cell;

use fsfilter::{
    Filter, Instance, InstanceSetup, MajorFunction, Operation, PostFlags, PostOperation,
    PostOutcome, PreOperation, PreOutcome, Registration, Result, ServiceParameters, Status,
};
use fsfilter_sim::{
    CreateOptions, FsKind, IoMode, Machine, MachineConfig, ServiceSpec, VolumeSpec,
};

/// The service name of the filter under test.
pub(crate) const NAME: &str = "Inverter";

/// The byte the file holds.
const STORED: u8 = 0x11;

thread_local! {
    /// The first byte of the last write's data the filter saw (the machine runs on the test's
    /// thread).
    static WRITE_SEEN: Cell<Option<u8>> = const { Cell::new(None) };
}

/// Inverts the bytes of every read it can reach in place, and notes the first byte of each
/// write's data, when its `Touch` parameter is 1; with `Touch` 0 it registers the same callbacks
/// and never asks for a buffer.
pub(crate) struct Inverter {
    touch: bool,
}

impl Filter for Inverter {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre().post())
        .operation(Operation::new(MajorFunction::Write).pre().post())
        .instance_setup_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(parameters: &dyn ServiceParameters) -> Result<Self> {
        Ok(Inverter { touch: parameters.flag("Touch").unwrap_or(false) })
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        if self.touch && op.major() == MajorFunction::Write {
            let first = op.buffer().bytes().and_then(|b| b.first().copied());
            WRITE_SEEN.with(|w| w.set(first));
        }
        PreOutcome::WithPost(())
    }

    fn post_operation(
        &self,
        _: &Instance<'_, ()>,
        op: &mut PostOperation<'_>,
        _: (),
        _: PostFlags,
    ) -> PostOutcome<()> {
        if self.touch
            && op.major() == MajorFunction::Read
            && let Some(bytes) = op.buffer_mut().bytes_mut()
        {
            for b in bytes {
                *b ^= 0xFF;
            }
        }
        PostOutcome::Finished
    }
}

/// What one run showed.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The first byte of a paging read and of a non-cached read, as the reader got them.
    pub reads: [u8; 2],
    /// The first byte of the written data the filter saw in its pre-write callback.
    pub write_seen: Option<u8>,
    /// MDLs the filter's image mapped to system space during the I/O.
    pub mappings: u64,
}

/// Runs paging and non-cached reads and a non-cached write through the filter installed by
/// `install` (with `Touch` = `touch`).
pub(crate) fn run(
    install: fn(&mut Machine, ServiceSpec),
    entry: fsfilter_sim::DriverEntry,
    touch: bool,
) -> Seen {
    WRITE_SEEN.with(|w| w.set(None));
    let mut m = Machine::new(MachineConfig { seed: 3 });
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("data.bin", &[STORED; 4096]));
    let mut spec = ServiceSpec::new(NAME, entry, "legacy");
    spec.parameters = vec![("Touch".into(), fsfilter_sim::RegValue::Dword(u32::from(touch)))];
    install(&mut m, spec);
    m.boot();
    let h = m.open(c, "data.bin", CreateOptions::open()).expect("open");
    let before = m.kernel(|k| k.mdl_mappings_of_service(NAME));
    let mut reads = [0u8; 2];
    for (slot, mode) in reads.iter_mut().zip([IoMode::Paging, IoMode::NonCached]) {
        let r = m.read(h, Some(0), 512, mode);
        assert_eq!(r.status, Status::SUCCESS, "{mode:?} read");
        *slot = *r.data.first().expect("data");
    }
    let w = m.write(h, Some(512), &[0x42u8; 512], IoMode::NonCached);
    assert_eq!(w.status, Status::SUCCESS, "write");
    let mappings = m.kernel(|k| k.mdl_mappings_of_service(NAME)) - before;
    m.close_handle(h);
    assert!(m.findings().is_empty(), "{:?}", m.findings());
    Seen { reads, write_seen: WRITE_SEEN.with(Cell::get), mappings }
}

/// The assertions both backends share.
pub(crate) fn check(install: fn(&mut Machine, ServiceSpec), entry: fsfilter_sim::DriverEntry) {
    let untouched = run(install, entry, false);
    assert_eq!(
        untouched.reads, [STORED; 2],
        "a filter that does not touch the data changes nothing"
    );
    assert_eq!(untouched.write_seen, None);
    assert_eq!(untouched.mappings, 0, "a filter that never asks for a buffer maps no MDL");

    let touched = run(install, entry, true);
    assert_eq!(touched.reads, [!STORED; 2], "the post-read change reaches the reader");
    assert_eq!(touched.write_seen, Some(0x42), "the pre-write callback sees the data");
    assert!(touched.mappings > 0, "asking for an MDL-described buffer maps it: {touched:?}");
}
