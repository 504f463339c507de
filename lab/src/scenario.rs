//! Scenario files (../shared/docs/scenario.md): parsing and validation with errors that name the
//! file, the line and the key.
//!
//! The TOML document is read as a spanned tree and converted by hand, so that every error can say
//! exactly where it is: unknown keys, wrong types, unknown samples or drivers, altitudes that are
//! not decimal, two instances at one altitude, a legacy driver given an altitude, a step naming a
//! missing volume.

use std::collections::BTreeMap;
use std::fmt;

use fsfilter::{Altitude, MajorFunction};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::samples;

/// A scenario that could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file (as given on the command line).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The key at fault, as a dotted path (`driver[1].altitude`), or empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.file, self.line, self.key, self.message)
        }
    }
}

impl std::error::Error for ScenarioError {}

/// A file system kind, as scenarios spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileSystem {
    /// NTFS.
    Ntfs,
    /// FAT.
    Fat,
    /// exFAT.
    Exfat,
    /// ReFS.
    Refs,
    /// CDFS.
    Cdfs,
    /// UDFS.
    Udfs,
    /// A network share through MUP.
    Mup,
    /// Named pipes.
    Npfs,
    /// Mailslots.
    Msfs,
}

impl FileSystem {
    const ALL: [(&'static str, FileSystem); 9] = [
        ("ntfs", FileSystem::Ntfs),
        ("fat", FileSystem::Fat),
        ("exfat", FileSystem::Exfat),
        ("refs", FileSystem::Refs),
        ("cdfs", FileSystem::Cdfs),
        ("udfs", FileSystem::Udfs),
        ("mup", FileSystem::Mup),
        ("npfs", FileSystem::Npfs),
        ("msfs", FileSystem::Msfs),
    ];

    /// The scenario spelling.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, f)| *f == self).map_or("?", |(n, _)| n)
    }
}

/// When a volume mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mount {
    /// While booting.
    Boot,
    /// Only by a `mount` step.
    Step,
}

/// A volume of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// DOS name or device path.
    pub name: String,
    /// Its file system.
    pub filesystem: FileSystem,
    /// When it mounts.
    pub mount: Mount,
    /// A Dev Drive.
    pub dev_drive: bool,
    /// Trusted by an administrator.
    pub trusted: bool,
    /// Files present at boot: path and contents (an extension of scenario.md).
    pub files: Vec<(String, Vec<u8>)>,
    /// The file system pends the volume's mount requests and completes each this many
    /// milliseconds later from a worker thread (`mount_pends_ms`, an extension of scenario.md).
    pub mount_pends_ms: Option<u64>,
    /// The file system leaves each new volume device initializing this many milliseconds after
    /// its mount (`initialize_late_ms`, an extension of scenario.md).
    pub initialize_late_ms: Option<u64>,
    /// Unformatted media: no file system recognizes it, and a volume open mounts it with RAW
    /// (`blank`, an extension of scenario.md).
    pub blank: bool,
}

/// A filter model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// A Filter Manager minifilter.
    Minifilter,
    /// A legacy filter with device objects.
    Legacy,
}

impl Model {
    /// The scenario spelling.
    pub fn name(self) -> &'static str {
        match self {
            Model::Minifilter => "minifilter",
            Model::Legacy => "legacy",
        }
    }

    /// The other model.
    pub fn other(self) -> Model {
        match self {
            Model::Minifilter => Model::Legacy,
            Model::Legacy => Model::Minifilter,
        }
    }
}

/// A service start type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Boot start.
    Boot,
    /// System start.
    System,
    /// Auto start.
    Auto,
    /// Demand start (only by a `load` step).
    Demand,
}

impl Start {
    /// The scenario spelling.
    pub fn name(self) -> &'static str {
        match self {
            Start::Boot => "boot",
            Start::System => "system",
            Start::Auto => "auto",
            Start::Demand => "demand",
        }
    }
}

/// A value of a driver's `Parameters` key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parameter {
    /// `REG_SZ` (a TOML string).
    String(String),
    /// `REG_DWORD` (a TOML integer or boolean).
    Dword(u32),
}

/// A filter driver of the scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Driver {
    /// Service name.
    pub name: String,
    /// The sample it is built from.
    pub sample: String,
    /// Its model.
    pub model: Model,
    /// Start type.
    pub start: Start,
    /// Load-order group.
    pub group: Option<String>,
    /// Default instance altitude (minifilters).
    pub altitude: Option<String>,
    /// Default instance `Flags`.
    pub instance_flags: u32,
    /// `Parameters` values.
    pub parameters: Vec<(String, Parameter)>,
    /// The line of its `[[driver]]` table.
    pub line: usize,
}

/// Read and write modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// Through the cache.
    Cached,
    /// Non-cached.
    NonCached,
    /// Paging I/O.
    Paging,
}

/// What a step does (scenario.md, "Step fields by action").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `sc start` / `fltmc load`.
    Load {
        /// The driver.
        driver: String,
    },
    /// `fltmc unload` (non-mandatory).
    Unload {
        /// The driver.
        driver: String,
    },
    /// `sc stop` (mandatory).
    Stop {
        /// The driver.
        driver: String,
    },
    /// Mount a volume.
    Mount {
        /// The volume.
        volume: String,
    },
    /// Dismount a volume.
    Dismount {
        /// The volume.
        volume: String,
    },
    /// The PnP manager removes a volume's storage device (`Machine::remove_volume`): a safe
    /// removal (query-remove, then remove; cancel-remove when the query is refused) or a surprise
    /// removal.
    Remove {
        /// The volume.
        volume: String,
        /// `IRP_MN_SURPRISE_REMOVAL` instead of the query-remove.
        surprise: bool,
    },
    /// `fltmc attach`.
    Attach {
        /// The driver.
        driver: String,
        /// The volume.
        volume: String,
        /// An altitude for the instance (`FilterAttachAtAltitude`).
        altitude: Option<String>,
        /// The instance name (the default instance when absent).
        instance: Option<String>,
    },
    /// `fltmc detach`.
    Detach {
        /// The driver.
        driver: String,
        /// The volume.
        volume: String,
        /// The instance name (the default instance when absent).
        instance: Option<String>,
    },
    /// One user-mode request.
    Io {
        /// The volume.
        volume: String,
        /// The operation.
        op: MajorFunction,
        /// The file, relative to the volume.
        path: Option<String>,
        /// The byte offset (read, write, lock).
        offset: Option<u64>,
        /// The length (read, lock, buffers; the new size for set_information).
        length: Option<u32>,
        /// Cached, non-cached or paging (read, write).
        mode: IoMode,
        /// The bytes to write.
        data: Option<Vec<u8>>,
        /// The information class of a query_information step (`FileStandardInformation` when
        /// absent): an extension of scenario.md, [`QUERY_CLASSES`].
        class: Option<u32>,
        /// A directory_control step that waits for changes (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`)
        /// instead of listing the directory: an extension of scenario.md.
        notify: Option<Notify>,
        /// A lock step that waits for a conflicting range instead of failing at once
        /// (`FailImmediately` FALSE): an extension of scenario.md, `wait = true`.
        wait: bool,
        /// A create step that opens the path's handle for asynchronous (overlapped) I/O:
        /// an extension of scenario.md, `overlapped = true`.
        overlapped: bool,
        /// A `map` step's page protection (`PAGE_*`; None: `PAGE_READONLY`): an extension of
        /// scenario.md, `protection = "execute_read"`, [`PROTECTIONS`].
        protection: Option<u32>,
        /// Who writes a paging write's pages back (None: the lazy writer, as before the
        /// extension): an extension of scenario.md, `writer = "modified-page-writer"`,
        /// [`WRITERS`].
        writer: Option<fsfilter_sim::PageWriter>,
        /// The FSCTL code of an fsctl step (None: `FSCTL_IS_VOLUME_MOUNTED`, as before the
        /// extension): an extension of scenario.md, `control = "request_oplock_level_1"`,
        /// [`CONTROLS`].
        control: Option<u32>,
        /// A create step with `FILE_COMPLETE_IF_OPLOCKED`: an extension of scenario.md,
        /// `complete_if_oplocked = true`.
        complete_if_oplocked: bool,
        /// A create step with `FILE_OPEN_REPARSE_POINT` (it opens a link itself, not what the
        /// link names): an extension of scenario.md, `open_reparse_point = true`.
        open_reparse_point: bool,
        /// A create step with `FILE_DELETE_ON_CLOSE` (its handle's last close deletes the file,
        /// or the named stream it names): an extension of scenario.md, `delete_on_close = true`.
        delete_on_close: bool,
        /// A create step's disposition (`FILE_SUPERSEDE` 0 to `FILE_OVERWRITE_IF` 5; None:
        /// `FILE_OPEN_IF`, as before the extension): an extension of scenario.md,
        /// `disposition = "overwrite"`, [`DISPOSITIONS`].
        disposition: Option<u32>,
        /// Which of the path's handles the step uses (None: the path's own, as before the
        /// extension): an extension of scenario.md, `handle = "second"`, so that a scenario can
        /// hold several handles on one file.
        handle: Option<String>,
        /// The user process that makes the request (None: the default process, `user`): an
        /// extension of scenario.md, `process = "<name>"` ([`process_field`]).
        process: Option<String>,
    },
    /// `CancelIoEx` on the handle of an io step's path (an extension of scenario.md: the io op
    /// `cancel`): the requests still outstanding on it are cancelled. No request is sent.
    Cancel {
        /// The volume.
        volume: String,
        /// The file, relative to the volume.
        path: Option<String>,
        /// Which of the path's handles (None: the path's own), as for [`Action::Io`].
        handle: Option<String>,
    },
    /// A link on a volume (an extension of scenario.md): the path is opened (made when absent,
    /// a directory for a junction), given a reparse point with `FSCTL_SET_REPARSE_POINT`, as
    /// `mklink` does, and closed. Filters see the three requests.
    Link {
        /// The volume.
        volume: String,
        /// The link, relative to the volume.
        path: String,
        /// What it names, as written ([`link_names`]).
        target: String,
        /// A symbolic link or a junction.
        kind: LinkKind,
        /// A symbolic link to a directory (`mklink /D`): the link is a directory.
        directory: bool,
    },
    /// Record the stacks.
    Snapshot {
        /// Its label.
        label: String,
    },
    /// A user-mode reader connects to a driver's message channel (an extension of scenario.md):
    /// `FilterConnectCommunicationPort` on a minifilter's port, `CreateFile` on a legacy filter's
    /// `\\.\<name>` (its control device's symbolic link).
    Connect {
        /// The driver.
        driver: String,
        /// The connection's name in later steps (the driver's name when absent).
        client: String,
        /// The connection context (bytes of a string; none when absent).
        context: Option<Vec<u8>>,
        /// Who connects: `user = "administrator"` (the default) or `"standard"`.
        user: fsfilter_sim::Caller,
        /// The legacy channel's handle is opened with `FILE_FLAG_OVERLAPPED`: set when a later
        /// `serve` step uses the connection (its gets are requests the driver holds).
        overlapped: bool,
        /// The user process that connects (None: the default process, `user`): an extension of
        /// scenario.md, `process = "<name>"`. The connection's `message`, `serve` and
        /// `disconnect` steps run in it too.
        process: Option<String>,
    },
    /// A message on a connection (an extension of scenario.md): `FilterSendMessage`, or
    /// `DeviceIoControl(IOCTL_FSFILTER_MESSAGE)` on the legacy channel.
    Message {
        /// The connection.
        client: String,
        /// What is sent.
        body: MessageBody,
        /// The reply buffer's size.
        reply: u32,
    },
    /// The reader closes its connection (an extension of scenario.md): `CloseHandle`.
    Disconnect {
        /// The connection.
        client: String,
    },
    /// The connection becomes a message server (an extension of scenario.md): it keeps `gets`
    /// gets pending (`FilterGetMessage`, or `DeviceIoControl(IOCTL_FSFILTER_GET_MESSAGE)` on
    /// the legacy channel) and answers each message `delay_ms` (virtual time) after it came,
    /// with the first rule's reply whose text the message contains, or `reply`
    /// (`FilterReplyMessage`, `IOCTL_FSFILTER_REPLY_MESSAGE`), until the connection closes.
    Serve(Serve),
}

