//! Hand-written test minifilters (unsafe Rust against windows-sys, as a C minifilter is written)
//! and a small legacy filter in the sfilter pattern, for the Filter Manager tests.
//!
//! Up to [`SLOTS`] minifilters and [`SLOTS`] legacy filters run in one machine; each slot has its
//! own `extern "system"` callbacks (a const generic), a [`Config`] that says what it registers
//! and how it answers, and a log of what it saw. A global order log records who saw what, in
//! order, across slots.

#![allow(dead_code, reason = "each test file uses part of the helpers")]
#![allow(missing_docs, unreachable_pub, reason = "test drivers")]
#![allow(
    clippy::multiple_unsafe_ops_per_block,
    clippy::undocumented_unsafe_blocks,
    clippy::mut_from_ref,
    reason = "hand-written test drivers poke kernel structures directly, as C drivers do"
)]
#![allow(clippy::vec_box, reason = "registrations need stable addresses while registered")]
#![allow(clippy::expect_used, clippy::indexing_slicing, reason = "test helpers")]

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::rc::Rc;

use fsfilter::Status;
use fsfilter_kernel::irp::{
    IoCallDriver, IoCompleteRequest, IoCopyCurrentIrpStackLocationToNext,
    IoGetCurrentIrpStackLocation, IoSetCompletionRoutine, IoSkipCurrentIrpStackLocation,
};
use fsfilter_sim::{
    FsKind, InstanceLayout, InstanceSpec, InstancesSpec, Machine, MachineConfig, ServiceSpec,
    StartType, VolumeId, VolumeSpec,
};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT, FAST_IO_DISPATCH, IRP, KEVENT};
use windows_sys::Wdk::Storage::FileSystem::IoRegisterFsRegistrationChange;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CONTEXT_REGISTRATION, FLT_IO_PARAMETER_BLOCK,
    FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FLT_RELATED_OBJECTS, FltAllocateGenericWorkItem,
    FltCompletePendedPostOperation, FltFreeGenericWorkItem, FltQueueGenericWorkItem,
    FltRegisterFilter, FltStartFiltering, FltUnregisterFilter, PFLT_CONTEXT, PFLT_FILTER,
    PFLT_GENERIC_WORKITEM, PFLT_INSTANCE,
};
use windows_sys::Wdk::System::SystemServices::{
    IoAttachDeviceToDeviceStackSafe, IoCreateDevice, IoDeleteDevice, IoDetachDevice,
    KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// Slots of each kind.
pub const SLOTS: usize = 6;

/// `IRP_MJ_*` codes the tests use.
pub mod mj {
    pub const CREATE: u8 = 0x00;
    pub const CLOSE: u8 = 0x02;
    pub const READ: u8 = 0x03;
    pub const WRITE: u8 = 0x04;
    pub const QUERY_INFORMATION: u8 = 0x05;
    pub const SET_INFORMATION: u8 = 0x06;
    pub const FILE_SYSTEM_CONTROL: u8 = 0x0d;
    pub const SHUTDOWN: u8 = 0x10;
    pub const LOCK_CONTROL: u8 = 0x11;
    pub const CLEANUP: u8 = 0x12;
    pub const POWER: u8 = 0x16;
    pub const DEVICE_CHANGE: u8 = 0x18;
    pub const OPERATION_END: u8 = 0x80;
}

/// A pre-operation callback's view.
pub struct PreCall {
    pub slot: usize,
    pub data: *mut FLT_CALLBACK_DATA,
    pub objects: *const FLT_RELATED_OBJECTS,
}

impl PreCall {
    pub fn data(&self) -> &mut FLT_CALLBACK_DATA {
        unsafe { &mut *self.data }
    }
    pub fn iopb(&self) -> &mut FLT_IO_PARAMETER_BLOCK {
        unsafe { &mut *self.data().Iopb.cast_mut() }
    }
    pub fn major(&self) -> u8 {
        self.iopb().MajorFunction
    }
    pub fn instance(&self) -> PFLT_INSTANCE {
        unsafe { (*self.objects).Instance }
    }
    pub fn set_status(&self, s: Status, info: usize) {
        let d = self.data();
        d.IoStatus.Anonymous.Status = s.0;
        d.IoStatus.Information = info;
    }
}

/// A post-operation callback's view.
pub struct PostCall {
    pub slot: usize,
    pub data: *mut FLT_CALLBACK_DATA,
    pub objects: *const FLT_RELATED_OBJECTS,
    pub context: *const c_void,
    pub flags: u32,
}

impl PostCall {
    pub fn data(&self) -> &mut FLT_CALLBACK_DATA {
        unsafe { &mut *self.data }
    }
    pub fn major(&self) -> u8 {
        unsafe { (*self.data().Iopb).MajorFunction }
    }
    pub fn status(&self) -> Status {
        Status(unsafe { self.data().IoStatus.Anonymous.Status })
    }
    pub fn instance(&self) -> PFLT_INSTANCE {
        unsafe { (*self.objects).Instance }
    }
}

pub type PreFn = Rc<dyn Fn(&PreCall) -> (i32, usize)>;
pub type PostFn = Rc<dyn Fn(&PostCall) -> i32>;
pub type InstFn = Rc<dyn Fn(PFLT_INSTANCE, u32)>;
pub type ConflictFn = Rc<dyn Fn(PFLT_INSTANCE, PFLT_CONTEXT, *const FLT_CALLBACK_DATA)>;

/// What a test minifilter registers and how it answers.
#[derive(Clone)]
pub struct Config {
    pub name: String,
    pub altitude: String,
    pub instance_flags: u32,
    pub extra_instances: Vec<(String, String, u32)>,
    pub layout: InstanceLayout,
    pub no_instances_key: bool,
    pub depends_on_fltmgr: bool,
    pub start_type: StartType,
    pub version: u16,
    pub size: Option<u16>,
    pub flags: u32,
    /// (major, skip flags, pre, post).
    pub ops: Vec<(u8, u32, bool, bool)>,
    /// Entries written after the end marker (never read).
    pub after_end: Vec<u8>,
    /// (type, size).
    pub contexts: Vec<(u16, usize)>,
    /// `Flags` of every context registration.
    pub context_flags: u16,
    /// Every context registration names [`context_allocate`] and [`context_free`].
    pub context_allocator: bool,
    /// Each context registration gets its own pool tag (so that none is identical to another).
    pub context_distinct_tags: bool,
    pub unload: bool,
    pub setup: bool,
    pub query_teardown: bool,
    pub teardown: bool,
    pub section_notification: bool,
    pub generate_name: bool,
    /// Registers a `NormalizeNameComponentExCallback` (alone).
    pub normalize_ex: bool,
    pub start: bool,
    pub fail_entry: bool,
    /// DriverEntry passes a NULL `RetFilter` to `FltRegisterFilter` (a buggy driver).
    pub null_retfilter: bool,
    pub unregister_in_unload: bool,
    pub setup_status: Status,
    pub query_status: Status,
    pub unload_status: Status,
    pub pre: Option<PreFn>,
    pub post: Option<PostFn>,
    pub on_setup: Option<InstFn>,
    pub on_teardown_start: Option<InstFn>,
    pub on_conflict: Option<ConflictFn>,
    pub on_unload: Option<Rc<dyn Fn(u32)>>,
}

impl Config {
    /// A started minifilter with every optional callback, its default instance
    /// "`name` Instance" at `altitude`, answering success everywhere.
    pub fn new(name: &str, altitude: &str) -> Config {
        Config {
            name: name.to_owned(),
            altitude: altitude.to_owned(),
            instance_flags: 0,
            extra_instances: Vec::new(),
            layout: InstanceLayout::Both,
            no_instances_key: false,
            depends_on_fltmgr: true,
            start_type: StartType::Demand,
            version: 0x0203,
            size: None,
            flags: 0,
            ops: Vec::new(),
            after_end: Vec::new(),
            contexts: Vec::new(),
            context_flags: 0,
            context_allocator: false,
            context_distinct_tags: false,
            unload: true,
            setup: true,
            query_teardown: true,
            teardown: true,
            section_notification: false,
            generate_name: false,
            normalize_ex: false,
            start: true,
            fail_entry: false,
            null_retfilter: false,
            unregister_in_unload: true,
            setup_status: Status::SUCCESS,
            query_status: Status::SUCCESS,
            unload_status: Status::SUCCESS,
            pre: None,
            post: None,
            on_setup: None,
            on_teardown_start: None,
            on_conflict: None,
            on_unload: None,
        }
    }

    /// Registers `major` with a pre and/or post callback.
    pub fn op(mut self, major: u8, pre: bool, post: bool) -> Config {
        self.ops.push((major, 0, pre, post));
        self
    }

    /// Registers `major` with skip flags.
    pub fn op_flags(mut self, major: u8, flags: u32, pre: bool, post: bool) -> Config {
        self.ops.push((major, flags, pre, post));
        self
    }

    pub fn with_pre(mut self, f: impl Fn(&PreCall) -> (i32, usize) + 'static) -> Config {
        self.pre = Some(Rc::new(f));
        self
    }

    pub fn with_post(mut self, f: impl Fn(&PostCall) -> i32 + 'static) -> Config {
        self.post = Some(Rc::new(f));
        self
    }

    pub fn instance_name(&self) -> String {
        format!("{} Instance", self.name)
    }
}

/// What a test minifilter saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Setup {
        flags: u32,
        device_type: u32,
        fs_type: i32,
        instance: isize,
        volume: isize,
    },
    Query {
        instance: isize,
    },
    TeardownStart {
        reason: u32,
        instance: isize,
    },
    TeardownComplete {
        reason: u32,
        instance: isize,
    },
    Pre {
        major: u8,
        data_flags: u32,
        irp_flags: u32,
        irql: u8,
        thread: u32,
        instance: isize,
        data: usize,
    },
    Post {
        major: u8,
        flags: u32,
        data_flags: u32,
        status: i32,
        information: usize,
        irql: u8,
        thread: u32,
        context: usize,
        instance: isize,
        data: usize,
    },
    Unload {
        flags: u32,
    },
    Cleanup {
        ty: u16,
        context: usize,
        /// The IRQL the cleanup callback ran at.
        irql: u8,
    },
    Conflict {
        context: usize,
        data: usize,
    },
}

