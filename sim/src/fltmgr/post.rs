//! The post side of operations (facts.md §2.4, §4): the completion routine, post callbacks
//! from the lowest instance up, held posts and `FltCompletePendedPostOperation`,
//! `FltDoCompletionProcessingWhenSafe`, draining on teardown, and the end of an operation.

use std::ffi::c_void;

use fsfilter::{MajorFunction, OperationKind, Status};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_RELATED_OBJECTS, PFLT_POST_OPERATION_CALLBACK,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use super::params::CbdBlock;
use super::{FvId, InstId, InstState};
use crate::events::{Phase as EvPhase, Rule};
use crate::faults::FaultKind;
use crate::ids::ImageId;
use crate::kernel::{self, DISPATCH_LEVEL, Kernel};
use crate::mem::Block;
use crate::nt::irp_flags;

use super::ops::{
    POST_DRAINING, Phase, PostEnd, PreEnd, Running, cbd, log_op, postop, status_name,
};
/// The completion routine of every operation we send down.
///
/// # Safety
/// Called by the I/O manager with our device, the IRP and the op's key.
pub(crate) unsafe extern "system" fn flt_complete(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: *mut c_void,
) -> NTSTATUS {
    let key = context as u64;
    let sync = kernel::with(|k| {
        let op = k.fltmgr.ops.op_mut(key)?;
        op.phase = Phase::Post;
        // SAFETY: the completing IRP.
        let i = unsafe { &*irp };
        let d = op.cbd();
        d.IoStatus = i.IoStatus;
        if op.sync {
            op.owned = true;
            return Some(Some(&raw mut *op.event));
        }
        Some(None)
    });
    let Some(sync) = sync else { return Status::SUCCESS.0 };
    if let Some(event) = sync {
        // SAFETY: the dispatching thread's live event.
        unsafe { crate::sched::set_event(event) };
        return Status::MORE_PROCESSING_REQUIRED.0;
    }
    // SAFETY: the completing IRP.
    if unsafe { (*irp).PendingReturned } {
        // SAFETY: the IRP at our location during its completion.
        unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
    }
    match post_walk(key) {
        PostEnd::Finished => {
            kernel::with(|k| {
                let ops = &mut k.fltmgr.ops;
                if let Some(op) = ops.op(key).filter(|o| o.in_dispatch) {
                    // SAFETY: the status member.
                    let status = unsafe { op.cbd().IoStatus.Anonymous.Status };
                    ops.finished_in_call.push((key, status));
                }
            });
            finish_in_place(key);
            Status::SUCCESS.0
        }
        PostEnd::Halted => {
            kernel::with(|k| {
                if let Some(op) = k.fltmgr.ops.op_mut(key) {
                    op.owned = true;
                    op.halted = true;
                }
            });
            // SAFETY: the IRP at our location during its completion.
            unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
            Status::MORE_PROCESSING_REQUIRED.0
        }
    }
}

/// One step of a post walk.
enum PostStep {
    Call {
        post: unsafe extern "system" fn(
            *mut FLT_CALLBACK_DATA,
            *const FLT_RELATED_OBJECTS,
            *const c_void,
            u32,
        ) -> i32,
        image: ImageId,
        pidx: usize,
        data: *mut FLT_CALLBACK_DATA,
        objects: *mut FLT_RELATED_OBJECTS,
        context: *mut c_void,
        running: Running,
    },
    Skip,
    Done,
}

