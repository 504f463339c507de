//! An operation's record while it goes through one frame: its callback data, the instances it
//! visits, the posts it owes, its phase; the `FLT_PREOP_*`, `FLT_POSTOP_*` and callback-data
//! values; and the event each callback leaves (facts.md §3, §4).

use std::ffi::c_void;

use fsfilter::{
    CallbackDataFlags, IrpFlags, MajorFunction, OperationHeader, OperationKind, Parameters,
    RequestorMode,
};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP, KEVENT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK, FLT_RELATED_OBJECTS,
};

use super::params::CbdBlock;
use super::{FilterId, FvId, InstId};
use crate::events::{FltEvent, Phase as EvPhase, RequestRef};
use crate::ids::RequestId;
use crate::kernel::Kernel;
use crate::mem::Block;

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
    /// `FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION`.
    pub const FS_FILTER_OPERATION: u32 = 0x4;
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
    /// The parameters as its pre-operation callback received them (restored for its post: the
    /// changes it made went to the instances below, not to itself or above).
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
    pub(crate) block: Block,
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
    pub(crate) event: Box<KEVENT>,
    /// The IRP is ours to complete (never sent down, or its completion stopped with
    /// `STATUS_MORE_PROCESSING_REQUIRED`).
    pub owned: bool,
    /// Our completion routine stopped the completion (a post callback held the operation).
    pub halted: bool,
    /// The dispatch routine has not returned yet.
    pub in_dispatch: bool,
    /// The thread that originated this synchronized operation waits in our dispatch routine to
    /// run its post callbacks, because a pre callback pended it (post-create callbacks run in the
    /// thread that originated the create, facts.md §4): whoever carries the operation on stops
    /// before the post walk and signals `event`.
    pub post_waiter: bool,
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
    pub(crate) orig_buffer: *mut c_void,
    pub(crate) orig_mdl: *mut windows_sys::Wdk::Foundation::MDL,
    /// The parameters as the pre callback called last (or pended) received them: what its post
    /// callback sees ([`PostEntry::iopb`]).
    pub(crate) received: FLT_IO_PARAMETER_BLOCK,
    /// The MDLs pre callbacks swapped in, with the instance that did: the Filter Manager frees
    /// them when the operation ends, unless the instance retained its own
    /// (`FltRetainSwappedBufferMdlAddress`).
    pub(crate) swapped: Vec<(InstId, *mut windows_sys::Wdk::Foundation::MDL)>,
    /// `FltDoCompletionProcessingWhenSafe` queued its safe callback from the post callback
    /// running: that post must answer `FLT_POSTOP_MORE_PROCESSING_REQUIRED`.
    pub(crate) posted_when_safe: bool,
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

/// How many finished operations' blocks stay allocated (a bounded quarantine: before it, every
/// callback data of a machine's life stayed allocated, some 300 bytes per request).
pub(crate) const DEAD_KEPT: usize = 4096;

/// Operations in flight by key, in arrival order (keys only grow).
///
/// A sorted vector rather than a `BTreeMap`: a handful of operations are in flight at a time,
/// and a B-tree of records this large allocated a node of some 2 KiB whenever it went from
/// empty to one operation (every request) and freed it when the last one ended.
#[derive(Default)]
pub struct OpMap(Vec<(u64, Op)>);

impl OpMap {
    /// The position of `key`, or where it would go.
    fn find(&self, key: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&key, |(k, _)| *k)
    }

    /// Adds an operation (replacing one of the same key).
    pub fn insert(&mut self, key: u64, op: Op) {
        match self.find(key) {
            Ok(i) => self.0[i].1 = op,
            Err(i) => self.0.insert(i, (key, op)),
        }
    }

    /// The operation of `key`.
    pub fn get(&self, key: &u64) -> Option<&Op> {
        self.find(*key).ok().map(|i| &self.0[i].1)
    }

    /// The operation of `key`, mutable.
    pub fn get_mut(&mut self, key: &u64) -> Option<&mut Op> {
        self.find(*key).ok().map(|i| &mut self.0[i].1)
    }

    /// Removes and returns the operation of `key`.
    pub fn remove(&mut self, key: &u64) -> Option<Op> {
        self.find(*key).ok().map(|i| self.0.remove(i).1)
    }

    /// The operations with their keys, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Op)> {
        self.0.iter().map(|(k, op)| (k, op))
    }

    /// The operations, in key order.
    pub fn values(&self) -> impl Iterator<Item = &Op> {
        self.0.iter().map(|(_, op)| op)
    }

    /// True when no operation is in flight.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many operations are in flight.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Operations in flight.
