//! The backend's state: one `DriverState` per loaded driver image (reached through the image
//! global, `fsfilter_kernel::image`), one `InstanceState` per instance (in the instance context),
//! and the bookkeeping of pended operations and data-scan sections.

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use fsfilter::{
    DataScanMode, Filter, MAX_OPERATIONS, MajorFunction, Operation, Registration, VolumeInfo,
};
use fsfilter_kernel::datascan::SectionTable;
use fsfilter_kernel::deferred::DeferredPosts;
use fsfilter_kernel::image;
use fsfilter_kernel::loadbuf::LoadBlocks;
use fsfilter_kernel::pending::PendedTable;
use fsfilter_kernel::pool::{PoolBox, pool_tag};
use fsfilter_kernel::sync::SpinLock;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{PFLT_FILTER, PFLT_PORT};

use crate::tables::RuntimeTables;

/// Pool tag of the driver state.
pub(crate) const DRIVER_TAG: u32 = pool_tag(b"FsfM");
/// Pool tag of instance contexts.
pub(crate) const INSTANCE_CONTEXT_TAG: u32 = pool_tag(b"FsfI");
/// Pool tag of section contexts.
pub(crate) const SECTION_CONTEXT_TAG: u32 = pool_tag(b"FsfX");
/// Pool tag of stream contexts (rule 28).
pub(crate) const STREAM_CONTEXT_TAG: u32 = pool_tag(b"FsfK");
/// Pool tag of stream-handle contexts (rule 29).
pub(crate) const HANDLE_CONTEXT_TAG: u32 = pool_tag(b"FsfH");
/// Pool tag of the instance table's overflow blocks: `FsfT`.
const INSTANCE_TABLE_TAG: u32 = pool_tag(b"FsfT");

/// Everything the backend keeps for one loaded driver.
pub(crate) struct DriverState<F: Filter> {
    pub(crate) filter: F,
    pub(crate) handle: PFLT_FILTER,
    /// What the callbacks need of the registration in force.
    pub(crate) registered: Registered,
    /// Tables for a run-time registration (None when the static tables are used).
    pub(crate) runtime_tables: Option<PoolBox<RuntimeTables>>,
    pub(crate) pended: PendedTable,
    pub(crate) deferred_posts: DeferredPosts,
    pub(crate) sections: SectionTable,
    /// The instance contexts of attached instances, for callbacks that may run above
    /// `APC_LEVEL` (post callbacks), where `FltGetInstanceContext` may not be called.
    pub(crate) instances: InstanceTable,
    /// The communication server port of the filter's message channel (`crate::messages`); 0
    /// without a channel, or before it opens and after it closes.
    pub(crate) port: PFLT_PORT,
    /// The channel's connected clients (`crate::messages::Connections`): empty (zeroed) without
    /// a channel.
    pub(crate) connections: fsfilter_kernel::sync::SpinLock<crate::messages::Connections>,
    /// The filter's load buffers (`Filter::LOAD_BUFFERS`). Declared after `filter`, so dropped
    /// after it (fields drop in declaration order): the buffers are freed once the filter is gone.
    pub(crate) load_blocks: LoadBlocks<F>,
}

/// What the callbacks need to know of the registration in force, in a few bytes: which
/// operations have a post callback, whether there is an instance-setup callback, whether it scans
/// data. For a filter's constant registration it is computed at compile time, so the registration
/// itself (some 400 bytes) is not kept in the image at all: the Filter Manager has the static
/// tables, and the callbacks this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Registered {
    /// Bit `major.index()` is set when that operation has a post callback.
    post: u64,
    instance_setup: bool,
    scans_data: bool,
    /// For a registration that scans data, the filter's own registration of the operations that
    /// conflict with data-scan sections ([`Registered::guarded`]).
    guarded: [Option<Operation>; 2],
}

