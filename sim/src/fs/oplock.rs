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
use fsfilter_kernel::params;
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
    /// `FSCTL_REQUEST_OPLOCK` (function 144): the Windows 7 oplocks, requested and acknowledged
    /// with a `REQUEST_OPLOCK_INPUT_BUFFER` and answered with a `REQUEST_OPLOCK_OUTPUT_BUFFER`.
    pub const REQUEST_OPLOCK: u32 = 0x0009_0240;

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

    /// Whether `c` is an oplock code the file systems serve: a legacy one or
    /// `FSCTL_REQUEST_OPLOCK`.
    pub const fn is_oplock(c: u32) -> bool {
        is_legacy(c) || c == REQUEST_OPLOCK
    }
}

/// `OPLOCK_LEVEL_CACHE_*`: the caching a Windows 7 oplock grants (winioctl.h).
pub mod level {
    /// `OPLOCK_LEVEL_CACHE_READ`.
    pub const READ: u32 = 1;
    /// `OPLOCK_LEVEL_CACHE_HANDLE`.
    pub const HANDLE: u32 = 2;
    /// `OPLOCK_LEVEL_CACHE_WRITE`.
    pub const WRITE: u32 = 4;
    /// Read (R).
    pub const R: u32 = READ;
    /// Read-Write (RW).
    pub const RW: u32 = READ | WRITE;
    /// Read-Handle (RH).
    pub const RH: u32 = READ | HANDLE;
    /// Read-Write-Handle (RWH).
    pub const RWH: u32 = READ | WRITE | HANDLE;

    /// The four valid requested levels (`REQUEST_OPLOCK_INPUT_BUFFER`).
    pub const fn is_valid(l: u32) -> bool {
        matches!(l, R | RW | RH | RWH)
    }

    /// A level's short name (R, RH, RW, RWH; `none` for 0).
    pub fn name(l: u32) -> String {
        if l == 0 {
            return "none".into();
        }
        let mut s = String::new();
        for (bit, c) in [(READ, 'R'), (WRITE, 'W'), (HANDLE, 'H')] {
            if l & bit != 0 {
                s.push(c);
            }
        }
        s
    }
}

/// `REQUEST_OPLOCK_INPUT_FLAG_*`.
pub mod input_flag {
    /// `REQUEST_OPLOCK_INPUT_FLAG_REQUEST`.
    pub const REQUEST: u32 = 1;
    /// `REQUEST_OPLOCK_INPUT_FLAG_ACK`.
    pub const ACK: u32 = 2;
    /// `REQUEST_OPLOCK_INPUT_FLAG_COMPLETE_ACK_ON_CLOSE`.
    pub const COMPLETE_ACK_ON_CLOSE: u32 = 4;
}

/// `REQUEST_OPLOCK_OUTPUT_FLAG_*`.
pub mod output_flag {
    /// `REQUEST_OPLOCK_OUTPUT_FLAG_ACK_REQUIRED`.
    pub const ACK_REQUIRED: u32 = 1;
    /// `REQUEST_OPLOCK_OUTPUT_FLAG_MODES_PROVIDED`.
    pub const MODES_PROVIDED: u32 = 2;
}

/// `REQUEST_OPLOCK_CURRENT_VERSION`.
pub const REQUEST_OPLOCK_VERSION: u16 = 1;
/// `sizeof(REQUEST_OPLOCK_INPUT_BUFFER)`: two WORDs and two DWORDs.
pub const INPUT_LEN: usize = 12;
/// `sizeof(REQUEST_OPLOCK_OUTPUT_BUFFER)`: two WORDs, four DWORDs and a WORD, padded to 4.
pub const OUTPUT_LEN: usize = 24;

/// A `REQUEST_OPLOCK_INPUT_BUFFER` asking `level` with `flags` (version 1, its own length).
pub fn input(level: u32, flags: u32) -> [u8; INPUT_LEN] {
    let mut b = [0u8; INPUT_LEN];
    b[0..2].copy_from_slice(&REQUEST_OPLOCK_VERSION.to_le_bytes());
    b[2..4].copy_from_slice(&(INPUT_LEN as u16).to_le_bytes());
    b[4..8].copy_from_slice(&level.to_le_bytes());
    b[8..12].copy_from_slice(&flags.to_le_bytes());
    b
}

