//! Reparse points in the file systems that keep them (NTFS and ReFS): `FSCTL_SET_REPARSE_POINT`,
//! `FSCTL_GET_REPARSE_POINT` and `FSCTL_DELETE_REPARSE_POINT` as MS-FSA 2.1.5.10.37, 2.1.5.10.14
//! and 2.1.5.10.3 and MS-FSCC 2.3.6, 2.3.28 and 2.3.82 give their checks and statuses, and the
//! create that meets one: it ends `STATUS_REPARSE` with the tag in its information and the
//! `REPARSE_DATA_BUFFER` in `Irp->Tail.Overlay.AuxiliaryBuffer`, its `Reserved` the length in
//! bytes of the part of the name not parsed yet (the `REPARSE_DATA_BUFFER` reference page), for
//! the I/O manager to follow (docs/simulator.md, "Reparse points").

use fsfilter::Status;
use fsfilter_kernel::params;
use windows_sys::Win32::Foundation::NTSTATUS;

use super::media::{NodeId, ReparsePoint};
use super::{Call, FsType, MountState, VOLUME_NODE};
use crate::irpx;
use crate::kernel::{self, Kernel};
use crate::nt::{access as acc, fs_attr};

/// `FSCTL_SET_REPARSE_POINT` (`CTL_CODE(FILE_DEVICE_FILE_SYSTEM, 41, METHOD_BUFFERED,
/// FILE_SPECIAL_ACCESS)`).
pub const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;
/// `FSCTL_GET_REPARSE_POINT` (function 42, `FILE_ANY_ACCESS`).
pub const FSCTL_GET_REPARSE_POINT: u32 = 0x0009_00A8;
/// `FSCTL_DELETE_REPARSE_POINT` (function 43, `FILE_SPECIAL_ACCESS`).
pub const FSCTL_DELETE_REPARSE_POINT: u32 = 0x0009_00AC;

/// `FILE_OPEN_REPARSE_POINT`: the create opens the reparse point itself.
pub const FILE_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
/// `FILE_ATTRIBUTE_REPARSE_POINT`.
pub const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
/// `SYMLINK_FLAG_RELATIVE`: a symbolic link's substitute name is relative to its directory.
pub const SYMLINK_FLAG_RELATIVE: u32 = 1;

/// `IO_REPARSE_TAG_MOUNT_POINT`.
pub const TAG_MOUNT_POINT: u32 = fsfilter::reparse::TAG_MOUNT_POINT;
/// `IO_REPARSE_TAG_SYMLINK`.
pub const TAG_SYMLINK: u32 = fsfilter::reparse::TAG_SYMLINK;

/// `REPARSE_DATA_BUFFER_HEADER_SIZE`: tag, data length and `Reserved`.
pub const HEADER_SIZE: usize = 8;
/// `REPARSE_GUID_DATA_BUFFER_HEADER_SIZE`: the same and the GUID.
pub const GUID_HEADER_SIZE: usize = 24;
/// `MAXIMUM_REPARSE_DATA_BUFFER_SIZE`.
pub const MAXIMUM_SIZE: usize = 16 * 1024;
/// `sizeof(REPARSE_DATA_BUFFER)` (ntifs.h: the header and the largest member of the union, the
/// symbolic link's 12 bytes and one `WCHAR`, padded to 4): the least an
/// `FSCTL_GET_REPARSE_POINT` of a Microsoft tag takes (MS-FSA 2.1.5.10.14).
const DATA_BUFFER_SIZE: usize = 24;
/// `sizeof(REPARSE_GUID_DATA_BUFFER)` (the GUID header and one byte, padded to 4).
const GUID_BUFFER_SIZE: usize = 28;

/// The pool tag of the buffer a create that meets a reparse point hands the I/O manager (the
/// simulator's own; the I/O manager frees it with `ExFreePool`, WRK `IopfCompleteRequest`).
pub const AUX_POOL_TAG: u32 = u32::from_le_bytes(*b"SRpb");

