//! Data-scan sections created with `FsRtlCreateSectionForDataScan` (facts.md §6): the legacy
//! model's only way, and the minifilter model's fallback where `FltRegisterForDataScan` answers
//! `STATUS_NOT_SUPPORTED`. Without the Filter Manager nobody synchronizes conflicting I/O, so the
//! caller keeps a table of open sections per stream and detects conflicts itself.

use core::ffi::c_void;
use core::marker::PhantomData;

use fsfilter::{Error, SectionBackend, SectionId, Status};
use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::FsRtlCreateSectionForDataScan;
use windows_sys::Wdk::System::Memory::ViewUnmap;
use windows_sys::Wdk::System::SystemServices::ObfDereferenceObject;
use windows_sys::Win32::Foundation::{HANDLE, OBJ_KERNEL_HANDLE};

use crate::ntos;
use crate::pool::{PoolBox, pool_tag};
use crate::sync::SpinLock;

/// `SECTION_MAP_READ`.
pub const SECTION_MAP_READ: u32 = 0x0004;
/// `PAGE_READONLY`.
pub const PAGE_READONLY: u32 = 0x02;
/// `SEC_COMMIT`.
pub const SEC_COMMIT: u32 = 0x0800_0000;
/// `NtCurrentProcess()`.
pub const CURRENT_PROCESS: HANDLE = -1isize as HANDLE;

/// The `ObjectAttributes` of a data-scan section: no name, `OBJ_KERNEL_HANDLE`. Without the flag
/// the section handle is a user handle of whatever process the caller runs in (facts.md §6),
/// which that process can close or duplicate.
pub const fn section_attributes() -> OBJECT_ATTRIBUTES {
    OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: core::ptr::null(),
        Attributes: OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null(),
        SecurityQualityOfService: core::ptr::null(),
    }
}
/// How many sections one driver can hold open at once.
pub const MAX_SECTIONS: usize = 32;
/// Pool tag of fallback section records.
pub const SECTION_TAG: u32 = pool_tag(b"FsfS");

/// How a section was created, and so how it is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionOrigin {
    /// `FsRtlCreateSectionForDataScan`: closed with `ZwClose` + `ObDereferenceObject`; the record
    /// is a pool block.
    FsRtl,
    /// `FltCreateSectionForDataScan`: closed with `FltCloseSectionForDataScan`; the record lives
    /// in a section context the minifilter backend releases.
    FilterManager,
}

/// An open data-scan section.
pub struct SectionState {
    /// The mapped view (null until mapped, and after unmapping).
    pub base: *mut c_void,
    /// The view's useful size in bytes.
    pub size: usize,
    /// The section handle.
    pub handle: HANDLE,
    /// The referenced section object.
    pub object: *mut c_void,
    /// Conflicting I/O asked for the section to be closed.
    pub conflicted: bool,
    /// The section (handle) is closed; the view may still be mapped.
    pub closed: bool,
    /// How it was created.
    pub origin: SectionOrigin,
}

/// What closing a section takes, taken out of its record under the table's lock
/// ([`SectionState::begin_close`]) and closed outside it: `ZwClose` and
/// `FltCloseSectionForDataScan` need `PASSIVE_LEVEL`, and the table's spin lock raises to
/// `DISPATCH_LEVEL`.
#[derive(Clone, Copy, Debug)]
pub struct Closing {
    /// How the section was created.
    pub origin: SectionOrigin,
    /// The section handle (null when not known yet).
    pub handle: HANDLE,
    /// The referenced section object (null when not known yet).
    pub object: *mut c_void,
}

impl Closing {
    /// Closes the handle and drops the object reference. For a Filter Manager section the
    /// minifilter backend calls `FltCloseSectionForDataScan` first; the handle and the object
    /// are still the caller's to close (facts.md §6).
    ///
    /// # Safety
    /// `PASSIVE_LEVEL`; the handle and object came from the section's creation and are closed
    /// once (`begin_close` hands them out once).
    pub unsafe fn finish(self) {
        if !self.handle.is_null() {
            // SAFETY: the section's handle, closed once.
            let _ = unsafe { ntos::ZwClose(self.handle) };
        }
        if !self.object.is_null() {
            // SAFETY: the referenced section object, dereferenced once.
            unsafe { ObfDereferenceObject(self.object) };
        }
    }
}

