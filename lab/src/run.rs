//! Runs a scenario in the simulated kernel: builds the machine, boots it, plays the steps, and
//! keeps the event log and the snapshots for the reports.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use fsfilter::{MajorFunction, Status};
use fsfilter_sim::{
    CreateOptions, DeviceHandle, Event, EventKind, FsKind, Handle, InstanceLayout, InstanceSpec,
    InstancesSpec, IoRequest, Machine, MachineConfig, MessageServer, MountWhen, PortHandle,
    RegValue, RequestRef, ServiceSpec, StartType, VolumeId, VolumeSpec,
};

use crate::samples;
use crate::scenario::{
    Action, Driver, FileSystem, IoMode, MessageBody, Model, Mount, Parameter, Scenario, Start,
};

/// One entry of a volume's stack in a snapshot, from the top down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackEntry {
    /// A legacy filter's device.
    Legacy {
        /// Its driver.
        driver: String,
    },
    /// A Filter Manager frame and its instances (highest altitude first).
    Frame {
        /// The frame number.
        frame: u32,
        /// `(driver, instance name, altitude)`.
        instances: Vec<(String, String, String)>,
    },
    /// The file system's volume device.
    FileSystem {
        /// Its driver.
        driver: String,
    },
}

/// The device stacks at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its label (`end` for the final one).
    pub label: String,
    /// The step it was taken at (`None`: after boot, before the first step).
    pub step: Option<u32>,
    /// Every volume's stack, in scenario order (empty when not mounted).
    pub volumes: Vec<(String, Vec<StackEntry>)>,
}

/// What a step did, for the text report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepOutcome {
    /// Its index.
    pub index: u32,
    /// A short description (`io read C:\a.txt`).
    pub what: String,
    /// The result.
    pub status: Status,
    /// The user request, for io steps.
    pub io: Option<RequestRef>,
}

/// What a `message` step sent and got back (an extension of scenario.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOutcome {
    /// The step.
    pub step: u32,
    /// The connection.
    pub client: String,
    /// Its driver.
    pub driver: String,
    /// The driver's model.
    pub model: Model,
    /// What was sent.
    pub body: MessageBody,
    /// The call's status.
    pub status: Status,
    /// The reply's bytes (empty on failure).
    pub reply: Vec<u8>,
}

/// What a create step that named its disposition did (an extension of scenario.md: the
/// document's `creates`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateOutcome {
    /// The step.
    pub step: u32,
    /// The request of its (last) create.
    pub io: Option<RequestRef>,
    /// The disposition it asked for (`FILE_SUPERSEDE` 0 to `FILE_OVERWRITE_IF` 5).
    pub disposition: u32,
    /// The create's status.
    pub status: Status,
    /// The create's information.
    pub information: usize,
}

impl CreateOutcome {
    /// What the information says the create did (`FILE_OVERWRITTEN` ...): for a create that
    /// succeeded only (a failed one's information says nothing, and a reparse's is its tag).
    pub fn result(&self) -> Option<&'static str> {
        let done = self.status.is_success()
            && self.status != Status::PENDING
            && self.status != Status::REPARSE;
        done.then(|| crate::scenario::CREATE_RESULTS.get(self.information).copied()).flatten()
    }
}

/// What a query_information step of class `stream` (`FileStreamInformation`) got back (an
/// extension of scenario.md: the document's `streams`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamsOutcome {
    /// The step.
    pub step: u32,
    /// Its request.
    pub io: Option<RequestRef>,
    /// The query's status.
    pub status: Status,
    /// The entries returned, in order.
    pub entries: Vec<StreamEntry>,
}

/// One `FILE_STREAM_INFORMATION` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// `StreamName` (`::$DATA`, `:name:$DATA`).
    pub name: String,
    /// `StreamSize`.
    pub size: i64,
    /// `StreamAllocationSize`.
    pub allocation: i64,
}

/// The entries of a `FILE_STREAM_INFORMATION` buffer (MS-FSCC 2.4.43), following
/// `NextEntryOffset`; a truncated entry ends the list.
pub fn stream_entries(data: &[u8]) -> Vec<StreamEntry> {
    let u32_at = |o: usize| {
        data.get(o..o + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_le_bytes)
    };
    let i64_at = |o: usize| {
        data.get(o..o + 8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_le_bytes)
    };
    let mut out = Vec::new();
    let mut at = 0usize;
    while let (Some(next), Some(len)) = (u32_at(at), u32_at(at + 4)) {
        let (Some(size), Some(allocation)) = (i64_at(at + 8), i64_at(at + 16)) else { break };
        let Some(name) = data.get(at + 24..at + 24 + len as usize) else { break };
        let units: Vec<u16> = name
            .chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .map(u16::from_le_bytes)
            .collect();
        out.push(StreamEntry { name: String::from_utf16_lossy(&units), size, allocation });
        if next == 0 {
            break;
        }
        at += next as usize;
    }
    out
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct Run {
    /// The scenario's name.
    pub scenario: String,
    /// The models of the drivers as run (`compare` changes one).
    pub models: BTreeMap<String, Model>,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// The snapshots, the last labelled `end`.
    pub snapshots: Vec<Snapshot>,
    /// What each step did.
    pub steps: Vec<StepOutcome>,
    /// The stacks after boot and after each step (for `compare`, which looks for where a driver
    /// sat while it was loaded).
    pub after_step: Vec<Snapshot>,
    /// What each `message` step got back, in step order.
    pub messages: Vec<MessageOutcome>,
    /// What the `serve` steps' connections received and answered, in order.
    pub served: Vec<crate::gatelog::Served>,
    /// The opens of io steps that a driver reparsed (`IoResult::reparsed`, rule 27), in order.
    pub reparses: Vec<ReparseOutcome>,
    /// The create steps that named their disposition, in order.
    pub creates: Vec<CreateOutcome>,
    /// The query_information steps of class `stream`, in order.
    pub streams: Vec<StreamsOutcome>,
}

/// An open of an io step (its create, implicit or not, or a query's) that the I/O manager
/// reparsed (an extension of scenario.md: the document's `reparses`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReparseOutcome {
    /// The step.
    pub step: u32,
    /// The request of the open's last create (or of its last query open).
    pub io: Option<RequestRef>,
    /// The reparses the I/O manager followed.
    pub count: u32,
}