/// `STATUS_NOT_A_REPARSE_POINT`.
pub const STATUS_NOT_A_REPARSE_POINT: Status = Status::from_bits(0xC000_0275);
/// `STATUS_IO_REPARSE_TAG_INVALID`.
pub const STATUS_IO_REPARSE_TAG_INVALID: Status = Status::from_bits(0xC000_0276);
/// `STATUS_IO_REPARSE_TAG_MISMATCH`.
pub const STATUS_IO_REPARSE_TAG_MISMATCH: Status = Status::from_bits(0xC000_0277);
/// `STATUS_IO_REPARSE_DATA_INVALID`.
pub const STATUS_IO_REPARSE_DATA_INVALID: Status = Status::from_bits(0xC000_0278);
/// `STATUS_IO_REPARSE_TAG_NOT_HANDLED`.
pub const STATUS_IO_REPARSE_TAG_NOT_HANDLED: Status = Status::from_bits(0xC000_0279);
/// `STATUS_REPARSE_ATTRIBUTE_CONFLICT`.
pub const STATUS_REPARSE_ATTRIBUTE_CONFLICT: Status = Status::from_bits(0xC000_02B2);

/// Whether `code` is one of the three reparse-point controls.
pub const fn is_reparse_code(code: u32) -> bool {
    matches!(code, FSCTL_SET_REPARSE_POINT | FSCTL_GET_REPARSE_POINT | FSCTL_DELETE_REPARSE_POINT)
}

/// Whether a tag is Microsoft's (its high bit): its buffer is a `REPARSE_DATA_BUFFER`; anyone
/// else's is a `REPARSE_GUID_DATA_BUFFER` (MS-FSCC 2.1.2.1, 2.1.2.2, 2.1.2.3).
pub const fn is_microsoft(tag: u32) -> bool {
    tag & 0x8000_0000 != 0
}

/// Whether file system `ty` keeps reparse points: the disk file systems whose
/// `FileSystemAttributes` say `FILE_SUPPORTS_REPARSE_POINTS` (NTFS and ReFS). FAT, exFAT, CDFS,
/// UDFS and RAW have no such control (MS-FSA: `STATUS_INVALID_DEVICE_REQUEST` for an object
/// store that does not implement it, which FastFat's `FatUserFsCtrl` answers for any code it
/// does not know); shares are not modelled (their server's reparse points).
pub const fn supported(ty: FsType) -> bool {
    !ty.is_namespace() && ty.desc().fs_attributes & fs_attr::SUPPORTS_REPARSE_POINTS != 0
}

