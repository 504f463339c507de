//! Instances (facts.md §2.5): setup with its flags and refusals, one instance per altitude per
//! volume, manual attach and detach with the query-teardown veto, and teardown — start, drain,
//! and completion once the instance's outstanding operations are done.

use fsfilter::{Altitude, InstanceSetupFlags, Status, TeardownFlags};

use super::{FilterId, FilterState, FvId, InstId, InstState, InstanceDef};
use crate::events::{FltEvent, Rule};
use crate::kernel::{self, Kernel, PASSIVE_LEVEL};

/// The definitions a filter attaches automatically: every instance without `Flags` 0x1, the
/// default instance first, then the others in registry order (docs/simulator.md).
pub fn automatic_defs(k: &Kernel, f: FilterId) -> Vec<(FilterId, InstanceDef)> {
    let r = k.fltmgr.filter(f);
    let mut defs: Vec<InstanceDef> =
        r.instances.iter().filter(|d| d.flags & 0x1 == 0).cloned().collect();
    defs.sort_by_key(|d| !d.name.eq_ignore_ascii_case(&r.default_instance));
    defs.into_iter().map(|d| (f, d)).collect()
}

/// The setup flags the volume's settings add (facts.md §2.5): `DEV_VOLUME` for a Dev Drive,
/// `TRUSTED_VOLUME` for a volume an administrator trusted.
fn volume_flags(k: &Kernel, v: FvId) -> u32 {
    let Some(sv) = k.flt_sim_volume(v) else { return 0 };
    let vol = k.volume(sv);
    let mut flags = 0;
    if vol.dev_drive {
        flags |= InstanceSetupFlags::DEV_VOLUME.bits();
    }
    if vol.trusted {
        flags |= InstanceSetupFlags::TRUSTED_VOLUME.bits();
    }
    flags
}

/// Sets up an instance of `f` on `v` for `def` with `flags`. Refusals before the callback:
/// a filter not registered, a volume its frame cannot attach to (`STATUS_FLT_VOLUME_NOT_FOUND`:
/// gone, dismounted as the frame saw it, or without a device of the frame,
/// [`super::VolumeRec::attachable`]), a pipe or mailslot
/// volume for a filter without `SUPPORT_NPFS_MSFS` (`STATUS_NOT_SUPPORTED`, not logged for
/// automatic attachments), a name taken by the filter on the volume
/// (`STATUS_FLT_INSTANCE_NAME_COLLISION`), an altitude taken on the volume (`collision`).
/// A NULL setup callback always attaches; any error or warning from it refuses.
pub fn setup_instance(f: FilterId, v: FvId, def: &InstanceDef, flags: u32) -> Status {
    match setup(f, v, def, flags, Status::FLT_INSTANCE_ALTITUDE_COLLISION) {
        Ok(_) => Status::SUCCESS,
        Err(s) => s,
    }
}