/// What a `link` step makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A symbolic link (`IO_REPARSE_TAG_SYMLINK`, `mklink`).
    Symlink,
    /// A junction, a mount point on a directory (`IO_REPARSE_TAG_MOUNT_POINT`, `mklink /J`).
    Junction,
}

/// The kinds of a `link` step, by their scenario names.
pub const LINK_KINDS: [(&str, LinkKind); 2] =
    [("symlink", LinkKind::Symlink), ("junction", LinkKind::Junction)];

/// The substitute name of a link to `target`, and whether it is relative to the link's
/// directory: `D:\dir` is `\??\D:\dir`, `\\server\share\dir` is `\??\UNC\server\share\dir`,
/// a name that starts with one backslash (`\??\...`, `\Device\HarddiskVolume2\...`) is taken
/// as it is, anything else is relative (`..\dir\file`, a symbolic link's only).
pub fn link_names(target: &str) -> (String, bool) {
    let drive = target.len() >= 2
        && target.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && target.as_bytes().get(1) == Some(&b':');
    if drive {
        (format!("\\??\\{target}"), false)
    } else if let Some(unc) = target.strip_prefix("\\\\") {
        (format!("\\??\\UNC\\{unc}"), false)
    } else if target.starts_with('\\') {
        (target.to_owned(), false)
    } else {
        (target.to_owned(), true)
    }
}

/// A `serve` step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serve {
    /// The connection.
    pub client: String,
    /// The gets kept pending (1 to [`MAX_GETS`]).
    pub gets: u32,
    /// Virtual milliseconds between a message and its reply.
    pub delay_ms: u64,
    /// Each get's buffer, header included.
    pub capacity: u32,
    /// The reply when no rule matches.
    pub reply: ServeReply,
    /// The rules, tried in order.
    pub rules: Vec<ServeRule>,
    /// The connection's driver is a gate: messages are its questions (`gate::wire`), rules
    /// match the question's name, `allow` and `deny` are its verdicts.
    pub gate: bool,
}

/// A rule of a `serve` step: a message whose text (a gate question: its name) contains
/// `contains` (compared without case) gets `reply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeRule {
    /// The text looked for.
    pub contains: String,
    /// The reply.
    pub reply: ServeReply,
}

/// What a `serve` step answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeReply {
    /// No reply: the sender waits until its timeout (`none`).
    Nothing,
    /// These bytes (`hex:` and byte pairs, or a string's bytes).
    Bytes(Vec<u8>),
    /// A gate verdict (`allow`, `deny`).
    Verdict(gate::wire::Verdict),
}

impl ServeReply {
    /// The reply's bytes, or `None` for no reply.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            ServeReply::Nothing => None,
            ServeReply::Bytes(b) => Some(b.clone()),
            ServeReply::Verdict(v) => Some(v.bytes().to_vec()),
        }
    }

    /// How scenarios spell it.
    pub fn spelling(&self) -> String {
        match self {
            ServeReply::Nothing => "none".into(),
            ServeReply::Verdict(gate::wire::Verdict::Allow) => "allow".into(),
            ServeReply::Verdict(gate::wire::Verdict::Deny) => "deny".into(),
            ServeReply::Bytes(b) => {
                format!("hex:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
            }
        }
    }
}

/// The most gets a `serve` step keeps pending.
pub const MAX_GETS: u64 = 16;

/// A `serve` step's get buffer when it names none.
pub const DEFAULT_CAPACITY: u32 = 4096;

/// What a `message` step sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A command of the spy sample's reader protocol (`spy::wire`).
    Spy(spy::wire::Command),
    /// The gate sample's `GetStats` (`gate::wire`): `command = "get_stats"`.
    GateStats,
    /// Raw bytes (a string's).
    Data(Vec<u8>),
}

/// The spy protocol's commands as scenarios spell them.
pub const SPY_COMMANDS: [(&str, spy::wire::Command); 2] =
    [("get_log", spy::wire::Command::GetLog), ("get_version", spy::wire::Command::GetVersion)];

/// The gate protocol's commands as scenarios spell them (`message` steps on a gate driver).
pub const GATE_COMMANDS: [(&str, MessageBody); 1] = [("get_stats", MessageBody::GateStats)];

/// The spelling of a spy command.
pub fn spy_command_name(c: spy::wire::Command) -> &'static str {
    SPY_COMMANDS.iter().find(|(_, x)| *x == c).map_or("?", |(n, _)| n)
}

/// A `message` step's reply buffer when it names none.
pub const DEFAULT_REPLY: u32 = 4096;

impl Action {
    /// The user process the step names (`process = "<name>"`; None: the default one).
    pub fn process(&self) -> Option<&str> {
        match self {
            Action::Io { process, .. } | Action::Connect { process, .. } => process.as_deref(),
            _ => None,
        }
    }

    /// The scenario spelling of the action.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Load { .. } => "load",
            Action::Unload { .. } => "unload",
            Action::Stop { .. } => "stop",
            Action::Mount { .. } => "mount",
            Action::Dismount { .. } => "dismount",
            Action::Remove { .. } => "remove",
            Action::Attach { .. } => "attach",
            Action::Detach { .. } => "detach",
            Action::Io { .. } | Action::Cancel { .. } => "io",
            Action::Link { .. } => "link",
            Action::Snapshot { .. } => "snapshot",
            Action::Connect { .. } => "connect",
            Action::Message { .. } => "message",
            Action::Disconnect { .. } => "disconnect",
            Action::Serve(_) => "serve",
        }
    }
}

/// A step of the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What it does.
    pub action: Action,
    /// Its line.
    pub line: usize,
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Its name (the file stem when absent).
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// The volumes.
    pub volumes: Vec<Volume>,
    /// The drivers.
    pub drivers: Vec<Driver>,
    /// The steps.
    pub steps: Vec<Step>,
    /// What is valid but will not do what it seems to: a driver whose parameter values its
    /// sample refuses (its load fails with `STATUS_INVALID_PARAMETER`), an io step's `offset`,
    /// `length` or `path` that its op does not use. `check`, `run`, `compare` and `sweep` print
    /// them on standard error; the run goes ahead, as a researcher may want that failure.
    pub warnings: Vec<ScenarioError>,
}

/// One character of a name as Windows compares names: its Unicode uppercase when that is one
/// character (`ä` is `Ä`, `σ` is `Σ`), else itself (`ß`, whose uppercase is `SS`). Windows folds
/// service and object names through its upcase table (`RtlUpcaseUnicodeChar`), one UTF-16 unit
/// to one; this is the closest mapping Rust offers, and it agrees with ASCII case folding on
/// ASCII letters.
fn upcase(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// True when two driver or volume names are one name on Windows: equal after [`upcase`].
pub fn same_name(a: &str, b: &str) -> bool {
    a.chars().map(upcase).eq(b.chars().map(upcase))
}

impl Scenario {
    /// The driver named `name`.
    pub fn driver(&self, name: &str) -> Option<&Driver> {
        self.drivers.iter().find(|d| same_name(&d.name, name))
    }

    /// The same scenario with driver `name` in model `model` (its altitude kept for a
    /// minifilter, dropped for a legacy filter; a minifilter made from a legacy filter gets the
    /// middle of its group's range).
    pub fn with_model(&self, name: &str, model: Model) -> Scenario {
        let mut s = self.clone();
        // Altitudes the other drivers hold: a minifilter made from a legacy driver takes a free
        // one (two instances cannot share an altitude, which `parse` refuses too).
        let taken: Vec<Altitude> = s
            .drivers
            .iter()
            .filter(|d| !same_name(&d.name, name))
            .filter_map(|d| d.altitude.as_deref().and_then(|a| Altitude::parse(a).ok()))
            .collect();
        for d in s.drivers.iter_mut().filter(|d| same_name(&d.name, name)) {
            if d.model == model {
                continue;
            }
            d.model = model;
            match model {
                Model::Legacy => d.altitude = None,
                Model::Minifilter => {
                    // The middle of its load-order group's range (the sample's group unless the
                    // scenario names one, as the service is installed), or 370000; the nearest
                    // free altitude at or below that, within the range.
                    let group = d
                        .group
                        .as_deref()
                        .or_else(|| crate::samples::find(&d.sample).map(|sample| sample.group));
                    let (low, high) = group
                        .and_then(fsfilter::LoadOrderGroup::by_name)
                        .map_or((360_000, 389_999), |g| (g.low, g.high));
                    let middle = low / 2 + high / 2;
                    let free = (low..=middle).rev().chain(middle + 1..=high).find(|a| {
                        Altitude::parse(&a.to_string()).is_ok_and(|a| !taken.contains(&a))
                    });
                    d.altitude = Some(free.unwrap_or(middle).to_string());
                }
            }
        }
        s
    }
}

/// The largest scenario file the lab reads: 16 MiB. The built-in scenarios are under 4 KiB; at
/// roughly 100 bytes an io step, the limit holds well over 100,000 steps. A larger file, or an
/// endless one such as `/dev/zero`, is refused after reading one byte past the limit.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads the bytes of a scenario file, at most [`MAX_FILE_BYTES`]; the error
/// (`FILE: cannot read: ...` or `FILE: too large: ...`) names the file as given.
pub fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("{shown}: cannot read: {e}");
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{shown}: too large: a scenario file holds at most 16 MiB ({MAX_FILE_BYTES} bytes)"
        ));
    }
    Ok(bytes)
}

