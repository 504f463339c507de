//! The lines the reader prints: the version check, a title, one line per record, the drops, and
//! the reasons of failed calls.
//!
//! A record's line has, in columns: the sequence number; the operation (`IRP_MJ_*` or the Filter
//! Manager's pseudo-operation, `fsfilter::MajorFunction`'s name) and its minor function
//! (hexadecimal); how it arrived (`IRP`, `FIO` fast I/O, `FSF` FsFilter callback); the requestor
//! mode (`K`, `U`); the requesting process's id (decimal, as Task Manager shows it; `-` without
//! one, as from a filter of protocol 1.0); the IRP's and the callback data's flags (hexadecimal);
//! the record's flags as
//! letters (`P` post ran, `D` draining, `N` has a name, `T` name cut, `S` synchronous, `-` for each
//! absent one); the status and information (`-` when no post callback ran); the file object; the
//! opened name, or why there is none.

use core::fmt::{self, Write};

use fsfilter::{MajorFunction, Status};
use spy::wire::{self, DecodeError, DecodedRecord, LogReply, record_flags};

/// The title line over the records, in the records' columns.
pub const TITLE: &str = concat!(
    "     SEQ  OPERATION                                  MN  VIA  M  PID         IRP        DATA      ",
    "FLAGS  STATUS                           INFORMATION         FILE              NAME"
);

/// What one `GetLog` reply held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Records printed.
    pub records: u32,
    /// Operations the filter did not record since the previous reply.
    pub dropped: u32,
    /// Records the filter still holds: those that did not fit the reply, and those whose
    /// operation is still in progress.
    pub pending: u32,
}

/// The longest record the spy sends: the fixed part and a name of [`spy::NAME_UNITS`] units.
pub const MAX_RECORD_BYTES: usize = wire::RECORD_FIXED_SIZE + 2 * spy::NAME_UNITS;

/// Whether to send the next `GetLog` at once rather than after the interval, after a reply of
/// `reply_len` bytes into a buffer of `capacity` bytes that held `batch`: only when records are
/// still held and one of them may not have fitted (less room left than the longest record).
///
/// The spy keeps a record whose operation is in progress (a pended request, a directory
/// notification that has not fired, a record its post callback could not complete) and counts
/// it in `pending`; such a record may stay for hours, and asking again at once for it would be a
/// busy loop of `FilterSendMessage` or `DeviceIoControl` calls. With room for the longest record
/// left, every completed record was taken, so what is held is in progress: wait the interval.
pub const fn ask_again_at_once(batch: &Batch, reply_len: usize, capacity: usize) -> bool {
    batch.pending > 0 && capacity.saturating_sub(reply_len) < MAX_RECORD_BYTES
}

/// Why a reply could not be printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrintError {
    /// The reply does not decode.
    Decode(DecodeError),
    /// The output failed.
    Output,
}

impl From<fmt::Error> for PrintError {
    fn from(_: fmt::Error) -> PrintError {
        PrintError::Output
    }
}

impl fmt::Display for PrintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrintError::Decode(e) => write!(f, "the filter's reply does not decode: {e}"),
            PrintError::Output => f.write_str("the output could not be written"),
        }
    }
}

/// The line of a `GetVersion` reply: the filter's protocol version against this reader's; `Err`
/// (after the line) when the major versions differ or the reply is short.
pub fn version(out: &mut impl Write, reply: &[u8]) -> Result<(u16, u16), PrintError> {
    let (major, minor) = match wire::decode_version(reply) {
        Ok(v) => v,
        Err(e) => {
            writeln!(out, "spy-reader: the version reply is {} bytes, not 4", reply.len())?;
            return Err(PrintError::Decode(e));
        }
    };
    write!(
        out,
        "spy-reader: protocol version {major}.{minor} (this reader reads {}.x)",
        wire::VERSION_MAJOR
    )?;
    if major != wire::VERSION_MAJOR {
        writeln!(out, ": not this reader's")?;
        return Err(PrintError::Decode(DecodeError::Version(major)));
    }
    writeln!(out)?;
    Ok((major, minor))
}