fn next_post(k: &mut Kernel, key: u64) -> PostStep {
    // One lookup of the operation; the instance, filter and volume records are other fields of
    // the Filter Manager's state.
    let fm = &mut k.fltmgr;
    let Some(op) = fm.ops.map.get_mut(&key) else { return PostStep::Done };
    let Some(pidx) = op.posts.iter().rposition(|p| !p.done) else { return PostStep::Done };
    let e = op.posts[pidx];
    let ir = &fm.instances[e.inst.index()];
    if ir.state == InstState::Gone {
        op.posts[pidx].done = true;
        return PostStep::Skip;
    }
    let fr = &fm.filters[ir.filter.index()];
    let major = op.iopb().MajorFunction;
    let post: PFLT_POST_OPERATION_CALLBACK = fr.ops.get(&major).and_then(|r| r.post);
    let Some(post) = post else {
        op.posts[pidx].done = true;
        k.flt_instance_released(e.inst);
        return PostStep::Skip;
    };
    let (image, fh, vh, ih) =
        (fr.image, fr.handle(), fm.volumes[ir.volume.index()].handle(), ir.handle());
    let (data, objects, fo) = (op.data, op.objects(), op.iopb().TargetFileObject);
    // Restore the parameters this instance's pre returned with; mark the post phase.
    let iopb = op.iopb();
    *iopb = e.iopb;
    op.cbd().Flags |= cbd::POST_OPERATION;
    // SAFETY: the op's related-objects slot.
    unsafe { objects.write(super::related_objects(fh, vh, ih, fo)) };
    let running = Running {
        key,
        data: data as usize,
        handle: ih as usize,
        inst: e.inst,
        request: op.request,
    };
    PostStep::Call { post, image, pidx, data, objects, context: e.context, running }
}

/// Runs post-operation callbacks from the lowest instance owed one up (facts.md §2.4).
///
/// One borrow of the kernel per callback: it leaves the filter that answered last and applies
/// its answer, finds the next post owed and enters its filter.
pub fn post_walk(key: u64) -> PostEnd {
    // The post entry and answer of the callback that ran last.
    let mut answered: Option<(usize, i32)> = None;
    loop {
        let step = kernel::with(|k| {
            if let Some((pidx, status)) = answered.take() {
                k.leave();
                k.fltmgr.ops.running = None;
                if apply_post(k, key, pidx, status) {
                    return PostWalk::Halted;
                }
            }
            loop {
                match next_post(k, key) {
                    PostStep::Done => return PostWalk::Finished,
                    PostStep::Skip => {}
                    PostStep::Call { post, image, pidx, data, objects, context, running } => {
                        match super::enter_filter(k, image, "PostOperationCallback") {
                            Some(entered) => {
                                k.fltmgr.ops.running = Some(running);
                                return PostWalk::Call {
                                    post,
                                    pidx,
                                    data,
                                    objects,
                                    context,
                                    entered,
                                };
                            }
                            None => {
                                if apply_post(k, key, pidx, postop::FINISHED_PROCESSING) {
                                    return PostWalk::Halted;
                                }
                            }
                        }
                    }
                }
            }
        });
        match step {
            PostWalk::Finished => return PostEnd::Finished,
            PostWalk::Halted => return PostEnd::Halted,
            PostWalk::Call { post, pidx, data, objects, context, entered } => {
                // SAFETY: the filter's post-operation callback with the operation's data, the
                // related objects and the context its pre returned.
                let status =
                    kernel::run_entered(entered, || unsafe { post(data, objects, context, 0) });
                answered = Some((pidx, status));
            }
        }
    }
}

/// What [`post_walk`] does after one borrow of the kernel.
enum PostWalk {
    /// Every post owed ran.
    Finished,
    /// A post held the operation.
    Halted,
    /// Call a filter's post-operation callback (its image entered).
    Call {
        post: unsafe extern "system" fn(
            *mut FLT_CALLBACK_DATA,
            *const FLT_RELATED_OBJECTS,
            *const c_void,
            u32,
        ) -> i32,
        pidx: usize,
        data: *mut FLT_CALLBACK_DATA,
        objects: *mut FLT_RELATED_OBJECTS,
        context: *mut c_void,
        entered: kernel::Entered,
    },
}