/// Reads a scenario from the bytes of a file; `file` names it in errors. A scenario is UTF-8 (as
/// TOML is): bytes that are not name their line and column, and a UTF-16 file (with its byte-order
/// mark) is named as such.
pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Scenario, ScenarioError> {
    let error = |line: usize, message: String| ScenarioError {
        file: file.to_owned(),
        line,
        key: String::new(),
        message,
    };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(error(1, "the file is UTF-16: a scenario is UTF-8 text".into()));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let good = bytes.get(..e.valid_up_to()).unwrap_or_default();
        let line = 1 + good.iter().filter(|b| **b == b'\n').count();
        let column = 1 + good.iter().rev().take_while(|b| **b != b'\n').count();
        let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
        error(
            line,
            format!(
                "not valid UTF-8 (byte 0x{byte:02X} at column {column}): a scenario is UTF-8 text"
            ),
        )
    })?;
    parse(file, text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Reads a scenario from TOML text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let lines = LineIndex::new(text);
    let err = |span: std::ops::Range<usize>, key: &str, message: String| ScenarioError {
        file: file.to_owned(),
        line: lines.line(span.start),
        key: key.to_owned(),
        message,
    };
    let doc = DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        err(span, "", format!("not valid TOML: {}", e.message().trim()))
    })?;
    let cx = Cx { file, lines: &lines };
    let root = doc.get_ref();
    let mut t = Fields::new(&cx, root, "", doc.span());
    let name = t.opt_string("name")?.map(|(s, _)| s);
    let seed = t.opt_u64("seed")?.unwrap_or(0);
    let volume_tables = t.opt_array_of_tables("volume")?;
    let driver_tables = t.opt_array_of_tables("driver")?;
    let step_tables = t.opt_array_of_tables("step")?;
    t.finish()?;

    let mut volumes: Vec<Volume> = Vec::new();
    let mut volume_name_spans: Vec<Span> = Vec::new();
    for (i, (table, span)) in volume_tables.iter().enumerate() {
        let path = format!("volume[{i}]");
        let mut f = Fields::new(&cx, table, &path, span.clone());
        let (vname, vspan) = f.string("name")?;
        if vname.trim().is_empty() {
            return Err(cx.error(vspan, &format!("{path}.name"), "a volume needs a name".into()));
        }
        if volumes.iter().any(|v| same_name(&v.name, &vname)) {
            return Err(cx.error(
                vspan,
                &format!("{path}.name"),
                format!("volume `{vname}` is defined twice"),
            ));
        }
        let filesystem = f.choice("filesystem", &FileSystem::ALL)?;
        // The namespace file systems' own devices: a volume of another file system cannot take
        // one of their names (the pipe or mailslot volume would not mount).
        let reserved = [
            (fsfilter_sim::fs::MUP_DEVICE, FileSystem::Mup),
            (fsfilter_sim::fs::NPFS_DEVICE, FileSystem::Npfs),
            (fsfilter_sim::fs::MSFS_DEVICE, FileSystem::Msfs),
        ];
        if let Some((device, _)) =
            reserved.iter().find(|(d, fs)| d.eq_ignore_ascii_case(&vname) && *fs != filesystem)
        {
            return Err(cx.error(
                vspan,
                &format!("{path}.name"),
                format!("`{vname}` is the simulated machine's own {device} device"),
            ));
        }
        // The simulator's rules for volumes (sim/src/volumes.rs), checked here so that a parsed
        // scenario always runs: one pipe and one mailslot namespace per machine, and network
        // shares named \\server\share.
        if matches!(filesystem, FileSystem::Npfs | FileSystem::Msfs)
            && volumes.iter().any(|v| v.filesystem == filesystem)
        {
            return Err(cx.error(
                span.clone(),
                &format!("{path}.filesystem"),
                format!(
                    "only one {} volume can exist (one namespace per machine)",
                    filesystem.name()
                ),
            ));
        }
        if filesystem == FileSystem::Mup {
            let parts = vname.trim_start_matches('\\').split('\\').filter(|p| !p.is_empty());
            if parts.count() != 2 || !vname.starts_with("\\\\") {
                return Err(cx.error(
                    vspan,
                    &format!("{path}.name"),
                    format!("a mup volume is named \\\\server\\share, not `{vname}`"),
                ));
            }
        }
        let mount = f
            .opt_choice("mount", &[("boot", Mount::Boot), ("step", Mount::Step)])?
            .unwrap_or(Mount::Boot);
        let dev_drive = f.opt_bool("dev_drive")?.unwrap_or(false);
        let trusted = f.opt_bool("trusted")?.unwrap_or(false);
        let files = f.opt_files("files")?;
        let mount_pends_ms =
            f.opt_u64_at_most("mount_pends_ms", MAX_MOUNT_PENDS_MS, "must be at most 60000 (ms)")?;
        let initialize_late_ms = f.opt_u64_at_most(
            "initialize_late_ms",
            MAX_MOUNT_PENDS_MS,
            "must be at most 60000 (ms)",
        )?;
        let blank = f.opt_bool_at("blank")?;
        if let Some((true, bspan)) = &blank {
            let why = if matches!(filesystem, FileSystem::Mup | FileSystem::Npfs | FileSystem::Msfs)
            {
                Some(format!("a {} volume has no media to leave unformatted", filesystem.name()))
            } else if !files.is_empty() {
                Some("unformatted media hold no files: give `files` or `blank`, not both".into())
            } else {
                None
            };
            if let Some(why) = why {
                return Err(cx.error(bspan.clone(), &format!("{path}.blank"), why));
            }
        }
        let blank = blank.is_some_and(|(b, _)| b);
        f.finish()?;
        volume_name_spans.push(vspan);
        volumes.push(Volume {
            name: vname,
            filesystem,
            mount,
            dev_drive,
            trusted,
            files,
            mount_pends_ms,
            initialize_late_ms,
            blank,
        });
    }

    check_device_names(&cx, &volumes, &volume_name_spans)?;

    let mut drivers: Vec<Driver> = Vec::new();
    let mut warnings: Vec<ScenarioError> = Vec::new();
    let mut altitude_lines: Vec<usize> = Vec::new();
    for (i, (table, span)) in driver_tables.iter().enumerate() {
        let path = format!("driver[{i}]");
        let mut f = Fields::new(&cx, table, &path, span.clone());
        let (dname, dspan) = f.string("name")?;
        // CreateService's rules for a service name: 1 to 256 characters, no `/` or `\`.
        let refused = if dname.is_empty() {
            Some("a driver needs a name (its service name)".to_owned())
        } else if dname.contains(['/', '\\']) {
            Some(format!("`{dname}`: `/` and `\\` are not valid in a service name"))
        } else if dname.encode_utf16().count() > MAX_SERVICE_NAME {
            Some(format!(
                "a service name is at most {MAX_SERVICE_NAME} characters, not {}",
                dname.encode_utf16().count()
            ))
        } else {
            None
        };
        if let Some(message) = refused {
            return Err(cx.error(dspan, &format!("{path}.name"), message));
        }
        if drivers.iter().any(|d| same_name(&d.name, &dname)) {
            return Err(cx.error(
                dspan,
                &format!("{path}.name"),
                format!("driver `{dname}` is defined twice"),
            ));
        }
        // The machine's own services: a driver of that name would never be installed.
        if let Some(own) = fsfilter_sim::fs::builtin_services().find(|s| same_name(s, &dname)) {
            return Err(cx.error(
                dspan,
                &format!("{path}.name"),
                format!("`{dname}` is the simulated machine's own `{own}` service"),
            ));
        }
        let (sample, sspan) = f.string("sample")?;
        if samples::find(&sample).is_none() {
            return Err(cx.error(
                sspan,
                &format!("{path}.sample"),
                format!("unknown sample `{sample}` (samples: {})", samples::names().join(", ")),
            ));
        }
        let model =
            f.choice("model", &[("minifilter", Model::Minifilter), ("legacy", Model::Legacy)])?;
        let start = f
            .opt_choice(
                "start",
                &[
                    ("boot", Start::Boot),
                    ("system", Start::System),
                    ("auto", Start::Auto),
                    ("demand", Start::Demand),
                ],
            )?
            .unwrap_or(Start::Demand);
        let group = f.opt_string("group")?;
        if let Some((g, gspan)) = &group {
            if fsfilter::LoadOrderGroup::by_name(g).is_none() && !g.is_empty() {
                // Any group name is accepted by the service control manager; warn-free, but an
                // unknown FSFilter group is almost always a typo.
                if g.to_ascii_lowercase().starts_with("fsfilter") {
                    return Err(cx.error(
                        gspan.clone(),
                        &format!("{path}.group"),
                        format!("unknown load-order group `{g}`"),
                    ));
                }
            }
        }
        let altitude = f.opt_string("altitude")?;
        let flags_line = f.left.get("instance_flags").map(|(v, _)| v.span());
        let flags =
            f.opt_u64_at_most("instance_flags", u64::from(u32::MAX), "does not fit a DWORD")?;
        let parameters =
            f.opt_parameters("parameters", samples::find(&sample), &dname, &mut warnings)?;
        f.finish()?;
        match (model, &altitude) {
            (Model::Legacy, Some((_, aspan))) => {
                return Err(cx.error(
                    aspan.clone(),
                    &format!("{path}.altitude"),
                    "a legacy filter has no altitude: it sits where it attaches".into(),
                ));
            }
            (Model::Minifilter, None) => {
                return Err(cx.error(
                    span.clone(),
                    &format!("{path}.altitude"),
                    "a minifilter needs the altitude of its default instance".into(),
                ));
            }
            (Model::Minifilter, Some((a, aspan))) => {
                if let Err(e) = Altitude::parse(a) {
                    return Err(cx.error(
                        aspan.clone(),
                        &format!("{path}.altitude"),
                        format!("altitude `{a}`: {e}"),
                    ));
                }
            }
            (Model::Legacy, None) => {}
        }
        if model == Model::Legacy && flags.is_some() {
            return Err(cx.error(
                flags_line.unwrap_or_else(|| span.clone()),
                &format!("{path}.instance_flags"),
                "a legacy filter has no instances".into(),
            ));
        }
        // At most u32::MAX (checked above, at the value's line).
        let instance_flags = u32::try_from(flags.unwrap_or(0)).unwrap_or(u32::MAX);
        altitude_lines
            .push(altitude.as_ref().map_or(lines.line(span.start), |(_, s)| lines.line(s.start)));
        drivers.push(Driver {
            name: dname,
            sample,
            model,
            start,
            group: group.map(|(g, _)| g),
            altitude: altitude.map(|(a, _)| a),
            instance_flags,
            parameters,
            line: lines.line(span.start),
        });
    }
    // Two instances at one altitude (facts.md §2.3): the Filter Manager refuses the second.
    for (j, b) in drivers.iter().enumerate() {
        let Some(y) = &b.altitude else { continue };
        let earlier = drivers.iter().take(j).find(|a| {
            a.altitude.as_ref().is_some_and(|x| Altitude::parse(x).ok() == Altitude::parse(y).ok())
        });
        if let Some(a) = earlier {
            return Err(ScenarioError {
                file: file.to_owned(),
                line: altitude_lines.get(j).copied().unwrap_or(b.line),
                key: format!("driver[{j}].altitude"),
                message: format!(
                    "`{}` and `{}` both have altitude {y}: two instances cannot share an altitude",
                    a.name, b.name
                ),
            });
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    // The connections open at each step, by name (`connect` .. `disconnect`), with their driver.
    let mut clients: Vec<(String, String)> = Vec::new();
    // The user processes steps name, in order of first appearance.
    let mut processes: Vec<String> = Vec::new();
    for (i, (table, span)) in step_tables.iter().enumerate() {
        let path = format!("step[{i}]");
        let mut f = Fields::new(&cx, table, &path, span.clone());
        let (action, aspan) = f.string("action")?;
        let driver = |f: &mut Fields<'_, '_>| -> Result<String, ScenarioError> {
            let (d, dspan) = f.string("driver")?;
            match drivers.iter().find(|x| same_name(&x.name, &d)) {
                Some(x) => Ok(x.name.clone()),
                None => Err(cx.error(
                    dspan,
                    &format!("{path}.driver"),
                    format!("no driver named `{d}`"),
                )),
            }
        };
        let volume = |f: &mut Fields<'_, '_>| -> Result<String, ScenarioError> {
            let (v, vspan) = f.string("volume")?;
            match volumes.iter().find(|x| same_name(&x.name, &v)) {
                Some(x) => Ok(x.name.clone()),
                None => Err(cx.error(
                    vspan,
                    &format!("{path}.volume"),
                    format!("no volume named `{v}`"),
                )),
            }
        };
        let action = match action.as_str() {
            "load" => Action::Load { driver: driver(&mut f)? },
            "unload" => Action::Unload { driver: driver(&mut f)? },
            "stop" => Action::Stop { driver: driver(&mut f)? },
            "mount" => Action::Mount { volume: volume(&mut f)? },
            "dismount" => Action::Dismount { volume: volume(&mut f)? },
            "remove" => {
                let volume = volume(&mut f)?;
                let surprise = f.opt_bool("surprise")?.unwrap_or(false);
                Action::Remove { volume, surprise }
            }
            "attach" => {
                let driver = driver(&mut f)?;
                let volume = volume(&mut f)?;
                let altitude = f.opt_string("altitude")?;
                if let Some((a, s)) = &altitude {
                    if let Err(e) = Altitude::parse(a) {
                        return Err(cx.error(
                            s.clone(),
                            &format!("{path}.altitude"),
                            format!("altitude `{a}`: {e}"),
                        ));
                    }
                }
                let instance = f.opt_string("instance")?.map(|(s, _)| s);
                Action::Attach { driver, volume, altitude: altitude.map(|(a, _)| a), instance }
            }
            "detach" => {
                let driver = driver(&mut f)?;
                let volume = volume(&mut f)?;
                let instance = f.opt_string("instance")?.map(|(s, _)| s);
                Action::Detach { driver, volume, instance }
            }
            "io" => {
                let volume = volume(&mut f)?;
                let (op, ospan) = f.string("op")?;
                // None: `cancel`, which sends no request of its own.
                let major = if op == CANCEL {
                    None
                } else {
                    Some(io_op(&op).ok_or_else(|| {
                        cx.error(
                            ospan,
                            &format!("{path}.op"),
                            format!("unknown io op `{op}` (one of {})", describe_io_ops()),
                        )
                    })?)
                };
                let is = |m: MajorFunction| major == Some(m);
                // `offset`, `length` and `path` where the run does not use them: valid (scenario.md
                // lists them for every io step) but a warning at their line, never silent.
                let offset_ops =
                    [MajorFunction::Read, MajorFunction::Write, MajorFunction::LockControl];
                let length_ops = [
                    MajorFunction::Read,
                    MajorFunction::Write,
                    MajorFunction::LockControl,
                    MajorFunction::QueryInformation,
                    MajorFunction::SetInformation,
                    MajorFunction::DirectoryControl,
                    MajorFunction::DeviceControl,
                    MajorFunction::QueryVolumeInformation,
                ];
                for (key, applies, what) in [
                    (
                        "offset",
                        major.is_some_and(|m| offset_ops.contains(&m)),
                        "applies to read, write and lock only",
                    ),
                    (
                        "length",
                        major.is_some_and(|m| length_ops.contains(&m)),
                        "applies to read, write, lock, query_information, set_information, \
                         directory_control, device_control and query_volume_information only",
                    ),
                    ("path", !is(MajorFunction::Shutdown), "a shutdown is for the whole volume"),
                ] {
                    if let Some(span) = f.left.get(key).map(|(v, _)| v.span()).filter(|_| !applies)
                    {
                        let not =
                            if key == "path" { String::new() } else { format!(", not to `{op}`") };
                        warnings.push(cx.error(
                            span,
                            &format!("{path}.{key}"),
                            format!("ignored: {what}{not}"),
                        ));
                    }
                }
                let path_value = f.opt_string("path")?.map(|(s, _)| s);
                let offset = f.opt_u64("offset")?;
                // A transfer is a buffer in the lab's memory: at most 64 MiB.
                let length = f
                    .opt_u64_at_most("length", MAX_IO_LENGTH.into(), "too large (at most 64 MiB)")?
                    .map(|l| u32::try_from(l).unwrap_or(MAX_IO_LENGTH));
                // `mode` is for reads and writes, `data` for writes (scenario.md), `class` for
                // queries (an extension): elsewhere the run would ignore them.
                let transfer = is(MajorFunction::Read) || is(MajorFunction::Write);
                for (key, applies, what) in [
                    ("mode", transfer, "read and write"),
                    ("data", is(MajorFunction::Write), "write"),
                    ("class", is(MajorFunction::QueryInformation), "query_information"),
                    ("notify", is(MajorFunction::DirectoryControl), "directory_control"),
                    ("watch_tree", is(MajorFunction::DirectoryControl), "directory_control"),
                    ("wait", is(MajorFunction::LockControl), "lock"),
                    ("overlapped", is(MajorFunction::Create), "create"),
                    ("protection", is(MajorFunction::AcquireForSectionSynchronization), MAP),
                    ("writer", is(MajorFunction::Write), "write"),
                    ("control", is(MajorFunction::FileSystemControl), "fsctl"),
                    ("complete_if_oplocked", is(MajorFunction::Create), "create"),
                    ("open_reparse_point", is(MajorFunction::Create), "create"),
                    ("delete_on_close", is(MajorFunction::Create), "create"),
                    ("disposition", is(MajorFunction::Create), "create"),
                ] {
                    if let Some(span) = f.left.get(key).map(|(v, _)| v.span()).filter(|_| !applies)
                    {
                        return Err(cx.error(
                            span,
                            &format!("{path}.{key}"),
                            format!("applies to {what} only, not to `{op}`"),
                        ));
                    }
                }
                let mode = f
                    .opt_choice(
                        "mode",
                        &[
                            ("cached", IoMode::Cached),
                            ("noncached", IoMode::NonCached),
                            ("paging", IoMode::Paging),
                        ],
                    )?
                    .unwrap_or(IoMode::Cached);
                let data = f.opt_string("data")?;
                // The data repeats to fill `length` (run.rs): empty data fills nothing.
                if let (Some((d, dspan)), Some(n)) = (&data, length)
                    && d.is_empty()
                    && n > 0
                {
                    warnings.push(cx.error(
                        dspan.clone(),
                        &format!("{path}.data"),
                        format!(
                            "empty: nothing to repeat to fill `length` ({n} bytes), the write \
                             moves 0 bytes"
                        ),
                    ));
                }
                let data = data.map(|(s, _)| s.into_bytes());
                let class = f.opt_choice("class", &QUERY_CLASSES.map(|(n, c, _)| (n, c)))?;
                let notify = notify_of(&mut f, &cx, &path)?;
                let wait = f.opt_bool("wait")?.unwrap_or(false);
                let overlapped = f.opt_bool("overlapped")?.unwrap_or(false);
                let protection = f.opt_choice("protection", &PROTECTIONS)?;
                let writer = match f.left.get("writer").map(|(v, _)| v.span()) {
                    // The page writers write pages: a paging write's.
                    Some(span) if mode != IoMode::Paging => {
                        return Err(cx.error(
                            span,
                            &format!("{path}.writer"),
                            "applies to a write with mode = \"paging\" only".into(),
                        ));
                    }
                    _ => f.opt_choice("writer", &WRITERS)?,
                };
                let control = f.opt_choice("control", &CONTROLS)?;
                let complete_if_oplocked = f.opt_bool("complete_if_oplocked")?.unwrap_or(false);
                let open_reparse_point = f.opt_bool("open_reparse_point")?.unwrap_or(false);
                let delete_on_close = f.opt_bool("delete_on_close")?.unwrap_or(false);
                let disposition = f.opt_choice("disposition", &DISPOSITIONS)?;
                let handle = match f.opt_string("handle")? {
                    // Shutdown and query_attributes name no handle.
                    Some((_, span))
                        if is(MajorFunction::Shutdown) || is(MajorFunction::NetworkQueryOpen) =>
                    {
                        return Err(cx.error(
                            span,
                            &format!("{path}.handle"),
                            format!("applies to requests on a handle only, not to `{op}`"),
                        ));
                    }
                    Some((name, span)) if name.is_empty() => {
                        return Err(cx.error(
                            span,
                            &format!("{path}.handle"),
                            "empty: a handle's name (the path's own handle has none)".into(),
                        ));
                    }
                    other => other.map(|(name, _)| name),
                };
                let process = match major {
                    None => match f.opt_string("process")? {
                        Some((_, pspan)) => {
                            return Err(cx.error(
                                pspan,
                                &format!("{path}.process"),
                                "applies to requests, not to `cancel` (the handle's requests \
                                 are cancelled whoever sent them)"
                                    .into(),
                            ));
                        }
                        None => None,
                    },
                    Some(_) => process_field(&cx, &mut f, &path, &mut processes)?,
                };
                match major {
                    None => Action::Cancel { volume, path: path_value, handle },
                    Some(op) => Action::Io {
                        volume,
                        op,
                        path: path_value,
                        offset,
                        length,
                        mode,
                        data,
                        class,
                        notify,
                        wait,
                        overlapped,
                        protection,
                        writer,
                        control,
                        complete_if_oplocked,
                        open_reparse_point,
                        delete_on_close,
                        disposition,
                        handle,
                        process,
                    },
                }
            }
            "link" => {
                let volume = volume(&mut f)?;
                let (lpath, pspan) = f.string("path")?;
                if lpath.trim_matches(['\\', '/']).is_empty() {
                    return Err(cx.error(
                        pspan,
                        &format!("{path}.path"),
                        "a link needs a name on the volume (the root directory cannot be one)"
                            .into(),
                    ));
                }
                let (target, tspan) = f.string("target")?;
                let kind = f.opt_choice("kind", &LINK_KINDS)?.unwrap_or(LinkKind::Symlink);
                let directory = f.opt_bool_at("directory")?;
                if target.is_empty() {
                    return Err(cx.error(
                        tspan,
                        &format!("{path}.target"),
                        "empty: what the link names".into(),
                    ));
                }
                if kind == LinkKind::Junction {
                    if let Some((_, dspan)) = directory {
                        return Err(cx.error(
                            dspan,
                            &format!("{path}.directory"),
                            "applies to a symlink only (a junction is always a directory)".into(),
                        ));
                    }
                    if link_names(&target).1 {
                        return Err(cx.error(
                            tspan,
                            &format!("{path}.target"),
                            format!(
                                "a junction names an absolute path (`D:\\dir`, `\\??\\D:\\dir`), \
                                 not `{target}`: only a symlink may be relative"
                            ),
                        ));
                    }
                }
                Action::Link {
                    volume,
                    path: lpath,
                    target,
                    kind,
                    directory: kind == LinkKind::Junction || directory.is_some_and(|(d, _)| d),
                }
            }
            "snapshot" => {
                let (label, lspan) = f.string("label")?;
                if label == "end" {
                    // Every run ends with its own snapshot labelled `end` (scenario.md).
                    return Err(cx.error(
                        lspan,
                        &format!("{path}.label"),
                        "`end` is the label of the run's final snapshot".into(),
                    ));
                }
                Action::Snapshot { label }
            }
            "connect" => {
                let (dname, dspan) = f.string("driver")?;
                let Some(d) = drivers.iter().find(|x| same_name(&x.name, &dname)) else {
                    return Err(cx.error(
                        dspan,
                        &format!("{path}.driver"),
                        format!("no driver named `{dname}`"),
                    ));
                };
                if samples::find(&d.sample).and_then(|s| s.channel).is_none() {
                    return Err(cx.error(
                        dspan,
                        &format!("{path}.driver"),
                        format!(
                            "`{}` is a {} driver, which has no message channel (samples with \
                             one: {})",
                            d.name,
                            d.sample,
                            samples::with_channel().join(", ")
                        ),
                    ));
                }
                let client = match f.opt_string("client")? {
                    Some((c, cspan)) if c.is_empty() => {
                        return Err(cx.error(
                            cspan,
                            &format!("{path}.client"),
                            "empty: a connection's name".into(),
                        ));
                    }
                    Some((c, cspan)) => (c, cspan),
                    None => (d.name.clone(), dspan),
                };
                if clients.iter().any(|(c, _)| *c == client.0) {
                    return Err(cx.error(
                        client.1,
                        &format!("{path}.client"),
                        format!(
                            "connection `{}` is open already (a `disconnect` step closes it)",
                            client.0
                        ),
                    ));
                }
                let context = f.opt_string("context")?.map(|(c, _)| c.into_bytes());
                let user = f
                    .opt_choice(
                        "user",
                        &[
                            ("administrator", fsfilter_sim::Caller::Administrator),
                            ("standard", fsfilter_sim::Caller::StandardUser),
                        ],
                    )?
                    .unwrap_or_default();
                let process = process_field(&cx, &mut f, &path, &mut processes)?;
                clients.push((client.0.clone(), d.name.clone()));
                Action::Connect {
                    driver: d.name.clone(),
                    client: client.0,
                    context,
                    user,
                    overlapped: false,
                    process,
                }
            }
            "serve" => {
                let (client, cspan) = f.string("client")?;
                let Some((_, driver)) = clients.iter().find(|(c, _)| *c == client) else {
                    return Err(no_connection(&cx, cspan, &path, &client, &clients));
                };
                let is_gate = drivers
                    .iter()
                    .find(|d| d.name == *driver)
                    .is_some_and(|d| d.sample.eq_ignore_ascii_case("gate"));
                let gets = f
                    .opt_u64_at_most("gets", MAX_GETS, &format!("must be 1 to {MAX_GETS}"))?
                    .unwrap_or(1);
                if gets == 0 {
                    let gspan = f.span.clone();
                    return Err(cx.error(
                        gspan,
                        &format!("{path}.gets"),
                        format!("must be 1 to {MAX_GETS}"),
                    ));
                }
                let delay_ms = f
                    .opt_u64_at_most("delay_ms", 3_600_000, "must be at most 3600000 (an hour)")?
                    .unwrap_or(0);
                let capacity = f
                    .opt_u64_at_most(
                        "capacity",
                        u64::from(fsfilter::MAX_MESSAGE) + 16,
                        "must be at most 65552 (bytes: a header and the longest message)",
                    )?
                    .map_or(DEFAULT_CAPACITY, |c| u32::try_from(c).unwrap_or(DEFAULT_CAPACITY));
                let reply = match f.opt_string("reply")? {
                    Some((r, rspan)) => {
                        serve_reply(&cx, &r, rspan, &format!("{path}.reply"), is_gate)?
                    }
                    None if is_gate => ServeReply::Verdict(gate::wire::Verdict::Allow),
                    None => {
                        return Err(cx.error(
                            span.clone(),
                            &format!("{path}.reply"),
                            "missing: what the server answers (none, hex:<bytes>, or text)".into(),
                        ));
                    }
                };
                let mut rules = Vec::new();
                for (i, (t, tspan)) in f.opt_array_of_tables("rules")?.into_iter().enumerate() {
                    let rpath = format!("{path}.rules[{i}]");
                    let mut rf = Fields::new(&cx, t, &rpath, tspan);
                    let (contains, _) = rf.string("contains")?;
                    let (r, rspan) = rf.string("reply")?;
                    let reply = serve_reply(&cx, &r, rspan, &format!("{rpath}.reply"), is_gate)?;
                    rf.finish()?;
                    rules.push(ServeRule { contains, reply });
                }
                for (contains, dspan) in f.opt_strings("deny_if_contains")? {
                    if !is_gate {
                        return Err(cx.error(
                            dspan,
                            &format!("{path}.deny_if_contains"),
                            format!(
                                "`deny_if_contains` answers the gate sample's questions, and \
                                 `{client}` is connected to another driver: use `rules`"
                            ),
                        ));
                    }
                    rules.push(ServeRule {
                        contains,
                        reply: ServeReply::Verdict(gate::wire::Verdict::Deny),
                    });
                }
                // The legacy channel's gets need an overlapped handle.
                if let Some(Step { action: Action::Connect { overlapped, .. }, .. }) =
                    steps.iter_mut().rev().find(
                        |s| matches!(&s.action, Action::Connect { client: c, .. } if *c == client),
                    )
                {
                    *overlapped = true;
                }
                Action::Serve(Serve {
                    client,
                    gets: gets as u32,
                    delay_ms,
                    capacity,
                    reply,
                    rules,
                    gate: is_gate,
                })
            }
            "message" | "disconnect" => {
                let (client, cspan) = f.string("client")?;
                let Some(at) = clients.iter().position(|(c, _)| *c == client) else {
                    return Err(no_connection(&cx, cspan, &path, &client, &clients));
                };
                if action == "disconnect" {
                    clients.remove(at);
                    Action::Disconnect { client }
                } else {
                    let driver = clients.get(at).map(|(_, d)| d.clone()).unwrap_or_default();
                    let sample = drivers
                        .iter()
                        .find(|d| d.name == driver)
                        .map(|d| d.sample.clone())
                        .unwrap_or_default();
                    let command_span = f.left.get("command").map(|(v, _)| v.span());
                    let data_span = f.left.get("data").map(|(v, _)| v.span());
                    let is_gate = sample.eq_ignore_ascii_case("gate");
                    let command = if is_gate {
                        f.opt_choice("command", &GATE_COMMANDS)?
                    } else {
                        f.opt_choice("command", &SPY_COMMANDS)?.map(MessageBody::Spy)
                    };
                    let data = f.opt_string("data")?;
                    let body = match (command, data, command_span) {
                        (Some(_), Some(_), _) => {
                            return Err(cx.error(
                                data_span.unwrap_or_else(|| span.clone()),
                                &format!("{path}.data"),
                                "give `command` or `data`, not both".into(),
                            ));
                        }
                        (Some(c), None, Some(cs)) => {
                            if !sample.eq_ignore_ascii_case("spy") && !is_gate {
                                return Err(cx.error(
                                    cs,
                                    &format!("{path}.command"),
                                    format!(
                                        "`command` is the spy sample's reader protocol, and \
                                         `{client}` is connected to a {sample} driver: send \
                                         `data`"
                                    ),
                                ));
                            }
                            c
                        }
                        (None, Some((d, _)), _) => MessageBody::Data(d.into_bytes()),
                        _ => {
                            return Err(cx.error(
                                span.clone(),
                                &format!("{path}.command"),
                                if is_gate {
                                    "missing: a message needs `command` (get_stats) or `data`"
                                        .into()
                                } else {
                                    "missing: a message needs `command` (get_log, get_version) \
                                     or `data`"
                                        .into()
                                },
                            ));
                        }
                    };
                    let reply = f
                        .opt_u64_at_most(
                            "reply",
                            u64::from(fsfilter::MAX_MESSAGE),
                            "must be at most 65536 (bytes)",
                        )?
                        .map_or(DEFAULT_REPLY, |r| u32::try_from(r).unwrap_or(DEFAULT_REPLY));
                    Action::Message { client, body, reply }
                }
            }
            other => {
                return Err(cx.error(
                    aspan,
                    &format!("{path}.action"),
                    format!(
                        "unknown action `{other}` (one of load, unload, stop, mount, dismount, remove, attach, detach, io, snapshot, connect, message, disconnect, serve, link)"
                    ),
                ));
            }
        };
        f.finish()?;
        steps.push(Step { action, line: lines.line(span.start) });
    }
    let name = name.unwrap_or_else(|| {
        std::path::Path::new(file)
            .file_stem()
            .map_or_else(|| "scenario".to_owned(), |s| s.to_string_lossy().into_owned())
    });
    Ok(Scenario { name, seed, volumes, drivers, steps, warnings })
}

/// A `serve` step's reply as written: `none`, `allow` / `deny` (a gate's verdicts, only for a
/// gate), `hex:` and byte pairs, or a string's bytes.
fn serve_reply(
    cx: &Cx<'_>,
    text: &str,
    span: Span,
    key: &str,
    gate: bool,
) -> Result<ServeReply, ScenarioError> {
    match text {
        "none" => Ok(ServeReply::Nothing),
        "allow" | "deny" if !gate => Err(cx.error(
            span,
            key,
            format!(
                "`{text}` is a verdict of the gate sample, and this connection's driver is not \
                 a gate: give hex:<bytes> or text"
            ),
        )),
        "allow" => Ok(ServeReply::Verdict(gate::wire::Verdict::Allow)),
        "deny" => Ok(ServeReply::Verdict(gate::wire::Verdict::Deny)),
        _ => match text.strip_prefix("hex:") {
            Some(hex) => {
                let bytes: Option<Vec<u8>> = (hex.len() % 2 == 0)
                    .then(|| {
                        (0..hex.len())
                            .step_by(2)
                            .map(|i| hex.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
                            .collect()
                    })
                    .flatten();
                bytes.map(ServeReply::Bytes).ok_or_else(|| {
                    cx.error(span, key, format!("`{text}`: hex: needs pairs of hex digits"))
                })
            }
            None => Ok(ServeReply::Bytes(text.as_bytes().to_vec())),
        },
    }
}

/// RAW's devices (docs/simulator.md, "Services, start types and load order"): a volume of that
/// name would keep RAW from loading.
const RAW_DEVICES: [&str; 2] = [r"\Device\RawDisk", r"\Device\RawCdRom"];

/// The storage device names of disk and CD volumes, as the simulator gives them
/// (docs/simulator.md, "Names"): a `\Device\...` name as it is, a DOS name the next
/// `\Device\HarddiskVolumeN` (N from 1) or `\Device\CdRomN` (N from 0). Two volumes with one
/// device, or a volume named as one of RAW's devices, would break the machine's boot (the
/// Storage or RAW driver fails to load): refused at the `\Device\...` volume's name.
fn check_device_names(
    cx: &Cx<'_>,
    volumes: &[Volume],
    spans: &[Span],
) -> Result<(), ScenarioError> {
    let (mut disks, mut cdroms) = (0u32, 0u32);
    let mut devices: Vec<(String, usize)> = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let explicit = v.name.to_ascii_lowercase().starts_with("\\device\\");
        let device = match v.filesystem {
            FileSystem::Ntfs | FileSystem::Fat | FileSystem::Exfat | FileSystem::Refs
                if !explicit =>
            {
                disks += 1;
                format!("\\Device\\HarddiskVolume{disks}")
            }
            FileSystem::Cdfs | FileSystem::Udfs if !explicit => {
                cdroms += 1;
                format!("\\Device\\CdRom{}", cdroms - 1)
            }
            FileSystem::Ntfs
            | FileSystem::Fat
            | FileSystem::Exfat
            | FileSystem::Refs
            | FileSystem::Cdfs
            | FileSystem::Udfs => v.name.clone(),
            FileSystem::Mup | FileSystem::Npfs | FileSystem::Msfs => continue,
        };
        devices.push((device, i));
    }
    let at = |i: usize, message: String| {
        cx.error(spans.get(i).cloned().unwrap_or_default(), &format!("volume[{i}].name"), message)
    };
    for (k, (device, i)) in devices.iter().enumerate() {
        if let Some(raw) = RAW_DEVICES.iter().find(|r| r.eq_ignore_ascii_case(device)) {
            return Err(at(*i, format!("`{device}` is the simulated machine's own {raw} device")));
        }
        let other = devices.iter().take(k).find(|(d, _)| d.eq_ignore_ascii_case(device));
        if let Some((_, j)) = other {
            // The volume named by its device path is the one to blame.
            let (named, given) = match volumes.get(*i) {
                Some(v) if v.name.eq_ignore_ascii_case(device) => (*i, *j),
                _ => (*j, *i),
            };
            let given_name = volumes.get(given).map_or("?", |v| v.name.as_str());
            let named_name = volumes.get(named).map_or("?", |v| v.name.as_str());
            return Err(at(
                named,
                format!(
                    "`{named_name}` is the device the simulated machine gives volume `{given_name}`"
                ),
            ));
        }
    }
    Ok(())
}

/// A directory_control step's change notification (`notify`, `watch_tree`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Notify {
    /// `FILE_NOTIFY_CHANGE_*`.
    pub filter: u32,
    /// `SL_WATCH_TREE`: changes anywhere below the directory.
    pub watch_tree: bool,
}

