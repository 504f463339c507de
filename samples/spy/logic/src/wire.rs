//! The reader protocol: commands, the `GetLog` reply and its records, as little-endian bytes with
//! a fixed, versioned layout. The filter encodes, readers (the lab, a console program) decode with
//! the same code.
//!
//! A message is at least 4 bytes: a `u32` command ([`Command`]); MiniSpy's command message has a
//! reserved `u32` after it, which readers may send and the filter ignores, like anything after
//! the command.
//!
//! `GetVersion` answers 4 bytes: the protocol's major and minor version (`u16` each), as
//! MiniSpy's version reply does.
//!
//! `GetLog` answers a [`LogHeader`] ([`LOG_HEADER_SIZE`] bytes) followed by `record_count` whole
//! records, each [`RECORD_FIXED_SIZE`] bytes and then its name (UTF-16LE):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u16 | `size`: the record's bytes, name included (`56 + 2 * name_units`) |
//! | 2 | u16 | `name_units`: the name's length in UTF-16 units |
//! | 4 | u16 | `flags` ([`record_flags`]) |
//! | 6 | u8 | `major`: `IRP_MJ_*` (the Filter Manager's negative codes as a byte) |
//! | 7 | u8 | `minor`: the minor function |
//! | 8 | u64 | `sequence`: the filter's count of operations seen, from 1 |
//! | 16 | u8 | `kind`: 0 IRP, 1 fast I/O, 2 FsFilter callback |
//! | 17 | u8 | `requestor_mode`: 0 kernel, 1 user |
//! | 18 | u16 | reserved, 0 |
//! | 20 | u32 | `irp_flags`: the IRP's flags (`IRP_NOCACHE`, `IRP_PAGING_IO`, ...) |
//! | 24 | u32 | `data_flags`: the callback data's flags (`FLTFL_CALLBACK_DATA_*`) |
//! | 28 | i32 | `status`: the post callback's `IoStatus.Status` (0 without a post) |
//! | 32 | u64 | `information`: the post callback's `IoStatus.Information` |
//! | 40 | u64 | `file`: the file object's identity (its address; 0 without one) |
//! | 48 | i32 | `name_status`: why there is no name (the name query's status; 0 with a name) |
//! | 52 | u32 | `process`: the requesting process's id, 0 without one (reserved, 0, in 1.0) |
//! | 56 | u16 * `name_units` | the file's opened name, cut to [`crate::NAME_UNITS`] |
//!
//! # Versions
//! A reader refuses a reply of another major version. A minor version adds fields in reserved
//! space, which the versions before it write as 0, so a reader of 1.1 reads a 1.0 filter's
//! records (their `process` is 0: none) and a reader of 1.0 reads a 1.1 filter's (it ignores the
//! field).
//!
//! - 1.0: the fields above but `process`.
//! - 1.1: `process` (MiniSpy's records carry the `ProcessId` too).

use fsfilter::{Error, Result, Status};

/// The protocol's major version: a reader refuses a reply of another major version.
pub const VERSION_MAJOR: u16 = 1;
/// The protocol's minor version: fields may be added in reserved space (1: `process`).
pub const VERSION_MINOR: u16 = 1;

/// The bytes of a [`LogHeader`].
pub const LOG_HEADER_SIZE: usize = 16;
/// The bytes of a record before its name.
pub const RECORD_FIXED_SIZE: usize = 56;
/// The bytes of a `GetVersion` reply.
pub const VERSION_REPLY_SIZE: usize = 4;

/// A reader's command, the first `u32` of a message (MiniSpy's command numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Take as many whole records as fit in the reply.
    GetLog,
    /// The protocol version.
    GetVersion,
}

impl Command {
    /// The command's number.
    pub const fn code(self) -> u32 {
        match self {
            Command::GetLog => 0,
            Command::GetVersion => 1,
        }
    }

    /// The command of a message; `STATUS_INVALID_PARAMETER` for a message shorter than 4 bytes
    /// or an unknown command.
    pub fn parse(input: &[u8]) -> Result<Command> {
        match read_u32(input, 0) {
            Some(0) => Ok(Command::GetLog),
            Some(1) => Ok(Command::GetVersion),
            _ => Err(Error::INVALID_PARAMETER),
        }
    }

