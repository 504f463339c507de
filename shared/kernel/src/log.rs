//! `kprint!`: formatted debug output through `DbgPrintEx` (the simulator records it as a
//! `debug_print` event). Messages are formatted into a 256-byte buffer on the stack and cut at its
//! end; `DbgPrintEx` may be called at any IRQL.

use core::fmt::{self, Write};

use crate::constants::DPFLTR_IHVDRIVER_ID;

/// A fixed buffer that `core::fmt` writes into, dropping what does not fit.
pub struct LineBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl LineBuffer {
    /// An empty buffer.
    pub const fn new() -> LineBuffer {
        LineBuffer { bytes: [0; 256], len: 0 }
    }

    /// What was written.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer::new()
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let mut take = s.len().min(room);
        // Cut at a character boundary.
        while take > 0 && !s.is_char_boundary(take) {
            take -= 1;
        }
        if let (Some(dst), Some(src)) =
            (self.bytes.get_mut(self.len..self.len + take), s.as_bytes().get(..take))
        {
            dst.copy_from_slice(src);
            self.len += take;
        }
        Ok(())
    }
}

/// Writes one line at `level` (`DPFLTR_*_LEVEL`).
pub fn print(level: u32, args: fmt::Arguments<'_>) {
    let mut line = LineBuffer::new();
    let _ = line.write_fmt(args);
    print_bytes(level, line.as_bytes());
}

/// Writes `prefix` and `text` as one line at `level`, without `core::fmt` (which costs a driver
/// kilobytes): what the trace hook uses for notes.
pub fn print_parts(level: u32, prefix: &str, text: &str) {
    let mut line = LineBuffer::new();
    let _ = line.write_str(prefix);
    let _ = line.write_str(text);
    let _ = line.write_str("\n");
    print_bytes(level, line.as_bytes());
}

fn print_bytes(level: u32, text: &[u8]) {
    // SAFETY: the format is a NUL-terminated "%.*s" and the two arguments are an `int` length and
    // a pointer to that many bytes, which `text` provides.
    unsafe {
        crate::ntos::DbgPrintEx(
            DPFLTR_IHVDRIVER_ID,
            level,
            c"%.*s".as_ptr().cast(),
            text.len() as i32,
            text.as_ptr(),
        );
    }
}

/// Formatted `DbgPrintEx` output: `kprint!(DPFLTR_INFO_LEVEL, "attached to {}", name)`.
#[macro_export]
macro_rules! kprint {
    ($level:expr, $($arg:tt)*) => {
        $crate::log::print($level, core::format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_at_a_character_boundary() {
        let mut b = LineBuffer::new();
        for _ in 0..100 {
            write!(b, "é").unwrap();
        }
        assert_eq!(b.as_bytes().len(), 200);
        for _ in 0..100 {
            write!(b, "é").unwrap();
        }
        assert_eq!(b.as_bytes().len(), 256);
        assert!(core::str::from_utf8(b.as_bytes()).is_ok());
        write!(b, "x").unwrap();
        assert_eq!(b.as_bytes().len(), 256);
    }
}
