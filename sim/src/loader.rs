//! Services and driver images: registry keys (facts.md §2.5 layouts), `DriverEntry`, service stop
//! with the I/O manager's preconditions (facts.md §1.9), leak checks at unload, and boot order.

use fsfilter::{LoadOrderGroup, Status};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, IRP};
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use crate::events::{EventKind, Rule};
use crate::ids::{DriverId, ImageId};
use crate::kernel::{self, ImageKind, Kernel, PASSIVE_LEVEL, call_into};
use crate::mem::{obj, unicode, wide};
use crate::objects::DO_DEVICE_INITIALIZING;
use crate::registry::{RegValue, SERVICES};

/// A driver's entry point.
pub type DriverEntry =
    unsafe extern "system" fn(*const DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS;

/// `SERVICE_*_START`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StartType {
    /// 0: started by the OS loader.
    Boot,
    /// 1: started during OS initialization.
    System,
    /// 2: started by the service control manager at startup.
    Auto,
    /// 3: started on demand.
    Demand,
    /// 4: never started by the system (file systems the recognizer loads).
    Disabled,
}

impl StartType {
    /// The `Start` value.
    pub fn value(self) -> u32 {
        self as u32
    }
}

/// Where a minifilter's instance definitions go (facts.md §2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceLayout {
    /// `Services\<svc>\Instances` (before Windows 11 24H2).
    Legacy,
    /// `Services\<svc>\Parameters\Instances` (Windows 11 24H2 and later).
    Parameters,
    /// Both, as the samples' INFs write them.
    Both,
}

/// One instance definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The instance name.
    pub name: String,
    /// Its altitude string.
    pub altitude: String,
    /// Its `Flags` (0x1: no automatic attachment).
    pub flags: u32,
}

/// A minifilter's instance definitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstancesSpec {
    /// `DefaultInstance`.
    pub default_instance: String,
    /// The instances.
    pub instances: Vec<InstanceSpec>,
    /// Where they are written.
    pub layout: InstanceLayout,
}

/// A service to install.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// The service name.
    pub name: String,
    /// The driver's entry point.
    pub entry: DriverEntry,
    /// `Type`: 1 kernel driver, 2 file system driver (file systems, minifilters and legacy FS
    /// filters are type 2).
    pub service_type: u32,
    /// `Start`.
    pub start: StartType,
    /// `Group`.
    pub group: Option<String>,
    /// `"legacy"`, `"minifilter"` or `"native"`, for reports.
    pub model: &'static str,
    /// Values of the `Parameters` key.
    pub parameters: Vec<(String, RegValue)>,
    /// Instance definitions (minifilters).
    pub instances: Option<InstancesSpec>,
    /// `DependOnService`.
    pub depends_on: Vec<String>,
    /// Part of the simulated kernel.
    pub native: bool,
}

impl ServiceSpec {
    /// A demand-start kernel-mode service of type 2 with no group.
    pub fn new(name: &str, entry: DriverEntry, model: &'static str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_owned(),
            entry,
            service_type: 2,
            start: StartType::Demand,
            group: None,
            model,
            parameters: Vec::new(),
            instances: None,
            depends_on: Vec::new(),
            native: false,
        }
    }
}

/// A service's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// Not loaded.
    Stopped,
    /// Loaded.
    Running,
    /// Stop requested; `DriverUnload` waits for the I/O manager's preconditions.
    StopPending,
}

/// An installed service.
pub struct Service {
    /// How it was installed.
    pub spec: ServiceSpec,
    /// Its state.
    pub state: ServiceState,
    /// Its driver object while loaded.
    pub driver: Option<DriverId>,
    /// Its image while loaded.
    pub image: Option<ImageId>,
    /// `DriverUnload` was queued (it runs once; [`Service::unload_returned`] says it ran).
    pub unload_called: bool,
    /// `DriverUnload` returned (or the driver went without one: a minifilter `fltmc unload` let
    /// go). Until then the I/O manager holds the driver object, so the image stays whatever
    /// devices go: between the unload's queueing and its return, and while it runs.
    pub unload_returned: bool,
    /// Its `DriverEntry` is running (`SERVICE_START_PENDING`): a stop request is refused.
    pub starting: bool,
    /// Its pool and sections were checked already, when `DriverUnload` returned leaving devices
    /// (so its image never goes): not again when it goes.
    pub pool_checked: bool,
    /// Installation order, for stable ordering within a group.
    pub order: usize,
    registry_path: Vec<u16>,
}