/// The operations whose pre callback the backend needs whenever the filter scans data, registered
/// or not: they conflict with FsRtl data-scan sections, whose conflicts the caller handles
/// (facts.md §6).
pub(crate) const GUARDED: [MajorFunction; 2] =
    [MajorFunction::Write, MajorFunction::SetInformation];

const _: () = assert!(MAX_OPERATIONS <= u64::BITS as usize, "one bit per dense operation index");

impl Registered {
    /// The summary of `registration`.
    ///
    /// A filter type whose constant registration does not scan data never does (a run-time
    /// registration cannot add it, `fsfilter::registration_in_force`): for it the data-scan part
    /// is known empty at compile time.
    pub(crate) const fn of<F: Filter>(registration: &Registration) -> Registered {
        let mut post = 0u64;
        let mut rest = registration.operations();
        while let [op, tail @ ..] = rest {
            if let (true, Some(i)) = (op.post, op.major.index()) {
                post |= 1 << i;
            }
            rest = tail;
        }
        let scans_data = fsfilter::scans_data::<F>() && registration.scans_data();
        const fn copied(op: Option<&Operation>) -> Option<Operation> {
            match op {
                Some(op) => Some(*op),
                None => None,
            }
        }
        let guarded = if scans_data {
            [copied(registration.get(GUARDED[0])), copied(registration.get(GUARDED[1]))]
        } else {
            [None, None]
        };
        Registered {
            post,
            instance_setup: registration.callbacks().instance_setup,
            scans_data,
            guarded,
        }
    }

    /// For a filter that scans data, `Some` for the operations in [`GUARDED`]: the pre callback
    /// runs for every one of them (the backend's table has no skip flags for them), and this is
    /// the filter's own registration of it, `None` inside when it registered none. Its skip flags
    /// and callbacks apply after the backend's conflict handling.
    #[inline(always)]
    pub(crate) fn guarded(&self, major: MajorFunction) -> Option<Option<Operation>> {
        if !self.scans_data {
            return None;
        }
        GUARDED.iter().zip(self.guarded).find(|(m, _)| **m == major).map(|(_, op)| op)
    }

    /// True when `major` is registered with a post callback (every pre callback asks).
    #[inline(always)]
    pub(crate) const fn has_post(&self, major: MajorFunction) -> bool {
        match major.index() {
            Some(i) => self.post >> i & 1 != 0,
            None => false,
        }
    }

    /// True when the registration has an instance-setup callback.
    pub(crate) const fn instance_setup(&self) -> bool {
        self.instance_setup
    }

    /// True when the registration scans data.
    pub(crate) const fn scans_data(&self) -> bool {
        self.scans_data
    }
}

/// Slots of one block of the instance table; a full table grows by another block.
pub(crate) const MAX_INSTANCES: usize = 64;

/// `(PFLT_INSTANCE, instance context)` pairs of attached instances, 0 for a free slot.
///
/// Every pre and post callback looks its instance up here, on every processor, so a lookup takes
/// no lock: a spin lock here would serialize all the I/O the filter sees. Writers (instance setup
/// and context cleanup, rare) serialize on `writers`; a slot is published by writing its context
/// before its instance (release), and a reader that finds its instance (acquire) reads the
/// context written before. An instance's slot is only cleared by its context's cleanup callback,
/// after the last callback of that instance, so no reader can see its own slot change under it.
///
/// The table has no size limit: when its [`MAX_INSTANCES`] slots are full, instance setup (the
/// only writer that adds) chains another block of slots from non-paged pool, published once and
/// kept until the table goes. A post callback above `APC_LEVEL` finds every instance here, since it
/// may not call `FltGetInstanceContext` (before December 4 the 65th instance's posts there were
/// skipped).
///
/// # Invariants
/// All-zero bytes are an empty table, so it can live in zeroed pool. A context in the table is the
/// instance's context, which the Filter Manager keeps alive until its last reference goes after
/// the instance's teardown completed; its cleanup callback removes it from the table first.
/// `more` is null or a block this table owns (from `PoolBox::into_raw`, tag `FsfT`), set once
/// under `writers` of the first block and never changed until the table is dropped.
pub(crate) struct InstanceTable {
    entries: [(AtomicUsize, AtomicUsize); MAX_INSTANCES],
    writers: SpinLock<()>,
    more: AtomicPtr<InstanceTable>,
}

