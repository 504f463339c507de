//! Directory change notifications (`IRP_MN_NOTIFY_CHANGE_DIRECTORY`), served the way NTFS and
//! FastFat serve them through FsRtl's notify package (`FsRtlNotifyFullChangeDirectory`,
//! `FsRtlNotifyFilterReportChange`, `FsRtlNotifyCleanup`), with the rules
//! `ReadDirectoryChangesW`'s page documents for the caller:
//!
//! - The first request on a handle sets up the handle's watch: its directory, completion filter,
//!   whether it watches the subtree (`SL_WATCH_TREE`), and a buffer the size of that first
//!   request's buffer, kept until the handle's cleanup.
//! - A request waits (`STATUS_PENDING`) until a change the filter selects happens in the
//!   directory (or below it, for a subtree watch). It completes in the thread of the request that
//!   made the change, inside the file system, before that request completes, with
//!   `FILE_NOTIFY_INFORMATION` records of the changes, names relative to the watched directory.
//! - Changes that happen while no request waits are kept in the watch's buffer and returned by the
//!   next request at once. When they outgrow the buffer, or a request's buffer cannot hold them,
//!   they are dropped and the request completes with `STATUS_NOTIFY_ENUM_DIR` and no data: the
//!   caller must enumerate the directory again.
//! - The handle's cleanup completes its waiting requests with `STATUS_NOTIFY_CLEANUP`; so does a
//!   dismount, for every watch of the volume. A watched directory deleted completes them with
//!   `STATUS_DELETE_PENDING`, and so is every later request on the handle.
//!
//! What is reported, and when (docs/simulator.md, "Directory change notifications"): a file or
//! directory created (`FILE_ACTION_ADDED`) or deleted (`FILE_ACTION_REMOVED`); renamed within its
//! directory (`FILE_ACTION_RENAMED_OLD_NAME`, then `_NEW_NAME`) or moved to another
//! (`FILE_ACTION_REMOVED` where it was, `FILE_ACTION_ADDED` where it went); basic information set
//! (`FILE_ACTION_MODIFIED` with the attribute and time filters it touched, at once); and a file
//! written or its size set through a handle (`FILE_ACTION_MODIFIED`, `LAST_WRITE` and, when the
//! size changed, `SIZE`), at that handle's cleanup, as FastFat reports them.

use std::cell::Cell;

use fsfilter::Status;
use windows_sys::Wdk::Foundation::{DEVICE_OBJECT, FILE_OBJECT, IRP};

use crate::events::EventKind;
use crate::fs::media::{Media, NodeId};
use crate::irp::Finish;
use crate::irpx;
use crate::kernel::{self, Kernel};
use crate::nt::fo;

/// `FILE_NOTIFY_CHANGE_*`.
pub mod change {
    /// `FILE_NOTIFY_CHANGE_FILE_NAME`.
    pub const FILE_NAME: u32 = 0x1;
    /// `FILE_NOTIFY_CHANGE_DIR_NAME`.
    pub const DIR_NAME: u32 = 0x2;
    /// `FILE_NOTIFY_CHANGE_ATTRIBUTES`.
    pub const ATTRIBUTES: u32 = 0x4;
    /// `FILE_NOTIFY_CHANGE_SIZE`.
    pub const SIZE: u32 = 0x8;
    /// `FILE_NOTIFY_CHANGE_LAST_WRITE`.
    pub const LAST_WRITE: u32 = 0x10;
    /// `FILE_NOTIFY_CHANGE_LAST_ACCESS`.
    pub const LAST_ACCESS: u32 = 0x20;
    /// `FILE_NOTIFY_CHANGE_CREATION`.
    pub const CREATION: u32 = 0x40;
    /// `FILE_NOTIFY_VALID_MASK`: every bit a completion filter may hold.
    pub const VALID_MASK: u32 = 0xFFF;
}

/// `FILE_ACTION_*`.
pub mod action {
    /// `FILE_ACTION_ADDED`.
    pub const ADDED: u32 = 1;
    /// `FILE_ACTION_REMOVED`.
    pub const REMOVED: u32 = 2;
    /// `FILE_ACTION_MODIFIED`.
    pub const MODIFIED: u32 = 3;
    /// `FILE_ACTION_RENAMED_OLD_NAME`.
    pub const RENAMED_OLD_NAME: u32 = 4;
    /// `FILE_ACTION_RENAMED_NEW_NAME`.
    pub const RENAMED_NEW_NAME: u32 = 5;
}

/// The filter of a name change: a directory's or a file's.
pub fn name_change(is_dir: bool) -> u32 {
    if is_dir { change::DIR_NAME } else { change::FILE_NAME }
}