/// The completion filters a `notify` key may name, joined by `|` (`FILE_NOTIFY_CHANGE_*`).
pub const NOTIFY_FILTERS: [(&str, u32); 8] = [
    ("file_name", 0x1),
    ("dir_name", 0x2),
    ("attributes", 0x4),
    ("size", 0x8),
    ("last_write", 0x10),
    ("last_access", 0x20),
    ("creation", 0x40),
    ("security", 0x100),
];

/// `notify = "file_name|size"` and `watch_tree = true` of an io step: `watch_tree` only with
/// `notify`, every name one of [`NOTIFY_FILTERS`].
fn notify_of(
    f: &mut Fields<'_, '_>,
    cx: &Cx<'_>,
    path: &str,
) -> Result<Option<Notify>, ScenarioError> {
    let tree = f.opt_bool_at("watch_tree")?;
    let Some((names, span)) = f.opt_string("notify")? else {
        return match tree {
            Some((_, tspan)) => Err(cx.error(
                tspan,
                &format!("{path}.watch_tree"),
                "applies to a change notification only: give `notify` too".into(),
            )),
            None => Ok(None),
        };
    };
    let mut filter = 0;
    for name in names.split('|').map(str::trim) {
        let Some((_, bits)) = NOTIFY_FILTERS.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = NOTIFY_FILTERS.iter().map(|(n, _)| *n).collect();
            return Err(cx.error(
                span,
                &format!("{path}.notify"),
                format!(
                    "unknown change `{name}`: expected names joined by `|`, of {}",
                    known.join(", ")
                ),
            ));
        };
        filter |= bits;
    }
    Ok(Some(Notify { filter, watch_tree: tree.is_some_and(|(t, _)| t) }))
}

