//! Named data streams (NTFS, ReFS and the shares, the file systems that report
//! `FILE_NAMED_STREAMS`): `dir\file:stream`, `dir\file:stream:$DATA` and `dir\file::$DATA`.
//!
//! Each named stream is a node of its own in the volume's [`Media`], kept in its file's
//! `streams` (by upper-cased name) and in no directory, so a directory listing never shows it.
//! It has its own FCB (its own `FsContext`, per-stream filter contexts, share access, oplock,
//! section object pointers, sizes and bytes); its file's attributes, times and index are the
//! file's (Learn, "File Streams (Local File Systems)": no file times of a stream's own).
//! docs/simulator.md, "Named data streams", lists each behaviour, its source and its tests.

use std::borrow::Cow;
use std::collections::BTreeMap;

use fsfilter::Status;

use super::create::{CreateRequest, OplockOut};
use super::media::{Lookup, Media, Node, NodeId, NodeKind, upcase};
use super::{Call, FsType, VOLUME_NODE};
use crate::kernel::Kernel;
use crate::nt::{attr, create_options as co, create_result, disposition as disp};

/// The stream a create's last component names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamSpec {
    /// No stream syntax: the file (or directory) itself.
    Plain,
    /// `file::$DATA`: the default data stream, named explicitly.
    Default,
    /// `file:name` or `file:name:$DATA`.
    Named(String),
}

/// True when the file system supports named streams: it reports `FILE_NAMED_STREAMS`.
pub fn supported(ty: FsType) -> bool {
    ty.desc().fs_attributes & crate::nt::fs_attr::NAMED_STREAMS != 0
}

/// Splits the stream syntax off a create's last component (on file systems with named
/// streams; elsewhere `:` stays in the name, which the create refuses with
/// `STATUS_OBJECT_NAME_INVALID` as FastFat's `FatIsNameLongUnicodeValid` does). The component
/// left is the file's name. Refused with `STATUS_OBJECT_NAME_INVALID`: more than two colons, an
/// empty file name, `file:` and `file:s:`, a stream type other than `$DATA` (any case; choice:
/// the directory types are not modelled), a stream name longer than 255 UTF-16 units or with `/`
/// (`\\` ends the component, `:` the name) or a control character (choice). Unlike a file name,
/// a stream name may have `<`, `>`, `"`, `|`, `?` and `*` (NTFS's answers as WinBtrfs's test
/// suite states them, src/tests/streams.cpp).
pub fn split(ty: FsType, comps: &mut [&str]) -> Result<StreamSpec, Status> {
    let Some(last) = comps.last_mut() else { return Ok(StreamSpec::Plain) };
    if !supported(ty) || !last.contains(':') {
        return Ok(StreamSpec::Plain);
    }
    let mut parts = last.split(':');
    let file = parts.next().unwrap_or_default();
    let stream = parts.next().unwrap_or_default();
    let kind = parts.next();
    if parts.next().is_some() || file.is_empty() {
        return Err(Status::OBJECT_NAME_INVALID);
    }
    if let Some(t) = kind {
        if upcase(t) != "$DATA" {
            return Err(Status::OBJECT_NAME_INVALID);
        }
    }
    let spec = if stream.is_empty() {
        if kind.is_none() {
            return Err(Status::OBJECT_NAME_INVALID);
        }
        StreamSpec::Default
    } else {
        let bad = stream.encode_utf16().count() > 255
            || stream.chars().any(|c| (c as u32) < 0x20 || c == '/');
        if bad {
            return Err(Status::OBJECT_NAME_INVALID);
        }
        StreamSpec::Named(stream.to_owned())
    };
    *last = file;
    Ok(spec)
}

/// The stream suffix of a path's last component (`:stream`, `:stream:$DATA`, `::$DATA`, from
/// its first colon) on a file system with named streams, cut off `comps` and returned as given;
/// empty when there is none.
pub fn stream_suffix<'a>(ty: FsType, comps: &mut [&'a str]) -> &'a str {
    let Some(last) = comps.last_mut() else { return "" };
    match last.find(':') {
        Some(at) if supported(ty) => {
            let (file, stream) = last.split_at(at);
            *last = file;
            stream
        }
        _ => "",
    }
}

impl Media {
    /// The named stream `name` of `host` (case-insensitive).
    pub fn stream(&self, host: NodeId, name: &str) -> Option<NodeId> {
        self.node(host).streams.get(&upcase(name)).copied()
    }

