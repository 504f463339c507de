//! The gate's protocol: what the filter sends the service, the verdict it waits for, and the
//! service's `GetStats` command, as little-endian bytes with a fixed, versioned layout. The
//! filter encodes, services (the lab, a user-mode program) decode with the same code.
//!
//! A question (filter to service, the bytes after the 16-byte `FILTER_MESSAGE_HEADER`):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | u16 | `version`: [`VERSION`] |
//! | 2 | u16 | `flags` ([`question_flags`]) |
//! | 4 | u32 | `desired_access` of the create |
//! | 8 | u32 | `information`: the create's result (`FILE_OPENED` 1, `FILE_CREATED` 2, ...) |
//! | 12 | u16 | `name_units`: the name's length in UTF-16 units |
//! | 14 | u16 | reserved, 0 |
//! | 16 | u16 * `name_units` | the opened name (UTF-16LE), cut to [`MAX_NAME_UNITS`] |
//!
//! The verdict (service to filter, the bytes after the 16-byte `FILTER_REPLY_HEADER`): a `u32`,
//! [`ALLOW`] or [`DENY`]; anything else, or fewer than 4 bytes, is malformed.
//!
//! `GetStats` (service to filter, through the channel's message direction): a `u32` command
//! [`GET_STATS`]; the reply is [`STATS_SIZE`] bytes: `u16` version, `u16` reserved, then six
//! `u64` counters in [`Stats`]' order.

use fsfilter::{Error, Result, Status};

/// The protocol's version.
pub const VERSION: u16 = 1;
/// The bytes of a question before its name.
pub const QUESTION_FIXED_SIZE: usize = 16;
/// The longest name a question carries, in UTF-16 units (`MAX_PATH`); longer names are cut.
pub const MAX_NAME_UNITS: usize = 260;
/// The longest question.
pub const MAX_QUESTION: usize = QUESTION_FIXED_SIZE + 2 * MAX_NAME_UNITS;
/// The bytes of a verdict.
pub const VERDICT_SIZE: usize = 4;
/// The verdict that lets the open proceed.
pub const ALLOW: u32 = 0;
/// The verdict that cancels the open (`STATUS_ACCESS_DENIED`).
pub const DENY: u32 = 1;
/// The `GetStats` command.
pub const GET_STATS: u32 = 1;
/// The bytes of a `GetStats` reply.
pub const STATS_SIZE: usize = 4 + 6 * 8;

/// The bits of a question's `flags`.
pub mod question_flags {
    /// The name was longer than [`super::MAX_NAME_UNITS`] and is cut.
    pub const NAME_TRUNCATED: u16 = 1;
    /// The opened name could not be had: the name is the one the requester passed (the file
    /// object's, possibly relative to another open).
    pub const NAME_AS_REQUESTED: u16 = 2;
}

/// A question's fixed fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuestionFields {
    /// [`question_flags`].
    pub flags: u16,
    /// The create's `DesiredAccess`.
    pub desired_access: u32,
    /// The create's `IoStatus.Information`.
    pub information: u32,
}

/// Writes the question of `fields` and `name` into `out`; its length (the name cut to what fits
/// and to [`MAX_NAME_UNITS`], flagged when cut).
pub fn encode_question(fields: QuestionFields, name: &[u16], out: &mut [u8]) -> usize {
    let room = out.len().saturating_sub(QUESTION_FIXED_SIZE) / 2;
    let units = name.len().min(MAX_NAME_UNITS).min(room);
    let mut flags = fields.flags;
    if units < name.len() {
        flags |= question_flags::NAME_TRUNCATED;
    }
    let Some((head, tail)) = out.split_at_mut_checked(QUESTION_FIXED_SIZE) else {
        return 0;
    };
    let mut fixed = [0u8; QUESTION_FIXED_SIZE];
    put(&mut fixed, 0, &VERSION.to_le_bytes());
    put(&mut fixed, 2, &flags.to_le_bytes());
    put(&mut fixed, 4, &fields.desired_access.to_le_bytes());
    put(&mut fixed, 8, &fields.information.to_le_bytes());
    put(&mut fixed, 12, &(units as u16).to_le_bytes());
    for (d, s) in head.iter_mut().zip(fixed) {
        *d = s;
    }
    for (d, u) in tail.chunks_exact_mut(2).zip(name.iter().take(units)) {
        for (b, s) in d.iter_mut().zip(u.to_le_bytes()) {
            *b = s;
        }
    }
    QUESTION_FIXED_SIZE + 2 * units
}

