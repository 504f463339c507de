//! Opportunistic locks of the disk and CD file systems: the legacy oplocks (Level 1, Batch, Filter,
//! Level 2) a handle requests by FSCTL, their breaks and acknowledgements, as the file systems
//! get them from FsRtl's oplock package (`FsRtlOplockFsctrl`, `FsRtlCheckOplock`; the Windows
//! Research Kernel's `fsrtl/oplock.c`; Microsoft Learn, "Oplock semantics overview", "Granting
//! oplocks", "Breaking oplocks", "Acknowledging oplock breaks"). Every rule and its source is in
//! docs/simulator.md, "Oplocks".
//!
//! A granted request is pended by the file system and completes when the oplock breaks, with
//! `FILE_OPLOCK_BROKEN_TO_LEVEL_2` or `FILE_OPLOCK_BROKEN_TO_NONE` in its `Information`. An
//! operation that must wait for the acknowledgement of a break is pended too (as FastFat posts
//! it to its worker with `FatPrePostIrp`) and dispatched again from a worker thread once the
//! break is over: acknowledged, the owner's handle cleaned up, the request cancelled, or
//! [`ACK_TIMEOUT_MS`] gone by (the simulator's bound: FsRtl waits without one).

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, IRP};
use windows_sys::Win32::Foundation::NTSTATUS;

use super::{Call, VOLUME_NODE};
use crate::events::EventKind;
use crate::ids::ImageId;
use crate::irpx;
use crate::kernel::{self, Kernel};

/// `FILE_OPLOCK_BROKEN_TO_LEVEL_2`: a request's `Information` when its Level 1 or Batch oplock
/// breaks to Level 2.
pub const FILE_OPLOCK_BROKEN_TO_LEVEL_2: usize = 7;
/// `FILE_OPLOCK_BROKEN_TO_NONE`.
pub const FILE_OPLOCK_BROKEN_TO_NONE: usize = 8;
/// `FILE_OPBATCH_BREAK_UNDERWAY`: the information of a create the share check refused after the
/// check of a Batch or Filter oplock.
pub const FILE_OPBATCH_BREAK_UNDERWAY: usize = 9;
/// `STATUS_OPLOCK_BREAK_IN_PROGRESS`: a create with `FILE_COMPLETE_IF_OPLOCKED` that opened while
/// a break it started is unacknowledged (a success status).
pub const STATUS_OPLOCK_BREAK_IN_PROGRESS: Status = Status::from_bits(0x0000_0108);
/// `STATUS_INVALID_OPLOCK_PROTOCOL`: an acknowledgement with no break to acknowledge, or from a
/// handle that does not own the oplock.
pub const STATUS_INVALID_OPLOCK_PROTOCOL: Status = Status::from_bits(0xC000_00E3);
/// `FILE_COMPLETE_IF_OPLOCKED`.
pub const FILE_COMPLETE_IF_OPLOCKED: u32 = 0x0000_0100;
/// `FILE_RESERVE_OPFILTER`.
pub const FILE_RESERVE_OPFILTER: u32 = 0x0010_0000;
/// How long an operation waits for the acknowledgement of a break before the simulator takes the
/// break as acknowledged to none (simulated milliseconds; docs/simulator.md, "Oplocks").
pub const ACK_TIMEOUT_MS: u64 = 35_000;

/// The legacy oplock FSCTL codes (`CTL_CODE(FILE_DEVICE_FILE_SYSTEM, n, METHOD_BUFFERED,
/// FILE_ANY_ACCESS)`).
pub mod code {
    /// `FSCTL_REQUEST_OPLOCK_LEVEL_1`.
    pub const REQUEST_OPLOCK_LEVEL_1: u32 = 0x0009_0000;
    /// `FSCTL_REQUEST_OPLOCK_LEVEL_2`.
    pub const REQUEST_OPLOCK_LEVEL_2: u32 = 0x0009_0004;
    /// `FSCTL_REQUEST_BATCH_OPLOCK`.
    pub const REQUEST_BATCH_OPLOCK: u32 = 0x0009_0008;
    /// `FSCTL_OPLOCK_BREAK_ACKNOWLEDGE`.
    pub const OPLOCK_BREAK_ACKNOWLEDGE: u32 = 0x0009_000C;
    /// `FSCTL_OPBATCH_ACK_CLOSE_PENDING`.
    pub const OPBATCH_ACK_CLOSE_PENDING: u32 = 0x0009_0010;
    /// `FSCTL_OPLOCK_BREAK_NOTIFY`.
    pub const OPLOCK_BREAK_NOTIFY: u32 = 0x0009_0014;
    /// `FSCTL_OPLOCK_BREAK_ACK_NO_2`.
    pub const OPLOCK_BREAK_ACK_NO_2: u32 = 0x0009_0050;
    /// `FSCTL_REQUEST_FILTER_OPLOCK`.
    pub const REQUEST_FILTER_OPLOCK: u32 = 0x0009_005C;

