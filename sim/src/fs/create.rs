//! `IRP_MJ_CREATE` in the file systems: name resolution, dispositions and options, share
//! access, and the file object's `FsContext` / `FsContext2` / `SectionObjectPointer`.

use fsfilter::Status;
use fsfilter_kernel::params;
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Win32::Foundation::NTSTATUS;

use super::media::{Lookup, NodeId, ROOT};
use super::oplock::Check;
use super::{Call, FsType, MountState, Role, ShareRequest, VOLUME_NODE};
use crate::irpx;
use crate::kernel::{self, Kernel};
use crate::nt::{
    access as acc, attr, create_options as co, create_result, disposition as disp, fo,
};

/// What a create asked for.
#[derive(Clone, Copy, Debug)]
pub struct CreateRequest {
    /// The (mapped) desired access.
    pub access: u32,
    /// `ShareAccess`.
    pub share: u32,
    /// The disposition.
    pub disposition: u32,
    /// The create options.
    pub options: u32,
    /// `FileAttributes`.
    pub attributes: u32,
    /// `FO_VOLUME_OPEN` (or no name and no related file).
    pub volume_open: bool,
}

/// What a create's oplock check found, and the reparse point it met.
#[derive(Clone, Copy, Debug, Default)]
pub struct OplockOutcome {
    /// It started or met a break it does not wait for (`FILE_COMPLETE_IF_OPLOCKED`).
    pub in_progress: bool,
    /// The file has a Batch or Filter oplock, checked before the share access.
    pub batch: bool,
    /// The tag of the reparse point the create met (it ends `STATUS_REPARSE`, [`super::reparse`]).
    pub reparse: Option<u32>,
}

/// Where a create's oplock check reports: its outcome and the oplock work to do.
pub type OplockOut<'a> = (&'a mut OplockOutcome, &'a mut Vec<super::oplock::After>);

/// What a create's oplock check needs ([`Kernel::open_existing`]).
type CreateOplock<'a> = (Call, usize, OplockOut<'a>);

/// `IRP_MJ_CREATE`.
pub fn create(call: Call) -> NTSTATUS {
    let sl = call.sl();
    let fo = sl.FileObject;
    if fo.is_null() {
        return call.done(Status::INVALID_PARAMETER, 0);
    }
    // SAFETY: `Create` is the member in use for IRP_MJ_CREATE.
    let p = *unsafe { params::io::<params::IoCreate>(&sl.Parameters) };
    // SAFETY: the I/O manager's security context, or null.
    let access = unsafe { p.SecurityContext.as_ref() }.map_or(0, |s| s.DesiredAccess);
    // SAFETY: the request's live file object.
    let f = unsafe { irpx::file(fo) };
    // SAFETY: the file object's name, valid while the create runs.
    let name = String::from_utf16_lossy(unsafe { irpx::units(&f.FileName) });
    let related = f.RelatedFileObject;
    if call.ext.role == Role::Namespace as u8 && name.is_empty() && related.is_null() {
        // An open of the device itself (`IoGetDeviceObjectPointer(\Device\Mup)`) names no
        // file; for pipes and mailslots it opens the namespace's root once the volume is there.
        let root = call.ty != FsType::Mup
            && kernel::with(|k| {
                k.fs.mounts.iter().any(|m| m.ty == call.ty && m.state == MountState::Mounted)
            });
        if !root {
            return call.done(Status::SUCCESS, create_result::OPENED);
        }
    }
    let req = CreateRequest {
        access,
        share: u32::from(p.ShareAccess),
        disposition: p.Options >> 24,
        options: p.Options & 0x00FF_FFFF,
        attributes: u32::from(p.FileAttributes),
        volume_open: f.Flags & fo::VOLUME_OPEN != 0 || (name.is_empty() && related.is_null()),
    };
    let mut after = Vec::new();
    let mut o = OplockOutcome::default();
    let r = kernel::with(|k| k.fs_create(call, fo, &name, related, req, (&mut o, &mut after)));
    let s = match r {
        // FILE_COMPLETE_IF_OPLOCKED: opened while the break it started is unacknowledged.
        Ok(info) if o.in_progress => {
            call.done(super::oplock::STATUS_OPLOCK_BREAK_IN_PROGRESS, info)
        }
        Ok(info) => call.done(Status::SUCCESS, info),
        // Waiting for an oplock break's acknowledgement: pended, dispatched again after it.
        Err(Status::PENDING) => crate::irpx::STATUS_PENDING,
        // A reparse point: the tag in the information, its buffer in the IRP's auxiliary buffer.
        Err(Status::REPARSE) => call.done(Status::REPARSE, o.reparse.unwrap_or(0) as usize),
        // Refused by the share check after a Batch or Filter oplock's check: the information says
        // a break is under way (FastFat's, CDFS's and UDFS's FILE_OPBATCH_BREAK_UNDERWAY).
        Err(Status::SHARING_VIOLATION) if o.batch => {
            call.done(Status::SHARING_VIOLATION, super::oplock::FILE_OPBATCH_BREAK_UNDERWAY)
        }
        Err(s) => call.done(s, 0),
    };
    if !after.is_empty() {
        super::oplock::finish(after);
    }
    s
}