/// Applies a post answer; true when the operation is held.
fn apply_post(k: &mut Kernel, key: u64, pidx: usize, status: i32) -> bool {
    let Some(op) = k.fltmgr.ops.op(key) else { return false };
    let inst = op.posts[pidx].inst;
    let kind = op.kind;
    let m = MajorFunction::from_code(op.iopb().MajorFunction);
    let f = k.fltmgr.inst(inst).filter;
    log_op(k, key, inst, EvPhase::Post, status, false);
    let posted = k.fltmgr.ops.op_mut(key).is_some_and(|o| std::mem::take(&mut o.posted_when_safe));
    let status = if posted && status != postop::MORE_PROCESSING_REQUIRED {
        // The queued safe callback finishes the operation: completing it now would leave that
        // callback the callback data of a completed operation (freed on Windows).
        k.flt_report(
            Some(f),
            Rule::StatusInvalidForOperation,
            format!(
                "{m}: the post callback returned {} after FltDoCompletionProcessingWhenSafe \
                 posted the operation (it must return the FLT_POSTOP_MORE_PROCESSING_REQUIRED \
                 the call gave, facts.md §4); the operation waits for the safe callback",
                status_name(false, status)
            ),
        );
        postop::MORE_PROCESSING_REQUIRED
    } else {
        status
    };
    let release = |k: &mut Kernel| {
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.posts[pidx].done = true;
        }
        k.flt_instance_released(inst);
    };
    match status {
        postop::FINISHED_PROCESSING => {
            release(k);
            false
        }
        postop::MORE_PROCESSING_REQUIRED if kind == OperationKind::Irp => {
            if let Some(op) = k.fltmgr.ops.op_mut(key) {
                op.phase = Phase::PostHeld(pidx);
            }
            true
        }
        postop::MORE_PROCESSING_REQUIRED => {
            k.flt_report(
                Some(f),
                Rule::StatusInvalidForOperation,
                format!("{m}: FLT_POSTOP_MORE_PROCESSING_REQUIRED for {} (IRP-based only, facts.md §4); treated as finished", kind_name(kind)),
            );
            release(k);
            false
        }
        postop::DISALLOW_FSFILTER_IO => {
            k.flt_report(
                Some(f),
                Rule::StatusInvalidForOperation,
                format!("{m}: FLT_POSTOP_DISALLOW_FSFILTER_IO outside IRP_MJ_QUERY_OPEN (facts.md §4); treated as finished"),
            );
            release(k);
            false
        }
        other => {
            k.flt_report(
                Some(f),
                Rule::UnknownCallbackStatus,
                format!("{m}: the post-operation callback returned an unknown status {other} (facts.md §4); treated as FLT_POSTOP_FINISHED_PROCESSING"),
            );
            release(k);
            false
        }
    }
}

/// The operation's end inside our completion routine: the filters' status into the IRP, the
/// IRP's own buffers back, the record retired.
fn finish_in_place(key: u64) {
    let dismount = kernel::with(|k| {
        let op = k.fltmgr.ops.op(key)?;
        let irp = op.irp;
        // SAFETY: the completing IRP.
        let i = unsafe { &mut *irp };
        i.IoStatus = op.cbd().IoStatus;
        i.UserBuffer = op.orig_buffer;
        i.MdlAddress = op.orig_mdl;
        // SAFETY: the status member.
        let ok = unsafe { i.IoStatus.Anonymous.Status } >= 0;
        let d = (op.dismount && ok).then_some((op.volume, op.frame));
        free_swapped(k, key);
        k.fltmgr.ops.remove(key);
        Some(d)
    })
    .flatten();
    if let Some((v, frame)) = dismount {
        volume_dismounted(v, frame);
    }
}

/// A volume dismount went through this frame: its instances there are torn down
/// (`VOLUME_DISMOUNT`) and no instance attaches until the volume is mounted again (or revived,
/// with `DETACHED_VOLUME`).
fn volume_dismounted(v: FvId, frame: u32) {
    super::instances::teardown_volume(
        v,
        Some(frame),
        fsfilter::TeardownFlags::VOLUME_DISMOUNT.bits(),
    );
    kernel::with(|k| {
        let rec = k.fltmgr.vol_mut(v);
        if !rec.dismounted.contains(&frame) {
            rec.dismounted.push(frame);
        }
    });
}

/// Ends an operation whose IRP is ours: status and buffers into the IRP, then
/// `IoCompleteRequest`. Returns the final status.
pub(crate) fn finish(key: u64) -> NTSTATUS {
    let r = kernel::with(|k| {
        let op = k.fltmgr.ops.op(key)?;
        Some((op.irp, op.cbd().IoStatus))
    });
    let Some((irp, iosb)) = r else { return Status::SUCCESS.0 };
    finish_in_place(key);
    // SAFETY: the status member.
    let status = unsafe { iosb.Anonymous.Status };
    crate::irp::complete_request(irp);
    status
}