/// The loader's state.
#[derive(Default)]
pub struct Loader {
    /// Installed services.
    pub services: Vec<Service>,
    /// How many services are [`ServiceState::StopPending`] (kept by [`Loader::set_state`]):
    /// while none is, a device's last reference has no unload to finish, and the check that
    /// runs on every `ObDereferenceObject` of a device returns at once.
    stop_pending: usize,
}

impl Loader {
    /// Sets service `si`'s state, counting the services whose stop is pending.
    pub fn set_state(&mut self, si: usize, state: ServiceState) {
        let svc = &mut self.services[si];
        let was = svc.state == ServiceState::StopPending;
        let is = state == ServiceState::StopPending;
        svc.state = state;
        match (was, is) {
            (false, true) => self.stop_pending += 1,
            (true, false) => self.stop_pending -= 1,
            _ => {}
        }
    }
}

/// The service group order: boot and system drivers load group by group in this order; a
/// driver with no group, or a group not listed, loads after every grouped driver of its start
/// type. The FSFilter groups are in load order (the reverse of their stack order, facts.md
/// §2.3); where the boot file systems' group sits relative to them is a choice documented in
/// docs/simulator.md.
pub fn group_order() -> Vec<&'static str> {
    let mut order = vec![
        "System Reserved",
        "Boot Bus Extender",
        "System Bus Extender",
        "SCSI miniport",
        "Port",
        "Primary Disk",
        "SCSI Class",
        "SCSI CDROM Class",
    ];
    order.extend(LoadOrderGroup::ALL.iter().rev().map(|g| g.name));
    order.extend(["Boot File System", "Base", "File System", "Network"]);
    order
}

fn group_rank(group: Option<&str>) -> usize {
    let order = group_order();
    group.and_then(|g| order.iter().position(|o| o.eq_ignore_ascii_case(g))).unwrap_or(order.len())
}

impl Kernel {
    /// Installs a service: its registry key, `Parameters`, and instance definitions.
    pub fn install_service(&mut self, spec: ServiceSpec) {
        let path = format!("{SERVICES}\\{}", spec.name);
        let key = self.registry.create(&path);
        self.registry.set(key, "Type", RegValue::Dword(spec.service_type));
        self.registry.set(key, "Start", RegValue::Dword(spec.start.value()));
        self.registry.set(key, "ErrorControl", RegValue::Dword(1));
        self.registry.set(
            key,
            "ImagePath",
            RegValue::ExpandSz(format!(r"\SystemRoot\System32\drivers\{}.sys", spec.name)),
        );
        if let Some(g) = &spec.group {
            self.registry.set(key, "Group", RegValue::Sz(g.clone()));
        }
        if !spec.depends_on.is_empty() {
            self.registry.set(key, "DependOnService", RegValue::MultiSz(spec.depends_on.clone()));
        }
        let params = self.registry.create(&format!("{path}\\Parameters"));
        for (name, value) in &spec.parameters {
            self.registry.set(params, name, value.clone());
        }
        if let Some(inst) = &spec.instances {
            let mut roots = Vec::new();
            if matches!(inst.layout, InstanceLayout::Legacy | InstanceLayout::Both) {
                roots.push(format!("{path}\\Instances"));
            }
            if matches!(inst.layout, InstanceLayout::Parameters | InstanceLayout::Both) {
                roots.push(format!("{path}\\Parameters\\Instances"));
            }
            for root in roots {
                let k = self.registry.create(&root);
                self.registry.set(
                    k,
                    "DefaultInstance",
                    RegValue::Sz(inst.default_instance.clone()),
                );
                for i in &inst.instances {
                    let ik = self.registry.create(&format!("{root}\\{}", i.name));
                    self.registry.set(ik, "Altitude", RegValue::Sz(i.altitude.clone()));
                    self.registry.set(ik, "Flags", RegValue::Dword(i.flags));
                }
            }
        }
        let order = self.loader.services.len();
        let registry_path = wide(&path);
        self.loader.services.push(Service {
            spec,
            state: ServiceState::Stopped,
            driver: None,
            image: None,
            unload_called: false,
            unload_returned: false,
            starting: false,
            pool_checked: false,
            order,
            registry_path,
        });
    }