    /// The message a reader sends: the command and MiniSpy's reserved `u32`.
    pub const fn message(self) -> [u8; 8] {
        let c = self.code().to_le_bytes();
        [c[0], c[1], c[2], c[3], 0, 0, 0, 0]
    }
}

/// Record flags (the record's `flags` field).
pub mod record_flags {
    /// The post callback ran: `status` and `information` are the operation's result.
    pub const POST: u16 = 0x1;
    /// The post callback ran while the instance was draining (the operation may not have
    /// completed).
    pub const DRAINING: u16 = 0x2;
    /// The record has the file's name.
    pub const NAME: u16 = 0x4;
    /// The name was longer than [`crate::NAME_UNITS`] units and is cut.
    pub const NAME_TRUNCATED: u16 = 0x8;
    /// The operation is synchronous (`FltIsOperationSynchronous` / `IoIsOperationSynchronous`).
    pub const SYNCHRONOUS: u16 = 0x10;
    /// Every flag this version defines.
    pub const ALL: u16 = POST | DRAINING | NAME | NAME_TRUNCATED | SYNCHRONOUS;
}

/// What a `GetLog` reply starts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogHeader {
    /// [`VERSION_MAJOR`] of the filter that wrote it.
    pub version: u16,
    /// How many records follow.
    pub record_count: u32,
    /// Operations not recorded since the previous reply: the log was full (or, rarely, busy).
    pub dropped: u32,
    /// Records the filter still holds after this reply (complete ones that did not fit, and
    /// those whose operation has not completed yet): ask again.
    pub pending: u32,
}

impl LogHeader {
    /// Writes the header into the first [`LOG_HEADER_SIZE`] bytes of `out` (false when `out` is
    /// shorter).
    pub fn encode(&self, out: &mut [u8]) -> bool {
        let Some(h) = out.get_mut(..LOG_HEADER_SIZE) else { return false };
        set(h, 0, self.version.to_le_bytes());
        set(h, 2, (LOG_HEADER_SIZE as u16).to_le_bytes());
        set(h, 4, self.record_count.to_le_bytes());
        set(h, 8, self.dropped.to_le_bytes());
        set(h, 12, self.pending.to_le_bytes());
        true
    }
}

/// One record, as the filter keeps it and a reader decodes it (the name borrowed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordFields {
    /// The filter's count of operations seen, from 1 (an operation it could not record still
    /// takes a number, so gaps show losses).
    pub sequence: u64,
    /// The major function code.
    pub major: u8,
    /// The minor function.
    pub minor: u8,
    /// 0 IRP, 1 fast I/O, 2 FsFilter callback.
    pub kind: u8,
    /// 0 kernel, 1 user.
    pub requestor_mode: u8,
    /// [`record_flags`].
    pub flags: u16,
    /// The IRP's flags.
    pub irp_flags: u32,
    /// The callback data's flags.
    pub data_flags: u32,
    /// The result's status (0 when no post callback ran).
    pub status: i32,
    /// The result's information.
    pub information: u64,
    /// The file object's identity.
    pub file: u64,
    /// The name query's status (0 with a name).
    pub name_status: i32,
    /// The id of the process that requested the operation (`Services::requestor_process`,
    /// docs/callback-model.md rule 26); 0 when it had none (no requesting thread), or from a
    /// filter of version 1.0, which wrote 0 there.
    pub process: u32,
}

/// Writes one record (`fields` and the UTF-16 `name`) at the start of `out`; the bytes written,
/// or `None` when it does not fit whole.
pub fn encode_record(fields: &RecordFields, name: &[u16], out: &mut [u8]) -> Option<usize> {
    let units = u16::try_from(name.len()).ok()?;
    let size = RECORD_FIXED_SIZE.checked_add(name.len().checked_mul(2)?)?;
    let size16 = u16::try_from(size).ok()?;
    let (fixed, rest) = out.get_mut(..size)?.split_first_chunk_mut::<RECORD_FIXED_SIZE>()?;
    set(fixed, 0, size16.to_le_bytes());
    set(fixed, 2, units.to_le_bytes());
    set(fixed, 4, fields.flags.to_le_bytes());
    set(fixed, 6, [fields.major, fields.minor]);
    set(fixed, 8, fields.sequence.to_le_bytes());
    set(fixed, 16, [fields.kind, fields.requestor_mode, 0, 0]);
    set(fixed, 20, fields.irp_flags.to_le_bytes());
    set(fixed, 24, fields.data_flags.to_le_bytes());
    set(fixed, 28, fields.status.to_le_bytes());
    set(fixed, 32, fields.information.to_le_bytes());
    set(fixed, 40, fields.file.to_le_bytes());
    set(fixed, 48, fields.name_status.to_le_bytes());
    set(fixed, 52, fields.process.to_le_bytes());
    for (pair, unit) in rest.chunks_exact_mut(2).zip(name) {
        set(pair, 0, unit.to_le_bytes());
    }
    Some(size)
}