/// How an operation arrived, in three letters.
fn via(kind: u8) -> &'static str {
    match kind {
        0 => "IRP",
        1 => "FIO",
        2 => "FSF",
        _ => "?",
    }
}

/// The record flags as letters, a `-` for each one absent.
fn flag_letters(flags: u16) -> [u8; 5] {
    let mut letters = *b"-----";
    let bits = [
        (record_flags::POST, b'P'),
        (record_flags::DRAINING, b'D'),
        (record_flags::NAME, b'N'),
        (record_flags::NAME_TRUNCATED, b'T'),
        (record_flags::SYNCHRONOUS, b'S'),
    ];
    for (slot, (bit, letter)) in letters.iter_mut().zip(bits) {
        if flags & bit != 0 {
            *slot = letter;
        }
    }
    letters
}

/// One record's line (with its newline).
pub fn record(out: &mut impl Write, rec: &DecodedRecord<'_>) -> fmt::Result {
    let f = &rec.fields;
    let letters = flag_letters(f.flags);
    let mode = match f.requestor_mode {
        0 => "K",
        1 => "U",
        _ => "?",
    };
    // MajorFunction's and Status's Display write their text without padding: through a Column.
    let mut operation = Column::<64>::new();
    let _ = write!(operation, "{}", MajorFunction::from_code(f.major));
    // The process: 0 is none (no requesting thread, or a 1.0 filter's reserved field).
    let mut process = Column::<10>::new();
    let _ = match f.process {
        0 => process.write_str("-"),
        pid => write!(process, "{pid}"),
    };
    write!(
        out,
        "{:>8}  {:<42} {:02X}  {:<3}  {}  {:<10}  {:08X}   {:08X}  {:<5}  ",
        f.sequence,
        operation.as_str(),
        f.minor,
        via(f.kind),
        mode,
        process.as_str(),
        f.irp_flags,
        f.data_flags,
        core::str::from_utf8(&letters).unwrap_or("?????"),
    )?;
    if f.flags & record_flags::POST != 0 {
        // The status's name when fsfilter knows it, else its value.
        let mut status = Column::<64>::new();
        let _ = write!(status, "{}", Status(f.status));
        write!(out, "{:<32} 0x{:<16X}  ", status.as_str(), f.information)?;
    } else {
        write!(out, "{:<32} {:<18}  ", "-", "-")?;
    }
    write!(out, "{:016X}  ", f.file)?;
    if rec.has_name() {
        for c in rec.name_chars() {
            out.write_char(c)?;
        }
        if f.flags & record_flags::NAME_TRUNCATED != 0 {
            out.write_str("...")?;
        }
    } else if f.name_status != 0 {
        write!(out, "(no name: {})", Status(f.name_status))?;
    } else {
        out.write_str("(no name)")?;
    }
    writeln!(out)
}

/// A `GetLog` reply: a line per record, then a line for the drops if there were any.
pub fn log(out: &mut impl Write, reply: &[u8]) -> Result<Batch, PrintError> {
    let log = LogReply::parse(reply).map_err(PrintError::Decode)?;
    let mut batch = Batch { records: 0, dropped: log.header.dropped, pending: log.header.pending };
    for rec in log.records() {
        record(out, &rec.map_err(PrintError::Decode)?)?;
        batch.records += 1;
    }
    dropped(out, batch.dropped)?;
    Ok(batch)
}

/// The drops' line, if any.
pub fn dropped(out: &mut impl Write, dropped: u32) -> fmt::Result {
    match dropped {
        0 => Ok(()),
        1 => writeln!(out, "          (1 operation not recorded: the log was full or busy)"),
        n => writeln!(out, "          ({n} operations not recorded: the log was full or busy)"),
    }
}

/// The closing line: what was read in all.
pub fn summary(out: &mut impl Write, records: u64, dropped: u64, pending: u32) -> fmt::Result {
    write!(out, "spy-reader: {records} record(s) read, {dropped} operation(s) not recorded")?;
    if pending > 0 {
        write!(out, ", {pending} record(s) still held by the filter")?;
    }
    writeln!(out)
}

