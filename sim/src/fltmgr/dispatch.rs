//! Operations (facts.md §2.4, §3, §4): a frame's volume device turns each IRP into one
//! `FLT_CALLBACK_DATA`, calls the pre-operation callbacks of its instances from the highest
//! altitude down (skip flags from `fsfilter::Operation::skips`), passes the request down, and
//! calls the post-operation callbacks back up from its completion routine — every
//! `FLT_PREOP_*` and `FLT_POSTOP_*` status with its documented effect, pended pre-operations,
//! held post-operations, `FltDoCompletionProcessingWhenSafe`, and draining on teardown.

use std::ffi::c_void;

use fsfilter::{MajorFunction, OperationKind, Status};
use fsfilter_kernel::params::{self, IoFileSystemControl};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_RELATED_OBJECTS,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use super::params::CbdBlock;
use super::{DevKind, FvId, InstState, NO_CONTEXT};
use crate::events::{Phase as EvPhase, Rule};
use crate::ids::ImageId;
use crate::kernel::{self, DISPATCH_LEVEL, Kernel};
use crate::nt::{fsctl, irp_flags, mj, mn_fsctl};

pub use super::ops::{
    Act, Op, OpMap, Ops, POST_DRAINING, Phase, PostEnd, PostEntry, PreEnd, cbd, fast_op, insert_op,
    postop, preop,
};
use super::ops::{Running, log_op, status_name};
pub(crate) use super::post::{complete_pended_post, when_safe};
pub use super::post::{data_of, drain_instance, fast_post, fast_pre, fast_result, post_walk};
use super::post::{finish, flt_complete};
/// Creates the operation of an IRP through a frame's volume device; None when no instance of
/// the frame on the volume is attached (the IRP passes straight through).
fn build_irp_op(
    k: &mut Kernel,
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
    frame: u32,
    v: FvId,
    lower: *mut DEVICE_OBJECT,
) -> Option<u64> {
    let mut chain = k.fltmgr.ops.new_chain();
    k.fltmgr.frame_chain(v, frame, &mut chain);
    if chain.is_empty() {
        k.fltmgr.ops.unused_chain(chain);
        return None;
    }
    // SAFETY: the IRP in our dispatch routine.
    let i = unsafe { &*irp };
    // SAFETY: its current location.
    let s = unsafe { crate::irpx::current(irp) };
    let block = k.fltmgr.ops.new_block();
    let cb = block.ptr().cast::<CbdBlock>();
    // SAFETY: a zeroed block sized for a CbdBlock.
    let b = unsafe { &mut *cb };
    let extra = super::params::from_location(&mut b.iopb.Parameters, i, s);
    b.iopb.IrpFlags = i.Flags;
    b.iopb.MajorFunction = s.MajorFunction;
    b.iopb.MinorFunction = s.MinorFunction;
    b.iopb.OperationFlags = s.Flags;
    b.iopb.TargetFileObject = s.FileObject;
    b.data.Flags = cbd::IRP_OPERATION | extra;
    b.data.Iopb = &raw const b.iopb;
    b.data.RequestorMode = i.RequestorMode;
    // The IRP's thread (docs/simulator.md, "Processes"): `FltGetRequestorProcessId` reads it.
    // SAFETY: `Overlay` is the member the I/O manager uses for IRPs in flight.
    b.data.Thread = unsafe { i.Tail.Overlay }.Thread;
    let fo = s.FileObject as usize;
    // SAFETY: a live file object of the request, when set.
    let stream = unsafe { s.FileObject.as_ref() }.map_or(0, |f| f.FsContext as usize);
    let conflicting = match s.MajorFunction {
        mj::WRITE => i.Flags & irp_flags::PAGING_IO == 0,
        mj::SET_INFORMATION => {
            // SAFETY: the member of IRP_MJ_SET_INFORMATION.
            let class = unsafe { params::io::<params::IoFileInformation>(&s.Parameters) }
                .FileInformationClass;
            matches!(class, 19 | 20)
        }
        _ => false,
    };
    let dismount = s.MajorFunction == mj::FILE_SYSTEM_CONTROL
        && s.MinorFunction == mn_fsctl::USER_FS_REQUEST
        // SAFETY: the member of a user FSCTL.
        && unsafe { params::io::<IoFileSystemControl>(&s.Parameters) }.FsControlCode
            == fsctl::DISMOUNT_VOLUME;
    let request = k.resolve_operation(irp as usize);
    let key = k.fltmgr.ops.next;
    k.fltmgr.ops.next += 1;
    let data = &raw mut b.data;
    let mut event = k.fltmgr.ops.new_event();
    // SAFETY: our event storage.
    unsafe { crate::sched::initialize_event(&mut *event, 0, false) };
    let op = Op {
        block,
        data,
        irp,
        device: device.cast_mut(),
        lower,
        frame,
        volume: v,
        chain,
        next: 0,
        posts: k.fltmgr.ops.new_posts(),
        phase: Phase::Pre,
        sync: s.MajorFunction == mj::CREATE || dismount,
        event,
        owned: true,
        halted: false,
        in_dispatch: true,
        post_waiter: false,
        kind: OperationKind::Irp,
        fo,
        stream,
        conflicting,
        dismount,
        request,
        orig_buffer: i.UserBuffer,
        orig_mdl: i.MdlAddress,
        // SAFETY: all-zero is a valid parameter block (null pointers, zero values).
        received: unsafe { std::mem::zeroed() },
        swapped: Vec::new(),
        posted_when_safe: false,
    };
    k.fltmgr.ops.by_data.insert(data as usize, key);
    k.fltmgr.ops.map.insert(key, op);
    Some(key)
}