/// True for a completion filter a request may carry: something, and nothing past
/// `FILE_NOTIFY_VALID_MASK`.
pub fn valid_filter(filter: u32) -> bool {
    filter != 0 && filter & !change::VALID_MASK == 0
}

/// Marks a file object written through (`FO_FILE_MODIFIED`), and its file resized
/// (`FO_FILE_SIZE_CHANGED`): its cleanup reports the change ([`modification`]), as FastFat's.
pub fn mark_modified(file: &mut FILE_OBJECT, size_changed: bool) {
    file.Flags |= fo::FILE_MODIFIED | if size_changed { fo::FILE_SIZE_CHANGED } else { 0 };
}

/// The filter of the change a file object's cleanup reports, from its flags: `LAST_WRITE` when
/// written through, `SIZE` when resized too; None when neither.
pub fn modification(flags: u32) -> Option<u32> {
    let size = if flags & fo::FILE_SIZE_CHANGED != 0 { change::SIZE } else { 0 };
    (flags & fo::FILE_MODIFIED != 0).then_some(change::LAST_WRITE | size)
}

/// `SL_WATCH_TREE`.
pub const SL_WATCH_TREE: u8 = 0x01;

/// One handle's watch.
pub struct Watch {
    /// The mount.
    pub mount: u32,
    /// The watched directory.
    pub dir: NodeId,
    /// The completion filter of the first request.
    pub filter: u32,
    /// `SL_WATCH_TREE` on the first request.
    pub tree: bool,
    /// The buffer kept for changes no request waits for: the first request's length.
    pub capacity: usize,
    /// Requests waiting, oldest first: the IRP and its buffer's length.
    pub waiting: Vec<(usize, usize)>,
    /// Requests answered by a report, to complete when the request that made the change is
    /// done with the kernel ([`flush`]): the IRP, its status and its records.
    pub answered: Vec<(usize, Status, Vec<u8>)>,
    /// `FILE_NOTIFY_INFORMATION` records not yet returned, unpadded.
    pub records: Vec<Vec<u8>>,
    /// The changes outgrew the buffer: the next request gets `STATUS_NOTIFY_ENUM_DIR`.
    pub overflow: bool,
    /// The watch is over, and every request gets this: `STATUS_DELETE_PENDING` once the
    /// directory is deleted, `STATUS_NOTIFY_CLEANUP` once the handle is cleaned up or the volume
    /// dismounted. The watch itself goes with the handle's CCB, at close.
    pub over: Option<Status>,
}

impl Watch {
    /// The length of the records chained: each starts 4-byte aligned, the last ends with its
    /// name (FsRtl's data length, the byte count a request returns).
    fn bytes(&self) -> usize {
        data_length(&self.records)
    }

    /// Answers the oldest waiting request, if there is one and something to answer with.
    fn due(&mut self) -> Option<(usize, Status, Vec<u8>)> {
        if self.waiting.is_empty() {
            return None;
        }
        let answer = if let Some(status) = self.over {
            (status, Vec::new())
        } else if self.overflow {
            self.overflow = false;
            (Status::NOTIFY_ENUM_DIR, Vec::new())
        } else if self.records.is_empty() {
            return None;
        } else {
            let length = self.waiting.first().map_or(0, |w| w.1);
            let records = std::mem::take(&mut self.records);
            if data_length(&records) > length {
                (Status::NOTIFY_ENUM_DIR, Vec::new())
            } else {
                (Status::SUCCESS, link(records))
            }
        };
        let (irp, _) = self.waiting.remove(0);
        // Answered: no longer cancelable (FsRtl takes its cancel routine out as it completes it).
        // SAFETY: a waiting IRP is live until completed.
        unsafe { crate::cancel::clear_cancel_routine(irp as *mut IRP) };
        Some((irp, answer.0, answer.1))
    }
}

/// `LongAlign`.
fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// The length of `records` chained (see [`link`]).
fn data_length(records: &[Vec<u8>]) -> usize {
    records.iter().fold(0, |at, r| align4(at) + r.len())
}

/// Chains records with `NextEntryOffset` (0 in the last): each but the last is padded to 4
/// bytes, the last ends with its name.
fn link(records: Vec<Vec<u8>>) -> Vec<u8> {
    let count = records.len();
    let mut out = Vec::new();
    for (i, mut r) in records.into_iter().enumerate() {
        if i + 1 < count {
            r.resize(align4(r.len()), 0);
            let next = (r.len() as u32).to_le_bytes();
            r[..4].copy_from_slice(&next);
        }
        out.extend_from_slice(&r);
    }
    out
}

/// One `FILE_NOTIFY_INFORMATION` record, unpadded, `NextEntryOffset` 0.
fn record(act: u32, name: &str) -> Vec<u8> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let mut r = Vec::with_capacity(12 + units.len() * 2 + 2);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&act.to_le_bytes());
    r.extend_from_slice(&((units.len() * 2) as u32).to_le_bytes());
    for u in units {
        r.extend_from_slice(&u.to_le_bytes());
    }
    r
}