impl InstanceTable {
    /// The block chained after this one.
    fn next(&self) -> Option<&InstanceTable> {
        // SAFETY: null or a block this table owns, published with release and never freed before
        // the table (the invariant).
        unsafe { self.more.load(Ordering::Acquire).as_ref() }
    }

    /// The first slot, in this block or a later one, that `pick` accepts.
    fn find_slot(
        &self,
        pick: impl Fn(&(AtomicUsize, AtomicUsize)) -> bool,
    ) -> Option<&(AtomicUsize, AtomicUsize)> {
        let mut block = self;
        loop {
            if let Some(slot) = block.entries.iter().find(|s| pick(s)) {
                return Some(slot);
            }
            block = block.next()?;
        }
    }

    /// Records `instance`'s context. False only for instance 0, or when the table is full and no
    /// memory is left for another block.
    pub(crate) fn insert(&self, instance: usize, context: usize) -> bool {
        if instance == 0 {
            return false;
        }
        let _writers = self.writers.lock();
        if let Some((_, c)) = self.find_slot(|(i, _)| i.load(Ordering::Relaxed) == instance) {
            c.store(context, Ordering::Release);
            return true;
        }
        if let Some((i, c)) = self.find_slot(|(i, _)| i.load(Ordering::Relaxed) == 0) {
            c.store(context, Ordering::Release);
            i.store(instance, Ordering::Release);
            return true;
        }
        // Full: chain another block with the instance in its first slot.
        let fill = |b: *mut InstanceTable| {
            // SAFETY: the fresh, zeroed block: its first slot, written before it is published.
            if let Some((i, c)) = unsafe { (*b).entries.first() } {
                c.store(context, Ordering::Relaxed);
                i.store(instance, Ordering::Relaxed);
            }
        };
        // SAFETY: all-zero is an empty table (the invariant); `fill` writes one slot's atomics.
        let Ok(block) = (unsafe { PoolBox::try_new_zeroed_with(INSTANCE_TABLE_TAG, fill) }) else {
            return false;
        };
        let mut last = self;
        while let Some(next) = last.next() {
            last = next;
        }
        last.more.store(block.into_raw(), Ordering::Release);
        true
    }

    /// The context of `instance`, if recorded. Lock-free; callable at any IRQL.
    pub(crate) fn get(&self, instance: usize) -> Option<usize> {
        if instance == 0 {
            return None;
        }
        let (i, c) = self.find_slot(|(i, _)| i.load(Ordering::Acquire) == instance)?;
        // Read the context, then check the slot is still this instance's: a lookup that raced
        // the slot's removal (which the protocol excludes) answers nothing rather than a cleared
        // or reused context.
        let context = c.load(Ordering::Acquire);
        (context != 0 && i.load(Ordering::Acquire) == instance).then_some(context)
    }