struct Reg {
    ops: Vec<FLT_OPERATION_REGISTRATION>,
    ctxs: Vec<FLT_CONTEXT_REGISTRATION>,
    reg: FLT_REGISTRATION,
}

#[derive(Default)]
struct Slot {
    config: Option<Rc<Config>>,
    filter: PFLT_FILTER,
    seen: Vec<Seen>,
    regs: Vec<Box<Reg>>,
}

thread_local! {
    static MINI: RefCell<Vec<Slot>> = RefCell::new((0..SLOTS).map(|_| Slot::default()).collect());
    static ORDER: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static LEGACY: RefCell<Vec<LegacySlot>> = RefCell::new((0..SLOTS).map(|_| LegacySlot::default()).collect());
}

fn config(slot: usize) -> Rc<Config> {
    MINI.with(|m| m.borrow()[slot].config.clone()).expect("slot configured")
}

fn record(slot: usize, s: Seen) {
    MINI.with(|m| m.borrow_mut()[slot].seen.push(s));
}

/// Appends to the global order log.
pub fn order_push(s: String) {
    ORDER.with(|o| o.borrow_mut().push(s));
}

/// The global order log.
pub fn order() -> Vec<String> {
    ORDER.with(|o| o.borrow().clone())
}

/// Clears the global order log.
pub fn order_clear() {
    ORDER.with(|o| o.borrow_mut().clear());
}