/// The dispatch routine of every Filter Manager device.
///
/// # Safety
/// Called by the I/O manager with one of our devices and a live IRP.
pub unsafe extern "system" fn flt_dispatch(
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    let Some(ext) = super::ext_of(device) else {
        // SAFETY: the I/O manager's live IRP.
        return unsafe { crate::irpx::complete(irp, Status::INVALID_DEVICE_REQUEST, 0) };
    };
    match ext.kind {
        k if k == DevKind::Control as u8 => {
            // SAFETY: the live IRP.
            let major = unsafe { crate::irpx::current(irp) }.MajorFunction;
            let status = if matches!(major, mj::CREATE | mj::CLEANUP | mj::CLOSE) {
                Status::SUCCESS
            } else {
                Status::INVALID_DEVICE_REQUEST
            };
            // SAFETY: the live IRP, completed once.
            unsafe { crate::irpx::complete(irp, status, 0) }
        }
        k if k == DevKind::Cdo as u8 => {
            // SAFETY: the live IRP.
            let s = unsafe { crate::irpx::current(irp) };
            if s.MajorFunction == mj::FILE_SYSTEM_CONTROL
                && s.MinorFunction == mn_fsctl::MOUNT_VOLUME
            {
                super::frames::mount(device, irp, ext)
            } else {
                pass_through(irp, ext.lower)
            }
        }
        _ => volume_dispatch(device, irp, ext.frame, FvId(ext.volume), ext.lower),
    }
}

fn pass_through(irp: *mut IRP, lower: *mut DEVICE_OBJECT) -> NTSTATUS {
    // SAFETY: the live IRP in our dispatch routine.
    unsafe { fsfilter_kernel::irp::IoSkipCurrentIrpStackLocation(irp) };
    crate::irp::call_driver(lower, irp)
}

fn volume_dispatch(
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
    frame: u32,
    v: FvId,
    lower: *mut DEVICE_OBJECT,
) -> NTSTATUS {
    let key = kernel::with(|k| build_irp_op(k, device, irp, frame, v, lower));
    let Some(key) = key else { return pass_through(irp, lower) };
    let status = drive(key, Act::Continue);
    kernel::with(|k| {
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.in_dispatch = false;
        }
    });
    status
}

/// Continues an operation after a pre-operation answer `first` (Continue at the start).
fn drive(key: u64, first: Act) -> NTSTATUS {
    let end = match first {
        Act::Continue => pre_walk(key),
        Act::Complete => PreEnd::Complete,
        Act::Pended => PreEnd::Pended,
        Act::Disallow => PreEnd::Disallow,
    };
    match end {
        PreEnd::Down => pass_down(key),
        PreEnd::Complete | PreEnd::Disallow => complete_from_pre(key),
        PreEnd::Pended => {
            let next = kernel::with(|k| {
                let op = k.fltmgr.ops.op_mut(key)?;
                if op.post_waiter {
                    // Pended again, resumed from elsewhere: the originating thread waits already.
                    return None;
                }
                if op.in_dispatch && op.sync {
                    // A synchronized operation (a create, a dismount, or one a filter above
                    // synchronized in this thread): this thread waits for the rest of the walk,
                    // carried on from wherever the operation is resumed, and runs the posts.
                    op.post_waiter = true;
                    // SAFETY: the op's own event.
                    unsafe { crate::sched::reset_event(&mut *op.event) };
                    return Some(Pended::Wait(&raw mut *op.event));
                }
                op.in_dispatch.then_some(Pended::Mark(op.irp))
            });
            match next {
                Some(Pended::Wait(event)) => {
                    // SAFETY: the op's event, alive while the op is (the op waits here).
                    unsafe { crate::sched::wait_for_event(event, None) };
                    post_in_origin(key)
                }
                Some(Pended::Mark(irp)) => {
                    // SAFETY: the IRP in our dispatch routine, at our location.
                    unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
                    Status::PENDING.0
                }
                None => Status::PENDING.0,
            }
        }
    }
}

