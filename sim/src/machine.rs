//! `Machine`: a simulated computer on this thread. Install services, boot, run steps, read the
//! event log.

use std::marker::PhantomData;

use fsfilter::Status;

use crate::events::{Event, RequestRef, Rule};
use crate::files::{DeviceHandle, Handle};
use crate::fltmgr::ports::PortHandle;
use crate::ids::{RequestId, VolumeId};
use crate::kernel::{self, Kernel};
use crate::loader::{ServiceSpec, StartType, StopResult};
use crate::process::ProcessId;
use crate::requests::OverlappedResult;
use crate::security::Caller;
use crate::syscalls::{CreateOptions, IoMode, IoRequest, IoResult, PageWriter};
use crate::volumes::{MountWhen, VolumeError, VolumeSpec};

/// How a machine is built.
#[derive(Clone, Debug, Default)]
pub struct MachineConfig {
    /// Every random choice derives from it.
    pub seed: u64,
}

/// A simulated machine. One per thread; dropping it tears the kernel down.
pub struct Machine {
    _not_send: PhantomData<*const ()>,
}

impl Machine {
    /// A machine with no volumes and no services yet.
    ///
    /// # Panics
    /// When this thread already has a machine.
    pub fn new(config: MachineConfig) -> Machine {
        kernel::install(Kernel::new(config));
        kernel::with(|k| {
            k.registry.create(crate::registry::SERVICES);
            k.registry.create(crate::fsreg::BLOCK_POLICY_KEY);
        });
        Machine { _not_send: PhantomData }
    }

    /// Runs `f` with the kernel state (for tests and the lab's inspections).
    pub fn kernel<R>(&self, f: impl FnOnce(&mut Kernel) -> R) -> R {
        kernel::with(f)
    }

    /// Installs a service.
    pub fn install(&mut self, spec: ServiceSpec) {
        let wants_fltmgr =
            spec.depends_on.iter().any(|d| d.eq_ignore_ascii_case(crate::fltmgr::SERVICE));
        kernel::with(|k| {
            if wants_fltmgr {
                k.ensure_fltmgr_installed();
            }
            k.install_service(spec);
        });
    }

    /// Boots: boot-start services group by group, then system-start, then auto-start. Volumes
    /// that mount at boot mount right after the boot-start phase when their file system is
    /// loaded by then (NTFS, the network shares), the others (file systems the recognizer loads,
    /// pipes and mailslots) right after the system-start phase (docs/simulator.md).
    pub fn boot(&mut self) {
        for start in [StartType::Boot, StartType::System, StartType::Auto] {
            let order = kernel::with(|k| k.load_order(start));
            for name in order {
                crate::loader::load_service(&name);
            }
            crate::sched::run_ready();
            match start {
                StartType::Boot => mount_boot_volumes(false),
                StartType::System => mount_boot_volumes(true),
                _ => {}
            }
        }
        kernel::with(|k| k.booted = true);
    }

    /// Adds a volume, installing the services it needs (its file system; for disk and CD
    /// volumes the storage driver, RAW and the recognizer). After boot the needed boot, system
    /// and auto-start services start at once, the storage device appears, and a `Boot` volume
    /// mounts.
    ///
    /// # Panics
    /// When the spec is invalid (see [`Machine::try_add_volume`]).
    pub fn add_volume(&mut self, spec: VolumeSpec) -> VolumeId {
        match self.try_add_volume(spec) {
            Ok(v) => v,
            Err(e) => panic!("add_volume: {e}"),
        }
    }

