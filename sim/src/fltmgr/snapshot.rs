//! Device stacks as the lab shows them (scenario.md, "snapshots"): a volume's stack from the
//! top down — legacy filters by driver, Filter Manager frames with their instances (highest
//! altitude first), the file system at the bottom — and the frame list (`!fltkd.frames`).

use std::collections::BTreeMap;

use super::{DevKind, EXT_MAGIC, FltExt, FvId, InstState};
use crate::ids::VolumeId;
use crate::kernel::{self, Kernel};
use crate::machine::Machine;

/// An instance in a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInstance {
    /// The minifilter (service name).
    pub driver: String,
    /// The instance name.
    pub instance: String,
    /// The altitude as given.
    pub altitude: String,
}

/// One device of a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackEntry {
    /// A legacy filter's device.
    Legacy {
        /// Its driver (service name).
        driver: String,
    },
    /// A Filter Manager frame.
    Frame {
        /// Its number.
        frame: u32,
        /// Its attached instances on this volume, highest altitude first.
        instances: Vec<SnapInstance>,
    },
    /// The file system's volume device.
    FileSystem {
        /// Its driver.
        driver: String,
    },
}

/// A frame as `!fltkd.frames` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSnapshot {
    /// `Frame N`.
    pub frame: u32,
    /// The low end of its range (empty when it hosts nothing yet).
    pub low: String,
    /// The high end.
    pub high: String,
    /// The filters in it: (name, altitude).
    pub filters: Vec<(String, String)>,
}

fn frame_instances(k: &Kernel, v: Option<FvId>, frame: u32) -> Vec<SnapInstance> {
    let Some(v) = v else { return Vec::new() };
    k.fltmgr
        .volume_instances(v)
        .into_iter()
        .filter(|&i| {
            k.fltmgr.inst(i).frame == frame && k.fltmgr.inst(i).state == InstState::Attached
        })
        .map(|i| {
            let r = k.fltmgr.inst(i);
            SnapInstance {
                driver: k.fltmgr.filter(r.filter).name.to_string(),
                instance: r.name.to_string(),
                altitude: r.altitude_text.to_string(),
            }
        })
        .collect()
}

impl Kernel {
    /// The stack of a machine volume, from the top down (empty while it is not mounted).
    pub fn device_stack(&self, v: VolumeId) -> Vec<StackEntry> {
        let Some(bottom) = self.volume(v).vdo else { return Vec::new() };
        if self.objects.device(bottom).deleted {
            return Vec::new();
        }
        let fv = self.fltmgr.volume_by_bottom(bottom);
        self.objects
            .stack_from_top(bottom)
            .into_iter()
            .map(|d| {
                let info = self.objects.device(d);
                let driver = self.objects.driver(info.driver).service.clone();
                if d == bottom {
                    return StackEntry::FileSystem { driver };
                }
                if Some(info.driver) == self.fltmgr.driver {
                    // SAFETY: a Filter Manager device with its FltExt.
                    let ext = unsafe { *self.objects.dobj(d).DeviceExtension.cast::<FltExt>() };
                    if ext.magic == EXT_MAGIC && ext.kind == DevKind::Volume as u8 {
                        return StackEntry::Frame {
                            frame: ext.frame,
                            instances: frame_instances(self, fv, ext.frame),
                        };
                    }
                }
                StackEntry::Legacy { driver }
            })
            .collect()
    }
}

impl Machine {
    /// The stack of a volume, from the top down (scenario.md "snapshots").
    pub fn device_stack(&self, v: VolumeId) -> Vec<StackEntry> {
        kernel::with(|k| k.device_stack(v))
    }

    /// Every volume's stack, by volume name.
    pub fn device_stacks(&self) -> BTreeMap<String, Vec<StackEntry>> {
        kernel::with(|k| {
            (0..k.volumes.list.len() as u32)
                .map(VolumeId)
                .map(|v| (k.volume_display_name(v), k.device_stack(v)))
                .collect()
        })
    }

    /// The frames with their ranges and filters.
    pub fn frames(&self) -> Vec<FrameSnapshot> {
        kernel::with(|k| {
            k.fltmgr
                .frames
                .iter()
                .map(|f| FrameSnapshot {
                    frame: f.number,
                    low: f.lo.map(|a| a.to_string()).unwrap_or_default(),
                    high: f.hi.map(|a| a.to_string()).unwrap_or_default(),
                    filters: k
                        .fltmgr
                        .filters
                        .iter()
                        .filter(|r| {
                            r.frame == f.number && r.state != super::FilterState::Unregistered
                        })
                        .map(|r| {
                            (
                                r.name.to_string(),
                                r.altitude().map(|a| a.to_string()).unwrap_or_default(),
                            )
                        })
                        .collect(),
                })
                .collect()
        })
    }
}
