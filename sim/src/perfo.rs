//! FsRtl per-file-object contexts (docs/simulator.md, "Per-file-object contexts (FsRtl)"): the
//! `FSRTL_PER_FILEOBJECT_CONTEXT` structures legacy filters associate with a file object
//! (`FsRtlInsertPerFileObjectContext`, `FsRtlLookupPerFileObjectContext`,
//! `FsRtlRemovePerFileObjectContext`, WRK `fsrtl/filtrctx.c`).
//!
//! Windows keeps them on a list in a control block hung off the file object's extension; the
//! simulator keeps each file object's list beside the file object (head first, as
//! `InsertHeadList` leaves it) and does not write the contexts' `Links`: drivers reach the list
//! only through the three routines. There is no `FreeCallback`: "Filter drivers must explicitly
//! remove all context they associate with a file object (otherwise the underlying filesystem
//! will BugCheck at close). This should be done at IRP_CLOSE time" (WRK
//! `FsRtlRemovePerFileObjectContext`); as the I/O manager deletes the file object,
//! `FsRtlPTeardownPerFileObjectContexts` asserts the list is empty and frees the control block.
//! The verifier reports what a driver left there (`PER_FILE_OBJECT_CONTEXT_LINKED_AT_CLOSE`),
//! as its image unloads (`PER_FILE_OBJECT_CONTEXT_LINKED_AT_UNLOAD`) and as its pool is freed
//! (`PER_FILE_OBJECT_CONTEXT_FREED_WHILE_LINKED`).

use fsfilter::Status;
use windows_sys::Wdk::Storage::FileSystem::FSRTL_PER_FILEOBJECT_CONTEXT;

use crate::events::Rule;
use crate::ids::ImageId;
use crate::kernel::{FastMap, Kernel};

/// A context linked by `FsRtlInsertPerFileObjectContext`.
#[derive(Clone, Copy, Debug)]
pub struct LinkedFo {
    /// The file object it is associated with.
    pub fo: usize,
    /// The image that inserted it (None: kernel code).
    pub image: Option<ImageId>,
    /// Insertion order, for reports in a stable order.
    pub seq: u64,
}

/// The per-file-object contexts of the simulated file objects.
#[derive(Default)]
pub struct PerFileObjectContexts {
    /// The contexts linked now, by address.
    pub linked: FastMap<usize, LinkedFo>,
    /// Each file object's list, head first.
    lists: FastMap<usize, Vec<usize>>,
    next_seq: u64,
}

impl Kernel {
    /// `FsRtlInsertPerFileObjectContext`: `STATUS_INVALID_PARAMETER` for a NULL file object
    /// (WRK and Learn); the context goes at the head of the file object's list with no search
    /// for duplicates. Every file object of the simulator supports them (Learn lists no
    /// `STATUS_INVALID_DEVICE_REQUEST`: since Windows Vista the I/O manager allocates the file
    /// object's extension on demand, where the WRK's answers it for a file object without
    /// `FO_FILE_OBJECT_HAS_EXTENSION`).
    pub(crate) fn per_fo_insert(&mut self, fo: usize, ctx: usize) -> Status {
        if fo == 0 {
            return Status::INVALID_PARAMETER;
        }
        if !self.files.map.contains_key(&fo) {
            self.report_current(
                Rule::Bugcheck,
                "FsRtlInsertPerFileObjectContext of something that is no live file object",
            );
            return Status::INVALID_PARAMETER;
        }
        if ctx == 0 {
            self.report_current(
                Rule::Bugcheck,
                "FsRtlInsertPerFileObjectContext with a NULL context, which Windows dereferences",
            );
            return Status::INVALID_PARAMETER;
        }
        if let Some(l) = self.perfo.linked.get(&ctx) {
            let same = if l.fo == fo { "this file object" } else { "another file object" };
            self.report_current(
                Rule::PerFileObjectContextMisuse,
                format!(
                    "FsRtlInsertPerFileObjectContext of a context already linked on {same} (the \
                     list would be corrupted); left as it was"
                ),
            );
            return Status::SUCCESS;
        }
        // SAFETY: the caller's context, initialized (FsRtlInitPerFileObjectContext).
        let c = unsafe { &*(ctx as *const FSRTL_PER_FILEOBJECT_CONTEXT) };
        if c.OwnerId.is_null() {
            self.report_current(
                Rule::PerFileObjectContextMisuse,
                "FsRtlInsertPerFileObjectContext of a context with a NULL OwnerId \
                 (FsRtlInitPerFileObjectContext sets it); linked all the same",
            );
        }
        self.perfo.lists.entry(fo).or_default().insert(0, ctx);
        let image = self.current_image();
        let seq = self.perfo.next_seq;
        self.perfo.next_seq += 1;
        self.perfo.linked.insert(ctx, LinkedFo { fo, image, seq });
        Status::SUCCESS
    }

