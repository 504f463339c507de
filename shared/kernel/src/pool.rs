//! `PoolBox<T>`: a value in non-paged pool, allocated with `ExAllocatePool2` under a tag and freed
//! with `ExFreePoolWithTag` (the simulator accounts every allocation by tag and reports leaks).

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use fsfilter::Error;
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

use crate::constants::POOL_FLAG_NON_PAGED;

/// A pool tag from four ASCII characters, stored so that debuggers show them in order
/// (`pool_tag(b"FsfL")`).
pub const fn pool_tag(tag: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*tag)
}

/// An owned `T` in non-paged pool.
///
/// # Invariants
/// `ptr` points to an initialized `T` in a pool block allocated with `tag`, owned by this box.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
    tag: u32,
    _owns: PhantomData<T>,
}

// SAFETY: a PoolBox owns its T like a Box does; sending or sharing it is as safe as for T.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: see above.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

impl<T> PoolBox<T> {
    /// Moves `value` into a new pool block. `STATUS_INSUFFICIENT_RESOURCES` when the pool is
    /// exhausted (or the simulator injects that failure); the value is dropped then.
    pub fn try_new(value: T, tag: u32) -> Result<PoolBox<T>, Error> {
        PoolBox::try_new_or_return(value, tag).map_err(|_| Error::INSUFFICIENT_RESOURCES)
    }

    /// Moves `value` into a new pool block, or gives it back when the pool is exhausted.
    pub fn try_new_or_return(value: T, tag: u32) -> Result<PoolBox<T>, T> {
        const { assert!(core::mem::align_of::<T>() <= 16, "pool blocks are 16-byte aligned") };
        let size = core::mem::size_of::<T>().max(1);
        // SAFETY: ExAllocatePool2 with a valid flag combination, a non-zero size and a tag; it
        // returns null or a block of at least `size` bytes aligned to 16.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, tag) }.cast::<T>();
        let Some(ptr) = NonNull::new(raw) else { return Err(value) };
        // SAFETY: the block is large enough and aligned for T (checked above), and not yet
        // initialized.
        unsafe { ptr.as_ptr().write(value) };
        Ok(PoolBox { ptr, tag, _owns: PhantomData })
    }

    /// Builds a `T` in place in a new, zeroed pool block (`ExAllocatePool2` zeroes what it
    /// returns): `init` writes the fields that must not be zero. Large driver states are built this
    /// way instead of on the kernel stack.
    ///
    /// # Safety
    /// All-zero bytes must be a valid value of every field of `T` that `init` does not write, and
    /// after `init` the block must hold a valid `T`. `init` must not read fields it has not written
    /// or that are not valid when zero.
    pub unsafe fn try_new_zeroed_with(
        tag: u32,
        init: impl FnOnce(*mut T),
    ) -> Result<PoolBox<T>, Error> {
        const { assert!(core::mem::align_of::<T>() <= 16, "pool blocks are 16-byte aligned") };
        let size = core::mem::size_of::<T>().max(1);
        // SAFETY: as in `try_new_or_return`; without POOL_FLAG_UNINITIALIZED the block is zeroed.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, tag) }.cast::<T>();
        let ptr = NonNull::new(raw).ok_or(Error::INSUFFICIENT_RESOURCES)?;
        init(ptr.as_ptr());
        Ok(PoolBox { ptr, tag, _owns: PhantomData })
    }

    /// Moves the value out and frees the block.
    pub fn into_inner(self) -> T {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the invariant: an initialized T owned by the box; read once, and the box is
        // never dropped (ManuallyDrop), so the value is not dropped twice.
        let value = unsafe { this.ptr.as_ptr().read() };
        // SAFETY: the block was allocated with `this.tag` and is freed once.
        unsafe { ExFreePoolWithTag(this.ptr.as_ptr().cast(), this.tag) };
        value
    }

    /// Gives up ownership: the pointer must come back through [`PoolBox::from_raw`].
    pub fn into_raw(self) -> *mut T {
        let p = self.ptr.as_ptr();
        core::mem::forget(self);
        p
    }

