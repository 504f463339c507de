//! The Filter Manager (facts.md §2 to §6), as it is on Windows: a legacy filter driver
//! (`\FileSystem\FltMgr`, group "FSFilter Infrastructure") whose device objects — frames — sit in
//! file-system control-device and volume stacks like any legacy filter's, and which turns the
//! IRPs and fast I/O it receives into ordered pre/post callbacks of minifilter instances.
//!
//! Concerns by module: [`frames`] (notifications, attachment, mounts, frame placement),
//! [`registration`] (`FltRegisterFilter` and the registry), [`instances`] (setup, teardown,
//! manual attach and detach), [`ops`] (an operation's record), [`dispatch`] (IRPs in, pre
//! callbacks, down), [`post`] (completion, post callbacks, draining), [`params`] (callback data
//! from stack locations), [`fastio`],
//! [`contexts`], [`datascan`], [`ports`] (communication ports), [`manage`] (unload and the user-mode management paths) and
//! [`snapshot`] (device stacks as the lab shows them). The exports are in
//! `crate::exports::flt`. Every choice made where facts.md is silent is listed in
//! docs/simulator.md, "The Filter Manager".

pub mod contexts;
pub mod datascan;
pub mod dispatch;
pub mod fastio;
pub mod frames;
pub mod fsfiltercb;
pub mod instances;
pub mod manage;
pub mod names;
pub mod ops;
pub mod params;
pub mod ports;
pub mod post;
pub mod registration;
pub mod snapshot;

use std::collections::BTreeMap;
use std::ffi::c_void;

use fsfilter::{Altitude, Status};
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, DRIVER_OBJECT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_FILTER_UNLOAD_CALLBACK, PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK,
    PFLT_INSTANCE_SETUP_CALLBACK, PFLT_INSTANCE_TEARDOWN_CALLBACK, PFLT_POST_OPERATION_CALLBACK,
    PFLT_PRE_OPERATION_CALLBACK, PFLT_SECTION_CONFLICT_NOTIFICATION_CALLBACK,
};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::events::{EventKind, FltEvent, Rule};
use crate::ids::{DeviceId, DriverId, ImageId, VolumeId};
use crate::kernel::{self, FastMap, Kernel};
use crate::loader::{ServiceSpec, StartType};
use crate::mem::Block;

/// The Filter Manager's service name.
pub const SERVICE: &str = "FltMgr";
/// Its load-order group.
pub const GROUP: &str = "FSFilter Infrastructure";
/// Its control device.
pub const CONTROL_DEVICE: &str = r"\FileSystem\Filters\FltMgr";
/// Frames at most (one notification routine each).
pub const MAX_FRAMES: u32 = 8;
/// Marks a device extension as the Filter Manager's.
pub const EXT_MAGIC: u32 = 0x464C_544D; // "FLTM"

macro_rules! flt_ids {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            /// The index into the owning table.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    )*};
}

flt_ids! {
    /// A registered filter (`FLT_FILTER`).
    FilterId,
    /// An instance (`FLT_INSTANCE`).
    InstId,
    /// A volume as the Filter Manager knows it (`FLT_VOLUME`): one per file-system volume stack.
    FvId,
}

/// What a Filter Manager device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DevKind {
    /// The control device (`\FileSystem\Filters\FltMgr`).
    Control = 1,
    /// A frame's device on a file system's control device.
    Cdo = 2,
    /// A frame's device on a volume stack.
    Volume = 3,
}

/// The extension of every Filter Manager device.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct FltExt {
    /// [`EXT_MAGIC`].
    pub magic: u32,
    /// [`DevKind`] as a byte.
    pub kind: u8,
    /// The frame.
    pub frame: u32,
    /// The volume (for volume devices).
    pub volume: u32,
    /// The device it is attached to.
    pub lower: *mut DEVICE_OBJECT,
}

/// Reads a device's extension when it is one of the Filter Manager's.
pub(crate) fn ext_of(device: *const DEVICE_OBJECT) -> Option<FltExt> {
    if device.is_null() {
        return None;
    }
    // SAFETY: a device object the I/O manager passed, or one of the machine's devices.
    let e = unsafe { (*device).DeviceExtension }.cast::<FltExt>();
    if e.is_null() {
        return None;
    }
    let known = kernel::with(|k| {
        let d = k.objects.device_id(device)?;
        let driver = k.objects.device(d).driver;
        Some(Some(driver) == k.fltmgr.driver)
    });
    if known != Some(true) {
        return None;
    }
    // SAFETY: the Filter Manager creates its devices with an FltExt-sized extension.
    let ext = unsafe { *e };
    (ext.magic == EXT_MAGIC).then_some(ext)
}

