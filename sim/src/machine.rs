//! `Machine`: a simulated computer on this thread. Install services, boot, run steps, read the
//! event log.

use std::marker::PhantomData;

use fsfilter::Status;

use crate::events::{Event, Rule};
use crate::kernel::{self, Kernel};
use crate::loader::{ServiceSpec, StartType, StopResult};

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
        kernel::with(|k| k.install_service(spec));
    }

    /// Boots: boot-start services group by group, then system-start, then auto-start.
    pub fn boot(&mut self) {
        for start in [StartType::Boot, StartType::System, StartType::Auto] {
            let order = kernel::with(|k| k.load_order(start));
            for name in order {
                crate::loader::load_service(&name);
            }
            crate::sched::run_ready();
        }
    }

    /// Starts a service (`sc start`).
    pub fn start(&mut self, name: &str) -> Status {
        crate::loader::load_service(name)
    }

    /// Stops a service (`sc stop`).
    pub fn stop(&mut self, name: &str) -> StopResult {
        crate::loader::stop_service(name)
    }

    /// Runs every queued piece of work until none is left.
    pub fn settle(&mut self) {
        crate::sched::run_all();
    }

    /// Sets the scenario step that following events belong to.
    pub fn set_step(&mut self, step: Option<u32>) {
        kernel::with(|k| k.step = step);
    }

    /// A copy of the event log.
    pub fn events(&self) -> Vec<Event> {
        kernel::with(|k| k.events.clone())
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

impl Drop for Machine {
    fn drop(&mut self) {
        // Work still queued may hold pointers into the kernel: drop it with the kernel.
        drop(kernel::uninstall());
    }
}

impl Kernel {
    /// The volume a trace's instance identity belongs to: a device object's volume (legacy
    /// filters report their device objects), or a Filter Manager instance's.
    pub fn resolve_instance(&self, instance: usize) -> Option<crate::ids::VolumeId> {
        if let Some(d) = self.objects.device_id(instance as *const _) {
            return self.objects.device(d).volume;
        }
        None
    }

    /// The user request an operation identity (an IRP) belongs to.
    pub fn resolve_operation(&self, operation: usize) -> Option<crate::ids::RequestId> {
        match self.irps.map.get(&operation)?.finish {
            crate::irp::Finish::Request(r) => Some(r),
            _ => None,
        }
    }
}
