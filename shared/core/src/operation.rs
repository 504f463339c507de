//! Operation views: a safe, checked picture of one operation's parameters, built by a backend from
//! an IRP, a fast-I/O call or an FsFilter callback, and the same type under both backends.
//!
//! Pre and post views are different types (style.md, convention 7): a pre view can be pended or
//! synchronized and carries the request's input; a post view carries the result.

use core::cell::OnceCell;
use core::fmt;

use crate::flags::{CallbackDataFlags, IrpFlags};
use crate::major::{MajorFunction, OperationKind, directory, fsctl, lock};
use crate::services::{self, Irql, PendBackend, PendReceipt, PendedOperation, Services};
use crate::services::{DeferredPost, PostBackend, PostReceipt};
use crate::status::Status;

/// A file name as UTF-16, as the kernel keeps it (`UNICODE_STRING`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileName<'a>(&'a [u16]);

impl<'a> FileName<'a> {
    /// Wraps UTF-16 units.
    pub const fn new(units: &'a [u16]) -> FileName<'a> {
        FileName(units)
    }

    /// The UTF-16 units.
    pub const fn units(&self) -> &'a [u16] {
        self.0
    }

    /// True for an empty name (an open of the volume itself when there is no related file).
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The characters, with unpaired surrogates replaced by U+FFFD.
    pub fn chars(&self) -> impl Iterator<Item = char> + Clone + 'a {
        char::decode_utf16(self.0.iter().copied()).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// Case-insensitive comparison with `other`, as NTFS compares names: each character through
    /// its upcase table, for the scripts [`fold`] covers.
    pub fn eq_ignore_case(&self, other: &str) -> bool {
        let mut mine = self.chars();
        let mut theirs = other.chars();
        loop {
            match (mine.next(), theirs.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if fold(a) == fold(b) => {}
                _ => return false,
            }
        }
    }

    /// True when the name ends with `suffix`, case-insensitively (`"*.exe"` style rules).
    pub fn ends_with_ignore_case(&self, suffix: &str) -> bool {
        let n = suffix.encode_utf16().count();
        let Some(start) = self.0.len().checked_sub(n) else { return false };
        FileName(self.0.get(start..).unwrap_or(&[])).eq_ignore_case(suffix)
    }

    /// Matches a pattern in which `*` stands for any run of characters and `?` for one
    /// character, case-insensitively (the `FsRtlIsNameInExpression` wildcards, without the DOS
    /// ones).
    pub fn matches(&self, pattern: &str) -> bool {
        // Backtracking to the last `*` only: the positions are iterator clones, so matching needs
        // no allocation and no recursion.
        let mut pat = pattern.chars();
        let mut name = self.chars();
        let mut star = None;
        loop {
            let (mut p_next, mut n_next) = (pat.clone(), name.clone());
            match (p_next.next(), n_next.next()) {
                (None, None) => return true,
                (Some('*'), _) => {
                    pat = p_next;
                    star = Some((pat.clone(), name.clone()));
                    continue;
                }
                (Some('?'), Some(_)) => {
                    (pat, name) = (p_next, n_next);
                    continue;
                }
                (Some(a), Some(b)) if fold(a) == fold(b) => {
                    (pat, name) = (p_next, n_next);
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character, or fail.
            let Some((star_pat, star_name)) = star.as_mut() else { return false };
            if star_name.next().is_none() {
                return false;
            }
            (pat, name) = (star_pat.clone(), star_name.clone());
        }
    }
}

/// Upper-case folding of one character, as NTFS's upcase table does it (the table Windows Vista
/// writes to a volume) for the scripts a model needs: ASCII, Latin-1, Latin Extended-A, Greek and
/// Coptic, Cyrillic and full-width Latin. It is not Unicode's mapping: dotless i, long s and the
/// micro sign stay as they are, so `"fıle"` and `"FILE"` are two names, as on NTFS. Other
/// characters compare exactly. (Full tables would add about 14 KiB to every driver; these runs
/// cost a few hundred bytes.)
pub(crate) const fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_uppercase();
    }
    let u = c as u32;
    let mut rest: &[(u16, u16, u16, u8)] = &UPCASE_RUNS;
    while let [(first, last, added, parity), tail @ ..] = rest {
        let odd = (u & 1) as u8;
        if u >= *first as u32 && u <= *last as u32 && (*parity == 0 || odd == *parity & 1) {
            return match char::from_u32((u as u16).wrapping_add(*added) as u32) {
                Some(up) => up,
                None => c,
            };
        }
        rest = tail;
    }
    c
}

/// The runs of [`fold`] beyond ASCII: `(first, last, added, parity)` upcases the characters
/// `first..=last` by adding `added` (wrapping: `0xFFFF` subtracts one), every one of them (parity
/// 0), the odd ones (1) or the even ones (2), where pairs alternate upper and lower case.
const UPCASE_RUNS: [(u16, u16, u16, u8); 28] = [
    (0xE0, 0xF6, 0u16.wrapping_sub(0x20), 0),
    (0xF8, 0xFE, 0u16.wrapping_sub(0x20), 0),
    (0xFF, 0xFF, 0x178 - 0xFF, 0),
    // Latin Extended-A: dotless i (0x131), kra (0x138) and long s (0x17F) stay.
    (0x100, 0x12F, 0xFFFF, 1),
    (0x132, 0x137, 0xFFFF, 1),
    (0x139, 0x148, 0xFFFF, 2),
    (0x14A, 0x177, 0xFFFF, 1),
    (0x179, 0x17E, 0xFFFF, 2),
    // Greek and Coptic: the reversed lunate sigmas, the vowels with tonos, the alphabet, final
    // sigma, the archaic and Coptic pairs, lunate sigma.
    (0x37B, 0x37D, 0x3FD - 0x37B, 0),
    (0x3AC, 0x3AC, 0u16.wrapping_sub(0x3AC - 0x386), 0),
    (0x3AD, 0x3AF, 0u16.wrapping_sub(0x3AD - 0x388), 0),
    (0x3B1, 0x3C1, 0u16.wrapping_sub(0x20), 0),
    (0x3C2, 0x3C2, 0u16.wrapping_sub(0x3C2 - 0x3A3), 0),
    (0x3C3, 0x3CB, 0u16.wrapping_sub(0x20), 0),
    (0x3CC, 0x3CC, 0u16.wrapping_sub(0x3CC - 0x38C), 0),
    (0x3CD, 0x3CE, 0u16.wrapping_sub(0x3CD - 0x38E), 0),
    (0x3D8, 0x3EF, 0xFFFF, 1),
    (0x3F2, 0x3F2, 0x3F9 - 0x3F2, 0),
    (0x3F8, 0x3F8, 0xFFFF, 0),
    (0x3FB, 0x3FB, 0xFFFF, 0),
    // Cyrillic and its supplement: the basic block, the pairs, the palochka.
    (0x430, 0x44F, 0u16.wrapping_sub(0x20), 0),
    (0x450, 0x45F, 0u16.wrapping_sub(0x50), 0),
    (0x460, 0x481, 0xFFFF, 1),
    (0x48A, 0x4BF, 0xFFFF, 1),
    (0x4C1, 0x4CE, 0xFFFF, 2),
    (0x4CF, 0x4CF, 0u16.wrapping_sub(0x4CF - 0x4C0), 0),
    (0x4D0, 0x513, 0xFFFF, 1),
    // Full-width Latin.
    (0xFF41, 0xFF5A, 0u16.wrapping_sub(0x20), 0),
];