/// Records as the log shows them: `added a.txt, renamed from b.txt, renamed to c.txt`.
pub fn describe(bytes: &[u8]) -> String {
    let u32_at = |at: usize| {
        bytes.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let (next, act, len) = (u32_at(at), u32_at(at + 4), u32_at(at + 8) as usize);
        let units: Vec<u16> = bytes
            .get(at + 12..at + 12 + len)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let what = match act {
            action::ADDED => "added",
            action::REMOVED => "removed",
            action::MODIFIED => "modified",
            action::RENAMED_OLD_NAME => "renamed from",
            action::RENAMED_NEW_NAME => "renamed to",
            _ => "?",
        };
        out.push(format!("{what} {}", String::from_utf16_lossy(&units)));
        if next == 0 {
            break;
        }
        at += next as usize;
    }
    out.join(", ")
}

/// The name of `node` relative to `dir` when a watch on `dir` sees it: in `dir` itself, or
/// anywhere below it for a subtree watch.
fn relative(media: &Media, dir: NodeId, node: NodeId, tree: bool) -> Option<String> {
    let mut parts = vec![media.node(node).name.as_str()];
    let mut cur = media.node(node).parent?;
    while cur != dir {
        if !tree {
            return None;
        }
        parts.push(media.node(cur).name.as_str());
        cur = media.node(cur).parent?;
    }
    parts.reverse();
    Some(parts.join("\\"))
}

std::thread_local! {
    /// Set when a waiting request may have become due: [`flush`] then looks. The machine runs
    /// on one host thread, so this spares every other request a look into the kernel.
    static DUE: Cell<bool> = const { Cell::new(false) };
}

impl Kernel {
    /// Records a change of `node` on `mount` for every watch that sees it and selects one of the
    /// `filter` bits.
    pub(crate) fn report_change(&mut self, mount: u32, node: NodeId, act: u32, filter: u32) {
        if self.fs.watches.is_empty() {
            return;
        }
        let media = &self.volumes.list[self.fs.mounts[mount as usize].volume.index()].media;
        let mut any = false;
        for (_, w) in &mut self.fs.watches {
            if w.mount != mount || w.over.is_some() || w.filter & filter == 0 {
                continue;
            }
            let Some(name) = relative(media, w.dir, node, w.tree) else { continue };
            any = true;
            if w.overflow {
                // Already dropped: the next request enumerates again anyway; one waiting is
                // answered so now.
                if let Some(answer) = w.due() {
                    w.answered.push(answer);
                }
                continue;
            }
            let r = record(act, &name);
            // With a request waiting, its buffer bounds the changes (FsRtl fills that request's
            // buffer); with none, the buffer kept since the first request does.
            let limit = w.waiting.first().map_or(w.capacity, |x| x.1);
            if align4(w.bytes()) + r.len() > limit {
                // FsRtl drops what it kept: the caller must enumerate again.
                w.records.clear();
                w.overflow = true;
            } else {
                w.records.push(r);
            }
            // FsRtl answers the waiting request at each report, but holds an old name back
            // for the new one that follows.
            if act != action::RENAMED_OLD_NAME {
                if let Some(answer) = w.due() {
                    w.answered.push(answer);
                }
            }
        }
        if any {
            DUE.with(|d| d.set(true));
        }
    }

    /// A watched directory was deleted: its watches answer `STATUS_DELETE_PENDING` from now on.
    pub(crate) fn watched_dir_deleted(&mut self, mount: u32, node: NodeId) {
        self.end_watches(|w| w.mount == mount && w.dir == node, Status::DELETE_PENDING);
    }

    /// The handle whose CCB is `ccb` was cleaned up: its waiting requests, and any later one,
    /// get `STATUS_NOTIFY_CLEANUP` (`FsRtlNotifyCleanup`).
    pub(crate) fn handle_cleaned(&mut self, ccb: usize) {
        for (c, w) in &mut self.fs.watches {
            if *c == ccb {
                w.over = Some(Status::NOTIFY_CLEANUP);
                DUE.with(|d| d.set(true));
            }
        }
    }

    /// The volume on `mount` was dismounted: every watch on it ends with `STATUS_NOTIFY_CLEANUP`
    /// (`FsRtlNotifyCleanupAll`).
    pub(crate) fn volume_dismounted(&mut self, mount: u32) {
        self.end_watches(|w| w.mount == mount, Status::NOTIFY_CLEANUP);
    }

    fn end_watches(&mut self, which: impl Fn(&Watch) -> bool, status: Status) {
        for (_, w) in &mut self.fs.watches {
            if w.over.is_none() && which(w) {
                w.over = Some(status);
                DUE.with(|d| d.set(true));
            }
        }
    }