/// [`setup_instance`] returning the instance, with the altitude-collision status to use.
pub fn setup(
    f: FilterId,
    v: FvId,
    def: &InstanceDef,
    flags: u32,
    collision: Status,
) -> Result<InstId, Status> {
    struct Ready {
        inst: InstId,
        image: crate::ids::ImageId,
        callback: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE_SETUP_CALLBACK,
        objects: windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_RELATED_OBJECTS,
        flags: u32,
        device_type: u32,
        fs: u32,
    }
    let manual = flags & InstanceSetupFlags::MANUAL_ATTACHMENT.bits() != 0;
    let ready = kernel::with(|k| -> Result<Ready, Option<Status>> {
        let fr = k.fltmgr.filter(f);
        // Not before FltStartFiltering (FltAttachVolume's reference page:
        // STATUS_FLT_FILTER_NOT_READY, "has not started filtering"), nor while unregistering
        // (STATUS_FLT_DELETING_OBJECT, "the specified Filter ... is being torn down"; until
        // December 6 STATUS_FLT_FILTER_NOT_READY).
        match fr.state {
            FilterState::Started => {}
            FilterState::Registered => return Err(Some(Status::FLT_FILTER_NOT_READY)),
            FilterState::Unregistering | FilterState::Unregistered => {
                return Err(Some(Status::FLT_DELETING_OBJECT));
            }
        }
        let vr = k.fltmgr.vol(v);
        if !vr.attachable(fr.frame) {
            return Err(Some(Status::FLT_VOLUME_NOT_FOUND));
        }
        if vr.is_npfs_msfs() && fr.flags & super::reg_flags::SUPPORT_NPFS_MSFS == 0 {
            return Err(manual.then_some(Status::NOT_SUPPORTED));
        }
        if k.fltmgr.find_instance(f, v, &def.name).is_some() {
            return Err(Some(Status::FLT_INSTANCE_NAME_COLLISION));
        }
        if k.fltmgr.volume_instances(v).iter().any(|&i| k.fltmgr.inst(i).altitude == def.altitude) {
            return Err(Some(collision));
        }
        let flags = flags | volume_flags(k, v);
        let frame = fr.frame;
        let image = fr.image;
        let callback = fr.callbacks.setup;
        let fh = fr.handle();
        let (device_type, fs, vh) = (vr.device_type, vr.flt_type(), vr.handle());
        let inst = k.fltmgr.add_instance(f, v, def, frame, flags);
        let ih = k.fltmgr.inst(inst).handle();
        Ok(Ready {
            inst,
            image,
            callback,
            objects: super::related_objects(fh, vh, ih, std::ptr::null()),
            flags,
            device_type,
            fs,
        })
    });
    let r = match ready {
        Ok(r) => r,
        Err(None) => return Err(Status::NOT_SUPPORTED),
        Err(Some(s)) => {
            kernel::with(|k| {
                let (device_type, fs) = (k.fltmgr.vol(v).device_type, k.fltmgr.vol(v).flt_type());
                let frame = k.fltmgr.filter(f).frame;
                let driver = Some(k.fltmgr.filter(f).name.clone());
                let volume = Some(k.flt_volume_shared_name(v));
                k.flt_log(
                    driver,
                    volume,
                    FltEvent::InstanceSetup {
                        instance: def.name.clone(),
                        altitude: def.altitude_text.clone(),
                        frame,
                        flags: InstanceSetupFlags::from_bits_retain(flags),
                        volume_device_type: device_type,
                        filesystem: fs,
                        called: false,
                        status: s,
                    },
                );
            });
            return Err(s);
        }
    };
    let mut called = false;
    let status = match r.callback {
        Some(cb) => {
            called = true;
            let objects = r.objects;
            kernel::with(|k| k.check_irql(PASSIVE_LEVEL, "InstanceSetupCallback"));
            // SAFETY: the filter's setup callback with valid related objects, PASSIVE_LEVEL.
            super::call_filter(r.image, "InstanceSetupCallback", || unsafe {
                cb(&objects, r.flags, r.device_type, r.fs as i32)
            })
            .map_or(Status::FLT_DO_NOT_ATTACH, Status)
        }
        None => Status::SUCCESS,
    };
    let (cleanups, deferred) = kernel::with(|k| {
        let refused = status.0 < 0;
        // Torn down under the callback by a waiting teardown (`teardown_and_wait`): left so.
        let torn_down = k.fltmgr.inst(r.inst).state != InstState::SettingUp;
        if !torn_down {
            k.fltmgr.set_inst_state(
                r.inst,
                if refused { InstState::Gone } else { InstState::Attached },
            );
        }
        let deferred = std::mem::take(&mut k.fltmgr.inst_mut(r.inst).teardown_after_setup);
        let (driver, volume) = k.flt_inst_names(r.inst);
        let frame = k.fltmgr.inst(r.inst).frame;
        k.flt_log(
            driver,
            volume,
            FltEvent::InstanceSetup {
                instance: def.name.clone(),
                altitude: def.altitude_text.clone(),
                frame,
                flags: InstanceSetupFlags::from_bits_retain(r.flags),
                volume_device_type: r.device_type,
                filesystem: r.fs,
                called,
                status,
            },
        );
        let cleanups = if refused && !torn_down {
            super::contexts::instance_gone(k, r.inst)
        } else {
            Vec::new()
        };
        (cleanups, (!refused && deferred != 0).then_some(deferred))
    });
    super::contexts::run_cleanups(cleanups);
    if let Some(reason) = deferred {
        // Torn down (a dismount, an unregistration) while the callback ran: the teardown
        // starts now that the instance exists, so the filter never sees it before its setup
        // answered (facts.md §2.5).
        teardown_instance(r.inst, reason);
    }
    if status.0 < 0 { Err(status) } else { Ok(r.inst) }
}