impl fmt::Display for FileName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        self.chars().try_for_each(|c| f.write_char(c))
    }
}

impl fmt::Debug for FileName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Who issued the request (`KPROCESSOR_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestorMode {
    /// `KernelMode`.
    Kernel,
    /// `UserMode`.
    User,
}

/// The operation's data buffer, behind checked accessors.
///
/// A backend exposes a buffer only when the kernel rules make it safe to touch from the callback:
/// a system buffer, or an MDL it could map. A user-mode buffer of a request issued without a
/// system buffer or an MDL is [`Buffer::User`]: it is valid only in the requester's process,
/// under an exception handler, which safe Rust cannot give.
#[derive(Default)]
pub enum Buffer<'a> {
    /// The operation has no data buffer.
    #[default]
    None,
    /// Readable data (the data of a write, or of a completed read).
    Readable(&'a [u8]),
    /// Data the filter may change in place (a system or MDL buffer of a completed read).
    Writable(&'a mut [u8]),
    /// A user-mode buffer that is not mapped for the kernel.
    User,
}

impl Buffer<'_> {
    /// The bytes, when accessible.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Buffer::Readable(b) => Some(b),
            Buffer::Writable(b) => Some(b),
            Buffer::None | Buffer::User => None,
        }
    }

    /// The bytes for in-place change, when the buffer allows it.
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match self {
            Buffer::Writable(b) => Some(b),
            _ => None,
        }
    }
}

impl fmt::Debug for Buffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Buffer::None => f.write_str("None"),
            Buffer::Readable(b) => write!(f, "Readable({} bytes)", b.len()),
            Buffer::Writable(b) => write!(f, "Writable({} bytes)", b.len()),
            Buffer::User => f.write_str("User"),
        }
    }
}

/// Where an operation's buffer comes from when a backend maps it on demand: a callback whose
/// filter never asks for the data maps nothing. Mapping is not free on Windows: a paging read's
/// MDL is not mapped to system space, and `MmGetSystemAddressForMdlSafe` would take system PTEs
/// for it on every callback of every filter in the stack.
pub trait BufferSource<'a> {
    /// The buffer. [`OperationBuffer`] calls it at most once; an implementation that hands out
    /// `Buffer::Writable` answers `Buffer::None` to any later call, so that two mutable views of
    /// the same memory never exist.
    fn map(&self) -> Buffer<'a>;
}

/// An operation's buffer as [`PreOperation`] and [`PostOperation`] hold it: ready, or mapped by
/// its [`BufferSource`] on first use.
pub struct OperationBuffer<'a> {
    cell: OnceCell<Buffer<'a>>,
    source: Option<&'a dyn BufferSource<'a>>,
    /// What [`OperationBuffer::get_mut`] answers if the cell could not be filled (never: it is
    /// filled just before).
    none: Buffer<'a>,
}

impl<'a> OperationBuffer<'a> {
    /// A buffer known now.
    pub fn ready(buffer: Buffer<'a>) -> OperationBuffer<'a> {
        OperationBuffer { cell: OnceCell::from(buffer), source: None, none: Buffer::None }
    }

    /// A buffer `source` maps the first time filter logic asks for it.
    pub fn on_demand(source: &'a dyn BufferSource<'a>) -> OperationBuffer<'a> {
        OperationBuffer { cell: OnceCell::new(), source: Some(source), none: Buffer::None }
    }

    /// True once the buffer is known (ready, or mapped by a first access).
    pub fn is_mapped(&self) -> bool {
        self.cell.get().is_some()
    }

    fn map(&self) -> Buffer<'a> {
        self.source.map_or(Buffer::None, |s| s.map())
    }

    /// The buffer, mapped now if it was not yet.
    pub fn get(&self) -> &Buffer<'a> {
        // Not `OnceCell::get_or_init`, which panics when the source re-enters (it may reach this
        // buffer through the filter's state): a kernel path may have no panic. Whichever access
        // fills the cell first wins; a value mapped after it is dropped.
        if self.cell.get().is_none() {
            let buffer = self.map();
            let _ = self.cell.set(buffer);
        }
        self.cell.get().unwrap_or(&self.none)
    }

    /// The buffer for in-place change, mapped now if it was not yet.
    pub fn get_mut(&mut self) -> &mut Buffer<'a> {
        if self.cell.get().is_none() {
            let buffer = self.map();
            self.cell = OnceCell::from(buffer);
        }
        match self.cell.get_mut() {
            Some(b) => b,
            None => &mut self.none,
        }
    }
}

impl<'a> From<Buffer<'a>> for OperationBuffer<'a> {
    fn from(buffer: Buffer<'a>) -> OperationBuffer<'a> {
        OperationBuffer::ready(buffer)
    }
}

impl fmt::Debug for OperationBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printing does not map.
        match self.cell.get() {
            Some(b) => b.fmt(f),
            None => f.write_str("NotMapped"),
        }
    }
}

/// `IRP_MJ_CREATE` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CreateParameters {
    /// `DesiredAccess`.
    pub desired_access: u32,
    /// `Options`: the create disposition in the high 8 bits, the create options in the low 24.
    pub options: u32,
    /// `ShareAccess`.
    pub share_access: u16,
    /// `FileAttributes`.
    pub file_attributes: u16,
    /// `AllocationSize`.
    pub allocation_size: i64,
}

impl CreateParameters {
    /// The create disposition (`FILE_SUPERSEDE` 0 ... `FILE_OVERWRITE_IF` 5).
    pub const fn disposition(&self) -> u32 {
        self.options >> 24
    }

    /// The create options (`FILE_DIRECTORY_FILE`, ...).
    pub const fn create_options(&self) -> u32 {
        self.options & 0x00FF_FFFF
    }
}

/// What a create that ends `STATUS_REPARSE` carries in its `Information` (ntifs.h).
pub mod reparse {
    /// The file object's name was replaced: the I/O manager parses it again from the root.
    pub const IO_REPARSE: usize = 0;
    /// A mount point or junction (`IO_REPARSE_TAG_MOUNT_POINT`).
    pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
    /// A symbolic link (`IO_REPARSE_TAG_SYMLINK`).
    pub const TAG_SYMLINK: u32 = 0xA000_000C;
}

/// Create dispositions and options the model names.
pub mod create {
    /// `FILE_SUPERSEDE`.
    pub const FILE_SUPERSEDE: u32 = 0;
    /// `FILE_OPEN`.
    pub const FILE_OPEN: u32 = 1;
    /// `FILE_CREATE`.
    pub const FILE_CREATE: u32 = 2;
    /// `FILE_OPEN_IF`.
    pub const FILE_OPEN_IF: u32 = 3;
    /// `FILE_OVERWRITE`.
    pub const FILE_OVERWRITE: u32 = 4;
    /// `FILE_OVERWRITE_IF`.
    pub const FILE_OVERWRITE_IF: u32 = 5;
    /// `FILE_DIRECTORY_FILE`.
    pub const FILE_DIRECTORY_FILE: u32 = 0x1;
    /// `FILE_NON_DIRECTORY_FILE`.
    pub const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
    /// `FILE_DELETE_ON_CLOSE`.
    pub const FILE_DELETE_ON_CLOSE: u32 = 0x1000;
    /// `FILE_OPENED` (information of a successful create).
    pub const FILE_OPENED: usize = 1;
    /// `FILE_CREATED`.
    pub const FILE_CREATED: usize = 2;
    /// `FILE_OVERWRITTEN`.
    pub const FILE_OVERWRITTEN: usize = 3;
}

/// `IRP_MJ_READ` / `IRP_MJ_WRITE` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReadWriteParameters {
    /// `ByteOffset`.
    pub offset: i64,
    /// `Length`.
    pub length: u32,
    /// `Key`.
    pub key: u32,
}

/// `IRP_MJ_QUERY_INFORMATION`, `IRP_MJ_SET_INFORMATION`, `IRP_MJ_QUERY_VOLUME_INFORMATION` and
/// `IRP_MJ_SET_VOLUME_INFORMATION` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct InformationParameters {
    /// The information class (`FILE_INFORMATION_CLASS` or `FS_INFORMATION_CLASS`).
    pub class: u32,
    /// `Length`.
    pub length: u32,
}

/// `IRP_MJ_FILE_SYSTEM_CONTROL`, `IRP_MJ_DEVICE_CONTROL` and `IRP_MJ_INTERNAL_DEVICE_CONTROL`
/// parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ControlParameters {
    /// The FSCTL or IOCTL code (zero for FSCTL minors other than `IRP_MN_USER_FS_REQUEST` and
    /// `IRP_MN_KERNEL_CALL`).
    pub code: u32,
    /// `InputBufferLength`.
    pub input_length: u32,
    /// `OutputBufferLength`.
    pub output_length: u32,
}

/// `IRP_MJ_LOCK_CONTROL` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LockParameters {
    /// `ByteOffset`.
    pub offset: i64,
    /// `Length`.
    pub length: i64,
    /// `Key`.
    pub key: u32,
}

/// `IRP_MJ_DIRECTORY_CONTROL` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DirectoryParameters {
    /// `FileInformationClass` (query) or `CompletionFilter` (notify).
    pub class: u32,
    /// `Length`.
    pub length: u32,
}

/// `IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION` parameters (`FLT_PARAMETERS`'
/// `AcquireForSectionSynchronization`, `FS_FILTER_PARAMETERS`' under the legacy backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SectionSyncParameters {
    /// `SyncType`: [`section_sync::SYNC_TYPE_CREATE_SECTION`] when a section is being created,
    /// [`section_sync::SYNC_TYPE_OTHER`] otherwise.
    pub sync_type: u32,
    /// `PageProtection`: the section's page protection (`PAGE_READONLY`, `PAGE_EXECUTE_READ`,
    /// ...); zero for [`section_sync::SYNC_TYPE_OTHER`].
    pub page_protection: u32,
}

impl SectionSyncParameters {
    /// The section being created may be executed: its protection is one of the `PAGE_EXECUTE*`
    /// values (what an anti-malware filter checks before it refuses a mapping).
    pub const fn executable(&self) -> bool {
        self.page_protection & section_sync::PAGE_EXECUTE_ANY != 0
    }
}

/// `IRP_MJ_ACQUIRE_FOR_MOD_WRITE` parameters (`FLT_PARAMETERS`' `AcquireForModifiedPageWriter`,
/// `FS_FILTER_PARAMETERS`' under the legacy backend): what the modified-page writer is about to
/// write. `ResourceToRelease` is the file system's to fill, not presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ModWriteParameters {
    /// `*EndingOffset`: the end of the paging write that follows (its offset plus its length).
    pub ending_offset: i64,
}

/// `FS_FILTER_SECTION_SYNC_TYPE` values and the page protections the model names.
pub mod section_sync {
    /// `SyncTypeOther`.
    pub const SYNC_TYPE_OTHER: u32 = 0;
    /// `SyncTypeCreateSection`.
    pub const SYNC_TYPE_CREATE_SECTION: u32 = 1;
    /// `PAGE_READONLY`.
    pub const PAGE_READONLY: u32 = 0x02;
    /// `PAGE_READWRITE`.
    pub const PAGE_READWRITE: u32 = 0x04;
    /// `PAGE_WRITECOPY`.
    pub const PAGE_WRITECOPY: u32 = 0x08;
    /// `PAGE_EXECUTE`.
    pub const PAGE_EXECUTE: u32 = 0x10;
    /// `PAGE_EXECUTE_READ`.
    pub const PAGE_EXECUTE_READ: u32 = 0x20;
    /// `PAGE_EXECUTE_READWRITE`.
    pub const PAGE_EXECUTE_READWRITE: u32 = 0x40;
    /// `PAGE_EXECUTE_WRITECOPY`.
    pub const PAGE_EXECUTE_WRITECOPY: u32 = 0x80;
    /// Every `PAGE_EXECUTE*` bit.
    pub const PAGE_EXECUTE_ANY: u32 =
        PAGE_EXECUTE | PAGE_EXECUTE_READ | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY;
}

/// The parameters of an operation, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Parameters {
    /// `IRP_MJ_CREATE`.
    Create(CreateParameters),
    /// `IRP_MJ_READ`.
    Read(ReadWriteParameters),
    /// `IRP_MJ_WRITE`.
    Write(ReadWriteParameters),
    /// `IRP_MJ_QUERY_INFORMATION`.
    QueryInformation(InformationParameters),
    /// `IRP_MJ_SET_INFORMATION`.
    SetInformation(InformationParameters),
    /// `IRP_MJ_QUERY_VOLUME_INFORMATION`.
    QueryVolumeInformation(InformationParameters),
    /// `IRP_MJ_SET_VOLUME_INFORMATION`.
    SetVolumeInformation(InformationParameters),
    /// `IRP_MJ_DIRECTORY_CONTROL`.
    DirectoryControl(DirectoryParameters),
    /// `IRP_MJ_FILE_SYSTEM_CONTROL`.
    FileSystemControl(ControlParameters),
    /// `IRP_MJ_DEVICE_CONTROL` and `IRP_MJ_INTERNAL_DEVICE_CONTROL`.
    DeviceControl(ControlParameters),
    /// `IRP_MJ_LOCK_CONTROL`.
    LockControl(LockParameters),
    /// `IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`.
    AcquireForSectionSynchronization(SectionSyncParameters),
    /// `IRP_MJ_ACQUIRE_FOR_MOD_WRITE`.
    AcquireForModWrite(ModWriteParameters),
    /// Operations without parameters the model reads (cleanup, close, flush, shutdown, the
    /// pseudo-operations, ...).
    #[default]
    None,
}

/// What every view shares: which operation, how it arrived, on which file.
#[derive(Clone, Copy, Debug)]
pub struct OperationHeader<'a> {
    /// The major function.
    pub major: MajorFunction,
    /// The minor function.
    pub minor: u8,
    /// IRP, fast I/O or FsFilter callback.
    pub kind: OperationKind,
    /// The IRP's flags (empty for fast I/O and FsFilter callbacks).
    pub irp_flags: IrpFlags,
    /// The callback data's flags: the Filter Manager's own under the minifilter backend; only
    /// `IRP_OPERATION`, `FAST_IO_OPERATION` or `FS_FILTER_OPERATION` under the legacy backend
    /// (docs/semantics.md, header).
    pub data_flags: CallbackDataFlags,
    /// Who issued the request: the IRP's `RequestorMode`; for fast I/O the Filter Manager's
    /// choice under the minifilter backend, and `User` under the legacy backend, whose fast-I/O
    /// routines are not told (docs/semantics.md, header).
    pub requestor_mode: RequestorMode,
    /// The name the file was opened with (`FileObject->FileName`), relative to the volume; valid
    /// in pre-create, and kept by Windows afterwards, where it is informative only.
    pub file_name: Option<FileName<'a>>,
    /// The file object was opened on the volume itself (DASD).
    pub volume_open: bool,
    /// The file object's identity (its address), 0 when the operation has none.
    pub file: usize,
    /// The stream's identity (`FileObject->FsContext`): the same for every file object open on
    /// one stream, 0 before the file system has opened it (pre-create) or without a file.
    pub stream: usize,
    /// The parameters.
    pub parameters: Parameters,
    /// The IRQL the callback runs at.
    pub irql: Irql,
    /// The issuer waits for the operation: `FltIsOperationSynchronous` under the minifilter
    /// backend, `IoIsOperationSynchronous` under the legacy backend, which answer alike (their
    /// reference pages). FALSE for a read or write on a file object opened for asynchronous
    /// (overlapped) I/O and for asynchronous paging I/O; TRUE for fast I/O and FsFilter
    /// callbacks. It says nothing of a `Synchronize` a pre callback returned (docs/semantics.md,
    /// asynchronous-io).
    pub synchronous: bool,
    /// The backend's identity for the operation (IRP or callback-data address), for traces.
    pub id: usize,
}

impl OperationHeader<'_> {
    /// Paging I/O (`IRP_PAGING_IO`).
    pub const fn is_paging(&self) -> bool {
        self.irp_flags.contains(IrpFlags::PAGING_IO)
    }

    /// Non-cached I/O (`IRP_NOCACHE`).
    pub const fn is_noncached(&self) -> bool {
        self.irp_flags.contains(IrpFlags::NOCACHE)
    }

    /// A cached read or write: neither non-cached nor paging. Every fast-I/O read and write is
    /// cached (facts.md §3).
    pub const fn is_cached(&self) -> bool {
        self.major.is_read_or_write() && !self.is_noncached() && !self.is_paging()
    }

    /// A fast-I/O operation.
    pub const fn is_fast_io(&self) -> bool {
        matches!(self.kind, OperationKind::FastIo)
    }

    /// A mount request (`IRP_MJ_FILE_SYSTEM_CONTROL` / `IRP_MN_MOUNT_VOLUME`, or the Filter
    /// Manager's `IRP_MJ_VOLUME_MOUNT`).
    pub const fn is_mount(&self) -> bool {
        matches!(self.major, MajorFunction::VolumeMount)
            || (matches!(self.major, MajorFunction::FileSystemControl)
                && self.minor == fsctl::MOUNT_VOLUME)
    }

    /// A directory-change notification (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`), which may not be
    /// synchronized (facts.md §4).
    pub const fn is_notify_change_directory(&self) -> bool {
        matches!(self.major, MajorFunction::DirectoryControl)
            && self.minor == directory::NOTIFY_CHANGE_DIRECTORY
    }

    /// Whether a pre callback's `Synchronize` may be honoured: not for a byte-range lock request
    /// (`IRP_MN_LOCK`), a directory-change notification or an oplock request, which may wait
    /// below indefinitely for another requester (facts.md §4: `FLT_PREOP_SYNCHRONIZE` is illegal
    /// for them). The backends give those a post callback as for `WithPost` instead
    /// (docs/callback-model.md, rule 11).
    pub fn may_synchronize(&self) -> bool {
        let code = match self.parameters {
            Parameters::FileSystemControl(c) => c.code,
            _ => 0,
        };
        may_synchronize(self.major.code(), self.minor, code)
    }
}