/// A frame (facts.md §2.2): an altitude range across all volumes, one device per stack.
#[derive(Clone, Debug)]
pub struct Frame {
    /// `Frame N`.
    pub number: u32,
    /// The lowest altitude it hosts (display).
    pub lo: Option<Altitude>,
    /// The highest altitude it covers (display; grows up to a legacy filter when a frame is
    /// created above it).
    pub hi: Option<Altitude>,
    /// The legacy filter whose presence made the frame.
    pub above: Option<String>,
}

/// One entry of a filter's operation table.
#[derive(Clone, Copy)]
pub struct OpReg {
    /// `FLTFL_OPERATION_REGISTRATION_*`.
    pub flags: u32,
    /// The pre-operation callback.
    pub pre: PFLT_PRE_OPERATION_CALLBACK,
    /// The post-operation callback.
    pub post: PFLT_POST_OPERATION_CALLBACK,
}

/// A filter's operation table, indexed by the major function code (the Filter Manager looks it
/// up for every operation, for every instance it walks).
#[derive(Clone)]
pub struct OpTable(Box<[Option<OpReg>; 256]>);

impl Default for OpTable {
    fn default() -> OpTable {
        OpTable(Box::new([None; 256]))
    }
}

impl OpTable {
    /// The entry for major function code `major`.
    pub fn get(&self, major: &u8) -> Option<&OpReg> {
        self.0.get(usize::from(*major)).and_then(Option::as_ref)
    }

    /// Whether `major` has an entry.
    pub fn contains_key(&self, major: &u8) -> bool {
        self.get(major).is_some()
    }

    /// Sets the entry for `major`.
    pub fn insert(&mut self, major: u8, reg: OpReg) {
        if let Some(slot) = self.0.get_mut(usize::from(major)) {
            *slot = Some(reg);
        }
    }
}

/// The optional callbacks of a registration.
#[derive(Clone, Copy, Default)]
pub struct FilterCallbacks {
    /// `FilterUnloadCallback`.
    pub unload: PFLT_FILTER_UNLOAD_CALLBACK,
    /// `InstanceSetupCallback`.
    pub setup: PFLT_INSTANCE_SETUP_CALLBACK,
    /// `InstanceQueryTeardownCallback`.
    pub query_teardown: PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK,
    /// `InstanceTeardownStartCallback`.
    pub teardown_start: PFLT_INSTANCE_TEARDOWN_CALLBACK,
    /// `InstanceTeardownCompleteCallback`.
    pub teardown_complete: PFLT_INSTANCE_TEARDOWN_CALLBACK,
    /// `SectionNotificationCallback` (version 0x0203).
    pub section_notification: PFLT_SECTION_CONFLICT_NOTIFICATION_CALLBACK,
}

/// An instance definition from the registry (facts.md §2.5).
#[derive(Clone, Debug)]
pub struct InstanceDef {
    /// The instance name (the subkey's name).
    pub name: String,
    /// `Altitude`, parsed.
    pub altitude: Altitude,
    /// `Altitude` as written.
    pub altitude_text: String,
    /// `Flags` (0x1: no automatic attachment).
    pub flags: u32,
}

/// `FLT_REGISTRATION` flags.
pub mod reg_flags {
    /// `FLTFL_REGISTRATION_DO_NOT_SUPPORT_SERVICE_STOP`.
    pub const DO_NOT_SUPPORT_SERVICE_STOP: u32 = 0x1;
    /// `FLTFL_REGISTRATION_SUPPORT_NPFS_MSFS`.
    pub const SUPPORT_NPFS_MSFS: u32 = 0x2;
    /// `FLTFL_REGISTRATION_SUPPORT_DAX_VOLUME`.
    pub const SUPPORT_DAX_VOLUME: u32 = 0x4;
}

/// A filter's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterState {
    /// `FltRegisterFilter` succeeded.
    Registered,
    /// `FltStartFiltering` succeeded.
    Started,
    /// `FltUnregisterFilter` is tearing it down.
    Unregistering,
    /// Gone.
    Unregistered,
}