    /// Adds a volume (see [`Machine::add_volume`]).
    pub fn try_add_volume(&mut self, spec: VolumeSpec) -> Result<VolumeId, VolumeError> {
        let when = spec.mount;
        let (v, installed, booted) = kernel::with(|k| {
            let kind = spec.fs;
            let v = k.add_volume_record(spec)?;
            let installed = crate::fs::install_for(k, kind);
            Ok::<_, VolumeError>((v, installed, k.booted))
        })?;
        if booted {
            for name in installed {
                let start = kernel::with(|k| {
                    k.service_index(&name).map(|i| k.loader.services[i].spec.start)
                });
                if matches!(start, Some(StartType::Boot | StartType::System | StartType::Auto)) {
                    crate::loader::load_service(&name);
                }
            }
            let storage = kernel::with(|k| {
                let vol = k.volume(v);
                if vol.storage.is_some() || !vol.fs.uses_vpb() {
                    return None;
                }
                let i = k.service_index(crate::storage::SERVICE)?;
                let svc = &k.loader.services[i];
                Some((svc.image?, k.objects.driver(svc.driver?).ptr))
            });
            if let Some((image, driver)) = storage {
                let _ = kernel::call_into(Some(image), || crate::storage::add_device(driver, v));
            }
            if when == MountWhen::Boot {
                crate::mount::mount(v);
            }
            crate::sched::run_ready();
        }
        Ok(v)
    }

    /// The volume with this name.
    pub fn volume(&self, name: &str) -> Option<VolumeId> {
        kernel::with(|k| k.volume_by_name(name))
    }

    /// Mounts a volume (scenario.md `mount`): a `Step` volume's media arrives now.
    pub fn mount(&mut self, v: VolumeId) -> Status {
        let s = crate::mount::mount(v);
        crate::sched::run_ready();
        s
    }

    /// Dismounts a volume (scenario.md `dismount`) the way `fsutil volume dismount` does: opens
    /// the volume, sends `FSCTL_DISMOUNT_VOLUME`, closes the handle. The volume device goes when
    /// its last file closes; files still open fail with `STATUS_VOLUME_DISMOUNTED`.
    pub fn dismount(&mut self, v: VolumeId) -> Status {
        if !kernel::with(|k| crate::mount::is_mounted(k, v)) {
            return Status::VOLUME_DISMOUNTED;
        }
        let open = self.create(v, "", CreateOptions::open().options(0));
        let Some(h) = open.handle else { return open.status };
        let r = self.io(IoRequest::Fsctl {
            handle: h,
            code: crate::nt::fsctl::DISMOUNT_VOLUME,
            input: &[],
            output_length: 0,
        });
        self.io(IoRequest::Close { handle: h });
        r.status
    }

    /// Runs one user-mode request.
    pub fn io(&mut self, req: IoRequest<'_>) -> IoResult {
        crate::syscalls::io(req)
    }

    /// `NtCreateFile` on a volume; the result carries the handle.
    pub fn create(&mut self, volume: VolumeId, path: &str, options: CreateOptions) -> IoResult {
        self.io(IoRequest::Create { volume, path, options })
    }

    /// `NtCreateFile` of `path` relative to the directory (or file) of the open handle
    /// `related` (`ObjectAttributes.RootDirectory`); the result carries the handle.
    pub fn create_relative(
        &mut self,
        related: Handle,
        path: &str,
        options: CreateOptions,
    ) -> IoResult {
        crate::syscalls::create_relative(related, path, options)
    }

    /// Opens or creates a file; the handle, or the failing status.
    pub fn open(
        &mut self,
        volume: VolumeId,
        path: &str,
        options: CreateOptions,
    ) -> Result<Handle, Status> {
        let r = self.create(volume, path, options);
        r.handle.ok_or(r.status)
    }

    /// `NtReadFile`.
    pub fn read(
        &mut self,
        handle: Handle,
        offset: Option<u64>,
        length: usize,
        mode: IoMode,
    ) -> IoResult {
        self.io(IoRequest::Read { handle, offset, length, mode })
    }

    /// `NtCreateSection` on the handle's file with `protection` (a `PAGE_*` value), the section's
    /// handle closed at once ([`IoRequest::CreateSection`]).
    pub fn create_section(&mut self, handle: Handle, protection: u32) -> IoResult {
        self.io(IoRequest::CreateSection { handle, protection })
    }