    /// The handle's CCB is gone (its close): so is its watch.
    pub(crate) fn drop_watch(&mut self, ccb: usize) {
        self.fs.watches.retain(|(c, _)| *c != ccb);
    }

    /// A notify request on `ccb`'s handle for `dir` on `mount`: answered at once (changes kept
    /// since the last one, or the watch's directory deleted), or queued (None).
    pub(crate) fn notify_request(
        &mut self,
        ccb: usize,
        at: (u32, NodeId),
        filter: u32,
        tree: bool,
        (irp, length): (usize, usize),
    ) -> Option<(Status, Vec<u8>)> {
        let i = match self.fs.watches.iter().position(|(c, _)| *c == ccb) {
            Some(i) => i,
            None => {
                let w = Watch {
                    mount: at.0,
                    dir: at.1,
                    filter,
                    tree,
                    capacity: length,
                    waiting: Vec::new(),
                    answered: Vec::new(),
                    records: Vec::new(),
                    overflow: false,
                    over: None,
                };
                self.fs.watches.push((ccb, w));
                self.fs.watches.len() - 1
            }
        };
        let (_, w) = &mut self.fs.watches[i];
        // With no other request waiting, this one takes what was kept; behind others, it waits
        // its turn.
        let first = w.waiting.is_empty();
        w.waiting.push((irp, length));
        if let Some((_, status, bytes)) = if first { w.due() } else { None } {
            return Some((status, bytes));
        }
        // It waits, cancelable (`CancelIoEx`): FsRtl sets its cancel routine, then answers a
        // request cancelled on its way down at once.
        let irp = irp as *mut IRP;
        // SAFETY: the live IRP in the file system's dispatch routine.
        if !unsafe { crate::cancel::make_cancelable(irp, Some(waiting_notify_cancelled)) } {
            w.waiting.retain(|x| x.0 != irp as usize);
            return Some((Status::CANCELLED, Vec::new()));
        }
        // SAFETY: as above, kept pending.
        unsafe { fsfilter_kernel::irp::IoMarkIrpPending(irp) };
        None
    }

    /// A waiting request was cancelled: it leaves its watch.
    fn drop_waiting_request(&mut self, irp: usize) {
        for (_, w) in &mut self.fs.watches {
            w.waiting.retain(|x| x.0 != irp);
        }
    }

    fn take_due(&mut self) -> Vec<(usize, Status, Vec<u8>)> {
        let mut due = Vec::new();
        for (_, w) in &mut self.fs.watches {
            due.append(&mut w.answered);
            due.extend(w.due());
        }
        due
    }
}

/// Completes the waiting requests that changes made due, in the thread of the request that made
/// them. The file systems call it before they complete that request (FsRtl completes a notify
/// request inside the report), never with the kernel borrowed.
pub fn flush() {
    if !DUE.with(|d| d.replace(false)) {
        return;
    }
    loop {
        let due = kernel::with(Kernel::take_due);
        if due.is_empty() {
            return;
        }
        for (irp, status, bytes) in due {
            complete(irp, status, &bytes);
        }
    }
}

/// Logs the changes a user request's notification returns (`directory_changes`): the status
/// block says only how many bytes they took.
pub fn log_changes(irp: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    kernel::with(|k| {
        let Some(Finish::Request(rid)) = k.irps.map.get(&irp).map(|i| i.finish) else { return };
        let volume = k.requests.get(rid).map(|r| k.volume_display_name(r.volume));
        k.log(EventKind::System {
            what: "directory_changes",
            driver: None,
            volume,
            detail: format!("io {}: {}", rid.0, describe(bytes)),
        });
    });
}

/// The cancel routine of a waiting request: it leaves its watch and completes with
/// `STATUS_CANCELLED`, as FsRtl's notify package cancels one.
unsafe extern "system" fn waiting_notify_cancelled(_device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: the IRP being cancelled, as IoCancelIrp passes it, waiting in its watch.
    unsafe { crate::cancel::complete_cancelled(irp, |k| k.drop_waiting_request(irp as usize)) };
}

fn complete(irp: usize, status: Status, bytes: &[u8]) {
    log_changes(irp, bytes);
    let irp = irp as *mut IRP;
    // SAFETY: a notify IRP the file system kept pending: live until completed here, once.
    let buffer = unsafe { irpx::data_buffer(irp) };
    // SAFETY: the request's buffer holds at least `bytes.len()` bytes (checked against its
    // length before the answer was chosen).
    let n = unsafe { irpx::copy_out(buffer, bytes.len(), bytes) };
    // SAFETY: as above.
    unsafe { irpx::complete(irp, status, n) };
}