/// A registered filter (`FLT_FILTER`).
pub struct FilterRec {
    block: Block,
    /// The service name (the filter's name).
    pub name: crate::name::Name,
    /// Its driver.
    pub driver: DriverId,
    /// Its image.
    pub image: ImageId,
    /// Its life.
    pub state: FilterState,
    /// `FLT_REGISTRATION.Version`.
    pub version: u16,
    /// `FLT_REGISTRATION.Flags`.
    pub flags: u32,
    /// Operation table, by major code.
    pub ops: OpTable,
    /// Optional callbacks.
    pub callbacks: FilterCallbacks,
    /// Registered context types: (type, size, cleanup).
    pub context_types: Vec<contexts::ContextReg>,
    /// Instance definitions.
    pub instances: Vec<InstanceDef>,
    /// `DefaultInstance`.
    pub default_instance: String,
    /// The frame it lives in.
    pub frame: u32,
    /// Rundown references (generic work items queued, `FltObjectReference`).
    pub rundown: u32,
    /// The teardown reason its unregistration uses.
    pub unload_reason: u32,
    /// Its `FilterUnloadCallback` is running: a second unload request finds it being unloaded
    /// (`STATUS_FLT_DELETING_OBJECT`), a service stop waits for it (`Kernel::unload_ready`).
    pub unloading: bool,
}

impl FilterRec {
    /// `PFLT_FILTER`.
    pub fn handle(&self) -> isize {
        self.block.ptr() as isize
    }

    /// The default instance definition.
    pub fn default_def(&self) -> Option<&InstanceDef> {
        self.instances.iter().find(|i| i.name.eq_ignore_ascii_case(&self.default_instance))
    }

    /// The filter's altitude (its default instance's).
    pub fn altitude(&self) -> Option<Altitude> {
        self.default_def().map(|d| d.altitude)
    }
}

/// An instance's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstState {
    /// Its setup callback is running: no I/O reaches it yet.
    SettingUp,
    /// Attached: it sees I/O.
    Attached,
    /// `InstanceTeardownStartCallback` ran or runs; `InstanceTeardownCompleteCallback` waits for
    /// its outstanding operations.
    TearingDown,
    /// Torn down (or refused at setup).
    Gone,
}

/// An instance (`FLT_INSTANCE`).
pub struct InstanceRec {
    block: Block,
    /// Its filter.
    pub filter: FilterId,
    /// Its volume.
    pub volume: FvId,
    /// Its name.
    pub name: crate::name::Name,
    /// Its altitude.
    pub altitude: Altitude,
    /// Its altitude as given.
    pub altitude_text: crate::name::Name,
    /// The name of the machine volume it serves, once asked for while its volume's device
    /// named it ([`Kernel::flt_inst_sim_volume_name`]).
    sim_volume_name: std::cell::OnceCell<crate::name::Name>,
    /// Its frame.
    pub frame: u32,
    /// Its life. Private: it changes only through [`FltMgr::set_inst_state`], which invalidates
    /// the cached instance chains.
    state: InstState,
    /// Operations the instance is part of and has not finished with (pre called, post or
    /// resumption owed).
    pub outstanding: u32,
    /// `FltRegisterForDataScan` succeeded.
    pub data_scan: bool,
    /// The setup flags it attached with.
    pub setup_flags: u32,
    /// The teardown reason, once tearing down.
    pub reason: u32,
    /// `InstanceTeardownStartCallback` has returned.
    pub start_done: bool,
    /// `InstanceTeardownCompleteCallback` is queued or running.
    pub completing: bool,
    /// The reason of a teardown asked for while the setup callback ran (0: none): it starts
    /// once the callback has answered (`instances::setup`).
    pub teardown_after_setup: u32,
    /// Object references (`FltObjectReference`, `FltGetVolumeFromInstance` does not count).
    pub refs: u32,
}

impl InstanceRec {
    /// Its life.
    pub fn state(&self) -> InstState {
        self.state
    }

    /// `PFLT_INSTANCE`.
    pub fn handle(&self) -> isize {
        self.block.ptr() as isize
    }
}

/// A volume stack the Filter Manager is attached to (`FLT_VOLUME`: one record for all frames,
/// with each frame's device and whether that device saw the volume dismounted).
pub struct VolumeRec {
    block: Block,
    /// The bottom device: the file system's volume device (or the namespace device of MUP,
    /// NPFS, MSFS).
    pub bottom: DeviceId,
    /// The Filter Manager's device of each frame in this stack.
    pub frames: Vec<(u32, DeviceId)>,
    /// The frames whose device saw the volume dismounted (`FSCTL_DISMOUNT_VOLUME` succeeded
    /// through it) since it attached: no instance of theirs attaches until the volume is mounted
    /// again or revived. Per frame, as the Filter Manager keeps a volume object per frame: a
    /// filter below one frame may complete the request itself, so that the frames under it and
    /// the file system never see it (docs/simulator.md).
    pub dismounted: Vec<u32>,
    /// The bottom device is deleted.
    pub gone: bool,
    /// The device name `fltmc volumes` shows (`\Device\HarddiskVolume1`, `\Device\Mup`).
    pub name: String,
    /// The file system.
    pub fs: Option<crate::fs::FsType>,
    /// The volume device's type (`VolumeDeviceType`).
    pub device_type: u32,
    /// Object references (`FltGetVolumeFromInstance`, ...).
    pub refs: u32,
}