/// `INSTANCE_NAME_MAX_CHARS`.
const INSTANCE_NAME_MAX_CHARS: usize = 255;

/// Which routine asks for a manual attachment (their altitude-collision statuses differ,
/// facts.md §10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachApi {
    /// `FltAttachVolume`: `STATUS_OBJECT_NAME_COLLISION`.
    AttachVolume,
    /// `FltAttachVolumeAtAltitude`: `STATUS_FLT_INSTANCE_ALTITUDE_COLLISION`; without a name it
    /// generates one from the filter's name and the altitude.
    AtAltitude,
    /// `FilterAttach(AtAltitude)` / `fltmc attach`: `STATUS_FLT_INSTANCE_ALTITUDE_COLLISION`;
    /// without a name, the default instance's.
    User,
}

/// A manual attachment (`FltAttachVolume(AtAltitude)`, `FilterAttach(AtAltitude)`): the named
/// instance definition (the default one without a name) or, with an altitude, an instance at
/// that altitude, set up with `FLTFL_INSTANCE_SETUP_MANUAL_ATTACHMENT`.
pub fn attach(
    f: FilterId,
    v: FvId,
    name: Option<&str>,
    altitude: Option<&str>,
    api: AttachApi,
) -> Result<InstId, Status> {
    let def = kernel::with(|k| -> Result<InstanceDef, Status> {
        let fr = k.fltmgr.filter(f);
        let name = match (name, altitude, api) {
            (Some(n), ..) => n.to_owned(),
            // FltAttachVolumeAtAltitude "generates an instance name from the minifilter driver
            // name and the altitude string", truncated to INSTANCE_NAME_MAX_CHARS (its page;
            // the format is the simulator's choice). Until December 6 the default instance's
            // name, which FilterAttachAtAltitude uses.
            (None, Some(text), AttachApi::AtAltitude) => format!("{} {}", fr.name, text.trim())
                .chars()
                .take(INSTANCE_NAME_MAX_CHARS)
                .collect(),
            (None, ..) => fr.default_instance.clone(),
        };
        match altitude {
            Some(text) => {
                let a = Altitude::parse(text.trim()).map_err(|_| Status::INVALID_PARAMETER)?;
                Ok(InstanceDef { name, altitude: a, altitude_text: text.to_owned(), flags: 0 })
            }
            None => fr
                .instances
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(&name))
                .cloned()
                .ok_or(Status::OBJECT_NAME_NOT_FOUND),
        }
    })?;
    let collision = match api {
        AttachApi::AttachVolume => Status::OBJECT_NAME_COLLISION,
        AttachApi::AtAltitude | AttachApi::User => Status::FLT_INSTANCE_ALTITUDE_COLLISION,
    };
    setup(f, v, &def, InstanceSetupFlags::MANUAL_ATTACHMENT.bits(), collision)
}