/// What a `REQUEST_OPLOCK_OUTPUT_BUFFER` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// `OriginalOplockLevel`.
    pub original: u32,
    /// `NewOplockLevel`.
    pub new: u32,
    /// `Flags` (`output_flag`).
    pub flags: u32,
    /// `AccessMode` (with `MODES_PROVIDED`).
    pub access: u32,
    /// `ShareMode` (with `MODES_PROVIDED`).
    pub share: u16,
}

impl Output {
    /// The buffer's bytes.
    pub fn bytes(&self) -> [u8; OUTPUT_LEN] {
        let mut b = [0u8; OUTPUT_LEN];
        b[0..2].copy_from_slice(&REQUEST_OPLOCK_VERSION.to_le_bytes());
        b[2..4].copy_from_slice(&(OUTPUT_LEN as u16).to_le_bytes());
        b[4..8].copy_from_slice(&self.original.to_le_bytes());
        b[8..12].copy_from_slice(&self.new.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..20].copy_from_slice(&self.access.to_le_bytes());
        b[20..22].copy_from_slice(&self.share.to_le_bytes());
        b
    }

    /// How the `oplock_output` event says it.
    pub fn describe(&self) -> String {
        let mut s = format!("{} -> {}", level::name(self.original), level::name(self.new));
        if self.flags & output_flag::ACK_REQUIRED != 0 {
            s.push_str(", acknowledgement required");
        }
        if self.flags & output_flag::MODES_PROVIDED != 0 {
            s.push_str(&format!(", modes {:#x}/{:#x}", self.access, self.share));
        }
        s
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
    /// Read-Write, a Windows 7 oplock (`FSCTL_REQUEST_OPLOCK`).
    Rw,
    /// Read-Write-Handle, a Windows 7 oplock.
    Rwh,
}

impl Kind {
    /// A Windows 7 kind: its level, else None.
    pub const fn win7_level(self) -> Option<u32> {
        match self {
            Kind::Rw => Some(level::RW),
            Kind::Rwh => Some(level::RWH),
            _ => None,
        }
    }
}

/// A Windows 7 shared oplock (R or RH) one handle holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shared {
    /// The request IRP, pending until the break (None once completed).
    pub irp: Option<usize>,
    /// The holder's file object.
    pub fo: usize,
    /// Its level (`level::R` or `level::RH`).
    pub level: u32,
    /// A break waiting for its acknowledgement: the level it breaks to.
    pub breaking: Option<u32>,
    /// The break's number, for its timeout.
    pub number: u64,
}

impl Shared {
    /// A shared oplock of `level` just granted to `fo`, its request `irp` pending.
    fn granted(irp: usize, fo: usize, level: u32) -> Shared {
        Shared { irp: Some(irp), fo, level, breaking: None, number: 0 }
    }
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
    /// An RWH oplock losing its handle caching (to RW): a create the share access refuses, a
    /// rename, link, short-name set or delete of another handle.
    ToNoHandle,
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
    /// The Windows 7 shared oplocks (R, RH), beside the state (R may coexist with Level 2).
    pub shared: Vec<Shared>,
}

impl Oplock {
    /// No oplock at all.
    pub fn idle(&self) -> bool {
        self.state == State::None && self.shared.is_empty()
    }

    /// `FsRtlOplockIsFastIoPossible`: not with Level 2 oplocks or during a break.
    pub fn fast_io_possible(&self) -> bool {
        if !self.shared.is_empty() {
            return false;
        }
        match &self.state {
            State::None => true,
            State::Exclusive { breaking, .. } => breaking.is_none(),
            State::Level2(_) => false,
        }
    }

    /// `FsRtlCurrentBatchOplock`: a Batch or Filter oplock, broken or not (checked before the
    /// share access; an RWH oplock is checked after it, with the others: the `IRP_MJ_CREATE`
    /// page).
    pub fn batch_or_filter(&self) -> bool {
        matches!(&self.state, State::Exclusive { kind: Kind::Batch | Kind::Filter, .. })
    }