    /// Takes back ownership of a pointer from [`PoolBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` on a box with the same `tag`, and not be owned elsewhere.
    pub unsafe fn from_raw(ptr: *mut T, tag: u32) -> Option<PoolBox<T>> {
        NonNull::new(ptr).map(|ptr| PoolBox { ptr, tag, _owns: PhantomData })
    }

    /// The pointer, still owned by the box.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T> Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the invariant: an initialized T owned by the box.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the invariant, and `&mut self` gives exclusive access.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: the invariant: the T is initialized and ours to drop, once.
        unsafe { core::ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: the block was allocated with `self.tag` and is freed once.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), self.tag) };
    }
}

/// A zeroed array of `len` raw pointers in non-paged pool, freed on drop: a list a kernel routine
/// fills whose length is known only at run time (`IoEnumerateDeviceObjectList`).
///
/// # Invariants
/// `ptr` points to a pool block of `len` pointers allocated with `tag` (all null when made, and
/// a null pointer is a valid value), owned by this list; `len` is at least 1.
pub struct PoolPointers<T> {
    ptr: NonNull<*mut T>,
    len: usize,
    tag: u32,
}

impl<T> PoolPointers<T> {
    /// `len` null pointers (at least one). `STATUS_INSUFFICIENT_RESOURCES` when the pool is
    /// exhausted or the size overflows.
    pub fn try_zeroed(len: usize, tag: u32) -> Result<PoolPointers<T>, Error> {
        let len = len.max(1);
        let size =
            len.checked_mul(core::mem::size_of::<*mut T>()).ok_or(Error::INSUFFICIENT_RESOURCES)?;
        // SAFETY: ExAllocatePool2 with a valid flag combination, a non-zero size and a tag;
        // without POOL_FLAG_UNINITIALIZED the block is zeroed, and it is aligned for pointers.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, size, tag) }.cast::<*mut T>();
        let ptr = NonNull::new(raw).ok_or(Error::INSUFFICIENT_RESOURCES)?;
        Ok(PoolPointers { ptr, len, tag })
    }

    /// The list's first element, for a routine that fills it.
    pub fn as_mut_ptr(&mut self) -> *mut *mut T {
        self.ptr.as_ptr()
    }

    /// The size of the list in bytes (what such a routine is told).
    pub fn byte_len(&self) -> usize {
        self.len * core::mem::size_of::<*mut T>()
    }
}

impl<T> Deref for PoolPointers<T> {
    type Target = [*mut T];
    fn deref(&self) -> &[*mut T] {
        // SAFETY: the invariant: `len` initialized pointers owned by the list.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for PoolPointers<T> {
    fn drop(&mut self) {
        // SAFETY: the block was allocated with `self.tag` and is freed once.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), self.tag) };
    }
}

/// A zeroed byte buffer in non-paged pool, freed on drop: the kernel copy of a message or reply
/// whose size is known only at run time.
///
/// # Invariants
/// `ptr` points to a pool block of at least `len` bytes (at least one) allocated with `tag`,
/// initialized (zeroed when made), owned by this buffer.
pub struct PoolBytes {
    ptr: NonNull<u8>,
    len: usize,
    tag: u32,
}

// SAFETY: a PoolBytes owns its bytes like a Box<[u8]> does.
unsafe impl Send for PoolBytes {}
// SAFETY: see above.
unsafe impl Sync for PoolBytes {}

impl PoolBytes {
    /// `len` zero bytes. `STATUS_INSUFFICIENT_RESOURCES` when the pool is exhausted.
    pub fn try_zeroed(len: usize, tag: u32) -> Result<PoolBytes, Error> {
        // SAFETY: ExAllocatePool2 with a valid flag combination, a non-zero size and a tag;
        // without POOL_FLAG_UNINITIALIZED the block is zeroed.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, len.max(1), tag) }.cast::<u8>();
        let ptr = NonNull::new(raw).ok_or(Error::INSUFFICIENT_RESOURCES)?;
        Ok(PoolBytes { ptr, len, tag })
    }
}

impl Deref for PoolBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the invariant: `len` initialized bytes owned by the buffer.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for PoolBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: the invariant, and `&mut self` gives exclusive access.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PoolBytes {
    fn drop(&mut self) {
        // SAFETY: the block was allocated with `self.tag` and is freed once.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), self.tag) };
    }
}