    /// Whether `c` is one of the legacy oplock codes the file systems serve.
    pub const fn is_legacy(c: u32) -> bool {
        matches!(
            c,
            REQUEST_OPLOCK_LEVEL_1
                | REQUEST_OPLOCK_LEVEL_2
                | REQUEST_BATCH_OPLOCK
                | OPLOCK_BREAK_ACKNOWLEDGE
                | OPBATCH_ACK_CLOSE_PENDING
                | OPLOCK_BREAK_NOTIFY
                | OPLOCK_BREAK_ACK_NO_2
                | REQUEST_FILTER_OPLOCK
        )
    }
}

/// An exclusive oplock's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Level 1.
    Level1,
    /// Batch.
    Batch,
    /// Filter.
    Filter,
}

/// Where the break of an exclusive oplock stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breaking {
    /// Breaking to Level 2 (a Level 1 or Batch oplock).
    ToLevel2,
    /// Breaking to none.
    ToNone,
    /// Breaking to Level 2, then asked to break to none before the acknowledgement.
    ToLevel2ThenNone,
    /// A Batch or Filter owner acknowledged with `FSCTL_OPBATCH_ACK_CLOSE_PENDING`: the waiting
    /// operations wait for its handle's cleanup.
    ClosePending,
}

/// The oplock state of a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// No oplock.
    #[default]
    None,
    /// A Level 1, Batch or Filter oplock.
    Exclusive {
        /// Its kind.
        kind: Kind,
        /// The owning file object.
        fo: usize,
        /// The request IRP, pending until the break (None once completed).
        irp: Option<usize>,
        /// The break under way, if any.
        breaking: Option<Breaking>,
        /// The break's number ([`super::FsState::oplock_breaks`]), for its timeout.
        number: u64,
    },
    /// Level 2 oplocks: each holder's request IRP and file object.
    Level2(Vec<(usize, usize)>),
}

/// An operation waiting for a break to be acknowledged.
#[derive(Clone, Copy, Debug)]
pub struct Waiter {
    /// The IRP, pended by the file system.
    pub irp: usize,
    /// The device it was sent to.
    pub device: usize,
    /// The file system's image (the code that resumes it).
    pub image: Option<ImageId>,
    /// `FSCTL_OPLOCK_BREAK_NOTIFY`: completed with `STATUS_SUCCESS`, not dispatched again.
    pub notify: bool,
}

/// A stream's oplock: the state and the operations waiting for a break.
#[derive(Clone, Debug, Default)]
pub struct Oplock {
    /// The state.
    pub state: State,
    /// The operations waiting for the break's acknowledgement.
    pub waiting: Vec<Waiter>,
}

impl Oplock {
    /// `FsRtlOplockIsFastIoPossible`: not with Level 2 oplocks or during a break.
    pub fn fast_io_possible(&self) -> bool {
        match &self.state {
            State::None => true,
            State::Exclusive { breaking, .. } => breaking.is_none(),
            State::Level2(_) => false,
        }
    }

    /// `FsRtlCurrentBatchOplock`: a Batch or Filter oplock, broken or not.
    pub fn batch_or_filter(&self) -> bool {
        matches!(&self.state, State::Exclusive { kind: Kind::Batch | Kind::Filter, .. })
    }

    /// A Filter oplock, broken or not.
    pub fn is_filter(&self) -> bool {
        matches!(&self.state, State::Exclusive { kind: Kind::Filter, .. })
    }
}

/// What an operation asks of the oplock (`FsRtlCheckOplock`'s decision).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Nothing breaks.
    Nothing,
    /// Exclusive oplocks of other file objects break to Level 2 (Filter ones to none).
    Level2,
    /// Every oplock breaks to none.
    None,
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The operation goes on.
    Proceed,
    /// A create with `FILE_COMPLETE_IF_OPLOCKED`: it goes on, and completes with
    /// `STATUS_OPLOCK_BREAK_IN_PROGRESS`.
    BreakInProgress,
    /// The operation waits (pended; dispatched again when the break is over).
    Wait,
}

