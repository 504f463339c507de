//! Fault injection, systematic rather than random: fail the k-th call of a kind made by one
//! driver image (or by any image).

use crate::ids::ImageId;

/// The kinds of call that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// Pool allocation (`ExAllocatePool2`, and the I/O manager's and the Filter Manager's own
    /// allocations on a driver's behalf, such as `IoSetCompletionRoutineEx` and the work item
    /// `FltDoCompletionProcessingWhenSafe` posts with).
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

/// How many kinds there are (the counters' width).
const KINDS: usize = FaultKind::ALL.len();

/// Calls counted by kind (`FaultKind as usize`).
type Counts = [u64; KINDS];

/// Planned failures and call counters.
///
/// Every pool allocation and `IoSetCompletionRoutineEx` counts a call, so the counters are
/// arrays indexed by kind, by image and by service, found without hashing: a service's entry is
/// looked up by name once per image and remembered.
#[derive(Default)]
pub struct Faults {
    plans: Vec<Fault>,
    /// Calls by kind, of any image and outside any.
    any: Counts,
    /// Calls by image (its index), then kind.
    by_image: Vec<Counts>,
    /// Planned failures by service name (lowercase): the `nth` call of a kind made by that
    /// service's image, whichever image it gets when it loads.
    service_plans: Vec<(String, FaultKind, u64)>,
    /// Calls by service (its name as first spelled; one entry per service, any case), then
    /// kind.
    services: Vec<(String, Counts)>,
    /// The entry of `services` each image counts in (by image index), once it counted a call.
    image_service: Vec<Option<usize>>,
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
        self.services
            .iter()
            .filter(|(s, _)| s.eq_ignore_ascii_case(service))
            .map(|(_, counts)| counts[kind as usize])
            .sum()
    }

    /// How many calls of `kind` `image` has made.
    pub fn count(&self, kind: FaultKind, image: ImageId) -> u64 {
        self.by_image.get(image.index()).map_or(0, |c| c[kind as usize])
    }

    /// The entry of `services` that counts the calls of `service` (any case), made by `image`
    /// (remembered for the image when there is one).
    fn service_entry(&mut self, image: Option<ImageId>, service: &str) -> usize {
        let cached = image.and_then(|i| self.image_service.get(i.index()).copied().flatten());
        if let Some(e) = cached {
            return e;
        }
        let e = match self.services.iter().position(|(s, _)| s.eq_ignore_ascii_case(service)) {
            Some(e) => e,
            None => {
                self.services.push((service.to_owned(), [0; KINDS]));
                self.services.len() - 1
            }
        };
        if let Some(i) = image {
            if self.image_service.len() <= i.index() {
                self.image_service.resize(i.index() + 1, None);
            }
            self.image_service[i.index()] = Some(e);
        }
        e
    }

    /// Counts a call of `kind` by `image` (the running image, None outside any) of service
    /// `service` (its name, any case) and says whether it must fail.
    pub fn fail(&mut self, kind: FaultKind, image: Option<ImageId>, service: Option<&str>) -> bool {
        let k = kind as usize;
        // Calls made outside any image count only towards "any image" (one counter, not two
        // increments of the same one).
        let mine = match image {
            Some(i) => {
                if self.by_image.len() <= i.index() {
                    self.by_image.resize(i.index() + 1, [0; KINDS]);
                }
                let mine = &mut self.by_image[i.index()][k];
                *mine += 1;
                *mine
            }
            None => 0,
        };
        self.any[k] += 1;
        let any = self.any[k];
        if let Some(service) = service {
            let e = self.service_entry(image, service);
            let n = &mut self.services[e].1[k];
            *n += 1;
            let n = *n;
            if !self.service_plans.is_empty() {
                let planned = self.service_plans.iter().position(|(s, pk, nth)| {
                    *pk == kind && *nth == n && s.eq_ignore_ascii_case(service)
                });
                if let Some(i) = planned {
                    self.service_plans.remove(i);
                    self.injected.push(Fault { kind, nth: n, image });
                    return true;
                }
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
