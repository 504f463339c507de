//! Contexts (facts.md §5, §6): `FltAllocateContext` against the registration's context types,
//! reference counts, instance, stream and stream-handle contexts (stream contexts hang off the
//! file system's `FsContext`, which supports filter contexts; stream-handle contexts off the file
//! object), cleanup callbacks when the last reference goes, and leak accounting at
//! unregistration.

use std::collections::BTreeMap;
use std::ffi::c_void;

use fsfilter::Status;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_CONTEXT_ALLOCATE_CALLBACK, PFLT_CONTEXT_CLEANUP_CALLBACK, PFLT_CONTEXT_FREE_CALLBACK,
};

use super::{FilterId, FilterState, InstId, InstState};
use crate::events::Rule;
use crate::ids::ImageId;
use crate::kernel::{FastMap, Kernel};
use crate::mem::Block;

/// `FLT_VOLUME_CONTEXT`.
pub const VOLUME: u16 = 0x1;
/// `FLT_INSTANCE_CONTEXT`.
pub const INSTANCE: u16 = 0x2;
/// `FLT_FILE_CONTEXT`.
pub const FILE: u16 = 0x4;
/// `FLT_STREAM_CONTEXT`.
pub const STREAM: u16 = 0x8;
/// `FLT_STREAMHANDLE_CONTEXT`.
pub const STREAMHANDLE: u16 = 0x10;
/// `FLT_TRANSACTION_CONTEXT`.
pub const TRANSACTION: u16 = 0x20;
/// `FLT_SECTION_CONTEXT`.
pub const SECTION: u16 = 0x40;
/// `FLT_VARIABLE_SIZED_CONTEXTS`.
pub const VARIABLE_SIZED: usize = usize::MAX;
/// `MAXUSHORT`: the largest `FltAllocateContext` size (its reference page).
pub const MAX_CONTEXT_SIZE: usize = 0xFFFF;
/// `FLTFL_CONTEXT_REGISTRATION_NO_EXACT_SIZE_MATCH`.
pub const NO_EXACT_SIZE_MATCH: u16 = 0x1;
/// `FLT_SET_CONTEXT_REPLACE_IF_EXISTS`.
pub const REPLACE_IF_EXISTS: i32 = 0;
/// `FLT_SET_CONTEXT_KEEP_IF_EXISTS`.
pub const KEEP_IF_EXISTS: i32 = 1;

/// True for the context types a registration may name.
pub fn is_context_type(t: u16) -> bool {
    matches!(t, VOLUME | INSTANCE | FILE | STREAM | STREAMHANDLE | TRANSACTION | SECTION)
}

/// The WDK name of a context type.
pub fn type_name(t: u16) -> &'static str {
    match t {
        VOLUME => "FLT_VOLUME_CONTEXT",
        INSTANCE => "FLT_INSTANCE_CONTEXT",
        FILE => "FLT_FILE_CONTEXT",
        STREAM => "FLT_STREAM_CONTEXT",
        STREAMHANDLE => "FLT_STREAMHANDLE_CONTEXT",
        TRANSACTION => "FLT_TRANSACTION_CONTEXT",
        SECTION => "FLT_SECTION_CONTEXT",
        _ => "FLT_UNKNOWN_CONTEXT",
    }
}

/// One `FLT_CONTEXT_REGISTRATION`.
#[derive(Clone, Copy)]
pub struct ContextReg {
    /// The type.
    pub ty: u16,
    /// The size (`FLT_VARIABLE_SIZED_CONTEXTS` for any).
    pub size: usize,
    /// The pool tag.
    pub tag: u32,
    /// `Flags` (`FLTFL_CONTEXT_REGISTRATION_NO_EXACT_SIZE_MATCH`).
    pub flags: u16,
    /// `ContextCleanupCallback`.
    pub cleanup: PFLT_CONTEXT_CLEANUP_CALLBACK,
    /// `ContextAllocateCallback`.
    pub allocate: PFLT_CONTEXT_ALLOCATE_CALLBACK,
    /// `ContextFreeCallback`.
    pub free: PFLT_CONTEXT_FREE_CALLBACK,
}

/// What a context is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Nothing (allocated, or deleted).
    None,
    /// An instance.
    Instance(InstId),
    /// A stream (`FsContext`) for an instance.
    Stream(InstId, usize),
    /// A file object for an instance.
    StreamHandle(InstId, usize),
    /// A data-scan section.
    Section,
}