/// Work to do once the kernel is no longer borrowed.
#[derive(Debug)]
pub enum After {
    /// Completes an IRP the oplock held.
    Complete(usize, Status, usize),
    /// Dispatches a waiting operation again, from a worker thread.
    Resume(Waiter),
    /// Arms the acknowledgement timeout of break `number` of the FCB.
    Timer(usize, u64, Option<ImageId>),
}

/// Does the work a check, request, acknowledgement or cleanup left.
pub fn finish(after: Vec<After>) {
    for a in after {
        match a {
            After::Complete(irp, status, info) => {
                // SAFETY: an IRP the oplock held pending, taken out of its cancelable state.
                unsafe { irpx::complete(irp as *mut IRP, status, info) };
            }
            After::Resume(w) if w.notify => {
                // SAFETY: as above.
                unsafe { irpx::complete(w.irp as *mut IRP, Status::SUCCESS, 0) };
            }
            After::Resume(w) => {
                crate::sched::queue_work(
                    "oplock break over",
                    w.image,
                    Box::new(move || {
                        // SAFETY: the waiting IRP, pended in our dispatch routine and still
                        // ours, dispatched again as the file system's worker does.
                        let _ = unsafe {
                            super::fs_dispatch(w.device as *const DEVICE_OBJECT, w.irp as *mut IRP)
                        };
                    }),
                );
            }
            After::Timer(fcb, number, image) => {
                let seq = crate::sched::queue_work_after(
                    "oplock acknowledgement timeout",
                    image,
                    ACK_TIMEOUT_MS.saturating_mul(10_000),
                    Box::new(move || {
                        let after = kernel::with(|k| k.oplock_timed_out(fcb, number));
                        finish(after);
                    }),
                );
                // Taken back when the break ends first (`oplock_release`).
                kernel::with(|k| k.fs.oplock_timers.entry(fcb).or_default().push(seq));
            }
        }
    }
}

/// Checks an IRP in a file system's dispatch routine against its file's oplock: None when the
/// operation goes on, else the dispatch routine's answer (`STATUS_PENDING`: it waits).
pub fn check_irp(call: Call, want: impl FnOnce(&Oplock) -> Want) -> Option<NTSTATUS> {
    // Paging I/O never breaks an oplock: not even looked up (the paging path's cost).
    if call.irp_flags() & crate::nt::irp_flags::PAGING_IO != 0 {
        return None;
    }
    let fo = call.fo() as usize;
    let (check, after) = kernel::with(|k| {
        if k.fs.oplocks.is_empty() {
            return None;
        }
        let fcb = k.fcb_of(fo as *const _)?;
        let p = fcb.ptr();
        let o = k.fs.oplocks.get(&p)?;
        if fcb.node == VOLUME_NODE || o.state == State::None {
            return None;
        }
        let w = want(o);
        let mut after = Vec::new();
        let c = k.oplock_check(p, fo, call, w, false, &mut after);
        Some((c, after))
    })?;
    finish(after);
    (check == Check::Wait).then_some(crate::irpx::STATUS_PENDING)
}

/// What a create asks of an oplock (`FsRtlCheckOplock` on `IRP_MJ_CREATE`): nothing for an open
/// for attributes and synchronization only (unless it reserves a filter oplock) or a reading
/// open, sharing reads, of a file with a Filter oplock; to none for a supersede, an overwrite or
/// `FILE_RESERVE_OPFILTER`; to Level 2 otherwise.
pub fn create_want(o: &Oplock, access: u32, share: u32, disposition: u32, options: u32) -> Want {
    use crate::nt::{access as a, disposition as d};
    const ATTRIBUTES_ONLY: u32 =
        a::FILE_READ_ATTRIBUTES | a::FILE_WRITE_ATTRIBUTES | a::SYNCHRONIZE;
    // The access a create may ask for without breaking a Filter oplock (WRK's
    // FILTER_OPLOCK_VALID_FLAGS).
    const FILTER_COMPATIBLE: u32 = a::FILE_READ_ATTRIBUTES
        | a::FILE_WRITE_ATTRIBUTES
        | a::FILE_READ_DATA
        | a::FILE_READ_EA
        | a::FILE_EXECUTE
        | a::SYNCHRONIZE
        | a::READ_CONTROL;
    let reserve = options & FILE_RESERVE_OPFILTER != 0;
    if access & !ATTRIBUTES_ONLY == 0 && !reserve {
        return Want::Nothing;
    }
    if o.is_filter() && access & !FILTER_COMPATIBLE == 0 && share & crate::nt::share::READ != 0 {
        return Want::Nothing;
    }
    if reserve || matches!(disposition, d::SUPERSEDE | d::OVERWRITE | d::OVERWRITE_IF) {
        Want::None
    } else {
        Want::Level2
    }
}