impl Run {
    /// Verifier events.
    pub fn findings(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(|e| matches!(e.kind, EventKind::Verifier { .. }))
    }

    /// True when the verifier reported anything.
    pub fn has_findings(&self) -> bool {
        self.findings().next().is_some()
    }
}

fn fs_kind(f: FileSystem) -> FsKind {
    match f {
        FileSystem::Ntfs => FsKind::Ntfs,
        FileSystem::Fat => FsKind::Fat,
        FileSystem::Exfat => FsKind::Exfat,
        FileSystem::Refs => FsKind::Refs,
        FileSystem::Cdfs => FsKind::Cdfs,
        FileSystem::Udfs => FsKind::Udfs,
        FileSystem::Mup => FsKind::Mup,
        FileSystem::Npfs => FsKind::Npfs,
        FileSystem::Msfs => FsKind::Msfs,
    }
}

/// The default instance's name for a minifilter service.
pub fn instance_name(driver: &str) -> String {
    format!("{driver} Instance")
}

/// The service of a scenario driver (`None` for a sample the lab does not know, which a parsed
/// scenario never names).
fn service(d: &Driver) -> Option<ServiceSpec> {
    let sample = samples::find(&d.sample)?;
    let mut spec = ServiceSpec::new(&d.name, sample.entry(d.model), d.model.name());
    spec.start = match d.start {
        Start::Boot => StartType::Boot,
        Start::System => StartType::System,
        Start::Auto => StartType::Auto,
        Start::Demand => StartType::Demand,
    };
    spec.group = d.group.clone().or_else(|| Some(sample.group.to_owned()));
    spec.parameters = d
        .parameters
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Parameter::String(s) => RegValue::Sz(s.clone()),
                Parameter::Dword(n) => RegValue::Dword(*n),
            };
            (k.clone(), v)
        })
        .collect();
    if d.model == Model::Minifilter {
        spec.depends_on = vec!["FltMgr".to_owned()];
        let name = instance_name(&d.name);
        spec.instances = Some(InstancesSpec {
            default_instance: name.clone(),
            instances: vec![InstanceSpec {
                name,
                altitude: d.altitude.clone().unwrap_or_default(),
                flags: d.instance_flags,
            }],
            layout: InstanceLayout::Both,
        });
    }
    Some(spec)
}

/// The open handles of the run's user-mode caller, by volume and path.
#[derive(Default)]
struct Handles {
    open: BTreeMap<(String, String), Handle>,
    /// Handles a `cleanup` step closed: only their close is left (their file object may still be
    /// referenced), so a later request on the path needs a new handle.
    cleaned: std::collections::BTreeSet<(String, String)>,
    /// The reader's connections, by name: their driver and handle.
    clients: BTreeMap<String, (String, Connection)>,
    /// What the `message` steps got back.
    messages: Vec<MessageOutcome>,
    /// What the `serve` steps' connections received, filled by their gets' completions.
    served: Rc<RefCell<Vec<crate::gatelog::Served>>>,
    /// The user process of each connection a step made in a named process (`process = ...`);
    /// absent: the default process.
    client_process: BTreeMap<String, fsfilter_sim::ProcessId>,
    /// The reparsed opens of the io step running now: (the open's request, what it followed).
    reparsed: Vec<(Option<RequestRef>, fsfilter_sim::Reparsed)>,
    /// Every reparsed open, by step.
    reparses: Vec<ReparseOutcome>,
    /// Every create step that named its disposition.
    creates: Vec<CreateOutcome>,
    /// Every query_information step of class `stream`.
    streams: Vec<StreamsOutcome>,
}

/// Runs `f` as user process `process` (None: the process acting now, the default one).
fn acting<R>(
    m: &mut Machine,
    process: Option<fsfilter_sim::ProcessId>,
    f: impl FnOnce(&mut Machine) -> R,
) -> R {
    match process {
        Some(p) => m.as_process(p, f),
        None => f(m),
    }
}

/// The process a step runs in: the one it names (made at its first naming), or its
/// connection's for `message`, `serve` and `disconnect` steps; None: the default process.
fn step_process(
    m: &mut Machine,
    handles: &Handles,
    action: &Action,
) -> Option<fsfilter_sim::ProcessId> {
    if let Some(name) = action.process() {
        return m.process(name).or_else(|| m.new_process(name));
    }
    let client = match action {
        Action::Message { client, .. } | Action::Disconnect { client } => client,
        Action::Serve(serve) => &serve.client,
        _ => return None,
    };
    handles.client_process.get(client).copied()
}