impl SectionState {
    /// Marks the section closed and hands out what to close, once: `None` when it was closed
    /// already.
    pub fn begin_close(&mut self) -> Option<Closing> {
        if self.closed {
            return None;
        }
        self.closed = true;
        let closing = Closing { origin: self.origin, handle: self.handle, object: self.object };
        self.handle = core::ptr::null_mut();
        self.object = core::ptr::null_mut();
        Some(closing)
    }

    /// A record with nothing created yet.
    pub const fn empty(origin: SectionOrigin) -> SectionState {
        SectionState {
            base: core::ptr::null_mut(),
            size: 0,
            handle: core::ptr::null_mut(),
            object: core::ptr::null_mut(),
            conflicted: false,
            closed: false,
            origin,
        }
    }
}

/// An entry of a driver's section table; a null `record` marks a free slot.
#[derive(Clone, Copy)]
pub struct OpenSection {
    /// The record.
    pub record: *mut SectionState,
    /// The instance (minifilter instance or legacy volume device) it belongs to.
    pub owner: usize,
    /// The stream (`FileObject->FsContext`).
    pub stream: usize,
}

// SAFETY: records are non-paged memory; they are dereferenced under the table's lock or by the
// section's single owner.
unsafe impl Send for OpenSection {}

impl OpenSection {
    const FREE: OpenSection = OpenSection { record: core::ptr::null_mut(), owner: 0, stream: 0 };

    fn is_free(&self) -> bool {
        self.record.is_null()
    }

    fn is(&self, record: usize) -> bool {
        !self.is_free() && self.record as usize == record
    }
}

/// The open sections of one driver.
///
/// # Invariants
/// All-zero bytes are an empty table (null records), so it can live in zeroed pool memory.
pub struct SectionTable {
    entries: SpinLock<[OpenSection; MAX_SECTIONS]>,
}

impl SectionTable {
    /// An empty table.
    pub const fn new() -> SectionTable {
        SectionTable { entries: SpinLock::new([OpenSection::FREE; MAX_SECTIONS]) }
    }

    /// Adds a section. False when the table is full (or the record is null).
    pub fn insert(&self, open: OpenSection) -> bool {
        if open.is_free() {
            return false;
        }
        let mut t = self.entries.lock();
        match t.iter_mut().find(|s| s.is_free()) {
            Some(slot) => {
                *slot = open;
                true
            }
            None => false,
        }
    }

    /// Removes and returns a section by record address.
    pub fn take(&self, record: usize) -> Option<OpenSection> {
        let mut t = self.entries.lock();
        let slot = t.iter_mut().find(|s| s.is(record))?;
        Some(core::mem::replace(slot, OpenSection::FREE))
    }

    /// The record at `record`, if the table holds it.
    pub fn find(&self, record: usize) -> Option<*mut SectionState> {
        self.entries.lock().iter().find(|s| s.is(record)).map(|s| s.record)
    }

    /// Runs `f` on a held record under the table's lock.
    pub fn with<R>(&self, record: usize, f: impl FnOnce(&mut SectionState) -> R) -> Option<R> {
        let t = self.entries.lock();
        let open = t.iter().find(|s| s.is(record))?;
        // SAFETY: a record in the table is live until taken out; the lock serializes access.
        Some(f(unsafe { &mut *open.record }))
    }

