//! Operations (facts.md §2.4, §3, §4): a frame's volume device turns each IRP into one
//! `FLT_CALLBACK_DATA`, calls the pre-operation callbacks of its instances from the highest
//! altitude down (skip flags from `fsfilter::Operation::skips`), passes the request down, and
//! calls the post-operation callbacks back up from its completion routine — every
//! `FLT_PREOP_*` and `FLT_POSTOP_*` status with its documented effect, pended pre-operations,
//! held post-operations, `FltDoCompletionProcessingWhenSafe`, and draining on teardown.

use std::collections::BTreeMap;
use std::ffi::c_void;

use fsfilter::{
    CallbackDataFlags, IrpFlags, MajorFunction, OperationHeader, OperationKind, Parameters,
    RequestorMode, Status,
};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP, KEVENT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_RELATED_OBJECTS, PFLT_POST_OPERATION_CALLBACK,
};
use windows_sys::Win32::Foundation::NTSTATUS;

use super::params::CbdBlock;
use super::{DevKind, FilterId, FvId, InstId, InstState};
use crate::events::{FltEvent, Phase as EvPhase, RequestRef, Rule};
use crate::ids::{ImageId, RequestId};
use crate::kernel::{self, DISPATCH_LEVEL, Kernel};
use crate::mem::Block;
use crate::nt::{fsctl, irp_flags, mj, mn_fsctl};

/// `FLT_PREOP_*`.
pub mod preop {
    /// `FLT_PREOP_SUCCESS_WITH_CALLBACK`.
    pub const SUCCESS_WITH_CALLBACK: i32 = 0;
    /// `FLT_PREOP_SUCCESS_NO_CALLBACK`.
    pub const SUCCESS_NO_CALLBACK: i32 = 1;
    /// `FLT_PREOP_PENDING`.
    pub const PENDING: i32 = 2;
    /// `FLT_PREOP_DISALLOW_FASTIO`.
    pub const DISALLOW_FASTIO: i32 = 3;
    /// `FLT_PREOP_COMPLETE`.
    pub const COMPLETE: i32 = 4;
    /// `FLT_PREOP_SYNCHRONIZE`.
    pub const SYNCHRONIZE: i32 = 5;
    /// `FLT_PREOP_DISALLOW_FSFILTER_IO`.
    pub const DISALLOW_FSFILTER_IO: i32 = 6;
}

/// `FLT_POSTOP_*`.
pub mod postop {
    /// `FLT_POSTOP_FINISHED_PROCESSING`.
    pub const FINISHED_PROCESSING: i32 = 0;
    /// `FLT_POSTOP_MORE_PROCESSING_REQUIRED`.
    pub const MORE_PROCESSING_REQUIRED: i32 = 1;
    /// `FLT_POSTOP_DISALLOW_FSFILTER_IO`.
    pub const DISALLOW_FSFILTER_IO: i32 = 2;
}

/// Callback-data flags.
pub mod cbd {
    /// `FLTFL_CALLBACK_DATA_IRP_OPERATION`.
    pub const IRP_OPERATION: u32 = 0x1;
    /// `FLTFL_CALLBACK_DATA_FAST_IO_OPERATION`.
    pub const FAST_IO_OPERATION: u32 = 0x2;
    /// `FLTFL_CALLBACK_DATA_GENERATED_IO`.
    pub const GENERATED_IO: u32 = 0x1_0000;
    /// `FLTFL_CALLBACK_DATA_DRAINING_IO`.
    pub const DRAINING_IO: u32 = 0x4_0000;
    /// `FLTFL_CALLBACK_DATA_POST_OPERATION`.
    pub const POST_OPERATION: u32 = 0x8_0000;
    /// `FLTFL_CALLBACK_DATA_DIRTY`.
    pub const DIRTY: u32 = 0x8000_0000;
}

/// `FLTFL_POST_OPERATION_DRAINING`.
pub const POST_DRAINING: u32 = 0x1;