/// True for a character a file name may not contain.
fn invalid_char(c: char) -> bool {
    (c as u32) < 0x20 || matches!(c, '<' | '>' | ':' | '"' | '/' | '|' | '?' | '*')
}

/// True for a valid file-name component.
pub(crate) fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.chars().count() <= 255
        && !c.chars().any(invalid_char)
        && c != "."
        && c != ".."
}

impl Kernel {
    /// The mount a create names: the volume device's, or for a namespace device the share's
    /// (mup) or the namespace's (pipes, mailslots). Returns the mount and the components left.
    fn create_target<'n>(&self, call: Call, name: &'n str) -> Result<(u32, Vec<&'n str>), Status> {
        let comps: Vec<&str> = name.split('\\').filter(|c| !c.is_empty()).collect();
        if call.ext.role == Role::Volume as u8 {
            return Ok((call.ext.mount, comps));
        }
        match call.ty {
            FsType::Mup => {
                let (Some(server), Some(share)) = (comps.first(), comps.get(1)) else {
                    return Err(Status::BAD_NETWORK_NAME);
                };
                let key = format!("{server}\\{share}").to_uppercase();
                let m = self.fs.share_mount(&key).ok_or(Status::BAD_NETWORK_NAME)?;
                Ok((m, comps[2..].to_vec()))
            }
            _ => {
                let m = self
                    .fs
                    .mounts
                    .iter()
                    .position(|m| m.ty == call.ty && m.state == MountState::Mounted)
                    .ok_or(Status::OBJECT_NAME_NOT_FOUND)?;
                Ok((m as u32, comps))
            }
        }
    }

    /// The file system's create: the create's information; `Err(STATUS_PENDING)` when it waits
    /// for an oplock break (pended). `oplock` says what its oplock check found and holds the
    /// oplock work to do.
    pub(crate) fn fs_create(
        &mut self,
        call: Call,
        fo: *mut FILE_OBJECT,
        name: &str,
        related: *mut FILE_OBJECT,
        req: CreateRequest,
        oplock: OplockOut<'_>,
    ) -> Result<usize, Status> {
        let (mount, comps) = self.create_target(call, name)?;
        let m = &self.fs.mounts[mount as usize];
        if m.state != MountState::Mounted {
            return Err(Status::VOLUME_DISMOUNTED);
        }
        if m.locked_by.is_some_and(|l| l != fo as usize) {
            return Err(Status::ACCESS_DENIED);
        }
        let ty = m.ty;
        let volume = m.volume;
        let desc = ty.desc();
        let now = crate::fs::media::EPOCH_2026 + self.sched.now as i64;
        if req.options & co::DIRECTORY_FILE != 0 && req.options & co::NON_DIRECTORY_FILE != 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        if req.disposition > disp::OVERWRITE_IF {
            return Err(Status::INVALID_PARAMETER);
        }
        if req.options & co::DELETE_ON_CLOSE != 0 && req.access & acc::DELETE == 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        let mut share: ShareRequest = [
            req.access & (acc::FILE_READ_DATA | acc::FILE_EXECUTE) != 0,
            req.access & (acc::FILE_WRITE_DATA | acc::FILE_APPEND_DATA) != 0,
            req.access & acc::DELETE != 0,
            req.share & crate::nt::share::READ != 0,
            req.share & crate::nt::share::WRITE != 0,
            req.share & crate::nt::share::DELETE != 0,
        ];
        let modifying = acc::FILE_WRITE_DATA
            | acc::FILE_APPEND_DATA
            | acc::FILE_WRITE_ATTRIBUTES
            | acc::FILE_WRITE_EA
            | acc::DELETE;
        let namespace_root = req.volume_open && ty.is_namespace();
        let (fcb, information) = if req.volume_open && !namespace_root {
            // FastFat's create: a volume is not a directory, and its FatOpenVolume only opens.
            if req.options & co::DIRECTORY_FILE != 0 {
                return Err(Status::NOT_A_DIRECTORY);
            }
            if !matches!(req.disposition, disp::OPEN | disp::OPEN_IF) {
                return Err(Status::ACCESS_DENIED);
            }
            let fcb = self.fs.mounts[mount as usize].volume_fcb;
            let f = &self.fs.fcbs[&fcb];
            if !f.share.check(share) {
                return Err(Status::SHARING_VIOLATION);
            }
            (fcb, create_result::OPENED)
        } else {
            if ty == FsType::Raw && !comps.is_empty() {
                return Err(Status::INVALID_PARAMETER);
            }
            // A stream relative to its file's handle (`:s`): the name from the file's directory.
            let relative = self.relative_stream(mount, related, &comps)?;
            let renamed = relative.as_ref().map(|(_, c)| c.clone()).unwrap_or_default();
            let mut comps = if relative.is_some() { vec![renamed.as_str()] } else { comps };
            let stream = super::streams::split(ty, &mut comps)?;
            if comps.iter().any(|c| !valid_component(c)) {
                return Err(Status::OBJECT_NAME_INVALID);
            }
            let start = if let Some((dir, _)) = relative {
                dir
            } else if related.is_null() {
                ROOT
            } else {
                let rel = self.fcb_of(related).ok_or(Status::INVALID_PARAMETER)?;
                if rel.mount != mount || rel.node == VOLUME_NODE {
                    return Err(Status::INVALID_PARAMETER);
                }
                rel.node
            };
            let media = &self.volumes.list[volume.index()].media;
            if !media.node(start).is_dir() {
                return Err(Status::INVALID_PARAMETER);
            }
            // A reparse point on the way: an intermediate component's always; the last one's
            // unless the create opens the reparse point itself (`FILE_OPEN_REPARSE_POINT`) or
            // would create the name (`FILE_CREATE`: the name exists, a collision).
            // A relative stream open meets none: its file is open already (choice).
            let last = req.options & super::reparse::FILE_OPEN_REPARSE_POINT == 0
                && req.disposition != disp::CREATE;
            let on_path =
                if relative.is_some() { None } else { media.reparse_on_path(start, &comps, last) };
            if let Some((index, node)) = on_path {
                let tag = self.reparse_met(call.irp, name, index, mount, node)?;
                oplock.0.reparse = Some(tag);
                return Err(Status::REPARSE);
            }
            let media = &self.volumes.list[volume.index()].media;
            let found = media.lookup(start, &comps);
            // FastFat's create: when the longest prefix of the name that is open is pending
            // delete (the file itself, or the directory a new file would go in), the open fails
            // with STATUS_DELETE_PENDING before any disposition or type check.
            let prefix = match found {
                Ok(node) | Err(Lookup::NameNotFound(node)) => Some(node),
                Err(_) => None,
            };
            let open = &self.fs.mounts[mount as usize].fcbs_by_node;
            if prefix.and_then(|n| open.get(&n)).is_some_and(|f| self.fs.fcbs[f].delete_pending) {
                return Err(Status::DELETE_PENDING);
            }
            self.stream_precheck(mount, found, &stream)?;
            if let super::streams::StreamSpec::Named(s) = &stream {
                let leaf = comps.last().copied().unwrap_or_default();
                let o = (call, fo as usize, oplock);
                self.open_named_stream(mount, found, leaf, s, req, &mut share, modifying, now, o)?
            } else {
                match found {
                    Ok(node) => {
                        let o = (call, fo as usize, oplock);
                        self.open_existing(mount, node, req, &mut share, modifying, now, o)?
                    }
                    Err(Lookup::NameNotFound(dir)) => {
                        if matches!(req.disposition, disp::OPEN | disp::OVERWRITE) {
                            return Err(Status::OBJECT_NAME_NOT_FOUND);
                        }
                        if desc.read_only {
                            return Err(Status::ACCESS_DENIED);
                        }
                        let is_dir = req.options & co::DIRECTORY_FILE != 0;
                        if is_dir && !matches!(req.disposition, disp::CREATE | disp::OPEN_IF) {
                            return Err(Status::INVALID_PARAMETER);
                        }
                        // FastFat's FatCommonCreate: no new directory with the temporary bit;
                        // its FatCreateNewDirectory and FatCreateNewFile: "DeleteOnClose and
                        // ReadOnly are not compatible". Not for pipes and mailslots (no source).
                        if !ty.is_stream() {
                            if is_dir && req.attributes & attr::TEMPORARY != 0 {
                                return Err(Status::INVALID_PARAMETER);
                            }
                            let doc = req.options & co::DELETE_ON_CLOSE != 0;
                            if doc && req.attributes & attr::READONLY != 0 {
                                return Err(Status::CANNOT_DELETE);
                            }
                        }
                        let leaf = comps.last().copied().unwrap_or_default();
                        let media = &mut self.volumes.list[volume.index()].media;
                        let asked = req.attributes & (ty.kept_attributes() | !attr::SETTABLE);
                        let node = media.create(dir, leaf, is_dir, asked, now);
                        // A pipe or mailslot keeps the attributes asked, or the archive one (a
                        // choice kept from before; docs/simulator.md, "Pipes and mailslots").
                        if ty.is_stream() && req.attributes & !attr::NORMAL != 0 {
                            media.node_mut(node).attributes = req.attributes & !attr::DIRECTORY;
                        }
                        let added = super::notify::action::ADDED;
                        self.report_change(mount, node, added, super::notify::name_change(is_dir));
                        let fcb = self.fcb_for(mount, node);
                        (fcb, create_result::CREATED)
                    }
                    Err(Lookup::PathNotFound | Lookup::NotADirectory) => {
                        return Err(Status::OBJECT_PATH_NOT_FOUND);
                    }
                }
            }
        };
        // Share access and the file object's fields (IoSetShareAccess).
        let f = self.fs.fcbs.get_mut(&fcb).ok_or(Status::INVALID_PARAMETER)?;
        f.share.add(share);
        f.refs += 1;
        f.handles += 1;
        let sop = f.sop();
        let ccb = self.new_ccb(fcb, fo as usize, req.access, share);
        if let Some(c) = self.fs.ccbs.get_mut(&ccb) {
            c.delete_on_close = req.options & co::DELETE_ON_CLOSE != 0;
        }
        let m = &mut self.fs.mounts[mount as usize];
        m.open_files += 1;
        let vpb = m.vpb;
        // SAFETY: the request's live file object; the file system fills these during create.
        let file = unsafe { irpx::file(fo) };
        file.FsContext = fcb as *mut _;
        file.FsContext2 = ccb as *mut _;
        file.SectionObjectPointer = sop;
        if ty == FsType::Npfs {
            // NPFS marks its file objects as cached (a non-NULL `PrivateCacheMap` it never
            // dereferences), so that the I/O manager offers every pipe read and write to its
            // fast-I/O routines (docs/simulator.md, "User-mode I/O").
            file.PrivateCacheMap = std::ptr::dangling_mut();
        }
        // A pipe's or mailslot's file object says what it is (NPFS's `NpSetFileObject`, MSFS's
        // `MsSetFileObject`): the I/O manager lets an asynchronous one read and write without
        // an offset (docs/simulator.md, "Asynchronous I/O").
        let stream = self.fs.fcbs.get(&fcb).is_some_and(|f| {
            f.node != VOLUME_NODE && !self.volumes.list[volume.index()].media.node(f.node).is_dir()
        });
        match ty {
            FsType::Npfs if stream => file.Flags |= fo::NAMED_PIPE,
            FsType::Msfs if stream => file.Flags |= fo::MAILSLOT,
            _ => {}
        }
        if file.Vpb.is_null() && !vpb.is_null() {
            file.Vpb = vpb;
        }
        let [r, w, d, sr, sw, sd] = share;
        file.ReadAccess = r;
        file.WriteAccess = w;
        file.DeleteAccess = d;
        file.SharedRead = sr;
        file.SharedWrite = sw;
        file.SharedDelete = sd;
        if file.Flags & fo::NO_INTERMEDIATE_BUFFERING == 0 {
            file.Flags |= fo::CACHE_SUPPORTED;
        }
        Ok(information)
    }

    /// Opens an existing node under the disposition rules; returns its FCB and the create
    /// result. `oplock`: the create, its file object, where to say that it started a break it
    /// does not wait for, and the oplock work to do; `Err(STATUS_PENDING)` when it waits.
    #[allow(clippy::too_many_arguments, reason = "the create's parts, as fs_create has them")]
    pub(super) fn open_existing(
        &mut self,
        mount: u32,
        node: NodeId,
        req: CreateRequest,
        share: &mut ShareRequest,
        modifying: u32,
        now: i64,
        oplock: CreateOplock<'_>,
    ) -> Result<(usize, usize), Status> {
        let (call, fo, (outcome, after)) = oplock;
        let m = &self.fs.mounts[mount as usize];
        let ty = m.ty;
        let volume = m.volume;
        let media = &self.volumes.list[volume.index()].media;
        let n = media.node(node);
        let is_dir = n.is_dir();
        // A named stream has its file's attributes.
        let attributes = media.node(media.file_of(node)).attributes;
        // FsRtlCheckOplock on the create. A Batch or Filter oplock is checked first, against the
        // access as asked: before the share check (a handle it keeps open would refuse the open),
        // and before the FILE_CREATE collision and the read-only attribute's refusals, as
        // FastFat's FatOpenExistingFcb has it. Every oplock is checked after the share check,
        // against the access an overwrite or a supersede implies too (FatOpenExistingFcb adds it
        // in place "so that the Oplock check proceeds against any added access").
        let existing = self.fs.mounts[mount as usize].fcbs_by_node.get(&node).copied();
        let held = match existing {
            Some(p) if !self.fs.oplocks.is_empty() => self.fs.oplocks.get(&p).filter(|o| !o.idle()),
            _ => None,
        };
        // The root of a pipe or mailslot namespace, or the file system itself, opens whatever
        // the disposition (NPFS's NpFsdCreate; MSFS taken to do the same, a choice).
        let any = ty.is_stream() && node == ROOT;
        let overwrite = !any
            && matches!(req.disposition, disp::OVERWRITE | disp::OVERWRITE_IF | disp::SUPERSEDE);
        let implied = match req.disposition {
            _ if any => 0,
            disp::SUPERSEDE => acc::DELETE,
            disp::OVERWRITE | disp::OVERWRITE_IF => {
                acc::FILE_WRITE_DATA | acc::FILE_WRITE_EA | acc::FILE_WRITE_ATTRIBUTES
            }
            _ => 0,
        };
        let want = |o: &super::oplock::Oplock, access: u32| {
            super::oplock::create_want(o, access, req.share, req.disposition, req.options)
        };
        let (early, late) = match held {
            Some(o) => {
                (o.batch_or_filter().then(|| want(o, req.access)), want(o, req.access | implied))
            }
            None => (None, super::oplock::Want::Nothing),
        };
        // An RH oplock of another handle: a create the share access refuses breaks its handle
        // caching first (FsRtlOplockBreakH), and waits for the acknowledgement.
        let handle_cached = late != super::oplock::Want::Nothing
            && held.is_some_and(|o| o.handle_cached_by_other(fo));
        let complete_if_oplocked = req.options & super::oplock::FILE_COMPLETE_IF_OPLOCKED != 0;
        let mut check = |k: &mut Kernel, p: usize, want, batch: bool| {
            match k.oplock_check(p, fo, call, want, complete_if_oplocked, after) {
                Check::Proceed => {}
                Check::BreakInProgress => outcome.in_progress = true,
                Check::Wait => return Err(Status::PENDING),
            }
            outcome.batch |= batch;
            Ok(())
        };
        // An open of a namespace file system's device itself (no name: NPFS's open of the file
        // system, as `IoGetDeviceObjectPointer` makes it with FILE_NON_DIRECTORY_FILE) is not
        // a directory open, though the simulator serves it with the root's FCB.
        let is_a_directory =
            is_dir && req.options & co::NON_DIRECTORY_FILE != 0 && !req.volume_open;
        let not_a_directory = !is_dir && req.options & co::DIRECTORY_FILE != 0;
        let opens = any || matches!(req.disposition, disp::OPEN | disp::OPEN_IF);
        // CDFS and UDFS check the type, then refuse every disposition but FILE_OPEN(_IF) with
        // STATUS_ACCESS_DENIED, before any oplock check (CdCommonCreate, UdfCommonCreate).
        if ty.desc().read_only {
            if is_a_directory {
                return Err(Status::FILE_IS_A_DIRECTORY);
            }
            if not_a_directory {
                return Err(Status::NOT_A_DIRECTORY);
            }
            if !opens {
                return Err(Status::ACCESS_DENIED);
            }
        }
        // A file: FILE_CREATE collides before the type checks (FastFat's FatOpenExistingFcb),
        // after a Batch or Filter oplock's check when there is one (below).
        if !is_dir && early.is_none() && req.disposition == disp::CREATE {
            return Err(Status::OBJECT_NAME_COLLISION);
        }
        if is_a_directory {
            return Err(Status::FILE_IS_A_DIRECTORY);
        }
        if not_a_directory {
            return Err(Status::NOT_A_DIRECTORY);
        }
        // A directory opens only: the root refuses any other disposition with
        // STATUS_ACCESS_DENIED (after FILE_DELETE_ON_CLOSE's STATUS_CANNOT_DELETE), another
        // directory with STATUS_OBJECT_NAME_COLLISION (FastFat's FatCommonCreate,
        // FatOpenRootDcb, FatOpenExistingDcb and FatOpenExistingDirectory). A pipe or mailslot
        // namespace's root opens (`any`, above).
        if is_dir && !opens && !req.volume_open {
            if node == ROOT && req.options & co::DELETE_ON_CLOSE != 0 {
                return Err(Status::CANNOT_DELETE);
            }
            return Err(if node == ROOT {
                Status::ACCESS_DENIED
            } else {
                Status::OBJECT_NAME_COLLISION
            });
        }
        if is_dir && overwrite {
            return Err(Status::INVALID_PARAMETER);
        }
        if ty.desc().read_only && (req.access & modifying != 0 || overwrite) {
            return Err(Status::ACCESS_DENIED);
        }
        if let (Some(p), Some(w)) = (existing, early) {
            if self.fs.fcbs[&p].delete_pending {
                return Err(Status::DELETE_PENDING);
            }
            check(self, p, w, true)?;
            if req.disposition == disp::CREATE {
                return Err(Status::OBJECT_NAME_COLLISION);
            }
        }
        if attributes & attr::READONLY != 0 {
            // MS-FSA 2.1.5.1.2.1: the read-only attribute refuses write access to a data file
            // only; a read-only directory may be opened to add files and subdirectories. The
            // access an overwrite implies (FILE_WRITE_DATA) is refused with it, a supersede's
            // (DELETE) is not (FastFat's FatOpenExistingFcb adds it before FatCheckFileAccess).
            let write = (req.access | implied) & (acc::FILE_WRITE_DATA | acc::FILE_APPEND_DATA);
            if write != 0 && !is_dir {
                return Err(Status::ACCESS_DENIED);
            }
            if req.options & co::DELETE_ON_CLOSE != 0 {
                return Err(Status::CANNOT_DELETE);
            }
        }
        // A supersede or an overwrite must keep a hidden or system file's attribute (FastFat's
        // FatOpenExistingFcb; the CreateFile reference page, CREATE_ALWAYS).
        let keep = attributes & (attr::HIDDEN | attr::SYSTEM);
        if overwrite && keep & !req.attributes != 0 {
            return Err(Status::ACCESS_DENIED);
        }
        if node == ROOT && req.options & co::DELETE_ON_CLOSE != 0 {
            return Err(Status::CANNOT_DELETE);
        }
        // An overwrite of a file's default stream asking DELETE (a supersede implies it) breaks
        // its named streams' Batch and Filter oplocks first, before the share check (`streams`).
        if overwrite && (req.access | implied) & acc::DELETE != 0 {
            for (p, want) in self.stream_oplocks_to_break(mount, node, &req, implied) {
                check(self, p, want, false)?;
            }
        }
        // The access an overwrite or a supersede implies is checked and recorded as share access
        // too (FatOpenExistingFcb adds it to the desired access before its IoCheckShareAccess;
        // until December 7 an attributes-only overwrite was let past a handle that shares no
        // writes).
        share[1] |= implied & acc::FILE_WRITE_DATA != 0;
        share[2] |= implied & acc::DELETE != 0;
        if let Some(p) = existing {
            let f = &self.fs.fcbs[&p];
            if f.delete_pending {
                return Err(Status::DELETE_PENDING);
            }
            if !f.share.check(*share) || !self.streams_share_delete(mount, node, *share) {
                if handle_cached {
                    let want = super::oplock::Want::Handle { access: req.access, share: req.share };
                    check(self, p, want, false)?;
                }
                return Err(Status::SHARING_VIOLATION);
            }
            if overwrite && self.sections.has_views(p) {
                return Err(Status::USER_MAPPED_FILE);
            }
            check(self, p, late, false)?;
        }
        if existing.is_none() && !self.streams_share_delete(mount, node, *share) {
            return Err(Status::SHARING_VIOLATION);
        }
        if overwrite {
            self.overwrite_streams(mount, node);
        }
        let fcb = self.fcb_for(mount, node);
        let information = if overwrite {
            let media = &mut self.volumes.list[volume.index()].media;
            if let super::media::NodeKind::File { data } = &mut media.node_mut(node).kind {
                data.clear();
            }
            // A named stream's times and attributes are its file's.
            let file = media.file_of(node);
            let n = media.node_mut(file);
            n.times[2] = now;
            n.times[3] = now;
            // The attributes asked, with FILE_ATTRIBUTE_ARCHIVE: a supersede's replace the
            // file's, an overwrite's are added to them (FastFat's FatSupersedeOrOverwriteFile).
            // A reparse point the create opened itself (`FILE_OPEN_REPARSE_POINT`) stays, and so
            // does its attribute, which the create's attributes never set (not settable).
            let link = n.attributes & super::reparse::FILE_ATTRIBUTE_REPARSE_POINT;
            let asked = (req.attributes & ty.kept_attributes()) | attr::ARCHIVE;
            n.attributes = if req.disposition == disp::SUPERSEDE {
                asked | link
            } else {
                n.attributes | asked
            };
            if let Some(f) = self.fs.fcbs.get(&fcb) {
                f.set_size(0);
            }
            // At once, inside the create (FastFat's FatSupersedeOrOverwriteFile).
            use super::notify::{action, change};
            let filter = change::LAST_WRITE | change::ATTRIBUTES | change::SIZE;
            self.report_change(mount, node, action::MODIFIED, filter);
            if req.disposition == disp::SUPERSEDE {
                create_result::SUPERSEDED
            } else {
                create_result::OVERWRITTEN
            }
        } else {
            create_result::OPENED
        };
        Ok((fcb, information))
    }
}