    /// The named streams of `host`.
    pub fn named_streams(&self, host: NodeId) -> Vec<NodeId> {
        self.node(host).streams.values().copied().collect()
    }

    /// The bytes of the named stream at `dir\\file:stream` (None when it does not exist).
    pub(super) fn stream_file(&self, path: &str) -> Option<&[u8]> {
        let (file, stream) = path.split_once(':')?;
        let comps: Vec<&str> = file.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
        let host = self.lookup(super::media::ROOT, &comps).ok()?;
        let stream = stream.strip_suffix(":$DATA").unwrap_or(stream);
        if stream.is_empty() {
            return Some(self.node(host).data());
        }
        Some(self.node(self.stream(host, stream)?).data())
    }

    /// The file a node's attributes, times and index belong to: its host for a named stream.
    pub fn file_of(&self, id: NodeId) -> NodeId {
        self.node(id).host.unwrap_or(id)
    }

    /// What a query of a node reports: for a named stream, its file with the stream's bytes.
    pub fn stream_view(&self, id: NodeId) -> Cow<'_, Node> {
        let n = self.node(id);
        match n.host {
            Some(h) => Cow::Owned(Node { kind: n.kind.clone(), ..self.node(h).clone() }),
            None => Cow::Borrowed(n),
        }
    }

    /// Creates the named stream `name` of `host` (which must not have one of that name).
    pub fn create_stream(&mut self, host: NodeId, name: &str, now: i64) -> NodeId {
        let id = self.nodes.len() as NodeId;
        let file_id = self.node(host).id;
        self.nodes.push(Node {
            name: name.to_owned(),
            parent: None,
            kind: NodeKind::File { data: Vec::new() },
            attributes: 0,
            times: [now; 4],
            id: file_id,
            live: true,
            reparse: None,
            streams: BTreeMap::new(),
            host: Some(host),
            doomed: false,
        });
        let h = self.node_mut(host);
        h.streams.insert(upcase(name), id);
        h.times[2] = now;
        h.times[3] = now;
        id
    }

    /// The stream part of [`Media::remove`]: a named stream leaves its file (true: nothing else
    /// to do); a file's named streams go with it (false: the file itself is still to remove).
    pub(super) fn remove_stream_parts(&mut self, id: NodeId) -> bool {
        if let Some(host) = self.node(id).host {
            let key = upcase(&self.node(id).name);
            self.node_mut(host).streams.remove(&key);
            let n = self.node_mut(id);
            n.live = false;
            n.kind = NodeKind::File { data: Vec::new() };
            return true;
        }
        for s in std::mem::take(&mut self.node_mut(id).streams).into_values() {
            let n = self.node_mut(s);
            n.live = false;
            n.kind = NodeKind::File { data: Vec::new() };
        }
        false
    }
}

impl Kernel {
    fn stream_media(&self, mount: u32) -> &Media {
        &self.volumes.list[self.fs.mounts[mount as usize].volume.index()].media
    }

    /// Handles open on a node's FCB.
    fn handles_on(&self, mount: u32, node: NodeId) -> u32 {
        let open = &self.fs.mounts[mount as usize].fcbs_by_node;
        open.get(&node).and_then(|p| self.fs.fcbs.get(p)).map_or(0, |f| f.handles)
    }

    /// The checks of a create's stream syntax before its disposition: a file deleted while one
    /// of its streams is open refuses every open (`STATUS_DELETE_PENDING`), and a directory has
    /// no default data stream (`dir::$DATA`: `STATUS_FILE_IS_A_DIRECTORY`; MS-FSCC 2.1.4).
    pub(super) fn stream_precheck(
        &self,
        mount: u32,
        found: Result<NodeId, Lookup>,
        spec: &StreamSpec,
    ) -> Result<(), Status> {
        let media = self.stream_media(mount);
        if let Ok(n) = found {
            if media.node(n).doomed {
                return Err(Status::DELETE_PENDING);
            }
            if *spec == StreamSpec::Default && media.node(n).is_dir() {
                return Err(Status::FILE_IS_A_DIRECTORY);
            }
        }
        Ok(())
    }