#[derive(Default)]
pub struct Ops {
    /// By key, in arrival order.
    pub map: OpMap,
    pub(crate) by_data: crate::kernel::FastMap<usize, u64>,
    pub(crate) next: u64,
    /// Blocks of finished operations, the last [`DEAD_KEPT`]: a filter that kept a callback-data
    /// pointer for a while reads a dead one rather than freed memory (or a newer operation's).
    pub(crate) dead: std::collections::VecDeque<Block>,
    /// The user request of each draining copy of a callback data (facts.md §2.5), so that a
    /// draining post-operation callback is attributed to its request like any other.
    pub(crate) drain_copies: crate::kernel::FastMap<usize, Option<RequestId>>,
    /// What finished operations leave for the next ones to reuse.
    spare: Spare,
    /// The pre- or post-operation callback the Filter Manager is running now, if any: the trace
    /// hook reads its volume and request from it rather than looking both up.
    pub(crate) running: Option<Running>,
    /// Operations our completion routine ended while our dispatch routine was still in the
    /// `IoCallDriver` that sent them down, with the status the post callbacks left in the IRP:
    /// what that dispatch routine returns ([`super::dispatch`]'s `pass_down`).
    pub(crate) finished_in_call: Vec<(u64, i32)>,
}

/// A pre- or post-operation callback being run ([`Ops::running`]): set when the Filter Manager
/// enters the filter, cleared when the callback returns and when the operation ends; a callback
/// called inside it takes its place (the outer one's later events then look up as any other).
/// While set, the operation is in flight and the instance's handle is its own (handles are never
/// reused), so what it holds is what the trace hook's lookups would find.
#[derive(Clone, Copy)]
pub(crate) struct Running {
    /// The operation.
    pub key: u64,
    /// Its callback data.
    pub data: usize,
    /// The instance's handle (`PFLT_INSTANCE`), as a minifilter backend reports it.
    pub handle: usize,
    /// The instance.
    pub inst: InstId,
    /// The operation's user request.
    pub request: Option<RequestId>,
}

/// Storage of finished operations kept for the next ones (a request through a frame used to
/// allocate and free its block, event, chain and post list).
#[derive(Default)]
struct Spare {
    /// Blocks that left the dead operations' quarantine ([`DEAD_KEPT`]).
    blocks: Vec<Block>,
    /// Events (boxed as an operation holds them: a waiter keeps the event's address).
    #[allow(clippy::vec_box, reason = "the boxes themselves are what is reused")]
    events: Vec<Box<KEVENT>>,
    /// Chains, empty.
    chains: Vec<Vec<InstId>>,
    /// Post lists, empty.
    posts: Vec<Vec<PostEntry>>,
}

/// How many of each kind [`Spare`] keeps.
const SPARE_KEPT: usize = 16;

/// Keeps `item` in `list` unless the list holds [`SPARE_KEPT`] already.
fn keep_spare<T>(list: &mut Vec<T>, item: T) {
    if list.len() < SPARE_KEPT {
        list.push(item);
    }
}

impl Ops {
    /// The user request of the operation whose callback data is `data` (None: not an
    /// operation's callback data).
    pub fn request_of(&self, data: usize) -> Option<Option<RequestId>> {
        let Some(key) = self.key_of(data) else {
            return self.drain_copies.get(&data).copied();
        };
        self.map.get(&key).map(|o| o.request)
    }

    /// The key of the operation whose callback data is `data`.
    pub fn key_of(&self, data: usize) -> Option<u64> {
        self.by_data.get(&data).copied()
    }

    pub(crate) fn op(&self, key: u64) -> Option<&Op> {
        self.map.get(&key)
    }