    /// The first context of the file object's list that matches (WRK
    /// `FsRtlLookupPerFileObjectContext`): with an `instance`, the first whose `OwnerId` and
    /// `InstanceId` both are equal; with an `owner` only, the first of that owner; with neither,
    /// the first. 0 when none (or a NULL file object).
    pub(crate) fn per_fo_find(&self, fo: usize, owner: usize, instance: usize) -> usize {
        let Some(list) = self.perfo.lists.get(&fo) else { return 0 };
        let matches = |&e: &usize| {
            // SAFETY: a linked context: its memory is live (pool frees unlink them).
            let c = unsafe { &*(e as *const FSRTL_PER_FILEOBJECT_CONTEXT) };
            let (o, i) = (c.OwnerId as usize, c.InstanceId as usize);
            if instance != 0 { o == owner && i == instance } else { owner == 0 || o == owner }
        };
        list.iter().copied().find(matches).unwrap_or(0)
    }

    fn per_fo_unlink(&mut self, ctx: usize) -> Option<LinkedFo> {
        let l = self.perfo.linked.remove(&ctx)?;
        if let Some(list) = self.perfo.lists.get_mut(&l.fo) {
            list.retain(|&e| e != ctx);
            if list.is_empty() {
                self.perfo.lists.remove(&l.fo);
            }
        }
        Some(l)
    }

    /// `FsRtlRemovePerFileObjectContext`: the context found is unlinked and returned; one
    /// another driver inserted is reported.
    pub(crate) fn per_fo_remove(&mut self, fo: usize, owner: usize, instance: usize) -> usize {
        let found = self.per_fo_find(fo, owner, instance);
        if found == 0 {
            return 0;
        }
        let inserter = self.per_fo_unlink(found).and_then(|l| l.image);
        let caller = self.current_image();
        if let (Some(theirs), Some(_)) = (inserter, caller) {
            if inserter != caller {
                let name = self.image_name(theirs);
                self.report_current(
                    Rule::PerFileObjectContextMisuse,
                    format!(
                        "FsRtlRemovePerFileObjectContext took a context {name} inserted (OwnerId \
                         {owner:#x}, InstanceId {instance:#x})"
                    ),
                );
            }
        }
        found
    }

    /// A lookup or removal with an `InstanceId` and no `OwnerId`: reported; the search goes on
    /// as Windows' does (both ids compared).
    pub(crate) fn per_fo_check_ids(&mut self, routine: &str, owner: usize, instance: usize) {
        if owner == 0 && instance != 0 {
            self.report_current(
                Rule::PerFileObjectContextMisuse,
                format!(
                    "{routine} with an InstanceId and a NULL OwnerId (OwnerId must be set then)"
                ),
            );
        }
    }

    /// The I/O manager deletes file object `fo` (after its `IRP_MJ_CLOSE`, or a failed open):
    /// `FsRtlPTeardownPerFileObjectContexts` asserts that no context is left; what is left is
    /// reported against each driver that inserted it, and dropped.
    pub(crate) fn per_fo_file_object_freed(&mut self, fo: usize) {
        let Some(list) = self.perfo.lists.remove(&fo) else { return };
        let mut by: Vec<(u64, Option<ImageId>)> = Vec::new();
        for ctx in list {
            if let Some(l) = self.perfo.linked.remove(&ctx) {
                by.push((l.seq, l.image));
            }
        }
        by.sort_unstable_by_key(|b| b.0);
        let mut images: Vec<Option<ImageId>> = Vec::new();
        for (_, i) in by {
            if !images.contains(&i) {
                images.push(i);
            }
        }
        for image in images {
            let driver = image.map(|i| self.image_name(i));
            self.report(
                Rule::PerFileObjectContextLinkedAtClose,
                driver,
                "an FSRTL_PER_FILEOBJECT_CONTEXT is still linked on a file object the I/O \
                 manager deletes (remove it with FsRtlRemovePerFileObjectContext at IRP_MJ_CLOSE; \
                 Windows asserts the list empty and frees the list with it); dropped",
            );
        }
    }

    /// Pool at `start` of `size` bytes is being freed: a context still linked in it is reported
    /// and unlinked.
    pub(crate) fn per_fo_pool_freed(&mut self, start: usize, size: usize) {
        let inside = |a: usize| a >= start && a - start < size.max(1);
        let mut caught: Vec<(u64, usize)> = self
            .perfo
            .linked
            .iter()
            .filter(|(p, _)| inside(**p))
            .map(|(p, l)| (l.seq, *p))
            .collect();
        if caught.is_empty() {
            return;
        }
        caught.sort_unstable();
        for (_, p) in &caught {
            self.per_fo_unlink(*p);
        }
        self.report_current(
            Rule::PerFileObjectContextFreedWhileLinked,
            format!(
                "pool freed while it holds {} FSRTL_PER_FILEOBJECT_CONTEXT(s) still linked on a \
                 file object (remove it with FsRtlRemovePerFileObjectContext first); unlinked",
                caught.len()
            ),
        );
    }

    /// The per-file-object contexts an image inserted that are still linked, as the image goes.
    pub(crate) fn per_fo_linked_by(&self, image: ImageId) -> usize {
        self.perfo.linked.values().filter(|l| l.image == Some(image)).count()
    }
}