    /// The index of a service.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.loader.services.iter().position(|s| s.spec.name.eq_ignore_ascii_case(name))
    }

    /// The service owning a driver object.
    pub fn service_of_driver(&self, driver: DriverId) -> Option<usize> {
        self.loader.services.iter().position(|s| s.driver == Some(driver))
    }

    /// Whether `driver`'s unload is pending (`sc stop` asked, its `DriverUnload` not yet
    /// called): Windows marks the devices it has then unload-pending, and neither attaches to
    /// them nor opens them (facts.md §1.3); a device it creates later is not marked
    /// ([`crate::objects::DeviceInfo::unload_pending`]).
    pub fn unload_pending(&self, driver: DriverId) -> bool {
        self.loader.stop_pending > 0
            && self.service_of_driver(driver).is_some_and(|si| {
                let svc = &self.loader.services[si];
                svc.state == ServiceState::StopPending && !svc.unload_called
            })
    }

    /// Services of a start type in load order.
    pub fn load_order(&self, start: StartType) -> Vec<String> {
        let mut v: Vec<&Service> =
            self.loader.services.iter().filter(|s| s.spec.start == start).collect();
        // RAW is built into the kernel: its DriverEntry runs before that of every boot-start
        // driver, whatever its group (facts.md S23, "What happens to file systems during system
        // boot", step 3), so a boot-start filter finds \Device\RawDisk in its own DriverEntry.
        let built_in = |s: &Service| !(s.spec.native && s.spec.name.eq_ignore_ascii_case("RAW"));
        v.sort_by_key(|s| (built_in(s), group_rank(s.spec.group.as_deref()), s.order));
        v.into_iter().map(|s| s.spec.name.clone()).collect()
    }

    /// Queues `DriverUnload` of a stop-pending driver once the I/O manager's preconditions hold:
    /// none of its devices has anything attached above it, and none has open handles
    /// (facts.md §1.9). Also releases the image once every device is gone.
    pub fn maybe_finish_unload(&mut self, driver: DriverId) {
        if self.loader.stop_pending == 0 {
            // No stop is pending, so no unload to finish and no image to release (an image is
            // released only after its `DriverUnload`, which runs while its stop is pending).
            return;
        }
        let Some(si) = self.service_of_driver(driver) else { return };
        let svc = &self.loader.services[si];
        if svc.state != ServiceState::StopPending || svc.unload_called {
            self.maybe_release_image(driver);
            return;
        }
        if !self.unload_ready(driver) {
            return;
        }
        let name = svc.spec.name.clone();
        self.loader.services[si].unload_called = true;
        let thread = self.sched.worker();
        self.sched.push(crate::sched::Task {
            name: "driver unload",
            image: None,
            irql: PASSIVE_LEVEL,
            thread,
            run: Box::new(move || run_driver_unload(&name)),
        });
    }

    fn unload_ready(&self, driver: DriverId) -> bool {
        // A minifilter the Filter Manager is unregistering (a `fltmc unload` under way): its
        // `DriverUnload` waits for that to finish (`fltmgr::registration::unregister`).
        if self.fltmgr_loaded()
            && self.fltmgr.filter_of_driver(driver).is_some_and(|f| {
                let r = self.fltmgr.filter(f);
                // Or its unload callback runs (before its FltUnregisterFilter).
                r.state == crate::fltmgr::FilterState::Unregistering || r.unloading
            })
        {
            return false;
        }
        self.objects.driver(driver).devices.iter().all(|&d| {
            let o = self.objects.dobj(d);
            o.AttachedDevice.is_null() && o.ReferenceCount == 0
        })
    }

    /// Marks a driver's image unloaded once `DriverUnload` ran and no device of the driver is
    /// left alive (deleted devices still referenced keep the image mapped, which is what makes
    /// `IoSetCompletionRoutineEx` unload-safe).
    pub fn maybe_release_image(&mut self, driver: DriverId) {
        if self.loader.stop_pending == 0 {
            return;
        }
        let Some(si) = self.service_of_driver(driver) else { return };
        if !self.loader.services[si].unload_returned {
            return;
        }
        // A device not deleted or still referenced holds the driver object, and so does a
        // reference on the driver object itself: the image goes with the last of them.
        // A delete-pending device (still listed: a file object open on it) holds it too.
        let alive = self.objects.driver(driver).refs > 0
            || !self.objects.driver(driver).devices.is_empty()
            || self
                .objects
                .devices
                .iter()
                .any(|d| d.driver == driver && (!d.deleted || d.refs > 0));
        if alive {
            return;
        }
        let image = self.objects.driver(driver).image;
        if crate::kernel::image_running(image) {
            // The last device went from inside the driver's own code (its `IoDeleteDevice`, which
            // waits for the pending unload): the image goes away under a thread that will
            // return into it. A driver ends such a deletion in a work item, whose device
            // reference the I/O manager holds until the routine has returned.
            let name = self.objects.driver(driver).service.clone();
            self.report(
                Rule::UnloadedDriverCodeRan,
                Some(name),
                "the driver's image was unloaded while its code was running on a thread, which \
                 returns into it",
            );
        }
        self.check_io_object_leaks(driver);
        let linked = self.per_stream_linked_by(image);
        if linked > 0 {
            let name = self.objects.driver(driver).service.clone();
            self.report(
                Rule::PerStreamContextLinkedAtUnload,
                Some(name),
                format!(
                    "{linked} FSRTL_PER_STREAM_CONTEXT(s) the driver inserted still linked on \
                     streams: the file system's FsRtlTeardownPerStreamContexts calls their \
                     FreeCallback in the unloaded image when the stream goes (a crash on Windows)"
                ),
            );
        }
        let linked = self.per_fo_linked_by(image);
        if linked > 0 {
            let name = self.objects.driver(driver).service.clone();
            self.report(
                Rule::PerFileObjectContextLinkedAtUnload,
                Some(name),
                format!(
                    "{linked} FSRTL_PER_FILEOBJECT_CONTEXT(s) the driver inserted still linked on \
                     file objects (a legacy filter removes its own at IRP_MJ_CLOSE, and the rest \
                     before it unloads)"
                ),
            );
        }
        if let Some(i) = self.images.get_mut(image.index()) {
            i.loaded = false;
        }
        self.objects.driver_mut(driver).deleted = true;
        self.loader.set_state(si, ServiceState::Stopped);
        let svc = &mut self.loader.services[si];
        svc.driver = None;
        svc.image = None;
        svc.unload_called = false;
        svc.unload_returned = false;
        svc.pool_checked = false;
    }

    /// Unloads a running driver without calling its `DriverUnload`: a minifilter the Filter
    /// Manager let go on `fltmc unload` (its unload callback unregistered it). The leak checks
    /// run as for any unload.
    pub fn unload_service_image(&mut self, name: &str) {
        let Some(si) = self.service_index(name) else { return };
        let svc = &mut self.loader.services[si];
        let Some(driver) = svc.driver.filter(|_| svc.state == ServiceState::Running) else {
            return;
        };
        svc.unload_called = true;
        svc.unload_returned = true;
        self.loader.set_state(si, ServiceState::StopPending);
        self.check_leaks(driver);
        self.maybe_release_image(driver);
    }

    /// Checks, as its image goes, the IRPs, MDLs and work items the driver allocated and did not
    /// free: `POOL_LEAKED_AT_UNLOAD`, as they are nonpaged pool taken for it (a modelling choice,
    /// docs/simulator.md). Checked when the image goes rather than when `DriverUnload` returns:
    /// a work item's routine may free its item after a pending unload it set off returned.
    fn check_io_object_leaks(&mut self, driver: DriverId) {
        let checked = self
            .service_of_driver(driver)
            .is_some_and(|si| std::mem::take(&mut self.loader.services[si].pool_checked));
        if !checked {
            self.check_pool_leaks(driver);
        }
        let image = self.objects.driver(driver).image;
        let halted = self.irps_halted_by(driver);
        if halted > 0 {
            let name = self.objects.driver(driver).service.clone();
            self.report(
                Rule::IrpHaltedAtUnload,
                Some(name),
                format!(
                    "{halted} IRP(s) halted by the driver's completion routine \
                     (STATUS_MORE_PROCESSING_REQUIRED) and never completed"
                ),
            );
        }
        let (irps, mdls, items) = self.io_objects_outstanding(image);
        if irps + mdls + items > 0 {
            let name = self.objects.driver(driver).service.clone();
            self.report(
                Rule::PoolLeaked,
                Some(name),
                format!(
                    "{irps} IRP(s) (IoAllocateIrp), {mdls} MDL(s) (IoAllocateMdl) and {items} \
                     work item(s) (IoAllocateWorkItem, FltAllocateGenericWorkItem) not freed"
                ),
            );
        }
    }

    /// Checks, as its image goes, the pool blocks and data-scan sections the driver did not free
    /// or close (Driver Verifier's Pool Tracking checks "at the time that the driver is
    /// unloaded": a work item whose device reference keeps the image may free a block after
    /// `DriverUnload` returned).
    fn check_pool_leaks(&mut self, driver: DriverId) {
        let name = self.objects.driver(driver).service.clone();
        let image = self.objects.driver(driver).image;
        let (count, bytes, tags) = self.pool_outstanding(image);
        if count > 0 {
            let tags: Vec<String> = tags.iter().map(|t| crate::pool::tag_text(*t)).collect();
            self.report(
                Rule::PoolLeaked,
                Some(name.clone()),
                format!("{count} pool block(s), {bytes} bytes, tags {}", tags.join(",")),
            );
        }
        let sections = self.sections_of(image);
        if sections > 0 {
            self.report(
                Rule::SectionLeaked,
                Some(name.clone()),
                format!("{sections} data-scan section(s) still open"),
            );
        }
    }

    /// Checks what an unloaded driver left behind when its `DriverUnload` returned (or it went
    /// without one): device objects and file-system notification routines. Its pool and
    /// sections are counted when its image goes (`check_pool_leaks`).
    fn check_leaks(&mut self, driver: DriverId) {
        let name = self.objects.driver(driver).service.clone();
        let live: Vec<String> = self
            .objects
            .driver(driver)
            .devices
            .iter()
            .filter(|&&d| !self.objects.device(d).deleted)
            .map(|&d| {
                self.objects.device(d).name.clone().unwrap_or_else(|| format!("device #{}", d.0))
            })
            .collect();
        if !live.is_empty() {
            self.report(
                Rule::DeviceObjectsLeaked,
                Some(name.clone()),
                format!("{} device object(s) not deleted: {}", live.len(), live.join(", ")),
            );
            // The devices left hold the driver object: the image never goes, so its pool and
            // sections are counted now, once.
            self.check_pool_leaks(driver);
            if let Some(si) = self.service_of_driver(driver) {
                self.loader.services[si].pool_checked = true;
            }
        }
        if self.fs_notifications_of(driver) > 0 {
            self.report(
                Rule::FsNotificationLeaked,
                Some(name),
                "IoRegisterFsRegistrationChange routine still registered",
            );
        }
    }
}