/// What the thread that saw a pre callback pend the operation does.
enum Pended {
    /// Waits on the op's event, then runs the posts ([`post_in_origin`]).
    Wait(*mut windows_sys::Wdk::Foundation::KEVENT),
    /// Marks the IRP pending in our dispatch routine and returns `STATUS_PENDING`.
    Mark(*mut IRP),
}

/// The end of a synchronized operation in the thread that dispatched it: once the lower drivers
/// completed it (or a pre callback completed it), the post walk, then the IRP's completion.
///
/// A post callback that holds the operation (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`) does not move
/// the rest of the walk to whoever calls `FltCompletePendedPostOperation`: this thread waits for
/// that call and goes on, so the posts of the filters above still run in the originating thread
/// at `PASSIVE_LEVEL` (facts.md §4; post-create, `SYNCHRONIZE`, the dismount's teardown).
fn post_in_origin(key: u64) -> NTSTATUS {
    let ready = kernel::with(|k| k.fltmgr.ops.op(key).and_then(|o| o.owned.then_some(o.irp)));
    let Some(irp) = ready else { return Status::PENDING.0 };
    loop {
        match post_walk(key) {
            PostEnd::Finished => return finish(key),
            PostEnd::Halted => {
                let event = kernel::with(|k| {
                    let op = k.fltmgr.ops.op_mut(key)?;
                    op.post_waiter = true;
                    // SAFETY: the op's own event.
                    unsafe { crate::sched::reset_event(&mut *op.event) };
                    Some(&raw mut *op.event)
                });
                let Some(event) = event else { return Status::PENDING.0 };
                // SAFETY: the op's event, alive while the op is (it waits here).
                if unsafe { crate::sched::wait_for_event(event, None) } != Status::SUCCESS.0 {
                    // Never released (the simulator reported the deadlock): whoever releases it
                    // later finishes it.
                    kernel::with(|k| {
                        if let Some(op) = k.fltmgr.ops.op_mut(key) {
                            op.post_waiter = false;
                        }
                    });
                    // SAFETY: the IRP, held at our location.
                    unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
                    return Status::PENDING.0;
                }
            }
        }
    }
}

/// One step of a pre walk.
enum PreStep {
    Call {
        pre: unsafe extern "system" fn(
            *mut FLT_CALLBACK_DATA,
            *const FLT_RELATED_OBJECTS,
            *mut *mut c_void,
        ) -> i32,
        image: ImageId,
        idx: usize,
        data: *mut FLT_CALLBACK_DATA,
        objects: *mut FLT_RELATED_OBJECTS,
        running: Running,
    },
    Done,
}