/// The names of a completion filter, joined by `|`.
pub fn notify_names(filter: u32) -> String {
    let names: Vec<&str> =
        NOTIFY_FILTERS.iter().filter(|(_, b)| filter & b != 0).map(|(n, _)| *n).collect();
    names.join("|")
}

/// The information classes a query_information step may name (`class`, an extension of
/// scenario.md): the scenario spelling, the `FILE_INFORMATION_CLASS` value, and the buffer
/// length the step asks for when it gives none. Windows answers some without a driver (position,
/// access, mode, alignment) and offers basic and standard information to fast I/O first
/// (docs/simulator.md, "User-mode I/O"). `stream` (`FileStreamInformation`, last, so that the
/// stress's picks among the others stay as they were) puts what it returns in the document's
/// `streams`.
pub const QUERY_CLASSES: [(&str, u32, u32); 13] = [
    ("basic", 4, 40),
    ("standard", 5, 24),
    ("internal", 6, 8),
    ("ea", 7, 4),
    ("access", 8, 4),
    ("name", 9, 520),
    ("position", 14, 8),
    ("mode", 16, 4),
    ("alignment", 17, 4),
    ("all", 18, 620),
    ("network_open", 34, 56),
    ("attribute_tag", 35, 8),
    ("stream", 22, 1024),
];