/// An instance waiting for its post-operation callback.
#[derive(Clone, Copy)]
pub struct PostEntry {
    /// The instance.
    pub inst: InstId,
    /// The completion context its pre-operation callback returned.
    pub context: *mut c_void,
    /// The parameters when its pre-operation callback returned (restored for its post).
    pub iopb: FLT_IO_PARAMETER_BLOCK,
    /// Its post ran or was drained.
    pub done: bool,
}

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Pre-operation callbacks.
    Pre,
    /// Pended by the instance at this chain index.
    Pended(usize),
    /// Sent down.
    Down,
    /// Post-operation callbacks.
    Post,
    /// Post held (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`) by this post entry.
    PostHeld(usize),
}

/// One operation through one frame.
pub struct Op {
    block: Block,
    /// The callback data.
    pub data: *mut FLT_CALLBACK_DATA,
    /// The IRP (null for fast I/O).
    pub irp: *mut IRP,
    /// Our frame device.
    pub device: *mut DEVICE_OBJECT,
    /// The device below it.
    pub lower: *mut DEVICE_OBJECT,
    /// The frame.
    pub frame: u32,
    /// The volume.
    pub volume: FvId,
    /// The instances of the frame on the volume, highest altitude first.
    pub chain: Vec<InstId>,
    /// The next chain index whose pre-operation callback is due.
    pub next: usize,
    /// Instances owed a post-operation callback, in the order their pre ran.
    pub posts: Vec<PostEntry>,
    /// Where it is.
    pub phase: Phase,
    /// Post-operation callbacks run in the dispatching thread (SYNCHRONIZE, creates, volume
    /// dismounts).
    pub sync: bool,
    event: Box<KEVENT>,
    /// The IRP is ours to complete (never sent down, or its completion stopped with
    /// `STATUS_MORE_PROCESSING_REQUIRED`).
    pub owned: bool,
    /// Our completion routine stopped the completion (a post callback held the operation).
    pub halted: bool,
    /// The dispatch routine has not returned yet.
    pub in_dispatch: bool,
    /// IRP, fast I/O.
    pub kind: OperationKind,
    /// The file object.
    pub fo: usize,
    /// Its stream (`FsContext`).
    pub stream: usize,
    /// A non-paging write or an end-of-file change: conflicts with data-scan sections.
    pub conflicting: bool,
    /// `FSCTL_DISMOUNT_VOLUME`.
    pub dismount: bool,
    /// The user request it belongs to.
    pub request: Option<RequestId>,
    orig_buffer: *mut c_void,
    orig_mdl: *mut windows_sys::Wdk::Foundation::MDL,
}

impl Op {
    /// The parameter block.
    pub fn iopb(&self) -> &'static mut FLT_IO_PARAMETER_BLOCK {
        // SAFETY: the op's block holds a CbdBlock for the op's life (and beyond).
        unsafe { &mut (*self.block.ptr().cast::<CbdBlock>()).iopb }
    }

    /// The callback data.
    pub fn cbd(&self) -> &'static mut FLT_CALLBACK_DATA {
        // SAFETY: as above.
        unsafe { &mut (*self.block.ptr().cast::<CbdBlock>()).data }
    }

    /// The related-objects slot.
    pub fn objects(&self) -> *mut FLT_RELATED_OBJECTS {
        // SAFETY: as above.
        unsafe { &raw mut (*self.block.ptr().cast::<CbdBlock>()).objects }
    }
}

/// Operations in flight.
#[derive(Default)]
pub struct Ops {
    /// By key, in arrival order.
    pub map: BTreeMap<u64, Op>,
    by_data: crate::kernel::FastMap<usize, u64>,
    next: u64,
    /// Blocks of finished operations: a filter that kept a callback-data pointer reads a dead
    /// one rather than freed memory.
    dead: Vec<Block>,
}

impl Ops {
    /// The user request of the operation whose callback data is `data` (None: not an
    /// operation's callback data).
    pub fn request_of(&self, data: usize) -> Option<Option<RequestId>> {
        let key = self.key_of(data)?;
        self.map.get(&key).map(|o| o.request)
    }

    /// The key of the operation whose callback data is `data`.
    pub fn key_of(&self, data: usize) -> Option<u64> {
        self.by_data.get(&data).copied()
    }