impl VolumeRec {
    /// Whether an instance of a filter of `frame` may attach here: the volume's bottom device is
    /// not deleted, the frame has a device in its stack, and that device has not seen the volume
    /// dismounted. A frame whose device never attached (its attach failed above a driver being
    /// unloaded, say) has no volume object here on Windows, so nothing of it attaches.
    pub fn attachable(&self, frame: u32) -> bool {
        !self.gone
            && self.frames.iter().any(|(f, _)| *f == frame)
            && !self.dismounted.contains(&frame)
    }

    /// Whether no frame has seen the volume dismounted (a new frame attaches only to those).
    pub fn live(&self) -> bool {
        self.dismounted.is_empty()
    }

    /// `PFLT_VOLUME`.
    pub fn handle(&self) -> isize {
        self.block.ptr() as isize
    }

    /// `FLT_FILESYSTEM_TYPE`.
    pub fn flt_type(&self) -> u32 {
        self.fs.map_or(0, crate::fs::FsType::flt_type)
    }

    /// True for the named-pipe and mailslot file systems.
    pub fn is_npfs_msfs(&self) -> bool {
        matches!(self.fs, Some(crate::fs::FsType::Npfs | crate::fs::FsType::Msfs))
    }
}

/// A file system's control device and the frame devices on it.
pub struct CdoRec {
    /// The control device.
    pub cdo: DeviceId,
    /// Frame devices on its chain.
    pub frames: Vec<(u32, DeviceId)>,
}

/// What a Filter Manager object handle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FltObject {
    /// `PFLT_FILTER`.
    Filter(FilterId),
    /// `PFLT_INSTANCE`.
    Instance(InstId),
    /// `PFLT_VOLUME`.
    Volume(FvId),
}

/// A generic work item (`FltAllocateGenericWorkItem`).
pub struct WorkItemRec {
    /// The item's memory (its address is the handle).
    pub _block: Block,
    /// The image that allocated it (which must free it).
    pub image: Option<crate::ids::ImageId>,
    /// Queued and not yet run.
    pub queued: bool,
}

/// The Filter Manager's state.
#[derive(Default)]
pub struct FltMgr {
    /// Its driver object, once loaded.
    pub driver: Option<DriverId>,
    /// Its image.
    pub image: Option<ImageId>,
    /// Its control device.
    pub control: Option<DeviceId>,
    /// Frames, by number.
    pub frames: Vec<Frame>,
    /// Filters, by id.
    pub filters: Vec<FilterRec>,
    /// Instances, by id.
    pub instances: Vec<InstanceRec>,
    /// Volumes, by id.
    pub volumes: Vec<VolumeRec>,
    /// Control devices it is attached to.
    pub cdos: Vec<CdoRec>,
    /// Contexts.
    pub contexts: contexts::Contexts,
    /// Operations in flight.
    pub ops: dispatch::Ops,
    /// Data-scan sections.
    pub sections: datascan::FltSections,
    /// File name informations handed out.
    pub names: names::Names,
    /// Communication ports and their connections.
    pub ports: ports::Ports,
    /// Generic work items by handle.
    pub work_items: FastMap<usize, WorkItemRec>,
    /// Object handles to objects. Private and insert-only: `handle_memo` relies on entries never
    /// changing or going (lookups go through [`FltMgr::object_of`]).
    handles: FastMap<usize, FltObject>,
    /// The frame each filter name was placed in (a reloaded filter comes back to it, §2.2).
    pub placements: BTreeMap<String, u32>,
    /// Pipes and mailslots were looked up by name.
    pub npfs_msfs_attached: Vec<crate::fs::FsType>,
    /// Changes whenever an instance is added or changes state: the chains in `chains` hold for
    /// the value they were built in.
    instances_changed: u64,
    /// The chains [`FltMgr::frame_chain`] built, with the volume, the frame and the value of
    /// `instances_changed` they were built for.
    chains: Vec<(FvId, u32, u64, Vec<InstId>)>,
    /// Recent answers of `handles` (its entries are never removed: the handle blocks live in
    /// the filter, instance and volume records, which stay for the machine's life).
    handle_memo: crate::kernel::AddrMemo<FltObject>,
}

