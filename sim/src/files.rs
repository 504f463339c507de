//! File objects as the I/O manager keeps them: created for an open, referenced by handles,
//! sections and drivers (`ObReferenceObject`), and closed (`IRP_MJ_CLOSE`) when the last
//! reference goes; plus the user-mode handle table of the simulated caller.

use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, KEVENT, VPB};

use crate::ids::VolumeId;
use crate::kernel::{FastMap, Kernel};
use crate::mem::{Block, BlockPool, obj, unicode};
use crate::nt::IO_TYPE_FILE;

/// A user-mode handle of the simulated caller (what `NtCreateFile` returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

/// A user-mode handle of the simulated caller to a device opened by name
/// (`Machine::open_device`), in a table of its own: the requests on it belong to no volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceHandle(pub u32);

/// A device handle's entry.
#[derive(Clone, Copy, Debug)]
pub struct DeviceUserHandle {
    /// The file object.
    pub fo: usize,
    /// The access granted.
    pub access: u32,
}

/// A file object and its accounting.
pub struct FileObjectInfo {
    block: Block,
    name: Vec<u16>,
    /// Pointer references (a handle holds one).
    pub refs: u32,
    /// Open handles.
    pub handles: u32,
    /// The volume it was opened on.
    pub volume: Option<VolumeId>,
    /// The create succeeded: a close request is owed when the last reference goes.
    pub opened: bool,
    /// The VPB whose reference count it holds.
    pub vpb: *mut VPB,
    /// Stands for the stack-based file object of a query open (`FastIoQueryOpen`) while the
    /// routine runs: a reference to it is a `STACK_FILE_OBJECT_REFERENCED` finding.
    pub stack_based: bool,
}

/// A user-mode handle's entry.
#[derive(Clone, Copy, Debug)]
pub struct UserHandle {
    /// The file object.
    pub fo: usize,
    /// The volume.
    pub volume: VolumeId,
    /// The access granted.
    pub access: u32,
    /// The handle is still open (cleanup not sent yet).
    pub open: bool,
}

/// The file-object table.
pub struct Files {
    /// File objects by address.
    pub map: FastMap<usize, FileObjectInfo>,
    /// User handles by number (index).
    pub handles: Vec<Option<UserHandle>>,
    /// User handles to devices, by number (index).
    pub device_handles: Vec<Option<DeviceUserHandle>>,
    /// The locks of synchronous file objects.
    pub locks: crate::folock::FileLocks,
    /// The callers' completions of overlapped device requests still outstanding, by number
    /// (`crate::irp::Finish::Overlapped`): each owns the request's buffers.
    pub(crate) overlapped_calls: FastMap<u64, OverlappedDone>,
    /// The last overlapped device request's number.
    pub(crate) last_overlapped: u64,
    pool: BlockPool,
}

impl Default for Files {
    fn default() -> Self {
        Files {
            map: FastMap::default(),
            handles: Vec::new(),
            device_handles: Vec::new(),
            locks: Default::default(),
            overlapped_calls: FastMap::default(),
            last_overlapped: 0,
            pool: BlockPool::new(size_of::<FILE_OBJECT>()),
        }
    }
}

/// What dropping a reference to a file object asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// Other references remain (or the object is not a file object).
    Alive,
    /// The last reference went: send `IRP_MJ_CLOSE`.
    Close,
}

impl Kernel {
    /// A new file object (`IopParseDevice`): `DeviceObject` is the device the open named (the
    /// real device for volumes), `FileName` is relative to it. One reference.
    pub fn new_file_object(
        &mut self,
        device: *mut DEVICE_OBJECT,
        vpb: *mut VPB,
        name: &str,
        flags: u32,
        volume: Option<VolumeId>,
    ) -> *mut FILE_OBJECT {
        self.new_file_object_units(device, vpb, name.encode_utf16().collect(), flags, volume)
    }