    fn op(&self, key: u64) -> Option<&Op> {
        self.map.get(&key)
    }

    fn op_mut(&mut self, key: u64) -> Option<&mut Op> {
        self.map.get_mut(&key)
    }

    fn remove(&mut self, key: u64) {
        if let Some(op) = self.map.remove(&key) {
            self.by_data.remove(&(op.data as usize));
            self.dead.push(op.block);
        }
    }

    /// An operation on `stream` that conflicts with data-scan sections and has not completed.
    pub fn conflicting_on(&self, stream: usize) -> Option<*mut FLT_CALLBACK_DATA> {
        self.map
            .values()
            .find(|o| o.stream == stream && stream != 0 && o.conflicting)
            .map(|o| o.data)
    }
}

impl Kernel {
    /// True while an operation still involves an instance of `f`.
    pub fn flt_ops_involve(&self, f: FilterId) -> bool {
        self.fltmgr.ops.map.values().any(|o| {
            let pended = matches!(o.phase, Phase::Pended(i) if o.chain.get(i).is_some_and(|&x| self.fltmgr.inst(x).filter == f));
            pended
                || o.posts.iter().any(|p| !p.done && self.fltmgr.inst(p.inst).filter == f)
        })
    }
}

impl Ops {
    /// See [`Kernel::flt_ops_involve`].
    pub fn involves_filter(&self, k: &Kernel, f: FilterId) -> bool {
        k.flt_ops_involve(f)
    }
}

/// The operation header the skip flags are judged on (facts.md §3).
fn header(op: &Op) -> OperationHeader<'static> {
    let iopb = op.iopb();
    // SAFETY: the target file object is null or live during the operation.
    let volume_open = unsafe { iopb.TargetFileObject.as_ref() }
        .is_some_and(|f| f.Flags & crate::nt::fo::VOLUME_OPEN != 0);
    OperationHeader {
        major: MajorFunction::from_code(iopb.MajorFunction),
        minor: iopb.MinorFunction,
        kind: op.kind,
        irp_flags: if op.kind == OperationKind::Irp {
            IrpFlags::from_bits_retain(iopb.IrpFlags)
        } else {
            IrpFlags::empty()
        },
        data_flags: CallbackDataFlags::from_bits_retain(op.cbd().Flags),
        requestor_mode: RequestorMode::Kernel,
        file_name: None,
        volume_open,
        parameters: Parameters::None,
        irql: fsfilter::Irql::PASSIVE,
        id: 0,
    }
}

/// What a pre-operation callback's answer means for the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Next instance.
    Continue,
    /// Completed here (`FLT_PREOP_COMPLETE`).
    Complete,
    /// Pended.
    Pended,
    /// Fast I/O refused (`FLT_PREOP_DISALLOW_FASTIO`, or a pend on fast I/O).
    Disallow,
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreEnd {
    /// Every pre ran: pass it down.
    Down,
    /// Completed by a pre.
    Complete,
    /// Pended by a pre.
    Pended,
    /// Fast I/O refused.
    Disallow,
}