impl FltMgr {
    /// The object behind a handle (`PFLT_FILTER`, `PFLT_INSTANCE`, `PFLT_VOLUME`).
    pub fn object_of(&self, handle: isize) -> Option<FltObject> {
        let h = handle as usize;
        self.handle_memo.get(h, || self.handles.get(&h).copied())
    }

    /// The object a handle was remembered as (see [`FltMgr::object_of`]), without a lookup.
    pub fn remembered(&self, handle: usize) -> Option<FltObject> {
        self.handle_memo.peek(handle)
    }

    /// The filter behind a `PFLT_FILTER`.
    pub fn filter_of(&self, handle: isize) -> Option<FilterId> {
        match self.object_of(handle) {
            Some(FltObject::Filter(f)) => Some(f),
            _ => None,
        }
    }

    /// The instance behind a `PFLT_INSTANCE`.
    pub fn instance_of(&self, handle: isize) -> Option<InstId> {
        match self.object_of(handle) {
            Some(FltObject::Instance(i)) => Some(i),
            _ => None,
        }
    }

    /// The volume behind a `PFLT_VOLUME`.
    pub fn volume_of(&self, handle: isize) -> Option<FvId> {
        match self.object_of(handle) {
            Some(FltObject::Volume(v)) => Some(v),
            _ => None,
        }
    }

    /// A filter's record.
    pub fn filter(&self, f: FilterId) -> &FilterRec {
        &self.filters[f.index()]
    }

    /// A filter's record, mutably.
    pub fn filter_mut(&mut self, f: FilterId) -> &mut FilterRec {
        &mut self.filters[f.index()]
    }

    /// An instance's record.
    pub fn inst(&self, i: InstId) -> &InstanceRec {
        &self.instances[i.index()]
    }

    /// An instance's record, mutably.
    pub fn inst_mut(&mut self, i: InstId) -> &mut InstanceRec {
        &mut self.instances[i.index()]
    }

    /// A volume's record.
    pub fn vol(&self, v: FvId) -> &VolumeRec {
        &self.volumes[v.index()]
    }

    /// A volume's record, mutably.
    pub fn vol_mut(&mut self, v: FvId) -> &mut VolumeRec {
        &mut self.volumes[v.index()]
    }

    /// The live filter of a driver.
    pub fn filter_of_driver(&self, driver: DriverId) -> Option<FilterId> {
        self.filters
            .iter()
            .position(|f| f.driver == driver && f.state != FilterState::Unregistered)
            .map(|i| FilterId(i as u32))
    }

    /// The live filter with this (service) name.
    pub fn filter_by_name(&self, name: &str) -> Option<FilterId> {
        self.filters
            .iter()
            .position(|f| f.name.eq_ignore_ascii_case(name) && f.state != FilterState::Unregistered)
            .map(|i| FilterId(i as u32))
    }

    /// The volume record of a bottom device.
    pub fn volume_by_bottom(&self, bottom: DeviceId) -> Option<FvId> {
        self.volumes.iter().position(|v| v.bottom == bottom).map(|i| FvId(i as u32))
    }

    /// Instances of a volume that are not gone, from the highest altitude down.
    pub fn volume_instances(&self, v: FvId) -> Vec<InstId> {
        let mut list: Vec<InstId> = (0..self.instances.len() as u32)
            .map(InstId)
            .filter(|&i| self.inst(i).volume == v && self.inst(i).state != InstState::Gone)
            .collect();
        list.sort_by_key(|i| std::cmp::Reverse(self.inst(*i).altitude));
        list
    }

    /// Fills `chain` with the attached instances of `frame` on a volume, from the highest
    /// altitude down: the instances an operation through the frame visits. Built once per
    /// volume and frame while no instance is added or changes state (every operation asks, and
    /// comparing the decimal altitudes is not cheap).
    pub fn frame_chain(&mut self, v: FvId, frame: u32, chain: &mut Vec<InstId>) {
        chain.clear();
        let now = self.instances_changed;
        let cached = self.chains.iter().position(|(cv, cf, _, _)| *cv == v && *cf == frame);
        if let Some(c) = cached {
            let (_, _, built, list) = &self.chains[c];
            if *built == now {
                chain.extend_from_slice(list);
                return;
            }
        }
        chain.extend((0..self.instances.len() as u32).map(InstId).filter(|&i| {
            let r = self.inst(i);
            r.volume == v && r.frame == frame && r.state == InstState::Attached
        }));
        chain.sort_by_key(|i| std::cmp::Reverse(self.inst(*i).altitude));
        match cached {
            Some(c) => {
                let entry = &mut self.chains[c];
                entry.2 = now;
                entry.3.clone_from(chain);
            }
            None => self.chains.push((v, frame, now, chain.clone())),
        }
    }