/// [`OperationHeader::may_synchronize`] from the codes alone (the major function's code):
/// `fs_control_code` is the FSCTL code of an `IRP_MJ_FILE_SYSTEM_CONTROL` user or kernel request
/// (ignored otherwise).
#[inline]
pub const fn may_synchronize(major: u8, minor: u8, fs_control_code: u32) -> bool {
    const LOCK: u8 = MajorFunction::LockControl.code();
    const DIRECTORY: u8 = MajorFunction::DirectoryControl.code();
    const FSCTL: u8 = MajorFunction::FileSystemControl.code();
    match (major, minor) {
        (LOCK, lock::LOCK) | (DIRECTORY, directory::NOTIFY_CHANGE_DIRECTORY) => false,
        (FSCTL, fsctl::USER_FS_REQUEST | fsctl::KERNEL_CALL) => {
            !fsctl::is_oplock_request(fs_control_code)
        }
        _ => true,
    }
}

/// An operation's header as the views hand it out: built by the backend on first use, so that
/// filter logic which never reads it (a passthrough) costs nothing for it, or handed over built
/// (the legacy backend's fast I/O, whose header comes from the routine's arguments, and tests).
/// The major function and the operation's identity are kept beside it: the views answer
/// them without building anything. Built on first use means read from the operation then, and
/// kept: a post-create that cancels the open before first reading the header sees the operation
/// as the cancel left it (docs/callback-model.md, rule 17).
pub struct LazyHeader<'a> {
    major: MajorFunction,
    id: usize,
    header: HeaderState<'a>,
}