/// A context.
pub struct Ctx {
    _block: Option<Block>,
    /// Its address (what the filter sees).
    pub ptr: usize,
    /// Its filter.
    pub filter: FilterId,
    /// Its type.
    pub ty: u16,
    /// References (the allocation's, the callers', the object's while linked).
    pub refs: u32,
    /// Not yet freed.
    pub live: bool,
    /// What it is attached to.
    pub link: Link,
    reg: ContextReg,
    image: ImageId,
    /// Allocated from paged pool (`FltAllocateContext`'s pool type).
    paged: bool,
}

/// A cleanup to run outside the kernel's borrow.
pub struct Cleanup {
    cleanup: PFLT_CONTEXT_CLEANUP_CALLBACK,
    free: PFLT_CONTEXT_FREE_CALLBACK,
    image: ImageId,
    ptr: usize,
    ty: u16,
    /// The context's filter.
    pub filter: FilterId,
    /// The context was allocated from paged pool.
    pub paged: bool,
}

/// The context table.
#[derive(Default)]
pub struct Contexts {
    /// Every context, live or freed (freed memory stays allocated).
    pub list: Vec<Ctx>,
    by_ptr: FastMap<usize, usize>,
    instance: BTreeMap<InstId, usize>,
    stream: BTreeMap<(InstId, usize), usize>,
    handle: BTreeMap<(InstId, usize), usize>,
}

impl Contexts {
    /// The live context at `ptr`.
    pub fn find(&self, ptr: usize) -> Option<usize> {
        self.by_ptr.get(&ptr).copied().filter(|&i| self.list[i].live)
    }
}

/// What `FltAllocateContext` must do once it has memory.
pub enum Allocation {
    /// Memory from the filter's `ContextAllocateCallback`.
    Callback(ContextReg, ImageId),
    /// Ordinary pool.
    Pool(ContextReg, ImageId),
}