/// A connection to a driver's message channel.
#[derive(Clone, Copy, Debug)]
enum Connection {
    /// A minifilter's communication port.
    Port(PortHandle),
    /// A legacy filter's control device, opened through its link.
    Device(DeviceHandle),
}

/// Runs `scenario`.
pub fn run(scenario: &Scenario) -> Run {
    run_inspect(scenario, |_| ()).0
}

/// Runs `scenario` and lets `inspect` look at the machine after the last step, before it is
/// dropped (the randomized stress's end-of-run accounting of pool, devices and references).
pub fn run_inspect<R>(scenario: &Scenario, inspect: impl FnOnce(&Machine) -> R) -> (Run, R) {
    let mut m = Machine::new(MachineConfig { seed: scenario.seed });
    crate::fltmgr::install(&mut m);
    let mut volumes: BTreeMap<String, VolumeId> = BTreeMap::new();
    for v in &scenario.volumes {
        let mut spec = VolumeSpec::new(&v.name, fs_kind(v.filesystem));
        spec.mount = match v.mount {
            Mount::Boot => MountWhen::Boot,
            Mount::Step => MountWhen::Step,
        };
        spec.dev_drive = v.dev_drive;
        spec.trusted = v.trusted;
        spec.mount_pends_ms = v.mount_pends_ms;
        spec.vdo_initializing_ms = v.initialize_late_ms;
        spec.files = v.files.clone();
        spec.blank = v.blank;
        volumes.insert(v.name.clone(), m.add_volume(spec));
    }
    for spec in scenario.drivers.iter().filter_map(service) {
        m.install(spec);
    }
    m.boot();
    let mut handles = Handles::default();
    let mut steps = Vec::new();
    let mut snapshots = Vec::new();
    let mut after_step = vec![snapshot(&m, scenario, &volumes, "boot", None)];
    for (i, step) in scenario.steps.iter().enumerate() {
        let index = i as u32;
        m.set_step(Some(index));
        let process = step_process(&mut m, &handles, &step.action);
        let mut outcome = acting(&mut m, process, |m| {
            play(m, scenario, &volumes, &mut handles, index, &step.action, &mut snapshots)
        });
        if let Some(name) = step.action.process() {
            outcome.what.push_str(&format!(" in process {name}"));
        }
        m.settle();
        steps.push(outcome);
        after_step.push(snapshot(
            &m,
            scenario,
            &volumes,
            &format!("after step {index}"),
            Some(index),
        ));
    }
    m.set_step(scenario.steps.len().checked_sub(1).map(|i| i as u32));
    snapshots.push(snapshot(&m, scenario, &volumes, "end", m_step(scenario)));
    // Connections still open end as the reader process exits (its handles close).
    for (client, (_, c)) in std::mem::take(&mut handles.clients) {
        let process = handles.client_process.get(&client).copied();
        acting(&mut m, process, |m| disconnect(m, c));
    }
    let events = m.events();
    let inspected = inspect(&m);
    drop(m);
    let run = Run {
        scenario: scenario.name.clone(),
        models: scenario.drivers.iter().map(|d| (d.name.clone(), d.model)).collect(),
        events,
        snapshots,
        steps,
        after_step,
        messages: handles.messages,
        served: std::mem::take(&mut *handles.served.borrow_mut()),
        reparses: handles.reparses,
        creates: handles.creates,
        streams: handles.streams,
    };
    (run, inspected)
}

fn m_step(scenario: &Scenario) -> Option<u32> {
    scenario.steps.len().checked_sub(1).map(|i| i as u32)
}