/// How a post walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostEnd {
    /// Every post ran.
    Finished,
    /// A post held the operation.
    Halted,
}

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
    let chain: Vec<InstId> = k
        .fltmgr
        .volume_instances(v)
        .into_iter()
        .filter(|&i| {
            k.fltmgr.inst(i).frame == frame && k.fltmgr.inst(i).state == InstState::Attached
        })
        .collect();
    if chain.is_empty() {
        return None;
    }
    // SAFETY: the IRP in our dispatch routine.
    let i = unsafe { &*irp };
    // SAFETY: its current location.
    let s = unsafe { crate::irpx::current(irp) };
    let block = Block::zeroed(size_of::<CbdBlock>());
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
    let fo = s.FileObject as usize;
    // SAFETY: a live file object of the request, when set.
    let stream = unsafe { s.FileObject.as_ref() }.map_or(0, |f| f.FsContext as usize);
    let conflicting = match s.MajorFunction {
        mj::WRITE => i.Flags & irp_flags::PAGING_IO == 0,
        mj::SET_INFORMATION => {
            // SAFETY: the member of IRP_MJ_SET_INFORMATION.
            let class = unsafe { s.Parameters.SetFile.FileInformationClass };
            matches!(class, 19 | 20)
        }
        _ => false,
    };
    let dismount = s.MajorFunction == mj::FILE_SYSTEM_CONTROL
        && s.MinorFunction == mn_fsctl::USER_FS_REQUEST
        // SAFETY: the member of a user FSCTL.
        && unsafe { s.Parameters.FileSystemControl.FsControlCode } == fsctl::DISMOUNT_VOLUME;
    let request = k.resolve_operation(irp as usize);
    let key = k.fltmgr.ops.next;
    k.fltmgr.ops.next += 1;
    let data = &raw mut b.data;
    // SAFETY: all-zero is a valid KEVENT before initialization.
    let mut event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
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
        posts: Vec::new(),
        phase: Phase::Pre,
        sync: s.MajorFunction == mj::CREATE || dismount,
        event,
        owned: true,
        halted: false,
        in_dispatch: true,
        kind: OperationKind::Irp,
        fo,
        stream,
        conflicting,
        dismount,
        request,
        orig_buffer: i.UserBuffer,
        orig_mdl: i.MdlAddress,
    };
    k.fltmgr.ops.by_data.insert(data as usize, key);
    k.fltmgr.ops.map.insert(key, op);
    Some(key)
}

/// Registers an operation built elsewhere (fast I/O).
pub fn insert_op(
    k: &mut Kernel,
    mut make: impl FnMut(*mut FLT_CALLBACK_DATA, Block, Box<KEVENT>) -> Op,
) -> u64 {
    let block = Block::zeroed(size_of::<CbdBlock>());
    let cb = block.ptr().cast::<CbdBlock>();
    // SAFETY: a zeroed block sized for a CbdBlock.
    let data = unsafe { &raw mut (*cb).data };
    // SAFETY: all-zero is a valid KEVENT.
    let event: Box<KEVENT> = Box::new(unsafe { std::mem::zeroed() });
    let op = make(data, block, event);
    let key = k.fltmgr.ops.next;
    k.fltmgr.ops.next += 1;
    k.fltmgr.ops.by_data.insert(data as usize, key);
    k.fltmgr.ops.map.insert(key, op);
    key
}

/// Fields of a fast-I/O operation.
#[allow(clippy::too_many_arguments, reason = "the fields of an Op, set once")]
pub fn fast_op(
    data: *mut FLT_CALLBACK_DATA,
    block: Block,
    event: Box<KEVENT>,
    device: *const DEVICE_OBJECT,
    lower: *mut DEVICE_OBJECT,
    frame: u32,
    v: FvId,
    chain: Vec<InstId>,
    fo: usize,
    stream: usize,
    conflicting: bool,
    request: Option<RequestId>,
) -> Op {
    Op {
        block,
        data,
        irp: std::ptr::null_mut(),
        device: device.cast_mut(),
        lower,
        frame,
        volume: v,
        chain,
        next: 0,
        posts: Vec::new(),
        phase: Phase::Pre,
        sync: true,
        event,
        owned: true,
        halted: false,
        in_dispatch: true,
        kind: OperationKind::FastIo,
        fo,
        stream,
        conflicting,
        dismount: false,
        request,
        orig_buffer: std::ptr::null_mut(),
        orig_mdl: std::ptr::null_mut(),
    }
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
            let irp = kernel::with(|k| {
                let op = k.fltmgr.ops.op(key)?;
                op.in_dispatch.then_some(op.irp)
            });
            if let Some(irp) = irp {
                // SAFETY: the IRP in our dispatch routine, at our location.
                unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
            }
            Status::PENDING.0
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
    },
    Done,
}

