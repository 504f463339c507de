//! Load buffers: memory a filter allocates once, in [`crate::Filter::load`], from non-paged pool
//! (docs/decisions/0009, docs/callback-model.md rule 24).
//!
//! The filter value goes through the kernel stack in `DriverEntry` before the backend places it
//! in pool (24 KiB of stack on x64), so it cannot hold a large table itself; filter logic may not
//! use `unsafe` nor allocate. A filter that declares [`crate::Filter::LOAD_BUFFERS`] asks its
//! parameters for buffers instead ([`crate::ServiceParameters::allocate`]): the backend allocates
//! each one zeroed from non-paged pool under its own tag, records it in a small table of its
//! driver state, and frees every one after the filter value is dropped (at unload, or when the
//! load fails). A [`LoadBuffer`] dropped early is only no longer used: its memory stays
//! allocated until then.

use core::fmt;
use core::ops::{Deref, DerefMut};

/// The most load buffers one driver holds; one more is refused with
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const MAX_LOAD_BUFFERS: usize = 4;

/// The largest load buffer, in bytes (16 MiB); a larger one, or an empty one, is refused with
/// `STATUS_INVALID_PARAMETER`.
pub const MAX_LOAD_BUFFER: usize = 16 * 1024 * 1024;

/// A byte buffer allocated at load, zeroed, that lives as long as the filter: read and write it
/// through `Deref` / `DerefMut` (`&[u8]`, `&mut [u8]`). It is not freed when dropped: the backend
/// frees its memory after the filter value itself is gone.
///
/// Keep it in the filter value (or drop it). A load buffer kept anywhere else (a `static`)
/// outlives its memory: on Windows nothing of the image runs after unload, but the simulator
/// loads the same code again in one process.
pub struct LoadBuffer {
    bytes: &'static mut [u8],
}

impl LoadBuffer {
    /// Wraps bytes that nothing else refers to. Backends make these from the pool blocks they
    /// own (and free after the filter is gone, their `unsafe` contract); tests from leaked
    /// memory.
    pub fn new(bytes: &'static mut [u8]) -> LoadBuffer {
        LoadBuffer { bytes }
    }
}

impl Deref for LoadBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl DerefMut for LoadBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}

impl AsRef<[u8]> for LoadBuffer {
    fn as_ref(&self) -> &[u8] {
        self.bytes
    }
}

impl AsMut<[u8]> for LoadBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}

impl fmt::Debug for LoadBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadBuffer").field("len", &self.bytes.len()).finish()
    }
}

/// Checks a requested length: `STATUS_INVALID_PARAMETER` for 0 or more than
/// [`MAX_LOAD_BUFFER`]. The backends check this before they allocate.
pub const fn check_load_buffer_len(len: usize) -> crate::Result<usize> {
    if len == 0 || len > MAX_LOAD_BUFFER { Err(crate::Error::INVALID_PARAMETER) } else { Ok(len) }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::boxed::Box;
    use std::vec;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn a_load_buffer_is_a_byte_buffer() {
        assert_send_sync::<LoadBuffer>();
        let mut b = LoadBuffer::new(Box::leak(vec![0u8; 8].into_boxed_slice()));
        assert_eq!(&*b, &[0; 8]);
        b[3] = 7;
        b.as_mut()[4] = 9;
        assert_eq!(b.as_ref(), &[0, 0, 0, 7, 9, 0, 0, 0]);
        assert_eq!(std::format!("{b:?}"), "LoadBuffer { len: 8 }");
    }

    #[test]
    fn lengths_are_bounded() {
        assert_eq!(check_load_buffer_len(0), Err(crate::Error::INVALID_PARAMETER));
        assert_eq!(check_load_buffer_len(1), Ok(1));
        assert_eq!(check_load_buffer_len(MAX_LOAD_BUFFER), Ok(MAX_LOAD_BUFFER));
        assert_eq!(
            check_load_buffer_len(MAX_LOAD_BUFFER + 1),
            Err(crate::Error::INVALID_PARAMETER)
        );
    }
}