    /// The FsRtl sections of `owner` on `stream` that an operation changing the stream's data or
    /// size conflicts with: each is marked conflicted and closed (under the lock), and returned
    /// as its record's address (the notification's section identity) with what to close outside
    /// the lock ([`Closing::finish`]).
    pub fn conflict(
        &self,
        owner: usize,
        stream: usize,
    ) -> [Option<(usize, Closing)>; MAX_SECTIONS] {
        let mut out = [None; MAX_SECTIONS];
        if stream == 0 {
            return out;
        }
        let t = self.entries.lock();
        for (slot, o) in out.iter_mut().zip(t.iter()) {
            if o.is_free() || o.owner != owner || o.stream != stream {
                continue;
            }
            // SAFETY: a live record, changed under the lock.
            let s = unsafe { &mut *o.record };
            if s.origin != SectionOrigin::FsRtl {
                continue;
            }
            if let Some(closing) = s.begin_close() {
                s.conflicted = true;
                *slot = Some((o.record as usize, closing));
            }
        }
        out
    }

    /// Sections still open (for leak checks at teardown).
    pub fn count_for(&self, owner: usize) -> usize {
        self.entries.lock().iter().filter(|s| !s.is_free() && s.owner == owner).count()
    }
}

impl Default for SectionTable {
    fn default() -> Self {
        SectionTable::new()
    }
}

/// Creates a section over `file` with `FsRtlCreateSectionForDataScan` and maps it read-only.
/// Returns the record (a pool block) and the file size.
///
/// # Safety
/// `file` must be a valid file object of the running operation.
///
/// # Context
/// `PASSIVE_LEVEL`.
pub unsafe fn create_fsrtl_section(
    file: *mut FILE_OBJECT,
) -> Result<(*mut SectionState, u64), Error> {
    let record =
        PoolBox::try_new(SectionState::empty(SectionOrigin::FsRtl), SECTION_TAG)?.into_raw();
    let mut handle: HANDLE = core::ptr::null_mut();
    let mut object: *mut c_void = core::ptr::null_mut();
    let mut size: i64 = 0;
    // SAFETY: a valid file object at PASSIVE_LEVEL; out pointers and the attributes are valid.
    let status = Status(unsafe {
        FsRtlCreateSectionForDataScan(
            &mut handle,
            &mut object,
            &mut size,
            file,
            SECTION_MAP_READ,
            &section_attributes(),
            core::ptr::null(),
            PAGE_READONLY,
            SEC_COMMIT,
            0,
        )
    });
    if let Some(e) = Error::new(status) {
        // SAFETY: the record we just allocated, not shared.
        drop(unsafe { PoolBox::from_raw(record, SECTION_TAG) });
        return Err(e);
    }
    // SAFETY: our record, in no table yet.
    let state = unsafe { &mut *record };
    state.handle = handle;
    state.object = object;
    // SAFETY: our section handle, at PASSIVE_LEVEL (the caller's contract).
    match unsafe { map_view(handle) } {
        Ok((base, view)) => {
            state.base = base;
            state.size = view;
            Ok((record, u64::try_from(size).unwrap_or(0)))
        }
        Err(e) => {
            // SAFETY: ours, not in any table.
            unsafe { teardown(record) };
            Err(e)
        }
    }
}

/// Maps section `handle` read-only into the current process: the view's base and size.
///
/// # Safety
/// `handle` must be an open section handle; `PASSIVE_LEVEL`.
pub unsafe fn map_view(handle: HANDLE) -> Result<(*mut c_void, usize), Error> {
    let mut base: *mut c_void = core::ptr::null_mut();
    let mut view: usize = 0;
    // SAFETY: an open section handle, mapped read-only into the current process.
    let status = Status(unsafe {
        ntos::ZwMapViewOfSection(
            handle,
            CURRENT_PROCESS,
            &mut base,
            0,
            0,
            core::ptr::null_mut(),
            &mut view,
            ViewUnmap,
            0,
            PAGE_READONLY,
        )
    });
    if let Some(e) = Error::new(status) {
        return Err(e);
    }
    Ok((base, view))
}

/// Unmaps a view `map_view` mapped.
///
/// # Safety
/// `base` must be a view of the current process, unmapped once; `PASSIVE_LEVEL`.
pub unsafe fn unmap_view(base: *mut c_void) {
    // SAFETY: the caller's view.
    let _ = unsafe { ntos::ZwUnmapViewOfSection(CURRENT_PROCESS, base) };
}