fn next_pre(k: &mut Kernel, key: u64) -> PreStep {
    loop {
        let Some(op) = k.fltmgr.ops.op(key) else { return PreStep::Done };
        let idx = op.next;
        let Some(&inst) = op.chain.get(idx) else { return PreStep::Done };
        let major = op.iopb().MajorFunction;
        let h = header(op);
        let (data, objects, fo) = (op.data, op.objects(), op.iopb().TargetFileObject);
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.next = idx + 1;
        }
        let ir = k.fltmgr.inst(inst);
        if ir.state != InstState::Attached {
            continue;
        }
        let fr = k.fltmgr.filter(ir.filter);
        let Some(reg) = fr.ops.get(&major).copied() else { continue };
        let entry = fsfilter::Operation {
            major: MajorFunction::from_code(major),
            flags: fsfilter::OperationFlags::from_bits_retain(reg.flags),
            pre: reg.pre.is_some(),
            post: reg.post.is_some(),
        };
        if entry.skips(&h) {
            continue;
        }
        let (image, fh, vh, ih) =
            (fr.image, fr.handle(), k.fltmgr.vol(ir.volume).handle(), ir.handle());
        let op = k.fltmgr.ops.op(key).map(|o| o.iopb() as *mut FLT_IO_PARAMETER_BLOCK);
        if let Some(iopb) = op {
            // SAFETY: the op's parameter block.
            unsafe { (*iopb).TargetInstance = ih };
        }
        // SAFETY: the op's related-objects slot.
        unsafe { objects.write(super::related_objects(fh, vh, ih, fo)) };
        k.fltmgr.inst_mut(inst).outstanding += 1;
        match reg.pre {
            Some(pre) => return PreStep::Call { pre, image, idx, data, objects },
            None => {
                // A post without a pre: as if the pre asked for its post with no context.
                if let Some(op) = k.fltmgr.ops.op_mut(key) {
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
}

/// Runs pre-operation callbacks from the next due instance down.
fn pre_walk(key: u64) -> PreEnd {
    loop {
        match kernel::with(|k| next_pre(k, key)) {
            PreStep::Done => return PreEnd::Down,
            PreStep::Call { pre, image, idx, data, objects } => {
                let mut context: *mut c_void = std::ptr::null_mut();
                // SAFETY: the filter's pre-operation callback with the operation's callback
                // data, related objects and a completion-context out parameter.
                let status = super::call_filter(image, "PreOperationCallback", || unsafe {
                    pre(data, objects, &mut context)
                })
                .unwrap_or(preop::SUCCESS_NO_CALLBACK);
                let act = kernel::with(|k| apply_pre(k, key, idx, status, context, false));
                match act {
                    Act::Continue => {}
                    Act::Complete => return PreEnd::Complete,
                    Act::Pended => return PreEnd::Pended,
                    Act::Disallow => return PreEnd::Disallow,
                }
            }
        }
    }
}

fn status_name(pre: bool, s: i32) -> &'static str {
    match (pre, s) {
        (true, 0) => "FLT_PREOP_SUCCESS_WITH_CALLBACK",
        (true, 1) => "FLT_PREOP_SUCCESS_NO_CALLBACK",
        (true, 2) => "FLT_PREOP_PENDING",
        (true, 3) => "FLT_PREOP_DISALLOW_FASTIO",
        (true, 4) => "FLT_PREOP_COMPLETE",
        (true, 5) => "FLT_PREOP_SYNCHRONIZE",
        (true, 6) => "FLT_PREOP_DISALLOW_FSFILTER_IO",
        (false, 0) => "FLT_POSTOP_FINISHED_PROCESSING",
        (false, 1) => "FLT_POSTOP_MORE_PROCESSING_REQUIRED",
        (false, 2) => "FLT_POSTOP_DISALLOW_FSFILTER_IO",
        _ => "unknown",
    }
}

fn log_op(k: &mut Kernel, key: u64, inst: InstId, phase: EvPhase, outcome: i32, draining: bool) {
    let Some(op) = k.fltmgr.ops.op(key) else { return };
    let major = MajorFunction::from_code(op.iopb().MajorFunction);
    let kind = op.kind;
    let io = op.request.map(|r| RequestRef(r.0));
    let ir = k.fltmgr.inst(inst);
    let (instance, altitude) = (ir.name.clone(), ir.altitude_text.clone());
    let (driver, volume) = k.flt_inst_names(inst);
    k.flt_log(
        driver,
        volume,
        FltEvent::Operation { instance, altitude, phase, major, kind, io, draining, outcome },
    );
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
            let snapshot = *op.iopb();
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
            k.flt_instance_released(inst);
            if kind != OperationKind::FastIo || resumed {
                k.flt_report(
                    Some(f),
                    Rule::StatusInvalidForOperation,
                    format!("{m}: FLT_PREOP_DISALLOW_FASTIO for an IRP-based operation (fast I/O only, facts.md §4); treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
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
                }
            }
            Act::Complete
        }
        preop::DISALLOW_FSFILTER_IO => {
            k.flt_report(
                Some(f),
                Rule::StatusInvalidForOperation,
                format!("{m}: FLT_PREOP_DISALLOW_FSFILTER_IO outside IRP_MJ_QUERY_OPEN (facts.md §4); treated as FLT_PREOP_SUCCESS_NO_CALLBACK"),
            );
            k.flt_instance_released(inst);
            Act::Continue
        }
        other => {
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
        if sync {
            // SAFETY: the op's own event.
            unsafe { crate::sched::reset_event(&mut *op.event) };
        }
        Some((irp, lower, sync, &raw mut *op.event))
    });
    let Some((irp, lower, sync, event)) = prepared else { return Status::INVALID_DEVICE_STATE.0 };
    let status = crate::irp::call_driver(lower, irp);
    if sync {
        if status == Status::PENDING.0 {
            // SAFETY: the op's event, alive while the op is (the op waits here).
            unsafe { crate::sched::wait_for_event(event, None) };
        }
        let done = kernel::with(|k| k.fltmgr.ops.op(key).is_some_and(|o| o.owned));
        if !done {
            return Status::PENDING.0;
        }
        return match post_walk(key) {
            PostEnd::Finished => finish(key),
            PostEnd::Halted => {
                // SAFETY: the IRP, held at our location.
                unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
                Status::PENDING.0
            }
        };
    }
    let halted = kernel::with(|k| k.fltmgr.ops.op(key).is_some_and(|o| o.halted));
    if halted { Status::PENDING.0 } else { status }
}

/// The completion routine of every operation we send down.
///
/// # Safety
/// Called by the I/O manager with our device, the IRP and the op's key.
unsafe extern "system" fn flt_complete(
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
    },
    Skip,
    Done,
}