    pub(crate) fn op_mut(&mut self, key: u64) -> Option<&mut Op> {
        self.map.get_mut(&key)
    }

    pub(crate) fn remove(&mut self, key: u64) {
        if self.running.is_some_and(|r| r.key == key) {
            self.running = None;
        }
        if let Some(op) = self.map.remove(&key) {
            self.by_data.remove(&(op.data as usize));
            let Op { block, event, mut chain, mut posts, .. } = op;
            self.bury(block);
            keep_spare(&mut self.spare.events, event);
            chain.clear();
            keep_spare(&mut self.spare.chains, chain);
            posts.clear();
            keep_spare(&mut self.spare.posts, posts);
        }
    }

    /// Keeps a finished operation's block (or a draining copy) for a while, then lets the next
    /// operations reuse it.
    pub(crate) fn bury(&mut self, block: Block) {
        self.dead.push_back(block);
        if self.dead.len() > DEAD_KEPT {
            if let Some(old) = self.dead.pop_front() {
                // `data` is the first field of the repr(C) block.
                self.drain_copies.remove(&(old.ptr() as usize));
                keep_spare(&mut self.spare.blocks, old);
            }
        }
    }

    /// A zeroed block for a new operation's [`CbdBlock`].
    pub(crate) fn new_block(&mut self) -> Block {
        match self.spare.blocks.pop() {
            Some(b) => {
                // SAFETY: the block holds `b.size()` bytes, ours alone since it left the
                // quarantine.
                unsafe { std::ptr::write_bytes(b.ptr(), 0, b.size()) };
                b
            }
            None => Block::zeroed(size_of::<CbdBlock>()),
        }
    }