    /// Whether another file object than `fo` holds an RH or RWH oplock (handle caching).
    pub fn handle_cached_by_other(&self, fo: usize) -> bool {
        let rwh = matches!(self.state, State::Exclusive { kind: Kind::Rwh, fo: o, .. } if o != fo);
        rwh || self.shared.iter().any(|h| h.fo != fo && h.level & level::HANDLE != 0)
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
    /// A create that the share access refuses: RH oplocks of other file objects lose their handle
    /// caching (to R), saying the create's access and share modes.
    Handle {
        /// The create's desired access.
        access: u32,
        /// The create's share access.
        share: u32,
    },
    /// A rename, link or short-name set, or a delete (`FileDispositionInformation` with
    /// `DeleteFile`): RH oplocks of other file objects lose their handle caching (to R), and the
    /// operation waits for the acknowledgement (Learn, "Checking the oplock state of an
    /// IRP_MJ_SET_INFORMATION operation"). Nothing else breaks.
    HandleCaching,
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
        if fcb.node == VOLUME_NODE || o.idle() {
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
        // The Windows 7 shared oplocks first: R and RH cannot be held with an exclusive oplock.
        if let Some(n) = self.oplock_check_shared(fcb, fo, want, number, after) {
            if complete_if_oplocked {
                return Check::BreakInProgress;
            }
            return self.oplock_wait(fcb, call, n, after);
        }
        let Some(o) = self.fs.oplocks.get_mut(&fcb) else { return Check::Proceed };
        // Handle caching lost: an RWH oplock breaks to RW (a create the share access refuses
        // saying its modes); no other exclusive oplock caches handles (a create's share refusal
        // is then checked as an open, a rename's or a delete's not at all).
        let rwh = matches!(o.state, State::Exclusive { kind: Kind::Rwh, .. });
        let modes = match want {
            Want::Handle { access, share } => Some((access, share)),
            _ => None,
        };
        let want = match want {
            Want::Handle { .. } | Want::HandleCaching if rwh => Want::HandleCaching,
            Want::Handle { .. } => Want::Level2,
            Want::HandleCaching => return Check::Proceed,
            w => w,
        };
        let mut started = false;
        let mut outputs = Vec::new();
        // A byte-range lock breaks an RWH oplock to none (acknowledgement required) and goes on
        // without waiting for the acknowledgement (Learn, "Checking the oplock state of an
        // IRP_MJ_LOCK_CONTROL operation"; Level 1, Batch and RW wait). Until December 7 it waited.
        let lock = call.sl().MajorFunction == crate::nt::mj::LOCK_CONTROL;
        let no_wait = lock && matches!(o.state, State::Exclusive { kind: Kind::Rwh, .. });
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
                        let to_two = want == Want::Level2
                            && matches!(kind, Kind::Level1 | Kind::Batch | Kind::Rw | Kind::Rwh);
                        let (b, info) = if want == Want::HandleCaching {
                            (Breaking::ToNoHandle, FILE_OPLOCK_BROKEN_TO_LEVEL_2)
                        } else if to_two {
                            (Breaking::ToLevel2, FILE_OPLOCK_BROKEN_TO_LEVEL_2)
                        } else {
                            (Breaking::ToNone, FILE_OPLOCK_BROKEN_TO_NONE)
                        };
                        if let Some(r) = irp.take() {
                            // SAFETY: the held request IRP.
                            unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                            // A Windows 7 oplock's request says the new level in its output
                            // buffer: RW breaks to R, RWH to RH ("Breaking oplocks").
                            let info = match kind.win7_level() {
                                Some(l) => {
                                    let new = win7_target(l, b);
                                    let mut out = Output {
                                        original: l,
                                        new,
                                        flags: output_flag::ACK_REQUIRED,
                                        ..Output::default()
                                    };
                                    if let (Breaking::ToNoHandle, Some((access, share))) =
                                        (b, modes)
                                    {
                                        out.flags |= output_flag::MODES_PROVIDED;
                                        (out.access, out.share) = (access, share as u16);
                                    }
                                    outputs.push(out);
                                    write_output(r, &out)
                                }
                                None => info,
                            };
                            after.push(After::Complete(r, Status::SUCCESS, info));
                        }
                        *breaking = Some(b);
                        *n = number;
                        started = true;
                    }
                    (Some(Breaking::ToLevel2 | Breaking::ToNoHandle), Want::None) => {
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
            let to = match want {
                Want::Level2 => "Level 2",
                Want::HandleCaching => "RW",
                _ => "none",
            };
            self.oplock_event("oplock_break", format!("{kind_name} oplock breaking (to {to})"));
        }
        for out in outputs {
            self.oplock_event("oplock_output", out.describe());
        }
        if complete_if_oplocked {
            return Check::BreakInProgress;
        }
        if no_wait {
            return Check::Proceed;
        }
        self.oplock_wait(fcb, call, number, after)
    }