/// A manual detach (`FltDetachVolume`, `FilterDetach`, `fltmc detach`) of the named instance,
/// or without a name of the filter's highest on the volume: the query-teardown callback may veto
/// it; without one the instance can never be detached manually
/// (`STATUS_FLT_DO_NOT_DETACH`, facts.md §2.5). Then teardown with `MANUAL`.
pub fn detach(f: FilterId, v: FvId, name: Option<&str>) -> Status {
    let r = kernel::with(|k| {
        let fr = k.fltmgr.filter(f);
        // Without a name, "the highest matching instance" (FltDetachVolume's and FilterDetach's
        // reference pages): the filter's instance of the highest altitude on the volume (until
        // December 6 the default instance, as for an attach).
        let found = match name {
            Some(n) => k.fltmgr.find_instance(f, v, n),
            None => {
                k.fltmgr.volume_instances(v).into_iter().find(|&i| k.fltmgr.inst(i).filter == f)
            }
        };
        let i = found.ok_or(Status::FLT_INSTANCE_NOT_FOUND)?;
        let name = k.fltmgr.inst(i).name.to_string();
        if k.fltmgr.inst(i).state != InstState::Attached {
            return Err(Status::FLT_DELETING_OBJECT);
        }
        let ir = k.fltmgr.inst(i);
        let objects = super::related_objects(
            fr.handle(),
            k.fltmgr.vol(v).handle(),
            ir.handle(),
            std::ptr::null(),
        );
        Ok((i, fr.image, fr.callbacks.query_teardown, objects, name))
    });
    let (i, image, callback, objects, name) = match r {
        Ok(x) => x,
        Err(s) => return s,
    };
    let (called, status) = match callback {
        // SAFETY: the filter's query-teardown callback with valid related objects.
        Some(cb) => (
            true,
            super::call_filter(image, "InstanceQueryTeardownCallback", || unsafe {
                cb(&objects, 0)
            })
            .map_or(Status::FLT_DO_NOT_DETACH, Status),
        ),
        None => (false, Status::FLT_DO_NOT_DETACH),
    };
    kernel::with(|k| {
        let (driver, volume) = k.flt_inst_names(i);
        k.flt_log(
            driver,
            volume,
            FltEvent::InstanceQueryTeardown { instance: name, called, status },
        );
    });
    if status.0 < 0 {
        return status;
    }
    teardown_and_wait(i, TeardownFlags::MANUAL.bits());
    Status::SUCCESS
}

/// Starts an instance's teardown (facts.md §2.5): no new I/O reaches it, its start callback
/// runs, operations waiting for its post callback are drained, and its completion follows once
/// nothing it takes part in is outstanding (now, or when the last operation finishes).
pub fn teardown_instance(i: InstId, reason: u32) {
    start_teardown(i, reason, false);
}

/// [`teardown_instance`]; `now` tears an instance whose setup callback still runs down at once
/// (see [`teardown_and_wait`]) instead of after the callback's answer.
fn start_teardown(i: InstId, reason: u32, now: bool) {
    let r = kernel::with(|k| {
        let ir = k.fltmgr.inst(i);
        if ir.state == InstState::SettingUp && !now {
            // Its setup callback is running: the teardown waits for its answer (`setup`).
            let r = k.fltmgr.inst_mut(i);
            if r.teardown_after_setup == 0 {
                r.teardown_after_setup = reason;
            }
            return None;
        }
        if !matches!(ir.state, InstState::Attached | InstState::SettingUp) {
            return None;
        }
        let fr = k.fltmgr.filter(ir.filter);
        let objects = super::related_objects(
            fr.handle(),
            k.fltmgr.vol(ir.volume).handle(),
            ir.handle(),
            std::ptr::null(),
        );
        let callback = fr.callbacks.teardown_start;
        let image = fr.image;
        let name = ir.name.clone();
        k.fltmgr.set_inst_state(i, InstState::TearingDown);
        k.fltmgr.inst_mut(i).reason = reason;
        let (driver, volume) = k.flt_inst_names(i);
        k.flt_log(
            driver,
            volume,
            FltEvent::TeardownStart {
                instance: name.to_string(),
                reason: TeardownFlags::from_bits_retain(reason),
            },
        );
        Some((objects, callback, image))
    });
    let Some((objects, callback, image)) = r else { return };
    if let Some(cb) = callback {
        // SAFETY: the filter's teardown-start callback with valid related objects, PASSIVE_LEVEL.
        super::call_filter(image, "InstanceTeardownStartCallback", || unsafe {
            cb(&objects, reason)
        });
    }
    kernel::with(|k| k.fltmgr.inst_mut(i).start_done = true);
    super::dispatch::drain_instance(i);
    let now = kernel::with(|k| {
        let r = k.fltmgr.inst_mut(i);
        if r.outstanding == 0 && !r.completing {
            r.completing = true;
            true
        } else {
            false
        }
    });
    if now {
        complete_teardown(i);
    }
}