    /// `NtWriteFile`.
    pub fn write(
        &mut self,
        handle: Handle,
        offset: Option<u64>,
        data: &[u8],
        mode: IoMode,
    ) -> IoResult {
        self.io(IoRequest::Write { handle, offset, data, mode })
    }

    /// The memory manager writes `data` back to the handle's file at `offset`, as `writer` does
    /// ([`IoRequest::PageWrite`]).
    pub fn page_write(
        &mut self,
        handle: Handle,
        offset: u64,
        data: &[u8],
        writer: PageWriter,
    ) -> IoResult {
        self.io(IoRequest::PageWrite { handle, offset, data, writer })
    }

    /// `NtQueryInformationFile`.
    pub fn query_information(&mut self, handle: Handle, class: u32, length: usize) -> IoResult {
        self.io(IoRequest::QueryInformation { handle, class, length })
    }

    /// `NtSetInformationFile`.
    pub fn set_information(&mut self, handle: Handle, class: u32, data: &[u8]) -> IoResult {
        self.io(IoRequest::SetInformation { handle, class, data })
    }

    /// `NtQueryDirectoryFile` (first query: `restart` or never queried; `pattern` None is `*`).
    pub fn query_directory(
        &mut self,
        handle: Handle,
        class: u32,
        pattern: Option<&str>,
        restart: bool,
        length: usize,
    ) -> IoResult {
        self.io(IoRequest::DirectoryControl {
            handle,
            class,
            pattern,
            restart,
            single: false,
            length,
        })
    }

    /// `NtQueryVolumeInformationFile`.
    pub fn query_volume_information(
        &mut self,
        handle: Handle,
        class: u32,
        length: usize,
    ) -> IoResult {
        self.io(IoRequest::QueryVolumeInformation { handle, class, length })
    }

    /// Closes a handle: cleanup, then the caller's reference (close when it was the last).
    pub fn close_handle(&mut self, handle: Handle) -> Status {
        self.io(IoRequest::Close { handle }).status
    }

    /// `FilterConnectCommunicationPort`: connects to the communication server port `name`
    /// (`\Name`) with `context` as the connection context (empty: none). The filter's
    /// `ConnectNotifyCallback` runs in this caller's thread; its failure is the call's
    /// (docs/simulator.md, "Communication ports and control devices").
    pub fn connect_communication_port(
        &mut self,
        name: &str,
        context: &[u8],
    ) -> Result<PortHandle, Status> {
        self.connect_communication_port_as(Caller::Administrator, name, context)
    }

    /// [`Machine::connect_communication_port`] by `caller`: a standard user is refused
    /// (`STATUS_ACCESS_DENIED`) a port whose descriptor `FltBuildDefaultSecurityDescriptor`
    /// built (docs/simulator.md, "Callers' tokens").
    pub fn connect_communication_port_as(
        &mut self,
        caller: Caller,
        name: &str,
        context: &[u8],
    ) -> Result<PortHandle, Status> {
        crate::syscalls::as_user(|| crate::fltmgr::ports::connect(name, context, caller))
    }

    /// `FilterSendMessage` on a connection: `input` to the filter's `MessageNotifyCallback`
    /// with an output buffer of `reply_capacity` bytes; the reply is what the callback said it
    /// returned (`ReturnOutputBufferLength`), or the callback's failure.
    pub fn send_message(
        &mut self,
        port: PortHandle,
        input: &[u8],
        reply_capacity: usize,
    ) -> Result<Vec<u8>, Status> {
        crate::syscalls::as_user(|| crate::fltmgr::ports::send(port, input, reply_capacity))
    }

