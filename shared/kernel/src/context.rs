//! Carrying a filter's completion context from pre to post through a `PVOID` (the Filter
//! Manager's `CompletionContext`, or a completion routine's context).
//!
//! A zero-sized context travels as NULL: no allocation, which is what a passthrough filter pays
//! (nothing). Any other context is moved into one pool block, released exactly once: by the post
//! callback, by the draining post callback, or by the backend when the Filter Manager will not call
//! the post callback. (Packing a small value into the pointer itself would read its padding bytes,
//! which may be uninitialized.)

use core::ffi::c_void;
use core::ptr::NonNull;

use crate::pool::{PoolBox, pool_tag};

/// Pool tag of completion contexts.
pub const COMPLETION_TAG: u32 = pool_tag(b"FsfC");

/// Moves `value` into a pointer-sized handle; gives it back when the pool is exhausted.
pub fn encode<C>(value: C) -> Result<*mut c_void, C> {
    if core::mem::size_of::<C>() == 0 {
        core::mem::forget(value);
        return Ok(core::ptr::null_mut());
    }
    PoolBox::try_new_or_return(value, COMPLETION_TAG).map(|b| b.into_raw().cast())
}

/// Takes a context back from its handle.
///
/// # Safety
/// `raw` must come from [`encode`] for the same `C`, and be decoded once.
pub unsafe fn decode<C>(raw: *const c_void) -> Option<C> {
    if core::mem::size_of::<C>() == 0 {
        // SAFETY: a zero-sized value occupies no bytes, so reading one from a dangling, aligned
        // pointer is valid; it gives back the value `encode` forgot.
        return Some(unsafe { NonNull::<C>::dangling().as_ptr().read() });
    }
    // SAFETY: the caller guarantees `raw` is a PoolBox<C> pointer from `encode`, taken once.
    let boxed = unsafe { PoolBox::<C>::from_raw(raw.cast_mut().cast(), COMPLETION_TAG) }?;
    Some(boxed.into_inner())
}

/// A context moved into a pool block together with a pointer ([`encode_with`]).
struct WithPointer<C> {
    value: C,
    pointer: *const c_void,
}

/// Moves `value` and `pointer` into one pointer-sized handle: `pointer` itself when the value is
/// zero-sized (no allocation, as [`encode`]), one pool block holding both otherwise. Gives the
/// value back when the pool is exhausted.
pub fn encode_with<C>(value: C, pointer: *const c_void) -> Result<*mut c_void, C> {
    if core::mem::size_of::<C>() == 0 {
        core::mem::forget(value);
        return Ok(pointer.cast_mut());
    }
    PoolBox::try_new_or_return(WithPointer { value, pointer }, COMPLETION_TAG)
        .map(|b| b.into_raw().cast())
        .map_err(|w| w.value)
}

/// Takes a context and its pointer back from a handle of [`encode_with`].
///
/// # Safety
/// `raw` must come from [`encode_with`] for the same `C`, and be decoded once.
pub unsafe fn decode_with<C>(raw: *const c_void) -> Option<(C, *const c_void)> {
    if core::mem::size_of::<C>() == 0 {
        // SAFETY: as in `decode`: the zero-sized value `encode_with` forgot; the handle is the
        // pointer itself.
        return Some((unsafe { NonNull::<C>::dangling().as_ptr().read() }, raw));
    }
    // SAFETY: the caller guarantees `raw` is a PoolBox<WithPointer<C>> pointer from
    // `encode_with`, taken once.
    let boxed =
        unsafe { PoolBox::<WithPointer<C>>::from_raw(raw.cast_mut().cast(), COMPLETION_TAG) }?;
    let WithPointer { value, pointer } = boxed.into_inner();
    Some((value, pointer))
}