/// Writes a `GetVersion` reply; its length, or `STATUS_BUFFER_TOO_SMALL`.
pub fn encode_version(out: &mut [u8]) -> Result<usize> {
    let Some(v) = out.get_mut(..VERSION_REPLY_SIZE) else { return Err(buffer_too_small()) };
    set(v, 0, VERSION_MAJOR.to_le_bytes());
    set(v, 2, VERSION_MINOR.to_le_bytes());
    Ok(VERSION_REPLY_SIZE)
}

/// `STATUS_BUFFER_TOO_SMALL`: a reply buffer shorter than the smallest reply.
pub fn buffer_too_small() -> Error {
    Error::new(Status::BUFFER_TOO_SMALL).unwrap_or(Error::INVALID_PARAMETER)
}

/// Why a reply could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header, or than a record says it is.
    Truncated,
    /// Another major version of the protocol.
    Version(u16),
    /// A header or record size that is not this version's.
    BadSize,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("the reply is truncated"),
            DecodeError::Version(v) => write!(f, "protocol version {v}, not {VERSION_MAJOR}"),
            DecodeError::BadSize => f.write_str("a header or record size is inconsistent"),
        }
    }
}

/// A decoded record: its fields and its name's bytes (UTF-16LE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedRecord<'a> {
    /// The fields.
    pub fields: RecordFields,
    name: &'a [u8],
}

impl<'a> DecodedRecord<'a> {
    /// The name's UTF-16 units.
    pub fn name_units(&self) -> impl Iterator<Item = u16> + 'a {
        self.name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([first(c), c.get(1).copied().unwrap_or(0)]))
    }

    /// The name's characters, unpaired surrogates as U+FFFD.
    pub fn name_chars(&self) -> impl Iterator<Item = char> + 'a {
        char::decode_utf16(self.name_units()).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// True when the record carries a name.
    pub const fn has_name(&self) -> bool {
        self.fields.flags & record_flags::NAME != 0
    }
}

fn first(c: &[u8]) -> u8 {
    c.first().copied().unwrap_or(0)
}

/// A decoded `GetLog` reply.
#[derive(Clone, Copy, Debug)]
pub struct LogReply<'a> {
    /// The header.
    pub header: LogHeader,
    records: &'a [u8],
}

impl<'a> LogReply<'a> {
    /// Decodes the header of `bytes` (the records are decoded as they are iterated).
    pub fn parse(bytes: &'a [u8]) -> core::result::Result<LogReply<'a>, DecodeError> {
        let h = bytes.get(..LOG_HEADER_SIZE).ok_or(DecodeError::Truncated)?;
        let version = read_u16(h, 0).ok_or(DecodeError::Truncated)?;
        if version != VERSION_MAJOR {
            return Err(DecodeError::Version(version));
        }
        if read_u16(h, 2) != Some(LOG_HEADER_SIZE as u16) {
            return Err(DecodeError::BadSize);
        }
        let header = LogHeader {
            version,
            record_count: read_u32(h, 4).ok_or(DecodeError::Truncated)?,
            dropped: read_u32(h, 8).ok_or(DecodeError::Truncated)?,
            pending: read_u32(h, 12).ok_or(DecodeError::Truncated)?,
        };
        let records = bytes.get(LOG_HEADER_SIZE..).unwrap_or(&[]);
        Ok(LogReply { header, records })
    }

    /// The records, `record_count` of them; an error ends the iteration.
    pub fn records(&self) -> Records<'a> {
        Records { rest: self.records, left: self.header.record_count }
    }
}

