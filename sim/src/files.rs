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
    /// The name buffer the I/O manager gave the file object (`IopParseDevice`), while
    /// `FileName.Buffer` may still point to it.
    name: Vec<u16>,
    /// That buffer is no longer the file object's: a driver freed it (`ExFreePool`, replacing
    /// the name by hand) or `IoReplaceFileObjectName` replaced it. It stays allocated until the
    /// file object goes, so that a stale reader finds old text, not freed memory.
    name_released: bool,
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
                name_released: false,
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
        // FsRtlPTeardownPerFileObjectContexts: legacy filters removed theirs at close.
        self.per_fo_file_object_freed(fo);
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
        self.free_file_name(fo as *mut FILE_OBJECT, &info);
        // SAFETY: the file object's block; a stale reader finds no name rather than freed text.
        unsafe { (*(fo as *mut FILE_OBJECT)).FileName = unicode(&[]) };
        drop(info.name);
        self.files.pool.give(info.block);
    }

    /// The I/O manager frees a file object's name as `IopDeleteFile` and `IopParseDevice` do:
    /// `ExFreePool(FileName.Buffer)` when `FileName.Length` is not 0, whatever buffer is there.
    /// Its own buffer goes with the file object; a pool block a driver put there by hand is
    /// freed as the kernel's; anything else is a `BAD_POOL_FREE` (docs/simulator.md, "Reparse").
    fn free_file_name(&mut self, fo: *mut FILE_OBJECT, info: &FileObjectInfo) {
        // SAFETY: the file object's block, still ours.
        let name = unsafe { (*fo).FileName };
        if name.Length == 0 || name.Buffer.is_null() {
            return;
        }
        if name.Buffer.cast_const() == info.name.as_ptr() && !info.name.is_empty() {
            if info.name_released {
                self.report(
                    crate::events::Rule::BadPoolFree,
                    None,
                    "the I/O manager frees the file object's FileName.Buffer, which a driver \
                     freed already (ExFreePool) and left in FileName",
                );
            }
            return;
        }
        if !self.pool_free_kernel(name.Buffer.cast()) {
            self.report(
                crate::events::Rule::BadPoolFree,
                None,
                format!(
                    "the I/O manager frees the file object's FileName.Buffer ({:p}) with \
                     ExFreePool, and it is no live pool block: a driver replaced the name by \
                     hand with memory that is not pool (IoReplaceFileObjectName owns the \
                     buffer for it)",
                    name.Buffer
                ),
            );
        }
    }

    /// A driver's `ExFreePool` of the name buffer the I/O manager gave a live file object
    /// (pool tagged `IoNm` on Windows): the buffer is released (it stays allocated until the file
    /// object goes). False when `ptr` is no such buffer, or was released already.
    pub(crate) fn free_initial_file_name(&mut self, ptr: usize, tag: Option<u32>) -> bool {
        let found = self.files.map.iter_mut().find(|(_, i)| {
            !i.name.is_empty() && i.name.as_ptr() as usize == ptr && !i.name_released
        });
        let Some((_, info)) = found else { return false };
        info.name_released = true;
        self.check_irql(crate::kernel::APC_LEVEL, "ExFreePoolWithTag (paged pool)");
        if let Some(t) = tag.filter(|t| *t != FILE_NAME_TAG) {
            let (a, b) = (crate::pool::tag_text(FILE_NAME_TAG), crate::pool::tag_text(t));
            self.report_current(
                crate::events::Rule::PoolTagMismatch,
                format!("a block allocated with tag '{a}' freed with tag '{b}'"),
            );
        }
        true
    }

    /// `IoReplaceFileObjectName`: the file object's name becomes the `length` bytes at `new`,
    /// in the I/O manager's buffer (docs/simulator.md, "Reparse"). `STATUS_INVALID_PARAMETER`
    /// for a file object without a name (its reference page); the current buffer is reused when
    /// the name fits in its `MaximumLength`, otherwise a new one is allocated from paged pool
    /// (`IoNm`, sized as `IopParseDevice` sizes names) and the old one freed;
    /// `STATUS_INSUFFICIENT_RESOURCES` when that allocation fails.
    pub(crate) fn replace_file_object_name(
        &mut self,
        fo: *mut FILE_OBJECT,
        new: *const u16,
        length: u16,
    ) -> fsfilter::Status {
        use fsfilter::Status;
        self.check_irql(crate::kernel::PASSIVE_LEVEL, "IoReplaceFileObjectName");
        if !self.files.map.contains_key(&(fo as usize)) {
            self.report_current(
                crate::events::Rule::Bugcheck,
                format!("IoReplaceFileObjectName({fo:p}): not a file object"),
            );
            return Status::INVALID_PARAMETER;
        }
        // SAFETY: a live file object of the table.
        let f = unsafe { &mut *fo };
        if f.FileName.Buffer.is_null() || f.FileName.Length == 0 {
            return Status::INVALID_PARAMETER;
        }
        if new.is_null() && length != 0 {
            self.report_current(
                crate::events::Rule::Bugcheck,
                "IoReplaceFileObjectName with a NULL NewFileName",
            );
            return Status::INVALID_PARAMETER;
        }
        // The caller's bytes, copied first: they may be the file object's own name.
        let bytes: Vec<u8> = if length == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller's buffer of `length` bytes.
            unsafe { std::slice::from_raw_parts(new.cast::<u8>(), usize::from(length)) }.to_vec()
        };
        let max = usize::from(f.FileName.MaximumLength);
        let current = f.FileName.Buffer as usize;
        let Some(info) = self.files.map.get(&(fo as usize)) else {
            return Status::INVALID_PARAMETER;
        };
        let own = current == info.name.as_ptr() as usize && !info.name_released;
        let own_bytes = info.name.len() * 2;
        let room = if own {
            max.min(own_bytes)
        } else {
            self.pool.blocks.get(&current).map_or(0, |b| b.size.min(max))
        };
        if usize::from(length) <= room {
            // In place, as Windows does when the name fits: the buffer is zeroed to its
            // MaximumLength and the new name copied in.
            let dst = match self.files.map.get_mut(&(fo as usize)) {
                Some(info) if own => info.name.as_mut_ptr().cast::<u8>(),
                _ => current as *mut u8,
            };
            // SAFETY: `room` bytes of the current buffer are ours to write (checked above).
            unsafe { std::ptr::write_bytes(dst, 0, room) };
            // SAFETY: as above; the name's `length` <= `room` bytes, from our own copy.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
            f.FileName.Length = length;
            return Status::SUCCESS;
        }
        if self.fault(crate::faults::FaultKind::Pool) {
            return Status::INSUFFICIENT_RESOURCES;
        }
        let size = round_name_size(usize::from(length));
        let buffer = self.pool_allocate_as(None, crate::pool::POOL_FLAG_PAGED, size, FILE_NAME_TAG);
        // SAFETY: a fresh block of `size` >= `length` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len()) };
        if own {
            if let Some(info) = self.files.map.get_mut(&(fo as usize)) {
                info.name_released = true;
            }
        } else if !self.pool_free_kernel(current as *mut std::ffi::c_void) {
            self.report_current(
                crate::events::Rule::BadPoolFree,
                format!(
                    "IoReplaceFileObjectName frees the file object's FileName.Buffer \
                     ({current:#x}), which is no live pool block (a driver replaced the name \
                     by hand with memory that is not pool, or freed it)"
                ),
            );
        }
        f.FileName.Buffer = buffer.cast();
        f.FileName.MaximumLength = size as u16;
        f.FileName.Length = length;
        Status::SUCCESS
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

/// The pool tag of the names the I/O manager allocates for file objects (`'IoNm'`).
pub(crate) const FILE_NAME_TAG: u32 = u32::from_le_bytes(*b"IoNm");

/// The size `IopParseDevice` gives a file object's name buffer for a name of `length` bytes
/// (WRK `RoundNameSize`): 56, 120 or 248 bytes, or the length itself from 248 on.
fn round_name_size(length: usize) -> usize {
    match length {
        0..56 => 56,
        56..120 => 120,
        120..248 => 248,
        _ => length,
    }
}

/// The caller's completion of an overlapped device request: its final status, information and
/// `PendingReturned` (`crate::syscalls::overlapped_done`).
pub(crate) type OverlappedDone = Box<dyn FnOnce(fsfilter::Status, usize, bool)>;