/// What slot `slot` saw.
pub fn seen(slot: usize) -> Vec<Seen> {
    MINI.with(|m| m.borrow()[slot].seen.clone())
}

/// Clears what slot `slot` saw.
pub fn seen_clear(slot: usize) {
    MINI.with(|m| m.borrow_mut()[slot].seen.clear());
}

/// The `PFLT_FILTER` of slot `slot`.
pub fn filter_handle(slot: usize) -> PFLT_FILTER {
    MINI.with(|m| m.borrow()[slot].filter)
}

/// (IRQL, thread) now.
pub fn where_now() -> (u8, u32) {
    fsfilter_sim::kernel::with(|k| (k.irql(), k.thread.0))
}

fn name_of(slot: usize) -> String {
    MINI.with(|m| m.borrow()[slot].config.as_ref().map(|c| c.name.clone()).unwrap_or_default())
}

unsafe extern "system" fn setup<const N: usize>(
    objects: *const FLT_RELATED_OBJECTS,
    flags: u32,
    device_type: u32,
    fs_type: i32,
) -> NTSTATUS {
    let o = unsafe { &*objects };
    record(N, Seen::Setup { flags, device_type, fs_type, instance: o.Instance, volume: o.Volume });
    order_push(format!("{}:setup", name_of(N)));
    let c = config(N);
    if let Some(f) = &c.on_setup {
        f(o.Instance, flags);
    }
    c.setup_status.0
}

unsafe extern "system" fn query<const N: usize>(
    objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
) -> NTSTATUS {
    record(N, Seen::Query { instance: unsafe { (*objects).Instance } });
    config(N).query_status.0
}

unsafe extern "system" fn teardown_start<const N: usize>(
    objects: *const FLT_RELATED_OBJECTS,
    reason: u32,
) {
    let instance = unsafe { (*objects).Instance };
    record(N, Seen::TeardownStart { reason, instance });
    order_push(format!("{}:teardown_start", name_of(N)));
    if let Some(f) = &config(N).on_teardown_start {
        f(instance, reason);
    }
}

unsafe extern "system" fn teardown_complete<const N: usize>(
    objects: *const FLT_RELATED_OBJECTS,
    reason: u32,
) {
    record(N, Seen::TeardownComplete { reason, instance: unsafe { (*objects).Instance } });
    order_push(format!("{}:teardown_complete", name_of(N)));
}

unsafe extern "system" fn unload<const N: usize>(flags: u32) -> NTSTATUS {
    record(N, Seen::Unload { flags });
    let c = config(N);
    if let Some(f) = &c.on_unload {
        f(flags);
    }
    let mandatory = flags & 1 != 0;
    if (c.unload_status.0 >= 0 || mandatory) && c.unregister_in_unload {
        unsafe { FltUnregisterFilter(filter_handle(N)) };
        order_push(format!("{}:unregistered", name_of(N)));
    }
    c.unload_status.0
}

unsafe extern "system" fn pre<const N: usize>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *mut *mut c_void,
) -> i32 {
    let d = unsafe { &*data };
    let iopb = unsafe { &*d.Iopb };
    let (irql, thread) = where_now();
    record(
        N,
        Seen::Pre {
            major: iopb.MajorFunction,
            data_flags: d.Flags,
            irp_flags: iopb.IrpFlags,
            irql,
            thread,
            instance: unsafe { (*objects).Instance },
            data: data as usize,
        },
    );
    order_push(format!("{}:pre:{}", name_of(N), iopb.MajorFunction));
    let c = config(N);
    let (status, ctx) = match &c.pre {
        Some(f) => f(&PreCall { slot: N, data, objects }),
        // Success, with the post callback when one is registered.
        None => {
            let post = c.ops.iter().any(|&(m, _, _, p)| m == iopb.MajorFunction && p);
            (if post { 0 } else { 1 }, 0)
        }
    };
    unsafe { *context = ctx as *mut c_void };
    status
}