    /// `FilterGetMessage` with an `OVERLAPPED` on a connection, for a buffer of `capacity`
    /// bytes. Returns `STATUS_PENDING` when the get waits for a message, `STATUS_SUCCESS` when
    /// a queued message was taken at once, or a failure at once (`STATUS_INVALID_HANDLE`,
    /// `STATUS_PORT_DISCONNECTED`, `STATUS_BUFFER_TOO_SMALL` for a queued message the buffer
    /// cannot hold, which stays queued), after which `then` never runs. Otherwise `then` runs
    /// as a user action (as a completion-port thread would) with the bytes the buffer received
    /// (the 16-byte `FILTER_MESSAGE_HEADER`, [`fsfilter::MessageHeader`], then the message) or
    /// the status the get ended with: `STATUS_BUFFER_TOO_SMALL` (a message came that the
    /// buffer cannot hold; it waits for another get), `STATUS_CANCELLED` (the handle closed or
    /// [`Machine::cancel_port_io`]), `STATUS_PORT_DISCONNECTED` (the filter closed its end or
    /// unloaded). docs/simulator.md, "Communication ports and control devices".
    pub fn get_message(
        &mut self,
        port: PortHandle,
        capacity: usize,
        then: impl FnOnce(&mut Machine, Result<Vec<u8>, Status>) + 'static,
    ) -> Status {
        let done = Box::new(move |r: Result<Vec<u8>, Status>| then(&mut user_machine(), r));
        crate::syscalls::as_user(|| crate::fltmgr::ports::get_message(port, capacity, done))
    }

    /// `FilterReplyMessage`: `reply` is the 16-byte `FILTER_REPLY_HEADER`
    /// ([`fsfilter::ReplyHeader`], its `MessageId` the message's) then the reply. The waiting
    /// sender gets the bytes after the header. `STATUS_FLT_NO_WAITER_FOR_REPLY` when no sender
    /// waits for that message's reply (timed out, wanted none, answered already, unknown id);
    /// `STATUS_INVALID_PARAMETER` for fewer than 16 bytes; `STATUS_PORT_DISCONNECTED`,
    /// `STATUS_INVALID_HANDLE` as for a get.
    pub fn reply_message(&mut self, port: PortHandle, reply: &[u8]) -> Status {
        crate::syscalls::as_user(|| crate::fltmgr::ports::reply_message(port, reply))
    }

    /// `CancelIoEx(port, NULL)` on a connection: its waiting gets end with `STATUS_CANCELLED`
    /// (their `then` runs); `STATUS_NOT_FOUND` when none waits.
    pub fn cancel_port_io(&mut self, port: PortHandle) -> Status {
        crate::syscalls::as_user(|| crate::fltmgr::ports::cancel_gets(port))
    }

    /// `CloseHandle` on a connection: the filter's `DisconnectNotifyCallback` runs (it closes
    /// its end with `FltCloseClientPort`) unless the filter ended the connection first.
    pub fn close_port(&mut self, port: PortHandle) -> Status {
        crate::syscalls::as_user(|| crate::fltmgr::ports::close_user(port))
    }

    /// `CreateFile` on a device from user mode by name: `\??\X` or `\DosDevices\X` (a
    /// symbolic link, `IoCreateSymbolicLink`) or the device's own name, with `ea` as the
    /// create's extended attributes (a `FILE_FULL_EA_INFORMATION` list, see [`full_ea`]): the
    /// driver gets a user-mode create IRP with the EA buffer in its system buffer.
    pub fn open_device(&mut self, name: &str, ea: Option<&[u8]>) -> Result<DeviceHandle, Status> {
        self.open_device_as(Caller::Administrator, name, ea)
    }

    /// [`Machine::open_device`] by `caller`: the create's security context carries its token
    /// (`AccessState->SubjectSecurityContext.PrimaryToken`, docs/simulator.md, "Callers'
    /// tokens"); the device's driver decides.
    pub fn open_device_as(
        &mut self,
        caller: Caller,
        name: &str,
        ea: Option<&[u8]>,
    ) -> Result<DeviceHandle, Status> {
        crate::syscalls::open_user_device(name, ea, caller, false)
    }