/// The records of a [`LogReply`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = core::result::Result<DecodedRecord<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = decode_record(self.rest);
        match r {
            Ok((_, size)) => self.rest = self.rest.get(size..).unwrap_or(&[]),
            Err(_) => self.left = 0,
        }
        Some(r.map(|(record, _)| record))
    }
}

/// Decodes the record at the start of `bytes`: it and its size.
pub fn decode_record(
    bytes: &[u8],
) -> core::result::Result<(DecodedRecord<'_>, usize), DecodeError> {
    let t = DecodeError::Truncated;
    let fixed = bytes.get(..RECORD_FIXED_SIZE).ok_or(t)?;
    let size = usize::from(read_u16(fixed, 0).ok_or(t)?);
    let units = usize::from(read_u16(fixed, 2).ok_or(t)?);
    if size != RECORD_FIXED_SIZE + 2 * units {
        return Err(DecodeError::BadSize);
    }
    let whole = bytes.get(..size).ok_or(t)?;
    let byte = |at: usize| fixed.get(at).copied().ok_or(t);
    let fields = RecordFields {
        flags: read_u16(fixed, 4).ok_or(t)?,
        major: byte(6)?,
        minor: byte(7)?,
        sequence: read_u64(fixed, 8).ok_or(t)?,
        kind: byte(16)?,
        requestor_mode: byte(17)?,
        irp_flags: read_u32(fixed, 20).ok_or(t)?,
        data_flags: read_u32(fixed, 24).ok_or(t)?,
        status: read_u32(fixed, 28).ok_or(t)? as i32,
        information: read_u64(fixed, 32).ok_or(t)?,
        file: read_u64(fixed, 40).ok_or(t)?,
        name_status: read_u32(fixed, 48).ok_or(t)? as i32,
        process: read_u32(fixed, 52).ok_or(t)?,
    };
    let name = whole.get(RECORD_FIXED_SIZE..).unwrap_or(&[]);
    Ok((DecodedRecord { fields, name }, size))
}

/// Decodes a `GetVersion` reply: (major, minor).
pub fn decode_version(bytes: &[u8]) -> core::result::Result<(u16, u16), DecodeError> {
    match (read_u16(bytes, 0), read_u16(bytes, 2)) {
        (Some(major), Some(minor)) => Ok((major, minor)),
        _ => Err(DecodeError::Truncated),
    }
}

/// Writes `value` at `at` in `out` (nothing when it does not fit): inlined with a constant
/// offset into an array of known length, a single store, with no bounds check left.
#[inline(always)]
pub(crate) fn set<const N: usize>(out: &mut [u8], at: usize, value: [u8; N]) {
    let Some(end) = at.checked_add(N) else { return };
    if let Some(Ok(field)) = out.get_mut(at..end).map(<&mut [u8; N]>::try_from) {
        *field = value;
    }
}