unsafe extern "system" fn post<const N: usize>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const c_void,
    flags: u32,
) -> i32 {
    let d = unsafe { &*data };
    let iopb = unsafe { &*d.Iopb };
    let (irql, thread) = where_now();
    record(
        N,
        Seen::Post {
            major: iopb.MajorFunction,
            flags,
            data_flags: d.Flags,
            status: unsafe { d.IoStatus.Anonymous.Status },
            information: d.IoStatus.Information,
            irql,
            thread,
            context: context as usize,
            instance: unsafe { (*objects).Instance },
            data: data as usize,
        },
    );
    order_push(format!("{}:post:{}", name_of(N), iopb.MajorFunction));
    match &config(N).post {
        Some(f) => f(&PostCall { slot: N, data, objects, context, flags }),
        None => 0,
    }
}

// Contexts from `context_allocate`, with their sizes (never freed: the test ends first).
thread_local! {
    pub static ALLOCATED: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

/// A filter's `ContextAllocateCallback`: leaked zeroed memory.
unsafe extern "system" fn context_allocate(_pool: i32, size: usize, _ty: u16) -> *mut c_void {
    let p = Box::leak(vec![0u8; size.max(1)].into_boxed_slice()).as_mut_ptr();
    ALLOCATED.with(|a| a.borrow_mut().push((p as usize, size)));
    p.cast()
}

/// A filter's `ContextFreeCallback`: forgets the block (the memory stays, as in the simulator).
unsafe extern "system" fn context_free(context: *const c_void, _ty: u16) {
    ALLOCATED.with(|a| a.borrow_mut().retain(|&(p, _)| p != context as usize));
}

unsafe extern "system" fn cleanup<const N: usize>(context: PFLT_CONTEXT, ty: u16) {
    let irql = fsfilter_sim::kernel::current_irql();
    record(N, Seen::Cleanup { ty, context: context as usize, irql });
}

unsafe extern "system" fn conflict<const N: usize>(
    instance: PFLT_INSTANCE,
    context: PFLT_CONTEXT,
    data: *const FLT_CALLBACK_DATA,
) -> NTSTATUS {
    record(N, Seen::Conflict { context: context as usize, data: data as usize });
    if let Some(f) = &config(N).on_conflict {
        f(instance, context, data);
    }
    0
}

unsafe extern "system" fn generate(
    _i: PFLT_INSTANCE,
    _f: *const windows_sys::Wdk::Foundation::FILE_OBJECT,
    _d: *const FLT_CALLBACK_DATA,
    _o: u32,
    _c: *mut bool,
    _n: *mut windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_NAME_CONTROL,
) -> NTSTATUS {
    0
}

#[allow(clippy::too_many_arguments, reason = "the callback's signature")]
unsafe extern "system" fn normalize_ex(
    _i: PFLT_INSTANCE,
    _f: *const windows_sys::Wdk::Foundation::FILE_OBJECT,
    _p: *const UNICODE_STRING,
    _l: u16,
    _c: *const UNICODE_STRING,
    _e: *mut windows_sys::Wdk::Storage::FileSystem::FILE_NAMES_INFORMATION,
    _n: u32,
    _fl: u32,
    _x: *mut *mut c_void,
) -> NTSTATUS {
    0
}

fn registration<const N: usize>(c: &Config) -> Box<Reg> {
    let mut ops: Vec<FLT_OPERATION_REGISTRATION> = c
        .ops
        .iter()
        .map(|&(major, flags, p, q)| FLT_OPERATION_REGISTRATION {
            MajorFunction: major,
            Flags: flags,
            PreOperation: if p { Some(pre::<N>) } else { None },
            PostOperation: if q { Some(post::<N>) } else { None },
            Reserved1: null_mut(),
        })
        .collect();
    let end = FLT_OPERATION_REGISTRATION {
        MajorFunction: mj::OPERATION_END,
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: null_mut(),
    };
    ops.push(end);
    for &major in &c.after_end {
        ops.push(FLT_OPERATION_REGISTRATION {
            MajorFunction: major,
            PreOperation: Some(pre::<N>),
            ..end
        });
    }
    let mut ctxs: Vec<FLT_CONTEXT_REGISTRATION> = c
        .contexts
        .iter()
        .enumerate()
        .map(|(i, &(ty, size))| FLT_CONTEXT_REGISTRATION {
            ContextType: ty,
            Flags: c.context_flags,
            ContextCleanupCallback: Some(cleanup::<N>),
            Size: size,
            PoolTag: u32::from_le_bytes(*b"Test")
                + if c.context_distinct_tags { i as u32 } else { 0 },
            ContextAllocateCallback: if c.context_allocator {
                Some(context_allocate)
            } else {
                None
            },
            ContextFreeCallback: if c.context_allocator { Some(context_free) } else { None },
            Reserved1: null_mut(),
        })
        .collect();
    ctxs.push(FLT_CONTEXT_REGISTRATION {
        ContextType: 0xFFFF,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: null_mut(),
    });
    let mut r = Box::new(Reg {
        ops,
        ctxs,
        reg: FLT_REGISTRATION {
            Size: c.size.unwrap_or(size_of::<FLT_REGISTRATION>() as u16),
            Version: c.version,
            Flags: c.flags,
            ContextRegistration: null_mut(),
            OperationRegistration: null_mut(),
            FilterUnloadCallback: if c.unload { Some(unload::<N>) } else { None },
            InstanceSetupCallback: if c.setup { Some(setup::<N>) } else { None },
            InstanceQueryTeardownCallback: if c.query_teardown { Some(query::<N>) } else { None },
            InstanceTeardownStartCallback: if c.teardown {
                Some(teardown_start::<N>)
            } else {
                None
            },
            InstanceTeardownCompleteCallback: if c.teardown {
                Some(teardown_complete::<N>)
            } else {
                None
            },
            GenerateFileNameCallback: if c.generate_name { Some(generate) } else { None },
            NormalizeNameComponentCallback: None,
            NormalizeContextCleanupCallback: None,
            TransactionNotificationCallback: None,
            NormalizeNameComponentExCallback: if c.normalize_ex {
                Some(normalize_ex)
            } else {
                None
            },
            SectionNotificationCallback: if c.section_notification {
                Some(conflict::<N>)
            } else {
                None
            },
        },
    });
    r.reg.OperationRegistration = r.ops.as_ptr();
    r.reg.ContextRegistration = r.ctxs.as_ptr();
    r
}

unsafe extern "system" fn entry<const N: usize>(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    let c = config(N);
    let reg = registration::<N>(&c);
    let p: *const FLT_REGISTRATION = &reg.reg;
    MINI.with(|m| m.borrow_mut()[N].regs.push(reg));
    let mut filter: PFLT_FILTER = 0;
    let out: *mut PFLT_FILTER = if c.null_retfilter { std::ptr::null_mut() } else { &mut filter };
    let s = unsafe { FltRegisterFilter(driver, p, out) };
    if s < 0 {
        return s;
    }
    MINI.with(|m| m.borrow_mut()[N].filter = filter);
    if c.fail_entry {
        // A buggy driver: fails without FltUnregisterFilter.
        return Status::UNSUCCESSFUL.0;
    }
    if c.start {
        let s = unsafe { FltStartFiltering(filter) };
        if s < 0 {
            unsafe { FltUnregisterFilter(filter) };
            return s;
        }
    }
    0
}

const ENTRIES: [fsfilter_sim::DriverEntry; SLOTS] =
    [entry::<0>, entry::<1>, entry::<2>, entry::<3>, entry::<4>, entry::<5>];

/// Installs a test minifilter in `slot`.
pub fn install(m: &mut Machine, slot: usize, c: Config) {
    let mut spec = ServiceSpec::new(&c.name, ENTRIES[slot], "minifilter");
    spec.start = c.start_type;
    spec.group = Some("FSFilter Activity Monitor".into());
    if c.depends_on_fltmgr {
        spec.depends_on = vec!["FltMgr".into()];
    }
    if !c.no_instances_key {
        let mut instances = vec![InstanceSpec {
            name: c.instance_name(),
            altitude: c.altitude.clone(),
            flags: c.instance_flags,
        }];
        for (name, altitude, flags) in &c.extra_instances {
            instances.push(InstanceSpec {
                name: name.clone(),
                altitude: altitude.clone(),
                flags: *flags,
            });
        }
        spec.instances = Some(InstancesSpec {
            default_instance: c.instance_name(),
            instances,
            layout: c.layout,
        });
    }
    MINI.with(|m| {
        let s = &mut m.borrow_mut()[slot];
        s.config = Some(Rc::new(c));
        s.seen.clear();
    });
    m.install(spec);
}

/// Replaces a slot's config (behaviour changes in the middle of a test).
pub fn reconfigure(slot: usize, f: impl FnOnce(&mut Config)) {
    MINI.with(|m| {
        let s = &mut m.borrow_mut()[slot];
        let mut c = (**s.config.as_ref().expect("configured")).clone();
        f(&mut c);
        s.config = Some(Rc::new(c));
    });
}

/// A machine with the Filter Manager and an NTFS volume `C:` holding `files`, booted (seed 1).
pub fn ntfs_machine(files: &[(&str, &[u8])]) -> (Machine, VolumeId) {
    let mut m = machine(1);
    let mut spec = VolumeSpec::new("C:", FsKind::Ntfs);
    for (p, b) in files {
        spec = spec.file(p, b);
    }
    let c = m.add_volume(spec);
    m.install_filter_manager();
    m.boot();
    (m, c)
}

/// Installs a minifilter in `slot` and starts it (the start must succeed).
pub fn start(m: &mut Machine, slot: usize, c: Config) {
    let name = c.name.clone();
    install(m, slot, c);
    assert_eq!(m.start(&name), Status::SUCCESS);
}

/// The pre callbacks `slot` saw.
pub fn pres(slot: usize) -> Vec<Seen> {
    seen(slot).into_iter().filter(|s| matches!(s, Seen::Pre { .. })).collect()
}

/// The post callbacks `slot` saw.
pub fn posts(slot: usize) -> Vec<Seen> {
    seen(slot).into_iter().filter(|s| matches!(s, Seen::Post { .. })).collect()
}

/// A routine a generic work item runs: `(item, filter, context)`.
pub type WorkRoutine =
    unsafe extern "system" fn(PFLT_GENERIC_WORKITEM, *const c_void, *const c_void);

/// Queues `routine` on a generic work item of the filter in `slot` (delayed work queue), with the
/// callback data `data` as its context; the queueing must succeed.
pub fn queue_work(slot: usize, routine: WorkRoutine, data: *const FLT_CALLBACK_DATA) {
    // SAFETY: allocates a work item (the test machine has the memory).
    let item = unsafe { FltAllocateGenericWorkItem() };
    // SAFETY: our filter and item; the data lives until the routine resumes its operation.
    let s = unsafe {
        FltQueueGenericWorkItem(
            item,
            filter_handle(slot) as *const c_void,
            Some(routine),
            1,
            data.cast(),
        )
    };
    assert_eq!(s, 0);
}

/// A work item that logs `finish` and completes the post operation it was given.
unsafe extern "system" fn finish_post(
    item: PFLT_GENERIC_WORKITEM,
    _f: *const c_void,
    ctx: *const c_void,
) {
    order_push("finish".into());
    // SAFETY: the callback data of a post held with FLT_POSTOP_MORE_PROCESSING_REQUIRED.
    unsafe { FltCompletePendedPostOperation(ctx.cast()) };
    // SAFETY: the item that ran us.
    unsafe { FltFreeGenericWorkItem(item) };
}

/// A post callback that holds its operation (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`) and releases
/// it from a generic work item, which logs `finish`.
pub fn hold_post_to_worker(p: &PostCall) -> i32 {
    queue_work(p.slot, finish_post, p.data);
    1
}

/// A fresh machine (clears every slot and the order log).
pub fn machine(seed: u64) -> Machine {
    MINI.with(|m| *m.borrow_mut() = (0..SLOTS).map(|_| Slot::default()).collect());
    LEGACY.with(|l| *l.borrow_mut() = (0..SLOTS).map(|_| LegacySlot::default()).collect());
    order_clear();
    IRP_HOOK.with(|h| *h.borrow_mut() = None);
    COMPLETE_HOOK.with(|h| *h.borrow_mut() = None);
    Machine::new(MachineConfig { seed })
}

// ---------------------------------------------------------------------------------------------
// A legacy filter (sfilter pattern): control devices from the notification routine, volumes from
// the mount completion; logs each IRP it passes down.

#[derive(Default)]
struct LegacySlot {
    driver: usize,
    name: String,
    /// Set by [`make_unloadable`]: the filter has a `DriverUnload`, and this is how its
    /// `FastIoDetachDevice` deletes the detached device.
    unloadable: Option<LegacyDelete>,
    /// With `unloadable`: the storage device whose mounted volume it attaches to at load, as
    /// its only device (no control-device attachments, which frames loaded later would sit
    /// above, holding a stop pending for good).
    volume: Vec<u16>,
    /// Where its `DriverUnload` ran, once it has: inside the detach routine's `IoDeleteDevice`,
    /// inside the work item's, or elsewhere.
    unloaded_in: Option<&'static str>,
}

/// How an unloadable legacy filter of a slot deletes its device in `FastIoDetachDevice`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyDelete {
    /// At once, in the routine (sfilter).
    Inline,
    /// From a work item of the device, queued by the routine.
    WorkItem,
}