    /// A relative open of a stream (`RelatedFileObject` a file's or a directory's handle, the name
    /// `:s`, `:s:$DATA` or `::$DATA`; WinFsp's `stream_create_related` test, which runs against
    /// NTFS too): the directory to start from and the name from there (`file:s`), so the create
    /// goes on as for that name. None when the create is not one; `STATUS_INVALID_PARAMETER`
    /// relative to a named stream's handle or to the root directory (choice).
    pub(super) fn relative_stream(
        &self,
        mount: u32,
        related: *mut windows_sys::Wdk::Foundation::FILE_OBJECT,
        comps: &[&str],
    ) -> Result<Option<(NodeId, String)>, Status> {
        let ty = self.fs.mounts[mount as usize].ty;
        let [only] = comps else { return Ok(None) };
        if related.is_null() || !supported(ty) || !only.starts_with(':') {
            return Ok(None);
        }
        let rel = self.fcb_of(related).ok_or(Status::INVALID_PARAMETER)?;
        if rel.mount != mount || rel.node == VOLUME_NODE {
            return Err(Status::INVALID_PARAMETER);
        }
        let n = self.stream_media(mount).node(rel.node);
        match (n.host, n.parent) {
            (None, Some(dir)) => Ok(Some((dir, format!("{}{only}", n.name)))),
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    /// Opens or creates the named stream `name` of the file (or directory) the create found,
    /// creating the file first when it is missing and the disposition creates: returns the
    /// stream's FCB and the create's information. An existing stream is opened under the rules
    /// of any existing file ([`Kernel::open_existing`]: its own share access and oplock).
    #[allow(clippy::too_many_arguments, reason = "the create's parts, as fs_create has them")]
    pub(super) fn open_named_stream(
        &mut self,
        mount: u32,
        found: Result<NodeId, Lookup>,
        leaf: &str,
        name: &str,
        req: CreateRequest,
        share: &mut super::ShareRequest,
        modifying: u32,
        now: i64,
        oplock: (Call, usize, OplockOut<'_>),
    ) -> Result<(usize, usize), Status> {
        // A stream is never a directory: STATUS_NOT_A_DIRECTORY, as NTFS answers (WinBtrfs tests).
        if req.options & co::DIRECTORY_FILE != 0 {
            return Err(Status::NOT_A_DIRECTORY);
        }
        let creates = !matches!(req.disposition, disp::OPEN | disp::OVERWRITE);
        let vidx = self.fs.mounts[mount as usize].volume.index();
        let host = match found {
            Ok(host) => host,
            Err(Lookup::NameNotFound(dir)) => {
                // Creating `file:s` on a missing file creates the file, then the stream.
                if !creates {
                    return Err(Status::OBJECT_NAME_NOT_FOUND);
                }
                let media = &mut self.volumes.list[vidx].media;
                let host = media.create(dir, leaf, false, req.attributes, now);
                let added = super::notify::action::ADDED;
                self.report_change(mount, host, added, super::notify::name_change(false));
                let s = self.volumes.list[vidx].media.create_stream(host, name, now);
                return Ok((self.fcb_for(mount, s), create_result::CREATED));
            }
            Err(_) => return Err(Status::OBJECT_PATH_NOT_FOUND),
        };
        if let Some(s) = self.stream_media(mount).stream(host, name) {
            // A stream its file's overwrite doomed, still open: pending delete.
            if self.stream_media(mount).node(s).doomed {
                return Err(Status::DELETE_PENDING);
            }
            let (call, fo, (outcome, after)) = oplock;
            self.break_primary_oplock(mount, host, &req, (call, fo, (&mut *outcome, &mut *after)))?;
            let oplock = (call, fo, (outcome, after));
            return self.open_existing(mount, s, req, share, modifying, now, oplock);
        }
        if !creates {
            return Err(Status::OBJECT_NAME_NOT_FOUND);
        }
        // Adding a stream writes the file: not to a read-only one (choice, as a write).
        if self.stream_media(mount).node(host).attributes & attr::READONLY != 0 {
            return Err(Status::ACCESS_DENIED);
        }
        let s = self.volumes.list[vidx].media.create_stream(host, name, now);
        Ok((self.fcb_for(mount, s), create_result::CREATED))
    }

    /// Learn, "Checking the Oplock State of an IRP_MJ_CREATE operation", the file system's own
    /// check across streams: a supersede, overwrite or overwrite-if of a named stream without
    /// `FILE_SHARE_DELETE` breaks a Batch or Filter oplock on its file's primary data stream
    /// (waiting for the acknowledgement, or `STATUS_OPLOCK_BREAK_IN_PROGRESS` with
    /// `FILE_COMPLETE_IF_OPLOCKED`), against the access the disposition implies too.
    fn break_primary_oplock(
        &mut self,
        mount: u32,
        host: NodeId,
        req: &CreateRequest,
        oplock: (Call, usize, OplockOut<'_>),
    ) -> Result<(), Status> {
        use super::oplock::{Check, FILE_COMPLETE_IF_OPLOCKED, create_want};
        let (call, fo, (outcome, after)) = oplock;
        let implied = match req.disposition {
            disp::SUPERSEDE => crate::nt::access::DELETE,
            disp::OVERWRITE | disp::OVERWRITE_IF => crate::nt::access::FILE_WRITE_DATA,
            _ => return Ok(()),
        };
        if req.share & crate::nt::share::DELETE != 0 {
            return Ok(());
        }
        let open = &self.fs.mounts[mount as usize].fcbs_by_node;
        let Some(p) = open.get(&host).copied() else { return Ok(()) };
        let Some(o) = self.fs.oplocks.get(&p).filter(|o| o.batch_or_filter()) else {
            return Ok(());
        };
        let want = create_want(o, req.access | implied, req.share, req.disposition, req.options);
        let complete_if_oplocked = req.options & FILE_COMPLETE_IF_OPLOCKED != 0;
        match self.oplock_check(p, fo, call, want, complete_if_oplocked, after) {
            Check::Proceed => Ok(()),
            Check::BreakInProgress => {
                outcome.in_progress = true;
                Ok(())
            }
            Check::Wait => Err(Status::PENDING),
        }
    }

    /// Learn, "Checking the Oplock State of an IRP_MJ_CREATE operation", the second check across
    /// streams (its text as WinFsp's create.c quotes it; every copy of the page read here stops
    /// at its first words): a supersede, overwrite or overwrite-if of a file's primary data
    /// stream with DELETE access requested breaks the Batch or Filter oplock of each of its
    /// named streams that has one. The oplocks to break and what to break them for (against the
    /// access the disposition implies too, as the other check); none for a named stream's own
    /// overwrite. The caller has checked the disposition and DELETE (a supersede's implied
    /// DELETE counted, choice).
    pub(super) fn stream_oplocks_to_break(
        &self,
        mount: u32,
        node: NodeId,
        req: &CreateRequest,
        implied: u32,
    ) -> Vec<(usize, super::oplock::Want)> {
        use super::oplock::create_want;
        let media = self.stream_media(mount);
        if node == VOLUME_NODE || media.node(node).host.is_some() || self.fs.oplocks.is_empty() {
            return Vec::new();
        }
        let open = &self.fs.mounts[mount as usize].fcbs_by_node;
        let access = req.access | implied;
        media
            .named_streams(node)
            .into_iter()
            .filter_map(|s| open.get(&s).copied())
            .filter_map(|p| {
                let o = self.fs.oplocks.get(&p).filter(|o| o.batch_or_filter())?;
                Some((p, create_want(o, access, req.share, req.disposition, req.options)))
            })
            .collect()
    }

    /// Learn, "File Streams": delete access asked on a file is checked against every open
    /// stream of it; a stream open without `FILE_SHARE_DELETE` refuses it. True when the open
    /// of `node` (a file's default stream) asking `share` may go on.
    pub(super) fn streams_share_delete(&self, mount: u32, node: NodeId, share: [bool; 6]) -> bool {
        if !share[2] {
            return true;
        }
        let media = self.stream_media(mount);
        let open = &self.fs.mounts[mount as usize].fcbs_by_node;
        media.named_streams(node).into_iter().all(|s| {
            open.get(&s)
                .and_then(|p| self.fs.fcbs.get(p))
                .is_none_or(|f| f.share.shared_delete >= f.share.open)
        })
    }

    /// An overwrite or a supersede of a file's default stream removes its named streams: those
    /// with no handle open at once, each open one at its last cleanup, meanwhile pending delete
    /// (every open of it `STATUS_DELETE_PENDING`), as NTFS answers WinFsp's
    /// `stream_create_overwrite` test (docs/simulator.md). Nothing for a named stream's own
    /// overwrite, which truncates that stream only.
    pub(super) fn overwrite_streams(&mut self, mount: u32, node: NodeId) {
        let media = self.stream_media(mount);
        if media.node(node).host.is_some() {
            return;
        }
        let streams: Vec<(NodeId, bool)> = media
            .named_streams(node)
            .into_iter()
            .map(|s| (s, self.handles_on(mount, s) > 0))
            .collect();
        let vidx = self.fs.mounts[mount as usize].volume.index();
        let media = &mut self.volumes.list[vidx].media;
        for (s, open) in streams {
            if open {
                media.node_mut(s).doomed = true;
            } else {
                media.remove(s);
            }
        }
    }

    /// True when the cleanup that left `node` without handles is a named stream's that an
    /// overwrite of its file doomed ([`Kernel::overwrite_streams`]): it goes now.
    pub(super) fn doomed_stream(&self, mount: u32, node: NodeId) -> bool {
        let media = self.stream_media(mount);
        node != VOLUME_NODE && media.node(node).host.is_some() && media.node(node).doomed
    }

    /// At the last cleanup of a file's default stream with its delete pending: true when one of
    /// its named streams is still open, and the file then waits for their last cleanup, refusing
    /// opens meanwhile (choice, docs/simulator.md: NTFS deletes a file at its last handle's
    /// cleanup).
    pub(super) fn defer_file_delete(&mut self, mount: u32, node: NodeId) -> bool {
        let media = self.stream_media(mount);
        if node == VOLUME_NODE || media.node(node).host.is_some() {
            return false;
        }
        let open = media.named_streams(node).into_iter().any(|s| self.handles_on(mount, s) > 0);
        if open {
            let vidx = self.fs.mounts[mount as usize].volume.index();
            self.volumes.list[vidx].media.node_mut(node).doomed = true;
        }
        open
    }

    /// After a cleanup on `node`: when its file waits for deletion ([`defer_file_delete`]) and
    /// no handle of the file or of its streams is left, the file goes with its streams.
    ///
    /// [`defer_file_delete`]: Kernel::defer_file_delete
    pub(super) fn finish_deferred_delete(&mut self, mount: u32, node: NodeId) {
        if node == VOLUME_NODE {
            return;
        }
        let media = self.stream_media(mount);
        let host = media.file_of(node);
        if !media.node(host).doomed || !media.node(host).live {
            return;
        }
        let streams = media.named_streams(host);
        if self.handles_on(mount, host) > 0
            || streams.iter().any(|s| self.handles_on(mount, *s) > 0)
        {
            return;
        }
        let removed = super::notify::action::REMOVED;
        self.report_change(mount, host, removed, super::notify::name_change(false));
        let vidx = self.fs.mounts[mount as usize].volume.index();
        let media = &mut self.volumes.list[vidx].media;
        media.node_mut(host).doomed = false;
        media.remove(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ty: FsType, name: &str) -> (Result<StreamSpec, Status>, String) {
        let mut comps: Vec<&str> = name.split('\\').filter(|c| !c.is_empty()).collect();
        let r = split(ty, &mut comps);
        (r, comps.join("\\"))
    }

    #[test]
    fn stream_syntax_splits_on_ntfs_only() {
        let named = |s: &str| Ok(StreamSpec::Named(s.to_owned()));
        assert_eq!(spec(FsType::Ntfs, r"\d\f:s"), (named("s"), r"d\f".to_owned()));
        assert_eq!(spec(FsType::Ntfs, r"\d\f:S:$data"), (named("S"), r"d\f".to_owned()));
        assert_eq!(spec(FsType::Ntfs, r"\f::$DATA"), (Ok(StreamSpec::Default), "f".to_owned()));
        assert_eq!(spec(FsType::Ntfs, r"\f"), (Ok(StreamSpec::Plain), "f".to_owned()));
        assert_eq!(spec(FsType::Ntfs, r"\f:$DATA:$DATA"), (named("$DATA"), "f".to_owned()));
        for bad in [r"\f:", r"\f:s:", r"\f:s:$BITMAP", r"\:s", r"\f:s:$DATA:x", r"\f:a/b"] {
            assert_eq!(spec(FsType::Ntfs, bad).0, Err(Status::OBJECT_NAME_INVALID), "{bad}");
        }
        // FAT keeps the colon in the name, which the create refuses.
        assert_eq!(spec(FsType::Fat, r"\f:s"), (Ok(StreamSpec::Plain), "f:s".to_owned()));
    }

    #[test]
    fn a_files_streams_go_with_it_and_a_stream_goes_alone() {
        let mut m = Media::new(1, "", 0);
        let f = m.add_file(r"\d\f", b"file", 0);
        let s = m.create_stream(f, "One", 0);
        let t = m.create_stream(f, "two", 0);
        assert_eq!(m.stream(f, "ONE"), Some(s));
        assert_eq!(m.path_of(s), r"\d\f:One");
        assert_eq!(m.children(1, true), vec![f]);
        m.remove(s);
        assert_eq!(m.stream(f, "one"), None);
        assert!(m.node(f).live && m.node(t).live);
        m.remove(f);
        assert!(!m.node(t).live);
    }
}