/// The io ops scenario.md lists.
pub const IO_OPS: [&str; 14] = [
    "create",
    "read",
    "write",
    "query_information",
    "set_information",
    "directory_control",
    "cleanup",
    "close",
    "flush",
    "fsctl",
    "device_control",
    "lock",
    "shutdown",
    "query_volume_information",
];

/// The io op of the extension (README): `query_attributes`, `NtQueryFullAttributesFile`, a
/// file's attributes by name without a handle. It starts as `IRP_MJ_NETWORK_QUERY_OPEN`, the
/// top driver's `FastIoQueryOpen`, and goes on as an open, a query and a close when that is
/// refused (docs/simulator.md, "User-mode I/O", attribute queries by name).
pub const QUERY_ATTRIBUTES: &str = "query_attributes";

/// The io op of the extension (README): `map`, `NtCreateSection` on the path's handle with a
/// `protection` ([`PROTECTIONS`], `readonly` by default), the section closed at once. The memory
/// manager acquires the file for section synchronization first, which filters see as the FsFilter
/// operation `IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION`, and releases it after
/// (docs/simulator.md, "FsFilter callbacks").
pub const MAP: &str = "map";

/// Who writes a paging write's pages back (`writer`, an extension of scenario.md, README), by
/// their scenario names: the FsFilter operations that bracket the write are the writer's
/// (docs/simulator.md, "FsFilter callbacks").
pub const WRITERS: [(&str, fsfilter_sim::PageWriter); 3] = [
    ("lazy-writer", fsfilter_sim::PageWriter::LazyWriter),
    ("modified-page-writer", fsfilter_sim::PageWriter::ModifiedPageWriter),
    ("flush", fsfilter_sim::PageWriter::Flush),
];

/// The FSCTL codes an fsctl step may name (`control`, an extension of scenario.md, README): the
/// legacy oplock requests and acknowledgements the disk file systems serve (docs/simulator.md,
/// "Oplocks"), and the default, `FSCTL_IS_VOLUME_MOUNTED`; then the Windows 7 oplocks'
/// `FSCTL_REQUEST_OPLOCK` with its input buffer ([`WIN7_CONTROL`], [`control_request`]). The
/// first [`LEGACY_CONTROLS`] are those of the extension's first version (the stress generator
/// picks among them).
pub const CONTROLS: [(&str, u32); 16] = {
    use fsfilter_sim::fs::oplock::{input_flag as f, level as l};
    const REQ: u32 = WIN7_CONTROL | f::REQUEST << 8;
    const ACK: u32 = WIN7_CONTROL | f::ACK << 8;
    [
        ("is_volume_mounted", 0x0009_0028),
        ("request_oplock_level_1", 0x0009_0000),
        ("request_oplock_level_2", 0x0009_0004),
        ("request_batch_oplock", 0x0009_0008),
        ("oplock_break_acknowledge", 0x0009_000C),
        ("opbatch_ack_close_pending", 0x0009_0010),
        ("oplock_break_notify", 0x0009_0014),
        ("oplock_break_ack_no_2", 0x0009_0050),
        ("request_filter_oplock", 0x0009_005C),
        ("request_oplock_r", REQ | l::R),
        ("request_oplock_rw", REQ | l::RW),
        ("request_oplock_rh", REQ | l::RH),
        ("request_oplock_rwh", REQ | l::RWH),
        ("acknowledge_oplock_r", ACK | l::R),
        ("acknowledge_oplock_rh", ACK | l::RH),
        ("acknowledge_oplock_none", ACK),
    ]
};

/// How many of [`CONTROLS`] came first: the default and the legacy oplock codes.
pub const LEGACY_CONTROLS: usize = 9;

/// The mark of a Windows 7 oplock control in [`CONTROLS`]: not an FSCTL code (no device type
/// 0x8000 or above is a file system's) but `FSCTL_REQUEST_OPLOCK` with a
/// `REQUEST_OPLOCK_INPUT_BUFFER` of the input flags (bits 8 to 15) and the level (bits 0 to 7).
pub const WIN7_CONTROL: u32 = 0x8000_0000;

/// What an fsctl step with control `c` sends: the code, the input and the output length.
pub fn control_request(c: u32) -> (u32, Vec<u8>, usize) {
    use fsfilter_sim::fs::oplock::{OUTPUT_LEN, code, input};
    if c & WIN7_CONTROL == 0 {
        return (c, Vec::new(), 0);
    }
    (code::REQUEST_OPLOCK, input(c & 0xFF, (c >> 8) & 0xFF).to_vec(), OUTPUT_LEN)
}

/// The scenario name of an FSCTL code ([`CONTROLS`]).
pub fn control_name(code: u32) -> &'static str {
    CONTROLS.iter().find(|(_, c)| *c == code).map_or("?", |(n, _)| *n)
}

/// The scenario name of a page writer.
pub fn writer_name(writer: fsfilter_sim::PageWriter) -> &'static str {
    WRITERS.iter().find(|(_, w)| *w == writer).map_or("?", |(n, _)| *n)
}

/// The dispositions a create step may name (`disposition`, an extension of scenario.md,
/// README), `FILE_SUPERSEDE` (0) to `FILE_OVERWRITE_IF` (5): what the create does when the file
/// exists and when it does not (the `NtCreateFile` reference page; docs/simulator.md,
/// "Dispositions"). A create step without the key asks `FILE_OPEN_IF`, as before it.
pub const DISPOSITIONS: [(&str, u32); 6] = {
    use fsfilter_sim::nt::disposition as d;
    [
        ("supersede", d::SUPERSEDE),
        ("open", d::OPEN),
        ("create", d::CREATE),
        ("open_if", d::OPEN_IF),
        ("overwrite", d::OVERWRITE),
        ("overwrite_if", d::OVERWRITE_IF),
    ]
};

/// The scenario name of a disposition ([`DISPOSITIONS`]).
pub fn disposition_name(disposition: u32) -> &'static str {
    DISPOSITIONS.iter().find(|(_, d)| *d == disposition).map_or("?", |(n, _)| *n)
}

/// The names of what a create's information says it did (wdm.h's `FILE_SUPERSEDED` 0 to
/// `FILE_DOES_NOT_EXIST` 5; the last two are a target directory's open, for a rename).
pub const CREATE_RESULTS: [&str; 6] = [
    "FILE_SUPERSEDED",
    "FILE_OPENED",
    "FILE_CREATED",
    "FILE_OVERWRITTEN",
    "FILE_EXISTS",
    "FILE_DOES_NOT_EXIST",
];

/// The page protections of a `map` step, by their scenario names.
pub const PROTECTIONS: [(&str, u32); 7] = {
    use fsfilter::section_sync as p;
    [
        ("readonly", p::PAGE_READONLY),
        ("readwrite", p::PAGE_READWRITE),
        ("writecopy", p::PAGE_WRITECOPY),
        ("execute", p::PAGE_EXECUTE),
        ("execute_read", p::PAGE_EXECUTE_READ),
        ("execute_readwrite", p::PAGE_EXECUTE_READWRITE),
        ("execute_writecopy", p::PAGE_EXECUTE_WRITECOPY),
    ]
};