/// The default dispatch routine of every `MajorFunction` slot (`IopInvalidDeviceRequest`):
/// completes the IRP with `STATUS_INVALID_DEVICE_REQUEST`.
///
/// # Safety
/// Called by the I/O manager with a live IRP.
pub unsafe extern "system" fn invalid_device_request(
    _device: *const windows_sys::Wdk::Foundation::DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the I/O manager passes a live IRP.
    let i = unsafe { obj(irp) };
    i.IoStatus.Anonymous.Status = Status::INVALID_DEVICE_REQUEST.0;
    i.IoStatus.Information = 0;
    crate::irp::complete_request(irp);
    Status::INVALID_DEVICE_REQUEST.0
}

/// Loads a service (`sc start`, `fltmc load`, or boot): creates its driver object and runs
/// `DriverEntry`.
pub fn load_service(name: &str) -> Status {
    // The service control manager starts a service's dependencies first (`DependOnService`):
    // a demand-start minifilter brings the Filter Manager up.
    let deps = kernel::with(|k| {
        k.service_index(name)
            .map(|si| k.loader.services[si].spec.depends_on.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|d| {
                k.service_index(d)
                    .is_some_and(|i| k.loader.services[i].state == ServiceState::Stopped)
            })
            .collect::<Vec<_>>()
    });
    for d in deps {
        let _ = load_service(&d);
    }
    let prepared = kernel::with(|k| {
        let Some(si) = k.service_index(name) else { return Err(Status::OBJECT_NAME_NOT_FOUND) };
        let svc = &k.loader.services[si];
        if svc.state != ServiceState::Stopped {
            return Err(Status::IMAGE_ALREADY_LOADED);
        }
        let spec = svc.spec.clone();
        let kind = if spec.native { ImageKind::Native } else { ImageKind::Loaded };
        let image = k.add_image(&spec.name, kind);
        let object_name = if spec.service_type == 2 {
            format!("\\FileSystem\\{}", spec.name)
        } else {
            format!("\\Driver\\{}", spec.name)
        };
        let driver = k.create_driver_object(image, &object_name, &spec.name);
        // SAFETY: a driver object the simulator just created.
        let d = unsafe { obj(k.objects.driver(driver).ptr) };
        for slot in d.MajorFunction.iter_mut() {
            *slot = Some(invalid_device_request);
        }
        d.DriverInit = Some(spec.entry);
        k.loader.set_state(si, ServiceState::Running);
        let svc = &mut k.loader.services[si];
        svc.driver = Some(driver);
        svc.image = Some(image);
        svc.starting = true;
        let path = unicode(&svc.registry_path);
        let saved = (k.irql(), k.thread);
        k.set_irql(PASSIVE_LEVEL);
        k.thread = crate::ids::ThreadId(4);
        Ok((si, spec, image, driver, d as *mut DRIVER_OBJECT, path, saved))
    });
    let (si, spec, image, driver, dptr, path, saved) = match prepared {
        Ok(p) => p,
        Err(s) => return s,
    };
    // SAFETY: the driver's entry point with its driver object and registry path.
    let status = Status(call_into(Some(image), || unsafe { (spec.entry)(dptr, &path) }));
    if !status.is_success() {
        // A minifilter whose DriverEntry fails must have unregistered (facts.md §2.6).
        crate::fltmgr::manage::entry_failed(driver);
    }
    kernel::with(|k| {
        k.loader.services[si].starting = false;
        k.set_irql(saved.0);
        k.thread = saved.1;
        // Devices created in DriverEntry get DO_DEVICE_INITIALIZING cleared by the I/O manager
        // (facts.md §1.2).
        for &dev in &k.objects.driver(driver).devices.clone() {
            k.objects.dobj(dev).Flags &= !DO_DEVICE_INITIALIZING;
        }
        if !status.is_success() {
            // DriverEntry failed: the driver is unloaded without DriverUnload.
            k.check_leaks(driver);
            k.check_io_object_leaks(driver);
            if let Some(i) = k.images.get_mut(image.index()) {
                i.loaded = false;
            }
            k.objects.driver_mut(driver).deleted = true;
            k.loader.set_state(si, ServiceState::Stopped);
            let svc = &mut k.loader.services[si];
            svc.driver = None;
            svc.image = None;
        }
        k.log(EventKind::Load { driver: spec.name.clone(), model: spec.model, status });
    });
    if status.is_success() {
        crate::fltmgr::frames::service_loaded(&spec.name);
    }
    crate::sched::run_ready();
    status
}