fn u16_at(b: &[u8], at: usize) -> usize {
    b.get(at..at + 2).map_or(0, |s| usize::from(u16::from_le_bytes([s[0], s[1]])))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// `IRP_MJ_FILE_SYSTEM_CONTROL` with a reparse-point code on a volume of a file system that
/// keeps reparse points: the input from the system buffer (`METHOD_BUFFERED`), the output to it.
pub fn fsctl(call: Call, code: u32) -> NTSTATUS {
    let sl = call.sl();
    // SAFETY: `FileSystemControl` is the member in use.
    let p = *unsafe { params::io::<params::IoFileSystemControl>(&sl.Parameters) };
    let (in_len, out_len) = (p.InputBufferLength as usize, p.OutputBufferLength as usize);
    // SAFETY: the live IRP.
    let i = unsafe { irpx::header(call.irp) };
    // SAFETY: the pointer member of the union, set for a buffered control.
    let system = unsafe { i.AssociatedIrp.SystemBuffer }.cast::<u8>();
    let input = if system.is_null() || in_len == 0 {
        Vec::new()
    } else {
        // SAFETY: a buffered control's system buffer holds the input's `InputBufferLength` bytes.
        unsafe { std::slice::from_raw_parts(system, in_len) }.to_vec()
    };
    let fo = call.fo();
    let (status, output) = kernel::with(|k| k.reparse_fsctl(fo, code, &input, out_len));
    let n = if system.is_null() {
        0
    } else {
        // SAFETY: the system buffer holds the larger of the input and the output lengths.
        unsafe { irpx::copy_out(system, out_len, &output) }
    };
    call.done(status, n)
}

impl Kernel {
    /// One reparse-point control on file object `fo`: its status and output.
    fn reparse_fsctl(
        &mut self,
        fo: *mut windows_sys::Wdk::Foundation::FILE_OBJECT,
        code: u32,
        input: &[u8],
        out_len: usize,
    ) -> (Status, Vec<u8>) {
        let Some(fcb) = self.fcb_of(fo) else { return (Status::INVALID_PARAMETER, Vec::new()) };
        let (mount, node) = (fcb.mount, fcb.node);
        if self.fs.mounts[mount as usize].state != MountState::Mounted {
            return (Status::VOLUME_DISMOUNTED, Vec::new());
        }
        // MS-FSCC 2.3.6, 2.3.28, 2.3.82: a handle that is not to a file or directory.
        if node == VOLUME_NODE {
            return (Status::INVALID_PARAMETER, Vec::new());
        }
        // SAFETY: the request's live file object.
        let ccb = unsafe { (*fo).FsContext2 } as usize;
        let access = self.fs.ccbs.get(&ccb).map_or(0, |c| c.access);
        let r = match code {
            FSCTL_GET_REPARSE_POINT => return self.get_reparse_point(mount, node, out_len),
            FSCTL_SET_REPARSE_POINT => self.set_reparse_point(mount, node, access, input, out_len),
            _ => self.delete_reparse_point(mount, node, access, input, out_len),
        };
        (r.err().unwrap_or(Status::SUCCESS), Vec::new())
    }

    fn media_node_mut(&mut self, mount: u32, node: NodeId) -> &mut super::media::Node {
        let v = self.fs.mounts[mount as usize].volume;
        self.volumes.list[v.index()].media.node_mut(node)
    }

    /// `FSCTL_SET_REPARSE_POINT` (MS-FSA 2.1.5.10.37, MS-FSCC 2.3.82, and the control's IFS
    /// reference page for the statuses of its second phase).
    fn set_reparse_point(
        &mut self,
        mount: u32,
        node: NodeId,
        access: u32,
        input: &[u8],
        out_len: usize,
    ) -> Result<(), Status> {
        if out_len > 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        if access & (acc::FILE_WRITE_DATA | acc::FILE_WRITE_ATTRIBUTES) == 0 {
            return Err(Status::ACCESS_DENIED);
        }
        let len = input.len();
        if !(HEADER_SIZE..=MAXIMUM_SIZE).contains(&len) {
            return Err(STATUS_IO_REPARSE_DATA_INVALID);
        }
        let tag = u32_at(input, 0);
        let data = u16_at(input, 4);
        // A Microsoft tag's buffer is a REPARSE_DATA_BUFFER, anyone else's a
        // REPARSE_GUID_DATA_BUFFER; tags 0 and 1 are reserved (MS-FSCC 2.3.82).
        let header = if is_microsoft(tag) { HEADER_SIZE } else { GUID_HEADER_SIZE };
        if len != data + header || tag <= 1 {
            return Err(STATUS_IO_REPARSE_DATA_INVALID);
        }
        let n = self.media_node_mut(mount, node);
        if tag == TAG_MOUNT_POINT && !n.is_dir() {
            return Err(Status::NOT_A_DIRECTORY);
        }
        match &n.reparse {
            Some(p) if p.tag != tag => return Err(STATUS_IO_REPARSE_TAG_MISMATCH),
            Some(p) if !is_microsoft(tag) && p.buffer.get(8..24) != input.get(8..24) => {
                return Err(STATUS_REPARSE_ATTRIBUTE_CONFLICT);
            }
            _ => {}
        }
        if let super::media::NodeKind::Dir { children, .. } = &n.kind {
            if !children.is_empty() {
                return Err(Status::DIRECTORY_NOT_EMPTY);
            }
        }
        let mut buffer = input.to_vec();
        // `Reserved` is meaningful only in a create that ends STATUS_REPARSE.
        buffer[6] = 0;
        buffer[7] = 0;
        n.reparse = Some(ReparsePoint { tag, buffer });
        n.attributes |= FILE_ATTRIBUTE_REPARSE_POINT;
        Ok(())
    }

    /// `FSCTL_GET_REPARSE_POINT` (MS-FSA 2.1.5.10.14, MS-FSCC 2.3.28): the buffer, `Reserved`
    /// zero, as much as fits; `STATUS_BUFFER_OVERFLOW` when not all of it did.
    fn get_reparse_point(&self, mount: u32, node: NodeId, out_len: usize) -> (Status, Vec<u8>) {
        let v = self.fs.mounts[mount as usize].volume;
        let Some(p) = &self.volumes.list[v.index()].media.node(node).reparse else {
            return (STATUS_NOT_A_REPARSE_POINT, Vec::new());
        };
        let least = if is_microsoft(p.tag) { DATA_BUFFER_SIZE } else { GUID_BUFFER_SIZE };
        if out_len < least {
            return (Status::BUFFER_TOO_SMALL, Vec::new());
        }
        if p.buffer.len() > out_len {
            return (Status::BUFFER_OVERFLOW, p.buffer[..out_len].to_vec());
        }
        (Status::SUCCESS, p.buffer.clone())
    }

    /// `FSCTL_DELETE_REPARSE_POINT` (MS-FSA 2.1.5.10.3, MS-FSCC 2.3.6).
    fn delete_reparse_point(
        &mut self,
        mount: u32,
        node: NodeId,
        access: u32,
        input: &[u8],
        out_len: usize,
    ) -> Result<(), Status> {
        if out_len > 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        if access & (acc::FILE_WRITE_DATA | acc::FILE_WRITE_ATTRIBUTES) == 0 {
            return Err(Status::ACCESS_DENIED);
        }
        // Exactly a header (a GUID header for a third party's tag), and no data.
        let tag = u32_at(input, 0);
        let header = if is_microsoft(tag) { HEADER_SIZE } else { GUID_HEADER_SIZE };
        if input.len() != header || u16_at(input, 4) != 0 {
            return Err(STATUS_IO_REPARSE_DATA_INVALID);
        }
        if tag <= 1 {
            return Err(STATUS_IO_REPARSE_TAG_INVALID);
        }
        let n = self.media_node_mut(mount, node);
        match &n.reparse {
            None => return Err(STATUS_NOT_A_REPARSE_POINT),
            Some(p) if p.tag != tag => return Err(STATUS_IO_REPARSE_TAG_MISMATCH),
            Some(p) if !is_microsoft(tag) && p.buffer.get(8..24) != input.get(8..24) => {
                return Err(STATUS_REPARSE_ATTRIBUTE_CONFLICT);
            }
            Some(_) => {}
        }
        n.reparse = None;
        n.attributes &= !FILE_ATTRIBUTE_REPARSE_POINT;
        Ok(())
    }

    /// A create met the reparse point of `node`, named by component `index` of `name` (the file
    /// object's name): its buffer goes to the I/O manager in the IRP's auxiliary buffer,
    /// allocated from paged pool, `Reserved` the length in bytes of what follows that component
    /// in the name (the `REPARSE_DATA_BUFFER` reference page; WRK's `IopDoNameTransmogrify`
    /// appends that many bytes of the name's end to the substitute name). Returns the tag, the
    /// create's information.
    pub(crate) fn reparse_met(
        &mut self,
        irp: *mut windows_sys::Wdk::Foundation::IRP,
        name: &str,
        index: usize,
        mount: u32,
        node: NodeId,
    ) -> Result<u32, Status> {
        let v = self.fs.mounts[mount as usize].volume;
        let Some(p) = self.volumes.list[v.index()].media.node(node).reparse.clone() else {
            return Err(Status::INVALID_PARAMETER);
        };
        let remaining = unparsed_units(name, index) * 2;
        let block = self.pool_allocate(crate::pool::POOL_FLAG_PAGED, p.buffer.len(), AUX_POOL_TAG);
        if block.is_null() {
            return Err(Status::INSUFFICIENT_RESOURCES);
        }
        let mut buffer = p.buffer;
        let reserved = u16::try_from(remaining).unwrap_or(u16::MAX).to_le_bytes();
        buffer[6..8].copy_from_slice(&reserved);
        // SAFETY: a fresh pool block of the buffer's length.
        unsafe { std::ptr::copy_nonoverlapping(buffer.as_ptr(), block.cast(), buffer.len()) };
        // SAFETY: the live create IRP the file system is completing.
        let i = unsafe { irpx::header(irp) };
        // `Overlay` is the member of the tail in use while the IRP is in flight.
        i.Tail.Overlay.AuxiliaryBuffer = block.cast();
        Ok(p.tag)
    }
}

fn utf16_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn with_header(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut b = tag.to_le_bytes().to_vec();
    b.extend_from_slice(&u16::try_from(data.len()).unwrap_or(u16::MAX).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(data);
    b
}

/// A mount point's (junction's) `REPARSE_DATA_BUFFER` (MS-FSCC 2.1.2.5): the substitute name
/// (`\??\D:\dir`) and the print name, each followed by a NUL, as `mklink /J` writes them.
pub fn mount_point_buffer(substitute: &str, print: &str) -> Vec<u8> {
    let (s, p) = (utf16_bytes(substitute), utf16_bytes(print));
    let mut data = Vec::new();
    for v in [0, s.len(), s.len() + 2, p.len()] {
        data.extend_from_slice(&u16::try_from(v).unwrap_or(u16::MAX).to_le_bytes());
    }
    data.extend_from_slice(&s);
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&p);
    data.extend_from_slice(&[0, 0]);
    with_header(TAG_MOUNT_POINT, &data)
}

/// A symbolic link's `REPARSE_DATA_BUFFER` (MS-FSCC 2.1.2.4): the print name then the
/// substitute name, as `mklink` writes them; `relative` sets `SYMLINK_FLAG_RELATIVE`.
pub fn symlink_buffer(substitute: &str, print: &str, relative: bool) -> Vec<u8> {
    let (s, p) = (utf16_bytes(substitute), utf16_bytes(print));
    let mut data = Vec::new();
    for v in [p.len(), s.len(), 0, p.len()] {
        data.extend_from_slice(&u16::try_from(v).unwrap_or(u16::MAX).to_le_bytes());
    }
    let flags = if relative { SYMLINK_FLAG_RELATIVE } else { 0 };
    data.extend_from_slice(&flags.to_le_bytes());
    data.extend_from_slice(&p);
    data.extend_from_slice(&s);
    with_header(TAG_SYMLINK, &data)
}

/// The name the I/O manager parses next for a create that ended `STATUS_REPARSE` on a mount
/// point or a symbolic link (`crate::reparse::decide`): `buffer` is the create's
/// `REPARSE_DATA_BUFFER` (its `Reserved` the bytes of the name not parsed yet), `name` the file
/// object's name as the create ended, `related` the name of its related file object (empty for
/// an open from the root or relative to a volume open) and `device` the name of the volume's
/// device (`\Device\HarddiskVolume1`).
/// - A mount point or an absolute symbolic link: the substitute name, then the part of the name
///   not parsed (WRK's `IopDoNameTransmogrify` for a mount point; MS-SMB2 2.2.2.2.1.1 step 2
///   for a symbolic link).
/// - A relative symbolic link (`SYMLINK_FLAG_RELATIVE`): the link's name, one element backed up
///   from the unparsed part, is replaced by the substitute name (MS-SMB2 2.2.2.2.1.1 step 3),
///   on the link's volume; `.` and `..` elements are then taken out (`..` never above the
///   volume's root; a choice: the object manager and the file systems take them for names), and
///   a substitute name that starts with `\` is relative to the volume's root.
///
/// `STATUS_IO_REPARSE_DATA_INVALID` for a buffer whose lengths do not hold together (WRK's
/// `IopDoNameTransmogrify` checks the data length and the `Reserved` length).
pub fn followed_name(
    buffer: &[u8],
    name: &[u16],
    related: &[u16],
    device: &str,
) -> Result<Vec<u16>, Status> {
    let invalid = STATUS_IO_REPARSE_DATA_INVALID;
    let tag = u32_at(buffer, 0);
    let data = buffer.get(HEADER_SIZE..HEADER_SIZE + u16_at(buffer, 4)).ok_or(invalid)?;
    let reserved = u16_at(buffer, 6);
    let fixed = match tag {
        TAG_MOUNT_POINT => 8,
        TAG_SYMLINK => 12,
        _ => return Err(invalid),
    };
    let path = data.get(fixed..).ok_or(invalid)?;
    let (offset, length) = (u16_at(data, 0), u16_at(data, 2));
    let substitute = path.get(offset..offset + length).ok_or(invalid)?;
    if offset % 2 != 0 || length % 2 != 0 || reserved % 2 != 0 || reserved / 2 > name.len() {
        return Err(invalid);
    }
    let substitute: Vec<u16> =
        substitute.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let (link, unparsed) = name.split_at(name.len() - reserved / 2);
    let relative = tag == TAG_SYMLINK && u32_at(data, 8) & SYMLINK_FLAG_RELATIVE != 0;
    if !relative {
        return Ok([substitute.as_slice(), unparsed].concat());
    }
    let text = |u: &[u16]| String::from_utf16_lossy(u);
    let substitute = text(&substitute);
    let mut parts: Vec<String> = Vec::new();
    if !substitute.starts_with('\\') {
        let link = text(link);
        let on_volume =
            if link.starts_with('\\') { link } else { format!("{}\\{link}", text(related)) };
        parts = on_volume.split('\\').filter(|p| !p.is_empty()).map(str::to_owned).collect();
        // The link itself: its directory is what the substitute name is relative to.
        parts.pop();
    }
    let rest = format!("{substitute}{}", text(unparsed));
    for part in rest.split('\\') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part.to_owned()),
        }
    }
    Ok(format!("{device}\\{}", parts.join("\\")).encode_utf16().collect())
}