impl Kernel {
    /// `FltAllocateContext`'s checks: a size of 0 or above `MAXUSHORT`, or a type that is not
    /// one of the seven, is `STATUS_INVALID_PARAMETER` (its reference page), for any
    /// definition; a filter being torn down (unregistering or unregistered)
    /// `STATUS_FLT_DELETING_OBJECT`; then the type and size must match a registered context
    /// (`STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND`): a fixed-size definition of that size, else
    /// the smallest larger one registered with `FLTFL_CONTEXT_REGISTRATION_NO_EXACT_SIZE_MATCH`
    /// (the "Registering context types" page), else a variable-sized one.
    pub fn flt_context_allocation(
        &mut self,
        f: FilterId,
        ty: u16,
        size: usize,
    ) -> Result<Allocation, Status> {
        // "An invalid value ... for the ContextType or the ContextSize parameter": a type that is
        // not one of the seven (a valid type the filter did not register is not found, below).
        if size == 0 || size > MAX_CONTEXT_SIZE || !is_context_type(ty) {
            return Err(Status::INVALID_PARAMETER);
        }
        let fr = self.fltmgr.filter(f);
        // "The minifilter driver ... is being torn down": from FltUnregisterFilter on, as for
        // FltObjectReference (the reference page).
        if matches!(fr.state, FilterState::Unregistering | FilterState::Unregistered) {
            return Err(Status::FLT_DELETING_OBJECT);
        }
        let of_type = || fr.context_types.iter().filter(|r| r.ty == ty);
        let reg = of_type()
            .find(|r| r.size == size)
            .or_else(|| {
                of_type()
                    .filter(|r| r.size != VARIABLE_SIZED && r.size > size)
                    .filter(|r| r.flags & NO_EXACT_SIZE_MATCH != 0)
                    .min_by_key(|r| r.size)
            })
            .or_else(|| of_type().find(|r| r.size == VARIABLE_SIZED))
            .copied()
            .ok_or(Status::FLT_CONTEXT_ALLOCATION_NOT_FOUND)?;
        let image = fr.image;
        if self.fault(crate::faults::FaultKind::AllocateContext) {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        Ok(if reg.allocate.is_some() {
            Allocation::Callback(reg, image)
        } else {
            Allocation::Pool(reg, image)
        })
    }

    /// Records a new context (one reference).
    pub fn flt_context_add(
        &mut self,
        f: FilterId,
        reg: ContextReg,
        image: ImageId,
        block: Option<Block>,
        ptr: usize,
        paged: bool,
    ) {
        let i = self.fltmgr.contexts.list.len();
        self.fltmgr.contexts.list.push(Ctx {
            _block: block,
            ptr,
            filter: f,
            ty: reg.ty,
            refs: 1,
            live: true,
            link: Link::None,
            reg,
            image,
            paged,
        });
        self.fltmgr.contexts.by_ptr.insert(ptr, i);
    }

    /// `FltReferenceContext`.
    pub fn flt_context_reference(&mut self, ptr: usize) {
        match self.fltmgr.contexts.find(ptr) {
            Some(i) => self.fltmgr.contexts.list[i].refs += 1,
            None => self.report_current(
                Rule::InvalidFltObject,
                "FltReferenceContext on a context that does not exist",
            ),
        }
    }

    /// `FltReleaseContext`: the cleanup to run when it was the last reference.
    pub fn flt_context_release(&mut self, ptr: usize) -> Option<Cleanup> {
        let Some(i) = self.fltmgr.contexts.find(ptr) else {
            self.report_current(
                Rule::InvalidFltObject,
                format!("FltReleaseContext({ptr:#x}): not a live context (released more than referenced?)"),
            );
            return None;
        };
        // A linked context's last reference is its object's, which only unlinking drops: a
        // release that would take it is one more than the caller holds.
        let c = &self.fltmgr.contexts.list[i];
        if c.refs <= 1 && c.link != Link::None {
            let (f, ty) = (c.filter, c.ty);
            self.flt_report(
                Some(f),
                Rule::InvalidFltObject,
                format!(
                    "FltReleaseContext({ptr:#x}) of a {} would release the reference its object holds (released more than referenced); ignored",
                    type_name(ty)
                ),
            );
            return None;
        }
        self.release_index(i)
    }

    fn release_index(&mut self, i: usize) -> Option<Cleanup> {
        let c = &mut self.fltmgr.contexts.list[i];
        c.refs = c.refs.saturating_sub(1);
        if c.refs > 0 {
            return None;
        }
        c.live = false;
        Some(Cleanup {
            cleanup: c.reg.cleanup,
            free: c.reg.free,
            image: c.image,
            ptr: c.ptr,
            ty: c.ty,
            filter: c.filter,
            paged: c.paged,
        })
    }

    fn unlink(&mut self, i: usize) -> Option<Cleanup> {
        let link = self.fltmgr.contexts.list[i].link;
        let t = &mut self.fltmgr.contexts;
        match link {
            Link::None => return None,
            Link::Instance(inst) => {
                t.instance.remove(&inst);
            }
            Link::Stream(inst, s) => {
                t.stream.remove(&(inst, s));
            }
            Link::StreamHandle(inst, fo) => {
                t.handle.remove(&(inst, fo));
            }
            Link::Section => {}
        }
        t.list[i].link = Link::None;
        self.release_index(i)
    }

    /// `FltSet*Context`: links `new` to the object (FltMgr takes a reference), not on an instance
    /// being torn down (`STATUS_FLT_DELETING_OBJECT`); `old` receives
    /// the context already there (referenced) for `KEEP_IF_EXISTS`
    /// (`STATUS_FLT_CONTEXT_ALREADY_DEFINED`) and, when the caller asks for it, the replaced one
    /// for `REPLACE_IF_EXISTS`.
    pub fn flt_context_set(
        &mut self,
        link: Link,
        operation: i32,
        new: usize,
        want_old: bool,
    ) -> (Result<(), Status>, usize, Option<Cleanup>) {
        let inst = match link {
            Link::Instance(i) | Link::Stream(i, _) | Link::StreamHandle(i, _) => i,
            _ => return (Err(Status::INVALID_PARAMETER), 0, None),
        };
        let expected = match link {
            Link::Instance(_) => INSTANCE,
            Link::Stream(..) => STREAM,
            _ => STREAMHANDLE,
        };
        let Some(ni) = self.fltmgr.contexts.find(new) else {
            return (Err(Status::INVALID_PARAMETER), 0, None);
        };
        let ir = self.fltmgr.inst(inst);
        if self.fltmgr.contexts.list[ni].filter != ir.filter
            || self.fltmgr.contexts.list[ni].ty != expected
        {
            return (Err(Status::INVALID_PARAMETER), 0, None);
        }
        // "The specified Instance is being torn down" (the FltSet*Context reference pages): from
        // the start of its teardown, before InstanceTeardownStartCallback (docs/simulator.md).
        if matches!(ir.state, InstState::TearingDown | InstState::Gone) {
            return (Err(Status::FLT_DELETING_OBJECT), 0, None);
        }
        if self.fltmgr.contexts.list[ni].link != Link::None {
            return (Err(Status::FLT_CONTEXT_ALREADY_LINKED), 0, None);
        }
        if operation != KEEP_IF_EXISTS && operation != REPLACE_IF_EXISTS {
            return (Err(Status::INVALID_PARAMETER), 0, None);
        }
        let existing = match link {
            Link::Instance(i) => self.fltmgr.contexts.instance.get(&i).copied(),
            Link::Stream(i, s) => self.fltmgr.contexts.stream.get(&(i, s)).copied(),
            Link::StreamHandle(i, f) => self.fltmgr.contexts.handle.get(&(i, f)).copied(),
            _ => None,
        };
        let mut old = 0;
        let mut cleanup = None;
        if let Some(e) = existing {
            if operation == KEEP_IF_EXISTS {
                if want_old {
                    self.fltmgr.contexts.list[e].refs += 1;
                    old = self.fltmgr.contexts.list[e].ptr;
                }
                return (Err(Status::FLT_CONTEXT_ALREADY_DEFINED), old, None);
            }
            if want_old {
                // The link's reference goes to the caller.
                old = self.fltmgr.contexts.list[e].ptr;
                self.fltmgr.contexts.list[e].refs += 1;
            }
            cleanup = self.unlink(e);
        }
        let t = &mut self.fltmgr.contexts;
        t.list[ni].refs += 1;
        t.list[ni].link = link;
        match link {
            Link::Instance(i) => {
                t.instance.insert(i, ni);
            }
            Link::Stream(i, s) => {
                t.stream.insert((i, s), ni);
            }
            Link::StreamHandle(i, f) => {
                t.handle.insert((i, f), ni);
            }
            _ => {}
        }
        (Ok(()), old, cleanup)
    }

    /// `FltGet*Context`: the linked context, referenced; `STATUS_NOT_FOUND` when none.
    pub fn flt_context_get(&mut self, link: Link) -> Result<usize, Status> {
        let t = &mut self.fltmgr.contexts;
        let i = match link {
            Link::Instance(i) => t.instance.get(&i).copied(),
            Link::Stream(i, s) => t.stream.get(&(i, s)).copied(),
            Link::StreamHandle(i, f) => t.handle.get(&(i, f)).copied(),
            _ => None,
        }
        .ok_or(Status::NOT_FOUND)?;
        t.list[i].refs += 1;
        Ok(t.list[i].ptr)
    }

    /// `FltDeleteContext`: unlinks the context from its object.
    pub fn flt_context_delete(&mut self, ptr: usize) -> Option<Cleanup> {
        let i = self.fltmgr.contexts.find(ptr)?;
        if self.fltmgr.contexts.list[i].link == Link::Section {
            let f = self.fltmgr.contexts.list[i].filter;
            self.flt_report(
                Some(f),
                Rule::InvalidFltObject,
                "FltDeleteContext on a section context: close it with FltCloseSectionForDataScan (facts.md §6)",
            );
            return None;
        }
        self.unlink(i)
    }

    /// Links a section context to its section (FltMgr's reference).
    pub fn flt_context_link_section(&mut self, ptr: usize) -> bool {
        let Some(i) = self.fltmgr.contexts.find(ptr) else { return false };
        let c = &mut self.fltmgr.contexts.list[i];
        if c.ty != SECTION || c.link != Link::None {
            return false;
        }
        c.link = Link::Section;
        c.refs += 1;
        true
    }

    /// Unlinks a section context (`FltCloseSectionForDataScan`).
    pub fn flt_context_unlink_section(&mut self, ptr: usize) -> Option<Cleanup> {
        let i = self.fltmgr.contexts.find(ptr)?;
        (self.fltmgr.contexts.list[i].link == Link::Section).then(|| self.unlink(i)).flatten()
    }

    /// True when a live context is linked to an object (set, or a section's).
    pub fn flt_context_linked(&self, ptr: usize) -> bool {
        self.fltmgr
            .contexts
            .find(ptr)
            .is_some_and(|i| self.fltmgr.contexts.list[i].link != Link::None)
    }

    /// The type and filter of a live context.
    pub fn flt_context_info(&self, ptr: usize) -> Option<(FilterId, u16)> {
        let i = self.fltmgr.contexts.find(ptr)?;
        let c = &self.fltmgr.contexts.list[i];
        Some((c.filter, c.ty))
    }

    /// A stream went away (the file system freed its FCB, as `FsRtlTeardownPerStreamContexts`
    /// tells filters): its stream contexts are released, their cleanups run from a worker.
    pub fn flt_stream_gone(&mut self, stream: usize) {
        let keys: Vec<usize> = self
            .fltmgr
            .contexts
            .stream
            .iter()
            .filter(|((_, s), _)| *s == stream)
            .map(|(_, &i)| i)
            .collect();
        self.flt_release_deferred(keys);
    }

    /// A file object was freed: its stream-handle contexts are released.
    pub fn flt_file_object_gone(&mut self, fo: usize) {
        let keys: Vec<usize> = self
            .fltmgr
            .contexts
            .handle
            .iter()
            .filter(|((_, f), _)| *f == fo)
            .map(|(_, &i)| i)
            .collect();
        self.flt_release_deferred(keys);
    }

    fn flt_release_deferred(&mut self, keys: Vec<usize>) {
        if keys.is_empty() {
            return;
        }
        let cleanups: Vec<Cleanup> = keys.into_iter().filter_map(|i| self.unlink(i)).collect();
        if cleanups.is_empty() {
            return;
        }
        let image = self.fltmgr.image;
        let thread = self.sched.worker();
        self.sched.push(crate::sched::Task {
            name: "context cleanup",
            image,
            irql: crate::kernel::PASSIVE_LEVEL,
            thread,
            run: Box::new(move || run_cleanups(cleanups)),
        });
    }
}

/// Unlinks every context of a torn-down instance: its instance context, then its stream
/// contexts, then its stream-handle contexts, each kind in allocation order (the tables are keyed
/// by host addresses, whose order changes from one run to another).
pub fn instance_gone(k: &mut Kernel, i: InstId) -> Vec<Cleanup> {
    let t = &k.fltmgr.contexts;
    let mut stream: Vec<usize> =
        t.stream.iter().filter(|((x, _), _)| *x == i).map(|(_, &c)| c).collect();
    let mut handle: Vec<usize> =
        t.handle.iter().filter(|((x, _), _)| *x == i).map(|(_, &c)| c).collect();
    // The list only grows: an index is the allocation order.
    stream.sort_unstable();
    handle.sort_unstable();
    let mut idx: Vec<usize> = t.instance.get(&i).copied().into_iter().collect();
    idx.extend(stream);
    idx.extend(handle);
    idx.into_iter().filter_map(|c| k.unlink(c)).collect()
}

/// Runs context cleanups: `ContextCleanupCallback`, then `ContextFreeCallback` for memory the
/// filter allocated itself.
pub fn run_cleanups(list: Vec<Cleanup>) {
    for c in list {
        if let Some(cb) = c.cleanup {
            // SAFETY: the filter's cleanup callback with its context and type, once.
            super::call_filter(c.image, "ContextCleanupCallback", || unsafe {
                cb(c.ptr as *mut c_void, c.ty)
            });
        }
        if let Some(free) = c.free {
            // SAFETY: the filter's free callback with memory its allocate callback gave.
            super::call_filter(c.image, "ContextFreeCallback", || unsafe {
                free(c.ptr as *const c_void, c.ty)
            });
        }
    }
}

/// Reports the contexts of a filter still referenced after its unregistration
/// (`CONTEXT_LEAKED_AT_UNLOAD`); their memory stays allocated.
pub fn report_leaks(k: &mut Kernel, f: FilterId) {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for c in k.fltmgr.contexts.list.iter().filter(|c| c.live && c.filter == f) {
        *counts.entry(c.ty).or_default() += 1;
    }
    if counts.is_empty() {
        return;
    }
    let text: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {}", type_name(*t))).collect();
    k.flt_report(
        Some(f),
        Rule::ContextLeaked,
        format!("contexts still referenced when the filter unregistered: {}", text.join(", ")),
    );
}