enum HeaderState<'a> {
    Ready(OperationHeader<'a>),
    OnDemand { cell: OnceCell<OperationHeader<'a>>, source: &'a dyn HeaderSource<'a> },
}

/// What [`LazyHeader::get`] answers if its cell is still empty right after being filled (never).
const UNBUILT: OperationHeader<'static> = OperationHeader {
    major: MajorFunction::Unknown(0xFF),
    minor: 0,
    kind: OperationKind::Irp,
    irp_flags: IrpFlags::empty(),
    data_flags: CallbackDataFlags::empty(),
    requestor_mode: RequestorMode::Kernel,
    file_name: None,
    volume_open: false,
    file: 0,
    stream: 0,
    parameters: Parameters::None,
    irql: Irql::PASSIVE,
    synchronous: true,
    id: 0,
};

/// Where a backend builds an operation's header from when the views first ask for it (the
/// callback data or the IRP, which the backend's implementation reads).
pub trait HeaderSource<'a> {
    /// The operation's header, read now.
    fn header(&self) -> OperationHeader<'a>;
}

impl<'a> LazyHeader<'a> {
    /// A header already built.
    pub fn ready(header: OperationHeader<'a>) -> LazyHeader<'a> {
        LazyHeader { major: header.major, id: header.id, header: HeaderState::Ready(header) }
    }

    /// A header `source` builds when first asked for. `major` and `id` must be what it would
    /// say ([`OperationHeader::major`], [`OperationHeader::id`]).
    pub fn on_demand(
        source: &'a dyn HeaderSource<'a>,
        major: MajorFunction,
        id: usize,
    ) -> LazyHeader<'a> {
        LazyHeader { major, id, header: HeaderState::OnDemand { cell: OnceCell::new(), source } }
    }