    /// An all-zero event for a new operation (not initialized).
    pub(crate) fn new_event(&mut self) -> Box<KEVENT> {
        match self.spare.events.pop() {
            Some(mut e) => {
                // SAFETY: all-zero is a valid KEVENT before initialization.
                *e = unsafe { std::mem::zeroed() };
                e
            }
            // SAFETY: as above.
            None => Box::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// An empty chain for a new operation.
    pub(crate) fn new_chain(&mut self) -> Vec<InstId> {
        self.spare.chains.pop().unwrap_or_default()
    }

    /// Gives back a chain [`Ops::new_chain`] gave that no operation took.
    pub(crate) fn unused_chain(&mut self, mut chain: Vec<InstId>) {
        chain.clear();
        keep_spare(&mut self.spare.chains, chain);
    }

    /// An empty post list for a new operation.
    pub(crate) fn new_posts(&mut self) -> Vec<PostEntry> {
        self.spare.posts.pop().unwrap_or_default()
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
pub(crate) fn header(op: &Op) -> OperationHeader<'static> {
    let iopb = op.iopb();
    // SAFETY: the target file object is null or live during the operation.
    let file = unsafe { iopb.TargetFileObject.as_ref() };
    let volume_open = file.is_some_and(|f| f.Flags & crate::nt::fo::VOLUME_OPEN != 0);
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
        file: file.map_or(0, |f| std::ptr::from_ref(f) as usize),
        stream: file.map_or(0, |f| f.FsContext as usize),
        parameters: Parameters::None,
        irql: fsfilter::Irql::PASSIVE,
        synchronous: synchronous(op.cbd()),
        id: 0,
    }
}

/// `FltIsOperationSynchronous`: TRUE for fast I/O and FsFilter callbacks; for an IRP-based
/// operation what `IoIsOperationSynchronous` says of its IRP (the reference pages' list,
/// [`crate::irpx::synchronous`]), read from the callback data's parameter block.
pub fn synchronous(data: &FLT_CALLBACK_DATA) -> bool {
    if data.Flags & cbd::IRP_OPERATION == 0 {
        return true;
    }
    // SAFETY: the callback data's parameter block, valid while the data is.
    let Some(iopb) = (unsafe { data.Iopb.as_ref() }) else { return false };
    // SAFETY: the target file object, when set, is valid during the operation.
    let file_flags = unsafe { iopb.TargetFileObject.as_ref() }.map(|f| f.Flags);
    // SAFETY: the control member's code read as a plain number (FSCTL and IOCTL parameters
    // share their layout); used only for the control majors.
    let code = unsafe {
        fsfilter_kernel::params::flt::<fsfilter_kernel::params::FltControlBuffers>(&iopb.Parameters)
    }
    .IoControlCode;
    let code = crate::irpx::control_code(iopb.MajorFunction, iopb.MinorFunction, code);
    crate::irpx::synchronous(iopb.IrpFlags, file_flags, code)
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

/// Registers an operation built elsewhere (fast I/O).
pub fn insert_op(
    k: &mut Kernel,
    make: impl FnOnce(*mut FLT_CALLBACK_DATA, Block, Box<KEVENT>) -> Op,
) -> u64 {
    let block = k.fltmgr.ops.new_block();
    let cb = block.ptr().cast::<CbdBlock>();
    // SAFETY: a zeroed block sized for a CbdBlock.
    let data = unsafe { &raw mut (*cb).data };
    let event = k.fltmgr.ops.new_event();
    let op = make(data, block, event);
    let key = k.fltmgr.ops.next;
    k.fltmgr.ops.next += 1;
    k.fltmgr.ops.by_data.insert(data as usize, key);
    k.fltmgr.ops.map.insert(key, op);
    key
}

/// Fields of a fast-I/O or FsFilter operation (`kind`).
#[allow(clippy::too_many_arguments, reason = "the fields of an Op, set once")]
pub fn fast_op(
    kind: OperationKind,
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
    posts: Vec<PostEntry>,
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
        posts,
        phase: Phase::Pre,
        sync: true,
        event,
        owned: true,
        halted: false,
        in_dispatch: true,
        post_waiter: false,
        kind,
        fo,
        stream,
        conflicting,
        dismount: false,
        request,
        orig_buffer: std::ptr::null_mut(),
        orig_mdl: std::ptr::null_mut(),
        // SAFETY: all-zero is a valid parameter block (null pointers, zero values).
        received: unsafe { std::mem::zeroed() },
        swapped: Vec::new(),
        posted_when_safe: false,
    }
}

/// The WDK name of a pre (`FLT_PREOP_*`) or post (`FLT_POSTOP_*`) callback status, `"unknown"`
/// for a value that is neither.
pub fn status_name(pre: bool, s: i32) -> &'static str {
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

pub(crate) fn log_op(
    k: &mut Kernel,
    key: u64,
    inst: InstId,
    phase: EvPhase,
    outcome: i32,
    draining: bool,
) {
    let Some(op) = k.fltmgr.ops.op(key) else { return };
    let major = MajorFunction::from_code(op.iopb().MajorFunction);
    let kind = op.kind;
    let io = op.request.map(|r| RequestRef(r.0));
    // `flt_inst_names` inlined: one look at the instance's record for its four names.
    let ir = k.fltmgr.inst(inst);
    let (instance, altitude) = (ir.name.clone(), ir.altitude_text.clone());
    let driver = k.fltmgr.filter(ir.filter).name.clone();
    let volume = k.flt_inst_volume_shared_name(inst);
    k.flt_log(
        Some(driver),
        Some(volume),
        FltEvent::Operation { instance, altitude, phase, major, kind, io, draining, outcome },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_operations_blocks_are_kept_for_a_while_then_freed() {
        let mut ops = Ops::default();
        let first = Block::zeroed(size_of::<CbdBlock>());
        let first_data = first.ptr() as usize;
        ops.drain_copies.insert(first_data, None);
        ops.bury(first);
        for _ in 1..DEAD_KEPT {
            ops.bury(Block::zeroed(size_of::<CbdBlock>()));
        }
        // Still kept, and still known as a draining copy.
        assert_eq!(ops.dead.len(), DEAD_KEPT);
        assert!(ops.drain_copies.contains_key(&first_data));
        ops.bury(Block::zeroed(size_of::<CbdBlock>()));
        // The oldest went, and with it what was known about it.
        assert_eq!(ops.dead.len(), DEAD_KEPT);
        assert!(!ops.drain_copies.contains_key(&first_data));
    }
}
