//! Section objects for data scanning (facts.md §6): `FsRtlCreateSectionForDataScan` and the
//! internal API the Filter Manager's `FltCreateSectionForDataScan` uses, read-only views that are
//! the file's bytes (kept coherent with writes), and the conflict hook: before a write or a
//! change of a file's size the file system asks which open sections a purge would conflict with,
//! and whoever registered the hook (the Filter Manager) hears of them.

use fsfilter::Status;
use windows_sys::Wdk::Foundation::FILE_OBJECT;

use crate::events::Rule;
use crate::fs::VOLUME_NODE;
use crate::ids::ImageId;
use crate::kernel::{self, FastMap, Kernel};
use crate::mem::Block;
use crate::nt::PAGE_SIZE;
use crate::registry::HandleObject;

/// `SEC_COMMIT`.
pub const SEC_COMMIT: u32 = 0x0800_0000;

/// The arguments `FsRtlCreateSectionForDataScan` and `FltCreateSectionForDataScan` check before
/// anything else (WRK; their reference pages list the statuses): `STATUS_INVALID_PARAMETER_8`
/// for a protection other than `PAGE_READONLY` or `PAGE_READWRITE`, `_9` without `SEC_COMMIT`.
pub fn check_data_scan_arguments(protection: u32, attributes: u32) -> Result<(), Status> {
    use fsfilter::section_sync::{PAGE_READONLY, PAGE_READWRITE};
    if protection != PAGE_READONLY && protection != PAGE_READWRITE {
        return Err(Status::INVALID_PARAMETER_8);
    }
    if attributes & SEC_COMMIT == 0 {
        return Err(Status::INVALID_PARAMETER_9);
    }
    Ok(())
}

impl Kernel {
    /// The test `FsRtlCreateSectionForDataScan` and `FltCreateSectionForDataScan` do not make:
    /// a data-scan section on a file object the file system never opened (a known file object
    /// with neither `FsContext` nor `SectionObjectPointer`: a failed or reparsed create's), or
    /// whose open was cancelled (`FO_FILE_OPEN_CANCELLED`: closed below, its pointers stale), is
    /// [`Rule::SectionOnUnopenedFile`] against the calling driver, a bug check on Windows (WRK
    /// mm/creasect.c `MmCreateSection`, whose file-object path reads
    /// `SectionObjectPointer->DataSectionObject` untested). Says whether it reported; the caller
    /// then answers `STATUS_INVALID_FILE_FOR_SECTION` before the acquire for section
    /// synchronization (no driver sees an acquire for a section that cannot exist).
    pub(crate) fn section_on_unopened_file(
        &mut self,
        routine: &str,
        fo: *const FILE_OBJECT,
    ) -> bool {
        if fo.is_null() || !self.is_file_object(fo as usize) {
            return false;
        }
        // SAFETY: a live file object of the I/O manager's.
        let f = unsafe { &*fo };
        let cancelled = f.Flags & crate::nt::fo::FILE_OPEN_CANCELLED != 0;
        if !cancelled && (!f.FsContext.is_null() || !f.SectionObjectPointer.is_null()) {
            return false;
        }
        let what = if cancelled {
            "a file object whose open was cancelled (FO_FILE_OPEN_CANCELLED: IoCancelFileOpen \
             sent its cleanup and close, the file system freed what its FsContext and \
             SectionObjectPointer point at)"
        } else {
            "a file object the file system never opened (no FsContext, no SectionObjectPointer: \
             a create that failed or ended STATUS_REPARSE)"
        };
        self.report_current(
            Rule::SectionOnUnopenedFile,
            format!(
                "{routine} on {what}: the memory manager dereferences its SectionObjectPointer, \
                 a bug check on Windows (WRK MmCreateSection); test the create's status (and \
                 STATUS_REPARSE) first, and create no section after cancelling the open"
            ),
        );
        true
    }
}

/// What kind of I/O conflicts with an open section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictOp {
    /// A write that is not paging I/O.
    Write,
    /// A change of end of file or allocation size.
    SetEndOfFile,
}

