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