thread_local! {
    /// Where the legacy filters' code is deleting a device now ("detach", "worker" or "").
    static DELETING_IN: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

/// Makes the legacy filter of `slot` (before it loads) one with a `DriverUnload` that attaches
/// at load to the mounted volume of the storage device `volume` (`\Device\HarddiskVolume1`)
/// only, or with `""` as the others do (control devices from its notification routine, volumes
/// at their mount), and says how its `FastIoDetachDevice` deletes its device.
pub fn make_unloadable(slot: usize, delete: LegacyDelete, volume: &str) {
    LEGACY.with(|l| {
        let mut l = l.borrow_mut();
        l[slot].unloadable = Some(delete);
        l[slot].volume = volume.encode_utf16().collect();
    });
}

/// Where the legacy filter of `slot` was unloaded: `"detach"` (inside its detach routine's
/// `IoDeleteDevice`), `"worker"` (inside its work item's), `""` (elsewhere); None before.
pub fn unloaded_in(slot: usize) -> Option<&'static str> {
    LEGACY.with(|l| l.borrow()[slot].unloaded_in)
}

/// The legacy slot whose driver object is `driver`.
fn legacy_slot(driver: *const DRIVER_OBJECT) -> Option<usize> {
    LEGACY.with(|l| l.borrow().iter().position(|s| s.driver == driver as usize))
}

