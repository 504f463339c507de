//! Read-only views of the machine for tests and the lab: device stacks by driver.

use crate::ids::VolumeId;
use crate::kernel::Kernel;
use crate::objects::DeviceRole;

/// One device object of a stack, from the top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The driver's service name.
    pub driver: String,
    /// What the device is.
    pub role: DeviceRole,
}

impl Kernel {
    /// The device stack of a mounted volume, from the top down to the file system's volume
    /// device (empty when the volume is not mounted).
    pub fn volume_stack(&self, v: VolumeId) -> Vec<DeviceEntry> {
        let Some(vdo) = self.volume(v).vdo else { return Vec::new() };
        self.stack_entries(vdo)
    }

    /// The stack above a named device (a file system's control device, say), from the top.
    pub fn named_device_stack(&self, name: &str) -> Vec<DeviceEntry> {
        let Some(&d) = self.objects.names.get(&name.to_uppercase()) else { return Vec::new() };
        self.stack_entries(d)
    }

    fn stack_entries(&self, any: crate::ids::DeviceId) -> Vec<DeviceEntry> {
        self.objects
            .stack_from_top(any)
            .into_iter()
            .map(|d| {
                let info = self.objects.device(d);
                DeviceEntry {
                    driver: self.objects.driver(info.driver).service.clone(),
                    role: info.role,
                }
            })
            .collect()
    }
}

impl crate::Machine {
    /// The service names of a mounted volume's device stack, from the top.
    pub fn volume_stack_drivers(&self, v: VolumeId) -> Vec<String> {
        self.kernel(|k| k.volume_stack(v).into_iter().map(|e| e.driver).collect())
    }

    /// The service names of the stack above a named device, from the top.
    pub fn device_stack_drivers(&self, name: &str) -> Vec<String> {
        self.kernel(|k| k.named_device_stack(name).into_iter().map(|e| e.driver).collect())
    }
}

/// Views of the event log that the backends' tests, the benchmarks and the lab share.
impl crate::Machine {
    /// Every callback `driver`'s logic reported through the backends' trace hook, with the
    /// volume it was for, in order.
    pub fn callbacks_of(&self, driver: &str) -> Vec<(Option<String>, crate::Callback)> {
        self.kernel(|k| {
            k.events
                .iter()
                .filter_map(|e| match &e.kind {
                    crate::EventKind::Callback { driver: d, volume, callback, .. }
                        if d == driver =>
                    {
                        Some((volume.as_ref().map(String::from), callback.clone()))
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// The statuses user request `io` completed with, in order: one, for a request completed
    /// once.
    pub fn completions_of(&self, io: crate::RequestRef) -> Vec<fsfilter::Status> {
        self.kernel(|k| {
            k.events
                .iter()
                .filter_map(|e| match e.kind {
                    crate::EventKind::IoComplete { io: i, status, .. } if i == io => Some(status),
                    _ => None,
                })
                .collect()
        })
    }

    /// Which drivers' pre and post callbacks ran for user request `io`, in order:
    /// `("ProbeA", "pre")`, ...
    pub fn callback_order(&self, io: crate::RequestRef) -> Vec<(String, &'static str)> {
        self.kernel(|k| {
            k.events
                .iter()
                .filter_map(|e| match &e.kind {
                    crate::EventKind::Callback { driver, io: Some(i), callback, .. }
                        if *i == io =>
                    {
                        let kind = callback.kind();
                        matches!(kind, "pre" | "post").then(|| (driver.to_string(), kind))
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// How many pre-operation callbacks the Filter Manager called for the instances of
    /// minifilter `driver` (from its own events, whether or not the filter reports through the
    /// trace hook).
    pub fn flt_pre_count(&self, driver: &str) -> usize {
        self.kernel(|k| {
            k.events
                .iter()
                .filter(|e| {
                    matches!(&e.kind, crate::EventKind::FltMgr {
                        driver: Some(d),
                        event: crate::FltEvent::Operation { phase: crate::events::Phase::Pre, .. },
                        ..
                    } if d == driver)
                })
                .count()
        })
    }

    /// The verifier's findings as text: `RULE Some("driver"): message`.
    pub fn findings_text(&self) -> Vec<String> {
        self.findings()
            .into_iter()
            .map(|(rule, driver, message)| format!("{} {driver:?}: {message}", rule.name()))
            .collect()
    }
}