    /// [`Machine::open_device`] with `FILE_FLAG_OVERLAPPED` (an administrator's): the handle's
    /// file object is asynchronous (no `FILE_SYNCHRONOUS_IO_NONALERT`), so requests a driver
    /// holds do not hold up their caller ([`Machine::device_control_then`]).
    pub fn open_device_overlapped(
        &mut self,
        name: &str,
        ea: Option<&[u8]>,
    ) -> Result<DeviceHandle, Status> {
        crate::syscalls::open_user_device(name, ea, Caller::Administrator, true)
    }

    /// An overlapped `DeviceIoControl` on a device handle: the code's checks and buffers as
    /// for [`Machine::device_control`]; returns what the call returns at once (the dispatch
    /// routine's status: `STATUS_PENDING` for a request a driver holds; a failure before any
    /// request, such as `STATUS_INVALID_HANDLE`, after which `then` never runs). `then` runs
    /// as a user action (as a completion-port thread would) once the request completed, at
    /// once or later, with its final status, information and output bytes; never for a
    /// request the driver failed at once without pending it (no completion is queued). On a handle not
    /// opened overlapped the call waits for the request and returns its final status
    /// (`lpOverlapped` is ignored there); `then` still runs. docs/simulator.md, "Communication
    /// ports and control devices".
    pub fn device_control_then(
        &mut self,
        handle: DeviceHandle,
        code: u32,
        input: &[u8],
        output_capacity: usize,
        then: impl FnOnce(&mut Machine, IoResult) + 'static,
    ) -> Status {
        let then = Box::new(move |r: IoResult| then(&mut user_machine(), r));
        crate::syscalls::device_control_then(handle, code, input, output_capacity, then)
    }

    /// `CancelIoEx(handle, NULL)` on a device handle: `IoCancelIrp` on each of its overlapped
    /// requests still outstanding (the holder's cancel routine runs, in this caller's thread),
    /// without waiting for them; `STATUS_NOT_FOUND` when there is none.
    pub fn cancel_io(&mut self, handle: DeviceHandle) -> Status {
        crate::syscalls::cancel_device_io(handle)
    }

    /// `DeviceIoControl` on a device handle: `input` and an output buffer of `output_capacity`
    /// bytes with the buffers of the code's method; the result's status, information and the
    /// output bytes (at most `information`).
    pub fn device_control(
        &mut self,
        handle: DeviceHandle,
        code: u32,
        input: &[u8],
        output_capacity: usize,
    ) -> IoResult {
        crate::syscalls::device_control(handle, code, input, output_capacity)
    }

    /// `CloseHandle` on a device handle: cleanup, then close when it held the last reference.
    pub fn close_device(&mut self, handle: DeviceHandle) -> Status {
        crate::syscalls::close_user_device(handle)
    }

    /// A file's bytes, read from the media directly (no I/O).
    pub fn file_contents(&self, volume: VolumeId, path: &str) -> Option<Vec<u8>> {
        kernel::with(|k| k.volume(volume).media.file(path).map(<[u8]>::to_vec))
    }

    /// Adds a user process named `name` (docs/simulator.md, "Processes"): its id, from 0x1004 by
    /// 4 in the order processes are added (the default process "user" is 0x1000), and one user
    /// thread in which its calls run ([`Machine::as_process`]). `None` when a process of that name
    /// exists or the machine has [`crate::process::MAX_PROCESSES`] already.
    pub fn new_process(&mut self, name: &str) -> Option<ProcessId> {
        kernel::with(|k| k.processes.add(name))
    }

    /// The user process named `name` ("user": the default one).
    pub fn process(&self, name: &str) -> Option<ProcessId> {
        kernel::with(|k| k.processes.by_name(name))
    }

    /// The process `Machine` calls run in now: the default user process, or the one of the
    /// innermost [`Machine::as_process`].
    pub fn acting_process(&self) -> ProcessId {
        kernel::with(|k| k.processes.process_of(k.processes.acting))
    }