    /// Sets an instance's state (the only way it changes, so that cached chains are rebuilt).
    pub fn set_inst_state(&mut self, i: InstId, state: InstState) {
        self.instances_changed += 1;
        self.inst_mut(i).state = state;
    }

    /// Instances of a filter that are not gone, in creation order.
    pub fn filter_instances(&self, f: FilterId) -> Vec<InstId> {
        (0..self.instances.len() as u32)
            .map(InstId)
            .filter(|&i| self.inst(i).filter == f && self.inst(i).state != InstState::Gone)
            .collect()
    }

    /// The instance of `filter` on `volume` named `name` that is not gone.
    pub fn find_instance(&self, filter: FilterId, volume: FvId, name: &str) -> Option<InstId> {
        (0..self.instances.len() as u32).map(InstId).find(|&i| {
            let r = self.inst(i);
            r.filter == filter
                && r.volume == volume
                && r.state != InstState::Gone
                && r.name.eq_ignore_ascii_case(name)
        })
    }

    fn new_handle(&mut self, object: FltObject) -> Block {
        let block = Block::zeroed(64);
        self.handles.insert(block.ptr() as usize, object);
        block
    }

    /// Adds a volume record.
    pub fn add_volume(
        &mut self,
        bottom: DeviceId,
        name: String,
        fs: Option<crate::fs::FsType>,
        device_type: u32,
    ) -> FvId {
        let id = FvId(self.volumes.len() as u32);
        let block = self.new_handle(FltObject::Volume(id));
        self.volumes.push(VolumeRec {
            block,
            bottom,
            frames: Vec::new(),
            dismounted: Vec::new(),
            gone: false,
            name,
            fs,
            device_type,
            refs: 0,
        });
        id
    }

    /// Adds an instance record in `SettingUp`.
    pub fn add_instance(
        &mut self,
        filter: FilterId,
        volume: FvId,
        def: &InstanceDef,
        frame: u32,
        flags: u32,
    ) -> InstId {
        let id = InstId(self.instances.len() as u32);
        self.instances_changed += 1;
        let block = self.new_handle(FltObject::Instance(id));
        self.instances.push(InstanceRec {
            block,
            filter,
            volume,
            name: def.name.as_str().into(),
            altitude: def.altitude,
            altitude_text: def.altitude_text.as_str().into(),
            sim_volume_name: std::cell::OnceCell::new(),
            frame,
            state: InstState::SettingUp,
            outstanding: 0,
            data_scan: false,
            setup_flags: flags,
            reason: 0,
            start_done: false,
            completing: false,
            teardown_after_setup: 0,
            refs: 0,
        });
        id
    }
}

impl Kernel {
    /// Logs a Filter Manager event.
    pub fn flt_log(
        &mut self,
        driver: Option<crate::name::Name>,
        volume: Option<crate::name::Name>,
        event: FltEvent,
    ) {
        self.log(EventKind::FltMgr { driver, volume, event });
    }

    /// The display name of a Filter Manager volume: the machine volume it serves (the first
    /// one for `\Device\Mup`), else its device name.
    pub fn flt_volume_name(&self, v: FvId) -> String {
        match self.flt_sim_volume(v) {
            Some(sv) => self.volume_display_name(sv),
            None => self.fltmgr.vol(v).name.clone(),
        }
    }

    /// [`Kernel::flt_volume_name`], shared (for events).
    #[inline]
    pub fn flt_volume_shared_name(&self, v: FvId) -> crate::name::Name {
        match self.flt_sim_volume(v) {
            Some(sv) => self.volume_shared_name(sv),
            None => self.fltmgr.vol(v).name.as_str().into(),
        }
    }

