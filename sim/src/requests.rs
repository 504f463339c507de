//! User-mode requests: the `"io"` of scenario.md. Each has an id, a volume, and once complete a
//! status; the file-system and I/O subsystems fill the rest.

use fsfilter::{MajorFunction, Status};

use crate::events::{EventKind, RequestRef};
use crate::ids::{RequestId, VolumeId};
use crate::kernel::Kernel;
use crate::syscalls::IoStatusBlock;

/// One request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Its volume.
    pub volume: VolumeId,
    /// The operation.
    pub major: MajorFunction,
    /// The final status and information, once complete.
    pub result: Option<(Status, usize)>,
    /// What its caller finds once it completed, when the call returned before that.
    pub overlapped: Option<Box<OverlappedResult>>,
}

/// What the caller of a request finds once the request completed, when the call that made it
/// returned before (`STATUS_PENDING`: a request on an overlapped handle, one nothing completed
/// while its caller waited, a service that waited for its file object's lock), as
/// `GetOverlappedResult` reads it: the final status and information, the caller's I/O status
/// block as `IopCompleteRequest` wrote it (WRK: not for an error of a synchronous request), and
/// what the caller's buffer holds (read data, an information or control request's output, the
/// system buffer copied back for a buffered one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlappedResult {
    /// The request's final `IoStatus.Status`.
    pub status: Status,
    /// Its `IoStatus.Information`.
    pub information: usize,
    /// The caller's status block, if the I/O manager wrote it.
    pub iosb: Option<IoStatusBlock>,
    /// The caller's output: as many bytes as the request returned.
    pub data: Vec<u8>,
}

/// The request table.
#[derive(Default)]
pub struct Requests {
    /// Requests by id, from `base` on.
    list: std::collections::VecDeque<Request>,
    /// The id of the first request still in `list` (ids never change or repeat).
    base: u32,
    /// The id the next request started takes: one reserved for a service that waited for a
    /// file object's lock ([`crate::folock`]), set while it runs.
    pub(crate) reserved: Option<RequestId>,
}

impl Requests {
    /// The request `id`, unless it was forgotten.
    pub fn get(&self, id: RequestId) -> Option<&Request> {
        self.list.get(id.0.checked_sub(self.base)? as usize)
    }

    fn get_mut(&mut self, id: RequestId) -> Option<&mut Request> {
        self.list.get_mut(id.0.checked_sub(self.base)? as usize)
    }

    /// The final status and information of request `id`, once complete.
    pub fn result(&self, id: RequestId) -> Option<(Status, usize)> {
        self.get(id).and_then(|r| r.result)
    }

    /// What the caller of request `id` finds once it completed, when its call returned before
    /// ([`OverlappedResult`]); `None` while it is outstanding, and for a request its caller
    /// waited for (the call's own result said it all).
    pub fn overlapped(&self, id: RequestId) -> Option<&OverlappedResult> {
        self.get(id).and_then(|r| r.overlapped.as_deref())
    }

    /// Records what the caller of request `id` finds ([`OverlappedResult`]).
    pub(crate) fn set_overlapped(&mut self, id: RequestId, result: OverlappedResult) {
        if let Some(r) = self.get_mut(id) {
            r.overlapped = Some(Box::new(result));
        }
    }

    /// The caller's view of request `id` once recorded, to fill its data.
    pub(crate) fn overlapped_mut(&mut self, id: RequestId) -> Option<&mut OverlappedResult> {
        self.get_mut(id).and_then(|r| r.overlapped.as_deref_mut())
    }

    /// The requests still in the table, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Request> {
        self.list.iter()
    }

    /// Requests recorded so far (forgotten ones included).
    pub fn count(&self) -> u32 {
        self.base + self.list.len() as u32
    }

    /// Records a request whose service waits for a file object's lock, without logging its
    /// start: its id is the caller's now, and the request starts when the service runs.
    pub(crate) fn reserve(&mut self, volume: VolumeId, major: MajorFunction) -> RequestId {
        let id = RequestId(self.count());
        self.list.push_back(Request { volume, major, result: None, overlapped: None });
        id
    }

    /// Forgets the completed requests at the front of the table, the oldest first, so that a long
    /// run's table does not grow with every request (the benchmarks call it when they trim the
    /// event log; the lab keeps every request). Later requests keep their ids.
    pub fn forget_completed(&mut self) {
        while self.list.front().is_some_and(|r| r.result.is_some()) {
            self.list.pop_front();
            self.base += 1;
        }
    }
}

impl Kernel {
    /// Records a new request and logs its start.
    pub fn start_request(
        &mut self,
        volume: VolumeId,
        major: MajorFunction,
        fast_io: bool,
    ) -> RequestId {
        let reserved = self.requests.reserved.take();
        let id = match reserved.and_then(|id| self.requests.get_mut(id).map(|r| (id, r))) {
            Some((id, r)) => {
                (r.volume, r.major) = (volume, major);
                id
            }
            None => {
                let id = RequestId(self.requests.count());
                self.requests.list.push_back(Request {
                    volume,
                    major,
                    result: None,
                    overlapped: None,
                });
                id
            }
        };
        let name = self.volume_shared_name(volume);
        self.log(EventKind::IoStart { io: RequestRef(id.0), volume: name, major, fast_io });
        id
    }

    /// Records a request's completion (stage two of IRP completion, or a fast-I/O return).
    pub fn request_completed(&mut self, id: RequestId, status: Status, information: usize) {
        let Some(r) = self.requests.get_mut(id) else { return };
        if r.result.is_some() {
            return;
        }
        r.result = Some((status, information));
        let volume = r.volume;
        let name = self.volume_shared_name(volume);
        self.log(EventKind::IoComplete { io: RequestRef(id.0), volume: name, status, information });
        self.release_file_lock_of(id);
    }

    /// A reserved request whose service failed before it started one: it starts and completes
    /// with the service's status.
    pub(crate) fn finish_reserved(&mut self, id: RequestId, status: Status) {
        let Some(r) = self.requests.get(id) else { return };
        let (volume, major) = (r.volume, r.major);
        let name = self.volume_shared_name(volume);
        self.log(EventKind::IoStart { io: RequestRef(id.0), volume: name, major, fast_io: false });
        self.request_completed(id, status, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_requests_are_forgotten_from_the_front_and_ids_stay() {
        let mut r = Requests::default();
        for _ in 0..3 {
            let id = r.count();
            r.list.push_back(Request {
                volume: VolumeId(0),
                major: MajorFunction::Read,
                result: None,
                overlapped: None,
            });
            assert_eq!(r.get(RequestId(id)).map(|q| q.major), Some(MajorFunction::Read));
        }
        // 0 and 2 complete; 1 is still pending, so only 0 can go.
        for id in [0, 2] {
            if let Some(q) = r.get_mut(RequestId(id)) {
                q.result = Some((Status::SUCCESS, 0));
            }
        }
        r.forget_completed();
        assert!(r.get(RequestId(0)).is_none());
        assert!(r.get(RequestId(1)).is_some());
        assert_eq!(r.result(RequestId(2)), Some((Status::SUCCESS, 0)));
        assert_eq!(r.count(), 3);
    }
}