fn delete_marked(device: *const DEVICE_OBJECT, place: &'static str) {
    DELETING_IN.set(place);
    unsafe { IoDeleteDevice(device) };
    DELETING_IN.set("");
}

unsafe extern "system" fn l_delete_worker(device: *mut DEVICE_OBJECT, item: *mut c_void) {
    unsafe { windows_sys::Wdk::System::SystemServices::IoFreeWorkItem(item as isize) };
    delete_marked(device, "worker");
}

/// `DriverUnload` of an unloadable legacy filter: detaches and deletes what is left.
unsafe extern "system" fn l_unload<const N: usize>(driver: *const DRIVER_OBJECT) {
    if let Some(slot) = legacy_slot(driver) {
        LEGACY.with(|l| l.borrow_mut()[slot].unloaded_in = Some(DELETING_IN.get()));
    }
    if LEGACY.with(|l| l.borrow()[N].volume.is_empty()) {
        unsafe {
            windows_sys::Wdk::Storage::FileSystem::IoUnregisterFsRegistrationChange(
                driver,
                Some(l_notify::<N>),
            )
        };
    }
    let mut cur = unsafe { (*driver).DeviceObject };
    while !cur.is_null() {
        let next = unsafe { (*cur).NextDevice };
        let e = ext(cur);
        if !e.lower.is_null() {
            unsafe { IoDetachDevice(e.lower) };
        }
        unsafe { IoDeleteDevice(cur) };
        cur = next;
    }
}