    /// The name of the machine volume an instance serves, as the events of its callbacks show
    /// it: [`Kernel::flt_sim_volume`] of its volume, named. Remembered once the volume's device
    /// named the volume itself, which it does from its mount on and for good (its `volume` is
    /// set when the file system mounts it and never changes), so that each callback's events
    /// do not walk from the instance to the volume's device to the volume again.
    #[inline]
    pub fn flt_inst_sim_volume_name(&self, i: InstId) -> Option<crate::name::Name> {
        let r = self.fltmgr.inst(i);
        if let Some(name) = r.sim_volume_name.get() {
            return Some(name.clone());
        }
        let bottom = self.fltmgr.vol(r.volume).bottom;
        match self.objects.device(bottom).volume {
            Some(sv) => Some(r.sim_volume_name.get_or_init(|| self.volume_shared_name(sv)).clone()),
            None => self.flt_sim_volume_unnamed(bottom).map(|sv| self.volume_shared_name(sv)),
        }
    }

    /// [`Kernel::flt_volume_shared_name`] of an instance's volume.
    #[inline]
    pub fn flt_inst_volume_shared_name(&self, i: InstId) -> crate::name::Name {
        self.flt_inst_sim_volume_name(i)
            .unwrap_or_else(|| self.fltmgr.vol(self.fltmgr.inst(i).volume).name.as_str().into())
    }

    /// The machine volume a Filter Manager volume serves.
    #[inline]
    pub fn flt_sim_volume(&self, v: FvId) -> Option<VolumeId> {
        let bottom = self.fltmgr.vol(v).bottom;
        match self.objects.device(bottom).volume {
            Some(sv) => Some(sv),
            None => self.flt_sim_volume_unnamed(bottom),
        }
    }

    /// [`Kernel::flt_sim_volume`] when the bottom device names no volume: out of line, so that
    /// the common case (a mounted volume's device, asked twice per filter callback for its
    /// events) stays a few instructions inlined where it is asked.
    #[cold]
    #[inline(never)]
    pub(crate) fn flt_sim_volume_unnamed(&self, bottom: DeviceId) -> Option<VolumeId> {
        if let Some(i) = self.volumes.list.iter().position(|vol| vol.vdo == Some(bottom)) {
            return Some(VolumeId(i as u32));
        }
        // A namespace file system's device (MUP, NPFS, MSFS) before its volume is first used:
        // the first volume it serves (every share is on the one \Device\Mup).
        self.volumes
            .list
            .iter()
            .position(|vol| self.namespace_device(crate::fs::FsType::of(vol.fs)) == Some(bottom))
            .map(|i| VolumeId(i as u32))
    }

    /// The Filter Manager volume serving a machine volume now.
    pub fn flt_volume_of(&self, v: VolumeId) -> Option<FvId> {
        let vdo = self.volume(v).vdo?;
        self.fltmgr.volume_by_bottom(vdo)
    }

    /// An instance's names for events: (driver, volume).
    pub fn flt_inst_names(
        &self,
        i: InstId,
    ) -> (Option<crate::name::Name>, Option<crate::name::Name>) {
        let r = self.fltmgr.inst(i);
        (Some(self.fltmgr.filter(r.filter).name.clone()), Some(self.flt_inst_volume_shared_name(i)))
    }

    /// Reports a finding against a filter.
    pub fn flt_report(&mut self, filter: Option<FilterId>, rule: Rule, message: impl Into<String>) {
        let driver = match filter {
            Some(f) => Some(self.fltmgr.filter(f).name.to_string()),
            None => self.current_image_name(),
        };
        self.report(rule, driver, message);
    }
}

/// The Filter Manager's service: a native boot-start driver in "FSFilter Infrastructure".
pub fn service_spec() -> ServiceSpec {
    let mut spec = ServiceSpec::new(SERVICE, fltmgr_entry, "native");
    spec.start = StartType::Boot;
    spec.group = Some(GROUP.to_owned());
    spec.native = true;
    spec
}

impl Kernel {
    /// Installs the Filter Manager's service if it is not installed (a minifilter's
    /// `DependOnService = FltMgr` asks for it).
    pub fn ensure_fltmgr_installed(&mut self) -> bool {
        if self.service_index(SERVICE).is_some() {
            return false;
        }
        self.install_service(service_spec());
        true
    }

    /// True when the Filter Manager is loaded.
    pub fn fltmgr_loaded(&self) -> bool {
        self.fltmgr.driver.is_some_and(|d| !self.objects.driver(d).deleted)
    }
}