/// `FltCompletePendedPostOperation`.
pub(crate) fn complete_pended_post(data: *const FLT_CALLBACK_DATA) {
    let key = kernel::with(|k| {
        let Some(key) = k.fltmgr.ops.key_of(data as usize) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltCompletePendedPostOperation on a callback data that is not held",
            );
            return None;
        };
        let Some(Phase::PostHeld(pidx)) = k.fltmgr.ops.op(key).map(|o| o.phase) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltCompletePendedPostOperation on an operation whose post is not held",
            );
            return None;
        };
        let (inst, waiter) = {
            let op = k.fltmgr.ops.op_mut(key)?;
            op.phase = Phase::Post;
            op.posts[pidx].done = true;
            (op.posts[pidx].inst, op.sync && op.post_waiter)
        };
        k.flt_instance_released(inst);
        if waiter {
            // A synchronized operation's originating thread waits to run the rest of the walk
            // (`dispatch::post_in_origin`).
            if let Some(op) = k.fltmgr.ops.op_mut(key) {
                // SAFETY: the op's own event, which that thread waits on.
                unsafe { crate::sched::set_event(&mut *op.event) };
            }
            return None;
        }
        Some(key)
    });
    let Some(key) = key else { return };
    super::as_fltmgr(|| {
        if post_walk(key) == PostEnd::Finished {
            let _ = finish(key);
        }
    });
}

/// `FltDoCompletionProcessingWhenSafe` (facts.md §4): inline below `DISPATCH_LEVEL`, else from
/// a worker at `PASSIVE_LEVEL` (the post then returns `MORE_PROCESSING_REQUIRED` and the
/// worker's answer finishes or keeps holding it); refused for fast I/O, paging I/O and draining,
/// and when the work item cannot be allocated (`FaultKind::Pool`).
pub(crate) fn when_safe(
    data: *const FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const c_void,
    flags: u32,
    callback: PFLT_POST_OPERATION_CALLBACK,
    status: *mut i32,
) -> bool {
    let Some(cb) = callback else { return false };
    let r = kernel::with(|k| {
        // A draining post gets a copy of the callback data, which is no operation's: the misuse
        // is reported from the flag, or from the copy, before the operation is looked up.
        if flags & POST_DRAINING != 0 || k.fltmgr.ops.drain_copies.contains_key(&(data as usize)) {
            k.report_current(
                Rule::StatusInvalidForOperation,
                "FltDoCompletionProcessingWhenSafe from a draining post-operation callback \
                 (FLTFL_POST_OPERATION_DRAINING, facts.md §4: never then)",
            );
            return Some(None);
        }
        let key = k.fltmgr.ops.key_of(data as usize)?;
        let op = k.fltmgr.ops.op(key)?;
        // The reference page: "can only be called for IRP-based operations", "only from a
        // postoperation callback", never with FLTFL_POST_OPERATION_DRAINING (facts.md §4). Each
        // misuse is reported; the call answers FALSE.
        let kind = kind_name(op.kind);
        let misuse = if op.kind != OperationKind::Irp {
            Some(format!("for {kind} (IRP-based operations only)"))
        } else if op.cbd().Flags & cbd::POST_OPERATION == 0 {
            Some("outside a post-operation callback".to_owned())
        } else {
            None
        };
        if let Some(what) = misuse {
            let m = MajorFunction::from_code(op.iopb().MajorFunction);
            k.report_current(
                Rule::StatusInvalidForOperation,
                format!("{m}: FltDoCompletionProcessingWhenSafe {what}"),
            );
            return Some(None);
        }
        if op.iopb().IrpFlags & irp_flags::PAGING_IO != 0 {
            return Some(None);
        }
        // SAFETY: the caller's related objects, when it passed any.
        let Some(objects) = (unsafe { objects.as_ref() }) else {
            k.report_current(
                Rule::InvalidFltObject,
                "FltDoCompletionProcessingWhenSafe with no related objects (FltObjects is NULL)",
            );
            return Some(None);
        };
        let inst = k.fltmgr.instance_of(objects.Instance)?;
        let image = k.fltmgr.filter(k.fltmgr.inst(inst).filter).image;
        let inline = k.irql() < DISPATCH_LEVEL;
        // Posting takes a work item the Filter Manager allocates, charged to the caller as a
        // pool allocation: under a pool fault the operation "could not be safely posted"
        // (FALSE, FINISHED_PROCESSING; the reference page, facts.md §4).
        if !inline && k.fault(FaultKind::Pool) {
            return Some(None);
        }
        if !inline {
            if let Some(op) = k.fltmgr.ops.op_mut(key) {
                op.posted_when_safe = true;
            }
        }
        Some(Some((image, inline)))
    });
    let (image, inline) = match r {
        Some(Some(x)) => x,
        _ => {
            if !status.is_null() {
                // SAFETY: the caller's out parameter.
                unsafe { *status = postop::FINISHED_PROCESSING };
            }
            return false;
        }
    };
    if inline {
        // SAFETY: the filter's safe post callback with the operation's arguments.
        let s = super::call_filter(image, "SafePostCallback", || unsafe {
            cb(data.cast_mut(), objects, context, flags)
        })
        .unwrap_or(postop::FINISHED_PROCESSING);
        if !status.is_null() {
            // SAFETY: the caller's out parameter.
            unsafe { *status = s };
        }
        return true;
    }
    // SAFETY: the caller's related objects, copied for the worker.
    let objs = Box::new(unsafe { *objects });
    let (data, context) = (data as usize, context as usize);
    crate::sched::queue_work(
        "FltDoCompletionProcessingWhenSafe",
        Some(image),
        Box::new(move || {
            let objs = objs;
            // SAFETY: the filter's safe post callback at PASSIVE_LEVEL with the held operation.
            let s = super::call_filter(image, "SafePostCallback", || unsafe {
                cb(data as *mut FLT_CALLBACK_DATA, &*objs, context as *const c_void, flags)
            })
            .unwrap_or(postop::FINISHED_PROCESSING);
            if s == postop::FINISHED_PROCESSING {
                complete_pended_post(data as *const FLT_CALLBACK_DATA);
            }
        }),
    );
    if !status.is_null() {
        // SAFETY: the caller's out parameter.
        unsafe { *status = postop::MORE_PROCESSING_REQUIRED };
    }
    true
}