#[repr(C)]
struct Ext {
    lower: *mut DEVICE_OBJECT,
    kind: u32,
}

fn ext(device: *const DEVICE_OBJECT) -> &'static mut Ext {
    unsafe { &mut *(*device).DeviceExtension.cast::<Ext>() }
}

fn in_chain<const N: usize>(mut device: *mut DEVICE_OBJECT) -> bool {
    let me = LEGACY.with(|l| l.borrow()[N].driver);
    while !device.is_null() {
        unsafe {
            if (*device).DriverObject as usize == me {
                return true;
            }
            device = (*device).AttachedDevice;
        }
    }
    false
}

fn attach_new<const N: usize>(target: *mut DEVICE_OBJECT, kind: u32) {
    let driver = LEGACY.with(|l| l.borrow()[N].driver) as *const DRIVER_OBJECT;
    let mut me = null_mut();
    let s = unsafe {
        IoCreateDevice(
            driver,
            size_of::<Ext>() as u32,
            std::ptr::null(),
            (*target).DeviceType,
            0,
            false,
            &mut me,
        )
    };
    if s != 0 {
        return;
    }
    let mut lower = null_mut();
    if unsafe { IoAttachDeviceToDeviceStackSafe(me, target, &mut lower) } != 0 {
        unsafe { IoDeleteDevice(me) };
        return;
    }
    let e = ext(me);
    e.lower = lower;
    e.kind = kind;
    unsafe { (*me).Flags &= !0x80 };
}

unsafe extern "system" fn l_notify<const N: usize>(cdo: *const DEVICE_OBJECT, active: bool) {
    let service = unsafe { fsfilter_sim::mem::read_unicode(&(*(*cdo).DriverObject).DriverName) };
    if !active || service.ends_with("Fs_Rec") {
        return;
    }
    attach_new::<N>(cdo.cast_mut(), 1);
}

unsafe extern "system" fn l_mount_done(
    _d: *mut DEVICE_OBJECT,
    _i: *mut IRP,
    ctx: *mut c_void,
) -> NTSTATUS {
    unsafe { KeSetEvent(ctx.cast(), 0, false) };
    Status::MORE_PROCESSING_REQUIRED.0
}

unsafe extern "system" fn l_dispatch<const N: usize>(
    device: *const DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    let e = ext(device);
    let sl = unsafe { &mut *IoGetCurrentIrpStackLocation(irp) };
    let name = LEGACY.with(|l| l.borrow()[N].name.clone());
    if e.kind == 1 && sl.MajorFunction == 0x0d && sl.MinorFunction == 0x01 {
        let real = unsafe { (*sl.Parameters.MountVolume.Vpb).RealDevice };
        let mut event: KEVENT = unsafe { std::mem::zeroed() };
        unsafe {
            KeInitializeEvent(&mut event, 0, false);
            IoCopyCurrentIrpStackLocationToNext(irp);
            IoSetCompletionRoutine(
                irp,
                l_mount_done,
                (&mut event as *mut KEVENT).cast(),
                true,
                true,
                true,
            );
        }
        if unsafe { IoCallDriver(e.lower, irp) } == Status::PENDING.0 {
            unsafe {
                KeWaitForSingleObject(
                    (&event as *const KEVENT).cast(),
                    0,
                    0,
                    false,
                    std::ptr::null(),
                )
            };
        }
        let status = unsafe { (*irp).IoStatus.Anonymous.Status };
        unsafe {
            let vdo = (*(*real).Vpb).DeviceObject;
            if status >= 0 && !in_chain::<N>(vdo) {
                attach_new::<N>(vdo, 2);
            }
            IoCompleteRequest(irp, 0);
        }
        return status;
    }
    if e.kind == 2 {
        order_push(format!("{name}:irp:{}", sl.MajorFunction));
        if let Some(hook) = IRP_HOOK.with(|h| h.borrow().clone()) {
            hook(irp);
        }
        if let Some(hook) = COMPLETE_HOOK.with(|h| h.borrow().clone()) {
            if let Some(status) = hook(irp) {
                return status;
            }
        }
    }
    unsafe {
        IoSkipCurrentIrpStackLocation(irp);
        IoCallDriver(e.lower, irp)
    }
}

unsafe extern "system" fn l_detach(source: *const DEVICE_OBJECT, target: *const DEVICE_OBJECT) {
    unsafe { IoDetachDevice(target.cast_mut()) };
    ext(source).lower = null_mut();
    let delete = legacy_slot(unsafe { (*source).DriverObject })
        .and_then(|slot| LEGACY.with(|l| l.borrow()[slot].unloadable));
    if delete == Some(LegacyDelete::WorkItem) {
        use windows_sys::Wdk::System::SystemServices::{IoAllocateWorkItem, IoQueueWorkItem};
        let item = unsafe { IoAllocateWorkItem(source) };
        assert_ne!(item, 0, "a work item for the deletion");
        unsafe {
            IoQueueWorkItem(
                item,
                fsfilter_kernel::ntos::work_item_routine_field(l_delete_worker),
                1, // DelayedWorkQueue
                item as *mut c_void,
            )
        };
    } else {
        delete_marked(source, "detach");
    }
}