    /// The header, built now if it was not yet.
    pub fn get(&self) -> &OperationHeader<'a> {
        match &self.header {
            HeaderState::Ready(h) => h,
            HeaderState::OnDemand { cell, source } => {
                // Not `OnceCell::get_or_init`, which has a panic path (re-entrant
                // initialization): a kernel path may have none, and a source cannot re-enter.
                if cell.get().is_none() {
                    let _ = cell.set(source.header());
                }
                cell.get().unwrap_or(const { &UNBUILT })
            }
        }
    }

    /// True once the header exists (built, or handed over built).
    pub fn is_built(&self) -> bool {
        match &self.header {
            HeaderState::Ready(_) => true,
            HeaderState::OnDemand { cell, .. } => cell.get().is_some(),
        }
    }

    /// The major function, without building the header.
    pub const fn major(&self) -> MajorFunction {
        self.major
    }

    /// The operation's identity ([`OperationHeader::id`]), without building the header.
    pub const fn id(&self) -> usize {
        self.id
    }
}

impl fmt::Debug for LazyHeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.get(), f)
    }
}

/// An operation in its pre phase, as a filter's `pre_operation` sees it. `C` is the filter's
/// completion context, which a pended operation carries to its post callback.
pub struct PreOperation<'a, C: 'static = ()> {
    header: &'a LazyHeader<'a>,
    buffer: OperationBuffer<'a>,
    services: &'a dyn Services,
    pender: Option<&'static dyn PendBackend<C>>,
}

impl<'a, C: 'static> PreOperation<'a, C> {
    /// Built by a backend, around the header it keeps on its stack (borrowed: the backend reads
    /// it again after the callback, and moving it costs every callback). `pender` is `None` where
    /// the operation cannot be pended.
    pub fn new(
        header: &'a LazyHeader<'a>,
        buffer: OperationBuffer<'a>,
        services: &'a dyn Services,
        pender: Option<&'static dyn PendBackend<C>>,
    ) -> Self {
        PreOperation { header, buffer, services, pender }
    }

    /// Pends the operation (`FLT_PREOP_PENDING`): keep the [`PendedOperation`], answer
    /// [`crate::PreOutcome::Pending`] with the receipt. `None` for operations that cannot be pended
    /// (fast I/O and FsFilter operations are IRP-less, facts.md §4) or that already are.
    pub fn pend(&mut self) -> Option<(PendedOperation<C>, PendReceipt)> {
        services::pend(self.header.id(), self.pender?)
    }

    /// Which operation, how, on which file (built on first use).
    pub fn header(&self) -> &OperationHeader<'a> {
        self.header.get()
    }

    /// The major function.
    pub const fn major(&self) -> MajorFunction {
        self.header.major()
    }

    /// The parameters.
    pub fn parameters(&self) -> &Parameters {
        &self.header.get().parameters
    }

    /// The file name, where known.
    pub fn file_name(&self) -> Option<FileName<'a>> {
        self.header.get().file_name
    }

    /// The data of a write (readable), mapped on first use by backends that map on demand.
    pub fn buffer(&self) -> &Buffer<'a> {
        self.buffer.get()
    }

    /// Backend services for this operation.
    pub fn services(&self) -> &'a dyn Services {
        self.services
    }
}

impl<C> fmt::Debug for PreOperation<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreOperation")
            .field("header", self.header)
            .field("buffer", &self.buffer)
            .finish()
    }
}

/// The result of a completed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoStatus {
    /// `IoStatus.Status`.
    pub status: Status,
    /// `IoStatus.Information`.
    pub information: usize,
}

impl IoStatus {
    /// A status with no information.
    pub const fn new(status: Status) -> IoStatus {
        IoStatus { status, information: 0 }
    }

    /// `STATUS_REPARSE` with `IO_REPARSE` ([`reparse::IO_REPARSE`]): how a pre-create callback
    /// completes a create after [`crate::Services::replace_file_name`], so that the I/O manager
    /// parses the file object's new name (rule 27).
    pub const fn reparse() -> IoStatus {
        IoStatus { status: Status::REPARSE, information: reparse::IO_REPARSE }
    }