/// Drains an instance being torn down (facts.md §2.5, §4): every operation still owing it a
/// post-operation callback gets one now, with `FLTFL_POST_OPERATION_DRAINING` and a copy of the
/// callback data. An operation its post callback holds (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`)
/// owes it nothing: its post ran once, and it keeps the instance (the teardown's completion
/// waits) until `FltCompletePendedPostOperation`.
pub fn drain_instance(i: InstId) {
    loop {
        let step = kernel::with(|k| {
            let found = k.fltmgr.ops.map.iter().find_map(|(&key, op)| {
                // A post walk under way calls the posts it owes itself; a held post had its
                // callback and keeps its instance until `FltCompletePendedPostOperation`.
                let held = match op.phase {
                    Phase::Post => return None,
                    Phase::PostHeld(pidx) => Some(pidx),
                    _ => None,
                };
                op.posts
                    .iter()
                    .enumerate()
                    .position(|(pidx, p)| p.inst == i && !p.done && Some(pidx) != held)
                    .map(|pidx| (key, pidx))
            });
            let (key, pidx) = found?;
            let op = k.fltmgr.ops.op_mut(key)?;
            op.posts[pidx].done = true;
            let e = op.posts[pidx];
            let request = op.request;
            let copy = Block::zeroed(size_of::<CbdBlock>());
            // SAFETY: both blocks hold a CbdBlock; the copy is fresh.
            unsafe {
                std::ptr::copy_nonoverlapping(op.block.ptr(), copy.ptr(), size_of::<CbdBlock>())
            };
            // SAFETY: the fresh copy.
            let c = unsafe { &mut *copy.ptr().cast::<CbdBlock>() };
            c.iopb = e.iopb;
            c.data.Iopb = &raw const c.iopb;
            c.data.Flags |= cbd::DRAINING_IO | cbd::POST_OPERATION;
            let ir = k.fltmgr.inst(i);
            let fr = k.fltmgr.filter(ir.filter);
            let post = fr.ops.get(&c.iopb.MajorFunction).and_then(|r| r.post);
            c.objects = super::related_objects(
                fr.handle(),
                k.fltmgr.vol(ir.volume).handle(),
                ir.handle(),
                c.iopb.TargetFileObject,
            );
            let image = fr.image;
            let data = &raw mut c.data;
            let objects = &raw const c.objects;
            k.fltmgr.ops.drain_copies.insert(data as usize, request);
            k.fltmgr.ops.bury(copy);
            Some((key, post, image, data, objects, e.context))
        });
        let Some((key, post, image, data, objects, context)) = step else { return };
        let status = match post {
            // SAFETY: the filter's post callback with a draining copy of the callback data.
            Some(p) => super::call_filter(image, "PostOperationCallback", || unsafe {
                p(data, objects, context, POST_DRAINING)
            })
            .unwrap_or(postop::FINISHED_PROCESSING),
            None => postop::FINISHED_PROCESSING,
        };
        kernel::with(|k| {
            log_op(k, key, i, EvPhase::Post, status, true);
            if status != postop::FINISHED_PROCESSING {
                let f = k.fltmgr.inst(i).filter;
                k.flt_report(
                    Some(f),
                    Rule::StatusInvalidForOperation,
                    format!("a draining post-operation callback returned {} (only FLT_POSTOP_FINISHED_PROCESSING, facts.md §4)", status_name(false, status)),
                );
            }
            k.flt_instance_released(i);
        });
    }
}

