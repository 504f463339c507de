//! Unload (facts.md §5) and the user-mode management paths the lab calls: `fltmc load`,
//! `fltmc unload` / `FilterUnload` (non-mandatory), `sc stop` (mandatory, through the driver's
//! `DriverUnload`, which the Filter Manager took over), `FilterAttach(AtAltitude)` /
//! `fltmc attach`, `FilterDetach` / `fltmc detach`.

use fsfilter::{Status, TeardownFlags};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;

use super::instances::AttachApi;
use super::{FilterId, FilterState};
use crate::events::{EventKind, FltEvent, Rule};
use crate::ids::VolumeId;
use crate::kernel::{self, PASSIVE_LEVEL};
use crate::machine::Machine;

/// `FLTFL_FILTER_UNLOAD_MANDATORY`.
pub const UNLOAD_MANDATORY: u32 = 0x1;

/// Calls a filter's unload callback; None when it has none. While it runs the filter is marked
/// `unloading`: an unload callback often waits (for its worker thread, a port) before it calls
/// `FltUnregisterFilter`, and a second unload request arriving then must not call it again
/// (until December 6 it did, nested, and the image was unloaded under the first request).
fn call_unload(f: FilterId, mandatory: bool) -> Option<Status> {
    let (cb, image, name) = kernel::with(|k| {
        let r = k.fltmgr.filter_mut(f);
        r.unload_reason = if mandatory {
            TeardownFlags::MANDATORY_FILTER_UNLOAD.bits()
        } else {
            TeardownFlags::FILTER_UNLOAD.bits()
        };
        r.unloading = r.callbacks.unload.is_some();
        (r.callbacks.unload, r.image, r.name.clone())
    });
    let cb = cb?;
    let flags = if mandatory { UNLOAD_MANDATORY } else { 0 };
    // SAFETY: the filter's unload callback with its flags, at PASSIVE_LEVEL.
    let status = super::call_filter(image, "FilterUnloadCallback", || unsafe { cb(flags) })
        .map_or(Status::SUCCESS, Status);
    kernel::with(|k| {
        k.fltmgr.filter_mut(f).unloading = false;
        k.flt_log(Some(name), None, FltEvent::UnloadCallback { mandatory, status });
        // A service stop that arrived meanwhile waited for the callback (`Kernel::unload_ready`):
        // it goes on now if the filter refused this unload and stays registered (after a
        // success, the unregistration lets it go on once it is done).
        let rec = k.fltmgr.filter(f);
        let kept = matches!(rec.state, FilterState::Registered | FilterState::Started);
        if !mandatory && status.0 < 0 && kept {
            let driver = rec.driver;
            k.maybe_finish_unload(driver);
        }
    });
    Some(status)
}

/// After an unload callback that let the filter go: a filter still registered did not call
/// `FltUnregisterFilter` (`FILTER_NOT_UNREGISTERED_AT_UNLOAD`); the Filter Manager unregisters
/// it so that none of its callbacks runs once its image is gone.
fn ensure_unregistered(f: FilterId, why: &str) {
    let handle = kernel::with(|k| {
        let (state, handle) = (k.fltmgr.filter(f).state, k.fltmgr.filter(f).handle());
        if matches!(state, FilterState::Registered | FilterState::Started) {
            let msg = format!(
                "{why} without calling FltUnregisterFilter; the Filter Manager unregisters the filter"
            );
            k.flt_report(Some(f), Rule::FilterNotUnregistered, msg);
            Some(handle)
        } else {
            None
        }
    });
    if let Some(h) = handle {
        super::as_fltmgr(|| super::registration::unregister(h));
    }
}

/// A driver's `DriverEntry` failed: a filter it left registered is reported
/// (`FILTER_NOT_UNREGISTERED_AT_UNLOAD`, facts.md §2.6: on failure the driver must
/// `FltUnregisterFilter`) and unregistered before the image goes.
pub fn entry_failed(driver: crate::ids::DriverId) {
    let f =
        kernel::with(|k| if k.fltmgr_loaded() { k.fltmgr.filter_of_driver(driver) } else { None });
    if let Some(f) = f {
        ensure_unregistered(f, "DriverEntry failed");
    }
}

/// The `DriverUnload` the Filter Manager gives a minifilter whose registration has an unload
/// callback and supports service stop: a service stop is a mandatory unload (facts.md §5).
///
/// # Safety
/// Called by the I/O manager with the driver's object.
pub unsafe extern "system" fn filter_driver_unload(driver: *const DRIVER_OBJECT) {
    let f = kernel::with(|k| {
        let d = k.objects.driver_id(driver)?;
        k.fltmgr.filter_of_driver(d)
    });
    let Some(f) = f else { return };
    let _ = call_unload(f, true);
    ensure_unregistered(f, "the unload callback returned");
}