    /// Forgets the instance whose context is `context`.
    pub(crate) fn remove_context(&self, context: usize) {
        let _writers = self.writers.lock();
        if let Some((i, c)) = self.find_slot(|(_, c)| c.load(Ordering::Relaxed) == context) {
            i.store(0, Ordering::Release);
            c.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for InstanceTable {
    fn drop(&mut self) {
        let more = core::mem::replace(self.more.get_mut(), core::ptr::null_mut());
        // SAFETY: null or a block this table owns (the invariant), freed once here; dropping it
        // frees the blocks after it.
        drop(unsafe { PoolBox::from_raw(more, INSTANCE_TABLE_TAG) });
    }
}

impl<F: Filter> DriverState<F> {
    /// The state of the running image, if its `DriverEntry` completed.
    ///
    /// # Safety
    /// Must be called from code of an image whose backend is this one with this `F` (the image
    /// global only ever holds a `DriverState<F>` of the image's own `F`), and the reference must
    /// not outlive the callback that asked (unload frees the state).
    pub(crate) unsafe fn current<'a>() -> Option<&'a DriverState<F>> {
        let p = image::get().cast::<DriverState<F>>();
        // SAFETY: the caller guarantees the global holds a live `DriverState<F>` or null.
        unsafe { p.as_ref() }
    }
}

/// The per-instance state, stored in the instance context.
pub(crate) struct InstanceState<F: Filter> {
    pub(crate) context: F::InstanceContext,
    pub(crate) volume: VolumeInfo,
    pub(crate) data_scan: DataScanMode,
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    use fsfilter::{Instance, InstanceSetup, PreOperation, PreOutcome, Result, ServiceParameters};

    /// Declares a test filter type with `registration`.
    macro_rules! test_filter {
        ($name:ident, $registration:expr) => {
            pub(crate) struct $name;

            impl Filter for $name {
                const REGISTRATION: Registration = $registration;
                type InstanceContext = ();
                type CompletionContext = ();

                fn load(_: &dyn ServiceParameters) -> Result<Self> {
                    Ok($name)
                }

                fn instance_setup(&self, _: &InstanceSetup<'_>) -> Result<()> {
                    Ok(())
                }

                fn pre_operation(
                    &self,
                    _: &Instance<'_, ()>,
                    _: &mut PreOperation<'_, ()>,
                ) -> PreOutcome<()> {
                    PreOutcome::NoPost
                }
            }
        };
    }

    test_filter!(
        Plain,
        Registration::new().operation(Operation::new(MajorFunction::Read).pre()).validated()
    );
    test_filter!(
        Scanning,
        Registration::new()
            .operation(Operation::new(MajorFunction::Create).post())
            .operation(
                Operation::new(MajorFunction::Write)
                    .post()
                    .skip(fsfilter::OperationFlags::SKIP_CACHED_IO)
            )
            .data_scan(true)
            .validated()
    );

    #[test]
    fn the_registration_summary_answers_what_the_registration_says() {
        let r = Registration::new()
            .operation(Operation::new(MajorFunction::Create).pre().post())
            .operation(Operation::new(MajorFunction::Read).pre())
            .operation(Operation::new(MajorFunction::Write).post())
            .operation(Operation::new(MajorFunction::VolumeDismount).pre().post())
            .operation(Operation::new(MajorFunction::Shutdown).pre())
            .instance_setup_callback(false)
            .check()
            .unwrap();
        let s = Registered::of::<Scanning>(&r);
        for &m in MajorFunction::ALL {
            assert_eq!(s.has_post(m), r.get(m).is_some_and(|o| o.post), "{m:?}");
        }
        assert!(s.has_post(MajorFunction::VolumeDismount), "a pseudo-operation's bit");
        assert!(!s.has_post(MajorFunction::Unknown(0x50)));
        assert!(!s.instance_setup());
        assert!(!s.scans_data());
        let scanning = Registered::of::<Scanning>(&r.data_scan(true).instance_setup_callback(true));
        assert!(scanning.instance_setup() && scanning.scans_data());
        let plain = Registered::of::<Plain>(&r.data_scan(true).instance_setup_callback(true));
        assert!(!plain.scans_data(), "a filter type that does not scan never does");
        // The passthrough's constant, computed at compile time as DriverEntry does.
        const EVERY: Registered =
            Registered::of::<Plain>(&Registration::new().every_operation(true, true));
        assert!(EVERY.has_post(MajorFunction::Read) && !EVERY.has_post(MajorFunction::Shutdown));
        assert!(EVERY.instance_setup());
    }

    fn empty() -> InstanceTable {
        InstanceTable {
            entries: core::array::from_fn(|_| (AtomicUsize::new(0), AtomicUsize::new(0))),
            writers: SpinLock::new(()),
            more: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    #[test]
    fn instances_are_found_until_their_context_is_cleaned_up() {
        // The writers' spin lock is the simulator's KeAcquireSpinLockRaiseToDpc.
        let _machine = fsfilter_sim::Machine::new(fsfilter_sim::MachineConfig { seed: 1 });
        let t = empty();
        assert!(t.insert(0x1000, 0xA));
        assert!(t.insert(0x2000, 0xB));
        assert_eq!(t.get(0x1000), Some(0xA));
        assert_eq!(t.get(0x2000), Some(0xB));
        assert_eq!(t.get(0x3000), None);
        assert_eq!(t.get(0), None, "a free slot is never an instance");
        assert!(!t.insert(0, 0xC));
        // The race of attach_state: the instance's context replaced.
        assert!(t.insert(0x1000, 0xD));
        assert_eq!(t.get(0x1000), Some(0xD));
        t.remove_context(0xD);
        assert_eq!(t.get(0x1000), None);
        assert_eq!(t.get(0x2000), Some(0xB));
        // Full: the table grows by blocks, as many as it takes.
        for i in 0..3 * MAX_INSTANCES {
            assert!(t.insert(0x10_0000 + i * 16, 0x100 + i));
        }
        assert_eq!(t.get(0x10_0000 + 16), Some(0x101));
        let last = 3 * MAX_INSTANCES - 1;
        assert_eq!(t.get(0x10_0000 + last * 16), Some(0x100 + last), "found in a later block");
        let blocks = |t: &InstanceTable| core::iter::successors(Some(t), |b| b.next()).count();
        assert_eq!(blocks(&t), 4);
        // A slot freed in the first block is reused before any new block.
        t.remove_context(0x101);
        assert!(t.insert(0x9000, 0x9));
        assert_eq!((t.get(0x9000), blocks(&t)), (Some(0x9), 4));
        // Dropping the table frees its blocks (the simulator's pool accounting would report a
        // leak or a bad free at the machine's end otherwise).
        drop(t);
    }

    #[test]
    fn lookups_of_live_instances_are_undisturbed_while_other_slots_churn() {
        // Two processors look up live instances while a third sets up and cleans up others in
        // the slots between them (the protocol: an instance is only looked up while it is live).
        const LIVE: [usize; 3] = [0x1000, 0x1010, 0x1020];
        let t = std::sync::Arc::new(empty());
        let stop = std::sync::Arc::new(core::sync::atomic::AtomicBool::new(false));
        let ready = std::sync::Arc::new(std::sync::Barrier::new(3));
        let writer = {
            let (t, stop, ready) = (t.clone(), stop.clone(), ready.clone());
            std::thread::spawn(move || {
                let _machine = fsfilter_sim::Machine::new(fsfilter_sim::MachineConfig { seed: 1 });
                // Live instances interleaved with churning slots.
                for (n, instance) in LIVE.iter().enumerate() {
                    assert!(t.insert(0x9000 + n, 0x9001 + n));
                    assert!(t.insert(*instance, instance + 1));
                }
                for n in 0..LIVE.len() {
                    t.remove_context(0x9001 + n);
                }
                ready.wait();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let instance = 0x2000 + (n % 200) * 16;
                    assert!(t.insert(instance, instance + 1));
                    t.remove_context(instance + 1);
                    n += 1;
                }
                n
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, ready) = (t.clone(), ready.clone());
                std::thread::spawn(move || {
                    ready.wait();
                    for n in 0..300_000usize {
                        let instance = LIVE[n % LIVE.len()];
                        assert_eq!(t.get(instance), Some(instance + 1));
                    }
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let churned = writer.join().unwrap();
        assert!(churned > 0, "the slots churned while the lookups ran");
    }
}