/// Unmaps, closes and frees an FsRtl record.
///
/// # Safety
/// `record` must be a live FsRtl record no table holds; `PASSIVE_LEVEL`.
pub unsafe fn teardown(record: *mut SectionState) {
    // SAFETY: the caller guarantees a live record, ours alone.
    let state = unsafe { &mut *record };
    unmap(state);
    if let Some(closing) = state.begin_close() {
        // SAFETY: handed out once, at PASSIVE_LEVEL.
        unsafe { closing.finish() };
    }
    // SAFETY: FsRtl records are PoolBox<SectionState> with this tag.
    drop(unsafe { PoolBox::from_raw(record, SECTION_TAG) });
}

/// Unmaps a record's view, if mapped (at `PASSIVE_LEVEL`, by the record's owner).
pub fn unmap(state: &mut SectionState) {
    if !state.base.is_null() {
        // SAFETY: a view mapped into the current process by `map_view`, unmapped once.
        unsafe { unmap_view(state.base) };
        state.base = core::ptr::null_mut();
    }
}

/// The mapped bytes of a record.
///
/// # Safety
/// `state` must be live and stay mapped for `'a`.
pub unsafe fn view<'a>(state: &SectionState) -> &'a [u8] {
    if state.base.is_null() {
        return &[];
    }
    // SAFETY: the caller guarantees the view stays mapped; it covers `size` bytes.
    unsafe { core::slice::from_raw_parts(state.base.cast::<u8>(), state.size) }
}

/// Operations that conflict with an open data-scan section: they change the file's data or size
/// and need the cache purged (non-paging writes; end-of-file and allocation changes).
pub fn conflicts_with_sections(header: &fsfilter::OperationHeader<'_>) -> bool {
    const FILE_ALLOCATION_INFORMATION: u32 = 19;
    const FILE_END_OF_FILE_INFORMATION: u32 = 20;
    match header.parameters {
        fsfilter::Parameters::Write(_) => !header.is_paging(),
        fsfilter::Parameters::SetInformation(i) => {
            matches!(i.class, FILE_ALLOCATION_INFORMATION | FILE_END_OF_FILE_INFORMATION)
        }
        _ => false,
    }
}

/// Where a backend keeps its section table, and how it tears a record down.
pub trait SectionSource: 'static {
    /// The running driver's section table.
    fn table<'a>() -> Option<&'a SectionTable>;

    /// Unmaps, closes and frees a record taken out of the table.
    ///
    /// # Safety
    /// `record` must be a live record no table holds.
    unsafe fn teardown(record: *mut SectionState);
}

/// The [`SectionBackend`] of every backend: routes [`fsfilter::ScanSection`] calls to the running
/// driver's table.
pub struct TableSections<S>(PhantomData<fn() -> S>);

impl<S: SectionSource> TableSections<S> {
    /// The backend object, for `ScanSection::new`.
    pub fn get() -> &'static dyn SectionBackend {
        const { &TableSections::<S>(PhantomData) }
    }
}

impl<S: SectionSource> SectionBackend for TableSections<S> {
    fn view(&self, id: SectionId) -> Option<&[u8]> {
        let record = S::table()?.find(id.0)?;
        // SAFETY: a record in the table is live until `close` takes it out.
        let record = unsafe { &*record };
        // SAFETY: it stays mapped until `close`, which only the owning ScanSection (borrowed for
        // the slice's lifetime) can call.
        Some(unsafe { view(record) })
    }

    fn conflicted(&self, id: SectionId) -> bool {
        S::table().and_then(|t| t.with(id.0, |s| s.conflicted)).unwrap_or(true)
    }

    fn close(&self, id: SectionId) {
        if let Some(open) = S::table().and_then(|t| t.take(id.0)) {
            // SAFETY: taken from the table: ours alone.
            unsafe { S::teardown(open.record) };
        }
    }
}