/// How a stop request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopResult {
    /// `DriverUnload` ran and the driver is gone.
    Unloaded,
    /// The stop is pending: the I/O manager waits for the driver's devices to be at the top of
    /// their stacks with no open handles before calling `DriverUnload`.
    Pending,
    /// The driver has no `DriverUnload`: it cannot be stopped.
    NotStoppable,
    /// The service is not running.
    NotRunning,
    /// Its `DriverEntry` has not returned yet (`SERVICE_START_PENDING`): the service control
    /// manager sends it no control (`ERROR_SERVICE_CANNOT_ACCEPT_CTRL`, `ControlService`'s page).
    StartPending,
}

impl StopResult {
    /// The status `sc stop` reports for it.
    pub fn status(self) -> Status {
        match self {
            StopResult::Unloaded => Status::SUCCESS,
            StopResult::Pending => Status::PENDING,
            StopResult::NotStoppable => Status::INVALID_DEVICE_REQUEST,
            StopResult::NotRunning | StopResult::StartPending => Status::INVALID_DEVICE_STATE,
        }
    }
}

/// Stops a service (`sc stop`): a mandatory unload.
pub fn stop_service(name: &str) -> StopResult {
    let result = kernel::with(|k| {
        let Some(si) = k.service_index(name) else { return StopResult::NotRunning };
        let svc = &k.loader.services[si];
        if svc.starting {
            // Its DriverEntry waits: DriverUnload never runs under it.
            return StopResult::StartPending;
        }
        let Some(driver) = svc.driver.filter(|_| svc.state == ServiceState::Running) else {
            return if svc.state == ServiceState::StopPending {
                StopResult::Pending
            } else {
                StopResult::NotRunning
            };
        };
        // SAFETY: a live driver object.
        let unload = unsafe { (*k.objects.driver(driver).ptr).DriverUnload };
        if unload.is_none() {
            return StopResult::NotStoppable;
        }
        // `IopUnloadDriver` marks the driver's devices unload-pending: the ones it has now.
        for d in k.objects.devices.iter_mut().filter(|d| d.driver == driver && !d.deleted) {
            d.unload_pending = true;
        }
        k.loader.set_state(si, ServiceState::StopPending);
        k.maybe_finish_unload(driver);
        StopResult::Pending
    });
    if result == StopResult::Pending {
        crate::sched::run_ready();
        let done = kernel::with(|k| {
            k.service_index(name).map(|i| k.loader.services[i].state == ServiceState::Stopped)
        });
        let result = if done == Some(true) { StopResult::Unloaded } else { StopResult::Pending };
        kernel::with(|k| {
            k.log(EventKind::Unload {
                driver: name.to_owned(),
                mandatory: true,
                status: result.status(),
            })
        });
        return result;
    }
    kernel::with(|k| {
        k.log(EventKind::Unload {
            driver: name.to_owned(),
            mandatory: true,
            status: result.status(),
        })
    });
    result
}

/// Calls a stop-pending driver's `DriverUnload` and checks what it left behind.
fn run_driver_unload(name: &str) {
    let target = kernel::with(|k| {
        let si = k.service_index(name)?;
        let svc = &k.loader.services[si];
        let driver = svc.driver?;
        let image = svc.image?;
        let dptr = k.objects.driver(driver).ptr;
        // SAFETY: a live driver object (a routine cleared since the stop was asked: none runs).
        let unload = unsafe { (*dptr).DriverUnload };
        Some((driver, image, dptr, unload))
    });
    let Some((driver, image, dptr, unload)) = target else { return };
    if let Some(unload) = unload {
        // SAFETY: the driver's unload routine with its driver object.
        call_into(Some(image), || unsafe { unload(dptr) });
    }
    kernel::with(|k| {
        if let Some(si) = k.service_index(name) {
            k.loader.services[si].unload_returned = true;
        }
        k.check_leaks(driver);
        k.maybe_release_image(driver);
    });
}
