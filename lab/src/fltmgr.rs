//! The lab's view of the Filter Manager: the user-mode management calls a scenario makes
//! (`fltmc load/unload/attach/detach`) and the stacks with their frames.

use fsfilter::Status;
use fsfilter_sim::{EventKind, Machine, VolumeId};

use crate::run::StackEntry;

/// Installs the Filter Manager (group "FSFilter Infrastructure"), as every Windows machine has it.
pub fn install(m: &mut Machine) {
    let _ = m.install_filter_manager();
}

/// `fltmc unload NAME`: a non-mandatory unload.
pub fn unload(m: &mut Machine, driver: &str) -> Status {
    m.fltmc_unload(driver)
}

/// `fltmc attach NAME VOLUME [-i instance] [-a altitude]`.
pub fn attach(
    m: &mut Machine,
    driver: &str,
    volume: VolumeId,
    altitude: Option<&str>,
    instance: Option<&str>,
) -> Status {
    match altitude {
        Some(a) => m.filter_attach_at_altitude(driver, volume, a, instance),
        None => m.filter_attach(driver, volume, instance),
    }
}

/// `fltmc detach NAME VOLUME [-i instance]`.
pub fn detach(m: &mut Machine, driver: &str, volume: VolumeId, instance: Option<&str>) -> Status {
    m.filter_detach(driver, volume, instance)
}

/// A Filter Manager request naming a legacy filter: the Filter Manager does not know it, and
/// `fltmc` reports `STATUS_FLT_FILTER_NOT_FOUND` (facts.md §7's `0x801F0013`). The log says why.
pub fn not_a_minifilter(
    m: &mut Machine,
    what: &'static str,
    driver: &str,
    volume: Option<&str>,
) -> Status {
    let status = Status::FLT_FILTER_NOT_FOUND;
    let detail = format!(
        "fltmc {what}: {driver} is a legacy filter; the Filter Manager manages minifilters only \
         ({})",
        status.name().unwrap_or("")
    );
    m.kernel(|k| {
        k.log(EventKind::System {
            what: "not_a_minifilter",
            driver: Some(driver.to_owned()),
            volume: volume.map(str::to_owned),
            detail,
        })
    });
    status
}

/// A mounted volume's stack, from the top: legacy devices, Filter Manager frames with their
/// instances, the file system.
pub fn stack(m: &Machine, volume: VolumeId) -> Vec<StackEntry> {
    m.device_stack(volume)
        .into_iter()
        .map(|e| match e {
            fsfilter_sim::StackEntry::Legacy { driver } => StackEntry::Legacy { driver },
            fsfilter_sim::StackEntry::Frame { frame, instances } => StackEntry::Frame {
                frame,
                instances: instances
                    .into_iter()
                    .map(|i| (i.driver, i.instance, i.altitude))
                    .collect(),
            },
            fsfilter_sim::StackEntry::FileSystem { driver } => StackEntry::FileSystem { driver },
        })
        .collect()
}