fn play(
    m: &mut Machine,
    scenario: &Scenario,
    volumes: &BTreeMap<String, VolumeId>,
    handles: &mut Handles,
    index: u32,
    action: &Action,
    snapshots: &mut Vec<Snapshot>,
) -> StepOutcome {
    let model_of = |d: &str| scenario.driver(d).map_or(Model::Legacy, |x| x.model);
    let vol = |v: &str| volumes.get(v).copied();
    let done = |what: String, status: Status| StepOutcome { index, what, status, io: None };
    match action {
        Action::Load { driver } => done(format!("load {driver}"), m.start(driver)),
        Action::Stop { driver } => done(format!("stop {driver}"), m.stop(driver).status()),
        Action::Unload { driver } => {
            let status = match model_of(driver) {
                Model::Minifilter => crate::fltmgr::unload(m, driver),
                Model::Legacy => crate::fltmgr::not_a_minifilter(m, "unload", driver, None),
            };
            done(format!("unload {driver}"), status)
        }
        Action::Mount { volume } => {
            let status = vol(volume).map_or(Status::NO_SUCH_DEVICE, |v| m.mount(v));
            done(format!("mount {volume}"), status)
        }
        Action::Dismount { volume } => {
            let status = vol(volume).map_or(Status::NO_SUCH_DEVICE, |v| m.dismount(v));
            // The caller lets go of its handles on the volume, as an application does when the
            // volume goes away: their cleanups and closes still reach the stack (the devices of
            // a dismounted volume go when its last file object closes, facts.md §1.7).
            let stale: Vec<Handle> =
                handles.open.iter().filter(|((v, _), _)| v == volume).map(|(_, h)| *h).collect();
            handles.open.retain(|(v, _), _| v != volume);
            handles.cleaned.retain(|(v, _)| v != volume);
            for h in stale {
                let _ = m.close_handle(h);
            }
            done(format!("dismount {volume}"), status)
        }
        Action::Remove { volume, surprise } => {
            let status =
                vol(volume).map_or(Status::NO_SUCH_DEVICE, |v| m.remove_volume(v, *surprise));
            // Removed: the caller lets go of its handles on the volume, as after a dismount (a
            // refused query-remove leaves them open).
            if status.is_success() {
                let stale: Vec<Handle> = handles
                    .open
                    .iter()
                    .filter(|((v, _), _)| v == volume)
                    .map(|(_, h)| *h)
                    .collect();
                handles.open.retain(|(v, _), _| v != volume);
                handles.cleaned.retain(|(v, _)| v != volume);
                for h in stale {
                    let _ = m.close_handle(h);
                }
            }
            let what = if *surprise { "surprise-remove" } else { "remove" };
            done(format!("{what} {volume}"), status)
        }
        Action::Attach { driver, volume, altitude, instance } => {
            let status = match (model_of(driver), vol(volume)) {
                (Model::Minifilter, Some(v)) => {
                    crate::fltmgr::attach(m, driver, v, altitude.as_deref(), instance.as_deref())
                }
                (Model::Legacy, _) => {
                    crate::fltmgr::not_a_minifilter(m, "attach", driver, Some(volume))
                }
                (_, None) => Status::NO_SUCH_DEVICE,
            };
            done(format!("attach {driver} {volume}"), status)
        }
        Action::Detach { driver, volume, instance } => {
            let status = match (model_of(driver), vol(volume)) {
                (Model::Minifilter, Some(v)) => {
                    crate::fltmgr::detach(m, driver, v, instance.as_deref())
                }
                (Model::Legacy, _) => {
                    crate::fltmgr::not_a_minifilter(m, "detach", driver, Some(volume))
                }
                (_, None) => Status::NO_SUCH_DEVICE,
            };
            done(format!("detach {driver} {volume}"), status)
        }
        Action::Link { volume, path, target, kind, directory } => {
            let what = format!(
                "link {volume}{}{path} -> {target} ({})",
                sep(path),
                crate::scenario::LINK_KINDS
                    .iter()
                    .find(|(_, k)| k == kind)
                    .map_or("?", |(n, _)| *n)
            );
            let Some(v) = vol(volume) else { return done(what, Status::NO_SUCH_DEVICE) };
            let r = link(m, v, path, target, *kind, *directory);
            StepOutcome { index, what, status: r.status, io: r.io }
        }
        Action::Snapshot { label } => {
            snapshots.push(snapshot(m, scenario, volumes, label, Some(index)));
            done(format!("snapshot {label}"), Status::SUCCESS)
        }
        Action::Connect { driver, client, context, user, overlapped, process } => {
            let mut what = if client == driver {
                format!("connect {driver}")
            } else {
                format!("connect {driver} (client {client})")
            };
            if *user == fsfilter_sim::Caller::StandardUser {
                what.push_str(" as a standard user");
            }
            let channel = scenario
                .driver(driver)
                .and_then(|d| samples::find(&d.sample))
                .and_then(|s| s.channel)
                .unwrap_or_default();
            let context = context.as_deref().unwrap_or_default();
            let connected = match model_of(driver) {
                Model::Minifilter => m
                    .connect_communication_port_as(*user, &format!("\\{channel}"), context)
                    .map(Connection::Port),
                // CreateFile(\\.\<name>): the link \??\<name> to the control device, the
                // context in an extended attribute (the legacy channel's convention).
                Model::Legacy => {
                    let ea =
                        (!context.is_empty()).then(|| fsfilter_sim::full_ea("Context", context));
                    let name = format!("\\??\\{channel}");
                    // A served connection's gets are requests the driver holds: overlapped.
                    if *overlapped {
                        fsfilter_sim::syscalls::open_user_device(&name, ea.as_deref(), *user, true)
                    } else {
                        m.open_device_as(*user, &name, ea.as_deref())
                    }
                    .map(Connection::Device)
                }
            };
            match connected {
                Ok(c) => {
                    handles.clients.insert(client.clone(), (driver.clone(), c));
                    if process.is_some() {
                        handles.client_process.insert(client.clone(), m.acting_process());
                    }
                    done(what, Status::SUCCESS)
                }
                Err(status) => done(what, status),
            }
        }
        Action::Message { client, body, reply } => {
            let (what, input) = match body {
                MessageBody::Spy(c) => (
                    format!("message {client} {}", crate::scenario::spy_command_name(*c)),
                    c.message().to_vec(),
                ),
                MessageBody::GateStats => {
                    (format!("message {client} get_stats"), gate::wire::get_stats().to_vec())
                }
                MessageBody::Data(d) => {
                    (format!("message {client} ({} bytes)", d.len()), d.clone())
                }
            };
            let Some((driver, connection)) = handles.clients.get(client).cloned() else {
                // Its connect step failed: nothing to send on.
                return done(what, Status::INVALID_HANDLE);
            };
            let answer = match connection {
                Connection::Port(p) => m.send_message(p, &input, *reply as usize),
                Connection::Device(d) => {
                    let r = m.device_control(
                        d,
                        fsfilter::IOCTL_FSFILTER_MESSAGE,
                        &input,
                        *reply as usize,
                    );
                    if r.status.is_success() { Ok(r.data) } else { Err(r.status) }
                }
            };
            let (status, bytes) = match answer {
                Ok(bytes) => (Status::SUCCESS, bytes),
                Err(s) => (s, Vec::new()),
            };
            handles.messages.push(MessageOutcome {
                step: index,
                client: client.clone(),
                model: model_of(&driver),
                driver,
                body: body.clone(),
                status,
                reply: bytes,
            });
            done(what, status)
        }
        Action::Serve(serve) => {
            let what = format!(
                "serve {} ({} get{}{})",
                serve.client,
                serve.gets,
                if serve.gets == 1 { "" } else { "s" },
                if serve.delay_ms == 0 {
                    String::new()
                } else {
                    format!(", replies after {} ms", serve.delay_ms)
                }
            );
            let Some((driver, connection)) = handles.clients.get(&serve.client).cloned() else {
                return done(what, Status::INVALID_HANDLE);
            };
            let server = match connection {
                Connection::Port(p) => MessageServer::Port(p),
                Connection::Device(d) => MessageServer::Device(d),
            };
            let cx = Rc::new(ServeCx {
                serve: serve.clone(),
                step: index,
                driver: driver.clone(),
                model: model_of(&driver),
                server,
                served: handles.served.clone(),
                process: handles.client_process.get(&serve.client).copied(),
            });
            let mut first = Status::SUCCESS;
            for i in 0..serve.gets {
                let status = arm(m, cx.clone());
                if i == 0 {
                    first = status;
                }
            }
            done(what, first)
        }
        Action::Disconnect { client } => {
            let what = format!("disconnect {client}");
            handles.client_process.remove(client);
            match handles.clients.remove(client) {
                Some((_, c)) => done(what, disconnect(m, c)),
                None => done(what, Status::INVALID_HANDLE),
            }
        }
        Action::Cancel { volume, path, handle } => {
            let path = path.clone().unwrap_or_default();
            let mut what =
                format!("io {} {}{}{}", crate::scenario::CANCEL, volume, sep(&path), path);
            push_handle(&mut what, handle.as_deref());
            if vol(volume).is_none() {
                return done(format!("io {volume}"), Status::NO_SUCH_DEVICE);
            }
            done(what, cancel(m, handles, handle_key(volume, &path, handle.as_deref())))
        }
        Action::Io {
            volume,
            op,
            path,
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
            process: _,
        } => {
            let Some(v) = vol(volume) else {
                return done(format!("io {volume}"), Status::NO_SUCH_DEVICE);
            };
            let path = path.clone().unwrap_or_default();
            let mut what =
                format!("io {} {}{}{}", crate::scenario::io_op_name(*op), volume, sep(&path), path);
            if let Some(c) = class {
                let name = crate::scenario::QUERY_CLASSES.iter().find(|(_, v, _)| v == c);
                what.push_str(&format!(" ({})", name.map_or("?", |(n, _, _)| *n)));
            }
            if let Some(n) = notify {
                let tree = if n.watch_tree { ", tree" } else { "" };
                what.push_str(&format!(
                    " (notify {}{tree})",
                    crate::scenario::notify_names(n.filter)
                ));
            }
            if *wait {
                what.push_str(" (wait)");
            }
            if *overlapped {
                what.push_str(" (overlapped)");
            }
            let protection = protection.unwrap_or(fsfilter::section_sync::PAGE_READONLY);
            if *op == MajorFunction::AcquireForSectionSynchronization {
                what.push_str(&format!(" ({})", crate::scenario::protection_name(protection)));
            }
            if let Some(w) = writer {
                what.push_str(&format!(" ({})", crate::scenario::writer_name(*w)));
            }
            if let Some(c) = control {
                what.push_str(&format!(" ({})", crate::scenario::control_name(*c)));
            }
            if *complete_if_oplocked {
                what.push_str(" (complete_if_oplocked)");
            }
            if *open_reparse_point {
                what.push_str(" (open_reparse_point)");
            }
            if *delete_on_close {
                what.push_str(" (delete_on_close)");
            }
            if let Some(d) = disposition {
                what.push_str(&format!(" (disposition {})", crate::scenario::disposition_name(*d)));
            }
            push_handle(&mut what, handle.as_deref());
            let step = IoStep {
                op: *op,
                offset: *offset,
                length: *length,
                mode: *mode,
                class: *class,
                notify: *notify,
                wait: *wait,
                overlapped: *overlapped,
                protection,
                writer: *writer,
                control: *control,
                complete_if_oplocked: *complete_if_oplocked,
                open_reparse_point: *open_reparse_point,
                delete_on_close: *delete_on_close,
                disposition: *disposition,
            };
            let key = handle_key(volume, &path, handle.as_deref());
            let r = io(m, handles, key, v, &path, step, data.as_deref());
            if let (MajorFunction::Create, Some(d)) = (*op, *disposition) {
                let (status, information) = (r.status, r.information);
                let c =
                    CreateOutcome { step: index, io: r.io, disposition: d, status, information };
                handles.creates.push(c);
            }
            if *op == MajorFunction::QueryInformation && *class == Some(FILE_STREAM_INFORMATION) {
                let entries = stream_entries(&r.data);
                let o = StreamsOutcome { step: index, io: r.io, status: r.status, entries };
                handles.streams.push(o);
            }
            for (io, p) in std::mem::take(&mut handles.reparsed) {
                handles.reparses.push(ReparseOutcome { step: index, io, count: p.count });
            }
            StepOutcome { index, what, status: r.status, io: r.io }
        }
    }
}