/// `InstanceTeardownCompleteCallback`, then the instance is gone and its contexts are released.
pub fn complete_teardown(i: InstId) {
    let (objects, callback, image, reason) = kernel::with(|k| {
        let ir = k.fltmgr.inst(i);
        let fr = k.fltmgr.filter(ir.filter);
        let objects = super::related_objects(
            fr.handle(),
            k.fltmgr.vol(ir.volume).handle(),
            ir.handle(),
            std::ptr::null(),
        );
        (objects, fr.callbacks.teardown_complete, fr.image, ir.reason)
    });
    if let Some(cb) = callback {
        // SAFETY: the filter's teardown-complete callback with valid related objects.
        super::call_filter(image, "InstanceTeardownCompleteCallback", || unsafe {
            cb(&objects, reason)
        });
    }
    let cleanups = kernel::with(|k| {
        k.fltmgr.set_inst_state(i, InstState::Gone);
        let name = k.fltmgr.inst(i).name.clone();
        let (driver, volume) = k.flt_inst_names(i);
        k.flt_log(
            driver,
            volume,
            FltEvent::TeardownComplete {
                instance: name.to_string(),
                reason: TeardownFlags::from_bits_retain(reason),
            },
        );
        super::contexts::instance_gone(k, i)
    });
    super::contexts::run_cleanups(cleanups);
}

impl Kernel {
    /// An instance is done with one operation (its post ran or was drained, or its pre asked for
    /// no post); a teardown waiting for it completes from a worker.
    pub fn flt_instance_released(&mut self, i: InstId) {
        let r = self.fltmgr.inst_mut(i);
        r.outstanding = r.outstanding.saturating_sub(1);
        if r.state == InstState::TearingDown && r.start_done && r.outstanding == 0 && !r.completing
        {
            r.completing = true;
            let image = self.fltmgr.image;
            let thread = self.sched.worker();
            self.sched.push(crate::sched::Task {
                name: "instance teardown complete",
                image,
                irql: PASSIVE_LEVEL,
                thread,
                run: Box::new(move || complete_teardown(i)),
            });
        }
    }
}

/// Tears an instance down and waits until it is gone; a teardown that can never complete (an
/// operation the filter pended and never completes) is a hang on Windows (facts.md §9), reported
/// as `DEADLOCK`.
///
/// An instance whose setup callback still runs is torn down at once: on Windows the caller would
/// wait for the callback's answer on its own thread, but the simulator's threads nest on one
/// host stack, and any code that runs while a setup callback has not returned runs inside it
/// (in a wait of that callback), so the answer cannot come before this wait ends. The setup
/// then leaves the instance as the teardown left it.
pub fn teardown_and_wait(i: InstId, reason: u32) {
    start_teardown(i, reason, true);
    let gone = || kernel::with(|k| k.fltmgr.inst(i).state == InstState::Gone);
    if crate::sched::wait_until(gone, None) == crate::sched::WaitEnd::Deadlock {
        kernel::with(|k| {
            let r = k.fltmgr.inst(i);
            let msg = format!(
                "instance '{}' cannot complete its teardown: {} operation(s) it pended or holds never complete (InstanceTeardownComplete waits for them, facts.md §2.5)",
                r.name, r.outstanding
            );
            let f = r.filter;
            k.flt_report(Some(f), Rule::Deadlock, msg);
        });
    }
}

/// Tears down the instances on `v` (of one frame, or all), highest altitude first.
pub fn teardown_volume(v: FvId, frame: Option<u32>, reason: u32) {
    let list: Vec<InstId> = kernel::with(|k| {
        k.fltmgr
            .volume_instances(v)
            .into_iter()
            .filter(|&i| frame.is_none_or(|f| k.fltmgr.inst(i).frame == f))
            .collect()
    });
    for i in list {
        teardown_instance(i, reason);
    }
}
