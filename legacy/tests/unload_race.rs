//! An operation that begins on a device not yet detached while `DriverUnload` detaches the
//! driver's devices one by one, after the operations outstanding when the loop began had all
//! ended (docs/callback-model.md rule 21). The simulator's `IoDetachDevice` runs the work that is
//! ready, as other processors would run it meanwhile.
//!
//! The filter's unload callback queues two work items, which run at the loop's first detach:
//! the first completes the read the filter pended before the stop (nothing is outstanding for a
//! moment), the second sends a read to a volume device still attached, which the filter pends
//! again; a DPC completes it 5 ms later. `DriverUnload` must wait for that second read. Before a
//! fix of December 4 unload waited on a driver-wide count of outstanding operations, whose event,
//! set when the count first fell to zero, was never reset: the wait returned at once, the devices
//! and the driver's state went, and the second read never completed. Since the night of December
//! 5 unload waits for each device's last hold instead (the read holds its device); the test
//! keeps its name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the test sends a hand-built IRP, as a C driver would"
)]

mod common;

#[path = "../../sim/testing/bare_irp.rs"]
mod bare_irp;

use std::cell::{Cell, RefCell};

use common::*;
use fsfilter::{
    Filter, Instance, InstanceSetup, IoStatus, MajorFunction, Operation, PendedOperation,
    PreOperation, PreOutcome, PreResume, Registration, Result, ServiceParameters, Status,
    UnloadFlags,
};
use fsfilter_kernel::irp::IoCallDriver;
use fsfilter_sim::{CreateOptions, FsKind, IoMode, ServiceSpec, StartType, VolumeId, VolumeSpec};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

const NAME: &str = "Drainer";

thread_local! {
    /// The volumes, for the second read.
    static VOLUMES: RefCell<Vec<VolumeId>> = const { RefCell::new(Vec::new()) };
    /// Reads the filter pended, in order.
    static HELD: RefCell<Vec<PendedOperation<()>>> = const { RefCell::new(Vec::new()) };
    /// The second read's status block (its status once it completed).
    static SECOND: Cell<usize> = const { Cell::new(0) };
    /// The filter's image, for the work it queues.
    static IMAGE: Cell<Option<fsfilter_sim::ids::ImageId>> = const { Cell::new(None) };
}

/// Completes the oldest read the filter holds, at the filter's level.
fn complete_held() {
    let token = HELD.with(|h| {
        let mut h = h.borrow_mut();
        (!h.is_empty()).then(|| h.remove(0))
    });
    if let Some(token) = token {
        token.resume(PreResume::Complete(IoStatus::new(Status::SUCCESS)));
    }
}

/// Sends a read IRP to the top of the first volume stack our filter still tops, without waiting.
fn send_second_read() {
    let volumes = VOLUMES.with(|v| v.borrow().clone());
    let target = fsfilter_sim::kernel::with(|k| {
        volumes.iter().find_map(|&v| {
            let vdo = k.volume(v).vdo?;
            let top = k.objects.top(vdo);
            let ours = k.objects.driver(k.objects.device(top).driver).service == NAME;
            ours.then(|| (k.objects.device(top).ptr, k.objects.dobj(top).StackSize))
        })
    });
    let (top, size) = target.expect("a volume device still attached at the first detach");
    let (irp, iosb) = bare_irp::bare_read(size, Status::PENDING);
    SECOND.with(|s| s.set(std::ptr::from_mut(iosb) as usize));
    // SAFETY: the top device of a live stack and an IRP sized for it.
    let status = unsafe { IoCallDriver(top, irp) };
    assert_eq!(status, Status::PENDING.0, "the filter pends the second read");
    // Another processor's I/O completes it a little later.
    let image = IMAGE.with(Cell::get);
    fsfilter_sim::sched::queue_dpc(
        "complete the second read",
        image,
        50_000,
        Box::new(complete_held),
    );
}

/// Pends every read; its unload callback queues the two work items.
struct Drainer;

impl Filter for Drainer {
    const REGISTRATION: Registration = Registration::new()
        .operation(Operation::new(MajorFunction::Read).pre())
        .instance_setup_callback(true)
        .unload_callback(true)
        .validated();
    type InstanceContext = ();
    type CompletionContext = ();

    fn load(_: &dyn ServiceParameters) -> Result<Self> {
        Ok(Drainer)
    }

    fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
        Ok(())
    }

    fn unload(&self, _: UnloadFlags) -> Result<()> {
        // Work of this driver's image (the backend's resumption reads the image's global).
        let image = fsfilter_sim::kernel::with(|k| k.current_image());
        IMAGE.with(|i| i.set(image));
        fsfilter_sim::sched::queue_work("complete the first read", image, Box::new(complete_held));
        fsfilter_sim::sched::queue_work("send the second read", image, Box::new(send_second_read));
        Ok(())
    }

    fn pre_operation(&self, _: &Instance<'_, ()>, op: &mut PreOperation<'_, ()>) -> PreOutcome<()> {
        let Some((token, receipt)) = op.pend() else { return PreOutcome::NoPost };
        HELD.with(|h| h.borrow_mut().push(token));
        PreOutcome::Pending(receipt)
    }
}

mod driver {
    fsfilter_legacy::driver!(super::Drainer);
}

#[test]
fn unload_waits_for_an_operation_that_began_after_the_count_fell_to_zero() {
    let mut m = machine();
    let c = m.add_volume(VolumeSpec::new("C:", FsKind::Ntfs).file("a.txt", b"data"));
    let d = m.add_volume(VolumeSpec::new("D:", FsKind::Ntfs));
    install_legacy_as(&mut m, ServiceSpec::new(NAME, driver::ENTRY, "legacy"), StartType::Boot);
    m.boot();
    VOLUMES.with(|v| *v.borrow_mut() = vec![c, d]);
    let h = m.create(c, "a.txt", CreateOptions::open()).handle.unwrap();
    // The service stops while the first read is pended.
    let stopped = std::rc::Rc::new(Cell::new(None));
    let result = stopped.clone();
    m.schedule(1, move |m| result.set(Some(m.stop(NAME))));
    let r = m.read(h, Some(0), 4, IoMode::NonCached);
    assert_eq!(r.status, Status::SUCCESS);
    m.settle();
    assert_eq!(stopped.get(), Some(fsfilter_sim::StopResult::Unloaded));
    // The second read began during the unload, after the first had ended, and completed.
    let second = SECOND.with(Cell::get) as *const IO_STATUS_BLOCK;
    assert!(!second.is_null(), "the second read was sent");
    // SAFETY: the leaked status block, written when the read completed.
    assert_eq!(Status(unsafe { (*second).Anonymous.Status }), Status::SUCCESS);
    assert!(HELD.with(|h| h.borrow().is_empty()));
    assert!(findings(&m).is_empty(), "{:?}", findings(&m));
    assert_eq!(m.volume_stack_drivers(c), ["Ntfs"]);
    assert_eq!(m.volume_stack_drivers(d), ["Ntfs"]);
}