    /// As [`Kernel::new_file_object`], with the name as UTF-16 units, which need not be valid
    /// UTF-16 (a kernel-mode caller's name is whatever its `UNICODE_STRING` holds); at most
    /// 32,767 units are kept (a `UNICODE_STRING`'s limit).
    pub fn new_file_object_units(
        &mut self,
        device: *mut DEVICE_OBJECT,
        vpb: *mut VPB,
        mut name: Vec<u16>,
        flags: u32,
        volume: Option<VolumeId>,
    ) -> *mut FILE_OBJECT {
        name.truncate(usize::from(u16::MAX / 2));
        let block = self.files.pool.take();
        let ptr = block.ptr().cast::<FILE_OBJECT>();
        // SAFETY: a zeroed block sized for a FILE_OBJECT.
        let f = unsafe { obj(ptr) };
        // The I/O manager counts open file objects on the device they name (what makes a
        // driver with an open control device unloadable only later, facts.md §1.9).
        if let Some(d) = self.objects.device_id(device) {
            self.objects.dobj(d).ReferenceCount += 1;
        }
        f.Type = IO_TYPE_FILE;
        f.Size = size_of::<FILE_OBJECT>() as i16;
        f.DeviceObject = device;
        f.Vpb = vpb;
        // The parse references the volume's VPB for the create in flight (`IopCheckVpbMounted`),
        // and an opened file object keeps it: a file system's dismount check counts a create a
        // filter holds before it reached the file system.
        if !f.Vpb.is_null() {
            // SAFETY: the VPB (VPBs live as long as the machine).
            unsafe { obj(f.Vpb) }.ReferenceCount += 1;
        }
        f.Flags = flags;
        f.FileName = unicode(&name);
        // SAFETY: the file object's own event storage.
        unsafe {
            crate::sched::initialize_event(
                std::ptr::addr_of_mut!(f.Lock).cast::<KEVENT>(),
                1,
                false,
            )
        };
        // SAFETY: as above.
        unsafe {
            crate::sched::initialize_event(
                std::ptr::addr_of_mut!(f.Event).cast::<KEVENT>(),
                0,
                false,
            )
        };
        self.files.map.insert(
            ptr as usize,
            FileObjectInfo {
                block,
                name,
                refs: 1,
                handles: 0,
                volume,
                opened: false,
                vpb,
                stack_based: false,
            },
        );
        ptr
    }

    /// Marks a file object opened (the create succeeded): it holds a reference on its VPB.
    pub(crate) fn file_opened(&mut self, fo: *mut FILE_OBJECT, handles: u32) {
        let Some(info) = self.files.map.get_mut(&(fo as usize)) else { return };
        info.opened = true;
        info.handles = handles;
        // SAFETY: a live file object of the table.
        let vpb = unsafe { (*fo).Vpb };
        // The parse's reference stays with the file object, moved to the VPB it names now.
        if vpb != info.vpb {
            if !info.vpb.is_null() {
                // SAFETY: the VPB it referenced.
                let v = unsafe { obj(info.vpb) };
                v.ReferenceCount = v.ReferenceCount.saturating_sub(1);
            }
            if !vpb.is_null() {
                // SAFETY: the VPB (VPBs live as long as the machine).
                unsafe { (*vpb).ReferenceCount += 1 };
            }
            info.vpb = vpb;
        }
    }

    /// True when `p` is a file object of the table.
    pub fn is_file_object(&self, p: usize) -> bool {
        self.files.map.contains_key(&p)
    }

    /// `ObReferenceObject` on a file object.
    pub fn file_reference(&mut self, fo: usize) -> isize {
        let Some(info) = self.files.map.get_mut(&fo) else { return 0 };
        info.refs += 1;
        let (refs, stack_based) = (info.refs, info.stack_based);
        if stack_based {
            self.report_current(
                crate::events::Rule::StackFileObjectReferenced,
                "ObReferenceObject on the file object of a query open (IRP_MJ_NETWORK_QUERY_OPEN, \
                 FastIoQueryOpen): it lives on the I/O manager's stack for the call only, and a \
                 driver must not reference it or keep a pointer to it",
            );
        }
        refs as isize
    }