    /// Runs `f` with every user-mode call it makes (opens, I/O, port connects and messages,
    /// device I/O, scheduled actions) made by process `process`'s thread: drivers see it as
    /// the current process (`PsGetCurrentProcessId`), as the IRPs' requestor
    /// (`IoGetRequestorProcessId`, `FltGetRequestorProcessId`) and in fast I/O.
    ///
    /// # Panics
    /// When `process` is not a user process of this machine (System, or an unknown id).
    pub fn as_process<R>(&mut self, process: ProcessId, f: impl FnOnce(&mut Machine) -> R) -> R {
        let thread = kernel::with(|k| k.processes.thread_of(process));
        let Some(thread) = thread else {
            panic!("as_process: {process:?} is not a user process of this machine");
        };
        let saved = kernel::with(|k| std::mem::replace(&mut k.processes.acting, thread));
        let r = f(self);
        kernel::with(|k| k.processes.acting = saved);
        r
    }

    /// Starts a service (`sc start`).
    pub fn start(&mut self, name: &str) -> Status {
        crate::loader::load_service(name)
    }

    /// Stops a service (`sc stop`).
    pub fn stop(&mut self, name: &str) -> StopResult {
        crate::loader::stop_service(name)
    }

    /// Runs `action` as another user-mode caller `delay_ms` milliseconds of virtual time from
    /// now, while whatever is running then waits (a request pended by a filter, an unload
    /// draining): how tests and the lab make things overlap. The action runs at `PASSIVE_LEVEL` in
    /// its own thread, outside any driver image; its calls run in the process acting when it was
    /// scheduled ([`Machine::as_process`]).
    pub fn schedule(&mut self, delay_ms: u64, action: impl FnOnce(&mut Machine) + 'static) {
        kernel::with(|k| {
            let due = k.sched.now + delay_ms * 10_000;
            let acting = k.processes.acting;
            let action = move || {
                let saved = kernel::with(|k| std::mem::replace(&mut k.processes.acting, acting));
                action(&mut user_machine());
                kernel::with(|k| k.processes.acting = saved);
            };
            let thread = k.sched.worker();
            k.sched.push_at(
                due,
                crate::sched::Task {
                    name: "scheduled user action",
                    image: None,
                    irql: crate::kernel::PASSIVE_LEVEL,
                    thread,
                    run: Box::new(action),
                },
            );
        });
    }

    /// Virtual time since boot, in milliseconds.
    pub fn now_ms(&self) -> u64 {
        kernel::with(|k| k.sched.now / 10_000)
    }

    /// Runs every queued piece of work until none is left.
    pub fn settle(&mut self) {
        crate::sched::run_all();
    }

    /// Sets the scenario step that following events belong to.
    pub fn set_step(&mut self, step: Option<u32>) {
        kernel::with(|k| k.step = step);
    }

    /// What the caller of request `io` finds once it completed, when the call that made it
    /// returned `STATUS_PENDING` (an overlapped handle; a request nothing completed while its
    /// caller waited; a service that waited for its file object's lock), as
    /// `GetOverlappedResult` would read it: the final status, the caller's I/O status block and
    /// the data in its buffer. `None` while the request is outstanding, and for a call that
    /// returned its result itself (docs/simulator.md, "Asynchronous I/O").
    pub fn overlapped_result(&self, io: RequestRef) -> Option<OverlappedResult> {
        self.kernel(|k| k.requests.overlapped(RequestId(io.0)).cloned())
    }

    /// A copy of the event log.
    pub fn events(&self) -> Vec<Event> {
        kernel::with(|k| k.events.to_vec())
    }

