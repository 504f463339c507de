//! The lab as the spy sample's reader: a `message` step's reply decoded with the sample's own
//! protocol (`spy::wire`), for the JSON and text reports.
//!
//! File objects are kernel addresses, which differ from run to run; the reports name each by its
//! order of first appearance in the driver's log instead (`file 1`, `file 2`, ...), so that a
//! report is stable and the two models' logs compare.

use std::collections::BTreeMap;

use fsfilter::{CallbackDataFlags, IrpFlags, MajorFunction, Status, WdkFlags};
use spy::wire::{Command, DecodeError, LogReply, record_flags};

use crate::run::{MessageOutcome, Run};
use crate::scenario::MessageBody;

/// One decoded record, with the lab's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The spy's sequence number.
    pub sequence: u64,
    /// The operation's WDK name (`IRP_MJ_CREATE`), or its code in hex.
    pub operation: String,
    /// The minor function.
    pub minor: u8,
    /// `irp`, `fast_io` or `fs_filter`.
    pub kind: &'static str,
    /// `user` or `kernel`.
    pub requestor_mode: &'static str,
    /// The requesting process's id (None: no requesting thread, or a spy of protocol 1.0).
    pub process: Option<u32>,
    /// The IRP's flags, WDK spellings.
    pub irp_flags: Vec<String>,
    /// The callback data's flags, WDK spellings.
    pub data_flags: Vec<String>,
    /// The operation is synchronous.
    pub synchronous: bool,
    /// The post callback ran (`status` and `information` are the result).
    pub post: bool,
    /// The post callback ran while draining.
    pub draining: bool,
    /// The result's status (None without a post).
    pub status: Option<Status>,
    /// The result's information.
    pub information: u64,
    /// The file object, by its order of first appearance in the driver's log (None without one).
    pub file: Option<u32>,
    /// The opened name.
    pub name: Option<String>,
    /// The name was cut.
    pub name_truncated: bool,
    /// Why there is no name.
    pub name_status: Option<Status>,
}

/// A decoded `get_log` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// Operations not recorded since the previous reply.
    pub dropped: u32,
    /// Records still held by the filter.
    pub pending: u32,
    /// The records.
    pub records: Vec<Record>,
}

/// What a reply means, when the lab can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A spy log.
    Log(Log),
    /// A spy version: (major, minor).
    Version(u16, u16),
    /// A gate's counters (its `GetStats` reply, `gate::wire`).
    Stats(gate::wire::Stats),
    /// A spy (or gate) reply that does not decode.
    Error(String),
    /// Raw bytes (a `data` message, or a failed call).
    Raw,
}

fn flag_names<F: WdkFlags>(f: F) -> Vec<String> {
    let mut names: Vec<String> = f.wdk_names().map(str::to_owned).collect();
    if f.unknown_bits() != 0 {
        names.push(format!("0x{:X}", f.unknown_bits()));
    }
    names
}

/// Decodes every message of `run`, in order, numbering file objects per driver.
pub fn decode_all(run: &Run) -> Vec<(&MessageOutcome, Decoded)> {
    let mut files: BTreeMap<&str, BTreeMap<u64, u32>> = BTreeMap::new();
    run.messages
        .iter()
        .map(|m| {
            let numbers = files.entry(m.driver.as_str()).or_default();
            (m, decode(m, numbers))
        })
        .collect()
}

fn decode(m: &MessageOutcome, files: &mut BTreeMap<u64, u32>) -> Decoded {
    if m.status != Status::SUCCESS {
        return Decoded::Raw;
    }
    let command = match m.body {
        MessageBody::Spy(command) => command,
        MessageBody::GateStats => {
            return crate::gatelog::stats(&m.reply).map_or_else(Decoded::Error, Decoded::Stats);
        }
        MessageBody::Data(_) => return Decoded::Raw,
    };
    match command {
        Command::GetVersion => match spy::wire::decode_version(&m.reply) {
            Ok((major, minor)) => Decoded::Version(major, minor),
            Err(e) => Decoded::Error(e.to_string()),
        },
        Command::GetLog => match decode_log(&m.reply, files) {
            Ok(log) => Decoded::Log(log),
            Err(e) => Decoded::Error(e.to_string()),
        },
    }
}

fn decode_log(bytes: &[u8], files: &mut BTreeMap<u64, u32>) -> Result<Log, DecodeError> {
    let reply = LogReply::parse(bytes)?;
    let mut records = Vec::new();
    for r in reply.records() {
        let r = r?;
        let f = r.fields;
        let file = (f.file != 0).then(|| {
            let next = files.len() as u32 + 1;
            *files.entry(f.file).or_insert(next)
        });
        let major = MajorFunction::from_code(f.major);
        records.push(Record {
            sequence: f.sequence,
            operation: major.name().map_or_else(|| format!("0x{:02X}", f.major), str::to_owned),
            minor: f.minor,
            kind: match f.kind {
                0 => "irp",
                1 => "fast_io",
                _ => "fs_filter",
            },
            requestor_mode: if f.requestor_mode == 0 { "kernel" } else { "user" },
            process: (f.process != 0).then_some(f.process),
            irp_flags: flag_names(IrpFlags::from_bits_retain(f.irp_flags)),
            data_flags: flag_names(CallbackDataFlags::from_bits_retain(f.data_flags)),
            synchronous: f.flags & record_flags::SYNCHRONOUS != 0,
            post: f.flags & record_flags::POST != 0,
            draining: f.flags & record_flags::DRAINING != 0,
            status: (f.flags & record_flags::POST != 0).then_some(Status(f.status)),
            information: f.information,
            file,
            name: r.has_name().then(|| r.name_chars().collect()),
            name_truncated: f.flags & record_flags::NAME_TRUNCATED != 0,
            name_status: (!r.has_name()).then_some(Status(f.name_status)),
        });
    }
    Ok(Log { dropped: reply.header.dropped, pending: reply.header.pending, records })
}