/// A failed Windows call's reason: an `HRESULT` (fltlib.dll's functions) or a Win32 error code
/// (`GetLastError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// An `HRESULT`.
    HResult(u32),
    /// A Win32 error code.
    Win32(u32),
}

/// `FACILITY_NT_BIT`: an `HRESULT` that carries an `NTSTATUS` (`HRESULT_FROM_NT`).
const FACILITY_NT_BIT: u32 = 0x1000_0000;
/// `FACILITY_WIN32` in an `HRESULT`'s facility field.
const FACILITY_WIN32: u32 = 7;

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Failure::HResult(hr) if hr & FACILITY_NT_BIT != 0 => {
                // HRESULT_FROM_NT(status) = status | FACILITY_NT_BIT.
                let status = Status((hr & !FACILITY_NT_BIT) as i32);
                write!(f, "HRESULT 0x{hr:08X} (NTSTATUS {status})")
            }
            Failure::HResult(hr)
                if hr & 0x8000_0000 != 0 && (hr >> 16) & 0x7FF == FACILITY_WIN32 =>
            {
                // HRESULT_FROM_WIN32(error) = 0x80070000 | error.
                write!(f, "HRESULT 0x{hr:08X} (Win32 error {})", hr & 0xFFFF)
            }
            Failure::HResult(hr) => write!(f, "HRESULT 0x{hr:08X}"),
            Failure::Win32(code) => write!(f, "Win32 error {code}"),
        }
    }
}

/// A fixed-size text buffer, to pad a value whose `Display` ignores widths.
struct Column<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Column<N> {
    const fn new() -> Self {
        Column { bytes: [0; N], len: 0 }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(self.bytes.get(..self.len).unwrap_or(&[])).unwrap_or("")
    }
}