/// What a `serve` step's gets share.
struct ServeCx {
    serve: crate::scenario::Serve,
    step: u32,
    driver: String,
    model: Model,
    server: MessageServer,
    served: Rc<RefCell<Vec<crate::gatelog::Served>>>,
    /// The connection's process: its gets and replies are its calls.
    process: Option<fsfilter_sim::ProcessId>,
}

/// One get of a `serve` step: when it completes with a message, the reply is chosen and sent
/// (after the step's delay) and another get takes its place; a get that fails is recorded and
/// not renewed (the connection closed, or the driver refused it). Returns the get's status.
fn arm(m: &mut Machine, cx: Rc<ServeCx>) -> Status {
    let server = cx.server;
    let capacity = cx.serve.capacity as usize;
    let record = |m: &Machine, cx: &ServeCx| crate::gatelog::Served {
        step: cx.step,
        at_step: fsfilter_sim::kernel::with(|k| k.step),
        at_ms: m.now_ms(),
        client: cx.serve.client.clone(),
        driver: cx.driver.clone(),
        model: cx.model,
        get_status: Status::SUCCESS,
        message_id: 0,
        message: Vec::new(),
        reply_capacity: None,
        rule: None,
        reply: None,
        reply_status: None,
        replied_ms: None,
        gate: cx.serve.gate,
    };
    let held = cx.clone();
    let status = server.get(m, capacity, move |m, got| {
        let process = cx.process;
        acting(m, process, |m| served(m, cx, got, record));
    });
    // A get refused at once: its `then` never runs, in either model (a port's refusal, or a
    // request the control device's driver failed without pending it: IopCompleteRequest queues
    // no completion for it).
    if !status.is_success() {
        let mut s = record(m, &held);
        s.get_status = status;
        held.served.borrow_mut().push(s);
    }
    status
}

