//! Malformed IRPs through both backends: a machine with one volume and a sample (probe or
//! passthrough) loaded as a minifilter, then as a legacy filter, takes the same sequence of raw
//! requests (`fsfilter_sim::Machine::send_irp`): creates with any UTF-16 name (empty, huge,
//! unpaired surrogates, embedded NULs, no leading backslash, stream names), reads and writes
//! with any length and offset (negative, huge, unaligned), information queries and sets with
//! buffers too small or missing, directory queries with odd patterns, change notifications
//! (which may wait), control codes, locks.
//!
//! Checked after each run: the machine did not crash, the verifier found nothing in our
//! driver, every request that started got a status, and the driver unloads cleanly.

#![no_main]

use arbitrary::Arbitrary;
use fsfilter_sim::{
    EventKind, FsKind, Handle, InstanceLayout, InstanceSpec, InstancesSpec, Machine, MachineConfig,
    RawBuffer, RawIrp, RawOp, ServiceSpec, StartType, VolumeSpec,
};
use libfuzzer_sys::fuzz_target;

/// The most requests one input sends.
const MAX_OPS: usize = 24;
/// The service name of the filter under test.
const DRIVER: &str = "FuzzFilter";

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Sample {
    Probe,
    Passthrough,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Fs {
    Ntfs,
    Fat,
    Refs,
    Npfs,
}

#[derive(Arbitrary, Debug)]
enum Name {
    Empty,
    Text(String),
    Units(Vec<u16>),
    /// `count` copies of `unit` (up to the UNICODE_STRING limit).
    Huge {
        unit: u16,
        count: u16,
    },
    /// `\file:stream:$DATA`.
    Stream {
        file: String,
        stream: String,
    },
    /// An existing file.
    Known(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Length {
    Zero,
    Small(u8),
    Sector(u8),
    Any(u32),
    Max,
}

impl Length {
    fn get(self) -> u32 {
        match self {
            Length::Zero => 0,
            Length::Small(n) => u32::from(n),
            Length::Sector(n) => u32::from(n) * 512,
            Length::Any(n) => n,
            Length::Max => u32::MAX,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Offset {
    Zero,
    Small(u16),
    Negative(i8),
    /// `FILE_WRITE_TO_END_OF_FILE`.
    EndOfFile,
    /// `FILE_USE_FILE_POINTER_POSITION`.
    FilePointer,
    Any(i64),
    Huge,
}

impl Offset {
    fn get(self) -> i64 {
        match self {
            Offset::Zero => 0,
            Offset::Small(n) => i64::from(n),
            Offset::Negative(n) => -i64::from(n).abs() - 3,
            Offset::EndOfFile => -1,
            Offset::FilePointer => -2,
            Offset::Any(n) => n,
            Offset::Huge => i64::MAX,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Buffer {
    Null,
    User,
    Mdl,
    System,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Create {
        name: Name,
        disposition: u8,
        options: u32,
        share: u8,
        attributes: u16,
        access: u32,
        ea_length: u8,
    },
    Read {
        length: Length,
        offset: Offset,
        key: u8,
    },
    Write {
        length: Length,
        offset: Offset,
        key: u8,
    },
    QueryInformation {
        length: Length,
        class: u8,
    },
    SetInformation {
        length: Length,
        class: u8,
    },
    QueryVolumeInformation {
        length: Length,
        class: u8,
    },
    DirectoryControl {
        length: Length,
        class: u8,
        pattern: Option<Name>,
        index: u32,
    },
    /// A change notification: the file system may hold it (`STATUS_PENDING`) until a change or
    /// the handle's cleanup.
    NotifyChangeDirectory {
        length: Length,
        filter: u32,
    },
    FileSystemControl {
        code: u32,
        input: Length,
        output: Length,
    },
    DeviceControl {
        code: u32,
        input: Length,
        output: Length,
    },
    Lock {
        offset: Offset,
        length: Option<Offset>,
        key: u8,
    },
    Flush,
    Close,
    QueryEa {
        length: Length,
        index: u32,
    },
    SetEa {
        length: Length,
    },
    SetVolumeInformation {
        length: Length,
        class: u8,
    },
    InternalDeviceControl {
        code: u32,
        input: Length,
        output: Length,
    },
    QuerySecurity {
        information: u32,
        length: Length,
    },
    SetSecurity {
        information: u32,
    },
    QueryQuota {
        length: Length,
    },
    SetQuota {
        length: Length,
    },
}

#[derive(Arbitrary, Debug)]
struct Request {
    op: Op,
    /// Which open handle (modulo the count).
    handle: u8,
    minor: u8,
    irp_flags: u16,
    sl_flags: u8,
    user_mode: bool,
    buffer: Buffer,
    data: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    sample: Sample,
    fs: Fs,
    requests: Vec<Request>,
}

const FILES: [&str; 3] = ["\\a.txt", "\\dir\\b.bin", "\\dir\\"];

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn name_units(n: &Name) -> Vec<u16> {
    match n {
        Name::Empty => Vec::new(),
        Name::Text(s) => units(s),
        Name::Units(u) => u.clone(),
        Name::Huge { unit, count } => vec![*unit; usize::from(*count)],
        Name::Stream { file, stream } => units(&format!("\\{file}:{stream}:$DATA")),
        Name::Known(i) => units(FILES[usize::from(*i) % FILES.len()]),
    }
}

fn install(m: &mut Machine, sample: Sample, minifilter: bool) {
    let s = fsfilter_lab::samples::find(match sample {
        Sample::Probe => "probe",
        Sample::Passthrough => "passthrough",
    })
    .expect("a lab sample");
    let model = if minifilter {
        fsfilter_lab::scenario::Model::Minifilter
    } else {
        fsfilter_lab::scenario::Model::Legacy
    };
    let mut spec = ServiceSpec::new(DRIVER, s.entry(model), model.name());
    spec.start = StartType::Boot;
    spec.group = Some(s.group.to_owned());
    if minifilter {
        fsfilter_lab::fltmgr::install(m);
        spec.depends_on = vec!["FltMgr".to_owned()];
        let instance = format!("{DRIVER} Instance");
        spec.instances = Some(InstancesSpec {
            default_instance: instance.clone(),
            instances: vec![InstanceSpec { name: instance, altitude: "370000".into(), flags: 0 }],
            layout: InstanceLayout::Both,
        });
    }
    m.install(spec);
}

fn run(input: &Input, minifilter: bool) {
    let mut m = Machine::new(MachineConfig { seed: 1 });
    let kind = match input.fs {
        Fs::Ntfs => FsKind::Ntfs,
        Fs::Fat => FsKind::Fat,
        Fs::Refs => FsKind::Refs,
        Fs::Npfs => FsKind::Npfs,
    };
    let mut spec = VolumeSpec::new(if kind == FsKind::Npfs { "pipe" } else { "C:" }, kind);
    if kind != FsKind::Npfs {
        spec = spec.file(FILES[0], b"hello, fuzz").file(FILES[1], &[7; 600]).file(FILES[2], b"");
    }
    let volume = m.add_volume(spec);
    install(&mut m, input.sample, minifilter);
    m.boot();
    let mut handles: Vec<Handle> = Vec::new();
    if let Ok(h) = m.open(volume, FILES[0], fsfilter_sim::CreateOptions::default()) {
        handles.push(h);
    }
    for r in input.requests.iter().take(MAX_OPS) {
        let handle = if handles.is_empty() {
            Handle(u32::MAX)
        } else {
            handles[usize::from(r.handle) % handles.len()]
        };
        let (name, pattern);
        let op = match &r.op {
            Op::Create { name: n, disposition, options, share, attributes, access, ea_length } => {
                name = name_units(n);
                RawOp::Create {
                    volume,
                    name: &name,
                    options: (u32::from(*disposition % 8) << 24) | (options & 0x00FF_FFFF),
                    share: u16::from(*share & 7),
                    attributes: *attributes,
                    access: *access,
                    ea_length: u32::from(*ea_length),
                }
            }
            Op::Read { length, offset, key } => {
                RawOp::Read { length: length.get(), offset: offset.get(), key: u32::from(*key) }
            }
            Op::Write { length, offset, key } => {
                RawOp::Write { length: length.get(), offset: offset.get(), key: u32::from(*key) }
            }
            Op::QueryInformation { length, class } => {
                RawOp::QueryInformation { length: length.get(), class: u32::from(*class) }
            }
            Op::SetInformation { length, class } => {
                RawOp::SetInformation { length: length.get(), class: u32::from(*class) }
            }
            Op::QueryVolumeInformation { length, class } => {
                RawOp::QueryVolumeInformation { length: length.get(), class: u32::from(*class) }
            }
            Op::DirectoryControl { length, class, pattern: p, index } => {
                pattern = p.as_ref().map(name_units);
                RawOp::DirectoryControl {
                    length: length.get(),
                    class: u32::from(*class),
                    pattern: pattern.as_deref(),
                    index: *index,
                }
            }
            Op::NotifyChangeDirectory { length, filter } => {
                RawOp::NotifyChangeDirectory { length: length.get(), filter: *filter }
            }
            Op::FileSystemControl { code, input, output } => RawOp::FileSystemControl {
                code: *code,
                input_length: input.get(),
                output_length: output.get(),
            },
            Op::DeviceControl { code, input, output } => RawOp::DeviceControl {
                code: *code,
                input_length: input.get(),
                output_length: output.get(),
            },
            Op::Lock { offset, length, key } => RawOp::LockControl {
                offset: offset.get(),
                length: length.map(Offset::get),
                key: u32::from(*key),
            },
            Op::Flush => RawOp::Flush,
            Op::QueryEa { length, index } => RawOp::QueryEa { length: length.get(), index: *index },
            Op::SetEa { length } => RawOp::SetEa { length: length.get() },
            Op::SetVolumeInformation { length, class } => {
                RawOp::SetVolumeInformation { length: length.get(), class: u32::from(*class) }
            }
            Op::InternalDeviceControl { code, input, output } => RawOp::InternalDeviceControl {
                code: *code,
                input_length: input.get(),
                output_length: output.get(),
            },
            Op::QuerySecurity { information, length } => {
                RawOp::QuerySecurity { information: *information, length: length.get() }
            }
            Op::SetSecurity { information } => RawOp::SetSecurity { information: *information },
            Op::QueryQuota { length } => RawOp::QueryQuota { length: length.get() },
            Op::SetQuota { length } => RawOp::SetQuota { length: length.get() },
            Op::Close => {
                if !handles.is_empty() {
                    let h = handles.remove(usize::from(r.handle) % handles.len());
                    let _ = m.close_handle(h);
                }
                continue;
            }
        };
        let result = m.send_irp(RawIrp {
            handle,
            op,
            minor: r.minor,
            irp_flags: u32::from(r.irp_flags),
            sl_flags: r.sl_flags,
            user_mode: r.user_mode,
            buffer: match r.buffer {
                Buffer::Null => RawBuffer::Null,
                Buffer::User => RawBuffer::User,
                Buffer::Mdl => RawBuffer::Mdl,
                Buffer::System => RawBuffer::System,
            },
            data: &r.data,
        });
        // Only a change notification may wait (for a change, or the handle's cleanup at the end).
        let may_wait = matches!(r.op, Op::NotifyChangeDirectory { .. });
        assert!(
            result.status != fsfilter::Status::PENDING || may_wait,
            "{:?} never completed",
            r.op
        );
        if let Some(h) = result.handle {
            handles.push(h);
        }
        assert_eq!(m.crashed(), None, "after {r:?}");
    }
    for h in handles {
        let _ = m.close_handle(h);
    }
    m.settle();
    let stop = m.stop(DRIVER);
    m.settle();
    assert_eq!(m.crashed(), None);
    let ours: Vec<_> = m
        .findings()
        .into_iter()
        .filter(|(_, driver, _)| driver.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(DRIVER)))
        .collect();
    assert!(ours.is_empty(), "verifier findings for {DRIVER}: {ours:?} (stop: {stop:?})");
    // Every request that started got a status.
    let events = m.events();
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::IoStart { io, .. } => Some(*io),
            _ => None,
        })
        .collect();
    for io in started {
        let done = events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::IoComplete { io: c, .. } if *c == io));
        assert!(done, "request {io:?} never got a status");
    }
}

fuzz_target!(|input: Input| {
    run(&input, true);
    run(&input, false);
});