/// The scenario name of a page protection.
pub fn protection_name(protection: u32) -> &'static str {
    PROTECTIONS.iter().find(|(_, v)| *v == protection).map_or("?", |(n, _)| *n)
}

/// The io op of the extension (README): `cancel`, `CancelIoEx` on the path's handle, which
/// cancels the requests still outstanding on it (docs/simulator.md, "IRP cancellation").
pub const CANCEL: &str = "cancel";

fn io_op(name: &str) -> Option<MajorFunction> {
    if name == QUERY_ATTRIBUTES {
        return Some(MajorFunction::NetworkQueryOpen);
    }
    if name == MAP {
        return Some(MajorFunction::AcquireForSectionSynchronization);
    }
    IO_OPS.contains(&name).then(|| MajorFunction::from_short_name(name)).flatten()
}

/// The scenario spelling of an io step's op.
pub fn io_op_name(op: MajorFunction) -> &'static str {
    if op == MajorFunction::NetworkQueryOpen {
        QUERY_ATTRIBUTES
    } else if op == MajorFunction::AcquireForSectionSynchronization {
        MAP
    } else {
        op.short_name().unwrap_or("?")
    }
}

/// Byte offsets to 1-based lines.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// The `process` key of an io or connect step: a user process's name (`user`, the default
/// process, reads as None; a new name is a new process, numbered in order of first appearance).
/// Refused: an empty name, `system` (the System process makes no user-mode requests), more than
/// [`MAX_PROCESSES`] names.
fn process_field(
    cx: &Cx<'_>,
    f: &mut Fields<'_, '_>,
    path: &str,
    processes: &mut Vec<String>,
) -> Result<Option<String>, ScenarioError> {
    let Some((name, span)) = f.opt_string("process")? else {
        return Ok(None);
    };
    let key = format!("{path}.process");
    if name.is_empty() {
        return Err(cx.error(span, &key, "empty: a process's name".into()));
    }
    if name.eq_ignore_ascii_case("system") {
        return Err(cx.error(
            span,
            &key,
            "the System process makes no user-mode requests (name a user process; `user` is \
             the default one)"
                .into(),
        ));
    }
    if name == fsfilter_sim::process::DEFAULT_NAME {
        return Ok(None);
    }
    if !processes.contains(&name) {
        if processes.len() >= MAX_PROCESSES {
            return Err(cx.error(
                span,
                &key,
                format!("more than {MAX_PROCESSES} processes in one scenario"),
            ));
        }
        processes.push(name.clone());
    }
    Ok(Some(name))
}

/// The user processes a scenario may name besides `user` (the simulator's limit).
pub const MAX_PROCESSES: usize = fsfilter_sim::process::MAX_PROCESSES - 1;

struct Cx<'a> {
    file: &'a str,
    lines: &'a LineIndex,
}

impl Cx<'_> {
    fn error(&self, span: std::ops::Range<usize>, key: &str, message: String) -> ScenarioError {
        ScenarioError {
            file: self.file.to_owned(),
            line: self.lines.line(span.start),
            key: key.to_owned(),
            message,
        }
    }
}

/// The error of a step naming a connection `client` that no earlier `connect` left open.
fn no_connection(
    cx: &Cx<'_>,
    span: Span,
    path: &str,
    client: &str,
    clients: &[(String, String)],
) -> ScenarioError {
    let open: Vec<&str> = clients.iter().map(|(c, _)| c.as_str()).collect();
    let open = if open.is_empty() { "none".to_owned() } else { open.join(", ") };
    cx.error(
        span,
        &format!("{path}.client"),
        format!("no open connection `{client}` (open: {open})"),
    )
}

type Span = std::ops::Range<usize>;

/// The keys of one table, taken one by one; whatever is left at `finish` is unknown.
/// The longest `io` transfer a scenario may ask for: its buffer is the lab's memory.
const MAX_IO_LENGTH: u32 = 64 << 20;

/// The longest service name CreateService accepts (`MAX_SERVICE_NAME_LENGTH`, in UTF-16 units).
const MAX_SERVICE_NAME: usize = 256;

/// The longest a volume's mount may stay pended (`mount_pends_ms`), or its new device
/// initializing (`initialize_late_ms`): a minute.
const MAX_MOUNT_PENDS_MS: u64 = 60_000;

struct Fields<'c, 't> {
    cx: &'c Cx<'c>,
    path: String,
    span: Span,
    left: BTreeMap<String, (&'t Spanned<DeValue<'t>>, Span)>,
    /// Every key the reader asked for, present or not: the table's known keys.
    asked: Vec<&'static str>,
}

impl<'c, 't> Fields<'c, 't> {
    fn new(cx: &'c Cx<'c>, table: &'t DeTable<'t>, path: &str, span: Span) -> Fields<'c, 't> {
        let left = table.iter().map(|(k, v)| (k.get_ref().to_string(), (v, k.span()))).collect();
        Fields { cx, path: path.to_owned(), span, left, asked: Vec::new() }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn take(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'t>>> {
        self.asked.push(key);
        self.left.remove(key).map(|(v, _)| v)
    }

    fn wrong(&self, key: &str, v: &Spanned<DeValue<'_>>, expected: &str) -> ScenarioError {
        let found = match v.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.cx.error(v.span(), &self.key(key), format!("expected {expected}, found {found}"))
    }

    /// A required key that is absent; when a key left unread in the table is a near spelling of
    /// it, the error names that key at its own line, as [`Fields::finish`] would.
    fn missing(&self, key: &str) -> ScenarioError {
        let near = self
            .left
            .iter()
            .map(|(k, (_, kspan))| (edit_distance(key, k), k, kspan))
            .filter(|(d, _, _)| *d <= 2)
            .min_by_key(|(d, _, _)| *d);
        match near {
            Some((_, k, kspan)) => self.cx.error(
                kspan.clone(),
                &self.key(k),
                format!("unknown key (did you mean `{key}`?)"),
            ),
            None => self.cx.error(self.span.clone(), &self.key(key), "missing (required)".into()),
        }
    }

    fn opt_string(&mut self, key: &'static str) -> Result<Option<(String, Span)>, ScenarioError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.get_ref().as_str() {
                Some(s) => Ok(Some((s.to_owned(), v.span()))),
                None => Err(self.wrong(key, v, "a string")),
            },
        }
    }

    fn string(&mut self, key: &'static str) -> Result<(String, Span), ScenarioError> {
        self.opt_string(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_u64(&mut self, key: &'static str) -> Result<Option<u64>, ScenarioError> {
        self.opt_u64_at_most(key, u64::MAX, &format!("must be at most {}", u64::MAX))
    }

    /// An optional integer from 0 to `max`; `too_large` says what is wrong beyond it, beyond 64
    /// bits too (the error names the value's line).
    fn opt_u64_at_most(
        &mut self,
        key: &'static str,
        max: u64,
        too_large: &str,
    ) -> Result<Option<u64>, ScenarioError> {
        let Some(v) = self.take(key) else { return Ok(None) };
        let DeValue::Integer(i) = v.get_ref() else { return Err(self.wrong(key, v, "an integer")) };
        let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
        match u64::from_str_radix(digits.trim_start_matches('+'), i.radix()) {
            Ok(n) if n <= max => Ok(Some(n)),
            _ if digits.starts_with('-') => Err(self.cx.error(
                v.span(),
                &self.key(key),
                "must be a non-negative integer".into(),
            )),
            _ => Err(self.cx.error(v.span(), &self.key(key), too_large.to_owned())),
        }
    }

    fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, ScenarioError> {
        Ok(self.opt_bool_at(key)?.map(|(b, _)| b))
    }

    /// An optional boolean with its value's span.
    fn opt_bool_at(&mut self, key: &'static str) -> Result<Option<(bool, Span)>, ScenarioError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .get_ref()
                .as_bool()
                .map(|b| Some((b, v.span())))
                .ok_or_else(|| self.wrong(key, v, "true or false")),
        }
    }

    fn opt_choice<T: Clone>(
        &mut self,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ScenarioError> {
        let Some((s, span)) = self.opt_string(key)? else { return Ok(None) };
        match choices.iter().find(|(n, _)| *n == s) {
            Some((_, t)) => Ok(Some(t.clone())),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                Err(self.cx.error(
                    span,
                    &self.key(key),
                    format!("unknown value `{s}` (one of {})", names.join(", ")),
                ))
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        choices: &[(&str, T)],
    ) -> Result<T, ScenarioError> {
        self.opt_choice(key, choices)?.ok_or_else(|| self.missing(key))
    }

    /// An optional array of strings, each with its span.
    fn opt_strings(&mut self, key: &'static str) -> Result<Vec<(String, Span)>, ScenarioError> {
        let Some(v) = self.take(key) else { return Ok(Vec::new()) };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong(key, v, "an array of strings"));
        };
        items
            .iter()
            .map(|item| match item.get_ref().as_str() {
                Some(s) => Ok((s.to_owned(), item.span())),
                None => Err(self.wrong(key, item, "a string")),
            })
            .collect()
    }

    fn opt_array_of_tables(
        &mut self,
        key: &'static str,
    ) -> Result<Vec<(&'t DeTable<'t>, Span)>, ScenarioError> {
        let Some(v) = self.take(key) else { return Ok(Vec::new()) };
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.wrong(key, v, &format!("an array of tables ([[{key}]])")));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Table(t) => Ok((t, item.span())),
                _ => Err(self.wrong(key, item, "a table")),
            })
            .collect()
    }

    /// The `Parameters` values, each one of the sample's (compared without case, as registry value
    /// names are: a misspelt name would be ignored by the driver) and of its documented type (a
    /// driver reading a `REG_DWORD` ignores a string, and one reading a `REG_SZ` an integer).
    /// Values the sample's own parser refuses are a warning at the value's line: the driver will
    /// fail to load.
    fn opt_parameters(
        &mut self,
        key: &'static str,
        sample: Option<&samples::Sample>,
        driver: &str,
        warnings: &mut Vec<ScenarioError>,
    ) -> Result<Vec<(String, Parameter)>, ScenarioError> {
        let known = sample.map_or(&[][..], |s| s.parameters);
        let table = self.take(key);
        let mut out = Vec::new();
        let mut spans = Vec::new();
        if let Some(v) = table {
            let DeValue::Table(t) = v.get_ref() else { return Err(self.wrong(key, v, "a table")) };
            for (k, value) in t.iter() {
                let name = k.get_ref().to_string();
                let full = format!("{}.{name}", self.key(key));
                let Some(doc) = known.iter().find(|p| p.name.eq_ignore_ascii_case(&name)) else {
                    return Err(self.cx.error(k.span(), &full, unknown_parameter(known, &name)));
                };
                let p = self.parameter_value(value, &full)?;
                let dword = doc.kind == "REG_DWORD";
                if dword != matches!(p, Parameter::Dword(_)) {
                    let wanted = if dword { "an integer or a boolean" } else { "a string" };
                    return Err(self.cx.error(
                        value.span(),
                        &full,
                        format!("`{}` is a {}: give {wanted}", doc.name, doc.kind),
                    ));
                }
                out.push((name, p));
                spans.push((value.span(), full));
            }
            // Registry value names ignore case: two spellings of one name are one value, and the
            // later would silently replace the earlier. The error is at the later one.
            let entries: Vec<(&str, &Span, &String)> =
                out.iter().zip(&spans).map(|((n, _), (s, f))| (n.as_str(), s, f)).collect();
            for (i, a) in entries.iter().enumerate() {
                for b in entries.iter().skip(i + 1) {
                    if a.0.eq_ignore_ascii_case(b.0) {
                        let (first, later) = if a.1.start < b.1.start { (a, b) } else { (b, a) };
                        return Err(self.cx.error(
                            later.1.clone(),
                            later.2,
                            format!(
                                "`{}` is given twice (registry value names ignore case)",
                                first.0
                            ),
                        ));
                    }
                }
            }
        }
        let Some(sample) = sample else { return Ok(out) };
        // A string the driver cannot read is lost without a word from it: refuse it here.
        let (answer, unreadable) = check_parameters(sample, driver, &out, None);
        if let Some(i) = out.iter().position(|(n, _)| unreadable.contains(n))
            && let (Some((name, Parameter::String(s))), Some((span, full))) =
                (out.get(i), spans.get(i))
        {
            let units = s.encode_utf16().count();
            let why = if units > fsfilter::MAX_STRING_UNITS {
                format!(
                    "is {units} characters (UTF-16 units) long, and the drivers read string \
                     values of at most {}",
                    fsfilter::MAX_STRING_UNITS
                )
            } else {
                format!("is {} bytes of UTF-8, more than `{driver}` reads it into", s.len())
            };
            return Err(self.cx.error(
                span.clone(),
                full,
                format!("`{name}` {why}: `{driver}` would take it for an absent value"),
            ));
        }
        if let Err(message) = answer {
            // The value to blame: the one the sample's message names (`Rules: ...`), else the
            // one without which the others load; None when neither finds one (a required value
            // missing, or a message naming no value).
            let named = |(name, _): &(String, Parameter)| {
                message
                    .get(..name.len() + 1)
                    .is_some_and(|p| p.eq_ignore_ascii_case(&format!("{name}:")))
            };
            let culprit = out
                .iter()
                .position(named)
                .or_else(|| {
                    (0..out.len())
                        .find(|&i| check_parameters(sample, driver, &out, Some(i)).0.is_ok())
                })
                .and_then(|i| spans.get(i));
            let (span, at) = match (culprit, table) {
                (Some((span, full)), _) => (span.clone(), full.clone()),
                (None, Some(v)) => (v.span(), self.key(key)),
                (None, None) => (self.span.clone(), self.key(key)),
            };
            warnings.push(self.cx.error(
                span,
                &at,
                format!("{message}: `{driver}` will fail to load with STATUS_INVALID_PARAMETER"),
            ));
        }
        Ok(out)
    }

    /// A `Parameters` value: a string (`REG_SZ`), an integer or a boolean (`REG_DWORD`).
    fn parameter_value(
        &self,
        value: &Spanned<DeValue<'_>>,
        full: &str,
    ) -> Result<Parameter, ScenarioError> {
        Ok(match value.get_ref() {
            DeValue::String(s) => Parameter::String(s.to_string()),
            DeValue::Boolean(b) => Parameter::Dword(u32::from(*b)),
            DeValue::Integer(i) => {
                let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
                let n = u32::from_str_radix(digits.trim_start_matches('+'), i.radix()).map_err(
                    |_| {
                        self.cx.error(
                            value.span(),
                            full,
                            "a DWORD value must be 0 to 4294967295".into(),
                        )
                    },
                )?;
                Parameter::Dword(n)
            }
            _ => {
                return Err(self.cx.error(
                    value.span(),
                    full,
                    "a parameter is a string (REG_SZ), an integer or a boolean (REG_DWORD)".into(),
                ));
            }
        })
    }

    /// `files = { "a.txt" = "contents", ... }`: files present on the volume.
    fn opt_files(&mut self, key: &'static str) -> Result<Vec<(String, Vec<u8>)>, ScenarioError> {
        let Some(v) = self.take(key) else { return Ok(Vec::new()) };
        let DeValue::Table(t) = v.get_ref() else {
            return Err(self.wrong(key, v, "a table of file names and contents"));
        };
        let mut out = Vec::new();
        // Each path as the volume resolves it (components without case; a trailing separator
        // makes a directory), with its key's span, in file order.
        let mut seen: Vec<(Vec<String>, bool, String, Span)> = Vec::new();
        for (k, value) in t.iter() {
            let name = k.get_ref().to_string();
            let full = format!("{}.{name}", self.key(key));
            let Some(s) = value.get_ref().as_str() else {
                return Err(self.cx.error(
                    value.span(),
                    &full,
                    "file contents must be a string".into(),
                ));
            };
            let comps: Vec<String> =
                name.split(['\\', '/']).filter(|c| !c.is_empty()).map(str::to_lowercase).collect();
            if comps.is_empty() {
                return Err(self.cx.error(k.span(), &full, "a file needs a path".into()));
            }
            seen.push((comps, name.ends_with(['\\', '/']), name.clone(), k.span()));
            out.push((name, s.as_bytes().to_vec()));
        }
        // The volume would keep one of two spellings of a path, and would not create a file
        // inside another: both would lose a file silently. The error is at the later key.
        seen.sort_by_key(|(_, _, _, span)| span.start);
        for (i, later) in seen.iter().enumerate() {
            for earlier in seen.iter().take(i) {
                let (file, inside) = if earlier.0 == later.0 {
                    return Err(self.cx.error(
                        later.3.clone(),
                        &format!("{}.{}", self.key(key), later.2),
                        format!("the same file as `{}` (paths ignore case)", earlier.2),
                    ));
                } else if !earlier.1 && later.0.starts_with(&earlier.0) {
                    (earlier, later)
                } else if !later.1 && earlier.0.starts_with(&later.0) {
                    (later, earlier)
                } else {
                    continue;
                };
                return Err(self.cx.error(
                    later.3.clone(),
                    &format!("{}.{}", self.key(key), later.2),
                    format!("`{}` is a file: `{}` cannot be inside it", file.2, inside.2),
                ));
            }
        }
        Ok(out)
    }

    fn finish(self) -> Result<(), ScenarioError> {
        match self.left.iter().next() {
            None => Ok(()),
            Some((k, (_, kspan))) => {
                let near = self
                    .asked
                    .iter()
                    .filter(|known| edit_distance(known, k) <= 2)
                    .min_by_key(|known| edit_distance(known, k));
                let message = match near {
                    Some(known) => format!("unknown key (did you mean `{known}`?)"),
                    None => format!("unknown key (known here: {})", self.asked.join(", ")),
                };
                Err(self.cx.error(kspan.clone(), &self.key(k), message))
            }
        }
    }
}