/// Calls filter code in `image` if the image may still run; reports
/// `CALLBACK_AFTER_UNLOAD` otherwise and returns None.
pub fn call_filter<R>(image: ImageId, what: &str, f: impl FnOnce() -> R) -> Option<R> {
    let loaded = kernel::with(|k| {
        let loaded = k.image_loaded(image);
        if !loaded {
            let name = k.image_name(image);
            k.report(
                Rule::CallbackAfterUnload,
                Some(name),
                format!("the Filter Manager would call {what} of a filter whose image is unloaded"),
            );
        }
        loaded
    });
    if !loaded {
        return None;
    }
    Some(kernel::call_into(Some(image), f))
}

/// [`call_filter`]'s first part inside a borrow the caller holds anyway: enters `image` when its
/// code may still run (the caller then runs the callback with [`kernel::run_entered`] and begins
/// its next borrow with [`Kernel::leave`]); reports `CALLBACK_AFTER_UNLOAD` and returns None
/// otherwise.
pub(crate) fn enter_filter(k: &mut Kernel, image: ImageId, what: &str) -> Option<kernel::Entered> {
    if !k.image_loaded(image) {
        let name = k.image_name(image);
        k.report(
            Rule::CallbackAfterUnload,
            Some(name),
            format!("the Filter Manager would call {what} of a filter whose image is unloaded"),
        );
        return None;
    }
    Some(k.enter(Some(image)))
}

/// Runs `f` as the Filter Manager's own code.
pub fn as_fltmgr<R>(f: impl FnOnce() -> R) -> R {
    let image = kernel::with(|k| k.fltmgr.image);
    kernel::call_into(image, f)
}

/// The Filter Manager's `DriverEntry`: dispatch and fast-I/O tables, its FsFilter callbacks, the
/// control device, the conflict hook, and its file-system notification routine (frame 0's).
///
/// # Safety
/// Called by the loader with the driver object and registry path.
pub unsafe extern "system" fn fltmgr_entry(
    driver: *const DRIVER_OBJECT,
    _path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: our own driver object during DriverEntry.
    let d = unsafe { crate::mem::obj(driver) };
    for slot in d.MajorFunction.iter_mut() {
        *slot = Some(dispatch::flt_dispatch);
    }
    d.FastIoDispatch = std::ptr::addr_of!(fastio::FLT_FAST_IO).cast_mut();
    // SAFETY: our own driver object.
    let status = unsafe { fsfiltercb::register(driver) };
    if !status.is_success() {
        return status.0;
    }
    let units = crate::mem::wide(CONTROL_DEVICE);
    let name = crate::mem::unicode(&units);
    let mut cdo: *mut DEVICE_OBJECT = std::ptr::null_mut();
    // SAFETY: our driver object, a valid name, an out pointer.
    let s = unsafe {
        crate::exports::io::IoCreateDevice(
            driver,
            size_of::<FltExt>() as u32,
            &name,
            fsfilter::device_type::DISK_FILE_SYSTEM,
            0,
            false,
            &mut cdo,
        )
    };
    if s < 0 {
        return s;
    }
    let ext = FltExt {
        magic: EXT_MAGIC,
        kind: DevKind::Control as u8,
        frame: 0,
        volume: u32::MAX,
        lower: std::ptr::null_mut(),
    };
    // SAFETY: the device we just created.
    let extension = unsafe { (*cdo).DeviceExtension };
    // SAFETY: its FltExt-sized extension.
    unsafe { extension.cast::<FltExt>().write(ext) };
    kernel::with(|k| {
        let did = k.objects.driver_id(driver);
        k.fltmgr.driver = did;
        k.fltmgr.image = k.current_image();
        k.fltmgr.control = k.objects.device_id(cdo);
        k.fltmgr.frames = vec![Frame { number: 0, lo: None, hi: None, above: None }];
        k.sections.conflict_hook = Some(datascan::on_conflict);
    });
    let status = frames::register_frame_notification(driver, 0);
    if !status.is_success() {
        return status.0;
    }
    frames::attach_raw(0);
    // A late load (a minifilter started on a booted machine) finds volumes mounted already.
    frames::attach_existing_volumes(0);
    Status::SUCCESS.0
}

/// A Filter Manager related-objects block for a callback.
pub fn related_objects(
    filter: isize,
    volume: isize,
    instance: isize,
    file: *const windows_sys::Wdk::Foundation::FILE_OBJECT,
) -> windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS {
    windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS {
        Size: size_of::<windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS>()
            as u16,
        TransactionContext: 0,
        Filter: filter,
        Volume: volume,
        Instance: instance,
        FileObject: file,
        Transaction: std::ptr::null(),
    }
}

/// A null context pointer.
pub const NO_CONTEXT: *mut c_void = std::ptr::null_mut();