fn next_pre(k: &mut Kernel, key: u64) -> PreStep {
    // One lookup of the operation; the instance, filter and volume records are other fields of
    // the Filter Manager's state.
    let fm = &mut k.fltmgr;
    let Some(op) = fm.ops.map.get_mut(&key) else { return PreStep::Done };
    loop {
        let idx = op.next;
        let Some(&inst) = op.chain.get(idx) else { return PreStep::Done };
        op.next = idx + 1;
        let ir = &fm.instances[inst.index()];
        if ir.state != InstState::Attached {
            continue;
        }
        let fr = &fm.filters[ir.filter.index()];
        let iopb = op.iopb();
        let major = iopb.MajorFunction;
        let Some(reg) = fr.ops.get(&major).copied() else { continue };
        let flags = fsfilter::OperationFlags::from_bits_retain(reg.flags);
        // Only the skip flags make the operation's header matter (facts.md §3).
        if flags.intersects(SKIP_FLAGS) {
            let entry = fsfilter::Operation {
                major: MajorFunction::from_code(major),
                flags,
                pre: reg.pre.is_some(),
                post: reg.post.is_some(),
            };
            if entry.skips(&super::ops::header(op)) {
                continue;
            }
        }
        let (image, fh, vh, ih) =
            (fr.image, fr.handle(), fm.volumes[ir.volume.index()].handle(), ir.handle());
        let (data, objects, fo) = (op.data, op.objects(), iopb.TargetFileObject);
        iopb.TargetInstance = ih;
        // SAFETY: the op's related-objects slot.
        unsafe { objects.write(super::related_objects(fh, vh, ih, fo)) };
        fm.instances[inst.index()].outstanding += 1;
        match reg.pre {
            Some(pre) => {
                // What this pre receives is what its post will see ("Modifying the Parameters
                // for an I/O Operation": a filter's changes reach the filters below it, not its
                // own post callback or those above).
                op.received = *op.iopb();
                let running = Running {
                    key,
                    data: data as usize,
                    handle: ih as usize,
                    inst,
                    request: op.request,
                };
                return PreStep::Call { pre, image, idx, data, objects, running };
            }
            None => {
                // A post without a pre: as if the pre asked for its post with no context.
                let snapshot = *op.iopb();
                op.posts.push(PostEntry {
                    inst,
                    context: std::ptr::null_mut(),
                    iopb: snapshot,
                    done: false,
                });
            }
        }
    }
}

/// The registration flags that make the Filter Manager skip an instance for some operations.
const SKIP_FLAGS: fsfilter::OperationFlags = fsfilter::OperationFlags::SKIP_PAGING_IO
    .union(fsfilter::OperationFlags::SKIP_CACHED_IO)
    .union(fsfilter::OperationFlags::SKIP_NON_DASD_IO)
    .union(fsfilter::OperationFlags::SKIP_NON_CACHED_NON_PAGING_IO);

/// Runs pre-operation callbacks from the next due instance down.
///
/// One borrow of the kernel per callback: it leaves the filter that answered last and applies
/// its answer, finds the next callback due and enters its filter.
pub(crate) fn pre_walk(key: u64) -> PreEnd {
    // The chain index, answer and completion context of the callback that ran last.
    let mut answered: Option<(usize, i32, *mut c_void)> = None;
    loop {
        let step = kernel::with(|k| {
            if let Some((idx, status, context)) = answered.take() {
                k.leave();
                k.fltmgr.ops.running = None;
                let act = apply_pre(k, key, idx, status, context, false);
                if act != Act::Continue {
                    return PreWalk::End(act);
                }
            }
            loop {
                let PreStep::Call { pre, image, idx, data, objects, running } = next_pre(k, key)
                else {
                    return PreWalk::Down;
                };
                match super::enter_filter(k, image, "PreOperationCallback") {
                    Some(entered) => {
                        k.fltmgr.ops.running = Some(running);
                        return PreWalk::Call { pre, idx, data, objects, entered };
                    }
                    None => {
                        let act =
                            apply_pre(k, key, idx, preop::SUCCESS_NO_CALLBACK, NO_CONTEXT, false);
                        if act != Act::Continue {
                            return PreWalk::End(act);
                        }
                    }
                }
            }
        });
        match step {
            PreWalk::Down => return PreEnd::Down,
            PreWalk::End(Act::Complete) => return PreEnd::Complete,
            PreWalk::End(Act::Pended) => return PreEnd::Pended,
            PreWalk::End(Act::Disallow) => return PreEnd::Disallow,
            PreWalk::End(Act::Continue) => {}
            PreWalk::Call { pre, idx, data, objects, entered } => {
                let mut context: *mut c_void = std::ptr::null_mut();
                // SAFETY: the filter's pre-operation callback with the operation's callback
                // data, related objects and a completion-context out parameter.
                let status =
                    kernel::run_entered(entered, || unsafe { pre(data, objects, &mut context) });
                answered = Some((idx, status, context));
            }
        }
    }
}

/// What [`pre_walk`] does after one borrow of the kernel.
enum PreWalk {
    /// Every pre due ran: pass the operation down.
    Down,
    /// A pre's answer ended the walk.
    End(Act),
    /// Call a filter's pre-operation callback (its image entered).
    Call {
        pre: unsafe extern "system" fn(
            *mut FLT_CALLBACK_DATA,
            *const FLT_RELATED_OBJECTS,
            *mut *mut c_void,
        ) -> i32,
        idx: usize,
        data: *mut FLT_CALLBACK_DATA,
        objects: *mut FLT_RELATED_OBJECTS,
        entered: kernel::Entered,
    },
}

