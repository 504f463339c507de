//! Fault injection, systematic rather than random: fail the k-th call of a kind made by one
//! driver image (or by any image).

use crate::ids::ImageId;
use crate::kernel::FastMap;

/// The kinds of call that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Pool allocation (`ExAllocatePool2`, and the I/O manager's own allocations on a driver's
    /// behalf, such as `IoSetCompletionRoutineEx`).
    Pool,
    /// `IoCreateDevice`.
    CreateDevice,
    /// `IoAttachDeviceToDeviceStack(Safe)`.
    Attach,
    /// `FltAllocateContext`.
    AllocateContext,
    /// `FltRegisterFilter`.
    RegisterFilter,
    /// `FltStartFiltering`.
    StartFiltering,
    /// `FltCreateSectionForDataScan` / `FsRtlCreateSectionForDataScan`.
    CreateSection,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Pool,
        FaultKind::CreateDevice,
        FaultKind::Attach,
        FaultKind::AllocateContext,
        FaultKind::RegisterFilter,
        FaultKind::StartFiltering,
        FaultKind::CreateSection,
    ];

    /// A name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Pool => "pool",
            FaultKind::CreateDevice => "create_device",
            FaultKind::Attach => "attach",
            FaultKind::AllocateContext => "allocate_context",
            FaultKind::RegisterFilter => "register_filter",
            FaultKind::StartFiltering => "start_filtering",
            FaultKind::CreateSection => "create_section",
        }
    }
}

/// A planned failure: the `nth` call (1-based) of `kind` made by `image` (any image if None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What fails.
    pub kind: FaultKind,
    /// Which call, counting from 1.
    pub nth: u64,
    /// Whose call.
    pub image: Option<ImageId>,
}

/// Planned failures and call counters.
#[derive(Default)]
pub struct Faults {
    plans: Vec<Fault>,
    counts: FastMap<(FaultKind, Option<ImageId>), u64>,
    /// Planned failures by service name (lowercase): the `nth` call of a kind made by that
    /// service's image, whichever image it gets when it loads.
    service_plans: Vec<(String, FaultKind, u64)>,
    /// Calls counted by service name (as the image spells it; one spelling per service), then
    /// kind. Looked up by `&str` on every counted call, so counting allocates only the first
    /// time a service calls.
    service_counts: FastMap<String, FastMap<FaultKind, u64>>,
    /// Failures injected so far.
    pub injected: Vec<Fault>,
}

impl Faults {
    /// Adds a planned failure.
    pub fn plan(&mut self, fault: Fault) {
        self.plans.push(fault);
    }

    /// Plans the failure of the `nth` call (1-based) of `kind` made by service `service`.
    pub fn plan_for_service(&mut self, service: &str, kind: FaultKind, nth: u64) {
        self.service_plans.push((service.to_ascii_lowercase(), kind, nth));
    }

    /// How many calls of `kind` service `service` has made (in this machine's life).
    pub fn service_count(&self, service: &str, kind: FaultKind) -> u64 {
        self.service_counts
            .iter()
            .filter(|(s, _)| s.eq_ignore_ascii_case(service))
            .filter_map(|(_, kinds)| kinds.get(&kind))
            .sum()
    }

    /// How many calls of `kind` `image` has made.
    pub fn count(&self, kind: FaultKind, image: ImageId) -> u64 {
        self.counts.get(&(kind, Some(image))).copied().unwrap_or(0)
    }

    /// Counts a call of `kind` by `image` (the running image, None outside any) of service
    /// `service` (its name, any case) and says whether it must fail.
    pub fn fail(&mut self, kind: FaultKind, image: Option<ImageId>, service: Option<&str>) -> bool {
        // Calls made outside any image count only towards "any image" (one counter, not two
        // increments of the same one).
        let mine = match image {
            Some(_) => {
                let mine = self.counts.entry((kind, image)).or_default();
                *mine += 1;
                *mine
            }
            None => 0,
        };
        let any = self.counts.entry((kind, None)).or_default();
        *any += 1;
        let any = *any;
        if let Some(service) = service {
            // Keyed by the image's name as it is spelled (one hash lookup per call); a service
            // counted under another spelling before is found case-insensitively, once.
            if !self.service_counts.contains_key(service) {
                let key = self
                    .service_counts
                    .keys()
                    .find(|s| s.eq_ignore_ascii_case(service))
                    .cloned()
                    .unwrap_or_else(|| service.to_ascii_lowercase());
                let kinds = self.service_counts.remove(&key).unwrap_or_default();
                self.service_counts.insert(service.to_owned(), kinds);
            }
            let mut uncounted = 0;
            let n = match self.service_counts.get_mut(service) {
                Some(kinds) => kinds.entry(kind).or_default(),
                None => &mut uncounted,
            };
            *n += 1;
            let n = *n;
            let planned = || {
                self.service_plans.iter().position(|(s, k, nth)| {
                    *k == kind && *nth == n && s.eq_ignore_ascii_case(service)
                })
            };
            if let Some(i) = planned() {
                self.service_plans.remove(i);
                self.injected.push(Fault { kind, nth: n, image });
                return true;
            }
        }
        let hit = self.plans.iter().position(|p| {
            p.kind == kind
                && match p.image {
                    Some(i) => Some(i) == image && p.nth == mine,
                    None => p.nth == any,
                }
        });
        match hit {
            Some(i) => {
                let f = self.plans.remove(i);
                self.injected.push(f);
                true
            }
            None => false,
        }
    }
}