/// The UTF-16 units of `name` after its component `index` (components are the non-empty parts
/// between backslashes): the part not parsed yet when that component is a reparse point.
pub fn unparsed_units(name: &str, index: usize) -> usize {
    let mut seen = 0;
    let mut at = 0;
    for part in name.split('\\') {
        let end = at + part.len();
        if !part.is_empty() {
            if seen == index {
                return name.get(end..).map_or(0, |rest| rest.encode_utf16().count());
            }
            seen += 1;
        }
        at = end + 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    /// Sets `Reserved` for a name whose unparsed part is `unparsed` and follows it.
    fn through(buffer: &[u8], name: &str, unparsed: &str, related: &str) -> Result<String, Status> {
        let mut b = buffer.to_vec();
        b[6..8].copy_from_slice(&((unparsed.encode_utf16().count() * 2) as u16).to_le_bytes());
        followed_name(&b, &units(name), &units(related), r"\Device\HarddiskVolume1")
            .map(|n| String::from_utf16_lossy(&n))
    }

    #[test]
    fn a_mount_point_or_an_absolute_link_is_its_substitute_name_and_the_unparsed_part() {
        let mp = mount_point_buffer(r"\??\D:\data", r"D:\data");
        assert_eq!(
            through(&mp, r"\dir\j\sub\x.txt", r"\sub\x.txt", ""),
            Ok(r"\??\D:\data\sub\x.txt".into())
        );
        assert_eq!(through(&mp, r"\dir\j", "", ""), Ok(r"\??\D:\data".into()));
        let link = symlink_buffer(r"\??\C:\target\file.txt", r"C:\target\file.txt", false);
        assert_eq!(through(&link, r"\l.txt", "", ""), Ok(r"\??\C:\target\file.txt".into()));
    }

    #[test]
    fn a_relative_link_is_resolved_against_its_directory_on_its_volume() {
        let up = symlink_buffer(r"..\target", r"..\target", true);
        let got = through(&up, r"\dir\l\file.txt", r"\file.txt", "");
        assert_eq!(got, Ok(r"\Device\HarddiskVolume1\target\file.txt".into()));
        // Relative to a related file object's name; `..` never above the root.
        let got = through(&up, r"l\file.txt", r"\file.txt", r"\dir");
        assert_eq!(got, Ok(r"\Device\HarddiskVolume1\target\file.txt".into()));
        let high = symlink_buffer(r"..\..\..\x", r"x", true);
        assert_eq!(through(&high, r"\l", "", ""), Ok(r"\Device\HarddiskVolume1\x".into()));
        let rooted = symlink_buffer(r"\top\.\y", r"y", true);
        assert_eq!(
            through(&rooted, r"\a\b\l", "", ""),
            Ok(r"\Device\HarddiskVolume1\top\y".into())
        );
    }

    #[test]
    fn a_buffer_whose_lengths_do_not_hold_together_is_invalid_data() {
        let mp = mount_point_buffer(r"\??\D:\data", r"D:\data");
        let mut short = mp.clone();
        short.truncate(mp.len() - 2);
        assert_eq!(through(&short, r"\j", "", ""), Err(STATUS_IO_REPARSE_DATA_INVALID));
        // Reserved longer than the name.
        assert_eq!(through(&mp, r"\j", r"\much\longer", ""), Err(STATUS_IO_REPARSE_DATA_INVALID));
        let mut beyond = mp.clone();
        beyond[10..12].copy_from_slice(&400u16.to_le_bytes());
        assert_eq!(through(&beyond, r"\j", "", ""), Err(STATUS_IO_REPARSE_DATA_INVALID));
    }

    #[test]
    fn the_unparsed_part_starts_at_the_separator_after_the_component() {
        assert_eq!(unparsed_units(r"\dir\link\sub\file.txt", 1), r"\sub\file.txt".len());
        assert_eq!(unparsed_units(r"\dir\link", 1), 0);
        assert_eq!(unparsed_units(r"\link\\x", 0), r"\\x".len());
        assert_eq!(unparsed_units(r"rel\link\x", 1), 2);
        assert_eq!(unparsed_units("\\l\\\u{e9}\u{1F600}", 0), 4);
    }
}