    /// Whether a create that ended with this result opened a file: `NT_SUCCESS` and not
    /// `STATUS_REPARSE`. A create that ended `STATUS_REPARSE` (a filter's redirection or a
    /// reparse point the file system met) opened nothing: its file object is freed without a
    /// cleanup or close, and the I/O manager opens another name (rule 27).
    pub const fn opened(&self) -> bool {
        self.status.is_success() && self.status.0 != Status::REPARSE.0
    }

    /// The status a request is really completed with when filter logic completes it with this
    /// one (docs/callback-model.md, rules 5 and 13): `STATUS_PENDING` and
    /// `STATUS_FLT_DISALLOW_FAST_IO` are not completion statuses and become
    /// `STATUS_INVALID_DEVICE_STATE`; cleanup and close cannot fail, so a failure there, that one
    /// included, becomes `STATUS_SUCCESS`.
    #[inline(never)] // one copy for every backend path that completes
    pub const fn for_completion(self, cleanup_or_close: bool) -> IoStatus {
        let reserved =
            self.status.0 == Status::PENDING.0 || self.status.0 == Status::FLT_DISALLOW_FAST_IO.0;
        if cleanup_or_close && (reserved || !self.status.is_success()) {
            IoStatus::new(Status::SUCCESS)
        } else if reserved {
            IoStatus::new(Status::INVALID_DEVICE_STATE)
        } else {
            self
        }
    }
}

/// An operation in its post phase, as a filter's `post_operation` sees it.
pub struct PostOperation<'a> {
    header: &'a LazyHeader<'a>,
    result: IoStatus,
    buffer: OperationBuffer<'a>,
    services: &'a dyn Services,
    deferrer: Option<&'static dyn PostBackend>,
}

impl<'a> PostOperation<'a> {
    /// Built by a backend, around the header it keeps (borrowed, as for [`PreOperation::new`]).
    /// `deferrer` is `None` where completion cannot be deferred.
    pub fn new(
        header: &'a LazyHeader<'a>,
        result: IoStatus,
        buffer: OperationBuffer<'a>,
        services: &'a dyn Services,
        deferrer: Option<&'static dyn PostBackend>,
    ) -> Self {
        PostOperation { header, result, buffer, services, deferrer }
    }

    /// Defers completion (`FLT_POSTOP_MORE_PROCESSING_REQUIRED`): keep the [`DeferredPost`],
    /// answer [`crate::PostOutcome::MoreProcessing`] with the receipt. `None` where it is not
    /// allowed (IRP-based operations only, never while draining, facts.md §4).
    pub fn defer(&mut self) -> Option<(DeferredPost, PostReceipt)> {
        services::defer_post(self.header.id(), self.deferrer?)
    }

    /// Which operation, how, on which file (built on first use).
    pub fn header(&self) -> &OperationHeader<'a> {
        self.header.get()
    }

    /// The major function.
    pub const fn major(&self) -> MajorFunction {
        self.header.major()
    }

    /// The result.
    pub const fn result(&self) -> IoStatus {
        self.result
    }

    /// Whether this is the post of a create that opened a file ([`IoStatus::opened`]: not a
    /// failure and not `STATUS_REPARSE`, rule 27): what a post-create callback tests before it
    /// scans, asks about, names or cancels the open.
    pub fn opened(&self) -> bool {
        self.header.major() == MajorFunction::Create && self.result.opened()
    }

    /// The file name, where known.
    pub fn file_name(&self) -> Option<FileName<'a>> {
        self.header.get().file_name
    }

    /// The data a read returned (up to `information` bytes), when accessible; mapped on first
    /// use by backends that map on demand.
    pub fn buffer(&self) -> &Buffer<'a> {
        self.buffer.get()
    }

    /// The data a read returned, for in-place change, when the buffer allows it.
    pub fn buffer_mut(&mut self) -> &mut Buffer<'a> {
        self.buffer.get_mut()
    }

    /// Backend services for this operation.
    pub fn services(&self) -> &'a dyn Services {
        self.services
    }
}