    /// The Windows 7 shared oplocks (R, RH) of other file objects than `fo` against an operation:
    /// R breaks to none at once, without acknowledgement (as Level 2); RH breaks to none (a
    /// write, a lock, a truncation, an overwrite) with an acknowledgement required that nothing
    /// waits for, or to R (a create the share access refuses) with one the operation waits for.
    /// Some(break number) when the operation must wait.
    fn oplock_check_shared(
        &mut self,
        fcb: usize,
        fo: usize,
        want: Want,
        number: u64,
        after: &mut Vec<After>,
    ) -> Option<u64> {
        let o = self.fs.oplocks.get_mut(&fcb)?;
        if o.shared.is_empty() || matches!(want, Want::Nothing | Want::Level2) {
            return None;
        }
        let mut wait = None;
        let mut started = false;
        let mut outputs = Vec::new();
        let mut kept = Vec::with_capacity(o.shared.len());
        for mut h in o.shared.drain(..) {
            if h.fo == fo {
                kept.push(h);
                continue;
            }
            let rh = h.level & level::HANDLE != 0;
            let (new, flags, access, share) = match want {
                Want::None => {
                    if h.breaking.is_some() {
                        h.breaking = Some(0);
                        kept.push(h);
                        continue;
                    }
                    (0, if rh { output_flag::ACK_REQUIRED } else { 0 }, 0, 0)
                }
                Want::Handle { .. } | Want::HandleCaching if rh => {
                    // A break under way the opener waits for too joins this round's number, so
                    // that the one bound armed for the opener ends it with the others (until
                    // December 7 it kept its own number, which no timer of the opener's matched,
                    // and the opener could wait forever).
                    wait = Some(number);
                    if h.breaking.is_some() {
                        h.number = number;
                        kept.push(h);
                        continue;
                    }
                    match want {
                        // A create's loss of handle caching says the create's modes.
                        Want::Handle { access, share } => {
                            let flags = output_flag::ACK_REQUIRED | output_flag::MODES_PROVIDED;
                            (level::R, flags, access, share)
                        }
                        _ => (level::R, output_flag::ACK_REQUIRED, 0, 0),
                    }
                }
                _ => {
                    kept.push(h);
                    continue;
                }
            };
            let out = Output { original: h.level, new, flags, access, share: share as u16 };
            if let Some(r) = h.irp.take() {
                // SAFETY: a held oplock IRP.
                unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                let info = write_output(r, &out);
                after.push(After::Complete(r, Status::SUCCESS, info));
            }
            outputs.push(out);
            started = true;
            if flags & output_flag::ACK_REQUIRED != 0 {
                h.breaking = Some(new);
                h.number = number;
                kept.push(h);
            }
        }
        o.shared = kept;
        if wait.is_some() {
            self.fs.oplock_breaks = number;
        }
        if started {
            self.fs.oplock_breaks = number;
            for out in outputs {
                let detail = format!("{} oplock breaking", level::name(out.original));
                self.oplock_event("oplock_break", detail);
                self.oplock_event("oplock_output", out.describe());
            }
        }
        wait
    }