/// What an operation is when `FLT_PREOP_SYNCHRONIZE` is illegal for it (facts.md §4): it may
/// wait below indefinitely for another requester, so the Filter Manager would hold the requesting
/// thread instead of returning `STATUS_PENDING`.
fn unsynchronizable(iopb: &FLT_IO_PARAMETER_BLOCK) -> Option<&'static str> {
    let minor = iopb.MinorFunction;
    match MajorFunction::from_code(iopb.MajorFunction) {
        MajorFunction::LockControl if minor == fsfilter::lock::LOCK => Some("IRP_MN_LOCK"),
        MajorFunction::DirectoryControl
            if minor == fsfilter::directory::NOTIFY_CHANGE_DIRECTORY =>
        {
            Some("IRP_MN_NOTIFY_CHANGE_DIRECTORY")
        }
        MajorFunction::FileSystemControl
            if minor == fsfilter::fsctl::USER_FS_REQUEST
                || minor == fsfilter::fsctl::KERNEL_CALL =>
        {
            // SAFETY: `FileSystemControl.Common` is the member of user and kernel FSCTL requests.
            let fsctl = unsafe { params::flt::<params::FltFileSystemControl>(&iopb.Parameters) };
            let code = fsctl.FsControlCode;
            fsfilter::fsctl::is_oplock_request(code).then_some("an oplock FSCTL")
        }
        _ => None,
    }
}