    /// The verifier findings so far.
    pub fn findings(&self) -> Vec<(Rule, Option<String>, String)> {
        kernel::with(|k| {
            k.events
                .iter()
                .filter_map(|e| match &e.kind {
                    crate::events::EventKind::Verifier { driver, rule, message } => {
                        Some((*rule, driver.clone(), message.clone()))
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// True once the machine bugchecked.
    pub fn crashed(&self) -> Option<String> {
        kernel::with(|k| k.crashed.clone())
    }
}

/// The machine as another user-mode caller sees it (a scheduled action, a completion): the same
/// machine, never dropped there.
fn user_machine() -> std::mem::ManuallyDrop<Machine> {
    std::mem::ManuallyDrop::new(Machine { _not_send: PhantomData })
}

impl Drop for Machine {
    fn drop(&mut self) {
        // Work still queued may hold pointers into the kernel: drop it with the kernel.
        drop(kernel::uninstall());
    }
}

impl Kernel {
    /// The volume a trace's instance identity belongs to: a device object's volume (legacy
    /// filters report their device objects), or a Filter Manager instance's (`PFLT_INSTANCE`).
    pub fn resolve_instance(&self, instance: usize) -> Option<crate::ids::VolumeId> {
        // An address remembered as an instance's handle is no device object's.
        if let Some(crate::fltmgr::FltObject::Instance(i)) = self.fltmgr.remembered(instance) {
            return self.flt_sim_volume(self.fltmgr.inst(i).volume);
        }
        if let Some(d) = self.objects.device_id(instance as *const _) {
            return self.device_volume(d);
        }
        let i = self.fltmgr.instance_of(instance as isize)?;
        self.flt_sim_volume(self.fltmgr.inst(i).volume)
    }

    /// The volume a device (a legacy filter's instance) serves.
    pub fn device_volume(&self, d: crate::ids::DeviceId) -> Option<crate::ids::VolumeId> {
        let info = self.objects.device(d);
        // A legacy filter's device on a namespace file system (MUP, NPFS, MSFS) is attached to
        // the file system's own device, which names no volume: the volume it serves, as for the
        // Filter Manager's instance there.
        info.volume
            .or(info.last_volume)
            .or_else(|| self.flt_sim_volume_unnamed(self.objects.bottom(d)))
    }

    /// The user request an operation identity (an IRP, or a Filter Manager callback data)
    /// belongs to; for an operation without an IRP (fast I/O), the request being served.
    pub fn resolve_operation(&self, operation: usize) -> Option<crate::ids::RequestId> {
        if let Some(r) = self.fltmgr.ops.request_of(operation) {
            return r;
        }
        match self.irps.map.get(&operation) {
            Some(i) => i.finish.request(),
            None => self.current_request,
        }
    }
}

/// Mounts the volumes that mount at boot: `early` after the boot-start phase (only those whose
/// file system is loaded), otherwise every one not mounted yet.
fn mount_boot_volumes(late: bool) {
    let todo: Vec<VolumeId> = kernel::with(|k| {
        (0..k.volumes.list.len() as u32)
            .map(VolumeId)
            .filter(|&v| {
                let vol = k.volume(v);
                vol.mount == MountWhen::Boot
                    && !crate::mount::is_mounted(k, v)
                    && (late || k.fs.drivers[crate::fs::FsType::of(vol.fs) as usize].is_some())
            })
            .collect()
    });
    for v in todo {
        crate::mount::mount(v);
        crate::sched::run_ready();
    }
}

/// One `FILE_FULL_EA_INFORMATION` entry (`NextEntryOffset` 0, `Flags` 0, the name's and value's
/// lengths, the name and its terminating NUL, the value), as `NtCreateFile` takes an EA list.
///
/// # Panics
/// When the name is longer than 255 bytes or the value than 65,535.
pub fn full_ea(name: &str, value: &[u8]) -> Vec<u8> {
    let name_len = u8::try_from(name.len()).expect("an EA name of at most 255 bytes");
    let value_len = u16::try_from(value.len()).expect("an EA value of at most 65,535 bytes");
    let mut ea = Vec::with_capacity(8 + name.len() + 1 + value.len());
    ea.extend_from_slice(&0u32.to_le_bytes());
    ea.push(0);
    ea.push(name_len);
    ea.extend_from_slice(&value_len.to_le_bytes());
    ea.extend_from_slice(name.as_bytes());
    ea.push(0);
    ea.extend_from_slice(value);
    ea
}