    /// The operation waits for break `number`: pended, cancelable (FsRtlWaitOnIrp's
    /// FsRtlCancelWaitIrp), dispatched again when the break is over.
    fn oplock_wait(
        &mut self,
        fcb: usize,
        call: Call,
        number: u64,
        after: &mut Vec<After>,
    ) -> Check {
        // Marked pending first: one cancelled already is completed after the dispatch routine's
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

    /// The Windows 7 shared breaks may be over: when no RH break waits for its acknowledgement
    /// and no exclusive break is under way, the waiting operations go on.
    fn oplock_shared_settle(&mut self, fcb: usize, after: &mut Vec<After>) {
        let Some(o) = self.fs.oplocks.get(&fcb) else { return };
        let exclusive = matches!(o.state, State::Exclusive { breaking: Some(_), .. });
        if exclusive || o.shared.iter().any(|h| h.breaking.is_some()) {
            return;
        }
        // No break left: the bound's timers go, whether or not an operation still waits (one
        // cancelled meanwhile left its timer; until December 7 it ran and moved the clock 35 s).
        for seq in self.fs.oplock_timers.remove(&fcb).unwrap_or_default() {
            self.sched.cancel_at(seq);
        }
        if let Some(o) = self.fs.oplocks.get_mut(&fcb) {
            for w in o.waiting.drain(..) {
                // SAFETY: a waiting IRP, held until now.
                unsafe { crate::cancel::clear_cancel_routine(w.irp as *mut IRP) };
                after.push(After::Resume(w));
            }
        }
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
        // An RH break nobody acknowledged: its oplock goes (taken as acknowledged to none).
        let shared = self.fs.oplocks.get_mut(&fcb).is_some_and(|o| {
            let before = o.shared.len();
            o.shared.retain(|h| !(h.breaking.is_some() && h.number == number));
            o.shared.len() != before
        });
        if pending {
            self.oplock_release(fcb, &mut after);
        } else if shared {
            self.oplock_shared_settle(fcb, &mut after);
        }
        if pending || shared {
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
        if code == code::REQUEST_OPLOCK {
            // The copy-back flag is set by every request with an output buffer: not a refusal.
            let refused = fo_flags & crate::nt::fo::SYNCHRONOUS_IO != 0
                || irp_flags & crate::nt::irp_flags::SYNCHRONOUS_API != 0
                || fo_flags & crate::nt::fo::CLEANUP_COMPLETE != 0;
            return self.oplock_request_win7(call, p, (handles, locked, refused), after);
        }
        // The stream's oplock, made at its first request (kept until the FCB goes).
        let o = self.fs.oplocks.entry(p).or_default();
        let kind = match code {
            code::REQUEST_OPLOCK_LEVEL_1 => Some(Kind::Level1),
            code::REQUEST_BATCH_OPLOCK => Some(Kind::Batch),
            code::REQUEST_FILTER_OPLOCK => Some(Kind::Filter),
            _ => None,
        };
        if let Some(kind) = kind {
            // The open count is the file's handles: this one only. A Windows 7 shared oplock,
            // even this handle's, is not given up for a legacy one (our choice).
            if handles != 1 || refused || !o.shared.is_empty() {
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
                // The open count of a Level 2 request is whether the file has byte-range locks. A
                // file may not have Read-Handle and Level 2 oplocks at once ("Types of
                // opportunistic locks").
                let rh = o.shared.iter().any(|h| h.level & level::HANDLE != 0);
                if locked || refused || rh {
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
                // A Windows 7 oplock is acknowledged by FSCTL_REQUEST_OPLOCK only (our choice).
                if owner != fo || kind.win7_level().is_some() {
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
                if owner != fo || !under_way || kind.win7_level().is_some() {
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

    /// `FSCTL_REQUEST_OPLOCK` (`FsRtlOplockFsctrlEx`): a request of a Windows 7 oplock or the
    /// acknowledgement of its break. `open`: the file's handles, whether it has byte-range
    /// locks, and whether the handle or request is synchronous (or cleaned up).
    fn oplock_request_win7(
        &mut self,
        call: Call,
        fcb: usize,
        open: (u32, bool, bool),
        after: &mut Vec<After>,
    ) -> Option<(Status, usize)> {
        let (handles, locked, refused) = open;
        let sl = call.sl();
        // SAFETY: `FileSystemControl` is the member in use.
        let c = unsafe { params::io::<params::IoFileSystemControl>(&sl.Parameters) };
        let (in_len, out_len) = (c.InputBufferLength as usize, c.OutputBufferLength as usize);
        // The file systems check both lengths before FsRtl (FastFat's FatOplockRequest).
        if in_len < INPUT_LEN || out_len < OUTPUT_LEN {
            return Some((Status::BUFFER_TOO_SMALL, 0));
        }
        // SAFETY: the live IRP; a buffered request with an input has a system buffer of at least
        // the input's length.
        let buf = unsafe { crate::irpx::system_buffer(call.irp) }.cast_const();
        if buf.is_null() {
            return Some((Status::INVALID_PARAMETER, 0));
        }
        let mut b = [0u8; INPUT_LEN];
        // SAFETY: as above, INPUT_LEN <= in_len bytes.
        unsafe { std::ptr::copy_nonoverlapping(buf, b.as_mut_ptr(), INPUT_LEN) };
        let word = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let dword = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let (version, length, requested, flags) = (word(0), word(2), dword(4), dword(8));
        let request = flags & input_flag::REQUEST != 0;
        let ack = flags & input_flag::ACK != 0;
        let known = input_flag::REQUEST | input_flag::ACK | input_flag::COMPLETE_ACK_ON_CLOSE;
        // REQUEST_OPLOCK_INPUT_BUFFER: version 1, its own length, REQUEST or ACK (not both), a
        // valid level for a request (an acknowledgement may say none).
        if version != REQUEST_OPLOCK_VERSION
            || usize::from(length) != INPUT_LEN
            || request == ack
            || flags & !known != 0
            || (request && !level::is_valid(requested))
            || (ack && requested != 0 && !level::is_valid(requested))
        {
            return Some((Status::INVALID_PARAMETER, 0));
        }
        let fo = call.fo() as usize;
        let irp = call.irp as usize;
        if ack {
            return self.oplock_ack_win7(call, fcb, requested, after);
        }
        if refused {
            return Some((Status::OPLOCK_NOT_GRANTED, 0));
        }
        let o = self.fs.oplocks.entry(fcb).or_default();
        let mut given_up = Vec::new();
        if requested & level::WRITE != 0 {
            // Exclusive (RW, RWH): the open count is the file's handles (oplock keys are not
            // modelled: OPLOCK_FSCTRL_FLAG_ALL_KEYS_MATCH is never passed); no other oplock; this
            // handle's own R or RH oplock, not breaking, gives way.
            let own_only = o.shared.iter().all(|h| h.fo == fo && h.breaking.is_none());
            if handles != 1 || o.state != State::None || !own_only {
                return Some((Status::OPLOCK_NOT_GRANTED, 0));
            }
            given_up = std::mem::take(&mut o.shared);
            let kind = if requested & level::HANDLE != 0 { Kind::Rwh } else { Kind::Rw };
            o.state = State::Exclusive { kind, fo, irp: Some(irp), breaking: None, number: 0 };
        } else {
            // Shared (R, RH): the open count is whether the file has byte-range locks; not with
            // an exclusive oplock; RH not with Level 2 ("Types of opportunistic locks"). This
            // handle's own shared oplock, not breaking, gives way to the new level.
            let level2 = matches!(o.state, State::Level2(_));
            let exclusive = matches!(o.state, State::Exclusive { .. });
            let own_breaking = o.shared.iter().any(|h| h.fo == fo && h.breaking.is_some());
            if locked || exclusive || (level2 && requested & level::HANDLE != 0) || own_breaking {
                return Some((Status::OPLOCK_NOT_GRANTED, 0));
            }
            o.shared.retain(|h| {
                if h.fo == fo {
                    given_up.push(*h);
                    return false;
                }
                true
            });
            o.shared.push(Shared::granted(irp, fo, requested));
        }
        // A request given way to completes with the level that replaces it, no acknowledgement.
        for h in given_up {
            if let Some(r) = h.irp {
                // SAFETY: a held oplock IRP.
                unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                let out = Output { original: h.level, new: requested, ..Output::default() };
                let info = write_output(r, &out);
                after.push(After::Complete(r, Status::SUCCESS, info));
            }
        }
        if !hold(call.irp, request_cancelled) {
            after.extend(self.oplock_request_cancelled(irp));
            return Some((Status::CANCELLED, 0));
        }
        self.oplock_event("oplock_granted", format!("{} oplock granted", level::name(requested)));
        None
    }

    /// `FSCTL_REQUEST_OPLOCK` with `REQUEST_OPLOCK_INPUT_FLAG_ACK`: the owner of a Windows 7
    /// oplock whose break required an acknowledgement accepts the new level (`requested` equal
    /// to it: the acknowledgement is pended as that oplock's request) or none (completed).
    fn oplock_ack_win7(
        &mut self,
        call: Call,
        fcb: usize,
        requested: u32,
        after: &mut Vec<After>,
    ) -> Option<(Status, usize)> {
        let fo = call.fo() as usize;
        let irp = call.irp as usize;
        let o = self.fs.oplocks.entry(fcb).or_default();
        let keep = match o.state {
            State::Exclusive { kind, fo: owner, breaking: Some(b), .. }
                if owner == fo && kind.win7_level().is_some() =>
            {
                let l = kind.win7_level().unwrap_or(0);
                let new = win7_target(l, b);
                // A break to none (or to RH, then to none before this) keeps nothing, whatever
                // the acknowledgement asks, as a legacy acknowledgement then answers.
                if new != 0 && requested != 0 && requested != new {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                }
                self.oplock_release(fcb, after);
                new != 0 && requested == new
            }
            _ => {
                let Some(i) = o.shared.iter().position(|h| h.fo == fo && h.breaking.is_some())
                else {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                };
                let new = o.shared[i].breaking.unwrap_or(0);
                if new != 0 && requested != 0 && requested != new {
                    return Some((STATUS_INVALID_OPLOCK_PROTOCOL, 0));
                }
                o.shared.remove(i);
                self.oplock_shared_settle(fcb, after);
                new != 0 && requested == new
            }
        };
        if !keep {
            self.oplock_event("oplock_acknowledged", "broken to none".into());
            return Some((Status::SUCCESS, 0));
        }
        if requested & level::WRITE != 0 {
            // RWH broken to RW: the acknowledgement is the RW oplock's request.
            if let Some(o) = self.fs.oplocks.get_mut(&fcb) {
                let irp = Some(irp);
                o.state = State::Exclusive { kind: Kind::Rw, fo, irp, breaking: None, number: 0 };
            }
        } else if let Some(o) = self.fs.oplocks.get_mut(&fcb) {
            o.shared.push(Shared::granted(irp, fo, requested));
        }
        if !hold(call.irp, request_cancelled) {
            after.extend(self.oplock_request_cancelled(irp));
            return Some((Status::CANCELLED, 0));
        }
        let detail = format!("{} granted", level::name(requested));
        self.oplock_event("oplock_acknowledged", detail);
        None
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
        // Its Windows 7 shared oplocks end: a pending request completes, broken to none; a break
        // it had not acknowledged is over ("the handle close is an acknowledgement").
        if o.shared.iter().any(|h| h.fo == fo) {
            let mut ended = Vec::new();
            o.shared.retain(|h| {
                if h.fo != fo {
                    return true;
                }
                ended.push(*h);
                false
            });
            for h in ended {
                if let Some(r) = h.irp {
                    // SAFETY: a held oplock IRP.
                    unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                    let out = Output { original: h.level, ..Output::default() };
                    let info = write_output(r, &out);
                    after.push(After::Complete(r, Status::SUCCESS, info));
                }
            }
            self.oplock_shared_settle(fcb, after);
            self.oplock_event("oplock_released", "the owner's handle was cleaned up".into());
        }
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
            State::Exclusive { kind, fo: owner, irp, .. } => {
                if *owner != fo {
                    return;
                }
                if let Some(r) = irp.take() {
                    // SAFETY: the held request IRP.
                    unsafe { crate::cancel::clear_cancel_routine(r as *mut IRP) };
                    let info = match kind.win7_level() {
                        Some(l) => write_output(r, &Output { original: l, ..Output::default() }),
                        None => FILE_OPLOCK_BROKEN_TO_NONE,
                    };
                    after.push(After::Complete(r, Status::SUCCESS, info));
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
        let mut dropped = None;
        for (p, o) in self.fs.oplocks.iter_mut() {
            if o.shared.iter().any(|h| h.irp == Some(irp)) {
                o.shared.retain(|h| h.irp != Some(irp));
                dropped = Some(*p);
                break;
            }
        }
        if let Some(p) = dropped {
            self.oplock_shared_settle(p, &mut after);
            return after;
        }
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

/// The level a Windows 7 exclusive oplock of level `l` keeps after break `b`: RW and RWH lose
/// write caching to a read or an open (R, RH), RWH its handle caching (RW), nothing else.
fn win7_target(l: u32, b: Breaking) -> u32 {
    match b {
        Breaking::ToLevel2 => l & !level::WRITE,
        Breaking::ToNoHandle => l & !level::HANDLE,
        _ => 0,
    }
}

/// Writes a Windows 7 oplock's `REQUEST_OPLOCK_OUTPUT_BUFFER` into its request's system buffer
/// (the request was refused unless its output length held one): the information to complete it
/// with.
fn write_output(irp: usize, out: &Output) -> usize {
    // SAFETY: a held oplock IRP, still ours.
    let buf = unsafe { crate::irpx::system_buffer(irp as *mut IRP) };
    if buf.is_null() {
        return 0;
    }
    let b = out.bytes();
    // SAFETY: the system buffer holds at least OUTPUT_LEN bytes (checked at the request).
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), buf, OUTPUT_LEN) };
    OUTPUT_LEN
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