fn next_post(k: &mut Kernel, key: u64) -> PostStep {
    let Some(op) = k.fltmgr.ops.op(key) else { return PostStep::Done };
    let Some(pidx) = op.posts.iter().rposition(|p| !p.done) else { return PostStep::Done };
    let e = op.posts[pidx];
    let (data, objects, fo) = (op.data, op.objects(), op.iopb().TargetFileObject);
    let ir = k.fltmgr.inst(e.inst);
    if ir.state == InstState::Gone {
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.posts[pidx].done = true;
        }
        return PostStep::Skip;
    }
    let fr = k.fltmgr.filter(ir.filter);
    let major = op.iopb().MajorFunction;
    let post: PFLT_POST_OPERATION_CALLBACK = fr.ops.get(&major).and_then(|r| r.post);
    let (image, fh, vh, ih) =
        (fr.image, fr.handle(), k.fltmgr.vol(ir.volume).handle(), ir.handle());
    let Some(post) = post else {
        if let Some(op) = k.fltmgr.ops.op_mut(key) {
            op.posts[pidx].done = true;
        }
        k.flt_instance_released(e.inst);
        return PostStep::Skip;
    };
    // Restore the parameters this instance's pre returned with; mark the post phase.
    let iopb = op.iopb();
    *iopb = e.iopb;
    op.cbd().Flags |= cbd::POST_OPERATION;
    // SAFETY: the op's related-objects slot.
    unsafe { objects.write(super::related_objects(fh, vh, ih, fo)) };
    PostStep::Call { post, image, pidx, data, objects, context: e.context }
}