/// Applies a pre-operation answer of chain entry `idx` (facts.md §4).
fn apply_pre(
    k: &mut Kernel,
    key: u64,
    idx: usize,
    status: i32,
    context: *mut c_void,
    resumed: bool,
) -> Act {
    let Some(op) = k.fltmgr.ops.op(key) else { return Act::Continue };
    let Some(&inst) = op.chain.get(idx) else { return Act::Continue };
    let kind = op.kind;
    let major = op.iopb().MajorFunction;
    let f = k.fltmgr.inst(inst).filter;
    let has_post = k.fltmgr.filter(f).ops.get(&major).is_some_and(|r| r.post.is_some());
    let m = MajorFunction::from_code(major);
    log_op(k, key, inst, EvPhase::Pre, status, false);
    note_swap(k, key, inst);
    let with_context = |k: &mut Kernel, why: &str| {
        if !context.is_null() {
            k.flt_report(
                Some(f),
                Rule::ContextWithoutPost,
                format!(
                    "{m}: a completion context returned with {why} (facts.md §4: it must be NULL)"
                ),
            );
        }
    };
    let push_post = |k: &mut Kernel| {
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            let snapshot = op.received;
            op.posts.push(PostEntry { inst, context, iopb: snapshot, done: false });
        }
    };
    match status {
        preop::SUCCESS_WITH_CALLBACK | preop::SYNCHRONIZE => {
            if !has_post {
                k.flt_report(
                    Some(f),
                    Rule::PostCallbackMissing,
                    format!(
                        "{m}: {} with no post-operation callback registered",
                        status_name(true, status)
                    ),
                );
                k.flt_instance_released(inst);
                return Act::Continue;
            }
            push_post(k);
            if status == preop::SYNCHRONIZE && kind == OperationKind::Irp {
                if let Some(what) = k.fltmgr.ops.op(key).and_then(|op| unsynchronizable(op.iopb()))
                {
                    k.flt_report(
                        Some(f),
                        Rule::StatusInvalidForOperation,
                        format!(
                            "{m}: FLT_PREOP_SYNCHRONIZE for {what} (facts.md §4: illegal for \
                             oplock FSCTLs, IRP_MN_NOTIFY_CHANGE_DIRECTORY and IRP_MN_LOCK)"
                        ),
                    );
                }
                if let Some(op) = k.fltmgr.ops.op_mut(key) {
                    op.sync = true;
                }
            }
            Act::Continue
        }
        preop::SUCCESS_NO_CALLBACK => {
            with_context(k, "FLT_PREOP_SUCCESS_NO_CALLBACK");
            k.flt_instance_released(inst);
            Act::Continue
        }
        preop::PENDING => {
            if kind == OperationKind::FsFilter {
                k.flt_report(
                    Some(f),
                    Rule::PendingOnFastIo,
                    format!("{m}: FLT_PREOP_PENDING for an FsFilter operation (IRP-based operations only, facts.md §4); treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
                );
                k.flt_instance_released(inst);
                return Act::Continue;
            }
            if kind != OperationKind::Irp {
                k.flt_report(
                    Some(f),
                    Rule::PendingOnFastIo,
                    format!("{m}: FLT_PREOP_PENDING for a fast-I/O operation (IRP-based operations only, facts.md §4); the simulator refuses the fast I/O"),
                );
                k.flt_instance_released(inst);
                if let Some(op) = k.fltmgr.ops.op(key) {
                    op.cbd().IoStatus.Anonymous.Status = Status::FLT_DISALLOW_FAST_IO.0;
                }
                return Act::Disallow;
            }
            if resumed {
                k.flt_report(
                    Some(f),
                    Rule::StatusInvalidForOperation,
                    format!("{m}: FltCompletePendedPreOperation with FLT_PREOP_PENDING; treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
                );
                k.flt_instance_released(inst);
                return Act::Continue;
            }
            with_context(k, "FLT_PREOP_PENDING");
            if let Some(op) = k.fltmgr.ops.op_mut(key) {
                op.phase = Phase::Pended(idx);
            }
            Act::Pended
        }
        preop::DISALLOW_FASTIO => {
            with_context(k, "FLT_PREOP_DISALLOW_FASTIO");
            k.flt_instance_released(inst);
            if kind != OperationKind::FastIo || resumed {
                k.flt_report(
                    Some(f),
                    Rule::StatusInvalidForOperation,
                    format!("{m}: FLT_PREOP_DISALLOW_FASTIO for an operation that is not fast I/O (fast I/O only, facts.md §4); treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
                );
                return Act::Continue;
            }
            if let Some(op) = k.fltmgr.ops.op(key) {
                let d = op.cbd();
                d.IoStatus.Anonymous.Status = Status::FLT_DISALLOW_FAST_IO.0;
                d.IoStatus.Information = 0;
            }
            Act::Disallow
        }
        preop::COMPLETE => {
            with_context(k, "FLT_PREOP_COMPLETE");
            k.flt_instance_released(inst);
            if let Some(op) = k.fltmgr.ops.op(key) {
                let d = op.cbd();
                // SAFETY: the status member.
                let s = Status(unsafe { d.IoStatus.Anonymous.Status });
                let replacement = if s == Status::PENDING {
                    k.flt_report(
                        Some(f),
                        Rule::CompleteWithPending,
                        format!("{m}: FLT_PREOP_COMPLETE with STATUS_PENDING (facts.md §4); completed with STATUS_INVALID_DEVICE_STATE"),
                    );
                    Some(Status::INVALID_DEVICE_STATE)
                } else if s == Status::FLT_DISALLOW_FAST_IO {
                    k.flt_report(
                        Some(f),
                        Rule::InvalidCompletionStatus,
                        format!("{m}: FLT_PREOP_COMPLETE with STATUS_FLT_DISALLOW_FAST_IO (facts.md §4); completed with STATUS_INVALID_DEVICE_STATE"),
                    );
                    Some(Status::INVALID_DEVICE_STATE)
                } else if kind == OperationKind::FsFilter && m.cannot_fail() && !s.is_success() {
                    k.flt_report(
                        Some(f),
                        Rule::StatusInvalidForOperation,
                        format!("{m}: completed with {s}; a release cannot fail (the reference page of FsRtlRegisterFileSystemFilterCallbacks); completed with STATUS_SUCCESS"),
                    );
                    Some(Status::SUCCESS)
                } else if matches!(major, mj::CLEANUP | mj::CLOSE) && !s.is_success() {
                    k.flt_report(
                        Some(f),
                        Rule::InvalidCompletionStatus,
                        format!("{m}: completed with {s}; cleanup and close cannot fail (facts.md §4); completed with STATUS_SUCCESS"),
                    );
                    Some(Status::SUCCESS)
                } else {
                    None
                };
                if let Some(r) = replacement {
                    let d = k.fltmgr.ops.op(key).map(|o| o.cbd());
                    if let Some(d) = d {
                        d.IoStatus.Anonymous.Status = r.0;
                    }
                } else if s == Status::REPARSE {
                    note_reparse(k, key, f, m, kind);
                }
            }
            Act::Complete
        }
        preop::DISALLOW_FSFILTER_IO => {
            with_context(k, "FLT_PREOP_DISALLOW_FSFILTER_IO");
            k.flt_report(
                Some(f),
                Rule::StatusInvalidForOperation,
                format!("{m}: FLT_PREOP_DISALLOW_FSFILTER_IO outside IRP_MJ_QUERY_OPEN (facts.md §4); treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
            );
            k.flt_instance_released(inst);
            Act::Continue
        }
        other => {
            with_context(k, "an unknown status");
            k.flt_report(
                Some(f),
                Rule::UnknownCallbackStatus,
                format!("{m}: the pre-operation callback returned an unknown status {other} (Filter Verifier: \"returned an unknown pre-operation callback status\", facts.md §4); treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
            );
            k.flt_instance_released(inst);
            Act::Continue
        }
    }
}

/// A pre callback completed its operation with `STATUS_REPARSE` (docs/simulator.md, "Reparse"):
/// for a create, the I/O manager's reports name the minifilter as the driver that completed it
/// (a volume open's bug check 0xF9); for a query open (`IRP_MJ_NETWORK_QUERY_OPEN`, fast I/O),
/// the reparse is not followed and the caller gets `STATUS_REPARSE`: `REPARSE_ON_FAST_IO`
/// (SimRep answers `FLT_PREOP_DISALLOW_FSFILTER_IO` there).
fn note_reparse(
    k: &mut Kernel,
    key: u64,
    f: super::FilterId,
    m: MajorFunction,
    kind: OperationKind,
) {
    let Some(request) = k.fltmgr.ops.op(key).map(|o| o.request) else { return };
    match (m, kind) {
        (MajorFunction::Create, OperationKind::Irp) => {
            if let Some(rid) = request {
                let name = k.fltmgr.filter(f).name.to_string();
                k.reparse_completed_by(rid, Some(name));
            }
        }
        (MajorFunction::NetworkQueryOpen, _) => {
            k.flt_report(
                Some(f),
                Rule::ReparseOnFastIo,
                format!(
                    "{m}: FLT_PREOP_COMPLETE with STATUS_REPARSE: a query open is fast I/O, and \
                     reparse works on IRP-based creates only, so the I/O manager does not follow \
                     it (the caller gets STATUS_REPARSE); answer FLT_PREOP_DISALLOW_FSFILTER_IO \
                     for a name the filter redirects, as SimRep does"
                ),
            );
            let current = k.current_request;
            k.reparse_fast_reported(request.or(current));
        }
        _ => {}
    }
}

/// Records the MDL a pre callback swapped in (its parameters' MDL is not the one it received,
/// nor the IRP's own): the Filter Manager frees it when the operation ends
/// (`FltRetainSwappedBufferMdlAddress`'s page; [`super::post::free_swapped`]).
fn note_swap(k: &mut Kernel, key: u64, inst: super::InstId) {
    let Some(op) = k.fltmgr.ops.op_mut(key) else { return };
    let now = super::params::buffer_mdl(op.iopb());
    if now.is_null()
        || now == super::params::buffer_mdl(&op.received)
        || now == op.orig_mdl
        || op.swapped.iter().any(|&(_, m)| m == now)
    {
        return;
    }
    op.swapped.push((inst, now));
}

/// Sends the operation down with our completion routine.
fn pass_down(key: u64) -> NTSTATUS {
    let prepared = kernel::with(|k| {
        let op = k.fltmgr.ops.op_mut(key)?;
        op.phase = Phase::Down;
        op.owned = false;
        let (irp, lower, sync) = (op.irp, op.lower, op.sync);
        let dirty = op.cbd().Flags & cbd::DIRTY != 0;
        // SAFETY: the IRP at our location, with a lower one.
        unsafe { fsfilter_kernel::irp::IoCopyCurrentIrpStackLocationToNext(irp) };
        // SAFETY: the next location of the live IRP.
        let next = unsafe { crate::irpx::next(irp) };
        if dirty {
            // SAFETY: the live IRP.
            super::params::to_location(op.iopb(), unsafe { &mut *irp }, next);
            op.cbd().Flags &= !cbd::DIRTY;
        }
        next.CompletionRoutine = fsfilter_kernel::ntos::completion_routine_field(flt_complete);
        next.Context = key as *mut c_void;
        next.Control = crate::irp::SL_INVOKE_ON_SUCCESS
            | crate::irp::SL_INVOKE_ON_ERROR
            | crate::irp::SL_INVOKE_ON_CANCEL;
        if sync && !op.post_waiter {
            // SAFETY: the op's own event.
            unsafe { crate::sched::reset_event(&mut *op.event) };
        }
        Some((irp, lower, sync, op.post_waiter, &raw mut *op.event))
    });
    let Some((irp, lower, sync, waiter, event)) = prepared else {
        return Status::INVALID_DEVICE_STATE.0;
    };
    let status = crate::irp::call_driver(lower, irp);
    if sync {
        if waiter {
            // The originating thread waits on the event, which our completion routine sets, and
            // runs the posts.
            return Status::PENDING.0;
        }
        if status == Status::PENDING.0 {
            // SAFETY: the op's event, alive while the op is (the op waits here).
            unsafe { crate::sched::wait_for_event(event, None) };
        }
        return post_in_origin(key);
    }
    kernel::with(|k| {
        let ops = &mut k.fltmgr.ops;
        let finished = ops.finished_in_call.iter().rposition(|&(f, _)| f == key);
        let finished = finished.map(|at| ops.finished_in_call.swap_remove(at).1);
        if ops.op(key).is_some_and(|o| o.halted) {
            return Status::PENDING.0;
        }
        match finished {
            // Completed inside the call, and the post callbacks ran in our completion routine:
            // the status they left is the IRP's, which our caller must get too (a post may fail
            // a successful operation). A lower driver that returned STATUS_PENDING had the IRP
            // marked, and we return it as well.
            Some(final_status) if status != Status::PENDING.0 => final_status,
            _ => status,
        }
    })
}

/// `FLT_PREOP_COMPLETE` (or a refused fast I/O): the posts of the instances above run, then the
/// IRP completes with the callback data's status.
pub(crate) fn complete_from_pre(key: u64) -> NTSTATUS {
    let kind = kernel::with(|k| {
        let op = k.fltmgr.ops.op_mut(key)?;
        op.phase = Phase::Post;
        op.cbd().Flags |= cbd::POST_OPERATION;
        if op.post_waiter {
            // The originating thread runs the posts (it waits for this).
            // SAFETY: the op's own event, which that thread waits on.
            unsafe { crate::sched::set_event(&mut *op.event) };
            return Some(None);
        }
        Some(Some((op.kind, op.sync)))
    });
    let Some(kind) = kind else { return Status::SUCCESS.0 };
    let Some((kind, sync)) = kind else { return Status::PENDING.0 };
    if sync && kind == OperationKind::Irp {
        // A synchronized operation completed in the thread that synchronized it (it dispatched
        // it, or a pre callback there answered FLT_PREOP_SYNCHRONIZE): that thread runs the
        // posts, and waits for a post that holds the operation (post-create and a SYNCHRONIZE
        // post stay in their pre's thread, facts.md §4), as when the operation went down.
        return post_in_origin(key);
    }
    match post_walk(key) {
        PostEnd::Finished => {
            if kind == OperationKind::Irp {
                finish(key)
            } else {
                Status::SUCCESS.0
            }
        }
        PostEnd::Halted => {
            let irp = kernel::with(|k| {
                let op = k.fltmgr.ops.op_mut(key)?;
                op.halted = true;
                op.in_dispatch.then_some(op.irp)
            });
            if let Some(irp) = irp {
                // SAFETY: the IRP at our location in our dispatch routine.
                unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
            }
            Status::PENDING.0
        }
    }
}

/// `FltCompletePendedPreOperation`.
pub(crate) fn complete_pended_pre(
    data: *const FLT_CALLBACK_DATA,
    status: i32,
    context: *mut c_void,
) {
    let act = kernel::with(|k| {
        let Some(key) = k.fltmgr.ops.key_of(data as usize) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltCompletePendedPreOperation on a callback data that is not a pended operation",
            );
            return None;
        };
        let Some(Phase::Pended(idx)) = k.fltmgr.ops.op(key).map(|o| o.phase) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltCompletePendedPreOperation on an operation that is not pended",
            );
            return None;
        };
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.phase = Phase::Pre;
        }
        let act = apply_pre(k, key, idx, status, context, true);
        Some((key, act, k.irql() >= DISPATCH_LEVEL))
    });
    let Some((key, act, deferred)) = act else { return };
    if deferred {
        // The rest of the walk runs at PASSIVE_LEVEL from a worker.
        let image = kernel::with(|k| k.fltmgr.image);
        crate::sched::queue_work(
            "FltCompletePendedPreOperation",
            image,
            Box::new(move || {
                let _ = drive(key, act);
            }),
        );
    } else {
        let _ = super::as_fltmgr(|| drive(key, act));
    }
}