/// Levenshtein distance, for suggesting a known key.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let old = row.get(j + 1).copied().unwrap_or(0);
            let left = row.get(j).copied().unwrap_or(0);
            let cost = usize::from(ca != *cb);
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = (old + 1).min(left + 1).min(prev + cost);
            }
            prev = old;
        }
    }
    row.last().copied().unwrap_or(0)
}

/// The text of a scenario file, for `fsfilter samples` and the examples.
pub fn describe_io_ops() -> String {
    format!("{}, {QUERY_ATTRIBUTES}, {CANCEL}, {MAP}", IO_OPS.join(", "))
}

/// The message for a parameter name the sample does not read, with the nearest name when one is
/// close.
fn unknown_parameter(known: &[fsfilter::ParameterDoc], name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let near = known
        .iter()
        .map(|p| (edit_distance(&p.name.to_ascii_lowercase(), &lower), p.name))
        .filter(|(d, _)| *d <= 2)
        .min();
    let names: Vec<&str> = known.iter().map(|p| p.name).collect();
    match near {
        Some((_, p)) => format!("unknown parameter (did you mean `{p}`?)"),
        None if names.is_empty() => "this sample reads no parameter".to_owned(),
        None => format!("unknown parameter (this sample reads: {})", names.join(", ")),
    }
}

/// The `Parameters` values the sample reads, as the driver's registry reader gives them: a string
/// longer than [`fsfilter::MAX_STRING_UNITS`] or than the buffer the sample reads it into reads as
/// absent. Remembers the names of the strings read so, which the driver would silently ignore.
struct DriverView<'a> {
    list: fsfilter::ParameterList<'a>,
    unreadable: std::cell::RefCell<Vec<String>>,
}

impl fsfilter::ServiceParameters for DriverView<'_> {
    fn service_name(&self) -> &str {
        self.list.service
    }

    fn string<'b>(&self, name: &str, buffer: &'b mut [u8]) -> Option<&'b str> {
        let found = self.list.values.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        let Some((n, fsfilter::ParameterValue::String(s))) = found else { return None };
        if s.encode_utf16().count() > fsfilter::MAX_STRING_UNITS || s.len() > buffer.len() {
            let mut seen = self.unreadable.borrow_mut();
            if !seen.iter().any(|u| u == n) {
                seen.push((*n).to_owned());
            }
            return None;
        }
        self.list.string(name, buffer)
    }

    fn dword(&self, name: &str) -> Option<u32> {
        self.list.dword(name)
    }
}

/// Runs the sample's parameter parser over `values` (without the one at `skip`, if any) as the
/// driver reads them ([`DriverView`]): its answer, and the names of the strings it asked for that
/// the driver could not read.
fn check_parameters(
    sample: &samples::Sample,
    driver: &str,
    values: &[(String, Parameter)],
    skip: Option<usize>,
) -> (Result<(), String>, Vec<String>) {
    let list: Vec<(&str, fsfilter::ParameterValue<'_>)> = values
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, (name, p))| {
            let v = match p {
                Parameter::String(s) => fsfilter::ParameterValue::String(s),
                Parameter::Dword(d) => fsfilter::ParameterValue::Dword(*d),
            };
            (name.as_str(), v)
        })
        .collect();
    let view = DriverView {
        list: fsfilter::ParameterList { service: driver, values: &list },
        unreadable: Default::default(),
    };
    let answer = (sample.check)(&view);
    (answer, view.unreadable.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;

    #[test]
    fn lines_from_offsets() {
        let l = LineIndex::new("a\nbc\n\nd");
        assert_eq!((l.line(0), l.line(2), l.line(3), l.line(5), l.line(6)), (1, 2, 2, 3, 4));
    }

    #[test]
    fn a_full_scenario_parses_with_defaults() {
        let s = parse(
            "t.toml",
            r#"
name = "x"
seed = 9
[[volume]]
name = "C:"
filesystem = "ntfs"
[[driver]]
name = "A"
sample = "probe"
model = "minifilter"
altitude = "370000"
[driver.parameters]
Attach = "disk"
Post = 0
[[step]]
action = "io"
volume = "C:"
op = "read"
path = "a.txt"
length = 4
"#,
        )
        .unwrap();
        assert_eq!(s.seed, 9);
        assert_eq!(s.volumes[0].mount, Mount::Boot);
        assert_eq!(s.drivers[0].start, Start::Demand);
        assert_eq!(s.drivers[0].parameters[0], ("Attach".into(), Parameter::String("disk".into())));
        assert_eq!(s.drivers[0].parameters[1], ("Post".into(), Parameter::Dword(0)));
        assert!(matches!(
            s.steps[0].action,
            Action::Io { op: MajorFunction::Read, mode: IoMode::Cached, length: Some(4), .. }
        ));
    }
}