/// A decoded question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question<'a> {
    /// The fixed fields.
    pub fields: QuestionFields,
    name: &'a [u8],
}

impl<'a> Question<'a> {
    /// The question in `bytes`; `STATUS_INVALID_PARAMETER` for another version, too few bytes
    /// or a name longer than the bytes.
    pub fn parse(bytes: &'a [u8]) -> Result<Question<'a>> {
        let u16_at = |o| read(bytes, o).map(u16::from_le_bytes);
        let u32_at = |o| read(bytes, o).map(u32::from_le_bytes);
        if u16_at(0) != Some(VERSION) {
            return Err(Error::INVALID_PARAMETER);
        }
        let (Some(flags), Some(desired_access), Some(information), Some(units)) =
            (u16_at(2), u32_at(4), u32_at(8), u16_at(12))
        else {
            return Err(Error::INVALID_PARAMETER);
        };
        let end = QUESTION_FIXED_SIZE + 2 * usize::from(units);
        let name = bytes.get(QUESTION_FIXED_SIZE..end).ok_or(Error::INVALID_PARAMETER)?;
        Ok(Question { fields: QuestionFields { flags, desired_access, information }, name })
    }

    /// The name's UTF-16 units.
    pub fn name_units(&self) -> impl Iterator<Item = u16> + 'a {
        self.name.chunks_exact(2).map(|c| read(c, 0).map_or(0, u16::from_le_bytes))
    }

    /// The name's characters (unpaired surrogates as U+FFFD).
    pub fn name_chars(&self) -> impl Iterator<Item = char> + 'a {
        char::decode_utf16(self.name_units()).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    }
}

/// What a service answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// [`ALLOW`].
    Allow,
    /// [`DENY`].
    Deny,
}

impl Verdict {
    /// The verdict in the first `len` bytes of `reply`; `None` when malformed.
    pub fn parse(reply: &[u8]) -> Option<Verdict> {
        match read(reply, 0).map(u32::from_le_bytes) {
            Some(ALLOW) if reply.len() == VERDICT_SIZE => Some(Verdict::Allow),
            Some(DENY) if reply.len() == VERDICT_SIZE => Some(Verdict::Deny),
            _ => None,
        }
    }

    /// The verdict's bytes.
    pub const fn bytes(self) -> [u8; VERDICT_SIZE] {
        match self {
            Verdict::Allow => ALLOW.to_le_bytes(),
            Verdict::Deny => DENY.to_le_bytes(),
        }
    }
}

/// The gate's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Opens the service was asked about.
    pub asked: u64,
    /// Opens it allowed.
    pub allowed: u64,
    /// Opens it denied.
    pub denied: u64,
    /// Questions that timed out (not taken, or not answered, in `TimeoutMs`).
    pub timed_out: u64,
    /// Questions that failed: the client disconnected, the send failed, or the verdict was
    /// malformed.
    pub failed: u64,
    /// Opens that qualified while no client was connected, or that the connected service's own
    /// process made (not asked: rule 26).
    pub unasked: u64,
}

impl Stats {
    /// The counters in order.
    pub const fn values(&self) -> [u64; 6] {
        [self.asked, self.allowed, self.denied, self.timed_out, self.failed, self.unasked]
    }