/// A get of a `serve` step completed with `got`: records it, chooses and sends the reply, arms
/// another get.
fn served(
    m: &mut Machine,
    cx: Rc<ServeCx>,
    got: Result<fsfilter_sim::Received, Status>,
    record: fn(&Machine, &ServeCx) -> crate::gatelog::Served,
) {
    let server = cx.server;
    {
        let mut s = record(m, &cx);
        let msg = match got {
            Ok(msg) => msg,
            Err(status) => {
                s.get_status = status;
                cx.served.borrow_mut().push(s);
                return;
            }
        };
        s.message_id = msg.header.message_id;
        s.message = msg.message.clone();
        s.reply_capacity = msg.reply_capacity();
        let text = s.text().to_lowercase();
        let rule = cx.serve.rules.iter().position(|r| text.contains(&r.contains.to_lowercase()));
        s.rule = rule;
        let reply = rule
            .and_then(|i| cx.serve.rules.get(i))
            .map_or(&cx.serve.reply, |r| &r.reply)
            .bytes()
            .filter(|_| s.reply_capacity.is_some());
        s.reply = reply.clone();
        let slot = {
            let mut served = cx.served.borrow_mut();
            served.push(s);
            served.len() - 1
        };
        if let Some(bytes) = reply {
            let id = msg.header.message_id;
            let served = cx.served.clone();
            let answer = move |m: &mut Machine| {
                let status = server.reply(m, id, &bytes);
                if let Some(s) = served.borrow_mut().get_mut(slot) {
                    s.reply_status = Some(status);
                    s.replied_ms = Some(m.now_ms());
                }
            };
            if cx.serve.delay_ms == 0 {
                answer(m);
            } else {
                m.schedule(cx.serve.delay_ms, answer);
            }
        }
        // Another get takes this one's place.
        let _ = arm(m, cx);
    }
}

/// Closes a connection (`CloseHandle`).
fn disconnect(m: &mut Machine, c: Connection) -> Status {
    match c {
        Connection::Port(p) => m.close_port(p),
        Connection::Device(d) => m.close_device(d),
    }
}

/// A `cancel` step: `CancelIoEx` on the handle the lab keeps for the path. With none open (or
/// only one a `cleanup` step closed, which keeps nothing outstanding), nothing can be outstanding
/// on it: `STATUS_NOT_FOUND`, and no handle is opened for it.
fn cancel(m: &mut Machine, handles: &Handles, key: (String, String)) -> Status {
    match handles.open.get(&key).filter(|_| !handles.cleaned.contains(&key)) {
        Some(&handle) => m.io(IoRequest::Cancel { handle }).status,
        None => Status::NOT_FOUND,
    }
}

/// The key of the handle an io step uses: the path's own (paths ignore case), or one of its
/// named handles (the `handle` extension), which no path's own key can equal (a NUL is in no
/// file name).
fn handle_key(volume: &str, path: &str, handle: Option<&str>) -> (String, String) {
    let path = path.to_ascii_lowercase();
    (volume.to_owned(), handle.map_or_else(|| path.clone(), |h| format!("{path}\0{h}")))
}

/// Ends a step's description with the handle it names, if any.
fn push_handle(what: &mut String, handle: Option<&str>) {
    if let Some(h) = handle {
        what.push_str(&format!(" (handle {h})"));
    }
}