/// The `N` bytes at `at` in `bytes`, if there are that many.
#[inline(always)]
pub(crate) fn get<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([first(s), s.get(1).copied()?]))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn sample() -> RecordFields {
        RecordFields {
            sequence: 0x0102_0304_0506_0708,
            major: 3,
            minor: 0,
            kind: 1,
            requestor_mode: 1,
            flags: record_flags::POST | record_flags::NAME,
            irp_flags: 0x40,
            data_flags: 0x2,
            status: Status::END_OF_FILE.0,
            information: 5,
            file: 0xFFFF_8000_1234_5678,
            name_status: 0,
            process: 0x1_0008,
        }
    }

    #[test]
    fn a_record_round_trips() {
        let name: [u16; 3] = [b'a' as u16, 0xD800, b'z' as u16];
        let mut out = [0xAAu8; 80];
        let size = encode_record(&sample(), &name, &mut out).unwrap();
        assert_eq!(size, RECORD_FIXED_SIZE + 6);
        // The layout's fixed offsets.
        assert_eq!(&out[0..2], &[62, 0]);
        assert_eq!(&out[2..4], &[3, 0]);
        assert_eq!(out[6], 3);
        assert_eq!(&out[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&out[18..20], &[0, 0], "reserved");
        assert_eq!(&out[52..56], &[8, 0, 1, 0], "the process (1.1)");
        assert_eq!(&out[56..58], &[b'a', 0]);
        assert_eq!(out[62], 0xAA, "nothing written past the record");
        let (r, n) = decode_record(&out).unwrap();
        assert_eq!(n, size);
        assert_eq!(r.fields, sample());
        assert!(r.has_name());
        let name: std::string::String = r.name_chars().collect();
        assert_eq!(name, "a\u{FFFD}z");
    }

    #[test]
    fn a_version_1_0_record_reads_as_one_without_a_process() {
        // 1.0 wrote its reserved u32 at 52 as 0: a 1.1 reader reads it as "no process", and
        // the major version, the only one a reply's header carries, is still 1.
        let mut out = [0u8; RECORD_FIXED_SIZE];
        let v1_0 = RecordFields { process: 0, ..sample() };
        encode_record(&v1_0, &[], &mut out).unwrap();
        out[4..6].copy_from_slice(&0u16.to_le_bytes());
        let (r, _) = decode_record(&out).unwrap();
        assert_eq!(r.fields, RecordFields { flags: 0, ..v1_0 });
        assert_eq!((VERSION_MAJOR, VERSION_MINOR), (1, 1));
    }

    #[test]
    fn a_record_that_does_not_fit_is_not_written() {
        let mut out = [0u8; RECORD_FIXED_SIZE + 3];
        assert_eq!(encode_record(&sample(), &[1, 2], &mut out), None);
        assert_eq!(out, [0; RECORD_FIXED_SIZE + 3]);
        assert_eq!(encode_record(&sample(), &[1], &mut out), Some(RECORD_FIXED_SIZE + 2));
    }

    #[test]
    fn headers_and_versions_decode() {
        let h = LogHeader { version: VERSION_MAJOR, record_count: 0, dropped: 7, pending: 2 };
        let mut out = [0u8; LOG_HEADER_SIZE];
        assert!(h.encode(&mut out));
        assert!(!h.encode(&mut out[..15]));
        let reply = LogReply::parse(&out).unwrap();
        assert_eq!(reply.header, h);
        assert_eq!(reply.records().count(), 0);
        out[0] = 2;
        assert_eq!(LogReply::parse(&out).unwrap_err(), DecodeError::Version(2));
        assert_eq!(LogReply::parse(&out[..8]).unwrap_err(), DecodeError::Truncated);
        let mut v = [0u8; 4];
        assert_eq!(encode_version(&mut v), Ok(4));
        assert_eq!(decode_version(&v), Ok((VERSION_MAJOR, VERSION_MINOR)));
        assert_eq!(encode_version(&mut v[..3]), Err(buffer_too_small()));
        assert_eq!(buffer_too_small().status(), Status::BUFFER_TOO_SMALL);
    }

    #[test]
    fn a_lying_record_count_ends_in_an_error() {
        let mut out = [0u8; LOG_HEADER_SIZE + RECORD_FIXED_SIZE];
        LogHeader { version: 1, record_count: 2, ..LogHeader::default() }.encode(&mut out);
        encode_record(&sample(), &[], &mut out[LOG_HEADER_SIZE..]).unwrap();
        let reply = LogReply::parse(&out).unwrap();
        let mut records = reply.records();
        assert!(records.next().unwrap().is_ok());
        assert_eq!(records.next().unwrap().unwrap_err(), DecodeError::Truncated);
        assert!(records.next().is_none());
        // A size that disagrees with the name's length.
        out[LOG_HEADER_SIZE] = 57;
        assert_eq!(decode_record(&out[LOG_HEADER_SIZE..]).unwrap_err(), DecodeError::BadSize);
    }

    #[test]
    fn commands() {
        assert_eq!(Command::parse(&Command::GetLog.message()), Ok(Command::GetLog));
        assert_eq!(Command::parse(&Command::GetVersion.message()[..4]), Ok(Command::GetVersion));
        assert_eq!(Command::parse(&[2, 0, 0, 0]), Err(Error::INVALID_PARAMETER));
        assert_eq!(Command::parse(&[0, 0, 0]), Err(Error::INVALID_PARAMETER));
        assert_eq!(Command::parse(&[]), Err(Error::INVALID_PARAMETER));
    }
}