/// Hears of sections a purge would conflict with: the stream (`FsContext`), the sections (their
/// object addresses), the operation. Runs outside the kernel's borrow: it may close sections.
pub type ConflictHook = fn(stream: usize, sections: &[usize], op: ConflictOp);

/// A mapped view.
pub struct View {
    block: Block,
    /// The file offset of its first byte (the section offset it was mapped at).
    pub offset: u64,
    /// Bytes of the file it shows.
    pub size: usize,
}

/// A section object.
pub struct Section {
    block: Block,
    /// The file object it references.
    pub fo: usize,
    /// The stream (`FsContext`).
    pub stream: usize,
    /// Open handles.
    pub handles: u32,
    /// Object references (the handle's included).
    pub refs: u32,
    /// Mapped views by base address.
    pub views: Vec<usize>,
    /// Who created it.
    pub owner: Option<ImageId>,
    /// False once destroyed.
    pub live: bool,
}

/// The section table.
#[derive(Default)]
pub struct Sections {
    /// Sections by index.
    pub list: Vec<Section>,
    by_ptr: FastMap<usize, usize>,
    by_stream: FastMap<usize, Vec<usize>>,
    views: FastMap<usize, (usize, View)>,
    /// The conflict hook (the Filter Manager registers one).
    pub conflict_hook: Option<ConflictHook>,
}