    /// Marks a file object as the stack-based object of a query open while its `FastIoQueryOpen`
    /// runs (or clears the mark).
    pub fn set_stack_based(&mut self, fo: usize, on: bool) {
        if let Some(info) = self.files.map.get_mut(&fo) {
            info.stack_based = on;
        }
    }

    /// `ObDereferenceObject` on a file object.
    pub fn file_dereference(&mut self, fo: usize) -> Released {
        let Some(info) = self.files.map.get_mut(&fo) else { return Released::Alive };
        if info.refs == 0 {
            self.report_current(
                crate::events::Rule::ObjectOverDereferenced,
                "a file object dereferenced more than referenced",
            );
            return Released::Alive;
        }
        info.refs -= 1;
        if info.refs > 0 {
            return Released::Alive;
        }
        if info.opened {
            Released::Close
        } else {
            self.free_file_object(fo);
            Released::Alive
        }
    }

    /// Frees a file object (after its close, or a failed create): releases its VPB reference.
    pub fn free_file_object(&mut self, fo: usize) {
        let Some(info) = self.files.map.remove(&fo) else { return };
        // Filters' stream-handle contexts go with the file object.
        self.flt_file_object_gone(fo);
        // SAFETY: the file object's block is still ours.
        let device = unsafe { (*(fo as *mut FILE_OBJECT)).DeviceObject };
        if let Some(d) = self.objects.device_id(device) {
            let o = self.objects.dobj(d);
            o.ReferenceCount = o.ReferenceCount.saturating_sub(1);
            if o.ReferenceCount == 0 {
                self.device_released(d);
            }
        }
        if !info.vpb.is_null() {
            // SAFETY: the VPB it referenced.
            let v = unsafe { obj(info.vpb) };
            v.ReferenceCount = v.ReferenceCount.saturating_sub(1);
            if !info.opened {
                // A create that failed: it may have been the last thing holding a dismounted
                // volume's device.
                self.create_released_vpb(info.vpb);
            }
        }
        // SAFETY: the file object's block; a stale reader finds no name rather than freed text.
        unsafe { (*(fo as *mut FILE_OBJECT)).FileName = unicode(&[]) };
        drop(info.name);
        self.files.pool.give(info.block);
    }

    /// Adds a user handle.
    pub fn add_handle(&mut self, fo: usize, volume: VolumeId, access: u32) -> Handle {
        let h = Handle(self.files.handles.len() as u32);
        self.files.handles.push(Some(UserHandle { fo, volume, access, open: true }));
        h
    }

    /// A user handle's entry.
    pub fn user_handle(&self, h: Handle) -> Option<UserHandle> {
        self.files.handles.get(h.0 as usize).copied().flatten()
    }

    /// The device a file object's requests go to (`IoGetRelatedDeviceObject`): the top of its
    /// VPB's volume device stack, or of the device it names.
    pub(crate) fn related_device(&self, fo: *const FILE_OBJECT) -> *mut DEVICE_OBJECT {
        // SAFETY: a live file object.
        let f = unsafe { &*fo };
        let mut d = f.DeviceObject;
        // SAFETY: the file object's VPB, when set.
        if let Some(v) = unsafe { f.Vpb.as_ref() } {
            if !v.DeviceObject.is_null() {
                d = v.DeviceObject;
            }
        } else if let Some(dev) = self.objects.device_id(d) {
            let vpb = self.objects.dobj(dev).Vpb;
            // SAFETY: a device's VPB, when set.
            if let Some(v) = unsafe { vpb.as_ref() } {
                if v.Flags & crate::nt::vpb::MOUNTED != 0 && !v.DeviceObject.is_null() {
                    d = v.DeviceObject;
                }
            }
        }
        match self.objects.device_id(d) {
            Some(id) => self.objects.device(self.objects.top(id)).ptr,
            None => d,
        }
    }
}

/// The caller's completion of an overlapped device request: its final status, information and
/// `PendingReturned` (`crate::syscalls::overlapped_done`).
pub(crate) type OverlappedDone = Box<dyn FnOnce(fsfilter::Status, usize, bool)>;