fn sep(path: &str) -> &'static str {
    if path.is_empty() || path.starts_with('\\') { "" } else { "\\" }
}

const FILE_STANDARD_INFORMATION: u32 = 5;
const FILE_STREAM_INFORMATION: u32 = 22;
const FILE_END_OF_FILE_INFORMATION: u32 = 20;
const FILE_DIRECTORY_INFORMATION: u32 = 1;
const FILE_FS_VOLUME_INFORMATION: u32 = 1;
const FSCTL_IS_VOLUME_MOUNTED: u32 = 0x0009_0028;
/// `FILE_COMPLETE_IF_OPLOCKED`.
const FILE_COMPLETE_IF_OPLOCKED: u32 = 0x0000_0100;
const IOCTL_DISK_GET_DRIVE_GEOMETRY: u32 = 0x0007_0000;

/// A `link` step: the path is opened as `mklink` opens it (read and write access, the reparse
/// point itself, made when absent: a directory for a junction or a directory symlink), given
/// its reparse point (`FSCTL_SET_REPARSE_POINT`) and closed. The step's result is the control's,
/// or the open's when the open failed.
fn link(
    m: &mut Machine,
    v: VolumeId,
    path: &str,
    target: &str,
    kind: crate::scenario::LinkKind,
    directory: bool,
) -> fsfilter_sim::IoResult {
    use fsfilter_sim::fs::reparse as rp;
    use fsfilter_sim::nt::{access, create_options as co};
    let shape = if directory { co::DIRECTORY_FILE } else { co::NON_DIRECTORY_FILE };
    let options = CreateOptions::default()
        .access(access::GENERIC_READ | access::GENERIC_WRITE)
        .options(shape | rp::FILE_OPEN_REPARSE_POINT);
    let opened = m.create(v, path, options);
    let Some(handle) = opened.handle else { return opened };
    let (substitute, relative) = crate::scenario::link_names(target);
    let input = match kind {
        crate::scenario::LinkKind::Junction => rp::mount_point_buffer(&substitute, target),
        crate::scenario::LinkKind::Symlink => rp::symlink_buffer(&substitute, target, relative),
    };
    let r = m.io(IoRequest::Fsctl {
        handle,
        code: rp::FSCTL_SET_REPARSE_POINT,
        input: &input,
        output_length: 0,
    });
    m.close_handle(handle);
    r
}

/// The request fields of an io step.
#[derive(Clone, Copy)]
struct IoStep {
    op: MajorFunction,
    offset: Option<u64>,
    length: Option<u32>,
    mode: IoMode,
    class: Option<u32>,
    notify: Option<crate::scenario::Notify>,
    wait: bool,
    overlapped: bool,
    /// A `map` step's page protection.
    protection: u32,
    /// A paging write's writer.
    writer: Option<fsfilter_sim::PageWriter>,
    /// An fsctl step's code (None: `FSCTL_IS_VOLUME_MOUNTED`).
    control: Option<u32>,
    /// A create step's `FILE_COMPLETE_IF_OPLOCKED`.
    complete_if_oplocked: bool,
    /// A create step's `FILE_OPEN_REPARSE_POINT`.
    open_reparse_point: bool,
    /// A create step's `FILE_DELETE_ON_CLOSE`.
    delete_on_close: bool,
    /// A create step's disposition (None: `FILE_OPEN_IF`, `CreateOptions::default`'s).
    disposition: Option<u32>,
}