impl Sections {
    /// Live sections on a stream that still have a handle or a reference.
    pub fn open_on(&self, stream: usize) -> Vec<usize> {
        self.by_stream
            .get(&stream)
            .map(|v| {
                v.iter()
                    .filter(|&&i| self.list[i].live && self.list[i].refs > 0)
                    .map(|&i| self.list[i].block.ptr() as usize)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True when a view of the stream is mapped.
    pub fn has_views(&self, stream: usize) -> bool {
        self.by_stream
            .get(&stream)
            .is_some_and(|v| v.iter().any(|&i| !self.list[i].views.is_empty()))
    }

    /// Copies written bytes into the mapped views of the stream.
    pub fn write_through(&mut self, stream: usize, offset: u64, bytes: &[u8]) {
        let Some(list) = self.by_stream.get(&stream) else { return };
        let end = offset.saturating_add(bytes.len() as u64);
        for &i in list {
            for base in &self.list[i].views {
                let Some((_, view)) = self.views.get(base) else { continue };
                // The part of the write inside the file range the view shows, which starts at
                // the view's own offset in the file.
                let from = offset.max(view.offset);
                let to = end.min(view.offset.saturating_add(view.size as u64));
                if from >= to {
                    continue;
                }
                let src = &bytes[(from - offset) as usize..(to - offset) as usize];
                let at = (from - view.offset) as usize;
                // SAFETY: `at + src.len()` is at most `size`, which the view's block holds.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        view.block.ptr().wrapping_add(at),
                        src.len(),
                    );
                }
            }
        }
    }

    /// The section with this object address.
    pub fn index_of(&self, ptr: usize) -> Option<usize> {
        self.by_ptr.get(&ptr).copied()
    }
}

impl Kernel {
    /// Creates a data-scan section for a file object: a handle, a referenced object, the file's
    /// size. Errors as facts.md §6 lists them.
    pub fn create_section(
        &mut self,
        fo: *mut FILE_OBJECT,
    ) -> Result<(*mut core::ffi::c_void, *mut core::ffi::c_void, i64), Status> {
        if self.fault(crate::faults::FaultKind::CreateSection) {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        self.new_section(fo, false)
    }

    /// Creates a user's data section on a file object (`NtCreateSection` with a file handle,
    /// `SEC_COMMIT`, the file's size): as [`Kernel::create_section`], but an empty file is
    /// `STATUS_MAPPED_FILE_SIZE_ZERO`, a directory `STATUS_INVALID_FILE_FOR_SECTION`, and
    /// byte-range locks do not matter.
    pub fn create_user_section(
        &mut self,
        fo: *mut FILE_OBJECT,
    ) -> Result<(*mut core::ffi::c_void, *mut core::ffi::c_void, i64), Status> {
        self.new_section(fo, true)
    }

    /// Whether the file of `fo` could have a section, and so pages for the page writers: a file of
    /// one of the simulator's file systems, not a volume open nor a directory (which
    /// `NtCreateSection` refuses with `STATUS_INVALID_FILE_FOR_SECTION`). A dismounted volume's
    /// files could have been mapped before the dismount.
    pub(crate) fn could_be_mapped(&self, fo: *mut FILE_OBJECT) -> bool {
        if !self.is_file_object(fo as usize) {
            return false;
        }
        let Some(fcb) = self.fcb_of(fo) else { return false };
        if fcb.node == VOLUME_NODE {
            return false;
        }
        let Some(m) = self.fs.mounts.get(fcb.mount as usize) else { return false };
        if m.state != crate::fs::MountState::Mounted {
            return true;
        }
        let Some(volume) = self.volumes.list.get(m.volume.index()) else { return false };
        !volume.media.node(fcb.node).is_dir()
    }

    fn new_section(
        &mut self,
        fo: *mut FILE_OBJECT,
        user: bool,
    ) -> Result<(*mut core::ffi::c_void, *mut core::ffi::c_void, i64), Status> {
        if !self.is_file_object(fo as usize) {
            return Err(Status::INVALID_PARAMETER);
        }
        let fcb = self.fcb_of(fo).ok_or(Status::INVALID_FILE_FOR_SECTION)?;
        if fcb.node == VOLUME_NODE {
            return Err(Status::INVALID_FILE_FOR_SECTION);
        }
        let (stream, sop) = (fcb.ptr(), fcb.sop());
        let m = &self.fs.mounts[fcb.mount as usize];
        if m.state != crate::fs::MountState::Mounted {
            return Err(Status::VOLUME_DISMOUNTED);
        }
        let node = self.volumes.list[m.volume.index()].media.node(fcb.node);
        if node.is_dir() {
            return Err(if user {
                Status::INVALID_FILE_FOR_SECTION
            } else {
                Status::FILE_IS_A_DIRECTORY
            });
        }
        let size = node.size();
        if size == 0 {
            return Err(if user { Status::MAPPED_FILE_SIZE_ZERO } else { Status::END_OF_FILE });
        }
        if !user && !fcb.locks.is_empty() {
            return Err(Status::FILE_LOCK_CONFLICT);
        }
        let block = Block::zeroed(64);
        let ptr = block.ptr() as usize;
        let owner = self.current_image();
        let index = self.sections.list.len();
        self.sections.list.push(Section {
            block,
            fo: fo as usize,
            stream,
            handles: 1,
            refs: 2,
            views: Vec::new(),
            owner,
            live: true,
        });
        self.sections.by_ptr.insert(ptr, index);
        self.sections.by_stream.entry(stream).or_default().push(index);
        self.file_reference(fo as usize);
        // SAFETY: the FCB's section object pointers.
        let sop = unsafe { crate::mem::obj(sop) };
        if sop.DataSectionObject.is_null() {
            sop.DataSectionObject = ptr as *mut _;
        }
        let handle = self.handles.open(HandleObject::Section(ptr));
        Ok((handle, ptr as *mut _, size as i64))
    }

    /// Maps a read-only view of a section: a copy of the file's bytes, page-rounded, kept coherent
    /// with later writes. Returns (base, view size).
    pub fn map_view(
        &mut self,
        section: usize,
        offset: u64,
        want: usize,
    ) -> Result<(usize, usize), Status> {
        let i = self.sections.index_of(section).ok_or(Status::INVALID_HANDLE)?;
        let stream = self.sections.list[i].stream;
        let bytes = self.stream_bytes(stream).ok_or(Status::FILE_CLOSED)?;
        if offset >= bytes.len() as u64 {
            return Err(Status::INVALID_VIEW_SIZE);
        }
        let start = offset as usize;
        let avail = bytes.len() - start;
        let size = if want == 0 { avail } else { want.min(avail) };
        let rounded = size.next_multiple_of(PAGE_SIZE).max(PAGE_SIZE);
        let block = Block::zeroed(rounded);
        // SAFETY: the block holds `rounded` >= size bytes; the source range is in bounds.
        unsafe { std::ptr::copy_nonoverlapping(bytes[start..].as_ptr(), block.ptr(), size) };
        let base = block.ptr() as usize;
        self.sections.views.insert(base, (i, View { block, offset, size }));
        self.sections.list[i].views.push(base);
        Ok((base, rounded))
    }

    /// Unmaps a view; returns the file object to dereference if the section went away.
    pub fn unmap_view(&mut self, base: usize) -> Result<Option<usize>, Status> {
        let (i, _view) = self.sections.views.remove(&base).ok_or(Status::NOT_MAPPED_VIEW)?;
        self.sections.list[i].views.retain(|b| *b != base);
        Ok(self.maybe_destroy_section(i))
    }

    /// A section handle was closed (`ZwClose`); returns the file object to dereference if the
    /// section went away.
    pub fn section_handle_closed(&mut self, section: usize) -> Option<usize> {
        let i = self.sections.index_of(section)?;
        let s = &mut self.sections.list[i];
        s.handles = s.handles.saturating_sub(1);
        s.refs = s.refs.saturating_sub(1);
        self.maybe_destroy_section(i)
    }

    /// `ObReferenceObject` on a section.
    pub fn section_reference(&mut self, section: usize) -> Option<isize> {
        let i = self.sections.index_of(section)?;
        let s = &mut self.sections.list[i];
        s.refs += 1;
        Some(s.refs as isize)
    }

    /// `ObDereferenceObject` on a section; the file object to dereference if it went away.
    pub fn section_dereference(&mut self, section: usize) -> Option<Option<usize>> {
        let i = self.sections.index_of(section)?;
        let s = &mut self.sections.list[i];
        if s.refs == 0 {
            self.report_current(
                crate::events::Rule::ObjectOverDereferenced,
                "a section object dereferenced more than referenced",
            );
            return Some(None);
        }
        s.refs -= 1;
        Some(self.maybe_destroy_section(i))
    }

    fn maybe_destroy_section(&mut self, i: usize) -> Option<usize> {
        let s = &self.sections.list[i];
        if !s.live || s.refs > 0 || !s.views.is_empty() {
            return None;
        }
        let (stream, fo, ptr) = (s.stream, s.fo, s.block.ptr() as usize);
        self.sections.list[i].live = false;
        if let Some(v) = self.sections.by_stream.get_mut(&stream) {
            v.retain(|&x| x != i);
        }
        if let Some(fcb) = self.fs.fcbs.get(&stream) {
            // SAFETY: the FCB's section object pointers.
            let sop = unsafe { crate::mem::obj(fcb.sop()) };
            if sop.DataSectionObject as usize == ptr {
                sop.DataSectionObject = std::ptr::null_mut();
            }
        }
        Some(fo)
    }

    /// Sections still alive that an image created (for leak checks at unload).
    pub fn sections_of(&self, image: ImageId) -> usize {
        self.sections.list.iter().filter(|s| s.live && s.owner == Some(image)).count()
    }
}

/// Tells the conflict hook about the open sections of a file object's stream, before I/O that
/// needs a purge (called by the file systems outside the kernel's borrow).
pub(crate) fn notify_conflicts(fo: *mut FILE_OBJECT, op: ConflictOp) {
    if fo.is_null() {
        return;
    }
    // SAFETY: a live file object of a request.
    let stream = unsafe { (*fo).FsContext } as usize;
    let (hook, open) = kernel::with(|k| (k.sections.conflict_hook, k.sections.open_on(stream)));
    if let Some(hook) = hook {
        if !open.is_empty() {
            hook(stream, &open, op);
        }
    }
}

/// Dereferences a file object outside the kernel's borrow, sending `IRP_MJ_CLOSE` if that was
/// the last reference.
pub fn release_file(fo: Option<usize>) {
    if let Some(fo) = fo {
        crate::syscalls::dereference_file(fo);
    }
}