static L_FAST_IO: FAST_IO_DISPATCH = {
    // SAFETY: all-None entries are a valid table.
    let mut t: FAST_IO_DISPATCH = unsafe { std::mem::zeroed() };
    t.SizeOfFastIoDispatch = size_of::<FAST_IO_DISPATCH>() as u32;
    t.FastIoDetachDevice = Some(l_detach);
    t
};

unsafe extern "system" fn l_entry<const N: usize>(
    driver: *const DRIVER_OBJECT,
    _p: *const UNICODE_STRING,
) -> NTSTATUS {
    LEGACY.with(|l| l.borrow_mut()[N].driver = driver as usize);
    let d = unsafe { &mut *driver.cast_mut() };
    for f in d.MajorFunction.iter_mut() {
        *f = Some(l_dispatch::<N>);
    }
    d.FastIoDispatch = (&raw const L_FAST_IO).cast_mut();
    if LEGACY.with(|l| l.borrow()[N].unloadable.is_some()) {
        d.DriverUnload = Some(l_unload::<N>);
    }
    let name = LEGACY.with(|l| l.borrow()[N].volume.clone());
    if !name.is_empty() {
        let (mut fo, mut top) = (null_mut(), null_mut());
        let s = unsafe {
            windows_sys::Wdk::System::SystemServices::IoGetDeviceObjectPointer(
                &us(&name),
                0x0001_0000 >> 9,
                &mut fo,
                &mut top,
            )
        };
        if s != 0 {
            return s;
        }
        attach_new::<N>(top, 2);
        unsafe { windows_sys::Wdk::System::SystemServices::ObfDereferenceObject(fo.cast()) };
        return Status::SUCCESS.0;
    }
    unsafe { IoRegisterFsRegistrationChange(driver, Some(l_notify::<N>)) }
}

const L_ENTRIES: [fsfilter_sim::DriverEntry; SLOTS] =
    [l_entry::<0>, l_entry::<1>, l_entry::<2>, l_entry::<3>, l_entry::<4>, l_entry::<5>];

/// The driver object of the legacy filter of `slot` (null before its `DriverEntry`).
pub fn legacy_driver(slot: usize) -> *const DRIVER_OBJECT {
    LEGACY.with(|l| l.borrow()[slot].driver) as *const DRIVER_OBJECT
}

/// What [`on_legacy_irp`] runs.
type IrpHook = Rc<dyn Fn(*mut IRP)>;

std::thread_local! {
    static IRP_HOOK: RefCell<Option<IrpHook>> = RefCell::new(None);
}

/// Runs `f` on every IRP a legacy filter's volume device receives (before it passes it down).
pub fn on_legacy_irp(f: impl Fn(*mut IRP) + 'static) {
    IRP_HOOK.with(|h| *h.borrow_mut() = Some(Rc::new(f)));
}

/// What [`legacy_completes`] runs: the status its dispatch routine returns when it completed
/// the IRP itself, None to pass it down.
type CompleteHook = Rc<dyn Fn(*mut IRP) -> Option<NTSTATUS>>;

std::thread_local! {
    static COMPLETE_HOOK: RefCell<Option<CompleteHook>> = RefCell::new(None);
}

/// Runs `f` on every IRP a legacy filter's volume device receives, after [`on_legacy_irp`]'s:
/// when it answers a status, `f` completed the IRP and the dispatch routine returns that status
/// without passing the IRP down.
pub fn legacy_completes(f: impl Fn(*mut IRP) -> Option<NTSTATUS> + 'static) {
    COMPLETE_HOOK.with(|h| *h.borrow_mut() = Some(Rc::new(f)));
}

/// Installs a legacy filter in `slot`, in load-order group `group`.
pub fn install_legacy(m: &mut Machine, slot: usize, name: &str, group: &str, start: StartType) {
    LEGACY.with(|l| l.borrow_mut()[slot].name = name.to_owned());
    let mut spec = ServiceSpec::new(name, L_ENTRIES[slot], "legacy");
    spec.start = start;
    spec.group = Some(group.to_owned());
    m.install(spec);
}

/// The Filter Manager's events of one kind name (`flt_instance_setup`, ...), as
/// (driver, volume, event).
pub fn flt(
    m: &Machine,
    kind: &str,
) -> Vec<(Option<String>, Option<String>, fsfilter_sim::FltEvent)> {
    m.flt_events().into_iter().filter(|(_, _, e)| e.kind_name() == kind).collect()
}

/// The verifier rules reported so far.
pub fn rules(m: &Machine) -> Vec<fsfilter_sim::Rule> {
    m.findings().into_iter().map(|(r, _, _)| r).collect()
}

/// A UNICODE_STRING over `units` (kept alive by the caller).
pub fn us(units: &[u16]) -> UNICODE_STRING {
    fsfilter_sim::mem::unicode(units)
}