impl fmt::Debug for PostOperation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostOperation")
            .field("header", self.header)
            .field("result", &self.result)
            .field("buffer", &self.buffer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn utf16(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn a_reparsed_create_is_a_success_that_opened_nothing() {
        let r = IoStatus::reparse();
        assert_eq!((r.status, r.information), (Status::REPARSE, reparse::IO_REPARSE));
        assert!(r.status.is_success() && !r.opened());
        assert!(IoStatus::new(Status::SUCCESS).opened());
        assert!(IoStatus::new(Status::OBJECT_NAME_EXISTS).opened());
        assert!(!IoStatus::new(Status::ACCESS_DENIED).opened());
        // A mount point the file system met carries its tag: still not open.
        let tagged = IoStatus { status: Status::REPARSE, information: 0xA000_0003 };
        assert!(!tagged.opened());
        // A completion with it is a completion like any other (rule 27).
        assert_eq!(r.for_completion(false), r);
    }

    #[test]
    fn lock_requests_change_notifications_and_oplock_fsctls_may_not_be_synchronized() {
        const DIRECTORY: u8 = MajorFunction::DirectoryControl.code();
        const FSCTL: u8 = MajorFunction::FileSystemControl.code();
        const LOCK: u8 = MajorFunction::LockControl.code();
        const READ: u8 = MajorFunction::Read.code();
        assert!(!may_synchronize(LOCK, lock::LOCK, 0));
        assert!(may_synchronize(LOCK, lock::UNLOCK_SINGLE, 0));
        assert!(!may_synchronize(DIRECTORY, directory::NOTIFY_CHANGE_DIRECTORY, 0));
        assert!(may_synchronize(DIRECTORY, directory::QUERY_DIRECTORY, 0));
        for code in fsctl::OPLOCK_REQUESTS {
            assert!(!may_synchronize(FSCTL, fsctl::USER_FS_REQUEST, code), "{code:#x}");
            assert!(!may_synchronize(FSCTL, fsctl::KERNEL_CALL, code), "{code:#x}");
            // The same number is no oplock request for another minor or another operation.
            assert!(may_synchronize(FSCTL, fsctl::MOUNT_VOLUME, code));
            assert!(may_synchronize(READ, 0, code));
        }
        // FSCTL_GET_RETRIEVAL_POINTERS.
        assert!(may_synchronize(FSCTL, fsctl::USER_FS_REQUEST, 0x0009_0073));
        // The test without a search answers as the list, for every function of the device type,
        // every method and access, and other device types.
        for function in 0..0x1000u32 {
            for low in [0, 1, 2, 3, 0x4000, 0xC000] {
                for device in [0x9u32, 0x7, 0x2D] {
                    let code = device << 16 | function << 2 | low;
                    assert_eq!(
                        fsctl::is_oplock_request(code),
                        fsctl::OPLOCK_REQUESTS.contains(&code),
                        "{code:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn names_compare_case_insensitively() {
        let n = utf16("\\Dir\\Report.TXT");
        let name = FileName::new(&n);
        assert!(name.eq_ignore_case("\\dir\\report.txt"));
        assert!(!name.eq_ignore_case("\\dir\\report.tx"));
        assert!(name.ends_with_ignore_case(".txt"));
        assert!(!name.ends_with_ignore_case(".exe"));
        assert!(!FileName::new(&[]).ends_with_ignore_case(".exe"));
        assert_eq!(std::format!("{name}"), "\\Dir\\Report.TXT");
    }

    #[test]
    fn folding_matches_unicode_where_it_applies() {
        // Where the compact folding applies it agrees with Unicode's simple upper case.
        for c in (0u32..0x600).chain(0xFF00..0xFF70).filter_map(char::from_u32) {
            let f = fold(c);
            let mut up = c.to_uppercase();
            if let (Some(u), None) = (up.next(), up.next()) {
                if f != c {
                    assert_eq!(f, u, "U+{:04X}", c as u32);
                }
            }
        }
        assert_eq!(fold('é'), 'É');
        assert_eq!(fold('ÿ'), 'Ÿ');
        assert_eq!(fold('ł'), 'Ł');
        assert_eq!(fold('ς'), 'Σ');
        assert_eq!(fold('ж'), 'Ж');
        assert_eq!(fold('ё'), 'Ё');
        assert_eq!(fold('ß'), 'ß', "no single-character upper case");
        let n = utf16("\\Données\\ΦΙΛΟΣ.txt");
        assert!(FileName::new(&n).eq_ignore_case("\\DONNÉES\\φιλος.TXT"));
    }

    #[test]
    fn folding_follows_the_ntfs_upcase_table() {
        // NTFS compares names through the upcase table Windows writes to the volume, not through
        // Unicode's case mappings: the table of Windows Vista (as the Mac OS X NTFS driver
        // regenerates it, `ntfs_upcase_table_generate`) upcases the Greek vowels with tonos and
        // the Cyrillic letters beyond Russian's, and leaves dotless i and long s alone.
        for (lower, upper) in [
            ('ά', 'Ά'),
            ('έ', 'Έ'),
            ('ί', 'Ί'),
            ('ό', 'Ό'),
            ('ύ', 'Ύ'),
            ('ώ', 'Ώ'),
            ('ϣ', 'Ϣ'),
            ('ϲ', 'Ϲ'),
            ('ͻ', 'Ͻ'),
            ('ґ', 'Ґ'),
            ('ѣ', 'Ѣ'),
            ('қ', 'Қ'),
            ('ӂ', 'Ӂ'),
            ('ӏ', 'Ӏ'),
            ('ә', 'Ә'),
            ('ӹ', 'Ӹ'),
            ('ԓ', 'Ԓ'),
        ] {
            assert_eq!(fold(lower), upper, "{lower}");
            assert_eq!(fold(upper), upper, "{upper}");
        }
        for kept in ['ı', 'ſ', 'µ', 'ß', 'ĸ', 'ϐ', 'ϑ', 'İ'] {
            assert_eq!(fold(kept), kept, "{kept}");
        }
        // Names that are one file on NTFS compare equal, and names that are two do not.
        let n = utf16("\\Έγγραφα\\Ґанок.ώρα");
        assert!(FileName::new(&n).eq_ignore_case("\\έΓΓΡΑΦΑ\\ґАНОК.ΏΡΑ"));
        assert!(FileName::new(&n).matches("*.ΏΡΑ"));
        let n = utf16("\\fıle.txt");
        assert!(!FileName::new(&n).eq_ignore_case("\\FILE.TXT"));
        assert!(!FileName::new(&n).matches("*file*"));
    }

    #[test]
    fn wildcards() {
        let n = utf16("\\dir\\eicar.com");
        let name = FileName::new(&n);
        assert!(name.matches("*"));
        assert!(name.matches("*.COM"));
        assert!(name.matches("\\dir\\*"));
        assert!(name.matches("\\dir\\eicar.co?"));
        assert!(name.matches("*ica*"));
        assert!(!name.matches("*.exe"));
        assert!(!name.matches("\\other\\*"));
        assert!(FileName::new(&[]).matches("*"));
        assert!(!FileName::new(&[]).matches("?"));
    }

    #[test]
    fn completion_statuses_follow_rules_5_and_13() {
        let io = |s| IoStatus::new(s);
        assert_eq!(io(Status::PENDING).for_completion(false).status, Status::INVALID_DEVICE_STATE);
        assert_eq!(
            io(Status::FLT_DISALLOW_FAST_IO).for_completion(false).status,
            Status::INVALID_DEVICE_STATE
        );
        // Rule 5 over rule 13: a cleanup or close cannot fail, not even for a reserved status
        // (it completed with STATUS_INVALID_DEVICE_STATE before a fix of December 6).
        for reserved in [Status::PENDING, Status::FLT_DISALLOW_FAST_IO] {
            assert_eq!(io(reserved).for_completion(true).status, Status::SUCCESS);
        }
        assert_eq!(io(Status::ACCESS_DENIED).for_completion(false).status, Status::ACCESS_DENIED);
        assert_eq!(io(Status::ACCESS_DENIED).for_completion(true).status, Status::SUCCESS);
        let kept = IoStatus { status: Status::END_OF_FILE, information: 3 };
        assert_eq!(kept.for_completion(false), kept);
    }

    #[test]
    fn unpaired_surrogates_do_not_panic() {
        let n = [0xD800u16, b'a' as u16];
        let name = FileName::new(&n);
        assert_eq!(name.chars().count(), 2);
        assert!(name.matches("?a"));
    }

    /// A header source that counts the headers it builds.
    struct CountingHeader {
        built: core::cell::Cell<u32>,
    }

    impl<'a> HeaderSource<'a> for CountingHeader {
        fn header(&self) -> OperationHeader<'a> {
            self.built.set(self.built.get() + 1);
            OperationHeader {
                major: MajorFunction::Write,
                minor: 0,
                kind: OperationKind::Irp,
                irp_flags: IrpFlags::NOCACHE,
                data_flags: CallbackDataFlags::IRP_OPERATION,
                requestor_mode: RequestorMode::User,
                file_name: None,
                volume_open: false,
                file: 0x10,
                stream: 0x20,
                parameters: Parameters::Write(ReadWriteParameters {
                    offset: 512,
                    length: 4096,
                    key: 0,
                }),
                irql: Irql::PASSIVE,
                synchronous: true,
                id: 0x1000,
            }
        }
    }

    #[test]
    fn a_lazy_header_is_built_once_and_only_when_asked() {
        let source = CountingHeader { built: core::cell::Cell::new(0) };
        let header = LazyHeader::on_demand(&source, MajorFunction::Write, 0x1000);
        // What the backends and the views answer without it.
        assert_eq!(
            (header.major(), header.id(), header.is_built()),
            (MajorFunction::Write, 0x1000, false)
        );
        assert_eq!(source.built.get(), 0);
        let h = header.get();
        assert_eq!((h.stream, h.is_noncached()), (0x20, true));
        assert!(matches!(
            h.parameters,
            Parameters::Write(ReadWriteParameters { length: 4096, .. })
        ));
        assert!(header.is_built());
        let _ = header.get().file;
        assert_eq!(source.built.get(), 1, "built once");
        // Debug output builds it too (once, already done).
        assert!(std::format!("{header:?}").contains("stream: 32"));
        assert_eq!(source.built.get(), 1);
        // A ready header is built already.
        let ready = LazyHeader::ready(source.header());
        assert!(ready.is_built());
        assert_eq!((ready.major(), ready.id()), (MajorFunction::Write, 0x1000));
    }

    #[test]
    fn cached_noncached_paging() {
        let mut h = OperationHeader {
            major: MajorFunction::Read,
            minor: 0,
            kind: OperationKind::Irp,
            irp_flags: IrpFlags::empty(),
            data_flags: CallbackDataFlags::IRP_OPERATION,
            requestor_mode: RequestorMode::User,
            file_name: None,
            volume_open: false,
            file: 0,
            stream: 0,
            parameters: Parameters::Read(ReadWriteParameters::default()),
            irql: Irql::PASSIVE,
            synchronous: true,
            id: 0,
        };
        assert!(h.is_cached());
        h.irp_flags = IrpFlags::NOCACHE;
        assert!(!h.is_cached() && h.is_noncached() && !h.is_paging());
        h.irp_flags = IrpFlags::NOCACHE | IrpFlags::PAGING_IO;
        assert!(!h.is_cached() && h.is_paging());
        h.major = MajorFunction::Create;
        h.irp_flags = IrpFlags::empty();
        assert!(!h.is_cached(), "only reads and writes are cached I/O");
    }

    #[test]
    fn create_options_split() {
        let p =
            CreateParameters { options: (create::FILE_OPEN_IF << 24) | 0x40, ..Default::default() };
        assert_eq!(p.disposition(), create::FILE_OPEN_IF);
        assert_eq!(p.create_options(), create::FILE_NON_DIRECTORY_FILE);
    }

    /// A source that, the first time it maps, asks the buffer it serves for its bytes (a source
    /// that reaches its buffer through the filter's state, say).
    struct Reentrant<'a> {
        buffer: core::cell::Cell<Option<&'a OperationBuffer<'a>>>,
        calls: core::cell::Cell<u32>,
    }

    impl<'a> BufferSource<'a> for Reentrant<'a> {
        fn map(&self) -> Buffer<'a> {
            self.calls.set(self.calls.get() + 1);
            match self.buffer.take() {
                // The outer call: the inner one (below) fills the cell with nothing.
                Some(buffer) => {
                    assert!(buffer.get().bytes().is_none(), "the inner access maps nothing");
                    Buffer::Readable(b"late")
                }
                None => Buffer::None,
            }
        }
    }

    #[test]
    fn a_source_that_reenters_its_buffer_does_not_panic() {
        // `OnceCell::get_or_init` panics on a re-entrant initialization: kernel-side code may
        // have no panic path (docs/reliability.md, item 5), as `LazyHeader::get` says too.
        let source = Reentrant { buffer: None.into(), calls: 0.into() };
        let buffer = OperationBuffer::on_demand(&source);
        source.buffer.set(Some(&buffer));
        // The inner access filled the cell first; the outer one keeps what it found.
        assert!(buffer.get().bytes().is_none());
        assert_eq!(source.calls.get(), 2);
        assert!(buffer.get().bytes().is_none(), "mapped once: no third call");
        assert_eq!(source.calls.get(), 2);
    }

    #[test]
    fn buffers_are_checked() {
        let mut data = [1u8, 2, 3];
        let mut b = Buffer::Writable(&mut data);
        assert_eq!(b.bytes(), Some(&[1u8, 2, 3][..]));
        b.bytes_mut().unwrap()[0] = 9;
        assert_eq!(b.bytes().unwrap()[0], 9);
        let mut r = Buffer::Readable(&[4, 5]);
        assert!(r.bytes_mut().is_none());
        assert!(Buffer::User.bytes().is_none());
        assert!(Buffer::None.bytes().is_none());
    }

    /// A source that counts its calls and hands out its bytes once.
    struct Counting<'a> {
        calls: core::cell::Cell<u32>,
        bytes: core::cell::Cell<Option<&'a mut [u8]>>,
    }

    impl<'a> BufferSource<'a> for Counting<'a> {
        fn map(&self) -> Buffer<'a> {
            self.calls.set(self.calls.get() + 1);
            match self.bytes.take() {
                Some(b) => Buffer::Writable(b),
                None => Buffer::None,
            }
        }
    }

    #[test]
    fn an_on_demand_buffer_is_mapped_once_and_only_when_asked_for() {
        let mut data = [7u8, 8];
        let source =
            Counting { calls: core::cell::Cell::new(0), bytes: Some(&mut data[..]).into() };
        let mut buffer = OperationBuffer::on_demand(&source);
        // Printing it does not map it.
        assert_eq!(std::format!("{buffer:?}"), "NotMapped");
        assert!(!buffer.is_mapped());
        assert_eq!(source.calls.get(), 0);
        assert_eq!(buffer.get().bytes(), Some(&[7u8, 8][..]));
        assert!(buffer.is_mapped());
        buffer.get_mut().bytes_mut().unwrap()[0] = 1;
        assert_eq!(buffer.get().bytes(), Some(&[1u8, 8][..]));
        assert_eq!(source.calls.get(), 1, "mapped once");
        // Mutable access first maps too.
        let mut other = [3u8];
        let source =
            Counting { calls: core::cell::Cell::new(0), bytes: Some(&mut other[..]).into() };
        let mut buffer = OperationBuffer::on_demand(&source);
        assert!(buffer.get_mut().bytes_mut().is_some());
        assert!(buffer.get().bytes().is_some());
        assert_eq!(source.calls.get(), 1);
        let ready = OperationBuffer::from(Buffer::User);
        assert!(ready.is_mapped());
        assert!(matches!(ready.get(), Buffer::User));
    }
}