/// Runs post-operation callbacks from the lowest instance owed one up (facts.md §2.4).
pub fn post_walk(key: u64) -> PostEnd {
    loop {
        match kernel::with(|k| next_post(k, key)) {
            PostStep::Done => return PostEnd::Finished,
            PostStep::Skip => {}
            PostStep::Call { post, image, pidx, data, objects, context } => {
                // SAFETY: the filter's post-operation callback with the operation's data, the
                // related objects and the context its pre returned.
                let status = super::call_filter(image, "PostOperationCallback", || unsafe {
                    post(data, objects, context, 0)
                })
                .unwrap_or(postop::FINISHED_PROCESSING);
                let held = kernel::with(|k| apply_post(k, key, pidx, status));
                if held {
                    return PostEnd::Halted;
                }
            }
        }
    }
}

/// Applies a post answer; true when the operation is held.
fn apply_post(k: &mut Kernel, key: u64, pidx: usize, status: i32) -> bool {
    let Some(op) = k.fltmgr.ops.op(key) else { return false };
    let inst = op.posts[pidx].inst;
    let kind = op.kind;
    let m = MajorFunction::from_code(op.iopb().MajorFunction);
    let f = k.fltmgr.inst(inst).filter;
    log_op(k, key, inst, EvPhase::Post, status, false);
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
                format!("{m}: FLT_POSTOP_MORE_PROCESSING_REQUIRED for a fast-I/O operation (IRP-based only, facts.md §4); treated as finished"),
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
    kernel::with(|k| k.fltmgr.vol_mut(v).live = false);
}

/// Ends an operation whose IRP is ours: status and buffers into the IRP, then
/// `IoCompleteRequest`. Returns the final status.
fn finish(key: u64) -> NTSTATUS {
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

/// `FLT_PREOP_COMPLETE` (or a refused fast I/O): the posts of the instances above run, then the
/// IRP completes with the callback data's status.
fn complete_from_pre(key: u64) -> NTSTATUS {
    let kind = kernel::with(|k| {
        let op = k.fltmgr.ops.op_mut(key)?;
        op.phase = Phase::Post;
        op.cbd().Flags |= cbd::POST_OPERATION;
        Some(op.kind)
    });
    let Some(kind) = kind else { return Status::SUCCESS.0 };
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
        Some((key, act, k.irql >= DISPATCH_LEVEL))
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
        let inst = {
            let op = k.fltmgr.ops.op_mut(key)?;
            op.phase = Phase::Post;
            op.posts[pidx].done = true;
            op.posts[pidx].inst
        };
        k.flt_instance_released(inst);
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
/// worker's answer finishes or keeps holding it); refused for fast I/O, paging I/O and draining.
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
        let key = k.fltmgr.ops.key_of(data as usize)?;
        let op = k.fltmgr.ops.op(key)?;
        if op.kind != OperationKind::Irp
            || op.iopb().IrpFlags & irp_flags::PAGING_IO != 0
            || flags & POST_DRAINING != 0
        {
            return Some(None);
        }
        // SAFETY: the caller's related objects.
        let inst = k.fltmgr.instance_of(unsafe { (*objects).Instance })?;
        let image = k.fltmgr.filter(k.fltmgr.inst(inst).filter).image;
        Some(Some((image, k.irql < DISPATCH_LEVEL)))
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
/// callback data.
pub fn drain_instance(i: InstId) {
    loop {
        let step = kernel::with(|k| {
            let found = k.fltmgr.ops.map.iter().find_map(|(&key, op)| {
                if op.phase == Phase::Post {
                    return None;
                }
                op.posts.iter().position(|p| p.inst == i && !p.done).map(|pidx| (key, pidx))
            });
            let (key, pidx) = found?;
            let op = k.fltmgr.ops.op_mut(key)?;
            op.posts[pidx].done = true;
            let e = op.posts[pidx];
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
            k.fltmgr.ops.dead.push(copy);
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

/// Runs a fast-I/O operation's pre walk; the end and the posts are the caller's.
pub fn fast_pre(key: u64) -> PreEnd {
    pre_walk(key)
}

/// Runs the posts of a fast-I/O operation and retires it.
pub fn fast_post(key: u64) {
    let _ = post_walk(key);
    kernel::with(|k| k.fltmgr.ops.remove(key));
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