/// `fltmc unload` / `FilterUnload` / `FltUnloadFilter`: a non-mandatory unload. No unload
/// callback: `STATUS_FLT_DO_NOT_DETACH` (it can never be unloaded); an error or warning from
/// the callback keeps it loaded; success unloads the driver. A filter already being torn down
/// (its unload callback running, or unregistering): `STATUS_FLT_DELETING_OBJECT`
/// (`FltUnloadFilter`'s page), its callback not called again.
pub fn unload(name: &str) -> Status {
    let f = kernel::with(|k| k.fltmgr.filter_by_name(name).map(|f| (f, k.fltmgr.filter(f).state)));
    let status = match f {
        None => Status::FLT_FILTER_NOT_FOUND,
        Some((_, FilterState::Unregistering)) => Status::FLT_DELETING_OBJECT,
        Some((f, _)) if kernel::with(|k| k.fltmgr.filter(f).unloading) => {
            Status::FLT_DELETING_OBJECT
        }
        Some((f, _)) => match call_unload(f, false) {
            None => Status::FLT_DO_NOT_DETACH,
            Some(s) if s.0 < 0 => s,
            Some(_) => {
                ensure_unregistered(f, "the unload callback returned");
                kernel::with(|k| k.unload_service_image(name));
                crate::sched::run_ready();
                Status::SUCCESS
            }
        },
    };
    kernel::with(|k| {
        k.log(EventKind::Unload { driver: name.to_owned(), mandatory: false, status })
    });
    status
}

/// Runs `f` as a user-mode management request (`PASSIVE_LEVEL`, the user thread, no image).
fn as_user<R>(f: impl FnOnce() -> R) -> R {
    let saved = kernel::with(|k| {
        let saved = (k.irql(), k.thread);
        k.set_irql(PASSIVE_LEVEL);
        k.thread = k.processes.acting;
        saved
    });
    let r = kernel::call_into(None, f);
    kernel::with(|k| {
        k.set_irql(saved.0);
        k.thread = saved.1;
    });
    crate::sched::run_ready();
    r
}

fn resolve(filter: &str, volume: VolumeId) -> Result<(FilterId, super::FvId), Status> {
    kernel::with(|k| {
        let f = k.fltmgr.filter_by_name(filter).ok_or(Status::FLT_FILTER_NOT_FOUND)?;
        let v = k.flt_volume_of(volume).ok_or(Status::FLT_VOLUME_NOT_FOUND)?;
        Ok((f, v))
    })
}

impl Machine {
    /// Installs the Filter Manager's service (a minifilter's `DependOnService = FltMgr` does it
    /// too). Before boot it loads with the boot-start drivers; after boot it starts now.
    pub fn install_filter_manager(&mut self) -> Status {
        let (installed, booted) = kernel::with(|k| (k.ensure_fltmgr_installed(), k.booted));
        if installed && booted { self.start(super::SERVICE) } else { Status::SUCCESS }
    }

    /// `fltmc load` (`FilterLoad`): starts the service.
    pub fn fltmc_load(&mut self, name: &str) -> Status {
        as_user(|| crate::loader::load_service(name))
    }

    /// `fltmc unload` (`FilterUnload`): a non-mandatory unload (facts.md §5).
    pub fn fltmc_unload(&mut self, name: &str) -> Status {
        as_user(|| unload(name))
    }

    /// `FilterAttach` / `fltmc attach`: attaches the named instance (the default one without a
    /// name) with `FLTFL_INSTANCE_SETUP_MANUAL_ATTACHMENT`.
    pub fn filter_attach(
        &mut self,
        filter: &str,
        volume: VolumeId,
        instance: Option<&str>,
    ) -> Status {
        as_user(|| match resolve(filter, volume) {
            Ok((f, v)) => match super::instances::attach(f, v, instance, None, AttachApi::User) {
                Ok(_) => Status::SUCCESS,
                Err(s) => s,
            },
            Err(s) => s,
        })
    }

    /// `FilterAttachAtAltitude`: an instance at `altitude` (testing only, as on Windows).
    pub fn filter_attach_at_altitude(
        &mut self,
        filter: &str,
        volume: VolumeId,
        altitude: &str,
        instance: Option<&str>,
    ) -> Status {
        as_user(|| match resolve(filter, volume) {
            Ok((f, v)) => {
                match super::instances::attach(f, v, instance, Some(altitude), AttachApi::User) {
                    Ok(_) => Status::SUCCESS,
                    Err(s) => s,
                }
            }
            Err(s) => s,
        })
    }

    /// `FilterDetach` / `fltmc detach`: the query-teardown callback decides (facts.md §2.5).
    pub fn filter_detach(
        &mut self,
        filter: &str,
        volume: VolumeId,
        instance: Option<&str>,
    ) -> Status {
        as_user(|| match resolve(filter, volume) {
            Ok((f, v)) => super::instances::detach(f, v, instance),
            Err(s) => s,
        })
    }

    /// The Filter Manager's events so far: (driver, volume, event).
    pub fn flt_events(&self) -> Vec<(Option<String>, Option<String>, FltEvent)> {
        kernel::with(|k| {
            k.events
                .iter()
                .filter_map(|e| match &e.kind {
                    EventKind::FltMgr { driver, volume, event } => Some((
                        driver.as_ref().map(String::from),
                        volume.as_ref().map(String::from),
                        event.clone(),
                    )),
                    _ => None,
                })
                .collect()
        })
    }
}