/// How a finding names an operation of `kind` that is not IRP-based.
fn kind_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::FsFilter => "an FsFilter operation",
        _ => "a fast I/O operation",
    }
}

/// Runs a fast-I/O operation's pre walk; the end and the posts are the caller's.
pub fn fast_pre(key: u64) -> PreEnd {
    super::dispatch::pre_walk(key)
}

/// Runs the posts of a fast-I/O operation and retires it; returns its final status block (a
/// post callback may have changed it, FLT_CALLBACK_DATA's reference page).
pub fn fast_post(key: u64) -> Option<windows_sys::Win32::System::IO::IO_STATUS_BLOCK> {
    let _ = post_walk(key);
    kernel::with(|k| {
        let iosb = k.fltmgr.ops.op(key).map(|o| o.cbd().IoStatus);
        free_swapped(k, key);
        k.fltmgr.ops.remove(key);
        iosb
    })
}

/// Sets the post phase of a fast-I/O operation with its result.
pub fn fast_result(key: u64, iosb: windows_sys::Win32::System::IO::IO_STATUS_BLOCK) {
    kernel::with(|k| {
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.phase = Phase::Post;
            let d = op.cbd();
            d.IoStatus = iosb;
            d.Flags |= cbd::POST_OPERATION;
        }
    });
}

/// The callback data of an operation.
pub fn data_of(key: u64) -> Option<FLT_CALLBACK_DATA> {
    kernel::with(|k| k.fltmgr.ops.op(key).map(|o| *o.cbd()))
}

/// Frees the MDLs pre callbacks swapped into an ending operation and did not retain
/// (`FltRetainSwappedBufferMdlAddress`'s page: the Filter Manager frees them). One a filter
/// already freed itself is left alone.
pub(crate) fn free_swapped(k: &mut Kernel, key: u64) {
    let Some(op) = k.fltmgr.ops.op_mut(key) else { return };
    for (_, m) in std::mem::take(&mut op.swapped) {
        if k.mdls.contains_key(&(m as usize)) {
            k.free_mdl(m);
        }
    }
}

/// The MDL the running callback's instance swapped into operation `data`, when it is that
/// instance's callback that runs (`FltGetSwappedBufferMdlAddress`, `FltRetainSwappedBufferMdlAddress`);
/// `retain` takes it off the Filter Manager's list.
pub(crate) fn swapped_mdl(
    data: *const FLT_CALLBACK_DATA,
    retain: bool,
) -> *mut windows_sys::Wdk::Foundation::MDL {
    kernel::with(|k| {
        let Some(running) = k.fltmgr.ops.running.filter(|r| r.data == data as usize) else {
            return std::ptr::null_mut();
        };
        let Some(op) = k.fltmgr.ops.op_mut(running.key) else { return std::ptr::null_mut() };
        let Some(i) = op.swapped.iter().position(|&(inst, _)| inst == running.inst) else {
            return std::ptr::null_mut();
        };
        if retain {
            op.swapped.swap_remove(i).1
        } else {
            op.swapped.get(i).map_or(std::ptr::null_mut(), |e| e.1)
        }
    })
}
