//! Operation buffers mapped on demand: the [`fsfilter::BufferSource`] both backends give their
//! operation views, so that a callback whose filter never looks at the data maps nothing.
//!
//! What a callback may see is the model's rule, the same in both backends: in a pre callback the
//! data of a write; in a post callback the data a successful read returned (up to its
//! `Information`), for in-place change. Where the data lives (an MDL, a system buffer, or memory
//! the kernel cannot touch safely) is the backend's part: the `locate` function it passes.

use core::cell::Cell;

use fsfilter::{Buffer, BufferSource, MajorFunction};

/// Where a backend's operations keep their data.
pub trait Locate {
    /// The length of operation `handle`'s read or write (`write` says which): the `Length` of its
    /// parameters. Read only when filter logic asks for the buffer.
    ///
    /// # Safety
    /// `handle` must be a live read or write operation of the backend, as `write` says.
    unsafe fn length(handle: usize, write: bool) -> usize;

    /// The base address of the data of operation `handle` (an IRP or a callback data, a read or
    /// a write as `write` says): the system address of its MDL (mapped by the call) or its system
    /// buffer; null when it has neither (a user buffer of neither-I/O).
    ///
    /// # Safety
    /// `handle` must be a live read or write operation of the backend.
    unsafe fn locate(handle: usize, write: bool) -> *mut u8;
}

/// What a view may see of its operation's data.
#[derive(Clone, Copy)]
enum Shown {
    /// Nothing: not a read or a write, or a read that did not succeed (or is draining).
    Nothing,
    /// A write's data, in its pre callback (readable).
    WriteData,
    /// What a successful read returned, up to this many bytes (its `Information`), in its post
    /// callback (changeable in place).
    ReadResult(usize),
}

/// A buffer the operation `handle` (an IRP or a callback data) owns, located by `L` and sliced
/// the first time filter logic asks for it: until then nothing of the operation is read, not even
/// its length.
pub struct OnDemandBuffer<L> {
    handle: usize,
    locate: core::marker::PhantomData<L>,
    shown: Shown,
    /// Set by the first `map`: later calls answer `Buffer::None`, so that two mutable views of
    /// the same bytes never exist.
    mapped: Cell<bool>,
}

impl<L: Locate> OnDemandBuffer<L> {
    fn new(handle: usize, shown: Shown) -> OnDemandBuffer<L> {
        OnDemandBuffer {
            handle,
            locate: core::marker::PhantomData,
            shown,
            mapped: Cell::new(false),
        }
    }

    /// The buffer a pre-operation callback of a `major` operation may see: the data of a write.
    ///
    /// # Safety
    /// `handle` must be an operation whose major function is `major` and stay live while the view
    /// built on this source exists (the running callback), and `L::locate(handle, ..)` must
    /// answer null or the base of at least `L::length(handle, ..)` bytes, which nothing else
    /// touches during the callback.
    pub unsafe fn pre(handle: usize, major: MajorFunction) -> OnDemandBuffer<L> {
        let shown = if major == MajorFunction::Write { Shown::WriteData } else { Shown::Nothing };
        Self::new(handle, shown)
    }

    /// The buffer a post-operation callback of a `major` operation may see: the data a read
    /// returned, when it succeeded with `information` bytes and `show` (false: draining, or the
    /// operation failed).
    ///
    /// # Safety
    /// As [`OnDemandBuffer::pre`].
    pub unsafe fn post(
        handle: usize,
        major: MajorFunction,
        information: usize,
        show: bool,
    ) -> OnDemandBuffer<L> {
        let shown = if major == MajorFunction::Read && show {
            Shown::ReadResult(information)
        } else {
            Shown::Nothing
        };
        Self::new(handle, shown)
    }
}

impl<'a, L: Locate> BufferSource<'a> for OnDemandBuffer<L> {
    fn map(&self) -> Buffer<'a> {
        let (write, limit) = match self.shown {
            Shown::Nothing => return Buffer::None,
            Shown::WriteData => (true, usize::MAX),
            Shown::ReadResult(information) => (false, information),
        };
        // SAFETY: the constructor's contract: a live read or write, as `shown` says.
        let len = unsafe { L::length(self.handle, write) }.min(limit);
        if len == 0 || self.mapped.replace(true) {
            return Buffer::None;
        }
        // SAFETY: the constructor's contract: a live operation and its locator.
        let base = unsafe { L::locate(self.handle, write) };
        if base.is_null() {
            return Buffer::User;
        }
        // SAFETY: the locator answered the base of at least `len` bytes nobody else touches
        // during the callback, and this is the only view handed out (the flag above).
        let bytes = unsafe { core::slice::from_raw_parts_mut(base, len) };
        if write { Buffer::Readable(bytes) } else { Buffer::Writable(bytes) }
    }
}