    /// The `GetStats` reply into `out`; `STATUS_BUFFER_TOO_SMALL` when it does not fit.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize> {
        let out = out.get_mut(..STATS_SIZE).ok_or_else(buffer_too_small)?;
        let mut bytes = [0u8; STATS_SIZE];
        put(&mut bytes, 0, &VERSION.to_le_bytes());
        for (i, v) in self.values().iter().enumerate() {
            put(&mut bytes, 4 + 8 * i, &v.to_le_bytes());
        }
        for (d, s) in out.iter_mut().zip(bytes) {
            *d = s;
        }
        Ok(STATS_SIZE)
    }

    /// A `GetStats` reply; `STATUS_INVALID_PARAMETER` when short or of another version.
    pub fn decode(bytes: &[u8]) -> Result<Stats> {
        if read(bytes, 0).map(u16::from_le_bytes) != Some(VERSION) || bytes.len() < STATS_SIZE {
            return Err(Error::INVALID_PARAMETER);
        }
        let v = |i: usize| read(bytes, 4 + 8 * i).map_or(0, u64::from_le_bytes);
        Ok(Stats {
            asked: v(0),
            allowed: v(1),
            denied: v(2),
            timed_out: v(3),
            failed: v(4),
            unasked: v(5),
        })
    }
}

/// `STATUS_BUFFER_TOO_SMALL` as an error.
pub fn buffer_too_small() -> Error {
    Error::new(Status::BUFFER_TOO_SMALL).unwrap_or(Error::INVALID_PARAMETER)
}

/// The `GetStats` command's bytes.
pub const fn get_stats() -> [u8; 4] {
    GET_STATS.to_le_bytes()
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(d) = out.get_mut(at..at + bytes.len()) {
        for (d, s) in d.iter_mut().zip(bytes) {
            *d = *s;
        }
    }
}

fn read<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn a_question_round_trips_and_long_names_are_cut() {
        let name: Vec<u16> = r"\Device\HarddiskVolume1\a.txt".encode_utf16().collect();
        let mut out = [0u8; MAX_QUESTION];
        let f = QuestionFields { flags: 0, desired_access: 0x12_0089, information: 1 };
        let n = encode_question(f, &name, &mut out);
        assert_eq!(n, 16 + 2 * name.len());
        let q = Question::parse(&out[..n]).unwrap();
        assert_eq!(q.fields, f);
        assert_eq!(q.name_chars().collect::<String>(), r"\Device\HarddiskVolume1\a.txt");
        assert_eq!(&out[..4], &[1, 0, 0, 0], "version 1, no flags");
        let long = std::vec![b'x' as u16; 300];
        let n = encode_question(f, &long, &mut out);
        let q = Question::parse(&out[..n]).unwrap();
        assert_eq!(q.name_units().count(), MAX_NAME_UNITS);
        assert_eq!(q.fields.flags, question_flags::NAME_TRUNCATED);
        let mut small = [0u8; 20];
        assert_eq!(encode_question(f, &name, &mut small), 20);
        assert_eq!(encode_question(f, &name, &mut small[..15]), 0);
        // Malformed questions.
        assert!(Question::parse(&out[..15]).is_err());
        assert!(Question::parse(&out[..n - 1]).is_err());
        let mut v2 = out;
        v2[0] = 2;
        assert!(Question::parse(&v2[..n]).is_err());
    }

    #[test]
    fn verdicts_are_four_bytes_and_anything_else_is_malformed() {
        assert_eq!(Verdict::parse(&[0, 0, 0, 0]), Some(Verdict::Allow));
        assert_eq!(Verdict::parse(&[1, 0, 0, 0]), Some(Verdict::Deny));
        assert_eq!(Verdict::parse(&Verdict::Deny.bytes()), Some(Verdict::Deny));
        for bad in [&[2u8, 0, 0, 0][..], &[0, 0, 0], &[], &[0, 0, 0, 0, 0]] {
            assert_eq!(Verdict::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stats_round_trip() {
        let s = Stats { asked: 1, allowed: 2, denied: 3, timed_out: 4, failed: 5, unasked: 6 };
        let mut out = [0u8; STATS_SIZE];
        assert_eq!(s.encode(&mut out), Ok(STATS_SIZE));
        assert_eq!(Stats::decode(&out), Ok(s));
        assert_eq!(s.encode(&mut out[..10]), Err(buffer_too_small()));
        assert!(Stats::decode(&out[..STATS_SIZE - 1]).is_err());
        assert_eq!(get_stats(), [1, 0, 0, 0]);
    }
}