impl Kernel {
    /// `FsRtlCheckOplock` for an operation of `fo` on FCB `fcb` (its `FsRtlOplockBreakToII` and
    /// `FsRtlOplockBreakToNone`). `complete_if_oplocked`: a create with
    /// `FILE_COMPLETE_IF_OPLOCKED`, which does not wait.
    pub(crate) fn oplock_check(
        &mut self,
        fcb: usize,
        fo: usize,
        call: Call,
        want: Want,
        complete_if_oplocked: bool,
        after: &mut Vec<After>,
    ) -> Check {
        if want == Want::Nothing {
            return Check::Proceed;
        }
        let number = self.fs.oplock_breaks + 1;
        let Some(o) = self.fs.oplocks.get_mut(&fcb) else { return Check::Proceed };
        let mut started = false;
        match &mut o.state {
            State::None => return Check::Proceed,
            State::Level2(holders) => {
                if want == Want::Level2 {
                    return Check::Proceed;
                }
                // Level 2 oplocks break to none at once: no acknowledgement.
                for (irp, _) in holders.drain(..) {
                    // SAFETY: a held oplock IRP.
                    unsafe { crate::cancel::clear_cancel_routine(irp as *mut IRP) };
                    after.push(After::Complete(irp, Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
                }
                o.state = State::None;
                return Check::Proceed;
            }
            State::Exclusive { kind, fo: owner, irp, breaking, number: n } => {
                if *owner == fo {
                    return Check::Proceed;
                }
                match (*breaking, want) {
                    (None, _) => {
                        let to_two =
                            want == Want::Level2 && matches!(kind, Kind::Level1 | Kind::Batch);
                        let (b, info) = if to_two {
                            (Breaking::ToLevel2, FILE_OPLOCK_BROKEN_TO_LEVEL_2)
                        } else {
                            (Breaking::ToNone, FILE_OPLOCK_BROKEN_TO_NONE)
                        };
                        if let Some(r) = irp.take() {
                            // SAFETY: the held request IRP.
                            unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                            after.push(After::Complete(r, Status::SUCCESS, info));
                        }
                        *breaking = Some(b);
                        *n = number;
                        started = true;
                    }
                    (Some(Breaking::ToLevel2), Want::None) => {
                        *breaking = Some(Breaking::ToLevel2ThenNone);
                    }
                    _ => {}
                }
            }
        }
        let (kind_name, number) = match &o.state {
            State::Exclusive { kind, number, .. } => (format!("{kind:?}"), *number),
            _ => (String::new(), 0),
        };
        if started {
            self.fs.oplock_breaks = number;
            let to = if want == Want::Level2 { "Level 2" } else { "none" };
            self.oplock_event("oplock_break", format!("{kind_name} oplock breaking (to {to})"));
        }
        if complete_if_oplocked {
            return Check::BreakInProgress;
        }
        // The operation waits: pended, cancelable (FsRtlWaitOnIrp's FsRtlCancelWaitIrp). Marked
        // pending first: one cancelled already is completed after the dispatch routine's
        // STATUS_PENDING.
        let irp = call.irp;
        // SAFETY: the live IRP in our dispatch routine.
        unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
        let routine = Some(waiting_cancelled as _);
        // SAFETY: as above.
        if !unsafe { crate::cancel::make_cancelable(irp, routine) } {
            after.push(After::Complete(irp as usize, Status::CANCELLED, 0));
            return Check::Wait;
        }
        let image = self.current_image();
        let w = Waiter { irp: irp as usize, device: call.device as usize, image, notify: false };
        if let Some(o) = self.fs.oplocks.get_mut(&fcb) {
            o.waiting.push(w);
        }
        after.push(After::Timer(fcb, number, image));
        Check::Wait
    }

    /// Logs an oplock event of the file systems.
    fn oplock_event(&mut self, what: &'static str, detail: String) {
        self.log(EventKind::System { what, driver: None, volume: None, detail });
    }

    /// Ends an exclusive oplock's break: no oplock, and the waiting operations go on.
    fn oplock_release(&mut self, fcb: usize, after: &mut Vec<After>) {
        // The bound's timers of the break go with it: a timer left to run would do nothing but
        // move the clock 35 s on (until December 7 it did, at the lab's next settle).
        for seq in self.fs.oplock_timers.remove(&fcb).unwrap_or_default() {
            self.sched.cancel_at(seq);
        }
        let Some(o) = self.fs.oplocks.get_mut(&fcb) else { return };
        o.state = State::None;
        for w in o.waiting.drain(..) {
            // SAFETY: a waiting IRP, held until now.
            unsafe { crate::cancel::clear_cancel_routine(w.irp as *mut IRP) };
            after.push(After::Resume(w));
        }
    }

    /// The acknowledgement timeout of break `number`: if that break is still unacknowledged, the
    /// simulator takes it as acknowledged to none.
    fn oplock_timed_out(&mut self, fcb: usize, number: u64) -> Vec<After> {
        let mut after = Vec::new();
        let pending = self.fs.oplocks.get(&fcb).is_some_and(|o| {
            matches!(o.state, State::Exclusive { breaking: Some(_), number: n, .. }
                if n == number)
        });
        if pending {
            self.oplock_release(fcb, &mut after);
            let ms = ACK_TIMEOUT_MS;
            self.oplock_event(
                "oplock_break_timed_out",
                format!("no acknowledgement in {ms} ms: taken as acknowledged to none"),
            );
        }
        after
    }

    /// An oplock FSCTL on a file (`FsRtlOplockFsctrl`): the status to complete with now, or
    /// None when the request is pended (granted, or waiting for a break to end).
    pub(crate) fn oplock_fsctl(
        &mut self,
        call: Call,
        code: u32,
        after: &mut Vec<After>,
    ) -> Option<(Status, usize)> {
        let fo = call.fo();
        let Some(fcb) = self.fcb_of(fo) else { return Some((Status::INVALID_PARAMETER, 0)) };
        let p = fcb.ptr();
        let (mount, node, handles, locked) =
            (fcb.mount, fcb.node, fcb.handles, !fcb.locks.is_empty());
        // FastFat and NTFS grant oplocks on files only.
        if node == VOLUME_NODE {
            return Some((Status::INVALID_PARAMETER, 0));
        }
        let volume = self.fs.mounts[mount as usize].volume;
        if self.volumes.list[volume.index()].media.node(node).is_dir() {
            return Some((Status::INVALID_PARAMETER, 0));
        }
        let fo = fo as usize;
        let irp_flags = call.irp_flags();
        // SAFETY: the live IRP's file object.
        let fo_flags = unsafe { (*call.fo()).Flags };
        // WRK's IoIsOperationSynchronous (the file object's FO_SYNCHRONOUS_IO, the IRP's
        // IRP_SYNCHRONOUS_API), the copy-back flag and a handle already cleaned up refuse.
        let refused = fo_flags & crate::nt::fo::SYNCHRONOUS_IO != 0
            || irp_flags
                & (crate::nt::irp_flags::SYNCHRONOUS_API | crate::nt::irp_flags::INPUT_OPERATION)
                != 0
            || fo_flags & crate::nt::fo::CLEANUP_COMPLETE != 0;
        let irp = call.irp as usize;
        // The stream's oplock, made at its first request (kept until the FCB goes).
        let o = self.fs.oplocks.entry(p).or_default();
        let kind = match code {
            code::REQUEST_OPLOCK_LEVEL_1 => Some(Kind::Level1),
            code::REQUEST_BATCH_OPLOCK => Some(Kind::Batch),
            code::REQUEST_FILTER_OPLOCK => Some(Kind::Filter),
            _ => None,
        };
        if let Some(kind) = kind {
            // The open count is the file's handles: this one only.
            if handles != 1 || refused {
                return Some((Status::OPLOCK_NOT_GRANTED, 0));
            }
            match &mut o.state {
                State::None => {}
                // Its own Level 2 oplock (the only handle) gives way.
                State::Level2(holders) => {
                    for (r, _) in holders.drain(..) {
                        // SAFETY: a held oplock IRP.
                        unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                        after.push(After::Complete(r, Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
                    }
                }
                State::Exclusive { .. } => return Some((Status::OPLOCK_NOT_GRANTED, 0)),
            }
            o.state = State::Exclusive { kind, fo, irp: Some(irp), breaking: None, number: 0 };
            if !hold(call.irp, request_cancelled) {
                o.state = State::None;
                return Some((Status::CANCELLED, 0));
            }
            let detail = format!("{kind:?} oplock granted");
            self.oplock_event("oplock_granted", detail);
            return None;
        }
        match code {
            code::REQUEST_OPLOCK_LEVEL_2 => {
                // The open count of a Level 2 request is whether the file has byte-range locks.
                if locked || refused {
                    return Some((Status::OPLOCK_NOT_GRANTED, 0));
                }
                match &mut o.state {
                    State::None => o.state = State::Level2(vec![(irp, fo)]),
                    State::Level2(holders) => holders.push((irp, fo)),
                    State::Exclusive { .. } => return Some((Status::OPLOCK_NOT_GRANTED, 0)),
                }
                if !hold(call.irp, request_cancelled) {
                    self.oplock_drop_level2(p, irp);
                    return Some((Status::CANCELLED, 0));
                }
                self.oplock_event("oplock_granted", "Level 2 oplock granted".into());
                None
            }
            code::OPLOCK_BREAK_ACKNOWLEDGE | code::OPLOCK_BREAK_ACK_NO_2 => {
                let State::Exclusive { kind, fo: owner, breaking, .. } = o.state else {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                };
                if owner != fo {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                }
                let level2 = match breaking {
                    Some(Breaking::ToLevel2) => code == code::OPLOCK_BREAK_ACKNOWLEDGE,
                    Some(Breaking::ToNone | Breaking::ToLevel2ThenNone) => false,
                    _ => return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0)),
                };
                // Broken to Level 2 then to none before this: the acknowledgement says so.
                let info = if breaking == Some(Breaking::ToLevel2ThenNone) {
                    FILE_OPLOCK_BROKEN_TO_NONE
                } else {
                    0
                };
                self.oplock_release(p, after);
                if !level2 {
                    self.oplock_event("oplock_acknowledged", format!("{kind:?}: broken to none"));
                    return Some((Status::SUCCESS, info));
                }
                // The acknowledgement becomes the Level 2 oplock's request, pended until that
                // breaks (FltOplockFsctrl answers FLT_PREOP_PENDING for it).
                if let Some(o) = self.fs.oplocks.get_mut(&p) {
                    o.state = State::Level2(vec![(irp, fo)]);
                }
                if !hold(call.irp, request_cancelled) {
                    self.oplock_drop_level2(p, irp);
                    return Some((Status::CANCELLED, 0));
                }
                self.oplock_event("oplock_acknowledged", format!("{kind:?}: Level 2 granted"));
                None
            }
            code::OPBATCH_ACK_CLOSE_PENDING => {
                let State::Exclusive { kind, fo: owner, breaking, .. } = o.state else {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                };
                let under_way = matches!(
                    breaking,
                    Some(Breaking::ToLevel2 | Breaking::ToNone | Breaking::ToLevel2ThenNone)
                );
                if owner != fo || !under_way {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                }
                if kind == Kind::Level1 {
                    self.oplock_release(p, after);
                    self.oplock_event("oplock_acknowledged", "Level1: broken to none".into());
                } else {
                    if let State::Exclusive { breaking, .. } = &mut o.state {
                        *breaking = Some(Breaking::ClosePending);
                    }
                    self.oplock_event("oplock_acknowledged", format!("{kind:?}: close pending"));
                }
                Some((Status::SUCCESS, 0))
            }
            code::OPLOCK_BREAK_NOTIFY => {
                let number = match o.state {
                    State::Exclusive { breaking: Some(_), number, .. } => number,
                    _ => return Some((Status::SUCCESS, 0)),
                };
                if !hold(call.irp, waiting_cancelled) {
                    return Some((Status::CANCELLED, 0));
                }
                let image = self.current_image();
                let device = call.device as usize;
                if let Some(o) = self.fs.oplocks.get_mut(&p) {
                    o.waiting.push(Waiter { irp, device, image, notify: true });
                }
                // It waits as the others do: no longer than the bound (a break started by a
                // FILE_COMPLETE_IF_OPLOCKED open may have no other waiter to arm it).
                after.push(After::Timer(p, number, image));
                None
            }
            _ => Some((Status::INVALID_DEVICE_REQUEST, 0)),
        }
    }

    fn oplock_drop_level2(&mut self, fcb: usize, irp: usize) {
        if let Some(o) = self.fs.oplocks.get_mut(&fcb) {
            if let State::Level2(holders) = &mut o.state {
                holders.retain(|(r, _)| *r != irp);
                if holders.is_empty() {
                    o.state = State::None;
                }
            }
        }
    }

    /// `FsRtlOplockCleanup`: the handle of `fo` is gone: its Level 2 oplock ends (its request
    /// completes, broken to none); its exclusive oplock ends (its request completes, broken to
    /// none, if no break had completed it) and the operations waiting for it go on.
    pub(crate) fn oplock_cleanup(&mut self, fcb: usize, fo: usize, after: &mut Vec<After>) {
        let Some(o) = self.fs.oplocks.get_mut(&fcb) else { return };
        match &mut o.state {
            State::None => {}
            State::Level2(holders) => {
                holders.retain(|&(irp, owner)| {
                    if owner != fo {
                        return true;
                    }
                    // SAFETY: a held oplock IRP.
                    unsafe { crate::cancel::clear_cancel_routine(irp as *mut IRP) };
                    after.push(After::Complete(irp, Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
                    false
                });
                if holders.is_empty() {
                    o.state = State::None;
                }
            }
            State::Exclusive { fo: owner, irp, .. } => {
                if *owner != fo {
                    return;
                }
                if let Some(r) = irp.take() {
                    // SAFETY: the held request IRP.
                    unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                    after.push(After::Complete(r, Status::SUCCESS, FILE_OPLOCK_BROKEN_TO_NONE));
                }
                o.state = State::None;
                self.oplock_release(fcb, after);
                self.oplock_event("oplock_released", "the owner's handle was cleaned up".into());
            }
        }
    }

    /// A held oplock request was cancelled (`FsRtlCancelExclusiveIrp`, `FsRtlCancelOplockIIIrp`):
    /// its oplock ends, and operations waiting for an exclusive one go on.
    fn oplock_request_cancelled(&mut self, irp: usize) -> Vec<After> {
        let mut after = Vec::new();
        let found = self.fs.oplocks.iter().find_map(|(p, o)| match &o.state {
            State::Exclusive { irp: Some(r), .. } if *r == irp => Some((*p, true)),
            State::Level2(h) if h.iter().any(|(r, _)| *r == irp) => Some((*p, false)),
            _ => None,
        });
        match found {
            Some((p, true)) => self.oplock_release(p, &mut after),
            Some((p, false)) => self.oplock_drop_level2(p, irp),
            None => {}
        }
        after
    }

    /// A waiting operation was cancelled: it stops waiting.
    fn oplock_wait_cancelled(&mut self, irp: usize) {
        for o in self.fs.oplocks.values_mut() {
            o.waiting.retain(|w| w.irp != irp);
        }
    }
}

/// Marks an oplock IRP pending and cancelable; false when it was cancelled already.
fn hold(irp: *mut IRP, routine: unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP)) -> bool {
    // SAFETY: the live IRP in our dispatch routine.
    if !unsafe { crate::cancel::make_cancelable(irp, Some(routine)) } {
        return false;
    }
    // SAFETY: as above.
    unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
    true
}

/// The cancel routine of a held oplock request: the oplock ends; completes with
/// `STATUS_CANCELLED`.
unsafe extern "system" fn request_cancelled(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    let after = std::cell::RefCell::new(Vec::new());
    // SAFETY: the IRP being cancelled, as IoCancelIrp passes it.
    unsafe {
        crate::cancel::complete_cancelled(irp, |k| {
            *after.borrow_mut() = k.oplock_request_cancelled(irp as usize);
        })
    };
    finish(after.into_inner());
}

/// The cancel routine of an operation waiting for a break: it stops waiting, completed with
/// `STATUS_CANCELLED`.
unsafe extern "system" fn waiting_cancelled(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: the IRP being cancelled, as IoCancelIrp passes it.
    unsafe { crate::cancel::complete_cancelled(irp, |k| k.oplock_wait_cancelled(irp as usize)) };
}