fn io(
    m: &mut Machine,
    handles: &mut Handles,
    key: (String, String),
    v: VolumeId,
    path: &str,
    step: IoStep,
    data: Option<&[u8]>,
) -> fsfilter_sim::IoResult {
    let IoStep {
        op,
        offset,
        length,
        mode,
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
    } = step;
    let mode = match mode {
        IoMode::Cached => fsfilter_sim::IoMode::Cached,
        IoMode::NonCached => fsfilter_sim::IoMode::NonCached,
        IoMode::Paging => fsfilter_sim::IoMode::Paging,
    };
    if op == MajorFunction::Create {
        let options = CreateOptions::default();
        let options = disposition.map_or(options, |d| options.disposition(d));
        let options = if overlapped { options.overlapped() } else { options };
        let options =
            if complete_if_oplocked { options.options(FILE_COMPLETE_IF_OPLOCKED) } else { options };
        let options = if open_reparse_point {
            let o = options.options;
            options.options(o | fsfilter_sim::fs::reparse::FILE_OPEN_REPARSE_POINT)
        } else {
            options
        };
        let options = if delete_on_close {
            options.options(options.options | fsfilter_sim::nt::create_options::DELETE_ON_CLOSE)
        } else {
            options
        };
        let r = m.create(v, path, options);
        handles.reparsed.extend(r.reparsed.map(|p| (r.io, p)));
        if let Some(h) = r.handle {
            handles.cleaned.remove(&key);
            if let Some(old) = handles.open.insert(key, h) {
                m.close_handle(old);
            }
        }
        return r;
    }
    if op == MajorFunction::Shutdown {
        return m.io(IoRequest::Shutdown { volume: v });
    }
    if op == MajorFunction::NetworkQueryOpen {
        // NtQueryFullAttributesFile: by name, no handle.
        let r = m.io(IoRequest::QueryAttributes { volume: v, path });
        handles.reparsed.extend(r.reparsed.map(|p| (r.io, p)));
        return r;
    }
    // A handle a `cleanup` step closed serves nothing but its close: before anything else, the
    // caller lets it go (its close shows in the log) and opens a new one.
    if op != MajorFunction::Close && handles.cleaned.remove(&key) {
        if let Some(old) = handles.open.remove(&key) {
            m.close_handle(old);
        }
    }
    // Every other request needs a handle: the one a `create` step opened on the path, or one
    // opened now (its create shows in the log as a request of its own).
    let handle = match handles.open.get(&key) {
        Some(h) => *h,
        None => {
            // A map step's own open asks for execute access on top of the default access, so
            // that every protection can be mapped (a handle a create step opened has the
            // default access, without it). Until December 6 it asked for read and execute
            // only, and no writable mapping of it reached a filter.
            let options = if op == MajorFunction::AcquireForSectionSynchronization {
                let default = CreateOptions::default();
                let access = default.access | fsfilter_sim::nt::access::GENERIC_EXECUTE;
                default.access(access)
            } else {
                CreateOptions::default()
            };
            let r = m.create(v, path, options);
            handles.reparsed.extend(r.reparsed.map(|p| (r.io, p)));
            match r.handle {
                Some(h) => {
                    handles.open.insert(key.clone(), h);
                    h
                }
                None => return r,
            }
        }
    };
    let length = length.map(|l| l as usize);
    match op {
        MajorFunction::Read => m.read(handle, offset, length.unwrap_or(512), mode),
        MajorFunction::AcquireForSectionSynchronization => m.create_section(handle, protection),
        MajorFunction::Write => {
            let default = b"written by the fsfilter lab".to_vec();
            let mut bytes = data.map_or(default, <[u8]>::to_vec);
            // With a length, the data repeats to fill it (non-cached writes need whole sectors).
            if let Some(len) = length {
                bytes = bytes.iter().copied().cycle().take(len).collect();
            }
            match writer {
                // A paging write names its offset (the memory manager's): 0 when the step
                // gives none, as for any paging write.
                Some(w) => m.page_write(handle, offset.unwrap_or(0), &bytes, w),
                None => m.write(handle, offset, &bytes, mode),
            }
        }
        MajorFunction::QueryInformation => {
            let class = class.unwrap_or(FILE_STANDARD_INFORMATION);
            let default = crate::scenario::QUERY_CLASSES
                .iter()
                .find(|(_, c, _)| *c == class)
                .map_or(24, |(_, _, length)| *length as usize);
            m.query_information(handle, class, length.unwrap_or(default))
        }
        MajorFunction::SetInformation => {
            let eof = length.unwrap_or(0) as u64;
            m.set_information(handle, FILE_END_OF_FILE_INFORMATION, &eof.to_le_bytes())
        }
        MajorFunction::DirectoryControl if let Some(n) = notify => {
            m.io(IoRequest::NotifyChangeDirectory {
                handle,
                filter: n.filter,
                watch_tree: n.watch_tree,
                length: length.unwrap_or(4096),
            })
        }
        MajorFunction::DirectoryControl => m.io(IoRequest::DirectoryControl {
            handle,
            class: FILE_DIRECTORY_INFORMATION,
            pattern: Some("*"),
            restart: true,
            single: false,
            length: length.unwrap_or(4096),
        }),
        MajorFunction::Cleanup => {
            handles.cleaned.insert(key);
            m.io(IoRequest::Cleanup { handle })
        }
        MajorFunction::Close => {
            handles.cleaned.remove(&key);
            handles.open.remove(&key);
            m.io(IoRequest::Close { handle })
        }
        MajorFunction::FlushBuffers => m.io(IoRequest::Flush { handle }),
        MajorFunction::FileSystemControl => {
            let (code, input, output_length) =
                crate::scenario::control_request(control.unwrap_or(FSCTL_IS_VOLUME_MOUNTED));
            m.io(IoRequest::Fsctl { handle, code, input: &input, output_length })
        }
        MajorFunction::DeviceControl => m.io(IoRequest::DeviceControl {
            handle,
            code: IOCTL_DISK_GET_DRIVE_GEOMETRY,
            input: &[],
            output_length: length.unwrap_or(24),
        }),
        MajorFunction::LockControl => m.io(IoRequest::Lock {
            handle,
            offset: offset.unwrap_or(0),
            length: length.unwrap_or(1) as u64,
            exclusive: true,
            fail_immediately: !wait,
        }),
        MajorFunction::QueryVolumeInformation => m.io(IoRequest::QueryVolumeInformation {
            handle,
            class: FILE_FS_VOLUME_INFORMATION,
            length: length.unwrap_or(128),
        }),
        _ => fsfilter_sim::IoResult::without_request(Status::INVALID_DEVICE_REQUEST),
    }
}

/// The device stacks of every volume now.
fn snapshot(
    m: &Machine,
    scenario: &Scenario,
    volumes: &BTreeMap<String, VolumeId>,
    label: &str,
    step: Option<u32>,
) -> Snapshot {
    let list = scenario
        .volumes
        .iter()
        .map(|v| {
            let stack =
                volumes.get(&v.name).map_or_else(Vec::new, |id| crate::fltmgr::stack(m, *id));
            (v.name.clone(), stack)
        })
        .collect();
    Snapshot { label: label.to_owned(), step, volumes: list }
}