impl<const N: usize> Write for Column<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Whole characters only, so the buffer stays UTF-8; a value too long is cut.
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let encoded = c.encode_utf8(&mut utf8).as_bytes();
            let end = self.len + encoded.len();
            let Some(dst) = self.bytes.get_mut(self.len..end) else { return Err(fmt::Error) };
            for (d, s) in dst.iter_mut().zip(encoded) {
                *d = *s;
            }
            self.len = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::String;
    use std::vec;
    use std::vec::Vec;
    use wire::{LogHeader, RecordFields, encode_record};

    fn reply(header: LogHeader, records: &[(RecordFields, &str)]) -> Vec<u8> {
        let mut out = vec![0u8; 4096];
        let mut at = wire::LOG_HEADER_SIZE;
        for (fields, name) in records {
            let name: Vec<u16> = name.encode_utf16().collect();
            at += encode_record(fields, &name, &mut out[at..]).unwrap();
        }
        assert!(header.encode(&mut out));
        out.truncate(at);
        out
    }

    fn read() -> RecordFields {
        RecordFields {
            sequence: 42,
            major: 3,
            minor: 0,
            kind: 0,
            requestor_mode: 1,
            flags: record_flags::POST | record_flags::NAME | record_flags::SYNCHRONOUS,
            irp_flags: 0x0000_0900,
            data_flags: 0x0000_0001,
            status: Status::END_OF_FILE.0,
            information: 0,
            file: 0xFFFF_A000_1234_5678,
            name_status: 0,
            process: 4100,
        }
    }

    #[test]
    fn a_record_is_one_line_of_its_fields() {
        let r = reply(
            LogHeader { version: 1, record_count: 1, dropped: 0, pending: 0 },
            &[(read(), r"\Device\HarddiskVolume1\a.txt")],
        );
        let mut out = String::new();
        let batch = log(&mut out, &r).unwrap();
        assert_eq!(batch, Batch { records: 1, dropped: 0, pending: 0 });
        let line = out.strip_suffix('\n').unwrap();
        assert!(!line.contains('\n'), "{out}");
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "42",
                "IRP_MJ_READ",
                "00",
                "IRP",
                "U",
                "4100",
                "00000900",
                "00000001",
                "P-N-S",
                "STATUS_END_OF_FILE",
                "0x0",
                "FFFFA00012345678",
                r"\Device\HarddiskVolume1\a.txt"
            ]
        );
        // The columns line up with the title's.
        let head = TITLE;
        for title in ["OPERATION", "VIA", "PID", "IRP ", "STATUS", "FILE", "NAME"] {
            let column = head.find(title).unwrap();
            let value = match title {
                "OPERATION" => "IRP_MJ_READ",
                "VIA" => "IRP",
                "PID" => "4100 ",
                "IRP " => "00000900",
                "STATUS" => "STATUS_END_OF_FILE",
                "FILE" => "FFFFA000",
                _ => r"\Device",
            };
            assert!(line[column..].starts_with(value), "{title}:\n{head}\n{line}");
        }
    }

    #[test]
    fn records_without_a_post_or_a_name_say_so() {
        let mut pending = read();
        pending.flags = 0;
        pending.sequence = 7;
        pending.major = 0xFF; // IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION, an FsFilter callback
        pending.kind = 2;
        pending.requestor_mode = 0;
        pending.name_status = Status::INVALID_DEVICE_REQUEST.0;
        pending.process = 0; // none, or a 1.0 filter's record
        let mut cut = read();
        cut.flags |= record_flags::NAME_TRUNCATED | record_flags::DRAINING;
        cut.status = 0x0123_4567; // no name in fsfilter's table
        cut.information = 0x10;
        cut.kind = 1;
        let mut nameless = read();
        nameless.flags = record_flags::POST;
        nameless.major = 0x7E; // no such operation
        let r = reply(
            LogHeader { version: 1, record_count: 3, dropped: 5, pending: 2 },
            &[(pending, ""), (cut, "abc"), (nameless, "")],
        );
        let mut out = String::new();
        let batch = log(&mut out, &r).unwrap();
        assert_eq!(batch, Batch { records: 3, dropped: 5, pending: 2 });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        let words = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            words(0),
            [
                "7",
                "IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION",
                "00",
                "FSF",
                "K",
                "-",
                "00000900",
                "00000001",
                "-----",
                "-",
                "-",
                "FFFFA00012345678",
                "(no",
                "name:",
                "STATUS_INVALID_DEVICE_REQUEST)"
            ]
        );
        assert_eq!(words(1)[3], "FIO");
        assert_eq!(words(1)[8], "PDNTS");
        assert_eq!(words(1)[9..11], ["0x01234567", "0x10"]);
        assert!(lines[1].ends_with(" abc..."), "{}", lines[1]);
        assert_eq!(words(2)[1], "IRP_MJ_0x7E");
        assert!(lines[2].ends_with(" (no name)"), "{}", lines[2]);
        assert_eq!(lines[3].trim(), "(5 operations not recorded: the log was full or busy)");
    }

    #[test]
    fn a_bad_reply_is_an_error() {
        let mut out = String::new();
        assert_eq!(log(&mut out, &[0; 8]), Err(PrintError::Decode(DecodeError::Truncated)));
        let mut r = reply(
            LogHeader { version: 1, record_count: 2, ..LogHeader::default() },
            &[(read(), "x")],
        );
        // The first record prints, the missing second is an error.
        assert_eq!(log(&mut out, &r), Err(PrintError::Decode(DecodeError::Truncated)));
        assert_eq!(out.lines().count(), 1);
        r[0] = 9;
        assert_eq!(log(&mut out, &r), Err(PrintError::Decode(DecodeError::Version(9))));
    }

    /// Every truncation of a reply and every byte of it set to each of a few values decodes to
    /// lines or to an error, never to a panic (the reader's build aborts on one), and the lines
    /// printed before an error are whole records.
    #[test]
    fn no_damaged_reply_panics() {
        let mut nameless = read();
        nameless.flags = record_flags::NAME_TRUNCATED;
        nameless.kind = 0xEE;
        nameless.major = 0xFE;
        nameless.status = i32::MIN;
        let good = reply(
            LogHeader { version: 1, record_count: 3, dropped: u32::MAX, pending: u32::MAX },
            &[(read(), "x\u{e9}"), (nameless, ""), (read(), "\u{10ffff}")],
        );
        let mut damaged = Vec::new();
        for len in 0..=good.len() {
            damaged.push(good[..len].to_vec());
        }
        for at in 0..good.len() {
            for v in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut r = good.clone();
                r[at] = v;
                damaged.push(r);
            }
        }
        for r in &damaged {
            let mut out = String::new();
            let _ = log(&mut out, r);
            assert!(out.is_empty() || out.ends_with('\n'), "{out}");
            let mut out = String::new();
            let _ = version(&mut out, r);
        }
    }

    /// Records still held after a reply with room left are operations in progress (a pended
    /// request, a directory notification that has not fired: hours on a desktop, where Explorer
    /// watches folders), not records that did not fit; asking again at once would spin.
    #[test]
    fn only_a_full_reply_is_followed_at_once() {
        let held = Batch { records: 1, dropped: 0, pending: 2 };
        let small = wire::LOG_HEADER_SIZE + MAX_RECORD_BYTES;
        assert!(!ask_again_at_once(&held, small, 4096));
        assert!(!ask_again_at_once(&Batch { records: 0, ..held }, wire::LOG_HEADER_SIZE, 4096));
        // Less room left than the longest record: one may not have fitted.
        assert!(ask_again_at_once(&held, 4096 - MAX_RECORD_BYTES + 1, 4096));
        assert!(ask_again_at_once(&held, 4096, 4096));
        // Nothing held: wait.
        assert!(!ask_again_at_once(&Batch { pending: 0, ..held }, 4096, 4096));
    }

    #[test]
    fn the_version_line() {
        let mut out = String::new();
        assert_eq!(version(&mut out, &[1, 0, 0, 0]), Ok((1, 0)));
        assert_eq!(out, "spy-reader: protocol version 1.0 (this reader reads 1.x)\n");
        out.clear();
        assert_eq!(
            version(&mut out, &[2, 0, 3, 0]),
            Err(PrintError::Decode(DecodeError::Version(2)))
        );
        assert_eq!(
            out,
            "spy-reader: protocol version 2.3 (this reader reads 1.x): not this reader's\n"
        );
        out.clear();
        assert_eq!(version(&mut out, &[1, 0]), Err(PrintError::Decode(DecodeError::Truncated)));
        assert_eq!(out, "spy-reader: the version reply is 2 bytes, not 4\n");
    }

    #[test]
    fn summaries_and_drops() {
        let mut out = String::new();
        dropped(&mut out, 0).unwrap();
        assert_eq!(out, "");
        dropped(&mut out, 1).unwrap();
        summary(&mut out, 12, 1, 0).unwrap();
        summary(&mut out, 3, 0, 4).unwrap();
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            [
                "(1 operation not recorded: the log was full or busy)",
                "spy-reader: 12 record(s) read, 1 operation(s) not recorded",
                "spy-reader: 3 record(s) read, 0 operation(s) not recorded, 4 record(s) still \
                 held by the filter",
            ]
        );
    }

    #[test]
    fn failures_name_what_they_carry() {
        let s = |f: Failure| std::format!("{f}");
        // HRESULT_FROM_NT(STATUS_OBJECT_NAME_NOT_FOUND): no such port.
        assert_eq!(
            s(Failure::HResult(0xD000_0034)),
            "HRESULT 0xD0000034 (NTSTATUS STATUS_OBJECT_NAME_NOT_FOUND)"
        );
        // HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND).
        assert_eq!(s(Failure::HResult(0x8007_0002)), "HRESULT 0x80070002 (Win32 error 2)");
        assert_eq!(s(Failure::HResult(0x8000_4005)), "HRESULT 0x80004005");
        assert_eq!(s(Failure::Win32(5)), "Win32 error 5");
    }

    #[test]
    fn columns_cut_what_does_not_fit() {
        let mut c = Column::<4>::new();
        assert!(write!(c, "ab\u{e9}").is_ok());
        assert_eq!(c.as_str(), "ab\u{e9}");
        assert!(write!(c, "x").is_err());
        assert_eq!(c.as_str(), "ab\u{e9}");
    }
}
