//! User-mode requests: the `"io"` of scenario.md. Each has an id, a volume, and once complete a
//! status; the file-system and I/O subsystems fill the rest.

use fsfilter::{MajorFunction, Status};

use crate::events::{EventKind, RequestRef};
use crate::ids::{RequestId, VolumeId};
use crate::kernel::Kernel;

/// One request.
#[derive(Clone, Debug)]
pub struct Request {
    /// Its volume.
    pub volume: VolumeId,
    /// The operation.
    pub major: MajorFunction,
    /// The final status and information, once complete.
    pub result: Option<(Status, usize)>,
}

/// The request table.
#[derive(Default)]
pub struct Requests {
    /// Requests by id.
    pub list: Vec<Request>,
}

impl Kernel {
    /// Records a new request and logs its start.
    pub fn start_request(
        &mut self,
        volume: VolumeId,
        major: MajorFunction,
        fast_io: bool,
    ) -> RequestId {
        let id = RequestId(self.requests.list.len() as u32);
        self.requests.list.push(Request { volume, major, result: None });
        let name = self.volume_display_name(volume);
        self.log(EventKind::IoStart { io: RequestRef(id.0), volume: name, major, fast_io });
        id
    }

    /// Records a request's completion (stage two of IRP completion, or a fast-I/O return).
    pub fn request_completed(&mut self, id: RequestId, status: Status, information: usize) {
        let Some(r) = self.requests.list.get_mut(id.index()) else { return };
        if r.result.is_some() {
            return;
        }
        r.result = Some((status, information));
        let volume = r.volume;
        let name = self.volume_display_name(volume);
        self.log(EventKind::IoComplete { io: RequestRef(id.0), volume: name, status, information });
    }
}
