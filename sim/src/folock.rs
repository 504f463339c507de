//! The lock of a synchronous file object (WRK `IopAcquireFileObjectLock`, the file object's
//! `Busy` and `Waiters`): every system service on a `FO_SYNCHRONOUS_IO` file object takes it
//! before it builds its request (before fast I/O, for a read or write), and keeps it until the
//! request completes; `IopCloseFile` takes it before the cleanup. `NtCancelIoFile` does not.
//!
//! The simulator's caller stops waiting for a request nothing completes (`STATUS_PENDING`): that
//! request keeps the lock until it completes. A service called while the lock is held waits for
//! it in the order the calls came: its caller gets `STATUS_PENDING` and the id its request will
//! have; the service runs, as the caller's, when the lock is released (a task of the scheduler),
//! and its request completes then or later. A service queued behind a lock never released never
//! runs (docs/simulator.md, "Asynchronous I/O").

use std::collections::VecDeque;

use fsfilter::{MajorFunction, Status};
use windows_sys::Wdk::Foundation::FILE_OBJECT;

use crate::events::RequestRef;
use crate::ids::{RequestId, ThreadId, VolumeId};
use crate::kernel::{self, FastMap, Kernel};
use crate::syscalls::IoResult;

/// A service waiting for the lock: it runs the whole call, as the caller made it.
pub(crate) type Service = Box<dyn FnOnce() -> IoResult>;

/// The locks of synchronous file objects: the file object's `Busy` says it is held.
#[derive(Default)]
pub struct FileLocks {
    /// The services waiting for a held lock, by file object address, the oldest first, the
    /// request id each will have, and whether that request started already (a lock whose
    /// fast-I/O attempt answered FALSE before the lock) (no entry: none waits).
    waiters: FastMap<usize, VecDeque<(RequestId, bool, ThreadId, Service)>>,
    /// Requests the caller stopped waiting for, holding their file object's lock until they
    /// complete.
    holders: FastMap<RequestId, usize>,
}

/// Takes the lock of `file` (the live file object of an open handle) for a service about to
/// run, if it is free: false when it is held.
pub(crate) fn try_acquire(file: usize) -> bool {
    kernel::with(|k| {
        let mut taken = true;
        set(k, file, |f| {
            taken = f.Busy == 0;
            f.Busy = 1;
        });
        taken
    })
}

/// Queues `service` behind the held lock of `file`: its caller gets `STATUS_PENDING` and the id
/// its request (on `volume`, `major`) will have.
pub(crate) fn queue(
    file: usize,
    volume: VolumeId,
    major: MajorFunction,
    service: Service,
) -> IoResult {
    let rid = kernel::with(|k| k.requests.reserve(volume, major));
    queue_as(file, rid, false, service)
}

/// Queues `service` behind the held lock of `file` as the rest of request `rid`, which started
/// before the lock (`NtLockFile` / `NtUnlockFile` try fast I/O first): its caller gets
/// `STATUS_PENDING` and that id.
pub(crate) fn queue_started(file: usize, rid: RequestId, service: Service) -> IoResult {
    queue_as(file, rid, true, service)
}

/// Queues `service` as request `rid` (`started`: already started).
fn queue_as(file: usize, rid: RequestId, started: bool, service: Service) -> IoResult {
    kernel::with(|k| {
        // It runs later in its caller's thread (docs/simulator.md, "Processes").
        let thread = k.thread;
        k.files.locks.waiters.entry(file).or_default().push_back((rid, started, thread, service));
        set(k, file, |f| f.Waiters = f.Waiters.saturating_add(1));
    });
    IoResult { io: Some(RequestRef(rid.0)), ..IoResult::without_request(Status::PENDING) }
}

/// A service that held the lock of `file` returned `r`: the request the caller stopped waiting
/// for keeps it; otherwise it is released.
pub(crate) fn done(file: usize, r: &IoResult) {
    kernel::with(|k| {
        let pending = r.io.filter(|_| r.status == Status::PENDING).map(|i| RequestId(i.0));
        let outstanding = pending
            .filter(|&rid| k.requests.get(rid).is_some() && k.requests.result(rid).is_none());
        match outstanding {
            Some(rid) => {
                k.files.locks.holders.insert(rid, file);
            }
            None => release(k, file),
        }
    });
}

impl Kernel {
    /// Request `id` completed: the lock it held, if any, is released.
    pub(crate) fn release_file_lock_of(&mut self, id: RequestId) {
        if let Some(file) = self.files.locks.holders.remove(&id) {
            release(self, file);
        }
    }
}

/// Releases the lock of `file`: it passes to the oldest waiting service, which runs as a task
/// of the scheduler, or the file object is free.
fn release(k: &mut Kernel, file: usize) {
    let waiters = &mut k.files.locks.waiters;
    let next = if waiters.is_empty() {
        None
    } else {
        let next = waiters.get_mut(&file).and_then(VecDeque::pop_front);
        if waiters.get(&file).is_some_and(VecDeque::is_empty) {
            waiters.remove(&file);
        }
        next
    };
    let Some((rid, started, thread, service)) = next else {
        set(k, file, |f| f.Busy = 0);
        return;
    };
    set(k, file, |f| f.Waiters = f.Waiters.saturating_sub(1));
    k.sched.push(crate::sched::Task {
        name: "file object lock",
        image: None,
        irql: crate::kernel::PASSIVE_LEVEL,
        thread,
        run: Box::new(move || run_waiter(file, rid, started, thread, service)),
    });
}

/// Runs a service that waited for the lock of `file`, as the caller's: its request takes the id
/// its caller was given (a service that fails before any request completes that id with its
/// status), unless that request `started` already, which the service goes on with.
fn run_waiter(file: usize, rid: RequestId, started: bool, thread: ThreadId, service: Service) {
    crate::syscalls::as_user_in(thread, move || {
        if !started {
            kernel::with(|k| k.requests.reserved = Some(rid));
        }
        let mut r = service();
        kernel::with(|k| {
            if !started && k.requests.reserved == Some(rid) {
                k.requests.reserved = None;
                k.finish_reserved(rid, r.status);
            }
            // Its caller, given STATUS_PENDING, finds what a caller who waited would have got
            // (unless its request is still outstanding: then at its completion).
            if r.status != Status::PENDING {
                let (status, information) = k.requests.result(rid).unwrap_or((r.status, 0));
                let (iosb, data) = (r.iosb, std::mem::take(&mut r.data));
                let found = crate::requests::OverlappedResult { status, information, iosb, data };
                k.requests.set_overlapped(rid, found);
            }
        });
        done(file, &r);
    });
}

/// Sets a field of `file` if it is still a live file object.
fn set(k: &mut Kernel, file: usize, f: impl FnOnce(&mut FILE_OBJECT)) {
    if k.files.map.contains_key(&file) {
        // SAFETY: a live file object of the table.
        f(unsafe { &mut *(file as *mut FILE_OBJECT) });
    }
}
